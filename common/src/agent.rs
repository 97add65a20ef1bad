//! What crosses the agent boundary, in domain types: the round a coordinator asks for, the
//! events an agent streams back while it runs it, the handshake, and the outcomes of the
//! engine-control actions. `kvbench_proto::convert` maps each of these to its wire form and
//! back; nothing on either side of the boundary names a generated type but the two adapters
//! (the agent's gRPC service and the coordinator's agent client).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataset::TraceEntry;
use crate::load::LoadSpec;
use crate::plan::ApiFlavor;
use crate::record::RequestRecord;
use crate::results::AgentHealth;
use crate::telemetry::TelemetrySample;
use crate::workload::{Conversation, WorkloadSpec};

/// One round of one scenario, as the coordinator asks an agent to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRequest {
    /// Unique per scenario run: later rounds find round 1's replies under it.
    pub scenario_id: String,
    pub scenario_name: String,
    /// From 1.
    pub round: u32,
    pub workload: WorkloadSpec,
    pub load: LoadSpec,
    pub model: String,
    pub api: ApiFlavor,
    pub enforce_output_length: bool,
    pub requests: RoundRequests,
    /// A `tokenizer.json` whose tokens lengths are counted in (none: whitespace words).
    pub tokenizer_json: Option<Vec<u8>>,
    /// `tokenizer: engine`: lengths in the engine's own tokens (its `/tokenize`).
    pub engine_tokenizer: bool,
    /// This agent's part of a scenario split across several (none: the whole set).
    pub share: Option<Share>,
    /// When the measured phase starts, on the agent's wall clock (microseconds since the
    /// Unix epoch; none: at once). A split scenario's agents all start at one instant.
    pub start_at_us: Option<i64>,
    /// How long the agent keeps the round's unacknowledged events after it last heard
    /// from its coordinator, for a resumed stream.
    pub reconnect_window: std::time::Duration,
}

/// One agent's part of a scenario split across `count` agents: the conversations whose
/// index in the request set leaves `index` when divided by `count` (a conversation's turns
/// stay together). The same every round, so that round 2 replays on each engine exactly
/// the prompts it saw in round 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub index: u32,
    pub count: u32,
}

impl Share {
    /// Whether the conversation at `position` in the request set is this agent's.
    pub fn owns(&self, position: u32) -> bool {
        self.count <= 1 || position % self.count == self.index
    }
}

/// Where a round's requests come from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RoundRequests {
    /// Generated on the agent from the workload spec.
    #[default]
    Generated,
    /// A dataset's conversations (ShareGPT, custom JSONL).
    Conversations(Vec<Conversation>),
    /// A Mooncake trace, released at its timestamps (divided by `speedup`) when
    /// `use_timestamps` is set.
    Trace {
        entries: Vec<TraceEntry>,
        use_timestamps: bool,
        speedup: f64,
    },
}

/// What an agent streams while it runs a round, in order: `Started`, then records,
/// progress and telemetry interleaved, then `Finished` (absent when the round was cut
/// short: the coordinator left, or the agent shut down).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoundEvent {
    Started(RoundStarted),
    /// One request, as it ended. The agent fills `scenario`, `round` and `agent`; on the
    /// wire they travel once per stream, and the coordinator's client sets them again.
    Record(RequestRecord),
    Progress(Progress),
    /// One telemetry sample; `round` and `agent` as for records.
    Telemetry(TelemetrySample),
    /// The agent found its engine down (see [`EngineDown`]).
    EngineDown(EngineDown),
    /// What the agent's restart after [`RoundEvent::EngineDown`] did, before `Finished`.
    EngineRestarted(RestartOutcome),
    Finished(RoundFinished),
}

/// The agent found its engine down mid-round: requests failed as an engine's death makes
/// them fail (refused, reset, cut off, timed out) and its health check failed after them.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct EngineDown {
    /// Milliseconds since the round's zero.
    pub at_ms: f64,
    /// What showed it: the failed requests' classes and the health check's answer.
    pub detail: String,
    /// The agent stops the round's load and restarts the engine (`on_engine_failure:
    /// restart` in its config); else the round goes on and its requests fail as they do.
    pub restarting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RoundStarted {
    /// Requests the round will send (0: limited by duration, no total known).
    pub total_requests: u32,
    /// Wall-clock microseconds since the Unix epoch at the round's zero.
    pub wall_clock_anchor_us: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Progress {
    pub completed: u32,
    pub failed: u32,
    pub in_flight: u32,
    /// 0 when the round is limited by duration.
    pub total: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RoundFinished {
    /// The measured phase, from its start to the last response.
    pub duration_ms: f64,
    /// Measured requests sent.
    pub sent: u32,
    pub health: Option<AgentHealth>,
    /// The round was stopped before it sent all its requests.
    pub cancelled: bool,
    /// How long after the asked `start_at_us` the measured phase began (0: on time, or no
    /// start time was asked).
    pub start_late_ms: f64,
    /// Why a cancelled round stopped (none: it was not, or the agent did not say).
    pub stop_reason: Option<StopReason>,
}

/// Why an agent stopped a round before it sent all its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The coordinator asked (StopRound).
    Requested,
    /// The agent is shutting down (SIGTERM).
    Shutdown,
    /// The agent heard nothing from its coordinator for [`COORDINATOR_SILENCE_LIMIT`].
    CoordinatorSilent,
    /// The engine went down mid-round and the agent restarted it (`on_engine_failure:
    /// restart`): what the round measured no longer describes one engine.
    EngineFailed,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Requested => "stopped by the coordinator",
            StopReason::Shutdown => "the agent shut down (SIGTERM)",
            StopReason::CoordinatorSilent => {
                "the agent heard nothing from its coordinator for 9 s and stopped its load"
            }
            StopReason::EngineFailed => {
                "the engine went down mid-round; the agent stopped the load and restarted it"
            }
        }
    }
}

/// One GPU of the agent's host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
}

/// What an agent says of itself in the handshake.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct AgentInfo {
    pub protocol_version: u32,
    pub agent_version: String,
    pub hostname: String,
    pub agent_name: String,
    pub labels: BTreeMap<String, String>,
    pub gpus: Vec<GpuInfo>,
    /// The engine this agent measures, as it shows it (its base URL).
    pub engine_display: String,
    /// Why there are no GPUs in `gpus` (no NVML, sampling off), when that is the case.
    pub gpu_note: Option<String>,
    /// What the agent found about its engine that a plan should know (llama.cpp's host
    /// prompt cache being on, ...).
    pub warnings: Vec<String>,
    /// The agent's wall clock when it answered the handshake (microseconds since the Unix
    /// epoch; 0: unknown).
    pub agent_time_us: i64,
    /// The kind of engine in the agent's config (`vllm`, `sglang`, `llamacpp`, `sim`,
    /// `generic`).
    pub engine_kind: String,
    /// The models the engine lists on `/v1/models` (asked with the engine's status).
    pub engine_models: Vec<String>,
    /// Whether the engine's health URL answered with success (none: not asked).
    pub engine_healthy: Option<bool>,
    /// Why the engine is not healthy, or its models could not be read.
    pub engine_health_detail: String,
    /// The version the engine reports (asked with its status); empty when it reports none.
    pub engine_version: String,
}

impl AgentInfo {
    /// The GPUs in a few words: their names, or why there are none.
    pub fn gpu_summary(&self) -> String {
        if self.gpus.is_empty() {
            return self
                .gpu_note
                .clone()
                .unwrap_or_else(|| "no GPUs".to_owned());
        }
        self.gpus
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The cold check after a clear: the latest round's first prompt sent again, and what the
/// engine reused of it (from its usage, and from its prefix-cache counters).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ColdProbe {
    pub prompt_tokens: u32,
    pub cached_tokens: Option<u32>,
    pub counter_hits: Option<f64>,
    pub counter_queries: Option<f64>,
    /// Empty when the probe and the clear after it worked.
    pub error: String,
}

/// Liveness between a coordinator and an agent, on its own path: each side sends an
/// HTTP/2 PING this often on their connection (control frames, handled by the connection
/// itself, never queued behind a round's records)...
pub const LIVENESS_PING: std::time::Duration = std::time::Duration::from_secs(3);
/// ...and closes the connection when one goes unanswered this long. A frozen, killed or
/// cut-off peer's connection is thus closed within [`LIVENESS_PING`] + [`LIVENESS_TIMEOUT`]
/// (8 s); a round outlives its connection (see [`AGENT_LOST_AFTER`]).
pub const LIVENESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A coordinator that has heard nothing from an agent during a round for this long (no
/// event, no answered acknowledgement, no resumed stream) fails that agent's part of the
/// round with what arrived; until then it tries to resume the stream. An agent sends
/// progress every 250 ms: a killed, frozen or cut-off agent is thus found lost within 10 s.
pub const AGENT_LOST_AFTER: std::time::Duration = std::time::Duration::from_secs(9);
/// An agent that has heard nothing from its coordinator during a round for this long (no
/// acknowledgement, no resumed stream) stops the round's load and keeps what it measured
/// for a resume ([`StopReason::CoordinatorSilent`]). Its coordinator acknowledges every
/// second: the load stops within 10 s of its coordinator's last word.
pub const COORDINATOR_SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(9);
/// How often a coordinator acknowledges what it holds of a running round (its heartbeat
/// to the agent, on a call of its own, never behind records).
pub const ACK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long an agent keeps a round's unacknowledged events after it last heard from its
/// coordinator, unless the plan says otherwise (`reconnect_window_s`).
pub const DEFAULT_RECONNECT_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// What a coordinator keeps of the texts an agent sends (another process: untrusted).
/// Names, versions, labels, model names and finish reasons: at most this many bytes each.
pub const MAX_NAME_BYTES: usize = 256;
/// Error texts, details, notes and warnings: at most this many bytes each.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Labels, models, warnings, GPUs, notes and telemetry values of one message: at most
/// this many (the rest are dropped, and the last kept says so).
pub const MAX_ITEMS: usize = 256;

/// More than this share of a prompt's tokens served from cache after a clear means the
/// cache kept what it said it dropped (room for an engine's rounding).
pub const STALE_SHARE_LIMIT: f64 = 0.02;

impl ColdProbe {
    /// True when the engine reused more of the probe than a cold cache could.
    pub fn is_stale(&self) -> bool {
        self.cached_tokens
            .is_some_and(|c| is_stale(f64::from(c), f64::from(self.prompt_tokens)))
    }
}

/// The one stale-cache rule: `cached` of `total` tokens (or prefix-cache hits of queried
/// tokens) is more than a cold cache allows.
pub fn is_stale(cached: f64, total: f64) -> bool {
    cached > STALE_SHARE_LIMIT * total.max(1.0)
}

/// What the agent's ClearCache did.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ClearOutcome {
    pub success: bool,
    /// What was cleared, or why not.
    pub detail: String,
    /// The clear and the cold check together.
    pub took_ms: f64,
    /// None when the clear failed or no round ran before it.
    pub probe: Option<ColdProbe>,
}

/// Why a restart failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartError {
    /// The agent's config names no restart command.
    NotConfigured,
    /// The command could not run, or exited non-zero (or rounds were still running).
    CommandFailed,
    /// The engine was not healthy within the configured time.
    RestartTimeout,
    /// The command ran and the engine is healthy, but nothing shows it restarted: its
    /// health never failed, the same process listens on its port, its counters went on.
    RestartUnverified,
}

impl RestartError {
    pub const ALL: [RestartError; 4] = [
        RestartError::NotConfigured,
        RestartError::CommandFailed,
        RestartError::RestartTimeout,
        RestartError::RestartUnverified,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RestartError::NotConfigured => "not_configured",
            RestartError::CommandFailed => "command_failed",
            RestartError::RestartTimeout => "restart_timeout",
            RestartError::RestartUnverified => "restart_unverified",
        }
    }

    pub fn from_label(s: &str) -> Option<RestartError> {
        Self::ALL.into_iter().find(|e| e.label() == s)
    }

    /// The engine may be down after it: nothing should be sent to it.
    pub fn engine_may_be_down(self) -> bool {
        matches!(
            self,
            RestartError::CommandFailed | RestartError::RestartTimeout
        )
    }
}

impl std::fmt::Display for RestartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What the agent's RestartEngine did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartOutcome {
    /// None: the engine restarted and is healthy.
    pub error: Option<RestartError>,
    pub detail: String,
    pub took_ms: f64,
}

impl RestartOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_error_labels_round_trip() {
        for e in RestartError::ALL {
            assert_eq!(RestartError::from_label(e.label()), Some(e));
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.label())
            );
        }
        assert_eq!(RestartError::from_label("nope"), None);
    }

    #[test]
    fn stale_rule() {
        assert!(!is_stale(2.0, 100.0));
        assert!(is_stale(3.0, 100.0));
        assert!(!is_stale(0.0, 0.0));
        let p = ColdProbe {
            prompt_tokens: 1000,
            cached_tokens: Some(960),
            ..ColdProbe::default()
        };
        assert!(p.is_stale());
    }
}
