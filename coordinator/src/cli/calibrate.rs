//! `kvbench calibrate`: measures the harness's own overhead on this machine.
//!
//! Method: for each concurrency, start kvbench-sim in fixed-latency mode (every first token
//! written exactly `--ttft-ms` after the request arrived, then one token every `--itl-ms`,
//! whatever the load) and a kvbench-agent, each as its own process (this binary, run as
//! `internal-sim` / `internal-agent`), so that the agent's CPU and memory are its own.
//! The coordinator drives one closed-loop round of short unique prompts over gRPC, exactly
//! as `kvbench run` does. For every request the sim stamps its own TTFT (arrival to first
//! token written) into the stream; the harness's TTFT overhead is the client's TTFT minus
//! that stamp. A closed loop starts with a burst (the first `concurrency` requests all
//! released at once); the overhead is reported for the steady state after that first wave,
//! and for the first wave alone. ITL is as measured by the client. Agent CPU and peak RSS come from the agent
//! process's /proc entries; RSS per stream is (peak - RSS before the round) / concurrency.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::output::calibration::Record;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use kvbench_common::agent::{RoundEvent, RoundRequest, RoundRequests};
use kvbench_common::load::{Arrivals, LoadSpec};
use kvbench_common::plan::ApiFlavor;
use kvbench_common::record::{Outcome, RequestRecord};
use kvbench_common::results::RoundStats;
use kvbench_common::stats::{StatsOptions, Summary};
use kvbench_common::workload::{OutputDist, WorkloadKind, WorkloadParams, WorkloadSpec};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::agents::{AgentClient, RoundEnd};

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Concurrencies to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024,4096")]
    pub concurrency: Vec<u32>,
    /// The sim's exact time to first token, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub ttft_ms: f64,
    /// The sim's exact time between tokens, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub itl_ms: f64,
    /// Output tokens per request.
    #[arg(long, default_value_t = 64)]
    pub output_tokens: u32,
    /// Requests per concurrency (default: 4 x concurrency, at least 50, at most 4,096 unless
    /// the concurrency is higher).
    #[arg(long)]
    pub requests: Option<u32>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The agent's telemetry during the runs: `on` (its defaults: NVML at 10 Hz where
    /// present, host and engine metrics at 1 Hz), `off`, or `both` (off then on at each
    /// concurrency, side by side: what sampling costs).
    #[arg(long, value_enum, default_value_t = TelemetryMode::On)]
    pub telemetry: TelemetryMode,
    /// Measure each point this many times (each with fresh processes) and report the
    /// median and the range.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Run the sim on the last core and the harness (agent and coordinator) on the others,
    /// so that the sim's own lag is not billed to the harness (needs 2 cores and `taskset`).
    #[arg(long)]
    pub pin: bool,
    /// Measure against this fixed-latency engine instead of starting kvbench-sim (one that
    /// stamps `kvbench_server_ttft_us` in its first token's event, such as
    /// `scripts/stamping_mock.c`; give it the same TTFT and ITL).
    #[arg(long)]
    pub engine: Option<String>,
    /// Reach the agent over mutual TLS with a bearer token (certificates from `kvbench
    /// certs init` in a temporary folder), as a fleet's coordinator does: TLS is on the
    /// coordinator-to-agent path only, so the TTFT overhead should not change.
    #[arg(long)]
    pub tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TelemetryMode {
    On,
    Off,
    Both,
}

#[derive(Debug, Clone, Serialize)]
pub struct P50P99 {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl P50P99 {
    fn of(samples: impl IntoIterator<Item = f64>) -> P50P99 {
        let s = Summary::of(samples);
        P50P99 {
            p50: s.as_ref().map(Summary::median),
            p99: s.as_ref().map(|s| s.percentile(99.0)),
        }
    }
}

/// One concurrency's figures (the JSON's `runs[]`).
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationRun {
    pub concurrency: u32,
    /// Which repeat of this point it is (from 1).
    pub repeat: u32,
    /// Whether the agent sampled telemetry during this run.
    pub telemetry: bool,
    pub requests: u32,
    pub failed: u32,
    /// Client TTFT minus the sim's stamped TTFT, in steady state: over every request but the
    /// first wave (the first `concurrency` requests, released all at once at the start).
    pub ttft_overhead_ms: P50P99,
    /// The same over the first wave alone (its start-up burst).
    pub first_wave_ttft_overhead_ms: P50P99,
    pub itl_ms: P50P99,
    /// Most requests the sim ran at once.
    pub max_concurrent_requests: u64,
    /// Most requests in flight at once as the client saw them.
    pub client_max_concurrent_requests: u32,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub cpu_s_per_1k_requests: Option<f64>,
    pub peak_rss_bytes: u64,
    pub rss_per_stream_bytes: Option<f64>,
    pub event_loop_lag_p99_ms: f64,
    pub host_cpu_busy: f64,
    /// Share of chunk gaps under 0.1 ms (two events out of one read: the reader is late).
    pub coalesced_chunk_share: f64,
    pub generator_saturated: bool,
    pub saturation_reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    pub kvbench_version: String,
    pub ttft_ms: f64,
    pub itl_ms: f64,
    pub output_tokens: u32,
    pub cores: usize,
    pub runs: Vec<CalibrationRun>,
}

/// A child process of this binary that prints `... listening on ADDR` first.
pub(crate) struct Service {
    child: Child,
    pub(crate) addr: SocketAddr,
}

/// Which cores the sim and the harness run on (`--pin`), as `taskset` lists them.
#[derive(Debug, Clone)]
struct Pinning {
    sim: String,
    harness: String,
}

impl Pinning {
    /// The sim on the last core, the harness on the others; this process moves there now.
    fn apply(cores: usize) -> anyhow::Result<Pinning> {
        if cores < 2 {
            bail!("--pin needs at least 2 cores (this machine has {cores})");
        }
        let p = Pinning {
            sim: (cores - 1).to_string(),
            harness: format!("0-{}", cores - 2),
        };
        let status = std::process::Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &p.harness,
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .status()
            .context("--pin runs taskset (util-linux), which could not be started")?;
        if !status.success() {
            bail!("taskset could not pin this process to cores {}", p.harness);
        }
        Ok(p)
    }
}

impl Service {
    pub(crate) async fn start(args: &[String]) -> anyhow::Result<Service> {
        Self::start_on(args, None).await
    }

    /// Starts the child, on the given cores (`taskset -c`) when some are given.
    async fn start_on(args: &[String], cores: Option<&str>) -> anyhow::Result<Service> {
        let exe = std::env::current_exe().context("cannot find the kvbench binary")?;
        let mut command = match cores {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", c]).arg(&exe);
                t
            }
            None => Command::new(&exe),
        };
        let mut child = command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} {}", exe.display(), args.join(" ")))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("the child did not start within 20 s")??
            .context("the child exited before listening")?;
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected first line from the child: {line:?}"))?;
        Ok(Service { child, addr })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn default_requests(c: u32) -> u32 {
    (4 * c).clamp(50, 4096.max(c))
}

/// Runs the calibration and prints its table.
pub async fn run(args: &CalibrateArgs) -> anyhow::Result<CalibrationReport> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs concurrencies of at least 1");
    }
    if !(args.ttft_ms >= 0.0 && args.itl_ms >= 0.0 && args.output_tokens > 0) {
        bail!("--ttft-ms and --itl-ms must be >= 0, --output-tokens > 0");
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let pinning = if args.pin {
        Some(Pinning::apply(cores)?)
    } else {
        None
    };
    outln!(
        "kvbench calibrate: sim TTFT {} ms, ITL {} ms, {} output tokens; sim and agent as separate processes on this machine ({cores} cores){}{}; each point {} time(s)",
        args.ttft_ms,
        args.itl_ms,
        args.output_tokens,
        if args.tls {
            "; the agent reached over mutual TLS with a token"
        } else {
            ""
        },
        pinning.as_ref().map_or(String::new(), |p| format!(
            ", sim pinned to core {} and the harness to cores {}",
            p.sim, p.harness
        )),
        args.repeat
    );
    let mut runs = Vec::new();
    let modes: &[bool] = match args.telemetry {
        TelemetryMode::On => &[true],
        TelemetryMode::Off => &[false],
        TelemetryMode::Both => &[false, true],
    };
    for &c in &args.concurrency {
        let n = args.requests.unwrap_or_else(|| default_requests(c));
        for &telemetry in modes {
            for i in 1..=args.repeat {
                outln!(
                    "  concurrency {c}: {n} requests, telemetry {} ({i} of {}) ...",
                    if telemetry { "on" } else { "off" },
                    args.repeat
                );
                let mut run = one(args, c, n, telemetry, pinning.as_ref())
                    .await
                    .with_context(|| format!("calibration at concurrency {c}"))?;
                run.repeat = i;
                runs.push(run);
            }
        }
    }
    let report = CalibrationReport {
        kvbench_version: env!("CARGO_PKG_VERSION").into(),
        ttft_ms: args.ttft_ms,
        itl_ms: args.itl_ms,
        output_tokens: args.output_tokens,
        cores,
        runs,
    };
    print_table(&report);
    if args.repeat > 1 {
        print_spread(&report);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        outln!("JSON: {}", path.display());
    }
    let record = record_of(&report);
    outln!("Verdict: {}", record.verdict);
    match record.save() {
        Ok(path) => outln!("Kept for this host's reports: {}", path.display()),
        Err(e) => outln!("warning: the verdict is not kept for reports: {e:#}"),
    }
    Ok(report)
}

/// The verdict of a calibration: the harness's largest steady-state TTFT overhead, up
/// to the largest concurrency measured, or where its load generator saturated.
pub fn record_of(report: &CalibrationReport) -> Record {
    let max = |f: fn(&CalibrationRun) -> Option<f64>| {
        report
            .runs
            .iter()
            .filter_map(f)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let top = report.runs.iter().map(|r| r.concurrency).max().unwrap_or(0);
    let saturated: Vec<u32> = report
        .runs
        .iter()
        .filter(|r| r.generator_saturated)
        .map(|r| r.concurrency)
        .collect();
    let shown = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2} ms"));
    let verdict = match saturated.iter().min() {
        Some(c) => format!(
            "the load generator saturated at {c} streams (of up to {top} measured): figures of rounds at that load include the harness's own delay"
        ),
        None => format!(
            "the harness adds at most {} (p50) / {} (p99) to TTFT in steady state at up to {top} streams, and its load generator kept up",
            shown(max(|r| r.ttft_overhead_ms.p50)),
            shown(max(|r| r.ttft_overhead_ms.p99)),
        ),
    };
    Record {
        hostname: kvbench_common::util::hostname(),
        at: kvbench_common::util::rfc3339_utc(std::time::SystemTime::now()),
        kvbench_version: report.kvbench_version.clone(),
        verdict,
    }
}

async fn one(
    args: &CalibrateArgs,
    c: u32,
    n: u32,
    telemetry: bool,
    pinning: Option<&Pinning>,
) -> anyhow::Result<CalibrationRun> {
    let sim = match &args.engine {
        Some(_) => None,
        None => Some(start_sim(args, pinning).await?),
    };
    let sim_url = match (&sim, &args.engine) {
        (Some(sim), _) => format!("http://{}", sim.addr),
        (None, Some(url)) => url.trim_end_matches('/').to_owned(),
        (None, None) => unreachable!("a sim is started when no engine is given"),
    };
    let mut agent_args: Vec<String> = vec![
        "internal-agent".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let dir = tempfile::tempdir()?;
    let tls = if args.tls {
        let tls = crate::agents::certs::LocalTls::issue(
            &dir.path().join("pki"),
            &["calibrate".to_owned()],
        )?;
        let config = dir.path().join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "name: calibrate\nengine: {{kind: vllm, base_url: \"{sim_url}\"}}\n{}",
                tls.agent_yaml("calibrate")
            ),
        )?;
        agent_args.extend(["--config".into(), config.display().to_string()]);
        Some(tls)
    } else {
        agent_args.extend([
            "--engine".into(),
            sim_url.clone(),
            "--name".into(),
            "calibrate".into(),
        ]);
        None
    };
    if !telemetry {
        agent_args.push("--no-telemetry".into());
    }
    let agent = Service::start_on(&agent_args, pinning.map(|p| p.harness.as_str())).await?;
    let result = measure(args, c, n, &sim_url, &agent, telemetry, tls.as_ref()).await;
    agent.stop().await;
    if let Some(sim) = sim {
        sim.stop().await;
    }
    result
}

/// kvbench-sim in fixed-latency mode, as its own process.
async fn start_sim(args: &CalibrateArgs, pinning: Option<&Pinning>) -> anyhow::Result<Service> {
    Service::fixed_sim(args.ttft_ms, args.itl_ms, pinning.map(|p| p.sim.as_str())).await
}

impl Service {
    /// kvbench-sim in fixed-latency mode (first token after `ttft_ms`, then one every
    /// `itl_ms`, however many requests), on the given cores when some are given.
    pub(crate) async fn fixed_sim(
        ttft_ms: f64,
        itl_ms: f64,
        cores: Option<&str>,
    ) -> anyhow::Result<Service> {
        Service::start_on(
            &[
                "internal-sim".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--fixed-ttft-ms".into(),
                ttft_ms.to_string(),
                "--fixed-itl-ms".into(),
                itl_ms.to_string(),
                "--max-num-seqs".into(),
                "1000000".into(),
            ],
            cores,
        )
        .await
    }
}

/// The round calibration sends: `n` tiny unique prompts at concurrency `c`, closed loop.
fn calibration_round(c: u32, n: u32, output_tokens: u32) -> RoundRequest {
    RoundRequest {
        scenario_id: format!("calibrate-{c}"),
        scenario_name: "calibrate".into(),
        round: 1,
        workload: WorkloadSpec {
            kind: WorkloadKind::ColdStart,
            seed: u64::from(c),
            num_requests: n,
            output_tokens,
            output: OutputDist::Fixed,
            params: WorkloadParams {
                prompt_tokens: Some(16),
                ..Default::default()
            },
        },
        load: LoadSpec {
            arrivals: Arrivals::Closed { concurrency: c },
            duration_s: None,
            warmup_requests: 0,
            ttft_timeout_s: 120.0,
            idle_timeout_s: 120.0,
        },
        model: "calibrate".into(),
        api: ApiFlavor::Chat,
        enforce_output_length: true,
        requests: RoundRequests::Generated,
        tokenizer_json: None,
        engine_tokenizer: false,
        share: None,
        start_at_us: None,
        reconnect_window: kvbench_common::agent::DEFAULT_RECONNECT_WINDOW,
    }
}

async fn measure(
    args: &CalibrateArgs,
    c: u32,
    n: u32,
    sim_url: &str,
    agent: &Service,
    telemetry: bool,
    tls: Option<&crate::agents::certs::LocalTls>,
) -> anyhow::Result<CalibrationRun> {
    let a = match tls {
        Some(tls) => {
            AgentClient::connect_with(
                &format!("https://{}", agent.addr),
                &tls.access("calibrate")?,
                std::time::Duration::from_secs(5),
            )
            .await?
        }
        None => AgentClient::connect(&format!("http://{}", agent.addr)).await?,
    };
    let baseline_rss = agent
        .pid()
        .and_then(|pid| kvbench_common::process::rss_bytes(&pid.to_string()));
    let req = calibration_round(c, n, args.output_tokens);
    let mut records = Vec::new();
    let run = a
        .run_round(&req, &CancellationToken::new(), |e| {
            if let RoundEvent::Record(r) = e {
                records.push(r.clone());
            }
            true
        })
        .await;
    let f = match run.end {
        RoundEnd::Finished(f) => f,
        RoundEnd::Cancelled => bail!("the round was cancelled"),
        RoundEnd::Failed(e) => bail!("the round failed: {e}"),
    };
    let health = f.health.unwrap_or_default();
    let duration_s = f.duration_ms / 1000.0;
    let mut ok: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .collect();
    ok.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    let overhead = |r: &&RequestRecord| Some(r.ttft_ms()? - r.engine_ttft_ms?);
    let wave = (c as usize).min(ok.len());
    let (first_wave, steady) = if ok.len() > wave {
        ok.split_at(wave)
    } else {
        (&ok[..], &ok[..])
    };
    let sim_metrics = kvbench_agent::scrape_metrics(
        &format!("{sim_url}/metrics"),
        &["kvbench_sim:max_num_requests_running"],
        std::time::Duration::from_secs(1),
    )
    .await
    .unwrap_or_default();
    let out_tokens: u64 = ok.iter().map(|r| u64::from(r.generated_tokens())).sum();
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    Ok(CalibrationRun {
        concurrency: c,
        repeat: 1,
        telemetry,
        requests: n,
        failed: (records.len() - ok.len()) as u32,
        ttft_overhead_ms: P50P99::of(steady.iter().filter_map(overhead)),
        first_wave_ttft_overhead_ms: P50P99::of(first_wave.iter().filter_map(overhead)),
        itl_ms: P50P99::of(ok.iter().flat_map(|r| r.itls_ms())),
        max_concurrent_requests: sim_metrics
            .get("kvbench_sim:max_num_requests_running")
            .map_or(0, |v| *v as u64),
        client_max_concurrent_requests: RoundStats::from_records(
            1,
            duration_s,
            &records,
            &StatsOptions::default(),
        )
        .max_concurrent_requests,
        request_throughput: per_s(ok.len() as f64),
        output_throughput: per_s(out_tokens as f64),
        cpu_s_per_1k_requests: (health.cpu_seconds > 0.0 && !records.is_empty())
            .then(|| health.cpu_seconds / records.len() as f64 * 1000.0),
        peak_rss_bytes: health.peak_rss_bytes,
        rss_per_stream_bytes: baseline_rss
            .filter(|_| health.peak_rss_bytes > 0)
            .map(|b| health.peak_rss_bytes.saturating_sub(b) as f64 / f64::from(c)),
        event_loop_lag_p99_ms: health.event_loop_lag_p99_ms,
        host_cpu_busy: health.host_cpu_busy,
        coalesced_chunk_share: health.coalesced_chunk_share,
        generator_saturated: health.generator_saturated,
        saturation_reason: health.saturation_reason,
    })
}

fn print_table(r: &CalibrationReport) {
    let f = |v: Option<f64>, d: usize| v.map_or("n/a".to_owned(), |v| format!("{v:.d$}"));
    outln!();
    outln!("| concurrency | telemetry | requests | failed | TTFT overhead p50 / p99 ms | first wave p50 / p99 ms | ITL p50 / p99 ms | max concurrent (sim) | req/s | output tok/s | agent CPU s / 1k req | agent peak RSS MiB | RSS / stream KiB | loop lag p99 ms | host CPU | saturated |");
    outln!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for x in &r.runs {
        outln!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} | {:.1} | {:.0} | {} | {:.1} | {} | {:.2} | {:.0} % | {} |",
            x.concurrency,
            if x.telemetry { "on" } else { "off" },
            x.requests,
            x.failed,
            f(x.ttft_overhead_ms.p50, 2),
            f(x.ttft_overhead_ms.p99, 2),
            f(x.first_wave_ttft_overhead_ms.p50, 2),
            f(x.first_wave_ttft_overhead_ms.p99, 2),
            f(x.itl_ms.p50, 2),
            f(x.itl_ms.p99, 2),
            x.max_concurrent_requests,
            x.request_throughput,
            x.output_throughput,
            f(x.cpu_s_per_1k_requests, 3),
            x.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            f(x.rss_per_stream_bytes.map(|b| b / 1024.0), 1),
            x.event_loop_lag_p99_ms,
            x.host_cpu_busy * 100.0,
            if x.generator_saturated { format!("YES: {}", x.saturation_reason) } else { "no".into() },
        );
    }
}

/// With `--repeat`: per point, the median of the repeats' figures and their range.
fn print_spread(r: &CalibrationReport) {
    let mut points: Vec<(u32, bool)> = r
        .runs
        .iter()
        .map(|x| (x.concurrency, x.telemetry))
        .collect();
    points.dedup();
    outln!();
    outln!("| concurrency | telemetry | repeats | TTFT overhead p50 ms: median [min - max] | p99 ms: median [min - max] | first wave p50 ms: median [min - max] |");
    outln!("|---|---|---|---|---|---|");
    for (c, t) in points {
        let of = |x: &CalibrationRun| x.concurrency == c && x.telemetry == t;
        let spread = |f: fn(&CalibrationRun) -> Option<f64>| {
            let v: Vec<f64> = r.runs.iter().filter(|x| of(x)).filter_map(f).collect();
            match Summary::of(v.iter().copied()) {
                Some(s) => format!("{:.2} [{:.2} - {:.2}]", s.median(), s.min, s.max),
                None => "n/a".to_owned(),
            }
        };
        outln!(
            "| {c} | {} | {} | {} | {} | {} |",
            if t { "on" } else { "off" },
            r.runs.iter().filter(|x| of(x)).count(),
            spread(|x| x.ttft_overhead_ms.p50),
            spread(|x| x.ttft_overhead_ms.p99),
            spread(|x| x.first_wave_ttft_overhead_ms.p50),
        );
    }
}
