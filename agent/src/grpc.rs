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

/// The agent's service as tonic serves it: the core, behind the gate, converted; and each
/// round's events, numbered and kept until the coordinator holds them.
#[derive(Debug)]
pub struct AgentService {
    core: Arc<AgentCore>,
    gate: Arc<Gate>,
    rounds: Rounds,
    state_dir: std::path::PathBuf,
}

/// A round's wire events, kept for a resume.
type Log = crate::replay::RoundLog<v1::RoundEvent>;
/// The rounds whose events are kept, by (scenario id, round).
type Rounds = Arc<std::sync::Mutex<std::collections::HashMap<(String, u32), Arc<Log>>>>;

/// Events a stream sends before it looks at the log again.
const READ_BATCH: usize = 256;

/// A stream of the log's events after `after`, for reader `reader`: it ends after the
/// round's last event, or when a newer stream reads the log.
fn pump(log: Arc<Log>, reader: u64, after: u64) -> WireEvents {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_BATCH);
    tokio::spawn(async move {
        let mut after = after;
        loop {
            let changed = log.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match log.read(reader, after, READ_BATCH) {
                Ok(crate::replay::Read::Events(events)) => {
                    for (seq, mut e) in events {
                        e.seq = seq;
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                        after = seq;
                    }
                }
                Ok(crate::replay::Read::Wait) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tx.closed() => return,
                    }
                }
                Ok(crate::replay::Read::End | crate::replay::Read::Superseded) => return,
                Err(e) => {
                    let _ = tx.send(Err(Status::data_loss(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Keeps a round's events as the load sends them: numbered into its log, counted; stops
/// the load when the coordinator has been silent too long; then keeps the log until the
/// coordinator holds it all or has been silent past the round's reconnect window.
async fn keep_round(
    core: Arc<AgentCore>,
    rounds: Rounds,
    key: (String, u32),
    log: Arc<Log>,
    mut events: tokio::sync::mpsc::Receiver<RoundEvent>,
    window: Duration,
    counters: Arc<Counters>,
) {
    use kvbench_common::agent::{StopReason, COORDINATOR_SILENCE_LIMIT};
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut stopped, mut finished) = (false, false);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => {
                    match &e {
                        RoundEvent::Record(r) => counters.inc(crate::ops::REQUESTS, r.outcome.label()),
                        RoundEvent::Finished(_) => finished = true,
                        RoundEvent::EngineRestarted(r) => counters.inc(
                            crate::ops::RESTARTS,
                            if r.succeeded() { "succeeded" } else { "failed" },
                        ),
                        _ => {}
                    }
                    if let (_, Some(error)) = log.push(v1::RoundEvent::from(&e)) {
                        tracing::warn!(scenario_id = %key.0, round = key.1, "cannot spill the round's events ({error}): they stay in memory");
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !stopped && log.silent_for() > COORDINATOR_SILENCE_LIMIT.min(window) {
                    stopped = true;
                    tracing::warn!(scenario_id = %key.0, round = key.1, "no word from the coordinator for {:.0} s: stopping the round's load, keeping what it measured for a resume", COORDINATOR_SILENCE_LIMIT.min(window).as_secs_f64());
                    core.stop_round(&key.0, key.1, StopReason::CoordinatorSilent);
                }
            }
        }
    }
    log.end();
    counters.round_ended(finished);
    while !log.done() && log.silent_for() <= window {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !log.done() {
        tracing::warn!(scenario_id = %key.0, round = key.1, "the coordinator did not come back within {} s: the round's unacknowledged events are dropped", window.as_secs_f64());
    }
    log.discard();
    if let Ok(mut r) = rounds.lock() {
        if r.get(&key).is_some_and(|l| Arc::ptr_eq(l, &log)) {
            r.remove(&key);
        }
    }
}

/// A spill file's name: the agent's, never the coordinator's (a scenario id is untrusted).
fn spill_file(dir: &std::path::Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("round-{}-{n}.spill", std::process::id()))
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
    ResumeRound,
    AckRound,
    ClearCache,
    RestartEngine,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Hello => "Hello",
            Call::RunRound => "RunRound",
            Call::StopRound => "StopRound",
            Call::ResumeRound => "ResumeRound",
            Call::AckRound => "AckRound",
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
        let key = (spec.request.scenario_id.clone(), spec.request.round);
        let window = spec.request.reconnect_window;
        let log = {
            let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
            // The same round again (a coordinator that ran the same plan within the
            // second): refused while the earlier one's events are still owed.
            if rounds.get(&key).is_some_and(|l| !l.done()) {
                let message = format!("{what}: this round of this scenario already ran here (ResumeRound reads its events)");
                crate::ops::refused(
                    &counters,
                    &caller.who,
                    caller.peer,
                    "RunRound",
                    "invalid",
                    &message,
                );
                return Err(Status::already_exists(message));
            }
            let log = Arc::new(Log::new(
                spill_file(&self.state_dir),
                crate::replay::MEMORY_EVENTS,
            ));
            rounds.insert(key.clone(), log.clone());
            log
        };
        crate::ops::accepted(&caller, "RunRound", &what);
        counters.round_started();
        let events = self.core.start_round(spec);
        tokio::spawn(keep_round(
            self.core.clone(),
            self.rounds.clone(),
            key,
            log.clone(),
            events,
            window,
            counters,
        ));
        let reader = log.attach();
        Ok(Response::new(pump(log, reader, 0)))
    }

    type ResumeRoundStream = WireEvents;

    async fn resume_round(
        &self,
        req: GrpcRequest<v1::ResumeRoundRequest>,
    ) -> Result<Response<Self::ResumeRoundStream>, Status> {
        let caller = self.gate.admit(&req, Call::ResumeRound)?;
        let r = req.into_inner();
        let what = format!(
            "scenario id {:?} round {} after event {}",
            kvbench_common::util::untrusted(&r.scenario_id, 256),
            r.round,
            r.after_seq
        );
        let log = self
            .rounds
            .lock()
            .ok()
            .and_then(|rounds| rounds.get(&(r.scenario_id.clone(), r.round)).cloned());
        let Some(log) = log else {
            tracing::warn!(target: "kvbench_agent::audit", who = %caller, call = "ResumeRound", outcome = "not_found", detail = %what);
            return Err(Status::not_found(format!(
                "{what}: this agent keeps no such round (it was forgotten after its reconnect window, or the agent restarted)"
            )));
        };
        crate::ops::accepted(&caller, "ResumeRound", &what);
        let reader = log.attach();
        Ok(Response::new(pump(log, reader, r.after_seq)))
    }

    async fn ack_round(
        &self,
        req: GrpcRequest<v1::AckRoundRequest>,
    ) -> Result<Response<v1::AckRoundResponse>, Status> {
        self.gate.admit(&req, Call::AckRound)?;
        let r = req.into_inner();
        let log = self
            .rounds
            .lock()
            .ok()
            .and_then(|rounds| rounds.get(&(r.scenario_id, r.round)).cloned());
        if let Some(log) = &log {
            log.ack(r.seq);
        }
        Ok(Response::new(v1::AckRoundResponse {
            known: log.is_some(),
        }))
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
            stopped: self.core.stop_round(
                &r.scenario_id,
                r.round,
                kvbench_common::agent::StopReason::Requested,
            ),
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
    type ResumeRoundStream = WireEvents;
    async fn resume_round(
        &self,
        _: GrpcRequest<v1::ResumeRoundRequest>,
    ) -> Result<Response<Self::ResumeRoundStream>, Status> {
        Err(requires_tls())
    }
    async fn ack_round(
        &self,
        _: GrpcRequest<v1::AckRoundRequest>,
    ) -> Result<Response<v1::AckRoundResponse>, Status> {
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
/// progress stop sending load then, and the agent serves on until its coordinator holds
/// what they measured, [`SHUTDOWN_GRACE`] at most. TLS, token and limits as
/// `config.access` says; the agent's metrics on `config.metrics_listen`.
pub async fn serve(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with_grace(listener, config, shutdown, SHUTDOWN_GRACE).await
}

async fn serve_with_grace(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: CancellationToken,
    grace: Duration,
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
    let state_dir = config.state_dir.clone();
    // `shutdown` stops the rounds' load at once; the server goes on until the coordinator
    // holds what they measured (or SHUTDOWN_GRACE passed), so that it can still take it.
    let core = AgentCore::new(config, source, gpus, gpu_note, shutdown.child_token())
        .with_start_warnings(unapplied);
    let rounds: Rounds = Arc::default();
    let serving = CancellationToken::new();
    tokio::spawn(drain_then_stop(
        shutdown.clone(),
        rounds.clone(),
        serving.clone(),
        grace,
    ));
    let service = grpc(AgentService {
        core: Arc::new(core),
        gate,
        rounds,
        state_dir,
    });
    let incoming = |rx| ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    match tls {
        None => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(crate::tls::accept(
                listener,
                Routes::Plain(tx),
                counters,
                serving.clone(),
            ));
            server()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming(rx), serving.cancelled_owned())
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
                serving.clone(),
            ));
            tokio::spawn(
                server()
                    .add_service(AgentServer::new(RequiresTls))
                    .serve_with_incoming_shutdown(
                        incoming(refuse_rx),
                        serving.clone().cancelled_owned(),
                    ),
            );
            server()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    ReceiverStream::new(rx).map(Ok::<_, std::io::Error>),
                    serving.cancelled_owned(),
                )
                .await?;
        }
    }
    Ok(())
}

/// How long a stopping agent waits for its coordinator to hold its rounds' events.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(12);

/// Once `shutdown` fires (the rounds' load stops with it), waits until every round's events
/// are acknowledged, or `grace` passed, then stops the server (`serving`).
async fn drain_then_stop(
    shutdown: CancellationToken,
    rounds: Rounds,
    serving: CancellationToken,
    grace: Duration,
) {
    shutdown.cancelled().await;
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let left = rounds.lock().map(|r| r.len()).unwrap_or(0);
        if left == 0 || grace.is_zero() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(rounds = left, "stopping with rounds whose events the coordinator does not hold yet: they are lost");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serving.cancel();
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

/// Starts an agent on `127.0.0.1:0`. It lives in the caller's process: stopping it waits
/// for nothing (what it keeps would end with the process anyway).
pub async fn spawn(config: AgentConfig) -> std::io::Result<AgentHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let tls = config.access.tls.is_some();
    let task = tokio::spawn(serve_with_grace(
        listener,
        config,
        shutdown.clone(),
        Duration::ZERO,
    ));
    Ok(AgentHandle {
        addr,
        tls,
        shutdown,
        task,
    })
}
