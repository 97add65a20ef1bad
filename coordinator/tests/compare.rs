//! `kvbench compare RUN_A RUN_B` on real runs against the embedded sim: a run against
//! itself shows no significant change; against a run on a sim with a slower prefill the
//! TTFT change is significant, `--fail-on` turns it into exit status 1, and the markdown
//! and JSON say the same; a scenario whose workload differs is not compared.

mod common;

use common::kvbench;

use std::path::Path;

use common::{load, read_json, run_with, TempDir};
use kvbench_sim::SimConfig;

fn compare(a: &Path, b: &Path, extra: &[&str]) -> std::process::Output {
    kvbench()
        .arg("compare")
        .arg(a)
        .arg(b)
        .args(extra)
        .output()
        .expect("kvbench runs")
}

async fn run_into(dir: &TempDir, plan: &str, out: &str, sim: SimConfig) -> std::path::PathBuf {
    let mut plan = load(&dir.path().join(plan));
    plan.output_dir = dir.path().join(out);
    let (summary, _) = run_with(&plan, sim).await;
    assert!(summary.scenarios.iter().all(|o| o.succeeded()));
    plan.output_dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_finds_a_slower_engine_and_nothing_in_a_run_against_itself() {
    let dir = TempDir::new("compare");
    dir.write(
        "cold.yaml",
        "endpoint: sim\nnum_requests: 40\noutput_tokens: 4\nworkload:\n  prompt_tokens: 200\n",
    );
    dir.write(
        "other.yaml",
        "endpoint: sim\nnum_requests: 30\noutput_tokens: 4\nworkload:\n  prompt_tokens: 200\n",
    );
    let scenarios = |cfg: &str| {
        format!("output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {{name: cold, config_file: cold.yaml, scenario: cold_start, rounds: 2, concurrency: 4}}\n  - {{name: other, config_file: {cfg}, scenario: cold_start, rounds: 1, concurrency: 4}}\n  - {{name: rep, config_file: rep.yaml, scenario: long_context_high_reuse, rounds: 2, concurrency: 2, repeats: 3}}\n")
    };
    dir.write(
        "rep.yaml",
        "endpoint: sim\nnum_requests: 6\noutput_tokens: 4\nworkload:\n  documents: 2\n  document_tokens: 400\n",
    );
    dir.write("plan.yaml", &scenarios("cold.yaml"));
    dir.write("plan2.yaml", &scenarios("other.yaml"));
    let a = run_into(&dir, "plan.yaml", "a", SimConfig::default()).await;
    let slow = SimConfig {
        prefill_base_ms: SimConfig::default().prefill_base_ms + 40.0,
        ..SimConfig::default()
    };
    let b = run_into(&dir, "plan2.yaml", "b", slow).await;

    // Repeats: each run a scenario of its own (`rep#1`..`rep#3`, its stats saying which),
    // and the report's mean and 95 % interval over them, drawn with whiskers.
    for k in 1..=3 {
        let st = read_json(&common::out_file(&a, &format!("rep_{k}_stats_")));
        assert_eq!(
            st["scenario"]["repeat"],
            serde_json::json!({"index": k, "of": 3, "scenario": "rep"})
        );
        common::assert_stats_schema(&st);
    }
    let report =
        std::fs::read_to_string(common::out_file(&a, "multi_scenario_report_")).expect("report");
    let row = report
        .lines()
        .find(|l| l.starts_with("| rep | 3 of 3 |"))
        .unwrap_or_else(|| panic!("no repeats row:\n{report}"));
    assert_eq!(row.matches("(n=3)").count(), 4, "{row}");
    assert!(common::out_file(&a, "multi_scenario_charts_")
        .join("repeats_comparison.png")
        .is_file());

    // A run against itself: nothing significant, exit 0 even with --fail-on.
    let out = compare(&a, &a, &["--fail-on", "ttft_mean,ttft_p99"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("None: same kvbench, files, engines"),
        "{text}"
    );
    assert!(
        !text.contains("REGRESSED") && !text.contains("| improved |"),
        "{text}"
    );
    assert!(text.contains("| cold | round 1 | ttft_mean ms |"), "{text}");
    // The repeats are the samples of a repeated scenario, throughput included.
    assert!(
        text.lines().any(
            |l| l.starts_with("| rep | last round (2) | output_throughput tok/s |")
                && l.contains("| 3 vs 3 repeats |")
        ),
        "{text}"
    );
    assert!(!text.contains("| rep#1 |"), "{text}");

    // Against the slower prefill: TTFT regressed, significantly; --fail-on says so.
    let json = dir.path().join("cmp.json");
    let md = dir.path().join("cmp.md");
    let out = compare(
        &a,
        &b,
        &[
            "--fail-on",
            "ttft_mean",
            "--json",
            json.to_str().expect("utf-8"),
            "--markdown",
            md.to_str().expect("utf-8"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ttft_mean"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&md).expect("markdown").trim(),
        text.trim()
    );
    let v = read_json(&json);
    let row = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["scenario"] == "cold" && r["round"] == "round 1" && r["metric"] == "ttft_mean")
        .expect("a ttft_mean row");
    assert_eq!(row["verdict"], "regressed", "{row}");
    assert!(
        row["change"]["ci_low_pct"].as_f64().expect("ci") > 3.0,
        "{row}"
    );
    assert!(
        row["change"]["p_value"].as_f64().expect("p") < 0.05,
        "{row}"
    );
    // The scenario whose config differs is not compared, and says why; so are the files.
    let not: Vec<&str> = v["not_compared"]
        .as_array()
        .expect("not_compared")
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(
        not.iter()
            .any(|n| n.starts_with("other: the workloads differ")),
        "{not:?}"
    );
    assert!(v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .all(|r| r["scenario"] == "cold" || r["scenario"] == "rep"));
    let diffs = v["provenance_differences"].to_string();
    assert!(
        diffs.contains("plan2.yaml") && diffs.contains("other.yaml"),
        "{diffs}"
    );

    // Bad input: an unknown metric is refused with the valid ones.
    let out = compare(&a, &b, &["--fail-on", "ttft"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ttft_p99"));
}
