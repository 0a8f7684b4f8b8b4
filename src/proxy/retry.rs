//! Whether a failed upstream attempt is tried again. One rule set for every failure point
//! (connect, after sending, a 502/503/504 answer), so the conditions cannot drift apart:
//! the route has a `retry` policy with attempts left, the method may be retried, nothing has been
//! sent to the client yet, the request body can be replayed, the route deadline has time left,
//! and the upstream's retry budget has room.

use super::RequestCtx;
use crate::observe::Metrics;
use std::time::Instant;

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// Nothing reached the upstream (refused, unreachable, connect timeout).
    Connect,
    /// The request was sent and the upstream did not answer in time.
    Timeout,
    /// The request was sent and the connection failed (reset, closed, malformed answer).
    Error,
    /// The upstream answered 502, 503 or 504.
    Status(u16),
}

impl RetryReason {
    /// Metric label (bounded).
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Error => "error",
            RetryReason::Status(502) => "status_502",
            RetryReason::Status(503) => "status_503",
            RetryReason::Status(_) => "status_504",
        }
    }

    /// True when the upstream may have acted on the request already.
    fn after_send(self) -> bool {
        !matches!(self, RetryReason::Connect)
    }
}

/// What the session tells about the request, gathered by the caller (keeps this testable
/// without a Pingora session).
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    /// Some response bytes already went to the client.
    pub response_started: bool,
    /// The request body outgrew Pingora's retry buffer and cannot be sent again.
    pub body_truncated: bool,
}

/// Decides, and when the answer is yes takes a retry from the upstream's budget and counts it.
pub fn should_retry(
    ctx: &RequestCtx,
    facts: &RequestFacts<'_>,
    reason: RetryReason,
    metrics: &Metrics,
) -> bool {
    let Some(route) = ctx.route.as_ref() else {
        return false;
    };
    let Some(policy) = route.retry.as_ref() else {
        return false;
    };
    let now = Instant::now();
    let allowed = ctx.attempts < policy.attempts
        && policy.allows(facts.method)
        // A request that may have reached the upstream is repeated only if repeating it is
        // harmless: never a POST or PATCH after it was sent, whatever the config says.
        && (!reason.after_send() || facts.method.is_idempotent())
        && (!reason.after_send() || !facts.body_truncated)
        && !facts.response_started
        && ctx.deadline.is_none_or(|d| now < d);
    if !allowed {
        return false;
    }
    let upstream = &route.upstream;
    if !upstream.state.budget.try_acquire_retry(now) {
        metrics.retry_budget_exhausted(&upstream.name);
        return false;
    }
    metrics.upstream_retry(&upstream.name, reason.label());
    true
}
