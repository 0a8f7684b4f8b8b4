//! What went wrong for a request, as a type: raised where it happens (the edge guard, a request
//! step, target selection, the body filter), carried through Pingora as the cause of its error,
//! and turned into the answer in one place ([`Problem::from`]). The data the answer needs
//! (`Retry-After`, the refusal's reason) travels inside the error, not beside it.

use crate::observe::Rejection;
use crate::request_target::Refusal;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// 400: a request the gateway refuses to route (framing, target, host, path). `reason`
    /// is its `tollgate_rejected_requests_total` label.
    #[error("{detail}")]
    BadRequest {
        reason: Rejection,
        detail: &'static str,
    },
    /// 408: the request head did not arrive in time.
    #[error("the request head was not received in time")]
    HeadTimeout,
    /// 408: the client stopped sending its request body: the upstream waited for the rest of
    /// it until a read timeout (or the route's deadline) ended the attempt.
    #[error("the request body was not received in time")]
    BodyTimeout,
    /// 405: a `CONNECT` request; the gateway does not tunnel.
    #[error("CONNECT is not supported")]
    Connect,
    /// 413: the body is over the route's `max_body_bytes` (declared or counted).
    #[error("the request body is larger than this route accepts")]
    BodyTooLarge,
    /// 431: the request head is over `server.max_header_bytes`.
    #[error("the request head (request line and headers) is larger than this gateway accepts")]
    HeadTooLarge,
    /// 400: the route's `rewrite` made a target that cannot be sent.
    #[error("the route's rewrite produced a target that cannot be sent")]
    BadRewrite,
    /// 503: no target is healthy and admitted by its circuit breaker. `retry_after`: when
    /// the first open circuit of a healthy target lets probes through.
    #[error("no usable upstream target")]
    NoUsableTarget { retry_after: Option<Duration> },
    /// 503: a concurrency limit (`reason`: the gateway's, the client's, the HTTP/2
    /// connection's) is reached; the client may retry in a moment.
    #[error("too many requests in flight")]
    Overloaded { reason: Rejection },
    /// 504: the route's deadline passed before the upstream answered.
    #[error("the route's deadline passed")]
    DeadlinePassed,
    /// The upstream answered 502, 503 or 504 and the request is tried again elsewhere; the
    /// client sees it only if no attempt is left to make (then as 502).
    #[error("the upstream answered {0}")]
    UpstreamStatus(u16),
    /// 502 (504 when it timed out or the deadline passed): a required part of an aggregate
    /// route failed, so no partial answer is given.
    #[error("the required part {part} failed")]
    PartFailed {
        part: std::sync::Arc<str>,
        timed_out: bool,
    },
    /// 400: a required part's template needs a value the request does not carry (a query
    /// parameter, a header, a claim).
    #[error("the required part {part} lacks a template value")]
    PartInputMissing { part: std::sync::Arc<str> },
    /// 500: a state the gateway should never be in.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<Refusal> for GatewayError {
    /// A request target the gateway refuses (see `request_target`), with its counter label.
    fn from(refusal: Refusal) -> GatewayError {
        let reason = match refusal {
            Refusal::BadTarget(_) => Rejection::BadTarget,
            Refusal::BadPath(_) => Rejection::BadPath,
            Refusal::MissingHost => Rejection::MissingHost,
            Refusal::BadHost => Rejection::BadHost,
        };
        GatewayError::BadRequest {
            reason,
            detail: refusal.detail(),
        }
    }
}

impl GatewayError {
    /// The status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest { .. } | GatewayError::BadRewrite => 400,
            GatewayError::HeadTimeout | GatewayError::BodyTimeout => 408,
            GatewayError::Connect => 405,
            GatewayError::BodyTooLarge => 413,
            GatewayError::HeadTooLarge => 431,
            GatewayError::NoUsableTarget { .. } | GatewayError::Overloaded { .. } => 503,
            GatewayError::DeadlinePassed => 504,
            GatewayError::UpstreamStatus(_) => 502,
            GatewayError::PartFailed { timed_out, .. } => {
                if *timed_out {
                    504
                } else {
                    502
                }
            }
            GatewayError::PartInputMissing { .. } => 400,
            GatewayError::Internal(_) => 500,
        }
    }

    /// The `tollgate_rejected_requests_total` reason of a refusal (`None`: not a refusal).
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            GatewayError::BadRequest { reason, .. } => Some(*reason),
            GatewayError::HeadTimeout => Some(Rejection::HeaderTimeout),
            GatewayError::BodyTimeout => Some(Rejection::BodyTimeout),
            GatewayError::Connect => Some(Rejection::ConnectMethod),
            GatewayError::BodyTooLarge => Some(Rejection::BodyTooLarge),
            GatewayError::HeadTooLarge => Some(Rejection::HeaderTooLarge),
            GatewayError::Overloaded { reason } => Some(*reason),
            _ => None,
        }
    }

    /// As a Pingora error (an `HTTPStatus` with this as its cause), for a hook to return.
    pub fn into_pingora(self) -> Box<pingora::Error> {
        let etype = pingora::ErrorType::HTTPStatus(self.status());
        pingora::Error::because(etype, "tollgate", self)
    }

    /// The gateway's own error inside a Pingora error, if it is one.
    pub fn of(e: &pingora::Error) -> Option<&GatewayError> {
        e.root_cause().downcast_ref::<GatewayError>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_the_trip_through_pingora() {
        let e = GatewayError::NoUsableTarget {
            retry_after: Some(Duration::from_secs(3)),
        }
        .into_pingora()
        .more_context("peer: 127.0.0.1:1");
        assert_eq!(
            GatewayError::of(&e),
            Some(&GatewayError::NoUsableTarget {
                retry_after: Some(Duration::from_secs(3))
            })
        );
        assert_eq!(e.etype(), &pingora::ErrorType::HTTPStatus(503));
        let wrapped = pingora::Error::because(pingora::ErrorType::InternalError, "outer", e);
        assert!(matches!(
            GatewayError::of(&wrapped),
            Some(GatewayError::NoUsableTarget { .. })
        ));
        let foreign = pingora::Error::new(pingora::ErrorType::ConnectRefused);
        assert_eq!(GatewayError::of(&foreign), None);
    }
}
