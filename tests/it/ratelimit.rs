//! Rate limiting end to end: admitted counts against the budget, `RateLimit-Policy` /
//! `RateLimit` / `Retry-After` headers consistent with the decisions, several limits on one route
//! (all or nothing), every key kind, the missing-key rule, and buckets across reloads.
//! Long `per` values make most budgets refill-free during a test, so counts are exact.

use crate::support::auth::keys_file;
use crate::support::jwt::{now, TestKey};
use crate::support::prom::metric;
use crate::support::{backend, call, eventually, Answer, Backend, GatewayHandle};
use serde_json::json;
use std::time::{Duration, Instant};

/// `[rate_limits.NAME]` with `requests` per `per` and `key`.
fn limit(name: &str, requests: u64, per: &str, key: &str) -> String {
    format!("\n[rate_limits.{name}]\nrequests = {requests}\nper = \"{per}\"\nkey = \"{key}\"\n")
}

/// Upstream `u` and route `r` on `/r` listing `limits`, plus `extra` sections.
fn route_config(target: &str, limits: &[&str], extra: &str) -> String {
    let list: Vec<String> = limits.iter().map(|l| format!("\"{l}\"")).collect();
    format!(
        "[upstreams.u]\ntargets = [\"{target}\"]\n\n[routes.r]\npath = \"/r\"\nupstream = \"u\"\nrate_limits = [{}]\n{extra}",
        list.join(", ")
    )
}

/// The `r` (remaining) of limit `name` in a `RateLimit` field.
fn remaining(a: &Answer, name: &str) -> Option<u64> {
    item_param(a.header("ratelimit")?, name, "r")
}

fn item_param(field: &str, name: &str, param: &str) -> Option<u64> {
    field.split(", ").find_map(|item| {
        let mut parts = item.split(';');
        (parts.next()? == format!("\"{name}\""))
            .then(|| parts.find_map(|p| p.strip_prefix(&format!("{param}="))?.parse().ok()))
            .flatten()
    })
}

/// A 429 as the gateway writes it: problem+json, Retry-After in whole seconds, the fields.
fn assert_limited(a: &Answer) -> u64 {
    assert_eq!(a.status, 429, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    let body: serde_json::Value = serde_json::from_str(&a.body).expect("problem json");
    assert_eq!(body["status"], 429);
    assert!(a.header("ratelimit-policy").is_some(), "{a:?}");
    let secs: u64 = a
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(secs >= 1, "{a:?}");
    secs
}

async fn decisions(gw: &GatewayHandle, policy: &str, result: &str) -> f64 {
    metric(
        gw,
        "tollgate_ratelimit_decisions_total",
        &[("policy", policy), ("result", result)],
    )
    .await
}

async fn start(limits_toml: &str, route_limits: &[&str]) -> (GatewayHandle, Backend) {
    let app = backend("app").start().await;
    let body = route_config(&app.target(), route_limits, limits_toml);
    (GatewayHandle::start(&body).await, app)
}

#[tokio::test]
async fn admitted_count_over_a_window_matches_the_budget() {
    // 10 per second, bursts of 3: over a window of W seconds at most 3 + 10 W pass.
    let limits = limit("burst", 10, "1s", "route") + "burst = 3\n";
    let (gw, app) = start(&limits, &["burst"]).await;
    let window = Duration::from_millis(1500);
    let started = Instant::now();
    let (mut admitted, mut refused) = (0u64, 0u64);
    // The same bucket kept by the test over the times it sent at: however slowly a loaded
    // machine lets the requests go, the gateway must admit what this bucket admits.
    let mut model = Bucket::new(3.0, 10.0, started);
    let mut model_admitted = 0u64;
    for _ in 0..2_000 {
        if started.elapsed() >= window {
            break;
        }
        model_admitted += u64::from(model.take(Instant::now()));
        let a = call(&gw, "/r", &[]).await;
        assert_eq!(
            a.header("ratelimit-policy"),
            Some("\"burst\";q=10;w=1"),
            "{a:?}"
        );
        match a.status {
            200 => admitted += 1,
            429 => {
                assert_limited(&a);
                assert_eq!(remaining(&a, "burst"), Some(0));
                refused += 1;
            }
            other => panic!("unexpected status {other}: {a:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let budget = 3.0 + 10.0 * elapsed;
    assert!(
        admitted as f64 <= budget + 1.0,
        "{admitted} admitted in {elapsed:.2}s, budget {budget:.1}"
    );
    // Each request reaches the gateway a little after the test sent it: a refill may land on
    // either side of it, hence the slack of two.
    assert!(
        admitted.abs_diff(model_admitted) <= 2,
        "{admitted} admitted where a bucket over the same send times admits {model_admitted}"
    );
    assert!(refused > 0, "the loop never hit the limit");
    assert_eq!(
        app.count() as u64,
        admitted,
        "refused requests reached the upstream"
    );
    assert_eq!(decisions(&gw, "burst", "allowed").await, admitted as f64);
    assert_eq!(decisions(&gw, "burst", "rejected").await, refused as f64);
}

/// A token bucket: `capacity` tokens, `rate` per second, full at the start.
struct Bucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(capacity: f64, rate: f64, at: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            capacity,
            rate,
            at,
        }
    }

    /// Whether a request at `now` is admitted (then it spends a token).
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.at = now;
        let admitted = self.tokens >= 1.0;
        if admitted {
            self.tokens -= 1.0;
        }
        admitted
    }
}

#[tokio::test]
async fn headers_are_consistent_with_the_decisions() {
    // 3 per hour: one request every 1200 s, no refill during the test.
    let (gw, app) = start(&limit("hourly", 3, "1h", "route"), &["hourly"]).await;
    for (n, expect_r) in [(1u64, 2u64), (2, 1), (3, 0)] {
        let a = call(&gw, "/r", &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("ratelimit-policy"), Some("\"hourly\";q=3;w=3600"));
        assert_eq!(remaining(&a, "hourly"), Some(expect_r), "{a:?}");
        // Full again after n intervals of 1200 s (allow a second of rounding).
        let t = item_param(a.header("ratelimit").unwrap(), "hourly", "t").unwrap();
        assert!((n * 1200..=n * 1200 + 1).contains(&t), "t={t} after {n}");
        assert!(a.header("retry-after").is_none());
    }
    let refused = call(&gw, "/r", &[]).await;
    let retry = assert_limited(&refused);
    assert!((1199..=1200).contains(&retry), "Retry-After {retry}");
    assert_eq!(remaining(&refused, "hourly"), Some(0));
    assert_eq!(app.count(), 3);
    assert_eq!(decisions(&gw, "hourly", "allowed").await, 3.0);
    assert_eq!(decisions(&gw, "hourly", "rejected").await, 1.0);
}

#[tokio::test]
async fn several_limits_admit_all_or_nothing() {
    let limits =
        limit("per_route", 5, "1h", "route") + &limit("per_user", 2, "1h", "header:x-user");
    let (gw, app) = start(&limits, &["per_route", "per_user"]).await;
    let u1 = [("x-user", "u1")];
    let a = call(&gw, "/r", &u1).await;
    assert_eq!(
        a.header("ratelimit-policy"),
        Some("\"per_route\";q=5;w=3600, \"per_user\";q=2;w=3600")
    );
    assert_eq!(
        (remaining(&a, "per_route"), remaining(&a, "per_user")),
        (Some(4), Some(1))
    );
    let a = call(&gw, "/r", &u1).await;
    assert_eq!(
        (remaining(&a, "per_route"), remaining(&a, "per_user")),
        (Some(3), Some(0))
    );
    // per_user refuses: per_route must not be charged, again and again.
    for _ in 0..3 {
        let refused = call(&gw, "/r", &u1).await;
        assert_limited(&refused);
        assert_eq!(remaining(&refused, "per_user"), Some(0), "{refused:?}");
        assert_eq!(remaining(&refused, "per_route"), Some(3), "{refused:?}");
        // Two requests charged, 720 s each: full again in 1440 s (give a second of rounding).
        let t = item_param(refused.header("ratelimit").unwrap(), "per_route", "t").unwrap();
        assert!((1439..=1440).contains(&t), "t={t}");
    }
    let a = call(&gw, "/r", &[("x-user", "u2")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        remaining(&a, "per_route"),
        Some(2),
        "refused requests consumed per_route"
    );
    assert_eq!(app.count(), 3);
    // Only the refusing limit counts the refusals.
    assert_eq!(decisions(&gw, "per_user", "rejected").await, 3.0);
    assert_eq!(decisions(&gw, "per_route", "rejected").await, 0.0);
    assert_eq!(decisions(&gw, "per_route", "allowed").await, 3.0);
}

#[tokio::test]
async fn ip_key_is_the_peer_unless_it_is_a_trusted_proxy() {
    let app = backend("app").start().await;
    let body = route_config(&app.target(), &["per_ip"], &limit("per_ip", 1, "1h", "ip"));

    // Not trusted: X-Forwarded-For is ignored, every request is 127.0.0.1.
    let direct = GatewayHandle::start(&body).await;
    assert_eq!(
        call(&direct, "/r", &[("x-forwarded-for", "1.1.1.1")])
            .await
            .status,
        200
    );
    let spoofed = call(&direct, "/r", &[("x-forwarded-for", "2.2.2.2")]).await;
    assert_limited(&spoofed);

    // Behind a trusted proxy: the right-most untrusted X-Forwarded-For entry is the client.
    let proxied =
        GatewayHandle::start_with(&body, "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]")
            .await;
    let first = call(
        &proxied,
        "/r",
        &[("x-forwarded-for", "198.51.100.1, 10.0.0.9")],
    )
    .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(
        call(&proxied, "/r", &[("x-forwarded-for", "198.51.100.2")])
            .await
            .status,
        200
    );
    // The same client again, with a forged left-most entry: still 198.51.100.1.
    let forged = call(
        &proxied,
        "/r",
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.1")],
    )
    .await;
    assert_limited(&forged);
    // No header: the trusted peer itself is the client (a bucket of its own).
    assert_eq!(call(&proxied, "/r", &[]).await.status, 200);
    assert_limited(&call(&proxied, "/r", &[]).await);
}

#[tokio::test]
async fn header_key_and_the_shared_bucket_of_requests_without_it() {
    let (gw, app) = start(
        &limit("per_device", 1, "1h", "header:x-device"),
        &["per_device"],
    )
    .await;
    assert_eq!(call(&gw, "/r", &[("x-device", "a")]).await.status, 200);
    assert_limited(&call(&gw, "/r", &[("x-device", "a")]).await);
    assert_eq!(call(&gw, "/r", &[("x-device", "b")]).await.status, 200);
    // Requests without the header share one bucket: limited, never unlimited.
    assert_eq!(call(&gw, "/r", &[]).await.status, 200);
    assert_limited(&call(&gw, "/r", &[]).await);
    // ... which is not the bucket of any header value.
    assert_eq!(
        call(&gw, "/r", &[("x-device", "missing")]).await.status,
        200
    );
    assert_eq!(app.count(), 4);
}

#[tokio::test]
async fn route_key_gives_each_route_its_own_bucket() {
    let app = backend("app").start().await;
    let body =
        format!(
        "{}\n[routes.other]\npath = \"/other\"\nupstream = \"u\"\nrate_limits = [\"per_route\"]\n",
        route_config(&app.target(), &["per_route"], &limit("per_route", 1, "1h", "route"))
    );
    let gw = GatewayHandle::start(&body).await;
    assert_eq!(call(&gw, "/r", &[]).await.status, 200);
    assert_limited(&call(&gw, "/r", &[]).await);
    assert_eq!(call(&gw, "/other", &[]).await.status, 200);
    assert_limited(&call(&gw, "/other", &[]).await);
}

#[tokio::test]
async fn consumer_key_counts_per_api_key_consumer() {
    let app = backend("app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(&dir, &[("acme", "acme-key"), ("globex", "globex-key")]);
    let extra = format!(
        "auth = \"partners\"\n\n[auth.partners]\ntype = \"api_key\"\nkeys_file = \"{}\"\n{}",
        keys,
        limit("per_partner", 1, "1h", "consumer")
    );
    let gw = GatewayHandle::start(&route_config(&app.target(), &["per_partner"], &extra)).await;
    let acme = [("x-api-key", "acme-key")];
    assert_eq!(call(&gw, "/r", &acme).await.status, 200);
    assert_limited(&call(&gw, "/r", &acme).await);
    assert_eq!(
        call(&gw, "/r", &[("x-api-key", "globex-key")]).await.status,
        200
    );
    // Refused by auth: never counted.
    assert_eq!(call(&gw, "/r", &[("x-api-key", "wrong")]).await.status, 401);
    assert_eq!(app.count(), 2);
}

#[tokio::test]
async fn claim_key_counts_per_verified_jwt_claim() {
    const SECRET: &str = "a-rate-limit-test-secret-of-32-bytes!";
    let app = backend("app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let extra = format!(
        "auth = \"mobile\"\n\n[auth.mobile]\ntype = \"jwt\"\nissuer = \"https://idp.test\"\naudiences = [\"api\"]\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n{}{}",
        secret.display(),
        limit("per_tenant", 1, "1h", "claim:tenant"),
        limit("per_user", 5, "1h", "consumer"),
    );
    let gw = GatewayHandle::start(&route_config(
        &app.target(),
        &["per_tenant", "per_user"],
        &extra,
    ))
    .await;
    let key = TestKey::hmac(SECRET.as_bytes());
    let token = |sub: &str, tenant: Option<&str>| {
        let mut c =
            json!({"sub": sub, "iss": "https://idp.test", "aud": "api", "exp": now() + 600});
        if let Some(t) = tenant {
            c["tenant"] = json!(t);
        }
        format!("Bearer {}", key.sign(&c))
    };
    let t1 = token("alice", Some("t1"));
    let a = call(&gw, "/r", &[("authorization", &t1)]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(remaining(&a, "per_user"), Some(4));
    // Another user of the same tenant shares the tenant's bucket.
    assert_limited(&call(&gw, "/r", &[("authorization", &token("bob", Some("t1")))]).await);
    assert_eq!(
        call(&gw, "/r", &[("authorization", &token("bob", Some("t2")))])
            .await
            .status,
        200
    );
    // Tokens without the claim share the "missing" bucket.
    assert_eq!(
        call(&gw, "/r", &[("authorization", &token("carol", None))])
            .await
            .status,
        200
    );
    assert_limited(&call(&gw, "/r", &[("authorization", &token("dave", None))]).await);
    assert_eq!(app.count(), 3);
}

#[tokio::test]
async fn reload_keeps_unchanged_limits_and_resets_changed_ones() {
    let app = backend("app").start().await;
    let body = |change_requests: u64| {
        format!(
            "[upstreams.u]\ntargets = [\"{}\"]\n\n[routes.keep]\npath = \"/keep\"\nupstream = \"u\"\nrate_limits = [\"keep\"]\n\n[routes.change]\npath = \"/change\"\nupstream = \"u\"\nrate_limits = [\"change\"]\n{}{}",
            app.target(),
            limit("keep", 1, "1h", "route"),
            limit("change", change_requests, "1h", "route"),
        )
    };
    let gw = GatewayHandle::start(&body(1)).await;
    for path in ["/keep", "/change"] {
        assert_eq!(call(&gw, path, &[]).await.status, 200);
        assert_limited(&call(&gw, path, &[]).await);
    }
    let before = gw.config_hash().await;
    gw.write_body(&body(2));
    let reloaded = eventually(Duration::from_secs(10), || async {
        gw.config_hash().await != before
    })
    .await;
    assert!(reloaded, "config not reloaded");
    // Unchanged: its bucket is still empty.
    assert_limited(&call(&gw, "/keep", &[]).await);
    // Changed (2 per hour now): a fresh, full bucket.
    let a = call(&gw, "/change", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(remaining(&a, "change"), Some(1));
}

#[tokio::test]
async fn gateway_made_errors_on_a_limited_route_carry_the_fields() {
    // Nothing listens on the upstream port: the gateway answers 502 itself.
    let dead = format!("127.0.0.1:{}", crate::support::free_port());
    let gw = GatewayHandle::start(&route_config(
        &dead,
        &["per_route"],
        &limit("per_route", 2, "1h", "route"),
    ))
    .await;
    let a = call(&gw, "/r", &[]).await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(
        a.header("ratelimit-policy"),
        Some("\"per_route\";q=2;w=3600")
    );
    assert_eq!(remaining(&a, "per_route"), Some(1), "{a:?}");
    // The request was admitted, so it counted even though the upstream failed.
    assert_eq!(call(&gw, "/r", &[]).await.status, 502);
    assert_limited(&call(&gw, "/r", &[]).await);
}
