//! The edge of the proxy service: every accepted connection (plain or TLS, whatever listener
//! the service has) passes through [`EdgeApp`], which wraps its stream in a
//! [`GuardedStream`] enforcing the request head limits (`server.max_header_bytes`,
//! `server.client_header_timeout`) before Pingora's HTTP code sees a byte, then hands the
//! connection to the proxy.
//!
//! Before that, [`ConnectionAdmission`] applies the per-client connection limits
//! (`server.max_connections_per_client`, `server.connection_rate_per_client`): a connection
//! over them is closed before a byte is read.
//!
//! Why a stream wrapper: Pingora reads request heads itself, caps them only at 1 MiB and times
//! each read rather than the whole head (cloudflare/pingora#447), and no `ProxyHttp` hook runs
//! before a head is complete. Only the stream it reads from sees a head while it arrives, and
//! only that stream sees the bare answer Pingora writes when it refuses a head before any hook
//! runs; the guard replaces it with the gateway's own ([`request_reached_proxy`] marks where
//! the gateway's answers begin).

mod admission;
mod h2_first;
mod head;
mod refusal;
mod stream;

pub use admission::{AdmittedConnection, ConnectionAdmission};
pub use head::HeadScanner;
pub use refusal::RefusalLog;
pub use stream::{GuardedStream, HeadLimits, H2_PREFACE};

use crate::observe::{AccessLog, Metrics};
use crate::snapshot::{Limits, Store};
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::L4BufferSettings;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{GetSocketDigest, Ssl, Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// Bytes a client connection's writes gather before they go out. Pingora's default is one TCP
/// segment (1,460 bytes), so an answer bigger than that left in two system calls and two
/// segments: the head, then the body. With room for a head and a typical API body, the whole
/// answer of a cache hit or of a proxied response up to this size leaves in one write. Pingora
/// writes through at once whatever is chunked, close-delimited or finished, so only a
/// `Content-Length` body still arriving from its upstream waits here, and at most this much.
pub const CLIENT_WRITE_BUFFER: usize = 32 * 1024;

/// The read and write buffers of every client connection (plain and TLS listeners).
pub fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().write(CLIENT_WRITE_BUFFER)
}

/// How long, once the listeners stopped (shutdown or handover to a new process), HTTP/1
/// connections waiting for their next request stay open. Closed at once, a connection whose
/// client is sending its next request at that moment gives that client an error (most clients
/// do not retry it); kept open, the request is answered with `Connection: close` (the shutdown
/// flag is set) and the client reconnects: to the new process, after a handover.
pub const LAST_CALL: Duration = Duration::from_secs(1);

/// Wraps an HTTP application (Tollgate's `HttpProxy`) with the connection guard.
pub struct EdgeApp<A> {
    inner: Arc<A>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// For the access-log lines of requests the guard refuses.
    access_log: Arc<AccessLog>,
    /// Open connections and connection rate per client.
    connections: ConnectionAdmission,
}

impl<A> EdgeApp<A> {
    pub fn new(
        inner: A,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> EdgeApp<A> {
        EdgeApp {
            inner: Arc::new(inner),
            store,
            metrics,
            access_log,
            connections: ConnectionAdmission::default(),
        }
    }

    /// The wrapped application, to adjust its options while the service is being built
    /// (`None` once connections are being served).
    pub fn app_mut(&mut self) -> Option<&mut A> {
        Arc::get_mut(&mut self.inner)
    }

    /// The head limits of the live config.
    fn head_limits(&self) -> HeadLimits {
        head_limits(&self.store.snapshot().limits)
    }
}

#[async_trait]
impl<A> ServerApp for EdgeApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Serves one connection. HTTP/2 (h2c by prior knowledge, or TLS with ALPN h2) goes to the
    /// application as is, with the guard open. HTTP/1 runs Pingora's keep-alive loop here, so
    /// that each request's head phase starts exactly when the previous request is done
    /// (body drained, response written).
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let snapshot = self.store.snapshot();
        let limits = snapshot.limits;
        let log = snapshot.log;
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Held for the connection's life (this function serves it to the end).
        let _admitted =
            match self
                .connections
                .admit(peer, &limits, &snapshot.trusted_proxies, &self.metrics)
            {
                Ok(admitted) => admitted,
                Err(reason) => {
                    // Closed before a byte is read: the cheapest answer to a flood.
                    self.metrics.abuse.connection_refused(reason);
                    return None;
                }
            };
        // Not held for the connection's life: a reload must be able to free the old config.
        drop(snapshot);
        let mut guarded = GuardedStream::new(stream, head_limits(&limits), self.metrics.clone());
        if log.access {
            guarded = guarded.with_refusal_log(RefusalLog {
                access_log: self.access_log.clone(),
                format: log.format,
            });
        }
        let options = self.inner.server_options();
        let h2 = if guarded.get_ssl_digest().is_some() {
            // TLS: ALPN decides; h2c never applies.
            match guarded.selected_alpn_proto() {
                Some(ALPN::H2) => true,
                Some(ALPN::Custom(_)) => return self.hand_over(guarded, shutdown).await,
                _ => false,
            }
        } else if options.is_some_and(|o| o.h2c) {
            // Bounded by the head deadline; on timeout or error the HTTP/1 path below reads
            // what arrived and answers (408) or closes.
            match guarded.head_deadline() {
                Some(at) => tokio::time::timeout_at(at, guarded.sniff_h2_preface())
                    .await
                    .is_ok_and(|r| r.unwrap_or(false)),
                None => guarded.sniff_h2_preface().await.unwrap_or(false),
            }
        } else {
            false
        };
        if h2 {
            return self.serve_h2(guarded, shutdown).await;
        }

        let keepalive_limit = options.and_then(|o| o.keepalive_request_limit);
        let mut session = ServerSession::new_http1(Box::new(guarded));
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            // Keep-alive on, with no timer of Pingora's: the guard closes an idle connection
            // (`HeadLimits::idle`).
            session.set_keepalive(Some(0));
        }
        session.set_keepalive_reuses_remaining(keepalive_limit);
        let mut result = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            // Tollgate never enables HTTP/1 pipelining, so the next request starts on the
            // socket: Pingora closes a connection that sent bytes past a request instead.
            let stream = match stream.into_any().downcast::<GuardedStream>() {
                Ok(mut guarded) => {
                    guarded.start_head(self.head_limits());
                    guarded as Stream
                }
                Err(_) => {
                    tracing::warn!("client stream lost its guard; closing the connection");
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.inner.process_new_http(session, shutdown).await;
        }
        None
    }

    /// Runs once the listeners stopped: closes the connections waiting for a request, after
    /// [`LAST_CALL`].
    async fn cleanup(&self) {
        tokio::time::sleep(LAST_CALL).await;
        self.inner.http_cleanup().await;
    }
}

impl<A> EdgeApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Serves an HTTP/2 connection, closed if its first request has not reached the proxy by
    /// the head deadline (counted as `header_timeout`; there is no stream to answer on).
    async fn serve_h2(
        self: &Arc<Self>,
        guarded: GuardedStream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let deadline = guarded.head_deadline();
        let addresses = guarded.get_socket_digest().and_then(|d| {
            let peer = *d.peer_addr()?.as_inet()?;
            let local = *d.local_addr()?.as_inet()?;
            Some((peer, local))
        });
        let (Some(at), Some((peer, local))) = (deadline, addresses) else {
            return self.hand_over(guarded, shutdown).await;
        };
        let first = h2_first::FirstRequest::register(peer, local);
        let serve = self.hand_over(guarded, shutdown);
        tokio::pin!(serve);
        tokio::select! {
            biased;
            result = &mut serve => return result,
            () = first.arrived() => {}
            () = tokio::time::sleep_until(at) => {
                // Dropping the connection's task closes it.
                self.metrics.rejected(crate::observe::Rejection::HeaderTimeout);
                return None;
            }
        }
        drop(first);
        serve.await
    }

    /// Hands a non-HTTP/1 connection to the application's own dispatch (HTTP/2, custom ALPN).
    async fn hand_over(
        self: &Arc<Self>,
        mut guarded: GuardedStream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        guarded.open();
        ServerApp::process_new(&self.inner, Box::new(guarded), shutdown).await
    }
}

/// Tells the guard of an HTTP/1 session's connection that the proxy's hooks have its request,
/// so that the answer written next is not taken for Pingora's refusal of the head (see
/// [`GuardedStream`]); for HTTP/2, that its connection's first request came in time. Called
/// first thing in the proxy's first hook. Subrequests have no connection: nothing to do.
pub fn request_reached_proxy(session: &ServerSession) {
    if session.is_http2() {
        let peer = session.client_addr().and_then(|a| a.as_inet());
        let local = session.server_addr().and_then(|a| a.as_inet());
        if let (Some(peer), Some(local)) = (peer, local) {
            h2_first::request_arrived(*peer, *local);
        }
        return;
    }
    let guard = session
        .stream()
        .and_then(|stream| (**stream).as_any().downcast_ref::<GuardedStream>());
    if let Some(guard) = guard {
        guard.reached_proxy();
    }
}

fn head_limits(limits: &Limits) -> HeadLimits {
    HeadLimits {
        max_bytes: limits.max_header_bytes,
        timeout: limits.client_header_timeout,
        // Whole seconds, at least one, as Pingora's keep-alive timeout counted it.
        idle: Duration::from_secs(limits.idle_timeout.as_secs().max(1)),
    }
}
