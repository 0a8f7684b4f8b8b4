//! The access log: one line per request on stdout, JSON (for log pipelines) or text (for humans).
//!
//! Lines are appended to an in-memory buffer and written by a background thread every
//! [`FLUSH_INTERVAL`] or as soon as [`FLUSH_AT`] bytes are pending, like nginx's
//! `access_log ... buffer=64k flush=...`. A request never makes a system call or wakes another
//! thread to log (waking a writer per line doubled the CPU cost of a request on one core). If the
//! output stalls and [`MAX_PENDING`] bytes pile up, new lines are dropped and counted rather than
//! blocking traffic or growing memory without bound.

use crate::config::LogFormat;
use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// Longest time a line waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Pending bytes that trigger a write before the interval is up.
pub const FLUSH_AT: usize = 64 * 1024;
/// Pending bytes beyond which lines are dropped (the output is stuck).
pub const MAX_PENDING: usize = 16 * 1024 * 1024;

/// One request as the access log shows it. The path never includes the query string: query
/// values often carry personal data or tokens.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    /// The path in normal form, as routed and forwarded (for a refused request: as received).
    pub path: &'a str,
    /// Why the gateway refused the request itself, for refusals counted in
    /// `tollgate_rejected_requests_total` (the same label).
    pub reason: Option<&'static str>,
    pub route: &'a str,
    pub upstream: Option<&'a str>,
    pub target: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// An aggregate route's parts: `profile:200:12ms,feed:timeout:400ms`.
    pub parts: Option<&'a str>,
    /// The request's W3C trace id (`[tracing]` on).
    pub trace_id: Option<u128>,
    /// Why the response was cut short after its head went out (`too_large`, `timeout`,
    /// `upstream`): the client got `status` and `bytes_out` bytes of body, not the whole.
    pub truncated: Option<&'static str>,
    /// What the route's cache did (`hit`, `miss`, `stale`, ...: the `result` label of
    /// `tollgate_cache_requests_total`); absent on routes without a cache.
    pub cache: Option<&'static str>,
    /// Upstream attempts, when there was more than one (retries, a replay after a pooled
    /// connection failed); `target` is the last one's.
    pub attempts: Option<u32>,
}

/// Writes the record as one JSON object. Written by hand rather than through serde: the fields
/// are fixed, and this runs once per request (it took a third of the gateway's own CPU).
fn write_json(out: &mut Vec<u8>, r: &AccessRecord<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, r.time);
    out.extend_from_slice(b"\",\"request_id\":");
    json_safe_str(out, r.request_id);
    out.extend_from_slice(b",\"client\":");
    match r.client {
        Some(ip) => {
            out.push(b'"');
            write_ip(out, ip);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    json_safe_str(out, r.method);
    out.extend_from_slice(b",\"path\":");
    json_str(out, r.path);
    out.extend_from_slice(b",\"route\":");
    json_safe_str(out, r.route);
    out.extend_from_slice(b",\"upstream\":");
    json_opt_safe_str(out, r.upstream);
    out.extend_from_slice(b",\"target\":");
    json_opt_safe_str(out, r.target);
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(n.format(r.status).as_bytes());
    // Milliseconds with microsecond precision, as a JSON number: "12.345".
    let micros = r.duration.as_micros();
    out.extend_from_slice(b",\"duration_ms\":");
    out.extend_from_slice(n.format(micros / 1000).as_bytes());
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
    out.extend_from_slice(b",\"bytes_in\":");
    out.extend_from_slice(n.format(r.bytes_in).as_bytes());
    out.extend_from_slice(b",\"bytes_out\":");
    out.extend_from_slice(n.format(r.bytes_out).as_bytes());
    if let Some(reason) = r.reason {
        out.extend_from_slice(b",\"reason\":");
        json_safe_str(out, reason);
    }
    if let Some(parts) = r.parts {
        out.extend_from_slice(b",\"parts\":");
        json_safe_str(out, parts);
    }
    if let Some(id) = r.trace_id {
        let _ = write!(out, ",\"trace_id\":\"{id:032x}\"");
    }
    if let Some(truncated) = r.truncated {
        out.extend_from_slice(b",\"truncated\":");
        json_safe_str(out, truncated);
    }
    if let Some(cache) = r.cache {
        out.extend_from_slice(b",\"cache\":");
        json_safe_str(out, cache);
    }
    if let Some(attempts) = r.attempts {
        out.extend_from_slice(b",\"attempts\":");
        out.extend_from_slice(n.format(attempts).as_bytes());
    }
    out.push(b'}');
}

thread_local! {
    /// The last whole second formatted, `YYYY-MM-DDTHH:MM:SS`: calendar arithmetic once a second
    /// instead of once a request.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 UTC with milliseconds: `2026-11-26T07:21:10.806Z`.
fn write_time(out: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = humantime::format_rfc3339_seconds(t).to_string();
            if let Some(prefix) = text.as_bytes().get(..19) {
                cached.1.copy_from_slice(prefix);
                cached.0 = secs;
            }
        }
        out.extend_from_slice(&cached.1);
    });
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// Writes an IP address in its usual text form (see [`IpText`]).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.extend_from_slice(IpText::new(ip).as_bytes());
}

/// An IP address in its usual text form, on the stack. IPv4, the common case on every request
/// (access log, `X-Forwarded-For`), is written digit by digit rather than through `fmt`.
pub struct IpText {
    /// The longest form (IPv4-mapped IPv6) is 45 bytes.
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut text = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let mut rest = &mut text.buf[..];
                let _ = write!(rest, "{v6}");
                text.len = 45 - rest.len();
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn json_opt_safe_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_safe_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A string that cannot need escaping: request ids (checked to `[A-Za-z0-9._:-]` or generated),
/// method tokens (the parser admits only token characters), route, upstream and target names
/// (validated config names and host:port labels). Falls back to escaping if that ever breaks.
fn json_safe_str(out: &mut Vec<u8>, s: &str) {
    // A fold without an early exit, so the check is vectorised: these strings are short and
    // never need escaping in practice, and five of them go into every line.
    let needs_escape = s.bytes().fold(false, |found, b| {
        found | (b == b'"') | (b == b'\\') | (b < 0x20) | (b == 0x7f)
    });
    if needs_escape {
        return json_str(out, s);
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// A JSON string, escaped by serde_json (paths come from clients: no hand-written escaping of
/// hostile bytes).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The access-log sink of one gateway.
pub struct AccessLog {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    sink: Mutex<Box<dyn Write + Send>>,
    closed: AtomicBool,
}

impl Shared {
    /// Writes whatever is pending. Called by the writer thread, and by `flush` before an exit.
    fn write_pending(&self, spare: &mut Vec<u8>) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *pending, spare);
        }
        if spare.is_empty() {
            return;
        }
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        // Nowhere to report a failing stdout; the lines are lost either way.
        let _ = sink.write_all(spare).and_then(|_| sink.flush());
        spare.clear();
    }
}

thread_local! {
    /// Per-thread scratch space, so formatting a line allocates nothing in the steady state.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// Logs to standard output.
    pub fn stdout() -> AccessLog {
        AccessLog::to_writer(std::io::stdout())
    }

    /// Logs to any writer (tests use an in-memory buffer).
    pub fn to_writer<W: Write + Send + 'static>(w: W) -> AccessLog {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
            wake: Condvar::new(),
            sink: Mutex::new(Box::new(w)),
            closed: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("tollgate-access-log".into())
            .spawn(move || writer_loop(&thread_shared))
            .map_err(|e| tracing::error!("cannot start the access-log writer: {e}"))
            .ok();
        AccessLog { shared, writer }
    }

    /// Appends one record in the given format. False when the line had to be dropped (the
    /// output is stuck).
    pub fn write(&self, format: LogFormat, record: &AccessRecord<'_>) -> bool {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            match format {
                LogFormat::Json => write_json(&mut line, record),
                LogFormat::Text => write_text(&mut line, record),
            }
            line.push(b'\n');
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if pending.len() + line.len() > MAX_PENDING {
                return false;
            }
            pending.extend_from_slice(&line);
            if pending.len() >= FLUSH_AT {
                self.shared.wake.notify_one();
            }
            true
        })
    }

    /// Writes everything pending now (before the process exits).
    pub fn flush(&self) {
        self.shared.write_pending(&mut Vec::new());
    }
}

fn writer_loop(shared: &Shared) {
    let mut spare = Vec::with_capacity(FLUSH_AT * 2);
    loop {
        {
            let pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (_pending, _) = shared
                .wake
                .wait_timeout_while(pending, FLUSH_INTERVAL, |p| {
                    p.len() < FLUSH_AT && !shared.closed.load(Ordering::Acquire)
                })
                .unwrap_or_else(|p| p.into_inner());
        }
        shared.write_pending(&mut spare);
        if shared.closed.load(Ordering::Acquire) {
            shared.write_pending(&mut spare);
            return;
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        match self.writer.take() {
            Some(t) => {
                let _ = t.join();
            }
            None => self.flush(),
        }
    }
}

fn write_text(out: &mut Vec<u8>, r: &AccessRecord<'_>) {
    let _ = write!(
        out,
        "{} {} \"{} {}\" {} {:.3}ms route={} upstream={} target={} in={} out={} id={}",
        humantime::format_rfc3339_millis(r.time),
        r.client
            .map_or_else(|| "-".to_string(), |ip| ip.to_string()),
        r.method,
        r.path.escape_debug(),
        r.status,
        r.duration.as_secs_f64() * 1000.0,
        r.route,
        r.upstream.unwrap_or("-"),
        r.target.unwrap_or("-"),
        r.bytes_in,
        r.bytes_out,
        r.request_id,
    );
    if let Some(reason) = r.reason {
        let _ = write!(out, " reason={reason}");
    }
    if let Some(parts) = r.parts {
        let _ = write!(out, " parts={parts}");
    }
    if let Some(id) = r.trace_id {
        let _ = write!(out, " trace_id={id:032x}");
    }
    if let Some(truncated) = r.truncated {
        let _ = write!(out, " truncated={truncated}");
    }
    if let Some(cache) = r.cache {
        let _ = write!(out, " cache={cache}");
    }
    if let Some(attempts) = r.attempts {
        let _ = write!(out, " attempts={attempts}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(path: &'a str, client: Option<IpAddr>) -> AccessRecord<'a> {
        AccessRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: "abc",
            client,
            method: "GET",
            path,
            reason: None,
            route: "users",
            upstream: Some("users"),
            target: None,
            status: 200,
            duration: Duration::from_micros(12_345),
            bytes_in: 0,
            bytes_out: 42,
            parts: None,
            trace_id: None,
            truncated: None,
            cache: None,
            attempts: None,
        }
    }

    #[test]
    fn json_line_is_valid_json_with_every_field() {
        let mut out = Vec::new();
        write_json(
            &mut out,
            &record("/v1/\"x\"\\\u{1}\u{7f}é", Some([10, 0, 0, 1].into())),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["path"], "/v1/\"x\"\\\u{1}\u{7f}é");
        assert_eq!(v["client"], "10.0.0.1");
        assert_eq!(v["target"], serde_json::Value::Null);
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["bytes_out"], 42);
        assert_eq!(v.as_object().unwrap().len(), 12);
    }

    #[test]
    fn a_refusal_carries_its_reason() {
        let mut r = record("/a\\x00b", None);
        r.status = 400;
        r.reason = Some("bad_path");
        let mut out = Vec::new();
        write_json(&mut out, &r);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["reason"], "bad_path");
        assert_eq!(v["path"], "/a\\x00b");
        out.clear();
        write_text(&mut out, &r);
        assert!(String::from_utf8_lossy(&out).ends_with(" reason=bad_path"));
    }

    #[test]
    fn time_is_right_across_seconds_and_ipv6_is_written() {
        let mut out = Vec::new();
        for (ms, want) in [
            (1_700_000_000_999u64, "2023-11-14T22:13:20.999Z"),
            (1_700_000_001_000, "2023-11-14T22:13:21.000Z"),
            (1_700_000_001_042, "2023-11-14T22:13:21.042Z"),
        ] {
            out.clear();
            write_time(&mut out, SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
        out.clear();
        write_ip(&mut out, "2001:db8::1".parse().unwrap());
        assert_eq!(String::from_utf8_lossy(&out), "2001:db8::1");
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.255",
            "9.99.100.200",
        ] {
            out.clear();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8_lossy(&out), ip);
        }
    }

    #[test]
    fn short_durations_keep_their_leading_zeros() {
        let mut r = record("/", None);
        r.duration = Duration::from_micros(7);
        let mut out = Vec::new();
        write_json(&mut out, &r);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["duration_ms"], 0.007);
        assert_eq!(v["client"], serde_json::Value::Null);
    }
}
