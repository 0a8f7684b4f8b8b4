//! JWT parsing and verification (`src/auth/jwt/`): arbitrary bearer tokens, tokens correctly
//! signed over arbitrary header and payload bytes (so the claim checks are reached too), and
//! arbitrary JWKS documents.
//!
//! Besides "no panic": a signature never verifies a payload it was not made for.
//!
//! Input: `TOKEN \xff HEADER \xff PAYLOAD \xff OTHER_PAYLOAD \xff ALG \xff KID \xff JWKS`:
//! TOKEN is verified as sent; HEADER.PAYLOAD is signed with the policy's secret (HS256,
//! HS384 or HS512 by ALG's first byte) and verified, then its signature tried on
//! OTHER_PAYLOAD; JWKS is parsed as a key set and asked for KID's keys.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tollgate::auth::jwt::{JwtSettings, JwtVerifier, KeyRegistry, KeySet, KeySource};

const SECRET: &[u8] = b"fuzzing-secret-of-at-least-32-bytes!";
const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// A policy with an HMAC secret, an issuer, an audience and leeway: every check is on.
fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let mut settings = JwtSettings::new(
            "fuzz",
            KeySource::Secret(SECRET.to_vec()),
            vec![Algorithm::HS256, Algorithm::HS512],
        );
        settings.issuer = Some("https://id.example.com/".into());
        settings.audiences = vec!["mobile-app".into()];
        settings.leeway = Duration::from_secs(30);
        settings.cache_entries = 1000;
        let registry = KeyRegistry::new(Arc::new(tollgate::observe::Metrics::new()));
        JwtVerifier::new(settings, &registry).expect("valid settings")
    })
}

fn verify(token: &str) -> bool {
    // A secret needs no key fetch: the future completes without a runtime.
    futures::executor::block_on(verifier().verify(token)).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let [token, header, payload, other_payload, alg, kid, jwks] = tollgate_fuzz::fields(data);
    verify(&tollgate_fuzz::text(token));

    let alg = HMAC[usize::from(alg.first().copied().unwrap_or(0)) % HMAC.len()];
    let header = URL_SAFE_NO_PAD.encode(header);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let key = EncodingKey::from_secret(SECRET);
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("sign");
    verify(&format!("{message}.{signature}"));
    if other_payload != payload {
        let forged = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(other_payload));
        assert!(!verify(&forged), "a signature verified another payload");
    }

    let kid = (!kid.is_empty()).then(|| tollgate_fuzz::text(kid));
    if let Ok(keys) = KeySet::from_jwks(jwks) {
        assert!(!keys.is_empty());
        let _ = keys.fingerprint();
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::PS512, Algorithm::EdDSA] {
            let _ = keys.candidates(kid.as_deref(), alg).count();
        }
        let _ = kid.map(|kid| keys.has_kid(&kid));
    }
});
