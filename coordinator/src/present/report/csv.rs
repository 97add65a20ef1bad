//! `kvbench report RUN_DIR --csv`: the per-round statistics of a saved run in long form,
//! one figure per line (`run,agent,scenario,round,repeat,metric,statistic,value,unit`), for
//! spreadsheets and dataframes. A split scenario has its merged rows (agent `all`) and each
//! agent's part.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kvbench_common::results::{LatencyMetric, RoundStats};
use kvbench_common::stats::pct_label;

use crate::output::SavedRun;

pub const HEADER: &str = "run,agent,scenario,round,repeat,metric,statistic,value,unit";

/// A text cell that a spreadsheet would run as a formula (it begins with `=`, `+`, `-`,
/// `@`, a tab or a carriage return) gets a leading `'`, OWASP's rule against CSV
/// injection: a scenario named `=HYPERLINK(...)` is shown, never evaluated. Figures are
/// numbers and never need it.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// Where one round's figures belong.
struct Key<'a> {
    run: &'a str,
    agent: &'a str,
    scenario: &'a str,
    round: u32,
    repeat: u32,
}

/// `(metric, statistic, value, unit)` of one round, the figures that it has.
fn figures(r: &RoundStats) -> Vec<(String, String, f64, &'static str)> {
    let mut out = Vec::new();
    let mut push = |metric: &str, stat: &str, v: Option<f64>, unit: &'static str| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            out.push((metric.to_owned(), stat.to_owned(), v, unit));
        }
    };
    for m in LatencyMetric::ALL {
        let s = r.latency.metric(m);
        let name = m.key().trim_end_matches("_ms");
        for (stat, v) in [
            ("mean", s.mean),
            ("median", s.median),
            ("std", s.std),
            ("min", s.min),
            ("max", s.max),
        ] {
            push(name, stat, v, "ms");
        }
        for &(q, v) in &s.percentiles {
            push(name, &format!("p{}", pct_label(q)), v, "ms");
        }
    }
    let value = "value";
    push("completed", value, Some(f64::from(r.completed)), "requests");
    push("failed", value, Some(f64::from(r.failed)), "requests");
    push("duration", value, Some(r.duration), "s");
    push(
        "request_throughput",
        value,
        Some(r.request_throughput),
        "req/s",
    );
    push(
        "output_throughput",
        value,
        Some(r.output_throughput),
        "tok/s",
    );
    push(
        "total_token_throughput",
        value,
        Some(r.total_token_throughput),
        "tok/s",
    );
    push("cache_hit_ratio", value, r.cache_hit_ratio, "ratio");
    let eff = r.cache_efficiency.as_ref();
    push(
        "perfect_cache_hit_ratio",
        value,
        eff.map(|e| e.perfect_hit_ratio),
        "ratio",
    );
    push(
        "cache_efficiency",
        value,
        eff.and_then(|e| e.efficiency),
        "ratio",
    );
    let tiers = r.cache_tiers.as_ref();
    push(
        "cache_tier_device",
        value,
        tiers.and_then(|t| {
            t.device_tokens
                .or_else(|| t.requests.as_ref().map(|q| q.device_tokens as f64))
        }),
        "tokens",
    );
    push(
        "cache_tier_external",
        value,
        tiers.and_then(|t| t.external_tokens),
        "tokens",
    );
    let hicache = tiers.and_then(|t| t.requests.as_ref());
    push(
        "cache_tier_host",
        value,
        hicache.map(|q| q.host_tokens as f64),
        "tokens",
    );
    push(
        "cache_tier_storage",
        value,
        hicache.and_then(|q| q.storage_tokens).map(|s| s as f64),
        "tokens",
    );
    let lmcache = tiers.and_then(|t| t.lmcache.as_ref());
    push(
        "lmcache_hit_tokens",
        value,
        lmcache.and_then(|l| l.hit_tokens),
        "tokens",
    );
    let mooncake = tiers.and_then(|t| t.mooncake.as_ref());
    push(
        "mooncake_evicted_keys",
        value,
        mooncake.and_then(|m| m.evicted_keys),
        "count",
    );
    push(
        "max_concurrent_requests",
        value,
        Some(f64::from(r.max_concurrent_requests)),
        "requests",
    );
    let engine = r.engine_metrics.as_ref();
    push(
        "engine_prefix_cache_hit_ratio",
        value,
        engine.and_then(|e| e.prefix_cache_hit_rate),
        "ratio",
    );
    push(
        "engine_preemptions",
        value,
        engine.and_then(|e| e.preemptions),
        "count",
    );
    let gpu = r.telemetry.as_ref().and_then(|t| t.gpu.as_ref());
    push("gpu_util", "mean", gpu.and_then(|g| g.util_mean_pct), "%");
    push("gpu_util", "max", gpu.and_then(|g| g.util_max_pct), "%");
    push(
        "gpu_mem_used",
        "peak",
        gpu.and_then(|g| g.mem_used_peak_bytes),
        "bytes",
    );
    push("gpu_power", "mean", gpu.and_then(|g| g.power_mean_w), "W");
    push("gpu_energy", value, gpu.and_then(|g| g.energy_j), "J");
    push(
        "energy_per_output_token",
        value,
        gpu.and_then(|g| g.j_per_output_token),
        "J/token",
    );
    out
}

fn rows(out: &mut csv::Writer<Vec<u8>>, key: &Key, r: &RoundStats) -> csv::Result<()> {
    for (metric, stat, v, unit) in figures(r) {
        out.write_record([
            text(key.run).as_ref(),
            &text(key.agent),
            &text(key.scenario),
            &key.round.to_string(),
            &key.repeat.to_string(),
            &text(&metric),
            &text(&stat),
            &v.to_string(),
            &text(unit),
        ])?;
    }
    Ok(())
}

/// The CSV text of a saved run.
pub fn render(saved: &SavedRun) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing into memory fails only on a field the writer cannot take, which none is.
    let _ = out.write_record(HEADER.split(','));
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        let Ok(st) = st else { continue };
        let split = !st.agents.is_empty();
        let agent = if split { "all" } else { st.agent.name.as_str() };
        for r in &st.rounds {
            let key = Key {
                run: &saved.run.timestamp,
                agent,
                scenario: &s.name,
                round: r.round,
                repeat: 1,
            };
            let _ = rows(&mut out, &key, r);
            for (name, part) in &r.per_agent {
                let _ = rows(&mut out, &Key { agent: name, ..key }, part);
            }
        }
    }
    // A swept scenario's capacities: metric `capacity`, statistic `cold`, `warm` or
    // `baseline`, in the sweep's unit; ratios as `capacity_ratio`. A bound (`>=`, `<`)
    // has no row: its figure is not a capacity.
    for c in super::capacity::capacities(saved) {
        let unit = match c.dimension {
            kvbench_common::plan::SweepDimension::Concurrency => "concurrency",
            kvbench_common::plan::SweepDimension::RequestRate => "req/s",
        };
        let interpolated = |cap: &kvbench_common::stats::capacity::Capacity| {
            cap.load
                .filter(|_| cap.bound == kvbench_common::stats::capacity::Bound::Interpolated)
        };
        let warm = c.warm.as_ref();
        for (round, stat, v, unit) in [
            (1, "cold", interpolated(&c.cold), unit),
            (c.last_round, "warm", warm.and_then(interpolated), unit),
            (
                c.last_round,
                "baseline",
                c.baseline.as_ref().and_then(|b| interpolated(&b.capacity)),
                unit,
            ),
            (c.last_round, "warm_over_cold", c.warm_over_cold, "ratio"),
            (
                c.last_round,
                "against_baseline",
                c.baseline.as_ref().and_then(|b| b.ratio),
                "ratio",
            ),
        ] {
            let Some(v) = v.filter(|v| v.is_finite()) else {
                continue;
            };
            let metric = if unit == "ratio" {
                "capacity_ratio"
            } else {
                "capacity"
            };
            let _ = out.write_record([
                text(&saved.run.timestamp).as_ref(),
                "all",
                &text(&c.scenario),
                &round.to_string(),
                "1",
                metric,
                stat,
                &v.to_string(),
                unit,
            ]);
        }
    }
    String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Writes `multi_scenario_stats_<ts>.csv` into `dir`.
pub fn write(dir: &Path, saved: &SavedRun) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("multi_scenario_stats_{}.csv", saved.run.timestamp));
    std::fs::write(&path, render(saved))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_shown_never_run() {
        assert_eq!(text("ttft"), "ttft");
        assert_eq!(
            text("=HYPERLINK(\"http://x\",\"y\")"),
            "'=HYPERLINK(\"http://x\",\"y\")"
        );
        for s in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(text(s).starts_with('\''), "{s}");
        }
        assert_eq!(text("腾讯云-单机多卡"), "腾讯云-单机多卡");
    }
}
