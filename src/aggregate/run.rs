//! Every part of one request: parts that read nothing start at once and run side by side;
//! a part that reads another's answer starts when that answer is in. Each part's deadline is
//! its own `timeout` cut to the route's deadline; a part that cannot start before the route's
//! deadline, or whose template lacks a value, is skipped. A failed required part ends the run
//! (the answer will be an error, so the parts still running are dropped, not waited for).

use super::fetch::{request_head, Fetch, Fetched};
use super::part_cache::PartCache;
use super::template::Source;
use super::{Aggregate, Outcome, Part};
use crate::auth::Identity;
use crate::observe::Metrics;
use crate::upstream::RetryPolicy;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http::HeaderMap;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// What the parts of one request are made from.
pub struct Inputs<'a> {
    /// The route's path parameters, percent-decoded.
    pub params: &'a [(String, String)],
    /// The client's query string.
    pub query: Option<&'a str>,
    /// The client's request headers.
    pub headers: &'a HeaderMap,
    pub identity: Option<&'a Identity>,
    pub client: Option<IpAddr>,
    /// The headers every part sends (request id, identity, forwarding, language, trace).
    pub forwarded: HeaderMap,
    /// When the route's deadline passes.
    pub deadline: Option<Instant>,
    pub retry: Option<&'a RetryPolicy>,
    pub connector: &'a Connector,
    pub metrics: &'a Metrics,
    /// The client request's trace (`[tracing]` on).
    pub trace: Option<&'a crate::trace::RequestTrace>,
}

/// How a part went.
#[derive(Debug, Clone)]
pub struct PartResult {
    pub outcome: Outcome,
    /// The upstream's status, or the one the gateway would answer for this failure (502,
    /// 503, 504); `None` when the part never ran.
    pub status: Option<u16>,
    pub elapsed: Duration,
    /// The parsed answer (`Null` for a 204), when the part answered.
    pub value: Option<Value>,
    /// Seconds since a cached answer was fetched (cached and stale parts).
    pub age: Option<u64>,
    /// How long a client may keep this answer (`None`: not at all, or only for this caller).
    pub max_age: Option<u64>,
    /// The request headers the answer varies on, by its `Vary` (lower case).
    pub vary: Vec<String>,
    /// Why the part did not run, when it was skipped.
    pub skip: Option<Skip>,
}

/// Why a part was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The route's deadline passed before the part could start.
    Deadline,
    /// The client's request lacks a value the template needs (a query parameter, a header, a
    /// claim).
    RequestValue,
    /// A part it reads from failed, or its answer lacks the value.
    PartValue,
    /// A required part failed first, so the answer was an error and this part was dropped.
    Cancelled,
}

impl PartResult {
    fn failed(outcome: Outcome, status: Option<u16>, elapsed: Duration) -> PartResult {
        PartResult {
            outcome,
            status,
            elapsed,
            value: None,
            age: None,
            max_age: None,
            vary: Vec::new(),
            skip: None,
        }
    }

    fn skipped(skip: Skip) -> PartResult {
        PartResult {
            skip: Some(skip),
            ..PartResult::failed(Outcome::Skipped, None, Duration::ZERO)
        }
    }
}

/// Runs the parts of `aggregate` for one request. The result has one entry per part, in the
/// aggregate's order; parts dropped after a required part failed are `Skipped`.
pub async fn run(aggregate: &Aggregate, inputs: &Inputs<'_>) -> Vec<PartResult> {
    let n = aggregate.parts.len();
    let mut results: Vec<Option<PartResult>> = vec![None; n];
    let mut started = vec![false; n];
    let mut running = FuturesUnordered::new();
    loop {
        let mut progressed = true;
        while progressed {
            progressed = false;
            for (i, part) in aggregate.parts.iter().enumerate() {
                if started[i] || part.depends_on.iter().any(|&d| results[d].is_none()) {
                    continue;
                }
                started[i] = true;
                match prepare(aggregate, part, inputs, &results) {
                    Ok((request, deadline)) => {
                        running.push(async move {
                            (
                                i,
                                run_part(aggregate, part, request, deadline, inputs).await,
                            )
                        });
                    }
                    Err(result) => {
                        results[i] = Some(result);
                        progressed = true;
                    }
                }
            }
        }
        if required_failed(aggregate, &results) {
            break;
        }
        match running.next().await {
            Some((i, result)) => results[i] = Some(result),
            None => break,
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| PartResult::skipped(Skip::Cancelled)))
        .collect()
}

fn required_failed(aggregate: &Aggregate, results: &[Option<PartResult>]) -> bool {
    aggregate.parts.iter().zip(results).any(|(part, result)| {
        part.required && result.as_ref().is_some_and(|r| !r.outcome.answered())
    })
}

/// The part's request and deadline, or its result when it cannot start (`Skipped`).
fn prepare(
    aggregate: &Aggregate,
    part: &Part,
    inputs: &Inputs<'_>,
    results: &[Option<PartResult>],
) -> Result<(RequestHeader, Option<Instant>), PartResult> {
    let now = Instant::now();
    if inputs.deadline.is_some_and(|d| d <= now) {
        return Err(PartResult::skipped(Skip::Deadline));
    }
    let deadline = match (part.timeout.map(|t| now + t), inputs.deadline) {
        (Some(own), Some(route)) => Some(own.min(route)),
        (own, route) => own.or(route),
    };
    let target = part
        .path
        .render(|source| value_of(source, aggregate, inputs, results))
        .map_err(|missing| {
            PartResult::skipped(match missing.0 {
                Source::Part { .. } => Skip::PartValue,
                _ => Skip::RequestValue,
            })
        })?;
    let mut headers = inputs.forwarded.clone();
    for name in &part.forward_headers {
        for value in inputs.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let head =
        request_head(part, &target, headers).map_err(|_| PartResult::skipped(Skip::PartValue))?;
    Ok((head, deadline))
}

/// A template value, unencoded.
fn value_of(
    source: &Source,
    aggregate: &Aggregate,
    inputs: &Inputs<'_>,
    results: &[Option<PartResult>],
) -> Option<String> {
    match source {
        Source::Param(name) => inputs
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
        Source::Claim(name) => inputs.identity?.claim(name),
        Source::Consumer => inputs.identity?.consumer.as_deref().map(str::to_string),
        Source::Query(name) => query_value(inputs.query?, name),
        Source::Header(name) => inputs
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        Source::Part { part, path } => {
            let index = aggregate.parts.iter().position(|p| &*p.name == part)?;
            let answer = results[index].as_ref()?.value.as_ref()?;
            let found = path.iter().try_fold(answer, |v, member| v.get(member))?;
            scalar_text(found)
        }
    }
}

/// A string, number or boolean as text; other values cannot fill a slot.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first value of query parameter `name`, percent-decoded (`+` is a space, as forms send).
/// A value whose bytes are not UTF-8 is missing: decoding it lossily would send the part
/// another value than the client's.
fn query_value(query: &str, name: &str) -> Option<String> {
    let decode = |text: &str| -> Option<String> {
        let spaced = text.replace('+', " ");
        String::from_utf8(percent_encoding::percent_decode_str(&spaced).collect()).ok()
    };
    let value = query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key).as_deref() == Some(name)).then_some(value)
    })?;
    decode(value)
}

async fn run_part(
    aggregate: &Aggregate,
    part: &Part,
    head: RequestHeader,
    deadline: Option<Instant>,
    inputs: &Inputs<'_>,
) -> PartResult {
    let started = Instant::now();
    let cache = part.cache.as_deref().and_then(|policy| {
        let label = format!("{}/{}", aggregate.route, part.name);
        let consumer = inputs.identity.and_then(|id| id.consumer.as_deref());
        PartCache::new(
            policy,
            &label,
            &part.upstream.name,
            &head,
            consumer,
            aggregate.personal,
        )
    });
    if let Some(cached) = cache.as_ref().and_then(|c| c.fresh(SystemTime::now())) {
        let mut result = classify_stored(&cached.entry, started.elapsed());
        result.age = Some(cached.age);
        result.max_age = result
            .max_age
            .map(|_| cached.fresh_for)
            .filter(|_| !aggregate.personal);
        return result;
    }
    let hash_input = part
        .upstream
        .hash_input(inputs.headers, inputs.identity, inputs.client);
    let fetch = Fetch {
        connector: inputs.connector,
        metrics: inputs.metrics,
        retry: inputs.retry,
        hash_input: &hash_input,
        max_bytes: aggregate.max_part_bytes,
        trace: inputs.trace,
    };
    let fetched = fetch.fetch(part, &head, deadline).await;
    let elapsed = started.elapsed();
    let Some(cache) = cache else {
        return classify(fetched, elapsed, aggregate.personal);
    };
    if let Fetched::Answer { header, body } = &fetched {
        let result = classify_answer(header, body, elapsed, aggregate.personal);
        if result.outcome == Outcome::Ok {
            cache.store(header, body.clone());
        }
        return result;
    }
    let result = classify(fetched, elapsed, aggregate.personal);
    match cache.stale_for_error(SystemTime::now()) {
        Some(stale) => {
            let mut standing_in = classify_stored(&stale.entry, elapsed);
            standing_in.outcome = Outcome::Stale;
            standing_in.age = Some(stale.age);
            // A stale answer is not one a client should keep.
            standing_in.max_age = None;
            standing_in
        }
        None => result,
    }
}

/// A stored answer as a part's result (it was a 2xx JSON answer when stored).
fn classify_stored(entry: &crate::cache::store::Entry, elapsed: Duration) -> PartResult {
    classify_answer(entry.header(), entry.body(), elapsed, false)
}

/// A part's result from what its upstream call gave.
fn classify(fetched: Fetched, elapsed: Duration, personal: bool) -> PartResult {
    match fetched {
        Fetched::Answer { header, body } => classify_answer(&header, &body, elapsed, personal),
        Fetched::TooLarge { status } => {
            PartResult::failed(Outcome::TooLarge, Some(status), elapsed)
        }
        Fetched::NoTarget { circuit_open } => {
            let outcome = if circuit_open {
                Outcome::CircuitOpen
            } else {
                Outcome::Error
            };
            PartResult::failed(outcome, Some(503), elapsed)
        }
        Fetched::Timeout => PartResult::failed(Outcome::Timeout, Some(504), elapsed),
        Fetched::Failed => PartResult::failed(Outcome::Error, Some(502), elapsed),
    }
}

/// A response: `ok` for a 2xx JSON body (204: `null`), else `error` or `not_json`.
fn classify_answer(
    header: &ResponseHeader,
    body: &Bytes,
    elapsed: Duration,
    personal: bool,
) -> PartResult {
    let status = header.status.as_u16();
    if !header.status.is_success() {
        return PartResult::failed(Outcome::Error, Some(status), elapsed);
    }
    let value = if status == 204 {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
            Err(_) => return PartResult::failed(Outcome::NotJson, Some(status), elapsed),
        }
    };
    let (vary, vary_any) = vary_of(header);
    PartResult {
        outcome: Outcome::Ok,
        status: Some(status),
        elapsed,
        value: Some(value),
        age: None,
        // `Vary: *`: the answer depends on more than the request says; no one may keep it.
        max_age: if personal || vary_any {
            None
        } else {
            client_max_age(header)
        },
        vary,
        skip: None,
    }
}

/// The header names of a response's `Vary`, and whether it says `*` (or something that is not
/// text): then the answer depends on more than the request can name.
fn vary_of(header: &ResponseHeader) -> (Vec<String>, bool) {
    let mut names = crate::cache::key::vary_names(&header.headers);
    let unreadable = header
        .headers
        .get_all(http::header::VARY)
        .iter()
        .any(|v| v.to_str().is_err());
    let star = names.iter().any(|n| n == "*");
    names.retain(|n| n != "*");
    (names, star || unreadable)
}

/// How long a client may keep a part's answer by its own `Cache-Control`: `max-age` (0 when
/// absent), `None` for `no-store`, `private` or `no-cache`.
fn client_max_age(header: &ResponseHeader) -> Option<u64> {
    let mut max_age = 0;
    for value in header.headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',').map(str::trim) {
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            match name.to_ascii_lowercase().as_str() {
                "no-store" | "private" | "no-cache" => return None,
                "max-age" => max_age = arg.trim_matches('"').parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    Some(max_age)
}
