//! Every file in `deploy/` checked by the tool its consumer uses: `systemd-analyze verify`
//! and `security --offline=yes` for the unit (exposure 2.5 or lower), `shellcheck` for the
//! scripts, a JavaScript parse (esprima) for the polkit rule, `kubernetes-validate` for the
//! manifests, `kvbench-agent --check-config` for the agent configs (the DaemonSet's
//! included) and `kvbench validate` for the Job's plan; `install-agent.sh --root DIR` twice
//! gives the same tree and `--uninstall` leaves it empty. `.ci/run` installs the tools;
//! outside CI a missing tool skips its check, saying so; with `CI` set it fails.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TempDir;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// Whether `tool` runs; with CI set its absence is a failure.
fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing: .ci/run installs it"
        );
        eprintln!("skipped: {tool} is not installed (apt-get install systemd shellcheck; pip install kubernetes-validate esprima)");
    }
    ok
}

fn run(c: &mut Command) -> (bool, String) {
    let o = c.output().expect("runs");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !have("systemd-analyze", &["--version"]) {
        return;
    }
    let dir = TempDir::new("unit");
    // verify checks that ExecStart= exists: the built binary stands in for the installed one.
    let agent = root().join("target/release/kvbench-agent");
    let unit =
        std::fs::read_to_string(root().join("deploy/systemd/kvbench-agent.service")).unwrap();
    let path = dir.write(
        "kvbench-agent.service",
        &unit.replace("/usr/local/bin/kvbench-agent", agent.to_str().unwrap()),
    );
    let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    let (_, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path));
    let score: f64 = out
        .split("Overall exposure level for kvbench-agent.service: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{out}"));
    assert!(score <= 2.5, "exposure {score}:\n{out}");
    // NVML's devices stay reachable.
    assert!(
        unit.contains("DevicePolicy=closed")
            && unit.contains("DeviceAllow=char-nvidia-frontend rw")
    );
    assert!(
        !unit.lines().any(|l| l.starts_with("PrivateDevices=")),
        "PrivateDevices hides the GPUs"
    );
}

#[test]
fn scripts_pass_shellcheck() {
    if !have("shellcheck", &["--version"]) {
        return;
    }
    let mut scripts: Vec<PathBuf> = ["deploy/install-agent.sh", ".ci/run"]
        .iter()
        .map(|s| root().join(s))
        .collect();
    for d in ["scripts", "examples/multi-datacenter"] {
        scripts.extend(
            std::fs::read_dir(root().join(d))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "sh")),
        );
    }
    for s in &scripts {
        let (ok, out) = run(Command::new("shellcheck").arg(s));
        assert!(ok, "shellcheck {}:\n{out}", s.display());
    }
}

#[test]
fn the_polkit_rule_parses_and_names_one_unit_and_verb() {
    if !have("python3", &["-c", "import esprima"]) {
        return;
    }
    let rule = root().join("deploy/polkit/50-kvbench-agent.rules");
    let (ok, out) = run(Command::new("python3")
        .args([
            "-c",
            "import esprima,sys; esprima.parseScript(open(sys.argv[1]).read()); print('parsed')",
        ])
        .arg(&rule));
    assert!(ok && out.contains("parsed"), "{out}");
    let text = std::fs::read_to_string(rule).unwrap();
    assert!(
        text.contains("org.freedesktop.systemd1.manage-units")
            && text.contains("action.lookup(\"verb\") === \"restart\"")
    );
}

#[test]
fn the_manifests_validate() {
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let k8s = root().join("deploy/k8s");
    let files: Vec<PathBuf> = std::fs::read_dir(&k8s)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(files.len() >= 4);
    let (ok, out) = run(Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files));
    assert!(ok, "{out}");
    for f in ["agent-daemonset.yaml", "run-job.yaml", "agent-config.yaml"] {
        assert!(
            out.contains(&format!("{f} passed")),
            "{f} was not validated:\n{out}"
        );
    }
}

/// A ConfigMap's `data` entries.
fn config_map(path: &Path, name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if v["kind"] == "ConfigMap" && v["metadata"]["name"] == name {
            return serde_yaml::from_value(v["data"].clone()).unwrap();
        }
    }
    panic!("no ConfigMap {name} in {}", path.display());
}

#[test]
fn the_clusters_agent_config_and_plan_check() {
    let dir = TempDir::new("k8s-config");
    let pki = dir.path().join("tls");
    kvbench_coordinator::agents::certs::init(&kvbench_coordinator::agents::certs::Request {
        dir: pki.clone(),
        agents: vec!["kvbench-agent".parse().unwrap()],
        coordinator: "coordinator".into(),
        days: 30,
        start_days_ago: 0,
    })
    .unwrap();
    std::fs::copy(pki.join("kvbench-agent.pem"), pki.join("agent.pem")).unwrap();
    std::fs::copy(pki.join("kvbench-agent.key"), pki.join("agent.key")).unwrap();
    let tls = pki.to_str().unwrap();
    let agent = config_map(
        &root().join("deploy/k8s/agent-config.yaml"),
        "kvbench-agent-config",
    );
    let config = dir.write(
        "agent.yaml",
        &agent["agent.yaml"].replace("/etc/kvbench-agent/tls", tls),
    );
    let (ok, out) = run(common::kvbench()
        .args(["internal-agent", "--check-config", "--config"])
        .arg(&config));
    assert!(ok && out.contains("RestartEngine refused"), "{out}");
    let plan = config_map(&root().join("deploy/k8s/run-job.yaml"), "kvbench-plan");
    for (name, text) in &plan {
        dir.write(
            name,
            &text
                .replace("/etc/kvbench/tls", tls)
                .replace("/results", dir.path().join("results").to_str().unwrap()),
        );
    }
    let (ok, out) = run(common::kvbench()
        .arg("validate")
        .arg(dir.path().join("plan.yaml")));
    assert!(ok, "{out}");
}

/// Paths, modes and contents of every file under `dir`.
fn tree(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if m.is_dir() {
                out.insert(format!("{rel}/"), (m.permissions().mode(), Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, (m.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn install_agent_is_idempotent_and_uninstalls_cleanly() {
    let dir = TempDir::new("install");
    let pki = dir.path().join("pki");
    kvbench_coordinator::agents::certs::init(&kvbench_coordinator::agents::certs::Request {
        dir: pki.clone(),
        agents: vec!["gpu1".parse().unwrap()],
        coordinator: "coordinator".into(),
        days: 30,
        start_days_ago: 0,
    })
    .unwrap();
    let stage = dir.path().join("stage");
    let install = || {
        let (ok, out) = run(Command::new("bash")
            .arg(root().join("deploy/install-agent.sh"))
            .arg("--binary")
            .arg(root().join("target/release/kvbench-agent"))
            .arg("--config")
            .arg(root().join("deploy/agent/vllm.yaml"))
            .arg("--tls-dir")
            .arg(&pki)
            .args(["--agent-name", "gpu1", "--engine-unit", "vllm-qwen.service"])
            .arg("--token-file")
            .arg(pki.join("token"))
            .arg("--root")
            .arg(&stage));
        assert!(ok, "{out}");
    };
    install();
    let first = tree(&stage);
    for f in [
        "usr/local/bin/kvbench-agent",
        "etc/kvbench-agent/agent.yaml",
        "etc/kvbench-agent/tls/agent.key",
        "etc/kvbench-agent/token",
        "etc/systemd/system/kvbench-agent.service",
        "etc/polkit-1/rules.d/50-kvbench-agent.rules",
        "etc/sysusers.d/kvbench-agent.conf",
    ] {
        assert!(
            first.contains_key(f),
            "{f} not installed: {:?}",
            first.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(first["etc/kvbench-agent/tls/agent.key"].0 & 0o777, 0o640);
    assert_eq!(first["etc/kvbench-agent/token"].0 & 0o777, 0o640);
    let rule = String::from_utf8_lossy(&first["etc/polkit-1/rules.d/50-kvbench-agent.rules"].1)
        .into_owned();
    assert!(
        rule.contains("var engineUnit = \"vllm-qwen.service\";"),
        "{rule}"
    );
    install();
    assert!(tree(&stage) == first, "a second install changed the tree");
    let (ok, out) = run(Command::new("bash")
        .arg(root().join("deploy/install-agent.sh"))
        .args(["--uninstall", "--root"])
        .arg(&stage));
    assert!(ok, "{out}");
    assert_eq!(tree(&stage), BTreeMap::new(), "left behind");
}
