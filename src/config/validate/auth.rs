//! Checks of `[auth.NAME]` policies and of the routes that use them. File contents (secrets,
//! key files, JWKS files) are read later, when the snapshot is compiled.

use super::Validator;
use crate::config::types::{AuthConfig, AuthKind, Config, RouteConfig};

/// Algorithms a JWT policy may list. `none` is deliberately absent: it can never be configured.
pub const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Headers a policy may not claim for forwarding beside the gateway's own
/// (`config::reserved`): the client's credentials, which the policy has just verified.
const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "cookie"];

impl Validator {
    pub(super) fn auth(&mut self, name: &str, a: &AuthConfig) {
        let base = format!("auth.{name}");
        self.name(&base, name);
        let jwt_keys = [
            ("issuer", a.issuer.is_some()),
            ("audiences", a.audiences.is_some()),
            ("algorithms", a.algorithms.is_some()),
            ("jwks_url", a.jwks_url.is_some()),
            ("jwks_file", a.jwks_file.is_some()),
            ("jwks_ca_file", a.jwks_ca_file.is_some()),
            ("secret_env", a.secret_env.is_some()),
            ("secret_file", a.secret_file.is_some()),
            ("kid", a.kid.is_some()),
            ("jwks_refresh", a.jwks_refresh.is_some()),
            ("leeway", a.leeway.is_some()),
            ("forward_claims", a.forward_claims.is_some()),
            ("token_cache_entries", a.token_cache_entries.is_some()),
        ];
        let api_key_keys = [
            ("header", a.header.is_some()),
            ("keys_file", a.keys_file.is_some()),
            ("forward_consumer", a.forward_consumer.is_some()),
        ];
        let (foreign, kind) = match a.kind {
            AuthKind::Jwt => (&api_key_keys[..], "type = \"api_key\""),
            AuthKind::ApiKey => (&jwt_keys[..], "type = \"jwt\""),
        };
        for (key, _) in foreign.iter().filter(|(_, set)| *set) {
            self.err(format!("{base}.{key}"), format!("only used with {kind}"));
        }
        match a.kind {
            AuthKind::Jwt => self.jwt(&base, a),
            AuthKind::ApiKey => self.api_key(&base, a),
        }
    }

    fn jwt(&mut self, base: &str, a: &AuthConfig) {
        let algorithms = a.algorithms.as_deref().unwrap_or_default();
        if algorithms.is_empty() {
            self.err(
                format!("{base}.algorithms"),
                "list the accepted algorithms, like [\"RS256\"]",
            );
        }
        let mut hmac = false;
        let mut public_key = false;
        for (i, alg) in algorithms.iter().enumerate() {
            let path = format!("{base}.algorithms[{i}]");
            if alg.eq_ignore_ascii_case("none") {
                self.err(path, "\"none\" (unsigned tokens) can never be accepted");
            } else if !JWT_ALGORITHMS.contains(&alg.as_str()) {
                self.err(
                    path,
                    format!("\"{alg}\" is not one of {}", JWT_ALGORITHMS.join(", ")),
                );
            } else if alg.starts_with("HS") {
                hmac = true;
            } else {
                public_key = true;
            }
        }
        if hmac && public_key {
            self.err(
                format!("{base}.algorithms"),
                "HMAC (HS*) and public-key algorithms cannot share a policy: a public key must never be usable as an HMAC secret; define two policies",
            );
        }
        let jwks = [("jwks_url", &a.jwks_url), ("jwks_file", &a.jwks_file)];
        let secret = [
            ("secret_env", &a.secret_env),
            ("secret_file", &a.secret_file),
        ];
        let jwks_set: Vec<&str> = jwks
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        let secret_set: Vec<&str> = secret
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        if jwks_set.len() + secret_set.len() > 1 {
            let all: Vec<&str> = jwks_set.iter().chain(&secret_set).copied().collect();
            self.err(
                base.to_string(),
                format!("set one key source, not {}", all.join(" and ")),
            );
        } else if hmac && secret_set.is_empty() {
            self.err(
                base.to_string(),
                "HS* algorithms need secret_env or secret_file",
            );
        } else if public_key && jwks_set.is_empty() {
            self.err(
                base.to_string(),
                "public-key algorithms need jwks_url or jwks_file",
            );
        } else if hmac && !jwks_set.is_empty() || public_key && !secret_set.is_empty() {
            self.err(
                base.to_string(),
                "the key source does not fit the algorithms: HS* use secret_env/secret_file, the others jwks_url/jwks_file",
            );
        }
        self.secret_kid(base, a.kid.as_deref(), !jwks_set.is_empty());
        if let Some(url) = &a.jwks_url {
            let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                self.err(
                    format!("{base}.jwks_url"),
                    format!("\"{url}\" is not an http:// or https:// URL"),
                );
            }
        }
        let https_url = a
            .jwks_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        if a.jwks_ca_file.is_some() && !https_url {
            self.err(
                format!("{base}.jwks_ca_file"),
                "only used with an https:// jwks_url",
            );
        }
        if let Some(env) = &a.secret_env {
            if env.is_empty() {
                self.err(
                    format!("{base}.secret_env"),
                    "names no environment variable",
                );
            }
        }
        for (key, list) in [("audiences", &a.audiences)] {
            if list
                .as_ref()
                .is_some_and(|l| l.is_empty() || l.iter().any(String::is_empty))
            {
                self.err(
                    format!("{base}.{key}"),
                    "must not be empty or hold empty strings; omit it to accept any audience",
                );
            }
        }
        if a.issuer.as_deref() == Some("") {
            self.err(
                format!("{base}.issuer"),
                "must not be empty; omit it to accept any issuer",
            );
        }
        if let Some(r) = a.jwks_refresh {
            if r.get() < std::time::Duration::from_secs(10) {
                self.err(format!("{base}.jwks_refresh"), "must be at least 10s");
            }
        }
        if let Some(l) = a.leeway {
            if l.get() > std::time::Duration::from_secs(300) {
                self.err(format!("{base}.leeway"), "must be at most 5m");
            }
        }
        if let Some(n) = a.token_cache_entries {
            if n > 10_000_000 {
                self.err(
                    format!("{base}.token_cache_entries"),
                    format!("{n} is out of range 0..=10000000"),
                );
            }
        }
        for (claim, header) in a.forward_claims.iter().flatten() {
            let path = format!("{base}.forward_claims.{claim}");
            if claim.is_empty() {
                self.err(path.clone(), "claim name is empty");
            }
            self.identity_header(&path, header);
        }
    }

    /// `kid` pins the one kid a secret-based policy accepts. A JWKS publishes a kid with each
    /// key and tokens are matched against those, so a policy-wide kid there would mean nothing.
    fn secret_kid(&mut self, base: &str, kid: Option<&str>, jwks: bool) {
        let path = format!("{base}.kid");
        match kid {
            Some(_) if jwks => self.err(
                path,
                "only used with a secret (secret_env or secret_file); with jwks_url or jwks_file each token's kid is matched against the keys the JWKS publishes",
            ),
            Some("") => self.err(path, "must not be empty; omit it to ignore the token's kid"),
            _ => {}
        }
    }

    fn api_key(&mut self, base: &str, a: &AuthConfig) {
        if a.keys_file.is_none() {
            self.err(
                format!("{base}.keys_file"),
                "missing: an api_key policy needs a keys_file",
            );
        }
        if let Some(h) = &a.header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.err(
                    format!("{base}.header"),
                    format!("\"{h}\" is not a valid header name"),
                );
            }
        }
        if let Some(h) = &a.forward_consumer {
            self.identity_header(&format!("{base}.forward_consumer"), h);
        }
    }

    /// A header the gateway sets from a verified identity (and strips from every client request).
    fn identity_header(&mut self, path: &str, header: &str) {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            self.err(path, format!("\"{header}\" is not a valid header name"));
        } else if crate::config::reserved::reserved(header).is_some()
            || CREDENTIAL_HEADERS.contains(&header.to_ascii_lowercase().as_str())
        {
            self.err(
                path,
                format!("\"{header}\" is a header the gateway or HTTP itself manages; pick another name"),
            );
        }
    }

    /// A route's `auth` and `scopes`.
    pub(super) fn route_auth(&mut self, config: &Config, base: &str, r: &RouteConfig) {
        let policy = match &r.auth {
            Some(name) => {
                self.reference(
                    config,
                    &format!("{base}.auth"),
                    "auth",
                    name,
                    config.auth.keys(),
                );
                config.auth.get(name)
            }
            None => None,
        };
        let jwt = policy.is_some_and(|p| p.kind == AuthKind::Jwt);
        let claim_hash = r
            .upstream
            .as_ref()
            .and_then(|u| config.upstreams.get(u))
            .and_then(|u| u.hash_key.as_deref())
            .and_then(|k| k.strip_prefix("claim:"));
        let dangling = r.auth.is_some() && policy.is_none();
        if let (Some(claim), false, false) = (claim_hash, jwt, dangling) {
            self.err(
                format!("{base}.upstream"),
                format!("the upstream hashes on the JWT claim \"{claim}\", but this route has no auth policy of type \"jwt\""),
            );
        }
        let Some(scopes) = &r.scopes else { return };
        let path = format!("{base}.scopes");
        match policy {
            _ if r.auth.is_none() => self.err(path, "needs an `auth` policy of type \"jwt\""),
            Some(p) if p.kind != AuthKind::Jwt => self.err(
                path,
                "scopes come from JWT claims; this route's auth policy is an api_key policy",
            ),
            _ => {}
        }
        for (i, s) in scopes.iter().enumerate() {
            if s.is_empty()
                || s.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                self.err(
                    format!("{base}.scopes[{i}]"),
                    format!("\"{s}\" is not a scope name"),
                );
            }
        }
    }
}
