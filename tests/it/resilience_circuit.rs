//! Circuit breaker per target, as clients and the metrics see it: a target failing every request
//! opens its circuit at the configured threshold; while open it gets no connection at all and
//! clients get the route's fallback or a fast 503 with `Retry-After`; after `open_for` probes
//! go through (at most `half_open_probes` at a time), a failing probe reopens it and
//! succeeding probes close it.

use crate::support::prom::metric;
use crate::support::resilience::{
    app_requests, attempts_to, circuit_gauge, transitions, wait_metric_eq,
};
use crate::support::{assert_problem, backend, get, Answer, GatewayHandle};
use std::time::{Duration, Instant};

const UPSTREAM: &str = "flaky";

/// One target behind two routes: `/plain` (no fallback) and `/soft` (fallback).
fn config(target: &str, min_requests: u32, open_for: &str, probes: u32) -> String {
    format!(
        r#"
[upstreams.flaky]
targets = ["{target}"]

[upstreams.flaky.circuit_breaker]
failure_ratio = 0.5
min_requests = {min_requests}
window = "10s"
open_for = "{open_for}"
half_open_probes = {probes}

[routes.plain]
path = "/plain"
upstream = "flaky"

[routes.soft]
path = "/soft"
upstream = "flaky"
fallback = {{ status = 200, body = '{{"items":[],"stale":true}}', content_type = "application/json" }}
"#
    )
}

async fn circuit_is(gw: &GatewayHandle, target: &str, state: f64, limit: Duration) -> bool {
    wait_metric_eq(
        gw,
        "tollgate_upstream_circuit_state",
        &[("upstream", UPSTREAM), ("target", target)],
        state,
        limit,
    )
    .await
    .is_some()
}

/// A 503 the gateway made because the circuit is open: problem+json and `Retry-After` in
/// whole seconds, at least 1 and at most `open_for` rounded up.
fn assert_open_circuit_503(a: &Answer, open_for_secs: u64) {
    assert_problem(a, 503);
    assert!(a.header("x-tollgate-fallback").is_none(), "{a:?}");
    let retry_after: u64 = a
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on a 503 for an open circuit: {a:?}"))
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (1..=open_for_secs).contains(&retry_after),
        "Retry-After {retry_after} not in 1..={open_for_secs}"
    );
}

fn assert_fallback(a: &Answer) {
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-tollgate-fallback"), Some("1"), "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");
    assert_eq!(a.body, r#"{"items":[],"stale":true}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_target_opens_fails_fast_probes_and_recovers() {
    // Slow failures (400 ms each), so "fast" below means something: an open circuit must answer
    // long before the target would have.
    let delay = Duration::from_millis(400);
    let bad = backend("bad").status(500).delay(delay).start().await;
    let target = bad.target();
    let open_for = Duration::from_secs(2);
    let gw = GatewayHandle::start(&config(&target, 5, "2s", 2)).await;
    assert_eq!(circuit_gauge(&gw, UPSTREAM, &target).await, Some(0.0));

    // Below min_requests the circuit stays closed, however bad the ratio. The upstream's own
    // 500 is passed through as is, also on the route with a fallback (it did answer).
    for i in 0..4 {
        let path = if i % 2 == 0 { "/plain" } else { "/soft" };
        let a = get(&gw.url(path)).await.unwrap();
        assert_eq!(a.status, 500, "{a:?}");
        assert!(a.header("x-tollgate-fallback").is_none(), "{a:?}");
        assert_eq!(a.backend().as_deref(), Some("bad"));
    }
    assert!(
        crate::support::eventually(Duration::from_secs(5), || async {
            attempts_to(&gw, UPSTREAM, &target).await == 4.0
        })
        .await
    );
    assert_eq!(circuit_gauge(&gw, UPSTREAM, &target).await, Some(0.0));
    assert_eq!(transitions(&gw, UPSTREAM, &target, "open").await, 0.0);

    // The 5th failure reaches min_requests at a failure ratio of 1: open.
    let a = get(&gw.url("/plain")).await.unwrap();
    assert_eq!(a.status, 500);
    assert!(
        circuit_is(&gw, &target, 1.0, Duration::from_secs(2)).await,
        "circuit did not open after min_requests failures"
    );
    let opened = Instant::now();
    assert_eq!(transitions(&gw, UPSTREAM, &target, "open").await, 1.0);
    assert_eq!(bad.count(), 5);
    let connections = bad.connections();

    // While open: no connection, no request; fast answers (fallback or 503 + Retry-After).
    for i in 0..10 {
        if i % 2 == 0 {
            let a = get(&gw.url("/plain")).await.unwrap();
            assert_open_circuit_503(&a, open_for.as_secs());
            assert!(a.took < delay / 2, "open circuit answered slowly: {a:?}");
        } else {
            let a = get(&gw.url("/soft")).await.unwrap();
            assert_fallback(&a);
            assert!(a.took < delay / 2, "fallback answered slowly: {a:?}");
        }
    }
    assert!(
        opened.elapsed() < open_for,
        "the open-circuit checks took longer than open_for ({:?}); the machine is too slow for \
         this test's timing",
        opened.elapsed()
    );
    assert_eq!(
        bad.count(),
        5,
        "the target got requests while its circuit was open"
    );
    assert_eq!(
        bad.connections(),
        connections,
        "the gateway connected to a target whose circuit is open"
    );
    assert_eq!(
        metric(
            &gw,
            "tollgate_fallback_responses_total",
            &[("route", "soft")]
        )
        .await,
        5.0
    );
    assert_eq!(
        metric(
            &gw,
            "tollgate_requests_total",
            &[("route", "plain"), ("method", "GET"), ("status", "503")]
        )
        .await,
        5.0
    );

    // After open_for a probe goes through; the target still fails, so the circuit reopens.
    let mut answers = Vec::new();
    let probe_deadline = Instant::now() + open_for + Duration::from_secs(3);
    while bad.count() == 5 && Instant::now() < probe_deadline && answers.len() < 1000 {
        answers.push(get(&gw.url("/plain")).await.unwrap());
        if bad.count() == 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(bad.count(), 6, "no probe reached the target after open_for");
    let (probe, before) = answers.split_last().expect("at least one answer");
    assert_eq!(
        probe.status, 500,
        "the probe's answer is passed on: {probe:?}"
    );
    for a in before {
        assert_open_circuit_503(a, open_for.as_secs());
    }
    assert!(
        circuit_is(&gw, &target, 1.0, Duration::from_secs(2)).await,
        "a failed probe must reopen the circuit"
    );
    assert_eq!(transitions(&gw, UPSTREAM, &target, "half_open").await, 1.0);
    assert_eq!(transitions(&gw, UPSTREAM, &target, "open").await, 2.0);
    assert_eq!(transitions(&gw, UPSTREAM, &target, "closed").await, 0.0);

    // The service recovers (same address, now answering 200). After open_for the probes
    // succeed and half_open_probes (2) successes close the circuit.
    bad.stop();
    let good = backend("good").start_on(bad.addr).await;
    let ok = crate::support::eventually(open_for + Duration::from_secs(3), || async {
        get(&gw.url("/plain")).await.map(|a| a.status) == Ok(200)
    })
    .await;
    assert!(ok, "the recovered target was never probed");
    let a = get(&gw.url("/plain")).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        circuit_is(&gw, &target, 0.0, Duration::from_secs(2)).await,
        "two successful probes did not close the circuit"
    );
    assert_eq!(transitions(&gw, UPSTREAM, &target, "half_open").await, 2.0);
    assert_eq!(transitions(&gw, UPSTREAM, &target, "closed").await, 1.0);
    assert_eq!(transitions(&gw, UPSTREAM, &target, "open").await, 2.0);

    // Closed again: traffic flows normally, the fallback is no longer served.
    for path in ["/plain", "/soft", "/plain", "/soft"] {
        let a = get(&gw.url(path)).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.backend().as_deref(), Some("good"));
        assert!(a.header("x-tollgate-fallback").is_none());
    }
    assert_eq!(app_requests(&good), 6);
    assert_eq!(
        metric(
            &gw,
            "tollgate_fallback_responses_total",
            &[("route", "soft")]
        )
        .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_lets_at_most_the_probe_count_through() {
    let bad = backend("bad").status(500).start().await;
    let target = bad.target();
    let open_for = Duration::from_secs(1);
    let gw = GatewayHandle::start(&config(&target, 3, "1s", 2)).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/plain")).await.unwrap().status, 500);
    }
    assert!(circuit_is(&gw, &target, 1.0, Duration::from_secs(2)).await);

    // Recovered but slow: probes stay in flight long enough for a burst to find the slots taken.
    bad.stop();
    let slow = Duration::from_millis(600);
    let good = backend("good").delay(slow).start_on(bad.addr).await;

    // Bursts of 8 concurrent requests until one reaches the target (bounded).
    let end = Instant::now() + open_for + Duration::from_secs(4);
    let mut burst_answers = Vec::new();
    while app_requests(&good) == 0 && Instant::now() < end {
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let url = gw.url("/plain");
                tokio::spawn(async move { get(&url).await.unwrap() })
            })
            .collect();
        burst_answers.clear();
        for h in burst {
            burst_answers.push(h.await.unwrap());
        }
        if app_requests(&good) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let probes = app_requests(&good);
    assert!(
        (1..=2).contains(&probes),
        "{probes} requests reached a half-open target allowing 2 probes"
    );
    let passed: Vec<_> = burst_answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(passed.len(), probes, "{burst_answers:?}");
    for a in burst_answers.iter().filter(|a| a.status != 200) {
        // Rejected while the probes are in flight: fast, no fallback on /plain.
        assert_eq!(a.status, 503, "{a:?}");
        assert!(
            a.took < slow,
            "a rejected request waited for the probes: {a:?}"
        );
    }

    // Enough successful probes close it; afterwards every request goes through.
    assert!(
        crate::support::eventually(Duration::from_secs(5), || async {
            get(&gw.url("/plain")).await.map(|a| a.status) == Ok(200)
                && circuit_gauge(&gw, UPSTREAM, &target).await == Some(0.0)
        })
        .await,
        "circuit did not close after successful probes"
    );
    let before = app_requests(&good);
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url("/plain");
            tokio::spawn(async move { get(&url).await.unwrap() })
        })
        .collect();
    for h in burst {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(app_requests(&good), before + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_open_the_circuit_and_the_other_target_takes_over() {
    // Passive detection only (no health check): a target that refuses connections is cut off by
    // its circuit, and retries hide it from clients meanwhile.
    let dead = format!("127.0.0.1:{}", crate::support::free_port());
    let alive = backend("alive").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.flaky]
targets = ["{dead}", "{}"]

[upstreams.flaky.circuit_breaker]
failure_ratio = 0.5
min_requests = 3
window = "10s"
open_for = "30s"
half_open_probes = 1

[routes.r]
path = "/r"
upstream = "flaky"
retry = {{ attempts = 2, backoff = "5ms", max_backoff = "10ms" }}
"#,
        alive.target()
    ))
    .await;
    for _ in 0..30 {
        let a = get(&gw.url("/r")).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.backend().as_deref(), Some("alive"));
    }
    assert!(circuit_is(&gw, &dead, 1.0, Duration::from_secs(2)).await);
    // Exactly min_requests connect attempts went to the dead target (sequential client).
    assert_eq!(attempts_to(&gw, UPSTREAM, &dead).await, 3.0);
    assert_eq!(
        metric(
            &gw,
            "tollgate_upstream_retries_total",
            &[("upstream", UPSTREAM), ("reason", "connect_error")]
        )
        .await,
        3.0
    );
    assert_eq!(app_requests(&alive), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_giving_up_do_not_open_the_circuit_of_a_slow_target() {
    // The target is slow but answers every request. Impatient clients hang up first: that is
    // not a failure of the target (not a connect error, timeout or 5xx), so the circuit stays
    // closed and a patient client is served.
    let slow = backend("slow")
        .delay(Duration::from_millis(500))
        .start()
        .await;
    let target = slow.target();
    let gw = GatewayHandle::start(&config(&target, 3, "30s", 1)).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .no_proxy()
        .build()
        .unwrap();
    for _ in 0..6 {
        let r = impatient.get(gw.url("/plain")).send().await;
        assert!(r.is_err(), "the client should have given up: {r:?}");
    }
    // The gateway notices each hang-up (bounded wait), then the circuit must still be closed.
    assert!(
        crate::support::eventually(Duration::from_secs(5), || async {
            crate::support::prom::metric(
                &gw,
                "tollgate_requests_total",
                &[("route", "plain"), ("method", "GET"), ("status", "0")],
            )
            .await
                >= 6.0
                || attempts_to(&gw, UPSTREAM, &target).await >= 6.0
        })
        .await,
        "the gateway did not finish the abandoned requests"
    );
    assert_eq!(circuit_gauge(&gw, UPSTREAM, &target).await, Some(0.0));
    assert_eq!(transitions(&gw, UPSTREAM, &target, "open").await, 0.0);
    // Nor are the hang-ups counted as the target's errors: they are `client_closed` (or the
    // target's own 2xx when it answered before the gateway noticed).
    for outcome in ["error", "timeout", "5xx"] {
        // Summed over targets: `metric` wants the whole label set and read 0 for any outcome.
        let n = crate::support::prom::metric_sum(
            &gw,
            "tollgate_upstream_requests_total",
            &[("upstream", UPSTREAM), ("outcome", outcome)],
        )
        .await;
        assert_eq!(n, 0.0, "outcome {outcome}");
    }
    let a = get(&gw.url("/plain")).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
}

/// A healthy target behind a 3 s read timeout, a breaker that opens after 5 failures, and a
/// retry policy that would retry a timed-out POST.
fn stall_config(target: &str) -> String {
    format!(
        r#"
[upstreams.flaky]
targets = ["{target}"]
read_timeout = "3s"

[upstreams.flaky.circuit_breaker]
failure_ratio = 0.5
min_requests = 5
window = "10s"
open_for = "30s"
half_open_probes = 1

[routes.pub]
path = "/pub/{{*rest}}"
upstream = "flaky"
retry = {{ attempts = 3, backoff = "5ms", max_backoff = "10ms", methods = ["GET", "POST"] }}
"#
    )
}

/// Sends a POST head declaring 100 bytes of body and only 5 of them, then goes quiet; returns
/// what the gateway answers.
async fn stalled_post(gw: &GatewayHandle) -> crate::support::RawResponse {
    let mut conn = crate::support::RawConn::connect(gw.addr).await;
    conn.send(b"POST /pub/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\nabcde")
        .await
        .unwrap();
    conn.read_response().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalling_their_bodies_get_408_and_never_open_the_circuit() {
    // The upstream waits for a body the client never finishes sending; the read timeout that
    // ends the wait says nothing about the target. Before the fix every stall was charged to
    // the target as a timeout (504), and six of them opened its circuit for every client.
    let good = backend("good").start().await;
    let target = good.target();
    let gw = GatewayHandle::start(&stall_config(&target)).await;

    let stalls: Vec<_> = (0..6)
        .map(|_| {
            let gw = &gw;
            async move { stalled_post(gw).await }
        })
        .collect();
    let answers = futures::future::join_all(stalls).await;
    for a in &answers {
        assert_eq!(a.status, 408, "{a:?}");
        assert_eq!(
            a.header("content-type"),
            Some("application/problem+json"),
            "{a:?}"
        );
        assert_eq!(a.json()["status"], 408, "{a:?}");
        assert!(a.header("x-request-id").is_some(), "{a:?}");
        assert_eq!(a.header("connection"), Some("close"), "{a:?}");
    }

    // No verdict against the target: not a timeout, not retried, the circuit closed.
    assert_eq!(transitions(&gw, UPSTREAM, &target, "open").await, 0.0);
    assert_eq!(circuit_gauge(&gw, UPSTREAM, &target).await, Some(0.0));
    let outcome = |o: &'static str| {
        let gw = &gw;
        async move {
            crate::support::prom::metric_sum(
                gw,
                "tollgate_upstream_requests_total",
                &[("upstream", UPSTREAM), ("outcome", o)],
            )
            .await
        }
    };
    assert_eq!(outcome("timeout").await, 0.0);
    assert_eq!(outcome("client_closed").await, 6.0);
    assert_eq!(attempts_to(&gw, UPSTREAM, &target).await, 6.0, "retried");
    assert_eq!(
        crate::support::prom::metric_sum(&gw, "tollgate_upstream_retries_total", &[]).await,
        0.0
    );
    assert_eq!(
        metric(
            &gw,
            "tollgate_rejected_requests_total",
            &[("reason", "body_timeout")]
        )
        .await,
        6.0
    );
    // The access log says why.
    let ids: Vec<&str> = answers
        .iter()
        .map(|a| a.header("x-request-id").unwrap())
        .collect();
    for id in ids {
        let line = gw.log_line(|l| l["request_id"] == id).await;
        assert_eq!(line["status"], 408, "{line}");
        assert_eq!(line["reason"], "body_timeout", "{line}");
        assert_eq!(line["route"], "pub", "{line}");
        assert_eq!(line["bytes_in"], 5, "{line}");
    }

    // Every other client is still served by the target.
    let a = get(&gw.url("/pub/x")).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.backend().as_deref(), Some("good"));
}
