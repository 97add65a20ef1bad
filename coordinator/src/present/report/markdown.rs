//! The markdown report of a saved run: header, summary table per scenario and round, what
//! the cache bought, isolation verdicts with their evidence, targets, a conclusion written
//! from the figures, and per-scenario detail tables. A pure function of the saved files:
//! the same files give the same text.

use std::fmt::Write as _;

use kvbench_common::isolation::{IsolationStatus, Verdict};
use kvbench_common::results::{RoundStats, ScenarioStats, ScenarioStatus};
use kvbench_common::targets::TargetResult;

use super::charts::Charts;
use crate::output::{RunState, SavedRun};

/// A figure, or `-` when there is none.
pub(super) fn f(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

pub(super) fn pct(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}%"))
}

/// A ratio 0-1 as a percentage.
pub(super) fn ratio(v: Option<f64>) -> String {
    pct(v.map(|r| r * 100.0))
}

/// Text for a table cell: backslashes and pipes escaped, no line breaks.
pub(super) fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// The scenarios that have stats, with their names.
pub(super) fn ran(saved: &SavedRun) -> impl Iterator<Item = (&str, &ScenarioStats)> {
    saved
        .run
        .scenarios
        .iter()
        .zip(&saved.stats)
        .filter_map(|(s, st)| st.as_ref().ok().map(|st| (s.name.as_str(), st)))
}

pub(super) fn last(st: &ScenarioStats) -> Option<&RoundStats> {
    st.rounds.iter().max_by_key(|r| r.round)
}

pub(super) fn first(st: &ScenarioStats) -> Option<&RoundStats> {
    st.rounds.iter().find(|r| r.round == 1)
}

/// The report; `charts`: the folder of its charts beside it, shown inline.
pub fn render(saved: &SavedRun, charts: Option<&Charts>) -> String {
    let mut out = String::new();
    header(&mut out, saved);
    provenance(&mut out, saved);
    agents(&mut out, saved);
    summary(&mut out, saved);
    if let Some(c) = charts {
        chart_section(&mut out, c);
    }
    cache(&mut out, saved);
    super::efficiency::section(&mut out, saved);
    super::efficiency::tiers(&mut out, saved);
    let caps = super::capacity::capacities(saved);
    super::capacity::section(&mut out, &caps, charts);
    super::views::baselines(&mut out, saved);
    super::views::repeats(&mut out, saved);
    super::views::pivots(&mut out, saved);
    isolation(&mut out, saved);
    let checked = targets(&mut out, saved);
    conclusion(&mut out, saved, &checked, &caps);
    details(&mut out, saved, charts);
    out
}

fn header(out: &mut String, saved: &SavedRun) {
    let r = &saved.run;
    let _ = writeln!(out, "# kvbench report: {}\n", r.plan_file);
    let end = match (r.state, &r.finished_at) {
        (RunState::Finished, Some(t)) => format!("to {t}"),
        (RunState::Cancelled, Some(t)) => format!("to {t}, **stopped by the user**"),
        _ => "**did not reach its end** (the run file was last written while it ran)".to_owned(),
    };
    let _ = writeln!(out, "- Run: {} {end}", r.started_at);
    let _ = writeln!(out, "- kvbench {}", r.kvbench_version);
    let _ = writeln!(
        out,
        "- Isolation between scenarios: `{}`, then a wait of {} s",
        r.isolation_policy.label(),
        r.wait_between_scenarios_s
    );
    let count = |s: ScenarioStatus| r.scenarios.iter().filter(|x| x.status == Some(s)).count();
    let not_needed = r.scenarios.iter().filter(|x| x.not_needed).count();
    let not_run = r
        .scenarios
        .iter()
        .filter(|x| x.status.is_none() && !x.not_needed)
        .count();
    let _ = writeln!(
        out,
        "- Scenarios: {} of {} run | completed {} | degraded {}{} | failed {} | cancelled {}{}{}",
        r.scenarios.len() - not_run - not_needed,
        r.scenarios.len(),
        count(ScenarioStatus::Completed),
        count(ScenarioStatus::Degraded),
        match count(ScenarioStatus::Partial) {
            0 => String::new(),
            n => format!(" | partial {n}"),
        },
        count(ScenarioStatus::Failed),
        count(ScenarioStatus::Cancelled),
        if not_run > 0 {
            format!(" | **not run {not_run}**")
        } else {
            String::new()
        },
        if not_needed > 0 {
            format!(" | not needed {not_needed} (points a search did not need)")
        } else {
            String::new()
        }
    );
    for x in &r.resumed {
        let _ = writeln!(
            out,
            "- The run was resumed at {} after it was {}: kept {}; run from their isolation step {}",
            cell(&x.at),
            match x.after {
                crate::output::RunState::Cancelled => "stopped by a signal",
                _ => "interrupted (its coordinator went away)",
            },
            if x.kept.is_empty() { "none".to_owned() } else { cell(&x.kept.join(", ")) },
            if x.rerun.is_empty() { "none".to_owned() } else { cell(&x.rerun.join(", ")) },
        );
    }
    match &r.calibration {
        Some(c) => {
            let _ = writeln!(
                out,
                "- Harness calibration of this host ({}, {}, kvbench {}; applies to its embedded agents): {}",
                c.hostname, c.at, c.kvbench_version, c.verdict
            );
        }
        None => out.push_str(
            "- Harness calibration: none on record for this host (`kvbench calibrate` measures what the harness itself adds)\n",
        ),
    }
    if !r.targets.is_empty() {
        let t: Vec<String> = r.targets.iter().map(|t| format!("`{t}`")).collect();
        let _ = writeln!(out, "- Targets of every scenario: {}", t.join(", "));
    }
    out.push('\n');
}

/// The files the run read with their SHA-256, the engines and the seeds: what another run
/// must match to be comparable.
fn provenance(out: &mut String, saved: &SavedRun) {
    let p = &saved.run.provenance;
    if p.files.is_empty() && p.seeds.is_empty() {
        return;
    }
    out.push_str(
        "## Provenance

| file | role | SHA-256 |
|---|---|---|
",
    );
    for f in &p.files {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` |",
            cell(&f.path),
            f.role,
            f.sha256.as_deref().unwrap_or("could not be read")
        );
    }
    out.push('\n');
    let mut engines: Vec<String> = saved
        .run
        .agents
        .iter()
        .map(|a| {
            let version = if a.engine_version.is_empty() {
                "version not reported by the engine"
            } else {
                &a.engine_version
            };
            format!("{} ({}, {version})", a.engine_kind, a.engine_url)
        })
        .collect();
    engines.dedup();
    if !engines.is_empty() {
        let _ = writeln!(out, "- Engines: {}", cell(&engines.join("; ")));
    }
    if !p.seeds.is_empty() {
        let seeds: Vec<String> = p.seeds.iter().map(|(n, s)| format!("{n} {s}")).collect();
        let _ = writeln!(out, "- Workload seeds: {}", cell(&seeds.join(", ")));
    }
    out.push('\n');
}

fn agents(out: &mut String, saved: &SavedRun) {
    if saved.run.agents.is_empty() {
        return;
    }
    out.push_str("## Agents\n\n| agent | address | host | labels | GPUs | engine | models |\n|---|---|---|---|---|---|---|\n");
    for a in &saved.run.agents {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} {} | {} |",
            cell(&a.name),
            cell(&a.address),
            cell(&a.hostname),
            cell(&labels.join(", ")),
            cell(&a.gpus),
            cell(format!("{} {}", a.engine_kind, a.engine_version).trim()),
            cell(&a.engine_url),
            cell(&a.engine_models.join(", "))
        );
    }
    out.push('\n');
}

fn summary(out: &mut String, saved: &SavedRun) {
    out.push_str("## Summary\n\n| scenario | round | status | ok / failed | TTFT mean / p50 / p99 ms | TPOT mean ms | ITL p50 ms | E2E mean ms | req/s | output tok/s | cache hit (client / engine) | GPU util | J / output token |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        let st = match st {
            Ok(st) => st,
            Err(why) => {
                let _ = writeln!(
                    out,
                    "| {} | - | {} | - | - | - | - | - | - | - | - | - | - |",
                    cell(&s.name),
                    cell(&why.to_string())
                );
                continue;
            }
        };
        if st.rounds.is_empty() {
            let _ = writeln!(
                out,
                "| {} | - | {} | - | - | - | - | - | - | - | - | - | - |",
                cell(&s.name),
                st.status
            );
        }
        for r in &st.rounds {
            round_row(out, &s.name, st.status, r);
            // A split scenario: each agent's part below the merged row.
            for (agent, part) in &r.per_agent {
                round_row(out, &format!("{} (agent {agent})", s.name), st.status, part);
            }
        }
    }
    out.push('\n');
}

/// One summary row: a scenario's round (or one agent's part of it).
fn round_row(out: &mut String, name: &str, status: ScenarioStatus, r: &RoundStats) {
    let l = &r.latency;
    let gpu = r.telemetry.as_ref().and_then(|t| t.gpu.as_ref());
    let engine_hit = r
        .engine_metrics
        .as_ref()
        .and_then(|e| e.prefix_cache_hit_rate);
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} / {} | {} / {} / {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
        cell(name),
        r.round,
        status,
        r.completed,
        r.failed,
        f(l.ttft.mean, 1),
        f(l.ttft.median, 1),
        f(l.ttft.p99(), 1),
        f(l.tpot.mean, 2),
        f(l.itl.median, 2),
        f(l.e2el.mean, 1),
        f(Some(r.request_throughput), 2),
        f(Some(r.output_throughput), 1),
        ratio(r.cache_hit_ratio),
        ratio(engine_hit),
        pct(gpu.and_then(|g| g.util_mean_pct)),
        f(gpu.and_then(|g| g.j_per_output_token), 3),
    );
}

fn chart_section(out: &mut String, charts: &Charts) {
    let folder = &charts.folder;
    out.push_str("## Charts\n\n");
    for (file, what) in [
        (
            "ttft_comparison.png",
            "Mean TTFT, round 1 and the last round",
        ),
        (
            "throughput_comparison.png",
            "Output throughput, round 1 and the last round",
        ),
        ("ttft_reduction_comparison.png", "TTFT reduction"),
        ("throughput_increase_comparison.png", "Throughput increase"),
        ("performance_radar.png", "Performance radar"),
    ] {
        let _ = writeln!(out, "![{what}]({folder}/{file})\n");
    }
    if let Some(r) = &charts.repeats {
        let _ = writeln!(
            out,
            "![Repeated scenarios: mean TTFT reduction and throughput increase over their runs, with 95 % intervals]({folder}/{r})\n"
        );
    }
    if let Some(t) = &charts.timeline {
        let _ = writeln!(
            out,
            "![Timeline: TTFT per request, GPU utilisation and memory, engine KV-cache usage]({folder}/{t})\n"
        );
        let key: Vec<String> = charts
            .timeline_key
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{} = {}", i + 1, cell(n)))
            .collect();
        let _ = writeln!(out, "Timeline scenarios: {}.\n", key.join(", "));
    }
    for n in &charts.notes {
        let _ = writeln!(out, "- Not charted: {}", cell(n));
    }
    if !charts.notes.is_empty() {
        out.push('\n');
    }
}

fn cache(out: &mut String, saved: &SavedRun) {
    out.push_str("## What the cache bought (last round against round 1)\n\n| scenario | round 1 mean TTFT ms | last round mean TTFT ms | TTFT reduction | median TTFT reduction | throughput increase | cache hit change |\n|---|---|---|---|---|---|---|\n");
    for (name, st) in ran(saved) {
        let Some(c) = &st.comparison else {
            let _ = writeln!(
                out,
                "| {} | {} | - | not compared: {} | - | - | - |",
                cell(name),
                f(first(st).and_then(|r| r.latency.ttft.mean), 1),
                if st.rounds.len() < 2 {
                    "fewer than two rounds ran"
                } else {
                    "a round did not complete"
                }
            );
            continue;
        };
        let compared = st.rounds.iter().find(|r| r.round == c.compared_round);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(name),
            f(first(st).and_then(|r| r.latency.ttft.mean), 1),
            f(compared.and_then(|r| r.latency.ttft.mean), 1),
            pct(c.ttft_reduction_pct),
            pct(c.median_ttft_reduction_pct),
            pct(c.throughput_increase_pct),
            c.cache_hit_ratio_delta
                .map_or("-".to_owned(), |d| format!("{:+.1} points", d * 100.0)),
        );
    }
    out.push('\n');
}

fn isolation(out: &mut String, saved: &SavedRun) {
    out.push_str(
        "## Isolation: was each round 1 a cold start?\n\n| scenario | before it | verdict |\n|---|---|---|\n",
    );
    for (name, st) in ran(saved) {
        let i = &st.isolation;
        let before = match i.status {
            IsolationStatus::None => "nothing (the first scenario)".to_owned(),
            s => format!("{} (`{}`)", s.label(), i.policy.label()),
        };
        let _ = writeln!(
            out,
            "| {} | {before} | {} |",
            cell(name),
            verdict_label(i.verdict)
        );
    }
    out.push('\n');
    for (name, st) in ran(saved) {
        let i = &st.isolation;
        if i.verdict != Verdict::Failed {
            continue;
        }
        let _ = writeln!(out, "**{name}: round 1 was not cold.** Evidence:\n");
        for e in &i.evidence {
            let _ = writeln!(out, "- {e}");
        }
        out.push('\n');
    }
}

fn verdict_label(v: Verdict) -> &'static str {
    match v {
        Verdict::Verified => "verified",
        Verdict::Unverified => "unverified (the engine reports no cached tokens)",
        Verdict::Failed => "**FAILED**",
        Verdict::None => "none (no isolation step before it)",
    }
}

/// Each scenario's targets checked; the rows written.
fn targets(out: &mut String, saved: &SavedRun) -> Vec<(String, Vec<TargetResult>)> {
    let checked: Vec<(String, Vec<TargetResult>)> = saved
        .run
        .scenarios
        .iter()
        .zip(&saved.stats)
        .filter(|(s, _)| !s.targets.is_empty())
        .filter_map(|(s, st)| {
            let st = st.as_ref().ok()?;
            Some((
                s.name.clone(),
                s.targets.iter().map(|t| t.check(st)).collect(),
            ))
        })
        .collect();
    if checked.is_empty() {
        return checked;
    }
    let all_met = checked
        .iter()
        .filter(|(_, rs)| rs.iter().all(|r| r.met))
        .count();
    let _ = writeln!(
        out,
        "## Targets\n\n{all_met} of {} scenarios with targets met all of them.\n\n| scenario | target | figure | met |\n|---|---|---|---|",
        checked.len()
    );
    for (name, results) in &checked {
        for r in results {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} |",
                cell(name),
                r.target,
                r.actual
                    .map_or("none in the results".to_owned(), |v| format!("{v:.3}")),
                if r.met { "yes" } else { "**no**" }
            );
        }
    }
    out.push('\n');
    checked
}

fn conclusion(
    out: &mut String,
    saved: &SavedRun,
    checked: &[(String, Vec<TargetResult>)],
    caps: &[kvbench_common::sweep::SweepCapacity],
) {
    out.push_str("## Conclusion\n\n");
    let bought = caps
        .iter()
        .filter_map(|c| Some((c, c.warm_over_cold.or(c.warm_over_cold_at_least)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((c, _)) = bought {
        let _ = writeln!(
            out,
            "- The cache bought the most capacity for **{}**: {} {} within the SLO warm against {} cold ({}){}.",
            c.scenario,
            c.warm.as_ref().map_or_else(|| "-".into(), kvbench_common::sweep::shown),
            c.dimension.unit(),
            kvbench_common::sweep::shown(&c.cold),
            kvbench_common::sweep::shown_ratio(c.warm_over_cold, c.warm_over_cold_at_least),
            c.baseline
                .as_ref()
                .filter(|b| b.ratio.or(b.ratio_at_least).is_some())
                .map(|b| format!(
                    "; {} the capacity of {}",
                    kvbench_common::sweep::shown_ratio(b.ratio, b.ratio_at_least),
                    b.scenario
                ))
                .unwrap_or_default()
        );
    }
    super::efficiency::conclusion(out, saved);
    let mut compared: Vec<(&str, f64, &ScenarioStats)> = ran(saved)
        .filter_map(|(n, st)| Some((n, st.comparison.as_ref()?.ttft_reduction_pct?, st)))
        .collect();
    compared.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let (Some(best), Some(worst)) = (compared.first(), compared.last()) {
        let ttfts = |st: &ScenarioStats| {
            (
                f(first(st).and_then(|r| r.latency.ttft.mean), 1),
                f(last(st).and_then(|r| r.latency.ttft.mean), 1),
            )
        };
        let (b1, b2) = ttfts(best.2);
        let _ = writeln!(
            out,
            "- The cache did most for **{}**: mean TTFT {b1} ms in round 1, {b2} ms in the last round ({:.1}% lower).",
            best.0, best.1
        );
        if compared.len() > 1 {
            let (w1, w2) = ttfts(worst.2);
            let _ = writeln!(
                out,
                "- It did least for **{}**: {w1} ms, then {w2} ms ({:.1}%).",
                worst.0, worst.1
            );
        }
    } else {
        out.push_str("- No scenario has two complete rounds to compare.\n");
    }
    if !checked.is_empty() {
        let missed: Vec<String> = checked
            .iter()
            .filter(|(_, rs)| rs.iter().any(|r| !r.met))
            .map(|(n, rs)| {
                let which: Vec<String> = rs
                    .iter()
                    .filter(|r| !r.met)
                    .map(|r| format!("`{}`", r.target))
                    .collect();
                format!("{n} ({})", which.join(", "))
            })
            .collect();
        let _ = writeln!(
            out,
            "- Targets: {} of {} scenarios met all of theirs{}",
            checked.len() - missed.len(),
            checked.len(),
            if missed.is_empty() {
                ".".to_owned()
            } else {
                format!("; missed: {}.", missed.join("; "))
            }
        );
    }
    let anomalies = anomalies(saved);
    if anomalies.is_empty() {
        out.push_str("- Nothing to distrust: no failed isolation, no saturated load generator, no failed request, no failed scenario.\n");
    }
    for a in anomalies {
        let _ = writeln!(out, "- {a}");
    }
    out.push('\n');
}

/// What a reader should distrust, each with its figures.
fn anomalies(saved: &SavedRun) -> Vec<String> {
    let mut out = Vec::new();
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        match st {
            Err(why) if s.status.is_some() => {
                out.push(format!(
                    "**{}**: its results cannot be read ({why}).",
                    s.name
                ));
            }
            Err(crate::output::saved::NoStats::NotNeeded) => {}
            Err(_) => out.push(format!("**{}** did not run.", s.name)),
            Ok(st) => out.extend(scenario_anomalies(&s.name, st)),
        }
    }
    out
}

fn scenario_anomalies(name: &str, st: &ScenarioStats) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(i) = &st.interruption {
        out.push(format!("**{name}**: {}.", cell(i)));
    }
    for f in &st.engine_failures {
        let then = match &f.restart {
            None => "the agent reported it and the round went on (on_engine_failure: report); its failed requests are in the round's counts".to_owned(),
            Some(r) if r.succeeded && !f.set_aside.is_empty() => format!(
                "the agent restarted it in {:.1} s and the scenario ran again from round 1; the {} round(s) of the attempt are set aside (results: discarded_records)",
                r.took_ms / 1000.0,
                f.set_aside.len()
            ),
            Some(r) if r.succeeded => format!("the agent restarted it in {:.1} s", r.took_ms / 1000.0),
            Some(r) => format!(
                "the agent's restart failed ({}: {})",
                r.error.as_deref().unwrap_or("error"),
                cell(&r.detail)
            ),
        };
        out.push(format!(
            "**{name}** round {}: the engine of {} went down {:.1} s in ({}); {then}.",
            f.round,
            cell(&f.agent),
            f.at_ms / 1000.0,
            cell(&f.detail)
        ));
    }
    for r in st.rounds.iter().filter(|r| !r.resumed.is_empty()) {
        out.push(format!(
            "**{name}** round {}: the stream broke and was resumed where it broke {} time(s), nothing lost ({}).",
            r.round,
            r.resumed.len(),
            cell(&r.resumed.join("; "))
        ));
    }
    if matches!(
        st.status,
        ScenarioStatus::Failed
            | ScenarioStatus::Cancelled
            | ScenarioStatus::Degraded
            | ScenarioStatus::Partial
    ) {
        out.push(format!(
            "**{name}** {}: {}.",
            st.status,
            st.error.as_deref().unwrap_or("no error recorded")
        ));
    }
    if st.isolation.verdict == Verdict::Failed {
        let why = match st.isolation.warm_summary() {
            s if s.is_empty() => st.isolation.evidence.first().cloned().unwrap_or_default(),
            s => s,
        };
        out.push(format!(
            "**{name}**: round 1 was not a cold start ({}); its TTFT reduction understates what the cache buys.",
            why
        ));
    }
    for r in &st.rounds {
        if r.generator_saturated {
            let why = r.agent_health.as_ref().map_or(String::new(), |h| {
                format!("{}; {}", h.saturation_reason, h.scheduling_hint())
            });
            out.push(format!(
                "**{name}** round {}: the load generator was saturated ({why}); its latencies include the harness's own lag.",
                r.round
            ));
        }
        if r.failed > 0 {
            let worst = r
                .outcomes
                .iter()
                .filter(|(o, _)| o.label() != "ok")
                .max_by_key(|(_, n)| **n)
                .map_or(String::new(), |(o, n)| {
                    format!(", most often {} ({n})", o.label())
                });
            out.push(format!(
                "**{name}** round {}: {} of {} requests failed{worst}.",
                r.round,
                r.failed,
                r.completed + r.failed
            ));
        }
    }
    let agents = std::iter::once(&st.agent).chain(&st.agents);
    for a in agents {
        if let Some(w) = &a.clock_warning {
            out.push(format!("**{name}**: agent {}: {w}.", a.name));
        }
    }
    out
}

fn details(out: &mut String, saved: &SavedRun, charts: Option<&Charts>) {
    out.push_str("## Scenario details\n\n");
    for (name, st) in ran(saved) {
        let info = &st.scenario;
        let _ = writeln!(out, "### {name}\n");
        let _ = writeln!(
            out,
            "- `{}` from `{}`, {} rounds, concurrency {}; status {}{}",
            info.kind,
            info.config_file,
            info.rounds,
            info.concurrency,
            st.status,
            st.error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({})", cell(e)))
        );
        let _ = writeln!(
            out,
            "- engine {} (model {}), agent {} on {}",
            or_unknown(&st.engine.engine_url),
            or_unknown(&st.engine.model),
            or_unknown(&st.agent.name),
            or_unknown(&st.agent.hostname),
        );
        if st.rounds.is_empty() {
            out.push_str("- no round ran\n\n");
            continue;
        }
        detail_table(out, st);
        if let Some((c, file)) = charts.and_then(|c| Some((c, c.cdfs.get(name)?))) {
            let _ = writeln!(
                out,
                "![TTFT distribution of {}]({}/{file})\n",
                cell(name),
                c.folder
            );
        }
    }
}

type Row = (&'static str, fn(&RoundStats) -> String);

const ROWS: &[Row] = &[
    ("requests ok / failed", |r| {
        format!("{} / {}", r.completed, r.failed)
    }),
    ("duration s", |r| f(Some(r.duration), 2)),
    ("TTFT mean ms", |r| f(r.latency.ttft.mean, 2)),
    ("TTFT median ms", |r| f(r.latency.ttft.median, 2)),
    ("TTFT p99 ms", |r| f(r.latency.ttft.p99(), 2)),
    ("TTFT max ms", |r| f(r.latency.ttft.max, 2)),
    ("TPOT mean ms", |r| f(r.latency.tpot.mean, 2)),
    ("TPOT p99 ms", |r| f(r.latency.tpot.p99(), 2)),
    ("ITL median ms", |r| f(r.latency.itl.median, 2)),
    ("ITL p99 ms", |r| f(r.latency.itl.p99(), 2)),
    ("E2E mean ms", |r| f(r.latency.e2el.mean, 1)),
    ("E2E p99 ms", |r| f(r.latency.e2el.p99(), 1)),
    ("requests/s", |r| f(Some(r.request_throughput), 2)),
    ("output tokens/s", |r| f(Some(r.output_throughput), 1)),
    ("input / output tokens", |r| {
        format!("{} / {}", r.total_input_tokens, r.total_output_tokens)
    }),
    ("cache hit (client)", |r| ratio(r.cache_hit_ratio)),
    ("cache hit (engine counters)", |r| {
        ratio(
            r.engine_metrics
                .as_ref()
                .and_then(|e| e.prefix_cache_hit_rate),
        )
    }),
    ("most requests at once", |r| {
        r.max_concurrent_requests.to_string()
    }),
    ("first wave TTFT mean ms / after it", |r| {
        r.first_wave.as_ref().map_or("-".to_owned(), |w| {
            format!("{:.1} / {:.1}", w.mean_ttft_ms, w.steady_mean_ttft_ms)
        })
    }),
    ("GPU util mean", |r| {
        pct(r
            .telemetry
            .as_ref()
            .and_then(|t| t.gpu.as_ref())
            .and_then(|g| g.util_mean_pct))
    }),
    ("GPU energy J", |r| {
        f(
            r.telemetry
                .as_ref()
                .and_then(|t| t.gpu.as_ref())
                .and_then(|g| g.energy_j),
            1,
        )
    }),
    ("load generator", |r| {
        if r.generator_saturated {
            "**saturated**".to_owned()
        } else {
            "kept up".to_owned()
        }
    }),
];

fn detail_table(out: &mut String, st: &ScenarioStats) {
    out.push_str("\n| figure |");
    for r in &st.rounds {
        let _ = write!(out, " round {} |", r.round);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(st.rounds.len()));
    out.push('\n');
    for (label, value) in ROWS {
        let _ = write!(out, "| {label} |");
        for r in &st.rounds {
            let _ = write!(out, " {} |", value(r));
        }
        out.push('\n');
    }
    out.push('\n');
}

/// A field of a stats file, or `?` when it was not written.
fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "?"
    } else {
        s
    }
}
