//! Paths and methods within a host group: specificity, parameters, 405 and its Allow.

use super::*;

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
