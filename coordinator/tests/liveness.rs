//! Liveness on its own path, with real processes frozen for real (SIGSTOP): a frozen agent
//! fails its round within 10 s and the plan goes on (its records kept), then it recovers
//! when it thaws; an agent whose coordinator froze stops sending requests within 10 s.
//! Both sides ping on the HTTP/2 connection itself (`kvbench_common::agent::LIVENESS_PING`),
//! never behind a round's records.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use kvbench_sim::SimConfig;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = signal(self.0.id(), "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// `kvbench internal-agent` for the engine at `engine`, and its address.
fn agent(name: &str, engine: &str) -> (Proc, String) {
    let mut child = common::kvbench()
        .args([
            "internal-agent",
            "--listen",
            "127.0.0.1:0",
            "--no-telemetry",
            "--name",
            name,
            "--engine",
            engine,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let addr = line
        .trim()
        .strip_prefix("kvbench-agent listening on ")
        .expect("listening")
        .to_owned();
    (Proc(child), addr)
}

async fn served(sim: &kvbench_sim::SimHandle) -> f64 {
    kvbench_agent::scrape_metrics(
        &format!("{}/metrics", sim.base_url()),
        &["vllm:request_success_total"],
        Duration::from_secs(5),
    )
    .await
    .expect("sim metrics")
    .get("vllm:request_success_total")
    .copied()
    .unwrap_or(0.0)
}

const LONG: &str = "endpoint: agent\nnum_requests: 200000\nduration_s: 40\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n";
const SHORT: &str =
    "endpoint: agent\nnum_requests: 4\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n";

/// `kvbench run --json PLAN`, its stdout lines read as they come, each with when.
fn run_json(dir: &std::path::Path) -> (Proc, std::sync::mpsc::Receiver<(Instant, String)>) {
    let mut child = common::kvbench()
        .args(["run", "plan.yaml", "--json"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kvbench runs");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    (Proc(child), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_fails_its_round_within_10_s_and_the_plan_goes_on() {
    let dir = TempDir::new("frozen");
    let sims = [
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
    ];
    let (frozen, frozen_addr) = agent("frozen", &sims[0].base_url());
    let (_other, other_addr) = agent("other", &sims[1].base_url());
    dir.write("long.yaml", LONG);
    dir.write("short.yaml", SHORT);
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: none\nwait_between_scenarios: 0\nagents:\n  - {{name: frozen, address: \"http://{frozen_addr}\"}}\n  - {{name: other, address: \"http://{other_addr}\"}}\ntest_scenarios:\n  - {{name: long, scenario: cold_start, config_file: long.yaml, agent: frozen, rounds: 1, concurrency: 4}}\n  - {{name: after, scenario: cold_start, config_file: short.yaml, agent: other, rounds: 1}}\n"
        ),
    );
    let (mut run, lines) = run_json(dir.path());
    // Freeze the agent once its round is under way.
    let started = Instant::now();
    while served(&sims[0]).await < 20.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the round did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(signal(frozen.0.id(), "STOP"));
    let stopped = Instant::now();
    let mut failed_at = None;
    let mut after_status = None;
    while let Ok((at, line)) = lines.recv_timeout(Duration::from_secs(60)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["event"] == "scenario_finished" && v["scenario"] == "long" {
            failed_at = Some(at);
            assert_eq!(v["status"], "failed", "{line}");
            assert!(
                v["records"].as_u64().unwrap_or(0) > 0,
                "what arrived is kept: {line}"
            );
        }
        if v["event"] == "scenario_finished" && v["scenario"] == "after" {
            after_status = Some(v["status"].clone());
        }
    }
    let _ = run.0.wait();
    let took = failed_at
        .expect("the frozen agent's scenario ended")
        .duration_since(stopped);
    assert!(took < Duration::from_secs(10), "found lost after {took:?}");
    assert_eq!(
        after_status,
        Some(serde_json::json!("completed")),
        "the plan went on"
    );
    // Thawed, the agent serves the next plan.
    assert!(signal(frozen.0.id(), "CONT"));
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out2\nisolation: none\nagents:\n  - {{name: frozen, address: \"http://{frozen_addr}\"}}\ntest_scenarios:\n  - {{name: again, scenario: cold_start, config_file: short.yaml, agent: frozen, rounds: 1}}\n"
        ),
    );
    let o = common::kvbench()
        .args(["run", "plan.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stops_its_load_when_its_coordinator_freezes() {
    let dir = TempDir::new("coordinator-gone");
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let (_agent, addr) = agent("a", &sim.base_url());
    dir.write("long.yaml", LONG);
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: none\nagents:\n  - {{name: a, address: \"http://{addr}\"}}\ntest_scenarios:\n  - {{name: long, scenario: cold_start, config_file: long.yaml, agent: a, rounds: 1, concurrency: 4}}\n"
        ),
    );
    let (run, _lines) = run_json(dir.path());
    let started = Instant::now();
    while served(&sim).await < 20.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the round did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(signal(run.0.id(), "STOP"));
    let at_stop = served(&sim).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after_10s = served(&sim).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after_14s = served(&sim).await;
    assert!(at_stop > 0.0);
    assert_eq!(
        after_10s, after_14s,
        "the agent kept sending after its coordinator froze ({at_stop} at the stop)"
    );
    drop(run);
}

/// `kill -9` of one of three agents in the middle of a split round: its part fails within
/// 10 s, the scenario keeps the other agents' records and is `partial` (naming the agent
/// lost and when), the next scenario runs, and the files written before are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_of_three_leaves_a_partial_scenario_and_the_plan_goes_on() {
    let dir = TempDir::new("killed");
    let sims = [
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
    ];
    let (_a, a) = agent("a", &sims[0].base_url());
    let (killed, b) = agent("b", &sims[1].base_url());
    let (_c, c) = agent("c", &sims[2].base_url());
    dir.write("long.yaml", LONG);
    dir.write("short.yaml", SHORT);
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: none\nwait_between_scenarios: 0\nagents:\n  - {{name: a, address: \"http://{a}\"}}\n  - {{name: b, address: \"http://{b}\"}}\n  - {{name: c, address: \"http://{c}\"}}\ntest_scenarios:\n  - {{name: before, scenario: cold_start, config_file: short.yaml, agent: a, rounds: 1}}\n  - {{name: split, scenario: cold_start, config_file: long.yaml, agents: [a, b, c], placement: split, rounds: 1, concurrency: 6}}\n  - {{name: after, scenario: cold_start, config_file: short.yaml, agent: c, rounds: 1}}\n"
        ),
    );
    let (mut run, lines) = run_json(dir.path());
    let mut before_files = Vec::new();
    let started = Instant::now();
    while served(&sims[1]).await < 20.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the round did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(signal(killed.0.id(), "KILL"));
    let killed_at = Instant::now();
    let (mut split, mut after, mut lost) = (None, None, None);
    while let Ok((at, line)) = lines.recv_timeout(Duration::from_secs(60)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["event"] == "part_failed" {
            assert_eq!(v["agent"], "b", "{v}");
            lost = Some(at);
        }
        if v["event"] != "scenario_finished" {
            continue;
        }
        match v["scenario"].as_str() {
            Some("before") => {
                for f in ["stats_file", "results_file"] {
                    let p = std::path::PathBuf::from(v[f].as_str().expect("a file"));
                    before_files.push((
                        p.clone(),
                        std::fs::read(dir.path().join(&p)).expect("it reads"),
                    ));
                }
            }
            Some("split") => split = Some((at, v)),
            Some("after") => after = Some(v),
            _ => {}
        }
    }
    let status = run.0.wait().expect("kvbench ends");
    let (_, split) = split.expect("the split scenario ended");
    let took = lost.expect("b's part failed").duration_since(killed_at);
    assert!(took < Duration::from_secs(10), "found lost after {took:?}");
    assert_eq!(split["status"], "partial", "{split}");
    let error = split["error"].as_str().unwrap_or("");
    assert!(
        error.contains("agent b lost at") && error.contains("other agents' records are kept"),
        "{error}"
    );
    // The other two agents' records are all there (their sims also served `before` and
    // `after`, 4 requests each), and b's up to the kill.
    let others = served(&sims[0]).await + served(&sims[2]).await - 8.0;
    let records = split["records"].as_u64().expect("records") as f64;
    assert!(
        records > others && records <= others + served(&sims[1]).await,
        "{records} records; the other sims served {others} in this scenario"
    );
    assert_eq!(after.expect("the plan went on")["status"], "completed");
    assert_eq!(
        status.code(),
        Some(1),
        "a partial scenario is a failure of the run"
    );
    for (p, bytes) in before_files {
        assert_eq!(
            std::fs::read(dir.path().join(&p)).expect("still there"),
            bytes,
            "{} changed",
            p.display()
        );
    }
}
