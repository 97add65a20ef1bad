//! Bad plans are rejected before anything runs, with errors that name the file, the line
//! and the key, and say what would be valid. Every example plan in the repository loads.

mod common;

use common::kvbench;

use common::TempDir;
use kvbench_common::plan;

const GOOD_CONFIG: &str = "endpoint: sim\nnum_requests: 2\n";

fn errors(dir: &TempDir, plan_text: &str) -> Vec<plan::PlanError> {
    let p = dir.write("plan.yaml", plan_text);
    match plan::load(&p) {
        Ok(_) => panic!("plan should be rejected:\n{plan_text}"),
        Err(e) => e.0,
    }
}

fn plan_with(scenario_extra: &str) -> String {
    format!(
        "output_dir: out\ntest_scenarios:\n  - name: a\n    config_file: a.yaml\n    scenario: cold_start\n{scenario_extra}"
    )
}

#[test]
fn unknown_key_names_file_line_key_and_valid_keys() {
    let dir = TempDir::new("bad-key");
    dir.write("a.yaml", GOOD_CONFIG);
    let e = &errors(&dir, &plan_with("    concurency: 3\n"))[0];
    assert!(e.file.ends_with("plan.yaml"));
    assert_eq!(e.line, Some(6));
    assert_eq!(e.key, "test_scenarios[0].concurency");
    let shown = e.to_string();
    assert!(shown.contains("plan.yaml:6"), "{shown}");
    assert!(
        shown.contains("`concurrency`"),
        "lists the valid keys: {shown}"
    );

    let e = &errors(&dir, "output_dirr: x\ntest_scenarios: []\n")[0];
    assert_eq!((e.line, e.key.as_str()), (Some(1), "output_dirr"));
    assert!(e.message.contains("output_dir"), "{}", e.message);
}

#[test]
fn wrong_type_names_the_key() {
    let dir = TempDir::new("bad-type");
    dir.write("a.yaml", GOOD_CONFIG);
    let e = &errors(&dir, &plan_with("    rounds: two\n"))[0];
    assert_eq!(e.line, Some(6));
    assert_eq!(e.key, "test_scenarios[0].rounds");
    assert!(e.message.contains("invalid type"), "{}", e.message);

    let e = &errors(&dir, "wait_between_scenarios: soon\ntest_scenarios: []\n")[0];
    assert_eq!(
        (e.line, e.key.as_str()),
        (Some(1), "wait_between_scenarios")
    );
}

#[test]
fn missing_config_file_names_the_scenario_entry() {
    let dir = TempDir::new("bad-missing");
    dir.write("a.yaml", GOOD_CONFIG);
    let text = format!(
        "{}  - name: b\n    scenario: cold_start\n    config_file: nowhere.yaml\n",
        plan_with("")
    );
    let errs = errors(&dir, &text);
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!(e.key, "test_scenarios[1].config_file");
    assert_eq!(e.line, Some(8));
    assert!(
        e.message.contains("nowhere.yaml") && e.message.contains("not found"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_scenario_type_lists_the_five_types() {
    let dir = TempDir::new("bad-type-name");
    dir.write("a.yaml", GOOD_CONFIG);
    let text = "test_scenarios:\n  - name: a\n    config_file: a.yaml\n    scenario: warm_start\n";
    let e = &errors(&dir, text)[0];
    assert_eq!(
        (e.line, e.key.as_str()),
        (Some(4), "test_scenarios[0].scenario")
    );
    for t in [
        "long_context_high_reuse",
        "multi_turn_conversation",
        "code_generation",
        "batch_processing",
        "cold_start",
    ] {
        assert!(e.message.contains(t), "{}", e.message);
    }
}

#[test]
fn config_file_problems_name_the_config_file() {
    let dir = TempDir::new("bad-config");
    dir.write("a.yaml", "endpoint: sim\nnum_request: 2\n");
    let e = &errors(&dir, &plan_with(""))[0];
    assert!(e.file.ends_with("a.yaml"));
    assert_eq!((e.line, e.key.as_str()), (Some(2), "num_request"));

    dir.write("a.yaml", "endpoint: localhost:8000\n");
    let e = &errors(&dir, &plan_with(""))[0];
    assert_eq!((e.line, e.key.as_str()), (Some(1), "endpoint"));
    assert!(e.message.contains("http://"), "{}", e.message);

    dir.write(
        "a.yaml",
        "endpoint: sim\nworkload:\n  prompt_tokens: 10\n  turns: 3\n",
    );
    let e = &errors(&dir, &plan_with(""))[0];
    assert_eq!((e.line, e.key.as_str()), (Some(4), "workload.turns"));
    assert!(
        e.message.contains("prompt_tokens"),
        "says what cold_start accepts: {}",
        e.message
    );
}

#[test]
fn duplicate_names_and_zero_rounds_are_rejected_together() {
    let dir = TempDir::new("bad-semantic");
    dir.write("a.yaml", GOOD_CONFIG);
    let text = format!(
        "{}    rounds: 0\n  - name: a\n    config_file: a.yaml\n    scenario: cold_start\n",
        plan_with("")
    );
    let errs = errors(&dir, &text);
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["test_scenarios[0].rounds", "test_scenarios[1].name"]);
    assert_eq!(errs[0].line, Some(6));
    assert_eq!(errs[1].line, Some(7));
}

#[test]
fn cli_exits_non_zero_and_runs_nothing() {
    let dir = TempDir::new("bad-cli");
    dir.write("a.yaml", GOOD_CONFIG);
    let plan = dir.write("plan.yaml", &plan_with("    concurency: 3\n"));
    for cmd in ["validate", "run"] {
        let out = kvbench()
            .arg(cmd)
            .arg(&plan)
            .output()
            .expect("kvbench runs");
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("plan.yaml:6: key `test_scenarios[0].concurency`"),
            "{err}"
        );
    }
    assert!(!dir.path().join("out").exists(), "nothing was run");
}

#[test]
fn every_example_plan_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut found = 0;
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("examples folder").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n == "multi_scenario_config.yaml" || n == "search_config.yaml")
            {
                found += 1;
                if let Err(e) = plan::load(&p) {
                    panic!("{} does not validate:\n{e}", p.display());
                }
            }
        }
    }
    assert!(found >= 1, "no example plans found");
}

#[test]
fn isolation_policies_map_from_the_seed_and_are_checked() {
    let dir = TempDir::new("policy");
    dir.write("a.yaml", GOOD_CONFIG);
    let p = dir.write("plan.yaml", &plan_with(""));
    assert_eq!(
        plan::load(&p).expect("loads").isolation,
        plan::IsolationPolicy::Clear
    );
    let p = dir.write(
        "plan.yaml",
        &format!("clear_cache_between_scenarios: false\n{}", plan_with("")),
    );
    assert_eq!(
        plan::load(&p).expect("loads").isolation,
        plan::IsolationPolicy::Wait
    );
    let p = dir.write(
        "plan.yaml",
        &format!(
            "isolation: clear_or_restart\nisolate_before_first: true\n{}",
            plan_with("")
        ),
    );
    let loaded = plan::load(&p).expect("loads");
    assert_eq!(loaded.isolation, plan::IsolationPolicy::ClearOrRestart);
    assert!(loaded.isolate_before_first);
    let e = &errors(&dir, &format!("isolation: scrub\n{}", plan_with("")))[0];
    assert_eq!((e.line, e.key.as_str()), (Some(1), "isolation"));
    assert!(e.message.contains("clear_or_restart"), "{}", e.message);
}

#[test]
fn agent_config_must_exist_check_and_serve_a_scenario() {
    let dir = TempDir::new("agent-config");
    dir.write(
        "a.yaml",
        "endpoint: http://127.0.0.1:8000\nnum_requests: 2\n",
    );
    let plan = "output_dir: out\nagent_config: agent.yaml\ntest_scenarios:\n  - {name: a, config_file: a.yaml, scenario: cold_start}\n";
    // Missing file: rejected by the plan loader.
    let e = &errors(&dir, plan)[0];
    assert_eq!((e.line, e.key.as_str()), (Some(2), "agent_config"));
    assert!(e.message.contains("no such file"), "{}", e.message);
    // Through the CLI: the agent file's own errors, then an engine no scenario uses.
    let cases = [
        (
            "engine:\n  kind: vllm\n  base_url: http://127.0.0.1:8000\ntelemetry:\n  gpu_hz: 10\n",
            "agent.yaml:5: key `telemetry.gpu_hz`",
        ),
        (
            "engine:\n  kind: vllm\n  base_url: http://127.0.0.1:9999\n",
            "plan.yaml:2: key `agent_config`",
        ),
    ];
    let p = dir.write("plan.yaml", plan);
    for (agent, want) in cases {
        dir.write("agent.yaml", agent);
        for cmd in ["validate", "run"] {
            let out = kvbench().arg(cmd).arg(&p).output().expect("kvbench runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
            assert!(stderr.contains(want), "{cmd}: {stderr}");
        }
    }
    assert!(!dir.path().join("out").exists(), "nothing ran");
    dir.write(
        "agent.yaml",
        "engine:\n  kind: vllm\n  base_url: http://127.0.0.1:8000/\n",
    );
    let out = kvbench()
        .arg("validate")
        .arg(&p)
        .output()
        .expect("kvbench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sizes_beyond_the_limits_are_plan_errors_naming_the_key_and_the_limit() {
    let dir = TempDir::new("limits");
    dir.write(
        "a.yaml",
        "endpoint: sim\nnum_requests: 4\nworkload:\n  prompt_tokens: 2000000000\n",
    );
    let e = &errors(&dir, &plan_with(""))[0];
    assert!(e.file.ends_with("a.yaml"));
    assert_eq!(
        (e.line, e.key.as_str()),
        (Some(4), "workload.prompt_tokens"),
        "the line of the key itself"
    );
    assert!(e.message.contains("2097152"), "{}", e.message);

    // A huge concurrency is fine for a counted round, not for a timed one.
    dir.write("a.yaml", "endpoint: sim\nnum_requests: 4\nduration_s: 5\n");
    let e = &errors(&dir, &plan_with("    concurrency: 100000000\n"))[0];
    assert!(e.file.ends_with("plan.yaml"));
    assert_eq!(e.key, "test_scenarios[0].concurrency");
    assert!(e.message.contains("65536"), "{}", e.message);
}

#[test]
fn common_mistakes_get_errors_that_say_what_is_wrong() {
    let dir = TempDir::new("mistakes");
    // A base URL with /v1: kvbench would call /v1/v1/chat/completions.
    dir.write(
        "a.yaml",
        "endpoint: http://127.0.0.1:8000/v1\nnum_requests: 2\n",
    );
    let e = &errors(&dir, &plan_with(""))[0];
    assert_eq!(e.key, "endpoint");
    assert!(
        e.message.contains("ends in /v1") && e.message.contains("\"http://127.0.0.1:8000\""),
        "{}",
        e.message
    );
    // A config file that is a folder.
    std::fs::create_dir_all(dir.path().join("folder.yaml")).expect("mkdir");
    let text = "output_dir: out\ntest_scenarios:\n  - {name: a, config_file: folder.yaml, scenario: cold_start}\n";
    let e = &errors(&dir, text)[0];
    assert!(e.message.contains("is a folder"), "{}", e.message);
    // A plan that is a list.
    let e = &errors(&dir, "- output_dir: out\n")[0];
    assert!(
        !e.message.contains("Raw"),
        "no Rust type names: {}",
        e.message
    );
    assert!(e.message.contains("test_scenarios"), "{}", e.message);
}

#[test]
fn an_unknown_workload_key_lists_only_this_types_keys() {
    let dir = TempDir::new("workload-key");
    dir.write("a.yaml", "endpoint: sim\nworkload:\n  prompt_tokenz: 10\n");
    let e = &errors(&dir, &plan_with(""))[0];
    assert_eq!(e.key, "workload.prompt_tokenz");
    assert!(e.message.contains("prompt_tokens"), "{}", e.message);
    assert!(
        !e.message.contains("document_tokens"),
        "cold_start's keys only: {}",
        e.message
    );
}

#[test]
fn agents_and_placement_mistakes_name_the_key_and_what_is_valid() {
    let dir = TempDir::new("agents");
    dir.write("a.yaml", GOOD_CONFIG);
    dir.write(
        "r.yaml",
        "endpoint: agent\nnum_requests: 2\nworkload:\n  prompt_tokens: 8\n",
    );
    let agents = "agents:\n  - {name: dc-a, address: \"http://127.0.0.1:5001\", labels: {cloud: a}}\n  - {name: dc-b, address: \"http://127.0.0.1:5002\", labels: {cloud: b}}\n";
    let with = |scenario: &str| {
        format!("output_dir: out\n{agents}test_scenarios:\n  - name: r\n    config_file: r.yaml\n    scenario: cold_start\n{scenario}")
    };
    let cases: [(String, &str, &str); 6] = [
        (with("    agent: dc-z\n"), "test_scenarios[0].agent", "no agent named \"dc-z\"; the plan's agents are: dc-a, dc-b"),
        (with("    selector: {cloud: c}\n"), "test_scenarios[0].selector", "no agent has all of these labels"),
        (with("    agents: [dc-a, dc-a]\n    placement: split\n"), "test_scenarios[0].agents", "names agent \"dc-a\" twice"),
        (with("    agent: dc-a\n    selector: {cloud: a}\n"), "test_scenarios[0].agent", "give one of"),
        (with(""), "endpoint", "names no agent"),
        (
            "output_dir: out\nagents:\n  - {name: dc-a, address: \"10.0.0.1:5001\"}\ntest_scenarios:\n  - {name: r, config_file: r.yaml, scenario: cold_start, agent: dc-a}\n".to_owned(),
            "agents[0].address",
            "http://HOST:PORT",
        ),
    ];
    for (plan, key, message) in cases {
        let errs = errors(&dir, &plan);
        assert!(
            errs.iter()
                .any(|e| e.key == key && e.message.contains(message) && e.line.is_some()),
            "{plan}\n-> {errs:?}"
        );
    }
    // The embedded sim is not a remote agent's engine.
    let errs = errors(
        &dir,
        &format!("output_dir: out\n{agents}test_scenarios:\n  - {{name: s, config_file: a.yaml, scenario: cold_start, agent: dc-a}}\n"),
    );
    assert!(
        errs.iter()
            .any(|e| e.key == "endpoint" && e.message.contains("endpoint: agent")),
        "{errs:?}"
    );
    // Without an `agents:` section, naming an agent says what is missing.
    let errs = errors(&dir, &plan_with("    agent: dc-a\n"));
    assert!(
        errs.iter()
            .any(|e| e.message.contains("no `agents:` section")),
        "{errs:?}"
    );
}

#[test]
fn targets_name_the_key_and_what_would_be_valid() {
    let dir = TempDir::new("bad-targets");
    dir.write("a.yaml", GOOD_CONFIG);
    for (text, key, says) in [
        (
            format!("targets:\n  error_rate: 0.01\n{}", plan_with("")),
            "targets.error_rate",
            "with its operator",
        ),
        (
            format!("targets:\n  ttft_reduction: \">= 50\"\n{}", plan_with("")),
            "targets.ttft_reduction",
            "ttft_reduction_pct",
        ),
        (
            plan_with("    targets: {p99_ttft_ms: \"=< 2000\"}\n"),
            "test_scenarios[0].targets.p99_ttft_ms",
            ">=, <=, > or <",
        ),
    ] {
        let errs = errors(&dir, &text);
        let e = errs
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error at {key}: {errs:?}"));
        assert!(e.line.is_some(), "{e:?}");
        assert!(e.message.contains(says), "{e:?}");
    }
    // Good targets load, the scenario's in place of the plan's of the same figure.
    let p = dir.write(
        "plan.yaml",
        &format!(
            "targets:\n  error_rate: \"<= 0.01\"\n  p99_ttft_ms: \"<= 2000\"\n{}",
            plan_with("    targets: {p99_ttft_ms: \"< 500\"}\n")
        ),
    );
    let plan = plan::load(&p).expect("valid targets");
    assert_eq!(plan.targets.len(), 2);
    let own: Vec<String> = plan.scenarios[0]
        .targets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(own, ["error_rate <= 0.01", "p99_ttft_ms < 500"]);
}

#[test]
fn a_baseline_must_name_another_scenario_and_labels_come_from_the_plan_or_the_name() {
    let dir = TempDir::new("baselines");
    dir.write("a.yaml", GOOD_CONFIG);
    let two = |extra: &str| {
        format!(
            "output_dir: out\ntest_scenarios:\n  - name: 腾讯云-单机多卡-Qwen2.5-72B\n    config_file: a.yaml\n    scenario: cold_start\n  - name: with-cache\n    config_file: a.yaml\n    scenario: cold_start\n{extra}"
        )
    };
    for (extra, says) in [
        (
            "    baseline: without-cache\n",
            "no scenario named \"without-cache\"",
        ),
        ("    baseline: with-cache\n", "names the scenario itself"),
    ] {
        let errs = errors(&dir, &two(extra));
        let e = errs
            .iter()
            .find(|e| e.key == "test_scenarios[1].baseline")
            .unwrap_or_else(|| panic!("no baseline error: {errs:?}"));
        assert_eq!(e.line, Some(9), "{e:?}");
        assert!(e.message.contains(says), "{e:?}");
    }
    let p = dir.write(
        "plan.yaml",
        &two("    baseline: 腾讯云-单机多卡-Qwen2.5-72B\n    labels: {cache: on}\n"),
    );
    let plan = plan::load(&p).expect("a valid baseline");
    let labels = |i: usize| -> Vec<(String, String)> {
        plan.scenarios[i].labels.clone().into_iter().collect()
    };
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        labels(0),
        [
            pair("deployment", "单机多卡"),
            pair("model", "Qwen2.5-72B"),
            pair("platform", "腾讯云")
        ],
        "split from the seed's name form"
    );
    assert_eq!(labels(1), [pair("cache", "on")], "its own labels win");
    assert_eq!(
        plan.scenarios[1].baseline.as_deref(),
        Some("腾讯云-单机多卡-Qwen2.5-72B")
    );
}

#[test]
fn repeats_run_a_scenario_as_numbered_runs_and_out_of_range_is_refused() {
    let dir = TempDir::new("repeats");
    dir.write("a.yaml", GOOD_CONFIG);
    for bad in ["0", "101"] {
        let errs = errors(&dir, &plan_with(&format!("    repeats: {bad}\n")));
        let e = errs
            .iter()
            .find(|e| e.key == "test_scenarios[0].repeats")
            .unwrap_or_else(|| panic!("no repeats error: {errs:?}"));
        assert_eq!(e.line, Some(6), "{e:?}");
        assert!(e.message.contains("1 to 100"), "{e:?}");
    }
    let p = dir.write("plan.yaml", &plan_with("    repeats: 3\n"));
    let plan = plan::load(&p).expect("repeats load");
    let names: Vec<&str> = plan.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a#1", "a#2", "a#3"]);
    let r = plan.scenarios[1].repeat.as_ref().expect("a repeat");
    assert_eq!((r.index, r.of, r.scenario.as_str()), (2, 3, "a"));
    assert_eq!(plan.scenarios[2].slug, "a_3");
}

#[test]
fn sweeps_and_objectives_say_what_would_be_valid() {
    let dir = TempDir::new("bad-sweep");
    dir.write("a.yaml", GOOD_CONFIG);
    dir.write(
        "open.yaml",
        "endpoint: sim\nnum_requests: 2\nrequest_rate: 4\n",
    );
    let one = |extra: &str| errors(&dir, &plan_with(extra)).remove(0);

    let e = one("    slo: {p95_ttft_ms: \"<= 2000\"}\n");
    assert_eq!((e.line, e.key.as_str()), (Some(6), "test_scenarios[0].slo"));
    assert!(e.message.contains("sweep: {concurrency"), "{}", e.message);

    let e = one("    sweep: {concurrency: [1, 4], request_rate: [1]}\n");
    assert_eq!(e.key, "test_scenarios[0].sweep");
    assert!(e.message.contains("give one of"), "{}", e.message);

    let e = one("    sweep: {concurrency: [4, 1, 4]}\n");
    assert_eq!(e.key, "test_scenarios[0].sweep.concurrency");
    assert!(
        e.message.contains("the same load twice (c4)"),
        "{}",
        e.message
    );

    let e = one("    sweep: {concurrency: [0, 4]}\n");
    assert!(e.message.contains("above 0"), "{}", e.message);

    // Each point within the limits an agent enforces (a timed round's concurrency).
    dir.write(
        "timed.yaml",
        "endpoint: sim\nnum_requests: 2\nduration_s: 5\n",
    );
    let timed = "output_dir: out\ntest_scenarios:\n  - name: a\n    config_file: timed.yaml\n    scenario: cold_start\n    sweep: {concurrency: [1, 100000]}\n";
    let e = errors(&dir, timed).remove(0);
    assert_eq!(e.key, "test_scenarios[0].sweep.concurrency");
    assert!(e.message.starts_with("at 100000:"), "{}", e.message);

    let e = one("    sweep: {concurrency: [1, 2]}\n    slo: {ttft_reduction_pct: \">= 50\"}\n");
    assert_eq!(e.key, "test_scenarios[0].slo.ttft_reduction_pct");
    assert!(e.message.contains("p95_ttft_ms"), "{}", e.message);

    let e = one("    sweep: {concurrency: [1, 2]}\n    slo: {p95_tft_ms: \"<= 5\"}\n");
    assert!(e.message.contains("not a figure"), "{}", e.message);

    let open = "output_dir: out\ntest_scenarios:\n  - name: a\n    config_file: open.yaml\n    scenario: cold_start\n    sweep: {concurrency: [1, 2]}\n";
    let e = errors(&dir, open).remove(0);
    assert_eq!(e.key, "test_scenarios[0].sweep.concurrency");
    assert!(
        e.message.contains("sweep `request_rate` instead"),
        "{}",
        e.message
    );

    // Well-formed: each point a scenario of its own, in increasing load, after its own
    // isolation; a rate sweep turns a closed loop open.
    let p = dir.write(
        "good.yaml",
        &plan_with("    rounds: 2\n    repeats: 2\n    sweep: {request_rate: [4, 0.5]}\n    slo: {p95_ttft_ms: \"<= 2000\", error_rate: \"<= 0.01\"}\n"),
    );
    let plan = plan::load(&p).expect("a valid swept plan");
    let names: Vec<&str> = plan.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a~r0.5#1", "a~r0.5#2", "a~r4#1", "a~r4#2"]);
    let last = &plan.scenarios[3];
    let point = last.sweep.as_ref().expect("a sweep point");
    assert_eq!(
        (point.scenario.as_str(), point.value, point.index, point.of),
        ("a", 4.0, 2, 2)
    );
    assert_eq!(point.slo.len(), 2);
    assert!(matches!(
        last.config.open_loop.map(|o| o.rate),
        Some(kvbench_common::load::Rate::Fixed(r)) if r == 4.0
    ));
    assert_eq!(last.slug, "a_r4_2");
}

#[test]
fn searches_say_what_would_be_valid() {
    let dir = TempDir::new("bad-search");
    dir.write("a.yaml", GOOD_CONFIG);
    let one = |extra: &str| errors(&dir, &plan_with(extra)).remove(0);
    let slo = "slo: {p95_ttft_ms: \"<= 2000\"}";

    let e = one("    search: {between: [1, 64]}\n");
    assert_eq!(
        (e.line, e.key.as_str()),
        (Some(6), "test_scenarios[0].search")
    );
    assert!(e.message.contains("needs objectives"), "{}", e.message);

    let e = one(&format!("    search: {{{slo}, between: [64, 1]}}\n"));
    assert_eq!(e.key, "test_scenarios[0].search.between");
    assert!(e.message.contains("the lowest first"), "{}", e.message);

    let e = one(&format!("    search: {{{slo}, between: [1.5, 8]}}\n"));
    assert!(e.message.contains("whole numbers"), "{}", e.message);

    let e = one(&format!(
        "    search: {{{slo}, between: [1, 8], points: 2}}\n"
    ));
    assert_eq!(e.key, "test_scenarios[0].search.points");
    assert!(e.message.contains("3 to 16"), "{}", e.message);

    let e = one(&format!(
        "    sweep: {{concurrency: [1, 2]}}\n    search: {{{slo}, between: [1, 8]}}\n"
    ));
    assert_eq!(e.key, "test_scenarios[0].search");
    assert!(e.message.contains("not both"), "{}", e.message);

    let e = one(&format!(
        "    {slo}\n    search: {{{slo}, between: [1, 8]}}\n"
    ));
    assert_eq!(e.key, "test_scenarios[0].search.slo");

    let e = one(&format!(
        "    repeats: 2\n    search: {{{slo}, between: [1, 8]}}\n"
    ));
    assert_eq!(e.key, "test_scenarios[0].repeats");
    assert!(
        e.message.contains("use `sweep:` with `repeats:`"),
        "{}",
        e.message
    );

    // Well-formed: slots `~s1` ... `~sN`, the first at the lowest load and the second at
    // the highest, the others chosen while the run goes; the objectives may be the
    // scenario's own `slo:`.
    let p = dir.write(
        "good.yaml",
        &plan_with(&format!(
            "    rounds: 2\n    {slo}\n    search: {{between: [2, 128], points: 5}}\n"
        )),
    );
    let plan = plan::load(&p).expect("a valid searched plan");
    let names: Vec<&str> = plan.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a~s1", "a~s2", "a~s3", "a~s4", "a~s5"]);
    let point = plan.scenarios[1].sweep.as_ref().expect("a point");
    let spec = point.search.as_ref().expect("a search");
    assert_eq!((point.value, point.index, point.of), (128.0, 2, 5));
    assert_eq!(plan.scenarios[1].concurrency, 128);
    assert_eq!(
        (spec.between, spec.points, spec.chosen),
        ([2.0, 128.0], 5, false)
    );
    assert_eq!(point.slo.len(), 1);
    let chosen = plan.scenarios[2].at_search_load(16.0);
    assert_eq!(chosen.concurrency, 16);
    assert!(chosen
        .sweep
        .as_ref()
        .and_then(|p| p.search.as_ref())
        .is_some_and(|s| s.chosen));
}
