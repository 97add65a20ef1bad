//! Verdicts that cannot be fooled: every round-1 request's cached tokens against what it
//! shared with the prompts sent before it (its excess), in every scenario, against the
//! simulator's models of real engines' quirks: a host prompt cache that survives a reset
//! (llama.cpp's `--cache-ram`), shared system prompts and multi-turn history, a rerun of a
//! finished plan, and a server that closes connections it advertised as keep-alive.

mod common;

use common::{assert_stats_schema, load, read_json, run_with, run_with_agents, TempDir};
use kvbench_common::isolation::Verdict;
use kvbench_coordinator::agents::Embedded;
use kvbench_sim::SimConfig;

/// Three scenarios under `isolation: clear`: documents A, documents B, documents A again.
/// The cache holds fewer blocks than one scenario's documents, so each scenario's prefills
/// push its earlier prompts out (into the host tier, when there is one); a clear empties
/// the cache but not the host tier.
fn a_b_a(dir: &TempDir, policy: &str) -> kvbench_common::plan::Plan {
    for (name, seed) in [("a.yaml", 1), ("b.yaml", 2)] {
        dir.write(
            name,
            &format!("endpoint: sim\nseed: {seed}\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  documents: 4\n  document_tokens: 600\n"),
        );
    }
    load(&dir.write(
        "plan.yaml",
        &format!("output_dir: out\nisolation: {policy}\nwait_between_scenarios: 0\ntest_scenarios:\n  - {{name: A, config_file: a.yaml, scenario: long_context_high_reuse, rounds: 2}}\n  - {{name: B, config_file: b.yaml, scenario: long_context_high_reuse, rounds: 2}}\n  - {{name: A again, config_file: a.yaml, scenario: long_context_high_reuse, rounds: 2}}\n"),
    ))
}

fn small_cache(host_prompt_cache: bool) -> SimConfig {
    SimConfig {
        num_blocks: 100,
        host_prompt_cache,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_prompts_fail_the_verdict_with_each_requests_excess() {
    let dir = TempDir::new("host-cache");
    let plan = a_b_a(&dir, "clear");
    let (summary, _) = run_with(&plan, small_cache(true)).await;
    let [_, b, again] = &summary.scenarios[..] else {
        panic!("three scenarios")
    };
    // B's prompts were never cached: nothing in its round 1 is excess (its verdict fails on
    // the probe, which finds A's prompts restored after the clear).
    assert!(
        b.stats.isolation.excess.is_empty(),
        "{:?}",
        b.stats.isolation
    );
    let iso = &again.stats.isolation;
    assert_eq!(iso.verdict, Verdict::Failed, "{:?}", iso.evidence);
    assert!(!iso.excess.is_empty());
    for e in &iso.excess {
        assert!(e.cached_tokens > e.shareable_tokens + 100, "{e:?}");
        assert!(e.ttft_ms.is_some());
    }
    let evidence = iso.evidence.join(" ");
    assert!(
        evidence.contains("beyond what they shared") && evidence.contains("request "),
        "{evidence}"
    );
    assert_stats_schema(&read_json(again.stats_path.as_ref().expect("stats")));
    assert!(summary.not_cold().contains(&"A again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_host_tier_the_same_plan_is_verified() {
    let dir = TempDir::new("no-host-cache");
    let plan = a_b_a(&dir, "clear");
    let (summary, _) = run_with(&plan, small_cache(false)).await;
    for s in &summary.scenarios[1..] {
        let iso = &s.stats.isolation;
        assert_eq!(
            iso.verdict,
            Verdict::Verified,
            "{}: {:?}",
            s.name,
            iso.evidence
        );
        assert!(iso.excess.is_empty());
    }
}

/// Two conversations at concurrency 2 sharing one system prompt: the second one's first
/// turn legitimately reuses the system prompt the first one just sent, and later turns reuse
/// their own history. None of it is excess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_system_prompts_and_history_are_not_a_warm_cache() {
    let dir = TempDir::new("multi-turn");
    dir.write(
        "chat.yaml",
        "endpoint: sim\nnum_requests: 8\noutput_tokens: 16\nworkload:\n  conversations: 2\n  turns: 4\n  system_tokens: 700\n  user_tokens: 60\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nisolate_before_first: true\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: chat, config_file: chat.yaml, scenario: multi_turn_conversation, rounds: 2, concurrency: 2}\n",
    ));
    for _ in 0..3 {
        let (summary, _) = run_with(&plan, SimConfig::default()).await;
        let s = &summary.scenarios[0];
        let iso = &s.stats.isolation;
        assert_eq!(iso.verdict, Verdict::Verified, "{:?}", iso.evidence);
        let res = read_json(s.results_path.as_ref().expect("results"));
        let reused: u64 = res["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter(|r| r["round"] == 1)
            .filter_map(|r| r["cached_tokens"].as_u64())
            .sum();
        assert!(
            reused > 700,
            "round 1 did reuse the system prompt and history: {reused}"
        );
    }
}

/// The same plan run twice against one engine, without `isolate_before_first`: the second
/// run's first scenario finds its prompts cached, and its verdict says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_a_finished_plan_is_not_a_cold_start() {
    let dir = TempDir::new("rerun");
    dir.write(
        "docs.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  documents: 4\n  document_tokens: 600\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: docs, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1}\n",
    ));
    let embedded = Embedded::start(&plan, SimConfig::default())
        .await
        .expect("embedded");
    let first = run_with_agents(&plan, &embedded.by_endpoint).await;
    let second = run_with_agents(&plan, &embedded.by_endpoint).await;
    embedded.stop().await;
    let iso = &first.scenarios[0].stats.isolation;
    assert_eq!(iso.verdict, Verdict::None, "{:?}", iso.evidence);
    let iso = &second.scenarios[0].stats.isolation;
    assert_eq!(iso.verdict, Verdict::Failed, "{:?}", iso.evidence);
    assert_eq!(iso.excess.len(), 4, "every request found its prompt cached");
}

/// A server that closes each connection after a streamed response, though it answered
/// `Keep-Alive`: requests that meet a closed pooled connection go again on a fresh one, and
/// none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_after_each_stream_lose_no_request() {
    let dir = TempDir::new("close-after-stream");
    dir.write(
        "c.yaml",
        "endpoint: sim\nnum_requests: 30\noutput_tokens: 4\nworkload:\n  prompt_tokens: 64\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\ntest_scenarios:\n  - {name: c, config_file: c.yaml, scenario: cold_start, rounds: 2, concurrency: 2}\n",
    ));
    let sim = SimConfig {
        close_after_stream: true,
        ..SimConfig::default()
    };
    let (summary, counters) = run_with(&plan, sim).await;
    let s = &summary.scenarios[0];
    let res = read_json(s.results_path.as_ref().expect("results"));
    let records = res["records"].as_array().expect("records");
    let failed: Vec<&serde_json::Value> = records.iter().filter(|r| r["outcome"] != "ok").collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(records.len(), 60);
    let retried = records.iter().filter(|r| r["retried"] == true).count();
    println!("{retried} of 60 requests met a closed connection and went again");
    assert!(retried > 0, "the sim closed connections the client reused");
    assert_eq!(
        counters.requests_received, 60,
        "each request reached the engine once"
    );
}

/// `tokenizer: engine` through the simulator's `/tokenize`: the agent measures the engine's
/// token costs before round 1, and the stats say which tokens lengths are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_tokenizer_measures_through_tokenize() {
    let dir = TempDir::new("engine-tokenizer");
    dir.write(
        "c.yaml",
        "endpoint: sim\ntokenizer: engine\nnum_requests: 3\noutput_tokens: 4\nworkload:\n  prompt_tokens: 300\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\ntest_scenarios:\n  - {name: c, config_file: c.yaml, scenario: cold_start, rounds: 1}\n",
    ));
    let (summary, _) = run_with(&plan, SimConfig::default()).await;
    let s = &summary.scenarios[0];
    assert!(s.succeeded(), "{:?}", s.stats.error);
    assert_eq!(s.stats.scenario.tokenizer, "engine");
    let res = read_json(s.results_path.as_ref().expect("results"));
    for r in res["records"].as_array().expect("records") {
        let client = r["prompt_tokens_client"].as_f64().expect("client count");
        assert!((client - 300.0).abs() <= 3.0, "{r}");
    }
    assert_stats_schema(&read_json(s.stats_path.as_ref().expect("stats")));
}

/// The same documents twice with nothing cleared between, requests in flight together:
/// every request of the second scenario shares its document with another one sent at the
/// same moment, so no request on its own found more than it could share, yet none of them
/// computed its document. Caught at every concurrency, with the group named; with a clear
/// between them the same plan is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_together_cannot_excuse_each_other() {
    let dir = TempDir::new("race");
    dir.write(
        "long.yaml",
        "endpoint: sim\napi: chat\nseed: 9\nnum_requests: 12\noutput_tokens: 4\nworkload:\n  documents: 3\n  document_tokens: 1200\n",
    );
    for concurrency in [2, 4, 8] {
        for (policy, expected) in [("none", Verdict::Failed), ("clear", Verdict::Verified)] {
            let plan = load(&dir.write(
                "plan.yaml",
                &format!("output_dir: out\nisolation: {policy}\nwait_between_scenarios: 0\ntest_scenarios:\n  - {{name: first, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1, concurrency: {concurrency}}}\n  - {{name: second, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1, concurrency: {concurrency}}}\n"),
            ));
            let (summary, _) = run_with(&plan, SimConfig::default()).await;
            let iso = &summary.scenarios[1].stats.isolation;
            assert_eq!(
                iso.verdict, expected,
                "concurrency {concurrency}, isolation {policy}: {:?}",
                iso.evidence
            );
            if expected == Verdict::Failed {
                assert!(iso.excess.is_empty(), "no request alone shows it: {iso:?}");
                assert!(
                    iso.evidence
                        .iter()
                        .any(|e| e.contains("none of them computed their common start")),
                    "{:?}",
                    iso.evidence
                );
                assert!(iso.round1_bound.as_ref().is_some_and(|b| b.exceeded));
            }
        }
    }
}
