//! The one place where wire types become domain types and back: `From` for domain -> wire,
//! `TryFrom` (or `From` where every wire value has a meaning) for wire -> domain. The
//! domain types are in `kvbench_common::agent` and the modules it names.
//!
//! Everything from an agent is untrusted: texts are bounded and stripped of control
//! characters ([`kvbench_common::agent::MAX_NAME_BYTES`] and its neighbours), lists are
//! bounded, and a record whose times are not finite is invalid (the coordinator counts and
//! names it).
//!
//! Records and telemetry samples carry their scenario, round and agent once per stream, not
//! per message: from the wire they come with those fields empty, and the coordinator's agent
//! client fills them in.

use std::collections::BTreeMap;

use kvbench_common::agent::{
    AgentInfo, ClearOutcome, ColdProbe, EngineDown, GpuInfo, Progress, RestartError,
    RestartOutcome, RoundEvent, RoundFinished, RoundRequest, RoundRequests, RoundStarted, Share,
    StopReason, MAX_ITEMS, MAX_NAME_BYTES, MAX_TEXT_BYTES,
};
use kvbench_common::dataset::TraceEntry;
use kvbench_common::limits::MAX_SHARES;
use kvbench_common::load::{Arrivals, LoadSpec, RampStrategy, Rate};
use kvbench_common::plan::ApiFlavor;
use kvbench_common::record::{CachedTokensDetails, Outcome, RequestRecord};
use kvbench_common::results::AgentHealth;
use kvbench_common::telemetry::{TelemetrySample, TelemetrySource};
use kvbench_common::util::untrusted;
use kvbench_common::workload::Conversation;
use kvbench_common::workload::{
    DocumentOrder, OutputDist, WorkloadKind, WorkloadParams, WorkloadSpec,
};

use crate::v1;

/// A wire message that has no domain meaning: a missing field, an unspecified or unknown
/// enum value, a value out of its domain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidWire {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidWire {
    fn value(field: &'static str, value: i32) -> InvalidWire {
        InvalidWire {
            field,
            reason: format!("unknown value {value}"),
        }
    }

    fn missing(field: &'static str) -> InvalidWire {
        InvalidWire {
            field,
            reason: "missing".into(),
        }
    }
}

fn workload_kind_to_wire(k: WorkloadKind) -> v1::WorkloadKind {
    match k {
        WorkloadKind::LongContextHighReuse => v1::WorkloadKind::LongContextHighReuse,
        WorkloadKind::MultiTurnConversation => v1::WorkloadKind::MultiTurnConversation,
        WorkloadKind::CodeGeneration => v1::WorkloadKind::CodeGeneration,
        WorkloadKind::BatchProcessing => v1::WorkloadKind::BatchProcessing,
        WorkloadKind::ColdStart => v1::WorkloadKind::ColdStart,
    }
}

fn workload_kind_from_wire(v: i32) -> Result<WorkloadKind, InvalidWire> {
    let bad = InvalidWire::value("workload kind", v);
    Ok(
        match v1::WorkloadKind::try_from(v).map_err(|_| bad.clone())? {
            v1::WorkloadKind::LongContextHighReuse => WorkloadKind::LongContextHighReuse,
            v1::WorkloadKind::MultiTurnConversation => WorkloadKind::MultiTurnConversation,
            v1::WorkloadKind::CodeGeneration => WorkloadKind::CodeGeneration,
            v1::WorkloadKind::BatchProcessing => WorkloadKind::BatchProcessing,
            v1::WorkloadKind::ColdStart => WorkloadKind::ColdStart,
            v1::WorkloadKind::Unspecified => return Err(bad),
        },
    )
}

fn api_to_wire(a: ApiFlavor) -> v1::ApiFlavor {
    match a {
        ApiFlavor::Chat => v1::ApiFlavor::Chat,
        ApiFlavor::Completions => v1::ApiFlavor::Completions,
    }
}

fn api_from_wire(v: i32) -> Result<ApiFlavor, InvalidWire> {
    match v1::ApiFlavor::try_from(v) {
        Ok(v1::ApiFlavor::Chat) => Ok(ApiFlavor::Chat),
        Ok(v1::ApiFlavor::Completions) => Ok(ApiFlavor::Completions),
        _ => Err(InvalidWire::value("api flavour", v)),
    }
}

fn output_to_wire(d: OutputDist) -> Option<v1::OutputDist> {
    use v1::output_dist::Dist;
    let dist = match d {
        OutputDist::Fixed => return None,
        OutputDist::Uniform { min, max } => Dist::Uniform(v1::UniformDist { min, max }),
        OutputDist::Normal { mean, std } => Dist::Normal(v1::NormalDist { mean, std }),
        OutputDist::Lognormal { mean, sigma } => Dist::Lognormal(v1::LognormalDist { mean, sigma }),
    };
    Some(v1::OutputDist { dist: Some(dist) })
}

fn output_from_wire(d: Option<&v1::OutputDist>) -> OutputDist {
    use v1::output_dist::Dist;
    match d.and_then(|d| d.dist.as_ref()) {
        None => OutputDist::Fixed,
        Some(Dist::Uniform(u)) => OutputDist::Uniform {
            min: u.min,
            max: u.max,
        },
        Some(Dist::Normal(n)) => OutputDist::Normal {
            mean: n.mean,
            std: n.std,
        },
        Some(Dist::Lognormal(l)) => OutputDist::Lognormal {
            mean: l.mean,
            sigma: l.sigma,
        },
    }
}

fn order_to_wire(o: DocumentOrder) -> i32 {
    (match o {
        DocumentOrder::Grouped => v1::DocumentOrder::Grouped,
        DocumentOrder::Interleaved => v1::DocumentOrder::Interleaved,
        DocumentOrder::Random => v1::DocumentOrder::Random,
    }) as i32
}

fn order_from_wire(v: i32) -> Result<DocumentOrder, InvalidWire> {
    match v1::DocumentOrder::try_from(v) {
        Ok(v1::DocumentOrder::Grouped) => Ok(DocumentOrder::Grouped),
        Ok(v1::DocumentOrder::Interleaved) => Ok(DocumentOrder::Interleaved),
        Ok(v1::DocumentOrder::Random) => Ok(DocumentOrder::Random),
        _ => Err(InvalidWire::value("document order", v)),
    }
}

fn workload_to_wire(w: &WorkloadSpec) -> v1::WorkloadSpec {
    let p = &w.params;
    v1::WorkloadSpec {
        kind: workload_kind_to_wire(w.kind) as i32,
        seed: w.seed,
        num_requests: w.num_requests,
        output_tokens: w.output_tokens,
        output_dist: output_to_wire(w.output),
        params: Some(v1::WorkloadParams {
            documents: p.documents,
            document_tokens: p.document_tokens,
            question_tokens: p.question_tokens,
            conversations: p.conversations,
            turns: p.turns,
            system_tokens: p.system_tokens,
            user_tokens: p.user_tokens,
            context_tokens: p.context_tokens,
            instruction_tokens: p.instruction_tokens,
            prompt_tokens: p.prompt_tokens,
            order: p.order.map(order_to_wire),
            think_time_ms: p.think_time_ms,
        }),
    }
}

fn workload_from_wire(w: &v1::WorkloadSpec) -> Result<WorkloadSpec, InvalidWire> {
    let p = w.params.unwrap_or_default();
    Ok(WorkloadSpec {
        kind: workload_kind_from_wire(w.kind)?,
        seed: w.seed,
        num_requests: w.num_requests,
        output_tokens: w.output_tokens,
        output: output_from_wire(w.output_dist.as_ref()),
        params: WorkloadParams {
            documents: p.documents,
            document_tokens: p.document_tokens,
            question_tokens: p.question_tokens,
            conversations: p.conversations,
            turns: p.turns,
            system_tokens: p.system_tokens,
            user_tokens: p.user_tokens,
            context_tokens: p.context_tokens,
            instruction_tokens: p.instruction_tokens,
            prompt_tokens: p.prompt_tokens,
            order: p.order.map(order_from_wire).transpose()?,
            think_time_ms: p.think_time_ms,
        },
    })
}

fn outcome_to_wire(o: Outcome) -> v1::Outcome {
    match o {
        Outcome::Ok => v1::Outcome::Ok,
        Outcome::ConnectError => v1::Outcome::ConnectError,
        Outcome::Http4xx => v1::Outcome::Http4xx,
        Outcome::Http429 => v1::Outcome::Http429,
        Outcome::Http5xx => v1::Outcome::Http5xx,
        Outcome::TtftTimeout => v1::Outcome::TtftTimeout,
        Outcome::IdleTimeout => v1::Outcome::IdleTimeout,
        Outcome::StreamTruncated => v1::Outcome::StreamTruncated,
        Outcome::MalformedSse => v1::Outcome::MalformedSse,
        Outcome::MalformedJson => v1::Outcome::MalformedJson,
        Outcome::Reset => v1::Outcome::Reset,
        Outcome::Cancelled => v1::Outcome::Cancelled,
    }
}

fn outcome_from_wire(v: i32) -> Result<Outcome, InvalidWire> {
    let bad = InvalidWire::value("outcome", v);
    Ok(match v1::Outcome::try_from(v).map_err(|_| bad.clone())? {
        v1::Outcome::Ok => Outcome::Ok,
        v1::Outcome::ConnectError => Outcome::ConnectError,
        v1::Outcome::Http4xx => Outcome::Http4xx,
        v1::Outcome::Http429 => Outcome::Http429,
        v1::Outcome::Http5xx => Outcome::Http5xx,
        v1::Outcome::TtftTimeout => Outcome::TtftTimeout,
        v1::Outcome::IdleTimeout => Outcome::IdleTimeout,
        v1::Outcome::StreamTruncated => Outcome::StreamTruncated,
        v1::Outcome::MalformedSse => Outcome::MalformedSse,
        v1::Outcome::MalformedJson => Outcome::MalformedJson,
        v1::Outcome::Reset => Outcome::Reset,
        v1::Outcome::Cancelled => Outcome::Cancelled,
        v1::Outcome::Unspecified => return Err(bad),
    })
}

/// The wire form of a record. Scenario, round and agent travel once per stream, not per record.
fn record_to_wire(r: &RequestRecord) -> v1::RequestRecord {
    v1::RequestRecord {
        request_id: r.request_id,
        conversation_id: r.conversation_id,
        turn: r.turn,
        warmup: r.warmup,
        scheduled_ms: r.scheduled_ms,
        queue_ms: r.queue_ms,
        sent_ms: r.sent_ms,
        first_byte_ms: r.first_byte_ms,
        first_token_ms: r.first_token_ms,
        chunk_offsets_ms: r.chunk_offsets_ms.clone(),
        end_ms: r.end_ms,
        prompt_tokens_client: r.prompt_tokens_client,
        prompt_tokens: r.prompt_tokens,
        output_tokens: r.output_tokens,
        output_chunks: r.output_chunks,
        cached_tokens: r.cached_tokens,
        finish_reason: r.finish_reason.clone(),
        engine_ttft_ms: r.engine_ttft_ms,
        first_touch: r.first_touch,
        shared_prefix_tokens: r.shared_prefix_tokens,
        cold_prefix_tokens: r.cold_prefix_tokens,
        prefix_group: r.prefix_group,
        perfect_prefix_tokens: r.perfect_prefix_tokens,
        cached_tokens_details: r.cached_tokens_details.map(|d| v1::CachedTokensDetails {
            device: d.device,
            host: d.host,
            storage: d.storage,
        }),
        retried: r.retried,
        outcome: outcome_to_wire(r.outcome) as i32,
        error: r.error.clone(),
        http_status: r.http_status.map(u32::from),
    }
}

/// A record from the wire; scenario, round and agent empty (see the module's doc).
/// An agent's name, version, label: bounded, without control characters.
fn name(s: String) -> String {
    if s.len() <= MAX_NAME_BYTES && !s.chars().any(char::is_control) {
        s
    } else {
        untrusted(&s, MAX_NAME_BYTES)
    }
}

/// An agent's error text, detail, note.
fn text(s: String) -> String {
    if s.len() <= MAX_TEXT_BYTES && !s.chars().any(char::is_control) {
        s
    } else {
        untrusted(&s, MAX_TEXT_BYTES)
    }
}

/// At most [`MAX_ITEMS`] of a list, each bounded by `f`.
fn items(v: Vec<String>, f: fn(String) -> String) -> Vec<String> {
    v.into_iter().take(MAX_ITEMS).map(f).collect()
}

/// A time or duration an agent sent: a finite number within a week (in ms), or the record
/// is invalid.
fn time_ms(field: &'static str, v: f64) -> Result<f64, InvalidWire> {
    if v.is_finite() && v.abs() <= MAX_MS {
        Ok(v)
    } else {
        Err(InvalidWire {
            field,
            reason: format!("{v} is not a time in ms (finite, within {MAX_MS})"),
        })
    }
}

const MAX_MS: f64 = kvbench_common::limits::MAX_SECONDS * 1000.0;

fn record_from_wire(r: v1::RequestRecord) -> Result<RequestRecord, InvalidWire> {
    for (field, v) in [
        ("record scheduled_ms", r.scheduled_ms),
        ("record queue_ms", r.queue_ms),
        ("record sent_ms", r.sent_ms),
        ("record end_ms", r.end_ms),
    ] {
        time_ms(field, v)?;
    }
    for (field, v) in [
        ("record first_byte_ms", r.first_byte_ms),
        ("record first_token_ms", r.first_token_ms),
        ("record engine_ttft_ms", r.engine_ttft_ms),
    ] {
        if let Some(v) = v {
            time_ms(field, v)?;
        }
    }
    if r.chunk_offsets_ms.len() > kvbench_common::workload::MAX_OUTPUT_TOKENS as usize + 1 {
        return Err(InvalidWire {
            field: "record chunk_offsets_ms",
            reason: format!(
                "{} chunks, more than any request can have",
                r.chunk_offsets_ms.len()
            ),
        });
    }
    if let Some(v) = r
        .chunk_offsets_ms
        .iter()
        .find(|v| time_ms("", **v).is_err())
    {
        return Err(InvalidWire {
            field: "record chunk_offsets_ms",
            reason: format!("{v} is not a time in ms"),
        });
    }
    Ok(RequestRecord {
        seq: None,
        scenario: String::new(),
        round: 0,
        agent: String::new(),
        request_id: r.request_id,
        conversation_id: r.conversation_id,
        turn: r.turn,
        warmup: r.warmup,
        scheduled_ms: r.scheduled_ms,
        queue_ms: r.queue_ms,
        sent_ms: r.sent_ms,
        first_byte_ms: r.first_byte_ms,
        first_token_ms: r.first_token_ms,
        chunk_offsets_ms: r.chunk_offsets_ms,
        end_ms: r.end_ms,
        prompt_tokens_client: r.prompt_tokens_client,
        prompt_tokens: r.prompt_tokens,
        output_tokens: r.output_tokens,
        output_chunks: r.output_chunks,
        cached_tokens: r.cached_tokens,
        finish_reason: name(r.finish_reason),
        engine_ttft_ms: r.engine_ttft_ms,
        first_touch: r.first_touch,
        shared_prefix_tokens: r.shared_prefix_tokens,
        cold_prefix_tokens: r.cold_prefix_tokens,
        prefix_group: r.prefix_group,
        perfect_prefix_tokens: r.perfect_prefix_tokens,
        cached_tokens_details: r.cached_tokens_details.map(|d| CachedTokensDetails {
            device: d.device,
            host: d.host,
            storage: d.storage,
        }),
        retried: r.retried,
        outcome: outcome_from_wire(r.outcome)?,
        error: text(r.error),
        http_status: r.http_status.and_then(|s| u16::try_from(s).ok()),
    })
}

fn load_to_wire(l: &LoadSpec) -> v1::LoadSpec {
    let mut w = v1::LoadSpec {
        concurrency: 0,
        ttft_timeout_s: l.ttft_timeout_s,
        idle_timeout_s: l.idle_timeout_s,
        request_rate: None,
        burstiness: 1.0,
        max_concurrency: None,
        ramp_up: None,
        duration_s: l.duration_s,
        warmup_requests: l.warmup_requests,
    };
    match l.arrivals {
        Arrivals::Closed { concurrency } => w.concurrency = concurrency,
        Arrivals::Open {
            rate,
            burstiness,
            max_concurrency,
        } => {
            w.burstiness = burstiness;
            w.max_concurrency = max_concurrency;
            match rate {
                Rate::Fixed(r) => w.request_rate = Some(r),
                Rate::Ramp {
                    strategy,
                    start,
                    end,
                } => {
                    w.ramp_up = Some(v1::RampUp {
                        strategy: match strategy {
                            RampStrategy::Linear => v1::RampStrategy::Linear,
                            RampStrategy::Exponential => v1::RampStrategy::Exponential,
                        } as i32,
                        start_rate: start,
                        end_rate: end,
                    })
                }
            }
        }
    }
    w
}

/// The load as the wire carries it, converted as it is: the one thing the wire can get
/// wrong in shape (both a rate and a ramp, an unknown ramp strategy) is an error here;
/// whether its values are in range is `kvbench_common::limits` (`LoadSpec::validate`),
/// which the agent checks before it runs anything.
fn load_from_wire(w: &v1::LoadSpec) -> Result<LoadSpec, InvalidWire> {
    let rate = match (&w.request_rate, &w.ramp_up) {
        (Some(_), Some(_)) => {
            return Err(InvalidWire {
                field: "load",
                reason: "request_rate and ramp_up are exclusive".into(),
            })
        }
        (Some(r), None) => Some(Rate::Fixed(*r)),
        (None, Some(ramp)) => {
            let strategy = match v1::RampStrategy::try_from(ramp.strategy) {
                Ok(v1::RampStrategy::Linear) => RampStrategy::Linear,
                Ok(v1::RampStrategy::Exponential) => RampStrategy::Exponential,
                _ => return Err(InvalidWire::value("ramp strategy", ramp.strategy)),
            };
            Some(Rate::Ramp {
                strategy,
                start: ramp.start_rate,
                end: ramp.end_rate,
            })
        }
        (None, None) => None,
    };
    let arrivals = match rate {
        Some(rate) => Arrivals::Open {
            rate,
            burstiness: w.burstiness,
            max_concurrency: w.max_concurrency.filter(|m| *m > 0),
        },
        None => Arrivals::Closed {
            concurrency: w.concurrency.max(1),
        },
    };
    Ok(LoadSpec {
        arrivals,
        duration_s: w.duration_s,
        warmup_requests: w.warmup_requests,
        ttft_timeout_s: w.ttft_timeout_s,
        idle_timeout_s: w.idle_timeout_s,
    })
}

fn health_to_wire(h: &AgentHealth) -> v1::AgentHealth {
    v1::AgentHealth {
        event_loop_lag_p99_ms: h.event_loop_lag_p99_ms,
        host_cpu_busy: h.host_cpu_busy,
        coalesced_chunk_share: h.coalesced_chunk_share,
        event_loop_lag_max_ms: h.event_loop_lag_max_ms,
        dispatch_lag_p99_ms: h.dispatch_lag_p99_ms,
        cpu_seconds: h.cpu_seconds,
        worker_threads: h.worker_threads,
        peak_rss_bytes: h.peak_rss_bytes,
        generator_saturated: h.generator_saturated,
        saturation_reason: h.saturation_reason.clone(),
        nice: h.nice,
        cpus: h.cpus.clone(),
    }
}

fn health_from_wire(w: &v1::AgentHealth) -> AgentHealth {
    AgentHealth {
        event_loop_lag_p99_ms: w.event_loop_lag_p99_ms,
        host_cpu_busy: w.host_cpu_busy,
        coalesced_chunk_share: w.coalesced_chunk_share,
        event_loop_lag_max_ms: w.event_loop_lag_max_ms,
        dispatch_lag_p99_ms: w.dispatch_lag_p99_ms,
        cpu_seconds: w.cpu_seconds,
        worker_threads: w.worker_threads,
        peak_rss_bytes: w.peak_rss_bytes,
        generator_saturated: w.generator_saturated,
        saturation_reason: w.saturation_reason.clone(),
        nice: w.nice.clamp(-20, 19),
        cpus: w
            .cpus
            .iter()
            .copied()
            .filter(|c| *c < 4096)
            .take(4096)
            .collect(),
    }
}

fn conversation_to_wire(c: &Conversation) -> v1::Conversation {
    v1::Conversation {
        id: c.id,
        first_request_id: c.first_request_id,
        system: c.system.clone(),
        prefix: c
            .prefix
            .iter()
            .map(|(role, content)| v1::Message {
                role: role.clone(),
                content: content.clone(),
            })
            .collect(),
        user_turns: c.user_turns.clone(),
        max_tokens: c.max_tokens.clone(),
        think_time_ms: c.think_time_ms,
        due_ms: c.due_ms,
    }
}

fn conversation_from_wire(c: v1::Conversation) -> Conversation {
    Conversation {
        id: c.id,
        first_request_id: c.first_request_id,
        system: c.system,
        prefix: c.prefix.into_iter().map(|m| (m.role, m.content)).collect(),
        user_turns: c.user_turns,
        max_tokens: c.max_tokens,
        think_time_ms: c.think_time_ms,
        due_ms: c.due_ms,
    }
}

fn trace_to_wire(e: &TraceEntry) -> v1::TraceEntry {
    v1::TraceEntry {
        timestamp: e.timestamp,
        input_length: e.input_length,
        output_length: e.output_length,
        hash_ids: e.hash_ids.clone(),
    }
}

fn trace_from_wire(e: v1::TraceEntry) -> TraceEntry {
    TraceEntry {
        timestamp: e.timestamp,
        input_length: e.input_length,
        output_length: e.output_length,
        hash_ids: e.hash_ids,
    }
}

// ---- Aggregates: the From / TryFrom impls the adapters use. ----

impl From<&WorkloadSpec> for v1::WorkloadSpec {
    fn from(w: &WorkloadSpec) -> Self {
        workload_to_wire(w)
    }
}

impl TryFrom<&v1::WorkloadSpec> for WorkloadSpec {
    type Error = InvalidWire;
    fn try_from(w: &v1::WorkloadSpec) -> Result<Self, InvalidWire> {
        workload_from_wire(w)
    }
}

impl From<&LoadSpec> for v1::LoadSpec {
    fn from(l: &LoadSpec) -> Self {
        load_to_wire(l)
    }
}

impl TryFrom<&v1::LoadSpec> for LoadSpec {
    type Error = InvalidWire;
    fn try_from(l: &v1::LoadSpec) -> Result<Self, InvalidWire> {
        load_from_wire(l)
    }
}

impl From<&RoundRequest> for v1::RunRoundRequest {
    fn from(r: &RoundRequest) -> Self {
        let mut w = v1::RunRoundRequest {
            scenario_id: r.scenario_id.clone(),
            scenario_name: r.scenario_name.clone(),
            round: r.round,
            workload: Some(workload_to_wire(&r.workload)),
            load: Some(load_to_wire(&r.load)),
            model: r.model.clone(),
            api: api_to_wire(r.api) as i32,
            enforce_output_length: r.enforce_output_length,
            conversations: Vec::new(),
            trace: Vec::new(),
            trace_timestamps: false,
            trace_speedup: 1.0,
            tokenizer_json: r.tokenizer_json.clone().unwrap_or_default(),
            engine_tokenizer: r.engine_tokenizer,
            share_index: r.share.map_or(0, |s| s.index),
            share_count: r.share.map_or(0, |s| s.count),
            start_at_us: r.start_at_us,
            reconnect_window_s: r.reconnect_window.as_secs_f64(),
        };
        match &r.requests {
            RoundRequests::Generated => {}
            RoundRequests::Conversations(cs) => {
                w.conversations = cs.iter().map(conversation_to_wire).collect()
            }
            RoundRequests::Trace {
                entries,
                use_timestamps,
                speedup,
            } => {
                w.trace = entries.iter().map(trace_to_wire).collect();
                w.trace_timestamps = *use_timestamps;
                w.trace_speedup = *speedup;
            }
        }
        w
    }
}

impl TryFrom<v1::RunRoundRequest> for RoundRequest {
    type Error = InvalidWire;
    fn try_from(r: v1::RunRoundRequest) -> Result<Self, InvalidWire> {
        let workload = r
            .workload
            .as_ref()
            .ok_or(InvalidWire::missing("workload"))?;
        let requests = match (r.conversations.is_empty(), r.trace.is_empty()) {
            (true, true) => RoundRequests::Generated,
            (false, true) => RoundRequests::Conversations(
                r.conversations
                    .into_iter()
                    .map(conversation_from_wire)
                    .collect(),
            ),
            (true, false) => RoundRequests::Trace {
                entries: r.trace.into_iter().map(trace_from_wire).collect(),
                use_timestamps: r.trace_timestamps,
                speedup: if r.trace_speedup > 0.0 && r.trace_speedup.is_finite() {
                    r.trace_speedup
                } else {
                    1.0
                },
            },
            (false, false) => {
                return Err(InvalidWire {
                    field: "requests",
                    reason: "conversations and trace are exclusive".into(),
                })
            }
        };
        let share = match (r.share_index, r.share_count) {
            (_, 0) => None,
            (index, count) if index < count && count <= MAX_SHARES => Some(Share { index, count }),
            (index, count) => {
                return Err(InvalidWire {
                    field: "share",
                    reason: format!(
                        "share {index} of {count}: the index must be below the count, and the count at most {MAX_SHARES}"
                    ),
                })
            }
        };
        Ok(RoundRequest {
            scenario_id: r.scenario_id,
            scenario_name: r.scenario_name,
            round: r.round,
            workload: workload_from_wire(workload)?,
            load: LoadSpec::try_from(&r.load.unwrap_or_default())?,
            model: r.model,
            api: api_from_wire(r.api)?,
            enforce_output_length: r.enforce_output_length,
            requests,
            tokenizer_json: (!r.tokenizer_json.is_empty()).then_some(r.tokenizer_json),
            engine_tokenizer: r.engine_tokenizer,
            share,
            start_at_us: r.start_at_us,
            reconnect_window: reconnect_window(r.reconnect_window_s)?,
        })
    }
}

impl From<&RequestRecord> for v1::RequestRecord {
    fn from(r: &RequestRecord) -> Self {
        record_to_wire(r)
    }
}

impl TryFrom<v1::RequestRecord> for RequestRecord {
    type Error = InvalidWire;
    fn try_from(r: v1::RequestRecord) -> Result<Self, InvalidWire> {
        record_from_wire(r)
    }
}

impl From<&AgentHealth> for v1::AgentHealth {
    fn from(h: &AgentHealth) -> Self {
        health_to_wire(h)
    }
}

impl From<&v1::AgentHealth> for AgentHealth {
    fn from(h: &v1::AgentHealth) -> Self {
        health_from_wire(h)
    }
}

impl From<&TelemetrySample> for v1::TelemetrySample {
    fn from(t: &TelemetrySample) -> Self {
        v1::TelemetrySample {
            t_ms: t.t_ms,
            source: t.source.label().to_owned(),
            values: t.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            notes: t.notes.clone(),
        }
    }
}

/// A telemetry sample from the wire; round and agent empty (see the module's doc).
impl TryFrom<v1::TelemetrySample> for TelemetrySample {
    type Error = InvalidWire;
    fn try_from(t: v1::TelemetrySample) -> Result<Self, InvalidWire> {
        let source = TelemetrySource::from_label(&t.source).ok_or_else(|| InvalidWire {
            field: "telemetry source",
            reason: format!("unknown source {:?}", t.source),
        })?;
        Ok(TelemetrySample {
            round: 0,
            agent: String::new(),
            t_ms: time_ms("telemetry t_ms", t.t_ms)?,
            source,
            values: t
                .values
                .into_iter()
                .filter(|(k, _)| k.len() <= MAX_NAME_BYTES)
                .take(MAX_ITEMS)
                .collect(),
            notes: items(t.notes, text),
        })
    }
}

impl From<&RoundEvent> for v1::RoundEvent {
    fn from(e: &RoundEvent) -> Self {
        use v1::round_event::Event;
        let event = match e {
            RoundEvent::Started(s) => Event::Started(v1::RoundStarted {
                total_requests: s.total_requests,
                wall_clock_anchor_us: s.wall_clock_anchor_us,
            }),
            RoundEvent::Record(r) => Event::Record(record_to_wire(r)),
            RoundEvent::Progress(p) => Event::Progress(v1::Progress {
                completed: p.completed,
                failed: p.failed,
                in_flight: p.in_flight,
                total: p.total,
            }),
            RoundEvent::Telemetry(t) => Event::Telemetry(t.into()),
            RoundEvent::EngineDown(d) => Event::EngineDown(v1::EngineDown {
                at_ms: d.at_ms,
                detail: d.detail.clone(),
                restarting: d.restarting,
            }),
            RoundEvent::EngineRestarted(r) => Event::EngineRestarted(r.into()),
            RoundEvent::Finished(f) => Event::Finished(v1::RoundFinished {
                duration_ms: f.duration_ms,
                sent: f.sent,
                health: f.health.as_ref().map(health_to_wire),
                cancelled: f.cancelled,
                start_late_ms: f.start_late_ms,
                stop_reason: stop_reason_to_wire(f.stop_reason) as i32,
            }),
        };
        v1::RoundEvent {
            event: Some(event),
            seq: 0,
        }
    }
}

impl TryFrom<v1::RoundEvent> for RoundEvent {
    type Error = InvalidWire;
    fn try_from(e: v1::RoundEvent) -> Result<Self, InvalidWire> {
        use v1::round_event::Event;
        Ok(match e.event.ok_or(InvalidWire::missing("round event"))? {
            Event::Started(s) => RoundEvent::Started(RoundStarted {
                total_requests: s.total_requests,
                wall_clock_anchor_us: s.wall_clock_anchor_us,
            }),
            Event::Record(r) => RoundEvent::Record(record_from_wire(r)?),
            Event::Progress(p) => RoundEvent::Progress(Progress {
                completed: p.completed,
                failed: p.failed,
                in_flight: p.in_flight,
                total: p.total,
            }),
            Event::Telemetry(t) => RoundEvent::Telemetry(t.try_into()?),
            Event::EngineDown(d) => RoundEvent::EngineDown(EngineDown {
                at_ms: d.at_ms,
                detail: text(d.detail),
                restarting: d.restarting,
            }),
            Event::EngineRestarted(r) => RoundEvent::EngineRestarted(r.try_into()?),
            Event::Finished(f) => RoundEvent::Finished(RoundFinished {
                duration_ms: f.duration_ms,
                sent: f.sent,
                health: f.health.as_ref().map(health_from_wire),
                cancelled: f.cancelled,
                start_late_ms: f.start_late_ms,
                stop_reason: stop_reason_from_wire(f.stop_reason),
            }),
        })
    }
}

fn stop_reason_to_wire(r: Option<StopReason>) -> v1::StopReason {
    match r {
        None => v1::StopReason::Unspecified,
        Some(StopReason::Requested) => v1::StopReason::Requested,
        Some(StopReason::Shutdown) => v1::StopReason::Shutdown,
        Some(StopReason::CoordinatorSilent) => v1::StopReason::CoordinatorSilent,
        Some(StopReason::EngineFailed) => v1::StopReason::EngineFailed,
    }
}

/// An unknown reason (a newer agent's) reads as none: the round still counts as cancelled.
fn stop_reason_from_wire(r: i32) -> Option<StopReason> {
    match v1::StopReason::try_from(r).ok()? {
        v1::StopReason::Unspecified => None,
        v1::StopReason::Requested => Some(StopReason::Requested),
        v1::StopReason::Shutdown => Some(StopReason::Shutdown),
        v1::StopReason::CoordinatorSilent => Some(StopReason::CoordinatorSilent),
        v1::StopReason::EngineFailed => Some(StopReason::EngineFailed),
    }
}

/// The longest reconnect window a round may ask for.
pub const MAX_RECONNECT_WINDOW_S: f64 = 86_400.0;

/// The window a round asks for: 0 (unset) is the default; else finite, positive, at most a
/// day.
fn reconnect_window(s: f64) -> Result<std::time::Duration, InvalidWire> {
    if s == 0.0 {
        return Ok(kvbench_common::agent::DEFAULT_RECONNECT_WINDOW);
    }
    if !s.is_finite() || !(0.0..=MAX_RECONNECT_WINDOW_S).contains(&s) {
        return Err(InvalidWire {
            field: "reconnect_window_s",
            reason: format!("{s} is not a time between 0 and {MAX_RECONNECT_WINDOW_S} s"),
        });
    }
    Ok(std::time::Duration::from_secs_f64(s))
}

impl From<&GpuInfo> for v1::GpuInfo {
    fn from(g: &GpuInfo) -> Self {
        v1::GpuInfo {
            index: g.index,
            name: g.name.clone(),
            uuid: g.uuid.clone(),
            memory_total_bytes: g.memory_total_bytes,
        }
    }
}

impl From<v1::GpuInfo> for GpuInfo {
    fn from(g: v1::GpuInfo) -> Self {
        GpuInfo {
            index: g.index,
            name: name(g.name),
            uuid: name(g.uuid),
            memory_total_bytes: g.memory_total_bytes,
        }
    }
}

impl From<&AgentInfo> for v1::HelloResponse {
    fn from(a: &AgentInfo) -> Self {
        v1::HelloResponse {
            protocol_version: a.protocol_version,
            agent_version: a.agent_version.clone(),
            hostname: a.hostname.clone(),
            agent_name: a.agent_name.clone(),
            labels: a
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            gpus: a.gpus.iter().map(v1::GpuInfo::from).collect(),
            engine_display: a.engine_display.clone(),
            gpu_note: a.gpu_note.clone().unwrap_or_default(),
            warnings: a.warnings.clone(),
            agent_time_us: a.agent_time_us,
            engine_kind: a.engine_kind.clone(),
            engine_models: a.engine_models.clone(),
            engine_healthy: a.engine_healthy,
            engine_health_detail: a.engine_health_detail.clone(),
            engine_version: a.engine_version.clone(),
        }
    }
}

impl From<v1::HelloResponse> for AgentInfo {
    fn from(h: v1::HelloResponse) -> Self {
        AgentInfo {
            protocol_version: h.protocol_version,
            agent_version: name(h.agent_version),
            hostname: name(h.hostname),
            agent_name: name(h.agent_name),
            // In key order, so that which labels are kept does not depend on the wire's.
            labels: h
                .labels
                .into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .take(MAX_ITEMS)
                .map(|(k, v)| (name(k), name(v)))
                .collect::<BTreeMap<_, _>>(),
            gpus: h
                .gpus
                .into_iter()
                .take(MAX_ITEMS)
                .map(GpuInfo::from)
                .collect(),
            engine_display: name(h.engine_display),
            gpu_note: (!h.gpu_note.is_empty()).then(|| text(h.gpu_note)),
            warnings: items(h.warnings, text),
            agent_time_us: h.agent_time_us,
            engine_kind: name(h.engine_kind),
            engine_models: items(h.engine_models, name),
            engine_healthy: h.engine_healthy,
            engine_health_detail: text(h.engine_health_detail),
            engine_version: name(h.engine_version),
        }
    }
}

impl From<&ColdProbe> for v1::ColdProbe {
    fn from(p: &ColdProbe) -> Self {
        v1::ColdProbe {
            prompt_tokens: p.prompt_tokens,
            cached_tokens: p.cached_tokens,
            counter_hits: p.counter_hits,
            counter_queries: p.counter_queries,
            error: p.error.clone(),
        }
    }
}

impl From<v1::ColdProbe> for ColdProbe {
    fn from(p: v1::ColdProbe) -> Self {
        ColdProbe {
            prompt_tokens: p.prompt_tokens,
            cached_tokens: p.cached_tokens,
            counter_hits: p.counter_hits,
            counter_queries: p.counter_queries,
            error: text(p.error),
        }
    }
}

impl From<&ClearOutcome> for v1::ClearCacheResponse {
    fn from(c: &ClearOutcome) -> Self {
        v1::ClearCacheResponse {
            success: c.success,
            detail: c.detail.clone(),
            took_ms: c.took_ms,
            probe: c.probe.as_ref().map(v1::ColdProbe::from),
        }
    }
}

impl From<v1::ClearCacheResponse> for ClearOutcome {
    fn from(c: v1::ClearCacheResponse) -> Self {
        ClearOutcome {
            success: c.success,
            detail: text(c.detail),
            took_ms: c.took_ms,
            probe: c.probe.map(ColdProbe::from),
        }
    }
}

impl From<&RestartOutcome> for v1::RestartEngineResponse {
    fn from(r: &RestartOutcome) -> Self {
        v1::RestartEngineResponse {
            success: r.error.is_none(),
            error_class: r.error.map(|e| e.label().to_owned()).unwrap_or_default(),
            detail: r.detail.clone(),
            took_ms: r.took_ms,
        }
    }
}

impl TryFrom<v1::RestartEngineResponse> for RestartOutcome {
    type Error = InvalidWire;
    fn try_from(r: v1::RestartEngineResponse) -> Result<Self, InvalidWire> {
        let error = if r.success {
            None
        } else {
            Some(
                RestartError::from_label(&r.error_class).ok_or_else(|| InvalidWire {
                    field: "restart error class",
                    reason: format!("unknown class {:?}", r.error_class),
                })?,
            )
        };
        Ok(RestartOutcome {
            error,
            detail: text(r.detail),
            took_ms: r.took_ms,
        })
    }
}

/// An outcome's wire value (tests that speak the wire directly compare with it).
impl From<Outcome> for v1::Outcome {
    fn from(o: Outcome) -> Self {
        outcome_to_wire(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_and_kind_round_trips() {
        for o in Outcome::ALL {
            assert_eq!(outcome_from_wire(outcome_to_wire(o) as i32), Ok(o));
        }
        for k in WorkloadKind::ALL {
            assert_eq!(
                workload_kind_from_wire(workload_kind_to_wire(k) as i32),
                Ok(k)
            );
        }
        assert!(outcome_from_wire(0).is_err());
        assert!(outcome_from_wire(999).is_err());
    }

    #[test]
    fn load_specs_round_trip() {
        let specs = [
            LoadSpec {
                arrivals: Arrivals::Closed { concurrency: 8 },
                duration_s: None,
                warmup_requests: 0,
                ttft_timeout_s: 30.0,
                idle_timeout_s: 5.0,
            },
            LoadSpec {
                arrivals: Arrivals::Open {
                    rate: Rate::Fixed(f64::INFINITY),
                    burstiness: 0.5,
                    max_concurrency: Some(64),
                },
                duration_s: Some(10.0),
                warmup_requests: 3,
                ttft_timeout_s: 30.0,
                idle_timeout_s: 5.0,
            },
            LoadSpec {
                arrivals: Arrivals::Open {
                    rate: Rate::Ramp {
                        strategy: RampStrategy::Exponential,
                        start: 1.0,
                        end: 50.0,
                    },
                    burstiness: 1.0,
                    max_concurrency: None,
                },
                duration_s: None,
                warmup_requests: 0,
                ttft_timeout_s: 1.0,
                idle_timeout_s: 1.0,
            },
        ];
        for l in specs {
            assert_eq!(LoadSpec::try_from(&v1::LoadSpec::from(&l)), Ok(l));
        }
    }

    #[test]
    fn workload_round_trips() {
        let w = WorkloadSpec {
            kind: WorkloadKind::MultiTurnConversation,
            seed: 9,
            num_requests: 12,
            output_tokens: 33,
            output: OutputDist::Fixed,
            params: WorkloadParams {
                turns: Some(4),
                user_tokens: Some(10),
                think_time_ms: Some(250),
                ..Default::default()
            },
        };
        assert_eq!(
            WorkloadSpec::try_from(&v1::WorkloadSpec::from(&w)),
            Ok(w.clone())
        );
        for (output, order) in [
            (
                OutputDist::Uniform { min: 3, max: 9 },
                DocumentOrder::Random,
            ),
            (
                OutputDist::Normal {
                    mean: 50.0,
                    std: 5.0,
                },
                DocumentOrder::Interleaved,
            ),
            (
                OutputDist::Lognormal {
                    mean: 80.0,
                    sigma: 0.7,
                },
                DocumentOrder::Grouped,
            ),
        ] {
            let mut x = w.clone();
            x.output = output;
            x.params.order = Some(order);
            assert_eq!(WorkloadSpec::try_from(&v1::WorkloadSpec::from(&x)), Ok(x));
        }
    }

    // ---- Every wire <-> domain conversion round-trips (property tests). ----

    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;

    fn ms() -> impl Strategy<Value = f64> {
        0.0..1e7f64
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zé中 ]{0,12}"
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop::sample::select(Outcome::ALL.to_vec())
    }

    /// A record as an agent sends it: scenario, round and agent travel per stream, so they
    /// are empty here.
    fn record() -> impl Strategy<Value = RequestRecord> {
        (
            (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()),
            (ms(), ms(), ms(), option::of(ms()), option::of(ms())),
            (vec(ms(), 0..5), ms(), any::<u32>()),
            (
                option::of(any::<u32>()),
                option::of(any::<u32>()),
                any::<u32>(),
            ),
            (
                option::of(any::<u32>()),
                text(),
                option::of(ms()),
                any::<bool>(),
            ),
            (
                outcome(),
                text(),
                option::of(any::<u16>()),
                option::of(any::<u32>()),
                any::<bool>(),
            ),
        )
            .prop_map(|(a, b, c, d, e, f)| RequestRecord {
                seq: None,
                scenario: String::new(),
                round: 0,
                agent: String::new(),
                request_id: a.0,
                conversation_id: a.1,
                turn: a.2,
                warmup: a.3,
                scheduled_ms: b.0,
                queue_ms: b.1,
                sent_ms: b.2,
                first_byte_ms: b.3,
                first_token_ms: b.4,
                chunk_offsets_ms: c.0,
                end_ms: c.1,
                prompt_tokens_client: c.2,
                prompt_tokens: d.0,
                output_tokens: d.1,
                output_chunks: d.2,
                cached_tokens: e.0,
                finish_reason: e.1,
                engine_ttft_ms: e.2,
                first_touch: e.3,
                shared_prefix_tokens: f.3,
                cold_prefix_tokens: f.3.map(|t| t / 2),
                prefix_group: d.2.checked_rem(7),
                perfect_prefix_tokens: f.3.map(|t| t / 3),
                cached_tokens_details: f.3.map(|t| CachedTokensDetails {
                    device: t / 2,
                    host: t / 4,
                    storage: (t % 2 == 0).then_some(t / 8),
                }),
                retried: f.4,
                outcome: f.0,
                error: f.1,
                http_status: f.2,
            })
    }

    fn health() -> impl Strategy<Value = AgentHealth> {
        (
            (ms(), ms(), ms(), ms(), ms()),
            (any::<u32>(), any::<u64>(), any::<bool>(), text()),
        )
            .prop_map(|(a, b)| AgentHealth {
                event_loop_lag_p99_ms: a.0,
                host_cpu_busy: a.1,
                coalesced_chunk_share: a.2,
                event_loop_lag_max_ms: a.3,
                dispatch_lag_p99_ms: a.4,
                cpu_seconds: a.0 / 3.0,
                worker_threads: b.0,
                peak_rss_bytes: b.1,
                generator_saturated: b.2,
                saturation_reason: b.3,
                nice: (b.0 % 40) as i32 - 20,
                cpus: vec![b.0 % 64, 3],
            })
    }

    fn sample() -> impl Strategy<Value = TelemetrySample> {
        (
            ms(),
            prop::sample::select(TelemetrySource::ALL.to_vec()),
            prop::collection::btree_map(text(), ms(), 0..4),
            vec(text(), 0..3),
        )
            .prop_map(|(t_ms, source, values, notes)| TelemetrySample {
                round: 0,
                agent: String::new(),
                t_ms,
                source,
                values,
                notes,
            })
    }

    fn event() -> impl Strategy<Value = RoundEvent> {
        prop_oneof![
            (any::<u32>(), any::<i64>()).prop_map(|(t, a)| RoundEvent::Started(RoundStarted {
                total_requests: t,
                wall_clock_anchor_us: a
            })),
            record().prop_map(RoundEvent::Record),
            (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|p| {
                RoundEvent::Progress(Progress {
                    completed: p.0,
                    failed: p.1,
                    in_flight: p.2,
                    total: p.3,
                })
            }),
            sample().prop_map(RoundEvent::Telemetry),
            (ms(), text(), any::<bool>()).prop_map(|(at_ms, detail, restarting)| {
                RoundEvent::EngineDown(EngineDown {
                    at_ms,
                    detail,
                    restarting,
                })
            }),
            (
                option::of(prop::sample::select(RestartError::ALL.to_vec())),
                text(),
                ms()
            )
                .prop_map(|(error, detail, took_ms)| {
                    RoundEvent::EngineRestarted(RestartOutcome {
                        error,
                        detail,
                        took_ms,
                    })
                }),
            (
                ms(),
                any::<u32>(),
                option::of(health()),
                any::<bool>(),
                ms(),
                option::of(prop::sample::select(vec![
                    StopReason::Requested,
                    StopReason::Shutdown,
                    StopReason::CoordinatorSilent,
                    StopReason::EngineFailed
                ])),
            )
                .prop_map(|(d, sent, health, cancelled, late, stop_reason)| {
                    RoundEvent::Finished(RoundFinished {
                        duration_ms: d,
                        sent,
                        health,
                        cancelled,
                        start_late_ms: late,
                        stop_reason,
                    })
                }),
        ]
    }

    fn gpu() -> impl Strategy<Value = GpuInfo> {
        (any::<u32>(), text(), text(), any::<u64>()).prop_map(|(index, name, uuid, m)| GpuInfo {
            index,
            name,
            uuid,
            memory_total_bytes: m,
        })
    }

    fn agent_info() -> impl Strategy<Value = AgentInfo> {
        (
            (any::<u32>(), text(), text(), text()),
            prop::collection::btree_map(text(), text(), 0..4),
            vec(gpu(), 0..3),
            text(),
            (option::of("[a-z ]{1,10}"), vec(text(), 0..3), any::<i64>()),
            (
                text(),
                vec(text(), 0..3),
                option::of(any::<bool>()),
                text(),
                text(),
            ),
        )
            .prop_map(
                |(a, labels, gpus, engine_display, (gpu_note, warnings, agent_time_us), e)| {
                    AgentInfo {
                        protocol_version: a.0,
                        agent_version: a.1,
                        hostname: a.2,
                        agent_name: a.3,
                        labels,
                        gpus,
                        engine_display,
                        gpu_note,
                        warnings,
                        agent_time_us,
                        engine_kind: e.0,
                        engine_models: e.1,
                        engine_healthy: e.2,
                        engine_health_detail: e.3,
                        engine_version: e.4,
                    }
                },
            )
    }

    fn probe() -> impl Strategy<Value = ColdProbe> {
        (
            any::<u32>(),
            option::of(any::<u32>()),
            option::of(ms()),
            option::of(ms()),
            text(),
        )
            .prop_map(|p| ColdProbe {
                prompt_tokens: p.0,
                cached_tokens: p.1,
                counter_hits: p.2,
                counter_queries: p.3,
                error: p.4,
            })
    }

    fn workload() -> impl Strategy<Value = WorkloadSpec> {
        let kinds = prop::sample::select(WorkloadKind::ALL.to_vec());
        let outputs = prop_oneof![
            Just(OutputDist::Fixed),
            (any::<u32>(), any::<u32>()).prop_map(|(min, max)| OutputDist::Uniform { min, max }),
            (ms(), ms()).prop_map(|(mean, std)| OutputDist::Normal { mean, std }),
            (ms(), ms()).prop_map(|(mean, sigma)| OutputDist::Lognormal { mean, sigma }),
        ];
        let orders = option::of(prop::sample::select(vec![
            DocumentOrder::Grouped,
            DocumentOrder::Interleaved,
            DocumentOrder::Random,
        ]));
        let o = || option::of(any::<u32>());
        (
            (kinds, any::<u64>(), any::<u32>(), any::<u32>(), outputs),
            (o(), o(), o(), o(), o(), o()),
            (o(), o(), o(), o(), orders, o()),
        )
            .prop_map(|(a, b, c)| WorkloadSpec {
                kind: a.0,
                seed: a.1,
                num_requests: a.2,
                output_tokens: a.3,
                output: a.4,
                params: WorkloadParams {
                    documents: b.0,
                    document_tokens: b.1,
                    question_tokens: b.2,
                    conversations: b.3,
                    turns: b.4,
                    system_tokens: b.5,
                    user_tokens: c.0,
                    context_tokens: c.1,
                    instruction_tokens: c.2,
                    prompt_tokens: c.3,
                    order: c.4,
                    think_time_ms: c.5,
                },
            })
    }

    fn load() -> impl Strategy<Value = LoadSpec> {
        let positive = || 0.001..1e6f64;
        let rate = prop_oneof![
            positive().prop_map(Rate::Fixed),
            (any::<bool>(), positive(), positive()).prop_map(|(lin, start, end)| Rate::Ramp {
                strategy: if lin {
                    RampStrategy::Linear
                } else {
                    RampStrategy::Exponential
                },
                start,
                end,
            }),
        ];
        let arrivals = prop_oneof![
            (1..u32::MAX).prop_map(|concurrency| Arrivals::Closed { concurrency }),
            (rate, positive(), option::of(1..u32::MAX)).prop_map(|(rate, b, m)| {
                Arrivals::Open {
                    rate,
                    burstiness: b,
                    max_concurrency: m,
                }
            }),
        ];
        (
            arrivals,
            option::of(positive()),
            any::<u32>(),
            positive(),
            positive(),
        )
            .prop_map(|(arrivals, duration_s, w, t, i)| LoadSpec {
                arrivals,
                duration_s,
                warmup_requests: w,
                ttft_timeout_s: t,
                idle_timeout_s: i,
            })
    }

    fn conversation() -> impl Strategy<Value = Conversation> {
        (
            (any::<u32>(), any::<u32>(), option::of(text())),
            vec(text(), 0..3),
            vec(any::<u32>(), 0..3),
            any::<u32>(),
            vec((text(), text()), 0..2),
            option::of(ms()),
        )
            .prop_map(
                |(a, user_turns, max_tokens, think, prefix, due_ms)| Conversation {
                    id: a.0,
                    first_request_id: a.1,
                    system: a.2,
                    user_turns,
                    max_tokens,
                    think_time_ms: think,
                    prefix,
                    due_ms,
                },
            )
    }

    fn requests() -> impl Strategy<Value = RoundRequests> {
        let entry =
            (ms(), any::<u32>(), any::<u32>(), vec(any::<u64>(), 0..4)).prop_map(|e| TraceEntry {
                timestamp: e.0,
                input_length: e.1,
                output_length: e.2,
                hash_ids: e.3,
            });
        prop_oneof![
            Just(RoundRequests::Generated),
            vec(conversation(), 1..3).prop_map(RoundRequests::Conversations),
            (vec(entry, 1..3), any::<bool>(), 0.01..100.0f64).prop_map(|(e, u, s)| {
                RoundRequests::Trace {
                    entries: e,
                    use_timestamps: u,
                    speedup: s,
                }
            }),
        ]
    }

    fn round_request() -> impl Strategy<Value = RoundRequest> {
        (
            (text(), text(), 1..100u32, workload(), load()),
            (text(), any::<bool>(), any::<bool>(), requests()),
            (
                option::of(vec(any::<u8>(), 1..8)),
                any::<bool>(),
                option::of((1..MAX_SHARES).prop_flat_map(|count| {
                    (0..count).prop_map(move |index| Share { index, count })
                })),
                option::of(any::<i64>()),
            ),
        )
            .prop_map(
                |(a, b, (tokenizer_json, engine_tokenizer, share, start_at_us))| RoundRequest {
                    scenario_id: a.0,
                    scenario_name: a.1,
                    round: a.2,
                    workload: a.3,
                    load: a.4,
                    model: b.0,
                    api: if b.1 {
                        ApiFlavor::Chat
                    } else {
                        ApiFlavor::Completions
                    },
                    enforce_output_length: b.2,
                    requests: b.3,
                    tokenizer_json,
                    engine_tokenizer,
                    share,
                    start_at_us,
                    reconnect_window: std::time::Duration::from_millis(u64::from(a.2) * 1000 + 250),
                },
            )
    }

    proptest! {
        #[test]
        fn round_events_round_trip(e in event()) {
            prop_assert_eq!(RoundEvent::try_from(v1::RoundEvent::from(&e)), Ok(e));
        }

        #[test]
        fn round_requests_round_trip(r in round_request()) {
            prop_assert_eq!(RoundRequest::try_from(v1::RunRoundRequest::from(&r)), Ok(r));
        }

        #[test]
        fn agent_info_round_trips(a in agent_info()) {
            prop_assert_eq!(AgentInfo::from(v1::HelloResponse::from(&a)), a);
        }

        #[test]
        fn clear_outcomes_round_trip(
            success in any::<bool>(), detail in text(), took_ms in ms(), probe in option::of(probe())
        ) {
            let c = ClearOutcome { success, detail, took_ms, probe };
            prop_assert_eq!(ClearOutcome::from(v1::ClearCacheResponse::from(&c)), c);
        }

        #[test]
        fn restart_outcomes_round_trip(
            error in option::of(prop::sample::select(RestartError::ALL.to_vec())),
            detail in text(),
            took_ms in ms(),
        ) {
            let r = RestartOutcome { error, detail, took_ms };
            prop_assert_eq!(RestartOutcome::try_from(v1::RestartEngineResponse::from(&r)), Ok(r));
        }
    }

    #[test]
    fn unknown_wire_values_are_errors() {
        let bad = v1::RestartEngineResponse {
            success: false,
            error_class: "exploded".into(),
            ..Default::default()
        };
        assert!(RestartOutcome::try_from(bad).is_err());
        assert!(RoundEvent::try_from(v1::RoundEvent {
            event: None,
            seq: 0
        })
        .is_err());
        assert!(RoundRequest::try_from(v1::RunRoundRequest::default()).is_err());
    }
}
