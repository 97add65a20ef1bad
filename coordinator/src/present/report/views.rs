//! The report's cross views: each scenario against its `baseline:`, and the scenarios'
//! labels (cloud, deployment, model, ...) pivoted into matrices when the plan varies more
//! than one of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kvbench_common::results::ScenarioStats;
use kvbench_common::stats::intervals::mean_ci95;

use super::markdown::{cell, f, first, last, pct};
use crate::output::SavedRun;

/// `(base - new) / base` in percent: how much lower `new` is.
pub fn reduction_pct(base: Option<f64>, new: Option<f64>) -> Option<f64> {
    match (base, new) {
        (Some(b), Some(n)) if b > 0.0 => Some((b - n) / b * 100.0),
        _ => None,
    }
}

/// `(new - base) / base` in percent: how much higher `new` is.
pub fn increase_pct(base: Option<f64>, new: Option<f64>) -> Option<f64> {
    reduction_pct(base, new).map(|r| -r)
}

fn stats_of<'a>(saved: &'a SavedRun, name: &str) -> Option<&'a ScenarioStats> {
    let i = saved.run.scenarios.iter().position(|s| s.name == name)?;
    saved.stats.get(i)?.as_ref().ok()
}

/// Each scenario with a `baseline:`: its last round against the baseline's last round,
/// beside what it gained over its own round 1.
pub fn baselines(out: &mut String, saved: &SavedRun) {
    let with: Vec<(&str, &str)> = saved
        .run
        .scenarios
        .iter()
        .filter_map(|s| Some((s.name.as_str(), s.baseline.as_deref()?)))
        .collect();
    if with.is_empty() {
        return;
    }
    out.push_str("## Against baselines (last round against the baseline's last round)\n\n| scenario | baseline | mean TTFT ms (scenario / baseline) | TTFT reduction vs baseline | output tok/s (scenario / baseline) | throughput increase vs baseline | TTFT reduction vs its round 1 | throughput increase vs its round 1 |\n|---|---|---|---|---|---|---|---|\n");
    for (name, base) in with {
        let (Some(st), Some(bst)) = (stats_of(saved, name), stats_of(saved, base)) else {
            let _ = writeln!(
                out,
                "| {} | {} | not compared: one of them has no stats | - | - | - | - | - |",
                cell(name),
                cell(base)
            );
            continue;
        };
        let (ttft, base_ttft) = (
            last(st).and_then(|r| r.latency.ttft.mean),
            last(bst).and_then(|r| r.latency.ttft.mean),
        );
        let (tput, base_tput) = (
            last(st).map(|r| r.output_throughput),
            last(bst).map(|r| r.output_throughput),
        );
        let own = st.comparison.as_ref();
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} | {} / {} | {} | {} | {} |",
            cell(name),
            cell(base),
            f(ttft, 1),
            f(base_ttft, 1),
            pct(reduction_pct(base_ttft, ttft)),
            f(tput, 1),
            f(base_tput, 1),
            pct(increase_pct(base_tput, tput)),
            pct(own.and_then(|c| c.ttft_reduction_pct)),
            pct(own.and_then(|c| c.throughput_increase_pct)),
        );
    }
    out.push('\n');
}

/// The labels that take more than one value across the scenarios that ran, in key order.
fn varying(saved: &SavedRun) -> Vec<String> {
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        if st.is_ok() {
            for (k, v) in &s.labels {
                values.entry(k).or_default().insert(v);
            }
        }
    }
    values
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k.to_owned())
        .collect()
}

/// A figure of a scenario shown in the matrices.
struct Figure {
    title: &'static str,
    of: fn(&ScenarioStats) -> Option<f64>,
    show: fn(Option<f64>) -> String,
}

const FIGURES: [Figure; 3] = [
    Figure {
        title: "TTFT reduction (last round against round 1)",
        of: |st| st.comparison.as_ref().and_then(|c| c.ttft_reduction_pct),
        show: pct,
    },
    Figure {
        title: "Round 1 mean TTFT, ms",
        of: |st| first(st).and_then(|r| r.latency.ttft.mean),
        show: |v| f(v, 1),
    },
    Figure {
        title: "Last-round mean TTFT, ms",
        of: |st| last(st).and_then(|r| r.latency.ttft.mean),
        show: |v| f(v, 1),
    },
];

/// The scenarios' labels, and when more than one varies, one matrix per pair of them and
/// figure (a cell of several scenarios shows their mean and how many).
pub fn pivots(out: &mut String, saved: &SavedRun) {
    let keys = varying(saved);
    if keys.is_empty() {
        return;
    }
    out.push_str("## By label\n\n| scenario |");
    for k in &keys {
        let _ = write!(out, " {} |", cell(k));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(keys.len()));
    out.push('\n');
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        if st.is_err() {
            continue;
        }
        let _ = write!(out, "| {} |", cell(&s.name));
        for k in &keys {
            let _ = write!(
                out,
                " {} |",
                cell(s.labels.get(k).map_or("-", String::as_str))
            );
        }
        out.push('\n');
    }
    out.push('\n');
    for (i, rows) in keys.iter().enumerate() {
        for cols in &keys[i + 1..] {
            for fig in &FIGURES {
                matrix(out, saved, rows, cols, fig);
            }
        }
    }
}

fn matrix(out: &mut String, saved: &SavedRun, rows: &str, cols: &str, fig: &Figure) {
    let mut cells: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let (mut row_values, mut col_values) = (BTreeSet::new(), BTreeSet::new());
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        let (Ok(st), Some(r), Some(c)) = (st, s.labels.get(rows), s.labels.get(cols)) else {
            continue;
        };
        row_values.insert(r.as_str());
        col_values.insert(c.as_str());
        let entry = cells.entry((r.as_str(), c.as_str())).or_default();
        if let Some(v) = (fig.of)(st).filter(|v| v.is_finite()) {
            entry.push(v);
        }
    }
    let _ = writeln!(out, "**{}: {} × {}**\n", fig.title, cell(rows), cell(cols));
    let _ = write!(out, "| {} \\ {} |", cell(rows), cell(cols));
    for c in &col_values {
        let _ = write!(out, " {} |", cell(c));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(col_values.len()));
    out.push('\n');
    for r in &row_values {
        let _ = write!(out, "| {} |", cell(r));
        for c in &col_values {
            let text = match cells.get(&(*r, *c)).map(Vec::as_slice) {
                None => "no scenario".to_owned(),
                Some([]) => "-".to_owned(),
                Some([v]) => (fig.show)(Some(*v)),
                Some(vs) => format!(
                    "{} (mean of {})",
                    (fig.show)(Some(vs.iter().sum::<f64>() / vs.len() as f64)),
                    vs.len()
                ),
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

/// The figures of a repeated scenario's runs, by the scenario's plan name, in plan order.
pub fn repeat_groups(saved: &SavedRun) -> Vec<(String, u32, Vec<&ScenarioStats>)> {
    let mut out: Vec<(String, u32, Vec<&ScenarioStats>)> = Vec::new();
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        let Some(r) = &s.repeat else { continue };
        let i = match out.iter().position(|(n, _, _)| *n == r.scenario) {
            Some(i) => i,
            None => {
                out.push((r.scenario.clone(), r.of, Vec::new()));
                out.len() - 1
            }
        };
        if let Ok(st) = st {
            out[i].2.push(st);
        }
    }
    out
}

/// A figure of one run of a scenario.
pub type RunFigure = fn(&ScenarioStats) -> Option<f64>;

/// What the repeats table and chart show of each run.
pub const REPEAT_FIGURES: [(&str, RunFigure); 4] = [
    ("round 1 mean TTFT ms", |st| {
        first(st).and_then(|r| r.latency.ttft.mean)
    }),
    ("last-round mean TTFT ms", |st| {
        last(st)
            .filter(|r| r.round > 1)
            .and_then(|r| r.latency.ttft.mean)
    }),
    ("TTFT reduction %", |st| {
        st.comparison.as_ref().and_then(|c| c.ttft_reduction_pct)
    }),
    ("throughput increase %", |st| {
        st.comparison
            .as_ref()
            .and_then(|c| c.throughput_increase_pct)
    }),
];

/// `mean ± half-width (n)`, or why there is no interval.
fn with_ci(values: &[f64]) -> String {
    match mean_ci95(values) {
        None => "-".to_owned(),
        Some((m, Some(h))) => format!("{m:.1} ± {h:.1} (n={})", values.len()),
        Some((m, None)) => format!("{m:.1} (one run: no interval)"),
    }
}

/// Each repeated scenario: the mean and 95 % interval of its figures over its runs.
pub fn repeats(out: &mut String, saved: &SavedRun) {
    let groups = repeat_groups(saved);
    if groups.is_empty() {
        return;
    }
    out.push_str(
        "## Repeats (mean ± half-width of the 95 % confidence interval, t-distribution)

| scenario | runs |",
    );
    for (name, _) in REPEAT_FIGURES {
        let _ = write!(out, " {name} |");
    }
    out.push_str(
        "
|---|---|",
    );
    out.push_str(&"---|".repeat(REPEAT_FIGURES.len()));
    out.push('\n');
    for (name, of, runs) in &groups {
        let _ = write!(out, "| {} | {} of {of} |", cell(name), runs.len());
        for (_, fig) in REPEAT_FIGURES {
            let values: Vec<f64> = runs.iter().filter_map(|st| fig(st)).collect();
            let _ = write!(out, " {} |", with_ci(&values));
        }
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_and_increases_are_relative_to_the_base() {
        assert_eq!(reduction_pct(Some(200.0), Some(50.0)), Some(75.0));
        assert_eq!(increase_pct(Some(100.0), Some(150.0)), Some(50.0));
        assert_eq!(reduction_pct(Some(0.0), Some(1.0)), None);
        assert_eq!(reduction_pct(None, Some(1.0)), None);
    }
}
