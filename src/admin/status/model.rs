//! What the status page shows, as one serializable value: the JSON of `GET /api/status` and
//! what the HTML is rendered from. Built from the live snapshot (an `ArcSwap` load), the last
//! reload's record, atomics of the upstream state and the traffic [`History`]; never from a
//! lock a request waits on. Holds no secret: no keys, tokens or passwords (Redis URLs masked).

use super::history::{quantile, Frame, Series, View};
use crate::config::{OnError, RateKey};
use crate::snapshot::{ReloadRecord, Snapshot};
use crate::upstream::circuit::CircuitState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Frames in "the last minute" (plus the step in progress).
const MINUTE_FRAMES: usize = 6;
/// Seconds a step in progress must have run to be drawn.
const MIN_STEP_SHOWN: f64 = 2.0;

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// Unix seconds when this status was built.
    pub now: u64,
    pub uptime_seconds: u64,
    /// This instance's readiness (`/readyz`).
    pub ready: bool,
    pub config: ConfigInfo,
    /// The last reload that was applied or rejected since start-up.
    pub last_reload: Option<Reload>,
    pub traffic: Traffic,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
    pub rate_limits: Vec<LimitStatus>,
    pub caches: Vec<CacheStatus>,
    /// The Redis backend of cluster rate limits, when a limit uses it.
    pub cluster: Option<ClusterStatus>,
}

#[derive(Debug, Serialize)]
pub struct ConfigInfo {
    pub hash: String,
    pub source: String,
    pub loaded_at: u64,
    pub loaded_at_rfc3339: String,
}

#[derive(Debug, Serialize)]
pub struct Reload {
    pub at: u64,
    pub at_rfc3339: String,
    pub ok: bool,
    pub hash: String,
    /// A rejected file's errors, exactly as `tollgate check` prints them.
    pub errors: Vec<String>,
    /// An applied file's warnings, as `check` prints them.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Traffic {
    pub step_seconds: u64,
    /// Every request (routed or not), one point per step, oldest first; the last point is
    /// the step in progress.
    pub points: Vec<Point>,
    pub last_minute: Summary,
}

/// One step of traffic, as rates.
#[derive(Debug, Serialize, Clone)]
pub struct Point {
    /// Unix seconds at the end of the step.
    pub t: u64,
    pub seconds: f64,
    pub rps: f64,
    pub rps_4xx: f64,
    pub rps_5xx: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Traffic over a window.
#[derive(Debug, Serialize, Clone)]
pub struct Summary {
    pub seconds: f64,
    pub requests: u64,
    pub rps: f64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    /// 5xx answers over requests (0 without requests).
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub name: String,
    pub host: Option<String>,
    pub path: String,
    /// Empty: any method.
    pub methods: Vec<String>,
    /// The upstream of a proxied route.
    pub upstream: Option<String>,
    /// The parts of an aggregate route, `part → upstream`.
    pub aggregate: Vec<Part>,
    pub auth: Option<AuthInfo>,
    pub rate_limits: Vec<String>,
    pub cache: Option<String>,
    pub last_minute: Summary,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize)]
pub struct Part {
    pub name: String,
    pub upstream: String,
}

#[derive(Debug, Serialize)]
pub struct AuthInfo {
    pub policy: String,
    /// `jwt` or `api_key`.
    pub kind: &'static str,
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub health_checked: bool,
    pub circuit_breaker: bool,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub backup: bool,
    /// The active health checks' verdict (targets start healthy).
    pub healthy: bool,
    /// `closed`, `open` or `half_open`; `None` without a circuit breaker.
    pub circuit: Option<&'static str>,
    /// While open: seconds until the circuit lets probes through.
    pub probe_in_seconds: Option<f64>,
    pub in_flight: usize,
    /// Attempts in the last 15 minutes, by outcome (`2xx`, `connect_error`, ...).
    pub outcomes: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct LimitStatus {
    pub name: String,
    pub requests: u64,
    pub per_seconds: f64,
    pub burst: u64,
    pub key: String,
    pub cluster: bool,
    /// Decisions since start-up, by result (`allowed`, `rejected`, `degraded_*`).
    pub decisions: BTreeMap<String, u64>,
    /// The same over the last 15 minutes.
    pub recent: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct CacheStatus {
    pub name: String,
    pub entries: i64,
    pub bytes: i64,
    /// Lookups since start-up, by result (`hit`, `miss`, `stale`, ...).
    pub lookups: BTreeMap<String, u64>,
    /// Answers from the cache (hit, stale, revalidated) over lookups that could use it (all
    /// but bypass); `None` before the first.
    pub hit_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// `redis_url` with its password masked.
    pub redis: String,
    pub reachable: bool,
    /// `allow`, `deny` or `local`: what decides while Redis is unreachable.
    pub on_error: &'static str,
    /// Redis is unreachable: `on_error` is deciding now.
    pub degraded: bool,
}

/// What the page is built from besides the history.
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    pub last_reload: Option<&'a ReloadRecord>,
    pub ready: bool,
    pub started: SystemTime,
}

impl Status {
    pub fn build(inputs: &Inputs<'_>, view: &View) -> Status {
        let snap = inputs.snapshot;
        let per_frame: Vec<Tallies> = view.frames.iter().map(Tallies::of).collect();
        let minute = per_frame.len().saturating_sub(MINUTE_FRAMES + 1);
        let total = |t: &Tallies| t.total();
        let traffic = Traffic {
            step_seconds: super::history::STEP.as_secs(),
            points: points(&view.frames, &per_frame, &view.bounds, total),
            last_minute: summary(
                &view.frames[minute..],
                &per_frame[minute..],
                &view.bounds,
                total,
            ),
        };
        let routes = snap
            .routes
            .values()
            .map(|(_, route)| {
                let of_route =
                    |t: &Tallies| t.routes.get(&*route.name).cloned().unwrap_or_default();
                RouteStatus {
                    name: route.name.to_string(),
                    host: route.host.clone(),
                    path: route.path.clone(),
                    methods: route.methods.clone(),
                    upstream: route.upstream().map(|u| u.name.to_string()),
                    aggregate: route.aggregate().map_or_else(Vec::new, |a| {
                        a.parts
                            .iter()
                            .map(|p| Part {
                                name: p.name.to_string(),
                                upstream: p.upstream.name.to_string(),
                            })
                            .collect()
                    }),
                    auth: route.auth.as_ref().map(|a| AuthInfo {
                        policy: a.name.to_string(),
                        kind: match *a.policy {
                            crate::auth::AuthPolicy::Jwt(_) => "jwt",
                            crate::auth::AuthPolicy::ApiKey(_) => "api_key",
                        },
                        scopes: a.scopes.clone(),
                    }),
                    rate_limits: route.rate_limits.as_ref().map_or_else(Vec::new, |l| {
                        l.limits.iter().map(|l| l.name.to_string()).collect()
                    }),
                    cache: route.cache.as_ref().map(|c| c.name().to_string()),
                    last_minute: summary(
                        &view.frames[minute..],
                        &per_frame[minute..],
                        &view.bounds,
                        of_route,
                    ),
                    points: points(&view.frames, &per_frame, &view.bounds, of_route),
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            now: unix(SystemTime::now()),
            uptime_seconds: inputs.started.elapsed().unwrap_or_default().as_secs(),
            ready: inputs.ready,
            config: ConfigInfo {
                hash: snap.info.hash.clone(),
                source: snap.info.source.display().to_string(),
                loaded_at: unix(snap.info.loaded_at),
                loaded_at_rfc3339: rfc3339(snap.info.loaded_at),
            },
            last_reload: inputs.last_reload.map(|r| Reload {
                at: unix(r.at),
                at_rfc3339: rfc3339(r.at),
                ok: r.ok,
                hash: r.hash.clone(),
                errors: if r.ok { Vec::new() } else { r.lines.clone() },
                warnings: if r.ok { r.lines.clone() } else { Vec::new() },
            }),
            traffic,
            routes,
            upstreams: upstreams(snap, &view.frames),
            rate_limits: limits(snap, view),
            caches: caches(snap, view),
            cluster: snap.limiter.cluster().map(|c| {
                let backend = c.backend.status();
                ClusterStatus {
                    redis: backend.url,
                    reachable: backend.reachable,
                    on_error: match c.on_error {
                        OnError::Allow => "allow",
                        OnError::Deny => "deny",
                        OnError::Local => "local",
                    },
                    degraded: !backend.reachable,
                }
            }),
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Requests of one route (or all) in one frame.
#[derive(Debug, Clone, Default)]
struct Tally {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    /// Cumulative latency bucket counts, by bucket index.
    faster: Vec<u64>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        add_buckets(&mut self.faster, &other.faster);
    }

    fn quantile_ms(&self, q: f64, bounds: &[f64]) -> Option<f64> {
        let ms = quantile(q, bounds, &self.faster, self.requests)? * 1000.0;
        Some((ms * 100.0).round() / 100.0)
    }
}

fn add_buckets(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// One frame's requests per route, counted in one pass over its deltas.
struct Tallies {
    routes: BTreeMap<String, Tally>,
}

impl Tallies {
    fn of(frame: &Frame) -> Tallies {
        let mut routes: BTreeMap<String, Tally> = BTreeMap::new();
        for (series, &n) in &frame.deltas {
            match series {
                Series::Requests { route, class } => {
                    let t = routes.entry(route.clone()).or_default();
                    t.requests += n;
                    match class {
                        4 => t.client_errors += n,
                        5 => t.server_errors += n,
                        _ => {}
                    }
                }
                Series::Faster { route, le } => {
                    let t = routes.entry(route.clone()).or_default();
                    if t.faster.len() <= *le {
                        t.faster.resize(le + 1, 0);
                    }
                    t.faster[*le] += n;
                }
                _ => {}
            }
        }
        Tallies { routes }
    }

    fn total(&self) -> Tally {
        let mut total = Tally::default();
        for t in self.routes.values() {
            total.add(t);
        }
        total
    }
}

fn points(
    frames: &[Frame],
    tallies: &[Tallies],
    bounds: &[f64],
    pick: impl Fn(&Tallies) -> Tally,
) -> Vec<Point> {
    // A step in progress that began a moment ago says nothing yet (a rate over a few
    // milliseconds): it is left out of the charts, not out of the summaries.
    let shown = match frames.split_last() {
        Some((last, kept)) if !kept.is_empty() && last.seconds < MIN_STEP_SHOWN => kept.len(),
        _ => frames.len(),
    };
    frames[..shown]
        .iter()
        .zip(tallies)
        .map(|(frame, tallies)| {
            let t = pick(tallies);
            let per_second = |n: u64| rate(n, frame.seconds);
            Point {
                t: unix(frame.end),
                seconds: (frame.seconds * 10.0).round() / 10.0,
                rps: per_second(t.requests),
                rps_4xx: per_second(t.client_errors),
                rps_5xx: per_second(t.server_errors),
                p50_ms: t.quantile_ms(0.5, bounds),
                p99_ms: t.quantile_ms(0.99, bounds),
            }
        })
        .collect()
}

fn summary(
    frames: &[Frame],
    tallies: &[Tallies],
    bounds: &[f64],
    pick: impl Fn(&Tallies) -> Tally,
) -> Summary {
    let mut t = Tally::default();
    for tallies in tallies {
        t.add(&pick(tallies));
    }
    let seconds: f64 = frames.iter().map(|f| f.seconds).sum();
    Summary {
        seconds: (seconds * 10.0).round() / 10.0,
        requests: t.requests,
        rps: rate(t.requests, seconds),
        errors_4xx: t.client_errors,
        errors_5xx: t.server_errors,
        error_ratio: if t.requests == 0 {
            0.0
        } else {
            t.server_errors as f64 / t.requests as f64
        },
        p50_ms: t.quantile_ms(0.5, bounds),
        p99_ms: t.quantile_ms(0.99, bounds),
    }
}

/// Events per second, to 3 decimals (0 over no time).
fn rate(n: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    (n as f64 / seconds * 1000.0).round() / 1000.0
}

fn upstreams(snap: &Snapshot, frames: &[Frame]) -> Vec<UpstreamStatus> {
    let now = Instant::now();
    let mut outcomes: BTreeMap<(&str, &str), BTreeMap<String, u64>> = BTreeMap::new();
    for frame in frames {
        for (series, &n) in &frame.deltas {
            if let Series::Attempts {
                upstream,
                target,
                outcome,
            } = series
            {
                let by_outcome = outcomes.entry((upstream, target)).or_default();
                *by_outcome.entry(outcome.clone()).or_default() += n;
            }
        }
    }
    snap.upstreams
        .values()
        .map(|u| UpstreamStatus {
            name: u.name.to_string(),
            health_checked: u.health_check.is_some(),
            circuit_breaker: u
                .state
                .targets
                .iter()
                .any(|t| t.circuit_view(now).is_some()),
            targets: u
                .targets
                .iter()
                .zip(&u.state.targets)
                .map(|(target, state)| {
                    let circuit = state.circuit_view(now);
                    TargetStatus {
                        target: target.label.to_string(),
                        backup: target.backup,
                        healthy: state.is_healthy(),
                        circuit: circuit.map(|(s, _)| s.as_str()),
                        probe_in_seconds: circuit
                            .and_then(|(s, left)| left.filter(|_| s == CircuitState::Open))
                            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
                        in_flight: state.in_flight(),
                        outcomes: outcomes
                            .remove(&(&*u.name, &*target.label))
                            .unwrap_or_default(),
                    }
                })
                .collect(),
        })
        .collect()
}

/// Counts by (name, result): decisions per limit, lookups per cache.
type ResultCounts = BTreeMap<(String, String), u64>;

/// Counts of a series kind since start-up (`now`) and over the kept frames, by (name, result).
fn counts(
    view: &View,
    pick: impl Fn(&Series) -> Option<(&str, &str)>,
) -> (ResultCounts, ResultCounts) {
    let collect = |values: &mut dyn Iterator<Item = (&Series, &u64)>| {
        let mut out = ResultCounts::new();
        for (series, &n) in values {
            if let Some((name, result)) = pick(series) {
                *out.entry((name.to_string(), result.to_string()))
                    .or_default() += n;
            }
        }
        out
    };
    let total = collect(&mut view.now.values.iter());
    let recent = collect(&mut view.frames.iter().flat_map(|f| f.deltas.iter()));
    (total, recent)
}

/// The results counted for one name.
fn of(counts: &ResultCounts, name: &str) -> BTreeMap<String, u64> {
    counts
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|((_, result), &v)| (result.clone(), v))
        .collect()
}

fn limits(snap: &Snapshot, view: &View) -> Vec<LimitStatus> {
    let (total, recent) = counts(view, |s| match s {
        Series::Decisions { policy, result } => Some((policy, result)),
        _ => None,
    });
    let mut seen = BTreeMap::new();
    for (_, route) in snap.routes.values() {
        for limit in route.rate_limits.iter().flat_map(|l| &l.limits) {
            seen.entry(limit.name.to_string())
                .or_insert_with(|| limit.clone());
        }
    }
    seen.into_iter()
        .map(|(name, l)| LimitStatus {
            requests: l.quota.requests,
            per_seconds: l.quota.per.as_secs_f64(),
            burst: l.quota.burst,
            key: match &l.key {
                RateKey::Ip => "ip".to_string(),
                RateKey::Route => "route".to_string(),
                RateKey::Consumer => "consumer".to_string(),
                RateKey::Header(h) => format!("header:{h}"),
                RateKey::Claim(c) => format!("claim:{c}"),
            },
            cluster: l.cluster,
            decisions: of(&total, &name),
            recent: of(&recent, &name),
            name,
        })
        .collect()
}

fn caches(snap: &Snapshot, view: &View) -> Vec<CacheStatus> {
    let (total, _) = counts(view, |s| match s {
        Series::Lookups { cache, result } => Some((cache, result)),
        _ => None,
    });
    let mut names: Vec<String> = Vec::new();
    for (_, route) in snap.routes.values() {
        let parts = route.aggregate().map(|a| &a.parts[..]).unwrap_or_default();
        let caches = route
            .cache
            .iter()
            .chain(parts.iter().filter_map(|p| p.cache.as_ref()));
        for cache in caches {
            if !names.iter().any(|n| n == cache.name()) {
                names.push(cache.name().to_string());
            }
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let lookups = of(&total, &name);
            let count =
                |results: &[&str]| -> u64 { results.iter().filter_map(|r| lookups.get(*r)).sum() };
            let served = count(&["hit", "stale", "revalidated"]);
            let could = count(&["hit", "stale", "revalidated", "miss", "expired"]);
            let (entries, bytes) = view.now.cache_sizes.get(&name).copied().unwrap_or_default();
            CacheStatus {
                hit_ratio: (could > 0).then(|| served as f64 / could as f64),
                entries,
                bytes,
                lookups,
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_and_never_divide_by_zero() {
        assert_eq!(rate(5, 10.0), 0.5);
        assert_eq!(rate(1, 3.0), 0.333);
        assert_eq!(rate(7, 0.0), 0.0);
    }
}
