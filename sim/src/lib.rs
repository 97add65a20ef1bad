//! `kvbench-sim`: a simulated OpenAI-compatible engine that behaves like vLLM with
//! automatic prefix caching, so that results on it have the shape of real results.
//!
//! - HTTP: `POST /v1/chat/completions`, `POST /v1/completions` (streaming SSE and not),
//!   `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text, vLLM's names),
//!   `POST /reset_prefix_cache` (`{"success": false}` while requests hold blocks), and
//!   SGLang's `POST /flush_cache` (400 while requests hold blocks) and
//!   `return_cached_tokens_details` (an `sglext` event splitting each request's cached
//!   tokens into `device` and `host`, the offload tier), so that an agent of kind `sglang`
//!   can run against it.
//! - Cache model ([`cache`]): kvbench's tokenizer, chat template rendered to text, KV blocks
//!   with chained hashes, a capacity in blocks, LRU eviction.
//! - Latency model: at most `max_num_seqs` requests run, the rest queue (FIFO); prefills
//!   run one at a time, each taking `prefill_base_ms + prefill_per_token_us * uncached
//!   tokens`; every decode step takes `decode_base_ms + decode_per_seq_us * running`.
//!   Defaults: a cold 4,000-token prefill takes ~0.4 s, a fully cached one ~0.02 s.
//! - Fixed-latency mode (`--fixed-ttft-ms`, `--fixed-itl-ms`): exact TTFT and ITL whatever
//!   the load, for measuring the harness itself. Every first content chunk carries
//!   `kvbench_server_ttft_us`, the time from the request's arrival to that chunk's write.
//! - Fault injection (`--fault-*`): shares of requests answered 5xx or 429, streams reset,
//!   carrying malformed SSE or JSON, or stalling; counted per kind at `/metrics`.
//! - Only async timers: thousands of concurrent streams on one core.
//!
//! # Layout
//!
//! - [`cache`]: the prefix-cache model (public: `kvbench workload inspect` uses it);
//! - `engine`: the latency model, the scheduler and the counters;
//! - `http`: the OpenAI-compatible surface, metrics and faults;
//! - `socket`: the kernel's receive time of a request (what TTFT counts from).
//!
//! May import: `kvbench_common` only (never the agent or the coordinator).

pub mod cache;
mod engine;
mod http;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use engine::{reply_text, Engine, EngineCounters, Fault};

/// The simulator's parameters (every one a flag of `kvbench-sim`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// Model name listed by /v1/models (requests may name any model).
    #[arg(long, default_value = "kvbench-sim")]
    pub model: String,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// KV cache capacity in blocks.
    #[arg(long, default_value_t = 16_384)]
    pub num_blocks: usize,
    /// Turn automatic prefix caching off (every prefill is cold).
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Most requests running at once; the rest wait in a FIFO queue.
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Fixed cost of one prefill, in milliseconds.
    #[arg(long, default_value_t = 20.0)]
    pub prefill_base_ms: f64,
    /// Cost of each uncached prompt token in a prefill, in microseconds.
    #[arg(long, default_value_t = 95.0)]
    pub prefill_per_token_us: f64,
    /// Fixed cost of one decode step, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub decode_base_ms: f64,
    /// Extra cost of one decode step per running sequence, in microseconds.
    #[arg(long, default_value_t = 50.0)]
    pub decode_per_seq_us: f64,
    /// Output tokens when a request sets no `max_tokens`.
    #[arg(long, default_value_t = 64)]
    pub default_max_tokens: u32,
    /// Fixed-latency mode: every request's first token is written exactly this many
    /// milliseconds after its headers arrived, whatever the load (no queue, no cache model).
    /// Used by `kvbench calibrate` to measure the harness itself.
    #[arg(long)]
    pub fixed_ttft_ms: Option<f64>,
    /// Fixed-latency mode: exactly this many milliseconds between tokens.
    #[arg(long)]
    pub fixed_itl_ms: Option<f64>,
    /// Share of generation requests answered HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Share of generation requests answered HTTP 429.
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    /// Share of streams whose connection is reset mid-stream.
    #[arg(long, default_value_t = 0.0)]
    pub fault_reset: f64,
    /// Share of streams that carry a line that is not SSE mid-stream.
    #[arg(long, default_value_t = 0.0)]
    pub fault_malformed_sse: f64,
    /// Share of streams that carry an event whose data is not JSON mid-stream.
    #[arg(long, default_value_t = 0.0)]
    pub fault_malformed_json: f64,
    /// Share of streams that stall mid-stream (no more bytes, connection held open).
    #[arg(long, default_value_t = 0.0)]
    pub fault_stall: f64,
    /// Make `/reset_prefix_cache` answer success without resetting anything (an engine
    /// whose reset lies, to test that kvbench catches it).
    #[arg(long, conflicts_with = "refusing_reset")]
    pub lying_reset: bool,
    /// Make `/reset_prefix_cache` always answer `{"success": false}` and reset nothing (an
    /// engine that refuses to clear, to test that kvbench restarts it).
    #[arg(long)]
    pub refusing_reset: bool,
    /// Keep blocks evicted from the cache in host memory, restored when a prompt needs them
    /// again, and not cleared by `/reset_prefix_cache`, as llama.cpp's `--cache-ram` keeps
    /// prompts pushed out of a slot: a reset then gives a cache that is cold for the latest
    /// prompts (the cold check's probe) but not for older ones.
    #[arg(long)]
    pub host_prompt_cache: bool,
    /// A second cache tier behind the KV connector, as vLLM's CPU offload or LMCache: every
    /// block computed is also stored there (this many blocks, least recently used dropped
    /// first); a prompt's blocks past its device-cache hits are loaded from it, counted in
    /// vLLM's `external_prefix_cache_*` counters and as cached tokens. 0: none.
    #[arg(long, default_value_t = 0, conflicts_with = "host_prompt_cache")]
    pub offload_blocks: usize,
    /// Cost of loading each token from the offload tier in a prefill, in microseconds.
    #[arg(long, default_value_t = 10.0)]
    pub offload_per_token_us: f64,
    /// `/reset_prefix_cache` leaves the offload tier warm even with `reset_external=true`
    /// (vLLM's open bug: the CPU offload tier may keep serving after a reset), to test that
    /// kvbench catches it. Without `reset_external=true` the tier is always left warm.
    #[arg(long)]
    pub offload_keeps_on_reset: bool,
    /// Close the connection after each streamed response while advertising keep-alive
    /// (`Keep-Alive: timeout=5, max=100`), as llama.cpp's server does.
    #[arg(long)]
    pub close_after_stream: bool,
    /// A Hugging Face `tokenizer.json`: prompts are counted, cached and answered on
    /// `/tokenize` in its tokens instead of kvbench's (with the tokenizer of a model whose
    /// chat template renders chats as the sim does, the sim caches what that engine caches).
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Seed of the fault draw (which request gets which fault is a function of the seed and
    /// the request's arrival order).
    #[arg(long, default_value_t = 0)]
    pub fault_seed: u64,
}

/// A sim configuration that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    #[error("--fault-{flag} must be a share between 0 and 1, got {share}")]
    Share { flag: &'static str, share: f64 },
    #[error("fault shares add up to {0}, more than 1")]
    Shares(f64),
    #[error("{flag} must be >= 0, got {value}")]
    Negative { flag: &'static str, value: f64 },
    #[error("--block-size and --max-num-seqs must be at least 1")]
    Zero,
    #[error("--tokenizer {path}: {reason}")]
    Tokenizer { path: String, reason: String },
}

impl SimConfig {
    /// Fault shares in draw order.
    pub fn fault_shares(&self) -> [(Fault, f64); 6] {
        [
            (Fault::Http5xx, self.fault_5xx),
            (Fault::Http429, self.fault_429),
            (Fault::Reset, self.fault_reset),
            (Fault::MalformedSse, self.fault_malformed_sse),
            (Fault::MalformedJson, self.fault_malformed_json),
            (Fault::Stall, self.fault_stall),
        ]
    }

    /// The `--tokenizer` file, loaded (none without the flag).
    pub fn load_tokenizer(
        &self,
    ) -> Result<Option<kvbench_common::tokenizer::HfTokenizer>, SimConfigError> {
        let Some(path) = &self.tokenizer else {
            return Ok(None);
        };
        let bad = |reason: String| SimConfigError::Tokenizer {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        kvbench_common::tokenizer::HfTokenizer::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| bad(e.to_string()))
    }

    /// Checks the parameters; the message names the flag.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        self.load_tokenizer()?;
        let mut total = 0.0;
        for (f, share) in self.fault_shares() {
            if !(0.0..=1.0).contains(&share) {
                return Err(SimConfigError::Share {
                    flag: f.flag(),
                    share,
                });
            }
            total += share;
        }
        if total > 1.0 + 1e-9 {
            return Err(SimConfigError::Shares(total));
        }
        for (flag, v) in [
            ("--fixed-ttft-ms", self.fixed_ttft_ms),
            ("--fixed-itl-ms", self.fixed_itl_ms),
            ("--offload-per-token-us", Some(self.offload_per_token_us)),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(SimConfigError::Negative { flag, value: v });
                }
            }
        }
        if self.block_size == 0 || self.max_num_seqs == 0 {
            return Err(SimConfigError::Zero);
        }
        Ok(())
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            model: "kvbench-sim".into(),
            block_size: 16,
            num_blocks: 16_384,
            no_prefix_caching: false,
            max_num_seqs: 256,
            prefill_base_ms: 20.0,
            prefill_per_token_us: 95.0,
            decode_base_ms: 10.0,
            decode_per_seq_us: 50.0,
            default_max_tokens: 64,
            fixed_ttft_ms: None,
            fixed_itl_ms: None,
            fault_5xx: 0.0,
            fault_429: 0.0,
            fault_reset: 0.0,
            fault_malformed_sse: 0.0,
            fault_malformed_json: 0.0,
            fault_stall: 0.0,
            fault_seed: 0,
            lying_reset: false,
            refusing_reset: false,
            host_prompt_cache: false,
            offload_blocks: 0,
            offload_per_token_us: 10.0,
            offload_keeps_on_reset: false,
            close_after_stream: false,
            tokenizer: None,
        }
    }
}

/// `kvbench-sim`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT or HOST:PORT (port 0: any free port; the address is
    /// printed).
    #[arg(long, default_value = "127.0.0.1:8000", value_parser = kvbench_common::util::parse_listen)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub sim: SimConfig,
}

/// Serves until SIGINT or SIGTERM, after printing `kvbench-sim listening on ADDR` on stdout.
pub async fn serve_until_signal(args: ServeArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    args.sim.validate()?;
    let listener =
        bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("kvbench-sim listening on {addr}");
    tracing::info!(%addr, model = %args.sim.model, "kvbench-sim listening");
    let engine = Arc::new(Engine::new(args.sim));
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        // SIGINT or SIGTERM (SIGINT alone where there is no SIGTERM).
        #[cfg(unix)]
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        #[cfg(unix)]
        if let Ok(mut term) = term {
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    serve(listener, engine, shutdown).await?;
    Ok(())
}

/// Binds a listener with a deep accept queue (8,192), so that thousands of clients
/// connecting at once are not dropped to SYN retransmission (the kernel caps it at
/// `net.core.somaxconn`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// Serves the simulator on a bound listener until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    http::serve(listener, engine, shutdown).await
}

/// A simulator running in this process (the embedded default, and tests).
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts a simulator on `127.0.0.1:0`.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    config.validate().map_err(std::io::Error::other)?;
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let engine = Arc::new(Engine::new(config));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, engine.clone(), shutdown.clone()));
    Ok(SimHandle {
        addr,
        engine,
        shutdown,
        task,
    })
}
