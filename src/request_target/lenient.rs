//! The lenient reading of a path: what a permissive backend framework serves for it. Percent-
//! encodings decoded once, each segment cut at its first `;` (path parameters, as Tomcat and
//! Spring read them), empty segments dropped, `.` and `..` resolved (RFC 3986 §5.2.4).
//!
//! The gateway routes the normal form of a path; when that form still holds something a
//! backend could read differently (`%`, `;`, `//`), the route for the lenient reading must be
//! the same route, or the request is refused. Route patterns are read the same way, so a route
//! written with a percent-encoding (`/caf%C3%A9`) agrees with its decoded request.

use super::path::percent_at;
use std::borrow::Cow;

/// Decodes every `%XX` (the normal form guarantees they are well formed), except `%2F` when
/// escaped slashes are kept: the backend was declared to take those as data.
fn decode(segment: &[u8], keep_escaped_slash: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while let Some(&b) = segment.get(i) {
        match (b, percent_at(segment, i)) {
            (b'%', Some(b'/')) if keep_escaped_slash => {
                out.extend_from_slice(b"%2F");
                i += 3;
            }
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The path a lenient framework serves for `path` (a path in normal form).
pub fn lenient_reading(path: &str, keep_escaped_slash: bool) -> String {
    let mut segments: Vec<Vec<u8>> = Vec::new();
    // Whether the path ends in a directory: an empty, `.` or `..` last segment.
    let mut trailing = false;
    for raw in path.as_bytes().split(|&b| b == b'/').skip(1) {
        let mut decoded = decode(raw, keep_escaped_slash);
        if let Some(cut) = decoded.iter().position(|&b| b == b';') {
            decoded.truncate(cut);
        }
        trailing = true;
        match decoded.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => {
                trailing = false;
                segments.push(decoded);
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if segments.is_empty() || trailing {
        out.push(b'/');
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a segment of `path` (in normal form, so never `.` or `..` itself unless the
/// rewrite's own text put it there) reads as `.` or `..` to a lenient framework: decoded and
/// cut at its first `;`, as `..;`, `..;x` or `..%3B` are. Where the forwarded path is not the
/// routed one (a `rewrite`), such a segment resolves against the rewrite's literal text:
/// `/internal/..;/v1/secret` is `/v1/secret` to Tomcat.
pub fn has_hidden_dot_segment(path: &[u8], keep_escaped_slash: bool) -> bool {
    path.split(|&b| b == b'/').any(|raw| {
        // Only a `;` or an escape can hide a dot segment; most segments have neither.
        if !raw.iter().any(|&b| b == b';' || b == b'%') {
            return false;
        }
        let mut decoded = decode(raw, keep_escaped_slash);
        if let Some(cut) = decoded.iter().position(|&b| b == b';') {
            decoded.truncate(cut);
        }
        matches!(decoded.as_slice(), b"." | b"..")
    })
}

/// A route pattern as a lenient framework reads it: percent-encodings decoded (except `%2F`,
/// which patterns only hold for routes that keep escaped slashes), braces that decoding makes
/// escaped so they stay literal. Borrowed when the pattern has no `%`.
pub fn lenient_pattern(pattern: &str) -> Cow<'_, str> {
    if !pattern.contains('%') {
        return Cow::Borrowed(pattern);
    }
    let bytes = pattern.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, percent_at(bytes, i)) {
            (b'%', Some(value)) if value != b'/' => {
                match value {
                    b'{' => out.extend_from_slice(b"{{"),
                    b'}' => out.extend_from_slice(b"}}"),
                    _ => out.push(value),
                }
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_path_as_a_permissive_framework_does() {
        for (path, read) in [
            ("/", "/"),
            ("/admin/secret", "/admin/secret"),
            ("/admin;x/secret", "/admin/secret"),
            ("/..;/admin/secret", "/admin/secret"),
            ("/public/..;/admin/x", "/admin/x"),
            ("/a%3Bb/c", "/a/c"),
            ("/a%20b", "/a b"),
            ("/a//b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/admin/;x", "/admin/"),
            ("/admin;x", "/admin"),
            ("/admin/", "/admin/"),
            ("/%C3%A9", "/\u{e9}"),
            ("/a%2Fb", "/a/b"),
        ] {
            assert_eq!(lenient_reading(path, false), read, "{path}");
        }
        assert_eq!(lenient_reading("/a%2Fb", true), "/a%2Fb");
    }

    #[test]
    fn finds_segments_that_read_as_dots_only_once_cut_or_decoded() {
        for path in [
            "/internal/..;/v1/secret",
            "/internal/a/..;/..;/..;/v1/x",
            "/internal/..;jsessionid=1/x",
            "/internal/..%3B/x",
            "/internal/.%3Bx/y",
            "/internal/.;",
            "/internal/%2E%2E;/x",
        ] {
            assert!(has_hidden_dot_segment(path.as_bytes(), false), "{path}");
        }
        for path in [
            "/internal/a;jsessionid=1/b",
            "/internal/..a;b/c",
            "/internal/a.;/b",
            "/internal/a%3Bb",
            "/internal/.../x",
            // The rewrite's own text, read alike by every backend: not a client's trick.
            "/internal/../x",
            "/internal/..%2F;/x",
        ] {
            assert!(!has_hidden_dot_segment(path.as_bytes(), true), "{path}");
        }
    }

    #[test]
    fn patterns_are_decoded_with_braces_kept_literal() {
        assert_eq!(lenient_pattern("/caf%C3%A9/{id}"), "/caf\u{e9}/{id}");
        assert_eq!(lenient_pattern("/a%7Bb%7D"), "/a{{b}}");
        assert_eq!(lenient_pattern("/files/a%2Fb"), "/files/a%2Fb");
        assert!(matches!(lenient_pattern("/plain/{x}"), Cow::Borrowed(_)));
    }
}
