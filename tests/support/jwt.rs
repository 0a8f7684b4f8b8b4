//! Test tokens: keys generated at run time (openssl), tokens signed with jsonwebtoken, and
//! hand-made malformed tokens for the attack corpus.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://id.test/";
pub const AUDIENCE: &str = "mobile-app";

/// An RSA key pair with its public JWK.
pub struct RsaKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub public_pem: Vec<u8>,
    pub jwk: Value,
}

pub fn rsa_key(kid: &str) -> RsaKey {
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa keygen");
    let private_pem = rsa.private_key_to_pem().unwrap();
    let jwk = json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
        "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
    });
    RsaKey {
        kid: kid.to_string(),
        encoding: EncodingKey::from_rsa_pem(&private_pem).unwrap(),
        public_pem: rsa.public_key_to_pem().unwrap(),
        jwk,
    }
}

/// A JWKS document holding the given keys.
pub fn jwks(keys: &[&RsaKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims that pass every check: right issuer and audience, valid for an hour.
pub fn good_claims(sub: &str, scope: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "scope": scope,
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// Signs `claims` with `alg` and `key`, naming `kid` in the header if given.
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

pub fn rs256(key: &RsaKey, claims: &Value) -> String {
    sign(Algorithm::RS256, &key.encoding, Some(&key.kid), claims)
}

/// Base64url of a JSON value: to build tokens no library would sign.
pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Replaces one of the three segments of a token.
pub fn with_segment(token: &str, index: usize, segment: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = segment;
    parts.join(".")
}
