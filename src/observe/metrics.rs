//! Prometheus metrics of one gateway instance, in their own registry (so several gateways in one
//! test process never share counters). Label values are bounded: route and upstream names from
//! the config (`none` when no route matched), methods folded to a fixed set, status codes.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buckets for request latency: 1 ms to 30 s, dense where APIs live.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds buckets for Redis calls: a round trip on a local network is tens of microseconds.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// How one attempt to reach an upstream target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// A response arrived; the status class is the label (`2xx` .. `5xx`).
    Response(u16),
    ConnectError,
    Timeout,
    Error,
    /// The attempt ended for the client's reason before the target answered: the client went
    /// away, stalled its request body, or sent more body than the route accepts. Never a
    /// verdict on the target.
    ClientClosed,
}

impl UpstreamOutcome {
    /// How many outcome labels there are ([`Self::index`] is below this).
    const COUNT: usize = 9;

    /// A distinct small number per label, for the cached counters of [`AttemptMetrics`].
    fn index(self) -> usize {
        match self {
            UpstreamOutcome::Response(s) => usize::from(s.clamp(100, 599) / 100 - 1),
            UpstreamOutcome::ConnectError => 5,
            UpstreamOutcome::Timeout => 6,
            UpstreamOutcome::Error => 7,
            UpstreamOutcome::ClientClosed => 8,
        }
    }

    /// The `outcome` label of `tollgate_upstream_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Response(s) if s < 200 => "1xx",
            UpstreamOutcome::Response(s) if s < 300 => "2xx",
            UpstreamOutcome::Response(s) if s < 400 => "3xx",
            UpstreamOutcome::Response(s) if s < 500 => "4xx",
            UpstreamOutcome::Response(_) => "5xx",
            UpstreamOutcome::ConnectError => "connect_error",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
            UpstreamOutcome::ClientClosed => "client_closed",
        }
    }
}

/// The metric children a route's requests are counted in, taken from the registry on first use
/// and kept with the route (for its snapshot's life): a request then pays an atomic add rather
/// than a lookup by label values (hashing the labels, a read lock, a map lookup).
#[derive(Debug, Default)]
pub struct RouteMetrics {
    duration: OnceLock<Histogram>,
    /// `tollgate_requests_total` by (method index, status), in the order first seen; at most
    /// [`RouteMetrics::MAX_REQUEST_COUNTERS`] of them (rarer combinations are looked up).
    requests: Mutex<Vec<(u8, u16, IntCounter)>>,
}

impl RouteMetrics {
    const MAX_REQUEST_COUNTERS: usize = 32;
}

/// The metric children of one upstream target's attempts, taken on first use (see
/// [`RouteMetrics`]); kept with the target's state, across reloads.
#[derive(Debug, Default)]
pub struct AttemptMetrics {
    by_outcome: [OnceLock<IntCounter>; UpstreamOutcome::COUNT],
    duration: OnceLock<Histogram>,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    config_reloads: IntCounterVec,
    last_reload_success: Gauge,
    in_flight: IntGauge,
    access_log_dropped: prometheus::IntCounter,
    log_suppressed: IntCounterVec,
    target_healthy: IntGaugeVec,
    circuit_state: IntGaugeVec,
    circuit_transitions: IntCounterVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    fallbacks: IntCounterVec,
    auth_decisions: IntCounterVec,
    ratelimit_decisions: IntCounterVec,
    jwks_refreshes: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: prometheus::GaugeVec,
    rejected: IntCounterVec,
    ratelimit_backend_errors: prometheus::IntCounter,
    ratelimit_backend_duration: prometheus::Histogram,
    pub cache: super::cache_metrics::CacheMetrics,
    pub abuse: super::abuse_metrics::AbuseMetrics,
    aggregate_parts: IntCounterVec,
    aggregate_part_duration: HistogramVec,
    trace_spans_dropped: prometheus::IntCounter,
    trace_spans_exported: prometheus::IntCounter,
    trace_spans_failed: prometheus::IntCounter,
}

/// Why the gateway refused a request before it reached an upstream (the `reason` label of
/// `tollgate_rejected_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Request head over `server.max_header_bytes` (431).
    HeaderTooLarge,
    /// Request body over the route's `max_body_bytes` (413).
    BodyTooLarge,
    /// Request head not complete within `server.client_header_timeout` (408 or closed).
    HeaderTimeout,
    /// The client stopped sending its request body while the upstream waited for it (408).
    BodyTimeout,
    /// Ambiguous or malformed framing refused by Tollgate's own checks (400).
    BadRequest,
    /// A request head Pingora's HTTP/1 parser refused before any hook ran (bad bytes, obs-fold,
    /// duplicate Host, conflicting lengths, an unknown version...), answered by the guard (400).
    MalformedHead,
    /// A `CONNECT` request: the gateway does not tunnel (405).
    ConnectMethod,
    /// A request line with stray whitespace or control bytes, or a target that is neither a
    /// path nor an http(s) URL (400).
    BadTarget,
    /// A path refused by normalisation or ambiguous to a lenient backend (400).
    BadPath,
    /// An HTTP/1.1 or HTTP/2 request that names no host (400).
    MissingHost,
    /// A host that is not `host[:port]` (400).
    BadHost,
    /// `server.max_in_flight` reached (503).
    InFlight,
    /// `server.max_in_flight_per_client` reached for the client's address (503).
    ClientInFlight,
    /// An HTTP/2 connection has as many requests in flight as its stream limit, counting
    /// requests whose streams the client already reset (503).
    ConnectionInFlight,
}

impl Rejection {
    pub const ALL: [Rejection; 14] = [
        Rejection::HeaderTooLarge,
        Rejection::BodyTooLarge,
        Rejection::HeaderTimeout,
        Rejection::BodyTimeout,
        Rejection::BadRequest,
        Rejection::MalformedHead,
        Rejection::ConnectMethod,
        Rejection::BadTarget,
        Rejection::BadPath,
        Rejection::MissingHost,
        Rejection::BadHost,
        Rejection::InFlight,
        Rejection::ClientInFlight,
        Rejection::ConnectionInFlight,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::HeaderTooLarge => "header_too_large",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::HeaderTimeout => "header_timeout",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::BadRequest => "bad_request",
            Rejection::MalformedHead => "malformed_head",
            Rejection::ConnectMethod => "connect_method",
            Rejection::BadTarget => "bad_target",
            Rejection::BadPath => "bad_path",
            Rejection::MissingHost => "missing_host",
            Rejection::BadHost => "bad_host",
            Rejection::InFlight => "in_flight",
            Rejection::ClientInFlight => "client_in_flight",
            Rejection::ConnectionInFlight => "connection_in_flight",
        }
    }
}

/// Registers metrics in one registry; the definitions are static, so failing to build or
/// register one is a programming error caught by every test run.
pub(super) struct Builder(Registry);

impl Builder {
    pub(super) fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    pub(super) fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"),
        )
    }

    pub(super) fn counter(&self, name: &str, help: &str) -> prometheus::IntCounter {
        self.add(prometheus::IntCounter::new(name, help).expect("static metric definition"))
    }

    pub(super) fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("static metric definition"))
    }

    pub(super) fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"))
    }

    fn histograms(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("static metric definition"))
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let b = Builder(Registry::new());
        let config_reloads = b.counters(
            "tollgate_config_reloads_total",
            "Config loads and reloads, by result.",
            &["result"],
        );
        // Both results exist from the start so a dashboard can rate() them before the first failure.
        for r in ["success", "failure"] {
            config_reloads.with_label_values(&[r]);
        }
        b.gauges(
            "tollgate_build_info",
            "Always 1; the version label says which build runs.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let rejected = b.counters(
            "tollgate_rejected_requests_total",
            "Requests refused by the gateway's limits and framing checks, by reason (header_too_large, body_too_large, header_timeout (connections that sent nothing in time included), body_timeout, bad_request (framing), malformed_head (refused by the HTTP/1 parser), connect_method (405), bad_target, bad_path, missing_host, bad_host; 503s: in_flight, client_in_flight, connection_in_flight).",
            &["reason"],
        );
        b.add(super::log_throttle::SuppressedLogCollector::new());
        // Every reason exists from the start so an alert can rate() it before the first refusal.
        for r in Rejection::ALL {
            rejected.with_label_values(&[r.label()]);
        }
        Metrics {
            rejected,
            requests: b.counters(
                "tollgate_requests_total",
                "Requests answered, by route, method and status (000: the client went away before any response).",
                &["route", "method", "status"],
            ),
            request_duration: b.histograms(
                "tollgate_request_duration_seconds",
                "Time from request start to the end of the response, by route.",
                &["route"],
            ),
            upstream_requests: b.counters(
                "tollgate_upstream_requests_total",
                "Attempts to reach an upstream target, by outcome (status class, connect_error, timeout, error, client_closed).",
                &["upstream", "target", "outcome"],
            ),
            upstream_duration: b.histograms(
                "tollgate_upstream_duration_seconds",
                "Time spent on an upstream attempt until its response ended or failed, by upstream.",
                &["upstream"],
            ),
            config_reloads,
            last_reload_success: b.add(
                Gauge::new(
                    "tollgate_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last config load that succeeded.",
                )
                .expect("static metric definition"),
            ),
            in_flight: b.add(
                IntGauge::new("tollgate_requests_in_flight", "Requests being handled right now.")
                    .expect("static metric definition"),
            ),
            log_suppressed: b.counters(
                "tollgate_log_lines_suppressed_total",
                "Error log lines not written because one of the same kind was written in the last second, by kind (the error type).",
                &["kind"],
            ),
            access_log_dropped: b.add(
                prometheus::IntCounter::new(
                    "tollgate_access_log_dropped_total",
                    "Access-log lines dropped because the output could not keep up.",
                )
                .expect("static metric definition"),
            ),
            target_healthy: b.gauges(
                "tollgate_upstream_target_healthy",
                "1 when active health checks find the target healthy (targets start healthy).",
                &["upstream", "target"],
            ),
            circuit_state: b.gauges(
                "tollgate_upstream_circuit_state",
                "Circuit breaker state per target: 0 closed, 1 open, 2 half-open.",
                &["upstream", "target"],
            ),
            circuit_transitions: b.counters(
                "tollgate_upstream_circuit_transitions_total",
                "Circuit breaker state changes per target, by the state entered.",
                &["upstream", "target", "to"],
            ),
            retries: b.counters(
                "tollgate_upstream_retries_total",
                "Retries of upstream requests, by reason (connect_error, timeout, error, status_502..504, stale_connection).",
                &["upstream", "reason"],
            ),
            budget_exhausted: b.counters(
                "tollgate_upstream_retry_budget_exhausted_total",
                "Retries refused because the upstream's retry budget was used up.",
                &["upstream"],
            ),
            fallbacks: b.counters(
                "tollgate_fallback_responses_total",
                "Fallback responses served because the route's upstream could not answer.",
                &["route"],
            ),
            auth_decisions: b.counters(
                "tollgate_auth_decisions_total",
                "Authentication decisions per auth policy: allowed, missing, insufficient_scope, or why credentials were refused.",
                &["policy", "result"],
            ),
            ratelimit_decisions: b.counters(
                "tollgate_ratelimit_decisions_total",
                "Rate limit decisions per limit: allowed, rejected, or degraded_allowed / degraded_rejected when the cluster backend failed and on_error decided.",
                &["policy", "result"],
            ),
            jwks_refreshes: b.counters(
                "tollgate_jwks_refresh_total",
                "JWKS loads (start-up, background refresh, unknown-kid refetch) per auth policy, by result.",
                &["policy", "result"],
            ),
            jwks_keys: b.gauges(
                "tollgate_jwks_keys",
                "Usable signing keys in the key set an auth policy verifies with.",
                &["policy"],
            ),
            jwks_last_success: b.add(
                prometheus::GaugeVec::new(
                    Opts::new(
                        "tollgate_jwks_last_success_timestamp_seconds",
                        "Unix time of the last JWKS load that gave a usable key set, per auth policy.",
                    ),
                    &["policy"],
                )
                .expect("static metric definition"),
            ),
            ratelimit_backend_errors: b.add(
                prometheus::IntCounter::new(
                    "tollgate_ratelimit_backend_errors_total",
                    "Cluster rate-limit checks that got no decision from Redis: failed, timed out, or skipped while backing off after failures.",
                )
                .expect("static metric definition"),
            ),
            ratelimit_backend_duration: b.add(
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "tollgate_ratelimit_backend_duration_seconds",
                        "Time of each cluster rate-limit call to Redis (one script round trip; connecting included when a connection was made), answered or not.",
                    )
                    .buckets(REDIS_BUCKETS.to_vec()),
                )
                .expect("static metric definition"),
            ),
            cache: super::cache_metrics::CacheMetrics::new(&b),
            trace_spans_dropped: b.counter(
                "tollgate_trace_spans_dropped_total",
                "Finished spans dropped because the export queue was full (the collector is slow or down).",
            ),
            trace_spans_exported: b.counter(
                "tollgate_trace_spans_exported_total",
                "Spans the collector accepted.",
            ),
            trace_spans_failed: b.counter(
                "tollgate_trace_spans_failed_total",
                "Spans lost because an export failed (the collector refused them or did not answer).",
            ),
            abuse: super::abuse_metrics::AbuseMetrics::new(&b),
            aggregate_parts: b.counters(
                "tollgate_aggregate_parts_total",
                "Parts of aggregate routes, by route, part and outcome (ok, stale, error, timeout, circuit_open, not_json, too_large, skipped).",
                &["route", "part", "outcome"],
            ),
            aggregate_part_duration: b.histograms(
                "tollgate_aggregate_part_duration_seconds",
                "Time from a part's start to its result (retries included), by route and part.",
                &["route", "part"],
            ),
            registry: b.0,
        }
    }

    pub fn ratelimit_backend_error(&self) {
        self.ratelimit_backend_errors.inc();
    }

    pub fn ratelimit_backend_duration(&self, took: std::time::Duration) {
        self.ratelimit_backend_duration.observe(took.as_secs_f64());
    }

    /// A finished span did not fit in the export queue.
    pub fn trace_spans_dropped(&self) {
        self.trace_spans_dropped.inc();
    }

    pub fn trace_spans_exported(&self, count: u64) {
        self.trace_spans_exported.inc_by(count);
    }

    pub fn trace_export_failed(&self, count: u64) {
        self.trace_spans_failed.inc_by(count);
    }

    pub fn log_suppressed(&self, kind: &str) {
        self.log_suppressed.with_label_values(&[kind]).inc();
    }

    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    pub fn target_healthy(&self, upstream: &str, target: &str, healthy: bool) {
        self.target_healthy
            .with_label_values(&[upstream, target])
            .set(i64::from(healthy));
    }

    /// `state`: 0 closed, 1 open, 2 half-open.
    pub fn circuit_state(&self, upstream: &str, target: &str, state: i64) {
        self.circuit_state
            .with_label_values(&[upstream, target])
            .set(state);
    }

    /// Counts a transition into state `to` ("closed", "open", "half_open" = `value` 0, 1, 2).
    pub fn circuit_transition(&self, upstream: &str, target: &str, to: &str, value: i64) {
        self.circuit_transitions
            .with_label_values(&[upstream, target, to])
            .inc();
        self.circuit_state(upstream, target, value);
    }

    pub fn upstream_retry(&self, upstream: &str, reason: &str) {
        self.retries.with_label_values(&[upstream, reason]).inc();
    }

    /// Makes the upstream's own counters exist at zero, so dashboards and alerts can rate()
    /// them before the first event.
    pub fn declare_upstream(&self, upstream: &str) {
        self.budget_exhausted.with_label_values(&[upstream]);
    }

    pub fn retry_budget_exhausted(&self, upstream: &str) {
        self.budget_exhausted.with_label_values(&[upstream]).inc();
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejected.with_label_values(&[reason.label()]).inc();
    }

    /// One part of an aggregate route ended with `outcome` (a label of `aggregate::Outcome`).
    pub fn aggregate_part(&self, route: &str, part: &str, outcome: &str, took: Duration) {
        self.aggregate_parts
            .with_label_values(&[route, part, outcome])
            .inc();
        self.aggregate_part_duration
            .with_label_values(&[route, part])
            .observe(took.as_secs_f64());
    }

    pub fn fallback_response(&self, route: &str) {
        self.fallbacks.with_label_values(&[route]).inc();
    }

    /// `result`: `allowed` or a bounded denial label.
    pub fn auth_decision(&self, policy: &str, result: &str) {
        self.auth_decisions
            .with_label_values(&[policy, result])
            .inc();
    }

    /// The counter of one rate limit decision: `policy` is the limit's name, `result` one of
    /// four fixed labels (see `ratelimit`). Taken once per limit when the config is compiled,
    /// so a request pays an atomic increment, not a label lookup.
    pub fn ratelimit_decisions(&self, policy: &str, result: &str) -> prometheus::IntCounter {
        self.ratelimit_decisions
            .with_label_values(&[policy, result])
    }

    /// Records one JWKS load for auth policy `policy`; `keys` is the size of the set now in use
    /// (unchanged after a failure: the last good set keeps working).
    pub fn jwks_refresh(&self, policy: &str, ok: bool, keys: usize) {
        self.jwks_refreshes
            .with_label_values(&[policy, if ok { "success" } else { "failure" }])
            .inc();
        self.jwks_keys
            .with_label_values(&[policy])
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        if ok {
            self.jwks_last_success
                .with_label_values(&[policy])
                .set(unix_now());
        }
    }

    /// Records one finished request; `cached`: the route's handles, when a route was found.
    pub fn request(
        &self,
        route: &str,
        cached: Option<&RouteMetrics>,
        method: &http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let method = method_index(method);
        let Some(cached) = cached else {
            self.requests
                .with_label_values(&[route, METHOD_LABELS[method], status_label(status)])
                .inc();
            self.request_duration
                .with_label_values(&[route])
                .observe(elapsed.as_secs_f64());
            return;
        };
        {
            let mut requests = cached.requests.lock().unwrap_or_else(|p| p.into_inner());
            let key = (method as u8, status);
            match requests.iter().find(|(m, s, _)| (*m, *s) == key) {
                Some((_, _, counter)) => counter.inc(),
                None => {
                    let counter = self.requests.with_label_values(&[
                        route,
                        METHOD_LABELS[method],
                        status_label(status),
                    ]);
                    counter.inc();
                    if requests.len() < RouteMetrics::MAX_REQUEST_COUNTERS {
                        requests.push((key.0, key.1, counter));
                    }
                }
            }
        }
        cached
            .duration
            .get_or_init(|| self.request_duration.with_label_values(&[route]))
            .observe(elapsed.as_secs_f64());
    }

    /// Records one attempt to reach an upstream target, in the target's cached handles.
    pub fn upstream_attempt(
        &self,
        cached: &AttemptMetrics,
        upstream: &str,
        target: &str,
        outcome: UpstreamOutcome,
        elapsed: Duration,
    ) {
        cached.by_outcome[outcome.index()]
            .get_or_init(|| {
                self.upstream_requests
                    .with_label_values(&[upstream, target, outcome.label()])
            })
            .inc();
        cached
            .duration
            .get_or_init(|| self.upstream_duration.with_label_values(&[upstream]))
            .observe(elapsed.as_secs_f64());
    }

    pub fn config_loaded(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        if ok {
            self.last_reload_success.set(unix_now());
        }
    }

    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    /// Every metric family's current values (what a scrape reads), for readers inside the
    /// process such as the status page's sampler.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for I/O reasons; an empty page is the worst case.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The method labels; methods outside the standard set are folded into `OTHER` so a client
/// cannot grow the label set.
const METHOD_LABELS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// The method's place in [`METHOD_LABELS`].
fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::PATCH => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        http::Method::CONNECT => 7,
        http::Method::TRACE => 8,
        _ => 9,
    }
}

/// Status codes as prebuilt strings (no allocation per request); codes outside 100..=599 (or 0
/// when no response could be sent) fold to "000".
fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (100..600).map(|s: u16| s.to_string()).collect());
    match status {
        100..=599 => LABELS[usize::from(status - 100)].as_str(),
        _ => "000",
    }
}
