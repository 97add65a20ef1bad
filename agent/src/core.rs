//! The agent's domain core, in domain types only (no tonic, no generated types): the
//! rounds it runs and their registry, drain before a clear or restart, stop, restart,
//! the cold probe after a clear, and what it tells about itself and its engine.
//! [`crate::grpc`] adapts it to the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvbench_common::agent::{
    AgentInfo, ClearOutcome, ColdProbe, GpuInfo, RestartError, RestartOutcome, RoundEvent,
    RoundRequest, RoundRequests, StopReason,
};
use kvbench_common::dataset::trace_conversations;
use kvbench_common::telemetry::engine_metric;
use kvbench_common::tokenizer::Whitespace;
use kvbench_common::PROTOCOL_VERSION;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::clear::ClearFailed;
use crate::engine::http::{http_client, EngineCallError, HttpClient};
use crate::engine::identity::model_ids;
use crate::load::{self, PerfectStore, ReplyStore, RoundSpec};
use crate::telemetry::Telemetry;
use crate::AgentConfig;

/// The furthest ahead a round may ask to start (its `start_at`), in seconds.
const MAX_START_AHEAD_S: f64 = 600.0;

/// A coordinator that speaks another protocol version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol version mismatch: coordinator speaks {theirs}, agent {} speaks {PROTOCOL_VERSION}; use matching kvbench releases", env!("CARGO_PKG_VERSION"))]
pub struct ProtocolMismatch {
    pub theirs: u32,
}

/// Why a round is not started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundRefused {
    #[error("rounds are numbered from 1")]
    RoundZero,
    /// Something it asks for is past kvbench's limits (each named).
    #[error("out of range: {0} (see kvbench's limits)")]
    OutOfRange(String),
    #[error("start_at is {ahead_s:.0} s ahead of this agent's clock, more than {MAX_START_AHEAD_S} s: are the coordinator's and this host's clocks set?")]
    StartTooFarAhead { ahead_s: f64 },
    /// The tokenizer the round brought cannot be loaded.
    #[error(transparent)]
    Tokenizer(#[from] kvbench_common::tokenizer::NotATokenizer),
    /// `tokenizer: engine`, and the engine's `/tokenize` did not answer as it should.
    #[error("tokenizer: engine needs the engine's /tokenize: {0}")]
    EngineTokenizer(EngineCallError),
    /// Past what this host's config allows (`limits:`).
    #[error("over this host's limits: {0} (the agent's config, limits:)")]
    HostLimit(String),
}

impl RoundRefused {
    /// Whether the request itself is at fault (else: the engine's state is).
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, RoundRefused::EngineTokenizer(_))
    }
}

/// How long ClearCache waits for this agent's rounds to finish before giving up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct AgentCore {
    config: AgentConfig,
    base_url: Arc<str>,
    name: Arc<str>,
    hostname: String,
    gpus: Vec<GpuInfo>,
    gpu_note: Option<String>,
    client: HttpClient,
    telemetry: Telemetry,
    replies: Arc<ReplyStore>,
    perfect: Arc<PerfectStore>,
    probe: Arc<std::sync::Mutex<Option<load::Probe>>>,
    tokenizers: crate::tokenizer::TokenizerCache,
    /// `tokenizer: engine`: the engine's token costs, measured at its first round.
    engine_tokens: tokio::sync::Mutex<Option<Arc<crate::engine::tokens::EngineTokens>>>,
    active: Arc<(AtomicUsize, Notify)>,
    /// Rounds running now, by (scenario id, round): StopRound cancels them, saying why.
    running: Arc<std::sync::Mutex<std::collections::HashMap<(String, u32), RoundStop>>>,
    shutdown: CancellationToken,
    /// What the agent could not do as configured when it started (its `scheduling:`).
    start_warnings: Vec<String>,
}

impl AgentCore {
    /// With what the agent could not do as configured at start, shown with its info.
    pub fn with_start_warnings(mut self, warnings: Vec<String>) -> Self {
        self.start_warnings = warnings;
        self
    }

    pub fn new(
        config: AgentConfig,
        gpu_source: Option<Arc<dyn crate::telemetry::gpu::GpuSource>>,
        gpus: Vec<GpuInfo>,
        gpu_note: Option<String>,
        shutdown: CancellationToken,
    ) -> Self {
        let client = http_client();
        let telemetry = Telemetry {
            config: config.telemetry.clone(),
            gpus: gpu_source,
            client: client.clone(),
            metrics_url: config.metrics_url.as_str().into(),
        };
        AgentCore {
            base_url: config.engine_url.trim_end_matches('/').into(),
            name: config.name.clone().into(),
            hostname: kvbench_common::util::hostname(),
            config,
            gpus,
            gpu_note,
            client,
            telemetry,
            replies: Arc::new(ReplyStore::default()),
            perfect: Arc::new(PerfectStore::default()),
            probe: Arc::default(),
            tokenizers: Default::default(),
            engine_tokens: Default::default(),
            active: Arc::new((AtomicUsize::new(0), Notify::new())),
            running: Arc::default(),
            shutdown,
            start_warnings: Vec::new(),
        }
    }

    /// Waits until no round of this agent is running.
    async fn drain(&self) -> bool {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let notified = self.active.1.notified();
            if self.active.0.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Runs the configured clear steps in order.
    async fn reset_prefix_cache(&self) -> Result<String, ClearFailed> {
        crate::engine::clear::run_all(&self.client, &self.config.clear_steps).await
    }
}

impl AgentCore {
    /// Runs the configured restart command, then waits until `/health` is 200 and
    /// `/v1/models` answers (listing the configured model, if one is named), then checks
    /// that the engine really restarted (see [`crate::identity`]).
    async fn restart(&self) -> Result<String, (RestartError, String)> {
        let before = self.identity().await;
        let stop = tokio_util::sync::CancellationToken::new();
        let health = crate::engine::identity::watch_health(
            self.client.clone(),
            self.config.health_url.clone(),
            stop.clone(),
        );
        let result = self.restart_and_wait(&health).await;
        stop.cancel();
        let done = result?;
        let mut evidence = Vec::new();
        if health.went_down.load(std::sync::atomic::Ordering::Relaxed) {
            evidence.push("its health went down".to_owned());
        }
        evidence.extend(before.changes(&self.identity().await));
        if evidence.is_empty() {
            let pid = before.pid.map_or(String::new(), |p| {
                format!(", the same process (pid {p}) listens on its port")
            });
            return Err((
                RestartError::RestartUnverified,
                format!("{done}, but nothing shows the engine restarted: its health never failed{pid}, its counters did not reset; the old engine may still be serving"),
            ));
        }
        Ok(format!("{done}; restart verified: {}", evidence.join(", ")))
    }

    async fn identity(&self) -> crate::engine::identity::Identity {
        crate::engine::identity::Identity::of(
            &self.client,
            &self.base_url,
            &self.config.metrics_url,
        )
        .await
    }

    /// The restart command, then the wait for health: `/v1/models` answers and `/health`
    /// has been steady for 300 ms after the command (an engine still going down when it
    /// first answers is not back).
    async fn restart_and_wait(
        &self,
        health: &crate::engine::identity::HealthWatch,
    ) -> Result<String, (RestartError, String)> {
        let Some(r) = &self.config.restart else {
            return Err((
                RestartError::NotConfigured,
                "this agent has no restart_engine in its config file".into(),
            ));
        };
        let cmd = r.command();
        let (prog, args) = cmd.split_first().ok_or((
            RestartError::NotConfigured,
            "empty restart command".to_owned(),
        ))?;
        let status = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| {
                (
                    RestartError::CommandFailed,
                    format!("{}: {e}", cmd.join(" ")),
                )
            })?;
        if !status.success() {
            return Err((
                RestartError::CommandFailed,
                format!("{} exited with {status}", cmd.join(" ")),
            ));
        }
        health
            .up_streak
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let timeout = Duration::from_secs_f64(r.timeout_s.unwrap_or(600.0));
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match self
                .ready(r.model.as_deref().or(self.config.model.as_deref()))
                .await
            {
                Ok(()) if health.steady(3) => {
                    return Ok(format!("{} done; the engine is healthy", cmd.join(" ")))
                }
                Ok(()) => last = "healthy, not yet for 300 ms".into(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err((
            RestartError::RestartTimeout,
            format!(
                "the engine was not healthy {} s after {} ({last})",
                timeout.as_secs_f64(),
                cmd.join(" ")
            ),
        ))
    }

    async fn ready(&self, model: Option<&str>) -> Result<(), NotReady> {
        let get = |url: String| {
            let client = self.client.clone();
            async move { crate::engine::http::get(&client, &url, Duration::from_secs(5)).await }
        };
        get(self.config.health_url.clone()).await?;
        let models = get(format!("{}/v1/models", self.base_url)).await?;
        if let Some(m) = model {
            if !models.contains(&format!("\"{m}\"")) {
                return Err(NotReady::ModelNotListed(m.to_owned()));
            }
        }
        Ok(())
    }

    /// Sends the latest round's first prompt again (1 output token) and reads what the
    /// engine reused of it, from its usage and from its prefix-cache counters; then clears
    /// again, so that the probe leaves nothing behind. `None` before any round ran.
    async fn cold_probe(&self) -> Option<ColdProbe> {
        let probe = self.probe.lock().ok()?.clone()?;
        let before = crate::engine::metrics::scrape(&self.client, &self.config.metrics_url).await;
        let call = crate::load::request::Call {
            base_url: &self.base_url,
            api: probe.api,
            model: &probe.model,
            messages: &probe.messages,
            max_tokens: 1,
            enforce_output_length: false,
            ttft_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            on_first_token: None,
            cache_details: false,
        };
        let reply = crate::load::request::send(&self.client, &call).await;
        let after = crate::engine::metrics::scrape(&self.client, &self.config.metrics_url).await;
        let delta = |k: &str| Some(after.as_ref()?.get(k)? - before.as_ref()?.get(k)?);
        let cleared_again = self.reset_prefix_cache().await;
        let mut error = if reply.outcome == kvbench_common::record::Outcome::Ok {
            String::new()
        } else {
            format!("probe failed ({}): {}", reply.outcome, reply.error)
        };
        if let Err(e) = cleared_again {
            error = format!(
                "{error}{}clearing after the probe failed: {e}",
                if error.is_empty() { "" } else { "; " }
            );
        }
        Some(ColdProbe {
            prompt_tokens: reply.prompt_tokens.unwrap_or(0),
            cached_tokens: reply.cached_tokens,
            counter_hits: delta(engine_metric::PREFIX_CACHE_HITS[0]),
            counter_queries: delta(engine_metric::PREFIX_CACHE_QUERIES[0]),
            error,
        })
    }
}

/// How a running round is stopped, and why it was.
#[derive(Debug, Clone)]
struct RoundStop {
    cancel: CancellationToken,
    why: Arc<std::sync::OnceLock<StopReason>>,
}

struct ActiveGuard(Arc<(AtomicUsize, Notify)>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .1.notify_waiters();
        }
    }
}

/// The agent's actions in domain types; the gRPC trait below only converts.
impl AgentCore {
    fn info(&self) -> AgentInfo {
        AgentInfo {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            hostname: self.hostname.clone(),
            agent_name: self.config.name.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            gpus: self.gpus.clone(),
            engine_display: self.config.engine_url.clone(),
            gpu_note: self.gpu_note.clone(),
            warnings: self.start_warnings.clone(),
            agent_time_us: 0,
            engine_kind: self.config.kind.label().into(),
            engine_models: Vec::new(),
            engine_healthy: None,
            engine_health_detail: String::new(),
            engine_version: String::new(),
        }
    }

    /// The version the engine reports, from the first of vLLM's `/version` (`version`),
    /// llama.cpp's `/props` (`build_info`) and SGLang's `/get_server_info` (`version`) that
    /// answers with one; empty when none does.
    async fn engine_version(&self) -> String {
        let timeout = Duration::from_secs(3);
        for (path, field) in [
            ("/version", "version"),
            ("/props", "build_info"),
            ("/get_server_info", "version"),
        ] {
            let url = format!("{}{path}", self.base_url);
            let Ok(body) = crate::engine::http::get(&self.client, &url, timeout).await else {
                continue;
            };
            let version = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(str::to_owned));
            if let Some(v) = version.filter(|v| !v.is_empty()) {
                return v.chars().take(120).collect();
            }
        }
        String::new()
    }

    /// The engine as it is now: healthy or why not, the models it lists, and the warnings
    /// about it; the three asked at once.
    async fn engine_status(&self, info: &mut AgentInfo) {
        let timeout = Duration::from_secs(3);
        let health = crate::engine::http::get(&self.client, &self.config.health_url, timeout);
        let models_url = format!("{}/v1/models", self.base_url);
        let models = crate::engine::http::get(&self.client, &models_url, timeout);
        let (health, models, warnings, version) = tokio::join!(
            health,
            models,
            self.engine_warnings(),
            self.engine_version()
        );
        info.engine_version = version;
        info.engine_healthy = Some(health.is_ok());
        let mut detail = Vec::new();
        if let Err(e) = health {
            detail.push(e.to_string());
        }
        match models.and_then(|body| model_ids(&models_url, &body)) {
            Ok(ids) => info.engine_models = ids,
            Err(e) => detail.push(e.to_string()),
        }
        info.engine_health_detail = detail.join("; ");
        info.warnings = [self.start_warnings.clone(), warnings].concat();
    }

    /// The engine's token costs, measured through its `/tokenize` once per agent.
    async fn engine_tokens(
        &self,
        model: &str,
    ) -> Result<Arc<crate::engine::tokens::EngineTokens>, RoundRefused> {
        let mut cached = self.engine_tokens.lock().await;
        if let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let t = crate::engine::tokens::EngineTokens::measure(
            &self.client,
            &self.config.engine_url,
            model,
        )
        .await
        .map_err(RoundRefused::EngineTokenizer)?;
        tracing::info!(pieces = t.len(), "measured the engine's token costs");
        let t = Arc::new(t);
        *cached = Some(t.clone());
        Ok(t)
    }

    /// What the agent can tell about its engine now that a plan should know.
    async fn engine_warnings(&self) -> Vec<String> {
        if self.config.kind != crate::config::EngineKind::Llamacpp {
            return Vec::new();
        }
        let h =
            crate::engine::notes::llamacpp_host_cache(&self.client, &self.config.engine_url).await;
        crate::engine::notes::host_cache_warning(&h)
            .into_iter()
            .collect()
    }

    pub(crate) async fn restart_outcome(&self) -> RestartOutcome {
        let start = Instant::now();
        let took = || start.elapsed().as_secs_f64() * 1000.0;
        if !self.drain().await {
            return RestartOutcome {
                error: Some(RestartError::CommandFailed),
                detail: "rounds still running: not restarting".into(),
                took_ms: took(),
            };
        }
        self.restart_since(start, "restart_engine").await
    }

    /// Restarts the engine; what it did, timed from `start`, logged as `what`.
    async fn restart_since(&self, start: Instant, what: &str) -> RestartOutcome {
        let r = self.restart().await;
        tracing::info!(result = ?r, "{what}");
        let (error, detail) = match r {
            Ok(d) => (None, d),
            Err((c, d)) => (Some(c), d),
        };
        RestartOutcome {
            error,
            detail,
            took_ms: start.elapsed().as_secs_f64() * 1000.0,
        }
    }

    pub(crate) async fn clear_outcome(&self) -> ClearOutcome {
        let start = Instant::now();
        let took = || start.elapsed().as_secs_f64() * 1000.0;
        if !self.drain().await {
            return ClearOutcome {
                success: false,
                detail: format!(
                    "rounds still running after {} s; cache not cleared",
                    DRAIN_TIMEOUT.as_secs()
                ),
                took_ms: took(),
                probe: None,
            };
        }
        let (success, detail) = match self.reset_prefix_cache().await {
            Ok(d) => (true, d),
            Err(d) => (false, d.to_string()),
        };
        let probe = if success {
            self.cold_probe().await
        } else {
            None
        };
        tracing::info!(success, detail = %detail, probe = ?probe, "clear_cache");
        ClearOutcome {
            success,
            detail,
            took_ms: took(),
            probe,
        }
    }

    /// The round's spec as the load engine runs it: requests expanded, tokenizer loaded
    /// (or, for `tokenizer: engine`, the engine's token costs measured once).
    pub(crate) async fn round_spec(&self, mut r: RoundRequest) -> Result<RoundSpec, RoundRefused> {
        if r.round == 0 {
            return Err(RoundRefused::RoundZero);
        }
        // The trust boundary: nothing is generated or allocated for a request out of range.
        let mut refused = r.workload.validate().err().unwrap_or_default();
        refused.extend(r.load.validate().err().unwrap_or_default());
        match &r.requests {
            RoundRequests::Trace { entries, .. } => refused.extend(
                kvbench_common::limits::check_trace(entries)
                    .err()
                    .unwrap_or_default(),
            ),
            RoundRequests::Conversations(cs)
                if cs.len() > kvbench_common::limits::MAX_REQUESTS as usize =>
            {
                refused.push(kvbench_common::limits::LimitError {
                    field: "conversations".into(),
                    message: format!(
                        "{} is over the limit of {}",
                        cs.len(),
                        kvbench_common::limits::MAX_REQUESTS
                    ),
                })
            }
            _ => {}
        }
        if !refused.is_empty() {
            let msg = refused
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(scenario = %r.scenario_name, round = r.round, refused = %msg, "round refused");
            return Err(RoundRefused::OutOfRange(msg));
        }
        if let Err(over) = host_limits(&self.config.access.limits, &r) {
            tracing::warn!(scenario = %r.scenario_name, round = r.round, refused = %over, "round refused");
            return Err(RoundRefused::HostLimit(over));
        }
        if let Some(at) = r.start_at_us {
            let ahead_s = (at - crate::load::now_us()) as f64 / 1e6;
            if ahead_s > MAX_START_AHEAD_S {
                return Err(RoundRefused::StartTooFarAhead { ahead_s });
            }
        }
        let dataset = match std::mem::replace(&mut r.requests, RoundRequests::Generated) {
            RoundRequests::Generated => None,
            RoundRequests::Conversations(cs) => Some(cs),
            RoundRequests::Trace {
                entries,
                use_timestamps,
                speedup,
            } => Some(trace_conversations(&entries, use_timestamps, speedup)),
        };
        let counter = match r.tokenizer_json.take() {
            None if r.engine_tokenizer => {
                self.engine_tokens(&r.model).await?
                    as Arc<dyn kvbench_common::tokenizer::TokenCounter>
            }
            None => Arc::new(Whitespace) as Arc<dyn kvbench_common::tokenizer::TokenCounter>,
            Some(json) => self.tokenizers.get(&json)?,
        };
        Ok(RoundSpec {
            request: r,
            dataset,
            counter,
        })
    }

    /// Starts the round; its events arrive on the returned receiver, to its end (the
    /// round outlives a coordinator's connection: [`AgentCore::stop_round`] ends it early).
    /// An engine found down mid-round is reported; with `on_engine_failure: restart` the
    /// round's load stops and the engine is restarted before the round's `Finished`.
    pub(crate) fn start_round(
        self: &Arc<Self>,
        spec: RoundSpec,
    ) -> mpsc::Receiver<kvbench_common::agent::RoundEvent> {
        tracing::info!(scenario = %spec.request.scenario_name, round = spec.request.round, load = ?spec.request.load.arrivals, "round starting");
        let (tx, rx) = mpsc::channel(1024);
        self.active.0.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(self.active.clone());
        let cancel = self.shutdown.child_token();
        let why = Arc::new(std::sync::OnceLock::new());
        let key = (spec.request.scenario_id.clone(), spec.request.round);
        if let Ok(mut r) = self.running.lock() {
            r.insert(
                key.clone(),
                RoundStop {
                    cancel: cancel.clone(),
                    why: why.clone(),
                },
            );
        }
        let running = self.running.clone();
        let restart_on_failure =
            self.config.on_engine_failure == crate::config::OnEngineFailure::Restart;
        let ctx = load::RoundContext {
            probe: self.probe.clone(),
            client: self.client.clone(),
            base_url: self.base_url.clone(),
            agent_name: self.name.clone(),
            replies: self.replies.clone(),
            perfect: self.perfect.of(&spec.request.scenario_id),
            cache_details: self.config.kind == crate::config::EngineKind::Sglang,
            telemetry: self.telemetry.clone(),
            stop_reason: why,
            watch: Arc::new(load::EngineWatch::new(
                self.config.health_url.as_str().into(),
                restart_on_failure,
            )),
        };
        let core = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let (load_tx, mut load_rx) = mpsc::channel(1024);
            let forward = async {
                while let Some(e) = load_rx.recv().await {
                    if let RoundEvent::Finished(f) = &e {
                        if f.stop_reason == Some(StopReason::EngineFailed) {
                            let restarted = core.restart_after_failure().await;
                            let _ = tx.send(RoundEvent::EngineRestarted(restarted)).await;
                        }
                    }
                    if tx.send(e).await.is_err() {
                        // Nobody keeps the round's events: the load stops sending.
                        return;
                    }
                }
            };
            tokio::join!(load::run(ctx, spec, load_tx, cancel.clone()), forward);
            if let Ok(mut r) = running.lock() {
                r.remove(&key);
            }
        });
        rx
    }

    /// The restart after the engine went down mid-round (the round's load has stopped).
    async fn restart_after_failure(&self) -> RestartOutcome {
        self.restart_since(Instant::now(), "restart after the engine went down")
            .await
    }

    /// Stops a running round, saying why; false when it was not running.
    pub(crate) fn stop_round(&self, scenario_id: &str, round: u32, why: StopReason) -> bool {
        let stop = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&(scenario_id.to_owned(), round)).cloned());
        tracing::info!(
            scenario_id,
            round,
            running = stop.is_some(),
            why = why.describe(),
            "stop_round"
        );
        stop.map(|s| {
            let _ = s.why.set(why);
            s.cancel.cancel()
        })
        .is_some()
    }
}

/// Why the engine is not ready after a restart (yet).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum NotReady {
    #[error(transparent)]
    Call(#[from] EngineCallError),
    #[error("/v1/models does not list {0} yet")]
    ModelNotListed(String),
}

impl AgentCore {
    /// The handshake: this agent and, when asked, its engine as they are now; refused to a
    /// coordinator of another protocol version.
    pub(crate) async fn hello(
        &self,
        protocol_version: u32,
        engine_status: bool,
    ) -> Result<AgentInfo, ProtocolMismatch> {
        if protocol_version != PROTOCOL_VERSION {
            return Err(ProtocolMismatch {
                theirs: protocol_version,
            });
        }
        let mut info = self.info();
        // Stamped first: a clock ping's answer leaves at once.
        info.agent_time_us = crate::load::now_us();
        if engine_status {
            self.engine_status(&mut info).await;
        }
        Ok(info)
    }
}

/// What a round asks against what this host allows: every excess, in one message.
fn host_limits(l: &crate::config::HostLimits, r: &RoundRequest) -> Result<(), String> {
    use kvbench_common::load::Arrivals;
    let mut over = Vec::new();
    let requests = u64::from(r.workload.num_requests) + u64::from(r.load.warmup_requests);
    if requests > u64::from(l.max_requests) {
        over.push(format!(
            "{requests} requests (warmups included), max_requests is {}",
            l.max_requests
        ));
    }
    match r.load.arrivals {
        Arrivals::Closed { concurrency } => {
            // A count-limited closed loop never runs more workers than requests.
            let workers = if r.load.duration_s.is_some() {
                u64::from(concurrency)
            } else {
                u64::from(concurrency).min(requests)
            };
            if workers > u64::from(l.max_concurrency) {
                over.push(format!(
                    "concurrency {concurrency}, max_concurrency is {}",
                    l.max_concurrency
                ));
            }
        }
        Arrivals::Open {
            max_concurrency, ..
        } => match max_concurrency {
            Some(m) if m > l.max_concurrency => over.push(format!(
                "max_concurrency {m}, this host allows {}",
                l.max_concurrency
            )),
            None if l.max_concurrency < kvbench_common::limits::MAX_IN_FLIGHT => over.push(format!(
                "an open loop without max_concurrency (this host allows {} in flight: give max_concurrency)",
                l.max_concurrency
            )),
            _ => {}
        },
    }
    if let Some(d) = r.load.duration_s.filter(|d| *d > l.max_duration_s) {
        over.push(format!(
            "duration_s {d}, max_duration_s is {}",
            l.max_duration_s
        ));
    }
    if over.is_empty() {
        Ok(())
    } else {
        Err(over.join("; "))
    }
}
