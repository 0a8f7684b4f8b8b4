//! Request framing checks against request smuggling, on top of what Pingora's HTTP/1 parser
//! already refuses (its own plain 400, nothing forwarded): malformed request lines and header
//! names, obs-fold continuations, whitespace before a colon, control bytes in values, two
//! `Host` headers, differing or non-numeric `Content-Length`s, `Transfer-Encoding` whose last
//! coding is not `chunked`, and `Transfer-Encoding` in HTTP/1.0.
//!
//! What Pingora lets through and an upstream might read differently is refused here:
//! `Content-Length` together with `Transfer-Encoding` (Pingora silently drops the length),
//! any `Transfer-Encoding` other than exactly one `chunked`, and a `Content-Length` sent twice
//! even with equal values. HTTP/2 requests are framed by the protocol and not checked here.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderValue;
#[cfg(test)]
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// What a request's framing headers say about its body: read once, by the framing check, for
/// the steps after it (the declared-body limit, the upstream write timeout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    /// The body length the request declares, when its `Content-Length` is valid.
    pub length: Option<u64>,
    /// The request announces a body: `Transfer-Encoding`, a `Content-Length` other than `0`,
    /// or an HTTP/2 request with neither whose method is not GET or HEAD (HTTP/2 requests
    /// with a body need carry neither).
    pub body: bool,
}

/// The framing check of a session's request (HTTP/2 frames bodies itself: nothing to check),
/// and what its framing headers declare.
pub fn check_session(session: &Session) -> Result<Declared, &'static str> {
    let req = session.req_header();
    let te = req.headers.get_all(TRANSFER_ENCODING);
    let cl = req.headers.get_all(CONTENT_LENGTH);
    if req.version < http::Version::HTTP_2 {
        // The raw head matters only next to Transfer-Encoding (see `check`).
        let raw = match te.iter().next() {
            Some(_) => session
                .as_downstream()
                .as_http1()
                .map(|s| s.get_headers_raw_bytes())
                .unwrap_or_default(),
            None => Bytes::new(),
        };
        check_values(te.iter(), cl.iter(), &raw)?;
    }
    let first_cl = cl.iter().next();
    Ok(Declared {
        length: first_cl.and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse().ok()),
        body: match (te.iter().next(), first_cl) {
            (Some(_), _) => true,
            (None, Some(len)) => len.as_bytes() != b"0",
            (None, None) => {
                req.version == http::Version::HTTP_2
                    && !matches!(req.method, http::Method::GET | http::Method::HEAD)
            }
        },
    })
}

/// `Err(detail)` when an HTTP/1 request's framing is ambiguous. `raw_head` is the head as
/// received: the parsed headers no longer show a `Content-Length` sent next to
/// `Transfer-Encoding`. (Sessions go through [`check_session`].)
#[cfg(test)]
pub fn check(req: &RequestHeader, raw_head: &[u8]) -> Result<(), &'static str> {
    let headers = &req.headers;
    check_values(
        headers.get_all(TRANSFER_ENCODING).iter(),
        headers.get_all(CONTENT_LENGTH).iter(),
        raw_head,
    )
}

/// [`check`] over the request's `Transfer-Encoding` and `Content-Length` values.
fn check_values<'a>(
    mut te: impl Iterator<Item = &'a HeaderValue>,
    mut cl: impl Iterator<Item = &'a HeaderValue>,
    raw_head: &[u8],
) -> Result<(), &'static str> {
    if let Some(first) = te.next() {
        if te.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding must be exactly \"chunked\"");
        }
        if has_raw_header(raw_head, b"content-length") {
            return Err("Content-Length and Transfer-Encoding together make the length ambiguous");
        }
    }
    if let Some(first) = cl.next() {
        let digits = first.as_bytes();
        if cl.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err("Content-Length must be a single decimal number");
        }
    }
    Ok(())
}

/// True when a header line of the raw head (after the request line) has this name.
fn has_raw_header(raw_head: &[u8], name: &[u8]) -> bool {
    raw_head.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> (RequestHeader, Vec<u8>) {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        let mut raw = b"POST / HTTP/1.1\r\n".to_vec();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        (r, raw)
    }

    fn verdict(headers: &[(&str, &str)]) -> Result<(), &'static str> {
        let (r, raw) = req(headers);
        check(&r, &raw)
    }

    #[test]
    fn plain_framing_passes() {
        assert!(verdict(&[]).is_ok());
        assert!(verdict(&[("Content-Length", "12")]).is_ok());
        assert!(verdict(&[("Transfer-Encoding", "chunked")]).is_ok());
        assert!(verdict(&[("Transfer-Encoding", "Chunked")]).is_ok());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert!(verdict(&[("Transfer-Encoding", "chunked"), ("Content-Length", "3")]).is_err());
        assert!(verdict(&[("Transfer-Encoding", "gzip, chunked")]).is_err());
        assert!(verdict(&[
            ("Transfer-Encoding", "chunked"),
            ("Transfer-Encoding", "chunked")
        ])
        .is_err());
        assert!(verdict(&[("Content-Length", "3"), ("Content-Length", "3")]).is_err());
        assert!(verdict(&[("Content-Length", "+3")]).is_err());
        assert!(verdict(&[("Content-Length", "3, 3")]).is_err());
        assert!(verdict(&[("Content-Length", "")]).is_err());
    }

    #[test]
    fn content_length_in_the_raw_head_is_found_when_pingora_dropped_it() {
        let (mut r, raw) = req(&[("Transfer-Encoding", "chunked"), ("content-LENGTH", "3")]);
        r.remove_header(&CONTENT_LENGTH);
        assert!(check(&r, &raw).is_err());
        // A header merely containing the name is not a Content-Length.
        let (r, raw) = req(&[("Transfer-Encoding", "chunked"), ("X-Content-Length", "3")]);
        assert!(check(&r, &raw).is_ok());
    }
}
