//! Acceptance tests for the "Edge security" spec: a request cannot reach a protected route
//! without credentials, and the request that is routed is byte for byte the one forwarded.
//!
//! - The corpus (`edge_security/corpus.rs`): request targets, Host variants and header
//!   combinations, sent raw over HTTP/1.1 and, where HTTP/2 can express them, over h2c and h2
//!   (TLS), each against a fixture of four raw-recording backends (one per route).
//! - Auth-bypass regressions: the same cases without a credential, against an `api_key` and a
//!   `jwt` policy: nothing reaches a protected backend, and nothing that reaches a public one
//!   would be served as a protected route by a lenient framework (`edge_security/model.rs`).
//! - The agreement property: random hostile targets are either refused or served by the route
//!   that the forwarded path, read leniently, would match.
//! - Forwarded headers, the connection after a refused request line, the new rejection reasons
//!   and the rate limit of Pingora's "Fail to proxy" lines.


#[rustfmt::skip]
mod corpus;
mod fixture;
mod model;
mod run;

use crate::support::{raw_exchange, try_parse_response, RawConn, ReadError};
use corpus::Case;
use fixture::{Edge, Policy, Route, Settings, ADMIN_HOST, GW_HOST};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};
use run::{bypasses, check, exchange, Answer, Report, Transport};
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Runs `cases` over `transport` against a fresh fixture with `settings`.
async fn run_corpus(title: &str, settings: Settings, cases: &[Case], transport: Transport) {
    let edge = Edge::start(Policy::ApiKey, settings).await;
    let mut report = Report::new(format!("{title} over {}", transport.name()));
    for case in cases {
        report.add(case.name, check(&edge, case, transport).await);
    }
    report.finish();
}

macro_rules! corpus_tests {
    ($($name:ident: $settings:expr, $cases:expr, $transport:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run_corpus(stringify!($name), $settings, $cases, $transport).await;
        }
    )*};
}

corpus_tests! {
    corpus_over_http1: Settings::Default, corpus::DEFAULT, Transport::Http1;
    corpus_over_h2c: Settings::Default, corpus::DEFAULT, Transport::H2c;
    corpus_over_h2_tls: Settings::Default, corpus::DEFAULT, Transport::H2Tls;
    corpus_without_merge_slashes_over_http1: Settings::NoMerge, corpus::NO_MERGE, Transport::Http1;
    corpus_without_merge_slashes_over_h2c: Settings::NoMerge, corpus::NO_MERGE, Transport::H2c;
    corpus_without_merge_slashes_over_h2_tls: Settings::NoMerge, corpus::NO_MERGE, Transport::H2Tls;
    corpus_keep_escaped_slashes_on_a_route_over_http1: Settings::KeepOnPublic, corpus::KEEP_ON_PUBLIC, Transport::Http1;
    corpus_keep_escaped_slashes_on_a_route_over_h2c: Settings::KeepOnPublic, corpus::KEEP_ON_PUBLIC, Transport::H2c;
    corpus_keep_escaped_slashes_on_a_route_over_h2_tls: Settings::KeepOnPublic, corpus::KEEP_ON_PUBLIC, Transport::H2Tls;
    corpus_keep_escaped_slashes_on_the_server_over_http1: Settings::KeepOnServer, corpus::KEEP_ON_SERVER, Transport::Http1;
    corpus_keep_escaped_slashes_on_the_server_over_h2c: Settings::KeepOnServer, corpus::KEEP_ON_SERVER, Transport::H2c;
    corpus_keep_escaped_slashes_on_the_server_over_h2_tls: Settings::KeepOnServer, corpus::KEEP_ON_SERVER, Transport::H2Tls;
    corpus_through_the_response_cache_over_http1: Settings::Cached, corpus::DEFAULT, Transport::Http1;
    corpus_through_the_response_cache_over_h2c: Settings::Cached, corpus::DEFAULT, Transport::H2c;
}

#[test]
fn the_corpus_covers_every_reproduction_of_the_issue() {
    let all: Vec<&Case> = corpus::DEFAULT
        .iter()
        .chain(corpus::NO_MERGE)
        .chain(corpus::KEEP_ON_PUBLIC)
        .chain(corpus::KEEP_ON_SERVER)
        .collect();
    assert!(all.len() >= 60, "only {} cases", all.len());
    for issue in 1..=6 {
        assert!(
            corpus::DEFAULT.iter().any(|c| c.issue == issue),
            "no case reproduces item {issue} of the issue"
        );
    }
    for table in [
        corpus::DEFAULT,
        corpus::NO_MERGE,
        corpus::KEEP_ON_PUBLIC,
        corpus::KEEP_ON_SERVER,
    ] {
        let mut names: Vec<&str> = table.iter().map(|c| c.name).collect();
        names.sort();
        let total = names.len();
        names.dedup();
        assert_eq!(names.len(), total, "case names repeat in a table");
    }
}

/// Every DEFAULT case without a credential: nothing may reach `admin` or `admin_host`, and
/// nothing that reaches `root` or `public` may read as a protected route to a lenient framework.
async fn no_bypass(policy: Policy, transport: Transport) {
    let edge = Edge::start(policy, Settings::Default).await;
    let mut report = Report::new(format!(
        "{policy:?} without credential over {}",
        transport.name()
    ));
    for case in corpus::DEFAULT {
        let verdict = match exchange(&edge, &case.req, transport, false).await {
            Err(why) => run::Verdict::Skip(why),
            Ok(x) => {
                let mut problems = bypasses(&x.delivered);
                if let Answer::Response(r) = &x.answer {
                    if r.status >= 500 {
                        problems.push(format!("status {}", r.status));
                    }
                }
                if problems.is_empty() {
                    run::Verdict::Pass
                } else {
                    let tag = match case.issue {
                        0 => String::new(),
                        n => format!("[issue {n}] "),
                    };
                    run::Verdict::Fail(format!("{tag}{}", problems.join("; ")))
                }
            }
        };
        report.add(case.name, verdict);
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_an_api_key_route_without_a_key_over_http1() {
    no_bypass(Policy::ApiKey, Transport::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_an_api_key_route_without_a_key_over_h2c() {
    no_bypass(Policy::ApiKey, Transport::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_a_jwt_route_without_a_token_over_http1() {
    no_bypass(Policy::Jwt, Transport::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_a_jwt_route_without_a_token_over_h2c() {
    no_bypass(Policy::Jwt, Transport::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_serves_each_route_with_a_credential_and_guards_it_without() {
    // A sanity check of the fixture itself, true today: each backend is reachable by its
    // route, and the protected ones only with the credential, for both policies.
    for policy in [Policy::ApiKey, Policy::Jwt] {
        let edge = Edge::start(policy, Settings::Default).await;
        for (target, host, route) in [
            ("/", GW_HOST, Route::Root),
            ("/api/x", GW_HOST, Route::Public),
            ("/admin/x", GW_HOST, Route::Admin),
            ("/x", ADMIN_HOST, Route::AdminHost),
        ] {
            let req = corpus::get(target).host(host);
            for with_credential in [true, false] {
                let x = exchange(&edge, &req, Transport::Http1, with_credential)
                    .await
                    .unwrap();
                let Answer::Response(r) = &x.answer else {
                    panic!("{policy:?} {target}: {:?}", x.answer)
                };
                if with_credential || !route.protected() {
                    assert_eq!(r.status, 200, "{policy:?} {target}");
                    assert_eq!(x.delivered.requests.len(), 1);
                    assert_eq!(x.delivered.requests[0].0, route, "{policy:?} {target}");
                } else {
                    assert_eq!(r.status, 401, "{policy:?} {target}");
                    assert!(x.delivered.nothing(), "{}", x.delivered.describe());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_line_closes_the_connection_and_a_pipelined_request_goes_nowhere() {
    let edge = Edge::start(Policy::ApiKey, Settings::Default).await;
    let (key, value) = edge.credential();
    for bad in ["GET x:/admin/secret HTTP/1.1", "GET /api/a b HTTP/1.1"] {
        let mark = edge.mark();
        // Keep-alive: a second, valid request right behind the refused one.
        let bytes = format!(
            "{bad}\r\nHost: {GW_HOST}\r\n{key}: {value}\r\n\r\nGET /admin/pipelined HTTP/1.1\r\nHost: {GW_HOST}\r\n{key}: {value}\r\n\r\n"
        );
        let mut conn = RawConn::connect(edge.gw.addr).await;
        conn.send(bytes.as_bytes()).await.unwrap();
        let (out, closed) = conn.read_until_close(Duration::from_secs(5)).await;
        assert!(closed, "{bad}: the connection stayed open");
        let r = try_parse_response(&out).unwrap_or_else(|e| panic!("{bad}: {e}"));
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{bad}"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("HTTP/1.1 200"),
            "{bad}: the pipelined request was answered"
        );
        let delivered = edge.since(&mark);
        assert!(delivered.nothing(), "{bad}: {}", delivered.describe());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_rejection_reasons_exist_from_the_start() {
    let edge = Edge::start(Policy::ApiKey, Settings::Default).await;
    let reasons = edge.rejections().await;
    for reason in [
        "bad_target",
        "bad_path",
        "missing_host",
        "bad_host",
        "malformed_head",
        "connect_method",
        "body_timeout",
    ] {
        assert_eq!(reasons.get(reason), Some(&0.0), "{reason}: {reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_shows_the_normalised_path_without_the_query() {
    let edge = Edge::start(Policy::ApiKey, Settings::Default).await;
    let x = exchange(
        &edge,
        &corpus::get("/%61dmin//secret?token=%2F"),
        Transport::Http1,
        true,
    )
    .await
    .unwrap();
    let Answer::Response(r) = &x.answer else {
        panic!("{:?}", x.answer)
    };
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap();
    let line = edge.access_line(id).await.expect("access-log line");
    assert_eq!(line["path"], "/admin/secret", "{line}");
    assert_eq!(line["route"], "admin", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_uses_the_parameters_of_the_normalised_path() {
    let edge = Edge::start(Policy::ApiKey, Settings::Rewrite).await;
    for (target, want) in [
        ("/v1/a/b?q=%2F", "/internal/a/b?q=%2F"),
        ("/v1//%61b//c?q=..%2F", "/internal/ab/c?q=..%2F"),
        ("//v1/x%7ey", "/internal/x~y"),
    ] {
        assert_served(&edge, target, true, Route::Public, want).await;
    }
}

/// Sends `GET target` over HTTP/1.1 (with the credential when `credential`): it must reach
/// `route`'s backend, once, as `forwarded`.
async fn assert_served(
    edge: &Edge,
    target: &'static str,
    credential: bool,
    route: Route,
    forwarded: &str,
) {
    let x = exchange(edge, &corpus::get(target), Transport::Http1, credential)
        .await
        .unwrap();
    let [(got, seen)] = &x.delivered.requests[..] else {
        panic!("{target}: {}", x.delivered.describe())
    };
    assert_eq!(*got, route, "{target}");
    assert_eq!(seen.target(), forwarded, "{target}");
}

/// Sends each `GET target` over HTTP/1.1 (with the credential when `credential`): each must
/// be refused as a bad path (400, problem+json, counted) with nothing forwarded.
async fn assert_refused_as_bad_path(edge: &Edge, targets: &[&'static str], credential: bool) {
    let before = edge.rejections().await["bad_path"];
    for &target in targets {
        let x = exchange(edge, &corpus::get(target), Transport::Http1, credential)
            .await
            .unwrap();
        let Answer::Response(r) = &x.answer else {
            panic!("{target}: {:?}", x.answer)
        };
        assert_eq!(r.status, 400, "{target}: {}", x.delivered.describe());
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{target}"
        );
        assert!(
            x.delivered.nothing(),
            "{target}: {}",
            x.delivered.describe()
        );
    }
    assert_eq!(
        edge.rejections().await["bad_path"],
        before + targets.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_refuses_segments_a_lenient_backend_reads_as_dots() {
    // `/v1/{*rest}` forwards as `/internal/{rest}`. The gateway's own path reads the same to a
    // lenient backend (`/v1/..;/v1/secret` is `/v1/secret`, still the v1 route), but the
    // forwarded one does not: Tomcat and Spring read `/internal/..;/v1/secret` as
    // `/v1/secret`, out of `/internal/`. Such segments are refused on a rewrite route.
    let edge = Edge::start(Policy::ApiKey, Settings::Rewrite).await;
    let refused = [
        "/v1/..;/v1/secret",
        "/v1/a/..;/..;/..;/v1/x",
        "/v1/%2e%2e;/v1/secret",
        "/v1/%2E%2E;jsessionid=1/v1/secret",
        "/v1/..%3B/v1/secret",
        "/v1/..%3bx/v1/secret",
        "/v1/.;/x",
        "/v1/a/..;",
    ];
    assert_refused_as_bad_path(&edge, &refused, true).await;
    // Path parameters and escapes that stay in their segment still go through.
    for (target, want) in [
        ("/v1/a;jsessionid=1/b", "/internal/a;jsessionid=1/b"),
        ("/v1/..a;b/c", "/internal/..a;b/c"),
        ("/v1/a%3Bb/c", "/internal/a%3Bb/c"),
        ("/v1/a.;/b", "/internal/a.;/b"),
    ] {
        assert_served(&edge, target, true, Route::Public, want).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_a_case_insensitive_or_trimming_backend_reads_as_another_route_is_refused() {
    // Express (by default), ASP.NET and IIS serve `/ADMIN/x` as `/admin/x`; Spring trims
    // `/admin%20/x` to it, IIS drops the dot of `/admin./x`; Java's equalsIgnoreCase takes
    // `ı` for `i`. Through the public catch-all, each would reach the admin handler of a
    // backend serving both routes without a key.
    let edge = Edge::start(Policy::ApiKey, Settings::Default).await;
    let refused = [
        "/ADMIN/x",
        "/Admin/x",
        "/%41dmin/x",
        "/admin%20/x",
        "/%20admin/x",
        "/admin./x",
        "/ADMIN../x",
        "/adm%C4%B1n/x",
        "/ADMIN/",
    ];
    assert_refused_as_bad_path(&edge, &refused, false).await;
    // Capitals and dots that leave the route as it is pass unchanged.
    for (target, credential, route) in [
        ("/API/Users/X", false, Route::Public),
        ("/api/v1./x.", false, Route::Public),
        ("/ADMIN", false, Route::Public),
        ("/Administrator/x", false, Route::Public),
        ("/admin/Secret/X", true, Route::Admin),
        ("/admin/x./Y%20", true, Route::Admin),
    ] {
        assert_served(&edge, target, credential, route, target).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Headers the gateway owns.

/// Sends `GET /api/x` with `headers` (and Host `gw.test`) over HTTP/1.1 to the public route;
/// returns what the public backend received.
async fn forwarded(edge: &Edge, head: &[&str]) -> crate::support::RecordedRequest {
    let mark = edge.mark();
    let mut text = String::new();
    for line in head {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Connection: close\r\n\r\n");
    let out = raw_exchange(edge.gw.addr, text.as_bytes()).await;
    let r = try_parse_response(&out).unwrap_or_else(|e| panic!("{head:?}: {e}"));
    assert_eq!(
        r.status,
        200,
        "{head:?}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let delivered = edge.since(&mark);
    assert_eq!(delivered.requests.len(), 1, "{}", delivered.describe());
    let (route, seen) = delivered.requests.into_iter().next().unwrap();
    assert_eq!(route, Route::Public, "{head:?}");
    seen
}

/// The proxy-identity headers a client must not be able to set, with the values sent.
const PROXY_HEADERS: [(&str, &str); 6] = [
    (
        "Forwarded",
        "for=203.0.113.9;host=admin.example.com;proto=https",
    ),
    ("X-Real-IP", "203.0.113.9"),
    ("X-Forwarded-Port", "8443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Original-URL", "/admin/secret"),
    ("X-Rewrite-URL", "/admin/secret"),
];

fn with_proxy_headers(first: &[&str]) -> Vec<String> {
    first
        .iter()
        .map(|l| l.to_string())
        .chain(PROXY_HEADERS.iter().map(|(k, v)| format!("{k}: {v}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_x_forwarded_for_line_is_kept_in_order_then_the_peer() {
    let edge = Edge::start(Policy::ApiKey, Settings::Default).await;
    let seen = forwarded(
        &edge,
        &[
            "GET /api/x HTTP/1.1",
            "Host: gw.test",
            "X-Forwarded-For: 203.0.113.1",
            "X-Forwarded-For: 198.51.100.2, 192.0.2.3",
            "x-forwarded-for: 192.0.2.4",
        ],
    )
    .await;
    assert_eq!(
        seen.header_values("x-forwarded-for"),
        ["203.0.113.1, 198.51.100.2, 192.0.2.3, 192.0.2.4, 127.0.0.1"]
    );
    assert_eq!(seen.header_values("x-forwarded-proto"), ["http"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_x_forwarded_host_or_proto_never_survives() {
    let edge = Edge::start(Policy::ApiKey, Settings::Default).await;
    // Over HTTP/2 the corpus checks `:authority`; here a `host` field stands in for it.
    let req = crate::support::http2::H2Request {
        method: "GET".into(),
        path: "/api/x".into(),
        headers: vec![
            ("host".into(), "public.example.com".into()),
            ("x-forwarded-host".into(), ADMIN_HOST.into()),
        ],
        ..Default::default()
    };
    let mark = edge.mark();
    let mut conn = crate::support::http2::H2Conn::plain(edge.gw.addr).await;
    let answer = conn.exchange(req.build().unwrap()).await;
    assert!(
        matches!(&answer, crate::support::http2::H2Answer::Response(r) if r.status == 200),
        "{answer:?}"
    );
    let delivered = edge.since(&mark);
    let [(_, seen)] = &delivered.requests[..] else {
        panic!("{}", delivered.describe())
    };
    assert_eq!(
        seen.header_values("x-forwarded-host"),
        ["public.example.com"]
    );

    let spoof = [
        "X-Forwarded-Host: admin.example.com",
        "X-Forwarded-Proto: https",
    ];
    for (head, want_host) in [
        (
            vec!["GET /api/x HTTP/1.1", "Host: gw.test"],
            Some("gw.test"),
        ),
        (vec!["GET /api/x HTTP/1.0"], None),
        (
            vec!["GET http://public.example.com/api/x HTTP/1.1"],
            Some("public.example.com"),
        ),
        (
            vec!["GET http://public.example.com/api/x HTTP/1.0"],
            Some("public.example.com"),
        ),
    ] {
        let mut lines = head.clone();
        lines.extend(spoof);
        let seen = forwarded(&edge, &lines).await;
        let want: Vec<&str> = want_host.into_iter().collect();
        assert_eq!(seen.header_values("x-forwarded-host"), want, "{head:?}");
        assert_eq!(
            seen.header_values("x-forwarded-proto"),
            ["http"],
            "{head:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_an_untrusted_peer_are_removed() {
    let edge = Edge::start(Policy::ApiKey, Settings::Default).await;
    let head = with_proxy_headers(&["GET /api/x HTTP/1.1", "Host: gw.test"]);
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let seen = forwarded(&edge, &head).await;
    let kept: Vec<&str> = PROXY_HEADERS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !seen.header_values(k).is_empty())
        .collect();
    assert!(
        kept.is_empty(),
        "forwarded from an untrusted peer: {kept:?}\n{}",
        seen.head
    );
}

/// Header lines of `seen` whose name has a `_` and reads as one of `names` once `_` is `-`.
fn underscore_spellings<'a>(
    seen: &'a crate::support::RecordedRequest,
    names: &[&str],
) -> Vec<&'a str> {
    seen.head
        .split("\r\n")
        .skip(1)
        .filter(|line| {
            line.split_once(':').is_some_and(|(k, _)| {
                k.contains('_')
                    && names
                        .iter()
                        .any(|n| k.replace('_', "-").eq_ignore_ascii_case(n))
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_gateway_owns_cannot_be_sent_spelled_with_underscores() {
    // CGI, WSGI, Rack and nginx with `underscores_in_headers` read `X_Real_IP` as `X-Real-IP`
    // (both are HTTP_X_REAL_IP): a client must not get past the gateway's own headers, or its
    // removal of the proxy headers, by respelling them. Trusted proxy or not.
    let owned = [
        "X_Forwarded_For: 203.0.113.9",
        "x_forwarded-proto: https",
        "X-Forwarded_Host: admin.example.com",
        "X_Request_Id: spoofed-id",
        "X_Real_IP: 203.0.113.9",
        "X_Forwarded_Port: 8443",
        "X_Forwarded_Prefix: /admin",
        "X_Original_URL: /admin/secret",
        "X_Rewrite_URL: /admin/secret",
        "X_Debug: 1",
        "X_Consumer: root",
    ];
    let names: Vec<String> = owned
        .iter()
        .map(|l| l.split_once(':').unwrap().0.replace('_', "-"))
        .collect();
    for settings in [Settings::Default, Settings::TrustedStrip] {
        // `X-Debug` is only the gateway's business where `strip_request_headers` lists it.
        let names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| settings == Settings::TrustedStrip || *n != "X-Debug")
            .collect();
        let edge = Edge::start(Policy::ApiKey, settings).await;
        let mut head = vec![
            "GET /api/x HTTP/1.1",
            "Host: gw.test",
            "X_Unrelated_Thing: kept",
        ];
        head.extend(owned);
        let seen = forwarded(&edge, &head).await;
        assert_eq!(
            underscore_spellings(&seen, &names),
            Vec::<&str>::new(),
            "{settings:?}\n{}",
            seen.head
        );
        assert_eq!(
            seen.header_values("x_unrelated_thing"),
            ["kept"],
            "{settings:?}"
        );
        let debug = seen.header_values("x_debug");
        match settings {
            Settings::Default => assert_eq!(debug, ["1"]),
            _ => assert!(debug.is_empty(), "{}", seen.head),
        }
        assert_eq!(
            seen.header_values("x-forwarded-for"),
            ["127.0.0.1"],
            "{settings:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_a_trusted_peer_are_kept() {
    let edge = Edge::start(Policy::ApiKey, Settings::Trusted).await;
    let head = with_proxy_headers(&[
        "GET /api/x HTTP/1.1",
        "Host: gw.test",
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-Host: admin.example.com",
    ]);
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let seen = forwarded(&edge, &head).await;
    for (name, value) in PROXY_HEADERS {
        assert_eq!(seen.header_values(name), [value], "{name}\n{}", seen.head);
    }
    assert_eq!(
        seen.header_values("x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    // "A client-sent value never survives", trusted peer or not.
    assert_eq!(seen.header_values("x-forwarded-host"), ["gw.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_request_headers_removes_the_listed_headers() {
    let edge = Edge::start(Policy::ApiKey, Settings::Strip).await;
    let seen = forwarded(
        &edge,
        &[
            "GET /api/x HTTP/1.1",
            "Host: gw.test",
            "X-Debug: 1",
            "x-DEBUG: 2",
            "X-Debugger: kept",
        ],
    )
    .await;
    assert!(seen.header_values("x-debug").is_empty(), "{}", seen.head);
    assert_eq!(seen.header_values("x-debugger"), ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_request_headers_applies_to_a_trusted_peer_too() {
    // The spec lists `strip_request_headers` with the headers removed "unless the peer is in
    // trusted_proxies"; this test takes the reading that protects the backend (an operator
    // who lists a header wants it gone whoever sent it). See the report's open questions.
    let edge = Edge::start(Policy::ApiKey, Settings::TrustedStrip).await;
    let seen = forwarded(
        &edge,
        &["GET /api/x HTTP/1.1", "Host: gw.test", "X-Debug: 1"],
    )
    .await;
    assert!(seen.header_values("x-debug").is_empty(), "{}", seen.head);
    // The trusted proxy's own headers still pass.
    let seen = forwarded(
        &edge,
        &[
            "GET /api/x HTTP/1.1",
            "Host: gw.test",
            "X-Real-IP: 203.0.113.9",
        ],
    )
    .await;
    assert_eq!(seen.header_values("x-real-ip"), ["203.0.113.9"]);
}

// ---------------------------------------------------------------------------------------------
// Counting and logs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_to_proxy_lines_are_rate_limited_and_counted() {
    const SUPPRESSED: &str = "tollgate_log_lines_suppressed_total{kind=\"ConnectRefused\"}";
    // An upstream nobody listens on: every request fails to connect, the same error kind.
    let dead = format!("127.0.0.1:{}", crate::support::free_port());
    let gw = crate::support::GatewayHandle::start_binary(
        &crate::support::gateway::catch_all(&dead, ""),
        "",
    )
    .await;
    let http = crate::support::client();
    let sent = 20;
    let started = Instant::now();
    for i in 0..sent {
        let r = http.get(gw.url(&format!("/x{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    let took = started.elapsed();
    // Within one second at most one line per kind; the requests may straddle a boundary.
    let allowed = 1 + took.as_secs() as usize + 1;
    let counted = crate::support::eventually(Duration::from_secs(3), || async {
        gw.metric(SUPPRESSED).await.unwrap_or(0.0) >= (sent - allowed) as f64
    })
    .await;
    let lines = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("Fail to proxy"))
        .count();
    assert!(
        lines <= allowed,
        "{lines} \"Fail to proxy\" lines for {sent} failures in {took:?}"
    );
    assert!(
        counted,
        "{SUPPRESSED} = {:?} after {sent} failures and {lines} lines",
        gw.metric(SUPPRESSED).await
    );
}

// ---------------------------------------------------------------------------------------------
// The agreement property.

/// Tokens of the hostile alphabet. Ordinary ones first: shrinking moves towards them.
const PLAIN: &[&str] = &[
    "a", "x", "admin", "secret", "/", "0", "1", "2", "6", "9", "A", "B", "c", "E", "f", "F", "~",
    "-", "=",
];
const HOSTILE: &[&str] = &[
    ".", "..", "%", "%2e", "%2E", "%2F", "%2f", "%5c", "%5C", "%61", "%41", "%3B", "%3b", "%25",
    "%00", "%7e", ";", "\\", ":", "?", "#", "é", "日本", "//", "..;",
];

/// `/` + 0-5 segments of 0-6 tokens, joined by `/`.
fn hostile_target() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => prop::sample::select(PLAIN),
        2 => prop::sample::select(HOSTILE),
    ];
    prop::collection::vec(prop::collection::vec(token, 0..=6), 0..=5).prop_map(|segments| {
        let segments: Vec<String> = segments.iter().map(|s| s.concat()).collect();
        format!("/{}", segments.join("/"))
    })
}

/// Counts of the property's outcomes.
#[derive(Default, Debug)]
struct Tally {
    served: usize,
    refused: usize,
}

/// One keep-alive HTTP/1.1 client: reconnects after a refusal or a close.
struct KeepAlive {
    addr: std::net::SocketAddr,
    conn: Option<RawConn>,
}

impl KeepAlive {
    /// Sends `bytes`, returns the answer. A reused connection that turns out closed before any
    /// answer is retried once on a new one (when nothing reached a backend meanwhile).
    async fn exchange(
        &mut self,
        edge: &Edge,
        bytes: &[u8],
    ) -> Result<crate::support::RawResponse, String> {
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => RawConn::connect(self.addr).await,
            };
            let mark = edge.mark();
            let sent = conn.send(bytes).await;
            let answer = match sent {
                Ok(()) => conn.try_read_response(Duration::from_secs(10)).await,
                Err(_) => Err(ReadError::Closed(Vec::new())),
            };
            match answer {
                Ok(r) => {
                    let close = r
                        .header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    if r.status == 200 && !close {
                        self.conn = Some(conn);
                    }
                    return Ok(r);
                }
                Err(ReadError::Closed(got))
                    if reused && got.is_empty() && attempt == 0 && edge.since(&mark).nothing() =>
                {
                    continue;
                }
                Err(ReadError::Closed(got)) => {
                    return Err(format!(
                        "connection closed without an answer (got {:?})",
                        String::from_utf8_lossy(&got)
                    ))
                }
                Err(ReadError::TimedOut) => return Err("no answer within 10 s (a hang)".into()),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

/// One property case: refused with 400 and nothing forwarded, or served by the route that a
/// lenient framework gives the forwarded request.
async fn agrees(
    edge: &Edge,
    client: &mut KeepAlive,
    tally: &mut Tally,
    target: &str,
    admin_host: bool,
) -> Result<(), String> {
    let host = if admin_host { ADMIN_HOST } else { GW_HOST };
    let (key, value) = edge.credential();
    let bytes = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{key}: {value}\r\n\r\n");
    let mark = edge.mark();
    let r = client.exchange(edge, bytes.as_bytes()).await?;
    let delivered = edge.since(&mark);
    match r.status {
        400 => {
            tally.refused += 1;
            if delivered.nothing() {
                Ok(())
            } else {
                Err(format!("refused, yet {}", delivered.describe()))
            }
        }
        200 => {
            tally.served += 1;
            let [(route, seen)] = &delivered.requests[..] else {
                return Err(format!("200, and {}", delivered.describe()));
            };
            let lenient = model::lenient_route(
                seen.target(),
                seen.header("host"),
                seen.header("x-forwarded-host"),
            );
            if *route == lenient {
                Ok(())
            } else {
                Err(format!(
                    "served by {} as {:?}, which a lenient framework serves as {}",
                    route.name(),
                    seen.target(),
                    lenient.name()
                ))
            }
        }
        status => Err(format!(
            "status {status} (refusals must be 400): {} / {}",
            String::from_utf8_lossy(&r.body),
            delivered.describe()
        )),
    }
}

#[test]
fn every_accepted_target_is_served_by_the_route_its_lenient_reading_matches() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let edge = rt.block_on(Edge::start(Policy::ApiKey, Settings::Default));
    let client = RefCell::new(KeepAlive {
        addr: edge.gw.addr,
        conn: None,
    });
    let tally = RefCell::new(Tally::default());
    let config = ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let result = runner.run(
        &(hostile_target(), prop::bool::weighted(0.25)),
        |(target, admin_host)| {
            let mut client = client.borrow_mut();
            let mut tally = tally.borrow_mut();
            rt.block_on(agrees(&edge, &mut client, &mut tally, &target, admin_host))
                .map_err(TestCaseError::fail)
        },
    );
    println!(
        "agreement property: {:?} in {:?}",
        tally.borrow(),
        started.elapsed()
    );
    rt.block_on(async { drop(edge) });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (target, admin_host))) => panic!(
            "minimal failing target: GET {target} (Host: {})\n{why}",
            if admin_host { ADMIN_HOST } else { GW_HOST }
        ),
        Err(e) => panic!("{e}"),
    }
}
