//! Metrics and the access log after known traffic: exact values, bounded labels, a page that
//! `promtool` accepts, and one correct JSON line per request.

use crate::support::{backend, client, eventually, free_port, prom, Backend, GatewayHandle};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

/// A gateway with a working route (`ok`, GET only, upstream `good`), a dead one (`dead`,
/// upstream `bad` on a port nothing listens on), and a parameterised one (`item`).
async fn gateway(good: &Backend, dead: &str) -> GatewayHandle {
    GatewayHandle::start(&format!(
        r#"
[upstreams.good]
targets = ["{}"]
[upstreams.bad]
targets = ["{dead}"]

[routes.ok]
path = "/ok"
methods = ["GET"]
upstream = "good"

[caches.short]
ttl = "30s"

[routes.item]
path = "/items/{{id}}"
upstream = "good"
cache = "short"

[routes.dead]
path = "/dead"
upstream = "bad"
"#,
        good.target()
    ))
    .await
}

/// Waits (bounded) until the gateway counted `n` requests in total: metrics are recorded as a
/// request ends, which can be just after its client saw the response. Returns the page.
async fn page_after(gw: &GatewayHandle, n: f64) -> String {
    let counted = eventually(Duration::from_secs(5), || async {
        let page = gw.metrics().await;
        prom::sum(&page, "tollgate_requests_total", &[]) >= n
            && prom::value(&page, "tollgate_requests_in_flight", &[]) == Some(0.0)
    })
    .await;
    let page = gw.metrics().await;
    assert!(
        counted,
        "expected {n} requests counted and none in flight:\n{page}"
    );
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_values_after_known_traffic() {
    let good = backend("good").start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let before_start = SystemTime::now();
    let gw = gateway(&good, &dead).await;
    let http = client();
    for _ in 0..5 {
        assert_eq!(http.get(gw.url("/ok")).send().await.unwrap().status(), 200);
    }
    for path in ["/nope", "/ok/deeper"] {
        assert_eq!(http.get(gw.url(path)).send().await.unwrap().status(), 404);
    }
    assert_eq!(http.post(gw.url("/ok")).send().await.unwrap().status(), 405);
    assert_eq!(
        http.get(gw.url("/dead")).send().await.unwrap().status(),
        502
    );

    let page = page_after(&gw, 9.0).await;
    let v = |name: &str, labels: &[(&str, &str)]| prom::value(&page, name, labels);
    let requests = |route, method, status| {
        v(
            "tollgate_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("ok", "GET", "200"), Some(5.0), "{page}");
    assert_eq!(requests("none", "GET", "404"), Some(2.0), "{page}");
    assert_eq!(requests("none", "POST", "405"), Some(1.0), "{page}");
    assert_eq!(requests("dead", "GET", "502"), Some(1.0), "{page}");
    assert_eq!(
        prom::sum(&page, "tollgate_requests_total", &[]),
        9.0,
        "{page}"
    );

    let duration_count = |route| {
        v(
            "tollgate_request_duration_seconds_count",
            &[("route", route)],
        )
    };
    assert_eq!(duration_count("ok"), Some(5.0), "{page}");
    assert_eq!(duration_count("none"), Some(3.0), "{page}");
    assert_eq!(duration_count("dead"), Some(1.0), "{page}");
    // The +Inf bucket holds every observation.
    assert_eq!(
        v(
            "tollgate_request_duration_seconds_bucket",
            &[("route", "ok"), ("le", "+Inf")]
        ),
        Some(5.0),
        "{page}"
    );

    let good_target = good.target();
    let upstream = |name, target: &str, outcome| {
        v(
            "tollgate_upstream_requests_total",
            &[("upstream", name), ("target", target), ("outcome", outcome)],
        )
    };
    assert_eq!(upstream("good", &good_target, "2xx"), Some(5.0), "{page}");
    assert_eq!(upstream("bad", &dead, "connect_error"), Some(1.0), "{page}");
    assert_eq!(
        prom::sum(&page, "tollgate_upstream_requests_total", &[]),
        6.0,
        "{page}"
    );
    assert_eq!(
        v(
            "tollgate_upstream_duration_seconds_count",
            &[("upstream", "good")]
        ),
        Some(5.0),
        "{page}"
    );
    assert_eq!(good.count(), 5);

    assert_eq!(
        v(
            "tollgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(env!("CARGO_PKG_VERSION"), "0.1.0");
    assert_eq!(
        v("tollgate_config_reloads_total", &[("result", "success")]),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        v("tollgate_config_reloads_total", &[("result", "failure")]),
        Some(0.0),
        "{page}"
    );
    let loaded = v("tollgate_config_last_reload_success_timestamp_seconds", &[])
        .expect("last reload timestamp");
    let since_epoch = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    assert!(
        loaded >= since_epoch(before_start) - 1.0 && loaded <= since_epoch(SystemTime::now()) + 1.0,
        "{loaded}"
    );
    assert_eq!(v("tollgate_requests_in_flight", &[]), Some(0.0), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_never_carry_the_raw_path() {
    let good = backend("good").start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = gateway(&good, &dead).await;
    let http = client();
    // One of each kind first, so every series that can exist does.
    assert_eq!(
        http.get(gw.url("/unmatched-first"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(gw.url("/items/first"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = page_after(&gw, 2.0).await;
    let series = |page: &str| -> Vec<(String, Vec<(String, String)>)> {
        prom::samples(page)
            .into_iter()
            .map(|s| (s.name, s.labels.into_iter().collect()))
            .collect()
    };

    for i in 0..20 {
        let r = http
            .get(gw.url(&format!("/unmatched-{i}/zz{i}?q=v{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = http
            .get(gw.url(&format!("/items/item-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = page_after(&gw, 42.0).await;
    assert_eq!(
        series(&before),
        series(&after),
        "the set of series grew:\n{after}"
    );
    assert_eq!(before.lines().count(), after.lines().count());
    for needle in ["unmatched", "item-", "zz", "/items"] {
        assert!(!after.contains(needle), "{needle:?} leaked into\n{after}");
    }
    let requests = |route, status| {
        prom::value(
            &after,
            "tollgate_requests_total",
            &[("route", route), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(requests("none", "404"), Some(21.0), "{after}");
    assert_eq!(requests("item", "200"), Some(21.0), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_page_passes_promtool() {
    let good = backend("good").start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = gateway(&good, &dead).await;
    let http = client();
    for path in ["/ok", "/items/1", "/nope", "/dead"] {
        http.get(gw.url(path)).send().await.unwrap();
    }
    http.post(gw.url("/ok")).send().await.unwrap();
    let page = page_after(&gw, 5.0).await;
    // Every family is on the page, so promtool sees all of them.
    for family in [
        "tollgate_requests_total",
        "tollgate_request_duration_seconds",
        "tollgate_upstream_requests_total",
        "tollgate_upstream_duration_seconds",
        "tollgate_config_reloads_total",
        "tollgate_config_last_reload_success_timestamp_seconds",
        "tollgate_build_info",
        "tollgate_requests_in_flight",
        "tollgate_cache_requests_total",
        "tollgate_cache_entries",
        "tollgate_cache_bytes",
        "tollgate_cache_evictions_total",
        "tollgate_cache_coalesced_total",
        "tollgate_cache_purges_total",
    ] {
        assert!(
            page.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{page}"
        );
    }

    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}): install the Debian package `prometheus` \
             (apt-get install prometheus), which provides promtool"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed: {report}\n{page}");
    assert!(report.trim().is_empty(), "promtool reported: {report}");
}

/// What one access-log line should say.
struct Expected<'a> {
    id: &'a str,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    upstream: Option<&'a str>,
    target: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
}

/// The access-log line with this request id; panics unless there is exactly one.
fn line_for<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == id).collect();
    assert_eq!(found.len(), 1, "lines for {id}: {found:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_correct_line_per_request() {
    let good = backend("good")
        .body("0123456789".repeat(100))
        .delay(Duration::from_millis(200))
        .start()
        .await;
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = gateway(&good, &dead).await;
    let http = client();
    let t0 = SystemTime::now();
    let started = Instant::now();

    let send = |req: reqwest::RequestBuilder, id: &'static str| async move {
        let r = req.header("x-request-id", id).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        (status, body.len() as u64)
    };
    let get_ok = send(http.get(gw.url("/ok?token=secret")), "log-get").await;
    let post_item = send(
        http.post(gw.url("/items/9?token=secret"))
            .body(vec![b'x'; 1234]),
        "log-post",
    )
    .await;
    let not_found = send(http.get(gw.url("/missing/path?token=secret")), "log-404").await;
    let not_allowed = send(http.put(gw.url("/ok?token=secret")), "log-405").await;
    let bad_gateway = send(http.get(gw.url("/dead?token=secret")), "log-502").await;
    assert_eq!(get_ok, (200, 1000));
    assert_eq!(post_item, (200, 1000));
    assert_eq!(not_found.0, 404);
    assert_eq!(not_allowed.0, 405);
    assert_eq!(bad_gateway.0, 502);
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    // One more request, logged after the others: by the time its line is there, a duplicate
    // line for an earlier request would be too.
    send(http.get(gw.url("/nope")), "log-last").await;

    let ids = [
        "log-get", "log-post", "log-404", "log-405", "log-502", "log-last",
    ];
    let all_logged = eventually(Duration::from_secs(5), || async {
        let lines = gw.access_log();
        ids.iter()
            .all(|id| lines.iter().any(|l| l["request_id"] == *id))
    })
    .await;
    let lines = gw.access_log();
    assert!(all_logged, "access log: {lines:#?}");
    assert_eq!(lines.len(), ids.len(), "one line per request: {lines:#?}");
    let t1 = SystemTime::now();

    let fields = [
        "time",
        "request_id",
        "client",
        "method",
        "path",
        "route",
        "upstream",
        "target",
        "status",
        "duration_ms",
        "bytes_in",
        "bytes_out",
    ];
    let good_target = good.target();
    // (id, method, path, route, upstream, target, status, bytes_in, bytes_out)
    let rows = [
        Expected {
            id: "log-get",
            method: "GET",
            path: "/ok",
            route: "ok",
            upstream: Some("good"),
            target: Some(&good_target),
            status: 200,
            bytes_in: 0,
            bytes_out: get_ok.1,
        },
        Expected {
            id: "log-post",
            method: "POST",
            path: "/items/9",
            route: "item",
            upstream: Some("good"),
            target: Some(&good_target),
            status: 200,
            bytes_in: 1234,
            bytes_out: post_item.1,
        },
        Expected {
            id: "log-404",
            method: "GET",
            path: "/missing/path",
            route: "none",
            upstream: None,
            target: None,
            status: 404,
            bytes_in: 0,
            bytes_out: not_found.1,
        },
        Expected {
            id: "log-405",
            method: "PUT",
            path: "/ok",
            route: "none",
            upstream: None,
            target: None,
            status: 405,
            bytes_in: 0,
            bytes_out: not_allowed.1,
        },
        Expected {
            id: "log-502",
            method: "GET",
            path: "/dead",
            route: "dead",
            upstream: Some("bad"),
            target: Some(&dead),
            status: 502,
            bytes_in: 0,
            bytes_out: bad_gateway.1,
        },
    ];
    for Expected {
        id,
        method,
        path,
        route,
        upstream,
        target,
        status,
        bytes_in,
        bytes_out,
    } in rows
    {
        let line = line_for(&lines, id);
        let text = line.to_string();
        for f in fields {
            assert!(line.get(f).is_some(), "{id}: no field {f}: {text}");
        }
        assert!(!text.contains("secret"), "{id}: query leaked: {text}");
        assert!(!text.contains("token"), "{id}: query leaked: {text}");
        let time = humantime::parse_rfc3339(line["time"].as_str().expect("time is a string"))
            .unwrap_or_else(|e| panic!("{id}: time not RFC 3339 ({e}): {text}"));
        assert!(
            time >= t0 - Duration::from_millis(5) && time <= t1,
            "{id}: time out of range: {text}"
        );
        assert_eq!(line["client"], "127.0.0.1", "{id}: {text}");
        assert_eq!(line["method"], method, "{id}: {text}");
        assert_eq!(line["path"], path, "{id}: {text}");
        assert_eq!(line["route"], route, "{id}: {text}");
        assert_eq!(line["upstream"].as_str(), upstream, "{id}: {text}");
        assert_eq!(line["target"].as_str(), target, "{id}: {text}");
        assert_eq!(line["status"], status, "{id}: {text}");
        assert_eq!(line["bytes_in"], bytes_in, "{id}: {text}");
        assert_eq!(line["bytes_out"], bytes_out, "{id}: {text}");
        let ms = line["duration_ms"]
            .as_f64()
            .expect("duration_ms is a number");
        assert!(
            ms >= 0.0 && ms <= elapsed_ms,
            "{id}: duration {ms} ms: {text}"
        );
        if upstream == Some("good") {
            // The backend waits 200 ms: the duration is in milliseconds and covers it.
            assert!(ms >= 190.0, "{id}: duration {ms} ms: {text}");
        }
    }
    // Gateway-made responses are counted in bytes_out too.
    assert!(not_found.1 > 0 && bad_gateway.1 > 0);
}

/// Behind a load balancer listed in `trusted_proxies`, the access log names the client the
/// balancer forwarded; without that setting a client-written X-Forwarded-For changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn access_log_names_the_forwarded_client_only_behind_a_trusted_proxy() {
    let b = backend("b").start().await;
    let body = crate::support::gateway::catch_all(&b.target(), "");
    for (server_extra, expected) in [
        ("trusted_proxies = [\"127.0.0.0/8\"]", "203.0.113.7"),
        ("", "127.0.0.1"),
    ] {
        let gw = GatewayHandle::start_with(&body, server_extra).await;
        let r = client()
            .get(gw.url("/who"))
            .header("x-request-id", "fwd-1")
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let logged = eventually(Duration::from_secs(5), || async {
            gw.access_log().iter().any(|l| l["request_id"] == "fwd-1")
        })
        .await;
        assert!(logged);
        let line = gw
            .access_log()
            .into_iter()
            .find(|l| l["request_id"] == "fwd-1")
            .unwrap();
        assert_eq!(line["client"], expected, "{server_extra:?}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_trouble_in_the_gateway_log_names_the_target_once() {
    // A JSON line with two `target` keys (the log's own, the module, and the event's) reads as
    // its last one in jq and most log pipelines: the upstream target was lost.
    let sick = backend("sick").status(500).start().await;
    let gw = GatewayHandle::start_binary(
        &format!(
            r#"
[upstreams.u]
targets = ["{0}"]

[upstreams.u.health_check]
path = "/healthz"
interval = "200ms"
timeout = "100ms"
unhealthy_after = 1

[upstreams.c]
targets = ["{0}"]

[upstreams.c.circuit_breaker]
min_requests = 2
open_for = "10s"

[routes.r]
path = "/r"
upstream = "c"
"#,
            sick.target()
        ),
        "",
    )
    .await;
    for _ in 0..3 {
        let _ = client().get(gw.url("/r")).send().await;
    }
    let lines = || {
        gw.stderr()
            .lines()
            .filter(|l| l.contains("health checks failing") || l.contains("circuit opened"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let found = eventually(Duration::from_secs(5), || async { lines().len() >= 2 }).await;
    assert!(found, "{}", gw.stderr());
    for line in lines() {
        assert_eq!(line.matches("\"target\":").count(), 1, "{line}");
        let json: Value = serde_json::from_str(&line).unwrap();
        let upstream = if line.contains("circuit") { "c" } else { "u" };
        assert_eq!(json["upstream"], upstream, "{line}");
        assert_eq!(json["upstream_target"], sick.target().as_str(), "{line}");
    }
}
