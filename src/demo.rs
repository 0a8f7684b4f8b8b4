//! Demo backends for the quick start: small JSON services that echo what they received, so a
//! first `curl` through the gateway shows routing, rewriting and forwarded headers at work.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;
use serde_json::json;

/// One demo service instance, named so responses show which instance answered.
pub struct EchoApp {
    service: String,
}

#[async_trait]
impl ServeHttp for EchoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let body = json!({
            "service": self.service,
            "method": req.method.as_str(),
            "path": req.uri.path(),
            "query": req.uri.query(),
            "x-request-id": header("x-request-id"),
            "x-forwarded-for": header("x-forwarded-for"),
            "x-forwarded-host": header("x-forwarded-host"),
        });
        let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
        bytes.push(b'\n');
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("content-length", bytes.len())
            // A tag for cache purges by tag (`{"tag": "catalog"}`); the gateway removes it.
            .header(
                "surrogate-key",
                self.service.split('@').next().unwrap_or_default(),
            )
            .body(bytes)
            .unwrap_or_default()
    }
}

/// A demo backend service named `service` listening on `addr`.
pub fn echo_service(service: &str, addr: &str) -> Service<HttpServer<EchoApp>> {
    let app = EchoApp {
        service: format!("{service}@{addr}"),
    };
    let mut svc = Service::new(format!("demo {service} {addr}"), HttpServer::new_app(app));
    svc.add_tcp(addr);
    svc.threads = Some(1);
    svc
}

/// Every backend `config/demo.toml` routes to, as services to add to a server.
pub fn backend_services() -> impl Iterator<Item = Service<HttpServer<EchoApp>>> {
    DEMO_BACKENDS
        .iter()
        .map(|(name, addr)| echo_service(name, addr))
}

/// A Pingora server running every demo backend, stopped by SIGTERM or SIGINT within a second.
///
/// Pingora's default grace period after SIGTERM is 300 s, slept through with the listeners
/// already closed and no signal heeded any more; an echo answers at once, so there is nothing
/// to wait for.
pub fn backends_server() -> Server {
    let conf = ServerConf {
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    for service in backend_services() {
        server.add_service(service);
    }
    server
}

/// The backends `config/demo.toml` routes to.
pub const DEMO_BACKENDS: &[(&str, &str)] = &[
    ("users", "127.0.0.1:9001"),
    ("users", "127.0.0.1:9002"),
    ("catalog", "127.0.0.1:9003"),
];
