//! Aggregate parts against a misbehaving service (a raw HTTP/1.1 server that closes without
//! answering, hangs, varies its answer) and a client that goes away: a part is sent twice only
//! when that is safe, the upstream's timeouts apply to parts, a client gone calls its parts
//! off, and the merged answer says what it varies on.

use crate::support::misbehaving::Service;
use crate::support::prom::metric;
use crate::support::{call, eventually, RawConn};
use std::time::{Duration, Instant};

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
