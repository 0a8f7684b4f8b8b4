//! The response cache's metrics: lookups by result, entries and bytes held, evictions,
//! coalesced waits and purges. Label values: cache names from the config, fixed result and
//! purge-kind words.

use super::metrics::Builder;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec};

/// What a cached route's request found (`result` of `tollgate_cache_requests_total`).
pub const CACHE_RESULTS: [&str; 6] = ["hit", "miss", "stale", "revalidated", "bypass", "expired"];
/// How entries were purged (`kind` of `tollgate_cache_purges_total`).
pub const PURGE_KINDS: [&str; 5] = ["url", "prefix", "tag", "cache", "method"];

/// One cache's request counters, one per [`CACHE_RESULTS`] word.
#[derive(Clone, Debug)]
pub struct ResultCounters([IntCounter; CACHE_RESULTS.len()]);

impl ResultCounters {
    /// Counts a request with this `result` (one of [`CACHE_RESULTS`]).
    pub fn inc(&self, result: &str) {
        if let Some(i) = CACHE_RESULTS.iter().position(|r| *r == result) {
            self.0[i].inc();
        }
    }
}

#[derive(Clone)]
pub struct CacheMetrics {
    requests: IntCounterVec,
    entries: IntGaugeVec,
    bytes: IntGaugeVec,
    evictions: IntCounterVec,
    coalesced: IntCounterVec,
    purges: IntCounterVec,
}

impl CacheMetrics {
    pub(super) fn new(b: &Builder) -> CacheMetrics {
        let purges = b.counters(
            "tollgate_cache_purges_total",
            "Cache entries removed by purges (admin API, peers through Redis, unsafe methods), by kind.",
            &["kind"],
        );
        for kind in PURGE_KINDS {
            purges.with_label_values(&[kind]);
        }
        CacheMetrics {
            requests: b.counters(
                "tollgate_cache_requests_total",
                "Requests on cached routes, by cache and what the cache did.",
                &["cache", "result"],
            ),
            entries: b.gauges(
                "tollgate_cache_entries",
                "Responses held, by cache.",
                &["cache"],
            ),
            bytes: b.gauges(
                "tollgate_cache_bytes",
                "Bytes held (keys, headers and bodies, as weighed against server.cache_capacity), by cache.",
                &["cache"],
            ),
            evictions: b.counters(
                "tollgate_cache_evictions_total",
                "Entries evicted to stay within server.cache_capacity, by cache.",
                &["cache"],
            ),
            coalesced: b.counters(
                "tollgate_cache_coalesced_total",
                "Requests that waited for another request's upstream fetch of the same entry, by cache.",
                &["cache"],
            ),
            purges,
        }
    }

    /// Makes every series of a cache exist at zero, so dashboards can rate() them at once (its
    /// request series exist from its policy's [`ResultCounters`]).
    pub fn declare(&self, cache: &str) {
        self.entries.with_label_values(&[cache]);
        self.bytes.with_label_values(&[cache]);
        self.evictions.with_label_values(&[cache]);
        self.coalesced.with_label_values(&[cache]);
    }

    /// The `tollgate_cache_requests_total` series of a cache, looked up once for its policy
    /// rather than by label values on every request.
    pub fn result_counters(&self, cache: &str) -> ResultCounters {
        ResultCounters(
            CACHE_RESULTS.map(|result| self.requests.with_label_values(&[cache, result])),
        )
    }

    pub fn stored(&self, cache: &str, weight: u64) {
        self.entries.with_label_values(&[cache]).inc();
        self.bytes.with_label_values(&[cache]).add(weight as i64);
    }

    pub fn removed(&self, cache: &str, weight: u64, evicted: bool) {
        self.entries.with_label_values(&[cache]).dec();
        self.bytes.with_label_values(&[cache]).sub(weight as i64);
        if evicted {
            self.evictions.with_label_values(&[cache]).inc();
        }
    }

    pub fn coalesced(&self, cache: &str) {
        self.coalesced.with_label_values(&[cache]).inc();
    }

    pub fn purged(&self, kind: &str, n: u64) {
        self.purges.with_label_values(&[kind]).inc_by(n);
    }
}
