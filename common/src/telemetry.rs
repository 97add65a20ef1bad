//! Telemetry samples streamed with the records, and their per-round summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The engine metric families kvbench reads, by what they mean: the one table that the
/// agent's scraper keeps ([`engine_metric::ALL`]) and the summaries read. Where engines
/// name a meaning differently, the first name a sample carries counts.
pub mod engine_metric {
    /// Prompt tokens looked up in the prefix cache. llama.cpp has no such counter: there
    /// it is cached + processed ([`PROMPT_TOKENS_PROCESSED`]).
    pub const PREFIX_CACHE_QUERIES: &[&str] = &["vllm:prefix_cache_queries_total"];
    /// Prompt tokens found in the prefix cache.
    pub const PREFIX_CACHE_HITS: &[&str] = &[
        "vllm:prefix_cache_hits_total",
        "llamacpp:prompt_tokens_cached_total",
    ];
    pub const EXTERNAL_PREFIX_CACHE_QUERIES: &[&str] =
        &["vllm:external_prefix_cache_queries_total"];
    pub const EXTERNAL_PREFIX_CACHE_HITS: &[&str] = &["vllm:external_prefix_cache_hits_total"];
    /// Every prompt token of the requests (cached or not).
    pub const PROMPT_TOKENS: &[&str] = &["vllm:prompt_tokens_total"];
    /// Prompt tokens computed, cached ones excluded (llama.cpp's `prompt_tokens_total`).
    pub const PROMPT_TOKENS_PROCESSED: &[&str] = &["llamacpp:prompt_tokens_total"];
    pub const GENERATION_TOKENS: &[&str] = &[
        "vllm:generation_tokens_total",
        "llamacpp:tokens_predicted_total",
    ];
    pub const PREEMPTIONS: &[&str] = &["vllm:num_preemptions_total"];
    pub const REQUESTS_RUNNING: &[&str] = &[
        "vllm:num_requests_running",
        "sglang:num_running_reqs",
        "llamacpp:requests_processing",
    ];
    pub const REQUESTS_WAITING: &[&str] = &[
        "vllm:num_requests_waiting",
        "sglang:num_queue_reqs",
        "llamacpp:requests_deferred",
    ];
    /// `vllm:gpu_cache_usage_perc` is the older name of `kv_cache_usage_perc`; llama.cpp
    /// exports no KV usage.
    pub const KV_CACHE_USAGE: &[&str] = &[
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "sglang:token_usage",
    ];
    /// Prompt tokens served from a cache, by where they came from (vLLM 0.32: `source` is
    /// `local_compute`, `local_cache_hit` or `external_kv_transfer`; for the cached ones
    /// `device`, `host`, ...). Kept summed, and per source as `FAMILY:SOURCE`.
    pub const BY_SOURCE: &[&str] = &[
        "vllm:prompt_tokens_by_source_total",
        "vllm:prompt_tokens_cached_by_source_total",
    ];
    /// Prompt tokens found in any cache tier.
    pub const PROMPT_TOKENS_CACHED: &[&str] = &["vllm:prompt_tokens_cached_total"];
    /// vLLM's cache configuration (an info gauge); its `block_size` label is kept as
    /// [`BLOCK_SIZE`].
    pub const CACHE_CONFIG: &[&str] = &["vllm:cache_config_info"];
    /// The KV block size in tokens, from [`CACHE_CONFIG`]'s `block_size` label.
    pub const BLOCK_SIZE: &str = "vllm:cache_config_info:block_size";
    /// The KV blocks the engine has, from [`CACHE_CONFIG`]'s `num_gpu_blocks` label.
    pub const NUM_GPU_BLOCKS: &str = "vllm:cache_config_info:num_gpu_blocks";

    /// LMCache's counters and gauges (on vLLM's `/metrics` when LMCache runs in it, else
    /// at the agent's `telemetry.lmcache_metrics_url`).
    pub const LMCACHE_HIT_TOKENS: &[&str] = &["lmcache:num_hit_tokens_total"];
    pub const LMCACHE_REQUESTED_TOKENS: &[&str] = &["lmcache:num_requested_tokens_total"];
    pub const LMCACHE_RETRIEVE_HIT_RATE: &[&str] = &["lmcache:retrieve_hit_rate"];
    pub const LMCACHE_LOCAL_CACHE_USAGE: &[&str] = &["lmcache:local_cache_usage"];
    /// LMCache's retrieve-time histogram (seconds): its sum and count.
    pub const LMCACHE_RETRIEVE_TIME_SUM: &[&str] = &["lmcache:time_to_retrieve_sum"];
    pub const LMCACHE_RETRIEVE_TIME_COUNT: &[&str] = &["lmcache:time_to_retrieve_count"];
    /// The Mooncake store master's (at the agent's `telemetry.mooncake_metrics_url`).
    pub const MOONCAKE_KEYS: &[&str] = &["master_key_count"];
    pub const MOONCAKE_ALLOCATED_BYTES: &[&str] = &["master_allocated_bytes"];
    pub const MOONCAKE_EVICTED_KEYS: &[&str] = &["master_evicted_key_count"];

    /// Every family above, with what it means (the README's table is checked against
    /// it): what the agent keeps of a scrape (summed over label sets).
    pub const ALL: [(&str, &[&str]); 23] = [
        ("prefix_cache_queries", PREFIX_CACHE_QUERIES),
        ("prefix_cache_hits", PREFIX_CACHE_HITS),
        (
            "external_prefix_cache_queries",
            EXTERNAL_PREFIX_CACHE_QUERIES,
        ),
        ("external_prefix_cache_hits", EXTERNAL_PREFIX_CACHE_HITS),
        ("prompt_tokens", PROMPT_TOKENS),
        ("prompt_tokens_processed", PROMPT_TOKENS_PROCESSED),
        ("generation_tokens", GENERATION_TOKENS),
        ("preemptions", PREEMPTIONS),
        ("requests_running", REQUESTS_RUNNING),
        ("requests_waiting", REQUESTS_WAITING),
        ("kv_cache_usage", KV_CACHE_USAGE),
        ("prompt_tokens_by_source", BY_SOURCE),
        ("prompt_tokens_cached", PROMPT_TOKENS_CACHED),
        ("cache_config", CACHE_CONFIG),
        ("lmcache_hit_tokens", LMCACHE_HIT_TOKENS),
        ("lmcache_requested_tokens", LMCACHE_REQUESTED_TOKENS),
        ("lmcache_retrieve_hit_rate", LMCACHE_RETRIEVE_HIT_RATE),
        ("lmcache_local_cache_usage", LMCACHE_LOCAL_CACHE_USAGE),
        ("lmcache_retrieve_time_sum", LMCACHE_RETRIEVE_TIME_SUM),
        ("lmcache_retrieve_time_count", LMCACHE_RETRIEVE_TIME_COUNT),
        ("mooncake_keys", MOONCAKE_KEYS),
        ("mooncake_allocated_bytes", MOONCAKE_ALLOCATED_BYTES),
        ("mooncake_evicted_keys", MOONCAKE_EVICTED_KEYS),
    ];

    /// Every name of [`ALL`], flat.
    pub fn names() -> Vec<&'static str> {
        ALL.iter().flat_map(|(_, n)| n.iter().copied()).collect()
    }
}

/// The sum over agents of each agent's counter delta, from its first sample to its last
/// (samples in arrival order, one source); `None` when no agent exports the counter, or a
/// counter went backwards (the engine restarted). The one rule for every counter.
pub fn counter_delta(samples: &[&TelemetrySample], names: &[&str]) -> Option<f64> {
    let mut agents: Vec<&str> = samples.iter().map(|s| s.agent.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    let mut total = None;
    for agent in agents {
        let mine: Vec<&&TelemetrySample> = samples.iter().filter(|s| s.agent == agent).collect();
        let value = |s: &TelemetrySample| names.iter().find_map(|n| s.values.get(*n).copied());
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
            continue;
        };
        if let (Some(a), Some(b)) = (value(first), value(last)) {
            if b < a {
                return None;
            }
            total = Some(total.unwrap_or(0.0) + b - a);
        }
    }
    total
}

/// Prompt tokens found in and looked up in the prefix cache over a round, each agent's
/// delta summed: vLLM counts both; llama.cpp counts cached and processed tokens, whose sum
/// is what was looked up. The one rule for both engine summaries.
pub fn prefix_cache_counts(samples: &[&TelemetrySample]) -> (Option<f64>, Option<f64>) {
    use engine_metric as m;
    let hits = counter_delta(samples, m::PREFIX_CACHE_HITS);
    let queries = counter_delta(samples, m::PREFIX_CACHE_QUERIES).or_else(|| {
        let processed = counter_delta(samples, m::PROMPT_TOKENS_PROCESSED)?;
        Some(processed + hits?)
    });
    (hits, queries)
}

/// `hits / queries` when both are known and something was queried.
fn ratio(hits: Option<f64>, queries: Option<f64>) -> Option<f64> {
    match (hits, queries) {
        (Some(h), Some(q)) if q > 0.0 => Some(h / q),
        _ => None,
    }
}

/// Where a telemetry sample comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelemetrySource {
    /// The host's GPUs, through NVML.
    Nvml,
    /// The host's CPU, memory and network, through sysinfo.
    Host,
    /// The engine's Prometheus `/metrics`.
    EngineMetrics,
}

impl TelemetrySource {
    pub const ALL: [TelemetrySource; 3] = [
        TelemetrySource::Nvml,
        TelemetrySource::Host,
        TelemetrySource::EngineMetrics,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TelemetrySource::Nvml => "nvml",
            TelemetrySource::Host => "host",
            TelemetrySource::EngineMetrics => "engine_metrics",
        }
    }

    pub fn from_label(s: &str) -> Option<TelemetrySource> {
        Self::ALL.into_iter().find(|x| x.label() == s)
    }
}

/// How a round's GPU energy was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyMethod {
    /// The driver's total-energy counter (deltas).
    Counter,
    /// Power samples integrated (trapezoids), where a GPU has no counter.
    PowerIntegral,
    /// Some GPUs one way, some the other.
    Mixed,
}

impl EnergyMethod {
    pub fn label(self) -> &'static str {
        match self {
            EnergyMethod::Counter => "counter",
            EnergyMethod::PowerIntegral => "power_integral",
            EnergyMethod::Mixed => "mixed",
        }
    }
}

/// One sample from one source (`engine_metrics`: the engine's `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    pub round: u32,
    pub agent: String,
    /// Milliseconds since the round's start on the agent's clock.
    pub t_ms: f64,
    pub source: TelemetrySource,
    pub values: BTreeMap<String, f64>,
    /// Reads that failed, each said once per round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What the engine's own counters say about one round (server-side, as the engine claims;
/// the client-side figures come from the records). Counter fields are deltas from the
/// sample before the round's first request to the sample after its last; they are null when
/// the engine does not export the counter, or when it went backwards (engine restarted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineMetricsSummary {
    pub samples: u32,
    pub prefix_cache_queries: Option<f64>,
    pub prefix_cache_hits: Option<f64>,
    /// `prefix_cache_hits / prefix_cache_queries` over the round.
    pub prefix_cache_hit_rate: Option<f64>,
    pub external_prefix_cache_hit_rate: Option<f64>,
    pub prompt_tokens: Option<f64>,
    pub generation_tokens: Option<f64>,
    pub preemptions: Option<f64>,
    pub max_num_requests_running: Option<f64>,
    pub max_num_requests_waiting: Option<f64>,
    pub max_kv_cache_usage_perc: Option<f64>,
    /// The engine's KV block size in tokens, where it says (vLLM's `cache_config_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<f64>,
    /// The engine's KV blocks, where it says (vLLM's `cache_config_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_gpu_blocks: Option<f64>,
    /// Prompt tokens over the round by where they came from (vLLM's `*_by_source_total`:
    /// `local_compute`, `local_cache_hit`, `external_kv_transfer`; cached: `cached_device`,
    /// `cached_host`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prompt_tokens_by_source: BTreeMap<String, f64>,
}

/// Prompt tokens a round found cached, by the tier that gave them, and what the tiers
/// behind the engine said of the round: present when the engine has a tier behind its own
/// prefix cache that was asked (vLLM's KV connector: CPU offload, LMCache, Mooncake), or an
/// LMCache or Mooncake figure was scraped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheTiers {
    /// The engine's own prefix cache (vLLM's `prefix_cache_hits`, which leave the
    /// connector's out).
    pub device_tokens: Option<f64>,
    /// Its KV connector's tiers (`external_prefix_cache_hits`).
    pub external_tokens: Option<f64>,
    /// Prompt tokens looked up behind the connector (`external_prefix_cache_queries`).
    pub external_queried_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache: Option<LmcacheFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mooncake: Option<MooncakeFigures>,
    /// As the requests themselves reported them (SGLang's HiCache, per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestTiers>,
}

/// The cached tokens by tier summed over a round's completed requests that reported them
/// (SGLang's `cached_tokens_details`: device, host, storage).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestTiers {
    /// Completed requests that reported their tiers.
    pub requests: u32,
    pub device_tokens: u64,
    pub host_tokens: u64,
    /// Null when no request reported a storage tier.
    pub storage_tokens: Option<u64>,
}

impl RequestTiers {
    pub fn add(&mut self, d: &crate::record::CachedTokensDetails) {
        self.requests += 1;
        self.device_tokens += u64::from(d.device);
        self.host_tokens += u64::from(d.host);
        if let Some(s) = d.storage {
            *self.storage_tokens.get_or_insert(0) += u64::from(s);
        }
    }
}

/// LMCache over a round: counter deltas, the gauges' last or peak values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LmcacheFigures {
    pub hit_tokens: Option<f64>,
    pub requested_tokens: Option<f64>,
    /// Its own retrieve hit rate at the round's end.
    pub retrieve_hit_rate: Option<f64>,
    /// Its local (CPU RAM) cache usage at its peak.
    pub local_cache_usage_max: Option<f64>,
    /// Mean time of a retrieve over the round, seconds.
    pub retrieve_time_mean_s: Option<f64>,
}

/// The Mooncake store's master over a round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MooncakeFigures {
    /// Objects (KV chunks) stored, at the peak.
    pub keys_max: Option<f64>,
    pub allocated_bytes_max: Option<f64>,
    /// Objects evicted during the round.
    pub evicted_keys: Option<f64>,
}

/// A round's `engine_metrics` samples in arrival order, and what the summaries read of them.
struct EngineSamples<'a>(Vec<&'a TelemetrySample>);

impl<'a> EngineSamples<'a> {
    fn of(samples: impl IntoIterator<Item = &'a TelemetrySample>) -> Self {
        EngineSamples(
            samples
                .into_iter()
                .filter(|s| s.source == TelemetrySource::EngineMetrics)
                .collect(),
        )
    }

    /// A counter's delta over the round ([`counter_delta`]).
    fn delta(&self, names: &[&str]) -> Option<f64> {
        counter_delta(&self.0, names)
    }

    /// Each sample's value of a family (its first name a sample carries).
    fn values(&self, names: &[&str]) -> Vec<f64> {
        self.0
            .iter()
            .filter_map(|x| names.iter().find_map(|n| x.values.get(*n).copied()))
            .collect()
    }

    fn max(&self, names: &[&str]) -> Option<f64> {
        self.values(names).into_iter().reduce(f64::max)
    }
}

impl CacheTiers {
    /// Cached tokens from the tiers behind the engine's own prefix cache: its KV
    /// connector's (vLLM), else the host and storage tiers its requests reported (SGLang).
    pub fn beyond_device(&self) -> Option<f64> {
        self.external_tokens.or_else(|| {
            let r = self.requests.as_ref()?;
            Some((r.host_tokens + r.storage_tokens.unwrap_or(0)) as f64)
        })
    }

    /// From a round's `engine_metrics` samples and the tiers its requests reported; `None`
    /// when nothing beyond the engine's own prefix cache was asked or reported.
    pub fn of<'a>(
        samples: impl IntoIterator<Item = &'a TelemetrySample>,
        requests: Option<RequestTiers>,
    ) -> Option<CacheTiers> {
        use engine_metric as m;
        let s = EngineSamples::of(samples);
        let (delta, max) = (|n: &[&str]| s.delta(n), |n: &[&str]| s.max(n));
        let last = |n: &[&str]| s.values(n).last().copied();
        let lmcache = LmcacheFigures {
            hit_tokens: delta(m::LMCACHE_HIT_TOKENS),
            requested_tokens: delta(m::LMCACHE_REQUESTED_TOKENS),
            retrieve_hit_rate: last(m::LMCACHE_RETRIEVE_HIT_RATE),
            local_cache_usage_max: max(m::LMCACHE_LOCAL_CACHE_USAGE),
            retrieve_time_mean_s: ratio(
                delta(m::LMCACHE_RETRIEVE_TIME_SUM),
                delta(m::LMCACHE_RETRIEVE_TIME_COUNT),
            ),
        };
        let mooncake = MooncakeFigures {
            keys_max: max(m::MOONCAKE_KEYS),
            allocated_bytes_max: max(m::MOONCAKE_ALLOCATED_BYTES),
            evicted_keys: delta(m::MOONCAKE_EVICTED_KEYS),
        };
        let tiers = CacheTiers {
            device_tokens: prefix_cache_counts(&s.0).0,
            external_tokens: delta(m::EXTERNAL_PREFIX_CACHE_HITS),
            external_queried_tokens: delta(m::EXTERNAL_PREFIX_CACHE_QUERIES),
            lmcache: (lmcache != LmcacheFigures::default()).then_some(lmcache),
            mooncake: (mooncake != MooncakeFigures::default()).then_some(mooncake),
            requests: requests.filter(|r| r.requests > 0),
        };
        let asked = |v: Option<f64>| v.is_some_and(|v| v > 0.0);
        (asked(tiers.external_queried_tokens)
            || asked(tiers.external_tokens)
            || tiers.lmcache.is_some()
            || tiers.mooncake.is_some()
            || tiers.requests.is_some())
        .then_some(tiers)
    }
}

impl EngineMetricsSummary {
    /// Summarises a round's `engine_metrics` samples (in arrival order); `None` without any.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a TelemetrySample>) -> Option<Self> {
        let samples = EngineSamples::of(samples);
        // An engine without metrics has none; a sample without values (a boundary scrape
        // that failed) stays in, so that the deltas it would have ended are null.
        if samples.0.iter().all(|x| x.values.is_empty()) {
            return None;
        }
        let (delta, max) = (|n: &[&str]| samples.delta(n), |n: &[&str]| samples.max(n));
        let s = &samples.0;
        use engine_metric as m;
        let (hits, queries) = prefix_cache_counts(s);
        // vLLM counts every prompt token; llama.cpp the processed ones, plus the cached.
        let prompt_tokens = delta(m::PROMPT_TOKENS).or(queries.filter(|_| {
            s.iter().any(|x| {
                m::PROMPT_TOKENS_PROCESSED
                    .iter()
                    .any(|n| x.values.contains_key(*n))
            })
        }));
        Some(EngineMetricsSummary {
            samples: s.len() as u32,
            prefix_cache_queries: queries,
            prefix_cache_hits: hits,
            prefix_cache_hit_rate: ratio(hits, queries),
            external_prefix_cache_hit_rate: ratio(
                delta(m::EXTERNAL_PREFIX_CACHE_HITS),
                delta(m::EXTERNAL_PREFIX_CACHE_QUERIES),
            ),
            prompt_tokens,
            generation_tokens: delta(m::GENERATION_TOKENS),
            preemptions: delta(m::PREEMPTIONS),
            max_num_requests_running: max(m::REQUESTS_RUNNING),
            max_num_requests_waiting: max(m::REQUESTS_WAITING),
            max_kv_cache_usage_perc: max(m::KV_CACHE_USAGE),
            block_size: max(&[m::BLOCK_SIZE]),
            num_gpu_blocks: max(&[m::NUM_GPU_BLOCKS]),
            prompt_tokens_by_source: by_source(s),
        })
    }
}

/// Each `FAMILY:SOURCE` counter of [`engine_metric::BY_SOURCE`] over the round, keyed by
/// its source (`cached_` before the cached-tokens family's).
fn by_source(s: &[&TelemetrySample]) -> BTreeMap<String, f64> {
    let mut keys: Vec<&str> = s
        .iter()
        .flat_map(|x| x.values.keys())
        .map(String::as_str)
        .filter(|k| {
            engine_metric::BY_SOURCE
                .iter()
                .any(|f| k.strip_prefix(f).is_some_and(|r| r.starts_with(':')))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let d = counter_delta(s, &[k])?;
            let (family, source) = k.rsplit_once(':')?;
            let name = if family == engine_metric::BY_SOURCE[1] {
                format!("cached_{source}")
            } else {
                source.to_owned()
            };
            Some((name, d))
        })
        .collect()
}

/// What the agents' telemetry says about one round (`telemetry` in each round's stats):
/// GPUs (NVML), hosts (sysinfo) and the engine's load and cache counters. A section is
/// null when no agent sent that source (no NVML: no `gpu`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySummary {
    pub gpu: Option<GpuSummary>,
    pub host: Option<HostSummary>,
    pub engine: Option<EngineLoad>,
    /// Reads that failed during the round ("gpu0 power_w: Not Supported"), by agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// All GPUs of the round's agents together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSummary {
    /// NVML samples (one covers every GPU of one agent).
    pub samples: u32,
    pub gpus: u32,
    /// Mean and max SM utilisation over every GPU and sample, percent.
    pub util_mean_pct: Option<f64>,
    pub util_max_pct: Option<f64>,
    pub mem_util_mean_pct: Option<f64>,
    /// The most GPU memory in use at once, summed over GPUs.
    pub mem_used_peak_bytes: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    /// Power drawn by all GPUs together: mean and peak, watts.
    pub power_mean_w: Option<f64>,
    pub power_max_w: Option<f64>,
    /// Energy all GPUs used over the round's measured phase, joules.
    pub energy_j: Option<f64>,
    /// `counter` (the driver's energy counter), `power_integral` (power samples
    /// integrated over time, for GPUs without the counter), or `mixed`.
    pub energy_method: Option<EnergyMethod>,
    /// `energy_j` over the round's output tokens.
    pub j_per_output_token: Option<f64>,
    pub temp_max_c: Option<f64>,
    pub sm_clock_mean_mhz: Option<f64>,
    pub per_gpu: Vec<PerGpu>,
}

/// One GPU of one agent over the round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerGpu {
    pub agent: String,
    pub index: u32,
    pub util_mean_pct: Option<f64>,
    pub util_max_pct: Option<f64>,
    pub mem_used_peak_bytes: Option<f64>,
    pub power_mean_w: Option<f64>,
    pub energy_j: Option<f64>,
    pub temp_max_c: Option<f64>,
}

/// The agents' hosts over the round (summed over agents where several sent samples).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    pub samples: u32,
    /// Busy share of all the host's CPUs, percent.
    pub cpu_mean_pct: Option<f64>,
    pub cpu_max_pct: Option<f64>,
    pub mem_used_peak_bytes: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    /// Bytes received and sent over the round on interfaces other than loopback.
    pub net_rx_bytes: Option<f64>,
    pub net_tx_bytes: Option<f64>,
}

/// The engine's own view of the round, from its `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineLoad {
    pub samples: u32,
    /// Server-side prefix-cache hit ratio: hits over queried tokens, counter deltas.
    pub prefix_cache_hit_ratio: Option<f64>,
    /// Mean of the running and waiting request gauges over the samples taken during the
    /// round (null when the round was shorter than the scrape interval).
    pub requests_running_mean: Option<f64>,
    pub requests_waiting_mean: Option<f64>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// `Some(sum)` of the values present, `None` if none is.
fn sum_some(v: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    v.into_iter()
        .flatten()
        .fold(None, |a, x| Some(a.unwrap_or(0.0) + x))
}

/// Energy from a series of `(t_ms, counter_mj)` and `(t_ms, power_w)`: the counter's
/// delta when it has two readings and did not go backwards, else the power integrated
/// (trapezoids). Joules, and which way it was found.
fn energy(counter: &[(f64, f64)], power: &[(f64, f64)]) -> Option<(f64, EnergyMethod)> {
    if let (Some(a), Some(b)) = (counter.first(), counter.last()) {
        if counter.len() >= 2 && b.1 >= a.1 {
            return Some(((b.1 - a.1) / 1000.0, EnergyMethod::Counter));
        }
    }
    if power.len() < 2 {
        return None;
    }
    let j = power
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).max(0.0) / 1000.0 * (w[0].1 + w[1].1) / 2.0)
        .sum();
    Some((j, EnergyMethod::PowerIntegral))
}

/// A GPU reading's field, as NVML samples carry it (`gpu0.util_pct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuField {
    UtilPct,
    MemUtilPct,
    MemUsedBytes,
    MemTotalBytes,
    PowerW,
    EnergyMj,
    TempC,
    SmClockMhz,
    /// Number of compute processes.
    Processes,
}

impl GpuField {
    pub const ALL: [GpuField; 9] = [
        GpuField::UtilPct,
        GpuField::MemUtilPct,
        GpuField::MemUsedBytes,
        GpuField::MemTotalBytes,
        GpuField::PowerW,
        GpuField::EnergyMj,
        GpuField::TempC,
        GpuField::SmClockMhz,
        GpuField::Processes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GpuField::UtilPct => "util_pct",
            GpuField::MemUtilPct => "mem_util_pct",
            GpuField::MemUsedBytes => "mem_used_bytes",
            GpuField::MemTotalBytes => "mem_total_bytes",
            GpuField::PowerW => "power_w",
            GpuField::EnergyMj => "energy_mj",
            GpuField::TempC => "temp_c",
            GpuField::SmClockMhz => "sm_clock_mhz",
            GpuField::Processes => "processes",
        }
    }
}

/// The key of a value in an NVML sample: `gpu{index}.{field}`, or
/// `gpu{index}.pid{pid}.mem_bytes` for one process's GPU memory. The telemetry file keeps
/// these strings; code reads and writes them through this type only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuKey {
    Field { index: u32, field: GpuField },
    ProcessMem { index: u32, pid: u32 },
}

impl GpuKey {
    pub fn parse(key: &str) -> Option<GpuKey> {
        let (g, rest) = key.strip_prefix("gpu")?.split_once('.')?;
        let index = g.parse().ok()?;
        if let Some(pid) = rest
            .strip_prefix("pid")
            .and_then(|r| r.strip_suffix(".mem_bytes"))
        {
            return Some(GpuKey::ProcessMem {
                index,
                pid: pid.parse().ok()?,
            });
        }
        let field = GpuField::ALL.into_iter().find(|f| f.name() == rest)?;
        Some(GpuKey::Field { index, field })
    }

    pub fn index(self) -> u32 {
        match self {
            GpuKey::Field { index, .. } | GpuKey::ProcessMem { index, .. } => index,
        }
    }
}

impl std::fmt::Display for GpuKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuKey::Field { index, field } => write!(f, "gpu{index}.{}", field.name()),
            GpuKey::ProcessMem { index, pid } => write!(f, "gpu{index}.pid{pid}.mem_bytes"),
        }
    }
}

/// One NVML sample with its keys parsed: `(gpu index, field) -> value`.
struct GpuSample {
    t_ms: f64,
    fields: BTreeMap<(u32, GpuField), f64>,
}

impl GpuSample {
    fn of(s: &TelemetrySample) -> GpuSample {
        let fields = s
            .values
            .iter()
            .filter_map(|(k, v)| match GpuKey::parse(k)? {
                GpuKey::Field { index, field } => Some(((index, field), *v)),
                GpuKey::ProcessMem { .. } => None,
            })
            .collect();
        GpuSample {
            t_ms: s.t_ms,
            fields,
        }
    }

    /// The sum of `field` over this sample's GPUs; `None` when no GPU has it.
    fn summed(&self, field: GpuField) -> Option<f64> {
        sum_some(
            self.fields
                .iter()
                .map(|(&(_, f), v)| (f == field).then_some(*v)),
        )
    }
}

/// A round's samples, split by agent (sorted by name) and source, in arrival order.
struct BySource<'a> {
    samples: &'a [TelemetrySample],
    agents: Vec<&'a str>,
}

impl<'a> BySource<'a> {
    fn new(samples: &'a [TelemetrySample]) -> Self {
        let mut agents: Vec<&str> = samples.iter().map(|s| s.agent.as_str()).collect();
        agents.sort_unstable();
        agents.dedup();
        BySource { samples, agents }
    }

    fn of(&self, agent: &str, source: TelemetrySource) -> Vec<&'a TelemetrySample> {
        self.samples
            .iter()
            .filter(|s| s.agent == agent && s.source == source)
            .collect()
    }
}

impl TelemetrySummary {
    /// Summarises a round's samples (in arrival order); `output_tokens` are the round's
    /// measured output tokens. `None` without any sample.
    pub fn of(samples: &[TelemetrySample], output_tokens: u64) -> Option<TelemetrySummary> {
        if samples.is_empty() {
            return None;
        }
        let by = BySource::new(samples);
        let notes = samples
            .iter()
            .flat_map(|s| s.notes.iter().map(move |n| format!("{}: {n}", s.agent)))
            .collect();
        Some(TelemetrySummary {
            gpu: GpuSummary::of(&by, output_tokens),
            host: HostSummary::of(&by),
            engine: EngineLoad::of(&by),
            notes,
        })
    }
}

/// Per-GPU series and per-agent sums, gathered before they are summarised.
#[derive(Default)]
struct GpuSeries {
    per_gpu: Vec<PerGpu>,
    utils: Vec<f64>,
    mem_utils: Vec<f64>,
    clocks: Vec<f64>,
    temps: Vec<f64>,
    energies: Vec<f64>,
    methods: Vec<EnergyMethod>,
    /// Per agent: peak of the summed memory, largest summed total, mean and peak of the
    /// summed power.
    mem_peaks: Vec<f64>,
    mem_totals: Vec<f64>,
    power_means: Vec<f64>,
    power_maxes: Vec<f64>,
}

impl GpuSeries {
    fn add_agent(&mut self, agent: &str, samples: &[GpuSample]) {
        let summed =
            |f: GpuField| -> Vec<f64> { samples.iter().filter_map(|x| x.summed(f)).collect() };
        self.mem_peaks.extend(max(&summed(GpuField::MemUsedBytes)));
        self.mem_totals
            .extend(max(&summed(GpuField::MemTotalBytes)));
        let power = summed(GpuField::PowerW);
        self.power_means.extend(mean(&power));
        self.power_maxes.extend(max(&power));

        let mut indices: Vec<u32> = samples
            .iter()
            .flat_map(|x| x.fields.keys().map(|k| k.0))
            .collect();
        indices.sort_unstable();
        indices.dedup();
        for i in indices {
            let series = |f: GpuField| -> Vec<(f64, f64)> {
                samples
                    .iter()
                    .filter_map(|x| Some((x.t_ms, *x.fields.get(&(i, f))?)))
                    .collect()
            };
            let values = |f: GpuField| series(f).into_iter().map(|p| p.1).collect::<Vec<_>>();
            let util = values(GpuField::UtilPct);
            let temp = values(GpuField::TempC);
            let power = series(GpuField::PowerW);
            let e = energy(&series(GpuField::EnergyMj), &power);
            self.utils.extend(&util);
            self.mem_utils.extend(values(GpuField::MemUtilPct));
            self.clocks.extend(values(GpuField::SmClockMhz));
            self.temps.extend(&temp);
            if let Some((j, how)) = e {
                self.energies.push(j);
                self.methods.push(how);
            }
            self.per_gpu.push(PerGpu {
                agent: agent.to_owned(),
                index: i,
                util_mean_pct: mean(&util),
                util_max_pct: max(&util),
                mem_used_peak_bytes: max(&values(GpuField::MemUsedBytes)),
                power_mean_w: mean(&power.iter().map(|p| p.1).collect::<Vec<_>>()),
                energy_j: e.map(|x| x.0),
                temp_max_c: max(&temp),
            });
        }
    }
}

impl GpuSummary {
    /// The GPUs of every agent over the round; `None` when no agent sent NVML samples.
    fn of(by: &BySource<'_>, output_tokens: u64) -> Option<GpuSummary> {
        let mut g = GpuSeries::default();
        let mut samples = 0;
        for agent in &by.agents {
            let s: Vec<GpuSample> = by
                .of(agent, TelemetrySource::Nvml)
                .into_iter()
                .map(GpuSample::of)
                .collect();
            samples += s.len() as u32;
            if !s.is_empty() {
                g.add_agent(agent, &s);
            }
        }
        if samples == 0 {
            return None;
        }
        let all = |v: &[f64]| sum_some(v.iter().map(|p| Some(*p)));
        // Energy is only whole when every GPU has it.
        let energy_j =
            (g.energies.len() == g.per_gpu.len()).then(|| g.energies.iter().sum::<f64>());
        g.methods.dedup();
        Some(GpuSummary {
            samples,
            gpus: g.per_gpu.len() as u32,
            util_mean_pct: mean(&g.utils),
            util_max_pct: max(&g.utils),
            mem_util_mean_pct: mean(&g.mem_utils),
            mem_used_peak_bytes: all(&g.mem_peaks),
            mem_total_bytes: all(&g.mem_totals),
            power_mean_w: all(&g.power_means),
            power_max_w: all(&g.power_maxes),
            energy_method: energy_j.map(|_| match g.methods.as_slice() {
                [one] => *one,
                _ => EnergyMethod::Mixed,
            }),
            j_per_output_token: energy_j
                .filter(|_| output_tokens > 0)
                .map(|j| j / output_tokens as f64),
            energy_j,
            temp_max_c: max(&g.temps),
            sm_clock_mean_mhz: mean(&g.clocks),
            per_gpu: g.per_gpu,
        })
    }
}

impl HostSummary {
    /// Every agent's host over the round: CPU over all samples, memory and network summed
    /// over hosts; `None` when no agent sent host samples.
    fn of(by: &BySource<'_>) -> Option<HostSummary> {
        let mut host = HostSummary::default();
        let (mut cpu, mut mem_peaks, mut mem_totals, mut rx, mut tx) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for agent in &by.agents {
            let s = by.of(agent, TelemetrySource::Host);
            host.samples += s.len() as u32;
            let series = |k: &str| -> Vec<f64> {
                s.iter().filter_map(|x| x.values.get(k).copied()).collect()
            };
            let delta = |k: &str| {
                let v = series(k);
                let d = v.last()? - v.first()?;
                (d >= 0.0).then_some(d)
            };
            cpu.extend(series("cpu_pct"));
            mem_peaks.extend(max(&series("mem_used_bytes")));
            mem_totals.extend(max(&series("mem_total_bytes")));
            rx.push(delta("net_rx_bytes"));
            tx.push(delta("net_tx_bytes"));
        }
        host.cpu_mean_pct = mean(&cpu);
        host.cpu_max_pct = max(&cpu);
        host.mem_used_peak_bytes = sum_some(mem_peaks.into_iter().map(Some));
        host.mem_total_bytes = sum_some(mem_totals.into_iter().map(Some));
        host.net_rx_bytes = sum_some(rx);
        host.net_tx_bytes = sum_some(tx);
        (host.samples > 0).then_some(host)
    }
}

impl EngineLoad {
    /// Engine counters summed over agents, gauges averaged over samples; `None` when no
    /// agent scraped its engine.
    fn of(by: &BySource<'_>) -> Option<EngineLoad> {
        let mut engine = EngineLoad::default();
        let (mut running, mut waiting) = (Vec::new(), Vec::new());
        let all_engine: Vec<&TelemetrySample> = by
            .samples
            .iter()
            .filter(|s| s.source == TelemetrySource::EngineMetrics)
            .collect();
        for agent in &by.agents {
            let s = by.of(agent, TelemetrySource::EngineMetrics);
            engine.samples += s.len() as u32;
            // The first and last samples bracket the round (taken before its first
            // request and after its last): gauges there show nothing of it.
            let inner = if s.len() > 2 {
                &s[1..s.len() - 1]
            } else {
                &[][..]
            };
            let gauge = |names: &[&str]| -> Vec<f64> {
                inner
                    .iter()
                    .filter_map(|x| names.iter().find_map(|n| x.values.get(*n).copied()))
                    .collect()
            };
            running.extend(gauge(engine_metric::REQUESTS_RUNNING));
            waiting.extend(gauge(engine_metric::REQUESTS_WAITING));
        }
        // The same counters and rule as `engine_metrics.prefix_cache_hit_rate`.
        let (hits, queries) = prefix_cache_counts(&all_engine);
        engine.prefix_cache_hit_ratio = ratio(hits, queries);
        engine.requests_running_mean = mean(&running);
        engine.requests_waiting_mean = mean(&waiting);
        (engine.samples > 0).then_some(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, kv: &[(&str, f64)]) -> TelemetrySample {
        TelemetrySample {
            round: 1,
            agent: "a".into(),
            t_ms: t,
            source: TelemetrySource::EngineMetrics,
            values: kv.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            notes: Vec::new(),
        }
    }

    /// The tiers behind the engine: the connector's share apart from the device's, LMCache's
    /// and the Mooncake master's figures over the round; nothing when only the device cache
    /// was asked.
    #[test]
    fn cache_tiers_split_hits_and_read_the_stores() {
        let s = [
            sample(
                0.0,
                &[
                    ("vllm:prefix_cache_hits_total", 100.0),
                    ("vllm:external_prefix_cache_queries_total", 0.0),
                    ("vllm:external_prefix_cache_hits_total", 0.0),
                    ("lmcache:num_hit_tokens_total", 10.0),
                    ("lmcache:num_requested_tokens_total", 20.0),
                    ("lmcache:time_to_retrieve_sum", 1.0),
                    ("lmcache:time_to_retrieve_count", 4.0),
                    ("lmcache:local_cache_usage", 5e6),
                    ("master_key_count", 7.0),
                    ("master_evicted_key_count", 1.0),
                ],
            ),
            sample(
                1000.0,
                &[
                    ("vllm:prefix_cache_hits_total", 400.0),
                    ("vllm:external_prefix_cache_queries_total", 900.0),
                    ("vllm:external_prefix_cache_hits_total", 600.0),
                    ("lmcache:num_hit_tokens_total", 610.0),
                    ("lmcache:num_requested_tokens_total", 920.0),
                    ("lmcache:retrieve_hit_rate", 0.66),
                    ("lmcache:time_to_retrieve_sum", 2.0),
                    ("lmcache:time_to_retrieve_count", 8.0),
                    ("lmcache:local_cache_usage", 9e6),
                    ("master_key_count", 9.0),
                    ("master_evicted_key_count", 3.0),
                ],
            ),
        ];
        let t = CacheTiers::of(&s, None).expect("tiers");
        assert_eq!(
            (
                t.device_tokens,
                t.external_tokens,
                t.external_queried_tokens
            ),
            (Some(300.0), Some(600.0), Some(900.0))
        );
        let l = t.lmcache.expect("LMCache");
        assert_eq!(
            (l.hit_tokens, l.requested_tokens),
            (Some(600.0), Some(900.0))
        );
        assert_eq!(l.retrieve_hit_rate, Some(0.66));
        assert_eq!(l.local_cache_usage_max, Some(9e6));
        assert_eq!(l.retrieve_time_mean_s, Some(0.25));
        let m = t.mooncake.expect("Mooncake");
        assert_eq!((m.keys_max, m.evicted_keys), (Some(9.0), Some(2.0)));
        let device_only = [
            sample(
                0.0,
                &[
                    ("vllm:prefix_cache_hits_total", 1.0),
                    ("vllm:external_prefix_cache_queries_total", 0.0),
                ],
            ),
            sample(
                9.0,
                &[
                    ("vllm:prefix_cache_hits_total", 5.0),
                    ("vllm:external_prefix_cache_queries_total", 0.0),
                ],
            ),
        ];
        assert_eq!(CacheTiers::of(&device_only, None), None);
        // No request reported tiers: still none.
        assert_eq!(
            CacheTiers::of(&device_only, Some(RequestTiers::default())),
            None
        );
        // SGLang's per-request split: the host and storage tiers are beyond the device.
        let mut r = RequestTiers::default();
        for (device, host, storage) in [(10, 0, None), (4, 6, Some(2)), (0, 0, None)] {
            r.add(&crate::record::CachedTokensDetails {
                device,
                host,
                storage,
            });
        }
        assert_eq!(
            (r.requests, r.device_tokens, r.host_tokens, r.storage_tokens),
            (3, 14, 6, Some(2))
        );
        let t = CacheTiers::of(&device_only, Some(r)).expect("tiers");
        assert_eq!(t.beyond_device(), Some(8.0));
        assert_eq!(t.external_tokens, None, "no connector hits counted");
    }

    #[test]
    fn deltas_rates_and_peaks() {
        let s = [
            sample(
                0.0,
                &[
                    ("vllm:prefix_cache_queries_total", 1000.0),
                    ("vllm:prefix_cache_hits_total", 100.0),
                    ("vllm:num_requests_running", 0.0),
                ],
            ),
            sample(
                1.0,
                &[
                    ("vllm:prefix_cache_queries_total", 1500.0),
                    ("vllm:prefix_cache_hits_total", 300.0),
                    ("vllm:num_requests_running", 7.0),
                ],
            ),
            sample(
                2.0,
                &[
                    ("vllm:prefix_cache_queries_total", 2000.0),
                    ("vllm:prefix_cache_hits_total", 900.0),
                    ("vllm:num_requests_running", 0.0),
                ],
            ),
        ];
        let m = EngineMetricsSummary::of(&s).expect("samples");
        assert_eq!(m.samples, 3);
        assert_eq!(m.prefix_cache_queries, Some(1000.0));
        assert_eq!(m.prefix_cache_hits, Some(800.0));
        assert_eq!(m.prefix_cache_hit_rate, Some(0.8));
        assert_eq!(m.max_num_requests_running, Some(7.0));
        assert_eq!(m.prompt_tokens, None, "not exported");
        assert!(EngineMetricsSummary::of(&[]).is_none());
    }

    #[test]
    fn counters_going_backwards_give_no_delta() {
        let s = [
            sample(0.0, &[("vllm:prefix_cache_hits_total", 500.0)]),
            sample(1.0, &[("vllm:prefix_cache_hits_total", 10.0)]),
        ];
        assert_eq!(
            EngineMetricsSummary::of(&s).and_then(|m| m.prefix_cache_hits),
            None
        );
    }

    fn src(agent: &str, source: &str, t: f64, kv: &[(&str, f64)]) -> TelemetrySample {
        TelemetrySample {
            round: 1,
            agent: agent.into(),
            t_ms: t,
            source: TelemetrySource::from_label(source).expect("a source"),
            values: kv.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn llama_cpp_counters_give_the_hit_ratio_waiting_and_predicted_tokens() {
        let e = |t: f64, cached: f64, processed: f64, predicted: f64, deferred: f64| {
            src(
                "a",
                "engine_metrics",
                t,
                &[
                    ("llamacpp:prompt_tokens_cached_total", cached),
                    ("llamacpp:prompt_tokens_total", processed),
                    ("llamacpp:tokens_predicted_total", predicted),
                    ("llamacpp:requests_processing", 1.0),
                    ("llamacpp:requests_deferred", deferred),
                ],
            )
        };
        // Over the round: 2,700 tokens reused, 300 computed, 64 predicted.
        let samples = [
            e(0.0, 100.0, 1000.0, 10.0, 0.0),
            e(500.0, 1500.0, 1200.0, 40.0, 2.0),
            e(1000.0, 2800.0, 1300.0, 74.0, 0.0),
        ];
        let m = EngineMetricsSummary::of(&samples).expect("summary");
        assert_eq!(m.prefix_cache_hits, Some(2700.0));
        assert_eq!(m.prefix_cache_queries, Some(3000.0));
        assert_eq!(m.prefix_cache_hit_rate, Some(0.9));
        assert_eq!(m.prompt_tokens, Some(3000.0), "cached + processed");
        assert_eq!(m.generation_tokens, Some(64.0));
        assert_eq!(m.max_num_requests_waiting, Some(2.0));
        let t = TelemetrySummary::of(&samples, 64).and_then(|t| t.engine);
        let engine = t.expect("engine load");
        assert_eq!(engine.prefix_cache_hit_ratio, Some(0.9));
        assert_eq!(engine.requests_waiting_mean, Some(2.0));
    }

    #[test]
    fn both_engine_summaries_take_each_agents_counter_delta_and_agree() {
        let q = "vllm:prefix_cache_queries_total";
        let h = "vllm:prefix_cache_hits_total";
        // Two agents whose counters stand far apart: deltas are per agent, then summed.
        let samples = vec![
            src("a", "engine_metrics", 0.0, &[(q, 1000.0), (h, 100.0)]),
            src("b", "engine_metrics", 1.0, &[(q, 50.0), (h, 0.0)]),
            src("a", "engine_metrics", 2.0, &[(q, 1100.0), (h, 190.0)]),
            src("b", "engine_metrics", 3.0, &[(q, 150.0), (h, 10.0)]),
        ];
        let e = EngineMetricsSummary::of(&samples).expect("engine samples");
        assert_eq!(e.prefix_cache_queries, Some(200.0));
        assert_eq!(e.prefix_cache_hits, Some(100.0));
        assert_eq!(e.prefix_cache_hit_rate, Some(0.5));
        let t = TelemetrySummary::of(&samples, 0).expect("summary");
        assert_eq!(
            t.engine.and_then(|e| e.prefix_cache_hit_ratio),
            e.prefix_cache_hit_rate
        );
        // A counter that went backwards (a restart) is unknown, not negative.
        let restarted = [
            src("a", "engine_metrics", 0.0, &[(q, 1000.0)]),
            src("a", "engine_metrics", 1.0, &[(q, 10.0)]),
        ];
        let refs: Vec<&TelemetrySample> = restarted.iter().collect();
        assert_eq!(
            counter_delta(&refs, engine_metric::PREFIX_CACHE_QUERIES),
            None
        );
    }

    #[test]
    fn a_failed_boundary_scrape_makes_the_deltas_unknown_and_says_why() {
        let q = "vllm:prefix_cache_queries_total";
        let h = "vllm:prefix_cache_hits_total";
        let mut failed = src("a", "engine_metrics", 2.0, &[]);
        failed.notes = vec!["engine metrics: GET http://e/metrics: no answer within 5 s".into()];
        let samples = [
            src("a", "engine_metrics", 0.0, &[(q, 1000.0), (h, 100.0)]),
            src("a", "engine_metrics", 1.0, &[(q, 1100.0), (h, 190.0)]),
            failed,
        ];
        let e = EngineMetricsSummary::of(&samples).expect("engine samples");
        assert_eq!(e.prefix_cache_hit_rate, None, "not the delta up to t=1");
        let t = TelemetrySummary::of(&samples, 0).expect("summary");
        assert_eq!(
            t.notes,
            ["a: engine metrics: GET http://e/metrics: no answer within 5 s"]
        );
        // An engine without metrics: no summary at all, as before any sample.
        let none = [src("a", "engine_metrics", 0.0, &[])];
        assert_eq!(EngineMetricsSummary::of(&none), None);
    }

    #[test]
    fn gpu_energy_from_counters_and_power() {
        // GPU 0 has the energy counter; GPU 1 only power (300 W for 2 s: 600 J).
        let s = [
            src(
                "a",
                "nvml",
                0.0,
                &[
                    ("gpu0.util_pct", 50.0),
                    ("gpu0.energy_mj", 1_000_000.0),
                    ("gpu0.power_w", 200.0),
                    ("gpu0.mem_used_bytes", 10.0),
                    ("gpu1.util_pct", 100.0),
                    ("gpu1.power_w", 300.0),
                    ("gpu1.mem_used_bytes", 5.0),
                ],
            ),
            src(
                "a",
                "nvml",
                2000.0,
                &[
                    ("gpu0.util_pct", 70.0),
                    ("gpu0.energy_mj", 1_500_000.0),
                    ("gpu0.power_w", 300.0),
                    ("gpu0.mem_used_bytes", 30.0),
                    ("gpu1.util_pct", 80.0),
                    ("gpu1.power_w", 300.0),
                    ("gpu1.mem_used_bytes", 1.0),
                    ("gpu1.pid7.mem_bytes", 1.0),
                ],
            ),
        ];
        let t = TelemetrySummary::of(&s, 1100).expect("samples");
        let g = t.gpu.expect("gpu section");
        assert_eq!((g.samples, g.gpus), (2, 2));
        assert_eq!(g.util_mean_pct, Some(75.0));
        assert_eq!(g.util_max_pct, Some(100.0));
        assert_eq!(
            g.mem_used_peak_bytes,
            Some(31.0),
            "max over samples of the sum"
        );
        assert_eq!(g.power_mean_w, Some(550.0));
        assert_eq!(g.power_max_w, Some(600.0));
        assert_eq!(g.per_gpu[0].energy_j, Some(500.0));
        assert_eq!(g.per_gpu[1].energy_j, Some(600.0));
        assert_eq!(g.energy_j, Some(1100.0));
        assert_eq!(g.energy_method, Some(EnergyMethod::Mixed));
        assert_eq!(g.j_per_output_token, Some(1.0));
        assert!(t.host.is_none() && t.engine.is_none());
    }

    #[test]
    fn no_gpu_samples_no_gpu_section_and_partial_energy_is_none() {
        let s = [src("a", "host", 0.0, &[("mem_used_bytes", 1.0)])];
        let t = TelemetrySummary::of(&s, 10).expect("samples");
        assert!(t.gpu.is_none());
        // One GPU without counter or power: no energy figure for the whole.
        let s = [
            src(
                "a",
                "nvml",
                0.0,
                &[("gpu0.energy_mj", 0.0), ("gpu1.util_pct", 1.0)],
            ),
            src(
                "a",
                "nvml",
                100.0,
                &[("gpu0.energy_mj", 1000.0), ("gpu1.util_pct", 1.0)],
            ),
        ];
        let g = TelemetrySummary::of(&s, 10)
            .and_then(|t| t.gpu)
            .expect("gpu");
        assert_eq!(g.per_gpu[0].energy_j, Some(1.0));
        assert_eq!(g.energy_j, None);
        assert_eq!(g.j_per_output_token, None);
        assert!(TelemetrySummary::of(&[], 1).is_none());
    }

    #[test]
    fn host_and_engine_sections() {
        let s = [
            src(
                "a",
                "host",
                0.0,
                &[
                    ("mem_used_bytes", 4.0),
                    ("net_rx_bytes", 100.0),
                    ("net_tx_bytes", 50.0),
                ],
            ),
            src(
                "a",
                "host",
                1000.0,
                &[
                    ("cpu_pct", 20.0),
                    ("mem_used_bytes", 6.0),
                    ("net_rx_bytes", 400.0),
                    ("net_tx_bytes", 60.0),
                ],
            ),
            src(
                "a",
                "host",
                2000.0,
                &[
                    ("cpu_pct", 40.0),
                    ("mem_used_bytes", 5.0),
                    ("net_rx_bytes", 700.0),
                    ("net_tx_bytes", 70.0),
                ],
            ),
            src(
                "a",
                "engine_metrics",
                0.0,
                &[
                    ("vllm:prefix_cache_queries_total", 100.0),
                    ("vllm:prefix_cache_hits_total", 10.0),
                    ("vllm:num_requests_running", 0.0),
                ],
            ),
            src(
                "a",
                "engine_metrics",
                1000.0,
                &[
                    ("vllm:num_requests_running", 8.0),
                    ("vllm:num_requests_waiting", 2.0),
                ],
            ),
            src(
                "a",
                "engine_metrics",
                2000.0,
                &[
                    ("vllm:prefix_cache_queries_total", 1100.0),
                    ("vllm:prefix_cache_hits_total", 760.0),
                    ("vllm:num_requests_running", 4.0),
                    ("vllm:num_requests_waiting", 0.0),
                ],
            ),
        ];
        let t = TelemetrySummary::of(&s, 0).expect("samples");
        let h = t.host.expect("host");
        assert_eq!(h.samples, 3);
        assert_eq!(h.cpu_mean_pct, Some(30.0));
        assert_eq!(h.cpu_max_pct, Some(40.0));
        assert_eq!(h.mem_used_peak_bytes, Some(6.0));
        assert_eq!((h.net_rx_bytes, h.net_tx_bytes), (Some(600.0), Some(20.0)));
        let e = t.engine.expect("engine");
        assert_eq!(e.prefix_cache_hit_ratio, Some(0.75));
        // Gauges count only samples inside the round, not the two that bracket it.
        assert_eq!(e.requests_running_mean, Some(8.0));
        assert_eq!(e.requests_waiting_mean, Some(2.0));
        let e = TelemetrySummary::of(&[s[3].clone(), s[5].clone()], 0)
            .and_then(|t| t.engine)
            .expect("engine");
        assert_eq!(e.requests_running_mean, None, "no sample inside the round");
        assert_eq!(e.prefix_cache_hit_ratio, Some(0.75));
    }

    proptest::proptest! {
        /// Constant power integrates to power x span, however the samples fall.
        #[test]
        fn constant_power_integrates_exactly(
            watts in 1.0f64..1000.0,
            mut times in proptest::collection::vec(0.0f64..100_000.0, 2..50),
        ) {
            times.sort_by(f64::total_cmp);
            let power: Vec<(f64, f64)> = times.iter().map(|t| (*t, watts)).collect();
            let (j, how) = energy(&[], &power).expect("two samples");
            let span_s = (times[times.len() - 1] - times[0]) / 1000.0;
            proptest::prop_assert_eq!(how, EnergyMethod::PowerIntegral);
            proptest::prop_assert!((j - watts * span_s).abs() <= 1e-6 * (1.0 + j.abs()));
        }
    }
}
