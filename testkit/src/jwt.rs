//! Test keys for JWT verification, made at test time with OpenSSL (fast even in debug builds):
//! one per algorithm family, each with its JWK and a signer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{json, Value};

/// A signing key and the JWK that verifies it.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    /// The public half as a JWK with `kid` (no `alg`), or `Null` for an HMAC secret.
    jwk: Value,
    /// The public key as SPKI PEM (RSA only): the "secret" of an algorithm-confusion attack.
    pub public_pem: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        let rsa = Rsa::generate(2048).expect("rsa key");
        TestKey {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().unwrap()).unwrap(),
            jwk: json!({"kty": "RSA", "kid": kid, "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())}),
            public_pem: rsa.public_key_to_pem().unwrap(),
        }
    }

    fn ec(kid: &str, nid: Nid, crv: &str, size: i32, alg: Algorithm) -> TestKey {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().unwrap(),
            openssl::bn::BigNum::new().unwrap(),
        );
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let pem = PKey::from_ec_key(key)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        TestKey {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_ec_pem(&pem).unwrap(),
            jwk: json!({"kty": "EC", "crv": crv, "kid": kid,
                "x": b64(&x.to_vec_padded(size).unwrap()), "y": b64(&y.to_vec_padded(size).unwrap())}),
            public_pem: Vec::new(),
        }
    }

    pub fn ec_p256(kid: &str) -> TestKey {
        TestKey::ec(kid, Nid::X9_62_PRIME256V1, "P-256", 32, Algorithm::ES256)
    }

    pub fn ec_p384(kid: &str) -> TestKey {
        TestKey::ec(kid, Nid::SECP384R1, "P-384", 48, Algorithm::ES384)
    }

    pub fn ed25519(kid: &str) -> TestKey {
        let key = PKey::generate_ed25519().unwrap();
        TestKey {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(&key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&key.raw_public_key().unwrap())}),
            public_pem: Vec::new(),
        }
    }

    /// An HMAC secret (no kid: secrets are configured, not published).
    pub fn hmac(secret: &[u8]) -> TestKey {
        TestKey {
            kid: String::new(),
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            jwk: Value::Null,
            public_pem: Vec::new(),
        }
    }

    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// Signs `claims` with this key's default algorithm and its kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(self.alg, claims)
    }

    /// Signs `claims` with `alg` (of this key's family) and this key's kid.
    pub fn sign_with(&self, alg: Algorithm, claims: &Value) -> String {
        let mut header = Header::new(alg);
        if !self.kid.is_empty() {
            header.kid = Some(self.kid.clone());
        }
        self.sign_header(&header, claims)
    }

    pub fn sign_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document holding these keys.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims valid for an hour with this issuer and audience.
pub fn claims(iss: &str, aud: &str) -> Value {
    json!({"sub": "user-1", "iss": iss, "aud": aud, "exp": now() + 3600, "iat": now(), "scope": "users:read users:write"})
}

/// A token from raw header and payload JSON and a raw signature (for hand-made attacks).
pub fn raw_token(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(signature)
    )
}
