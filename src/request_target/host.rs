//! The syntax of a request's host (`Host`, `:authority`, or the authority of an absolute-form
//! target): `host[:port]`, where host is a DNS-style name, an IPv4 address or a bracketed IPv6
//! address. Anything else is refused rather than routed as "no host": a backend's virtual
//! hosting could still make sense of it and serve a host the gateway never matched.

/// Longest name accepted (DNS names are at most 253 characters; one more for a trailing dot).
const MAX_NAME: usize = 254;

/// Whether `value` is an acceptable `host[:port]`.
pub fn is_valid(value: &[u8]) -> bool {
    let (name, port) = split_port(value);
    if let Some(port) = port {
        let digits_ok = !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
        if !digits_ok {
            return false;
        }
    }
    match name.strip_prefix(b"[") {
        Some(rest) => rest
            .strip_suffix(b"]")
            .and_then(|inner| std::str::from_utf8(inner).ok())
            .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            // One trailing dot names the same host (a fully qualified name); any other empty
            // label (`a..b`, `.a`, `a..`) is not a host name.
            let name = name.strip_suffix(b".").unwrap_or(name);
            !name.is_empty()
                && name.len() < MAX_NAME
                && name.split(|&b| b == b'.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .iter()
                            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                })
        }
    }
}

/// Splits `host:port` (the port is after the last `:` outside brackets).
fn split_port(value: &[u8]) -> (&[u8], Option<&[u8]>) {
    let bracket_end = value.iter().rposition(|&b| b == b']').map_or(0, |i| i + 1);
    match value[bracket_end..].iter().position(|&b| b == b':') {
        Some(colon) => (
            &value[..bracket_end + colon],
            Some(&value[bracket_end + colon + 1..]),
        ),
        None => (value, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_addresses_and_ports() {
        for ok in [
            "admin.example.com",
            "ADMIN.Example.COM",
            "admin.example.com.",
            "admin.example.com:8080",
            "localhost",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "my_host-1",
        ] {
            assert!(is_valid(ok.as_bytes()), "{ok}");
        }
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            ":80",
            "admin.example.com:",
            "admin.example.com:abc",
            "admin.example.com:123456",
            "admin.example.com:80:80",
            "user@admin.example.com",
            "admin.example.com/x",
            "admin example.com",
            "[::1",
            "[zz]",
            "::1",
            "admin.example.com\\x",
            "caf\u{e9}.example",
            "a%2eb",
            "admin.example.com..",
            ".admin.example.com",
            "admin..example.com",
            ".",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_valid(&[b'a'; 300]));
    }
}
