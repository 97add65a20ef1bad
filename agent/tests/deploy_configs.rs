//! Deploy files are code: every example agent config under `deploy/agent/` passes
//! `kvbench-agent --check-config`, and a broken one is rejected with file, line and key.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvbench-agent"))
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .output()
        .expect("kvbench-agent runs")
}

#[test]
fn every_example_agent_config_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("deploy/agent").flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            n += 1;
            let out = check(&p);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}: {stdout}{}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("OK") && stdout.contains("clear_cache:"),
                "{stdout}"
            );
        }
    }
    assert!(n >= 5, "one example per engine kind");
    let out = check(&dir.join("vllm.yaml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("reset_prefix_cache?reset_external=true"),
        "{stdout}"
    );
    assert!(stdout.contains("api/v1/remove_all?force=true"), "{stdout}");
    assert!(
        stdout.contains("restart_engine: systemctl restart vllm.service"),
        "{stdout}"
    );
    assert!(
        stdout.contains("telemetry: GPUs every 100 ms through NVML, host every 1000 ms, http://127.0.0.1:8000/metrics every 1000 ms"),
        "{stdout}"
    );
}

#[test]
fn broken_agent_configs_name_the_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let cases = [
        ("engine:\n  kind: vllm\n  base_url: http://x:1\n  moddel: m\n", ":4: key `engine.moddel`"),
        ("engine:\n  kind: triton\n  base_url: http://x:1\n", "key `engine.kind`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\nclear_cache:\n  - preset: redis\n", ":5: key `clear_cache[0].preset`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\nclear_cache:\n  - preset: mooncake_master\n", "key `clear_cache[0].url`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\nrestart_engine:\n  timeout_s: 5\n", ":4: key `restart_engine`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\ntelemetry:\n  gpu_interval_ms: 0\n", ":5: key `telemetry.gpu_interval_ms`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\ntelemetry:\n  nvml_hz: 10\n", ":5: key `telemetry.nvml_hz`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\ntelemetry:\n  lmcache_metrics_url: localhost:7001/metrics\n", ":5: key `telemetry.lmcache_metrics_url`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\n  metrics_url: localhost:9/metrics\n", ":4: key `engine.metrics_url`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\non_engine_failure: restart\n", ":4: key `on_engine_failure`"),
        ("engine:\n  kind: vllm\n  base_url: http://x:1\non_engine_failure: retry\n", "key `on_engine_failure`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.join(format!("c{i}.yaml"));
        std::fs::write(&p, text).expect("write");
        let out = check(&p);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(want), "{text}: {stderr}");
    }
}
