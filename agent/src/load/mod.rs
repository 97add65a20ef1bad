//! The load engine: one round of a scenario, released as its load shape says (closed loop
//! of `concurrency` in flight, or open-loop arrivals with an optional cap), streaming one
//! record per request as it ends.
//!
//! - `feeder`: the round's conversations, in order (a share of a split scenario's);
//! - `schedule`: closed and open loops, progress, the agent watching its own delay;
//! - `runner`: a conversation, turn by turn; `request`: one request and its SSE stream
//!   (`sse`), stamped before parsing; `record`: a reply as a record on the round's clock;
//! - `replies`: round 1's replies, replayed by later rounds; `perfect`: the perfect
//!   prefix cache a scenario run's hits are measured against.
//!
//! May import: `kvbench_common`, [`crate::engine`] (the transport), [`crate::telemetry`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvbench_common::agent::{Progress, RoundEvent, RoundFinished, RoundRequest, RoundStarted};
use kvbench_common::plan::ApiFlavor;
use kvbench_common::tokenizer::TokenCounter;
use kvbench_common::workload::Conversation;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod feeder;
mod perfect;
mod record;
mod replies;
pub(crate) mod request;
mod runner;
mod schedule;
pub(crate) mod sse;
mod watch;

use crate::engine::http::HttpClient;
use crate::EventTx;

use feeder::feeder;
pub(crate) use perfect::PerfectStore;
pub(crate) use replies::ReplyStore;
use schedule::{progress_ticker, Round};
pub(crate) use watch::EngineWatch;

/// One round to run, in domain types: the request as it came (its request set and
/// tokenizer taken out into what they became).
#[derive(Clone)]
pub struct RoundSpec {
    pub request: RoundRequest,
    /// A dataset's requests, instead of generated ones.
    pub dataset: Option<Vec<Conversation>>,
    /// Whose tokens generated lengths and `prompt_tokens_client` are in.
    pub counter: Arc<dyn TokenCounter>,
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    completed: AtomicU32,
    failed: AtomicU32,
    in_flight: AtomicU32,
    /// Gaps between content chunks of measured requests, and those of them too short for
    /// two engine steps (both chunks came out of one read).
    gaps: std::sync::atomic::AtomicU64,
    coalesced_gaps: std::sync::atomic::AtomicU64,
    /// This round's prompts (and histories) so far: what a cold engine may share.
    prefixes: Mutex<kvbench_common::prefix_cache::PrefixTracker>,
    probe_taken: std::sync::atomic::AtomicBool,
}

/// A prompt the agent can send again after a clear, to check the cache is cold.
#[derive(Debug, Clone)]
pub struct Probe {
    pub messages: Vec<(String, String)>,
    pub api: ApiFlavor,
    pub model: String,
}

/// What every request of the round shares.
pub struct RoundContext {
    /// The first prompt of the latest round, for the next clear's cold check.
    pub probe: Arc<Mutex<Option<Probe>>>,
    pub client: HttpClient,
    pub base_url: Arc<str>,
    pub agent_name: Arc<str>,
    pub replies: Arc<ReplyStore>,
    /// This scenario run's perfect prefix cache (see [`perfect`]).
    pub perfect: perfect::PerfectCache,
    /// Ask the engine for each request's cached tokens by tier (SGLang's
    /// `return_cached_tokens_details`; engines of other kinds are not asked).
    pub cache_details: bool,
    pub telemetry: crate::telemetry::Telemetry,
    /// Why the round was stopped, when it was (none set: the agent is shutting down).
    pub stop_reason: Arc<std::sync::OnceLock<kvbench_common::agent::StopReason>>,
    /// The engine, watched for its death while the round runs.
    pub watch: Arc<EngineWatch>,
}

/// Runs a round, sending events to `tx`: warmup requests (excluded from statistics), then
/// the measured phase, then `Finished` (with `cancelled` set when `cancel` fired: requests
/// in flight then end as `cancelled` records). Stops sending load when `tx`'s receiver is
/// gone (the coordinator left) or `cancel` fires.
pub async fn run(ctx: RoundContext, spec: RoundSpec, tx: EventTx, cancel: CancellationToken) {
    let t0 = Instant::now();
    let anchor_us = now_us();
    let feeder = feeder(&spec);
    let total = if spec.request.load.duration_s.is_some() {
        0
    } else if spec.request.share.is_some() {
        // This agent's share of the request set.
        feeder.lock().map(|mut f| f.request_set().1).unwrap_or(0)
    } else {
        spec.request.workload.num_requests
    };
    let started = RoundStarted {
        total_requests: total,
        wall_clock_anchor_us: anchor_us,
    };
    if tx.send(RoundEvent::Started(started)).await.is_err() {
        return;
    }
    let counts = Arc::new(Counts::default());
    let background = cancel.child_token();
    let ticker = progress_ticker(tx.clone(), counts.clone(), total, background.clone());
    let round = Arc::new(Round {
        ctx: Arc::new(ctx),
        spec: Arc::new(spec),
        tx: tx.clone(),
        cancel: cancel.clone(),
        counts: counts.clone(),
        t0,
        total,
        feeder,
    });
    round.warmup().await;
    // Connections for the first wave are opened before the clock starts: connection setup
    // is the client's cost, not the engine's.
    let width = round.first_wave();
    if width > 1 {
        request::prewarm(&round.ctx.client, &round.ctx.base_url, width as usize).await;
    }
    let start_late_ms = match round.spec.request.start_at_us {
        Some(at) => wait_until(at, &cancel).await,
        None => 0.0,
    };
    let measured = round.measure().await;
    // A health check under way says whether the engine died before the round ends.
    round.ctx.watch.settle().await;
    background.cancel();
    let _ = ticker.await;
    let (completed, failed) = (
        counts.completed.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    let _ = tx
        .send(RoundEvent::Progress(Progress {
            completed,
            failed,
            in_flight: 0,
            total,
        }))
        .await;
    let _ = tx
        .send(RoundEvent::Finished(RoundFinished {
            duration_ms: measured.duration_s * 1000.0,
            sent: completed + failed,
            health: Some(measured.health),
            cancelled: cancel.is_cancelled(),
            start_late_ms,
            stop_reason: cancel.is_cancelled().then(|| {
                round
                    .ctx
                    .stop_reason
                    .get()
                    .copied()
                    .unwrap_or(kvbench_common::agent::StopReason::Shutdown)
            }),
        }))
        .await;
}

pub(crate) use kvbench_common::util::now_us;

/// Sleeps until the wall-clock time `at_us` (or `cancel`); how late that time already was,
/// in ms (0 when it was still ahead).
async fn wait_until(at_us: i64, cancel: &CancellationToken) -> f64 {
    let ahead_us = at_us - now_us();
    if ahead_us <= 0 {
        return -ahead_us as f64 / 1000.0;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_micros(ahead_us as u64)) => {}
        _ = cancel.cancelled() => {}
    }
    0.0
}
