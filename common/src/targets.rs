//! Targets a scenario must meet (`targets:` in the plan, plan-wide and per scenario): a
//! figure of the scenario's results, an operator and a threshold, such as
//! `ttft_reduction_pct: ">= 50"` or `p99_ttft_ms: "<= 2000"`. The report says of each
//! whether it was met, and how many scenarios met all of theirs.

use serde::{Deserialize, Serialize};

use crate::results::{LatencyMetric, RoundStats, ScenarioStats};

/// How a figure compares with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">")]
    Above,
    #[serde(rename = "<")]
    Below,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::AtLeast => ">=",
            Op::AtMost => "<=",
            Op::Above => ">",
            Op::Below => "<",
        }
    }

    pub fn holds(self, actual: f64, threshold: f64) -> bool {
        match self {
            Op::AtLeast => actual >= threshold,
            Op::AtMost => actual <= threshold,
            Op::Above => actual > threshold,
            Op::Below => actual < threshold,
        }
    }
}

/// The figures a target may name besides the latency keys, with what each is.
pub const FIGURES: &[(&str, &str)] = &[
    (
        "ttft_reduction_pct",
        "mean TTFT of the last round against round 1, % lower",
    ),
    (
        "median_ttft_reduction_pct",
        "median TTFT of the last round against round 1, % lower",
    ),
    (
        "throughput_increase_pct",
        "output tokens/s of the last round against round 1, % higher",
    ),
    (
        "cache_hit_ratio",
        "cached / input tokens of the last round (0-1)",
    ),
    (
        "error_rate",
        "failed / sent requests of the worst round (0-1)",
    ),
    ("request_throughput", "requests/s of the last round"),
    ("output_throughput", "output tokens/s of the last round"),
];

/// One target: `metric op value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub metric: String,
    pub op: Op,
    pub value: f64,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op.symbol(), self.value)
    }
}

/// A target that does not parse, saying what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not a figure a target can name: use one of {figures}, or a latency figure of the last round such as p99_ttft_ms, mean_tpot_ms or median_e2el_ms (<mean|median|std|min|max|pNN>_<ttft_ms|tpot_ms|itl_ms|e2el_ms|queue_ms>)", figures = FIGURES.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "))]
    UnknownFigure(String),
    #[error("{0:?} must start with >=, <=, > or <, then a number, as \">= 50\"")]
    NoOperator(String),
    #[error("{condition:?}: {value:?} is not a number")]
    NotANumber { condition: String, value: String },
}

impl Target {
    /// `metric` with its condition as written in the plan (`">= 50"`); the error says what
    /// would be valid.
    pub fn parse(metric: &str, condition: &str) -> Result<Target, TargetError> {
        if !is_figure(metric) {
            return Err(TargetError::UnknownFigure(metric.to_owned()));
        }
        let c = condition.trim();
        let (op, rest) = [
            (">=", Op::AtLeast),
            ("<=", Op::AtMost),
            (">", Op::Above),
            ("<", Op::Below),
        ]
        .into_iter()
        .find_map(|(s, op)| c.strip_prefix(s).map(|rest| (op, rest)))
        .ok_or_else(|| TargetError::NoOperator(condition.to_owned()))?;
        let value: f64 = rest
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| TargetError::NotANumber {
                condition: condition.to_owned(),
                value: rest.trim().to_owned(),
            })?;
        Ok(Target {
            metric: metric.to_owned(),
            op,
            value,
        })
    }

    /// Whether a scenario met it; a figure its results do not have is not met.
    pub fn check(&self, stats: &ScenarioStats) -> TargetResult {
        let actual = figure(&self.metric, stats);
        TargetResult {
            target: self.clone(),
            actual,
            met: actual.is_some_and(|a| self.op.holds(a, self.value)),
        }
    }
}

/// A target checked against a scenario's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub target: Target,
    /// The figure; none when the results do not have it (a round that did not run, an
    /// engine that reports no cached tokens, a percentile that was not computed).
    pub actual: Option<f64>,
    pub met: bool,
}

/// `<stat>_<metric>`: `p99_ttft_ms`, `mean_tpot_ms`, `p99.9_itl_ms`.
fn is_latency_key(key: &str) -> bool {
    let Some((stat, metric)) = key.split_once('_') else {
        return false;
    };
    let stat_ok = matches!(stat, "mean" | "median" | "std" | "min" | "max")
        || stat
            .strip_prefix('p')
            .and_then(|q| q.parse::<f64>().ok())
            .is_some_and(|q| (0.0..=100.0).contains(&q));
    stat_ok && LatencyMetric::from_key(metric).is_some()
}

/// The figures of one round besides the latency keys: what a service-level objective
/// (`slo:`) may name.
pub const ROUND_FIGURES: &[&str] = &[
    "error_rate",
    "cache_hit_ratio",
    "request_throughput",
    "output_throughput",
];

/// A figure of one round (`slo:` may name it).
pub fn is_round_figure(key: &str) -> bool {
    ROUND_FIGURES.contains(&key) || is_latency_key(key)
}

/// A figure of one round: a latency key, a throughput, its error rate (failed / sent) or
/// its cache hit ratio; none when the round does not have it.
pub fn round_figure(key: &str, r: &RoundStats) -> Option<f64> {
    match key {
        "error_rate" => {
            let sent = r.completed + r.failed;
            (sent > 0).then(|| f64::from(r.failed) / f64::from(sent))
        }
        "cache_hit_ratio" => r.cache_hit_ratio,
        "request_throughput" => Some(r.request_throughput),
        "output_throughput" => Some(r.output_throughput),
        k => r
            .latency
            .flat()
            .get(k)
            .copied()
            .flatten()
            .or_else(|| from_histogram(k, r)),
    }
}

/// A percentile the stats file does not list (`percentiles:` left it out), from the
/// round's histogram of that metric.
fn from_histogram(key: &str, r: &RoundStats) -> Option<f64> {
    let (stat, metric) = key.split_once('_')?;
    let q: f64 = stat.strip_prefix('p')?.parse().ok()?;
    let h = crate::stats::LatencyHistogram::from_base64(r.histograms.get(metric)?)?;
    (!h.is_empty()).then(|| h.percentile_ms(q))
}

/// A name a target may use.
pub fn is_figure(key: &str) -> bool {
    FIGURES.iter().any(|(k, _)| *k == key) || is_latency_key(key)
}

/// The last round that ran (the one a cache is meant to help).
fn last_round(stats: &ScenarioStats) -> Option<&RoundStats> {
    stats.rounds.iter().max_by_key(|r| r.round)
}

/// The figure a target names, from a scenario's results.
pub fn figure(key: &str, stats: &ScenarioStats) -> Option<f64> {
    let last = last_round(stats);
    let c = stats.comparison.as_ref();
    match key {
        "ttft_reduction_pct" => c?.ttft_reduction_pct,
        "median_ttft_reduction_pct" => c?.median_ttft_reduction_pct,
        "throughput_increase_pct" => c?.throughput_increase_pct,
        "cache_hit_ratio" => last?.cache_hit_ratio,
        "request_throughput" => last.map(|r| r.request_throughput),
        "output_throughput" => last.map(|r| r.output_throughput),
        "error_rate" => stats
            .rounds
            .iter()
            .filter(|r| r.completed + r.failed > 0)
            .map(|r| f64::from(r.failed) / f64::from(r.completed + r.failed))
            .reduce(f64::max),
        k => last?.latency.flat().get(k).copied().flatten(),
    }
}

/// The targets of a scenario: the plan's, with the scenario's own in place of any of the
/// same figure.
pub fn merged(plan: &[Target], scenario: &[Target]) -> Vec<Target> {
    let mut out: Vec<Target> = plan
        .iter()
        .filter(|t| !scenario.iter().any(|s| s.metric == t.metric))
        .cloned()
        .collect();
    out.extend(scenario.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::{IsolationInfo, IsolationStatus};
    use crate::plan::IsolationPolicy;
    use crate::record::{Outcome, RequestRecord};
    use crate::results::{Comparison, ScenarioInfo, ScenarioStatus};
    use crate::stats::StatsOptions;

    fn rec(id: u32, ttft: f64, cached: u32, outcome: Outcome) -> RequestRecord {
        RequestRecord {
            chunk_offsets_ms: vec![ttft, ttft + 10.0],
            cached_tokens: Some(cached),
            outcome,
            ..RequestRecord::for_test(id, 0.0, ttft, ttft + 10.0)
        }
    }

    /// Round 1: TTFT 100 ms, nothing cached; round 2: TTFT 20 ms, 90 of 100 tokens cached,
    /// one request of ten failed.
    fn stats() -> ScenarioStats {
        let opts = StatsOptions::default();
        let r1: Vec<RequestRecord> = (0..10).map(|i| rec(i, 100.0, 0, Outcome::Ok)).collect();
        let r2: Vec<RequestRecord> = (0..10)
            .map(|i| match i {
                9 => rec(i, 20.0, 90, Outcome::Http5xx),
                _ => rec(i, 20.0, 90, Outcome::Ok),
            })
            .collect();
        let rounds = vec![
            RoundStats::from_records(1, 1.0, &r1, &opts),
            RoundStats::from_records(2, 1.0, &r2, &opts),
        ];
        ScenarioStats {
            kvbench_version: "test".into(),
            scenario: ScenarioInfo {
                name: "s".into(),
                kind: "cold_start".into(),
                config_file: "c.yaml".into(),
                rounds: 2,
                concurrency: 1,
                tokenizer: String::new(),
                split_across: Vec::new(),
                repeat: None,
                sweep: None,
            },
            status: ScenarioStatus::Completed,
            error: None,
            started_at: String::new(),
            finished_at: String::new(),
            engine: Default::default(),
            agent: Default::default(),
            agents: Vec::new(),
            isolation: IsolationInfo::new(
                IsolationPolicy::Clear,
                IsolationStatus::Cleared,
                String::new(),
            ),
            comparison: Comparison::of(&rounds),
            rounds,
            interruption: None,
            engine_failures: Vec::new(),
        }
    }

    #[test]
    fn every_operator_parses_and_holds_as_written() {
        for (cond, op) in [
            (">= 80", Op::AtLeast),
            ("<=80", Op::AtMost),
            ("> 80", Op::Above),
            (" < 80 ", Op::Below),
        ] {
            let t = Target::parse("ttft_reduction_pct", cond).expect(cond);
            assert_eq!((t.op, t.value), (op, 80.0), "{cond}");
        }
        // ttft_reduction_pct is exactly 80 here: on the boundary only >= and <= hold.
        let s = stats();
        let met = |cond: &str| {
            Target::parse("ttft_reduction_pct", cond)
                .expect(cond)
                .check(&s)
                .met
        };
        assert!(met(">= 80") && met("<= 80") && !met("> 80") && !met("< 80"));
        assert!(met("> 79.9") && met("< 80.1"));
    }

    #[test]
    fn bad_targets_say_what_would_be_valid() {
        let e = Target::parse("ttft_reduction", ">= 50")
            .expect_err("unknown figure")
            .to_string();
        assert!(
            e.contains("ttft_reduction_pct") && e.contains("p99_ttft_ms"),
            "{e}"
        );
        let e = Target::parse("p99_ttft_ms", "2000")
            .expect_err("no operator")
            .to_string();
        assert!(e.contains(">=, <=, > or <"), "{e}");
        let e = Target::parse("p99_ttft_ms", "<= fast")
            .expect_err("no number")
            .to_string();
        assert!(e.contains("not a number"), "{e}");
        assert!(Target::parse("p99.9_itl_ms", "< 5").is_ok());
        assert!(Target::parse("p101_itl_ms", "< 5").is_err());
        assert!(Target::parse("mean_ttft", "< 5").is_err());
    }

    #[test]
    fn each_figure_comes_from_the_right_place() {
        let s = stats();
        let close = |k: &str, want: f64| {
            let got = figure(k, &s).unwrap_or_else(|| panic!("{k} missing"));
            assert!((got - want).abs() < 1e-6, "{k}: {got} vs {want}");
        };
        close("ttft_reduction_pct", 80.0);
        close("median_ttft_reduction_pct", 80.0);
        close("cache_hit_ratio", 0.9);
        close("error_rate", 0.1);
        close("request_throughput", 9.0);
        close("output_throughput", 18.0);
        // Round 1 output 20 tokens/s, the last round 18: -10 %.
        close("throughput_increase_pct", -10.0);
        close("mean_ttft_ms", 20.0);
        close("p99_ttft_ms", 20.0);
        close("max_e2el_ms", 30.0);
        assert_eq!(figure("p95_ttft_ms", &s), Some(20.0));
        // Not computed (percentiles 50, 90, 95, 99 by default): not met, not an error.
        let t = Target::parse("p99.9_ttft_ms", "<= 100").expect("valid");
        let r = t.check(&s);
        assert_eq!((r.actual, r.met), (None, false));
    }

    #[test]
    fn a_scenario_target_replaces_the_plan_target_of_the_same_figure() {
        let plan = vec![
            Target::parse("error_rate", "<= 0.01").expect("valid"),
            Target::parse("p99_ttft_ms", "<= 2000").expect("valid"),
        ];
        let own = vec![Target::parse("p99_ttft_ms", "<= 500").expect("valid")];
        let m = merged(&plan, &own);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].metric, "error_rate");
        assert_eq!((m[1].metric.as_str(), m[1].value), ("p99_ttft_ms", 500.0));
    }
}
