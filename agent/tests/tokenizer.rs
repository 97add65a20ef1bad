//! Token counts that are right: with a real `tokenizer.json` (a word-level one made here:
//! words and punctuation are separate tokens, unlike kvbench's whitespace rule), generated
//! texts hit their requested lengths in that tokenizer's tokens within 2 %, and records
//! count prompts in them too.

use kvbench_agent::AgentConfig;
use kvbench_common::tokenizer::HfTokenizer;
use kvbench_common::tokenizer::{count_tokens, TokenCounter};
use kvbench_common::workload::{
    generate_with, OutputDist, WorkloadKind, WorkloadParams, WorkloadSpec,
};
use kvbench_proto::v1::{self, agent_client::AgentClient, round_event::Event};
use kvbench_sim::SimConfig;

const TOKENIZER_JSON: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": null,
  "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "the": 1, "cache": 2, ".": 3}, "unk_token": "[UNK]"}
}"#;

fn spec(kind: WorkloadKind, params: WorkloadParams) -> WorkloadSpec {
    WorkloadSpec {
        kind,
        seed: 9,
        num_requests: 6,
        output_tokens: 8,
        output: OutputDist::Fixed,
        params,
    }
}

fn within(got: usize, want: usize) -> bool {
    (got as f64 - want as f64).abs() <= 0.02 * want as f64
}

#[test]
fn generated_lengths_are_in_the_tokenizers_tokens() {
    let hf = HfTokenizer::from_bytes(TOKENIZER_JSON.as_bytes()).expect("tokenizer loads");
    // The tokenizer really differs from whitespace counting ("word." is two tokens).
    assert_eq!(hf.count("Cache the value."), 4);
    assert_eq!(count_tokens("Cache the value."), 3);

    let w = generate_with(
        &spec(
            WorkloadKind::ColdStart,
            WorkloadParams {
                prompt_tokens: Some(1000),
                ..Default::default()
            },
        ),
        1,
        &hf,
    );
    for c in &w.conversations {
        let n = hf.count(&c.user_turns[0]);
        assert!(within(n, 1000), "cold_start prompt has {n} tokens");
        assert!(
            count_tokens(&c.user_turns[0]) < 1000,
            "fewer words than tokens"
        );
    }
    let w = generate_with(
        &spec(
            WorkloadKind::CodeGeneration,
            WorkloadParams {
                context_tokens: Some(1500),
                instruction_tokens: Some(50),
                ..Default::default()
            },
        ),
        1,
        &hf,
    );
    let ctx = hf.count(w.conversations[0].system.as_deref().unwrap_or(""));
    assert!(within(ctx, 1500), "repository context has {ctx} tokens");
    let w = generate_with(
        &spec(
            WorkloadKind::LongContextHighReuse,
            WorkloadParams {
                document_tokens: Some(3000),
                question_tokens: Some(100),
                ..Default::default()
            },
        ),
        1,
        &hf,
    );
    let doc = w.conversations[0].user_turns[0]
        .split("\n\n")
        .next()
        .unwrap_or("");
    assert!(
        within(hf.count(doc), 3000),
        "document has {} tokens",
        hf.count(doc)
    );
    // Deterministic with a tokenizer too.
    let again = generate_with(
        &spec(
            WorkloadKind::LongContextHighReuse,
            WorkloadParams {
                document_tokens: Some(3000),
                question_tokens: Some(100),
                ..Default::default()
            },
        ),
        1,
        &hf,
    );
    assert_eq!(w, again);
}

#[tokio::test]
async fn records_count_prompts_in_the_tokenizers_tokens() {
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let agent = kvbench_agent::spawn(AgentConfig::vllm("a", sim.base_url()))
        .await
        .expect("agent");
    let mut client = AgentClient::connect(agent.url()).await.expect("connect");
    let req = v1::RunRoundRequest {
        scenario_id: "tok".into(),
        scenario_name: "tok".into(),
        round: 1,
        workload: Some(v1::WorkloadSpec {
            kind: v1::WorkloadKind::ColdStart as i32,
            seed: 1,
            num_requests: 3,
            output_tokens: 4,
            params: Some(v1::WorkloadParams {
                prompt_tokens: Some(400),
                ..Default::default()
            }),
            output_dist: None,
        }),
        load: Some(v1::LoadSpec {
            concurrency: 3,
            ttft_timeout_s: 10.0,
            idle_timeout_s: 10.0,
            ..Default::default()
        }),
        model: "m".into(),
        api: v1::ApiFlavor::Completions as i32,
        enforce_output_length: true,
        tokenizer_json: TOKENIZER_JSON.as_bytes().to_vec(),
        ..Default::default()
    };
    let mut stream = client.run_round(req).await.expect("round").into_inner();
    let mut n = 0;
    while let Some(ev) = stream.message().await.expect("stream") {
        if let Some(Event::Record(r)) = ev.event {
            n += 1;
            assert!(
                within(r.prompt_tokens_client as usize, 400),
                "client count {}",
                r.prompt_tokens_client
            );
            // The sim counts whitespace words: both counts are kept where they differ.
            let engine = r.prompt_tokens.expect("usage");
            assert!(
                engine < r.prompt_tokens_client,
                "engine {engine} vs client {}",
                r.prompt_tokens_client
            );
        }
    }
    assert_eq!(n, 3);
    let bad = v1::RunRoundRequest {
        round: 1,
        workload: Some(v1::WorkloadSpec {
            kind: v1::WorkloadKind::ColdStart as i32,
            num_requests: 1,
            output_tokens: 1,
            ..Default::default()
        }),
        load: Some(v1::LoadSpec {
            concurrency: 1,
            ttft_timeout_s: 1.0,
            idle_timeout_s: 1.0,
            ..Default::default()
        }),
        api: v1::ApiFlavor::Chat as i32,
        tokenizer_json: b"{not a tokenizer".to_vec(),
        ..Default::default()
    };
    let err = client.run_round(bad).await.expect_err("refused");
    assert!(err.message().contains("tokenizer"), "{}", err.message());
    agent.stop().await;
    sim.stop().await;
}
