//! Helpers for auth tests: API-key files, denial assertions and the auth-decision metric.

use super::answer::{assert_problem, Answer};
use super::prom::metric;
use super::GatewayHandle;

/// An API key as a keys file stores it: its SHA-256, hex.
pub fn key_digest(key: &str) -> String {
    super::sha256_hex(key)
}

/// Writes (or rewrites) `partners.toml` in `dir` with one `consumer = "<digest>"` line per
/// (consumer, key); returns its absolute path, for `keys_file` in a config.
pub fn keys_file(dir: &tempfile::TempDir, consumers: &[(&str, &str)]) -> String {
    let path = dir.path().join("partners.toml");
    let text: String = consumers
        .iter()
        .map(|(name, key)| format!("{name} = \"{}\"\n", key_digest(key)))
        .collect();
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Asserts a gateway-made 401/403: problem+json, a request id, the challenge, and a body that
/// says nothing about the credentials beyond the status.
pub fn assert_denied(a: &Answer, status: u16, challenge: &str) {
    assert_problem(a, status);
    assert_eq!(a.header("www-authenticate"), Some(challenge), "{a:?}");
    assert!(
        a.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "{a:?}"
    );
}

/// `tollgate_auth_decisions_total{policy,result}`.
pub async fn decisions(gw: &GatewayHandle, policy: &str, result: &str) -> f64 {
    metric(
        gw,
        "tollgate_auth_decisions_total",
        &[("policy", policy), ("result", result)],
    )
    .await
}
