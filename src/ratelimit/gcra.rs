//! Pure GCRA (generic cell rate algorithm) arithmetic: one decision from a bucket's theoretical
//! arrival time (TAT) and the current time, both in nanoseconds. No clock, no storage: the local
//! limiter and the Redis script both run exactly this.

use std::time::Duration;

/// `requests` per `per`, with up to `burst` requests admitted at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub requests: u64,
    pub per: Duration,
    pub burst: u64,
}

impl Quota {
    /// Time between two requests at the sustained rate (at least 1 ns).
    pub fn emission_interval(&self) -> u64 {
        let per = u64::try_from(self.per.as_nanos()).unwrap_or(u64::MAX);
        (per / self.requests.max(1)).max(1)
    }

    /// How far the TAT may run ahead of now: `burst` intervals.
    pub fn tolerance(&self) -> u64 {
        self.emission_interval().saturating_mul(self.burst.max(1))
    }
}

/// One decision, with what the rate-limit headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Requests still admitted right now after this decision.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// Time until this request would be admitted (zero when allowed).
    pub retry_after: Duration,
}

/// Decides one request. Returns the outcome and the new TAT to store when admitted (`None`:
/// leave the stored TAT unchanged).
pub fn check(quota: &Quota, tat_nanos: Option<u64>, now_nanos: u64) -> (Outcome, Option<u64>) {
    let t = quota.emission_interval();
    let tau = quota.tolerance();
    let tat = tat_nanos.unwrap_or(now_nanos).max(now_nanos);
    let new_tat = tat.saturating_add(t);
    let allow_at = new_tat.saturating_sub(tau);
    if now_nanos < allow_at {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset: Duration::from_nanos(tat - now_nanos),
            retry_after: Duration::from_nanos(allow_at - now_nanos),
        };
        return (outcome, None);
    }
    let ahead = new_tat - now_nanos;
    let outcome = Outcome {
        allowed: true,
        remaining: (tau - ahead) / t,
        reset: Duration::from_nanos(ahead),
        retry_after: Duration::ZERO,
    };
    (outcome, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let q = Quota { requests: 10, per: Duration::from_secs(1), burst: 3 };
        let mut tat = None;
        let admitted = (0..5)
            .filter(|_| {
                let (o, next) = check(&q, tat, 1_000);
                tat = next.or(tat);
                o.allowed
            })
            .count();
        assert_eq!(admitted, 3);
        let (o, _) = check(&q, tat, 1_000 + 100_000_000);
        assert!(o.allowed);
    }
}
