//! The cluster limiter's connection to one Redis, where the redis crate alone would not do what
//! the gateway needs: a connection whose set-up failed (a password Redis refused, and accepts
//! later) is not kept failing every later check.

use std::sync::Arc;
use std::time::Duration;

use crate::support::redis::RedisServer;
use tollgate::observe::Metrics;
use tollgate::ratelimit::cluster::{ClusterError, ClusterLimiter, Settings};
use tollgate::ratelimit::gcra::Quota;

const QUOTA: Quota = Quota {
    requests: 1000,
    per: Duration::from_secs(1),
    burst: 1000,
};

#[tokio::test]
async fn a_refused_password_is_tried_again_on_a_new_connection() {
    let server = RedisServer::start_with(&["--requirepass", "old-pw"]);
    let url = |pw: &str| format!("redis://:{pw}@127.0.0.1:{}/0", server.port());
    let settings = Settings {
        timeout: Duration::from_millis(500),
        ..Settings::new(&url("new-pw"))
    };
    let limiter = ClusterLimiter::new(&settings, Arc::new(Metrics::new())).expect("limiter");
    assert!(
        check(&limiter).await.is_err(),
        "Redis still wants the old password"
    );

    // Redis is given the new password (a rotation done on the server first).
    let mut admin = redis::Client::open(url("old-pw"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("admin connection");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new-pw")
        .query(&mut admin)
        .expect("CONFIG SET requirepass");

    // The next check connects again rather than keep the failed connection.
    let allowed = check(&limiter)
        .await
        .expect("the next check gets a decision");
    assert!(allowed);
}

async fn check(limiter: &ClusterLimiter) -> Result<bool, ClusterError> {
    let outcomes = limiter
        .check_all(&[("t:rotate".to_string(), QUOTA)])
        .await?;
    Ok(outcomes[0].allowed)
}
