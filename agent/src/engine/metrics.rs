//! Engine metrics: scrape `/metrics` (Prometheus text) and keep the series kvbench reads.

use std::collections::BTreeMap;
use std::time::Duration;

use kvbench_common::prometheus::{by_label, parse};

use super::http::{EngineCallError, HttpClient};

/// Metric families read from the engine besides those the summaries read
/// (`kvbench_common::telemetry::engine_metric`): kept in the samples for people.
const EXTRA_METRICS: &[&str] = &["sglang:cache_hit_rate", "llamacpp:prompt_tokens_total"];

/// Every family a scrape keeps, summed over its label sets.
pub fn engine_metrics() -> Vec<&'static str> {
    let mut names = kvbench_common::telemetry::engine_metric::names();
    names.extend_from_slice(EXTRA_METRICS);
    names
}

/// `GET url` (the engine's `/metrics`), parsed. `None` when the engine has no metrics
/// endpoint or does not answer within a second.
pub async fn scrape(client: &HttpClient, url: &str) -> Option<BTreeMap<String, f64>> {
    read(client, url, Duration::from_secs(1)).await.ok()
}

/// `GET url` within `timeout`, parsed; the error names the call and what went wrong.
pub async fn read(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, f64>, EngineCallError> {
    scrape_names(client, url, &engine_metrics(), timeout).await
}

/// `GET url`, keeping the families in `wanted`.
pub async fn scrape_names(
    client: &HttpClient,
    url: &str,
    wanted: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, f64>, EngineCallError> {
    let body = super::http::get(client, url, timeout).await?;
    let mut values = parse(&body, wanted);
    values.extend(labelled(&body));
    Ok(values)
}

/// What an engine says only in labels: vLLM's KV block size and block count
/// (`cache_config_info`'s `block_size` and `num_gpu_blocks`) and its prompt tokens by source, each source as `FAMILY:SOURCE`.
fn labelled(body: &str) -> BTreeMap<String, f64> {
    use kvbench_common::telemetry::engine_metric as m;
    let mut out = BTreeMap::new();
    let block = by_label(body, m::CACHE_CONFIG[0], "block_size")
        .into_keys()
        .find_map(|b| b.parse::<u32>().ok().filter(|b| (1..=1 << 20).contains(b)));
    if let Some(b) = block {
        out.insert(m::BLOCK_SIZE.to_owned(), f64::from(b));
    }
    let blocks = by_label(body, m::CACHE_CONFIG[0], "num_gpu_blocks")
        .into_keys()
        .find_map(|b| b.parse::<u64>().ok().filter(|b| *b >= 1 && *b < 1 << 40));
    if let Some(b) = blocks {
        out.insert(m::NUM_GPU_BLOCKS.to_owned(), b as f64);
    }
    for family in m::BY_SOURCE {
        for (source, v) in by_label(body, family, "source") {
            out.insert(format!("{family}:{source}"), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_label_sets_and_skips_the_rest() {
        let text = r#"
# HELP vllm:prefix_cache_hits_total Prefix cache hits
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 20
vllm:prefix_cache_hits_created{engine="0"} 1.7e9
vllm:num_requests_running{model_name="a b}c"} 3
vllm:kv_cache_usage_perc 0.25
garbage line
vllm:num_requests_waiting{broken 4
"#;
        let m = parse(text, &engine_metrics());
        assert_eq!(m.get("vllm:prefix_cache_hits_total"), Some(&120.0));
        assert_eq!(m.get("vllm:num_requests_running"), Some(&3.0));
        assert_eq!(m.get("vllm:kv_cache_usage_perc"), Some(&0.25));
        assert!(!m.contains_key("vllm:prefix_cache_hits_created"));
        assert!(!m.contains_key("vllm:num_requests_waiting"));
    }
}
