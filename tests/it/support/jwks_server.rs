//! A fake identity provider: a real hyper HTTP/1.1 server on 127.0.0.1 serving a JWKS whose
//! answer (status, body, delay) a test changes while it runs, counting the requests it gets.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Clone)]
struct Reply {
    status: u16,
    body: Bytes,
    delay: Duration,
    /// Send the body in 64 KiB chunks without a content-length.
    chunked: bool,
}

pub struct JwksServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Serves `jwks` at any path.
    pub async fn start(jwks: &serde_json::Value) -> JwksServer {
        let listener = super::listener();
        JwksServer::serve(listener, jwks)
    }

    /// Serves on a given address (a provider coming back after `stop`).
    pub async fn start_on(addr: SocketAddr, jwks: &serde_json::Value) -> JwksServer {
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(addr).await {
                return JwksServer::serve(listener, jwks);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot bind {addr} again");
    }

    fn serve(listener: TcpListener, jwks: &serde_json::Value) -> JwksServer {
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(Mutex::new(Reply {
            status: 200,
            body: Bytes::from(jwks.to_string()),
            delay: Duration::ZERO,
            chunked: false,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set, so stopping the server drops them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (a, h) = (a.clone(), h.clone());
                connections.spawn(async move {
                    let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                        let answer = a.lock().unwrap().clone();
                        h.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(answer.delay).await;
                            let body = if answer.chunked {
                                let chunks: Vec<Result<Frame<Bytes>, Infallible>> = answer
                                    .body
                                    .chunks(64 * 1024)
                                    .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                                    .collect();
                                StreamBody::new(futures::stream::iter(chunks)).boxed()
                            } else {
                                Full::new(answer.body).boxed()
                            };
                            let resp = hyper::Response::builder()
                                .status(answer.status)
                                .header("content-type", "application/json")
                                .body(body)
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            answer,
            hits,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn serve_jwks(&self, jwks: &serde_json::Value) {
        self.answer(200, jwks.to_string());
    }

    pub fn answer(&self, status: u16, body: impl Into<Bytes>) {
        let mut a = self.answer.lock().unwrap();
        a.status = status;
        a.body = body.into();
        a.chunked = false;
    }

    /// Answers with a chunked body (no content-length: the size shows only while reading).
    pub fn answer_chunked(&self, status: u16, body: impl Into<Bytes>) {
        self.answer(status, body);
        self.answer.lock().unwrap().chunked = true;
    }

    pub fn delay(&self, delay: Duration) {
        self.answer.lock().unwrap().delay = delay;
    }

    /// Stops accepting connections (a provider that is down).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
