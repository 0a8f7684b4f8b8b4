//! The verifier of one JWT policy: token shape, header, algorithm policy, key lookup (with the
//! bounded unknown-kid refetch), signature, then `exp`/`nbf`/`iss`/`aud`; verified tokens go to
//! the policy's cache.

use super::cache::{token_hash, TokenCache};
use super::claims::Claims;
use super::keys::KeySet;
use super::settings::{JwtSettings, KeySource};
use super::store::{KeyRegistry, KeyStore};
use super::{jwks, Rejection};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Tokens longer than this are refused before any decoding (real ones are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest a request waits for an unknown-kid refetch before it is refused as unknown_key.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(1);

/// Verifies tokens for one policy. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    policy: String,
    issuer: Option<String>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    keys: Keys,
    cache: Option<TokenCache>,
    signature_checks: AtomicU64,
    cache_hits: AtomicU64,
}

enum Keys {
    /// An HMAC secret: fixed for the life of the verifier, generation 0; `kid` is the one kid
    /// a token may name, when the policy sets one.
    Fixed {
        set: KeySet,
        kid: Option<String>,
    },
    Store(Arc<KeyStore>),
}

/// Counters of one verifier (for tests, benches and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierStats {
    /// Signature verifications attempted.
    pub signature_checks: u64,
    /// Tokens accepted from the cache without a signature check.
    pub cache_hits: u64,
}

/// The fields of a JOSE header the verifier reads; everything else (`jku`, `x5u`, `jwk`, `x5c`)
/// is ignored: keys come only from the configured source.
#[derive(serde::Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    /// RFC 7515 §4.1.11: a token listing critical extensions this verifier does not
    /// implement must be refused, and it implements none.
    crit: Option<Value>,
}

impl JwtVerifier {
    /// Builds the verifier; synchronous and without network I/O (a JWKS file is read here, a
    /// URL is fetched later by the store). Err for settings that cannot work.
    pub fn new(settings: JwtSettings, registry: &KeyRegistry) -> Result<JwtVerifier, String> {
        settings.check()?;
        let keys = match &settings.keys {
            KeySource::Secret(secret) => Keys::Fixed {
                set: KeySet::from_secret(secret),
                kid: settings.kid.clone(),
            },
            KeySource::JwksUrl(_) => {
                let (store, _) = registry.store_for(&settings)?;
                Keys::Store(store)
            }
            KeySource::JwksFile(path) => {
                let set = jwks::read_file(path).map_err(|e| format!("jwks_file: {e}"))?;
                let (store, _) = registry.store_for(&settings)?;
                // A reused store gets the file as it is now; an unchanged file changes nothing.
                store.apply(Ok(set));
                Keys::Store(store)
            }
        };
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                policy: settings.policy,
                issuer: settings.issuer,
                audiences: settings.audiences,
                algorithms: settings.algorithms,
                leeway: settings.leeway.as_secs(),
                keys,
                cache: (settings.cache_entries > 0)
                    .then(|| TokenCache::new(settings.cache_entries)),
                signature_checks: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
            }),
        })
    }

    pub fn policy(&self) -> &str {
        &self.inner.policy
    }

    /// The JWKS store behind this verifier (`None` for a secret).
    pub fn key_store(&self) -> Option<Arc<KeyStore>> {
        match &self.inner.keys {
            Keys::Store(s) => Some(s.clone()),
            Keys::Fixed { .. } => None,
        }
    }

    pub fn stats(&self) -> VerifierStats {
        VerifierStats {
            signature_checks: self.inner.signature_checks.load(Ordering::Relaxed),
            cache_hits: self.inner.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Verifies a bearer token (without the `Bearer ` prefix). Ok: the claims, to authorize
    /// and forward. Err: why it was refused (every reason is answered with the same 401).
    /// Waits on the identity provider at most [`UNKNOWN_KID_WAIT`], only for an unknown kid.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, Rejection> {
        if token.len() > MAX_TOKEN_BYTES || token.is_empty() {
            return Err(Rejection::Malformed);
        }
        let now = jsonwebtoken::get_current_timestamp();
        let hash = token_hash(token);
        if let Some(cached) = self.cached(&hash, now) {
            return cached;
        }
        let (message, signature) = token.rsplit_once('.').ok_or(Rejection::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(Rejection::Malformed)?;
        if payload.contains('.') {
            return Err(Rejection::Malformed);
        }
        let header: JoseHeader = decode_json(header)?;
        if header.crit.is_some() {
            return Err(Rejection::Malformed);
        }
        // `none` and names outside the supported set fail to parse: never allowed.
        let alg = Algorithm::from_str(&header.alg).map_err(|_| Rejection::AlgorithmNotAllowed)?;
        if !self.inner.algorithms.contains(&alg) {
            return Err(Rejection::AlgorithmNotAllowed);
        }
        let (key_id, generation) = self
            .check_signature(message, signature, header.kid.as_deref(), alg)
            .await?;
        let map: Map<String, Value> = decode_json(payload)?;
        let times = self.check_claims(&map, now)?;
        let claims = Arc::new(Claims::new(map));
        if let Some(cache) = &self.inner.cache {
            cache.insert(
                hash,
                token.len(),
                claims.clone(),
                times.exp,
                times.nbf,
                key_id,
                generation,
                now,
            );
        }
        Ok(claims)
    }

    /// A cached verdict, rechecked for time and for its key still being in the set; `None`
    /// when the token must be verified in full.
    fn cached(&self, hash: &[u8; 32], now: u64) -> Option<Result<Arc<Claims>, Rejection>> {
        let cache = self.inner.cache.as_ref()?;
        let entry = cache.get(hash)?;
        if let Err(r) = self.check_times(entry.exp, entry.nbf, now) {
            cache.remove(hash);
            return Some(Err(r));
        }
        let present = match &self.inner.keys {
            Keys::Fixed { .. } => true,
            Keys::Store(store) => {
                let current = store.current();
                entry.key_still_present(current.generation, |id| current.keys.contains(id))
            }
        };
        if !present {
            // The key left the set: verify in full, which refuses it (or finds the same key
            // under a new generation).
            cache.remove(hash);
            return None;
        }
        self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(Ok(entry.claims.clone()))
    }

    /// Finds the keys that may verify this token and checks the signature; returns the identity
    /// of the verifying key and the key-set generation it belongs to.
    async fn check_signature(
        &self,
        message: &str,
        signature: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<([u8; 32], u64), Rejection> {
        let current = match &self.inner.keys {
            Keys::Fixed { set, kid: wanted } => {
                if !secret_accepts_kid(wanted.as_deref(), kid) {
                    return Err(Rejection::UnknownKey);
                }
                // The secret has no kid of its own: it is looked up as for a token naming none.
                return self
                    .try_keys(set, message, signature, None, alg)
                    .map(|id| (id, 0));
            }
            Keys::Store(store) => {
                let current = store.current();
                let unknown = match kid {
                    Some(kid) => !current.keys.has_kid(kid),
                    None => current.keys.is_empty(),
                };
                if unknown && store.refetch_for_unknown_kid(UNKNOWN_KID_WAIT).await {
                    store.current()
                } else {
                    current
                }
            }
        };
        self.try_keys(&current.keys, message, signature, kid, alg)
            .map(|id| (id, current.generation))
    }

    fn try_keys(
        &self,
        set: &KeySet,
        message: &str,
        signature: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<[u8; 32], Rejection> {
        let mut candidates = set.candidates(kid, alg).peekable();
        if candidates.peek().is_none() {
            return Err(Rejection::UnknownKey);
        }
        for key in candidates {
            self.inner.signature_checks.fetch_add(1, Ordering::Relaxed);
            match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg) {
                Ok(true) => return Ok(key.id),
                Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => {
                    return Err(Rejection::Malformed)
                }
                // Any other error of the crypto layer (a signature of the wrong length, say)
                // is a signature that does not verify.
                Ok(false) | Err(_) => {}
            }
        }
        Err(Rejection::BadSignature)
    }

    fn check_claims(&self, map: &Map<String, Value>, now: u64) -> Result<Times, Rejection> {
        let exp = numeric_date(map.get("exp").ok_or(Rejection::Malformed)?)?;
        let nbf = map.get("nbf").map(numeric_date).transpose()?;
        self.check_times(exp, nbf, now)?;
        if let Some(issuer) = &self.inner.issuer {
            if map.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(Rejection::BadIssuer);
            }
        }
        if !self.inner.audiences.is_empty() {
            let wanted = |v: &Value| {
                v.as_str()
                    .is_some_and(|a| self.inner.audiences.iter().any(|w| w == a))
            };
            let ok = match map.get("aud") {
                Some(Value::Array(items)) => items.iter().any(wanted),
                Some(v) => wanted(v),
                None => false,
            };
            if !ok {
                return Err(Rejection::BadAudience);
            }
        }
        Ok(Times { exp, nbf })
    }

    /// `exp` and `nbf` against the clock, with the leeway.
    fn check_times(&self, exp: u64, nbf: Option<u64>, now: u64) -> Result<(), Rejection> {
        let leeway = self.inner.leeway;
        if now >= exp.saturating_add(leeway) {
            return Err(Rejection::Expired);
        }
        if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(Rejection::NotYetValid);
        }
        Ok(())
    }
}

/// Whether a secret-based policy takes a token naming `token_kid`. Issuers put a kid on HS*
/// tokens too and one secret has nothing to match it against, so it is ignored unless the policy
/// names the one kid it accepts; a token naming none is accepted either way.
fn secret_accepts_kid(wanted: Option<&str>, token_kid: Option<&str>) -> bool {
    match (wanted, token_kid) {
        (Some(wanted), Some(kid)) => wanted == kid,
        _ => true,
    }
}

struct Times {
    exp: u64,
    nbf: Option<u64>,
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly fractional; anything else
/// (a string, say) makes the token malformed. Negative times count as the epoch.
fn numeric_date(v: &Value) -> Result<u64, Rejection> {
    let n = v.as_number().ok_or(Rejection::Malformed)?;
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() => Ok(f.max(0.0) as u64),
        _ => Err(Rejection::Malformed),
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_checks_the_token_kid_only_when_the_policy_names_one() {
        assert!(secret_accepts_kid(None, None));
        assert!(secret_accepts_kid(None, Some("anything")));
        assert!(secret_accepts_kid(Some("k1"), None));
        assert!(secret_accepts_kid(Some("k1"), Some("k1")));
        assert!(!secret_accepts_kid(Some("k1"), Some("k2")));
        assert!(!secret_accepts_kid(Some("k1"), Some("K1")));
        assert!(!secret_accepts_kid(Some("k1"), Some("")));
    }
}
