//! A fault-injecting TCP proxy on 127.0.0.1 to stand between the gateway and a backend (a
//! small stand-in for toxiproxy): pass-through, added latency, connection reset, refused
//! connections, accept-then-blackhole, slow close, and a reset in the middle of a response.
//!
//! A fault is read when a connection is accepted and stays with that connection for its whole
//! life: `set_fault` changes what *new* connections get. A connection the gateway keeps in its
//! pool therefore keeps its old behaviour; call [`FaultyProxy::kill_connections`] (a crashed
//! process: every open connection is reset) to make the gateway reconnect. Two exceptions:
//! `Refuse` closes the listening socket at once (open connections are left alone), and a
//! blackholed connection is closed as soon as the fault is set to anything but `Blackhole`.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// What the proxy does to connections accepted from now on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Plain pass-through. Half-closes are passed on both ways; a reset or error on either
    /// side resets the client connection. An unreachable upstream shows as a reset too (not
    /// as ECONNREFUSED: the client's connection was accepted).
    None,
    /// Every chunk read from either side is written to the other side this much later (so a
    /// request/response exchange takes at least twice this; throughput is not limited).
    Latency(Duration),
    /// Accept, wait for the client's first bytes (at most 1 s), then close with RST
    /// (SO_LINGER 0) without forwarding anything: the client sees its connection reset after
    /// sending, not in `connect`. The upstream is never contacted.
    Reset,
    /// The listening socket is closed: connecting gives ECONNREFUSED (connections the kernel
    /// had queued but not yet handed over are reset). Setting any other fault binds the same
    /// port again. Connections already open are left alone (see `kill_connections`).
    Refuse,
    /// Accept and read everything, never connect upstream, never answer, never close (not even
    /// after the client closed its side, so `active` keeps counting it) until the fault is set
    /// to anything else or the proxy is dropped.
    Blackhole,
    /// Pass-through, but once the upstream has finished sending (EOF), wait this long before
    /// passing the close on to the client.
    SlowClose(Duration),
    /// Pass-through until this many response bytes (upstream to client) were forwarded, then
    /// reset the client connection (RST) and close the upstream one: a backend dying in the
    /// middle of a response. A shorter response passes through unharmed.
    ResetAfterResponseBytes(usize),
}

/// A running proxy. Dropping it closes the listening socket at once and ends every task and
/// connection (aborted; connections are closed as their tasks are dropped).
pub struct FaultyProxy {
    /// The address clients (the gateway) connect to; it stays the same across `Refuse`.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// Where connections are forwarded.
    upstream: SocketAddr,
    state: Mutex<State>,
    control: watch::Sender<Control>,
    connections: AtomicUsize,
    active: AtomicUsize,
}

struct State {
    fault: Fault,
    listener: Listener,
    /// The accept loop, parked while the listener is closed.
    waker: Option<Waker>,
    /// Set by `Drop`: never bind again.
    shut: bool,
}

enum Listener {
    Closed,
    /// Bound (synchronously, in `set_fault`), not yet registered with the runtime.
    Std(std::net::TcpListener),
    Tokio(TcpListener),
}

/// What open connections watch for.
#[derive(Clone, Copy)]
struct Control {
    /// Bumped by `kill_connections`: connections accepted before reset.
    kills: u64,
    /// Bumped by every `set_fault` to something other than `Blackhole`: blackholed
    /// connections accepted before close.
    lifts: u64,
}

impl FaultyProxy {
    /// Starts a proxy on 127.0.0.1 (a port of its own) forwarding to `upstream`, no fault.
    pub async fn start(upstream: SocketAddr) -> FaultyProxy {
        let listener = tollgate_testkit::ports::loopback_listener();
        listener.set_nonblocking(true).expect("nonblocking proxy");
        let addr = listener.local_addr().expect("proxy local addr");
        let (control, _) = watch::channel(Control { kills: 0, lifts: 0 });
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                fault: Fault::None,
                listener: Listener::Std(listener),
                waker: None,
                shut: false,
            }),
            control,
            connections: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(shared.clone()));
        FaultyProxy { addr, shared, task }
    }

    /// `127.0.0.1:PORT`, as written in a config's `targets`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// The fault new connections get.
    pub fn fault(&self) -> Fault {
        self.shared.lock().fault
    }

    /// Sets the fault for connections accepted from now on (see the module docs for what
    /// happens to open ones). `Refuse` has closed the port when this returns; leaving `Refuse`
    /// has bound it again when this returns (retrying for up to 2 s, blocking the caller's
    /// thread meanwhile; panics if the port stays taken).
    pub fn set_fault(&self, fault: Fault) {
        let mut st = self.shared.lock();
        st.fault = fault;
        if fault == Fault::Refuse {
            st.listener = Listener::Closed;
        } else if matches!(st.listener, Listener::Closed) && !st.shut {
            st.listener = Listener::Std(rebind(self.addr));
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
        drop(st);
        if fault != Fault::Blackhole {
            self.shared.control.send_modify(|c| c.lifts += 1);
        }
    }

    /// Resets (RST) every connection open now, on the client side, and closes its upstream
    /// side: a crashed process. The fault and the listener are unchanged.
    pub fn kill_connections(&self) {
        self.shared.control.send_modify(|c| c.kills += 1);
    }

    /// TCP connections accepted so far (including reset and blackholed ones).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed by the proxy.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.shut = true;
        st.listener = Listener::Closed;
        drop(st);
        // Dropping the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts on the current listener, if any; returns the stream with the fault in force at
    /// that moment (read under the same lock, so `set_fault` and accepting never interleave).
    fn poll_accept(&self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<(TcpStream, Fault)>> {
        let mut st = self.lock();
        if matches!(st.listener, Listener::Std(_)) {
            let Listener::Std(l) = std::mem::replace(&mut st.listener, Listener::Closed) else {
                unreachable!()
            };
            st.listener = Listener::Tokio(TcpListener::from_std(l)?);
        }
        let fault = st.fault;
        if let Listener::Tokio(l) = &st.listener {
            if let Poll::Ready(r) = l.poll_accept(cx) {
                return Poll::Ready(r.map(|(s, _)| (s, fault)));
            }
        }
        // Also when waiting on a listener: `set_fault(Refuse)` may drop it, and leaving
        // `Refuse` must then wake this loop to register the new one.
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn bind_nonblocking(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    // std sets SO_REUSEADDR on Unix, so the same port can be bound again despite TIME_WAIT.
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn rebind(addr: SocketAddr) -> std::net::TcpListener {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        match bind_nonblocking(addr) {
            Ok(l) => return l,
            Err(e) if Instant::now() >= end => panic!("faulty proxy: rebind {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Decrements `active` when a connection task ends, however it ends (also when aborted).
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = poll_fn(|cx| shared.poll_accept(cx)) => match accepted {
                Ok((stream, fault)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    shared.active.fetch_add(1, Ordering::SeqCst);
                    let guard = ActiveGuard(shared.clone());
                    let control = shared.control.subscribe();
                    let upstream = shared.upstream;
                    tasks.spawn(async move {
                        let _guard = guard;
                        connection(stream, upstream, fault, control).await;
                    });
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// How a connection ends.
enum End {
    /// Drop both sockets (a normal close).
    Close,
    /// Reset the client side (SO_LINGER 0), drop the upstream side.
    Reset,
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    mut control: watch::Receiver<Control>,
) {
    let _ = client.set_nodelay(true);
    let at_accept = *control.borrow_and_update();
    let mut up: Option<TcpStream> = None;
    let end = {
        let work = serve(&mut client, &mut up, upstream, fault);
        let interrupted = async {
            loop {
                if control.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let now = *control.borrow_and_update();
                if now.kills != at_accept.kills {
                    return End::Reset;
                }
                if fault == Fault::Blackhole && now.lifts != at_accept.lifts {
                    return End::Close;
                }
            }
        };
        tokio::select! {
            end = work => end,
            end = interrupted => end,
        }
    };
    if let End::Reset = end {
        let _ = client.set_zero_linger();
    }
    drop(client);
    drop(up);
}

async fn serve(
    client: &mut TcpStream,
    up: &mut Option<TcpStream>,
    upstream: SocketAddr,
    fault: Fault,
) -> End {
    let (delay, limit, close_delay) = match fault {
        Fault::Reset | Fault::Refuse => {
            // Wait for the request to start (at most 1 s), so the client sees the reset after
            // sending, not already in `connect`.
            let mut buf = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(1), client.peek(&mut buf)).await;
            return End::Reset;
        }
        Fault::Blackhole => {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            // Half-closed (or failed): still never answer, never close.
            return std::future::pending().await;
        }
        Fault::None => (Duration::ZERO, None, Duration::ZERO),
        Fault::Latency(d) => (d, None, Duration::ZERO),
        Fault::SlowClose(d) => (Duration::ZERO, None, d),
        Fault::ResetAfterResponseBytes(n) => (Duration::ZERO, Some(n), Duration::ZERO),
    };
    // An unreachable upstream shows as a reset, not as a clean close.
    let Ok(stream) = TcpStream::connect(upstream).await else {
        return End::Reset;
    };
    let _ = stream.set_nodelay(true);
    let stream = up.insert(stream);
    let (cr, cw) = client.split();
    let (ur, uw) = stream.split();
    let to_upstream = pump(cr, uw, delay, None, Duration::ZERO);
    let to_client = pump(ur, cw, delay, limit, close_delay);
    tokio::pin!(to_upstream, to_client);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut to_upstream, if !up_done => match r {
                Ok(_) => up_done = true,
                Err(_) => return End::Reset,
            },
            r = &mut to_client, if !down_done => match r {
                Ok(Pumped::Eof) => down_done = true,
                Ok(Pumped::LimitReached) => {
                    // Let the bytes just written leave before the RST discards the send queue.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return End::Reset;
                }
                Err(_) => return End::Reset,
            },
        }
    }
    End::Close
}

enum Pumped {
    /// The reader hit EOF and the writer was shut down (after `close_delay`).
    Eof,
    /// `limit` bytes were written.
    LimitReached,
}

/// Copies `r` to `w`, each chunk `delay` after it was read (reading goes on meanwhile), at most
/// `limit` bytes; on EOF waits `close_delay`, then shuts `w` down.
async fn pump<R, W>(
    mut r: R,
    mut w: W,
    delay: Duration,
    limit: Option<usize>,
    close_delay: Duration,
) -> io::Result<Pumped>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(64);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        // Closing the channel tells the writer to finish (and shut down) after the queue.
        drop(tx);
        Ok::<_, io::Error>(())
    };
    let writer = async move {
        let mut left = limit;
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let take = left.map_or(chunk.len(), |l| l.min(chunk.len()));
            w.write_all(&chunk[..take]).await?;
            if let Some(l) = left.as_mut() {
                *l -= take;
                if *l == 0 {
                    w.flush().await?;
                    return Ok(Pumped::LimitReached);
                }
            }
        }
        if !close_delay.is_zero() {
            tokio::time::sleep(close_delay).await;
        }
        w.shutdown().await?;
        Ok(Pumped::Eof)
    };
    tokio::pin!(reader, writer);
    let mut reader_done = false;
    loop {
        tokio::select! {
            r = &mut reader, if !reader_done => {
                r?;
                reader_done = true;
            }
            done = &mut writer => return done,
        }
    }
}
