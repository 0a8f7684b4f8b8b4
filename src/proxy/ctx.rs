//! Per-request state carried across Pingora's hooks.

use super::headers::RequestId;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::Attempt;
use prometheus::IntGauge;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;

/// Counts a request as in flight for as long as its context lives, whatever path it takes out
/// (answered, failed, client gone). Draining on shutdown waits for this to reach zero.
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn new(gauge: &IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request refused before it was routed: its access-log line shows the reason and the path
/// as received (escaped), since there is no normal form of it.
pub struct Refused {
    pub reason: &'static str,
    pub path: String,
}

/// What the request's steps decided, as its span reports it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decided {
    pub auth: Option<&'static str>,
    pub rate_limit: Option<&'static str>,
    pub circuit_open: bool,
}

/// The context as Pingora holds it. Boxed: Pingora keeps the context inside its per-request
/// future, which is built on the stack and copied whole into its box (a `memcpy` of the
/// future's full size for every request); the 1 KB context inline made that copy about 4 KB
/// bigger (benches/README.md, "The plain route against bare Pingora").
pub type BoxedCtx = Box<RequestCtx>;

/// State of one request.
pub struct RequestCtx {
    pub started: Instant,
    pub request_id: RequestId,
    /// The config this request uses from start to end, even if a reload happens meanwhile.
    pub snapshot: Option<Arc<Snapshot>>,
    pub route: Option<Arc<Route>>,
    /// `RateLimit-Policy` and `RateLimit` for the response, on a rate-limited route.
    pub rate_limit: Option<crate::problem::RateLimitFields>,
    /// The client's address: the socket peer, or what a trusted proxy forwarded.
    pub client: Option<std::net::IpAddr>,
    /// Who the route's auth policy found the caller to be.
    pub identity: Option<crate::auth::Identity>,
    /// Path and query to send upstream when the route rewrites.
    pub upstream_target: Option<Vec<u8>>,
    /// Why the gateway refused the request as malformed, for its access-log line.
    pub refusal: Option<Refused>,
    /// Why the gateway answered a routed request with a refusal of its own (the client's
    /// body stalled), for its access-log line; the path logged stays the normal one.
    pub rejected: Option<crate::observe::Rejection>,
    /// When the route's total deadline passes.
    pub deadline: Option<Instant>,
    /// When a request body still arriving gets 408: the route's `client_body_timeout` (or the
    /// server's) after the start, or the route's deadline if sooner.
    pub body_deadline: Option<Instant>,
    /// Target indexes tried by this request, in order (the last is the current or final one),
    /// so another attempt picks a different one. Inline: most requests make one attempt.
    pub tried: SmallVec<[usize; 4]>,
    /// Attempts started so far (the first one included).
    pub attempts: u32,
    /// The upstream attempt in flight, if any.
    pub attempt: Option<Attempt>,
    /// Status the upstream answered with, if it answered.
    pub upstream_status: Option<u16>,
    /// Request body bytes received from the client (a retry replays them: counted once).
    pub bytes_in: u64,
    /// When the upstream's 101 switched the connection (a WebSocket): the request's latency
    /// ends there, the session goes on.
    pub switched_at: Option<Instant>,
    /// The request was sent again after a pooled connection failed it (at most once).
    pub replayed_on_fresh: bool,
    /// The next attempt must make a new connection rather than take a pooled one.
    pub needs_fresh_connection: bool,
    /// What the request's framing headers declare about its body (read by the framing check).
    pub declared: super::framing::Declared,
    /// Largest request body this request may send (its route's `max_body_bytes`).
    pub body_limit: u64,
    /// The gateway stopped reading the client's body (over `body_limit`: 413; still coming
    /// past `body_deadline`: 408): the request is never retried, and the target is not
    /// blamed.
    pub body_refused: bool,
    /// The route's response cache, as this request uses it.
    pub cache: Option<crate::cache::CacheUse>,
    /// The route's path parameters, decoded (aggregate routes only).
    pub params: Vec<(String, String)>,
    /// An aggregate route's parts as the access log shows them.
    pub parts: Option<String>,
    /// The request's span (`[tracing]` on).
    pub trace: Option<crate::trace::RequestTrace>,
    /// The span of the upstream attempt in flight.
    pub attempt_trace: Option<crate::trace::AttemptTrace>,
    /// What the steps decided, for the request's span: auth (`allowed` or the denial),
    /// rate limit (`allowed` or `limited`), no target for open circuits.
    pub decided: Decided,
    /// The request's places among the requests in flight (limits.rs), held until it ends or
    /// its connection switches protocols (an open WebSocket is not a request in flight).
    pub admitted: Option<super::limits::Admitted>,
    /// Response body bytes passed to the client so far (response.rs).
    pub bytes_sent: u64,
    /// Why the response was cut short after its head went out, if it was.
    pub cut: Option<super::response::Cut>,
    /// The gateway answered a failed request itself (a problem or the route's fallback, in
    /// `fail_to_proxy`): that answer was whole, whatever error led to it.
    pub answered_failure: bool,
    _in_flight: InFlight,
}

impl RequestCtx {
    pub fn new(in_flight: InFlight) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: RequestId::default(),
            snapshot: None,
            route: None,
            rate_limit: None,
            client: None,
            identity: None,
            upstream_target: None,
            refusal: None,
            rejected: None,
            deadline: None,
            body_deadline: None,
            tried: SmallVec::new(),
            attempts: 0,
            attempt: None,
            upstream_status: None,
            bytes_in: 0,
            switched_at: None,
            replayed_on_fresh: false,
            needs_fresh_connection: false,
            declared: Default::default(),
            body_limit: u64::MAX,
            body_refused: false,
            cache: None,
            params: Vec::new(),
            parts: None,
            trace: None,
            attempt_trace: None,
            decided: Decided::default(),
            admitted: None,
            bytes_sent: 0,
            cut: None,
            answered_failure: false,
            _in_flight: in_flight,
        }
    }

    pub fn route_name(&self) -> &str {
        self.route.as_ref().map(|r| &*r.name).unwrap_or("none")
    }
}
