//! The HTTPS listener's identity: the certificate chain and private key of `[server.tls]`, read
//! and checked (PEM, key matches the leaf certificate) when the config is compiled, so a broken
//! certificate is rejected like any other bad config and the running one keeps serving.

use super::{config_relative, read_config_file};
use crate::config::{ConfigError, ServerTlsConfig};
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;
use std::path::Path;

/// A certificate chain (leaf first) with the leaf's private key.
pub struct TlsIdentity {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsIdentity")
            .field("leaf_subject", &self.chain[0].subject_name())
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads `cert_file` and `key_file`, relative to `base_dir` unless absolute. Errors name
    /// `server.tls.cert_file` / `server.tls.key_file`.
    pub fn load(base_dir: &Path, cfg: &ServerTlsConfig) -> Result<TlsIdentity, Vec<ConfigError>> {
        const CERT: &str = "server.tls.cert_file";
        const KEY: &str = "server.tls.key_file";
        let cert_path = config_relative(base_dir, &cfg.cert_file);
        let key_path = config_relative(base_dir, &cfg.key_file);
        let chain =
            read_config_file(CERT, &cert_path).and_then(|pem| match X509::stack_from_pem(&pem) {
                Ok(chain) if !chain.is_empty() => Ok(chain),
                Ok(_) => Err(ConfigError::new(
                    CERT,
                    format!(
                        "\"{}\" holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                        cert_path.display()
                    ),
                )),
                Err(e) => Err(ConfigError::new(
                    CERT,
                    format!(
                        "\"{}\" is not a valid PEM certificate chain: {e}",
                        cert_path.display()
                    ),
                )),
            });
        let key = read_config_file(KEY, &key_path).and_then(|pem| {
            PKey::private_key_from_pem(&pem).map_err(|e| {
                ConfigError::new(
                    KEY,
                    format!(
                        "\"{}\" is not an unencrypted PEM private key: {e}",
                        key_path.display()
                    ),
                )
            })
        });
        match (chain, key) {
            (Ok(chain), Ok(key)) => {
                let matches = chain[0]
                    .public_key()
                    .map(|public| key.public_eq(&public))
                    .unwrap_or(false);
                if matches {
                    Ok(TlsIdentity { chain, key })
                } else {
                    Err(vec![ConfigError::new(
                        KEY,
                        format!(
                            "the key in \"{}\" does not match the first certificate in \"{}\"",
                            key_path.display(),
                            cert_path.display()
                        ),
                    )])
                }
            }
            (chain, key) => Err([chain.err(), key.err()].into_iter().flatten().collect()),
        }
    }
}
