//! `kvbench run --resume RUN_DIR` after a coordinator killed (`kill -9`) or stopped
//! (SIGINT) in the middle of a round, with real processes: agents (`kvbench
//! internal-agent`) next to sims that outlive the coordinator, so that what they served can
//! be reconciled with the records.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::procs::{agent, run_json, served, signal, until_finished, until_served};
use common::TempDir;
use kvbench_sim::SimConfig;

const LONG: &str = "endpoint: agent\nnum_requests: 200000\nduration_s: 20\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n";
const SHORT: &str =
    "endpoint: agent\nnum_requests: 4\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n";

/// The plan: a short scenario, a long one (interrupted), a short one, on one agent.
fn plan(dir: &TempDir, addr: &str) {
    dir.write("long.yaml", LONG);
    dir.write("short.yaml", SHORT);
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: none\nwait_between_scenarios: 0\nagents:\n  - {{name: a, address: \"http://{addr}\"}}\ntest_scenarios:\n  - {{name: first, scenario: cold_start, config_file: short.yaml, agent: a, rounds: 1}}\n  - {{name: long, scenario: cold_start, config_file: long.yaml, agent: a, rounds: 1, concurrency: 4}}\n  - {{name: last, scenario: cold_start, config_file: short.yaml, agent: a, rounds: 1}}\n"
        ),
    );
}

/// Records of every results file and every leftover record spool of the folder, by
/// outcome.
fn records(out: &Path) -> (u64, u64, u64) {
    let (mut ok, mut cancelled, mut other) = (0, 0, 0);
    let mut count = |r: &serde_json::Value| match r["outcome"].as_str() {
        Some("ok") => ok += 1,
        Some("cancelled") => cancelled += 1,
        _ => other += 1,
    };
    for entry in std::fs::read_dir(out).expect("out").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if name.contains("_results_") {
            let v: serde_json::Value = serde_json::from_str(&text).expect("results");
            v["records"]
                .as_array()
                .expect("records")
                .iter()
                .for_each(&mut count);
        } else if name.contains("_records_") {
            for line in text.lines() {
                count(&serde_json::from_str(line).expect("a whole record"));
            }
        }
    }
    (ok, cancelled, other)
}

/// The scenario's files as its `scenario_finished` event names them, with their bytes.
fn files_of(v: &serde_json::Value, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["stats_file", "results_file"]
        .iter()
        .map(|f| {
            let p = dir.join(v[f].as_str().expect("a file"));
            let bytes = std::fs::read(&p).expect("it reads");
            (p, bytes)
        })
        .collect()
}

/// `kill -9` of the coordinator in the middle of a round, then `--resume`: a changed config
/// is refused with the file named; as it was, the run resumes: the scenario that ended
/// is kept byte for byte, the interrupted one runs again, the run ends as an uninterrupted
/// one would, and every request the sim served is a record somewhere in the folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_resumes_where_it_stopped_and_nothing_is_lost() {
    let dir = TempDir::new("resume-kill");
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let (_agent, addr) = agent("a", &sim.base_url());
    plan(&dir, &addr);
    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    let first = until_finished(&lines, "first");
    let kept = files_of(&first, dir.path());
    until_served(&sim.base_url(), 40).await;
    assert!(signal(run.pid(), "KILL"));
    let _ = run.0.wait();

    // A config changed since: refused, the file named, nothing run.
    dir.write("short.yaml", &format!("{SHORT}# changed\n"));
    let o = common::kvbench()
        .args(["run", "--resume", "out"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("short.yaml") && err.contains("changed since the run started"),
        "{err}"
    );
    dir.write("short.yaml", SHORT);

    let (mut resumed, lines) = run_json(dir.path(), &["run", "--resume", "out"]);
    let (mut kept_event, mut long, mut last) = (None, None, None);
    while let Ok((_, line)) = lines.recv_timeout(Duration::from_secs(60)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match (v["event"].as_str(), v["scenario"].as_str()) {
            (Some("scenario_kept"), Some("first")) => kept_event = Some(v),
            (Some("scenario_finished"), Some("long")) => long = Some(v),
            (Some("scenario_finished"), Some("last")) => last = Some(v),
            (Some("scenario_finished"), _) => panic!("ran again: {v}"),
            _ => {}
        }
    }
    let status = resumed.0.wait().expect("ends");
    assert!(status.success(), "{status}");
    assert_eq!(kept_event.expect("first kept")["status"], "completed");
    let long = long.expect("long ran again");
    assert_eq!(long["status"], "completed", "{long}");
    assert_eq!(last.expect("last ran")["status"], "completed");
    for (p, bytes) in kept {
        assert_eq!(
            std::fs::read(&p).expect("still there"),
            bytes,
            "{}",
            p.display()
        );
    }
    // The rerun says what happened to the attempt before it.
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(long["stats_file"].as_str().expect("stats")))
            .expect("stats"),
    )
    .expect("JSON");
    let note = stats["interruption"].as_str().expect("interruption noted");
    assert!(note.contains("fetched from its agents"), "{note}");
    // The run file and the report: finished, with the resumption told.
    let out = dir.path().join("out");
    let run_file = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("multi_scenario_run_"))
        .expect("run file");
    let rf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run_file).expect("reads")).expect("JSON");
    assert_eq!(rf["state"], "finished");
    assert_eq!(rf["resumed"][0]["kept"][0], "first");
    let report = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("multi_scenario_report_"))
        .expect("report");
    let report = std::fs::read_to_string(report).expect("report");
    assert!(
        report.contains("resumed"),
        "the report tells the resumption"
    );
    // Every request the sim served is a record: ok, or cancelled when the interrupted
    // round was stopped (its last requests may have completed on the sim).
    let (ok, cancelled, other) = records(&out);
    let sim_served = served(&sim.base_url()).await;
    assert_eq!(other, 0);
    assert!(
        ok <= sim_served && sim_served <= ok + cancelled,
        "the sim served {sim_served}; records: {ok} ok, {cancelled} cancelled"
    );
}

/// SIGINT in the middle of a round: exit 130 with the stopped scenario's stats and the
/// report written; `--resume` then completes the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_exits_130_with_its_report_and_resumes() {
    let dir = TempDir::new("resume-int");
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let (_agent, addr) = agent("a", &sim.base_url());
    plan(&dir, &addr);
    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    until_finished(&lines, "first");
    until_served(&sim.base_url(), 40).await;
    assert!(signal(run.pid(), "INT"));
    let long = until_finished(&lines, "long");
    assert_eq!(long["status"], "cancelled", "{long}");
    let status = run.0.wait().expect("ends");
    assert_eq!(status.code(), Some(130));
    let out = dir.path().join("out");
    let names: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("long_stats_")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("multi_scenario_report_")),
        "{names:?}"
    );
    let o = common::kvbench()
        .args(["run", "--resume", "out"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Scenario kept: first"), "{text}");
    assert!(text.contains("Scenario done: long"), "{text}");
    assert!(text.contains("Scenario done: last"), "{text}");
    // Resumed again, a finished run has nothing left to do.
    let again = common::kvbench()
        .args(["run", "--resume", "out"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to resume"));
}
