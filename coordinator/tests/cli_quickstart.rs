//! The README's run command, as a user runs it: `kvbench run` on the quickstart plan.

mod common;

use common::kvbench;

use common::{read_json, TempDir};

#[test]
fn quickstart_plan_writes_stats_and_results_for_every_scenario() {
    let out = TempDir::new("quickstart");
    let plan = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/quickstart/multi_scenario_config.yaml");
    let started = std::time::Instant::now();
    let run = kvbench()
        .arg("run")
        .arg(&plan)
        .arg("--output-dir")
        .arg(out.path())
        .output()
        .expect("kvbench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("quickstart took {:.1} s", started.elapsed().as_secs_f64());

    // The console tells the seed's story.
    for needle in [
        "Progress: 1/3",
        "Progress: 3/3",
        "Scenario done: sim-long-context-high-reuse",
        "Cleanup before the next scenario",
        "succeeded: 3 | failed: 0",
    ] {
        assert!(
            stdout.contains(needle),
            "console lacks {needle:?}:\n{stdout}"
        );
    }
    let files: Vec<String> = std::fs::read_dir(out.path())
        .expect("output folder")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let stats: Vec<&String> = files.iter().filter(|f| f.contains("_stats_")).collect();
    let results: Vec<&String> = files.iter().filter(|f| f.contains("_results_")).collect();
    assert_eq!(stats.len(), 3, "{files:?}");
    assert_eq!(results.len(), 3, "{files:?}");
    assert!(
        !files.iter().any(|f| f.ends_with(".tmp")),
        "no half-written files"
    );
    let mut keys = std::collections::BTreeSet::new();
    for f in stats {
        let v = read_json(&out.path().join(f));
        assert_eq!(v["status"], "completed", "{f}");
        assert_eq!(v["rounds"].as_array().map(Vec::len), Some(2), "{f}");
        key_paths(&v, "", &mut keys);
    }
    let pinned: std::collections::BTreeSet<String> = include_str!("data/quickstart_stats_keys.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    let added: Vec<&String> = keys.difference(&pinned).collect();
    let lost: Vec<&String> = pinned.difference(&keys).collect();
    assert!(
        added.is_empty() && lost.is_empty(),
        "the stats files' key set changed: added {added:?}, lost {lost:?}"
    );
}

/// Every key path of a JSON value (`rounds[].histograms.ttft_ms`).
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                key_paths(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                key_paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// `kvbench run --json`: every event one JSON object on stdout, the console on stderr, and
/// the records streamed are the records in the results files.
#[test]
fn json_event_stream_carries_the_run() {
    let out = TempDir::new("json-events");
    let cfg = out.write(
        "c.yaml",
        "endpoint: sim\nnum_requests: 6\noutput_tokens: 4\nworkload:\n  prompt_tokens: 64\n",
    );
    let plan = out.write(
        "plan.yaml",
        &format!(
            "output_dir: {}\nwait_between_scenarios: 0\ntest_scenarios:\n  - name: a\n    config_file: {}\n    scenario: cold_start\n  - name: b\n    config_file: {}\n    scenario: cold_start\n",
            out.path().join("results").display(),
            cfg.display(),
            cfg.display()
        ),
    );
    let run = kvbench()
        .args(["run", "--json"])
        .arg(&plan)
        .output()
        .expect("kvbench runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("Scenario done: a"),
        "console on stderr: {stderr}"
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.len(), events.len(), "every line has an `event`");
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "scenario_finished").count(),
        2
    );
    assert_eq!(kinds.iter().filter(|k| **k == "round_stats").count(), 4);
    let records: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "round" && e["data"]["type"] == "record")
        .collect();
    assert_eq!(records.len(), 2 * 2 * 6, "every request of every round");
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "scenario_finished")
        .collect();
    for f in finished {
        assert_eq!(f["status"], "completed");
        let results = read_json(std::path::Path::new(
            f["results_file"].as_str().expect("results file"),
        ));
        let n = results["records"].as_array().map_or(0, Vec::len);
        assert_eq!(f["records"], n as u64, "{f}");
    }
    assert_eq!(events.last().expect("last")["failed"], 0);
}

/// The docs' engine-metrics table names every metric the agent keeps, and nothing else
/// is claimed there: one table in the code, the same in the docs.
#[test]
fn the_docs_list_every_engine_metric_the_code_reads() {
    let readme = include_str!("../../docs/agents-and-engines.md");
    let start = readme.find("### Engine metrics").expect("the section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |i| i + 4)];
    for name in kvbench_common::telemetry::engine_metric::names() {
        assert!(
            section.contains(&format!("`{name}`")),
            "docs/agents-and-engines.md lacks {name}"
        );
    }
    let named = section
        .split('`')
        .filter(|w| {
            // `family:metric`, or the Mooncake master's names (no prefix of their own).
            let master =
                w.starts_with("master_") && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            master
                || w.split_once(':').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && w.chars()
                            .all(|c| c.is_ascii_lowercase() || c == '_' || c == ':')
                        && !b.contains(':')
                })
        })
        .count();
    assert_eq!(
        named,
        kvbench_common::telemetry::engine_metric::names().len(),
        "docs/agents-and-engines.md names metrics the code does not read"
    );
}

/// `--only` reruns chosen scenarios alone: only their files are written; an unknown name is
/// refused with the plan's names, and nothing runs.
#[test]
fn only_reruns_the_named_scenarios() {
    let out = TempDir::new("only");
    let plan = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/quickstart/multi_scenario_config.yaml");
    let run = |extra: &[&str]| {
        kvbench()
            .arg("run")
            .arg(&plan)
            .arg("--output-dir")
            .arg(out.path())
            .args(extra)
            .output()
            .expect("kvbench runs")
    };
    let bad = run(&["--only", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("no scenario named \"nope\"") && err.contains("sim-long-context-high-reuse"),
        "{err}"
    );
    let ok = run(&["--only", "sim-multi-turn-conversation"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let files: Vec<String> = std::fs::read_dir(out.path())
        .expect("output folder")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|f| f.contains("_stats_"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("sim-multi-turn-conversation_stats_"),
        "{files:?}"
    );
}
