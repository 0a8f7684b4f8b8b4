//! Delays between retries: exponential backoff with full jitter (route `retry = { backoff,
//! max_backoff }`).
//!
//! Full jitter (a uniform draw in `[0, cap]`, as in the AWS architecture blog's "Exponential
//! Backoff And Jitter") spreads the retries of many clients that failed together, so they do not
//! hit the recovering target in lock step; it also does the least total waiting of the usual
//! jitter schemes.

use std::time::Duration;

/// The upper bound of the delay before retry number `attempt` (1 = first retry):
/// `min(max, base * 2^(attempt - 1))`, zero for attempt 0 (no retry, no wait). Non-decreasing in
/// `attempt`, and overflow-safe: once the doubling would overflow it is simply `max`.
///
/// Also useful on its own: a caller checking whether a retry still fits in the route deadline
/// can compare the worst case against the time left.
pub fn backoff_cap(attempt: u32, base: Duration, max: Duration) -> Duration {
    let Some(doublings) = attempt.checked_sub(1) else {
        return Duration::ZERO;
    };
    // 2^31 is the largest power of two `u32` holds; beyond it any non-zero base is past any
    // `max` a Duration can express anyway (2^32 ns is already 4.3 s, times 2^32 is 585 years).
    let grown = 1u32
        .checked_shl(doublings)
        .and_then(|factor| base.checked_mul(factor));
    match grown {
        Some(d) => d.min(max),
        None if base.is_zero() => Duration::ZERO,
        None => max,
    }
}

/// The delay before retry number `attempt` (1 = first retry): uniform in
/// `[0, backoff_cap(attempt, base, max)]`, picked by `rand01`, a number in `[0, 1)` (production
/// passes `fastrand::f64()`, tests a fixed value; see [`jittered_backoff`]). Out-of-range or NaN
/// `rand01` is clamped to `[0, 1]` rather than trusted, so the result is never above the cap.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration, rand01: f64) -> Duration {
    let cap = backoff_cap(attempt, base, max);
    // Not `clamp`, which keeps NaN as NaN: NaN fails `>=` and becomes 0.
    let r = if rand01 >= 0.0 { rand01.min(1.0) } else { 0.0 };
    // `try_from` instead of `mul_f64`: the product can round past `Duration::MAX` when `cap` is
    // near it, and `mul_f64` would panic there. `min(cap)` guards the other rounding direction.
    Duration::try_from_secs_f64(cap.as_secs_f64() * r).map_or(cap, |d| d.min(cap))
}

/// [`backoff_delay`] with a fresh random draw, for the request path.
pub fn jittered_backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    backoff_delay(attempt, base, max, fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const JUST_BELOW_ONE: f64 = 1.0 - f64::EPSILON;

    #[test]
    fn cap_doubles_from_base_until_max() {
        let (base, max) = (ms(25), ms(250));
        let caps: Vec<_> = (0..7).map(|a| backoff_cap(a, base, max)).collect();
        assert_eq!(
            caps,
            vec![ms(0), ms(25), ms(50), ms(100), ms(200), ms(250), ms(250)]
        );
    }

    #[test]
    fn bounds_for_attempts_1_to_40() {
        let (base, max) = (ms(25), ms(250));
        for attempt in 1..=40 {
            let cap = ms(25 * (1u64 << (attempt - 1).min(20))).min(max);
            for r in [0.0, 0.1, 0.5, 0.9, JUST_BELOW_ONE] {
                let d = backoff_delay(attempt, base, max, r);
                assert!(d <= cap, "attempt {attempt} r {r}: {d:?} > {cap:?}");
                assert!(d <= max);
                // Uniform: the delay is r of the cap, to rounding.
                let expected = cap.as_secs_f64() * r;
                assert!((d.as_secs_f64() - expected).abs() < 1e-9, "{attempt} {r}");
            }
            assert!(backoff_delay(attempt, base, max, JUST_BELOW_ONE) > cap.mul_f64(0.99));
        }
    }

    #[test]
    fn never_above_max_even_for_huge_attempts_and_durations() {
        for (base, max) in [
            (ms(25), ms(250)),
            (Duration::from_secs(1), Duration::MAX),
            (Duration::MAX, Duration::MAX),
            (Duration::MAX, ms(1)),
            (Duration::from_nanos(1), Duration::MAX),
        ] {
            for attempt in [1, 2, 31, 32, 33, 40, 64, 1000, u32::MAX] {
                for r in [0.0, 0.5, JUST_BELOW_ONE, 1.0] {
                    let d = backoff_delay(attempt, base, max, r);
                    assert!(d <= max, "{attempt} {base:?} {max:?} {r}");
                }
            }
        }
        assert_eq!(
            backoff_cap(u32::MAX, Duration::from_nanos(1), Duration::MAX),
            Duration::MAX
        );
        assert_eq!(backoff_cap(40, ms(25), ms(250)), ms(250));
    }

    #[test]
    fn zero_jitter_gives_zero() {
        for attempt in 0..=40 {
            assert_eq!(backoff_delay(attempt, ms(25), ms(250), 0.0), Duration::ZERO);
        }
    }

    #[test]
    fn zero_base_or_attempt_gives_zero() {
        assert_eq!(backoff_delay(0, ms(25), ms(250), 0.5), Duration::ZERO);
        for attempt in [1, 10, 40, u32::MAX] {
            assert_eq!(
                backoff_cap(attempt, Duration::ZERO, ms(250)),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn cap_is_monotone() {
        for (base, max) in [
            (ms(25), ms(250)),
            (ms(1), Duration::from_secs(3600)),
            (Duration::from_nanos(3), Duration::MAX),
        ] {
            let mut last = Duration::ZERO;
            for attempt in 0..=70 {
                let cap = backoff_cap(attempt, base, max);
                assert!(cap >= last, "{attempt}: {cap:?} < {last:?}");
                assert!(cap <= max);
                last = cap;
            }
        }
    }

    #[test]
    fn out_of_range_random_input_is_clamped() {
        let (base, max) = (ms(100), ms(100));
        assert_eq!(backoff_delay(1, base, max, f64::NAN), Duration::ZERO);
        assert_eq!(backoff_delay(1, base, max, -3.0), Duration::ZERO);
        assert_eq!(backoff_delay(1, base, max, 7.0), ms(100));
        assert_eq!(backoff_delay(1, base, max, f64::INFINITY), ms(100));
    }

    #[test]
    fn random_draws_stay_in_range() {
        let (base, max) = (ms(25), ms(250));
        for attempt in 1..=10 {
            let cap = backoff_cap(attempt, base, max);
            for _ in 0..100 {
                assert!(jittered_backoff(attempt, base, max) <= cap);
            }
        }
    }
}
