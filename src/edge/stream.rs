//! The connection guard: a wrapper around every accepted client stream that bounds each
//! HTTP/1 request head in size (`server.max_header_bytes`) and in time
//! (`server.client_header_timeout`, for the whole head, not per read) while Pingora reads it,
//! and refuses (431 / 408 / 400, see [`super::refusal`]) when a limit hits or the request line
//! is malformed. It also closes a keep-alive connection that stays idle before a request
//! (`server.idle_timeout`), with the same timer. Outside the head phase (bodies, responses,
//! upgraded connections, HTTP/2) it only passes bytes through.
//!
//! Pingora's own refusals of an HTTP/1 head are replaced here too. Its parser and its CONNECT
//! check answer before any `ProxyHttp` hook runs (a bare 400 or 405: no body, no request id,
//! nothing counted or logged), and no hook or option lets the gateway answer instead. But
//! nothing else writes to a client before the proxy's first hook has seen the request, so a
//! write in that window is exactly such a refusal: the guard keeps its bytes from the client
//! and answers with its own problem (400 `malformed_head`, 405 `connect_method`), then closes
//! the connection. The reasons Pingora refuses for stay Pingora's; no rule is repeated here.

use super::head::HeadScanner;
use super::refusal::{Refusal, RefusalLog, RefusedHead};
use crate::observe::{Metrics, Rejection};
use crate::problem::{GatewayError, Problem};
use crate::request_target::escape_for_log;
use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    UniqueID, UniqueIDType,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 connection preface (RFC 9113 §3.4): a plain connection that starts with it is
/// h2c, and its head phase ends there.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Head limits of one connection (from the snapshot live when it was accepted).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_bytes: u64,
    pub timeout: Duration,
    /// How long the connection may wait for the first byte of a request before it is closed
    /// silently (keep-alive idle time; Pingora's own keep-alive timer is left off, since a
    /// timer of its own per request cost more than the guard's, which is re-armed in place).
    pub idle: Duration,
}

/// A client stream with the head guard. `Pingora` sees it as any other [`Stream`].
pub struct GuardedStream {
    inner: Stream,
    limits: HeadLimits,
    phase: Phase,
    /// The current request head, while `phase` is `Head` (kept here rather than in the phase:
    /// it holds the start of the target, and phases are swapped often).
    scanner: HeadScanner,
    /// Bytes read ahead (sniffing the HTTP/2 preface) and handed out again before the socket's.
    replay: Vec<u8>,
    replay_pos: usize,
    /// Fires at the head deadline or at the end of lingering; made on first need.
    timer: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    /// When the current head phase began (accept, or the end of the previous request).
    head_started: Instant,
    /// Where a refusal gets its access-log line (`None`: access log off).
    refusal_log: Option<RefusalLog>,
    /// The current HTTP/1 request has not reached the proxy's hooks yet (see the module
    /// doc): set for each head, cleared by [`GuardedStream::reached_proxy`] and for HTTP/2.
    /// Atomic: the proxy clears it through a shared reference to the session's stream.
    before_proxy: AtomicBool,
    /// Pingora's refusal is being replaced: what it still writes goes nowhere.
    replacing: bool,
}

enum Phase {
    /// Reading a request head: counted, and timed from `deadline` once it is set.
    Head { deadline: Option<Instant> },
    /// Anything else: passed through.
    Open,
    /// A limit hit: our answer is written, then input is drained for a moment.
    Refusing(Refusal),
    /// Refused and done.
    Closed { silent: bool },
}

impl GuardedStream {
    /// Wraps a freshly accepted stream. The first request's head must be complete
    /// `limits.timeout` after the connection was accepted (a client that connects and says
    /// nothing counts as slow, as in nginx).
    pub fn new(inner: Stream, limits: HeadLimits, metrics: Arc<Metrics>) -> GuardedStream {
        GuardedStream {
            inner,
            limits,
            phase: Phase::Head {
                deadline: Some(Instant::now() + limits.timeout),
            },
            scanner: HeadScanner::new(),
            replay: Vec::new(),
            replay_pos: 0,
            timer: None,
            metrics,
            head_started: Instant::now(),
            refusal_log: None,
            before_proxy: AtomicBool::new(true),
            replacing: false,
        }
    }

    /// Writes an access-log line for each request this guard refuses (431, 408), so a refused
    /// request shows in the log like any other, with its status and client.
    pub fn with_refusal_log(mut self, log: RefusalLog) -> GuardedStream {
        self.refusal_log = Some(log);
        self
    }

    /// A new request may start on this keep-alive connection: its head is counted and timed
    /// again, from its first byte; until that byte, the connection may stay idle for
    /// `limits.idle`.
    pub fn start_head(&mut self, limits: HeadLimits) {
        if matches!(self.phase, Phase::Open | Phase::Head { .. }) {
            self.limits = limits;
            self.head_started = Instant::now();
            self.phase = Phase::Head { deadline: None };
            self.scanner = HeadScanner::new();
            *self.before_proxy.get_mut() = true;
        }
    }

    /// The connection speaks something other than HTTP/1 (HTTP/2): no head phase any more.
    pub fn open(&mut self) {
        if matches!(self.phase, Phase::Head { .. }) {
            self.phase = Phase::Open;
        }
        *self.before_proxy.get_mut() = false;
    }

    /// The proxy's first hook has the current request: what is written from now on is the
    /// gateway's answer, not Pingora's refusal of the head.
    pub fn reached_proxy(&self) {
        self.before_proxy.store(false, Ordering::Relaxed);
    }

    /// Drives a refusal in progress to its end (answer written, input drained for a moment),
    /// after which the connection is closed.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Phase::Refusing(refusal) = &mut self.phase {
            ready!(refusal.poll(&mut self.inner, &mut self.timer, cx));
            self.phase = Phase::Closed { silent: false };
        }
        Poll::Ready(())
    }

    /// Called before every write: a write before the request reached the proxy is Pingora
    /// refusing the head (see the module doc), replaced with the gateway's own answer.
    /// True when the write is to be swallowed.
    fn intercept(&mut self, written: &[u8]) -> bool {
        if !self.replacing
            && matches!(self.phase, Phase::Head { .. } | Phase::Open)
            && self.before_proxy.load(Ordering::Relaxed)
        {
            // Pingora's only answers here are its parser's 400 and its CONNECT check's 405
            // (`HTTP/1.1 405 ...`).
            let error = if written.get(9..12) == Some(b"405") {
                GatewayError::Connect
            } else {
                GatewayError::BadRequest {
                    reason: Rejection::MalformedHead,
                    detail: "the request head is malformed or ambiguous (RFC 9110, RFC 9112)",
                }
            };
            tracing::debug!(
                "Pingora refused a request head: {:?}",
                String::from_utf8_lossy(&written[..written.len().min(12)])
            );
            self.refuse(error);
            self.replacing = true;
        }
        self.replacing
    }

    /// When the current head must be complete, if its clock runs.
    pub fn head_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Head { deadline, .. } => *deadline,
            _ => None,
        }
    }

    /// Reads the first bytes until they either are the HTTP/2 preface (true) or cannot be
    /// (false, at the first byte that differs: an HTTP/1 request however short is never
    /// waited on). The bytes read are handed out again by later reads. Cancel-safe: bytes
    /// read before a cancellation are kept for replay.
    pub async fn sniff_h2_preface(&mut self) -> io::Result<bool> {
        while self.replay.len() < H2_PREFACE.len() {
            let mut piece = [0u8; 24];
            let want = H2_PREFACE.len() - self.replay.len();
            let n = self.inner.read(&mut piece[..want]).await?;
            if n == 0 {
                return Ok(false);
            }
            self.replay.extend_from_slice(&piece[..n]);
            if !H2_PREFACE.starts_with(&self.replay) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads from the replay buffer first, then from the socket.
    fn read_source(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.replay_pos < self.replay.len() {
            let rest = &self.replay[self.replay_pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.replay_pos += n;
            if self.replay_pos == self.replay.len() {
                self.replay = Vec::new();
                self.replay_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }

    /// Polls the timer set to `at`, creating or moving it as needed.
    fn timer_fired(&mut self, cx: &mut Context<'_>, at: Instant) -> bool {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// One read during the head phase: at most one byte past the size limit is let in, the
    /// end of the head ends the phase, a limit refuses the request.
    fn poll_head_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Option<io::Result<()>>> {
        if !matches!(self.phase, Phase::Head { .. }) {
            return Poll::Ready(None);
        }
        let room = self.limits.max_bytes.saturating_sub(self.scanner.len()) + 1;
        let before = buf.filled().len();
        let polled = if buf.remaining() as u64 > room {
            // Near the limit: read only what may still belong to an acceptable head, so the
            // memory a connection holds stays bounded by our limit, not by Pingora's 1 MiB.
            let mut small = vec![0u8; room as usize];
            let mut small_buf = ReadBuf::new(&mut small);
            let polled = self.read_source(cx, &mut small_buf);
            buf.put_slice(small_buf.filled());
            polled
        } else {
            self.read_source(cx, buf)
        };
        let Phase::Head { deadline } = &mut self.phase else {
            return Poll::Ready(None);
        };
        let scanner = &mut self.scanner;
        match polled {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    return Poll::Ready(Some(Ok(()))); // end of stream: Pingora's to handle
                }
                let now = Instant::now();
                let deadline = *deadline.get_or_insert(now + self.limits.timeout);
                let ended = scanner.feed(fresh).is_some();
                if let Some(refusal) = scanner.request_line_refusal() {
                    buf.set_filled(before);
                    self.refuse(GatewayError::from(refusal));
                    return Poll::Ready(None);
                }
                if scanner.len() > self.limits.max_bytes {
                    buf.set_filled(before);
                    self.refuse(GatewayError::HeadTooLarge);
                    return Poll::Ready(None);
                }
                if ended {
                    self.phase = Phase::Open;
                } else if now >= deadline {
                    buf.set_filled(before);
                    self.refuse(GatewayError::HeadTimeout);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(())))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                // Before the first byte of a request the connection is idle, and the idle
                // timeout applies too (whichever comes first; both close a connection that
                // said nothing without a word).
                let idle_at = self
                    .scanner
                    .is_empty()
                    .then(|| self.head_started + self.limits.idle);
                let at = match (*deadline, idle_at) {
                    (Some(head), Some(idle)) => head.min(idle),
                    (head, idle) => match head.or(idle) {
                        Some(at) => at,
                        None => return Poll::Pending,
                    },
                };
                if self.timer_fired(cx, at) {
                    if idle_at.is_some_and(|idle| idle <= at) {
                        tracing::debug!("closing an idle keep-alive connection");
                        self.phase = Phase::Closed { silent: true };
                    } else {
                        self.refuse(GatewayError::HeadTimeout);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending
            }
        }
    }

    /// Refuses the request being read: the gateway's answer (431, 408, or 400 for a malformed
    /// request line) is written by the guard itself, then the connection closes. A connection
    /// that never sent a byte in time is closed without a word.
    fn refuse(&mut self, error: GatewayError) {
        let started = !matches!(self.phase, Phase::Head { .. }) || !self.scanner.is_empty();
        if let Some(reason) = error.rejection() {
            self.metrics.rejected(reason);
        }
        if error == GatewayError::HeadTimeout && !started {
            tracing::debug!("closing a connection that sent no request in time");
            self.phase = Phase::Closed { silent: true };
            return;
        }
        let problem = Problem::from(&error);
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        tracing::debug!(request_id, status = problem.status, "request head refused");
        let response = problem.http1_response(&request_id);
        if let Some(log) = &self.refusal_log {
            let target = escape_for_log(self.scanner.target());
            let client = self
                .inner
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
            let refused = RefusedHead {
                request_id: &request_id,
                client,
                status: problem.status,
                reason: error.rejection(),
                target: &target,
                head_bytes: self.scanner.len(),
                response_bytes: response.len(),
                duration: self.head_started.elapsed(),
            };
            if !refused.log(log) {
                self.metrics.access_log_dropped();
            }
        }
        self.phase = Phase::Refusing(Refusal::new(response));
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "request head refused by Tollgate's limits",
    )
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.phase {
                Phase::Open => return this.read_source(cx, buf),
                Phase::Head { .. } => {
                    if let Some(result) = ready!(this.poll_head_read(cx, buf)) {
                        return Poll::Ready(result);
                    }
                }
                Phase::Refusing(_) => ready!(this.poll_refusal(cx)),
                // Silent: end of stream, so Pingora closes without a word.
                Phase::Closed { silent: true } => return Poll::Ready(Ok(())),
                Phase::Closed { silent: false } => return Poll::Ready(Err(refused())),
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.intercept(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        match this.phase {
            Phase::Refusing(_) | Phase::Closed { .. } => Poll::Ready(Err(refused())),
            _ => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.intercept(first) {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        match this.phase {
            Phase::Refusing(_) | Phase::Closed { .. } => Poll::Ready(Err(refused())),
            _ => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Refusing(_) | Phase::Closed { .. } => Poll::Ready(Ok(())),
            _ => Pin::new(&mut this.inner).poll_flush(cx),
        }
    }

    /// A refusal still pending is written and lingered over before the connection closes:
    /// Pingora's replaced answer is followed by a shutdown, not by more reads that would drive
    /// it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Refusing(_) => {
                ready!(this.poll_refusal(cx));
                Poll::Ready(Ok(()))
            }
            Phase::Closed { silent: false } => Poll::Ready(Ok(())),
            _ => Pin::new(&mut this.inner).poll_shutdown(cx),
        }
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    /// A refusal still pending is written and lingered over first (see `poll_shutdown`).
    async fn shutdown(&mut self) {
        std::future::poll_fn(|cx| self.poll_refusal(cx)).await;
        if !matches!(self.phase, Phase::Closed { silent: false }) {
            self.inner.shutdown().await;
        }
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    /// Served from the sniffed bytes when they cover the request (the HTTP/2 path asks for
    /// exactly the preface we already read), else from the socket.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let ahead = &self.replay[self.replay_pos..];
        if ahead.len() >= buf.len() {
            buf.copy_from_slice(&ahead[..buf.len()]);
            return Ok(true);
        }
        if !ahead.is_empty() {
            // Bytes are held here that the socket's peek would not show.
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    fn guarded(max_bytes: u64, timeout_ms: u64) -> (GuardedStream, DuplexStream, Arc<Metrics>) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let metrics = Arc::new(Metrics::new());
        let limits = HeadLimits {
            max_bytes,
            timeout: Duration::from_millis(timeout_ms),
            idle: Duration::from_secs(60),
        };
        (
            GuardedStream::new(Box::new(server), limits, metrics.clone()),
            client,
            metrics,
        )
    }

    fn count(metrics: &Metrics, reason: &str) -> bool {
        let page = String::from_utf8(metrics.render()).unwrap();
        page.contains(&format!(
            "tollgate_rejected_requests_total{{reason=\"{reason}\"}} 1"
        ))
    }

    #[tokio::test]
    async fn a_head_within_limits_and_its_body_pass_unchanged() {
        let (mut g, mut client, _) = guarded(64, 1000);
        let sent = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        let body = vec![b'x'; 1000];
        client.write_all(&sent).await.unwrap();
        client.write_all(&body).await.unwrap();
        drop(client);
        let mut got = Vec::new();
        g.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [sent, body].concat());
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_answered_431_and_not_passed_on() {
        let (mut g, mut client, metrics) = guarded(64, 1000);
        client
            .write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100)).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let err = g.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(got.len() <= 65, "{} bytes passed on", got.len());
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.contains("application/problem+json"));
        assert!(count(&metrics, "header_too_large"));
    }

    #[tokio::test]
    async fn a_trickled_head_is_timed_as_a_whole() {
        let (mut g, mut client, metrics) = guarded(1024, 300);
        let started = Instant::now();
        // One byte every 50 ms until an answer comes: each read is quick, the head is not.
        let writer = tokio::spawn(async move {
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            let mut first = [0u8; 1];
            for _ in 0..40 {
                tokio::select! {
                    _ = client.read_exact(&mut first) => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {
                        client.write_all(b"a").await.unwrap();
                    }
                }
            }
            let answered_after = started.elapsed();
            let mut answer = first.to_vec();
            let _ = client.read_to_end(&mut answer).await;
            (answer, answered_after)
        });
        let mut got = Vec::new();
        assert!(g.read_to_end(&mut got).await.is_err());
        drop(g);
        let (answer, answered_after) = writer.await.unwrap();
        assert!(
            answered_after >= Duration::from_millis(300),
            "{answered_after:?}"
        );
        assert!(
            answered_after < Duration::from_millis(1500),
            "{answered_after:?}"
        );
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(count(&metrics, "header_timeout"));
    }

    /// A guarded stream whose first request (a bare `GET /`) has been read through it.
    async fn after_a_request(
        max_bytes: u64,
        timeout_ms: u64,
    ) -> (GuardedStream, DuplexStream, Arc<Metrics>) {
        let (mut g, mut client, metrics) = guarded(max_bytes, timeout_ms);
        let first = b"GET / HTTP/1.1\r\n\r\n";
        client.write_all(first).await.unwrap();
        let mut buf = vec![0u8; first.len()];
        g.read_exact(&mut buf).await.unwrap();
        (g, client, metrics)
    }

    #[tokio::test]
    async fn the_next_head_is_guarded_again_and_timed_from_its_first_byte() {
        let (mut g, mut client, _) = after_a_request(64, 200).await;
        // Idle for longer than the head timeout, then a second head over the size limit.
        g.start_head(g.limits);
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100)).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        assert!(g.read_to_end(&mut got).await.is_err());
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431 "));
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_without_a_word() {
        let (mut g, mut client, metrics) = after_a_request(64, 1000).await;
        // Idle for longer than idle_timeout (shorter here than the head timeout).
        g.start_head(HeadLimits {
            idle: Duration::from_millis(200),
            ..g.limits
        });
        let started = Instant::now();
        let mut rest = Vec::new();
        assert_eq!(g.read_to_end(&mut rest).await.unwrap(), 0);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_millis(900), "{waited:?}");
        drop(g);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        assert!(!count(&metrics, "header_timeout"));
    }

    #[tokio::test]
    async fn pingoras_refusal_before_the_proxy_is_replaced_and_later_answers_pass() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        let bare = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nContent-Length: 0\r\n\r\n";

        // Written before any hook had the request: Pingora's refusal, replaced at shutdown.
        let (mut g, mut client, metrics) = guarded(1024, 1000);
        client.write_all(head).await.unwrap();
        let mut got = vec![0u8; head.len()];
        g.read_exact(&mut got).await.unwrap();
        g.write_all(bare).await.unwrap();
        g.flush().await.unwrap();
        AsyncWriteExt::shutdown(&mut client).await.unwrap();
        // As Pingora shuts a session down (tokio's shutdown, not its own `Shutdown`).
        AsyncWriteExt::shutdown(&mut g).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("x-request-id: "), "{answer}");
        assert!(!answer.contains("Pingora"), "{answer}");
        assert!(count(&metrics, "malformed_head"));

        // The same bytes once the proxy has the request are the gateway's answer: passed on.
        let (mut g, mut client, metrics) = guarded(1024, 1000);
        client.write_all(head).await.unwrap();
        let mut got = vec![0u8; head.len()];
        g.read_exact(&mut got).await.unwrap();
        g.reached_proxy();
        g.write_all(bare).await.unwrap();
        AsyncWriteExt::shutdown(&mut g).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, bare);
        assert!(!count(&metrics, "malformed_head"));
    }

    #[tokio::test]
    async fn sniffing_stops_at_the_first_byte_that_is_not_the_preface() {
        let (mut g, mut client, _) = guarded(1024, 1000);
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        assert!(!g.sniff_h2_preface().await.unwrap());
        let mut buf = vec![0u8; 18];
        g.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"GET / HTTP/1.0\r\n\r\n");

        let (mut g, mut client, _) = guarded(1024, 1000);
        client.write_all(H2_PREFACE).await.unwrap();
        assert!(g.sniff_h2_preface().await.unwrap());
        let mut peeked = [0u8; 24];
        assert!(g.try_peek(&mut peeked).await.unwrap());
        assert_eq!(&peeked, H2_PREFACE);
        g.open();
        let mut buf = [0u8; 24];
        g.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, H2_PREFACE);
    }
}
