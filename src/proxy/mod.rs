//! The gateway proper: Pingora's `ProxyHttp` implemented over the current config snapshot.
//!
//! Request path, hook by hook:
//! - `early_request_filter`: take the request id, pin the config snapshot, apply keep-alive;
//! - `request_filter`: refuse ambiguous framing (400); resolve the request target once (form,
//!   host, path in normal form; 400 for anything unsafe, see [`resolve`]) and match the route
//!   (404 / 405 answered here); refuse a declared body over the route's limit (413), rewrite,
//!   start the route's deadline; auth, rate limits;
//! - `request_body_filter`: count body bytes, stop a body that crosses the limit (413);
//! - `upstream_peer`: pick a target (balancing) with timeouts cut to the deadline;
//! - `upstream_request_filter` / `upstream_response_filter`: forwarded and hop-by-hop headers;
//! - `fail_to_connect` / `error_while_proxy`: account the failed attempt;
//! - `fail_to_proxy`: the single place an error becomes a problem+json response;
//! - `logging`: metrics and the access log, for every request however it ended.

mod ctx;
mod framing;
mod headers;
mod problem;
mod resolve;
mod retry;

pub use ctx::{InFlight, Refused, RequestCtx};
pub use problem::{problem_for, Problem};
pub use resolve::rejection;

use crate::observe::{AccessLog, AccessRecord, LogThrottle, Metrics, Rejection, UpstreamOutcome};
use crate::snapshot::{RouteAuth, Store};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::upstream::backoff::jittered_backoff;
use crate::upstream::circuit::Admission;
use crate::upstream::HashKey;
use resolve::Resolution;
use retry::{should_retry, RequestFacts, RetryReason};

/// Pooled upstream connections idle longer than this are closed rather than reused: upstream
/// servers commonly close idle keep-alive connections after 60 s or more, so reuse stays safe.
const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(55);

/// The proxy service logic of one Tollgate instance.
pub struct Gateway {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    /// Pingora's own "Fail to proxy" error lines: one per error type per second.
    error_log: LogThrottle,
}

impl Gateway {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, access_log: Arc<AccessLog>) -> Gateway {
        Gateway {
            store,
            metrics,
            access_log,
            error_log: LogThrottle::new(),
        }
    }

    /// Ends the current upstream attempt, if one is open, and counts it.
    fn finish_attempt(&self, ctx: &mut RequestCtx, outcome: UpstreamOutcome) {
        let (Some(started), Some(route), Some(idx)) =
            (ctx.attempt_started.take(), ctx.route.as_ref(), ctx.target)
        else {
            return;
        };
        ctx.attempt = None;
        if let Some(target) = route.upstream.targets.get(idx) {
            self.metrics.upstream_attempt(
                &route.upstream.name,
                &target.label,
                outcome,
                started.elapsed(),
            );
        }
        // Connect errors, timeouts and 5xx count against the target's circuit breaker.
        let success = matches!(outcome, UpstreamOutcome::Response(s) if s < 500);
        if let (Some(state), Some(ticket)) = (
            route.upstream.state.targets.get(idx),
            ctx.circuit_ticket.take(),
        ) {
            state.record(ticket, success, Instant::now());
        }
    }
}

impl Gateway {
    /// Runs the route's auth policy. `Ok(false)`: let the request through (its identity kept in
    /// `ctx`); `Ok(true)`: denied, and the 401/403 already written.
    async fn authenticate(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        auth: &RouteAuth,
    ) -> pingora::Result<bool> {
        let decision = auth
            .policy
            .authenticate(&session.req_header().headers, &auth.scopes)
            .await;
        match decision {
            Ok(identity) => {
                self.metrics.auth_decision(&auth.name, "allowed");
                ctx.identity = Some(identity);
                Ok(false)
            }
            Err(denial) => {
                self.metrics.auth_decision(&auth.name, denial.label());
                let challenge = auth.policy.challenge(denial, &auth.scopes);
                Problem::auth_denied(denial, challenge)
                    .write(session, &ctx.request_id.text)
                    .await?;
                Ok(true)
            }
        }
    }
}

impl Gateway {
    /// Answers a malformed request 400 and closes the connection (what follows it on the
    /// connection cannot be trusted); counted, and logged with the path as received.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reason: Rejection,
        detail: &'static str,
    ) -> pingora::Result<bool> {
        self.metrics.rejected(reason);
        ctx.refusal = Some(Refused {
            reason: reason.label(),
            path: resolve::received_path(session.req_header()),
        });
        session.set_keepalive(None);
        Problem::new(400, detail)
            .write(session, &ctx.request_id.text)
            .await?;
        Ok(true)
    }

    /// Checks the route's rate limits (after auth: keys may name the caller). `Ok(true)`:
    /// refused, and the 429 already written.
    async fn rate_limit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        limiter: &crate::ratelimit::Limiter,
        limits: &crate::ratelimit::RouteLimits,
    ) -> pingora::Result<bool> {
        let facts = crate::ratelimit::KeyFacts {
            client: ctx.client,
            headers: &session.req_header().headers,
            identity: ctx.identity.as_ref(),
            route: ctx.route_name(),
        };
        let verdict = limiter.check(limits, &facts).await;
        let fields = (limits.policy.clone(), verdict.state);
        if verdict.allowed {
            ctx.rate_limit = Some(fields);
            return Ok(false);
        }
        Problem::too_many_requests(verdict.retry_after, fields)
            .write(session, &ctx.request_id.text)
            .await?;
        Ok(true)
    }
}

/// The bytes the hash balancer hashes: the configured header's value or the caller's claim, else
/// the client address (a request without that header or claim still gets a stable target).
fn hash_key(
    session: &Session,
    key: &HashKey,
    identity: Option<&crate::auth::Identity>,
    client: Option<std::net::IpAddr>,
) -> Vec<u8> {
    match key {
        HashKey::Header(name) => {
            if let Some(v) = session.req_header().headers.get(name) {
                return v.as_bytes().to_vec();
            }
        }
        HashKey::Claim(name) => {
            if let Some(v) = identity.and_then(|id| id.claim(name)) {
                return v.into_bytes();
            }
        }
        HashKey::ClientIp => {}
    }
    match client {
        Some(std::net::IpAddr::V4(ip)) => ip.octets().to_vec(),
        Some(std::net::IpAddr::V6(ip)) => ip.octets().to_vec(),
        None => Vec::new(),
    }
}

/// How long until the first open circuit of a healthy target lets probes through: the
/// `Retry-After` of a 503 for "no usable target". Every target counts, not only those refused
/// during this selection: selection never offers a target whose circuit is open, so those are
/// the usual reason nothing is usable. `None` when no circuit is open.
fn circuit_wait(upstream: &crate::upstream::Upstream, now: Instant) -> Option<Duration> {
    upstream
        .state
        .targets
        .iter()
        .filter(|t| t.is_healthy())
        .filter_map(|t| t.retry_after(now))
        .min()
}

fn outcome_of(e: &Error) -> UpstreamOutcome {
    if problem::is_timeout(e) {
        UpstreamOutcome::Timeout
    } else if problem::is_connect_error(e) {
        UpstreamOutcome::ConnectError
    } else {
        UpstreamOutcome::Error
    }
}

/// Framing checks for HTTP/1 requests (HTTP/2 frames bodies itself).
fn check_framing(session: &Session) -> Result<(), &'static str> {
    let req = session.req_header();
    if req.version >= http::Version::HTTP_2 {
        return Ok(());
    }
    // The raw head matters only next to Transfer-Encoding (see framing::check).
    let raw = match req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        true => session
            .as_downstream()
            .as_http1()
            .map(|s| s.get_headers_raw_bytes())
            .unwrap_or_default(),
        false => Bytes::new(),
    };
    framing::check(req, &raw)
}

/// Whether a request announces a body (HTTP/1 framing headers; HTTP/2 requests with a body carry
/// neither necessarily, so they count as having one unless the method says otherwise).
fn has_body(req: &RequestHeader) -> bool {
    let h = &req.headers;
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        return true;
    }
    match h.get(http::header::CONTENT_LENGTH) {
        Some(len) => len.as_bytes() != b"0",
        None => {
            req.version == http::Version::HTTP_2
                && !matches!(req.method, http::Method::GET | http::Method::HEAD)
        }
    }
}

/// The facts about a request that retry decisions need.
fn facts(session: &Session) -> RequestFacts<'_> {
    RequestFacts {
        method: &session.req_header().method,
        response_started: session.response_written().is_some(),
        body_truncated: session.as_ref().retry_buffer_truncated(),
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(InFlight::new(self.metrics.in_flight()))
    }

    /// Always `Ok`: only sets up the context.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.request_id = headers::request_id(session.req_header().headers.get(headers::REQUEST_ID));
        let snapshot = self.store.snapshot();
        // Only shorten keep-alive where it is on: HTTP/1.0 without keep-alive stays off.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(snapshot.server.idle_timeout.get().as_secs().max(1)));
        }
        // The client as the logs and hash balancing see it: the socket peer, or the address a
        // trusted proxy in front of Tollgate forwarded (`server.trusted_proxies`).
        ctx.client = crate::ratelimit::client_ip(
            client_ip(session),
            &session.req_header().headers,
            &snapshot.trusted_proxies,
        );
        ctx.snapshot = Some(snapshot);
        Ok(())
    }

    /// `Ok(true)`: the gateway answered itself (400, 401, 403, 404, 405); `Ok(false)`: proxy to
    /// the route's upstream.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let Some(snapshot) = ctx.snapshot.clone() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no config snapshot",
            ));
        };
        // Identity headers are the gateway's to set: a client sending its own would impersonate.
        for name in &snapshot.identity_headers {
            session.req_header_mut().remove_header(name);
        }
        if let Err(detail) = check_framing(session) {
            // The body's extent is unknown: never read on after it.
            return self
                .refuse(session, ctx, Rejection::BadRequest, detail)
                .await;
        }
        let routed = match resolve::resolve(&snapshot, session.req_header()) {
            Resolution::Routed(routed) => routed,
            Resolution::Refused(refusal) => {
                let reason = resolve::rejection(refusal);
                return self.refuse(session, ctx, reason, refusal.detail()).await;
            }
            Resolution::MethodNotAllowed { allow } => {
                Problem::method_not_allowed(allow)
                    .write(session, &ctx.request_id.text)
                    .await?;
                return Ok(true);
            }
            Resolution::NotFound => {
                Problem::not_found()
                    .write(session, &ctx.request_id.text)
                    .await?;
                return Ok(true);
            }
            Resolution::ServerOptions => {
                problem::write_server_options(session, &ctx.request_id.text).await?;
                return Ok(true);
            }
        };
        if let Some(rewritten) = &routed.rewritten {
            resolve::apply(session.req_header_mut(), rewritten)?;
        }
        let route = routed.route;
        ctx.upstream_target = routed.upstream_target;
        ctx.deadline = route.timeout.map(|t| ctx.started + t);
        ctx.body_limit = route.max_body_bytes;
        ctx.route = Some(route.clone());
        if framing::content_length(session.req_header()).is_some_and(|len| len > ctx.body_limit) {
            // Refused before anything goes upstream; the body is never read.
            self.metrics.rejected(Rejection::BodyTooLarge);
            session.set_keepalive(None);
            Problem::body_too_large()
                .write(session, &ctx.request_id.text)
                .await?;
            return Ok(true);
        }
        if let Some(auth) = &route.auth {
            if self.authenticate(session, ctx, auth).await? {
                return Ok(true);
            }
        }
        match &route.rate_limits {
            Some(limits) => {
                self.rate_limit(session, ctx, &snapshot.limiter, limits)
                    .await
            }
            None => Ok(false),
        }
    }

    /// Picks the target among the usable ones (healthy, circuit admitting). Errors: 504 when the
    /// route deadline already passed; 503 (with `Retry-After` when circuits are open) when no
    /// target can take the request.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route selected",
            ));
        };
        let upstream = &route.upstream;
        if ctx.attempts == 0 {
            upstream.state.budget.record_request(Instant::now());
        } else if let Some(policy) = &route.retry {
            // Back off before a retry (full jitter), but never past the route deadline.
            let mut delay = jittered_backoff(ctx.attempts, policy.backoff, policy.max_backoff);
            if let Some(deadline) = ctx.deadline {
                delay = delay.min(deadline.saturating_duration_since(Instant::now()));
            }
            tokio::time::sleep(delay).await;
        }
        ctx.attempts += 1;
        let remaining = match ctx.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(504),
                        "route deadline passed",
                    ));
                }
                Some(left)
            }
            None => None,
        };
        let key = if upstream.is_hashed() {
            hash_key(
                session,
                &upstream.hash_key,
                ctx.identity.as_ref(),
                ctx.client,
            )
        } else {
            Vec::new()
        };
        let now = Instant::now();
        // Targets whose circuit refused this request: skipped in this selection only.
        let mut refused: Vec<usize> = Vec::new();
        let picked = loop {
            let skip: Vec<usize> = ctx.tried.iter().chain(&refused).copied().collect();
            match upstream.select(&key, &skip, now) {
                // Nothing usable, or selection fell back to a target already refused.
                None => break None,
                Some(idx) if refused.contains(&idx) => break None,
                Some(idx) => match upstream.state.targets[idx].admit(now) {
                    Admission::Rejected { .. } => refused.push(idx),
                    admission @ (Admission::Allowed(_) | Admission::Probe(_)) => {
                        ctx.circuit_ticket = admission.ticket();
                        break Some(idx);
                    }
                },
            }
        };
        let Some(idx) = picked else {
            ctx.retry_after = circuit_wait(upstream, now);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no usable upstream target",
            ));
        };
        ctx.tried.push(idx);
        ctx.target = Some(idx);
        ctx.attempt_started = Some(now);
        ctx.attempt = Some(upstream.state.targets[idx].start_attempt());
        let cap = |d: Duration| remaining.map_or(d, |r| d.min(r));
        let mut peer = upstream.peer(idx);
        peer.options.connection_timeout = Some(cap(upstream.connect_timeout));
        // With TLS, connect_timeout bounds the TCP connect and the handshake together.
        peer.options.total_connection_timeout = Some(cap(upstream.connect_timeout));
        peer.options.read_timeout = Some(cap(upstream.read_timeout));
        // A request without a body is one small write that the socket buffer absorbs; only a
        // body upload can stall on a slow upstream, so only then pay for a timer on every write.
        if has_body(session.req_header()) {
            peer.options.write_timeout = Some(cap(upstream.read_timeout));
        }
        peer.options.idle_timeout = Some(UPSTREAM_POOL_IDLE);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(target) = &ctx.upstream_target {
            upstream_request.set_raw_path(target).map_err(|_| {
                Error::explain(
                    ErrorType::HTTPStatus(400),
                    "rewritten path is not a valid URI",
                )
            })?;
        }
        if let (Some(auth), Some(identity)) = (
            ctx.route.as_ref().and_then(|r| r.auth.as_ref()),
            &ctx.identity,
        ) {
            if let Some(name) = auth.policy.credential_header_to_strip() {
                upstream_request.remove_header(name);
            }
            let mut result = Ok(());
            auth.policy.forward(identity, |name, value| {
                if result.is_ok() {
                    result = upstream_request.insert_header(name.clone(), value);
                }
            });
            result?;
        }
        // X-Forwarded-Proto: the scheme the client used to reach Tollgate.
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let peer = client_ip(session);
        let strip = match &ctx.snapshot {
            // A trusted proxy in front of Tollgate may have set the proxy headers; nobody else.
            Some(s) if peer.is_some_and(|ip| s.trusted_proxies.iter().any(|n| n.contains(&ip))) => {
                &s.strip.trusted[..]
            }
            Some(s) => &s.strip.untrusted[..],
            None => &[],
        };
        let forwarding = headers::Forwarding {
            peer,
            proto: if tls { "https" } else { "http" },
            id: &ctx.request_id,
            strip,
        };
        headers::prepare_upstream_request(upstream_request, &forwarding)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(b) = body {
            ctx.bytes_in += b.len() as u64;
            // After an upgrade (WebSocket) the bytes are a conversation, not a request body.
            if ctx.bytes_in > ctx.body_limit && !session.was_upgraded() {
                // This chunk and everything after it stay here; the upstream connection is
                // dropped with the body unfinished, so no complete request reaches it.
                *body = None;
                if !std::mem::replace(&mut ctx.body_refused, true) {
                    self.metrics.rejected(Rejection::BodyTooLarge);
                }
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the route's max_body_bytes",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let status = upstream_response.status.as_u16();
        if matches!(status, 502..=504)
            && should_retry(
                ctx,
                &facts(session),
                RetryReason::Status(status),
                &self.metrics,
            )
        {
            // Nothing went to the client yet: drop this answer and try another target.
            self.finish_attempt(ctx, UpstreamOutcome::Response(status));
            ctx.retry_decided = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "upstream answered with a retryable status",
            ));
        }
        if !upstream_response.status.is_informational() {
            ctx.upstream_status = Some(status);
        }
        // Set on the plain header map with the rest (Pingora's insert_header is costly).
        let rate_limit = match &ctx.rate_limit {
            Some(fields) if !upstream_response.status.is_informational() => {
                crate::ratelimit::response_fields(fields)
            }
            _ => Vec::new(),
        };
        headers::prepare_client_response(upstream_response, &ctx.request_id, rate_limit)
    }

    /// Nothing reached the upstream: retried (on another target) when the route's policy allows
    /// the method, even a POST, since it was never sent.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.finish_attempt(ctx, outcome_of(&e));
        let retry = should_retry(ctx, &facts(session), RetryReason::Connect, &self.metrics);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.body_refused {
            // Our own 413, not the target's failure: no retry, no circuit breaker verdict.
            ctx.circuit_ticket = None;
            self.finish_attempt(ctx, UpstreamOutcome::ClientClosed);
            e.set_retry(false);
            return e;
        }
        if std::mem::take(&mut ctx.retry_decided) {
            // A 502/503/504 answer for which upstream_response_filter already decided to retry.
            e.set_retry(true);
            return e;
        }
        if e.esource() == &pingora::ErrorSource::Upstream {
            self.finish_attempt(ctx, outcome_of(&e));
            let reason = if problem::is_timeout(&e) {
                RetryReason::Timeout
            } else {
                RetryReason::Error
            };
            if should_retry(ctx, &facts(session), reason, &self.metrics) {
                e.set_retry(true);
                return e;
            }
        }
        // Otherwise Pingora's own rule: a pooled connection that the upstream had closed is
        // retried once for idempotent requests whose body can be replayed (nothing was processed).
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// The single place errors become client responses (problem+json).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let mut problem = problem_for(e);
        problem.rate_limit = ctx.rate_limit.clone();
        if problem.status == 503 {
            // Whole seconds, rounded up: a client retrying earlier would find the circuit open.
            problem.retry_after = ctx
                .retry_after
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        }
        let mut status = problem.status;
        if status > 0 && session.response_written().is_none() {
            // The connection is not reused after an error (below, and Pingora closes it after a
            // failed upstream attempt anyway): say so with `Connection: close`, or a keep-alive
            // client sends its next request on a connection about to close and that fails.
            session.set_keepalive(None);
            // The upstream could not answer: the route's fallback, if it has one, stands in.
            let fallback = ctx
                .route
                .as_ref()
                .filter(|_| matches!(status, 502..=504))
                .and_then(|r| r.fallback.as_ref().map(|f| (r.name.clone(), f.clone())));
            let written = match fallback {
                Some((route, fallback)) => {
                    self.metrics.fallback_response(&route);
                    status = fallback.status;
                    problem::write_fallback(session, &ctx.request_id.text, &fallback).await
                }
                None => problem.write(session, &ctx.request_id.text).await,
            };
            if let Err(write_err) = written {
                tracing::debug!(request_id = %ctx.request_id.text, "could not send error response: {write_err}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Pingora writes an ERROR line for every request that fails; under a flood of them the
    /// log would drown. One line per error type per second gets through; the rest are counted
    /// in `tollgate_log_lines_suppressed_total` (every request is still in the access log).
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        let kind = error.etype().as_str();
        if self.error_log.allow(kind) {
            return false;
        }
        self.metrics.log_suppressed(kind);
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let client_gone = e.is_some_and(|e| e.esource() == &pingora::ErrorSource::Downstream);
        let attempt_outcome = match (ctx.upstream_status, e) {
            (Some(s), _) => UpstreamOutcome::Response(s),
            // The client hung up before the target answered: not a failure of the target, so
            // it is counted apart and its circuit breaker does not hear of it (a dropped probe
            // ticket is freed by the circuit's lost-probe backstop).
            (None, Some(_)) if client_gone => {
                ctx.circuit_ticket = None;
                UpstreamOutcome::ClientClosed
            }
            (None, Some(e)) => outcome_of(e),
            (None, None) => UpstreamOutcome::Error,
        };
        self.finish_attempt(ctx, attempt_outcome);
        let elapsed = ctx.started.elapsed();
        let req = session.req_header();
        self.metrics
            .request(ctx.route_name(), &req.method, status, elapsed);

        let Some(snapshot) = ctx.snapshot.as_ref() else {
            return;
        };
        if !snapshot.log.access {
            return;
        }
        let route = ctx.route.as_ref();
        let target = route.and_then(|r| ctx.target.and_then(|i| r.upstream.targets.get(i)));
        let record = AccessRecord {
            time: SystemTime::now(),
            request_id: &ctx.request_id.text,
            client: ctx.client,
            method: req.method.as_str(),
            path: ctx.refusal.as_ref().map_or(req.uri.path(), |r| &r.path),
            reason: ctx.refusal.as_ref().map(|r| r.reason),
            route: ctx.route_name(),
            upstream: route.map(|r| &*r.upstream.name),
            target: target.map(|t| &*t.label),
            status,
            duration: elapsed,
            bytes_in: ctx.bytes_in,
            bytes_out: session.body_bytes_sent() as u64,
        };
        if !self.access_log.write(snapshot.log.format, &record) {
            self.metrics.access_log_dropped();
        }
    }
}
