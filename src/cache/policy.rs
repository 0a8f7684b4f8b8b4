//! A compiled `[caches.NAME]`: the settings one cache applies, and the state that lives as long
//! as some snapshot uses those settings (its entries in the shared store).

use super::store::MemoryStore;
use crate::config::{CacheConfig, CacheQuery, CacheScope, DEFAULT_MAX_ENTRY};
use crate::observe::ResultCounters;
use crate::registry::Registry;
use http::HeaderName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `max_ttl` when absent.
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// `statuses` when absent: the final statuses RFC 9110 §15.1 calls heuristically cacheable,
/// minus the ones that are parts of a response (206) or only concern one client (405, 414...).
pub const DEFAULT_STATUSES: [u16; 6] = [200, 203, 204, 301, 404, 410];

/// One cache's settings, as the file gives them (after defaults): what identifies its entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheSettings {
    pub name: Arc<str>,
    /// Freshness when the upstream gives none; `None`: such responses are not stored.
    pub ttl: Option<Duration>,
    pub max_ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub statuses: Vec<u16>,
    /// Request headers in the key, lower case.
    pub vary: Vec<HeaderName>,
    pub query: CacheQuery,
    pub scope: CacheScope,
    pub max_entry: u64,
}

impl CacheSettings {
    pub fn compile(name: &str, cfg: &CacheConfig) -> CacheSettings {
        let mut vary: Vec<HeaderName> = cfg
            .vary
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        vary.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        vary.dedup();
        let query = match &cfg.query {
            CacheQuery::Only(names) => {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                CacheQuery::Only(names)
            }
            other => other.clone(),
        };
        CacheSettings {
            name: Arc::from(name),
            ttl: cfg.ttl.map(|t| t.get()),
            max_ttl: cfg.max_ttl.map_or(DEFAULT_MAX_TTL, |t| t.get()),
            stale_while_revalidate: cfg
                .stale_while_revalidate
                .map_or(Duration::ZERO, |t| t.get()),
            stale_if_error: cfg.stale_if_error.map_or(Duration::ZERO, |t| t.get()),
            statuses: cfg
                .statuses
                .clone()
                .unwrap_or_else(|| DEFAULT_STATUSES.to_vec()),
            vary,
            query,
            scope: cfg.scope,
            max_entry: cfg.max_entry.map_or(DEFAULT_MAX_ENTRY, |s| s.bytes()),
        }
    }
}

/// A cache in use: its settings and the id its entries carry in the shared store. Snapshots
/// with the same settings share one (through [`CacheRegistry`]), so a reload that leaves a
/// cache unchanged keeps its entries; when the last snapshot using it goes, so do its entries.
#[derive(Debug)]
pub struct CachePolicy {
    pub settings: Arc<CacheSettings>,
    /// Unique for the life of the process: entries of a changed cache are never served.
    pub id: u64,
    store: &'static MemoryStore,
    /// `tollgate_cache_requests_total{cache}` by result.
    pub results: ResultCounters,
}

impl CachePolicy {
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The store this cache's entries live in.
    pub fn store(&self) -> &'static MemoryStore {
        self.store
    }
}

impl Drop for CachePolicy {
    fn drop(&mut self) {
        self.store.drop_cache(self.id);
    }
}

/// The live caches, keyed by their settings.
pub type CacheRegistry = Registry<CacheSettings, CachePolicy>;

/// The policy for `settings`: the live one, or a new one with a new id.
pub fn policy(
    registry: &CacheRegistry,
    settings: CacheSettings,
    store: &'static MemoryStore,
) -> Arc<CachePolicy> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    registry.get_or_insert_with(settings.clone(), || {
        Arc::new(CachePolicy {
            results: store.metrics().result_counters(&settings.name),
            settings: Arc::new(settings),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            store,
        })
    })
}
