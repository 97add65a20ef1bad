//! Latency histograms (HDR, 3 significant digits): what a round keeps of every latency
//! sample, mergeable across agents, and written into the stats file.

use base64::Engine as _;

/// An HDR histogram of latencies in microseconds (1 us to 1 hour, 3 significant digits):
/// the form in which distributions merge exactly across agents.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram(hdrhistogram::Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    const MAX_US: u64 = 3_600_000_000;

    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts.
        let h = hdrhistogram::Histogram::new_with_bounds(1, Self::MAX_US, 3)
            .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        LatencyHistogram(h)
    }

    /// Records a latency; negative values count as 0, values beyond an hour as an hour.
    pub fn record_ms(&mut self, ms: f64) {
        if ms.is_nan() {
            return;
        }
        let us = (ms * 1000.0).round().clamp(1.0, Self::MAX_US as f64) as u64;
        let _ = self.0.record(us);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds another histogram's counts (exact).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        let _ = self.0.add(&other.0);
    }

    /// The `q`-th percentile (0..=100) in milliseconds, interpolated linearly between the
    /// two closest ranks as numpy's default (and vLLM's benchmark) does; each rank's value
    /// is the middle of its histogram bucket, so within 0.1 % of the sample. 0 when empty.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let n = self.0.len();
        if n == 0 {
            return 0.0;
        }
        let pos = q.clamp(0.0, 100.0) / 100.0 * (n - 1) as f64;
        let (lo, frac) = (pos.floor(), pos - pos.floor());
        // The value of 0-based rank `k`: the quantile half a sample into it.
        let at = |k: f64| {
            let v = self.0.value_at_quantile((k + 0.5) / n as f64);
            self.0.median_equivalent(v) as f64 / 1000.0
        };
        let low = at(lo);
        if frac == 0.0 {
            low
        } else {
            low + (at(lo + 1.0) - low) * frac
        }
    }

    /// Base64 of the V2 + deflate serialization; `None` when empty.
    pub fn to_base64(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let mut buf = Vec::new();
        use hdrhistogram::serialization::Serializer as _;
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(&self.0, &mut buf)
            .ok()?;
        Some(base64::engine::general_purpose::STANDARD.encode(&buf))
    }

    pub fn from_base64(s: &str) -> Option<LatencyHistogram> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
        let h = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(bytes))
            .ok()?;
        Some(LatencyHistogram(h))
    }
}
