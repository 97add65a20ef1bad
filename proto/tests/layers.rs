//! The layers hold: generated gRPC types stay behind the two adapters (the agent's
//! `grpc.rs` and the coordinator's `agents/client.rs`; everything else speaks the domain
//! types of `kvbench_common::agent`), the coordinator's folders import one way (`engine/`
//! never the presenters or the CLI, `output/` only common, `present/` never the CLI or
//! the agents), the agent's internals stay private, and common has no async runtime.

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

/// Lines of `text` whose code (comments aside) names one of `forbidden`.
fn naming(text: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            forbidden.iter().any(|f| code.contains(f))
        })
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .collect()
}

/// Every line under `dir` (relative to the workspace root) that names one of `forbidden`.
fn violations(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut files = Vec::new();
    rust_files(&root.join(dir), &mut files);
    assert!(!files.is_empty(), "{dir} holds sources");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable source");
        let rel = f.strip_prefix(root).expect("under the root").display();
        for (line, code) in naming(&text, forbidden) {
            found.push(format!("{rel}:{line}: {code}"));
        }
    }
    found
}

#[test]
fn the_coordinators_layers_import_one_way() {
    let rules: [(&str, &[&str]); 4] = [
        (
            "coordinator/src/engine",
            &[
                "crate::present",
                "crate::cli",
                "console",
                "outln!",
                "println!",
                // Files are written through `output` alone.
                "fs::write",
                "File::create",
                "create_dir",
                "OpenOptions",
                "fs::rename",
                "remove_file",
            ],
        ),
        (
            "coordinator/src/output",
            &[
                "crate::engine",
                "crate::present",
                "crate::cli",
                "crate::agents",
                "kvbench_agent",
                "kvbench_sim",
                "kvbench_proto",
            ],
        ),
        (
            "coordinator/src/present",
            &[
                "crate::cli",
                "crate::agents",
                "kvbench_agent",
                "kvbench_proto",
                "println!",
            ],
        ),
        (
            "coordinator/src/agents",
            &[
                "crate::engine",
                "crate::present",
                "crate::cli",
                "crate::output",
            ],
        ),
    ];
    for (dir, forbidden) in rules {
        let found = violations(dir, forbidden);
        assert!(
            found.is_empty(),
            "{dir} imports what it may not:\n{}",
            found.join("\n")
        );
    }
    // The presenters read the engine's events and outcomes, nothing else of it.
    let found: Vec<String> = violations("coordinator/src/present", &["crate::engine::"])
        .into_iter()
        .filter(|l| !l.contains("crate::engine::events") && !l.contains("crate::engine::outcome"))
        .collect();
    assert!(
        found.is_empty(),
        "present/ reaches into the engine:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_detector_sees_an_upward_import() {
    let text = "use crate::present::console::Console; // the engine printing\n// crate::cli in a comment\nlet x = 1;";
    assert_eq!(naming(text, &["crate::present", "crate::cli"]).len(), 1);
}

#[test]
fn common_has_no_async_runtime_and_the_agent_shows_only_its_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let manifest = std::fs::read_to_string(root.join("common/Cargo.toml")).expect("manifest");
    let deps: Vec<&str> = manifest
        .lines()
        .filter(|l| l.trim_start().starts_with("tokio"))
        .collect();
    assert!(deps.is_empty(), "common depends on tokio: {deps:?}");
    // The agent's modules are private but its config file's (the public API is lib.rs).
    let lib = std::fs::read_to_string(root.join("agent/src/lib.rs")).expect("agent lib");
    let public: Vec<&str> = lib.lines().filter(|l| l.starts_with("pub mod ")).collect();
    assert_eq!(public, ["pub mod config;"], "the agent's public modules");
    // The coordinator reaches the agent through its public API alone (no module paths
    // but the config file's).
    let found: Vec<String> = violations("coordinator/src", &["kvbench_agent::"])
        .into_iter()
        .filter(|l| {
            let after = l.split("kvbench_agent::").nth(1).unwrap_or("");
            after.starts_with(|c: char| c.is_ascii_lowercase())
                && !after.starts_with("config::")
                && !after.starts_with("spawn")
                && !after.starts_with("serve")
                && !after.starts_with("scrape_metrics")
        })
        .collect();
    assert!(
        found.is_empty(),
        "the coordinator reaches into the agent:\n{}",
        found.join("\n")
    );
}
