//! The agent's HTTP transport, owned here: the client every call goes through (the load's
//! streams included, [`crate::load::request`]), and the small calls to its engine and
//! stores (health, models, metrics, clear steps): one helper, so that every such call has
//! a timeout and an [`EngineCallError`] that names the method and URL.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A call to the engine (or a store next to it) that did not give what it should; each
/// names the call (`GET http://...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineCallError {
    /// The request could not be made (a bad URL or method).
    #[error("{call}: {detail}")]
    Request { call: String, detail: String },
    /// No answer: refused, reset, unreachable, or the answer broke off.
    #[error("{call}: {detail}")]
    Transport { call: String, detail: String },
    #[error("{call}: no answer within {secs} s")]
    Timeout { call: String, secs: f64 },
    #[error("{call}: HTTP {status}")]
    Status { call: String, status: StatusCode },
    /// An answer that is not what the call expects.
    #[error("{call}: {detail}")]
    Answer { call: String, detail: String },
}

impl EngineCallError {
    /// An answer to `call` that is not what it should be.
    pub fn answer(call: impl Into<String>, detail: impl Into<String>) -> EngineCallError {
        EngineCallError::Answer {
            call: call.into(),
            detail: detail.into(),
        }
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client whose pool never limits concurrency: one connection per in-flight stream.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(30)));
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// What a small call got back: any status, with its body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Answer {
    /// The body when the status is a success, else an error naming the call and status.
    pub fn success(self, what: &str) -> Result<String, EngineCallError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(EngineCallError::Status {
                call: what.to_owned(),
                status: self.status,
            })
        }
    }
}

/// Sends `method url` (with a JSON body when given) and reads the whole answer, all
/// within `timeout`. The error names the method and URL: unreachable, no answer in time,
/// or a bad URL.
pub async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<Answer, EngineCallError> {
    let what = format!("{method} {url}");
    let build = || {
        let mut req = Request::builder().method(method.clone()).uri(url);
        if json.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        req.body(Full::new(Bytes::from(json.unwrap_or_default().to_owned())))
            .map_err(|e| EngineCallError::Request {
                call: what.clone(),
                detail: e.to_string(),
            })
    };
    let transport = |detail: String| EngineCallError::Transport {
        call: what.clone(),
        detail,
    };
    let req = build()?;
    let exchange = async {
        // A pooled connection the server closed while idle (llama.cpp's server closes after
        // each streamed response) fails before any answer: the same call once more on a
        // fresh connection, as the load does.
        let resp = match client.request(req).await {
            Err(e) if died_before_answer(&e) => fresh_client()
                .request(build()?)
                .await
                .map_err(|e| transport(error_chain(&e)))?,
            other => other.map_err(|e| transport(error_chain(&e)))?,
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| EngineCallError::Timeout {
            call: what.clone(),
            secs: timeout.as_secs_f64(),
        })?
}

/// `GET url`: the body on a success status.
pub async fn get(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<String, EngineCallError> {
    call(client, Method::GET, url, None, timeout)
        .await?
        .success(&format!("GET {url}"))
}

/// A client that never reuses a connection: where a request goes again after its pooled
/// connection turned out to be closed.
pub(crate) fn fresh_client() -> &'static HttpClient {
    static FRESH: std::sync::OnceLock<HttpClient> = std::sync::OnceLock::new();
    FRESH.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector)
    })
}

/// The connection died before any byte of the answer came back, in the way of a server
/// that closed an idle keep-alive connection while the request was on its way (llama.cpp's
/// server closes after every streamed response yet advertises keep-alive): the request
/// never reached a handler, so sending it again cannot run it twice.
pub(crate) fn died_before_answer(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted | K::UnexpectedEof
            ) {
                return true;
            }
        }
        src = c.source();
    }
    false
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
