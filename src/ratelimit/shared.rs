//! The seam to the shared (Redis) backend of `cluster = true` limits: what the orchestration in
//! [`super::Limiter`] needs from it, and how a `[cluster]` section becomes one.

use super::cluster::{ClusterLimiter, Settings, DEFAULT_TIMEOUT};
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
    /// unreachable or slow (it logs and counts that itself); `on_error` decides.
    async fn check_all(&self, checks: &[(String, Quota)]) -> Result<Vec<Outcome>, String>;
}

/// Builds the backend of `[cluster]` (no I/O: it connects lazily and reconnects by itself).
/// `Err` names the setting at fault: (`redis_url` or `ca_file`, message).
pub fn connect(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn SharedBuckets>, (&'static str, String)> {
    let limiter = ClusterLimiter::new(settings, metrics).map_err(|msg| {
        // The limiter's messages start with the setting they are about.
        match msg.split_once(": ") {
            Some(("ca_file", rest)) => ("ca_file", rest.to_string()),
            Some(("redis_url", rest)) => ("redis_url", rest.to_string()),
            _ => ("redis_url", msg),
        }
    })?;
    Ok(Arc::new(limiter))
}

/// `[cluster]` with the defaults filled in and `ca_file` read (relative to the config's
/// directory). Err: (`ca_file`, why it cannot be read).
pub fn settings(cfg: &ClusterConfig, base_dir: &Path) -> Result<Settings, (&'static str, String)> {
    let ca_pem = match &cfg.ca_file {
        Some(file) => {
            let path = config_relative(base_dir, file);
            let pem = std::fs::read(&path)
                .map_err(|e| ("ca_file", format!("cannot read {}: {e}", path.display())))?;
            Some(pem)
        }
        None => None,
    };
    Ok(Settings {
        redis_url: cfg.redis_url.clone(),
        timeout: cfg.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get()),
        ca_pem,
    })
}

#[async_trait]
impl SharedBuckets for ClusterLimiter {
    async fn check_all(&self, checks: &[(String, Quota)]) -> Result<Vec<Outcome>, String> {
        ClusterLimiter::check_all(self, checks)
            .await
            .map_err(|e| e.to_string())
    }
}
