//! Sending a corpus case over one transport and judging what happened: the answer, what the
//! backends received, the rejection counter and, for some, the access-log line.

use super::corpus::{Case, Expect, Line, Req};
use super::fixture::{Delivered, Edge, Route};
use super::model::lenient_route;
use crate::support::http2::{H2Answer, H2Conn, H2Request};
use crate::support::{raw_exchange, try_parse_response, RawResponse};
use std::collections::BTreeMap;
use std::time::Duration;

/// The rejection reasons of a refused request head (the spec's four and the framing checks').
const REQUEST_REASONS: [&str; 7] = [
    "bad_target",
    "bad_path",
    "missing_host",
    "bad_host",
    "bad_request",
    "malformed_head",
    "connect_method",
];

pub const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Raw bytes over a plain TCP connection.
    Http1,
    /// HTTP/2 by prior knowledge on the plain listener.
    H2c,
    /// HTTP/2 over TLS (ALPN) on the HTTPS listener.
    H2Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http1 => "HTTP/1.1",
            Transport::H2c => "h2c",
            Transport::H2Tls => "h2 (TLS)",
        }
    }

    /// The `X-Forwarded-Proto` the backend must see.
    fn proto(self) -> &'static str {
        match self {
            Transport::H2Tls => "https",
            _ => "http",
        }
    }
}

/// The client's side of one exchange.
#[derive(Debug)]
pub enum Answer {
    Response(RawResponse),
    /// No response: the connection or stream was closed, reset or timed out.
    Nothing(String),
}

/// One exchange: what the client got, and what reached the backends.
pub struct Exchange {
    pub answer: Answer,
    pub delivered: Delivered,
}

/// Sends `req` (with the fixture's credential when `credential` is set) and collects what
/// happened. `Err`: the case cannot be expressed on this transport.
pub async fn exchange(
    edge: &Edge,
    req: &Req,
    transport: Transport,
    credential: bool,
) -> Result<Exchange, String> {
    let credential = credential.then(|| edge.credential());
    let mark = edge.mark();
    let answer = match transport {
        Transport::Http1 => {
            let out = raw_exchange(edge.gw.addr, &http1_bytes(req, credential)).await;
            match try_parse_response(&out) {
                Ok(r) => Answer::Response(r),
                Err(e) => Answer::Nothing(e),
            }
        }
        Transport::H2c | Transport::H2Tls => {
            let tls = transport == Transport::H2Tls;
            let request = h2_request(req, tls, credential)?.build()?;
            let mut conn = if tls {
                H2Conn::tls(&edge.ca, edge.tls_addr).await
            } else {
                H2Conn::plain(edge.gw.addr).await
            };
            match conn.exchange(request).await {
                H2Answer::Response(r) => Answer::Response(r),
                H2Answer::Reset(e) => Answer::Nothing(format!("reset: {e}")),
                H2Answer::TimedOut => Answer::Nothing("no answer within 10 s".into()),
            }
        }
    };
    Ok(Exchange {
        answer,
        delivered: edge.since(&mark),
    })
}

/// The request as HTTP/1.x bytes, closing the connection after the answer.
pub fn http1_bytes(req: &Req, credential: Option<(&str, &str)>) -> Vec<u8> {
    let mut out = match req.line {
        Line::Parts {
            method,
            target,
            version,
        } => [method.as_bytes(), b" ", target, b" ", version.as_bytes()].concat(),
        Line::Exact(bytes) => bytes.to_vec(),
    };
    out.extend_from_slice(b"\r\n");
    if let Some(host) = req.host {
        out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    }
    for line in req.extra {
        out.extend_from_slice(format!("{line}\r\n").as_bytes());
    }
    if let Some((name, value)) = credential {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// The same request over HTTP/2: an absolute-form target becomes `:scheme`, `:authority` and
/// `:path` (a Host header, if any, goes along as `host`); otherwise the target is the `:path`
/// and the Host is the `:authority` (or, when it cannot be one, a `host` field).
fn h2_request(req: &Req, tls: bool, credential: Option<(&str, &str)>) -> Result<H2Request, String> {
    let Line::Parts {
        method,
        target,
        version,
    } = req.line
    else {
        return Err("request-line bytes exist in HTTP/1.x only".into());
    };
    if version != "HTTP/1.1" {
        return Err("HTTP/1.0 has no HTTP/2 form".into());
    }
    if method == "CONNECT" {
        return Err("CONNECT has other pseudo-headers in HTTP/2".into());
    }
    let target = std::str::from_utf8(target).map_err(|_| "the h2 client sends UTF-8 only")?;
    let mut h2 = H2Request {
        method: method.into(),
        ..H2Request::default()
    };
    let mut host_field = None;
    match absolute_form(target) {
        Some((scheme, authority, path)) => {
            h2.scheme = Some(scheme.into());
            h2.authority = Some(authority.into());
            h2.path = if path.is_empty() { "/" } else { path }.into();
            host_field = req.host;
        }
        None => {
            h2.scheme = Some(if tls { "https" } else { "http" }.into());
            h2.path = target.into();
            match req.host {
                Some(host) if http::uri::Authority::try_from(host).is_ok() => {
                    h2.authority = Some(host.into());
                }
                other => host_field = other,
            }
        }
    }
    if let Some(host) = host_field {
        h2.headers.push(("host".into(), host.into()));
    }
    for line in req.extra {
        let (name, value) = line.split_once(':').ok_or("extra header line")?;
        h2.headers
            .push((name.trim().to_ascii_lowercase(), value.trim().into()));
    }
    if let Some((name, value)) = credential {
        h2.headers.push((name.into(), value.into()));
    }
    Ok(h2)
}

/// `scheme://authority/path` split in three (`None` for any other form).
fn absolute_form(target: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    let valid = scheme.as_bytes().first()?.is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !valid {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// The verdict on one case.
pub enum Verdict {
    Pass,
    Skip(String),
    Fail(String),
}

/// Sends one case with the credential and checks every expectation; all problems are listed.
pub async fn check(edge: &Edge, case: &Case, transport: Transport) -> Verdict {
    let before = edge.rejections().await;
    let x = match exchange(edge, &case.req, transport, true).await {
        Ok(x) => x,
        Err(why) => return Verdict::Skip(why),
    };
    let mut problems = Vec::new();
    match case.expect_over(transport != Transport::Http1) {
        Expect::Served {
            route,
            path_and_query,
            host,
        } => {
            expect_status(&x.answer, 200, &mut problems);
            served_as(
                edge,
                &x.delivered,
                route,
                path_and_query,
                host,
                transport,
                &mut problems,
            );
        }
        Expect::Refused { status, reason } => {
            expect_status(&x.answer, status, &mut problems);
            if !x.delivered.nothing() {
                problems.push(format!("reached a backend: {}", x.delivered.describe()));
            }
            if let Some(reason) = reason {
                if let Answer::Response(r) = &x.answer {
                    if r.status == status
                        && r.header("content-type") != Some("application/problem+json")
                    {
                        problems.push(format!(
                            "content-type {:?}, not problem+json",
                            r.header("content-type")
                        ));
                    }
                }
                let grew = counted(edge, &before, reason).await;
                if !grew.is_empty() {
                    problems.push(grew);
                }
                if let (Some(path), Answer::Response(r)) = (case.log_path, &x.answer) {
                    if let Err(e) = logged(edge, r, reason, path).await {
                        problems.push(e);
                    }
                }
            }
        }
        Expect::Options => {
            expect_status(&x.answer, 200, &mut problems);
            if let Answer::Response(r) = &x.answer {
                if r.header("allow") != Some(ALLOW) {
                    problems.push(format!("Allow {:?}", r.header("allow")));
                }
                if r.header("content-length") != Some("0") {
                    problems.push(format!("Content-Length {:?}", r.header("content-length")));
                }
            }
            if !x.delivered.nothing() {
                problems.push(format!("forwarded: {}", x.delivered.describe()));
            }
        }
    }
    if problems.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(problems.join("; "))
    }
}

fn expect_status(answer: &Answer, status: u16, problems: &mut Vec<String>) {
    match answer {
        Answer::Response(r) if r.status == status => {}
        Answer::Response(r) => problems.push(format!(
            "status {} (want {status}): {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
                .chars()
                .take(80)
                .collect::<String>()
        )),
        Answer::Nothing(why) => problems.push(format!("no answer (want {status}): {why}")),
    }
}

/// Exactly one request, at `route`, with this target, Host and X-Forwarded-* headers. A
/// request that named no host (`host: None`) goes up with the backend's address as its Host
/// (HTTP/1.1 needs one) and no X-Forwarded-Host.
fn served_as(
    edge: &Edge,
    delivered: &Delivered,
    route: Route,
    path_and_query: &str,
    host: Option<&str>,
    transport: Transport,
    problems: &mut Vec<String>,
) {
    let [(got_route, seen)] = &delivered.requests[..] else {
        problems.push(format!(
            "want one request at {}: {}",
            route.name(),
            delivered.describe()
        ));
        return;
    };
    if *got_route != route || delivered.touched != [route] {
        problems.push(format!(
            "served by {} (want {})",
            got_route.name(),
            route.name()
        ));
    }
    if seen.target() != path_and_query {
        problems.push(format!(
            "backend got {:?} (want {path_and_query:?})",
            seen.target()
        ));
    }
    let want: Vec<&str> = host.into_iter().collect();
    let target = edge.backend_target(route);
    let want_host = match host {
        Some(host) => [host],
        None => [target.as_str()],
    };
    if seen.header_values("host") != want_host {
        problems.push(format!(
            "backend Host {:?} (want {want_host:?})",
            seen.header_values("host")
        ));
    }
    if seen.header_values("x-forwarded-host") != want {
        problems.push(format!(
            "backend X-Forwarded-Host {:?} (want {want:?})",
            seen.header_values("x-forwarded-host")
        ));
    }
    if seen.header_values("x-forwarded-proto") != [transport.proto()] {
        problems.push(format!(
            "backend X-Forwarded-Proto {:?}",
            seen.header_values("x-forwarded-proto")
        ));
    }
}

/// "" when `tollgate_rejected_requests_total{reason}` grew by exactly one since `before` (and
/// no other reason grew); otherwise what happened.
async fn counted(edge: &Edge, before: &BTreeMap<String, f64>, reason: &str) -> String {
    let mut after = edge.rejections().await;
    // The counter is bumped before the answer is written; one second look covers a lag.
    if after.get(reason) == before.get(reason) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = edge.rejections().await;
    }
    // Reasons of refused requests only: a connection another check left idle may count as a
    // header_timeout at any moment.
    let grown: Vec<String> = after
        .iter()
        .filter(|(k, _)| REQUEST_REASONS.contains(&k.as_str()))
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}+{}", v - before.get(k).unwrap_or(&0.0)))
        .collect();
    if grown == [format!("{reason}+1")] {
        String::new()
    } else {
        format!("tollgate_rejected_requests_total: {grown:?} (want {reason}+1)")
    }
}

/// The refusal's access-log line (found by the answer's request id): status 400, `reason`, and
/// the path as received.
async fn logged(edge: &Edge, r: &RawResponse, reason: &str, path: &str) -> Result<(), String> {
    let id = r
        .header("x-request-id")
        .ok_or("no x-request-id on the answer")?;
    let line = edge
        .access_line(id)
        .await
        .ok_or(format!("no access-log line for request id {id}"))?;
    if line["status"] != 400 || line["reason"] != reason || line["path"] != path {
        return Err(format!(
            "access-log line {line} (want status 400, reason {reason:?}, path {path:?})"
        ));
    }
    Ok(())
}

/// Requests that reached a protected backend, or that a lenient framework would serve as a
/// protected route (by any Host or X-Forwarded-Host value the backend got).
pub fn bypasses(delivered: &Delivered) -> Vec<String> {
    let mut out = Vec::new();
    for route in &delivered.touched {
        if route.protected() {
            out.push(format!("bytes reached {}", route.name()));
        }
    }
    for (route, seen) in &delivered.requests {
        let hosts = seen.header_values("host");
        let forwarded: Vec<&str> = seen
            .header_values("x-forwarded-host")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let readings = std::iter::once(lenient_route(seen.target(), None, None))
            .chain(
                hosts
                    .iter()
                    .map(|h| lenient_route(seen.target(), Some(h), None)),
            )
            .chain(
                forwarded
                    .iter()
                    .map(|h| lenient_route(seen.target(), None, Some(h))),
            );
        if let Some(reading) = readings.into_iter().find(|r| r.protected()) {
            out.push(format!(
                "{} got {:?} (Host {hosts:?}, X-Forwarded-Host {forwarded:?}), which a lenient framework serves as {}",
                route.name(),
                seen.request_line(),
                reading.name()
            ));
        }
    }
    out
}

/// Tallies verdicts and fails the test with every failing case at once.
#[derive(Default)]
pub struct Report {
    title: String,
    passed: usize,
    skipped: Vec<String>,
    failed: Vec<String>,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            ..Report::default()
        }
    }

    pub fn add(&mut self, name: &str, verdict: Verdict) {
        match verdict {
            Verdict::Pass => self.passed += 1,
            Verdict::Skip(why) => self.skipped.push(format!("{name}: {why}")),
            Verdict::Fail(why) => self.failed.push(format!("{name}: {why}")),
        }
    }

    /// Prints the tally and panics if any case failed.
    pub fn finish(self) {
        let run = self.passed + self.failed.len();
        println!(
            "{}: {run} cases run, {} passed, {} failed, {} skipped",
            self.title,
            self.passed,
            self.failed.len(),
            self.skipped.len()
        );
        for s in &self.skipped {
            println!("  skipped {s}");
        }
        assert!(
            self.failed.is_empty(),
            "{}: {} of {run} cases failed:\n  {}",
            self.title,
            self.failed.len(),
            self.failed.join("\n  ")
        );
    }
}
