//! A disk that fills up mid-round, for real: the output folder on a tmpfs of a few hundred
//! KiB, most of it taken by a filler file. The run stops at once with a clear error (exit
//! 5), its records file holds whole records up to the failure, and once there is room
//! `kvbench run --resume` takes what the agent kept and completes the run. Needs root
//! (mount); without it the test passes saying so, except under CI (`CI` set).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::procs::{agent, run_json, served};
use common::TempDir;
use kvbench_sim::SimConfig;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Disk(PathBuf);

impl Disk {
    /// `dir` as a tmpfs of `kib` KiB; None (the test passes, saying so) where it cannot be
    /// mounted, except under CI.
    fn mount(dir: &Path, kib: u32) -> Option<Disk> {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount a tmpfs (root)"
            );
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Disk(dir.to_owned()))
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

const SCENARIO: &str =
    "endpoint: agent\nnum_requests: 600\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_run_resumably_and_nothing_is_lost() {
    let dir = TempDir::new("disk-full");
    let Some(_disk) = Disk::mount(&dir.path().join("disk"), 2048) else {
        return;
    };
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let (_agent, addr) = agent("a", &sim.base_url());
    dir.write("s.yaml", SCENARIO);
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: disk/out\nisolation: clear\nwait_between_scenarios: 0\nagents:\n  - {{name: a, address: \"http://{addr}\"}}\ntest_scenarios:\n  - {{name: s, scenario: cold_start, config_file: s.yaml, agent: a, rounds: 1, concurrency: 4}}\n"
        ),
    );
    // All but 96 KiB of the disk taken: the records of 600 requests do not fit.
    let filler = dir.path().join("disk/filler");
    std::fs::write(&filler, vec![0u8; (2048 - 96) * 1024]).expect("filler");

    let (mut run, lines) = run_json(dir.path(), &["run", "plan.yaml"]);
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_str(&l).ok())
        .collect();
    let status = run.0.wait().expect("kvbench ends");
    assert_eq!(status.code(), Some(5), "a full disk's exit status");
    let failed = events
        .iter()
        .find(|v| v["event"] == "output_failed")
        .expect("an output_failed event");
    let message = failed["message"].as_str().unwrap_or("");
    assert!(message.contains("No space left"), "{failed}");
    // The records file: whole records only, up to the failure.
    let spool = PathBuf::from(failed["file"].as_str().expect("file"));
    let spool = if spool.is_absolute() {
        spool
    } else {
        dir.path().join(spool)
    };
    let text = std::fs::read_to_string(&spool).expect("the records file stays");
    let written = text.lines().count();
    assert!(written > 20 && written < 600, "{written} records written");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line a whole record");
    }
    assert!(text.ends_with('\n'));

    // Room again: the run resumes, the agent hands over what could not be written.
    std::fs::remove_file(&filler).expect("make room");
    let out = common::kvbench()
        .args(["run", "--resume", "disk/out"])
        .current_dir(dir.path())
        .output()
        .expect("kvbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let stats = common::read_json(&common::out_file(&dir.path().join("disk/out"), "s_stats_"));
    assert_eq!(stats["status"], "completed");
    assert_eq!(stats["rounds"][0]["completed"], 600);
    let interruption = stats["interruption"].as_str().expect("interruption noted");
    assert!(interruption.contains("records"), "{interruption}");
    // Nothing measured lost: the interrupted attempt's file (now with what the agent kept)
    // and the attempt that counts account for everything the engine served.
    // Requests in flight when the run stopped are `cancelled` records (some of them may
    // have completed on the engine all the same).
    let attempt = std::fs::read_to_string(&spool).expect("the attempt's records");
    let count = |outcome: &str| {
        attempt
            .lines()
            .filter(|l| l.contains(&format!("\"outcome\":\"{outcome}\"")))
            .count() as u64
    };
    let (ok, cancelled) = (count("ok"), count("cancelled"));
    assert_eq!(ok + cancelled, attempt.lines().count() as u64, "{attempt}");
    assert!(
        attempt.lines().count() > written,
        "the records after the failure were fetched"
    );
    let probes = u64::from(stats["isolation"]["probe"].is_object());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sim_served = served(&sim.base_url()).await - 600 - probes;
    assert!(
        ok <= sim_served && sim_served <= ok + cancelled,
        "the engine served {sim_served} in the interrupted attempt; its records: {ok} ok, {cancelled} cancelled"
    );
}
