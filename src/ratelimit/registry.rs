//! Compiling `[rate_limits.*]` and `[cluster]`, and the registry that
//! hands an unchanged limit its buckets again on reload. A limit is "unchanged" when its name and
//! every setting (requests, per, burst, key, cluster) are; any change starts it on fresh buckets,
//! locally and (through the settings hash in its Redis keys) in Redis. The cluster backend and its
//! connection are kept while `redis_url`, `timeout` and the CA are unchanged. With a Redis
//! Cluster, the limits that routes list together share a hash slot ([`SlotTag`]).

use super::cluster::{SettingError, Settings};
use super::gcra::Quota;
use super::local::LocalBuckets;
use super::shared::{self, SharedBuckets};
use super::{headers, Cluster, Limit, Limiter, RouteLimits, SlotTag};
use crate::config::{Config, ConfigError, RateKey};
use crate::observe::Metrics;
use crate::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

type LimitId = (String, Quota, RateKey, bool);

/// Buckets and cluster backends that outlive snapshots.
pub struct LimitRegistry {
    metrics: Arc<Metrics>,
    buckets: Registry<LimitId, LocalBuckets>,
    backends: Registry<Settings, dyn SharedBuckets>,
}

/// The rate limiting of one config.
pub struct Compiled {
    pub limits: BTreeMap<String, Arc<Limit>>,
    pub limiter: Arc<Limiter>,
}

impl Compiled {
    /// A route's `rate_limits`, or `None` when it lists none (or one failed to compile, which
    /// was reported).
    pub fn route(&self, names: &[String]) -> Option<Arc<RouteLimits>> {
        let limits: Vec<Arc<Limit>> = names
            .iter()
            .map(|n| self.limits.get(n).cloned())
            .collect::<Option<_>>()?;
        if limits.is_empty() {
            return None;
        }
        let policy = limits
            .iter()
            .map(|l| headers::policy_item(&l.name, &l.quota))
            .collect::<Vec<_>>()
            .join(", ");
        Some(Arc::new(RouteLimits {
            limits,
            policy: http::HeaderValue::from_str(&policy).ok()?,
        }))
    }
}

impl LimitRegistry {
    pub fn new(metrics: Arc<Metrics>) -> LimitRegistry {
        LimitRegistry {
            metrics,
            buckets: Registry::new(),
            backends: Registry::new(),
        }
    }

    fn buckets(&self, id: LimitId) -> Arc<LocalBuckets> {
        let quota = id.1;
        self.buckets
            .get_or_insert_with(id, || Arc::new(LocalBuckets::new(quota)))
    }

    fn backend(&self, settings: Settings) -> Result<Arc<dyn SharedBuckets>, SettingError> {
        let metrics = self.metrics.clone();
        let connect = settings.clone();
        self.backends
            .try_get_or_insert_with(settings, || shared::connect(&connect, metrics))
    }
}

/// Compiles the rate limiting of a config that passed validation, leaving out the entries in
/// `skip` (already reported).
pub fn compile(
    config: &Config,
    base_dir: &Path,
    skip: &BTreeSet<String>,
    registry: &LimitRegistry,
) -> Result<Compiled, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut limits = BTreeMap::new();
    let slots = match &config.cluster {
        Some(c) if super::cluster::is_cluster_url(&c.redis_url) => slot_tags(config),
        _ => BTreeMap::new(),
    };
    for (name, cfg) in &config.rate_limits {
        if skip.contains(&format!("rate_limits.{name}")) {
            continue;
        }
        let Ok(key) = RateKey::parse(&cfg.key) else {
            continue; // reported by validation
        };
        let quota = Quota {
            requests: cfg.requests,
            per: cfg.per.get(),
            burst: cfg.burst.unwrap_or(cfg.requests),
        };
        let span = quota.emission_interval().saturating_add(quota.tolerance());
        if cfg.cluster && span > super::cluster::MAX_SPAN {
            errors.push(ConfigError::new(
                format!("rate_limits.{name}.per"),
                format!(
                    "a cluster limit's bucket must refill within {} days (per / requests × burst); use a shorter `per` or a smaller burst",
                    super::cluster::MAX_SPAN.as_secs() / 86_400
                ),
            ));
            continue;
        }
        let local = registry.buckets((name.clone(), quota, key.clone(), cfg.cluster));
        limits.insert(
            name.clone(),
            Arc::new(Limit {
                name: Arc::from(name.as_str()),
                redis_prefix: format!("tollgate:rl:{name}:{}:", settings_hash(&quota, &cfg.key)),
                slot: slots.get(name).cloned().unwrap_or(SlotTag::None),
                quota,
                key,
                cluster: cfg.cluster,
                local,
                decisions: super::Decisions::new(&registry.metrics, name),
            }),
        );
    }
    let cluster = match &config.cluster {
        // Only connect when some limit uses it.
        Some(cfg) if limits.values().any(|l| l.cluster) && !skip.contains("cluster") => {
            match shared::settings(cfg, base_dir).and_then(|s| registry.backend(s)) {
                Ok(backend) => Some(Cluster {
                    backend,
                    on_error: cfg.on_error,
                }),
                Err(e) => {
                    errors.push(ConfigError::new(
                        format!("cluster.{}", e.setting),
                        e.message,
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Compiled {
        limits,
        limiter: Arc::new(Limiter::new(cluster)),
    })
}

/// The hash tags of cluster limits for a Redis Cluster, where one script call must stay within
/// one hash slot. Limits that some route lists together are grouped (transitively: a limit
/// listed with two others links all three). A group whose limits all count by the same `key`
/// tags each bucket with its own hash (a request's buckets then share it, and buckets spread
/// over the cluster); any other group tags all its buckets with its first limit's name (one
/// slot for the group).
fn slot_tags(config: &Config) -> BTreeMap<String, SlotTag> {
    let cluster: BTreeSet<&str> = config
        .rate_limits
        .iter()
        .filter(|(_, l)| l.cluster)
        .map(|(name, _)| name.as_str())
        .collect();
    let mut linked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for route in config.routes.values() {
        let listed: Vec<&str> = route
            .rate_limits
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|n| cluster.contains(n))
            .collect();
        for a in &listed {
            for b in &listed {
                if a != b {
                    linked.entry(a).or_default().insert(b);
                }
            }
        }
    }
    let key_of = |name: &str| RateKey::parse(&config.rate_limits[name].key).ok();
    let mut tags = BTreeMap::new();
    // In name order, so a group is first reached through its first limit.
    for &first in &cluster {
        if tags.contains_key(first) {
            continue;
        }
        let mut group = BTreeSet::from([first]);
        let mut next = vec![first];
        while let Some(name) = next.pop() {
            for &other in linked.get(name).into_iter().flatten() {
                if group.insert(other) {
                    next.push(other);
                }
            }
        }
        let same_key = group.iter().all(|&n| key_of(n) == key_of(first));
        let tag = match same_key {
            true => SlotTag::Bucket,
            false => SlotTag::Group(first.to_string()),
        };
        for name in group {
            tags.insert(name.to_string(), tag.clone());
        }
    }
    tags
}

/// Identifies a limit's settings in its Redis keys, the same on every instance and build.
fn settings_hash(quota: &Quota, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let text = format!(
        "{}/{}ns/{}/{key}",
        quota.requests,
        quota.per.as_nanos(),
        quota.burst
    );
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(routes: &str) -> BTreeMap<String, SlotTag> {
        let limit = |name: &str, key: &str| {
            format!("[rate_limits.{name}]\nrequests = 1\nper = \"1s\"\nkey = \"{key}\"\ncluster = true\n")
        };
        let text = format!(
            "[cluster]\nredis_url = \"redis+cluster://127.0.0.1:7000\"\n[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n{}{}{}{}{}{routes}",
            limit("by_ip", "ip"),
            limit("by_ip_too", "ip"),
            limit("by_user", "header:x-user"),
            limit("by_consumer", "consumer"),
            "[rate_limits.here]\nrequests = 1\nper = \"1s\"\nkey = \"ip\"\n",
        );
        slot_tags(&crate::config::parse(&text).expect("config"))
    }

    fn route(name: &str, limits: &str) -> String {
        format!("[routes.{name}]\npath = \"/{name}\"\nupstream = \"u\"\nrate_limits = {limits}\n")
    }

    #[test]
    fn limits_listed_together_share_a_slot() {
        // Alone, or only with limits of the same key: each bucket in its own slot.
        let t = tags(&route("a", "[\"by_ip\", \"by_ip_too\", \"here\"]"));
        assert_eq!(t["by_ip"], SlotTag::Bucket);
        assert_eq!(t["by_ip_too"], SlotTag::Bucket);
        assert_eq!(t["by_user"], SlotTag::Bucket);
        assert!(!t.contains_key("here"), "local limits have no Redis keys");
        // Linked through two routes, with different keys: one slot for the group, named after
        // its first limit; a limit of another group keeps its own.
        let t = tags(&format!(
            "{}{}",
            route("a", "[\"by_user\", \"by_ip\"]"),
            route("b", "[\"by_ip_too\", \"by_user\"]")
        ));
        for name in ["by_ip", "by_ip_too", "by_user"] {
            assert_eq!(t[name], SlotTag::Group("by_ip".into()), "{name}");
        }
        assert_eq!(t["by_consumer"], SlotTag::Bucket);
    }
}
