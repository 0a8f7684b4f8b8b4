//! Cluster-wide rate limits kept in Redis: one GCRA script checks and consumes several buckets
//! atomically in one round trip, on Redis server time, with every call bounded by a timeout.
//!
//! The client is the `redis` crate's ([`client`]): one multiplexed connection shared by every
//! check for one Redis, one per node for a Redis Cluster, made from `redis_url` ([`target`]).
//! Outages are logged once (warn) and their end once (info); every check that got no decision
//! counts in `tollgate_ratelimit_backend_errors_total`. After a few failed calls in a row the
//! limiter stops waiting on Redis and lets one call probe it every [`PROBE_INTERVAL`], so an
//! outage costs requests nothing but the `on_error` decision. What that decision is, is the
//! caller's.

mod client;
mod target;

pub use target::{address, is_cluster_url, one_node_client};

use crate::observe::Metrics;
use crate::ratelimit::gcra::{Outcome, Quota};
use client::Client;
use redis::{ErrorKind, ServerErrorKind, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::Target;

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

/// Default deadline of one Redis call (`[cluster] timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Failed calls in a row after which checks stop waiting on Redis.
const FAILURES_BEFORE_BACKOFF: u32 = 3;
/// While backing off, one call per interval tries Redis; the others fail at once.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Why a cluster check gave no decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer within the call timeout (slow, or the connection attempt hung).
    #[error("Redis did not answer within the call timeout")]
    Timeout,
    /// Redis refused or failed the call, or cannot be reached.
    #[error("Redis unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    /// A quota whose `per / requests × burst` the script cannot compute exactly ([`MAX_SPAN`]);
    /// refused before reaching Redis.
    #[error("a quota spans more than {}s, beyond the cluster script's range", MAX_SPAN.as_secs())]
    QuotaOutOfRange,
}

/// Why Redis gave no decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unavailable {
    /// Calls failed in a row: this one was not sent (one probe per [`PROBE_INTERVAL`] is).
    #[error("backing off after failed calls in a row; probing again shortly")]
    BackingOff,
    /// The client's error: connecting, TLS, authentication, I/O, or Redis' error reply.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// Redis answered, but not with the script's four integers per limit.
    #[error("unexpected script reply: {0}")]
    Reply(#[from] ReplyError),
}

/// How a script reply was not four integers per limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("not an array")]
    NotAnArray,
    #[error("{values} values for {limits} limits")]
    Length { values: usize, limits: usize },
    #[error("a value that is not an integer")]
    NotAnInteger,
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> ClusterError {
        ClusterError::Unavailable(Unavailable::Redis(e))
    }
}

impl From<ReplyError> for ClusterError {
    fn from(e: ReplyError) -> ClusterError {
        ClusterError::Unavailable(Unavailable::Reply(e))
    }
}

/// What a limiter is built from (`[cluster]`); a change of any of it needs a new limiter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    /// `redis://`, `rediss://` (TLS), `redis+unix://` or `unix://`; a Redis Cluster:
    /// `redis+cluster://` or `rediss+cluster://` (TLS) with seed nodes separated by commas.
    pub redis_url: String,
    /// Deadline of one call, connecting included.
    pub timeout: Duration,
    /// For `rediss://`: which CA to trust and which certificate to present.
    pub tls: TlsMaterial,
}

/// A `[cluster]` setting the limiter cannot be built from, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct SettingError {
    /// The key under `[cluster]`: `redis_url`, `ca_file`, `cert_file` or `key_file`.
    pub setting: &'static str,
    pub message: String,
}

impl SettingError {
    pub fn new(setting: &'static str, message: impl Into<String>) -> SettingError {
        SettingError {
            setting,
            message: message.into(),
        }
    }
}

/// PEM files' contents for `rediss://`, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsMaterial {
    /// CA certificates that alone are trusted (else the system's roots and the Mozilla roots).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for a Redis that requires one
    /// (`tls-auth-clients yes`, Redis' default once TLS is on).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
}

impl Settings {
    /// `redis_url` with the default timeout.
    pub fn new(redis_url: &str) -> Settings {
        Settings {
            redis_url: redis_url.to_string(),
            timeout: DEFAULT_TIMEOUT,
            tls: TlsMaterial::default(),
        }
    }
}

/// The Redis backend of cluster limits; cheap to share (`Arc`) between requests.
pub struct ClusterLimiter {
    client: Client,
    /// Hex SHA-1 of [`SCRIPT`], for EVALSHA.
    script_sha: String,
    call_timeout: Duration,
    metrics: Arc<Metrics>,
    /// False between the first failed call of an outage and the next successful one.
    healthy: AtomicBool,
    /// Calls that failed in a row (reset by a success).
    failures: AtomicU32,
    /// While backing off: when the next probe may go, in milliseconds since `epoch`.
    next_probe_ms: AtomicU64,
    epoch: Instant,
    /// `host:port` of Redis or of the cluster's seed nodes, for logs (never the URL: it may
    /// hold a password).
    addr: String,
    /// `redis_url` with its password masked, for the status page.
    shown_url: String,
}

impl ClusterLimiter {
    /// Parses `redis_url` (and the TLS files); no I/O: connects on demand and reconnects by
    /// itself. Err names the setting at fault.
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Result<ClusterLimiter, SettingError> {
        let target = Target::new(&settings.redis_url, &settings.tls, settings.timeout)?;
        Ok(ClusterLimiter {
            client: Client::new(target, settings.timeout),
            script_sha: redis::Script::new(SCRIPT).get_hash().to_string(),
            call_timeout: settings.timeout,
            metrics,
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            addr: target::address(&settings.redis_url),
            shown_url: target::masked_url(&settings.redis_url),
        })
    }

    /// False from the first failed call of an outage until the next successful one.
    pub fn reachable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// `redis_url` with its password masked.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// All-or-nothing over several limits in one round trip: if every limit admits, all are
    /// consumed; if any rejects, none is. Outcomes are in `checks` order and are exactly what
    /// `gcra::check` says for each bucket (an admitting limit of a rejected call reports what it
    /// would have left). Keys are full Redis keys chosen by the caller (long ones are hashed);
    /// with a Redis Cluster they must share one hash slot. Each written key expires once its
    /// bucket is full again. The whole call, connecting included, is bounded by the call
    /// timeout; a connection that let a call time out, or failed in any other way than by
    /// Redis' error reply, is given up and the next call makes a new one.
    pub async fn check_all(
        &self,
        checks: &[(String, Quota)],
    ) -> Result<Vec<Outcome>, ClusterError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let evalsha = script_command("EVALSHA", &self.script_sha, checks)?;
        if !self.may_call() {
            let result = Err(Unavailable::BackingOff.into());
            self.record(&result, false);
            return result;
        }
        let mut used = None;
        let started = Instant::now();
        let call = self.evaluate(&evalsha, checks, &mut used);
        let result = match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => Err(ClusterError::Timeout),
            Ok(result) => result,
        };
        if let (Some(generation), Err(error)) = (used, &result) {
            if gives_up_connection(error) {
                self.client.give_up(generation);
            }
        }
        self.metrics.ratelimit_backend_duration(started.elapsed());
        self.record(&result, true);
        result
    }

    /// EVALSHA; when Redis lost the script (restart, failover, SCRIPT FLUSH), EVAL with its
    /// text, which also caches it again for the next EVALSHA. (EVAL goes to the node of the
    /// keys; the crate's `Script` would send SCRIPT LOAD to every node of a cluster, and fail
    /// while one is down.)
    async fn evaluate(
        &self,
        evalsha: &redis::Cmd,
        checks: &[(String, Quota)],
        used: &mut Option<u64>,
    ) -> Result<Vec<Outcome>, ClusterError> {
        let reply = match self.call(evalsha, used).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let eval = script_command("EVAL", SCRIPT, checks)?;
                self.call(&eval, used).await?
            }
            reply => reply?,
        };
        parse_reply(reply, checks.len())
    }

    /// One command on the shared connection (`used` says which, for the caller's timeout). A
    /// connection found dropped (Redis restarted, a proxy cut it while idle) is being replaced
    /// by the crate, and the command is sent once more on the new one, so a restart costs no
    /// check. (Should Redis have run the script before the connection died, the retry charges
    /// that request twice: one token, on a rare event.)
    async fn call(
        &self,
        command: &redis::Cmd,
        used: &mut Option<u64>,
    ) -> redis::RedisResult<Value> {
        let mut retried = false;
        loop {
            let (generation, mut conn) = self.client.connection()?;
            *used = Some(generation);
            match conn.query(command).await {
                Err(e) if e.is_connection_dropped() && !retried => retried = true,
                result => return result,
            }
        }
    }

    /// False while backing off, except for the one call per [`PROBE_INTERVAL`] that probes.
    fn may_call(&self) -> bool {
        if self.failures.load(Ordering::Acquire) < FAILURES_BEFORE_BACKOFF {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Acquire);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now + probe_interval_ms(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts failures (attempted or skipped) and logs the edges of an outage, not every
    /// request.
    fn record<T>(&self, result: &Result<T, ClusterError>, attempted: bool) {
        match result {
            Ok(_) => {
                self.failures.store(0, Ordering::Release);
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(redis = %self.addr, "cluster rate limiting: Redis answers again");
                }
            }
            Err(error) => {
                self.metrics.ratelimit_backend_error();
                if attempted
                    && self.failures.fetch_add(1, Ordering::AcqRel) + 1 == FAILURES_BEFORE_BACKOFF
                {
                    self.next_probe_ms
                        .store(self.now_ms() + probe_interval_ms(), Ordering::Release);
                }
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(redis = %self.addr, %error, "cluster rate limiting: Redis unreachable or slow; on_error applies until it answers (logged once per outage)");
                }
            }
        }
    }
}

/// Whether a failed call leaves its connection unfit for the next: a timeout (nothing says it
/// will ever answer again), or anything but Redis' own error reply to the command (a reply
/// that could not be parsed; a connection whose set-up failed, which the crate would otherwise
/// keep failing every call with, say after a wrong password that Redis accepts later on).
fn gives_up_connection(error: &ClusterError) -> bool {
    match error {
        ClusterError::Timeout => true,
        ClusterError::Unavailable(Unavailable::Redis(e)) => {
            !matches!(e.kind(), ErrorKind::Server(_))
        }
        ClusterError::Unavailable(Unavailable::Reply(_)) => true,
        ClusterError::Unavailable(Unavailable::BackingOff) | ClusterError::QuotaOutOfRange => false,
    }
}

fn probe_interval_ms() -> u64 {
    PROBE_INTERVAL.as_millis() as u64
}

/// `EVALSHA sha` or `EVAL script`, then the keys, then two arguments per key.
fn script_command(
    verb: &str,
    script: &str,
    checks: &[(String, Quota)],
) -> Result<redis::Cmd, ClusterError> {
    // Sized once: the verb, the script or its hash, the key count, the keys, and two numbers of
    // at most 20 digits per key.
    let keys_len: usize = checks
        .iter()
        .map(|(key, _)| key.len().min(MAX_KEY_BYTES))
        .sum();
    let mut command = redis::Cmd::with_capacity(
        3 + 3 * checks.len(),
        verb.len() + script.len() + 20 + keys_len + 40 * checks.len(),
    );
    command.arg(verb).arg(script).arg(checks.len());
    for (key, _) in checks {
        command.arg(bounded_key(key).as_bytes());
    }
    for (_, quota) in checks {
        let (t, tau) = script_args(quota)?;
        command.arg(t).arg(tau);
    }
    Ok(command)
}

/// The script's arguments for one quota: emission interval and tolerance in nanoseconds, refused
/// when out of the range the script computes exactly.
fn script_args(quota: &Quota) -> Result<(u64, u64), ClusterError> {
    let t = quota.emission_interval();
    let tau = quota.tolerance();
    if t.saturating_add(tau) > MAX_SPAN {
        return Err(ClusterError::QuotaOutOfRange);
    }
    Ok((t.as_nanos() as u64, tau.as_nanos() as u64))
}

/// The key as sent to Redis: unchanged when short, else a prefix (cut on a character boundary)
/// plus the SHA-256 of the whole key. A Redis Cluster hash tag (`{...}`) that starts within the
/// kept prefix is kept whole, so a shortened key stays in its slot.
pub fn bounded_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_KEY_BYTES {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut cut = KEPT_PREFIX_BYTES;
    if let Some(open) = key.find('{').filter(|&i| i < KEPT_PREFIX_BYTES) {
        if let Some(close) = key[open + 1..].find('}') {
            let end = open + 1 + close + 1;
            if end <= MAX_KEY_BYTES - 72 {
                cut = cut.max(end);
            }
        }
    }
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    std::borrow::Cow::Owned(format!("{}#sha256:{digest}", &key[..cut]))
}

/// Four integers per bucket: allowed, remaining, reset ns, retry_after ns.
fn parse_reply(reply: Value, expected: usize) -> Result<Vec<Outcome>, ClusterError> {
    let Value::Array(items) = reply else {
        return Err(ReplyError::NotAnArray.into());
    };
    if items.len() != expected * 4 {
        return Err(ReplyError::Length {
            values: items.len(),
            limits: expected,
        }
        .into());
    }
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Int(v) => values.push(v),
            _ => return Err(ReplyError::NotAnInteger.into()),
        }
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
    fn a_long_key_keeps_its_hash_tag() {
        let long = format!("tollgate:rl:a:b:{{g:limit}}:{}", "x".repeat(300));
        let bounded = bounded_key(&long);
        assert!(bounded.len() <= MAX_KEY_BYTES);
        assert!(
            bounded.starts_with("tollgate:rl:a:b:{g:limit}"),
            "{bounded}"
        );
        let tag_late = format!("{}{{tag}}", "y".repeat(300));
        assert!(!bounded_key(&tag_late).contains("{tag}"));
    }

    #[test]
    fn a_short_reply_is_an_error_not_a_panic() {
        let ints = |v: &[i64]| Value::Array(v.iter().map(|&i| Value::Int(i)).collect());
        assert!(parse_reply(ints(&[1, 2, 3]), 1).is_err());
        assert!(parse_reply(Value::Okay, 1).is_err());
        assert!(parse_reply(Value::Array(vec![Value::Nil; 4]), 1).is_err());
        let o = parse_reply(ints(&[0, 0, 5, 7]), 1).unwrap();
        assert!(!o[0].allowed && o[0].retry_after == Duration::from_nanos(7));
    }
}
