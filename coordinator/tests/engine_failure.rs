//! An engine killed (`kill -9`) in the middle of a round, for real: a sim process started
//! by a script, next to an agent process configured with `on_engine_failure`. Under
//! `restart` the agent stops the round, restarts the engine with its `restart_engine`
//! command, and the scenario runs again from round 1; under `report` the round goes on and
//! its requests fail with the class of what happened.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::procs::{agent_from_config, finished_with_rounds, run_json, served, signal};
use common::TempDir;

/// A sim started in the background by `start` (its pid in `sim.pid`), as a host's script
/// would; `restart` kills it (if alive) and starts it again.
struct Engine {
    port: u16,
    pidfile: std::path::PathBuf,
    start: String,
}

impl Engine {
    fn new(dir: &Path) -> Engine {
        let port = common::free_port();
        let pidfile = dir.join("sim.pid");
        let start = format!(
            "{} internal-sim --listen 127.0.0.1:{port} --decode-base-ms 15 >/dev/null 2>&1 & echo $! > {}",
            env!("CARGO_BIN_EXE_kvbench"),
            pidfile.display()
        );
        let e = Engine {
            port,
            pidfile,
            start,
        };
        assert!(std::process::Command::new("sh")
            .args(["-c", &e.start])
            .status()
            .expect("sh")
            .success());
        assert!(
            common::wait_healthy(&e.url(), Duration::from_secs(20)),
            "the sim starts"
        );
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(&self.pidfile)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid")
    }

    fn restart_script(&self) -> String {
        format!(
            "kill -9 $(cat {}) 2>/dev/null; sleep 0.2; {}",
            self.pidfile.display(),
            self.start
        )
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(p) = std::fs::read_to_string(&self.pidfile) {
            let _ = signal(p.trim().parse().unwrap_or(0), "KILL");
        }
    }
}

/// The agent's config: the engine, its restart command, what to do when it fails.
fn agent_config(dir: &TempDir, engine: &Engine, on_failure: &str) -> std::path::PathBuf {
    dir.write(
        "agent.yaml",
        &format!(
            "name: a\nlisten: 127.0.0.1:0\nengine: {{kind: sim, base_url: \"{}\"}}\nrestart_engine:\n  argv: [sh, -c, {:?}]\n  timeout_s: 30\non_engine_failure: {on_failure}\nstate_dir: state\n",
            engine.url(),
            engine.restart_script()
        ),
    )
}

const SCENARIO: &str =
    "endpoint: agent\nnum_requests: 120\noutput_tokens: 16\nworkload: {prompt_tokens: 40}\n";

fn plan(dir: &TempDir, addr: &str, rounds: u32) {
    dir.write("s.yaml", SCENARIO);
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: clear\nwait_between_scenarios: 0\nagents:\n  - {{name: a, address: \"http://{addr}\"}}\ntest_scenarios:\n  - {{name: s, scenario: cold_start, config_file: s.yaml, agent: a, rounds: {rounds}, concurrency: 4}}\n"
        ),
    );
}

/// Reads the run's events until `n` records arrived.
fn until_records(lines: &std::sync::mpsc::Receiver<(Instant, String)>, n: usize) {
    let mut records = 0;
    while records < n {
        let (_, line) = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the round runs");
        if line.contains("\"type\":\"record\"") {
            records += 1;
        }
    }
}

/// Reads the run's events to its end: every one, as JSON.
fn the_rest(lines: &std::sync::mpsc::Receiver<(Instant, String)>) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_str(&l).ok())
        .collect()
}

fn read_json(dir: &Path, part: &str) -> serde_json::Value {
    common::read_json(&common::out_file(&dir.join("out"), &format!("s{part}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_round_is_restarted_and_the_scenario_runs_again() {
    let dir = TempDir::new("engine-restart");
    let engine = Engine::new(dir.path());
    let config = agent_config(&dir, &engine, "restart");
    let (_agent, addr) = agent_from_config(&config, &dir.path().join("agent.log"));
    plan(&dir, &addr, 2);
    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    until_records(&lines, 20);
    let first = engine.pid();
    assert!(signal(first, "KILL"), "the engine is killed");
    let events = the_rest(&lines);
    let status = run.0.wait().expect("kvbench ends");
    assert_ne!(engine.pid(), first, "the restart started another engine");

    // The run: the engine's death told as it happened, the restart, the rerun.
    let event = |name: &str| {
        events
            .iter()
            .find(|v| v["event"] == name || v["data"]["type"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {events:#?}"))
    };
    let finished = event("scenario_finished");
    assert_eq!(event("engine_down")["data"]["restarting"], true);
    assert_eq!(
        event("engine_restarted")["data"]["error"],
        serde_json::Value::Null
    );
    assert_eq!(event("engine_failed")["agent"], "a");
    assert_eq!(event("engine_rerun")["round"], 1);
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(status.code(), Some(0));

    // The stats: the failure, named and dated, the restart, the attempt set aside.
    let stats = read_json(dir.path(), "_stats_");
    let failures = stats["engine_failures"]
        .as_array()
        .expect("engine_failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    let f = &failures[0];
    assert_eq!(
        (f["agent"].as_str(), f["round"].as_u64()),
        (Some("a"), Some(1))
    );
    assert!(f["at"].as_str().is_some_and(|a| a.ends_with('Z')), "{f}");
    assert!(
        f["detail"]
            .as_str()
            .unwrap_or("")
            .contains("health check failed"),
        "{f}"
    );
    assert_eq!(f["restart"]["succeeded"], true, "{f}");
    assert_eq!(f["set_aside"].as_array().map(Vec::len), Some(1), "{f}");
    // Both rounds of the attempt that counts ran whole on the restarted engine.
    let rounds = stats["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        assert_eq!(
            (r["completed"].as_u64(), r["failed"].as_u64()),
            (Some(120), Some(0)),
            "{r}"
        );
    }

    // The results: the attempt's records kept apart, with the classes of what happened.
    let results = read_json(dir.path(), "_results_");
    let kept = results["records"].as_array().expect("records");
    assert_eq!(kept.len(), 240);
    assert!(kept.iter().all(|r| r["outcome"] == "ok"));
    let discarded = results["discarded_records"]
        .as_array()
        .expect("discarded_records");
    assert!(discarded.len() >= 20, "{} discarded", discarded.len());
    let classes: std::collections::BTreeSet<&str> = discarded
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert!(
        classes
            .iter()
            .any(|c| ["connect_error", "reset", "stream_truncated", "cancelled"].contains(c)),
        "{classes:?}"
    );
    // The restarted engine served the attempt that counts, and the cold check of the
    // isolation step run before it, nothing else.
    let probes = u64::from(stats["isolation"]["probe"].is_object());
    assert_eq!(served(&engine.url()).await, 240 + probes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_dies_under_report_fails_its_requests_and_is_named() {
    let dir = TempDir::new("engine-report");
    let engine = Engine::new(dir.path());
    let config = agent_config(&dir, &engine, "report");
    let (_agent, addr) = agent_from_config(&config, &dir.path().join("agent.log"));
    plan(&dir, &addr, 1);
    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    until_records(&lines, 20);
    let first = engine.pid();
    assert!(signal(first, "KILL"));
    let (finished, _) = finished_with_rounds(&lines, "s", Duration::from_secs(90));
    let status = run.0.wait().expect("kvbench ends");
    assert_eq!(engine.pid(), first, "report does not restart the engine");
    assert_eq!(finished["status"], "degraded", "{finished}");
    assert_eq!(status.code(), Some(3), "degraded's exit status");
    let stats = read_json(dir.path(), "_stats_");
    let f = &stats["engine_failures"][0];
    assert_eq!(f["agent"], "a");
    assert!(f.get("restart").is_none(), "{f}");
    let round = &stats["rounds"][0];
    // Every request was sent and recorded: the late ones refused by a dead engine.
    assert_eq!(
        round["completed"].as_u64().unwrap_or(0) + round["failed"].as_u64().unwrap_or(0),
        120,
        "{round}"
    );
    let results = read_json(dir.path(), "_results_");
    let refused = results["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["outcome"] == "connect_error")
        .count();
    assert!(refused > 0, "requests after the death are refused");
    let report = std::fs::read_dir(dir.path().join("out"))
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .expect("a report");
    let text = std::fs::read_to_string(report).expect("report");
    assert!(text.contains("the engine of a went down"), "{text}");
}
