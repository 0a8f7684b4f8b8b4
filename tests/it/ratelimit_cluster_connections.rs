//! The cluster limiter's connections to Redis: credentials and database from the URL, Unix
//! sockets, one connection shared by concurrent checks (each answer to its own check, even with
//! checks cut off midway), a restart that costs no check, backing off during an
//! outage (one probe per interval), and replies that are not Redis replies. Against a real
//! redis-server, or a fake one on a local port where a real one cannot misbehave on purpose.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::prom;
use crate::support::redis::{backend_errors, inspect, limiter_for, limiter_with, RedisServer};
use crate::support::tls::{tls_redis, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::observe::Metrics;
use tollgate::ratelimit::cluster::{
    ClusterError, ClusterLimiter, Settings, TlsMaterial, PROBE_INTERVAL,
};
use tollgate::ratelimit::gcra::Quota;

const QUOTA: Quota = Quota {
    requests: 1000,
    per: Duration::from_secs(1),
    burst: 1000,
};

async fn check(limiter: &ClusterLimiter, key: &str) -> Result<bool, ClusterError> {
    let outcomes = limiter.check_all(&[(key.to_string(), QUOTA)]).await?;
    Ok(outcomes[0].allowed)
}

/// Why a check got no decision; panics if it got one, or timed out.
fn unavailable(result: Result<bool, ClusterError>) -> String {
    match result {
        Err(ClusterError::Unavailable(why)) => why.to_string(),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn keys_in_db(server: &RedisServer, password: &str, db: u32) -> Vec<String> {
    let url = format!("redis://:{password}@127.0.0.1:{}/{db}", server.port());
    let mut conn = inspect(&url);
    redis::cmd("KEYS").arg("*").query(&mut conn).unwrap()
}

#[tokio::test]
async fn the_password_and_database_of_the_url_are_used_and_never_echoed() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/3", server.port());
    let (limiter, _) = limiter_for(&url);
    // A bucket that stays in Redis while the test looks for it: one of QUOTA's expires once
    // full again, 2 ms after the check.
    let hourly = Quota {
        per: Duration::from_secs(3600),
        ..QUOTA
    };
    let outcomes = limiter.check_all(&[("t:auth".to_string(), hourly)]).await;
    assert_eq!(outcomes.map(|o| o[0].allowed), Ok(true));
    assert_eq!(
        keys_in_db(&server, "s3cret-pw", 3),
        vec!["t:auth".to_string()]
    );
    assert!(keys_in_db(&server, "s3cret-pw", 0).is_empty());

    let wrong = format!("redis://:not-the-pw@127.0.0.1:{}/0", server.port());
    let (limiter, metrics) = limiter_for(&wrong);
    let why = unavailable(check(&limiter, "t:auth").await);
    assert!(why.contains("authentication failed"), "{why}");
    assert!(
        !why.contains("not-the-pw"),
        "the password is not echoed: {why}"
    );
    assert_eq!(backend_errors(&metrics), 1.0);
}

#[tokio::test]
async fn a_unix_socket_url_works() {
    let server = RedisServer::start_with(&[
        "--unixsocket",
        "{dir}/redis.sock",
        "--unixsocketperm",
        "700",
    ]);
    let url = format!("redis+unix://{}", server.dir().join("redis.sock").display());
    let (limiter, _) = limiter_for(&url);
    for _ in 0..3 {
        assert_eq!(check(&limiter, "t:unix").await, Ok(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_one_connection_and_each_gets_its_own_answer() {
    let server = RedisServer::start();
    let (limiter, metrics) = limiter_for(&server.url());
    let limiter = Arc::new(limiter);
    // Each key has its own burst, so an answer handed to the wrong check shows; no refill
    // within the test.
    let quota_of = |i: u64| Quota {
        requests: 1,
        per: Duration::from_secs(3600),
        burst: 10 + i,
    };
    let before = server.connections_received();
    for round in 0..3u64 {
        let calls: Vec<_> = (0..60u64)
            .map(|i| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    let key = format!("t:mux:{i}");
                    let outcome = limiter.check_all(&[(key, quota_of(i))]).await;
                    (i, outcome)
                })
            })
            .collect();
        for call in calls {
            let (i, outcome) = call.await.unwrap();
            let outcome = outcome.expect("check")[0];
            assert!(outcome.allowed);
            assert_eq!(
                outcome.remaining,
                10 + i - 1 - round,
                "key {i}, round {round}"
            );
        }
    }
    // The fields are read over one more connection of the test's own.
    let opened = server.connections_received() - before - 1;
    assert_eq!(opened, 1, "180 checks, 60 at a time, over one connection");
    assert_eq!(calls_timed(&metrics), 180.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_cut_off_at_any_moment_leave_the_connection_answering_correctly() {
    let server = RedisServer::start();
    let (limiter, _) = limiter_for(&server.url());
    let limiter = Arc::new(limiter);
    // Many checks, a third of them dropped after 0-300 µs (while queued, writing, reading or
    // driving the connection for others).
    let calls: Vec<_> = (0..300u64)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let checks = [(format!("t:cut:{i}"), QUOTA)];
                let check = limiter.check_all(&checks);
                if i % 3 == 0 {
                    let _ = tokio::time::timeout(Duration::from_micros(i % 300), check).await;
                } else {
                    check.await.expect("an uncut check gets its answer");
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    // Afterwards every answer still goes to its own check.
    for i in 0..20u64 {
        let q = Quota {
            burst: 5 + i,
            ..QUOTA
        };
        let first = limiter
            .check_all(&[(format!("t:after:{i}"), q)])
            .await
            .expect("check")[0];
        assert_eq!(first.remaining, 5 + i - 1, "key {i}");
    }
}

#[tokio::test]
async fn a_restarted_redis_costs_no_failed_check() {
    let mut server = RedisServer::start();
    let (limiter, metrics) = limiter_for(&server.url());
    assert_eq!(check(&limiter, "t:restart").await, Ok(true));
    // The pooled connection dies with the server; the next check notices before any reply
    // byte, drops the idle connections and sends again on a new one (and reloads the script).
    server.restart();
    assert_eq!(check(&limiter, "t:restart").await, Ok(true));
    assert_eq!(backend_errors(&metrics), 0.0);
}

#[tokio::test]
async fn rediss_verifies_the_certificate_and_the_host_name() {
    let ca = TestCa::new("Tollgate test Redis CA");
    let (_server, port) = tls_redis(&ca, &["localhost"], false);
    let trusting = |url: String, ca: &TestCa| limiter_with(&url, trust(ca));
    let (limiter, metrics) = trusting(format!("rediss://localhost:{port}/0"), &ca);
    for _ in 0..3 {
        assert_eq!(check(&limiter, "t:tls").await, Ok(true));
    }
    assert_eq!(backend_errors(&metrics), 0.0);

    // A certificate from another CA, or for another name, is refused: no decision from it.
    let stranger = TestCa::new("Some other CA");
    let (limiter, _) = trusting(format!("rediss://localhost:{port}/0"), &stranger);
    let why = unavailable(check(&limiter, "t:tls").await);
    assert!(why.contains("certificate"), "{why}");
    let (limiter, _) = trusting(format!("rediss://127.0.0.1:{port}/0"), &ca);
    let why = unavailable(check(&limiter, "t:tls").await);
    assert!(why.contains("certificate"), "{why}");
    // Plain TCP to the TLS port gets no reply it can use.
    let (limiter, _) = limiter_for(&format!("redis://localhost:{port}/0"));
    assert!(check(&limiter, "t:tls").await.is_err());
}

fn trust(ca: &TestCa) -> TlsMaterial {
    TlsMaterial {
        ca_pem: Some(ca.pem().into_bytes()),
        ..TlsMaterial::default()
    }
}

#[tokio::test]
async fn a_redis_that_requires_client_certificates_gets_ours() {
    let ca = TestCa::new("Tollgate test Redis CA");
    let (_server, port) = tls_redis(&ca, &["localhost"], true);
    let url = format!("rediss://localhost:{port}/0");
    let client = ca.leaf(&["tollgate"], 7);
    let (limiter, metrics) = limiter_with(
        &url,
        TlsMaterial {
            client_cert_pem: Some(client.cert_pem.clone().into_bytes()),
            client_key_pem: Some(client.key_pem.clone().into_bytes()),
            ..trust(&ca)
        },
    );
    for _ in 0..3 {
        assert_eq!(check(&limiter, "t:mtls").await, Ok(true));
    }
    assert_eq!(backend_errors(&metrics), 0.0);
    // Without one, or with one from another CA, Redis refuses the connection.
    let stranger = TestCa::new("Some other CA").leaf(&["tollgate"], 8);
    for tls in [
        trust(&ca),
        TlsMaterial {
            client_cert_pem: Some(stranger.cert_pem.into_bytes()),
            client_key_pem: Some(stranger.key_pem.into_bytes()),
            ..trust(&ca)
        },
    ] {
        let (limiter, _) = limiter_with(&url, tls);
        assert!(check(&limiter, "t:mtls").await.is_err());
    }
}

/// Why a limiter cannot be built from `settings` ("setting: message").
fn refusal(url: &str, tls: TlsMaterial) -> String {
    let settings = Settings {
        tls,
        ..Settings::new(url)
    };
    ClusterLimiter::new(&settings, Arc::new(Metrics::new()))
        .err()
        .expect("refused")
        .to_string()
}

#[test]
fn turning_verification_off_or_a_ca_without_tls_is_refused() {
    let err = refusal("rediss://localhost:6380/0#insecure", TlsMaterial::default());
    assert!(
        err.starts_with("redis_url:") && err.contains("#insecure"),
        "{err}"
    );
    let err = refusal("redis://localhost:6379/0", trust(&TestCa::new("CA")));
    assert!(err.starts_with("ca_file:"), "{err}");
    let not_pem = TlsMaterial {
        ca_pem: Some(b"not a certificate".to_vec()),
        ..TlsMaterial::default()
    };
    let err = refusal("rediss://localhost:6380/0", not_pem);
    assert!(err.starts_with("ca_file:"), "{err}");
    let leaf = TestCa::new("CA").leaf(&["tollgate"], 1);
    let key_only = TlsMaterial {
        client_key_pem: Some(leaf.key_pem.clone().into_bytes()),
        ..TlsMaterial::default()
    };
    let err = refusal("rediss://localhost:6380/0", key_only);
    assert!(err.starts_with("cert_file:"), "{err}");
    let cert_as_key = TlsMaterial {
        client_cert_pem: Some(leaf.cert_pem.clone().into_bytes()),
        client_key_pem: Some(leaf.cert_pem.into_bytes()),
        ..TlsMaterial::default()
    };
    let err = refusal("rediss://localhost:6380/0", cert_as_key);
    assert!(err.starts_with("key_file:"), "{err}");
}

/// What the fake Redis does with each command it reads.
#[derive(Clone, Copy)]
enum Fake {
    /// Reads and never answers: a hung Redis.
    Hang,
    /// Answers every read with these bytes.
    Reply(&'static [u8]),
}

/// A fake Redis on a local port; counts the connections it accepted. Ends with the test's
/// runtime.
async fn fake_redis(behaviour: Fake) -> (String, Arc<AtomicUsize>) {
    let listener = crate::support::listener();
    let url = format!("redis://{}/0", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if let Fake::Reply(bytes) = behaviour {
                        if stream.write_all(bytes).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn after_failures_in_a_row_checks_fail_at_once_and_one_probe_goes_per_interval() {
    let (url, accepted) = fake_redis(Fake::Hang).await;
    let (limiter, metrics) = limiter_for(&url);
    for _ in 0..3 {
        assert_eq!(check(&limiter, "t:hang").await, Err(ClusterError::Timeout));
    }
    // Each timed-out call left its connection mid-reply: never lent again, so each call
    // opened one.
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    for _ in 0..20 {
        let why = unavailable(check(&limiter, "t:hang").await);
        assert!(why.contains("backing off"), "{why}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "no call reached Redis while backing off"
    );
    tokio::time::sleep(PROBE_INTERVAL + Duration::from_millis(50)).await;
    assert_eq!(
        check(&limiter, "t:hang").await,
        Err(ClusterError::Timeout),
        "the probe"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    assert_eq!(
        backend_errors(&metrics),
        24.0,
        "every check without a decision counts"
    );
    assert_eq!(
        calls_timed(&metrics),
        4.0,
        "only the calls that went to Redis are timed"
    );
}

fn calls_timed(metrics: &Metrics) -> f64 {
    prom::registry_value(
        metrics,
        "tollgate_ratelimit_backend_duration_seconds_count",
        &[],
    )
}

#[tokio::test]
async fn replies_that_are_not_redis_replies_are_errors() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\n\r\n"[..],
        b"$999999999999\r\n",
        b"*2\r\n:1\r\n+OK\r\n",
        b"+OK\r\n",
        b"-ERR wrong kind of server\r\n",
    ] {
        let (url, _) = fake_redis(Fake::Reply(reply)).await;
        let (limiter, metrics) = limiter_for(&url);
        match check(&limiter, "t:garbage").await {
            Err(ClusterError::Unavailable(_)) => {}
            // A bulk string announced and never sent: the client waits for it, within the call
            // timeout.
            Err(ClusterError::Timeout) if reply.starts_with(b"$") => {}
            other => panic!(
                "{:?}: expected Unavailable, got {other:?}",
                String::from_utf8_lossy(reply)
            ),
        }
        assert_eq!(backend_errors(&metrics), 1.0);
    }
}
