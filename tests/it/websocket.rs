//! WebSocket (HTTP/1.1 Upgrade) through a real gateway, against a raw backend that answers the
//! upgrade with 101 and then echoes every byte back (after a 101 the gateway is a byte pipe, so
//! no frame needs parsing). An open session is not a request in flight, a clean session is a
//! success for the circuit breaker, and a quiet session outlives the route's `timeout`.

use crate::support::prom::metric_sum;
use crate::support::{get, listener, GatewayHandle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that switches every request to the WebSocket protocol and echoes what follows;
/// it counts the upgrades it accepted.
struct EchoBackend {
    addr: std::net::SocketAddr,
    upgrades: Arc<AtomicUsize>,
}

impl EchoBackend {
    fn start() -> EchoBackend {
        let listener = listener();
        let addr = listener.local_addr().unwrap();
        let upgrades = Arc::new(AtomicUsize::new(0));
        let counted = upgrades.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(echo(conn, counted.clone()));
            }
        });
        EchoBackend { addr, upgrades }
    }
}

async fn echo(mut conn: tokio::net::TcpStream, upgrades: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.contains("upgrade: websocket") {
        let _ = conn
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        return;
    }
    upgrades.fetch_add(1, Ordering::SeqCst);
    // Pingora 0.9 tears an upgrade down when the 101 reaches it before it has passed on the
    // upgrade request's (empty) body (cloudflare/pingora#946, fixed by open PRs): with a
    // backend on loopback that is a coin toss. A backend over a network answers later than
    // that; so does this one, so that the test shows the gateway's own behaviour.
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The accept value is not checked by the test's client; any token does for a byte pipe.
    let switched = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                    connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    if conn.write_all(switched.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// An open session through the gateway: the 101 read, then bytes echoed.
struct Session(tokio::net::TcpStream);

impl Session {
    async fn open(gw: &GatewayHandle, path: &str) -> Session {
        let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte))
                .await
                .expect("the 101 in time")
                .unwrap();
            assert_eq!(
                n,
                1,
                "closed before the 101: {}",
                String::from_utf8_lossy(&got)
            );
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Session(conn)
    }

    /// Sends `text` and reads it back; `false` when the session is gone.
    async fn echoes(&mut self, text: &str) -> bool {
        if self.0.write_all(text.as_bytes()).await.is_err() {
            return false;
        }
        let mut back = vec![0u8; text.len()];
        let read = tokio::time::timeout(Duration::from_secs(3), self.0.read_exact(&mut back)).await;
        matches!(read, Ok(Ok(_))) && back == text.as_bytes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websockets_are_connections_not_requests_in_flight_nor_failures() {
    let backend = EchoBackend::start();
    let gw = GatewayHandle::start_with(
        &format!(
            r#"
[upstreams.chat]
targets = ["{}"]

[upstreams.chat.circuit_breaker]
min_requests = 2

[routes.ws]
path = "/ws"
upstream = "chat"
timeout = "300ms"

[routes.api]
path = "/api"
upstream = "chat"
"#,
            backend.addr
        ),
        "max_in_flight_per_client = 2\n",
    )
    .await;

    // Three sessions open at once from one client allowed two requests in flight, and a plain
    // request besides: none of them is refused.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Session::open(&gw, "/ws").await);
    }
    let plain = get(&gw.url("/api")).await.unwrap();
    assert_eq!(plain.status, 200, "{plain:?}");

    // Silent for twice the route's timeout: the route's deadline bounds the handshake, not the
    // conversation.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (i, session) in open.iter_mut().enumerate() {
        assert!(session.echoes(&format!("hello {i}")).await, "session {i}");
    }

    // Sessions that end cleanly are successes: the circuit (2 requests suffice to judge) stays
    // closed, and nothing counts as an upstream error.
    drop(open);
    for i in 0..3 {
        let mut s = Session::open(&gw, "/ws").await;
        assert!(s.echoes(&format!("again {i}")).await, "again {i}");
    }
    assert_eq!(backend.upgrades.load(Ordering::SeqCst), 6);
    let plain = get(&gw.url("/api")).await.unwrap();
    assert_eq!(plain.status, 200, "the circuit opened: {plain:?}");
    let errors = metric_sum(
        &gw,
        "tollgate_upstream_requests_total",
        &[("upstream", "chat"), ("outcome", "error")],
    )
    .await;
    assert_eq!(errors, 0.0);
    // Latency is the handshake's (about 30 ms each here), not the sessions' (the first three
    // lasted over 600 ms each).
    let latency = metric_sum(
        &gw,
        "tollgate_request_duration_seconds_sum",
        &[("route", "ws")],
    )
    .await;
    assert!(latency > 0.0 && latency < 1.0, "{latency}");
}
