//! Round 1's replies, kept per scenario run so that later rounds resend the same
//! conversation history.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// One scenario run's replies by `(conversation, turn)`.
pub(crate) type Replies = HashMap<(u32, u32), String>;

/// Round 1's replies per scenario run, so that later rounds resend the same history.
#[derive(Debug, Default)]
pub struct ReplyStore {
    pub(crate) inner: Mutex<(HashMap<String, Replies>, VecDeque<String>)>,
}

/// Scenario runs whose replies are kept (oldest dropped first).
pub(crate) const KEPT_SCENARIOS: usize = 32;

impl ReplyStore {
    pub(crate) fn put(&self, scenario: &str, key: (u32, u32), text: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if !map.contains_key(scenario) {
            order.push_back(scenario.to_owned());
            if order.len() > KEPT_SCENARIOS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        map.entry(scenario.to_owned())
            .or_default()
            .insert(key, text);
    }

    pub(crate) fn get(&self, scenario: &str, key: (u32, u32)) -> Option<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(scenario).and_then(|m| m.get(&key)).cloned()
    }
}
