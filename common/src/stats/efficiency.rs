//! Hits against a perfect cache: for each round, the hit ratio a perfect prefix cache
//! (unbounded, never evicting, the engine's block size) would have given the requests as
//! they were sent ([`crate::record::RequestRecord::perfect_prefix_tokens`]), and the
//! round's measured hits over it: the cache's **efficiency**. Under
//! [`EFFICIENT`] the round says where the shortfall is, from what the engine reported.

use serde::{Deserialize, Serialize};

use crate::prefix_cache::perfect_hit_tokens;
use crate::record::{Outcome, RequestRecord};

/// Under this efficiency, a round's shortfall is explained ([`Shortfall`]).
pub const EFFICIENT: f64 = 0.9;

/// KV usage from which an engine's cache counts as full (vLLM's `kv_cache_usage_perc`).
pub const KV_FULL: f64 = 0.95;

/// A round's hits against a perfect cache's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEfficiency {
    /// Completed requests counted: those with a perfect-cache share (and, with `from:
    /// requests`, a cached-token count).
    pub requests: u32,
    /// Their prompt tokens (the engine's count).
    pub prompt_tokens: u64,
    /// What the engine reused of them: their cached tokens, or its prefix-cache counters
    /// over the round where it reports no cached tokens per request (`from`).
    pub cached_tokens: u64,
    pub from: HitSource,
    /// What a perfect cache would have given them, in whole blocks of `block_tokens`.
    pub perfect_hit_tokens: u64,
    pub block_tokens: u32,
    /// `cached_tokens / prompt_tokens`.
    pub hit_ratio: f64,
    /// `perfect_hit_tokens / prompt_tokens`.
    pub perfect_hit_ratio: f64,
    /// `cached_tokens / perfect_hit_tokens`; null when a perfect cache would have given
    /// nothing. Above 1 when the engine reused what a cold-at-the-scenario's-start cache
    /// could not have held (a cache that was not cold, or one that caches replies too).
    pub efficiency: Option<f64>,
    /// Prompt tokens a perfect cache would have computed this round (its prompts less what
    /// it held of them): what the round added to the working set.
    pub computed_tokens: u64,
    /// Why the efficiency is under [`EFFICIENT`], as far as the engine's figures say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortfall: Vec<Shortfall>,
}

/// Where [`CacheEfficiency::cached_tokens`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HitSource {
    /// The requests' own `cached_tokens`.
    Requests,
    /// The engine's prefix-cache hit counter over the round.
    Counters,
}

/// A cause of a round's shortfall against a perfect cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Shortfall {
    /// The engine's KV cache holds fewer tokens than the scenario's prompts had needed
    /// by the end of this round: it had to evict what later requests would have reused.
    CacheTooSmall {
        capacity_tokens: u64,
        working_set_tokens: u64,
    },
    /// The engine's KV cache was full during the round (usage at or above [`KV_FULL`]), or
    /// it preempted requests: blocks were evicted under pressure.
    KvFull {
        peak_usage: Option<f64>,
        preemptions: Option<f64>,
    },
    /// Nothing the engine reported explains it: it reused less than it could have without
    /// evicting (a block size or template other than the agent assumed, requests admitted
    /// before a shared prefix was cached, or a cache that does not keep every prefix).
    Unexplained,
}

impl Shortfall {
    /// A few words for a table cell.
    pub fn cause(&self) -> &'static str {
        match self {
            Shortfall::CacheTooSmall { .. } => "cache too small",
            Shortfall::KvFull { .. } => "KV cache full",
            Shortfall::Unexplained => "unexplained",
        }
    }

    /// One line for people.
    pub fn line(&self) -> String {
        match self {
            Shortfall::CacheTooSmall {
                capacity_tokens,
                working_set_tokens,
            } => format!(
                "cache too small: the engine's KV cache holds {capacity_tokens} tokens, the scenario's prompts needed {working_set_tokens} by then, so it evicted what later requests would have reused"
            ),
            Shortfall::KvFull {
                peak_usage,
                preemptions,
            } => {
                let mut parts = Vec::new();
                if let Some(u) = peak_usage.filter(|u| *u >= KV_FULL) {
                    parts.push(format!("KV cache usage reached {:.0} %", u * 100.0));
                }
                if let Some(p) = preemptions.filter(|p| *p > 0.0) {
                    parts.push(format!("{p:.0} requests were preempted"));
                }
                format!(
                    "evictions under pressure: {} while the round ran",
                    parts.join(" and ")
                )
            }
            Shortfall::Unexplained => "no eviction shows in the engine's figures: it reused less than it held (a block size or chat template other than assumed, or requests admitted before a shared prefix was cached)".to_owned(),
        }
    }
}

/// What a round's efficiency needs, added record by record: sums, and the requests by
/// what a perfect cache could give them before whole blocks are counted (the block size is
/// known once the round ended), so that it grows with the prompts' lengths, not their number.
#[derive(Debug, Clone, Default)]
pub struct EfficiencyAccumulator {
    /// Requests by their perfect share, at most their prompt less its last token.
    by_share: std::collections::BTreeMap<u32, u64>,
    requests: u32,
    prompt_tokens: u64,
    computed_tokens: u64,
    cached_tokens: u64,
    /// Counted requests without a cached-token count.
    without_cached: u32,
    /// Completed measured requests without a perfect-cache share.
    without_share: u32,
}

impl EfficiencyAccumulator {
    /// Takes a record; warmups and failed requests count nowhere.
    pub fn add(&mut self, r: &RequestRecord) {
        if r.warmup || r.outcome != Outcome::Ok {
            return;
        }
        let Some(p) = r.perfect_prefix_tokens else {
            self.without_share += 1;
            return;
        };
        let prompt = r.input_tokens();
        // The largest whole-token share; whole blocks are taken of it at the end.
        *self
            .by_share
            .entry(perfect_hit_tokens(p, prompt, 1))
            .or_insert(0) += 1;
        self.requests += 1;
        self.prompt_tokens += u64::from(prompt);
        self.computed_tokens += u64::from(prompt.saturating_sub(p));
        match r.cached_tokens {
            Some(c) => self.cached_tokens += u64::from(c),
            None => self.without_cached += 1,
        }
    }

    /// The round's efficiency on an engine caching `block`-token blocks; `counter_hits`
    /// is the engine's prefix-cache hits over the round, used when its requests reported no
    /// cached tokens. None when some completed request had no perfect-cache share (an
    /// older agent, a perfect cache that overflowed) or nothing says what the engine reused.
    pub fn finish(&self, block: u32, counter_hits: Option<f64>) -> Option<CacheEfficiency> {
        if self.requests == 0 || self.without_share > 0 {
            return None;
        }
        let block = block.max(1);
        let prompt_tokens = self.prompt_tokens;
        let perfect: u64 = self
            .by_share
            .iter()
            .map(|(share, n)| u64::from(share / block * block) * n)
            .sum();
        let computed = self.computed_tokens;
        let (cached, from) = if self.without_cached == 0 {
            (self.cached_tokens, HitSource::Requests)
        } else {
            let hits = counter_hits.filter(|h| h.is_finite() && *h >= 0.0)?;
            (hits.round() as u64, HitSource::Counters)
        };
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        Some(CacheEfficiency {
            requests: self.requests,
            prompt_tokens,
            cached_tokens: cached,
            from,
            perfect_hit_tokens: perfect,
            block_tokens: block,
            hit_ratio: ratio(cached, prompt_tokens),
            perfect_hit_ratio: ratio(perfect, prompt_tokens),
            efficiency: (perfect > 0).then(|| cached as f64 / perfect as f64),
            computed_tokens: computed,
            shortfall: Vec::new(),
        })
    }
}

/// What the engine said of one round, for [`explain`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineFigures {
    /// Tokens its KV cache holds (blocks times block size), where it says.
    pub capacity_tokens: Option<u64>,
    /// Its highest KV usage over the round (1 = full).
    pub peak_usage: Option<f64>,
    pub preemptions: Option<f64>,
}

/// Fills in each inefficient round's shortfall: `rounds` are a scenario's rounds in order,
/// each with its efficiency and what its engine said. The working set grows round by round
/// (an engine's cache is not cleared between them).
pub fn explain(rounds: &mut [(Option<&mut CacheEfficiency>, EngineFigures)]) {
    let mut working_set = 0u64;
    for (eff, engine) in rounds.iter_mut() {
        let Some(eff) = eff else { continue };
        working_set += eff.computed_tokens;
        eff.shortfall.clear();
        if eff.efficiency.is_none_or(|e| e >= EFFICIENT) {
            continue;
        }
        if let Some(cap) = engine.capacity_tokens.filter(|c| *c < working_set) {
            eff.shortfall.push(Shortfall::CacheTooSmall {
                capacity_tokens: cap,
                working_set_tokens: working_set,
            });
        }
        let full = engine.peak_usage.is_some_and(|u| u >= KV_FULL);
        let preempted = engine.preemptions.is_some_and(|p| p > 0.0);
        if full || preempted {
            eff.shortfall.push(Shortfall::KvFull {
                peak_usage: engine.peak_usage,
                preemptions: engine.preemptions,
            });
        }
        if eff.shortfall.is_empty() {
            eff.shortfall.push(Shortfall::Unexplained);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(perfect: Option<u32>, prompt: u32, cached: Option<u32>) -> RequestRecord {
        RequestRecord {
            perfect_prefix_tokens: perfect,
            prompt_tokens: Some(prompt),
            cached_tokens: cached,
            ..RequestRecord::for_test(0, 0.0, 10.0, 20.0)
        }
    }

    #[test]
    fn efficiency_is_measured_hits_over_whole_perfect_blocks() {
        let mut a = EfficiencyAccumulator::default();
        a.add(&rec(Some(0), 100, Some(0)));
        a.add(&rec(Some(100), 100, Some(96)));
        a.add(&rec(Some(70), 100, Some(32)));
        let mut failed = rec(Some(100), 100, Some(0));
        failed.outcome = Outcome::Reset;
        a.add(&failed);
        let e = a.finish(16, None).expect("a figure");
        // 100 shared of 100: 99 at most, 6 blocks; 70 shared: 4 blocks.
        assert_eq!(e.perfect_hit_tokens, 96 + 64);
        assert_eq!(e.cached_tokens, 128);
        assert_eq!(e.requests, 3, "the failed request is not counted");
        assert_eq!(e.efficiency, Some(128.0 / 160.0));
        assert_eq!(e.computed_tokens, 100 + 30);
        assert_eq!(e.from, HitSource::Requests);
        assert!((e.perfect_hit_ratio - 160.0 / 300.0).abs() < 1e-12);
    }

    #[test]
    fn counters_stand_in_for_unreported_cached_tokens_and_a_missing_share_voids_it() {
        let mut a = EfficiencyAccumulator::default();
        a.add(&rec(Some(64), 100, None));
        assert_eq!(a.finish(16, None), None, "nothing says what was reused");
        let e = a.finish(16, Some(32.0)).expect("from the counters");
        assert_eq!((e.cached_tokens, e.from), (32, HitSource::Counters));
        a.add(&rec(None, 100, Some(0)));
        assert_eq!(a.finish(16, Some(32.0)), None, "an older agent");
        assert_eq!(
            EfficiencyAccumulator::default().finish(16, None),
            None,
            "nothing completed"
        );
    }

    #[test]
    fn a_shortfall_names_a_cache_smaller_than_the_working_set_or_a_full_one() {
        let eff = |e: f64, computed: u64| CacheEfficiency {
            requests: 1,
            prompt_tokens: 1000,
            cached_tokens: 0,
            from: HitSource::Requests,
            perfect_hit_tokens: 100,
            block_tokens: 16,
            hit_ratio: 0.0,
            perfect_hit_ratio: 0.1,
            efficiency: Some(e),
            computed_tokens: computed,
            shortfall: Vec::new(),
        };
        let (mut r1, mut r2, mut r3) = (eff(0.5, 600), eff(0.5, 600), eff(0.95, 10));
        let small = EngineFigures {
            capacity_tokens: Some(1000),
            ..EngineFigures::default()
        };
        explain(&mut [
            (Some(&mut r1), small),
            (Some(&mut r2), small),
            (Some(&mut r3), small),
        ]);
        assert_eq!(
            r1.shortfall,
            vec![Shortfall::Unexplained],
            "600 fit in 1000"
        );
        assert_eq!(
            r2.shortfall,
            vec![Shortfall::CacheTooSmall {
                capacity_tokens: 1000,
                working_set_tokens: 1200
            }]
        );
        assert!(r3.shortfall.is_empty(), "efficient");
        let mut r = eff(0.2, 10);
        let full = EngineFigures {
            peak_usage: Some(0.97),
            preemptions: Some(3.0),
            ..EngineFigures::default()
        };
        explain(&mut [(Some(&mut r), full)]);
        assert!(r.shortfall[0].line().contains("97 %"));
        assert!(r.shortfall[0].line().contains("3 requests were preempted"));
    }
}
