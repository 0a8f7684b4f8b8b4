//! Responses the gateway writes itself, in RFC 9457 `application/problem+json` form, and the one
//! place where an error is turned into an HTTP status. Bodies never echo request content.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use serde::Serialize;

/// A response the gateway makes on its own.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    pub detail: &'static str,
    /// `Allow` header value for a 405.
    pub allow: Option<String>,
    /// `Retry-After` seconds for a 503 while circuits are open.
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` challenge for a 401 or 403.
    pub challenge: Option<String>,
    /// `RateLimit-Policy` and `RateLimit` of a rate-limited route.
    pub rate_limit: Option<RateLimitFields>,
}

/// The two rate limit fields of a response on a limited route: the route's policy list and the
/// request's bucket states.
pub type RateLimitFields = (http::HeaderValue, String);

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

impl Problem {
    pub fn new(status: u16, detail: &'static str) -> Problem {
        Problem {
            status,
            detail,
            allow: None,
            retry_after: None,
            challenge: None,
            rate_limit: None,
        }
    }

    /// 429: a rate limit of the route refused the request.
    pub fn too_many_requests(retry_after: std::time::Duration, fields: RateLimitFields) -> Problem {
        Problem {
            // Whole seconds, rounded up, at least one: earlier would be refused again.
            retry_after: Some(crate::ratelimit::headers::ceil_secs(retry_after).max(1)),
            rate_limit: Some(fields),
            ..Problem::new(
                429,
                "a rate limit of this route is exhausted; retry after the time in Retry-After",
            )
        }
    }

    /// 401 (no or bad credentials) or 403 (missing scope), with the policy's challenge.
    pub fn auth_denied(denial: crate::auth::Denial, challenge: String) -> Problem {
        let problem = match denial {
            crate::auth::Denial::InsufficientScope => {
                Problem::new(403, "the credentials lack a scope this route requires")
            }
            _ => Problem::new(401, "this route requires valid credentials"),
        };
        Problem {
            challenge: Some(challenge),
            ..problem
        }
    }

    pub fn not_found() -> Problem {
        Problem::new(404, "no route matches this request")
    }

    pub fn body_too_large() -> Problem {
        Problem::new(413, "the request body is larger than this route accepts")
    }

    pub fn method_not_allowed(allow: &str) -> Problem {
        Problem {
            allow: Some(allow.to_string()),
            ..Problem::new(
                405,
                "the route does not accept this method; see the Allow header",
            )
        }
    }

    /// Serialises the body. The request id lets a user quote the failure to an operator.
    pub fn body(&self, request_id: &str) -> Bytes {
        let title = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let body = Body {
            kind: "about:blank",
            title,
            status: self.status,
            detail: self.detail,
            request_id,
        };
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// The whole response as HTTP/1.1 bytes, for answers written straight to a connection
    /// before Pingora has a request (a request head too large or too slow). The connection is
    /// closed afterwards, and says so.
    pub fn http1_response(&self, request_id: &str) -> Vec<u8> {
        let body = self.body(request_id);
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
            self.status,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Writes the whole response to the client. HEAD requests get the headers only.
    pub async fn write(&self, session: &mut Session, request_id: &str) -> pingora::Result<()> {
        let retry_after = self.retry_after.map(|secs| secs.to_string());
        let mut extra = Vec::with_capacity(5);
        if let Some((policy, state)) = &self.rate_limit {
            if let Ok(policy) = policy.to_str() {
                extra.push(("ratelimit-policy", policy));
            }
            if !state.is_empty() {
                extra.push(("ratelimit", state.as_str()));
            }
        }
        if let Some(challenge) = &self.challenge {
            extra.push((http::header::WWW_AUTHENTICATE.as_str(), challenge.as_str()));
        }
        if let Some(secs) = &retry_after {
            extra.push((http::header::RETRY_AFTER.as_str(), secs.as_str()));
        }
        if let Some(allow) = &self.allow {
            extra.push((http::header::ALLOW.as_str(), allow.as_str()));
        }
        let body = self.body(request_id);
        write_own_response(
            session,
            self.status,
            "application/problem+json",
            body,
            request_id,
            &extra,
        )
        .await
    }
}

/// Writes a route's configured fallback response, marked with `x-tollgate-fallback: 1` so clients
/// and logs can tell it from a real answer.
pub async fn write_fallback(
    session: &mut Session,
    request_id: &str,
    fallback: &crate::snapshot::Fallback,
) -> pingora::Result<()> {
    write_own_response(
        session,
        fallback.status,
        &fallback.content_type,
        fallback.body.clone(),
        request_id,
        &[("x-tollgate-fallback", "1")],
    )
    .await
}

/// The methods `OPTIONS *` announces: the gateway's routes may take any of them.
const SERVER_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Answers `OPTIONS *` (a question about the server, RFC 9110 §9.3.7): never forwarded, since
/// no single upstream speaks for the gateway.
pub async fn write_server_options(session: &mut Session, request_id: &str) -> pingora::Result<()> {
    write_own_response(
        session,
        200,
        "text/plain",
        Bytes::new(),
        request_id,
        &[(http::header::ALLOW.as_str(), SERVER_METHODS)],
    )
    .await
}

/// Writes a whole response the gateway makes itself: explicit Content-Length (Pingora would
/// otherwise close-delimit it), the request id, `no-store`, and no body for HEAD.
async fn write_own_response(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(status, Some(4 + extra.len()))?;
    header.insert_header(http::header::CONTENT_TYPE, content_type)?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header("x-request-id", request_id)?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (name, value) in extra {
        header.insert_header(*name, *value)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Maps a failure to the status the client sees (0: the client is gone, write nothing).
///
/// - our own `HTTPStatus(code)` errors keep their code (deadline passed: 504, no target: 502);
/// - upstream connect timeout and read/write timeouts: 504 Gateway Timeout;
/// - any other upstream failure (refused, reset, malformed response): 502 Bad Gateway;
/// - a broken client connection: 0; a malformed client request: 400; anything else: 500.
pub fn problem_for(e: &Error) -> Problem {
    use ErrorType::*;
    match (e.etype(), e.esource()) {
        (HTTPStatus(504), _) => Problem::new(
            504,
            "the route's deadline passed before the upstream answered",
        ),
        (HTTPStatus(503), _) => {
            Problem::new(503, "no healthy upstream target can take the request")
        }
        (HTTPStatus(413), _) => Problem::body_too_large(),
        (HTTPStatus(code), _) => Problem::new(*code, "the request could not be served"),
        (ConnectTimedout, _) => {
            Problem::new(504, "the upstream did not accept a connection in time")
        }
        (ReadTimedout | WriteTimedout, ErrorSource::Upstream) => {
            Problem::new(504, "the upstream did not answer in time")
        }
        (
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
            | ConnectProxyFailure | TLSHandshakeTimedout,
            _,
        ) => Problem::new(502, "the upstream refused or dropped the connection"),
        (TLSHandshakeFailure | InvalidCert, _) => Problem::new(
            502,
            "the upstream's TLS handshake failed or its certificate could not be verified",
        ),
        (_, ErrorSource::Upstream) => Problem::new(502, "the upstream connection failed"),
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => {
            Problem::new(0, "client connection closed")
        }
        (ReadTimedout, ErrorSource::Downstream) => {
            Problem::new(408, "the request was not received in time")
        }
        (_, ErrorSource::Downstream) => Problem::new(400, "the request is malformed"),
        _ => Problem::new(500, "internal error"),
    }
}

/// True when the failure happened while connecting (nothing reached the upstream).
pub fn is_connect_error(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout
            | ConnectRefused
            | ConnectNoRoute
            | ConnectError
            | BindError
            | SocketError
            | ConnectProxyFailure
            | TLSHandshakeFailure
            | TLSHandshakeTimedout
            // The upstream's certificate failed verification during the handshake.
            | InvalidCert
    )
}

/// True when the failure is a timeout waiting on the upstream.
pub fn is_timeout(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout | HTTPStatus(504)
    )
}
