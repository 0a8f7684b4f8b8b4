//! The runtime form of one `[auth.NAME]` JWT policy (compiled from the config by the snapshot)
//! and the checks that refuse settings which could never accept a token.

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default size of the verified-token cache, in entries of up to 1 KiB of token.
pub const DEFAULT_CACHE_ENTRIES: u64 = 100_000;
/// Default interval of the background JWKS refresh.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(600);
/// An HMAC secret shorter than this is refused (RFC 7518 §3.2 asks for at least the hash size,
/// 32 bytes for HS256); a short secret can be brute-forced from a single token.
pub const MIN_SECRET_BYTES: usize = 32;

/// What one JWT policy accepts.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// The auth policy name, for metrics and logs.
    pub policy: String,
    /// When set, the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// When not empty, the `aud` claim (string or array) must contain one of them.
    pub audiences: Vec<String>,
    /// The algorithms a token may be signed with; anything else is refused.
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// With a secret only: when set, a token naming a `kid` must name this one. Without it a
    /// secret-based policy ignores the token's `kid`.
    pub kid: Option<String>,
    /// How often JWKS keys are loaded again in the background (URL and file sources).
    pub jwks_refresh: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Capacity of the verified-token cache; 0 turns the cache off.
    pub cache_entries: u64,
    /// PEM CA certificates to trust for an https `jwks_url` instead of the system roots (an
    /// identity provider inside the cluster with an internal CA).
    pub jwks_ca_pem: Option<Vec<u8>>,
}

impl JwtSettings {
    /// Settings with the defaults for everything but the policy name, keys and algorithms.
    pub fn new(policy: impl Into<String>, keys: KeySource, algorithms: Vec<Algorithm>) -> Self {
        JwtSettings {
            policy: policy.into(),
            issuer: None,
            audiences: Vec::new(),
            algorithms,
            keys,
            kid: None,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            leeway: Duration::ZERO,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            jwks_ca_pem: None,
        }
    }

    /// Refuses settings that cannot work; the message names the setting at fault.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.algorithms.is_empty() {
            return Err("algorithms: at least one algorithm is needed".into());
        }
        match &self.keys {
            KeySource::Secret(secret) => {
                if let Some(alg) = self
                    .algorithms
                    .iter()
                    .find(|a| a.family() != AlgorithmFamily::Hmac)
                {
                    return Err(format!(
                        "algorithms: {alg:?} needs public keys (jwks_url or jwks_file), not a secret"
                    ));
                }
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!(
                        "secret: an HMAC secret needs at least {MIN_SECRET_BYTES} bytes (it has {})",
                        secret.len()
                    ));
                }
            }
            KeySource::JwksUrl(_) | KeySource::JwksFile(_) => {
                if let Some(alg) = self
                    .algorithms
                    .iter()
                    .find(|a| a.family() == AlgorithmFamily::Hmac)
                {
                    return Err(format!(
                        "algorithms: {alg:?} needs a secret (secret_env or secret_file); HMAC keys are never taken from a JWKS"
                    ));
                }
                if self.jwks_refresh.is_zero() {
                    return Err("jwks_refresh: must be greater than zero".into());
                }
                if self.kid.is_some() {
                    return Err(
                        "kid: only used with a secret; a JWKS names the kid of each key".into(),
                    );
                }
            }
        }
        if let KeySource::JwksUrl(url) = &self.keys {
            check_url(url)?;
        }
        Ok(())
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("jwks_url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "jwks_url: scheme {:?} is not supported (http or https)",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("jwks_url: has no host".into());
    }
    Ok(())
}

/// Where a policy's verification keys come from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A JWKS document fetched over HTTP(S).
    JwksUrl(String),
    /// A JWKS document on disk.
    JwksFile(PathBuf),
    /// An HMAC secret (the bytes, not a name).
    Secret(Vec<u8>),
}

/// Never prints a secret: settings end up in logs and test output.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::JwksUrl(u) => f.debug_tuple("JwksUrl").field(u).finish(),
            KeySource::JwksFile(p) => f.debug_tuple("JwksFile").field(p).finish(),
            KeySource::Secret(s) => write!(f, "Secret(<{} bytes>)", s.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(algs: Vec<Algorithm>) -> JwtSettings {
        JwtSettings::new(
            "p",
            KeySource::JwksUrl("https://id.example.com/jwks.json".into()),
            algs,
        )
    }

    #[test]
    fn refuses_settings_that_cannot_work() {
        let secret = |n: usize, algs| JwtSettings::new("p", KeySource::Secret(vec![7; n]), algs);
        let cases = [
            (url(vec![]), "algorithms: at least one"),
            (url(vec![Algorithm::HS256]), "HS256 needs a secret"),
            (
                url(vec![Algorithm::RS256, Algorithm::HS512]),
                "HS512 needs a secret",
            ),
            (
                secret(32, vec![Algorithm::RS256]),
                "RS256 needs public keys",
            ),
            (
                secret(32, vec![Algorithm::HS256, Algorithm::ES256]),
                "ES256 needs public keys",
            ),
            (secret(31, vec![Algorithm::HS256]), "at least 32 bytes"),
            (
                JwtSettings::new(
                    "p",
                    KeySource::JwksUrl("ftp://x/jwks".into()),
                    vec![Algorithm::RS256],
                ),
                "scheme \"ftp\"",
            ),
            (
                JwtSettings::new(
                    "p",
                    KeySource::JwksUrl("not a url".into()),
                    vec![Algorithm::RS256],
                ),
                "jwks_url:",
            ),
            (
                JwtSettings {
                    jwks_refresh: Duration::ZERO,
                    ..url(vec![Algorithm::RS256])
                },
                "jwks_refresh",
            ),
            (
                JwtSettings {
                    kid: Some("k1".into()),
                    ..url(vec![Algorithm::RS256])
                },
                "kid: only used with a secret",
            ),
        ];
        for (settings, expected) in cases {
            let err = settings.check().expect_err(expected);
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        assert!(url(vec![Algorithm::RS256, Algorithm::EdDSA])
            .check()
            .is_ok());
        assert!(secret(32, vec![Algorithm::HS256, Algorithm::HS512])
            .check()
            .is_ok());
        let pinned = JwtSettings {
            kid: Some("k1".into()),
            ..secret(32, vec![Algorithm::HS256])
        };
        assert!(pinned.check().is_ok());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let s = format!("{:?}", KeySource::Secret(b"hunter2hunter2".to_vec()));
        assert_eq!(s, "Secret(<14 bytes>)");
    }
}
