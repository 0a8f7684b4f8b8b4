//! PLACEHOLDER (local only, replaced by the jwt branch at merge): the agreed interface.
use std::sync::Arc;
pub struct JwtSettings {
    pub policy: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub keys: KeySource,
    pub jwks_refresh: std::time::Duration,
    pub leeway: std::time::Duration,
    pub cache_entries: u64,
}
pub enum KeySource {
    JwksUrl(String),
    JwksFile(std::path::PathBuf),
    Secret(Vec<u8>),
}
#[derive(Clone)]
pub struct JwtVerifier;
pub struct Claims(pub serde_json::Map<String, serde_json::Value>);
impl Claims {
    pub fn claim_as_header_value(&self, _name: &str) -> Option<String> {
        None
    }
    pub fn subject(&self) -> Option<&str> {
        None
    }
    pub fn has_scopes(&self, _s: &[String]) -> bool {
        false
    }
}
pub enum Rejection {
    Malformed,
}
impl Rejection {
    pub fn label(&self) -> &'static str {
        "malformed"
    }
}
pub struct KeyRegistry;
impl KeyRegistry {
    pub fn new(_m: Arc<crate::observe::Metrics>) -> Self {
        KeyRegistry
    }
}
impl JwtVerifier {
    pub fn new(_s: JwtSettings, _r: &KeyRegistry) -> Result<JwtVerifier, String> {
        Ok(JwtVerifier)
    }
    pub async fn verify(&self, _t: &str) -> Result<Arc<Claims>, Rejection> {
        Err(Rejection::Malformed)
    }
}
