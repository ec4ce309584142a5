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
    assert_eq!(u.step(), Step::Finished(Outcome::Unregistered { attempts: 1 }));
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
fn busy_then_remove_then_retry() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY);
    assert_eq!(u.step(), Step::RemoveContexts);
    u.on_contexts_removed(0);
    assert_eq!(u.step(), Step::Unregister);
    u.on_unregister(STATUS_SUCCESS);
    assert_eq!(u.step(), Step::Finished(Outcome::Unregistered { attempts: 2 }));
}

#[test]
fn pending_contexts_are_waited_for() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_DEVICE_BUSY);
    u.on_contexts_removed(3);
    assert_eq!(u.step(), Step::WaitForFlowDeletes);
    u.on_waited();
    assert_eq!(u.step(), Step::Unregister);
}

#[test]
fn other_errors_are_final() {
    let mut u = Unregistration::default();
    u.on_unregister(STATUS_UNSUCCESSFUL);
    assert_eq!(u.step(), Step::Finished(Outcome::Failed { status: STATUS_UNSUCCESSFUL }));
    assert!(!Outcome::Failed { status: 1 }.is_unregistered());
}

#[test]
fn a_callout_that_stays_busy_is_given_up_after_the_bound() {
    let mut u = Unregistration::default();
    let mut calls = 0;
    loop {
        match u.step() {
            Step::Unregister => {
                calls += 1;
                u.on_unregister(STATUS_DEVICE_BUSY);
            }
            Step::RemoveContexts => u.on_contexts_removed(1),
            Step::WaitForFlowDeletes => u.on_waited(),
            Step::Finished(o) => {
                assert_eq!(o, Outcome::GaveUp);
                break;
            }
        }
    }
    assert_eq!(calls, MAX_UNREGISTER_ATTEMPTS);
}

#[test]
fn unregistration_reverses_registration() {
    let order: Vec<_> = unregistration_order().collect();
    assert_eq!(order, vec![5, 4, 3, 2, 1, 0]);
}

/// A filter engine with the documented rules for one callout: unregister
/// answers BUSY while contexts exist; removing a context deletes it at once
/// (SUCCESS) or, for a flow mid-classify, later (PENDING: it is deleted at
/// the next wait); a context may also appear late (an association that
/// raced with the start of unload).
#[derive(Debug)]
struct Engine {
    contexts: u32,
    pending: u32,
    late: u32,
    pending_every: u32,
    removed: u32,
}

impl Engine {
    const fn unregister(&self) -> i32 {
        if self.contexts + self.pending > 0 { STATUS_DEVICE_BUSY } else { STATUS_SUCCESS }
    }
    const fn remove_all(&mut self) -> usize {
        while self.contexts > 0 {
            self.contexts -= 1;
            self.removed += 1;
            if self.pending_every != 0 && self.removed.is_multiple_of(self.pending_every) {
                self.pending += 1;
            }
        }
        // A late association lands while we were removing.
        if self.late > 0 {
            self.late -= 1;
            self.contexts += 1;
        }
        (self.contexts + self.pending) as usize
    }
    const fn wait(&mut self) {
        self.pending = 0;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Whatever the number of contexts, pending removals and late
    /// associations, the protocol terminates within the bound and reports
    /// "unregistered" exactly when the engine let the callout go.
    #[test]
    fn protocol_terminates_and_is_truthful(
        contexts in 0u32..500, pending_every in 0u32..5, late in 0u32..12, max in 1u32..10,
    ) {
        let mut e = Engine { contexts, pending: 0, late, pending_every, removed: 0 };
        let mut u = Unregistration::new(max);
        let mut unregister_calls = 0;
        let outcome = loop {
            match u.step() {
                Step::Unregister => {
                    unregister_calls += 1;
                    u.on_unregister(e.unregister());
                }
                Step::RemoveContexts => u.on_contexts_removed(e.remove_all()),
                Step::WaitForFlowDeletes => { e.wait(); u.on_waited(); }
                Step::Finished(o) => break o,
            }
            prop_assert!(unregister_calls <= max);
        };
        prop_assert_eq!(u.attempts(), unregister_calls);
        match outcome {
            Outcome::Unregistered { attempts } => {
                prop_assert_eq!(e.contexts + e.pending, 0);
                prop_assert_eq!(attempts, unregister_calls);
            }
            Outcome::GaveUp => {
                prop_assert_eq!(unregister_calls, max);
                // Only a callout with late arrivals beyond the bound stays busy.
                prop_assert!(late + 1 >= max);
            }
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
    }
}
