//! Telemetry during a round's measured phase: GPUs (NVML) and the host (sysinfo) on a
//! dedicated thread, so that slow driver calls never delay the load's event loop; the
//! engine's Prometheus `/metrics` on the runtime. Every sample goes into the round's stream
//! with the records, timed on the round's clock.
//!
//! Sources: `nvml` (`gpu{i}.util_pct`, `.mem_util_pct`, `.mem_used_bytes`,
//! `.mem_total_bytes`, `.power_w`, `.energy_mj`, `.temp_c`, `.sm_clock_mhz`, `.processes`,
//! `.pid{pid}.mem_bytes`), `host` (`cpu_pct`, `mem_used_bytes`, `mem_total_bytes`,
//! `net_rx_bytes`, `net_tx_bytes`: counters over the interfaces other than loopback) and
//! `engine_metrics` (the families in [`crate::engine::metrics::engine_metrics`]). A read that fails
//! leaves its key out and says why once per round in the sample's `notes`.
//!
//! May import: `kvbench_common` and [`crate::engine`] (the metrics scrape).

pub(crate) mod gpu;
pub(crate) mod host;

use std::collections::HashSet;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::http::HttpClient;
use crate::EventTx;
use gpu::GpuSource;
use kvbench_common::agent::RoundEvent;
use kvbench_common::telemetry::{TelemetrySample, TelemetrySource};

/// Which GPUs an agent samples.
#[derive(Debug, Clone, Default)]
pub enum GpuChoice {
    /// The host's GPUs through NVML, where the driver is present.
    #[default]
    Nvml,
    /// No GPU sampling.
    Off,
    /// A given source (tests: [`gpu::FakeGpu`]).
    Source(Arc<dyn GpuSource>),
}

/// Telemetry settings (`telemetry:` in the agent's config file).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub gpu: GpuChoice,
    /// Sample the host's CPU, memory and network.
    pub host: bool,
    /// Scrape the engine's `/metrics`.
    pub engine_metrics: bool,
    /// NVML sampling period (default 100 ms: 10 Hz).
    pub gpu_interval: Duration,
    /// Host CPU, memory and network sampling period (default 1 s).
    pub host_interval: Duration,
    /// Engine `/metrics` scrape period (default 1 s).
    pub engine_metrics_interval: Duration,
    /// Cache stores whose Prometheus metrics are scraped with the engine's, by name
    /// (`lmcache`, `mooncake`): `telemetry.lmcache_metrics_url`, `mooncake_metrics_url`.
    pub store_metrics: Vec<(String, String)>,
}

impl TelemetryConfig {
    /// Samples nothing (`kvbench-agent --no-telemetry`; calibration's baseline).
    pub fn off() -> TelemetryConfig {
        TelemetryConfig {
            gpu: GpuChoice::Off,
            host: false,
            engine_metrics: false,
            ..TelemetryConfig::default()
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            gpu: GpuChoice::Nvml,
            host: true,
            engine_metrics: true,
            gpu_interval: Duration::from_millis(100),
            host_interval: Duration::from_secs(1),
            engine_metrics_interval: Duration::from_secs(1),
            store_metrics: Vec::new(),
        }
    }
}

/// What a round's sampling needs, shared by all rounds of an agent.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub config: TelemetryConfig,
    /// The opened GPU source (none: no NVML, or GPU sampling off).
    pub gpus: Option<Arc<dyn GpuSource>>,
    pub client: HttpClient,
    pub metrics_url: Arc<str>,
}

/// A sample as a round event. Its round and agent are set by the coordinator's agent
/// client, which knows them; the sampler does not.
fn sample_event(
    t_ms: f64,
    source: TelemetrySource,
    values: Vec<(String, f64)>,
    notes: Vec<String>,
) -> RoundEvent {
    RoundEvent::Telemetry(TelemetrySample {
        round: 0,
        agent: String::new(),
        t_ms,
        source,
        values: values.into_iter().collect(),
        notes,
    })
}

/// Sampling in progress; [`Sampling::stop`] takes the last samples and ends it.
pub struct Sampling {
    stop_thread: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop_engine: CancellationToken,
    engine: Option<tokio::task::JoinHandle<()>>,
    telemetry: Telemetry,
    tx: EventTx,
    t0: Instant,
}

impl Telemetry {
    /// Starts sampling into `tx`, times relative to `t0`; takes a first sample of every
    /// source at once (the baseline of the round's counter deltas).
    pub async fn start(&self, tx: EventTx, t0: Instant) -> Sampling {
        if self.config.engine_metrics {
            scrape_engine(self, &tx, t0, true).await;
        }
        let (stop_tx, stop_rx) = std_mpsc::channel();
        let thread = if self.gpus.is_none() && !self.config.host {
            None
        } else {
            let (gpus, config, tx) = (self.gpus.clone(), self.config.clone(), tx.clone());
            let t0 = t0.into_std();
            std::thread::Builder::new()
                .name("kvbench-telemetry".into())
                .spawn(move || sample_thread(gpus, &config, &tx, t0, &stop_rx))
                .map_err(|e| tracing::warn!(error = %e, "no telemetry thread: GPU and host samples are missing"))
                .ok()
        };
        let stop_engine = CancellationToken::new();
        let engine = self.config.engine_metrics.then(|| {
            let (telemetry, tx, stop) = (self.clone(), tx.clone(), stop_engine.clone());
            let period = self.config.engine_metrics_interval;
            tokio::spawn(async move {
                let mut iv = tokio::time::interval_at(Instant::now() + period, period);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = iv.tick() => scrape_engine(&telemetry, &tx, t0, false).await,
                        _ = stop.cancelled() => return,
                    }
                }
            })
        });
        Sampling {
            stop_thread: Some(stop_tx),
            thread,
            stop_engine,
            engine,
            telemetry: self.clone(),
            tx,
            t0,
        }
    }
}

impl Sampling {
    /// Stops sampling after a last sample of every source (the end of the counter deltas).
    pub async fn stop(mut self) {
        self.stop_engine.cancel();
        if let Some(engine) = self.engine.take() {
            let _ = engine.await;
        }
        drop(self.stop_thread.take());
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if self.telemetry.config.engine_metrics {
            scrape_engine(&self.telemetry, &self.tx, self.t0, true).await;
        }
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        self.stop_engine.cancel();
        // Dropping the sender ends the thread at its next wake-up.
        self.stop_thread.take();
    }
}

/// One scrape of the engine's `/metrics` as a sample. A periodic scrape that fails is left
/// out; a boundary one (the round's first and last: the ends of its counter deltas) is
/// tried three times, with more time, and when it still fails it becomes a sample without
/// values that says why, so that the deltas are null and the stats say what happened.
/// The cache stores' metrics (`store_metrics`) join the sample: their families are their
/// own (`lmcache:*`, `master_*`); one that fails is left out (at a boundary, said).
async fn scrape_engine(t: &Telemetry, tx: &EventTx, t0: Instant, boundary: bool) {
    let (tries, timeout) = if boundary {
        (3, Duration::from_secs(5))
    } else {
        (1, Duration::from_secs(1))
    };
    use crate::engine::metrics::read;
    let mut result = read(&t.client, &t.metrics_url, timeout).await;
    for _ in 1..tries {
        if result.is_ok() {
            break;
        }
        result = read(&t.client, &t.metrics_url, timeout).await;
    }
    let (mut values, mut notes): (Vec<(String, f64)>, Vec<String>) = match result {
        Ok(values) => (values.into_iter().collect(), Vec::new()),
        Err(e) if boundary => (Vec::new(), vec![format!("engine metrics: {e}")]),
        Err(_) => return,
    };
    for (store, url) in &t.config.store_metrics {
        match read(&t.client, url, timeout).await {
            Ok(v) => values.extend(v),
            Err(e) if boundary => notes.push(format!("{store} metrics: {e}")),
            Err(_) => {}
        }
    }
    let t_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let _ = tx
        .send(sample_event(
            t_ms,
            TelemetrySource::EngineMetrics,
            values,
            notes,
        ))
        .await;
}

/// Host CPU, memory and network through sysinfo.
struct Host {
    system: sysinfo::System,
    networks: sysinfo::Networks,
    cpu_refreshed: std::time::Instant,
}

impl Host {
    fn new() -> Host {
        let mut system = sysinfo::System::new();
        system.refresh_cpu_usage();
        Host {
            system,
            networks: sysinfo::Networks::new_with_refreshed_list(),
            cpu_refreshed: std::time::Instant::now(),
        }
    }

    fn sample(&mut self) -> Vec<(String, f64)> {
        let mut values = Vec::new();
        // CPU usage is a difference between two refreshes (the first, in `new`, is the
        // baseline); refreshes closer than sysinfo's minimum interval give noise.
        if self.cpu_refreshed.elapsed() >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            self.system.refresh_cpu_usage();
            self.cpu_refreshed = std::time::Instant::now();
            values.push((
                "cpu_pct".to_owned(),
                f64::from(self.system.global_cpu_usage()),
            ));
        }
        self.system.refresh_memory();
        values.push((
            "mem_used_bytes".to_owned(),
            self.system.used_memory() as f64,
        ));
        values.push((
            "mem_total_bytes".to_owned(),
            self.system.total_memory() as f64,
        ));
        self.networks.refresh(true);
        let (mut rx, mut tx) = (0u64, 0u64);
        for (name, data) in self.networks.iter() {
            if name != "lo" {
                rx += data.total_received();
                tx += data.total_transmitted();
            }
        }
        values.push(("net_rx_bytes".to_owned(), rx as f64));
        values.push(("net_tx_bytes".to_owned(), tx as f64));
        values
    }
}

/// The dedicated thread: GPUs every `gpu_interval`, the host every `host_interval`, until
/// `stop` is dropped; then one last sample of each.
fn sample_thread(
    gpus: Option<Arc<dyn GpuSource>>,
    config: &TelemetryConfig,
    tx: &EventTx,
    t0: std::time::Instant,
    stop: &std_mpsc::Receiver<()>,
) {
    let mut host = config.host.then(Host::new);
    let mut noted: HashSet<(u32, &'static str)> = HashSet::new();
    let t_ms = || t0.elapsed().as_secs_f64() * 1000.0;
    let gpu_sample = |noted: &mut HashSet<(u32, &'static str)>| {
        let g = gpus.as_ref()?;
        let t = t_ms();
        let (mut values, mut notes) = (Vec::new(), Vec::new());
        for index in 0..g.count() {
            let (v, errors) = g.read(index).flatten(index);
            values.extend(v);
            for (field, e) in errors {
                if noted.insert((index, field)) {
                    notes.push(format!("gpu{index} {field}: {e}"));
                }
            }
        }
        Some(sample_event(t, TelemetrySource::Nvml, values, notes))
    };
    let send = |e| tx.blocking_send(e).is_ok();
    let host_sample =
        |h: &mut Host| sample_event(t_ms(), TelemetrySource::Host, h.sample(), Vec::new());
    // The next due time of each enabled source; a source that falls behind (a slow driver
    // call) skips its missed ticks.
    let now = std::time::Instant::now();
    let mut next_gpu = gpus.is_some().then_some(now);
    let mut next_host = host.is_some().then_some(now);
    let advance = |next: &mut Option<std::time::Instant>, period, now| {
        if let Some(n) = next {
            *n += period;
            if *n < now {
                *n = now + period;
            }
        }
    };
    loop {
        let now = std::time::Instant::now();
        if next_gpu.is_some_and(|t| now >= t) {
            if let Some(e) = gpu_sample(&mut noted) {
                if !send(e) {
                    return;
                }
            }
            advance(&mut next_gpu, config.gpu_interval, now);
        }
        if next_host.is_some_and(|t| now >= t) {
            if let Some(h) = host.as_mut() {
                if !send(host_sample(h)) {
                    return;
                }
            }
            advance(&mut next_host, config.host_interval, now);
        }
        let Some(wake) = next_gpu.into_iter().chain(next_host).min() else {
            return;
        };
        match stop.recv_timeout(wake.saturating_duration_since(std::time::Instant::now())) {
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    if let Some(e) = gpu_sample(&mut noted) {
        send(e);
    }
    if let Some(h) = host.as_mut() {
        send(host_sample(h));
    }
}
