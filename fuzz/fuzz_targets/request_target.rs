//! Request-target normalisation (`src/request_target/`) on arbitrary bytes: classification,
//! the path's normal form, the lenient reading, and `resolve` on a request built from them.
//!
//! Besides "no panic": a normal form is a fixed point (normalising the result again changes
//! nothing), starts with `/` and has no dot segment left; what `resolve` forwards is exactly
//! the normal path and the query as received.
//!
//! Input: `FLAGS \xff TARGET \xff HOST`; FLAGS bits: 0 merge_slashes, 1 keep escaped slashes
//! (lenient reading), 2 HTTP/1.0, 3 send HOST as the Host header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;
use std::borrow::Cow;
use tollgate::request_target::{
    classify, lenient_reading, normalize, resolve, Classified, Resolved,
};

fuzz_target!(|data: &[u8]| {
    let [flags, target, host] = tollgate_fuzz::fields(data);
    let flag = |n| tollgate_fuzz::flag(flags, n);
    let (merge_slashes, keep_escaped_slash, http10) = (flag(0), flag(1), flag(2));
    let host = flag(3).then_some(host);
    let _ = classify(target);
    let path_end = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
    if let Ok(normal) = normalize(&target[..path_end], merge_slashes) {
        check_normal_form(&normal.path, merge_slashes);
        let _ = lenient_reading(&normal.path, keep_escaped_slash);
    }

    let Ok(mut req) = RequestHeader::build("GET", target, None) else {
        return;
    };
    if http10 {
        req.set_version(http::Version::HTTP_10);
    }
    if let Some(host) = host {
        if let Ok(value) = http::HeaderValue::from_bytes(host) {
            let _ = req.insert_header(http::header::HOST, value);
        }
    }
    if let Ok(Resolved::Request(t)) = resolve(&req, merge_slashes) {
        check_normal_form(&t.path.path, merge_slashes);
        let forwarded = t.origin_form();
        let mut expected = t.path.path.as_bytes().to_vec();
        if let Some(query) = t.query {
            expected.push(b'?');
            expected.extend_from_slice(query);
        }
        assert_eq!(forwarded, expected);
        if matches!(classify(req.raw_path()), Ok(Classified::Origin)) {
            // An origin-form target's query is forwarded byte for byte.
            let raw = req.raw_path();
            let raw_query = raw.iter().position(|&b| b == b'?').map(|q| &raw[q + 1..]);
            assert_eq!(t.query, raw_query);
        }
    }
});

fn check_normal_form(path: &Cow<'_, str>, merge_slashes: bool) {
    assert!(path.starts_with('/'), "{path:?}");
    for segment in path.split('/') {
        assert!(segment != "." && segment != "..", "dot segment left in {path:?}");
    }
    if merge_slashes {
        assert!(!path.contains("//"), "{path:?}");
    }
    let again = normalize(path.as_bytes(), merge_slashes)
        .unwrap_or_else(|e| panic!("{path:?} is refused when normalised again: {e:?}"));
    assert_eq!(again.path, *path, "normalising {path:?} again changes it");
}
