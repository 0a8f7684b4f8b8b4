//! Runtime state of upstream targets that must outlive a config snapshot: health verdicts,
//! circuit breakers and requests in flight. A [`StateRegistry`] hands the same state to every
//! snapshot whose upstream settings are unchanged (keyed by name and a hash of the settings), so
//! a reload neither forgets that a target is down nor closes an open circuit; a changed upstream
//! starts fresh (see [`StateKey`] for what "changed" means).

use super::budget::{BudgetSettings, RetryBudget};
use super::circuit::{Admission, Circuit, CircuitSettings, CircuitState, Ticket};
use super::health::HealthCheck;
use crate::observe::{AttemptMetrics, Metrics};
use crate::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State of one target.
pub struct TargetState {
    pub upstream: Arc<str>,
    pub label: Arc<str>,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    circuit: Option<Circuit>,
    metrics: Arc<Metrics>,
    /// This target's attempt counters, looked up once.
    attempt_metrics: AttemptMetrics,
}

impl TargetState {
    fn new(
        upstream: &Arc<str>,
        label: &Arc<str>,
        circuit: Option<CircuitSettings>,
        metrics: &Arc<Metrics>,
    ) -> TargetState {
        let now = Instant::now();
        // The gauges are written by `UpstreamState::publish_metrics` once the snapshot using
        // this state goes live, not here: a rejected reload also builds state, and must not
        // overwrite what the running targets report.
        TargetState {
            upstream: upstream.clone(),
            label: label.clone(),
            // Targets start healthy, as in nginx and Pingora: a fresh config must serve at once.
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            circuit: circuit.map(|s| Circuit::new(s, now)),
            metrics: metrics.clone(),
            attempt_metrics: AttemptMetrics::default(),
        }
    }

    /// Writes this target's health and circuit gauges from its current state.
    fn publish_metrics(&self, now: Instant) {
        self.metrics
            .target_healthy(&self.upstream, &self.label, self.is_healthy());
        if let Some(c) = &self.circuit {
            self.metrics
                .circuit_state(&self.upstream, &self.label, c.state(now).as_metric());
        }
    }

    /// Healthy by active checks and not cut off by an open circuit.
    pub fn is_usable(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && self.circuit.as_ref().is_none_or(|c| c.is_available(now))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records an active health-check verdict; returns true when it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let changed = self.healthy.swap(healthy, Ordering::Relaxed) != healthy;
        if changed {
            self.metrics
                .target_healthy(&self.upstream, &self.label, healthy);
        }
        changed
    }

    /// Where this target's attempts are counted.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This target's attempt counters in [`Self::metrics`].
    pub fn attempt_metrics(&self) -> &AttemptMetrics {
        &self.attempt_metrics
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Asks the circuit breaker to let a request through.
    pub fn admit(&self, now: Instant) -> Admission {
        match &self.circuit {
            None => Admission::Allowed(Ticket::default()),
            Some(c) => {
                let admission = c.admit(now);
                if let Some((from, to)) = admission.transition() {
                    self.transition(from, to);
                }
                self.metrics
                    .circuit_state(&self.upstream, &self.label, c.state(now).as_metric());
                admission
            }
        }
    }

    /// Time until an open circuit lets probes through (`None` when it is not open).
    pub fn retry_after(&self, now: Instant) -> Option<std::time::Duration> {
        self.circuit.as_ref()?.retry_after(now)
    }

    /// The circuit's state and time until it lets probes through, without its lock (see
    /// [`Circuit::view`]); `None` for an upstream without a circuit breaker.
    pub fn circuit_view(&self, now: Instant) -> Option<(CircuitState, Option<Duration>)> {
        Some(self.circuit.as_ref()?.view(now))
    }

    /// Feeds the outcome of a request to the circuit breaker; logs and counts transitions.
    pub fn record(&self, ticket: Ticket, success: bool, now: Instant) {
        let Some(c) = &self.circuit else { return };
        if let Some((from, to)) = c.record(ticket, success, now) {
            self.transition(from, to);
        }
    }

    /// Logs and counts a circuit state change (each is reported exactly once).
    fn transition(&self, from: CircuitState, to: CircuitState) {
        self.metrics
            .circuit_transition(&self.upstream, &self.label, to.as_str(), to.as_metric());
        match to {
            CircuitState::Open => {
                tracing::warn!(upstream = %self.upstream, upstream_target = %self.label, ?from, "circuit opened: target fails too often, sending it nothing for a while")
            }
            CircuitState::HalfOpen => {
                tracing::info!(upstream = %self.upstream, upstream_target = %self.label, "circuit half-open: probing the target")
            }
            CircuitState::Closed => {
                tracing::info!(upstream = %self.upstream, upstream_target = %self.label, "circuit closed: target recovered")
            }
        }
    }

    /// Marks one attempt in flight until the returned guard drops.
    pub fn start_attempt(self: &Arc<Self>) -> AttemptGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        AttemptGuard(self.clone())
    }
}

/// An attempt in flight on a target (for least-requests balancing).
pub struct AttemptGuard(Arc<TargetState>);

impl AttemptGuard {
    pub fn target(&self) -> &Arc<TargetState> {
        &self.0
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State of one upstream: primary targets first, then backups, in config order.
pub struct UpstreamState {
    pub targets: Vec<Arc<TargetState>>,
    /// Caps retries to a share of requests so a failing upstream does not get a retry storm.
    pub budget: RetryBudget,
}

impl UpstreamState {
    /// Sets the targets' health and circuit gauges to what this state holds. Called when a
    /// snapshot using it goes live (start-up, applied reload).
    pub fn publish_metrics(&self) {
        let now = Instant::now();
        if let Some(t) = self.targets.first() {
            t.metrics.declare_upstream(&t.upstream);
        }
        for t in &self.targets {
            t.publish_metrics(now);
        }
    }
}

/// Everything that defines an upstream, in run-time form: a reload that leaves all of it
/// unchanged keeps the upstream's state (health verdicts, open circuits, the retry budget's
/// history, the health-check task); any change starts fresh, as operators expect of an
/// upstream they edited.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub name: Arc<str>,
    /// The targets, primaries then backups (state is per target, by index): label, weight,
    /// and whether it is a backup.
    pub targets: Vec<(Arc<str>, u32, bool)>,
    pub balance: crate::config::Balance,
    pub hash_key: super::HashKey,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub circuit: Option<CircuitSettings>,
    pub budget: BudgetSettings,
    pub health: Option<HealthCheck>,
    /// The TLS settings' fingerprint (SNI and the CA's contents: health checks built with an
    /// old CA must not outlive it).
    pub tls: Option<u64>,
}

/// Hands out upstream state, reusing it while its [`StateKey`] is unchanged.
pub struct StateRegistry {
    metrics: Arc<Metrics>,
    entries: Registry<StateKey, UpstreamState>,
}

impl StateRegistry {
    pub fn new(metrics: Arc<Metrics>) -> StateRegistry {
        StateRegistry {
            metrics,
            entries: Registry::new(),
        }
    }

    /// The state for these settings: the existing one while it is still in use.
    pub fn state_for(&self, key: StateKey) -> Arc<UpstreamState> {
        let labels: Vec<Arc<str>> = key.targets.iter().map(|t| t.0.clone()).collect();
        let (name, circuit) = (key.name.clone(), key.circuit);
        let budget = key.budget;
        self.entries.get_or_insert_with(key, || {
            Arc::new(UpstreamState {
                budget: RetryBudget::new(budget, Instant::now()),
                targets: labels
                    .iter()
                    .map(|l| Arc::new(TargetState::new(&name, l, circuit, &self.metrics)))
                    .collect(),
            })
        })
    }
}

/// `[upstreams.NAME.circuit_breaker]` in run-time form.
pub fn circuit_settings(c: &crate::config::CircuitBreakerConfig) -> CircuitSettings {
    CircuitSettings {
        failure_ratio: c.failure_ratio,
        min_requests: c.min_requests,
        window: c.window.get(),
        open_for: c.open_for.get(),
        half_open_probes: c.half_open_probes,
    }
}

/// `retry_budget` in run-time form (the defaults when absent).
pub fn budget_settings(b: Option<&crate::config::RetryBudgetConfig>) -> BudgetSettings {
    b.map(|b| BudgetSettings {
        ratio: b.ratio,
        window: b.window.get(),
        min_per_second: b.min_per_second,
    })
    .unwrap_or_default()
}
