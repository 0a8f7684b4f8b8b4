//! The per-upstream retry budget (`retry_budget = { ratio, window, min_per_second }`): how many
//! retries an upstream may receive, so that retries cannot turn a partial outage into a storm.
//!
//! # The rule
//! Over the sliding `window` (the same 10-bucket window as the circuit breaker, so a count ages
//! out between 0.9 × `window` and `window` after it was made), a retry is allowed when
//!
//! ```text
//! retries_in_window + 1 <= ratio * requests_in_window + min_per_second * window_seconds
//! ```
//!
//! where `requests` are first attempts ([`RetryBudget::record_request`]) and `retries` are the
//! retries this budget granted. `window_seconds` may be fractional (`"500ms"` → 0.5).
//!
//! The floor is a reserve spread over the window, not a per-second rate: with the defaults
//! (`ratio = 0.2, window = "10s", min_per_second = 3`) a quiet upstream may take 30 retries in
//! any 10 s, even all in the same second. This is the reserve of Finagle's `RetryBudget`
//! (`minRetriesPerSec × ttl`), and it keeps the rule one inequality. Under load the ratio term
//! dominates: 1,000 requests in the window allow 200 + 30 retries, so the upstream sees at most
//! 1.23× its client traffic however many attempts a route allows.
//!
//! A refused retry is not recorded, so a refusal never eats budget.
//!
//! # Cost
//! A `std` mutex held for a bucket update (and a 10-bucket sum when acquiring); no allocation
//! after [`RetryBudget::new`].

use super::window::Window;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Slack for the floating-point product: `0.29 * 100.0` is `28.999999999999996`, and the 29th
/// retry must still be allowed.
const EPSILON: f64 = 1e-9;

/// Settings of one upstream's budget. [`Default`] is what applies when `retry_budget` is absent.
/// Equal (and hashed) by value, the ratio by its bits, so it can key state kept across reloads.
#[derive(Debug, Clone, Copy)]
pub struct BudgetSettings {
    /// Retries allowed per first attempt in the window, in [0, 1].
    pub ratio: f64,
    pub window: Duration,
    /// The floor: a reserve of `min_per_second × window` retries, whatever the traffic.
    pub min_per_second: u32,
}

impl BudgetSettings {
    fn key(&self) -> (u64, Duration, u32) {
        (self.ratio.to_bits(), self.window, self.min_per_second)
    }
}

impl PartialEq for BudgetSettings {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for BudgetSettings {}

impl std::hash::Hash for BudgetSettings {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl Default for BudgetSettings {
    /// `ratio = 0.2, window = "10s", min_per_second = 3`.
    fn default() -> Self {
        BudgetSettings {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_per_second: 3,
        }
    }
}

impl BudgetSettings {
    /// `ratio` in [0, 1] (0 with a floor of 0 disables retries) and a non-zero window.
    pub fn validate(&self) -> Result<(), String> {
        // Written so that NaN fails too.
        if !(self.ratio >= 0.0 && self.ratio <= 1.0) {
            return Err(format!("ratio must be in [0, 1], got {}", self.ratio));
        }
        if self.window.is_zero() {
            return Err("window must be greater than 0".into());
        }
        Ok(())
    }

    /// The floor term of the rule, in retries per window.
    fn reserve(&self) -> f64 {
        f64::from(self.min_per_second) * self.window.as_secs_f64()
    }
}

/// One upstream's retry budget. Share it by reference (`Arc<RetryBudget>`) between threads.
#[derive(Debug)]
pub struct RetryBudget {
    settings: BudgetSettings,
    /// Requests (first attempts) in slot 0, granted retries in slot 1.
    window: Mutex<Window>,
}

impl RetryBudget {
    pub fn new(settings: BudgetSettings, now: Instant) -> RetryBudget {
        RetryBudget {
            settings,
            window: Mutex::new(Window::new(settings.window, now)),
        }
    }

    pub fn settings(&self) -> &BudgetSettings {
        &self.settings
    }

    /// Counts a first attempt to this upstream (every request, retried or not).
    pub fn record_request(&self, now: Instant) {
        self.lock().add(now, [1, 0]);
    }

    /// Takes one retry from the budget if there is room; `false` = budget exhausted (the caller
    /// counts `tollgate_upstream_retry_budget_exhausted_total` and does not retry).
    pub fn try_acquire_retry(&self, now: Instant) -> bool {
        let mut window = self.lock();
        let [requests, retries] = window.totals(now);
        let allowed = self.settings.ratio * requests as f64 + self.settings.reserve();
        if (retries + 1) as f64 <= allowed + EPSILON {
            window.add(now, [0, 1]);
            true
        } else {
            false
        }
    }

    /// Nothing panics under this lock; a poisoned one still holds consistent counts.
    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(b: &RetryBudget, now: Instant) -> usize {
        // Bounded so a broken budget fails the test instead of looping forever.
        (0..100_000)
            .take_while(|_| b.try_acquire_retry(now))
            .count()
    }

    #[test]
    fn defaults_match_the_config_contract() {
        let d = BudgetSettings::default();
        assert_eq!(d.ratio, 0.2);
        assert_eq!(d.window, Duration::from_secs(10));
        assert_eq!(d.min_per_second, 3);
        assert!(d.validate().is_ok());
    }

    #[test]
    fn validate_rejects_out_of_range_settings() {
        let ok = BudgetSettings {
            ratio: 0.0,
            min_per_second: 0,
            ..BudgetSettings::default()
        };
        assert!(ok.validate().is_ok());
        for ratio in [-0.1, 1.5, f64::NAN] {
            let s = BudgetSettings {
                ratio,
                ..BudgetSettings::default()
            };
            assert!(s.validate().is_err(), "{ratio}");
        }
        let s = BudgetSettings {
            window: Duration::ZERO,
            ..BudgetSettings::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn with_no_traffic_the_floor_allows_exactly_its_reserve() {
        let t0 = Instant::now();
        let b = RetryBudget::new(BudgetSettings::default(), t0);
        // 3 per second over 10 s.
        assert_eq!(drain(&b, t0), 30);
        assert!(!b.try_acquire_retry(t0 + ms(5000)));
    }

    #[test]
    fn ratio_of_requests_plus_floor() {
        let t0 = Instant::now();
        let b = RetryBudget::new(BudgetSettings::default(), t0);
        for i in 0..100 {
            b.record_request(t0 + ms(i));
        }
        // 0.2 * 100 + 3 * 10.
        assert_eq!(drain(&b, t0 + ms(100)), 50);
        assert!(!b.try_acquire_retry(t0 + ms(100)));
        // Each 5 more requests earn one more retry.
        for _ in 0..4 {
            b.record_request(t0 + ms(200));
        }
        assert!(!b.try_acquire_retry(t0 + ms(200)));
        b.record_request(t0 + ms(200));
        assert!(b.try_acquire_retry(t0 + ms(200)));
        assert!(!b.try_acquire_retry(t0 + ms(200)));
    }

    #[test]
    fn ratio_only_without_floor() {
        let t0 = Instant::now();
        let b = RetryBudget::new(
            BudgetSettings {
                ratio: 0.29,
                min_per_second: 0,
                ..BudgetSettings::default()
            },
            t0,
        );
        assert!(!b.try_acquire_retry(t0));
        for _ in 0..100 {
            b.record_request(t0);
        }
        // 0.29 * 100 is 28.999999999999996 in f64: still 29.
        assert_eq!(drain(&b, t0), 29);
    }

    #[test]
    fn fractional_window_floor() {
        let t0 = Instant::now();
        let b = RetryBudget::new(
            BudgetSettings {
                ratio: 0.0,
                window: ms(500),
                min_per_second: 3,
            },
            t0,
        );
        // 3 * 0.5 = 1.5: one retry.
        assert_eq!(drain(&b, t0), 1);
    }

    #[test]
    fn budget_recovers_as_the_window_slides() {
        let t0 = Instant::now();
        let b = RetryBudget::new(BudgetSettings::default(), t0);
        for _ in 0..100 {
            b.record_request(t0);
        }
        assert_eq!(drain(&b, t0), 50);
        // Half a window later nothing has aged out yet.
        assert!(!b.try_acquire_retry(t0 + ms(5000)));
        // A full window later the requests and the retries have both aged out: the floor again.
        assert_eq!(drain(&b, t0 + ms(10_000)), 30);
    }

    #[test]
    fn retries_age_out_bucket_by_bucket() {
        let t0 = Instant::now();
        let b = RetryBudget::new(BudgetSettings::default(), t0);
        // Spend the floor 10 retries per second for 3 s.
        for s in 0..3 {
            assert_eq!(drain_n(&b, t0 + ms(s * 1000), 10), 10);
        }
        assert!(!b.try_acquire_retry(t0 + ms(9_999)));
        // At 10 s the first second's 10 retries leave the window.
        assert_eq!(drain(&b, t0 + ms(10_000)), 10);
        assert_eq!(drain(&b, t0 + ms(11_000)), 10);
    }

    fn drain_n(b: &RetryBudget, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| b.try_acquire_retry(now)).count()
    }

    #[test]
    fn refusals_do_not_consume_budget() {
        let t0 = Instant::now();
        let b = RetryBudget::new(BudgetSettings::default(), t0);
        assert_eq!(drain(&b, t0), 30);
        for _ in 0..1000 {
            assert!(!b.try_acquire_retry(t0));
        }
        // 5 requests earn exactly one retry despite the 1,000 refusals.
        for _ in 0..5 {
            b.record_request(t0);
        }
        assert!(b.try_acquire_retry(t0));
    }

    #[test]
    fn steady_failing_upstream_stays_within_budget() {
        // Every request fails and the caller would retry up to 3 times: the upstream sees at
        // most 1.2x its requests plus the floor.
        let t0 = Instant::now();
        let b = RetryBudget::new(BudgetSettings::default(), t0);
        let mut retries = 0u64;
        let requests = 20_000u64;
        for i in 0..requests {
            let now = t0 + Duration::from_micros(i * 1000); // 1,000 rps for 20 s
            b.record_request(now);
            for _ in 0..3 {
                if !b.try_acquire_retry(now) {
                    break;
                }
                retries += 1;
            }
        }
        // 20 s = 2 windows: 0.2 * 20,000 + 2 * 30 at most.
        assert!(retries <= 4_060, "{retries}");
        assert!(retries >= 3_900, "{retries}");
    }

    #[test]
    fn shared_between_threads() {
        let t0 = Instant::now();
        let b = RetryBudget::new(BudgetSettings::default(), t0);
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let b = &b;
                    s.spawn(move || {
                        (0..100)
                            .filter(|_| {
                                b.record_request(t0);
                                b.try_acquire_retry(t0)
                            })
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        // 400 requests: 80 + 30, never more however the threads interleave.
        assert!(granted <= 110, "{granted}");
        assert!(!b.try_acquire_retry(t0));
    }
}
