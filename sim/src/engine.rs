//! The simulated engine: admission queue, prefix cache, prefill lane and decode timing.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kvbench_common::rng::Rng;
use kvbench_common::tokenizer::{tokenize, WORDS};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{block_hashes, PrefixCache};
use crate::SimConfig;

/// A fault the simulator injects into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// HTTP 500 before any token.
    Http5xx,
    /// HTTP 429 before any token.
    Http429,
    /// The connection is aborted mid-stream.
    Reset,
    /// A line that is not an SSE field, mid-stream.
    MalformedSse,
    /// An event whose data is not JSON, mid-stream.
    MalformedJson,
    /// No more bytes after the first tokens; the connection stays open.
    Stall,
}

impl Fault {
    /// The label at `/metrics`; also the agent's outcome class it should produce (a stall
    /// after the first token is an `idle_timeout` on the client).
    pub fn label(self) -> &'static str {
        match self {
            Fault::Http5xx => "http_5xx",
            Fault::Http429 => "http_429",
            Fault::Reset => "reset",
            Fault::MalformedSse => "malformed_sse",
            Fault::MalformedJson => "malformed_json",
            Fault::Stall => "stall",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Fault::Http5xx => "5xx",
            Fault::Http429 => "429",
            Fault::Reset => "reset",
            Fault::MalformedSse => "malformed-sse",
            Fault::MalformedJson => "malformed-json",
            Fault::Stall => "stall",
        }
    }

    /// Faults that only a streaming response can carry.
    pub fn needs_stream(self) -> bool {
        !matches!(self, Fault::Http5xx | Fault::Http429)
    }
}

/// Counters and gauges exported at `/metrics` under vLLM's names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineCounters {
    /// `vllm:prefix_cache_queries_total`: prompt tokens looked up in the cache.
    pub prefix_cache_queries: u64,
    /// `vllm:prefix_cache_hits_total`: prompt tokens found in the cache (the host tier's
    /// included).
    pub prefix_cache_hits: u64,
    /// Of them, those restored from the host tier (`--host-prompt-cache`; vLLM's
    /// `prompt_tokens_cached_by_source_total{source="host"}`).
    pub host_hits: u64,
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
    /// `vllm:external_prefix_cache_queries_total`: prompt tokens looked up in the offload
    /// tier (those past a prompt's device-cache hits).
    pub external_queries: u64,
    /// `vllm:external_prefix_cache_hits_total`: prompt tokens loaded from the offload tier.
    pub external_hits: u64,
    /// Prompt tokens that missed the cache only because their blocks had been evicted:
    /// blocks computed since the last reset, no longer cached when a prompt that shares
    /// them was admitted (what a cache large enough would have given).
    pub evicted_miss_tokens: u64,
    /// Faults injected, by kind.
    pub faults: std::collections::BTreeMap<Fault, u64>,
}

#[derive(Debug)]
struct State {
    cache: PrefixCache,
    /// `--host-prompt-cache`: hashes of blocks evicted from the cache into host memory,
    /// which a reset does not clear.
    host: std::collections::HashSet<u64>,
    /// Hashes of every block computed since the last reset, evicted or not.
    computed: std::collections::HashSet<u64>,
    /// `--offload-blocks`: the tier behind the KV connector.
    offload: Offload,
    counters: EngineCounters,
}

/// One simulated engine (shared by all connections).
#[derive(Debug)]
pub struct Engine {
    pub config: SimConfig,
    state: Mutex<State>,
    slots: Arc<Semaphore>,
    prefill_lane: tokio::sync::Mutex<()>,
    fault_seq: std::sync::atomic::AtomicU64,
    tokenizer: Option<kvbench_common::tokenizer::HfTokenizer>,
}

impl Engine {
    pub fn new(config: SimConfig) -> Self {
        let cache = PrefixCache::new(config.block_size, config.num_blocks);
        let slots = Arc::new(Semaphore::new(config.max_num_seqs.max(1)));
        let offload = Offload::new(config.offload_blocks);
        // validate() said why a tokenizer cannot be loaded; here it is left out.
        let tokenizer = config.load_tokenizer().ok().flatten();
        Engine {
            tokenizer,
            config,
            state: Mutex::new(State {
                cache,
                host: std::collections::HashSet::new(),
                computed: std::collections::HashSet::new(),
                offload,
                counters: EngineCounters::default(),
            }),
            slots,
            prefill_lane: tokio::sync::Mutex::new(()),
            fault_seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `text`'s tokens: in the `--tokenizer` given, else kvbench's.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .as_ref()
            .and_then(|t| t.ids(text))
            .unwrap_or_else(|| tokenize(text))
    }

    fn fixed_mode(&self) -> bool {
        self.config.fixed_ttft_ms.is_some() || self.config.fixed_itl_ms.is_some()
    }

    /// Draws the fault (if any) for the next generation request, and counts it. Stream
    /// faults are not drawn for non-streaming requests.
    pub fn draw_fault(&self, streaming: bool) -> Option<Fault> {
        let shares = self.config.fault_shares();
        if shares.iter().all(|(_, s)| *s <= 0.0) {
            return None;
        }
        let n = self
            .fault_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let u = Rng::derive(self.config.fault_seed, &[n]).unit();
        let mut acc = 0.0;
        let fault = shares.into_iter().find_map(|(f, share)| {
            acc += share;
            (u < acc).then_some(f)
        })?;
        if fault.needs_stream() && !streaming {
            return None;
        }
        *self.lock().counters.faults.entry(fault).or_insert(0) += 1;
        Some(fault)
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

    /// `POST /reset_prefix_cache[?reset_external=true]`: false while running requests hold
    /// blocks. The offload tier is cleared only with `reset_external` (as vLLM's connector
    /// tiers), and never with `--offload-keeps-on-reset`.
    pub fn reset_prefix_cache(&self, reset_external: bool) -> bool {
        if self.config.lying_reset {
            return true;
        }
        if self.config.refusing_reset {
            return false;
        }
        let mut s = self.lock();
        let reset = s.cache.reset();
        if reset {
            s.computed.clear();
            if reset_external && !self.config.offload_keeps_on_reset {
                s.offload.clear();
            }
        }
        reset
    }

    /// Queues a prompt until a slot is free, then looks its prefix up in the cache.
    pub async fn admit(self: &Arc<Self>, prompt: &str) -> Running {
        let tokens = self.tokens(prompt);
        let hashes = block_hashes(&tokens, self.config.block_size);
        let seed = reply_seed(&tokens);
        {
            let mut s = self.lock();
            s.counters.requests_received += 1;
            s.counters.waiting += 1;
        }
        // The semaphore is never closed, so this only waits. Fixed-latency mode has no
        // queue: every request runs at once.
        let permit = if self.fixed_mode() {
            None
        } else {
            self.slots.clone().acquire_owned().await.ok()
        };
        let mut s = self.lock();
        s.counters.waiting -= 1;
        s.counters.running += 1;
        s.counters.max_running = s.counters.max_running.max(s.counters.running);
        let hits = if self.config.no_prefix_caching || self.fixed_mode() {
            0
        } else {
            s.cache.lookup_and_hold(&hashes, tokens.len())
        };
        // The host tier keeps whole prompts: a block found there (its hash covers every
        // block before it) restores the prompt up to it, counted as cached though not held.
        let restored = if self.config.host_prompt_cache {
            let max = tokens.len().saturating_sub(1) / self.config.block_size;
            hashes
                .iter()
                .take(max)
                .rposition(|h| s.host.contains(h))
                .map_or(0, |i| (i + 1).saturating_sub(hits))
        } else {
            0
        };
        let max = tokens.len().saturating_sub(1) / self.config.block_size;
        // Past the device hits, the offload tier: its blocks are loaded, not computed.
        let loaded = if s.offload.is_on() && !self.config.no_prefix_caching && !self.fixed_mode() {
            let past = (hits * self.config.block_size).min(tokens.len());
            s.counters.external_queries += (tokens.len() - past) as u64;
            let n = s.offload.chain(&hashes[hits.min(max)..max]);
            s.counters.external_hits += (n * self.config.block_size) as u64;
            n
        } else {
            0
        };
        let cached_tokens = ((hits + restored + loaded) * self.config.block_size) as u32;
        let evicted = hashes
            .iter()
            .take(max)
            .skip(hits + restored + loaded)
            .take_while(|h| s.computed.contains(*h))
            .count();
        s.counters.evicted_miss_tokens += (evicted * self.config.block_size) as u64;
        let local_hits = cached_tokens - (loaded * self.config.block_size) as u32;
        s.counters.prefix_cache_queries += tokens.len() as u64;
        // vLLM counts its own prefix cache's hits apart from its connector's.
        s.counters.prefix_cache_hits += u64::from(local_hits);
        s.counters.host_hits += (restored * self.config.block_size) as u64;
        s.counters.prompt_tokens += tokens.len() as u64;
        drop(s);
        Running {
            engine: self.clone(),
            _permit: permit,
            created_cache_tokens: if self.config.no_prefix_caching {
                0
            } else {
                (hashes.len().saturating_sub(hits + restored + loaded) * self.config.block_size)
                    as u32
            },
            loaded_tokens: (loaded * self.config.block_size) as u32,
            hashes,
            held: hits,
            prompt_tokens: tokens.len() as u32,
            cached_tokens,
            seed,
        }
    }

    fn decode_step(&self) -> Duration {
        if let Some(ms) = self.config.fixed_itl_ms {
            return Duration::from_secs_f64(ms / 1000.0);
        }
        let running = self.lock().counters.running as f64;
        let ms = self.config.decode_base_ms + self.config.decode_per_seq_us * running / 1000.0;
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

/// The offload tier: block hashes, least recently used dropped first when full.
#[derive(Debug, Default)]
struct Offload {
    capacity: usize,
    tick: u64,
    used: std::collections::HashMap<u64, u64>,
    by_tick: std::collections::BTreeMap<u64, u64>,
}

impl Offload {
    fn new(capacity: usize) -> Offload {
        Offload {
            capacity,
            ..Offload::default()
        }
    }

    fn is_on(&self) -> bool {
        self.capacity > 0
    }

    fn touch(&mut self, h: u64) {
        self.tick += 1;
        if let Some(old) = self.used.insert(h, self.tick) {
            self.by_tick.remove(&old);
        }
        self.by_tick.insert(self.tick, h);
    }

    /// How many of `hashes`, from the first, it holds in a row (each then used).
    fn chain(&mut self, hashes: &[u64]) -> usize {
        let n = hashes
            .iter()
            .take_while(|h| self.used.contains_key(*h))
            .count();
        hashes[..n].iter().for_each(|h| self.touch(*h));
        n
    }

    fn store(&mut self, hashes: &[u64]) {
        if !self.is_on() {
            return;
        }
        for h in hashes {
            self.touch(*h);
        }
        while self.used.len() > self.capacity {
            let Some((_, h)) = self.by_tick.pop_first() else {
                break;
            };
            self.used.remove(&h);
        }
    }

    fn clear(&mut self) {
        self.used.clear();
        self.by_tick.clear();
    }
}

fn reply_seed(tokens: &[u32]) -> u64 {
    tokens.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, t| {
        (h ^ u64::from(*t)).wrapping_mul(0x100_0000_01b3)
    })
}

fn reply_token(seed: u64, i: u32) -> &'static str {
    let mut r = Rng::derive(seed, &[u64::from(i)]);
    WORDS[r.below(WORDS.len() as u64) as usize]
}

/// The text kvbench-sim replies to `prompt` (already rendered) with `n` tokens: what a
/// conversation's history holds after a turn against the sim.
pub fn reply_text(prompt: &str, n: u32) -> String {
    let seed = reply_seed(&tokenize(prompt));
    (0..n)
        .map(|i| reply_token(seed, i))
        .collect::<Vec<_>>()
        .join(" ")
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
    /// Full blocks of the prompt this request computed (not cached), in tokens.
    pub created_cache_tokens: u32,
    /// Tokens loaded from the offload tier.
    pub loaded_tokens: u32,
    seed: u64,
}

impl Running {
    /// Computes the uncached part of the prompt (one prefill at a time), then registers
    /// the computed blocks in the cache. In fixed-latency mode, waits until exactly
    /// `fixed_ttft_ms` after `received` instead.
    pub async fn prefill(&mut self, received: tokio::time::Instant) {
        let cfg = &self.engine.config;
        if self.engine.fixed_mode() {
            let ttft = cfg.fixed_ttft_ms.unwrap_or(0.0);
            tokio::time::sleep_until(received + Duration::from_secs_f64(ttft / 1000.0)).await;
            return;
        }
        let uncached = self.prompt_tokens.saturating_sub(self.cached_tokens);
        let ms = cfg.prefill_base_ms
            + cfg.prefill_per_token_us * f64::from(uncached) / 1000.0
            + cfg.offload_per_token_us * f64::from(self.loaded_tokens) / 1000.0;
        {
            let _lane = self.engine.prefill_lane.lock().await;
            tokio::time::sleep(Duration::from_secs_f64(ms.max(0.0) / 1000.0)).await;
        }
        if !self.engine.config.no_prefix_caching {
            let mut s = self.engine.lock();
            let n = s.cache.insert_and_hold(&self.hashes[self.held..]);
            self.held += n;
            s.computed.extend(&self.hashes);
            // Every block is also stored behind the connector (write-through).
            s.offload.store(&self.hashes);
            let evicted = s.cache.take_evicted();
            if self.engine.config.host_prompt_cache {
                s.host.extend(evicted);
            }
        }
    }

    /// The duration of the next decode step, given how many requests run now.
    pub fn decode_step(&self) -> Duration {
        self.engine.decode_step()
    }

    /// The `i`-th output token (deterministic for the prompt).
    pub fn token(&self, i: u32) -> &'static str {
        reply_token(self.seed, i)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offload_tier_keeps_the_most_recently_used_blocks_and_chains_from_the_first() {
        let mut o = Offload::new(3);
        o.store(&[1, 2, 3]);
        assert_eq!(o.chain(&[1, 2]), 2, "1 and 2 now most recent");
        o.store(&[4]);
        assert_eq!(o.chain(&[3]), 0, "the least recently used went");
        assert_eq!(o.chain(&[1, 2, 4]), 3);
        assert_eq!(o.chain(&[9, 1]), 0, "a chain starts at the first block");
        o.clear();
        assert_eq!(o.chain(&[1]), 0);
        let mut off = Offload::new(0);
        off.store(&[1]);
        assert!(!off.is_on() && off.chain(&[1]) == 0);
    }

    /// Blocks computed go behind the connector too; a reset without `reset_external`
    /// leaves them there, and the next prompt loads them (counted as vLLM does).
    #[tokio::test]
    async fn a_reset_leaves_the_offload_tier_warm_unless_external_is_reset() {
        let engine = Arc::new(Engine::new(SimConfig {
            offload_blocks: 100,
            prefill_base_ms: 0.0,
            prefill_per_token_us: 0.0,
            ..SimConfig::default()
        }));
        let prompt = "w ".repeat(100);
        let run = |engine: &Arc<Engine>| {
            let engine = engine.clone();
            let prompt = prompt.clone();
            async move {
                let mut r = engine.admit(&prompt).await;
                r.prefill(tokio::time::Instant::now()).await;
                r.cached_tokens
            }
        };
        assert_eq!(run(&engine).await, 0);
        assert!(engine.reset_prefix_cache(false));
        assert_eq!(run(&engine).await, 96, "from the offload tier");
        let c = engine.counters();
        assert_eq!((c.external_hits, c.prefix_cache_hits), (96, 0));
        assert!(engine.reset_prefix_cache(true));
        assert_eq!(run(&engine).await, 0, "both tiers cleared");
    }
}
