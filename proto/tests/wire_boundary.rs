//! Generated gRPC types stay behind the two adapters: the agent's service module and the
//! coordinator's agent client. Everything else speaks the domain types of
//! `kvbench_common::agent`; this test fails when a generated type is named anywhere else.

use std::path::{Path, PathBuf};

/// Source files allowed to name generated types, relative to the workspace root.
const ADAPTERS: [&str; 2] = ["agent/src/grpc.rs", "coordinator/src/agents/client.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines that name a generated type: the `v1` module, or the generated crate paths.
fn offending_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            code.contains("v1::")
                || code.contains("kvbench_proto::v1")
                || code.contains("tonic::include_proto")
        })
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .collect()
}

#[test]
fn generated_types_are_named_only_in_the_two_adapters() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut files = Vec::new();
    for dir in ["common/src", "agent/src", "coordinator/src", "sim/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "found the sources ({} files)",
        files.len()
    );
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root).expect("under the root");
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        if ADAPTERS.contains(&rel_s.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("readable source");
        for (line, code) in offending_lines(&text) {
            found.push(format!("{rel_s}:{line}: {code}"));
        }
    }
    assert!(
        found.is_empty(),
        "generated gRPC types named outside the adapters ({}):\n{}",
        ADAPTERS.join(", "),
        found.join("\n")
    );
    // The adapters do name them (the test would pass vacuously if the paths moved).
    for a in ADAPTERS {
        let text = std::fs::read_to_string(root.join(a)).expect("adapter exists");
        assert!(!offending_lines(&text).is_empty(), "{a} names wire types");
    }
}

#[test]
fn the_detector_sees_a_wire_type() {
    assert_eq!(
        offending_lines("let x = v1::RoundEvent::default();").len(),
        1
    );
    assert!(offending_lines("// v1::RoundEvent in a comment").is_empty());
    assert!(offending_lines("let e = RoundEvent::Started(s);").is_empty());
}
