//! What another process sends is untrusted: a fake agent that speaks the protocol but
//! sends a record the coordinator cannot read. The record is left out and counted, the
//! round fails saying so (never a silent warning), and the record that was fine is kept.

mod common;

use std::pin::Pin;

use common::{kvbench, out_file, read_json, TempDir};
use kvbench_proto::v1::{self, agent_server::Agent, agent_server::AgentServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Answers the handshake like any agent; each round: one good record, one whose outcome
/// is no outcome at all, then `Finished`.
struct Mangler;

type Events = Pin<Box<dyn Stream<Item = Result<v1::RoundEvent, Status>> + Send>>;

fn record(request_id: u32, outcome: i32) -> v1::RoundEvent {
    v1::RoundEvent {
        event: Some(v1::round_event::Event::Record(v1::RequestRecord {
            request_id,
            sent_ms: 1.0,
            first_token_ms: Some(20.0),
            end_ms: 40.0,
            output_tokens: Some(4),
            outcome,
            ..Default::default()
        })),
    }
}

#[tonic::async_trait]
impl Agent for Mangler {
    async fn hello(
        &self,
        _: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        Ok(Response::new(v1::HelloResponse {
            protocol_version: kvbench_common::PROTOCOL_VERSION,
            agent_version: "0.0.0-fake".into(),
            hostname: "fake-host".into(),
            agent_name: "mangler".into(),
            engine_display: "http://127.0.0.1:9".into(),
            engine_kind: "generic".into(),
            agent_time_us: kvbench_common::util::now_us(),
            ..Default::default()
        }))
    }

    type RunRoundStream = Events;

    async fn run_round(&self, _: Request<v1::RunRoundRequest>) -> Result<Response<Events>, Status> {
        let events = vec![
            Ok(v1::RoundEvent {
                event: Some(v1::round_event::Event::Started(v1::RoundStarted {
                    total_requests: 2,
                    wall_clock_anchor_us: kvbench_common::util::now_us(),
                })),
            }),
            Ok(record(0, v1::Outcome::Ok as i32)),
            Ok(record(1, 999)),
            Ok(v1::RoundEvent {
                event: Some(v1::round_event::Event::Finished(v1::RoundFinished {
                    duration_ms: 40.0,
                    sent: 2,
                    ..Default::default()
                })),
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }

    async fn clear_cache(
        &self,
        _: Request<v1::ClearCacheRequest>,
    ) -> Result<Response<v1::ClearCacheResponse>, Status> {
        Err(Status::unimplemented("a fake"))
    }

    async fn restart_engine(
        &self,
        _: Request<v1::RestartEngineRequest>,
    ) -> Result<Response<v1::RestartEngineResponse>, Status> {
        Err(Status::unimplemented("a fake"))
    }

    async fn stop_round(
        &self,
        _: Request<v1::StopRoundRequest>,
    ) -> Result<Response<v1::StopRoundResponse>, Status> {
        Ok(Response::new(v1::StopRoundResponse { stopped: false }))
    }
}

#[tokio::test]
async fn a_record_the_coordinator_cannot_read_fails_the_round_and_is_counted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(Mangler))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = TempDir::new("hostile");
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 2\noutput_tokens: 4\n",
    );
    let plan = dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: none\nwait_between_scenarios: 0\nagents:\n  - {{name: mangler, address: \"http://{addr}\"}}\ntest_scenarios:\n  - {{name: hostile, config_file: c.yaml, scenario: cold_start, rounds: 1, agents: [mangler]}}\n"
        ),
    );
    let out = tokio::task::spawn_blocking(move || {
        kvbench()
            .args(["run", plan.to_str().expect("utf-8 path")])
            .output()
            .expect("kvbench runs")
    })
    .await
    .expect("join");
    server.abort();
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the scenario failed:\n{console}"
    );
    let stats = read_json(&out_file(&dir.path().join("out"), "hostile_stats_"));
    let error = stats["error"].as_str().expect("an error");
    assert!(
        error.contains("agent mangler sent 1 event(s) this coordinator cannot read")
            && error.contains("outcome"),
        "{error}"
    );
    assert!(console.contains("cannot read"), "{console}");
    // The good record is kept; the mangled one is not invented.
    let results = read_json(&out_file(&dir.path().join("out"), "hostile_results_"));
    let records = results["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["request_id"], 0);
}
