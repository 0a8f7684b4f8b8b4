//! The fault-injecting TCP proxy of the test harness, tested on its own against a real backend:
//! every fault does what the gateway's resilience tests will rely on.

use crate::support::{backend, client, eventually, pseudo_random, Fault, FaultyProxy};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLOSE_GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
const KEEP_ALIVE_GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

/// Runs a test body with an overall limit, so no test can hang.
async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    tokio::time::timeout(limit, f)
        .await
        .expect("test did not finish in time");
}

/// Connects, sends `CLOSE_GET` and reads until the connection ends (at most 5 s): every byte
/// received and the error that ended it, if it did not end with a clean EOF.
async fn get_until_close(addr: SocketAddr) -> (Vec<u8>, Option<io::Error>) {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    read_all_after(&mut s, CLOSE_GET).await
}

async fn read_all_after(s: &mut TcpStream, request: &[u8]) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::new();
    if let Err(e) = s.write_all(request).await {
        return (out, Some(e));
    }
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Some(e),
            }
        }
    };
    let err = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the connection did not end within 5 s");
    (out, err)
}

/// Sends `KEEP_ALIVE_GET` on `s` and reads one response (head and Content-Length body).
async fn keep_alive_get(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    s.write_all(KEEP_ALIVE_GET).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            if out.len() >= end + 4 + len {
                return Ok(out);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no response within 5 s")?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Waits (at most 3 s) for the peer to end the connection: `Ok(0)` or an error.
async fn ends_soon(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let ended = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), ended)
        .await
        .is_ok()
}

fn url(p: &FaultyProxy, path: &str) -> String {
    format!("http://{}{path}", p.target())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_forwards_requests_and_responses_intact() {
    bounded(Duration::from_secs(20), async {
        let b = backend("a")
            .status(201)
            .body("hello through the proxy")
            .start()
            .await;
        let p = FaultyProxy::start(b.addr).await;
        assert_eq!(p.fault(), Fault::None);
        assert_eq!(p.target(), p.addr.to_string());
        assert!(p.addr.ip().is_loopback());
        let http = client();

        let r = http.get(url(&p, "/path?q=1")).send().await.unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.text().await.unwrap(), "hello through the proxy");

        let upload = pseudo_random(1 << 20, 7);
        let r = http
            .post(url(&p, "/upload"))
            .body(upload.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);

        let got = b.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].uri, "/path?q=1");
        assert_eq!(got[1].method, "POST");
        assert!(got[1].body == upload, "the upload changed on its way");
        // One upstream connection per client connection (the client pools; it may still open a
        // second one if the first is not back in its pool in time).
        assert!((1..=2).contains(&p.connections()), "{}", p.connections());
        assert_eq!(b.connections(), p.connections());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_each_direction_without_limiting_throughput() {
    bounded(Duration::from_secs(20), async {
        let big = pseudo_random(2 << 20, 3);
        let b = backend("a").body(big.clone()).start().await;
        let p = FaultyProxy::start(b.addr).await;
        let delay = Duration::from_millis(150);
        p.set_fault(Fault::Latency(delay));
        assert_eq!(p.fault(), Fault::Latency(delay));

        let started = Instant::now();
        let r = client().get(url(&p, "/big")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        let took = started.elapsed();
        assert!(
            body.as_ref() == big.as_slice(),
            "the body changed on its way"
        );
        // The request and the response are each held back by the delay.
        assert!(took >= 2 * delay, "took only {took:?}");
        // 2 MiB is well over 100 reads: a per-chunk serial delay would take 15 s or more.
        assert!(took < Duration::from_secs(5), "took {took:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_gives_the_client_a_connection_reset() {
    bounded(Duration::from_secs(20), async {
        let b = backend("a").start().await;
        let p = FaultyProxy::start(b.addr).await;
        p.set_fault(Fault::Reset);

        let err = client().get(url(&p, "/")).send().await.unwrap_err();
        assert!(!err.is_timeout(), "{err:?}");

        let (bytes, err) = get_until_close(p.addr).await;
        assert!(bytes.is_empty(), "got {bytes:?}");
        let err = err.expect("an error, not a clean close");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{err:?}"
        );

        assert_eq!(p.connections(), 2);
        assert_eq!(b.connections(), 0, "a reset connection reached the backend");
        assert!(eventually(Duration::from_secs(2), || async { p.active() == 0 }).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_closes_the_port_and_lifting_it_reopens_the_same_port() {
    bounded(Duration::from_secs(20), async {
        let b = backend("a").start().await;
        let p = FaultyProxy::start(b.addr).await;
        let http = client();
        assert_eq!(http.get(url(&p, "/")).send().await.unwrap().status(), 200);
        let addr = p.addr;

        for round in 0..2 {
            p.set_fault(Fault::Refuse);
            let err = TcpStream::connect(addr).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err:?}");
            // A fresh client, so no pooled connection hides the refusal.
            let err = client().get(url(&p, "/")).send().await.unwrap_err();
            assert!(err.is_connect(), "{err:?}");
            assert_eq!(
                p.connections(),
                1 + round,
                "a refused connection was counted"
            );

            p.set_fault(Fault::None);
            assert_eq!(p.addr, addr);
            let r = client()
                .get(format!("http://{addr}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(p.connections(), 2 + round);
        }
        assert_eq!(b.count(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_makes_clients_time_out_and_lifting_it_closes_the_held_connections() {
    bounded(Duration::from_secs(20), async {
        let b = backend("a").start().await;
        let p = FaultyProxy::start(b.addr).await;
        p.set_fault(Fault::Blackhole);

        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .no_proxy()
            .build()
            .unwrap();
        let started = Instant::now();
        let err = impatient.get(url(&p, "/")).send().await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(eventually(Duration::from_secs(2), || async { p.connections() == 1 }).await);

        // A raw client: the request is read, nothing comes back, nothing closes.
        let mut held = TcpStream::connect(p.addr).await.unwrap();
        held.write_all(CLOSE_GET).await.unwrap();
        let mut buf = [0u8; 64];
        let waited = tokio::time::timeout(Duration::from_millis(300), held.read(&mut buf)).await;
        assert!(waited.is_err(), "blackhole answered: {waited:?}");
        assert_eq!(p.connections(), 2);
        // Both held open, even the one whose client gave up.
        assert_eq!(p.active(), 2);
        assert_eq!(
            b.connections(),
            0,
            "a blackholed connection reached the backend"
        );

        p.set_fault(Fault::None);
        assert!(
            ends_soon(&mut held).await,
            "lifting the blackhole left it open"
        );
        assert!(eventually(Duration::from_secs(2), || async { p.active() == 0 }).await);
        let r = client().get(url(&p, "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(p.connections(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_close_delivers_the_whole_response_then_waits_before_closing() {
    bounded(Duration::from_secs(20), async {
        let body = pseudo_random(100_000, 11);
        let b = backend("a").body(body.clone()).start().await;
        let p = FaultyProxy::start(b.addr).await;
        let wait = Duration::from_millis(400);
        p.set_fault(Fault::SlowClose(wait));

        // The backend closes right after answering `Connection: close`; the client sees the
        // close only `wait` later.
        let started = Instant::now();
        let (bytes, err) = get_until_close(p.addr).await;
        let took = started.elapsed();
        assert!(err.is_none(), "{err:?}");
        assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(bytes.ends_with(&body), "the response was cut");
        assert!(took >= wait, "closed after only {took:?}");

        // A keep-alive client reads the full response without waiting for any close.
        let r = client().get(url(&p, "/")).send().await.unwrap();
        assert!(r.bytes().await.unwrap().as_ref() == body.as_slice());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_response_bytes_cuts_the_response_with_a_reset() {
    bounded(Duration::from_secs(20), async {
        let body = vec![b'x'; 10_000];
        let b = backend("a").body(body.clone()).start().await;
        let p = FaultyProxy::start(b.addr).await;

        p.set_fault(Fault::ResetAfterResponseBytes(100));
        let (bytes, err) = get_until_close(p.addr).await;
        assert_eq!(bytes.len(), 100, "{:?}", String::from_utf8_lossy(&bytes));
        assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
        let err = err.expect("a reset, not a clean close");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err:?}");
        assert_eq!(b.count(), 1, "the request reached the backend");

        // Past the head: the client gets a response whose body fails.
        p.set_fault(Fault::ResetAfterResponseBytes(1000));
        let r = client().get(url(&p, "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.is_err(), "a cut body was accepted");

        // A response shorter than the limit passes unharmed.
        p.set_fault(Fault::ResetAfterResponseBytes(1 << 20));
        let r = client().get(url(&p, "/")).send().await.unwrap();
        assert!(r.bytes().await.unwrap().as_ref() == body.as_slice());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_active_count_accurately() {
    bounded(Duration::from_secs(20), async {
        let b = backend("a").start().await;
        let p = FaultyProxy::start(b.addr).await;
        assert_eq!((p.connections(), p.active()), (0, 0));

        for i in 1..=5 {
            let (bytes, err) = get_until_close(p.addr).await;
            assert!(err.is_none() && bytes.starts_with(b"HTTP/1.1 200"));
            assert_eq!(p.connections(), i);
        }
        assert!(eventually(Duration::from_secs(2), || async { p.active() == 0 }).await);

        // Three requests on one kept-alive connection count once, and it stays active.
        let mut kept = TcpStream::connect(p.addr).await.unwrap();
        for _ in 0..3 {
            let r = keep_alive_get(&mut kept).await.unwrap();
            assert!(r.starts_with(b"HTTP/1.1 200"));
        }
        assert_eq!(p.connections(), 6);
        assert_eq!(p.active(), 1);
        drop(kept);
        assert!(eventually(Duration::from_secs(2), || async { p.active() == 0 }).await);

        // Reset connections are counted too, and never reach the backend.
        p.set_fault(Fault::Reset);
        for _ in 0..2 {
            let _ = get_until_close(p.addr).await;
        }
        assert_eq!(p.connections(), 8);
        assert_eq!(b.connections(), 6);
        assert_eq!(b.count(), 8);
        assert!(eventually(Duration::from_secs(2), || async { p.active() == 0 }).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_apply_to_new_connections_and_kill_connections_resets_open_ones() {
    bounded(Duration::from_secs(20), async {
        let b = backend("a").start().await;
        let p = FaultyProxy::start(b.addr).await;

        let mut old = TcpStream::connect(p.addr).await.unwrap();
        assert!(keep_alive_get(&mut old)
            .await
            .unwrap()
            .starts_with(b"HTTP/1.1 200"));

        p.set_fault(Fault::Reset);
        // The connection accepted before still passes through; a new one is reset.
        assert!(keep_alive_get(&mut old)
            .await
            .unwrap()
            .starts_with(b"HTTP/1.1 200"));
        let (_, err) = get_until_close(p.addr).await;
        assert!(err.is_some());

        p.kill_connections();
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(3), old.read(&mut buf))
            .await
            .expect("the killed connection stayed open");
        let err = r.expect_err("a reset, not a clean close");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err:?}");
        assert!(eventually(Duration::from_secs(2), || async { p.active() == 0 }).await);

        // The proxy itself keeps working.
        p.set_fault(Fault::None);
        let r = client().get(url(&p, "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_frees_the_port_and_closes_every_connection() {
    bounded(Duration::from_secs(20), async {
        let b = backend("a").start().await;
        let p = FaultyProxy::start(b.addr).await;
        let addr = p.addr;

        let mut open = TcpStream::connect(addr).await.unwrap();
        assert!(keep_alive_get(&mut open)
            .await
            .unwrap()
            .starts_with(b"HTTP/1.1 200"));
        p.set_fault(Fault::Blackhole);
        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_all(CLOSE_GET).await.unwrap();
        assert!(eventually(Duration::from_secs(2), || async { p.active() == 2 }).await);

        drop(p);
        let err = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err:?}");
        // Their tasks are gone: both connections end.
        assert!(
            ends_soon(&mut open).await,
            "a pass-through connection outlived the proxy"
        );
        assert!(
            ends_soon(&mut held).await,
            "a blackholed connection outlived the proxy"
        );
        drop((open, held));
        // The port can be taken again.
        let again = tokio::net::TcpListener::bind(addr).await;
        assert!(again.is_ok(), "{again:?}");

        // Dropped while refusing: nothing to close, nothing rebinds.
        let p = FaultyProxy::start(b.addr).await;
        let addr = p.addr;
        p.set_fault(Fault::Refuse);
        drop(p);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err:?}");
    })
    .await;
}
