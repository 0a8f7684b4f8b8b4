//! Cost of one `RouteTable::lookup`, on tables of 10 and 1,000 routes.
//!
//! Each simulated service contributes 5 routes on a mix of hosts:
//!   - `GET /api/s{i}/status`              on the exact host `s{i}.example.com`
//!   - `GET` and `PUT /api/s{i}/items/{id}` on the wildcard `*.s{i}.example.com`
//!   - `/api/s{i}/items/{id}/tags`          on any host, any method
//!   - `/api/s{i}/files/{*rest}`            on any host, any method
//!
//! The lookups target the last service, so the big table really has 999 other
//! routes in its trees and 400 keys in its host map.
//!
//! Run: `cargo bench --bench route_match`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use tollgate::route::{Lookup, RouteDef, RouteTable};

fn route(
    name: String,
    host: Option<String>,
    path: String,
    methods: Option<Vec<Method>>,
) -> RouteDef<usize> {
    RouteDef {
        name,
        host,
        path,
        methods,
        value: 0,
    }
}

fn table(size: usize) -> RouteTable<usize> {
    let mut defs = Vec::with_capacity(size);
    for i in 0..size / 5 {
        let exact = Some(format!("s{i}.example.com"));
        let wildcard = Some(format!("*.s{i}.example.com"));
        defs.push(route(
            format!("status_{i}"),
            exact,
            format!("/api/s{i}/status"),
            Some(vec![Method::GET]),
        ));
        defs.push(route(
            format!("item_get_{i}"),
            wildcard.clone(),
            format!("/api/s{i}/items/{{id}}"),
            Some(vec![Method::GET, Method::HEAD]),
        ));
        defs.push(route(
            format!("item_put_{i}"),
            wildcard,
            format!("/api/s{i}/items/{{id}}"),
            Some(vec![Method::PUT]),
        ));
        defs.push(route(
            format!("tags_{i}"),
            None,
            format!("/api/s{i}/items/{{id}}/tags"),
            None,
        ));
        defs.push(route(
            format!("files_{i}"),
            None,
            format!("/api/s{i}/files/{{*rest}}"),
            None,
        ));
    }
    for (i, def) in defs.iter_mut().enumerate() {
        def.value = i;
    }
    match RouteTable::build(defs) {
        Ok(table) => table,
        Err(errors) => panic!("bench table is invalid: {errors:#?}"),
    }
}

/// (case, Host header, path, method, expected outcome: route name, "405" or "404")
fn cases(size: usize) -> Vec<(&'static str, Option<String>, String, Method, String)> {
    let last = size / 5 - 1;
    vec![
        (
            "static",
            Some(format!("s{last}.example.com")),
            format!("/api/s{last}/status"),
            Method::GET,
            format!("status_{last}"),
        ),
        (
            "static_mixed_case_host_port",
            Some(format!("S{last}.Example.COM:8443")),
            format!("/api/s{last}/status"),
            Method::GET,
            format!("status_{last}"),
        ),
        (
            "param_wildcard_host",
            Some(format!("eu.s{last}.example.com")),
            format!("/api/s{last}/items/12345"),
            Method::GET,
            format!("item_get_{last}"),
        ),
        (
            "catch_all_any_host",
            Some(format!("s{last}.example.com")),
            format!("/api/s{last}/files/img/2024/logo.png"),
            Method::GET,
            format!("files_{last}"),
        ),
        (
            "method_not_allowed",
            Some(format!("eu.s{last}.example.com")),
            format!("/api/s{last}/items/12345"),
            Method::DELETE,
            "405".to_string(),
        ),
        (
            "miss",
            Some("www.example.org".to_string()),
            format!("/api/s{last}/nothing/here"),
            Method::GET,
            "404".to_string(),
        ),
    ]
}

fn outcome(lookup: Lookup<'_, '_, usize>) -> String {
    match lookup {
        Lookup::Found { name, .. } => name.to_string(),
        Lookup::MethodNotAllowed { .. } => "405".to_string(),
        Lookup::NotFound => "404".to_string(),
    }
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for size in [10, 1_000] {
        let table = table(size);
        assert_eq!(table.len(), size);
        for (case, host, path, method, expected) in cases(size) {
            // A bench that measures the wrong outcome is worse than none.
            let got = outcome(table.lookup(host.as_deref(), &path, &method));
            assert_eq!(got, expected, "{case} on {size} routes");
            group.bench_with_input(BenchmarkId::new(case, size), &size, |b, _| {
                b.iter(|| {
                    black_box(table.lookup(
                        black_box(host.as_deref()),
                        black_box(path.as_str()),
                        black_box(&method),
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
