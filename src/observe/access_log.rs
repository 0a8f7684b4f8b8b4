//! The access log: one line per request on stdout, JSON (for log pipelines) or text (for humans).
//!
//! Lines are appended to an in-memory buffer and written by a background thread every
//! [`FLUSH_INTERVAL`] or as soon as [`FLUSH_AT`] bytes are pending, like nginx's
//! `access_log ... buffer=64k flush=...`. A request never makes a system call or wakes another
//! thread to log (waking a writer per line doubled the CPU cost of a request on one core). If the
//! output stalls and [`MAX_PENDING`] bytes pile up, new lines are dropped and counted rather than
//! blocking traffic or growing memory without bound.

use crate::config::LogFormat;
use serde::Serialize;
use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: Option<&'a str>,
    pub target: Option<&'a str>,
    pub status: u16,
    #[serde(serialize_with = "millis")]
    pub duration_ms: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    // Microsecond precision is plenty and keeps lines short.
    s.serialize_f64((d.as_micros() as f64) / 1000.0)
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
    dropped: AtomicU64,
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
            dropped: AtomicU64::new(0),
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
    /// output is stuck, or the record could not be formatted).
    pub fn write(&self, format: LogFormat, record: &AccessRecord<'_>) -> bool {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            match format {
                LogFormat::Json => {
                    if serde_json::to_writer(&mut *line, record).is_err() {
                        return false;
                    }
                }
                LogFormat::Text => write_text(&mut line, record),
            }
            line.push(b'\n');
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if pending.len() + line.len() > MAX_PENDING {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
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

    /// Lines dropped because the output could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
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
        r.client.as_deref().unwrap_or("-"),
        r.method,
        r.path.escape_debug(),
        r.status,
        r.duration_ms.as_secs_f64() * 1000.0,
        r.route,
        r.upstream.unwrap_or("-"),
        r.target.unwrap_or("-"),
        r.bytes_in,
        r.bytes_out,
        r.request_id,
    );
}
