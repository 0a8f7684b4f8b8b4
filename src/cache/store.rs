//! Where cached responses live: pingora-cache's `Storage` over one moka cache shared by every
//! `[caches.*]` of a gateway, weighed in bytes (key, headers, body and bookkeeping) against
//! `server.cache_capacity`, evicting with moka's own policy (TinyLFU admission, LRU order); and
//! the index that purges by path, prefix and tag use.
//!
//! moka cannot change its capacity, and pingora-cache wants a `&'static` storage: the store is
//! one leaked [`MemoryStore`] per gateway whose moka cache sits behind an `ArcSwap`, replaced
//! (emptied) when a reload changes `cache_capacity`.
//!
//! The store does not stream a response while it is written (no partial reads): requests
//! waiting on the cache lock for the same key read it once it is complete, and a response
//! over `max_entry` is dropped from the store while the client still gets it in full.

use super::key::EntryLabel;
use crate::observe::CacheMetrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// The response header that tags an entry for purges (space-separated); removed before the
/// client sees the response.
pub const SURROGATE_KEY: http::HeaderName = http::HeaderName::from_static("surrogate-key");
/// Bytes counted per entry beyond its key, headers and body: moka's node and bookkeeping, the
/// `Entry` and its label's allocations, the header map's table, the index, the allocator's
/// own overhead. Measured with `benches/cache.rs` (1,000,000 entries of a 12-byte body with
/// three headers: about 1,900 bytes of RSS each, weighed 1,919, of which this covers what the
/// other terms do not), so `cache_capacity` bounds the real memory, not just the payload.
const ENTRY_OVERHEAD: u64 = 1350;
/// Bytes counted per stored header beyond its name and value (its slot in the header map).
const HEADER_OVERHEAD: usize = 96;

/// One stored response.
pub struct Entry {
    /// pingora-cache's meta beside the header: freshness, stale windows, variance.
    internal: Freshness,
    /// The response header, kept decoded: pingora-cache's own serialization compresses it
    /// (zstd), which a hit would pay to undo every time.
    header: ResponseHeader,
    body: Bytes,
    /// The whole primary key (`key::primary_key`): the store is keyed by its hash, and answers
    /// only for the key itself (see `key::key_hash`).
    primary: Box<[u8]>,
    pub label: EntryLabel,
    pub tags: Vec<String>,
    weight: u32,
}

impl Entry {
    fn new(
        (internal, header): (Freshness, ResponseHeader),
        body: Bytes,
        primary: Box<[u8]>,
        label: EntryLabel,
        tags: Vec<String>,
    ) -> Entry {
        let weight = Entry::weigh(&header, &body, &primary, &label, &tags);
        Entry {
            internal,
            header,
            body,
            primary,
            label,
            tags,
            weight,
        }
    }

    /// The variant of its key this entry is (from its response's `Vary`), if any.
    pub fn variance(&self) -> Option<HashBinary> {
        self.internal.variance
    }

    fn weigh(
        header: &ResponseHeader,
        body: &Bytes,
        primary: &[u8],
        label: &EntryLabel,
        tags: &[String],
    ) -> u32 {
        let header_bytes: usize = header
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum();
        let bytes = 16
            + std::mem::size_of::<Freshness>() as u64
            + header_bytes as u64
            + body.len() as u64
            + primary.len() as u64
            + (label.host.len() + label.path.len() + label.query.len()) as u64
            + tags.iter().map(|t| t.len() as u64 + 24).sum::<u64>()
            + ENTRY_OVERHEAD;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Whether this is the entry of `primary` (and not of another key with the same hash).
    pub fn matches(&self, primary: &[u8]) -> bool {
        *self.primary == *primary
    }

    /// The stored response header.
    pub fn header(&self) -> &ResponseHeader {
        &self.header
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Until when the entry is fresh.
    pub fn fresh_until(&self) -> SystemTime {
        self.internal.fresh_until
    }

    /// When the entry was stored or last revalidated (what `Age` counts from).
    pub fn updated(&self) -> SystemTime {
        self.internal.updated
    }

    /// How long past `fresh_until` the entry may stand in for a failed upstream.
    pub fn stale_if_error(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.internal.stale_if_error_sec))
    }

    fn hit(&self) -> Result<(CacheMeta, HitHandler)> {
        let meta = self.internal.meta(self.header.clone());
        let len = self.body.len();
        Ok((
            meta,
            Box::new(BodyReader {
                body: self.body.clone(),
                range: 0..len,
                done: false,
            }),
        ))
    }
}

/// What the store keeps of pingora-cache's `CacheMeta` besides the header, read through its
/// accessors and rebuilt with its constructor on a hit: its own serialization would decode
/// MessagePack and a zstd-compressed header on every hit (about 4,000 instructions).
///
/// The rebuilt meta's creation time is the entry's last update (its `updated`), which is what
/// `Age` and freshness are measured from. pingora-cache also reads the creation time as the
/// "provenance" below which other `Vary` variants of the entry count as stale: after a
/// revalidation of the primary variant, the other variants are refetched once. Never a wrong
/// answer, at worst an extra miss.
#[derive(Debug, Clone, Copy)]
struct Freshness {
    fresh_until: SystemTime,
    updated: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    variance: Option<HashBinary>,
    epoch_override: Option<SystemTime>,
}

impl Freshness {
    fn of(meta: &CacheMeta) -> Freshness {
        Freshness {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
            epoch_override: meta.epoch_override(),
        }
    }

    fn meta(&self, header: ResponseHeader) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.updated,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            header,
        );
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        if let Some(epoch) = self.epoch_override {
            meta.set_epoch_override(epoch);
        }
        meta
    }
}

/// Keyed by the keys' own hashes (`key::key_hash`), secret-keyed: nobody can aim keys at one
/// of moka's buckets, so its table hashes them with foldhash rather than SipHash.
type Entries = moka::sync::Cache<HashBinary, Arc<Entry>, foldhash::fast::RandomState>;

/// Keys by path and by tag. It may keep a key that is no longer stored (a removal raced an
/// insert); purges check each key against the store, so such a key only costs a lookup.
#[derive(Default)]
struct Index {
    by_path: BTreeMap<String, HashSet<HashBinary>>,
    by_tag: HashMap<String, HashSet<HashBinary>>,
}

impl Index {
    fn add(&mut self, key: HashBinary, entry: &Entry) {
        self.by_path
            .entry(entry.label.path.clone())
            .or_default()
            .insert(key);
        for tag in &entry.tags {
            self.by_tag.entry(tag.clone()).or_default().insert(key);
        }
    }

    fn remove(&mut self, key: &HashBinary, entry: &Entry) {
        if let Some(keys) = self.by_path.get_mut(&entry.label.path) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_path.remove(&entry.label.path);
            }
        }
        for tag in &entry.tags {
            if let Some(keys) = self.by_tag.get_mut(tag) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
    }
}

/// The responses of every cache of one gateway.
pub struct MemoryStore {
    /// Tells this gateway's purge messages from the others' (see `bus`).
    instance: String,
    entries: ArcSwap<(u64, Entries)>,
    index: Arc<Mutex<Index>>,
    metrics: CacheMetrics,
}

/// Which entries a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One URL (path and query, as a request would send it), optionally on one host: every
    /// variant (`Vary`, consumers) of every cache.
    Url { host: Option<String>, url: String },
    /// Every entry whose path starts with this.
    Prefix(String),
    /// Every entry whose response carried this `Surrogate-Key` tag.
    Tag(String),
    /// Every entry of the cache with this name.
    Cache(String),
    /// What a successful unsafe request on this host and path invalidates (RFC 9111 §4.4).
    Path { host: String, path: String },
}

impl Purge {
    /// The `kind` label of `tollgate_cache_purges_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Purge::Url { .. } => "url",
            Purge::Prefix(_) => "prefix",
            Purge::Tag(_) => "tag",
            Purge::Cache(_) => "cache",
            Purge::Path { .. } => "method",
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.entries.load().0)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store for one gateway, for its whole life (pingora-cache needs `'static`).
    pub fn leak(capacity: u64, metrics: CacheMetrics) -> &'static MemoryStore {
        let index = Arc::new(Mutex::new(Index::default()));
        let entries = build(capacity, &index, &metrics);
        Box::leak(Box::new(MemoryStore {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            entries: ArcSwap::from_pointee((capacity, entries)),
            index,
            metrics,
        }))
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// Applies `server.cache_capacity` from a config going live: a new capacity starts an
    /// empty store (moka's capacity is fixed), an unchanged one keeps everything.
    pub fn set_capacity(&self, capacity: u64) {
        let current = self.entries.load();
        if current.0 == capacity {
            return;
        }
        let fresh = build(capacity, &self.index, &self.metrics);
        let old = self.entries.swap(Arc::new((capacity, fresh)));
        old.1.invalidate_all();
        old.1.run_pending_tasks();
    }

    fn entries(&self) -> arc_swap::Guard<Arc<(u64, Entries)>> {
        self.entries.load()
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes every entry of a cache no snapshot uses any more (its settings changed, or it
    /// was removed from the config).
    pub fn drop_cache(&self, id: u64) {
        let entries = self.entries();
        let _ = entries
            .1
            .invalidate_entries_if(move |_, e| e.label.cache_id == id);
        entries.1.run_pending_tasks();
    }

    /// Removes the entries `purge` names; returns how many.
    pub fn purge(&self, purge: &Purge) -> u64 {
        let entries = self.entries();
        let candidates: Vec<HashBinary> = {
            let index = self.index();
            match purge {
                Purge::Url { url, .. } => {
                    let path = url.split('?').next().unwrap_or_default();
                    keys_of(index.by_path.get(path))
                }
                Purge::Path { path, .. } => keys_of(index.by_path.get(path.as_str())),
                Purge::Prefix(prefix) => index
                    .by_path
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(p, _)| p.starts_with(prefix.as_str()))
                    .flat_map(|(_, keys)| keys.iter().copied())
                    .collect(),
                Purge::Tag(tag) => keys_of(index.by_tag.get(tag.as_str())),
                Purge::Cache(_) => Vec::new(),
            }
        };
        let mut purged = 0;
        if let Purge::Cache(name) = purge {
            let victims: Vec<HashBinary> = entries
                .1
                .iter()
                .filter(|(_, e)| *e.label.cache.name == **name)
                .map(|(k, _)| *k)
                .collect();
            for key in victims {
                purged += u64::from(entries.1.remove(&key).is_some());
            }
        } else {
            for key in candidates {
                let Some(entry) = entries.1.get(&key) else {
                    continue;
                };
                if matches(purge, &entry) && entries.1.remove(&key).is_some() {
                    purged += 1;
                }
            }
        }
        entries.1.run_pending_tasks();
        self.metrics.purged(purge.kind(), purged);
        purged
    }

    /// The entry of `primary` (stored under its hash `key`), read outside pingora-cache's
    /// request flow (an aggregate's part).
    pub fn get(&self, key: &HashBinary, primary: &[u8]) -> Option<Arc<Entry>> {
        self.entries().1.get(key).filter(|e| e.matches(primary))
    }

    /// Stores a response outside pingora-cache's request flow (an aggregate's part), fresh as
    /// `meta` says; a body over the cache's `max_entry` is not stored.
    pub fn put(
        &self,
        key: HashBinary,
        primary: &[u8],
        meta: &CacheMeta,
        body: Bytes,
        label: EntryLabel,
    ) -> Result<()> {
        if body.len() as u64 > label.cache.max_entry {
            return Ok(());
        }
        let tags = surrogate_tags(meta);
        let entry = Entry::new(parts(meta)?, body, primary.into(), label, tags);
        self.insert(key, Arc::new(entry));
        Ok(())
    }

    /// Entries held and their weight, for tests and benchmarks.
    pub fn usage(&self) -> (u64, u64) {
        let entries = self.entries();
        entries.1.run_pending_tasks();
        (entries.1.entry_count(), entries.1.weighted_size())
    }
}

fn keys_of(set: Option<&HashSet<HashBinary>>) -> Vec<HashBinary> {
    set.map(|s| s.iter().copied().collect()).unwrap_or_default()
}

fn matches(purge: &Purge, entry: &Entry) -> bool {
    let label = &entry.label;
    match purge {
        Purge::Url { host, url } => {
            let (path, query) = match url.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (url.as_str(), None),
            };
            let query = super::key::key_query(&label.cache.query, query);
            host.as_ref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&label.host))
                && label.path == path
                && label.query == query
        }
        Purge::Path { host, path } => label.host == *host && label.path == *path,
        Purge::Prefix(prefix) => label.path.starts_with(prefix.as_str()),
        Purge::Tag(tag) => entry.tags.iter().any(|t| t == tag),
        Purge::Cache(name) => *label.cache.name == **name,
    }
}

fn build(capacity: u64, index: &Arc<Mutex<Index>>, metrics: &CacheMetrics) -> Entries {
    let index = index.clone();
    let metrics = metrics.clone();
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .weigher(|_, e: &Arc<Entry>| e.weight)
        .support_invalidation_closures()
        .eviction_listener(move |key: Arc<HashBinary>, entry: Arc<Entry>, cause| {
            use moka::notification::RemovalCause;
            let name = &entry.label.cache.name;
            metrics.removed(name, u64::from(entry.weight), cause == RemovalCause::Size);
            // A replaced entry's key is still stored: the insert updated the index itself.
            if cause != RemovalCause::Replaced {
                index
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key, &entry);
            }
        })
        .build_with_hasher(foldhash::fast::RandomState::default())
}

/// A stored body, served whole or as one range.
struct BodyReader {
    body: Bytes,
    range: std::ops::Range<usize>,
    done: bool,
}

#[async_trait]
impl HandleHit for BodyReader {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if std::mem::replace(&mut self.done, true) || self.range.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.body.slice(self.range.clone())))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return Error::e_explain(ErrorType::InternalError, "range start past the body");
        }
        self.range = start..end.map_or(len, |e| e.min(len));
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A response being stored: its body is collected, and stored when complete.
struct BodyWriter {
    store: &'static MemoryStore,
    key: HashBinary,
    primary: Box<[u8]>,
    meta: (Freshness, ResponseHeader),
    label: EntryLabel,
    tags: Vec<String>,
    body: Vec<u8>,
}

#[async_trait]
impl HandleMiss for BodyWriter {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        // pingora-cache stops calling at max_entry; this is the backstop.
        if (self.body.len() + data.len()) as u64 > self.label.cache.max_entry {
            return Error::e_explain(ErrorType::InternalError, "response over max_entry");
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let BodyWriter {
            store,
            key,
            primary,
            meta,
            label,
            tags,
            body,
        } = *self;
        let body = Bytes::from(body);
        let size = body.len();
        store.insert(key, Arc::new(Entry::new(meta, body, primary, label, tags)));
        Ok(MissFinishType::Created(size))
    }
}

impl MemoryStore {
    fn insert(&self, key: HashBinary, entry: Arc<Entry>) {
        let entries = self.entries();
        let old = entries.1.get(&key);
        self.metrics
            .stored(&entry.label.cache.name, u64::from(entry.weight));
        entries.1.insert(key, entry.clone());
        {
            let mut index = self.index();
            if let Some(old) = old {
                index.remove(&key, &old);
            }
            index.add(key, &entry);
        }
        // Evict now rather than at moka's next housekeeping, so the store stays within its
        // capacity (the index lock is free: eviction updates it).
        entries.1.run_pending_tasks();
    }
}

/// The purge tags a response carries in `Surrogate-Key` (space-separated).
fn surrogate_tags(meta: &CacheMeta) -> Vec<String> {
    meta.headers()
        .get_all(&SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .map(str::to_owned)
        .collect()
}

/// What the store keeps of a `CacheMeta`: its freshness and its header
/// (rebuilt from plain `http` parts: without the map of the header names' original case,
/// which costs memory in every entry and that HTTP/2 clients never see).
fn parts(meta: &CacheMeta) -> Result<(Freshness, ResponseHeader)> {
    let internal = Freshness::of(meta);
    let reason = meta
        .response_header()
        .get_reason_phrase()
        .map(str::to_owned);
    let plain: http::response::Parts = meta.response_header_copy().into();
    let mut header = ResponseHeader::from(plain);
    header.set_reason_phrase(reason.as_deref())?;
    Ok((internal, header))
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        match self.entries().1.get(&key.combined_bin()) {
            Some(entry) if entry.matches(key.primary_key()) => entry.hit().map(Some),
            _ => Ok(None),
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        // Put there by `response_cache_filter` (`proxy::caching`).
        let Some(label) = meta.extensions().get::<EntryLabel>().cloned() else {
            return Error::e_explain(ErrorType::InternalError, "cache meta without its label");
        };
        let tags = surrogate_tags(meta);
        Ok(Box::new(BodyWriter {
            store: self,
            key: key.combined_bin(),
            primary: key.primary_key().into(),
            meta: parts(meta)?,
            label,
            tags,
            body: Vec::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let removed = self.entries().1.remove(&target.key().combined_bin());
        Ok(match removed {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let entries = self.entries();
        let Some(old) = entries
            .1
            .get(&hash)
            .filter(|e| e.matches(key.primary_key()))
        else {
            return Ok(false);
        };
        let entry = Entry::new(
            parts(meta)?,
            old.body.clone(),
            old.primary.clone(),
            old.label.clone(),
            old.tags.clone(),
        );
        drop(entries);
        self.insert(hash, Arc::new(entry));
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::cache_key;
    use crate::cache::{policy, CacheRegistry, CacheSettings};
    use crate::config::CacheConfig;
    use futures::executor::block_on;
    use pingora::cache::trace::Span;
    use pingora::http::RequestHeader;
    use std::time::Duration;

    fn request(path: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        req.insert_header("host", "api.example.com").unwrap();
        req
    }

    /// A key whose hash is another key's (a collision, or a forged hash) is not answered with
    /// that key's entry, and the key itself still is.
    #[test]
    fn an_entry_answers_only_its_own_key() {
        let metrics = crate::observe::Metrics::new();
        let store = MemoryStore::leak(1 << 20, metrics.cache.clone());
        let cfg = CacheConfig::default();
        let registry = CacheRegistry::new();
        let policy = policy::policy(&registry, CacheSettings::compile("t", &cfg), store);
        let stored_req = request("/products/7");
        let stored = cache_key(&policy, "r", &stored_req, None);

        let span = Span::inactive().handle();
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        meta.extensions_mut()
            .insert(EntryLabel::of(&policy, &stored_req));
        block_on(async {
            let mut miss = store.get_miss_handler(&stored, &meta, &span).await.unwrap();
            miss.write_body(Bytes::from_static(b"seven"), true)
                .await
                .unwrap();
            miss.finish().await.unwrap();
        });

        let lookup = |key: &CacheKey| block_on(store.lookup(key, &span)).unwrap().is_some();
        assert!(lookup(&stored));
        let mut forged = cache_key(&policy, "r", &request("/products/8"), None);
        assert_ne!(forged.combined_bin(), stored.combined_bin());
        forged.set_primary_bin_override(stored.combined_bin());
        assert!(!lookup(&forged), "another key under the same hash");
        let entry = store.get(&stored.combined_bin(), forged.primary_key());
        assert!(entry.is_none());
        assert!(store
            .get(&stored.combined_bin(), stored.primary_key())
            .is_some());
    }
}
