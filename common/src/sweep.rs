//! What a load sweep shows: per swept scenario, the capacity of its round 1 (cold) and of
//! its last round (warm) at its `slo:`, their ratio, the capacity of its `baseline:` as
//! swept, and each point's figures, gathered from the points' stats files. The arithmetic
//! is [`crate::stats::capacity`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{SweepDimension, SweepPoint};
use crate::results::{RoundStats, ScenarioStats};
use crate::stats::capacity::{capacity, Capacity, Check, Point};
use crate::targets::{round_figure, Target};

/// One point as run: its scenario's name, its sweep point and its stats (none: it has
/// none).
pub type Run<'a> = (&'a str, &'a SweepPoint, Option<&'a ScenarioStats>);

/// A swept scenario's capacities and points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepCapacity {
    /// The swept scenario's name (its points are `<name>~c16`, ...).
    pub scenario: String,
    pub dimension: SweepDimension,
    pub slo: Vec<Target>,
    /// The last round of its points (the warm one); 1 when it runs one round.
    pub last_round: u32,
    /// Round 1's capacity: the cold start.
    pub cold: Capacity,
    /// The last round's capacity (none with one round).
    pub warm: Option<Capacity>,
    /// Warm capacity over cold, when both lie within the swept loads.
    pub warm_over_cold: Option<f64>,
    /// When one of them is a bound (warm `>= 64`): the least the ratio can be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_over_cold_at_least: Option<f64>,
    /// Its baseline's warm capacity (the baseline swept the same way), and this scenario's
    /// warm capacity over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineCapacity>,
    pub points: Vec<LoadPoint>,
    /// A `search:`: how far the bisection got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchOutcome>,
}

/// What a `search:` found: its bracket on the warm round, against the resolution it
/// stated before it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchOutcome {
    pub between: [f64; 2],
    /// The most points it could take, and those it took.
    pub points_max: u32,
    pub points_run: u32,
    /// The resolution stated before it ran, in words (`within 10.0 % (or 1 concurrent
    /// request)`).
    pub stated_resolution: String,
    /// The highest load that met every objective and the lowest that did not, on the
    /// round it searched (none when the search ended at one of its ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bracket: Option<[f64; 2]>,
}

impl SearchOutcome {
    /// The bracket as a share of its lower end: `0.08` for [25, 27].
    pub fn relative_width(&self) -> Option<f64> {
        let [a, b] = self.bracket?;
        (a > 0.0).then(|| (b - a) / a)
    }
}

/// How a point of a search judged, on the round it searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    Met,
    Missed,
    /// Neither: the agent saturated, the round did not run or never reached the load.
    Excluded,
}

/// The load the next point of a `search:` runs at, from the points of the same search that
/// ran before it; none when the search is done (the point is not needed). It searches the
/// last round (the warm one; round 1 when the scenario runs one round): the lowest load
/// first (a miss there ends it: the capacity is below it), then the highest (a pass there
/// ends it), then the geometric middle of the bracket between the highest load that met
/// every objective and the lowest that did not (or was excluded: a point that cannot be
/// judged bounds the search from above, never sets the capacity). A concurrency search
/// stops at a bracket of one; a rate search at 1 %.
pub fn next_search_load(point: &SweepPoint, before: &[Run<'_>]) -> Option<f64> {
    let spec = point.search.as_ref()?;
    let same: Vec<Run<'_>> = before
        .iter()
        .filter(|(_, p, _)| p.scenario == point.scenario && p.search.is_some())
        .copied()
        .collect();
    if same.len() >= spec.points as usize {
        return None;
    }
    // Judged on the search's own objectives (the points' stats carry them), in the order
    // the points ran.
    let by_load: Vec<(f64, Judged)> = capacities(&same)
        .into_iter()
        .find(|c| c.scenario == point.scenario)
        .map(|c| {
            c.points
                .iter()
                .map(|p| {
                    let rp = p.warm.as_ref().unwrap_or(&p.cold);
                    let j = if rp.excluded.is_some() {
                        Judged::Excluded
                    } else if rp.meets {
                        Judged::Met
                    } else {
                        Judged::Missed
                    };
                    (p.load, j)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut order: Vec<&SweepPoint> = same.iter().map(|(_, p, _)| *p).collect();
    order.sort_by_key(|p| p.index);
    let judged: Vec<(f64, Judged)> = order
        .iter()
        .filter_map(|p| {
            by_load
                .iter()
                .find(|(l, _)| (l - p.value).abs() < 1e-9)
                .copied()
        })
        .collect();
    next_load(spec, point.dimension, &judged)
}

/// The next load of a search from its points' judgements so far (see
/// [`next_search_load`]).
fn next_load(
    spec: &crate::plan::SearchSpec,
    dimension: SweepDimension,
    judged: &[(f64, Judged)],
) -> Option<f64> {
    if judged.len() >= spec.points as usize {
        return None;
    }
    let [lo, hi] = spec.between;
    // The lowest load, then the highest.
    let Some(&(_, first)) = judged.first() else {
        return Some(lo);
    };
    if first != Judged::Met {
        return None;
    }
    let Some(&(_, second)) = judged.get(1) else {
        return Some(hi);
    };
    if second == Judged::Met {
        return None;
    }
    // Then the bracket on the continuous axis, halved on a log scale by each point in the
    // order they ran (a point that cannot be judged counts as above the boundary): only
    // the load run is rounded, so rounding never adds up from one point to the next.
    let (mut alpha, mut beta) = (lo, hi);
    for &(_, j) in &judged[2..] {
        let m = (alpha * beta).sqrt();
        if j == Judged::Met {
            alpha = m;
        } else {
            beta = m;
        }
    }
    let middle = (alpha * beta).sqrt();
    match dimension {
        SweepDimension::Concurrency => {
            let (a, b) = (alpha.round(), beta.round());
            (b - a > 1.0).then(|| middle.round().clamp(a + 1.0, b - 1.0))
        }
        SweepDimension::RequestRate => (beta / alpha > 1.01).then_some(middle),
    }
}

/// A search's outcome from its capacity: the bracket on the round it searched.
fn search_outcome(
    spec: &crate::plan::SearchSpec,
    dimension: SweepDimension,
    runs: usize,
    searched: &Capacity,
) -> SearchOutcome {
    SearchOutcome {
        between: spec.between,
        points_max: spec.points,
        points_run: runs as u32,
        stated_resolution: spec.resolution_text(dimension),
        bracket: match (searched.last_met, searched.first_missed) {
            (Some(a), Some(b)) => Some([a, b]),
            _ => None,
        },
    }
}

/// The baseline's side of a capacity comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineCapacity {
    pub scenario: String,
    /// The baseline's last-round capacity (its round 1 when it runs one round).
    pub capacity: Capacity,
    /// This scenario's warm capacity over the baseline's.
    pub ratio: Option<f64>,
    /// When one of them is a bound: the least the ratio can be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_at_least: Option<f64>,
}

/// One load of a sweep, as the capacity used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// The requested load: a concurrency, or requests per second.
    pub load: f64,
    /// Its scenarios as run (`<name>~c16`, and `#k` for each repeat).
    pub runs: Vec<String>,
    pub cold: RoundPoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<RoundPoint>,
}

/// One round kind at one load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundPoint {
    /// Each objective's figure (the median over repeats), in the order of `slo`.
    pub figures: Vec<Option<f64>>,
    pub meets: bool,
    /// Requests sent per second of the round (completed and failed): what the load
    /// achieved, against the requested rate.
    pub achieved_rate: Option<f64>,
    /// Completed requests per second.
    pub request_throughput: Option<f64>,
    /// Most requests in flight at once (the median over repeats): under a swept
    /// concurrency, what the load reached (a round with fewer requests than the
    /// concurrency never reaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<f64>,
    /// Why the point is left out of the capacity (the agent saturated, the round did not
    /// run), naming the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One round kind at one load, over its repeats.
/// `concurrency`: the point's swept concurrency (none for a rate sweep); a round that never
/// had that many requests in flight did not run at that load.
fn round_point(
    runs: &[(&str, Option<&ScenarioStats>)],
    round: u32,
    slo: &[Target],
    concurrency: Option<f64>,
) -> RoundPoint {
    let mut excluded = Vec::new();
    // Excluded rounds' figures are shown too, never used.
    let mut rounds: Vec<&RoundStats> = Vec::new();
    for (name, st) in runs {
        let Some(r) = st.and_then(|s| s.rounds.iter().find(|r| r.round == round)) else {
            excluded.push(format!("{name}: round {round} did not run"));
            continue;
        };
        rounds.push(r);
        if concurrency.is_some_and(|c| f64::from(r.max_concurrent_requests) < c) {
            excluded.push(format!(
                "{name}: at most {} requests in flight in round {round}, fewer than the concurrency (the round has {} requests)",
                r.max_concurrent_requests,
                r.completed + r.failed
            ));
        } else if r.generator_saturated {
            excluded.push(format!(
                "{name}: the agent saturated in round {round}{}",
                r.agent_health
                    .as_ref()
                    .map(|h| format!(" ({})", h.saturation_reason))
                    .unwrap_or_default()
            ));
        }
    }
    let per_run = |f: &dyn Fn(&RoundStats) -> Option<f64>| {
        median(rounds.iter().filter_map(|r| f(r)).collect())
    };
    let figures: Vec<Option<f64>> = slo
        .iter()
        .map(|t| per_run(&|r| round_figure(&t.metric, r)))
        .collect();
    let meets = slo
        .iter()
        .zip(&figures)
        .all(|(t, v)| v.is_some_and(|v| t.op.holds(v, t.value)));
    RoundPoint {
        meets: meets && excluded.is_empty(),
        figures,
        achieved_rate: per_run(&|r| {
            (r.duration > 0.0).then(|| f64::from(r.completed + r.failed) / r.duration)
        }),
        request_throughput: per_run(&|r| Some(r.request_throughput)),
        max_in_flight: per_run(&|r| Some(f64::from(r.max_concurrent_requests))),
        excluded: (!excluded.is_empty()).then(|| excluded.join("; ")),
    }
}

fn capacity_of(points: &[LoadPoint], slo: &[Target], warm: bool) -> Capacity {
    let pts: Vec<Point> = points
        .iter()
        .filter_map(|p| {
            let rp = if warm { p.warm.as_ref()? } else { &p.cold };
            Some(Point {
                load: p.load,
                checks: slo
                    .iter()
                    .zip(&rp.figures)
                    .map(|(t, v)| Check {
                        actual: *v,
                        threshold: t.value,
                        met: v.is_some_and(|v| t.op.holds(v, t.value)),
                    })
                    .collect(),
                excluded: rp.excluded.clone(),
            })
        })
        .collect();
    capacity(&pts)
}

/// At least how many times `b` capacity `a` is, when one of them is a bound (`a` at
/// least its highest load, `b` below its lowest): the lowest `a` over the highest `b`.
fn ratio_at_least(a: &Capacity, b: &Capacity) -> Option<f64> {
    use crate::stats::capacity::Bound;
    let low_a = match a.bound {
        Bound::Interpolated | Bound::AtLeast => a.load?,
        _ => return None,
    };
    let high_b = match b.bound {
        Bound::Interpolated => b.load?,
        Bound::Below => b.first_missed?,
        _ => return None,
    };
    let exact = a.bound == Bound::Interpolated && b.bound == Bound::Interpolated;
    (!exact && high_b > 0.0).then(|| low_a / high_b)
}

/// `a / b` when both are capacities found within the swept loads (a bound has no ratio).
fn ratio(a: &Capacity, b: &Capacity) -> Option<f64> {
    let found = |c: &Capacity| {
        c.load
            .filter(|_| c.bound == crate::stats::capacity::Bound::Interpolated)
    };
    match (found(a), found(b)) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    }
}

/// The capacities of every swept scenario with objectives, from its points as run: each
/// a scenario's name, its sweep point and its stats (none when it has none).
pub fn capacities(runs: &[Run<'_>]) -> Vec<SweepCapacity> {
    // scenario -> load (as its name shows it) -> runs
    let mut groups: BTreeMap<&str, BTreeMap<String, Vec<Run<'_>>>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    // A search's points that were not needed have no load.
    for &(name, p, st) in runs
        .iter()
        .filter(|(_, p, _)| p.search.as_ref().is_none_or(|s| s.chosen))
    {
        if !order.contains(&p.scenario.as_str()) {
            order.push(&p.scenario);
        }
        groups
            .entry(&p.scenario)
            .or_default()
            .entry(p.dimension.suffix(p.value))
            .or_default()
            .push((name, p, st));
    }
    let mut out: Vec<SweepCapacity> = order
        .iter()
        .filter_map(|scenario| {
            let loads = groups.get(scenario)?;
            let (_, first, _) = *loads.values().next()?.first()?;
            let slo = first.slo.clone();
            if slo.is_empty() {
                return None;
            }
            let last_round = loads
                .values()
                .flatten()
                .filter_map(|(_, _, st)| Some(st.as_ref()?.scenario.rounds))
                .max()
                .unwrap_or(1);
            let mut points: Vec<LoadPoint> = loads
                .values()
                .map(|runs| {
                    let concurrency = (runs[0].1.dimension == SweepDimension::Concurrency)
                        .then_some(runs[0].1.value);
                    let named: Vec<(&str, Option<&ScenarioStats>)> =
                        runs.iter().map(|(n, _, st)| (*n, *st)).collect();
                    LoadPoint {
                        load: runs[0].1.value,
                        runs: runs.iter().map(|(n, _, _)| (*n).to_owned()).collect(),
                        cold: round_point(&named, 1, &slo, concurrency),
                        warm: (last_round > 1)
                            .then(|| round_point(&named, last_round, &slo, concurrency)),
                    }
                })
                .collect();
            points.sort_by(|a, b| a.load.total_cmp(&b.load));
            let cold = capacity_of(&points, &slo, false);
            let warm = (last_round > 1).then(|| capacity_of(&points, &slo, true));
            let search = first.search.as_ref().map(|spec| {
                let runs = loads.values().map(Vec::len).sum();
                search_outcome(spec, first.dimension, runs, warm.as_ref().unwrap_or(&cold))
            });
            Some(SweepCapacity {
                search,
                scenario: (*scenario).to_owned(),
                dimension: first.dimension,
                warm_over_cold: warm.as_ref().and_then(|w| ratio(w, &cold)),
                warm_over_cold_at_least: warm.as_ref().and_then(|w| ratio_at_least(w, &cold)),
                slo,
                last_round,
                cold,
                warm,
                baseline: first.baseline.clone().map(|b| BaselineCapacity {
                    scenario: b,
                    capacity: Capacity {
                        load: None,
                        bound: crate::stats::capacity::Bound::Unknown,
                        last_met: None,
                        first_missed: None,
                        limited_by: Vec::new(),
                        non_monotonic: Vec::new(),
                    },
                    ratio: None,
                    ratio_at_least: None,
                }),
                points,
            })
        })
        .collect();
    // Each baseline at this scenario's objectives (its own may differ or be absent).
    for c in &mut out {
        let Some(b) = c.baseline.as_ref().map(|b| b.scenario.clone()) else {
            continue;
        };
        let base_runs: Vec<Run<'_>> = runs
            .iter()
            .filter(|(_, p, _)| p.scenario == b)
            .copied()
            .collect();
        let warm_of_self = c.warm.clone().unwrap_or_else(|| c.cold.clone());
        let base = rebuilt(&base_runs, &c.slo);
        if let (Some(bl), Some(cap)) = (c.baseline.as_mut(), base) {
            bl.ratio = ratio(&warm_of_self, &cap);
            bl.ratio_at_least = ratio_at_least(&warm_of_self, &cap);
            bl.capacity = cap;
        }
    }
    out
}

/// The last round's capacity of a sweep at `slo` (its round 1's when it runs one round).
fn rebuilt(runs: &[Run<'_>], slo: &[Target]) -> Option<Capacity> {
    if runs.is_empty() {
        return None;
    }
    let with_slo: Vec<SweepPoint> = runs
        .iter()
        .map(|(_, p, _)| SweepPoint {
            slo: slo.to_vec(),
            baseline: None,
            ..(*p).clone()
        })
        .collect();
    let again: Vec<Run<'_>> = runs
        .iter()
        .zip(&with_slo)
        .map(|((n, _, st), p)| (*n, p, *st))
        .collect();
    let c = capacities(&again).into_iter().next()?;
    Some(c.warm.unwrap_or(c.cold))
}

/// How a ratio reads: `4.68x`, `>= 10.8x` (a bound), `-`.
pub fn shown_ratio(exact: Option<f64>, at_least: Option<f64>) -> String {
    match (exact, at_least) {
        (Some(r), _) => format!("{r:.2}x"),
        (None, Some(r)) => format!(">= {r:.1}x"),
        (None, None) => "-".into(),
    }
}

/// How a capacity reads: `12.4`, `>= 64`, `< 1`, `unknown`.
pub fn shown(c: &Capacity) -> String {
    use crate::stats::capacity::Bound;
    let n = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    match (c.bound, c.load, c.first_missed) {
        (Bound::Interpolated, Some(v), _) => n(v),
        (Bound::AtLeast, Some(v), _) => format!(">= {}", crate::util::trim_float(v)),
        (Bound::Below, _, Some(v)) => format!("< {}", crate::util::trim_float(v)),
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::SearchSpec;
    use proptest::prelude::*;

    /// Runs a search against a boundary: a load meets when it is at most `boundary`, and
    /// is excluded above `reach` (the round never reached it). The loads tried, in order.
    fn search(
        spec: &SearchSpec,
        dimension: SweepDimension,
        boundary: f64,
        reach: f64,
    ) -> Vec<(f64, Judged)> {
        let mut judged = Vec::new();
        while let Some(load) = next_load(spec, dimension, &judged) {
            assert!(
                !judged.iter().any(|(l, _)| *l == load),
                "tries {load} twice: {judged:?}"
            );
            let j = if load > reach {
                Judged::Excluded
            } else if load <= boundary {
                Judged::Met
            } else {
                Judged::Missed
            };
            judged.push((load, j));
        }
        judged
    }

    fn bracket(judged: &[(f64, Judged)]) -> (Option<f64>, Option<f64>) {
        let met = judged
            .iter()
            .filter(|(_, j)| *j == Judged::Met)
            .map(|(l, _)| *l)
            .max_by(f64::total_cmp);
        let bad = judged
            .iter()
            .filter(|(_, j)| *j != Judged::Met)
            .map(|(l, _)| *l)
            .min_by(f64::total_cmp);
        (met, bad)
    }

    #[test]
    fn ends_first_and_resolution_stated() {
        let spec = SearchSpec {
            between: [1.0, 512.0],
            points: 8,
            chosen: false,
        };
        // 6 halvings of log2(512) = 9: within 2^(9/64) = 10.2 %.
        assert!((spec.resolution_factor() - 2f64.powf(9.0 / 64.0)).abs() < 1e-12);
        assert_eq!(
            spec.resolution_text(SweepDimension::Concurrency),
            "within 10.2 % give or take 1 concurrent request"
        );
        let c = SweepDimension::Concurrency;
        // Missed at the lowest load: one point, the capacity is below it.
        assert_eq!(search(&spec, c, 0.5, 1e9), vec![(1.0, Judged::Missed)]);
        // Met at the highest: two points.
        assert_eq!(
            search(&spec, c, 1000.0, 1e9),
            vec![(1.0, Judged::Met), (512.0, Judged::Met)]
        );
        // In between: 1, 512, then the geometric middles.
        let j = search(&spec, c, 22.0, 1e9);
        assert_eq!(
            &j[..3],
            &[
                (1.0, Judged::Met),
                (512.0, Judged::Missed),
                (23.0, Judged::Missed)
            ]
        );
        // Eight points spent: [21, 23], within the stated 10.2 % give or take one request.
        assert_eq!(j.len(), 8);
        assert_eq!(bracket(&j), (Some(21.0), Some(23.0)), "{j:?}");
        // A bracket of one ends it early.
        let spec16 = SearchSpec { points: 16, ..spec };
        let j = search(&spec16, c, 22.0, 1e9);
        assert_eq!(bracket(&j), (Some(22.0), Some(23.0)), "{j:?}");
        assert!(j.len() < 16, "{j:?}");
    }

    proptest! {
        /// Within its stated points, a concurrency search brackets a boundary anywhere in
        /// its range to within the stated resolution (or one concurrent request), and a
        /// rate search to within the stated factor; a point it cannot judge (the round
        /// never reached it) bounds it from above, never passes for a miss of the boundary.
        #[test]
        fn the_bracket_holds_the_boundary_within_the_stated_resolution(
            lo in 1u32..8,
            span in 2u32..600,
            boundary_at in 0.0f64..1.0,
            points in 3u32..=16,
            rate in any::<bool>(),
            reach_at in 0.0f64..2.0,
        ) {
            let (lo, hi) = (f64::from(lo), f64::from(lo + span));
            let spec = SearchSpec { between: [lo, hi], points, chosen: false };
            let dimension = if rate { SweepDimension::RequestRate } else { SweepDimension::Concurrency };
            let boundary = lo + boundary_at * (hi - lo);
            let boundary = if rate { boundary } else { boundary.floor() };
            let reach = lo + reach_at * (hi - lo);
            let judged = search(&spec, dimension, boundary, reach);
            prop_assert!(judged.len() <= points as usize);
            let (met, bad) = bracket(&judged);
            let met = met.expect("the lowest load met");
            prop_assert!(met <= boundary);
            match bad {
                None => prop_assert_eq!(met, hi, "every point met: the highest was tried"),
                Some(b) => {
                    prop_assert!(b > met);
                    // The boundary lies in [met, b) unless the search hit what it could
                    // not judge first (then the bracket ends there).
                    if b <= reach {
                        prop_assert!(b > boundary);
                    }
                    let closed = match dimension {
                        SweepDimension::Concurrency => b - met <= 1.0,
                        SweepDimension::RequestRate => b / met <= 1.01,
                    };
                    // A concurrency's loads are rounded: half a request at either end.
                    let slack = match dimension {
                        SweepDimension::Concurrency => 0.5,
                        SweepDimension::RequestRate => 0.0,
                    };
                    let stated = (b - slack) / (met + slack)
                        <= spec.resolution_factor() * (1.0 + 1e-9);
                    prop_assert!(
                        closed || stated || judged.len() < points as usize,
                        "{:?}: bracket {} .. {} wider than {} after {} points",
                        judged, met, b, spec.resolution_factor(), judged.len()
                    );
                    prop_assert!(closed || stated, "{:?}", judged);
                }
            }
        }
    }
}
