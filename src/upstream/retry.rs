//! Whether a failed upstream attempt is tried again. One rule set for every failure point
//! (connect, after sending, a 502/503/504 answer) and for every caller (a proxied request, an
//! aggregate part), so the conditions cannot drift apart: the route has a `retry` policy with
//! attempts left, the method may be retried, nothing has been sent to the client yet, the
//! request body can be replayed, the deadline has time left, and the upstream's retry budget
//! has room.

use super::Upstream;
use crate::observe::Metrics;
use std::time::{Duration, Instant};

/// A route's `retry` settings, compiled.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts, the first one included.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub methods: Vec<http::Method>,
}

impl RetryPolicy {
    pub fn compile(cfg: &crate::config::RetryConfig) -> RetryPolicy {
        let methods = match &cfg.methods {
            Some(ms) => ms
                .iter()
                .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            // RFC 9110 idempotent methods: repeating them has the same effect as sending once.
            None => vec![
                http::Method::GET,
                http::Method::HEAD,
                http::Method::OPTIONS,
                http::Method::TRACE,
                http::Method::PUT,
                http::Method::DELETE,
            ],
        };
        RetryPolicy {
            attempts: cfg.attempts,
            backoff: cfg.backoff.get(),
            max_backoff: cfg.max_backoff.get(),
            methods,
        }
    }

    pub fn allows(&self, method: &http::Method) -> bool {
        self.methods.contains(method)
    }
}

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
    /// A pooled connection failed before any answer (the upstream may have closed it while
    /// idle): the request goes once more on a new connection, whatever the route's `retry`.
    StaleConnection,
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
            RetryReason::StaleConnection => "stale_connection",
        }
    }

    /// True when the upstream may have acted on the request already.
    fn after_send(self) -> bool {
        !matches!(self, RetryReason::Connect)
    }
}

/// What the caller knows about the request that retry decisions need (gathered by the caller,
/// which keeps this testable without a Pingora session).
pub struct RetryFacts<'a> {
    pub method: &'a http::Method,
    /// Attempts started so far, the failed one included.
    pub attempts: u32,
    /// When the request's (or part's) deadline passes.
    pub deadline: Option<Instant>,
    /// Some response bytes already went to the client.
    pub response_started: bool,
    /// The request body outgrew the retry buffer and cannot be sent again.
    pub body_truncated: bool,
}

impl Upstream {
    /// Decides whether to try again under `policy`, and when the answer is yes takes a retry
    /// from this upstream's budget and counts it.
    pub fn may_retry(
        &self,
        policy: Option<&RetryPolicy>,
        facts: &RetryFacts<'_>,
        reason: RetryReason,
        metrics: &Metrics,
    ) -> bool {
        let Some(policy) = policy else {
            return false;
        };
        let now = Instant::now();
        let allowed = facts.attempts < policy.attempts
            && policy.allows(facts.method)
            // A request that may have reached the upstream is repeated only if repeating it is
            // harmless: never a POST or PATCH after it was sent, whatever the config says.
            && (!reason.after_send() || facts.method.is_idempotent())
            && (!reason.after_send() || !facts.body_truncated)
            && !facts.response_started
            && facts.deadline.is_none_or(|d| now < d);
        if !allowed {
            return false;
        }
        if !self.state.budget.try_acquire_retry(now) {
            metrics.retry_budget_exhausted(&self.name);
            return false;
        }
        metrics.upstream_retry(&self.name, reason.label());
        true
    }
}
