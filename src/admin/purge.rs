//! `POST /cache/purge`: removes cached responses by URL, path prefix, tag or cache on this
//! instance and, with `[cluster]`, publishes the purge to the others. Answers
//! `200 {"purged": N}` (and `"propagated"` with `[cluster]`), a 400 problem naming what is
//! wrong with the body, 401 without the admin token when `server.admin_token_env` is set.

use super::{bearer_matches, json_response, problem, unauthorized, AdminApp};
use crate::cache::purge::{in_normal_form, parse, MAX_BODY};
use crate::cache::store::Purge;
use http::{Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::json;

impl AdminApp {
    pub(super) async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let snapshot = self.store.snapshot();
        if let Some(token) = &snapshot.admin_token {
            if !bearer_matches(session, token) {
                return unauthorized(
                    "this endpoint needs the admin token: Authorization: Bearer <token>",
                );
            }
        }
        let body = match read_body(session).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let purge = match parse(&body).and_then(|p| in_normal_form(p, snapshot.merge_slashes)) {
            Ok(p) => p,
            Err(detail) => return problem(StatusCode::BAD_REQUEST, &detail),
        };
        // A typo in a cache's name must not read as a purge that found nothing.
        if let Purge::Cache(name) = &purge {
            if !snapshot.cache_names.contains(name) {
                let known = snapshot.cache_names.join(", ");
                let detail = format!("no cache named \"{name}\" (the config has: {known})");
                return problem(StatusCode::BAD_REQUEST, &detail);
            }
        }
        let store = snapshot.cache_store;
        let purged = store.purge(&purge);
        let answer = match &snapshot.purge_channel {
            Some(channel) => {
                let propagated = channel.publish(store.instance(), &purge).await;
                json!({"purged": purged, "propagated": propagated})
            }
            None => json!({"purged": purged}),
        };
        json_response(StatusCode::OK, answer)
    }
}

/// The request body, up to [`MAX_BODY`] bytes (413 past it, 400 if it cannot be read).
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("a purge request is at most {MAX_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ))
            }
        }
    }
}
