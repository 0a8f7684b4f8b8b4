//! The gateway proper: Pingora's `ProxyHttp` implemented over the current config snapshot.
//!
//! Request path, hook by hook:
//! - `early_request_filter`: take the request id, pin the config snapshot, apply keep-alive;
//! - `request_filter`: refuse unsafe paths, match the route (404 / 405 answered here), rewrite,
//!   start the route's deadline;
//! - `upstream_peer`: pick a target (balancing) with timeouts cut to the deadline;
//! - `upstream_request_filter` / `upstream_response_filter`: forwarded and hop-by-hop headers;
//! - `fail_to_connect` / `error_while_proxy`: account the failed attempt;
//! - `fail_to_proxy`: the single place an error becomes a problem+json response;
//! - `logging`: metrics and the access log, for every request however it ended.

mod ctx;
mod headers;
mod problem;

pub use ctx::{InFlight, RequestCtx};
pub use problem::{problem_for, Problem};

use crate::observe::{AccessLog, AccessRecord, Metrics, UpstreamOutcome};
use crate::snapshot::Store;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::route::Lookup;

/// Pooled upstream connections idle longer than this are closed rather than reused: upstream
/// servers commonly close idle keep-alive connections after 60 s or more, so reuse stays safe.
const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(55);

/// The proxy service logic of one Tollgate instance.
pub struct Gateway {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
}

impl Gateway {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, access_log: Arc<AccessLog>) -> Gateway {
        Gateway {
            store,
            metrics,
            access_log,
        }
    }

    /// Ends the current upstream attempt, if one is open, and counts it.
    fn finish_attempt(&self, ctx: &mut RequestCtx, outcome: UpstreamOutcome) {
        let (Some(started), Some(route), Some(idx)) =
            (ctx.attempt_started.take(), ctx.route.as_ref(), ctx.target)
        else {
            return;
        };
        if let Some(target) = route.upstream.targets.get(idx) {
            self.metrics.upstream_attempt(
                &route.upstream.name,
                &target.label,
                outcome,
                started.elapsed(),
            );
        }
    }
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

/// True when a path has `.` or `..` segments (also percent-encoded): upstreams would resolve them
/// after the gateway matched the route, letting `/public/../admin` escape its route.
fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase();
        let decoded = lower.replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
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
        ctx.request_id = headers::request_id(
            session
                .req_header()
                .headers
                .get(headers::REQUEST_ID)
                .map(|v| v.as_bytes()),
        );
        let snapshot = self.store.snapshot();
        // Only shorten keep-alive where it is on: HTTP/1.0 without keep-alive stays off.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(snapshot.server.idle_timeout.get().as_secs().max(1)));
        }
        ctx.snapshot = Some(snapshot);
        Ok(())
    }

    /// `Ok(true)`: the gateway answered itself (404, 405, 400); `Ok(false)`: proxy to the route's
    /// upstream.
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
        let req = session.req_header();
        let path = req.uri.path();
        if has_dot_segments(path) {
            Problem::new(400, "the path contains '.' or '..' segments")
                .write(session, &ctx.request_id)
                .await?;
            return Ok(true);
        }
        let host = req.uri.authority().map(|a| a.as_str()).or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        match snapshot.routes.lookup(host, path, &req.method) {
            Lookup::Found { route, params, .. } => {
                if let Some(rw) = &route.rewrite {
                    ctx.upstream_uri = Some(rw.apply(|name| params.get(name), req.uri.query()));
                }
                ctx.deadline = route.timeout.map(|t| ctx.started + t);
                ctx.route = Some(route.clone());
                Ok(false)
            }
            Lookup::MethodNotAllowed { allow } => {
                Problem::method_not_allowed(allow)
                    .write(session, &ctx.request_id)
                    .await?;
                Ok(true)
            }
            Lookup::NotFound => {
                Problem::not_found().write(session, &ctx.request_id).await?;
                Ok(true)
            }
        }
    }

    /// Picks the target. Errors: 504 when the route deadline already passed, 502 when no target
    /// is left to try.
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
        let Some(idx) = upstream.select(client_ip(session), &ctx.tried) else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(502),
                "no upstream target left to try",
            ));
        };
        ctx.tried.push(idx);
        ctx.target = Some(idx);
        ctx.attempt_started = Some(Instant::now());
        let target = &upstream.targets[idx];
        let cap = |d: Duration| remaining.map_or(d, |r| d.min(r));
        let mut peer = HttpPeer::new(target.addr, false, String::new());
        peer.options.connection_timeout = Some(cap(upstream.connect_timeout));
        peer.options.read_timeout = Some(cap(upstream.read_timeout));
        peer.options.write_timeout = Some(cap(upstream.read_timeout));
        peer.options.idle_timeout = Some(UPSTREAM_POOL_IDLE);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(uri) = &ctx.upstream_uri {
            let uri: http::Uri = uri.parse().map_err(|_| {
                Error::explain(
                    ErrorType::HTTPStatus(400),
                    "rewritten path is not a valid URI",
                )
            })?;
            upstream_request.set_uri(uri);
        }
        let ip = client_ip(session).map(|ip| ip.to_string());
        headers::prepare_upstream_request(upstream_request, ip.as_deref(), "http", &ctx.request_id)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(b) = body {
            ctx.bytes_in += b.len() as u64;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if !upstream_response.status.is_informational() {
            ctx.upstream_status = Some(upstream_response.status.as_u16());
        }
        headers::prepare_client_response(upstream_response, &ctx.request_id)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.finish_attempt(ctx, outcome_of(&e));
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
        if e.esource() == &pingora::ErrorSource::Upstream {
            self.finish_attempt(ctx, outcome_of(&e));
        }
        // Same policy as Pingora's default: never retry non-idempotent requests or requests whose
        // body no longer fits the retry buffer; otherwise retry only a stale reused connection.
        let mut e = e.more_context(format!("peer: {peer}"));
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
        let problem = problem_for(e);
        if problem.status > 0 && session.response_written().is_none() {
            // The connection is not reused after an error (below, and Pingora closes it after a
            // failed upstream attempt anyway): say so with `Connection: close`, or a keep-alive
            // client sends its next request on a connection about to close and that fails.
            session.set_keepalive(None);
            if let Err(write_err) = problem.write(session, &ctx.request_id).await {
                tracing::debug!(request_id = %ctx.request_id, "could not send error response: {write_err}");
            }
        }
        FailToProxy {
            error_code: problem.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let attempt_outcome = match (ctx.upstream_status, e) {
            (Some(s), _) => UpstreamOutcome::Response(s),
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
            request_id: &ctx.request_id,
            client: client_ip(session).map(|ip| ip.to_string()),
            method: req.method.as_str(),
            path: req.uri.path(),
            route: ctx.route_name(),
            upstream: route.map(|r| &*r.upstream.name),
            target: target.map(|t| &*t.label),
            status,
            duration_ms: elapsed,
            bytes_in: ctx.bytes_in,
            bytes_out: session.body_bytes_sent() as u64,
        };
        if !self.access_log.write(snapshot.log.format, &record) {
            self.metrics.access_log_dropped();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_detected() {
        assert!(has_dot_segments("/a/../b"));
        assert!(has_dot_segments("/a/%2e%2E/b"));
        assert!(has_dot_segments("/a/."));
        assert!(!has_dot_segments("/a/..b/c.d"));
        assert!(!has_dot_segments("/"));
    }
}
