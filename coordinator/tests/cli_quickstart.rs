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
    for f in stats {
        let v = read_json(&out.path().join(f));
        assert_eq!(v["status"], "completed", "{f}");
        assert_eq!(v["rounds"].as_array().map(Vec::len), Some(2), "{f}");
    }
}
