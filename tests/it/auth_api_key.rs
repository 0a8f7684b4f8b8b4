//! API-key policies end to end: partners send a key in a header, the gateway checks its SHA-256
//! against `keys_file`, forwards the consumer name as `x-consumer`, and strips any
//! client-sent `x-consumer` on every route so nobody can claim to be a partner.

use crate::support::auth::{assert_denied, decisions, keys_file};
use crate::support::{backend, call, eventually, Backend, GatewayHandle};
use std::time::Duration;

fn config(keys: &str, target: &str) -> String {
    config_with(keys, target, "")
}

/// The test config with more `[auth.partners]` settings (`policy_extra`).
fn config_with(keys: &str, target: &str, policy_extra: &str) -> String {
    format!(
        r#"
[auth.partners]
type = "api_key"
header = "x-api-key"
keys_file = "{keys}"
{policy_extra}

[upstreams.u]
targets = ["{target}"]

[routes.partner]
path = "/partner/{{*rest}}"
upstream = "u"
auth = "partners"

[routes.public]
path = "/public"
upstream = "u"
"#
    )
}

async fn start(keys: &[(&str, &str)]) -> (GatewayHandle, Backend, tempfile::TempDir, String) {
    start_with(keys, "").await
}

async fn start_with(
    keys: &[(&str, &str)],
    policy_extra: &str,
) -> (GatewayHandle, Backend, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(&dir, keys);
    let b = backend("b").start().await;
    let gw = GatewayHandle::start(&config_with(&path, &b.target(), policy_extra)).await;
    (gw, b, dir, path)
}

const CHALLENGE: &str = "ApiKey header=\"x-api-key\"";

#[tokio::test(flavor = "multi_thread")]
async fn a_known_key_passes_and_names_its_consumer_upstream() {
    let (gw, b, _dir, _) = start(&[("acme", "acme-secret-1"), ("globex", "globex-secret-2")]).await;
    let a = call(
        &gw,
        "/partner/orders",
        &[("x-api-key", "globex-secret-2"), ("x-consumer", "acme")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = b.received();
    assert_eq!(seen.len(), 1);
    // The client's own x-consumer was replaced by the verified one, not appended to.
    assert_eq!(seen[0].headers.get_all("x-consumer").iter().count(), 1);
    assert_eq!(seen[0].header("x-consumer"), Some("globex"));
    assert_eq!(decisions(&gw, "partners", "allowed").await, 1.0);
}

/// What the backend received for one request with acme's key on the partner route.
async fn received_with_acme_key(policy_extra: &str) -> crate::support::Received {
    let (gw, b, _dir, _) = start_with(&[("acme", "acme-secret-1")], policy_extra).await;
    let a = call(&gw, "/partner/orders", &[("x-api-key", "acme-secret-1")]).await;
    assert_eq!(a.status, 200, "{a:?}");
    let mut seen = b.received();
    assert_eq!(seen.len(), 1);
    seen.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_stays_at_the_edge_unless_forward_credentials_is_set() {
    let seen = received_with_acme_key("").await;
    assert_eq!(seen.header("x-api-key"), None, "{:?}", seen.headers);
    assert_eq!(seen.header("x-consumer"), Some("acme"));

    let seen = received_with_acme_key("forward_credentials = true").await;
    assert_eq!(seen.header("x-api-key"), Some("acme-secret-1"));
    assert_eq!(seen.header("x-consumer"), Some("acme"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_keys_get_401_and_reach_nothing() {
    let (gw, b, _dir, _) = start(&[("acme", "acme-secret-1")]).await;
    for headers in [
        vec![("x-api-key", "acme-secret-2")],
        vec![("x-api-key", "")],
        vec![],
        vec![("authorization", "Bearer acme-secret-1")],
    ] {
        let a = call(&gw, "/partner/orders", &headers).await;
        assert_denied(&a, 401, CHALLENGE);
        assert!(
            !a.body.contains("acme"),
            "the body must not echo credentials: {a:?}"
        );
    }
    assert_eq!(b.count(), 0, "no denied request may reach the backend");
    assert_eq!(decisions(&gw, "partners", "unknown_key").await, 1.0);
    assert_eq!(decisions(&gw, "partners", "missing").await, 2.0);
    // An empty header value is not a key.
    assert_eq!(decisions(&gw, "partners", "malformed").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_consumer_header_is_stripped_on_public_routes_too() {
    let (gw, b, _dir, _) = start(&[("acme", "acme-secret-1")]).await;
    let a = call(
        &gw,
        "/public",
        &[("x-consumer", "acme"), ("X-Consumer", "root")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = b.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-consumer"), None, "{:?}", seen[0].headers);
}

/// The header names in `seen` that read as `name` once `_` is read as `-`, as CGI, WSGI, Rack
/// and nginx with `underscores_in_headers` read them (all become `HTTP_X_CONSUMER`).
fn spellings_of<'a>(seen: &'a crate::support::Received, name: &str) -> Vec<(&'a str, &'a str)> {
    seen.headers
        .iter()
        .filter(|(k, _)| k.as_str().replace('_', "-") == name)
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("?")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_header_spelled_with_underscores_is_stripped() {
    let (gw, b, _dir, _) = start(&[("acme", "acme-secret-1")]).await;
    let spoof = [
        ("X_Consumer", "root"),
        ("x_consumer", "root"),
        ("x-consumer", "root"),
    ];
    let mut with_key = vec![("x-api-key", "acme-secret-1")];
    with_key.extend(spoof);
    let a = call(&gw, "/partner/orders", &with_key).await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = call(&gw, "/public", &spoof).await;
    assert_eq!(a.status, 200, "{a:?}");
    // A header of the client's that only looks alike is its own business.
    let a = call(&gw, "/public", &[("x_consumer_hint", "kept")]).await;
    assert_eq!(a.status, 200, "{a:?}");

    let seen = b.received();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        spellings_of(&seen[0], "x-consumer"),
        [("x-consumer", "acme")]
    );
    assert_eq!(spellings_of(&seen[1], "x-consumer"), []);
    assert_eq!(seen[2].header("x_consumer_hint"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_header_named_with_underscores_cannot_be_sent_with_dashes() {
    // The other way round: the gateway's header is `x_partner`, the client sends `X-Partner`.
    let (gw, b, _dir, _) = start_with(
        &[("acme", "acme-secret-1")],
        "forward_consumer = \"x_partner\"",
    )
    .await;
    let spoof = [("X-Partner", "root"), ("x_Partner", "root")];
    let mut with_key = vec![("x-api-key", "acme-secret-1")];
    with_key.extend(spoof);
    assert_eq!(call(&gw, "/partner/orders", &with_key).await.status, 200);
    assert_eq!(call(&gw, "/public", &spoof).await.status, 200);
    let seen = b.received();
    assert_eq!(spellings_of(&seen[0], "x-partner"), [("x_partner", "acme")]);
    assert_eq!(spellings_of(&seen[1], "x-partner"), []);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_keys_file_reloads_with_the_config() {
    let (gw, b, dir, path) = start(&[("acme", "old-key-0001")]).await;
    assert_eq!(
        call(&gw, "/partner/x", &[("x-api-key", "old-key-0001")])
            .await
            .status,
        200
    );

    // Rotate acme's key and add a consumer, then reload the config.
    keys_file(
        &dir,
        &[("acme", "new-key-0002"), ("initech", "initech-key-3")],
    );
    let hash_before = gw.config_hash().await;
    gw.write_body(&format!("{}\n# rotated\n", config(&path, &b.target())));
    let reloaded = eventually(Duration::from_secs(5), || async {
        gw.config_hash().await != hash_before
    })
    .await;
    assert!(reloaded, "config did not reload");
    assert_denied(
        &call(&gw, "/partner/x", &[("x-api-key", "old-key-0001")]).await,
        401,
        CHALLENGE,
    );
    let a = call(&gw, "/partner/x", &[("x-api-key", "initech-key-3")]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        b.received().last().unwrap().header("x-consumer"),
        Some("initech")
    );

    // A broken keys file is a rejected reload: the last good keys keep working.
    std::fs::write(&path, "acme = \"not-a-digest\"\n").unwrap();
    let hash_before = gw.config_hash().await;
    gw.write_body(&format!("{}\n# broken keys\n", config(&path, &b.target())));
    // The keys file and the config are two writes: on a loaded machine they may fall in two
    // debounce windows and be two failed reloads.
    let rejected = eventually(Duration::from_secs(5), || async {
        gw.metric("tollgate_config_reloads_total{result=\"failure\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    assert!(rejected, "broken keys file was not rejected");
    assert_eq!(gw.config_hash().await, hash_before);
    assert_eq!(
        call(&gw, "/partner/x", &[("x-api-key", "new-key-0002")])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_only_the_keys_file_reloads_it() {
    let (gw, _b, dir, _path) = start(&[("acme", "first-key-0001")]).await;
    assert_eq!(
        call(&gw, "/partner/x", &[("x-api-key", "first-key-0001")])
            .await
            .status,
        200
    );
    // The config file is left alone: the watch covers the files the config names too.
    keys_file(&dir, &[("acme", "second-key-0002")]);
    let rotated = eventually(Duration::from_secs(5), || async {
        call(&gw, "/partner/x", &[("x-api-key", "second-key-0002")])
            .await
            .status
            == 200
    })
    .await;
    assert!(rotated, "the edited keys file was not picked up");
    assert_denied(
        &call(&gw, "/partner/x", &[("x-api-key", "first-key-0001")]).await,
        401,
        CHALLENGE,
    );
}
