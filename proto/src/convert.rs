//! The one place where wire types become domain types and back.

use kvbench_common::plan::ApiFlavor;
use kvbench_common::record::{Outcome, RequestRecord};
use kvbench_common::telemetry::TelemetrySample;
use kvbench_common::workload::{WorkloadKind, WorkloadParams, WorkloadSpec};

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

pub fn workload_to_wire(w: &WorkloadSpec) -> v1::WorkloadSpec {
    let p = &w.params;
    v1::WorkloadSpec {
        kind: workload_kind_to_wire(w.kind) as i32,
        seed: w.seed,
        num_requests: w.num_requests,
        output_tokens: w.output_tokens,
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
        scheduled_ms: r.scheduled_ms,
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
        scheduled_ms: r.scheduled_ms,
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
        outcome: outcome_from_wire(r.outcome)?,
        error: r.error,
        http_status: r.http_status.and_then(|s| u16::try_from(s).ok()),
    })
}

/// A telemetry sample from the wire, with the stream's round and agent.
pub fn telemetry_from_wire(t: v1::TelemetrySample, round: u32, agent: &str) -> TelemetrySample {
    TelemetrySample {
        round,
        agent: agent.to_owned(),
        t_ms: t.t_ms,
        source: t.source,
        values: t.values.into_iter().collect(),
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
    fn workload_round_trips() {
        let w = WorkloadSpec {
            kind: WorkloadKind::MultiTurnConversation,
            seed: 9,
            num_requests: 12,
            output_tokens: 33,
            params: WorkloadParams {
                turns: Some(4),
                user_tokens: Some(10),
                ..Default::default()
            },
        };
        assert_eq!(workload_from_wire(&workload_to_wire(&w)), Ok(w));
    }
}
