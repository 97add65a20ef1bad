//! One sample set summarised: count, mean, spread and percentiles (linear interpolation
//! between closest ranks, numpy's default, which vLLM's benchmark uses); the options and
//! objectives of a round's statistics.

use serde::{Deserialize, Serialize};

use crate::record::RequestRecord;

/// The percentiles reported for every latency metric.
pub const DEFAULT_PERCENTILES: [f64; 4] = [50.0, 90.0, 95.0, 99.0];

/// Service-level objectives for goodput (vLLM's `--goodput`): a completed request is good
/// when every objective that is set holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goodput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2el_ms: Option<f64>,
}

impl Goodput {
    pub fn is_good(&self, r: &RequestRecord) -> bool {
        let within = |limit: Option<f64>, v: Option<f64>| match (limit, v) {
            (None, _) => true,
            (Some(l), Some(v)) => v <= l,
            (Some(_), None) => false,
        };
        within(self.ttft_ms, r.ttft_ms())
            && within(self.tpot_ms, r.tpot_ms().or(Some(0.0)))
            && within(self.e2el_ms, Some(r.e2el_ms()))
    }
}

/// What statistics to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsOptions {
    /// Percentiles reported for every latency metric (`p<q>_<metric>`), besides p99,
    /// which is always reported.
    pub percentiles: Vec<f64>,
    pub goodput: Option<Goodput>,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            percentiles: DEFAULT_PERCENTILES.to_vec(),
            goodput: None,
        }
    }
}

/// Summary of one sample set.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    sorted: Vec<f64>,
}

impl Summary {
    /// `None` for an empty sample set. NaN values are dropped.
    pub fn of(samples: impl IntoIterator<Item = f64>) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.into_iter().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mean = super::intervals::mean(&sorted)?;
        let var = super::intervals::variance(&sorted, mean, 0)?;
        Some(Summary {
            count: sorted.len(),
            mean,
            std: var.sqrt(),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            sorted,
        })
    }

    /// The `q`-th percentile (0..=100), linear interpolation between closest ranks.
    pub fn percentile(&self, q: f64) -> f64 {
        percentile(&self.sorted, q)
    }

    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }
}

/// The `q`-th percentile (0..=100) of sorted values, linear interpolation between closest
/// ranks (numpy's default); NaN for none. Every percentile kvbench computes from samples
/// is this one.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let pos = q.clamp(0.0, 100.0) / 100.0 * last as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Formats a percentile for a key: 99 -> "99", 99.9 -> "99.9".
pub fn pct_label(q: f64) -> String {
    let s = format!("{q}");
    s.trim_end_matches(".0").to_owned()
}
