//! `kvbench-agent`: serves the agent protocol next to one engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use kvbench_agent::AgentConfig;
use tokio_util::sync::CancellationToken;

/// kvbench's agent: generates load against the local engine on the coordinator's command.
#[derive(Debug, Parser)]
#[command(name = "kvbench-agent", version)]
struct Cli {
    /// Address to listen on for the coordinator (gRPC).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// The engine's base URL (OpenAI-compatible, without /v1).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    engine: String,
    /// Name shown in reports (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// A label KEY=VALUE (cloud, region, node, engine, model, ...); repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Accept a listen address beyond loopback without TLS (plaintext, unauthenticated).
    #[arg(long)]
    insecure: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvbench-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !cli.listen.ip().is_loopback() && !cli.insecure {
        bail!(
            "refusing to listen on {} without TLS: this build has no TLS or authentication, so anyone who can reach the port could drive load; listen on loopback (and tunnel), or pass --insecure to accept that",
            cli.listen
        );
    }
    if !cli.engine.starts_with("http://") {
        bail!("--engine must be an http:// base URL, got {:?}", cli.engine);
    }
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let config = AgentConfig {
        name: cli.name.unwrap_or_else(kvbench_agent::hostname),
        engine_url: cli.engine,
        labels: cli.labels.into_iter().collect::<BTreeMap<_, _>>(),
    };
    tracing::info!(addr = %listener.local_addr()?, engine = %config.engine_url, name = %config.name, "kvbench-agent listening");
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: stopping load, closing streams");
        s.cancel();
        // Second chance to exit cleanly; then give up.
        tokio::time::sleep(Duration::from_secs(10)).await;
        std::process::exit(1);
    });
    kvbench_agent::serve(listener, config, shutdown).await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
