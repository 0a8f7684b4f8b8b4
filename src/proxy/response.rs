//! Bounds on a response once its head went out: `max_response_bytes` (body bytes sent to the
//! client) and `response_timeout` (the whole response, from the request's start to the body's
//! end), per route with defaults in `[server]`. Past one, the response is cut: the body stops,
//! the client connection is closed (HTTP/1) or the stream reset (HTTP/2), and the cut is
//! counted (`tollgate_responses_cut_total`) and shown in the access log (`truncated`).
//!
//! The route's `timeout` covers only the wait for the response head; an upstream sending an
//! endless body was streamed to the client without end. The timeout is checked as body chunks
//! pass; an upstream that stops sending altogether is caught by its read timeout, which
//! `upstream_peer` caps to the time the response has left. Upgraded connections (WebSocket)
//! are conversations, not responses: neither bound applies to them.

use super::ctx::RequestCtx;
use super::Gateway;
use crate::observe::bounded;
use bytes::Bytes;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use std::time::{Duration, Instant};

/// Why a response was cut (`reason` of `tollgate_responses_cut_total`, `truncated` in the
/// access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    TooLarge,
    Timeout,
    /// The upstream's body ended early or failed after the head was sent.
    Upstream,
}

impl Cut {
    pub fn label(self) -> &'static str {
        match self {
            Cut::TooLarge => "too_large",
            Cut::Timeout => "timeout",
            Cut::Upstream => "upstream",
        }
    }
}

impl RequestCtx {
    /// When this request's whole response must be done (its route's `response_timeout` from
    /// the request's start); `None` before a route is found.
    pub fn response_deadline(&self) -> Option<Instant> {
        self.route
            .as_ref()
            .map(|r| self.started + r.response_timeout)
    }
}

/// The read timeout for an attempt: no longer than the response has left (at least 1 ms, so
/// a passed deadline fails the read rather than disabling the timeout).
pub fn cap_read_timeout(current: Option<Duration>, deadline: Option<Instant>) -> Option<Duration> {
    let Some(deadline) = deadline else {
        return current;
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    Some(current.map_or(left, |t| t.min(left)))
}

impl Gateway {
    /// Counts the body bytes going to the client and cuts the response past a bound.
    pub(super) fn bound_response_body(
        &self,
        body: &mut Option<Bytes>,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Ok(());
        };
        if let Some(chunk) = body {
            ctx.bytes_sent += chunk.len() as u64;
        }
        let cut = if ctx.bytes_sent > route.max_response_bytes {
            Cut::TooLarge
        } else if Instant::now() >= ctx.started + route.response_timeout {
            Cut::Timeout
        } else {
            return Ok(());
        };
        // Nothing more of this body goes out; the error ends the response without its end,
        // so the client cannot take it for complete.
        *body = None;
        self.cut_response(ctx, cut);
        Error::e_explain(
            ErrorType::Custom("ResponseCut"),
            format!(
                "response cut ({}): {} body bytes in {:?}",
                cut.label(),
                ctx.bytes_sent,
                ctx.started.elapsed()
            ),
        )
    }

    /// Records a cut response (once).
    pub(super) fn cut_response(&self, ctx: &mut RequestCtx, cut: Cut) {
        if ctx.cut.is_none() {
            ctx.cut = Some(cut);
            self.metrics.abuse.cut(ctx.route_name(), cut.label());
        }
    }

    /// After the request: a response that failed once its head was out is a truncated
    /// response; a failure on the upstream's side is counted as cut by the upstream.
    pub(super) fn note_truncation(
        &self,
        session: &Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        let Some(e) = e else { return };
        if session.response_written().is_none()
            || ctx.answered_failure
            || ctx.cut.is_some()
            || session.was_upgraded()
        {
            return;
        }
        if e.esource() == &pingora::ErrorSource::Downstream {
            // The client went away: its own doing, not a truncation to count.
            return;
        }
        // A read that timed out at the response's deadline is the response_timeout's cut.
        let late = ctx
            .response_deadline()
            .is_some_and(|d| Instant::now() + Duration::from_millis(5) >= d);
        let cut = if late && crate::upstream::is_timeout(e) {
            Cut::Timeout
        } else {
            Cut::Upstream
        };
        self.cut_response(ctx, cut);
        tracing::debug!(
            request_id = %ctx.request_id.text(),
            error = %bounded(e, 160),
            "response cut short after its head was sent"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_timeout_never_outlasts_the_response() {
        let soon = Some(Instant::now() + Duration::from_millis(200));
        let t = cap_read_timeout(Some(Duration::from_secs(5)), soon).unwrap();
        assert!(t <= Duration::from_millis(200));
        assert_eq!(
            cap_read_timeout(Some(Duration::from_millis(50)), soon),
            Some(Duration::from_millis(50))
        );
        assert!(cap_read_timeout(None, soon).is_some());
        assert_eq!(cap_read_timeout(None, None), None);
        let passed = Some(Instant::now() - Duration::from_secs(1));
        assert_eq!(
            cap_read_timeout(None, passed),
            Some(Duration::from_millis(1))
        );
    }
}
