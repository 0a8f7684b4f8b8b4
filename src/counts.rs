//! Counts of things held per key (requests in flight per client, connections per address),
//! taken with a limit and given back by dropping the ticket, however the holder ends.
//! Sharded maps under short locks (never held across an await); a key whose count returns to
//! zero is removed, so memory follows what is held, not who was ever seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Per-key counts with a limit applied at [`Counts::try_take`].
pub struct Counts<K> {
    shards: Box<[Mutex<HashMap<K, u64>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn shard(&self, key: &K) -> &Mutex<HashMap<K, u64>> {
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
    fn keys_at_zero_are_forgotten() {
        let c = Arc::new(Counts::<u32>::default());
        drop(c.try_take(5, 1).unwrap());
        assert!(c.try_take(6, 0).is_none());
        assert!(c.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
