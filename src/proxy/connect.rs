//! A client that goes away cancels its request's pending upstream connect.
//!
//! Pingora makes the upstream connection between `upstream_peer` and the next hook without
//! watching the client: a client that opens HTTP/2 streams and resets them at once, against an
//! upstream slow to accept, left thousands of requests waiting on connects that nobody would
//! read (each reset frees the stream slot in h2, so the client can open more). So, when a new
//! connection is expected, `upstream_peer` makes the TCP connection itself, racing it against
//! the client resetting the stream (HTTP/2), closing the connection (HTTP/1) and the route's
//! deadline, and hands the connected socket to Pingora through the peer's `custom_l4`
//! connector, which Pingora calls when its pool has no connection to reuse. Pingora still does
//! everything else (TLS, pooling, socket options, the failure hooks).
//!
//! "Expected": the last request to the target needed a new connection (reported by
//! `connected_to_upstream`). While the pool serves requests nothing is connected ahead;
//! a connection made ahead for a request that then got a pooled one is closed unused, and
//! the next request goes back to not connecting ahead.

use super::ctx::RequestCtx;
use super::Gateway;
use crate::problem::GatewayError;
use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use std::collections::HashMap;
use std::net::SocketAddr as InetAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SHARDS: usize = 8;

/// Keyed by the config's targets, not by anything a client chooses: a fast hash is enough
/// (SipHash cost 450 instructions per proxied request here).
type History = HashMap<InetAddr, bool, foldhash::fast::RandomState>;

/// Per target address: did its last request need a new connection?
#[derive(Default)]
pub struct ConnectHistory {
    shards: [Mutex<History>; SHARDS],
}

impl ConnectHistory {
    fn shard(&self, addr: &InetAddr) -> &Mutex<History> {
        &self.shards[usize::from(addr.port()) % SHARDS]
    }

    /// Whether a request to `addr` will probably make a new connection (unknown targets: yes).
    fn expects_new(&self, addr: &InetAddr) -> bool {
        let map = self.shard(addr).lock().unwrap_or_else(|p| p.into_inner());
        map.get(addr).copied().unwrap_or(true)
    }

    /// What the last request to `addr` did (`connected_to_upstream`).
    pub fn record(&self, addr: &InetAddr, reused: bool) {
        let mut map = self.shard(addr).lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the configured targets, which are few; a reload's removed targets stay
        // as one entry each.
        map.insert(*addr, !reused);
    }
}

/// Hands Pingora the connection made ahead, or the error making it gave.
#[derive(Debug)]
struct Prepared {
    outcome: Mutex<Option<Result<TcpStream, Box<Error>>>>,
}

#[async_trait]
impl L4Connect for Prepared {
    async fn connect(&self, addr: &SocketAddr) -> pingora::Result<Stream> {
        let taken = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match taken {
            Some(Ok(tcp)) => Ok(Stream::from(tcp)),
            Some(Err(e)) => Err(e),
            // Only one connection per attempt is made; should Pingora ask again, connect as it
            // would have (no timeout of ours: the peer's was already spent on the first).
            None => match addr.as_inet() {
                Some(inet) => TcpStream::connect(inet)
                    .await
                    .map(Stream::from)
                    .map_err(|e| connect_error(e, *inet)),
                None => Error::e_explain(ErrorType::ConnectError, "not an inet address"),
            },
        }
    }
}

fn connect_error(e: std::io::Error, addr: InetAddr) -> Box<Error> {
    let etype = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
        std::io::ErrorKind::TimedOut => ErrorType::ConnectTimedout,
        _ => ErrorType::ConnectError,
    };
    Error::because(etype, format!("connecting to {addr}"), e)
}

/// How waiting for the connection ended, when it did not connect.
enum Gone {
    Client,
    Deadline,
}

impl Gateway {
    /// Makes the upstream connection ahead when one is expected, cancelled (an `Err` for
    /// `upstream_peer`) when the client goes away or the route's deadline passes first.
    /// `fresh`: the peer bypasses the pool ([`crate::upstream::bypass_pool`]), so a new
    /// connection is certain.
    pub(super) async fn connect_ahead(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        peer: &mut HttpPeer,
        fresh: bool,
    ) -> pingora::Result<()> {
        let Some(addr) = peer._address.as_inet().copied() else {
            return Ok(());
        };
        if peer.options.custom_l4.is_some() || !(fresh || self.connects.expects_new(&addr)) {
            return Ok(());
        }
        let timeout = peer.options.connection_timeout;
        let connect = async {
            match timeout {
                Some(t) => match tokio::time::timeout(t, TcpStream::connect(addr)).await {
                    Ok(r) => r.map_err(|e| connect_error(e, addr)),
                    Err(_) => Err(Error::explain(
                        ErrorType::ConnectTimedout,
                        format!("timeout {t:?} connecting to {addr}"),
                    )),
                },
                None => TcpStream::connect(addr)
                    .await
                    .map_err(|e| connect_error(e, addr)),
            }
        };
        let deadline = ctx.deadline.map(Instant::from_std);
        let gone = async {
            tokio::select! {
                _ = client_gone(session) => Gone::Client,
                _ = until(deadline) => Gone::Deadline,
            }
        };
        let outcome = tokio::select! {
            biased;
            outcome = connect => outcome,
            gone = gone => {
                let (reason, error) = match gone {
                    Gone::Client => (
                        "client_gone",
                        Error::explain(
                            ErrorType::ConnectionClosed,
                            "the client went away while the upstream connection was being made",
                        )
                        .into_down(),
                    ),
                    Gone::Deadline => ("deadline", GatewayError::DeadlinePassed.into_pingora()),
                };
                self.metrics.abuse.cancelled(reason);
                return Err(error);
            }
        };
        peer.options.custom_l4 = Some(Arc::new(Prepared {
            outcome: Mutex::new(Some(outcome)),
        }));
        Ok(())
    }
}

/// Resolves when the client resets this request's HTTP/2 stream (or the connection), or closes
/// its HTTP/1 connection; pending otherwise. Reads no request body: for HTTP/1 it watches the
/// socket only once the body is complete (as Pingora does while waiting for a response).
pub(super) async fn client_gone(session: &mut Session) {
    let downstream = &mut session.downstream_session;
    if let Some(closed) = downstream.watch_h2_stream_close() {
        let _ = closed.await;
        return;
    }
    if downstream.is_body_done() && downstream.read_body_or_idle(true).await.is_err() {
        return;
    }
    // Bytes where none were expected (a pipelined request) are Pingora's business later.
    std::future::pending::<()>().await
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
