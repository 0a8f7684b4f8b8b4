//! A rate limit on the gateway's own log, for WARN and ERROR events of every crate (Pingora's
//! and h2's through the `log` bridge included): per kind of line (its source location), the
//! first [`LINES_PER_SECOND`] each second are written, the rest counted; the next line of that
//! kind written in a later second is preceded by one summary line with the count. The counts
//! are also a metric, `tollgate_log_events_suppressed_total{source, level}`.
//!
//! Why: under attack one failure repeats thousands of times a second (a client resetting
//! streams, an upstream answering garbage), and a line per occurrence made tens of megabytes a
//! minute. What each line quotes is bounded elsewhere ([`bounded`]).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

/// Lines of one kind written per second before the rest are suppressed.
pub const LINES_PER_SECOND: u32 = 10;
/// The target of the summary lines (never throttled themselves).
pub const SUMMARY_TARGET: &str = "tollgate::log_throttle";

/// Kinds share a slot when their hashes collide: that only merges their budgets.
const SLOTS: usize = 256;

#[derive(Default)]
struct Slot {
    /// The second (since the throttle's start, plus one) the counts below belong to.
    second: AtomicU64,
    /// Lines written in that second.
    written: AtomicU32,
    /// Lines suppressed since the last line written.
    suppressed: AtomicU64,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed_before` lines of its kind were held back since the last one
    /// written (write a summary first when it is not zero).
    Write {
        suppressed_before: u64,
    },
    Suppress,
}

/// The first `per_second` lines per kind per second. Lock-free.
pub struct BurstThrottle {
    start: Instant,
    per_second: u32,
    slots: Box<[Slot]>,
}

impl BurstThrottle {
    pub fn new(per_second: u32) -> BurstThrottle {
        BurstThrottle {
            start: Instant::now(),
            per_second: per_second.max(1),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    pub fn check(&self, kind: u64) -> Verdict {
        let slot = &self.slots[kind as usize % SLOTS];
        let now = self.start.elapsed().as_secs() + 1;
        let seen = slot.second.load(Ordering::Relaxed);
        if seen != now
            && slot
                .second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.written.store(1, Ordering::Relaxed);
            let before = slot.suppressed.swap(0, Ordering::Relaxed);
            return Verdict::Write {
                suppressed_before: before,
            };
        }
        if slot.written.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Verdict::Write {
                suppressed_before: 0,
            }
        } else {
            slot.suppressed.fetch_add(1, Ordering::Relaxed);
            Verdict::Suppress
        }
    }
}

/// Suppressed events by (source crate, level), for the metric. Process-wide, as the log is.
static SUPPRESSED: LazyLock<Mutex<HashMap<(String, &'static str), u64>>> =
    LazyLock::new(Default::default);

fn count_suppressed(target: &str, level: &Level) {
    // The crate is the label: a bounded set, whatever the target's full path.
    let source = target.split("::").next().unwrap_or(target);
    let level = if *level == Level::ERROR {
        "error"
    } else {
        "warn"
    };
    let mut map = SUPPRESSED.lock().unwrap_or_else(|p| p.into_inner());
    match map.get_mut(&(source.to_string(), level)) {
        Some(n) => *n += 1,
        None => {
            map.insert((source.to_string(), level), 1);
        }
    }
}

/// The tracing layer: decides, before any layer formats an event, whether it is written.
pub struct ThrottleLayer {
    throttle: BurstThrottle,
}

impl ThrottleLayer {
    pub fn new() -> ThrottleLayer {
        ThrottleLayer {
            throttle: BurstThrottle::new(LINES_PER_SECOND),
        }
    }
}

impl Default for ThrottleLayer {
    fn default() -> Self {
        ThrottleLayer::new()
    }
}

impl<S: Subscriber> Layer<S> for ThrottleLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        // `log` records (Pingora's) all arrive through one callsite: their own location is in
        // the normalized metadata.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if *meta.level() > Level::WARN || meta.target() == SUMMARY_TARGET {
            return true;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            meta.target(),
            meta.file(),
            meta.line(),
            meta.level().as_str(),
        )
            .hash(&mut hasher);
        match self.throttle.check(hasher.finish()) {
            Verdict::Write { suppressed_before } => {
                if suppressed_before > 0 {
                    let at = format!(
                        "{}:{}",
                        meta.file().unwrap_or("?"),
                        meta.line().unwrap_or(0)
                    );
                    tracing::warn!(
                        target: SUMMARY_TARGET,
                        suppressed = suppressed_before,
                        source = meta.target(),
                        at = at.as_str(),
                        "log lines of this kind suppressed since the last one written"
                    );
                }
                true
            }
            Verdict::Suppress => {
                count_suppressed(meta.target(), meta.level());
                false
            }
        }
    }
}

/// `tollgate_log_events_suppressed_total{source, level}` from the process-wide counts, for a
/// gateway's registry.
#[derive(Clone)]
pub struct SuppressedLogCollector {
    template: IntCounterVec,
}

impl SuppressedLogCollector {
    pub fn new() -> SuppressedLogCollector {
        SuppressedLogCollector {
            template: IntCounterVec::new(
                Opts::new(
                    "tollgate_log_events_suppressed_total",
                    "WARN and ERROR log lines held back by the log throttle (over 10 per second of one kind), by source crate and level.",
                ),
                &["source", "level"],
            )
            .expect("static metric definition"),
        }
    }
}

impl Default for SuppressedLogCollector {
    fn default() -> Self {
        SuppressedLogCollector::new()
    }
}

impl Collector for SuppressedLogCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = self.template.clone();
        now.reset();
        let map = SUPPRESSED.lock().unwrap_or_else(|p| p.into_inner());
        for ((source, level), n) in map.iter() {
            now.with_label_values(&[source.as_str(), level]).inc_by(*n);
        }
        now.collect()
    }
}

/// Text for a log line that may come from a peer (an upstream's garbage, a client's bytes):
/// at most `max` characters, anything but printable ASCII escaped, and how much was left out.
pub fn bounded(text: &dyn std::fmt::Display, max: usize) -> String {
    let full = text.to_string();
    let mut out = String::with_capacity(max.min(full.len()) + 16);
    for (used, (i, c)) in full.char_indices().enumerate() {
        if used >= max {
            let _ = write!(out, "...(+{} bytes)", full.len() - i);
            return out;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            let _ = write!(out, "{}", c.escape_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_pass_then_a_count() {
        let t = BurstThrottle::new(3);
        assert_eq!(
            t.check(7),
            Verdict::Write {
                suppressed_before: 0
            }
        );
        assert!(matches!(t.check(7), Verdict::Write { .. }));
        assert!(matches!(t.check(7), Verdict::Write { .. }));
        assert_eq!(t.check(7), Verdict::Suppress);
        assert_eq!(t.check(7), Verdict::Suppress);
        // Another kind has its own budget.
        assert!(matches!(t.check(8), Verdict::Write { .. }));
    }

    #[test]
    fn the_next_second_reports_what_was_held_back() {
        let t = BurstThrottle {
            start: Instant::now() - std::time::Duration::from_millis(990),
            per_second: 1,
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        };
        assert!(matches!(t.check(1), Verdict::Write { .. }));
        assert_eq!(t.check(1), Verdict::Suppress);
        assert_eq!(t.check(1), Verdict::Suppress);
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(
            t.check(1),
            Verdict::Write {
                suppressed_before: 2
            }
        );
    }

    #[test]
    fn peer_bytes_are_escaped_and_cut() {
        assert_eq!(bounded(&"ok text", 64), "ok text");
        assert_eq!(bounded(&"a\r\nb\u{1b}", 64), "a\\r\\nb\\u{1b}");
        let long = "x".repeat(500);
        let b = bounded(&long, 10);
        assert_eq!(b, format!("{}...(+490 bytes)", "x".repeat(10)));
    }
}
