//! The stats file, `<slug>_stats_<ts>.json` ([`ScenarioStats`]): a scenario's rounds
//! ([`RoundStats`]) with their latency figures under vLLM's flat key names
//! (`mean_ttft_ms`, `request_throughput`, ...), the comparison of its last round with round
//! 1, the engine and agents it ran on, and its isolation verdict.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::isolation::IsolationInfo;
use crate::record::{Outcome, RequestRecord};
use crate::stats::accumulate::RoundAccumulator;
use crate::stats::{pct_label, StatsOptions};

use crate::telemetry::EngineMetricsSummary;

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
    /// agents and runs (see [`crate::stats::LatencyHistogram`]).
    #[serde(default)]
    pub histograms: BTreeMap<String, String>,
    /// The engine's own counters over the round (server-side; null when it exports none).
    #[serde(default)]
    pub engine_metrics: Option<EngineMetricsSummary>,
    /// Hits against a perfect prefix cache's for the requests as they were sent, and the
    /// cache's efficiency (null when the agent or the engine said too little; see
    /// [`crate::stats::efficiency`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_efficiency: Option<crate::stats::efficiency::CacheEfficiency>,
    /// Cached prompt tokens by the tier that gave them, and what the tiers behind the
    /// engine said (absent when the engine has none that was asked; see
    /// [`crate::telemetry::CacheTiers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_tiers: Option<crate::telemetry::CacheTiers>,
    /// GPU, host and engine-load telemetry over the round's measured phase (null when the
    /// agent sent none); the samples are in `<slug>_telemetry_<ts>.jsonl`.
    #[serde(default)]
    pub telemetry: Option<crate::telemetry::TelemetrySummary>,
    /// A scenario split across agents (`placement: split`): each agent's part of the round
    /// on its own, by agent name (the round's own figures are the merged view: from all
    /// records together, over the union of the agents' time spans).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_agent: BTreeMap<String, RoundStats>,
    /// Each time an agent's stream broke and was resumed where it broke (nothing lost,
    /// nothing twice): after which event, and what broke it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed: Vec<String>,
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

/// Says why each round of a scenario (its rounds in order) fell short of a perfect cache,
/// from what its engine reported: its KV capacity against the working set so far, its KV
/// usage and preemptions (see [`crate::stats::efficiency::explain`]).
pub fn explain_efficiency(rounds: &mut [RoundStats]) {
    use crate::stats::efficiency::{explain, EngineFigures};
    let mut judged: Vec<_> = rounds
        .iter_mut()
        .map(|r| {
            let m = r.engine_metrics.as_ref();
            let figures = EngineFigures {
                capacity_tokens: m.and_then(|m| Some((m.num_gpu_blocks? * m.block_size?) as u64)),
                peak_usage: m.and_then(|m| m.max_kv_cache_usage_perc),
                preemptions: m.and_then(|m| m.preemptions),
            };
            (r.cache_efficiency.as_mut(), figures)
        })
        .collect();
    explain(&mut judged);
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
    /// The agent's nice value during the round (its `scheduling.nice`, else inherited).
    #[serde(default)]
    pub nice: i32,
    /// The CPUs the agent could run on during the round (empty: unknown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u32>,
}

impl AgentHealth {
    /// Where the agent ran, and what its config can change: for the saturation warning.
    pub fn scheduling_hint(&self) -> String {
        let cpus = if self.cpus.is_empty() {
            "unknown CPUs".to_owned()
        } else {
            format!("CPUs {}", cpu_list(&self.cpus))
        };
        format!(
            "the agent ran at nice {} on {cpus}; a higher priority (`scheduling: {{nice: -10}}` in its config) or CPUs of its own (`scheduling.cpus`) keep its clock on time",
            self.nice
        )
    }
}

/// [0, 1, 2, 5] -> "0-2,5".
fn cpu_list(cpus: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
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
    /// A scenario with `sweep:`: which of its loads this is, with its objectives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<crate::plan::SweepPoint>,
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
    /// Split across agents, one of them was lost (killed, frozen, cut off) or stopped the
    /// round: the others' records are kept, the error names the agent and when.
    Partial,
}

impl ScenarioStatus {
    pub fn label(self) -> &'static str {
        match self {
            ScenarioStatus::Completed => "completed",
            ScenarioStatus::Degraded => "degraded",
            ScenarioStatus::Failed => "failed",
            ScenarioStatus::Cancelled => "cancelled",
            ScenarioStatus::Partial => "partial",
        }
    }
}

impl std::fmt::Display for ScenarioStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The engine a scenario ran against (`engine` in the stats file). Fields in the file's
/// key order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScenarioEngine {
    /// `chat` or `completions`.
    pub api: String,
    /// As the scenario's config gives it (`sim`, `agent` or a URL).
    pub endpoint: String,
    /// The engine's URL as its agents know it (a split scenario's, comma-separated).
    pub engine_url: String,
    pub model: String,
}

/// An agent a scenario ran on (`agent` in the stats file; each of a split scenario's in
/// `agents`, and theirs together in `agent`). Fields in the file's key order; numbers are
/// written as text with three decimals, as they always were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScenarioAgent {
    pub address: String,
    /// A remote agent's clock offset from the coordinator's, measured before the run.
    #[serde(skip_serializing_if = "Option::is_none", with = "ms_text")]
    pub clock_offset_ms: Option<f64>,
    /// Said when the offset is past what keeps its times comparable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_warning: Option<String>,
    pub hostname: String,
    pub name: String,
    /// `split` for the agents of a split scenario together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::plan::Placement>,
    /// The round trip to it, measured with the offset.
    #[serde(skip_serializing_if = "Option::is_none", with = "ms_text")]
    pub rtt_ms: Option<f64>,
    pub version: String,
}

/// Milliseconds as text with three decimals (`"0.125"`), the stats file's form for them.
mod ms_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format!("{v:.3}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(f64),
        }
        Ok(match Option::<Either>::deserialize(d)? {
            Some(Either::Number(v)) => Some(v),
            Some(Either::Text(t)) => t.parse().ok(),
            None => None,
        })
    }
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
    pub engine: ScenarioEngine,
    pub agent: ScenarioAgent,
    /// A split scenario: each of its agents as `agent` shows one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<ScenarioAgent>,
    pub isolation: IsolationInfo,
    pub rounds: Vec<RoundStats>,
    pub comparison: Option<Comparison>,
    /// An earlier attempt at this scenario was interrupted (the coordinator was killed or
    /// stopped) and the run was resumed: when, and where that attempt's records are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<String>,
    /// Each time an agent found its engine down during a round, and what became of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engine_failures: Vec<EngineFailure>,
}

/// An engine found down during a round (`engine_failures` in the stats file): its requests
/// failed as they did (their classes are in the round's `failures`), and the agent either
/// reported it (`on_engine_failure: report`) or stopped the round's load and restarted the
/// engine (`restart`), after which the scenario ran again from round 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineFailure {
    pub agent: String,
    pub round: u32,
    /// When the agent found it down (RFC 3339, UTC, from the agent's clock), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Milliseconds from the round's start.
    pub at_ms: f64,
    /// What showed it: the failed requests' classes and the health check's answer.
    pub detail: String,
    /// What the agent's restart did; none: it did not restart the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<EngineRestart>,
    /// The scenario ran again from round 1 after the restart: the rounds of the attempt set
    /// aside (their records are the results file's `discarded_records`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<RoundStats>,
}

/// What an agent's restart after its engine went down did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineRestart {
    pub succeeded: bool,
    /// `command_failed`, `restart_timeout`, ... when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub detail: String,
    pub took_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Goodput, LatencyHistogram, Summary};

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
            seq: None,
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
            seq: None,
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
