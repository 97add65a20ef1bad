//! The report's "Capacity at the SLO" section: per swept scenario with objectives, its
//! capacity cold and warm, against its baseline, and each point's figures
//! ([`kvbench_common::sweep`] computes them from the saved stats).

use std::fmt::Write as _;

use super::markdown::{cell, f};
use crate::output::SavedRun;

/// The capacities of the run's swept scenarios with objectives (`slo:`), from their
/// points' stats files.
pub fn capacities(saved: &SavedRun) -> Vec<kvbench_common::sweep::SweepCapacity> {
    let runs: Vec<_> = saved
        .run
        .scenarios
        .iter()
        .zip(&saved.stats)
        .filter_map(|(s, st)| Some((s.name.as_str(), s.sweep.as_ref()?, st.as_ref().ok())))
        .collect();
    kvbench_common::sweep::capacities(&runs)
}

/// How a search went, in a sentence: its points, its bracket, the resolution it stated.
pub fn search_line(
    c: &kvbench_common::sweep::SweepCapacity,
    s: &kvbench_common::sweep::SearchOutcome,
) -> String {
    use kvbench_common::util::trim_float;
    let round = if c.last_round > 1 {
        format!("round {} (warm)", c.last_round)
    } else {
        "round 1".to_owned()
    };
    let found = match s.bracket {
        Some([a, b]) => format!(
            "the boundary lies between {} (met every objective) and {} (did not){}",
            trim_float(a),
            trim_float(b),
            s.relative_width()
                .map_or(String::new(), |w| format!(", {:.1} % apart", w * 100.0))
        ),
        None => {
            use kvbench_common::stats::capacity::Bound;
            let searched = c.warm.as_ref().unwrap_or(&c.cold);
            match (searched.bound, searched.load) {
                (Bound::AtLeast, Some(v)) => format!(
                    "every point it could judge met every objective: the capacity is at least {} (a load above it was excluded, or none was tried)",
                    trim_float(v)
                ),
                (Bound::Below, _) => "the lowest load already missed: the capacity is below it".to_owned(),
                _ => "no point could be judged".to_owned(),
            }
        }
    };
    format!(
        "Searched on {round} between {} and {} {}: {} of at most {} points; {found}. Resolution stated before the search: {}.",
        trim_float(s.between[0]),
        trim_float(s.between[1]),
        c.dimension.unit(),
        s.points_run,
        s.points_max,
        s.stated_resolution
    )
}

/// "Capacity at the SLO": per swept scenario, the largest load within its objectives in
/// round 1 and in the last round, their ratio and the baseline's; then each point.
pub fn section(
    out: &mut String,
    caps: &[kvbench_common::sweep::SweepCapacity],
    charts: Option<&super::charts::Charts>,
) {
    use kvbench_common::sweep::shown;
    if caps.is_empty() {
        return;
    }
    out.push_str("## Capacity at the SLO\n\nThe largest load whose round met every objective, interpolated between the last swept point that met them and the first that did not (`>=`: every point met them; `<`: the lowest already missed).\n\n| scenario | load | objectives | capacity cold (round 1) | capacity warm (last round) | warm / cold | baseline | baseline capacity | against baseline |\n|---|---|---|---|---|---|---|---|---|\n");
    use kvbench_common::sweep::shown_ratio;
    for c in caps {
        let objectives: Vec<String> = c.slo.iter().map(|t| t.to_string()).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.scenario),
            c.dimension.unit(),
            cell(&objectives.join(", ")),
            shown(&c.cold),
            c.warm.as_ref().map_or_else(|| "-".into(), shown),
            shown_ratio(c.warm_over_cold, c.warm_over_cold_at_least),
            c.baseline
                .as_ref()
                .map_or_else(|| "-".into(), |b| cell(&b.scenario)),
            c.baseline
                .as_ref()
                .map_or_else(|| "-".into(), |b| shown(&b.capacity)),
            c.baseline
                .as_ref()
                .map_or_else(|| "-".into(), |b| shown_ratio(b.ratio, b.ratio_at_least)),
        );
    }
    out.push('\n');
    for c in caps {
        let _ = writeln!(out, "### Points of {}\n", c.scenario);
        if let Some(s) = &c.search {
            let _ = writeln!(out, "{}\n", search_line(c, s));
        }
        if let Some((folder, file)) =
            charts.and_then(|ch| Some((&ch.folder, ch.capacity.get(&c.scenario)?)))
        {
            let _ = writeln!(
                out,
                "![capacity of {}]({folder}/{file})\n",
                cell(&c.scenario)
            );
        }
        let mut head = format!(
            "| {} | achieved req/s (round 1 / {}) | most in flight (round 1 / {}) |",
            c.dimension.unit(),
            c.last_round,
            c.last_round
        );
        let mut rule = "|---|---|---|".to_owned();
        for t in &c.slo {
            let _ = write!(head, " {} (round 1 / {}) |", cell(&t.metric), c.last_round);
            rule.push_str("---|");
        }
        head.push_str(" within the SLO (round 1 / last) |");
        rule.push_str("---|");
        let _ = writeln!(out, "{head}\n{rule}");
        let mut notes = Vec::new();
        for p in &c.points {
            let mut row = format!(
                "| {} | {} / {} | {} / {} |",
                kvbench_common::util::trim_float(p.load),
                f(p.cold.achieved_rate, 2),
                f(p.warm.as_ref().and_then(|w| w.achieved_rate), 2),
                f(p.cold.max_in_flight, 0),
                f(p.warm.as_ref().and_then(|w| w.max_in_flight), 0)
            );
            for (k, _) in c.slo.iter().enumerate() {
                let _ = write!(
                    row,
                    " {} / {} |",
                    f(p.cold.figures.get(k).copied().flatten(), 1),
                    f(
                        p.warm
                            .as_ref()
                            .and_then(|w| w.figures.get(k).copied().flatten()),
                        1
                    )
                );
            }
            let yes = |r: &kvbench_common::sweep::RoundPoint| match (&r.excluded, r.meets) {
                (Some(_), _) => "excluded",
                (None, true) => "yes",
                (None, false) => "no",
            };
            let _ = writeln!(
                out,
                "{row} {} / {} |",
                yes(&p.cold),
                p.warm.as_ref().map_or("-", yes)
            );
            for why in [
                &p.cold.excluded,
                &p.warm.as_ref().and_then(|w| w.excluded.clone()),
            ]
            .into_iter()
            .flatten()
            {
                notes.push(format!(
                    "- Excluded at {}: {}",
                    kvbench_common::util::trim_float(p.load),
                    cell(why)
                ));
            }
        }
        out.push('\n');
        for (kind, cap) in [
            ("round 1", Some(&c.cold)),
            ("the last round", c.warm.as_ref()),
        ] {
            let Some(cap) = cap else { continue };
            if !cap.non_monotonic.is_empty() {
                let loads: Vec<String> = cap
                    .non_monotonic
                    .iter()
                    .map(|v| kvbench_common::util::trim_float(*v))
                    .collect();
                notes.push(format!(
                    "- Not monotonic in {kind}: {} met every objective again above the first miss ({}); the capacity is the first crossing.",
                    loads.join(", "),
                    cap.first_missed.map(kvbench_common::util::trim_float).unwrap_or_default()
                ));
            }
            if !cap.limited_by.is_empty() {
                let which: Vec<String> = cap
                    .limited_by
                    .iter()
                    .filter_map(|&k| c.slo.get(k))
                    .map(|t| format!("`{t}`"))
                    .collect();
                notes.push(format!("- In {kind}, bounded by {}.", which.join(", ")));
            }
        }
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
        out.push('\n');
    }
}

/// `capacity_<slug>.png`: the first objective's figure (top) and the achieved request
/// rate (bottom) against load, round 1 and the last round, on a logarithmic load axis;
/// the objective as a horizontal line and each capacity as a vertical one. The texts it
/// drew (for the glyph check).
pub fn draw(
    c: &kvbench_common::sweep::SweepCapacity,
    path: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    use super::charts::{fit_name, font, legend, COLORS, W};
    use anyhow::Context as _;
    use plotters::prelude::*;

    let Some(objective) = c.slo.first() else {
        return Ok(Vec::new());
    };
    let loads: Vec<f64> = c.points.iter().map(|p| p.load).collect();
    let (lo, hi) = loads.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    });
    if !(lo.is_finite() && hi > 0.0) {
        return Ok(Vec::new());
    }
    let x = (lo * 0.8)..(hi * 1.25);
    let kinds: Vec<(String, bool)> = [("round 1 (cold)".to_owned(), false)]
        .into_iter()
        .chain((c.last_round > 1).then(|| (format!("round {} (warm)", c.last_round), true)))
        .collect();
    let title = format!("Capacity: {}", fit_name(&c.scenario));
    let x_desc = format!("{} (logarithmic)", c.dimension.unit());
    let top_desc = objective.metric.clone();
    let root = BitMapBackend::new(path, (W, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(440);

    let figures: Vec<f64> = c
        .points
        .iter()
        .flat_map(|p| [Some(&p.cold), p.warm.as_ref()])
        .flatten()
        .filter_map(|r| r.figures.first().copied().flatten())
        .chain([objective.value])
        .collect();
    let ymax = figures.iter().copied().fold(0.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption(&title, font(22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x.clone().log_scale(), 0.0..ymax.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc(&x_desc)
        .y_desc(&top_desc)
        .label_style(font(14))
        .axis_desc_style(font(15))
        .draw()?;
    for (k, (label, warm)) in kinds.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter_map(|p| {
                Some((
                    p.load,
                    round_of(p, *warm)?.figures.first().copied().flatten()?,
                ))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
        )?;
        let cap = if *warm {
            c.warm.as_ref()
        } else {
            Some(&c.cold)
        };
        if let Some(v) = cap.and_then(|cap| {
            cap.load
                .filter(|_| cap.bound == kvbench_common::stats::capacity::Bound::Interpolated)
        }) {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(v, 0.0), (v, ymax)],
                color.stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{v:.1}"),
                (v, ymax * (0.95 - 0.07 * k as f64)),
                font(14),
            )))?;
        }
    }
    let slo_label = format!("objective: {objective}");
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(x.start, objective.value), (x.end, objective.value)],
            BLACK.stroke_width(1),
        )))?
        .label(slo_label.as_str())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(1)));
    legend(&mut chart, SeriesLabelPosition::UpperLeft, 14)?;

    let rates: Vec<f64> = c
        .points
        .iter()
        .flat_map(|p| [Some(&p.cold), p.warm.as_ref()])
        .flatten()
        .filter_map(|r| r.request_throughput)
        .collect();
    let rmax = rates.iter().copied().fold(0.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&lower)
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x.clone().log_scale(), 0.0..rmax.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc(&x_desc)
        .y_desc("completed requests/s")
        .label_style(font(14))
        .axis_desc_style(font(15))
        .draw()?;
    for (k, (_, warm)) in kinds.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter_map(|p| Some((p.load, round_of(p, *warm)?.request_throughput?)))
            .collect();
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
        chart.draw_series(
            pts.iter()
                .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
        )?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut texts = vec![
        title,
        x_desc,
        top_desc,
        slo_label,
        "completed requests/s".to_owned(),
    ];
    texts.extend(kinds.into_iter().map(|(l, _)| l));
    Ok(texts)
}

/// A point's round 1 or last round.
fn round_of(
    p: &kvbench_common::sweep::LoadPoint,
    warm: bool,
) -> Option<&kvbench_common::sweep::RoundPoint> {
    if warm {
        p.warm.as_ref()
    } else {
        Some(&p.cold)
    }
}
