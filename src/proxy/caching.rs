//! The response cache in the proxy hooks: which requests use it, their key, what is stored,
//! when a stale entry stands in, and what the response says about it. The cache runs after the
//! request pipeline (auth and rate limits first: a cached answer never reaches a caller the
//! route refuses) and before `upstream_peer`.

use super::{headers, Gateway, RequestCtx};
use crate::cache::decide::{decide, Verdict};
use crate::cache::key::{cache_key, key_host};
use crate::cache::{status, CacheUse, EntryLabel, Purge, SURROGATE_KEY};
use crate::problem::GatewayError;
use pingora::cache::{CacheKey, CacheOptionOverrides, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Error;
use std::time::{Instant, SystemTime};

/// RFC 9211's response header.
const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

impl Gateway {
    /// `request_cache_filter`: turns the cache on for a GET or HEAD on a cached route. Other
    /// methods pass through, remembered so that a success invalidates the path's entries.
    pub(super) fn start_cache(&self, session: &mut Session, ctx: &mut RequestCtx) {
        let Some(route) = ctx.route.as_ref() else {
            return;
        };
        let Some(policy) = route.cache.clone() else {
            return;
        };
        let req = session.req_header();
        let safe = matches!(req.method, http::Method::GET | http::Method::HEAD);
        let credentials =
            route.auth.is_some() || req.headers.contains_key(http::header::AUTHORIZATION);
        let per_consumer = policy.settings.scope == crate::config::CacheScope::Consumer;
        // Only per-consumer entries are keyed by the caller: a shared entry (marked `public`
        // when the request had credentials) is meant for every caller the route admits.
        let consumer = per_consumer
            .then(|| ctx.identity.as_ref().and_then(|i| i.consumer.clone()))
            .flatten();
        let mut cache = CacheUse {
            policy,
            consumer,
            credentials,
            pass: None,
            stored: false,
            stale_on_error: false,
            unsafe_method: !safe,
            seen: None,
        };
        // Per-consumer entries need a consumer: an anonymous request shares nothing.
        if per_consumer && cache.consumer.is_none() {
            cache.pass = Some("no-consumer");
        }
        // A body is not in the key, and some backends read one on a GET: such a request
        // neither reads nor fills the cache.
        if safe && ctx.declared.body {
            cache.pass = Some("request-body");
        }
        if safe && cache.pass.is_none() {
            let mut overrides = CacheOptionOverrides::default();
            let wait = ctx.deadline.map_or(crate::cache::LOCK_WAIT_TIMEOUT, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(crate::cache::LOCK_WAIT_TIMEOUT)
            });
            overrides.wait_timeout = Some(wait);
            let store = ctx.snapshot.as_ref().map(|s| s.cache_store);
            if let Some(store) = store {
                session.cache.enable(
                    store,
                    None,
                    None,
                    Some(crate::cache::lock()),
                    Some(overrides),
                );
                let max_entry = cache.policy.settings.max_entry;
                session
                    .cache
                    .set_max_file_size_bytes(usize::try_from(max_entry).unwrap_or(usize::MAX));
            }
        }
        ctx.cache = Some(cache);
    }

    /// `cache_key_callback`: the key of this request (see `cache::key` for what is in it).
    pub(super) fn cache_key(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> pingora::Result<CacheKey> {
        let Some(cache) = ctx.cache.as_ref() else {
            return Err(
                crate::problem::GatewayError::Internal("cache key without cache").into_pingora(),
            );
        };
        let req = session.req_header();
        Ok(cache_key(
            &cache.policy,
            ctx.route_name(),
            req,
            cache.consumer.as_deref(),
        ))
    }

    /// `response_cache_filter`: whether the upstream's response may be stored, and how long it
    /// is fresh.
    pub(super) fn cache_verdict(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> RespCacheable {
        let Some(cache) = ctx.cache.as_mut() else {
            return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
        };
        match decide(
            &cache.policy.settings,
            cache.credentials,
            resp,
            SystemTime::now(),
        ) {
            Verdict::Store(mut meta) => {
                cache.stored = true;
                cache.pass = None;
                // What the store keeps beside the entry, for its purges and metrics.
                let label = EntryLabel::of(&cache.policy, session.req_header());
                meta.extensions_mut().insert(label);
                RespCacheable::Cacheable(meta)
            }
            Verdict::Pass(detail) => {
                cache.stored = false;
                cache.pass = Some(detail);
                RespCacheable::Uncacheable(NoCacheReason::Custom(detail))
            }
        }
    }

    /// `should_serve_stale`: during revalidation (`error` is `None`) whenever the entry's
    /// stale-while-revalidate window allows (pingora-cache checks it); after a failure of the
    /// upstream (connect, timeout, 5xx, every circuit open, the route deadline), within the
    /// stale-if-error window, instead of the error or the route's fallback.
    pub(super) fn serve_stale(&self, ctx: &mut RequestCtx, error: Option<&Error>) -> bool {
        let Some(error) = error else {
            return true;
        };
        // The client going away is not the upstream failing.
        if error.esource() == &pingora::ErrorSource::Downstream {
            return false;
        }
        if let Some(cache) = ctx.cache.as_mut() {
            cache.stale_on_error = true;
        }
        true
    }

    /// `response_filter` on a cached route: `Cache-Status`, the tags removed, and the headers
    /// that belong to this request only (request id, rate-limit fields), which are added here
    /// rather than before the response is stored.
    pub(super) fn finish_cached_response(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let Some(cache) = ctx.cache.as_mut() else {
            return Ok(());
        };
        let phase = session.cache.phase();
        cache.seen = Some(phase);
        let cache = &*cache;
        let ttl = session
            .cache
            .maybe_cache_meta()
            .map(|m| status::ttl_at(m.fresh_until(), SystemTime::now()));
        let collapsed = session.cache.lock_duration().is_some();
        let value = status::header(phase, cache, ttl, collapsed, ctx.upstream_status);
        let value = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
            .map_err(|_| GatewayError::Internal("Cache-Status value").into_pingora())?;
        let rate_limit = ctx
            .rate_limit
            .as_ref()
            .map(crate::ratelimit::response_fields);
        headers::edit_response_headers(resp, |_, map| {
            map.remove(&SURROGATE_KEY);
            map.insert(CACHE_STATUS, value);
            map.insert(headers::X_REQUEST_ID, ctx.request_id.value().clone());
            for (name, value) in rate_limit.into_iter().flatten() {
                map.insert(name, value);
            }
        })
    }

    /// `response_filter` on every route: a successful unsafe request (POST, PUT, PATCH,
    /// DELETE...) invalidates the entries of its host and path (RFC 9111 §4.4), whichever route
    /// cached them (reads and writes of one path are often two routes), before its answer
    /// leaves: the client's next read never sees what it just changed.
    pub(super) fn invalidate_after_write(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &RequestCtx,
    ) {
        let req = session.req_header();
        if req.method.is_safe() || !(200..400).contains(&resp.status.as_u16()) {
            return;
        }
        if let Some(snapshot) = ctx.snapshot.as_ref() {
            snapshot.cache_store.purge(&Purge::Path {
                host: key_host(req),
                path: req.uri.path().to_owned(),
            });
        }
    }

    /// In `upstream_peer`: what the lookup found, before a failure can turn the cache off. A
    /// stale entry the request goes upstream for is an expired one (pingora-cache's phase
    /// says so only once the refetch answers).
    pub(super) fn note_cache_phase(&self, session: &Session, ctx: &mut RequestCtx) {
        if let Some(cache) = ctx.cache.as_mut() {
            cache.seen = Some(match session.cache.phase() {
                CachePhase::Stale => CachePhase::Expired,
                phase => phase,
            });
        }
    }

    /// `Cache-Status` of a problem answered for a cached route whose upstream failed (no stale
    /// entry could stand in): what the cache did, e.g. `tollgate; fwd=miss`.
    pub(super) fn failed_cache_status(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> Option<String> {
        let cache = ctx.cache.as_ref()?;
        let collapsed = session.cache.lock_duration().is_some();
        Some(status::header(
            session.cache.phase(),
            cache,
            None,
            collapsed,
            ctx.upstream_status,
        ))
    }

    /// In `logging`: the cache's result in the metrics.
    /// Counts what the cache did for the request; returns it (`None`: no cache).
    pub(super) fn account_cache(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> Option<&'static str> {
        let cache = ctx.cache.as_ref()?;
        let result = status::result(session.cache.phase(), cache);
        cache.policy.results.inc(result);
        if session.cache.lock_duration().is_some() {
            self.metrics.cache.coalesced(cache.policy.name());
        }
        Some(result)
    }
}
