//! Request size and time limits, concurrency limits and response bounds compiled from
//! `[server]` (and a route's `max_body_bytes`, `max_response_bytes`, `response_timeout`), with
//! the defaults that apply when a key is absent. Reloadable: a new connection or request uses
//! the limits of the snapshot that is live when it starts.

use crate::config::ServerConfig;
use crate::ratelimit::gcra::Quota;
use std::time::Duration;

/// Request head (request line + headers) allowed by default: 32 KiB, like `CONFIG.md`'s example
/// and within what mobile clients with a few cookies and a bearer token need (nginx's
/// `large_client_header_buffers` defaults to 4 x 8 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 * 1024;
/// Request body allowed by default: 8 MiB (JSON APIs and photo uploads; bigger uploads belong
/// on a route with its own `max_body_bytes`).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Time for a whole request head to arrive by default: 10 s (nginx: 60 s, which lets a
/// slowloris client hold a connection six times longer).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time for a whole request body to arrive by default: 5 minutes from the request's start
/// (an 8 MiB upload needs 28 KB/s). Pingora's reads only time out when nothing arrives for a
/// while, so without it a body trickled a byte at a time would hold its connections forever.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(300);

/// Requests in flight in the whole gateway by default: a few seconds of a busy instance's
/// traffic, far beyond what its upstreams can take at once; it bounds memory when they stall.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 10_000;
/// Requests in flight per client address by default: two and a half HTTP/2 connections' worth
/// of streams (100 each). A carrier NAT or an office behind one address may need more.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CLIENT: u64 = 256;
/// Open connections per socket peer by default (browsers open 6 per host; a NAT many more).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u64 = 256;
/// New connections per socket peer by default: 100 a second, bursts of 200.
pub const DEFAULT_CONNECTION_RATE: Quota = Quota {
    requests: 100,
    per: Duration::from_secs(1),
    burst: 200,
};
/// Largest response body by default: 1 GiB (an API gateway's answers are far smaller; this
/// stops an upstream that never ends its body).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024 * 1024;
/// Time for a whole response by default: 5 minutes, body included.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// The limits of one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head in bytes; bigger heads are answered 431.
    pub max_header_bytes: u64,
    /// Largest request body in bytes for routes without their own limit; bigger bodies: 413.
    pub max_body_bytes: u64,
    /// Time for a whole request head to arrive; slower heads are answered 408.
    pub client_header_timeout: Duration,
    /// Time for a whole request body to arrive for routes without their own; later: 408.
    pub client_body_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Requests in flight in the whole gateway; more are answered 503.
    pub max_in_flight: u64,
    /// Requests in flight per client address; more are answered 503.
    pub max_in_flight_per_client: u64,
    /// Open connections per socket peer; more are closed at accept.
    pub max_connections_per_client: u64,
    /// New connections per socket peer over time; more are closed at accept.
    pub connection_rate: Quota,
    /// Largest response body for routes without their own limit; past it the client
    /// connection is cut.
    pub max_response_bytes: u64,
    /// Time for a whole response (body included) for routes without their own.
    pub response_timeout: Duration,
}

impl Limits {
    pub fn compile(server: &ServerConfig) -> Limits {
        Limits {
            max_header_bytes: server
                .max_header_bytes
                .map_or(DEFAULT_MAX_HEADER_BYTES, |s| s.bytes()),
            max_body_bytes: server
                .max_body_bytes
                .map_or(DEFAULT_MAX_BODY_BYTES, |s| s.bytes()),
            client_header_timeout: server
                .client_header_timeout
                .map_or(DEFAULT_CLIENT_HEADER_TIMEOUT, |d| d.get()),
            client_body_timeout: server
                .client_body_timeout
                .map_or(DEFAULT_CLIENT_BODY_TIMEOUT, |d| d.get()),
            idle_timeout: server.idle_timeout.get(),
            max_in_flight: server.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            max_in_flight_per_client: server
                .max_in_flight_per_client
                .unwrap_or(DEFAULT_MAX_IN_FLIGHT_PER_CLIENT),
            max_connections_per_client: server
                .max_connections_per_client
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
            connection_rate: server.connection_rate_per_client.map_or(
                DEFAULT_CONNECTION_RATE,
                |r| Quota {
                    requests: r.connections,
                    per: r.per.get(),
                    burst: r.burst.unwrap_or(r.connections),
                },
            ),
            max_response_bytes: server
                .max_response_bytes
                .map_or(DEFAULT_MAX_RESPONSE_BYTES, |s| s.bytes()),
            response_timeout: server
                .response_timeout
                .map_or(DEFAULT_RESPONSE_TIMEOUT, |d| d.get()),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::compile(&ServerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DurationStr, SizeStr};

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let l = Limits::compile(&ServerConfig::default());
        assert_eq!(l.max_header_bytes, 32 * 1024);
        assert_eq!(l.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(l.client_header_timeout, Duration::from_secs(10));
        assert_eq!(l.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(l.connection_rate, DEFAULT_CONNECTION_RATE);
        assert_eq!(l.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(l.client_body_timeout, Duration::from_secs(300));
    }

    #[test]
    fn a_connection_rate_bursts_its_own_count_by_default() {
        let server = ServerConfig {
            connection_rate_per_client: Some(crate::config::ConnectionRateConfig {
                connections: 5,
                per: DurationStr::from_secs(1),
                burst: None,
            }),
            ..ServerConfig::default()
        };
        assert_eq!(Limits::compile(&server).connection_rate.burst, 5);
    }

    #[test]
    fn configured_values_win() {
        let server = ServerConfig {
            max_header_bytes: Some(SizeStr(4096)),
            max_body_bytes: Some(SizeStr(100)),
            client_header_timeout: Some(DurationStr::from_millis(1500)),
            client_body_timeout: Some(DurationStr::from_secs(30)),
            ..ServerConfig::default()
        };
        let l = Limits::compile(&server);
        assert_eq!(l.client_body_timeout, Duration::from_secs(30));
        assert_eq!(l.max_header_bytes, 4096);
        assert_eq!(l.max_body_bytes, 100);
        assert_eq!(l.client_header_timeout, Duration::from_millis(1500));
    }
}
