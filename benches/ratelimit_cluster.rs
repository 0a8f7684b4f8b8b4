//! One cluster rate-limit check (`ClusterLimiter::check_all`: one EVALSHA round trip to Redis)
//! against a local redis-server started here, with one limit and with three limits on a route.
//! It measures the round trip plus the script, the number to compare with the p50 latency the
//! load benchmark adds. Skipped with a message when `redis-server` is not installed.
//! Run: `cargo bench --bench ratelimit_cluster`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::observe::Metrics;
use tollgate::ratelimit::cluster::{ClusterLimiter, Settings};
use tollgate::ratelimit::gcra::Quota;
use tollgate_testkit::redis::RedisServer;

fn check_all(c: &mut Criterion) {
    if !RedisServer::available() {
        eprintln!("ratelimit_cluster bench skipped: redis-server is not installed");
        return;
    }
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings = Settings {
        timeout: Duration::from_millis(250),
        ..Settings::new(&server.url())
    };
    let limiter = ClusterLimiter::new(&settings, Arc::new(Metrics::new())).expect("limiter");
    // Large enough that every check admits and writes: the full path, never a shortcut.
    let quota = Quota {
        requests: 1_000_000_000,
        per: Duration::from_secs(1),
        burst: 1_000_000,
    };
    let one = vec![("bench:rl:route:users".to_string(), quota)];
    let three = vec![
        ("bench:rl:route:users".to_string(), quota),
        ("bench:rl:consumer:app-42".to_string(), quota),
        ("bench:rl:ip:203.0.113.7".to_string(), quota),
    ];
    // The first call connects and loads the script.
    runtime
        .block_on(limiter.check_all(&one))
        .expect("redis answers");

    let mut group = c.benchmark_group("ratelimit_cluster");
    group.bench_function("check_all/1_limit", |b| {
        b.iter(|| black_box(runtime.block_on(limiter.check_all(&one)).expect("check")))
    });
    group.bench_function("check_all/3_limits", |b| {
        b.iter(|| black_box(runtime.block_on(limiter.check_all(&three)).expect("check")))
    });
    group.finish();
}

criterion_group!(benches, check_all);
criterion_main!(benches);
