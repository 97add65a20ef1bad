//! Hits against a perfect cache, end to end on kvbench-sim: with a cache large enough, the
//! sim reuses exactly what a perfect cache would have given the requests as they were sent
//! (every workload type, one request at a time and eight racing); with a cache too small,
//! the shortfall is what the sim evicted, and the report says the cache is too small.

mod common;

use common::{load, run, run_with, TempDir};
use kvbench_common::stats::efficiency::Shortfall;
use kvbench_sim::SimConfig;

const KINDS: [&str; 5] = [
    "long_context_high_reuse",
    "multi_turn_conversation",
    "code_generation",
    "batch_processing",
    "cold_start",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_cache_reuses_what_a_perfect_one_would_on_every_workload() {
    let dir = TempDir::new("efficiency");
    let mut plan = "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n".to_owned();
    for kind in KINDS {
        dir.write(
            &format!("{kind}.yaml"),
            "endpoint: sim\napi: chat\nnum_requests: 16\noutput_tokens: 4\nseed: 3\n",
        );
        for c in [1, 8] {
            plan.push_str(&format!("  - {{name: {kind}-c{c}, config_file: {kind}.yaml, scenario: {kind}, rounds: 2, concurrency: {c}}}\n"));
        }
    }
    let plan = load(&dir.write("plan.yaml", &plan));
    let (summary, _) = run(&plan).await;
    assert_eq!(summary.failed(), 0);
    let mut perfect_round1 = std::collections::BTreeMap::new();
    for o in &summary.scenarios {
        for r in &o.stats.rounds {
            let e = r
                .cache_efficiency
                .as_ref()
                .unwrap_or_else(|| panic!("{} round {}: no efficiency", o.name, r.round));
            assert_eq!(e.requests, 16, "{}", o.name);
            assert_eq!(e.block_tokens, 16, "the sim says its block size");
            match e.efficiency {
                Some(x) => assert!(
                    (0.98..=1.02).contains(&x),
                    "{} round {}: {e:?}",
                    o.name,
                    r.round
                ),
                None => {
                    assert!(o.name.starts_with("cold_start"), "{}: {e:?}", o.name);
                    assert_eq!((e.perfect_hit_tokens, e.cached_tokens), (0, 0));
                }
            }
            assert!(e.shortfall.is_empty(), "{}: {e:?}", o.name);
            if r.round == 1 {
                perfect_round1.insert(o.name.clone(), e.perfect_hit_ratio);
            }
        }
    }
    // Eight requests released at once cannot reuse what none of them has computed yet: a
    // perfect cache gives them less than one request at a time.
    let (c1, c8) = (
        perfect_round1["long_context_high_reuse-c1"],
        perfect_round1["long_context_high_reuse-c8"],
    );
    assert!(
        c8 < c1 - 0.1,
        "perfect round 1: {c8} at 8 against {c1} at 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_too_small_falls_short_by_what_it_evicted_and_the_report_says_so() {
    let dir = TempDir::new("efficiency-small");
    // Four documents of 1,500 tokens asked about in turn: 6,000 tokens of prefixes, and
    // a cache of 300 blocks of 16 tokens.
    dir.write(
        "small.yaml",
        "endpoint: sim\napi: chat\nnum_requests: 24\noutput_tokens: 4\nseed: 3\nworkload:\n  documents: 4\n  document_tokens: 1500\n  order: interleaved\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: small, config_file: small.yaml, scenario: long_context_high_reuse, rounds: 2}\n",
    ));
    let sim = SimConfig {
        num_blocks: 300,
        ..SimConfig::default()
    };
    let (summary, counters) = run_with(&plan, sim).await;
    assert_eq!(summary.failed(), 0);
    let st = &summary.scenarios[0].stats;
    let mut short = 0;
    for r in &st.rounds {
        let e = r.cache_efficiency.as_ref().expect("an efficiency");
        let x = e.efficiency.expect("a figure");
        assert!(x < 0.5, "round {}: {e:?}", r.round);
        short += e.perfect_hit_tokens - e.cached_tokens;
        assert!(
            matches!(
                e.shortfall.first(),
                Some(Shortfall::CacheTooSmall {
                    capacity_tokens: 4800,
                    ..
                })
            ),
            "round {}: {:?}",
            r.round,
            e.shortfall
        );
    }
    // What the sim missed for want of room is what the perfect cache had and it did not.
    let evicted = counters.evicted_miss_tokens;
    assert!(
        (short as f64 - evicted as f64).abs() <= 0.02 * evicted as f64,
        "short of a perfect cache by {short} tokens; the sim missed {evicted} to evictions"
    );
    let report = std::fs::read_to_string(summary.report.as_ref().expect("a report")).expect("read");
    assert!(
        report.contains("## Hits against a perfect cache"),
        "{report}"
    );
    assert!(
        report.contains("- The cache is too small for **small**: round "),
        "{report}"
    );
    assert!(report.contains("cache too small: the engine's KV cache holds 4800 tokens"));
}
