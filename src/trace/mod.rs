//! Distributed tracing (`[tracing]`): W3C Trace Context continued from the client (or started
//! here), one server span per client request and one client span per upstream attempt, so
//! retries and aggregate parts show as separate children; upstreams get a `traceparent` naming
//! their attempt's span. Spans are exported over OTLP/HTTP by [`export`]. Sampling is
//! parent-based: an incoming `traceparent` keeps its decision, new traces are sampled at
//! `sample_ratio`. Without the section nothing here runs and the client's `traceparent` passes
//! through to upstreams unchanged.
//!
//! Spans carry the HTTP semantic-convention attributes and the gateway's decisions (auth,
//! rate limit, cache, circuit), never header values, tokens or claims.

pub mod export;

use crate::config::TracingConfig;
use crate::observe::{Metrics, UpstreamOutcome};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Span, Tracer};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `[tracing]` as it is used: what identifies one exporter (kept across reloads while equal).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceSettings {
    pub endpoint: String,
    /// `sample_ratio`'s bits (a float is not `Hash`).
    ratio_bits: u64,
    pub service_name: String,
    pub headers: BTreeMap<String, String>,
}

impl TraceSettings {
    pub fn compile(cfg: &TracingConfig) -> TraceSettings {
        TraceSettings {
            endpoint: cfg.otlp_endpoint.clone(),
            ratio_bits: cfg.sample_ratio.unwrap_or(1.0).to_bits(),
            service_name: cfg
                .service_name
                .clone()
                .unwrap_or_else(|| "tollgate".into()),
            headers: cfg.headers.clone(),
        }
    }

    pub fn sample_ratio(&self) -> f64 {
        f64::from_bits(self.ratio_bits)
    }
}

/// The W3C headers that carry a trace context (also what upstreams are sent, see
/// [`TraceHeaders`]).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A running tracer: spans made here go to one exporter thread.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: Tracer,
    propagator: TraceContextPropagator,
    /// Disconnected once the exporter thread has ended (see [`Tracing::flush`]).
    exporter_finished: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        // Ends the exporter thread once it has sent what is queued.
        let _ = self.provider.shutdown();
    }
}

impl Tracing {
    /// Starts the exporter thread and the tracer for `settings`.
    pub fn start(settings: &TraceSettings, metrics: Arc<Metrics>) -> std::io::Result<Tracing> {
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let destination = export::Destination {
            endpoint: settings.endpoint.clone(),
            headers: settings.headers.clone().into_iter().collect(),
            resource: resource.clone(),
        };
        let (finished, exporter_finished) = std::sync::mpsc::channel();
        let processor = export::QueueProcessor::start(destination, metrics, finished)?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio(),
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Tracing {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            exporter_finished: Mutex::new(exporter_finished),
        })
    }

    /// Before the process exits: no more spans are taken, the queued ones are exported, and
    /// this returns when that is done or after `limit` (a collector that does not answer must
    /// not hold up the exit). The process exits without running destructors, so without this
    /// the last second's spans, those of the drained requests, would be lost.
    pub fn flush(&self, limit: Duration) {
        let _ = self.provider.shutdown();
        let finished = self
            .exporter_finished
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "exiting before the last spans were exported"
            );
        }
    }

    /// The server span of a client request, continuing the client's trace context when its
    /// `traceparent` is valid. Most requests are not sampled: their span only carries ids, so
    /// attributes are made only for a span that records.
    pub fn request(
        self: &Arc<Self>,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        client: Option<IpAddr>,
    ) -> RequestTrace {
        // Most clients send no trace context: the propagator (two header lookups, and the
        // ambient context) runs only for one that does.
        let parent = if headers.contains_key(TRACEPARENT) {
            self.propagator.extract(&HeaderExtractor(headers))
        } else {
            Context::new()
        };
        let span = self
            .tracer
            .span_builder(method_name(method))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        let recording = span.is_recording();
        let cx = parent.with_span(span);
        if recording {
            let span = cx.span();
            span.set_attribute(KeyValue::new("http.request.method", method.to_string()));
            span.set_attribute(KeyValue::new("url.path", path.to_string()));
            if let Some(ip) = client {
                span.set_attribute(KeyValue::new("client.address", ip.to_string()));
            }
        }
        RequestTrace {
            cx,
            recording,
            tracing: self.clone(),
            method: method.clone(),
        }
    }
}

/// A span's name from the request method: no allocation for the standard methods.
fn method_name(method: &Method) -> Cow<'static, str> {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().position(|m| m == method) {
        Some(i) => Cow::Borrowed(NAMES[i]),
        None => Cow::Owned(method.to_string()),
    }
}

/// A client request's span.
pub struct RequestTrace {
    /// The span in a context: the parent of the attempts' spans.
    cx: Context,
    /// Whether the span records (is sampled), known when it starts: asking the context's span
    /// again takes its lock.
    recording: bool,
    tracing: Arc<Tracing>,
    /// The request's method: the span is renamed `METHOD /route/{template}` once routed.
    method: Method,
}

/// What the gateway decided about a request, for its span.
#[derive(Default)]
pub struct Decisions<'a> {
    /// The route's name and its path template (`/users/{id}`), once routed.
    pub route: Option<(&'a str, &'a str)>,
    pub status: u16,
    /// `allowed` or the denial's label.
    pub auth: Option<&'a str>,
    /// `allowed` or `limited`.
    pub rate_limit: Option<&'a str>,
    /// The cache's result (`hit`, `miss`, `stale`...).
    pub cache: Option<&'a str>,
    /// No target could take the request because circuits are open.
    pub circuit_open: bool,
}

impl RequestTrace {
    /// The trace id, for the access log (also for a trace that is not sampled: the id still
    /// links the gateway's log line to the services' own).
    pub fn trace_id(&self) -> u128 {
        u128::from_be_bytes(self.cx.span().span_context().trace_id().to_bytes())
    }

    /// A client span for one upstream attempt (an aggregate part's when `part` is given),
    /// child of the request's span. `resend`: attempts made before this one.
    pub fn attempt(
        &self,
        method: &Method,
        upstream: &str,
        target: &str,
        resend: u32,
        part: Option<&str>,
    ) -> AttemptTrace {
        let tracer = &self.tracing.tracer;
        let mut span = tracer
            .span_builder(method_name(method))
            .with_kind(SpanKind::Client)
            .start_with_context(tracer, &self.cx);
        if span.is_recording() {
            let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
            span.set_attribute(KeyValue::new("http.request.method", method.to_string()));
            span.set_attribute(KeyValue::new("server.address", host.to_string()));
            span.set_attribute(KeyValue::new("tollgate.upstream", upstream.to_string()));
            if let Ok(port) = port.parse::<i64>() {
                span.set_attribute(KeyValue::new("server.port", port));
            }
            if resend > 0 {
                span.set_attribute(KeyValue::new(
                    "http.request.resend_count",
                    i64::from(resend),
                ));
            }
            if let Some(part) = part {
                span.set_attribute(KeyValue::new("tollgate.part", part.to_string()));
            }
        }
        AttemptTrace { span }
    }

    /// Ends the request's span with what happened.
    pub fn finish(self, decisions: &Decisions<'_>) {
        if !self.recording {
            return;
        }
        let span = self.cx.span();
        if let Some((name, template)) = decisions.route {
            // The semantic conventions' name: the method and the route's template (low
            // cardinality: never the request's own path).
            span.update_name(format!("{} {template}", self.method));
            span.set_attribute(KeyValue::new("http.route", template.to_string()));
            span.set_attribute(KeyValue::new("tollgate.route", name.to_string()));
        }
        if decisions.status > 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(decisions.status),
            ));
        }
        for (key, value) in [
            ("tollgate.auth", decisions.auth),
            ("tollgate.rate_limit", decisions.rate_limit),
            ("tollgate.cache", decisions.cache),
        ] {
            if let Some(value) = value {
                span.set_attribute(KeyValue::new(key, value.to_string()));
            }
        }
        if decisions.circuit_open {
            span.set_attribute(KeyValue::new("tollgate.circuit", "open"));
        }
        // Server spans: only a 5xx is an error of the server's (the semantic conventions).
        if decisions.status >= 500 || decisions.status == 0 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// An upstream attempt's span. Held as the SDK's span, not in a context: nothing is its
/// child, and a context would box it behind a lock.
pub struct AttemptTrace {
    span: Span,
}

/// The trace context an upstream request carries: `traceparent` naming the attempt's span, and
/// the `tracestate` passed on (`None`: the upstream gets none, also not the client's).
pub struct TraceHeaders {
    pub traceparent: HeaderValue,
    pub tracestate: Option<HeaderValue>,
}

impl AttemptTrace {
    /// The headers naming this attempt's span (`None` for an invalid context, never made here).
    pub fn headers(&self) -> Option<TraceHeaders> {
        let context = self.span.span_context();
        if !context.is_valid() {
            return None;
        }
        let state = context.trace_state().header();
        Some(TraceHeaders {
            traceparent: traceparent(context),
            // A trace state the propagator accepted is a valid header value.
            tracestate: (!state.is_empty())
                .then(|| HeaderValue::from_str(&state).ok())
                .flatten(),
        })
    }

    /// Sets [`headers`](Self::headers) on a request head, replacing the client's.
    pub fn inject(&self, upstream_request: &mut RequestHeader) {
        let Some(headers) = self.headers() else {
            return;
        };
        // Static names and valid values: insert_header cannot fail on them.
        let _ = upstream_request.insert_header(TRACEPARENT, headers.traceparent);
        match headers.tracestate {
            Some(state) => {
                let _ = upstream_request.insert_header(TRACESTATE, state);
            }
            None => {
                upstream_request.remove_header(&TRACESTATE);
            }
        }
    }

    /// Ends the attempt's span with its outcome.
    pub fn finish(mut self, outcome: UpstreamOutcome) {
        let span = &mut self.span;
        if !span.is_recording() {
            return;
        }
        match outcome {
            UpstreamOutcome::Response(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    span.set_status(Status::error(""));
                }
            }
            other => {
                span.set_attribute(KeyValue::new("error.type", other.label()));
                span.set_status(Status::error(""));
            }
        }
        span.end();
    }
}

/// The W3C `traceparent` value of `context`: `00-<trace id>-<span id>-<flags>` in lower-case
/// hex. Written here rather than by the propagator's `format!`, which costs about 3,000
/// instructions per upstream request (docs/architecture.md, "Tracing").
fn traceparent(context: &SpanContext) -> HeaderValue {
    let mut out = *b"00-________________________________-________________-__";
    hex_into(&mut out[3..35], &context.trace_id().to_bytes());
    hex_into(&mut out[36..52], &context.span_id().to_bytes());
    hex_into(&mut out[53..55], &[context.trace_flags().to_u8()]);
    HeaderValue::from_bytes(&out).expect("hex digits and dashes")
}

/// `bytes` as lower-case hex into `out` (twice their length).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_http::HeaderInjector;

    #[test]
    fn traceparent_is_what_the_propagator_writes() {
        for flags in [TraceFlags::SAMPLED, TraceFlags::NOT_SAMPLED] {
            let context = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("b7ad6b7169203331").unwrap(),
                flags,
                true,
                TraceState::default(),
            );
            let mut expected = HeaderMap::new();
            TraceContextPropagator::new().inject_context(
                &Context::new().with_remote_span_context(context.clone()),
                &mut HeaderInjector(&mut expected),
            );
            assert_eq!(Some(&traceparent(&context)), expected.get("traceparent"));
        }
    }

    #[test]
    fn method_names_are_the_methods() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE",
        ] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(method_name(&method), m);
        }
    }
}
