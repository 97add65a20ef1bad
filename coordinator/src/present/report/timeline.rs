//! Charts of what happened over time, from the records and samples the run saved: per
//! scenario the TTFT distribution of each round (`<slug>_ttft_cdf.png`), and for the run
//! `timeline.png`: TTFT per request, GPU utilisation, GPU memory and the engine's KV-cache
//! usage on one time axis, with round and scenario boundaries marked.
//!
//! Rounds are placed by their `started_at_us` (the agent's wall clock at the round's zero);
//! a round without it (a stats file of an older build) follows the round before it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use kvbench_common::record::Outcome;
use kvbench_common::results::ScenarioStats;
use kvbench_common::telemetry::{
    engine_metric, GpuField, GpuKey, TelemetrySample, TelemetrySource,
};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::charts::{fit_name, font, legend, COLORS, W};
use crate::output::saved::{read_records, read_samples, SavedRecord, SavedRun};

/// How many of a scenario's slowest requests the HTML report lists.
pub const SLOWEST: usize = 20;

/// One of a scenario's slowest requests (by end-to-end time), as the HTML report lists it:
/// timings, outcome and token counts, never the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowRequest {
    pub round: u32,
    pub request_id: u32,
    pub conversation_id: u32,
    pub turn: u32,
    pub outcome: Outcome,
    pub queue_ms: f64,
    pub ttft_ms: Option<f64>,
    pub e2e_ms: f64,
    pub prompt_tokens: u32,
    pub cached_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    pub retried: bool,
    /// The error, cut to one short line.
    pub error: String,
}

impl SlowRequest {
    fn of(r: &SavedRecord) -> SlowRequest {
        let mut error: String = r
            .error
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        if r.error.chars().count() > 120 {
            error.push('…');
        }
        SlowRequest {
            round: r.round,
            request_id: r.request_id,
            conversation_id: r.conversation_id,
            turn: r.turn,
            outcome: r.outcome,
            queue_ms: r.queue_ms,
            ttft_ms: r.first_token_ms.map(|f| f - r.sent_ms),
            e2e_ms: r.end_ms - r.sent_ms,
            prompt_tokens: r.prompt_tokens.unwrap_or(r.prompt_tokens_client),
            cached_tokens: r.cached_tokens,
            output_tokens: r.output_tokens,
            retried: r.retried,
            error,
        }
    }
}

/// One round on the run's time axis.
#[derive(Debug, Clone)]
pub struct RoundSpan {
    pub round: u32,
    /// Seconds from the run's first round's zero.
    pub start_s: f64,
    pub duration_s: f64,
    /// `(seconds on the run's axis, TTFT ms)` of each completed measured request.
    pub ttft: Vec<(f64, f64)>,
}

/// A scenario's series.
#[derive(Debug, Clone)]
pub struct ScenarioSeries {
    pub name: String,
    /// Its file names' stem.
    pub slug: String,
    pub rounds: Vec<RoundSpan>,
    /// `(seconds on the run's axis, value)` per agent-GPU (`agent gpu0`) or agent.
    pub gpu_util: BTreeMap<String, Vec<(f64, f64)>>,
    pub gpu_mem_gib: BTreeMap<String, Vec<(f64, f64)>>,
    pub kv_usage_pct: BTreeMap<String, Vec<(f64, f64)>>,
    /// Its slowest measured requests, slowest first (at most [`SLOWEST`]).
    pub slowest: Vec<SlowRequest>,
    /// Why some of it is missing (no results file, an unreadable one).
    pub notes: Vec<String>,
}

/// The stem of a scenario's files: `<slug>` of `<slug>_stats_<ts>.json`.
fn slug_of(stats_file: &str) -> Option<&str> {
    stats_file.rsplit_once("_stats_").map(|(s, _)| s)
}

/// The series of every scenario that has stats, on one time axis.
pub fn load(saved: &SavedRun, dir: &Path) -> Vec<ScenarioSeries> {
    let zero_us = saved
        .stats
        .iter()
        .flatten()
        .flat_map(|st| st.rounds.iter().filter_map(|r| r.started_at_us))
        .min();
    let mut cursor_s = 0.0f64;
    let mut out = Vec::new();
    for (s, st) in saved.run.scenarios.iter().zip(&saved.stats) {
        let (Ok(st), Some(slug)) = (st, s.stats_file.as_deref().and_then(slug_of)) else {
            continue;
        };
        let mut series = ScenarioSeries {
            name: s.name.clone(),
            slug: slug.to_owned(),
            rounds: Vec::new(),
            gpu_util: BTreeMap::new(),
            gpu_mem_gib: BTreeMap::new(),
            kv_usage_pct: BTreeMap::new(),
            slowest: Vec::new(),
            notes: Vec::new(),
        };
        let starts = place_rounds(st, zero_us, &mut cursor_s);
        for r in &st.rounds {
            series.rounds.push(RoundSpan {
                round: r.round,
                start_s: starts[&r.round],
                duration_s: r.duration,
                ttft: Vec::new(),
            });
        }
        match &s.results_file {
            Some(f) => match read_records(dir, f) {
                Ok(records) => add_records(&mut series, &records),
                Err(e) => series.notes.push(e.to_string()),
            },
            None => series.notes.push("no results file was written".to_owned()),
        }
        if let Some(f) = &s.telemetry_file {
            match read_samples(dir, f) {
                Ok(samples) => add_samples(&mut series, &samples, &starts),
                Err(e) => series.notes.push(e.to_string()),
            }
        }
        out.push(series);
    }
    out
}

/// Each round's start on the run's axis, by round number; `cursor_s` is the end of the
/// latest round placed so far.
fn place_rounds(
    st: &ScenarioStats,
    zero_us: Option<i64>,
    cursor_s: &mut f64,
) -> BTreeMap<u32, f64> {
    let mut starts = BTreeMap::new();
    for r in &st.rounds {
        let start = match (r.started_at_us, zero_us) {
            (Some(at), Some(zero)) => (at - zero) as f64 / 1e6,
            _ => *cursor_s,
        };
        *cursor_s = cursor_s.max(start + r.duration);
        starts.insert(r.round, start);
    }
    starts
}

fn add_records(series: &mut ScenarioSeries, records: &[SavedRecord]) {
    let start: BTreeMap<u32, usize> = series
        .rounds
        .iter()
        .enumerate()
        .map(|(i, r)| (r.round, i))
        .collect();
    let mut measured: Vec<&SavedRecord> = records.iter().filter(|r| !r.warmup).collect();
    measured.sort_by(|a, b| (b.end_ms - b.sent_ms).total_cmp(&(a.end_ms - a.sent_ms)));
    series.slowest = measured
        .iter()
        .take(SLOWEST)
        .map(|r| SlowRequest::of(r))
        .collect();
    for r in records {
        let (Some(&i), Some(first)) = (start.get(&r.round), r.first_token_ms) else {
            continue;
        };
        if r.warmup || r.outcome != Outcome::Ok {
            continue;
        }
        let span = &mut series.rounds[i];
        span.ttft
            .push((span.start_s + r.sent_ms / 1000.0, first - r.sent_ms));
    }
}

fn add_samples(
    series: &mut ScenarioSeries,
    samples: &[TelemetrySample],
    starts: &BTreeMap<u32, f64>,
) {
    for s in samples {
        let Some(start) = starts.get(&s.round) else {
            continue;
        };
        let t = start + s.t_ms / 1000.0;
        match s.source {
            TelemetrySource::Nvml => {
                for (k, v) in &s.values {
                    if let Some(GpuKey::Field { index, field }) = GpuKey::parse(k) {
                        let name = format!("{} gpu{index}", s.agent);
                        match field {
                            GpuField::UtilPct => {
                                series.gpu_util.entry(name).or_default().push((t, *v));
                            }
                            GpuField::MemUsedBytes => {
                                let gib = v / f64::from(1u32 << 30);
                                series.gpu_mem_gib.entry(name).or_default().push((t, gib));
                            }
                            _ => {}
                        }
                    }
                }
            }
            TelemetrySource::EngineMetrics => {
                let usage = engine_metric::KV_CACHE_USAGE
                    .iter()
                    .find_map(|name| s.values.get(*name));
                if let Some(u) = usage {
                    series
                        .kv_usage_pct
                        .entry(s.agent.clone())
                        .or_default()
                        .push((t, u * 100.0));
                }
            }
            TelemetrySource::Host => {}
        }
    }
}

/// `<slug>_ttft_cdf.png`: the share of requests with a TTFT at most x, one line per round
/// (a logarithmic axis when the rounds are an order of magnitude apart). False when the
/// scenario has no TTFT to draw.
pub fn draw_cdf(series: &ScenarioSeries, path: &Path) -> anyhow::Result<bool> {
    let mut rounds: Vec<(u32, Vec<f64>)> = series
        .rounds
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = r
                .ttft
                .iter()
                .map(|(_, t)| *t)
                .filter(|t| *t > 0.0)
                .collect();
            v.sort_by(f64::total_cmp);
            (r.round, v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if rounds.is_empty() {
        return Ok(false);
    }
    rounds.sort_by_key(|(r, _)| *r);
    let lo = rounds
        .iter()
        .map(|(_, v)| v[0])
        .fold(f64::INFINITY, f64::min);
    let hi = rounds
        .iter()
        .map(|(_, v)| v[v.len() - 1])
        .fold(0.0, f64::max);
    let root = BitMapBackend::new(path, (W, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("TTFT distribution: {}", fit_name(&series.name));
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, font(22))
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(60);
    if hi / lo.max(1e-9) > 20.0 {
        let chart = builder.build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.0)?;
        cdf_lines(chart, &rounds, "TTFT, ms (logarithmic)")?;
    } else {
        let pad = (hi - lo).max(1.0) * 0.05;
        let chart = builder.build_cartesian_2d((lo - pad).max(0.0)..hi + pad, 0.0..1.0)?;
        cdf_lines(chart, &rounds, "TTFT, ms")?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// The CDF's axes and one step line per round (sorted TTFTs), on a linear or a
/// logarithmic TTFT axis.
fn cdf_lines<'a, X>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    rounds: &[(u32, Vec<f64>)],
    x_desc: &str,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("share of requests")
        .label_style(font(14))
        .axis_desc_style(font(15))
        .draw()?;
    let line = |k: usize| COLORS[k % COLORS.len()].stroke_width(2);
    for (k, (round, v)) in rounds.iter().enumerate() {
        let n = v.len() as f64;
        let steps = v
            .iter()
            .enumerate()
            .flat_map(|(i, t)| [(*t, i as f64 / n), (*t, (i + 1) as f64 / n)]);
        let cold = if *round == 1 { ", cold" } else { "" };
        chart
            .draw_series(LineSeries::new(steps, line(k)))?
            .label(format!("round {round}{cold} ({} requests)", v.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], line(k)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight, 14)
}

/// The panels of the timeline: a title, a unit and each scenario's series.
struct Panel {
    title: &'static str,
    unit: &'static str,
    of: fn(&ScenarioSeries) -> Vec<Named<'_>>,
    /// Said in the panel when no scenario has a point.
    none: &'static str,
}

/// A series and its name (an agent's GPU, or an agent).
type Named<'a> = (&'a str, &'a [(f64, f64)]);

fn named(m: &BTreeMap<String, Vec<(f64, f64)>>) -> Vec<Named<'_>> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect()
}

const PANELS: [Panel; 3] = [
    Panel {
        title: "GPU utilisation",
        unit: "%",
        of: |s| named(&s.gpu_util),
        none: "no GPU samples (NVML unavailable on the agents, or telemetry off)",
    },
    Panel {
        title: "GPU memory used",
        unit: "GiB",
        of: |s| named(&s.gpu_mem_gib),
        none: "no GPU samples (NVML unavailable on the agents, or telemetry off)",
    },
    Panel {
        title: "Engine KV-cache usage",
        unit: "%",
        of: |s| named(&s.kv_usage_pct),
        none: "the engines export no KV-cache usage (llama.cpp has none)",
    },
];

const PANEL_H: u32 = 250;

/// `timeline.png`: TTFT per request, then the panels, over the whole run; a light line at
/// each round's start, a dark one with the scenario's number at each scenario's. Returns
/// the texts drawn (for the glyph check), or none when there was nothing to place.
pub fn draw_timeline(all: &[ScenarioSeries], path: &Path) -> anyhow::Result<Option<Vec<String>>> {
    let end = all
        .iter()
        .flat_map(|s| s.rounds.iter().map(|r| r.start_s + r.duration_s))
        .fold(0.0f64, f64::max);
    if all.is_empty() || end <= 0.0 {
        return Ok(None);
    }
    let x = 0.0..end * 1.02;
    let root = BitMapBackend::new(path, (W, 60 + PANEL_H * 4)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = "Timeline of the run (numbers: scenarios in plan order)";
    let (top, rest) = root.split_vertically(50);
    top.draw(&Text::new(
        title,
        (W as i32 / 2, 25),
        font(22).pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    let areas = rest.split_evenly((4, 1));
    let mut texts = vec![title.to_owned()];

    // TTFT per request, coloured by round.
    let ttft_max = all
        .iter()
        .flat_map(|s| s.rounds.iter().flat_map(|r| r.ttft.iter().map(|(_, t)| *t)))
        .fold(0.0f64, f64::max);
    let caption = "TTFT per request (blue: round 1, cold; orange: later rounds)";
    let mut chart = panel_chart(&areas[0], caption, "ms", x.clone(), ttft_max)?;
    texts.extend([caption.to_owned(), "ms".to_owned()]);
    let points: usize = all
        .iter()
        .flat_map(|s| &s.rounds)
        .map(|r| r.ttft.len())
        .sum();
    for s in all {
        for r in &s.rounds {
            let color = COLORS[usize::from(r.round > 1) % COLORS.len()];
            if points > 20_000 {
                chart.draw_series(r.ttft.iter().map(|p| Pixel::new(*p, color)))?;
            } else {
                chart.draw_series(r.ttft.iter().map(|p| Circle::new(*p, 2, color.filled())))?;
            }
        }
    }
    boundaries(&mut chart, all, ttft_max, true)?;
    for (area, p) in areas[1..].iter().zip(&PANELS) {
        draw_panel(area, p, all, end, &mut texts)?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(texts))
}

/// One panel of samples under the TTFT panel: each series as lines, in one colour per
/// name, or a sentence saying why there is none.
fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    p: &Panel,
    all: &[ScenarioSeries],
    end: f64,
    texts: &mut Vec<String>,
) -> anyhow::Result<()> {
    let x = 0.0..end * 1.02;
    texts.extend([p.title.to_owned(), p.unit.to_owned()]);
    let lines: Vec<Named> = all.iter().flat_map(|s| (p.of)(s)).collect();
    let max = lines
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max);
    let top = if p.unit == "%" { 100.0 } else { max };
    let mut chart = panel_chart(area, p.title, p.unit, x.clone(), top)?;
    if lines.is_empty() {
        texts.push(p.none.to_owned());
        chart.draw_series(std::iter::once(Text::new(
            p.none,
            (end * 0.51, top.max(1.0) * 0.5),
            font(15).pos(Pos::new(HPos::Center, VPos::Center)),
        )))?;
    }
    // One colour per series name (an agent's GPU), the same across scenarios; a line
    // breaks where sampling paused (between rounds and scenarios).
    let names: Vec<&str> = {
        let mut n: Vec<&str> = lines.iter().map(|(k, _)| *k).collect();
        n.sort_unstable();
        n.dedup();
        n
    };
    let mut labelled = vec![false; names.len()];
    for (name, v) in &lines {
        let k = names.iter().position(|n| n == name).unwrap_or(0);
        let color = Palette99::pick(k).to_rgba();
        for seg in segments(v) {
            let drawn =
                chart.draw_series(LineSeries::new(seg.iter().copied(), color.stroke_width(1)))?;
            if !labelled[k] {
                labelled[k] = true;
                texts.push((*name).to_owned());
                drawn.label(*name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
        }
    }
    if !lines.is_empty() {
        legend(&mut chart, SeriesLabelPosition::UpperRight, 12)?;
    }
    boundaries(&mut chart, all, top.max(1.0), false)?;
    Ok(())
}

/// A series cut where time goes back or pauses for more than 3 s.
fn segments(v: &[(f64, f64)]) -> Vec<&[(f64, f64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..v.len() {
        let gap = v[i].0 - v[i - 1].0;
        if !(0.0..=3.0).contains(&gap) {
            out.push(&v[start..i]);
            start = i;
        }
    }
    if start < v.len() {
        out.push(&v[start..]);
    }
    out
}

type PanelChart<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn panel_chart<'a>(
    area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    x: std::ops::Range<f64>,
    max: f64,
) -> anyhow::Result<PanelChart<'a>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(17))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x, 0.0..(max * 1.1).max(1.0))?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc("s since the first round started")
        .y_desc(unit)
        .label_style(font(13))
        .axis_desc_style(font(13))
        .draw()?;
    Ok(chart)
}

/// A light line at each round's start, a dark one at each scenario's (numbered in the
/// first panel).
fn boundaries(
    chart: &mut PanelChart,
    all: &[ScenarioSeries],
    top: f64,
    numbers: bool,
) -> anyhow::Result<()> {
    let light = RGBColor(190, 190, 190);
    let dark = RGBColor(60, 60, 60);
    let y = top * 1.1;
    for (i, s) in all.iter().enumerate() {
        for (k, r) in s.rounds.iter().enumerate() {
            let color = if k == 0 { dark } else { light };
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(r.start_s, 0.0), (r.start_s, y)],
                color,
            )))?;
        }
        if let (true, Some(first)) = (numbers, s.rounds.first()) {
            chart.draw_series(std::iter::once(Text::new(
                format!("{}", i + 1),
                (first.start_s, y),
                font(13).pos(Pos::new(HPos::Left, VPos::Top)),
            )))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_break_where_sampling_paused() {
        let v = [(0.0, 1.0), (0.1, 1.0), (5.0, 1.0), (5.1, 1.0), (1.0, 1.0)];
        let lens: Vec<usize> = segments(&v).iter().map(|s| s.len()).collect();
        assert_eq!(lens, [2, 2, 1]);
        assert!(segments(&[]).is_empty());
    }

    #[test]
    fn the_slug_is_the_stem_before_stats() {
        assert_eq!(slug_of("a_b_stats_20261202_1.json"), Some("a_b"));
        assert_eq!(slug_of("results.json"), None);
    }
}
