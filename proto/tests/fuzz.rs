//! What an agent (or a coordinator) sends is untrusted: arbitrary bytes decoded as each
//! message of the protocol and converted to domain types are refused or converted, never a
//! panic. Seeds are valid messages; the mutations go from there (`KVBENCH_FUZZ_SECS`, see
//! `kvbench_common::fuzz`).

use kvbench_common::agent::{AgentInfo, ClearOutcome, RestartOutcome, RoundEvent, RoundRequest};
use kvbench_common::fuzz;
use kvbench_proto::v1;
use prost::Message;

fn seeds() -> Vec<Vec<u8>> {
    let record = v1::RoundEvent {
        event: Some(v1::round_event::Event::Record(v1::RequestRecord {
            request_id: 7,
            sent_ms: 1.0,
            first_token_ms: Some(20.0),
            chunk_offsets_ms: vec![20.0, 30.0],
            end_ms: 40.0,
            output_tokens: Some(4),
            outcome: v1::Outcome::Ok as i32,
            finish_reason: "length".into(),
            ..Default::default()
        })),
        seq: 3,
    };
    let telemetry = v1::RoundEvent {
        event: Some(v1::round_event::Event::Telemetry(v1::TelemetrySample {
            t_ms: 5.0,
            source: "nvml".into(),
            values: [("gpu0.util_pct".to_owned(), 50.0)].into(),
            notes: vec!["gpu0 power_w: Not Supported".into()],
        })),
        seq: 4,
    };
    let finished = v1::RoundEvent {
        event: Some(v1::round_event::Event::Finished(v1::RoundFinished {
            duration_ms: 40.0,
            sent: 3,
            health: Some(v1::AgentHealth::default()),
            cancelled: true,
            stop_reason: v1::StopReason::CoordinatorSilent as i32,
            ..Default::default()
        })),
        seq: 5,
    };
    let request = v1::RunRoundRequest {
        scenario_id: "s-1".into(),
        round: 1,
        workload: Some(v1::WorkloadSpec {
            kind: v1::WorkloadKind::MultiTurnConversation as i32,
            num_requests: 10,
            output_tokens: 8,
            ..Default::default()
        }),
        load: Some(v1::LoadSpec {
            concurrency: 2,
            ttft_timeout_s: 10.0,
            idle_timeout_s: 10.0,
            ..Default::default()
        }),
        reconnect_window_s: 30.0,
        ..Default::default()
    };
    let hello = v1::HelloResponse {
        protocol_version: kvbench_common::PROTOCOL_VERSION,
        agent_name: "a".into(),
        labels: [("cloud".to_owned(), "x".to_owned())].into(),
        engine_healthy: Some(true),
        ..Default::default()
    };
    vec![
        record.encode_to_vec(),
        telemetry.encode_to_vec(),
        finished.encode_to_vec(),
        request.encode_to_vec(),
        hello.encode_to_vec(),
        v1::ClearCacheResponse {
            success: true,
            probe: Some(v1::ColdProbe::default()),
            ..Default::default()
        }
        .encode_to_vec(),
        v1::RestartEngineResponse {
            error_class: "restart_timeout".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    ]
}

#[test]
fn the_wire_conversions_never_panic() {
    let seeds = seeds();
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let f = fuzz::run("wire", &seeds, |input| {
        if let Ok(m) = v1::RoundEvent::decode(input) {
            let _ = RoundEvent::try_from(m);
        }
        if let Ok(m) = v1::RunRoundRequest::decode(input) {
            if let Ok(r) = RoundRequest::try_from(m) {
                // And back: what the coordinator would send.
                let _ = v1::RunRoundRequest::from(&r);
            }
        }
        if let Ok(m) = v1::HelloResponse::decode(input) {
            let _ = AgentInfo::from(m);
        }
        if let Ok(m) = v1::ClearCacheResponse::decode(input) {
            let _ = ClearOutcome::from(m);
        }
        if let Ok(m) = v1::RestartEngineResponse::decode(input) {
            let _ = RestartOutcome::try_from(m);
        }
    });
    assert!(f.inputs > 100, "{f:?}");
}
