//! The generic cell rate algorithm (GCRA), the token bucket kept as one number: the theoretical
//! arrival time (TAT) of the next request. Pure arithmetic, no clock and no storage, so the local
//! store and the Redis script share one definition and it can be tested with a made-up clock.
//!
//! With emission interval `T = per / requests` and tolerance `τ = T × (burst − 1)`, a request at
//! `now` is admitted when `max(TAT, now) − now ≤ τ`, and then `TAT ← max(TAT, now) + T`. An empty
//! history (no TAT, or a TAT in the past) is a full bucket: exactly `burst` requests pass at once,
//! then one more every `T`; idling longer never stores more than `burst`.

use std::time::Duration;

/// A limit as GCRA parameters: `requests` per `per`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub requests: u64,
    pub per: Duration,
    pub burst: u64,
}

impl Quota {
    /// Time one request "costs": `per / requests` (truncated to whole nanoseconds, at least 1).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos() as u64)
    }

    /// How far the TAT may run ahead of `now` for a request to still be admitted:
    /// `emission_interval × (burst − 1)` (zero for `burst` ≤ 1). A full bucket has TAT ≤ now; each
    /// admitted request pushes TAT one interval further, so `burst` requests fit before the
    /// distance exceeds this.
    pub fn tolerance(&self) -> Duration {
        Duration::from_nanos(sat(self.tolerance_nanos()))
    }

    fn interval_nanos(&self) -> u128 {
        (self.per.as_nanos() / u128::from(self.requests.max(1))).max(1)
    }

    fn tolerance_nanos(&self) -> u128 {
        self.interval_nanos()
            .saturating_mul(u128::from(self.burst.max(1) - 1))
    }
}

/// The outcome of one check against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Requests still admissible right now after this decision.
    pub remaining: u64,
    /// Time until the bucket is full again (RateLimit `reset`).
    pub reset: Duration,
    /// When rejected: time until one request would be admitted (zero when allowed).
    pub retry_after: Duration,
}

/// Pure GCRA step on a theoretical arrival time in nanoseconds (u64, arbitrary epoch; the Redis
/// script uses Redis server time with the same arithmetic): returns the outcome and the new TAT
/// to store if allowed (`None` when rejected: nothing changes).
///
/// Overflow saturates at `u64::MAX` nanoseconds (584 years), far beyond any valid quota.
pub fn check(quota: &Quota, tat_nanos: Option<u64>, now_nanos: u64) -> (Outcome, Option<u64>) {
    let t = quota.interval_nanos();
    let tau = quota.tolerance_nanos();
    let now = u128::from(now_nanos);
    let tat = u128::from(tat_nanos.unwrap_or(now_nanos)).max(now);
    let ahead = tat - now;
    if ahead > tau {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset: nanos(ahead),
            retry_after: nanos(ahead - tau),
        };
        return (outcome, None);
    }
    let new_tat = tat.saturating_add(t);
    let ahead = new_tat - now;
    let remaining = if ahead > tau {
        0
    } else {
        sat((tau - ahead) / t + 1)
    };
    let outcome = Outcome {
        allowed: true,
        remaining,
        reset: nanos(ahead),
        retry_after: Duration::ZERO,
    };
    (outcome, Some(sat(new_tat)))
}

/// Gives back one admitted request: the inverse of an admitting [`check`] step, for a request
/// that another of its limits turned down after this one already counted it. Exact for every
/// later check (they all compare against `max(TAT, now)` with a later `now`).
pub fn refund(quota: &Quota, tat_nanos: u64) -> u64 {
    sat(u128::from(tat_nanos).saturating_sub(quota.interval_nanos()))
}

fn sat(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(sat(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn quota(requests: u64, per_secs: u64, burst: u64) -> Quota {
        Quota {
            requests,
            per: Duration::from_secs(per_secs),
            burst,
        }
    }

    /// A bucket driven by a made-up clock.
    struct Bucket {
        quota: Quota,
        tat: Option<u64>,
    }

    impl Bucket {
        fn at(&mut self, now: u64) -> Outcome {
            let (outcome, tat) = check(&self.quota, self.tat, now);
            if let Some(tat) = tat {
                self.tat = Some(tat);
            }
            outcome
        }

        /// Admitted count of `n` requests all arriving at `now`.
        fn burst_at(&mut self, now: u64, n: u64) -> u64 {
            (0..n).filter(|_| self.at(now).allowed).count() as u64
        }
    }

    #[test]
    fn parameters() {
        let q = quota(100, 60, 20);
        assert_eq!(q.emission_interval(), Duration::from_millis(600));
        assert_eq!(q.tolerance(), Duration::from_millis(600 * 19));
        assert_eq!(quota(1, 1, 1).tolerance(), Duration::ZERO);
    }

    #[test]
    fn exactly_burst_at_t0_then_one_per_interval() {
        let mut b = Bucket {
            quota: quota(10, 1, 5),
            tat: None,
        };
        let t0 = 1_000 * SEC;
        assert_eq!(b.burst_at(t0, 50), 5);
        let interval = SEC / 10;
        // Just before one interval has passed: still nothing.
        assert_eq!(b.burst_at(t0 + interval - 1, 10), 0);
        for k in 1..=20 {
            assert_eq!(b.burst_at(t0 + k * interval, 10), 1, "interval {k}");
        }
    }

    #[test]
    fn long_idle_grants_no_more_than_burst() {
        let mut b = Bucket {
            quota: quota(10, 1, 5),
            tat: None,
        };
        assert_eq!(b.burst_at(SEC, 5), 5);
        assert_eq!(b.burst_at(SEC + 3_600 * SEC, 100), 5);
        assert_eq!(b.burst_at(SEC + 7_200 * SEC, 100), 5);
    }

    #[test]
    fn outcome_fields_follow_the_bucket() {
        let mut b = Bucket {
            quota: quota(10, 1, 3),
            tat: None,
        };
        let t0 = 50 * SEC;
        let interval = Duration::from_millis(100);
        let first = b.at(t0);
        assert_eq!(
            first,
            Outcome {
                allowed: true,
                remaining: 2,
                reset: interval,
                retry_after: Duration::ZERO
            }
        );
        assert_eq!(b.at(t0).remaining, 1);
        let last = b.at(t0);
        assert_eq!(
            (last.allowed, last.remaining, last.reset),
            (true, 0, interval * 3)
        );
        let refused = b.at(t0);
        assert_eq!(
            refused,
            Outcome {
                allowed: false,
                remaining: 0,
                reset: interval * 3,
                retry_after: interval
            }
        );
        // Half an interval later, half an interval to wait.
        let later = b.at(t0 + 50_000_000);
        assert!(!later.allowed);
        assert_eq!(later.retry_after, interval / 2);
    }

    #[test]
    fn rejection_changes_nothing_and_refund_undoes_an_admission() {
        let q = quota(2, 1, 2);
        let (_, tat) = check(&q, None, SEC);
        let (_, tat) = check(&q, tat, SEC);
        let (out, none) = check(&q, tat, SEC);
        assert!(!out.allowed);
        assert_eq!(none, None);
        let refunded = refund(&q, tat.unwrap());
        let (again, _) = check(&q, Some(refunded), SEC);
        assert!(again.allowed);
        assert_eq!(again.remaining, 0);
    }

    #[test]
    fn extreme_values_saturate() {
        let q = Quota {
            requests: 1,
            per: Duration::from_secs(u64::MAX / 4),
            burst: u64::MAX,
        };
        let (out, tat) = check(&q, Some(u64::MAX - 1), u64::MAX);
        assert!(out.allowed);
        assert_eq!(tat, Some(u64::MAX));
        // More requests than nanoseconds in `per`: one nanosecond each, never zero.
        let fast = Quota {
            requests: u64::MAX,
            per: Duration::from_nanos(1),
            burst: 1,
        };
        assert_eq!(fast.emission_interval(), Duration::from_nanos(1));
        // A clock going backwards is treated as "no time passed".
        let q = quota(1, 1, 1);
        let (_, tat) = check(&q, None, 10 * SEC);
        assert!(!check(&q, tat, 5 * SEC).0.allowed);
    }
}
