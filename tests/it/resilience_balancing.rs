//! Balancing and failover through a real gateway: a target killed under steady traffic is
//! hidden from clients and avoided, then used again once it is back; backup targets serve only
//! while no primary is usable; least-requests steers away from a slow target; hashing on a
//! header is sticky; weights are honoured.

use crate::support::prom::metric_sum;
use crate::support::resilience::{
    app_requests, attempts_to, healthy_gauge, wait_health, wait_page, Load,
};
use crate::support::{
    backend, client, eventually, get, prom, send, Answer, Backend, Fault, FaultyProxy,
    GatewayHandle,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Active health checks as fast as a test can afford: a dead target is noticed within
/// `unhealthy_after × interval (+ timeout)` ≈ 0.5 s, a recovered one within ≈ 0.4 s.
const HEALTH_CHECK: &str = r#"path = "/healthz"
interval = "200ms"
timeout = "100ms"
unhealthy_after = 2
healthy_after = 2
"#;

/// How a target dies.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// The fault proxy in front of it refuses new connections and resets the open ones.
    ProxyRefuse,
    /// The backend process stops (listener and connections closed), later restarts on the same
    /// port.
    StopBackend,
}

/// Counts answers by the backend that produced them; anything else (errors, gateway answers)
/// is listed in the second value.
fn tally(answers: &[Result<Answer, String>]) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut by_backend = BTreeMap::new();
    let mut bad = Vec::new();
    for a in answers {
        match a {
            Ok(a) if a.status == 200 => {
                *by_backend
                    .entry(a.backend().unwrap_or_default())
                    .or_insert(0) += 1
            }
            other => bad.push(format!("{other:?}")),
        }
    }
    (by_backend, bad)
}

async fn one_target_killed_during_steady_load(kill: Kill, circuit: bool) {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let proxy = match kill {
        Kill::ProxyRefuse => Some(FaultyProxy::start(a.addr).await),
        Kill::StopBackend => None,
    };
    let a_target = proxy.as_ref().map_or(a.target(), |p| p.target());
    let circuit_breaker = if circuit {
        "[upstreams.pool.circuit_breaker]\nfailure_ratio = 0.5\nmin_requests = 5\nwindow = \"2s\"\nopen_for = \"1s\"\nhalf_open_probes = 1\n"
    } else {
        ""
    };
    // The budget is generous on purpose: this test is about failover, and until the dead
    // target is noticed about half the requests need a retry.
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.pool]
targets = ["{a_target}", "{}"]
retry_budget = {{ ratio = 0.5, window = "10s", min_per_second = 50 }}

[upstreams.pool.health_check]
{HEALTH_CHECK}
{circuit_breaker}
[routes.r]
path = "/r"
upstream = "pool"
retry = {{ attempts = 3, backoff = "5ms", max_backoff = "50ms" }}
"#,
        b.target()
    ))
    .await;

    // Bounded: at most 20,000 requests or 30 s, whichever comes first.
    let load = Load::start(
        gw.url("/r"),
        4,
        Duration::from_millis(5),
        20_000,
        Duration::from_secs(30),
    );
    assert!(load.wait_more(100, Duration::from_secs(10)).await);
    assert!(app_requests(&a) > 0 && app_requests(&b) > 0);

    // Kill target a.
    let a_addr = a.addr;
    let killed = Instant::now();
    match (&proxy, kill) {
        (Some(p), Kill::ProxyRefuse) => {
            p.set_fault(Fault::Refuse);
            p.kill_connections();
        }
        _ => a.stop(),
    }
    let avoided = wait_page(&gw, Duration::from_secs(5), |page| {
        let labels = [("upstream", "pool"), ("target", a_target.as_str())];
        prom::value(page, "tollgate_upstream_target_healthy", &labels) == Some(0.0)
            || prom::value(page, "tollgate_upstream_circuit_state", &labels) == Some(1.0)
    })
    .await;
    let avoided = avoided.expect("the dead target was never marked unhealthy nor cut off");
    // unhealthy_after × interval + timeout = 0.5 s; the rest is slack for a busy machine.
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "the dead target was noticed only after {avoided:?}"
    );

    // From now on it gets no attempt at all (requests in flight when it was marked may still
    // finish: let them).
    assert!(load.wait_more(40, Duration::from_secs(10)).await);
    let attempts = attempts_to(&gw, "pool", &a_target).await;
    assert!(load.wait_more(100, Duration::from_secs(10)).await);
    assert_eq!(
        attempts_to(&gw, "pool", &a_target).await,
        attempts,
        "the gateway still sends attempts to a target marked down"
    );

    // Bring it back: health checks (and, with a circuit, a probe after open_for) let traffic in.
    let back = Instant::now();
    let revived: Backend;
    let a_now: &Backend = match (&proxy, kill) {
        (Some(p), Kill::ProxyRefuse) => {
            p.set_fault(Fault::None);
            &a
        }
        _ => {
            revived = backend("a").start_on(a_addr).await;
            &revived
        }
    };
    let before = app_requests(a_now);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app_requests(a_now) > before
        })
        .await,
        "the target got no traffic after it came back"
    );
    let returned = back.elapsed();
    // healthy_after × interval = 0.4 s (open_for = 1 s with a circuit), plus slack.
    assert!(
        returned < Duration::from_secs(3),
        "traffic returned only after {returned:?}"
    );
    assert_eq!(healthy_gauge(&gw, "pool", &a_target).await, Some(1.0));
    assert!(load.wait_more(50, Duration::from_secs(10)).await);
    let answers = load.finish().await;

    let (by_backend, bad) = tally(&answers);
    assert!(
        bad.is_empty(),
        "{} of {} requests failed ({kill:?}, circuit {circuit}): {:?}",
        bad.len(),
        answers.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(by_backend.get("a").copied().unwrap_or(0) > 0);
    assert!(by_backend.get("b").copied().unwrap_or(0) > 0);
    // The failures were hidden by retries, not by luck.
    let retries = metric_sum(
        &gw,
        "tollgate_upstream_retries_total",
        &[("upstream", "pool")],
    )
    .await;
    assert!(retries > 0.0, "no retry was needed?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_killed_under_load_health_checks_hide_it_and_bring_it_back() {
    one_target_killed_during_steady_load(Kill::ProxyRefuse, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_stopped_under_load_with_circuit_and_health_checks() {
    one_target_killed_during_steady_load(Kill::StopBackend, true).await;
}

/// GETs `url` `n` times; every answer must be a 200 from a backend. Returns the backend names.
async fn served_by(url: &str, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let a = get(url).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        names.push(a.backend().expect("backend body"));
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_no_primary_is_usable() {
    let b1 = backend("primary-1").start().await;
    let b2 = backend("primary-2").start().await;
    let bk = backend("backup").start().await;
    let p1 = FaultyProxy::start(b1.addr).await;
    let p2 = FaultyProxy::start(b2.addr).await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.zone]
targets = ["{}", "{}"]
backup_targets = ["{}"]

[upstreams.zone.health_check]
{HEALTH_CHECK}
[routes.r]
path = "/r"
upstream = "zone"
retry = {{ attempts = 2 }}
"#,
        p1.target(),
        p2.target(),
        bk.target()
    ))
    .await;
    let url = gw.url("/r");

    // Both primaries up: the backup gets nothing (health checks only).
    let names = served_by(&url, 20).await;
    assert!(names.iter().all(|n| n.starts_with("primary")), "{names:?}");
    assert_eq!(app_requests(&bk), 0);

    // One primary down: the other one takes everything, still not the backup.
    p1.set_fault(Fault::Refuse);
    p1.kill_connections();
    wait_health(&gw, "zone", &p1.target(), false).await;
    let names = served_by(&url, 20).await;
    assert!(names.iter().all(|n| n == "primary-2"), "{names:?}");
    assert_eq!(app_requests(&bk), 0);

    // Both down: the backup serves, and the primaries get no attempt.
    p2.set_fault(Fault::Refuse);
    p2.kill_connections();
    wait_health(&gw, "zone", &p2.target(), false).await;
    let tried = (
        attempts_to(&gw, "zone", &p1.target()).await,
        attempts_to(&gw, "zone", &p2.target()).await,
    );
    let names = served_by(&url, 20).await;
    assert!(names.iter().all(|n| n == "backup"), "{names:?}");
    assert_eq!(app_requests(&bk), 20);
    assert_eq!(
        (
            attempts_to(&gw, "zone", &p1.target()).await,
            attempts_to(&gw, "zone", &p2.target()).await,
        ),
        tried
    );

    // Primaries back: traffic returns to them, the backup is idle again.
    p1.set_fault(Fault::None);
    p2.set_fault(Fault::None);
    wait_health(&gw, "zone", &p1.target(), true).await;
    wait_health(&gw, "zone", &p2.target(), true).await;
    let names = served_by(&url, 20).await;
    let used: BTreeSet<_> = names.iter().cloned().collect();
    assert_eq!(
        used,
        BTreeSet::from(["primary-1".to_string(), "primary-2".to_string()]),
        "{names:?}"
    );
    assert_eq!(app_requests(&bk), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_while_primary_circuits_are_open() {
    // Passive detection only: the primaries' circuits open, the backup serves; after open_for a
    // probe finds the primary recovered and traffic goes back.
    let bad = backend("primary").status(500).start().await;
    let bk = backend("backup").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.zone]
targets = ["{}"]
backup_targets = ["{}"]

[upstreams.zone.circuit_breaker]
failure_ratio = 0.5
min_requests = 3
window = "10s"
# Long enough for the 10 requests below on a slow machine; the recovery waits it out.
open_for = "3s"
half_open_probes = 1

[routes.r]
path = "/r"
upstream = "zone"
"#,
        bad.target(),
        bk.target()
    ))
    .await;
    let url = gw.url("/r");
    for _ in 0..3 {
        assert_eq!(get(&url).await.unwrap().status, 500);
    }
    assert_eq!(app_requests(&bk), 0);
    let names = served_by(&url, 10).await;
    assert!(names.iter().all(|n| n == "backup"), "{names:?}");
    assert_eq!(bad.count(), 3);

    bad.stop();
    let good = backend("primary").start_on(bad.addr).await;
    let ok = eventually(Duration::from_secs(10), || async {
        get(&url).await.ok().and_then(|a| a.backend()).as_deref() == Some("primary")
    })
    .await;
    assert!(ok, "traffic never returned to the recovered primary");
    let backup_before = app_requests(&bk);
    let names = served_by(&url, 10).await;
    assert!(names.iter().all(|n| n == "primary"), "{names:?}");
    assert_eq!(app_requests(&bk), backup_before);
    assert_eq!(app_requests(&good), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_steers_away_from_a_slow_target() {
    let slow = backend("slow")
        .delay(Duration::from_millis(300))
        .start()
        .await;
    let fast = backend("fast").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.lr]
targets = ["{}", "{}"]
balance = "least_requests"

[routes.r]
path = "/r"
upstream = "lr"
"#,
        slow.target(),
        fast.target()
    ))
    .await;
    let load = Load::start(
        gw.url("/r"),
        4,
        Duration::from_millis(1),
        2_000,
        Duration::from_secs(2),
    );
    let answers = load.join().await;
    let (by_backend, bad) = tally(&answers);
    assert!(bad.is_empty(), "{bad:?}");
    let (s, f) = (
        by_backend["slow"],
        by_backend.get("fast").copied().unwrap_or(0),
    );
    // Round robin would give each half. With 4 clients and a 300 ms target, least-requests
    // leaves at most a couple of them waiting on it at any time.
    assert!(
        f >= 5 * s && f >= 50,
        "least_requests sent {s} requests to the slow target and {f} to the fast one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_header_is_sticky_per_value() {
    let backends = [
        backend("h1").start().await,
        backend("h2").start().await,
        backend("h3").start().await,
    ];
    let targets: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.target()))
        .collect();
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.h]
targets = [{}]
balance = "hash"
hash_key = "header:x-user"

[routes.r]
path = "/r"
upstream = "h"
"#,
        targets.join(", ")
    ))
    .await;
    let http = client();
    let mut chosen = BTreeMap::new();
    for user in 0..30 {
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let a = send(
                http.get(gw.url("/r"))
                    .header("x-user", format!("user-{user}")),
            )
            .await
            .unwrap();
            assert_eq!(a.status, 200);
            seen.insert(a.backend().unwrap());
        }
        assert_eq!(seen.len(), 1, "user-{user} went to {seen:?}");
        chosen.insert(user, seen.into_iter().next().unwrap());
    }
    let used: BTreeSet<_> = chosen.values().collect();
    assert!(used.len() >= 2, "30 keys all hashed to {used:?}");

    // Without the header the client address is hashed: one client, one target.
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        seen.insert(get(&gw.url("/r")).await.unwrap().backend().unwrap());
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(backends.iter().map(|b| b.count()).sum::<usize>(), 130);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured_by_round_robin_and_random() {
    let heavy = backend("heavy").start().await;
    let light = backend("light").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.rr]
targets = [{{ addr = "{h}", weight = 3 }}, {{ addr = "{l}", weight = 1 }}]

[upstreams.rnd]
targets = [{{ addr = "{h}", weight = 9 }}, "{l}"]
balance = "random"

[routes.rr]
path = "/rr"
upstream = "rr"

[routes.rnd]
path = "/rnd"
upstream = "rnd"
"#,
        h = heavy.target(),
        l = light.target()
    ))
    .await;
    // Round robin is exact: 10 whole cycles of 3 + 1.
    let names = served_by(&gw.url("/rr"), 40).await;
    let heavy_rr = names.iter().filter(|n| *n == "heavy").count();
    assert_eq!((heavy_rr, 40 - heavy_rr), (30, 10));
    // Random is 9 : 1 on average; 150 of 200 is more than 7 standard deviations below 180.
    let names = served_by(&gw.url("/rnd"), 200).await;
    let heavy_rnd = names.iter().filter(|n| *n == "heavy").count();
    assert!(
        (150..200).contains(&heavy_rnd),
        "random with weights 9:1 sent {heavy_rnd} of 200 to the heavy target"
    );
}
