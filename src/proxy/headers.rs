//! Header handling on the way through: request ids, `X-Forwarded-*`, and hop-by-hop headers that
//! describe one connection and must not be forwarded (RFC 9110 §7.6.1).

use http::header::{HeaderName, CONNECTION};
use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};

pub const REQUEST_ID: &str = "x-request-id";

/// Headers that belong to one hop. `Transfer-Encoding` and `Content-Length` are left to Pingora,
/// which frames each side itself; `Upgrade` is kept when the request asks for it (WebSocket).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Keeps a client's request id if it is sane (1-128 chars of `[A-Za-z0-9._:-]`), else makes one.
/// Anything else is replaced: the id ends up in logs, headers and upstream systems.
pub fn request_id(incoming: Option<&[u8]>) -> String {
    match incoming {
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.iter().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                }) =>
        {
            // Checked ASCII above, so this conversion cannot fail.
            String::from_utf8_lossy(v).into_owned()
        }
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// Names the hop-by-hop headers present in a header map, including any the `Connection` header lists.
fn strip_hop_by_hop(headers: &HeaderMap, keep_upgrade: bool) -> Vec<HeaderName> {
    let mut remove: Vec<HeaderName> = HOP_BY_HOP
        .iter()
        .map(|h| HeaderName::from_static(h))
        .collect();
    for value in headers.get_all(CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if keep_upgrade && token.eq_ignore_ascii_case("upgrade") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.to_ascii_lowercase().as_bytes()) {
                remove.push(name);
            }
        }
    }
    if !keep_upgrade {
        remove.push(http::header::UPGRADE);
        remove.push(CONNECTION);
    }
    remove.retain(|n| {
        n != http::header::CONTENT_LENGTH
            && n != http::header::TRANSFER_ENCODING
            && headers.contains_key(n)
    });
    remove
}

/// Prepares a request for the upstream: hop-by-hop headers out; `X-Forwarded-For` appended,
/// `X-Forwarded-Proto` and `X-Forwarded-Host` set; the request id attached.
pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    client_ip: Option<&str>,
    proto: &str,
    request_id: &str,
) -> pingora::Result<()> {
    let upgrade = req.headers.contains_key(http::header::UPGRADE);
    for name in strip_hop_by_hop(&req.headers, upgrade) {
        req.remove_header(&name);
    }
    if let Some(ip) = client_ip {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        req.insert_header("x-forwarded-for", xff)?;
    }
    req.insert_header("x-forwarded-proto", proto)?;
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    if let Some(host) = host {
        req.insert_header("x-forwarded-host", host)?;
    }
    req.insert_header(REQUEST_ID, request_id)?;
    Ok(())
}

/// Cleans an upstream response for the client: hop-by-hop headers out, request id in.
pub fn prepare_client_response(resp: &mut ResponseHeader, request_id: &str) -> pingora::Result<()> {
    let upgrade = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    for name in strip_hop_by_hop(&resp.headers, upgrade) {
        resp.remove_header(&name);
    }
    resp.insert_header(REQUEST_ID, request_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_kept_only_when_sane() {
        assert_eq!(request_id(Some(b"abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in [
            &b""[..],
            b"has space",
            b"quote\"",
            &[0xff, 0xfe],
            &[b'a'; 129],
        ] {
            let id = request_id(Some(bad));
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn forwards_and_strips() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.insert_header("host", "api.example.com").unwrap();
        req.insert_header("connection", "keep-alive, x-secret-hop")
            .unwrap();
        req.insert_header("x-secret-hop", "1").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("te", "trailers").unwrap();
        req.insert_header("x-forwarded-for", "203.0.113.9").unwrap();
        prepare_upstream_request(&mut req, Some("10.0.0.1"), "http", "rid").unwrap();
        let h = &req.headers;
        assert!(h.get("connection").is_none());
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-request-id"], "rid");
    }

    #[test]
    fn websocket_upgrade_survives() {
        let mut req = RequestHeader::build("GET", b"/ws", None).unwrap();
        req.insert_header("connection", "Upgrade").unwrap();
        req.insert_header("upgrade", "websocket").unwrap();
        prepare_upstream_request(&mut req, None, "http", "rid").unwrap();
        assert_eq!(req.headers["upgrade"], "websocket");
        assert_eq!(req.headers["connection"], "Upgrade");
    }
}
