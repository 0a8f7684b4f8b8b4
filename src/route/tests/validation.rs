//! Build errors of single routes (hosts, paths, methods) and how they are reported.

use super::*;

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
