//! Counts of things held per key (requests in flight per client, connections per address),
//! taken with a limit and given back by dropping the ticket, however the holder ends.
//! Sharded maps under short locks (never held across an await); a key whose count returns to
//! zero is removed, so memory follows what is held, not who was ever seen. [`Total`] is the
//! same without a key: one atomic count.
//!
//! Keys (client addresses) are chosen by clients: the maps hash with foldhash seeded at random
//! per map (hashbrown's default), not guessable from outside, and a fraction of SipHash's cost;
//! a map holds at most the requests or connections in flight, so even a collision flood is
//! bounded work.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

type Hasher = foldhash::fast::RandomState;

/// Per-key counts with a limit applied at [`Counts::try_take`].
pub struct Counts<K> {
    shards: Box<[Mutex<HashMap<K, u64, Hasher>>]>,
    hasher: Hasher,
}

impl<K: Hash + Eq + Clone> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: Default::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn shard(&self, key: &K) -> &Mutex<HashMap<K, u64, Hasher>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// One more for `key`, unless it already holds `limit`: `None` then.
    pub fn try_take(self: &Arc<Self>, key: K, limit: u64) -> Option<Ticket<K>> {
        let mut map = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                map.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Ticket {
            counts: self.clone(),
            key: Some(key),
        })
    }

    /// What `key` holds now.
    #[cfg(test)]
    pub fn get(&self, key: &K) -> u64 {
        let map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().unwrap_or(0)
    }

    fn give_back(&self, key: &K) {
        let mut map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }
}

/// One unit held for a key; dropping it gives it back.
pub struct Ticket<K: Hash + Eq + Clone> {
    counts: Arc<Counts<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Drop for Ticket<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.counts.give_back(&key);
        }
    }
}

/// One count for everything, with a limit applied at [`Total::try_take`].
#[derive(Default)]
pub struct Total(AtomicU64);

impl Total {
    /// One more, unless `limit` are already held: `None` then.
    pub fn try_take(self: &Arc<Self>, limit: u64) -> Option<TotalTicket> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(TotalTicket(self.clone()))
    }

    /// What is held now.
    #[cfg(test)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// One unit of a [`Total`]; dropping it gives it back.
pub struct TotalTicket(Arc<Total>);

impl Drop for TotalTicket {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_limit_and_gets_it_back() {
        let c = Arc::new(Counts::<u32>::default());
        let a = c.try_take(1, 2).unwrap();
        let _b = c.try_take(1, 2).unwrap();
        assert!(c.try_take(1, 2).is_none());
        assert!(c.try_take(2, 2).is_some(), "another key has its own count");
        drop(a);
        assert_eq!(c.get(&1), 1);
        assert!(c.try_take(1, 2).is_some());
    }

    #[test]
    fn the_total_holds_at_most_its_limit_and_gets_it_back() {
        let t = Arc::new(Total::default());
        let a = t.try_take(2).unwrap();
        let _b = t.try_take(2).unwrap();
        assert!(t.try_take(2).is_none());
        assert_eq!(t.get(), 2, "a refusal takes nothing");
        drop(a);
        assert_eq!(t.get(), 1);
        assert!(t.try_take(2).is_some());
    }

    #[test]
    fn keys_at_zero_are_forgotten() {
        let c = Arc::new(Counts::<u32>::default());
        drop(c.try_take(5, 1).unwrap());
        assert!(c.try_take(6, 0).is_none());
        assert!(c.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
