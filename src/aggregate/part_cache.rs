//! A part's own cache (`cache = NAME` on the part): a fresh stored answer is used without a
//! request; a fetched answer is stored by the cache's RFC 9111 rules (the same `decide` as
//! cached routes); when the part fails, a stale answer within the cache's `stale_if_error`
//! stands in (outcome `stale`). Entries share the gateway's store and its purges: by the
//! part's upstream path (`url`, `prefix`), by `Surrogate-Key` tag, by cache.
//!
//! The key is the cache's key rule (`cache::key::primary_key`) over the request the part
//! sends: the route and part, the part's target, the cache's `vary` headers as the part sends
//! them, and the caller for `scope = "consumer"` (a part of a route without callers is then
//! not cached). An answer whose `Vary` names request headers is one variant of its key: the
//! first variant stored holds the key's own slot, the others are stored beside it under the
//! key and their variance, as pingora-cache does for routes. An answer to a part request that
//! carries `Authorization` is stored in a `shared` cache only when it says `public` or
//! `s-maxage`, like a route's. There is no background refresh (stale-while-revalidate) and no
//! coalescing of concurrent misses for parts.

use crate::cache::decide::{decide, Verdict};
use crate::cache::key::{key_hash, key_query, primary_key, variance, variant_hash};
use crate::cache::store::Entry;
use crate::cache::{CachePolicy, EntryLabel};
use crate::config::CacheScope;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::Arc;
use std::time::SystemTime;

/// One part's entry in its cache, for one request.
pub struct PartCache<'a> {
    policy: &'a CachePolicy,
    key: HashBinary,
    primary: Vec<u8>,
    label: EntryLabel,
    /// The route authenticates its callers or the part sends `Authorization`: only `public`
    /// or `s-maxage` answers are stored for everyone (RFC 9111 §3.5).
    credentials: bool,
    /// What the part sends: its headers pick the variant of an answer that has `Vary`.
    request: &'a RequestHeader,
}

/// A stored answer as a part uses it.
pub struct Cached {
    pub entry: Arc<Entry>,
    /// Seconds since it was fetched.
    pub age: u64,
    /// Still fresh.
    pub fresh: bool,
    /// Whole seconds it stays fresh.
    pub fresh_for: u64,
}

impl<'a> PartCache<'a> {
    /// `label`: `route/part`; `host`: the part's upstream name; `request`: what the part sends;
    /// `consumer`: the caller; `personal`: the route authenticates its callers. `None` (counted
    /// as a bypass) for a per-consumer cache without a caller: an anonymous request shares
    /// nothing.
    pub fn new(
        policy: &'a CachePolicy,
        label: &str,
        host: &str,
        request: &'a RequestHeader,
        consumer: Option<&str>,
        personal: bool,
    ) -> Option<PartCache<'a>> {
        let per_consumer = policy.settings.scope == CacheScope::Consumer;
        if per_consumer && consumer.is_none() {
            policy.results.inc("bypass");
            return None;
        }
        let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let entry = EntryLabel {
            cache: policy.settings.clone(),
            cache_id: policy.id,
            host: host.to_string(),
            path: path.to_string(),
            query: key_query(&policy.settings.query, query),
        };
        let consumer = consumer.filter(|_| per_consumer);
        let primary = primary_key(&entry.fields(), label, request, consumer);
        let credentials = personal || request.headers.contains_key(http::header::AUTHORIZATION);
        Some(PartCache {
            policy,
            key: key_hash(&primary),
            primary,
            label: entry,
            credentials,
            request,
        })
    }

    /// A fresh stored answer.
    pub fn fresh(&self, now: SystemTime) -> Option<Cached> {
        let cached = self.lookup(now).filter(|c| c.fresh);
        self.count(if cached.is_some() { "hit" } else { "miss" });
        cached
    }

    /// A stale answer that may stand in for the failed part (within `stale_if_error`).
    pub fn stale_for_error(&self, now: SystemTime) -> Option<Cached> {
        let cached = self.lookup(now)?;
        let entry = &cached.entry;
        let usable = now < entry.fresh_until() + entry.stale_if_error();
        if usable {
            self.count("stale");
        }
        usable.then_some(cached)
    }

    /// Stores a fetched answer if the cache's rules allow it: in the key's own slot unless
    /// another variant holds it.
    pub fn store(&self, header: &ResponseHeader, body: Bytes) {
        let Verdict::Store(mut meta) = decide(
            &self.policy.settings,
            self.credentials,
            header,
            SystemTime::now(),
        ) else {
            return;
        };
        let store = self.policy.store();
        let mut key = self.key;
        if let Some(variance) = variance(&header.headers, self.request) {
            meta.set_variance(variance);
            let slot_taken_by_another = store
                .get(&self.key, &self.primary)
                .and_then(|held| held.variance())
                .is_some_and(|held| held != variance);
            if slot_taken_by_another {
                key = variant_hash(self.key, variance);
            }
        }
        // A header the store cannot keep only costs this answer its entry.
        let _ = store.put(key, &self.primary, &meta, body, self.label.clone());
    }

    /// The stored answer for this request: the key's own slot, or, when that holds another
    /// variant, this request's variant beside it.
    fn lookup(&self, now: SystemTime) -> Option<Cached> {
        let store = self.policy.store();
        let mut entry = store.get(&self.key, &self.primary)?;
        if let Some(held) = entry.variance() {
            let wanted = variance(&entry.header().headers, self.request)?;
            if wanted != held {
                entry = store
                    .get(&variant_hash(self.key, wanted), &self.primary)
                    .filter(|e| e.variance() == Some(wanted))?;
            }
        }
        let age = now.duration_since(entry.updated()).unwrap_or_default();
        let fresh_for = entry.fresh_until().duration_since(now).unwrap_or_default();
        Some(Cached {
            fresh: now < entry.fresh_until(),
            age: age.as_secs(),
            fresh_for: fresh_for.as_secs(),
            entry,
        })
    }

    fn count(&self, result: &str) {
        self.policy.results.inc(result);
    }
}
