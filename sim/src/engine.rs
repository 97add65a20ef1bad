//! The simulated engine: admission queue, prefix cache, prefill lane and decode timing.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kvbench_common::rng::Rng;
use kvbench_common::tokenizer::{tokenize, WORDS};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{block_hashes, PrefixCache};
use crate::SimConfig;

/// Counters and gauges exported at `/metrics` under vLLM's names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineCounters {
    /// `vllm:prefix_cache_queries_total`: prompt tokens looked up in the cache.
    pub prefix_cache_queries: u64,
    /// `vllm:prefix_cache_hits_total`: prompt tokens found in the cache.
    pub prefix_cache_hits: u64,
    /// `vllm:prompt_tokens_total`
    pub prompt_tokens: u64,
    /// `vllm:generation_tokens_total`
    pub generation_tokens: u64,
    /// `vllm:request_success_total`: requests that produced all their tokens.
    pub request_success: u64,
    /// Generation requests received (parsed), whatever became of them.
    pub requests_received: u64,
    /// `vllm:num_requests_running`
    pub running: u64,
    /// `vllm:num_requests_waiting`
    pub waiting: u64,
    /// Most requests running at once since start.
    pub max_running: u64,
}

#[derive(Debug)]
struct State {
    cache: PrefixCache,
    counters: EngineCounters,
}

/// One simulated engine (shared by all connections).
#[derive(Debug)]
pub struct Engine {
    pub config: SimConfig,
    state: Mutex<State>,
    slots: Arc<Semaphore>,
    prefill_lane: tokio::sync::Mutex<()>,
}

impl Engine {
    pub fn new(config: SimConfig) -> Self {
        let cache = PrefixCache::new(config.block_size, config.num_blocks);
        let slots = Arc::new(Semaphore::new(config.max_num_seqs.max(1)));
        Engine {
            config,
            state: Mutex::new(State {
                cache,
                counters: EngineCounters::default(),
            }),
            slots,
            prefill_lane: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated in a way
        // that matters to a simulator: keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> EngineCounters {
        self.lock().counters.clone()
    }

    /// `(blocks held by running requests, capacity, usage share, blocks cached)`.
    pub fn cache_usage(&self) -> (usize, usize, f64, usize) {
        let s = self.lock();
        (
            s.cache.held(),
            s.cache.capacity(),
            s.cache.usage(),
            s.cache.len(),
        )
    }

    /// `POST /reset_prefix_cache`: false while running requests hold blocks.
    pub fn reset_prefix_cache(&self) -> bool {
        self.lock().cache.reset()
    }

    /// Queues a prompt until a slot is free, then looks its prefix up in the cache.
    pub async fn admit(self: &Arc<Self>, prompt: &str) -> Running {
        let tokens = tokenize(prompt);
        let hashes = block_hashes(&tokens, self.config.block_size);
        let seed = tokens.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, t| {
            (h ^ u64::from(*t)).wrapping_mul(0x100_0000_01b3)
        });
        {
            let mut s = self.lock();
            s.counters.requests_received += 1;
            s.counters.waiting += 1;
        }
        // The semaphore is never closed, so this only waits.
        let permit = self.slots.clone().acquire_owned().await.ok();
        let mut s = self.lock();
        s.counters.waiting -= 1;
        s.counters.running += 1;
        s.counters.max_running = s.counters.max_running.max(s.counters.running);
        let hits = if self.config.no_prefix_caching {
            0
        } else {
            s.cache.lookup_and_hold(&hashes, tokens.len())
        };
        let cached_tokens = (hits * self.config.block_size) as u32;
        s.counters.prefix_cache_queries += tokens.len() as u64;
        s.counters.prefix_cache_hits += u64::from(cached_tokens);
        s.counters.prompt_tokens += tokens.len() as u64;
        drop(s);
        Running {
            engine: self.clone(),
            _permit: permit,
            hashes,
            held: hits,
            prompt_tokens: tokens.len() as u32,
            cached_tokens,
            seed,
        }
    }

    fn decode_step(&self) -> Duration {
        let running = self.lock().counters.running as f64;
        let ms = self.config.decode_base_ms + self.config.decode_per_seq_us * running / 1000.0;
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

/// A request holding a running slot and cache blocks; dropping it frees both.
#[derive(Debug)]
pub struct Running {
    engine: Arc<Engine>,
    _permit: Option<OwnedSemaphorePermit>,
    hashes: Vec<u64>,
    /// Leading blocks of `hashes` this request holds.
    held: usize,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    seed: u64,
}

impl Running {
    /// Computes the uncached part of the prompt (one prefill at a time), then registers
    /// the computed blocks in the cache.
    pub async fn prefill(&mut self) {
        let cfg = &self.engine.config;
        let uncached = self.prompt_tokens.saturating_sub(self.cached_tokens);
        let ms = cfg.prefill_base_ms + cfg.prefill_per_token_us * f64::from(uncached) / 1000.0;
        {
            let _lane = self.engine.prefill_lane.lock().await;
            tokio::time::sleep(Duration::from_secs_f64(ms.max(0.0) / 1000.0)).await;
        }
        if !self.engine.config.no_prefix_caching {
            let mut s = self.engine.lock();
            let n = s.cache.insert_and_hold(&self.hashes[self.held..]);
            self.held += n;
        }
    }

    /// The duration of the next decode step, given how many requests run now.
    pub fn decode_step(&self) -> Duration {
        self.engine.decode_step()
    }

    /// The `i`-th output token (deterministic for the prompt).
    pub fn token(&self, i: u32) -> &'static str {
        let mut r = Rng::derive(self.seed, &[u64::from(i)]);
        WORDS[r.below(WORDS.len() as u64) as usize]
    }

    /// Counts a request that produced all its tokens.
    pub fn finish(&self, output_tokens: u32) {
        let mut s = self.engine.lock();
        s.counters.request_success += 1;
        s.counters.generation_tokens += u64::from(output_tokens);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut s = self.engine.lock();
        s.cache.release(&self.hashes[..self.held]);
        s.counters.running -= 1;
    }
}
