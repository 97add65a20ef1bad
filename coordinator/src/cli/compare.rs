//! `kvbench compare RUN_A RUN_B`: reads both runs, compares them
//! ([`crate::present::compare`]) and prints the comparison; exit 1 when a `--fail-on`
//! metric regressed, 2 when a run cannot be read or an option is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::output::{self, SavedRun};
use crate::present::compare::{compare, markdown, Comparison, Metric, Verdict};

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The first run's output folder (the baseline).
    pub run_a: PathBuf,
    /// The second run's output folder (what is judged).
    pub run_b: PathBuf,
    /// Which run in RUN_A, by the <ts> of its multi_scenario_run_<ts>.json (default: newest).
    #[arg(long)]
    pub run_a_ts: Option<String>,
    /// Which run in RUN_B (default: newest).
    #[arg(long)]
    pub run_b_ts: Option<String>,
    /// Changes whose whole 95 % interval stays within ± this many percent are noise.
    #[arg(long, default_value_t = 3.0)]
    pub noise_threshold: f64,
    /// Exit 1 when one of these metrics regressed significantly in any scenario and round
    /// (ttft_mean, ttft_p50, ttft_p99, tpot_mean, e2el_mean, e2el_p99).
    #[arg(long, value_delimiter = ',')]
    pub fail_on: Vec<String>,
    /// Also write the comparison as markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Also write the comparison as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn load(dir: &Path, ts: Option<&str>) -> anyhow::Result<SavedRun> {
    let file = match ts {
        Some(ts) => dir.join(format!("multi_scenario_run_{ts}.json")),
        None => output::latest_run(dir)?,
    };
    SavedRun::read(dir, &file)
}

/// Runs `kvbench compare`: the markdown on stdout, files as asked; whether a `--fail-on`
/// metric regressed.
pub fn run(args: &CompareArgs) -> anyhow::Result<(Comparison, bool)> {
    let fail_on: Vec<Metric> = args
        .fail_on
        .iter()
        .map(|m| {
            Metric::parse(m).with_context(|| {
                format!(
                    "--fail-on: no metric {m:?}; valid: {}",
                    Metric::ALL.map(Metric::name).join(", ")
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        args.noise_threshold >= 0.0 && args.noise_threshold.is_finite(),
        "--noise-threshold must be a percentage of 0 or more"
    );
    let a = load(&args.run_a, args.run_a_ts.as_deref())?;
    let b = load(&args.run_b, args.run_b_ts.as_deref())?;
    let c = compare((&args.run_a, &a), (&args.run_b, &b), args.noise_threshold);
    if let Some(p) = &args.markdown {
        std::fs::write(p, markdown(&c)).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&c)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let failed = c
        .rows
        .iter()
        .any(|r| r.verdict == Verdict::Regressed && fail_on.contains(&r.metric));
    Ok((c, failed))
}

/// `kvbench compare RUN_A RUN_B`: exit 0, 1 when a `--fail-on` metric regressed, 2 when
/// the runs cannot be read or an option is wrong.
pub fn command(args: &CompareArgs) -> ExitCode {
    match run(args) {
        Ok((c, failed)) => {
            outln!("{}", markdown(&c));
            if failed {
                eprintln!(
                    "kvbench compare: a metric of --fail-on ({}) regressed",
                    args.fail_on.join(",")
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
