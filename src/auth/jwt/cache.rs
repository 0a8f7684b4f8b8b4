//! The verified-token cache of one verifier: SHA-256 of a token (never the token itself) to its
//! verified claims, so a mobile client sending the same token on every request costs one hash
//! and one lookup instead of a signature check.
//!
//! An entry never outlives the token's `exp` (nor [`MAX_TTL`]); memory is bounded by weight,
//! one unit per started KiB of token. Only successes are cached. A hit is checked again for
//! time (`exp`, `nbf`) and for its key still being in the key set.

use super::claims::Claims;
use moka::sync::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// No entry lives longer than this, whatever its `exp` says.
pub const MAX_TTL: Duration = Duration::from_secs(600);

pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A verified token.
pub struct Entry {
    pub claims: Arc<Claims>,
    pub exp: u64,
    pub nbf: Option<u64>,
    /// Identity of the key that verified the signature.
    pub key_id: [u8; 32],
    /// Key-set generation at which the key was last seen present.
    pub generation: AtomicU64,
    weight: u32,
    /// Time to live from insertion: until `exp`, at most [`MAX_TTL`].
    ttl: Duration,
}

pub struct TokenCache {
    cache: Cache<TokenHash, Arc<Entry>>,
}

struct UntilExp;

impl Expiry<TokenHash, Arc<Entry>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl TokenCache {
    /// A cache of `capacity` units (one per started KiB of token).
    pub fn new(capacity: u64) -> TokenCache {
        TokenCache {
            cache: Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, e: &Arc<Entry>| e.weight)
                .expire_after(UntilExp)
                .build(),
        }
    }

    pub fn get(&self, hash: &TokenHash) -> Option<Arc<Entry>> {
        self.cache.get(hash)
    }

    pub fn remove(&self, hash: &TokenHash) {
        self.cache.invalidate(hash);
    }

    /// Caches a verified token unless it expires within the second (`now` in Unix seconds).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        hash: TokenHash,
        token_len: usize,
        claims: Arc<Claims>,
        exp: u64,
        nbf: Option<u64>,
        key_id: [u8; 32],
        generation: u64,
        now: u64,
    ) {
        let ttl = Duration::from_secs(exp.saturating_sub(now)).min(MAX_TTL);
        if ttl.is_zero() {
            return;
        }
        let weight = u32::try_from(token_len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let entry = Entry {
            claims,
            exp,
            nbf,
            key_id,
            generation: AtomicU64::new(generation),
            weight,
            ttl,
        };
        self.cache.insert(hash, Arc::new(entry));
    }

    #[cfg(test)]
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

impl Entry {
    /// Whether the verifying key is still in a set of generation `current`, asking `present`
    /// only when the generation moved since the last check.
    pub fn key_still_present(&self, current: u64, present: impl FnOnce(&[u8; 32]) -> bool) -> bool {
        if self.generation.load(Ordering::Relaxed) == current {
            return true;
        }
        if present(&self.key_id) {
            self.generation.store(current, Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Arc<Claims> {
        Arc::new(Claims::new(serde_json::Map::new()))
    }

    #[test]
    fn entries_expire_with_the_token_and_are_never_cached_when_expiring() {
        let cache = TokenCache::new(10);
        let now = 1_000_000;
        cache.insert(
            token_hash("a"),
            100,
            claims(),
            now + 1,
            None,
            [0; 32],
            1,
            now,
        );
        cache.insert(token_hash("b"), 100, claims(), now, None, [0; 32], 1, now);
        assert!(cache.get(&token_hash("a")).is_some());
        assert!(cache.get(&token_hash("b")).is_none(), "exp now: not cached");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(cache.get(&token_hash("a")).is_none(), "gone with its exp");
    }

    #[test]
    fn capacity_is_counted_in_kib_of_token() {
        let cache = TokenCache::new(8);
        let now = 1_000_000;
        for i in 0..20 {
            cache.insert(
                token_hash(&i.to_string()),
                2048,
                claims(),
                now + 60,
                None,
                [0; 32],
                1,
                now,
            );
        }
        assert!(cache.entry_count() <= 4, "{}", cache.entry_count());
    }

    #[test]
    fn key_presence_is_rechecked_only_when_the_generation_moves() {
        let cache = TokenCache::new(10);
        cache.insert(
            token_hash("t"),
            10,
            claims(),
            2_000_000,
            None,
            [9; 32],
            3,
            1_000_000,
        );
        let e = cache.get(&token_hash("t")).unwrap();
        assert!(e.key_still_present(3, |_| unreachable!("same generation: no lookup")));
        assert!(e.key_still_present(4, |id| *id == [9; 32]));
        assert!(e.key_still_present(4, |_| unreachable!("generation 4 already checked")));
        assert!(!e.key_still_present(5, |_| false));
    }
}
