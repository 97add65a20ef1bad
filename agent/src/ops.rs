//! What an operator sees of the agent: one audit line per accepted or refused command or
//! connection (target `kvbench_agent::audit`: who, what, outcome; the log line's time is
//! when), the counters behind them, and `metrics_listen:`, the agent's own Prometheus
//! endpoint. Nothing secret is in either: no token, no request content.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Counters by family and label value, in the order they are rendered.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    by: Mutex<BTreeMap<(&'static str, String), u64>>,
    in_progress: AtomicU64,
}

/// A counted family: its metric name, help, and the label its values go under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    name: &'static str,
    help: &'static str,
    label: &'static str,
}

pub(crate) const ROUNDS: Family = Family {
    name: "kvbench_agent_rounds_total",
    help: "Rounds by what became of them (started, finished, refused)",
    label: "outcome",
};
pub(crate) const REQUESTS: Family = Family {
    name: "kvbench_agent_requests_total",
    help: "Requests sent to the engine by outcome (warmups included)",
    label: "outcome",
};
pub(crate) const CLEARS: Family = Family {
    name: "kvbench_agent_clears_total",
    help: "Cache clears by outcome",
    label: "outcome",
};
pub(crate) const RESTARTS: Family = Family {
    name: "kvbench_agent_restarts_total",
    help: "Engine restarts by outcome",
    label: "outcome",
};
pub(crate) const REFUSED: Family = Family {
    name: "kvbench_agent_refused_total",
    help: "Commands and connections refused, by reason",
    label: "reason",
};

const FAMILIES: [Family; 5] = [ROUNDS, REQUESTS, CLEARS, RESTARTS, REFUSED];

impl Counters {
    pub(crate) fn inc(&self, f: Family, value: &str) {
        let mut by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        *by.entry((f.name, value.to_owned())).or_default() += 1;
    }

    pub(crate) fn round_started(&self) {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.inc(ROUNDS, "started");
    }

    pub(crate) fn round_ended(&self, finished: bool) {
        self.in_progress.fetch_sub(1, Ordering::Relaxed);
        self.inc(ROUNDS, if finished { "finished" } else { "ended_early" });
    }

    /// Prometheus text format 0.0.4.
    pub(crate) fn render(&self, name: &str, engine_healthy: Option<bool>) -> String {
        let mut out = String::new();
        out.push_str("# HELP kvbench_agent_info The agent's version and name\n# TYPE kvbench_agent_info gauge\n");
        out.push_str(&format!(
            "kvbench_agent_info{{version=\"{}\",name=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            label_value(name)
        ));
        out.push_str("# HELP kvbench_agent_up Whether the agent serves (always 1 when scraped)\n# TYPE kvbench_agent_up gauge\nkvbench_agent_up 1\n");
        out.push_str("# HELP kvbench_agent_engine_healthy Whether the engine's health URL answered 200 at this scrape (-1: not checked)\n# TYPE kvbench_agent_engine_healthy gauge\n");
        out.push_str(&format!(
            "kvbench_agent_engine_healthy {}\n",
            engine_healthy.map_or(-1, i32::from)
        ));
        out.push_str("# HELP kvbench_agent_rounds_in_progress Rounds running now\n# TYPE kvbench_agent_rounds_in_progress gauge\n");
        out.push_str(&format!(
            "kvbench_agent_rounds_in_progress {}\n",
            self.in_progress.load(Ordering::Relaxed)
        ));
        let by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        for f in FAMILIES {
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} counter\n",
                f.name, f.help, f.name
            ));
            for ((_, v), n) in by
                .range((f.name, String::new())..)
                .take_while(|((k, _), _)| *k == f.name)
            {
                out.push_str(&format!(
                    "{}{{{}=\"{}\"}} {n}\n",
                    f.name,
                    f.label,
                    label_value(v)
                ));
            }
        }
        out
    }
}

/// A label value as Prometheus' text format escapes it.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Who sent a command: the client certificate's subject, "token", "loopback" or "peer".
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub who: String,
    pub peer: Option<SocketAddr>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(p) => write!(f, "{} from {p}", self.who),
            None => f.write_str(&self.who),
        }
    }
}

/// One audit line for a command: accepted.
pub(crate) fn accepted(caller: &Caller, call: &str, detail: &str) {
    tracing::info!(target: "kvbench_agent::audit", who = caller.who.as_str(), peer = ?caller.peer, call, outcome = "accepted", detail);
}

/// One audit line for a command or a connection: refused, and why.
pub(crate) fn refused(
    counters: &Counters,
    who: &str,
    peer: Option<SocketAddr>,
    call: &str,
    reason: &'static str,
    detail: &str,
) {
    counters.inc(REFUSED, reason);
    tracing::warn!(target: "kvbench_agent::audit", who, peer = ?peer, call, outcome = "refused", reason, detail);
}

/// One audit line for a command's result (clear, restart).
pub(crate) fn completed(caller: &Caller, call: &str, ok: bool, detail: &str) {
    tracing::info!(target: "kvbench_agent::audit", who = caller.who.as_str(), peer = ?caller.peer, call, outcome = if ok { "succeeded" } else { "failed" }, detail);
}

/// Serves `GET /metrics` on `listener` until `shutdown`; `health` checks the engine at
/// each scrape.
pub(crate) async fn serve_metrics<F, Fut>(
    listener: TcpListener,
    counters: Arc<Counters>,
    name: String,
    health: F,
    shutdown: CancellationToken,
) where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<bool>> + Send,
{
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("metrics listener: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let counters = counters.clone();
        let name = name.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counters = counters.clone();
                    let name = name.clone();
                    let health = health.clone();
                    async move {
                        let (status, body) = if req.method() == hyper::Method::GET
                            && req.uri().path() == "/metrics"
                        {
                            let healthy = health().await;
                            (200, counters.render(&name, healthy))
                        } else {
                            (404, "kvbench-agent serves GET /metrics here\n".to_owned())
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let c = Counters::default();
        c.round_started();
        c.inc(REQUESTS, "ok");
        c.inc(REQUESTS, "ok");
        c.inc(REFUSED, "token_wrong");
        let text = c.render("gpu\"1", Some(true));
        assert!(
            text.contains("kvbench_agent_requests_total{outcome=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("kvbench_agent_refused_total{reason=\"token_wrong\"} 1\n"));
        assert!(text.contains("kvbench_agent_rounds_in_progress 1\n"));
        assert!(text.contains("name=\"gpu\\\"1\""));
        assert!(text.contains("kvbench_agent_engine_healthy 1\n"));
        let by =
            kvbench_common::prometheus::by_label(&text, "kvbench_agent_requests_total", "outcome");
        assert_eq!(by.get("ok"), Some(&2.0));
    }
}
