//! Who is calling: compiled `[auth.NAME]` policies (JWT bearer tokens in [`jwt`], partner API
//! keys in [`api_key`]) and the [`Identity`] a request carries once a policy accepted it.
//!
//! The proxy calls [`AuthPolicy::authenticate`] after route matching; the policy never sees a
//! Pingora session, so everything here is testable on plain header maps.

pub mod api_key;
mod bearer;
pub mod jwt;

pub use bearer::{bearer_token, JwtPolicy};

use crate::config::{AuthConfig, AuthKind, Config, ConfigError};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// What a policy established about the caller.
#[derive(Clone, Default)]
pub struct Identity {
    /// The API-key consumer, or the JWT `sub`: what per-caller rate limits count.
    pub consumer: Option<Arc<str>>,
    /// Verified JWT claims.
    pub claims: Option<Arc<jwt::Claims>>,
}

impl Identity {
    /// A claim rendered as a header-safe string (see [`jwt::Claims::claim_as_header_value`]).
    pub fn claim(&self, name: &str) -> Option<String> {
        self.claims.as_ref()?.claim_as_header_value(name)
    }
}

/// Why a request was not let through. Labels are bounded: they become metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No credentials at all: 401 with a bare challenge (RFC 6750 section 3.1).
    Missing,
    /// Credentials present but not accepted: 401 `invalid_token`. The label is for operators
    /// (metrics, log); the client learns nothing more.
    Invalid(&'static str),
    /// A valid token without every scope the route requires: 403 `insufficient_scope`.
    InsufficientScope,
}

impl Denial {
    pub fn label(&self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Invalid(label) => label,
            Denial::InsufficientScope => "insufficient_scope",
        }
    }
}

/// One compiled `[auth.NAME]`.
pub enum AuthPolicy {
    Jwt(JwtPolicy),
    ApiKey(api_key::ApiKeyPolicy),
}

impl std::fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthPolicy::Jwt(_) => "AuthPolicy::Jwt",
            AuthPolicy::ApiKey(_) => "AuthPolicy::ApiKey",
        })
    }
}

impl AuthPolicy {
    /// Checks the request's credentials and, for a JWT, that it holds every scope in `scopes`.
    /// Async because a JWT naming a key the gateway has not
    /// seen may wait (briefly, bounded) for a JWKS refetch.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        scopes: &[String],
    ) -> Result<Identity, Denial> {
        let identity = match self {
            AuthPolicy::Jwt(p) => p.authenticate(headers).await?,
            AuthPolicy::ApiKey(p) => p.authenticate(headers)?,
        };
        let scoped = scopes.is_empty()
            || identity
                .claims
                .as_ref()
                .is_some_and(|c| c.has_scopes(scopes));
        if scoped {
            Ok(identity)
        } else {
            Err(Denial::InsufficientScope)
        }
    }

    /// Adds the headers a verified identity sends upstream (claims, consumer name).
    pub fn forward(&self, identity: &Identity, mut set: impl FnMut(&HeaderName, HeaderValue)) {
        match self {
            AuthPolicy::Jwt(p) => {
                for (claim, header) in &p.forward_claims {
                    let value = identity
                        .claim(claim)
                        .and_then(|v| HeaderValue::from_str(&v).ok());
                    if let Some(value) = value {
                        set(header, value);
                    }
                }
            }
            AuthPolicy::ApiKey(p) => {
                let value = identity
                    .consumer
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok());
                if let Some(value) = value {
                    set(&p.forward, value);
                }
            }
        }
    }

    /// The header carrying this policy's credentials when they must not go upstream
    /// (`forward_credentials = false`); `None` when they are forwarded. A borrowed name, so the
    /// proxy removes it without allocating on every request.
    pub fn credential_header_to_strip(&self) -> Option<&HeaderName> {
        // A static, not the `http` constant: a reference to it must outlive this call.
        static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;
        match self {
            AuthPolicy::Jwt(p) => (!p.forward_credentials).then_some(&AUTHORIZATION),
            AuthPolicy::ApiKey(p) => (!p.forward_credentials).then_some(&p.header),
        }
    }

    /// Headers this policy sets upstream: stripped from every client request on every route,
    /// so no client can claim an identity by sending them itself.
    pub fn identity_headers(&self) -> Vec<HeaderName> {
        match self {
            AuthPolicy::Jwt(p) => p.forward_claims.iter().map(|(_, h)| h.clone()).collect(),
            AuthPolicy::ApiKey(p) => vec![p.forward.clone()],
        }
    }

    /// The `WWW-Authenticate` challenge for a denial. It names the error class only (RFC 6750),
    /// never why a token failed.
    pub fn challenge(&self, denial: Denial, scopes: &[String]) -> String {
        match (self, denial) {
            (AuthPolicy::ApiKey(p), _) => format!("ApiKey header=\"{}\"", p.header),
            (AuthPolicy::Jwt(_), Denial::Missing) => "Bearer".to_string(),
            (AuthPolicy::Jwt(_), Denial::Invalid(_)) => {
                "Bearer error=\"invalid_token\"".to_string()
            }
            (AuthPolicy::Jwt(_), Denial::InsufficientScope) => format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                scopes.join(" ")
            ),
        }
    }
}

/// Every compiled policy of a config, and the identity headers to strip from client requests.
#[derive(Default)]
pub struct AuthPolicies {
    pub by_name: BTreeMap<String, Arc<AuthPolicy>>,
    pub identity_headers: Vec<HeaderName>,
}

/// Compiles every `[auth.NAME]` that passed validation: reads secrets, key files and JWKS files.
pub fn compile(
    config: &Config,
    base_dir: &Path,
    skip: &BTreeSet<String>,
    keys: &jwt::KeyRegistry,
) -> (AuthPolicies, Vec<ConfigError>) {
    let mut policies = AuthPolicies::default();
    let mut errors = Vec::new();
    let mut headers: Vec<HeaderName> = Vec::new();
    for (name, cfg) in &config.auth {
        let base = format!("auth.{name}");
        if skip.contains(&base) {
            continue;
        }
        let policy = match cfg.kind {
            AuthKind::Jwt => JwtPolicy::compile(name, cfg, base_dir, keys).map(AuthPolicy::Jwt),
            AuthKind::ApiKey => api_key::ApiKeyPolicy::load(cfg, base_dir)
                .map(AuthPolicy::ApiKey)
                .map_err(|msgs| {
                    msgs.into_iter()
                        .map(|m| ("keys_file".to_string(), m))
                        .collect()
                }),
        };
        match policy {
            Ok(policy) => {
                for h in policy.identity_headers() {
                    if !headers.contains(&h) {
                        headers.push(h);
                    }
                }
                policies.by_name.insert(name.clone(), Arc::new(policy));
            }
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|(key, msg)| ConfigError::new(format!("{base}.{key}"), msg)),
            ),
        }
    }
    policies.identity_headers = headers;
    (policies, errors)
}

/// The secret of an HS* policy, from `secret_env` or `secret_file`.
fn read_secret(cfg: &AuthConfig, base_dir: &Path) -> Result<Vec<u8>, (String, String)> {
    let secret = if let Some(var) = &cfg.secret_env {
        std::env::var(var).map(String::into_bytes).map_err(|_| {
            (
                "secret_env".to_string(),
                format!("environment variable {var} is not set"),
            )
        })?
    } else if let Some(file) = &cfg.secret_file {
        let path = base_dir.join(file);
        let mut bytes = std::fs::read(&path).map_err(|e| {
            (
                "secret_file".to_string(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        // Files written by editors and `echo` end with a newline that is not part of the secret.
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        bytes
    } else {
        return Err((
            "algorithms".into(),
            "HS* algorithms need secret_env or secret_file".into(),
        ));
    };
    let key = if cfg.secret_env.is_some() {
        "secret_env"
    } else {
        "secret_file"
    };
    // RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output. The
    // verifier checks it too; checking here lets the error name secret_env or secret_file.
    if secret.len() < jwt::MIN_SECRET_BYTES {
        return Err((
            key.into(),
            format!(
                "the secret is shorter than {} bytes; HMAC keys must be at least 256 bits",
                jwt::MIN_SECRET_BYTES
            ),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles the `[auth.*]` policies of `text`, with a 32-byte secret in `secret` and an
    /// empty keys file in `keys.toml` next to it.
    fn policies(text: &str) -> AuthPolicies {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), [b's'; jwt::MIN_SECRET_BYTES]).unwrap();
        std::fs::write(dir.path().join("keys.toml"), "").unwrap();
        let config = crate::config::parse(text).unwrap();
        let keys = jwt::KeyRegistry::new(Arc::new(crate::observe::Metrics::new()));
        let (policies, errors) = compile(&config, dir.path(), &BTreeSet::new(), &keys);
        assert!(errors.is_empty(), "{errors:?}");
        policies
    }

    fn stripped<'a>(policies: &'a AuthPolicies, name: &str) -> Option<&'a str> {
        policies.by_name[name]
            .credential_header_to_strip()
            .map(HeaderName::as_str)
    }

    #[test]
    fn credentials_stay_at_the_edge_by_default_for_api_keys_only() {
        let p = policies(
            r#"
[auth.keys]
type = "api_key"
keys_file = "keys.toml"
[auth.keys_forwarded]
type = "api_key"
header = "x-partner-key"
keys_file = "keys.toml"
forward_credentials = true
[auth.custom_header]
type = "api_key"
header = "X-Partner-Key"
keys_file = "keys.toml"
[auth.tokens]
type = "jwt"
algorithms = ["HS256"]
secret_file = "secret"
[auth.tokens_kept]
type = "jwt"
algorithms = ["HS256"]
secret_file = "secret"
forward_credentials = false
"#,
        );
        assert_eq!(stripped(&p, "keys"), Some("x-api-key"));
        assert_eq!(stripped(&p, "keys_forwarded"), None);
        assert_eq!(stripped(&p, "custom_header"), Some("x-partner-key"));
        assert_eq!(stripped(&p, "tokens"), None);
        assert_eq!(stripped(&p, "tokens_kept"), Some("authorization"));
    }
}
