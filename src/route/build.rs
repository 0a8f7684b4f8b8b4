//! Building the routing table: each route checked on its own, grouped by host and pattern,
//! conflicts reported for every route at once, and the prefix aliases added per host group.

use std::collections::{BTreeMap, HashMap};

use super::host::{self, HostPattern};
use super::method::{Dispatch, MethodSet};
use super::pattern::{bare_path, catch_all_prefix, patterns_conflict, same_shape, validate_path};
use super::{Entry, PrefixRoute, RouteDef, RouteError, RouteTable};

/// How a conflict message refers to a host group.
fn describe_host(host: Option<&HostPattern>) -> String {
    match host {
        None => "on any host".to_string(),
        Some(HostPattern::Exact(h)) => format!("on host {h:?}"),
        Some(HostPattern::Wildcard(suffix)) => format!("on hosts \"*{suffix}\""),
    }
}

/// Routes of one host group: pattern -> indexes of the routes using it.
type Patterns<'d> = BTreeMap<&'d str, Vec<usize>>;

/// State of [`RouteTable::build`]: the definitions, the method set of each,
/// the prefix routes, and the problems found so far.
struct Builder<'d, T> {
    defs: &'d [RouteDef<T>],
    sets: Vec<MethodSet>,
    prefixes: Vec<PrefixRoute>,
    errors: Vec<RouteError>,
}

impl<'d, T> Builder<'d, T> {
    fn error(&mut self, route: usize, field: &'static str, message: String) {
        self.errors.push(RouteError {
            route: self.name(route).to_string(),
            field,
            message,
        });
    }

    fn name(&self, route: usize) -> &'d str {
        let defs: &'d [RouteDef<T>] = self.defs;
        defs.get(route).map_or("", |def| def.name.as_str())
    }

    /// Step 1: each route on its own, then grouped by host and pattern. Routes
    /// with a bad host or path cannot be placed, so they sit out the conflict
    /// checks; a bad method list still yields a usable set, so its conflicts are
    /// reported in the same run.
    fn check_routes(&mut self) -> BTreeMap<Option<HostPattern>, Patterns<'d>> {
        let defs: &'d [RouteDef<T>] = self.defs;
        let mut grouped: BTreeMap<Option<HostPattern>, Patterns<'d>> = BTreeMap::new();
        for (index, def) in defs.iter().enumerate() {
            let host = match def.host.as_deref().map(host::parse_config) {
                None => Some(None),
                Some(Ok(pattern)) => Some(Some(pattern)),
                Some(Err(message)) => {
                    self.error(index, "host", message);
                    None
                }
            };
            let path_ok = match validate_path(&def.path) {
                Ok(()) => true,
                Err(message) => {
                    self.error(index, "path", message);
                    false
                }
            };
            let (set, problems) = MethodSet::from_config(def.methods.as_deref());
            for message in problems {
                self.error(index, "methods", message);
            }
            if let (Some(host), true) = (&host, path_ok) {
                self.note_prefix(index, host, &def.path, &set);
            }
            self.sets.push(set);
            if let (Some(host), true) = (host, path_ok) {
                grouped
                    .entry(host)
                    .or_default()
                    .entry(def.path.as_str())
                    .or_default()
                    .push(index);
            }
        }
        grouped
    }

    /// Remembers a valid route whose pattern has a bare prefix (`/admin` for
    /// `/admin/{*rest}`; `/{*rest}` has none).
    fn note_prefix(
        &mut self,
        route: usize,
        host: &Option<HostPattern>,
        path: &str,
        set: &MethodSet,
    ) {
        let Some(bare) = catch_all_prefix(path).map(bare_path) else {
            return;
        };
        if !bare.is_empty() {
            self.prefixes.push(PrefixRoute {
                route,
                host: host.clone(),
                bare,
                methods: set.probes(),
            });
        }
    }

    /// Step 2: one host group's router. `where_` is how messages name the host.
    fn build_group(&mut self, patterns: Patterns<'d>, where_: &str) -> matchit::Router<Dispatch> {
        // (pattern, its routes sorted by name, dispatch)
        let mut slots = Vec::with_capacity(patterns.len());
        for (pattern, mut routes) in patterns {
            routes.sort_by(|&a, &b| self.name(a).cmp(self.name(b)).then(a.cmp(&b)));
            self.check_shared_pattern(pattern, &routes, where_);
            let dispatch = Dispatch::new(
                &routes
                    .iter()
                    .filter_map(|&r| Some((r, self.sets.get(r)?)))
                    .collect::<Vec<_>>(),
            );
            slots.push((pattern, routes, dispatch));
        }

        // Insert in the order of each pattern's first route name, so which route
        // of a conflicting pair gets the error depends neither on file order
        // nor on the pattern text.
        slots.sort_by_key(|(_, routes, _)| routes.first().map(|&r| self.name(r)));
        let mut router = matchit::Router::new();
        // (pattern, its routes) of the patterns inserted so far
        let mut inserted: Vec<(&str, Vec<usize>)> = Vec::new();
        // What the router holds, in insertion order, to rebuild it from.
        let mut entries: Vec<(String, Dispatch)> = Vec::new();
        for (pattern, routes, dispatch) in slots {
            match router.insert(pattern, dispatch.clone()) {
                Ok(()) => {
                    inserted.push((pattern, routes));
                    entries.push((pattern.to_string(), dispatch));
                }
                Err(matchit::InsertError::Conflict { with }) => {
                    self.report_conflict(pattern, &routes, &with, &inserted, where_);
                }
                // Syntax was checked in step 1, so this is not expected; report
                // it rather than trust that.
                Err(e) => {
                    for &route in &routes {
                        let message = format!("{pattern:?} is not a valid route pattern: {e}");
                        self.error(route, "path", message);
                    }
                }
            }
        }
        add_prefix_aliases(&mut router, entries);
        router
    }

    /// Routes (sorted by name) sharing one pattern in one host group must have
    /// disjoint methods. Each overlapping pair is reported once, on the
    /// later-named route.
    fn check_shared_pattern(&mut self, pattern: &str, routes: &[usize], where_: &str) {
        for (j, &later) in routes.iter().enumerate() {
            for &earlier in routes.get(..j).unwrap_or_default() {
                let (Some(a), Some(b)) = (self.sets.get(earlier), self.sets.get(later)) else {
                    continue;
                };
                if let Some(methods) = a.overlap(b) {
                    let what = if methods.is_empty() {
                        format!("{pattern} for any method")
                    } else {
                        format!("{} {pattern}", methods.join(", "))
                    };
                    let message = format!(
                        "ambiguous with route {:?}: both match {what} {where_}",
                        self.name(earlier)
                    );
                    self.error(later, "methods", message);
                }
            }
        }
    }

    /// matchit refused `pattern` (used by `routes`) because of an already
    /// inserted pattern. Names the route(s) it conflicts with.
    fn report_conflict(
        &mut self,
        pattern: &str,
        routes: &[usize],
        with: &str,
        inserted: &[(&str, Vec<usize>)],
        where_: &str,
    ) {
        // matchit names the pattern it tripped over, which may be a
        // reconstruction rather than a pattern we inserted, so find the real
        // culprits pairwise (this is the error path; cost does not matter).
        let mut culprits: Vec<&(&str, Vec<usize>)> = inserted
            .iter()
            .filter(|(other, _)| patterns_conflict(other, pattern))
            .collect();
        if culprits.is_empty() {
            culprits.extend(inserted.iter().filter(|(p, _)| *p == with));
        }
        for &route in routes {
            if culprits.is_empty() {
                let message =
                    format!("ambiguous: {pattern:?} conflicts with the pattern {with:?} {where_}");
                self.error(route, "path", message);
            }
            for (other, other_routes) in &culprits {
                // The same path spelled two ways, with disjoint methods: the
                // author meant the routes to share it.
                let disjoint =
                    other_routes
                        .iter()
                        .all(|&o| match (self.sets.get(o), self.sets.get(route)) {
                            (Some(a), Some(b)) => a.overlap(b).is_none(),
                            _ => false,
                        });
                let hint = if disjoint && same_shape(pattern, other) {
                    "; routes sharing a path with different methods must spell it \
                     identically, parameter names included"
                } else {
                    ""
                };
                let other_route = other_routes.first().map_or("", |&o| self.name(o));
                let message = format!(
                    "ambiguous with route {other_route:?}: {pattern:?} and {other:?} can match \
                     the same request {where_} and neither is more specific{hint}"
                );
                self.error(route, "path", message);
            }
        }
    }
}

/// Step 3 of a group: `/p/` for each `/p/{*rest}` (same dispatch), inserted
/// after every configured pattern so that any of them that holds the path
/// keeps it. `entries` are the group's patterns in insertion order.
fn add_prefix_aliases(
    router: &mut matchit::Router<Dispatch>,
    mut entries: Vec<(String, Dispatch)>,
) {
    let aliases: Vec<(String, Dispatch)> = entries
        .iter()
        .filter_map(|(pattern, dispatch)| {
            Some((catch_all_prefix(pattern)?.to_string(), dispatch.clone()))
        })
        .collect();
    for (alias, dispatch) in aliases {
        // A route for the prefix itself wins (a static pattern beats a
        // catch-all); no need to ask matchit.
        if entries.iter().any(|(pattern, _)| *pattern == alias) {
            continue;
        }
        match router.insert(alias.as_str(), dispatch.clone()) {
            Ok(()) => entries.push((alias, dispatch)),
            // Held by a configured pattern matchit cannot rank against it
            // (`/{id}/` for the alias `/{name}/`): that pattern keeps it.
            // matchit does not say what state a refused insert leaves behind
            // (it may split nodes on its way), so rather than trust it, the
            // router is rebuilt from what it accepted. Rare: a route for the
            // prefix itself is skipped above.
            Err(_) => *router = router_of(&entries),
        }
    }
}

/// A router holding `entries`, inserted in order (each was accepted in that
/// order before, so none fails).
fn router_of(entries: &[(String, Dispatch)]) -> matchit::Router<Dispatch> {
    let mut router = matchit::Router::new();
    for (pattern, dispatch) in entries {
        // Cannot fail: this exact sequence was accepted before.
        let _ = router.insert(pattern.as_str(), dispatch.clone());
    }
    router
}

impl<T> RouteTable<T> {
    /// Validates the routes and builds the table.
    ///
    /// # Errors
    ///
    /// Returns **every** problem found across all routes (not just the first),
    /// sorted by route name, then field; see [`RouteError`].
    pub fn build(defs: Vec<RouteDef<T>>) -> Result<Self, Vec<RouteError>> {
        let mut builder = Builder {
            defs: &defs,
            sets: Vec::with_capacity(defs.len()),
            prefixes: Vec::new(),
            errors: Vec::new(),
        };
        let grouped = builder.check_routes();
        let mut groups = Vec::new();
        let mut hosts = HashMap::default();
        let mut any_host = None;
        for (host, patterns) in grouped {
            let router = builder.build_group(patterns, &describe_host(host.as_ref()));
            match host {
                None => any_host = Some(router),
                Some(pattern) => {
                    hosts.insert(Box::<[u8]>::from(pattern.key().as_bytes()), groups.len());
                    groups.push(router);
                }
            }
        }

        let mut errors = builder.errors;
        let prefixes = builder.prefixes;
        if !errors.is_empty() {
            // Stable: problems of one field keep the order they were found in.
            errors.sort_by(|a, b| a.route.cmp(&b.route).then(a.field.cmp(b.field)));
            return Err(errors);
        }

        let wildcard_lens = hosts
            .keys()
            .filter(|k| k.first() == Some(&b'.'))
            .fold((usize::MAX, 0), |(short, long), k| {
                (short.min(k.len()), long.max(k.len()))
            });
        let routes = defs
            .into_iter()
            .map(|def| Entry {
                name: def.name.into_boxed_str(),
                value: def.value,
            })
            .collect();
        Ok(RouteTable {
            routes,
            groups,
            hosts,
            wildcard_lens,
            any_host,
            prefixes,
        })
    }
}
