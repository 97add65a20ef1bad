//! Isolation between scenarios: two scenarios with the same prompts. With clearing on, the
//! second one's round 1 is a true cold start, verified; with clearing off, it hits the first
//! one's cache (the seed's cache pollution, demonstrated); with an engine whose reset lies,
//! the verdict is `failed`, with the evidence.

mod common;

use common::{assert_stats_schema, load, read_json, run_with, TempDir};
use kvbench_common::isolation::IsolationInfo;
use kvbench_sim::SimConfig;

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

/// The second scenario's round 1: cached tokens of its first request, the round's ratio,
/// and the isolation record.
async fn second_round_one(clear: bool, sim: SimConfig) -> (u32, f64, IsolationInfo) {
    let dir = TempDir::new(if clear { "iso-on" } else { "iso-off" });
    // One question per document: within a round no document is reused, so any cache hit
    // beyond the shared system prompt comes from an earlier scenario.
    dir.write(
        "docs.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 8\nworkload:\n  documents: 4\n  document_tokens: 1000\n",
    );
    let plan = load(&dir.write("plan.yaml", &plan_text(clear)));
    let (summary, _) = run_with(&plan, sim).await;
    assert_eq!(summary.failed(), 0);
    let second = &summary.scenarios[1];
    let res = read_json(second.results_path.as_ref().expect("results"));
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
    assert_stats_schema(&read_json(second.stats_path.as_ref().expect("stats")));
    (first_req, ratio, second.stats.isolation.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_makes_round_one_cold_and_verified() {
    let (first, ratio, iso) = second_round_one(true, SimConfig::default()).await;
    assert_eq!(
        (iso.policy.label(), iso.status.label()),
        ("clear", "cleared")
    );
    assert_eq!(
        first, 0,
        "the first request after clearing finds nothing cached"
    );
    assert!(
        ratio < 0.05,
        "round 1 cache_hit_ratio {ratio} after clearing"
    );
    assert_eq!(iso.verdict.to_string(), "verified", "{:?}", iso.evidence);
    let probe = iso.probe.expect("a cold probe ran after the clear");
    assert_eq!(probe.cached_tokens, Some(0));
    assert!(probe.prompt_tokens > 900, "{}", probe.prompt_tokens);
    assert_eq!(probe.counter_hits, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_reset_is_caught_with_evidence() {
    let lying = SimConfig {
        lying_reset: true,
        ..SimConfig::default()
    };
    let (first, ratio, iso) = second_round_one(true, lying).await;
    assert_eq!(
        iso.status.to_string(),
        "cleared",
        "the engine said it cleared"
    );
    assert!(
        first > 900 && ratio > 0.9,
        "but round 1 hit the old cache: {first} {ratio}"
    );
    assert_eq!(iso.verdict.to_string(), "failed");
    let evidence = iso.evidence.join(" | ");
    assert!(
        evidence.contains("4 of 4 requests had cached tokens beyond what they shared"),
        "{evidence}"
    );
    assert!(
        evidence.contains("probe after the clear: the engine reused"),
        "{evidence}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_clearing_round_one_hits_the_previous_scenario() {
    let (first, ratio, iso) = second_round_one(false, SimConfig::default()).await;
    assert_eq!(
        (iso.status.label(), iso.verdict.label()),
        ("skipped", "failed"),
        "nothing cleared, and round 1 shows it"
    );
    let evidence = iso.evidence.join(" | ");
    assert!(
        evidence.contains("4 of 4 requests had cached tokens beyond what they shared"),
        "{evidence}"
    );
    assert!(
        first > 900,
        "request 0 reused {first} tokens of the first scenario's cache"
    );
    assert!(
        ratio > 0.9,
        "round 1 cache_hit_ratio {ratio} without clearing"
    );
}
