//! Active health checks through a real gateway (GET `path` every `interval`, 2xx/3xx healthy,
//! `unhealthy_after` / `healthy_after` in a row), and upstream state across reloads: health
//! verdicts and open circuits survive a reload that leaves the upstream alone, and start fresh
//! when its settings change.

use crate::support::prom::metric;
use crate::support::resilience::{
    app_requests, attempts_to, circuit_gauge, health_requests, healthy_gauge, toml_list,
    wait_health, HEALTH_PATH,
};
use crate::support::{backend, eventually, get, Backend, Fault, FaultyProxy, GatewayHandle};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_flip_after_the_configured_number_of_checks() {
    // Target a answers 500 to everything, health checks included.
    let a = backend("a").status(500).start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.u]
targets = ["{}", "{}"]

[upstreams.u.health_check]
path = "{HEALTH_PATH}"
interval = "300ms"
timeout = "200ms"
unhealthy_after = 3
healthy_after = 2

[routes.r]
path = "/r"
upstream = "u"
"#,
        a.target(),
        b.target()
    ))
    .await;
    // Targets start healthy: a fresh config serves at once.
    assert_eq!(healthy_gauge(&gw, "u", &a.target()).await, Some(1.0));

    let took = wait_health(&gw, "u", &a.target(), false).await;
    // Three failed checks, 300 ms apart: flipped on the third (a fourth may be under way).
    let checks = health_requests(&a);
    assert!((3..=4).contains(&checks), "{checks} checks before the flip");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(healthy_gauge(&gw, "u", &b.target()).await, Some(1.0));

    // What a check looks like: GET path, Host = the target as configured.
    let check = a
        .received()
        .into_iter()
        .find(|r| r.uri == HEALTH_PATH)
        .expect("a health check");
    assert_eq!(check.method, "GET");
    assert_eq!(check.header("host"), Some(a.target().as_str()));
    assert_eq!(check.header("user-agent"), Some("tollgate-health-check"));

    // While unhealthy, a gets no client traffic.
    let before = app_requests(&a);
    for _ in 0..10 {
        let r = get(&gw.url("/r")).await.unwrap();
        assert_eq!(
            (r.status, r.backend().as_deref()),
            (200, Some("b")),
            "{r:?}"
        );
    }
    assert_eq!(app_requests(&a), before);

    // The service comes back healthy on the same port: two good checks in a row and it is used.
    a.stop();
    let a2 = backend("a").start_on(a.addr).await;
    wait_health(&gw, "u", &a2.target(), true).await;
    let checks = health_requests(&a2);
    assert!((2..=3).contains(&checks), "{checks} checks before recovery");
    let names: Vec<_> = futures_names(&gw, 10).await;
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
    assert!(app_requests(&a2) > 0);
}

/// Backend names of `n` sequential GET /r.
async fn futures_names(gw: &GatewayHandle, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = get(&gw.url("/r")).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        out.push(r.backend().unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_healthy_client_errors_and_slow_answers_are_not() {
    let redirect = backend("redirect").status(302).start().await;
    let missing = backend("missing").status(404).start().await;
    let slow = backend("slow")
        .delay(Duration::from_millis(600))
        .start()
        .await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.u]
targets = ["{}", "{}", "{}"]

[upstreams.u.health_check]
path = "{HEALTH_PATH}"
interval = "150ms"
timeout = "100ms"
unhealthy_after = 2
healthy_after = 1

[routes.r]
path = "/r"
upstream = "u"
"#,
        redirect.target(),
        missing.target(),
        slow.target()
    ))
    .await;
    wait_health(&gw, "u", &missing.target(), false).await;
    wait_health(&gw, "u", &slow.target(), false).await;
    // By now the 302 target has been checked at least as often, and stayed healthy.
    assert!(health_requests(&redirect) >= 2);
    assert_eq!(healthy_gauge(&gw, "u", &redirect.target()).await, Some(1.0));
    for _ in 0..5 {
        let r = get(&gw.url("/r")).await.unwrap();
        assert_eq!(r.status, 302, "{r:?}");
    }
}

/// Upstream `u` in front of `targets` with active health checks.
const CHECKED: &str = r#"
[upstreams.u.health_check]
path = "/healthz"
interval = "300ms"
timeout = "100ms"
unhealthy_after = 3
healthy_after = 2
"#;

/// One upstream `u` in front of `targets` with a circuit breaker (and whatever `u_extra` adds,
/// such as [`CHECKED`]), a route `/r` to it, and a marker route that tells which version of the
/// file is live.
fn reload_config(targets: &[String], u_extra: &str, marker: &str, marker_target: &str) -> String {
    let list = toml_list(targets);
    format!(
        r#"
[upstreams.u]
targets = [{}]
{u_extra}

[upstreams.u.circuit_breaker]
failure_ratio = 0.5
min_requests = 3
window = "10s"
open_for = "30s"
half_open_probes = 1

[upstreams.marker]
targets = ["{marker_target}"]

[routes.r]
path = "/r"
upstream = "u"

[routes.marker]
path = "{marker}"
upstream = "marker"
"#,
        list
    )
}

/// Waits (bounded) until `path` answers 200: the file version with that marker is live.
async fn wait_live(gw: &GatewayHandle, path: &str) {
    let ok = eventually(Duration::from_secs(5), || async {
        get(&gw.url(path)).await.map(|a| a.status) == Ok(200)
    })
    .await;
    assert!(ok, "the reload that adds {path} was not applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_survives_a_reload_that_keeps_the_upstream_and_resets_when_it_changes() {
    let a = backend("a").start().await;
    let pa = FaultyProxy::start(a.addr).await;
    let b = backend("b").start().await;
    let m = backend("marker").start().await;
    let targets = [pa.target(), b.target()];
    let gw = GatewayHandle::start(&reload_config(&targets, CHECKED, "/v1", &m.target())).await;
    pa.set_fault(Fault::Refuse);
    pa.kill_connections();
    wait_health(&gw, "u", &pa.target(), false).await;
    let attempts = attempts_to(&gw, "u", &pa.target()).await;

    // Reload that leaves upstream u as it is: a is still known to be down, at once.
    gw.write_body(&reload_config(&targets, CHECKED, "/v2", &m.target()));
    wait_live(&gw, "/v2").await;
    assert_eq!(healthy_gauge(&gw, "u", &pa.target()).await, Some(0.0));
    for _ in 0..20 {
        let r = get(&gw.url("/r")).await.unwrap();
        assert_eq!(
            (r.status, r.backend().as_deref()),
            (200, Some("b")),
            "{r:?}"
        );
    }
    assert_eq!(attempts_to(&gw, "u", &pa.target()).await, attempts);

    // Reload that changes u: fresh state, a starts healthy and is tried again until the
    // checks find it down again.
    gw.write_body(&reload_config(
        &targets,
        &format!("connect_timeout = \"400ms\"\n{CHECKED}"),
        "/v3",
        &m.target(),
    ));
    wait_live(&gw, "/v3").await;
    assert_eq!(healthy_gauge(&gw, "u", &pa.target()).await, Some(1.0));
    let mut tried = false;
    for _ in 0..20 {
        get(&gw.url("/r")).await.unwrap();
        if attempts_to(&gw, "u", &pa.target()).await > attempts {
            tried = true;
            break;
        }
    }
    assert!(tried, "a changed upstream kept the old health state");
    wait_health(&gw, "u", &pa.target(), false).await;
}

/// Opens the circuit of the single target `bad` (500s) with 3 requests.
async fn open_circuit(gw: &GatewayHandle, bad: &Backend) {
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/r")).await.unwrap().status, 500);
    }
    let ok = eventually(Duration::from_secs(2), || async {
        circuit_gauge(gw, "u", &bad.target()).await == Some(1.0)
    })
    .await;
    assert!(ok, "circuit did not open");
}

/// A GET /r answered by the open circuit: 503 with Retry-After, nothing sent to the target.
async fn assert_still_open(gw: &GatewayHandle, bad: &Backend) {
    let before = app_requests(bad);
    let r = get(&gw.url("/r")).await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(app_requests(bad), before);
    assert_eq!(circuit_gauge(gw, "u", &bad.target()).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_survives_a_reload_that_keeps_the_upstream_and_resets_when_it_changes() {
    let bad = backend("bad").status(500).start().await;
    let m = backend("marker").start().await;
    let targets = [bad.target()];
    let gw = GatewayHandle::start(&reload_config(&targets, "", "/v1", &m.target())).await;
    open_circuit(&gw, &bad).await;

    gw.write_body(&reload_config(&targets, "", "/v2", &m.target()));
    wait_live(&gw, "/v2").await;
    assert_still_open(&gw, &bad).await;
    assert_eq!(bad.count(), 3);

    gw.write_body(&reload_config(
        &targets,
        "read_timeout = \"20s\"",
        "/v3",
        &m.target(),
    ));
    wait_live(&gw, "/v3").await;
    assert_eq!(circuit_gauge(&gw, "u", &bad.target()).await, Some(0.0));
    let r = get(&gw.url("/r")).await.unwrap();
    assert_eq!(
        r.status, 500,
        "a changed upstream kept the open circuit: {r:?}"
    );
    assert_eq!(bad.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_reload_leaves_the_running_state_alone() {
    // Running: circuit of `bad` open. Then a file that changes upstream u but is rejected (a
    // route names an unknown upstream), then a valid file with u as it runs now. The open
    // circuit must be neither reported closed nor forgotten.
    let bad = backend("bad").status(500).start().await;
    let m = backend("marker").start().await;
    let targets = [bad.target()];
    let gw = GatewayHandle::start(&reload_config(&targets, "", "/v1", &m.target())).await;
    open_circuit(&gw, &bad).await;

    let rejected = format!(
        "{}\n[routes.broken]\npath = \"/broken\"\nupstream = \"nope\"\n",
        reload_config(&targets, "read_timeout = \"20s\"", "/v2", &m.target())
    );
    gw.write_body(&rejected);
    let failures = r#"tollgate_config_reloads_total"#;
    let ok = eventually(Duration::from_secs(5), || async {
        metric(&gw, failures, &[("result", "failure")]).await >= 1.0
    })
    .await;
    assert!(ok, "the broken file was not rejected");
    assert_eq!(get(&gw.url("/v2")).await.unwrap().status, 404);
    assert_still_open(&gw, &bad).await;

    gw.write_body(&reload_config(&targets, "", "/v3", &m.target()));
    wait_live(&gw, "/v3").await;
    assert_still_open(&gw, &bad).await;
    assert_eq!(bad.count(), 3);
}
