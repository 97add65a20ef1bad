//! The README's run command, as a user runs it: `kvbench run` on the quickstart plan.

mod common;

use std::process::Command;

use common::{read_json, TempDir};

#[test]
fn quickstart_plan_writes_stats_and_results_for_every_scenario() {
    let out = TempDir::new("quickstart");
    let plan = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/quickstart/multi_scenario_config.yaml");
    let started = std::time::Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_kvbench"))
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
