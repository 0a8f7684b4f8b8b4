//! The admin status page's JSON (`GET /api/status`) and HTML as a client reads them: routes
//! with what protects them, traffic after known requests, a failed reload's errors as `check`
//! prints them, an unhealthy target, an open circuit, the token rule, the security headers,
//! and markup in config text rendered as text. `status_page.rs` drives the same page in
//! Chromium.

use crate::support::auth::keys_file;
use crate::support::{backend, call, client, eventually, free_port, Backend, GatewayHandle};
use serde_json::Value;
use std::time::Duration;

/// A gateway with something to show: routes with auth, limits and a cache; a target that
/// refuses connections behind a circuit breaker; a health-checked upstream with one dead
/// target.
pub struct Busy {
    pub gw: GatewayHandle,
    _users: Backend,
    _orders: Backend,
    _keys: tempfile::TempDir,
    /// The health-checked target nothing listens on.
    pub dead: String,
    /// The circuit-broken target nothing listens on.
    pub refused: String,
}

pub fn body(users: &str, orders: &str, refused: &str, dead: &str, keys: &str) -> String {
    format!(
        r#"
[upstreams.users]
targets = ["{users}"]

[upstreams.orders]
targets = ["{orders}"]
backup_targets = ["{users}"]

[upstreams.flaky]
targets = ["{refused}"]
connect_timeout = "200ms"

[upstreams.flaky.circuit_breaker]
failure_ratio = 0.5
min_requests = 3
window = "10s"
open_for = "5m"
half_open_probes = 1

[upstreams.checked]
targets = ["{users}", "{dead}"]

[upstreams.checked.health_check]
path = "/health"
interval = "200ms"
timeout = "100ms"
unhealthy_after = 1
healthy_after = 1

[auth.partners]
type = "api_key"
keys_file = "{keys}"

[rate_limits.per_client]
requests = 1000
per = "1s"
burst = 1000
key = "ip"

[caches.catalog]
ttl = "5s"

[routes.users]
path = "/users/{{id}}"
methods = ["GET"]
upstream = "users"
rate_limits = ["per_client"]
cache = "catalog"

[routes.orders]
host = "api.example.com"
path = "/orders/{{*rest}}"
upstream = "orders"
auth = "partners"

[routes.flaky]
path = "/flaky"
upstream = "flaky"

[routes.checked]
path = "/checked"
upstream = "checked"
"#
    )
}

/// The busy gateway after known traffic: 12 answers from `users` (2 misses and 10 cache
/// hits... whatever the cache does, 12 requests on the route), 3 answered 500 on `orders`,
/// 2 unrouted 404s, and 5 on `flaky` (its circuit opens after 3 refused connections).
pub async fn busy() -> Busy {
    let users = backend("users").start().await;
    let orders = backend("orders").status(500).start().await;
    let keys = tempfile::tempdir().unwrap();
    let keys_path = keys_file(&keys, &[("acme", "k-acme")]);
    let refused = format!("127.0.0.1:{}", free_port());
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = GatewayHandle::start(&body(
        &users.target(),
        &orders.target(),
        &refused,
        &dead,
        &keys_path,
    ))
    .await;
    for i in 0..12 {
        assert_eq!(
            call(&gw, &format!("/users/{}", i % 2), &[]).await.status,
            200
        );
    }
    let api = [("host", "api.example.com"), ("x-api-key", "k-acme")];
    for _ in 0..3 {
        assert_eq!(call(&gw, "/orders/1", &api).await.status, 500);
    }
    for _ in 0..2 {
        assert_eq!(call(&gw, "/nowhere", &[]).await.status, 404);
    }
    for _ in 0..5 {
        assert!(call(&gw, "/flaky", &[]).await.status >= 500);
    }
    Busy {
        gw,
        _users: users,
        _orders: orders,
        _keys: keys,
        dead,
        refused,
    }
}

/// A config that cannot load: a route whose name is markup (names are letters, digits, '_'
/// and '-'), so the error message carries it. Written over the busy gateway's config.
pub const BROKEN: &str = r#"
[upstreams.users]
targets = ["127.0.0.1:1"]

[routes."<img src=x onerror=alert(1)><script>alert(2)</script>"]
path = "/x"
upstream = "users"
"#;

/// One upstream `u` on `target` and one route `r` (`/r`) to it.
pub fn one_route(target: &str) -> String {
    format!(
        "[upstreams.u]\ntargets = [\"{target}\"]\n[routes.r]\npath = \"/r\"\nupstream = \"u\"\n"
    )
}

pub async fn status(gw: &GatewayHandle) -> Value {
    let r = client()
        .get(gw.admin_url("/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    r.json().await.unwrap()
}

/// Waits (at most 5 s) until the status satisfies `ok`, and returns it.
pub async fn status_when(gw: &GatewayHandle, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let reached = eventually(Duration::from_secs(5), || async { ok(&status(gw).await) }).await;
    let now = status(gw).await;
    assert!(reached, "status never showed {what}: {now:#}");
    now
}

fn route<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {s:#}"))
}

pub fn target<'a>(s: &'a Value, upstream: &str, target: &str) -> &'a Value {
    s["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == upstream)
        .and_then(|u| {
            u["targets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["target"] == target)
        })
        .unwrap_or_else(|| panic!("no target {upstream}/{target} in {s:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_shows_routes_traffic_targets_limits_and_caches() {
    let busy = busy().await;
    let s = status_when(&busy.gw, "an unhealthy target", |s| {
        target(s, "checked", &busy.dead)["healthy"] == false
    })
    .await;
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["ready"], true);
    assert_eq!(s["config"]["hash"], busy.gw.config_hash().await);
    assert!(s["last_reload"].is_null(), "no reload yet: {s:#}");

    let users = route(&s, "users");
    assert_eq!(users["path"], "/users/{id}");
    assert_eq!(users["methods"], serde_json::json!(["GET"]));
    assert_eq!(users["upstream"], "users");
    assert_eq!(users["rate_limits"], serde_json::json!(["per_client"]));
    assert_eq!(users["cache"], "catalog");
    assert!(users["auth"].is_null());
    assert_eq!(users["last_minute"]["requests"], 12);
    assert_eq!(users["last_minute"]["errors_5xx"], 0);
    assert!(users["last_minute"]["p99_ms"].as_f64().unwrap() > 0.0);
    let orders = route(&s, "orders");
    assert_eq!(orders["host"], "api.example.com");
    assert_eq!(orders["auth"]["policy"], "partners");
    assert_eq!(orders["auth"]["kind"], "api_key");
    assert_eq!(orders["last_minute"]["requests"], 3);
    assert_eq!(orders["last_minute"]["errors_5xx"], 3);
    assert_eq!(orders["last_minute"]["error_ratio"], 1.0);

    // Every request, routed or not, in the whole-gateway numbers; the last point is the
    // step in progress and holds them all (the first sample is 10 s after start).
    let traffic = &s["traffic"];
    assert_eq!(traffic["step_seconds"], 10);
    assert_eq!(traffic["last_minute"]["requests"], 12 + 3 + 2 + 5);
    assert_eq!(traffic["last_minute"]["errors_4xx"], 2);
    assert_eq!(traffic["last_minute"]["errors_5xx"], 3 + 5);
    let points = traffic["points"].as_array().unwrap();
    let last = points.last().unwrap();
    assert!(last["rps"].as_f64().unwrap() > 0.0, "{last}");
    assert!(last["rps_5xx"].as_f64().unwrap() > 0.0, "{last}");
    assert!(!route(&s, "users")["points"].as_array().unwrap().is_empty());

    let flaky = target(&s, "flaky", &busy.refused);
    assert_eq!(flaky["circuit"], "open");
    let probe_in = flaky["probe_in_seconds"].as_f64().unwrap();
    assert!(probe_in > 200.0 && probe_in <= 300.0, "{flaky}");
    assert_eq!(flaky["outcomes"]["connect_error"], 3, "{flaky}");
    assert_eq!(flaky["in_flight"], 0);
    let dead = target(&s, "checked", &busy.dead);
    assert_eq!(dead["healthy"], false);
    assert!(dead["circuit"].is_null(), "no circuit breaker on checked");
    let backup = target(&s, "orders", &busy._users.target());
    assert_eq!(backup["backup"], true);
    assert_eq!(
        target(&s, "orders", &busy._orders.target())["outcomes"]["5xx"],
        3
    );

    let limit = &s["rate_limits"][0];
    assert_eq!(limit["name"], "per_client");
    assert_eq!(limit["requests"], 1000);
    assert_eq!(limit["key"], "ip");
    assert_eq!(limit["decisions"]["allowed"], 12);
    let cache = &s["caches"][0];
    assert_eq!(cache["name"], "catalog");
    let lookups = &cache["lookups"];
    assert_eq!(
        lookups["hit"].as_u64().unwrap() + lookups["miss"].as_u64().unwrap(),
        12
    );
    assert!(cache["entries"].as_u64().unwrap() >= 1, "{cache}");
    assert!(s["cluster"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_shows_its_errors_as_check_prints_them() {
    let busy = busy().await;
    let gw = &busy.gw;
    let hash = gw.config_hash().await;
    gw.write_body(BROKEN);
    let s = status_when(gw, "a failed reload", |s| s["last_reload"]["ok"] == false).await;
    assert_eq!(
        s["config"]["hash"], hash,
        "the previous config keeps serving"
    );
    let errors: Vec<&str> = s["last_reload"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stderr);
    let printed: Vec<&str> = printed.lines().collect();
    assert!(!errors.is_empty());
    assert_eq!(errors, printed[..errors.len()], "same lines as check");
    let path = gw.config_path.display().to_string();
    assert!(errors[0].starts_with(&format!("{path}:")), "{errors:?}");

    // The page shows them as text: the markup is escaped, never a tag.
    let page = client().get(gw.admin_url("/")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img src=x"), "{html}");

    // A config that loads again is reported as applied.
    let users = backend("u2").start().await;
    gw.write_body(&one_route(&users.target()));
    let s = status_when(gw, "an applied reload", |s| s["last_reload"]["ok"] == true).await;
    assert_eq!(s["last_reload"]["errors"], serde_json::json!([]));
    assert_eq!(s["routes"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_complete_without_javascript_and_locked_down() {
    let busy = busy().await;
    let r = client().get(busy.gw.admin_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    // Server-rendered: the facts are in the HTML itself.
    for text in [
        "data-route=\"users\"",
        "/users/{id}",
        "partners (api_key)",
        "api.example.com",
    ] {
        assert!(html.contains(text), "{text} missing from {html}");
    }
    assert!(html.contains(&format!("data-target=\"flaky/{}\"", busy.refused)));
    assert!(
        html.contains("<span class=\"badge bad\">open</span>"),
        "{html}"
    );
    // Nothing from another origin; no inline script or style.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    for (asset, kind) in [
        ("/status.js", "text/javascript"),
        ("/status.css", "text/css"),
    ] {
        let r = client().get(busy.gw.admin_url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    // The refresh fragment is the same <main>.
    let fragment = client()
        .get(busy.gw.admin_url("/api/status.html"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(fragment.starts_with("<main id=\"status\""), "{fragment}");
    // Still read-only: other methods are refused, unknown paths are 404 as before.
    let post = client().post(busy.gw.admin_url("/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    let missing = client()
        .get(busy.gw.admin_url("/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_the_status_needs_it_and_probes_stay_open() {
    let users = backend("users").start().await;
    let body = one_route(&users.target());
    let env = [("TOLLGATE_TEST_ADMIN_TOKEN", "s3cret-token")];
    let gw = GatewayHandle::start_binary_with_env(
        &body,
        "admin_token_env = \"TOLLGATE_TEST_ADMIN_TOKEN\"",
        &env,
    )
    .await;
    let get = |path: &'static str, token: Option<&'static str>| {
        let mut req = client().get(gw.admin_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap() }
    };
    for path in ["/api/status", "/api/status.html"] {
        for token in [None, Some("wrong"), Some("s3cret-tokenX")] {
            let r = get(path, token).await;
            assert_eq!(r.status(), 401, "{path} {token:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
        }
        assert_eq!(
            get(path, Some("s3cret-token")).await.status(),
            200,
            "{path}"
        );
    }
    // Without the token the page is a login form and shows nothing of the gateway.
    let login = get("/", None).await.text().await.unwrap();
    assert!(login.contains("id=\"login\""), "{login}");
    assert!(
        !login.contains("data-route") && !login.contains(&users.target()),
        "{login}"
    );
    let page = get("/", Some("s3cret-token")).await.text().await.unwrap();
    assert!(page.contains("data-route=\"r\""), "{page}");
    // The token never appears, with or without it.
    assert!(!page.contains("s3cret") && !login.contains("s3cret"));
    let json = get("/api/status", Some("s3cret-token"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!json.contains("s3cret"), "{json}");
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/status.js",
        "/status.css",
    ] {
        assert_eq!(get(path, None).await.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shows_its_redis_with_the_password_masked() {
    // Nothing listens there: the first check fails, and on_error decides.
    let redis = format!("redis://:hunter2@127.0.0.1:{}", free_port());
    let users = backend("users").start().await;
    let body = format!(
        r#"
[cluster]
redis_url = "{redis}"
on_error = "deny"
timeout = "100ms"

[rate_limits.shared]
requests = 100
per = "1s"
key = "ip"
cluster = true

[upstreams.u]
targets = ["{}"]

[routes.r]
path = "/r"
upstream = "u"
rate_limits = ["shared"]
"#,
        users.target()
    );
    let gw = GatewayHandle::start(&body).await;
    let s = status(&gw).await;
    assert_eq!(s["cluster"]["reachable"], true, "not known to fail yet");
    assert_eq!(call(&gw, "/r", &[]).await.status, 429);
    let s = status_when(&gw, "an unreachable Redis", |s| {
        s["cluster"]["reachable"] == false
    })
    .await;
    let cluster = &s["cluster"];
    assert_eq!(cluster["on_error"], "deny");
    assert_eq!(cluster["degraded"], true);
    let port = redis.rsplit(':').next().unwrap();
    assert_eq!(cluster["redis"], format!("redis://:****@127.0.0.1:{port}"));
    assert_eq!(s["rate_limits"][0]["decisions"]["degraded_rejected"], 1);
    let page = client()
        .get(gw.admin_url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("hunter2") && !s.to_string().contains("hunter2"));
}
