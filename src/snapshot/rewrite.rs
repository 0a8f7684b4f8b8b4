//! Path rewriting: a route's `rewrite = "/users/{rest}"` template, filled from the parameters its
//! `path` pattern captured. Parsed once when the config is compiled.

/// A compiled rewrite template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
}

impl Rewrite {
    /// Parses `template`, checking that every `{name}` is one of `params` (the names the route's
    /// path captures).
    pub fn parse(template: &str, params: &[String]) -> Result<Rewrite, String> {
        if !template.starts_with('/') {
            return Err(format!("\"{template}\" must start with '/'"));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                return Err(format!("\"{template}\" has a '{{' without a matching '}}'"));
            };
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let name = rest[open + 1..close].trim_start_matches('*');
            if !params.iter().any(|p| p == name) {
                return Err(format!(
                    "placeholder {{{name}}} is not captured by the route's path (captured: {})",
                    if params.is_empty() {
                        "none".to_string()
                    } else {
                        params.join(", ")
                    }
                ));
            }
            parts.push(Part::Param(name.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("\"{template}\" has a '}}' without a matching '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Rewrite { parts })
    }

    /// Builds the upstream path and query. `param` looks up a captured value (from the path in
    /// normal form); the query string, if any, is carried over byte for byte.
    pub fn apply<'a>(
        &self,
        param: impl Fn(&str) -> Option<&'a str>,
        query: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Part::Param(name) => out.extend_from_slice(param(name).unwrap_or("").as_bytes()),
            }
        }
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q);
        }
        out
    }
}

/// Names captured by a matchit path pattern: `/a/{id}/{*rest}` gives `id`, `rest`.
pub fn path_params(pattern: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        // `{{` is an escaped brace in matchit, not a parameter.
        if let Some(escaped) = after.strip_prefix('{') {
            rest = escaped;
            continue;
        }
        let Some(close) = after.find('}') else { break };
        names.push(after[..close].trim_start_matches('*').to_string());
        rest = &after[close + 1..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(
        p: &'a [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<&'static str> + 'a {
        move |name| p.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn fills_placeholders_and_keeps_query() {
        let names = path_params("/v1/users/{id}/{*rest}");
        assert_eq!(names, vec!["id", "rest"]);
        let rw = Rewrite::parse("/users/{id}/x/{rest}", &names).unwrap();
        assert_eq!(
            rw.apply(params(&[("id", "42"), ("rest", "a/b")]), Some(b"q=1")),
            b"/users/42/x/a/b?q=1"
        );
        assert_eq!(
            Rewrite::parse("/static", &[])
                .unwrap()
                .apply(params(&[]), None),
            b"/static"
        );
    }

    #[test]
    fn rejects_unknown_placeholders_and_bad_templates() {
        let names = path_params("/v1/{id}");
        assert!(Rewrite::parse("/u/{nope}", &names)
            .unwrap_err()
            .contains("{nope}"));
        assert!(Rewrite::parse("u/{id}", &names).is_err());
        assert!(Rewrite::parse("/u/{id", &names).is_err());
        assert!(Rewrite::parse("/u/id}", &names).is_err());
    }
}
