//! The cache key: which requests share a stored response.
//!
//! The rule (cache poisoning): everything that can change what the upstream answers is in the
//! key or is set by Tollgate itself. In the key: the cache (its settings' id), the route, the
//! host, the path in normal form (issue #6: the path that was routed and is forwarded), the
//! query as the cache's `query` setting keeps it, the cache's `vary` request headers, and the
//! caller for `scope = "consumer"`; the response's own `Vary` headers make variants of one key
//! (pingora-cache's variance). Headers the client cannot influence upstream are not in it:
//! Tollgate sets or strips the forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`,
//! `X-Original-URL` / `X-Rewrite-URL` through `strip_request_headers`) and the identity
//! headers. A header a backend reads that is none of these belongs in `vary`.

use super::policy::{CachePolicy, CacheSettings};
use crate::config::CacheQuery;
use pingora::cache::key::CacheHashKey;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, VarianceBuilder};
use pingora::http::RequestHeader;
use siphasher::sip128::SipHasher13;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};

/// What the store keeps beside an entry to find it again: purge by URL, prefix, tag or cache,
/// invalidation by an unsafe method on its path, and the metrics of its cache.
#[derive(Debug, Clone)]
pub struct EntryLabel {
    /// The cache's settings (not its [`CachePolicy`](super::CachePolicy): an entry must not keep its cache alive).
    pub cache: Arc<CacheSettings>,
    /// The cache's id ([`CachePolicy::id`](super::CachePolicy::id)).
    pub cache_id: u64,
    /// Lower case, without port.
    pub host: String,
    /// The path in normal form, without query.
    pub path: String,
    /// The query as it is in the key (see [`key_query`]).
    pub query: String,
}

impl EntryLabel {
    /// The label of a request to a cached route, for `policy`'s cache.
    pub fn of(policy: &CachePolicy, req: &RequestHeader) -> EntryLabel {
        EntryLabel {
            cache: policy.settings.clone(),
            cache_id: policy.id,
            host: key_host(req),
            path: req.uri.path().to_owned(),
            query: key_query(&policy.settings.query, req.uri.query()),
        }
    }

    /// Its parts of the key.
    pub fn fields(&self) -> KeyFields<'_> {
        KeyFields {
            cache: &self.cache,
            cache_id: self.cache_id,
            host: &self.host,
            path: &self.path,
            query: &self.query,
        }
    }
}

/// The parts of a key an [`EntryLabel`] keeps, borrowed (a lookup needs no copy of them).
pub struct KeyFields<'a> {
    pub cache: &'a CacheSettings,
    pub cache_id: u64,
    /// The route's key: the host as forwarded ([`forwarded_host`]); a part's: its upstream.
    pub host: &'a str,
    /// The path in normal form, without query.
    pub path: &'a str,
    /// The query as it is in the key (see [`key_query`]).
    pub query: &'a str,
}

/// The key pingora-cache looks a request to a cached route up by: the primary key and its hash
/// ([`key_hash`]). The [`EntryLabel`] goes with the response to be stored instead
/// (`CacheMeta`'s extensions, read by the store's miss handler): a hit never needs it.
pub fn cache_key(
    policy: &CachePolicy,
    route: &str,
    req: &RequestHeader,
    consumer: Option<&str>,
) -> CacheKey {
    let query = key_query(&policy.settings.query, req.uri.query());
    let fields = KeyFields {
        cache: &policy.settings,
        cache_id: policy.id,
        host: forwarded_host(req),
        path: req.uri.path(),
        query: &query,
    };
    let primary = primary_key(&fields, route, req, consumer);
    // Hashed once here: pingora-cache asks for the hash several times per request.
    let hash = key_hash(&primary);
    let mut key = CacheKey::new(primary, "");
    key.set_primary_bin_override(hash);
    key
}

/// Builds the primary key: each part length-prefixed, so no two different requests frame to
/// the same bytes.
pub fn primary_key(
    label: &KeyFields<'_>,
    route: &str,
    req: &RequestHeader,
    consumer: Option<&str>,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(64 + label.path.len() + label.query.len());
    let id = label.cache_id.to_be_bytes();
    push(&mut key, &id);
    push(&mut key, route.as_bytes());
    push(&mut key, label.host.as_bytes());
    push(&mut key, label.path.as_bytes());
    push(&mut key, label.query.as_bytes());
    for name in &label.cache.vary {
        // All lines of the header, in order: `a, b` and two lines `a` `b` are the same list.
        let mut joined = Vec::new();
        for (i, value) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
        }
        push(&mut key, &joined);
    }
    match consumer {
        Some(c) => push(&mut key, c.as_bytes()),
        None => key.push(b'-'),
    }
    key
}

/// The 16-byte hash a primary key is stored and locked under: SipHash-1-3 with 128-bit output
/// and a secret key drawn when the process starts.
///
/// Not pingora-cache's BLAKE2b (`hash_key`, about 1,900 instructions for a typical key, 3% of a
/// hit; this one costs about a sixth of that): nothing outside this process ever sees these
/// hashes (the store is in memory, purges name URLs, prefixes and tags), so what the hash needs
/// is that nobody can choose two keys that collide, which a keyed hash with a secret key gives.
/// And a collision would still not serve one key's response for another: every entry keeps its
/// whole primary key, and the store answers a lookup only when it matches
/// (`store::Entry::matches`).
pub fn key_hash(primary: &[u8]) -> HashBinary {
    static SECRET: OnceLock<SipHasher13> = OnceLock::new();
    let hasher = SECRET.get_or_init(|| {
        // std's RandomState is keyed from the operating system's random source; two of its
        // outputs make this hash's key.
        let seed = RandomState::new();
        SipHasher13::new_with_keys(seed.hash_one(0u8), seed.hash_one(1u8))
    });
    hasher.hash(primary).as_bytes()
}

fn push(key: &mut Vec<u8>, part: &[u8]) {
    key.extend_from_slice(&(part.len() as u32).to_be_bytes());
    key.extend_from_slice(part);
}

/// The query as the key keeps it: `all` sorts the parameters (so `?b=2&a=1` and `?a=1&b=2`
/// share an entry), `none` drops them, a list keeps only those names, sorted. Parameters are
/// compared as received (not decoded): two spellings of one value are two entries, never one
/// entry for two values.
pub fn key_query(rule: &CacheQuery, query: Option<&str>) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    // Empty parameters (`?&a=1&&`) say nothing: dropped under every rule, so they never make
    // a key of their own (also not under an allow-list naming "").
    let present = query.split('&').filter(|p| !p.is_empty());
    let mut params: Vec<&str> = match rule {
        CacheQuery::None => return String::new(),
        CacheQuery::All => present.collect(),
        CacheQuery::Only(names) => present
            .filter(|p| names.iter().any(|n| n == param_name(p)))
            .collect(),
    };
    // Stable by name: repeated names keep their order (`?id=1&id=2` differs from `?id=2&id=1`).
    params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
    params.join("&")
}

fn param_name(param: &str) -> &str {
    param.split('=').next().unwrap_or_default()
}

/// The host an entry is found by for purges and invalidations, read as the route table reads
/// it (`route::host_name`: lower case, port and trailing dot removed).
pub fn key_host(req: &RequestHeader) -> String {
    crate::route::host_name(forwarded_host(req))
        .unwrap_or_default()
        .into_owned()
}

/// The host in the key: the Host header (or the authority of an HTTP/2 or absolute-form
/// request) exactly as it is forwarded. Not the normal form the routes match: the upstream
/// sees the port, the case and a trailing dot, and may build links from them, so
/// `GW.example.:6666` and `gw.example` must not share an entry (cache poisoning).
fn forwarded_host(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

/// The names a response's `Vary` lists (`*` included, if it says so): lower case, sorted,
/// without repeats. A value that is not text names nothing.
pub fn vary_names(response: &http::HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = response
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The variant of a request within its key, from a stored response's own `Vary` header names
/// (the cache's `vary` headers are already in the key); `None` when the response names none.
pub fn variance(response: &http::HeaderMap, req: &RequestHeader) -> Option<HashBinary> {
    let names = vary_names(response);
    if names.is_empty() {
        return None;
    }
    let mut builder = VarianceBuilder::new();
    for name in names {
        let mut value = Vec::new();
        for (i, v) in req.headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(v.as_bytes());
        }
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

/// Where the variant `variance` of the key hashed `primary` is stored when another variant
/// holds the key's own slot: pingora-cache's combined hash, as route entries use.
pub fn variant_hash(primary: HashBinary, variance: HashBinary) -> HashBinary {
    let mut key = CacheKey::new(Vec::new(), "");
    key.set_primary_bin_override(primary);
    key.set_variance_key(variance);
    key.combined_bin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_rules() {
        let all = CacheQuery::All;
        assert_eq!(key_query(&all, Some("b=2&a=1")), "a=1&b=2");
        assert_eq!(key_query(&all, Some("id=2&id=1")), "id=2&id=1");
        assert_eq!(key_query(&all, Some("")), "");
        // Found by the cache_key fuzz target: an allow-list naming "" kept empty parameters.
        let odd = CacheQuery::Only(vec![String::new(), "a".into()]);
        assert_eq!(key_query(&odd, Some("&&a=1&")), "a=1");
        assert_eq!(key_query(&all, None), "");
        assert_eq!(key_query(&CacheQuery::None, Some("a=1")), "");
        let only = CacheQuery::Only(vec!["limit".into(), "page".into()]);
        assert_eq!(
            key_query(&only, Some("utm=x&page=2&limit=5")),
            "limit=5&page=2"
        );
    }

    #[test]
    fn one_key_one_hash() {
        assert_eq!(key_hash(b"a/b"), key_hash(b"a/b"));
        assert_ne!(key_hash(b"a/b"), key_hash(b"a/c"));
        assert_ne!(key_hash(b""), key_hash(b"\0"));
    }

    #[test]
    fn host_without_port() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("host", "API.Example.com:8080").unwrap();
        assert_eq!(key_host(&req), "api.example.com");
        req.insert_header("host", "[::1]").unwrap();
        assert_eq!(key_host(&req), "[::1]");
        req.insert_header("host", "[::1]:80").unwrap();
        assert_eq!(key_host(&req), "[::1]");
    }
}
