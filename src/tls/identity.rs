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
            // A callback that supplies no passphrase: an encrypted key is an error, never a
            // prompt on the terminal (OpenSSL's default) that would hang `check` or a reload.
            PKey::private_key_from_pem_callback(&pem, |_| Ok(0)).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;
    // The `openssl` crate (a dev-dependency, the same build Pingora links) for what
    // `pingora::tls` does not re-export.
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::symm::Cipher;
    use openssl::x509::X509NameBuilder;

    fn key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn self_signed(key: &PKey<Private>) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn load(dir: &Path, cert: &[u8], key: &[u8]) -> Result<TlsIdentity, Vec<ConfigError>> {
        std::fs::write(dir.join("c.pem"), cert).unwrap();
        std::fs::write(dir.join("k.pem"), key).unwrap();
        let cfg = ServerTlsConfig {
            listen: vec![],
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
        };
        TlsIdentity::load(dir, &cfg)
    }

    #[test]
    fn a_chain_and_its_key_load() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let mut chain = self_signed(&k).to_pem().unwrap();
        chain.extend(self_signed(&key()).to_pem().unwrap());
        let id = load(dir.path(), &chain, &k.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert_eq!(id.chain.len(), 2);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_on_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = self_signed(&key()).to_pem().unwrap();
        let errs = load(
            dir.path(),
            &cert,
            &key().private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "server.tls.key_file");
        assert!(errs[0].message.contains("does not match"), "{}", errs[0]);
    }

    #[test]
    fn an_encrypted_key_is_refused_without_asking_for_a_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let encrypted = k
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        let errs = load(dir.path(), &self_signed(&k).to_pem().unwrap(), &encrypted).unwrap_err();
        assert_eq!(errs[0].path, "server.tls.key_file");
        assert!(errs[0].message.contains("unencrypted"), "{}", errs[0]);
    }

    #[test]
    fn both_files_are_reported_when_both_are_bad() {
        let dir = tempfile::tempdir().unwrap();
        let errs = load(dir.path(), b"not pem", b"not pem").unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["server.tls.cert_file", "server.tls.key_file"]);
    }
}
