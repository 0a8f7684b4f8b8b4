//! One request through the gateway as a client sees it: [`Answer`] (status, headers, body, time
//! taken), the ways to get one ([`send`], [`get`], [`call`]) and the check of a gateway-made
//! problem response ([`assert_problem`]).

use super::gateway::GatewayHandle;
use std::time::{Duration, Instant};

/// One answer as a client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub took: Duration,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `backend` field of a fake upstream's default body (`{"backend":"NAME"}`), if any.
    pub fn backend(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()?
            .get("backend")?
            .as_str()
            .map(str::to_string)
    }
}

/// Sends one request; `Err` is a transport error (connection reset, truncated body...).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let start = Instant::now();
    let r = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.map_err(|e| format!("{e:?}"))?;
    Ok(Answer {
        status,
        headers,
        body,
        took: start.elapsed(),
    })
}

/// GET `url` with the harness client.
pub async fn get(url: &str) -> Result<Answer, String> {
    send(super::client().get(url)).await
}

/// GET `path` on the gateway with these request headers; panics on a transport error.
pub async fn call(gw: &GatewayHandle, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = super::client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await.expect("answer")
}

/// Asserts a problem response the gateway made: this status, problem+json, and a body that
/// repeats the status. Returns the body.
pub fn assert_problem(a: &Answer, status: u16) -> serde_json::Value {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{a:?}"
    );
    let body: serde_json::Value = serde_json::from_str(&a.body).expect("problem json");
    assert_eq!(body["status"], status, "{a:?}");
    body
}
