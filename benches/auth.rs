//! JWT verification cost per request: uncached verification per algorithm family, and the
//! verified-token cache hit that a client resending its token gets.

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::Algorithm;
use std::sync::Arc;
use tollgate::auth::jwt::{JwtSettings, JwtVerifier, KeyRegistry, KeySource};
use tollgate::observe::Metrics;
use tollgate_testkit::jwt::{claims, jwks, TestKey};

const ISS: &str = "https://id.example.com/";
const AUD: &str = "mobile-app";

fn verifier(reg: &KeyRegistry, keys: KeySource, alg: Algorithm, cache_entries: u64) -> JwtVerifier {
    let settings = JwtSettings {
        issuer: Some(ISS.into()),
        audiences: vec![AUD.into()],
        cache_entries,
        ..JwtSettings::new("bench", keys, vec![alg])
    };
    JwtVerifier::new(settings, reg).expect("verifier")
}

fn bench(c: &mut Criterion) {
    let reg = KeyRegistry::new(Arc::new(Metrics::new()));
    let rsa = TestKey::rsa("rsa");
    let ec = TestKey::ec_p256("ec");
    let ed = TestKey::ed25519("ed");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&rsa, &ec, &ed]).to_string()).expect("write jwks");
    let file = KeySource::JwksFile(path);
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let hmac = TestKey::hmac(&secret);

    let cases = [
        (
            "hs256_uncached",
            KeySource::Secret(secret),
            &hmac,
            Algorithm::HS256,
            0,
        ),
        ("rs256_uncached", file.clone(), &rsa, Algorithm::RS256, 0),
        (
            "rs256_cache_hit",
            file.clone(),
            &rsa,
            Algorithm::RS256,
            1000,
        ),
        ("es256_uncached", file.clone(), &ec, Algorithm::ES256, 0),
        ("eddsa_uncached", file, &ed, Algorithm::EdDSA, 0),
    ];
    let mut group = c.benchmark_group("jwt_verify");
    for (name, keys, key, alg, cache) in cases {
        let v = verifier(&reg, keys, alg, cache);
        let token = key.sign_with(alg, &claims(ISS, AUD));
        // Nothing on these paths waits on I/O, so a plain executor measures only the work.
        futures::executor::block_on(v.verify(&token)).expect("valid token");
        group.bench_function(name, |b| {
            b.iter(|| futures::executor::block_on(v.verify(&token)).expect("valid token"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
