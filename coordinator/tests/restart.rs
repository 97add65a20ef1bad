//! RestartEngine for real: the agent runs its configured command (here: starting a
//! kvbench-sim process, as a restart script would) and answers once the engine is healthy;
//! an engine that never becomes healthy fails with `restart_timeout`.

mod common;

use common::kvbench;

use kvbench_agent::config::Restart;
use kvbench_agent::AgentConfig;
use kvbench_proto::v1::{self, agent_client::AgentClient};

/// Shell commands that start a kvbench-sim process on `port` with `flags` (its pid in
/// `pidfile`), and that restart it the way a host's restart script would.
fn sim_scripts(port: u16, flags: &str, pidfile: &std::path::Path) -> (String, String) {
    let start = format!(
        "{} internal-sim --listen 127.0.0.1:{port} {flags} >/dev/null 2>&1 & echo $! > {}",
        env!("CARGO_BIN_EXE_kvbench"),
        pidfile.display()
    );
    let restart = format!("kill $(cat {}) ; sleep 0.3 ; {start}", pidfile.display());
    (start, restart)
}

async fn agent_with(
    port: u16,
    restart: Restart,
) -> (
    kvbench_agent::AgentHandle,
    AgentClient<tonic::transport::Channel>,
) {
    let mut config = AgentConfig::vllm("restart-test", format!("http://127.0.0.1:{port}"));
    config.restart = Some(restart);
    let handle = kvbench_agent::spawn(config).await.expect("agent");
    let client = AgentClient::connect(handle.url()).await.expect("connect");
    (handle, client)
}

#[tokio::test]
async fn restart_runs_the_command_and_waits_for_health() {
    let dir = common::TempDir::new("restart");
    let pidfile = dir.path().join("sim.pid");
    let port = common::free_port();
    let (script, _) = sim_scripts(port, "--model restarted-model", &pidfile);
    let (handle, mut client) = agent_with(
        port,
        Restart {
            systemd_unit: None,
            argv: Some(vec!["sh".into(), "-c".into(), script]),
            model: Some("restarted-model".into()),
            timeout_s: Some(30.0),
        },
    )
    .await;
    let r = client
        .restart_engine(v1::RestartEngineRequest {
            reason: "test".into(),
        })
        .await
        .expect("rpc")
        .into_inner();
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
    let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    assert!(r.success, "{} {}", r.error_class, r.detail);
    assert!(r.detail.contains("healthy"), "{}", r.detail);
    handle.stop().await;
}

#[tokio::test]
async fn an_engine_that_never_comes_back_is_a_restart_timeout() {
    let port = common::free_port();
    let (handle, mut client) = agent_with(
        port,
        Restart {
            systemd_unit: None,
            argv: Some(vec!["true".into()]),
            model: None,
            timeout_s: Some(1.0),
        },
    )
    .await;
    let r = client
        .restart_engine(v1::RestartEngineRequest {
            reason: "test".into(),
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(!r.success);
    assert_eq!(r.error_class, "restart_timeout", "{}", r.detail);
    handle.stop().await;

    // No restart configured: said plainly.
    let handle = kvbench_agent::spawn(AgentConfig::vllm(
        "plain",
        format!("http://127.0.0.1:{port}"),
    ))
    .await
    .expect("agent");
    let mut client = AgentClient::connect(handle.url()).await.expect("connect");
    let r = client
        .restart_engine(v1::RestartEngineRequest {
            reason: "test".into(),
        })
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(r.error_class, "not_configured");
    handle.stop().await;
}

/// Two scenarios under `isolation: clear_or_restart` on a kvbench-sim process started with
/// `sim_flag`, whose agent restarts it through a configured argv; the second scenario.
async fn clear_or_restart_on(
    sim_flag: &str,
) -> kvbench_coordinator::engine::outcome::ScenarioOutcome {
    let sim = SimProcess::start(sim_flag).await;
    sim.dir.write(
        "docs.yaml",
        &format!("endpoint: {}\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  documents: 4\n  document_tokens: 600\n", sim.url),
    );
    let plan = common::load(&sim.dir.write(
        "plan.yaml",
        "output_dir: out\nisolation: clear_or_restart\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: one, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1}\n  - {name: two, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1}\n",
    ));
    let summary = common::run_with_agents(&plan, &sim.agents().await).await;
    sim.stop().await;
    assert_eq!(summary.failed(), 0);
    summary.scenarios.into_iter().nth(1).expect("two scenarios")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_or_restart_restarts_an_engine_whose_reset_lies() {
    let second = clear_or_restart_on("--lying-reset").await;
    let iso = &second.stats.isolation;
    assert_eq!(iso.policy.label(), "clear_or_restart");
    assert_eq!(iso.status.to_string(), "restarted", "{}", iso.detail);
    assert!(iso.detail.contains("then restart"), "{}", iso.detail);
    assert_eq!(iso.verdict.to_string(), "verified", "{:?}", iso.evidence);
    assert!(second.stats.rounds[0].cache_hit_ratio.unwrap_or(1.0) < 0.05);
}

/// Through the CLI, as a user on one GPU host runs it: the plan's `agent_config:` gives the
/// embedded agent the engine's restart command. vLLM answers HTTP 200 with
/// `{"success": false}` when it cannot reset; the agent retries, gives up, and
/// `clear_or_restart` restarts the engine instead.
#[test]
fn clear_or_restart_restarts_an_engine_that_refuses_to_clear() {
    let dir = common::TempDir::new("refusing");
    let pidfile = dir.path().join("sim.pid");
    let port = common::free_port();
    let (start, restart_cmd) = sim_scripts(port, "--refusing-reset", &pidfile);
    dir.write(
        "agent.yaml",
        &format!(
            "name: gpu-host\nengine:\n  kind: vllm\n  base_url: http://127.0.0.1:{port}\n  model: kvbench-sim\nrestart_engine:\n  argv: [sh, -c, {restart_cmd:?}]\n  timeout_s: 30\ntelemetry:\n  host_interval_ms: 500\n"
        ),
    );
    dir.write(
        "docs.yaml",
        &format!("endpoint: http://127.0.0.1:{port}\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  documents: 4\n  document_tokens: 600\n"),
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\nagent_config: agent.yaml\nisolation: clear_or_restart\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: one, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1}\n  - {name: two, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 1}\n",
    );
    let started = std::process::Command::new("sh")
        .args(["-c", &start])
        .status()
        .expect("sh");
    assert!(started.success());
    let url = format!("http://127.0.0.1:{port}/health");
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the sim came up at {url}");
    let out = kvbench()
        .arg("run")
        .arg(&plan)
        .output()
        .expect("kvbench runs");
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
    let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Agent:           gpu-host"), "{stdout}");
    assert!(
        stdout.contains("\"success\":false"),
        "names the refusal: {stdout}"
    );
    assert!(stdout.contains("restarting instead"), "{stdout}");
    assert!(
        stdout.contains("| two | long_context_high_reuse | completed | 0 of 4 | verified |"),
        "{stdout}"
    );
    // Its stats say the same.
    let stats = common::out_file(&dir.path().join("out"), "two_stats_");
    let v = common::read_json(&stats);
    assert_eq!(v["isolation"]["status"], "restarted", "{}", v["isolation"]);
    assert_eq!(v["isolation"]["verdict"], "verified");
}

/// A kvbench-sim process started with `flags`, and an agent that restarts it through a
/// configured argv; stopped on drop.
struct SimProcess {
    dir: common::TempDir,
    pidfile: std::path::PathBuf,
    url: String,
    agent: Option<kvbench_agent::AgentHandle>,
}

impl SimProcess {
    async fn start(flags: &str) -> SimProcess {
        SimProcess::start_with(flags, |restart_cmd, _| (restart_cmd.to_owned(), 30.0)).await
    }

    /// With the restart command (and its timeout) that `restart` makes of the usual
    /// restart script and the pid file.
    async fn start_with(
        flags: &str,
        restart: impl Fn(&str, &std::path::Path) -> (String, f64),
    ) -> SimProcess {
        let dir = common::TempDir::new("sim-process");
        let pidfile = dir.path().join("sim.pid");
        let port = common::free_port();
        let (start, restart_cmd) = sim_scripts(port, flags, &pidfile);
        let (restart_cmd, timeout_s) = restart(&restart_cmd, &pidfile);
        let (handle, _) = agent_with(
            port,
            Restart {
                systemd_unit: None,
                argv: Some(vec!["sh".into(), "-c".into(), restart_cmd]),
                model: None,
                timeout_s: Some(timeout_s),
            },
        )
        .await;
        let started = std::process::Command::new("sh")
            .args(["-c", &start])
            .status()
            .expect("sh");
        assert!(started.success());
        let url = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..100 {
            let metrics = format!("{url}/metrics");
            let wait = std::time::Duration::from_secs(1);
            if kvbench_agent::scrape_metrics(&metrics, &[], wait)
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(ready, "the sim came up");
        SimProcess {
            dir,
            pidfile,
            url,
            agent: Some(handle),
        }
    }

    async fn agents(
        &self,
    ) -> std::collections::BTreeMap<
        kvbench_common::plan::Endpoint,
        kvbench_coordinator::agents::AgentClient,
    > {
        let url = self.agent.as_ref().expect("agent").url();
        std::collections::BTreeMap::from([(
            kvbench_common::plan::Endpoint::Url(self.url.clone()),
            kvbench_coordinator::agents::AgentClient::connect(&url)
                .await
                .expect("agent"),
        )])
    }

    async fn stop(mut self) {
        if let Some(a) = self.agent.take() {
            a.stop().await;
        }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.pidfile).unwrap_or_default();
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
}

/// Under `clear_or_restart`, a round 1 that finds more cached than it could share (here:
/// the plan run a second time against the same engine, whose first scenario has no
/// isolation step) makes the agent restart the engine and the scenario run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_or_restart_reruns_a_scenario_whose_round_1_was_not_cold() {
    let sim = SimProcess::start("").await;
    sim.dir.write(
        "docs.yaml",
        &format!("endpoint: {}\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  documents: 4\n  document_tokens: 600\n", sim.url),
    );
    let plan = common::load(&sim.dir.write(
        "plan.yaml",
        "output_dir: out\nisolation: clear_or_restart\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: docs, config_file: docs.yaml, scenario: long_context_high_reuse, rounds: 2}\n",
    ));
    let agents = sim.agents().await;
    let first = common::run_with_agents(&plan, &agents).await;
    let second = common::run_with_agents(&plan, &agents).await;
    assert!(first.scenarios[0].stats.isolation.rerun_after.is_none());
    let s = &second.scenarios[0];
    let iso = &s.stats.isolation;
    let before = iso.rerun_after.as_ref().expect("the first attempt is kept");
    assert_eq!(before.isolation.verdict.label(), "failed");
    assert_eq!(before.isolation.excess.len(), 4, "{:?}", before.isolation);
    assert!(before
        .round1
        .as_ref()
        .is_some_and(|r| r.cache_hit_ratio > Some(0.9)));
    assert_eq!(iso.status.label(), "restarted", "{}", iso.detail);
    assert_eq!(iso.verdict.label(), "verified", "{:?}", iso.evidence);
    assert!(
        iso.evidence
            .iter()
            .any(|e| e.contains("ran again after an engine restart")),
        "{:?}",
        iso.evidence
    );
    assert_eq!(s.stats.rounds.len(), 2);
    assert!(s.stats.rounds[0].cache_hit_ratio < Some(0.1));
    let res = common::read_json(s.results_path.as_ref().expect("results"));
    assert_eq!(res["discarded_records"].as_array().map(Vec::len), Some(4));
    assert_eq!(res["records"].as_array().map(Vec::len), Some(8));
    common::assert_stats_schema(&common::read_json(s.stats_path.as_ref().expect("stats")));
    sim.stop().await;
}

/// A restart command that does nothing (the engine keeps serving) is not a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_does_nothing_is_unverified() {
    let sim = SimProcess::start_with("", |_, _| ("true".to_owned(), 10.0)).await;
    let agents = sim.agents().await;
    let agent = agents.values().next().expect("agent");
    let r = agent.restart("test").await.expect("rpc");
    assert_eq!(
        r.error,
        Some(kvbench_common::agent::RestartError::RestartUnverified),
        "{}",
        r.detail
    );
    assert!(
        r.detail.contains("nothing shows the engine restarted") && r.detail.contains("pid "),
        "{}",
        r.detail
    );
    // A real restart says what shows it.
    let real = SimProcess::start("").await;
    let agents = real.agents().await;
    let r = agents
        .values()
        .next()
        .expect("agent")
        .restart("test")
        .await
        .expect("rpc");
    assert!(r.succeeded(), "{}", r.detail);
    assert!(
        r.detail.contains("restart verified: its health went down"),
        "{}",
        r.detail
    );
    real.stop().await;
    sim.stop().await;
}

/// A restart that kills the engine without starting it: the failure is reported where it
/// happens, the following scenarios fail at once with the reason (nothing is sent to a dead
/// engine), and the plan goes on to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_leaves_the_engine_dead_fails_the_next_scenarios_fast() {
    let sim = SimProcess::start_with("", |_, pidfile| {
        (format!("kill $(cat {})", pidfile.display()), 2.0)
    })
    .await;
    sim.dir.write(
        "c.yaml",
        &format!(
            "endpoint: {}\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  prompt_tokens: 64\n",
            sim.url
        ),
    );
    let plan = common::load(&sim.dir.write(
        "plan.yaml",
        "output_dir: out\nisolation: restart\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: one, config_file: c.yaml, scenario: cold_start, rounds: 1}\n  - {name: two, config_file: c.yaml, scenario: cold_start, rounds: 1}\n  - {name: three, config_file: c.yaml, scenario: cold_start, rounds: 1}\n",
    ));
    let started = std::time::Instant::now();
    let summary = common::run_with_agents(&plan, &sim.agents().await).await;
    assert_eq!(summary.scenarios.len(), 3, "the plan went on");
    assert!(summary.scenarios[0].succeeded());
    for s in &summary.scenarios[1..] {
        let error = s.stats.error.clone().unwrap_or_default();
        assert_eq!(s.stats.status.label(), "failed");
        // The second restart finds no process to kill: its command fails.
        assert!(
            error.contains(
                "not run: the engine did not come back after the restart (restart_timeout"
            ) || error.contains(
                "not run: the engine did not come back after the restart (command_failed"
            ),
            "{error}"
        );
        assert_eq!(s.records, 0, "nothing was sent");
        assert!(s
            .stats
            .isolation
            .restart_error
            .is_some_and(|e| e.engine_may_be_down()));
        common::assert_stats_schema(&common::read_json(s.stats_path.as_ref().expect("stats")));
    }
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    sim.stop().await;
}
