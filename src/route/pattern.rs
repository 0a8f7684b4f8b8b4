//! Route path patterns as the config writes them: syntax checks, placeholders, the prefix a
//! catch-all pattern also serves, and which patterns matchit cannot hold side by side.

/// Checks a path pattern on its own; the message completes "path ...".
pub(super) fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with '/'"));
    }
    if path.contains('?') {
        return Err(format!(
            "{path:?} must not contain '?': routes match the path only, not the query string"
        ));
    }
    if path.contains('#') {
        return Err(format!("{path:?} must not contain '#'"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{path:?} must not contain whitespace or control characters"
        ));
    }
    // Inserting into an empty router checks the syntax (braces, one parameter
    // per segment, catch-all last) with matchit's own rules and wording.
    if let Err(e) = matchit::Router::new().insert(path, ()) {
        let hint = match e {
            matchit::InsertError::InvalidParam => " (write `{{` and `}}` for literal braces)",
            _ => "",
        };
        return Err(format!("{path:?} is not a valid route pattern: {e}{hint}"));
    }
    // matchit accepts `/{id}/{id}`, but the second value would be unreachable
    // by name (and a `rewrite` using {id} ambiguous).
    let names = param_names(path);
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!(
                "{path:?} uses the parameter name {{{name}}} more than once"
            ));
        }
    }
    Ok(())
}

/// The `{param}` and `{*catch_all}` placeholders of a pattern that matchit
/// accepted, as (byte range of the whole placeholder, name without '*'),
/// skipping the `{{`/`}}` escapes.
pub(super) fn placeholders(path: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let bytes = path.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = matches!(b, b'{' | b'}') && bytes.get(i + 1) == Some(&b);
        if escaped {
            i += 2;
        } else if b == b'{' {
            // `i + 1` follows an ASCII byte, so it is a char boundary.
            let Some(len) = path.get(i + 1..).and_then(|rest| rest.find('}')) else {
                break;
            };
            let end = i + 1 + len;
            let name = path.get(i + 1..end).unwrap_or_default();
            found.push((i..end + 1, name.strip_prefix('*').unwrap_or(name)));
            i = end + 1;
        } else {
            i += 1;
        }
    }
    found
}

/// Names of the placeholders of a pattern, in order.
pub(super) fn param_names(path: &str) -> Vec<&str> {
    placeholders(path)
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

/// The prefix `/p/` of a pattern that ends in a catch-all right after a '/'
/// (`/p/{*rest}`): the path the table also serves as an alias of the pattern.
/// `None` for other patterns.
pub(super) fn catch_all_prefix(pattern: &str) -> Option<&str> {
    let (range, _) = placeholders(pattern).pop()?;
    let catch_all = pattern.get(range.clone())?.starts_with("{*");
    let prefix = pattern.get(..range.start)?;
    (catch_all && range.end == pattern.len() && prefix.ends_with('/')).then_some(prefix)
}

/// The request path a prefix names without its trailing slash: `/admin` for
/// `/admin/`, empty for `/`. Escaped braces become literal ones; a `{param}`
/// stays as written, which a request can carry as the parameter's value, so the
/// path still reaches the routes that take any value there.
pub(super) fn bare_path(prefix: &str) -> String {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    let unescape = |literal: &str| literal.replace("{{", "{").replace("}}", "}");
    let mut out = String::with_capacity(prefix.len());
    let mut last = 0;
    for (range, _) in placeholders(prefix) {
        out.push_str(&unescape(prefix.get(last..range.start).unwrap_or_default()));
        out.push_str(prefix.get(range.clone()).unwrap_or_default());
        last = range.end;
    }
    out.push_str(&unescape(prefix.get(last..).unwrap_or_default()));
    out
}

/// `/u/{id}` and `/u/{name}` differ only in parameter names: two routes meant
/// to share one path with different methods, spelled inconsistently.
pub(super) fn same_shape(a: &str, b: &str) -> bool {
    fn shape(p: &str) -> String {
        let mut out = String::with_capacity(p.len());
        let mut last = 0;
        for (range, _) in placeholders(p) {
            out.push_str(p.get(last..range.start).unwrap_or_default());
            let catch_all = p.get(range.clone()).is_some_and(|s| s.starts_with("{*"));
            out.push_str(if catch_all { "{*}" } else { "{}" });
            last = range.end;
        }
        out.push_str(p.get(last..).unwrap_or_default());
        out
    }
    shape(a) == shape(b)
}

/// Whether matchit refuses to hold both patterns in one router (in either
/// insertion order, since its conflict detection is order-dependent).
pub(super) fn patterns_conflict(a: &str, b: &str) -> bool {
    let one_way = |first: &str, second: &str| {
        let mut router = matchit::Router::new();
        router.insert(first, ()).is_ok() && router.insert(second, ()).is_err()
    };
    one_way(a, b) || one_way(b, a)
}
