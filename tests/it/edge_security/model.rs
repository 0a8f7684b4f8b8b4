//! What a lenient backend framework makes of a forwarded request, written here from the
//! spec's description and independently of Tollgate's code: the route such a framework would
//! serve if it sat alone behind the gateway with the fixture's four routes.
//!
//! The framework reads the request target the way URL libraries do (a `scheme:` or
//! `scheme://authority` prefix is taken off, a relative target gets a leading `/`), cuts it at
//! `#` and `?`, percent-decodes every `%XX` once, cuts each segment at its first `;` (path
//! parameters), trims the spaces around each segment and then, unless it is `.` or `..`, its
//! trailing dots and spaces, drops empty segments, resolves `.`/`..`, and matches ASCII letters
//! in any case. The host is `X-Forwarded-Host` if present (frameworks behind proxies trust
//! it), else the target's authority, else `Host`.

use super::fixture::{Route, ADMIN_HOST};

/// The route a lenient framework serves for this request target and these header values.
pub fn lenient_route(target: &str, host: Option<&str>, forwarded_host: Option<&str>) -> Route {
    let (authority, path) = split_target(target);
    let host = forwarded_host.or(authority).or(host);
    if host.is_some_and(is_admin_host) {
        return Route::AdminHost;
    }
    let path = lenient_path(path.as_bytes());
    if path == b"/" {
        Route::Root
    } else if path.starts_with(b"/admin/") {
        Route::Admin
    } else {
        Route::Public
    }
}

/// `admin.example.com`, in any case, with or without a port and trailing dots.
fn is_admin_host(host: &str) -> bool {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case(ADMIN_HOST)
}

/// The authority (if the target names one) and the path part of a request target.
fn split_target(target: &str) -> (Option<&str>, String) {
    let rest = if target.starts_with('/') {
        target
    } else {
        // `scheme:` = a letter, then letters, digits, `+`, `-`, `.`.
        let scheme_len = target.bytes().position(|b| b == b':').filter(|&i| {
            i > 0
                && target.as_bytes()[0].is_ascii_alphabetic()
                && target.as_bytes()[..i]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
        });
        match scheme_len {
            Some(i) => &target[i + 1..],
            None => target,
        }
    };
    if let Some(after) = rest.strip_prefix("//").filter(|_| !target.starts_with('/')) {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        return (Some(&after[..end]), format!("/{}", &after[end..]));
    }
    if rest.starts_with('/') {
        (None, rest.to_string())
    } else {
        (None, format!("/{rest}"))
    }
}

/// The normalised path as bytes: fragment and query cut, `%XX` decoded once, segments cut at
/// `;` and trimmed, empty segments dropped, dot segments resolved, ASCII lower-cased. A
/// trailing `/` is kept when the last segment was empty, `.` or `..` (as RFC 3986
/// `remove_dot_segments` does).
pub fn lenient_path(path: &[u8]) -> Vec<u8> {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let decoded = percent_decode(&path[..end]);
    let mut out: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for raw in decoded.split(|&b| b == b'/').skip(1) {
        let segment = raw.split(|&b| b == b';').next().unwrap_or_default();
        let segment = segment.trim_ascii();
        let segment = match segment {
            b"." | b".." => segment,
            _ => {
                let keep = segment.len()
                    - segment
                        .iter()
                        .rev()
                        .take_while(|&&b| b == b'.' || b == b' ')
                        .count();
                &segment[..keep]
            }
        };
        trailing = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = Vec::new();
    for s in &out {
        result.push(b'/');
        result.extend_from_slice(s);
    }
    if result.is_empty() || trailing {
        result.push(b'/');
    }
    result.make_ascii_lowercase();
    result
}

/// Every `%XX` with two hex digits decoded, once; anything else kept as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if let (Some(h), Some(l)) = (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[test]
fn the_model_reads_paths_the_way_lenient_frameworks_do() {
    let cases: &[(&str, &[u8])] = &[
        ("/", b"/"),
        ("//", b"/"),
        ("/admin", b"/admin"),
        ("/admin/", b"/admin/"),
        ("//admin//secret", b"/admin/secret"),
        ("/%61dmin/secret", b"/admin/secret"),
        ("/admin%2fsecret", b"/admin/secret"),
        ("/admin;x/secret", b"/admin/secret"),
        ("/..;/admin/secret", b"/admin/secret"),
        ("/api/x/../../admin/x", b"/admin/x"),
        ("/admin/x/..", b"/admin/"),
        ("/admin/.", b"/admin/"),
        ("/a/%2e%2E/admin/b?x=/../y", b"/admin/b"),
        ("/admin#/x", b"/admin"),
        ("/%2561dmin/x", b"/%61dmin/x"),
        ("/%zz/%4", b"/%zz/%4"),
        ("/caf%C3%A9", "/café".as_bytes()),
        ("/ADMIN/X", b"/admin/x"),
        ("/admin./x", b"/admin/x"),
        ("/admin%20/x", b"/admin/x"),
        ("/a/%20..%20/admin", b"/admin"),
    ];
    for (input, want) in cases {
        assert_eq!(
            lenient_path(input.as_bytes()),
            want.to_vec(),
            "{input}: {:?}",
            String::from_utf8_lossy(&lenient_path(input.as_bytes()))
        );
    }
    let routes = [
        ("/", None, None, Route::Root),
        ("/admin/", None, None, Route::Admin),
        ("/admin", None, None, Route::Public),
        ("x:/admin/secret", None, None, Route::Admin),
        ("admin/secret", None, None, Route::Admin),
        ("*x", None, None, Route::Public),
        ("http://admin.example.com/x", None, None, Route::AdminHost),
        (
            "foo://Admin.Example.com:8080/",
            None,
            None,
            Route::AdminHost,
        ),
        ("/x", Some("ADMIN.example.com.:443"), None, Route::AdminHost),
        (
            "/x",
            Some("gw.test"),
            Some("admin.example.com"),
            Route::AdminHost,
        ),
        ("/x", Some("admin.example.com.."), None, Route::AdminHost),
        ("/x", Some("admin.example.com.evil"), None, Route::Public),
        ("/admin/x", Some("gw.test"), None, Route::Admin),
        ("/Admin/x", Some("gw.test"), None, Route::Admin),
    ];
    for (target, host, xfh, want) in routes {
        assert_eq!(
            lenient_route(target, host, xfh),
            want,
            "{target} {host:?} {xfh:?}"
        );
    }
}
