//! Request aggregation end to end: real backends (one per part, recording what reached them),
//! a real gateway. Parallel parts, per-part and route deadlines, each kind of part failure for
//! optional and required parts, templates from every source (hostile values included), the
//! dependency order, `fields` and `into`, the headers parts get and do not get, circuit
//! breakers, ETag / 304, Cache-Control, auth and limits before any part, metrics and the
//! access log.

use crate::support::auth::keys_file;
use crate::support::jwt::{claims, TestKey};
use crate::support::prom::{metric, metric_sum};
use crate::support::{assert_problem, backend, call, eventually, Backend, GatewayHandle};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const HS_SECRET: &str = "an-hs256-secret-for-aggregate-tests!!";

/// `[upstreams.NAME]` for each backend.
fn upstreams(backends: &[(&str, &Backend)]) -> String {
    backends
        .iter()
        .map(|(name, b)| format!("[upstreams.{name}]\ntargets = [\"{}\"]\n", b.target()))
        .collect()
}

fn body(a: &crate::support::Answer) -> Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"))
}

async fn json_backend(name: &str, body: Value) -> Backend {
    backend(name).body(body.to_string()).start().await
}

#[tokio::test]
async fn parts_run_side_by_side_and_merge_into_one_answer() {
    let delay = Duration::from_millis(200);
    let profile = backend("profile")
        .body(json!({"name": "Ada", "team_id": 7}).to_string())
        .header("cache-control", "max-age=60")
        .delay(delay)
        .start()
        .await;
    let feed = backend("feed")
        .body(json!({"items": [1, 2]}).to_string())
        .header("cache-control", "max-age=30")
        .delay(delay)
        .start()
        .await;
    let notes = backend("notes")
        .status(204)
        .body("")
        .header("cache-control", "max-age=90")
        .delay(delay)
        .start()
        .await;
    let config = format!(
        r#"{}
[routes.home]
path = "/home"
aggregate.parts.profile = {{ upstream = "profile", path = "/users/1" }}
aggregate.parts.feed = {{ upstream = "feed", path = "/feed", forward_headers = ["x-app-version"] }}
aggregate.parts.notes = {{ upstream = "notes", path = "/notes" }}
"#,
        upstreams(&[("profile", &profile), ("feed", &feed), ("notes", &notes)])
    );
    let gw = GatewayHandle::start(&config).await;
    let started = Instant::now();
    let a = call(
        &gw,
        "/home",
        &[
            ("authorization", "Bearer secret-token"),
            ("cookie", "session=1"),
            ("accept-language", "fr-CH"),
            ("x-app-version", "3.1"),
            ("x-other", "not for parts"),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        took < Duration::from_millis(400),
        "parts ran one after another: {took:?}"
    );
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.header("x-tollgate-partial"), None);
    assert_eq!(
        a.header("cache-control"),
        Some("max-age=30"),
        "smallest max-age"
    );
    let etag = a.header("etag").expect("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let v = body(&a);
    assert_eq!(v["profile"], json!({"name": "Ada", "team_id": 7}));
    assert_eq!(v["feed"], json!({"items": [1, 2]}));
    assert_eq!(v["notes"], Value::Null, "204 is null");
    for (part, status) in [("profile", 200), ("feed", 200), ("notes", 204)] {
        assert_eq!(v["_parts"][part]["status"], status, "{v}");
        assert_eq!(v["_parts"][part]["outcome"], "ok", "{v}");
        let ms = v["_parts"][part]["ms"].as_u64().unwrap();
        assert!((190..1000).contains(&ms), "{part}: {ms} ms");
    }
    // What each part received: the defaults and its own forward_headers, nothing else.
    for (b, path) in [(&profile, "/users/1"), (&feed, "/feed"), (&notes, "/notes")] {
        let r = &b.received()[0];
        assert_eq!(r.method, "GET");
        assert_eq!(r.uri, path);
        assert_eq!(r.header("x-request-id"), Some("req-42"));
        assert_eq!(r.header("accept-language"), Some("fr-CH"));
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(r.header("x-forwarded-proto"), Some("http"));
        assert!(r
            .header("x-forwarded-host")
            .is_some_and(|h| h.starts_with("127.0.0.1:")));
        assert_eq!(r.header("host"), Some(b.target().as_str()));
        for absent in ["authorization", "cookie", "x-other"] {
            assert_eq!(r.header(absent), None, "{absent} reached {path}");
        }
    }
    assert_eq!(feed.received()[0].header("x-app-version"), Some("3.1"));
    assert_eq!(profile.received()[0].header("x-app-version"), None);

    // The same answer again: the same ETag; If-None-Match gets a 304 without a body.
    let again = call(&gw, "/home", &[]).await;
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let not_modified = call(&gw, "/home", &[("if-none-match", &format!("W/{etag}"))]).await;
    assert_eq!(not_modified.status, 304, "{not_modified:?}");
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    let changed = call(&gw, "/home", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(changed.status, 200);

    // One log line for the client request, with each part's summary; metrics per part.
    let line = gw.log_line(|l| l["route"] == "home").await;
    let parts = line["parts"].as_str().unwrap();
    assert!(
        parts.starts_with("feed:200:") && parts.contains(",notes:204:"),
        "{parts}"
    );
    let fed = || async {
        let labels = [("route", "home"), ("part", "feed"), ("outcome", "ok")];
        metric(&gw, "tollgate_aggregate_parts_total", &labels).await == 4.0
    };
    assert!(eventually(Duration::from_secs(2), fed).await);
    let timed = [("route", "home"), ("part", "profile")];
    let count = "tollgate_aggregate_part_duration_seconds_count";
    assert_eq!(metric(&gw, count, &timed).await, 4.0);
    let attempts = [("upstream", "notes"), ("outcome", "2xx")];
    assert_eq!(
        metric_sum(&gw, "tollgate_upstream_requests_total", &attempts).await,
        4.0,
        "part calls count as upstream attempts"
    );
}

/// A gateway with one optional part of each failing kind beside a good one.
#[tokio::test]
async fn failed_optional_parts_are_null_and_listed() {
    let good = json_backend("good", json!({"ok": true})).await;
    let erroring = backend("erroring").status(503).start().await;
    let slow = backend("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let html = backend("html").body("<html>").start().await;
    let big = json_backend("big", json!({"blob": "x".repeat(2000)})).await;
    let config = format!(
        r#"{}
[upstreams.down]
targets = ["127.0.0.1:9"]

[routes.home]
path = "/home"
aggregate.max_part_bytes = "1KiB"
aggregate.parts.good = {{ upstream = "good", path = "/" }}
aggregate.parts.erroring = {{ upstream = "erroring", path = "/" }}
aggregate.parts.slow = {{ upstream = "slow", path = "/", timeout = "200ms" }}
aggregate.parts.html = {{ upstream = "html", path = "/" }}
aggregate.parts.big = {{ upstream = "big", path = "/" }}
aggregate.parts.down = {{ upstream = "down", path = "/" }}
aggregate.parts.lang = {{ upstream = "good", path = "/?lang={{query.lang}}" }}
"#,
        upstreams(&[
            ("good", &good),
            ("erroring", &erroring),
            ("slow", &slow),
            ("html", &html),
            ("big", &big)
        ])
    );
    let gw = GatewayHandle::start(&config).await;
    let a = call(&gw, "/home", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.header("x-tollgate-partial"),
        Some("big,down,erroring,html,lang,slow")
    );
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let v = body(&a);
    assert_eq!(v["good"], json!({"ok": true}));
    let expect = [
        ("erroring", json!(503), "error"),
        ("slow", json!(504), "timeout"),
        ("html", json!(200), "not_json"),
        ("big", json!(200), "too_large"),
        ("down", json!(502), "error"),
        ("lang", Value::Null, "skipped"),
    ];
    for (part, status, outcome) in expect {
        assert_eq!(v[part], Value::Null, "{part}: {v}");
        assert_eq!(v["_parts"][part]["status"], status, "{part}: {v}");
        assert_eq!(v["_parts"][part]["outcome"], outcome, "{part}: {v}");
    }
    let slow_ms = v["_parts"]["slow"]["ms"].as_u64().unwrap();
    assert!(
        (190..1000).contains(&slow_ms),
        "the part's timeout cut it: {slow_ms}"
    );
    assert_eq!(good.count(), 1, "the skipped part never called");
    // With the value the template needs, that part runs.
    let a = call(&gw, "/home?lang=de", &[]).await;
    assert_eq!(body(&a)["_parts"]["lang"]["outcome"], "ok");
    assert!(good.received().iter().any(|r| r.uri == "/?lang=de"));
}

#[tokio::test]
async fn a_failed_required_part_fails_the_answer() {
    let good = json_backend("good", json!({"ok": true})).await;
    let erroring = backend("erroring").status(500).start().await;
    let slow = backend("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let config = format!(
        r#"{}
[routes.error]
path = "/error"
aggregate.parts.good = {{ upstream = "good", path = "/" }}
aggregate.parts.erroring = {{ upstream = "erroring", path = "/", required = true }}

[routes.timeout]
path = "/timeout"
aggregate.parts.good = {{ upstream = "good", path = "/" }}
aggregate.parts.slow = {{ upstream = "slow", path = "/", required = true, timeout = "150ms" }}

[routes.input]
path = "/input"
aggregate.parts.good = {{ upstream = "good", path = "/" }}
aggregate.parts.user = {{ upstream = "good", path = "/u/{{header.x-user}}", required = true }}
"#,
        upstreams(&[("good", &good), ("erroring", &erroring), ("slow", &slow)])
    );
    let gw = GatewayHandle::start(&config).await;
    let a = call(&gw, "/error", &[]).await;
    let problem = assert_problem(&a, 502);
    assert!(
        problem["detail"].as_str().unwrap().contains("\"erroring\""),
        "{problem}"
    );
    assert!(a.body.find("\"ok\"").is_none(), "no partial body: {a:?}");

    let started = Instant::now();
    let a = call(&gw, "/timeout", &[]).await;
    let problem = assert_problem(&a, 504);
    assert!(
        problem["detail"].as_str().unwrap().contains("\"slow\""),
        "{problem}"
    );
    assert!(started.elapsed() < Duration::from_millis(1000));

    let a = call(&gw, "/input", &[]).await;
    let problem = assert_problem(&a, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("\"user\""),
        "{problem}"
    );
    let a = call(&gw, "/input", &[("x-user", "ada")]).await;
    assert_eq!(a.status, 200, "{a:?}");
    // Both parts call this backend, in either order.
    assert!(good.received().iter().any(|r| r.uri == "/u/ada"));

    let line = gw.log_line(|l| l["route"] == "error").await;
    assert_eq!(line["status"], 502);
    assert!(
        line["parts"].as_str().unwrap().contains("erroring:error:"),
        "{line}"
    );
}

#[tokio::test]
async fn the_route_deadline_bounds_every_part() {
    let slow = backend("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let good = json_backend("good", json!({"id": 5})).await;
    let config = format!(
        r#"{}
[routes.home]
path = "/home"
timeout = "300ms"
aggregate.parts.slow = {{ upstream = "slow", path = "/", timeout = "5s" }}
aggregate.parts.good = {{ upstream = "good", path = "/" }}
aggregate.parts.after = {{ upstream = "good", path = "/after/{{parts.slow.id}}" }}
"#,
        upstreams(&[("slow", &slow), ("good", &good)])
    );
    let gw = GatewayHandle::start(&config).await;
    let started = Instant::now();
    let a = call(&gw, "/home", &[]).await;
    let took = started.elapsed();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    let v = body(&a);
    assert_eq!(v["_parts"]["slow"]["outcome"], "timeout");
    assert_eq!(v["_parts"]["good"]["outcome"], "ok");
    assert_eq!(v["_parts"]["after"]["outcome"], "skipped", "{v}");
    assert_eq!(good.count(), 1);
}

#[tokio::test]
async fn templates_fill_each_value_as_one_segment() {
    let users = json_backend("users", json!({"team": {"id": "t/9"}, "n": 3})).await;
    let teams = json_backend("teams", json!({"name": "core"})).await;
    let (dir, secret) = {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("hs.secret");
        std::fs::write(&secret, HS_SECRET).unwrap();
        (dir, secret)
    };
    let config = format!(
        r#"{}
[auth.mobile]
type = "jwt"
algorithms = ["HS256"]
secret_file = "{}"

[routes.home]
path = "/home/{{lang}}"
auth = "mobile"
aggregate.parts.user = {{ upstream = "users", path = "/users/{{claim.sub}}?lang={{lang}}&q={{query.q}}&h={{header.x-h}}", required = true }}
aggregate.parts.team = {{ upstream = "teams", path = "/teams/{{parts.user.team.id}}/{{parts.user.n}}" }}
"#,
        upstreams(&[("users", &users), ("teams", &teams)]),
        secret.display()
    );
    let gw = GatewayHandle::start(&config).await;
    let key = TestKey::hmac(HS_SECRET.as_bytes());
    let cases = [
        ("../../admin", "/users/..%2F..%2Fadmin"),
        ("a/b", "/users/a%2Fb"),
        ("%2F", "/users/%252F"),
        ("x y?z#w", "/users/x%20y%3Fz%23w"),
        ("ünï", "/users/%C3%BCn%C3%AF"),
        ("plain-1", "/users/plain-1"),
    ];
    for (sub, path) in cases {
        let mut c = claims("iss", "aud");
        c["sub"] = json!(sub);
        let token = format!("Bearer {}", key.sign(&c));
        let a = call(
            &gw,
            "/home/en%2Dgb?q=a%26b%3Dc",
            &[("authorization", &token), ("x-h", "v w")],
        )
        .await;
        assert_eq!(a.status, 200, "{sub}: {a:?}");
        let uri = users.received().last().unwrap().uri.clone();
        assert_eq!(
            uri,
            format!("{path}?lang=en-gb&q=a%26b%3Dc&h=v%20w"),
            "{sub}"
        );
        assert_eq!(body(&a)["team"], json!({"name": "core"}));
    }
    assert_eq!(teams.received().last().unwrap().uri, "/teams/t%2F9/3");
    // A claim that would be a dot segment cannot be one segment: the required part has no
    // value, and the request is refused.
    let mut c = claims("iss", "aud");
    c["sub"] = json!("..");
    let token = format!("Bearer {}", key.sign(&c));
    let a = call(
        &gw,
        "/home/en?q=1",
        &[("authorization", &token), ("x-h", "1")],
    )
    .await;
    assert_problem(&a, 400);
    drop(dir);
}

#[tokio::test]
async fn a_part_waits_for_the_part_it_reads() {
    let profile = backend("profile")
        .body(json!({"team_id": 42}).to_string())
        .delay(Duration::from_millis(150))
        .start()
        .await;
    let teams = json_backend("teams", json!({"name": "core"})).await;
    let config = format!(
        r#"{}
[routes.home]
path = "/home"
aggregate.parts.profile = {{ upstream = "profile", path = "/me" }}
aggregate.parts.team = {{ upstream = "teams", path = "/teams/{{parts.profile.team_id}}" }}
"#,
        upstreams(&[("profile", &profile), ("teams", &teams)])
    );
    let gw = GatewayHandle::start(&config).await;
    let a = call(&gw, "/home", &[]).await;
    let v = body(&a);
    assert_eq!(v["team"], json!({"name": "core"}), "{v}");
    assert_eq!(teams.received()[0].uri, "/teams/42");
    let team_ms = v["_parts"]["team"]["ms"].as_u64().unwrap();
    assert!(team_ms < 100, "the team part's own time: {team_ms}");
}

#[tokio::test]
async fn fields_keep_members_and_into_merges_at_the_root() {
    let profile = json_backend(
        "profile",
        json!({"name": "Ada", "email": "a@x", "address": {"city": "Bern", "zip": "3000"}}),
    )
    .await;
    let feed = json_backend(
        "feed",
        json!({"items": [1], "next": "c2", "debug": {"x": 1}}),
    )
    .await;
    let config = format!(
        r#"{}
[routes.home]
path = "/home"
aggregate.meta = false
aggregate.parts.profile = {{ upstream = "profile", path = "/", fields = ["name", "address.city", "missing"] }}
aggregate.parts.feed = {{ upstream = "feed", path = "/", fields = ["items", "next"], into = "." }}
"#,
        upstreams(&[("profile", &profile), ("feed", &feed)])
    );
    let gw = GatewayHandle::start(&config).await;
    let v = body(&call(&gw, "/home", &[]).await);
    assert_eq!(
        v,
        json!({
            "profile": {"name": "Ada", "address": {"city": "Bern"}},
            "items": [1],
            "next": "c2"
        })
    );
}

#[tokio::test]
async fn a_part_behind_an_open_circuit_fails_fast() {
    let broken = backend("broken").status(500).start().await;
    let good = json_backend("good", json!({"ok": 1})).await;
    let config = format!(
        r#"
[upstreams.broken]
targets = ["{}"]
circuit_breaker = {{ failure_ratio = 0.5, min_requests = 2, window = "10s", open_for = "30s" }}

[upstreams.good]
targets = ["{}"]

[routes.home]
path = "/home"
aggregate.parts.broken = {{ upstream = "broken", path = "/" }}
aggregate.parts.good = {{ upstream = "good", path = "/" }}
"#,
        broken.target(),
        good.target()
    );
    let gw = GatewayHandle::start(&config).await;
    for _ in 0..2 {
        let v = body(&call(&gw, "/home", &[]).await);
        assert_eq!(v["_parts"]["broken"]["outcome"], "error", "{v}");
    }
    let a = call(&gw, "/home", &[]).await;
    let v = body(&a);
    assert_eq!(v["_parts"]["broken"]["outcome"], "circuit_open", "{v}");
    assert_eq!(v["_parts"]["broken"]["status"], 503);
    assert_eq!(broken.count(), 2, "nothing sent past the open circuit");
    assert_eq!(a.header("x-tollgate-partial"), Some("broken"));
}

#[tokio::test]
async fn retries_follow_the_route_policy() {
    let flaky = backend("flaky").status(503).start().await;
    let good = json_backend("good", json!({"ok": 1})).await;
    let config = format!(
        r#"
[upstreams.both]
targets = ["{}", "{}"]
balance = "round_robin"

[routes.home]
path = "/home"
retry = {{ attempts = 2, backoff = "1ms" }}
aggregate.parts.p = {{ upstream = "both", path = "/" }}
"#,
        flaky.target(),
        good.target()
    );
    let gw = GatewayHandle::start(&config).await;
    for _ in 0..4 {
        let v = body(&call(&gw, "/home", &[]).await);
        assert_eq!(
            v["_parts"]["p"]["outcome"], "ok",
            "the retry went to the other target: {v}"
        );
    }
    assert_eq!(good.count(), 4);
}

#[tokio::test]
async fn auth_and_rate_limits_refuse_before_any_part() {
    let part = json_backend("part", json!({"ok": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(&dir, &[("partner", "key-1")]);
    let config = format!(
        r#"{}
[auth.partners]
type = "api_key"
keys_file = "{keys}"

[rate_limits.one]
requests = 1
per = "1m"
key = "consumer"

[routes.home]
path = "/home"
auth = "partners"
rate_limits = ["one"]
aggregate.parts.p = {{ upstream = "part", path = "/c/{{consumer}}" }}
"#,
        upstreams(&[("part", &part)])
    );
    let gw = GatewayHandle::start(&config).await;
    let a = call(&gw, "/home", &[]).await;
    assert_problem(&a, 401);
    assert_eq!(part.count(), 0);
    let a = call(&gw, "/home", &[("x-api-key", "key-1")]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("cache-control"), Some("private, no-store"));
    assert!(a.header("ratelimit").is_some(), "{a:?}");
    let r = &part.received()[0];
    assert_eq!(r.uri, "/c/partner");
    assert_eq!(r.header("x-consumer"), Some("partner"));
    assert_eq!(r.header("x-api-key"), None, "credentials stay at the edge");
    let a = call(&gw, "/home", &[("x-api-key", "key-1")]).await;
    assert_problem(&a, 429);
    assert_eq!(part.count(), 1);
}

#[tokio::test]
async fn a_cached_part_is_reused_and_stands_in_stale_when_its_service_fails() {
    let feed = backend("feed")
        .body(json!({"items": [1, 2, 3]}).to_string())
        .header("cache-control", "max-age=1")
        .start()
        .await;
    let addr = feed.addr;
    let live = json_backend("live", json!({"now": 1})).await;
    let config = format!(
        r#"{}
[caches.short]
stale_if_error = "1m"

[routes.home]
path = "/home"
aggregate.parts.feed = {{ upstream = "feed", path = "/feed?limit=3", cache = "short" }}
aggregate.parts.live = {{ upstream = "live", path = "/" }}
"#,
        upstreams(&[("feed", &feed), ("live", &live)])
    );
    let gw = GatewayHandle::start(&config).await;
    let first = body(&call(&gw, "/home", &[]).await);
    assert_eq!(first["_parts"]["feed"]["outcome"], "ok");
    assert_eq!(
        first["_parts"]["feed"].get("age"),
        None,
        "fetched, not cached"
    );
    let second = call(&gw, "/home", &[]).await;
    let v = body(&second);
    assert_eq!(v["feed"], json!({"items": [1, 2, 3]}));
    assert_eq!(v["_parts"]["feed"]["outcome"], "ok");
    assert!(
        v["_parts"]["feed"]["age"].is_u64(),
        "a cached part has an age: {v}"
    );
    assert_eq!(feed.count(), 1, "the fresh copy was used without a request");
    assert_eq!(live.count(), 2, "uncached parts are fetched every time");
    assert!(
        metric(
            &gw,
            "tollgate_cache_requests_total",
            &[("cache", "short"), ("result", "hit")]
        )
        .await
            >= 1.0
    );

    // Past its freshness, with the service down: the stale copy stands in.
    feed.stop();
    drop(feed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = call(&gw, "/home", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    let v = body(&a);
    assert_eq!(v["feed"], json!({"items": [1, 2, 3]}));
    assert_eq!(v["_parts"]["feed"]["outcome"], "stale", "{v}");
    assert!(v["_parts"]["feed"]["age"].as_u64().unwrap() >= 1);
    assert_eq!(
        a.header("x-tollgate-partial"),
        None,
        "a stale part is an answer"
    );
    assert_eq!(a.header("cache-control"), Some("no-store"));

    // The service back with new content: fetched again and stored again.
    let feed = backend("feed")
        .body(json!({"items": [4]}).to_string())
        .header("cache-control", "max-age=60")
        .start_on(addr)
        .await;
    let v = body(&call(&gw, "/home", &[]).await);
    assert_eq!(v["feed"], json!({"items": [4]}));
    assert_eq!(v["_parts"]["feed"]["outcome"], "ok");
    assert_eq!(feed.count(), 1);

    // A purge by the part's upstream path drops its entry.
    let purged = crate::support::send(
        crate::support::client()
            .post(gw.admin_url("/cache/purge"))
            .body(r#"{"prefix": "/feed"}"#),
    )
    .await
    .unwrap();
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(body(&purged)["purged"], 1);
    let _ = call(&gw, "/home", &[]).await;
    assert_eq!(feed.count(), 2, "fetched again after the purge");
}

/// A gateway whose route `/home` has one part, `p`, on backend `b`, cached in `c` (with
/// `cache_extra` in `[caches.c]`), forwarding `forward` from the client.
async fn cached_part_gateway(b: &Backend, cache_extra: &str, forward: &str) -> GatewayHandle {
    let config = format!(
        r#"{}
[caches.c]
{cache_extra}

[routes.home]
path = "/home"
aggregate.parts.p = {{ upstream = "b", path = "/p", cache = "c", forward_headers = ["{forward}"] }}
"#,
        upstreams(&[("b", b)])
    );
    GatewayHandle::start(&config).await
}

#[tokio::test]
async fn a_cached_part_keeps_one_callers_answer_from_another() {
    // Forwarded credentials: an answer that is not `public` is nobody else's.
    let b = backend("b")
        .body(json!({"me": 1}).to_string())
        .header("cache-control", "max-age=60")
        .start()
        .await;
    let gw = cached_part_gateway(&b, "", "authorization").await;
    for token in ["Bearer alice", "Bearer bob", "Bearer alice"] {
        call(&gw, "/home", &[("authorization", token)]).await;
    }
    assert_eq!(b.count(), 3, "an answer to credentials is not stored");
    call(&gw, "/home", &[]).await;
    call(&gw, "/home", &[]).await;
    assert_eq!(b.count(), 4, "an anonymous answer is");

    // The answer's own Vary: one entry per value of the headers it names.
    let b = backend("b")
        .body(json!({"v": 1}).to_string())
        .header("cache-control", "max-age=60")
        .header("vary", "X-V")
        .start()
        .await;
    let gw = cached_part_gateway(&b, "", "x-v").await;
    for v in ["1", "2", "1", "2"] {
        let a = call(&gw, "/home", &[("x-v", v)]).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(b.count(), 2, "one fetch per variant, then hits");
    let seen: Vec<_> = b
        .received()
        .iter()
        .map(|r| r.header("x-v").unwrap_or_default().to_string())
        .collect();
    assert_eq!(seen, ["1", "2"]);

    // A per-consumer cache on a route without callers caches nothing.
    let b = backend("b")
        .body(json!({"c": 1}).to_string())
        .header("cache-control", "max-age=60")
        .start()
        .await;
    let gw = cached_part_gateway(&b, r#"scope = "consumer""#, "x-v").await;
    call(&gw, "/home", &[]).await;
    call(&gw, "/home", &[]).await;
    assert_eq!(b.count(), 2);
    assert_eq!(
        metric(
            &gw,
            "tollgate_cache_requests_total",
            &[("cache", "c"), ("result", "bypass")]
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn a_part_reaches_its_upstream_over_verified_https() {
    use crate::support::tls::TestCa;
    let ca = TestCa::new("Internal CA");
    let stranger = TestCa::new("Some other CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("internal-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let trusted = backend("trusted")
        .body(json!({"secure": true}).to_string())
        .tls(ca.leaf(&["users.internal"], 1).acceptor())
        .start()
        .await;
    let impostor = backend("impostor")
        .tls(stranger.leaf(&["users.internal"], 2).acceptor())
        .start()
        .await;
    let upstream = |name: &str, target: String| {
        format!(
            "[upstreams.{name}]\ntargets = [\"{target}\"]\ntls = true\nsni = \"users.internal\"\nca_file = \"{}\"\n",
            ca_file.display()
        )
    };
    let config = format!(
        r#"{}{}
[routes.home]
path = "/home"
aggregate.parts.trusted = {{ upstream = "trusted", path = "/me" }}
aggregate.parts.impostor = {{ upstream = "impostor", path = "/me" }}
"#,
        upstream("trusted", trusted.target()),
        upstream("impostor", impostor.target())
    );
    let gw = GatewayHandle::start(&config).await;
    let a = call(&gw, "/home", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    let v = body(&a);
    assert_eq!(v["trusted"], json!({"secure": true}));
    assert_eq!(trusted.received()[0].uri, "/me");
    assert_eq!(v["_parts"]["impostor"]["outcome"], "error", "{v}");
    assert_eq!(v["_parts"]["impostor"]["status"], 502);
    assert_eq!(
        impostor.count(),
        0,
        "no request over an unverified connection"
    );
}
