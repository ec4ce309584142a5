//! The unregistration protocol against a model of the filter engine that
//! follows the documented rules, property-tested over random schedules.

use proptest::prelude::*;
use wfpmon_core::status::*;
use wfpmon_core::unload::{
    MAX_UNREGISTER_ATTEMPTS, Outcome, Step, Unregistration, unregistration_order,
};

#[test]
fn success_first_time() {
    let mut u = Unregistration::default();
    assert_eq!(u.step(), Step::Unregister);
    u.on_unregister(STATUS_SUCCESS);
    assert_eq!(
        u.step(),
        Step::Finished(Outcome::Unregistered { attempts: 1 })
    );
}

#[test]
fn not_found_counts_as_done_in_both_spellings() {
    for s in [STATUS_FWP_CALLOUT_NOT_FOUND, FWP_E_CALLOUT_NOT_FOUND] {
        let mut u = Unregistration::default();
        u.on_unregister(s);
        assert_eq!(u.step(), Step::Finished(Outcome::AlreadyGone));
        assert!(Outcome::AlreadyGone.is_unregistered());
    }
}

#[test]
fn busy_then_remove_then_retry_at_once() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY);
    assert_eq!(u.step(), Step::RemoveContexts);
    u.on_contexts_removed(3, 0);
    assert_eq!(u.step(), Step::Unregister);
    u.on_unregister(STATUS_SUCCESS);
    assert_eq!(
        u.step(),
        Step::Finished(Outcome::Unregistered { attempts: 2 })
    );
}

#[test]
fn pending_contexts_are_waited_for() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY);
    u.on_contexts_removed(3, 1);
    assert_eq!(u.step(), Step::Wait);
    u.on_waited();
    assert_eq!(u.step(), Step::Unregister);
}

#[test]
fn busy_with_nothing_to_remove_waits_before_retrying() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY);
    u.on_contexts_removed(0, 0);
    assert_eq!(u.step(), Step::Wait);
}

#[test]
fn in_use_and_unexpected_statuses_are_retried_after_a_wait() {
    for s in [STATUS_FWP_IN_USE, STATUS_UNSUCCESSFUL] {
        let mut u = Unregistration::default();
        u.on_unregister(s);
        assert_eq!(u.step(), Step::Wait);
        u.on_waited();
        u.on_unregister(STATUS_SUCCESS);
        assert_eq!(
            u.step(),
            Step::Finished(Outcome::Unregistered { attempts: 2 })
        );
    }
}

#[test]
fn a_callout_that_never_lets_go_is_given_up_after_the_bound() {
    let mut u = Unregistration::default();
    let mut calls = 0;
    let mut waits = 0;
    loop {
        match u.step() {
            Step::Unregister => {
                calls += 1;
                u.on_unregister(if calls % 2 == 0 {
                    STATUS_FWP_IN_USE
                } else {
                    STATUS_DEVICE_BUSY
                });
            }
            Step::RemoveContexts => u.on_contexts_removed(1, 1),
            Step::Wait => {
                waits += 1;
                u.on_waited();
            }
            Step::Finished(o) => {
                assert_eq!(
                    o,
                    Outcome::GaveUp {
                        last_status: STATUS_FWP_IN_USE
                    }
                );
                assert!(!o.is_unregistered());
                break;
            }
        }
    }
    assert_eq!(calls, MAX_UNREGISTER_ATTEMPTS);
    assert_eq!(
        waits,
        MAX_UNREGISTER_ATTEMPTS - 1,
        "every retry without progress waits first"
    );
}

#[test]
fn unregistration_reverses_registration() {
    let order: Vec<_> = unregistration_order().collect();
    assert_eq!(order, vec![5, 4, 3, 2, 1, 0]);
}

/// A filter engine with the documented rules for one callout: unregister
/// answers BUSY while contexts exist (including ones whose deletion is
/// pending) and `IN_USE` while another thread holds the callout; removing a
/// context deletes it at once (SUCCESS) or, for a flow mid-classify, only
/// after some waits (PENDING); a context may also appear late (an
/// association that raced with the start of unload).
#[derive(Debug)]
struct Engine {
    contexts: u32,
    /// Remaining waits of each pending deletion.
    pending: Vec<u32>,
    pending_every: u32,
    pending_waits: u32,
    late: u32,
    in_use: u32,
    removed: u32,
}

impl Engine {
    const fn unregister(&mut self) -> i32 {
        if self.in_use > 0 {
            self.in_use -= 1;
            STATUS_FWP_IN_USE
        } else if self.contexts as usize + self.pending.len() > 0 {
            STATUS_DEVICE_BUSY
        } else {
            STATUS_SUCCESS
        }
    }
    fn remove_all(&mut self) -> (usize, usize) {
        let removed = self.contexts as usize;
        while self.contexts > 0 {
            self.contexts -= 1;
            self.removed += 1;
            if self.pending_every != 0 && self.removed.is_multiple_of(self.pending_every) {
                self.pending.push(self.pending_waits);
            }
        }
        if self.late > 0 {
            self.late -= 1;
            self.contexts += 1;
        }
        (removed, self.contexts as usize + self.pending.len())
    }
    fn wait(&mut self) {
        self.pending.retain_mut(|w| {
            *w = w.saturating_sub(1);
            *w > 0
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Whatever the contexts, pending removals (however slow), IN_USE
    /// answers and late associations, the protocol terminates within the
    /// bound and reports "unregistered" exactly when the engine let the
    /// callout go; an engine that lets go within the bound is never given up.
    #[test]
    fn protocol_terminates_and_is_truthful(
        contexts in 0u32..500, pending_every in 0u32..5, pending_waits in 1u32..20,
        late in 0u32..12, in_use in 0u32..6, max in 1u32..120,
    ) {
        let mut e = Engine { contexts, pending: Vec::new(), pending_every, pending_waits, late, in_use, removed: 0 };
        let mut u = Unregistration::new(max);
        let mut unregister_calls = 0;
        let outcome = loop {
            match u.step() {
                Step::Unregister => {
                    unregister_calls += 1;
                    u.on_unregister(e.unregister());
                }
                Step::RemoveContexts => {
                    let (removed, left) = e.remove_all();
                    u.on_contexts_removed(removed, left);
                }
                Step::Wait => { e.wait(); u.on_waited(); }
                Step::Finished(o) => break o,
            }
            prop_assert!(unregister_calls <= max);
        };
        prop_assert_eq!(u.attempts(), unregister_calls);
        match outcome {
            Outcome::Unregistered { attempts } => {
                prop_assert_eq!(e.contexts as usize + e.pending.len(), 0);
                prop_assert_eq!(attempts, unregister_calls);
            }
            Outcome::GaveUp { .. } => {
                prop_assert_eq!(unregister_calls, max);
                // Giving up only happens when the engine kept the callout for
                // (nearly) the whole budget: IN_USE answers, late contexts and
                // slow pending deletions together need that many calls.
                prop_assert!(in_use + late + pending_waits + 2 >= max, "gave up too early");
            }
            Outcome::AlreadyGone => prop_assert!(false, "the callout was registered"),
        }
    }
}
