//! TLS for Tollgate: the HTTPS listener's certificate (loaded with the config, swapped on reload,
//! handed to each new handshake) and the trust settings for upstreams reached over HTTPS.
//!
//! Pingora runs on OpenSSL (its `openssl` feature, a vendored and statically linked build), so the
//! types here are OpenSSL's, re-exported by `pingora::tls`.

mod identity;
mod listener;
mod trust;

pub use identity::TlsIdentity;
pub use listener::{add_https_listeners, listener_settings, LiveIdentity};
pub use trust::{load_ca_file, UpstreamTls};

use std::path::{Path, PathBuf};

/// A path from the config file: relative paths are relative to the config file's directory, so
/// a config works the same whatever directory Tollgate was started from.
pub fn config_relative(base_dir: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Reads a file named by the config key `key`, with an error message that names the resolved
/// path (the one actually read).
fn read_config_file(key: &str, path: &Path) -> Result<Vec<u8>, crate::config::ConfigError> {
    std::fs::read(path).map_err(|e| {
        crate::config::ConfigError::new(key, format!("cannot read \"{}\": {e}", path.display()))
    })
}
