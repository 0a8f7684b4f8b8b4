//! Local rate limit checks: one bucket hit again and again, and a million distinct keys (a flood
//! of callers) — the per-request cost, and the memory one key costs (printed once, from RSS).

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use tollgate::ratelimit::gcra::Quota;
use tollgate::ratelimit::local::{now_nanos, LocalBuckets};

const KEYS: u64 = 1_000_000;

/// A quota that never refuses (the benchmark measures the check, not rejections) and whose
/// buckets stay live for an hour after each request, so every key is held for the whole run.
fn generous() -> Quota {
    Quota {
        requests: 1,
        per: Duration::from_secs(3600),
        burst: u64::MAX / 2,
    }
}

/// Resident memory of this process, bytes (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn bench(c: &mut Criterion) {
    let one = LocalBuckets::new(generous());
    c.bench_function("ratelimit/local check, 1 key", |b| {
        b.iter(|| one.check(Some(b"203.0.113.7"), now_nanos()))
    });

    let before = rss();
    let many = LocalBuckets::new(generous());
    for i in 0..KEYS {
        many.check(Some(&i.to_be_bytes()), now_nanos());
    }
    let held = many.len();
    assert_eq!(held, KEYS, "every key is live");
    if let (Some(before), Some(after)) = (before, rss()) {
        eprintln!(
            "ratelimit: {held} keys held, {} bytes of RSS per key",
            after.saturating_sub(before) / held.max(1)
        );
    }
    let mut i = 0u64;
    c.bench_function("ratelimit/local check, 1,000,000 keys", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            many.check(Some(&i.to_be_bytes()), now_nanos())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
