//! One cluster rate-limit check at a time through Tollgate's Redis client (`ClusterLimiter` on
//! the redis crate's connection), outside the gateway: the round trip as Tollgate makes it, for
//! the load benchmark to set next to `redis-benchmark`'s (the same script, same CPU placement)
//! and to the cluster route's added latency.
//!
//! Usage: `redis_round_trip REDIS_URL CALLS` (loopback Redis; CALLS at most 1,000,000). Prints
//! `p50_us=N p99_us=N calls=N` on one line.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::observe::Metrics;
use tollgate::ratelimit::cluster::{ClusterLimiter, Settings};
use tollgate::ratelimit::gcra::Quota;

const MAX_CALLS: usize = 1_000_000;
const WARM_UP_CALLS: usize = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(calls)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: redis_round_trip REDIS_URL CALLS");
        std::process::exit(2);
    };
    let calls: usize = calls;
    if calls == 0 || calls > MAX_CALLS {
        eprintln!("CALLS must be 1..={MAX_CALLS}");
        std::process::exit(2);
    }
    let settings = Settings {
        timeout: Duration::from_secs(1),
        ..Settings::new(url)
    };
    let limiter = match ClusterLimiter::new(&settings, Arc::new(Metrics::new())) {
        Ok(limiter) => limiter,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // The benchmark route's limit: never refuses.
    let quota = Quota {
        requests: 1_000_000_000,
        per: Duration::from_secs(1),
        burst: 1_000_000_000,
    };
    let checks = [("tollgate:rl:bench:client-rtt".to_string(), quota)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut took = runtime.block_on(async {
        for _ in 0..WARM_UP_CALLS {
            if let Err(e) = limiter.check_all(&checks).await {
                eprintln!("warm-up call failed: {e}");
                std::process::exit(1);
            }
        }
        let mut took = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            if let Err(e) = limiter.check_all(&checks).await {
                eprintln!("call failed: {e}");
                std::process::exit(1);
            }
            took.push(started.elapsed());
        }
        took
    });
    took.sort_unstable();
    let at =
        |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "p50_us={:.1} p99_us={:.1} calls={calls}",
        at(0.50),
        at(0.99)
    );
}
