//! Whether a restart really restarted the engine: what identifies the running instance
//! before and after (the process listening on the engine's port, its counters), and
//! whether its health went down in between. A restart command that did nothing, or
//! restarted something else, leaves all three unchanged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::http::HttpClient;

/// The running engine instance, as far as the agent can see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The process listening on the engine's port, when the engine is on this host and
    /// `/proc` shows it.
    pub pid: Option<u32>,
    /// The engine's counters (`*_total` families the agent keeps).
    pub counters: BTreeMap<String, f64>,
}

impl Identity {
    pub async fn of(client: &HttpClient, engine_url: &str, metrics_url: &str) -> Identity {
        let counters = super::metrics::scrape(client, metrics_url)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.ends_with("_total"))
            .collect();
        Identity {
            pid: local_port(engine_url).and_then(listening_pid),
            counters,
        }
    }

    /// What shows that `after` is another instance than `self`, in words (none: nothing).
    pub fn changes(&self, after: &Identity) -> Vec<String> {
        let mut why = Vec::new();
        if let (Some(a), Some(b)) = (self.pid, after.pid) {
            if a != b {
                why.push(format!(
                    "another process listens on its port (pid {a} -> {b})"
                ));
            }
        }
        if let Some((k, a, b)) = self.counters.iter().find_map(|(k, a)| {
            after
                .counters
                .get(k)
                .filter(|b| **b < *a)
                .map(|b| (k, a, b))
        }) {
            why.push(format!("its counters reset ({k} {a:.0} -> {b:.0})"));
        }
        why
    }
}

/// The port of an engine URL whose host is this machine (loopback or unspecified).
pub fn local_port(url: &str) -> Option<u16> {
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    local.then(|| uri.port_u16().unwrap_or(80))
}

/// The process that listens on TCP `port`, from `/proc/net/tcp{,6}` and the processes'
/// file descriptors (Linux; `None` elsewhere or when the agent may not look).
pub fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (field 9)
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let listening = *state == "0A";
            let same_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && same_port {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// What the health watcher saw.
#[derive(Debug, Default)]
pub struct HealthWatch {
    /// Health failed at least once.
    pub went_down: AtomicBool,
    /// Successful polls in a row, the latest included.
    pub up_streak: AtomicU32,
}

impl HealthWatch {
    /// Healthy for the last `n` polls (about `n` x 100 ms).
    pub fn steady(&self, n: u32) -> bool {
        self.up_streak.load(Ordering::Relaxed) >= n
    }
}

/// Polls `health_url` every 100 ms until stopped.
pub fn watch_health(
    client: HttpClient,
    health_url: String,
    stop: CancellationToken,
) -> Arc<HealthWatch> {
    let watch = Arc::new(HealthWatch::default());
    let w = watch.clone();
    tokio::spawn(async move {
        loop {
            let up = super::http::get(&client, &health_url, Duration::from_millis(500))
                .await
                .is_ok();
            if up {
                w.up_streak.fetch_add(1, Ordering::Relaxed);
            } else {
                w.went_down.store(true, Ordering::Relaxed);
                w.up_streak.store(0, Ordering::Relaxed);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    watch
}

/// The model ids of an OpenAI-style `/v1/models` answer.
pub fn model_ids(url: &str, body: &str) -> Result<Vec<String>, super::http::EngineCallError> {
    let bad = |detail: String| super::http::EngineCallError::answer(format!("GET {url}"), detail);
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let data = v["data"]
        .as_array()
        .ok_or_else(|| bad("no `data` list of models".to_owned()))?;
    Ok(data
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ports_only() {
        assert_eq!(local_port("http://127.0.0.1:8000"), Some(8000));
        assert_eq!(local_port("http://localhost"), Some(80));
        assert_eq!(local_port("http://[::1]:9"), Some(9));
        assert_eq!(local_port("http://10.0.0.5:8000"), None);
    }

    #[test]
    fn finds_the_process_listening_on_a_port() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(listening_pid(port), Some(std::process::id()));
        drop(l);
        assert_eq!(listening_pid(port), None);
    }

    #[test]
    fn counters_going_down_or_another_pid_are_a_new_instance() {
        let before = Identity {
            pid: Some(10),
            counters: BTreeMap::from([("vllm:prompt_tokens_total".into(), 500.0)]),
        };
        assert!(before.changes(&before).is_empty());
        let after = Identity {
            pid: Some(11),
            counters: BTreeMap::from([("vllm:prompt_tokens_total".into(), 0.0)]),
        };
        let why = before.changes(&after);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("pid 10 -> 11") && why[1].contains("500 -> 0"));
    }
}
