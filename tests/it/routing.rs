//! Routing through a real gateway: specificity, wildcard hosts, params, catch-all (and its
//! prefix with the trailing slash), methods, rewrite, and the 404/405 problem responses.

use crate::support::auth::{assert_denied, keys_file};
use crate::support::{backend, client, raw_request, send, GatewayHandle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_specificity_and_rewrites() {
    let a = backend("static").start().await;
    let b = backend("param").start().await;
    let c = backend("catchall").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.a]
targets = ["{}"]
[upstreams.b]
targets = ["{}"]
[upstreams.c]
targets = ["{}"]

[routes.me]
path = "/v1/users/me"
upstream = "a"

[routes.user]
path = "/v1/users/{{id}}"
upstream = "b"
rewrite = "/users/{{id}}/profile"

[routes.rest]
path = "/v1/{{*rest}}"
upstream = "c"
rewrite = "/api/{{rest}}"
"#,
        a.target(),
        b.target(),
        c.target()
    ))
    .await;
    let http = client();
    let r = http.get(gw.url("/v1/users/me")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"static"}"#);

    let r = http
        .get(gw.url("/v1/users/42?x=1&y=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"param"}"#);
    assert_eq!(b.received()[0].uri, "/users/42/profile?x=1&y=2");

    let r = http.get(gw.url("/v1/orders/7/items")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"catchall"}"#);
    assert_eq!(c.received()[0].uri, "/api/orders/7/items");

    let r = http.get(gw.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["title"], "Not Found");
    assert_eq!(a.count() + b.count() + c.count(), 3);
}

/// GET `path` with an explicit Host header; returns (status, body).
async fn get_with_host(gw: &GatewayHandle, host: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(gw.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_exact_beats_wildcard_beats_any_host() {
    let exact = backend("exact").start().await;
    let wild = backend("wild").start().await;
    let any = backend("any").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.exact]
targets = ["{}"]
[upstreams.wild]
targets = ["{}"]
[upstreams.any]
targets = ["{}"]

# Declared least specific first: the file order must not matter.
[routes.any_host]
path = "/x"
upstream = "any"

[routes.wildcard]
host = "*.example.com"
path = "/x"
upstream = "wild"

[routes.exact_host]
host = "api.example.com"
path = "/x"
upstream = "exact"
"#,
        exact.target(),
        wild.target(),
        any.target()
    ))
    .await;
    let cases = [
        ("api.example.com", "exact"),
        // case-insensitive, port ignored
        ("API.Example.COM", "exact"),
        ("api.example.com:8443", "exact"),
        ("Api.EXAMPLE.com:1", "exact"),
        ("shop.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("SHOP.Example.Com:9999", "wild"),
        // the apex is not a subdomain of itself
        ("example.com", "any"),
        ("example.com:8080", "any"),
        ("api.example.org", "any"),
        ("notexample.com", "any"),
    ];
    for (host, want) in cases {
        let (status, body) = get_with_host(&gw, host, "/x").await;
        assert_eq!(status, 200, "Host: {host}");
        assert_eq!(body, format!(r#"{{"backend":"{want}"}}"#), "Host: {host}");
    }
    assert_eq!(exact.count(), 4);
    assert_eq!(wild.count(), 3);
    assert_eq!(any.count(), 4);
    // The backend sees the Host the client sent.
    assert_eq!(wild.received()[0].header("host"), Some("shop.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_never_matches_the_apex() {
    let wild = backend("wild").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.wild]
targets = ["{}"]

[routes.wildcard]
host = "*.example.com"
path = "/x"
upstream = "wild"
"#,
        wild.target()
    ))
    .await;
    for host in [
        "example.com",
        "EXAMPLE.COM:80",
        "example.com.evil.org",
        "xexample.com",
    ] {
        let (status, body) = get_with_host(&gw, host, "/x").await;
        assert_eq!(status, 404, "Host: {host}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["status"], 404);
    }
    assert_eq!(wild.count(), 0);
    let (status, _) = get_with_host(&gw, "x.example.com", "/x").await;
    assert_eq!(status, 200);
    assert_eq!(wild.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_more_specific_host_is_not_abandoned_for_the_method() {
    // The exact-host group matches the path, so it decides: 405, even though the any-host route
    // would take POST.
    let exact = backend("exact").start().await;
    let any = backend("any").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.exact]
targets = ["{}"]
[upstreams.any]
targets = ["{}"]

[routes.exact_get]
host = "api.example.com"
path = "/x"
methods = ["GET"]
upstream = "exact"

[routes.any_post]
path = "/x"
methods = ["POST"]
upstream = "any"
"#,
        exact.target(),
        any.target()
    ))
    .await;
    let http = client();
    let r = http
        .post(gw.url("/x"))
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    let r = http
        .post(gw.url("/x"))
        .header("host", "other.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"any"}"#);
    assert_eq!(exact.count(), 0);
    assert_eq!(any.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_catch_all_and_rewrites_carry_the_query() {
    let items = backend("items").start().await;
    let parts = backend("parts").start().await;
    let files = backend("files").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.items]
targets = ["{}"]
[upstreams.parts]
targets = ["{}"]
[upstreams.files]
targets = ["{}"]

[routes.item]
path = "/v1/items/{{id}}"
upstream = "items"

[routes.part]
path = "/v1/items/{{id}}/parts/{{part}}"
upstream = "parts"
rewrite = "/p/{{part}}/of/{{id}}"

[routes.files]
path = "/v1/files/{{*path}}"
upstream = "files"
rewrite = "/storage/{{path}}"
"#,
        items.target(),
        parts.target(),
        files.target()
    ))
    .await;
    let http = client();
    let get = |path: &str| http.get(gw.url(path)).send();

    // No rewrite: path and query go upstream unchanged.
    let r = get("/v1/items/42?fields=a,b&x=%20y").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(items.received()[0].uri, "/v1/items/42?fields=a,b&x=%20y");

    // Two params, reordered by the rewrite, query carried.
    let r = get("/v1/items/7/parts/wheel-2?a=1&b=two").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"parts"}"#);
    assert_eq!(parts.received()[0].uri, "/p/wheel-2/of/7?a=1&b=two");

    // Catch-all spans segments.
    let r = get("/v1/files/a/b/c.txt?download=1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(files.received()[0].uri, "/storage/a/b/c.txt?download=1");
    let r = get("/v1/files/top").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(files.received()[1].uri, "/storage/top");

    // A {param} is one segment: neither route takes three segments after /items.
    let r = get("/v1/items/7/8").await.unwrap();
    assert_eq!(r.status(), 404);
    let r = get("/v1/items/7/parts/x/y").await.unwrap();
    assert_eq!(r.status(), 404);

    assert_eq!(items.count(), 1);
    assert_eq!(parts.count(), 1);
    assert_eq!(files.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_with_allow_and_problem_body() {
    let b = backend("things").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.things]
targets = ["{}"]

[routes.things]
path = "/things/{{id}}"
methods = ["POST", "GET"]
upstream = "things"
"#,
        b.target()
    ))
    .await;
    let http = client();
    let r = http
        .delete(gw.url("/things/1?token=secret-value"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!rid.is_empty());
    let text = r.text().await.unwrap();
    assert!(!text.contains("secret-value"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], 405);
    assert_eq!(body["title"], "Method Not Allowed");
    assert!(body["type"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert_eq!(body["request_id"], rid.as_str());

    // PUT too; the accepted methods still pass.
    let r = http.put(gw.url("/things/1")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(b.count(), 0);
    assert_eq!(
        http.get(gw.url("/things/1")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.post(gw.url("/things/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let got: Vec<String> = b.received().into_iter().map(|r| r.method).collect();
    assert_eq!(got, ["GET", "POST"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_path_two_routes_on_disjoint_methods() {
    let reader = backend("reader").start().await;
    let writer = backend("writer").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.reader]
targets = ["{}"]
[upstreams.writer]
targets = ["{}"]

[routes.read]
path = "/orders/{{id}}"
methods = ["GET"]
upstream = "reader"

[routes.write]
path = "/orders/{{id}}"
methods = ["PUT", "POST"]
upstream = "writer"
rewrite = "/w/{{id}}"
"#,
        reader.target(),
        writer.target()
    ))
    .await;
    let http = client();
    let r = http.get(gw.url("/orders/5")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"reader"}"#);
    let r = http
        .put(gw.url("/orders/5"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"writer"}"#);
    let r = http
        .post(gw.url("/orders/6"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"writer"}"#);
    let r = http.delete(gw.url("/orders/5")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST, PUT");

    assert_eq!(reader.count(), 1);
    assert_eq!(reader.received()[0].uri, "/orders/5");
    let w = writer.received();
    assert_eq!(w.len(), 2);
    assert_eq!((w[0].method.as_str(), w[0].uri.as_str()), ("PUT", "/w/5"));
    assert_eq!((w[1].method.as_str(), w[1].uri.as_str()), ("POST", "/w/6"));
    assert_eq!(w[1].body, b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_to_a_problem_response_has_no_body() {
    let b = backend("b").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.b]
targets = ["{}"]

[routes.only_get]
path = "/only-get"
methods = ["GET"]
upstream = "b"
"#,
        b.target()
    ))
    .await;
    // A GET to an unknown path has the problem body; HEAD gets the same head and no body.
    let get = raw_request(gw.addr, &["GET /nowhere HTTP/1.1", "Host: gw.test"], b"").await;
    assert_eq!(get.status, 404);
    assert!(!get.body.is_empty());
    assert_eq!(get.json()["status"], 404);

    let head = raw_request(gw.addr, &["HEAD /nowhere HTTP/1.1", "Host: gw.test"], b"").await;
    assert_eq!(head.status, 404);
    assert_eq!(
        head.header("content-type"),
        Some("application/problem+json")
    );
    assert!(head.header("x-request-id").is_some_and(|v| !v.is_empty()));
    assert!(
        head.body.is_empty(),
        "HEAD got a body: {:?}",
        String::from_utf8_lossy(&head.body)
    );

    let head = raw_request(gw.addr, &["HEAD /only-get HTTP/1.1", "Host: gw.test"], b"").await;
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("GET"));
    assert_eq!(
        head.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        head.body.is_empty(),
        "HEAD got a body: {:?}",
        String::from_utf8_lossy(&head.body)
    );
    assert_eq!(b.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_prefix_route_also_guards_its_prefix_with_the_slash() {
    // A public catch-all for the site and a protected one for /admin/: "/admin/" must not
    // fall through to the public route.
    let site = backend("site").start().await;
    let admin = backend("admin").start().await;
    let keys = tempfile::tempdir().unwrap();
    let keys_path = keys_file(&keys, &[("ops", "ops-key-0001")]);
    let gw = GatewayHandle::start(&format!(
        r#"
[auth.ops]
type = "api_key"
header = "x-api-key"
keys_file = "{keys_path}"

[upstreams.site]
targets = ["{}"]
[upstreams.admin]
targets = ["{}"]

[routes.site]
path = "/{{*rest}}"
upstream = "site"

[routes.admin]
path = "/admin/{{*rest}}"
upstream = "admin"
auth = "ops"
rewrite = "/internal/{{rest}}"
"#,
        site.target(),
        admin.target()
    ))
    .await;
    let get = |path: &str| client().get(gw.url(path));

    let a = send(get("/admin/")).await.unwrap();
    assert_denied(&a, 401, "ApiKey header=\"x-api-key\"");
    assert_eq!(site.count() + admin.count(), 0, "a backend saw /admin/");

    let a = send(get("/admin/").header("x-api-key", "ops-key-0001"))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.backend().as_deref(), Some("admin"));
    // The catch-all parameter is empty for the prefix.
    assert_eq!(admin.received()[0].uri, "/internal/");
    assert_eq!(site.count(), 0);

    // The root is the site's prefix in the same way; the bare "/admin" is another path, served
    // by the site (what `tollgate check` warns about).
    for path in ["/", "/admin"] {
        let a = send(get(path)).await.unwrap();
        assert_eq!(a.backend().as_deref(), Some("site"), "{path}: {a:?}");
    }
    assert_eq!(admin.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capitals_route_as_written_and_are_refused_only_where_case_would_change_the_route() {
    // A pattern with capitals serves its paths as written, and capitals in a request are no
    // reason to refuse it; only a request that a case-insensitive backend would read as
    // another route's path is refused.
    let files = backend("files").start().await;
    let rest = backend("rest").start().await;
    let gw = GatewayHandle::start(&format!(
        r#"
[upstreams.files]
targets = ["{}"]
[upstreams.rest]
targets = ["{}"]

[routes.files]
path = "/Files/{{id}}"
upstream = "files"
rewrite = "/store/{{id}}"

[routes.rest]
path = "/api/{{*rest}}"
upstream = "rest"

[routes.other]
path = "/{{*rest}}"
upstream = "rest"
"#,
        files.target(),
        rest.target()
    ))
    .await;
    for (path, status, backend, forwarded) in [
        ("/Files/AbC.Txt", 200, Some("files"), Some("/store/AbC.Txt")),
        ("/api/Users/X", 200, Some("rest"), Some("/api/Users/X")),
        ("/Other/Thing", 200, Some("rest"), Some("/Other/Thing")),
        // As written these are `other`'s; a case-insensitive backend reads them as `rest`'s
        // and `files`' paths.
        ("/API/x", 400, None, None),
        ("/files/abc", 400, None, None),
    ] {
        let a = send(client().get(gw.url(path))).await.unwrap();
        assert_eq!(a.status, status, "{path}: {a:?}");
        assert_eq!(a.backend().as_deref(), backend, "{path}");
        if let Some(forwarded) = forwarded {
            let seen = match backend {
                Some("files") => files.received(),
                _ => rest.received(),
            };
            assert_eq!(seen.last().unwrap().uri, forwarded, "{path}");
        }
    }
}
