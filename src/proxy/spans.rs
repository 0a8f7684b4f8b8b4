//! The request's trace in the proxy hooks (`[tracing]` on): its span starts with the request,
//! each upstream attempt gets a child span whose context the upstream receives in
//! `traceparent`, and the request's span ends in `logging` with what the gateway decided.
//! With tracing off every function here returns at its first check.

use super::{Gateway, RequestCtx};
use crate::observe::UpstreamOutcome;
use crate::snapshot::Snapshot;
use crate::upstream::Upstream;
use pingora::proxy::Session;

impl Gateway {
    /// `early_request_filter`: the request's span, continuing the client's trace context.
    pub(super) fn start_trace(&self, session: &Session, ctx: &mut RequestCtx, snapshot: &Snapshot) {
        if let Some(tracing) = &snapshot.tracing {
            let req = session.req_header();
            ctx.trace =
                Some(tracing.request(&req.headers, &req.method, req.uri.path(), ctx.client));
        }
    }

    /// `logging`: ends the request's span. Returns the trace id for the access log.
    pub(super) fn finish_trace(
        &self,
        ctx: &mut RequestCtx,
        status: u16,
        cache: Option<&'static str>,
    ) -> Option<u128> {
        let trace = ctx.trace.take()?;
        let id = trace.trace_id();
        trace.finish(&crate::trace::Decisions {
            route: ctx.route.as_ref().map(|r| (&*r.name, r.path.as_str())),
            status,
            auth: ctx.decided.auth,
            rate_limit: ctx.decided.rate_limit,
            cache,
            circuit_open: ctx.decided.circuit_open,
        });
        Some(id)
    }
}

/// `upstream_peer`: the span of the attempt just picked.
pub(super) fn start_attempt(
    ctx: &mut RequestCtx,
    upstream: &Upstream,
    index: usize,
    method: &http::Method,
) {
    if let Some(trace) = &ctx.trace {
        let target = &upstream.targets[index].label;
        let resend = ctx.attempts.saturating_sub(1);
        ctx.attempt_trace = Some(trace.attempt(method, &upstream.name, target, resend, None));
    }
}

/// `upstream_request_filter`: `traceparent` (and `tracestate`) naming the attempt's span.
pub(super) fn trace_headers(ctx: &RequestCtx) -> Option<crate::trace::TraceHeaders> {
    ctx.attempt_trace.as_ref()?.headers()
}

/// When an attempt ends: its span ends with the outcome.
pub(super) fn finish_attempt(ctx: &mut RequestCtx, outcome: UpstreamOutcome) {
    if let Some(attempt) = ctx.attempt_trace.take() {
        attempt.finish(outcome);
    }
}
