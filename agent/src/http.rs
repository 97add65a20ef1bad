//! The agent's small HTTP calls to its engine and stores (health, models, metrics, clear
//! steps): one helper, so that every such call has a timeout and errors that name the
//! method and URL. The load itself goes through [`crate::client::send`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};

use crate::client::HttpClient;

/// What a small call got back: any status, with its body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Answer {
    /// The body when the status is a success, else an error naming the call and status.
    pub fn success(self, what: &str) -> Result<String, String> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(format!("{what}: HTTP {}", self.status))
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
) -> Result<Answer, String> {
    let what = format!("{method} {url}");
    let build = || {
        let mut req = Request::builder().method(method.clone()).uri(url);
        if json.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        req.body(Full::new(Bytes::from(json.unwrap_or_default().to_owned())))
            .map_err(|e| format!("{what}: {e}"))
    };
    let req = build()?;
    let exchange = async {
        // A pooled connection the server closed while idle (llama.cpp's server closes after
        // each streamed response) fails before any answer: the same call once more on a
        // fresh connection, as the load does.
        let resp = match client.request(req).await {
            Err(e) if crate::client::died_before_answer(&e) => crate::client::fresh_client()
                .request(build()?)
                .await
                .map_err(|e| format!("{what}: {}", crate::client::error_chain(&e)))?,
            other => other.map_err(|e| format!("{what}: {}", crate::client::error_chain(&e)))?,
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .map_err(|e| format!("{what}: reading the answer: {e}"))?;
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{what}: no answer within {} s", timeout.as_secs_f64()))?
}

/// `GET url`: the body on a success status.
pub async fn get(client: &HttpClient, url: &str, timeout: Duration) -> Result<String, String> {
    call(client, Method::GET, url, None, timeout)
        .await?
        .success(&format!("GET {url}"))
}
