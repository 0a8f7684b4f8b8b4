//! Hardened request handling: request head size (431) and time (408) limits enforced while the
//! head arrives, body limits per route (413), and the request-smuggling corpus (400, or one
//! well-formed request upstream). Every test uses short limits and bounded waits.

use crate::support::gateway::catch_all;
use crate::support::{
    client, parse_response, raw_exchange, raw_request, GatewayHandle, RawConn, RawResponse,
    Recorder,
};
use std::time::{Duration, Instant};

/// A gateway with a catch-all route to `target`, `[server]` lines from `server_extra` and
/// extra routes from `routes`.
async fn gateway(target: &str, server_extra: &str, routes: &str) -> GatewayHandle {
    GatewayHandle::start_with(&catch_all(target, routes), server_extra).await
}

async fn rejected(gw: &GatewayHandle, reason: &str) -> f64 {
    gw.metric(&format!(
        "tollgate_rejected_requests_total{{reason=\"{reason}\"}}"
    ))
    .await
    .unwrap_or(-1.0)
}

/// Asserts a problem+json answer from the gateway with this status.
fn assert_problem(r: &RawResponse, status: u16) {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let id = r.header("x-request-id").expect("x-request-id");
    let body = r.json();
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], id);
}

fn big_header(len: usize) -> String {
    format!("X-Big: {}", "a".repeat(len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_over_the_default_limit_is_431_and_nothing_goes_upstream() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "", "").await;

    // The default limit is 32 KiB: a 40 KiB header is refused by the guard itself.
    let big = big_header(40 * 1024);
    let r = raw_request(gw.addr, &["GET /a HTTP/1.1", "Host: api", &big], b"").await;
    assert_problem(&r, 431);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(rec.raw().is_empty(), "the backend received bytes");
    let refused_id = r.header("x-request-id").expect("x-request-id").to_string();

    // Below the limit passes, on a new connection and on the same gateway.
    let fine = big_header(20 * 1024);
    let r = raw_request(gw.addr, &["GET /b HTTP/1.1", "Host: api", &fine], b"").await;
    assert_eq!(r.status, 200);
    let r = client().get(gw.url("/c")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = rec.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].request_line(), "GET /b HTTP/1.1");
    assert_eq!(rejected(&gw, "header_too_large").await, 1.0);

    // The refused request has its access-log line, under the id its answer carried.
    let line = refused_line(&gw, 431).await;
    assert_eq!(line["request_id"], refused_id.as_str());
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["route"], "-");
    assert_eq!(line["method"], "-");
    // Counted up to the byte that crossed the 32 KiB limit.
    assert!(line["bytes_in"].as_u64().unwrap() > 32 * 1024, "{line}");
}

/// The access-log line with `status` (waits for the log's periodic flush).
async fn refused_line(gw: &GatewayHandle, status: u16) -> serde_json::Value {
    let found = crate::support::eventually(Duration::from_secs(3), || async {
        gw.access_log().iter().any(|l| l["status"] == status)
    })
    .await;
    assert!(
        found,
        "no access-log line with status {status}: {:?}",
        gw.access_log()
    );
    gw.access_log()
        .into_iter()
        .find(|l| l["status"] == status)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_limit_counts_while_reading_pieces() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "max_header_bytes = \"1KiB\"", "").await;

    // 900 bytes of head pass.
    let r = raw_request(
        gw.addr,
        &["GET /ok HTTP/1.1", "Host: api", &big_header(850)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);

    // A head trickled in 100-byte pieces is refused once it passes 1 KiB, before it ends.
    let mut conn = RawConn::connect(gw.addr).await;
    let mut sent = 0;
    conn.send(b"GET /big HTTP/1.1\r\nHost: api\r\nX-Big: ")
        .await
        .unwrap();
    let mut out = Vec::new();
    while sent < 4096 && out.is_empty() {
        if conn.send(&[b'a'; 100]).await.is_err() {
            break;
        }
        sent += 100;
        (out, _) = conn.read_until_close(Duration::from_millis(10)).await;
    }
    assert!(sent < 2048, "no answer while the head grew to {sent} bytes");
    let (rest, closed) = conn.read_until_close(Duration::from_secs(5)).await;
    assert!(closed, "connection not closed");
    let out = [out, rest].concat();
    assert_problem(&parse_response(&out_head_and_body(&out)), 431);
    assert_eq!(rec.requests().len(), 1);
}

/// The first response of raw bytes with its body cut to Content-Length.
fn out_head_and_body(out: &[u8]) -> Vec<u8> {
    let r = parse_response(out);
    let len: usize = r
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let head_len = out.len() - r.body.len();
    out[..head_len + len.min(r.body.len())].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_by_content_length_is_413_before_upstream() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "max_body_bytes = \"1KiB\"", "").await;

    let body = vec![b'x'; 2000];
    let r = raw_request(
        gw.addr,
        &["POST /up HTTP/1.1", "Host: api", "Content-Length: 2000"],
        &body,
    )
    .await;
    assert_problem(&r, 413);
    assert_eq!(rec.connections(), 0, "the backend was contacted");

    let r = raw_request(
        gw.addr,
        &["POST /up HTTP/1.1", "Host: api", "Content-Length: 1024"],
        &body[..1024],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["received"], 1024);
    assert_eq!(rejected(&gw, "body_too_large").await, 1.0);
    // The log line names the refusal, as for a streamed body over the limit.
    let line = gw.log_line(|l| l["status"] == 413).await;
    assert_eq!(line["reason"], "body_too_large", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_crossing_the_limit_stops_being_forwarded() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "max_body_bytes = \"1KiB\"", "").await;

    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"POST /up HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    conn.send(format!("258\r\n{}\r\n", "a".repeat(600)).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 1200 bytes: over the limit. The client never finishes the body.
    conn.send(format!("258\r\n{}\r\n", "b".repeat(600)).as_bytes())
        .await
        .unwrap();
    let (out, closed) = conn.read_until_close(Duration::from_secs(5)).await;
    assert!(closed, "connection not closed");
    assert_problem(&parse_response(&out), 413);

    // The backend got at most the part under the limit, and no complete request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rec.requests().is_empty(),
        "a complete request reached the backend"
    );
    let raw = rec.raw();
    assert!(
        !raw.windows(10).any(|w| w == b"bbbbbbbbbb"),
        "bytes past the limit reached the backend"
    );
    assert_eq!(rejected(&gw, "body_too_large").await, 1.0);
    let line = gw.log_line(|l| l["status"] == 413).await;
    assert_eq!(line["reason"], "body_too_large", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limit_overrides_the_server_limit_both_ways() {
    let rec = Recorder::start().await;
    let routes = r#"
[routes.big]
path = "/big"
upstream = "app"
max_body_bytes = "4KiB"

[routes.small]
path = "/small"
upstream = "app"
max_body_bytes = "100B"
"#;
    let gw = gateway(&rec.target(), "max_body_bytes = \"1KiB\"", routes).await;
    let http = client();
    let post = |path: &str, len: usize| http.post(gw.url(path)).body(vec![b'z'; len]).send();
    assert_eq!(post("/big", 3000).await.unwrap().status(), 200);
    assert_eq!(post("/big", 5000).await.unwrap().status(), 413);
    assert_eq!(post("/small", 100).await.unwrap().status(), 200);
    assert_eq!(post("/small", 500).await.unwrap().status(), 413);
    assert_eq!(post("/other", 800).await.unwrap().status(), 200);
    assert_eq!(post("/other", 1500).await.unwrap().status(), 413);
    let sizes: Vec<usize> = rec.requests().iter().map(|r| r.body.len()).collect();
    assert_eq!(sizes, vec![3000, 100, 800]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_cut_off_while_other_clients_are_served() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "client_header_timeout = \"1s\"", "").await;

    // One byte every 200 ms: each read is quick, the head as a whole is not.
    let conn = RawConn::connect(gw.addr).await;
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let mut conn = conn;
        conn.send(b"GET /slow HTTP/1.1\r\nHost: api\r\nX-Slow: ")
            .await
            .unwrap();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if conn.send(b"a").await.is_err() {
                break;
            }
            let (out, closed) = conn.read_until_close(Duration::from_millis(1)).await;
            if closed || !out.is_empty() {
                let (rest, _) = conn.read_until_close(Duration::from_secs(2)).await;
                return [out, rest].concat();
            }
        }
        conn.read_until_close(Duration::from_secs(2)).await.0
    });

    // Meanwhile other clients are served normally.
    let http = client();
    for i in 0..15 {
        let r = http.get(gw.url(&format!("/fast{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("slow client task bounded")
        .unwrap();
    let cut_after = started.elapsed();
    assert!(!out.is_empty(), "the slow client got no answer");
    assert_problem(&parse_response(&out_head_and_body(&out)), 408);
    assert!(
        cut_after < Duration::from_secs(8),
        "the slow client was never cut off ({cut_after:?})"
    );
    let paths: Vec<String> = rec
        .requests()
        .iter()
        .map(|r| r.request_line().to_string())
        .collect();
    assert_eq!(paths.len(), 15);
    assert!(paths.iter().all(|p| p.starts_with("GET /fast")));
    assert_eq!(rejected(&gw, "header_timeout").await, 1.0);
    let line = refused_line(&gw, 408).await;
    assert_eq!(line["route"], "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_without_an_answer() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "client_header_timeout = \"500ms\"", "").await;
    let mut conn = RawConn::connect(gw.addr).await;
    let (out, closed) = conn.read_until_close(Duration::from_secs(5)).await;
    assert!(closed, "a connection that never sent a byte stayed open");
    assert!(
        out.is_empty(),
        "nothing to answer, yet: {:?}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idle_time_is_not_a_slow_head() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "client_header_timeout = \"500ms\"", "").await;
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..2 {
        conn.send(format!("GET /k{i} HTTP/1.1\r\nHost: api\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = conn.read_response().await;
        assert_eq!(r.status, 200);
        // Idle longer than client_header_timeout between requests.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    // A head sent in pieces within the timeout passes too.
    for piece in [
        "GET /k2 HTTP/1.1\r\n",
        "Host: api\r\n",
        "X-A: b\r\n",
        "\r\n",
    ] {
        conn.send(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(conn.read_response().await.status, 200);
    assert_eq!(rec.requests().len(), 3);
    assert_eq!(rejected(&gw, "header_timeout").await, 0.0);

    // The clock runs again for every request on the connection: a later head that stalls
    // is refused like a first one.
    conn.send(b"GET /k3 HTTP/1.1\r\nHost: api\r\n")
        .await
        .unwrap();
    let (out, closed) = conn.read_until_close(Duration::from_secs(5)).await;
    assert!(
        closed,
        "a stalled head on a reused connection was not cut off"
    );
    assert_problem(&parse_response(&out_head_and_body(&out)), 408);
    assert_eq!(rec.requests().len(), 3);
    assert_eq!(rejected(&gw, "header_timeout").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_passes_the_guard() {
    let rec = Recorder::start().await;
    let limits =
        "max_header_bytes = \"1KiB\"\nmax_body_bytes = \"2KiB\"\nclient_header_timeout = \"500ms\"";
    let gw = gateway(&rec.target(), limits, "").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    for i in 0..3 {
        let r = h2.get(gw.url(&format!("/h2/{i}"))).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = h2
        .post(gw.url("/h2/body"))
        .body(vec![b'q'; 1500])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h2
        .post(gw.url("/h2/body"))
        .body(vec![b'q'; 3000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(rec.requests().len(), 4);
    // HTTP/2 heads have the same size limit, applied by the h2 codec.
    let r = h2
        .get(gw.url("/h2/big"))
        .header("x-big", "a".repeat(2048))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(rec.requests().len(), 4);
    // A short HTTP/1.0 request is not mistaken for a slow HTTP/2 preface.
    let out = raw_exchange(gw.addr, b"GET /s HTTP/1.0\r\n\r\n").await;
    assert_eq!(parse_response(&out).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_head_has_http1s_limit_of_256_headers() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "", "").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let with_headers = |n: usize| {
        let mut req = h2.get(gw.url("/h2/many"));
        for i in 0..n {
            req = req.header(format!("x-h{i}"), "v");
        }
        req
    };
    assert_eq!(with_headers(200).send().await.unwrap().status(), 200);
    let r = with_headers(300).send().await.unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "the gateway's own answer"
    );
    assert_eq!(rec.requests().len(), 1, "the refused request was forwarded");
    assert_eq!(rejected(&gw, "header_too_large").await, 1.0);
}

/// One smuggling attempt: raw bytes, and what must happen.
struct Case {
    name: &'static str,
    bytes: &'static [u8],
    /// Status the client gets.
    status: u16,
    /// The refusal's `tollgate_rejected_requests_total` reason: `bad_request` for Tollgate's
    /// framing checks, `malformed_head` for a head Pingora's parser refused (answered by the
    /// edge guard); `None` for an answer that is no refusal. Every 4xx is problem+json.
    reason: Option<&'static str>,
    /// Complete requests the backend may receive (0, or 1 with this body).
    forwarded: Option<&'static [u8]>,
}

const CASES: &[Case] = &[
    Case {
        name: "Content-Length and Transfer-Encoding",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api\r\n\r\n",
        status: 400,
        reason: Some("bad_request"),
        forwarded: None,
    },
    Case {
        name: "Transfer-Encoding and Content-Length, other order and case",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api\r\n\r\n",
        status: 400,
        reason: Some("bad_request"),
        forwarded: None,
    },
    Case {
        name: "two different Content-Lengths",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "two equal Content-Lengths",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        status: 400,
        reason: Some("bad_request"),
        forwarded: None,
    },
    Case {
        name: "Content-Length with a sign",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nContent-Length: +4\r\n\r\nabcd",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "Content-Length with non-digits",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nContent-Length: 4a\r\n\r\nabcd",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "Transfer-Encoding: chunked, identity",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "Transfer-Encoding: xchunked",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "Transfer-Encoding: identity, chunked",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        status: 400,
        reason: Some("bad_request"),
        forwarded: None,
    },
    Case {
        name: "Transfer-Encoding twice",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        status: 400,
        reason: Some("bad_request"),
        forwarded: None,
    },
    Case {
        name: "Transfer-Encoding in HTTP/1.0",
        bytes: b"POST /s HTTP/1.0\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "obs-fold continuation line",
        bytes: b"GET /s HTTP/1.1\r\nHost: api\r\nX-A: b\r\n Content-Length: 5\r\n\r\nabcde",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "whitespace before the colon",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nContent-Length : 5\r\n\r\nabcde",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "invalid chunk size",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        status: 400,
        reason: Some("bad_request"),
        forwarded: None,
    },
    Case {
        name: "header name with a bad byte",
        bytes: b"GET /s HTTP/1.1\r\nHost: api\r\nX-A\x01b: c\r\n\r\n",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "header name with a space",
        bytes: b"GET /s HTTP/1.1\r\nHost: api\r\nX A: c\r\n\r\n",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "NUL in a value",
        bytes: b"GET /s HTTP/1.1\r\nHost: api\r\nX-A: b\x00c\r\n\r\n",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "bare CR in a value",
        bytes: b"GET /s HTTP/1.1\r\nHost: api\r\nX-A: b\rContent-Length: 5\r\n\r\nabcde",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "two Host headers",
        bytes: b"GET /s HTTP/1.1\r\nHost: api\r\nHost: admin\r\n\r\n",
        status: 400,
        reason: Some("malformed_head"),
        forwarded: None,
    },
    Case {
        name: "a second request hidden in a body",
        bytes: b"POST /s HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: api\r\n\r\n",
        status: 200,
        reason: None,
        forwarded: Some(b"hello"),
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_never_reach_the_backend_as_two_requests() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "", "").await;
    let mut failures = Vec::new();
    for case in CASES {
        let before = rec.requests().len();
        let out = raw_exchange(gw.addr, case.bytes).await;
        // Let anything forwarded arrive before counting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = rec.requests()[before..].to_vec();
        let answer = (!out.is_empty()).then(|| parse_response(&out_head_and_body(&out)));
        let status = answer.as_ref().map(|r| r.status);
        let problem = answer.as_ref().and_then(|r| r.header("content-type"))
            == Some("application/problem+json");
        let forwarded_ok = match case.forwarded {
            None => got.is_empty(),
            Some(body) => got.len() == 1 && got[0].body == body,
        };
        if status != Some(case.status) || (case.status >= 400 && !problem) || !forwarded_ok {
            failures.push(format!(
                "{}: status {status:?} (want {}), problem+json {problem}, backend got {:?}",
                case.name,
                case.status,
                got.iter()
                    .map(|r| r.request_line().to_string())
                    .collect::<Vec<_>>()
            ));
        }
    }
    // Nothing smuggled ever showed up, whatever the case.
    assert!(rec.requests().iter().all(|r| !r.head.contains("/smuggled")));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for reason in ["bad_request", "malformed_head"] {
        let cases = CASES.iter().filter(|c| c.reason == Some(reason)).count();
        assert_eq!(rejected(&gw, reason).await, cases as f64, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_follow_a_reload() {
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "max_header_bytes = \"1KiB\"", "").await;
    let head = ["GET /r HTTP/1.1", "Host: api", &big_header(2000)];
    assert_eq!(raw_request(gw.addr, &head, b"").await.status, 431);

    let body = format!(
        "\n[upstreams.app]\ntargets = [\"{}\"]\n\n[routes.app]\npath = \"/{{*rest}}\"\nupstream = \"app\"\nmax_body_bytes = \"10B\"\n",
        rec.target()
    );
    let header = gw
        .header()
        .replace("max_header_bytes = \"1KiB\"", "max_header_bytes = \"4KiB\"");
    gw.write_raw(&format!("{header}{body}"));
    let live = crate::support::eventually(Duration::from_secs(10), || async {
        raw_request(gw.addr, &head, b"").await.status == 200
    })
    .await;
    assert!(live, "the new head limit did not apply after the reload");
    let r = client()
        .post(gw.url("/r"))
        .body("more than ten bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_over_the_limit_still_gets_its_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "max_body_bytes = \"1KiB\"", "").await;
    for _ in 0..5 {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        // A client uploading 4 MiB, reading whatever comes back at the same time (as curl does).
        let writer = tokio::spawn(async move {
            let head = "POST /up HTTP/1.1\r\nHost: api\r\nContent-Length: 4194304\r\n\r\n";
            if wr.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'u'; 64 * 1024];
            for _ in 0..64 {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got)).await;
        writer.abort();
        assert!(read.is_ok(), "no answer within 10 s");
        assert!(
            got.starts_with(b"HTTP/1.1 413"),
            "the client did not get its 413 ({read:?}): {:?}",
            String::from_utf8_lossy(&got[..got.len().min(100)])
        );
    }
    assert_eq!(rec.connections(), 0);
}

/// Heads that Pingora's HTTP/1 parser (or its CONNECT check) refuses before any hook of the
/// gateway runs: the status each must get.
fn heads_refused_while_parsed() -> Vec<(&'static str, Vec<u8>, u16)> {
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        (
            "absolute-form authority differing from Host",
            b"GET http://GW.TEST/pub/x HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Host headers",
            b"GET /pub/x HTTP/1.1\r\nHost: gw.test\r\nHost: gw.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space before the colon of Host",
            b"GET /pub/x HTTP/1.1\r\nHost : gw.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "obs-fold",
            b"GET /pub/x HTTP/1.1\r\nHost: gw.test\r\nX-A: b\r\n c\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare CR in a value",
            b"GET /pub/x HTTP/1.1\r\nHost: gw.test\r\nX-A: b\rc\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in a value",
            b"GET /pub/x HTTP/1.1\r\nHost: gw.test\r\nX-A: b\x00c\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Transfer-Encoding: xchunked",
            b"POST /pub/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "Transfer-Encoding: chunked, identity",
            b"POST /pub/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST /pub/x HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "two different Content-Lengths",
            b"POST /pub/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
                .to_vec(),
            400,
        ),
        (
            "Content-Length: -1",
            b"POST /pub/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "300 headers",
            format!("GET /pub/x HTTP/1.1\r\nHost: gw.test\r\n{many_headers}\r\n").into_bytes(),
            400,
        ),
        (
            "HTTP/1.2",
            b"GET /pub/x HTTP/1.2\r\nHost: gw.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/0.9",
            b"GET /pub/x HTTP/0.9\r\nHost: gw.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "method G@T",
            b"G@T /pub/x HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "< and > in the path",
            b"GET /pub/<x> HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "CONNECT",
            b"CONNECT gw.test:443 HTTP/1.1\r\nHost: gw.test:443\r\n\r\n".to_vec(),
            405,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_refused_while_parsed_get_the_gateways_own_answer() {
    // Pingora refuses these while it reads the head, before any hook: it used to answer with
    // its own bare 400/405 (`Server: Pingora`, no body, no request id), uncounted and unlogged.
    let rec = Recorder::start().await;
    let gw = gateway(&rec.target(), "", "").await;
    let cases = heads_refused_while_parsed();
    let mut failures = Vec::new();
    let mut ids = Vec::new();
    for (name, bytes, status) in &cases {
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(bytes).await.unwrap();
        let (out, closed) = conn.read_until_close(Duration::from_secs(5)).await;
        let Ok(r) = crate::support::try_parse_response(&out_head_and_body(&out)) else {
            failures.push(format!("{name}: no answer ({} bytes)", out.len()));
            continue;
        };
        let id = r.header("x-request-id").unwrap_or_default().to_string();
        let problem = r.header("content-type") == Some("application/problem+json")
            && serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|b| b["status"] == *status && b["request_id"] == id.as_str());
        if r.status != *status || !problem || id.is_empty() || !closed {
            failures.push(format!(
                "{name}: status {} (want {status}), problem+json with the request id {problem}, \
                 closed {closed}, headers {:?}",
                r.status, r.headers
            ));
            continue;
        }
        if r.header("server").is_some() {
            failures.push(format!("{name}: Server {:?}", r.header("server")));
        }
        ids.push((*name, id, *status));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(rec.raw().is_empty(), "the backend received bytes");

    // Counted, and logged with the reason under the request id the client got.
    let malformed = cases.iter().filter(|c| c.2 == 400).count() as f64;
    assert_eq!(rejected(&gw, "malformed_head").await, malformed);
    assert_eq!(rejected(&gw, "connect_method").await, 1.0);
    for (name, id, status) in ids {
        let line = gw.log_line(|l| l["request_id"] == id.as_str()).await;
        let reason = if status == 405 {
            "connect_method"
        } else {
            "malformed_head"
        };
        assert_eq!(line["status"], status, "{name}: {line}");
        assert_eq!(line["reason"], reason, "{name}: {line}");
    }

    // A sane request on the same gateway is still served.
    let r = raw_request(gw.addr, &["GET /pub/x HTTP/1.1", "Host: gw.test"], b"").await;
    assert_eq!(r.status, 200);
}
