//! Every response the gateway makes itself, and the one way it is written: a request step
//! that answers returns an [`Answer`]; a failure is mapped to one by [`problem_for`].

use crate::aggregate::Merged;
use crate::problem::{GatewayError, Problem, RateLimitFields, SERVER_METHODS};
use crate::snapshot::Fallback;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::ops::ControlFlow;

/// A response the gateway makes on its own.
#[derive(Debug)]
pub enum Answer {
    /// `application/problem+json` (errors and refusals).
    Problem(Problem),
    /// A route's configured `fallback`, standing in for 502/503/504, with the `Cache-Status`
    /// of a cached route.
    Fallback(Fallback, Option<String>),
    /// `OPTIONS *`: the server's methods.
    ServerOptions,
    /// An aggregate route's merged answer: 200, or 304 when `not_modified` (the client's
    /// `If-None-Match` names its `ETag`).
    Aggregate {
        merged: Merged,
        not_modified: bool,
        rate_limit: Option<RateLimitFields>,
    },
    /// The client went away before its answer was ready (an aggregate's parts were called
    /// off): nothing is written, and the request ends as a closed client connection does.
    ClientGone,
}

/// What a request step decides: go on to the next step, or answer now.
pub type Flow = ControlFlow<Answer>;

/// Answer now with this problem.
pub fn respond(problem: Problem) -> Flow {
    ControlFlow::Break(Answer::Problem(problem))
}

impl Answer {
    /// The status written.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Problem(p) => p.status,
            Answer::Fallback(f, _) => f.status,
            Answer::ServerOptions => 200,
            Answer::Aggregate { not_modified, .. } => {
                if *not_modified {
                    304
                } else {
                    200
                }
            }
            Answer::ClientGone => 0,
        }
    }

    /// Writes the whole answer. HEAD requests get the headers only.
    pub async fn write(&self, session: &mut Session, request_id: &str) -> pingora::Result<()> {
        match self {
            Answer::ClientGone => Err(Error::explain(
                ErrorType::ConnectionClosed,
                "the client went away before its answer was ready",
            )
            .into_down()),
            Answer::Problem(problem) => write_problem(session, problem, request_id).await,
            // Marked so clients and logs can tell it from a real answer.
            Answer::Fallback(f, cache_status) => {
                let mut extra = vec![("x-tollgate-fallback", "1")];
                if let Some(cache_status) = cache_status {
                    extra.push(("cache-status", cache_status.as_str()));
                }
                let head = Head::new(f.status, &f.content_type, &extra);
                write_own_response(session, head, f.body.clone(), request_id).await
            }
            // A question about the server (RFC 9110 §9.3.7): never forwarded, since no single
            // upstream speaks for the gateway.
            Answer::ServerOptions => {
                let allow = [(http::header::ALLOW.as_str(), SERVER_METHODS)];
                let head = Head::new(200, "text/plain", &allow);
                write_own_response(session, head, Bytes::new(), request_id).await
            }
            Answer::Aggregate {
                merged,
                not_modified,
                rate_limit,
            } => {
                let mut extra = vec![(http::header::ETAG.as_str(), merged.etag.as_str())];
                if let Some(failed) = &merged.partial {
                    extra.push(("x-tollgate-partial", failed.as_str()));
                }
                if let Some(vary) = &merged.vary {
                    extra.push((http::header::VARY.as_str(), vary.as_str()));
                }
                push_rate_limit(&mut extra, rate_limit.as_ref());
                let head = Head {
                    cache_control: &merged.cache_control,
                    ..Head::new(self.status(), "application/json", &extra)
                };
                let body = if *not_modified {
                    Bytes::new()
                } else {
                    merged.body.clone()
                };
                write_own_response(session, head, body, request_id).await
            }
        }
    }
}

/// `RateLimit-Policy` and `RateLimit` of a rate-limited route.
fn push_rate_limit<'a>(
    extra: &mut Vec<(&'static str, &'a str)>,
    fields: Option<&'a RateLimitFields>,
) {
    if let Some((policy, state)) = fields {
        if let Ok(policy) = policy.to_str() {
            extra.push(("ratelimit-policy", policy));
        }
        if !state.is_empty() {
            extra.push(("ratelimit", state.as_str()));
        }
    }
}

async fn write_problem(
    session: &mut Session,
    problem: &Problem,
    request_id: &str,
) -> pingora::Result<()> {
    let retry_after = problem.retry_after.map(|secs| secs.to_string());
    let mut extra = Vec::with_capacity(6);
    push_rate_limit(&mut extra, problem.rate_limit.as_ref());
    if let Some(challenge) = &problem.challenge {
        extra.push((http::header::WWW_AUTHENTICATE.as_str(), challenge.as_str()));
    }
    if let Some(secs) = &retry_after {
        extra.push((http::header::RETRY_AFTER.as_str(), secs.as_str()));
    }
    if let Some(allow) = &problem.allow {
        extra.push((http::header::ALLOW.as_str(), allow.as_str()));
    }
    if let Some(cache_status) = &problem.cache_status {
        extra.push(("cache-status", cache_status.as_str()));
    }
    let head = Head::new(problem.status, "application/problem+json", &extra);
    write_own_response(session, head, problem.body(request_id), request_id).await
}

/// The status line and headers of an answer, beside the fixed ones.
struct Head<'a> {
    status: u16,
    content_type: &'a str,
    /// `no-store` but for aggregate answers, which say how long their parts may be kept.
    cache_control: &'a str,
    extra: &'a [(&'static str, &'a str)],
}

impl<'a> Head<'a> {
    fn new(status: u16, content_type: &'a str, extra: &'a [(&'static str, &'a str)]) -> Head<'a> {
        Head {
            status,
            content_type,
            cache_control: "no-store",
            extra,
        }
    }
}

/// Writes a whole response the gateway makes itself: explicit Content-Length (Pingora would
/// otherwise close-delimit it), the request id, `Cache-Control`, and no body for HEAD or a 304.
async fn write_own_response(
    session: &mut Session,
    head: Head<'_>,
    body: Bytes,
    request_id: &str,
) -> pingora::Result<()> {
    let Head {
        status,
        content_type,
        cache_control,
        extra,
    } = head;
    let mut header = ResponseHeader::build(status, Some(4 + extra.len()))?;
    // A 304 describes the representation the client has; it has no body of its own.
    let not_modified = status == 304;
    if !not_modified {
        header.insert_header(http::header::CONTENT_TYPE, content_type)?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    header.insert_header("x-request-id", request_id)?;
    header.insert_header(http::header::CACHE_CONTROL, cache_control)?;
    for (name, value) in extra {
        header.insert_header(*name, *value)?;
    }
    let head_only = not_modified || session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Maps a failure to the answer the client sees (status 0: the client is gone, write nothing).
///
/// - the gateway's own errors ([`GatewayError`]) answer as they say;
/// - upstream connect timeout and read/write timeouts: 504 Gateway Timeout;
/// - any other upstream failure (refused, reset, malformed response): 502 Bad Gateway;
/// - a broken client connection: 0; a malformed client request: 400; anything else: 500.
pub fn problem_for(e: &Error) -> Problem {
    use ErrorType::*;
    if let Some(gateway) = GatewayError::of(e) {
        return Problem::from(gateway);
    }
    match (e.etype(), e.esource()) {
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
        // An HTTP/2 error from the client's side is its stream reset (a cancelled request,
        // common on mobile) or a broken connection: nothing can be answered on it.
        (ReadError | WriteError | ConnectionClosed | H2Error, ErrorSource::Downstream) => {
            Problem::new(0, "client connection closed")
        }
        (ReadTimedout, ErrorSource::Downstream) => {
            Problem::new(408, "the request was not received in time")
        }
        (_, ErrorSource::Downstream) => Problem::new(400, "the request is malformed"),
        _ => Problem::new(500, "internal error"),
    }
}
