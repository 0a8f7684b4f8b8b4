//! A scriptable upstream for cache tests: a real hyper HTTP/1.1 server on 127.0.0.1 whose
//! answer can be changed between requests (status, headers, delay), that numbers its bodies
//! (`n=1`, `n=2`, ...: a test sees which fetch a client got), answers `304` to a matching
//! `If-None-Match` when it has an ETag, and records every request.

use super::backend::Received;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What the origin answers next.
#[derive(Debug, Clone)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    /// Bytes of padding after `n=N` in the body.
    pub pad: usize,
    /// Send the body in pieces without a Content-Length (chunked): its end is not known ahead.
    pub chunked: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            status: 200,
            headers: Vec::new(),
            delay: Duration::ZERO,
            pad: 0,
            chunked: false,
        }
    }
}

struct State {
    script: Script,
    received: Vec<Received>,
    /// Full responses sent (304s not counted).
    bodies: usize,
}

/// A running origin; dropping it (or `stop`) closes the listener and every connection.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(script: Script) -> Origin {
        let listener = super::listener();
        Origin::serve(listener, script)
    }

    fn serve(listener: TcpListener, script: Script) -> Origin {
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            script,
            received: Vec::new(),
            bodies: 0,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tasks.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, state, task }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Changes what the next requests get.
    pub fn set(&self, script: Script) {
        self.state.lock().unwrap().script = script;
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    /// Full (non-304) responses sent so far.
    pub fn bodies(&self) -> usize {
        self.state.lock().unwrap().bodies
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: &Mutex<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let received = Received::read(req).await;
    let (script, n, not_modified) = {
        let mut s = state.lock().unwrap();
        let script = s.script.clone();
        let etag = script
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
            .map(|(_, v)| v.clone());
        let not_modified = etag.is_some_and(|tag| {
            received
                .header("if-none-match")
                .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
        });
        if !not_modified {
            s.bodies += 1;
        }
        s.received.push(received);
        (script, s.bodies, not_modified)
    };
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    let status = if not_modified { 304 } else { script.status };
    let mut resp = hyper::Response::builder().status(status);
    for (k, v) in &script.headers {
        resp = resp.header(k, v);
    }
    let payload = if not_modified {
        Bytes::new()
    } else {
        let mut text = format!("n={n}");
        text.push_str(&".".repeat(script.pad));
        Bytes::from(text)
    };
    let body = if script.chunked {
        // Two frames, no length: hyper sends it chunked.
        let half = payload.len() / 2;
        let frames = [payload.slice(..half), payload.slice(half..)]
            .map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b)));
        StreamBody::new(futures::stream::iter(frames)).boxed()
    } else {
        Full::new(payload).boxed()
    };
    resp.body(body).unwrap()
}
