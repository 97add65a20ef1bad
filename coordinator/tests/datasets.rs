//! Datasets end to end against kvbench-sim: a Mooncake trace slice (measured hit ratio
//! within 2 points of `workload inspect`'s), ShareGPT conversations whose later turns carry
//! the engine's real replies, custom JSONL, and a trace replayed on its timestamps.

mod common;

use common::kvbench;

use common::{load, read_json, run, TempDir};
use kvbench_common::rng::Rng;
use kvbench_common::tokenizer::{count_tokens, render_chat};
use kvbench_coordinator::engine::inspect::inspect_config;

/// A synthetic trace with real prefix sharing: each request continues one of a few
/// "sessions" (its hash ids are a session's ids so far plus new ones).
fn trace(n: usize) -> String {
    let mut r = Rng::new(3);
    let mut sessions: Vec<Vec<u64>> = vec![Vec::new(); 4];
    let mut next_id = 1u64;
    let mut out = String::new();
    for i in 0..n {
        let s = r.below(4) as usize;
        for _ in 0..1 + r.below(2) {
            sessions[s].push(next_id);
            next_id += 1;
        }
        let ids = sessions[s].clone();
        let input = (ids.len() as u64 * 512 - r.below(300)) as u32;
        out.push_str(&format!(
            "{{\"timestamp\": {}, \"input_length\": {input}, \"output_length\": 4, \"hash_ids\": {ids:?}}}\n",
            i * 200
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mooncake_trace_hit_ratio_matches_inspect() {
    let dir = TempDir::new("mooncake");
    dir.write("trace.jsonl", &trace(24));
    dir.write(
        "mc.yaml",
        "endpoint: sim\napi: completions\nnum_requests: 24\ndataset:\n  format: mooncake\n  path: trace.jsonl\n  use_timestamps: false\n",
    );
    dir.write(
        "ts.yaml",
        "endpoint: sim\napi: completions\nnum_requests: 6\ndataset:\n  format: mooncake\n  path: trace.jsonl\n  speedup: 4\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: mc, config_file: mc.yaml, scenario: long_context_high_reuse, rounds: 1}\n  - {name: ts, config_file: ts.yaml, scenario: long_context_high_reuse, rounds: 1}\n",
    ));
    let (summary, _) = run(&plan).await;
    assert_eq!(summary.failed(), 0);
    let s = &plan.scenarios[0];
    let i = inspect_config(&s.name, &s.config, 16, None).expect("inspects");
    let r = &summary.scenarios[0].stats.rounds[0];
    assert_eq!(r.completed, 24);
    let measured = r.cache_hit_ratio.expect("measured");
    assert!(
        i.round1_hit_ratio > 0.3,
        "the trace shares prefixes: {}",
        i.round1_hit_ratio
    );
    assert!(
        (measured - i.round1_hit_ratio).abs() <= 0.02,
        "measured {measured} vs inspect {}",
        i.round1_hit_ratio
    );
    // On its timestamps (200 ms apart, 4x faster): released 50 ms apart.
    let res = read_json(summary.scenarios[1].results_path.as_ref().expect("results"));
    let mut sched: Vec<f64> = res["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["scheduled_ms"].as_f64())
        .collect();
    sched.sort_by(f64::total_cmp);
    assert_eq!(sched.len(), 6);
    for w in sched.windows(2) {
        assert!(
            (w[1] - w[0] - 50.0).abs() < 5.0,
            "gaps follow the trace: {sched:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharegpt_turns_carry_real_replies_and_jsonl_runs() {
    let dir = TempDir::new("sharegpt");
    dir.write(
        "sg.json",
        r#"[{"id": "a", "conversations": [
              {"from": "human", "value": "tell me about rivers and mountains"},
              {"from": "gpt", "value": "rivers flow down from mountains to the sea"},
              {"from": "human", "value": "and lakes"},
              {"from": "gpt", "value": "lakes are still"},
              {"from": "human", "value": "thanks"},
              {"from": "gpt", "value": "you are welcome"}]}]"#,
    );
    dir.write(
        "d.jsonl",
        "{\"prompt\": \"a single prompt here\", \"max_tokens\": 3}\n{\"conversation_id\": \"c\", \"turn\": 1, \"prompt\": \"hello\"}\n{\"conversation_id\": \"c\", \"turn\": 2, \"prompt\": \"again\"}\n",
    );
    dir.write(
        "sg.yaml",
        "endpoint: sim\nnum_requests: 3\ndataset:\n  format: sharegpt\n  path: sg.json\n",
    );
    dir.write(
        "jl.yaml",
        "endpoint: sim\nnum_requests: 3\ndataset:\n  format: jsonl\n  path: d.jsonl\n",
    );
    let plan = load(&dir.write(
        "plan.yaml",
        "output_dir: out\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: sg, config_file: sg.yaml, scenario: multi_turn_conversation, rounds: 2}\n  - {name: jl, config_file: jl.yaml, scenario: multi_turn_conversation, rounds: 1}\n",
    ));
    let (summary, _) = run(&plan).await;
    assert_eq!(summary.failed(), 0);
    let res = read_json(summary.scenarios[0].results_path.as_ref().expect("results"));
    let recs: Vec<&serde_json::Value> = res["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["round"] == 1)
        .collect();
    assert_eq!(recs.len(), 3);
    // max_tokens came from the dataset's replies: 8, 3 and 3 tokens.
    let outs: Vec<u64> = recs
        .iter()
        .filter_map(|r| r["output_tokens"].as_u64())
        .collect();
    let mut sorted = outs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![3, 3, 8]);
    // Rebuild the history with the sim's actual replies: the prompt sizes match exactly, so
    // each turn carried the engine's real reply, not the dataset's.
    let users = ["tell me about rivers and mountains", "and lakes", "thanks"];
    let lens = [8u32, 3, 3];
    let mut history: Vec<(String, String)> = Vec::new();
    for (t, user) in users.iter().enumerate() {
        history.push(("user".into(), (*user).into()));
        let prompt = render_chat(history.iter().map(|(r, c)| (r.as_str(), c.as_str())));
        let rec = recs.iter().find(|r| r["turn"] == t as u64).expect("turn");
        assert_eq!(
            rec["prompt_tokens"].as_u64(),
            Some(count_tokens(&prompt) as u64),
            "turn {t}"
        );
        history.push((
            "assistant".into(),
            kvbench_sim::reply_text(&prompt, lens[t]),
        ));
    }
    let rounds = &summary.scenarios[0].stats.rounds;
    assert!(
        rounds[1].cache_hit_ratio > rounds[0].cache_hit_ratio,
        "round 2 replays the same conversation: {:?}",
        rounds.iter().map(|r| r.cache_hit_ratio).collect::<Vec<_>>()
    );
    let jl = &summary.scenarios[1].stats.rounds[0];
    assert_eq!(jl.completed, 3);
    assert_eq!(jl.total_output_tokens, 3 + 128 + 128);
}

#[test]
fn validate_reads_datasets_and_tokenizers_and_names_the_broken_file_and_line() {
    let dir = TempDir::new("broken-inputs");
    // Record 2 (line 4) is broken: a turn without its `value`.
    dir.write(
        "sg.json",
        "[\n{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]},\n{\"conversations\": [\n  {\"from\": \"human\"}]}\n]\n",
    );
    dir.write(
        "sg.yaml",
        "endpoint: sim\nnum_requests: 2\ndataset:\n  format: sharegpt\n  path: sg.json\n",
    );
    dir.write("tok.json", "{\"this is\": \"not a tokenizer\"}");
    dir.write(
        "tok.yaml",
        "endpoint: sim\nnum_requests: 2\ntokenizer: tok.json\nworkload:\n  prompt_tokens: 8\n",
    );
    let plan = dir.write(
        "plan.yaml",
        "output_dir: out\ntest_scenarios:\n  - {name: sg, config_file: sg.yaml, scenario: multi_turn_conversation}\n  - {name: tok, config_file: tok.yaml, scenario: cold_start}\n",
    );
    for cmd in ["validate", "run"] {
        let out = kvbench().arg(cmd).arg(&plan).output().expect("kvbench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains("sg.json:4"),
            "{cmd} names the dataset file and line: {stderr}"
        );
        assert!(
            stderr.contains("tok.json") && stderr.contains("not a usable tokenizer.json"),
            "{cmd} names the tokenizer file: {stderr}"
        );
        assert!(!dir.path().join("out").exists() || cmd == "validate");
    }
}
