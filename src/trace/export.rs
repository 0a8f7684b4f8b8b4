//! Getting finished spans to the collector without ever holding up a request: the span
//! processor puts each span in a bounded queue (full: the span is dropped and counted in
//! `tollgate_trace_spans_dropped_total`); one exporter thread takes them in batches and sends
//! them with the OTLP/HTTP exporter. A collector that is down or slow costs failed exports
//! (counted, logged at most once a minute), never memory or request time.

use crate::observe::Metrics;
use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Spans waiting for export at most; past it new spans are dropped.
pub const QUEUE_SPANS: usize = 4096;
/// Spans sent in one export at most.
const BATCH_SPANS: usize = 512;
/// A batch leaves at the latest this long after its first span.
const BATCH_WAIT: Duration = Duration::from_secs(1);
/// One export's deadline (the collector's answer included).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A failing collector is reported in the log at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where the spans go: the collector's base URL and the headers it wants.
pub struct Destination {
    /// `http(s)://host:port`, without `/v1/traces`.
    pub endpoint: String,
    pub headers: HashMap<String, String>,
    /// What every span is from (`service.name`): sent with each batch.
    pub resource: Resource,
}

/// The span processor: hands finished spans to the exporter thread's queue.
pub struct QueueProcessor {
    /// `None` once shut down (the thread then drains what is queued and exits).
    queue: Mutex<Option<mpsc::Sender<SpanData>>>,
    metrics: Arc<Metrics>,
}

impl QueueProcessor {
    /// Starts the exporter thread for `destination` and returns the processor feeding it.
    /// `finished` is dropped by the thread when it ends, after its last export: the other
    /// end learns that everything queued before the shutdown has been sent (or given up).
    pub fn start(
        destination: Destination,
        metrics: Arc<Metrics>,
        finished: std::sync::mpsc::Sender<()>,
    ) -> std::io::Result<QueueProcessor> {
        let (tx, rx) = mpsc::channel(QUEUE_SPANS);
        let exporter_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("tollgate-trace-export".into())
            .spawn(move || {
                export_loop(destination, rx, exporter_metrics);
                drop(finished);
            })?;
        Ok(QueueProcessor {
            queue: Mutex::new(Some(tx)),
            metrics,
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<SpanData>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl std::fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProcessor").finish_non_exhaustive()
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let Some(queue) = self.sender() else { return };
        if queue.try_send(span).is_err() {
            self.metrics.trace_spans_dropped();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Dropping the sender lets the thread send what is queued and end.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }
}

/// The exporter thread: its own small runtime, batches out of the queue until it closes.
fn export_loop(
    destination: Destination,
    mut queue: mpsc::Receiver<SpanData>,
    metrics: Arc<Metrics>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("trace export disabled: cannot start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let exporter = match exporter(&destination) {
            Ok(mut exporter) => {
                exporter.set_resource(&destination.resource);
                exporter
            }
            Err(e) => {
                tracing::error!(endpoint = %destination.endpoint, "trace export disabled: {e}");
                return;
            }
        };
        let mut last_error_log: Option<Instant> = None;
        while let Some(first) = queue.recv().await {
            let mut batch = Vec::with_capacity(BATCH_SPANS);
            batch.push(first);
            let until = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH_SPANS {
                match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            let result = tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await;
            let error = match result {
                Ok(Ok(())) => {
                    metrics.trace_spans_exported(count);
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
            };
            metrics.trace_export_failed(count);
            if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                last_error_log = Some(Instant::now());
                tracing::warn!(endpoint = %destination.endpoint, spans = count, "trace export failed (spans lost; next report in a minute at most): {error}");
            }
        }
    });
}

fn exporter(destination: &Destination) -> Result<SpanExporter, String> {
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    SpanExporter::builder()
        .with_http()
        .with_http_client(ReqwestClient(client))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!(
            "{}/v1/traces",
            destination.endpoint.trim_end_matches('/')
        ))
        .with_headers(destination.headers.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// The OTLP exporter's HTTP client: the `reqwest` client Tollgate already uses (for JWKS).
#[derive(Debug)]
struct ReqwestClient(reqwest::Client);

/// A collector's answer is short; a bigger one is not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for ReqwestClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                break;
            }
            answer.extend_from_slice(&chunk);
        }
        let mut out = http::Response::new(Bytes::from(answer));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
