//! Runs conversations of a round, turn by turn, and streams their records.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kvbench_common::agent::RoundEvent;
use kvbench_common::plan::ApiFlavor;
use kvbench_common::prefix_cache::{head, render, token_hashes, Share};
use kvbench_common::record::Outcome;
use kvbench_common::tokenizer::{completion_prompt, render_chat};
use kvbench_common::workload::Conversation;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::record::{
    build_record, ms_since, opening_messages, PerfectShare, RecordContext, Shared,
};
use super::request::{Call, OnFirstToken};
use super::schedule::Round;
use super::{request, Probe};
use crate::telemetry::host as health;

/// Runs conversations of its round and streams their records.
pub(crate) struct Runner {
    pub(crate) round: Arc<Round>,
    pub(crate) warmup: bool,
}

impl Runner {
    /// Runs one conversation's turns in order; false when the round is cancelled. The
    /// first turn was due at `first_due` (open loop); every turn waits for a slot of `cap`.
    pub(crate) async fn conversation(
        &self,
        conv: Conversation,
        first_due: Option<Instant>,
        cap: Option<Arc<Semaphore>>,
    ) -> bool {
        let mut messages = opening_messages(&conv);
        for (t, user) in conv.user_turns.iter().enumerate() {
            messages.push(("user".into(), user.clone()));
            if t > 0 && !self.think(conv.think_time_ms).await {
                return false;
            }
            let scheduled = match first_due {
                Some(due) if t == 0 => due,
                _ => Instant::now(),
            };
            // queue_ms is the wait for a slot alone; a release that came late shows as
            // sent_ms - scheduled_ms - queue_ms, never as queueing.
            let waiting = Instant::now();
            let Some(_permit) = self.slot(cap.as_ref()).await else {
                return false;
            };
            let queue_ms = ms_since(waiting, Instant::now());
            let (reply, shared) = self.send(&messages, &conv, t).await;
            let cancelled = reply.outcome == Outcome::Cancelled;
            let record = build_record(
                &RecordContext {
                    scenario: &self.round.spec.request.scenario_name,
                    round: self.round.spec.request.round,
                    agent: &self.round.ctx.agent_name,
                    request_id: conv.first_request_id + t as u32,
                    conversation_id: conv.id,
                    turn: t as u32,
                    warmup: self.warmup,
                    shared,
                    t0: self.round.t0,
                    scheduled,
                    queue_ms,
                    prompt_tokens_client: messages
                        .iter()
                        .map(|(_, c)| self.round.spec.counter.count(c) as u32)
                        .sum(),
                },
                &reply,
            );
            if self
                .round
                .tx
                .send(RoundEvent::Record(record))
                .await
                .is_err()
            {
                self.round.cancel.cancel();
                return false;
            }
            if cancelled {
                return false;
            }
            if t + 1 < conv.user_turns.len() {
                let text = self.history_reply(conv.id, t as u32, reply.text);
                messages.push(("assistant".into(), text));
                if !self.warmup {
                    // The engine has processed the reply too: the next turn may reuse it.
                    if let Ok(mut p) = self.round.counts.prefixes.lock() {
                        p.insert(&render(&messages), conv.first_request_id + t as u32);
                    }
                }
            }
        }
        true
    }

    /// Waits between turns; false when the round is cancelled meanwhile.
    pub(crate) async fn think(&self, think_time_ms: u32) -> bool {
        if think_time_ms == 0 {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::from(think_time_ms))) => true,
            _ = self.round.cancel.cancelled() => false,
        }
    }

    /// A slot of `cap` (no cap: at once); None when the round is cancelled meanwhile.
    pub(crate) async fn slot(
        &self,
        cap: Option<&Arc<Semaphore>>,
    ) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        match cap {
            None => Some(None),
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => Some(p.ok()),
                _ = self.round.cancel.cancelled() => None,
            },
        }
    }

    /// Sends one turn and counts it; the reply, and what its prompt shares with those sent
    /// before it (None for warmups). A request the run stops while it is in flight gets a
    /// reply with outcome `cancelled`, so that it is recorded, not lost.
    pub(crate) async fn send(
        &self,
        messages: &[(String, String)],
        conv: &Conversation,
        t: usize,
    ) -> (request::Reply, Option<Shared>) {
        let spec = &*self.round.spec;
        let (hashes, perfect) = self.perfect_share(messages);
        let cache = &self.round.ctx.perfect;
        // Once its first token is back the engine has the prompt's blocks: later requests
        // may reuse them.
        let prefilled = || {
            if let Ok(mut c) = cache.lock() {
                c.insert(&hashes);
            }
        };
        let call = Call {
            base_url: &self.round.ctx.base_url,
            api: spec.request.api,
            model: &spec.request.model,
            messages,
            max_tokens: conv
                .max_tokens
                .get(t)
                .copied()
                .unwrap_or(spec.request.workload.output_tokens),
            enforce_output_length: spec.request.enforce_output_length,
            ttft_timeout: Duration::from_secs_f64(spec.request.load.ttft_timeout_s),
            idle_timeout: Duration::from_secs_f64(spec.request.load.idle_timeout_s),
            on_first_token: Some(OnFirstToken(&prefilled)),
            cache_details: self.round.ctx.cache_details,
        };
        let id = conv.first_request_id + t as u32;
        let measured = (!self.warmup).then(|| self.before_send(messages, id));
        let sent = Instant::now();
        let reply = tokio::select! {
            r = request::send(&self.round.ctx.client, &call) => r,
            _ = self.round.cancel.cancelled() => request::Reply::cancelled(sent),
        };
        if !self.warmup {
            self.after_send(&reply);
        }
        self.round.ctx.watch.saw(&self.round, reply.outcome);
        let shared = measured.map(|(text, cold)| Shared {
            perfect,
            ..self.shared(&text, cold)
        });
        (reply, shared)
    }

    /// The prompt of `messages` as the engine renders it, as prefix hashes of its tokens
    /// (the agent's tokenizer), and what the perfect cache holds of it now (none once the
    /// cache overflowed).
    fn perfect_share(&self, messages: &[(String, String)]) -> (Vec<u64>, Option<PerfectShare>) {
        let text = match self.round.spec.request.api {
            ApiFlavor::Chat => render_chat(messages.iter().map(|(r, c)| (r.as_str(), c.as_str()))),
            ApiFlavor::Completions => completion_prompt(messages),
        };
        let hashes = token_hashes(&self.round.spec.counter.ids(&text));
        let share = self.round.ctx.perfect.lock().ok().and_then(|c| {
            (!c.overflowed()).then(|| PerfectShare {
                tokens: c.shared(&hashes) as u32,
                of: hashes.len() as u32,
            })
        });
        (hashes, share)
    }

    /// What a prompt shares with the others of the round: sent before it ended, and (`cold`)
    /// in the order sent (see [`kvbench_common::prefix_cache`]).
    pub(crate) fn shared(&self, text: &str, cold: Share) -> Shared {
        let bytes = self
            .round
            .counts
            .prefixes
            .lock()
            .map(|p| p.shared_bytes(text, 2))
            .unwrap_or(0);
        let tokens = |bytes: usize| -> u32 {
            if bytes == 0 {
                0
            } else {
                self.round.spec.counter.count(head(text, bytes)) as u32
            }
        };
        let shared_tokens = tokens(bytes);
        Shared {
            first_touch: bytes == 0,
            tokens: shared_tokens,
            // Mostly the same prefix: counted once.
            cold_tokens: if cold.bytes == bytes {
                shared_tokens
            } else {
                tokens(cold.bytes)
            },
            group: cold.group,
            perfect: None,
        }
    }

    /// Counts a measured request in flight, keeps the round's first prompt for the next
    /// cold check, and registers the prompt as sent by request `id`; its rendered text and
    /// what it shares, in the order sent, with the texts sent before it.
    pub(crate) fn before_send(&self, messages: &[(String, String)], id: u32) -> (String, Share) {
        let spec = &*self.round.spec;
        self.round.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let text = render(messages);
        let mut cold = Share::default();
        if let Ok(mut p) = self.round.counts.prefixes.lock() {
            cold = p.send(&text, id);
        }
        if !self.round.counts.probe_taken.swap(true, Ordering::Relaxed) {
            if let Ok(mut p) = self.round.ctx.probe.lock() {
                *p = Some(Probe {
                    messages: messages.to_vec(),
                    api: spec.request.api,
                    model: spec.request.model.clone(),
                });
            }
        }
        (text, cold)
    }

    pub(crate) fn after_send(&self, reply: &request::Reply) {
        self.round.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        let counter = if reply.outcome == Outcome::Ok {
            &self.round.counts.completed
        } else {
            &self.round.counts.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let gaps = reply.chunks.len().saturating_sub(1) as u64;
        let coalesced = reply
            .chunks
            .windows(2)
            .filter(|w| w[1].saturating_duration_since(w[0]) < health::COALESCED_GAP)
            .count() as u64;
        self.round.counts.gaps.fetch_add(gaps, Ordering::Relaxed);
        self.round
            .counts
            .coalesced_gaps
            .fetch_add(coalesced, Ordering::Relaxed);
    }

    /// The text that goes into the history after turn `turn`: the engine's reply in round
    /// 1; round 1's reply in later rounds, so that every round sends identical prompts.
    pub(crate) fn history_reply(&self, conv: u32, turn: u32, text: String) -> String {
        let key = (conv, turn);
        if self.round.spec.request.round == 1 {
            self.round
                .ctx
                .replies
                .put(&self.round.spec.request.scenario_id, key, text.clone());
            text
        } else {
            self.round
                .ctx
                .replies
                .get(&self.round.spec.request.scenario_id, key)
                .unwrap_or(text)
        }
    }
}
