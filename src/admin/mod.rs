//! The admin listener (`server.admin_listen`): `GET /metrics` (Prometheus), `/healthz` (alive),
//! `/readyz` (config loaded and listeners up, false while draining) and `/config` (what config is
//! loaded: hash, source, load time, counts; never secrets), the status page at `/` and its JSON
//! at `/api/status` (see [`status`]), and `POST /cache/purge` (see [`purge`]). With
//! `server.admin_token_env`, POSTs and the status need its bearer token. Keep it on a private
//! address.

mod purge;
pub mod status;

use crate::observe::Metrics;
use crate::snapshot::Store;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Whether this instance should receive traffic: set once the server runs, cleared on drain.
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct AdminApp {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    /// The status page's traffic history (sampled by [`AdminApp::sampler`]).
    history: Arc<status::history::History>,
    started: SystemTime,
}

impl AdminApp {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, ready: Arc<Readiness>) -> AdminApp {
        AdminApp {
            history: Arc::new(status::history::History::new(metrics.clone())),
            store,
            metrics,
            ready,
            started: SystemTime::now(),
        }
    }

    /// The background task that fills the status page's history: run it beside the listener.
    pub fn sampler(&self) -> status::history::Sampler {
        status::history::Sampler(self.history.clone())
    }

    fn config_info(&self) -> serde_json::Value {
        let snap = self.store.snapshot();
        let info = &snap.info;
        json!({
            "hash": info.hash,
            "source": info.source.display().to_string(),
            "loaded_at": info.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "loaded_at_rfc3339": humantime::format_rfc3339_seconds(info.loaded_at).to_string(),
            "routes": info.routes,
            "upstreams": info.upstreams,
            "version": env!("CARGO_PKG_VERSION"),
        })
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

fn problem(status: StatusCode, detail: &str) -> Response<Vec<u8>> {
    let value = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or_default(),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/problem+json", body)
}

/// 401 with `WWW-Authenticate: Bearer`, for an endpoint that needs the admin token.
fn unauthorized(detail: &str) -> Response<Vec<u8>> {
    let mut r = problem(StatusCode::UNAUTHORIZED, detail);
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    r
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(session: &ServerSession, token: &str) -> bool {
    let Some(value) = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
    else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer`, `BEARER`.
    let given = value.as_bytes();
    let Some((scheme, given)) = given.split_at_checked(7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    given.ct_eq(token.as_bytes()).into()
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method == http::Method::POST && req.uri.path() == "/cache/purge" {
            return self.purge(session).await;
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"status": 405, "title": "Method Not Allowed"}),
            );
        }
        if let Some(response) = self.status_page(session) {
            return response;
        }
        match req.uri.path() {
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => json_response(StatusCode::OK, json!({"status": "alive"})),
            "/readyz" => {
                if self.ready.get() {
                    json_response(StatusCode::OK, json!({"status": "ready"}))
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "not ready"}),
                    )
                }
            }
            "/config" => json_response(StatusCode::OK, self.config_info()),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"status": 404, "title": "Not Found", "detail": "try /, /api/status, /metrics, /healthz, /readyz or /config"}),
            ),
        }
    }
}
