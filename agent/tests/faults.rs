//! Error accounting against injected faults: kvbench-sim injects a known mix, and the
//! agent's outcome counts equal it exactly, with every other request `ok`.

use std::collections::BTreeMap;

use kvbench_agent::AgentConfig;
use kvbench_proto::v1::{self, agent_client::AgentClient, round_event::Event};
use kvbench_sim::{Fault, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_counts_equal_the_injected_mix() {
    let sim = kvbench_sim::spawn(SimConfig {
        fault_5xx: 0.08,
        fault_429: 0.08,
        fault_reset: 0.08,
        fault_malformed_sse: 0.08,
        fault_malformed_json: 0.08,
        fault_stall: 0.08,
        fault_seed: 7,
        decode_base_ms: 1.0,
        prefill_base_ms: 1.0,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let agent = kvbench_agent::spawn(AgentConfig::vllm("a", sim.base_url()))
        .await
        .expect("agent");
    let mut client = AgentClient::connect(agent.url()).await.expect("connect");
    let n = 150;
    let req = v1::RunRoundRequest {
        scenario_id: "faults".into(),
        scenario_name: "faults".into(),
        round: 1,
        workload: Some(v1::WorkloadSpec {
            kind: v1::WorkloadKind::ColdStart as i32,
            seed: 3,
            num_requests: n,
            output_tokens: 8,
            params: Some(v1::WorkloadParams {
                prompt_tokens: Some(40),
                ..Default::default()
            }),
            output_dist: None,
        }),
        load: Some(v1::LoadSpec {
            concurrency: 16,
            ttft_timeout_s: 5.0,
            idle_timeout_s: 0.3,
            ..Default::default()
        }),
        model: "m".into(),
        api: v1::ApiFlavor::Chat as i32,
        enforce_output_length: true,
        ..Default::default()
    };
    let mut stream = client.run_round(req).await.expect("round").into_inner();
    let mut outcomes: BTreeMap<i32, u32> = BTreeMap::new();
    let mut records = 0;
    while let Some(ev) = stream.message().await.expect("stream") {
        if let Some(Event::Record(r)) = ev.event {
            records += 1;
            *outcomes.entry(r.outcome).or_insert(0) += 1;
            if r.outcome == v1::Outcome::Ok as i32 {
                assert_eq!(r.output_tokens, Some(8));
                assert_eq!(r.chunk_offsets_ms.len(), 8);
            } else {
                assert!(!r.error.is_empty(), "a failure says why");
            }
        }
    }
    assert_eq!(records, n);
    let injected = sim.engine.counters().faults;
    let got = |o: v1::Outcome| outcomes.get(&(o as i32)).copied().unwrap_or(0) as u64;
    let want = |f: Fault| injected.get(&f).copied().unwrap_or(0);
    let total_faults: u64 = injected.values().sum();
    assert!(total_faults >= 40, "a real mix was injected: {injected:?}");
    assert!(
        injected.len() == 6,
        "every kind at least once: {injected:?}"
    );
    assert_eq!(got(v1::Outcome::Http5xx), want(Fault::Http5xx));
    assert_eq!(got(v1::Outcome::Http429), want(Fault::Http429));
    assert_eq!(got(v1::Outcome::Reset), want(Fault::Reset));
    assert_eq!(got(v1::Outcome::MalformedSse), want(Fault::MalformedSse));
    assert_eq!(got(v1::Outcome::MalformedJson), want(Fault::MalformedJson));
    assert_eq!(got(v1::Outcome::IdleTimeout), want(Fault::Stall));
    assert_eq!(got(v1::Outcome::Ok), u64::from(n) - total_faults);
    agent.stop().await;
    sim.stop().await;
}
