//! Per-request state carried across Pingora's hooks.

use crate::snapshot::{Route, Snapshot};
use prometheus::IntGauge;
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

/// State of one request.
pub struct RequestCtx {
    pub started: Instant,
    pub request_id: String,
    /// The config this request uses from start to end, even if a reload happens meanwhile.
    pub snapshot: Option<Arc<Snapshot>>,
    pub route: Option<Arc<Route>>,
    /// Path and query to send upstream when the route rewrites.
    pub upstream_uri: Option<String>,
    /// When the route's total deadline passes.
    pub deadline: Option<Instant>,
    /// Target indexes already tried by this request, so another attempt picks a different one.
    pub tried: Vec<usize>,
    /// Target of the current attempt and when it began.
    pub target: Option<usize>,
    pub attempt_started: Option<Instant>,
    /// Status the upstream answered with, if it answered.
    pub upstream_status: Option<u16>,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    _in_flight: InFlight,
}

impl RequestCtx {
    pub fn new(in_flight: InFlight) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: String::new(),
            snapshot: None,
            route: None,
            upstream_uri: None,
            deadline: None,
            tried: Vec::new(),
            target: None,
            attempt_started: None,
            upstream_status: None,
            bytes_in: 0,
            _in_flight: in_flight,
        }
    }

    pub fn route_name(&self) -> &str {
        self.route.as_ref().map(|r| &*r.name).unwrap_or("none")
    }
}
