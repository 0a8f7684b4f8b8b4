//! Cost of resolving a request target, which every request pays before routing: the path's
//! normal form (borrowed when the path is already normal, as nearly every real one is), the
//! whole resolution of a request header, and the lenient reading paid only by paths that still
//! hold `%`, `;` or `//`.
//!
//! Run: `cargo bench --bench request_target`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use tollgate::request_target::{lenient_reading, normalize, resolve, Resolved};

const NORMAL: &str = "/v1/users/42/orders/2026-12-06";
const ENCODED: &str = "/v1/users/%34%32//orders/2026%2d12%2d06";

fn request(target: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
    req.insert_header("host", "api.example.com").expect("host");
    req
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_target");
    g.bench_function("normalize/normal", |b| {
        b.iter(|| normalize(black_box(NORMAL.as_bytes()), true).map(|p| p.path.len()))
    });
    g.bench_function("normalize/encoded_and_doubled", |b| {
        b.iter(|| normalize(black_box(ENCODED.as_bytes()), true).map(|p| p.path.len()))
    });
    let normal = request(&format!("{NORMAL}?page=2&limit=20"));
    g.bench_function("resolve/origin_form", |b| {
        b.iter(|| match resolve(black_box(&normal), true) {
            Ok(Resolved::Request(t)) => t.path.path.len(),
            _ => 0,
        })
    });
    let absolute = request(&format!("http://api.example.com{NORMAL}"));
    g.bench_function("resolve/absolute_form", |b| {
        b.iter(|| match resolve(black_box(&absolute), true) {
            Ok(Resolved::Request(t)) => t.origin_form().len(),
            _ => 0,
        })
    });
    g.bench_function("lenient_reading", |b| {
        b.iter(|| lenient_reading(black_box("/v1/items;v=2/a%3Bb/%C3%A9"), false).len())
    });
    g.finish();
}

criterion_group!(request_target, benches);
criterion_main!(request_target);
