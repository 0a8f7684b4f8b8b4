//! Observability: Prometheus metrics, the per-request access log, and the gateway's own log
//! (tracing) set up from `[log]`.

mod access_log;
mod cache_metrics;
mod logging;
mod metrics;
mod throttle;

pub use access_log::{AccessLog, AccessRecord, IpText};
pub use cache_metrics::CacheMetrics;
pub use logging::init_logging;
pub use metrics::{AttemptMetrics, Metrics, Rejection, RouteMetrics, UpstreamOutcome};
pub use throttle::LogThrottle;
