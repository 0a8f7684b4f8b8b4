//! Active health checks: for every upstream with `[health_check]`, a background task sends
//! `GET path` to each target every `interval` (Pingora's `HttpHealthCheck`, a fresh connection
//! each time, so a firewall or a dead listener is noticed) and flips the target after
//! `unhealthy_after` failures or `healthy_after` successes in a row. Never on the request path.
//!
//! One task per upstream *state*: an upstream whose settings did not change across a reload keeps
//! its task and its counters; a task ends when its state is no longer used by any snapshot.

use super::state::UpstreamState;
use super::Upstream;
use crate::config::HealthCheckConfig;
use crate::tls::UpstreamTls;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck as _, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the service looks for upstreams added or changed by a reload.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// `[upstreams.NAME.health_check]`, in run-time form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Path requested with GET; a 2xx or 3xx answer is a success.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy target healthy again.
    pub healthy_after: u32,
    /// Consecutive failures that make a healthy target unhealthy.
    pub unhealthy_after: u32,
}

impl HealthCheck {
    pub fn compile(cfg: &HealthCheckConfig) -> HealthCheck {
        HealthCheck {
            path: cfg.path.clone(),
            interval: cfg.interval.get(),
            timeout: cfg.timeout.get(),
            healthy_after: cfg.healthy_after,
            unhealthy_after: cfg.unhealthy_after,
        }
    }
}

/// Where the health service finds the upstreams of the config that is live now (the snapshot
/// store implements it): the service depends on no config machinery.
pub trait LiveUpstreams: Send + Sync {
    fn upstreams(&self) -> Vec<Arc<Upstream>>;
}

/// Runs health-check tasks for the upstreams of the live config.
pub struct HealthService {
    live: Arc<dyn LiveUpstreams>,
}

impl HealthService {
    pub fn new(live: Arc<dyn LiveUpstreams>) -> HealthService {
        HealthService { live }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Keyed by the address of the shared state: same state, same task.
        let mut tasks: HashMap<usize, (Weak<UpstreamState>, JoinHandle<()>)> = HashMap::new();
        loop {
            let upstreams = self.live.upstreams();
            for upstream in &upstreams {
                let Some(settings) = &upstream.health_check else {
                    continue;
                };
                let key = Arc::as_ptr(&upstream.state) as usize;
                tasks.entry(key).or_insert_with(|| {
                    let task = tokio::spawn(check_loop(Checker::new(upstream, settings)));
                    (Arc::downgrade(&upstream.state), task)
                });
            }
            drop(upstreams);
            // Tasks whose state is gone end by themselves; forget their handles.
            tasks.retain(|_, (state, task)| state.strong_count() > 0 && !task.is_finished());
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
        for (_, (_, task)) in tasks {
            task.abort();
        }
    }
}

/// Everything one upstream's checks need, copied out of the snapshot so the task does not keep
/// a whole config alive.
struct Checker {
    upstream: Arc<str>,
    state: Weak<UpstreamState>,
    /// Per target: address, label, and its check (the Host header names the target).
    targets: Vec<(SocketAddr, Arc<str>, HttpHealthCheck)>,
    settings: HealthCheck,
}

/// A GET of `settings.path` with `Host: label`, bounded by the timeout, passing on 2xx/3xx;
/// over HTTPS, verified like requests, for `tls = true` upstreams.
fn http_check(label: &str, settings: &HealthCheck, tls: Option<&UpstreamTls>) -> HttpHealthCheck {
    let mut check = HttpHealthCheck::new(label, false);
    if let Some(tls) = tls {
        tls.apply(&mut check.peer_template, label);
    }
    if let Ok(mut req) = RequestHeader::build("GET", settings.path.as_bytes(), None) {
        if req.insert_header("host", label).is_ok()
            && req
                .insert_header("user-agent", "tollgate-health-check")
                .is_ok()
        {
            check.req = req;
        }
    }
    let timeout = settings.timeout;
    check.peer_template.options.connection_timeout = Some(timeout);
    check.peer_template.options.read_timeout = Some(timeout);
    check.peer_template.options.total_connection_timeout = Some(timeout);
    // Any 2xx or 3xx means the service answers; Pingora's default accepts only 200.
    check.validator = Some(Box::new(|resp: &pingora::http::ResponseHeader| {
        if resp.status.is_success() || resp.status.is_redirection() {
            Ok(())
        } else {
            Err(pingora::Error::explain(
                pingora::ErrorType::HTTPStatus(resp.status.as_u16()),
                "health check status",
            ))
        }
    }));
    check
}

impl Checker {
    fn new(upstream: &Upstream, settings: &HealthCheck) -> Checker {
        Checker {
            upstream: upstream.name.clone(),
            state: Arc::downgrade(&upstream.state),
            targets: upstream
                .targets
                .iter()
                .map(|t| {
                    let check = http_check(&t.label, settings, upstream.tls.as_ref());
                    (t.addr, t.label.clone(), check)
                })
                .collect(),
            settings: settings.clone(),
        }
    }

    /// One round: checks every target concurrently, each bounded by the timeout.
    async fn round(&self) -> Vec<bool> {
        let timeout = self.settings.timeout;
        let checks = self.targets.iter().map(|(addr, _, check)| async move {
            let backend = Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(*addr),
                weight: 1,
                ext: Default::default(),
            };
            matches!(
                tokio::time::timeout(timeout, check.check(&backend)).await,
                Ok(Ok(()))
            )
        });
        futures::future::join_all(checks).await
    }
}

async fn check_loop(checker: Checker) {
    let n = checker.targets.len();
    // Consecutive successes (positive) or failures (negative) per target.
    let mut streak = vec![0i64; n];
    let mut interval = tokio::time::interval(checker.settings.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let results = checker.round().await;
        let Some(state) = checker.state.upgrade() else {
            return;
        };
        for (i, ok) in results.into_iter().enumerate() {
            streak[i] = match (ok, streak[i]) {
                (true, s) if s > 0 => s + 1,
                (true, _) => 1,
                (false, s) if s < 0 => s - 1,
                (false, _) => -1,
            };
            let target = &state.targets[i];
            let (addr, label, _) = &checker.targets[i];
            let flip_to =
                if !target.is_healthy() && streak[i] >= i64::from(checker.settings.healthy_after) {
                    Some(true)
                } else if target.is_healthy()
                    && -streak[i] >= i64::from(checker.settings.unhealthy_after)
                {
                    Some(false)
                } else {
                    None
                };
            if let Some(healthy) = flip_to {
                if target.set_healthy(healthy) {
                    if healthy {
                        tracing::info!(upstream = %checker.upstream, upstream_target = %label, %addr, "target healthy again");
                    } else {
                        tracing::warn!(upstream = %checker.upstream, upstream_target = %label, %addr, path = %checker.settings.path, "target unhealthy: health checks failing");
                    }
                }
            }
        }
    }
}
