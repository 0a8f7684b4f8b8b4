//! Whether a response may be stored, and for how long (RFC 9111 §3 and §4.2, with the
//! decisions of `[caches.*]`): the verdict `response_cache_filter` hands to pingora-cache.

use super::policy::CacheSettings;
use crate::config::CacheScope;
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::cache::filters::calculate_expires_header_time;
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// What to do with a response.
pub enum Verdict {
    Store(CacheMeta),
    /// Not stored; the reason goes in `Cache-Status` as `detail`.
    Pass(&'static str),
}

/// Decides for `resp`, the upstream's answer to a request on a cached route. `credentials`:
/// the request carried `Authorization` or the route authenticates its callers.
pub fn decide(
    settings: &CacheSettings,
    credentials: bool,
    resp: &ResponseHeader,
    now: SystemTime,
) -> Verdict {
    if !settings.statuses.contains(&resp.status.as_u16()) {
        return Verdict::Pass("status");
    }
    let headers = &resp.headers;
    // A cookie is one caller's: never handed to another.
    if headers.contains_key(http::header::SET_COOKIE) {
        return Verdict::Pass("set-cookie");
    }
    let vary_star = headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|n| n.trim_ascii() == b"*")
    });
    if vary_star {
        return Verdict::Pass("vary-star");
    }
    let cc = CacheControl::from_resp_headers(resp);
    if let Some(cc) = &cc {
        if cc.no_store() {
            return Verdict::Pass("no-store");
        }
        if cc.private() {
            return Verdict::Pass("private");
        }
    }
    // RFC 9111 §3.5: a shared cache stores an answer to a request with credentials only when
    // the response says it may. Per-consumer entries are never shared, so they need not.
    let shareable = cc
        .as_ref()
        .is_some_and(|cc| cc.public() || cc.s_maxage().ok().flatten().is_some());
    if credentials && settings.scope == CacheScope::Shared && !shareable {
        return Verdict::Pass("authorization");
    }
    let Some(lifetime) = freshness_lifetime(settings, cc.as_ref(), resp, now) else {
        return Verdict::Pass("no-freshness");
    };
    let age = headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    // What is left of the upstream's lifetime once its Age is taken off, then capped: an
    // answer that spent a minute in another cache still gets up to `max_ttl` here.
    let fresh = lifetime.saturating_sub(age).min(settings.max_ttl);
    let no_cache = cc.as_ref().is_some_and(|cc| cc.no_cache());
    // `no-cache` is stored but never used without revalidation, so never served stale either.
    let (swr, sie) = if no_cache {
        (Duration::ZERO, Duration::ZERO)
    } else {
        let window = |policy: Duration, directive: Option<Duration>| match directive {
            Some(d) => d.min(policy),
            None => policy,
        };
        (
            window(
                settings.stale_while_revalidate,
                cc.as_ref()
                    .and_then(|c| c.serve_stale_while_revalidate_duration()),
            ),
            window(
                settings.stale_if_error,
                cc.as_ref().and_then(|c| c.serve_stale_if_error_duration()),
            ),
        )
    };
    let fresh_until = if fresh.is_zero() {
        // Already stale: the next request revalidates.
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now + fresh
    };
    let mut stored = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut stored);
    }
    // Made `age` ago, as far as anyone can tell: the `Age` a hit reports counts from there.
    let created = now.checked_sub(age).unwrap_or(now);
    Verdict::Store(CacheMeta::new(
        fresh_until,
        created,
        secs(swr),
        secs(sie),
        stored,
    ))
}

/// `s-maxage` > `max-age` > `Expires` (relative to `Date`) > the cache's `ttl`.
fn freshness_lifetime(
    settings: &CacheSettings,
    cc: Option<&CacheControl>,
    resp: &ResponseHeader,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(d) = cc.and_then(|cc| cc.fresh_duration()) {
        return Some(d);
    }
    if let Some(expires) = calculate_expires_header_time(resp) {
        let date = resp
            .headers
            .get(http::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .unwrap_or(now);
        return Some(expires.duration_since(date).unwrap_or(Duration::ZERO));
    }
    settings.ttl
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheConfig, DurationStr};

    fn settings(max_ttl_secs: u64) -> CacheSettings {
        let cfg = CacheConfig {
            max_ttl: Some(DurationStr::from_secs(max_ttl_secs)),
            ..CacheConfig::default()
        };
        CacheSettings::compile("c", &cfg)
    }

    fn stored(settings: &CacheSettings, headers: &[(&str, &str)], now: SystemTime) -> CacheMeta {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        match decide(settings, false, &resp, now) {
            Verdict::Store(meta) => meta,
            Verdict::Pass(why) => panic!("not stored: {why}"),
        }
    }

    #[test]
    fn the_upstreams_age_counts_from_when_the_answer_was_made() {
        let now = SystemTime::now();
        let meta = stored(
            &settings(3600),
            &[("cache-control", "max-age=100"), ("age", "40")],
            now,
        );
        assert_eq!(meta.fresh_until(), now + Duration::from_secs(60));
        // A hit's Age goes on from the upstream's 40 s, not from 0.
        assert_eq!(meta.created(), now - Duration::from_secs(40));
    }

    #[test]
    fn max_ttl_caps_what_is_left_after_the_age() {
        let now = SystemTime::now();
        let meta = stored(
            &settings(5),
            &[("cache-control", "max-age=100"), ("age", "98")],
            now,
        );
        assert_eq!(meta.fresh_until(), now + Duration::from_secs(2));
        let meta = stored(
            &settings(5),
            &[("cache-control", "max-age=100"), ("age", "10")],
            now,
        );
        assert_eq!(meta.fresh_until(), now + Duration::from_secs(5));
    }
}
