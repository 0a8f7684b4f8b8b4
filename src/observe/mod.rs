//! Observability: Prometheus metrics, the per-request access log, and the gateway's own log
//! (tracing) set up from `[log]`.

mod access_log;
mod cache_metrics;
mod logging;
mod metrics;
mod throttle;

pub use access_log::{write_ip, AccessLog, AccessRecord};
pub use cache_metrics::CacheMetrics;
pub use logging::init_logging;
pub use metrics::{Metrics, Rejection, UpstreamOutcome};
pub use throttle::LogThrottle;
