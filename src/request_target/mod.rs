//! The request target, resolved once per request before routing, auth, limits and logging:
//! its form, the host it names and its path in normal form. What the gateway matches, checks
//! and logs is what it forwards, so a backend cannot be made to serve a path or host the
//! gateway never matched.
//!
//! - Forms: origin-form (`/path?query`) and absolute-form with an `http`/`https` URL only;
//!   `OPTIONS *` is the gateway's to answer. Anything else is refused.
//! - Host: from the absolute-form authority, `:authority` (HTTP/2) or `Host`; HTTP/1.1 must
//!   name one; it must be a plain `host[:port]`.
//! - Path: see [`path`]; the query string is kept byte for byte and never routed on.
//!
//! Pure functions over a [`RequestHeader`]: no session, testable on built headers.

pub mod host;
mod lenient;
mod path;

pub use lenient::{has_hidden_dot_segment, lenient_pattern, lenient_reading, pattern_folds};
pub use path::{is_unreserved, normalize, NormalPath, PathError};

use http::Version;
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;
use std::borrow::Cow;

/// How the client wrote its target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `/path?query`
    Origin,
    /// `http://host/path?query`
    Absolute,
}

/// A request target the gateway accepts.
#[derive(Debug)]
pub struct Target<'a> {
    pub form: Form,
    /// The host the request names, as received (checked syntax; any case, maybe a port).
    /// `None`: an HTTP/1.0 request without `Host`, which only routes without `host` serve.
    pub host: Option<&'a str>,
    pub path: NormalPath<'a>,
    /// What follows `?`, as received.
    pub query: Option<&'a [u8]>,
}

impl Target<'_> {
    /// Whether the target to forward differs from the one received: an absolute-form target
    /// is forwarded in origin-form, a normalised path replaces the received one.
    pub fn is_rewritten(&self) -> bool {
        self.form == Form::Absolute || matches!(self.path.path, Cow::Owned(_))
    }

    /// `path?query`, in origin-form: the target to forward.
    pub fn origin_form(&self) -> Vec<u8> {
        let path = self.path.path.as_bytes();
        let mut out = Vec::with_capacity(path.len() + self.query.map_or(0, |q| q.len() + 1));
        out.extend_from_slice(path);
        if let Some(query) = self.query {
            out.push(b'?');
            out.extend_from_slice(query);
        }
        out
    }
}

/// What resolving a request target found.
#[derive(Debug)]
pub enum Resolved<'a> {
    Request(Target<'a>),
    /// `OPTIONS *`: a question about the server, answered by the gateway.
    ServerOptions,
}

/// Why a request target is refused: always a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not origin-form nor an http(s) URL (`x:/admin`, `admin/x`, `*x`, `foo://host/x`).
    BadTarget(&'static str),
    BadPath(PathError),
    /// HTTP/1.1 (or HTTP/2) without a host.
    MissingHost,
    /// A host that is not `host[:port]`.
    BadHost,
}

impl Refusal {
    /// The `detail` of the 400 answer.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::BadTarget(detail) => detail,
            Refusal::BadPath(e) => e.detail(),
            Refusal::MissingHost => "the request names no host (HTTP/1.1 requires Host)",
            Refusal::BadHost => "the host is not a valid host name with an optional port",
        }
    }
}

const NOT_A_PATH: &str = "the request target must be a path ('/...') or an http(s) URL";

/// The shape of a raw request target, before its host and path are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified<'a> {
    /// `/path?query`.
    Origin,
    /// `*`.
    Asterisk,
    /// An http(s) URL with a valid host: its authority and what follows it.
    Absolute {
        authority: &'a [u8],
        path_and_query: &'a [u8],
    },
}

/// Classifies a raw target (RFC 9112 §3.2): only origin-form, `*` and http(s) URLs with a
/// plain host are accepted. The authority boundary comes from Pingora's own classifier, the
/// one its `Host` reconciliation uses, so the two can never disagree on where it ends.
pub fn classify(raw: &[u8]) -> Result<Classified<'_>, Refusal> {
    match raw.first() {
        Some(b'/') => return Ok(Classified::Origin),
        Some(b'*') if raw.len() == 1 => return Ok(Classified::Asterisk),
        _ => {}
    }
    match raw_target_authority(raw) {
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } if is_http_scheme(scheme) && !authority.is_empty() => match host::is_valid(authority) {
            true => Ok(Classified::Absolute {
                authority,
                path_and_query,
            }),
            false => Err(Refusal::BadHost),
        },
        _ => Err(Refusal::BadTarget(NOT_A_PATH)),
    }
}

/// Resolves the target of `req`. `merge_slashes`: `server.merge_slashes`.
pub fn resolve(req: &RequestHeader, merge_slashes: bool) -> Result<Resolved<'_>, Refusal> {
    let raw = req.raw_path();
    let (form, authority, path_and_query) = match classify(raw)? {
        Classified::Origin => (Form::Origin, None, raw),
        Classified::Asterisk => {
            return match req.method == http::Method::OPTIONS {
                true => Ok(Resolved::ServerOptions),
                false => Err(Refusal::BadTarget("'*' is only a target for OPTIONS")),
            }
        }
        Classified::Absolute {
            authority,
            path_and_query,
        } => (Form::Absolute, Some(authority), path_and_query),
    };
    let (path, query) = match path_and_query.iter().position(|&b| b == b'?') {
        Some(q) => (&path_and_query[..q], Some(&path_and_query[q + 1..])),
        None => (path_and_query, None),
    };
    // `http://host` and `http://host?q` address the root.
    let path: &[u8] = if path.is_empty() && form == Form::Absolute {
        b"/"
    } else {
        path
    };
    let host = match authority {
        Some(authority) => Some(checked_host(authority)?),
        None => request_host(req)?,
    };
    let path = normalize(path, merge_slashes).map_err(Refusal::BadPath)?;
    Ok(Resolved::Request(Target {
        form,
        host,
        path,
        query,
    }))
}

/// Bytes as a log shows them: printable ASCII as is, anything else as `\xNN`, so a control
/// byte or a byte outside UTF-8 in a refused request is visible and cannot break the line.
pub fn escape_for_log(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                out.push_str("\\x");
                out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
                out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
            }
        }
    }
    out
}

fn is_http_scheme(scheme: &[u8]) -> bool {
    scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")
}

fn checked_host(value: &[u8]) -> Result<&str, Refusal> {
    match host::is_valid(value) {
        // Valid hosts are ASCII.
        true => std::str::from_utf8(value).map_err(|_| Refusal::BadHost),
        false => Err(Refusal::BadHost),
    }
}

/// The host of an origin-form request: `:authority` (HTTP/2) or `Host`. An empty `Host` names
/// no host. HTTP/1.0 may go without one.
fn request_host(req: &RequestHeader) -> Result<Option<&str>, Refusal> {
    // HTTP/2 carries the scheme apart (`:scheme`); only http(s) is proxied.
    if req
        .uri
        .scheme()
        .is_some_and(|s| !is_http_scheme(s.as_str().as_bytes()))
    {
        return Err(Refusal::BadTarget(NOT_A_PATH));
    }
    let value = match req.uri.authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => req
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .filter(|h| !h.is_empty()),
    };
    match value {
        Some(value) => checked_host(value).map(Some),
        None if req.version <= Version::HTTP_10 => Ok(None),
        None => Err(Refusal::MissingHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target, None).unwrap();
        req.set_version(version);
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn target(req: &RequestHeader) -> Result<(Form, Option<String>, String), Refusal> {
        match resolve(req, true)? {
            Resolved::Request(t) => Ok((
                t.form,
                t.host.map(str::to_string),
                String::from_utf8(t.origin_form()).unwrap(),
            )),
            Resolved::ServerOptions => panic!("not OPTIONS *"),
        }
    }

    const HOST: &[(&str, &str)] = &[("Host", "api.example.com")];

    #[test]
    fn origin_form_keeps_the_query_byte_for_byte() {
        let req = request(Version::HTTP_11, b"/%61/b?x=%2F&y=..%2f#frag", HOST);
        let (form, host, forwarded) = target(&req).unwrap();
        assert_eq!(form, Form::Origin);
        assert_eq!(host.as_deref(), Some("api.example.com"));
        assert_eq!(forwarded, "/a/b?x=%2F&y=..%2f");
    }

    #[test]
    fn absolute_form_names_the_host_and_is_forwarded_as_a_path() {
        for (raw, path) in [
            (&b"http://admin.example.com/x?q=1"[..], "/x?q=1"),
            (b"HTTPS://admin.example.com", "/"),
            (b"http://admin.example.com?q", "/?q"),
        ] {
            let req = request(Version::HTTP_11, raw, &[]);
            let (form, host, forwarded) = target(&req).unwrap();
            assert_eq!(form, Form::Absolute);
            assert_eq!(host.as_deref(), Some("admin.example.com"));
            assert_eq!(forwarded, path);
        }
    }

    #[test]
    fn other_forms_are_refused() {
        for raw in [
            &b"x:/admin/secret"[..],
            b"admin/secret",
            b"*x",
            b"foo://admin.example.com/x",
            b"http:/x",
            b"http:///x",
        ] {
            let req = request(Version::HTTP_11, raw, HOST);
            assert!(
                matches!(resolve(&req, true), Err(Refusal::BadTarget(_))),
                "{}",
                raw.escape_ascii()
            );
        }
        let star = request(Version::HTTP_11, b"*", HOST);
        assert!(matches!(resolve(&star, true), Err(Refusal::BadTarget(_))));
        let mut options = request(Version::HTTP_11, b"*", HOST);
        options.set_method(http::Method::OPTIONS);
        assert!(matches!(
            resolve(&options, true),
            Ok(Resolved::ServerOptions)
        ));
    }

    #[test]
    fn a_host_is_required_from_http_1_1_on_and_must_be_plain() {
        let none = request(Version::HTTP_11, b"/x", &[]);
        assert_eq!(resolve(&none, true).unwrap_err(), Refusal::MissingHost);
        let empty = request(Version::HTTP_11, b"/x", &[("Host", "")]);
        assert_eq!(resolve(&empty, true).unwrap_err(), Refusal::MissingHost);
        let old = request(Version::HTTP_10, b"/x", &[]);
        assert_eq!(target(&old).unwrap().1, None);
        let bad = request(Version::HTTP_11, b"/x", &[("Host", "admin.example.com:x")]);
        assert_eq!(resolve(&bad, true).unwrap_err(), Refusal::BadHost);
        let bad_authority = request(Version::HTTP_11, b"http://a b/x", &[]);
        assert!(resolve(&bad_authority, true).is_err());
    }

    #[test]
    fn log_escaping_shows_every_byte() {
        assert_eq!(escape_for_log(b"/a\x01b\xff \"q\""), "/a\\x01b\\xff \"q\"");
    }

    #[test]
    fn classification_finds_the_authority_or_refuses() {
        assert_eq!(classify(b"/x"), Ok(Classified::Origin));
        assert_eq!(classify(b"*"), Ok(Classified::Asterisk));
        assert_eq!(
            classify(b"http://a.example:80/x?q"),
            Ok(Classified::Absolute {
                authority: b"a.example:80",
                path_and_query: b"/x?q"
            })
        );
        assert_eq!(classify(b"http://user@a.example/x"), Err(Refusal::BadHost));
        assert_eq!(classify(b"http://a..example/x"), Err(Refusal::BadHost));
        for bad in [
            &b"#/admin"[..],
            b"?x",
            b"http:/x",
            b"http://",
            b"foo://a/x",
            b"",
        ] {
            assert!(
                matches!(classify(bad), Err(Refusal::BadTarget(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_bad_path_is_refused_whatever_the_form() {
        let req = request(Version::HTTP_11, b"http://a.example/../admin", &[]);
        assert_eq!(
            resolve(&req, true).unwrap_err(),
            Refusal::BadPath(PathError::DotSegment)
        );
    }
}
