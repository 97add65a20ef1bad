//! Hits per cache tier, end to end on kvbench-sim with a second tier behind its prefix
//! cache (`--offload-blocks`, as vLLM's CPU offload or LMCache): "GPU only" against "GPU +
//! offload" on a device cache too small for the workload, the split per round equal to the
//! sim's own counters; and a clear that leaves the offload tier warm, caught by the
//! cold-start verdict with the tier named. The same on an agent of kind `sglang`, which
//! asks each request for its cached tokens by tier (SGLang's HiCache report, which the sim
//! answers too).

mod common;

use common::{load, run_with, TempDir};
use kvbench_common::isolation::Verdict;
use kvbench_sim::SimConfig;

/// Four documents of 1,500 tokens asked about in turn, against 300 blocks of 16 tokens.
fn plan(dir: &TempDir, scenarios: &[&str]) -> kvbench_common::plan::Plan {
    dir.write(
        "docs.yaml",
        "endpoint: sim\napi: chat\nnum_requests: 24\noutput_tokens: 4\nseed: 3\nworkload:\n  documents: 4\n  document_tokens: 1500\n  order: interleaved\n",
    );
    let mut p = "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n".to_owned();
    for s in scenarios {
        p.push_str(&format!(
            "  - {{name: {s}, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 2}}\n"
        ));
    }
    load(&dir.write("plan.yaml", &p))
}

fn small_device(offload_blocks: usize) -> SimConfig {
    SimConfig {
        num_blocks: 300,
        offload_blocks,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offload_tier_shows_per_round_as_the_sim_counted_it() {
    let dir = TempDir::new("tiers");
    let plan = plan(&dir, &["docs"]);
    let (gpu_only, _) = run_with(&plan, small_device(0)).await;
    let (offload, counters) = run_with(&plan, small_device(4000)).await;
    assert_eq!(gpu_only.failed() + offload.failed(), 0);
    let (g, o) = (&gpu_only.scenarios[0].stats, &offload.scenarios[0].stats);
    for r in &g.rounds {
        assert!(r.cache_tiers.is_none(), "one tier: {:?}", r.cache_tiers);
    }
    let (mut device, mut external) = (0.0, 0.0);
    for r in &o.rounds {
        let t = r.cache_tiers.as_ref().expect("two tiers");
        let (d, x) = (
            t.device_tokens.expect("device"),
            t.external_tokens.expect("connector"),
        );
        assert!(x > 0.0, "round {}: {t:?}", r.round);
        assert_eq!(
            d + x,
            r.cached_tokens as f64,
            "round {}: the tiers add up to the requests' cached tokens",
            r.round
        );
        device += d;
        external += x;
    }
    assert_eq!(device, counters.prefix_cache_hits as f64);
    assert_eq!(external, counters.external_hits as f64);
    // The offload tier gives back what the small device cache evicted: round 2 hits what a
    // perfect cache would, and its prefills are shorter than without it.
    let last = |st: &kvbench_common::results::ScenarioStats| st.rounds[1].clone();
    let (gl, ol) = (last(g), last(o));
    let eff = |r: &kvbench_common::results::RoundStats| {
        r.cache_efficiency
            .as_ref()
            .and_then(|e| e.efficiency)
            .expect("an efficiency")
    };
    assert!(
        eff(&gl) < 0.5 && eff(&ol) > 0.98,
        "{} vs {}",
        eff(&gl),
        eff(&ol)
    );
    let ttft = |r: &kvbench_common::results::RoundStats| r.latency.ttft.mean.expect("ttft");
    assert!(
        ttft(&ol) < ttft(&gl),
        "TTFT {} with the tier against {} without",
        ttft(&ol),
        ttft(&gl)
    );
    let report = std::fs::read_to_string(offload.report.as_ref().expect("a report")).expect("read");
    assert!(report.contains("## Hits by cache tier"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_that_leaves_the_offload_tier_warm_is_caught_and_the_tier_named() {
    let dir = TempDir::new("tiers-warm");
    let plan = plan(&dir, &["first", "again"]);
    let sim = SimConfig {
        offload_keeps_on_reset: true,
        ..small_device(4000)
    };
    let (summary, _) = run_with(&plan, sim).await;
    let again = &summary.scenarios[1].stats;
    assert_eq!(
        again.isolation.verdict,
        Verdict::Failed,
        "{:?}",
        again.isolation
    );
    assert!(
        again
            .isolation
            .evidence
            .iter()
            .any(|e| e.contains("came from the engine's KV connector tier")),
        "{:?}",
        again.isolation.evidence
    );
    // With the tier cleared too (the agent asks for reset_external=true), it is cold.
    let (summary, _) = run_with(&plan, small_device(4000)).await;
    let again = &summary.scenarios[1].stats;
    assert_eq!(
        again.isolation.verdict,
        Verdict::Verified,
        "{:?}",
        again.isolation.evidence
    );
}

/// An agent of kind `sglang` (its own process) in front of the sim: each `kvbench run`
/// of `scenarios` against a sim with a 300-block device cache and an offload tier (SGLang's
/// host tier); the run's stats by scenario, and the sim's counters.
async fn sglang_run(
    tag: &str,
    scenarios: &[&str],
    sim: SimConfig,
) -> (TempDir, Vec<serde_json::Value>, kvbench_sim::EngineCounters) {
    let dir = TempDir::new(tag);
    let sim = kvbench_sim::spawn(sim).await.expect("sim starts");
    let config = dir.write(
        "agent.yaml",
        &format!(
            "name: sg\nlisten: 127.0.0.1:0\nengine: {{kind: sglang, base_url: \"http://{}\"}}\n",
            sim.addr
        ),
    );
    let (_agent, addr) = common::procs::agent_from_config(&config, &dir.path().join("agent.log"));
    dir.write(
        "docs.yaml",
        "endpoint: agent\napi: chat\nnum_requests: 24\noutput_tokens: 4\nseed: 3\nworkload:\n  documents: 4\n  document_tokens: 1500\n  order: interleaved\n",
    );
    let mut p = format!(
        "output_dir: out\nwait_between_scenarios: 0\nagents:\n  - {{name: sg, address: \"http://{addr}\"}}\ntest_scenarios:\n"
    );
    for s in scenarios {
        p.push_str(&format!(
            "  - {{name: {s}, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 2, agent: sg}}\n"
        ));
    }
    dir.write("plan.yaml", &p);
    let status = tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        move || {
            common::kvbench()
                .current_dir(d)
                .args(["run", "plan.yaml"])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("kvbench runs")
        }
    })
    .await
    .expect("join");
    // 4: a round 1 that was not cold (what the warm-tier run is for).
    let expected = if scenarios.len() > 1 { 4 } else { 0 };
    assert_eq!(status.code(), Some(expected), "kvbench run: {status}");
    let stats = scenarios
        .iter()
        .map(|s| {
            common::read_json(&common::out_file(
                &dir.path().join("out"),
                &format!("{s}_stats_"),
            ))
        })
        .collect();
    let counters = sim.engine.counters();
    sim.stop().await;
    (dir, stats, counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sglang_hicache_tiers_per_request_add_up_and_a_warm_host_tier_is_named() {
    let (dir, stats, counters) = sglang_run("tiers-sglang", &["docs"], small_device(4000)).await;
    common::assert_stats_schema(&stats[0]);
    let (mut device, mut host, mut host_last) = (0, 0, 0);
    for r in stats[0]["rounds"].as_array().expect("rounds") {
        let q = &r["cache_tiers"]["requests"];
        let n = |k: &str| q[k].as_u64().unwrap_or_else(|| panic!("{k} in {q}"));
        assert_eq!(n("requests"), 24, "every request reported its tiers: {q}");
        assert!(q["storage_tokens"].is_null(), "no storage tier: {q}");
        assert!(n("host_tokens") > 0, "round {}: {q}", r["round"]);
        assert_eq!(
            n("device_tokens") + n("host_tokens"),
            r["cached_tokens"].as_u64().expect("cached"),
            "round {}: the tiers add up to the requests' cached tokens",
            r["round"]
        );
        device += n("device_tokens");
        host += n("host_tokens");
        host_last = n("host_tokens");
    }
    assert_eq!(
        device, counters.prefix_cache_hits,
        "device = the sim's own hits"
    );
    assert_eq!(
        host, counters.external_hits,
        "host = the sim's offload hits"
    );
    let out = dir.path().join("out");
    let report = std::fs::read_to_string(common::out_file(&out, "multi_scenario_report_"))
        .expect("a report");
    assert!(report.contains("## Hits by cache tier"), "{report}");
    assert!(
        report.contains("HiCache host / storage")
            && report.contains(&format!(" {host_last} / - |")),
        "{report}"
    );

    // A flush that leaves the host tier warm: the verdict fails and names SGLang's tier.
    let warm = SimConfig {
        offload_keeps_on_reset: true,
        ..small_device(4000)
    };
    let (_dir, stats, _) = sglang_run("tiers-sglang-warm", &["first", "again"], warm).await;
    let iso = &stats[1]["isolation"];
    assert_eq!(iso["verdict"], "failed", "{iso}");
    assert!(
        iso["evidence"]
            .as_array()
            .expect("evidence")
            .iter()
            .any(|e| e
                .as_str()
                .is_some_and(|e| e.contains("SGLang's HiCache host or storage tier"))),
        "{iso}"
    );
}
