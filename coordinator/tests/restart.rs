//! RestartEngine for real: the agent runs its configured command (here: starting a
//! kvbench-sim process, as a restart script would) and answers once the engine is healthy;
//! an engine that never becomes healthy fails with `restart_timeout`.

mod common;

use kvbench_agent::config::Restart;
use kvbench_agent::AgentConfig;
use kvbench_proto::v1::{self, agent_client::AgentClient};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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
    let port = free_port();
    let script = format!(
        "{} internal-sim --listen 127.0.0.1:{port} --model restarted-model >/dev/null 2>&1 & echo $! > {}",
        env!("CARGO_BIN_EXE_kvbench"),
        pidfile.display()
    );
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
    let port = free_port();
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
