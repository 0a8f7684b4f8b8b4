//! Distributed tracing end to end: a real gateway exporting to a real OTLP/HTTP receiver that
//! decodes the protobuf (support::otlp), real backends recording the `traceparent` they got.
//! The client's trace is continued; each upstream attempt (a retry too) and each aggregate part
//! is a child span whose id the upstream receives; sampling is parent-based; the trace id is in
//! the access log; a collector that is down costs spans, never requests.

use crate::support::otlp::{Collector, ReceivedSpan};
use crate::support::prom::metric;
use crate::support::{backend, call, eventually, Backend, GatewayHandle};
use std::time::Duration;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(sampled: bool) -> String {
    format!(
        "00-{CLIENT_TRACE}-{CLIENT_SPAN}-{}",
        if sampled { "01" } else { "00" }
    )
}

fn tracing_section(collector: &str, ratio: f64) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{collector}\"\nsample_ratio = {ratio}\nservice_name = \"edge-gw\"\nheaders = {{ x-tenant = \"t1\" }}\n"
    )
}

/// A collector, a backend, and a config routing everything to the backend with tracing on at
/// ratio 0 (only a client's sampled `traceparent` records).
async fn catch_all_traced() -> (Collector, Backend, String) {
    let collector = Collector::start().await;
    let app = backend("app").start().await;
    let config = format!(
        "{}{}",
        tracing_section(&collector.endpoint(), 0.0),
        crate::support::gateway::catch_all(&app.target(), "")
    );
    (collector, app, config)
}

/// The parts of a `traceparent` header: trace id, parent span id, flags.
fn parse(tp: &str) -> (String, String, String) {
    let f: Vec<&str> = tp.split('-').collect();
    assert_eq!(f.len(), 4, "{tp}");
    (f[1].to_string(), f[2].to_string(), f[3].to_string())
}

/// Waits until the collector has `n` spans of `trace`, then returns that trace's spans.
async fn trace_of(collector: &Collector, trace: &str, n: usize) -> Vec<ReceivedSpan> {
    let arrived = eventually(Duration::from_secs(8), || async {
        collector
            .spans()
            .iter()
            .filter(|s| s.trace_id == trace)
            .count()
            >= n
    })
    .await;
    let spans: Vec<ReceivedSpan> = collector
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace)
        .collect();
    assert!(arrived, "expected {n} spans of {trace}, got {spans:#?}");
    spans
}

fn received_traceparent(b: &Backend, i: usize) -> String {
    b.received()[i]
        .header("traceparent")
        .expect("traceparent")
        .to_string()
}

#[tokio::test]
async fn the_client_trace_is_continued_and_every_attempt_is_a_child_span() {
    let collector = Collector::start().await;
    let failing = backend("failing").status(503).start().await;
    let good = backend("good").start().await;
    let config = format!(
        r#"{}
[upstreams.pair]
targets = ["{}", "{}"]

[routes.r]
path = "/{{*rest}}"
upstream = "pair"
retry = {{ attempts = 2, backoff = "1ms" }}
"#,
        tracing_section(&collector.endpoint(), 0.0),
        failing.target(),
        good.target()
    );
    let gw = GatewayHandle::start(&config).await;
    // Round robin: one of two requests starts on the failing target and is retried.
    for _ in 0..2 {
        let a = call(
            &gw,
            "/x",
            &[
                ("traceparent", &traceparent(true)),
                ("authorization", "Bearer s3cret"),
            ],
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    // 2 server spans, 3 attempts: the sample ratio is 0, the client's sampled flag decides.
    let spans = trace_of(&collector, CLIENT_TRACE, 5).await;
    let servers: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), 2, "{spans:#?}");
    for server in &servers {
        assert_eq!(
            server.parent_span_id, CLIENT_SPAN,
            "continues the client's span"
        );
        assert_eq!(
            server.name, "GET /{*rest}",
            "the route's template, not the path"
        );
        assert_eq!(server.attr("http.route"), Some("/{*rest}"));
        assert_eq!(server.service, "edge-gw");
        assert_eq!(server.attr("http.request.method"), Some("GET"));
        assert_eq!(server.attr("http.response.status_code"), Some("200"));
        assert_eq!(server.attr("tollgate.route"), Some("r"));
        assert_eq!(server.attr("url.path"), Some("/x"));
    }
    let retried = servers
        .iter()
        .find(|s| {
            spans
                .iter()
                .filter(|c| c.parent_span_id == s.span_id)
                .count()
                == 2
        })
        .expect("one request made two attempts");
    let attempts: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|c| c.parent_span_id == retried.span_id)
        .collect();
    assert!(attempts.iter().all(|a| a.kind == 3 && a.name == "GET"));
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.attr("http.response.status_code") == Some("503"))
            .count(),
        1
    );
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.attr("http.request.resend_count") == Some("1"))
            .count(),
        1,
        "the retry says it is one: {attempts:#?}"
    );
    // Each upstream got the trace with its own attempt's span as parent.
    let failing_tp = parse(&received_traceparent(&failing, 0));
    assert_eq!(failing_tp.0, CLIENT_TRACE);
    assert_eq!(failing_tp.2, "01");
    let failing_span = spans
        .iter()
        .find(|s| s.span_id == failing_tp.1)
        .expect("the failing attempt's span");
    assert_eq!(failing_span.attr("http.response.status_code"), Some("503"));
    assert_eq!(failing_span.status, 2, "a 5xx attempt is an error");
    for i in 0..good.count() {
        let (trace, parent, _) = parse(&received_traceparent(&good, i));
        assert_eq!(trace, CLIENT_TRACE);
        assert!(spans.iter().any(|s| s.span_id == parent && s.kind == 3));
    }
    // No secret in any attribute; the exporter sent the configured header.
    for span in &spans {
        assert!(
            span.attributes.values().all(|v| !v.contains("s3cret")),
            "{span:?}"
        );
    }
    assert!(collector
        .export_headers()
        .iter()
        .any(|h| h.get("x-tenant").is_some_and(|v| v == "t1")));
    // The access log names the trace.
    let lines = gw.access_log();
    assert!(
        lines.iter().all(|l| l["trace_id"] == CLIENT_TRACE),
        "{lines:?}"
    );
    assert!(metric(&gw, "tollgate_trace_spans_exported_total", &[]).await >= 5.0);
}

#[tokio::test]
async fn aggregate_parts_are_children_of_the_request_span() {
    let collector = Collector::start().await;
    let users = backend("users").start().await;
    let feed = backend("feed").start().await;
    let config = format!(
        r#"{}
[upstreams.users]
targets = ["{}"]
[upstreams.feed]
targets = ["{}"]

[routes.home]
path = "/home"
aggregate.parts.profile = {{ upstream = "users", path = "/me" }}
aggregate.parts.feed = {{ upstream = "feed", path = "/feed" }}
"#,
        tracing_section(&collector.endpoint(), 1.0),
        users.target(),
        feed.target()
    );
    let gw = GatewayHandle::start(&config).await;
    let a = call(&gw, "/home", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    // A trace started here (no traceparent from the client): its id is in the access log.
    let line = gw.log_line(|l| l["route"] == "home").await;
    let trace = line["trace_id"].as_str().expect("trace_id").to_string();
    let spans = trace_of(&collector, &trace, 3).await;
    let server = spans.iter().find(|s| s.kind == 2).expect("server span");
    assert_eq!(
        server.parent_span_id, "",
        "a new trace starts at the gateway"
    );
    assert_eq!(server.name, "GET /home");
    for (b, part) in [(&users, "profile"), (&feed, "feed")] {
        let span = spans
            .iter()
            .find(|s| s.attr("tollgate.part") == Some(part))
            .unwrap_or_else(|| panic!("no span for part {part}: {spans:#?}"));
        assert_eq!(span.kind, 3);
        assert_eq!(span.parent_span_id, server.span_id);
        let (t, parent, flags) = parse(&received_traceparent(b, 0));
        assert_eq!(
            (t.as_str(), parent.as_str(), flags.as_str()),
            (trace.as_str(), span.span_id.as_str(), "01")
        );
    }
}

#[tokio::test]
async fn unsampled_requests_export_nothing_but_still_carry_a_trace() {
    let (collector, app, config) = catch_all_traced().await;
    let gw = GatewayHandle::start(&config).await;
    call(&gw, "/new", &[]).await;
    call(&gw, "/declined", &[("traceparent", &traceparent(false))]).await;
    // Upstreams still get a trace context (not sampled), linking their logs to ours.
    let (trace, _, flags) = parse(&received_traceparent(&app, 0));
    assert_eq!(flags, "00");
    let first = gw.log_line(|l| l["path"] == "/new").await;
    assert_eq!(first["trace_id"], trace.as_str());
    let (trace, parent, flags) = parse(&received_traceparent(&app, 1));
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
    assert_ne!(parent, CLIENT_SPAN, "the gateway's own span is the parent");
    // A sampled request afterwards is exported, and nothing of the two before it was.
    call(&gw, "/sampled", &[("traceparent", &traceparent(true))]).await;
    trace_of(&collector, CLIENT_TRACE, 2).await;
    let paths: Vec<String> = collector
        .spans()
        .iter()
        .filter_map(|s| s.attr("url.path").map(str::to_string))
        .collect();
    assert_eq!(paths, vec!["/sampled".to_string()]);
}

#[tokio::test]
async fn a_collector_that_refuses_or_is_gone_costs_spans_not_requests() {
    let refusing = Collector::start().await;
    refusing.answer(503);
    let gone = format!("http://127.0.0.1:{}", crate::support::free_port());
    let app = backend("app").start().await;
    for endpoint in [refusing.endpoint(), gone] {
        let config = format!(
            "{}{}",
            tracing_section(&endpoint, 1.0),
            crate::support::gateway::catch_all(&app.target(), "")
        );
        let gw = GatewayHandle::start(&config).await;
        for _ in 0..20 {
            assert_eq!(call(&gw, "/x", &[]).await.status, 200);
        }
        let failed = eventually(Duration::from_secs(8), || async {
            metric(&gw, "tollgate_trace_spans_failed_total", &[]).await >= 20.0
        })
        .await;
        assert!(failed, "{endpoint}: lost spans are counted");
        assert_eq!(
            metric(&gw, "tollgate_trace_spans_exported_total", &[]).await,
            0.0
        );
    }
    assert_eq!(app.count(), 40);
}

#[tokio::test]
async fn without_tracing_the_client_traceparent_passes_through() {
    let app = backend("app").start().await;
    let gw = GatewayHandle::start(&crate::support::gateway::catch_all(&app.target(), "")).await;
    call(
        &gw,
        "/x",
        &[("traceparent", &traceparent(true)), ("tracestate", "v=1")],
    )
    .await;
    assert_eq!(received_traceparent(&app, 0), traceparent(true));
    assert_eq!(app.received()[0].header("tracestate"), Some("v=1"));
    assert!(gw.log_line(|_| true).await.get("trace_id").is_none());
}

#[tokio::test]
async fn spans_of_the_last_requests_are_exported_before_a_drained_exit() {
    let (collector, _app, config) = catch_all_traced().await;
    let mut gw = GatewayHandle::start_binary(&config, "shutdown_grace = \"5s\"\n").await;
    call(&gw, "/last", &[("traceparent", &traceparent(true))]).await;
    // At once: the spans are still in the exporter's batch (it waits up to a second for more)
    // when the drain finds nothing in flight and the process exits.
    gw.signal("TERM");
    let code = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "stderr:\n{}", gw.stderr());
    let spans = trace_of(&collector, CLIENT_TRACE, 2).await;
    assert!(
        spans.iter().any(|s| s.attr("url.path") == Some("/last")),
        "{spans:#?}"
    );
}
