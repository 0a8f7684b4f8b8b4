//! The JWT verifier against real keys (made at test time for every algorithm family), real JWKS
//! files and a real HTTP identity provider on 127.0.0.1: accepted algorithms, the attack corpus,
//! key rotation, provider outages, the unknown-kid refetch limit and the verified-token cache.

use crate::support::jwks_server::JwksServer;
use crate::support::jwt::{claims, jwks, now, raw_token, TestKey};
use crate::support::logs::LogCapture;
use crate::support::prom;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::auth::jwt::{
    JwksService, JwtSettings, JwtVerifier, KeyRegistry, KeySource, Rejection,
};
use tollgate::observe::Metrics;

const ISS: &str = "https://id.example.com/";
const AUD: &str = "mobile-app";

fn registry() -> (Arc<Metrics>, Arc<KeyRegistry>) {
    let metrics = Arc::new(Metrics::new());
    (metrics.clone(), Arc::new(KeyRegistry::new(metrics)))
}

fn settings(keys: KeySource, algorithms: &[Algorithm]) -> JwtSettings {
    JwtSettings {
        issuer: Some(ISS.into()),
        audiences: vec![AUD.into(), "web".into()],
        leeway: Duration::from_secs(30),
        ..JwtSettings::new("mobile", keys, algorithms.to_vec())
    }
}

/// A JWKS file holding these keys (the directory lives as long as the returned guard).
fn jwks_file(keys: &[&TestKey]) -> (tempfile::TempDir, KeySource) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys).to_string()).unwrap();
    (dir, KeySource::JwksFile(path))
}

fn refreshes(metrics: &Metrics, result: &str) -> f64 {
    prom::registry_value(
        metrics,
        "tollgate_jwks_refresh_total",
        &[("policy", "mobile"), ("result", result)],
    )
}

#[tokio::test]
async fn every_supported_algorithm_verifies_with_its_key_type() {
    let (_, reg) = registry();
    let rsa = TestKey::rsa("rsa");
    let p256 = TestKey::ec_p256("p256");
    let p384 = TestKey::ec_p384("p384");
    let ed = TestKey::ed25519("ed");
    let (_dir, source) = jwks_file(&[&rsa, &p256, &p384, &ed]);
    let cases = [
        (&rsa, Algorithm::RS256),
        (&rsa, Algorithm::RS384),
        (&rsa, Algorithm::RS512),
        (&rsa, Algorithm::PS256),
        (&rsa, Algorithm::PS384),
        (&rsa, Algorithm::PS512),
        (&p256, Algorithm::ES256),
        (&p384, Algorithm::ES384),
        (&ed, Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        let verifier = JwtVerifier::new(settings(source.clone(), &[alg]), &reg).unwrap();
        let token = key.sign_with(alg, &claims(ISS, AUD));
        let got = verifier.verify(&token).await;
        assert_eq!(
            got.map(|c| c.subject().map(String::from)),
            Ok(Some("user-1".into())),
            "{alg:?}"
        );
        // The same token is refused by a policy that does not list its algorithm.
        let other = if alg == Algorithm::ES256 {
            Algorithm::EdDSA
        } else {
            Algorithm::ES256
        };
        let strict = JwtVerifier::new(settings(source.clone(), &[other]), &reg).unwrap();
        assert_eq!(
            strict.verify(&token).await.err(),
            Some(Rejection::AlgorithmNotAllowed),
            "{alg:?}"
        );
    }
    let secret = b"0123456789abcdef0123456789abcdef-tollgate".to_vec();
    let hmac = TestKey::hmac(&secret);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let verifier =
            JwtVerifier::new(settings(KeySource::Secret(secret.clone()), &[alg]), &reg).unwrap();
        assert!(verifier.key_store().is_none());
        let token = hmac.sign_with(alg, &claims(ISS, AUD));
        assert!(verifier.verify(&token).await.is_ok(), "{alg:?}");
        let wrong = TestKey::hmac(b"another secret of at least 32 bytes!!")
            .sign_with(alg, &claims(ISS, AUD));
        assert_eq!(
            verifier.verify(&wrong).await.err(),
            Some(Rejection::BadSignature),
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn attack_corpus_is_refused_with_the_right_reason() {
    let attacker_jwks = TestKey::rsa("evil");
    let attacker = JwksServer::start(&jwks(&[&attacker_jwks])).await;
    let (_, reg) = registry();
    let rsa = TestKey::rsa("rsa");
    let p256 = TestKey::ec_p256("p256");
    let (_dir, source) = jwks_file(&[&rsa, &p256]);
    let verifier = JwtVerifier::new(
        settings(source, &[Algorithm::RS256, Algorithm::ES256]),
        &reg,
    )
    .unwrap();
    let good = rsa.sign(&claims(ISS, AUD));
    assert!(verifier.verify(&good).await.is_ok());

    let with = |patch: Value| {
        let mut c = claims(ISS, AUD);
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        rsa.sign(&c)
    };
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let other_payload = with(json!({"sub": "admin"}));
    let other_payload = other_payload.split('.').nth(1).unwrap();
    let mut flipped = sig.to_string().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let short_sig = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let bytes = b64.decode(sig).unwrap();
        b64.encode(&bytes[..bytes.len() - 3])
    };

    // RS256 re-signed as HS256 with the public key as the HMAC secret.
    let confused = TestKey::hmac(&rsa.public_pem).sign_header(
        &Header {
            kid: Some("rsa".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(ISS, AUD),
    );
    // Headers that point at the attacker's keys, signed by the attacker.
    let pointing = |field: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("evil".into());
        match field {
            "jku" => header.jku = Some(attacker.url()),
            "x5u" => header.x5u = Some(attacker.url()),
            _ => header.jwk = Some(serde_json::from_value(attacker_jwks.jwk()).unwrap()),
        }
        attacker_jwks.sign_header(&header, &claims(ISS, AUD))
    };
    // An embedded jwk with a legitimate kid: the signature is checked with the configured key.
    let embedded = attacker_jwks.sign_header(
        &Header {
            kid: Some("rsa".into()),
            jwk: Some(serde_json::from_value(attacker_jwks.jwk()).unwrap()),
            ..Header::new(Algorithm::RS256)
        },
        &claims(ISS, AUD),
    );
    let payload_of = |c: Value| raw_token(&json!({"alg": "RS256", "kid": "rsa"}), &c, b"sig");

    use Rejection::*;
    let cases: Vec<(&str, String, Rejection)> = vec![
        (
            "alg none",
            raw_token(&json!({"alg": "none"}), &claims(ISS, AUD), b""),
            AlgorithmNotAllowed,
        ),
        (
            "alg none, trailing dot",
            format!(
                "{}.",
                raw_token(&json!({"alg": "none"}), &claims(ISS, AUD), b"").trim_end_matches('.')
            ),
            AlgorithmNotAllowed,
        ),
        (
            "alg None",
            raw_token(
                &json!({"alg": "None", "kid": "rsa"}),
                &claims(ISS, AUD),
                b"",
            ),
            AlgorithmNotAllowed,
        ),
        (
            "alg HS256 with the public key",
            confused,
            AlgorithmNotAllowed,
        ),
        (
            "alg PS256 not in the policy",
            rsa.sign_with(Algorithm::PS256, &claims(ISS, AUD)),
            AlgorithmNotAllowed,
        ),
        (
            "ES256 alg with an RSA kid",
            p256.sign_header(
                &Header {
                    kid: Some("rsa".into()),
                    ..Header::new(Algorithm::ES256)
                },
                &claims(ISS, AUD),
            ),
            UnknownKey,
        ),
        (
            "expired beyond leeway",
            with(json!({"exp": now() - 60})),
            Expired,
        ),
        (
            "nbf in the future",
            with(json!({"nbf": now() + 600})),
            NotYetValid,
        ),
        (
            "exp as string",
            with(json!({"exp": (now() + 600).to_string()})),
            Malformed,
        ),
        ("nbf as string", with(json!({"nbf": "0"})), Malformed),
        ("missing exp", with(json!({"exp": null})), Malformed),
        (
            "wrong issuer",
            with(json!({"iss": "https://evil.example.com/"})),
            BadIssuer,
        ),
        ("issuer as array", with(json!({"iss": [ISS]})), BadIssuer),
        ("missing issuer", with(json!({"iss": null})), BadIssuer),
        (
            "wrong audience",
            with(json!({"aud": "other-app"})),
            BadAudience,
        ),
        (
            "audience array without ours",
            with(json!({"aud": ["a", "b"]})),
            BadAudience,
        ),
        ("audience as number", with(json!({"aud": 7})), BadAudience),
        ("missing audience", with(json!({"aud": null})), BadAudience),
        (
            "unknown kid",
            TestKey::rsa("nope").sign(&claims(ISS, AUD)),
            UnknownKey,
        ),
        (
            "known kid, other key",
            TestKey::rsa("rsa").sign(&claims(ISS, AUD)),
            BadSignature,
        ),
        (
            "tampered payload",
            format!("{head}.{other_payload}.{sig}"),
            BadSignature,
        ),
        (
            "tampered signature",
            format!("{head}.{payload}.{flipped}"),
            BadSignature,
        ),
        (
            "signature cut by one char",
            good[..good.len() - 1].to_string(),
            Malformed,
        ),
        (
            "signature cut by bytes",
            format!("{head}.{payload}.{short_sig}"),
            BadSignature,
        ),
        ("no signature", format!("{head}.{payload}."), BadSignature),
        (
            "signature not base64",
            format!("{head}.{payload}.a*b"),
            Malformed,
        ),
        ("two segments", format!("{head}.{payload}"), Malformed),
        ("four segments", format!("{good}.{sig}"), Malformed),
        ("one segment", head.to_string(), Malformed),
        ("empty", String::new(), Malformed),
        (
            "header not base64",
            format!("!!.{payload}.{sig}"),
            Malformed,
        ),
        (
            "header not JSON",
            format!("bm90IGpzb24.{payload}.{sig}"),
            Malformed,
        ),
        (
            "header without alg",
            raw_token(&json!({"kid": "rsa"}), &claims(ISS, AUD), b"x"),
            Malformed,
        ),
        (
            "header alg as number",
            raw_token(&json!({"alg": 256}), &claims(ISS, AUD), b"x"),
            Malformed,
        ),
        (
            "critical extension",
            raw_token(
                &json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"]}),
                &claims(ISS, AUD),
                b"x",
            ),
            Malformed,
        ),
        (
            "payload not JSON, unsigned",
            payload_of(json!("x")),
            BadSignature,
        ),
        (
            "payload an array, signed",
            rsa.sign(&json!([1, 2])),
            Malformed,
        ),
        (
            "100 KB token",
            format!("{head}.{}.{sig}", "A".repeat(100 * 1024)),
            Malformed,
        ),
        ("8 KiB + 1", "a".repeat(8 * 1024 + 1), Malformed),
        ("jku to the attacker", pointing("jku"), UnknownKey),
        ("x5u to the attacker", pointing("x5u"), UnknownKey),
        ("jwk of the attacker", pointing("jwk"), UnknownKey),
        ("embedded jwk, our kid", embedded, BadSignature),
    ];
    for (name, token, expected) in cases {
        assert_eq!(
            verifier.verify(&token).await.err(),
            Some(expected),
            "{name}"
        );
    }
    assert_eq!(attacker.hits(), 0, "header URLs are never fetched");
    // Within the leeway an expired token still passes, and an aud array with ours passes.
    assert!(verifier
        .verify(&with(json!({"exp": now() - 5})))
        .await
        .is_ok());
    assert!(verifier
        .verify(&with(json!({"aud": ["x", "web"]})))
        .await
        .is_ok());
    assert!(verifier
        .verify(&with(json!({"exp": now() as f64 + 600.5})))
        .await
        .is_ok());
    // Not a panic for hostile sizes and bytes: a sweep of every truncation of a good token.
    for cut in 0..good.len() {
        let _ = verifier.verify(&good[..cut]).await;
    }
}

#[tokio::test]
async fn a_secret_ignores_the_token_kid_unless_the_policy_names_one() {
    let (_, reg) = registry();
    let secret = b"0123456789abcdef0123456789abcdef-tollgate".to_vec();
    let signed = |key: &[u8], kid: Option<&str>| {
        let header = Header {
            kid: kid.map(str::to_string),
            ..Header::new(Algorithm::HS256)
        };
        TestKey::hmac(key).sign_header(&header, &claims(ISS, AUD))
    };
    let source = || KeySource::Secret(secret.clone());
    let any_kid = JwtVerifier::new(settings(source(), &[Algorithm::HS256]), &reg).unwrap();
    for kid in [Some("anything"), Some("k2"), None] {
        assert!(
            any_kid.verify(&signed(&secret, kid)).await.is_ok(),
            "{kid:?}"
        );
    }
    let pinned = JwtSettings {
        kid: Some("k1".into()),
        ..settings(source(), &[Algorithm::HS256])
    };
    let pinned = JwtVerifier::new(pinned, &reg).unwrap();
    assert!(pinned.verify(&signed(&secret, Some("k1"))).await.is_ok());
    assert!(pinned.verify(&signed(&secret, None)).await.is_ok());
    assert_eq!(
        pinned.verify(&signed(&secret, Some("k2"))).await.err(),
        Some(Rejection::UnknownKey)
    );
    // The right kid proves nothing by itself: the signature is still checked.
    let forged = signed(b"another secret of at least 32 bytes!!", Some("k1"));
    assert_eq!(
        pinned.verify(&forged).await.err(),
        Some(Rejection::BadSignature)
    );
}

#[tokio::test]
async fn the_algorithms_of_a_jwk_are_limited_by_its_alg() {
    let (_, reg) = registry();
    let rsa = TestKey::rsa("rsa");
    let mut jwk = rsa.jwk();
    jwk["alg"] = "PS256".into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [jwk]}).to_string()).unwrap();
    let v = JwtVerifier::new(
        settings(
            KeySource::JwksFile(path),
            &[Algorithm::RS256, Algorithm::PS256],
        ),
        &reg,
    )
    .unwrap();
    assert!(v
        .verify(&rsa.sign_with(Algorithm::PS256, &claims(ISS, AUD)))
        .await
        .is_ok());
    assert_eq!(
        v.verify(&rsa.sign_with(Algorithm::RS256, &claims(ISS, AUD)))
            .await
            .err(),
        Some(Rejection::UnknownKey)
    );
}

#[tokio::test]
async fn construction_refuses_unusable_jwks_files() {
    let (_, reg) = registry();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "<html>").unwrap();
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": []}"#).unwrap();
    for (path, expected) in [
        (missing, "jwks_file: cannot read"),
        (garbage, "not a JWKS document"),
        (empty, "no usable signing key"),
    ] {
        let err = JwtVerifier::new(
            settings(KeySource::JwksFile(path), &[Algorithm::RS256]),
            &reg,
        )
        .err()
        .unwrap();
        assert!(err.contains(expected), "{err}");
    }
    assert!(reg.live().is_empty(), "no store outlives a refused policy");
}

#[tokio::test]
async fn rotation_new_kid_by_refetch_old_kid_until_it_leaves() {
    let k1 = TestKey::ec_p256("k1");
    let k2 = TestKey::ec_p256("k2");
    let idp = JwksServer::start(&jwks(&[&k1])).await;
    let (metrics, reg) = registry();
    let v = JwtVerifier::new(
        settings(KeySource::JwksUrl(idp.url()), &[Algorithm::ES256]),
        &reg,
    )
    .unwrap();
    let store = v.key_store().unwrap();
    store.ensure_loaded(Duration::from_secs(5)).await.unwrap();
    assert_eq!(idp.hits(), 1);
    assert_eq!(
        prom::registry_value(&metrics, "tollgate_jwks_keys", &[("policy", "mobile")]),
        1.0
    );
    assert!(
        prom::registry_value(
            &metrics,
            "tollgate_jwks_last_success_timestamp_seconds",
            &[("policy", "mobile")]
        ) > 1.0e9
    );

    let old = k1.sign(&claims(ISS, AUD));
    assert!(v.verify(&old).await.is_ok());
    // The provider adds k2; a token naming it is accepted at once through a refetch.
    idp.serve_jwks(&jwks(&[&k1, &k2]));
    let new = k2.sign(&claims(ISS, AUD));
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(idp.hits(), 2);
    assert!(v.verify(&old).await.is_ok(), "k1 is still published");
    // k1 leaves the set: the next refresh drops it, and its token is refused even though
    // it sits in the cache.
    idp.serve_jwks(&jwks(&[&k2]));
    store.refresh().await;
    let hits_before = v.stats().cache_hits;
    assert_eq!(v.verify(&old).await.err(), Some(Rejection::UnknownKey));
    assert_eq!(
        v.stats().cache_hits,
        hits_before,
        "not served from the cache"
    );
    assert_eq!(
        v.verify(&k1.sign(&claims(ISS, "web"))).await.err(),
        Some(Rejection::UnknownKey)
    );
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(
        prom::registry_value(&metrics, "tollgate_jwks_keys", &[("policy", "mobile")]),
        1.0
    );
}

#[tokio::test]
async fn provider_failures_keep_the_last_good_keys_and_are_logged_once() {
    let logs = LogCapture::install();
    let k1 = TestKey::rsa("k1");
    let idp = JwksServer::start(&jwks(&[&k1])).await;
    let (metrics, reg) = registry();
    let v = JwtVerifier::new(
        settings(KeySource::JwksUrl(idp.url()), &[Algorithm::RS256]),
        &reg,
    )
    .unwrap();
    let store = v.key_store().unwrap();
    store.ensure_loaded(Duration::from_secs(5)).await.unwrap();
    let token = k1.sign(&claims(ISS, AUD));
    let big = format!(
        r#"{{"keys": [], "pad": "{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    // A body over 1 MiB: announced by content-length, or only seen while streaming.
    let mut chunked_big = jwks(&[&k1]);
    chunked_big["pad"] = "x".repeat(2 * 1024 * 1024).into();
    let failures: [(u16, String, bool); 6] = [
        (500, "oops".into(), false),
        (200, "<html>not json</html>".into(), false),
        (200, r#"{"keys": []}"#.into(), false),
        (
            200,
            r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#.into(),
            false,
        ),
        (200, big, false),
        (200, chunked_big.to_string(), true),
    ];
    for (i, (status, body, chunked)) in failures.into_iter().enumerate() {
        if chunked {
            idp.answer_chunked(status, body);
        } else {
            idp.answer(status, body);
        }
        store.refresh().await;
        assert_eq!(refreshes(&metrics, "failure"), (i + 1) as f64);
        // A cached token and a fresh one (new verifier, empty cache) still verify with the
        // last good keys.
        let fresh_v = JwtVerifier::new(
            settings(KeySource::JwksUrl(idp.url()), &[Algorithm::RS256]),
            &reg,
        )
        .unwrap();
        assert!(
            Arc::ptr_eq(&fresh_v.key_store().unwrap(), &store),
            "same settings, same store"
        );
        assert!(v.verify(&token).await.is_ok());
        assert!(
            fresh_v.verify(&k1.sign(&claims(ISS, AUD))).await.is_ok(),
            "failure {i}"
        );
    }
    // A provider that is gone altogether.
    idp.stop();
    store.refresh().await;
    assert_eq!(refreshes(&metrics, "failure"), 7.0);
    assert_eq!(refreshes(&metrics, "success"), 1.0);
    assert_eq!(
        prom::registry_value(&metrics, "tollgate_jwks_keys", &[("policy", "mobile")]),
        1.0
    );
    assert!(v.verify(&k1.sign(&claims(ISS, "web"))).await.is_ok());
    assert_eq!(
        logs.count("cannot load JWT keys"),
        1,
        "one line per outage:\n{}",
        logs.text()
    );

    // Back on the same port: recovery is logged once.
    let idp2 = JwksServer::start_on(idp.addr, &jwks(&[&k1])).await;
    store.refresh().await;
    store.refresh().await;
    assert_eq!(refreshes(&metrics, "success"), 3.0);
    assert_eq!(logs.count("loaded again"), 1, "{}", logs.text());
    assert!(idp2.hits() >= 2);
}

/// A verifier for `alg` with keys from `idp`, its first key set already loaded.
async fn loaded_verifier(reg: &KeyRegistry, idp: &JwksServer, alg: Algorithm) -> JwtVerifier {
    let v = JwtVerifier::new(settings(KeySource::JwksUrl(idp.url()), &[alg]), reg).unwrap();
    v.key_store()
        .unwrap()
        .ensure_loaded(Duration::from_secs(5))
        .await
        .unwrap();
    v
}

#[tokio::test]
async fn a_slow_provider_holds_a_request_about_one_second_at_most() {
    let k1 = TestKey::ed25519("k1");
    let idp = JwksServer::start(&jwks(&[&k1])).await;
    let (metrics, reg) = registry();
    let v = loaded_verifier(&reg, &idp, Algorithm::EdDSA).await;
    idp.delay(Duration::from_secs(8));
    let started = Instant::now();
    let got = v
        .verify(&TestKey::ed25519("k2").sign(&claims(ISS, AUD)))
        .await;
    assert_eq!(got.err(), Some(Rejection::UnknownKey));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The refetch goes on in the background and gives up at the fetch deadline (5 s).
    assert!(
        crate::support::eventually(Duration::from_secs(8), || async {
            refreshes(&metrics, "failure") == 1.0
        })
        .await
    );
    assert!(v.verify(&k1.sign(&claims(ISS, AUD))).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited_and_shared() {
    let k1 = TestKey::ec_p384("k1");
    let idp = JwksServer::start(&jwks(&[&k1])).await;
    idp.delay(Duration::from_millis(200));
    let (_, reg) = registry();
    let v = loaded_verifier(&reg, &idp, Algorithm::ES384).await;
    assert_eq!(idp.hits(), 1);
    // 50 concurrent tokens with made-up kids share one refetch...
    let tokens: Vec<String> = (0..50)
        .map(|i| {
            k1.sign_header(
                &Header {
                    kid: Some(format!("garbage-{i}")),
                    ..Header::new(Algorithm::ES384)
                },
                &claims(ISS, AUD),
            )
        })
        .collect();
    let results = futures::future::join_all(tokens.iter().map(|t| v.verify(t))).await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().err() == Some(&Rejection::UnknownKey)));
    assert_eq!(idp.hits(), 2, "one shared refetch");
    // ...and later ones within the interval cause none.
    for t in &tokens {
        assert_eq!(v.verify(t).await.err(), Some(Rejection::UnknownKey));
    }
    assert_eq!(idp.hits(), 2, "rate limited");
    assert!(v.verify(&k1.sign(&claims(ISS, AUD))).await.is_ok());
}

#[tokio::test]
async fn cache_hits_skip_the_signature_check_and_expire_with_the_token() {
    let (_, reg) = registry();
    let rsa = TestKey::rsa("rsa");
    let (_dir, source) = jwks_file(&[&rsa]);
    let mut s = settings(source.clone(), &[Algorithm::RS256]);
    s.leeway = Duration::ZERO;
    let v = JwtVerifier::new(s.clone(), &reg).unwrap();
    let token = rsa.sign(&claims(ISS, AUD));
    let first = v.verify(&token).await.unwrap();
    assert_eq!(v.stats().signature_checks, 1);
    let second = v.verify(&token).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second), "the cached claims");
    assert_eq!(v.stats().signature_checks, 1);
    assert_eq!(v.stats().cache_hits, 1);

    // A token that expires in two seconds is served from the cache until then, never after.
    let mut short = claims(ISS, AUD);
    short["exp"] = json!(now() + 2);
    let short = rsa.sign(&short);
    assert!(v.verify(&short).await.is_ok());
    assert!(v.verify(&short).await.is_ok());
    assert_eq!(v.stats().cache_hits, 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(v.verify(&short).await.err(), Some(Rejection::Expired));

    // Failures are not cached: each costs a check again.
    let bad = TestKey::rsa("rsa").sign(&claims(ISS, AUD));
    let checks = v.stats().signature_checks;
    for _ in 0..3 {
        assert_eq!(v.verify(&bad).await.err(), Some(Rejection::BadSignature));
    }
    assert_eq!(v.stats().signature_checks, checks + 3);

    // cache_entries = 0 turns the cache off.
    s.cache_entries = 0;
    let uncached = JwtVerifier::new(s, &reg).unwrap();
    for _ in 0..3 {
        assert!(uncached.verify(&token).await.is_ok());
    }
    assert_eq!(
        uncached.stats(),
        tollgate::auth::jwt::VerifierStats {
            signature_checks: 3,
            cache_hits: 0
        }
    );
}

#[tokio::test]
async fn stores_are_shared_while_settings_are_unchanged_and_die_with_their_last_user() {
    let (_, reg) = registry();
    let url = |p: &str| KeySource::JwksUrl(format!("http://127.0.0.1:9/{p}"));
    let a = JwtVerifier::new(settings(url("a"), &[Algorithm::RS256]), &reg).unwrap();
    let a2 = JwtVerifier::new(
        settings(url("a"), &[Algorithm::RS256, Algorithm::ES256]),
        &reg,
    )
    .unwrap();
    let b = JwtVerifier::new(settings(url("b"), &[Algorithm::RS256]), &reg).unwrap();
    let slower = JwtVerifier::new(
        JwtSettings {
            jwks_refresh: Duration::from_secs(60),
            ..settings(url("a"), &[Algorithm::RS256])
        },
        &reg,
    )
    .unwrap();
    let store = |v: &JwtVerifier| v.key_store().unwrap();
    assert!(
        Arc::ptr_eq(&store(&a), &store(&a2)),
        "key settings unchanged: same store"
    );
    assert!(!Arc::ptr_eq(&store(&a), &store(&b)));
    assert!(!Arc::ptr_eq(&store(&a), &store(&slower)));
    assert_eq!(reg.live().len(), 3);
    drop((a, b, slower));
    assert_eq!(reg.live().len(), 1, "a2 still holds its store");
    drop(a2);
    assert!(reg.live().is_empty());
}

#[tokio::test]
async fn no_keys_yet_means_unknown_key_and_start_up_reports_why() {
    let port = crate::support::free_port();
    let (_, reg) = registry();
    let source = KeySource::JwksUrl(format!("http://127.0.0.1:{port}/jwks.json"));
    let v = JwtVerifier::new(settings(source, &[Algorithm::RS256]), &reg).unwrap();
    let err = v
        .key_store()
        .unwrap()
        .ensure_loaded(Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(err.contains("request failed"), "{err}");
    let token = TestKey::rsa("k").sign(&claims(ISS, AUD));
    assert_eq!(v.verify(&token).await.err(), Some(Rejection::UnknownKey));
}

#[tokio::test]
async fn background_service_refreshes_due_stores() {
    use pingora::services::background::BackgroundService;
    let k1 = TestKey::ec_p256("k1");
    let k2 = TestKey::ec_p256("k2");
    let idp = JwksServer::start(&jwks(&[&k1])).await;
    let (_, reg) = registry();
    let s = JwtSettings {
        jwks_refresh: Duration::from_secs(1),
        ..settings(KeySource::JwksUrl(idp.url()), &[Algorithm::ES256])
    };
    let v = JwtVerifier::new(s, &reg).unwrap();
    v.key_store()
        .unwrap()
        .ensure_loaded(Duration::from_secs(5))
        .await
        .unwrap();
    // A JWKS file policy refreshes from disk as well.
    let f1 = TestKey::ed25519("f1");
    let f2 = TestKey::ed25519("f2");
    let (dir, file_source) = jwks_file(&[&f1]);
    let fs = JwtSettings {
        jwks_refresh: Duration::from_secs(1),
        ..settings(file_source, &[Algorithm::EdDSA])
    };
    let fv = JwtVerifier::new(fs, &reg).unwrap();

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let service = JwksService::new(reg.clone());
    let task = tokio::spawn(async move { service.start(shutdown).await });

    idp.serve_jwks(&jwks(&[&k2]));
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&f2]).to_string()).unwrap();
    let old = k1.sign(&claims(ISS, AUD));
    let old_file = f1.sign(&claims(ISS, AUD));
    let k2_token = k2.sign(&claims(ISS, AUD));
    let f2_token = f2.sign(&claims(ISS, AUD));
    let refreshed = crate::support::eventually(Duration::from_secs(6), || async {
        v.key_store().unwrap().current().keys.has_kid("k2")
            && fv.key_store().unwrap().current().keys.has_kid("f2")
    })
    .await;
    assert!(refreshed, "background refresh picked up both changes");
    assert!(idp.hits() >= 2);
    assert_eq!(v.verify(&old).await.err(), Some(Rejection::UnknownKey));
    assert!(v.verify(&k2_token).await.is_ok());
    assert_eq!(
        fv.verify(&old_file).await.err(),
        Some(Rejection::UnknownKey)
    );
    assert!(fv.verify(&f2_token).await.is_ok());
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .unwrap()
        .unwrap();
}
