//! The gRPC adapter: the agent's one boundary between the wire and its core. Requests
//! become domain types here (through `kvbench_proto::convert`), the core's `RoundEvent`s
//! become wire events here, each refusal becomes a status code here, and nothing else in
//! the agent names a generated type. Also the server itself: [`serve`] and [`spawn`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvbench_common::agent::{RoundEvent, RoundRequest};
use kvbench_common::auth::{Secret, TokenSource};
use kvbench_proto::v1::{self, agent_server::Agent, agent_server::AgentServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::{Request as GrpcRequest, Response, Status};

use crate::core::{AgentCore, RoundRefused};
use crate::ops::{Caller, Counters};
use crate::tls::{Routes, ServerTls};
use crate::AgentConfig;

/// The service as tonic serves it (datasets travel with their rounds: large requests are
/// allowed).
fn grpc(service: AgentService) -> AgentServer<AgentService> {
    AgentServer::new(service).max_decoding_message_size(512 << 20)
}

/// The agent's service as tonic serves it: the core, behind the gate, converted.
#[derive(Debug)]
pub struct AgentService {
    core: Arc<AgentCore>,
    gate: Arc<Gate>,
}

/// Who may call, and what: the token, the commands allowed, the counters of both.
#[derive(Debug)]
struct Gate {
    token: Option<TokenCheck>,
    allow_restart: bool,
    allow_clear: bool,
    counters: Arc<Counters>,
}

/// The token clients must present; a `token_file` is read again when it changes (a
/// rotation), a file that no longer reads keeps the previous token.
#[derive(Debug)]
struct TokenCheck {
    source: TokenSource,
    state: std::sync::Mutex<(Option<std::time::SystemTime>, Secret)>,
}

impl TokenCheck {
    fn new(source: TokenSource) -> Result<TokenCheck, kvbench_common::auth::TokenError> {
        let secret = source.read()?;
        Ok(TokenCheck {
            state: std::sync::Mutex::new((Self::modified(&source), secret)),
            source,
        })
    }

    fn modified(source: &TokenSource) -> Option<std::time::SystemTime> {
        match source {
            TokenSource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            TokenSource::Env(_) => None,
        }
    }

    fn matches(&self, given: &[u8]) -> bool {
        let now = Self::modified(&self.source);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now != state.0 {
            state.0 = now;
            match self.source.read() {
                Ok(s) => {
                    state.1 = s;
                    tracing::info!(
                        "{} changed: the new token is required from now on",
                        self.source.describe()
                    );
                }
                Err(e) => tracing::warn!("{e}: keeping the previous token"),
            }
        }
        state.1.matches(given)
    }
}

/// A command as the audit names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Hello,
    RunRound,
    StopRound,
    ClearCache,
    RestartEngine,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Hello => "Hello",
            Call::RunRound => "RunRound",
            Call::StopRound => "StopRound",
            Call::ClearCache => "ClearCache",
            Call::RestartEngine => "RestartEngine",
        }
    }
}

impl Gate {
    /// The caller, or the refusal (audited and counted): a missing or wrong token, a
    /// command this host does not allow.
    fn admit<T>(&self, req: &GrpcRequest<T>, call: Call) -> Result<Caller, Status> {
        let peer = req.remote_addr();
        let subject = req
            .peer_certs()
            .and_then(|c| {
                c.first()
                    .and_then(|c| kvbench_common::tls::describe(c).ok())
            })
            .map(|s| s.subject);
        let who = match (&subject, &self.token, peer) {
            (Some(s), _, _) => s.clone(),
            (None, Some(_), _) => "token".to_owned(),
            (None, None, Some(p)) if p.ip().is_loopback() => "loopback".to_owned(),
            (None, None, _) => "peer".to_owned(),
        };
        let refuse = |reason: &'static str, message: String, status: fn(String) -> Status| {
            crate::ops::refused(&self.counters, &who, peer, call.name(), reason, &message);
            Err(status(message))
        };
        if let Some(token) = &self.token {
            let given = req
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes())
                .and_then(|v| v.strip_prefix(b"Bearer "));
            match given {
                None => {
                    return refuse(
                        "token_missing",
                        "missing token: this agent requires a bearer token (token_file or token_env in the plan's agent entry)".into(),
                        Status::unauthenticated,
                    )
                }
                Some(t) if !token.matches(t) => {
                    return refuse(
                        "token_wrong",
                        "wrong token: the bearer token does not match this agent's (check token_file or token_env on both sides)".into(),
                        Status::unauthenticated,
                    )
                }
                Some(_) => {}
            }
        }
        match call {
            Call::RestartEngine if !self.allow_restart => refuse(
                "restart_not_allowed",
                "RestartEngine is not allowed on this host (allow_restart: false in the agent's config)".into(),
                Status::permission_denied,
            ),
            Call::ClearCache if !self.allow_clear => refuse(
                "clear_not_allowed",
                "ClearCache is not allowed on this host (allow_clear: false in the agent's config)".into(),
                Status::permission_denied,
            ),
            _ => Ok(Caller { who, peer }),
        }
    }
}

fn refused(e: &RoundRefused) -> Status {
    if matches!(e, RoundRefused::HostLimit(_)) {
        Status::permission_denied(e.to_string())
    } else if e.is_bad_request() {
        Status::invalid_argument(e.to_string())
    } else {
        Status::failed_precondition(e.to_string())
    }
}

type WireEvents =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::RoundEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn restart_engine(
        &self,
        req: GrpcRequest<v1::RestartEngineRequest>,
    ) -> Result<Response<v1::RestartEngineResponse>, Status> {
        let caller = self.gate.admit(&req, Call::RestartEngine)?;
        crate::ops::accepted(&caller, "RestartEngine", "");
        let outcome = self.core.restart_outcome().await;
        let ok = outcome.succeeded();
        self.gate.counters.inc(
            crate::ops::RESTARTS,
            if ok { "succeeded" } else { "failed" },
        );
        crate::ops::completed(&caller, "RestartEngine", ok, &outcome.detail);
        Ok(Response::new((&outcome).into()))
    }

    async fn hello(
        &self,
        req: GrpcRequest<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        let caller = self.gate.admit(&req, Call::Hello)?;
        let r = req.get_ref();
        let info = self
            .core
            .hello(r.protocol_version, r.engine_status)
            .await
            .map_err(|e| {
                crate::ops::refused(
                    &self.gate.counters,
                    &caller.who,
                    caller.peer,
                    "Hello",
                    "protocol",
                    &e.to_string(),
                );
                Status::failed_precondition(e.to_string())
            })?;
        tracing::debug!(target: "kvbench_agent::audit", who = %caller, call = "Hello", outcome = "accepted");
        Ok(Response::new((&info).into()))
    }

    type RunRoundStream = WireEvents;

    async fn run_round(
        &self,
        req: GrpcRequest<v1::RunRoundRequest>,
    ) -> Result<Response<Self::RunRoundStream>, Status> {
        let caller = self.gate.admit(&req, Call::RunRound)?;
        let counters = self.gate.counters.clone();
        let request = RoundRequest::try_from(req.into_inner()).map_err(|e| {
            crate::ops::refused(
                &counters,
                &caller.who,
                caller.peer,
                "RunRound",
                "invalid",
                &e.to_string(),
            );
            Status::invalid_argument(e.to_string())
        })?;
        let what = format!(
            "scenario {:?} round {}: {} requests",
            request.scenario_name, request.round, request.workload.num_requests
        );
        let spec = self.core.round_spec(request).await.map_err(|e| {
            let reason = if matches!(e, RoundRefused::HostLimit(_)) {
                "host_limit"
            } else {
                "invalid"
            };
            crate::ops::refused(
                &counters,
                &caller.who,
                caller.peer,
                "RunRound",
                reason,
                &format!("{what}: {e}"),
            );
            refused(&e)
        })?;
        crate::ops::accepted(&caller, "RunRound", &what);
        counters.round_started();
        let mut ended = RoundEnded {
            counters: counters.clone(),
            finished: false,
        };
        let events = ReceiverStream::new(self.core.start_round(spec)).map(move |e| {
            match &e {
                RoundEvent::Record(r) => counters.inc(crate::ops::REQUESTS, r.outcome.label()),
                RoundEvent::Finished(_) => ended.finish(),
                _ => {}
            }
            Ok(v1::RoundEvent::from(&e))
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn stop_round(
        &self,
        req: GrpcRequest<v1::StopRoundRequest>,
    ) -> Result<Response<v1::StopRoundResponse>, Status> {
        let caller = self.gate.admit(&req, Call::StopRound)?;
        let r = req.into_inner();
        crate::ops::accepted(
            &caller,
            "StopRound",
            &format!("scenario id {:?} round {}", r.scenario_id, r.round),
        );
        Ok(Response::new(v1::StopRoundResponse {
            stopped: self.core.stop_round(&r.scenario_id, r.round),
        }))
    }

    async fn clear_cache(
        &self,
        req: GrpcRequest<v1::ClearCacheRequest>,
    ) -> Result<Response<v1::ClearCacheResponse>, Status> {
        let caller = self.gate.admit(&req, Call::ClearCache)?;
        crate::ops::accepted(&caller, "ClearCache", "");
        let outcome = self.core.clear_outcome().await;
        self.gate.counters.inc(
            crate::ops::CLEARS,
            if outcome.success {
                "succeeded"
            } else {
                "failed"
            },
        );
        crate::ops::completed(&caller, "ClearCache", outcome.success, &outcome.detail);
        Ok(Response::new((&outcome).into()))
    }
}

/// Counts a round's stream as ended when it is dropped (the round finished, failed or its
/// client left).
struct RoundEnded {
    counters: Arc<Counters>,
    finished: bool,
}

impl RoundEnded {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for RoundEnded {
    fn drop(&mut self) {
        self.counters.round_ended(self.finished);
    }
}

/// What a plaintext client of a TLS agent gets: every call refused, saying why.
#[derive(Debug)]
struct RequiresTls;

fn requires_tls() -> Status {
    Status::unauthenticated(kvbench_common::tls::Refusal::PlainClient.to_string())
}

#[tonic::async_trait]
impl Agent for RequiresTls {
    async fn restart_engine(
        &self,
        _: GrpcRequest<v1::RestartEngineRequest>,
    ) -> Result<Response<v1::RestartEngineResponse>, Status> {
        Err(requires_tls())
    }
    async fn hello(
        &self,
        _: GrpcRequest<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        Err(requires_tls())
    }
    type RunRoundStream = WireEvents;
    async fn run_round(
        &self,
        _: GrpcRequest<v1::RunRoundRequest>,
    ) -> Result<Response<Self::RunRoundStream>, Status> {
        Err(requires_tls())
    }
    async fn stop_round(
        &self,
        _: GrpcRequest<v1::StopRoundRequest>,
    ) -> Result<Response<v1::StopRoundResponse>, Status> {
        Err(requires_tls())
    }
    async fn clear_cache(
        &self,
        _: GrpcRequest<v1::ClearCacheRequest>,
    ) -> Result<Response<v1::ClearCacheResponse>, Status> {
        Err(requires_tls())
    }
}

/// Why the agent could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls: {0}")]
    Tls(#[from] kvbench_common::tls::TlsFileError),
    #[error("{0}")]
    Token(#[from] kvbench_common::auth::TokenError),
    #[error("metrics_listen {addr}: {message}")]
    Metrics { addr: SocketAddr, message: String },
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(kvbench_common::agent::LIVENESS_PING))
        .http2_keepalive_timeout(Some(kvbench_common::agent::LIVENESS_TIMEOUT))
        .tcp_nodelay(true)
}

/// Serves the agent protocol on a bound listener until `shutdown` is cancelled; rounds in
/// progress stop sending load then. TLS, token and limits as `config.access` says; the
/// agent's metrics on `config.metrics_listen`.
pub async fn serve(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let tls = match &config.access.tls {
        Some(files) => Some(Arc::new(ServerTls::load(files.clone())?)),
        None => None,
    };
    let token = config
        .access
        .token
        .clone()
        .map(TokenCheck::new)
        .transpose()?;
    let counters = Arc::new(Counters::default());
    if let Some(addr) = config.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Metrics {
                addr,
                message: e.to_string(),
            })?;
        tracing::info!(addr = %l.local_addr().map_or(addr, |a| a), "agent metrics at /metrics");
        let client = crate::engine::http::http_client();
        let health_url: Arc<str> = config.health_url.as_str().into();
        let health = move || {
            let client = client.clone();
            let url = health_url.clone();
            async move {
                Some(
                    crate::engine::http::get(&client, &url, Duration::from_secs(2))
                        .await
                        .is_ok(),
                )
            }
        };
        tokio::spawn(crate::ops::serve_metrics(
            l,
            counters.clone(),
            config.name.clone(),
            health,
            shutdown.child_token(),
        ));
    }
    let gate = Arc::new(Gate {
        token,
        allow_restart: config.access.allow_restart,
        allow_clear: config.access.allow_clear,
        counters: counters.clone(),
    });
    let choice = config.telemetry.gpu.clone();
    let (source, gpus, gpu_note) = tokio::task::spawn_blocking(move || open_gpus(choice))
        .await
        .unwrap_or_else(|e| (None, Vec::new(), Some(format!("GPU inventory failed: {e}"))));
    if let Some(note) = &gpu_note {
        tracing::info!("no GPU telemetry: {note}");
    }
    let unapplied = crate::scheduling::apply(&config.scheduling);
    for p in &unapplied {
        tracing::warn!("{p}");
    }
    let (nice, cpus) = crate::scheduling::current();
    tracing::info!(nice, cpus = ?cpus, "scheduling");
    let core = AgentCore::new(config, source, gpus, gpu_note, shutdown.child_token())
        .with_start_warnings(unapplied);
    let service = grpc(AgentService {
        core: Arc::new(core),
        gate,
    });
    let incoming = |rx| ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    match tls {
        None => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(crate::tls::accept(
                listener,
                Routes::Plain(tx),
                counters,
                shutdown.clone(),
            ));
            server()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming(rx), shutdown.cancelled_owned())
                .await?;
        }
        Some(tls) => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let (refuse_tx, refuse_rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(crate::tls::accept(
                listener,
                Routes::Tls {
                    tls,
                    service: tx,
                    refuser: refuse_tx,
                },
                counters,
                shutdown.clone(),
            ));
            tokio::spawn(
                server()
                    .add_service(AgentServer::new(RequiresTls))
                    .serve_with_incoming_shutdown(
                        incoming(refuse_rx),
                        shutdown.clone().cancelled_owned(),
                    ),
            );
            server()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    ReceiverStream::new(rx).map(Ok::<_, std::io::Error>),
                    shutdown.cancelled_owned(),
                )
                .await?;
        }
    }
    Ok(())
}

/// Opens the GPU source an agent samples, and reads its inventory. Blocking.
fn open_gpus(
    choice: crate::telemetry::GpuChoice,
) -> (
    Option<std::sync::Arc<dyn crate::telemetry::gpu::GpuSource>>,
    Vec<kvbench_common::agent::GpuInfo>,
    Option<String>,
) {
    let source: std::sync::Arc<dyn crate::telemetry::gpu::GpuSource> = match choice {
        crate::telemetry::GpuChoice::Off => {
            return (
                None,
                Vec::new(),
                Some("GPU sampling is off (telemetry.gpu: false)".into()),
            )
        }
        crate::telemetry::GpuChoice::Source(s) => s,
        crate::telemetry::GpuChoice::Nvml => match crate::telemetry::gpu::NvmlSource::open() {
            Ok(s) => std::sync::Arc::new(s),
            Err(e) => return (None, Vec::new(), Some(e.to_string())),
        },
    };
    let (gpus, note) = crate::telemetry::gpu::inventory(&*source);
    (Some(source), gpus, note)
}

/// An agent running in this process (the embedded default, and tests).
#[derive(Debug)]
pub struct AgentHandle {
    pub addr: SocketAddr,
    tls: bool,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl AgentHandle {
    /// `http://127.0.0.1:PORT` (`https://` with TLS), for a gRPC channel.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
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
    let tls = config.access.tls.is_some();
    let task = tokio::spawn(serve(listener, config, shutdown.clone()));
    Ok(AgentHandle {
        addr,
        tls,
        shutdown,
        task,
    })
}
