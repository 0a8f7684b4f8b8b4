//! The response cache (RFC 9111, shared, in memory): pingora-cache drives freshness,
//! coalescing (its cache lock), stale-while-revalidate, stale-if-error, revalidation with
//! 304s, HEAD from GET and ranges; Tollgate gives it a storage on moka ([`store`]), the key
//! ([`key`]), what may be stored ([`decide`]) and what the client is told (`Cache-Status`,
//! [`status`]). Every use of pingora-cache's API is in this module and in
//! `proxy/caching.rs`, which wires it into the proxy hooks; it is pinned with pingora (0.9.1).

pub mod bus;
pub mod decide;
pub mod key;
pub mod policy;
pub mod purge;
pub mod status;
pub mod store;

pub use key::EntryLabel;
pub use policy::{CachePolicy, CacheRegistry, CacheSettings};
pub use store::{MemoryStore, Purge, SURROGATE_KEY};

use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// How long one request may hold the fill of an entry before the others waiting on it compete
/// again (a stuck upstream must not stall every caller of the key).
const LOCK_AGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for another's fill before it goes upstream itself.
pub const LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The cache lock (coalescing) shared by every cache: keys carry their cache's id, so two
/// caches never share a lock.
pub fn lock() -> &'static CacheKeyLockImpl {
    static LOCK: LazyLock<&'static CacheLock> =
        LazyLock::new(|| Box::leak(CacheLock::new_boxed(LOCK_AGE_TIMEOUT)));
    *LOCK
}

/// What a request on a cached route carries through the proxy hooks.
#[derive(Debug)]
pub struct CacheUse {
    pub policy: Arc<CachePolicy>,
    /// The caller, for `scope = "consumer"`.
    pub consumer: Option<Arc<str>>,
    /// The request carried credentials (or the route authenticates).
    pub credentials: bool,
    /// Why the response was not stored, for `Cache-Status`.
    pub pass: Option<&'static str>,
    /// The response was handed to the store.
    pub stored: bool,
    /// A stale entry was served because the upstream failed.
    pub stale_on_error: bool,
    /// The request was not a GET or HEAD: the cache is not used, and a success invalidates.
    pub unsafe_method: bool,
    /// The cache's phase when the request went upstream or its answer began: pingora-cache
    /// turns itself off when a request then fails (the upstream, or the client going away),
    /// and the request is still counted by what the lookup found.
    pub seen: Option<pingora::cache::CachePhase>,
}
