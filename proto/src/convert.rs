//! The one place where wire types become domain types and back.

use kvbench_common::dataset::TraceEntry;
use kvbench_common::load::{Arrivals, LoadSpec, RampStrategy, Rate};
use kvbench_common::plan::ApiFlavor;
use kvbench_common::record::{Outcome, RequestRecord};
use kvbench_common::stats::AgentHealth;
use kvbench_common::telemetry::TelemetrySample;
use kvbench_common::workload::Conversation;
use kvbench_common::workload::{
    DocumentOrder, OutputDist, WorkloadKind, WorkloadParams, WorkloadSpec,
};

use crate::v1;

/// A wire value that has no domain meaning (an unspecified or unknown enum value).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {value}")]
pub struct InvalidWire {
    pub field: &'static str,
    pub value: i32,
}

pub fn workload_kind_to_wire(k: WorkloadKind) -> v1::WorkloadKind {
    match k {
        WorkloadKind::LongContextHighReuse => v1::WorkloadKind::LongContextHighReuse,
        WorkloadKind::MultiTurnConversation => v1::WorkloadKind::MultiTurnConversation,
        WorkloadKind::CodeGeneration => v1::WorkloadKind::CodeGeneration,
        WorkloadKind::BatchProcessing => v1::WorkloadKind::BatchProcessing,
        WorkloadKind::ColdStart => v1::WorkloadKind::ColdStart,
    }
}

pub fn workload_kind_from_wire(v: i32) -> Result<WorkloadKind, InvalidWire> {
    let bad = InvalidWire {
        field: "workload kind",
        value: v,
    };
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

pub fn api_to_wire(a: ApiFlavor) -> v1::ApiFlavor {
    match a {
        ApiFlavor::Chat => v1::ApiFlavor::Chat,
        ApiFlavor::Completions => v1::ApiFlavor::Completions,
    }
}

pub fn api_from_wire(v: i32) -> Result<ApiFlavor, InvalidWire> {
    match v1::ApiFlavor::try_from(v) {
        Ok(v1::ApiFlavor::Chat) => Ok(ApiFlavor::Chat),
        Ok(v1::ApiFlavor::Completions) => Ok(ApiFlavor::Completions),
        _ => Err(InvalidWire {
            field: "api flavour",
            value: v,
        }),
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
        _ => Err(InvalidWire {
            field: "document order",
            value: v,
        }),
    }
}

pub fn workload_to_wire(w: &WorkloadSpec) -> v1::WorkloadSpec {
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

pub fn workload_from_wire(w: &v1::WorkloadSpec) -> Result<WorkloadSpec, InvalidWire> {
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

pub fn outcome_to_wire(o: Outcome) -> v1::Outcome {
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

pub fn outcome_from_wire(v: i32) -> Result<Outcome, InvalidWire> {
    let bad = InvalidWire {
        field: "outcome",
        value: v,
    };
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
pub fn record_to_wire(r: &RequestRecord) -> v1::RequestRecord {
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
        outcome: outcome_to_wire(r.outcome) as i32,
        error: r.error.clone(),
        http_status: r.http_status.map(u32::from),
    }
}

/// A record from the wire, with the stream's scenario, round and agent.
pub fn record_from_wire(
    r: v1::RequestRecord,
    scenario: &str,
    round: u32,
    agent: &str,
) -> Result<RequestRecord, InvalidWire> {
    Ok(RequestRecord {
        scenario: scenario.to_owned(),
        round,
        agent: agent.to_owned(),
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
        finish_reason: r.finish_reason,
        engine_ttft_ms: r.engine_ttft_ms,
        first_touch: r.first_touch,
        outcome: outcome_from_wire(r.outcome)?,
        error: r.error,
        http_status: r.http_status.and_then(|s| u16::try_from(s).ok()),
    })
}

pub fn load_to_wire(l: &LoadSpec) -> v1::LoadSpec {
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

/// A load spec from the wire; the message says which field is wrong.
pub fn load_from_wire(w: &v1::LoadSpec) -> Result<LoadSpec, String> {
    let positive = |v: f64, what: &str| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("{what} must be > 0, got {v}"))
        }
    };
    let rate = match (&w.request_rate, &w.ramp_up) {
        (Some(_), Some(_)) => return Err("request_rate and ramp_up are exclusive".into()),
        (Some(r), None) if *r > 0.0 => Some(Rate::Fixed(*r)),
        (Some(r), None) => return Err(format!("request_rate must be > 0, got {r}")),
        (None, Some(ramp)) => {
            let strategy = match v1::RampStrategy::try_from(ramp.strategy) {
                Ok(v1::RampStrategy::Linear) => RampStrategy::Linear,
                Ok(v1::RampStrategy::Exponential) => RampStrategy::Exponential,
                _ => return Err(format!("invalid ramp strategy {}", ramp.strategy)),
            };
            Some(Rate::Ramp {
                strategy,
                start: positive(ramp.start_rate, "ramp_up.start_rate")?,
                end: positive(ramp.end_rate, "ramp_up.end_rate")?,
            })
        }
        (None, None) => None,
    };
    let arrivals = match rate {
        Some(rate) => Arrivals::Open {
            rate,
            burstiness: positive(w.burstiness, "burstiness")?,
            max_concurrency: w.max_concurrency.filter(|m| *m > 0),
        },
        None => Arrivals::Closed {
            concurrency: w.concurrency.max(1),
        },
    };
    if let Some(d) = w.duration_s {
        positive(d, "duration_s")?;
    }
    Ok(LoadSpec {
        arrivals,
        duration_s: w.duration_s,
        warmup_requests: w.warmup_requests,
        ttft_timeout_s: positive(w.ttft_timeout_s, "ttft_timeout_s")?,
        idle_timeout_s: positive(w.idle_timeout_s, "idle_timeout_s")?,
    })
}

pub fn health_to_wire(h: &AgentHealth) -> v1::AgentHealth {
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
    }
}

pub fn health_from_wire(w: &v1::AgentHealth) -> AgentHealth {
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
    }
}

pub fn conversation_to_wire(c: &Conversation) -> v1::Conversation {
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

pub fn conversation_from_wire(c: v1::Conversation) -> Conversation {
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

pub fn trace_to_wire(e: &TraceEntry) -> v1::TraceEntry {
    v1::TraceEntry {
        timestamp: e.timestamp,
        input_length: e.input_length,
        output_length: e.output_length,
        hash_ids: e.hash_ids.clone(),
    }
}

pub fn trace_from_wire(e: v1::TraceEntry) -> TraceEntry {
    TraceEntry {
        timestamp: e.timestamp,
        input_length: e.input_length,
        output_length: e.output_length,
        hash_ids: e.hash_ids,
    }
}

/// A telemetry sample from the wire, with the stream's round and agent.
pub fn telemetry_from_wire(t: v1::TelemetrySample, round: u32, agent: &str) -> TelemetrySample {
    TelemetrySample {
        round,
        agent: agent.to_owned(),
        t_ms: t.t_ms,
        source: t.source,
        values: t.values.into_iter().collect(),
        notes: t.notes,
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
            assert_eq!(load_from_wire(&load_to_wire(&l)), Ok(l));
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
        assert_eq!(workload_from_wire(&workload_to_wire(&w)), Ok(w.clone()));
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
            assert_eq!(workload_from_wire(&workload_to_wire(&x)), Ok(x));
        }
    }
}
