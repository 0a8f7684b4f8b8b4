//! HTTPS to upstream targets (`tls = true`): the name each target's certificate must carry (SNI
//! and hostname verification) and the CAs trusted for it (`ca_file`, else the system roots).
//! Certificate and hostname verification are always on.

use super::{config_relative, read_config_file};
use pingora::prelude::HttpPeer;
use pingora::tls::x509::X509;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

/// An upstream's compiled TLS settings.
#[derive(Clone)]
pub struct UpstreamTls {
    /// `sni`; absent: each target's host name.
    pub sni: Option<String>,
    /// `ca_file`'s certificates; absent: the system roots.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// Identifies the trust settings in Pingora's connection pool, whose key does not include
    /// the CA: a reload that changes `ca_file` must not reuse connections verified by the old one.
    pool_key: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("ca_certs", &self.ca.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl UpstreamTls {
    /// Compiles `sni` and `ca_file` (read now, relative to `base_dir`). Errors are
    /// (key suffix, message) pairs like the rest of upstream compilation.
    pub fn compile(
        base_dir: &Path,
        sni: Option<&str>,
        ca_file: Option<&str>,
    ) -> Result<UpstreamTls, (String, String)> {
        let ca = match ca_file {
            Some(file) => Some(
                load_ca_file(&config_relative(base_dir, file))
                    .map_err(|msg| ("ca_file".to_string(), msg))?,
            ),
            None => None,
        };
        let mut h = DefaultHasher::new();
        sni.hash(&mut h);
        if let Some(certs) = &ca {
            for c in certs.iter() {
                c.to_der().unwrap_or_default().hash(&mut h);
            }
        }
        Ok(UpstreamTls {
            sni: sni.map(str::to_string),
            ca: ca.map(|c| Arc::new(c.into_boxed_slice())),
            pool_key: h.finish(),
        })
    }

    /// Identifies the SNI and the CA certificates' contents (not just the file name).
    pub fn fingerprint(&self) -> u64 {
        self.pool_key
    }

    /// Turns a plain peer for the target labelled `host:port` into an HTTPS one. The SNI, which
    /// is also the name the certificate must match, is `sni` or else the target's host (config
    /// validation makes sure it is never an IP address or empty: an empty SNI would make Pingora
    /// skip verification).
    pub fn apply(&self, peer: &mut HttpPeer, target_label: &str) {
        let sni = match &self.sni {
            Some(s) => s.clone(),
            None => target_label
                .rsplit_once(':')
                .map_or(target_label, |(host, _)| host)
                .to_string(),
        };
        peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
        peer.sni = sni;
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer.options.ca = self.ca.clone();
        peer.group_key = self.pool_key;
    }
}

/// Reads a PEM file of one or more CA certificates.
pub fn load_ca_file(path: &Path) -> Result<Vec<X509>, String> {
    let pem = read_config_file("", path).map_err(|e| e.message)?;
    match X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!(
            "\"{}\" holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )),
        Err(e) => Err(format!(
            "\"{}\" is not a valid PEM certificate list: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_is_the_configured_name_or_the_target_host() {
        let dir = Path::new(".");
        let by_host = UpstreamTls::compile(dir, None, None).unwrap();
        let mut peer = HttpPeer::new("127.0.0.1:8443", false, String::new());
        by_host.apply(&mut peer, "users.internal:8443");
        assert!(peer.is_tls());
        assert_eq!(peer.sni, "users.internal");
        assert!(peer.options.verify_cert && peer.options.verify_hostname);
        assert!(peer.options.ca.is_none(), "system roots");

        let named = UpstreamTls::compile(dir, Some("api.internal"), None).unwrap();
        named.apply(&mut peer, "users.internal:8443");
        assert_eq!(peer.sni, "api.internal");
        assert_ne!(by_host.fingerprint(), named.fingerprint());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error_on_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, msg) = UpstreamTls::compile(dir.path(), None, Some("nope.pem")).unwrap_err();
        assert_eq!(key, "ca_file");
        assert!(msg.contains("cannot read"), "{msg}");
        std::fs::write(dir.path().join("empty.pem"), "no certificate here\n").unwrap();
        let (_, msg) = UpstreamTls::compile(dir.path(), None, Some("empty.pem")).unwrap_err();
        assert!(msg.contains("holds no PEM certificate"), "{msg}");
    }
}
