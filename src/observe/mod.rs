//! Observability: Prometheus metrics, the per-request access log, and the gateway's own log
//! (tracing) set up from `[log]`.

mod abuse_metrics;
mod access_log;
mod cache_metrics;
mod log_throttle;
mod logging;
mod metrics;
mod throttle;

pub use abuse_metrics::{AbuseMetrics, CANCEL_REASONS, CONNECTION_REFUSALS, CUT_REASONS};
pub use access_log::{AccessLog, AccessRecord, IpText};
pub use cache_metrics::{CacheMetrics, ResultCounters};
pub use log_throttle::{bounded, BurstThrottle, ThrottleLayer, Verdict, LINES_PER_SECOND};
pub use logging::init_logging;
pub use metrics::{AttemptMetrics, Metrics, Rejection, RouteMetrics, UpstreamOutcome};
pub use throttle::LogThrottle;
