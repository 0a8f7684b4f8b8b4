//! The access log: one line per request on stdout, JSON (for log pipelines) or text (for humans).
//! Lines are handed to a writer thread so a slow terminal or pipe never stalls a request; under
//! extreme pressure the queue drops lines rather than blocking traffic (the drop is counted by
//! tracing-appender's lossy mode and rare by design: the queue holds 128k lines).

use crate::config::LogFormat;
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::time::{Duration, SystemTime};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

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
    writer: NonBlocking,
    _guard: WorkerGuard,
}

impl AccessLog {
    /// Logs to standard output.
    pub fn stdout() -> AccessLog {
        AccessLog::to_writer(std::io::stdout())
    }

    /// Logs to any writer (tests use an in-memory buffer). Writes are batched: the writer thread
    /// flushes when its queue is empty, so a busy gateway makes few large writes.
    pub fn to_writer<W: Write + Send + 'static>(w: W) -> AccessLog {
        let (writer, guard) = NonBlockingBuilder::default()
            .buffered_lines_limit(128 * 1024)
            .thread_name("tollgate-access-log")
            .finish(BufWriter::with_capacity(64 * 1024, w));
        AccessLog {
            writer,
            _guard: guard,
        }
    }

    /// Writes one record in the given format.
    pub fn write(&self, format: LogFormat, record: &AccessRecord<'_>) {
        let mut line = Vec::with_capacity(320);
        match format {
            LogFormat::Json => {
                if serde_json::to_writer(&mut line, record).is_err() {
                    return;
                }
            }
            LogFormat::Text => write_text(&mut line, record),
        }
        line.push(b'\n');
        let mut w = self.writer.clone();
        // A full queue drops the line (lossy mode); nothing useful to do with the error here.
        let _ = w.write_all(&line);
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
