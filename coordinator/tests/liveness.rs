//! Liveness on its own path, with real processes frozen for real (SIGSTOP): a frozen agent
//! fails its round within 10 s and the plan goes on (its records kept), then it recovers
//! when it thaws; an agent whose coordinator froze stops sending requests within 10 s.
//! Both sides ping on the HTTP/2 connection itself (`kvbench_common::agent::LIVENESS_PING`),
//! never behind a round's records.

mod common;

use std::time::{Duration, Instant};

use common::procs::{agent, run_json, served, signal, until_served};
use common::TempDir;
use kvbench_sim::SimConfig;

const LONG: &str = "endpoint: agent\nnum_requests: 200000\nduration_s: 40\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n";
const SHORT: &str =
    "endpoint: agent\nnum_requests: 4\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n";

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
    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    // Freeze the agent once its round is under way.
    until_served(&sims[0].base_url(), 20).await;
    assert!(signal(frozen.pid(), "STOP"));
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
    assert!(signal(frozen.pid(), "CONT"));
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
    let (run, _lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    until_served(&sim.base_url(), 20).await;
    assert!(signal(run.pid(), "STOP"));
    let at_stop = served(&sim.base_url()).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after_10s = served(&sim.base_url()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after_14s = served(&sim.base_url()).await;
    assert!(at_stop > 0);
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
    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    let mut before_files = Vec::new();
    until_served(&sims[1].base_url(), 20).await;
    assert!(signal(killed.pid(), "KILL"));
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
    let others = (served(&sims[0].base_url()).await as f64)
        + (served(&sims[2].base_url()).await as f64)
        - 8.0;
    let records = split["records"].as_u64().expect("records") as f64;
    assert!(
        records > others && records <= others + (served(&sims[1].base_url()).await as f64),
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

/// SIGTERM to an agent in the middle of a round: its load stops at once, the coordinator is
/// told why and gets every record (the agent serves on until they are acknowledged), the
/// agent exits within 15 s, and the plan goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_agent_hands_over_every_record_and_exits_within_15_s() {
    let dir = TempDir::new("agent-term");
    let sims = [
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
    ];
    let (mut term, term_addr) = agent("term", &sims[0].base_url());
    let (_other, other_addr) = agent("other", &sims[1].base_url());
    dir.write("long.yaml", LONG);
    dir.write("short.yaml", SHORT);
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: none\nwait_between_scenarios: 0\nagents:\n  - {{name: term, address: \"http://{term_addr}\"}}\n  - {{name: other, address: \"http://{other_addr}\"}}\ntest_scenarios:\n  - {{name: long, scenario: cold_start, config_file: long.yaml, agent: term, rounds: 1, concurrency: 4}}\n  - {{name: after, scenario: cold_start, config_file: short.yaml, agent: other, rounds: 1}}\n"
        ),
    );
    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    until_served(&sims[0].base_url(), 20).await;
    assert!(signal(term.pid(), "TERM"));
    let signalled = Instant::now();
    let exited = loop {
        if let Some(status) = term.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "the agent still runs 15 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "{exited:?}");
    let long = common::procs::until_finished(&lines, "long");
    assert_eq!(long["status"], "failed", "{long}");
    let error = long["error"].as_str().unwrap_or("");
    assert!(
        error.contains("agent term stopped the round: the agent shut down (SIGTERM)"),
        "{error}"
    );
    let after = common::procs::until_finished(&lines, "after");
    assert_eq!(after["status"], "completed");
    let status = run.0.wait().expect("kvbench ends");
    assert_eq!(status.code(), Some(1));
    // Every request the engine served is a record: ok, or cancelled when the load stopped
    // (a request may complete on the engine as it is cancelled).
    let results = common::read_json(&common::out_file(&dir.path().join("out"), "long_results_"));
    let records = results["records"].as_array().expect("records");
    let count = |o: &str| records.iter().filter(|r| r["outcome"] == o).count() as u64;
    let (ok, cancelled) = (count("ok"), count("cancelled"));
    assert_eq!(ok + cancelled, records.len() as u64);
    let served = served(&sims[0].base_url()).await;
    assert!(
        ok <= served && served <= ok + cancelled,
        "the engine served {served}; records: {ok} ok, {cancelled} cancelled"
    );
}
