//! Header handling on the way through: request ids, `X-Forwarded-*`, and hop-by-hop headers that
//! describe one connection and must not be forwarded (RFC 9110 §7.6.1).

use crate::trace::{TRACEPARENT, TRACESTATE};
use http::header::{
    HeaderName, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, UPGRADE,
};
use http::{HeaderMap, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use smallvec::SmallVec;
use std::net::IpAddr;

/// The request id's header, as a name that needs no parsing (looking up a `&str` parses it
/// on every call).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id: kept from the client when sane, generated otherwise. One header value, shared
/// (cheaply cloned) by the upstream request, the response and the logs, which read it as text.
#[derive(Debug, Clone)]
pub struct RequestId {
    value: HeaderValue,
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            value: HeaderValue::from_static(""),
        }
    }
}

impl RequestId {
    /// The id as the logs and answers show it.
    pub fn text(&self) -> &str {
        // Always visible ASCII: checked when kept, hex digits when generated.
        self.value.to_str().unwrap_or("-")
    }

    /// The id as a header value.
    pub fn value(&self) -> &HeaderValue {
        &self.value
    }
}

/// Keeps a client's request id if it is sane (1-128 chars of `[A-Za-z0-9._:-]`), else makes one.
/// Anything else is replaced: the id ends up in logs, headers and upstream systems.
pub fn request_id(incoming: Option<&HeaderValue>) -> RequestId {
    if let Some(v) = incoming {
        let b = v.as_bytes();
        let sane = !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'));
        if sane {
            return RequestId { value: v.clone() };
        }
    }
    // Formatted on the stack and handed to one shared buffer: its only allocation, and the
    // clones for the upstream request and the response only count references.
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4().simple().encode_lower(&mut text);
    // 32 hex digits are always a valid header value.
    let value = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    RequestId { value }
}

/// Names the headers to remove before forwarding, in one pass over the names: the hop-by-hop
/// ones (the fixed list, `Connection`/`Upgrade` unless this is an upgrade, any header the
/// `Connection` header lists) and those in `strip`. `keep_upgrade`: whether this is an upgrade;
/// `None`: when the headers hold an `Upgrade` (a request asking for one). Allocates nothing in
/// the common case where there is little to remove: this runs on every request and response.
fn headers_to_remove(
    headers: &HeaderMap,
    keep_upgrade: Option<bool>,
    strip: &[HeaderName],
) -> SmallVec<[HeaderName; 4]> {
    // Inline room for the usual few (`Connection` on most responses): no allocation.
    let mut remove = SmallVec::new();
    let (mut has_connection, mut has_upgrade) = (false, false);
    for name in headers.keys() {
        // Names compared as names, not strings: a standard name against a standard one is an
        // integer comparison, and against a custom one never looks at bytes.
        if *name == CONNECTION {
            has_connection = true;
        } else if *name == UPGRADE {
            has_upgrade = true;
        } else if [TE, TRAILER, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION].contains(name)
            || *name == KEEP_ALIVE
            || *name == PROXY_CONNECTION
            || strip.contains(name)
        {
            remove.push(name.clone());
        }
    }
    let keep_upgrade = keep_upgrade.unwrap_or(has_upgrade);
    if !keep_upgrade {
        if has_connection {
            remove.push(CONNECTION);
        }
        if has_upgrade {
            remove.push(UPGRADE);
        }
    }
    if !has_connection {
        return remove;
    }
    for value in headers.get_all(CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            // The usual values name no header that is not already on the fixed list.
            if token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("close")
                || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
            {
                continue;
            }
            let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
                continue;
            };
            let framing =
                name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING;
            // Framing headers are Pingora's to manage, whatever the client lists.
            if !framing && headers.contains_key(&name) && !remove.contains(&name) {
                remove.push(name);
            }
        }
    }
    remove
}

/// Whether a client header `name` is, once `_` is read as `-`, a header the gateway sets
/// (`config::reserved::FORWARDING_HEADERS`, the identity headers) or removes (`proxy`: the
/// proxy headers and `strip_request_headers`). CGI, WSGI, Rack and nginx with `underscores_in_headers` read
/// `X_Consumer` and `X-Consumer` as one header (`HTTP_X_CONSUMER`), so such a spelling would
/// pass for the gateway's own value, or for the proxy header it removed. Only a name with a `_`
/// can be one: call it for those alone.
pub fn respells_an_owned_header(
    name: &HeaderName,
    identity: &[HeaderName],
    proxy: &[HeaderName],
) -> bool {
    let dashed = |b: u8| if b == b'_' { b'-' } else { b };
    let name = name.as_str().as_bytes();
    let configured = identity.iter().chain(proxy).map(HeaderName::as_str);
    crate::config::reserved::FORWARDING_HEADERS
        .into_iter()
        .chain(configured)
        .map(str::as_bytes)
        .any(|owned| {
            owned.len() == name.len()
                && owned
                    .iter()
                    .zip(name)
                    .all(|(&a, &b)| dashed(a) == dashed(b))
        })
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the gateway says about a request to its upstream.
pub struct Forwarding<'a> {
    /// The socket peer (appended to `X-Forwarded-For`).
    pub peer: Option<IpAddr>,
    /// The scheme the client used: `X-Forwarded-Proto`.
    pub proto: &'static str,
    pub id: &'a RequestId,
    /// Client headers only a trusted proxy may send; empty when the peer is one.
    pub strip: &'a [HeaderName],
    /// The trace context naming the attempt's span (`[tracing]` on), replacing the client's.
    pub trace: Option<crate::trace::TraceHeaders>,
    /// The attempt's target as the config writes it (`users.internal:8080`): the `Host` of a
    /// request that names none.
    pub target: Option<&'a str>,
}

/// Prepares a request for the upstream: hop-by-hop headers and `strip` out; `X-Forwarded-For`
/// (every client line, then the peer), `X-Forwarded-Proto` and `X-Forwarded-Host` (the host
/// the request was routed by, or none) are the gateway's; the request id attached.
///
/// The headers are edited on the plain `http` parts rather than through Pingora's
/// `insert_header`, which keeps a second, case-preserving map and grew both maps on each insert:
/// that was the largest single cost Tollgate added to a proxied request. The upstream therefore
/// sees lower-case header names (equivalent by RFC 9110); the request target is kept byte for byte.
pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    forwarding: &Forwarding<'_>,
) -> pingora::Result<()> {
    let uri_target = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
    let raw_target = (uri_target != Some(req.raw_path())).then(|| req.raw_path().to_vec());
    let end_stream = req.send_end_stream();
    let mut parts: http::request::Parts = std::mem::replace(req, placeholder_request()).into();
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    forward_headers(&mut parts.headers, authority.as_deref(), forwarding);
    let mut rebuilt = RequestHeader::from(parts);
    if let Some(raw) = raw_target {
        rebuilt.set_raw_path(&raw)?;
    }
    if let Some(end) = end_stream {
        rebuilt.set_send_end_stream(end);
    }
    *req = rebuilt;
    Ok(())
}

/// A request header that only holds a place while the real one is edited as plain parts: the
/// default parts allocate nothing and parse nothing (`RequestHeader::build` parses its target).
fn placeholder_request() -> RequestHeader {
    RequestHeader::from(http::Request::new(()).into_parts().0)
}

/// The response counterpart of [`placeholder_request`].
fn placeholder_response() -> ResponseHeader {
    ResponseHeader::from(http::Response::new(()).into_parts().0)
}

fn forward_headers(h: &mut HeaderMap, authority: Option<&str>, forwarding: &Forwarding<'_>) {
    for name in headers_to_remove(h, None, forwarding.strip) {
        h.remove(&name);
    }
    h.reserve(6);
    if let Some(trace) = &forwarding.trace {
        h.insert(TRACEPARENT, trace.traceparent.clone());
        match &trace.tracestate {
            Some(state) => {
                h.insert(TRACESTATE, state.clone());
            }
            None => {
                h.remove(TRACESTATE);
            }
        }
    }
    if let Some(ip) = forwarding.peer {
        if let Some(xff) = forwarded_for(h, ip) {
            h.insert(X_FORWARDED_FOR, xff);
        }
    }
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(forwarding.proto),
    );
    let host = match authority {
        Some(a) => HeaderValue::from_str(a).ok(),
        // An empty `Host` names no host (RFC 9112 §3.2), as the route lookup read it.
        None => h.get(http::header::HOST).filter(|v| !v.is_empty()).cloned(),
    };
    match host {
        Some(host) => {
            h.insert(X_FORWARDED_HOST, host);
        }
        None => {
            h.remove(X_FORWARDED_HOST);
            // HTTP/1.0 may name no host, but the request goes up as HTTP/1.1, which must
            // (strict servers answer 400 without one). It names the target it is sent to, as
            // nginx's default `Host: $proxy_host` does and as health checks and aggregate
            // parts do; X-Forwarded-Host, absent, still tells the backend the client named none.
            if let Some(target) = forwarding
                .target
                .and_then(|t| HeaderValue::from_str(t).ok())
            {
                h.insert(http::header::HOST, target);
            }
        }
    }
    // Always set, even when the client sent this id: the client can make its own copy
    // hop-by-hop (`Connection: x-request-id`), and Pingora then removes it before this runs.
    // One insert of a shared value, cheaper than finding out whether it is still there.
    h.insert(X_REQUEST_ID, forwarding.id.value().clone());
}

/// The client headers an aggregate's part is sent whatever its `forward_headers` say: the
/// caller's language and trace context; `Host`, `X-Forwarded-For` and the request id only feed
/// the forwarding headers below.
const PART_DEFAULTS: [HeaderName; 6] = [
    http::header::HOST,
    http::header::ACCEPT_LANGUAGE,
    TRACEPARENT,
    TRACESTATE,
    X_FORWARDED_FOR,
    X_REQUEST_ID,
];

/// The headers every part of an aggregate sends: `Accept-Language`, `traceparent` and
/// `tracestate` from the client, the request id and `X-Forwarded-*` as a proxied request has
/// them, `Accept: application/json`. Nothing else of the client's request (no `Authorization`,
/// no cookies): the part's `forward_headers` add what a service needs.
pub fn part_headers(req: &RequestHeader, forwarding: &Forwarding<'_>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8);
    for name in PART_DEFAULTS {
        for value in req.headers.get_all(&name) {
            h.append(name.clone(), value.clone());
        }
    }
    forward_headers(&mut h, req.uri.authority().map(|a| a.as_str()), forwarding);
    // The part's own Host names its target.
    h.remove(http::header::HOST);
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    h
}

/// `X-Forwarded-For` for the upstream: every line the client sent, in order, joined into one,
/// then the socket peer.
fn forwarded_for(h: &HeaderMap, peer: IpAddr) -> Option<HeaderValue> {
    // Built on the stack in the usual case (no client lines): the value's copy is the one
    // allocation.
    let mut xff = SmallVec::<[u8; 64]>::new();
    for line in h.get_all(&X_FORWARDED_FOR) {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            xff.extend_from_slice(line);
            xff.extend_from_slice(b", ");
        }
    }
    xff.extend_from_slice(crate::observe::IpText::new(peer).as_bytes());
    HeaderValue::from_bytes(&xff).ok()
}

/// Cleans an upstream response for the client: hop-by-hop headers out, request id in (`None`:
/// the response may be stored, and the request's own headers are added after that). Edited on
/// the plain `http` parts for the same reason as the request (see `prepare_upstream_request`).
///
/// With an id the response goes straight to the client, so `Surrogate-Key` (the purge tags,
/// the cache's business) goes too; a response that may be stored keeps it for the cache, which
/// reads its tags and removes it before the client sees it.
pub fn prepare_client_response(
    resp: &mut ResponseHeader,
    id: Option<&RequestId>,
    extra: Vec<(HeaderName, HeaderValue)>,
) -> pingora::Result<()> {
    edit_response_headers(resp, |status, headers| {
        let upgrade = status == http::StatusCode::SWITCHING_PROTOCOLS;
        for name in headers_to_remove(headers, Some(upgrade), &[]) {
            headers.remove(&name);
        }
        if let Some(id) = id {
            headers.remove(&crate::cache::SURROGATE_KEY);
            headers.insert(X_REQUEST_ID, id.value().clone());
        }
        for (name, value) in extra {
            headers.insert(name, value);
        }
    })
}

/// Edits a response's headers on the plain `http` map (for the same reason as the request, see
/// `prepare_upstream_request`): Pingora's `insert_header` parses the name again and, for a name
/// it does not know, copies it, each time. The response leaves without the map of its header
/// names' original case (HTTP/2 clients never see it either; stored responses have none).
pub fn edit_response_headers(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(http::StatusCode, &mut HeaderMap),
) -> pingora::Result<()> {
    // Only a reason other than the status's own needs keeping (and a copy).
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder_response()).into();
    edit(parts.status, &mut parts.headers);
    let mut rebuilt = ResponseHeader::from(parts);
    if reason.is_some() {
        rebuilt.set_reason_phrase(reason.as_deref())?;
    }
    *resp = rebuilt;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_kept_only_when_sane() {
        let sane = HeaderValue::from_static("abc-123_x.y:z");
        let kept = request_id(Some(&sane));
        assert_eq!(kept.text(), "abc-123_x.y:z");
        for bad in [
            &b""[..],
            b"has space",
            b"quote\"",
            &[0xff, 0xfe],
            &[b'a'; 129],
        ] {
            let value = HeaderValue::from_bytes(bad).unwrap();
            let id = request_id(Some(&value));
            assert_eq!(id.text().len(), 32, "{}", id.text());
            assert!(id.text().bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(id.value(), id.text());
        }
        assert_ne!(request_id(None).text(), request_id(None).text());
    }

    #[test]
    fn forwards_and_strips() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.insert_header("host", "api.example.com").unwrap();
        req.insert_header("connection", "keep-alive, x-secret-hop")
            .unwrap();
        req.insert_header("x-secret-hop", "1").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("te", "trailers").unwrap();
        req.insert_header("x-forwarded-for", "203.0.113.9").unwrap();
        let id = request_id(None);
        let forwarding = Forwarding {
            peer: Some([10, 0, 0, 1].into()),
            proto: "http",
            id: &id,
            strip: &[],
            trace: None,
            target: None,
        };
        prepare_upstream_request(&mut req, &forwarding).unwrap();
        let h = &req.headers;
        assert!(h.get("connection").is_none());
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-request-id"], id.text());
    }

    #[test]
    fn forwarded_headers_are_the_gateways() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.set_version(http::Version::HTTP_10);
        req.append_header("x-forwarded-for", "203.0.113.9").unwrap();
        req.append_header("x-forwarded-for", "198.51.100.2, 10.1.1.1")
            .unwrap();
        req.insert_header("x-forwarded-host", "admin.example.com")
            .unwrap();
        req.insert_header("x-real-ip", "1.2.3.4").unwrap();
        req.insert_header("forwarded", "for=1.2.3.4").unwrap();
        req.insert_header("x-kept", "1").unwrap();
        let id = request_id(None);
        let strip = [
            HeaderName::from_static("x-real-ip"),
            HeaderName::from_static("forwarded"),
        ];
        let forwarding = Forwarding {
            peer: Some([10, 0, 0, 1].into()),
            proto: "https",
            id: &id,
            strip: &strip,
            trace: None,
            target: None,
        };
        prepare_upstream_request(&mut req, &forwarding).unwrap();
        let h = &req.headers;
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["203.0.113.9, 198.51.100.2, 10.1.1.1, 10.0.0.1"]
        );
        // No Host to route by: the client's claim does not survive.
        assert!(h.get("x-forwarded-host").is_none());
        assert!(h.get("x-real-ip").is_none());
        assert!(h.get("forwarded").is_none());
        assert_eq!(h["x-kept"], "1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn websocket_upgrade_survives() {
        let mut req = RequestHeader::build("GET", b"/ws", None).unwrap();
        req.insert_header("connection", "Upgrade").unwrap();
        req.insert_header("upgrade", "websocket").unwrap();
        let id = request_id(None);
        let forwarding = Forwarding {
            peer: None,
            proto: "http",
            id: &id,
            strip: &[],
            trace: None,
            target: None,
        };
        prepare_upstream_request(&mut req, &forwarding).unwrap();
        assert_eq!(req.headers["upgrade"], "websocket");
        assert_eq!(req.headers["connection"], "Upgrade");
    }
}
