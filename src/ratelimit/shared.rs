//! The seam to the shared (Redis) backend of `cluster = true` limits: what the orchestration in
//! [`super::Limiter`] needs from it, and how a `[cluster]` section becomes one.

use super::cluster::{ClusterLimiter, DEFAULT_MAX_CONNECTIONS};
use super::gcra::{Outcome, Quota};
use crate::config::ClusterConfig;
use crate::observe::Metrics;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Default deadline of one Redis call (`[cluster] timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// Buckets shared by every instance.
#[async_trait]
pub trait SharedBuckets: Send + Sync {
    /// All or nothing over several buckets in one round trip: if every one admits, all are
    /// charged; if any refuses, none is. One outcome per check, in order. `Err`: the backend is
    /// unreachable or slow (it logs and counts that itself); `on_error` decides.
    async fn check_all(&self, checks: &[(String, Quota)]) -> Result<Vec<Outcome>, String>;
}

/// Builds the backend of `[cluster]` (no I/O: it connects lazily and reconnects by itself).
/// `Err` is reported at `cluster.redis_url`.
pub fn connect(
    settings: &BackendSettings,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn SharedBuckets>, String> {
    let limiter = ClusterLimiter::new(
        &settings.redis_url,
        settings.timeout,
        settings.max_connections,
        metrics,
    )?;
    Ok(Arc::new(limiter))
}

/// What a cluster backend is built from: a change of any of it builds a new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSettings {
    pub redis_url: String,
    pub timeout: Duration,
    pub max_connections: usize,
}

impl BackendSettings {
    /// `[cluster]` with the defaults filled in.
    pub fn of(cfg: &ClusterConfig) -> BackendSettings {
        BackendSettings {
            redis_url: cfg.redis_url.clone(),
            timeout: cfg.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get()),
            max_connections: cfg.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        }
    }
}

#[async_trait]
impl SharedBuckets for ClusterLimiter {
    async fn check_all(&self, checks: &[(String, Quota)]) -> Result<Vec<Outcome>, String> {
        ClusterLimiter::check_all(self, checks)
            .await
            .map_err(|e| e.to_string())
    }
}
