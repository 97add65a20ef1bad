//! The report's charts (plotters, PNG) in `multi_scenario_charts_<ts>/`: the seed's five,
//! `ttft_comparison.png`, `throughput_comparison.png`, `ttft_reduction_comparison.png`,
//! `throughput_increase_comparison.png` and `performance_radar.png`.
//!
//! Text is drawn with a font the binary carries (a subset of Noto Sans CJK SC: Latin and the
//! common Chinese characters, see `coordinator/assets/OFL.txt`), so charts render on a
//! machine with no font installed and scenario names in Chinese show as glyphs; `--font
//! PATH` draws with another. Every character of every label is checked against the font
//! first: the ones it lacks are returned, so that the run can say so (no silent boxes).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::Font as _;
use anyhow::Context;
use kvbench_common::results::ScenarioStats;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::output::SavedRun;

/// The font family name the charts register their font under.
const FAMILY: &str = "kvbench-charts";

/// The font the binary carries.
pub const BUNDLED_FONT: &[u8] = include_bytes!("../../../assets/NotoSansSC-kvbench.otf");

static FONT: OnceLock<&'static [u8]> = OnceLock::new();

/// Registers the charts' font once per process: the file at `path`, else the bundled one.
/// A second call keeps the first font. Its bytes.
pub fn use_font(path: Option<&Path>) -> anyhow::Result<&'static [u8]> {
    if let Some(f) = FONT.get() {
        return Ok(f);
    }
    let bytes: &'static [u8] = match path {
        Some(p) => Box::leak(
            std::fs::read(p)
                .with_context(|| format!("cannot read the font {}", p.display()))?
                .into_boxed_slice(),
        ),
        None => BUNDLED_FONT,
    };
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a font (TrueType or OpenType) that can be drawn with",
            path.map_or("the bundled font".to_owned(), |p| p.display().to_string())
        )
    })?;
    Ok(FONT.get_or_init(|| bytes))
}

/// The characters of `texts` that `font` has no glyph for (whitespace aside).
pub fn missing_glyphs<'a>(font: &[u8], texts: impl IntoIterator<Item = &'a str>) -> BTreeSet<char> {
    let Ok(f) = ab_glyph::FontRef::try_from_slice(font) else {
        return texts
            .into_iter()
            .flat_map(str::chars)
            .filter(|c| !c.is_whitespace())
            .collect();
    };
    texts
        .into_iter()
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace() && f.glyph_id(*c).0 == 0)
        .collect()
}

/// What was drawn.
#[derive(Debug, Clone, Default)]
pub struct Charts {
    /// The folder's name, beside the report.
    pub folder: String,
    pub files: Vec<PathBuf>,
    /// Characters of the labels the font lacks (drawn as boxes).
    pub missing_glyphs: BTreeSet<char>,
    /// Each scenario's TTFT distribution, by scenario name: the file's name in the folder.
    pub cdfs: std::collections::BTreeMap<String, String>,
    /// `timeline.png` when there was a round to place, and the scenarios its numbers
    /// stand for (1 first).
    pub timeline: Option<String>,
    pub timeline_key: Vec<String>,
    /// What the charts could not show, and why (an unreadable results file, ...).
    pub notes: Vec<String>,
    /// `repeats_comparison.png`, when the run has repeated scenarios.
    pub repeats: Option<String>,
    /// Each swept scenario's `capacity_<slug>.png`, by its name.
    pub capacity: std::collections::BTreeMap<String, String>,
    /// Each scenario's slowest requests, by scenario name (read with the records; the
    /// HTML report lists them).
    pub slowest: std::collections::BTreeMap<String, Vec<super::timeline::SlowRequest>>,
}

pub(super) const W: u32 = 1100;
/// Label width for scenario names, in "columns" (a CJK character takes two).
const NAME_COLUMNS: usize = 34;

/// A scenario name cut to fit the label column, with `…` when cut.
pub fn fit_name(name: &str) -> String {
    let width = |c: char| if (c as u32) >= 0x1100 { 2 } else { 1 };
    if name.chars().map(width).sum::<usize>() <= NAME_COLUMNS {
        return name.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in name.chars() {
        if used + width(c) > NAME_COLUMNS - 1 {
            break;
        }
        used += width(c);
        out.push(c);
    }
    out.push('…');
    out
}

/// A horizontal bar chart: one row per scenario, one bar per series.
struct Bars<'a> {
    title: &'a str,
    unit: &'a str,
    series: &'a [&'a str],
    rows: Vec<(String, Vec<Option<f64>>)>,
    /// Half-widths of confidence intervals, parallel to `rows` (empty: none drawn).
    ci: Vec<Vec<Option<f64>>>,
}

pub(super) const COLORS: [RGBColor; 4] = [
    RGBColor(70, 110, 180),
    RGBColor(230, 140, 50),
    RGBColor(90, 160, 90),
    RGBColor(180, 70, 70),
];

/// A chart's legend of its labelled series: a framed, nearly opaque box at `position`.
pub(super) fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
    size: u32,
) -> anyhow::Result<()>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(font(size))
        .draw()?;
    Ok(())
}

pub(super) fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

impl Bars<'_> {
    fn draw(&self, path: &Path) -> anyhow::Result<()> {
        let n = self.rows.len().max(1);
        let h = (130 + 46 * n as u32).max(360);
        let root = BitMapBackend::new(path, (W, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let values = self.rows.iter().flat_map(|(_, v)| v.iter().flatten());
        let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        // Room at the right for the figures and, with two series, the legend.
        let pad = (hi - lo).max(1.0) * if self.series.len() > 1 { 0.4 } else { 0.12 };
        let x = (if lo < 0.0 { lo - pad } else { 0.0 })..(hi + pad);
        let (left, right) = root.split_horizontally(300);
        let mut chart = ChartBuilder::on(&right)
            .caption(self.title, font(24))
            .margin(12)
            .x_label_area_size(44)
            .build_cartesian_2d(x.clone(), 0.0..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .max_light_lines(2)
            .y_labels(0)
            .x_desc(self.unit)
            .label_style(font(15))
            .axis_desc_style(font(16))
            .draw()?;
        let k = self.series.len().max(1) as f64;
        for (s, name) in self.series.iter().enumerate() {
            let color = COLORS[s % COLORS.len()];
            let bars = self.rows.iter().enumerate().filter_map(|(i, (_, v))| {
                let v = (*v.get(s)?)?;
                // Row 0 at the top.
                let top = (n - 1 - i) as f64 + 0.85 - 0.7 * s as f64 / k;
                Some(Rectangle::new(
                    [(0.0, top), (v, top - 0.7 / k)],
                    color.filled(),
                ))
            });
            chart.draw_series(bars)?.label(*name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
            });
        }
        // The figure at the end of each bar.
        for (s, _) in self.series.iter().enumerate() {
            let labels = self.rows.iter().enumerate().map(|(i, (_, v))| {
                let top = (n - 1 - i) as f64 + 0.85 - 0.7 * s as f64 / k;
                let text = match v.get(s).copied().flatten() {
                    Some(v) => format!("{v:.1}"),
                    None => "n/a".to_owned(),
                };
                // After the bar, and after its whisker when it has one.
                let half = self
                    .ci
                    .get(i)
                    .and_then(|c| c.get(s).copied().flatten())
                    .unwrap_or(0.0);
                let gap = (x.end - x.start) * 0.006;
                let at = (v.get(s).copied().flatten().unwrap_or(0.0) + half + gap).max(x.start);
                Text::new(
                    text,
                    (at, top - 0.35 / k),
                    font(13).pos(Pos::new(HPos::Left, VPos::Center)),
                )
            });
            chart.draw_series(labels)?;
        }
        self.whiskers(&mut chart, n, k)?;
        if self.series.len() > 1 {
            legend(&mut chart, SeriesLabelPosition::LowerRight, 15)?;
        }
        name_column(&left, &chart.as_coord_spec().clone(), &self.rows, n)?;
        root.present()
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Confidence intervals: a whisker with caps across each bar's middle.
    fn whiskers(
        &self,
        chart: &mut ChartContext<
            '_,
            BitMapBackend<'_>,
            Cartesian2d<RangedCoordf64, RangedCoordf64>,
        >,
        n: usize,
        k: f64,
    ) -> anyhow::Result<()> {
        for (i, (_, v)) in self.rows.iter().enumerate() {
            for s in 0..self.series.len() {
                let (Some(Some(mid)), Some(Some(h))) =
                    (v.get(s), self.ci.get(i).and_then(|c| c.get(s)))
                else {
                    continue;
                };
                let y = (n - 1 - i) as f64 + 0.85 - 0.7 * s as f64 / k - 0.35 / k;
                let cap = 0.15 / k;
                for seg in [
                    vec![(mid - h, y), (mid + h, y)],
                    vec![(mid - h, y - cap), (mid - h, y + cap)],
                    vec![(mid + h, y - cap), (mid + h, y + cap)],
                ] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        seg,
                        BLACK.stroke_width(2),
                    )))?;
                }
            }
        }
        Ok(())
    }
}

/// The scenario names beside their rows, in the chart's left column.
fn name_column(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    coord: &Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
    rows: &[(String, Vec<Option<f64>>)],
    n: usize,
) -> anyhow::Result<()> {
    for (i, (name, _)) in rows.iter().enumerate() {
        let (_, y) = coord.translate(&(0.0, (n - 1 - i) as f64 + 0.5));
        area.draw(&Text::new(
            fit_name(name),
            (290, y),
            font(15).pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    Ok(())
}

fn last_round(st: &ScenarioStats) -> Option<&kvbench_common::results::RoundStats> {
    st.rounds
        .iter()
        .filter(|r| r.round > 1)
        .max_by_key(|r| r.round)
}

fn round1(st: &ScenarioStats) -> Option<&kvbench_common::results::RoundStats> {
    st.rounds.iter().find(|r| r.round == 1)
}

/// Draws the five charts into `dir/multi_scenario_charts_<ts>/`.
pub fn draw(saved: &SavedRun, dir: &Path, font_path: Option<&Path>) -> anyhow::Result<Charts> {
    let font = use_font(font_path)?;
    let folder = format!("multi_scenario_charts_{}", saved.run.timestamp);
    let out = dir.join(&folder);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let ran: Vec<(&str, &ScenarioStats)> = saved
        .run
        .scenarios
        .iter()
        .zip(&saved.stats)
        .filter_map(|(s, st)| st.as_ref().ok().map(|st| (s.name.as_str(), st)))
        .collect();
    let rows = |f: &dyn Fn(&ScenarioStats) -> Vec<Option<f64>>| -> Vec<(String, Vec<Option<f64>>)> {
        ran.iter().map(|(n, st)| ((*n).to_owned(), f(st))).collect()
    };
    let mean_ttft =
        |r: Option<&kvbench_common::results::RoundStats>| r.and_then(|r| r.latency.ttft.mean);
    let tput = |r: Option<&kvbench_common::results::RoundStats>| r.map(|r| r.output_throughput);
    let two = ["round 1 (cold)", "last round (cache)"];
    let charts: Vec<(&str, Bars)> = vec![
        (
            "ttft_comparison.png",
            Bars {
                title: "Mean time to first token",
                unit: "ms (lower is better)",
                series: &two,
                rows: rows(&|st| vec![mean_ttft(round1(st)), mean_ttft(last_round(st))]),
                ci: Vec::new(),
            },
        ),
        (
            "throughput_comparison.png",
            Bars {
                title: "Output throughput",
                unit: "tokens/s (higher is better)",
                series: &two,
                rows: rows(&|st| vec![tput(round1(st)), tput(last_round(st))]),
                ci: Vec::new(),
            },
        ),
        (
            "ttft_reduction_comparison.png",
            Bars {
                title: "TTFT reduction, last round against round 1",
                unit: "% (higher is better)",
                series: &["TTFT reduction"],
                rows: rows(&|st| vec![st.comparison.as_ref().and_then(|c| c.ttft_reduction_pct)]),
                ci: Vec::new(),
            },
        ),
        (
            "throughput_increase_comparison.png",
            Bars {
                title: "Throughput increase, last round against round 1",
                unit: "% (higher is better)",
                series: &["throughput increase"],
                rows: rows(&|st| {
                    vec![st
                        .comparison
                        .as_ref()
                        .and_then(|c| c.throughput_increase_pct)]
                }),
                ci: Vec::new(),
            },
        ),
    ];
    let mut texts: Vec<String> = ran.iter().map(|(n, _)| fit_name(n)).collect();
    let mut files = Vec::new();
    for (file, bars) in &charts {
        texts.extend([bars.title.to_owned(), bars.unit.to_owned()]);
        texts.extend(bars.series.iter().map(|s| (*s).to_owned()));
        let path = out.join(file);
        bars.draw(&path)?;
        files.push(path);
    }
    let path = out.join("performance_radar.png");
    texts.extend(radar(&ran, &path)?);
    files.push(path);
    let mut charts = Charts {
        folder,
        files,
        ..Charts::default()
    };
    if let Some(bars) = repeats_bars(saved) {
        texts.extend([bars.title.to_owned(), bars.unit.to_owned()]);
        texts.extend(bars.rows.iter().map(|(n, _)| fit_name(n)));
        let path = out.join("repeats_comparison.png");
        bars.draw(&path)?;
        charts.files.push(path);
        charts.repeats = Some("repeats_comparison.png".to_owned());
    }
    for c in super::capacity::capacities(saved) {
        let file = format!("capacity_{}.png", kvbench_common::util::slug(&c.scenario));
        let drawn = super::capacity::draw(&c, &out.join(&file))?;
        if !drawn.is_empty() {
            texts.extend(drawn);
            charts.files.push(out.join(&file));
            charts.capacity.insert(c.scenario.clone(), file);
        }
    }
    over_time(saved, dir, &out, &mut charts, &mut texts)?;
    charts.missing_glyphs = missing_glyphs(font, texts.iter().map(String::as_str));
    Ok(charts)
}

/// `repeats_comparison.png`: each repeated scenario's TTFT reduction and throughput
/// increase, the mean over its runs with the 95 % interval as a whisker.
fn repeats_bars(saved: &SavedRun) -> Option<Bars<'static>> {
    let groups = super::views::repeat_groups(saved);
    if groups.is_empty() {
        return None;
    }
    let figures = &super::views::REPEAT_FIGURES[2..];
    let (mut rows, mut ci) = (Vec::new(), Vec::new());
    for (name, _, runs) in &groups {
        let stats: Vec<Option<(f64, Option<f64>)>> = figures
            .iter()
            .map(|(_, fig)| {
                let values: Vec<f64> = runs.iter().filter_map(|st| fig(st)).collect();
                kvbench_common::stats::intervals::mean_ci95(&values)
            })
            .collect();
        rows.push((name.clone(), stats.iter().map(|s| s.map(|s| s.0)).collect()));
        ci.push(stats.iter().map(|s| s.and_then(|s| s.1)).collect());
    }
    Some(Bars {
        title: "Repeated scenarios: mean over runs, 95 % interval",
        unit: "% (higher is better)",
        series: &["TTFT reduction", "throughput increase"],
        rows,
        ci,
    })
}

/// The per-scenario TTFT distributions and the run's timeline, from the results and
/// telemetry files.
fn over_time(
    saved: &SavedRun,
    dir: &Path,
    out: &Path,
    charts: &mut Charts,
    texts: &mut Vec<String>,
) -> anyhow::Result<()> {
    let series = super::timeline::load(saved, dir);
    for s in &series {
        charts
            .notes
            .extend(s.notes.iter().map(|n| format!("{}: {n}", s.name)));
        charts.slowest.insert(s.name.clone(), s.slowest.clone());
        let file = format!("{}_ttft_cdf.png", s.slug);
        if super::timeline::draw_cdf(s, &out.join(&file))? {
            texts.push(format!("TTFT distribution: {}", fit_name(&s.name)));
            charts.files.push(out.join(&file));
            charts.cdfs.insert(s.name.clone(), file);
        }
    }
    let path = out.join("timeline.png");
    if let Some(t) = super::timeline::draw_timeline(&series, &path)? {
        texts.extend(t);
        charts.files.push(path);
        charts.timeline = Some("timeline.png".to_owned());
        charts.timeline_key = series.iter().map(|s| s.name.clone()).collect();
    }
    Ok(())
}

/// The radar's axes: a figure of each scenario, higher is better, scaled by the best.
/// A figure of a scenario's results.
type Figure = fn(&ScenarioStats) -> Option<f64>;

const AXES: [(&str, Figure); 5] = [
    ("TTFT reduction", |st| {
        st.comparison.as_ref()?.ttft_reduction_pct
    }),
    ("throughput increase", |st| {
        st.comparison.as_ref()?.throughput_increase_pct
    }),
    ("cache hit (last round)", |st| {
        last_round(st)?.cache_hit_ratio
    }),
    ("speed (1 / last-round TTFT)", |st| {
        last_round(st)?
            .latency
            .ttft
            .mean
            .filter(|t| *t > 0.0)
            .map(|t| 1000.0 / t)
    }),
    ("output tokens/s (last round)", |st| {
        last_round(st).map(|r| r.output_throughput)
    }),
];

/// `performance_radar.png`: each scenario's five figures, each scaled by the best of them
/// (negative as 0); its texts.
fn radar(ran: &[(&str, &ScenarioStats)], path: &Path) -> anyhow::Result<Vec<String>> {
    let root = BitMapBackend::new(path, (W, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = "Performance radar (each axis: share of the best scenario)";
    let mut chart = ChartBuilder::on(&root)
        .caption(title, font(24))
        .margin(20)
        .build_cartesian_2d(-1.9f64..1.9f64, -1.25f64..1.25f64)?;
    let angle = |i: usize| {
        std::f64::consts::FRAC_PI_2 - i as f64 * std::f64::consts::TAU / AXES.len() as f64
    };
    let at = |i: usize, r: f64| (r * angle(i).cos(), r * angle(i).sin());
    let grey = RGBColor(200, 200, 200);
    for ring in [0.25, 0.5, 0.75, 1.0] {
        let pts: Vec<(f64, f64)> = (0..=AXES.len()).map(|i| at(i % AXES.len(), ring)).collect();
        chart.draw_series(std::iter::once(PathElement::new(pts, grey)))?;
    }
    let mut texts = vec![title.to_owned()];
    for (i, (name, _)) in AXES.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), at(i, 1.0)],
            grey,
        )))?;
        let (x, y) = at(i, 1.12);
        let h = if x > 0.1 {
            HPos::Left
        } else if x < -0.1 {
            HPos::Right
        } else {
            HPos::Center
        };
        chart.draw_series(std::iter::once(Text::new(
            *name,
            (x, y),
            font(15).pos(Pos::new(h, VPos::Center)),
        )))?;
        texts.push((*name).to_owned());
    }
    let best: Vec<f64> = AXES
        .iter()
        .map(|(_, f)| ran.iter().filter_map(|(_, st)| f(st)).fold(0.0, f64::max))
        .collect();
    for (k, (name, st)) in ran.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let pts: Vec<(f64, f64)> = (0..=AXES.len())
            .map(|i| {
                let i = i % AXES.len();
                let v = AXES[i].1(st).unwrap_or(0.0).max(0.0);
                at(i, if best[i] > 0.0 { v / best[i] } else { 0.0 })
            })
            .collect();
        chart
            .draw_series(std::iter::once(PathElement::new(
                pts,
                color.stroke_width(2),
            )))?
            .label(fit_name(name))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft, 14)?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character of typical scenario names (the seed's Chinese ones included) and of
    /// the charts' own texts has a glyph in the bundled font; Hangul, outside its subset, is
    /// reported rather than drawn as boxes silently.
    #[test]
    fn the_bundled_font_covers_chinese_scenario_names_and_reports_what_it_lacks() {
        let names = [
            "腾讯云-单机多卡-Qwen2.5-72B",
            "火山引擎-跨节点-DeepSeek-R1",
            "阿里云-单机多卡-Llama3-70B（长上下文，缓存命中）",
            "騰訊雲-單機多卡",
            "Cloud-A_single-node: 72B / 8×H200 — ≥50%",
        ];
        let texts = names.iter().copied().chain(AXES.iter().map(|(n, _)| *n));
        assert_eq!(missing_glyphs(BUNDLED_FONT, texts), BTreeSet::new());
        let missing = missing_glyphs(BUNDLED_FONT, ["서울-리전-Qwen"]);
        assert_eq!(missing, "서울리전".chars().collect());
    }

    #[test]
    fn long_names_are_cut_to_the_label_column() {
        assert_eq!(fit_name("short"), "short");
        let long = "腾讯云-单机多卡-Qwen2.5-72B-长上下文-高复用-第二轮";
        let cut = fit_name(long);
        assert!(cut.ends_with('…') && cut.len() < long.len(), "{cut}");
        let columns: usize = cut
            .chars()
            .map(|c| if (c as u32) >= 0x1100 { 2 } else { 1 })
            .sum();
        assert!(columns <= NAME_COLUMNS, "{cut}: {columns}");
    }
}
