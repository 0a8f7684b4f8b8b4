//! A fake upstream: a real hyper HTTP/1.1 server on 127.0.0.1 that records every request and
//! answers with a chosen status, body, headers and delay.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query exactly as sent by the gateway.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    /// Reads a whole request (its body collected) as a backend receives it.
    pub async fn read(req: hyper::Request<hyper::body::Incoming>) -> Received {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Received {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers,
            body: body.to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct BackendBuilder {
    name: String,
    status: u16,
    body: Option<Bytes>,
    delay: Duration,
    headers: Vec<(String, String)>,
    /// Serve HTTPS with this acceptor instead of plain HTTP.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Starts describing a backend; `.start().await` runs it.
pub fn backend(name: &str) -> BackendBuilder {
    BackendBuilder {
        name: name.to_string(),
        status: 200,
        body: None,
        delay: Duration::ZERO,
        headers: Vec::new(),
        tls: None,
    }
}

impl BackendBuilder {
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    /// Body to answer with; default: `{"backend":"NAME"}`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }
    /// Wait this long before answering (after the request body was read).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Serve HTTPS (HTTP/1.1) with this acceptor's certificate.
    pub fn tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    pub async fn start(self) -> Backend {
        let listener = super::listener();
        let addr = listener.local_addr().expect("local addr");
        self.serve(listener, addr)
    }

    /// Starts on a given address (to bring a stopped backend back on the same port).
    pub async fn start_on(self, addr: SocketAddr) -> Backend {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind {addr}: {e}"),
            }
        };
        self.serve(listener, addr)
    }

    fn serve(self, listener: TcpListener, addr: SocketAddr) -> Backend {
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let body = self
            .body
            .clone()
            .unwrap_or_else(|| Bytes::from(format!("{{\"backend\":\"{}\"}}", self.name)));
        let spec = Arc::new((self, body));
        let rec = received.clone();
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let spec = spec.clone();
                let rec = rec.clone();
                let tls = spec.0.tls.clone();
                tasks.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let spec = spec.clone();
                        let rec = rec.clone();
                        async move {
                            let received = Received::read(req).await;
                            rec.lock().unwrap().push(received);
                            let (b, payload) = &*spec;
                            if !b.delay.is_zero() {
                                tokio::time::sleep(b.delay).await;
                            }
                            let mut resp = hyper::Response::builder()
                                .status(b.status)
                                .header("content-type", "application/json");
                            for (k, v) in &b.headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, Infallible>(resp.body(Full::new(payload.clone())).unwrap())
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match tls {
                        // A failed handshake (e.g. the client did not trust us) ends the
                        // connection before any request is recorded.
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http1.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = http1.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Backend {
            addr,
            received,
            connections,
            task,
        }
    }
}

/// A running fake upstream. Dropping it (or `stop`) closes the listener and every connection.
pub struct Backend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// `127.0.0.1:PORT`, as written in a config's `targets`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    /// Stops accepting and drops all connections (a crashed service).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
