//! An `aggregate` config compiled: templates parsed against the route's path parameters, part
//! and cache references resolved, and the parts put in dependency order. Reports what the file
//! alone cannot show: a template naming an unknown parameter or part, a dependency cycle, an
//! unsafe method on a part others read from, caller values on a route without auth.

use super::template::{Source, Template};
use super::{Aggregate, Part};
use crate::cache::CachePolicy;
use crate::config::{AggregateConfig, ConfigError, MetaMember, PartConfig};
use crate::upstream::Upstream;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Default `aggregate.max_part_bytes`.
pub const DEFAULT_MAX_PART_BYTES: u64 = 1024 * 1024;

/// What a route's aggregate is compiled against.
pub struct Context<'a> {
    /// The route's key path (`routes.home`).
    pub base: &'a str,
    pub upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    pub caches: &'a BTreeMap<&'a str, Arc<CachePolicy>>,
    /// The parameters the route's path captures.
    pub params: &'a [String],
    /// The route has an auth policy.
    pub personal: bool,
}

/// Compiles `cfg`. Errors name the key path; an empty list means a reference already reported
/// by validation (an unknown upstream or cache).
pub fn compile(cfg: &AggregateConfig, cx: &Context<'_>) -> Result<Aggregate, Vec<ConfigError>> {
    let base = format!("{}.aggregate.parts", cx.base);
    let mut errors = Vec::new();
    let mut unresolved = false;
    let mut parts: Vec<(Part, Vec<String>)> = Vec::new();
    for (name, p) in &cfg.parts {
        let key = format!("{base}.{name}");
        match compile_part(name, p, cx) {
            Ok(Some(part)) => {
                let reads: Vec<String> = part.path.parts().map(str::to_string).collect();
                for dep in &reads {
                    if !cfg.parts.contains_key(dep) {
                        errors.push(ConfigError::new(
                            format!("{key}.path"),
                            format!("reads part \"{dep}\", which this aggregate does not have"),
                        ));
                    }
                }
                parts.push((part, reads));
            }
            Ok(None) => unresolved = true,
            Err((suffix, message)) => {
                errors.push(ConfigError::new(format!("{key}.{suffix}"), message))
            }
        }
    }
    if !errors.is_empty() || unresolved {
        return Err(errors);
    }
    let ordered = order(parts, &base)?;
    for part in &ordered {
        for &dep in &part.depends_on {
            let dep = &ordered[dep];
            if !dep.method.is_safe() {
                errors.push(ConfigError::new(
                    format!("{base}.{}.method", dep.name),
                    format!(
                        "part \"{}\" reads this part's answer, so it must not change anything upstream: use a safe method (GET)",
                        part.name
                    ),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Aggregate {
        route: Arc::from(cx.base.trim_start_matches("routes.")),
        meta: match &cfg.meta {
            MetaMember::Named(name) => Some(Arc::from(name.as_str())),
            MetaMember::Off => None,
        },
        max_part_bytes: cfg
            .max_part_bytes
            .map_or(DEFAULT_MAX_PART_BYTES, |s| s.bytes())
            .try_into()
            .unwrap_or(usize::MAX),
        template_headers: template_headers(&ordered),
        parts: ordered,
        personal: cx.personal,
    })
}

/// The client headers the parts' targets are made from, without repeats.
fn template_headers(parts: &[Part]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for source in parts.iter().flat_map(|p| p.path.sources()) {
        if let Source::Header(name) = source {
            if !names.iter().any(|n| n == name.as_str()) {
                names.push(name.as_str().to_owned());
            }
        }
    }
    names
}

/// `Ok(None)`: the part names an upstream or cache that failed or is unknown (reported already).
fn compile_part(
    name: &str,
    p: &PartConfig,
    cx: &Context<'_>,
) -> Result<Option<Part>, (&'static str, String)> {
    let path = Template::parse(&p.path, cx.params).map_err(|e| ("path", e))?;
    if !cx.personal {
        let caller = path
            .sources()
            .find(|s| matches!(s, Source::Claim(_) | Source::Consumer));
        if caller.is_some() {
            return Err((
                "path",
                "reads the caller ({claim.NAME} or {consumer}) but the route has no auth".into(),
            ));
        }
    }
    if path.parts().any(|dep| dep == name) {
        return Err(("path", "a part cannot read its own answer".into()));
    }
    let Some(upstream) = cx.upstreams.get(&p.upstream) else {
        return Ok(None);
    };
    let cache = match &p.cache {
        Some(c) => match cx.caches.get(c.as_str()) {
            Some(policy) => Some(policy.clone()),
            None => return Ok(None),
        },
        None => None,
    };
    let method = match &p.method {
        Some(m) => http::Method::from_bytes(m.as_bytes())
            .map_err(|_| ("method", format!("\"{m}\" is not an HTTP method")))?,
        None => http::Method::GET,
    };
    Ok(Some(Part {
        name: Arc::from(name),
        upstream: upstream.clone(),
        method,
        path,
        required: p.required,
        timeout: p.timeout.map(|t| t.get()),
        cache,
        fields: p.fields.as_ref().map(|fields| {
            fields
                .iter()
                .map(|f| f.split('.').map(str::to_string).collect())
                .collect()
        }),
        at_root: p.into.is_some(),
        forward_headers: p
            .forward_headers
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect(),
        depends_on: Vec::new(),
    }))
}

/// Orders the parts so each comes after those it reads (Kahn's algorithm, ties by name), and
/// fills `depends_on` with indexes into the result. A cycle is an error naming its parts.
fn order(parts: Vec<(Part, Vec<String>)>, base: &str) -> Result<Vec<Part>, Vec<ConfigError>> {
    let mut pending: Vec<(Part, Vec<String>)> = parts;
    let mut ordered: Vec<Part> = Vec::with_capacity(pending.len());
    let mut index: BTreeMap<Arc<str>, usize> = BTreeMap::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|(_, reads)| reads.iter().all(|r| index.contains_key(r.as_str())));
        let Some(at) = ready else {
            let names: Vec<&str> = pending.iter().map(|(p, _)| &*p.name).collect();
            return Err(pending
                .iter()
                .map(|(p, _)| {
                    ConfigError::new(
                        format!("{base}.{}.path", p.name),
                        format!(
                            "the parts {} read each other's answers in a cycle; none could start",
                            names.join(", ")
                        ),
                    )
                })
                .collect());
        };
        let (mut part, reads) = pending.remove(at);
        let mut deps: Vec<usize> = reads.iter().map(|r| index[r.as_str()]).collect();
        deps.sort_unstable();
        deps.dedup();
        part.depends_on = deps;
        index.insert(part.name.clone(), ordered.len());
        ordered.push(part);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts' names in compiled order, with what each depends on (by name), from
    /// `(name, path)` pairs.
    fn order_of(parts: &[(&str, &str)]) -> Result<Vec<(String, Vec<String>)>, Vec<ConfigError>> {
        let registry = crate::upstream::StateRegistry::new(std::sync::Arc::new(
            crate::observe::Metrics::new(),
        ));
        let cfg: crate::config::UpstreamConfig =
            toml::from_str("targets = [\"127.0.0.1:9\"]").unwrap();
        let upstream =
            Arc::new(Upstream::compile("u", &cfg, &registry, std::path::Path::new(".")).unwrap());
        let upstreams = BTreeMap::from([("u".to_string(), upstream)]);
        let caches = BTreeMap::new();
        let aggregate = AggregateConfig {
            meta: MetaMember::default(),
            max_part_bytes: None,
            parts: parts
                .iter()
                .map(|(name, path)| {
                    let part: PartConfig =
                        toml::from_str(&format!("upstream = \"u\"\npath = \"{path}\"")).unwrap();
                    (name.to_string(), part)
                })
                .collect(),
        };
        let cx = Context {
            base: "routes.r",
            upstreams: &upstreams,
            caches: &caches,
            params: &[],
            personal: false,
        };
        let compiled = compile(&aggregate, &cx)?;
        Ok(compiled
            .parts
            .iter()
            .map(|p| {
                let deps = p
                    .depends_on
                    .iter()
                    .map(|&d| compiled.parts[d].name.to_string())
                    .collect();
                (p.name.to_string(), deps)
            })
            .collect())
    }

    #[test]
    fn parts_come_after_the_parts_they_read() {
        let order = order_of(&[
            ("a", "/a/{parts.c.id}"),
            ("b", "/b"),
            ("c", "/c/{parts.b.id}/{parts.b.x}"),
        ])
        .unwrap();
        assert_eq!(
            order,
            vec![
                ("b".to_string(), vec![]),
                ("c".to_string(), vec!["b".to_string()]),
                ("a".to_string(), vec!["c".to_string()]),
            ]
        );
    }

    #[test]
    fn a_cycle_is_an_error_on_each_of_its_parts() {
        let errors = order_of(&[
            ("a", "/a/{parts.b.id}"),
            ("b", "/b/{parts.a.id}"),
            ("c", "/c"),
        ])
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "routes.r.aggregate.parts.a.path",
                "routes.r.aggregate.parts.b.path"
            ]
        );
        let self_read = order_of(&[("a", "/a/{parts.a.id}")]).unwrap_err();
        assert!(
            self_read[0].message.contains("its own answer"),
            "{self_read:?}"
        );
    }
}
