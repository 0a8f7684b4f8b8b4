//! Files a config names besides itself (the HTTPS certificate and key, upstream and Redis CA
//! files, API-key files, JWT secrets and JWKS files): their
//! contents are part of the config, so a reload with the same TOML text but a renewed
//! certificate is a change, and the same broken certificate is not re-reported on every event.

use crate::config::Config;
use crate::tls::config_relative;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

/// The files named by one config and a fingerprint of their contents when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferencedFiles {
    pub paths: Vec<PathBuf>,
    /// Hash of every file's contents (or of the read error), in `paths` order.
    pub fingerprint: u64,
}

impl ReferencedFiles {
    /// Reads the files `config` names, relative paths resolved against `base_dir`. Reading them
    /// before they are loaded means a file replaced in between shows up as a change next time.
    pub fn of(base_dir: &Path, config: &Config) -> ReferencedFiles {
        let mut names: Vec<&str> = Vec::new();
        if let Some(tls) = &config.server.tls {
            names.extend([tls.cert_file.as_str(), tls.key_file.as_str()]);
        }
        names.extend(
            config
                .upstreams
                .values()
                .filter(|u| u.tls)
                .filter_map(|u| u.ca_file.as_deref()),
        );
        if let Some(c) = &config.cluster {
            names.extend(
                [&c.ca_file, &c.cert_file, &c.key_file]
                    .into_iter()
                    .filter_map(|f| f.as_deref()),
            );
        }
        for policy in config.auth.values() {
            names.extend(
                [
                    &policy.keys_file,
                    &policy.secret_file,
                    &policy.jwks_file,
                    &policy.jwks_ca_file,
                ]
                .into_iter()
                .filter_map(|f| f.as_deref()),
            );
        }
        let paths: Vec<PathBuf> = names
            .into_iter()
            .map(|n| config_relative(base_dir, n))
            .collect();
        let mut h = DefaultHasher::new();
        for path in &paths {
            path.hash(&mut h);
            match std::fs::read(path) {
                Ok(bytes) => bytes.hash(&mut h),
                Err(e) => e.kind().hash(&mut h),
            }
        }
        ReferencedFiles {
            paths,
            fingerprint: h.finish(),
        }
    }
}
