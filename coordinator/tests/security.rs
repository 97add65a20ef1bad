//! An agent that opens only to its coordinator, with real processes on loopback: agents
//! run as `kvbench internal-agent --config FILE` (the `kvbench-agent` binary's code) with
//! TLS, client certificates and a token from `kvbench certs init`; the coordinator is the
//! `kvbench` binary. Each refusal is named, reaches no engine, and is counted on the
//! agent's own metrics; the token appears nowhere; certificates rotate without a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TempDir;
use kvbench_coordinator::agents::certs::{self, AgentName};
use kvbench_sim::SimConfig;

/// An agent process and where its log goes.
struct AgentProc {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `kvbench internal-agent --config CONFIG --listen 127.0.0.1:0` and waits for its
/// address (the process prints it once it serves).
fn start_agent(config: &Path, rust_log: &str) -> AgentProc {
    let log = config.with_extension("log");
    let mut child = common::kvbench()
        .args(["internal-agent", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("agent starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("agent says where it listens");
    let addr = line
        .trim()
        .strip_prefix("kvbench-agent listening on ")
        .unwrap_or_else(|| {
            panic!(
                "agent did not start: {line:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .to_owned();
    AgentProc { child, addr, log }
}

fn issue(dir: &Path, agents: &[&str], days: u32, start_days_ago: u32) {
    certs::init(&certs::Request {
        dir: dir.to_owned(),
        agents: agents
            .iter()
            .map(|a| a.parse::<AgentName>().expect("name"))
            .collect(),
        coordinator: "coordinator".into(),
        days,
        start_days_ago,
    })
    .expect("certificates issued");
}

/// An agent config with TLS (mutual), the token, and metrics on a free port.
fn agent_config(dir: &TempDir, name: &str, sim: &str, pki: &Path, extra: &str) -> (PathBuf, u16) {
    let metrics = common::free_port();
    let p = dir.write(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nengine: {{kind: sim, base_url: {sim}}}\ntls:\n  cert_file: {pki}/{name}.pem\n  key_file: {pki}/{name}.key\n  client_ca_file: {pki}/ca.pem\ntoken_file: {pki}/token\nmetrics_listen: 127.0.0.1:{metrics}\ntelemetry: {{gpu: false}}\n{extra}",
            pki = pki.display()
        ),
    );
    (p, metrics)
}

fn kvbench_out(args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = common::kvbench();
    c.args(args).current_dir(dir);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().expect("kvbench runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn sim_requests(sim: &kvbench_sim::SimHandle) -> f64 {
    let m = kvbench_agent::scrape_metrics(
        &format!("{}/metrics", sim.base_url()),
        &["vllm:request_success_total"],
        Duration::from_secs(5),
    )
    .await
    .expect("sim metrics");
    m.get("vllm:request_success_total").copied().unwrap_or(0.0)
}

fn metrics(port: u16) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"))
        .output()
        .expect("bash");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every way in but the right one is refused with its own message, and the engine behind
/// the agent sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_is_named_and_reaches_no_engine() {
    let dir = TempDir::new("refusals");
    let pki = dir.path().join("pki");
    let other = dir.path().join("other");
    let old = dir.path().join("old");
    issue(&pki, &["a1=127.0.0.1"], 30, 0);
    issue(&other, &["a1=127.0.0.1"], 30, 0);
    // The same CA, a coordinator certificate that expired yesterday.
    std::fs::create_dir_all(&old).unwrap();
    for f in ["ca.pem", "ca.key", "token"] {
        std::fs::copy(pki.join(f), old.join(f)).unwrap();
    }
    issue(&old, &["unused"], 1, 2);
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let (config, metrics_port) = agent_config(&dir, "a1", &sim.base_url(), &pki, "");
    let agent = start_agent(&config, "info");
    let port = agent.addr.rsplit(':').next().unwrap().to_owned();
    dir.write("wrong-token", "not-the-token\n");
    let plan = format!(
        "agents:
  - {{name: a1-no-token, address: \"https://127.0.0.1:{port}\", tls: {{ca_file: pki/ca.pem, cert_file: pki/coordinator.pem, key_file: pki/coordinator.key, server_name: a1}}}}
  - {{name: a1-wrong-token, address: \"https://127.0.0.1:{port}\", tls: {{ca_file: pki/ca.pem, cert_file: pki/coordinator.pem, key_file: pki/coordinator.key, server_name: a1}}, token_file: wrong-token}}
  - {{name: a1-plain, address: \"http://127.0.0.1:{port}\", token_file: pki/token}}
  - {{name: a1-unknown-ca, address: \"https://127.0.0.1:{port}\", tls: {{ca_file: pki/ca.pem, cert_file: other/coordinator.pem, key_file: other/coordinator.key, server_name: a1}}, token_file: pki/token}}
  - {{name: a1-agent-unknown-ca, address: \"https://127.0.0.1:{port}\", tls: {{ca_file: other/ca.pem, cert_file: pki/coordinator.pem, key_file: pki/coordinator.key, server_name: a1}}, token_file: pki/token}}
  - {{name: a1-name-mismatch, address: \"https://127.0.0.1:{port}\", tls: {{ca_file: pki/ca.pem, cert_file: pki/coordinator.pem, key_file: pki/coordinator.key, server_name: a2}}, token_file: pki/token}}
  - {{name: a1-expired, address: \"https://127.0.0.1:{port}\", tls: {{ca_file: pki/ca.pem, cert_file: old/coordinator.pem, key_file: old/coordinator.key, server_name: a1}}, token_file: pki/token}}
test_scenarios:
  - {{name: s, scenario: cold_start, config_file: c.yaml, agents: [a1-no-token], rounds: 1}}
"
    );
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 2\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n",
    );
    dir.write("plan.yaml", &plan);
    let (code, out, err) = kvbench_out(&["agents", "plan.yaml"], dir.path(), &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let line = |name: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"))
            .to_owned()
    };
    for (name, says) in [
        ("a1-no-token", "missing token"),
        ("a1-wrong-token", "wrong token"),
        ("a1-plain", "the agent requires TLS: address it as https://"),
        ("a1-unknown-ca", "unknown CA: the agent does not trust this coordinator's certificate"),
        ("a1-agent-unknown-ca", "unknown CA: the agent's certificate is not signed by tls.ca_file"),
        ("a1-name-mismatch", "name mismatch: the agent's certificate is not valid for \"a2\" (it names a1, 127.0.0.1)"),
        ("a1-expired", "expired: the agent refused this coordinator's certificate as expired"),
    ] {
        let l = line(name);
        assert!(l.contains("UNREACHABLE") && l.contains(says), "{name}: expected {says:?} in {l}");
    }
    assert_eq!(
        sim_requests(&sim).await,
        0.0,
        "a refused client reached the engine"
    );
    // The agent counted each refusal by reason, and wrote an audit line for each.
    let m = metrics(metrics_port);
    for reason in [
        "token_missing",
        "token_wrong",
        "plain_client",
        "unknown_ca",
        "expired",
    ] {
        assert!(
            m.contains(&format!(
                "kvbench_agent_refused_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted:\n{m}"
        );
    }
    let log = agent.log();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kvbench_agent::audit") && l.contains("refused"))
        .collect();
    assert!(audit.len() >= 7, "one audit line per refusal:\n{log}");
    assert!(
        audit.iter().any(|l| l.contains("call=\"Hello\"")
            && l.contains("token_wrong")
            && l.contains("who=\"CN=coordinator\"")),
        "{log}"
    );
}

/// A whole plan over two TLS agents with tokens, every process at its most verbose: the
/// token's bytes are in no output and no file of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_over_two_tls_agents_never_shows_the_token() {
    let dir = TempDir::new("tls-plan");
    let pki = dir.path().join("pki");
    issue(&pki, &["a1=127.0.0.1", "a2=localhost"], 30, 0);
    let token = std::fs::read_to_string(pki.join("token"))
        .unwrap()
        .trim()
        .to_owned();
    let sims = [
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
        kvbench_sim::spawn(SimConfig::default()).await.expect("sim"),
    ];
    let agents: Vec<AgentProc> = ["a1", "a2"]
        .iter()
        .zip(&sims)
        .map(|(n, s)| start_agent(&agent_config(&dir, n, &s.base_url(), &pki, "").0, "trace"))
        .collect();
    let port = |a: &AgentProc| a.addr.rsplit(':').next().unwrap().to_owned();
    dir.write("c.yaml", "endpoint: agent\nnum_requests: 6\noutput_tokens: 4\nworkload: {documents: 2, document_tokens: 200}\n");
    dir.write(
        "plan.yaml",
        &format!(
            "output_dir: out
isolation: clear
tls: {{ca_file: pki/ca.pem, cert_file: pki/coordinator.pem, key_file: pki/coordinator.key}}
token_file: pki/token
agents:
  - {{name: a1, address: \"https://127.0.0.1:{}\"}}
  - {{name: a2, address: \"https://localhost:{}\"}}
test_scenarios:
  - {{name: docs, scenario: long_context_high_reuse, config_file: c.yaml, rounds: 2, concurrency: 2, selector: {{}}, placement: each}}
",
            port(&agents[0]),
            port(&agents[1])
        ),
    );
    let (code, out, err) = kvbench_out(
        &["run", "plan.yaml", "--json"],
        dir.path(),
        &[("RUST_LOG", "trace")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("docs@a1") && out.contains("docs@a2"), "{out}");
    for s in &sims {
        assert!(sim_requests(s).await >= 12.0);
    }
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the coordinator's output shows the token"
    );
    for a in &agents {
        let log = a.log();
        assert!(log.len() > 10_000, "trace logging is on");
        assert!(!log.contains(&token), "an agent's log shows the token");
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.path().join("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{} holds the token",
            f.display()
        );
    }
}

/// Replaced certificate files are used from the next connection on, without a restart;
/// a garbage file keeps the certificate the agent had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    let dir = TempDir::new("rotation");
    let pki = dir.path().join("pki");
    issue(&pki, &["a1=127.0.0.1"], 30, 0);
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let agent = start_agent(
        &agent_config(&dir, "a1", &sim.base_url(), &pki, "").0,
        "info",
    );
    let port = agent.addr.rsplit(':').next().unwrap().to_owned();
    let plan = |server_name: &str| {
        format!(
            "tls: {{ca_file: pki/ca.pem, cert_file: pki/coordinator.pem, key_file: pki/coordinator.key, server_name: {server_name}}}
token_file: pki/token
agents:
  - {{name: a1, address: \"https://127.0.0.1:{port}\"}}
test_scenarios:
  - {{name: s, scenario: cold_start, config_file: c.yaml, agent: a1}}
"
        )
    };
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 2\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n",
    );
    dir.write("before.yaml", &plan("a1"));
    dir.write("after.yaml", &plan("rotated.example"));
    let reach = |p: &str| kvbench_out(&["agents", p], dir.path(), &[]);
    assert_eq!(reach("before.yaml").0, 0);
    let (code, out, _) = reach("after.yaml");
    assert_eq!(
        code, 1,
        "the old certificate does not name rotated.example: {out}"
    );
    assert!(out.contains("name mismatch"), "{out}");
    // Re-issue a1 under the same CA with the new name, as an operator rotates.
    issue(&pki, &["a1=rotated.example"], 30, 0);
    let (code, out, err) = reach("after.yaml");
    assert_eq!(
        code, 0,
        "the next connection presents the new certificate: {out}\n{err}"
    );
    assert_eq!(
        reach("before.yaml").0,
        0,
        "the new certificate names a1 as well"
    );
    // A garbage certificate file: the agent keeps the one it had, and says why.
    std::fs::write(
        pki.join("a1.pem"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (code, out, err) = reach("after.yaml");
    assert_eq!(code, 0, "the previous certificate is kept: {out}\n{err}");
    let log = agent.log();
    assert!(
        log.contains("TLS files changed: new connections get the new certificate"),
        "{log}"
    );
    assert!(
        log.contains("do not load, keeping the previous certificate"),
        "{log}"
    );
}

/// Beyond loopback without TLS the agent does not start (unless --insecure, with a warning).
#[test]
fn listening_beyond_loopback_needs_tls() {
    let port = common::free_port();
    let o = common::kvbench()
        .args([
            "internal-agent",
            "--engine",
            "http://127.0.0.1:9",
            "--listen",
        ])
        .arg(format!("0.0.0.0:{port}"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("refusing to listen on 0.0.0.0:{port} without TLS"))
            && err.contains("--insecure"),
        "{err}"
    );
}

/// `allow_restart: false` and `allow_clear: false`: PERMISSION_DENIED, and an audit line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_a_host_does_not_allow_are_permission_denied() {
    let dir = TempDir::new("allow");
    let sim = kvbench_sim::spawn(SimConfig::default()).await.expect("sim");
    let config = dir.write(
        "agent.yaml",
        &format!(
            "name: locked\nengine: {{kind: sim, base_url: {}}}\nallow_restart: false\nallow_clear: false\nrestart_engine: {{argv: [\"true\"]}}\ntelemetry: {{gpu: false}}\nlimits: {{max_requests: 10}}\n",
            sim.base_url()
        ),
    );
    let agent = start_agent(&config, "info");
    let mut wire =
        kvbench_proto::v1::agent_client::AgentClient::connect(format!("http://{}", agent.addr))
            .await
            .expect("connect");
    let s = wire
        .restart_engine(kvbench_proto::v1::RestartEngineRequest {
            reason: "test".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    assert!(
        s.message().contains("allow_restart: false"),
        "{}",
        s.message()
    );
    let s = wire
        .clear_cache(kvbench_proto::v1::ClearCacheRequest {
            reason: "test".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    // A round past the host's own limit: refused before anything is sent.
    dir.write(
        "c.yaml",
        "endpoint: agent\nnum_requests: 50\noutput_tokens: 4\nworkload: {prompt_tokens: 20}\n",
    );
    dir.write(
        "plan.yaml",
        &format!(
            "isolation: none\noutput_dir: out\nagents:\n  - {{name: locked, address: \"http://{}\"}}\ntest_scenarios:\n  - {{name: s, scenario: cold_start, config_file: c.yaml, agent: locked, rounds: 1}}\n",
            agent.addr
        ),
    );
    let (code, out, err) = kvbench_out(&["run", "plan.yaml"], dir.path(), &[]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains(
            "over this host's limits: 50 requests (warmups included), max_requests is 10"
        ),
        "{out}\n{err}"
    );
    assert_eq!(sim_requests(&sim).await, 0.0);
    let log = agent.log();
    for (call, reason) in [
        ("RestartEngine", "restart_not_allowed"),
        ("ClearCache", "clear_not_allowed"),
        ("RunRound", "host_limit"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("kvbench_agent::audit")
                && l.contains(&format!("call=\"{call}\""))
                && l.contains("outcome=\"refused\"")
                && l.contains(reason)
                && l.contains("who=\"loopback\"")),
            "no audit line for {call}:\n{log}"
        );
    }
}
