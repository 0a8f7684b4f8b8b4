//! Upstream failures as the client sees them (502 / 504 problem responses) and as the metrics
//! count them.

use crate::support::{backend, client, eventually, free_port, prom, GatewayHandle};
use std::time::{Duration, Instant};

/// Asserts a gateway problem response: status, problem+json, an `x-request-id` header that the
/// body repeats. Returns the body.
async fn assert_problem(r: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!rid.is_empty());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].is_string(), "{body}");
    assert!(body["type"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert_eq!(body["request_id"], rid.as_str(), "{body}");
    body
}

/// Waits (bounded) until `name{labels}` reads `want` on the metrics page, then asserts it.
/// Metrics are recorded as the request ends, which can be just after the client saw the response.
async fn assert_metric(gw: &GatewayHandle, name: &str, labels: &[(&str, &str)], want: f64) {
    eventually(Duration::from_secs(5), || async {
        prom::value(&gw.metrics().await, name, labels) == Some(want)
    })
    .await;
    let page = gw.metrics().await;
    assert_eq!(
        prom::value(&page, name, labels),
        Some(want),
        "{name}{labels:?} in\n{page}"
    );
}

/// A 504 problem that came once the 300 ms limit had passed, and before the backend's
/// delay (3 s or more) would have ended the request.
async fn assert_timed_out(r: reqwest::Response, started: Instant) {
    let took = started.elapsed();
    assert_problem(r, 504).await;
    assert!(
        took >= Duration::from_millis(250),
        "504 came too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "504 came too late: {took:?}");
}

/// One upstream attempt counted as `(upstream, target, outcome)`, and the request as
/// `(route, method, status)`.
async fn assert_counted_once(
    gw: &GatewayHandle,
    (upstream, target, outcome): (&str, &str, &str),
    (route, method, status): (&str, &str, &str),
) {
    assert_metric(
        gw,
        "tollgate_upstream_requests_total",
        &[
            ("upstream", upstream),
            ("target", target),
            ("outcome", outcome),
        ],
        1.0,
    )
    .await;
    assert_metric(
        gw,
        "tollgate_requests_total",
        &[("route", route), ("method", method), ("status", status)],
        1.0,
    )
    .await;
}

/// Exactly one upstream attempt was made, counted as `(upstream, target, outcome)`, and the
/// request as `(route, method, status)`.
async fn assert_one_failed_attempt(
    gw: &GatewayHandle,
    attempt: (&str, &str, &str),
    request: (&str, &str, &str),
) {
    assert_counted_once(gw, attempt, request).await;
    let page = gw.metrics().await;
    assert_eq!(
        prom::sum(&page, "tollgate_upstream_requests_total", &[]),
        1.0,
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_502_and_counted() {
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.dead]
targets = ["{dead}"]

[routes.dead]
path = "/dead"
upstream = "dead"
"#
    ))
    .await;
    let started = Instant::now();
    let r = client()
        .get(gw.url("/dead?token=secret-token"))
        .header("authorization", "Bearer secret-bearer")
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let body = assert_problem(r, 502).await;
    let text = body.to_string();
    assert!(!text.contains("secret"), "{text}");

    assert_one_failed_attempt(
        &gw,
        ("dead", &dead, "connect_error"),
        ("dead", "GET", "502"),
    )
    .await;
    // The 502 the gateway wrote is whole: not a response cut short by the upstream.
    let line = gw.log_line(|l| l["path"] == "/dead").await;
    assert_eq!(line["status"], 502, "{line}");
    assert!(line.get("truncated").is_none(), "{line}");
    let page = gw.metrics().await;
    assert_eq!(
        prom::sum(&page, "tollgate_responses_cut_total", &[]),
        0.0,
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_read_timeout_is_504() {
    let slow = backend("slow").delay(Duration::from_secs(3)).start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.slow]
targets = ["{}"]
read_timeout = "300ms"

[routes.slow]
path = "/slow"
upstream = "slow"
"#,
        slow.target()
    ))
    .await;
    let started = Instant::now();
    let r = client().get(gw.url("/slow")).send().await.unwrap();
    assert_timed_out(r, started).await;
    // Sent once: a timed-out request is not sent again.
    assert_eq!(slow.count(), 1);

    assert_one_failed_attempt(
        &gw,
        ("slow", &slow.target(), "timeout"),
        ("slow", "GET", "504"),
    )
    .await;
}

/// A backend slower (4 s) than the route `/deadline`'s 300 ms timeout, which is shorter than
/// the upstream's read_timeout (30 s by default), and a gateway in front of it.
async fn behind_a_route_deadline() -> (crate::support::Backend, GatewayHandle) {
    let slow = backend("slow").delay(Duration::from_secs(4)).start().await;
    let gw = route_to(&slow, r#"timeout = "300ms""#, "").await;
    (slow, gw)
}

/// A gateway whose route `/deadline` (with `route_extra`) goes to `upstream`; `server_extra`
/// goes into `[server]`.
async fn route_to(
    upstream: &crate::support::Backend,
    route_extra: &str,
    server_extra: &str,
) -> GatewayHandle {
    GatewayHandle::start_with(
        &format!(
            r#"
[upstreams.slow]
targets = ["{}"]

[routes.deadline]
path = "/deadline"
upstream = "slow"
{route_extra}
"#,
            upstream.target()
        ),
        server_extra,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_shorter_than_the_upstream_is_504() {
    // The upstream's read_timeout is not what cuts the request: the route's is.
    let (slow, gw) = behind_a_route_deadline().await;
    let started = Instant::now();
    let r = client()
        .post(gw.url("/deadline"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_timed_out(r, started).await;
    assert_eq!(slow.count(), 1);
    assert_eq!(slow.received()[0].body, b"payload");

    assert_counted_once(
        &gw,
        ("slow", &slow.target(), "timeout"),
        ("deadline", "POST", "504"),
    )
    .await;
}

/// The `/deadline` request was counted as the client's body arriving too late: its attempt as
/// `client_closed` (nothing held against the target), the request as a 408, the refusal as
/// `body_timeout`.
async fn assert_counted_as_body_timeout(gw: &GatewayHandle, slow: &crate::support::Backend) {
    assert_counted_once(
        gw,
        ("slow", &slow.target(), "client_closed"),
        ("deadline", "POST", "408"),
    )
    .await;
    assert_metric(
        gw,
        "tollgate_rejected_requests_total",
        &[("reason", "body_timeout")],
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalled_at_the_route_deadline_is_408_not_the_targets_timeout() {
    // Same route as above, but the client sends 5 of the 100 bytes it declared and stops: the
    // deadline ended a wait for the client, not for the target (whose own slowness stays a 504
    // timeout, above).
    let (slow, gw) = behind_a_route_deadline().await;
    let started = Instant::now();
    let mut conn = crate::support::RawConn::connect(gw.addr).await;
    conn.send(b"POST /deadline HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\nabcde")
        .await
        .unwrap();
    let a = conn.read_response().await;
    let took = started.elapsed();
    assert_eq!(a.status, 408, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    assert_eq!(a.json()["request_id"], a.header("x-request-id").unwrap());
    assert!(took < Duration::from_secs(3), "408 came too late: {took:?}");
    assert_counted_as_body_timeout(&gw, &slow).await;
    let line = gw.log_line(|l| l["path"] == "/deadline").await;
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["reason"], "body_timeout", "{line}");
}

/// POSTs to `/deadline` a body of `len` bytes declared up front, sent a byte every 100 ms
/// (no read ever waits long), until the gateway answers or refuses more.
async fn trickle_body(gw: &GatewayHandle, len: usize) -> crate::support::RawResponse {
    let mut conn = crate::support::RawConn::connect(gw.addr).await;
    let head = format!("POST /deadline HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {len}\r\n\r\n");
    conn.send(head.as_bytes()).await.unwrap();
    for _ in 0..len {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if conn.send(b"a").await.is_err() {
            break;
        }
    }
    conn.read_response().await
}

/// A trickled body was cut with a 408 well before all of it could arrive (100 bytes: 10 s).
async fn assert_trickle_cut(gw: &GatewayHandle, slow: &crate::support::Backend) {
    let started = Instant::now();
    let a = trickle_body(gw, 100).await;
    assert_eq!(a.status, 408, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the body was read to its end: {:?}",
        started.elapsed()
    );
    assert_counted_as_body_timeout(gw, slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_past_the_route_deadline_is_408() {
    // The route's 300 ms are spent long before the body's end.
    let (slow, gw) = behind_a_route_deadline().await;
    assert_trickle_cut(&gw, &slow).await;
}

/// `/deadline` without a route `timeout`, the server's `client_body_timeout` at 300 ms and the
/// route's own `client_body_timeout` if given.
async fn behind_a_body_timeout(
    route_body_timeout: &str,
) -> (crate::support::Backend, GatewayHandle) {
    let slow = backend("slow").start().await;
    let gw = route_to(
        &slow,
        route_body_timeout,
        r#"client_body_timeout = "300ms""#,
    )
    .await;
    (slow, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_past_the_servers_body_timeout_is_408_on_a_route_without_deadline() {
    let (slow, gw) = behind_a_body_timeout("").await;
    assert_trickle_cut(&gw, &slow).await;
    assert!(
        slow.received().iter().all(|r| r.body.len() < 100),
        "a whole body reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_own_body_timeout_lets_a_slow_upload_finish() {
    // 10 bytes over about a second: past the server's 300 ms, within the route's 5 s.
    let (slow, gw) = behind_a_body_timeout(r#"client_body_timeout = "5s""#).await;
    let a = trickle_body(&gw, 10).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(slow.count(), 1);
    assert_eq!(slow.received()[0].body, b"aaaaaaaaaa");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_status_passes_through_unchanged() {
    // A 5xx the upstream answered is the upstream's response, not a gateway problem.
    let b = backend("flaky")
        .status(503)
        .body(r#"{"error":"maintenance"}"#)
        .start()
        .await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.flaky]
targets = ["{}"]

[routes.flaky]
path = "/flaky"
upstream = "flaky"
"#,
        b.target()
    ))
    .await;
    let r = client().get(gw.url("/flaky")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), r#"{"error":"maintenance"}"#);
    assert_eq!(b.count(), 1);
    assert_counted_once(&gw, ("flaky", &b.target(), "5xx"), ("flaky", "GET", "503")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_survive_gateway_errors() {
    // One pooled client alternates failing and working requests. The gateway closes a client
    // connection after a 502/504; unless it says so (`Connection: close`), the client reuses
    // the dying connection and its next request fails.
    let ok = backend("ok").start().await;
    let slow = backend("slow").delay(Duration::from_secs(2)).start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.ok]
targets = ["{}"]
[upstreams.slow]
targets = ["{}"]
read_timeout = "100ms"
[upstreams.dead]
targets = ["{dead}"]

[routes.ok]
path = "/ok"
upstream = "ok"
[routes.slow]
path = "/slow"
upstream = "slow"
[routes.dead]
path = "/dead"
upstream = "dead"
"#,
        ok.target(),
        slow.target()
    ))
    .await;
    let http = client();
    for round in 0..10 {
        // A 404 for a request with a body keeps the connection; the body must not be taken for
        // the next request.
        let r = http
            .post(gw.url("/nope"))
            .body(vec![b'G'; 256 * 1024])
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}, POST /nope: {e:?}"));
        assert_eq!(r.status(), 404, "round {round}");
        r.bytes().await.unwrap();
        for (path, status) in [("/dead", 502), ("/ok", 200), ("/slow", 504), ("/ok", 200)] {
            let r = http
                .get(gw.url(path))
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}, GET {path}: {e:?}"));
            assert_eq!(r.status(), status, "round {round}, GET {path}");
            if status != 200 {
                let connection = r.headers().get("connection").map(|v| v.to_str().unwrap());
                assert_eq!(connection, Some("close"), "round {round}, GET {path}");
            }
            r.bytes().await.unwrap();
        }
    }
    assert_eq!(ok.count(), 20);
    assert!(ok
        .received()
        .iter()
        .all(|r| r.method == "GET" && r.uri == "/ok"));
}
