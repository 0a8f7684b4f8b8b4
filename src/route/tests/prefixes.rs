//! The `/p/` alias of each `/p/{*rest}`, and who serves the bare `/p`.

use super::*;

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
