//! The seam to the shared (Redis) backend of `cluster = true` limits: what the orchestration in
//! [`super::Limiter`] needs from it, and how a `[cluster]` section becomes one.

use super::cluster::{
    ClusterError, ClusterLimiter, SettingError, Settings, TlsMaterial, DEFAULT_TIMEOUT,
};
use super::gcra::{Outcome, Quota};
use crate::config::ClusterConfig;
use crate::observe::Metrics;
use crate::tls::config_relative;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// Buckets shared by every instance.
#[async_trait]
pub trait SharedBuckets: Send + Sync {
    /// All or nothing over several buckets in one round trip: if every one admits, all are
    /// charged; if any refuses, none is. One outcome per check, in order. `Err`: the backend is
    /// unreachable or slow (it logs and counts that itself); `on_error` decides. With a Redis
    /// Cluster, the keys of one call share a hash slot.
    async fn check_all(&self, checks: &[(String, Quota)]) -> Result<Vec<Outcome>, ClusterError>;

    /// Whether the last call reached the backend, and where it is (no secrets), for the status
    /// page; read from atomics, never waiting on a request.
    fn status(&self) -> BackendStatus;
}

/// What the status page shows of the shared backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// `redis_url` with its password masked.
    pub url: String,
    /// False from the first failed call of an outage until the next successful one.
    pub reachable: bool,
}

/// Builds the backend of `[cluster]` (no I/O: it connects lazily and reconnects by itself).
pub fn connect(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn SharedBuckets>, SettingError> {
    Ok(Arc::new(ClusterLimiter::new(settings, metrics)?))
}

/// `[cluster]` with the defaults filled in and its TLS files read (relative to the config's
/// directory).
pub fn settings(cfg: &ClusterConfig, base_dir: &Path) -> Result<Settings, SettingError> {
    let read = |setting: &'static str, file: &Option<String>| {
        let Some(file) = file else {
            return Ok(None);
        };
        let path = config_relative(base_dir, file);
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| SettingError::new(setting, format!("cannot read {}: {e}", path.display())))
    };
    Ok(Settings {
        redis_url: cfg.redis_url.clone(),
        timeout: cfg.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get()),
        tls: TlsMaterial {
            ca_pem: read("ca_file", &cfg.ca_file)?,
            client_cert_pem: read("cert_file", &cfg.cert_file)?,
            client_key_pem: read("key_file", &cfg.key_file)?,
        },
    })
}

#[async_trait]
impl SharedBuckets for ClusterLimiter {
    async fn check_all(&self, checks: &[(String, Quota)]) -> Result<Vec<Outcome>, ClusterError> {
        ClusterLimiter::check_all(self, checks).await
    }

    fn status(&self) -> BackendStatus {
        BackendStatus {
            url: self.shown_url().to_string(),
            reachable: self.reachable(),
        }
    }
}
