//! The status page's traffic history: every [`STEP`] a background task reads the counters the
//! gateway already keeps (its Prometheus registry: requests by route and status, the latency
//! histogram's buckets, upstream attempts, rate-limit decisions, cache lookups) and keeps what
//! changed since the previous reading as one [`Frame`] in a ring of [`FRAMES`] (15 minutes). The
//! request path pays nothing for it; the page reads the ring and one fresh reading.

use crate::observe::Metrics;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::proto::MetricFamily;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One point of the charts.
pub const STEP: Duration = Duration::from_secs(10);
/// Points kept: 15 minutes.
pub const FRAMES: usize = 90;

/// The metric families the history reads.
const FOLLOWED: [&str; 7] = [
    "tollgate_cache_entries",
    "tollgate_cache_bytes",
    "tollgate_requests_total",
    "tollgate_request_duration_seconds",
    "tollgate_upstream_requests_total",
    "tollgate_ratelimit_decisions_total",
    "tollgate_cache_requests_total",
];

/// One counter the history follows, named by what it counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series {
    /// Requests answered on a route (`none`: no route matched), by status class (2 for 2xx).
    Requests { route: String, class: u8 },
    /// Requests of a route that took at most the latency histogram's bucket `le` (an index into
    /// [`Reading::bounds`]); cumulative over buckets, as Prometheus keeps them.
    Faster { route: String, le: usize },
    /// Attempts to reach a target, by outcome label.
    Attempts {
        upstream: String,
        target: String,
        outcome: String,
    },
    /// Rate-limit decisions of a limit, by result.
    Decisions { policy: String, result: String },
    /// Cache lookups of a cache, by result.
    Lookups { cache: String, result: String },
}

/// Counter values at one instant (only the series the history follows).
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub at: Option<SystemTime>,
    pub values: BTreeMap<Series, u64>,
    /// Upper bounds of the latency buckets, in seconds (without `+Inf`).
    pub bounds: Vec<f64>,
    /// Entries and bytes each cache holds (gauges: read, not followed).
    pub cache_sizes: BTreeMap<String, (i64, i64)>,
}

impl Reading {
    /// Reads the followed series out of a gathered registry.
    pub fn of(families: &[MetricFamily], at: SystemTime) -> Reading {
        let mut reading = Reading {
            at: Some(at),
            ..Reading::default()
        };
        for family in families {
            if !FOLLOWED.contains(&family.name()) {
                continue;
            }
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let count = m.get_counter().get_value() as u64;
                match family.name() {
                    "tollgate_requests_total" => {
                        let class = label("status").bytes().next().map_or(0, |b| b - b'0');
                        let key = Series::Requests {
                            route: label("route"),
                            class,
                        };
                        *reading.values.entry(key).or_default() += count;
                    }
                    "tollgate_request_duration_seconds" => {
                        let buckets = m.get_histogram().get_bucket();
                        if reading.bounds.is_empty() {
                            reading.bounds = buckets.iter().map(|b| b.upper_bound()).collect();
                        }
                        for (le, b) in buckets.iter().enumerate() {
                            let key = Series::Faster {
                                route: label("route"),
                                le,
                            };
                            reading.values.insert(key, b.cumulative_count());
                        }
                    }
                    "tollgate_upstream_requests_total" => {
                        let key = Series::Attempts {
                            upstream: label("upstream"),
                            target: label("target"),
                            outcome: label("outcome"),
                        };
                        reading.values.insert(key, count);
                    }
                    "tollgate_ratelimit_decisions_total" => {
                        let key = Series::Decisions {
                            policy: label("policy"),
                            result: label("result"),
                        };
                        reading.values.insert(key, count);
                    }
                    "tollgate_cache_requests_total" => {
                        let key = Series::Lookups {
                            cache: label("cache"),
                            result: label("result"),
                        };
                        reading.values.insert(key, count);
                    }
                    "tollgate_cache_entries" => {
                        let size = reading.cache_sizes.entry(label("cache")).or_default();
                        size.0 = m.get_gauge().get_value() as i64;
                    }
                    "tollgate_cache_bytes" => {
                        let size = reading.cache_sizes.entry(label("cache")).or_default();
                        size.1 = m.get_gauge().get_value() as i64;
                    }
                    _ => {}
                }
            }
        }
        reading
    }

    /// What changed from `earlier` to this reading: the series that grew, by how much. A
    /// series that shrank (a reset cannot happen, but a new registry could) counts from zero.
    fn since(&self, earlier: &Reading) -> Frame {
        let mut deltas = BTreeMap::new();
        for (series, &now) in &self.values {
            let before = earlier.values.get(series).copied().unwrap_or(0);
            let delta = if now >= before { now - before } else { now };
            if delta > 0 {
                deltas.insert(series.clone(), delta);
            }
        }
        let end = self.at.unwrap_or(SystemTime::UNIX_EPOCH);
        let start = earlier.at.unwrap_or(end);
        Frame {
            end,
            seconds: end.duration_since(start).unwrap_or_default().as_secs_f64(),
            deltas,
        }
    }
}

/// What the counters did during one step: only the series that moved.
#[derive(Debug, Clone)]
pub struct Frame {
    pub end: SystemTime,
    /// Length of the step (about [`STEP`]; shorter for the step in progress).
    pub seconds: f64,
    pub deltas: BTreeMap<Series, u64>,
}

/// The ring of frames, and the reading the next frame is counted from. Its lock is taken by
/// the sampler and the status page only, never by a request.
pub struct History {
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

struct Inner {
    last: Reading,
    frames: VecDeque<Frame>,
}

/// The frames of the last 15 minutes plus the step in progress, oldest first, and the bucket
/// bounds their `Faster` series refer to.
pub struct View {
    pub frames: Vec<Frame>,
    pub bounds: Vec<f64>,
    /// The counters now, for totals since start.
    pub now: Reading,
}

impl History {
    /// Takes the first reading: traffic from now on is counted.
    pub fn new(metrics: Arc<Metrics>) -> History {
        let last = Reading::of(&metrics.gather(), SystemTime::now());
        History {
            metrics,
            inner: Mutex::new(Inner {
                last,
                frames: VecDeque::with_capacity(FRAMES),
            }),
        }
    }

    /// Closes the step in progress: one frame more, the oldest dropped past [`FRAMES`].
    pub fn sample(&self) {
        let now = Reading::of(&self.metrics.gather(), SystemTime::now());
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let frame = now.since(&inner.last);
        if inner.frames.len() == FRAMES {
            inner.frames.pop_front();
        }
        inner.frames.push_back(frame);
        inner.last = now;
    }

    /// The kept frames and the step in progress (counted up to now, not kept).
    pub fn view(&self) -> View {
        // Gathered before the lock: the registry's own locks are never held with ours.
        let now = Reading::of(&self.metrics.gather(), SystemTime::now());
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut frames: Vec<Frame> = inner.frames.iter().cloned().collect();
        frames.push(now.since(&inner.last));
        let bounds = if now.bounds.is_empty() {
            inner.last.bounds.clone()
        } else {
            now.bounds.clone()
        };
        View {
            frames,
            bounds,
            now,
        }
    }
}

/// Samples the history every [`STEP`] for as long as the server runs.
pub struct Sampler(pub Arc<History>);

#[async_trait::async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + STEP, STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.0.sample(),
            }
        }
    }
}

/// The `q` quantile (0..1) of the requests counted in cumulative `buckets` (counts of requests
/// at most `bounds[i]` seconds) out of `total`, interpolated linearly inside the bucket as
/// Prometheus' `histogram_quantile` does; past the last bound, that bound. `None`: no requests.
pub fn quantile(q: f64, bounds: &[f64], buckets: &[u64], total: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (&upper, &count) in bounds.iter().zip(buckets) {
        if count as f64 >= rank && count > below {
            let share = (rank - below as f64) / (count - below) as f64;
            return Some(lower + (upper - lower) * share.clamp(0.0, 1.0));
        }
        below = count;
        lower = upper;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        let bounds = [0.1, 0.2, 0.4];
        // 10 requests: 5 at most 0.1 s, 9 at most 0.2 s, 10 at most 0.4 s.
        let buckets = [5, 9, 10];
        assert_eq!(quantile(0.5, &bounds, &buckets, 10), Some(0.1));
        let p90 = quantile(0.9, &bounds, &buckets, 10).unwrap();
        assert!((p90 - 0.2).abs() < 1e-9, "{p90}");
        let p99 = quantile(0.99, &bounds, &buckets, 10).unwrap();
        assert!((p99 - 0.38).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 0], 0), None);
        // Slower than every bound: the last bound, as histogram_quantile says.
        assert_eq!(quantile(0.99, &bounds, &[0, 0, 0], 3), Some(0.4));
    }

    #[test]
    fn a_frame_holds_what_moved_since_the_last_reading() {
        let metrics = Arc::new(Metrics::new());
        let history = History::new(metrics.clone());
        for status in [200, 200, 404, 503] {
            metrics.request(
                "users",
                None,
                &http::Method::GET,
                status,
                Duration::from_millis(3),
            );
        }
        history.sample();
        metrics.request(
            "users",
            None,
            &http::Method::GET,
            200,
            Duration::from_millis(3),
        );
        let view = history.view();
        assert_eq!(
            view.frames.len(),
            2,
            "one kept frame and the step in progress"
        );
        let count = |frame: &Frame, class| {
            let key = Series::Requests {
                route: "users".into(),
                class,
            };
            frame.deltas.get(&key).copied().unwrap_or(0)
        };
        let (first, current) = (&view.frames[0], &view.frames[1]);
        assert_eq!(
            (count(first, 2), count(first, 4), count(first, 5)),
            (2, 1, 1)
        );
        assert_eq!((count(current, 2), count(current, 5)), (1, 0));
        let le = view.bounds.iter().position(|&b| b >= 0.005).unwrap();
        let faster = Series::Faster {
            route: "users".into(),
            le,
        };
        assert_eq!(first.deltas.get(&faster), Some(&4));
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes() {
        let history = History::new(Arc::new(Metrics::new()));
        for _ in 0..FRAMES + 5 {
            history.sample();
        }
        assert_eq!(history.view().frames.len(), FRAMES + 1);
    }
}
