//! The parsers of what other processes and users hand kvbench, fuzzed: the Prometheus text
//! an engine serves and the plan files (with their scenario configs) a user writes. Each
//! runs for `KVBENCH_FUZZ_SECS` (1 s here; `scripts/fuzz.sh` gives each 10 minutes) and
//! fails on the first panic, naming the input.

use kvbench_common::fuzz;

const METRICS: &[u8] = b"# HELP vllm:prefix_cache_hits_total hits\n# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{model_name=\"m\"} 123.0\nvllm:prefix_cache_queries_total{model_name=\"m\",engine=\"0\"} 4.5e3\nvllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"100\"} 1\nvllm:prompt_tokens_by_source_total{source=\"local_cache_hit\"} +Inf\nvllm:num_requests_running 2\nvllm:kv_cache_usage_perc NaN\n";

#[test]
fn the_prometheus_text_parser_never_panics() {
    let wanted = [
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    ];
    let f = fuzz::run("prometheus", &[METRICS, b"x 1\n"], |input| {
        let text = String::from_utf8_lossy(input);
        let _ = kvbench_common::prometheus::parse(&text, &wanted);
        let _ = kvbench_common::prometheus::by_label(&text, "vllm:cache_config_info", "block_size");
    });
    assert!(f.inputs > 100, "{f:?}");
}

const PLAN: &str = include_str!("../../examples/quickstart/multi_scenario_config.yaml");
const CONFIGS: [(&str, &str); 3] = [
    (
        "test_config_cold_start.yaml",
        include_str!("../../examples/quickstart/test_config_cold_start.yaml"),
    ),
    (
        "test_config_long_context.yaml",
        include_str!("../../examples/quickstart/test_config_long_context.yaml"),
    ),
    (
        "test_config_multi_turn.yaml",
        include_str!("../../examples/quickstart/test_config_multi_turn.yaml"),
    ),
];

/// Plans, and the configs they name, mutated: loaded or refused with errors, never a panic.
#[test]
fn the_plan_loader_never_panics() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (name, text) in CONFIGS {
        std::fs::write(dir.path().join(name), text).expect("written");
    }
    let plan = dir.path().join("plan.yaml");
    let config = dir.path().join(CONFIGS[0].0);
    let mut seeds: Vec<&[u8]> = vec![PLAN.as_bytes()];
    seeds.extend(CONFIGS.iter().map(|(_, t)| t.as_bytes()));
    let mut n = 0u64;
    let f = fuzz::run("plan loader", &seeds, |input| {
        n += 1;
        // Half the inputs as the plan, half as a config the seed plan names.
        let (path, restore) = if n.is_multiple_of(2) {
            (&plan, None)
        } else {
            std::fs::write(&plan, PLAN).expect("written");
            (&config, Some(CONFIGS[0].1))
        };
        std::fs::write(path, input).expect("written");
        let _ = kvbench_common::plan::load(&plan);
        if let Some(text) = restore {
            std::fs::write(path, text).expect("written");
        }
    });
    assert!(f.inputs > 20, "{f:?}");
}
