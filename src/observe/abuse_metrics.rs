//! Metrics of the gateway's defences against abusive clients and upstreams: connections
//! refused at accept, requests cancelled while waiting for an upstream, responses cut short,
//! and log lines the log throttle held back. Label values are fixed words (and, for the log,
//! the crate an event came from).

use super::metrics::Builder;
use prometheus::{IntCounterVec, IntGauge};

/// Why a connection was closed at accept (`reason` of `tollgate_rejected_connections_total`).
pub const CONNECTION_REFUSALS: [&str; 2] = ["client_connections", "connection_rate"];
/// Why a request was cancelled before its upstream answered (`reason` of
/// `tollgate_requests_cancelled_total`).
pub const CANCEL_REASONS: [&str; 2] = ["client_gone", "deadline"];
/// Why a response was cut short (`reason` of `tollgate_responses_cut_total`).
pub const CUT_REASONS: [&str; 3] = ["too_large", "timeout", "upstream"];

#[derive(Clone)]
pub struct AbuseMetrics {
    connections_refused: IntCounterVec,
    cancelled: IntCounterVec,
    cut: IntCounterVec,
    /// Connections open from clients that the connection limits count (trusted proxies are not).
    pub client_connections: IntGauge,
}

impl AbuseMetrics {
    pub(super) fn new(b: &Builder) -> AbuseMetrics {
        let connections_refused = b.counters(
            "tollgate_rejected_connections_total",
            "Connections closed at accept, before a byte was read, by reason (client_connections: server.max_connections_per_client; connection_rate: server.connection_rate_per_client).",
            &["reason"],
        );
        let cancelled = b.counters(
            "tollgate_requests_cancelled_total",
            "Requests given up while their upstream connection was being made, by reason (client_gone: the client reset the stream or closed the connection; deadline: the route's timeout passed).",
            &["reason"],
        );
        let cut = b.counters(
            "tollgate_responses_cut_total",
            "Responses cut short after their head was sent, by reason (too_large: max_response_bytes; timeout: response_timeout; upstream: the upstream's body ended early or failed).",
            &["route", "reason"],
        );
        // The fixed labels exist from the start so alerts can rate() them before a first event.
        for r in CONNECTION_REFUSALS {
            connections_refused.with_label_values(&[r]);
        }
        for r in CANCEL_REASONS {
            cancelled.with_label_values(&[r]);
        }
        let client_connections = b.gauge(
            "tollgate_client_connections",
            "Client connections open, as the per-client connection limit counts them (connections from trusted proxies are not counted).",
        );
        AbuseMetrics {
            connections_refused,
            cancelled,
            cut,
            client_connections,
        }
    }

    /// A connection closed at accept; `reason` is one of [`CONNECTION_REFUSALS`].
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// A request given up before its upstream answered; `reason` is one of [`CANCEL_REASONS`].
    pub fn cancelled(&self, reason: &'static str) {
        self.cancelled.with_label_values(&[reason]).inc();
    }

    /// A response cut short; `reason` is one of [`CUT_REASONS`].
    pub fn cut(&self, route: &str, reason: &'static str) {
        self.cut.with_label_values(&[route, reason]).inc();
    }
}
