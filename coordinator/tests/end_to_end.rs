//! End to end on loopback: plan -> embedded agent over real gRPC -> real kvbench-sim over
//! HTTP -> per-scenario result files, asserted the way a user reads them.

mod common;

use common::{assert_stats_schema, load, read_json, run, TempDir};

const PLAN: &str = r#"
output_dir: out
clear_cache_between_scenarios: true
wait_between_scenarios: 0
test_scenarios:
  - name: "long context"
    config_file: long.yaml
    scenario: long_context_high_reuse
    rounds: 2
    concurrency: 4
  - name: "cold start"
    config_file: cold.yaml
    scenario: cold_start
    rounds: 2
    concurrency: 4
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_shape_cache_effect_and_counts() {
    let dir = TempDir::new("e2e");
    dir.write(
        "long.yaml",
        "endpoint: sim\nnum_requests: 12\noutput_tokens: 16\nworkload:\n  documents: 3\n  document_tokens: 3000\n",
    );
    dir.write(
        "cold.yaml",
        "endpoint: sim\napi: completions\nnum_requests: 8\noutput_tokens: 16\nworkload:\n  prompt_tokens: 800\n",
    );
    let plan = load(&dir.write("plan.yaml", PLAN));
    let (summary, sim) = run(&plan).await;

    assert_eq!(summary.failed(), 0, "every scenario succeeds");
    assert_eq!(summary.scenarios.len(), 2);

    // The result files are on disk with the seed's names and the documented keys.
    let long = &summary.scenarios[0];
    let stats_path = long.stats_path.as_ref().expect("stats written");
    let results_path = long.results_path.as_ref().expect("results written");
    let name = |p: &std::path::Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        name(stats_path).starts_with("long_context_stats_"),
        "{}",
        name(stats_path)
    );
    assert!(name(results_path).starts_with("long_context_results_"));
    let stats = read_json(stats_path);
    assert_stats_schema(&stats);
    for k in ["name", "type", "config_file", "rounds", "concurrency"] {
        assert!(stats["scenario"].get(k).is_some(), "scenario.{k}");
    }
    assert_eq!(stats["scenario"]["type"], "long_context_high_reuse");
    let rounds = stats["rounds"].as_array().expect("rounds list");
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        for k in [
            "round",
            "completed",
            "failed",
            "duration",
            "request_throughput",
            "output_throughput",
            "total_token_throughput",
            "total_input_tokens",
            "total_output_tokens",
            "cached_tokens",
            "cache_hit_ratio",
        ] {
            assert!(r.get(k).is_some(), "rounds[].{k} missing");
        }
        for m in ["ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"] {
            for p in ["mean", "median", "p99"] {
                let key = format!("{p}_{m}");
                assert!(r[&key].as_f64().is_some(), "rounds[].{key} is a number");
            }
        }
    }
    assert!(stats["comparison"]["ttft_reduction_pct"].as_f64().is_some());
    assert!(stats["comparison"]["throughput_increase_pct"]
        .as_f64()
        .is_some());

    // The cache effect, as the stats file reports it.
    let r1 = &rounds[0];
    let r2 = &rounds[1];
    let ttft1 = r1["mean_ttft_ms"].as_f64().unwrap_or(0.0);
    let ttft2 = r2["mean_ttft_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(
        ttft2 <= 0.5 * ttft1,
        "round 2 mean TTFT {ttft2} ms vs round 1 {ttft1} ms"
    );
    let hit2 = r2["cache_hit_ratio"].as_f64().unwrap_or(0.0);
    assert!(hit2 >= 0.8, "round 2 cache_hit_ratio {hit2}");
    assert_eq!(r2["completed"], 12);
    assert_eq!(r2["failed"], 0);

    let cold = read_json(summary.scenarios[1].stats_path.as_ref().expect("stats"));
    let cold_hit2 = cold["rounds"][1]["cache_hit_ratio"].as_f64().unwrap_or(1.0);
    assert!(
        cold_hit2 <= 0.05,
        "cold_start round 2 cache_hit_ratio {cold_hit2}"
    );

    // Every request the sim served is a record, and every record is in a results file.
    let mut records = 0;
    for s in &summary.scenarios {
        let res = read_json(s.results_path.as_ref().expect("results"));
        let recs = res["records"].as_array().expect("records list");
        assert!(recs.iter().all(|r| r["outcome"] == "ok"));
        records += recs.len() as u64;
    }
    assert_eq!(records, 2 * 12 + 2 * 8);
    // Besides the records, the harness sent one cold-check probe after each clear, and
    // says so in the stats: nothing else reached the engine.
    let probes: Vec<_> = summary
        .scenarios
        .iter()
        .filter_map(|s| s.stats.isolation.probe.as_ref())
        .collect();
    assert_eq!(probes.len(), 1, "one clear, one probe");
    let n_probes = probes.len() as u64;
    assert_eq!(
        sim.requests_received,
        records + n_probes,
        "sim served == records + probes"
    );
    assert_eq!(sim.request_success, records + n_probes);

    // Token accounting agrees with the engine's own counters.
    let input: u64 = summary
        .scenarios
        .iter()
        .flat_map(|s| s.stats.rounds.iter())
        .map(|r| r.total_input_tokens)
        .sum();
    let probe_input: u64 = probes.iter().map(|p| u64::from(p.prompt_tokens)).sum();
    assert_eq!(input + probe_input, sim.prompt_tokens);
    let cached: u64 = summary
        .scenarios
        .iter()
        .flat_map(|s| s.stats.rounds.iter())
        .map(|r| r.cached_tokens)
        .sum();
    let probe_cached: u64 = probes
        .iter()
        .filter_map(|p| p.cached_tokens)
        .map(u64::from)
        .sum();
    assert_eq!(cached + probe_cached, sim.prefix_cache_hits);

    // The engine's own counters, scraped by the agent around each round, agree with the
    // cached tokens the responses reported.
    for s in &summary.scenarios {
        for r in &s.stats.rounds {
            let m = r.engine_metrics.as_ref().expect("engine metrics scraped");
            assert!(m.samples >= 2);
            assert_eq!(
                m.prefix_cache_hits,
                Some(r.cached_tokens as f64),
                "{} round {}",
                s.name,
                r.round
            );
            assert_eq!(m.prompt_tokens, Some(r.total_input_tokens as f64));
        }
    }
    // The same counters summarised in `telemetry`: the server-side hit ratio equals the
    // records' cached over prompt tokens; the samples are kept in the scenario's JSONL.
    for s in &summary.scenarios {
        for r in &s.stats.rounds {
            let e = r
                .telemetry
                .as_ref()
                .and_then(|t| t.engine.as_ref())
                .expect("engine telemetry");
            let from_records = r.cached_tokens as f64 / r.total_input_tokens as f64;
            let hit = e.prefix_cache_hit_ratio.expect("hit ratio");
            assert!((hit - from_records).abs() < 1e-9, "{hit} vs {from_records}");
        }
        let path = s.telemetry_path.as_ref().expect("telemetry file");
        assert!(path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("_telemetry_") && n.ends_with(".jsonl")));
        let text = std::fs::read_to_string(path).expect("read telemetry");
        let sources: std::collections::BTreeSet<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                v["source"].as_str().unwrap_or("").to_owned()
            })
            .collect();
        assert!(
            sources.contains("engine_metrics") && sources.contains("host"),
            "{sources:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_rounds_resend_identical_histories() {
    let dir = TempDir::new("multiturn");
    dir.write(
        "mt.yaml",
        "endpoint: sim\nnum_requests: 6\noutput_tokens: 8\nworkload:\n  turns: 3\n  system_tokens: 64\n  user_tokens: 20\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - name: mt\n    config_file: mt.yaml\n    scenario: multi_turn_conversation\n    rounds: 2\n    concurrency: 2\n",
    ));
    let (summary, _) = run(&plan).await;
    assert_eq!(summary.failed(), 0);
    let s = &summary.scenarios[0].stats;
    let (r1, r2) = (&s.rounds[0], &s.rounds[1]);
    // Same prompts in both rounds, so the same input token totals.
    assert_eq!(r1.total_input_tokens, r2.total_input_tokens);
    // Later turns carry the earlier replies, so prompts grow turn by turn.
    let res = read_json(summary.scenarios[0].results_path.as_ref().expect("results"));
    let recs = res["records"].as_array().expect("records");
    let prompt = |conv: u64, turn: u64, round: u64| {
        recs.iter()
            .find(|r| r["conversation_id"] == conv && r["turn"] == turn && r["round"] == round)
            .and_then(|r| r["prompt_tokens"].as_u64())
            .expect("record present")
    };
    assert!(prompt(0, 1, 1) > prompt(0, 0, 1) + 20);
    assert_eq!(prompt(0, 2, 1), prompt(0, 2, 2));
    // Round 2 finds every prompt's whole history cached: all but the last, partial KV
    // block (at most 16 tokens) hits.
    assert!(r2.cache_hit_ratio > r1.cache_hit_ratio);
    for r in recs.iter().filter(|r| r["round"] == 2) {
        let p = r["prompt_tokens"].as_u64().expect("prompt tokens");
        let c = r["cached_tokens"].as_u64().expect("cached tokens");
        assert!(
            p - c <= 16,
            "round 2 prompt of {p} tokens had only {c} cached"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scenario_is_recorded_and_the_next_one_runs() {
    let dir = TempDir::new("failing");
    // Port 9 on loopback: nothing listens, every request is a connect_error.
    dir.write(
        "down.yaml",
        "endpoint: http://127.0.0.1:9\nnum_requests: 3\n",
    );
    dir.write(
        "up.yaml",
        "endpoint: sim\nnum_requests: 3\noutput_tokens: 4\nworkload:\n  prompt_tokens: 100\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: down, config_file: down.yaml, scenario: cold_start}\n  - {name: up, config_file: up.yaml, scenario: cold_start}\n",
    ));
    let (summary, _) = run(&plan).await;
    assert_eq!(summary.failed(), 1);
    let down = &summary.scenarios[0];
    assert_eq!(down.stats.status.to_string(), "failed");
    let err = down.stats.error.as_deref().unwrap_or("");
    assert!(
        err.contains("round 1") && err.contains("connect_error"),
        "{err}"
    );
    // What was measured is kept: the failed requests are in the files.
    assert_eq!(down.records, 3);
    let stats = read_json(
        down.stats_path
            .as_ref()
            .expect("stats written for a failed scenario"),
    );
    assert_eq!(stats["rounds"][0]["failed"], 3);
    assert_eq!(stats["rounds"][0]["outcomes"]["connect_error"], 3);
    assert!(
        stats["rounds"][0]["mean_ttft_ms"].is_null(),
        "failures never enter latency"
    );
    let up = &summary.scenarios[1];
    assert_eq!(up.stats.status.to_string(), "completed");
    assert_eq!(up.stats.rounds.len(), 2);
}
