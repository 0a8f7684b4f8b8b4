//! Compiling `[rate_limits.*]` and `[cluster]`, and the registry that
//! hands an unchanged limit its buckets again on reload. A limit is "unchanged" when its name and
//! every setting (requests, per, burst, key, cluster) are; any change starts it on fresh buckets,
//! locally and (through the settings hash in its Redis keys) in Redis. The cluster backend and its
//! connection are kept while `redis_url`, `timeout` and the CA are unchanged.

use super::cluster::{SettingError, Settings};
use super::gcra::Quota;
use super::local::LocalBuckets;
use super::shared::{self, SharedBuckets};
use super::{headers, Cluster, Limit, Limiter, RouteLimits};
use crate::config::{Config, ConfigError, RateKey};
use crate::observe::Metrics;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

type LimitId = (String, Quota, RateKey, bool);

/// Buckets and cluster backends that outlive snapshots.
pub struct LimitRegistry {
    metrics: Arc<Metrics>,
    buckets: Mutex<HashMap<LimitId, Weak<LocalBuckets>>>,
    backends: Mutex<HashMap<Settings, Weak<dyn SharedBuckets>>>,
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
            buckets: Mutex::new(HashMap::new()),
            backends: Mutex::new(HashMap::new()),
        }
    }

    fn buckets(&self, id: LimitId) -> Arc<LocalBuckets> {
        let mut entries = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = entries.get(&id).and_then(Weak::upgrade) {
            return b;
        }
        let b = Arc::new(LocalBuckets::new(id.1));
        entries.insert(id, Arc::downgrade(&b));
        entries.retain(|_, w| w.strong_count() > 0);
        b
    }

    fn backend(&self, settings: Settings) -> Result<Arc<dyn SharedBuckets>, SettingError> {
        let mut entries = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = entries.get(&settings).and_then(Weak::upgrade) {
            return Ok(b);
        }
        let b = shared::connect(&settings, self.metrics.clone())?;
        entries.insert(settings, Arc::downgrade(&b));
        entries.retain(|_, w| w.strong_count() > 0);
        Ok(b)
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
