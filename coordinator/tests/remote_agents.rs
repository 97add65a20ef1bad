//! One coordinator driving agents that run as services next to their engines: three agent
//! processes' worth (agents and sims on loopback in this test's process), reached through
//! the plan's `agents:` by the `kvbench` binary, as a team runs it from a laptop.

mod common;

use std::process::{Command, Output};

use common::{out_file, read_json, TempDir};
use kvbench_agent::AgentConfig;
use kvbench_common::stats::LatencyHistogram;
use kvbench_sim::SimConfig;

/// An agent and the sim it measures, labelled.
struct Host {
    sim: kvbench_sim::SimHandle,
    agent: kvbench_agent::AgentHandle,
}

async fn host(name: &str, cloud: &str, sim: SimConfig) -> Host {
    let sim = kvbench_sim::spawn(sim).await.expect("sim");
    let mut config = AgentConfig::vllm(name, sim.base_url());
    config.labels.insert("cloud".into(), cloud.into());
    config.labels.insert("tier".into(), "gpu".into());
    let agent = kvbench_agent::spawn(config).await.expect("agent");
    Host { sim, agent }
}

/// dc-a and dc-b, honest, and dc-c, whose engine says it cleared and did not.
async fn three_datacenters() -> [Host; 3] {
    let liar = SimConfig {
        lying_reset: true,
        ..SimConfig::default()
    };
    [
        host("dc-a", "a", SimConfig::default()).await,
        host("dc-b", "b", SimConfig::default()).await,
        host("dc-c", "c", liar).await,
    ]
}

/// The three datacenters as the plan's `agents:` lists them.
fn listed(a: &Host, b: &Host, c: &Host) -> [(&'static str, String, &'static str); 3] {
    [
        ("dc-a", a.agent.url(), "a"),
        ("dc-b", b.agent.url(), "b"),
        ("dc-c", c.agent.url(), "c"),
    ]
}

/// Runs the `kvbench` binary off the runtime (the agents answer meanwhile).
async fn kvbench(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        common::kvbench()
            .args(&args)
            .output()
            .expect("kvbench runs")
    })
    .await
    .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn plan(dir: &TempDir, agents: &[(&str, String, &str)], scenarios: &str) -> String {
    let mut p = String::from("output_dir: out\nwait_between_scenarios: 0\nagents:\n");
    for (name, address, cloud) in agents {
        p.push_str(&format!(
            "  - {{name: {name}, address: \"{address}\", labels: {{cloud: {cloud}, tier: gpu}}}}\n"
        ));
    }
    p.push_str("test_scenarios:\n");
    p.push_str(scenarios);
    dir.write("plan.yaml", &p).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runs_a_scenario_once_per_matching_agent_and_judges_each() {
    let [a, b, liar] = three_datacenters().await;
    let dir = TempDir::new("each");
    dir.write(
        "docs.yaml",
        "endpoint: agent\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  documents: 4\n  document_tokens: 400\n",
    );
    let p = plan(
        &dir,
        &listed(&a, &b, &liar),
        "  - {name: warm, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1, selector: {tier: gpu}}\n  - {name: docs, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 2, selector: {tier: gpu}, placement: each}\n",
    );
    let out = kvbench(vec!["run".into(), p]).await;
    let console = text(&out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "one datacenter's round 1 was not cold:\n{console}"
    );
    for line in [
        "dc-a  http://",
        "reachable",
        "Scenario done: docs@dc-a",
        "Scenario done: docs@dc-b",
        "Scenario done: docs@dc-c",
    ] {
        assert!(console.contains(line), "console lacks {line:?}:\n{console}");
    }
    let files: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .expect("out")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|f| f.contains("_stats_"))
        .collect();
    assert_eq!(files.len(), 6, "{files:?}");
    for (agent, verdict) in [
        ("dc-a", "verified"),
        ("dc-b", "verified"),
        ("dc-c", "failed"),
    ] {
        let f = files
            .iter()
            .find(|f| f.starts_with(&format!("docs_{agent}_stats_")))
            .unwrap_or_else(|| panic!("{agent}'s stats in {files:?}"));
        let st = read_json(&dir.path().join("out").join(f));
        assert_eq!(st["scenario"]["name"], format!("docs@{agent}"));
        assert_eq!(st["agent"]["name"], agent);
        assert_eq!(
            st["isolation"]["verdict"], verdict,
            "{agent}: {}",
            st["isolation"]
        );
        let offset: f64 = st["agent"]["clock_offset_ms"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("clock offset recorded");
        assert!(offset.abs() < 50.0, "same host, same clock: {offset}");
        common::assert_stats_schema(&st);
    }
    for h in [a, b, liar] {
        h.agent.stop().await;
        h.sim.stop().await;
    }
}

/// `split`: one scenario across three agents at once, each with its own sim and a share of
/// the requests. The merged view is computed from all records; the shares are disjoint and
/// cover the set, the same in both rounds, and each agent's round 2 is served from its own
/// engine's cache (its sim's counters). Isolation runs on each agent: the one whose sim
/// lies about its reset is judged `failed`, and so is the scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_runs_one_scenario_across_agents_with_a_merged_and_a_per_agent_view() {
    let [a, b, liar] = three_datacenters().await;
    let dir = TempDir::new("split");
    dir.write(
        "docs.yaml",
        "endpoint: agent\nnum_requests: 12\noutput_tokens: 4\nworkload:\n  documents: 3\n  document_tokens: 400\n",
    );
    let p = plan(
        &dir,
        &listed(&a, &b, &liar),
        "  - {name: warm, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1, selector: {tier: gpu}, placement: split, concurrency: 3}\n  - {name: docs, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 2, selector: {tier: gpu}, placement: split, concurrency: 6}\n",
    );
    let out = kvbench(vec!["run".into(), p]).await;
    let console = text(&out);
    assert_eq!(out.status.code(), Some(4), "dc-c was not cold:\n{console}");
    assert!(console.contains("split across 3 agents"), "{console}");
    let out_dir = dir.path().join("out");
    let file = |prefix: &str| out_file(&out_dir, prefix);
    let st = read_json(&file("docs_stats_"));
    common::assert_stats_schema(&st);
    assert_eq!(
        st["scenario"]["split_across"],
        serde_json::json!(["dc-a", "dc-b", "dc-c"])
    );
    assert_eq!(st["agents"].as_array().map(Vec::len), Some(3));
    let res = read_json(&file("docs_results_"));
    let records: Vec<kvbench_common::record::RequestRecord> =
        serde_json::from_value(res["records"].clone()).expect("records");
    let mut shares: Vec<std::collections::BTreeMap<String, Vec<u32>>> = vec![Default::default(); 2];
    for r in &records {
        shares[r.round as usize - 1]
            .entry(r.agent.clone())
            .or_default()
            .push(r.request_id);
    }
    for by_agent in &mut shares {
        by_agent.values_mut().for_each(|ids| ids.sort_unstable());
    }
    for (round, by_agent) in shares.iter().enumerate() {
        let mut all: Vec<u32> = by_agent.values().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..12).collect::<Vec<_>>(),
            "round {}: disjoint, covering",
            round + 1
        );
        assert_eq!(by_agent.len(), 3);
    }
    assert_eq!(
        shares[0], shares[1],
        "round 2 replays each agent's own share"
    );
    for (i, round) in st["rounds"].as_array().expect("rounds").iter().enumerate() {
        let ttft: Vec<f64> = records
            .iter()
            .filter(|r| r.round as usize == i + 1)
            .filter_map(|r| r.ttft_ms())
            .collect();
        // Percentiles of all records together: from one histogram of every TTFT (the
        // stats' rule), within 0.1 % of the exact ones.
        let exact = kvbench_common::stats::Summary::of(ttft.iter().copied()).expect("ttft");
        let mut hist = LatencyHistogram::new();
        ttft.iter().for_each(|t| hist.record_ms(*t));
        let pct = |q: f64| hist.percentile_ms(q).clamp(exact.min, exact.max);
        for (key, want, exact) in [
            ("mean_ttft_ms", exact.mean, exact.mean),
            ("p99_ttft_ms", pct(99.0), exact.percentile(99.0)),
            ("median_ttft_ms", pct(50.0), exact.median()),
            ("max_ttft_ms", exact.max, exact.max),
        ] {
            let got = round[key].as_f64().expect(key);
            assert!(
                (got - want).abs() < 1e-6 && (got - exact).abs() <= exact * 0.001 + 0.001,
                "round {}: {key} {got} vs all records {want} (exact {exact})",
                i + 1
            );
        }
        // The agents' histograms merge into the round's.
        let decode = |v: &serde_json::Value| {
            LatencyHistogram::from_base64(v["histograms"]["ttft_ms"].as_str().expect("histogram"))
                .expect("a histogram")
        };
        let mut merged = LatencyHistogram::new();
        for part in round["per_agent"].as_object().expect("per_agent").values() {
            merged.merge(&decode(part));
        }
        let whole = decode(round);
        for q in [1.0, 50.0, 90.0, 99.0, 100.0] {
            assert_eq!(merged.percentile_ms(q), whole.percentile_ms(q), "p{q}");
        }
        let per_agent = round["per_agent"].as_object().expect("per_agent");
        assert_eq!(per_agent.len(), 3);
        let completed: u64 = per_agent
            .values()
            .map(|r| r["completed"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(completed, round["completed"].as_u64().expect("completed"));
        // The union of the agents' spans: never shorter than any one of them.
        let longest = per_agent
            .values()
            .filter_map(|r| r["duration"].as_f64())
            .fold(0.0, f64::max);
        assert!(round["duration"].as_f64().expect("duration") >= longest - 1e-9);
        if i == 1 {
            for (agent, r) in per_agent {
                let hit = r["engine_metrics"]["prefix_cache_hit_rate"].as_f64();
                assert!(
                    hit.is_some_and(|h| h > 0.8),
                    "{agent}'s round 2 from its own cache: {hit:?}"
                );
            }
        }
    }
    // The report shows each agent's part below the merged row of every round.
    let report = std::fs::read_to_string(file("multi_scenario_report_")).expect("report");
    for round in [1, 2] {
        assert!(report.contains(&format!("| docs | {round} | ")), "{report}");
        for agent in ["dc-a", "dc-b", "dc-c"] {
            assert!(
                report.contains(&format!("| docs (agent {agent}) | {round} | ")),
                "{agent} round {round}:\n{report}"
            );
        }
    }
    assert_eq!(st["isolation"]["verdict"], "failed", "{}", st["isolation"]);
    for (agent, verdict) in [
        ("dc-a", "verified"),
        ("dc-b", "verified"),
        ("dc-c", "failed"),
    ] {
        assert_eq!(
            st["isolation"]["per_agent"][agent]["verdict"], verdict,
            "{agent}: {}",
            st["isolation"]
        );
    }
    for h in [a, b, liar] {
        h.agent.stop().await;
        h.sim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_lists_each_agent_and_run_refuses_an_unreachable_one() {
    let a = host("dc-a", "a", SimConfig::default()).await;
    let b = host("dc-b", "b", SimConfig::default()).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let dir = TempDir::new("agents");
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 2\noutput_tokens: 4\nworkload:\n  prompt_tokens: 32\n",
    );
    let p = plan(
        &dir,
        &[("dc-a", a.agent.url(), "a"), ("dc-b", b.agent.url(), "b"), ("dc-gone", closed, "z")],
        "  - {name: c, config_file: c.yaml, scenario: cold_start, rounds: 1, agents: [dc-a, dc-b, dc-gone]}\n",
    );
    let out = kvbench(vec!["agents".into(), p.clone()]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("dc-a ")
            && l.contains("reachable")
            && l.contains("labels cloud=a,tier=gpu")
            && l.contains("RTT")),
        "{t}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dc-b ") && l.contains("reachable")),
        "{t}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dc-gone ") && l.contains("UNREACHABLE")),
        "{t}"
    );

    let out = kvbench(vec!["run".into(), p.clone()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nothing was run"), "{}", text(&out));
    assert!(
        !dir.path().join("out").exists()
            || std::fs::read_dir(dir.path().join("out")).map_or(0, |d| d.count()) == 0
    );

    let out = kvbench(vec!["run".into(), p, "--skip-unreachable".into()]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("leaving out scenario c@dc-gone"), "{t}");
    assert!(
        t.contains("Scenario done: c@dc-a") && t.contains("Scenario done: c@dc-b"),
        "{t}"
    );
    for h in [a, b] {
        h.agent.stop().await;
        h.sim.stop().await;
    }
}

/// A WAN between the coordinator and a datacenter: a TCP proxy on loopback that holds every
/// chunk `delay` in each direction (a delay line: order and bytes kept).
async fn delay_proxy(target: std::net::SocketAddr, delay: std::time::Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delay_line(cr, sw, delay));
            tokio::spawn(delay_line(sr, cw, delay));
        }
    });
    url
}

async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Why agents generate load next to their engines: an agent 40 ms away each way (a proxy
/// in this test; this kernel has no netem) measures the same TTFT as one reached directly,
/// each with an identical fixed-latency sim, and the handshake estimates its round trip and
/// clock offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_agent_measures_what_a_near_one_does_and_its_clock_is_estimated() {
    let fixed = || SimConfig {
        fixed_ttft_ms: Some(40.0),
        fixed_itl_ms: Some(5.0),
        ..SimConfig::default()
    };
    let near = host("near", "a", fixed()).await;
    let far = host("far", "b", fixed()).await;
    let far_addr: std::net::SocketAddr = far
        .agent
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("agent address");
    let wan = delay_proxy(far_addr, std::time::Duration::from_millis(40)).await;
    let dir = TempDir::new("wan");
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 40\noutput_tokens: 8\nworkload:\n  prompt_tokens: 64\n",
    );
    let p = plan(
        &dir,
        &[("near", near.agent.url(), "a"), ("far", wan, "b")],
        "  - {name: wan-fixed-sim, config_file: c.yaml, scenario: cold_start, rounds: 1, concurrency: 2, agents: [near, far]}\n",
    );
    let out = kvbench(vec!["run".into(), p]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stats = |agent: &str| {
        read_json(&out_file(
            &dir.path().join("out"),
            &format!("wan-fixed-sim_{agent}_stats_"),
        ))
    };
    let (n, f) = (stats("near"), stats("far"));
    let ms = |st: &serde_json::Value, key: &str| st["rounds"][0][key].as_f64().expect(key);
    for key in ["mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms"] {
        println!(
            "{key}: near {:.3} ms, far {:.3} ms",
            ms(&n, key),
            ms(&f, key)
        );
    }
    // Far below the 80 ms the WAN would add had the load crossed it: a busy 2-core machine
    // (the whole suite beside it) moves these by milliseconds, never by tens. How close the
    // two really are is measured in docs/benchmarks.md ("Near and far agents"), with this
    // test's printed figures.
    for (key, within) in [
        ("mean_ttft_ms", 20.0),
        ("median_ttft_ms", 20.0),
        ("p99_ttft_ms", 40.0),
    ] {
        let (a, b) = (ms(&n, key), ms(&f, key));
        assert!((a - b).abs() < within, "{key}: near {a} far {b}");
    }
    let clock = |st: &serde_json::Value, key: &str| -> f64 {
        st["agent"][key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect(key)
    };
    let (rtt, offset) = (clock(&f, "rtt_ms"), clock(&f, "clock_offset_ms"));
    println!("far agent: RTT {rtt:.2} ms, offset {offset:+.2} ms (truth: 80, 0)");
    assert!((rtt - 80.0).abs() < 5.0, "RTT {rtt}");
    assert!(offset.abs() < 5.0, "offset {offset}");
    assert!(clock(&n, "rtt_ms") < 5.0);
    for h in [near, far] {
        h.agent.stop().await;
        h.sim.stop().await;
    }
}

/// An agent of another release: it speaks protocol 1 and answers nothing but the handshake.
struct OldAgent;

#[tonic::async_trait]
impl kvbench_proto::v1::agent_server::Agent for OldAgent {
    async fn hello(
        &self,
        _: tonic::Request<kvbench_proto::v1::HelloRequest>,
    ) -> Result<tonic::Response<kvbench_proto::v1::HelloResponse>, tonic::Status> {
        Ok(tonic::Response::new(kvbench_proto::v1::HelloResponse {
            protocol_version: 1,
            agent_version: "0.0.1".into(),
            agent_name: "dc-old".into(),
            ..Default::default()
        }))
    }
    type RunRoundStream = tonic::codegen::BoxStream<kvbench_proto::v1::RoundEvent>;
    async fn run_round(
        &self,
        _: tonic::Request<kvbench_proto::v1::RunRoundRequest>,
    ) -> Result<tonic::Response<Self::RunRoundStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("old"))
    }
    async fn clear_cache(
        &self,
        _: tonic::Request<kvbench_proto::v1::ClearCacheRequest>,
    ) -> Result<tonic::Response<kvbench_proto::v1::ClearCacheResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("old"))
    }
    async fn restart_engine(
        &self,
        _: tonic::Request<kvbench_proto::v1::RestartEngineRequest>,
    ) -> Result<tonic::Response<kvbench_proto::v1::RestartEngineResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("old"))
    }
    async fn stop_round(
        &self,
        _: tonic::Request<kvbench_proto::v1::StopRoundRequest>,
    ) -> Result<tonic::Response<kvbench_proto::v1::StopRoundResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("old"))
    }
    type ResumeRoundStream = tonic::codegen::BoxStream<kvbench_proto::v1::RoundEvent>;
    async fn resume_round(
        &self,
        _: tonic::Request<kvbench_proto::v1::ResumeRoundRequest>,
    ) -> Result<tonic::Response<Self::ResumeRoundStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("old"))
    }
    async fn ack_round(
        &self,
        _: tonic::Request<kvbench_proto::v1::AckRoundRequest>,
    ) -> Result<tonic::Response<kvbench_proto::v1::AckRoundResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("old"))
    }
}

/// `kvbench agents` and `run` refuse an agent of another protocol version, naming both;
/// a live agent's line shows its engine's kind, URL, model and health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_protocol_version_is_refused_with_both_versions_named() {
    let a = host("dc-a", "a", SimConfig::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let old = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(kvbench_proto::v1::agent_server::AgentServer::new(OldAgent))
            .serve_with_incoming(tokio_stream_from(listener)),
    );
    let dir = TempDir::new("protocol");
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 2\noutput_tokens: 4\nworkload:\n  prompt_tokens: 32\n",
    );
    let p = plan(
        &dir,
        &[("dc-a", a.agent.url(), "a"), ("dc-old", old, "z")],
        "  - {name: c, config_file: c.yaml, scenario: cold_start, rounds: 1, agents: [dc-a, dc-old]}\n",
    );
    let out = kvbench(vec!["agents".into(), p.clone()]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = |name: &str| {
        t.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{t}"))
            .to_owned()
    };
    println!("{t}");
    let old_line = line("dc-old");
    assert!(old_line.contains("INCOMPATIBLE"), "{old_line}");
    assert!(
        old_line.contains("speaks protocol 1")
            && old_line.contains(&format!(
                "this coordinator speaks {}",
                kvbench_common::PROTOCOL_VERSION
            )),
        "both versions named: {old_line}"
    );
    let a_line = line("dc-a");
    assert!(
        a_line.contains(&format!(
            "engine vllm (kvbench-sim {}) {}",
            env!("CARGO_PKG_VERSION"),
            a.sim.base_url()
        )) && a_line.contains("model kvbench-sim")
            && a_line.contains("healthy"),
        "{a_line}"
    );
    let out = kvbench(vec!["run".into(), p]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nothing was run"), "{}", text(&out));
    server.abort();
    a.agent.stop().await;
    a.sim.stop().await;
}

/// The listener's connections as tonic's server takes them.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

/// A remote agent measures only the engine of its own config file: a scenario config that
/// names another engine is refused by `validate`, with the file, line and key, naming the
/// engine the agent owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_naming_an_engine_its_agent_does_not_own_is_refused() {
    let a = host("dc-a", "a", SimConfig::default()).await;
    let dir = TempDir::new("ownership");
    dir.write(
        "c.yaml",
        "num_requests: 2\nendpoint: http://10.1.2.3:8000\nworkload:\n  prompt_tokens: 32\n",
    );
    let p = plan(
        &dir,
        &[("dc-a", a.agent.url(), "a")],
        "  - {name: c, config_file: c.yaml, scenario: cold_start, agent: dc-a}\n",
    );
    let out = kvbench(vec!["validate".into(), p]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("c.yaml:2: key `endpoint`"), "{t}");
    assert!(
        t.contains(&format!("which owns the engine {}", a.sim.base_url())),
        "{t}"
    );
    a.agent.stop().await;
    a.sim.stop().await;
}

/// The README's cross-datacenter example, as a newcomer runs it: three sim + agent pairs
/// started by the script, one plan comparing them, `--stop`.
#[test]
fn the_multi_datacenter_example_compares_three_clouds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kvbench"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let run_dir = TempDir::new("multi-dc");
    let script = root.join("examples/multi-datacenter/start-agents.sh");
    let sh = |arg: Option<&str>| {
        let mut c = Command::new("bash");
        c.arg(&script)
            .env("KVBENCH_BIN", &bin)
            .env("KVBENCH_RUN_DIR", run_dir.path());
        if let Some(a) = arg {
            c.arg(a);
        }
        c.output().expect("bash")
    };
    let up = sh(None);
    assert!(up.status.success(), "{}", text(&up));
    let out = TempDir::new("multi-dc-out");
    let run = common::kvbench()
        .arg("run")
        .arg(root.join("examples/multi-datacenter/multi_scenario_config.yaml"))
        .arg("--output-dir")
        .arg(out.path())
        .output()
        .expect("kvbench runs");
    let down = sh(Some("--stop"));
    let console = text(&run);
    assert!(run.status.success(), "{console}");
    assert!(down.status.success(), "{}", text(&down));
    for name in [
        "long-context@dc-alpha",
        "long-context@dc-beta",
        "long-context@dc-gamma",
        "cold-start@dc-alpha",
        "cold-start@dc-gamma",
        "long-context-split",
    ] {
        assert!(
            console.contains(&format!("| {name} |")),
            "{name}:\n{console}"
        );
    }
    println!("{console}");
}
