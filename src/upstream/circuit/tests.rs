//! The circuit breaker's state machine: opening on failures, probes, closing, reloads.

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
