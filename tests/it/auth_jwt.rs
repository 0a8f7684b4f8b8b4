//! JWT policies end to end: tokens signed with keys generated here, keys served as JWKS by a real
//! HTTP server, the attack corpus (each refused with an opaque 401 before anything reaches the
//! backend), scopes (403), claim forwarding and spoofed identity headers.

use crate::support::auth::{assert_denied, decisions};
use crate::support::jwt::{claims, jwks, now, raw_token, TestKey};
use crate::support::{backend, call, Answer, Backend, GatewayHandle};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};

const INVALID: &str = "Bearer error=\"invalid_token\"";
const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";
const ISSUER: &str = "https://id.test/";
const AUDIENCE: &str = "mobile-app";

/// Claims that pass every check, for subject `sub` with `scope`.
fn good_claims(sub: &str, scope: &str) -> Value {
    let mut c = claims(ISSUER, AUDIENCE);
    c["sub"] = json!(sub);
    c["scope"] = json!(scope);
    c
}

/// Replaces one of the three segments of a token.
fn with_segment(token: &str, index: usize, segment: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = segment;
    parts.join(".")
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// `[auth.mobile]`: RS256 with keys from `jwks_url`, this test's issuer and audience.
fn mobile_policy(jwks_url: &str) -> String {
    format!(
        r#"[auth.mobile]
type = "jwt"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256"]
jwks_url = "{jwks_url}""#
    )
}

/// A temporary directory holding `HS_SECRET` in `hs.secret` (ending with the newline editors
/// add, which is not part of the secret).
fn hs_secret_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs.secret");
    std::fs::write(&secret, format!("{HS_SECRET}\n")).unwrap();
    (dir, secret)
}

/// A gateway whose every path is guarded by an HS256 policy with `HS_SECRET` and the settings
/// in `policy_extra`.
async fn hs256_gateway(policy_extra: &str) -> (GatewayHandle, Backend, tempfile::TempDir) {
    let app = backend("app").start().await;
    let (dir, secret) = hs_secret_file();
    let body = format!(
        "[auth.internal]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n{policy_extra}\n{}",
        secret.display(),
        crate::support::gateway::catch_all(&app.target(), "auth = \"internal\"")
    );
    (GatewayHandle::start(&body).await, app, dir)
}

/// An HS256 token with `HS_SECRET`, naming `kid` in its header when given.
fn hs256_token(kid: Option<&str>) -> String {
    let header = Header {
        kid: kid.map(str::to_string),
        ..Header::new(Algorithm::HS256)
    };
    TestKey::hmac(HS_SECRET.as_bytes()).sign_header(&header, &good_claims("svc", ""))
}

/// An identity provider answering every request with a JWKS holding `key`.
fn jwks_backend(name: &str, key: &TestKey) -> crate::support::backend::BackendBuilder {
    backend(name)
        .body(jwks(&[key]).to_string())
        .header("content-type", "application/json")
}

struct Setup {
    gw: GatewayHandle,
    app: Backend,
    jwks_server: Backend,
    key: TestKey,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let key = TestKey::rsa("k1");
    let jwks_server = jwks_backend("jwks", &key).start().await;
    let app = backend("app").start().await;
    let (dir, secret) = hs_secret_file();
    let body = format!(
        r#"
{mobile}
leeway = "30s"
forward_claims = {{ sub = "x-user-id", scope = "x-user-scope" }}

[auth.internal]
type = "jwt"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["HS256"]
secret_file = "{secret}"

[upstreams.u]
targets = ["{app}"]

[routes.me]
path = "/me"
upstream = "u"
auth = "mobile"

[routes.orders]
path = "/orders"
upstream = "u"
auth = "mobile"
scopes = ["orders:read", "orders:list"]

[routes.internal]
path = "/internal"
upstream = "u"
auth = "internal"

[routes.public]
path = "/public"
upstream = "u"
"#,
        mobile = mobile_policy(&format!(
            "http://{}/.well-known/jwks.json",
            jwks_server.target()
        )),
        secret = secret.display(),
        app = app.target(),
    );
    // Room for the 100 KB token of the attack corpus to reach auth (the default head limit
    // would answer 431 first).
    let gw = GatewayHandle::start_with(&body, "max_header_bytes = \"256KiB\"").await;
    Setup {
        gw,
        app,
        jwks_server,
        key,
        _dir: dir,
    }
}

/// GET `path` with `token` as the bearer credential.
async fn call_bearer(gw: &GatewayHandle, path: &str, token: &str) -> Answer {
    call(gw, path, &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_passes_and_its_claims_are_forwarded() {
    let s = setup().await;
    let token = s.key.sign(&good_claims("user-42", "orders:read profile"));
    let bearer = format!("Bearer {token}");
    let a = call(
        &s.gw,
        "/me",
        &[("authorization", &bearer), ("x-user-id", "admin")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = s.app.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get_all("x-user-id").iter().count(), 1);
    assert_eq!(seen[0].header("x-user-id"), Some("user-42"));
    assert_eq!(seen[0].header("x-user-scope"), Some("orders:read profile"));
    assert_eq!(decisions(&s.gw, "mobile", "allowed").await, 1.0);

    // The token is reused, as mobile clients do: still accepted.
    assert_eq!(call_bearer(&s.gw, "/me", &token).await.status, 200);

    // A public route never sees client-sent identity headers.
    let a = call(
        &s.gw,
        "/public",
        &[("x-user-id", "admin"), ("x-user-scope", "root")],
    )
    .await;
    assert_eq!(a.status, 200);
    let last = s.app.received().pop().unwrap();
    assert_eq!(last.header("x-user-id"), None);
    assert_eq!(last.header("x-user-scope"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attack_corpus_is_refused_before_the_backend() {
    let s = setup().await;
    let key = &s.key;
    let good = key.sign(&good_claims("user-1", ""));
    let claims_with = |k: &str, v: serde_json::Value| {
        let mut c = good_claims("user-1", "");
        c[k] = v;
        c
    };
    let stranger = TestKey::rsa("ghost");
    let mut no_exp = good_claims("user-1", "");
    no_exp.as_object_mut().unwrap().remove("exp");
    let forged_payload = b64_json(&claims_with("sub", json!("admin")));
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("k1".into());
    let signature = good.split('.').nth(2).unwrap();
    let flipped = format!(
        "{}{}",
        &signature[..signature.len() - 4],
        if signature.ends_with("AAAA") {
            "BBBB"
        } else {
            "AAAA"
        }
    );
    let corpus: Vec<(&str, String)> = vec![
        (
            "alg none",
            raw_token(
                &json!({ "alg": "none", "typ": "JWT", "kid": "k1" }),
                &good_claims("user-1", ""),
                b"",
            ),
        ),
        (
            "RS256 key used as an HS256 secret",
            TestKey::hmac(&key.public_pem).sign_header(&confused, &good_claims("user-1", "")),
        ),
        (
            "expired",
            key.sign(&claims_with("exp", json!(now() - 3600))),
        ),
        (
            "not yet valid",
            key.sign(&claims_with("nbf", json!(now() + 3600))),
        ),
        (
            "exp as a string",
            key.sign(&claims_with("exp", json!((now() + 3600).to_string()))),
        ),
        ("no exp", key.sign(&no_exp)),
        (
            "wrong issuer",
            key.sign(&claims_with("iss", json!("https://evil.test/"))),
        ),
        (
            "wrong audience",
            key.sign(&claims_with("aud", json!(["other-app"]))),
        ),
        ("unknown kid", stranger.sign(&good_claims("user-1", ""))),
        ("tampered payload", with_segment(&good, 1, &forged_payload)),
        ("tampered signature", with_segment(&good, 2, &flipped)),
        ("truncated", good[..good.len() / 2].to_string()),
        ("two segments", good.rsplit_once('.').unwrap().0.to_string()),
        ("bad base64", with_segment(&good, 1, "!!!not-base64!!!")),
        ("100 KB", format!("{good}{}", "A".repeat(100 * 1024))),
    ];
    for (what, token) in &corpus {
        let a = call_bearer(&s.gw, "/me", token).await;
        assert_denied(&a, 401, INVALID);
        assert!(
            !a.body.contains("user-1"),
            "{what}: body echoes the token: {a:?}"
        );
    }
    // A token in the query string is not a credential (RFC 6750 discourages it; logs keep URLs).
    let a = call(&s.gw, &format!("/me?access_token={good}"), &[]).await;
    assert_denied(&a, 401, "Bearer");
    assert_eq!(s.app.count(), 0, "no refused request may reach the backend");
    // The unknown kid made the gateway look for new keys, but garbage kids cannot make it
    // hammer the identity provider: one fetch at load, at most one more for the unknown kid.
    assert!(
        s.jwks_server.count() <= 2,
        "JWKS fetched {} times",
        s.jwks_server.count()
    );
    assert_eq!(decisions(&s.gw, "mobile", "missing").await, 1.0);
    assert_eq!(decisions(&s.gw, "mobile", "allowed").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_are_all_required() {
    let s = setup().await;
    let scope = "Bearer error=\"insufficient_scope\", scope=\"orders:read orders:list\"";
    let partial = s.key.sign(&good_claims("u", "orders:read"));
    assert_denied(&call_bearer(&s.gw, "/orders", &partial).await, 403, scope);
    assert_eq!(s.app.count(), 0);
    let full = s
        .key
        .sign(&good_claims("u", "profile orders:list orders:read"));
    assert_eq!(call_bearer(&s.gw, "/orders", &full).await.status, 200);
    // `scp` as an array (Okta, Azure AD style) counts too.
    let mut claims = good_claims("u", "");
    claims.as_object_mut().unwrap().remove("scope");
    claims["scp"] = json!(["orders:list", "orders:read"]);
    assert_eq!(
        call_bearer(&s.gw, "/orders", &s.key.sign(&claims))
            .await
            .status,
        200
    );
    assert_eq!(decisions(&s.gw, "mobile", "insufficient_scope").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_policies_take_only_their_secret() {
    let s = setup().await;
    let hs = TestKey::hmac(HS_SECRET.as_bytes()).sign(&good_claims("svc", ""));
    assert_eq!(call_bearer(&s.gw, "/internal", &hs).await.status, 200);
    // An RS256 token is not accepted by the HMAC policy, nor an HS256 one by the RS256 policy.
    let rs = s.key.sign(&good_claims("svc", ""));
    assert_denied(&call_bearer(&s.gw, "/internal", &rs).await, 401, INVALID);
    assert_denied(&call_bearer(&s.gw, "/me", &hs).await, 401, INVALID);
    let forged =
        TestKey::hmac(b"another-secret-that-is-long-enough-32").sign(&good_claims("svc", ""));
    assert_denied(
        &call_bearer(&s.gw, "/internal", &forged).await,
        401,
        INVALID,
    );
    assert_eq!(s.app.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_goes_upstream_unless_forward_credentials_is_false() {
    let token = hs256_token(None);
    let (gw, app, _dir) = hs256_gateway("").await;
    assert_eq!(call_bearer(&gw, "/me", &token).await.status, 200);
    let seen = app.received();
    assert_eq!(seen.len(), 1);
    let expected = format!("Bearer {token}");
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));

    let (gw, app, _dir) = hs256_gateway("forward_credentials = false").await;
    assert_eq!(call_bearer(&gw, "/me", &token).await.status, 200);
    let seen = app.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        None,
        "{:?}",
        seen[0].headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_policy_ignores_the_token_kid() {
    let (gw, app, _dir) = hs256_gateway("").await;
    let a = call_bearer(&gw, "/me", &hs256_token(Some("anything"))).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(app.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_policy_with_a_kid_refuses_other_kids() {
    let (gw, app, _dir) = hs256_gateway("kid = \"k1\"").await;
    let a = call_bearer(&gw, "/me", &hs256_token(Some("k2"))).await;
    assert_denied(&a, 401, INVALID);
    assert_eq!(app.count(), 0, "a refused token must not reach the backend");
    assert_eq!(decisions(&gw, "internal", "unknown_key").await, 1.0);
    for kid in [Some("k1"), None] {
        let a = call_bearer(&gw, "/me", &hs256_token(kid)).await;
        assert_eq!(a.status, 200, "kid {kid:?}: {a:?}");
    }
    assert_eq!(app.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_keys_are_picked_up_and_survive_a_provider_outage() {
    use crate::support::jwks_server::JwksServer;
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::rsa("k2");
    let provider = JwksServer::start(&jwks(&[&k1])).await;
    let app = backend("app").start().await;
    let body = format!(
        r#"
{mobile}

[upstreams.u]
targets = ["{app}"]

[routes.me]
path = "/me"
upstream = "u"
auth = "mobile"
"#,
        mobile = mobile_policy(&provider.url()),
        app = app.target(),
    );
    let gw = GatewayHandle::start(&body).await;
    assert_eq!(provider.hits(), 1, "keys are fetched once, at start-up");
    let t1 = k1.sign(&good_claims("u1", ""));
    assert_eq!(call_bearer(&gw, "/me", &t1).await.status, 200);

    // The provider publishes a second key: a token naming it is accepted without a restart,
    // and tokens of the first key still are.
    provider.serve_jwks(&jwks(&[&k1, &k2]));
    let t2 = k2.sign(&good_claims("u2", ""));
    assert_eq!(call_bearer(&gw, "/me", &t2).await.status, 200);
    assert_eq!(call_bearer(&gw, "/me", &t1).await.status, 200);
    assert_eq!(provider.hits(), 2, "one refetch for the new kid");

    // The provider goes down: the keys already known keep working, fresh tokens included.
    provider.stop();
    let fresh = k2.sign(&good_claims("u3", ""));
    assert_eq!(call_bearer(&gw, "/me", &fresh).await.status, 200);
    assert_eq!(call_bearer(&gw, "/me", &t1).await.status, 200);
    assert_eq!(app.count(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_can_hash_on_a_verified_claim() {
    let targets = [
        backend("a").start().await,
        backend("b").start().await,
        backend("c").start().await,
    ];
    let (_dir, secret) = hs_secret_file();
    let list: Vec<String> = targets
        .iter()
        .map(|t| format!("\"{}\"", t.target()))
        .collect();
    let body = format!(
        r#"
[auth.mobile]
type = "jwt"
algorithms = ["HS256"]
secret_file = "{secret}"

[upstreams.u]
targets = [{list}]
balance = "hash"
hash_key = "claim:sub"

[routes.me]
path = "/me"
upstream = "u"
auth = "mobile"
"#,
        secret = secret.display(),
        list = list.join(", "),
    );
    let gw = GatewayHandle::start(&body).await;
    let signer = TestKey::hmac(HS_SECRET.as_bytes());
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let token = signer.sign(&good_claims(&format!("user-{user}"), ""));
        let mut picked = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let a = call_bearer(&gw, "/me", &token).await;
            assert_eq!(a.status, 200, "{a:?}");
            picked.insert(a.backend().expect("backend name"));
        }
        assert_eq!(
            picked.len(),
            1,
            "user-{user} moved between targets: {picked:?}"
        );
        seen.extend(picked);
    }
    assert!(seen.len() >= 2, "12 users all hashed to {seen:?}");
}

/// An identity provider serving its JWKS over HTTPS with a certificate from an internal CA:
/// trusted through `jwks_ca_file`, and refused (no keys, so 401) when another CA is configured.
#[tokio::test(flavor = "multi_thread")]
async fn jwks_over_https_is_verified_against_jwks_ca_file() {
    use crate::support::tls::TestCa;
    let ca = TestCa::new("Identity CA");
    let stranger = TestCa::new("Some other CA");
    let key = TestKey::rsa("k1");
    let provider = jwks_backend("idp", &key)
        .tls(ca.leaf(&["localhost"], 1).acceptor())
        .start()
        .await;
    let app = backend("app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("identity-ca.pem");
    std::fs::write(&trusted, ca.pem()).unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, stranger.pem()).unwrap();
    let url = format!("https://localhost:{}/jwks.json", provider.addr.port());
    let config = |ca_file: &std::path::Path| {
        format!(
            "{}\njwks_ca_file = \"{}\"\n\n{}",
            mobile_policy(&url),
            ca_file.display(),
            crate::support::gateway::catch_all(&app.target(), "auth = \"mobile\"")
        )
    };
    let token = key.sign(&good_claims("u1", ""));

    let gw = GatewayHandle::start(&config(&trusted)).await;
    assert_eq!(call_bearer(&gw, "/me", &token).await.status, 200);
    drop(gw);

    // The provider's certificate does not chain to the configured CA: no keys are loaded, the
    // failure is counted, and tokens are refused rather than accepted unverified.
    let fetches_before = provider.count();
    let gw = GatewayHandle::start(&config(&other)).await;
    assert_denied(&call_bearer(&gw, "/me", &token).await, 401, INVALID);
    assert_eq!(
        provider.count(),
        fetches_before,
        "no request completes over an untrusted TLS"
    );
    let failures = gw
        .metric("tollgate_jwks_refresh_total{policy=\"mobile\",result=\"failure\"}")
        .await
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "failed fetches must be counted");
    assert_eq!(app.count(), 1);
}
