//! Load shapes end to end: open loop with a concurrency cap (client queue time reported
//! separately), duration-limited rounds, warmups kept out of statistics and out of round 1,
//! goodput and configurable percentiles; every stats file matches the schema.

mod common;

use common::{assert_stats_schema, load, read_json, run, TempDir};

fn plan(name: &str, config: &str, rounds: u32) -> String {
    format!(
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - name: {name}\n    config_file: {config}\n    scenario: cold_start\n    rounds: {rounds}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_with_a_cap_reports_queue_time_goodput_and_percentiles() {
    let dir = TempDir::new("open-loop");
    dir.write(
        "open.yaml",
        "endpoint: sim\nnum_requests: 16\noutput_tokens: 8\nrequest_rate: inf\nmax_concurrency: 2\npercentiles: [50, 99.9]\ngoodput:\n  ttft_ms: 60\nworkload:\n  prompt_tokens: 200\n",
    );
    let p = load(&dir.write("plan.yaml", &plan("open", "open.yaml", 1)));
    let (summary, _) = run(&p).await;
    assert_eq!(summary.failed(), 0);
    let o = &summary.scenarios[0];
    let r = &o.stats.rounds[0];
    assert_eq!(r.completed, 16);
    assert!(
        r.max_concurrent_requests <= 2,
        "cap held: {}",
        r.max_concurrent_requests
    );
    // All 16 were due at once; with 2 slots, most waited for one, and that wait is queue
    // time, not TTFT.
    let queue = r.latency.queue.mean.expect("queue time");
    assert!(queue > 50.0, "mean queue {queue} ms");
    let ttft = r.latency.ttft.mean.expect("ttft");
    assert!(
        ttft < queue,
        "TTFT {ttft} ms excludes the queue ({queue} ms)"
    );
    assert!(r.latency.ttft.percentile(99.9).is_some() && r.latency.ttft.percentile(50.0).is_some());
    assert!(
        r.latency.flat().contains_key("p99_ttft_ms"),
        "p99 is always reported"
    );
    assert!(
        !r.latency.flat().contains_key("p90_ttft_ms"),
        "only the configured percentiles otherwise"
    );
    let good = r.good_requests.expect("goodput configured");
    assert!(good <= r.completed);
    assert!(r.request_goodput.is_some());
    let res = read_json(o.results_path.as_ref().expect("results"));
    for rec in res["records"].as_array().expect("records") {
        let (sched, queue, sent) = (
            rec["scheduled_ms"].as_f64().unwrap_or(f64::NAN),
            rec["queue_ms"].as_f64().unwrap_or(f64::NAN),
            rec["sent_ms"].as_f64().unwrap_or(f64::NAN),
        );
        assert!(
            sched <= sent && queue >= 0.0 && sched + queue <= sent + 1.0,
            "{rec}"
        );
    }
    assert_stats_schema(&read_json(o.stats_path.as_ref().expect("stats")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_rounds_draw_fresh_prompts_and_warmups_stay_out() {
    let dir = TempDir::new("duration");
    dir.write(
        "dur.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 4\nrequest_rate: 40\nduration_s: 1.0\nwarmup_requests: 3\nworkload:\n  prompt_tokens: 64\n",
    );
    let p = load(&dir.write("plan.yaml", &plan("dur", "dur.yaml", 2)));
    let (summary, sim) = run(&p).await;
    assert_eq!(summary.failed(), 0);
    let o = &summary.scenarios[0];
    let (r1, r2) = (&o.stats.rounds[0], &o.stats.rounds[1]);
    // About 40 requests in a second, far more than the 4-request pool: pools keep coming.
    assert!(r1.completed > 10, "round 1 completed {}", r1.completed);
    assert_eq!(r1.warmup_requests, 0, "no warmup in round 1 unless asked");
    assert_eq!(r2.warmup_requests, 3);
    assert!(
        r2.duration < 3.0,
        "the duration bounds the round: {}",
        r2.duration
    );
    let res = read_json(o.results_path.as_ref().expect("results"));
    let recs = res["records"].as_array().expect("records");
    let mut ids: Vec<u64> = recs
        .iter()
        .filter(|r| r["round"] == 1)
        .filter_map(|r| r["request_id"].as_u64())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "request ids are unique within a round");
    // Nothing in a cold-start round hits the cache: no prompt repeats across pools.
    assert!(
        r1.cache_hit_ratio.unwrap_or(1.0) < 0.05,
        "{:?}",
        r1.cache_hit_ratio
    );
    let warm = recs.iter().filter(|r| r["warmup"] == true).count();
    assert_eq!(warm, 3);
    // (round, request id) is a key: warmups have ids of their own.
    let mut keys: Vec<(u64, u64)> = recs
        .iter()
        .filter_map(|r| Some((r["round"].as_u64()?, r["request_id"].as_u64()?)))
        .collect();
    let all = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        all,
        "(round, request_id) is unique, warmups included"
    );
    // No concurrency cap: no request waited for a slot (a late release is not queueing).
    let queued = recs
        .iter()
        .filter_map(|r| r["queue_ms"].as_f64())
        .fold(0.0, f64::max);
    assert!(queued < 1.0, "queue_ms without a cap: {queued}");
    assert_eq!(
        sim.requests_received as usize,
        recs.len(),
        "warmups are sent and kept"
    );
    assert_stats_schema(&read_json(o.stats_path.as_ref().expect("stats")));
}

#[test]
fn load_shape_mistakes_are_named() {
    let dir = TempDir::new("bad-load");
    let bad = [
        ("request_rate: fast\n", "request_rate"),
        ("request_rate: 5\nburstiness: 0\n", "burstiness"),
        ("max_concurrency: 4\n", "max_concurrency"),
        (
            "request_rate: 5\nramp_up: {strategy: linear, start_rate: 1, end_rate: 9}\n",
            "ramp_up",
        ),
        (
            "ramp_up: {strategy: sideways, start_rate: 1, end_rate: 9}\n",
            "ramp_up.strategy",
        ),
        ("percentiles: [50, 100]\n", "percentiles"),
        ("goodput: {ttft_ms: -1}\n", "goodput.ttft_ms"),
        ("duration_s: 0\n", "duration_s"),
    ];
    for (extra, key) in bad {
        dir.write("c.yaml", &format!("endpoint: sim\n{extra}"));
        let p = dir.write("plan.yaml", &plan("x", "c.yaml", 1));
        let errs = kvbench_common::plan::load(&p).expect_err(extra).0;
        assert!(
            errs.iter().any(|e| e.key == key && e.line.is_some()),
            "{extra}: {errs:?}"
        );
    }
    // `concurrency` in the plan asks for a closed loop: it cannot go with an open one.
    dir.write("c.yaml", "endpoint: sim\nrequest_rate: 5\n");
    let p = dir.write(
        "plan.yaml",
        &format!("{}    concurrency: 4\n", plan("x", "c.yaml", 1)),
    );
    let errs = kvbench_common::plan::load(&p).expect_err("exclusive").0;
    assert_eq!(errs[0].key, "test_scenarios[0].concurrency");
    assert!(
        errs[0].message.contains("max_concurrency"),
        "{}",
        errs[0].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_time_separates_turns() {
    let dir = TempDir::new("think");
    dir.write(
        "mt.yaml",
        "endpoint: sim\nnum_requests: 4\noutput_tokens: 4\nworkload:\n  turns: 2\n  system_tokens: 20\n  user_tokens: 10\n  think_time_ms: 300\n",
    );
    let p = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: mt, config_file: mt.yaml, scenario: multi_turn_conversation, rounds: 1, concurrency: 2}\n",
    ));
    let (summary, _) = run(&p).await;
    assert_eq!(summary.failed(), 0);
    let res = read_json(summary.scenarios[0].results_path.as_ref().expect("results"));
    let recs = res["records"].as_array().expect("records");
    for conv in 0..2u64 {
        let turn = |t: u64| {
            recs.iter()
                .find(|r| r["conversation_id"] == conv && r["turn"] == t)
                .expect("turn recorded")
        };
        let gap = turn(1)["scheduled_ms"].as_f64().unwrap_or(0.0)
            - turn(0)["end_ms"].as_f64().unwrap_or(0.0);
        assert!(
            gap >= 299.0,
            "conversation {conv}: next turn {gap} ms after the reply"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_turn_rate_counts_requests_not_conversations() {
    let dir = TempDir::new("multi-turn-rate");
    // 40 requests in 8 conversations of 5 turns, at 20 requests/s: about 2 s of releases.
    dir.write(
        "mt.yaml",
        "endpoint: sim\nnum_requests: 40\noutput_tokens: 2\nrequest_rate: 20\nworkload:\n  conversations: 8\n  turns: 5\n  system_tokens: 16\n  user_tokens: 8\n",
    );
    let p = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: mt, config_file: mt.yaml, scenario: multi_turn_conversation, rounds: 1}\n",
    ));
    let (summary, _) = run(&p).await;
    assert_eq!(summary.failed(), 0);
    let res = read_json(summary.scenarios[0].results_path.as_ref().expect("results"));
    let sent: Vec<f64> = res["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["sent_ms"].as_f64())
        .collect();
    assert_eq!(sent.len(), 40);
    let span_s = (sent.iter().copied().fold(0.0, f64::max)
        - sent.iter().copied().fold(f64::INFINITY, f64::min))
        / 1000.0;
    let rate = 39.0 / span_s;
    // Conversations counted as requests would give 5 x 20 = 100 requests/s.
    assert!((10.0..35.0).contains(&rate), "{rate:.1} requests/s");
}
