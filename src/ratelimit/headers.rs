//! `RateLimit-Policy` and `RateLimit` response fields as in draft-ietf-httpapi-ratelimit-headers-10
//! (structured-field lists, one item per limit, named by the limit's config name):
//!
//! - `RateLimit-Policy: "per_ip";q=100;w=60` — quota `q` (the limit's `requests`) per window `w`
//!   (its `per` in seconds, rounded up); a `burst` above `requests` is the quota instead, over
//!   the window that keeps the same rate, so that `r` never exceeds `q`;
//! - `RateLimit: "per_ip";r=42;t=3` — `r` requests still admissible now, `t` seconds (rounded up)
//!   until the bucket is full again.

use super::gcra::{Outcome, Quota};
use std::time::Duration;

/// One `RateLimit-Policy` list item.
pub fn policy_item(name: &str, quota: &Quota) -> String {
    // A full bucket holds `burst`: as the quota, with the time the bucket takes to fill.
    let (q, w) = if quota.burst > quota.requests {
        let w = quota.per.as_secs_f64() * quota.burst as f64 / quota.requests.max(1) as f64;
        (quota.burst, w.ceil() as u64)
    } else {
        (quota.requests, ceil_secs(quota.per))
    };
    format!("\"{name}\";q={q};w={}", w.max(1))
}

/// Appends one `RateLimit` list item. Runs on every limited request: plain pushes and `itoa`
/// rather than the formatting machinery.
pub fn push_state(out: &mut String, name: &str, outcome: &Outcome) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    let mut n = itoa::Buffer::new();
    out.push('"');
    out.push_str(name);
    out.push_str("\";r=");
    out.push_str(n.format(outcome.remaining));
    out.push_str(";t=");
    out.push_str(n.format(ceil_secs(outcome.reset)));
}

const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// The two response fields of a limited request, from its policy list and state list (an
/// empty state, when every limit was skipped, sends the policy alone).
pub fn response_fields(
    (policy, state): &(http::HeaderValue, String),
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut fields = Vec::with_capacity(2);
    fields.push((RATELIMIT_POLICY, policy.clone()));
    if let Ok(state) = http::HeaderValue::from_str(state) {
        if !state.is_empty() {
            fields.push((RATELIMIT, state));
        }
    }
    fields
}

/// Whole seconds, rounded up: a client waiting that long never comes back too early.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let q = Quota {
            requests: 100,
            per: Duration::from_millis(1500),
            burst: 20,
        };
        assert_eq!(policy_item("per_ip", &q), "\"per_ip\";q=100;w=2");
        // 1 a minute in bursts of 50: 50 over the 50 minutes a full bucket takes to fill, the
        // same rate, and `r` (up to 50) never above `q`.
        let bursty = Quota {
            requests: 1,
            per: Duration::from_secs(60),
            burst: 50,
        };
        assert_eq!(policy_item("l", &bursty), "\"l\";q=50;w=3000");
        let mut s = String::new();
        let o = Outcome {
            allowed: true,
            remaining: 3,
            reset: Duration::from_millis(100),
            retry_after: Duration::ZERO,
        };
        push_state(&mut s, "a", &o);
        push_state(
            &mut s,
            "b",
            &Outcome {
                reset: Duration::ZERO,
                ..o
            },
        );
        assert_eq!(s, "\"a\";r=3;t=1, \"b\";r=3;t=0");
    }
}
