//! `kvbench compare RUN_A RUN_B`: what changed from run A to run B, scenario by scenario
//! (matched by name) and metric by metric, with a bootstrap 95 % confidence interval of the
//! relative change. A change is called significant only when the bootstrap test rejects
//! "no change" at 0.05 *and* the whole interval lies beyond the noise threshold (as
//! criterion.rs decides regressions), so that a real but tiny difference is not a finding.
//!
//! Samples: this build keeps one set of rounds per scenario (no repeats), so the samples are
//! the requests of a round: a labelled fallback, because requests within one run are not
//! independent (they share the engine's state and its queue); the intervals are then
//! indicative. Throughput is one figure per round: it is shown, with no verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use kvbench_common::record::Outcome;
use kvbench_common::results::{RoundStats, ScenarioStats};
use kvbench_common::stats::intervals::{bootstrap_change, Change, Stat};
use serde::{Deserialize, Serialize};

use crate::output::{self, SavedRun};

/// A figure compared, by its name on the command line (`--fail-on ttft_p99`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    TtftMean,
    TtftP50,
    TtftP99,
    TpotMean,
    E2elMean,
    E2elP99,
    OutputThroughput,
    /// The round's hits over a perfect cache's (see `cache_efficiency` in the stats).
    CacheEfficiency,
    /// Prompt tokens the engine's KV connector tiers gave, over all prompt tokens.
    ExternalHitRatio,
}

/// What a request gives a metric: its TTFT, its TPOT or its end-to-end time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    Ttft,
    Tpot,
    E2el,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::TtftMean,
        Metric::TtftP50,
        Metric::TtftP99,
        Metric::TpotMean,
        Metric::E2elMean,
        Metric::E2elP99,
        Metric::OutputThroughput,
        Metric::CacheEfficiency,
        Metric::ExternalHitRatio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::TtftMean => "ttft_mean",
            Metric::TtftP50 => "ttft_p50",
            Metric::TtftP99 => "ttft_p99",
            Metric::TpotMean => "tpot_mean",
            Metric::E2elMean => "e2el_mean",
            Metric::E2elP99 => "e2el_p99",
            Metric::OutputThroughput => "output_throughput",
            Metric::CacheEfficiency => "cache_efficiency",
            Metric::ExternalHitRatio => "external_cache_hit_ratio",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether a higher value is better (throughput) or worse (latencies).
    fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::OutputThroughput | Metric::CacheEfficiency | Metric::ExternalHitRatio
        )
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::OutputThroughput => "tok/s",
            Metric::CacheEfficiency | Metric::ExternalHitRatio => "ratio",
            _ => "ms",
        }
    }

    /// The per-request samples and the statistic of them; none for a per-round figure.
    fn of_requests(self) -> Option<(Sample, Stat)> {
        Some(match self {
            Metric::TtftMean => (Sample::Ttft, Stat::Mean),
            Metric::TtftP50 => (Sample::Ttft, Stat::Quantile(50.0)),
            Metric::TtftP99 => (Sample::Ttft, Stat::Quantile(99.0)),
            Metric::TpotMean => (Sample::Tpot, Stat::Mean),
            Metric::E2elMean => (Sample::E2el, Stat::Mean),
            Metric::E2elP99 => (Sample::E2el, Stat::Quantile(99.0)),
            Metric::OutputThroughput | Metric::CacheEfficiency | Metric::ExternalHitRatio => {
                return None
            }
        })
    }
}

/// Fewer samples than this on a side: no verdict.
pub const MIN_SAMPLES: usize = 10;
/// Fewer repeats than this on a side: no verdict.
pub const MIN_REPEATS: usize = 3;

fn bootstrap(a: &[f64], b: &[f64], stat: Stat, seed: u64) -> Option<Change> {
    bootstrap_change(a, b, stat, seed, MIN_SAMPLES)
}

/// What the comparison says of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significant, and in the bad direction.
    Regressed,
    Improved,
    /// Within the noise threshold, or the test did not reject.
    NoChange,
    /// Fewer than [`MIN_SAMPLES`] on a side, or a per-round figure with no repeats.
    TooFewSamples,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Regressed => "REGRESSED",
            Verdict::Improved => "improved",
            Verdict::NoChange => "no significant change",
            Verdict::TooFewSamples => "too few samples for a verdict",
        }
    }
}

/// One row: a scenario's round and a metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub scenario: String,
    pub round: String,
    pub metric: Metric,
    pub unit: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub change: Option<Change>,
    pub samples: String,
    pub verdict: Verdict,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub run_a: String,
    pub run_b: String,
    pub noise_threshold_pct: f64,
    /// What differs between the runs' provenance (versions, files, engines, models, GPUs).
    pub provenance_differences: Vec<String>,
    /// Scenarios not compared, and why.
    pub not_compared: Vec<String>,
    pub rows: Vec<Row>,
}

/// Per round, the per-request samples of a scenario's results file.
type Samples = BTreeMap<u32, BTreeMap<&'static str, Vec<f64>>>;

/// Why a scenario of a run has no samples to compare.
#[derive(Debug, thiserror::Error)]
enum NoSamples {
    #[error("no results file was written")]
    NotWritten,
    #[error(transparent)]
    Unreadable(#[from] crate::output::saved::SavedFileError),
}

/// The per-request samples of a results file; an error when it cannot be read.
fn samples(dir: &Path, results_file: Option<&str>) -> Result<Samples, NoSamples> {
    let mut out = Samples::new();
    let Some(name) = results_file else {
        return Err(NoSamples::NotWritten);
    };
    let records = crate::output::saved::read_records(dir, name)?;
    for r in records {
        let (Outcome::Ok, false, Some(first)) = (r.outcome, r.warmup, r.first_token_ms) else {
            continue;
        };
        let m = out.entry(r.round).or_default();
        m.entry("ttft").or_default().push(first - r.sent_ms);
        m.entry("e2el").or_default().push(r.end_ms - r.sent_ms);
        if let Some(n) = r.output_tokens.filter(|n| *n > 1) {
            m.entry("tpot")
                .or_default()
                .push((r.end_ms - first) / f64::from(n - 1));
        }
    }
    Ok(out)
}

fn sample_key(s: Sample) -> &'static str {
    match s {
        Sample::Ttft => "ttft",
        Sample::Tpot => "tpot",
        Sample::E2el => "e2el",
    }
}

/// The rounds compared: round 1 and the last round, by the name shown.
fn rounds(st: &ScenarioStats) -> Vec<(String, u32)> {
    let mut out = vec![("round 1".to_owned(), 1)];
    if let Some(last) = st.rounds.iter().map(|r| r.round).max().filter(|r| *r > 1) {
        out.push((format!("last round ({last})"), last));
    }
    out
}

/// What differs between the runs' provenance.
fn provenance_differences(a: &SavedRun, b: &SavedRun) -> Vec<String> {
    let mut out = Vec::new();
    let (ra, rb) = (&a.run, &b.run);
    if ra.kvbench_version != rb.kvbench_version {
        out.push(format!(
            "kvbench {} vs {}",
            ra.kvbench_version, rb.kvbench_version
        ));
    }
    let files = |r: &output::RunFile| -> BTreeMap<String, Option<String>> {
        r.provenance
            .files
            .iter()
            .map(|f| {
                // By file name: runs made from different folders read the same files.
                let name = Path::new(&f.path)
                    .file_name()
                    .map_or(f.path.clone(), |n| n.to_string_lossy().into_owned());
                (format!("{} {name}", f.role), f.sha256.clone())
            })
            .collect()
    };
    diff(&files(ra), &files(rb), &mut out, |k, _, _| {
        format!("{k}: its content differs (SHA-256)")
    });
    let agents = |r: &output::RunFile| -> BTreeMap<String, String> {
        r.agents
            .iter()
            .map(|x| {
                (
                    x.name.clone(),
                    format!(
                        "engine {} {} models {} GPUs {}",
                        x.engine_kind,
                        x.engine_version,
                        x.engine_models.join(","),
                        x.gpus
                    ),
                )
            })
            .collect()
    };
    let named = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter()
            .map(|(k, v)| (format!("agent {k}"), v))
            .collect()
    };
    diff(
        &named(agents(ra)),
        &named(agents(rb)),
        &mut out,
        |k, a, b| format!("{k}: {a} vs {b}"),
    );
    out
}

/// What differs between two keyed maps: keys only in A, only in B, and values that differ
/// (said by `changed`).
fn diff<V: PartialEq>(
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
    out: &mut Vec<String>,
    changed: impl Fn(&str, &V, &V) -> String,
) {
    for (k, va) in a {
        match b.get(k) {
            None => out.push(format!("{k}: only in A")),
            Some(vb) if vb != va => out.push(changed(k, va, vb)),
            _ => {}
        }
    }
    out.extend(
        b.keys()
            .filter(|k| !a.contains_key(*k))
            .map(|k| format!("{k}: only in B")),
    );
}

/// Compares run B against run A.
pub fn compare(
    (dir_a, a): (&Path, &SavedRun),
    (dir_b, b): (&Path, &SavedRun),
    noise_threshold_pct: f64,
) -> Comparison {
    let mut c = Comparison {
        run_a: format!("{} ({})", dir_a.display(), a.run.timestamp),
        run_b: format!("{} ({})", dir_b.display(), b.run.timestamp),
        noise_threshold_pct,
        provenance_differences: provenance_differences(a, b),
        not_compared: Vec::new(),
        rows: Vec::new(),
    };
    let grouped = repeat_rows(&mut c, a, b, noise_threshold_pct);
    for (i, sa) in a.run.scenarios.iter().enumerate() {
        if sa
            .repeat
            .as_ref()
            .is_some_and(|r| grouped.contains(&r.scenario))
        {
            continue;
        }
        let Some(j) = b.run.scenarios.iter().position(|s| s.name == sa.name) else {
            c.not_compared.push(format!("{}: not in run B", sa.name));
            continue;
        };
        let sb = &b.run.scenarios[j];
        if sa.workload != sb.workload {
            c.not_compared.push(format!(
                "{}: the workloads differ ({} vs {})",
                sa.name,
                sa.workload.as_deref().unwrap_or("unknown"),
                sb.workload.as_deref().unwrap_or("unknown")
            ));
            continue;
        }
        let (Ok(st_a), Ok(st_b)) = (&a.stats[i], &b.stats[j]) else {
            c.not_compared
                .push(format!("{}: a run has no stats for it", sa.name));
            continue;
        };
        let mut read = |dir: &Path, file: Option<&str>, run: &str| {
            samples(dir, file).unwrap_or_else(|e| {
                c.not_compared.push(format!(
                    "{} in run {run}: {e}; its per-request figures have no samples",
                    sa.name
                ));
                Samples::new()
            })
        };
        let xa = read(dir_a, sa.results_file.as_deref(), "A");
        let xb = read(dir_b, sb.results_file.as_deref(), "B");
        for (label, round) in rounds(st_a) {
            let (Some(ra), Some(rb)) = (
                st_a.rounds.iter().find(|r| r.round == round),
                st_b.rounds.iter().find(|r| r.round == round),
            ) else {
                c.not_compared
                    .push(format!("{} {label}: not in both runs", sa.name));
                continue;
            };
            for (k, metric) in Metric::ALL.into_iter().enumerate() {
                let seed = (i as u64) << 32 | u64::from(round) << 8 | k as u64;
                let at = At {
                    scenario: &sa.name,
                    label: &label,
                    round,
                    seed,
                    noise: noise_threshold_pct,
                };
                let row = metric_row(&at, metric, (ra, rb), (&xa, &xb));
                c.rows.push(row);
            }
        }
    }
    for sb in &b.run.scenarios {
        if !a.run.scenarios.iter().any(|s| s.name == sb.name) {
            c.not_compared.push(format!("{}: not in run A", sb.name));
        }
    }
    c
}

/// Where a row belongs and how it is computed.
struct At<'a> {
    scenario: &'a str,
    label: &'a str,
    round: u32,
    seed: u64,
    noise: f64,
}

/// One metric of one round of a scenario in both runs.
fn metric_row(
    at: &At,
    metric: Metric,
    (ra, rb): (&RoundStats, &RoundStats),
    (xa, xb): (&Samples, &Samples),
) -> Row {
    let (round, seed, noise_threshold_pct, label) = (at.round, at.seed, at.noise, at.label);
    match metric.of_requests() {
        None => Row {
            scenario: at.scenario.to_owned(),
            round: label.to_owned(),
            metric,
            unit: metric.unit(),
            a: round_figure(ra, metric),
            b: round_figure(rb, metric),
            change: None,
            samples: "one figure per round (repeats would give samples)".into(),
            verdict: Verdict::TooFewSamples,
        },
        Some((sample, stat)) => {
            let empty = Vec::new();
            let pick = |x: &Samples| {
                x.get(&round)
                    .and_then(|m| m.get(sample_key(sample)))
                    .unwrap_or(&empty)
                    .clone()
            };
            let (va, vb) = (pick(xa), pick(xb));
            let change = bootstrap(&va, &vb, stat, seed);
            let value = |v: &[f64]| {
                let mut s = v.to_vec();
                s.sort_by(f64::total_cmp);
                (!s.is_empty()).then(|| stat.of_sorted(&s))
            };
            Row {
                scenario: at.scenario.to_owned(),
                round: label.to_owned(),
                metric,
                unit: metric.unit(),
                a: value(&va),
                b: value(&vb),
                change,
                samples: format!(
                    "{} vs {} requests (per-request fallback: not independent)",
                    va.len(),
                    vb.len()
                ),
                verdict: verdict(metric, change, noise_threshold_pct),
            }
        }
    }
}

/// A figure of one run of a scenario: the round's own statistic from its stats file.
fn round_figure(r: &RoundStats, metric: Metric) -> Option<f64> {
    let l = &r.latency;
    match metric {
        Metric::TtftMean => l.ttft.mean,
        Metric::TtftP50 => l.ttft.median,
        Metric::TtftP99 => l.ttft.p99(),
        Metric::TpotMean => l.tpot.mean,
        Metric::E2elMean => l.e2el.mean,
        Metric::E2elP99 => l.e2el.p99(),
        Metric::OutputThroughput => Some(r.output_throughput),
        Metric::CacheEfficiency => r.cache_efficiency.as_ref()?.efficiency,
        Metric::ExternalHitRatio => {
            let external = r.cache_tiers.as_ref()?.beyond_device()?;
            (r.total_input_tokens > 0).then(|| external / r.total_input_tokens as f64)
        }
    }
}

/// Scenarios with `repeats:` in both runs: the repeats are the samples (each run's figure
/// of the round), compared by their mean. Returns the scenarios so compared.
fn repeat_rows(c: &mut Comparison, a: &SavedRun, b: &SavedRun, noise: f64) -> Vec<String> {
    let (ga, gb) = (
        super::report::views::repeat_groups(a),
        super::report::views::repeat_groups(b),
    );
    let mut done = Vec::new();
    for (gi, (name, _, runs_a)) in ga.iter().enumerate() {
        let Some((_, _, runs_b)) = gb.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        let workload = |r: &SavedRun| {
            r.run
                .scenarios
                .iter()
                .find(|s| s.repeat.as_ref().is_some_and(|x| &x.scenario == name))
                .and_then(|s| s.workload.clone())
        };
        if workload(a) != workload(b) {
            c.not_compared.push(format!("{name}: the workloads differ"));
            done.push(name.clone());
            continue;
        }
        done.push(name.clone());
        let Some(first) = runs_a.first() else {
            continue;
        };
        for (label, round) in rounds(first) {
            for (k, metric) in Metric::ALL.into_iter().enumerate() {
                let values = |runs: &[&ScenarioStats]| -> Vec<f64> {
                    runs.iter()
                        .filter_map(|st| st.rounds.iter().find(|r| r.round == round))
                        .filter_map(|r| round_figure(r, metric))
                        .collect()
                };
                let (va, vb) = (values(runs_a), values(runs_b));
                let seed = (gi as u64) << 40 | u64::from(round) << 8 | k as u64;
                let change = bootstrap_change(&va, &vb, Stat::Mean, seed, MIN_REPEATS);
                let mean =
                    |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
                c.rows.push(Row {
                    scenario: name.clone(),
                    round: label.clone(),
                    metric,
                    unit: metric.unit(),
                    a: mean(&va),
                    b: mean(&vb),
                    change,
                    samples: format!("{} vs {} repeats", va.len(), vb.len()),
                    verdict: verdict(metric, change, noise),
                });
            }
        }
    }
    done
}

fn verdict(metric: Metric, change: Option<Change>, noise: f64) -> Verdict {
    let Some(c) = change else {
        return Verdict::TooFewSamples;
    };
    let rejects = c.p_value < 0.05;
    let beyond = c.ci_low_pct > noise || c.ci_high_pct < -noise;
    if !(rejects && beyond) {
        return Verdict::NoChange;
    }
    let up = c.ci_low_pct > noise;
    if up == metric.higher_is_better() {
        Verdict::Improved
    } else {
        Verdict::Regressed
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The comparison as a markdown document (also what the console shows).
pub fn markdown(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# kvbench compare\n\n- A: {}\n- B: {}\n- Significant: the bootstrap test rejects \"no change\" at 0.05 and the whole 95 % interval lies beyond ±{}%\n", c.run_a, c.run_b, c.noise_threshold_pct);
    out.push_str("## Provenance differences\n\n");
    if c.provenance_differences.is_empty() {
        out.push_str("None: same kvbench, files, engines, models and GPUs.\n\n");
    } else {
        for d in &c.provenance_differences {
            let _ = writeln!(out, "- {d}");
        }
        out.push('\n');
    }
    if !c.not_compared.is_empty() {
        out.push_str("## Not compared\n\n");
        for d in &c.not_compared {
            let _ = writeln!(out, "- {d}");
        }
        out.push('\n');
    }
    out.push_str("## Changes (B against A)\n\n| scenario | round | metric | A | B | change | 95% CI | p | verdict | samples |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &c.rows {
        let (change, ci, p) = match r.change {
            Some(ch) => (
                format!("{:+.1}%", ch.change_pct),
                format!("[{:+.1}%, {:+.1}%]", ch.ci_low_pct, ch.ci_high_pct),
                format!("{:.3}", ch.p_value),
            ),
            None => match (r.a, r.b) {
                (Some(a), Some(b)) if a > 0.0 => (
                    format!("{:+.1}%", (b - a) / a * 100.0),
                    "-".into(),
                    "-".into(),
                ),
                _ => ("-".into(), "-".into(), "-".into()),
            },
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {} | {change} | {ci} | {p} | {} | {} |",
            r.scenario.replace('|', "\\|"),
            r.round,
            r.metric.name(),
            r.unit,
            num(r.a),
            num(r.b),
            if r.verdict == Verdict::Regressed {
                format!("**{}**", r.verdict.label())
            } else {
                r.verdict.label().to_owned()
            },
            r.samples
        );
    }
    out
}

/// Options of `kvbench compare`.
#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_common::rng::Rng;

    fn normal(seed: u64, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| mean + sd * r.normal()).collect()
    }

    #[test]
    fn the_same_distribution_is_no_change_and_a_shift_is_found() {
        let a = normal(1, 400, 100.0, 10.0);
        let same = normal(2, 400, 100.0, 10.0);
        let c = bootstrap(&a, &same, Stat::Mean, 7).expect("enough samples");
        assert!(c.ci_low_pct < 0.0 && c.ci_high_pct > 0.0, "{c:?}");
        assert_eq!(verdict(Metric::TtftMean, Some(c), 3.0), Verdict::NoChange);

        let slower = normal(3, 400, 120.0, 10.0);
        let c = bootstrap(&a, &slower, Stat::Mean, 7).expect("enough samples");
        assert!((c.change_pct - 20.0).abs() < 3.0, "{c:?}");
        assert!(c.ci_low_pct > 15.0 && c.ci_high_pct < 25.0, "{c:?}");
        assert!(c.p_value < 0.01);
        assert_eq!(verdict(Metric::TtftMean, Some(c), 3.0), Verdict::Regressed);
        assert_eq!(
            verdict(Metric::OutputThroughput, Some(c), 3.0),
            Verdict::Improved
        );
        // A real 2 % shift inside a 3 % noise threshold is not a finding.
        let close = normal(4, 4000, 102.0, 1.0);
        let base = normal(5, 4000, 100.0, 1.0);
        let c = bootstrap(&base, &close, Stat::Quantile(50.0), 7).expect("enough");
        assert!(c.p_value < 0.05, "{c:?}");
        assert_eq!(verdict(Metric::TtftP50, Some(c), 3.0), Verdict::NoChange);
        assert_eq!(verdict(Metric::TtftP50, Some(c), 1.0), Verdict::Regressed);
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        assert_eq!(bootstrap(&[1.0; 9], &[2.0; 50], Stat::Mean, 1), None);
        assert_eq!(verdict(Metric::TtftMean, None, 3.0), Verdict::TooFewSamples);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(Stat::Quantile(50.0).of_sorted(&v), 2.5);
        assert!((Stat::Quantile(99.0).of_sorted(&v) - 3.97).abs() < 1e-12);
        assert_eq!(Stat::Mean.of_sorted(&v), 2.5);
    }
}
