//! Host names: validating the `host` of a route from the config, normalising the
//! Host header of a request, and the hasher used by the host map.
//!
//! Everything here works on bytes rather than `&str` so that a hostile Host
//! header (arbitrary bytes, multi-byte characters, absurd lengths) can never
//! make a slice land inside a UTF-8 character and panic.

use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv6Addr;

/// Longest host name we ever compare, in bytes. DNS names are at most 253
/// characters, so config hosts are capped there; a request Host longer than this
/// cannot equal or be a subdomain-of-a-valid-name for any configured host, and is
/// routed to the any-host group only. It also bounds the stack buffer used to
/// lowercase a Host header without allocating.
pub(super) const MAX_HOST_LEN: usize = 253;

/// A validated, lowercased `host` from a route definition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum HostPattern {
    /// `api.example.com` or `[::1]`, stored lowercase.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com` (lowercase, with the
    /// leading dot) because that is exactly what a matching host must end with.
    Wildcard(String),
}

impl HostPattern {
    /// The key under which this pattern's group is stored in the host map.
    /// Exact keys never start with '.', wildcard keys always do, so one map can
    /// hold both without ambiguity.
    pub(super) fn key(&self) -> &str {
        match self {
            HostPattern::Exact(h) | HostPattern::Wildcard(h) => h,
        }
    }
}

/// Validates the `host` value of a route. The error text completes the
/// sentence "host ..." as shown to someone editing the TOML file.
pub(super) fn parse_config(raw: &str) -> Result<HostPattern, String> {
    if raw.is_empty() {
        return Err("must not be empty; leave out the `host` key to match any host".into());
    }
    if raw.chars().any(char::is_whitespace) {
        return Err(format!("{raw:?} must not contain whitespace"));
    }
    if raw == "*" {
        return Err(
            "a bare \"*\" is not allowed; leave out the `host` key to match any host".into(),
        );
    }
    if raw.contains('/') {
        return Err(format!(
            "{raw:?} must be a host name only, without a scheme or path (found '/')"
        ));
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return parse_ipv6_literal(raw, rest);
    }
    match raw.matches(':').count() {
        0 => {}
        1 => {
            return Err(format!(
                "{raw:?} must not contain a port; the port is ignored when matching hosts"
            ))
        }
        _ => {
            return Err(format!(
                "{raw:?} looks like an IPv6 address; write it in brackets, e.g. \"[::1]\""
            ))
        }
    }
    let (wildcard, name) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if name.contains('*') {
        return Err(format!(
            "{raw:?}: a wildcard is only allowed as the whole first label, as in \"*.example.com\""
        ));
    }
    validate_dns_name(raw, name)?;
    let lower = name.to_ascii_lowercase();
    Ok(if wildcard {
        HostPattern::Wildcard(format!(".{lower}"))
    } else {
        HostPattern::Exact(lower)
    })
}

/// `[v6addr]`, nothing after the closing bracket.
fn parse_ipv6_literal(raw: &str, after_bracket: &str) -> Result<HostPattern, String> {
    let Some((addr, after)) = after_bracket.split_once(']') else {
        return Err(format!(
            "{raw:?} is missing the closing ']' of an IPv6 address"
        ));
    };
    if !after.is_empty() {
        return Err(format!(
            "{raw:?} must not contain a port or anything after ']'; the port is ignored when matching hosts"
        ));
    }
    if addr.parse::<Ipv6Addr>().is_err() {
        return Err(format!("{raw:?} is not a valid IPv6 address"));
    }
    Ok(HostPattern::Exact(raw.to_ascii_lowercase()))
}

/// Checks the part after an optional `*.`: letters, digits, '-', '_' and
/// non-empty dot-separated labels. '_' is not valid in public DNS host names but
/// is common in internal service names, and accepting it costs nothing.
fn validate_dns_name(raw: &str, name: &str) -> Result<(), String> {
    if !name.is_ascii() {
        return Err(format!(
            "{raw:?} must be ASCII; write internationalized names in their punycode (\"xn--\") form"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("{raw:?} contains the invalid character {bad:?}"));
    }
    if name.ends_with('.') {
        return Err(format!("{raw:?} must not end with '.'"));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!(
            "{raw:?} has an empty label (check for \"..\" or a leading '.')"
        ));
    }
    if name.split('.').any(|label| label.len() > 63) {
        return Err(format!("{raw:?} has a label longer than 63 characters"));
    }
    if raw.len() > MAX_HOST_LEN {
        return Err(format!("{raw:?} is longer than {MAX_HOST_LEN} characters"));
    }
    Ok(())
}

/// Reduces a request's Host / :authority value to the bare host name: drops a
/// `:port` (keeping `[v6]` literals intact) and one trailing '.' (the absolute
/// form `example.com.` names the same host). Returns `None` when no configured
/// host can match: empty, longer than [`MAX_HOST_LEN`], a leading '.', or a
/// malformed `[...]`. The bytes are not checked here; see [`classify`].
#[inline]
pub(super) fn strip(raw: &[u8]) -> Option<&[u8]> {
    let host = if raw.first() == Some(&b'[') {
        let end = raw.iter().position(|&b| b == b']')?;
        let (host, after) = raw.split_at(end + 1);
        // Only ":port" may follow the literal.
        if !after.is_empty() && after.first() != Some(&b':') {
            return None;
        }
        host
    } else {
        // Host names never contain ':', so the first one starts the port.
        match raw.iter().position(|&b| b == b':') {
            Some(colon) => raw.get(..colon)?,
            None => raw,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    // A leading '.' would let the exact-host lookup hit a wildcard key
    // (".example.com"), and is not a valid host anyway.
    if host.is_empty() || host.len() > MAX_HOST_LEN || host.first() == Some(&b'.') {
        return None;
    }
    Some(host)
}

/// Request-host byte classes, as bits: bit 0 = may appear in a host name,
/// bit 1 = ASCII uppercase. Letters, digits, `-`, `.`, `_` and, for bracketed
/// IPv6 literals, `:`, `[` and `]`. Everything else (whitespace, `/`, `@`,
/// non-ASCII, control bytes) cannot be part of a configured host.
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)] // i < 256
        let b = i as u8;
        table[i] = if b.is_ascii_uppercase() {
            0b11
        } else if b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        {
            0b01
        } else {
            0
        };
        i += 1;
    }
    table
};

/// One branch-free pass over a stripped request host: `None` if it contains a
/// byte that no configured host can contain (so only any-host routes can
/// match), otherwise whether it needs lowercasing.
#[inline]
pub(super) fn classify(host: &[u8]) -> Option<bool> {
    let (mut all, mut any) = (0b01u8, 0u8);
    for &b in host {
        let class = CLASS[usize::from(b)];
        all &= class;
        any |= class;
    }
    (all & 0b01 != 0).then_some(any & 0b10 != 0)
}

/// Lowercases `host` (at most [`MAX_HOST_LEN`] bytes, as guaranteed by [`strip`])
/// into a stack buffer, so that a mixed-case Host header costs a copy but never
/// an allocation. Bytes past `host.len()` are zero.
#[inline]
pub(super) fn lowercase(host: &[u8]) -> [u8; MAX_HOST_LEN] {
    let mut buf = [0u8; MAX_HOST_LEN];
    for (dst, src) in buf.iter_mut().zip(host) {
        *dst = src.to_ascii_lowercase();
    }
    buf
}

/// Hasher for the host map: a word-at-a-time multiplicative hash (`FxHash`
/// style) with a final avalanche. `SipHash` (std's default) resists hash flooding, which
/// matters only when an attacker chooses the *stored* keys; here the keys come
/// from the config and requests only look up, so a colliding Host header can at
/// worst walk the handful of configured keys in one bucket.
#[derive(Default, Clone, Copy)]
pub(super) struct HostHasher(u64);

/// `BuildHasher` for [`HostHasher`].
pub(super) type BuildHostHasher = BuildHasherDefault<HostHasher>;

impl HostHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for HostHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3 fmix64: hashbrown uses both the low bits (bucket) and the top
        // 7 bits (tag), so every input bit must reach both ends.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}
