//! One part's upstream exchange, made the way a proxied request makes its attempts: a target
//! from `Upstream::pick` (balancing, health, circuit admission, untried first), the upstream's
//! timeouts cut to the part's deadline, each attempt finished with its outcome (metrics and
//! circuit breaker), and retries under the route's policy and the upstream's budget. The body
//! is read up to the part's limit and no further.

use super::Part;
use crate::observe::{Metrics, UpstreamOutcome};
use crate::trace::{AttemptTrace, RequestTrace};
use crate::upstream::backoff::jittered_backoff;
use crate::upstream::{failure_outcome, Attempt, RetryFacts, RetryPolicy, RetryReason, Upstream};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use smallvec::SmallVec;
use std::time::Instant;

/// How a part's upstream call ended.
pub enum Fetched {
    /// A response with its whole body.
    Answer {
        header: Box<ResponseHeader>,
        body: Bytes,
    },
    /// A response whose body is over the part's limit (not read further).
    TooLarge { status: u16 },
    /// No target could take it; `circuit_open`: because circuits are open.
    NoTarget { circuit_open: bool },
    /// The part's deadline passed.
    Timeout,
    /// The connection failed (refused, reset, a malformed answer).
    Failed,
}

/// What a fetch runs with besides the part.
pub struct Fetch<'a> {
    pub connector: &'a Connector,
    pub metrics: &'a Metrics,
    pub retry: Option<&'a RetryPolicy>,
    /// The bytes the upstream's hash balancer hashes.
    pub hash_input: &'a [u8],
    pub max_bytes: usize,
    /// The client request's trace: each attempt is a child span.
    pub trace: Option<&'a RequestTrace>,
}

/// One outcome of one attempt.
enum Exchanged {
    Answer(Box<ResponseHeader>, Bytes),
    TooLarge(u16),
}

impl Fetch<'_> {
    /// Calls the part's upstream until it answers, a failure may not be retried, or `deadline`.
    /// `head`: the part's request without `Host` (each attempt names its target).
    pub async fn fetch(
        &self,
        part: &Part,
        head: &RequestHeader,
        deadline: Option<Instant>,
    ) -> Fetched {
        let upstream = &part.upstream;
        let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
        let mut attempts = 0u32;
        loop {
            if attempts > 0 {
                if let Some(policy) = self.retry {
                    let mut delay = jittered_backoff(attempts, policy.backoff, policy.max_backoff);
                    if let Some(d) = deadline {
                        delay = delay.min(d.saturating_duration_since(Instant::now()));
                    }
                    tokio::time::sleep(delay).await;
                }
            }
            let now = Instant::now();
            let remaining = deadline.map(|d| d.saturating_duration_since(now));
            if remaining.is_some_and(|r| r.is_zero()) {
                return Fetched::Timeout;
            }
            attempts += 1;
            let attempt = match upstream.pick(self.hash_input, &tried, now) {
                Ok(attempt) => attempt,
                Err(none) => {
                    return Fetched::NoTarget {
                        circuit_open: none.retry_after.is_some(),
                    }
                }
            };
            tried.push(attempt.index);
            let label = &upstream.targets[attempt.index].label;
            let span = self.trace.map(|t| {
                t.attempt(
                    &part.method,
                    &upstream.name,
                    label,
                    attempts - 1,
                    Some(&part.name),
                )
            });
            let peer = upstream.timed_peer(attempt.index, remaining, false);
            let mut header = head.clone();
            // A config label is always a valid header value.
            let _ = header.insert_header(http::header::HOST, &**label);
            if let Some(span) = &span {
                span.inject(&mut header);
            }
            let exchange = self.exchange(&peer, header);
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), exchange).await {
                    Ok(result) => result,
                    Err(_) => {
                        finish(attempt, span, upstream, UpstreamOutcome::Timeout);
                        return Fetched::Timeout;
                    }
                },
                None => exchange.await,
            };
            let (reason, failed) = match result {
                Ok(Exchanged::Answer(header, body)) => {
                    let status = header.status.as_u16();
                    finish(attempt, span, upstream, UpstreamOutcome::Response(status));
                    if !matches!(status, 502..=504) {
                        return Fetched::Answer { header, body };
                    }
                    let failed = Fetched::Answer { header, body };
                    (RetryReason::Status(status), failed)
                }
                Ok(Exchanged::TooLarge(status)) => {
                    finish(attempt, span, upstream, UpstreamOutcome::Response(status));
                    return Fetched::TooLarge { status };
                }
                Err(e) => {
                    let outcome = failure_outcome(&e);
                    finish(attempt, span, upstream, outcome);
                    match outcome {
                        UpstreamOutcome::Timeout => (RetryReason::Timeout, Fetched::Timeout),
                        UpstreamOutcome::ConnectError => (RetryReason::Connect, Fetched::Failed),
                        _ => (RetryReason::Error, Fetched::Failed),
                    }
                }
            };
            let facts = RetryFacts {
                method: &part.method,
                attempts,
                deadline,
                response_started: false,
                body_truncated: false,
            };
            if !upstream.may_retry(self.retry, &facts, reason, self.metrics) {
                return failed;
            }
        }
    }

    /// One request on one connection, under the upstream's read and write timeouts (cut to the
    /// part's deadline in `peer`). A pooled connection the upstream had closed meanwhile fails
    /// before any answer: then an idempotent request goes once more on a new connection, as
    /// Pingora does for proxied requests. Others never go twice: the upstream may have
    /// processed them before it closed.
    async fn exchange(&self, peer: &HttpPeer, header: RequestHeader) -> pingora::Result<Exchanged> {
        let mut fresh: Option<HttpPeer> = None;
        loop {
            let peer = fresh.as_ref().unwrap_or(peer);
            let (mut session, reused) = self.connector.get_http_session(peer).await?;
            // Pingora's connector leaves these to the caller (its proxy sets them per request).
            session.set_read_timeout(peer.options.read_timeout);
            session.set_write_timeout(peer.options.write_timeout);
            let sent: pingora::Result<()> = async {
                session
                    .write_request_header(Box::new(header.clone()))
                    .await?;
                session.finish_request_body().await?;
                loop {
                    session.read_response_header().await?;
                    let informational = session
                        .response_header()
                        .is_some_and(|h| h.status.is_informational());
                    if !informational {
                        return Ok(());
                    }
                }
            }
            .await;
            if let Err(e) = sent {
                if reused && fresh.is_none() && header.method.is_idempotent() && closed_unused(&e) {
                    let mut new_connection = peer.clone();
                    crate::upstream::bypass_pool(&mut new_connection);
                    fresh = Some(new_connection);
                    continue;
                }
                return Err(e);
            }
            let Some(response) = session.response_header().cloned().map(Box::new) else {
                return Err(pingora::Error::new(pingora::ErrorType::InvalidHTTPHeader));
            };
            let status = response.status.as_u16();
            let mut body = BytesMut::new();
            while let Some(chunk) = session.read_response_body().await? {
                if body.len() + chunk.len() > self.max_bytes {
                    // Dropped unread: the connection closes rather than return to the pool.
                    return Ok(Exchanged::TooLarge(status));
                }
                body.extend_from_slice(&chunk);
            }
            self.connector
                .release_http_session(session, peer, peer.options.idle_timeout)
                .await;
            return Ok(Exchanged::Answer(response, body.freeze()));
        }
    }
}

/// The failure of a request on a pooled connection that looks like the upstream had closed it
/// before reading the request: a write error, or a close or reset before any byte of an answer
/// (what Pingora marks `ReusedOnly`). A timeout is not: the upstream had the request.
fn closed_unused(e: &pingora::Error) -> bool {
    matches!(e.retry, pingora::RetryType::ReusedOnly)
        || e.etype() == &pingora::ErrorType::WriteError
}

/// Ends an attempt and its span with its outcome.
fn finish(
    attempt: Attempt,
    span: Option<AttemptTrace>,
    upstream: &Upstream,
    outcome: UpstreamOutcome,
) {
    if let Some(span) = span {
        span.finish(outcome);
    }
    attempt.finish(upstream, outcome);
}

/// The request head a part sends: its method and filled target, the headers prepared for it,
/// no body (`Host` is added per attempt). `Err` only for a target the template could not make
/// (it encodes every value and checked its literals, so never in practice).
pub fn request_head(
    part: &Part,
    target: &str,
    headers: HeaderMap,
) -> pingora::Result<RequestHeader> {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = part.method.clone();
    parts.headers = headers;
    if !matches!(part.method, http::Method::GET | http::Method::HEAD) {
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("0"),
        );
    }
    parts.uri = http::Uri::try_from(target).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "part target", e)
    })?;
    let mut header = RequestHeader::from(parts);
    header.set_raw_path(target.as_bytes())?;
    Ok(header)
}
