//! The response cache's hot functions: computing a request's key, and a lookup (the stored
//! meta decoded, the body handed out) with 1 entry and with 1,000,000 entries; and the memory
//! one entry costs beyond its body (printed once, from RSS).

use criterion::{criterion_group, criterion_main, Criterion};
use futures::executor::block_on;
use pingora::cache::key::CacheHashKey;
use pingora::cache::trace::Span;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};
use tollgate::cache::key::cache_key;
use tollgate::cache::{policy, CacheRegistry, CacheSettings, EntryLabel, MemoryStore};
use tollgate::config::CacheConfig;

const ENTRIES: u64 = 1_000_000;
/// The load benchmark's body.
const BODY: &[u8] = b"hello world\n";

fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn settings() -> CacheSettings {
    let cfg = CacheConfig {
        vary: vec!["accept-language".into()],
        ..CacheConfig::default()
    };
    CacheSettings::compile("bench", &cfg)
}

fn request(path: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    req.insert_header("host", "api.example.com").unwrap();
    req.insert_header("accept-language", "en").unwrap();
    req.insert_header("user-agent", "bench/1.0").unwrap();
    req
}

/// The key as `cache_key_callback` builds it.
fn key_of(req: &RequestHeader, policy: &tollgate::cache::CachePolicy) -> CacheKey {
    cache_key(policy, "products", req, None)
}

fn meta() -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.insert_header("content-type", "text/plain").unwrap();
    header.insert_header("content-length", BODY.len()).unwrap();
    header
        .insert_header("cache-control", "max-age=3600")
        .unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
}

/// Stores the response to `req` as a miss does (its label travels with the meta).
fn store_one(
    store: &'static MemoryStore,
    key: &CacheKey,
    req: &RequestHeader,
    policy: &tollgate::cache::CachePolicy,
) {
    let span = Span::inactive().handle();
    let mut meta = meta();
    meta.extensions_mut().insert(EntryLabel::of(policy, req));
    block_on(async {
        let mut miss = store.get_miss_handler(key, &meta, &span).await.unwrap();
        miss.write_body(bytes::Bytes::from_static(BODY), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    });
}

fn lookup(store: &'static MemoryStore, key: &CacheKey) -> usize {
    let span = Span::inactive().handle();
    block_on(async {
        let (meta, mut hit) = store.lookup(key, &span).await.unwrap().expect("stored");
        let body = hit.read_body().await.unwrap().unwrap();
        meta.headers().len() + body.len()
    })
}

fn bench(c: &mut Criterion) {
    let metrics = tollgate::observe::Metrics::new();
    let store = MemoryStore::leak(8 << 30, metrics.cache.clone());
    let registry = CacheRegistry::new();
    let policy = policy::policy(&registry, settings(), store);

    let req = request("/v1/products/7?page=2&lang=en");
    c.bench_function("cache/key", |b| {
        b.iter(|| key_of(&req, &policy).combined_bin())
    });

    let key = key_of(&req, &policy);
    store_one(store, &key, &req, &policy);
    c.bench_function("cache/lookup, 1 entry", |b| b.iter(|| lookup(store, &key)));

    let before = rss();
    let keys: Vec<CacheKey> = (0..ENTRIES)
        .map(|i| key_of(&request(&format!("/v1/products/{i}")), &policy))
        .collect();
    let keys_rss = rss();
    for (i, key) in keys.iter().enumerate() {
        store_one(store, key, &request(&format!("/v1/products/{i}")), &policy);
    }
    let (entries, weight) = store.usage();
    assert!(entries >= ENTRIES, "every entry is held: {entries}");
    if let (Some(before), Some(keys_rss), Some(after)) = (before, keys_rss, rss()) {
        let per_entry = after.saturating_sub(keys_rss) / entries.max(1);
        eprintln!(
            "cache: {entries} entries of a {}-byte body: {per_entry} bytes of RSS each, {} beyond the body ({} weighed each); the bench's own keys took {} bytes each",
            BODY.len(),
            per_entry.saturating_sub(BODY.len() as u64),
            weight / entries.max(1),
            keys_rss.saturating_sub(before) / ENTRIES,
        );
    }
    let mut i = 0usize;
    c.bench_function("cache/lookup, 1,000,000 entries", |b| {
        b.iter(|| {
            i = (i + 7_919) % keys.len();
            lookup(store, &keys[i])
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
