//! Runs a plan: scenarios in order, isolation before each but the first, rounds through
//! the scenario's agent, result files per scenario, and the story on the console.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kvbench_common::agent::{ColdProbe, RoundEvent, RoundRequest, RoundRequests};
use kvbench_common::dataset::{self, Dataset, DatasetSpec};
use kvbench_common::plan::{Endpoint, IsolationPolicy, Plan, Scenario};
use kvbench_common::record::{Outcome, RequestRecord};
use kvbench_common::stats::{
    AgentHealth, Comparison, IsolationInfo, RoundStats, ScenarioInfo, ScenarioStats,
};
use kvbench_common::telemetry::{EngineMetricsSummary, TelemetrySample, TelemetrySummary};
use kvbench_common::util::{rfc3339_utc, timestamp_utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agent_client::{AgentClient, RoundEnd};

const RULE: &str = "==============================================================";
const THIN: &str = "--------------------------------------------------------------";

/// How one scenario ended.
#[derive(Debug, Clone)]
pub struct ScenarioOutcome {
    pub name: String,
    pub stats: ScenarioStats,
    pub stats_path: Option<PathBuf>,
    pub results_path: Option<PathBuf>,
    /// `<slug>_telemetry_<ts>.jsonl`: one telemetry sample per line (none: no samples).
    pub telemetry_path: Option<PathBuf>,
    pub records: usize,
}

impl ScenarioOutcome {
    pub fn succeeded(&self) -> bool {
        self.stats.status == "completed"
    }
}

/// How the whole plan ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub scenarios: Vec<ScenarioOutcome>,
    pub cancelled: bool,
    pub total: Duration,
}

impl RunSummary {
    pub fn failed(&self) -> usize {
        self.scenarios.iter().filter(|s| !s.succeeded()).count()
    }
}

/// One round's outcome as the coordinator collected it.
struct RoundRun {
    records: Vec<RequestRecord>,
    health: Option<AgentHealth>,
    telemetry: Vec<TelemetrySample>,
    duration_s: Option<f64>,
    error: Option<String>,
}

/// Runs every scenario of `plan` with the agent serving its endpoint.
pub async fn run_plan(
    plan: &Plan,
    agents: &BTreeMap<Endpoint, AgentClient>,
    cancel: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let run_ts = timestamp_utc(SystemTime::now());
    std::fs::create_dir_all(&plan.output_dir)
        .with_context(|| format!("cannot create output folder {}", plan.output_dir.display()))?;
    banner(plan, agents);

    let n = plan.scenarios.len();
    let mut datasets = DatasetCache::default();
    let mut outcomes = Vec::new();
    let mut cancelled = false;
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let agent = agents
            .get(&scenario.config.endpoint)
            .with_context(|| format!("no agent serves endpoint {}", scenario.config.endpoint))?;
        let isolation = if i == 0 && !plan.isolate_before_first {
            IsolationInfo {
                policy: "none".into(),
                status: "none".into(),
                detail: "first scenario of the plan".into(),
                wait_s: 0.0,
                verdict: "none".into(),
                evidence: Vec::new(),
                probe: None,
            }
        } else {
            let iso = isolate(plan, agent, &cancel).await;
            if cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            iso
        };
        println!();
        println!("Progress: {}/{}", i + 1, n);
        scenario_header(scenario, agent);
        let scenario_id = format!("{}-{}-{}", scenario.slug, run_ts, i);
        let dataset = match &scenario.config.dataset {
            None => Ok(None),
            Some(spec) => datasets
                .get(spec, scenario.config.workload.num_requests as usize)
                .map(Some),
        };
        let tokenizer = match &scenario.config.tokenizer {
            None => Ok(None),
            Some(p) => std::fs::read(p)
                .map(Some)
                .map_err(|e| format!("cannot read tokenizer {}: {e}", p.display())),
        };
        let outcome = match (dataset, tokenizer) {
            (Ok(dataset), Ok(tokenizer)) => {
                run_scenario(
                    plan,
                    scenario,
                    agent,
                    &scenario_id,
                    isolation,
                    dataset.as_deref(),
                    tokenizer.as_deref(),
                    &cancel,
                )
                .await
            }
            (Err(e), _) | (_, Err(e)) => failed_before_start(plan, scenario, agent, isolation, e),
        };
        if outcome.stats.status == "cancelled" {
            cancelled = true;
        }
        outcomes.push(outcome);
        if cancelled {
            break;
        }
    }
    let summary = RunSummary {
        scenarios: outcomes,
        cancelled,
        total: started.elapsed(),
    };
    final_summary(plan, &summary);
    Ok(summary)
}

fn banner(plan: &Plan, agents: &BTreeMap<Endpoint, AgentClient>) {
    println!("{RULE}");
    println!(" kvbench {}: multi-scenario run", env!("CARGO_PKG_VERSION"));
    println!("{RULE}");
    println!("Plan:            {}", plan.path.display());
    println!("Scenarios:       {}", plan.scenarios.len());
    println!("Output folder:   {}", plan.output_dir.display());
    if plan.clear_cache_between_scenarios {
        println!(
            "Cache clearing:  on, then wait {} s between scenarios",
            plan.wait_between_scenarios_s
        );
    } else {
        println!(
            "Cache clearing:  OFF: round 1 of later scenarios may hit earlier scenarios' cache"
        );
    }
    for a in agents.values() {
        let h = a.info();
        println!(
            "Agent:           {} (kvbench-agent {} on {}, engine {}; {})",
            h.agent_name,
            h.agent_version,
            h.hostname,
            h.engine_display,
            h.gpu_summary()
        );
    }
    println!("{RULE}");
}

fn scenario_header(s: &Scenario, agent: &AgentClient) {
    let c = &s.config;
    println!("{THIN}");
    println!("Scenario:     {}", s.name);
    println!("Config file:  {}", s.config_file);
    println!(
        "Workload:     {} ({} requests, {} output tokens, seed {})",
        s.kind, c.workload.num_requests, c.workload.output_tokens, c.workload.seed
    );
    println!("Rounds:       {}", s.rounds);
    println!("Load:         {}", s.load_description());
    println!(
        "Endpoint:     {} via agent {} (model {}, {} API)",
        c.endpoint,
        agent.name(),
        c.model,
        c.api.label()
    );
    println!("{THIN}");
}

/// The agent's ClearCache, printed; `(status, detail, probe)`.
async fn clear(agent: &AgentClient) -> (String, String, Option<ColdProbe>) {
    println!("  Clearing the KV cache through agent {} ...", agent.name());
    match agent.clear("isolation between scenarios").await {
        Ok(r) => {
            if r.success {
                println!(
                    "  Cache cleared ({}); clear and cold check took {:.0} ms",
                    r.detail, r.took_ms
                );
                if let Some(p) = &r.probe {
                    println!(
                        "  Cold check: the previous round's first prompt sent again: {} of {} tokens cached",
                        p.cached_tokens.map_or("n/a".to_owned(), |c| c.to_string()),
                        p.prompt_tokens
                    );
                }
                ("cleared".to_owned(), r.detail, r.probe)
            } else {
                println!("  WARNING: clear failed: {}", r.detail);
                ("failed".to_owned(), r.detail, r.probe)
            }
        }
        Err(e) => {
            let d = e.to_string();
            println!("  WARNING: clear failed: {d}");
            ("failed".to_owned(), d, None)
        }
    }
}

/// The agent's RestartEngine, printed; `(status, detail)`.
async fn restart(agent: &AgentClient) -> (String, String) {
    println!("  Restarting the engine through agent {} ...", agent.name());
    match agent.restart("isolation between scenarios").await {
        Ok(r) => match r.error {
            None => {
                println!(
                    "  Engine restarted in {:.1} s ({})",
                    r.took_ms / 1000.0,
                    r.detail
                );
                ("restarted".to_owned(), r.detail)
            }
            Some(class) => {
                println!("  WARNING: restart failed ({class}): {}", r.detail);
                ("failed".to_owned(), format!("{class}: {}", r.detail))
            }
        },
        Err(e) => {
            let d = e.to_string();
            println!("  WARNING: restart failed: {d}");
            ("failed".to_owned(), d)
        }
    }
}

/// The seed's call: `POST {metadata_server_url}/clear`, made as configured, and what its
/// answer means (Mooncake's metadata server holds no KV data and has no `/clear`).
async fn mooncake_clear(url: &str) -> String {
    let target = format!("{}/clear", url.trim_end_matches('/'));
    let step = kvbench_agent::clear::ClearStep {
        name: "Mooncake metadata server".into(),
        method: "POST".into(),
        url: target.clone(),
        body: None,
        success_field: None,
        retry_statuses: Vec::new(),
        missing_hint: Some(
            "Mooncake's metadata server holds transfer-engine metadata, not KV data, and has no /clear; the store is cleared by the Mooncake master's POST /api/v1/remove_all (admin port 9003): configure it in the agent's clear_cache (preset mooncake_master)".into(),
        ),
    };
    match kvbench_agent::clear::run_step(&kvbench_agent::client::http_client(), &step).await {
        Ok(d) => format!("Mooncake metadata server: {d}"),
        Err(e) => format!("Mooncake metadata server: {e}"),
    }
}

/// Runs the plan's isolation policy through the agent, then waits. Never fails the plan:
/// the result is recorded in the next scenario's stats and judged after its round 1.
async fn isolate(plan: &Plan, agent: &AgentClient, cancel: &CancellationToken) -> IsolationInfo {
    println!();
    println!(
        "Cleanup before the next scenario (isolation: {})",
        plan.isolation.label()
    );
    let wait = plan.wait_between_scenarios_s;
    let mut probe = None;
    let (status, detail) = match plan.isolation {
        IsolationPolicy::Clear => {
            let (st, d, p) = clear(agent).await;
            probe = p;
            (st, d)
        }
        IsolationPolicy::Restart => restart(agent).await,
        IsolationPolicy::ClearOrRestart => {
            let (st, d, p) = clear(agent).await;
            if st == "cleared" && !p.as_ref().is_some_and(ColdProbe::is_stale) {
                probe = p;
                (st, d)
            } else {
                println!("  The clear did not give a cold cache: restarting instead");
                let (st2, d2) = restart(agent).await;
                (st2, format!("clear: {d}; then restart: {d2}"))
            }
        }
        IsolationPolicy::Wait | IsolationPolicy::None => {
            println!("  Not clearing (isolation: {})", plan.isolation.label());
            (
                "skipped".to_owned(),
                format!("isolation is {}", plan.isolation.label()),
            )
        }
    };
    let mut detail = detail;
    if let Some(url) = &plan.mooncake_metadata_server_url {
        if !matches!(
            plan.isolation,
            IsolationPolicy::Wait | IsolationPolicy::None
        ) {
            let note = mooncake_clear(url).await;
            println!("  {note}");
            detail = format!("{detail}; {note}");
        }
    }
    let wait = if plan.isolation == IsolationPolicy::None {
        0.0
    } else {
        wait
    };
    if wait > 0.0 {
        println!("  Waiting {wait} s to settle");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
            _ = cancel.cancelled() => {}
        }
    }
    IsolationInfo {
        policy: plan.isolation.label().into(),
        status,
        detail,
        wait_s: wait,
        verdict: "none".into(),
        evidence: Vec::new(),
        probe,
    }
}

fn round_label(s: &Scenario, round: u32) -> &'static str {
    match (
        round,
        s.kind == kvbench_common::workload::WorkloadKind::ColdStart,
    ) {
        (1, _) => "cold start",
        (_, true) => "fresh prompts",
        _ => "cache hit",
    }
}

/// Datasets read once per run, whatever the number of scenarios and rounds using them.
#[derive(Default)]
struct DatasetCache(BTreeMap<(PathBuf, String, usize), Arc<Dataset>>);

impl DatasetCache {
    fn get(&mut self, spec: &DatasetSpec, limit: usize) -> Result<Arc<Dataset>, String> {
        let key = (spec.path.clone(), format!("{:?}", spec.format), limit);
        if let Some(d) = self.0.get(&key) {
            return Ok(d.clone());
        }
        println!("Reading dataset {} ...", spec.path.display());
        let d = Arc::new(dataset::load(spec, limit)?);
        println!("  {} requests", d.requests());
        self.0.insert(key, d.clone());
        Ok(d)
    }
}

/// A scenario that could not start (its dataset unreadable): recorded like any failure.
fn failed_before_start(
    plan: &Plan,
    s: &Scenario,
    agent: &AgentClient,
    isolation: IsolationInfo,
    error: String,
) -> ScenarioOutcome {
    println!("Scenario failed: {}: {error}", s.name);
    let now = rfc3339_utc(SystemTime::now());
    let stats = ScenarioStats {
        kvbench_version: env!("CARGO_PKG_VERSION").into(),
        scenario: scenario_info(s),
        status: "failed".into(),
        error: Some(error),
        started_at: now.clone(),
        finished_at: now,
        engine: engine_info(s, agent),
        agent: agent_info(agent),
        isolation,
        rounds: Vec::new(),
        comparison: None,
    };
    let ts = timestamp_utc(SystemTime::now());
    let paths = write_files(plan, s, &ts, &stats, &[]).ok();
    ScenarioOutcome {
        name: s.name.clone(),
        stats,
        stats_path: paths.as_ref().map(|p| p.0.clone()),
        results_path: paths.map(|p| p.1),
        telemetry_path: None,
        records: 0,
    }
}

fn scenario_info(s: &Scenario) -> ScenarioInfo {
    ScenarioInfo {
        name: s.name.clone(),
        kind: s.kind.label().into(),
        config_file: s.config_file.clone(),
        rounds: s.rounds,
        concurrency: s.concurrency,
    }
}

fn engine_info(s: &Scenario, agent: &AgentClient) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("endpoint".to_owned(), s.config.endpoint.to_string()),
        ("engine_url".to_owned(), agent.info().engine_display.clone()),
        ("model".to_owned(), s.config.model.clone()),
        ("api".to_owned(), s.config.api.label().to_owned()),
    ])
}

fn agent_info(agent: &AgentClient) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("name".to_owned(), agent.info().agent_name.clone()),
        ("hostname".to_owned(), agent.info().hostname.clone()),
        ("version".to_owned(), agent.info().agent_version.clone()),
        ("address".to_owned(), agent.url().to_owned()),
    ])
}

#[allow(clippy::too_many_arguments)]
async fn run_scenario(
    plan: &Plan,
    s: &Scenario,
    agent: &AgentClient,
    scenario_id: &str,
    mut isolation: IsolationInfo,
    dataset: Option<&Dataset>,
    tokenizer: Option<&[u8]>,
    cancel: &CancellationToken,
) -> ScenarioOutcome {
    let started = Instant::now();
    let started_at = rfc3339_utc(SystemTime::now());
    // One timestamp names all of this scenario's files.
    let ts = timestamp_utc(SystemTime::now());
    let mut records: Vec<RequestRecord> = Vec::new();
    let telemetry_path = plan
        .output_dir
        .join(format!("{}_telemetry_{ts}.jsonl", s.slug));
    let mut telemetry_written = false;

    let mut rounds = Vec::new();
    let mut error: Option<String> = None;
    let mut status = "completed";
    for round in 1..=s.rounds {
        let rr = run_round(s, agent, scenario_id, round, dataset, tokenizer, cancel).await;
        let duration_s = rr.duration_s.unwrap_or_else(|| span_s(&rr.records));
        let mut st = RoundStats::compute(round, duration_s, &rr.records, &s.config.stats);
        st.engine_metrics = EngineMetricsSummary::of(&rr.telemetry);
        st.telemetry = TelemetrySummary::of(&rr.telemetry, st.total_output_tokens);
        st.generator_saturated = rr.health.as_ref().is_some_and(|h| h.generator_saturated);
        st.agent_health = rr.health.clone();
        print_round(s, &st);
        let all_failed = st.completed == 0 && st.failed > 0;
        let round_error = rr.error.or_else(|| {
            all_failed.then(|| {
                let first = rr.records.iter().find(|r| r.outcome != Outcome::Ok);
                format!(
                    "all {} requests failed ({}); first error: {}",
                    st.failed,
                    outcome_counts(&st),
                    first.map(|r| r.error.as_str()).unwrap_or("")
                )
            })
        });
        if round == 1 {
            isolation.judge(&rr.records);
            print_verdict(&isolation);
        }
        if !rr.records.is_empty() || rr.duration_s.is_some() {
            rounds.push(st);
        }
        records.extend(rr.records);
        // Each round's samples are on disk as soon as the round ends.
        if !rr.telemetry.is_empty() {
            match append_jsonl(&telemetry_path, &rr.telemetry) {
                Ok(()) => telemetry_written = true,
                Err(e) => println!("  ERROR: cannot write telemetry samples: {e:#}"),
            }
        }
        if let Some(e) = round_error {
            status = if cancel.is_cancelled() {
                "cancelled"
            } else {
                "failed"
            };
            error = Some(format!("round {round}: {e}"));
            break;
        }
    }
    let comparison = Comparison::of(&rounds);
    if let Some(c) = &comparison {
        println!(
            "  Round {} vs round 1: TTFT reduction {}, throughput increase {}",
            c.compared_round,
            pct(c.ttft_reduction_pct),
            pct(c.throughput_increase_pct)
        );
    }
    let stats = ScenarioStats {
        kvbench_version: env!("CARGO_PKG_VERSION").into(),
        scenario: scenario_info(s),
        status: status.into(),
        error: error.clone(),
        started_at,
        finished_at: rfc3339_utc(SystemTime::now()),
        engine: engine_info(s, agent),
        agent: agent_info(agent),
        isolation,
        rounds,
        comparison,
    };
    let (stats_path, results_path) = match write_files(plan, s, &ts, &stats, &records) {
        Ok((a, b)) => (Some(a), Some(b)),
        Err(e) => {
            println!("  ERROR: cannot write result files: {e:#}");
            (None, None)
        }
    };
    let took = started.elapsed().as_secs_f64();
    if status == "completed" {
        println!("Scenario done: {} (took {took:.1} s)", s.name);
    } else {
        println!(
            "Scenario {}: {} (took {took:.1} s): {}",
            if status == "cancelled" {
                "cancelled"
            } else {
                "failed"
            },
            s.name,
            error.as_deref().unwrap_or("")
        );
    }
    if let (Some(a), Some(b)) = (&stats_path, &results_path) {
        println!("  stats:     {}", a.display());
        println!("  results:   {}", b.display());
    }
    let telemetry_path = telemetry_written.then_some(telemetry_path);
    if let Some(t) = &telemetry_path {
        println!("  telemetry: {}", t.display());
    }
    ScenarioOutcome {
        name: s.name.clone(),
        stats,
        stats_path,
        results_path,
        telemetry_path,
        records: records.len(),
    }
}

/// Seconds from the first scheduled request to the last end (when the agent could not say).
fn span_s(records: &[RequestRecord]) -> f64 {
    let start = records
        .iter()
        .map(|r| r.scheduled_ms)
        .fold(f64::INFINITY, f64::min);
    let end = records.iter().map(|r| r.end_ms).fold(0.0, f64::max);
    if start.is_finite() && end > start {
        (end - start) / 1000.0
    } else {
        0.0
    }
}

fn outcome_counts(st: &RoundStats) -> String {
    st.outcomes
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.1}%"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.1} ms"))
}

fn print_verdict(i: &IsolationInfo) {
    let evidence = i.evidence.join("; ");
    match i.verdict.as_str() {
        "verified" => println!("  Isolation: verified cold start ({evidence})"),
        "failed" => {
            println!("  Isolation: FAILED: round 1 was not a cold start ({evidence})");
            println!("    Its figures are not cold-start figures: restart the engine between scenarios, or fix the reset.")
        }
        "unverified" => println!("  Isolation: unverified ({evidence})"),
        _ => println!("  Isolation: none before this scenario ({evidence})"),
    }
}

fn print_round(s: &Scenario, st: &RoundStats) {
    println!(
        "  Round {}/{} ({}): {} ok, {} failed in {:.2} s | TTFT mean {} p99 {} | TPOT mean {} | cache hit {}{} | {:.1} req/s, {:.0} tok/s out",
        st.round,
        s.rounds,
        round_label(s, st.round),
        st.completed,
        st.failed,
        st.duration,
        ms(st.get("mean_ttft_ms")),
        ms(st.get("p99_ttft_ms")),
        ms(st.get("mean_tpot_ms")),
        st.cache_hit_ratio.map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        st.engine_metrics
            .as_ref()
            .and_then(|m| m.prefix_cache_hit_rate)
            .map_or(String::new(), |r| format!(" (engine: {:.1}%)", r * 100.0)),
        st.request_throughput,
        st.output_throughput,
    );
    if st.failed > 0 {
        println!("    failures: {}", outcome_counts(st));
    }
    if let Some(t) = &st.telemetry {
        print_telemetry(t);
    }
    if let Some(h) = st.agent_health.as_ref().filter(|h| h.generator_saturated) {
        println!(
            "    WARNING: generator_saturated: the agent could not keep up ({}); latencies include the harness's own delay",
            h.saturation_reason
        );
    }
}

/// One line for the GPUs, one for the engine's load and the host.
fn print_telemetry(t: &TelemetrySummary) {
    let num = |v: Option<f64>, unit: &str, digits: usize| {
        v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}{unit}"))
    };
    if let Some(g) = &t.gpu {
        println!(
            "    GPU: {} GPU{} | util mean {} max {} | peak memory {} | power mean {} | energy {} ({} per output token, {})",
            g.gpus,
            if g.gpus == 1 { "" } else { "s" },
            num(g.util_mean_pct, "%", 1),
            num(g.util_max_pct, "%", 1),
            num(g.mem_used_peak_bytes.map(|b| b / (1u64 << 30) as f64), " GiB", 1),
            num(g.power_mean_w, " W", 0),
            num(g.energy_j, " J", 1),
            num(g.j_per_output_token, " J", 3),
            g.energy_method.as_deref().unwrap_or("no energy reading"),
        );
    }
    let mut parts = Vec::new();
    match &t.engine {
        Some(e) if e.requests_running_mean.is_none() && e.requests_waiting_mean.is_none() => parts
            .push(
            "engine load: no /metrics sample inside the round (shorter than the scrape interval)"
                .to_owned(),
        ),
        Some(e) => parts.push(format!(
            "engine running {} / waiting {} requests (mean)",
            num(e.requests_running_mean, "", 1),
            num(e.requests_waiting_mean, "", 1)
        )),
        None => {}
    }
    if let Some(h) = &t.host {
        parts.push(format!(
            "host CPU mean {} max {}",
            num(h.cpu_mean_pct, "%", 1),
            num(h.cpu_max_pct, "%", 1)
        ));
    }
    if !parts.is_empty() {
        println!("    {}", parts.join(" | "));
    }
    for n in &t.notes {
        println!("    telemetry note: {n}");
    }
}

async fn run_round(
    s: &Scenario,
    agent: &AgentClient,
    scenario_id: &str,
    round: u32,
    dataset: Option<&Dataset>,
    tokenizer: Option<&[u8]>,
    cancel: &CancellationToken,
) -> RoundRun {
    let c = &s.config;
    let req = RoundRequest {
        scenario_id: scenario_id.to_owned(),
        scenario_name: s.name.clone(),
        round,
        workload: c.workload.clone(),
        load: s.load_spec(round),
        model: c.model.clone(),
        api: c.api,
        enforce_output_length: c.enforce_output_length,
        requests: match dataset {
            Some(Dataset::Conversations(cs)) => RoundRequests::Conversations(cs.clone()),
            Some(Dataset::Trace(t)) => RoundRequests::Trace {
                entries: t.clone(),
                use_timestamps: c.dataset.as_ref().is_some_and(|d| d.use_timestamps),
                speedup: c.dataset.as_ref().map_or(1.0, |d| d.speedup),
            },
            None => RoundRequests::Generated,
        },
        tokenizer_json: tokenizer.map(<[u8]>::to_vec),
    };
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("  Round {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{round}/{} ({})", s.rounds, round_label(s, round)));
    let mut failed = 0u32;
    let run = agent
        .run_round(&req, cancel, |e| match e {
            RoundEvent::Started(st) if st.total_requests > 0 => {
                bar.set_length(u64::from(st.total_requests))
            }
            RoundEvent::Started(_) => {
                // A round limited by duration: no total to count towards.
                bar.set_style(
                    ProgressStyle::with_template(
                        "  Round {prefix} {spinner} {pos} requests {msg} ({elapsed})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
            RoundEvent::Record(rec) => {
                if rec.outcome != Outcome::Ok {
                    failed += 1;
                    bar.set_message(format!("{failed} failed"));
                }
                bar.inc(1);
            }
            RoundEvent::Progress(p) => {
                bar.set_message(format!("{} in flight, {} failed", p.in_flight, p.failed));
            }
            RoundEvent::Telemetry(_) | RoundEvent::Finished(_) => {}
        })
        .await;
    bar.finish_and_clear();
    let (duration_s, health, error) = match run.end {
        RoundEnd::Finished(f) => (Some(f.duration_ms / 1000.0), f.health, None),
        RoundEnd::Cancelled => (None, None, Some("cancelled by the user".to_owned())),
        RoundEnd::Failed(e) => (None, None, Some(e)),
    };
    RoundRun {
        records: run.records,
        health,
        telemetry: run.telemetry,
        duration_s,
        error,
    }
}

#[derive(Serialize)]
struct ResultsFile<'a> {
    kvbench_version: &'a str,
    scenario: &'a ScenarioInfo,
    records: &'a [RequestRecord],
}

/// Appends samples to a JSON Lines file, one sample per line.
fn append_jsonl(path: &Path, samples: &[TelemetrySample]) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for sample in samples {
        serde_json::to_writer(&mut w, sample)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes `<slug>_stats_<ts>.json` and `<slug>_results_<ts>.json` (via a temporary file
/// and a rename, so a reader never sees half a file).
fn write_files(
    plan: &Plan,
    s: &Scenario,
    ts: &str,
    stats: &ScenarioStats,
    records: &[RequestRecord],
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let stats_path = plan.output_dir.join(format!("{}_stats_{ts}.json", s.slug));
    let results_path = plan
        .output_dir
        .join(format!("{}_results_{ts}.json", s.slug));
    write_json(&stats_path, stats)?;
    write_json(
        &results_path,
        &ResultsFile {
            kvbench_version: env!("CARGO_PKG_VERSION"),
            scenario: &stats.scenario,
            records,
        },
    )?;
    Ok((stats_path, results_path))
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

fn final_summary(plan: &Plan, sum: &RunSummary) {
    let ok = sum.scenarios.len() - sum.failed();
    println!();
    println!("{RULE}");
    println!(" Summary");
    println!("{RULE}");
    println!(
        "Scenarios: {} run of {} | succeeded: {} | failed: {} | total time: {:.2} min ({:.1} s){}",
        sum.scenarios.len(),
        plan.scenarios.len(),
        ok,
        sum.failed(),
        sum.total.as_secs_f64() / 60.0,
        sum.total.as_secs_f64(),
        if sum.cancelled { " | CANCELLED" } else { "" }
    );
    println!();
    println!("| scenario | type | status | isolation | R1 mean TTFT | last-round mean TTFT | TTFT reduction | throughput increase | R1 cache hit | last-round cache hit |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in &sum.scenarios {
        let st = &o.stats;
        let first = st.rounds.first();
        let last = st.rounds.last().filter(|r| r.round > 1);
        let hit = |r: Option<&RoundStats>| {
            r.and_then(|r| r.cache_hit_ratio)
                .map_or("n/a".to_owned(), |h| format!("{:.1}%", h * 100.0))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            st.scenario.name,
            st.scenario.kind,
            st.status,
            st.isolation.verdict,
            ms(first.and_then(|r| r.get("mean_ttft_ms"))),
            ms(last.and_then(|r| r.get("mean_ttft_ms"))),
            pct(st.comparison.as_ref().and_then(|c| c.ttft_reduction_pct)),
            pct(st
                .comparison
                .as_ref()
                .and_then(|c| c.throughput_increase_pct)),
            hit(first),
            hit(last),
        );
    }
    let not_cold: Vec<&str> = sum
        .scenarios
        .iter()
        .filter(|o| o.stats.isolation.verdict == "failed")
        .map(|o| o.name.as_str())
        .collect();
    if !not_cold.is_empty() {
        println!();
        println!(
            "WARNING: round 1 was not a cold start in: {} (see isolation.evidence in their stats)",
            not_cold.join(", ")
        );
    }
    println!();
    println!("Results folder: {}", plan.output_dir.display());
}
