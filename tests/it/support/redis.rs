//! Redis for the cluster tests: the testkit's real `redis-server`, cluster limiters pointed at
//! a URL, a plain connection to look inside Redis, and the limiter's error counter.

pub use tollgate_testkit::redis::RedisServer;

use super::prom;
use std::sync::Arc;
use std::time::Duration;
use tollgate::observe::Metrics;
use tollgate::ratelimit::cluster::{ClusterLimiter, Settings, TlsMaterial};

/// How long the limiters of these tests wait for one Redis call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// A cluster limiter for `url` waiting [`CALL_TIMEOUT`] per call, and its metrics.
pub fn limiter_for(url: &str) -> (ClusterLimiter, Arc<Metrics>) {
    limiter_with(url, TlsMaterial::default())
}

/// Like [`limiter_for`], with the TLS material of a `rediss://` URL.
pub fn limiter_with(url: &str, tls: TlsMaterial) -> (ClusterLimiter, Arc<Metrics>) {
    let settings = Settings {
        timeout: CALL_TIMEOUT,
        tls,
        ..Settings::new(url)
    };
    let metrics = Arc::new(Metrics::new());
    let limiter = ClusterLimiter::new(&settings, metrics.clone()).expect("limiter");
    (limiter, metrics)
}

/// A plain synchronous connection to `url`, for inspecting Redis from the test.
pub fn inspect(url: &str) -> ::redis::Connection {
    ::redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("inspect connection")
}

/// `tollgate_ratelimit_backend_errors_total` of a limiter's metrics.
pub fn backend_errors(metrics: &Metrics) -> f64 {
    prom::registry_value(metrics, "tollgate_ratelimit_backend_errors_total", &[])
}
