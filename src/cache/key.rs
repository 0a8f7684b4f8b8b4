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

use super::policy::CacheSettings;
use crate::config::CacheQuery;
use pingora::http::RequestHeader;
use std::sync::Arc;

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

/// Builds the primary key: each part length-prefixed, so no two different requests frame to
/// the same bytes.
pub fn primary_key(
    label: &EntryLabel,
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

/// The host part of the key, read as the route table reads it (`route::host_name`: lower case,
/// port and trailing dot removed).
pub fn key_host(req: &RequestHeader) -> String {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or_default();
    crate::route::host_name(raw).unwrap_or_default()
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
