//! The perfect prefix cache each scenario run is measured against: one per scenario run,
//! kept across its rounds (an engine's cache is not cleared between them), fed each prompt
//! once its prefill is done (see [`kvbench_common::prefix_cache::TokenPrefixes`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kvbench_common::prefix_cache::TokenPrefixes;

/// One scenario run's perfect cache, shared by its requests.
pub type PerfectCache = Arc<Mutex<TokenPrefixes>>;

/// The perfect caches of the latest scenario runs, by scenario id.
#[derive(Debug, Default)]
pub struct PerfectStore {
    inner: Mutex<VecDeque<(String, PerfectCache)>>,
}

/// Scenario runs whose perfect cache is kept (oldest dropped first): the one running, and
/// the one before it for a round that comes late.
const KEPT_SCENARIOS: usize = 2;

impl PerfectStore {
    /// Scenario run `scenario`'s perfect cache (empty when it is new).
    pub(crate) fn of(&self, scenario: &str) -> PerfectCache {
        let mut kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = kept.iter().find(|(id, _)| id == scenario) {
            return c.clone();
        }
        let c = PerfectCache::default();
        kept.push_back((scenario.to_owned(), c.clone()));
        while kept.len() > KEPT_SCENARIOS {
            kept.pop_front();
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_keeps_its_cache_across_rounds_and_old_ones_are_dropped() {
        let s = PerfectStore::default();
        let a = s.of("a");
        a.lock().unwrap().insert(&[1, 2]);
        assert_eq!(s.of("a").lock().unwrap().len(), 2, "the same cache");
        s.of("b");
        s.of("c");
        assert!(s.of("a").lock().unwrap().is_empty(), "dropped, then new");
    }
}
