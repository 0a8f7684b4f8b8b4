//! Routing through a real gateway: specificity, wildcard hosts, params, catch-all, methods,
//! rewrite, and the 404/405 problem responses.

mod support;
use support::{backend, client, GatewayHandle};

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

    let r = http.get(gw.url("/v1/users/42?x=1&y=2")).send().await.unwrap();
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
