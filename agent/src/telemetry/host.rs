//! The agent watching itself: event-loop lag, CPU and memory, to tell when latencies
//! include the harness's own delay (`generator_saturated`).

use std::time::Duration;

use kvbench_common::process::peak_rss_bytes;
use kvbench_common::results::AgentHealth;
use kvbench_common::stats::Summary;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Lag beyond which the event loop counts as saturated (p99 of the heartbeat's lateness).
pub const LAG_LIMIT_MS: f64 = 5.0;
/// Lateness of open-loop releases beyond which the generator counts as saturated (p99).
pub const DISPATCH_LIMIT_MS: f64 = 5.0;
/// Share of the runtime's cores above which the agent's CPU counts as saturated.
pub const CPU_LIMIT: f64 = 0.9;
/// A gap between two content chunks shorter than this means both came out of one read: no
/// engine produces two decode steps this close together.
pub const COALESCED_GAP: Duration = Duration::from_micros(100);
/// Share of chunk gaps shorter than [`COALESCED_GAP`] above which the agent counts as
/// reading behind the engine: engines write one event per decode step, so events pile up
/// in the socket only when the reader is late.
pub const COALESCE_LIMIT: f64 = 0.2;
/// Fewest chunk gaps for the coalescing share to count.
pub const COALESCE_MIN_GAPS: u64 = 100;

const TICK: Duration = Duration::from_millis(5);

/// Starts a heartbeat on the current runtime; stop it with `stop` and await the lags (ms).
pub fn lag_probe(stop: CancellationToken) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut lags = Vec::new();
        let mut next = Instant::now() + TICK;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.cancelled() => return lags,
            }
            let now = Instant::now();
            lags.push(now.saturating_duration_since(next).as_secs_f64() * 1000.0);
            next += TICK;
            if next < now {
                next = now + TICK;
            }
        }
    })
}

/// The host's CPU busy share over an interval, through sysinfo (the same source as the
/// `host` telemetry's `cpu_pct`): started at the interval's beginning, read at its end.
pub struct HostCpu {
    system: sysinfo::System,
    started: std::time::Instant,
}

impl HostCpu {
    pub fn start() -> HostCpu {
        let mut system = sysinfo::System::new();
        system.refresh_cpu_usage();
        HostCpu {
            system,
            started: std::time::Instant::now(),
        }
    }

    /// Busy share (0..=1) of all CPUs since [`HostCpu::start`]; `None` for an interval
    /// shorter than sysinfo can measure.
    pub fn share(mut self) -> Option<f64> {
        if self.started.elapsed() < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            return None;
        }
        self.system.refresh_cpu_usage();
        let pct = f64::from(self.system.global_cpu_usage());
        pct.is_finite().then(|| (pct / 100.0).clamp(0.0, 1.0))
    }
}

/// Judges a round from its measurements.
pub fn assess(
    lags_ms: &[f64],
    dispatch_lags_ms: &[f64],
    cpu_s: Option<f64>,
    host_cpu: Option<f64>,
    coalesced_share: Option<f64>,
    duration_s: f64,
) -> AgentHealth {
    let workers = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers() as u32)
        .unwrap_or(1)
        .max(1);
    let lag = Summary::of(lags_ms.iter().copied());
    let lag_p99 = lag.as_ref().map_or(0.0, |s| s.percentile(99.0));
    let lag_max = lag.as_ref().map_or(0.0, |s| s.max);
    let dispatch_p99 =
        Summary::of(dispatch_lags_ms.iter().copied()).map_or(0.0, |s| s.percentile(99.0));
    let cpu = cpu_s.unwrap_or(0.0);
    let (nice, cpus) = crate::scheduling::current();
    let mut reasons = Vec::new();
    if lag_p99 > LAG_LIMIT_MS {
        reasons.push(format!(
            "event loop lagged (p99 {lag_p99:.1} ms > {LAG_LIMIT_MS} ms)"
        ));
    }
    if dispatch_p99 > DISPATCH_LIMIT_MS {
        reasons.push(format!(
            "requests left late against their schedule (p99 {dispatch_p99:.1} ms > {DISPATCH_LIMIT_MS} ms)"
        ));
    }
    if duration_s > 1.0 && cpu / duration_s > CPU_LIMIT * f64::from(workers) {
        reasons.push(format!(
            "CPU saturated ({:.0} % of {workers} cores)",
            100.0 * cpu / duration_s / f64::from(workers)
        ));
    }
    // The host's CPU is reported (`host_cpu_busy`), never a reason: the engine often shares
    // the host and keeps it busy while the agent is on time. Starvation shows in the
    // agent's own lateness and lag above.
    if let Some(c) = coalesced_share.filter(|c| *c > COALESCE_LIMIT) {
        reasons.push(format!(
            "{:.0} % of chunks were read together with the previous one (the reader is behind the stream)",
            c * 100.0
        ));
    }
    AgentHealth {
        event_loop_lag_p99_ms: lag_p99,
        coalesced_chunk_share: coalesced_share.unwrap_or(0.0),
        host_cpu_busy: host_cpu.unwrap_or(0.0),
        event_loop_lag_max_ms: lag_max,
        dispatch_lag_p99_ms: dispatch_p99,
        cpu_seconds: cpu,
        worker_threads: workers,
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
        generator_saturated: !reasons.is_empty(),
        saturation_reason: reasons.join("; "),
        nice,
        cpus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_exist_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(kvbench_common::process::cpu_seconds().is_some());
            let cpu = HostCpu::start();
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            assert!(cpu.share().is_some_and(|s| (0.0..=1.0).contains(&s)));
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn lag_and_lateness_flag_saturation() {
        let calm = assess(
            &[0.5; 100],
            &[0.2; 100],
            Some(0.1),
            Some(0.5),
            Some(0.01),
            10.0,
        );
        assert!(!calm.generator_saturated, "{}", calm.saturation_reason);
        let mut lags = vec![0.5; 95];
        lags.extend([40.0; 5]);
        let busy = assess(&lags, &[], Some(0.1), None, None, 10.0);
        assert!(busy.generator_saturated);
        assert!(
            busy.saturation_reason.contains("event loop"),
            "{}",
            busy.saturation_reason
        );
        let late = assess(&[0.5; 100], &[20.0; 100], None, None, None, 10.0);
        assert!(
            late.saturation_reason.contains("late"),
            "{}",
            late.saturation_reason
        );
        let behind = assess(&[0.5; 100], &[], None, None, Some(0.9), 10.0);
        assert!(
            behind.saturation_reason.contains("behind"),
            "{}",
            behind.saturation_reason
        );
        // An engine on the same host keeps its CPU busy; an agent on time is not saturated.
        let shared = assess(&[0.5; 100], &[0.2; 100], Some(0.05), Some(0.99), None, 10.0);
        assert!(!shared.generator_saturated, "{}", shared.saturation_reason);
        assert_eq!(shared.host_cpu_busy, 0.99);
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_measures_a_blocked_loop() {
        let stop = CancellationToken::new();
        let probe = lag_probe(stop.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        let lags = probe.await.expect("probe");
        assert!(lags.len() >= 9, "{}", lags.len());
        assert!(lags.iter().all(|l| *l < 1.5), "{lags:?}");
    }
}
