//! Cluster rate limits through the gateway, with a real `redis-server` on a free port: several
//! Tollgate instances share one budget; with Redis killed, each `on_error` mode does what it says
//! and no 5xx appears; with Redis back, cluster limiting resumes.

use crate::support::prom::metric;
use crate::support::redis::RedisServer;
use crate::support::{backend, call, client, eventually, GatewayHandle};
use std::time::{Duration, Instant};

fn config(redis: &str, on_error: &str, target: &str, limit: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{redis}\"\non_error = \"{on_error}\"\ntimeout = \"200ms\"\n\n[upstreams.u]\ntargets = [\"{target}\"]\n\n[routes.r]\npath = \"/r\"\nupstream = \"u\"\nrate_limits = [\"shared\"]\n\n[rate_limits.shared]\n{limit}\nkey = \"route\"\ncluster = true\n"
    )
}

/// `body` with a generous Redis timeout: a busy machine must not turn slow Redis calls into
/// `deny` answers in tests about sharing a budget, not about outages.
fn patient(body: String) -> String {
    body.replace("timeout = \"200ms\"", "timeout = \"2s\"")
}

/// Sends `n` requests to each instance in turn; returns the 200s and asserts nothing else than
/// 200 or 429 was answered.
async fn round_robin(gws: &[GatewayHandle], rounds: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..rounds {
        for gw in gws {
            let a = call(gw, "/r", &[]).await;
            match a.status {
                200 => admitted += 1,
                429 => assert!(a.header("retry-after").is_some(), "{a:?}"),
                other => panic!("unexpected {other}: {a:?}"),
            }
        }
    }
    admitted
}

async fn start_instances(n: usize, body: &str) -> Vec<GatewayHandle> {
    let mut gws = Vec::new();
    for _ in 0..n {
        gws.push(GatewayHandle::start(body).await);
    }
    gws
}

#[tokio::test]
async fn instances_share_one_budget() {
    let redis = RedisServer::start();
    let app = backend("app").start().await;
    // No refill during the test: exactly 20 pass, whichever instance is asked.
    let exact = config(
        &redis.url(),
        "deny",
        &app.target(),
        "requests = 20\nper = \"1h\"",
    );
    let gws = start_instances(3, &exact).await;
    let started = Instant::now();
    assert_eq!(round_robin(&gws, 12).await, 20);
    assert_eq!(app.count(), 20);
    let a = call(&gws[1], "/r", &[]).await;
    let took = started.elapsed().as_secs();
    assert_eq!(a.status, 429);
    // One round trip per check: 37 requests made 37 script calls, plus at most one refused
    // EVALSHA per instance (a fresh Redis has an empty script cache; the script is then loaded).
    let stats = redis.command("INFO commandstats").unwrap();
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let scripts = calls("evalsha") + calls("eval");
    assert!((37..=37 + 3).contains(&scripts), "{stats}");
    // Redis server time moves on between calls: the reset is the hour less the time the
    // requests took (within a second; a busy machine takes seconds for them).
    let state = a.header("ratelimit").unwrap_or_default();
    let t: u64 = state
        .strip_prefix("\"shared\";r=0;t=")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{a:?}"));
    assert!((3599 - took..=3600).contains(&t), "{a:?} after {took}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_through_two_instances_spend_the_budget_exactly() {
    let redis = RedisServer::start();
    let app = backend("app").start().await;
    // No refill during the test.
    let body = patient(config(
        &redis.url(),
        "deny",
        &app.target(),
        "requests = 100\nper = \"1h\"",
    ));
    let connections_before = redis.connections_received();
    // The harness runs each instance on 2 threads.
    let gws = start_instances(2, &body).await;
    // 240 requests, 60 at a time, over both instances: their checks share one Redis
    // connection per instance, many in flight on it at once.
    let client = client();
    let mut statuses = Vec::new();
    for wave in 0..4 {
        let calls: Vec<_> = (0..60)
            .map(|i| {
                let url = gws[(wave + i) % 2].url("/r");
                let req = client.get(url).send();
                tokio::spawn(async move { req.await.map(|r| r.status().as_u16()) })
            })
            .collect();
        for call in calls {
            statuses.push(call.await.unwrap().expect("answer"));
        }
    }
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((admitted, refused), (100, 140), "{statuses:?}");
    assert_eq!(app.count(), 100);
    // One connection per instance (the later count's own connection is one more).
    assert_eq!(redis.connections_received() - connections_before, 2 + 1);
}

#[tokio::test]
async fn instances_share_one_rate_over_a_window() {
    let redis = RedisServer::start();
    let app = backend("app").start().await;
    // 40 per second, bursts of 5, across three instances.
    let body = patient(config(
        &redis.url(),
        "deny",
        &app.target(),
        "requests = 40\nper = \"1s\"\nburst = 5",
    ));
    let gws = start_instances(3, &body).await;
    let window = Duration::from_millis(1500);
    let started = Instant::now();
    let mut admitted = 0usize;
    let mut sent = 0usize;
    for _ in 0..400 {
        if started.elapsed() >= window {
            break;
        }
        admitted += round_robin(&gws, 1).await;
        sent += gws.len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let budget = 5.0 + 40.0 * elapsed;
    assert!(
        admitted as f64 <= budget * 1.02 + 1.0,
        "{admitted} admitted in {elapsed:.2}s across 3 instances, budget {budget:.1}"
    );
    // A slow machine may not even send the budget's worth: then nearly all must pass.
    let floor = (budget * 0.8).min(sent as f64 * 0.8);
    assert!(
        admitted as f64 >= floor,
        "{admitted} of {sent} admitted in {elapsed:.2}s, budget {budget:.1}: the limit refused too much"
    );
}

#[tokio::test]
async fn redis_outage_applies_on_error_and_limiting_resumes() {
    let mut redis = RedisServer::start();
    let app = backend("app").start().await;
    let limit = "requests = 2\nper = \"1h\"";
    let local = GatewayHandle::start(&config(&redis.url(), "local", &app.target(), limit)).await;
    let allow = GatewayHandle::start(&config(&redis.url(), "allow", &app.target(), limit)).await;
    let deny = GatewayHandle::start(&config(&redis.url(), "deny", &app.target(), limit)).await;
    // While Redis answers, the three share the 2 requests of the hour.
    let mut before = Vec::new();
    for gw in [&local, &allow, &deny, &local] {
        before.push(call(gw, "/r", &[]).await.status);
    }
    assert_eq!(
        before.iter().filter(|s| **s == 200).count(),
        2,
        "{before:?}"
    );

    redis.stop();
    // local: this instance's own bucket (full: it was never used), 2 then refusals.
    let statuses: Vec<u16> = futures::future::join_all((0..4).map(|_| call(&local, "/r", &[])))
        .await
        .iter()
        .map(|a| a.status)
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 200, 429, 429], "local fallback: {statuses:?}");
    // allow: everything passes, and the response says nothing about the unknown state.
    for _ in 0..4 {
        let a = call(&allow, "/r", &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("ratelimit"), None, "{a:?}");
        assert!(a.header("ratelimit-policy").is_some());
    }
    // deny: refused with a short Retry-After, never a 5xx.
    for _ in 0..3 {
        let a = call(&deny, "/r", &[]).await;
        assert_eq!(a.status, 429, "{a:?}");
        assert_eq!(a.header("retry-after"), Some("1"), "{a:?}");
    }
    for (gw, result) in [
        (&local, "degraded_allowed"),
        (&local, "degraded_rejected"),
        (&allow, "degraded_allowed"),
        (&deny, "degraded_rejected"),
    ] {
        let n = metric(
            gw,
            "tollgate_ratelimit_decisions_total",
            &[("policy", "shared"), ("result", result)],
        )
        .await;
        assert!(n >= 1.0, "{result}: {n}");
    }
    assert!(metric(&deny, "tollgate_ratelimit_backend_errors_total", &[]).await >= 3.0);

    // Redis is back (empty: a full bucket): the cluster decides again.
    redis.restart();
    let resumed = eventually(Duration::from_secs(10), || async {
        call(&deny, "/r", &[]).await.status == 200
    })
    .await;
    assert!(
        resumed,
        "cluster limiting did not resume after Redis came back"
    );
    // Each instance's connection comes back on its own; degraded answers until then.
    let allow_resumed = eventually(Duration::from_secs(10), || async {
        let a = call(&allow, "/r", &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        a.header("ratelimit")
            .is_some_and(|v| v.starts_with("\"shared\";r=0;"))
    })
    .await;
    assert!(allow_resumed, "allow-mode instance did not resume");
    // The budget of the hour is used up again, in Redis: the local instance hears it from there.
    let local_resumed = eventually(Duration::from_secs(10), || async {
        assert_eq!(call(&local, "/r", &[]).await.status, 429);
        metric(
            &local,
            "tollgate_ratelimit_decisions_total",
            &[("policy", "shared"), ("result", "rejected")],
        )
        .await
            >= 1.0
    })
    .await;
    assert!(local_resumed, "local-mode instance did not resume");
}

#[tokio::test]
async fn the_gateway_reaches_redis_over_tls_with_its_ca_file() {
    let ca = crate::support::tls::TestCa::new("Tollgate test Redis CA");
    let (_redis, port) = crate::support::tls::tls_redis(&ca, &["localhost"], false);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let app = backend("app").start().await;
    let body = config(
        &format!("rediss://localhost:{port}/0"),
        "deny",
        &app.target(),
        "requests = 3\nper = \"1h\"",
    )
    .replace(
        "timeout = \"200ms\"\n",
        &format!("timeout = \"200ms\"\nca_file = \"{}\"\n", ca_file.display()),
    );
    let gw = GatewayHandle::start(&body).await;
    let statuses: Vec<u16> = statuses(&gw, 5).await;
    // on_error = "deny": without a verified TLS connection every answer would be a 429.
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(app.count(), 3);
}

async fn statuses(gw: &GatewayHandle, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(call(gw, "/r", &[]).await.status);
    }
    statuses
}
