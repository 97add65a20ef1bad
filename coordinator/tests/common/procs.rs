//! Real processes for the fault tests: agents (`kvbench internal-agent`), sims (`kvbench
//! internal-sim`), `kvbench run --json` read line by line, and signals sent to them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed (after a SIGCONT, should it be stopped) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = signal(self.0.id(), "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kill -SIG PID`; whether it was delivered.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// The address a starting process prints on its first line after `prefix`.
fn first_line_after(child: &mut Child, prefix: &str) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the process says where it listens");
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
        .to_owned()
}

/// `kvbench internal-agent` (no telemetry) for the engine at `engine`, and its address.
pub fn agent(name: &str, engine: &str) -> (Proc, String) {
    let mut child = crate::common::kvbench()
        .args([
            "internal-agent",
            "--listen",
            "127.0.0.1:0",
            "--no-telemetry",
        ])
        .args(["--name", name, "--engine", engine])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let addr = first_line_after(&mut child, "kvbench-agent listening on ");
    (Proc(child), addr)
}

/// `kvbench internal-agent --config FILE` (its log in `log`), and its address.
pub fn agent_from_config(config: &Path, log: &Path) -> (Proc, String) {
    let mut child = crate::common::kvbench()
        .args(["internal-agent", "--no-telemetry", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("agent log"))
        .spawn()
        .expect("agent starts");
    let addr = first_line_after(&mut child, "kvbench-agent listening on ");
    (Proc(child), addr)
}

/// Requests the sim at `base_url` served to the end (its `vllm:request_success_total`).
pub async fn served(base_url: &str) -> u64 {
    kvbench_agent::scrape_metrics(
        &format!("{base_url}/metrics"),
        &["vllm:request_success_total"],
        Duration::from_secs(5),
    )
    .await
    .expect("sim metrics")
    .get("vllm:request_success_total")
    .copied()
    .unwrap_or(0.0) as u64
}

/// `kvbench ARGS --json` in `dir`, its stdout lines read as they come, each with when.
pub fn run_json(dir: &Path, args: &[&str]) -> (Proc, std::sync::mpsc::Receiver<(Instant, String)>) {
    let mut child = crate::common::kvbench()
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kvbench runs");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    (Proc(child), rx)
}

/// Reads events until `scenario` finished: its `scenario_finished` event, and its rounds'
/// `round_stats`, within `timeout` between two lines.
pub fn finished_with_rounds(
    lines: &std::sync::mpsc::Receiver<(Instant, String)>,
    scenario: &str,
    timeout: Duration,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let mut rounds = Vec::new();
    while let Ok((_, line)) = lines.recv_timeout(timeout) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["scenario"] != scenario {
            continue;
        }
        if v["event"] == "round_stats" {
            rounds.push(v["stats"].clone());
        }
        if v["event"] == "scenario_finished" {
            return (v, rounds);
        }
    }
    panic!("scenario {scenario} did not finish");
}

/// Reads events until `scenario` finished; that event.
pub fn until_finished(
    lines: &std::sync::mpsc::Receiver<(Instant, String)>,
    scenario: &str,
) -> serde_json::Value {
    finished_with_rounds(lines, scenario, Duration::from_secs(90)).0
}

/// Waits until the sim at `base_url` has served `n` requests (30 s at most).
pub async fn until_served(base_url: &str, n: u64) {
    let started = Instant::now();
    while served(base_url).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the round did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kvbench internal-sim FLAGS` on a free loopback port, and its base URL.
pub fn sim(flags: &[&str]) -> (Proc, String) {
    sim_listening("127.0.0.1:0", flags)
}

/// `kvbench internal-sim --listen LISTEN FLAGS`, and its base URL.
pub fn sim_listening(listen: &str, flags: &[&str]) -> (Proc, String) {
    let mut child = crate::common::kvbench()
        .args(["internal-sim", "--listen", listen])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kvbench internal-sim starts");
    let addr = first_line_after(&mut child, "kvbench-sim listening on ");
    (Proc(child), format!("http://{addr}"))
}
