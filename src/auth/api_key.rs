//! `type = "api_key"` policies: partners send a key in a header; the gateway knows only the
//! SHA-256 of each key (from `keys_file`), so the file leaks no usable secret.

use super::{Denial, Identity};
use crate::config::{AuthConfig, ConfigError, Locator};
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Keys longer than this are refused without hashing: no legitimate key is that long.
const MAX_KEY_BYTES: usize = 1024;

/// A compiled API-key policy.
#[derive(Debug)]
pub struct ApiKeyPolicy {
    /// Request header that carries the key.
    pub header: HeaderName,
    /// Upstream header that carries the consumer name.
    pub forward: HeaderName,
    /// Whether the key itself goes upstream too (`forward_credentials`, default false: a
    /// backend that never sees partner keys cannot leak them).
    pub forward_credentials: bool,
    consumers: Vec<Consumer>,
}

#[derive(Debug)]
struct Consumer {
    name: Arc<str>,
    digest: [u8; 32],
}

impl ApiKeyPolicy {
    /// Reads the keys file (relative to the config's directory). `Err` carries messages for the
    /// `keys_file` key, each naming the line in the keys file.
    pub fn load(cfg: &AuthConfig, base_dir: &Path) -> Result<ApiKeyPolicy, Vec<String>> {
        let header = header_or(cfg.header.as_deref(), "x-api-key");
        let forward = header_or(cfg.forward_consumer.as_deref(), "x-consumer");
        let file = cfg.keys_file.as_deref().unwrap_or_default();
        let path = base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        let consumers = parse_keys(&text).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| format!("{}:{e}", path.display()))
                .collect::<Vec<_>>()
        })?;
        Ok(ApiKeyPolicy {
            header,
            forward,
            forward_credentials: cfg.forward_credentials.unwrap_or(false),
            consumers,
        })
    }

    /// Finds the consumer whose key the request carries. Every consumer's digest is compared in
    /// constant time and the scan never stops early, so timing tells nothing about which digest
    /// came close.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Denial> {
        let mut values = headers.get_all(&self.header).iter();
        let Some(key) = values.next() else {
            return Err(Denial::Missing);
        };
        if values.next().is_some() || key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(Denial::Invalid("malformed"));
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found: Option<&Consumer> = None;
        for consumer in &self.consumers {
            if bool::from(consumer.digest.ct_eq(&digest)) {
                found = Some(consumer);
            }
        }
        match found {
            Some(c) => Ok(Identity {
                consumer: Some(c.name.clone()),
                claims: None,
            }),
            None => Err(Denial::Invalid("unknown_key")),
        }
    }

    pub fn consumers(&self) -> usize {
        self.consumers.len()
    }
}

/// A header name from config (validation already checked it), or the default.
fn header_or(name: Option<&str>, default: &'static str) -> HeaderName {
    name.and_then(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .unwrap_or(HeaderName::from_static(default))
}

/// Parses `consumer = "<sha256 hex>"` lines. Errors are `LINE:COL: message`.
fn parse_keys(text: &str) -> Result<Vec<Consumer>, Vec<String>> {
    let locate = |key: &str, message: String| {
        let e = ConfigError {
            location: Locator::new(text).locate(key),
            ..ConfigError::new(key, message)
        };
        e.to_string()
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, col) = e
            .span()
            .map(|s| crate::config::line_col(text, s.start))
            .unwrap_or((1, 1));
        vec![format!(
            "{line}:{col}: TOML syntax error: {}",
            e.message().trim()
        )]
    })?;
    let mut errors = Vec::new();
    let mut consumers: Vec<Consumer> = Vec::with_capacity(table.len());
    for (name, value) in &table {
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
        if !name_ok {
            errors.push(locate(
                name,
                "consumer names are 1-128 letters, digits, '_', '-', '.' or '@' (they are sent upstream in a header)".into(),
            ));
            continue;
        }
        let digest = value
            .as_str()
            .and_then(|s| hex::decode(s).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
        let Some(digest) = digest else {
            errors.push(locate(
                name,
                "expected the SHA-256 of the key as 64 hex digits (e.g. `printf %s KEY | sha256sum`)".into(),
            ));
            continue;
        };
        if let Some(other) = consumers.iter().find(|c| c.digest == digest) {
            errors.push(locate(
                name,
                format!(
                    "has the same key as \"{}\"; every consumer needs its own key",
                    other.name
                ),
            ));
            continue;
        }
        consumers.push(Consumer {
            name: Arc::from(name.as_str()),
            digest,
        });
    }
    if errors.is_empty() {
        Ok(consumers)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_hex(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn policy(text: &str) -> ApiKeyPolicy {
        ApiKeyPolicy {
            header: HeaderName::from_static("x-api-key"),
            forward: HeaderName::from_static("x-consumer"),
            forward_credentials: false,
            consumers: parse_keys(text).unwrap(),
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-api-key", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn known_key_names_its_consumer() {
        let p = policy(&format!(
            "acme = \"{}\"\nglobex = \"{}\"\n",
            digest_hex("k-acme"),
            digest_hex("k-globex")
        ));
        let id = p.authenticate(&headers(&["k-globex"])).ok().unwrap();
        assert_eq!(id.consumer.as_deref(), Some("globex"));
        assert!(matches!(
            p.authenticate(&headers(&["k-other"])),
            Err(Denial::Invalid("unknown_key"))
        ));
        assert!(matches!(
            p.authenticate(&headers(&[])),
            Err(Denial::Missing)
        ));
        assert!(matches!(
            p.authenticate(&headers(&["k-acme", "k-acme"])),
            Err(Denial::Invalid("malformed"))
        ));
        let huge = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            p.authenticate(&headers(&[&huge])),
            Err(Denial::Invalid("malformed"))
        ));
    }

    #[test]
    fn bad_lines_are_reported_with_their_line() {
        let text = format!(
            "acme = \"{}\"\nbad = \"xyz\"\nsame = \"{}\"\n\"sp ace\" = \"{}\"\n",
            digest_hex("a"),
            digest_hex("a"),
            digest_hex("b")
        );
        let errors = parse_keys(&text).err().unwrap();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("2:") && errors[0].contains("64 hex"),
            "{errors:?}"
        );
        assert!(errors
            .iter()
            .any(|e| e.starts_with("3:") && e.contains("same key as \"acme\"")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("4:") && e.contains("consumer names")));
    }
}
