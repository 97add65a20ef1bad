//! What the agent can tell about its engine's configuration that decides whether a clear
//! gives a cold cache: today, llama.cpp's host-RAM prompt cache (`--cache-ram`, on by
//! default), which keeps prompts pushed out of a slot and restores them after an erase.

use std::time::Duration;

use super::http::HttpClient;

/// Whether llama.cpp's host prompt cache is on, and how the agent knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCache {
    Off(String),
    On(String),
    Unknown(String),
}

/// The value of `-cram`/`--cache-ram` on a command line (`None`: not given).
pub fn cache_ram_arg(argv: &[String]) -> Option<&str> {
    argv.windows(2)
        .find_map(|w| matches!(w[0].as_str(), "-cram" | "--cache-ram").then_some(w[1].as_str()))
}

/// Reads `/props` (a build that shows `cache_ram`), else the command line of the local
/// process listening on the engine's port.
pub async fn llamacpp_host_cache(client: &HttpClient, engine_url: &str) -> HostCache {
    let props = super::http::get(
        client,
        &format!("{engine_url}/props"),
        Duration::from_secs(5),
    )
    .await
    .ok()
    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
    if let Some(mib) = props.as_ref().and_then(|p| {
        p.get("cache_ram_mib")
            .or_else(|| p.get("cache_ram"))
            .and_then(serde_json::Value::as_f64)
    }) {
        return if mib == 0.0 {
            HostCache::Off("/props says cache_ram 0".into())
        } else {
            HostCache::On(format!("/props says cache_ram {mib}"))
        };
    }
    let pid = super::identity::local_port(engine_url).and_then(super::identity::listening_pid);
    let Some(pid) = pid else {
        return HostCache::Unknown(
            "its /props does not show it and its process is not on this host".into(),
        );
    };
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match cache_ram_arg(&argv) {
        Some("0") => HostCache::Off(format!("pid {pid} runs with -cram 0")),
        Some(v) => HostCache::On(format!("pid {pid} runs with --cache-ram {v}")),
        None => HostCache::On(format!(
            "pid {pid} runs without -cram, and it is on by default (8192 MiB)"
        )),
    }
}

/// The warning for a llama.cpp engine whose host prompt cache is (or may be) on.
pub fn host_cache_warning(h: &HostCache) -> Option<String> {
    let (state, how) = match h {
        HostCache::Off(_) => return None,
        HostCache::On(how) => ("is on", how),
        HostCache::Unknown(how) => ("may be on", how),
    };
    Some(format!(
        "llama.cpp's host prompt cache {state} ({how}): prompts pushed out of a slot survive a clear, so isolation `clear` does not give a cold start; start llama-server with -cram 0, or use isolation `restart`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cache_ram_argument() {
        let argv = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(cache_ram_arg(&argv("llama-server -m x -cram 0")), Some("0"));
        assert_eq!(
            cache_ram_arg(&argv("llama-server --cache-ram 512 -np 2")),
            Some("512")
        );
        assert_eq!(cache_ram_arg(&argv("llama-server -m x")), None);
        assert!(host_cache_warning(&HostCache::Off("x".into())).is_none());
        let w = host_cache_warning(&HostCache::On("pid 3".into())).expect("warning");
        assert!(
            w.contains("-cram 0") && w.contains("isolation `restart`"),
            "{w}"
        );
    }
}
