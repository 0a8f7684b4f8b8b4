//! The routing table: which configured route serves a request, given its Host,
//! path and method.
//!
//! This module owns route *matching* and the validation that makes matching
//! unambiguous (host syntax, path pattern syntax, method lists, conflicts
//! between routes). It knows nothing else about a route: the value `T` is
//! whatever the caller wants back (typically an `Arc` of the route's runtime
//! settings), and it depends only on [`matchit`] and [`http`], so it can be
//! tested and benchmarked on its own.
//!
//! # Matching rule
//!
//! Routes are matched by specificity, never by their order in the config file
//! (see "Routes are matched by specificity" in the config contract):
//!
//! 1. **Host.** Routes are grouped by their `host`. For a request, the groups
//!    are tried from most to least specific: the route group for the exact host
//!    (`api.example.com`), then the wildcard groups whose suffix the host ends
//!    with, longest suffix first (`*.eu.example.com` before `*.example.com`),
//!    then the group of routes without a `host`.
//! 2. **Path.** Within a group, the path is matched with [`matchit`]: a static
//!    segment beats a `{param}`, which beats a `{*catch_all}`.
//! 3. **Method.** The **first** group whose paths match the request path
//!    decides: if a route on the matched pattern accepts the method, that route
//!    is [`Lookup::Found`]; otherwise the answer is
//!    [`Lookup::MethodNotAllowed`] with the methods of that pattern, *even if* a
//!    less specific group has a route that would accept the method. As in nginx,
//!    a more specific host is never abandoned for a less specific one because
//!    of the method. If no group matches the path, the answer is
//!    [`Lookup::NotFound`].
//!
//! # Prefix routes
//!
//! A pattern ending in `/{*name}` also serves its prefix with the trailing
//! slash: `/admin/{*rest}` matches `/admin/` (matchit alone wants at least one
//! byte for a catch-all, so `/admin/` would fall through to a broader route such
//! as a public `/{*rest}`), and `/{*rest}` matches `/`. For that path the
//! `{*name}` parameter is absent (a `rewrite` fills it with ""), and the
//! methods, and the Allow value of a 405, are those of the catch-all pattern.
//!
//! The prefix is inserted into the group's router as an alias of the
//! catch-all pattern, after every pattern of the config, and only where it
//! fits: a route whose own pattern is the prefix (`/admin/`, `/`) keeps the
//! path, as a static pattern beats a catch-all, and so does a configured
//! pattern that matchit cannot rank against the alias (`/{id}/` against
//! `/{name}/`, the alias of `/{name}/{*rest}`). So the aliases never add a
//! build error. Otherwise the usual ranking applies: a static segment beats a
//! `{param}`, so with `/{id}/` and `/admin/{*rest}`, `/admin/` goes to the
//! latter, as `/admin/x` does.
//!
//! The bare prefix without the slash (`/admin`) is *not* an alias: it is
//! another path, served by whatever route matches it.
//! [`RouteTable::bare_prefixes`] tells which route that is, so that the config
//! can warn when it is protected differently.
//!
//! # Hosts
//!
//! `host = "api.example.com"` matches that host only; `host = "*.example.com"`
//! matches any subdomain at any depth (`a.example.com`, `a.b.example.com`) but
//! never the apex `example.com` itself. IPv6 literals are written in brackets
//! (`"[::1]"`) and compared textually. Matching is ASCII case-insensitive and
//! ignores a `:port` in the request's Host header and one trailing '.'.
//! A request without a Host, or whose Host is not a plausible host name
//! (empty, longer than 253 bytes, a malformed `[...]`, or any byte other than
//! ASCII letters, digits, '-', '_' and '.'), only matches routes without a
//! `host`.
//!
//! # Conflicts
//!
//! The table refuses to build if two routes can match the same request with
//! equal specificity: same host key and the same pattern with overlapping
//! methods (a route without `methods` overlaps every other route), or patterns
//! that [`matchit`] cannot rank (`/u/{id}` vs `/u/{name}`, or `/u/{id}` vs
//! `/u/{*rest}`). Several routes may share a pattern when their method lists
//! are disjoint (`GET /x` and `POST /x`), but must then spell the pattern
//! identically. Routes that differ only in host never conflict.
//!
//! # Performance
//!
//! A lookup allocates nothing (except inside matchit for a pattern with more
//! than 3 parameters): hosts are lowercased, only if needed, into a stack
//! buffer and found in one hash map holding both exact hosts and wildcard
//! suffixes; paths go through a prebuilt radix tree per host group (prefix
//! aliases are ordinary entries of it, so they cost a lookup nothing); the
//! method is resolved by an array index; the Allow value of a 405 is built
//! once, at build time.

mod build;
mod host;
mod method;
mod pattern;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

use http::Method;
/// Path parameters of a match (`{id}`, `{*rest}`), borrowing the route table
/// (names) and the request path (values). Re-exported so that callers need no
/// direct dependency on `matchit`.
pub use matchit::Params;

use host::{BuildHostHasher, HostPattern};
use method::{Choice, Dispatch};

/// One route as written in the config, before validation.
#[derive(Debug, Clone)]
pub struct RouteDef<T> {
    /// Route name from the config (the key of `[routes.<name>]`), e.g. `"users"`.
    /// Used in error messages and returned by lookups; expected to be unique.
    pub name: String,
    /// `None`: any host. `"api.example.com"`: that host only (any case, any
    /// port). `"*.example.com"`: any subdomain, never the apex.
    pub host: Option<String>,
    /// Path pattern in [`matchit`] syntax: `"/v1/users"`, `"/v1/users/{id}"`,
    /// `"/v1/files/{*rest}"`. Literal braces are written `{{` and `}}`.
    pub path: String,
    /// Accepted methods; `None` accepts every method. Methods are
    /// case-sensitive, as in HTTP.
    pub methods: Option<Vec<Method>>,
    /// What a lookup returns for this route.
    pub value: T,
}

/// One problem with one route.
///
/// `field` is `"host"`, `"path"` or `"methods"`, so that the caller can build
/// the key path `routes.<route>.<field>`; the [`Display`](fmt::Display) form is
/// exactly `routes.<route>.<field>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// Name of the route at fault.
    pub route: String,
    /// The offending key of that route: `"host"`, `"path"` or `"methods"`.
    pub field: &'static str,
    /// What is wrong, for a human editing the TOML file. Conflicts name the
    /// other route, e.g. `ambiguous with route "users_v2": both match GET
    /// /v1/users/{id} on any host`.
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "routes.{}.{}: {}", self.route, self.field, self.message)
    }
}

impl std::error::Error for RouteError {}

/// The result of [`RouteTable::lookup`].
#[derive(Debug)]
pub enum Lookup<'t, 'p, T> {
    /// A route accepts this request.
    Found {
        /// The value given in the route's [`RouteDef`].
        route: &'t T,
        /// The route's name.
        name: &'t str,
        /// Values of the pattern's `{param}`s and `{*catch_all}`, taken from the
        /// request path as given (not percent-decoded).
        params: Params<'t, 'p>,
    },
    /// The path matched a pattern, but no route on it accepts the method: the
    /// caller answers 405.
    MethodNotAllowed {
        /// The value for the Allow header, e.g. `"GET, HEAD, POST"`: the methods
        /// of the matched pattern, sorted and deduplicated (built once, at
        /// [`RouteTable::build`]).
        allow: &'t str,
    },
    /// No route matches the path on this host: the caller answers 404.
    NotFound,
}

/// A route's name and value, in the order given to [`RouteTable::build`].
#[derive(Clone)]
struct Entry<T> {
    name: Box<str>,
    value: T,
}

/// A validated, immutable routing table; see the [module docs](self) for the
/// matching rule. Build a new table to change routes (it is cheap to share
/// behind an `Arc` and swap whole).
#[derive(Clone)]
pub struct RouteTable<T> {
    /// Routes; `Dispatch` values in the routers index into this.
    routes: Vec<Entry<T>>,
    /// Path routers of the groups with a `host`, indexed by the values of `hosts`.
    groups: Vec<matchit::Router<Dispatch>>,
    /// Exact hosts (`api.example.com`) and wildcard suffixes (`.example.com`)
    /// to their group. One map serves both: exact keys never start with '.',
    /// wildcard keys always do.
    hosts: HashMap<Box<[u8]>, usize, BuildHostHasher>,
    /// Shortest and longest wildcard key, to skip hashing suffixes that cannot
    /// be one; `(usize::MAX, 0)` when there are no wildcards (nothing passes).
    wildcard_lens: (usize, usize),
    /// Routes without a `host`.
    any_host: Option<matchit::Router<Dispatch>>,
    /// Routes with a bare prefix, for [`RouteTable::bare_prefixes`] (never
    /// read by a lookup).
    prefixes: Vec<PrefixRoute>,
}

/// A route `/p/{*rest}` whose bare prefix `/p` (no trailing slash), requested
/// on the route's hosts with one of its methods, is served by another route.
/// See [`RouteTable::bare_prefixes`].
#[derive(Debug)]
pub struct BarePrefix<'t, T> {
    /// The catch-all route's name and value.
    pub route: &'t str,
    pub value: &'t T,
    /// The bare prefix as a request path, e.g. `/admin` (a `{param}` of the
    /// pattern is kept as written).
    pub path: String,
    /// The name and value of the route that serves `path` instead.
    pub served_by: &'t str,
    pub served_value: &'t T,
}

impl<T> fmt::Debug for RouteTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hosts: Vec<String> = self
            .hosts
            .keys()
            .map(|k| {
                let k = String::from_utf8_lossy(k);
                match k.strip_prefix('.') {
                    Some(suffix) => format!("*.{suffix}"),
                    None => k.into_owned(),
                }
            })
            .collect();
        hosts.sort();
        f.debug_struct("RouteTable")
            .field(
                "routes",
                &self.routes.iter().map(|e| &*e.name).collect::<Vec<_>>(),
            )
            .field("hosts", &hosts)
            .finish_non_exhaustive()
    }
}

/// The host a request names, as the route table reads it: port and trailing dot removed, lower
/// case. `None` when no configured host could match it (empty, too long, malformed literal).
/// Borrowed when `raw` already is in that form.
pub fn host_name(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let name = String::from_utf8_lossy(host::strip(raw.as_bytes())?);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(name.to_ascii_lowercase().into());
    }
    Some(name)
}

/// A route whose pattern ends in `/{*name}` and has a bare prefix (`/admin`
/// for `/admin/{*rest}`), kept for [`RouteTable::bare_prefixes`].
#[derive(Debug, Clone)]
struct PrefixRoute {
    route: usize,
    host: Option<HostPattern>,
    /// The request path of the prefix without its trailing slash; see [`pattern::bare_path`].
    bare: String,
    /// The methods to look the bare path up with: the route's own.
    methods: Vec<Method>,
}

impl<T> RouteTable<T> {
    /// Finds the route for a request; see the [module docs](self) for the rule.
    ///
    /// - `host`: the raw Host header or `:authority` value, if any. It may
    ///   contain a port and be in any case; any bytes are accepted. (A header
    ///   that is not valid UTF-8 can be passed as `None`: it could not match a
    ///   route with a `host` anyway.)
    /// - `path`: the request path without the query string, as received (not
    ///   percent-decoded), e.g. `uri.path()`.
    ///
    /// Allocates nothing (matchit allocates for patterns of more than 3
    /// parameters). Never panics, whatever the bytes of `host` and `path`.
    pub fn lookup<'t, 'p>(
        &'t self,
        host: Option<&str>,
        path: &'p str,
        method: &Method,
    ) -> Lookup<'t, 'p, T> {
        // Groups with a host first (skipped entirely when no route has a host:
        // single-host deployments pay nothing for host routing), then routes
        // without a host. The first group whose paths match decides.
        let matched = host
            .filter(|_| !self.hosts.is_empty())
            .and_then(|raw| self.match_host(raw.as_bytes(), path))
            .or_else(|| self.any_host.as_ref()?.at(path).ok());
        match matched {
            Some(matched) => self.decide(matched, method),
            None => Lookup::NotFound,
        }
    }

    /// Tries the groups of the request's host, most specific first: the exact
    /// host, then each wildcard suffix from longest to shortest. Returns the
    /// match from the first group whose paths match, if any.
    #[inline]
    fn match_host<'t, 'p>(
        &'t self,
        raw: &[u8],
        path: &'p str,
    ) -> Option<matchit::Match<'t, 'p, &'t Dispatch>> {
        let stripped = host::strip(raw)?;
        let lowered;
        // Fast path: try the exact host before looking at its bytes. Exact keys
        // are valid lowercase names, so a hit needs no further checks and a
        // well-formed lowercase Host (the common case) is read only twice (find
        // the port, hash).
        let name = match self.group(stripped) {
            Some(router) => {
                if let Ok(matched) = router.at(path) {
                    return Some(matched);
                }
                stripped
            }
            None => {
                let needs_lowercase = host::classify(stripped)?;
                if needs_lowercase {
                    // Into a stack buffer: no allocation.
                    lowered = host::lowercase(stripped);
                    let name = lowered.get(..stripped.len())?;
                    if let Some(Ok(matched)) = self.group(name).map(|r| r.at(path)) {
                        return Some(matched);
                    }
                    name
                } else {
                    stripped
                }
            }
        };
        // Wildcards: every '.' after the first byte starts a candidate suffix
        // (".b.example.com", ".example.com", ".com"); requiring a byte before
        // it is what keeps the apex out of `*.example.com`. Going left to right
        // yields the longest suffix first, and only positions where a suffix
        // has the length of some wildcard key are looked at (none if there are
        // no wildcards: the range is empty).
        let (shortest, longest) = self.wildcard_lens;
        let first = name.len().saturating_sub(longest).max(1);
        let last = name.len().saturating_sub(shortest);
        for i in first..=last {
            if name.get(i) != Some(&b'.') {
                continue;
            }
            if let Some(Ok(matched)) = name
                .get(i..)
                .and_then(|suffix| self.group(suffix))
                .map(|r| r.at(path))
            {
                return Some(matched);
            }
        }
        None
    }

    /// The group of an exact host or wildcard suffix key, if configured.
    #[inline]
    fn group(&self, key: &[u8]) -> Option<&matchit::Router<Dispatch>> {
        if key.is_empty() {
            return None;
        }
        self.groups.get(*self.hosts.get(key)?)
    }

    /// Turns the pattern matched in the deciding group into the answer, by
    /// method.
    #[inline]
    fn decide<'t, 'p>(
        &'t self,
        matched: matchit::Match<'t, 'p, &'t Dispatch>,
        method: &Method,
    ) -> Lookup<'t, 'p, T> {
        match matched.value.choose(method) {
            Choice::Route(index) => match self.routes.get(index) {
                Some(entry) => Lookup::Found {
                    route: &entry.value,
                    name: &entry.name,
                    params: matched.params,
                },
                // Indexes come from `build`; cannot happen.
                None => Lookup::NotFound,
            },
            Choice::NotAllowed(allow) => Lookup::MethodNotAllowed { allow },
        }
    }

    /// For each route `/p/{*rest}`: which other routes serve the bare `/p` on
    /// the route's hosts, looked up like a request (with the route's methods,
    /// GET if it takes any; falling through to less specific host groups), so
    /// that the config can warn when `/p` and `/p/...` are not protected alike.
    /// One entry per (route, serving route); a `/p` answered 404 or 405 gives
    /// none. In the order the routes were given. Runs lookups: for config
    /// checks, not for requests.
    pub fn bare_prefixes(&self) -> Vec<BarePrefix<'_, T>> {
        let mut found = Vec::new();
        for prefix in &self.prefixes {
            let Some(route) = self.routes.get(prefix.route) else {
                continue;
            };
            let host = prefix.host.as_ref().map(|h| self.sample_host(h));
            let mut seen: Vec<&str> = Vec::new();
            for method in &prefix.methods {
                let Lookup::Found {
                    route: value, name, ..
                } = self.lookup(host.as_deref(), &prefix.bare, method)
                else {
                    continue;
                };
                if name != &*route.name && !seen.contains(&name) {
                    seen.push(name);
                    found.push(BarePrefix {
                        route: &route.name,
                        value: &route.value,
                        path: prefix.bare.clone(),
                        served_by: name,
                        served_value: value,
                    });
                }
            }
        }
        found
    }

    /// A request host that the group of `pattern` is the most specific group
    /// for: the host itself, or for `*.example.com` a subdomain that no exact
    /// host of the table claims (a single label, so no deeper wildcard either).
    fn sample_host(&self, pattern: &HostPattern) -> String {
        match pattern {
            HostPattern::Exact(host) => host.clone(),
            HostPattern::Wildcard(suffix) => (0u32..)
                .map(|i| format!("probe{i}{suffix}"))
                .find(|host| !self.hosts.contains_key(host.as_bytes()))
                .unwrap_or_default(),
        }
    }

    /// Every route's name and value, in the order they were given (for the status page).
    pub fn values(&self) -> impl Iterator<Item = (&str, &T)> {
        self.routes.iter().map(|e| (&*e.name, &e.value))
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes (every lookup is [`Lookup::NotFound`]).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
