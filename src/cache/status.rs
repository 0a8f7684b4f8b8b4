//! What the client and the metrics are told about the cache's part in a response:
//! `Cache-Status` (RFC 9211, cache name `tollgate`) and the `result` label.

use super::CacheUse;
use pingora::cache::CachePhase;
use std::fmt::Write;
use std::time::SystemTime;

/// The `Cache-Status` value and the metrics `result` of a response on a cached route.
/// `ttl`: seconds of freshness left on the entry used (negative when stale); `collapsed`: the
/// request waited for another one's fetch of the same entry.
pub fn describe(
    phase: CachePhase,
    cache: &CacheUse,
    ttl: Option<i64>,
    collapsed: bool,
    upstream_status: Option<u16>,
) -> (String, &'static str) {
    let mut s = String::from("tollgate; ");
    let result = match phase {
        _ if cache.stale_on_error => {
            s.push_str("hit");
            push_ttl(&mut s, ttl);
            s.push_str("; detail=stale-if-error");
            "stale"
        }
        CachePhase::Hit => {
            s.push_str("hit");
            push_ttl(&mut s, ttl);
            "hit"
        }
        CachePhase::Stale | CachePhase::StaleUpdating => {
            s.push_str("hit");
            push_ttl(&mut s, ttl);
            s.push_str("; detail=stale-while-revalidate");
            "stale"
        }
        CachePhase::Miss => {
            s.push_str("fwd=miss");
            push_forwarded(&mut s, cache, upstream_status);
            "miss"
        }
        CachePhase::Expired => {
            s.push_str("fwd=stale");
            push_forwarded(&mut s, cache, upstream_status);
            "expired"
        }
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            s.push_str("fwd=stale; fwd-status=304");
            push_ttl(&mut s, ttl);
            "revalidated"
        }
        _ => {
            s.push_str("fwd=bypass");
            let detail = if cache.unsafe_method {
                "method"
            } else {
                cache.pass.unwrap_or("uncacheable")
            };
            let _ = write!(s, "; detail={detail}");
            "bypass"
        }
    };
    if collapsed {
        s.push_str("; collapsed");
    }
    (s, result)
}

fn push_forwarded(s: &mut String, cache: &CacheUse, upstream_status: Option<u16>) {
    if let Some(status) = upstream_status {
        let _ = write!(s, "; fwd-status={status}");
    }
    if cache.stored && cache.pass.is_none() {
        s.push_str("; stored");
    } else if let Some(detail) = cache.pass {
        let _ = write!(s, "; detail={detail}");
    }
}

fn push_ttl(s: &mut String, ttl: Option<i64>) {
    if let Some(ttl) = ttl {
        let _ = write!(s, "; ttl={ttl}");
    }
}

/// Seconds of freshness left at `now` for an entry fresh until `fresh_until`.
pub fn ttl_at(fresh_until: SystemTime, now: SystemTime) -> i64 {
    match fresh_until.duration_since(now) {
        Ok(left) => left.as_secs() as i64,
        Err(past) => -(past.duration().as_secs() as i64),
    }
}
