//! What the connection guard does once it refuses a request head (431, 408, 400): its answer
//! written as raw HTTP/1 bytes (there is no session yet), the connection half-closed and its
//! input drained for a moment so the answer is read rather than reset away, and the refusal's
//! access-log line.

use crate::config::LogFormat;
use crate::observe::{AccessLog, AccessRecord, Rejection};
use pingora::protocols::Stream;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// After refusing a request, how long input is still read and thrown away before the socket
/// closes. Closing with unread input makes the kernel send a reset, which can destroy our
/// answer before the client reads it (the reason for nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(1);
/// ... and how much input at most.
const LINGER_BYTES: usize = 256 * 1024;

/// A refusal in progress: the answer being written, then input drained.
pub(super) struct Refusal {
    response: Vec<u8>,
    written: usize,
    step: Step,
    drained: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Write,
    Flush,
    Shutdown,
    Drain,
}

impl Refusal {
    pub(super) fn new(response: Vec<u8>) -> Refusal {
        Refusal {
            response,
            written: 0,
            step: Step::Write,
            drained: 0,
        }
    }

    /// Drives the refusal: write the answer, flush, half-close, drain input for a moment
    /// (`timer` is set when draining begins). Ready once the connection is done with.
    pub(super) fn poll(
        &mut self,
        inner: &mut Stream,
        timer: &mut Option<Pin<Box<Sleep>>>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            let inner = Pin::new(&mut *inner);
            let step_done = match self.step {
                Step::Write => match ready!(inner.poll_write(cx, &self.response[self.written..])) {
                    Ok(n) if n > 0 => {
                        self.written += n;
                        self.written == self.response.len()
                    }
                    _ => break,
                },
                Step::Flush => ready!(inner.poll_flush(cx)).is_ok(),
                Step::Shutdown => {
                    // Whatever the result, go on draining: the answer is out.
                    let _ = ready!(inner.poll_shutdown(cx));
                    true
                }
                Step::Drain => {
                    let mut scratch = [0u8; 4096];
                    let mut sink = ReadBuf::new(&mut scratch);
                    match inner.poll_read(cx, &mut sink) {
                        Poll::Ready(Ok(())) if !sink.filled().is_empty() => {
                            self.drained += sink.filled().len();
                            if self.drained > LINGER_BYTES {
                                break;
                            }
                            continue;
                        }
                        Poll::Ready(_) => break,
                        Poll::Pending => {
                            let fired = timer
                                .as_mut()
                                .is_none_or(|t| t.as_mut().poll(cx).is_ready());
                            if fired {
                                break;
                            }
                            return Poll::Pending;
                        }
                    }
                }
            };
            if !step_done {
                if self.step == Step::Write {
                    continue;
                }
                break;
            }
            self.step = match self.step {
                Step::Write => Step::Flush,
                Step::Flush => Step::Shutdown,
                Step::Shutdown | Step::Drain => {
                    // Lingering starts now.
                    *timer = Some(Box::pin(tokio::time::sleep(LINGER)));
                    Step::Drain
                }
            };
        }
        Poll::Ready(())
    }
}

/// The access log a refused request is written to, in the format of the config live when the
/// connection was accepted.
pub struct RefusalLog {
    pub access_log: Arc<AccessLog>,
    pub format: LogFormat,
}

/// What the access log says of a refused head.
pub(super) struct RefusedHead<'a> {
    pub request_id: &'a str,
    /// The socket peer (X-Forwarded-For was never read).
    pub client: Option<IpAddr>,
    pub status: u16,
    pub reason: Option<Rejection>,
    /// The target as far as it arrived, escaped; empty when none did.
    pub target: &'a str,
    pub head_bytes: u64,
    pub response_bytes: usize,
    pub duration: Duration,
}

impl RefusedHead<'_> {
    /// Writes the line: no method or route (the head was never parsed), the target or `-`.
    /// False when the log dropped it.
    pub(super) fn log(&self, log: &RefusalLog) -> bool {
        let record = AccessRecord {
            time: std::time::SystemTime::now(),
            request_id: self.request_id,
            client: self.client,
            method: "-",
            path: if self.target.is_empty() {
                "-"
            } else {
                self.target
            },
            reason: self.reason.map(Rejection::label),
            route: "-",
            upstream: None,
            target: None,
            status: self.status,
            duration: self.duration,
            bytes_in: self.head_bytes,
            bytes_out: self.response_bytes as u64,
            parts: None,
            trace_id: None,
            truncated: None,
            cache: None,
            attempts: None,
        };
        log.access_log.write(log.format, &record)
    }
}
