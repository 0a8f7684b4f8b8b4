//! One attempt on an upstream target, the way every request makes it: [`Upstream::pick`] chooses
//! among the usable targets (healthy, circuit admitting; untried first, backups after
//! primaries) and asks the circuit breaker; the [`Attempt`] counts in the target's requests in
//! flight while it runs and is finished once with its outcome, which goes to the metrics and
//! to the circuit breaker. Needs no Pingora session: a proxied request and an aggregate part
//! pick and account alike.

use super::circuit::{Admission, Ticket};
use super::{AttemptGuard, Upstream};
use crate::observe::UpstreamOutcome;
use pingora::Error;
use std::time::{Duration, Instant};

/// An attempt in flight on one target.
pub struct Attempt {
    /// The target (an index into `Upstream::targets`).
    pub index: usize,
    started: Instant,
    /// Counts the attempt in the target's requests in flight (least-requests balancing).
    _in_flight: AttemptGuard,
    /// The circuit breaker's admission, handed back with the outcome.
    ticket: Ticket,
}

/// No target can take the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoUsableTarget {
    /// When the first open circuit of a healthy target lets probes through; `None` when no
    /// circuit is open (the targets are unhealthy).
    pub retry_after: Option<Duration>,
}

impl Upstream {
    /// Picks the target for the next attempt of a request that already tried `tried`, and has
    /// its circuit breaker admit it (a target whose circuit refuses is skipped for this pick
    /// only). The first attempt of a request (`tried` empty) counts toward the retry budget.
    pub fn pick(
        &self,
        key: &[u8],
        tried: &[usize],
        now: Instant,
    ) -> Result<Attempt, NoUsableTarget> {
        if tried.is_empty() {
            self.state.budget.record_request(now);
        }
        let mut refused: Vec<usize> = Vec::new();
        let (index, ticket) = loop {
            let skip: Vec<usize> = tried.iter().chain(&refused).copied().collect();
            match self.select(key, &skip, now) {
                // Nothing usable, or selection fell back to a target already refused.
                None => return Err(self.no_usable_target(now)),
                Some(idx) if refused.contains(&idx) => return Err(self.no_usable_target(now)),
                Some(idx) => match self.state.targets[idx].admit(now) {
                    Admission::Rejected { .. } => refused.push(idx),
                    admission @ (Admission::Allowed(_) | Admission::Probe(_)) => {
                        break (idx, admission.ticket().unwrap_or_default());
                    }
                },
            }
        };
        Ok(Attempt {
            index,
            started: now,
            _in_flight: self.state.targets[index].start_attempt(),
            ticket,
        })
    }

    /// Every target counts, not only those refused during this pick: selection never offers
    /// a target whose circuit is open, so those are the usual reason nothing is usable.
    fn no_usable_target(&self, now: Instant) -> NoUsableTarget {
        NoUsableTarget {
            retry_after: self
                .state
                .targets
                .iter()
                .filter(|t| t.is_healthy())
                .filter_map(|t| t.retry_after(now))
                .min(),
        }
    }
}

impl Attempt {
    /// Ends the attempt: counted by outcome in the metrics; connect errors, timeouts and 5xx
    /// answers count against the target's circuit breaker, other answers for it. An attempt
    /// the client abandoned (or the gateway cut short) gives the breaker no verdict: it says
    /// nothing about the target (a probe's slot is freed by the breaker's lost-probe backstop).
    pub fn finish(self, upstream: &Upstream, outcome: UpstreamOutcome) {
        let Some(target) = upstream.targets.get(self.index) else {
            return;
        };
        let now = Instant::now();
        if let Some(state) = upstream.state.targets.get(self.index) {
            state.metrics().upstream_attempt(
                state.attempt_metrics(),
                &upstream.name,
                &target.label,
                outcome,
                now - self.started,
            );
            if outcome != UpstreamOutcome::ClientClosed {
                let success = matches!(outcome, UpstreamOutcome::Response(s) if s < 500);
                state.record(self.ticket, success, now);
            }
        }
    }
}

/// How a failed attempt ended, from its error: a timeout, a connect failure, or another error.
pub fn failure_outcome(e: &Error) -> UpstreamOutcome {
    if is_timeout(e) {
        UpstreamOutcome::Timeout
    } else if is_connect_error(e) {
        UpstreamOutcome::ConnectError
    } else {
        UpstreamOutcome::Error
    }
}

/// True when the failure happened while connecting (nothing reached the upstream).
pub fn is_connect_error(e: &Error) -> bool {
    use pingora::ErrorType::*;
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
    use pingora::ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
    ) || crate::problem::GatewayError::of(e) == Some(&crate::problem::GatewayError::DeadlinePassed)
}
