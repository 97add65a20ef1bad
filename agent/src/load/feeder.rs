//! Hands out a round's conversations: its request set (this agent's share of it), or, for
//! a round limited by duration, pool after pool of fresh ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kvbench_common::agent::Share;
use kvbench_common::tokenizer::TokenCounter;
use kvbench_common::workload::{generate_pool, Conversation, WorkloadSpec};

use super::RoundSpec;

/// Hands out the round's conversations: the request set, or (for a round limited by
/// duration) pool after pool of fresh ones.
pub(crate) struct Feeder {
    pub(crate) workload: WorkloadSpec,
    pub(crate) counter: Arc<dyn TokenCounter>,
    pub(crate) round: u32,
    pub(crate) endless: bool,
    pub(crate) pool: u32,
    pub(crate) next_id: u32,
    pub(crate) next_conv: u32,
    pub(crate) queue: VecDeque<Conversation>,
    pub(crate) share: Option<Share>,
}

impl Feeder {
    /// Conversations and requests of the first request set (generating it if needed).
    pub(crate) fn request_set(&mut self) -> (u32, u32) {
        self.fill();
        let requests = self.queue.iter().map(|c| c.user_turns.len() as u32).sum();
        (self.queue.len() as u32, requests)
    }

    /// Generates the next pool when the queue is empty and one is due.
    pub(crate) fn fill(&mut self) {
        if self.queue.is_empty() && (self.pool == 0 || self.endless) {
            let w = generate_pool(
                &self.workload,
                self.round,
                self.pool,
                self.next_id,
                self.next_conv,
                &*self.counter,
            );
            self.pool += 1;
            self.next_id += w.total_requests();
            let first = self.next_conv;
            self.next_conv += w.conversations.len() as u32;
            let share = self.share;
            self.queue.extend(
                w.conversations
                    .into_iter()
                    .zip(first..)
                    .filter(|(_, at)| share.is_none_or(|s| s.owns(*at)))
                    .map(|(c, _)| c),
            );
        }
    }

    pub(crate) fn next(&mut self) -> Option<Conversation> {
        self.fill();
        self.queue.pop_front()
    }
}

/// Hands out a round's conversations: its request set (this agent's share of it), or
/// (for a round limited by duration) pool after pool of fresh ones.
pub(crate) fn feeder(spec: &RoundSpec) -> Arc<Mutex<Feeder>> {
    let share = spec.request.share;
    let dataset: VecDeque<Conversation> = spec
        .dataset
        .iter()
        .flatten()
        .zip(0u32..)
        .filter(|(_, at)| share.is_none_or(|s| s.owns(*at)))
        .map(|(c, _)| c.clone())
        .collect();
    Arc::new(Mutex::new(Feeder {
        workload: spec.request.workload.clone(),
        counter: spec.counter.clone(),
        round: spec.request.round,
        endless: spec.request.load.duration_s.is_some() && spec.dataset.is_none(),
        // A dataset is the whole request set: no generated pool follows it.
        pool: u32::from(spec.dataset.is_some()),
        next_id: 0,
        next_conv: 0,
        queue: dataset,
        share,
    }))
}
