//! The seed's planning, built in: its four planning examples as plans that validate, the
//! time estimate `kvbench validate` prints, and the naming rule it checks.

mod common;

use common::kvbench;

use std::path::Path;

use common::TempDir;

fn validate(plan: &Path) -> (i32, String) {
    let out = kvbench()
        .arg("validate")
        .arg(plan)
        .output()
        .expect("kvbench runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_four_planning_examples_validate_with_a_time_estimate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/planning");
    let plans = [
        ("1-compare-clouds.yaml", 6),
        ("2-cross-node.yaml", 2),
        ("3-compare-models.yaml", 3),
        ("4-full-matrix.yaml", 8),
    ];
    std::thread::scope(|s| {
        for (file, scenarios) in plans {
            let dir = &dir;
            s.spawn(move || {
                // Their agents are not up here: validate says so and checks the rest.
                let (code, out) = validate(&dir.join(file));
                assert_eq!(code, 0, "{file}:\n{out}");
                assert!(
                    out.contains(&format!("OK, {scenarios} scenarios")),
                    "{file}:\n{out}"
                );
                assert!(out.contains("Time estimate: about "), "{file}:\n{out}");
                assert!(out.contains("assumed: prefill"), "{file}:\n{out}");
                assert!(
                    !out.contains("warning:"),
                    "names follow the rule: {file}:\n{out}"
                );
            });
        }
    });
}

#[test]
fn validate_estimates_from_the_sims_model_then_from_the_last_run_and_warns_about_names() {
    let dir = TempDir::new("estimate");
    dir.write(
        "c.yaml",
        "endpoint: sim\nnum_requests: 8\noutput_tokens: 16\nworkload:\n  prompt_tokens: 200\n",
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 3\ntest_scenarios:\n  - {name: sim-serial-tiny, config_file: c.yaml, scenario: cold_start, rounds: 2, concurrency: 2}\n  - {name: test1, config_file: c.yaml, scenario: cold_start, rounds: 2, concurrency: 2}\n",
    );
    let (code, out) = validate(&plan);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kvbench-sim's latency model"), "{out}");
    assert!(
        out.contains("test1: ") && out.contains("+ 4 s isolation and wait before it"),
        "a clear (1 s assumed) and the 3 s wait before the second: {out}"
    );
    assert!(
        out.contains("warning: scenario name \"test1\" does not say what it compares"),
        "{out}"
    );
    assert!(!out.contains("\"sim-serial-tiny\" does not"), "{out}");
    let run = kvbench()
        .arg("run")
        .arg(&plan)
        .output()
        .expect("kvbench runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (_, out) = validate(&plan);
    let line = out
        .lines()
        .find(|l| l.contains("- sim-serial-tiny: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("measured in ") && line.contains("sim-serial-tiny_stats_"),
        "{line}"
    );
}

/// The seed's `mooncake.metadata_server_url` clears through embedded agents only: with
/// remote agents, validate points to each agent config's Mooncake preset instead.
#[test]
fn a_mooncake_url_with_remote_agents_points_to_the_agents_preset() {
    let dir = TempDir::new("mooncake-remote");
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 4\nworkload:\n  prompt_tokens: 16\n",
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\nmooncake:\n  metadata_server_url: http://10.0.0.9:8080\nagents:\n  - {name: dc-a, address: \"http://127.0.0.1:1\"}\ntest_scenarios:\n  - {name: dc-a-single-node-tiny, config_file: c.yaml, scenario: cold_start, agent: dc-a}\n",
    );
    let (code, out) = validate(&plan);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("mooncake.metadata_server_url (http://10.0.0.9:8080) is cleared by embedded agents only")
            && out.contains("preset: mooncake_master"),
        "{out}"
    );
}
