//! Routes that could match the same request: refused at build time, with the reason.

use super::*;

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
