//! Human-friendly units used in the config file: durations (`"250ms"`, `"5s"`) and byte sizes
//! (`"64KiB"`). They are strings with units on purpose: a bare `5` is ambiguous, so it is refused.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written with units, such as `"250ms"`, `"5s"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DurationStr(pub Duration);

impl DurationStr {
    pub const fn from_millis(ms: u64) -> Self {
        DurationStr(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        DurationStr(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string with a unit, like \"250ms\", \"5s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationStr, E> {
                parse_duration(s).map(DurationStr).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses `"250ms"`, `"5s"`, `"1m 30s"`; refuses numbers without a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("empty duration: write a number with a unit, like \"5s\"".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "duration \"{s}\" has no unit: write it like \"{trimmed}s\" or \"{trimmed}ms\""
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("invalid duration \"{s}\": {e} (examples: \"250ms\", \"5s\", \"2m\")"))
}

/// A byte size written with units, such as `"64KiB"`, `"8MiB"` or `"512B"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SizeStr(pub u64);

impl SizeStr {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for SizeStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size string with a unit, like \"64KiB\" or \"8MiB\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SizeStr, E> {
                parse_size(s).map(SizeStr).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses `"64KiB"`, `"8MiB"`, `"1GB"`, `"512B"` (binary and decimal units, as bytesize reads them).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() || trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "size \"{s}\" has no unit: write it like \"{trimmed}B\", \"64KiB\" or \"8MiB\""
        ));
    }
    trimmed
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size \"{s}\": {e} (examples: \"64KiB\", \"8MiB\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn sizes_need_units() {
        assert_eq!(parse_size("64KiB").unwrap(), 64 * 1024);
        assert_eq!(parse_size("8MiB").unwrap(), 8 * 1024 * 1024);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert!(parse_size("1024").unwrap_err().contains("no unit"));
        assert!(parse_size("lots").is_err());
    }
}
