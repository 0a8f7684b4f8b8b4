//! A sliding time window of two counters (successes and failures for a circuit breaker,
//! requests and retries for a retry budget), fixed in size whatever the traffic.

use std::time::{Duration, Instant};

/// Buckets in a sliding window. Ten keeps the window's edge within 10% of its nominal length
/// while a full scan stays a handful of nanoseconds.
pub const BUCKETS: usize = 10;

/// A sliding window of two counters, as a ring of [`BUCKETS`] time buckets: no event list, fixed
/// size, and old counts drop out one bucket (a tenth of the window) at a time.
///
/// Bucket `n` covers `[origin + n·width, origin + (n+1)·width)`; slot `n % BUCKETS` holds it and
/// remembers `n`, so a slot last written a full turn ago reads as empty without anyone having to
/// sweep it. A `now` slightly behind the newest bucket seen (two threads reading the clock in one
/// order and taking the lock in the other) is treated as the newest bucket.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    origin: Instant,
    width_nanos: u128,
    newest: u64,
    slots: [Slot; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    bucket: u64,
    counts: [u32; 2],
}

impl Window {
    pub(crate) fn new(window: Duration, now: Instant) -> Window {
        Window {
            origin: now,
            width_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            newest: 0,
            slots: [Slot::default(); BUCKETS],
        }
    }

    fn bucket(&mut self, now: Instant) -> u64 {
        let n = now.saturating_duration_since(self.origin).as_nanos() / self.width_nanos;
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.newest = self.newest.max(n);
        self.newest
    }

    /// Adds `delta` to the counters of the bucket holding `now` (saturating: a bucket full at
    /// `u32::MAX` is far past any threshold anyway).
    pub(crate) fn add(&mut self, now: Instant, delta: [u32; 2]) {
        let n = self.bucket(now);
        let slot = &mut self.slots[(n % BUCKETS as u64) as usize];
        if slot.bucket != n {
            *slot = Slot {
                bucket: n,
                counts: [0, 0],
            };
        }
        slot.counts[0] = slot.counts[0].saturating_add(delta[0]);
        slot.counts[1] = slot.counts[1].saturating_add(delta[1]);
    }

    /// Both counters summed over the buckets of the last `window` ending at `now`.
    pub(crate) fn totals(&mut self, now: Instant) -> [u64; 2] {
        let n = self.bucket(now);
        let mut sum = [0u64; 2];
        for slot in &self.slots {
            // `n - slot.bucket < BUCKETS`, written so it cannot underflow (slots never hold a
            // bucket newer than `newest`, but be safe).
            if slot.bucket <= n && n - slot.bucket < BUCKETS as u64 {
                sum[0] += u64::from(slot.counts[0]);
                sum[1] += u64::from(slot.counts[1]);
            }
        }
        sum
    }

    /// Forgets every count (a freshly closed circuit starts with an empty window).
    pub(crate) fn clear(&mut self, now: Instant) {
        let n = self.bucket(now);
        self.slots = [Slot {
            bucket: n,
            counts: [0, 0],
        }; BUCKETS];
    }
}
