//! This instance's own buckets for one limit: a keyed GCRA store with peek-then-commit, so a
//! request checked against several limits consumes from none of them unless all admit it.
//!
//! Each key holds one TAT (see [`super::gcra`]) in a sharded hash map: 16 bytes of payload per
//! key. A TAT in the past is exactly a full bucket, so such entries are dropped by a sweep that
//! runs whenever a shard has doubled since its last sweep (amortised O(1), and it never changes
//! a decision): idle keys cost nothing for long. A shard that is still full after sweeping (a
//! flood of distinct keys within one refill time) admits no new key: new keys share the limit's
//! one overflow bucket until space frees up, so memory stays bounded and a flood is limited
//! together rather than let through.

use super::gcra::{self, Outcome, Quota};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Keys one limit tracks at most (about 40 MiB of map per million keys, see
/// benches/ratelimit.rs).
pub const MAX_KEYS: u64 = 2_000_000;
const SHARDS: usize = 64;
/// A shard is swept when it reaches this size the first time.
const FIRST_SWEEP: usize = 1024;
/// The keys of the overflow bucket and of the bucket of requests without the key (hash values
/// reserved for them; the hashes of real keys are capped below).
const OVERFLOW: u64 = u64::MAX;
const MISSING: u64 = u64::MAX - 1;
/// A full shard is swept at most this often (nanoseconds) when a new key knocks.
const FULL_SWEEP_EVERY: u64 = 100_000_000;

/// Nanoseconds on this process's monotonic clock (the epoch is the first call).
pub fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // +1: a TAT of 0 stands for "no history", which must be in the past from the first call.
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
}

/// The map keys are already SipHash values: hashing them again would only cost time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Shard {
    tats: HashMap<u64, u64, BuildHasherDefault<Prehashed>>,
    /// Size at which the next sweep runs.
    sweep_at: usize,
    /// While full: when a new key may trigger the next sweep.
    next_full_sweep: u64,
}

impl Shard {
    /// Drops full buckets (TAT in the past): forgetting them changes no decision.
    fn sweep(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
        self.sweep_at = (self.tats.len() * 2).max(FIRST_SWEEP);
    }
}

/// One limit's buckets on this instance.
pub struct LocalBuckets {
    quota: Quota,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Keys are 64-bit hashes of the bucket key under a per-process random SipHash key: fixed
    /// size whatever the header or claim length, and collisions cannot be aimed at by a client.
    hasher: RandomState,
}

/// A bucket looked at, not yet charged.
pub struct Peeked {
    key: u64,
    pub outcome: Outcome,
}

impl LocalBuckets {
    pub fn new(quota: Quota) -> LocalBuckets {
        LocalBuckets::with_capacity(quota, MAX_KEYS)
    }

    pub fn with_capacity(quota: Quota, capacity: u64) -> LocalBuckets {
        let per_shard = usize::try_from(capacity / SHARDS as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        LocalBuckets {
            quota,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Keys held now (full buckets not yet swept included).
    pub fn len(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).tats.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // The high bits pick the shard; the map uses the whole value.
        lock(&self.shards[(key >> 58) as usize % SHARDS])
    }

    /// What a request with this key would get at `now`, without charging it. `None` is the
    /// one bucket shared by the requests that lack the key.
    pub fn peek(&self, key: Option<&[u8]>, now: u64) -> Peeked {
        let mut key = match key {
            Some(k) => self.hasher.hash_one(k).min(MISSING - 1),
            None => MISSING,
        };
        let mut shard = self.shard(key);
        let tat = match shard.tats.get(&key) {
            Some(tat) => *tat,
            None if shard.tats.len() >= self.per_shard && key != MISSING => {
                if now >= shard.next_full_sweep {
                    shard.sweep(now);
                    shard.next_full_sweep = now.saturating_add(FULL_SWEEP_EVERY);
                }
                if shard.tats.len() >= self.per_shard {
                    key = OVERFLOW;
                    drop(shard);
                    self.shard(key).tats.get(&key).copied().unwrap_or(0)
                } else {
                    0
                }
            }
            None => 0,
        };
        let (outcome, _) = gcra::check(&self.quota, Some(tat), now);
        Peeked { key, outcome }
    }

    /// Charges a peeked bucket, checking again: another request may have taken the last token
    /// since the peek. `Err` carries the rejection; nothing was charged then.
    pub fn commit(&self, peeked: &Peeked, now: u64) -> Result<Outcome, Outcome> {
        let mut shard = self.shard(peeked.key);
        let tat = shard.tats.get(&peeked.key).copied().unwrap_or(0);
        let (outcome, new_tat) = gcra::check(&self.quota, Some(tat), now);
        let Some(new_tat) = new_tat else {
            return Err(outcome);
        };
        if shard.tats.len() >= shard.sweep_at {
            shard.sweep(now);
        }
        shard.tats.insert(peeked.key, new_tat);
        Ok(outcome)
    }

    /// Gives back a committed request (another limit refused it after all).
    pub fn refund(&self, peeked: &Peeked) {
        let mut shard = self.shard(peeked.key);
        if let Some(tat) = shard.tats.get_mut(&peeked.key) {
            *tat = gcra::refund(&self.quota, *tat);
        }
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

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn full_buckets_are_swept_and_new_keys_share_the_overflow_bucket_while_full() {
        let b = LocalBuckets::with_capacity(
            Quota {
                requests: 1,
                per: Duration::from_secs(1),
                burst: 1,
            },
            SHARDS as u64 * 2,
        );
        let sec = 1_000_000_000;
        // Fill every shard: far more distinct keys than the capacity.
        let mut overflowed = 0;
        for i in 0u32..10_000 {
            if !b.check(Some(&i.to_be_bytes()), sec).allowed {
                overflowed += 1;
            }
        }
        // New keys beyond the capacity were all charged to one overflow bucket.
        assert!(overflowed >= 10_000 - SHARDS as u32 * 2 - 1, "{overflowed}");
        assert!(b.len() <= SHARDS as u64 * 2 + 1, "{} keys kept", b.len());
        // A refill time later every bucket is full again: swept, room for new keys.
        assert!(b.check(Some(b"late"), 3 * sec).allowed);
        assert!(!b.check(Some(b"late"), 3 * sec).allowed);
    }

    #[test]
    fn missing_key_bucket_is_its_own() {
        let b = buckets(10, 1);
        assert!(b.check(None, 100).allowed);
        assert!(!b.check(None, 100).allowed);
        assert!(b.check(Some(b""), 100).allowed);
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
