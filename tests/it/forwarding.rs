//! What crosses the gateway: forwarded headers, hop-by-hop headers, request ids, large bodies
//! both ways, and paths with dot segments.

use crate::support::{backend, client, pseudo_random, raw_request, sha256_hex, GatewayHandle};
use sha2::{Digest, Sha256};

/// A gateway with one catch-all route to `target`.
async fn gateway_to(target: &str) -> GatewayHandle {
    GatewayHandle::start(&crate::support::gateway::catch_all(target, "")).await
}

/// A request id the gateway could have made or kept: non-empty, at most 128 safe characters.
fn is_sane_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_reach_the_backend() {
    let b = backend("app").start().await;
    let gw = gateway_to(&b.target()).await;
    let http = client();

    let r = http
        .get(gw.url("/a?q=1"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(gw.url("/b")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let got = b.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(got[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(got[0].header("x-forwarded-host"), Some("shop.example.com"));
    // Without a client value the list starts with the client.
    assert_eq!(got[1].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got[1].header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        got[1].header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    // One X-Forwarded-For line, not a second header next to the client's.
    assert_eq!(got[0].headers.get_all("x-forwarded-for").iter().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let b = backend("app")
        .header("connection", "x-resp-hop")
        .header("x-resp-hop", "hop-value")
        .header("proxy-authenticate", "Basic realm=\"upstream\"")
        .header("x-resp-end", "end-value")
        .start()
        .await;
    let gw = gateway_to(&b.target()).await;
    let resp = raw_request(
        gw.addr,
        &[
            "GET /hop HTTP/1.1",
            "Host: gw.test",
            "Connection: close, X-Hop-Custom",
            "X-Hop-Custom: hop-secret",
            "Keep-Alive: timeout=5, max=100",
            "TE: trailers",
            "Proxy-Authorization: Basic dXNlcjpwYXNz",
            "X-End-To-End: kept",
        ],
        b"",
    )
    .await;
    assert_eq!(resp.status, 200);

    let got = b.received();
    assert_eq!(got.len(), 1);
    let seen = &got[0];
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    for name in ["x-hop-custom", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} was forwarded: {:?}",
            seen.headers
        );
    }
    let upstream_connection = seen.header("connection").unwrap_or("").to_ascii_lowercase();
    assert!(
        !upstream_connection.contains("x-hop-custom"),
        "{upstream_connection}"
    );
    assert!(
        !format!("{:?}", seen.headers).contains("hop-secret"),
        "{:?}",
        seen.headers
    );

    // And on the way back.
    assert_eq!(resp.header("x-resp-end"), Some("end-value"));
    assert_eq!(resp.header("x-resp-hop"), None, "{:?}", resp.headers);
    assert_eq!(
        resp.header("proxy-authenticate"),
        None,
        "{:?}",
        resp.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surrogate_key_never_reaches_clients_of_a_route_without_a_cache() {
    // `Surrogate-Key` carries the upstream's purge tags, the gateway's business only; a
    // route with no cache used to pass it on. Over HTTP/1.1 and h2c alike.
    let b = backend("users")
        .header("surrogate-key", "users")
        .header("x-resp-end", "end-value")
        .start()
        .await;
    let gw = gateway_to(&b.target()).await;
    let resp = raw_request(gw.addr, &["GET /users/1 HTTP/1.1", "Host: gw.test"], b"").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-resp-end"), Some("end-value"), "{resp:?}");
    assert_eq!(resp.header("surrogate-key"), None, "{resp:?}");

    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = h2c.get(gw.url("/users/2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-resp-end"], "end-value");
    assert!(r.headers().get("surrogate-key").is_none(), "{r:?}");
    assert_eq!(b.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sane_client_request_id_is_kept() {
    let b = backend("app").start().await;
    let gw = gateway_to(&b.target()).await;
    let id = "client-Id_42.7:abc";
    let r = client()
        .get(gw.url("/x"))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], id);
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1);
    assert_eq!(b.received()[0].header("x-request-id"), Some(id));
    assert_eq!(
        b.received()[0]
            .headers
            .get_all("x-request-id")
            .iter()
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_named_in_connection_still_reaches_the_backend() {
    // `Connection: x-request-id` makes the client's id hop-by-hop, so it is removed on the way
    // up; the id is the gateway's to attach, and the backend must get the one the client, the
    // response and the log see.
    let b = backend("app").start().await;
    let gw = gateway_to(&b.target()).await;
    for (i, connection) in ["close, x-request-id", "X-Request-ID, close"]
        .iter()
        .enumerate()
    {
        let id = format!("abc-{i}");
        let r = raw_request(
            gw.addr,
            &[
                &format!("GET /id/{i} HTTP/1.1"),
                "Host: gw.test",
                &format!("Connection: {connection}"),
                &format!("X-Request-Id: {id}"),
            ],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{connection}");
        assert_eq!(r.header("x-request-id"), Some(id.as_str()), "{connection}");
        let seen = &b.received()[i];
        assert_eq!(
            seen.headers
                .get_all("x-request-id")
                .iter()
                .collect::<Vec<_>>(),
            [id.as_str()],
            "{connection}: {:?}",
            seen.headers
        );
        let line = gw.log_line(|l| l["request_id"] == id.as_str()).await;
        assert_eq!(line["path"], format!("/id/{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_request_without_a_host_goes_up_with_the_targets_address_as_host() {
    // HTTP/1.0 may name no host; what goes upstream is HTTP/1.1, which must (RFC 9112 §3.2).
    // Such a request names the target it is sent to, as nginx's default `$proxy_host` does
    // (and as the gateway's health checks and aggregate parts do); one that named a host keeps
    // it. X-Forwarded-Host says which host the request was routed by: none.
    let rec = crate::support::Recorder::start().await;
    let gw = gateway_to(&rec.target()).await;
    let target = rec.target();
    for (head, host, forwarded_host) in [
        (vec!["GET /pub/x HTTP/1.0"], target.as_str(), None),
        (vec!["GET /pub/x HTTP/1.0", "Host: "], target.as_str(), None),
        (
            vec!["GET /pub/x HTTP/1.0", "Host: shop.example"],
            "shop.example",
            Some("shop.example"),
        ),
        (
            vec!["GET http://shop.example/pub/x HTTP/1.0"],
            "shop.example",
            Some("shop.example"),
        ),
    ] {
        let before = rec.count();
        let r = raw_request(gw.addr, &head, b"").await;
        assert_eq!(r.status, 200, "{head:?}");
        let [seen] = &rec.requests_since(before)[..] else {
            panic!("{head:?}: {} requests", rec.count() - before)
        };
        assert_eq!(seen.request_line(), "GET /pub/x HTTP/1.1", "{head:?}");
        assert_eq!(
            seen.header_values("host"),
            [host],
            "{head:?}\n{}",
            seen.head
        );
        let want: Vec<&str> = forwarded_host.into_iter().collect();
        assert_eq!(seen.header_values("x-forwarded-host"), want, "{head:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insane_or_missing_request_id_is_replaced() {
    let b = backend("app").start().await;
    let gw = gateway_to(&b.target()).await;
    let http = client();
    let long = "a".repeat(300);
    let sent: [Option<&str>; 4] = [
        Some("has spaces in it"),
        Some(long.as_str()),
        Some("quote\"and;semicolon"),
        None,
    ];
    let mut returned = Vec::new();
    for (i, id) in sent.iter().enumerate() {
        let mut req = http.get(gw.url(&format!("/id/{i}")));
        if let Some(id) = id {
            req = req.header("x-request-id", *id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let got = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(is_sane_id(&got), "generated id {got:?}");
        if let Some(id) = id {
            assert_ne!(&got, id);
        }
        let seen = &b.received()[i];
        assert_eq!(seen.uri, format!("/id/{i}"));
        assert_eq!(seen.header("x-request-id"), Some(got.as_str()));
        assert_eq!(seen.headers.get_all("x-request-id").iter().count(), 1);
        returned.push(got);
    }
    let mut unique = returned.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), returned.len(), "ids repeat: {returned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mib_request_body_arrives_intact() {
    let b = backend("app").start().await;
    let gw = gateway_to(&b.target()).await;
    let body = pseudo_random(5 * 1024 * 1024 + 123, 7);
    let want = sha256_hex(&body);
    let r = client()
        .post(gw.url("/upload"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].body.len(), body.len());
    assert_eq!(sha256_hex(&got[0].body), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_body_arrives_intact() {
    let b = backend("app").start().await;
    let gw = gateway_to(&b.target()).await;
    let body = pseudo_random(1024 * 1024 + 17, 11);
    // Uneven chunk sizes, as a streaming client would send.
    let mut wire = Vec::new();
    for chunk in body.chunks(65_521) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_request(
        gw.addr,
        &[
            "PUT /stream HTTP/1.1",
            "Host: gw.test",
            "Transfer-Encoding: chunked",
        ],
        &wire,
    )
    .await;
    assert_eq!(resp.status, 200);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.len(), body.len());
    assert_eq!(sha256_hex(&got[0].body), sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20mib_response_streams_back_intact() {
    let payload = pseudo_random(20 * 1024 * 1024 + 5, 3);
    let want = sha256_hex(&payload);
    let b = backend("app").body(payload.clone()).start().await;
    let gw = gateway_to(&b.target()).await;
    let mut r = client().get(gw.url("/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut chunks = 0usize;
    // Bounded: the client gives up after 10 s, and 20 MiB never needs a million chunks.
    while let Some(chunk) = r.chunk().await.unwrap() {
        len += chunk.len();
        hasher.update(&chunk);
        chunks += 1;
        assert!(chunks < 1_000_000, "too many chunks");
    }
    assert_eq!(len, payload.len());
    assert_eq!(hex::encode(hasher.finalize()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_refused_before_the_backend() {
    let b = backend("app").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.app]
targets = ["{}"]

[routes.public]
path = "/public/{{*rest}}"
upstream = "app"
"#,
        b.target()
    ))
    .await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2E/admin",
        "/public/a/..",
        "/public/./x",
        "/public/%2e/x",
    ] {
        let line = format!("GET {path} HTTP/1.1");
        let resp = raw_request(gw.addr, &[&line, "Host: gw.test"], b"").await;
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        assert!(
            resp.header("x-request-id").is_some_and(is_sane_id),
            "{path}"
        );
        assert_eq!(resp.json()["status"], 400, "{path}");
    }
    assert_eq!(b.count(), 0, "the backend received {:?}", b.received());

    // Dots inside a segment are ordinary characters.
    let resp = raw_request(
        gw.addr,
        &["GET /public/..hidden/a.b..c HTTP/1.1", "Host: gw.test"],
        b"",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(b.received()[0].uri, "/public/..hidden/a.b..c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_forwarded_the_same_way() {
    let b = backend("app").start().await;
    let gw = gateway_to(&b.target()).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let body = pseudo_random(300 * 1024, 5);
    let r = h2
        .post(gw.url("/h2/path?x=1"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-request-id", "h2-client-id")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "h2-client-id");
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"app"}"#);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].uri, "/h2/path?x=1");
    assert_eq!(
        got[0].header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(got[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        got[0].header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    assert_eq!(got[0].header("x-request-id"), Some("h2-client-id"));
    assert_eq!(sha256_hex(&got[0].body), sha256_hex(&body));
}

/// Reads from `stream` into `buf` until `done(buf)` or EOF, at most 10 s.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) {
    use tokio::io::AsyncReadExt;
    let fut = async {
        let mut chunk = vec![0u8; 64 * 1024];
        while !done(buf) {
            let n = stream.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut)
        .await
        .expect("read took over 10 s");
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_through_without_waiting_for_the_end() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    // A backend that reports when the first 64 KiB of body reached it, then reads the rest.
    let listener = crate::support::listener();
    let target = listener.local_addr().unwrap().to_string();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_until(&mut s, &mut buf, |b| {
            head_end(b).is_some_and(|h| b.len() - h >= 64 * 1024)
        })
        .await;
        let _ = first_tx.send(());
        // The whole body: Content-Length framing or chunked, whichever the gateway chose.
        read_until(&mut s, &mut buf, |b| {
            let Some(h) = head_end(b) else { return false };
            let head = String::from_utf8_lossy(&b[..h]).to_ascii_lowercase();
            match head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(len) => b.len() - h >= len,
                None => b.ends_with(b"\r\n0\r\n\r\n"),
            }
        })
        .await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await
            .unwrap();
        buf
    });
    let gw = gateway_to(&target).await;

    let body = pseudo_random(512 * 1024, 9);
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&body[..128 * 1024]).await.unwrap();
    // The rest is held back until the backend has seen the start: a gateway that buffered
    // whole request bodies would never get there.
    tokio::time::timeout(Duration::from_secs(5), first_rx)
        .await
        .expect("the backend saw no body while the client was still sending")
        .unwrap();
    client.write_all(&body[128 * 1024..]).await.unwrap();
    let mut resp = Vec::new();
    read_until(&mut client, &mut resp, |_| false).await;
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    assert!(resp.ends_with(b"ok"));
    let seen = backend.await.unwrap();
    let h = head_end(&seen).unwrap();
    let seen_head = String::from_utf8_lossy(&seen[..h]).to_ascii_lowercase();
    assert!(
        seen_head.starts_with("post /upload http/1.1"),
        "{seen_head}"
    );
    let seen_body = if seen_head.contains("transfer-encoding: chunked") {
        dechunk(&seen[h..])
    } else {
        seen[h..].to_vec()
    };
    assert_eq!(seen_body.len(), body.len());
    assert_eq!(sha256_hex(&seen_body), sha256_hex(&body));
}

/// Decodes a complete chunked body (no trailers).
fn dechunk(mut wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // Bounded by the input: each round consumes at least the size line.
    loop {
        let line_end = wire
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&wire[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        wire = &wire[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&wire[..size]);
        wire = &wire[size + 2..];
    }
}

/// A backend for one request that sends `parts` (`gap` after each), then waits up to 10 s for
/// the test to say its client has them, then sends `tail`. Resolves to whether the test said so.
async fn pausing_backend(
    parts: Vec<Vec<u8>>,
    gap: std::time::Duration,
    tail: &'static [u8],
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<bool>,
) {
    use tokio::io::AsyncWriteExt;
    let listener = crate::support::listener();
    let target = listener.local_addr().unwrap().to_string();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_until(&mut s, &mut buf, |b| head_end(b).is_some()).await;
        for part in parts {
            s.write_all(&part).await.unwrap();
            tokio::time::sleep(gap).await;
        }
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), got_rx).await;
        s.write_all(tail).await.unwrap();
        waited.is_ok()
    });
    (target, got_tx, backend)
}

/// Reads the response body into `got` until it holds `n` bytes or ends; false after 5 s.
async fn read_at_least(r: &mut reqwest::Response, got: &mut Vec<u8>, n: usize) -> bool {
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while got.len() < n {
            match r.chunk().await.unwrap() {
                Some(c) => got.extend_from_slice(&c),
                None => break,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_back_without_waiting_for_the_end() {
    // A backend that sends 64 KiB, then waits for the client to have it before finishing.
    let first = pseudo_random(64 * 1024, 13);
    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    out.extend_from_slice(format!("{:x}\r\n", first.len()).as_bytes());
    out.extend_from_slice(&first);
    out.extend_from_slice(b"\r\n");
    let (target, got_tx, backend) = pausing_backend(
        vec![out],
        std::time::Duration::ZERO,
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let gw = gateway_to(&target).await;
    let mut r = client().get(gw.url("/stream")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut got = Vec::new();
    // A gateway that buffered whole responses would deliver nothing before the backend ends.
    assert!(
        read_at_least(&mut r, &mut got, first.len()).await,
        "no body reached the client while the backend was still sending"
    );
    let _ = got_tx.send(());
    while let Some(c) = r.chunk().await.unwrap() {
        got.extend_from_slice(&c);
        assert!(got.len() <= first.len() + 5, "more body than sent");
    }
    assert_eq!(&got[..first.len()], &first[..]);
    assert_eq!(&got[first.len()..], b"hello");
    assert!(
        backend.await.unwrap(),
        "the backend was not released by the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sized_response_still_arriving_is_held_back_at_most_one_write_buffer() {
    // Bodies with a Content-Length gather in the client connection's write buffer (one write
    // for head and body); while the upstream is still sending, no more than that buffer may
    // wait at the gateway.
    let first = pseudo_random(64 * 1024, 17);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        first.len() + 5
    );
    // In pieces smaller than the buffer, apart, as a slow upstream sends: each piece reaches
    // the gateway in a read of its own.
    let mut parts = vec![head.into_bytes()];
    parts.extend(first.chunks(4096).map(<[u8]>::to_vec));
    let (target, got_tx, backend) =
        pausing_backend(parts, std::time::Duration::from_millis(3), b"hello").await;
    let gw = gateway_to(&target).await;
    let mut r = client().get(gw.url("/sized")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let must_arrive = first.len() - tollgate::edge::CLIENT_WRITE_BUFFER;
    let mut got = Vec::new();
    assert!(
        read_at_least(&mut r, &mut got, must_arrive).await,
        "more than one write buffer of body waited at the gateway"
    );
    let _ = got_tx.send(());
    while let Some(c) = r.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(&got[..first.len()], &first[..]);
    assert_eq!(&got[first.len()..], b"hello");
    assert!(backend.await.unwrap(), "the backend was not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_arrives_in_normal_form_and_query_and_header_values_byte_for_byte() {
    // The gateway edits headers on the plain request parts: every end-to-end header value and
    // the query must come through unchanged; the path arrives as it was routed (encoded
    // unreserved characters decoded, hex upper-cased), odd but legal characters kept.
    let app = backend("app").start().await;
    let gw = gateway_to(&app.target()).await;
    let target = "/v1/a%3fb/%7Euser/x;y=1/caf%C3%A9?q=a%20b&empty=&flag&q=2&s=%2f..%2F";
    let normal = "/v1/a%3Fb/~user/x;y=1/caf%C3%A9?q=a%20b&empty=&flag&q=2&s=%2f..%2F";
    let request_line = format!("GET {target} HTTP/1.1");
    let r = raw_request(
        gw.addr,
        &[
            &request_line,
            "Host: api.example.com",
            "X-Custom-Header: Value With  Spaces, and, commas",
            "Accept: application/json;q=0.9, */*;q=0.1",
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &app.received()[0];
    assert_eq!(seen.uri, normal);
    assert_eq!(
        seen.header("x-custom-header"),
        Some("Value With  Spaces, and, commas")
    );
    assert_eq!(
        seen.header("accept"),
        Some("application/json;q=0.9, */*;q=0.1")
    );
    assert_eq!(seen.header("host"), Some("api.example.com"));
}
