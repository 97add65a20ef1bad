//! The coordinator's one adapter to an agent: the handshake, a round as a stream of domain
//! [`RoundEvent`]s, and the engine-control actions. Nothing else in the coordinator names a
//! generated gRPC type.
//!
//! Built for remote agents as well as embedded ones: an `AgentClient` is cheap to clone (a
//! tonic channel that reconnects by itself underneath), every call is independent, and the
//! round stream is read by one loop ([`AgentClient::run_round`]) that knows when an agent
//! has gone silent. Heartbeats and explicit reconnects grow here.

use std::time::Duration;

use kvbench_common::agent::{AgentInfo, ClearOutcome, RestartOutcome, RoundEvent, RoundRequest};
use kvbench_common::telemetry::TelemetrySample;
use kvbench_common::PROTOCOL_VERSION;
use kvbench_proto::v1::{self, agent_client::AgentClient as WireClient};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::tls::{refusal_in, Access, Connector};

/// Puts the bearer token on every call (marked sensitive: never indexed by HPACK).
#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// An agent's message (a status, an error text) as this coordinator keeps it: bounded,
/// without control characters.
fn agent_text(s: &str) -> String {
    kvbench_common::util::untrusted(s, kvbench_common::agent::MAX_TEXT_BYTES)
}

/// An agent the coordinator has not heard from for this long during a round (no event, no
/// answered acknowledgement, no resumed stream) is lost: its part of the round fails with
/// what arrived. Until then a broken stream is resumed where it broke.
pub const AGENT_SILENCE_LIMIT: Duration = kvbench_common::agent::AGENT_LOST_AFTER;

/// How long one try to resume a broken stream may take (connection and answer).
const RESUME_TRY: Duration = Duration::from_secs(2);

/// After a stop, how long the rest of a round's stream (the requests that were in flight,
/// as `cancelled` records) may take to arrive.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A call to an agent that did not give an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to agent at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("agent at {url} refused the handshake: {message}")]
    Handshake { url: String, message: String },
    /// The TLS handshake failed, and why (unknown CA, name mismatch, expired, ...).
    #[error("agent at {url}: TLS refused: {refusal}")]
    Tls {
        url: String,
        refusal: kvbench_common::tls::Refusal,
    },
    /// The agent refused this coordinator's credentials (token, TLS): its message says which.
    #[error("agent at {url} refused this coordinator: {message}")]
    Unauthenticated { url: String, message: String },
    /// The plan's TLS files or token for this agent could not be used.
    #[error("agent at {url}: {error}")]
    Access {
        url: String,
        error: super::tls::AccessError,
    },
    #[error("agent at {url} speaks protocol {theirs}, this coordinator speaks {PROTOCOL_VERSION}")]
    Protocol { url: String, theirs: u32 },
    /// The agent refused this coordinator's protocol version (its message names both).
    #[error("agent at {url} refused this coordinator's protocol {PROTOCOL_VERSION}: {message}")]
    ProtocolRefused { url: String, message: String },
    #[error("{call} on agent {agent} failed: {message}")]
    Call {
        agent: String,
        call: &'static str,
        message: String,
    },
    #[error("agent {agent} sent a message this coordinator cannot read: {message}")]
    Invalid { agent: String, message: String },
    /// Nothing listens on the agent's port (its process is gone): whatever it kept in
    /// memory went with it.
    #[error("{call} on agent {agent}: nothing listens on its port ({message})")]
    Gone {
        agent: String,
        call: &'static str,
        message: String,
    },
    /// The agent does not have what the call names (a round it forgot after its reconnect
    /// window, or never had: it restarted).
    #[error("{call} on agent {agent}: {message}")]
    NotFound {
        agent: String,
        call: &'static str,
        message: String,
    },
}

/// Whether a call failed because its connection was refused (the error's chain of
/// sources ends in the operating system's "connection refused").
fn connection_refused(s: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// A connected agent and what it said of itself.
#[derive(Debug, Clone)]
pub struct AgentClient {
    wire: WireClient<InterceptedService<Channel, Bearer>>,
    url: String,
    info: AgentInfo,
    /// Its clock against the coordinator's, once measured.
    clock: Option<Clock>,
}

/// How a round's stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundEnd {
    /// The agent sent `Finished`.
    Finished(kvbench_common::agent::RoundFinished),
    /// The user stopped the run.
    Cancelled,
    /// The agent refused the round, went silent, its stream broke or ended early, or it
    /// sent events this coordinator cannot read.
    Failed(RoundFailure),
}

/// Why a round's stream failed; what arrived before is kept whatever the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundFailure {
    #[error("agent {agent} refused the round: {message}")]
    Refused { agent: String, message: String },
    /// Nothing came from the agent for [`AGENT_SILENCE_LIMIT`] (killed, frozen, cut off),
    /// and its stream could not be resumed.
    #[error("agent {agent} lost at {since}: nothing heard from it for {secs} s ({why})")]
    Lost {
        agent: String,
        secs: u64,
        /// When it was last heard from (RFC 3339, UTC).
        since: String,
        /// The last thing that went wrong (the stream's break, the resume's refusal).
        why: String,
        /// The last event the coordinator holds: the agent keeps what came after for the
        /// round's reconnect window, for a later [`AgentClient::recover`].
        held: u64,
    },
    /// The agent stopped the round itself (it shut down, or lost this coordinator).
    #[error("agent {agent} stopped the round: {}", .reason.describe())]
    Stopped {
        agent: String,
        reason: kvbench_common::agent::StopReason,
    },
    #[error("stream from agent {agent} broke: {message}")]
    Broke { agent: String, message: String },
    #[error("agent {agent} ended the round early")]
    EndedEarly { agent: String },
    /// Events that do not convert (a record with an unknown outcome, a sample with no
    /// source): each is left out and counted, and the round fails.
    #[error("agent {agent} sent {count} event(s) this coordinator cannot read (left out; the first: {first})")]
    Malformed {
        agent: String,
        count: u32,
        first: kvbench_proto::convert::InvalidWire,
    },
    /// Another agent of the same split round failed.
    #[error("{0}")]
    Other(String),
}

/// What one round's stream carried besides its records (the observer takes each record as
/// it arrives: the coordinator never holds a round's records).
#[derive(Debug, Clone)]
pub struct RoundRun {
    pub telemetry: Vec<TelemetrySample>,
    pub end: RoundEnd,
    /// The agent's wall clock at the round's zero (µs since the Unix epoch), from `Started`.
    pub anchor_us: Option<i64>,
    /// Each time the stream broke and was resumed: after which event, and why it broke.
    pub resumed: Vec<String>,
    /// What agents said of their engines going down during the round.
    pub engine: Vec<EngineTrouble>,
}

/// An agent found its engine down during a round, and what its restart did, if it
/// restarted it (`on_engine_failure: restart`).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineTrouble {
    pub agent: String,
    pub down: kvbench_common::agent::EngineDown,
    pub restarted: Option<kvbench_common::agent::RestartOutcome>,
}

impl AgentClient {
    /// Connects and performs the versioned handshake (plaintext, no token: loopback).
    pub async fn connect(url: &str) -> Result<AgentClient, AgentError> {
        Self::connect_with(url, &Access::default(), Duration::from_secs(5)).await
    }

    /// Connects to an agent of the plan: its TLS and token as the plan gives them.
    pub async fn connect_to(
        spec: &kvbench_common::plan::AgentSpec,
    ) -> Result<AgentClient, AgentError> {
        let access = Access::of(spec).map_err(|error| AgentError::Access {
            url: spec.address.clone(),
            error,
        })?;
        Self::connect_with(&spec.address, &access, Duration::from_secs(5)).await
    }

    /// Connects within `timeout` (connection and handshake).
    pub async fn connect_with(
        url: &str,
        access: &Access,
        timeout: Duration,
    ) -> Result<AgentClient, AgentError> {
        tokio::time::timeout(timeout, Self::connect_once(url, access, timeout))
            .await
            .unwrap_or_else(|_| {
                Err(AgentError::Connect {
                    url: url.to_owned(),
                    message: format!("no answer within {} s", timeout.as_secs_f64()),
                })
            })
    }

    async fn connect_once(
        url: &str,
        access: &Access,
        timeout: Duration,
    ) -> Result<AgentClient, AgentError> {
        let connect_err = |message: String| AgentError::Connect {
            url: url.to_owned(),
            message,
        };
        // With TLS the handshake is the connector's; tonic sees a plain http:// channel.
        let wire_url = match (url.strip_prefix("https://"), &access.tls) {
            (Some(rest), Some(_)) => format!("http://{rest}"),
            (Some(_), None) => {
                return Err(connect_err(
                    "an https:// address needs TLS files (tls: in the plan)".into(),
                ))
            }
            (None, _) => url.to_owned(),
        };
        let endpoint = tonic::transport::Endpoint::from_shared(wire_url)
            .map_err(|e| connect_err(format!("bad address: {e}")))?
            .connect_timeout(timeout)
            .http2_keep_alive_interval(kvbench_common::agent::LIVENESS_PING)
            .keep_alive_timeout(kvbench_common::agent::LIVENESS_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = match &access.tls {
            Some(tls) => {
                endpoint
                    .connect_with_connector(Connector(tls.clone()))
                    .await
            }
            None => endpoint.connect().await,
        }
        .map_err(|e| match refusal_in(&e, access.server_name()) {
            Some(refusal) => AgentError::Tls {
                url: url.to_owned(),
                refusal,
            },
            None => connect_err(error_chain(&e)),
        })?;
        let bearer = match &access.token {
            Some(t) => {
                let mut v =
                    tonic::metadata::MetadataValue::try_from(format!("Bearer {}", t.expose()))
                        .map_err(|_| connect_err("the token is not a valid header value".into()))?;
                v.set_sensitive(true);
                Bearer(Some(v))
            }
            None => Bearer(None),
        };
        let mut wire =
            WireClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20);
        let first = wire
            .hello(v1::HelloRequest {
                protocol_version: PROTOCOL_VERSION,
                coordinator_version: env!("CARGO_PKG_VERSION").into(),
                engine_status: true,
            })
            .await;
        let first = match (first, &access.tls) {
            // A bare transport error over TLS (the agent's alert reached the channel as a
            // dropped connection: unavailable, unknown or cancelled, by timing): ask the
            // agent again, listening only. An agent's own answers have other codes.
            (Err(s), Some(tls))
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::Internal
                ) && refusal_in(&s, access.server_name()).is_none() =>
            {
                match super::tls::diagnose(tls, url.trim_start_matches("https://")).await {
                    Some(refusal) => {
                        return Err(AgentError::Tls {
                            url: url.to_owned(),
                            refusal,
                        })
                    }
                    None => Err(s),
                }
            }
            (r, _) => r,
        };
        let hello = first
            .map_err(|s| {
                let (url, message) = (url.to_owned(), agent_text(s.message()));
                if let Some(refusal) = refusal_in(&s, access.server_name()) {
                    return AgentError::Tls { url, refusal };
                }
                match s.code() {
                    // An agent answers its handshake with this code only for another version.
                    tonic::Code::FailedPrecondition => AgentError::ProtocolRefused { url, message },
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                        AgentError::Unauthenticated { url, message }
                    }
                    _ => AgentError::Handshake { url, message },
                }
            })?
            .into_inner();
        let info = AgentInfo::from(hello);
        if info.protocol_version != PROTOCOL_VERSION {
            return Err(AgentError::Protocol {
                url: url.to_owned(),
                theirs: info.protocol_version,
            });
        }
        Ok(AgentClient {
            wire,
            url: url.to_owned(),
            info,
            clock: None,
        })
    }

    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// The clock measured by [`AgentClient::clock`], kept with the client.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn measured_clock(&self) -> Option<Clock> {
        self.clock
    }

    /// The agent's clock offset against this host's and the round trip, from `pings`
    /// handshakes: the one with the shortest round trip, whose answer was stamped closest
    /// to its middle (NTP's rule).
    pub async fn clock(&self, pings: u32) -> Result<Clock, AgentError> {
        let mut best: Option<Clock> = None;
        for _ in 0..pings.max(1) {
            let sent = now_us();
            let start = std::time::Instant::now();
            let hello = self
                .wire
                .clone()
                .hello(v1::HelloRequest {
                    protocol_version: PROTOCOL_VERSION,
                    coordinator_version: env!("CARGO_PKG_VERSION").into(),
                    engine_status: false,
                })
                .await
                .map_err(|s| AgentError::Handshake {
                    url: self.url.clone(),
                    message: s.message().to_owned(),
                })?
                .into_inner();
            let rtt_us = start.elapsed().as_micros() as i64;
            if hello.agent_time_us == 0 {
                continue;
            }
            best = Clock::better(best, Clock::of_ping(sent, rtt_us, hello.agent_time_us));
        }
        best.ok_or_else(|| AgentError::Handshake {
            url: self.url.clone(),
            message: "the agent does not tell its clock".into(),
        })
    }

    pub fn name(&self) -> &str {
        &self.info.agent_name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn call_err(&self, call: &'static str, s: &tonic::Status) -> AgentError {
        let (agent, message) = (self.name().to_owned(), agent_text(s.message()));
        if s.code() == tonic::Code::NotFound {
            AgentError::NotFound {
                agent,
                call,
                message,
            }
        } else if connection_refused(s) {
            AgentError::Gone {
                agent,
                call,
                message,
            }
        } else {
            AgentError::Call {
                agent,
                call,
                message,
            }
        }
    }

    /// Asks the agent to clear its engine's caches (and check they are cold).
    pub async fn clear(&self, reason: &str) -> Result<ClearOutcome, AgentError> {
        let r = self
            .wire
            .clone()
            .clear_cache(v1::ClearCacheRequest {
                reason: reason.to_owned(),
            })
            .await
            .map_err(|s| self.call_err("ClearCache", &s))?;
        Ok(ClearOutcome::from(r.into_inner()))
    }

    /// Asks the agent to restart its engine and wait until it is healthy.
    pub async fn restart(&self, reason: &str) -> Result<RestartOutcome, AgentError> {
        let r = self
            .wire
            .clone()
            .restart_engine(v1::RestartEngineRequest {
                reason: reason.to_owned(),
            })
            .await
            .map_err(|s| self.call_err("RestartEngine", &s))?;
        RestartOutcome::try_from(r.into_inner()).map_err(|e| AgentError::Invalid {
            agent: self.name().to_owned(),
            message: e.to_string(),
        })
    }

    /// Asks the agent to stop a running round (its stream then ends with the requests that
    /// were in flight as `cancelled` records). False when the round was not running.
    pub async fn stop_round(&self, scenario_id: &str, round: u32) -> Result<bool, AgentError> {
        let r = self
            .wire
            .clone()
            .stop_round(v1::StopRoundRequest {
                scenario_id: scenario_id.to_owned(),
                round,
            })
            .await
            .map_err(|s| self.call_err("StopRound", &s))?;
        Ok(r.into_inner().stopped)
    }

    /// Runs one round: `observe` gets each event as it arrives, records and telemetry
    /// samples stamped with the scenario, round and agent (it may change them: a split
    /// round moves records onto the common clock), and the records are its alone; it says
    /// whether it kept the event (false: it could not write it, and nothing from there on
    /// is acknowledged, so that the agent keeps it for a resume); the
    /// samples and how the round ended are returned. When `cancel` fires, the agent is asked to stop the round
    /// and the rest of the stream is still read for up to [`STOP_GRACE`], so that requests
    /// in flight arrive as `cancelled` records. Stops reading when the agent sends nothing
    /// for [`AGENT_SILENCE_LIMIT`]; what arrived before is kept either way.
    pub async fn run_round(
        &self,
        req: &RoundRequest,
        cancel: &CancellationToken,
        mut observe: impl FnMut(&mut RoundEvent) -> bool,
    ) -> RoundRun {
        let mut run = RoundRun {
            telemetry: Vec::new(),
            end: RoundEnd::Cancelled,
            anchor_us: None,
            resumed: Vec::new(),
            engine: Vec::new(),
        };
        let mut malformed = Malformed::default();
        let agent = self.name().to_owned();
        let mut stream = match self
            .wire
            .clone()
            .run_round(v1::RunRoundRequest::from(req))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                run.end = RoundEnd::Failed(RoundFailure::Refused {
                    agent,
                    message: agent_text(s.message()),
                });
                return run;
            }
        };
        let link = Link::new(AGENT_SILENCE_LIMIT.min(req.reconnect_window));
        let acks = tokio::spawn(self.clone().acknowledge(
            req.scenario_id.clone(),
            req.round,
            link.clone(),
        ));
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let (mut unkept, mut finished_seen) = (false, false);
        run.end = 'round: loop {
            // Read the stream until it ends or breaks.
            let why = loop {
                let limit = match stop_deadline {
                    Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
                    None => link.lost_after.saturating_sub(link.silent_for()),
                };
                let next = tokio::select! {
                    m = tokio::time::timeout(limit, stream.message()) => m,
                    _ = cancel.cancelled(), if stop_deadline.is_none() => {
                        stop_deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                        if let Err(e) = self.stop_round(&req.scenario_id, req.round).await {
                            tracing::warn!(error = %e, "the agent did not take the stop; its in-flight requests are lost");
                            break 'round RoundEnd::Cancelled;
                        }
                        continue;
                    }
                };
                let wire = match next {
                    Err(_) if stop_deadline.is_some() => break 'round RoundEnd::Cancelled,
                    // Acknowledgements answered in the meantime: the agent is there.
                    Err(_) if link.silent_for() < link.lost_after => continue,
                    Err(_) => break "its stream went silent".to_owned(),
                    Ok(Err(s)) => break format!("the stream broke: {}", agent_text(s.message())),
                    Ok(Ok(None)) => break "the stream ended before the round did".to_owned(),
                    Ok(Ok(Some(m))) => m,
                };
                link.heard();
                let seq = wire.seq;
                if seq != 0 && seq <= link.held() {
                    // Sent again on a resumed stream: already here.
                    continue;
                }
                let mut event = match RoundEvent::try_from(wire) {
                    Ok(e) => e,
                    Err(e) => {
                        malformed.add(&agent, e);
                        link.hold(seq.max(link.held()));
                        continue;
                    }
                };
                if let RoundEvent::Record(r) = &mut event {
                    r.seq = (seq != 0).then_some(seq);
                }
                stamp(&mut event, &req.scenario_name, req.round, &agent);
                // Held (and acknowledged) only once the observer has it (on disk); after
                // an event it could not keep, none is: the agent keeps them for a resume.
                unkept |= !observe(&mut event);
                if seq != 0 && !unkept {
                    link.hold(seq);
                }
                finished_seen |= matches!(event, RoundEvent::Finished(_));
                match event {
                    RoundEvent::Record(_) => {}
                    RoundEvent::Telemetry(t) => run.telemetry.push(t),
                    RoundEvent::Finished(f) if f.cancelled => {
                        break 'round match f.stop_reason {
                            Some(reason)
                                if stop_deadline.is_none()
                                    && reason != kvbench_common::agent::StopReason::Requested =>
                            {
                                RoundEnd::Failed(RoundFailure::Stopped {
                                    agent: agent.clone(),
                                    reason,
                                })
                            }
                            _ => RoundEnd::Cancelled,
                        }
                    }
                    RoundEvent::Finished(f) => break 'round RoundEnd::Finished(f),
                    RoundEvent::Started(s) => run.anchor_us = Some(s.wall_clock_anchor_us),
                    RoundEvent::Progress(_) => {}
                    RoundEvent::EngineDown(down) => run.engine.push(EngineTrouble {
                        agent: agent.clone(),
                        down,
                        restarted: None,
                    }),
                    RoundEvent::EngineRestarted(r) => match run.engine.last_mut() {
                        Some(t) if t.restarted.is_none() => t.restarted = Some(r),
                        _ => run.engine.push(EngineTrouble {
                            agent: agent.clone(),
                            down: Default::default(),
                            restarted: Some(r),
                        }),
                    },
                }
            };
            if stop_deadline.is_some() {
                break RoundEnd::Cancelled;
            }
            tracing::warn!(agent = %agent, "{why}: resuming after event {}", link.held());
            let what = format!("after event {}: {why}", link.held());
            match self.resume(req, &link, cancel, why).await {
                Ok(s) => {
                    stream = s;
                    run.resumed.push(what);
                }
                Err(end) => break end,
            }
        };
        acks.abort();
        if finished_seen {
            // Everything up to its Finished is here (stopped or not): the agent may forget
            // the round now (and run it again, as a scenario does after an engine's
            // restart); an agent that is shutting down may go.
            let _ = tokio::time::timeout(
                RESUME_TRY,
                self.ack(&req.scenario_id, req.round, link.held()),
            )
            .await;
        }
        if stop_deadline.is_some() {
            // However the stream ended after the stop, the round was cancelled.
            run.end = RoundEnd::Cancelled;
        }
        run.end = malformed.end(agent, run.end);
        run
    }

    /// Tries to resume a broken round stream after the last event held, until it works,
    /// the agent is lost (silent for [`AGENT_SILENCE_LIMIT`]), it says it no longer has
    /// the round, or the user stops the run.
    async fn resume(
        &self,
        req: &RoundRequest,
        link: &Link,
        cancel: &CancellationToken,
        mut why: String,
    ) -> Result<tonic::Streaming<v1::RoundEvent>, RoundEnd> {
        let agent = self.name().to_owned();
        loop {
            let left = link.lost_after.saturating_sub(link.silent_for());
            if left.is_zero() {
                return Err(RoundEnd::Failed(RoundFailure::Lost {
                    agent,
                    secs: link.lost_after.as_secs(),
                    since: link.last_heard_at(),
                    why,
                    held: link.held(),
                }));
            }
            if cancel.is_cancelled() {
                return Err(RoundEnd::Cancelled);
            }
            let mut wire = self.wire.clone();
            let call = wire.resume_round(v1::ResumeRoundRequest {
                scenario_id: req.scenario_id.clone(),
                round: req.round,
                after_seq: link.held(),
            });
            let tried = tokio::time::Instant::now();
            match tokio::time::timeout(left.min(RESUME_TRY), call).await {
                Ok(Ok(s)) => {
                    tracing::info!(agent = %agent, "round stream resumed after event {}", link.held());
                    link.heard();
                    return Ok(s.into_inner());
                }
                Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
                    return Err(RoundEnd::Failed(RoundFailure::Broke {
                        agent,
                        message: format!("{why}; resuming it: {}", agent_text(s.message())),
                    }))
                }
                Ok(Err(s)) => why = format!("resuming: {}", agent_text(s.message())),
                Err(_) => why = "resuming: no answer".to_owned(),
            }
            // At most one try every 500 ms.
            tokio::time::sleep_until(tried + Duration::from_millis(500)).await;
        }
    }

    /// Acknowledges what `link` holds every [`ACK_INTERVAL`](kvbench_common::agent::ACK_INTERVAL)
    /// (the agent's proof that this coordinator is there); an answer is proof the agent is.
    async fn acknowledge(self, scenario_id: String, round: u32, link: Link) {
        let mut tick = tokio::time::interval(kvbench_common::agent::ACK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ack = self.ack(&scenario_id, round, link.held());
            if let Ok(Ok(_)) = tokio::time::timeout(RESUME_TRY, ack).await {
                link.heard();
            }
        }
    }

    /// The records of a round an earlier coordinator left (it was killed) after `after`:
    /// the round is stopped first if it still runs (its requests in flight end as
    /// `cancelled` records), then its stream is read to its end. Err when the agent keeps
    /// no such round.
    pub async fn recover(
        &self,
        scenario_id: &str,
        scenario: &str,
        round: u32,
        after: u64,
    ) -> Result<Vec<kvbench_common::record::RequestRecord>, AgentError> {
        let _ = self.stop_round(scenario_id, round).await;
        let read = async {
            let mut stream = self
                .wire
                .clone()
                .resume_round(v1::ResumeRoundRequest {
                    scenario_id: scenario_id.to_owned(),
                    round,
                    after_seq: after,
                })
                .await
                .map_err(|s| self.call_err("ResumeRound", &s))?
                .into_inner();
            let mut records = Vec::new();
            let mut last = after;
            while let Some(wire) = stream
                .message()
                .await
                .map_err(|s| self.call_err("ResumeRound", &s))?
            {
                let seq = wire.seq;
                if seq != 0 && seq <= last {
                    continue;
                }
                last = last.max(seq);
                match RoundEvent::try_from(wire) {
                    Ok(RoundEvent::Record(mut r)) => {
                        r.scenario = scenario.to_owned();
                        r.round = round;
                        r.agent = self.name().to_owned();
                        r.seq = (seq != 0).then_some(seq);
                        records.push(r);
                    }
                    Ok(RoundEvent::Finished(_)) => break,
                    _ => {}
                }
            }
            let _ = self.ack(scenario_id, round, last).await;
            Ok(records)
        };
        tokio::time::timeout(STOP_GRACE + RESUME_TRY, read)
            .await
            .unwrap_or_else(|_| {
                Err(AgentError::Call {
                    agent: self.name().to_owned(),
                    call: "ResumeRound",
                    message: "the round's stream did not end in time".into(),
                })
            })
    }

    /// Tells the agent this coordinator holds the round's events up to `seq`; whether it
    /// still keeps the round.
    async fn ack(&self, scenario_id: &str, round: u32, seq: u64) -> Result<bool, AgentError> {
        let r = self
            .wire
            .clone()
            .ack_round(v1::AckRoundRequest {
                scenario_id: scenario_id.to_owned(),
                round,
                seq,
            })
            .await
            .map_err(|s| self.call_err("AckRound", &s))?;
        Ok(r.into_inner().known)
    }
}

/// What the coordinator knows of a round's link to its agent: the last event it holds and
/// when it last heard from the agent; shared with the task that acknowledges.
#[derive(Debug, Clone)]
struct Link {
    state: std::sync::Arc<std::sync::Mutex<LinkState>>,
    /// Silent this long, the agent is lost: [`AGENT_SILENCE_LIMIT`], or the round's
    /// reconnect window when shorter.
    lost_after: Duration,
}

#[derive(Debug)]
struct LinkState {
    held: u64,
    heard: std::time::Instant,
    heard_wall: std::time::SystemTime,
}

impl Link {
    fn new(lost_after: Duration) -> Link {
        Link {
            state: std::sync::Arc::new(std::sync::Mutex::new(LinkState {
                held: 0,
                heard: std::time::Instant::now(),
                heard_wall: std::time::SystemTime::now(),
            })),
            lost_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn heard(&self) {
        let mut s = self.lock();
        s.heard = std::time::Instant::now();
        s.heard_wall = std::time::SystemTime::now();
    }

    fn silent_for(&self) -> Duration {
        self.lock().heard.elapsed()
    }

    fn last_heard_at(&self) -> String {
        kvbench_common::util::rfc3339_utc(self.lock().heard_wall)
    }

    fn held(&self) -> u64 {
        self.lock().held
    }

    fn hold(&self, seq: u64) {
        self.lock().held = seq;
    }
}

/// The events of a round's stream that do not convert: counted, the first kept.
#[derive(Debug, Default)]
struct Malformed(Option<(u32, kvbench_proto::convert::InvalidWire)>);

impl Malformed {
    fn add(&mut self, agent: &str, e: kvbench_proto::convert::InvalidWire) {
        tracing::warn!(agent = %agent, error = %e, "an event the agent sent cannot be read: left out, the round fails");
        match &mut self.0 {
            Some((n, _)) => *n += 1,
            None => self.0 = Some((1, e)),
        }
    }

    /// How the round ended, given what it would have been: a round that finished with
    /// events left out failed.
    fn end(self, agent: String, end: RoundEnd) -> RoundEnd {
        match (self.0, end) {
            (Some((count, first)), RoundEnd::Finished(_)) => {
                RoundEnd::Failed(RoundFailure::Malformed {
                    agent,
                    count,
                    first,
                })
            }
            (_, end) => end,
        }
    }
}

/// Sets what the wire carries once per stream on each record and sample.
fn stamp(event: &mut RoundEvent, scenario: &str, round: u32, agent: &str) {
    match event {
        RoundEvent::Record(r) => {
            r.scenario = scenario.to_owned();
            r.round = round;
            r.agent = agent.to_owned();
        }
        RoundEvent::Telemetry(t) => {
            t.round = round;
            t.agent = agent.to_owned();
        }
        _ => {}
    }
}

/// An agent's clock against the coordinator's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Clock {
    /// Agent clock minus coordinator clock, milliseconds.
    pub offset_ms: f64,
    /// Round trip of the best handshake, milliseconds.
    pub rtt_ms: f64,
}

impl Clock {
    /// NTP's estimate from one handshake sent at `sent_us` on this host's wall clock,
    /// answered `rtt_us` later, and stamped `agent_us` by the agent: the agent stamped it
    /// half a round trip after it was sent (exact when both ways take as long; off by half
    /// the difference otherwise).
    pub fn of_ping(sent_us: i64, rtt_us: i64, agent_us: i64) -> Clock {
        Clock {
            offset_ms: (agent_us - (sent_us + rtt_us / 2)) as f64 / 1000.0,
            rtt_ms: rtt_us as f64 / 1000.0,
        }
    }

    /// The better of two estimates: the one with the shorter round trip (the least room for
    /// asymmetry); the first of equals.
    pub fn better(best: Option<Clock>, c: Clock) -> Option<Clock> {
        Some(match best {
            Some(b) if b.rtt_ms <= c.rtt_ms => b,
            _ => c,
        })
    }
}

pub(crate) use kvbench_common::util::now_us;

/// An error and its causes, one after the other (a transport error says little alone).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// With the same delay both ways the offset is exact, whatever it is; with
        /// different delays it is off by at most half their difference.
        #[test]
        fn the_offset_is_exact_for_symmetric_delays_and_bounded_otherwise(
            offset_us in -10_000_000i64..10_000_000,
            out_us in 0i64..200_000,
            back_us in 0i64..200_000,
            sent_us in 1_700_000_000_000_000i64..1_800_000_000_000_000,
        ) {
            // The agent stamps its answer `out_us` after the request left, on its clock.
            let agent_us = sent_us + out_us + offset_us;
            let c = Clock::of_ping(sent_us, out_us + back_us, agent_us);
            let err_ms = (c.offset_ms - offset_us as f64 / 1000.0).abs();
            proptest::prop_assert!(err_ms <= (out_us - back_us).abs() as f64 / 2000.0 + 0.001);
            proptest::prop_assert_eq!(c.rtt_ms, (out_us + back_us) as f64 / 1000.0);
            let sym = Clock::of_ping(sent_us, 2 * out_us, sent_us + out_us + offset_us);
            proptest::prop_assert!((sym.offset_ms - offset_us as f64 / 1000.0).abs() < 1e-9);
        }
    }

    #[test]
    fn the_shortest_round_trip_is_kept() {
        let pings = [
            Clock::of_ping(0, 9_000, 5_000),
            Clock::of_ping(0, 1_000, 700),
            Clock::of_ping(0, 1_000, 900),
            Clock::of_ping(0, 4_000, 1_000),
        ];
        let best = pings.into_iter().fold(None, Clock::better).expect("a ping");
        assert_eq!(best, pings[1]);
        assert_eq!((best.offset_ms, best.rtt_ms), (0.2, 1.0));
    }
}
