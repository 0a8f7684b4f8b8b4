//! Key sets: the verification keys of one policy (a JWKS or an HMAC secret), which key may
//! verify which algorithm, and lookup by `kid`.
//!
//! A key verifies only algorithms of its own type (RSA: RS*/PS*, EC P-256: ES256, EC P-384:
//! ES384, Ed25519: EdDSA, a secret: HS*) and, when the JWK names an `alg`, only that one. HMAC
//! keys never come from a JWKS, so a public key can never be used as an HMAC secret.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// At most this many keys of a JWKS are used; identity providers publish a handful, and each
/// key may cost a signature check for a token without `kid`.
pub const MAX_KEYS: usize = 32;
/// RSA keys shorter than 2048 bits are ignored (NIST SP 800-131A).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// The type of a key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    pub fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: then only that algorithm.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
    /// SHA-256 over the key's kid and material: the identity the token cache remembers.
    pub id: [u8; 32],
}

impl VerifyingKey {
    pub fn verifies(&self, alg: Algorithm) -> bool {
        self.kind.verifies(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys one policy verifies with.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// A set holding one HMAC secret.
    pub fn from_secret(secret: &[u8]) -> KeySet {
        KeySet {
            keys: vec![VerifyingKey {
                kid: None,
                kind: KeyKind::Hmac,
                alg: None,
                key: DecodingKey::from_secret(secret),
                id: Sha256::digest(secret).into(),
            }],
        }
    }

    /// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot verify signatures (other
    /// uses, unsupported types or curves, HMAC, short RSA) are skipped; a document without one
    /// usable key is an error, so a provider's broken answer never replaces a working set.
    pub fn from_jwks(body: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let total = doc.keys.len();
        let mut keys = Vec::new();
        for value in doc.keys {
            if keys.len() == MAX_KEYS {
                break;
            }
            if let Some(key) = usable_key(value) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(format!("no usable signing key among {total} keys"));
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this `kid` is in the set (whatever its type).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Whether the key with this identity is still in the set.
    pub fn contains(&self, id: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| &k.id == id)
    }

    /// The keys that may verify a token signed with `alg`: with a `kid`, only keys of that
    /// kid; without one, every key of a fitting type.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.verifies(alg) && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
    }

    /// A digest of all key identities: equal sets give equal digests.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut ids: Vec<&[u8; 32]> = self.keys.iter().map(|k| &k.id).collect();
        ids.sort();
        let mut h = Sha256::new();
        for id in ids {
            h.update(id);
        }
        h.finalize().into()
    }
}

/// A JWK turned into a verification key, or `None` if it cannot verify JWS signatures here.
fn usable_key(value: serde_json::Value) -> Option<VerifyingKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64_url(&p.n)?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return None;
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        // Symmetric keys in a JWKS are refused: HMAC needs a configured secret.
        AlgorithmParameters::OctetKeyPair(_) | AlgorithmParameters::OctetKey(_) => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        // A named algorithm this gateway does not verify with (RSA-OAEP, unknown) means the
        // key is not for us.
        Some(a) => Some(Algorithm::from_str(&a.to_string()).ok()?),
    };
    if alg.is_some_and(|a| !kind.verifies(a)) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let id = Sha256::digest(serde_json::to_vec(&jwk).ok()?).into();
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        kind,
        alg,
        key,
        id,
    })
}

fn base64_url(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_testkit::jwt::TestKey;

    fn jwks(keys: &[serde_json::Value]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn keys_verify_only_their_own_algorithms() {
        let rsa = TestKey::rsa("r");
        let p256 = TestKey::ec_p256("e256");
        let p384 = TestKey::ec_p384("e384");
        let ed = TestKey::ed25519("ed");
        let set = KeySet::from_jwks(&jwks(&[rsa.jwk(), p256.jwk(), p384.jwk(), ed.jwk()])).unwrap();
        assert_eq!(set.len(), 4);
        let kids = |alg| -> Vec<String> {
            set.candidates(None, alg)
                .map(|k| k.kid.clone().unwrap())
                .collect()
        };
        assert_eq!(kids(Algorithm::RS256), ["r"]);
        assert_eq!(kids(Algorithm::PS512), ["r"]);
        assert_eq!(kids(Algorithm::ES256), ["e256"]);
        assert_eq!(kids(Algorithm::ES384), ["e384"]);
        assert_eq!(kids(Algorithm::EdDSA), ["ed"]);
        assert!(
            kids(Algorithm::HS256).is_empty(),
            "a public key is never an HMAC key"
        );
        assert_eq!(set.candidates(Some("r"), Algorithm::ES256).count(), 0);
        assert_eq!(set.candidates(Some("e256"), Algorithm::ES256).count(), 1);
    }

    #[test]
    fn a_jwk_alg_restricts_its_key() {
        let mut jwk = TestKey::rsa("r").jwk();
        jwk["alg"] = "PS256".into();
        let set = KeySet::from_jwks(&jwks(&[jwk])).unwrap();
        assert_eq!(set.candidates(Some("r"), Algorithm::PS256).count(), 1);
        assert_eq!(set.candidates(Some("r"), Algorithm::RS256).count(), 0);
    }

    #[test]
    fn unusable_keys_are_skipped_and_a_set_without_usable_keys_is_refused() {
        let good = TestKey::ec_p256("good").jwk();
        let mut enc = TestKey::rsa("enc").jwk();
        enc["use"] = "enc".into();
        let mut wrong_alg = TestKey::ec_p256("wrong").jwk();
        wrong_alg["alg"] = "RS256".into();
        let mut oaep = TestKey::rsa("oaep").jwk();
        oaep["alg"] = "RSA-OAEP".into();
        let oct = serde_json::json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
        let p521 =
            serde_json::json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"});
        let junk = serde_json::json!({"kty": "RSA", "kid": "junk", "n": 5});
        let short_rsa = serde_json::json!({"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB"});
        let bad = [enc, wrong_alg, oaep, oct, p521, junk, short_rsa];
        let err = KeySet::from_jwks(&jwks(&bad)).err().unwrap();
        assert!(err.contains("no usable signing key among 7"), "{err}");
        let mut all = bad.to_vec();
        all.push(good);
        let set = KeySet::from_jwks(&jwks(&all)).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.has_kid("good"));

        for garbage in [&b"<html>"[..], b"{}", b"{\"keys\": 3}", b"[]", b""] {
            assert!(KeySet::from_jwks(garbage).is_err());
        }
    }

    #[test]
    fn fingerprint_follows_the_keys_not_their_order() {
        let (a, b) = (TestKey::ec_p256("a").jwk(), TestKey::ed25519("b").jwk());
        let ab = KeySet::from_jwks(&jwks(&[a.clone(), b.clone()])).unwrap();
        let ba = KeySet::from_jwks(&jwks(&[b, a.clone()])).unwrap();
        let just_a = KeySet::from_jwks(&jwks(&[a])).unwrap();
        assert_eq!(ab.fingerprint(), ba.fingerprint());
        assert_ne!(ab.fingerprint(), just_a.fingerprint());
    }
}
