//! The agent over real gRPC on loopback: handshake, version refusal, a round against an
//! engine that is not there (every request recorded as a failure, none lost), and
//! ClearCache against kvbench-sim.

use std::collections::BTreeMap;

use kvbench_agent::AgentConfig;
use kvbench_common::PROTOCOL_VERSION;
use kvbench_proto::v1::{self, agent_client::AgentClient, round_event::Event};
use kvbench_sim::SimConfig;

async fn agent(
    engine_url: String,
) -> (
    kvbench_agent::AgentHandle,
    AgentClient<tonic::transport::Channel>,
) {
    let handle = kvbench_agent::spawn(AgentConfig {
        labels: BTreeMap::from([("cloud".to_owned(), "lab".to_owned())]),
        ..AgentConfig::vllm("test-agent", engine_url)
    })
    .await
    .expect("agent starts");
    let client = AgentClient::connect(handle.url()).await.expect("connect");
    (handle, client)
}

#[tokio::test]
async fn hello_answers_and_refuses_other_protocol_versions() {
    let (handle, mut client) = agent("http://127.0.0.1:9".into()).await;
    let hello = client
        .hello(v1::HelloRequest {
            protocol_version: PROTOCOL_VERSION,
            coordinator_version: "test".into(),
            engine_status: true,
        })
        .await
        .expect("hello")
        .into_inner();
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(hello.agent_name, "test-agent");
    assert_eq!(hello.labels.get("cloud").map(String::as_str), Some("lab"));
    assert!(!hello.hostname.is_empty());
    // Without NVML the inventory is empty and says why; with it, it lists GPUs.
    if hello.gpus.is_empty() {
        assert!(hello.gpu_note.contains("NVML"), "{}", hello.gpu_note);
    }
    // Nothing listens on the engine's port: the handshake says so, with the kind.
    assert_eq!(hello.engine_kind, "vllm");
    assert_eq!(hello.engine_healthy, Some(false));
    assert!(
        hello.engine_health_detail.contains("127.0.0.1:9"),
        "{}",
        hello.engine_health_detail
    );

    let err = client
        .hello(v1::HelloRequest {
            protocol_version: PROTOCOL_VERSION + 1,
            coordinator_version: "future".into(),
            engine_status: false,
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // Both versions named.
    for part in [
        "protocol version mismatch".to_owned(),
        format!("coordinator speaks {}", PROTOCOL_VERSION + 1),
        format!("speaks {PROTOCOL_VERSION}"),
    ] {
        assert!(err.message().contains(&part), "{}", err.message());
    }
    handle.stop().await;
}

fn round(round: u32) -> v1::RunRoundRequest {
    v1::RunRoundRequest {
        scenario_id: "s-1".into(),
        scenario_name: "s".into(),
        round,
        workload: Some(v1::WorkloadSpec {
            kind: v1::WorkloadKind::ColdStart as i32,
            seed: 1,
            num_requests: 6,
            output_tokens: 4,
            params: Some(v1::WorkloadParams {
                prompt_tokens: Some(50),
                ..Default::default()
            }),
            output_dist: None,
        }),
        load: Some(v1::LoadSpec {
            concurrency: 3,
            ttft_timeout_s: 5.0,
            idle_timeout_s: 5.0,
            ..Default::default()
        }),
        model: "m".into(),
        api: v1::ApiFlavor::Chat as i32,
        enforce_output_length: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn unreachable_engine_gives_one_failed_record_per_request() {
    // Port 9 (discard) on loopback: nothing listens there.
    let (handle, mut client) = agent("http://127.0.0.1:9".into()).await;
    let mut stream = client
        .run_round(round(1))
        .await
        .expect("round starts")
        .into_inner();
    let mut records = Vec::new();
    let mut finished = None;
    while let Some(ev) = stream.message().await.expect("stream") {
        match ev.event {
            Some(Event::Record(r)) => records.push(r),
            Some(Event::Finished(f)) => finished = Some(f),
            _ => {}
        }
    }
    assert_eq!(records.len(), 6);
    assert!(records
        .iter()
        .all(|r| r.outcome == v1::Outcome::ConnectError as i32));
    assert!(records.iter().all(|r| !r.error.is_empty()));
    assert_eq!(finished.map(|f| f.sent), Some(6));
    handle.stop().await;
}

#[tokio::test]
async fn round_zero_is_rejected() {
    let (handle, mut client) = agent("http://127.0.0.1:9".into()).await;
    let err = client.run_round(round(0)).await.expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    handle.stop().await;
}

#[tokio::test]
async fn clear_cache_resets_the_engine_and_reports_engines_without_reset() {
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let (handle, mut client) = agent(sim.base_url()).await;
    let mut stream = client
        .run_round(round(1))
        .await
        .expect("round")
        .into_inner();
    while stream.message().await.expect("stream").is_some() {}
    assert!(
        sim.engine.cache_usage().3 > 0,
        "the round left blocks cached"
    );
    let r = client
        .clear_cache(v1::ClearCacheRequest {
            reason: "test".into(),
        })
        .await
        .expect("clear")
        .into_inner();
    assert!(r.success, "{}", r.detail);
    assert_eq!(sim.engine.cache_usage().3, 0, "cache emptied");
    handle.stop().await;

    // An engine with no reset endpoint: the answer says so, and why.
    let (handle, mut client) = agent(format!("{}/nothing-here", sim.base_url())).await;
    let r = client
        .clear_cache(v1::ClearCacheRequest {
            reason: "test".into(),
        })
        .await
        .expect("clear")
        .into_inner();
    assert!(!r.success);
    assert!(
        r.detail.contains("404") && r.detail.contains("VLLM_SERVER_DEV_MODE"),
        "{}",
        r.detail
    );
    handle.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn out_of_range_rounds_are_refused_before_anything_is_allocated() {
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let (handle, mut client) = agent(sim.base_url()).await;
    let mut huge = round(1);
    if let Some(w) = huge.workload.as_mut() {
        w.kind = v1::WorkloadKind::LongContextHighReuse as i32;
        w.params = Some(v1::WorkloadParams {
            document_tokens: Some(2_000_000_000),
            ..Default::default()
        });
    }
    // 2 billion tokens of documents would be ~14 GB of text: the call must fail at once.
    let started = std::time::Instant::now();
    let err = client.run_round(huge).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("workload.document_tokens") && err.message().contains("2097152"),
        "names the field and the limit: {}",
        err.message()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "refused without generating anything"
    );
    let mut timed = round(1);
    if let Some(l) = timed.load.as_mut() {
        l.concurrency = 100_000_000;
        l.duration_s = Some(1.0);
        l.ttft_timeout_s = 1e9;
    }
    let err = client.run_round(timed).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("concurrency") && err.message().contains("ttft_timeout_s"),
        "{}",
        err.message()
    );

    // The agent then serves the next round normally.
    let mut stream = client
        .run_round(round(1))
        .await
        .expect("round starts")
        .into_inner();
    let mut ok = 0;
    while let Some(ev) = stream.message().await.expect("stream") {
        if let Some(Event::Record(r)) = ev.event {
            ok += usize::from(r.outcome == v1::Outcome::Ok as i32);
        }
    }
    assert_eq!(ok, 6);
    handle.stop().await;
    sim.stop().await;
}
