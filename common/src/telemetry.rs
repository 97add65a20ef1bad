//! Telemetry samples streamed with the records, and their per-round summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One sample from one source (`engine_metrics`: the engine's `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    pub round: u32,
    pub agent: String,
    /// Milliseconds since the round's start on the agent's clock.
    pub t_ms: f64,
    pub source: String,
    pub values: BTreeMap<String, f64>,
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
}

impl EngineMetricsSummary {
    /// Summarises a round's `engine_metrics` samples (in arrival order); `None` without any.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a TelemetrySample>) -> Option<Self> {
        let s: Vec<&TelemetrySample> = samples
            .into_iter()
            .filter(|s| s.source == "engine_metrics")
            .collect();
        let (first, last) = (s.first()?, s.last()?);
        let delta = |k: &str| {
            let d = last.values.get(k)? - first.values.get(k)?;
            (d >= 0.0).then_some(d)
        };
        let max = |keys: &[&str]| {
            s.iter()
                .flat_map(|x| keys.iter().filter_map(|k| x.values.get(*k)))
                .copied()
                .reduce(f64::max)
        };
        let rate = |hits: Option<f64>, queries: Option<f64>| match (hits, queries) {
            (Some(h), Some(q)) if q > 0.0 => Some(h / q),
            _ => None,
        };
        let queries = delta("vllm:prefix_cache_queries_total");
        let hits = delta("vllm:prefix_cache_hits_total");
        Some(EngineMetricsSummary {
            samples: s.len() as u32,
            prefix_cache_queries: queries,
            prefix_cache_hits: hits,
            prefix_cache_hit_rate: rate(hits, queries),
            external_prefix_cache_hit_rate: rate(
                delta("vllm:external_prefix_cache_hits_total"),
                delta("vllm:external_prefix_cache_queries_total"),
            ),
            prompt_tokens: delta("vllm:prompt_tokens_total"),
            generation_tokens: delta("vllm:generation_tokens_total"),
            preemptions: delta("vllm:num_preemptions_total"),
            max_num_requests_running: max(&[
                "vllm:num_requests_running",
                "sglang:num_running_reqs",
                "llamacpp:requests_processing",
            ]),
            max_num_requests_waiting: max(&["vllm:num_requests_waiting", "sglang:num_queue_reqs"]),
            max_kv_cache_usage_perc: max(&[
                "vllm:kv_cache_usage_perc",
                "vllm:gpu_cache_usage_perc",
                "sglang:token_usage",
                "llamacpp:kv_cache_usage_ratio",
            ]),
        })
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
            source: "engine_metrics".into(),
            values: kv.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
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
}
