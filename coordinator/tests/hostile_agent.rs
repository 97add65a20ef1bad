//! What another process sends is untrusted: a fake agent that speaks the protocol but
//! says hostile things of itself (a name of 100 kB, labels with pipes, newlines, HTML and
//! terminal escapes, hundreds of them) and sends records the coordinator cannot read (no
//! outcome, a time that is not a number). The records are left out and counted, the round
//! fails saying so (never a silent warning), the record that was fine is kept, and the
//! report stays well formed with every hostile value bounded and escaped.

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
        seq: 0,
    }
}

#[tonic::async_trait]
impl Agent for Mangler {
    async fn hello(
        &self,
        _: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        let mut labels: std::collections::HashMap<String, String> = (0..1000)
            .map(|i| (format!("k{i:04}"), "v".repeat(10)))
            .collect();
        labels.insert(
            "cloud".into(),
            "a|b\n| injected | row |\r\n<script>alert(1)</script>".into(),
        );
        labels.insert("\\|back".into(), "slash\\".into());
        Ok(Response::new(v1::HelloResponse {
            protocol_version: kvbench_common::PROTOCOL_VERSION,
            agent_version: "0.0.0-fake\x1b[2J".into(),
            hostname: format!("fake-host|{}", "h".repeat(100_000)),
            agent_name: "mangler".into(),
            engine_display: "http://127.0.0.1:9".into(),
            engine_kind: "generic".into(),
            engine_version: "1.0 <img src=x onerror=alert(1)>".into(),
            engine_models: vec!["m|1\n| x |".into(); 5000],
            labels,
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
                seq: 0,
            }),
            Ok(record(0, v1::Outcome::Ok as i32)),
            Ok(record(1, 999)),
            Ok({
                let mut e = record(2, v1::Outcome::Ok as i32);
                if let Some(v1::round_event::Event::Record(r)) = &mut e.event {
                    r.end_ms = f64::NAN;
                    r.error = "x".repeat(1 << 20);
                }
                e
            }),
            Ok(v1::RoundEvent {
                event: Some(v1::round_event::Event::Finished(v1::RoundFinished {
                    duration_ms: 40.0,
                    sent: 3,
                    ..Default::default()
                })),
                seq: 0,
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

    type ResumeRoundStream = Events;

    async fn resume_round(
        &self,
        _: Request<v1::ResumeRoundRequest>,
    ) -> Result<Response<Events>, Status> {
        Err(Status::not_found("a fake"))
    }

    async fn ack_round(
        &self,
        _: Request<v1::AckRoundRequest>,
    ) -> Result<Response<v1::AckRoundResponse>, Status> {
        Ok(Response::new(v1::AckRoundResponse { known: false }))
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
        error.contains("agent mangler sent 2 event(s) this coordinator cannot read")
            && error.contains("outcome"),
        "{error}"
    );
    assert!(console.contains("cannot read"), "{console}");
    // The good record is kept; the mangled one is not invented.
    let results = read_json(&out_file(&dir.path().join("out"), "hostile_results_"));
    let records = results["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["request_id"], 0);
    // The report: the agents' table keeps its shape, nothing hostile is live in the HTML,
    // the 100 kB name and the thousands of labels and models are bounded.
    let out_dir = dir.path().join("out");
    let md = std::fs::read_to_string(out_file(&out_dir, "multi_scenario_report_")).expect("report");
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("## Agents"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(
        table.len(),
        3,
        "header, rule, one agent:\n{}",
        table.join("\n")
    );
    let columns = |l: &str| {
        let mut n = 0;
        let mut escaped = false;
        for c in l.chars() {
            match c {
                '\\' if !escaped => escaped = true,
                '|' if !escaped => n += 1,
                _ => escaped = false,
            }
            if c != '\\' {
                escaped = false;
            }
        }
        n
    };
    assert_eq!(columns(table[2]), columns(table[0]), "{}", table[2]);
    assert!(table[2].len() < 20_000, "bounded: {} bytes", table[2].len());
    assert!(!md.contains('\x1b'), "a terminal escape reached the report");
    assert!(
        !md.lines().any(|l| l.starts_with("| injected")),
        "a label broke the table"
    );
    let html = std::fs::read_to_string(out_dir.join("report.html")).expect("html report");
    assert!(
        !html.contains("<script>alert") && !html.contains("<img src=x"),
        "hostile HTML is live"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "shown as text"
    );
    assert!(
        !console.contains('\x1b'),
        "a terminal escape reached the console"
    );
}
