//! Aggregate parts against a misbehaving service (a raw HTTP/1.1 server that closes without
//! answering, hangs, varies its answer) and a client that goes away: a part is sent twice only
//! when that is safe, the upstream's timeouts apply to parts, a client gone calls its parts
//! off, and the merged answer says what it varies on.

use crate::support::prom::metric;
use crate::support::{call, eventually, GatewayHandle, RawConn};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A service that records each request line and answers by the path's first segment:
/// `/die`: reads the request, waits 300 ms and closes without a byte; `/hang`: closes after 5 s
/// without a byte; `/vary`: a JSON greeting by `Accept-Language`, with `Vary` and `max-age`;
/// anything else: `{"ok":true}`, keeping the connection.
struct Service {
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Service {
    fn start() -> Service {
        let listener = crate::support::listener();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, seen.clone()));
            }
        });
        Service { addr, lines }
    }

    /// Request lines received so far that start with `prefix` (`"POST /die"`).
    fn count(&self, prefix: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// A gateway with upstream `svc` (this service, `read_timeout`) and `routes`.
    async fn gateway(&self, read_timeout: &str, routes: &str) -> GatewayHandle {
        GatewayHandle::start(&format!(
            "[upstreams.svc]\ntargets = [\"{}\"]\nread_timeout = \"{read_timeout}\"\n{routes}",
            self.addr
        ))
        .await
    }
}

async fn serve(mut conn: tokio::net::TcpStream, lines: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        // One request head (parts send no body).
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let line = head.lines().next().unwrap_or_default().to_owned();
        lines.lock().unwrap().push(line.clone());
        let path = line.split(' ').nth(1).unwrap_or("/");
        let (extra, body) = if path.starts_with("/die") {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        } else if path.starts_with("/hang") {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        } else if path.starts_with("/vary") {
            let french = head.to_ascii_lowercase().contains("accept-language: fr");
            let greeting = if french { "bonjour" } else { "hello" };
            (
                "vary: Accept-Language\r\ncache-control: public, max-age=60\r\n",
                format!("{{\"greeting\":\"{greeting}\"}}"),
            )
        } else {
            ("", r#"{"ok":true}"#.to_owned())
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_goes_twice_only_when_that_is_safe() {
    // A pooled connection the service then closes without answering: a GET part goes once more
    // on a new connection (as Pingora does for proxied requests), a POST part never does.
    let svc = Service::start();
    let gw = svc
        .gateway(
            "5s",
            r#"
[routes.warm]
path = "/warm"
aggregate.parts.p = { upstream = "svc", path = "/ok" }

[routes.post]
path = "/post"
aggregate.parts.p = { upstream = "svc", path = "/die", method = "POST" }

[routes.get]
path = "/get"
aggregate.parts.p = { upstream = "svc", path = "/die" }
"#,
        )
        .await;
    for (route, line, sent) in [("/post", "POST /die", 1), ("/get", "GET /die", 2)] {
        assert_eq!(
            call(&gw, "/warm", &[]).await.status,
            200,
            "pools a connection"
        );
        let a = call(&gw, route, &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.contains(r#""outcome":"error""#), "{a:?}");
        assert_eq!(svc.count(line), sent, "{route}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_is_cut_at_its_upstreams_read_timeout() {
    // No route timeout: the upstream's 300 ms read_timeout is what ends the wait.
    let svc = Service::start();
    let gw = svc
        .gateway(
            "300ms",
            r#"
[routes.hang]
path = "/hang"
aggregate.parts.p = { upstream = "svc", path = "/hang", required = true }
"#,
        )
        .await;
    let a = call(&gw, "/hang", &[]).await;
    assert_eq!(a.status, 504, "{a:?}");
    assert!(a.took < Duration::from_secs(3), "took {:?}", a.took);
    assert_eq!(
        svc.count("GET /hang"),
        1,
        "a timeout is not a dead pooled connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_calls_its_parts_off() {
    let svc = Service::start();
    let gw = svc
        .gateway(
            "30s",
            r#"
[routes.hang]
path = "/hang"
aggregate.parts.p = { upstream = "svc", path = "/hang" }
"#,
        )
        .await;
    let started = Instant::now();
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /hang HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(3), || async {
        svc.count("GET /hang") == 1
    })
    .await;
    drop(conn);
    let logged = || gw.access_log().into_iter().find(|l| l["path"] == "/hang");
    assert!(
        eventually(Duration::from_secs(4), || async { logged().is_some() }).await,
        "no access-log line before the part's 5 s were up"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(logged().unwrap()["status"], 0, "{:?}", logged());
    let cancelled = metric(
        &gw,
        "tollgate_requests_cancelled_total",
        &[("reason", "client_gone")],
    )
    .await;
    assert_eq!(cancelled, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merged_answer_varies_as_its_parts_do() {
    // A cache in front must keep one answer per language, and one per header a target reads.
    let svc = Service::start();
    let gw = svc
        .gateway(
            "5s",
            r#"
[routes.vary]
path = "/vary"
aggregate.parts.greeting = { upstream = "svc", path = "/vary" }
aggregate.parts.app = { upstream = "svc", path = "/ok/{header.x-app}" }
"#,
        )
        .await;
    for (language, greeting) in [("fr", "bonjour"), ("en", "hello")] {
        let a = call(
            &gw,
            "/vary",
            &[("accept-language", language), ("x-app", "ios")],
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.contains(greeting), "{a:?}");
        assert_eq!(a.header("vary"), Some("accept-language, x-app"), "{a:?}");
        assert_eq!(a.header("cache-control"), Some("max-age=0"), "{a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_value_that_is_not_utf8_is_missing_not_changed() {
    let svc = Service::start();
    let gw = svc
        .gateway(
            "5s",
            r#"
[routes.q]
path = "/q"
aggregate.parts.p = { upstream = "svc", path = "/ok?q={query.q}", required = true }
"#,
        )
        .await;
    assert_eq!(call(&gw, "/q?q=caf%C3%A9", &[]).await.status, 200);
    assert_eq!(svc.count("GET /ok?q=caf%C3%A9 "), 1);
    let a = call(&gw, "/q?q=%FF", &[]).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(svc.count("GET /ok"), 1, "nothing else reached the service");
}
