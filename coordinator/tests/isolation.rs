//! Isolation between scenarios: two scenarios with the same prompts. With clearing on, the
//! second one's round 1 is a true cold start; with clearing off, it hits the first one's
//! cache (the seed's cache pollution, demonstrated).

mod common;

use common::{load, run, TempDir};

fn plan_text(clear: bool) -> String {
    format!(
        r#"
output_dir: out
clear_cache_between_scenarios: {clear}
wait_between_scenarios: 0
test_scenarios:
  - name: first
    config_file: docs.yaml
    scenario: long_context_high_reuse
    rounds: 2
    concurrency: 2
  - name: second
    config_file: docs.yaml
    scenario: long_context_high_reuse
    rounds: 2
    concurrency: 2
"#
    )
}

/// Cached tokens of the second scenario's round 1: (first request, whole round ratio).
async fn second_round_one(clear: bool) -> (u32, f64, String) {
    let dir = TempDir::new(if clear { "iso-on" } else { "iso-off" });
    // One question per document: within a round no document is reused, so any cache hit
    // beyond the shared system prompt comes from an earlier scenario.
    dir.write(
        "docs.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 8\nworkload:\n  documents: 4\n  document_tokens: 1000\n",
    );
    let plan = load(&dir.write("plan.yaml", &plan_text(clear)));
    let (summary, _) = run(&plan).await;
    assert_eq!(summary.failed(), 0);
    let second = &summary.scenarios[1];
    let res = common::read_json(second.results_path.as_ref().expect("results"));
    let first_req = res["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["round"] == 1 && r["request_id"] == 0)
        .and_then(|r| r["cached_tokens"].as_u64())
        .expect("request 0 of round 1 reports cached_tokens") as u32;
    let ratio = second.stats.rounds[0]
        .cache_hit_ratio
        .expect("ratio reported");
    (first_req, ratio, second.stats.isolation.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_makes_round_one_cold() {
    let (first, ratio, status) = second_round_one(true).await;
    assert_eq!(status, "cleared");
    assert_eq!(
        first, 0,
        "the first request after clearing finds nothing cached"
    );
    assert!(
        ratio < 0.05,
        "round 1 cache_hit_ratio {ratio} after clearing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_clearing_round_one_hits_the_previous_scenario() {
    let (first, ratio, status) = second_round_one(false).await;
    assert_eq!(status, "skipped");
    assert!(
        first > 900,
        "request 0 reused {first} tokens of the first scenario's cache"
    );
    assert!(
        ratio > 0.9,
        "round 1 cache_hit_ratio {ratio} without clearing"
    );
}
