//! Request-path cost of the resilience policies, per request:
//!   - `circuit/admit+record`: admitting a request to a closed circuit and reporting a success;
//!   - `budget/record_request+try_acquire_retry`: counting a first attempt and asking for a retry
//!     (a mix of granted and refused, as the budget fills and the window slides);
//!   - `backoff/delay`: one jittered delay;
//!   - the first two again with two threads hammering the same circuit or budget, the worst case
//!     for their mutex (reported per operation per thread).
//!
//! The clock advances 1 µs per iteration, so the windows roll over buckets as they would under
//! 1M requests per second. Run: `cargo bench --bench resilience`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::upstream::backoff::backoff_delay;
use tollgate::upstream::budget::{BudgetSettings, RetryBudget};
use tollgate::upstream::circuit::{Circuit, CircuitSettings};

fn circuit_settings() -> CircuitSettings {
    CircuitSettings {
        failure_ratio: 0.5,
        min_requests: 20,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        half_open_probes: 3,
    }
}

fn circuit_step(c: &Circuit, now: Instant) {
    if let Some(ticket) = c.admit(now).ticket() {
        black_box(c.record(ticket, true, now));
    }
}

fn budget_step(b: &RetryBudget, now: Instant) {
    b.record_request(now);
    black_box(b.try_acquire_retry(now));
}

fn single_thread(c: &mut Criterion) {
    let t0 = Instant::now();
    let circuit = Circuit::new(circuit_settings(), t0);
    let mut now = t0;
    c.bench_function("circuit/admit+record", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            circuit_step(black_box(&circuit), now);
        })
    });

    let budget = RetryBudget::new(BudgetSettings::default(), t0);
    let mut now = t0;
    c.bench_function("budget/record_request+try_acquire_retry", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            budget_step(black_box(&budget), now);
        })
    });

    let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
    let mut attempt = 0u32;
    c.bench_function("backoff/delay", |b| {
        b.iter(|| {
            attempt = attempt % 5 + 1;
            backoff_delay(black_box(attempt), base, max, fastrand::f64())
        })
    });
}

/// Runs `step` `iters` times on each of two threads at once; returns the wall time, which is the
/// time per operation per thread once divided by `iters`.
fn two_threads<T: Sync>(shared: &T, iters: u64, step: fn(&T, Instant)) -> Duration {
    let t0 = Instant::now();
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let run = || {
            barrier.wait();
            let mut now = t0;
            for _ in 0..iters {
                now += Duration::from_micros(1);
                step(shared, now);
            }
        };
        let other = s.spawn(run);
        run();
        let _ = other.join();
    });
    t0.elapsed()
}

fn contended(c: &mut Criterion) {
    let t0 = Instant::now();
    let circuit = Circuit::new(circuit_settings(), t0);
    c.bench_function("circuit/admit+record/2 threads", |b| {
        b.iter_custom(|iters| two_threads(&circuit, iters, circuit_step))
    });
    let budget = RetryBudget::new(BudgetSettings::default(), t0);
    c.bench_function("budget/record_request+try_acquire_retry/2 threads", |b| {
        b.iter_custom(|iters| two_threads(&budget, iters, budget_step))
    });
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);
