//! Tests of the routing table: every matching rule and every build error, one module per area;
//! the helpers shared by them are here.

use super::pattern::{bare_path, catch_all_prefix, param_names, placeholders};
use super::*;

mod conflicts;
mod hosts;
mod paths;
mod prefixes;
mod validation;

fn def(name: &str, host: Option<&str>, path: &str, methods: Option<&[Method]>) -> RouteDef<String> {
    RouteDef {
        name: name.to_string(),
        host: host.map(str::to_string),
        path: path.to_string(),
        methods: methods.map(<[Method]>::to_vec),
        value: format!("value:{name}"),
    }
}

fn any(name: &str, path: &str) -> RouteDef<String> {
    def(name, None, path, None)
}

fn table(defs: Vec<RouteDef<String>>) -> RouteTable<String> {
    match RouteTable::build(defs) {
        Ok(t) => t,
        Err(errors) => panic!("unexpected build errors: {errors:#?}"),
    }
}

fn errors(defs: Vec<RouteDef<String>>) -> Vec<RouteError> {
    match RouteTable::build(defs) {
        Ok(t) => panic!("expected errors, built {t:?}"),
        Err(errors) => errors,
    }
}

/// The single error of a build, as "route.field: message".
fn one_error(defs: Vec<RouteDef<String>>) -> String {
    let errs = errors(defs);
    assert_eq!(errs.len(), 1, "expected exactly one error: {errs:#?}");
    format!("{}.{}: {}", errs[0].route, errs[0].field, errs[0].message)
}

/// Lookup outcome as a short string: the route name, "405 <allow>" or "404".
/// Also checks that the value is the one of the named route.
fn hit(t: &RouteTable<String>, host: Option<&str>, path: &str, method: &Method) -> String {
    match t.lookup(host, path, method) {
        Lookup::Found { route, name, .. } => {
            assert_eq!(route, &format!("value:{name}"));
            name.to_string()
        }
        Lookup::MethodNotAllowed { allow } => format!("405 {allow}"),
        Lookup::NotFound => "404".to_string(),
    }
}

fn get(t: &RouteTable<String>, host: Option<&str>, path: &str) -> String {
    hit(t, host, path, &Method::GET)
}

fn params(t: &RouteTable<String>, path: &str) -> Vec<(String, String)> {
    match t.lookup(None, path, &Method::GET) {
        Lookup::Found { params, .. } => params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        other => panic!("expected a match for {path}, got {other:?}"),
    }
}

fn ext(name: &str) -> Method {
    match Method::from_bytes(name.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("bad method {name}: {e}"),
    }
}

/// Routes on every kind of host group: any host, wildcards of two depths, an exact host, IPv6.
fn host_table() -> RouteTable<String> {
    table(vec![
        any("any", "/x"),
        def("wild", Some("*.example.com"), "/x", None),
        def("exact", Some("api.example.com"), "/x", None),
        def("eu", Some("*.eu.example.com"), "/x", None),
        def("ip6", Some("[::1]"), "/x", None),
    ])
}
