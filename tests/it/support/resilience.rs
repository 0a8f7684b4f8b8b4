//! Small helpers shared by the `resilience_*` tests: reading the upstream metrics, counting the
//! requests a backend got from clients (health checks left out), and a bounded request loop.

use super::answer::{send, Answer};
use super::backend::Backend;
use super::gateway::GatewayHandle;
use super::prom::{self, metric, metric_sum};
use std::time::{Duration, Instant};

/// The path every resilience test uses for active health checks.
pub const HEALTH_PATH: &str = "/healthz";

/// Requests a backend received from clients through the gateway (health checks left out).
pub fn app_requests(b: &Backend) -> usize {
    b.received()
        .iter()
        .filter(|r| !r.uri.starts_with(HEALTH_PATH))
        .count()
}

/// Health-check requests a backend received.
pub fn health_requests(b: &Backend) -> usize {
    b.received()
        .iter()
        .filter(|r| r.uri.starts_with(HEALTH_PATH))
        .count()
}

/// Attempts the gateway made to one target, whatever their outcome
/// (`tollgate_upstream_requests_total`, summed over outcomes).
pub async fn attempts_to(gw: &GatewayHandle, upstream: &str, target: &str) -> f64 {
    metric_sum(
        gw,
        "tollgate_upstream_requests_total",
        &[("upstream", upstream), ("target", target)],
    )
    .await
}

/// `tollgate_upstream_target_healthy{upstream,target}` (`None` when absent).
pub async fn healthy_gauge(gw: &GatewayHandle, upstream: &str, target: &str) -> Option<f64> {
    prom::value(
        &gw.metrics().await,
        "tollgate_upstream_target_healthy",
        &[("upstream", upstream), ("target", target)],
    )
}

/// Waits (at most 5 s) until the health gauge of `target` says `healthy`; fails the test
/// otherwise. Returns how long it took.
pub async fn wait_health(
    gw: &GatewayHandle,
    upstream: &str,
    target: &str,
    healthy: bool,
) -> Duration {
    let start = Instant::now();
    let want = if healthy { 1.0 } else { 0.0 };
    let ok = super::eventually(Duration::from_secs(5), || async {
        healthy_gauge(gw, upstream, target).await == Some(want)
    })
    .await;
    assert!(
        ok,
        "{target} never became {}",
        if healthy { "healthy" } else { "unhealthy" }
    );
    start.elapsed()
}

/// Targets as a TOML array of strings: `["a", "b"]` without the brackets.
pub fn toml_list(targets: &[String]) -> String {
    let quoted: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    quoted.join(", ")
}

/// `tollgate_upstream_circuit_state{upstream,target}` (`None` when absent).
pub async fn circuit_gauge(gw: &GatewayHandle, upstream: &str, target: &str) -> Option<f64> {
    prom::value(
        &gw.metrics().await,
        "tollgate_upstream_circuit_state",
        &[("upstream", upstream), ("target", target)],
    )
}

/// `tollgate_upstream_circuit_transitions_total{upstream,target,to}` (0 when absent).
pub async fn transitions(gw: &GatewayHandle, upstream: &str, target: &str, to: &str) -> f64 {
    metric(
        gw,
        "tollgate_upstream_circuit_transitions_total",
        &[("upstream", upstream), ("target", target), ("to", to)],
    )
    .await
}

/// Polls the metrics page every 20 ms until `check(page)` holds or `limit` passes; returns how
/// long it took, or `None` on time-out.
pub async fn wait_page<F>(gw: &GatewayHandle, limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut(&str) -> bool,
{
    let start = Instant::now();
    loop {
        if check(&gw.metrics().await) {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until `name{labels}` equals `want`; returns how long it took.
pub async fn wait_metric_eq(
    gw: &GatewayHandle,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    limit: Duration,
) -> Option<Duration> {
    wait_page(gw, limit, |page| {
        prom::value(page, name, labels) == Some(want)
    })
    .await
}

/// A steady client loop: `workers` tasks sending GET `url` one after the other, each pausing
/// `pace` between requests, until stopped, `max_requests` were sent or `max_time` passed.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<Result<Answer, String>>>>,
}

impl Load {
    pub fn start(
        url: String,
        workers: usize,
        pace: Duration,
        max_requests: usize,
        max_time: Duration,
    ) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let end = Instant::now() + max_time;
        let workers = (0..workers)
            .map(|_| {
                let (url, stop, done) = (url.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    let client = super::client();
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::SeqCst)
                        && done.load(Ordering::SeqCst) < max_requests
                        && Instant::now() < end
                    {
                        answers.push(send(client.get(&url)).await);
                        done.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(pace).await;
                    }
                    answers
                })
            })
            .collect();
        Load {
            stop,
            done,
            workers,
        }
    }

    /// Requests answered so far.
    pub fn completed(&self) -> usize {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` more requests than now have been answered.
    pub async fn wait_more(&self, n: usize, limit: Duration) -> bool {
        let want = self.completed() + n;
        super::eventually(limit, || async { self.completed() >= want }).await
    }

    /// Stops the loop and returns every answer.
    pub async fn finish(self) -> Vec<Result<Answer, String>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.join().await
    }

    /// Waits until the loop ends by itself (`max_requests` or `max_time`), returns every answer.
    pub async fn join(self) -> Vec<Result<Answer, String>> {
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.await.expect("load worker panicked"));
        }
        all
    }
}
