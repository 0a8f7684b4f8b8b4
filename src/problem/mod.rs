//! The gateway's own answers: RFC 9457 `application/problem+json` bodies, and the typed errors
//! ([`GatewayError`]) that lead to them. Used by the proxy (through a session) and by the edge
//! guard (raw HTTP/1 bytes before a session exists); depends on neither. Bodies never echo
//! request content.

mod error;

pub use error::GatewayError;

use crate::observe::Rejection;
use bytes::Bytes;
use serde::Serialize;
use std::borrow::Cow;

/// The methods the gateway's routes may take (`Allow` of `OPTIONS *` and of a refused
/// `CONNECT`).
pub const SERVER_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A response the gateway makes on its own.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    pub detail: Cow<'static, str>,
    /// `Allow` header value for a 405.
    pub allow: Option<String>,
    /// `Retry-After` seconds for a 503 while circuits are open.
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` challenge for a 401 or 403.
    pub challenge: Option<String>,
    /// `RateLimit-Policy` and `RateLimit` of a rate-limited route.
    pub rate_limit: Option<RateLimitFields>,
    /// `Cache-Status` when the cache took part in the request (a cached route's upstream
    /// failed and no stale entry could stand in).
    pub cache_status: Option<String>,
}

/// The two rate limit fields of a response on a limited route: the route's policy list and the
/// request's bucket states.
pub type RateLimitFields = (http::HeaderValue, String);

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

impl Problem {
    pub fn new(status: u16, detail: &'static str) -> Problem {
        Problem::with_detail(status, Cow::Borrowed(detail))
    }

    /// A problem whose detail is made for this request (it names a part of an aggregate).
    pub fn with_detail(status: u16, detail: Cow<'static, str>) -> Problem {
        Problem {
            status,
            detail,
            allow: None,
            retry_after: None,
            challenge: None,
            rate_limit: None,
            cache_status: None,
        }
    }

    /// 429: a rate limit of the route refused the request.
    pub fn too_many_requests(retry_after: std::time::Duration, fields: RateLimitFields) -> Problem {
        Problem {
            // Whole seconds, rounded up, at least one: earlier would be refused again.
            retry_after: Some(crate::ratelimit::headers::ceil_secs(retry_after).max(1)),
            rate_limit: Some(fields),
            ..Problem::new(
                429,
                "a rate limit of this route is exhausted; retry after the time in Retry-After",
            )
        }
    }

    /// 401 (no or bad credentials) or 403 (missing scope), with the policy's challenge.
    pub fn auth_denied(denial: crate::auth::Denial, challenge: String) -> Problem {
        let problem = match denial {
            crate::auth::Denial::InsufficientScope => {
                Problem::new(403, "the credentials lack a scope this route requires")
            }
            _ => Problem::new(401, "this route requires valid credentials"),
        };
        Problem {
            challenge: Some(challenge),
            ..problem
        }
    }

    pub fn not_found() -> Problem {
        Problem::new(404, "no route matches this request")
    }

    pub fn body_too_large() -> Problem {
        Problem::new(413, "the request body is larger than this route accepts")
    }

    pub fn method_not_allowed(allow: &str) -> Problem {
        Problem {
            allow: Some(allow.to_string()),
            ..Problem::new(
                405,
                "the route does not accept this method; see the Allow header",
            )
        }
    }

    /// Serialises the body. The request id lets a user quote the failure to an operator.
    pub fn body(&self, request_id: &str) -> Bytes {
        let title = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let body = Body {
            kind: "about:blank",
            title,
            status: self.status,
            detail: &self.detail,
            request_id,
        };
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// The whole response as HTTP/1.1 bytes, for answers written straight to a connection
    /// before Pingora has a request (a request head too large or too slow, or one Pingora's
    /// parser refused). The connection is closed afterwards, and says so.
    pub fn http1_response(&self, request_id: &str) -> Vec<u8> {
        let body = self.body(request_id);
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let allow = match &self.allow {
            Some(methods) => format!("allow: {methods}\r\n"),
            None => String::new(),
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\ncache-control: no-store\r\n{allow}connection: close\r\n\r\n",
            self.status,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

impl From<&GatewayError> for Problem {
    /// The one mapping from a gateway error to its answer.
    fn from(e: &GatewayError) -> Problem {
        match e {
            GatewayError::BadRequest { detail, .. } => Problem::new(400, detail),
            GatewayError::HeadTimeout => {
                Problem::new(408, "the request head was not received in time")
            }
            GatewayError::BodyTimeout => {
                Problem::new(408, "the request body was not received in time")
            }
            GatewayError::Connect => Problem {
                allow: Some(SERVER_METHODS.to_string()),
                ..Problem::new(405, "CONNECT is not supported: the gateway does not tunnel")
            },
            GatewayError::BodyTooLarge => Problem::body_too_large(),
            GatewayError::HeadTooLarge => Problem::new(
                431,
                "the request head (request line and headers) is larger than this gateway accepts",
            ),
            GatewayError::BadRewrite => Problem::new(
                400,
                "the route's rewrite produced a target that cannot be sent upstream",
            ),
            GatewayError::NoUsableTarget { retry_after } => Problem {
                // Whole seconds, rounded up: a client retrying earlier would find the circuit open.
                retry_after: retry_after.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                ..Problem::new(503, "no healthy upstream target can take the request")
            },
            GatewayError::Overloaded { reason } => Problem {
                // Slots free up as requests finish: a second is long for a request, short
                // for a client to wait.
                retry_after: Some(1),
                ..Problem::new(
                    503,
                    match reason {
                        Rejection::ClientInFlight => {
                            "too many requests from this client are in flight; retry later"
                        }
                        Rejection::ConnectionInFlight => {
                            "too many requests on this connection are in flight; retry later"
                        }
                        _ => "the gateway has too many requests in flight; retry later",
                    },
                )
            },
            GatewayError::DeadlinePassed => Problem::new(
                504,
                "the route's deadline passed before the upstream answered",
            ),
            GatewayError::UpstreamStatus(_) => Problem::new(
                502,
                "the upstream answered with an error and no other attempt could be made",
            ),
            GatewayError::PartFailed { part, timed_out } => Problem::with_detail(
                if *timed_out { 504 } else { 502 },
                Cow::Owned(format!(
                    "the required part \"{part}\" of this answer {}",
                    if *timed_out {
                        "did not answer in time"
                    } else {
                        "failed"
                    }
                )),
            ),
            GatewayError::PartInputMissing { part } => Problem::with_detail(
                400,
                Cow::Owned(format!(
                    "the request lacks a value the required part \"{part}\" needs"
                )),
            ),
            GatewayError::Internal(_) => Problem::new(500, "internal error"),
        }
    }
}
