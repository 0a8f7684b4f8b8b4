//! The head deadline of an HTTP/2 connection: its first request must reach the proxy within
//! `server.client_header_timeout` of the connection's start, as an HTTP/1 head must be whole
//! by then, or the connection is closed (a slowloris client sending nothing, or a header block
//! it never finishes). The guard cannot see HTTP/2 heads (frames, HPACK); the proxy's first
//! hook tells it through this registry that Pingora parsed a request on the connection.
//! Later requests on the connection are bounded by the HTTP/2 server's `idle_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::Notify;

/// A connection by its peer and local addresses: unique among open connections.
type Connection = (SocketAddr, SocketAddr);

static WAITING: LazyLock<Mutex<HashMap<Connection, Arc<Notify>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
/// Connections in `WAITING`: a request on a connection past its first finds 0 most of the time
/// and takes no lock.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// An HTTP/2 connection waiting for its first request; unregistered when dropped.
pub struct FirstRequest {
    connection: Connection,
    arrived: Arc<Notify>,
}

impl FirstRequest {
    pub fn register(peer: SocketAddr, local: SocketAddr) -> FirstRequest {
        let arrived = Arc::new(Notify::new());
        let connection = (peer, local);
        let mut waiting = WAITING.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.insert(connection, arrived.clone()).is_none() {
            PENDING.fetch_add(1, Ordering::Relaxed);
        }
        FirstRequest {
            connection,
            arrived,
        }
    }

    /// Resolves once a request of the connection reached the proxy.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }
}

impl Drop for FirstRequest {
    fn drop(&mut self) {
        let mut waiting = WAITING.lock().unwrap_or_else(|p| p.into_inner());
        // Only this connection's own entry (the request may have taken it already).
        if waiting
            .get(&self.connection)
            .is_some_and(|n| Arc::ptr_eq(n, &self.arrived))
        {
            waiting.remove(&self.connection);
            PENDING.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A request of the HTTP/2 connection `(peer, local)` reached the proxy.
pub fn request_arrived(peer: SocketAddr, local: SocketAddr) {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut waiting = WAITING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(arrived) = waiting.remove(&(peer, local)) {
        PENDING.fetch_sub(1, Ordering::Relaxed);
        // Stored as a permit if the connection's task is not waiting yet.
        arrived.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_releases_its_own_connection_only() {
        let a: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let first_a = FirstRequest::register(a, local);
        let first_b = FirstRequest::register(b, local);
        request_arrived(a, local);
        tokio::time::timeout(std::time::Duration::from_secs(1), first_a.arrived())
            .await
            .expect("a's request arrived");
        let b_waits =
            tokio::time::timeout(std::time::Duration::from_millis(50), first_b.arrived()).await;
        assert!(b_waits.is_err(), "b had no request");
        drop(first_b);
        drop(first_a);
        assert!(!WAITING.lock().unwrap().contains_key(&(b, local)));
    }
}
