//! One request's record, built from the engine's reply on the round's clock.

use kvbench_common::record::RequestRecord;
use kvbench_common::workload::Conversation;
use tokio::time::Instant;

use super::request;

/// What a measured prompt shares with the prompts sent before it in the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shared {
    /// It shares not even its first chunk: a cold engine can have none of it cached.
    pub(crate) first_touch: bool,
    /// Tokens (the client's count) of the shared prefix.
    pub(crate) tokens: u32,
    /// Tokens (the client's count) of the prefix shared, in the order sent, with the texts
    /// sent before it.
    pub(crate) cold_tokens: u32,
    /// Its prefix group (see [`kvbench_common::prefix_cache::Share::group`]).
    pub(crate) group: Option<u32>,
    /// What the perfect cache held of it when it was sent (none: the cache overflowed).
    pub(crate) perfect: Option<PerfectShare>,
}

/// The prompt as the engine sees it (rendered as the engine renders it, in the agent's
/// tokenizer's ids) against the perfect cache when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PerfectShare {
    /// Leading tokens the cache held.
    pub(crate) tokens: u32,
    /// Tokens of the whole prompt, in the same count.
    pub(crate) of: u32,
}

impl PerfectShare {
    /// In the engine's tokens: scaled by the engine's count of the prompt where it gave
    /// one (its tokenizer and chat template may differ from the agent's), at most it.
    pub(crate) fn engine_tokens(&self, engine_prompt: Option<u32>) -> u32 {
        match engine_prompt {
            Some(p) if self.of > 0 && p != self.of => {
                let scaled = f64::from(self.tokens) * f64::from(p) / f64::from(self.of);
                (scaled.round() as u32).min(p)
            }
            _ => self.tokens,
        }
    }
}

/// What a record says besides the engine's reply.
#[derive(Debug, Clone)]
pub(crate) struct RecordContext<'a> {
    pub(crate) scenario: &'a str,
    pub(crate) round: u32,
    pub(crate) agent: &'a str,
    pub(crate) request_id: u32,
    pub(crate) conversation_id: u32,
    pub(crate) turn: u32,
    pub(crate) warmup: bool,
    /// What this prompt shares with those sent before it in the round (None: warmup).
    pub(crate) shared: Option<Shared>,
    /// The round's zero: every time in the record is relative to it.
    pub(crate) t0: Instant,
    /// When the load shape meant the request to go out.
    pub(crate) scheduled: Instant,
    pub(crate) queue_ms: f64,
    pub(crate) prompt_tokens_client: u32,
}

/// Milliseconds from `zero` to `t` (instants before the zero, none in practice, clamp to 0).
pub(crate) fn ms_since(zero: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(zero).as_secs_f64() * 1000.0
}

/// One request's record: the reply's times on the round's clock, its counts and outcome.
pub(crate) fn build_record(c: &RecordContext<'_>, reply: &request::Reply) -> RequestRecord {
    RequestRecord {
        seq: None,
        scenario: c.scenario.to_owned(),
        round: c.round,
        agent: c.agent.to_owned(),
        request_id: c.request_id,
        conversation_id: c.conversation_id,
        turn: c.turn,
        warmup: c.warmup,
        scheduled_ms: ms_since(c.t0, c.scheduled),
        queue_ms: c.queue_ms,
        sent_ms: ms_since(c.t0, reply.sent),
        first_byte_ms: reply.first_byte.map(|t| ms_since(c.t0, t)),
        first_token_ms: reply.first_token.map(|t| ms_since(c.t0, t)),
        chunk_offsets_ms: reply
            .chunks
            .iter()
            .map(|t| ms_since(reply.sent, *t))
            .collect(),
        end_ms: ms_since(c.t0, reply.end),
        prompt_tokens_client: c.prompt_tokens_client,
        prompt_tokens: reply.prompt_tokens,
        output_tokens: reply.output_tokens,
        output_chunks: reply.chunks.len() as u32,
        cached_tokens: reply.cached_tokens,
        finish_reason: reply.finish_reason.clone(),
        engine_ttft_ms: reply.engine_ttft_us.map(|us| us as f64 / 1000.0),
        first_touch: c.shared.is_some_and(|s| s.first_touch),
        shared_prefix_tokens: c.shared.map(|s| s.tokens),
        cold_prefix_tokens: c.shared.map(|s| s.cold_tokens),
        prefix_group: c.shared.and_then(|s| s.group),
        perfect_prefix_tokens: c
            .shared
            .and_then(|s| s.perfect)
            .map(|p| p.engine_tokens(reply.prompt_tokens)),
        cached_tokens_details: reply.cached_tokens_details,
        retried: reply.retried,
        outcome: reply.outcome,
        error: reply.error.clone(),
        http_status: reply.http_status,
    }
}

/// The messages a conversation starts with: its system prompt and earlier messages.
pub(crate) fn opening_messages(conv: &Conversation) -> Vec<(String, String)> {
    let mut messages = Vec::new();
    if let Some(s) = &conv.system {
        messages.push(("system".into(), s.clone()));
    }
    messages.extend(conv.prefix.iter().cloned());
    messages
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kvbench_common::record::Outcome;

    use super::*;

    #[test]
    pub(crate) fn a_record_puts_the_reply_on_the_rounds_clock() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let reply = request::Reply {
            sent: at(100),
            first_byte: Some(at(140)),
            first_token: Some(at(150)),
            chunks: vec![at(150), at(160), at(175)],
            end: at(180),
            prompt_tokens: Some(40),
            output_tokens: Some(3),
            cached_tokens: Some(16),
            cached_tokens_details: None,
            finish_reason: "length".into(),
            outcome: Outcome::Ok,
            error: String::new(),
            http_status: Some(200),
            text: "a b c".into(),
            engine_ttft_us: Some(45_500),
            retried: true,
        };
        let ctx = RecordContext {
            scenario: "s",
            round: 2,
            agent: "a",
            request_id: 7,
            conversation_id: 3,
            turn: 1,
            warmup: false,
            shared: Some(Shared {
                first_touch: true,
                tokens: 0,
                cold_tokens: 0,
                group: Some(7),
                perfect: Some(PerfectShare { tokens: 20, of: 50 }),
            }),
            t0,
            scheduled: at(90),
            queue_ms: 10.0,
            prompt_tokens_client: 38,
        };
        let r = build_record(&ctx, &reply);
        assert_eq!(
            (r.scenario.as_str(), r.round, r.agent.as_str()),
            ("s", 2, "a")
        );
        assert_eq!((r.request_id, r.conversation_id, r.turn), (7, 3, 1));
        assert_eq!(r.scheduled_ms, 90.0);
        assert_eq!(r.sent_ms, 100.0);
        assert_eq!(r.first_byte_ms, Some(140.0));
        assert_eq!(r.first_token_ms, Some(150.0));
        assert_eq!(
            r.chunk_offsets_ms,
            vec![50.0, 60.0, 75.0],
            "relative to sent"
        );
        assert_eq!(r.end_ms, 180.0);
        assert_eq!(r.output_chunks, 3);
        assert_eq!(r.engine_ttft_ms, Some(45.5));
        assert_eq!(r.ttft_ms(), Some(50.0));
        assert!(r.first_touch && r.retried);
        assert_eq!(r.shared_prefix_tokens, Some(0));
        assert_eq!(
            r.perfect_prefix_tokens,
            Some(16),
            "20 of the agent's 50 tokens: 16 of the engine's 40"
        );
        assert_eq!(r.http_status, Some(200));
    }

    #[test]
    pub(crate) fn a_request_stopped_in_flight_is_a_cancelled_record() {
        // The request went out 5 ms after the round's zero, 50 ms ago.
        let t0 = Instant::now() - Duration::from_millis(55);
        let reply = request::Reply::cancelled(t0 + Duration::from_millis(5));
        let ctx = RecordContext {
            scenario: "s",
            round: 1,
            agent: "a",
            request_id: 0,
            conversation_id: 0,
            turn: 0,
            warmup: false,
            shared: None,
            t0,
            scheduled: t0,
            queue_ms: 0.0,
            prompt_tokens_client: 10,
        };
        let r = build_record(&ctx, &reply);
        assert_eq!(r.outcome, Outcome::Cancelled);
        assert_eq!(r.sent_ms, 5.0);
        assert!(r.end_ms >= r.sent_ms);
        assert!(r.first_token_ms.is_none());
    }

    #[test]
    pub(crate) fn opening_messages_are_the_system_prompt_then_the_prefix() {
        let conv = Conversation {
            id: 0,
            first_request_id: 0,
            system: Some("sys".into()),
            user_turns: vec!["u".into()],
            max_tokens: vec![1],
            think_time_ms: 0,
            prefix: vec![("assistant".into(), "earlier".into())],
            due_ms: None,
        };
        assert_eq!(
            opening_messages(&conv),
            vec![
                ("system".to_owned(), "sys".to_owned()),
                ("assistant".to_owned(), "earlier".to_owned())
            ]
        );
    }
}
