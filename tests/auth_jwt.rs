//! JWT policies end to end: tokens signed with keys generated here, keys served as JWKS by a real
//! HTTP server, the attack corpus (each refused with an opaque 401 before anything reaches the
//! backend), scopes (403), claim forwarding and spoofed identity headers.

mod support;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use support::auth::{assert_denied, decisions};
use support::jwt::*;
use support::resilience::{send, Answer};
use support::{backend, client, Backend, GatewayHandle};

const INVALID: &str = "Bearer error=\"invalid_token\"";
const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

struct Setup {
    gw: GatewayHandle,
    app: Backend,
    jwks_server: Backend,
    key: RsaKey,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let key = rsa_key("k1");
    let jwks_server = backend("jwks")
        .body(jwks(&[&key]))
        .header("content-type", "application/json")
        .start()
        .await;
    let app = backend("app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs.secret");
    std::fs::write(&secret, format!("{HS_SECRET}\n")).unwrap();
    let body = format!(
        r#"
[auth.mobile]
type = "jwt"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256"]
jwks_url = "http://{jwks}/.well-known/jwks.json"
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
        jwks = jwks_server.target(),
        secret = secret.display(),
        app = app.target(),
    );
    let gw = GatewayHandle::start(&body).await;
    Setup {
        gw,
        app,
        jwks_server,
        key,
        _dir: dir,
    }
}

async fn call(gw: &GatewayHandle, path: &str, headers: &[(&str, String)]) -> Answer {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    send(req).await.expect("answer")
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_passes_and_its_claims_are_forwarded() {
    let s = setup().await;
    let token = rs256(&s.key, &good_claims("user-42", "orders:read profile"));
    let mut headers = bearer(&token);
    headers.push(("x-user-id", "admin".into()));
    let a = call(&s.gw, "/me", &headers).await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = s.app.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get_all("x-user-id").iter().count(), 1);
    assert_eq!(seen[0].header("x-user-id"), Some("user-42"));
    assert_eq!(seen[0].header("x-user-scope"), Some("orders:read profile"));
    assert_eq!(decisions(&s.gw, "mobile", "allowed").await, 1.0);

    // The token is reused, as mobile clients do: still accepted.
    assert_eq!(call(&s.gw, "/me", &bearer(&token)).await.status, 200);

    // A public route never sees client-sent identity headers.
    let a = call(
        &s.gw,
        "/public",
        &[
            ("x-user-id", "admin".into()),
            ("x-user-scope", "root".into()),
        ],
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
    let good = rs256(key, &good_claims("user-1", ""));
    let claims_with = |k: &str, v: serde_json::Value| {
        let mut c = good_claims("user-1", "");
        c[k] = v;
        c
    };
    let stranger = rsa_key("ghost");
    let mut no_exp = good_claims("user-1", "");
    no_exp.as_object_mut().unwrap().remove("exp");
    let none_header = b64(&json!({ "alg": "none", "typ": "JWT", "kid": "k1" }));
    let payload = good.split('.').nth(1).unwrap().to_string();
    let forged_payload = b64(&claims_with("sub", json!("admin")));
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
        ("alg none", format!("{none_header}.{payload}.")),
        (
            "RS256 key used as an HS256 secret",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&key.public_pem),
                Some("k1"),
                &good_claims("user-1", ""),
            ),
        ),
        (
            "expired",
            rs256(key, &claims_with("exp", json!(now() - 3600))),
        ),
        (
            "not yet valid",
            rs256(key, &claims_with("nbf", json!(now() + 3600))),
        ),
        (
            "exp as a string",
            rs256(key, &claims_with("exp", json!((now() + 3600).to_string()))),
        ),
        ("no exp", rs256(key, &no_exp)),
        (
            "wrong issuer",
            rs256(key, &claims_with("iss", json!("https://evil.test/"))),
        ),
        (
            "wrong audience",
            rs256(key, &claims_with("aud", json!(["other-app"]))),
        ),
        ("unknown kid", rs256(&stranger, &good_claims("user-1", ""))),
        ("tampered payload", with_segment(&good, 1, &forged_payload)),
        ("tampered signature", with_segment(&good, 2, &flipped)),
        ("truncated", good[..good.len() / 2].to_string()),
        (
            "two segments",
            good.rsplitn(2, '.').nth(1).unwrap().to_string(),
        ),
        ("bad base64", with_segment(&good, 1, "!!!not-base64!!!")),
        ("100 KB", format!("{good}{}", "A".repeat(100 * 1024))),
    ];
    for (what, token) in &corpus {
        let a = call(&s.gw, "/me", &bearer(token)).await;
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
    let partial = rs256(&s.key, &good_claims("u", "orders:read"));
    assert_denied(&call(&s.gw, "/orders", &bearer(&partial)).await, 403, scope);
    assert_eq!(s.app.count(), 0);
    let full = rs256(&s.key, &good_claims("u", "profile orders:list orders:read"));
    assert_eq!(call(&s.gw, "/orders", &bearer(&full)).await.status, 200);
    // `scp` as an array (Okta, Azure AD style) counts too.
    let mut claims = good_claims("u", "");
    claims.as_object_mut().unwrap().remove("scope");
    claims["scp"] = json!(["orders:list", "orders:read"]);
    assert_eq!(
        call(&s.gw, "/orders", &bearer(&rs256(&s.key, &claims)))
            .await
            .status,
        200
    );
    assert_eq!(decisions(&s.gw, "mobile", "insufficient_scope").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_policies_take_only_their_secret() {
    let s = setup().await;
    let secret = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let hs = sign(Algorithm::HS256, &secret, None, &good_claims("svc", ""));
    assert_eq!(call(&s.gw, "/internal", &bearer(&hs)).await.status, 200);
    // An RS256 token is not accepted by the HMAC policy, nor an HS256 one by the RS256 policy.
    let rs = rs256(&s.key, &good_claims("svc", ""));
    assert_denied(&call(&s.gw, "/internal", &bearer(&rs)).await, 401, INVALID);
    assert_denied(&call(&s.gw, "/me", &bearer(&hs)).await, 401, INVALID);
    let wrong = EncodingKey::from_secret(b"another-secret-that-is-long-enough-32");
    let forged = sign(Algorithm::HS256, &wrong, None, &good_claims("svc", ""));
    assert_denied(
        &call(&s.gw, "/internal", &bearer(&forged)).await,
        401,
        INVALID,
    );
    assert_eq!(s.app.count(), 1);
}
