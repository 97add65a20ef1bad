//! Means, variances and confidence: the one mean and variance every figure uses, Student-t
//! intervals over repeats (quantiles from `statrs`), and the bootstrap interval of a
//! relative change (what `kvbench compare` reports).

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::rng::Rng;

use super::summary::percentile;

/// The mean of `values` (none for none).
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The variance of `values` around `mean`, dividing by `n - ddof` (0: the population's,
/// 1: the sample's); none when `n <= ddof`.
pub fn variance(values: &[f64], mean: f64, ddof: usize) -> Option<f64> {
    let n = values.len();
    (n > ddof).then(|| values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - ddof) as f64)
}

/// The two-sided 95 % critical value of Student's t with `df` degrees of freedom (NaN for
/// none).
pub fn t95(df: usize) -> f64 {
    if df == 0 {
        return f64::NAN;
    }
    StudentsT::new(0.0, 1.0, df as f64).map_or(f64::NAN, |t| t.inverse_cdf(0.975))
}

/// The mean of `values` and the half-width of its 95 % confidence interval
/// (t-distribution); no half-width for fewer than two values.
pub fn mean_ci95(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let m = mean(values)?;
    let half = variance(values, m, 1)
        .map(|var| t95(values.len() - 1) * (var / values.len() as f64).sqrt());
    Some((m, half))
}

/// A statistic of a sample set: its mean or a percentile (0..=100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Mean,
    Quantile(f64),
}

impl Stat {
    /// The statistic of sorted values.
    pub fn of_sorted(self, sorted: &[f64]) -> f64 {
        match self {
            Stat::Mean => mean(sorted).unwrap_or(f64::NAN),
            Stat::Quantile(q) => percentile(sorted, q),
        }
    }
}

/// The relative change from `a` to `b` in percent, a bootstrap 95 % interval of it and the
/// bootstrap test's two-sided p-value for "no change".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    pub a: f64,
    pub b: f64,
    pub change_pct: f64,
    pub ci_low_pct: f64,
    pub ci_high_pct: f64,
    pub p_value: f64,
}

/// Resamples of each side a bootstrap draws.
pub const BOOTSTRAP_ITERATIONS: usize = 1000;

/// The change of `stat` from sample set `a` to `b`, with its bootstrap interval
/// ([`BOOTSTRAP_ITERATIONS`] resamples of each side, with replacement, from `seed`: the same
/// inputs give the same answer); none with fewer than `min` samples on a side or a
/// statistic of `a` that is not positive.
pub fn bootstrap_change(a: &[f64], b: &[f64], stat: Stat, seed: u64, min: usize) -> Option<Change> {
    if a.len() < min || b.len() < min {
        return None;
    }
    let sorted = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    };
    let (sa, sb) = (sorted(a), sorted(b));
    let (va, vb) = (stat.of_sorted(&sa), stat.of_sorted(&sb));
    if va <= 0.0 {
        return None;
    }
    let mut rng = Rng::new(seed);
    let mut draw = |from: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        buf.extend((0..from.len()).map(|_| from[rng.below(from.len() as u64) as usize]));
        buf.sort_by(f64::total_cmp);
    };
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let mut changes: Vec<f64> = (0..BOOTSTRAP_ITERATIONS)
        .filter_map(|_| {
            draw(&sa, &mut ra);
            draw(&sb, &mut rb);
            let x = stat.of_sorted(&ra);
            (x > 0.0).then(|| (stat.of_sorted(&rb) - x) / x * 100.0)
        })
        .collect();
    if changes.is_empty() {
        return None;
    }
    changes.sort_by(f64::total_cmp);
    let n = changes.len() as f64;
    let below = changes.iter().filter(|c| **c <= 0.0).count() as f64 / n;
    let above = changes.iter().filter(|c| **c >= 0.0).count() as f64 / n;
    Some(Change {
        a: va,
        b: vb,
        change_pct: (vb - va) / va * 100.0,
        ci_low_pct: percentile(&changes, 2.5),
        ci_high_pct: percentile(&changes, 97.5),
        p_value: (2.0 * below.min(above)).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t95_matches_the_table_values() {
        for (df, want) in [
            (1, 12.706),
            (2, 4.303),
            (5, 2.571),
            (10, 2.228),
            (30, 2.042),
        ] {
            assert!((t95(df) - want).abs() < 0.001, "df {df}: {}", t95(df));
        }
        assert!((t95(40) - 2.021).abs() < 0.001 && (t95(120) - 1.980).abs() < 0.001);
        assert!((t95(1000) - 1.962).abs() < 0.001);
        assert!(t95(0).is_nan());
    }

    #[test]
    fn mean_and_interval_of_repeats() {
        assert_eq!(mean_ci95(&[]), None);
        assert_eq!(mean_ci95(&[4.0]), Some((4.0, None)));
        let (m, half) = mean_ci95(&[1.0, 2.0, 3.0]).expect("three values");
        assert!((m - 2.0).abs() < 1e-12);
        // s = 1, n = 3: t(2) * 1 / sqrt(3).
        let want = 4.302_652_7 / 3f64.sqrt();
        assert!((half.expect("a half-width") - want).abs() < 1e-6);
        assert_eq!(variance(&[1.0, 3.0], 2.0, 0), Some(1.0));
        assert_eq!(variance(&[1.0], 1.0, 1), None);
    }

    #[test]
    fn the_bootstrap_needs_samples_and_sees_a_shift() {
        let a: Vec<f64> = (0..50).map(|i| 100.0 + f64::from(i % 7)).collect();
        let b: Vec<f64> = a.iter().map(|v| v * 1.5).collect();
        assert!(bootstrap_change(&a[..5], &b, Stat::Mean, 1, 10).is_none());
        let c = bootstrap_change(&a, &b, Stat::Quantile(50.0), 1, 10).expect("enough samples");
        assert!((c.change_pct - 50.0).abs() < 1e-9);
        assert!(c.ci_low_pct > 40.0 && c.ci_high_pct < 60.0, "{c:?}");
        assert!(c.p_value < 0.01);
    }
}
