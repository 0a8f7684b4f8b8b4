//! The status page as HTML, rendered on the server from the [`Status`] model: a complete page
//! without JavaScript, and the same `<main>` alone for the script's refresh. Every value from
//! the config or a file goes through [`esc`]; charts are inline SVG (presentation attributes,
//! no `style`), so the page needs nothing but its own `/status.css` and `/status.js`.

use super::model::{Point, Status, Summary, TargetStatus};
use std::fmt::Write;

/// Seconds between the script's refreshes (the `<main>` says it, the script reads it).
pub const REFRESH_SECONDS: u32 = 5;

/// Text made safe for HTML content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `main` (already HTML).
pub fn document(main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Tollgate status</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/status.css\">\
<script src=\"/status.js\" defer></script></head><body>{main}</body></html>\n"
    )
}

/// The login form shown instead of the status when the admin token is required and missing:
/// the script keeps the token in memory and sends it as a bearer token; it is never a form
/// field that could end up in a URL.
pub fn login() -> String {
    format!(
        "<main id=\"status\" data-refresh=\"{REFRESH_SECONDS}\" data-login=\"1\">\
<h1>Tollgate status</h1><form id=\"login\" class=\"login\">\
<label for=\"token\">Admin token</label>\
<input id=\"token\" type=\"password\" autocomplete=\"off\" required>\
<button type=\"submit\">Show status</button><p id=\"login-error\" class=\"bad\" hidden>\
The token was not accepted.</p></form>\
<noscript><p>This gateway needs its admin token. Without JavaScript, request the page with \
<code>Authorization: Bearer &lt;token&gt;</code>.</p></noscript></main>"
    )
}

/// The status as the page's `<main>`.
pub fn main(s: &Status) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(h, "<main id=\"status\" data-refresh=\"{REFRESH_SECONDS}\">");
    header(&mut h, s);
    traffic(&mut h, s);
    routes(&mut h, s);
    upstreams(&mut h, s);
    limits(&mut h, s);
    let _ = write!(
        h,
        "<footer>Built at <time>{}</time>; refreshes every {REFRESH_SECONDS} s. JSON: \
<a href=\"/api/status\">/api/status</a>, metrics: <a href=\"/metrics\">/metrics</a>.</footer></main>",
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.now))
    );
    h
}

fn header(h: &mut String, s: &Status) {
    let (ready_class, ready) = if s.ready {
        ("ok", "ready")
    } else {
        ("bad", "not ready")
    };
    let _ = write!(
        h,
        "<header><h1>Tollgate <span class=\"muted\">{}</span> \
<span id=\"readiness\" class=\"badge {ready_class}\">{ready}</span></h1><dl class=\"facts\">\
<dt>Uptime</dt><dd id=\"uptime\">{}</dd><dt>Config</dt><dd><code id=\"config-hash\" title=\"{}\">{}</code> \
from <code>{}</code>, loaded {}</dd>",
        esc(s.version),
        duration(s.uptime_seconds),
        esc(&s.config.hash),
        esc(s.config.hash.get(..12).unwrap_or(&s.config.hash)),
        esc(&s.config.source),
        esc(&s.config.loaded_at_rfc3339),
    );
    match &s.last_reload {
        None => h.push_str("<dt>Last reload</dt><dd id=\"last-reload\">none since start-up</dd>"),
        Some(r) if r.ok => {
            let _ = write!(
                h,
                "<dt>Last reload</dt><dd id=\"last-reload\" class=\"ok\">applied at {}</dd>",
                esc(&r.at_rfc3339)
            );
        }
        Some(r) => {
            let _ = write!(
                h,
                "<dt>Last reload</dt><dd id=\"last-reload\" class=\"bad\">failed at {}; the \
previous config keeps serving</dd>",
                esc(&r.at_rfc3339)
            );
        }
    }
    h.push_str("</dl>");
    if let Some(r) = s.last_reload.as_ref().filter(|r| !r.ok) {
        let _ = write!(
            h,
            "<pre id=\"reload-errors\" class=\"errors\">{}</pre>",
            esc(&r.errors.join("\n"))
        );
    }
    h.push_str("</header>");
}

fn traffic(h: &mut String, s: &Status) {
    let t = &s.traffic;
    let m = &t.last_minute;
    let _ = write!(
        h,
        "<section id=\"traffic\"><h2>Traffic <span class=\"muted\">last 15 minutes, one point per \
{} s</span></h2><div class=\"tiles\">{}{}{}{}</div><div class=\"charts\">",
        t.step_seconds,
        tile("requests/s", &num(m.rps), "rps"),
        tile("4xx/s", &num(rate(m.errors_4xx, m.seconds)), "rps-4xx"),
        tile("5xx/s", &num(rate(m.errors_5xx, m.seconds)), "rps-5xx"),
        tile("p99", &ms(m.p99_ms), "p99"),
    );
    let series = |f: fn(&Point) -> f64| steps(&t.points, f);
    chart(
        h,
        "Requests per second",
        &[
            ("all", series(|p| p.rps)),
            ("4xx", series(|p| p.rps_4xx)),
            ("5xx", series(|p| p.rps_5xx)),
        ],
    );
    chart(
        h,
        "Latency (ms)",
        &[
            ("p50", series(|p| p.p50_ms.unwrap_or(0.0))),
            ("p99", series(|p| p.p99_ms.unwrap_or(0.0))),
        ],
    );
    h.push_str("</div></section>");
}

fn tile(label: &str, value: &str, id: &str) -> String {
    format!("<div class=\"tile\"><span class=\"muted\">{label}</span><strong id=\"tile-{id}\">{value}</strong></div>")
}

/// Chart width and height in SVG units (scaled to the box by CSS).
const W: f64 = 300.0;
const H: f64 = 80.0;

/// A chart of several series over the same points, with its largest value as the scale.
fn chart(h: &mut String, title: &str, series: &[(&str, Vec<Step>)]) {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|s| s.2))
        .fold(0.0_f64, f64::max);
    let _ = write!(
        h,
        "<figure class=\"chart\"><figcaption>{} <span class=\"muted\">max {}</span></figcaption>\
<svg viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        num(max),
        esc(title)
    );
    for (i, (_, values)) in series.iter().enumerate() {
        let _ = write!(
            h,
            "<polyline class=\"line s{i}\" fill=\"none\" points=\"{}\"/>",
            polyline(values, max, W, H)
        );
    }
    h.push_str("</svg><p class=\"legend\">");
    for (i, (name, _)) in series.iter().enumerate() {
        let _ = write!(h, "<span class=\"key s{i}\">{}</span> ", esc(name));
    }
    h.push_str("</p></figure>");
}

/// One point of a chart: (start, end, value), times in Unix seconds.
type Step = (f64, f64, f64);

/// SVG polyline points for a step chart scaled into `w` x `h` (y grows downward): each point
/// holds its value over its own step (`(start, end, value)`, times in seconds), and the x axis
/// spans the steps there are, so a gateway up for seconds already draws a line.
fn polyline(steps: &[Step], max: f64, w: f64, h: f64) -> String {
    let first = steps.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let last = steps.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    let span = last - first;
    let x = |t: f64| {
        if span > 0.0 {
            w * (t - first) / span
        } else {
            w
        }
    };
    let y = |v: f64| {
        if max > 0.0 {
            h - (v / max) * (h - 2.0) - 1.0
        } else {
            h - 1.0
        }
    };
    let mut out = String::new();
    for &(start, end, value) in steps {
        let _ = write!(
            out,
            "{:.1},{:.1} {:.1},{:.1} ",
            x(start),
            y(value),
            x(end),
            y(value)
        );
    }
    out.trim_end().to_string()
}

/// The steps of `points` with the value `f` picks, for [`polyline`].
fn steps(points: &[Point], f: impl Fn(&Point) -> f64) -> Vec<Step> {
    points
        .iter()
        .map(|p| (p.t as f64 - p.seconds, p.t as f64, f(p)))
        .collect()
}

/// A small chart of one route's requests per second.
fn sparkline(points: &[Point]) -> String {
    let values = steps(points, |p| p.rps);
    let max = values.iter().map(|s| s.2).fold(0.0_f64, f64::max);
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 100 20\" preserveAspectRatio=\"none\" role=\"img\" \
aria-label=\"requests per second, max {}\"><polyline class=\"line s0\" fill=\"none\" points=\"{}\"/></svg>",
        num(max),
        polyline(&values, max, 100.0, 20.0)
    )
}

fn routes(h: &mut String, s: &Status) {
    let _ = write!(
        h,
        "<section id=\"routes\"><h2>Routes <span class=\"muted\">{}</span></h2><div class=\"scroll\">\
<table><thead><tr><th>Route</th><th>Match</th><th>Backend</th><th>Auth</th><th>Limits</th>\
<th>Cache</th><th>req/s</th><th>5xx</th><th>p99</th><th>Last 15 min</th></tr></thead><tbody>",
        s.routes.len()
    );
    for r in &s.routes {
        let methods = if r.methods.is_empty() {
            "any".to_string()
        } else {
            r.methods.join(" ")
        };
        let backend = match &r.upstream {
            Some(u) => format!("&rarr; {}", esc(u)),
            None => r
                .aggregate
                .iter()
                .map(|p| format!("{} &rarr; {}", esc(&p.name), esc(&p.upstream)))
                .collect::<Vec<_>>()
                .join("<br>"),
        };
        let auth = match &r.auth {
            None => "<span class=\"muted\">public</span>".to_string(),
            Some(a) if a.scopes.is_empty() => format!("{} ({})", esc(&a.policy), a.kind),
            Some(a) => format!(
                "{} ({})<br><span class=\"muted\">scopes: {}</span>",
                esc(&a.policy),
                a.kind,
                esc(&a.scopes.join(" "))
            ),
        };
        let _ = write!(
            h,
            "<tr data-route=\"{name}\"><td class=\"name\">{name}</td><td><code>{host}{path}</code> \
<span class=\"muted\">{methods}</span></td><td>{backend}</td><td>{auth}</td><td>{limits}</td>\
<td>{cache}</td><td class=\"num\">{rps}</td><td class=\"num{bad}\">{ratio}</td>\
<td class=\"num\">{p99}</td><td>{spark}</td></tr>",
            name = esc(&r.name),
            host = esc(r.host.as_deref().unwrap_or("")),
            path = esc(&r.path),
            methods = esc(&methods),
            limits = esc(&r.rate_limits.join(" ")),
            cache = esc(r.cache.as_deref().unwrap_or("")),
            rps = num(r.last_minute.rps),
            bad = if r.last_minute.errors_5xx > 0 { " bad" } else { "" },
            ratio = percent(&r.last_minute),
            p99 = ms(r.last_minute.p99_ms),
            spark = sparkline(&r.points),
        );
    }
    h.push_str("</tbody></table></div></section>");
}

fn upstreams(h: &mut String, s: &Status) {
    let _ = write!(
        h,
        "<section id=\"upstreams\"><h2>Upstreams <span class=\"muted\">{}</span></h2>",
        s.upstreams.len()
    );
    for u in &s.upstreams {
        let _ =
            write!(
            h,
            "<h3>{}{}</h3><div class=\"scroll\"><table><thead><tr><th>Target</th><th>Health</th>\
<th>Circuit</th><th>In flight</th><th>Attempts, last 15 min</th></tr></thead><tbody>",
            esc(&u.name),
            if u.health_checked { "" } else { " <span class=\"muted\">(no health checks)</span>" }
        );
        for t in &u.targets {
            target_row(h, &u.name, t);
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str("</section>");
}

fn target_row(h: &mut String, upstream: &str, t: &TargetStatus) {
    let health = if t.healthy {
        "<span class=\"badge ok\">healthy</span>"
    } else {
        "<span class=\"badge bad\">unhealthy</span>"
    };
    let circuit = match (t.circuit, t.probe_in_seconds) {
        (None, _) => "<span class=\"muted\">none</span>".to_string(),
        (Some("open"), Some(left)) => {
            format!("<span class=\"badge bad\">open</span> probe in {left:.0} s")
        }
        (Some("closed"), _) => "<span class=\"badge ok\">closed</span>".to_string(),
        (Some(state), _) => format!(
            "<span class=\"badge warn\">{}</span>",
            esc(&state.replace('_', "-"))
        ),
    };
    let outcomes = t
        .outcomes
        .iter()
        .map(|(k, v)| format!("{} {v}", esc(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ =
        write!(
        h,
        "<tr data-target=\"{up}/{label}\"><td><code>{label}</code>{backup}</td><td>{health}</td>\
<td>{circuit}</td><td class=\"num\">{}</td><td>{outcomes}</td></tr>",
        t.in_flight,
        up = esc(upstream),
        label = esc(&t.target),
        backup = if t.backup { " <span class=\"badge\">backup</span>" } else { "" },
    );
}

fn limits(h: &mut String, s: &Status) {
    h.push_str("<section id=\"limits\"><h2>Rate limits</h2>");
    if s.rate_limits.is_empty() {
        h.push_str("<p class=\"muted\">none</p>");
    } else {
        h.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Limit</th><th>Quota</th><th>Key</th>\
<th>Decisions, last 15 min</th><th>Since start</th></tr></thead><tbody>",
        );
        for l in &s.rate_limits {
            let list = |m: &std::collections::BTreeMap<String, u64>| {
                m.iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{} {v}", esc(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ =
                write!(
                h,
                "<tr data-limit=\"{name}\"><td>{name}{cluster}</td><td>{} per {} s, burst {}</td>\
<td>{}</td><td>{}</td><td>{}</td></tr>",
                l.requests,
                num(l.per_seconds),
                l.burst,
                esc(&l.key),
                list(&l.recent),
                list(&l.decisions),
                name = esc(&l.name),
                cluster = if l.cluster { " <span class=\"badge\">cluster</span>" } else { "" },
            );
        }
        h.push_str("</tbody></table></div>");
    }
    match &s.cluster {
        None => {}
        Some(c) => {
            let _ = write!(
                h,
                "<p id=\"cluster\">Cluster: Redis <code>{}</code> {}</p>",
                esc(&c.redis),
                if c.reachable {
                    "<span class=\"badge ok\">reachable</span>".to_string()
                } else {
                    format!(
                        "<span class=\"badge bad\">unreachable</span>: on_error = \"{}\" decides",
                        c.on_error
                    )
                }
            );
        }
    }
    h.push_str("<h2>Caches</h2>");
    if s.caches.is_empty() {
        h.push_str("<p class=\"muted\">none</p>");
    } else {
        h.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Cache</th><th>Entries</th><th>Bytes</th>\
<th>Hit ratio</th></tr></thead><tbody>",
        );
        for c in &s.caches {
            let _ = write!(
                h,
                "<tr data-cache=\"{name}\"><td>{name}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
<td class=\"num\">{}</td></tr>",
                c.entries,
                c.bytes,
                c.hit_ratio.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0)),
                name = esc(&c.name),
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str("</section>");
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// A number with at most 2 decimals, trailing zeros dropped.
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{} ms", num(v)))
}

fn percent(s: &Summary) -> String {
    if s.requests == 0 {
        return "-".to_string();
    }
    format!("{}%", num(s.error_ratio * 100.0))
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_text() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(num(2.0), "2");
        assert_eq!(num(0.126), "0.13");
        assert_eq!(num(10.5), "10.5");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3725), "1h 2m");
        assert_eq!(duration(90061), "1d 1h");
    }

    #[test]
    fn charts_scale_into_their_box() {
        let steps = [(0.0, 10.0, 0.0), (10.0, 20.0, 5.0), (20.0, 25.0, 10.0)];
        assert_eq!(
            polyline(&steps, 10.0, 100.0, 20.0),
            "0.0,19.0 40.0,19.0 40.0,10.0 80.0,10.0 80.0,1.0 100.0,1.0"
        );
        // One short step (a gateway just started) spans the whole chart.
        assert_eq!(
            polyline(&[(3.0, 5.0, 2.0)], 2.0, 100.0, 20.0),
            "0.0,1.0 100.0,1.0"
        );
        assert_eq!(
            polyline(&[(3.0, 5.0, 0.0)], 0.0, 100.0, 20.0),
            "0.0,19.0 100.0,19.0"
        );
    }
}
