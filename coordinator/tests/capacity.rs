//! Capacity at an SLO, end to end: a swept plan through the `kvbench` binary against two
//! kvbench-sim processes (with and without prefix caching) whose TTFT grows with load, the
//! capacities checked against the sims' own latency model, and a point where the load
//! generator saturated left out and named.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::procs::{self, signal};
use common::{read_json, TempDir};

/// The sims' latency model: prefills run one at a time, each `BASE_MS + PER_TOKEN_US x
/// uncached tokens`; 2 output tokens make decode negligible, so in a closed loop of `c`
/// requests each waits behind the others' prefills and TTFT p95 is about `c x prefill`.
const BASE_MS: f64 = 10.0;
const PER_TOKEN_US: f64 = 90.0;
const SLO_MS: f64 = 250.0;

fn sim_flags(extra: &[&'static str]) -> Vec<&'static str> {
    let mut f = vec![
        "--max-num-seqs",
        "4",
        "--prefill-base-ms",
        "10",
        "--prefill-per-token-us",
        "90",
        "--decode-base-ms",
        "2",
        "--decode-per-seq-us",
        "0",
    ];
    f.extend_from_slice(extra);
    f
}

fn config(url: &str) -> String {
    format!("endpoint: {url}\nmodel: kvbench-sim\napi: completions\nnum_requests: 40\noutput_tokens: 2\nseed: 7\nworkload:\n  document_tokens: 500\n  instruction_tokens: 16\n")
}

/// The capacity the model gives a round: the SLO over one prefill of the round's mean
/// uncached prompt.
fn model_capacity(stats: &serde_json::Value, round: usize) -> f64 {
    let r = &stats["rounds"][round];
    let n = r["completed"].as_f64().expect("completed");
    let uncached = (r["total_input_tokens"].as_f64().expect("input")
        - r["cached_tokens"].as_f64().unwrap_or(0.0))
        / n;
    SLO_MS / (BASE_MS + PER_TOKEN_US * uncached / 1000.0)
}

fn near(measured: f64, model: f64, what: &str) {
    assert!(
        (measured - model).abs() <= 0.15 * model,
        "{what}: measured {measured:.2}, the sim's model {model:.2}"
    );
}

#[test]
fn a_sweep_finds_the_capacity_the_sims_model_gives_and_leaves_out_a_saturated_point() {
    let dir = TempDir::new("capacity");
    let (_cached_sim, cached_url) = procs::sim(&sim_flags(&[]));
    let (_plain_sim, plain_url) = procs::sim(&sim_flags(&["--no-prefix-caching"]));
    dir.write("cached.yaml", &config(&cached_url));
    dir.write("plain.yaml", &config(&plain_url));
    let sweep = format!("    rounds: 2\n    sweep: {{concurrency: [1, 2, 4, 8, 16, 32]}}\n    slo: {{p95_ttft_ms: \"<= {SLO_MS}\"}}\n");
    dir.write(
        "plan.yaml",
        &format!("output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - name: cached\n    config_file: cached.yaml\n    scenario: batch_processing\n    baseline: plain\n{sweep}  - name: plain\n    config_file: plain.yaml\n    scenario: batch_processing\n{sweep}"),
    );
    let (run, lines) = procs::run_json(dir.path(), &["run", "plan.yaml"]);
    let frozen = "cached~c8";
    let mut capacities = Vec::new();
    let mut freezer: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> = None;
    let pid = run.pid();
    while let Ok((_, line)) = lines.recv_timeout(Duration::from_secs(120)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match (v["event"].as_str(), v["scenario"].as_str()) {
            // The load generator loses 40 ms of every 80 while this point runs: its
            // latencies include the harness's own delay, as on an overloaded host.
            (Some("scenario_started"), Some(s)) if s == frozen => {
                let stop = Arc::new(AtomicBool::new(false));
                let flag = stop.clone();
                let t = std::thread::spawn(move || {
                    while !flag.load(Ordering::Relaxed) {
                        signal(pid, "STOP");
                        std::thread::sleep(Duration::from_millis(40));
                        signal(pid, "CONT");
                        std::thread::sleep(Duration::from_millis(40));
                    }
                });
                freezer = Some((stop, t));
            }
            (Some("scenario_finished"), Some(s)) if s == frozen => {
                if let Some((stop, t)) = freezer.take() {
                    stop.store(true, Ordering::Relaxed);
                    t.join().expect("freezer");
                }
                signal(pid, "CONT");
            }
            (Some("capacity"), _) => capacities.push(v["capacity"].clone()),
            (Some("run_finished"), _) => break,
            _ => {}
        }
    }
    drop(run);
    assert_eq!(
        capacities.len(),
        2,
        "one capacity per swept scenario: {capacities:?}"
    );
    let (cached, plain) = (&capacities[0], &capacities[1]);
    assert_eq!(
        (cached["scenario"].as_str(), plain["scenario"].as_str()),
        (Some("cached"), Some("plain"))
    );

    let out = dir.path().join("out");
    let stats_of = |name: &str| {
        let f = std::fs::read_dir(&out)
            .expect("out")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{name}_stats_")))
            })
            .unwrap_or_else(|| panic!("stats of {name}"));
        read_json(&f)
    };
    // The model from a point in the middle of the sweep (its token counts).
    let at4 = stats_of("cached_c4");
    let (cold, warm) = (model_capacity(&at4, 0), model_capacity(&at4, 1));
    let cap = |c: &serde_json::Value, kind: &str| {
        assert_eq!(c[kind]["bound"], "interpolated", "{kind}: {c}");
        c[kind]["load"].as_f64().expect("a capacity")
    };
    near(cap(cached, "cold"), cold, "cached, round 1");
    near(cap(cached, "warm"), warm, "cached, round 2");
    assert!(cap(cached, "warm") > 3.0 * cap(cached, "cold"), "{cached}");
    let plain_model = model_capacity(&stats_of("plain_c4"), 1);
    near(
        cap(plain, "cold"),
        plain_model,
        "without prefix caching, round 1",
    );
    near(
        cap(plain, "warm"),
        plain_model,
        "without prefix caching, round 2",
    );
    let plain_ratio = plain["warm_over_cold"].as_f64().expect("a ratio");
    assert!(
        (plain_ratio - 1.0).abs() < 0.1,
        "no cache, no capacity gained: {plain_ratio}"
    );
    let against = cached["baseline"]["ratio"]
        .as_f64()
        .expect("against the baseline");
    near(
        against,
        warm / plain_model,
        "cached warm against the baseline",
    );
    assert_eq!(cached["baseline"]["scenario"], "plain");

    // The frozen point is excluded and named, never a boundary.
    let points = cached["points"].as_array().expect("points");
    let at8 = points
        .iter()
        .find(|p| p["load"] == 8.0)
        .expect("the point at 8");
    let why = at8["cold"]["excluded"]
        .as_str()
        .unwrap_or_else(|| panic!("excluded: {at8}"));
    assert!(
        why.contains("cached~c8: the agent saturated in round 1"),
        "{why}"
    );
    assert_ne!(cached["cold"]["first_missed"], 8.0, "{cached}");
    assert_ne!(cached["cold"]["last_met"], 8.0, "{cached}");

    // As a user sees it: the report's table, the points and the exclusion.
    let report = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| std::fs::read_to_string(p).expect("report"))
        .expect("a report");
    assert!(report.contains("## Capacity at the SLO"), "{report}");
    assert!(
        report.contains("| cached | concurrent requests | p95_ttft_ms <= 250 |"),
        "{report}"
    );
    assert!(
        report.contains("- Excluded at 8: cached~c8: the agent saturated in round 1"),
        "{report}"
    );
    assert!(
        report.contains("The cache bought the most capacity for **cached**"),
        "{report}"
    );
    let chart = report
        .lines()
        .find_map(|l| l.strip_prefix("![capacity of cached](")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("the capacity chart is shown: {report}"));
    assert!(chart.ends_with("/capacity_cached.png"), "{chart}");
    let png = std::fs::read(out.join(chart)).expect("the chart is written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let written = common::kvbench()
        .args(["report", "--csv"])
        .arg(&out)
        .status()
        .expect("kvbench report --csv");
    assert!(written.success());
    let csv =
        std::fs::read_to_string(common::out_file(&out, "multi_scenario_stats_")).expect("the CSV");
    assert!(
        csv.lines()
            .any(|l| l.contains(",all,cached,1,1,capacity,cold,")),
        "{csv}"
    );
}

/// `search:` on the same sim: the boundary of the warm round found by bisection within the
/// resolution it states, in at most the points it states; the points it did not need are
/// said so in the run file, the events and the report.
#[test]
fn a_search_brackets_the_warm_boundary_within_its_stated_resolution_and_points() {
    let dir = TempDir::new("capacity-search");
    let (_sim, url) = procs::sim(&sim_flags(&[]));
    dir.write("cached.yaml", &config(&url));
    dir.write(
        "plan.yaml",
        &format!("output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - name: cached\n    config_file: cached.yaml\n    scenario: batch_processing\n    rounds: 2\n    search: {{slo: {{p95_ttft_ms: \"<= {SLO_MS}\"}}, between: [1, 64], points: 8}}\n"),
    );
    let (run, lines) = procs::run_json(dir.path(), &["run", "plan.yaml"]);
    let (mut started, mut not_needed, mut capacity) = (Vec::new(), Vec::new(), None);
    while let Ok((_, line)) = lines.recv_timeout(Duration::from_secs(120)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match v["event"].as_str() {
            Some("scenario_started") => {
                started.push(v["scenario"].as_str().unwrap_or("").to_owned())
            }
            Some("point_not_needed") => {
                not_needed.push(v["scenario"].as_str().unwrap_or("").to_owned())
            }
            Some("capacity") => capacity = Some(v["capacity"].clone()),
            Some("run_finished") => break,
            _ => {}
        }
    }
    drop(run);
    let c = capacity.expect("a capacity event");
    let s = &c["search"];
    let run_points = s["points_run"].as_u64().expect("points run");
    assert_eq!(s["points_max"], 8, "{s}");
    assert!(run_points <= 8, "{s}");
    assert_eq!(started.len() as u64, run_points, "{started:?}");
    assert_eq!(
        started.len() + not_needed.len(),
        8,
        "{started:?} {not_needed:?}"
    );
    // The lowest load first, then the highest; 64 concurrent requests never happen in a
    // round of 40 requests, so that point is excluded and bounds the search from above.
    assert_eq!(&started[..2], &["cached~s1", "cached~s2"]);
    let points = c["points"].as_array().expect("points");
    let loads: Vec<f64> = points
        .iter()
        .map(|p| p["load"].as_f64().expect("load"))
        .collect();
    assert_eq!((loads[0], loads[loads.len() - 1]), (1.0, 64.0), "{loads:?}");
    assert!(points.last().expect("64")["warm"]["excluded"].is_string());
    // The bracket holds the warm capacity, within the resolution stated before the search.
    let [a, b] = [0, 1].map(|k| {
        s["bracket"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("bracket: {s}"))
    });
    assert_eq!(c["warm"]["bound"], "interpolated", "{c}");
    let warm = c["warm"]["load"].as_f64().expect("warm capacity");
    assert!(a <= warm && warm <= b, "{warm} in [{a}, {b}]");
    let factor = 64f64.powf(0.5f64.powi(6));
    assert!(
        b - a <= 1.0 || (b - 1.0) / (a + 1.0) <= factor,
        "bracket [{a}, {b}] against the stated {}",
        s["stated_resolution"]
    );
    assert_eq!(
        s["stated_resolution"],
        "within 6.7 % give or take 1 concurrent request"
    );
    // The sim's model puts the warm boundary at SLO / one warm prefill.
    let stats = read_json(&common::out_file(
        &dir.path().join("out"),
        "cached_s3_stats_",
    ));
    near(
        warm,
        model_capacity(&stats, 1),
        "the searched warm capacity",
    );

    let out = dir.path().join("out");
    let run_file = read_json(&common::out_file(&out, "multi_scenario_run_"));
    let skipped: Vec<&str> = run_file["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .filter(|x| x["not_needed"] == true)
        .map(|x| x["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        skipped, not_needed,
        "the run file says which were not needed"
    );
    let report =
        std::fs::read_to_string(common::out_file(&out, "multi_scenario_report_")).expect("report");
    assert!(
        report.contains(&format!(
            "Searched on round 2 (warm) between 1 and 64 concurrent requests: {run_points} of at most 8 points"
        )),
        "{report}"
    );
    if !not_needed.is_empty() {
        assert!(
            report.contains(&format!("not needed {}", not_needed.len())),
            "{report}"
        );
    }
}
