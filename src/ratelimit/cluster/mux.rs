//! One Redis connection shared by every concurrent check, driven by the checks themselves.
//!
//! A check queues its command and waits for its reply. Whoever finds the connection idle drives
//! it: writes everything queued, reads replies and hands each to its waiter, in order (Redis
//! answers in the order it was asked), until its own reply is in; then it passes the connection
//! to the next waiter. Alone, a check writes its command and reads its reply on its own task:
//! one round trip, no hand-off to a connection task. Under load, one read brings the replies of
//! many checks and one write carries many commands, so the system calls per check stay below one
//! each. Redis serves one command at a time anyway: one connection is enough.

use super::conn::{Conn, ConnError};
use super::resp::Reply;
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection failed (closed, reset, cut mid-write, given up after a timeout) before
    /// this call's reply came: a new connection may answer it.
    Lost(String),
    /// The connection delivered something that is not a reply.
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lost(why) | Failure::Protocol(why) => f.write_str(why),
        }
    }
}

impl From<ConnError> for Failure {
    fn from(e: ConnError) -> Failure {
        match e {
            ConnError::Protocol(e) => Failure::Protocol(e.to_string()),
            other => Failure::Lost(other.to_string()),
        }
    }
}

/// A shared connection.
pub struct Mux {
    state: Mutex<State>,
    /// Wakes a driver waiting for replies when a command is queued.
    queued: tokio::sync::Notify,
}

struct State {
    /// The connection while nobody drives it (`None` while a call drives it, and once broken).
    conn: Option<Conn>,
    /// Commands queued and not written yet.
    outgoing: Vec<u8>,
    /// The calls whose commands were queued, in wire order: the front gets the next reply.
    waiting: VecDeque<Arc<Slot>>,
    /// A call drives the connection (or was handed it and will).
    driving: bool,
    /// Set once the connection failed: it is never used again.
    broken: Option<Failure>,
}

/// Where a call's reply lands.
#[derive(Default)]
struct Slot {
    result: Mutex<Option<Result<Reply, Failure>>>,
    /// The call is handed the connection and should drive it.
    drive: AtomicBool,
    /// The call is gone (timed out): its reply is read and dropped, it never drives.
    abandoned: AtomicBool,
    waker: AtomicWaker,
}

impl Slot {
    fn finish(&self, result: Result<Reply, Failure>) {
        *lock(&self.result) = Some(result);
        self.waker.wake();
    }

    /// For the driver's own reply: its task is running, and waking it would only poll the
    /// whole request once more for nothing.
    fn finish_quietly(&self, result: Result<Reply, Failure>) {
        *lock(&self.result) = Some(result);
    }

    fn is_finished(&self) -> bool {
        lock(&self.result).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mux {
    pub fn new(conn: Conn) -> Mux {
        Mux {
            state: Mutex::new(State {
                conn: Some(conn),
                outgoing: Vec::new(),
                waiting: VecDeque::new(),
                driving: false,
                broken: None,
            }),
            queued: tokio::sync::Notify::new(),
        }
    }

    /// Whether the connection failed (a new one is needed).
    pub fn is_broken(&self) -> bool {
        lock(&self.state).broken.is_some()
    }

    /// Gives the connection up (its calls fail as `Lost`): after a timeout, nothing says it
    /// will ever answer again.
    pub fn give_up(&self, why: &str) {
        self.break_with(Failure::Lost(why.to_string()));
    }

    /// Sends one command and waits for its reply. Cancel-safe: a call dropped while waiting or
    /// driving leaves the connection usable (or broken, if it was cut mid-write).
    pub async fn call(&self, command: &[u8]) -> Result<Reply, Failure> {
        let slot = Arc::new(Slot::default());
        let driven_by_another = {
            let mut st = lock(&self.state);
            if let Some(failure) = &st.broken {
                return Err(failure.clone());
            }
            st.outgoing.extend_from_slice(command);
            st.waiting.push_back(slot.clone());
            if !st.driving {
                st.driving = true;
                slot.drive.store(true, Ordering::Release);
            }
            st.conn.is_none()
        };
        if driven_by_another {
            // The driver may be waiting for replies: it writes this command now.
            self.queued.notify_one();
        }
        let mut guard = CallGuard {
            mux: self,
            slot: &slot,
            done: false,
        };
        loop {
            match (Wait { slot: &slot }).await {
                Woken::Done(result) => {
                    guard.done = true;
                    return result;
                }
                Woken::Drive => self.drive(&slot).await,
            }
        }
    }

    /// Drives the connection until `own` has its reply or the connection fails.
    async fn drive(&self, own: &Arc<Slot>) {
        let Some(conn) = lock(&self.state).conn.take() else {
            return; // broken: every waiter, `own` included, has its failure
        };
        let mut driver = Driver {
            mux: self,
            own,
            conn: Some(conn),
            writing: false,
        };
        if let Err(failure) = driver.run().await {
            driver.conn = None;
            self.break_with(failure);
        }
    }

    /// Marks the connection broken and fails every waiting call.
    fn break_with(&self, failure: Failure) {
        let waiting = {
            let mut st = lock(&self.state);
            if st.broken.is_none() {
                st.broken = Some(failure.clone());
            }
            st.conn = None;
            std::mem::take(&mut st.waiting)
        };
        for slot in waiting {
            slot.finish(Err(failure.clone()));
        }
        // A driver blocked on a read of this connection stops waiting.
        self.queued.notify_one();
    }

    /// Gives the connection to the first waiter still there, or leaves it idle.
    fn hand_off(&self, conn: Option<Conn>, except: &Arc<Slot>) {
        let next = {
            let mut st = lock(&self.state);
            if st.broken.is_some() {
                return;
            }
            if let Some(conn) = conn {
                st.conn = Some(conn);
            }
            let next = st
                .waiting
                .iter()
                .find(|s| !Arc::ptr_eq(s, except) && !s.abandoned.load(Ordering::Acquire))
                .cloned();
            if next.is_none() {
                st.driving = false;
            }
            next
        };
        if let Some(next) = next {
            next.drive.store(true, Ordering::Release);
            next.waker.wake();
        }
    }
}

/// A call driving the connection; hands it on when dropped (done, failed or cancelled).
struct Driver<'a> {
    mux: &'a Mux,
    own: &'a Arc<Slot>,
    conn: Option<Conn>,
    /// A write is under way: cancelled now, the stream would hold half a command.
    writing: bool,
}

impl Driver<'_> {
    async fn run(&mut self) -> Result<(), Failure> {
        let Driver {
            mux,
            own,
            conn,
            writing,
        } = self;
        let Some(conn) = conn.as_mut() else {
            return Ok(());
        };
        loop {
            let out = {
                let mut st = lock(&mux.state);
                if st.broken.is_some() {
                    return Ok(()); // given up meanwhile; its waiters have their failure
                }
                std::mem::take(&mut st.outgoing)
            };
            if !out.is_empty() {
                *writing = true;
                conn.write(&out).await?;
                *writing = false;
            }
            if own.is_finished() {
                return Ok(());
            }
            tokio::select! {
                biased;
                read = conn.read_more() => {
                    read?;
                    while let Some(reply) = conn.next_reply()? {
                        let slot = lock(&mux.state).waiting.pop_front();
                        match slot {
                            Some(slot) if Arc::ptr_eq(&slot, own) => slot.finish_quietly(Ok(reply)),
                            Some(slot) => slot.finish(Ok(reply)),
                            None => {
                                return Err(Failure::Protocol("a reply nobody asked for".into()))
                            }
                        }
                    }
                }
                _ = mux.queued.notified() => {}
            }
        }
    }
}

impl Drop for Driver<'_> {
    fn drop(&mut self) {
        if self.writing {
            self.conn = None;
            self.mux
                .break_with(Failure::Lost("a call was cut off while writing".into()));
            return;
        }
        self.mux.hand_off(self.conn.take(), self.own);
    }
}

/// Marks a call that went away before its reply, and passes on the connection if it had been
/// handed it.
struct CallGuard<'a> {
    mux: &'a Mux,
    slot: &'a Arc<Slot>,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.slot.abandoned.store(true, Ordering::Release);
        if self.slot.drive.swap(false, Ordering::AcqRel) {
            self.mux.hand_off(None, self.slot);
        }
    }
}

enum Woken {
    Done(Result<Reply, Failure>),
    Drive,
}

/// Waits until the slot has its reply or is handed the connection.
struct Wait<'a> {
    slot: &'a Slot,
}

impl Future for Wait<'_> {
    type Output = Woken;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woken> {
        self.slot.waker.register(cx.waker());
        if let Some(result) = lock(&self.slot.result).take() {
            return Poll::Ready(Woken::Done(result));
        }
        if self.slot.drive.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Woken::Drive);
        }
        Poll::Pending
    }
}
