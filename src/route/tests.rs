//! Tests of the routing table: every matching rule and every build error.

use super::pattern::{bare_path, catch_all_prefix, param_names, placeholders};
use super::*;

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

// ---------------------------------------------------------------- hosts

fn host_table() -> RouteTable<String> {
    table(vec![
        any("any", "/x"),
        def("wild", Some("*.example.com"), "/x", None),
        def("exact", Some("api.example.com"), "/x", None),
        def("eu", Some("*.eu.example.com"), "/x", None),
        def("ip6", Some("[::1]"), "/x", None),
    ])
}

#[test]
fn exact_host_beats_wildcard_beats_any_host() {
    let t = host_table();
    assert_eq!(get(&t, Some("api.example.com"), "/x"), "exact");
    assert_eq!(get(&t, Some("www.example.com"), "/x"), "wild");
    assert_eq!(get(&t, Some("other.org"), "/x"), "any");
    assert_eq!(get(&t, None, "/x"), "any");
}

#[test]
fn wildcard_matches_any_depth_longest_suffix_first() {
    let t = host_table();
    assert_eq!(get(&t, Some("a.b.example.com"), "/x"), "wild");
    assert_eq!(get(&t, Some("a.eu.example.com"), "/x"), "eu");
    assert_eq!(get(&t, Some("a.b.eu.example.com"), "/x"), "eu");
    // The apex of *.eu.example.com is still a subdomain of example.com.
    assert_eq!(get(&t, Some("eu.example.com"), "/x"), "wild");
    // A subdomain of the exact host is not the exact host.
    assert_eq!(get(&t, Some("v2.api.example.com"), "/x"), "wild");
}

#[test]
fn wildcard_never_matches_apex() {
    let t = host_table();
    assert_eq!(get(&t, Some("example.com"), "/x"), "any");
    assert_eq!(get(&t, Some("EXAMPLE.COM:443"), "/x"), "any");
    // Suffix match is on whole labels.
    assert_eq!(get(&t, Some("notexample.com"), "/x"), "any");
    assert_eq!(get(&t, Some(".example.com"), "/x"), "any");
}

#[test]
fn host_matching_ignores_case_port_and_trailing_dot() {
    let t = host_table();
    for host in [
        "API.EXAMPLE.COM",
        "Api.Example.Com:8443",
        "api.example.com:",
        "api.example.com.",
        "api.example.com.:80",
    ] {
        assert_eq!(get(&t, Some(host), "/x"), "exact", "{host}");
    }
    assert_eq!(get(&t, Some("WWW.Example.com:80"), "/x"), "wild");
    assert_eq!(get(&t, Some("A.EU.EXAMPLE.COM"), "/x"), "eu");
}

#[test]
fn config_hosts_are_case_insensitive() {
    let t = table(vec![
        def("exact", Some("API.Example.com"), "/x", None),
        def("wild", Some("*.Svc.LOCAL"), "/x", None),
    ]);
    assert_eq!(get(&t, Some("api.example.com"), "/x"), "exact");
    assert_eq!(get(&t, Some("a.svc.local"), "/x"), "wild");
}

#[test]
fn ipv6_literal_hosts() {
    let t = host_table();
    assert_eq!(get(&t, Some("[::1]"), "/x"), "ip6");
    assert_eq!(get(&t, Some("[::1]:8080"), "/x"), "ip6");
    // Malformed literals only reach any-host routes.
    for host in ["[::1", "[::1]x", "::1", "[::1]]", "[", "[]", "[]:80"] {
        assert_eq!(get(&t, Some(host), "/x"), "any", "{host}");
    }
    // Hex digits in any case.
    let t = table(vec![def("ip6", Some("[FE80::A]"), "/x", None)]);
    assert_eq!(get(&t, Some("[fe80::a]:443"), "/x"), "ip6");
    assert_eq!(get(&t, Some("[FE80::A]"), "/x"), "ip6");
}

#[test]
fn host_group_falls_through_when_path_does_not_match() {
    let t = table(vec![
        def("exact_a", Some("api.example.com"), "/a", None),
        def("wild_b", Some("*.example.com"), "/b", None),
        any("any_c", "/c"),
    ]);
    assert_eq!(get(&t, Some("api.example.com"), "/a"), "exact_a");
    assert_eq!(get(&t, Some("api.example.com"), "/b"), "wild_b");
    assert_eq!(get(&t, Some("api.example.com"), "/c"), "any_c");
    assert_eq!(get(&t, Some("api.example.com"), "/d"), "404");
    assert_eq!(get(&t, Some("x.example.com"), "/a"), "404");
    assert_eq!(get(&t, None, "/a"), "404");
    assert_eq!(get(&t, None, "/c"), "any_c");
}

#[test]
fn more_specific_host_is_not_abandoned_for_the_method() {
    let t = table(vec![
        def(
            "exact_get",
            Some("api.example.com"),
            "/x",
            Some(&[Method::GET]),
        ),
        def(
            "wild_post",
            Some("*.example.com"),
            "/x",
            Some(&[Method::POST]),
        ),
        any("any_x", "/x"),
    ]);
    assert_eq!(
        hit(&t, Some("api.example.com"), "/x", &Method::GET),
        "exact_get"
    );
    assert_eq!(
        hit(&t, Some("api.example.com"), "/x", &Method::POST),
        "405 GET"
    );
    assert_eq!(
        hit(&t, Some("w.example.com"), "/x", &Method::GET),
        "405 POST"
    );
    assert_eq!(
        hit(&t, Some("w.example.com"), "/x", &Method::POST),
        "wild_post"
    );
    assert_eq!(hit(&t, Some("other"), "/x", &Method::DELETE), "any_x");
}

#[test]
fn host_group_decision_uses_the_pattern_that_matched() {
    // Within the exact group, "/x/{id}" matches; its methods decide, even
    // though "/x/{*rest}" on any host would accept POST.
    let t = table(vec![
        def(
            "exact",
            Some("api.example.com"),
            "/x/{id}",
            Some(&[Method::GET]),
        ),
        def("any", None, "/x/{*rest}", Some(&[Method::POST])),
    ]);
    assert_eq!(
        hit(&t, Some("api.example.com"), "/x/1", &Method::POST),
        "405 GET"
    );
    assert_eq!(
        hit(&t, Some("api.example.com"), "/x/1/2", &Method::POST),
        "any"
    );
}

#[test]
fn same_pattern_on_different_hosts_is_fine() {
    let t = table(vec![
        def(
            "a",
            Some("a.example.com"),
            "/v1/users/{id}",
            Some(&[Method::GET]),
        ),
        def(
            "b",
            Some("b.example.com"),
            "/v1/users/{id}",
            Some(&[Method::GET]),
        ),
        def(
            "w",
            Some("*.example.com"),
            "/v1/users/{id}",
            Some(&[Method::GET]),
        ),
        def("n", None, "/v1/users/{id}", Some(&[Method::GET])),
    ]);
    assert_eq!(get(&t, Some("a.example.com"), "/v1/users/1"), "a");
    assert_eq!(get(&t, Some("b.example.com"), "/v1/users/1"), "b");
    assert_eq!(get(&t, Some("c.example.com"), "/v1/users/1"), "w");
    assert_eq!(get(&t, Some("c.example.org"), "/v1/users/1"), "n");
    assert_eq!(t.len(), 4);
}

#[test]
fn hostile_hosts_never_panic_and_fall_back_to_any_host() {
    let t = host_table();
    let long = "a".repeat(100_000);
    let long_sub = format!("{}.example.com", "A".repeat(300));
    let hosts: Vec<&str> = vec![
        "",
        ":",
        "::::",
        ".",
        "..",
        ":80",
        "]",
        "[:]",
        "\0",
        "\u{fffd}",
        "ä",
        "例え.テスト",
        "api.example.com\0",
        " api.example.com",
        "api.example.com/x",
        "éxample.com:é",
        "[é]:é",
        "a\u{0301}.b",
        &long,
        &long_sub,
    ];
    for host in hosts {
        assert_eq!(get(&t, Some(host), "/x"), "any", "{host:?}");
    }
    // Bytes that cannot appear in a host name disqualify the whole Host, even
    // when it ends like a configured one.
    for host in [
        "ä.example.com",
        "Ä.EXAMPLE.COM",
        "a b.example.com",
        "a/b.example.com",
    ] {
        assert_eq!(get(&t, Some(host), "/x"), "any", "{host:?}");
    }
    // Exactly at the length limit still works.
    let at_limit = format!("{}.example.com", "a".repeat(MAX - ".example.com".len()));
    assert_eq!(at_limit.len(), MAX);
    assert_eq!(get(&t, Some(&at_limit), "/x"), "wild");
    let over = format!("a{at_limit}");
    assert_eq!(get(&t, Some(&over), "/x"), "any");

    // Without an any-host group, a hostile host simply finds nothing.
    let t = table(vec![def("exact", Some("api.example.com"), "/x", None)]);
    for host in ["", ":", "\u{fffd}", &long] {
        assert_eq!(get(&t, Some(host), "/x"), "404", "{host:?}");
    }
}

const MAX: usize = host::MAX_HOST_LEN;

#[test]
fn no_host_header_only_matches_any_host_routes() {
    let t = table(vec![def("exact", Some("api.example.com"), "/x", None)]);
    assert_eq!(get(&t, None, "/x"), "404");
}

// ---------------------------------------------------------------- paths

#[test]
fn static_beats_param_beats_catch_all() {
    let t = table(vec![
        any("catch_all", "/v1/{*rest}"),
        any("param", "/v1/users/{id}"),
        any("static", "/v1/users/me"),
    ]);
    assert_eq!(get(&t, None, "/v1/users/me"), "static");
    assert_eq!(get(&t, None, "/v1/users/42"), "param");
    assert_eq!(get(&t, None, "/v1/users/42/posts"), "catch_all");
    assert_eq!(get(&t, None, "/v1/other"), "catch_all");
    assert_eq!(get(&t, None, "/v1"), "404");
    assert_eq!(get(&t, None, "/v2/users/me"), "404");
}

#[test]
fn params_are_extracted() {
    let t = table(vec![
        any("post", "/v1/users/{id}/posts/{post}"),
        any("files", "/v1/files/{*rest}"),
        any("ext", "/img/{name}.png"),
    ]);
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        params(&t, "/v1/users/7/posts/abc"),
        vec![pair("id", "7"), pair("post", "abc")]
    );
    assert_eq!(
        params(&t, "/v1/files/a/b/c.txt"),
        vec![pair("rest", "a/b/c.txt")]
    );
    assert_eq!(params(&t, "/img/logo.png"), vec![pair("name", "logo")]);
    // Values are the raw path bytes, not decoded.
    assert_eq!(params(&t, "/v1/files/a%20b"), vec![pair("rest", "a%20b")]);
    match t.lookup(None, "/v1/users/7/posts/abc", &Method::GET) {
        Lookup::Found { params, .. } => assert_eq!(params.get("post"), Some("abc")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn odd_request_paths_are_not_found() {
    let t = table(vec![any("root", "/"), any("x", "/x")]);
    for path in ["", "*", "x", "/x/", "//x", "/X"] {
        assert_eq!(get(&t, None, path), "404", "{path:?}");
    }
    assert_eq!(get(&t, None, "/"), "root");
}

// ---------------------------------------------------------------- methods

#[test]
fn methods_filter_and_allow_header() {
    let t = table(vec![
        def("get", None, "/x", Some(&[Method::GET])),
        def("post", None, "/x", Some(&[Method::POST])),
        def("put_head", None, "/x", Some(&[Method::PUT, Method::HEAD])),
        def("purge", None, "/x", Some(&[ext("PURGE")])),
    ]);
    assert_eq!(hit(&t, None, "/x", &Method::GET), "get");
    assert_eq!(hit(&t, None, "/x", &Method::POST), "post");
    assert_eq!(hit(&t, None, "/x", &Method::HEAD), "put_head");
    assert_eq!(hit(&t, None, "/x", &Method::PUT), "put_head");
    assert_eq!(hit(&t, None, "/x", &ext("PURGE")), "purge");
    let allow = "405 GET, HEAD, POST, PURGE, PUT";
    assert_eq!(hit(&t, None, "/x", &Method::DELETE), allow);
    assert_eq!(hit(&t, None, "/x", &ext("BREW")), allow);
    // Methods are case-sensitive.
    assert_eq!(hit(&t, None, "/x", &ext("get")), allow);
}

#[test]
fn allow_is_sorted_and_deduplicated() {
    let t = table(vec![def(
        "r",
        None,
        "/x",
        Some(&[
            Method::POST,
            Method::GET,
            Method::DELETE,
            Method::OPTIONS,
            ext("MKCOL"),
        ]),
    )]);
    assert_eq!(
        hit(&t, None, "/x", &Method::PATCH),
        "405 DELETE, GET, MKCOL, OPTIONS, POST"
    );
}

#[test]
fn any_method_route() {
    let t = table(vec![any("r", "/x")]);
    for m in [Method::GET, Method::DELETE, Method::TRACE, ext("PURGE")] {
        assert_eq!(hit(&t, None, "/x", &m), "r");
    }
}

#[test]
fn method_not_allowed_versus_not_found() {
    let t = table(vec![def("r", None, "/x/{id}", Some(&[Method::GET]))]);
    assert_eq!(hit(&t, None, "/x/1", &Method::POST), "405 GET");
    assert_eq!(hit(&t, None, "/y", &Method::POST), "404");
    assert_eq!(hit(&t, None, "/x", &Method::GET), "404");
}

#[test]
fn empty_table() {
    let t = table(Vec::new());
    assert!(t.is_empty());
    assert_eq!(t.len(), 0);
    assert_eq!(get(&t, Some("a.example.com"), "/"), "404");
    assert_eq!(get(&t, None, "/"), "404");
}

// ---------------------------------------------------------------- conflicts

#[test]
fn same_pattern_overlapping_methods_is_ambiguous() {
    assert_eq!(
        one_error(vec![
            def("users", None, "/v1/users/{id}", Some(&[Method::GET, Method::PUT])),
            def("users_v2", None, "/v1/users/{id}", Some(&[Method::GET, Method::POST])),
        ]),
        "users_v2.methods: ambiguous with route \"users\": both match GET /v1/users/{id} on any host"
    );
    assert_eq!(
        one_error(vec![
            def("b", Some("API.example.com"), "/x", Some(&[Method::GET, Method::POST])),
            def("a", Some("api.example.com"), "/x", Some(&[Method::POST, Method::GET])),
        ]),
        "b.methods: ambiguous with route \"a\": both match GET, POST /x on host \"api.example.com\""
    );
}

#[test]
fn any_method_overlaps_everything() {
    assert_eq!(
        one_error(vec![
            def("a", Some("*.example.com"), "/x", None),
            def("b", Some("*.example.com"), "/x", Some(&[Method::DELETE])),
        ]),
        "b.methods: ambiguous with route \"a\": both match DELETE /x on hosts \"*.example.com\""
    );
    assert_eq!(
        one_error(vec![any("b", "/x"), any("a", "/x")]),
        "b.methods: ambiguous with route \"a\": both match /x for any method on any host"
    );
}

#[test]
fn same_pattern_disjoint_methods_is_fine() {
    let t = table(vec![
        def("a", None, "/x", Some(&[Method::GET])),
        def("b", None, "/x", Some(&[Method::POST, ext("PURGE")])),
        def("c", None, "/x", Some(&[ext("MKCOL")])),
    ]);
    assert_eq!(t.len(), 3);
}

#[test]
fn extension_methods_overlap_too() {
    assert_eq!(
        one_error(vec![
            def("a", None, "/x", Some(&[ext("PURGE")])),
            def("b", None, "/x", Some(&[ext("PURGE"), Method::GET])),
        ]),
        "b.methods: ambiguous with route \"a\": both match PURGE /x on any host"
    );
}

#[test]
fn patterns_matchit_cannot_rank_are_ambiguous() {
    assert_eq!(
        one_error(vec![any("by_id", "/u/{id}"), any("by_name", "/u/{name}")]),
        "by_name.path: ambiguous with route \"by_id\": \"/u/{name}\" and \"/u/{id}\" can match \
         the same request on any host and neither is more specific"
    );
    assert_eq!(
        one_error(vec![any("files", "/u/{*rest}"), any("user", "/u/{id}")]),
        "user.path: ambiguous with route \"files\": \"/u/{id}\" and \"/u/{*rest}\" can match \
         the same request on any host and neither is more specific"
    );
}

#[test]
fn param_name_mismatch_gets_a_hint() {
    let msg = one_error(vec![
        def("a", None, "/u/{id}", Some(&[Method::GET])),
        def("b", None, "/u/{name}", Some(&[Method::POST])),
    ]);
    assert!(
        msg.starts_with("b.path: ambiguous with route \"a\""),
        "{msg}"
    );
    assert!(
        msg.contains("spell it identically, parameter names included"),
        "{msg}"
    );
}

#[test]
fn conflicting_pattern_reported_for_every_route_sharing_it() {
    let errs = errors(vec![
        any("a", "/u/{id}"),
        def("b", None, "/u/{name}", Some(&[Method::GET])),
        def("c", None, "/u/{name}", Some(&[Method::POST])),
    ]);
    let keys: Vec<_> = errs.iter().map(|e| (e.route.as_str(), e.field)).collect();
    assert_eq!(keys, vec![("b", "path"), ("c", "path")]);
    assert!(errs.iter().all(|e| e.message.contains("route \"a\"")));
}

#[test]
fn conflict_is_reported_on_the_later_route_regardless_of_file_order() {
    let forward = errors(vec![any("a", "/u/{id}"), any("b", "/u/{name}")]);
    let backward = errors(vec![any("b", "/u/{name}"), any("a", "/u/{id}")]);
    assert_eq!(forward, backward);
    assert_eq!(forward[0].route, "b");
}

// ---------------------------------------------------------------- validation

#[test]
fn invalid_hosts() {
    let cases = [
        ("", "must not be empty"),
        ("api.example.com:8080", "must not contain a port"),
        ("example.com/x", "without a scheme or path"),
        ("https://example.com", "without a scheme or path"),
        (" api.example.com", "whitespace"),
        ("api.example .com", "whitespace"),
        ("*", "bare \"*\""),
        ("a.*.com", "wildcard is only allowed"),
        ("*example.com", "wildcard is only allowed"),
        ("**.example.com", "wildcard is only allowed"),
        ("*.*.example.com", "wildcard is only allowed"),
        ("api.example.*", "wildcard is only allowed"),
        ("*.", "empty label"),
        ("ünï.com", "punycode"),
        ("a..com", "empty label"),
        (".a.com", "empty label"),
        ("a.com.", "must not end with '.'"),
        ("a!.com", "invalid character '!'"),
        ("::1", "in brackets"),
        ("[::1]:80", "must not contain a port"),
        ("[::1", "closing ']'"),
        ("[zz]", "not a valid IPv6 address"),
    ];
    for (host, expected) in cases {
        let msg = one_error(vec![def("r", Some(host), "/x", None)]);
        assert!(msg.starts_with("r.host: "), "{host:?}: {msg}");
        assert!(msg.contains(expected), "{host:?}: {msg}");
    }
    let long_label = format!("{}.com", "a".repeat(64));
    assert!(one_error(vec![def("r", Some(&long_label), "/x", None)]).contains("63"));
    let too_long = format!("{}com", "abcdefghi.".repeat(26));
    assert!(one_error(vec![def("r", Some(&too_long), "/x", None)]).contains("253"));
}

#[test]
fn valid_hosts() {
    table(vec![
        def("a", Some("localhost"), "/x", None),
        def("b", Some("my_service.internal"), "/x", None),
        def("c", Some("*.com"), "/x", None),
        def("d", Some("10.0.0.1"), "/x", None),
        def("e", Some("[2001:db8::1]"), "/x", None),
        def("f", Some("xn--bcher-kva.example"), "/x", None),
    ]);
}

#[test]
fn invalid_paths() {
    let cases = [
        ("v1/users", "must start with '/'"),
        ("", "must start with '/'"),
        ("/x?y=1", "query string"),
        ("/x#top", "'#'"),
        ("/x y", "whitespace"),
        ("/x\t", "whitespace"),
        ("/{id", "Parameters must be registered with a valid name"),
        ("/x}", "literal braces"),
        (
            "/{*rest}/x",
            "Catch-all parameters are only allowed at the end",
        ),
        ("/{a}{b}", "Only one parameter is allowed per path segment"),
        ("/{id}/{id}", "parameter name {id} more than once"),
        ("/{id}/{*id}", "parameter name {id} more than once"),
    ];
    for (path, expected) in cases {
        let msg = one_error(vec![any("r", path)]);
        assert!(msg.starts_with("r.path: "), "{path:?}: {msg}");
        assert!(msg.contains(expected), "{path:?}: {msg}");
    }
}

#[test]
fn escaped_braces_are_literal() {
    let t = table(vec![any("lit", "/{{id}}/{id}")]);
    assert_eq!(
        params(&t, "/{id}/7"),
        vec![("id".to_string(), "7".to_string())]
    );
    assert_eq!(placeholders("/{{{id}}}").len(), 1);
    assert_eq!(param_names("/a/{x}/{*rest}"), vec!["x", "rest"]);
}

#[test]
fn invalid_methods() {
    assert_eq!(
        one_error(vec![def("r", None, "/x", Some(&[]))]),
        "r.methods: is an empty list, so the route could never match; use no `methods` key to \
         allow any method"
    );
    assert_eq!(
        one_error(vec![def(
            "r",
            None,
            "/x",
            Some(&[Method::GET, Method::POST, Method::GET])
        )]),
        "r.methods: lists \"GET\" more than once"
    );
    assert_eq!(
        one_error(vec![def(
            "r",
            None,
            "/x",
            Some(&[ext("PURGE"), ext("PURGE")])
        )]),
        "r.methods: lists \"PURGE\" more than once"
    );
    assert_eq!(
        one_error(vec![def("r", None, "/x", Some(&[ext("get")]))]),
        "r.methods: lists \"get\"; methods are case-sensitive, write \"GET\""
    );
}

#[test]
fn every_error_is_reported_sorted_by_route_then_field() {
    let errs = errors(vec![
        def("zeta", Some("bad host"), "no-slash", Some(&[])),
        any("alpha", "/dup"),
        any("beta", "/dup"),
        def(
            "gamma",
            Some("*.example.com"),
            "/{a}{b}",
            Some(&[Method::GET, Method::GET]),
        ),
        any("delta", "/u/{id}"),
        any("epsilon", "/u/{name}"),
        any("fine", "/fine"),
    ]);
    let keys: Vec<_> = errs.iter().map(|e| (e.route.as_str(), e.field)).collect();
    assert_eq!(
        keys,
        vec![
            ("beta", "methods"),
            ("epsilon", "path"),
            ("gamma", "methods"),
            ("gamma", "path"),
            ("zeta", "host"),
            ("zeta", "methods"),
            ("zeta", "path"),
        ]
    );
}

#[test]
fn bad_method_list_still_takes_part_in_conflict_checks() {
    let errs = errors(vec![
        def("a", None, "/x", Some(&[Method::GET])),
        def("b", None, "/x", Some(&[Method::GET, Method::GET])),
    ]);
    let messages: Vec<_> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "lists \"GET\" more than once",
            "ambiguous with route \"a\": both match GET /x on any host"
        ]
    );
}

#[test]
fn error_display_is_the_key_path() {
    let err = RouteError {
        route: "users".into(),
        field: "host",
        message: "must not be empty".into(),
    };
    assert_eq!(err.to_string(), "routes.users.host: must not be empty");
}

#[test]
fn debug_lists_routes_and_hosts() {
    let t = host_table();
    let dbg = format!("{t:?}");
    assert!(dbg.contains("\"*.example.com\""), "{dbg}");
    assert!(dbg.contains("\"api.example.com\""), "{dbg}");
    assert!(dbg.contains("\"exact\""), "{dbg}");
}

#[test]
fn host_normalisation() {
    use host::{classify, strip};
    assert_eq!(classify(b"A.b"), Some(true));
    assert_eq!(classify(b"a.b-c_d[::1]"), Some(false));
    assert_eq!(classify(b"a b"), None);
    assert_eq!(classify("é".as_bytes()), None);
    assert_eq!(strip(b"a.b:1"), Some(&b"a.b"[..]));
    assert_eq!(strip(b"[::1]:1"), Some(&b"[::1]"[..]));
    assert_eq!(strip(b"a."), Some(&b"a"[..]));
    assert_eq!(strip(b"a.."), Some(&b"a."[..]));
    assert_eq!(strip(b""), None);
    assert_eq!(strip(b":"), None);
    let lower = host::lowercase(b"AbC");
    assert_eq!(&lower[..3], b"abc");
}

#[test]
fn wildcards_of_many_lengths() {
    let t = table(vec![
        def("com", Some("*.com"), "/x", None),
        def("deep", Some("*.a.b.example.com"), "/x", None),
        def("mid", Some("*.example.com"), "/y", None),
    ]);
    assert_eq!(get(&t, Some("x.y.a.b.example.com"), "/x"), "deep");
    assert_eq!(get(&t, Some("a.b.example.com"), "/x"), "com");
    assert_eq!(get(&t, Some("a.b.example.com"), "/y"), "mid");
    assert_eq!(get(&t, Some("x.com"), "/x"), "com");
    assert_eq!(get(&t, Some("com"), "/x"), "404");
    assert_eq!(get(&t, Some("X.A.B.EXAMPLE.COM"), "/x"), "deep");
}

#[test]
fn mixed_case_host_falls_through_exact_to_wildcard() {
    let t = table(vec![
        def("exact_a", Some("api.example.com"), "/a", None),
        def("wild_b", Some("*.example.com"), "/b", None),
    ]);
    assert_eq!(get(&t, Some("API.example.com"), "/a"), "exact_a");
    assert_eq!(get(&t, Some("API.example.com"), "/b"), "wild_b");
    assert_eq!(get(&t, Some("api.example.com"), "/b"), "wild_b");
}

#[test]
fn table_can_be_shared_across_threads() {
    fn assert_send_sync<S: Send + Sync>() {}
    assert_send_sync::<RouteTable<String>>();
    assert_send_sync::<RouteDef<String>>();
    assert_send_sync::<RouteError>();
}

// ---------------------------------------------------------------- prefix routes

#[test]
fn catch_all_also_matches_its_prefix_with_the_slash() {
    let t = table(vec![
        any("admin", "/admin/{*rest}"),
        any("files", "/v1/{id}/files/{*path}"),
    ]);
    assert_eq!(get(&t, None, "/admin/"), "admin");
    assert_eq!(get(&t, None, "/admin/x"), "admin");
    assert_eq!(get(&t, None, "/admin"), "404");
    // The catch-all parameter is absent; the others are captured as usual.
    assert_eq!(params(&t, "/admin/"), vec![]);
    assert_eq!(
        params(&t, "/v1/7/files/"),
        vec![("id".to_string(), "7".to_string())]
    );
    match t.lookup(None, "/admin/", &Method::GET) {
        Lookup::Found { params, .. } => assert_eq!(params.get("rest"), None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn root_catch_all_matches_the_root() {
    let t = table(vec![any("all", "/{*rest}")]);
    assert_eq!(get(&t, None, "/"), "all");
    assert_eq!(params(&t, "/"), vec![]);
    assert_eq!(get(&t, None, "/x/"), "all");
    assert_eq!(get(&t, None, ""), "404");
}

#[test]
fn a_route_for_the_prefix_itself_wins() {
    for defs in [
        vec![any("admin", "/admin/{*rest}"), any("index", "/admin/")],
        vec![any("index", "/admin/"), any("z_admin", "/admin/{*rest}")],
    ] {
        let t = table(defs);
        assert_eq!(get(&t, None, "/admin/"), "index");
        assert!(get(&t, None, "/admin/x").ends_with("admin"));
    }
    let t = table(vec![any("all", "/{*rest}"), any("home", "/")]);
    assert_eq!(get(&t, None, "/"), "home");
    assert_eq!(get(&t, None, "/x"), "all");
    // The explicit pattern decides for every method, as any matched pattern does.
    let t = table(vec![
        def("admin", None, "/admin/{*rest}", Some(&[Method::GET])),
        def("index", None, "/admin/", Some(&[Method::POST])),
    ]);
    assert_eq!(hit(&t, None, "/admin/", &Method::GET), "405 POST");
    assert_eq!(hit(&t, None, "/admin/", &Method::POST), "index");
}

#[test]
fn prefix_alias_has_the_methods_and_allow_of_its_pattern() {
    let t = table(vec![
        def(
            "read",
            None,
            "/p/{*rest}",
            Some(&[Method::GET, Method::HEAD]),
        ),
        def("write", None, "/p/{*rest}", Some(&[Method::POST])),
    ]);
    assert_eq!(hit(&t, None, "/p/", &Method::GET), "read");
    assert_eq!(hit(&t, None, "/p/", &Method::POST), "write");
    assert_eq!(hit(&t, None, "/p/", &Method::DELETE), "405 GET, HEAD, POST");
    assert_eq!(
        hit(&t, None, "/p/x", &Method::DELETE),
        "405 GET, HEAD, POST"
    );
}

#[test]
fn prefix_alias_stays_in_its_host_group() {
    let t = table(vec![
        any("public", "/{*rest}"),
        def("admin", Some("api.example.com"), "/admin/{*rest}", None),
        def("shop", Some("*.example.com"), "/shop/{*rest}", None),
    ]);
    assert_eq!(get(&t, Some("api.example.com"), "/admin/"), "admin");
    assert_eq!(get(&t, Some("API.example.com:443"), "/admin/"), "admin");
    assert_eq!(get(&t, Some("www.example.com"), "/admin/"), "public");
    assert_eq!(get(&t, None, "/admin/"), "public");
    assert_eq!(get(&t, Some("a.example.com"), "/shop/"), "shop");
    assert_eq!(get(&t, Some("example.com"), "/shop/"), "public");
    assert_eq!(get(&t, Some("api.example.com"), "/"), "public");
}

#[test]
fn static_first_segment_beats_a_param_for_the_prefix_too() {
    // `/admin/x` goes to the catch-all rather than `/{id}/x`-like routes, so
    // `/admin/` does as well: the alias is static up to the catch-all.
    let t = table(vec![any("by_id", "/{id}/"), any("admin", "/admin/{*rest}")]);
    assert_eq!(get(&t, None, "/admin/"), "admin");
    assert_eq!(get(&t, None, "/other/"), "by_id");
    // Backtracking is unchanged: a static prefix that dead-ends falls back to
    // the param route.
    let t = table(vec![
        any("admin", "/admin/{*rest}"),
        any("item", "/{id}/x/y"),
    ]);
    assert_eq!(get(&t, None, "/admin/x/y"), "admin");
    assert_eq!(get(&t, None, "/other/x/y"), "item");
}

#[test]
fn a_pattern_matchit_cannot_rank_against_the_alias_keeps_the_path() {
    // The alias of `/{name}/{*rest}` would be `/{name}/`, which matchit refuses
    // next to `/{id}/`: the configured route keeps `/x/`, and the router is
    // intact for everything else.
    for defs in [
        vec![any("a_slash", "/{id}/"), any("b_rest", "/{name}/{*rest}")],
        vec![any("a_rest", "/{name}/{*rest}"), any("b_slash", "/{id}/")],
    ] {
        let t = table(defs);
        assert!(get(&t, None, "/x/").ends_with("_slash"));
        assert!(get(&t, None, "/x/y").ends_with("_rest"));
        assert!(get(&t, None, "/x/y/z").ends_with("_rest"));
        assert_eq!(get(&t, None, "/x"), "404");
    }
    let t = table(vec![
        any("a", "/u/{id}/"),
        any("b", "/u/{name}/{*rest}"),
        any("c", "/v/{*rest}"),
        any("d", "/w/{*rest}"),
    ]);
    assert_eq!(get(&t, None, "/u/1/"), "a");
    assert_eq!(get(&t, None, "/u/1/2"), "b");
    // Aliases after the refused one still go in.
    assert_eq!(get(&t, None, "/v/"), "c");
    assert_eq!(get(&t, None, "/w/"), "d");
}

/// Patterns that build together in many combinations, some of them only
/// without aliases in mind (`/{id}/` next to `/{name}/{*rest}`).
const PATTERNS: &[&str] = &[
    "/",
    "/{*rest}",
    "/{id}",
    "/{id}/",
    "/{name}/{*rest}",
    "/p",
    "/p/",
    "/p/{*rest}",
    "/p/{id}/",
    "/p/{id}/{*tail}",
    "/p{x}",
    "/a{x}/{*rest}",
    "/{{lit}}/{*rest}",
    "/u/{id}/edit",
    "/u/{uid}/{*rest}",
];

/// Sample request paths for [`PATTERNS`].
const PATHS: &[&str] = &[
    "/",
    "/p",
    "/p/",
    "/p/1",
    "/p/1/",
    "/p/1/2",
    "/px",
    "/ab/",
    "/ab/c",
    "/{lit}/",
    "/{lit}/x",
    "/u/1/edit",
    "/u/1/",
    "/u/1/x",
    "/x",
    "/x/",
    "/x/y",
    "/x/y/",
];

/// What a plain matchit router with `patterns` (inserted in order) says for
/// `path`: the pattern matched, or `None`.
fn plain_match(patterns: &[&str], path: &str) -> Option<Option<String>> {
    let mut router = matchit::Router::new();
    for p in patterns {
        router.insert(*p, p.to_string()).ok()?;
    }
    Some(router.at(path).ok().map(|m| m.value.clone()))
}

#[test]
fn aliases_add_no_build_error_and_change_no_other_path() {
    let mut checked = 0;
    for (i, a) in PATTERNS.iter().enumerate() {
        for (j, b) in PATTERNS.iter().enumerate().skip(i + 1) {
            for c in PATTERNS.iter().skip(j + 1).chain([&"/zzz"]) {
                let patterns = [*a, *b, *c];
                // Route names sort like the slice, so the table inserts in
                // this order too.
                if plain_match(&patterns, "/").is_none() {
                    continue; // does not build without aliases either
                }
                let defs = patterns
                    .iter()
                    .enumerate()
                    .map(|(k, p)| any(&format!("r{k}"), p))
                    .collect();
                let t = match RouteTable::build(defs) {
                    Ok(t) => t,
                    Err(e) => panic!("{patterns:?} built without aliases, not with: {e:#?}"),
                };
                for path in PATHS {
                    let before = plain_match(&patterns, path).flatten();
                    let now = match t.lookup(None, path, &Method::GET) {
                        Lookup::Found { name, .. } => {
                            name.strip_prefix('r').and_then(|k| k.parse::<usize>().ok())
                        }
                        _ => None,
                    };
                    let now = now.and_then(|k| patterns.get(k)).map(|p| p.to_string());
                    // Only a catch-all's own prefix may gain or change its route.
                    let alias = now
                        .as_deref()
                        .and_then(catch_all_prefix)
                        .is_some_and(|prefix| plain_match(&[prefix], path).flatten().is_some());
                    assert!(
                        before == now || alias,
                        "{patterns:?}: {path} went from {before:?} to {now:?}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} combinations built");
}

#[test]
fn prefix_helpers() {
    assert_eq!(catch_all_prefix("/p/{*rest}"), Some("/p/"));
    assert_eq!(catch_all_prefix("/{*rest}"), Some("/"));
    assert_eq!(catch_all_prefix("/u/{id}/{*rest}"), Some("/u/{id}/"));
    assert_eq!(catch_all_prefix("/p/{rest}"), None);
    assert_eq!(catch_all_prefix("/p/{{*rest}}"), None);
    assert_eq!(catch_all_prefix("/p"), None);
    assert_eq!(bare_path("/admin/"), "/admin");
    assert_eq!(bare_path("/"), "");
    assert_eq!(bare_path("/t/{tenant}/admin/"), "/t/{tenant}/admin");
    assert_eq!(bare_path("/{{lit}}/"), "/{lit}");
}

// ---------------------------------------------------------------- bare prefixes

/// `bare_prefixes` as "route /path -> serving route" lines.
fn bare(t: &RouteTable<String>) -> Vec<String> {
    t.bare_prefixes()
        .iter()
        .map(|b| {
            assert_eq!(b.value, &format!("value:{}", b.route));
            assert_eq!(b.served_value, &format!("value:{}", b.served_by));
            format!("{} {} -> {}", b.route, b.path, b.served_by)
        })
        .collect()
}

#[test]
fn bare_prefix_served_by_a_broader_route() {
    let t = table(vec![
        any("public", "/{*rest}"),
        any("admin", "/admin/{*rest}"),
    ]);
    assert_eq!(bare(&t), vec!["admin /admin -> public"]);
    let t = table(vec![
        any("admin", "/admin/{*rest}"),
        any("admin_bare", "/admin"),
        any("public", "/{*rest}"),
    ]);
    assert_eq!(bare(&t), vec!["admin /admin -> admin_bare"]);
    // Nothing serves /admin: nothing to report.
    let t = table(vec![any("admin", "/admin/{*rest}"), any("x", "/x")]);
    assert!(bare(&t).is_empty());
}

#[test]
fn bare_prefix_is_looked_up_with_the_routes_methods() {
    let t = table(vec![
        def(
            "admin",
            None,
            "/admin/{*rest}",
            Some(&[Method::POST, Method::PUT]),
        ),
        def("read", None, "/admin", Some(&[Method::GET])),
    ]);
    // POST and PUT /admin are 405: not served.
    assert!(bare(&t).is_empty());
    let t = table(vec![
        def(
            "admin",
            None,
            "/admin/{*rest}",
            Some(&[Method::POST, Method::PUT]),
        ),
        def("post", None, "/admin", Some(&[Method::POST])),
        def("put", None, "/admin", Some(&[Method::PUT])),
    ]);
    assert_eq!(
        bare(&t),
        vec!["admin /admin -> post", "admin /admin -> put"]
    );
    // A route for any method is probed with GET.
    let t = table(vec![
        any("admin", "/admin/{*rest}"),
        def("post", None, "/admin", Some(&[Method::POST])),
    ]);
    assert!(bare(&t).is_empty());
}

#[test]
fn bare_prefix_uses_the_routes_host_group() {
    let t = table(vec![
        any("public", "/{*rest}"),
        def("api_admin", Some("api.example.com"), "/admin/{*rest}", None),
        def("api_bare", Some("api.example.com"), "/admin", None),
        def("shop", Some("*.example.com"), "/shop/{*rest}", None),
        // An exact host that a naive sample subdomain would hit.
        def("probe", Some("probe0.example.com"), "/shop", None),
    ]);
    assert_eq!(
        bare(&t),
        vec!["api_admin /admin -> api_bare", "shop /shop -> public"]
    );
}

#[test]
fn bare_prefix_keeps_params_as_written() {
    let t = table(vec![
        any("public", "/{*rest}"),
        any("tenant_admin", "/t/{tenant}/admin/{*rest}"),
        any("tenant", "/t/{tenant}"),
    ]);
    assert_eq!(bare(&t), vec!["tenant_admin /t/{tenant}/admin -> public"]);
}
