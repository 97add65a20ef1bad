//! Telemetry end to end: an agent sampling a scripted GPU (the NVML sampler's fake) and the
//! host while a real kvbench-sim serves a real round over loopback; the samples land in
//! `<slug>_telemetry_<ts>.jsonl` and their summary in each round's `telemetry`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_stats_schema, load, read_json, TempDir};
use kvbench_agent::AgentConfig;
use kvbench_agent::FakeGpu;
use kvbench_agent::GpuChoice;
use kvbench_common::plan::Endpoint;
use kvbench_coordinator::agents::AgentClient;
use kvbench_coordinator::engine::outcome::RunSummary;
use kvbench_sim::SimConfig;

/// Runs `plan` (whose scenarios name `endpoint: URL` of a sim started here) with an agent
/// sampling `gpu`.
async fn run_with_gpu(
    dir: &TempDir,
    gpu: GpuChoice,
    scenario: &str,
) -> (RunSummary, kvbench_common::agent::AgentInfo) {
    let mut t = kvbench_agent::TelemetryConfig {
        gpu,
        ..Default::default()
    };
    t.gpu_interval = Duration::from_millis(50);
    t.host_interval = Duration::from_millis(300);
    t.engine_metrics_interval = Duration::from_millis(200);
    run_with_telemetry(dir, t, scenario).await
}

async fn run_with_telemetry(
    dir: &TempDir,
    telemetry: kvbench_agent::TelemetryConfig,
    scenario: &str,
) -> (RunSummary, kvbench_common::agent::AgentInfo) {
    let sim = kvbench_sim::spawn(SimConfig::default())
        .await
        .expect("sim starts");
    let url = sim.base_url();
    let mut config = AgentConfig::vllm("gpu-node", url.clone());
    config.telemetry = telemetry;
    let agent = kvbench_agent::spawn(config).await.expect("agent starts");
    dir.write(
        "s.yaml",
        &format!("endpoint: {url}\nnum_requests: 12\noutput_tokens: 32\n{scenario}"),
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: telemetry, config_file: s.yaml, scenario: long_context_high_reuse, rounds: 2, concurrency: 3}\n",
    ));
    let a = AgentClient::connect(&agent.url())
        .await
        .expect("agent answers");
    let hello = a.info().clone();
    let mut agents = BTreeMap::new();
    agents.insert(Endpoint::Url(url), a);
    let summary = common::run_with_agents(&plan, &agents).await;
    agent.stop().await;
    sim.stop().await;
    (summary, hello)
}

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("telemetry file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON sample per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gpu_samples_reach_the_stats_and_the_jsonl_file() {
    let dir = TempDir::new("telemetry-fake");
    let gpu = Arc::new(FakeGpu::new(2, 87.5, 250.0));
    let (summary, hello) = run_with_gpu(
        &dir,
        GpuChoice::Source(gpu.clone()),
        "workload:\n  documents: 3\n  document_tokens: 2000\n",
    )
    .await;
    assert_eq!(summary.failed(), 0);
    assert_eq!(
        hello.gpus.len(),
        2,
        "the inventory comes from the same source"
    );
    assert!(gpu.reads() > 0);
    let s = &summary.scenarios[0];
    let stats = read_json(s.stats_path.as_ref().expect("stats"));
    assert_stats_schema(&stats);
    let samples = jsonl(s.telemetry_path.as_ref().expect("telemetry file written"));

    for (i, round) in s.stats.rounds.iter().enumerate() {
        let n = i as u64 + 1;
        let t = round.telemetry.as_ref().expect("telemetry summary");
        let g = t.gpu.as_ref().expect("gpu section");
        // The file holds exactly the samples the summary was made of.
        let nvml: Vec<&serde_json::Value> = samples
            .iter()
            .filter(|x| x["round"] == n && x["source"] == "nvml")
            .collect();
        assert_eq!(g.samples as usize, nvml.len());
        assert!(g.samples >= 2, "a sample at each end of the round");
        assert_eq!(g.gpus, 2);
        assert_eq!(g.util_mean_pct, Some(87.5));
        assert_eq!(g.mem_used_peak_bytes, Some(80e9), "two GPUs at 40 GB each");
        assert_eq!(g.power_mean_w, Some(500.0));
        // Energy is the counters' deltas, as read from the file.
        let counter = |x: &serde_json::Value, gpu: u32| {
            x["values"][format!("gpu{gpu}.energy_mj")]
                .as_f64()
                .expect("energy counter")
        };
        let (first, last) = (nvml[0], nvml[nvml.len() - 1]);
        let from_file =
            (counter(last, 0) - counter(first, 0) + counter(last, 1) - counter(first, 1)) / 1000.0;
        let energy = g.energy_j.expect("energy");
        assert!((energy - from_file).abs() < 1e-6, "{energy} vs {from_file}");
        assert_eq!(g.energy_method.map(|m| m.label()), Some("counter"));
        // The fake's counter runs at its power: about 500 W over the sampled span.
        let span_s =
            (last["t_ms"].as_f64().unwrap_or(0.0) - first["t_ms"].as_f64().unwrap_or(0.0)) / 1000.0;
        assert!(
            (energy - 500.0 * span_s).abs() <= 0.05 * energy + 5.0,
            "{energy} J over {span_s} s"
        );
        let jpt = g.j_per_output_token.expect("J per token");
        assert!((jpt - energy / round.total_output_tokens as f64).abs() < 1e-9);
        assert!(t.notes.is_empty(), "{:?}", t.notes);

        // Host and engine sections come from the same round.
        let h = t.host.as_ref().expect("host section");
        assert!(h.samples >= 2);
        assert!(h.mem_total_bytes.is_some_and(|m| m > 0.0));
        let e = t.engine.as_ref().expect("engine section");
        let hit = e.prefix_cache_hit_ratio.expect("the sim exports counters");
        let records = round.cached_tokens as f64 / round.total_input_tokens as f64;
        assert!(
            (hit - records).abs() < 1e-9,
            "server-side {hit} vs records {records}"
        );
        assert!(e.requests_running_mean.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gpu_read_is_noted_once_and_the_rest_still_sampled() {
    let dir = TempDir::new("telemetry-failing");
    let mut fake = FakeGpu::new(1, 50.0, 100.0);
    fake.failing = vec!["energy_mj", "temp_c"];
    let (summary, _) = run_with_gpu(
        &dir,
        GpuChoice::Source(Arc::new(fake)),
        "workload:\n  documents: 2\n  document_tokens: 1000\n",
    )
    .await;
    assert_eq!(summary.failed(), 0);
    for round in &summary.scenarios[0].stats.rounds {
        let t = round.telemetry.as_ref().expect("telemetry");
        assert_eq!(
            t.notes,
            [
                "gpu-node: gpu0 energy_mj: Not Supported",
                "gpu-node: gpu0 temp_c: Not Supported"
            ],
            "each failing read said once per round"
        );
        let g = t.gpu.as_ref().expect("gpu section");
        assert_eq!(g.util_mean_pct, Some(50.0));
        assert_eq!(g.temp_max_c, None);
        // Without the counter, energy is the power integrated over the samples.
        assert_eq!(g.energy_method.map(|m| m.label()), Some("power_integral"));
        assert!(g.energy_j.is_some_and(|j| j > 0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nvml_there_is_one_note_and_no_gpu_section() {
    if kvbench_agent::NvmlSource::open().is_ok() {
        eprintln!("this host has NVML: the no-NVML path cannot be shown here");
        return;
    }
    let dir = TempDir::new("telemetry-nonvml");
    let (summary, hello) = run_with_gpu(
        &dir,
        GpuChoice::Nvml,
        "workload:\n  documents: 2\n  document_tokens: 500\n",
    )
    .await;
    assert_eq!(summary.failed(), 0, "no NVML never fails a round");
    assert!(hello.gpus.is_empty());
    let note = hello.gpu_note.clone().unwrap_or_default();
    assert!(note.starts_with("NVML unavailable"), "{note}");
    for round in &summary.scenarios[0].stats.rounds {
        let t = round
            .telemetry
            .as_ref()
            .expect("host and engine still sampled");
        assert!(t.gpu.is_none());
        assert!(t.host.is_some() && t.engine.is_some());
        assert!(t.notes.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_off_samples_nothing() {
    let dir = TempDir::new("telemetry-off");
    let (summary, _) = run_with_telemetry(
        &dir,
        kvbench_agent::TelemetryConfig::off(),
        "workload:\n  documents: 2\n  document_tokens: 500\n",
    )
    .await;
    assert_eq!(summary.failed(), 0);
    let s = &summary.scenarios[0];
    assert!(s.telemetry_path.is_none(), "no samples, no file");
    for round in &s.stats.rounds {
        assert!(round.telemetry.is_none() && round.engine_metrics.is_none());
    }
}

/// The agent's `scheduling:`: a priority it may take is applied and recorded in every
/// round's `agent_health`; CPUs it cannot have are refused, and `kvbench agents` (the
/// handshake's warnings) says why, while the agent runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_priority_is_applied_recorded_and_refusals_are_said() {
    let dir = TempDir::new("scheduling");
    let sim = kvbench_sim::spawn(SimConfig::default())
        .await
        .expect("sim starts");
    let url = sim.base_url();
    // This test's process alone: a lower priority needs no privilege.
    let nice = 7;
    let mut config = AgentConfig::vllm("sched-node", url.clone());
    config.scheduling = kvbench_agent::config::Scheduling {
        nice: Some(nice),
        cpus: Some(vec![1023]),
    };
    let agent = kvbench_agent::spawn(config).await.expect("agent starts");
    dir.write(
        "s.yaml",
        &format!(
            "endpoint: {url}\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  prompt_tokens: 200\n"
        ),
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: sched, config_file: s.yaml, scenario: cold_start, rounds: 2, concurrency: 2}\n",
    ));
    // The agent applies its settings when it starts serving: wait for its handshake.
    let a = AgentClient::connect(&agent.url())
        .await
        .expect("agent answers");
    let warnings = a.info().warnings.clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("scheduling.cpus [1023] not applied: ")),
        "{warnings:?}"
    );
    let mut agents = BTreeMap::new();
    agents.insert(Endpoint::Url(url), a);
    let summary = common::run_with_agents(&plan, &agents).await;
    agent.stop().await;
    sim.stop().await;
    let st = &summary.scenarios[0].stats;
    assert!(summary.scenarios[0].succeeded(), "{:?}", st.error);
    for r in &st.rounds {
        let h = r.agent_health.as_ref().expect("agent health");
        assert_eq!(h.nice, nice, "round {}", r.round);
        assert!(
            !h.cpus.is_empty() && !h.cpus.contains(&1023),
            "{:?}",
            h.cpus
        );
        assert!(h
            .scheduling_hint()
            .contains(&format!("nice {nice} on CPUs ")));
    }
    let stats = read_json(&common::out_file(&dir.path().join("out"), "sched_stats_"));
    assert_stats_schema(&stats);
    assert_eq!(stats["rounds"][0]["agent_health"]["nice"], nice);
}
