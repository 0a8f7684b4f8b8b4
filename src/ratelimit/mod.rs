//! Rate limiting: GCRA token buckets per route and per caller (`[rate_limits.NAME]`), kept on
//! this instance or, with `cluster = true`, in Redis for one budget across instances.
//!
//! A request is checked against every limit its route lists, all or nothing: local buckets are
//! peeked first (nothing charged), then the cluster limits go to Redis in one round trip (that
//! script is itself all or nothing), then the local buckets are charged. A local charge can still
//! lose a race with a concurrent request between peek and commit; the charges already made are
//! then refunded, but the cluster charge of that request stays (a window of microseconds, costing
//! at most one cluster token per race).
//!
//! - [`gcra`]: the algorithm, pure; [`local`]: this instance's keyed buckets;
//! - [`key`]: what a request's bucket is (client address behind trusted proxies, headers, claims);
//! - [`headers`]: the `RateLimit-Policy` / `RateLimit` response fields;
//! - [`registry`]: buckets kept across reloads while a limit's settings are unchanged;
//! - [`shared`]: the seam to the Redis backend; [`cluster`]: that backend (script, client).

pub mod cluster;
pub mod gcra;
pub mod headers;
pub mod key;
pub mod local;
pub mod registry;
pub mod shared;

pub use headers::response_fields;
pub use key::{client_ip, key_of, KeyFacts};
pub use registry::{compile, Compiled, LimitRegistry};
pub use shared::SharedBuckets;

use crate::config::{OnError, RateKey};
use crate::observe::Metrics;
use gcra::{Outcome, Quota};
use local::{LocalBuckets, Peeked};
use std::sync::Arc;
use std::time::Duration;

/// `Retry-After` of a request refused because the cluster backend failed under `on_error = "deny"`.
const DENY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A compiled `[rate_limits.NAME]`.
pub struct Limit {
    pub name: Arc<str>,
    pub quota: Quota,
    pub key: RateKey,
    pub cluster: bool,
    /// This instance's buckets: the limit itself when local, the `on_error = "local"` stand-in
    /// when it is a cluster limit.
    local: Arc<LocalBuckets>,
    /// `tollgate:rl:NAME:SETTINGS:`: a changed limit starts on fresh Redis keys too.
    redis_prefix: String,
    /// Where its keys carry a Redis Cluster hash tag.
    slot: SlotTag,
    /// `tollgate_ratelimit_decisions_total` of this limit, one counter per result label.
    decisions: Decisions,
}

/// The four decision counters of one limit.
pub struct Decisions {
    allowed: prometheus::IntCounter,
    rejected: prometheus::IntCounter,
    degraded_allowed: prometheus::IntCounter,
    degraded_rejected: prometheus::IntCounter,
}

impl Decisions {
    pub fn new(metrics: &Metrics, policy: &str) -> Decisions {
        Decisions {
            allowed: metrics.ratelimit_decisions(policy, result::ALLOWED),
            rejected: metrics.ratelimit_decisions(policy, result::REJECTED),
            degraded_allowed: metrics.ratelimit_decisions(policy, result::DEGRADED_ALLOWED),
            degraded_rejected: metrics.ratelimit_decisions(policy, result::DEGRADED_REJECTED),
        }
    }
}

/// Where a cluster limit's Redis keys carry a Redis Cluster hash tag: the limits one script call
/// checks must share a hash slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotTag {
    /// One Redis: no tag, `tollgate:rl:NAME:SETTINGS:HASH`.
    None,
    /// The bucket's own hash is the tag, `tollgate:rl:NAME:SETTINGS:{HASH}`: buckets spread over
    /// the cluster. For limits only ever listed with limits of the same `key`, whose buckets for
    /// one request then have the same hash.
    Bucket,
    /// A tag shared by a group of limits that routes list together with different keys,
    /// `tollgate:rl:NAME:SETTINGS:{g:GROUP}:HASH`: all of the group's buckets in one slot.
    Group(String),
}

impl Limit {
    /// The Redis key of one bucket: the key value hashed (bounded length, no secrets in Redis),
    /// or `missing` for the shared bucket of requests without the key; with a hash tag for a
    /// Redis Cluster.
    fn redis_key(&self, value: Option<&[u8]>) -> String {
        use sha2::{Digest, Sha256};
        let hash = match value {
            Some(v) => std::borrow::Cow::Owned(hex::encode(&Sha256::digest(v)[..16])),
            None => std::borrow::Cow::Borrowed("missing"),
        };
        let prefix = &self.redis_prefix;
        match &self.slot {
            SlotTag::None => format!("{prefix}{hash}"),
            SlotTag::Bucket => format!("{prefix}{{{hash}}}"),
            SlotTag::Group(group) => format!("{prefix}{{g:{group}}}:{hash}"),
        }
    }
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("key", &self.key)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// The limits one route lists, with its `RateLimit-Policy` value made once.
#[derive(Debug)]
pub struct RouteLimits {
    pub limits: Vec<Arc<Limit>>,
    pub policy: http::HeaderValue,
}

/// The cluster backend and what to do when it fails.
pub struct Cluster {
    pub backend: Arc<dyn SharedBuckets>,
    pub on_error: OnError,
}

/// The rate limiting of one snapshot.
pub struct Limiter {
    cluster: Option<Cluster>,
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The `RateLimit` field value: one item per limit whose state is known.
    pub state: String,
    /// When refused: how long until every refusing limit would admit.
    pub retry_after: Duration,
}

/// Decision labels of `tollgate_ratelimit_decisions_total{result}`.
mod result {
    pub const ALLOWED: &str = "allowed";
    pub const REJECTED: &str = "rejected";
    /// The cluster backend failed and `on_error` decided.
    pub const DEGRADED_ALLOWED: &str = "degraded_allowed";
    pub const DEGRADED_REJECTED: &str = "degraded_rejected";
}

impl Limiter {
    pub fn new(cluster: Option<Cluster>) -> Limiter {
        Limiter { cluster }
    }

    /// The cluster backend of this config's `cluster = true` limits, if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Checks a request against all of its route's limits; charges them only if all admit.
    pub async fn check(&self, route: &RouteLimits, facts: &KeyFacts<'_>) -> Verdict {
        let now = local::now_nanos();
        let limits = &route.limits;
        let keys: Vec<_> = limits.iter().map(|l| key_of(&l.key, facts)).collect();
        let mut run = Run {
            limits,
            outcomes: vec![None; limits.len()],
            peeks: Vec::with_capacity(limits.len()),
            degraded: vec![false; limits.len()],
        };
        let cluster = self.cluster.as_ref();
        let in_cluster = |l: &Limit| l.cluster && cluster.is_some();
        for (i, l) in limits.iter().enumerate() {
            if !in_cluster(l) {
                run.peek(i, keys[i].as_deref(), now);
            }
        }
        if run.any_refused() {
            return self.finish(run, false);
        }
        let shared: Vec<usize> = (0..limits.len())
            .filter(|&i| in_cluster(&limits[i]))
            .collect();
        if let (Some(cluster), false) = (cluster, shared.is_empty()) {
            let checks: Vec<(String, Quota)> = shared
                .iter()
                .map(|&i| (limits[i].redis_key(keys[i].as_deref()), limits[i].quota))
                .collect();
            match cluster.backend.check_all(&checks).await {
                Ok(outs) if outs.len() == checks.len() => {
                    for (&i, o) in shared.iter().zip(outs) {
                        run.outcomes[i] = Some(o);
                    }
                    if run.any_refused() {
                        return self.finish(run, false);
                    }
                }
                // The backend logs and counts its own failures; here only `on_error` applies.
                _ => {
                    for &i in &shared {
                        run.degraded[i] = true;
                    }
                    match cluster.on_error {
                        OnError::Allow => {}
                        OnError::Deny => {
                            for &i in &shared {
                                run.outcomes[i] = Some(Outcome {
                                    allowed: false,
                                    remaining: 0,
                                    reset: DENY_RETRY_AFTER,
                                    retry_after: DENY_RETRY_AFTER,
                                });
                            }
                            return self.finish(run, false);
                        }
                        OnError::Local => {
                            for &i in &shared {
                                run.peek(i, keys[i].as_deref(), now);
                            }
                            if run.any_refused() {
                                return self.finish(run, false);
                            }
                        }
                    }
                }
            }
        }
        let committed = run.commit(now);
        self.finish(run, committed)
    }

    fn finish(&self, run: Run<'_>, allowed: bool) -> Verdict {
        // One `"name";r=N;t=N` item per limit; sized once, not grown item by item.
        let mut state = String::with_capacity(run.limits.len() * 48);
        let mut retry_after = Duration::ZERO;
        for (i, l) in run.limits.iter().enumerate() {
            // A limit that admitted a refused request was not charged (local peeks are never
            // committed, refunded if they were, and the script charges nothing when one of its
            // limits refuses): its token is still there.
            let outcome = run.outcomes[i].map(|o| match (allowed, o.allowed) {
                (false, true) => Outcome {
                    remaining: (o.remaining + 1).min(l.quota.burst),
                    reset: o.reset.saturating_sub(l.quota.emission_interval()),
                    ..o
                },
                _ => o,
            });
            let d = &l.decisions;
            let counter = match (run.degraded[i], allowed, outcome.map(|o| o.allowed)) {
                (false, true, _) => Some(&d.allowed),
                (true, true, _) => Some(&d.degraded_allowed),
                (false, false, Some(false)) => Some(&d.rejected),
                (true, false, Some(false)) => Some(&d.degraded_rejected),
                // Admitted by this limit, refused by another: not counted here.
                _ => None,
            };
            if let Some(c) = counter {
                c.inc();
            }
            if let Some(o) = outcome {
                headers::push_state(&mut state, &l.name, &o);
                if !o.allowed {
                    retry_after = retry_after.max(o.retry_after);
                }
            }
        }
        Verdict {
            allowed,
            state,
            retry_after,
        }
    }
}

/// The state of one check in progress.
struct Run<'a> {
    limits: &'a [Arc<Limit>],
    outcomes: Vec<Option<Outcome>>,
    /// Local buckets looked at, to charge if every limit admits.
    peeks: Vec<(usize, Peeked)>,
    /// Limits decided by `on_error` because the cluster backend failed.
    degraded: Vec<bool>,
}

impl Run<'_> {
    fn peek(&mut self, i: usize, key: Option<&[u8]>, now: u64) {
        let peeked = self.limits[i].local.peek(key, now);
        self.outcomes[i] = Some(peeked.outcome);
        self.peeks.push((i, peeked));
    }

    fn any_refused(&self) -> bool {
        self.outcomes.iter().flatten().any(|o| !o.allowed)
    }

    /// Charges every peeked bucket; if one refuses now (a concurrent request took its last
    /// token), refunds those already charged and returns false.
    fn commit(&mut self, now: u64) -> bool {
        for n in 0..self.peeks.len() {
            let (i, peeked) = &self.peeks[n];
            let local = &self.limits[*i].local;
            match local.commit(peeked, now) {
                Ok(o) => self.outcomes[*i] = Some(o),
                Err(o) => {
                    self.outcomes[*i] = Some(o);
                    for (j, earlier) in &self.peeks[..n] {
                        self.limits[*j].local.refund(earlier);
                    }
                    // `finish` shows the refunded buckets with their token back.
                    return false;
                }
            }
        }
        true
    }
}
