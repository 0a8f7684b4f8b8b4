//! Captures the log lines of one test: a thread-local subscriber (a `#[tokio::test]` runtime runs
//! every task on the test's thread) writing into memory.

use super::gateway::SharedBuf;

/// This test's log lines, for as long as it lives.
pub struct LogCapture {
    buf: SharedBuf,
    _guard: tracing::subscriber::DefaultGuard,
    /// A second registered dispatcher, kept alive only so that tracing never takes its
    /// "just one dispatcher" path: there, a callsite first reached on another test's thread
    /// (which has no subscriber) caches "never" and this test would lose that event
    /// (tokio-rs/tracing#3611).
    _second: tracing::Dispatch,
}

impl LogCapture {
    pub fn install() -> LogCapture {
        let second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let buf = SharedBuf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        LogCapture {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
            _second: second,
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.buf.text()
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}
