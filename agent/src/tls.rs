//! Which connections reach the agent's service. With `tls:` every connection is a TLS
//! handshake against the current certificate (the files are looked at on each new
//! connection: replaced files are used from the next one on, and a file that does not load
//! keeps the previous certificate and is logged once); a client that speaks plaintext is
//! handed to a server that answers every call with why (`UNAUTHENTICATED`: the agent
//! requires TLS). Without `tls:`, a client that starts a TLS handshake is told nothing and
//! closed: the coordinator names it. Each refusal is an audit line and a counter.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvbench_common::tls::{self as common_tls, Refusal, TlsFileError};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;
use crate::ops::{self, Counters};

/// A TLS record's first byte: a handshake.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may take to say its first byte and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes at once (more wait in the kernel's backlog).
const MAX_HANDSHAKES: usize = 256;

/// The files' identities: a replaced or rewritten file differs.
type Stamp = Vec<Option<(i64, i64, u64, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [
        Some(files.cert_file.as_path()),
        Some(files.key_file.as_path()),
        files.client_ca_file.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(|p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
    })
    .collect()
}

/// The agent's TLS configuration, rebuilt when its files change.
#[derive(Debug)]
pub(crate) struct ServerTls {
    files: TlsFiles,
    state: Mutex<(Stamp, Arc<ServerConfig>)>,
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsFileError> {
    let provider = common_tls::provider();
    let certs = common_tls::load_certs(&files.cert_file)?;
    let key = common_tls::load_key(&files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Invalid {
            path: files.cert_file.clone(),
            message: e.to_string(),
        })?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let roots = common_tls::load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsFileError::Invalid {
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsFileError::Invalid {
            path: files.key_file.clone(),
            message: format!("does not go with {}: {e}", files.cert_file.display()),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl ServerTls {
    pub(crate) fn load(files: TlsFiles) -> Result<ServerTls, TlsFileError> {
        let s = stamp(&files);
        let config = Arc::new(build(&files)?);
        Ok(ServerTls {
            files,
            state: Mutex::new((s, config)),
        })
    }

    /// The configuration for a new connection: rebuilt first if a file changed; a change
    /// that does not load keeps the previous one (said once per change).
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        let now = stamp(&self.files);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now != state.0 {
            state.0 = now;
            match build(&self.files) {
                Ok(c) => {
                    state.1 = Arc::new(c);
                    tracing::info!(cert = %self.files.cert_file.display(), subject = %self.subject(), "TLS files changed: new connections get the new certificate");
                }
                Err(e) => tracing::warn!(
                    "TLS files changed but do not load, keeping the previous certificate: {e}"
                ),
            }
        }
        state.1.clone()
    }

    /// The certificate's subject as the file says now (for the log).
    pub(crate) fn subject(&self) -> String {
        common_tls::load_certs(&self.files.cert_file)
            .ok()
            .and_then(|c| c.first().and_then(|c| common_tls::describe(c).ok()))
            .map_or_else(|| "?".into(), |s| s.subject)
    }
}

/// Where accepted connections go.
pub(crate) enum Routes {
    /// No TLS: plaintext connections to the service.
    Plain(mpsc::Sender<TcpStream>),
    /// TLS: handshaken connections to the service, plaintext ones to the refuser.
    Tls {
        tls: Arc<ServerTls>,
        service: mpsc::Sender<tokio_rustls::server::TlsStream<TcpStream>>,
        refuser: mpsc::Sender<TcpStream>,
    },
}

/// Accepts connections until `shutdown` and routes each (after its handshake, at most
/// [`MAX_HANDSHAKES`] at once).
pub(crate) async fn accept(
    listener: TcpListener,
    routes: Routes,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let routes = Arc::new(routes);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let routes = routes.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            route(stream, peer, &routes, &counters).await;
            drop(permit);
        });
    }
}

async fn route(stream: TcpStream, peer: SocketAddr, routes: &Routes, counters: &Counters) {
    let mut first = [0u8; 1];
    let tls_hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
        _ => return,
    };
    match (routes, tls_hello) {
        (Routes::Plain(service), false) => {
            let _ = service.send(stream).await;
        }
        (Routes::Plain(_), true) => ops::refused(
            counters,
            "-",
            Some(peer),
            "connect",
            "tls_client",
            "the client speaks TLS, this agent listens without it: closed",
        ),
        (Routes::Tls { refuser, .. }, false) => {
            ops::refused(
                counters,
                "-",
                Some(peer),
                "connect",
                Refusal::PlainClient.reason(),
                "plaintext client, this agent requires TLS: every call answered UNAUTHENTICATED",
            );
            let _ = refuser.send(stream).await;
        }
        (Routes::Tls { tls, service, .. }, true) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let _ = service.send(s).await;
                }
                Ok(Err(e)) => {
                    let refusal = common_tls::rustls_error(&e)
                        .map_or_else(|| Refusal::Other(e.to_string()), Refusal::seen_by_server);
                    ops::refused(
                        counters,
                        "-",
                        Some(peer),
                        "connect",
                        refusal.reason(),
                        &refusal.to_string(),
                    );
                }
                Err(_) => ops::refused(
                    counters,
                    "-",
                    Some(peer),
                    "connect",
                    "handshake_timeout",
                    "no TLS handshake within 10 s",
                ),
            }
        }
    }
}
