//! Route fallbacks: when the gateway itself would answer 502/503/504 (nothing reachable, no
//! usable target, deadline passed) a route with `fallback` serves it instead, marked with
//! `x-tollgate-fallback: 1` and counted; an answer the upstream did give is never replaced.

use crate::support::prom::metric;
use crate::support::resilience::{app_requests, healthy_gauge, toml_list};
use crate::support::{
    assert_problem, backend, client, eventually, free_port, get, send, Answer, GatewayHandle,
};
use std::time::Duration;

/// Two routes on upstream `u`: `/soft` with a fallback, `/hard` without. `u_extra` goes into
/// `[upstreams.u]`, `route_extra` into both routes.
fn config(targets: &[String], u_extra: &str, route_extra: &str) -> String {
    let list = toml_list(targets);
    format!(
        r#"
[upstreams.u]
targets = [{}]
{u_extra}

[routes.soft]
path = "/soft"
upstream = "u"
fallback = {{ status = 503, body = '{{"error":"users unavailable"}}', content_type = "application/json" }}
{route_extra}

[routes.hard]
path = "/hard"
upstream = "u"
{route_extra}
"#,
        list
    )
}

fn assert_fallback(a: &Answer) {
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.header("x-tollgate-fallback"), Some("1"), "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");
    assert!(
        a.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "{a:?}"
    );
    assert_eq!(a.body, r#"{"error":"users unavailable"}"#);
}

/// A problem response the gateway made, not replaced by a fallback.
fn assert_not_replaced(a: &Answer, status: u16) {
    assert_problem(a, status);
    assert!(a.header("x-tollgate-fallback").is_none(), "{a:?}");
}

async fn fallbacks(gw: &GatewayHandle, route: &str) -> f64 {
    metric(gw, "tollgate_fallback_responses_total", &[("route", route)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_serves_the_fallback() {
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = GatewayHandle::start(&format!(
        "{}\n[routes.plain_text]\npath = \"/text\"\nupstream = \"u\"\nfallback = {{ status = 200, body = \"try later\", content_type = \"text/plain; charset=utf-8\" }}\n",
        config(&[dead], "", "")
    ))
    .await;
    let a = get(&gw.url("/soft")).await.unwrap();
    assert_fallback(&a);
    // HEAD: the fallback's headers, no body.
    let head = send(client().head(gw.url("/soft"))).await.unwrap();
    assert_eq!(head.status, 503);
    assert_eq!(head.header("x-tollgate-fallback"), Some("1"));
    assert_eq!(head.body, "");
    // Status, body and content type are the route's own.
    let a = get(&gw.url("/text")).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-tollgate-fallback"), Some("1"));
    assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(a.body, "try later");
    // Without a fallback: the gateway's own 502.
    assert_not_replaced(&get(&gw.url("/hard")).await.unwrap(), 502);

    assert_eq!(fallbacks(&gw, "soft").await, 2.0);
    assert_eq!(fallbacks(&gw, "plain_text").await, 1.0);
    assert_eq!(fallbacks(&gw, "hard").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_serves_the_fallback_in_time() {
    let slow = backend("slow").delay(Duration::from_secs(3)).start().await;
    let gw = GatewayHandle::start(&config(
        &[slow.target()],
        "",
        "timeout = \"300ms\"\nretry = { attempts = 3 }",
    ))
    .await;
    let a = get(&gw.url("/soft")).await.unwrap();
    assert_fallback(&a);
    assert!(
        a.took >= Duration::from_millis(250) && a.took < Duration::from_secs(1),
        "{:?}",
        a.took
    );
    let a = get(&gw.url("/hard")).await.unwrap();
    assert_not_replaced(&a, 504);
    assert!(a.took < Duration::from_secs(1), "{:?}", a.took);
    assert_eq!(slow.count(), 2);
    assert_eq!(fallbacks(&gw, "soft").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_target_serves_the_fallback() {
    let sick = backend("sick").status(500).start().await;
    let gw = GatewayHandle::start(&config(
        &[sick.target()],
        "[upstreams.u.health_check]\npath = \"/healthz\"\ninterval = \"150ms\"\ntimeout = \"100ms\"\nunhealthy_after = 2\nhealthy_after = 2",
        "",
    ))
    .await;
    let down = eventually(Duration::from_secs(5), || async {
        healthy_gauge(&gw, "u", &sick.target()).await == Some(0.0)
    })
    .await;
    assert!(down, "the target was never marked unhealthy");
    assert_fallback(&get(&gw.url("/soft")).await.unwrap());
    let a = get(&gw.url("/hard")).await.unwrap();
    assert_not_replaced(&a, 503);
    // No circuit is open, so there is no time to promise.
    assert!(a.header("retry-after").is_none(), "{a:?}");
    assert_eq!(app_requests(&sick), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answer_is_passed_on_not_replaced() {
    // Both targets answer 503 themselves: retries run out and the last answer is passed on.
    let a1 = backend("a1").status(503).start().await;
    let a2 = backend("a2").status(502).start().await;
    let gw = GatewayHandle::start(&config(
        &[a1.target(), a2.target()],
        "",
        "retry = { attempts = 2, backoff = \"1ms\", max_backoff = \"2ms\" }",
    ))
    .await;
    for _ in 0..4 {
        let a = get(&gw.url("/soft")).await.unwrap();
        assert!(matches!(a.status, 502 | 503), "{a:?}");
        assert!(a.header("x-tollgate-fallback").is_none(), "{a:?}");
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert!(a.backend().is_some(), "{a:?}");
    }
    assert_eq!(a1.count() + a2.count(), 8);
    assert_eq!(fallbacks(&gw, "soft").await, 0.0);
}
