//! The per-target circuit breaker (closed → open → half-open → closed), and the bucketed sliding
//! window of counts it shares with the retry budget.
//!
//! Time is always an argument (`now`), never read here, so tests drive a fake clock and the caller
//! reads the clock once per request.
//!
//! # Semantics
//! - **Closed**: every admitted request's outcome goes into a sliding window of `window`, kept as
//!   [`BUCKETS`] buckets of `window / BUCKETS` each, so old outcomes age out one bucket at a time
//!   (an outcome counts for between 0.9 × `window` and `window`). When the window holds at least
//!   `min_requests` outcomes and `failures / total >= failure_ratio`, the circuit opens. This is
//!   checked on every report, success or failure, exactly as the rule reads.
//! - **Open**: requests are rejected, with `retry_after` = time left until half-open.
//! - **Half-open** (once `open_for` has passed): at most `half_open_probes` probes in flight at a
//!   time; any probe failure reopens for another `open_for`; `half_open_probes` probe successes
//!   close the circuit with an empty window.
//!
//! # Outcomes of requests admitted in an earlier state
//! Every admission carries a [`Ticket`] stamped with the circuit's *generation*, a number bumped
//! on every state change (and on every new half-open round). [`Circuit::record`] only counts an
//! outcome whose ticket has the current generation; anything else is dropped. So:
//! - a slow request admitted while closed that finishes after the circuit opened, or while it is
//!   half-open, neither consumes a probe slot nor counts as a probe result: half-open decides on
//!   probes only;
//! - a request from an earlier closed period never lands in the fresh window of a later one (that
//!   window starts empty on purpose: the failures that opened the circuit are already paid for);
//! - a late probe from an earlier half-open round does not count toward the current round.
//!
//! A `record(success, now)` without a ticket cannot tell these apart (a stale outcome arriving
//! during half-open would be indistinguishable from a probe's, steal its slot and decide the
//! round), hence the ticket; sony/gobreaker guards its half-open state the same way.
//!
//! # Transitions
//! Each is reported once, by the call that made it: closed → open, half-open → open and
//! half-open → closed by [`Circuit::record`]; open → half-open, which time alone causes, by the
//! [`Admission`] that took the first probe ([`Admission::transition`]). [`Circuit::state`] already
//! reads half-open once `open_for` has passed, before that first probe arrives.
//!
//! # Lost probes
//! A probe whose outcome is never reported (the request was dropped) would hold its slot forever
//! and wedge the circuit half-open. So when every probe slot is taken and no probe has been
//! admitted or reported for `open_for`, the in-flight probes are presumed lost: a new round starts
//! (new generation, all slots free, success count back to zero) and late reports from the old
//! round are ignored. Callers should still report every probe; this is only a backstop.
//!
//! # Cost
//! Admission while closed is one atomic load (the state and generation are mirrored in one
//! `AtomicU64`), no lock. Reports, and admissions while open or half-open, take a `std` mutex for
//! a few dozen instructions. Nothing allocates after [`Circuit::new`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::window::Window;
pub use super::window::BUCKETS;

/// `[upstreams.NAME.circuit_breaker]`, in run-time form. Equal (and hashed) by value, the ratio
/// by its bits, so it can key state kept across reloads.
#[derive(Debug, Clone, Copy)]
pub struct CircuitSettings {
    /// Share of failures over `window` that opens the circuit, in (0, 1].
    pub failure_ratio: f64,
    /// Fewer outcomes than this in the window never open the circuit.
    pub min_requests: u32,
    pub window: Duration,
    /// How long an open circuit rejects requests before letting probes through.
    pub open_for: Duration,
    /// Probes in flight at a time while half-open; that many successes close the circuit.
    pub half_open_probes: u32,
}

impl CircuitSettings {
    fn key(&self) -> (u64, u32, Duration, Duration, u32) {
        let s = self;
        let ratio = s.failure_ratio.to_bits();
        (
            ratio,
            s.min_requests,
            s.window,
            s.open_for,
            s.half_open_probes,
        )
    }
}

impl PartialEq for CircuitSettings {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for CircuitSettings {}

impl std::hash::Hash for CircuitSettings {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl CircuitSettings {
    /// Checks the ranges the state machine relies on. The message names the offending key as it
    /// appears in the config file.
    pub fn validate(&self) -> Result<(), String> {
        // Written so that NaN fails too.
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(format!(
                "failure_ratio must be in (0, 1], got {}",
                self.failure_ratio
            ));
        }
        if self.min_requests < 1 {
            return Err("min_requests must be at least 1".into());
        }
        if self.half_open_probes < 1 {
            return Err("half_open_probes must be at least 1".into());
        }
        if self.window.is_zero() {
            return Err("window must be greater than 0".into());
        }
        if self.open_for.is_zero() {
            return Err("open_for must be greater than 0".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// Value of the `tollgate_upstream_circuit_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_metric(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }

    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn code(self) -> u64 {
        self.as_metric() as u64
    }
}

/// Proof of admission, handed back to [`Circuit::record`] with the outcome. Small and `Copy`:
/// keep it in the per-request context.
///
/// `Ticket::default()` is a ticket no circuit ever counts, for code paths that need an
/// [`Admission`] for a target without a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    probe: bool,
    /// This admission moved the circuit from open to half-open.
    began_half_open: bool,
}

impl Default for Ticket {
    fn default() -> Self {
        Ticket {
            // Above GENERATION_MASK: no circuit ever has this generation.
            generation: u64::MAX,
            probe: false,
            began_half_open: false,
        }
    }
}

impl Ticket {
    /// Whether this admission is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed(Ticket),
    /// A half-open probe: the caller must report its outcome (a dropped probe holds its slot
    /// until the lost-probe backstop frees it, `open_for` later).
    Probe(Ticket),
    /// Fail fast, no connection attempt. `retry_after` is the time left until half-open; zero
    /// when the circuit is already half-open and all probe slots are taken (the outcome is due
    /// as soon as the probes answer).
    Rejected {
        retry_after: Duration,
    },
}

impl Admission {
    /// The ticket to report the outcome with, unless rejected.
    pub fn ticket(&self) -> Option<Ticket> {
        match self {
            Admission::Allowed(t) | Admission::Probe(t) => Some(*t),
            Admission::Rejected { .. } => None,
        }
    }

    /// `Some((Open, HalfOpen))` for the one admission that moved the circuit to half-open (the
    /// first probe): that is the time-driven transition, so it is reported here, exactly once,
    /// rather than by [`Circuit::record`].
    pub fn transition(&self) -> Option<(CircuitState, CircuitState)> {
        match self {
            Admission::Probe(t) if t.began_half_open => {
                Some((CircuitState::Open, CircuitState::HalfOpen))
            }
            _ => None,
        }
    }
}

/// One target's circuit breaker. Share it by reference (`Arc<Circuit>`) between worker threads.
#[derive(Debug)]
pub struct Circuit {
    settings: CircuitSettings,
    /// `generation << 2 | state code`, a copy of `inner`'s state written under the lock, read
    /// without it on the closed fast path. One word, so state and generation are read together.
    mode: AtomicU64,
    /// While open: when probes may go, in nanoseconds since `born`; written before `mode`, so a
    /// reader that sees "open" in `mode` sees this round's time. Lets [`Circuit::view`] report
    /// the state without the lock.
    probe_at: AtomicU64,
    born: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    generation: u64,
    /// Successes in slot 0, failures in slot 1. Only meaningful while closed.
    window: Window,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
        /// Last probe admitted or reported, for the lost-probe backstop.
        last_activity: Instant,
    },
}

const STATE_MASK: u64 = 0b11;
/// Generations wrap within the 62 bits `mode` has room for (after 4.6e18 state changes, i.e.
/// never), so the fast path's copy and the locked one always compare equal.
const GENERATION_MASK: u64 = u64::MAX >> 2;

impl Circuit {
    pub fn new(settings: CircuitSettings, now: Instant) -> Circuit {
        Circuit {
            settings,
            mode: AtomicU64::new(CircuitState::Closed.code()),
            probe_at: AtomicU64::new(0),
            born: now,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                generation: 0,
                window: Window::new(settings.window, now),
            }),
        }
    }

    pub fn settings(&self) -> &CircuitSettings {
        &self.settings
    }

    /// Whether a request may go to this target now. Open → rejected until `open_for` has passed,
    /// then half-open; half-open lets at most `half_open_probes` requests through at a time,
    /// others rejected.
    pub fn admit(&self, now: Instant) -> Admission {
        let mode = self.mode.load(Ordering::Acquire);
        if mode & STATE_MASK == CircuitState::Closed.code() {
            return Admission::Allowed(Ticket {
                generation: mode >> 2,
                probe: false,
                began_half_open: false,
            });
        }
        let mut inner = self.lock();
        let s = &self.settings;
        match inner.phase {
            Phase::Closed => Admission::Allowed(inner.ticket(false)),
            Phase::Open { since } => {
                let open = now.saturating_duration_since(since);
                if open < s.open_for {
                    return Admission::Rejected {
                        retry_after: s.open_for - open,
                    };
                }
                self.enter(&mut inner, half_open(1, now));
                Admission::Probe(Ticket {
                    began_half_open: true,
                    ..inner.ticket(true)
                })
            }
            Phase::HalfOpen {
                in_flight,
                successes,
                last_activity,
            } => {
                if in_flight >= s.half_open_probes {
                    if now.saturating_duration_since(last_activity) < s.open_for {
                        return Admission::Rejected {
                            retry_after: Duration::ZERO,
                        };
                    }
                    // Lost-probe backstop: a new round, same state (not a transition).
                    self.enter(&mut inner, half_open(1, now));
                    return Admission::Probe(inner.ticket(true));
                }
                inner.phase = Phase::HalfOpen {
                    in_flight: in_flight + 1,
                    successes,
                    last_activity: now,
                };
                Admission::Probe(inner.ticket(true))
            }
        }
    }

    /// Non-consuming check for target selection: whether [`Circuit::admit`] would let a request
    /// through now (takes no probe slot, changes nothing).
    pub fn is_available(&self, now: Instant) -> bool {
        if self.mode.load(Ordering::Acquire) & STATE_MASK == CircuitState::Closed.code() {
            return true;
        }
        let inner = self.lock();
        let s = &self.settings;
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { since } => now.saturating_duration_since(since) >= s.open_for,
            Phase::HalfOpen {
                in_flight,
                last_activity,
                ..
            } => {
                in_flight < s.half_open_probes
                    || now.saturating_duration_since(last_activity) >= s.open_for
            }
        }
    }

    /// Outcome of an admitted request. Returns `Some((from, to))` when this call changed the
    /// state, so the caller logs once and counts `tollgate_upstream_circuit_transitions_total`.
    /// Outcomes of requests admitted in an earlier state are ignored (see the module docs).
    pub fn record(
        &self,
        ticket: Ticket,
        success: bool,
        now: Instant,
    ) -> Option<(CircuitState, CircuitState)> {
        let mut inner = self.lock();
        if ticket.generation != inner.generation {
            return None;
        }
        let s = &self.settings;
        match inner.phase {
            Phase::Closed => {
                inner.window.add(now, if success { [1, 0] } else { [0, 1] });
                let [successes, failures] = inner.window.totals(now);
                let total = successes + failures;
                // Division, not `ratio * total`: a correctly rounded quotient equals the literal
                // ratio exactly when it should (10 / 20 == 0.5, 3 / 10 == 0.3).
                if total >= u64::from(s.min_requests)
                    && failures as f64 / total as f64 >= s.failure_ratio
                {
                    self.enter(&mut inner, Phase::Open { since: now });
                    return Some((CircuitState::Closed, CircuitState::Open));
                }
                None
            }
            // No ticket is ever issued while open, so a matching generation cannot happen.
            Phase::Open { .. } => None,
            Phase::HalfOpen {
                in_flight,
                successes,
                ..
            } => {
                // Cannot happen (non-probe tickets are issued only while closed, and entering
                // half-open bumps the generation), but a non-probe must never count as a probe.
                if !ticket.probe {
                    return None;
                }
                if !success {
                    self.enter(&mut inner, Phase::Open { since: now });
                    return Some((CircuitState::HalfOpen, CircuitState::Open));
                }
                let successes = successes + 1;
                if successes >= s.half_open_probes {
                    inner.window.clear(now);
                    self.enter(&mut inner, Phase::Closed);
                    return Some((CircuitState::HalfOpen, CircuitState::Closed));
                }
                inner.phase = Phase::HalfOpen {
                    in_flight: in_flight.saturating_sub(1),
                    successes,
                    last_activity: now,
                };
                None
            }
        }
    }

    /// Time left until an open circuit lets probes through, for a `Retry-After` header; `None`
    /// when the circuit is not open (closed, half-open, or open with `open_for` already passed).
    pub fn retry_after(&self, now: Instant) -> Option<Duration> {
        if self.mode.load(Ordering::Acquire) & STATE_MASK == CircuitState::Closed.code() {
            return None;
        }
        match self.lock().phase {
            Phase::Open { since } => self
                .settings
                .open_for
                .checked_sub(now.saturating_duration_since(since))
                .filter(|left| !left.is_zero()),
            Phase::Closed | Phase::HalfOpen { .. } => None,
        }
    }

    /// The state as of `now`, for the gauge and for logs. An open circuit whose `open_for` has
    /// passed reads as half-open even before a request arrives to take the first probe.
    pub fn state(&self, now: Instant) -> CircuitState {
        if self.mode.load(Ordering::Acquire) & STATE_MASK == CircuitState::Closed.code() {
            return CircuitState::Closed;
        }
        let inner = self.lock();
        match inner.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { since } => {
                if now.saturating_duration_since(since) >= self.settings.open_for {
                    CircuitState::HalfOpen
                } else {
                    CircuitState::Open
                }
            }
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// The state as of `now` and, while open, the time until probes go through, read from
    /// atomics only: for the status page, which must not contend with requests for the lock.
    /// Agrees with [`Circuit::state`] and [`Circuit::retry_after`].
    pub fn view(&self, now: Instant) -> (CircuitState, Option<Duration>) {
        let mode = self.mode.load(Ordering::Acquire) & STATE_MASK;
        if mode == CircuitState::Closed.code() {
            return (CircuitState::Closed, None);
        }
        if mode == CircuitState::HalfOpen.code() {
            return (CircuitState::HalfOpen, None);
        }
        let probe_at = self.born + Duration::from_nanos(self.probe_at.load(Ordering::Relaxed));
        match probe_at.checked_duration_since(now) {
            Some(left) if !left.is_zero() => (CircuitState::Open, Some(left)),
            _ => (CircuitState::HalfOpen, None),
        }
    }

    /// Switches phase under the lock, bumping the generation so that every ticket issued before
    /// is stale, and mirrors the result into `mode`.
    fn enter(&self, inner: &mut Inner, phase: Phase) {
        inner.phase = phase;
        inner.generation = inner.generation.wrapping_add(1) & GENERATION_MASK;
        let state = match phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { since } => {
                let at = (since + self.settings.open_for).saturating_duration_since(self.born);
                let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
                self.probe_at.store(nanos, Ordering::Relaxed);
                CircuitState::Open
            }
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        };
        self.mode
            .store(inner.generation << 2 | state.code(), Ordering::Release);
    }

    /// No code path panics while holding the lock, but a poisoned lock must not take the target
    /// down with it: the counts stay consistent at every instruction boundary that can unwind.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn ticket(&self, probe: bool) -> Ticket {
        Ticket {
            generation: self.generation,
            probe,
            began_half_open: false,
        }
    }
}

fn half_open(in_flight: u32, now: Instant) -> Phase {
    Phase::HalfOpen {
        in_flight,
        successes: 0,
        last_activity: now,
    }
}

#[cfg(test)]
mod tests;
