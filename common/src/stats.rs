//! Statistics computed from request records, and the stats file's layout.
//!
//! Percentiles use linear interpolation between closest ranks (numpy's default, which
//! vLLM's benchmark uses), so numbers compare with vLLM's `bench serve` directly. Key names
//! follow vLLM's (`mean_ttft_ms`, `request_throughput`, ...).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::accumulate::RoundAccumulator;
use crate::agent::{is_stale, ColdProbe};
use crate::record::{Outcome, RequestRecord};
use crate::telemetry::EngineMetricsSummary;

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
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
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
        let q = q.clamp(0.0, 100.0) / 100.0;
        let pos = q * (self.sorted.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        let frac = pos - lo as f64;
        self.sorted[lo] + (self.sorted[hi] - self.sorted[lo]) * frac
    }

    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }
}

/// Formats a percentile for a key: 99 -> "99", 99.9 -> "99.9".
pub fn pct_label(q: f64) -> String {
    let s = format!("{q}");
    s.trim_end_matches(".0").to_owned()
}

/// Per-round statistics: one object of the stats file's `rounds` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStats {
    pub round: u32,
    pub completed: u32,
    pub failed: u32,
    /// Count per outcome label, failures included; `ok` equals `completed`.
    pub outcomes: BTreeMap<Outcome, u32>,
    /// Seconds from the round's start to its last response.
    pub duration: f64,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Input plus output tokens per second.
    pub total_token_throughput: f64,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    /// Sum of `usage.prompt_tokens_details.cached_tokens` over completed requests.
    pub cached_tokens: u64,
    /// `cached_tokens / total_input_tokens`; null when the engine reported no cached tokens.
    pub cache_hit_ratio: Option<f64>,
    /// Completed requests whose response carried `cached_tokens`.
    pub cached_tokens_reported: u32,
    /// Most requests in flight at once, as the client saw them.
    pub max_concurrent_requests: u32,
    /// Most output tokens received in one 1-second window of the round.
    pub max_output_tokens_per_s: f64,
    /// Completed requests that met every goodput objective (null without `goodput:`).
    pub good_requests: Option<u32>,
    /// `good_requests` per second (vLLM's `request_goodput`).
    pub request_goodput: Option<f64>,
    /// Warmup requests sent before the measured ones (excluded from everything else).
    #[serde(default)]
    pub warmup_requests: u32,
    /// The agent could not keep up (its event loop lagged or its CPU was saturated): the
    /// latencies of this round include the harness's own delay. See `agent_health`.
    #[serde(default)]
    pub generator_saturated: bool,
    #[serde(default)]
    pub agent_health: Option<AgentHealth>,
    /// HDR histograms (microseconds, 3 significant digits, V2 + deflate, base64) of
    /// `ttft_ms`, `tpot_ms`, `itl_ms`, `e2el_ms`, `queue_ms`: they merge exactly across
    /// agents and runs (see [`LatencyHistogram`]).
    #[serde(default)]
    pub histograms: BTreeMap<String, String>,
    /// The engine's own counters over the round (server-side; null when it exports none).
    #[serde(default)]
    pub engine_metrics: Option<EngineMetricsSummary>,
    /// GPU, host and engine-load telemetry over the round's measured phase (null when the
    /// agent sent none); the samples are in `<slug>_telemetry_<ts>.jsonl`.
    #[serde(default)]
    pub telemetry: Option<crate::telemetry::TelemetrySummary>,
    /// A scenario split across agents (`placement: split`): each agent's part of the round
    /// on its own, by agent name (the round's own figures are the merged view: from all
    /// records together, over the union of the agents' time spans).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_agent: BTreeMap<String, RoundStats>,
    /// A closed loop's start-up burst (its first `concurrency` requests, released at once)
    /// apart from the steady state after it; the round's own figures hold both. Null for
    /// an open loop, or when the round is no longer than its first wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_wave: Option<FirstWave>,
    /// The round's zero (where its records' and samples' times start) on the agent's wall
    /// clock, microseconds since the Unix epoch; split rounds: the earliest agent's. The
    /// report's timelines place rounds with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_us: Option<i64>,
    /// `mean_`, `median_`, `std_`, `min_`, `max_` and `p<q>_` of `ttft_ms`, `tpot_ms`,
    /// `itl_ms`, `e2el_ms` and `queue_ms` (client queue time), flat in the round object
    /// under vLLM's key names; null when no completed request gave a sample.
    #[serde(flatten)]
    pub latency: LatencyStats,
}

/// TTFT of a closed loop's first wave and of the steady state after it, ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirstWave {
    /// Requests in the first wave (the loop's concurrency).
    pub requests: u32,
    pub mean_ttft_ms: f64,
    pub median_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    /// The completed requests after it.
    pub steady_requests: u32,
    pub steady_mean_ttft_ms: f64,
    pub steady_median_ttft_ms: f64,
    pub steady_p99_ttft_ms: f64,
}

impl FirstWave {
    /// The first `width` measured requests by release time against the rest (completed
    /// ones only, as every latency figure); none when nothing follows the first wave.
    pub fn of(records: &[RequestRecord], width: u32) -> Option<FirstWave> {
        let mut acc = RoundAccumulator::new(1, &StatsOptions::default(), Some(width));
        records.iter().for_each(|r| acc.add(r));
        acc.finish_records(0.0).first_wave
    }
}

impl RoundStats {
    /// Failed requests per outcome class (`ok` is not a failure): `timeout: 2, refused: 1`.
    pub fn failure_counts(&self) -> String {
        self.outcomes
            .iter()
            .filter(|(k, _)| **k != Outcome::Ok)
            .map(|(k, v)| format!("{}: {v}", k.label()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Statistics of one round known only by its records (see [`RoundAccumulator`]).
    pub fn from_records(
        round: u32,
        duration_s: f64,
        records: &[RequestRecord],
        opts: &StatsOptions,
    ) -> RoundStats {
        let mut acc = RoundAccumulator::new(round, opts, None);
        records.iter().for_each(|r| acc.add(r));
        acc.finish_records(duration_s)
    }
}

/// The latency metrics of a round, by their stats-file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LatencyMetric {
    /// Time to first token.
    Ttft,
    /// Time per output token after the first.
    Tpot,
    /// Inter-token latency (every gap between content chunks).
    Itl,
    /// End-to-end latency.
    E2el,
    /// Client queue time: waiting for a concurrency slot.
    Queue,
}

impl LatencyMetric {
    pub const ALL: [LatencyMetric; 5] = [
        LatencyMetric::Ttft,
        LatencyMetric::Tpot,
        LatencyMetric::Itl,
        LatencyMetric::E2el,
        LatencyMetric::Queue,
    ];

    /// The suffix of its keys (`ttft_ms` in `mean_ttft_ms`) and its histogram's name.
    pub fn key(self) -> &'static str {
        match self {
            LatencyMetric::Ttft => "ttft_ms",
            LatencyMetric::Tpot => "tpot_ms",
            LatencyMetric::Itl => "itl_ms",
            LatencyMetric::E2el => "e2el_ms",
            LatencyMetric::Queue => "queue_ms",
        }
    }

    pub fn from_key(key: &str) -> Option<LatencyMetric> {
        Self::ALL.into_iter().find(|m| m.key() == key)
    }
}

/// One metric's figures over a round; `None` when no completed request gave a sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricStats {
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// `(q, value)` for each reported percentile, ascending; p99 is always among them.
    pub percentiles: Vec<(f64, Option<f64>)>,
}

impl MetricStats {
    /// The `q`-th percentile when it was reported and had samples.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|(p, _)| *p == q)
            .and_then(|(_, v)| *v)
    }

    pub fn p99(&self) -> Option<f64> {
        self.percentile(99.0)
    }

    /// Sets one figure by its key prefix (`mean`, `p99.9`, ...); false for an unknown one.
    fn set(&mut self, stat: &str, v: Option<f64>) -> bool {
        match stat {
            "mean" => self.mean = v,
            "median" => self.median = v,
            "std" => self.std = v,
            "min" => self.min = v,
            "max" => self.max = v,
            p => {
                let Some(q) = p.strip_prefix('p').and_then(|q| q.parse::<f64>().ok()) else {
                    return false;
                };
                match self.percentiles.iter_mut().find(|(x, _)| *x == q) {
                    Some(slot) => slot.1 = v,
                    None => {
                        self.percentiles.push((q, v));
                        self.percentiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                }
            }
        }
        true
    }
}

/// A round's latency statistics, typed; in the stats file they are flat keys
/// `<stat>_<metric>` (`mean_ttft_ms`, `p99.9_itl_ms`), vLLM's names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencyStats {
    pub ttft: MetricStats,
    pub tpot: MetricStats,
    pub itl: MetricStats,
    pub e2el: MetricStats,
    pub queue: MetricStats,
}

impl LatencyStats {
    pub fn metric(&self, m: LatencyMetric) -> &MetricStats {
        match m {
            LatencyMetric::Ttft => &self.ttft,
            LatencyMetric::Tpot => &self.tpot,
            LatencyMetric::Itl => &self.itl,
            LatencyMetric::E2el => &self.e2el,
            LatencyMetric::Queue => &self.queue,
        }
    }

    pub fn metric_mut(&mut self, m: LatencyMetric) -> &mut MetricStats {
        match m {
            LatencyMetric::Ttft => &mut self.ttft,
            LatencyMetric::Tpot => &mut self.tpot,
            LatencyMetric::Itl => &mut self.itl,
            LatencyMetric::E2el => &mut self.e2el,
            LatencyMetric::Queue => &mut self.queue,
        }
    }

    /// The flat keys and their values, sorted by key (the stats file's order).
    pub fn flat(&self) -> BTreeMap<String, Option<f64>> {
        let mut out = BTreeMap::new();
        for m in LatencyMetric::ALL {
            let s = self.metric(m);
            let k = m.key();
            out.insert(format!("mean_{k}"), s.mean);
            out.insert(format!("median_{k}"), s.median);
            out.insert(format!("std_{k}"), s.std);
            out.insert(format!("min_{k}"), s.min);
            out.insert(format!("max_{k}"), s.max);
            for &(q, v) in &s.percentiles {
                out.insert(format!("p{}_{k}", pct_label(q)), v);
            }
        }
        out
    }

    /// Splits a flat key into its metric and stat prefix: `p99.9_ttft_ms` ->
    /// `(Ttft, "p99.9")`.
    fn parse_key(key: &str) -> Option<(LatencyMetric, &str)> {
        let (stat, metric) = key.split_once('_')?;
        Some((LatencyMetric::from_key(metric)?, stat))
    }
}

impl Serialize for LatencyStats {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.flat().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LatencyStats {
    /// Reads the latency keys of a round object (others are ignored: in the stats file
    /// the figures sit flat beside the round's other fields).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = LatencyStats;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("latency figures such as mean_ttft_ms")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LatencyStats, A::Error> {
                let mut out = LatencyStats::default();
                while let Some(key) = map.next_key::<String>()? {
                    match LatencyStats::parse_key(&key) {
                        Some((m, stat)) => {
                            let v: Option<f64> = map.next_value()?;
                            if !out.metric_mut(m).set(stat, v) {
                                return Err(serde::de::Error::custom(format!(
                                    "unknown latency figure `{key}`"
                                )));
                            }
                        }
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The agent's health during a round, as it reported it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub event_loop_lag_p99_ms: f64,
    /// Busy share of the whole host's CPU during the round (0 where unknown).
    #[serde(default)]
    pub host_cpu_busy: f64,
    /// Share of gaps between content chunks under 0.1 ms: both chunks out of one read.
    #[serde(default)]
    pub coalesced_chunk_share: f64,
    pub event_loop_lag_max_ms: f64,
    pub dispatch_lag_p99_ms: f64,
    pub cpu_seconds: f64,
    pub worker_threads: u32,
    pub peak_rss_bytes: u64,
    pub generator_saturated: bool,
    pub saturation_reason: String,
}

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

/// Round N against round 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline_round: u32,
    pub compared_round: u32,
    /// `(mean TTFT round 1 - mean TTFT round N) / mean TTFT round 1 * 100`.
    pub ttft_reduction_pct: Option<f64>,
    /// Same with the median TTFT.
    pub median_ttft_reduction_pct: Option<f64>,
    /// `(output throughput round N - round 1) / round 1 * 100`.
    pub throughput_increase_pct: Option<f64>,
    /// Same with request throughput.
    pub request_throughput_increase_pct: Option<f64>,
    /// `cache_hit_ratio` of round N minus that of round 1.
    pub cache_hit_ratio_delta: Option<f64>,
    /// Present when some request failed in one of the two rounds: the figures above then
    /// compare only the requests that succeeded in both, this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_requests: Option<u32>,
}

impl Comparison {
    /// The last round against round 1; `None` with fewer than two rounds.
    pub fn of(rounds: &[RoundStats]) -> Option<Comparison> {
        let first = rounds.iter().find(|r| r.round == 1)?;
        let last = rounds
            .iter()
            .filter(|r| r.round > 1)
            .max_by_key(|r| r.round)?;
        let reduction = |figure: fn(&MetricStats) -> Option<f64>| {
            let (a, b) = (figure(&first.latency.ttft)?, figure(&last.latency.ttft)?);
            (a > 0.0).then(|| (a - b) / a * 100.0)
        };
        let increase = |a: f64, b: f64| (a > 0.0).then(|| (b - a) / a * 100.0);
        Some(Comparison {
            baseline_round: first.round,
            compared_round: last.round,
            ttft_reduction_pct: reduction(|m| m.mean),
            median_ttft_reduction_pct: reduction(|m| m.median),
            throughput_increase_pct: increase(first.output_throughput, last.output_throughput),
            request_throughput_increase_pct: increase(
                first.request_throughput,
                last.request_throughput,
            ),
            cache_hit_ratio_delta: match (first.cache_hit_ratio, last.cache_hit_ratio) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            common_requests: None,
        })
    }

    /// The last round against round 1 on the requests that succeeded in both (by request
    /// id), when some failed in either; else as [`Comparison::of`]. Durations are those of
    /// the rounds; throughputs count the common requests only. `records` gives the
    /// scenario's records each time it is called (twice at most: they may come from disk).
    pub fn on_common_requests<I: Iterator<Item = RequestRecord>>(
        rounds: &[RoundStats],
        mut records: impl FnMut() -> I,
        opts: &StatsOptions,
    ) -> Option<Comparison> {
        let plain = Comparison::of(rounds)?;
        let (first, last) = (
            rounds.iter().find(|r| r.round == plain.baseline_round)?,
            rounds.iter().find(|r| r.round == plain.compared_round)?,
        );
        if first.failed == 0 && last.failed == 0 {
            return Some(plain);
        }
        let mut ok = [BTreeSet::new(), BTreeSet::new()];
        for r in records().filter(|r| !r.warmup && r.outcome == Outcome::Ok) {
            if r.round == first.round {
                ok[0].insert(r.request_id);
            } else if r.round == last.round {
                ok[1].insert(r.request_id);
            }
        }
        let common: BTreeSet<u32> = ok[0].intersection(&ok[1]).copied().collect();
        let mut acc = [
            RoundAccumulator::new(first.round, opts, None),
            RoundAccumulator::new(last.round, opts, None),
        ];
        for r in records().filter(|r| !r.warmup && common.contains(&r.request_id)) {
            if r.round == first.round {
                acc[0].add(&r);
            } else if r.round == last.round {
                acc[1].add(&r);
            }
        }
        let mut c = Comparison::of(&[
            acc[0].finish_records(first.duration),
            acc[1].finish_records(last.duration),
        ])?;
        c.common_requests = Some(common.len() as u32);
        Some(c)
    }
}

/// The `scenario` object of the stats file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub config_file: String,
    pub rounds: u32,
    pub concurrency: u32,
    /// Which tokens generated lengths are counted in: `engine` (its `/tokenize`),
    /// `tokenizer.json (PATH)`, or `words (estimate: one token per word)`.
    #[serde(default)]
    pub tokenizer: String,
    /// The agents a split scenario runs across at once (`placement: split`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split_across: Vec<String>,
    /// A scenario with `repeats:`: which of its runs this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<crate::plan::Repeat>,
}

/// How a scenario ended (`status` in the stats file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioStatus {
    /// Every round ran and at most the plan's `max_error_rate` of requests failed.
    Completed,
    /// Every round ran, but more requests failed than `max_error_rate` allows.
    Degraded,
    /// Some round could not run, or its result files could not be written.
    Failed,
    /// The user stopped the run during this scenario.
    Cancelled,
}

impl ScenarioStatus {
    pub fn label(self) -> &'static str {
        match self {
            ScenarioStatus::Completed => "completed",
            ScenarioStatus::Degraded => "degraded",
            ScenarioStatus::Failed => "failed",
            ScenarioStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for ScenarioStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What the isolation step before a scenario did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationStatus {
    /// No isolation step ran (the first scenario of the plan).
    None,
    /// The policy does not clear (`wait`, `none`).
    Skipped,
    Cleared,
    Restarted,
    Failed,
}

impl IsolationStatus {
    /// How bad, to pick the worst of several agents'.
    pub fn severity(self) -> u8 {
        match self {
            IsolationStatus::Cleared | IsolationStatus::Restarted => 0,
            IsolationStatus::Skipped => 1,
            IsolationStatus::None => 2,
            IsolationStatus::Failed => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            IsolationStatus::None => "none",
            IsolationStatus::Skipped => "skipped",
            IsolationStatus::Cleared => "cleared",
            IsolationStatus::Restarted => "restarted",
            IsolationStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for IsolationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether round 1 was really cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The engine's reports show nothing reused that a cold cache could not give.
    Verified,
    /// The engine reports neither cached tokens nor prefix-cache counters.
    Unverified,
    /// Round 1 reused a cache that should have been empty (see the evidence).
    Failed,
    /// No isolation step ran before this scenario.
    None,
}

impl Verdict {
    /// How bad, to pick the worst of several agents': verified < none < unverified < failed.
    pub fn severity(self) -> u8 {
        match self {
            Verdict::Verified => 0,
            Verdict::None => 1,
            Verdict::Unverified => 2,
            Verdict::Failed => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Unverified => "unverified",
            Verdict::Failed => "failed",
            Verdict::None => "none",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What isolation before the scenario did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationInfo {
    /// What was asked.
    pub policy: crate::plan::IsolationPolicy,
    /// What the isolation step did.
    pub status: IsolationStatus,
    pub detail: String,
    pub wait_s: f64,
    /// Whether round 1 was really cold; judged once round 1 ran ([`IsolationInfo::judge`]).
    pub verdict: Verdict,
    /// What the verdict rests on, in words.
    pub evidence: Vec<String>,
    /// The cold check after the clear: the previous round's first prompt sent again.
    pub probe: Option<ColdProbe>,
    /// Round-1 requests with more cached tokens than they could share (see [`judge`]).
    ///
    /// [`judge`]: IsolationInfo::judge
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excess: Vec<ExcessCached>,
    /// Why the restart failed, when this isolation restarted the engine and it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_error: Option<crate::agent::RestartError>,
    /// With `clear_or_restart`: the clear's cold check that found a warm cache, so that the
    /// engine was restarted instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_probe: Option<ColdProbe>,
    /// With `clear_or_restart`: the scenario's first attempt, whose round 1 found a cache
    /// that was not cold; the engine was restarted and the scenario ran again (once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_after: Option<Box<DiscardedAttempt>>,
    /// A split scenario: each agent's isolation and verdict, by agent name (the policy ran
    /// on every agent at once; the scenario's verdict is the worst of theirs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_agent: BTreeMap<String, IsolationInfo>,
}

/// A scenario attempt set aside because its round 1 was not a cold start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscardedAttempt {
    /// Its isolation and verdict, with the evidence.
    pub isolation: IsolationInfo,
    /// Its round 1 (its records are the results file's `discarded_records`).
    pub round1: Option<RoundStats>,
}

impl IsolationInfo {
    /// What an isolation step did, not judged yet (verdict `none`), with no evidence.
    pub fn new(
        policy: crate::plan::IsolationPolicy,
        status: IsolationStatus,
        detail: String,
    ) -> IsolationInfo {
        IsolationInfo {
            policy,
            status,
            detail,
            wait_s: 0.0,
            verdict: Verdict::None,
            evidence: Vec::new(),
            probe: None,
            excess: Vec::new(),
            restart_error: None,
            fallback_probe: None,
            rerun_after: None,
            per_agent: BTreeMap::new(),
        }
    }

    /// The isolation of a scenario split across agents, from each agent's: the worst
    /// status, each agent's detail, the first restart error; judged per agent later.
    pub fn across(
        policy: crate::plan::IsolationPolicy,
        parts: Vec<(String, IsolationInfo)>,
        wait_s: f64,
    ) -> IsolationInfo {
        let status = parts
            .iter()
            .map(|(_, i)| i.status)
            .max_by_key(|s| s.severity())
            .unwrap_or(IsolationStatus::None);
        let detail = parts
            .iter()
            .map(|(a, i)| format!("{a}: {}", i.detail))
            .collect::<Vec<_>>()
            .join("; ");
        IsolationInfo {
            wait_s,
            restart_error: parts.iter().find_map(|(_, i)| i.restart_error),
            per_agent: parts.into_iter().collect(),
            ..IsolationInfo::new(policy, status, detail)
        }
    }

    /// Judges round 1 of a split scenario agent by agent (each on its own records); the
    /// scenario's verdict is the worst, its evidence every agent's, its excess all of them.
    fn judge_across(mut self, round1: &ColdEvidence) -> IsolationInfo {
        let parts = std::mem::take(&mut self.per_agent);
        let mut judged = BTreeMap::new();
        self.evidence.clear();
        self.excess.clear();
        self.verdict = Verdict::Verified;
        for (agent, info) in parts {
            let mine = round1.per_agent.get(&agent).cloned().unwrap_or_default();
            let info = info.judge_part(mine);
            if info.verdict.severity() > self.verdict.severity() {
                self.verdict = info.verdict;
            }
            self.evidence
                .extend(info.evidence.iter().map(|e| format!("{agent}: {e}")));
            self.excess.extend(info.excess.iter().cloned());
            judged.insert(agent, info);
        }
        self.per_agent = judged;
        self
    }

    /// Judges whether round 1 was cold: from the probe after the clear, and from every
    /// round-1 request's excess cached tokens (cached beyond what its prompt shared with
    /// prompts sent before it in the round: see [`excess_cached_tokens`]). Excess is
    /// evidence in every scenario, the first one and those without isolation included.
    pub fn judge(self, round1: &ColdEvidence) -> IsolationInfo {
        if !self.per_agent.is_empty() {
            return self.judge_across(round1);
        }
        self.judge_part(round1.total())
    }

    fn judge_part(mut self, round1: AgentEvidence) -> IsolationInfo {
        let mut failed = Vec::new();
        let mut fine = Vec::new();
        let mut reported = false;
        self.excess = round1.excess;
        let judged = round1.judged;
        if judged > 0 {
            reported = true;
            if self.excess.is_empty() {
                let cached = round1.cached_tokens;
                fine.push(format!(
                    "round 1: no request had more cached tokens than it shared with prompts sent before it ({judged} requests, {cached} cached tokens in all)"
                ));
            } else {
                failed.push(excess_line(&self.excess, judged));
            }
        }
        if let Some(p) = &self.probe {
            reported |= probe_lines(p, &mut failed, &mut fine);
        }
        if let Some(p) = &self.fallback_probe {
            fine.push(format!(
                "the clear's cold check found a warm cache ({} of {} tokens reused), so the engine was restarted instead",
                p.cached_tokens.unwrap_or(0),
                p.prompt_tokens
            ));
        }
        if let Some(a) = &self.rerun_after {
            fine.push(format!(
                "ran again after an engine restart: the first attempt's round 1 was not cold ({} requests with excess cached tokens)",
                a.isolation.excess.len()
            ));
        }
        let (verdict, mut evidence) = match self.status {
            IsolationStatus::None | IsolationStatus::Skipped if !self.excess.is_empty() => {
                (Verdict::Failed, failed)
            }
            IsolationStatus::None | IsolationStatus::Skipped => {
                (Verdict::None, [failed, fine].concat())
            }
            IsolationStatus::Failed => {
                let what = match self.restart_error {
                    Some(e) => format!("the restart failed ({e}): {}", self.detail),
                    None => format!("the clear failed: {}", self.detail),
                };
                (Verdict::Failed, [vec![what], failed].concat())
            }
            _ if !failed.is_empty() => (Verdict::Failed, failed),
            _ if !reported => (
                Verdict::Unverified,
                vec!["the engine reports neither cached tokens nor prefix-cache counters: start vLLM with --enable-prompt-tokens-details (SGLang: --enable-cache-report) and keep its /metrics reachable".to_owned()],
            ),
            _ => (Verdict::Verified, fine),
        };
        if evidence.is_empty() {
            evidence.push("no request of round 1 could show it".into());
        }
        self.verdict = verdict;
        self.evidence = evidence;
        self
    }
}

/// The probe's evidence, as lines; true when it reported anything.
fn probe_lines(p: &ColdProbe, failed: &mut Vec<String>, fine: &mut Vec<String>) -> bool {
    let mut reported = false;
    if let Some(c) = p.cached_tokens {
        reported = true;
        let line = format!(
            "probe after the clear: the engine reused {c} of {} tokens of the previous round's first prompt",
            p.prompt_tokens
        );
        if is_stale(f64::from(c), f64::from(p.prompt_tokens)) {
            failed.push(line);
        } else {
            fine.push(line);
        }
    }
    if let (Some(h), Some(q)) = (p.counter_hits, p.counter_queries) {
        reported = true;
        let line =
            format!("prefix-cache counters over the probe: {h:.0} hits of {q:.0} queried tokens");
        if is_stale(h, q) {
            failed.push(line);
        } else {
            fine.push(line);
        }
    }
    if !p.error.is_empty() {
        fine.push(p.error.clone());
    }
    reported
}

/// "round 1: 3 of 40 requests had ... : request 12 (2810 cached of 2871, at most 61
/// shareable, TTFT 75 ms), ..." (the five largest).
fn excess_line(excess: &[ExcessCached], judged: usize) -> String {
    let mut worst: Vec<&ExcessCached> = excess.iter().collect();
    worst.sort_by_key(|e| std::cmp::Reverse(e.cached_tokens.saturating_sub(e.shareable_tokens)));
    let shown: Vec<String> = worst
        .iter()
        .take(5)
        .map(|e| {
            format!(
                "request {} ({} of {} tokens cached, at most {} shareable, TTFT {})",
                e.request_id,
                e.cached_tokens,
                e.prompt_tokens,
                e.shareable_tokens,
                e.ttft_ms.map_or("n/a".to_owned(), |t| format!("{t:.0} ms"))
            )
        })
        .collect();
    let more = if excess.len() > 5 {
        format!(", and {} more", excess.len() - 5)
    } else {
        String::new()
    };
    format!(
        "round 1: {} of {judged} requests had cached tokens beyond what they shared with prompts sent before them, so the cache was not cold: {}{more}",
        excess.len(),
        shown.join(", ")
    )
}

/// Tokens per block assumed when rounding what a prompt could share (vLLM's default; an
/// engine that caches per token shares no more).
pub const SHARE_BLOCK_TOKENS: u32 = 16;

/// How many of a round-1 request's prompt tokens an engine that was cold when the round
/// began could have cached: the prefix it shared with prompts sent before it (the agent's
/// count, scaled to the engine's tokenizer by the ratio of the two prompt counts), plus
/// the chat template's tokens and the estimate's slack (one block and 5 % of the prompt),
/// rounded up to a block. `None` when the agent did not say what it shared.
pub fn shareable_tokens(r: &RequestRecord) -> Option<u32> {
    let shared = f64::from(r.shared_prefix_tokens?);
    let prompt = f64::from(r.input_tokens());
    let scale = if r.prompt_tokens_client > 0 {
        (prompt / f64::from(r.prompt_tokens_client)).clamp(0.25, 4.0)
    } else {
        1.0
    };
    let bound = shared * scale + f64::from(SHARE_BLOCK_TOKENS) + 0.05 * prompt;
    let block = f64::from(SHARE_BLOCK_TOKENS);
    Some(((bound / block).ceil() * block) as u32)
}

/// Cached tokens of a round-1 request beyond [`shareable_tokens`]: evidence of a cache
/// that was not cold. `None` when the engine or the agent did not report what it takes.
pub fn excess_cached_tokens(r: &RequestRecord) -> Option<u32> {
    Some(r.cached_tokens?.saturating_sub(shareable_tokens(r)?))
}

/// What round 1's records say about a cold start, gathered record by record, per agent:
/// the completed requests whose engine reported cached tokens, those of them judged (their
/// shareable prefix known), the cached tokens in all, and each request with excess.
#[derive(Debug, Clone, Default)]
pub struct ColdEvidence {
    per_agent: BTreeMap<String, AgentEvidence>,
}

#[derive(Debug, Clone, Default)]
struct AgentEvidence {
    judged: usize,
    cached_tokens: u64,
    excess: Vec<ExcessCached>,
}

impl ColdEvidence {
    pub fn of(round1: &[RequestRecord]) -> ColdEvidence {
        let mut e = ColdEvidence::default();
        round1.iter().for_each(|r| e.add(r));
        e
    }

    /// One record of round 1; warmups, failures and requests without a cached-token count
    /// say nothing.
    pub fn add(&mut self, r: &RequestRecord) {
        let Some(cached) = r.cached_tokens else {
            return;
        };
        if r.warmup || r.outcome != Outcome::Ok {
            return;
        }
        if !self.per_agent.contains_key(&r.agent) {
            self.per_agent
                .insert(r.agent.clone(), AgentEvidence::default());
        }
        let Some(e) = self.per_agent.get_mut(&r.agent) else {
            return;
        };
        e.cached_tokens += u64::from(cached);
        if r.shared_prefix_tokens.is_some() {
            e.judged += 1;
        }
        if excess_cached_tokens(r).is_some_and(|x| x > 0) {
            e.excess.push(ExcessCached {
                request_id: r.request_id,
                cached_tokens: cached,
                shareable_tokens: shareable_tokens(r).unwrap_or(0),
                prompt_tokens: r.input_tokens(),
                ttft_ms: r.ttft_ms(),
            });
        }
    }

    /// All agents' evidence together.
    fn total(&self) -> AgentEvidence {
        let mut all = AgentEvidence::default();
        for e in self.per_agent.values() {
            all.judged += e.judged;
            all.cached_tokens += e.cached_tokens;
            all.excess.extend(e.excess.iter().cloned());
        }
        all
    }
}

/// A round-1 request that found more of its prompt cached than it could have shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExcessCached {
    pub request_id: u32,
    pub cached_tokens: u32,
    /// At most this much could have been cached on a cold engine.
    pub shareable_tokens: u32,
    pub prompt_tokens: u32,
    pub ttft_ms: Option<f64>,
}

/// The whole `<slug>_stats_<ts>.json` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioStats {
    pub kvbench_version: String,
    pub scenario: ScenarioInfo,
    pub status: ScenarioStatus,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub engine: BTreeMap<String, String>,
    pub agent: BTreeMap<String, String>,
    /// A split scenario: each of its agents as `agent` shows one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<BTreeMap<String, String>>,
    pub isolation: IsolationInfo,
    pub rounds: Vec<RoundStats>,
    pub comparison: Option<Comparison>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_wave_is_reported_apart_from_the_steady_state() {
        // Four at once, slow (a burst), then four more at steady speed; one failed.
        let mut rs: Vec<RequestRecord> = (0..4)
            .map(|i| rec(0.0, 100.0 + f64::from(i), 300.0, 4, Outcome::Ok))
            .chain((0..4).map(|i| rec(300.0, 20.0 + f64::from(i), 500.0, 4, Outcome::Ok)))
            .collect();
        rs.push(rec(0.0, 1.0, 2.0, 1, Outcome::Reset));
        let f = FirstWave::of(&rs, 4).expect("a wave and a steady state");
        assert_eq!((f.requests, f.steady_requests), (4, 4));
        assert!((f.mean_ttft_ms - 101.5).abs() < 1e-9, "{f:?}");
        assert!((f.steady_mean_ttft_ms - 21.5).abs() < 1e-9, "{f:?}");
        assert_eq!(
            FirstWave::of(&rs[..4], 4),
            None,
            "nothing after the first wave"
        );
    }

    fn rec(sent: f64, ttft: f64, end: f64, out: u32, outcome: Outcome) -> RequestRecord {
        let chunks: Vec<f64> = (0..out)
            .map(|i| ttft + (end - sent - ttft) * f64::from(i) / f64::from(out.max(2) - 1))
            .collect();
        RequestRecord {
            conversation_id: 0,
            chunk_offsets_ms: chunks,
            output_tokens: Some(out),
            output_chunks: out,
            outcome,
            ..RequestRecord::for_test(0, sent, ttft, end)
        }
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let s = Summary::of([1.0, 2.0, 3.0, 4.0]).expect("non-empty");
        assert_eq!(s.median(), 2.5);
        assert!((s.percentile(99.0) - 3.97).abs() < 1e-9);
        assert_eq!(s.percentile(0.0), 1.0);
        assert_eq!(s.percentile(100.0), 4.0);
        assert!((s.std - 1.118_033_988_749_895).abs() < 1e-12);
        assert!(Summary::of(std::iter::empty()).is_none());
        assert_eq!(pct_label(99.9), "99.9");
        assert_eq!(pct_label(50.0), "50");
    }

    #[test]
    fn failures_never_enter_latency_or_throughput() {
        let good = rec(0.0, 10.0, 100.0, 10, Outcome::Ok);
        let mut bad = rec(0.0, 1.0, 5000.0, 10, Outcome::Http5xx);
        bad.first_token_ms = Some(1.0);
        let s = RoundStats::from_records(1, 1.0, &[good.clone(), bad], &StatsOptions::default());
        assert_eq!((s.completed, s.failed), (1, 1));
        assert_eq!(s.outcomes.get(&Outcome::Http5xx), Some(&1));
        assert_eq!(s.latency.ttft.mean, Some(10.0));
        assert_eq!(s.latency.e2el.max, Some(100.0));
        assert_eq!(s.total_output_tokens, 10);
        assert_eq!(s.cache_hit_ratio, Some(0.8));
        assert!((s.latency.tpot.mean.unwrap_or(0.0) - 10.0).abs() < 1e-9);
        assert!((s.latency.itl.mean.unwrap_or(0.0) - 10.0).abs() < 1e-9);
        assert_eq!(s.max_concurrent_requests, 2);
    }

    #[test]
    fn rounds_compare_on_the_requests_that_succeeded_in_both() {
        let with = |round: u32, id: u32, ttft: f64, outcome: Outcome| RequestRecord {
            round,
            request_id: id,
            ..rec(0.0, ttft, 1000.0, 10, outcome)
        };
        // Round 1: request 1 failed; round 2: request 2 failed. Only request 0 is common.
        let records = [
            with(1, 0, 400.0, Outcome::Ok),
            with(1, 1, 400.0, Outcome::Http5xx),
            with(1, 2, 800.0, Outcome::Ok),
            with(2, 0, 100.0, Outcome::Ok),
            with(2, 1, 100.0, Outcome::Ok),
            with(2, 2, 100.0, Outcome::Http5xx),
        ];
        let opts = StatsOptions::default();
        let rounds: Vec<RoundStats> = [1, 2]
            .iter()
            .map(|&n| {
                let recs: Vec<RequestRecord> =
                    records.iter().filter(|r| r.round == n).cloned().collect();
                RoundStats::from_records(n, 1.0, &recs, &opts)
            })
            .collect();
        let plain = Comparison::of(&rounds).expect("two rounds");
        let c = Comparison::on_common_requests(&rounds, || records.iter().cloned(), &opts)
            .expect("two rounds");
        assert_eq!(c.common_requests, Some(1));
        assert_eq!(
            c.ttft_reduction_pct,
            Some(75.0),
            "request 0 alone: 400 -> 100 ms"
        );
        assert_ne!(plain.ttft_reduction_pct, c.ttft_reduction_pct);
        // Without failures the comparison is the plain one, with no extra key.
        let ok: Vec<RequestRecord> = records
            .iter()
            .filter(|r| r.outcome == Outcome::Ok)
            .cloned()
            .collect();
        let clean: Vec<RoundStats> = [1, 2]
            .iter()
            .map(|&n| {
                let recs: Vec<RequestRecord> = ok
                    .iter()
                    .filter(|r| r.round == n && r.request_id == 0)
                    .cloned()
                    .collect();
                RoundStats::from_records(n, 1.0, &recs, &opts)
            })
            .collect();
        let c = Comparison::on_common_requests(&clean, || ok.iter().cloned(), &opts)
            .expect("two rounds");
        assert_eq!(c.common_requests, None);
    }

    #[test]
    fn comparison_of_last_round_against_first() {
        let r1 = RoundStats::from_records(
            1,
            2.0,
            &[rec(0.0, 400.0, 1000.0, 10, Outcome::Ok)],
            &StatsOptions::default(),
        );
        let r2 = RoundStats::from_records(
            2,
            1.0,
            &[rec(0.0, 100.0, 700.0, 10, Outcome::Ok)],
            &StatsOptions::default(),
        );
        let c = Comparison::of(&[r1.clone(), r2]).expect("two rounds");
        assert_eq!(c.ttft_reduction_pct, Some(75.0));
        assert_eq!(c.throughput_increase_pct, Some(100.0));
        assert!(Comparison::of(&[r1]).is_none());
    }

    #[test]
    fn goodput_warmups_percentiles_and_token_peaks() {
        let fast = rec(0.0, 10.0, 100.0, 10, Outcome::Ok);
        let slow = rec(0.0, 500.0, 900.0, 10, Outcome::Ok);
        let mut warm = rec(-50.0, 1.0, -10.0, 10, Outcome::Ok);
        warm.warmup = true;
        let opts = StatsOptions {
            percentiles: vec![10.0, 99.9],
            goodput: Some(Goodput {
                ttft_ms: Some(100.0),
                ..Default::default()
            }),
        };
        let s = RoundStats::from_records(1, 2.0, &[fast, slow, warm], &opts);
        assert_eq!((s.completed, s.warmup_requests), (2, 1));
        assert_eq!(s.good_requests, Some(1));
        assert_eq!(s.request_goodput, Some(0.5));
        assert!(
            s.latency.ttft.percentile(99.9).is_some() && s.latency.ttft.percentile(10.0).is_some()
        );
        assert!(
            s.latency.flat().contains_key("p99_ttft_ms"),
            "p99 is always there"
        );
        assert!(!s.latency.flat().contains_key("p90_ttft_ms"));
        assert_eq!(s.latency.queue.mean, Some(0.0));
        // Both requests' 20 tokens arrive within the first second.
        assert_eq!(s.max_output_tokens_per_s, 20.0);
        let h = LatencyHistogram::from_base64(&s.histograms["ttft_ms"]).expect("decodes");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn latency_figures_keep_vllm_flat_keys_and_read_back() {
        let recs: Vec<RequestRecord> = (0..10)
            .map(|i| rec(0.0, 10.0 + f64::from(i), 100.0, 10, Outcome::Ok))
            .collect();
        let opts = StatsOptions {
            percentiles: vec![50.0, 99.9],
            goodput: None,
        };
        let s = RoundStats::from_records(1, 1.0, &recs, &opts);
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["mean_ttft_ms"], 14.5);
        assert_eq!(
            v["p99.9_ttft_ms"],
            s.latency.ttft.percentile(99.9).expect("p99.9")
        );
        assert!(v["p99_e2el_ms"].is_number() && v["median_queue_ms"].is_number());
        assert_eq!(v["outcomes"]["ok"], 10);
        let keys = s.latency.flat().len();
        assert_eq!(
            keys,
            5 * (5 + 3),
            "five figures and three percentiles per metric"
        );
        let back: RoundStats = serde_json::from_value(v).expect("reads back");
        assert_eq!(back.latency, s.latency);
        assert_eq!(back.outcomes, s.outcomes);
        // Fields that merely look like latency keys are not taken for them.
        assert_eq!(back.max_concurrent_requests, s.max_concurrent_requests);
    }

    #[test]
    fn histograms_written_by_earlier_builds_still_decode() {
        // The TTFT histogram of a quickstart round (20 requests), as written by the build
        // before base64 came from the base64 crate: files stay readable both ways.
        let old = "HISTFAAAAEx4nAFBAL7/HISTEwAAABkAAAAAAAAAAwAAAAAAAAABAAAAANaTpAA/8AAAAAAAAMF8AgACAAIXAgUCCQK/DwLtCAKHBwKnBQIBJQkT";
        let h = LatencyHistogram::from_base64(old).expect("decodes");
        assert_eq!(h.len(), 10);
        assert_eq!(h.to_base64().as_deref(), Some(old));
    }

    proptest::proptest! {
        /// Merging per-agent histograms gives exactly the histogram of all samples, and the
        /// merged form survives serialization.
        #[test]
        fn merged_histograms_equal_the_histogram_of_all_samples(
            samples in proptest::collection::vec((0.0f64..120_000.0, 0usize..16), 1..400),
            agents in 1usize..=16,
        ) {
            // Samples spread over 1-16 agents, each agent's histogram travelling encoded.
            let mut all = LatencyHistogram::new();
            let mut parts = vec![LatencyHistogram::new(); agents];
            for (v, agent) in &samples {
                all.record_ms(*v);
                parts[*agent % agents].record_ms(*v);
            }
            let mut merged = LatencyHistogram::new();
            for p in &parts {
                let p = match p.to_base64() {
                    Some(enc) => LatencyHistogram::from_base64(&enc).expect("decodes"),
                    None => LatencyHistogram::new(),
                };
                merged.merge(&p);
            }
            proptest::prop_assert_eq!(merged.len(), samples.len() as u64);
            for q in [50.0, 90.0, 99.0, 100.0] {
                proptest::prop_assert_eq!(merged.percentile_ms(q), all.percentile_ms(q));
            }
            proptest::prop_assert!(merged == all);
        }

        /// Percentiles lie within the samples and grow with q.
        #[test]
        fn percentiles_are_monotone_and_bounded(
            samples in proptest::collection::vec(-1e6f64..1e6, 1..200)
        ) {
            let s = Summary::of(samples.iter().copied()).expect("non-empty");
            let mut last = f64::MIN;
            for q in [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0] {
                let p = s.percentile(q);
                proptest::prop_assert!(p >= s.min && p <= s.max);
                proptest::prop_assert!(p >= last);
                last = p;
            }
        }
    }

    #[test]
    fn max_concurrency_counts_overlaps() {
        let a = rec(0.0, 1.0, 10.0, 2, Outcome::Ok);
        let b = rec(5.0, 1.0, 15.0, 2, Outcome::Ok);
        let c = rec(10.0, 1.0, 20.0, 2, Outcome::Ok);
        let s = RoundStats::from_records(1, 1.0, &[a, b, c], &StatsOptions::default());
        assert_eq!(s.max_concurrent_requests, 2);
    }
}
