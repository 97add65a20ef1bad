//! `kvbench scale`: whether one coordinator keeps up with many agents streaming records.
//!
//! Method: for each agent count N, start N kvbench-sim and N kvbench-agent processes (this
//! binary, run as `internal-sim` / `internal-agent`; the sims in fixed-latency mode: first
//! token after `--ttft-ms`, then one every `--itl-ms`), and run, in this process, exactly
//! what `kvbench run` runs: a plan with the N agents in its `agents:` and one scenario split
//! across them (`placement: split`) at N x `--streams` concurrency, so that each agent
//! holds `--streams` requests in flight and streams their records to this coordinator.
//! Measured on the coordinator's own process: CPU seconds (user + system, /proc/self/stat)
//! over the run, and its peak RSS during the run (VmHWM, reset before each run). Records
//! received are those in the scenario's results file; requests sent are what the sims
//! counted as served (`vllm:request_success_total`), an independent count.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::calibrate::Service;

#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Agent counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub agents: Vec<u32>,
    /// Requests in flight per agent.
    #[arg(long, default_value_t = 1024)]
    pub streams: u32,
    /// Requests each stream sends in turn (the round's records per agent: streams x this).
    #[arg(long, default_value_t = 2)]
    pub requests_per_stream: u32,
    /// The sims' exact time to first token, ms.
    #[arg(long, default_value_t = 50.0)]
    pub ttft_ms: f64,
    /// The sims' exact time between tokens, ms.
    #[arg(long, default_value_t = 20.0)]
    pub itl_ms: f64,
    /// Output tokens per request.
    #[arg(long, default_value_t = 32)]
    pub output_tokens: u32,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// How the coordinator reaches the agents: `plain` (gRPC in plaintext), `tls` (mutual
    /// TLS and a bearer token, certificates from `kvbench certs init` in a temporary
    /// folder), or `both` (plain, then TLS, at each agent count: what TLS costs).
    #[arg(long, value_enum, default_value_t = Transport::Plain)]
    pub transport: Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Plain,
    Tls,
    Both,
}

/// One agent count's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRun {
    pub agents: u32,
    /// `plain` or `tls` (mutual TLS and a token).
    pub transport: Transport,
    pub streams_per_agent: u32,
    /// Requests the sims served.
    pub sent: u64,
    /// Records in the results file.
    pub received: u64,
    pub failed: u64,
    pub round_s: f64,
    pub records_per_s: f64,
    pub coordinator_cpu_s: f64,
    pub cpu_s_per_1k_records: f64,
    /// The coordinator's peak RSS during the run, and before it.
    pub peak_rss_bytes: u64,
    pub rss_before_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub kvbench_version: String,
    pub cores: usize,
    pub ttft_ms: f64,
    pub itl_ms: f64,
    pub output_tokens: u32,
    pub requests_per_stream: u32,
    pub runs: Vec<ScaleRun>,
}

pub async fn run(args: &ScaleArgs) -> anyhow::Result<ScaleReport> {
    if args.agents.is_empty() || args.agents.contains(&0) || args.streams == 0 {
        bail!("--agents needs counts of at least 1, --streams at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    outln!(
        "kvbench scale: {} streams per agent, {} requests each, sims TTFT {} ms / ITL {} ms, {} output tokens; every process on this machine ({cores} cores)",
        args.streams, args.requests_per_stream, args.ttft_ms, args.itl_ms, args.output_tokens
    );
    let mut runs = Vec::new();
    let transports: &[Transport] = match args.transport {
        Transport::Both => &[Transport::Plain, Transport::Tls],
        Transport::Plain => &[Transport::Plain],
        Transport::Tls => &[Transport::Tls],
    };
    for &n in &args.agents {
        for &t in transports {
            outln!(
                "  {n} agent(s){} ...",
                if t == Transport::Tls {
                    ", TLS and token"
                } else {
                    ""
                }
            );
            runs.push(
                one(args, n, t)
                    .await
                    .with_context(|| format!("with {n} agents"))?,
            );
        }
    }
    let report = ScaleReport {
        kvbench_version: env!("CARGO_PKG_VERSION").into(),
        cores,
        ttft_ms: args.ttft_ms,
        itl_ms: args.itl_ms,
        output_tokens: args.output_tokens,
        requests_per_stream: args.requests_per_stream,
        runs,
    };
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        outln!("JSON: {}", path.display());
    }
    Ok(report)
}

async fn one(args: &ScaleArgs, n: u32, transport: Transport) -> anyhow::Result<ScaleRun> {
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let names: Vec<String> = (0..n).map(|i| format!("scale-{i}")).collect();
    let tls = match transport {
        Transport::Tls => Some(crate::agents::certs::LocalTls::issue(
            &dir.path().join("pki"),
            &names,
        )?),
        _ => None,
    };
    let mut sims = Vec::new();
    let mut agents = Vec::new();
    for name in &names {
        let sim = Service::fixed_sim(args.ttft_ms, args.itl_ms, None).await?;
        let mut agent_args: Vec<String> = vec![
            "internal-agent".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--no-telemetry".into(),
        ];
        match &tls {
            Some(tls) => {
                let config = dir.path().join(format!("{name}.yaml"));
                std::fs::write(
                    &config,
                    format!(
                        "name: {name}\nengine: {{kind: vllm, base_url: \"http://{}\"}}\n{}",
                        sim.addr,
                        tls.agent_yaml(name)
                    ),
                )?;
                agent_args.push("--config".into());
                agent_args.push(config.display().to_string());
            }
            None => agent_args.extend([
                "--engine".into(),
                format!("http://{}", sim.addr),
                "--name".into(),
                name.clone(),
            ]),
        }
        let agent = Service::start(&agent_args).await?;
        sims.push(sim);
        agents.push(agent);
    }
    let result = measure(args, n, &sims, &agents, tls.as_ref()).await;
    for s in sims.into_iter().chain(agents) {
        s.stop().await;
    }
    result
}

async fn measure(
    args: &ScaleArgs,
    n: u32,
    sims: &[Service],
    agents: &[Service],
    tls: Option<&crate::agents::certs::LocalTls>,
) -> anyhow::Result<ScaleRun> {
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let per_agent = args.streams * args.requests_per_stream;
    std::fs::write(
        dir.path().join("scale.yaml"),
        format!(
            "endpoint: agent\nnum_requests: {}\noutput_tokens: {}\nttft_timeout_s: 600\nworkload:\n  prompt_tokens: 16\n",
            per_agent * n,
            args.output_tokens
        ),
    )?;
    let mut plan = String::from("output_dir: out\nisolation: none\nwait_between_scenarios: 0\n");
    if let Some(tls) = tls {
        plan.push_str(&tls.plan_yaml());
    }
    plan.push_str("agents:\n");
    for (i, a) in agents.iter().enumerate() {
        plan.push_str(&format!(
            "  - {{name: scale-{i}, address: \"{}://{}\"}}\n",
            if tls.is_some() { "https" } else { "http" },
            a.addr
        ));
    }
    plan.push_str(&format!(
        "test_scenarios:\n  - {{name: sim-scale-split, config_file: scale.yaml, scenario: cold_start, rounds: 1, concurrency: {}, agents: [{}], placement: split}}\n",
        args.streams * n,
        (0..n).map(|i| format!("scale-{i}")).collect::<Vec<_>>().join(", ")
    ));
    let plan_path = dir.path().join("plan.yaml");
    std::fs::write(&plan_path, plan)?;
    let plan = kvbench_common::plan::load(&plan_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let inputs = crate::engine::inputs::Inputs::load(&plan).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut by_name = std::collections::BTreeMap::new();
    for r in crate::agents::reach(&plan).await {
        let (a, _) = r.result.map_err(|e| anyhow::anyhow!("{e}"))?;
        by_name.insert(r.spec.name, a);
    }
    let set = crate::agents::AgentSet {
        by_endpoint: Default::default(),
        by_name,
    };
    // Peak RSS from here on: the kernel's high-water mark, reset.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = kvbench_common::process::rss_bytes("self").unwrap_or(0);
    let cpu_before = kvbench_common::process::cpu_seconds().unwrap_or(0.0);
    let summary = crate::engine::plan_run::run_plan(
        &plan,
        &inputs,
        &set,
        CancellationToken::new(),
        &mut crate::engine::events::Silent,
        super::run::write_reports,
    )
    .await?;
    let cpu = kvbench_common::process::cpu_seconds().unwrap_or(0.0) - cpu_before;
    let peak = kvbench_common::process::peak_rss_bytes().unwrap_or(0);
    let outcome = summary
        .scenarios
        .first()
        .context("the scenario did not run")?;
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(
        outcome.results_path.as_ref().context("no results file")?,
    )?)?;
    let records = results["records"].as_array().context("no records")?;
    let failed = records.iter().filter(|r| r["outcome"] != "ok").count() as u64;
    let mut sent = 0.0;
    for s in sims {
        let m = kvbench_agent::scrape_metrics(
            &format!("http://{}/metrics", s.addr),
            &["vllm:request_success_total"],
            std::time::Duration::from_secs(5),
        )
        .await?;
        sent += m.get("vllm:request_success_total").copied().unwrap_or(0.0);
    }
    let round_s = outcome.stats.rounds.first().map_or(0.0, |r| r.duration);
    let received = records.len() as u64;
    Ok(ScaleRun {
        agents: n,
        transport: if tls.is_some() {
            Transport::Tls
        } else {
            Transport::Plain
        },
        streams_per_agent: args.streams,
        sent: sent as u64,
        received,
        failed,
        round_s,
        records_per_s: if round_s > 0.0 {
            received as f64 / round_s
        } else {
            0.0
        },
        coordinator_cpu_s: cpu,
        cpu_s_per_1k_records: cpu / (received.max(1) as f64) * 1000.0,
        peak_rss_bytes: peak,
        rss_before_bytes: rss_before,
    })
}

fn print_table(r: &ScaleReport) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    outln!();
    outln!("| agents | transport | streams | requests sent (sims) | records received | failed | round s | records/s | coordinator CPU s | CPU s / 1k records | coordinator RSS before / peak MiB |");
    outln!("|---|---|---|---|---|---|---|---|---|---|---|");
    for x in &r.runs {
        outln!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.3} | {:.0} / {:.0} |",
            x.agents,
            match x.transport {
                Transport::Tls => "TLS + token",
                _ => "plain",
            },
            x.agents * x.streams_per_agent,
            x.sent,
            x.received,
            x.failed,
            x.round_s,
            x.records_per_s,
            x.coordinator_cpu_s,
            x.cpu_s_per_1k_records,
            mib(x.rss_before_bytes),
            mib(x.peak_rss_bytes),
        );
    }
}
