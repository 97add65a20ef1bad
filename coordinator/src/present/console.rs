//! The console reporter: turns a run's events into what people read, written to any
//! `Write` (stdout for `kvbench run`, a buffer in tests), with a progress bar per round on
//! stderr. A write that fails (a closed pipe: `kvbench run plan.yaml | head`) is ignored:
//! the console can never stop a run or lose its files.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kvbench_common::agent::{AgentInfo, RoundEvent};
use kvbench_common::isolation::{IsolationInfo, Verdict};
use kvbench_common::plan::{IsolationPolicy, Plan, Scenario};
use kvbench_common::record::Outcome;
use kvbench_common::results::{RoundStats, ScenarioStatus};
use kvbench_common::telemetry::TelemetrySummary;
use kvbench_common::workload::WorkloadKind;

use crate::engine::events::{Observer, RunEvent};
use crate::engine::outcome::{RunSummary, ScenarioOutcome};

const RULE: &str = "==============================================================";
const THIN: &str = "--------------------------------------------------------------";

/// Writes a line, ignoring a closed output.
macro_rules! say {
    ($w:expr) => {{ let _ = writeln!($w); }};
    ($w:expr, $($arg:tt)*) => {{ let _ = writeln!($w, $($arg)*); }};
}

/// The console reporter.
pub struct Console<W: Write> {
    out: W,
    /// Progress bars on stderr (hidden where stderr is not a terminal).
    bars: bool,
    bar: Option<ProgressBar>,
    failed_in_round: u32,
}

impl<W: Write> std::fmt::Debug for Console<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("bars", &self.bars).finish()
    }
}

impl Console<std::io::Stdout> {
    /// The console of `kvbench run`: stdout, with progress bars on stderr.
    pub fn stdout() -> Self {
        Console::new(std::io::stdout(), true)
    }
}

impl<W: Write> Console<W> {
    pub fn new(out: W, bars: bool) -> Self {
        Console {
            out,
            bars,
            bar: None,
            failed_in_round: 0,
        }
    }

    /// What was written (tests).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn round_event(&mut self, s: &Scenario, round: u32, e: &RoundEvent) {
        match e {
            RoundEvent::Started(st) => {
                self.failed_in_round = 0;
                let bar = if self.bars {
                    ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
                } else {
                    ProgressBar::hidden()
                };
                let style = if st.total_requests > 0 {
                    bar.set_length(u64::from(st.total_requests));
                    ProgressStyle::with_template(
                        "  Round {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
                    )
                    .map(|s| s.progress_chars("=> "))
                } else {
                    // A round limited by duration: no total to count towards.
                    ProgressStyle::with_template(
                        "  Round {prefix} {spinner} {pos} requests {msg} ({elapsed})",
                    )
                };
                bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
                bar.set_prefix(format!("{round}/{} ({})", s.rounds, round_label(s, round)));
                self.bar = Some(bar);
            }
            RoundEvent::Record(r) => {
                if let Some(bar) = &self.bar {
                    if r.outcome != Outcome::Ok {
                        self.failed_in_round += 1;
                        bar.set_message(format!("{} failed", self.failed_in_round));
                    }
                    bar.inc(1);
                }
            }
            RoundEvent::Progress(p) => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("{} in flight, {} failed", p.in_flight, p.failed));
                }
            }
            RoundEvent::EngineDown(d) => say!(
                self.out,
                "  The engine went down {:.1} s into round {round}: {}{}",
                d.at_ms / 1000.0,
                d.detail,
                if d.restarting {
                    "; the agent stops the round's load and restarts it"
                } else {
                    "; the round goes on (its requests fail as they do)"
                }
            ),
            RoundEvent::EngineRestarted(r) => match &r.error {
                None => say!(
                    self.out,
                    "  The engine was restarted in {:.1} s ({})",
                    r.took_ms / 1000.0,
                    r.detail
                ),
                Some(e) => say!(
                    self.out,
                    "  The engine's restart failed ({}) after {:.1} s: {}",
                    e.label(),
                    r.took_ms / 1000.0,
                    r.detail
                ),
            },
            RoundEvent::Telemetry(_) | RoundEvent::Finished(_) => {}
        }
    }
}

impl<W: Write> Observer for Console<W> {
    fn on(&mut self, event: &RunEvent<'_>) {
        let w = &mut self.out;
        match event {
            RunEvent::RunStarted { plan, agents } => banner(w, plan, agents),
            e @ (RunEvent::IsolationStarted { .. }
            | RunEvent::Clearing { .. }
            | RunEvent::Cleared(_)
            | RunEvent::Restarting { .. }
            | RunEvent::Restarted(_)
            | RunEvent::AgentCallFailed { .. }
            | RunEvent::FallingBackToRestart
            | RunEvent::NotClearing { .. }
            | RunEvent::Waiting { .. }) => isolation_lines(w, e),
            RunEvent::ScenarioStarted {
                index,
                total,
                scenario,
                agents,
            } => {
                say!(w);
                say!(w, "Progress: {index}/{total}");
                scenario_header(w, scenario, agents);
            }
            RunEvent::PointNotNeeded {
                index,
                total,
                scenario,
            } => {
                say!(w);
                say!(w, "Progress: {index}/{total}");
                say!(
                    w,
                    "Search point not needed: {} (the search of {} has found its boundary)",
                    scenario.name,
                    scenario.sweep.as_ref().map_or("", |p| p.scenario.as_str())
                );
            }
            RunEvent::ScenarioKept {
                index,
                total,
                outcome,
            } => {
                say!(w);
                say!(w, "Progress: {index}/{total}");
                say!(
                    w,
                    "Scenario kept: {} ({} before the run was interrupted; its files stay as they are)",
                    outcome.name,
                    outcome.stats.status
                );
            }
            RunEvent::Round {
                scenario,
                round,
                event,
            } => self.round_event(scenario, *round, event),
            RunEvent::RoundEnded { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            RunEvent::LateRecords {
                agent,
                scenario,
                round,
                records,
                file,
            } => say!(
                w,
                "  agent {agent} is back: {records} records it measured in round {round} of {scenario} after it was lost are in {}",
                file.display()
            ),
            RunEvent::PartFailed { agent, error, .. } => say!(
                w,
                "  {agent}'s part failed: {error}; the other agents go on (the scenario will be partial)"
            ),
            RunEvent::RoundStats { scenario, stats } => round_lines(w, scenario, stats),
            RunEvent::Verdict(i) => verdict(w, i),
            // Said live, as the agent told it (RoundEvent::EngineDown and EngineRestarted).
            RunEvent::EngineFailed { .. } => {}
            RunEvent::EngineRerun {
                scenario,
                round,
                agent,
            } => say!(
                w,
                "  {agent}'s engine was restarted during round {round}: {} runs again from its isolation step (the attempt's records are kept apart, as discarded_records)",
                scenario.name
            ),
            RunEvent::Rerunning { scenario, failed } => say!(
                w,
                "  Round 1 of {} was not a cold start ({}): restarting the engine and running the scenario again",
                scenario.name,
                failed.warm_summary()
            ),
            RunEvent::Comparison(c) => {
                say!(
                    w,
                    "  Round {} vs round 1: TTFT reduction {}, throughput increase {}{}",
                    c.compared_round,
                    pct(c.ttft_reduction_pct),
                    pct(c.throughput_increase_pct),
                    c.common_requests.map_or(String::new(), |n| format!(
                        " (on the {n} requests that succeeded in both rounds)"
                    ))
                )
            }
            RunEvent::Problem(p) => say!(w, "  ERROR: {p}"),
            RunEvent::OutputFailed(e) => say!(
                w,
                "  ERROR: {e}\n  The run stops here, and can be resumed: the records file holds every record up to the failure, and the agents keep the ones after it for the plan's reconnect_window_s. Make room (or fix the folder), then: kvbench run --resume {}",
                e.path.parent().map_or_else(|| ".".into(), |d| d.display().to_string())
            ),
            RunEvent::ScenarioFinished { outcome, took_s } => scenario_end(w, outcome, *took_s),
            RunEvent::RunFinished { plan, summary } => final_summary(w, plan, summary),
        }
        let _ = self.out.flush();
    }
}

/// The cleanup block between scenarios: what isolation does, step by step.
fn isolation_lines(w: &mut impl Write, event: &RunEvent<'_>) {
    match event {
        RunEvent::IsolationStarted { policy } => {
            say!(w);
            say!(
                w,
                "Cleanup before the next scenario (isolation: {})",
                policy.label()
            );
        }
        RunEvent::Clearing { agent } => {
            say!(w, "  Clearing the KV cache through agent {agent} ...")
        }
        RunEvent::Cleared(r) if r.success => {
            say!(
                w,
                "  Cache cleared ({}); clear and cold check took {:.0} ms",
                r.detail,
                r.took_ms
            );
            if let Some(p) = &r.probe {
                say!(
                    w,
                    "  Cold check: the previous round's first prompt sent again: {} of {} tokens cached",
                    p.cached_tokens.map_or("n/a".to_owned(), |c| c.to_string()),
                    p.prompt_tokens
                );
            }
        }
        RunEvent::Cleared(r) => say!(w, "  WARNING: clear failed: {}", r.detail),
        RunEvent::Restarting { agent } => {
            say!(w, "  Restarting the engine through agent {agent} ...")
        }
        RunEvent::Restarted(r) => match r.error {
            None => say!(
                w,
                "  Engine restarted in {:.1} s ({})",
                r.took_ms / 1000.0,
                r.detail
            ),
            Some(class) => say!(w, "  WARNING: restart failed ({class}): {}", r.detail),
        },
        RunEvent::AgentCallFailed { what, error } => {
            say!(w, "  WARNING: {what} failed: {error}")
        }
        RunEvent::FallingBackToRestart => {
            say!(
                w,
                "  The clear did not give a cold cache: restarting instead"
            )
        }
        RunEvent::NotClearing { policy } => {
            say!(w, "  Not clearing (isolation: {})", policy.label())
        }
        RunEvent::Waiting { seconds } => say!(w, "  Waiting {seconds} s to settle"),
        _ => {}
    }
}

/// What the policy does, in words, for the banner.
fn isolation_line(plan: &Plan) -> String {
    let wait = plan.wait_between_scenarios_s;
    let before = if plan.isolate_before_first {
        "before every scenario"
    } else {
        "between scenarios"
    };
    match plan.isolation {
        IsolationPolicy::Clear => {
            format!("clear: the agent clears the KV cache {before}, then waits {wait} s")
        }
        IsolationPolicy::Restart => {
            format!("restart: the agent restarts the engine {before}, then waits {wait} s")
        }
        IsolationPolicy::ClearOrRestart => format!(
            "clear_or_restart: the agent clears the KV cache {before} (restarting the engine when a cache stays warm), then waits {wait} s"
        ),
        IsolationPolicy::Wait => format!(
            "wait: OFF, only {wait} s {before}: round 1 of later scenarios may hit earlier scenarios' cache"
        ),
        IsolationPolicy::None => {
            "none: OFF: round 1 of later scenarios may hit earlier scenarios' cache".to_owned()
        }
    }
}

fn banner(w: &mut impl Write, plan: &Plan, agents: &[&AgentInfo]) {
    say!(w, "{RULE}");
    say!(
        w,
        " kvbench {}: multi-scenario run",
        env!("CARGO_PKG_VERSION")
    );
    say!(w, "{RULE}");
    say!(w, "Plan:            {}", plan.path.display());
    say!(w, "Scenarios:       {}", plan.scenarios.len());
    say!(w, "Output folder:   {}", plan.output_dir.display());
    say!(w, "Isolation:       {}", isolation_line(plan));
    for h in agents {
        say!(
            w,
            "Agent:           {} (kvbench-agent {} on {}, engine {}; {})",
            h.agent_name,
            h.agent_version,
            h.hostname,
            h.engine_display,
            h.gpu_summary()
        );
        for warning in &h.warnings {
            say!(w, "WARNING: agent {}: {warning}", h.agent_name);
        }
    }
    say!(w, "{RULE}");
}

fn scenario_header(w: &mut impl Write, s: &Scenario, agents: &[&AgentInfo]) {
    let c = &s.config;
    say!(w, "{THIN}");
    say!(w, "Scenario:     {}", s.name);
    say!(w, "Config file:  {}", s.config_file);
    say!(
        w,
        "Workload:     {} ({} requests, {} output tokens, seed {})",
        s.kind,
        c.workload.num_requests,
        c.workload.output_tokens,
        c.workload.seed
    );
    say!(w, "Rounds:       {}", s.rounds);
    say!(w, "Load:         {}", s.load_description());
    if let Some((p, spec)) = s.sweep.as_ref().and_then(|p| Some((p, p.search.as_ref()?))) {
        say!(
            w,
            "Search:       point {} of at most {} of {}, between {} and {} {} ({}): this point at {}",
            p.index,
            spec.points,
            p.scenario,
            kvbench_common::util::trim_float(spec.between[0]),
            kvbench_common::util::trim_float(spec.between[1]),
            p.dimension.unit(),
            spec.resolution_text(p.dimension),
            kvbench_common::util::trim_float(p.value)
        );
    }
    for agent in agents {
        say!(
            w,
            "Endpoint:     {} via agent {} (model {}, {} API)",
            match c.endpoint {
                kvbench_common::plan::Endpoint::Agent => agent.engine_display.clone(),
                ref e => e.to_string(),
            },
            agent.agent_name,
            c.model,
            c.api.label()
        );
    }
    if agents.len() > 1 {
        say!(
            w,
            "Placement:    split across {} agents at once (each a share of the requests and of the load)",
            agents.len()
        );
    }
    say!(w, "{THIN}");
}

/// What a round is, for people: round 1 is the cold start; later rounds replay it (a
/// `cold_start` scenario draws fresh prompts each round, unless it replays a dataset).
fn round_label(s: &Scenario, round: u32) -> &'static str {
    let fresh = s.kind == WorkloadKind::ColdStart && s.config.dataset.is_none();
    match (round, fresh) {
        (1, _) => "cold start",
        (_, true) => "fresh prompts",
        _ => "cache hit",
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.1}%"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.1} ms"))
}

fn verdict(w: &mut impl Write, i: &IsolationInfo) {
    if !i.per_agent.is_empty() {
        // A split scenario: the worst verdict, then each agent's on its own line.
        say!(
            w,
            "  Isolation: {} (the worst of its {} agents')",
            i.verdict,
            i.per_agent.len()
        );
        for (agent, a) in &i.per_agent {
            say!(w, "    {agent}: {} ({})", a.verdict, a.evidence.join("; "));
        }
        if i.verdict == Verdict::Failed {
            say!(w, "    Its figures are not cold-start figures: restart the engine between scenarios, or fix the reset.")
        }
        return;
    }
    let evidence = i.evidence.join("; ");
    match i.verdict {
        Verdict::Verified => say!(w, "  Isolation: verified cold start ({evidence})"),
        Verdict::Failed => {
            say!(
                w,
                "  Isolation: FAILED: round 1 was not a cold start ({evidence})"
            );
            say!(w, "    Its figures are not cold-start figures: restart the engine between scenarios, or fix the reset.")
        }
        Verdict::Unverified => say!(w, "  Isolation: unverified ({evidence})"),
        Verdict::None => say!(w, "  Isolation: none before this scenario ({evidence})"),
    }
}

fn round_lines(w: &mut impl Write, s: &Scenario, st: &RoundStats) {
    say!(
        w,
        "  Round {}/{} ({}): {} ok, {} failed in {:.2} s | TTFT mean {} p99 {} | TPOT mean {} | cache hit {}{}{}{} | {:.1} req/s, {:.0} tok/s out",
        st.round,
        s.rounds,
        round_label(s, st.round),
        st.completed,
        st.failed,
        st.duration,
        ms(st.latency.ttft.mean),
        ms(st.latency.ttft.p99()),
        ms(st.latency.tpot.mean),
        st.cache_hit_ratio.map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        st.engine_metrics
            .as_ref()
            .and_then(|m| m.prefix_cache_hit_rate)
            .map_or(String::new(), |r| format!(" (engine: {:.1}%)", r * 100.0)),
        st.cache_efficiency
            .as_ref()
            .and_then(|e| Some((e.efficiency?, e.perfect_hit_ratio)))
            .map_or(String::new(), |(e, p)| format!(
                ", {:.1}% of a perfect cache's {:.1}%",
                e * 100.0,
                p * 100.0
            )),
        tiers(Some(st)).map_or(String::new(), |t| format!(" | by tier: {t}")),
        st.request_throughput,
        st.output_throughput,
    );
    if st.failed > 0 {
        say!(w, "    failures: {}", st.failure_counts());
    }
    for r in &st.resumed {
        say!(
            w,
            "    link: the stream broke and was resumed where it broke, nothing lost ({r})"
        );
    }
    if let Some(f) = &st.first_wave {
        say!(
            w,
            "    first wave ({} requests at once): TTFT mean {} p99 {} | after it ({} requests): TTFT mean {} p99 {}",
            f.requests,
            ms(Some(f.mean_ttft_ms)),
            ms(Some(f.p99_ttft_ms)),
            f.steady_requests,
            ms(Some(f.steady_mean_ttft_ms)),
            ms(Some(f.steady_p99_ttft_ms)),
        );
    }
    for (agent, a) in &st.per_agent {
        say!(
            w,
            "    {agent}: {} ok, {} failed in {:.2} s | TTFT mean {} p99 {} | cache hit {}{} | {:.1} req/s",
            a.completed,
            a.failed,
            a.duration,
            ms(a.latency.ttft.mean),
            ms(a.latency.ttft.p99()),
            a.cache_hit_ratio
                .map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            a.engine_metrics
                .as_ref()
                .and_then(|m| m.prefix_cache_hit_rate)
                .map_or(String::new(), |r| format!(" (engine: {:.1}%)", r * 100.0)),
            a.request_throughput,
        );
    }
    if let Some(t) = &st.telemetry {
        telemetry_lines(w, t);
    }
    if let Some(h) = st.agent_health.as_ref().filter(|h| h.generator_saturated) {
        say!(
            w,
            "    WARNING: generator_saturated: the agent could not keep up ({}); latencies include the harness's own delay; {}",
            h.saturation_reason,
            h.scheduling_hint()
        );
    }
}

/// One line for the GPUs, one for the engine's load and the host.
fn telemetry_lines(w: &mut impl Write, t: &TelemetrySummary) {
    let num = |v: Option<f64>, unit: &str, digits: usize| {
        v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}{unit}"))
    };
    if let Some(g) = &t.gpu {
        say!(
            w,
            "    GPU: {} GPU{} | util mean {} max {} | peak memory {} | power mean {} | energy {} ({} per output token, {})",
            g.gpus,
            if g.gpus == 1 { "" } else { "s" },
            num(g.util_mean_pct, "%", 1),
            num(g.util_max_pct, "%", 1),
            num(g.mem_used_peak_bytes.map(|b| b / (1u64 << 30) as f64), " GiB", 1),
            num(g.power_mean_w, " W", 0),
            num(g.energy_j, " J", 1),
            num(g.j_per_output_token, " J", 3),
            g.energy_method.map_or("no energy reading", |m| m.label()),
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
        say!(w, "    {}", parts.join(" | "));
    }
    for n in &t.notes {
        say!(w, "    telemetry note: {n}");
    }
}

fn scenario_end(w: &mut impl Write, o: &ScenarioOutcome, took: f64) {
    let st = &o.stats;
    let error = st.error.as_deref().unwrap_or("");
    match st.status {
        ScenarioStatus::Completed => say!(w, "Scenario done: {} (took {took:.1} s)", o.name),
        ScenarioStatus::Degraded => say!(
            w,
            "Scenario degraded: {} (took {took:.1} s): {error}",
            o.name
        ),
        ScenarioStatus::Cancelled => say!(
            w,
            "Scenario cancelled: {} (took {took:.1} s): {error}",
            o.name
        ),
        ScenarioStatus::Failed => {
            say!(w, "Scenario failed: {} (took {took:.1} s): {error}", o.name)
        }
        ScenarioStatus::Partial => say!(
            w,
            "Scenario partial: {} (took {took:.1} s): {error}",
            o.name
        ),
    }
    if let (Some(a), Some(b)) = (&o.stats_path, &o.results_path) {
        say!(w, "  stats:     {}", a.display());
        say!(w, "  results:   {}", b.display());
    }
    if let Some(t) = &o.telemetry_path {
        say!(w, "  telemetry: {}", t.display());
    }
}

fn final_summary(w: &mut impl Write, plan: &Plan, sum: &RunSummary) {
    let ok = sum.scenarios.iter().filter(|s| s.succeeded()).count();
    say!(w);
    say!(w, "{RULE}");
    say!(w, " Summary");
    say!(w, "{RULE}");
    say!(
        w,
        "Scenarios: {} run of {} | succeeded: {} | failed: {} | degraded: {} | total time: {:.2} min ({:.1} s){}",
        sum.scenarios.len(),
        plan.scenarios.len(),
        ok,
        sum.failed(),
        sum.degraded(),
        sum.total.as_secs_f64() / 60.0,
        sum.total.as_secs_f64(),
        if sum.cancelled { " | CANCELLED" } else { "" }
    );
    say!(w);
    say!(w, "| scenario | type | status | failed requests | isolation | R1 mean TTFT | last-round mean TTFT | TTFT reduction | throughput increase | R1 cache hit | last-round cache hit | R1 efficiency | last-round efficiency | last-round hits by tier |");
    say!(
        w,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for o in &sum.scenarios {
        summary_row(w, o);
    }
    let caps = sum.capacities();
    if !caps.is_empty() {
        say!(w);
        say!(w, "Capacity at the SLO (the largest load within every objective; `>=`: every point met them, `<`: the lowest missed):");
        say!(w, "| scenario | load | objectives | cold (round 1) | warm (last round) | warm / cold | against baseline |");
        say!(w, "|---|---|---|---|---|---|---|");
        use kvbench_common::sweep::shown_ratio;
        for c in &caps {
            let objectives: Vec<String> = c.slo.iter().map(ToString::to_string).collect();
            say!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.scenario,
                c.dimension.unit(),
                objectives.join(", "),
                kvbench_common::sweep::shown(&c.cold),
                c.warm
                    .as_ref()
                    .map_or_else(|| "n/a".into(), kvbench_common::sweep::shown),
                shown_ratio(c.warm_over_cold, c.warm_over_cold_at_least),
                c.baseline.as_ref().map_or_else(
                    || "n/a".into(),
                    |b| format!(
                        "{} ({}: {})",
                        shown_ratio(b.ratio, b.ratio_at_least),
                        b.scenario,
                        kvbench_common::sweep::shown(&b.capacity)
                    )
                ),
            );
            if let Some(s) = &c.search {
                say!(w, "  {}", super::report::capacity::search_line(c, s));
            }
            for p in &c.points {
                for why in [
                    p.cold.excluded.as_ref(),
                    p.warm.as_ref().and_then(|w| w.excluded.as_ref()),
                ]
                .into_iter()
                .flatten()
                {
                    say!(
                        w,
                        "  excluded at {}: {why}",
                        kvbench_common::util::trim_float(p.load)
                    );
                }
            }
        }
    }
    let not_cold = sum.not_cold();
    if !not_cold.is_empty() {
        say!(w);
        say!(
            w,
            "WARNING: round 1 was not a cold start in: {} (see isolation.evidence in their stats)",
            not_cold.join(", ")
        );
    }
    if sum.scenarios.iter().any(|o| {
        o.stats
            .comparison
            .as_ref()
            .is_some_and(|c| c.common_requests.is_some())
    }) {
        say!(w);
        say!(w, "Where requests failed, rounds are compared on the requests that succeeded in both (comparison.common_requests in the stats).");
    }
    say!(w);
    say!(w, "Results folder: {}", plan.output_dir.display());
    if let Some(report) = &sum.report {
        say!(w, "Report: {}", report.display());
    }
    if let Some(html) = &sum.html_report {
        say!(w, "HTML report: {}", html.display());
    }
}

fn summary_row(w: &mut impl Write, o: &ScenarioOutcome) {
    let st = &o.stats;
    let first = st.rounds.first();
    let last = st.rounds.last().filter(|r| r.round > 1);
    // Where requests carry no cached-token counts, the engine's counters say it.
    let hit = |r: Option<&RoundStats>| match r.and_then(|r| r.cache_hit_ratio) {
        Some(h) => format!("{:.1}%", h * 100.0),
        None => r
            .and_then(|r| r.engine_metrics.as_ref())
            .and_then(|m| m.prefix_cache_hit_rate)
            .map_or("n/a".to_owned(), |h| format!("{:.1}% (engine)", h * 100.0)),
    };
    let sent: u32 = st.rounds.iter().map(|r| r.completed + r.failed).sum();
    // A comparison is only shown when both rounds compared ran to their end.
    let c = st.comparison.as_ref();
    say!(
        w,
        "| {} | {} | {} | {} of {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        st.scenario.name,
        st.scenario.kind,
        st.status,
        o.failed_requests(),
        sent,
        st.isolation.verdict,
        ms(first.and_then(|r| r.latency.ttft.mean)),
        ms(last.and_then(|r| r.latency.ttft.mean)),
        pct(c.and_then(|c| c.ttft_reduction_pct)),
        pct(c.and_then(|c| c.throughput_increase_pct)),
        hit(first),
        hit(last),
        efficiency(first),
        efficiency(last),
        tiers(last).unwrap_or_else(|| "-".to_owned()),
    );
}

/// Cached tokens by the tier that gave them (none: the engine has one tier, or says
/// nothing of the others).
fn tiers(r: Option<&RoundStats>) -> Option<String> {
    let t = r?.cache_tiers.as_ref()?;
    let n = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let mut s = match (&t.requests, t.external_tokens) {
        (Some(q), None) => hicache_split(q),
        _ => format!(
            "device {} + connector {} tokens",
            n(t.device_tokens),
            n(t.external_tokens)
        ),
    };
    if let Some(l) = &t.lmcache {
        s.push_str(&format!(
            "; LMCache {} of {} hit",
            n(l.hit_tokens),
            n(l.requested_tokens)
        ));
    }
    if let Some(m) = &t.mooncake {
        s.push_str(&format!(
            "; Mooncake {} keys, {} evicted",
            n(m.keys_max),
            n(m.evicted_keys)
        ));
    }
    Some(s)
}

/// SGLang's split of the cached tokens, as its requests reported it.
fn hicache_split(q: &kvbench_common::telemetry::RequestTiers) -> String {
    let storage = q
        .storage_tokens
        .map_or(String::new(), |s| format!(" + storage {s}"));
    format!(
        "device {} + host {}{storage} tokens",
        q.device_tokens, q.host_tokens
    )
}

/// A round's hits against a perfect cache's, with the first cause of a shortfall.
fn efficiency(r: Option<&RoundStats>) -> String {
    let Some(e) = r.and_then(|r| r.cache_efficiency.as_ref()) else {
        return "n/a".to_owned();
    };
    let Some(x) = e.efficiency else {
        return "- (nothing to reuse)".to_owned();
    };
    let why = e
        .shortfall
        .first()
        .map_or(String::new(), |s| format!(" ({})", s.cause()));
    format!("{:.1}%{why}", x * 100.0)
}
