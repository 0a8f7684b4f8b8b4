//! The cache key (`src/cache/key.rs`) of arbitrary requests, built as the proxy builds it.
//!
//! Besides "no panic": two requests share a key only if everything the key is made of is the
//! same (cache poisoning: a request must never be served another request's entry), and the
//! key's query holds the request's parameters as the cache's `query` rule keeps them.
//!
//! Input: `QUERY \xff VARY` then two requests, each `ROUTE \xff TARGET \xff HOST \xff
//! HEADERS \xff CONSUMER`. QUERY: `all`, `none` or a comma-separated list of names; VARY:
//! comma-separated header names; HEADERS: lines, the i-th a value of the i-th vary header
//! (round robin); an empty CONSUMER is none.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;
use std::sync::Arc;
use tollgate::cache::key::{key_host, key_query, primary_key};
use tollgate::cache::{CacheSettings, EntryLabel};
use tollgate::config::{CacheConfig, CacheQuery, CacheScope};

struct Request<'a> {
    route: String,
    target: &'a [u8],
    host: &'a [u8],
    /// Values of the `vary` headers, round robin over the cache's list.
    headers: Vec<&'a [u8]>,
    consumer: Option<String>,
}

impl<'a> Request<'a> {
    fn new([route, target, host, headers, consumer]: [&'a [u8]; 5]) -> Request<'a> {
        Request {
            route: tollgate_fuzz::text(route),
            target,
            host,
            headers: headers.split(|&b| b == b'\n').collect(),
            consumer: (!consumer.is_empty()).then(|| tollgate_fuzz::text(consumer)),
        }
    }
}

fn list(field: &[u8]) -> Vec<String> {
    tollgate_fuzz::text(field).split(',').map(str::to_string).collect()
}

/// Everything a key is made of, as the proxy reads it from a request.
#[derive(Debug, PartialEq)]
struct Parts {
    route: String,
    host: String,
    path: String,
    query: String,
    vary: Vec<Vec<Vec<u8>>>,
    consumer: Option<String>,
}

fn key_of(settings: &Arc<CacheSettings>, r: &Request) -> Option<(Vec<u8>, Parts)> {
    let mut req = RequestHeader::build("GET", r.target, None).ok()?;
    if let Ok(host) = http::HeaderValue::from_bytes(r.host) {
        req.insert_header(http::header::HOST, host).ok()?;
    }
    for (i, value) in r.headers.iter().enumerate() {
        let Some(name) = settings.vary.get(i % settings.vary.len().max(1)) else {
            break;
        };
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            req.append_header(name.clone(), value).ok()?;
        }
    }
    let label = EntryLabel {
        cache: settings.clone(),
        cache_id: 7,
        host: key_host(&req),
        path: req.uri.path().to_owned(),
        query: key_query(&settings.query, req.uri.query()),
    };
    check_query(&settings.query, req.uri.query(), &label.query);
    let key = primary_key(&label.fields(), &r.route, &req, r.consumer.as_deref());
    let vary = settings
        .vary
        .iter()
        .map(|name| {
            let values = req.headers.get_all(name).iter();
            values.map(|v| v.as_bytes().to_vec()).collect()
        })
        .collect();
    let parts = Parts {
        route: r.route.clone(),
        host: label.host,
        path: label.path,
        query: label.query,
        vary,
        consumer: r.consumer.clone(),
    };
    Some((key, parts))
}

/// The key's query is the request's parameters (empty ones dropped), filtered by the rule and
/// sorted by name, with repeated names in their request order.
fn check_query(rule: &CacheQuery, query: Option<&str>, kept: &str) {
    let params: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    let name = |p: &str| p.split('=').next().unwrap_or_default().to_string();
    let mut expected: Vec<&str> = match rule {
        CacheQuery::None => vec![],
        CacheQuery::All => params,
        CacheQuery::Only(names) => params
            .into_iter()
            .filter(|p| names.contains(&name(p)))
            .collect(),
    };
    expected.sort_by_key(|p| name(p));
    assert_eq!(kept, expected.join("&"), "query {query:?} under {rule:?}");
}

fuzz_target!(|data: &[u8]| {
    let [query, vary, rest] = tollgate_fuzz::fields(data);
    let [route, target, host, headers, consumer, rest] = tollgate_fuzz::fields(rest);
    let a = Request::new([route, target, host, headers, consumer]);
    let b = Request::new(tollgate_fuzz::fields(rest));
    let config = CacheConfig {
        ttl: None,
        max_ttl: None,
        stale_while_revalidate: None,
        stale_if_error: None,
        statuses: None,
        vary: list(vary),
        query: match query {
            b"all" => CacheQuery::All,
            b"none" => CacheQuery::None,
            names => CacheQuery::Only(list(names)),
        },
        scope: CacheScope::Shared,
        max_entry: None,
    };
    let settings = Arc::new(CacheSettings::compile("fuzz", &config));
    let (Some((key_a, parts_a)), Some((key_b, parts_b))) =
        (key_of(&settings, &a), key_of(&settings, &b))
    else {
        return;
    };
    if key_a == key_b {
        // `a, b` on one line and `a` `b` on two are the same list: compare the joined form.
        let joined = |p: &Parts| -> Vec<Vec<u8>> { p.vary.iter().map(|v| v.join(&b", "[..])).collect() };
        assert_eq!(joined(&parts_a), joined(&parts_b), "same key, different vary headers");
        assert_eq!(
            (&parts_a.route, &parts_a.host, &parts_a.path, &parts_a.query, &parts_a.consumer),
            (&parts_b.route, &parts_b.host, &parts_b.path, &parts_b.query, &parts_b.consumer),
            "same key for different requests"
        );
    }
});
