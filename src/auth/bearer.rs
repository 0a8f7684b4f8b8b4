//! `type = "jwt"` policies as the proxy sees them: the bearer token taken from the request
//! (RFC 6750: the `Authorization` header only, never the query string), verified by
//! [`super::jwt::JwtVerifier`], and the claims to forward upstream.

use super::jwt::{
    JwtSettings, JwtVerifier, KeyRegistry, KeySource, DEFAULT_CACHE_ENTRIES, DEFAULT_JWKS_REFRESH,
};
use super::{read_secret, Denial, Identity};
use crate::config::AuthConfig;
use http::{HeaderMap, HeaderName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Tokens longer than this are refused before any decoding: real ones are a few KiB at most.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// A compiled JWT policy.
pub struct JwtPolicy {
    verifier: JwtVerifier,
    /// (claim, upstream header) pairs from `forward_claims`.
    pub forward_claims: Vec<(String, HeaderName)>,
    /// Whether `Authorization` goes upstream (`forward_credentials`, default true: backends
    /// may verify the token themselves).
    pub forward_credentials: bool,
}

impl JwtPolicy {
    /// Builds the verifier. `Err` holds (key under `auth.NAME`, message) pairs.
    pub fn compile(
        name: &str,
        cfg: &AuthConfig,
        base_dir: &Path,
        keys: &KeyRegistry,
    ) -> Result<JwtPolicy, Vec<(String, String)>> {
        let algorithms = cfg
            .algorithms
            .iter()
            .flatten()
            .filter_map(|a| a.parse::<jsonwebtoken::Algorithm>().ok())
            .collect();
        let source = if let Some(url) = &cfg.jwks_url {
            KeySource::JwksUrl(url.clone())
        } else if let Some(file) = &cfg.jwks_file {
            KeySource::JwksFile(base_dir.join(file))
        } else {
            KeySource::Secret(read_secret(cfg, base_dir).map_err(|e| vec![e])?)
        };
        let jwks_ca_pem = match &cfg.jwks_ca_file {
            Some(file) => {
                let path = base_dir.join(file);
                Some(std::fs::read(&path).map_err(|e| {
                    vec![(
                        "jwks_ca_file".to_string(),
                        format!("cannot read {}: {e}", path.display()),
                    )]
                })?)
            }
            None => None,
        };
        let settings = JwtSettings {
            policy: name.to_string(),
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone().unwrap_or_default(),
            algorithms,
            keys: source,
            kid: cfg.kid.clone(),
            jwks_refresh: cfg.jwks_refresh.map_or(DEFAULT_JWKS_REFRESH, |d| d.get()),
            leeway: cfg.leeway.map_or(DEFAULT_LEEWAY, |d| d.get()),
            cache_entries: cfg.token_cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES),
            jwks_ca_pem,
        };
        let verifier = JwtVerifier::new(settings, keys).map_err(|msg| vec![at_key(&msg)])?;
        let forward_claims = cfg
            .forward_claims
            .iter()
            .flatten()
            .filter_map(|(claim, header)| {
                let header = HeaderName::from_bytes(header.as_bytes()).ok()?;
                Some((claim.clone(), header))
            })
            .collect();
        Ok(JwtPolicy {
            verifier,
            forward_claims,
            forward_credentials: cfg.forward_credentials.unwrap_or(true),
        })
    }

    pub fn verifier(&self) -> &JwtVerifier {
        &self.verifier
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Denial> {
        let token = bearer_token(headers)?;
        let claims = self
            .verifier
            .verify(token)
            .await
            .map_err(|r| Denial::Invalid(r.label()))?;
        Ok(Identity {
            consumer: claims.subject().map(Arc::from),
            claims: Some(claims),
        })
    }
}

/// The verifier's messages start with the setting at fault (`jwks_file: cannot read ...`):
/// that setting becomes the key path, so the error points at the right line.
fn at_key(message: &str) -> (String, String) {
    const KEYS: &[&str] = &[
        "algorithms",
        "jwks_url",
        "jwks_file",
        "jwks_ca_file",
        "secret_env",
        "secret_file",
        "kid",
        "issuer",
        "audiences",
        "jwks_refresh",
        "leeway",
        "token_cache_entries",
    ];
    match message.split_once(": ") {
        Some((key, rest)) if KEYS.contains(&key) => (key.to_string(), rest.to_string()),
        _ => ("algorithms".to_string(), message.to_string()),
    }
}

/// The token of an `Authorization: Bearer <token>` header. No header, or another scheme: the
/// request has no bearer credentials (`Missing`). Several Authorization headers, or a value that
/// is not a single token68: `Invalid("malformed")`.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Denial> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Denial::Missing);
    };
    if values.next().is_some() {
        return Err(Denial::Invalid("malformed"));
    }
    let value = value.to_str().map_err(|_| Denial::Invalid("malformed"))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(Denial::Missing);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::Missing);
    }
    let token = token.trim_start_matches(' ');
    // token68 (RFC 7235): base64url characters and dots for a JWT; anything else is not a token.
    let token68 = !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
        });
    if token68 {
        Ok(token)
    } else {
        Err(Denial::Invalid("malformed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_token_shapes() {
        assert_eq!(bearer_token(&with(&["Bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&with(&["bearer  a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&with(&[])), Err(Denial::Missing));
        assert_eq!(
            bearer_token(&with(&["Basic dXNlcjpwYXNz"])),
            Err(Denial::Missing)
        );
        assert_eq!(bearer_token(&with(&["Bearer"])), Err(Denial::Missing));
        let malformed = Err(Denial::Invalid("malformed"));
        assert_eq!(
            bearer_token(&with(&["Bearer a.b.c", "Bearer d.e.f"])),
            malformed
        );
        assert_eq!(bearer_token(&with(&["Bearer a b"])), malformed);
        assert_eq!(bearer_token(&with(&["Bearer "])), malformed);
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer_token(&with(&[&huge])), malformed);
    }
}
