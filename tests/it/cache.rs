//! The response cache end to end: a real gateway, a scriptable origin that numbers its bodies
//! (`n=1`, `n=2`: which fetch a client got) and counts what reached it. Freshness from each
//! header, what is never stored, keys (query, Vary, consumers), coalescing, stale while
//! revalidating and on errors, 304s both ways, reload, capacity, and what a client cannot
//! poison.

use crate::support::auth::keys_file;
use crate::support::origin::{Origin, Script};
use crate::support::prom::{metric, metric_sum};
use crate::support::{call, client, eventually, send, Answer, GatewayHandle};
use std::time::Duration;

/// Upstream `o` at `target`, cache `c` with `cache_extra`, route `/c/{*rest}` cached.
fn config(target: &str, cache_extra: &str) -> String {
    format!(
        r#"
[upstreams.o]
targets = ["{target}"]

[caches.c]
{cache_extra}

[routes.cached]
path = "/c/{{*rest}}"
upstream = "o"
cache = "c"
"#
    )
}

/// Response headers an origin sends.
type Headers = &'static [(&'static str, &'static str)];

fn script(headers: &[(&str, &str)]) -> Script {
    Script {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Script::default()
    }
}

async fn start(headers: &[(&str, &str)], cache_extra: &str) -> (GatewayHandle, Origin) {
    let origin = Origin::start(script(headers)).await;
    let gw = GatewayHandle::start(&config(&origin.target(), cache_extra)).await;
    (gw, origin)
}

fn cache_status(a: &Answer) -> &str {
    a.header("cache-status").unwrap_or("")
}

#[track_caller]
fn assert_hit(a: &Answer, body: &str) {
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, body, "{a:?}");
    assert!(cache_status(a).starts_with("tollgate; hit"), "{a:?}");
    assert!(a.header("age").is_some(), "a hit carries Age: {a:?}");
}

#[track_caller]
fn assert_stored_miss(a: &Answer, body: &str) {
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, body, "{a:?}");
    assert_eq!(
        cache_status(a),
        "tollgate; fwd=miss; fwd-status=200; stored",
        "{a:?}"
    );
}

/// Waits (bounded) until `name{labels}` is `want`: metrics are counted once the answer is sent.
async fn settles(gw: &GatewayHandle, name: &str, labels: &[(&str, &str)], want: f64) -> bool {
    eventually(Duration::from_secs(5), || async {
        metric(gw, name, labels).await == want
    })
    .await
}

/// [`settles`] for the sum of every sample of `name` carrying `labels`.
async fn settles_sum(gw: &GatewayHandle, name: &str, labels: &[(&str, &str)], want: f64) -> bool {
    eventually(Duration::from_secs(5), || async {
        metric_sum(gw, name, labels).await == want
    })
    .await
}

async fn results(gw: &GatewayHandle, result: &str, want: f64) -> bool {
    settles(
        gw,
        "tollgate_cache_requests_total",
        &[("cache", "c"), ("result", result)],
        want,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_entry_is_served_from_memory_with_its_own_request_id() {
    let (gw, origin) = start(
        &[("cache-control", "max-age=60"), ("surrogate-key", "p1 p2")],
        "",
    )
    .await;
    let first = call(&gw, "/c/item", &[]).await;
    assert_stored_miss(&first, "n=1");
    assert!(
        first.header("surrogate-key").is_none(),
        "tags stay in the gateway: {first:?}"
    );
    let second = call(&gw, "/c/item", &[]).await;
    assert_hit(&second, "n=1");
    assert!(cache_status(&second).contains("ttl="), "{second:?}");
    assert!(second.header("surrogate-key").is_none(), "{second:?}");
    let (a, b) = (first.header("x-request-id"), second.header("x-request-id"));
    assert!(
        a.is_some() && b.is_some() && a != b,
        "each answer its own id: {a:?} {b:?}"
    );
    assert_eq!(origin.count(), 1);
    // HEAD is answered from the stored GET, without a body.
    let head = send(client().head(gw.url("/c/item"))).await.unwrap();
    assert_eq!(head.status, 200);
    assert!(cache_status(&head).starts_with("tollgate; hit"), "{head:?}");
    assert_eq!(origin.count(), 1);
    assert!(results(&gw, "hit", 2.0).await);
    assert!(results(&gw, "miss", 1.0).await);
    assert!(settles(&gw, "tollgate_cache_entries", &[("cache", "c")], 1.0).await);
    assert!(metric(&gw, "tollgate_cache_bytes", &[("cache", "c")]).await > 3.0);
    // The access log says what the cache did for each request.
    let logged = || {
        gw.access_log()
            .iter()
            .filter(|l| l["path"] == "/c/item")
            .map(|l| l["cache"].as_str().unwrap_or("-").to_owned())
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(5), || async { logged().len() == 3 }).await;
    assert_eq!(logged(), ["miss", "hit", "hit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_comes_from_s_maxage_max_age_expires_or_ttl_and_is_capped() {
    // s-maxage wins over max-age; Age is subtracted; max_ttl caps; ttl when nothing is said.
    let cases: [(Headers, &str, &str); 5] = [
        (
            &[("cache-control", "s-maxage=1, max-age=600")],
            "/c/smaxage",
            "",
        ),
        (
            &[("cache-control", "max-age=3"), ("age", "2")],
            "/c/age",
            "",
        ),
        (
            &[("cache-control", "max-age=600")],
            "/c/capped",
            "max_ttl = \"1s\"",
        ),
        (&[], "/c/ttl", "ttl = \"1s\""),
        (
            &[
                ("expires", "Thu, 01 Jan 2099 00:00:01 GMT"),
                ("date", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ],
            "/c/expires",
            "",
        ),
    ];
    let mut runs = Vec::new();
    for (headers, path, extra) in cases {
        runs.push(async move {
            let (gw, origin) = start(headers, extra).await;
            assert_stored_miss(&call(&gw, path, &[]).await, "n=1");
            assert_hit(&call(&gw, path, &[]).await, "n=1");
            tokio::time::sleep(Duration::from_millis(1300)).await;
            let after = call(&gw, path, &[]).await;
            assert_eq!(
                after.body, "n=2",
                "{path}: stale after about a second: {after:?}"
            );
            assert!(
                cache_status(&after).starts_with("tollgate; fwd=stale"),
                "{path}: {after:?}"
            );
            assert_eq!(origin.count(), 2, "{path}");
        });
    }
    futures::future::join_all(runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_the_rules_forbid_are_passed_through_and_never_stored() {
    let cases: [(Headers, &str, u16, &str); 6] = [
        (&[("cache-control", "no-store")], "/c/a", 200, "no-store"),
        (
            &[("cache-control", "private, max-age=60")],
            "/c/b",
            200,
            "private",
        ),
        (
            &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
            "/c/c",
            200,
            "set-cookie",
        ),
        (
            &[("cache-control", "max-age=60"), ("vary", "*")],
            "/c/d",
            200,
            "vary-star",
        ),
        (&[("cache-control", "max-age=60")], "/c/e", 500, "status"),
        (&[], "/c/f", 200, "no-freshness"),
    ];
    for (headers, path, status, detail) in cases {
        let mut s = script(headers);
        s.status = status;
        let origin = Origin::start(s).await;
        let gw = GatewayHandle::start(&config(&origin.target(), "")).await;
        for n in 1..=2 {
            let a = call(&gw, path, &[]).await;
            assert_eq!(a.body, format!("n={n}"), "{path}: {a:?}");
            assert_eq!(
                cache_status(&a),
                format!("tollgate; fwd=bypass; detail={detail}"),
                "{path}: {a:?}"
            );
        }
        assert_eq!(origin.count(), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_max_entry_streams_through_whole_and_uncached() {
    let mut s = script(&[("cache-control", "max-age=60")]);
    s.pad = 3000;
    let origin = Origin::start(s.clone()).await;
    let gw = GatewayHandle::start(&config(&origin.target(), "max_entry = \"2KiB\"")).await;
    for n in 1..=2 {
        let a = call(&gw, "/c/big", &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body.len(),
            3000 + 3,
            "the client gets all of it: {}",
            a.body.len()
        );
        assert!(a.body.starts_with(&format!("n={n}")), "{}", &a.body[..5]);
        assert_eq!(cache_status(&a), "tollgate; fwd=bypass; detail=too-large");
    }
    assert_eq!(origin.count(), 2);
    assert_eq!(
        metric(&gw, "tollgate_cache_entries", &[("cache", "c")]).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_method_passes_through_and_its_success_invalidates_the_path() {
    let (gw, _origin) = start(&[("cache-control", "max-age=60")], "").await;
    assert_stored_miss(&call(&gw, "/c/item?x=1", &[]).await, "n=1");
    assert_stored_miss(&call(&gw, "/c/other", &[]).await, "n=2");
    let post = send(client().post(gw.url("/c/item")).body("{}"))
        .await
        .unwrap();
    assert_eq!(post.body, "n=3");
    assert_eq!(cache_status(&post), "tollgate; fwd=bypass; detail=method");
    // Every stored response of that path is gone; other paths stay.
    assert_stored_miss(&call(&gw, "/c/item?x=1", &[]).await, "n=4");
    assert_hit(&call(&gw, "/c/other", &[]).await, "n=2");
    assert!(
        settles(
            &gw,
            "tollgate_cache_purges_total",
            &[("kind", "method")],
            1.0
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_another_route_invalidates_the_path_too() {
    let origin = Origin::start(script(&[("cache-control", "max-age=60")])).await;
    let body = format!(
        r#"
[upstreams.o]
targets = ["{}"]

[caches.c]

[routes.items_read]
path = "/items/{{id}}"
methods = ["GET", "HEAD"]
upstream = "o"
cache = "c"

[routes.items_write]
path = "/items/{{id}}"
methods = ["POST", "PUT", "PATCH", "DELETE"]
upstream = "o"
"#,
        origin.target()
    );
    let gw = GatewayHandle::start(&body).await;
    assert_stored_miss(&call(&gw, "/items/1", &[]).await, "n=1");
    assert_stored_miss(&call(&gw, "/items/2", &[]).await, "n=2");
    let delete = send(client().delete(gw.url("/items/1"))).await.unwrap();
    assert_eq!(delete.status, 200, "{delete:?}");
    assert_eq!(delete.header("cache-status"), None, "not a cached route");
    assert_stored_miss(&call(&gw, "/items/1", &[]).await, "n=4");
    assert_hit(&call(&gw, "/items/2", &[]).await, "n=2");
    // A failed write changes nothing, so it invalidates nothing.
    origin.set(Script {
        status: 409,
        ..script(&[])
    });
    let refused = send(client().put(gw.url("/items/1")).body("{}"))
        .await
        .unwrap();
    assert_eq!(refused.status, 409);
    assert_hit(&call(&gw, "/items/1", &[]).await, "n=4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_need_a_public_response_in_a_shared_cache() {
    let (gw, origin) = start(&[("cache-control", "max-age=60")], "").await;
    let auth = [("authorization", "Bearer abc")];
    for n in 1..=2 {
        let a = call(&gw, "/c/me", &auth).await;
        assert_eq!(a.body, format!("n={n}"));
        assert_eq!(
            cache_status(&a),
            "tollgate; fwd=bypass; detail=authorization"
        );
    }
    origin.set(script(&[("cache-control", "public, max-age=60")]));
    assert_stored_miss(&call(&gw, "/c/me", &auth).await, "n=3");
    assert_hit(&call(&gw, "/c/me", &auth).await, "n=3");
}

/// Route `/c/{*rest}` behind API keys (consumers `acme` and `globex`), cached in `c` with
/// this `scope`, in front of `origin`.
async fn partners_gateway(origin: &Origin, scope: &str) -> (GatewayHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(&dir, &[("acme", "acme-key-1"), ("globex", "globex-key-2")]);
    let body = format!(
        r#"
[auth.partners]
type = "api_key"
keys_file = "{keys}"

[upstreams.o]
targets = ["{}"]

[caches.c]
scope = "{scope}"

[routes.cached]
path = "/c/{{*rest}}"
upstream = "o"
cache = "c"
auth = "partners"
"#,
        origin.target()
    );
    (GatewayHandle::start(&body).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_scope_keeps_each_callers_entries_to_itself() {
    let origin = Origin::start(script(&[("cache-control", "max-age=60")])).await;
    let (gw, _keys) = partners_gateway(&origin, "consumer").await;
    let acme = [("x-api-key", "acme-key-1")];
    let globex = [("x-api-key", "globex-key-2")];
    assert_stored_miss(&call(&gw, "/c/orders", &acme).await, "n=1");
    assert_stored_miss(&call(&gw, "/c/orders", &globex).await, "n=2");
    assert_hit(&call(&gw, "/c/orders", &acme).await, "n=1");
    assert_hit(&call(&gw, "/c/orders", &globex).await, "n=2");
    // No key: refused before the cache is looked at.
    assert_eq!(call(&gw, "/c/orders", &[]).await.status, 401);
    assert_eq!(origin.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_scope_serves_a_public_entry_to_every_admitted_caller() {
    let origin = Origin::start(script(&[("cache-control", "public, max-age=60")])).await;
    let (gw, _keys) = partners_gateway(&origin, "shared").await;
    let acme = [("x-api-key", "acme-key-1")];
    let globex = [("x-api-key", "globex-key-2")];
    assert_stored_miss(&call(&gw, "/c/catalogue", &acme).await, "n=1");
    assert_hit(&call(&gw, "/c/catalogue", &globex).await, "n=1");
    // Still only for callers the route admits.
    assert_eq!(call(&gw, "/c/catalogue", &[]).await.status, 401);
    assert_eq!(origin.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_follows_the_query_rule_and_the_vary_headers() {
    let (gw, origin) = start(
        &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
        "vary = [\"accept-language\"]\nquery = [\"page\", \"lang\"]",
    )
    .await;
    assert_stored_miss(&call(&gw, "/c/list?page=2&lang=en&utm=x", &[]).await, "n=1");
    // Same kept parameters in another order, another unkept one: the same entry.
    assert_hit(&call(&gw, "/c/list?lang=en&page=2&utm=y", &[]).await, "n=1");
    assert_stored_miss(&call(&gw, "/c/list?page=3&lang=en", &[]).await, "n=2");
    // The cache's vary header is in the key.
    assert_stored_miss(
        &call(&gw, "/c/list?page=2&lang=en", &[("accept-language", "fr")]).await,
        "n=3",
    );
    assert_hit(
        &call(&gw, "/c/list?page=2&lang=en", &[("accept-language", "fr")]).await,
        "n=3",
    );
    // The response's own Vary makes variants.
    assert_stored_miss(
        &call(&gw, "/c/list?page=2&lang=en", &[("accept-encoding", "br")]).await,
        "n=4",
    );
    assert_hit(
        &call(&gw, "/c/list?page=2&lang=en", &[("accept-encoding", "br")]).await,
        "n=4",
    );
    assert_hit(&call(&gw, "/c/list?page=2&lang=en", &[]).await, "n=1");
    assert_eq!(origin.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_make_one_upstream_request() {
    let mut s = script(&[("cache-control", "max-age=60")]);
    s.delay = Duration::from_millis(300);
    let origin = Origin::start(s).await;
    let gw = GatewayHandle::start(&config(&origin.target(), "")).await;
    let http = client();
    let calls = (0..200).map(|_| send(http.get(gw.url("/c/hot"))));
    let answers = futures::future::join_all(calls).await;
    for a in &answers {
        let a = a.as_ref().expect("answer");
        assert_eq!((a.status, a.body.as_str()), (200, "n=1"), "{a:?}");
    }
    assert_eq!(origin.count(), 1, "one fetch for 200 callers");
    let waited = answers
        .iter()
        .filter(|a| cache_status(a.as_ref().unwrap()).contains("collapsed"))
        .count();
    assert!(waited > 0);
    assert!(
        settles(
            &gw,
            "tollgate_cache_coalesced_total",
            &[("cache", "c")],
            waited as f64
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_client_that_hangs_up_hands_the_fill_to_one_waiting_request() {
    // Mobile clients give up mid-request: the others waiting for the same entry must not all
    // go upstream, and the one that left is counted as the miss it was.
    let mut s = script(&[("cache-control", "max-age=60")]);
    s.delay = Duration::from_millis(400);
    let origin = Origin::start(s).await;
    let gw = GatewayHandle::start(&config(&origin.target(), "")).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .no_proxy()
        .build()
        .unwrap();
    let url = gw.url("/c/hot");
    let leader = tokio::spawn(async move { impatient.get(url).send().await.is_err() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let http = client();
    let waiting = (0..5).map(|_| send(http.get(gw.url("/c/hot"))));
    let answers = futures::future::join_all(waiting).await;
    assert!(
        leader.await.unwrap(),
        "the first client was meant to give up"
    );
    for a in &answers {
        let a = a.as_ref().expect("answer");
        assert_eq!((a.status, a.body.as_str()), (200, "n=2"), "{a:?}");
        assert!(cache_status(a).contains("collapsed"), "{a:?}");
    }
    assert_eq!(origin.count(), 2, "the abandoned fetch and one more");
    assert_hit(&call(&gw, "/c/hot", &[]).await, "n=2");
    // The leader and the waiter that took over were misses; the other four and the last call
    // hits. Nothing is a bypass.
    assert!(results(&gw, "miss", 2.0).await);
    assert!(results(&gw, "hit", 5.0).await);
    assert!(results(&gw, "bypass", 0.0).await);
    let leader_line = gw.log_line(|l| l["status"] == 0).await;
    assert_eq!(leader_line["cache"], "miss", "{leader_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_served_at_once_while_one_request_refreshes_it() {
    let (gw, origin) = start(
        &[("cache-control", "max-age=1")],
        "stale_while_revalidate = \"30s\"",
    )
    .await;
    assert_stored_miss(&call(&gw, "/c/feed", &[]).await, "n=1");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    origin.set(Script {
        delay: Duration::from_millis(500),
        ..script(&[("cache-control", "max-age=60")])
    });
    for _ in 0..3 {
        let a = call(&gw, "/c/feed", &[]).await;
        assert_eq!(a.body, "n=1", "{a:?}");
        assert!(
            cache_status(&a).contains("detail=stale-while-revalidate"),
            "{a:?}"
        );
        // Not waiting for the 500 ms upstream (a bound far from the machine's noise).
        assert!(a.took < Duration::from_millis(400), "{:?}", a.took);
    }
    let calls = std::sync::atomic::AtomicUsize::new(4);
    let refreshed = eventually(Duration::from_secs(5), || async {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        call(&gw, "/c/feed", &[]).await.body == "n=2"
    })
    .await;
    assert!(refreshed);
    assert_eq!(origin.bodies(), 2, "exactly one background refresh");
    // The refresh is the cache's own request, not a client's: not in the request count, nor
    // among the cache's results (it would read as an `expired` no client saw).
    let calls = calls.into_inner() as f64;
    assert!(
        settles_sum(
            &gw,
            "tollgate_requests_total",
            &[("route", "cached")],
            calls
        )
        .await,
        "{calls} client requests"
    );
    assert_eq!(
        metric(
            &gw,
            "tollgate_cache_requests_total",
            &[("cache", "c"), ("result", "expired")]
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_stands_in_for_a_failed_upstream_within_the_window() {
    let (gw, origin) = start(&[("cache-control", "max-age=1")], "stale_if_error = \"2s\"").await;
    assert_stored_miss(&call(&gw, "/c/menu", &[]).await, "n=1");
    origin.stop();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let a = call(&gw, "/c/menu", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "n=1"), "{a:?}");
    assert!(cache_status(&a).contains("detail=stale-if-error"), "{a:?}");
    assert!(results(&gw, "stale", 1.0).await);
    // Past the window: the error.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let late = call(&gw, "/c/menu", &[]).await;
    assert_eq!(late.status, 502, "{late:?}");
    // The gateway's own answer says what the cache did: it had the entry, too stale to use.
    let stale_error = "tollgate; fwd=stale; detail=upstream-error";
    assert_eq!(cache_status(&late), stale_error, "{late:?}");
    assert!(results(&gw, "expired", 1.0).await);
    // A path never stored was a miss, failed or not.
    let never = call(&gw, "/c/other", &[]).await;
    assert_eq!(never.status, 502, "{never:?}");
    let miss_error = "tollgate; fwd=miss; detail=upstream-error";
    assert_eq!(cache_status(&never), miss_error, "{never:?}");
    assert!(results(&gw, "miss", 2.0).await);
    assert!(results(&gw, "bypass", 0.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_comes_before_the_fallback_and_a_5xx_within_the_window() {
    let origin = Origin::start(script(&[("cache-control", "max-age=1")])).await;
    let body = config(&origin.target(), "stale_if_error = \"2s\"").replace(
        "cache = \"c\"\n",
        "cache = \"c\"\nfallback = { status = 503, body = '{\"error\":\"later\"}' }\n",
    );
    let gw = GatewayHandle::start(&body).await;
    assert_stored_miss(&call(&gw, "/c/menu", &[]).await, "n=1");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The upstream answers 500: the stale entry, not the 500.
    origin.set(Script {
        status: 500,
        ..script(&[])
    });
    let a = call(&gw, "/c/menu", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "n=1"), "{a:?}");
    assert!(cache_status(&a).contains("detail=stale-if-error"), "{a:?}");
    // The upstream is gone: the stale entry, not the route's fallback.
    origin.stop();
    let b = call(&gw, "/c/menu", &[]).await;
    assert_eq!((b.status, b.body.as_str()), (200, "n=1"), "{b:?}");
    assert!(b.header("x-tollgate-fallback").is_none(), "{b:?}");
    // Past the window: the fallback.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let late = call(&gw, "/c/menu", &[]).await;
    assert_eq!(late.status, 503, "{late:?}");
    assert_eq!(late.header("x-tollgate-fallback"), Some("1"), "{late:?}");
    assert_eq!(
        cache_status(&late),
        "tollgate; fwd=stale; detail=upstream-error",
        "{late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_with_an_etag_is_revalidated_without_a_body() {
    let (gw, origin) = start(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "").await;
    assert_stored_miss(&call(&gw, "/c/doc", &[]).await, "n=1");
    // A client holding the same version gets a 304 from the cache.
    let conditional = call(&gw, "/c/doc", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(conditional.status, 304, "{conditional:?}");
    assert_eq!(origin.count(), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let a = call(&gw, "/c/doc", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "n=1"), "{a:?}");
    assert!(
        cache_status(&a).starts_with("tollgate; fwd=stale; fwd-status=304"),
        "{a:?}"
    );
    let sent = origin.received();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(origin.bodies(), 1, "the upstream sent no second body");
    let after = call(&gw, "/c/doc", &[]).await;
    assert_hit(&after, "n=1");
    // Age counts from the revalidation, not from the first fetch.
    assert!(matches!(after.header("age"), Some("0" | "1")), "{after:?}");
    assert!(results(&gw, "revalidated", 1.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_or_conditional_miss_fills_the_entry_for_the_next_get() {
    // pingora-cache fetches the whole GET for a HEAD or a conditional request that misses, and
    // keeps reading it into the entry after the client got its header-only answer (a body in
    // pieces, slow to come).
    let origin = Origin::start(Script {
        chunked: true,
        delay: Duration::from_millis(50),
        ..script(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")])
    })
    .await;
    let gw = GatewayHandle::start(&config(&origin.target(), "")).await;
    let head = send(client().head(gw.url("/c/h"))).await.unwrap();
    assert_eq!(head.status, 200, "{head:?}");
    // The client already holds what the upstream answers: a 304 from the miss.
    let conditional = call(&gw, "/c/i", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(conditional.status, 304, "{conditional:?}");
    for (path, answer) in [(head, "/c/h"), (conditional, "/c/i")].map(|(a, p)| (p, a)) {
        // What the response says is what happened: the next GET finds it stored, or it
        // was not stored and says so.
        let next = call(&gw, path, &[]).await;
        assert!(
            next.took < Duration::from_secs(2),
            "waited on a lock: {next:?}"
        );
        if cache_status(&answer).ends_with("; stored") {
            assert!(
                cache_status(&next).starts_with("tollgate; hit"),
                "{answer:?} {next:?}"
            );
        } else {
            assert!(
                cache_status(&next).ends_with("; stored"),
                "{answer:?} {next:?}"
            );
            assert_hit(&call(&gw, path, &[]).await, &next.body);
        }
    }
    assert!(origin.count() <= 4, "{}", origin.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_cache_and_drops_a_changed_one() {
    let (gw, origin) = start(&[("cache-control", "max-age=60")], "ttl = \"30s\"").await;
    assert_stored_miss(&call(&gw, "/c/x", &[]).await, "n=1");
    // Same cache settings, another route added: entries kept.
    let same = format!(
        "{}\n[routes.other]\npath = \"/other\"\nupstream = \"o\"\n",
        config(&origin.target(), "ttl = \"30s\"")
    );
    gw.write_body(&same);
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(&gw, "/other", &[]).await.status == 200
        })
        .await
    );
    assert_hit(&call(&gw, "/c/x", &[]).await, "n=1");
    // Changed settings: a new, empty cache.
    gw.write_body(&config(&origin.target(), "ttl = \"31s\""));
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(&gw, "/other", &[]).await.status == 404
        })
        .await
    );
    let a = call(&gw, "/c/x", &[]).await;
    assert_stored_miss(&a, &format!("n={}", origin.bodies()));
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&gw, "tollgate_cache_entries", &[("cache", "c")]).await == 1.0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stays_within_cache_capacity() {
    let mut s = script(&[("cache-control", "max-age=600")]);
    s.pad = 4000;
    let origin = Origin::start(s).await;
    let body = config(&origin.target(), "max_entry = \"8KiB\"");
    let gw = GatewayHandle::start_with(&body, "cache_capacity = \"64KiB\"").await;
    // About 3x the capacity in distinct objects.
    for i in 0..48 {
        assert_eq!(call(&gw, &format!("/c/obj{i}"), &[]).await.status, 200);
    }
    let settled = eventually(Duration::from_secs(5), || async {
        metric(&gw, "tollgate_cache_bytes", &[("cache", "c")]).await <= 64.0 * 1024.0
    })
    .await;
    assert!(
        settled,
        "{}",
        metric(&gw, "tollgate_cache_bytes", &[("cache", "c")]).await
    );
    assert!(metric(&gw, "tollgate_cache_evictions_total", &[("cache", "c")]).await > 0.0);
    assert!(metric(&gw, "tollgate_cache_entries", &[("cache", "c")]).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_client_sends_cannot_poison_the_next_callers_answer() {
    let (gw, origin) = start(&[("cache-control", "private, max-age=60")], "").await;
    // A client asking to store what the origin marks private changes nothing.
    let asks = [("cache-control", "public, max-age=600")];
    call(&gw, "/c/p", &asks).await;
    assert_eq!(call(&gw, "/c/p", &[]).await.body, "n=2");
    origin.set(script(&[("cache-control", "max-age=60")]));
    // Headers a backend might read to build links or pick a resource are Tollgate's to set:
    // the origin never sees the client's values, so the stored answer cannot carry them.
    let forged = [
        ("x-forwarded-host", "evil.example"),
        ("x-original-url", "/admin"),
        ("forwarded", "host=evil.example"),
    ];
    let first = call(&gw, "/c/q", &forged).await;
    assert_stored_miss(&first, "n=3");
    let seen = origin.received().pop().unwrap();
    assert_ne!(seen.header("x-forwarded-host"), Some("evil.example"));
    assert!(seen.header("forwarded").is_none());
    assert_hit(&call(&gw, "/c/q", &[]).await, "n=3");
    // A GET with a body (which some backends read) neither reads nor fills the cache.
    let with_body = send(client().get(gw.url("/c/q")).body("{\"id\":1}"))
        .await
        .unwrap();
    assert_eq!(with_body.body, "n=4");
    assert_eq!(
        cache_status(&with_body),
        "tollgate; fwd=bypass; detail=request-body"
    );
    assert_hit(&call(&gw, "/c/q", &[]).await, "n=3");
    // The Host goes to the origin as the client wrote it (port, case, trailing dot), and an
    // origin may build links from it: another spelling of the same host is another entry.
    let odd_host = call(&gw, "/c/h", &[("host", "LOCALHOST.:6666")]).await;
    assert_stored_miss(&odd_host, "n=5");
    assert_eq!(
        origin.received().pop().unwrap().header("host"),
        Some("LOCALHOST.:6666")
    );
    assert_stored_miss(&call(&gw, "/c/h", &[("host", "localhost")]).await, "n=6");
    assert_hit(
        &call(&gw, "/c/h", &[("host", "LOCALHOST.:6666")]).await,
        "n=5",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_refresh_is_not_charged_to_the_callers_rate_limit() {
    let origin = Origin::start(script(&[("cache-control", "max-age=1")])).await;
    let body = format!(
        r#"
[upstreams.o]
targets = ["{}"]

[caches.c]
stale_while_revalidate = "30s"

[rate_limits.three]
requests = 3
per = "1h"
key = "ip"

[routes.cached]
path = "/c/{{*rest}}"
upstream = "o"
cache = "c"
rate_limits = ["three"]
"#,
        origin.target()
    );
    let gw = GatewayHandle::start(&body).await;
    assert_stored_miss(&call(&gw, "/c/r", &[]).await, "n=1");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stale = call(&gw, "/c/r", &[]).await;
    assert!(
        cache_status(&stale).contains("stale-while-revalidate"),
        "{stale:?}"
    );
    assert!(eventually(Duration::from_secs(5), || async { origin.bodies() == 2 }).await);
    // Two requests so far, and the refresh the gateway made: the third request is the
    // caller's own, the fourth is over.
    assert_eq!(call(&gw, "/c/r", &[]).await.status, 200);
    assert_eq!(call(&gw, "/c/r", &[]).await.status, 429);
}

/// Resident memory of a process, bytes (Linux).
fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_stays_within_cache_capacity_while_six_times_it_goes_through() {
    let mut s = script(&[("cache-control", "max-age=600")]);
    s.pad = 16_000;
    let origin = Origin::start(s).await;
    let body = config(&origin.target(), "max_entry = \"32KiB\"");
    let gw = GatewayHandle::start_binary(&body, "cache_capacity = \"4MiB\"").await;
    let pid = gw.pid().unwrap();
    let http = client();
    let fetch = |i: usize| {
        let req = http.get(gw.url(&format!("/c/obj{i}")));
        async move { send(req).await.map(|a| a.status) }
    };
    // Warm: connections, buffers, the first entries.
    for i in 0..32 {
        assert_eq!(fetch(i).await, Ok(200));
    }
    let before = rss(pid);
    // 24 MiB of distinct 16 KB objects through a 4 MiB cache.
    for i in 32..1_536 {
        assert_eq!(fetch(i).await, Ok(200));
    }
    let grown = rss(pid).saturating_sub(before);
    eprintln!("RSS grew by {} KiB", grown / 1024);
    // The cache may fill its 4 MiB (it started with 0.5 MiB in it); the allocator keeps some
    // slack. Without eviction the growth would be over 20 MiB.
    assert!(grown < 10 << 20, "RSS grew by {} KiB", grown / 1024);
    assert!(metric(&gw, "tollgate_cache_bytes", &[("cache", "c")]).await <= 4.0 * 1024.0 * 1024.0);
    assert!(metric(&gw, "tollgate_cache_evictions_total", &[("cache", "c")]).await > 1000.0);
}
