//! The first step of every request: its target resolved once (form, host, path in normal form),
//! its route found, and the checks that keep a backend from reading the forwarded request as
//! another route's, or a rewritten one as a path outside the rewrite. Everything later (auth,
//! limits, logs, the forwarded request) sees the request this step settled.

use crate::request_target::{
    self, has_hidden_dot_segment, lenient_reading, PathError, Refusal, Resolved, Target,
};
use crate::route::Lookup;
use crate::snapshot::{Route, Snapshot};
use pingora::http::RequestHeader;
use std::sync::Arc;

/// What the route table says about a request. Owned (but for the 405's `Allow`, which the
/// snapshot holds), so the session can be written to afterwards.
pub enum Resolution<'s> {
    Routed(Routed),
    /// 400: the target, host or path is refused.
    Refused(Refusal),
    NotFound,
    MethodNotAllowed {
        allow: &'s str,
    },
    /// `OPTIONS *`.
    ServerOptions,
}

/// A request a route accepts.
pub struct Routed {
    pub route: Arc<Route>,
    /// The request as it must be forwarded, when that differs from how it was received.
    pub rewritten: Option<RewrittenTarget>,
    /// Path and query for the upstream when the route has a `rewrite`.
    pub upstream_target: Option<Vec<u8>>,
    /// The path parameters, percent-decoded, for an aggregate route's templates (empty for
    /// other routes: nothing else reads them).
    pub params: Vec<(String, String)>,
}

/// The normal form of a request received otherwise (absolute-form, or a path that normalised).
pub struct RewrittenTarget {
    /// Origin-form `path?query`.
    pub target: Vec<u8>,
    /// The authority of an absolute-form target: it becomes the `Host`.
    pub host: Option<String>,
}

/// Finds the route for `req`; see the module docs.
pub fn resolve<'s>(snapshot: &'s Snapshot, req: &RequestHeader) -> Resolution<'s> {
    let target = match request_target::resolve(req, snapshot.merge_slashes) {
        Ok(Resolved::Request(target)) => target,
        Ok(Resolved::ServerOptions) => return Resolution::ServerOptions,
        Err(refusal) => return Resolution::Refused(refusal),
    };
    let path = &*target.path.path;
    match snapshot.routes.lookup(target.host, path, &req.method) {
        Lookup::Found { route, params, .. } => {
            if target.path.escaped_slash && !route.keep_escaped_slashes {
                return Resolution::Refused(Refusal::BadPath(PathError::EscapedSlash));
            }
            let read_leniently = target.path.lenient_differs || snapshot.lenient_every_path;
            if read_leniently && !lenient_agrees(snapshot, &target, route, req) {
                return Resolution::Refused(Refusal::BadPath(PathError::Ambiguous));
            }
            let upstream_target = route
                .rewrite
                .as_ref()
                .map(|rw| rw.apply(|name| params.get(name), target.query));
            // The agreement above reads the routed path; a rewrite forwards another one, whose
            // `..;` resolves against the rewrite's literal text instead.
            let forwarded = upstream_target
                .as_ref()
                .filter(|_| target.path.lenient_differs);
            if let Some(forwarded) = forwarded {
                let path = forwarded.split(|&b| b == b'?').next().unwrap_or_default();
                if has_hidden_dot_segment(path, route.keep_escaped_slashes) {
                    return Resolution::Refused(Refusal::BadPath(PathError::HiddenDotSegment));
                }
            }
            let rewritten = target.is_rewritten().then(|| RewrittenTarget {
                target: target.origin_form(),
                host: match target.form {
                    request_target::Form::Absolute => target.host.map(str::to_string),
                    request_target::Form::Origin => None,
                },
            });
            let params = match route.aggregate() {
                Some(_) => params
                    .iter()
                    .map(|(name, value)| {
                        let decoded = percent_encoding::percent_decode_str(value);
                        (name.to_string(), decoded.decode_utf8_lossy().into_owned())
                    })
                    .collect(),
                None => Vec::new(),
            };
            Resolution::Routed(Routed {
                route: route.clone(),
                rewritten,
                upstream_target,
                params,
            })
        }
        Lookup::MethodNotAllowed { allow } => Resolution::MethodNotAllowed { allow },
        Lookup::NotFound => Resolution::NotFound,
    }
}

/// Whether a lenient backend reading the path (decoded, path parameters cut, dot segments
/// resolved) would land on the same route. A 404 or 405 forwards nothing, so only a found
/// route is checked.
fn lenient_agrees(
    snapshot: &Snapshot,
    target: &Target<'_>,
    route: &Arc<Route>,
    req: &RequestHeader,
) -> bool {
    let reading = lenient_reading(&target.path.path, route.keep_escaped_slashes);
    matches!(
        snapshot.lenient_routes().lookup(target.host, &reading, &req.method),
        Lookup::Found { route: other, .. } if Arc::ptr_eq(other, route)
    )
}

/// Puts the normal form in place of the received target, so every later step (and the
/// forwarded request, cloned from this one) reads the same request. An HTTP/2 request keeps its
/// scheme and `:authority`; an absolute-form one gets its authority as `Host`.
pub fn apply(req: &mut RequestHeader, rewritten: &RewrittenTarget) -> pingora::Result<()> {
    match req.uri.authority().cloned() {
        Some(authority) => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = req.uri.scheme().cloned();
            parts.authority = Some(authority);
            parts.path_and_query = Some(
                http::uri::PathAndQuery::try_from(rewritten.target.as_slice())
                    .map_err(|e| bad_target(e.to_string()))?,
            );
            let uri = http::Uri::from_parts(parts).map_err(|e| bad_target(e.to_string()))?;
            req.set_uri(uri);
        }
        None => req.set_raw_path(&rewritten.target)?,
    }
    if let Some(host) = &rewritten.host {
        req.insert_header(http::header::HOST, host.as_str())?;
    }
    Ok(())
}

fn bad_target(cause: String) -> Box<pingora::Error> {
    pingora::Error::explain(
        pingora::ErrorType::HTTPStatus(400),
        format!("normalised target: {cause}"),
    )
}

/// The path of a refused request for its access-log line: the received target up to `?`,
/// with bytes that are not printable ASCII escaped (`\x00`), at most 512 bytes of it.
pub fn received_path(req: &RequestHeader) -> String {
    let raw = req.raw_path();
    let path = raw.split(|&b| b == b'?').next().unwrap_or(raw);
    request_target::escape_for_log(&path[..path.len().min(512)])
}
