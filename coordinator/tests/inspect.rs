//! `workload inspect`'s perfect-cache hit ratios against what a run on kvbench-sim
//! measures: one request at a time, the two agree (within 2 percentage points).

mod common;

use common::{load, run, TempDir};
use kvbench_coordinator::engine::inspect::inspect_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theoretical_ratios_match_measured_ones() {
    let dir = TempDir::new("inspect");
    dir.write(
        "mt.yaml",
        "endpoint: sim\nnum_requests: 9\noutput_tokens: {distribution: uniform, min: 4, max: 12}\nworkload:\n  turns: 3\n  system_tokens: 100\n  user_tokens: 30\n",
    );
    dir.write(
        "lc.yaml",
        "endpoint: sim\nnum_requests: 6\noutput_tokens: 4\nworkload:\n  documents: 2\n  document_tokens: 500\n  order: interleaved\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: mt, config_file: mt.yaml, scenario: multi_turn_conversation, rounds: 2}\n  - {name: lc, config_file: lc.yaml, scenario: long_context_high_reuse, rounds: 2}\n",
    ));
    let (summary, _) = run(&plan).await;
    assert_eq!(summary.failed(), 0);
    for (s, o) in plan.scenarios.iter().zip(&summary.scenarios) {
        let i = inspect_config(&s.name, &s.config, 16, None).expect("inspects");
        assert_eq!(i.requests, o.stats.rounds[0].completed);
        let m1 = o.stats.rounds[0].cache_hit_ratio.expect("measured");
        let m2 = o.stats.rounds[1].cache_hit_ratio.expect("measured");
        assert!(
            (i.round1_hit_ratio - m1).abs() <= 0.02,
            "{}: round 1 {} vs measured {m1}",
            s.name,
            i.round1_hit_ratio
        );
        assert!(
            (i.round2_hit_ratio - m2).abs() <= 0.02,
            "{}: round 2 {} vs measured {m2}",
            s.name,
            i.round2_hit_ratio
        );
        assert!(i.round2_hit_ratio > i.round1_hit_ratio);
    }
}
