//! What the client and the metrics are told about the cache's part in a response:
//! `Cache-Status` (RFC 9211, cache name `tollgate`) and the `result` label.

use super::CacheUse;
use pingora::cache::{CachePhase, NoCacheReason};
use std::time::SystemTime;

/// The metrics `result` of a request on a cached route. A request that failed after its
/// lookup (the upstream, or the client going away: pingora-cache then turns itself off) counts
/// by what the lookup found: a miss that failed is a miss, not a bypass.
pub fn result(phase: CachePhase, cache: &CacheUse) -> &'static str {
    let failed = matches!(
        phase,
        CachePhase::Disabled(NoCacheReason::UpstreamError | NoCacheReason::InternalError)
    );
    let phase = match cache.seen {
        Some(seen) if failed => seen,
        _ => phase,
    };
    match phase {
        _ if cache.stale_on_error => "stale",
        CachePhase::Hit => "hit",
        CachePhase::Stale | CachePhase::StaleUpdating => "stale",
        CachePhase::Miss => "miss",
        CachePhase::Expired => "expired",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "revalidated",
        _ => "bypass",
    }
}

/// The `Cache-Status` value of a response on a cached route. `ttl`: seconds of freshness left
/// on the entry used (negative when stale); `collapsed`: the request waited for another one's
/// fetch of the same entry.
pub fn header(
    phase: CachePhase,
    cache: &CacheUse,
    ttl: Option<i64>,
    collapsed: bool,
    upstream_status: Option<u16>,
) -> String {
    let mut s = String::with_capacity(64);
    s.push_str("tollgate; ");
    match phase {
        _ if cache.stale_on_error => {
            s.push_str("hit");
            push_ttl(&mut s, ttl);
            s.push_str("; detail=stale-if-error");
        }
        CachePhase::Hit => {
            s.push_str("hit");
            push_ttl(&mut s, ttl);
        }
        CachePhase::Stale | CachePhase::StaleUpdating => {
            s.push_str("hit");
            push_ttl(&mut s, ttl);
            s.push_str("; detail=stale-while-revalidate");
        }
        CachePhase::Miss => {
            s.push_str("fwd=miss");
            push_forwarded(&mut s, cache, upstream_status);
        }
        CachePhase::Expired => {
            s.push_str("fwd=stale");
            push_forwarded(&mut s, cache, upstream_status);
        }
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            s.push_str("fwd=stale; fwd-status=304");
            push_ttl(&mut s, ttl);
        }
        // The upstream failed and no stale entry could stand in (pingora-cache turns itself
        // off then): whether the lookup found one past its windows is in `seen`.
        CachePhase::Disabled(NoCacheReason::UpstreamError)
            if cache.pass.is_none() && !cache.unsafe_method =>
        {
            let found_stale = cache.seen == Some(CachePhase::Expired);
            s.push_str(if found_stale { "fwd=stale" } else { "fwd=miss" });
            s.push_str("; detail=upstream-error");
        }
        _ => {
            s.push_str("fwd=bypass");
            let detail = if cache.unsafe_method {
                "method"
            } else if let Some(detail) = cache.pass {
                detail
            } else {
                match phase {
                    CachePhase::Disabled(
                        NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge,
                    ) => "too-large",
                    CachePhase::Disabled(NoCacheReason::CacheLockTimeout) => "lock-timeout",
                    _ => "uncacheable",
                }
            };
            s.push_str("; detail=");
            s.push_str(detail);
        }
    }
    if collapsed {
        s.push_str("; collapsed");
    }
    s
}

fn push_forwarded(s: &mut String, cache: &CacheUse, upstream_status: Option<u16>) {
    if let Some(status) = upstream_status {
        s.push_str("; fwd-status=");
        s.push_str(itoa::Buffer::new().format(status));
    }
    if cache.stored && cache.pass.is_none() {
        s.push_str("; stored");
    } else if let Some(detail) = cache.pass {
        s.push_str("; detail=");
        s.push_str(detail);
    }
}

fn push_ttl(s: &mut String, ttl: Option<i64>) {
    // itoa rather than `write!`: this is on every hit, and the formatting machinery costs
    // several hundred instructions for one number.
    if let Some(ttl) = ttl {
        s.push_str("; ttl=");
        s.push_str(itoa::Buffer::new().format(ttl));
    }
}

/// Seconds of freshness left at `now` for an entry fresh until `fresh_until`: whole seconds
/// left while fresh, and at most -1 once stale (RFC 9211: a negative `ttl` is a stale entry;
/// half a second past its freshness is not `ttl=0`).
pub fn ttl_at(fresh_until: SystemTime, now: SystemTime) -> i64 {
    match fresh_until.duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => {
            let past = past.duration();
            let whole = past.as_secs() + u64::from(past.subsec_nanos() > 0);
            -i64::try_from(whole).unwrap_or(i64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ttl_is_negative_as_soon_as_an_entry_is_stale() {
        let now = SystemTime::now();
        let ms = Duration::from_millis;
        assert_eq!(ttl_at(now + ms(25_500), now), 25);
        assert_eq!(ttl_at(now + ms(500), now), 0);
        assert_eq!(ttl_at(now, now), 0);
        assert_eq!(ttl_at(now - ms(500), now), -1);
        assert_eq!(ttl_at(now - ms(2_000), now), -2);
        assert_eq!(ttl_at(now - ms(2_001), now), -3);
    }
}
