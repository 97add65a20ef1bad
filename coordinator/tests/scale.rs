//! `kvbench scale` as someone reruns it: agents and sims as processes, one coordinator,
//! nothing lost, in plaintext and over mutual TLS with a token.

mod common;

use common::kvbench;

#[test]
fn two_agents_streaming_to_one_coordinator_lose_no_record() {
    let dir = tempfile::tempdir().expect("temp");
    let json = dir.path().join("scale.json");
    let out = kvbench()
        .args([
            "scale",
            "--agents",
            "2",
            "--streams",
            "64",
            "--itl-ms",
            "5",
            "--transport",
            "both",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("kvbench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("parses");
    // Plaintext, then mutual TLS with a token: nothing lost either way.
    for (i, transport) in ["plain", "tls"].iter().enumerate() {
        let run = &r["runs"][i];
        assert_eq!(run["agents"], 2);
        assert_eq!(run["transport"], *transport);
        assert_eq!(
            run["sent"], 256,
            "2 agents x 64 streams x 2 requests: {run}"
        );
        assert_eq!(run["received"], run["sent"]);
        assert_eq!(run["failed"], 0);
        assert!(run["peak_rss_bytes"].as_u64().unwrap_or(0) > 0, "{run}");
    }
    assert!(
        text.contains("| 2 | plain | 128 | 256 | 256 | 0 |"),
        "{text}"
    );
    assert!(
        text.contains("| 2 | TLS + token | 128 | 256 | 256 | 0 |"),
        "{text}"
    );
}
