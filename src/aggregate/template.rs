//! A part's `path` template: literal text with `{param}`, `{claim.NAME}`, `{consumer}`,
//! `{query.NAME}`, `{header.NAME}` and `{parts.PART.dot.path}` placeholders. Every value is
//! percent-encoded as one path segment (before `?`) or one query value (after it), so a value
//! like `../../admin` or `a/b?x=1` stays inside its slot; a value that is a dot segment on its
//! own (`.`, `..`) or empty in the path cannot be one segment and counts as missing.

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes kept as they are: the unreserved characters of RFC 3986. Everything else is encoded,
/// `/`, `?`, `#`, `&`, `=`, `+`, `%` and `;` included.
const ONE_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A parameter the route's path captured.
    Param(String),
    /// A claim of the caller's verified JWT.
    Claim(String),
    /// The caller's consumer name (API key) or JWT `sub`.
    Consumer,
    /// A query parameter of the client's request.
    Query(String),
    /// A header of the client's request.
    Header(http::HeaderName),
    /// A value in another part's answer: the part's name and the member path inside it.
    Part { part: String, path: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Value { source: Source, in_query: bool },
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// A value the template needs is not there (or cannot be one segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing<'t>(pub &'t Source);

impl Template {
    /// Parses `text`, checking that every `{param}` is one of `params` (the names the route's
    /// path captures). The error says what is wrong, for the config check.
    pub fn parse(text: &str, params: &[String]) -> Result<Template, String> {
        if !text.starts_with('/') {
            return Err(format!("\"{text}\" must start with '/'"));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut in_query = false;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                return Err(format!("\"{text}\" has a '{{' without a matching '}}'"));
            };
            if open > 0 {
                let literal = &rest[..open];
                check_literal(text, literal)?;
                in_query |= literal.contains('?');
                pieces.push(Piece::Literal(literal.to_string()));
            }
            let source = source(&rest[open + 1..close], params)?;
            pieces.push(Piece::Value { source, in_query });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            check_literal(text, rest)?;
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// Every source the template reads.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Value { source, .. } => Some(source),
            Piece::Literal(_) => None,
        })
    }

    /// The parts this template reads a value from.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.sources().filter_map(|s| match s {
            Source::Part { part, .. } => Some(part.as_str()),
            _ => None,
        })
    }

    /// Fills the template: `value` looks each source up (unencoded). The result is an
    /// origin-form target (`/path?query`) whose every substituted value is one encoded slot.
    pub fn render<'t>(
        &'t self,
        mut value: impl FnMut(&Source) -> Option<String>,
    ) -> Result<String, Missing<'t>> {
        let mut out = String::with_capacity(64);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Value { source, in_query } => {
                    let v = value(source).ok_or(Missing(source))?;
                    if !in_query && matches!(v.as_str(), "" | "." | "..") {
                        return Err(Missing(source));
                    }
                    out.extend(percent_encode(v.as_bytes(), ONE_SEGMENT));
                }
            }
        }
        Ok(out)
    }
}

/// Literal text must be something a request target may carry as it is.
fn check_literal(text: &str, literal: &str) -> Result<(), String> {
    let ok = literal
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'#' | b'}' | b'"' | b'<' | b'>' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{text}\" has characters a request target cannot carry as they are (spaces, '#', '}}', quotes): percent-encode them"
        ))
    }
}

fn source(name: &str, params: &[String]) -> Result<Source, String> {
    let (kind, rest) = name.split_once('.').unwrap_or((name, ""));
    let named = |what: &str| {
        if rest.is_empty() {
            Err(format!(
                "{{{kind}.}} needs a {what} name, like {{{kind}.id}}"
            ))
        } else {
            Ok(rest.to_string())
        }
    };
    match kind {
        "consumer" if rest.is_empty() => Ok(Source::Consumer),
        "claim" => named("claim").map(Source::Claim),
        "query" => named("parameter").map(Source::Query),
        "header" => http::HeaderName::from_bytes(named("header")?.as_bytes())
            .map(Source::Header)
            .map_err(|_| format!("{{{name}}}: \"{rest}\" is not a header name")),
        "parts" => {
            let mut segments = rest.split('.');
            let part = segments.next().unwrap_or_default().to_string();
            let path: Vec<String> = segments.map(str::to_string).collect();
            if part.is_empty() || path.is_empty() || path.iter().any(String::is_empty) {
                return Err(format!(
                    "{{{name}}} must name a part and a member of its answer, like {{parts.profile.team_id}}"
                ));
            }
            Ok(Source::Part { part, path })
        }
        _ if params.iter().any(|p| p == name) => Ok(Source::Param(name.to_string())),
        _ => Err(format!(
            "{{{name}}} is not a path parameter of the route (captured: {}) nor claim.NAME, consumer, query.NAME, header.NAME or parts.PART.member",
            if params.is_empty() {
                "none".to_string()
            } else {
                params.join(", ")
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Template, v: &str) -> Result<String, ()> {
        t.render(|_| Some(v.to_string())).map_err(|_| ())
    }

    #[test]
    fn values_stay_in_their_segment() {
        let t = Template::parse("/users/{id}/feed", &["id".into()]).unwrap();
        assert_eq!(render(&t, "42").unwrap(), "/users/42/feed");
        assert_eq!(
            render(&t, "../../admin").unwrap(),
            "/users/..%2F..%2Fadmin/feed"
        );
        assert_eq!(render(&t, "a b?c#d").unwrap(), "/users/a%20b%3Fc%23d/feed");
        assert_eq!(render(&t, "%2F").unwrap(), "/users/%252F/feed");
        assert_eq!(render(&t, "é").unwrap(), "/users/%C3%A9/feed");
        for dots in ["", ".", ".."] {
            assert!(
                render(&t, dots).is_err(),
                "{dots:?} would not be one segment"
            );
        }
    }

    #[test]
    fn query_values_are_one_value() {
        let t = Template::parse("/feed?lang={query.lang}&limit=20", &[]).unwrap();
        assert_eq!(
            render(&t, "en&admin=1").unwrap(),
            "/feed?lang=en%26admin%3D1&limit=20"
        );
        assert_eq!(render(&t, "..").unwrap(), "/feed?lang=..&limit=20");
    }

    #[test]
    fn reads_every_kind_of_source() {
        let t = Template::parse(
            "/x/{claim.sub}/{consumer}/{header.x-app}/{parts.profile.team.id}?q={query.q}",
            &[],
        )
        .unwrap();
        let sources: Vec<_> = t.sources().cloned().collect();
        assert_eq!(
            sources,
            vec![
                Source::Claim("sub".into()),
                Source::Consumer,
                Source::Header(http::HeaderName::from_static("x-app")),
                Source::Part {
                    part: "profile".into(),
                    path: vec!["team".into(), "id".into()]
                },
                Source::Query("q".into()),
            ]
        );
        assert_eq!(t.parts().collect::<Vec<_>>(), vec!["profile"]);
    }

    #[test]
    fn refuses_bad_templates() {
        for (text, needle) in [
            ("users/{id}", "start with '/'"),
            ("/u/{nope}", "{nope}"),
            ("/u/{id", "without a matching"),
            ("/u/{parts.profile}", "member"),
            ("/u/{claim.}", "claim name"),
            ("/u/{header.bad header}", "not a header name"),
            ("/u v/{id}", "cannot carry"),
        ] {
            let err = Template::parse(text, &["id".into()]).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
