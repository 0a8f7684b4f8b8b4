//! The JSON Schema of the config file (`tollgate schema`), derived from the serde types so it
//! cannot drift from what the parser accepts; editors with TOML schema support (taplo, Even
//! Better TOML) use it to complete and check keys. Draft 7, which those editors understand.
//!
//! The derive covers the plain structs and enums in `types.rs`; the types with a hand-written
//! `Deserialize` (strings with units, "host:port" or a table, string or false, word or list) get
//! a hand-written schema here that accepts the same shapes. The schema is a first line of
//! defence only: `tollgate check` still decides (references, route conflicts, files).

use super::types::*;
use super::units::{parse_size, DurationStr, SizeStr};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The file as a whole: each section is deserialized on its own by `parse_partial`, so the
/// top level has no serde type; this one exists for the schema only.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(
    title = "Tollgate configuration",
    deny_unknown_fields,
    description = "The config file of the Tollgate API gateway. Validate a file with `tollgate check -c FILE`."
)]
struct ConfigFile {
    /// Listeners, request limits and process settings.
    server: Option<ServerConfig>,
    /// The gateway's own log (stderr) and the access log (stdout).
    log: Option<LogConfig>,
    /// State shared by every instance through Redis (cluster rate limits, cache purges).
    cluster: Option<ClusterConfig>,
    /// Upstream services by name (`[upstreams.NAME]`), referenced by routes.
    upstreams: Option<BTreeMap<String, UpstreamConfig>>,
    /// Authentication policies by name (`[auth.NAME]`), `type = "jwt"` or `"api_key"`.
    auth: Option<BTreeMap<String, AuthConfig>>,
    /// Token-bucket rate limits by name (`[rate_limits.NAME]`), referenced by routes.
    rate_limits: Option<BTreeMap<String, RateLimitConfig>>,
    /// Response caches by name (`[caches.NAME]`), referenced by routes.
    caches: Option<BTreeMap<String, CacheConfig>>,
    /// Routes by name (`[routes.NAME]`), matched by specificity, never by file order.
    routes: Option<BTreeMap<String, RouteConfig>>,
    /// Distributed tracing: W3C trace context continued, spans exported over OTLP/HTTP.
    tracing: Option<TracingConfig>,
}

/// The schema as a JSON value.
pub fn schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut value = generator.into_root_schema_for::<ConfigFile>().to_value();
    drop_null(&mut value);
    value
}

/// What `tollgate schema` prints and `config/tollgate.schema.json` holds: pretty JSON with a
/// final newline, so the shipped file diffs cleanly.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a schema serializes");
    text.push('\n');
    text
}

/// TOML has no null: an absent key is how an optional one is left out, so `Option`'s `null`
/// is taken out of every type list and alternative (an editor would offer it otherwise).
fn drop_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alternatives)) = map.get_mut(key) {
                    alternatives.retain(|a| a.get("type").is_none_or(|t| t != "null"));
                    if alternatives.len() == 1 {
                        let Some(Value::Object(only)) = alternatives.pop() else {
                            continue;
                        };
                        map.remove(key);
                        if only.contains_key("$ref") {
                            // Draft 7 ignores the siblings of `$ref` (the description): keep
                            // the reference one level down.
                            map.insert("allOf".into(), Value::Array(vec![Value::Object(only)]));
                        } else {
                            for (k, v) in only {
                                map.entry(k).or_insert(v);
                            }
                        }
                    }
                }
            }
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// Accepts what `humantime` reads with at least one unit: `"250ms"`, `"5s"`, `"1m 30s"`.
/// (A bare number is refused by the parser, and by this pattern.)
pub const DURATION_PATTERN: &str = r"^\s*([0-9]+\s*[A-Za-zµ]+\s*)+$";
/// Accepts what `bytesize` reads with a unit: `"512B"`, `"64KiB"`, `"8 MiB"`, `"1.5GB"`.
pub const SIZE_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*[A-Za-z]+\s*$";

impl JsonSchema for DurationStr {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration with a unit, like \"250ms\", \"5s\", \"2m\" or \"1m 30s\".",
            "pattern": DURATION_PATTERN,
            "examples": ["250ms", "5s", "2m"],
        })
    }
}

impl JsonSchema for SizeStr {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A byte size with a unit, like \"512B\", \"64KiB\" or \"8MiB\".",
            "pattern": SIZE_PATTERN,
            "examples": ["64KiB", "8MiB"],
        })
    }
}

// Defaults in the schema (shown by editors) are serialized values: a duration as humantime
// writes it, a size in the largest binary unit that divides it. Both read back as the same value.
impl serde::Serialize for DurationStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl serde::Serialize for SizeStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&size_text(self.0))
    }
}

fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    let (unit, size) = UNITS
        .into_iter()
        .find(|(_, size)| bytes != 0 && bytes.is_multiple_of(*size))
        .unwrap_or(("B", 1));
    let text = format!("{}{unit}", bytes / size);
    debug_assert_eq!(parse_size(&text), Ok(bytes));
    text
}

impl JsonSchema for TargetConfig {
    fn schema_name() -> Cow<'static, str> {
        "Target".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A target: \"host:port\", or { addr = \"host:port\", weight = N } (weight default 1).",
            "anyOf": [
                { "type": "string", "examples": ["127.0.0.1:9001"] },
                {
                    "type": "object",
                    "properties": {
                        "addr": { "type": "string", "description": "\"host:port\"" },
                        "weight": {
                            "type": "integer", "minimum": 0, "default": 1,
                            "description": "Share of requests relative to the other targets."
                        },
                    },
                    "required": ["addr"],
                    "additionalProperties": false,
                },
            ],
        })
    }
}

impl JsonSchema for MetaMember {
    fn schema_name() -> Cow<'static, str> {
        "MetaMember".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The member listing each part's outcome: a name, true (\"_parts\") or false (none).",
            "anyOf": [{ "type": "string" }, { "type": "boolean" }],
            "default": DEFAULT_META_MEMBER,
        })
    }
}

impl JsonSchema for CacheQuery {
    fn schema_name() -> Cow<'static, str> {
        "CacheQuery".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Query parameters in the key: \"all\" (sorted), \"none\", or a list of names.",
            "anyOf": [
                { "type": "string", "enum": ["all", "none"] },
                { "type": "array", "items": { "type": "string" } },
            ],
            "default": "all",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_duration, SECTIONS};

    /// Whether `text` matches `pattern` as a JSON Schema validator reads it.
    fn matches(pattern: &str, text: &str) -> bool {
        let schema = serde_json::json!({ "type": "string", "pattern": pattern });
        jsonschema::is_valid(&schema, &Value::String(text.into()))
    }

    #[test]
    fn every_duration_the_parser_reads_matches_the_pattern() {
        for text in [
            "250ms", "5s", "2m", "1m 30s", "1h30m", " 10s ", "3 days", "1µs",
        ] {
            assert!(parse_duration(text).is_ok(), "{text}");
            assert!(matches(DURATION_PATTERN, text), "{text}");
        }
        for text in ["5", "", "fast", "1.5"] {
            assert!(!matches(DURATION_PATTERN, text), "{text}");
        }
    }

    #[test]
    fn every_size_the_parser_reads_matches_the_pattern() {
        for text in ["512B", "64KiB", "8 MiB", "1GB", "1.5KiB", "1kb"] {
            assert!(parse_size(text).is_ok(), "{text}");
            assert!(matches(SIZE_PATTERN, text), "{text}");
        }
        for text in ["1024", "", "lots"] {
            assert!(!matches(SIZE_PATTERN, text), "{text}");
        }
    }

    #[test]
    fn defaults_read_back_as_the_same_value() {
        for bytes in [1, 512, 1024, 1536, 8 << 20, 256 << 20, 3 << 30] {
            assert_eq!(parse_size(&size_text(bytes)), Ok(bytes), "{bytes}");
        }
        let d = DurationStr::from_millis(1500);
        let text = serde_json::to_value(d).unwrap();
        assert_eq!(parse_duration(text.as_str().unwrap()), Ok(d.get()));
    }

    #[test]
    fn every_section_is_in_the_schema() {
        let schema = schema();
        let properties = schema["properties"].as_object().unwrap();
        for section in SECTIONS {
            assert!(
                properties.contains_key(*section),
                "section {section}: add it to ConfigFile in schema.rs"
            );
        }
        assert_eq!(properties.len(), SECTIONS.len());
    }

    #[test]
    fn no_null_is_offered() {
        assert!(!schema_text().contains("\"null\""));
    }
}
