//! Host groups: exact before wildcard before any host, and what a Host header may look like.

use super::*;

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
