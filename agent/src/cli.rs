//! The `kvbench-agent` binary's command line: its arguments, `--check-config`, and serving
//! until a stop signal. The only place in the agent that prints.

use std::net::SocketAddr;
use std::time::Duration;

use kvbench_common::util::hostname;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{config, serve, AgentConfig};

/// `kvbench-agent`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for the coordinator, IP:PORT or HOST:PORT (gRPC; port 0: any
    /// free port, printed).
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = kvbench_common::util::parse_listen)]
    pub listen: SocketAddr,
    /// The engine's base URL (OpenAI-compatible, without /v1).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub engine: String,
    /// Name shown in reports (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// A label KEY=VALUE (cloud, region, node, engine, model, ...); repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Accept a listen address beyond loopback without TLS (plaintext: anyone who reaches
    /// the port, or the path to it, can drive load; warned at every start).
    #[arg(long)]
    pub insecure: bool,
    /// The agent's config file: engine, cache-clearing calls, name, labels (see
    /// `deploy/agent/`); it replaces --engine, --name and --label.
    #[arg(long, conflicts_with_all = ["engine", "name", "labels"])]
    pub config: Option<std::path::PathBuf>,
    /// Check the config file, print what it means, and exit.
    #[arg(long, requires = "config")]
    pub check_config: bool,
    /// Sample nothing during rounds: no GPU, host or engine-metrics telemetry (overrides the
    /// config file's `telemetry:`; calibration's baseline).
    #[arg(long)]
    pub no_telemetry: bool,
}

/// A `--label` that is not `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected KEY=VALUE, got {0:?}")]
pub struct NotALabel(String);

fn parse_label(s: &str) -> Result<(String, String), NotALabel> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(NotALabel(s.to_owned())),
    }
}

/// Serves until SIGINT or SIGTERM (rounds in progress stop sending load), after printing
/// `kvbench-agent listening on ADDR` on stdout.
pub async fn serve_until_signal(args: ServeArgs) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    let (config, listen) = match &args.config {
        Some(path) => {
            let f = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.check_config {
                println!("{}: OK", path.display());
                println!("  engine: {:?} at {}", f.engine_kind, f.engine_url);
                if f.clear_steps.is_empty() {
                    println!("  clear_cache: none configured (ClearCache will fail)");
                }
                for s in &f.clear_steps {
                    println!("  clear_cache: {} ({} {})", s.name, s.method, s.url);
                }
                match &f.restart {
                    Some(r) => println!("  restart_engine: {}", r.command().join(" ")),
                    None => println!("  restart_engine: not configured"),
                }
                println!(
                    "  on_engine_failure: {}",
                    match f.on_engine_failure {
                        config::OnEngineFailure::Report => "report (the round goes on)",
                        config::OnEngineFailure::Restart =>
                            "restart (stop the round, restart the engine, rerun the scenario)",
                    }
                );
                if f.engine_kind == config::EngineKind::Llamacpp {
                    let h = crate::engine::notes::llamacpp_host_cache(
                        &crate::engine::http::http_client(),
                        &f.engine_url,
                    )
                    .await;
                    if let Some(w) = crate::engine::notes::host_cache_warning(&h) {
                        println!("  warning: {w}");
                    }
                }
                let a = &f.access;
                match &a.tls {
                    Some(t) => println!(
                        "  tls: certificate {} ({}), clients {}",
                        t.cert_file.display(),
                        kvbench_common::tls::load_certs(&t.cert_file)
                            .ok()
                            .and_then(|c| c
                                .first()
                                .and_then(|c| kvbench_common::tls::describe(c).ok()))
                            .map_or_else(String::new, |s| s.subject),
                        match &t.client_ca_file {
                            Some(ca) => format!("signed by {}", ca.display()),
                            None => "of any certificate (token only)".into(),
                        }
                    ),
                    None => println!("  tls: off (loopback only, unless --insecure)"),
                }
                match &a.token {
                    Some(s) => println!("  token: required ({})", s.describe()),
                    None => println!("  token: none"),
                }
                println!(
                    "  commands: RestartEngine {}, ClearCache {}",
                    if a.allow_restart {
                        "allowed"
                    } else {
                        "refused"
                    },
                    if a.allow_clear { "allowed" } else { "refused" }
                );
                println!(
                    "  limits: {} requests, {} in flight, {} s per round",
                    a.limits.max_requests, a.limits.max_concurrency, a.limits.max_duration_s
                );
                if let Some(m) = f.metrics_listen {
                    println!("  metrics: http://{m}/metrics");
                }
                let t = &f.telemetry;
                let every = |on: bool, d: Duration| {
                    if on {
                        format!("every {} ms", d.as_millis())
                    } else {
                        "off".to_owned()
                    }
                };
                println!(
                    "  telemetry: GPUs {}, host {}, {} {}",
                    match t.gpu {
                        crate::telemetry::GpuChoice::Off => "off".to_owned(),
                        _ => format!("every {} ms through NVML", t.gpu_interval.as_millis()),
                    },
                    every(t.host, t.host_interval),
                    f.metrics_url,
                    every(t.engine_metrics, t.engine_metrics_interval)
                );
                for (store, url) in &t.store_metrics {
                    println!("  {store} metrics: {url}, scraped with the engine's");
                }
                return Ok(());
            }
            let listen = f.listen.unwrap_or(args.listen);
            (AgentConfig::from_file(f, hostname), listen)
        }
        None => {
            if !args.engine.starts_with("http://") {
                bail!(
                    "--engine must be an http:// base URL, got {:?}",
                    args.engine
                );
            }
            let name = args.name.clone().unwrap_or_else(hostname);
            let mut config = AgentConfig::vllm(name, args.engine.trim_end_matches('/'));
            config.labels = args.labels.into_iter().collect();
            (config, args.listen)
        }
    };
    let mut config = config;
    if args.no_telemetry {
        config.telemetry = crate::telemetry::TelemetryConfig::off();
    }
    let tls = config.access.tls.is_some();
    if !listen.ip().is_loopback() && !tls {
        if !args.insecure {
            bail!(
                "refusing to listen on {listen} without TLS: anyone who can reach the port could drive load on the engine; give the agent's config a `tls:` section (kvbench certs init makes the files), listen on loopback and tunnel (ssh -L), or pass --insecure to accept that"
            );
        }
        tracing::warn!(%listen, "--insecure: listening beyond loopback without TLS; anyone who reaches this port can drive load{}", if config.access.token.is_some() { ", and the token crosses the network in plaintext" } else { " (no token either)" });
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("kvbench-agent listening on {addr}");
    tracing::info!(%addr, engine = %config.engine_url, name = %config.name, tls, token = config.access.token.is_some(), allow_restart = config.access.allow_restart, allow_clear = config.access.allow_clear, "kvbench-agent listening");
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: stopping load, closing streams");
        s.cancel();
    });
    serve(listener, config, shutdown.clone()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (SIGINT alone where there is no SIGTERM).
async fn shutdown_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
