//! `kvbench-sim`: a simulated OpenAI-compatible engine that behaves like vLLM with
//! automatic prefix caching, so that results on it have the shape of real results.
//!
//! - HTTP: `POST /v1/chat/completions`, `POST /v1/completions` (streaming SSE and not),
//!   `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text, vLLM's names),
//!   `POST /reset_prefix_cache` (`{"success": false}` while requests hold blocks).
//! - Cache model ([`cache`]): kvbench's tokenizer, chat template rendered to text, KV blocks
//!   with chained hashes, a capacity in blocks, LRU eviction.
//! - Latency model: at most `max_num_seqs` requests run, the rest queue (FIFO); prefills
//!   run one at a time, each taking `prefill_base_ms + prefill_per_token_us * uncached
//!   tokens`; every decode step takes `decode_base_ms + decode_per_seq_us * running`.
//!   Defaults: a cold 4,000-token prefill takes ~0.4 s, a fully cached one ~0.02 s.
//! - Only async timers: thousands of concurrent streams on one core.

pub mod cache;
mod engine;
mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use engine::{Engine, EngineCounters};

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
        }
    }
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
    let listener = TcpListener::bind("127.0.0.1:0").await?;
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
