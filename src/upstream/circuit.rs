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
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Admits one request at `now` and reports its outcome; returns the reported transition.
    fn run(c: &Circuit, success: bool, now: Instant) -> Option<(CircuitState, CircuitState)> {
        let ticket = c.admit(now).ticket().expect("admitted");
        c.record(ticket, success, now)
    }

    /// Opens a fresh circuit at `t0` with `min_requests` failures.
    fn opened(t0: Instant) -> Circuit {
        let c = Circuit::new(settings(), t0);
        for _ in 0..10 {
            run(&c, false, t0);
        }
        assert_eq!(c.state(t0), CircuitState::Open);
        c
    }

    fn probe(c: &Circuit, now: Instant) -> Ticket {
        match c.admit(now) {
            Admission::Probe(t) => t,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    use CircuitState::{Closed, HalfOpen, Open};

    #[test]
    fn view_agrees_with_state_and_retry_after_without_the_lock() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        assert_eq!(c.view(t0), (Closed, None));
        let c = opened(t0);
        for at in [
            t0,
            t0 + ms(1200),
            t0 + ms(4999),
            t0 + ms(5000),
            t0 + ms(9000),
        ] {
            assert_eq!(c.view(at), (c.state(at), c.retry_after(at)), "at {at:?}");
        }
        assert_eq!(c.view(t0 + ms(1200)), (Open, Some(ms(3800))));
        // A failed probe reopens for another `open_for`, counted from the failure.
        let t1 = t0 + ms(6000);
        c.record(probe(&c, t1), false, t1);
        assert_eq!(c.view(t1 + ms(1000)), (Open, Some(ms(4000))));
        let t2 = t1 + ms(5000);
        for _ in 0..3 {
            let ticket = probe(&c, t2);
            c.record(ticket, true, t2);
        }
        assert_eq!(c.view(t2), (Closed, None));
    }

    #[test]
    fn validate_rejects_out_of_range_settings() {
        assert!(settings().validate().is_ok());
        let bad = [
            CircuitSettings {
                failure_ratio: 0.0,
                ..settings()
            },
            CircuitSettings {
                failure_ratio: 1.5,
                ..settings()
            },
            CircuitSettings {
                failure_ratio: f64::NAN,
                ..settings()
            },
            CircuitSettings {
                min_requests: 0,
                ..settings()
            },
            CircuitSettings {
                half_open_probes: 0,
                ..settings()
            },
            CircuitSettings {
                window: Duration::ZERO,
                ..settings()
            },
            CircuitSettings {
                open_for: Duration::ZERO,
                ..settings()
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?} should be refused");
        }
        let edge = CircuitSettings {
            failure_ratio: 1.0,
            min_requests: 1,
            half_open_probes: 1,
            ..settings()
        };
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn metric_values() {
        assert_eq!(Closed.as_metric(), 0);
        assert_eq!(Open.as_metric(), 1);
        assert_eq!(HalfOpen.as_metric(), 2);
    }

    #[test]
    fn stays_closed_below_min_requests_even_at_full_failure() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        for i in 0..9 {
            assert_eq!(run(&c, false, t0 + ms(i)), None);
        }
        assert_eq!(c.state(t0 + ms(9)), Closed);
        assert!(matches!(c.admit(t0 + ms(9)), Admission::Allowed(_)));
    }

    #[test]
    fn opens_exactly_when_the_ratio_is_reached() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        // 6 successes then failures: 4/10, 4/11 ... the ratio reaches 0.5 at 6/12.
        for _ in 0..6 {
            assert_eq!(run(&c, true, t0), None);
        }
        for _ in 0..5 {
            assert_eq!(run(&c, false, t0), None);
            assert_eq!(c.state(t0), Closed);
        }
        assert_eq!(run(&c, false, t0), Some((Closed, Open)));
        assert_eq!(c.state(t0), Open);
    }

    #[test]
    fn ratio_is_compared_exactly_at_awkward_values() {
        let t0 = Instant::now();
        let c = Circuit::new(
            CircuitSettings {
                failure_ratio: 0.3,
                ..settings()
            },
            t0,
        );
        for _ in 0..7 {
            run(&c, true, t0);
        }
        for _ in 0..2 {
            assert_eq!(run(&c, false, t0), None);
        }
        // 3 / 10 == 0.3 exactly.
        assert_eq!(run(&c, false, t0), Some((Closed, Open)));
    }

    #[test]
    fn rejects_while_open_with_decreasing_retry_after() {
        let t0 = Instant::now();
        let c = opened(t0);
        let mut last = Duration::MAX;
        for step in [0, 1, 1000, 2500, 4999] {
            let now = t0 + ms(step);
            match c.admit(now) {
                Admission::Rejected { retry_after } => {
                    assert_eq!(retry_after, ms(5000 - step));
                    assert!(retry_after < last);
                    last = retry_after;
                }
                other => panic!("expected rejection at {step} ms, got {other:?}"),
            }
            assert!(!c.is_available(now));
            assert_eq!(c.state(now), Open);
            assert_eq!(c.retry_after(now), Some(ms(5000 - step)));
        }
        assert_eq!(c.retry_after(t0 + ms(5000)), None);
    }

    #[test]
    fn retry_after_only_while_open() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        assert_eq!(c.retry_after(t0), None);
        for _ in 0..10 {
            run(&c, false, t0);
        }
        assert_eq!(c.retry_after(t0 + ms(1)), Some(ms(4999)));
        let t = t0 + ms(5000);
        let _probes = [probe(&c, t), probe(&c, t), probe(&c, t)];
        assert_eq!(c.retry_after(t), None);
    }

    #[test]
    fn default_ticket_is_never_counted() {
        let t0 = Instant::now();
        let c = Circuit::new(
            CircuitSettings {
                min_requests: 1,
                ..settings()
            },
            t0,
        );
        assert_eq!(c.record(Ticket::default(), false, t0), None);
        assert_eq!(c.state(t0), Closed);
        assert_eq!(run(&c, false, t0), Some((Closed, Open)));
    }

    #[test]
    fn half_open_lets_exactly_the_probe_count_through() {
        let t0 = Instant::now();
        let c = opened(t0);
        let t = t0 + ms(5000);
        assert_eq!(c.state(t), HalfOpen);
        assert!(c.is_available(t));
        // is_available takes no slot.
        assert!(c.is_available(t));
        let first = c.admit(t);
        assert_eq!(first.transition(), Some((Open, HalfOpen)));
        assert!(first.ticket().is_some_and(|t| t.is_probe()));
        for _ in 0..2 {
            let a = c.admit(t);
            assert!(matches!(a, Admission::Probe(_)));
            assert_eq!(a.transition(), None);
        }
        assert!(!c.is_available(t));
        for _ in 0..5 {
            assert_eq!(
                c.admit(t + ms(1)),
                Admission::Rejected {
                    retry_after: Duration::ZERO
                }
            );
        }
        // A probe that answers frees its slot for one more.
        let first = first.ticket().expect("probe");
        assert_eq!(c.record(first, true, t + ms(2)), None);
        assert!(c.is_available(t + ms(2)));
        assert!(matches!(c.admit(t + ms(2)), Admission::Probe(_)));
        assert!(matches!(c.admit(t + ms(2)), Admission::Rejected { .. }));
    }

    #[test]
    fn one_failing_probe_reopens() {
        let t0 = Instant::now();
        let c = opened(t0);
        let t = t0 + ms(5000);
        let a = probe(&c, t);
        let b = probe(&c, t);
        assert_eq!(c.record(a, true, t + ms(10)), None);
        assert_eq!(c.record(b, false, t + ms(20)), Some((HalfOpen, Open)));
        // Open for another open_for from the failure.
        match c.admit(t + ms(20)) {
            Admission::Rejected { retry_after } => assert_eq!(retry_after, ms(5000)),
            other => panic!("expected rejection, got {other:?}"),
        }
        assert_eq!(c.state(t + ms(5019)), Open);
        assert_eq!(c.state(t + ms(5020)), HalfOpen);
        let again = c.admit(t + ms(5020));
        assert_eq!(again.transition(), Some((Open, HalfOpen)));
    }

    #[test]
    fn enough_successes_close_with_a_fresh_window() {
        let t0 = Instant::now();
        let c = opened(t0);
        let t = t0 + ms(5000);
        let probes = [probe(&c, t), probe(&c, t), probe(&c, t)];
        assert_eq!(c.record(probes[0], true, t), None);
        assert_eq!(c.record(probes[1], true, t), None);
        assert_eq!(c.state(t), HalfOpen);
        assert_eq!(c.record(probes[2], true, t), Some((HalfOpen, Closed)));
        assert_eq!(c.state(t), Closed);
        assert!(matches!(c.admit(t), Admission::Allowed(_)));
        // Fresh window: the 10 failures that opened it (still inside `window`) are gone, so it
        // takes min_requests new outcomes to open again.
        for _ in 0..9 {
            assert_eq!(run(&c, false, t + ms(1)), None);
        }
        assert_eq!(run(&c, false, t + ms(1)), Some((Closed, Open)));
    }

    #[test]
    fn old_failures_age_out_of_the_window() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        // 9 failures at t0: not enough to open.
        for _ in 0..9 {
            run(&c, false, t0);
        }
        // 10 s later (a full window) they have aged out: a single failure sees 1 outcome.
        assert_eq!(run(&c, false, t0 + ms(10_000)), None);
        for _ in 0..8 {
            assert_eq!(run(&c, false, t0 + ms(10_000)), None);
        }
        assert_eq!(c.state(t0 + ms(10_000)), Closed);
        // Still inside the window they count: 9 at t0 + 1 at 9.5 s opens.
        let c = Circuit::new(settings(), t0);
        for _ in 0..9 {
            run(&c, false, t0);
        }
        assert_eq!(run(&c, false, t0 + ms(9_500)), Some((Closed, Open)));
    }

    #[test]
    fn aging_is_by_bucket() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        // 5 failures in bucket 0, 4 in bucket 5 (5.0 s). At 10.0 s bucket 0 has aged out, so the
        // 10th failure sees 5 outcomes, not 10.
        for _ in 0..5 {
            run(&c, false, t0 + ms(999));
        }
        for _ in 0..4 {
            run(&c, false, t0 + ms(5_000));
        }
        assert_eq!(run(&c, false, t0 + ms(10_000)), None);
        // Bucket 5 ages out at 15.0 s, not before.
        assert_eq!(run(&c, false, t0 + ms(14_999)), None); // 4 + 1 + 1 = 6
        for _ in 0..3 {
            assert_eq!(run(&c, false, t0 + ms(14_999)), None);
        }
        assert_eq!(run(&c, false, t0 + ms(14_999)), Some((Closed, Open))); // 10
    }

    #[test]
    fn successes_dilute_failures() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        for i in 0..100 {
            // 1 failure in 3: below 0.5 forever.
            assert_eq!(run(&c, i % 3 != 0, t0 + ms(i * 10)), None);
        }
        assert_eq!(c.state(t0 + ms(1000)), Closed);
    }

    #[test]
    fn transitions_are_reported_exactly_once() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        let mut seen = Vec::new();
        let mut clock = t0;
        // Closed -> Open.
        for _ in 0..30 {
            seen.extend(run_any(&c, false, clock));
        }
        // Open -> HalfOpen -> Open (failing probe), then -> HalfOpen -> Closed.
        clock += ms(5000);
        for _ in 0..3 {
            seen.extend(run_any(&c, false, clock));
        }
        clock += ms(5000);
        for _ in 0..6 {
            seen.extend(run_any(&c, true, clock));
        }
        assert_eq!(
            seen,
            vec![
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed),
            ]
        );
    }

    /// Admits and reports if admitted; collects the transitions from both steps.
    fn run_any(c: &Circuit, success: bool, now: Instant) -> Vec<(CircuitState, CircuitState)> {
        let a = c.admit(now);
        let mut out: Vec<_> = a.transition().into_iter().collect();
        if let Some(t) = a.ticket() {
            out.extend(c.record(t, success, now));
        }
        out
    }

    #[test]
    fn concurrent_failures_report_the_opening_once() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        let tickets: Vec<_> = (0..20).filter_map(|_| c.admit(t0).ticket()).collect();
        let reported: Vec<_> = tickets
            .into_iter()
            .filter_map(|t| c.record(t, false, t0))
            .collect();
        assert_eq!(reported, vec![(Closed, Open)]);
    }

    #[test]
    fn stale_outcomes_do_not_touch_half_open_accounting() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        // Slow requests admitted while closed.
        let slow: Vec<_> = (0..6).filter_map(|_| c.admit(t0).ticket()).collect();
        for _ in 0..10 {
            run(&c, false, t0);
        }
        // Finishing while open: ignored, no transition, still open.
        assert_eq!(c.record(slow[0], true, t0 + ms(100)), None);
        assert_eq!(c.record(slow[1], false, t0 + ms(100)), None);
        assert_eq!(c.state(t0 + ms(100)), Open);

        let t = t0 + ms(5000);
        let p = [probe(&c, t), probe(&c, t), probe(&c, t)];
        // Finishing while half-open: a stale failure does not reopen, stale successes do not
        // close, and they do not free probe slots.
        assert_eq!(c.record(slow[2], false, t), None);
        assert_eq!(c.record(slow[3], true, t), None);
        assert_eq!(c.record(slow[4], true, t), None);
        assert_eq!(c.state(t), HalfOpen);
        assert!(!c.is_available(t));
        assert!(matches!(c.admit(t), Admission::Rejected { .. }));
        // The real probes decide.
        assert_eq!(c.record(p[0], true, t), None);
        assert_eq!(c.record(p[1], true, t), None);
        assert_eq!(c.record(p[2], true, t), Some((HalfOpen, Closed)));
        // Finishing after closing again: not counted in the fresh window either. 10 new failures
        // are needed, stale ones do not help.
        assert_eq!(c.record(slow[5], false, t), None);
        for _ in 0..9 {
            assert_eq!(run(&c, false, t), None);
        }
        assert_eq!(run(&c, false, t), Some((Closed, Open)));
    }

    #[test]
    fn late_probe_from_an_earlier_round_is_ignored() {
        let t0 = Instant::now();
        let c = opened(t0);
        let t = t0 + ms(5000);
        let slow_probe = probe(&c, t);
        let failing = probe(&c, t);
        assert_eq!(c.record(failing, false, t), Some((HalfOpen, Open)));
        let t2 = t + ms(5000);
        let fresh = probe(&c, t2);
        // The slow probe from the first round fails now: it must not reopen the second round.
        assert_eq!(c.record(slow_probe, false, t2), None);
        assert_eq!(c.state(t2), HalfOpen);
        assert_eq!(c.record(fresh, true, t2), None);
    }

    #[test]
    fn lost_probes_free_their_slots_after_open_for() {
        let t0 = Instant::now();
        let c = opened(t0);
        let t = t0 + ms(5000);
        let lost: Vec<_> = (0..3).map(|_| probe(&c, t)).collect();
        assert!(!c.is_available(t + ms(4999)));
        assert!(matches!(c.admit(t + ms(4999)), Admission::Rejected { .. }));
        // Nothing reported for open_for: a new round begins (not a state change).
        let t2 = t + ms(5000);
        assert!(c.is_available(t2));
        let fresh = c.admit(t2);
        assert!(matches!(fresh, Admission::Probe(_)));
        assert_eq!(fresh.transition(), None);
        assert_eq!(c.state(t2), HalfOpen);
        // The lost probes' late reports belong to the old round.
        assert_eq!(c.record(lost[0], false, t2), None);
        assert_eq!(c.state(t2), HalfOpen);
        let rest = [probe(&c, t2), probe(&c, t2)];
        assert_eq!(c.record(fresh.ticket().expect("probe"), true, t2), None);
        assert_eq!(c.record(rest[0], true, t2), None);
        assert_eq!(c.record(rest[1], true, t2), Some((HalfOpen, Closed)));
    }

    #[test]
    fn quiet_half_open_keeps_its_successes() {
        // Slots free, so nothing is lost: a long pause in traffic does not restart the round.
        let t0 = Instant::now();
        let c = opened(t0);
        let t = t0 + ms(5000);
        let first = probe(&c, t);
        assert_eq!(c.record(first, true, t), None);
        let later = t + ms(60_000);
        let rest = [probe(&c, later), probe(&c, later)];
        assert_eq!(c.record(rest[0], true, later), None);
        assert_eq!(c.record(rest[1], true, later), Some((HalfOpen, Closed)));
    }

    #[test]
    fn single_probe_config() {
        let t0 = Instant::now();
        let c = Circuit::new(
            CircuitSettings {
                min_requests: 1,
                half_open_probes: 1,
                failure_ratio: 1.0,
                ..settings()
            },
            t0,
        );
        assert_eq!(run(&c, true, t0), None);
        assert_eq!(run(&c, false, t0), None); // 1/2 < 1.0
        let c = Circuit::new(*c.settings(), t0);
        assert_eq!(run(&c, false, t0), Some((Closed, Open)));
        let t = t0 + ms(5000);
        let p = probe(&c, t);
        assert!(matches!(c.admit(t), Admission::Rejected { .. }));
        assert_eq!(c.record(p, true, t), Some((HalfOpen, Closed)));
    }

    #[test]
    fn clock_skew_between_callers_is_tolerated() {
        let t0 = Instant::now();
        let c = Circuit::new(settings(), t0);
        // Reports stamped slightly earlier than ones already seen, and before the circuit's
        // creation, count in the newest bucket instead of panicking or being lost.
        run(&c, false, t0 + ms(3000));
        for _ in 0..8 {
            run(&c, false, t0 + ms(2999));
        }
        let earlier = t0.checked_sub(ms(1)).unwrap_or(t0);
        assert_eq!(run(&c, false, earlier), Some((Closed, Open)));
        // An admission stamped before the open moment is still rejected, with the full wait.
        match c.admit(earlier) {
            Admission::Rejected { retry_after } => assert!(retry_after <= ms(5000)),
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn shared_between_threads() {
        let t0 = Instant::now();
        let c = std::sync::Arc::new(Circuit::new(settings(), t0));
        let opened: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let c = &c;
                    s.spawn(move || {
                        (0..1000)
                            .filter(|_| run_any(c, false, t0).contains(&(Closed, Open)))
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(opened, 1);
        assert_eq!(c.state(t0), Open);
    }
}
