//! Loading a JWKS document from its source: an HTTP(S) GET with a deadline and a size cap
//! enforced while the body streams in, or a file read. Only the configured location is ever
//! fetched: `jku`, `x5u` and `jwk` headers of tokens are ignored.

use super::keys::KeySet;
use std::path::Path;
use std::time::Duration;

/// A JWKS larger than this is refused (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The HTTP client every key store shares (one TLS setup). Redirects are followed a few times
/// (providers move documents behind CDNs). Idle connections are not kept: loads are minutes
/// apart, and they run on whichever runtime asks (start-up, a request, the background service),
/// so a pooled connection could outlive the runtime that drives it.
pub fn http_client() -> Result<reqwest::Client, String> {
    client_builder()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A client that trusts only the CA certificates in `pem` (not the system roots), for an
/// identity provider served with an internal CA. Err names the `jwks_ca_file` problem.
pub fn http_client_trusting(pem: &[u8]) -> Result<reqwest::Client, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("jwks_ca_file: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("jwks_ca_file: holds no certificate".into());
    }
    let mut builder = client_builder().tls_built_in_root_certs(false);
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("jwks_ca_file: cannot use these certificates: {e}"))
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION"), " (jwks)"))
        .redirect(reqwest::redirect::Policy::limited(3))
        .connect_timeout(Duration::from_secs(3))
}

/// GETs `url` and parses the body as a JWKS, all within `timeout`.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<KeySet, String> {
    let body = tokio::time::timeout(timeout, fetch_body(client, url))
        .await
        .map_err(|_| format!("no complete answer within {timeout:?}"))??;
    KeySet::from_jwks(&body)
}

async fn fetch_body(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(url)
        .header(
            http::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .send()
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let too_big = || format!("body larger than {MAX_JWKS_BYTES} bytes");
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the body failed: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads and parses a JWKS file (blocking; small).
pub fn read_file(path: &Path) -> Result<KeySet, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut body = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "{} is larger than {MAX_JWKS_BYTES} bytes",
            path.display()
        ));
    }
    KeySet::from_jwks(&body).map_err(|e| format!("{}: {e}", path.display()))
}

/// reqwest's top-level errors say little ("error sending request"); the causes say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
