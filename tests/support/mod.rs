//! Test harness: real backends on 127.0.0.1 ephemeral ports that record what they received,
//! and a real Tollgate (in-process Pingora server, or the built binary) on free ports.
#![allow(dead_code)]

pub mod auth;
pub mod backend;
pub mod faulty;
pub mod gateway;
pub mod http2;
pub mod jwks_server;
pub mod jwt;
pub mod logs;
pub mod prom;
pub mod raw;
pub mod recorder;
pub mod redis;
pub mod redis_cluster;
pub mod resilience;
pub mod tls;

#[allow(unused_imports)]
pub use backend::{backend, Backend, Received};
#[allow(unused_imports)]
pub use faulty::{Fault, FaultyProxy};
#[allow(unused_imports)]
pub use gateway::{free_port, GatewayHandle};
#[allow(unused_imports)]
pub use raw::{
    parse_response, raw_exchange, raw_request, try_parse_response, RawConn, RawResponse, ReadError,
};
#[allow(unused_imports)]
pub use recorder::{RecordedRequest, Recorder};

use std::time::{Duration, Instant};

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
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client")
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
