//! Checks of a route's `aggregate`: what can be told from the file alone (references, `into`
//! and `fields`, member names that would collide). Templates, their dependencies and cycles
//! are checked when the route is compiled (`aggregate::compile`), which `check` runs too.

use super::Validator;
use crate::config::types::{AggregateConfig, Config, MetaMember, PartConfig, RouteConfig};
use std::collections::BTreeMap;

impl Validator {
    /// A route's `upstream` or `aggregate`: exactly one of them.
    pub(super) fn route_backend(&mut self, config: &Config, base: &str, r: &RouteConfig) {
        match (&r.upstream, &r.aggregate) {
            (None, None) => self.err(
                format!("{base}.upstream"),
                "missing: every route needs an upstream (or an aggregate)",
            ),
            (Some(up), None) => self.reference(
                config,
                &format!("{base}.upstream"),
                "upstreams",
                up,
                config.upstreams.keys(),
            ),
            (Some(_), Some(_)) => self.err(
                format!("{base}.upstream"),
                "an aggregate route answers from its parts: remove upstream (each part names its own)",
            ),
            (None, Some(aggregate)) => self.aggregate(config, base, r, aggregate),
        }
    }

    fn aggregate(&mut self, config: &Config, base: &str, r: &RouteConfig, a: &AggregateConfig) {
        for (key, set) in [
            ("rewrite", r.rewrite.is_some()),
            ("fallback", r.fallback.is_some()),
            ("cache", r.cache.is_some()),
        ] {
            if set {
                let hint = if key == "cache" {
                    "give each part its own cache instead"
                } else {
                    "it applies to proxied routes only"
                };
                self.err(
                    format!("{base}.{key}"),
                    format!("not available on an aggregate route: {hint}"),
                );
            }
        }
        let base = format!("{base}.aggregate");
        if a.parts.is_empty() {
            self.err(
                format!("{base}.parts"),
                "an aggregate needs at least one part",
            );
        }
        if a.max_part_bytes.is_some_and(|s| s.bytes() == 0) {
            self.err(format!("{base}.max_part_bytes"), "must be at least \"1B\"");
        }
        let meta = match &a.meta {
            MetaMember::Named(name) if name.is_empty() => {
                self.err(format!("{base}.meta"), "must be a member name or false");
                None
            }
            MetaMember::Named(name) => Some(name.as_str()),
            MetaMember::Off => None,
        };
        // Top-level members of the answer and the part that fills each.
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        for (name, part) in &a.parts {
            let path = format!("{base}.parts.{name}");
            self.name(&path, name);
            self.part(config, &path, part);
            for member in part_members(name, part) {
                let clash = if Some(member.as_str()) == meta {
                    Some(format!(
                        "member \"{member}\" is the meta member's name; rename one (aggregate.meta)"
                    ))
                } else {
                    members.get(&member).map(|other| {
                        format!("member \"{member}\" is also filled by part \"{other}\"")
                    })
                };
                match clash {
                    Some(message) => self.err(member_key(&path, part), message),
                    None => {
                        members.insert(member, name.clone());
                    }
                }
            }
        }
    }

    fn part(&mut self, config: &Config, path: &str, p: &PartConfig) {
        self.reference(
            config,
            &format!("{path}.upstream"),
            "upstreams",
            &p.upstream,
            config.upstreams.keys(),
        );
        if let Some(cache) = &p.cache {
            let key = format!("{path}.cache");
            self.reference(config, &key, "caches", cache, config.caches.keys());
        }
        if let Some(method) = &p.method {
            self.method(&format!("{path}.method"), method);
        }
        if let Some(t) = p.timeout {
            self.positive(&format!("{path}.timeout"), t);
        }
        match p.into.as_deref() {
            None => {}
            Some(".") if p.fields.is_none() => self.err(
                format!("{path}.into"),
                "into = \".\" needs fields: the merged members must be listed so collisions can be found",
            ),
            Some(".") => {}
            Some(other) => self.err(
                format!("{path}.into"),
                format!("\"{other}\" is not supported: use \".\" (merge at the root) or leave it out"),
            ),
        }
        if let Some(fields) = &p.fields {
            if fields.is_empty() {
                self.err(
                    format!("{path}.fields"),
                    "list at least one member, or leave fields out",
                );
            }
            for (i, field) in fields.iter().enumerate() {
                if field.split('.').any(str::is_empty) {
                    self.err(
                        format!("{path}.fields[{i}]"),
                        format!("\"{field}\" is not a member path like \"items\" or \"user.name\""),
                    );
                }
            }
        }
        for (i, h) in p.forward_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.err(
                    format!("{path}.forward_headers[{i}]"),
                    format!("\"{h}\" is not a header name"),
                );
            } else if let Some(why) = crate::config::reserved::reserved(h) {
                self.err(
                    format!("{path}.forward_headers[{i}]"),
                    format!("\"{h}\" {why}"),
                );
            }
        }
    }
}

/// The top-level members of the answer a part fills: its name, or with `into = "."` the first
/// segment of each field.
fn part_members(name: &str, p: &PartConfig) -> Vec<String> {
    match (&p.into, &p.fields) {
        (Some(_), Some(fields)) => {
            let mut members: Vec<String> = fields
                .iter()
                .filter_map(|f| f.split('.').next())
                .map(str::to_string)
                .collect();
            members.sort();
            members.dedup();
            members
        }
        _ => vec![name.to_string()],
    }
}

/// Where a member collision is reported: the part's `fields` when it merges at the root.
fn member_key(path: &str, p: &PartConfig) -> String {
    if p.into.is_some() && p.fields.is_some() {
        format!("{path}.fields")
    } else {
        path.to_string()
    }
}
