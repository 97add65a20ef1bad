//! How the coordinator shows itself to an agent: TLS (the agent's certificate checked
//! against the plan's `ca_file` and the agent's name, this coordinator's certificate
//! presented for mutual TLS) and the bearer token. The TLS handshake happens here, in
//! kvbench's own connector, so that a refusal is named (unknown CA, name mismatch,
//! expired, plaintext agent) rather than reported as a transport error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use kvbench_common::auth::{Secret, TokenError};
use kvbench_common::plan::{AgentSpec, ClientTls};
use kvbench_common::tls::{self, Refusal, TlsFileError};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

/// TLS and token for one agent; `Access::default()`: plaintext, no token (loopback).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub tls: Option<Arc<TlsClient>>,
    pub token: Option<Secret>,
}

/// The coordinator's TLS for one agent.
#[derive(Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    name: String,
}

/// Why an agent's access could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("tls: {0}")]
    File(#[from] TlsFileError),
    #[error("tls.server_name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
    #[error("tls: {0}")]
    Config(String),
    #[error("{0}")]
    Token(#[from] TokenError),
}

impl TlsClient {
    pub fn new(files: &ClientTls) -> Result<TlsClient, AccessError> {
        let provider = tls::provider();
        let roots = tls::load_roots(&files.ca_file)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AccessError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&files.cert_file, &files.key_file) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(tls::load_certs(c)?, tls::load_key(k)?)
                .map_err(|e| {
                    AccessError::Config(format!("{} and {}: {e}", c.display(), k.display()))
                })?,
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = ServerName::try_from(files.server_name.clone())
            .map_err(|_| AccessError::ServerName(files.server_name.clone()))?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
            name: files.server_name.clone(),
        })
    }
}

impl Access {
    /// What the plan's agent entry says: its TLS files loaded, its token read now.
    pub fn of(spec: &AgentSpec) -> Result<Access, AccessError> {
        Ok(Access {
            tls: spec
                .tls
                .as_ref()
                .map(TlsClient::new)
                .transpose()?
                .map(Arc::new),
            token: spec.token.as_ref().map(|t| t.read()).transpose()?,
        })
    }
}

/// A connection that did not become a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("{0}")]
    Tcp(std::io::Error),
    #[error("{0}")]
    Tls(Refusal),
}

/// The connector tonic's channel uses for an `https://` agent.
#[derive(Debug, Clone)]
pub(crate) struct Connector(pub(crate) Arc<TlsClient>);

type Connected = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<Uri> for Connector {
    type Response = Connected;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Connected, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            handshake(&tls, &host, port)
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    }
}

async fn handshake(
    tls: &TlsClient,
    host: &str,
    port: u16,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectFailure> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ConnectFailure::Tcp)?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    connector
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| ConnectFailure::Tls(refusal_of(&e, &tls.name)))
}

fn refusal_of(e: &std::io::Error, name: &str) -> Refusal {
    match tls::rustls_error(e) {
        Some(r) => Refusal::seen_by_client(r, name),
        // The agent closed the handshake without a word: a plaintext agent.
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ) =>
        {
            Refusal::PlainAgent
        }
        None => Refusal::Other(e.to_string()),
    }
}

/// Why an agent dropped a TLS connection after the handshake, if it was TLS: with TLS 1.3
/// an agent judges the client's certificate after the client's side of the handshake is
/// done, and its alert reaches whatever reads first (the gRPC channel, which reports a
/// bare transport error). A second handshake that only listens hears the alert itself.
pub async fn diagnose(tls: &TlsClient, host_port: &str) -> Option<Refusal> {
    use tokio::io::AsyncReadExt as _;
    let (host, port) = host_port.rsplit_once(':')?;
    let host = host.trim_matches(['[', ']']);
    let mut s = match handshake(tls, host, port.parse().ok()?).await {
        Ok(s) => s,
        Err(ConnectFailure::Tls(r)) => return Some(r),
        Err(ConnectFailure::Tcp(_)) => return None,
    };
    let mut buf = [0u8; 256];
    match tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await {
        Ok(Err(e)) => match refusal_of(&e, &tls.name) {
            Refusal::Other(_) | Refusal::PlainAgent => None,
            r => Some(r),
        },
        _ => None,
    }
}

/// The refusal somewhere in an error's chain: the connector's own, or a rustls error that
/// arrived later (an agent refuses a client certificate after the client's handshake).
pub fn refusal_in(e: &(dyn std::error::Error + 'static), server_name: &str) -> Option<Refusal> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(ConnectFailure::Tls(r)) = e.downcast_ref::<ConnectFailure>() {
            return Some(r.clone());
        }
        next = e.source();
    }
    tls::rustls_error(e).map(|r| Refusal::seen_by_client(r, server_name))
}

impl Access {
    /// The name the agent's certificate is checked against, for messages.
    pub fn server_name(&self) -> &str {
        self.tls.as_ref().map_or("", |t| t.name.as_str())
    }
}
