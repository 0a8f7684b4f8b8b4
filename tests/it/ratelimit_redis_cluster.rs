//! Cluster rate limits on a real Redis Cluster (three masters, three replicas, started here):
//! `redis+cluster://` reaches every master (the password from the URL; `rediss+cluster://` with
//! every node's certificate verified against `ca_file`), a route's limits share
//! one hash slot so its check stays one all-or-nothing script, and a killed master costs no 5xx
//! (`on_error` decides until its replica is promoted) while the budget is shared again once the
//! cluster is healthy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::prom::metric;
use crate::support::redis_cluster::RedisCluster;
use crate::support::tls::TestCa;
use crate::support::{backend, client, eventually, GatewayHandle};
use crate::support::{send, Answer};
use tollgate::observe::Metrics;
use tollgate::ratelimit::cluster::{ClusterError, ClusterLimiter, Settings, TlsMaterial};
use tollgate::ratelimit::gcra::Quota;

/// Generous: the machine running the tests may be busy, and these tests are not about timeouts.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn limiter(url: &str) -> ClusterLimiter {
    let settings = Settings {
        timeout: CALL_TIMEOUT,
        ..Settings::new(url)
    };
    ClusterLimiter::new(&settings, Arc::new(Metrics::new())).expect("limiter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_share_buckets_on_every_master_with_the_urls_password() {
    let cluster = RedisCluster::start_with(Some("cluster-pw"));
    let (a, b) = (limiter(&cluster.url()), limiter(&cluster.url()));
    let q = Quota {
        requests: 1,
        per: Duration::from_secs(3600),
        burst: 5,
    };
    // Thirty buckets, spread over the slots (and so over the three masters).
    for i in 0..30 {
        let key = format!("t:spread:{i}");
        let first = a.check_all(&[(key.clone(), q)]).await.expect("check")[0];
        assert_eq!(first.remaining, 4, "{key}");
        let second = b.check_all(&[(key.clone(), q)]).await.expect("check")[0];
        assert_eq!(
            second.remaining, 3,
            "{key}: the other limiter's charge is seen"
        );
    }
    assert_eq!(cluster.keys("t:spread:*").len(), 30);
    let masters_used = cluster
        .masters()
        .into_iter()
        .filter(|&p| !cluster.cli(p, &["KEYS", "t:spread:*"]).trim().is_empty())
        .count();
    assert_eq!(masters_used, 3, "buckets on every master");

    // A wrong password gets no decision, and is not echoed.
    let wrong = cluster.url().replace("cluster-pw", "not-the-pw");
    let err = limiter(&wrong)
        .check_all(&[("t:spread:0".to_string(), q)])
        .await
        .expect_err("refused");
    assert!(!err.to_string().contains("not-the-pw"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_verifies_every_node_against_the_ca_file() {
    let ca = TestCa::new("Tollgate test Redis Cluster CA");
    let cluster = RedisCluster::start_tls(&ca);
    assert!(cluster.url().starts_with("rediss+cluster://"));
    let with_ca = |ca: &TestCa| {
        let settings = Settings {
            timeout: CALL_TIMEOUT,
            tls: TlsMaterial {
                ca_pem: Some(ca.pem().into_bytes()),
                ..TlsMaterial::default()
            },
            ..Settings::new(&cluster.url())
        };
        ClusterLimiter::new(&settings, Arc::new(Metrics::new())).expect("limiter")
    };
    let trusting = with_ca(&ca);
    let q = Quota {
        requests: 1,
        per: Duration::from_secs(3600),
        burst: 3,
    };
    // The seeds, and the masters found from them, are each verified against the CA.
    for i in 0..12 {
        let key = format!("t:tls:{i}");
        let o = trusting.check_all(&[(key, q)]).await.expect("check")[0];
        assert_eq!(o.remaining, 2);
    }
    assert_eq!(cluster.keys("t:tls:*").len(), 12);
    let stranger = with_ca(&TestCa::new("Some other CA"));
    let err = stranger
        .check_all(&[("t:tls:0".to_string(), q)])
        .await
        .expect_err("a node whose certificate the CA did not sign is refused");
    assert!(
        matches!(err, ClusterError::Timeout | ClusterError::Unavailable(_)),
        "{err}"
    );
}

fn config(redis: &str, on_error: &str, target: &str, limits: &str, listed: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{redis}\"\non_error = \"{on_error}\"\ntimeout = \"250ms\"\n\n[upstreams.u]\ntargets = [\"{target}\"]\n\n[routes.r]\npath = \"/r\"\nupstream = \"u\"\nrate_limits = {listed}\n\n{limits}"
    )
}

async fn call(gw: &GatewayHandle, user: &str) -> Answer {
    let req = client().get(gw.url("/r")).header("x-user", user);
    send(req).await.expect("answer")
}

#[tokio::test]
async fn a_routes_limits_with_different_keys_share_a_slot_and_stay_all_or_nothing() {
    let cluster = RedisCluster::start();
    let app = backend("app").start().await;
    // Per user 2 an hour, per client address 3 an hour: their buckets for one request have
    // different hashes, so only a hash tag shared by the route's limits keeps them in one slot.
    let limits = "[rate_limits.per_user]\nrequests = 2\nper = \"1h\"\nkey = \"header:x-user\"\ncluster = true\n\n[rate_limits.per_ip]\nrequests = 3\nper = \"1h\"\nkey = \"ip\"\ncluster = true\n";
    let body = config(
        &cluster.url(),
        "deny",
        &app.target(),
        limits,
        "[\"per_user\", \"per_ip\"]",
    )
    .replace("timeout = \"250ms\"", "timeout = \"2s\"");
    let gw = GatewayHandle::start(&body).await;
    let mut statuses = Vec::new();
    for user in ["u1", "u1", "u1", "u2", "u3"] {
        statuses.push(call(&gw, user).await.status);
    }
    // u1's third request is refused by per_user and charges per_ip nothing, so u2 still gets
    // per_ip's third request; u3 finds per_ip spent. (on_error = "deny": a check Redis refused,
    // CROSSSLOT say, would be a 429 from the start.)
    assert_eq!(statuses, [200, 200, 429, 200, 429]);
    assert_eq!(
        metric(&gw, "tollgate_ratelimit_backend_errors_total", &[]).await,
        0.0
    );
    let keys = cluster.keys("tollgate:rl:*");
    assert_eq!(
        keys.len(),
        3,
        "per_user for u1 and u2, per_ip once: {keys:?}"
    );
    assert!(
        keys.iter().all(|k| k.contains(":{g:per_ip}:")),
        "one tag for the group, named after its first limit: {keys:?}"
    );
}

#[tokio::test]
async fn a_killed_master_costs_no_5xx_and_the_budget_is_shared_again_after_failover() {
    let mut cluster = RedisCluster::start();
    let app = backend("app").start().await;
    // One bucket for the route, far from spent.
    let limits =
        "[rate_limits.shared]\nrequests = 1000\nper = \"1h\"\nkey = \"route\"\ncluster = true\n";
    let listed = "[\"shared\"]";
    let local = GatewayHandle::start(&config(
        &cluster.url(),
        "local",
        &app.target(),
        limits,
        listed,
    ))
    .await;
    let deny = GatewayHandle::start(&config(
        &cluster.url(),
        "deny",
        &app.target(),
        limits,
        listed,
    ))
    .await;
    let gws = [&deny, &local];
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(&deny, "u").await.status == 200
        })
        .await,
        "the cluster decides"
    );
    assert_shared(&gws).await;

    let master = cluster
        .master_holding("tollgate:rl:*")
        .expect("a master holds the bucket");
    cluster.kill(master);
    // Until the replica is promoted (bounded), every answer is a decision: 200 or 429.
    let started = Instant::now();
    let mut answers = Vec::new();
    loop {
        for gw in gws {
            let a = call(gw, "u").await;
            assert!(matches!(a.status, 200 | 429), "{a:?}");
            answers.push(a.status);
        }
        if cluster.wait_healthy(Duration::ZERO) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no failover within 30 s: {}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The gateways find the new master (each connection by itself): the cluster decides again,
    // one budget for both.
    let back = eventually(Duration::from_secs(15), || shared_now(&gws)).await;
    assert!(back, "the gateways did not return to one budget in Redis");
    assert!(
        answers.iter().all(|s| matches!(s, 200 | 429)),
        "{answers:?}"
    );
}

async fn assert_shared(gws: &[&GatewayHandle]) {
    assert!(shared_now(gws).await, "one budget across instances");
}

/// Whether, alternating between the instances, every answer is a 200 showing one token fewer
/// than the one before: one bucket, in Redis. Any answer but 200 or 429 fails the test.
async fn shared_now(gws: &[&GatewayHandle]) -> bool {
    let mut last = None;
    for i in 0..6 {
        let a = call(gws[i % gws.len()], "u").await;
        assert!(matches!(a.status, 200 | 429), "{a:?}");
        let r: Option<u64> = a
            .header("ratelimit")
            .and_then(|v| v.split(";r=").nth(1))
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.parse().ok());
        let (200, Some(r)) = (a.status, r) else {
            return false;
        };
        if last.is_some_and(|before| r + 1 != before) {
            return false;
        }
        last = Some(r);
    }
    true
}
