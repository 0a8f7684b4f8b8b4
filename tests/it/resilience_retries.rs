//! Retries through a real gateway: on 502/503/504 answers, connect errors and timeouts, to
//! another target first; only for the methods the route allows, never a POST that may have
//! reached the upstream, never after response bytes went to the client, never with a body
//! larger than the retry buffer; all inside the route deadline; capped by the retry budget.

use crate::support::misbehaving::Service;
use crate::support::prom::{metric, metric_sum};
use crate::support::resilience::{app_requests, toml_list};
use crate::support::{
    backend, client, eventually, free_port, get, send, Answer, Fault, FaultyProxy, GatewayHandle,
};
use std::time::Duration;

async fn retries(gw: &GatewayHandle, upstream: &str, reason: &str) -> f64 {
    metric(
        gw,
        "tollgate_upstream_retries_total",
        &[("upstream", upstream), ("reason", reason)],
    )
    .await
}

async fn all_retries(gw: &GatewayHandle, upstream: &str) -> f64 {
    metric_sum(
        gw,
        "tollgate_upstream_retries_total",
        &[("upstream", upstream)],
    )
    .await
}

/// A gateway with upstream `u` (these targets) and route `r` at `/r` with this `retry` policy.
async fn retrying_gateway(targets: &[String], retry: &str) -> GatewayHandle {
    retrying_route(targets, retry, "").await
}

/// [`retrying_gateway`] with more keys (`route_extra`) for route `r`.
async fn retrying_route(targets: &[String], retry: &str, route_extra: &str) -> GatewayHandle {
    let targets = toml_list(targets);
    GatewayHandle::start(&format!(
        r#"
[upstreams.u]
targets = [{}]

[routes.r]
path = "/r"
upstream = "u"
retry = {retry}
{route_extra}
"#,
        targets
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_on_the_other_target() {
    let bad = backend("bad").status(503).start().await;
    let good = backend("good").start().await;
    let gw = retrying_gateway(
        &[bad.target(), good.target()],
        r#"{ attempts = 2, backoff = "1ms", max_backoff = "5ms" }"#,
    )
    .await;
    for _ in 0..20 {
        let a = get(&gw.url("/r")).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.backend().as_deref(), Some("good"));
    }
    // Each request tried the 503 target at most once: the retry went to the untried one. And
    // retries do not move the rotation, so first attempts still alternate: half of them
    // reach the failing target, not all of them.
    assert_eq!(bad.count(), 10, "first attempts on the failing target");
    assert_eq!(good.count(), 20);
    assert_eq!(retries(&gw, "u", "status_503").await, bad.count() as f64);
    // The access log says which requests took two attempts, and where the last one went.
    let retried = |l: &serde_json::Value| l["attempts"] == 2;
    let lines = || {
        gw.access_log()
            .into_iter()
            .filter(retried)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(3), || async { lines().len() == 10 }).await;
    let lines = lines();
    assert_eq!(lines.len(), 10, "{:?}", gw.access_log());
    assert!(lines.iter().all(|l| l["target"] == good.target().as_str()));
    let single = gw
        .access_log()
        .iter()
        .filter(|l| l.get("attempts").is_none())
        .count();
    assert_eq!(single, 10, "first attempts that succeeded carry no count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_what_a_failing_target_receives() {
    let bad = backend("bad").status(503).start().await;
    let (ratio, floor) = (0.1, 10.0); // floor = min_per_second × window = 1 × 10
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.u]
targets = ["{}"]
retry_budget = {{ ratio = {ratio}, window = "10s", min_per_second = 1 }}

[routes.r]
path = "/r"
upstream = "u"
retry = {{ attempts = 3, backoff = "1ms", max_backoff = "2ms" }}
"#,
        bad.target()
    ))
    .await;
    let n = 100;
    for _ in 0..n {
        let a = get(&gw.url("/r")).await.unwrap();
        // The last 503 answer is passed on (the upstream answered; it is not a gateway error).
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(a.backend().as_deref(), Some("bad"));
    }
    let reached = bad.count() as f64;
    // Without a budget: 3 × 100 = 300.
    let cap = (1.0 + ratio) * n as f64 + floor;
    assert!(
        reached <= cap,
        "{reached} requests reached the target for {n} client requests (cap {cap})"
    );
    // The budget was used, not just never needed.
    assert!(reached >= n as f64 + floor, "{reached}");
    assert_eq!(retries(&gw, "u", "status_503").await, reached - n as f64);
    let exhausted = metric(
        &gw,
        "tollgate_upstream_retry_budget_exhausted_total",
        &[("upstream", "u")],
    )
    .await;
    assert!(exhausted > 0.0, "budget exhaustion not counted");
}

/// Sends a POST with a small JSON body.
async fn post(url: &str) -> Result<Answer, String> {
    send(
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"order":1}"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_retried_once_it_was_sent() {
    // One target resets every connection after the request started arriving; the other works.
    let sink = backend("sink").start().await;
    let reset = FaultyProxy::start(sink.addr).await;
    reset.set_fault(Fault::Reset);
    let good = backend("good").start().await;
    let gw = retrying_gateway(
        &[reset.target(), good.target()],
        r#"{ attempts = 3, backoff = "1ms", max_backoff = "5ms", methods = ["GET", "POST"] }"#,
    )
    .await;
    let url = gw.url("/r");
    let mut failed = 0;
    for _ in 0..4 {
        let a = post(&url).await.unwrap();
        match a.status {
            502 => {
                failed += 1;
                assert_eq!(
                    a.header("content-type"),
                    Some("application/problem+json"),
                    "{a:?}"
                );
            }
            200 => assert_eq!(a.backend().as_deref(), Some("good")),
            _ => panic!("unexpected answer {a:?}"),
        }
    }
    // Round robin starts with the resetting target, so at least one POST hit it.
    assert!(failed >= 1);
    // Each POST that hit it was sent there once and never to the other target.
    assert_eq!(reset.connections(), failed);
    assert_eq!(good.count(), 4 - failed);
    assert_eq!(sink.count(), 0);
    assert_eq!(all_retries(&gw, "u").await, 0.0);

    // The same failure on a GET is retried on the other target.
    for _ in 0..4 {
        let a = get(&url).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.backend().as_deref(), Some("good"));
    }
    assert!(retries(&gw, "u", "error").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_post_is_retried_only_when_the_route_allows_post() {
    let dead = format!("127.0.0.1:{}", free_port());
    let good = backend("good").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.u]
targets = ["{dead}", "{}"]

[routes.allowed]
path = "/allowed"
upstream = "u"
retry = {{ attempts = 2, backoff = "1ms", max_backoff = "5ms", methods = ["GET", "POST"] }}

[routes.idempotent_only]
path = "/default"
upstream = "u"
retry = {{ attempts = 2, backoff = "1ms", max_backoff = "5ms" }}
"#,
        good.target()
    ))
    .await;
    // POST listed: a refused connection sent nothing, so it is tried on the other target.
    for _ in 0..4 {
        let a = post(&gw.url("/allowed")).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(good.count(), 4);
    let connect_retries = retries(&gw, "u", "connect_error").await;
    assert!(connect_retries >= 1.0);

    // POST not listed (default: idempotent methods): not retried, the client gets a 502.
    let mut refused = 0;
    for _ in 0..4 {
        let a = post(&gw.url("/default")).await.unwrap();
        match a.status {
            502 => refused += 1,
            200 => {}
            _ => panic!("unexpected answer {a:?}"),
        }
    }
    assert!(refused >= 1);
    assert_eq!(good.count(), 4 + 4 - refused);
    assert_eq!(retries(&gw, "u", "connect_error").await, connect_retries);
    // A GET on that route is retried.
    for _ in 0..4 {
        assert_eq!(get(&gw.url("/default")).await.unwrap().status, 200);
    }
    assert!(retries(&gw, "u", "connect_error").await > connect_retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_for_get_but_not_for_post() {
    let slow = backend("slow").delay(Duration::from_secs(2)).start().await;
    let fast = backend("fast").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.u]
targets = ["{}", "{}"]
read_timeout = "200ms"

[routes.r]
path = "/r"
upstream = "u"
retry = {{ attempts = 2, backoff = "1ms", max_backoff = "5ms", methods = ["GET", "POST"] }}
"#,
        slow.target(),
        fast.target()
    ))
    .await;
    // Round robin: the first request of each pair goes to the slow target.
    let a = get(&gw.url("/r")).await.unwrap();
    assert_eq!((a.status, a.backend().as_deref()), (200, Some("fast")));
    assert_eq!(retries(&gw, "u", "timeout").await, 1.0);
    assert_eq!(slow.count(), 1);

    let mut timed_out = 0;
    for _ in 0..2 {
        let a = post(&gw.url("/r")).await.unwrap();
        match a.status {
            504 => timed_out += 1,
            200 => {}
            _ => panic!("unexpected answer {a:?}"),
        }
    }
    assert_eq!(timed_out, 1);
    assert_eq!(slow.count(), 2);
    assert_eq!(retries(&gw, "u", "timeout").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_retried_after_response_bytes_reached_the_client() {
    let big = vec![b'x'; 256 * 1024];
    let origin = backend("big").body(big.clone()).start().await;
    let cut = FaultyProxy::start(origin.addr).await;
    cut.set_fault(Fault::ResetAfterResponseBytes(40_000));
    let gw = retrying_gateway(
        &[cut.target()],
        r#"{ attempts = 3, backoff = "1ms", max_backoff = "5ms" }"#,
    )
    .await;
    let got = get(&gw.url("/r")).await;
    match &got {
        Err(_) => {}
        Ok(a) => assert!(
            a.body.len() < big.len(),
            "the whole body arrived through a connection reset mid-response: {} bytes",
            a.body.len()
        ),
    }
    assert_eq!(origin.count(), 1, "the request was sent again");
    assert_eq!(cut.connections(), 1);
    assert_eq!(all_retries(&gw, "u").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_retry_buffer_is_not_retried() {
    let bad = backend("bad").status(503).start().await;
    let good = backend("good").start().await;
    let gw = retrying_gateway(
        &[bad.target(), good.target()],
        r#"{ attempts = 3, backoff = "1ms", max_backoff = "5ms" }"#,
    )
    .await;
    let put = |body: Vec<u8>| send(client().put(gw.url("/r")).body(body));

    // 1 KiB: buffered, so a 503 is retried on the other target with the same body.
    let small = pattern(1024, 7);
    for _ in 0..2 {
        let a = put(small.clone()).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert!(bad.count() >= 1);
    let retried = retries(&gw, "u", "status_503").await;
    assert_eq!(retried, bad.count() as f64);
    assert!(good.received().iter().all(|r| r.body == small));

    // 100 KiB: more than Pingora's 64 KiB retry buffer, so the 503 is the answer.
    let large = pattern(100 * 1024, 9);
    let (bad_before, good_before) = (bad.count(), good.count());
    let mut passed_on = 0;
    for _ in 0..4 {
        let a = put(large.clone()).await.unwrap();
        match a.status {
            503 => {
                passed_on += 1;
                assert_eq!(a.backend().as_deref(), Some("bad"));
            }
            200 => {}
            _ => panic!("unexpected answer {a:?}"),
        }
    }
    assert!(passed_on >= 1);
    assert_eq!(bad.count() - bad_before, passed_on);
    assert_eq!(good.count() - good_before, 4 - passed_on);
    assert_eq!(retries(&gw, "u", "status_503").await, retried);
    assert!(bad
        .received()
        .iter()
        .skip(bad_before)
        .all(|r| r.body == large));
}

/// `len` bytes of a repeating pattern that starts at `seed`, so a shifted chunk shows.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) * 31 % 251) as u8).collect()
}

/// A route with a 400 ms deadline in front of `targets`, retrying up to 5 attempts.
fn deadline_config(targets: &[String], read_timeout: &str, backoff: &str) -> String {
    let list = toml_list(targets);
    format!(
        r#"
[upstreams.u]
targets = [{}]
read_timeout = "{read_timeout}"

[routes.r]
path = "/r"
upstream = "u"
timeout = "400ms"
retry = {{ attempts = 5, backoff = "{backoff}", max_backoff = "{backoff}" }}
"#,
        list
    )
}

fn assert_deadline_504(a: &Answer) {
    assert_eq!(a.status, 504, "{a:?}");
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{a:?}"
    );
    assert!(
        a.took >= Duration::from_millis(350),
        "504 before the deadline: {:?}",
        a.took
    );
    assert!(
        a.took < Duration::from_millis(1200),
        "the 400 ms deadline was not honoured: {:?}",
        a.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_deadline_bounds_slow_targets_even_with_retries() {
    let s1 = backend("s1").delay(Duration::from_secs(3)).start().await;
    let s2 = backend("s2").delay(Duration::from_secs(3)).start().await;

    // Each attempt may wait up to 30 s; the deadline cuts the first one.
    let gw =
        GatewayHandle::start(&deadline_config(&[s1.target(), s2.target()], "30s", "10ms")).await;
    for _ in 0..2 {
        assert_deadline_504(&get(&gw.url("/r")).await.unwrap());
    }
    assert_eq!(
        s1.count() + s2.count(),
        2,
        "a timed-out deadline was retried"
    );
    drop(gw);

    // Each attempt times out after 150 ms and is retried; the deadline still ends it.
    let gw = GatewayHandle::start(&deadline_config(
        &[s1.target(), s2.target()],
        "150ms",
        "10ms",
    ))
    .await;
    let before = s1.count() + s2.count();
    assert_deadline_504(&get(&gw.url("/r")).await.unwrap());
    let attempts = s1.count() + s2.count() - before;
    assert!((2..=5).contains(&attempts), "{attempts} attempts");
    assert!(retries(&gw, "u", "timeout").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_deadline_bounds_a_blackholed_target() {
    let origin = backend("origin").start().await;
    let hole = FaultyProxy::start(origin.addr).await;
    hole.set_fault(Fault::Blackhole);
    let gw = GatewayHandle::start(&deadline_config(&[hole.target()], "30s", "10ms")).await;
    assert_deadline_504(&get(&gw.url("/r")).await.unwrap());
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_never_pushes_a_request_past_the_deadline() {
    // Every answer is a fast 503, every backoff is 300 ms: without the deadline cap, 5 attempts
    // would take about a second.
    let bad = backend("bad").status(503).start().await;
    let gw = GatewayHandle::start(&deadline_config(&[bad.target()], "30s", "300ms")).await;
    for _ in 0..3 {
        let a = get(&gw.url("/r")).await.unwrap();
        assert!(matches!(a.status, 503 | 504), "{a:?}");
        assert!(
            a.took < Duration::from_millis(1200),
            "the 400 ms deadline was not honoured: {:?}",
            a.took
        );
    }
    assert!(app_requests(&bad) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_prefers_an_untried_backup_to_the_primary_that_just_failed() {
    // The whole primary zone answers 503 and nothing has marked it unusable yet: the retry goes
    // to the backup zone rather than back to the primary that just failed.
    let primary = backend("primary").status(503).start().await;
    let backup = backend("backup").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.u]
targets = ["{}"]
backup_targets = ["{}"]

[routes.r]
path = "/r"
upstream = "u"
retry = {{ attempts = 2, backoff = "1ms", max_backoff = "5ms" }}
"#,
        primary.target(),
        backup.target()
    ))
    .await;
    for _ in 0..10 {
        let a = get(&gw.url("/r")).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.backend().as_deref(), Some("backup"));
    }
    // First attempts still go to the (usable) primary; only the retries went to the backup.
    assert_eq!(primary.count(), 10);
    assert_eq!(backup.count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_killing_its_connections_is_replayed_once_not_once_per_pooled_connection() {
    // A service that reads a request and closes without answering (a "query of death") on
    // each of several pooled connections: one replay on a new connection, as for a keep-alive
    // connection the service had closed meanwhile, not one per connection in the pool.
    let svc = Service::start();
    let gw = svc
        .gateway(
            "5s",
            r#"
[routes.plain]
path = "/{*rest}"
upstream = "svc"

[routes.retrying]
path = "/retrying/{*rest}"
upstream = "svc"
rewrite = "/{rest}"
retry = { attempts = 2, backoff = "1ms", max_backoff = "5ms" }
"#,
        )
        .await;
    let pause = gw.url("/pause");
    let warm_pool = || async {
        let pauses = (0..8).map(|_| get(&pause));
        for a in futures::future::join_all(pauses).await {
            assert_eq!(a.unwrap().status, 200);
        }
    };
    for (method, path, line, most) in [
        ("GET", "/die", "GET /die", 2),
        ("DELETE", "/die", "DELETE /die", 2),
        ("POST", "/die", "POST /die", 1),
        // The route's own retry, then the one replay.
        ("GET", "/retrying/die", "GET /die", 3),
    ] {
        warm_pool().await;
        let before = svc.count(line);
        let request = client().request(method.parse().unwrap(), gw.url(path));
        let a = send(request).await.unwrap();
        assert_eq!(a.status, 502, "{method} {path}: {a:?}");
        let sent = svc.count(line) - before;
        assert!(
            (1..=most).contains(&sent),
            "{method} {path} reached the service {sent} times"
        );
    }
    // The replays are retries like any other in the metrics.
    assert!(retries(&gw, "svc", "stale_connection").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_body_counts_once_against_the_limit_and_in_the_log() {
    let bad = backend("bad").status(503).start().await;
    let good = backend("good").start().await;
    let gw = retrying_route(
        &[bad.target(), good.target()],
        r#"{ attempts = 3, backoff = "1ms", max_backoff = "5ms" }"#,
        r#"max_body_bytes = "30KiB""#,
    )
    .await;
    // 20,000 bytes: within the limit, though twice it is not.
    let body = pattern(20_000, 5);
    for _ in 0..2 {
        let a = send(client().put(gw.url("/r")).body(body.clone()))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(bad.count(), 1, "one of the two was retried");
    assert!(good.received().iter().all(|r| r.body == body));
    let logged = gw.log_line(|l| l["method"] == "PUT").await;
    assert_eq!(logged["bytes_in"], 20_000, "{logged}");
    for line in gw.access_log().iter().filter(|l| l["method"] == "PUT") {
        assert_eq!(line["bytes_in"], 20_000, "{line}");
    }
}
