//! The read-only status page on the admin listener: `GET /` (HTML, complete without
//! JavaScript), `GET /api/status` (the JSON it is drawn from, see [`model`]),
//! `GET /api/status.html` (the page's `<main>`, which `/status.js` fetches to refresh it) and
//! the page's own script and style sheet. With `server.admin_token_env` set, everything but
//! the assets and an empty login form needs the token. Nothing here changes state.
//!
//! [`history`] keeps the last 15 minutes of traffic, sampled off the request path; [`page`]
//! renders HTML with every value escaped, under a strict Content-Security-Policy.

pub mod history;
pub mod model;
pub mod page;

use super::{bearer_matches, json_response, unauthorized, AdminApp};
use http::{HeaderValue, Response, StatusCode};
use model::{Inputs, Status};
use pingora::protocols::http::ServerSession;

const SCRIPT: &str = include_str!("assets/status.js");
const STYLE: &str = include_str!("assets/status.css");

/// Only the page's own files; no inline script or style, no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl AdminApp {
    /// Answers the status page's paths (`None`: not one of them). GET and HEAD only.
    pub(super) fn status_page(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let path = session.req_header().uri.path();
        let response = match path {
            "/status.js" => asset(SCRIPT, "text/javascript; charset=utf-8"),
            "/status.css" => asset(STYLE, "text/css; charset=utf-8"),
            "/" | "/api/status" | "/api/status.html" => {
                let allowed = match &self.store.snapshot().admin_token {
                    Some(token) => bearer_matches(session, token),
                    None => true,
                };
                match (path, allowed) {
                    ("/", false) => html(page::document(&page::login())),
                    (_, false) => unauthorized(
                        "the status needs the admin token: Authorization: Bearer <token>",
                    ),
                    ("/", true) => html(page::document(&page::main(&self.status()))),
                    ("/api/status", true) => {
                        let value = serde_json::to_value(self.status()).unwrap_or_default();
                        json_response(StatusCode::OK, value)
                    }
                    _ => html(page::main(&self.status())),
                }
            }
            _ => return None,
        };
        Some(hardened(response))
    }

    /// The status now: the live snapshot, the last reload, the targets' state, the history.
    fn status(&self) -> Status {
        let snapshot = self.store.snapshot();
        let last_reload = self.store.last_reload();
        let inputs = Inputs {
            snapshot: &snapshot,
            last_reload: last_reload.as_ref().as_ref(),
            ready: self.ready.get(),
            started: self.started,
        };
        Status::build(&inputs, &self.history.view())
    }
}

fn html(body: String) -> Response<Vec<u8>> {
    super::respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body.into_bytes(),
    )
}

fn asset(body: &'static str, content_type: &str) -> Response<Vec<u8>> {
    super::respond(StatusCode::OK, content_type, body.as_bytes().to_vec())
}

/// The headers every status response carries: the CSP, no MIME sniffing, no framing, no
/// referrer (the admin address stays private).
fn hardened(mut response: Response<Vec<u8>>) -> Response<Vec<u8>> {
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
