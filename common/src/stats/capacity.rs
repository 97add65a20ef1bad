//! Capacity at a service-level objective: over the points of a load sweep, the largest load
//! whose round met every objective, interpolated between the last point that met them and
//! the first that did not. The points' figures come from their stats files
//! ([`crate::sweep`] gathers them); this is the arithmetic alone.

use serde::{Deserialize, Serialize};

/// One objective at one point of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The round's figure; none when the round does not have it (then it is not met).
    pub actual: Option<f64>,
    pub threshold: f64,
    pub met: bool,
}

/// One load of the sweep, with each objective's check at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub load: f64,
    pub checks: Vec<Check>,
    /// Why the point is left out of the boundary (the agent saturated, the round did not
    /// run): it neither meets nor misses.
    pub excluded: Option<String>,
}

impl Point {
    pub fn meets(&self) -> bool {
        self.checks.iter().all(|c| c.met)
    }
}

/// How the capacity relates to the swept loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Between the last point that met every objective and the first that did not.
    Interpolated,
    /// Every point met them: the capacity is at least the highest load swept.
    AtLeast,
    /// The lowest point already missed one: the capacity is below it.
    Below,
    /// No point could be used (every one excluded).
    Unknown,
}

/// The largest load that met every objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// The capacity (for `at_least`, the highest load swept; none for `below` and
    /// `unknown`).
    pub load: Option<f64>,
    pub bound: Bound,
    /// The highest load, below the first miss, that met every objective.
    pub last_met: Option<f64>,
    /// The lowest load that missed one.
    pub first_missed: Option<f64>,
    /// The objectives (their indices) missed at `first_missed`: what bounds the capacity.
    pub limited_by: Vec<usize>,
    /// Loads above the first miss that met every objective again: the curve is not
    /// monotonic there, and the capacity is the first crossing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_monotonic: Vec<f64>,
}

/// Where the objective's figure crosses its threshold between `a` (met) and `b` (missed),
/// linearly; `a` when either figure is missing or they are equal.
fn crossing(a: f64, ca: &Check, b: f64, cb: &Check) -> f64 {
    match (ca.actual, cb.actual) {
        (Some(va), Some(vb)) if (vb - va).abs() > f64::EPSILON => {
            let t = ((ca.threshold - va) / (vb - va)).clamp(0.0, 1.0);
            a + t * (b - a)
        }
        _ => a,
    }
}

/// The capacity over `points` (any order; excluded points are skipped).
pub fn capacity(points: &[Point]) -> Capacity {
    let mut used: Vec<&Point> = points.iter().filter(|p| p.excluded.is_none()).collect();
    used.sort_by(|a, b| a.load.total_cmp(&b.load));
    let Some(first_miss) = used.iter().position(|p| !p.meets()) else {
        return Capacity {
            load: used.last().map(|p| p.load),
            bound: if used.is_empty() {
                Bound::Unknown
            } else {
                Bound::AtLeast
            },
            last_met: used.last().map(|p| p.load),
            first_missed: None,
            limited_by: Vec::new(),
            non_monotonic: Vec::new(),
        };
    };
    let missed = used[first_miss];
    let limited_by: Vec<usize> = missed
        .checks
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.met)
        .map(|(k, _)| k)
        .collect();
    let non_monotonic: Vec<f64> = used[first_miss + 1..]
        .iter()
        .filter(|p| p.meets())
        .map(|p| p.load)
        .collect();
    if first_miss == 0 {
        return Capacity {
            load: None,
            bound: Bound::Below,
            last_met: None,
            first_missed: Some(missed.load),
            limited_by,
            non_monotonic,
        };
    }
    let met = used[first_miss - 1];
    let load = limited_by
        .iter()
        .map(|&k| crossing(met.load, &met.checks[k], missed.load, &missed.checks[k]))
        .fold(missed.load, f64::min);
    Capacity {
        load: Some(load),
        bound: Bound::Interpolated,
        last_met: Some(met.load),
        first_missed: Some(missed.load),
        limited_by,
        non_monotonic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One objective, `figure <= threshold`.
    fn at_most(load: f64, figure: f64, threshold: f64) -> Point {
        Point {
            load,
            checks: vec![Check {
                actual: Some(figure),
                threshold,
                met: figure <= threshold,
            }],
            excluded: None,
        }
    }

    #[test]
    fn interpolates_between_the_last_met_and_the_first_missed() {
        // TTFT 100, 200, 400, 800 ms at 1, 2, 4, 8; objective <= 600: crossing at 6.
        let pts: Vec<Point> = [(1.0, 100.0), (2.0, 200.0), (4.0, 400.0), (8.0, 800.0)]
            .iter()
            .map(|&(l, v)| at_most(l, v, 600.0))
            .collect();
        let c = capacity(&pts);
        assert_eq!(c.bound, Bound::Interpolated);
        assert_eq!((c.last_met, c.first_missed), (Some(4.0), Some(8.0)));
        assert!((c.load.unwrap() - 6.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.limited_by, vec![0]);
        assert!(c.non_monotonic.is_empty());
    }

    #[test]
    fn every_point_met_is_a_lower_bound_and_the_first_missed_an_upper_one() {
        let all = capacity(&[at_most(1.0, 1.0, 5.0), at_most(4.0, 2.0, 5.0)]);
        assert_eq!((all.bound, all.load), (Bound::AtLeast, Some(4.0)));
        let none = capacity(&[at_most(1.0, 9.0, 5.0), at_most(4.0, 12.0, 5.0)]);
        assert_eq!((none.bound, none.load), (Bound::Below, None));
        assert_eq!(none.first_missed, Some(1.0));
        assert_eq!(capacity(&[]).bound, Bound::Unknown);
    }

    #[test]
    fn excluded_points_are_never_a_boundary_and_a_dip_is_flagged() {
        let mut saturated = at_most(8.0, 50.0, 100.0);
        saturated.excluded = Some("generator saturated".into());
        let c = capacity(&[
            at_most(1.0, 10.0, 100.0),
            at_most(4.0, 90.0, 100.0),
            saturated,
            at_most(16.0, 150.0, 100.0),
            at_most(32.0, 80.0, 100.0),
        ]);
        assert_eq!((c.last_met, c.first_missed), (Some(4.0), Some(16.0)));
        assert_eq!(c.non_monotonic, vec![32.0]);
    }

    #[test]
    fn the_tightest_objective_bounds_it() {
        let point = |load: f64, ttft: f64, tpot: f64| Point {
            load,
            checks: vec![
                Check {
                    actual: Some(ttft),
                    threshold: 1000.0,
                    met: ttft <= 1000.0,
                },
                Check {
                    actual: Some(tpot),
                    threshold: 50.0,
                    met: tpot <= 50.0,
                },
            ],
            excluded: None,
        };
        // TTFT crosses at 6, TPOT at 5: 5 it is.
        let c = capacity(&[point(2.0, 500.0, 20.0), point(10.0, 1500.0, 100.0)]);
        assert_eq!(c.limited_by, vec![0, 1]);
        assert!((c.load.unwrap() - 5.0).abs() < 1e-9, "{c:?}");
    }

    proptest! {
        /// On a rising figure the capacity lies between the last load that met the
        /// objective and the first that did not, and at or below where the figure crosses.
        #[test]
        fn capacity_lies_within_its_bracket(
            loads in proptest::collection::btree_set(1u32..1000, 1..12),
            slope in 0.1f64..50.0,
            threshold in 1.0f64..20_000.0,
        ) {
            let pts: Vec<Point> = loads.iter().map(|&l| at_most(f64::from(l), slope * f64::from(l), threshold)).collect();
            let c = capacity(&pts);
            match c.bound {
                Bound::Interpolated => {
                    let (a, b, x) = (c.last_met.unwrap(), c.first_missed.unwrap(), c.load.unwrap());
                    prop_assert!(a <= x && x <= b);
                    prop_assert!((x - threshold / slope).abs() < 1e-6 * x.max(1.0));
                }
                Bound::AtLeast => prop_assert!(pts.iter().all(Point::meets)),
                Bound::Below => prop_assert!(!pts.iter().any(Point::meets)),
                Bound::Unknown => prop_assert!(pts.is_empty()),
            }
            prop_assert!(c.non_monotonic.is_empty());
        }
    }
}
