//! The gateway proper: Pingora's `ProxyHttp` implemented over the current config snapshot.
//!
//! Request path, hook by hook:
//! - `early_request_filter`: take the request id, pin the config snapshot, find the client;
//! - `request_filter`: the request pipeline ([`pipeline`]: framing, target and route, declared
//!   body, auth, rate limits), each step going on or answering;
//! - `request_body_filter`: count body bytes, stop a body that crosses the limit (413);
//! - `upstream_peer`: pick a target (balancing) with timeouts cut to the deadline;
//! - `upstream_request_filter` / `upstream_response_filter`: forwarded and hop-by-hop headers;
//! - `fail_to_connect` / `error_while_proxy`: account the failed attempt;
//! - `fail_to_proxy`: a failure becomes its answer (problem+json, or the route's fallback);
//! - `logging`: metrics and the access log, for every request however it ended.

mod aggregating;
mod answer;
mod caching;
mod connect;
mod ctx;
mod framing;
mod headers;
mod limits;
mod pipeline;
mod resolve;
mod response;
mod spans;

pub use answer::{problem_for, Answer, Flow};
pub use ctx::{BoxedCtx, InFlight, Refused, RequestCtx};
pub use limits::H2_MAX_STREAMS;

use crate::observe::{
    bounded, AccessLog, AccessRecord, LogThrottle, Metrics, Rejection, UpstreamOutcome,
};
use crate::problem::GatewayError;
use crate::snapshot::Store;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::Error;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::upstream::backoff::jittered_backoff;
use crate::upstream::{failure_outcome, is_timeout, RetryFacts, RetryReason};

/// The proxy service logic of one Tollgate instance.
pub struct Gateway {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    /// Pingora's own "Fail to proxy" error lines: one per error type per second.
    error_log: LogThrottle,
    /// Pingora's warnings about failed attempts: one per error type per second.
    warn_log: LogThrottle,
    /// Requests in flight, per client and per HTTP/2 connection (limits.rs).
    admission: limits::Admission,
    /// Which targets' requests made new connections lately (connect.rs).
    connects: connect::ConnectHistory,
    /// Connections (pooled) for the parts of aggregate routes.
    parts: pingora::connectors::http::Connector,
}

impl Gateway {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, access_log: Arc<AccessLog>) -> Gateway {
        Gateway {
            store,
            metrics,
            access_log,
            error_log: LogThrottle::new(),
            warn_log: LogThrottle::new(),
            admission: Default::default(),
            connects: Default::default(),
            parts: pingora::connectors::http::Connector::new(None),
        }
    }

    /// A refusal of the gateway's own: counted in
    /// `tollgate_rejected_requests_total` and named on the request's access-log line.
    fn reject(&self, ctx: &mut RequestCtx, reason: Rejection) {
        self.metrics.rejected(reason);
        ctx.rejected = Some(reason);
    }

    /// Ends the current upstream attempt, if one is open, and counts it.
    fn finish_attempt(&self, ctx: &mut RequestCtx, outcome: UpstreamOutcome) {
        spans::finish_attempt(ctx, outcome);
        let upstream = ctx.route.as_ref().and_then(|r| r.upstream());
        if let (Some(attempt), Some(upstream)) = (ctx.attempt.take(), upstream) {
            attempt.finish(upstream, outcome);
        }
    }
}

/// What the gateway tells upstreams about the request: the peer, the scheme the client used
/// (`X-Forwarded-Proto`), the request id, the proxy headers to strip (a trusted proxy in
/// front of Tollgate may have set them; nobody else), and the target of the attempt.
fn forwarding<'c>(session: &Session, ctx: &'c RequestCtx) -> headers::Forwarding<'c> {
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let peer = client_ip(session);
    let strip = match &ctx.snapshot {
        Some(s) if peer.is_some_and(|ip| s.trusted_proxies.iter().any(|n| n.contains(&ip))) => {
            &s.strip.trusted[..]
        }
        Some(s) => &s.strip.untrusted[..],
        None => &[],
    };
    headers::Forwarding {
        peer,
        proto: if tls { "https" } else { "http" },
        id: &ctx.request_id,
        strip,
        trace: spans::trace_headers(ctx),
        target: ctx.attempt.as_ref().and_then(|attempt| {
            let upstream = ctx.route.as_ref()?.upstream()?;
            Some(&*upstream.targets.get(attempt.index)?.label)
        }),
    }
}

/// The facts about a request that retry decisions need.
fn facts<'s>(session: &'s Session, ctx: &RequestCtx) -> RetryFacts<'s> {
    RetryFacts {
        method: &session.req_header().method,
        attempts: ctx.attempts,
        deadline: ctx.deadline,
        response_started: session.response_written().is_some(),
        body_truncated: session.as_ref().retry_buffer_truncated(),
    }
}

/// Whether the failed attempt is tried again (`Upstream::may_retry` under the route's policy).
fn should_retry(
    session: &Session,
    ctx: &RequestCtx,
    reason: RetryReason,
    metrics: &Metrics,
) -> bool {
    let Some(route) = ctx.route.as_ref() else {
        return false;
    };
    let Some(upstream) = route.upstream() else {
        return false;
    };
    upstream.may_retry(route.retry.as_ref(), &facts(session, ctx), reason, metrics)
}

/// Whether an attempt that timed out was waiting on the client's request body rather than on
/// the target: a read timed out, before any response, while the body had not arrived whole.
///
/// Pingora forwards body chunks as they come and re-arms the upstream read timeout after each
/// one, so an upstream read timeout with the body unfinished means no byte of it came for the
/// whole timeout (or the route's deadline, which caps it). A target that stops reading the
/// body fails a write instead (`WriteTimedout`), which stays the target's failure. Pingora's
/// own read of the client (`Downstream`) timing out is the same stall seen from the other side.
fn client_stalled(session: &mut Session, e: &Error, ctx: &RequestCtx) -> bool {
    if e.etype() != &pingora::ErrorType::ReadTimedout
        || ctx.upstream_status.is_some()
        || session.was_upgraded()
    {
        return false;
    }
    match e.esource() {
        pingora::ErrorSource::Downstream => true,
        pingora::ErrorSource::Upstream => !session.is_body_done(),
        _ => false,
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
    type CTX = BoxedCtx;

    fn new_ctx(&self) -> BoxedCtx {
        Box::new(RequestCtx::new(InFlight::new(self.metrics.in_flight())))
    }

    /// No downstream modules: Tollgate compresses nothing, and Pingora's default adds a
    /// disabled compression module that still costs every request its context (allocations)
    /// and a call per response header and body chunk.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Always `Ok`: only sets up the context.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<()> {
        // From here on, what goes to the client is the gateway's answer; before, only
        // Pingora's refusal of a head could be written, which the edge guard replaces.
        crate::edge::request_reached_proxy(session.as_downstream());
        ctx.request_id =
            headers::request_id(session.req_header().headers.get(&headers::X_REQUEST_ID));
        let snapshot = self.store.snapshot();
        // Keep-alive idle time is the edge guard's to enforce (`edge::HeadLimits::idle`), with
        // the idle_timeout live when the next request is awaited.
        // The client as the logs and hash balancing see it: the socket peer, or the address a
        // trusted proxy in front of Tollgate forwarded (`server.trusted_proxies`).
        ctx.client = crate::ratelimit::client_ip(
            client_ip(session),
            &session.req_header().headers,
            &snapshot.trusted_proxies,
        );
        self.start_trace(session, ctx, &snapshot);
        ctx.snapshot = Some(snapshot);
        Ok(())
    }

    /// Runs the request pipeline. `Ok(true)`: the gateway answered (400, 401, 403, 404, 405,
    /// 413, 429, `OPTIONS *`); `Ok(false)`: go upstream.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<bool> {
        let Some(snapshot) = ctx.snapshot.clone() else {
            return Err(GatewayError::Internal("no config snapshot").into_pingora());
        };
        match self.pipeline(session, ctx, &snapshot).await {
            ControlFlow::Continue(()) => Ok(false),
            ControlFlow::Break(answer) => {
                answer.write(session, ctx.request_id.text()).await?;
                Ok(true)
            }
        }
    }

    /// Picks the target among the usable ones (`Upstream::pick`: healthy, circuit admitting,
    /// untried first). Errors: 504 when the route deadline already passed; 503 (with
    /// `Retry-After` when circuits are open) when no target can take the request.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(GatewayError::Internal("no route selected").into_pingora());
        };
        let Some(upstream) = route.upstream() else {
            return Err(GatewayError::Internal("an aggregate route went upstream").into_pingora());
        };
        if ctx.attempts > 0 {
            if let Some(policy) = &route.retry {
                // Back off before a retry (full jitter), but never past the route deadline.
                let mut delay = jittered_backoff(ctx.attempts, policy.backoff, policy.max_backoff);
                if let Some(deadline) = ctx.deadline {
                    delay = delay.min(deadline.saturating_duration_since(Instant::now()));
                }
                tokio::time::sleep(delay).await;
            }
        }
        if ctx.attempts > 0 {
            // The retry sends the body again from Pingora's replay buffer, through
            // `request_body_filter`: counted again from zero, it is counted once.
            ctx.bytes_in = 0;
        }
        ctx.attempts += 1;
        self.note_cache_phase(session, ctx);
        let remaining = match ctx.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(GatewayError::DeadlinePassed.into_pingora());
                }
                Some(left)
            }
            None => None,
        };
        let key = upstream.hash_input(
            &session.req_header().headers,
            ctx.identity.as_ref(),
            ctx.client,
        );
        let attempt = upstream
            .pick(&key, &ctx.tried, Instant::now())
            .map_err(|none| {
                ctx.decided.circuit_open = none.retry_after.is_some();
                GatewayError::NoUsableTarget {
                    retry_after: none.retry_after,
                }
                .into_pingora()
            })?;
        let idx = attempt.index;
        spans::start_attempt(ctx, upstream, idx, &session.req_header().method);
        ctx.tried.push(idx);
        ctx.attempt = Some(attempt);
        let mut peer = upstream.timed_peer(idx, remaining, ctx.declared.body);
        // No single read may outlast the whole response (response.rs); an upgrade
        // (WebSocket) is a conversation, not a response: its reads wait the upstream's own
        // read_timeout, not what is left of the route's deadline, which would otherwise close
        // every session silent for that long.
        if session.is_upgrade_req() {
            peer.options.read_timeout = Some(upstream.read_timeout);
        } else {
            peer.options.read_timeout =
                response::cap_read_timeout(peer.options.read_timeout, ctx.response_deadline());
        }
        let fresh = std::mem::take(&mut ctx.needs_fresh_connection);
        if fresh {
            crate::upstream::bypass_pool(&mut peer);
        }
        self.connect_ahead(session, ctx, &mut peer, fresh).await?;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<()> {
        if let Some(target) = &ctx.upstream_target {
            upstream_request
                .set_raw_path(target)
                .map_err(|_| GatewayError::BadRewrite.into_pingora())?;
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
        let forwarding = forwarding(session, ctx);
        headers::prepare_upstream_request(upstream_request, &forwarding)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<()> {
        if let Some(b) = body {
            ctx.bytes_in += b.len() as u64;
            // After an upgrade (WebSocket) the bytes are a conversation, not a request body.
            if ctx.bytes_in > ctx.body_limit && !session.was_upgraded() {
                // This chunk and everything after it stay here; the upstream connection is
                // dropped with the body unfinished, so no complete request reaches it.
                *body = None;
                if !std::mem::replace(&mut ctx.body_refused, true) {
                    self.reject(ctx, Rejection::BodyTooLarge);
                }
                return Err(GatewayError::BodyTooLarge.into_pingora());
            }
            // A body trickled in (a byte now and then) re-arms Pingora's read timeouts with
            // every chunk and would outlive any timeout of theirs: past the body's deadline
            // (`client_body_timeout`, or the route's `timeout` if sooner), the client gets a
            // 408 and the upstream connection is dropped with the body unfinished.
            let late = ctx.body_deadline.is_some_and(|d| Instant::now() >= d);
            if late && !session.was_upgraded() && !ctx.body_refused {
                *body = None;
                ctx.body_refused = true;
                self.reject(ctx, Rejection::BodyTimeout);
                return Err(GatewayError::BodyTimeout.into_pingora());
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<()> {
        let status = upstream_response.status.as_u16();
        if matches!(status, 502..=504)
            && should_retry(session, ctx, RetryReason::Status(status), &self.metrics)
        {
            // Nothing went to the client yet: drop this answer and try another target.
            self.finish_attempt(ctx, UpstreamOutcome::Response(status));
            return Err(GatewayError::UpstreamStatus(status).into_pingora());
        }
        // 101 is the upstream's final answer (the connection switches protocols): the attempt
        // succeeded, whatever ends the conversation after it. The other 1xx come before one.
        let switching = upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let final_answer = !upstream_response.status.is_informational() || switching;
        if final_answer {
            ctx.upstream_status = Some(status);
        }
        if switching {
            ctx.switched_at = Some(Instant::now());
            // An open WebSocket is a connection, bounded by the connection limits, not a request
            // in flight: holding its place for hours would shut its client (a whole carrier NAT)
            // or the gateway out of `max_in_flight*`.
            ctx.admitted = None;
        }
        // On a cached route the response may be stored: this request's own headers are added
        // in `response_filter`, after that.
        if ctx.cache.is_some() {
            return headers::prepare_client_response(upstream_response, None, Vec::new());
        }
        // Set on the plain header map with the rest (Pingora's insert_header is costly).
        let rate_limit = match &ctx.rate_limit {
            Some(fields) if final_answer => crate::ratelimit::response_fields(fields),
            _ => Vec::new(),
        };
        headers::prepare_client_response(upstream_response, Some(&ctx.request_id), rate_limit)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut BoxedCtx,
    ) -> pingora::Result<()> {
        if let Some(addr) = peer._address.as_inet() {
            self.connects.record(addr, reused);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        // After an upgrade (WebSocket) the bytes are a conversation, not a response body.
        if !session.was_upgraded() {
            self.bound_response_body(body, ctx)?;
        }
        Ok(None)
    }

    fn request_cache_filter(
        &self,
        session: &mut Session,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<()> {
        self.start_cache(session, ctx);
        Ok(())
    }

    fn cache_key_callback(
        &self,
        session: &Session,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<pingora::cache::CacheKey> {
        self.cache_key(session, ctx)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<pingora::cache::RespCacheable> {
        Ok(self.cache_verdict(session, resp, ctx))
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora::cache::CacheMeta,
        _ctx: &mut BoxedCtx,
        req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        crate::cache::key::variance(meta.headers(), req)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut BoxedCtx,
        error: Option<&Error>,
    ) -> bool {
        self.serve_stale(ctx, error)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut BoxedCtx,
    ) -> pingora::Result<()> {
        self.invalidate_after_write(session, upstream_response, ctx);
        self.finish_cached_response(session, upstream_response, ctx)
    }

    /// Nothing reached the upstream: retried (on another target) when the route's policy allows
    /// the method, even a POST, since it was never sent.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut BoxedCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.finish_attempt(ctx, failure_outcome(&e));
        let retry = should_retry(session, ctx, RetryReason::Connect, &self.metrics);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut BoxedCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.body_refused {
            // Our own 413, not the target's failure: no retry, no circuit breaker verdict.
            self.finish_attempt(ctx, UpstreamOutcome::ClientClosed);
            e.set_retry(false);
            return e;
        }
        if client_stalled(session, &e, ctx) {
            // The wait was for the client's body, not for the target: 408 to the client, no
            // retry (the body still would not come), no verdict against the target.
            self.finish_attempt(ctx, UpstreamOutcome::ClientClosed);
            self.reject(ctx, Rejection::BodyTimeout);
            let mut stalled = GatewayError::BodyTimeout
                .into_pingora()
                .more_context(format!("peer: {peer}"));
            stalled.set_retry(false);
            return stalled;
        }
        if matches!(GatewayError::of(&e), Some(GatewayError::UpstreamStatus(_))) {
            // A 502/503/504 answer for which upstream_response_filter already decided to retry.
            e.set_retry(true);
            return e;
        }
        if e.esource() == &pingora::ErrorSource::Upstream {
            self.finish_attempt(ctx, failure_outcome(&e));
            let reason = if is_timeout(&e) {
                RetryReason::Timeout
            } else {
                RetryReason::Error
            };
            if should_retry(session, ctx, reason, &self.metrics) {
                e.set_retry(true);
                return e;
            }
        }
        // Otherwise Pingora's rule for a pooled connection that fails before any answer (the
        // upstream may have closed it meanwhile): an idempotent request whose body can be
        // replayed goes again, but once, and on a new connection. Pingora's own rule sends it
        // again on each pooled connection in turn (up to 16 times), so a request that makes
        // the upstream close its connection ("query of death") would be multiplied.
        if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
            || ctx.replayed_on_fresh
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
            if e.retry() {
                ctx.replayed_on_fresh = true;
                ctx.needs_fresh_connection = true;
                if let Some(upstream) = ctx.route.as_ref().and_then(|r| r.upstream()) {
                    self.metrics
                        .upstream_retry(&upstream.name, RetryReason::StaleConnection.label());
                }
            }
        }
        e
    }

    /// A failure becomes its answer: the route's fallback for 502/503/504, else problem+json
    /// ([`problem_for`]).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut BoxedCtx,
    ) -> FailToProxy {
        let mut problem = problem_for(e);
        problem.rate_limit = ctx.rate_limit.clone();
        problem.cache_status = self.failed_cache_status(session, ctx);
        // A malformed body Pingora's reader refused (a bad chunk size): a refusal like the
        // framing checks', counted and logged with their reason.
        if problem.status == 400
            && e.esource() == &pingora::ErrorSource::Downstream
            && GatewayError::of(e).is_none()
        {
            self.reject(ctx, Rejection::BadRequest);
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
            let answer = match fallback {
                Some((route, fallback)) => {
                    self.metrics.fallback_response(&route);
                    Answer::Fallback(fallback, problem.cache_status)
                }
                None => Answer::Problem(problem),
            };
            status = answer.status();
            ctx.answered_failure = true;
            if let Err(write_err) = answer.write(session, ctx.request_id.text()).await {
                tracing::debug!(request_id = %ctx.request_id.text(), "could not send error response: {write_err}");
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
    ///
    /// Pingora's line quotes the error whole, which may hold what the upstream sent (its
    /// response head, escaped, hundreds of bytes of garbage): the line written is Tollgate's,
    /// with a short escaped prefix of it.
    fn suppress_error_log(&self, session: &Session, ctx: &BoxedCtx, error: &Error) -> bool {
        let kind = error.etype().as_str();
        if self.error_log.allow(kind) {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
            tracing::error!(
                target: "pingora_proxy",
                request_id = %ctx.request_id.text(),
                route = ctx.route_name(),
                "Fail to proxy: {}, status: {status}",
                bounded(error, 200)
            );
        } else {
            self.metrics.log_suppressed(kind);
        }
        true
    }

    /// Pingora's warning for a failed attempt that is retried (or a downstream error ignored
    /// while a cache fills), written as Tollgate's bounded line, one per error type per second.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &BoxedCtx,
        error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        let kind = error.etype().as_str();
        if self.warn_log.allow(kind) {
            tracing::warn!(
                target: "pingora_proxy",
                request_id = %ctx.request_id.text(),
                route = ctx.route_name(),
                "proxy attempt failed: {}",
                bounded(error, 200)
            );
        } else {
            self.metrics.log_suppressed(kind);
        }
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut BoxedCtx) {
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
            (None, Some(_)) if client_gone => UpstreamOutcome::ClientClosed,
            (None, Some(e)) => failure_outcome(e),
            (None, None) => UpstreamOutcome::Error,
        };
        self.finish_attempt(ctx, attempt_outcome);
        // The cache's background refresh of a stale entry (stale-while-revalidate): its upstream
        // attempt is counted above, but it is no client's request, so it is not in the request
        // metrics, the cache's results or the access log (as nginx does not log subrequests).
        if session.subrequest_ctx.is_some() {
            return;
        }
        self.note_truncation(session, e, ctx);
        let elapsed = ctx.started.elapsed();
        // A WebSocket's latency is its handshake's; the session's length is in the access log
        // only, or every open session would read as a slow request on dashboards and alerts.
        let latency = ctx.switched_at.map_or(elapsed, |at| at - ctx.started);
        let req = session.req_header();
        let route_metrics = ctx.route.as_ref().map(|r| &r.metrics);
        self.metrics.request(
            ctx.route_name(),
            route_metrics,
            &req.method,
            status,
            latency,
        );
        let cache = self.account_cache(session, ctx);
        let trace_id = self.finish_trace(ctx, status, cache);

        let Some(snapshot) = ctx.snapshot.as_ref() else {
            return;
        };
        if !snapshot.log.access {
            return;
        }
        let route = ctx.route.as_ref();
        let upstream = route.and_then(|r| r.upstream());
        let target = upstream.and_then(|u| ctx.tried.last().and_then(|&i| u.targets.get(i)));
        let record = AccessRecord {
            time: SystemTime::now(),
            request_id: ctx.request_id.text(),
            client: ctx.client,
            method: req.method.as_str(),
            path: ctx.refusal.as_ref().map_or(req.uri.path(), |r| &r.path),
            reason: ctx
                .refusal
                .as_ref()
                .map(|r| r.reason)
                .or(ctx.rejected.map(Rejection::label)),
            route: ctx.route_name(),
            upstream: upstream.map(|u| &*u.name),
            target: target.map(|t| &*t.label),
            status,
            duration: elapsed,
            bytes_in: ctx.bytes_in,
            bytes_out: session.body_bytes_sent() as u64,
            parts: ctx.parts.as_deref(),
            trace_id,
            truncated: ctx.cut.map(response::Cut::label),
            cache,
            attempts: (ctx.attempts > 1).then_some(ctx.attempts),
        };
        if !self.access_log.write(snapshot.log.format, &record) {
            self.metrics.access_log_dropped();
        }
    }
}
