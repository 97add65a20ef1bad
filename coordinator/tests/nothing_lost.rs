//! Nothing measured is lost, and the exit status tells the truth: each case through the
//! `kvbench` binary, as a user would meet it (signals, a closed stdout, an unwritable
//! output folder, an absurd concurrency, degraded and not-cold runs).

mod common;

use common::kvbench;
use common::procs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{read_json, TempDir};

/// Files of the output folder whose names contain `part`.
fn files_with(dir: &Path, part: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(part))
                .collect()
        })
        .unwrap_or_default()
}

fn outcomes(results: &serde_json::Value) -> Vec<String> {
    results["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Starts `kvbench run` on `plan` and reads its stdout until a line contains `until`.
fn run_until(plan: &Path, until: &str) -> (Child, Vec<String>) {
    let mut child = kvbench()
        .args(["run"])
        .arg(plan)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kvbench runs");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("stdout readable");
        assert!(n > 0, "the run ended before {until:?}:\n{}", seen.join(""));
        let hit = line.contains(until);
        seen.push(line);
        if hit {
            break;
        }
    }
    // Keep draining stdout so that the run never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    (child, seen)
}

/// A long round on the embedded sim: 4 in flight, each ~3 s (300 decode steps of 10 ms).
fn long_round_plan(dir: &TempDir) -> PathBuf {
    dir.write(
        "long.yaml",
        "endpoint: sim\nnum_requests: 200\noutput_tokens: 300\nworkload:\n  prompt_tokens: 64\n",
    );
    dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: long, config_file: long.yaml, scenario: cold_start, rounds: 2, concurrency: 4}\n",
    )
}

fn stopped_mid_round_keeps_every_record(signal: &str, code: i32) {
    let dir = TempDir::new(&format!("signal-{signal}"));
    let plan = long_round_plan(&dir);
    let (mut child, _) = run_until(&plan, "Progress: 1/1");
    // Long enough for the first requests to finish and the next ones to be in flight.
    std::thread::sleep(Duration::from_secs(5));
    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("kvbench ends");
    assert_eq!(status.code(), Some(code), "exit status after SIG{signal}");

    let out = dir.path().join("out");
    let stats = files_with(&out, "_stats_");
    let results = files_with(&out, "_results_");
    assert_eq!((stats.len(), results.len()), (1, 1), "the scenario's files");
    let stats = read_json(&stats[0]);
    assert_eq!(stats["status"], "cancelled");
    common::assert_stats_schema(&stats);
    let outcomes = outcomes(&read_json(&results[0]));
    let ok = outcomes.iter().filter(|o| *o == "ok").count();
    let cancelled = outcomes.iter().filter(|o| *o == "cancelled").count();
    assert!(ok >= 4, "completed requests are kept: {outcomes:?}");
    assert!(
        (1..=4).contains(&cancelled),
        "the requests in flight are recorded as cancelled: {outcomes:?}"
    );
    assert_eq!(ok + cancelled, outcomes.len(), "{outcomes:?}");
    let round = &stats["rounds"][0];
    assert_eq!(round["completed"].as_u64(), Some(ok as u64));
    assert_eq!(
        round["outcomes"]["cancelled"].as_u64(),
        Some(cancelled as u64)
    );
    assert!(
        stats["comparison"].is_null(),
        "a cancelled round is never compared"
    );
}

#[test]
fn sigterm_mid_round_keeps_every_record() {
    stopped_mid_round_keeps_every_record("TERM", 143);
}

#[test]
fn sighup_mid_round_keeps_every_record() {
    stopped_mid_round_keeps_every_record("HUP", 129);
}

/// Records go to disk as they arrive: a coordinator killed outright (no chance to write
/// its result files) leaves every record it had received in `<slug>_records_<ts>.jsonl`.
#[test]
fn a_killed_run_leaves_the_records_it_received_on_disk() {
    let dir = TempDir::new("sigkill");
    let plan = long_round_plan(&dir);
    let (mut child, _) = run_until(&plan, "Progress: 1/1");
    // The first wave (4 requests of ~3 s) has ended and been received.
    std::thread::sleep(Duration::from_secs(5));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let out = dir.path().join("out");
    assert!(
        files_with(&out, "_results_").is_empty(),
        "no time to write it"
    );
    let spools = files_with(&out, "_records_");
    assert_eq!(spools.len(), 1, "one record file: {spools:?}");
    let text = std::fs::read_to_string(&spools[0]).expect("readable");
    let records: Vec<kvbench_common::record::RequestRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line a whole record"))
        .collect();
    assert!(records.len() >= 4, "{} records", records.len());
    assert!(records
        .iter()
        .all(|r| r.outcome == kvbench_common::record::Outcome::Ok
            && r.round == 1
            && r.scenario == "long"));
}

#[test]
fn a_closed_stdout_never_stops_a_run() {
    let dir = TempDir::new("closed-stdout");
    dir.write(
        "s.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  documents: 2\n  document_tokens: 200\n",
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: a, config_file: s.yaml, scenario: long_context_high_reuse, rounds: 2}\n  - {name: b, config_file: s.yaml, scenario: long_context_high_reuse, rounds: 2}\n",
    );
    let mut child = kvbench()
        .arg("run")
        .arg(&plan)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvbench runs");
    drop(child.stdout.take()); // `| head -0`: nobody reads stdout.
    let out = child.wait_with_output().expect("kvbench ends");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir_out = dir.path().join("out");
    assert_eq!(files_with(&dir_out, "_stats_").len(), 2);
    assert_eq!(files_with(&dir_out, "_results_").len(), 2);
}

#[test]
fn an_output_folder_that_cannot_be_written_is_refused_before_anything_runs() {
    let dir = TempDir::new("bad-output");
    dir.write(
        "s.yaml",
        "endpoint: sim\nnum_requests: 2\noutput_tokens: 2\nworkload:\n  prompt_tokens: 8\n",
    );
    dir.write("a-file", "not a folder");
    let plan = dir.write(
        "plan.yaml",
        "output_dir: a-file/out\ntest_scenarios:\n  - {name: a, config_file: s.yaml, scenario: cold_start}\n",
    );
    for cmd in ["validate", "run"] {
        let out = kvbench().arg(cmd).arg(&plan).output().expect("kvbench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains("output_dir") && stderr.contains("a-file"),
            "{cmd} names the key and the folder: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("Progress:"),
            "{cmd} ran nothing"
        );
    }
}

#[test]
fn a_run_whose_records_cannot_be_written_stops_with_exit_5() {
    let dir = TempDir::new("files-lost");
    dir.write(
        "s.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 64\nworkload:\n  prompt_tokens: 16\n",
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: a, config_file: s.yaml, scenario: cold_start, rounds: 2}\n",
    );
    let (child, _) = run_until(&plan, "Progress: 1/1");
    // The output folder disappears while the scenario runs (each round takes ~3 s).
    std::fs::remove_dir_all(dir.path().join("out")).expect("remove the output folder");
    let out = child.wait_with_output().expect("kvbench ends");
    // Records that cannot be written: the run stops at once (resumable), with its own
    // exit status (the message is checked in disk_full.rs).
    assert_eq!(out.status.code(), Some(5), "{:?}", out.status);
}

#[test]
fn a_huge_concurrency_with_few_requests_runs_normally_and_long_names_fit() {
    let dir = TempDir::new("huge-concurrency");
    dir.write(
        "s.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 2\nworkload:\n  prompt_tokens: 8\n",
    );
    // 84 CJK characters: 252 bytes, more than a file name may have once suffixed.
    let name = "腾".repeat(84);
    let plan = dir.write(
        "plan.yaml",
        &format!("output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {{name: {name}, config_file: s.yaml, scenario: cold_start, rounds: 1, concurrency: 100000000}}\n"),
    );
    let validated = kvbench()
        .arg("validate")
        .arg(&plan)
        .output()
        .expect("kvbench");
    assert!(validated.status.success());
    assert!(String::from_utf8_lossy(&validated.stdout).contains("OK, 1 scenario\n"));
    let out = kvbench().arg("run").arg(&plan).output().expect("kvbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let stats = files_with(&dir.path().join("out"), "_stats_");
    assert_eq!(stats.len(), 1, "{stdout}");
    let stats = read_json(&stats[0]);
    assert_eq!(stats["status"], "completed");
    assert_eq!(stats["scenario"]["name"], name.as_str());
    let round = &stats["rounds"][0];
    assert_eq!(round["completed"].as_u64(), Some(4));
    assert!(round["max_concurrent_requests"].as_u64() <= Some(4));
    let health = &round["agent_health"];
    assert!(
        health["peak_rss_bytes"].as_u64().unwrap_or(0) < 1 << 30,
        "no worker per unit of concurrency: {health}"
    );
}

#[test]
fn degraded_and_not_cold_runs_have_their_own_exit_status() {
    // Half the requests fail: every round runs, the scenario is degraded (exit 3).
    let (sim, sim_url) = procs::sim(&["--fault-5xx", "0.5", "--fault-seed", "3"]);
    let dir = TempDir::new("degraded");
    dir.write(
        "s.yaml",
        &format!(
            "endpoint: {}\nnum_requests: 20\noutput_tokens: 2\nworkload:\n  prompt_tokens: 8\n",
            sim_url
        ),
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: flaky, config_file: s.yaml, scenario: cold_start, rounds: 2, concurrency: 4}\n",
    );
    let out = kvbench().arg("run").arg(&plan).output().expect("kvbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("Scenario degraded: flaky"), "{stdout}");
    assert!(
        stdout.contains("| flaky | cold_start | degraded |"),
        "{stdout}"
    );
    assert!(!stdout.contains("ok: "), "ok is not a failure: {stdout}");
    let stats = files_with(&dir.path().join("out"), "_stats_");
    let stats = read_json(&stats[0]);
    assert_eq!(stats["status"], "degraded");
    common::assert_stats_schema(&stats);
    let common_requests = stats["comparison"]["common_requests"].as_u64();
    assert!(
        common_requests.is_some_and(|n| n < 20),
        "rounds compare the requests that succeeded in both: {}",
        stats["comparison"]
    );
    drop(sim);

    // A reset that lies: the second scenario's round 1 hits the first one's cache (exit 4).
    let (_sim, sim_url) = procs::sim(&["--lying-reset"]);
    let dir = TempDir::new("not-cold");
    dir.write(
        "docs.yaml",
        &format!(
            "endpoint: {}\nnum_requests: 4\noutput_tokens: 2\nworkload:\n  documents: 2\n  document_tokens: 600\n",
            sim_url
        ),
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: one, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1}\n  - {name: two, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1}\n",
    );
    let out = kvbench().arg("run").arg(&plan).output().expect("kvbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("WARNING: round 1 was not a cold start in: two"),
        "{stdout}"
    );
}

#[test]
fn workload_inspect_into_a_closed_pipe_does_not_panic() {
    let plan = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/quickstart/multi_scenario_config.yaml");
    for json in [true, false] {
        let mut cmd = kvbench();
        cmd.args(["workload", "inspect"]).arg(&plan);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvbench runs");
        drop(child.stdout.take()); // `| head -0`
        let out = child.wait_with_output().expect("kvbench ends");
        assert!(
            out.status.success(),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn listen_addresses_may_name_a_host() {
    let (_sim, url) = procs::sim_listening("localhost:0", &[]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
}
