//! Configuration: the TOML file format (`types`), its units, parsing that reports every error with
//! its key path and line, and semantic validation. Nothing here knows about runtime types; the
//! `snapshot` module compiles a validated [`Config`] into what the proxy uses.

mod diagnostic;
mod error;
pub mod reserved;
pub mod schema;
mod types;
mod units;
mod validate;

pub use validate::{cache_capacity, parse_proxy_net, DEFAULT_CACHE_CAPACITY, DEFAULT_MAX_ENTRY};

pub use diagnostic::{Diagnostic, Severity};
pub use error::{line_col, ConfigError, ConfigErrors, ConfigWarning, Locator};
pub use types::*;
pub use units::{parse_duration, parse_size, DurationStr, SizeStr};

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A config file as read from disk, kept with its text so errors can be located and the loaded
/// config can be identified (hash) on the admin endpoint.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source {
                path: path.to_path_buf(),
                text,
            }),
            Err(e) => Err(ConfigErrors {
                source: path.display().to_string(),
                errors: vec![ConfigError::new(
                    "",
                    format!("cannot read config file: {e}"),
                )],
            }),
        }
    }

    /// SHA-256 of the file text, hex: identifies a config version on `/config` and in logs.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// Directory that relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Wraps errors found in this source, locating each key path in the text.
    pub fn errors(&self, mut errors: Vec<ConfigError>) -> ConfigErrors {
        Locator::new(&self.text).locate_all(&mut errors);
        ConfigErrors {
            source: self.path.display().to_string(),
            errors,
        }
    }

    /// Locates each warning's key path in the text, then orders them as they appear in the file.
    pub fn warnings(&self, mut warnings: Vec<ConfigWarning>) -> Vec<ConfigWarning> {
        if warnings.is_empty() {
            return warnings;
        }
        Locator::new(&self.text).locate_warnings(&mut warnings);
        // Stable, and unlocated ones (none expected) last.
        warnings.sort_by_key(|w| w.location.unwrap_or((usize::MAX, 0)));
        warnings
    }
}

/// Parses and validates config text. Returns every problem found, each with its key path (and
/// location, once passed through [`Source::errors`]).
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    match parse_partial(text) {
        Ok((config, errors)) if errors.is_empty() => Ok(config),
        Ok((_, errors)) | Err(errors) => Err(errors),
    }
}

/// Like [`parse`], but when the file is valid TOML it also returns what could be read of it next
/// to the errors, so later stages (compile) can still check the entries that parsed and every
/// error is reported in one go. `Err` only for a TOML syntax error.
pub fn parse_partial(text: &str) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let location = e.span().map(|s| line_col(text, s.start));
            return Err(vec![ConfigError {
                path: String::new(),
                location,
                message: format!("TOML syntax error: {}", e.message().trim()),
            }]);
        }
    };
    let mut errors = Vec::new();
    let mut config = Config::default();
    for (key, value) in table {
        match key.as_str() {
            "server" => {
                if let Some(v) = section(&key, value, &mut errors) {
                    config.server = v;
                }
            }
            "log" => {
                if let Some(v) = section(&key, value, &mut errors) {
                    config.log = v;
                }
            }
            "upstreams" => {
                config.upstreams =
                    named_tables(&key, value, &mut errors, &mut config.failed_entries)
            }
            "auth" => {
                config.auth = named_tables(&key, value, &mut errors, &mut config.failed_entries)
            }
            "routes" => {
                config.routes = named_tables(&key, value, &mut errors, &mut config.failed_entries)
            }
            "rate_limits" => {
                config.rate_limits =
                    named_tables(&key, value, &mut errors, &mut config.failed_entries)
            }
            "caches" => {
                config.caches = named_tables(&key, value, &mut errors, &mut config.failed_entries)
            }
            "cluster" => {
                config.cluster = section(&key, value, &mut errors);
                if config.cluster.is_none() {
                    config.failed_entries.insert(key);
                }
            }
            "tracing" => {
                config.tracing = section(&key, value, &mut errors);
                if config.tracing.is_none() {
                    config.failed_entries.insert(key);
                }
            }
            _ => errors.push(ConfigError::new(
                key.clone(),
                format!(
                    "unknown section `{key}`; expected one of: {}",
                    SECTIONS.join(", ")
                ),
            )),
        }
    }
    errors.extend(validate::validate(&config));
    Ok((config, errors))
}

/// Deserializes one section, recording a key-path error instead of failing the whole file.
///
/// serde stops at the first bad key of a table, so after each error the offending key is taken
/// out and the table deserialized again, until it passes or the error is not about one of its
/// keys: every bad key is reported, not just the first. (Bounded: each round removes a key.)
fn section<T: DeserializeOwned>(
    prefix: &str,
    mut value: toml::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return removed.is_empty().then_some(v),
            Err(e) => e,
        };
        let message = clean_serde_message(e.inner());
        // A required key we took out ourselves was already reported.
        if removed
            .iter()
            .any(|k| message == format!("missing field `{k}`"))
        {
            return None;
        }
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        errors.push(ConfigError::new(path, message));
        let Some(serde_path_to_error::Segment::Map { key }) = e.path().iter().next() else {
            return None;
        };
        let taken_out = match &mut value {
            toml::Value::Table(t) => t.remove(key).is_some(),
            _ => false,
        };
        if !taken_out {
            return None;
        }
        removed.push(key.clone());
    }
}

/// Deserializes a table of named tables (`[routes.NAME]`), each one on its own.
fn named_tables<T: DeserializeOwned>(
    prefix: &str,
    value: toml::Value,
    errors: &mut Vec<ConfigError>,
    failed: &mut std::collections::BTreeSet<String>,
) -> std::collections::BTreeMap<String, T> {
    let mut out = std::collections::BTreeMap::new();
    let toml::Value::Table(table) = value else {
        errors.push(ConfigError::new(
            prefix,
            format!("expected a table of named entries, like [{prefix}.NAME]"),
        ));
        return out;
    };
    for (name, value) in table {
        let path = format!("{prefix}.{name}");
        match section(&path, value, errors) {
            Some(v) => {
                out.insert(name, v);
            }
            None => {
                failed.insert(path);
            }
        }
    }
    out
}

/// toml's messages can carry a snippet of the file; keep only the message itself.
fn clean_serde_message(e: &toml::de::Error) -> String {
    e.message().trim().to_string()
}

/// Reads, parses and validates a file: what `tollgate check` and every reload run.
pub fn load(path: &Path) -> Result<(Source, Config), ConfigErrors> {
    let source = Source::read(path)?;
    match parse(&source.text) {
        Ok(config) => Ok((source, config)),
        Err(errors) => Err(source.errors(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => vec![],
            Err(mut errs) => {
                Locator::new(text).locate_all(&mut errs);
                errs.iter().map(|e| e.to_string()).collect()
            }
        }
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let cfg = parse(
            "[upstreams.u]\ntargets = [\"127.0.0.1:1\", { addr = \"127.0.0.1:2\", weight = 3 }]\n[routes.r]\npath = \"/\"\nupstream = \"u\"\n",
        )
        .unwrap();
        assert_eq!(cfg.server.listen, vec!["0.0.0.0:8080".to_string()]);
        assert_eq!(cfg.upstreams["u"].targets[1].weight, 3);
        assert_eq!(cfg.routes["r"].upstream.as_deref(), Some("u"));
    }

    #[test]
    fn unknown_key_names_its_path_and_line() {
        let errs = errors_of("[routes.r]\npath = \"/\"\nupstrem = \"u\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("routes.r"), "{errs:?}");
        assert!(errs[0].contains("unknown field `upstrem`"), "{errs:?}");
    }

    #[test]
    fn every_section_reports_its_own_error() {
        let errs = errors_of(
            "[server]\nshutdown_grace = \"soon\"\n[upstreams.u]\ntargets = []\nconnect_timeout = 5\n[routes.r]\npath = \"/\"\nupstream = \"nope\"\n[bogus]\n",
        );
        let all = errs.join("\n");
        assert!(all.contains("server.shutdown_grace"), "{all}");
        assert!(all.contains("upstreams.u.connect_timeout"), "{all}");
        assert!(all.contains("bogus: unknown section"), "{all}");
    }

    #[test]
    fn syntax_error_has_a_location() {
        let errs = errors_of("[server\nlisten = 1\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("1:"), "{errs:?}");
        assert!(errs[0].contains("TOML syntax error"), "{errs:?}");
    }
}
