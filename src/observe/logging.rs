//! The gateway's own log (start-up, reloads, upstream trouble) on stderr, as JSON or text per
//! `[log] format`, filtered by `[log] level`. Pingora's `log` records are bridged in. WARN and
//! ERROR lines go through the log throttle (`log_throttle.rs`).

use super::log_throttle::ThrottleLayer;
use crate::config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call twice (the second call does nothing), which
/// matters for tests that start several gateways in one process.
pub fn init_logging(format: LogFormat, level: &str) {
    let mut filter = EnvFilter::builder()
        .parse(level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // pingora-cache warns once that header compression has no dictionary (irrelevant to a
    // store in memory), and pingora-proxy warns on every request served stale on an upstream
    // error: during an outage that is one line per request, when `Cache-Status` and
    // `tollgate_cache_requests_total{result="stale"}` already tell it. Their errors still show.
    for quiet in [
        "pingora_cache::meta=error",
        "pingora_proxy::proxy_cache=error",
    ] {
        if !level.contains(quiet.split('=').next().unwrap_or_default()) {
            if let Ok(directive) = quiet.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    // WARN and ERROR lines are rate-limited per kind before any formatting (log_throttle.rs).
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(ThrottleLayer::new())
            .try_init(),
        LogFormat::Text => builder.finish().with(ThrottleLayer::new()).try_init(),
    };
}
