//! The load engine: one round as a closed loop of `concurrency` in-flight requests over the
//! round's request set, streaming a record per request as it ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvbench_common::plan::ApiFlavor;
use kvbench_common::record::RequestRecord;
use kvbench_common::tokenizer::count_tokens;
use kvbench_common::workload::{generate, Conversation, WorkloadSpec};
use kvbench_proto::convert::record_to_wire;
use kvbench_proto::v1::{self, round_event::Event};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Call, HttpClient};

/// One round to run, in domain types.
#[derive(Debug, Clone)]
pub struct RoundSpec {
    pub scenario_id: String,
    pub scenario_name: String,
    pub round: u32,
    pub workload: WorkloadSpec,
    pub concurrency: u32,
    pub ttft_timeout: Duration,
    pub idle_timeout: Duration,
    pub model: String,
    pub api: ApiFlavor,
}

/// One scenario run's replies by `(conversation, turn)`.
type Replies = HashMap<(u32, u32), String>;

/// Round 1's replies per scenario run, so that later rounds resend the same history.
#[derive(Debug, Default)]
pub struct ReplyStore {
    inner: Mutex<(HashMap<String, Replies>, VecDeque<String>)>,
}

/// Scenario runs whose replies are kept (oldest dropped first).
const KEPT_SCENARIOS: usize = 32;

impl ReplyStore {
    fn put(&self, scenario: &str, key: (u32, u32), text: String) {
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

    fn get(&self, scenario: &str, key: (u32, u32)) -> Option<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(scenario).and_then(|m| m.get(&key)).cloned()
    }
}

pub type EventTx = mpsc::Sender<Result<v1::RoundEvent, tonic::Status>>;

fn event(e: Event) -> Result<v1::RoundEvent, tonic::Status> {
    Ok(v1::RoundEvent { event: Some(e) })
}

#[derive(Debug, Default)]
struct Counts {
    completed: AtomicU32,
    failed: AtomicU32,
    in_flight: AtomicU32,
}

/// Runs a round, sending events to `tx`. Stops sending load when `tx`'s receiver is gone
/// (the coordinator left) or `cancel` fires.
pub async fn run(
    client: HttpClient,
    base_url: Arc<str>,
    agent_name: Arc<str>,
    replies: Arc<ReplyStore>,
    spec: RoundSpec,
    tx: EventTx,
    cancel: CancellationToken,
) {
    let t0 = Instant::now();
    let anchor_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let workload = generate(&spec.workload, spec.round);
    let total = workload.total_requests();
    if tx
        .send(event(Event::Started(v1::RoundStarted {
            total_requests: total,
            wall_clock_anchor_us: anchor_us,
        })))
        .await
        .is_err()
    {
        return;
    }
    // Engine metrics before the first request, every second, and after the last one, so
    // that per-round deltas of the engine's counters cover exactly this round.
    let scraper = Arc::new(Scraper {
        client: client.clone(),
        base_url: base_url.clone(),
        tx: tx.clone(),
        t0,
    });
    scraper.sample().await;
    let telemetry = {
        let (cancel, scraper) = (cancel.clone(), scraper.clone());
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_secs(1));
            iv.tick().await;
            loop {
                tokio::select! {
                    _ = iv.tick() => scraper.sample().await,
                    _ = cancel.cancelled() => return,
                }
            }
        })
    };

    let queue: Arc<Mutex<VecDeque<Conversation>>> =
        Arc::new(Mutex::new(workload.conversations.into_iter().collect()));
    let counts = Arc::new(Counts::default());
    let spec = Arc::new(spec);
    let workers =
        (spec.concurrency.max(1) as usize).min(queue.lock().map(|q| q.len()).unwrap_or(1));

    let ticker = {
        let (tx, counts, cancel) = (tx.clone(), counts.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = iv.tick() => {}
                    _ = cancel.cancelled() => return,
                }
                let p = v1::Progress {
                    completed: counts.completed.load(Ordering::Relaxed),
                    failed: counts.failed.load(Ordering::Relaxed),
                    in_flight: counts.in_flight.load(Ordering::Relaxed),
                    total,
                };
                if tx.send(event(Event::Progress(p))).await.is_err() {
                    return;
                }
            }
        })
    };

    let mut set = JoinSet::new();
    for _ in 0..workers {
        let w = Worker {
            client: client.clone(),
            base_url: base_url.clone(),
            agent_name: agent_name.clone(),
            replies: replies.clone(),
            spec: spec.clone(),
            tx: tx.clone(),
            cancel: cancel.clone(),
            counts: counts.clone(),
            t0,
        };
        let queue = queue.clone();
        set.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(conv) = next else { return };
                if !w.conversation(conv).await {
                    return;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
    ticker.abort();
    telemetry.abort();
    if cancel.is_cancelled() {
        return;
    }
    scraper.sample().await;
    let c = &counts;
    let _ = tx
        .send(event(Event::Progress(v1::Progress {
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            in_flight: 0,
            total,
        })))
        .await;
    let _ = tx
        .send(event(Event::Finished(v1::RoundFinished {
            duration_ms,
            sent: c.completed.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed),
        })))
        .await;
}

/// Sends engine-metrics samples into the round's stream.
struct Scraper {
    client: HttpClient,
    base_url: Arc<str>,
    tx: EventTx,
    t0: Instant,
}

impl Scraper {
    async fn sample(&self) {
        if let Some(values) = crate::metrics::scrape(&self.client, &self.base_url).await {
            let sample = v1::TelemetrySample {
                t_ms: self.t0.elapsed().as_secs_f64() * 1000.0,
                source: "engine_metrics".into(),
                values: values.into_iter().collect(),
            };
            let _ = self.tx.send(event(Event::Telemetry(sample))).await;
        }
    }
}

struct Worker {
    client: HttpClient,
    base_url: Arc<str>,
    agent_name: Arc<str>,
    replies: Arc<ReplyStore>,
    spec: Arc<RoundSpec>,
    tx: EventTx,
    cancel: CancellationToken,
    counts: Arc<Counts>,
    t0: Instant,
}

impl Worker {
    fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }

    /// Runs one conversation's turns in order; false when the round is cancelled.
    async fn conversation(&self, conv: Conversation) -> bool {
        let spec = &*self.spec;
        let mut messages: Vec<(String, String)> = Vec::new();
        if let Some(s) = &conv.system {
            messages.push(("system".into(), s.clone()));
        }
        for (t, user) in conv.user_turns.iter().enumerate() {
            let turn = t as u32;
            messages.push(("user".into(), user.clone()));
            let scheduled = Instant::now();
            let call = Call {
                base_url: &self.base_url,
                api: spec.api,
                model: &spec.model,
                messages: &messages,
                max_tokens: spec.workload.output_tokens,
                ttft_timeout: spec.ttft_timeout,
                idle_timeout: spec.idle_timeout,
            };
            self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
            let reply = tokio::select! {
                r = client::send(&self.client, &call) => r,
                _ = self.cancel.cancelled() => return false,
            };
            self.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
            let ok = reply.outcome == kvbench_common::record::Outcome::Ok;
            let counter = if ok {
                &self.counts.completed
            } else {
                &self.counts.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let record = RequestRecord {
                scenario: spec.scenario_name.clone(),
                round: spec.round,
                agent: self.agent_name.to_string(),
                request_id: conv.first_request_id + turn,
                conversation_id: conv.id,
                turn,
                scheduled_ms: self.ms(scheduled),
                sent_ms: self.ms(reply.sent),
                first_byte_ms: reply.first_byte.map(|t| self.ms(t)),
                first_token_ms: reply.first_token.map(|t| self.ms(t)),
                chunk_offsets_ms: reply
                    .chunks
                    .iter()
                    .map(|c| c.saturating_duration_since(reply.sent).as_secs_f64() * 1000.0)
                    .collect(),
                end_ms: self.ms(reply.end),
                prompt_tokens_client: messages.iter().map(|(_, c)| count_tokens(c) as u32).sum(),
                prompt_tokens: reply.prompt_tokens,
                output_tokens: reply.output_tokens,
                output_chunks: reply.chunks.len() as u32,
                cached_tokens: reply.cached_tokens,
                finish_reason: reply.finish_reason.clone(),
                outcome: reply.outcome,
                error: reply.error.clone(),
                http_status: reply.http_status,
            };
            if self
                .tx
                .send(event(Event::Record(record_to_wire(&record))))
                .await
                .is_err()
            {
                self.cancel.cancel();
                return false;
            }
            if t + 1 < conv.user_turns.len() {
                // The history carries the engine's actual reply; later rounds resend round
                // 1's, so every round sends identical prompts.
                let key = (conv.id, turn);
                let text = if spec.round == 1 {
                    self.replies.put(&spec.scenario_id, key, reply.text.clone());
                    reply.text
                } else {
                    self.replies
                        .get(&spec.scenario_id, key)
                        .unwrap_or(reply.text)
                };
                messages.push(("assistant".into(), text));
            }
        }
        true
    }
}
