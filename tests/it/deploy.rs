//! What `deploy/` ships, checked against a running gateway: every metric the Grafana dashboard
//! and the Prometheus alerts query exists in a real scrape after traffic through upstreams
//! (working and failing), auth, a rate limit and a cache. A misspelled metric in a panel fails
//! here. The alert rules' own unit tests run under promtool (`.ci/run`); the Kubernetes
//! manifests are checked in `deploy_k8s`.

use crate::support::auth::keys_file;
use crate::support::{backend, client, eventually, free_port, prom, GatewayHandle};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(deploy_dir().join("grafana/tollgate.json")).unwrap();
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// Every `expr` anywhere in the dashboard (panels, rows' panels, whatever nesting).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

/// The metric of each `label_values(METRIC, label)` variable query.
fn variable_metrics(dash: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        let query = match &var["query"] {
            Value::String(q) => q.clone(),
            Value::Object(o) => o
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => continue,
        };
        if let Some(args) = query.trim().strip_prefix("label_values(") {
            let metric = args.split([',', '{', ')']).next().unwrap_or_default();
            out.push(metric.trim().to_string());
        }
    }
    out
}

/// The `expr` of every rule in the alerts file.
fn alert_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(deploy_dir().join("prometheus/tollgate-alerts.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts are YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().unwrap_or("record").to_string();
            out.push((name, rule["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// PromQL words that look like metric names but are not.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{}` or a `by (...)` list),
/// strings, numbers, durations, ranges or Grafana variables.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    // Skips from an opening bracket to its match, strings inside included.
    let skip_group = |mut i: usize, open: u8, close: u8| -> usize {
        let mut depth = 0;
        while i < b.len() {
            match b[i] {
                q @ (b'"' | b'\'' | b'`') => {
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'{' => i = skip_group(i, b'{', b'}'),
            b'[' => i = skip_group(i, b'[', b']'),
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            // Grafana variables: $route, ${route}, $__rate_interval.
            b'$' => {
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    i = skip_group(i, b'{', b'}');
                } else {
                    while i < b.len() && ident(b[i]) {
                        i += 1;
                    }
                }
            }
            // Numbers and durations (0.99, 1e3, 5m).
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if ident(c) => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut next = i;
                while next < b.len() && b[next].is_ascii_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if KEYWORDS.contains(&lower.as_str()) {
                    // `by (route, le)` and the like: label names, not metrics.
                    if next < b.len() && b[next] == b'(' {
                        i = skip_group(next, b'(', b')');
                    }
                } else if next < b.len() && b[next] == b'(' {
                    // A function or an aggregation; its arguments are read on.
                } else if ["by", "without"].iter().any(|k| {
                    expr[next..].starts_with(k)
                        && !expr[next + k.len()..].starts_with(|c: char| ident(c as u8))
                }) {
                    // `sum by (le) (...)`: an aggregation with its grouping first.
                } else {
                    names.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The names in `wanted` that the scrape `page` does not have. `X_bucket`, `X_sum` and
/// `X_count` count as present only when `X` is a histogram (or summary) on the page.
pub fn missing(wanted: &BTreeSet<String>, page: &str, outside: &[&str]) -> Vec<String> {
    let samples: BTreeSet<String> = prom::samples(page).into_iter().map(|s| s.name).collect();
    let families: BTreeSet<(String, String)> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect();
    let is_distribution = |base: &str| {
        families
            .iter()
            .any(|(n, t)| n == base && (t == "histogram" || t == "summary"))
    };
    wanted
        .iter()
        .filter(|name| !outside.contains(&name.as_str()))
        .filter(|name| {
            if ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(is_distribution))
            {
                return false;
            }
            // A histogram's bare name is no series of its own.
            is_distribution(name) || !samples.contains(name.as_str())
        })
        .cloned()
        .collect()
}

/// A gateway whose scrape has every family Tollgate exports: upstream traffic (answers,
/// connect errors, retries, an open circuit, a fallback, health checks), API-key auth
/// (allowed, missing), a rate limit (allowed, rejected), a cache (miss, hit), a reload.
/// Returns the gateway, with the backend and the keys file it uses for its whole life.
async fn busy_gateway() -> (GatewayHandle, crate::support::Backend, tempfile::TempDir) {
    let good = backend("good").start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_file(&keys_dir, &[("acme", "acme-key-0001")]);
    let body = format!(
        r#"
[upstreams.good]
targets = ["{good}"]
[upstreams.good.health_check]
path = "/"
interval = "200ms"
timeout = "100ms"

[upstreams.dead]
targets = ["{dead}"]
[upstreams.dead.circuit_breaker]
failure_ratio = 0.5
min_requests = 2
window = "10s"
open_for = "30s"
half_open_probes = 1

[auth.partners]
type = "api_key"
keys_file = "{keys}"

[rate_limits.tight]
requests = 2
per = "1m"
key = "ip"

[caches.short]
ttl = "30s"

[routes.public]
path = "/public"
upstream = "good"

[routes.cached]
path = "/cached"
upstream = "good"
cache = "short"

[routes.partner]
path = "/partner"
upstream = "good"
auth = "partners"
rate_limits = ["tight"]

[routes.home]
path = "/home"
aggregate.parts.profile = {{ upstream = "good", path = "/me" }}

[routes.broken]
path = "/broken"
upstream = "dead"
retry = {{ attempts = 2, backoff = "1ms", max_backoff = "2ms" }}
fallback = {{ status = 503, body = "down" }}
"#,
        good = good.target()
    );
    let gw = GatewayHandle::start(&body).await;
    let c = client();
    for path in [
        "/public", "/public", "/cached", "/cached", "/cached", "/home",
    ] {
        assert_eq!(c.get(gw.url(path)).send().await.unwrap().status(), 200);
    }
    for _ in 0..3 {
        c.get(gw.url("/partner"))
            .header("x-api-key", "acme-key-0001")
            .send()
            .await
            .unwrap();
    }
    let missing = c.get(gw.url("/partner")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    for _ in 0..4 {
        let r = c.get(gw.url("/broken")).send().await.unwrap();
        assert_eq!(r.status(), 503);
    }
    // The scrape is read once every request is counted.
    let counted = eventually(Duration::from_secs(5), || async {
        prom::sum(&gw.metrics().await, "tollgate_requests_total", &[]) >= 14.0
    })
    .await;
    assert!(counted, "{}", gw.metrics().await);
    (gw, good, keys_dir)
}

/// Names from outside Tollgate's own scrape: Prometheus's `up`.
const OUTSIDE: &[&str] = &["up"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let (gw, _backend, _keys) = busy_gateway().await;
    let page = gw.metrics().await;
    let dash = dashboard();

    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() >= 20, "only {} exprs in the dashboard", all.len());
    let mut problems = Vec::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no metric found in {e:?}");
        let gone = missing(&names, &page, &[]);
        if !gone.is_empty() {
            problems.push(format!("dashboard expr {e:?}: {gone:?}"));
        }
    }
    let vars: BTreeSet<String> = variable_metrics(&dash).into_iter().collect();
    assert!(!vars.is_empty(), "no label_values variable");
    for m in missing(&vars, &page, &[]) {
        problems.push(format!("dashboard variable: {m}"));
    }
    for (alert, e) in alert_exprs() {
        let names = metric_names(&e);
        assert!(!names.is_empty(), "no metric found in alert {alert}");
        let gone = missing(&names, &page, OUTSIDE);
        if !gone.is_empty() {
            problems.push(format!("alert {alert}: {gone:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "metrics not in the scrape:\n{}\n\nscrape:\n{page}",
        problems.join("\n")
    );
}

#[test]
fn a_misspelled_metric_is_caught() {
    let page = "# TYPE tollgate_requests_total counter\ntollgate_requests_total{route=\"a\"} 1\n# TYPE tollgate_request_duration_seconds histogram\ntollgate_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 1\ntollgate_request_duration_seconds_sum{route=\"a\"} 0.1\ntollgate_request_duration_seconds_count{route=\"a\"} 1\n";
    let check = |e: &str| missing(&metric_names(e), page, &[]);
    assert_eq!(
        check(
            r#"sum by (route) (rate(tollgate_requests_total{route=~"$route",status=~"5.."}[$__rate_interval]))"#
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        check("sum(rate(tolgate_requests_total[5m]))"),
        vec!["tolgate_requests_total"]
    );
    assert_eq!(
        check(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(tollgate_request_duration_seconds_bucket[5m])))"#
        ),
        Vec::<String>::new()
    );
    // A suffix is stripped only from a histogram: a counter has no `_count` series.
    assert_eq!(
        check("rate(tollgate_requests_total_count[5m])"),
        vec!["tollgate_requests_total_count"]
    );
    assert_eq!(
        check("tollgate_request_duration_seconds"),
        vec!["tollgate_request_duration_seconds"]
    );
    assert_eq!(
        check("tollgate_request_duration_secs_bucket"),
        vec!["tollgate_request_duration_secs_bucket"]
    );
    assert_eq!(
        metric_names(
            "time() - max by (instance) (tollgate_x) > on (instance) group_left (version) tollgate_y offset 5m and 0.5"
        ),
        ["tollgate_x", "tollgate_y"].map(String::from).into()
    );
}

#[test]
fn the_dashboard_asks_for_a_datasource_and_a_route() {
    let dash = dashboard();
    let vars = dash["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("route")["type"], "query");
    // Every query panel reads from the chosen data source, and every route-level panel
    // follows the route selection.
    let mut panels = Vec::new();
    fn collect<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            out.push(p);
            collect(p, out);
        }
    }
    collect(&dash, &mut panels);
    let mut route_panels = 0;
    for p in panels.iter().filter(|p| p["targets"].is_array()) {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            let e = t["expr"].as_str().unwrap_or_default();
            if e.contains("tollgate_requests_total")
                || e.contains("tollgate_request_duration_seconds")
            {
                assert!(e.contains(r#"route=~"$route""#), "{e}");
                route_panels += 1;
            }
        }
    }
    assert!(route_panels >= 4, "{route_panels}");
    // Panel ids are unique (Grafana keys panel state by them).
    let ids: Vec<_> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len());
}
