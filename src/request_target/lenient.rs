//! The lenient reading of a path: what a permissive backend framework serves for it. Percent-
//! encodings decoded once, each segment cut at its first `;` (path parameters, as Tomcat and
//! Spring read them) and trimmed (spaces around it, as Spring's `trimTokens`; trailing dots
//! and spaces, as IIS and Windows file names), empty segments dropped, `.` and `..` resolved
//! (RFC 3986 §5.2.4), and case folded (Express by default, ASP.NET, IIS and Spring with
//! case-insensitive matching serve `/ADMIN/x` as `/admin/x`).
//!
//! The gateway routes the normal form of a path; when that form still holds something a
//! backend could read differently (`%`, `;`, `//`, an upper-case letter, a segment ending in
//! `.`), the route for the lenient reading must be the same route, or the request is refused.
//! Route patterns are read the same way, so a route written with a percent-encoding
//! (`/caf%C3%A9`) agrees with its decoded request, and one written with capitals (`/Files/{id}`)
//! with its lower-case request.

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

/// A raw segment as lenient frameworks take it apart: decoded once, and cut at its first `;`
/// (path parameters, as Tomcat and Spring read them).
fn read_segment(raw: &[u8], keep_escaped_slash: bool) -> Vec<u8> {
    let mut decoded = decode(raw, keep_escaped_slash);
    if let Some(cut) = decoded.iter().position(|&b| b == b';') {
        decoded.truncate(cut);
    }
    decoded
}

/// A segment (decoded, cut at `;`) as the loosest backends read it: whitespace around it
/// trimmed (Spring's `trimTokens`), then, unless that leaves a dot segment, trailing dots and
/// spaces dropped (IIS serves `/admin./x` and `/admin%20/x` as `/admin/x`).
fn trimmed(segment: &[u8]) -> &[u8] {
    let segment = segment.trim_ascii();
    if segment == b"." || segment == b".." {
        return segment;
    }
    let end = segment
        .iter()
        .rposition(|&b| b != b'.' && !b.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    &segment[..end]
}

/// `text` case-folded: ASCII lower-cased, and any other character as Java's
/// `equalsIgnoreCase` compares it (upper case, then lower case, each step only where it is
/// one character), so `ſ` reads as `s` and the Kelvin sign as `k`.
fn fold_case(mut text: String) -> String {
    if text.is_ascii() {
        text.make_ascii_lowercase();
        return text;
    }
    text.chars()
        .map(|c| {
            let mut upper = c.to_uppercase();
            let upper = match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => c,
            };
            upper.to_lowercase().next().unwrap_or(upper)
        })
        .collect()
}

/// The path a lenient framework serves for `path` (a path in normal form).
pub fn lenient_reading(path: &str, keep_escaped_slash: bool) -> String {
    let mut segments: Vec<Vec<u8>> = Vec::new();
    // Whether the path ends in a directory: an empty, `.` or `..` last segment.
    let mut trailing = false;
    for raw in path.as_bytes().split(|&b| b == b'/').skip(1) {
        let decoded = read_segment(raw, keep_escaped_slash);
        trailing = true;
        match trimmed(&decoded) {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            segment => {
                trailing = false;
                segments.push(segment.to_vec());
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
    fold_case(String::from_utf8_lossy(&out).into_owned())
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
        matches!(
            read_segment(raw, keep_escaped_slash).as_slice(),
            b"." | b".."
        )
    })
}

/// Whether case folding or trimming changes a pattern's literal text (a capital, a segment
/// ending in `.`): then a request without either can still read as its path (`/files/x` is
/// `/Files/{id}`'s to a case-insensitive backend), so every request needs the lenient reading.
pub fn pattern_folds(pattern: &str) -> bool {
    pattern.bytes().any(|b| b.is_ascii_uppercase())
        || pattern.split('/').any(|segment| segment.ends_with('.'))
}

/// A route pattern as a lenient framework reads it: percent-encodings decoded (except `%2F`,
/// which patterns only hold for routes that keep escaped slashes), braces that decoding makes
/// escaped so they stay literal, literal segments trimmed as [`lenient_reading`] trims them
/// (a segment trimmed away is dropped), case folded. Borrowed when that changes nothing: no
/// `%`, no capital, no segment ending in `.`.
pub fn lenient_pattern(pattern: &str) -> Cow<'_, str> {
    if !pattern.contains('%') && !pattern_folds(pattern) {
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
    let segments: Vec<&[u8]> = out.split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    let mut read = Vec::with_capacity(out.len());
    for (i, segment) in segments.into_iter().enumerate() {
        // A `{param}` is any value: only literal text is trimmed.
        let segment = match segment.contains(&b'{') {
            true => segment,
            false => trimmed(segment),
        };
        // As the reading drops empty segments; the first (before the leading `/`) and a last
        // one (a trailing `/`) are kept.
        if segment.is_empty() && i != 0 && i != last {
            continue;
        }
        if i != 0 {
            read.push(b'/');
        }
        read.extend_from_slice(segment);
    }
    Cow::Owned(fold_case(String::from_utf8_lossy(&read).into_owned()))
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
            // Case folded, segments trimmed.
            ("/ADMIN/x", "/admin/x"),
            ("/Admin/X", "/admin/x"),
            ("/%C3%89t%C3%A9", "/\u{e9}t\u{e9}"),
            ("/%C5%BFecret", "/secret"),
            ("/%E2%84%AAey", "/key"),
            ("/stra%C3%9Fe", "/stra\u{df}e"),
            ("/admin./x", "/admin/x"),
            ("/admin.../x", "/admin/x"),
            ("/admin%20/x", "/admin/x"),
            ("/%20admin%20./x", "/admin/x"),
            ("/a/%20..%20/admin", "/admin"),
            ("/a/.../admin", "/a/admin"),
            ("/admin./", "/admin/"),
            ("/a/b.", "/a/b"),
            ("/v1.2/x", "/v1.2/x"),
        ] {
            assert_eq!(lenient_reading(path, false), read, "{path}");
        }
        // A kept `%2F` stays an escape (its hex folded with the rest, as in patterns).
        assert_eq!(lenient_reading("/a%2Fb", true), "/a%2fb");
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
        assert_eq!(lenient_pattern("/files/a%2Fb"), "/files/a%2fb");
        assert!(matches!(lenient_pattern("/plain/{x}"), Cow::Borrowed(_)));
        assert_eq!(lenient_pattern("/Files/{Id}/Raw"), "/files/{id}/raw");
        assert_eq!(lenient_pattern("/v1./x/"), "/v1/x/");
        assert_eq!(lenient_pattern("/a%20/b/{*rest}"), "/a/b/{*rest}");
        assert_eq!(lenient_pattern("/a/%20/b"), "/a/b");
        assert_eq!(lenient_pattern("/A%20B"), "/a b");
    }
}
