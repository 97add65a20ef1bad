//! The run's report as users get it: `kvbench run` writes `multi_scenario_report_<ts>.md`,
//! `kvbench report RUN_DIR` writes the same text again from the saved files alone, and the
//! markdown of a fixed set of saved files (a failed scenario, a failed isolation, targets
//! met and missed) is checked against its snapshot.

mod common;

use common::kvbench;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{out_file, out_files, read_json, TempDir};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Copies the files of `from` (not its folders) into `to`.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

fn reports(dir: &Path) -> Vec<PathBuf> {
    out_files(dir, "multi_scenario_report_")
}

fn report(dir: &Path) -> std::process::Output {
    kvbench()
        .arg("report")
        .arg(dir)
        .output()
        .expect("kvbench runs")
}

#[test]
fn the_report_of_saved_files_matches_its_snapshot() {
    let dir = TempDir::new("report-snapshot");
    let run = dir.path().join("run");
    copy_files(&data("report_run"), &run);
    let out = report(&run);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = reports(&run);
    assert_eq!(written.len(), 1, "{written:?}");
    let text = std::fs::read_to_string(&written[0]).expect("the report");
    let snapshot = data("report_run.expected.md");
    if std::env::var_os("KVBENCH_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &text).expect("update the snapshot");
    }
    let expected = std::fs::read_to_string(&snapshot).expect("the snapshot");
    assert_eq!(
        text, expected,
        "the report changed; if on purpose, rerun with KVBENCH_UPDATE_SNAPSHOTS=1 and review the diff"
    );
    // What the snapshot must show, whatever its layout.
    for needle in [
        "2 of 4 scenarios with targets met all of them.",
        "| sim-single-longctx-again | sim-single-longctx | 22.8 / 22.7 |",
        "| plan.yaml | plan | `402268fd6c7125980609f0741043f1f1851b26fe8039d049895d04fddf42fc44` |",
        "**TTFT reduction (last round against round 1): deployment × platform**",
        "| single | 48.3% | -1.3% |",
        "Timeline scenarios: 1 = sim-single-longctx, 2 = sim-single-longctx-again, 3 = beta-dual-longctx, 4 = dead-engine.",
        "/timeline.png)",
        "/beta-dual-longctx_ttft_cdf.png)",
        "| beta-dual-longctx | dual | beta |",
        "| sim-single-longctx-again | `p99_ttft_ms <= 1` |",
        "**no**",
        "**FAILED**",
        "**sim-single-longctx-again: round 1 was not cold.** Evidence:",
        "**dead-engine** failed: round 1: all 2 requests failed",
        "The cache did most for **sim-single-longctx**",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn a_run_writes_its_report_and_report_rewrites_it_from_a_copy_of_the_folder() {
    let dir = TempDir::new("report-run");
    copy_files(&data("report_fixture"), dir.path());
    let out = kvbench()
        .arg("run")
        .arg(dir.path().join("plan.yaml"))
        .output()
        .expect("kvbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A failed scenario: exit 1, the report written all the same.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let run = dir.path().join("out");
    let written = reports(&run);
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(
        stdout.contains(&format!("Report: {}", written[0].display())),
        "{stdout}"
    );
    let first = std::fs::read_to_string(&written[0]).expect("the report");
    // Provenance: the engine's version as it reports it (the sim answers /version as vLLM
    // does), and said when it reports none (nothing listens on port 9).
    for needle in [
        concat!(", kvbench-sim ", env!("CARGO_PKG_VERSION"), ")"),
        "vllm (http://127.0.0.1:9, version not reported by the engine)",
    ] {
        assert!(first.contains(needle), "{needle} missing:\n{first}");
    }
    assert!(
        first.contains("| dead-engine | 1 | failed | 0 / 2 |"),
        "{first}"
    );

    let copy = dir.path().join("copy");
    copy_files(&run, &copy);
    let out = report(&copy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = reports(&copy);
    assert_eq!(again.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&again[0]).expect("the report"),
        first,
        "the same files give the same report"
    );
}

#[test]
fn a_folder_without_a_run_is_refused_with_what_to_do() {
    let dir = TempDir::new("report-empty");
    let out = report(dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds no run file") && stderr.contains("kvbench run"),
        "{stderr}"
    );
}

/// The five charts of the seed, as PNG files of the expected size that are not blank.
fn five_charts(dir: &Path) -> Vec<PathBuf> {
    let folder = out_file(dir, "multi_scenario_charts_");
    [
        "ttft_comparison.png",
        "throughput_comparison.png",
        "ttft_reduction_comparison.png",
        "throughput_increase_comparison.png",
        "performance_radar.png",
    ]
    .iter()
    .map(|f| folder.join(f))
    .collect()
}

fn ink(path: &Path) -> (u32, u32, f64) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{} decodes: {e}", path.display()))
        .to_rgb8();
    let dark = img
        .pixels()
        .filter(|p| p.0.iter().any(|c| *c < 200))
        .count();
    (
        img.width(),
        img.height(),
        dark as f64 / f64::from(img.width() * img.height()),
    )
}

#[test]
fn charts_are_drawn_with_chinese_names_and_a_missing_glyph_is_said_once() {
    let dir = TempDir::new("report-charts");
    let run = dir.path().join("run");
    copy_files(&data("report_run"), &run);
    // The same run with the seed's kind of names: Chinese, and one the font cannot draw.
    let run_file = out_file(&run, "multi_scenario_run_");
    let text = std::fs::read_to_string(&run_file).expect("read");
    let text = text
        .replace(
            "\"name\": \"sim-single-longctx\"",
            "\"name\": \"腾讯云-单机多卡-Qwen2.5-72B\"",
        )
        .replace("\"name\": \"dead-engine\"", "\"name\": \"서울-리전\"");
    std::fs::write(&run_file, text).expect("write");
    let out = report(&run);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("no glyph")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains('서') && !warnings[0].contains('腾'),
        "{stderr}"
    );
    for png in five_charts(&run) {
        let (w, h, dark) = ink(&png);
        assert_eq!(w, 1100, "{}", png.display());
        assert!(h >= 360, "{}: {h}", png.display());
        assert!(dark > 0.005, "{} looks blank: {dark}", png.display());
    }
    // The Chinese name is drawn as glyphs: its label differs from the same chart drawn with
    // a name of as many boxes (characters the font lacks).
    let with_glyphs = image::open(&five_charts(&run)[0]).expect("png").to_rgb8();
    let text = std::fs::read_to_string(&run_file)
        .expect("read")
        .replace("腾讯云-单机多卡", "한한한-한한한한");
    std::fs::write(&run_file, text).expect("write");
    assert!(report(&run).status.success());
    let with_boxes = image::open(&five_charts(&run)[0]).expect("png").to_rgb8();
    let differ = with_glyphs
        .pixels()
        .zip(with_boxes.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(differ > 200, "{differ} pixels differ");
}

/// Per scenario the TTFT distribution of each round, and the run's timeline, drawn from the
/// results and telemetry files: PNGs of the expected size with ink in them; a scenario with
/// no completed request has no distribution, and a results file that cannot be read is
/// said in the report rather than failing it.
#[test]
fn distributions_and_the_timeline_are_drawn_from_the_records() {
    let dir = TempDir::new("report-over-time");
    let run = dir.path().join("run");
    copy_files(&data("report_run"), &run);
    assert!(report(&run).status.success());
    let folder = out_file(&run, "multi_scenario_charts_");
    for (file, height) in [
        ("sim-single-longctx_ttft_cdf.png", 520),
        ("sim-single-longctx-again_ttft_cdf.png", 520),
        ("beta-dual-longctx_ttft_cdf.png", 520),
        ("timeline.png", 1060),
    ] {
        let (w, h, dark) = ink(&folder.join(file));
        assert_eq!((w, h), (1100, height), "{file}");
        assert!(dark > 0.01, "{file} looks blank: {dark}");
    }
    assert!(
        !folder.join("dead-engine_ttft_cdf.png").exists(),
        "no TTFT: no distribution"
    );
    // A results file that cannot be read: said in the report, by file name alone.
    std::fs::write(out_file(&run, "beta-dual-longctx_results_"), "{").expect("break it");
    let out = report(&run);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&reports(&run)[0]).expect("report");
    assert!(
        text.contains("- Not charted: beta-dual-longctx: beta-dual-longctx_results_"),
        "{text}"
    );
    assert!(
        !text.contains(dir.path().to_str().expect("utf-8")),
        "no absolute paths"
    );
}

#[test]
fn csv_export_has_every_rounds_figures_in_long_form() {
    let dir = TempDir::new("report-csv");
    let run = dir.path().join("run");
    copy_files(&data("report_run"), &run);
    let out = kvbench()
        .args(["report", "--csv"])
        .arg(&run)
        .output()
        .expect("kvbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let csv = out_file(&run, "multi_scenario_stats_");
    assert!(
        stdout.contains(&format!("CSV: {}", csv.display())),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&csv).expect("csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("run,agent,scenario,round,repeat,metric,statistic,value,unit")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(
        rows.iter().all(|r| r.len() == 9),
        "no field needs quoting here"
    );
    // Each figure equals the stats file's.
    let stats = read_json(&out_file(&run, "sim-single-longctx_stats_"));
    for (round, metric, statistic, key) in [
        ("1", "ttft", "mean", "mean_ttft_ms"),
        ("2", "ttft", "p99", "p99_ttft_ms"),
        ("2", "itl", "median", "median_itl_ms"),
        ("2", "output_throughput", "value", "output_throughput"),
        ("2", "cache_hit_ratio", "value", "cache_hit_ratio"),
    ] {
        let row = rows
            .iter()
            .find(|r| {
                r[2] == "sim-single-longctx" && r[3] == round && r[5] == metric && r[6] == statistic
            })
            .unwrap_or_else(|| panic!("no row for {round} {metric} {statistic}"));
        assert_eq!(
            (row[0], row[1], row[4]),
            ("20261202_083935", "embedded-sim", "1")
        );
        let want = stats["rounds"][round.parse::<usize>().unwrap() - 1][key]
            .as_f64()
            .expect(key);
        let got: f64 = row[7].parse().expect("a number");
        assert!((got - want).abs() < 1e-9, "{key}: {got} vs {want}");
    }
    // The failed scenario's empty rounds give no rows; figures it lacks give none either.
    assert!(rows.iter().all(|r| !r[7].is_empty()));
}

/// `report.html` in headless Chromium, opened from disk: no console error, no request
/// beyond the file itself and its inlined images, a screenshot with ink in it, and a click
/// on the summary table's first header (a real mouse event through the DevTools protocol,
/// `scripts/check-report-html.py`) sorts its rows. Without Chromium the test says so and
/// passes, except under CI, which installs it (`.ci/run`).
#[test]
fn report_html_opens_from_disk_fetches_nothing_and_sorts_on_click() {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium (.ci/run installs it)"
        );
        eprintln!("skipped: no chromium on this machine (apt-get install chromium)");
        return;
    };
    let dir = TempDir::new("report-html");
    let run = dir.path().join("run");
    copy_files(&data("report_run"), &run);
    let out = report(&run);
    assert!(out.status.success());
    let html = run.join("report.html");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("HTML report: {}", html.display()))
    );
    let page = std::fs::read_to_string(&html).expect("report.html");
    for needle in [
        "<h2>Provenance</h2>",
        "<h2>Summary</h2>",
        "Slowest requests",
        "data:image/png;base64,",
    ] {
        assert!(page.contains(needle), "{needle} missing");
    }
    assert!(
        !page.contains("src=\"multi_scenario_charts_"),
        "images are inlined"
    );
    let shot = dir.path().join("shot.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-report-html.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&html)
        .arg(&shot)
        .args(["--chromium", chromium])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    let page_url = seen["page_url"].as_str().expect("url");
    for url in seen["requests"].as_array().expect("requests") {
        let url = url.as_str().expect("a url");
        assert!(
            url == page_url || url.starts_with("data:image/png;base64,"),
            "a request beyond the page: {url}"
        );
    }
    let before: Vec<String> =
        serde_json::from_value(seen["before"].clone()).expect("the column before");
    let after: Vec<String> = serde_json::from_value(seen["after"].clone()).expect("after");
    assert_eq!(before.len(), 7, "{before:?}");
    assert_ne!(before, after, "the click changed the order");
    let mut sorted = before.clone();
    sorted.sort();
    assert_eq!(after, sorted);
    assert_eq!(seen["aria_sort"], "ascending");
    let (w, h, dark) = ink(&shot);
    assert!(w >= 800 && h >= 600, "{w}x{h}");
    assert!(dark > 0.02, "the screenshot looks blank: {dark}");
}
