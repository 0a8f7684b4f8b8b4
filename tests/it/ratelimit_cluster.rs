//! Cluster rate limiting against a real redis-server: the GCRA script's decisions, all-or-nothing
//! over several limits, one budget shared by two limiters (two gateways), outages (timeouts,
//! one log line, counted errors), recovery after a restart (empty script cache), hostile keys,
//! and the script's arithmetic compared with `gcra::check`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::logs::LogCapture;
use crate::support::redis::{backend_errors, inspect, limiter_for, RedisServer, CALL_TIMEOUT};
use tollgate::ratelimit::cluster::{
    bounded_key, ClusterError, ClusterLimiter, MAX_KEY_BYTES, SCRIPT_WITH_FIXED_CLOCK,
};
use tollgate::ratelimit::gcra::{self, Outcome, Quota};

fn quota(requests: u64, per: Duration, burst: u64) -> Quota {
    Quota {
        requests,
        per,
        burst,
    }
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut inspect(&server.url()))
        .unwrap()
}

/// Redis server time, the clock the script decides on.
fn redis_time(server: &RedisServer) -> Duration {
    let (s, us): (u64, u64) = redis::cmd("TIME")
        .query(&mut inspect(&server.url()))
        .unwrap();
    Duration::from_secs(s) + Duration::from_micros(us)
}

/// Checks `key` until a check gets a decision: at most 50 tries, 100 ms apart.
async fn answers_again(limiter: &ClusterLimiter, key: &str, q: Quota) -> bool {
    for _ in 0..50 {
        if limiter.check_all(&[(key.to_string(), q)]).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn one(limiter: &ClusterLimiter, key: &str, q: Quota) -> Outcome {
    limiter
        .check_all(&[(key.to_string(), q)])
        .await
        .expect("check")[0]
}

#[tokio::test]
async fn burst_is_admitted_then_one_per_interval() {
    let server = RedisServer::start();
    let (limiter, metrics) = limiter_for(&server.url());
    // One per second, burst 5: the quick calls below all land well inside one interval.
    let q = quota(1, Duration::from_secs(1), 5);
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        outcomes.push(one(&limiter, "t:burst", q).await);
    }
    let remaining: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.allowed)
        .map(|o| o.remaining)
        .collect();
    assert_eq!(remaining, vec![4, 3, 2, 1, 0], "{outcomes:?}");
    let rejected = outcomes[6];
    assert!(!rejected.allowed && rejected.remaining == 0);
    assert!(
        rejected.retry_after > Duration::ZERO && rejected.retry_after <= Duration::from_secs(1)
    );
    // The bucket is full again after five intervals at most.
    assert!(rejected.reset <= Duration::from_secs(5));

    // After retry_after, exactly one more.
    tokio::time::sleep(rejected.retry_after + Duration::from_millis(20)).await;
    assert!(one(&limiter, "t:burst", q).await.allowed);
    assert!(!one(&limiter, "t:burst", q).await.allowed);

    // The bucket expires from Redis once it would be full again, not before.
    let pttl: i64 = redis::cmd("PTTL")
        .arg("t:burst")
        .query(&mut inspect(&server.url()))
        .unwrap();
    assert!(pttl > 0 && pttl <= 5_001, "pttl {pttl}");
    assert_eq!(backend_errors(&metrics), 0.0);
}

#[tokio::test]
async fn a_rejected_multi_limit_check_consumes_nothing() {
    let server = RedisServer::start();
    let (limiter, _) = limiter_for(&server.url());
    let wide = quota(1, Duration::from_secs(60), 3);
    let narrow = quota(1, Duration::from_secs(60), 1);
    let both = [
        ("t:wide".to_string(), wide),
        ("t:narrow".to_string(), narrow),
    ];

    let first = limiter.check_all(&both).await.unwrap();
    assert!(first.iter().all(|o| o.allowed), "{first:?}");
    assert_eq!((first[0].remaining, first[1].remaining), (2, 0));
    let wide_before = get(&server, "t:wide").expect("stored");

    let second = limiter.check_all(&both).await.unwrap();
    assert!(!second[1].allowed, "narrow rejects: {second:?}");
    assert!(second[0].allowed, "wide alone would admit: {second:?}");
    assert_eq!(
        get(&server, "t:wide").as_deref(),
        Some(wide_before.as_str())
    );

    // wide still has its 2: the rejected call took nothing from it.
    assert_eq!(one(&limiter, "t:wide", wide).await.remaining, 1);
    assert_eq!(one(&limiter, "t:wide", wide).await.remaining, 0);
    assert!(!one(&limiter, "t:wide", wide).await.allowed);
}

#[tokio::test]
async fn a_key_named_twice_in_one_check_is_charged_twice() {
    let server = RedisServer::start();
    let (limiter, _) = limiter_for(&server.url());
    let q = quota(1, Duration::from_secs(60), 3);
    let twice = [("t:twice".to_string(), q), ("t:twice".to_string(), q)];
    let out = limiter.check_all(&twice).await.unwrap();
    assert_eq!((out[0].remaining, out[1].remaining), (2, 1));
    assert_eq!(one(&limiter, "t:twice", q).await.remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_share_one_budget() {
    let server = RedisServer::start();
    // Two gateways: separate limiters, separate connections, one Redis.
    let (a, _) = limiter_for(&server.url());
    let (b, _) = limiter_for(&server.url());
    let limiters = [Arc::new(a), Arc::new(b)];
    let q = quota(100, Duration::from_secs(1), 5);
    let window = Duration::from_secs(3);
    let admitted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));

    let start = redis_time(&server);
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for limiter in &limiters {
        for _ in 0..4 {
            let (limiter, admitted, errors) = (limiter.clone(), admitted.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                // Bounded by time and by count.
                for _ in 0..100_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match limiter.check_all(&[("t:shared".to_string(), q)]).await {
                        Ok(o) if o[0].allowed => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = redis_time(&server) - start;
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    // The budget over the window as Redis measured it.
    let budget = elapsed.as_secs_f64() * 100.0;
    let slack = budget * 0.02 + 5.0;
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert!(
        (admitted - budget).abs() <= slack,
        "admitted {admitted} for a budget of {budget:.1} (+-{slack:.1}) over {elapsed:?}"
    );
}

#[tokio::test]
async fn an_outage_is_bounded_logged_once_counted_and_recovered_from() {
    let logs = LogCapture::install();

    let mut server = RedisServer::start();
    let (limiter, metrics) = limiter_for(&server.url());
    let q = quota(1000, Duration::from_secs(1), 100);
    assert!(one(&limiter, "t:outage", q).await.allowed);

    server.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let result = limiter.check_all(&[("t:outage".to_string(), q)]).await;
        let took = started.elapsed();
        assert!(
            matches!(
                result,
                Err(ClusterError::Timeout | ClusterError::Unavailable(_))
            ),
            "{result:?}"
        );
        // Bounded by the call timeout (generous margin for a loaded machine).
        assert!(
            took < CALL_TIMEOUT + Duration::from_secs(1),
            "took {took:?}"
        );
    }
    assert_eq!(backend_errors(&metrics), 5.0);
    let text = logs.text();
    assert_eq!(
        text.matches("Redis unreachable or slow").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("Redis answers again").count(), 0, "{text}");

    // Same port, empty Redis (empty script cache too): the same limiter recovers by itself.
    server.restart();
    let recovered = answers_again(&limiter, "t:outage", q).await;
    assert!(
        recovered,
        "no successful check within 50 tries after the restart"
    );
    assert!(one(&limiter, "t:outage", q).await.allowed);
    let text = logs.text();
    assert_eq!(
        text.matches("Redis unreachable or slow").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("Redis answers again").count(), 1, "{text}");
    assert!(
        !text.contains("redis://"),
        "the URL (may hold a password) is not logged: {text}"
    );
}

#[tokio::test]
async fn a_hung_redis_times_out_within_the_call_timeout() {
    let server = RedisServer::start();
    let (limiter, metrics) = limiter_for(&server.url());
    let q = quota(1000, Duration::from_secs(1), 100);
    assert!(one(&limiter, "t:slow", q).await.allowed);
    // A frozen server: the connection stays up but nothing answers.
    server.freeze();
    let started = Instant::now();
    let result = limiter.check_all(&[("t:slow".to_string(), q)]).await;
    let took = started.elapsed();
    assert_eq!(result, Err(ClusterError::Timeout));
    assert!(
        took < CALL_TIMEOUT + Duration::from_secs(1),
        "took {took:?}"
    );
    assert_eq!(backend_errors(&metrics), 1.0);
    server.thaw();
    let ok = answers_again(&limiter, "t:slow", q).await;
    assert!(ok, "checks did not succeed again after the server woke up");
}

#[tokio::test]
async fn an_emptied_script_cache_is_reloaded_transparently() {
    let server = RedisServer::start();
    let (limiter, metrics) = limiter_for(&server.url());
    let q = quota(1, Duration::from_secs(60), 3);
    assert_eq!(one(&limiter, "t:flush", q).await.remaining, 2);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut inspect(&server.url()))
        .unwrap();
    // NOSCRIPT is answered with a load and a retry inside the same call.
    assert_eq!(one(&limiter, "t:flush", q).await.remaining, 1);
    assert_eq!(backend_errors(&metrics), 0.0);
}

#[tokio::test]
async fn hostile_keys_and_quotas_are_handled() {
    let server = RedisServer::start();
    let (limiter, _) = limiter_for(&server.url());
    // Ten an hour, not a second: a bucket expires once full again, and the test looks for them
    // in Redis after the check (at ten a second they were gone after 101 ms on a busy machine).
    let q = quota(10, Duration::from_secs(3600), 2);
    let huge = format!("t:h:{}", "A".repeat(1 << 20));
    let keys = [
        String::new(),
        "t:h:'); redis.call('FLUSHALL') --".to_string(),
        "t:h:\r\n*1\r\n$8\r\nFLUSHALL\r\n".to_string(),
        "t:h:\u{0}\u{7f}\u{ffff}ü😀".to_string(),
        huge.clone(),
        format!("{huge}B"),
    ];
    let checks: Vec<(String, Quota)> = keys.iter().map(|k| (k.clone(), q)).collect();
    let out = limiter.check_all(&checks).await.expect("hostile keys");
    assert!(out.iter().all(|o| o.allowed && o.remaining == 1), "{out:?}");
    // Every key is stored, none is long, and the two huge ones stay distinct buckets.
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut inspect(&server.url()))
        .unwrap();
    assert_eq!(stored.len(), keys.len(), "{stored:?}");
    assert!(stored.iter().all(|k| k.len() <= MAX_KEY_BYTES));
    assert!(get(&server, &bounded_key(&huge)).is_some());

    // A garbage value at a bucket's key counts as a fresh bucket; a key of another type is an
    // error from Redis, not a panic.
    let mut conn = inspect(&server.url());
    let _: () = redis::cmd("SET")
        .arg("t:garbage")
        .arg("not a time")
        .query(&mut conn)
        .unwrap();
    assert_eq!(one(&limiter, "t:garbage", q).await.remaining, 1);
    let _: () = redis::cmd("RPUSH")
        .arg("t:list")
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let wrong = limiter.check_all(&[("t:list".to_string(), q)]).await;
    assert!(
        matches!(wrong, Err(ClusterError::Unavailable(_))),
        "{wrong:?}"
    );

    // Extreme quotas: no panic; out-of-range ones are refused before reaching Redis.
    let tiny = quota(u64::MAX, Duration::from_nanos(1), u64::MAX);
    assert!(limiter
        .check_all(&[("t:tiny".to_string(), tiny)])
        .await
        .is_err());
    let zero = quota(0, Duration::ZERO, 0);
    assert!(one(&limiter, "t:zero", zero).await.allowed);
    let days = quota(1, Duration::from_secs(86_400 * 365), 1000);
    assert!(limiter
        .check_all(&[("t:days".to_string(), days)])
        .await
        .is_err());
}

/// Runs `SCRIPT_WITH_FIXED_CLOCK` at a chosen instant; returns one outcome per check.
fn script_at(
    conn: &mut redis::Connection,
    checks: &[(String, Quota)],
    now_ns: u64,
) -> Vec<Outcome> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT_WITH_FIXED_CLOCK).arg(checks.len());
    for (key, _) in checks {
        cmd.arg(key);
    }
    for (_, q) in checks {
        cmd.arg(q.emission_interval().as_nanos() as u64)
            .arg(q.tolerance().as_nanos() as u64);
    }
    cmd.arg(now_ns / 1_000_000_000)
        .arg(now_ns % 1_000_000_000 / 1_000);
    let values: Vec<u64> = cmd.query(conn).expect("script");
    // Expiry runs on Redis' real clock, not this test's: keep the buckets, so only the
    // arithmetic is compared (expiring a full bucket is the same as keeping it).
    for (key, _) in checks {
        let _: i64 = redis::cmd("PERSIST").arg(key).query(conn).expect("persist");
    }
    values
        .chunks_exact(4)
        .map(|c| Outcome {
            allowed: c[0] == 1,
            remaining: c[1],
            reset: Duration::from_nanos(c[2]),
            retry_after: Duration::from_nanos(c[3]),
        })
        .collect()
}

/// `gcra::check` over several buckets with the cluster's all-or-nothing rule.
fn local_all(
    tats: &mut std::collections::HashMap<String, u64>,
    checks: &[(String, Quota)],
    now_ns: u64,
) -> Vec<Outcome> {
    let mut pending = tats.clone();
    let outcomes: Vec<Outcome> = checks
        .iter()
        .map(|(key, q)| {
            let (outcome, next) = gcra::check(q, pending.get(key).copied(), now_ns);
            if let Some(next) = next {
                pending.insert(key.clone(), next);
            }
            outcome
        })
        .collect();
    if outcomes.iter().all(|o| o.allowed) {
        *tats = pending;
    }
    outcomes
}

#[test]
fn the_script_decides_exactly_like_gcra_check() {
    let server = RedisServer::start();
    let mut conn = inspect(&server.url());
    let quotas = [
        quota(10, Duration::from_secs(1), 3),
        quota(3, Duration::from_secs(1), 1), // an interval that is not a whole microsecond
        quota(7, Duration::from_secs(86_400), 20), // a long interval: division precision
        quota(1_000_000, Duration::from_secs(1), 50),
    ];
    let mut tats = std::collections::HashMap::new();
    // Real wall-clock seconds (absolute times beyond 2^53 ns), microsecond steps like TIME.
    let mut now: u64 = 1_764_000_000_000_000_000;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut compared = 0;
    for step in 0..3000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Mostly short steps (bursts), sometimes long idles.
        now += match rng % 10 {
            0 => (rng >> 8) % 5_000_000_000,
            1..=3 => 0,
            _ => (rng >> 8) % 200_000_000,
        } / 1_000
            * 1_000;
        let picks = 1 + (rng >> 40) as usize % 3;
        let checks: Vec<(String, Quota)> = (0..picks)
            .map(|i| {
                let which = ((rng >> (20 + 4 * i)) % quotas.len() as u64) as usize;
                (format!("eq:{which}"), quotas[which])
            })
            .collect();
        let remote = script_at(&mut conn, &checks, now);
        let local = local_all(&mut tats, &checks, now);
        assert_eq!(remote, local, "step {step} at {now} with {checks:?}");
        compared += checks.len();
    }
    assert!(compared > 3000);
}
