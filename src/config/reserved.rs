//! Request header names the gateway owns: those of one connection, those it sets on every
//! forwarded request, and those only a trusted proxy in front of it may send. A config may not
//! hand them to anything else (a claim to forward, a client header a part passes on).

/// Headers of one connection (hop-by-hop, framing, the target's `Host`): each request the
/// gateway makes has its own.
pub const CONNECTION_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "content-length",
    "host",
];

/// Headers the gateway sets on every forwarded request, whatever the client sent.
pub const FORWARDING_HEADERS: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// Client headers only a proxy in front of the gateway may set: they would otherwise let a
/// client pose as that proxy to the backend (its address, scheme, port, prefix, original URL).
pub const PROXY_HEADERS: [&str; 6] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-original-url",
    "x-rewrite-url",
];

/// Why `name` may not be given a client's or a claim's value, if it may not. Spellings with `_`
/// count as the `-` one: CGI and nginx with `underscores_in_headers` read them as one header.
pub fn reserved(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase().replace('_', "-");
    if CONNECTION_HEADERS.contains(&name.as_str()) {
        Some("belongs to one connection (hop-by-hop, framing or Host): each request the gateway makes has its own")
    } else if FORWARDING_HEADERS.contains(&name.as_str()) || PROXY_HEADERS.contains(&name.as_str())
    {
        Some("is the gateway's to set: another value would pose as the gateway's or a proxy's")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_case_do_not_matter() {
        for name in [
            "Host",
            "X_Forwarded_For",
            "FORWARDED",
            "content-length",
            "x-request_id",
        ] {
            assert!(reserved(name).is_some(), "{name}");
        }
        for name in ["accept-language", "x-app-version", "authorization"] {
            assert!(reserved(name).is_none(), "{name}");
        }
    }
}
