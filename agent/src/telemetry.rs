//! Telemetry during a round's measured phase: GPUs (NVML) and the host (sysinfo) on a
//! dedicated thread, so that slow driver calls never delay the load's event loop; the
//! engine's Prometheus `/metrics` on the runtime. Every sample goes into the round's stream
//! with the records, timed on the round's clock.
//!
//! Sources: `nvml` (`gpu{i}.util_pct`, `.mem_util_pct`, `.mem_used_bytes`,
//! `.mem_total_bytes`, `.power_w`, `.energy_mj`, `.temp_c`, `.sm_clock_mhz`, `.processes`,
//! `.pid{pid}.mem_bytes`), `host` (`cpu_pct`, `mem_used_bytes`, `mem_total_bytes`,
//! `net_rx_bytes`, `net_tx_bytes`: counters over the interfaces other than loopback) and
//! `engine_metrics` (the families in [`crate::metrics::ENGINE_METRICS`]). A read that fails
//! leaves its key out and says why once per round in the sample's `notes`.

use std::collections::HashSet;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use kvbench_proto::v1::{self, round_event::Event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::HttpClient;
use crate::gpu::GpuSource;
use crate::round::EventTx;

/// Which GPUs an agent samples.
#[derive(Debug, Clone, Default)]
pub enum GpuChoice {
    /// The host's GPUs through NVML, where the driver is present.
    #[default]
    Nvml,
    /// No GPU sampling.
    Off,
    /// A given source (tests: [`crate::gpu::FakeGpu`]).
    Source(Arc<dyn GpuSource>),
}

/// Telemetry settings (`telemetry:` in the agent's config file).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub gpu: GpuChoice,
    /// NVML sampling period (default 100 ms: 10 Hz).
    pub gpu_interval: Duration,
    /// Host CPU, memory and network sampling period (default 1 s).
    pub host_interval: Duration,
    /// Engine `/metrics` scrape period (default 1 s).
    pub engine_metrics_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            gpu: GpuChoice::Nvml,
            gpu_interval: Duration::from_millis(100),
            host_interval: Duration::from_secs(1),
            engine_metrics_interval: Duration::from_secs(1),
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

fn sample_event(
    t_ms: f64,
    source: &str,
    values: Vec<(String, f64)>,
    notes: Vec<String>,
) -> Result<v1::RoundEvent, tonic::Status> {
    Ok(v1::RoundEvent {
        event: Some(Event::Telemetry(v1::TelemetrySample {
            t_ms,
            source: source.to_owned(),
            values: values.into_iter().collect(),
            notes,
        })),
    })
}

/// Sampling in progress; [`Sampling::stop`] takes the last samples and ends it.
pub struct Sampling {
    stop_thread: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop_engine: CancellationToken,
    engine: tokio::task::JoinHandle<()>,
    telemetry: Telemetry,
    tx: EventTx,
    t0: Instant,
}

impl Telemetry {
    /// Starts sampling into `tx`, times relative to `t0`; takes a first sample of every
    /// source at once (the baseline of the round's counter deltas).
    pub async fn start(&self, tx: EventTx, t0: Instant) -> Sampling {
        scrape_engine(&self.client, &self.metrics_url, &tx, t0).await;
        let (stop_tx, stop_rx) = std_mpsc::channel();
        let thread = {
            let (gpus, config, tx) = (self.gpus.clone(), self.config.clone(), tx.clone());
            let t0 = t0.into_std();
            std::thread::Builder::new()
                .name("kvbench-telemetry".into())
                .spawn(move || sample_thread(gpus, &config, &tx, t0, &stop_rx))
                .map_err(|e| tracing::warn!(error = %e, "no telemetry thread: GPU and host samples are missing"))
                .ok()
        };
        let stop_engine = CancellationToken::new();
        let engine = {
            let (client, url, tx, stop) = (
                self.client.clone(),
                self.metrics_url.clone(),
                tx.clone(),
                stop_engine.clone(),
            );
            let period = self.config.engine_metrics_interval;
            tokio::spawn(async move {
                let mut iv = tokio::time::interval_at(Instant::now() + period, period);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = iv.tick() => scrape_engine(&client, &url, &tx, t0).await,
                        _ = stop.cancelled() => return,
                    }
                }
            })
        };
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
        let _ = (&mut self.engine).await;
        drop(self.stop_thread.take());
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        scrape_engine(
            &self.telemetry.client,
            &self.telemetry.metrics_url,
            &self.tx,
            self.t0,
        )
        .await;
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        self.stop_engine.cancel();
        // Dropping the sender ends the thread at its next wake-up.
        self.stop_thread.take();
    }
}

async fn scrape_engine(client: &HttpClient, url: &str, tx: &EventTx, t0: Instant) {
    if let Some(values) = crate::metrics::scrape(client, url).await {
        let t_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let _ = tx
            .send(sample_event(
                t_ms,
                "engine_metrics",
                values.into_iter().collect(),
                Vec::new(),
            ))
            .await;
    }
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
    let mut host = Host::new();
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
        Some(sample_event(t, "nvml", values, notes))
    };
    let send = |e| tx.blocking_send(e).is_ok();
    let now = std::time::Instant::now();
    let (mut next_gpu, mut next_host) = (now, now);
    loop {
        let now = std::time::Instant::now();
        if gpus.is_some() && now >= next_gpu {
            if let Some(e) = gpu_sample(&mut noted) {
                if !send(e) {
                    return;
                }
            }
            next_gpu += config.gpu_interval;
            if next_gpu < now {
                // Fell behind (a slow driver call): skip the missed ticks.
                next_gpu = now + config.gpu_interval;
            }
        }
        if now >= next_host {
            if !send(sample_event(t_ms(), "host", host.sample(), Vec::new())) {
                return;
            }
            next_host += config.host_interval;
            if next_host < now {
                next_host = now + config.host_interval;
            }
        }
        let wake = if gpus.is_some() {
            next_gpu.min(next_host)
        } else {
            next_host
        };
        match stop.recv_timeout(wake.saturating_duration_since(std::time::Instant::now())) {
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    if let Some(e) = gpu_sample(&mut noted) {
        send(e);
    }
    send(sample_event(t_ms(), "host", host.sample(), Vec::new()));
}
