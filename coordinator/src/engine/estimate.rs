//! How long a plan will take, before it runs (`kvbench validate`). The seed's rule: one
//! scenario takes requests x (TTFT + generation time) / concurrency per round, times its
//! rounds; the plan takes the scenarios plus their isolation and waits.
//!
//! The speed comes from, in order: the scenario's last run in the output folder (its
//! measured rounds), kvbench-sim's latency model for `endpoint: sim`, or stated
//! assumptions. Prompt and output lengths come from the workload as `kvbench workload
//! inspect` sees it (the first [`SAMPLE_REQUESTS`] requests, scaled), and the share of a
//! prompt a round must compute from inspect's perfect-cache model: round 1 computes what
//! its own requests do not share, later rounds what round 1 left uncached.

use std::path::{Path, PathBuf};

use kvbench_common::load::Rate;
use kvbench_common::plan::{Endpoint, IsolationPolicy, Plan, Scenario};

/// Requests of a workload looked at to size its prompts (bigger ones are scaled).
pub const SAMPLE_REQUESTS: u32 = 256;
/// Assumed where nothing was measured: prompt tokens computed per second, the fixed part
/// of a TTFT, and the time per output token.
pub const ASSUMED_PREFILL_TOKENS_PER_S: f64 = 5_000.0;
pub const ASSUMED_TTFT_BASE_MS: f64 = 50.0;
pub const ASSUMED_TPOT_MS: f64 = 30.0;
/// Assumed time of a clear (with its cold check) and of an engine restart.
pub const ASSUMED_CLEAR_S: f64 = 1.0;
pub const ASSUMED_RESTART_S: f64 = 60.0;

/// Where a scenario's speed comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Basis {
    /// Its rounds as measured in the output folder's stats file.
    Measured(PathBuf),
    /// kvbench-sim's default latency model.
    SimModel,
    /// The stated assumptions.
    Assumed,
}

impl std::fmt::Display for Basis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Basis::Measured(p) => write!(f, "measured in {}", p.display()),
            Basis::SimModel => f.write_str("kvbench-sim's latency model"),
            Basis::Assumed => write!(
                f,
                "assumed: prefill {ASSUMED_PREFILL_TOKENS_PER_S:.0} tokens/s + {ASSUMED_TTFT_BASE_MS:.0} ms, {ASSUMED_TPOT_MS:.0} ms per output token; a first run measures it"
            ),
        }
    }
}

/// One scenario's estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioEstimate {
    pub name: String,
    /// Its rounds.
    pub run_s: f64,
    /// Isolation before it and the wait after that.
    pub isolation_s: f64,
    pub basis: Basis,
}

/// The plan's estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEstimate {
    pub scenarios: Vec<ScenarioEstimate>,
}

impl PlanEstimate {
    pub fn total_s(&self) -> f64 {
        self.scenarios.iter().map(|s| s.run_s + s.isolation_s).sum()
    }
}

/// Estimates every scenario of `plan`.
pub fn plan(plan: &Plan) -> PlanEstimate {
    let scenarios = plan
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (run_s, basis) = match last_run(&plan.output_dir, &s.slug) {
                Some((path, seconds)) => (seconds, Basis::Measured(path)),
                None => modelled(s),
            };
            ScenarioEstimate {
                name: s.name.clone(),
                run_s,
                isolation_s: if i == 0 && !plan.isolate_before_first && s.sweep.is_none() {
                    0.0
                } else {
                    isolation_s(plan)
                },
                basis,
            }
        })
        .collect();
    PlanEstimate { scenarios }
}

fn isolation_s(plan: &Plan) -> f64 {
    let step = match plan.isolation {
        IsolationPolicy::Clear | IsolationPolicy::ClearOrRestart => ASSUMED_CLEAR_S,
        IsolationPolicy::Restart => ASSUMED_RESTART_S,
        IsolationPolicy::Wait | IsolationPolicy::None => 0.0,
    };
    let wait = if plan.isolation == IsolationPolicy::None {
        0.0
    } else {
        plan.wait_between_scenarios_s
    };
    step + wait
}

/// The latest stats file of the scenario in `dir` and the seconds its rounds took.
fn last_run(dir: &Path, slug: &str) -> Option<(PathBuf, f64)> {
    let (latest, stats) = crate::output::saved::latest_stats(dir, slug)?;
    let seconds: f64 = stats.rounds.iter().map(|r| r.duration).sum();
    (seconds > 0.0).then_some((latest, seconds))
}

/// The seed's rule with the workload's sizes and a modelled speed.
fn modelled(s: &Scenario) -> (f64, Basis) {
    let c = &s.config;
    let mut sample = c.clone();
    sample.workload.num_requests = c.workload.num_requests.min(SAMPLE_REQUESTS);
    let sized = super::inspect::inspect_config(&s.name, &sample, 16, None).ok();
    let input = sized
        .as_ref()
        .and_then(|i| i.input_tokens.as_ref())
        .map_or(0.0, |l| l.mean);
    let output = sized
        .as_ref()
        .and_then(|i| i.output_tokens.as_ref())
        .map_or(f64::from(c.workload.output_tokens), |l| l.mean);
    let (r1_hit, r2_hit) = sized
        .as_ref()
        .map_or((0.0, 0.0), |i| (i.round1_hit_ratio, i.round2_hit_ratio));
    let requests = f64::from(c.workload.num_requests.max(1));
    let in_flight = match &c.open_loop {
        Some(o) => o.max_concurrency.unwrap_or(s.concurrency),
        None => s.concurrency,
    }
    .max(1);
    let (basis, ttft_ms, tpot_ms) = if c.endpoint == Endpoint::Sim {
        let m = kvbench_sim::SimConfig::default();
        let ttft = move |tokens: f64| m.prefill_base_ms + tokens * m.prefill_per_token_us / 1000.0;
        let tpot = m.decode_base_ms + f64::from(in_flight) * m.decode_per_seq_us / 1000.0;
        (
            Basis::SimModel,
            Box::new(ttft) as Box<dyn Fn(f64) -> f64>,
            tpot,
        )
    } else {
        let ttft =
            |tokens: f64| ASSUMED_TTFT_BASE_MS + tokens / ASSUMED_PREFILL_TOKENS_PER_S * 1000.0;
        (Basis::Assumed, Box::new(ttft) as _, ASSUMED_TPOT_MS)
    };
    let mut total = 0.0;
    for round in 1..=s.rounds {
        let hit = if round == 1 { r1_hit } else { r2_hit };
        let per_request_s = (ttft_ms(input * (1.0 - hit)) + output * tpot_ms) / 1000.0;
        let closed = requests * per_request_s / f64::from(in_flight);
        let round_s = match (&c.open_loop, c.duration_s) {
            (_, Some(d)) => d,
            (Some(o), None) => match o.rate {
                Rate::Fixed(r) if r.is_finite() && r > 0.0 => {
                    (requests / r + per_request_s).max(closed)
                }
                Rate::Ramp { start, end, .. } if start + end > 0.0 => {
                    (requests / ((start + end) / 2.0) + per_request_s).max(closed)
                }
                _ => closed,
            },
            (None, None) => closed,
        };
        total += round_s;
    }
    (total, basis)
}

/// Minutes and seconds for people: `45 s`, `6.5 min`, `2.1 h`.
pub fn human(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// Why a scenario's name does not follow the seed's `<platform>-<deployment>-<model>`
/// (`Volcano-cross-node-DeepSeek-R1`), if it does not: reports compare scenarios by name.
pub fn name_warning(name: &str) -> Option<String> {
    // `each` names its copies `<name>@<agent>`: the agent stands for the platform.
    let parts: Vec<&str> = name
        .split(['-', '@'])
        .filter(|p| !p.trim().is_empty())
        .collect();
    let generic = {
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_' || c == '-');
        ["test", "scenario", "run", "case", "tmp", "foo", "demo"]
            .iter()
            .any(|g| base.eq_ignore_ascii_case(g))
    };
    if generic || parts.len() < 3 {
        Some(format!(
            "scenario name {name:?} does not say what it compares: name it <platform>-<deployment>-<model> (e.g. Volcano-cross-node-DeepSeek-R1), so that reports and charts read without the plan"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_say_what_they_compare() {
        for good in [
            "Volcano-cross-node-DeepSeek-R1",
            "腾讯云-单机多卡-Qwen2.5-72B",
            "sim-long-context-high-reuse",
            "long-context@dc-alpha",
        ] {
            assert_eq!(name_warning(good), None, "{good}");
        }
        for bad in ["test1", "test-1", "with-cache", "scenario_2", "r"] {
            assert!(name_warning(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(45.0), "45 s");
        assert_eq!(human(100.0), "1.7 min");
        assert_eq!(human(390.0), "6.5 min");
        assert_eq!(human(9000.0), "2.5 h");
    }
}
