//! At most one log line per kind per second. Under attack the same failure repeats thousands
//! of times a second (a flood of malformed requests, a broken upstream answering garbage): one
//! line says it happens, a counter says how often, and the log stays readable and cheap.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Kinds share a slot when their hashes collide; with few kinds (error types) that is rare and
/// only merges their budgets.
const SLOTS: usize = 64;

pub struct LogThrottle {
    start: Instant,
    /// Per slot: the second (since `start`, plus one) of the last line let through.
    last: [AtomicU64; SLOTS],
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

impl LogThrottle {
    pub fn new() -> LogThrottle {
        LogThrottle {
            start: Instant::now(),
            last: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Whether a line of this kind may be written now; `false` means it is suppressed.
    /// Lock-free: one load, and one compare-and-swap for the line that gets through.
    pub fn allow(&self, kind: &str) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        kind.hash(&mut hasher);
        let slot = &self.last[hasher.finish() as usize % SLOTS];
        let second = self.start.elapsed().as_secs() + 1;
        let seen = slot.load(Ordering::Relaxed);
        seen != second
            && slot
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_second() {
        let t = LogThrottle::new();
        assert!(t.allow("ConnectRefused"));
        assert!(!t.allow("ConnectRefused"));
        assert!(!t.allow("ConnectRefused"));
        assert!(t.allow("ReadTimedout"));
        // Many threads at once: still one line.
        let t = std::sync::Arc::new(LogThrottle::new());
        let allowed: usize = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..1000).filter(|_| t.allow("x")).count())
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(allowed, 1);
    }

    #[test]
    fn the_next_second_lets_one_more_through() {
        let t = LogThrottle {
            start: Instant::now() - std::time::Duration::from_millis(999),
            last: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        assert!(t.allow("k"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(t.allow("k"));
        assert!(!t.allow("k"));
    }
}
