//! Abuse: what one hostile client or one broken upstream can make the gateway hold, send or
//! write, each case bounded in count and time, on loopback. Every test asserts the bound (a
//! gauge, a counter, bytes received, log lines), not how fast something happened.
//!
//! - HTTP/2 rapid reset against an upstream that does not accept (the connects are cancelled),
//!   and accepted-then-reset against a slow upstream: in flight never past the stream limit;
//! - CONTINUATION and PING floods: the connection ends or stalls, memory stays put;
//! - hung, garbage-answering, endless and short-bodied upstreams: cut within the bounds,
//!   counted, and the access log and the metrics agree on what the client got;
//! - concurrency limits per client (requests, connections, connection rate).

use crate::support::gateway::catch_all;
use crate::support::{eventually, GatewayHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

const IN_FLIGHT: &str = "tollgate_requests_in_flight";
const STREAM_LIMIT: f64 = tollgate::proxy::H2_MAX_STREAMS as f64;

// ---------------------------------------------------------------------------------------------
// Scripted upstreams.

/// What a scripted upstream does once it has read a request head.
#[derive(Clone)]
enum Script {
    /// Never answers.
    Hang,
    /// Answers 200 after this long.
    Slow(Duration),
    /// Sends these bytes, then closes.
    Garbage(Vec<u8>),
    /// A 200 head with a chunked body that never ends.
    Endless,
    /// Declares `declared` body bytes, sends `sent`, then closes (or hangs when `hang`).
    Short {
        declared: usize,
        sent: usize,
        hang: bool,
    },
}

/// An upstream on a loopback port that follows a script; its tasks end with it.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(script: Script) -> Scripted {
        let listener = crate::support::listener();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                let counted = counted.clone();
                // The JoinSet aborts every connection task when this task is aborted.
                conns.spawn(serve(sock, script, counted));
            }
        });
        Scripted {
            addr,
            requests,
            task,
        }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(mut sock: TcpStream, script: Script, counted: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    counted.fetch_add(1, Ordering::SeqCst);
    match script {
        Script::Hang => std::future::pending::<()>().await,
        Script::Slow(delay) => {
            tokio::time::sleep(delay).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
        Script::Garbage(bytes) => {
            let _ = sock.write_all(&bytes).await;
        }
        Script::Endless => {
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            if sock.write_all(head).await.is_err() {
                return;
            }
            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            // Ends when the gateway closes the connection (or the test drops the upstream).
            while sock.write_all(chunk.as_bytes()).await.is_ok() {}
        }
        Script::Short {
            declared,
            sent,
            hang,
        } => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n");
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&vec![b'y'; sent]).await;
            if hang {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A port that completes no connection: a listener with a backlog of one that never accepts.
/// Once its queue holds a connection or two, the kernel drops further SYNs and connects wait.
fn never_accepting() -> (TcpListener, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((
            [127, 0, 0, 1],
            crate::support::free_port(),
        )))
        .unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// The highest value of the in-flight gauge seen while it runs (scrapes every 20 ms).
struct GaugeWatch {
    max: Arc<std::sync::Mutex<f64>>,
    task: JoinHandle<()>,
}

impl GaugeWatch {
    fn start(gw: &GatewayHandle) -> GaugeWatch {
        let max = Arc::new(std::sync::Mutex::new(0.0f64));
        let seen = max.clone();
        let url = gw.admin_url("/metrics");
        let task = tokio::spawn(async move {
            let http = crate::support::client();
            loop {
                if let Ok(r) = http.get(&url).send().await {
                    if let Ok(page) = r.text().await {
                        let v = crate::support::prom::value(&page, IN_FLIGHT, &[]).unwrap_or(0.0);
                        let mut m = seen.lock().unwrap();
                        *m = m.max(v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        GaugeWatch { max, task }
    }

    fn stop(self) -> f64 {
        self.task.abort();
        *self.max.lock().unwrap()
    }
}

/// The rapid-reset attack on one h2c connection: `batches` times, open `per_batch` streams
/// (HEADERS with END_STREAM), wait `wait`, reset them all (RST_STREAM CANCEL, by dropping
/// them). Returns the streams opened.
async fn rapid_reset(addr: SocketAddr, batches: usize, per_batch: usize, wait: Duration) -> usize {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut opened = 0;
    for _ in 0..batches {
        let mut streams = Vec::with_capacity(per_batch);
        for _ in 0..per_batch {
            let ready = tokio::time::timeout(Duration::from_secs(1), send.clone().ready()).await;
            let Ok(Ok(mut s)) = ready else { break };
            let request = http::Request::get("http://localhost/flood")
                .body(())
                .unwrap();
            match s.send_request(request, true) {
                Ok(stream) => {
                    streams.push(stream);
                    opened += 1;
                }
                Err(_) => break,
            }
        }
        tokio::time::sleep(wait).await;
        drop(streams);
    }
    // Let the last resets go out before the connection closes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    driver.abort();
    opened
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A raw h2c connection with the preface and an empty SETTINGS frame sent.
async fn raw_h2(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    tcp
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// An HTTP/1.1 GET; returns the status line's code (0: no answer) and the body bytes read (at
/// most about `cap`). Reads for at most `limit`.
async fn get_bounded(addr: SocketAddr, path: &str, cap: usize, limit: Duration) -> (u16, usize) {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return (0, 0);
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    // A connection closed at accept may refuse the write already.
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return (0, 0);
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let end = Instant::now() + limit;
    while got.len() < cap {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = std::str::from_utf8(&got[..got.len().min(12)])
        .ok()
        .and_then(|s| s.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body_start = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(got.len(), |p| p + 4);
    (status, got.len() - body_start)
}

async fn cut(gw: &GatewayHandle, route: &str, reason: &str) -> f64 {
    let labels = [("route", route), ("reason", reason)];
    crate::support::prom::metric(gw, "tollgate_responses_cut_total", &labels).await
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 rapid reset.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_against_an_upstream_that_does_not_accept_cancels_the_connects() {
    let (_listener, addr) = never_accepting();
    // A connect waits up to 10 s: requests still held after the attack would show it.
    let body = catch_all(&addr.to_string(), "")
        .replace("[routes.app]", "connect_timeout = \"10s\"\n\n[routes.app]");
    let gw = GatewayHandle::start(&body).await;
    let watch = GaugeWatch::start(&gw);
    let opened = rapid_reset(gw.addr, 5, 100, Duration::from_millis(50)).await;
    assert!(opened >= 300, "only {opened} streams could be opened");
    // The resets cancel the connects: nothing stays in flight (far sooner than the 10 s).
    let drained = eventually(Duration::from_secs(3), || async {
        gw.metric(IN_FLIGHT).await == Some(0.0)
    })
    .await;
    let max = watch.stop();
    assert!(
        drained,
        "{:?} requests still in flight after the attack",
        gw.metric(IN_FLIGHT).await
    );
    // One connection never holds more than its stream limit; the slack is requests being
    // refused (503) at the instant of a scrape, which have a context but no place.
    assert!(
        max <= STREAM_LIMIT + 10.0,
        "{max} requests in flight at once"
    );
    let cancelled = gw
        .metric("tollgate_requests_cancelled_total{reason=\"client_gone\"}")
        .await
        .unwrap_or(0.0);
    assert!(cancelled > 0.0, "no pending connect was cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_then_reset_streams_never_hold_more_than_the_stream_limit() {
    // The upstream holds each request 5 s: a reset that did not end the request would keep it.
    let upstream = Scripted::start(Script::Slow(Duration::from_secs(5))).await;
    let gw = GatewayHandle::start(&catch_all(&upstream.target(), "")).await;
    let watch = GaugeWatch::start(&gw);
    let (a, b) = tokio::join!(
        rapid_reset(gw.addr, 4, 100, Duration::from_millis(50)),
        rapid_reset(gw.addr, 4, 100, Duration::from_millis(50)),
    );
    let drained = eventually(Duration::from_secs(3), || async {
        gw.metric(IN_FLIGHT).await == Some(0.0)
    })
    .await;
    let max = watch.stop();
    assert!(drained, "requests still in flight after the resets");
    assert!(
        max <= 2.0 * STREAM_LIMIT + 10.0,
        "{max} requests in flight from two connections"
    );
    // What reached the upstream is what was forwarded, at most every stream opened.
    assert!(upstream.requests() <= a + b);
    // A reset stream is a cancelled request, not a malformed one.
    let bad = gw
        .metric(r#"tollgate_rejected_requests_total{reason="bad_request"}"#)
        .await;
    assert_eq!(bad.unwrap_or(0.0), 0.0, "resets counted as bad requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_without_a_whole_first_head_is_closed_at_the_head_timeout() {
    // HTTP/2's own idle timeout is the default 60 s: what closes these is the 600 ms head
    // deadline, as for an HTTP/1 head.
    let upstream = Scripted::start(Script::Slow(Duration::ZERO)).await;
    let gw = GatewayHandle::start_with(
        &catch_all(&upstream.target(), ""),
        "client_header_timeout = \"600ms\"\n",
    )
    .await;
    // Nothing after the preface; a HEADERS frame that never ends its header block.
    let silent = raw_h2(gw.addr).await;
    let mut unfinished = raw_h2(gw.addr).await;
    unfinished
        .write_all(&frame(0x1, 0x0, 1, b"\x82\x86\x84"))
        .await
        .unwrap();
    for mut conn in [silent, unfinished] {
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "still open after 5 s");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert_eq!(
        gw.metric(r#"tollgate_rejected_requests_total{reason="header_timeout"}"#)
            .await,
        Some(2.0)
    );
    // A connection whose first request came in time is not cut afterwards.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    for _ in 0..2 {
        let r = h2.get(gw.url("/later")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(upstream.requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// Frame floods.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_ends_the_connection_with_memory_bounded() {
    let upstream = Scripted::start(Script::Slow(Duration::ZERO)).await;
    let gw = GatewayHandle::start_binary(&catch_all(&upstream.target(), ""), "").await;
    let pid = gw.pid().unwrap();
    let before = rss(pid);
    let mut tcp = raw_h2(gw.addr).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames (no END_HEADERS either): 1 KiB
    // of header block each, up to 16 MiB.
    tcp.write_all(&frame(0x1, 0x1, 1, b"\x82\x86\x84"))
        .await
        .unwrap();
    let continuation = frame(0x9, 0, 1, &[0x40; 1024]);
    let mut sent = 0usize;
    let started = Instant::now();
    while sent < 16 * 1024 && started.elapsed() < Duration::from_secs(10) {
        let w = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&continuation)).await;
        if !matches!(w, Ok(Ok(()))) {
            break;
        }
        sent += 1;
    }
    // The gateway ends the connection (GOAWAY, then close) rather than buffer it all.
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = false;
    for _ in 0..1000 {
        match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => continue,
            Err(_) => break,
        }
    }
    assert!(
        closed,
        "the connection stayed open after {sent} CONTINUATION frames"
    );
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
    let ok = crate::support::client()
        .get(gw.url("/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_keeps_memory_bounded_and_others_served() {
    let upstream = Scripted::start(Script::Slow(Duration::ZERO)).await;
    let gw = GatewayHandle::start_binary(&catch_all(&upstream.target(), ""), "").await;
    let pid = gw.pid().unwrap();
    let before = rss(pid);
    let mut tcp = raw_h2(gw.addr).await;
    // 200,000 PINGs (3.4 MB) without reading a single PONG: the gateway must not queue them.
    let batch: Vec<u8> = (0..1000u64)
        .flat_map(|i| frame(0x6, 0, 0, &i.to_be_bytes()))
        .collect();
    let started = Instant::now();
    for _ in 0..200 {
        let w = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&batch)).await;
        if !matches!(w, Ok(Ok(()))) || started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
    let ok = crate::support::client()
        .get(gw.url("/meanwhile"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Broken upstreams.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_is_cut_at_the_response_timeout() {
    // Never answers: the head wait ends at the response timeout (no route timeout set).
    let hung = Scripted::start(Script::Hang).await;
    // Answers a head and 10 of 1000 bytes, then stops sending.
    let stalled = Scripted::start(Script::Short {
        declared: 1000,
        sent: 10,
        hang: true,
    })
    .await;
    let body = format!(
        "{}\n[upstreams.stalled]\ntargets = [\"{}\"]\n\n[routes.stalled]\npath = \"/stalled\"\nupstream = \"stalled\"\nresponse_timeout = \"1s\"\n",
        catch_all(&hung.target(), "response_timeout = \"1s\""),
        stalled.target()
    );
    let gw = GatewayHandle::start(&body).await;
    let r = crate::support::client()
        .get(gw.url("/hung"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let (status, body_bytes) =
        get_bounded(gw.addr, "/stalled", 1 << 20, Duration::from_secs(8)).await;
    assert_eq!(status, 200);
    assert!(
        body_bytes < 1000,
        "{body_bytes} body bytes of a stalled response"
    );
    let line = gw.log_line(|l| l["path"] == "/stalled").await;
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["truncated"], "timeout", "{line}");
    assert_eq!(cut(&gw, "stalled", "timeout").await, 1.0);
    assert_eq!(gw.metric(IN_FLIGHT).await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_cut_at_max_response_bytes_and_at_the_response_timeout() {
    let endless = Scripted::start(Script::Endless).await;
    let body = format!(
        "{}\n[routes.slowly]\npath = \"/slowly/{{*rest}}\"\nupstream = \"app\"\nresponse_timeout = \"1s\"\nmax_response_bytes = \"1GiB\"\n",
        catch_all(&endless.target(), "max_response_bytes = \"1MiB\"\ntimeout = \"2s\"")
    );
    let gw = GatewayHandle::start(&body).await;
    // Read up to 64 MiB: the gateway stops at 1 MiB (plus what was in flight).
    let (status, got) = get_bounded(gw.addr, "/big", 64 << 20, Duration::from_secs(10)).await;
    assert_eq!(status, 200);
    assert!(
        got <= (1 << 20) + (256 << 10),
        "{got} bytes past a 1 MiB limit"
    );
    let line = gw.log_line(|l| l["path"] == "/big").await;
    assert_eq!(line["truncated"], "too_large", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    // The same endless body on a route with a 1 s response timeout: cut by time.
    let (_, got) = get_bounded(gw.addr, "/slowly/x", 4 << 30, Duration::from_secs(10)).await;
    assert!(got > 0);
    let line = gw.log_line(|l| l["path"] == "/slowly/x").await;
    assert_eq!(line["truncated"], "timeout", "{line}");
    assert!(
        line["duration_ms"].as_f64().unwrap_or(0.0) < 5000.0,
        "{line}"
    );
    assert_eq!(cut(&gw, "app", "too_large").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_body_is_counted_and_logged_with_the_status_the_client_got() {
    let short = Scripted::start(Script::Short {
        declared: 100_000,
        sent: 1_000,
        hang: false,
    })
    .await;
    let gw = GatewayHandle::start(&catch_all(&short.target(), "")).await;
    let (status, got) = get_bounded(gw.addr, "/short", 1 << 20, Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    assert!(got < 100_000, "{got} bytes");
    let line = gw.log_line(|l| l["path"] == "/short").await;
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["truncated"], "upstream", "{line}");
    assert_eq!(
        crate::support::prom::metric(
            &gw,
            "tollgate_requests_total",
            &[("route", "app"), ("method", "GET"), ("status", "200")]
        )
        .await,
        1.0
    );
    assert_eq!(cut(&gw, "app", "upstream").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_answering_upstream_writes_few_short_log_lines() {
    let mut garbage = b"\x00\x01\x02HTTP/9 \xff\xfe<script>".to_vec();
    garbage.extend(std::iter::repeat_n(b'\x07', 2000));
    let upstream = Scripted::start(Script::Garbage(garbage)).await;
    let gw = GatewayHandle::start_binary(&catch_all(&upstream.target(), ""), "").await;
    let http = crate::support::client();
    let sent = 200;
    let started = Instant::now();
    for i in 0..sent {
        let r = http.get(gw.url(&format!("/g{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    let seconds = started.elapsed().as_secs() as usize + 2;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stderr = gw.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    assert!(longest < 1024, "a log line of {longest} bytes");
    // WARN/ERROR lines: a handful per second per kind, whatever the failure count.
    let errors = lines
        .iter()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        .count();
    assert!(
        errors <= seconds * 3 * tollgate::observe::LINES_PER_SECOND as usize,
        "{errors} WARN/ERROR lines for {sent} failures in {seconds} s"
    );
    assert!(upstream.requests() >= sent);
}

// ---------------------------------------------------------------------------------------------
// Concurrency limits.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_in_flight_limit_gets_503_with_retry_after() {
    let upstream = Scripted::start(Script::Slow(Duration::from_millis(1500))).await;
    let gw = GatewayHandle::start_with(
        &catch_all(&upstream.target(), ""),
        "max_in_flight_per_client = 3\n",
    )
    .await;
    let http = crate::support::client();
    let slow: Vec<_> = (0..3)
        .map(|i| tokio::spawn(http.get(gw.url(&format!("/held{i}"))).send()))
        .collect();
    let held = eventually(Duration::from_secs(3), || async {
        upstream.requests() == 3
    })
    .await;
    assert!(held);
    let over = http.get(gw.url("/over")).send().await.unwrap();
    assert_eq!(over.status(), 503);
    assert_eq!(
        over.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        over.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    for h in slow {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        upstream.requests(),
        3,
        "the refused request reached the upstream"
    );
    assert_eq!(
        gw.metric("tollgate_rejected_requests_total{reason=\"client_in_flight\"}")
            .await,
        Some(1.0)
    );
    // Its access-log line says why, or it would read as the upstream's own 503.
    let logged = eventually(Duration::from_secs(3), || async {
        gw.access_log()
            .iter()
            .any(|l| l["path"] == "/over" && l["reason"] == "client_in_flight")
    })
    .await;
    assert!(logged, "{:?}", gw.access_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_limits_are_closed_at_accept() {
    let upstream = Scripted::start(Script::Slow(Duration::ZERO)).await;
    let gw = GatewayHandle::start_with(
        &catch_all(&upstream.target(), ""),
        "max_connections_per_client = 2\nconnection_rate_per_client = { connections = 4, per = \"1h\" }\n",
    )
    .await;
    // The readiness probe's connection is closed before the gateway stops counting it.
    let probe_gone = eventually(Duration::from_secs(3), || async {
        gw.metric("tollgate_client_connections").await == Some(0.0)
    })
    .await;
    assert!(
        probe_gone,
        "the readiness probe's connection is still counted"
    );
    // Two open connections are the most: a third is closed without an answer.
    let a = TcpStream::connect(gw.addr).await.unwrap();
    let b = TcpStream::connect(gw.addr).await.unwrap();
    // Both accepted before the third arrives.
    let both = eventually(Duration::from_secs(3), || async {
        gw.metric("tollgate_client_connections").await == Some(2.0)
    })
    .await;
    assert!(
        both,
        "{:?} connections counted",
        gw.metric("tollgate_client_connections").await
    );
    let (status, _) = get_bounded(gw.addr, "/third", 4096, Duration::from_secs(3)).await;
    assert_eq!(status, 0, "a third connection was served");
    drop((a, b));
    // Four connections an hour: three were made, the fourth is served, the fifth is not.
    let served = eventually(Duration::from_secs(3), || async {
        get_bounded(gw.addr, "/fourth", 4096, Duration::from_secs(2))
            .await
            .0
            == 200
    })
    .await;
    assert!(served);
    let (status, _) = get_bounded(gw.addr, "/fifth", 4096, Duration::from_secs(3)).await;
    assert_eq!(status, 0, "a connection over the rate was served");
    assert!(
        gw.metric("tollgate_rejected_connections_total{reason=\"client_connections\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        gw.metric("tollgate_rejected_connections_total{reason=\"connection_rate\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    // The admin listener (another service) is not limited: these scrapes went through.
}
