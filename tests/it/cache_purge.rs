//! Purging cached responses through the admin API: by URL (every variant), path prefix,
//! `Surrogate-Key` tag and whole cache; the admin token; malformed requests; and purges that
//! reach every instance through a real `redis-server`'s pub/sub, or stay local while Redis is
//! down.

use crate::support::origin::{Origin, Script};
use crate::support::prom::metric;
use crate::support::redis::RedisServer;
use crate::support::{call, client, eventually, send, Answer, GatewayHandle};
use std::time::{Duration, Instant};

fn config(target: &str, extra: &str) -> String {
    format!(
        r#"{extra}
[upstreams.o]
targets = ["{target}"]

[caches.c]
vary = ["accept-language"]

[caches.d]

[routes.cached]
path = "/c/{{*rest}}"
upstream = "o"
cache = "c"

[routes.other]
path = "/d/{{*rest}}"
upstream = "o"
cache = "d"
"#
    )
}

async fn origin(tags: &str) -> Origin {
    Origin::start(Script {
        headers: vec![
            ("cache-control".into(), "max-age=600".into()),
            ("surrogate-key".into(), tags.into()),
        ],
        ..Script::default()
    })
    .await
}

fn is_hit(a: &Answer) -> bool {
    a.header("cache-status")
        .is_some_and(|s| s.starts_with("tollgate; hit"))
}

async fn hit(gw: &GatewayHandle, path: &str, headers: &[(&str, &str)]) -> bool {
    is_hit(&call(gw, path, headers).await)
}

async fn purge(gw: &GatewayHandle, body: &str, token: Option<&str>) -> Answer {
    let mut req = client()
        .post(gw.admin_url("/cache/purge"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await.expect("admin answer")
}

fn purged(a: &Answer) -> u64 {
    assert_eq!(a.status, 200, "{a:?}");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    v["purged"].as_u64().unwrap()
}

/// Stores `/c/p/1` (two language variants, tags `t1 all`), `/c/p/2` and `/d/x` (tag `all`).
async fn warm(gw: &GatewayHandle) {
    for (path, lang) in [
        ("/c/p/1", "en"),
        ("/c/p/1", "fr"),
        ("/c/p/2", "en"),
        ("/d/x", "en"),
    ] {
        let headers = [("accept-language", lang)];
        call(gw, path, &headers).await;
        assert!(hit(gw, path, &headers).await, "{path} {lang} stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_prefix_tag_and_cache() {
    let o = origin("t1 all").await;
    let gw = GatewayHandle::start(&config(&o.target(), "")).await;
    warm(&gw).await;
    // A URL: every variant of it, nothing else.
    assert_eq!(purged(&purge(&gw, r#"{"url": "/c/p/1"}"#, None).await), 2);
    assert!(!hit(&gw, "/c/p/1", &[("accept-language", "fr")]).await);
    assert!(hit(&gw, "/c/p/2", &[("accept-language", "en")]).await);
    // A host that is not the entry's purges nothing.
    let other_host = r#"{"url": "/c/p/2", "host": "elsewhere.example"}"#;
    assert_eq!(purged(&purge(&gw, other_host, None).await), 0);
    // The URL and host are read as a request's: another spelling of the same path (merged
    // slashes, an escaped digit), the host with a port and in capitals.
    let spelled = r#"{"url": "/c//p/%32", "host": "127.0.0.1:1"}"#;
    assert_eq!(purged(&purge(&gw, spelled, None).await), 1);
    assert!(!hit(&gw, "/c/p/2", &[("accept-language", "en")]).await);
    // A prefix.
    warm(&gw).await;
    assert_eq!(purged(&purge(&gw, r#"{"prefix": "/c/p/"}"#, None).await), 3);
    assert!(hit(&gw, "/d/x", &[("accept-language", "en")]).await);
    // A tag, across caches.
    warm(&gw).await;
    assert_eq!(purged(&purge(&gw, r#"{"tag": "all"}"#, None).await), 4);
    // A whole cache.
    warm(&gw).await;
    assert_eq!(purged(&purge(&gw, r#"{"cache": "d"}"#, None).await), 1);
    assert!(hit(&gw, "/c/p/2", &[("accept-language", "en")]).await);
    for (kind, n) in [("url", 3.0), ("prefix", 3.0), ("tag", 4.0), ("cache", 1.0)] {
        assert_eq!(
            metric(&gw, "tollgate_cache_purges_total", &[("kind", kind)]).await,
            n,
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_purge_is_a_problem_naming_the_mistake() {
    let o = origin("t").await;
    let gw = GatewayHandle::start(&config(&o.target(), "")).await;
    for (body, says) in [
        ("not json", "JSON object"),
        ("{}", "exactly one"),
        (r#"{"url": "/a", "prefix": "/"}"#, "exactly one"),
        (r#"{"tag": "x", "host": "h"}"#, "only goes with"),
        (r#"{"url": "relative"}"#, "starting with '/'"),
        (r#"{"url": "/c/../admin"}"#, "'.' or '..' segments"),
        (r#"{"url": "/c/x", "host": "a b"}"#, "not a host name"),
        (r#"{"cache": "nosuch"}"#, r#"no cache named \"nosuch\""#),
    ] {
        let a = purge(&gw, body, None).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
        assert!(a.body.contains(says), "{body}: {}", a.body);
    }
    let big = format!(r#"{{"tag": "{}"}}"#, "x".repeat(20_000));
    assert_eq!(purge(&gw, &big, None).await.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_a_purge_needs_it_and_reads_stay_open() {
    let o = origin("t").await;
    let body = config(&o.target(), "");
    let env = [("TOLLGATE_TEST_ADMIN_TOKEN", "s3cret-token")];
    let gw = GatewayHandle::start_binary_with_env(
        &body,
        "admin_token_env = \"TOLLGATE_TEST_ADMIN_TOKEN\"",
        &env,
    )
    .await;
    call(&gw, "/c/a", &[]).await;
    for token in [None, Some("wrong"), Some("s3cret-tokenX")] {
        let a = purge(&gw, r#"{"tag": "t"}"#, token).await;
        assert_eq!(a.status, 401, "{token:?}: {a:?}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    }
    assert!(
        hit(&gw, "/c/a", &[]).await,
        "nothing purged without the token"
    );
    assert_eq!(
        purged(&purge(&gw, r#"{"tag": "t"}"#, Some("s3cret-token")).await),
        1
    );
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let shouted = client()
        .post(gw.admin_url("/cache/purge"))
        .header("authorization", "BEARER s3cret-token")
        .body(r#"{"tag": "t"}"#);
    assert_eq!(purged(&send(shouted).await.unwrap()), 0);
    let metrics = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_every_instance_through_redis() {
    let mut redis = RedisServer::start();
    let o = origin("shared").await;
    let cluster = format!(
        "[cluster]\nredis_url = \"{}\"\ntimeout = \"500ms\"\n",
        redis.url()
    );
    let body = config(&o.target(), &cluster);
    let a = GatewayHandle::start(&body).await;
    let b = GatewayHandle::start(&body).await;
    // Both subscribed: a purge published now reaches the other.
    let subscribed = eventually(Duration::from_secs(10), || async {
        redis
            .command("PUBSUB NUMSUB tollgate:cache:purge")
            .is_ok_and(|r| r.contains(":2\r\n"))
    })
    .await;
    assert!(
        subscribed,
        "{:?}",
        redis.command("PUBSUB NUMSUB tollgate:cache:purge")
    );
    for gw in [&a, &b] {
        call(gw, "/c/item", &[]).await;
        assert!(hit(gw, "/c/item", &[]).await);
    }
    let answer = purge(&a, r#"{"tag": "shared"}"#, None).await;
    let started = Instant::now();
    assert_eq!(purged(&answer), 1);
    assert!(
        answer.body.contains("\"propagated\": true"),
        "{}",
        answer.body
    );
    let reached = eventually(Duration::from_secs(2), || async {
        metric(&b, "tollgate_cache_purges_total", &[("kind", "tag")]).await == 1.0
    })
    .await;
    assert!(reached, "instance b applied the purge");
    eprintln!(
        "purge applied by the other instance within {:?}",
        started.elapsed()
    );
    assert!(!hit(&b, "/c/item", &[]).await);

    // Redis down: applied here, reported as not propagated; back up: propagates again.
    redis.stop();
    call(&a, "/c/again", &[]).await;
    let answer = purge(&a, r#"{"url": "/c/again"}"#, None).await;
    assert_eq!(purged(&answer), 1);
    assert!(
        answer.body.contains("\"propagated\": false"),
        "{}",
        answer.body
    );
    redis.restart();
    for gw in [&a, &b] {
        call(gw, "/c/third", &[]).await;
    }
    let propagated = eventually(Duration::from_secs(15), || async {
        let answer = purge(&a, r#"{"url": "/c/third"}"#, None).await;
        answer.body.contains("\"propagated\": true")
            && metric(&b, "tollgate_cache_purges_total", &[("kind", "url")]).await >= 1.0
    })
    .await;
    assert!(propagated, "re-subscribed after the outage");
    assert!(!hit(&b, "/c/third", &[]).await);
}
