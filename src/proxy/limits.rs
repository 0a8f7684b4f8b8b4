//! Concurrency limits on requests, the pipeline's first step: requests in flight in the whole
//! gateway (`server.max_in_flight`), per client address (`server.max_in_flight_per_client`,
//! the address behind trusted proxies), and per HTTP/2 connection (its stream limit). Over
//! one, the request is answered 503 (problem+json, `Retry-After: 1`) and counted in
//! `tollgate_rejected_requests_total`.
//!
//! Why per connection: h2 frees a stream's slot as soon as the client resets it, while the
//! request it started may still be running here; without this count a client resetting its
//! streams keeps opening new ones and one connection holds far more requests than its limit.
//! A request holds its tickets until its context drops, however it ends, or until its
//! connection switches protocols (a WebSocket: bounded by the connection limits instead).

use super::answer::{respond, Flow};
use super::ctx::RequestCtx;
use super::Gateway;
use crate::counts::{Counts, Ticket, Total, TotalTicket};
use crate::observe::Rejection;
use crate::problem::{GatewayError, Problem};
use crate::snapshot::Snapshot;
use pingora::proxy::Session;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;

/// Concurrent streams an HTTP/2 client connection may open (`SETTINGS_MAX_CONCURRENT_STREAMS`),
/// and so the requests one connection may have in flight.
pub const H2_MAX_STREAMS: u32 = 100;

/// The counts the limits are checked against, one set per gateway.
#[derive(Default)]
pub struct Admission {
    total: Arc<Total>,
    clients: Arc<Counts<IpAddr>>,
    /// HTTP/2 connections, by the client's socket address (unique while the connection lives).
    connections: Arc<Counts<SocketAddr>>,
}

/// What an admitted request holds until it ends.
pub struct Admitted {
    _total: TotalTicket,
    _client: Option<Ticket<IpAddr>>,
    _connection: Option<Ticket<SocketAddr>>,
}

impl Admission {
    /// Takes a place for one request, or says which limit is reached.
    pub fn admit(
        &self,
        max_total: u64,
        max_per_client: u64,
        client: Option<IpAddr>,
        h2_connection: Option<SocketAddr>,
    ) -> Result<Admitted, Rejection> {
        // The narrowest first: a connection over its limit does not use up its client's count.
        let connection = match h2_connection {
            Some(conn) => Some(
                self.connections
                    .try_take(conn, u64::from(H2_MAX_STREAMS))
                    .ok_or(Rejection::ConnectionInFlight)?,
            ),
            None => None,
        };
        let client = match client {
            Some(ip) => Some(
                self.clients
                    .try_take(ip, max_per_client)
                    .ok_or(Rejection::ClientInFlight)?,
            ),
            None => None,
        };
        let total = self.total.try_take(max_total).ok_or(Rejection::InFlight)?;
        Ok(Admitted {
            _total: total,
            _client: client,
            _connection: connection,
        })
    }
}

impl Gateway {
    /// Step 0 of the pipeline: a place among the requests in flight, or 503.
    pub(super) fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
    ) -> Flow {
        let h2_connection = if session.is_http2() {
            session.client_addr().and_then(|a| a.as_inet()).copied()
        } else {
            None
        };
        let limits = &snapshot.limits;
        match self.admission.admit(
            limits.max_in_flight,
            limits.max_in_flight_per_client,
            ctx.client,
            h2_connection,
        ) {
            Ok(admitted) => {
                ctx.admitted = Some(admitted);
                ControlFlow::Continue(())
            }
            Err(reason) => {
                // Named in the access log too, or it would read as an upstream's 503.
                self.reject(ctx, reason);
                respond(Problem::from(&GatewayError::Overloaded { reason }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn each_limit_refuses_with_its_reason() {
        let a = Admission::default();
        let first = a.admit(3, 2, ip(1), None).unwrap();
        let _second = a.admit(3, 2, ip(1), None).unwrap();
        assert!(matches!(
            a.admit(3, 2, ip(1), None),
            Err(Rejection::ClientInFlight)
        ));
        let _third = a.admit(3, 2, ip(2), None).unwrap();
        assert!(matches!(
            a.admit(3, 2, ip(3), None),
            Err(Rejection::InFlight)
        ));
        drop(first);
        assert!(a.admit(3, 2, ip(1), None).is_ok());
    }

    #[test]
    fn an_h2_connection_holds_at_most_its_stream_limit() {
        let a = Admission::default();
        let conn: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let held: Vec<_> = (0..H2_MAX_STREAMS)
            .map(|_| a.admit(10_000, 10_000, ip(1), Some(conn)).unwrap())
            .collect();
        assert!(matches!(
            a.admit(10_000, 10_000, ip(1), Some(conn)),
            Err(Rejection::ConnectionInFlight)
        ));
        let other: SocketAddr = "192.0.2.1:40001".parse().unwrap();
        assert!(a.admit(10_000, 10_000, ip(1), Some(other)).is_ok());
        drop(held);
        assert!(a.admit(10_000, 10_000, ip(1), Some(conn)).is_ok());
    }
}
