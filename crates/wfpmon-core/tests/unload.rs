//! The unregistration protocol against a model of the filter engine that
//! follows the documented rules, property-tested over random schedules.

use proptest::prelude::*;
use wfpmon_core::status::*;
use wfpmon_core::unload::{
    Backoff, LogBackoff, MAX_WAIT_100NS, MIN_WAIT_100NS, Outcome, Step, Unregistration,
    unregistration_order,
};

#[test]
fn success_first_time() {
    let mut u = Unregistration::default();
    assert_eq!(u.step(), Step::Unregister);
    u.on_unregister(STATUS_SUCCESS, 0);
    assert_eq!(
        u.step(),
        Step::Finished(Outcome::Unregistered { attempts: 1 })
    );
}

#[test]
fn not_found_counts_as_done_in_both_spellings() {
    for s in [STATUS_FWP_CALLOUT_NOT_FOUND, FWP_E_CALLOUT_NOT_FOUND] {
        let mut u = Unregistration::default();
        u.on_unregister(s, 0);
        assert_eq!(u.step(), Step::Finished(Outcome::AlreadyGone));
    }
}

#[test]
fn busy_then_remove_then_retry_at_once() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY, 3);
    assert_eq!(u.step(), Step::RemoveContexts);
    u.on_contexts_removed(3, 0);
    assert_eq!(u.step(), Step::Unregister);
    u.on_unregister(STATUS_SUCCESS, 0);
    assert_eq!(
        u.step(),
        Step::Finished(Outcome::Unregistered { attempts: 2 })
    );
}

#[test]
fn pending_contexts_are_waited_for() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY, 3);
    u.on_contexts_removed(3, 1);
    assert_eq!(
        u.step(),
        Step::Wait {
            timeout_100ns: MIN_WAIT_100NS
        }
    );
    u.on_waited(1);
    assert_eq!(u.step(), Step::Unregister);
}

#[test]
fn busy_with_nothing_to_remove_waits_before_retrying() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY, 3);
    u.on_contexts_removed(0, 0);
    assert!(matches!(u.step(), Step::Wait { .. }));
}

#[test]
fn in_use_and_unexpected_statuses_are_retried_after_a_wait() {
    for s in [STATUS_FWP_IN_USE, STATUS_UNSUCCESSFUL] {
        let mut u = Unregistration::default();
        u.on_unregister(s, 0);
        assert!(matches!(u.step(), Step::Wait { .. }));
        u.on_waited(0);
        u.on_unregister(STATUS_SUCCESS, 0);
        assert_eq!(
            u.step(),
            Step::Finished(Outcome::Unregistered { attempts: 2 })
        );
    }
}

#[test]
fn unregistration_reverses_registration() {
    let order: Vec<_> = unregistration_order().collect();
    assert_eq!(order, vec![5, 4, 3, 2, 1, 0]);
}

#[test]
fn waits_without_progress_double_up_to_the_cap() {
    let mut u = Unregistration::new();
    let mut waits = Vec::new();
    for _ in 0..12 {
        u.on_unregister(STATUS_FWP_IN_USE, 0);
        let Step::Wait { timeout_100ns } = u.step() else {
            panic!("expected a wait, got {:?}", u.step());
        };
        waits.push(timeout_100ns);
        u.on_waited(0);
    }
    assert_eq!(waits[0], MIN_WAIT_100NS);
    assert!(
        waits
            .windows(2)
            .all(|w| w[1] == (w[0] * 2).min(MAX_WAIT_100NS))
    );
    assert_eq!(*waits.last().unwrap(), MAX_WAIT_100NS);
}

#[test]
fn progress_brings_the_wait_back_to_its_minimum() {
    let mut u = Unregistration::new();
    // Busy with five pending deletions, then nothing moves for a while...
    for left in [5, 5, 5, 5] {
        u.on_unregister(STATUS_DEVICE_BUSY, 3);
        u.on_contexts_removed(0, left);
        u.on_waited(0);
    }
    u.on_unregister(STATUS_DEVICE_BUSY, 3);
    // ...then two of them complete.
    u.on_contexts_removed(0, 3);
    assert_eq!(
        u.step(),
        Step::Wait {
            timeout_100ns: MIN_WAIT_100NS
        }
    );
}

#[test]
fn backoff_doubles_to_its_cap_and_resets_on_progress() {
    let mut b = Backoff::new();
    let waits: Vec<i64> = (0..12).map(|_| b.next_100ns()).collect();
    assert_eq!(waits[0], MIN_WAIT_100NS);
    assert!(
        waits
            .windows(2)
            .all(|w| w[1] == (w[0] * 2).min(MAX_WAIT_100NS)),
        "{waits:?}"
    );
    assert_eq!(
        *waits.last().unwrap(),
        MAX_WAIT_100NS,
        "capped, never unbounded growth"
    );
    b.reset();
    assert_eq!(b.next_100ns(), MIN_WAIT_100NS);
    assert_eq!(b.next_100ns(), 2 * MIN_WAIT_100NS);
}

#[test]
fn log_backoff_reports_after_one_second_then_at_doubling_intervals_capped_at_a_minute() {
    let second = 10_000_000u64;
    let mut log = LogBackoff::new();
    let mut reports = Vec::new();
    // Poll every 100 ms for 10 minutes.
    for tick in 0..=6_000u64 {
        let t = tick * second / 10;
        if log.due(t) {
            reports.push(t / second);
        }
    }
    assert_eq!(&reports[..7], &[1, 3, 7, 15, 31, 63, 123]);
    assert!(reports.windows(2).skip(6).all(|w| w[1] - w[0] == 60));
    assert_eq!(*reports.last().unwrap(), 543);
}

#[test]
fn log_backoff_reports_once_when_polled_late() {
    let mut log = LogBackoff::new();
    assert!(!log.due(0));
    assert!(log.due(LogBackoff::CAP_100NS * 10), "overdue: report now");
    assert!(!log.due(LogBackoff::CAP_100NS * 10 + 1), "but only once");
}

/// A filter engine with the documented rules for one callout, on a
/// simulated clock: unregister answers BUSY while contexts exist (including
/// ones whose deletion is pending) and `IN_USE` while another thread holds
/// the callout; removing a context deletes it at once (SUCCESS) or, for a
/// flow mid-classify, only once the clock reaches the moment that classify
/// returns (PENDING); a context may also appear late (an association that
/// raced with the start of unload). Waits advance the clock by their full
/// timeout unless a deferred deletion completes first (the driver's event).
#[derive(Debug)]
struct Engine {
    now: i64,
    contexts: u32,
    /// When each pending deletion completes (simulated time).
    pending: Vec<i64>,
    pending_every: u32,
    /// How long a pending deletion takes.
    pending_delay: i64,
    late: u32,
    /// `IN_USE` is answered until this time.
    in_use_until: i64,
    removed: u32,
    /// Breaks rule "busy while a deferred deletion is owed": once every
    /// context is removed, unregister answers `STATUS_FWP_CALLOUT_NOT_FOUND`
    /// (and forgets the callout) although deferred deletions are still to
    /// come.
    early_not_found: bool,
    gone: bool,
    /// It let go while deferred deletions were owed.
    gone_owing: bool,
    /// When the engine last ran a flow-delete callback (simulated time).
    last_delete: i64,
}

impl Engine {
    const fn unregister(&mut self) -> i32 {
        if self.gone {
            STATUS_FWP_CALLOUT_NOT_FOUND
        } else if self.now < self.in_use_until {
            STATUS_FWP_IN_USE
        } else if self.early_not_found && self.contexts == 0 {
            self.gone = true;
            self.gone_owing = !self.pending.is_empty();
            STATUS_FWP_CALLOUT_NOT_FOUND
        } else if self.contexts as usize + self.pending.len() > 0 {
            STATUS_DEVICE_BUSY
        } else {
            STATUS_SUCCESS
        }
    }
    /// Flow records the driver still tracks: one per context, live or
    /// awaiting its deletion.
    const fn tracked(&self) -> usize {
        self.contexts as usize + self.pending.len()
    }
    fn remove_all(&mut self) -> (usize, usize) {
        let removed = self.contexts as usize;
        while self.contexts > 0 {
            self.contexts -= 1;
            self.removed += 1;
            if self.pending_every != 0 && self.removed.is_multiple_of(self.pending_every) {
                self.pending.push(self.now + self.pending_delay);
            } else {
                self.last_delete = self.now;
            }
        }
        if self.late > 0 {
            self.late -= 1;
            self.contexts += 1;
        }
        (removed, self.contexts as usize + self.pending.len())
    }
    fn wait(&mut self, timeout: i64) {
        let deadline = self.now + timeout;
        let first_done = self.pending.iter().copied().min();
        self.now = match first_done {
            Some(t) if t <= deadline => t.max(self.now),
            _ => deadline,
        };
        self.run_due();
    }
    /// Lets `time` pass in full.
    fn sleep(&mut self, time: i64) {
        self.now += time;
        self.run_due();
    }
    fn run_due(&mut self) {
        let now = self.now;
        if let Some(last) = self.pending.iter().copied().filter(|&t| t <= now).max() {
            self.last_delete = self.last_delete.max(last);
        }
        self.pending.retain(|&t| t > now);
    }
}

/// Runs the protocol against `e` until it finishes; returns the outcome and
/// the number of unregister calls. Checks the protocol's own invariants on
/// the way: waits stay within [MIN, MAX].
fn run(e: &mut Engine, u: &mut Unregistration) -> (Outcome, u32) {
    let mut calls = 0;
    loop {
        match u.step() {
            Step::Unregister => {
                assert!(!e.gone, "unregister after the engine let go");
                calls += 1;
                let status = e.unregister();
                u.on_unregister(status, e.tracked());
            }
            Step::RemoveContexts => {
                assert!(!e.gone, "removal pass after the engine let go");
                let (removed, left) = e.remove_all();
                u.on_contexts_removed(removed, left);
            }
            Step::Wait { timeout_100ns } => {
                assert!((MIN_WAIT_100NS..=MAX_WAIT_100NS).contains(&timeout_100ns));
                e.wait(timeout_100ns);
                u.on_waited(e.tracked());
            }
            Step::Grace { timeout_100ns } => {
                assert_eq!(timeout_100ns, MIN_WAIT_100NS);
                assert_eq!(e.tracked(), 0, "grace before the last record went");
                e.sleep(timeout_100ns);
                u.on_waited(e.tracked());
            }
            Step::Finished(o) => return (o, calls),
        }
    }
}

const MINUTE: i64 = 600_000_000;

#[test]
fn an_engine_that_lets_go_after_ten_minutes_is_waited_for() {
    // Deferred deletions that complete only after 10 simulated minutes (a
    // classify stuck that long), plus IN_USE for the first minute.
    let mut e = Engine {
        now: 0,
        contexts: 300,
        pending: Vec::new(),
        pending_every: 7,
        pending_delay: 10 * MINUTE,
        late: 0,
        in_use_until: MINUTE,
        removed: 0,
        early_not_found: false,
        gone: false,
        gone_owing: false,
        last_delete: 0,
    };
    let mut u = Unregistration::new();
    let (outcome, calls) = run(&mut e, &mut u);
    assert_eq!(outcome, Outcome::Unregistered { attempts: calls });
    assert!(e.now >= 11 * MINUTE, "returned before the engine let go");
    assert!(e.pending.is_empty() && e.contexts == 0);
    // Waits of up to a second: about one call per second of waiting.
    let seconds = u32::try_from(e.now / (MINUTE / 60)).unwrap();
    assert!(calls <= seconds + 20, "{calls} calls in {seconds} s");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// Whatever the contexts, pending removals (however slow: up to an
    /// hour), IN_USE answers and late associations, the protocol ends only
    /// when the engine let the callout go, never gives up, and does not spin:
    /// unregister calls grow with the waited time, not faster than one per
    /// minimum wait plus one per removal pass that made progress.
    #[test]
    fn protocol_ends_only_when_the_engine_let_go(
        contexts in 0u32..500, pending_every in 0u32..5,
        pending_delay in 1i64..(60 * MINUTE), late in 0u32..12,
        in_use_until in 0i64..(5 * MINUTE),
    ) {
        let mut e = Engine { now: 0, contexts, pending: Vec::new(), pending_every, pending_delay, late, in_use_until, removed: 0, early_not_found: false, gone: false, gone_owing: false, last_delete: 0 };
        let mut u = Unregistration::new();
        let (outcome, calls) = run(&mut e, &mut u);
        prop_assert_eq!(u.attempts(), calls);
        prop_assert_eq!(outcome, Outcome::Unregistered { attempts: calls });
        prop_assert_eq!(e.tracked(), 0);
        prop_assert!(e.now >= in_use_until);
        let bound = e.now / MAX_WAIT_100NS * 2 + i64::from(late) * 10 + 64;
        prop_assert!(i64::from(calls) <= bound, "{} calls over {} (bound {})", calls, e.now, bound);
    }
}

#[test]
fn success_or_not_found_with_records_left_waits_for_them() {
    for status in [
        STATUS_SUCCESS,
        STATUS_FWP_CALLOUT_NOT_FOUND,
        FWP_E_CALLOUT_NOT_FOUND,
    ] {
        let mut u = Unregistration::new();
        u.on_unregister(STATUS_DEVICE_BUSY, 2);
        u.on_contexts_removed(2, 2); // both answered STATUS_PENDING
        u.on_waited(2);
        // The engine lets go while both deferred deletions are owed.
        u.on_unregister(status, 2);
        assert!(u.released());
        assert!(
            matches!(u.step(), Step::Wait { .. }),
            "{status:#x}: {:?}",
            u.step()
        );
        // Nothing moves for a while: waits, never a call or a removal pass.
        for _ in 0..50 {
            u.on_waited(2);
            assert!(matches!(u.step(), Step::Wait { .. }));
        }
        u.on_waited(1);
        assert!(matches!(u.step(), Step::Wait { .. }));
        // The last record goes: the grace for its callback's return, then done.
        u.on_waited(0);
        assert_eq!(
            u.step(),
            Step::Grace {
                timeout_100ns: MIN_WAIT_100NS
            }
        );
        u.on_waited(0);
        assert!(matches!(u.step(), Step::Finished(_)), "{:?}", u.step());
        assert!(!u.released());
    }
}

#[test]
fn not_found_with_no_record_left_is_finished_at_once() {
    let mut u = Unregistration::new();
    u.on_unregister(STATUS_DEVICE_BUSY, 3);
    u.on_contexts_removed(3, 0);
    u.on_unregister(STATUS_FWP_CALLOUT_NOT_FOUND, 0);
    assert_eq!(u.step(), Step::Finished(Outcome::AlreadyGone));
}

#[test]
fn an_engine_that_answers_not_found_while_deletions_are_owed_is_waited_for() {
    // Every removal is deferred by ten minutes; the engine answers NOT_FOUND
    // as soon as no live context is left.
    let mut e = Engine {
        now: 0,
        contexts: 300,
        pending: Vec::new(),
        pending_every: 1,
        pending_delay: 10 * MINUTE,
        late: 0,
        in_use_until: 0,
        removed: 0,
        early_not_found: true,
        gone: false,
        gone_owing: false,
        last_delete: 0,
    };
    let mut u = Unregistration::new();
    let (outcome, _) = run(&mut e, &mut u);
    assert_eq!(outcome, Outcome::AlreadyGone);
    assert!(e.gone_owing, "the engine did let go with deletions owed");
    assert_eq!(e.tracked(), 0);
    assert!(
        e.now >= 10 * MINUTE,
        "finished before the owed deletions ran"
    );
    assert!(
        e.now >= e.last_delete + MIN_WAIT_100NS,
        "no grace after the last one"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// An engine that lets go early (NOT_FOUND once no live context is
    /// left, deferred deletions still owed): the protocol finishes only when
    /// no record is left, a full grace after the last deletion when it let
    /// go with records owed, and never calls the engine for the callout
    /// again once it let go (`run` asserts that).
    #[test]
    fn protocol_outlives_every_owed_deletion(
        contexts in 0u32..500, pending_every in 0u32..5,
        pending_delay in 1i64..(60 * MINUTE), late in 0u32..12,
        in_use_until in 0i64..(5 * MINUTE),
    ) {
        let mut e = Engine { now: 0, contexts, pending: Vec::new(), pending_every, pending_delay, late, in_use_until, removed: 0, early_not_found: true, gone: false, gone_owing: false, last_delete: 0 };
        let mut u = Unregistration::new();
        let (_, calls) = run(&mut e, &mut u);
        prop_assert_eq!(e.tracked(), 0);
        if e.gone_owing {
            prop_assert!(e.now >= e.last_delete + MIN_WAIT_100NS, "no grace: now {} last {}", e.now, e.last_delete);
        }
        let bound = e.now / MAX_WAIT_100NS * 2 + i64::from(late) * 10 + 64;
        prop_assert!(i64::from(calls) <= bound, "{} calls over {} (bound {})", calls, e.now, bound);
    }
}
