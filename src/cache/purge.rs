//! The purge request (`POST /cache/purge` on the admin listener, and the message instances
//! pass each other through Redis): one of `{"url", "host"?}`, `{"prefix"}`, `{"tag"}`,
//! `{"cache"}`, checked so a mistake is named rather than purging nothing (or everything).

use super::store::Purge;
use serde::{Deserialize, Serialize};

/// Largest purge request body read.
pub const MAX_BODY: usize = 16 * 1024;

/// The JSON form, both ways.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<String>,
}

/// Reads a purge request; `Err` says what is wrong with it, for a 400.
pub fn parse(body: &[u8]) -> Result<Purge, String> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| {
        format!("the body must be a JSON object with one of \"url\", \"prefix\", \"tag\" or \"cache\": {e}")
    })?;
    let given = [&wire.url, &wire.prefix, &wire.tag, &wire.cache]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given != 1 {
        return Err("give exactly one of \"url\", \"prefix\", \"tag\" or \"cache\"".into());
    }
    if wire.host.is_some() && wire.url.is_none() {
        return Err("\"host\" only goes with \"url\"".into());
    }
    let nonempty = |field: &str, v: String| {
        if v.is_empty() {
            Err(format!("\"{field}\" is empty"))
        } else {
            Ok(v)
        }
    };
    if let Some(url) = wire.url {
        if !url.starts_with('/') {
            return Err("\"url\" is a path and query, starting with '/'".into());
        }
        let host = wire.host.map(|h| nonempty("host", h)).transpose()?;
        return Ok(Purge::Url { host, url });
    }
    if let Some(prefix) = wire.prefix {
        if !prefix.starts_with('/') {
            return Err("\"prefix\" is a path prefix, starting with '/'".into());
        }
        return Ok(Purge::Prefix(prefix));
    }
    if let Some(tag) = wire.tag {
        let tag = nonempty("tag", tag)?;
        if tag.contains(char::is_whitespace) {
            return Err("\"tag\" is one tag, without spaces".into());
        }
        return Ok(Purge::Tag(tag));
    }
    Ok(Purge::Cache(nonempty(
        "cache",
        wire.cache.unwrap_or_default(),
    )?))
}

/// The purge as entries are labelled: a URL's host in the form the routes read it (lower
/// case, without port or trailing dot) and its path, like a prefix, in the normal form a
/// request's path is routed and stored in (`%61` is `a`, `//` merged when the server merges
/// them). `/v1//items` and `/v1/%69tems` then purge what a request spelled so would have
/// stored. `Err` names what is wrong, for a 400.
pub fn in_normal_form(purge: Purge, merge_slashes: bool) -> Result<Purge, String> {
    let normal_path = |field: &str, path: &str| {
        crate::request_target::normalize(path.as_bytes(), merge_slashes)
            .map(|p| p.path.into_owned())
            .map_err(|e| format!("\"{field}\": {}", e.detail()))
    };
    Ok(match purge {
        Purge::Url { host, url } => {
            let (path, query) = match url.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (url.as_str(), None),
            };
            let mut normal = normal_path("url", path)?;
            if let Some(query) = query {
                normal.push('?');
                normal.push_str(query);
            }
            let host = match host {
                Some(h) => Some(
                    crate::request_target::host::is_valid(h.as_bytes())
                        .then(|| crate::route::host_name(&h))
                        .flatten()
                        .ok_or_else(|| format!("\"host\": {h:?} is not a host name"))?
                        .into_owned(),
                ),
                None => None,
            };
            Purge::Url { host, url: normal }
        }
        Purge::Prefix(prefix) => Purge::Prefix(normal_path("prefix", &prefix)?),
        other => other,
    })
}

/// The JSON form of a purge, as [`parse`] reads it (`None` for the local-only kind).
pub fn to_json(purge: &Purge) -> Option<Vec<u8>> {
    let mut wire = Wire::default();
    match purge {
        Purge::Url { host, url } => {
            wire.url = Some(url.clone());
            wire.host = host.clone();
        }
        Purge::Prefix(p) => wire.prefix = Some(p.clone()),
        Purge::Tag(t) => wire.tag = Some(t.clone()),
        Purge::Cache(c) => wire.cache = Some(c.clone()),
        Purge::Path { .. } => return None,
    }
    serde_json::to_vec(&wire).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_round_trips() {
        for body in [
            r#"{"url":"/v1/products/7?lang=en","host":"api.example.com"}"#,
            r#"{"url":"/a"}"#,
            r#"{"prefix":"/v1/products/"}"#,
            r#"{"tag":"product-7"}"#,
            r#"{"cache":"short"}"#,
        ] {
            let purge = parse(body.as_bytes()).unwrap();
            assert_eq!(to_json(&purge).unwrap(), body.as_bytes(), "{body}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (body, says) in [
            ("", "JSON object"),
            ("[]", "JSON object"),
            (r#"{"urls":"/a"}"#, "unknown field"),
            ("{}", "exactly one"),
            (r#"{"url":"/a","tag":"t"}"#, "exactly one"),
            (r#"{"tag":"t","host":"h"}"#, "only goes with"),
            (r#"{"url":"a"}"#, "starting with '/'"),
            (r#"{"prefix":""}"#, "starting with '/'"),
            (r#"{"tag":"a b"}"#, "one tag"),
            (r#"{"cache":""}"#, "is empty"),
            (r#"{"url":7}"#, "JSON object"),
        ] {
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
    }
}
