//! Checks of `[caches.NAME]`, `server.cache_capacity` and the routes that name a cache.

use super::Validator;
use crate::config::types::{CacheConfig, CacheQuery, Config, RouteConfig};

/// `server.cache_capacity` when absent.
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 * 1024 * 1024;
/// `max_entry` when absent.
pub const DEFAULT_MAX_ENTRY: u64 = 1024 * 1024;
/// Largest `max_entry`: one entry is weighed in a `u32` by the cache's eviction.
const MAX_ENTRY_LIMIT: u64 = 1 << 30;

impl Validator {
    pub(super) fn cache(&mut self, config: &Config, name: &str, c: &CacheConfig) {
        let base = format!("caches.{name}");
        if let Some(ttl) = c.ttl {
            self.positive(&format!("{base}.ttl"), ttl);
        }
        if let Some(max) = c.max_ttl {
            self.positive(&format!("{base}.max_ttl"), max);
            if c.ttl.is_some_and(|ttl| ttl.get() > max.get()) {
                self.err(format!("{base}.ttl"), "is longer than max_ttl");
            }
        }
        if let Some(statuses) = &c.statuses {
            for (i, s) in statuses.iter().enumerate() {
                // 206 and 304 are parts of a response, not one to store; 1xx are not final.
                if !(200..=599).contains(s) || matches!(s, 206 | 304) {
                    self.err(
                        format!("{base}.statuses[{i}]"),
                        format!("{s} cannot be stored; use final statuses 200..=599 other than 206 and 304"),
                    );
                }
            }
        }
        for (i, h) in c.vary.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.err(
                    format!("{base}.vary[{i}]"),
                    format!("\"{h}\" is not a header name"),
                );
            }
        }
        if let CacheQuery::Only(names) = &c.query {
            if names.iter().any(String::is_empty) {
                self.err(format!("{base}.query"), "parameter names cannot be empty");
            }
        }
        let max_entry = c.max_entry.map_or(DEFAULT_MAX_ENTRY, |s| s.bytes());
        if max_entry == 0 || max_entry > MAX_ENTRY_LIMIT {
            self.err(
                format!("{base}.max_entry"),
                "must be between 1 byte and 1GiB",
            );
        }
        let capacity = cache_capacity(config);
        if max_entry > capacity {
            self.err(
                format!("{base}.max_entry"),
                format!(
                    "{max_entry} bytes does not fit in server.cache_capacity ({capacity} bytes); raise cache_capacity or lower max_entry"
                ),
            );
        }
    }

    /// A route's `cache`: a defined cache.
    pub(super) fn route_cache(&mut self, config: &Config, base: &str, r: &RouteConfig) {
        if let Some(name) = &r.cache {
            let path = format!("{base}.cache");
            self.reference(config, &path, "caches", name, config.caches.keys());
        }
    }
}

/// The bytes all caches share.
pub fn cache_capacity(config: &Config) -> u64 {
    config
        .server
        .cache_capacity
        .map_or(DEFAULT_CACHE_CAPACITY, |s| s.bytes())
}
