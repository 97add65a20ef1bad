//! `kvbench calibrate` as a user runs it: sim and agent as child processes, a table on the
//! console, and the JSON whose keys scripts rely on. Timings are not asserted (this
//! machine is noisy); what must hold whatever the machine is asserted.

mod common;

use common::kvbench;

use std::process::Command;

use common::{read_json, TempDir};

#[test]
fn calibrate_writes_the_documented_json() {
    let dir = TempDir::new("calibrate");
    let json = dir.path().join("cal.json");
    let out = kvbench()
        .args(["calibrate", "--concurrency", "1,16", "--requests", "48"])
        .args([
            "--ttft-ms",
            "10",
            "--itl-ms",
            "2",
            "--output-tokens",
            "8",
            "--telemetry",
            "both",
            "--json",
        ])
        .arg(&json)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .expect("kvbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| concurrency | telemetry | requests |"),
        "{stdout}"
    );
    // The verdict is kept for this host, and the report of a run here says it.
    let kept = read_json(&dir.path().join("cache/kvbench/calibration.json"));
    let verdict = kept["verdict"].as_str().expect("a verdict").to_owned();
    assert!(
        verdict.contains("at up to 16 streams") || verdict.contains("saturated at"),
        "{verdict}"
    );
    assert!(stdout.contains(&format!("Verdict: {verdict}")), "{stdout}");
    dir.write(
        "c.yaml",
        "endpoint: sim\nnum_requests: 2\noutput_tokens: 2\nworkload:\n  prompt_tokens: 16\n",
    );
    let plan = dir.write("plan.yaml", "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: s, config_file: c.yaml, scenario: cold_start, rounds: 1}\n");
    let out = kvbench()
        .arg("run")
        .arg(&plan)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .expect("kvbench runs");
    assert!(out.status.success());
    let report = std::fs::read_to_string(common::out_file(
        &dir.path().join("out"),
        "multi_scenario_report_",
    ))
    .expect("report");
    assert!(
        report.contains("- Harness calibration of this host (") && report.contains(&verdict),
        "{report}"
    );
    let v = read_json(&json);
    let runs = v["runs"].as_array().expect("runs");
    // `--telemetry both`: off then on at each concurrency.
    assert_eq!(runs.len(), 4);
    let modes: Vec<bool> = runs
        .iter()
        .filter_map(|r| r["telemetry"].as_bool())
        .collect();
    assert_eq!(modes, [false, true, false, true]);
    for (run, c) in runs.iter().zip([1u64, 1, 16, 16]) {
        for k in [
            "concurrency",
            "requests",
            "ttft_overhead_ms",
            "itl_ms",
            "max_concurrent_requests",
            "request_throughput",
            "output_throughput",
            "cpu_s_per_1k_requests",
            "peak_rss_bytes",
            "generator_saturated",
        ] {
            assert!(run.get(k).is_some(), "runs[].{k} missing: {run}");
        }
        assert_eq!(run["concurrency"], c);
        assert_eq!(run["requests"], 48);
        assert_eq!(run["failed"], 0);
        // The sim ran exactly the concurrency asked for.
        assert_eq!(run["max_concurrent_requests"], c);
        // The client's TTFT contains the server's: the overhead cannot be negative.
        let p50 = run["ttft_overhead_ms"]["p50"]
            .as_f64()
            .expect("overhead measured");
        assert!(p50 >= 0.0, "{p50}");
        assert!(run["itl_ms"]["p50"].as_f64().is_some());
        assert!(run["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0));
    }
}

/// `--repeat` measures each point again with fresh processes and prints the spread;
/// `--pin` puts the sim on its own core (where there are two) and says so.
#[test]
fn repeats_give_a_spread_and_pin_names_the_cores() {
    let dir = TempDir::new("calibrate-repeat");
    let json = dir.path().join("cal.json");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = kvbench();
    cmd.env("XDG_CACHE_HOME", dir.path().join("cache"));
    cmd.args(["calibrate", "--concurrency", "4", "--requests", "12"])
        .args(["--ttft-ms", "5", "--itl-ms", "1", "--output-tokens", "4"])
        .args(["--repeat", "2", "--json"])
        .arg(&json);
    let pinned = cores >= 2 && Command::new("taskset").arg("-V").output().is_ok();
    if pinned {
        cmd.arg("--pin");
    }
    let out = cmd.output().expect("kvbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| 4 | on | 2 | "),
        "the spread table: {stdout}"
    );
    if pinned {
        assert!(
            stdout.contains(&format!("sim pinned to core {}", cores - 1)),
            "{stdout}"
        );
    }
    let v = read_json(&json);
    let repeats: Vec<u64> = v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["repeat"].as_u64())
        .collect();
    assert_eq!(repeats, [1, 2]);
}

/// `--engine URL` measures against another engine that stamps its first token: the
/// independent compiled mock (`scripts/stamping_mock.c`, built here with gcc) is served
/// and its stamps read; every request succeeds and the overhead is a measured figure.
#[test]
fn calibrate_measures_against_the_independent_stamping_mock() {
    let dir = TempDir::new("calibrate-mock");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mock = dir.path().join("stamping_mock");
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&mock)
        .arg(root.join("scripts/stamping_mock.c"))
        .output()
        .expect("gcc runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server = Command::new(&mock)
        .args([
            "--port",
            &port.to_string(),
            "--ttft-ms",
            "10",
            "--itl-ms",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the mock starts");
    // It prints its line once it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the mock's first line");
    assert!(line.contains("listening"), "{line}");
    let json = dir.path().join("cal.json");
    let out = kvbench()
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .args(["calibrate", "--engine", &format!("http://127.0.0.1:{port}")])
        .args(["--concurrency", "4", "--requests", "16", "--ttft-ms", "10"])
        .args(["--itl-ms", "2", "--output-tokens", "6", "--json"])
        .arg(&json)
        .output()
        .expect("kvbench runs");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = read_json(&json);
    let run = &v["runs"][0];
    assert_eq!(run["failed"], 0, "{run}");
    assert_eq!(run["requests"], 16);
    let p50 = run["ttft_overhead_ms"]["p50"]
        .as_f64()
        .expect("the mock's stamps were read");
    assert!(p50 >= 0.0, "{p50}");
}
