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
use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

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

/// A running tracer: spans made here go to one exporter thread.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: Tracer,
    propagator: TraceContextPropagator,
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
        let processor = export::QueueProcessor::start(destination, metrics)?;
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
        })
    }

    /// The server span of a client request, continuing the client's trace context when its
    /// `traceparent` is valid.
    pub fn request(
        self: &Arc<Self>,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        client: Option<IpAddr>,
    ) -> RequestTrace {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", path.to_string()),
        ];
        if let Some(ip) = client {
            attributes.push(KeyValue::new("client.address", ip.to_string()));
        }
        let span = self
            .tracer
            .span_builder(method.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            cx: parent.with_span(span),
            tracing: self.clone(),
            method: method.to_string(),
        }
    }
}

/// A client request's span.
pub struct RequestTrace {
    cx: Context,
    tracing: Arc<Tracing>,
    /// The request's method: the span is renamed `METHOD route` once the route is known.
    method: String,
}

/// What the gateway decided about a request, for its span.
#[derive(Default)]
pub struct Decisions<'a> {
    pub route: Option<&'a str>,
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
        method: &str,
        upstream: &str,
        target: &str,
        resend: u32,
        part: Option<&str>,
    ) -> AttemptTrace {
        let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("server.address", host.to_string()),
            KeyValue::new("tollgate.upstream", upstream.to_string()),
        ];
        if let Ok(port) = port.parse::<i64>() {
            attributes.push(KeyValue::new("server.port", port));
        }
        if resend > 0 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(resend),
            ));
        }
        if let Some(part) = part {
            attributes.push(KeyValue::new("tollgate.part", part.to_string()));
        }
        let tracer = &self.tracing.tracer;
        let span = tracer
            .span_builder(method.to_string())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &self.cx);
        AttemptTrace {
            cx: self.cx.with_span(span),
            tracing: self.tracing.clone(),
        }
    }

    /// Ends the request's span with what happened.
    pub fn finish(self, decisions: &Decisions<'_>) {
        let span = self.cx.span();
        if let Some(route) = decisions.route {
            span.update_name(format!("{} {route}", self.method));
            span.set_attribute(KeyValue::new("tollgate.route", route.to_string()));
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

/// An upstream attempt's span.
pub struct AttemptTrace {
    cx: Context,
    tracing: Arc<Tracing>,
}

impl AttemptTrace {
    /// Writes `traceparent` (and `tracestate`) naming this attempt's span into the upstream
    /// request's headers, replacing the client's.
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.tracing
            .propagator
            .inject_context(&self.cx, &mut HeaderInjector(headers));
    }

    /// Ends the attempt's span with its outcome.
    pub fn finish(self, outcome: UpstreamOutcome) {
        let span = self.cx.span();
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
