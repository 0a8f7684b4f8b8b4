//! Cluster-wide rate limits kept in Redis: one GCRA script checks and consumes several buckets
//! atomically in one round trip, on Redis server time, with every call bounded by a timeout.
//!
//! The connection is a redis `ConnectionManager` (one multiplexed connection shared by all
//! requests, reconnecting by itself), created on first use so building a limiter does no I/O and
//! needs no runtime. Outages are logged once (warn) and their end once (info); every failed call
//! counts in `tollgate_ratelimit_backend_errors_total`. What to do on an error (`on_error`) is the
//! caller's decision.

use crate::observe::Metrics;
use crate::ratelimit::gcra::{Outcome, Quota};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The script sent to Redis: the server-clock prelude, then the GCRA body (see gcra.lua for
/// the protocol). Fixed at compile time; requests only ever fill KEYS and ARGV.
const SCRIPT: &str = concat!(include_str!("server_clock.lua"), include_str!("gcra.lua"));

/// The same GCRA body behind a clock read from the two last ARGV (seconds, microseconds), for
/// the test that compares the script with `gcra::check` at chosen instants. Never used by
/// [`ClusterLimiter`].
#[doc(hidden)]
pub const SCRIPT_WITH_FIXED_CLOCK: &str =
    concat!(include_str!("fixed_clock.lua"), include_str!("gcra.lua"));

/// Keys longer than this are shortened to a prefix plus a SHA-256 of the whole key, so a hostile
/// header or claim value cannot make Redis store (or the gateway send) arbitrarily large keys.
pub const MAX_KEY_BYTES: usize = 200;
/// Bytes of the original key kept in front of the hash, for readability in `redis-cli`.
const KEPT_PREFIX_BYTES: usize = 64;

/// The longest `per / requests * burst` (interval plus tolerance) the script computes exactly: it works in
/// nanoseconds held in Lua doubles (exact to 2^53), relative to now, with headroom for sums.
pub const MAX_SPAN: Duration = Duration::from_nanos(1 << 52);

/// Why a cluster check gave no decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// Redis did not answer within the call timeout (slow, or the connection attempt hung).
    Timeout,
    /// Redis refused or failed the call, or cannot be reached.
    Unavailable(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Timeout => f.write_str("Redis did not answer within the call timeout"),
            ClusterError::Unavailable(why) => write!(f, "Redis unavailable: {why}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// The Redis backend of cluster limits; cheap to share (`Arc`) between requests.
pub struct ClusterLimiter {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Created on the first call, inside the runtime that makes it.
    conn: OnceLock<ConnectionManager>,
    script: redis::Script,
    call_timeout: Duration,
    metrics: Arc<Metrics>,
    /// False between the first failed call of an outage and the next successful one.
    healthy: AtomicBool,
    /// `host:port` for logs (never the URL: it may hold a password).
    addr: String,
}

impl ClusterLimiter {
    /// Parses `redis_url`; no I/O: connects lazily, reconnects by itself.
    pub fn new(
        redis_url: &str,
        call_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<ClusterLimiter, String> {
        let client = redis::Client::open(redis_url).map_err(|e| format!("redis_url: {e}"))?;
        let addr = client.get_connection_info().addr().to_string();
        // Each connection attempt and each response is bounded by the call timeout; a failed
        // reconnect is retried once, quickly, and then again on the next call, so a restarted
        // Redis is picked up within a call or two instead of after a long backoff.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(call_timeout))
            .set_response_timeout(Some(call_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(call_timeout);
        Ok(ClusterLimiter {
            client,
            config,
            conn: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            call_timeout,
            metrics,
            healthy: AtomicBool::new(true),
            addr,
        })
    }

    /// All-or-nothing over several limits in one round trip: if every limit admits, all are
    /// consumed; if any rejects, none is. Outcomes are in `checks` order and are exactly what
    /// `gcra::check` says for each bucket (an admitting limit of a rejected call reports what it
    /// would have left). Keys are full Redis keys chosen by the caller (long ones are hashed);
    /// each written key expires once its bucket is full again.
    pub async fn check_all(
        &self,
        checks: &[(String, Quota)],
    ) -> Result<Vec<Outcome>, ClusterError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.script.prepare_invoke();
        for (key, quota) in checks {
            let (t, tau) = script_args(quota)?;
            invocation.key(bounded_key(key).as_ref()).arg(t).arg(tau);
        }
        let mut conn = self.connection()?;
        let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
        let result = match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => Err(ClusterError::Timeout),
            // The connection's own timeouts (same length) may fire first.
            Ok(Err(e)) if e.is_timeout() => Err(ClusterError::Timeout),
            Ok(Err(e)) => Err(ClusterError::Unavailable(e.to_string())),
            Ok(Ok(values)) => parse_reply(&values, checks.len()),
        };
        self.record(&result);
        result
    }

    fn connection(&self) -> Result<ConnectionManager, ClusterError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let conn =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                .map_err(|e| ClusterError::Unavailable(e.to_string()));
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                self.record::<()>(&Err(e.clone()));
                return Err(e);
            }
        };
        // Two first calls racing may both build one; the loser's is dropped unused.
        Ok(self.conn.get_or_init(|| conn).clone())
    }

    /// Counts failures and logs the edges of an outage, not every request.
    fn record<T>(&self, result: &Result<T, ClusterError>) {
        match result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(redis = %self.addr, "cluster rate limiting: Redis answers again");
                }
            }
            Err(error) => {
                self.metrics.ratelimit_backend_error();
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(redis = %self.addr, %error, "cluster rate limiting: Redis unreachable or slow; on_error applies until it answers (logged once per outage)");
                }
            }
        }
    }
}

/// The script's arguments for one quota: emission interval and tolerance in nanoseconds, refused
/// when out of the range the script computes exactly.
fn script_args(quota: &Quota) -> Result<(u64, u64), ClusterError> {
    let t = quota.emission_interval();
    let tau = quota.tolerance();
    if t.saturating_add(tau) > MAX_SPAN {
        return Err(ClusterError::Unavailable(format!(
            "quota spans more than {}s, beyond the cluster script's range",
            MAX_SPAN.as_secs()
        )));
    }
    Ok((t.as_nanos() as u64, tau.as_nanos() as u64))
}

/// The key as sent to Redis: unchanged when short, else a prefix (cut on a character boundary)
/// plus the SHA-256 of the whole key.
pub fn bounded_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_KEY_BYTES {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut cut = KEPT_PREFIX_BYTES;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    std::borrow::Cow::Owned(format!("{}#sha256:{digest}", &key[..cut]))
}

/// Four integers per bucket: allowed, remaining, reset ns, retry_after ns.
fn parse_reply(values: &[i64], expected: usize) -> Result<Vec<Outcome>, ClusterError> {
    if values.len() != expected * 4 {
        return Err(ClusterError::Unavailable(format!(
            "unexpected script reply: {} values for {expected} limits",
            values.len()
        )));
    }
    let nanos = |v: i64| Duration::from_nanos(u64::try_from(v).unwrap_or(0));
    Ok(values
        .chunks_exact(4)
        .map(|c| Outcome {
            allowed: c[0] == 1,
            remaining: u64::try_from(c[1]).unwrap_or(0),
            reset: nanos(c[2]),
            retry_after: nanos(c[3]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_kept_and_long_keys_are_bounded_and_distinct() {
        assert_eq!(bounded_key("tollgate:rl:a:b"), "tollgate:rl:a:b");
        let long_a = format!("tollgate:rl:x:{}", "é".repeat(5000));
        let long_b = format!("{long_a}b");
        let (a, b) = (bounded_key(&long_a), bounded_key(&long_b));
        assert!(a.len() <= MAX_KEY_BYTES && b.len() <= MAX_KEY_BYTES);
        assert_ne!(a, b);
        assert!(a.starts_with("tollgate:rl:x:"));
    }

    #[test]
    fn quotas_beyond_the_script_range_are_refused() {
        let ok = Quota {
            requests: 100,
            per: Duration::from_secs(60),
            burst: 10,
        };
        assert!(script_args(&ok).is_ok());
        let huge = Quota {
            requests: 1,
            per: Duration::from_secs(86_400),
            burst: 1000,
        };
        assert!(script_args(&huge).is_err());
    }

    #[test]
    fn a_short_reply_is_an_error_not_a_panic() {
        assert!(parse_reply(&[1, 2, 3], 1).is_err());
        let o = parse_reply(&[0, 0, 5, 7], 1).unwrap();
        assert!(!o[0].allowed && o[0].retry_after == Duration::from_nanos(7));
    }
}
