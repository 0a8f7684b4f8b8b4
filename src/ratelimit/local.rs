//! This instance's own buckets for one limit: a keyed GCRA store with peek-then-commit, so a
//! request checked against several limits consumes from none of them unless all admit it.
//!
//! Each key holds one atomic TAT (see [`super::gcra`]) in a bounded `moka` cache. An entry idle
//! for `emission_interval × burst` is evicted: by then its TAT is in the past, which is exactly a
//! full bucket, so eviction never changes a decision. The capacity bound is a backstop against
//! key floods inside that window: evicting a busy key early hands it a full bucket again.

use super::gcra::{self, Outcome, Quota};
use moka::sync::Cache;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Keys one limit tracks at most. Measured at about 150 bytes per key (benches/ratelimit.rs),
/// so a flood of distinct keys costs at most ~150 MiB per limit.
pub const MAX_KEYS: u64 = 1_000_000;

/// Nanoseconds on this process's monotonic clock (the epoch is the first call).
pub fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One limit's buckets on this instance.
pub struct LocalBuckets {
    quota: Quota,
    /// Keys are 64-bit hashes of the bucket key under a per-process random SipHash key: fixed
    /// size whatever the header or claim length, and collisions cannot be aimed at by a client.
    cells: Cache<u64, Arc<AtomicU64>>,
    hasher: RandomState,
}

/// A bucket looked at, not yet charged.
pub struct Peeked {
    cell: Arc<AtomicU64>,
    pub outcome: Outcome,
}

impl LocalBuckets {
    pub fn new(quota: Quota) -> LocalBuckets {
        LocalBuckets::with_capacity(quota, MAX_KEYS)
    }

    pub fn with_capacity(quota: Quota, capacity: u64) -> LocalBuckets {
        let refill = quota.emission_interval() + quota.tolerance();
        LocalBuckets {
            quota,
            cells: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(refill.max(Duration::from_millis(1)))
                .build(),
            hasher: RandomState::new(),
        }
    }

    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Distinct keys held now (approximate: eviction runs lazily).
    pub fn len(&self) -> u64 {
        self.cells.run_pending_tasks();
        self.cells.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a request with this key would get at `now`, without charging it. `None` is the
    /// one bucket shared by the requests that lack the key.
    pub fn peek(&self, key: Option<&[u8]>, now: u64) -> Peeked {
        let cell = self
            .cells
            .get_with(self.hasher.hash_one(key), || Arc::new(AtomicU64::new(0)));
        let tat = cell.load(Ordering::Acquire);
        let (outcome, _) = gcra::check(&self.quota, Some(tat), now);
        Peeked { cell, outcome }
    }

    /// Charges a peeked bucket, checking again atomically: another request may have taken the
    /// last token since the peek. `Err` carries the rejection; nothing was charged then.
    pub fn commit(&self, peeked: &Peeked, now: u64) -> Result<Outcome, Outcome> {
        let mut outcome = peeked.outcome;
        let result = peeked
            .cell
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                let (o, new_tat) = gcra::check(&self.quota, Some(tat), now);
                outcome = o;
                new_tat
            });
        match result {
            Ok(_) => Ok(outcome),
            Err(_) => Err(outcome),
        }
    }

    /// Gives back a committed request (another limit refused it after all).
    pub fn refund(&self, peeked: &Peeked) {
        let _ = peeked
            .cell
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(gcra::refund(&self.quota, tat))
            });
    }

    /// Peek and commit in one step: one limit alone.
    pub fn check(&self, key: Option<&[u8]>, now: u64) -> Outcome {
        let peeked = self.peek(key, now);
        if !peeked.outcome.allowed {
            return peeked.outcome;
        }
        self.commit(&peeked, now).unwrap_or_else(|o| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(requests: u64, burst: u64) -> LocalBuckets {
        LocalBuckets::new(Quota {
            requests,
            per: Duration::from_secs(1),
            burst,
        })
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let b = buckets(10, 2);
        let now = 1_000;
        assert!(b.check(Some(b"a"), now).allowed);
        assert!(b.check(Some(b"a"), now).allowed);
        assert!(!b.check(Some(b"a"), now).allowed);
        assert!(b.check(Some(b"b"), now).allowed);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn peek_charges_nothing_and_refund_gives_back() {
        let b = buckets(10, 1);
        let now = 5_000;
        for _ in 0..3 {
            assert!(b.peek(Some(b"k"), now).outcome.allowed);
        }
        let p = b.peek(Some(b"k"), now);
        assert_eq!(b.commit(&p, now).map(|o| o.remaining), Ok(0));
        // A stale peek cannot charge twice: the commit checks again.
        assert!(b.commit(&p, now).is_err());
        b.refund(&p);
        assert!(b.check(Some(b"k"), now).allowed);
    }

    #[test]
    fn capacity_bounds_the_number_of_keys() {
        let b = LocalBuckets::with_capacity(
            Quota {
                requests: 1,
                per: Duration::from_secs(3600),
                burst: 1,
            },
            100,
        );
        for i in 0u32..1_000 {
            b.check(Some(&i.to_be_bytes()), 1);
        }
        assert!(b.len() <= 100, "{} keys kept", b.len());
    }
}
