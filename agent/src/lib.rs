//! `kvbench-agent`: serves the agent protocol next to one serving engine. It generates
//! load locally against that engine, clears its cache on command, and streams one record
//! per request back to the coordinator.
//!
//! The agent owns its engine's address (from its own command line or config): nothing that
//! arrives over gRPC names a URL, a path or a command.

pub mod clear;
pub mod client;
pub mod config;
pub mod engine_notes;
pub mod engine_tokens;
pub mod gpu;
pub mod health;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod prefix;
mod round;
mod service;
pub mod sse;
pub mod telemetry;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use round::RoundSpec;

/// Where the load engine and the samplers send a round's events; the gRPC service maps
/// them to the wire.
pub(crate) type EventTx = tokio::sync::mpsc::Sender<kvbench_common::agent::RoundEvent>;
pub use service::AgentService;

/// What an agent is and where its engine is.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Shown in reports (`agent` in records); defaults to the hostname.
    pub name: String,
    /// The engine's base URL (`http://127.0.0.1:8000`, no `/v1`).
    pub engine_url: String,
    /// The engine's Prometheus endpoint (default `{engine_url}/metrics`).
    pub metrics_url: String,
    /// What must answer 200 once the engine is up (default `{engine_url}/health`).
    pub health_url: String,
    /// The model the engine serves; a restart is done once `/v1/models` lists it.
    pub model: Option<String>,
    /// GPU, host and engine-metrics sampling.
    pub telemetry: telemetry::TelemetryConfig,
    /// cloud, region, node, engine, model, ...
    pub labels: BTreeMap<String, String>,
    /// What ClearCache does, in order.
    pub clear_steps: Vec<clear::ClearStep>,
    /// How RestartEngine restarts the engine (none: it cannot).
    pub restart: Option<config::Restart>,
    /// What kind of engine it is (what its clear and its quirks are).
    pub kind: config::EngineKind,
}

impl AgentConfig {
    /// An agent for a vLLM-compatible engine (kvbench-sim included): clearing calls
    /// vLLM's reset endpoint.
    pub fn vllm(name: impl Into<String>, engine_url: impl Into<String>) -> AgentConfig {
        let engine_url: String = engine_url.into();
        AgentConfig {
            name: name.into(),
            clear_steps: clear::preset("vllm", &engine_url, None)
                .into_iter()
                .collect(),
            restart: None,
            metrics_url: format!("{engine_url}/metrics"),
            health_url: format!("{engine_url}/health"),
            model: None,
            telemetry: telemetry::TelemetryConfig::default(),
            engine_url,
            labels: BTreeMap::new(),
            kind: config::EngineKind::Vllm,
        }
    }
}

impl AgentConfig {
    /// The agent a config file describes; `default_name` when the file names none.
    pub fn from_file(f: config::AgentFile, default_name: impl FnOnce() -> String) -> AgentConfig {
        AgentConfig {
            name: f.name.unwrap_or_else(default_name),
            engine_url: f.engine_url,
            metrics_url: f.metrics_url,
            health_url: f.health_url,
            model: f.model,
            telemetry: f.telemetry,
            labels: f.labels,
            clear_steps: f.clear_steps,
            restart: f.restart,
            kind: f.engine_kind,
        }
    }
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

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
    /// Accept a listen address beyond loopback without TLS (plaintext, unauthenticated).
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

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
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
                if f.engine_kind == config::EngineKind::Llamacpp {
                    let h =
                        engine_notes::llamacpp_host_cache(&client::http_client(), &f.engine_url)
                            .await;
                    if let Some(w) = engine_notes::host_cache_warning(&h) {
                        println!("  warning: {w}");
                    }
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
                        telemetry::GpuChoice::Off => "off".to_owned(),
                        _ => format!("every {} ms through NVML", t.gpu_interval.as_millis()),
                    },
                    every(t.host, t.host_interval),
                    f.metrics_url,
                    every(t.engine_metrics, t.engine_metrics_interval)
                );
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
        config.telemetry = telemetry::TelemetryConfig::off();
    }
    if !listen.ip().is_loopback() && !args.insecure {
        bail!(
            "refusing to listen on {listen} without TLS: this build has no TLS or authentication, so anyone who can reach the port could drive load; listen on loopback (and tunnel), or pass --insecure to accept that"
        );
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("kvbench-agent listening on {addr}");
    tracing::info!(%addr, engine = %config.engine_url, name = %config.name, "kvbench-agent listening");
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        kvbench_common::shutdown_signal().await;
        tracing::info!("shutting down: stopping load, closing streams");
        s.cancel();
    });
    serve(listener, config, shutdown.clone()).await?;
    Ok(())
}

/// Serves the agent protocol on a bound listener until `shutdown` is cancelled; rounds in
/// progress stop sending load then.
pub async fn serve(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let choice = config.telemetry.gpu.clone();
    let (source, gpus, gpu_note) = tokio::task::spawn_blocking(move || open_gpus(choice))
        .await
        .unwrap_or_else(|e| (None, Vec::new(), Some(format!("GPU inventory failed: {e}"))));
    if let Some(note) = &gpu_note {
        tracing::info!("no GPU telemetry: {note}");
    }
    let svc = AgentService::new(config, source, gpus, gpu_note, shutdown.child_token());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
        .add_service(service::grpc(svc))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}

/// Opens the GPU source an agent samples, and reads its inventory. Blocking.
fn open_gpus(
    choice: telemetry::GpuChoice,
) -> (
    Option<std::sync::Arc<dyn gpu::GpuSource>>,
    Vec<kvbench_common::agent::GpuInfo>,
    Option<String>,
) {
    let source: std::sync::Arc<dyn gpu::GpuSource> = match choice {
        telemetry::GpuChoice::Off => {
            return (
                None,
                Vec::new(),
                Some("GPU sampling is off (telemetry.gpu: false)".into()),
            )
        }
        telemetry::GpuChoice::Source(s) => s,
        telemetry::GpuChoice::Nvml => match gpu::NvmlSource::open() {
            Ok(s) => std::sync::Arc::new(s),
            Err(e) => return (None, Vec::new(), Some(e)),
        },
    };
    let (gpus, note) = gpu::inventory(&*source);
    (Some(source), gpus, note)
}

/// An agent running in this process (the embedded default, and tests).
#[derive(Debug)]
pub struct AgentHandle {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl AgentHandle {
    /// `http://127.0.0.1:PORT`, for a gRPC channel.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts an agent on `127.0.0.1:0`.
pub async fn spawn(config: AgentConfig) -> std::io::Result<AgentHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, config, shutdown.clone()));
    Ok(AgentHandle {
        addr,
        shutdown,
        task,
    })
}
