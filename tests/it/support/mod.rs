//! Test harness: real backends on 127.0.0.1 that record what they received, and a real
//! Tollgate (in-process Pingora server, or the built binary), each on a port of its own
//! (`tollgate_testkit::ports`: no port serves two servers in one run).

pub mod answer;
pub mod auth;
pub mod backend;
pub mod browser;
pub mod faulty;
pub mod gateway;
pub mod http2;
pub mod jwks_server;
pub mod logs;
pub mod misbehaving;
pub mod origin;
pub mod otlp;
pub mod prom;
pub mod raw;
pub mod recorder;
pub mod redis;
pub mod redis_cluster;
pub mod resilience;
pub mod tls;

pub use answer::{assert_problem, call, get, send, Answer};
pub use backend::{backend, Backend, Received};
pub use faulty::{Fault, FaultyProxy};
pub use gateway::{free_port, GatewayHandle};
pub use raw::{
    parse_response, raw_exchange, raw_request, try_parse_response, RawConn, RawResponse, ReadError,
};
pub use recorder::{RecordedRequest, Recorder};
pub use tollgate_testkit::jwt;

use std::time::{Duration, Instant};

/// A listener on 127.0.0.1 for a server the test runs, on a port no other server of this run
/// had (a stopped backend's port is never another test's backend).
pub fn listener() -> tokio::net::TcpListener {
    let listener = tollgate_testkit::ports::loopback_listener();
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    tokio::net::TcpListener::from_std(listener).expect("tokio listener")
}

/// Polls `check` every 20 ms until it returns true or `limit` passes; returns the last result.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP client that never retries, never follows redirects, and gives up after 10 s.
/// It trusts no certificate authority: tests reach 127.0.0.1 over plain HTTP (HTTPS goes
/// through `tls::https_client`), and loading the system's roots cost about 35 ms per client in
/// a debug build, which tests building a client per request paid on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client")
}

/// SHA-256 of `bytes`, lower-case hex (how config hashes and API-key digests are written).
pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic, incompressible-looking bytes (xorshift), so a shifted or dropped chunk shows.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
