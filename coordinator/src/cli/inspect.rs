//! `kvbench workload inspect`: reads a config file or a plan, inspects each workload
//! ([`crate::engine::inspect`], which says how) and prints what it found.

use std::path::{Path, PathBuf};

use anyhow::bail;
use kvbench_common::plan;
use kvbench_common::workload::WorkloadKind;

use crate::engine::inspect::{inspect_config, Inspection, Lengths};

#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// A per-scenario config file (give its workload type with --type), or a plan (every
    /// scenario is inspected).
    pub config: PathBuf,
    /// The workload type, for a config file.
    #[arg(long = "type", value_parser = parse_kind)]
    pub kind: Option<WorkloadKind>,
    /// KV block size in tokens.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Cache capacity in blocks (default: unbounded).
    #[arg(long)]
    pub capacity_blocks: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A `--type` that is no workload type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workload type {0:?}; valid types: {types}", types = WorkloadKind::ALL.iter().map(|k| k.label()).collect::<Vec<_>>().join(", "))]
pub struct UnknownWorkloadType(String);

fn parse_kind(s: &str) -> Result<WorkloadKind, UnknownWorkloadType> {
    WorkloadKind::from_label(s).ok_or_else(|| UnknownWorkloadType(s.to_owned()))
}

/// Inspects a config file (with its type) or every scenario of a plan.
pub fn run(args: &InspectArgs) -> anyhow::Result<Vec<Inspection>> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.config.display()))?;
    let is_plan = text.lines().any(|l| l.starts_with("test_scenarios:"));
    let found = if is_plan {
        let p = plan::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
        p.scenarios
            .iter()
            .map(|s| inspect_config(&s.name, &s.config, args.block_size, args.capacity_blocks))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        let Some(kind) = args.kind else {
            bail!(
                "{} is a scenario config file: give its workload type with --type (long_context_high_reuse, multi_turn_conversation, code_generation, batch_processing, cold_start)",
                args.config.display()
            );
        };
        let cfg =
            plan::load_config(Path::new(&args.config), kind).map_err(|e| anyhow::anyhow!("{e}"))?;
        vec![inspect_config(
            &args.config.display().to_string(),
            &cfg,
            args.block_size,
            args.capacity_blocks,
        )?]
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for i in &found {
            print_one(i);
        }
    }
    Ok(found)
}

fn print_one(i: &Inspection) {
    let l = |x: &Option<Lengths>| {
        x.as_ref().map_or("n/a".to_owned(), |x| {
            format!(
                "min {:.0}, mean {:.0}, p50 {:.0}, p90 {:.0}, max {:.0}",
                x.min, x.mean, x.p50, x.p90, x.max
            )
        })
    };
    outln!("{} [{}]", i.name, i.kind);
    outln!(
        "  requests per round:   {} ({} conversations)",
        i.requests,
        i.conversations
    );
    outln!("  lengths in:           {}", i.lengths_in);
    outln!(
        "  input tokens:         {}{}",
        l(&i.input_tokens),
        if i.estimated { " (estimate)" } else { "" }
    );
    outln!("  output tokens:        {}", l(&i.output_tokens));
    outln!(
        "  distinct prefixes:    {} after a common head of {} tokens (distinct KV blocks {} of {})",
        i.distinct_prefixes,
        i.common_prefix_tokens,
        i.distinct_blocks,
        i.total_blocks
    );
    outln!(
        "  perfect-cache hit ratio ({}-token blocks, capacity {}): round 1 {:.1} %, round 2 {:.1} %",
        i.block_size,
        i.capacity_blocks.map_or("unbounded".to_owned(), |c| format!("{c} blocks")),
        i.round1_hit_ratio * 100.0,
        i.round2_hit_ratio * 100.0
    );
}
