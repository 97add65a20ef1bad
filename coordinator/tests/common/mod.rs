//! Helpers shared by the coordinator's integration tests: plans written to a temporary
//! folder, run through the embedded agent and sim exactly as `kvbench run` does.

#![allow(dead_code)]

pub mod procs;

use std::path::{Path, PathBuf};

use kvbench_common::plan::{self, Plan};
use kvbench_coordinator::agents::Embedded;
use kvbench_coordinator::cli::run::write_reports;
use kvbench_coordinator::engine::outcome::RunSummary;
use kvbench_coordinator::engine::plan_run::run_plan;
use kvbench_sim::{EngineCounters, SimConfig};
use tokio_util::sync::CancellationToken;

/// The `kvbench` binary of this build, as a command to give arguments to.
pub fn kvbench() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_kvbench"))
}

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kvbench-test-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

pub fn load(path: &Path) -> Plan {
    match plan::load(path) {
        Ok(p) => p,
        Err(e) => panic!("plan should load: {e}"),
    }
}

/// Runs a plan with the given agents (one per endpoint), quietly.
pub async fn run_with_agents(
    plan: &Plan,
    agents: &std::collections::BTreeMap<
        kvbench_common::plan::Endpoint,
        kvbench_coordinator::agents::AgentClient,
    >,
) -> RunSummary {
    run_plan(
        plan,
        &kvbench_coordinator::engine::inputs::Inputs::load(plan).expect("inputs load"),
        &agents.clone().into(),
        CancellationToken::new(),
        &mut kvbench_coordinator::engine::events::Silent,
        write_reports,
    )
    .await
    .expect("plan runs")
}

/// Runs a plan with the embedded default; returns the summary and the sim's counters.
pub async fn run(plan: &Plan) -> (RunSummary, EngineCounters) {
    run_with(plan, SimConfig::default()).await
}

/// Runs a plan with an embedded sim configured as given.
pub async fn run_with(plan: &Plan, sim: SimConfig) -> (RunSummary, EngineCounters) {
    let embedded = Embedded::start(plan, sim)
        .await
        .expect("embedded agent and sim start");
    let summary = run_with_agents(plan, &embedded.by_endpoint).await;
    let counters = embedded
        .sim
        .as_ref()
        .map(|s| s.engine.counters())
        .expect("the plan uses the sim");
    embedded.stop().await;
    (summary, counters)
}

/// The files in `dir` whose names start with `prefix`, sorted.
pub fn out_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}

/// The file in `dir` whose name starts with `prefix` (a scenario's `<slug>_stats_`, ...).
pub fn out_file(dir: &Path, prefix: &str) -> PathBuf {
    out_files(dir, prefix)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read result file");
    serde_json::from_str(&text).expect("result file is JSON")
}

/// Validates a stats file against `schemas/stats.schema.json`; panics with the errors.
pub fn assert_stats_schema(stats: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/stats.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
            .expect("schema is JSON");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("stats.schema.json", schema)
        .expect("schema resource");
    let idx = compiler
        .compile("stats.schema.json", &mut schemas)
        .unwrap_or_else(|e| panic!("schema compiles: {e}"));
    if let Err(e) = schemas.validate(stats, idx) {
        panic!("stats file does not match the schema:\n{e:#}");
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real engine a build script left in kvbench's cache: `$override_var` if set, else
/// `folder` under `KVBENCH_CACHE` (else `$XDG_CACHE_HOME/kvbench`, else
/// `~/.cache/kvbench`). `None` (the test passes, saying to run `script`) when a file of
/// `needs` is missing there, except under CI (`CI` set), where the test fails.
pub fn require_engine(
    override_var: &str,
    folder: &str,
    needs: &[&str],
    script: &str,
) -> Option<PathBuf> {
    let dir = match std::env::var_os(override_var) {
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("KVBENCH_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| Path::new(&x).join("kvbench")))
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/kvbench")))
            .map(|c| c.join(folder)),
    };
    let dir = dir.filter(|d| needs.iter().all(|n| d.join(n).is_file()));
    if dir.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{folder} is not built: run {script} (CI must)"
        );
        eprintln!("skipped: {folder} is not built (bash {script})");
    }
    dir
}

/// Polls `GET {url}/health` until it answers 200; false once `timeout` passed.
pub fn wait_healthy(url: &str, timeout: std::time::Duration) -> bool {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    while started.elapsed() < timeout {
        if let Ok(mut c) = std::net::TcpStream::connect(&addr) {
            let _ = c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut s = String::new();
            let _ = c.read_to_string(&mut s);
            if s.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
