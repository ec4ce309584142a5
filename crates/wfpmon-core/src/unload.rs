//! The callout unregistration protocol of "Unloading a Callout Driver".
//!
//! A callout driver must not return from its unload function until all its
//! callouts are unregistered, and must delete its device object only after
//! that. For each callout: call `FwpsCalloutUnregisterById0`.
//! `STATUS_SUCCESS` ends it; `STATUS_FWP_CALLOUT_NOT_FOUND` means nothing is
//! left to undo. `STATUS_DEVICE_BUSY` means flows still carry a context of
//! the callout: remove each one with `FwpsFlowRemoveContext0` (the engine
//! runs the flow-delete callback at once, or later for a flow whose classify
//! is in progress), wait for the stragglers, and try again. Any other status
//! (`STATUS_FWP_IN_USE`: another thread is registering or unregistering the
//! callout) is retried after a wait as well.
//!
//! The retries are bounded so that an engine that never lets go cannot hang
//! unload forever, but the bound is generous (about ten seconds of waiting
//! per callout) and only a callout that stays registered through all of it
//! is given up — loudly.
//!
//! [`Unregistration`] is that protocol for one callout as a state machine:
//! the driver asks it for the next [`Step`], performs the kernel call, and
//! feeds the result back. It holds no kernel state, so every path (BUSY,
//! PENDING, `IN_USE`, a context that appears late, a callout that never
//! frees) is tested on the host.

use crate::catalog::{CALLOUT_COUNT, CalloutIndex};
use crate::status;

/// How many times one callout's unregistration is tried before giving up.
/// Each retry that made no progress follows one wait of
/// [`FLOW_DELETE_WAIT_100NS`], so this is about ten seconds per callout.
pub const MAX_UNREGISTER_ATTEMPTS: u32 = 100;

/// How many times teardown waits for the last flow context and the last
/// classify in progress before giving up.
///
/// One [`FLOW_DELETE_WAIT_100NS`] each, or less when a flow-delete callback
/// signals: about 30 seconds.
pub const MAX_FLOW_DELETE_WAITS: u32 = 300;

/// Length of one wait for flow-delete callbacks: 100 ms, in the 100 ns
/// units of a relative kernel timeout.
pub const FLOW_DELETE_WAIT_100NS: i64 = 1_000_000;

/// What the driver must do next for one callout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Call `FwpsCalloutUnregisterById0`, then [`Unregistration::on_unregister`].
    Unregister,
    /// Call `FwpsFlowRemoveContext0` for every tracked flow of the callout,
    /// then [`Unregistration::on_contexts_removed`].
    RemoveContexts,
    /// Wait once (bounded: [`FLOW_DELETE_WAIT_100NS`]) for flow-delete
    /// callbacks or for the engine, then [`Unregistration::on_waited`].
    Wait,
    /// Nothing more to do.
    Finished(Outcome),
}

/// How one callout's unregistration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Unregistered after this many calls.
    Unregistered {
        /// Calls to `FwpsCalloutUnregisterById0`.
        attempts: u32,
    },
    /// The engine no longer knew the callout.
    AlreadyGone,
    /// Still not unregistered after [`MAX_UNREGISTER_ATTEMPTS`] calls.
    GaveUp {
        /// The last status the engine answered.
        last_status: i32,
    },
}

impl Outcome {
    /// Whether the callout is no longer registered.
    #[must_use]
    pub const fn is_unregistered(self) -> bool {
        matches!(self, Self::Unregistered { .. } | Self::AlreadyGone)
    }
}

/// The protocol's state for one callout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unregistration {
    attempts: u32,
    max_attempts: u32,
    next: Step,
}

impl Default for Unregistration {
    fn default() -> Self {
        Self::new(MAX_UNREGISTER_ATTEMPTS)
    }
}

impl Unregistration {
    /// A protocol run allowing `max_attempts` unregister calls (at least one).
    #[must_use]
    pub const fn new(max_attempts: u32) -> Self {
        let max_attempts = if max_attempts == 0 { 1 } else { max_attempts };
        Self {
            attempts: 0,
            max_attempts,
            next: Step::Unregister,
        }
    }

    /// The step to perform now.
    #[must_use]
    pub const fn step(&self) -> Step {
        self.next
    }

    /// Calls made to `FwpsCalloutUnregisterById0` so far.
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Feeds back the status `FwpsCalloutUnregisterById0` returned.
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::Unregister`].
    pub fn on_unregister(&mut self, status: i32) {
        debug_assert_eq!(
            self.next,
            Step::Unregister,
            "unregister result out of order"
        );
        self.attempts += 1;
        self.next = match status {
            status::STATUS_SUCCESS => Step::Finished(Outcome::Unregistered {
                attempts: self.attempts,
            }),
            status::STATUS_FWP_CALLOUT_NOT_FOUND | status::FWP_E_CALLOUT_NOT_FOUND => {
                Step::Finished(Outcome::AlreadyGone)
            }
            last_status if self.attempts >= self.max_attempts => {
                Step::Finished(Outcome::GaveUp { last_status })
            }
            status::STATUS_DEVICE_BUSY => Step::RemoveContexts,
            // STATUS_FWP_IN_USE and anything unexpected: the engine is busy
            // with the callout; give it time, then try again.
            _ => Step::Wait,
        };
    }

    /// Feeds back one removal pass: how many flows of the callout were asked
    /// to give up their context (`FwpsFlowRemoveContext0`), and how many are
    /// still tracked afterwards (`STATUS_PENDING`, or mid-association).
    ///
    /// Retries at once when the pass removed contexts and none is left;
    /// otherwise waits first — for the pending flow-delete callbacks, or,
    /// when the engine said BUSY although we track nothing for the callout,
    /// for the engine to catch up.
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::RemoveContexts`].
    pub fn on_contexts_removed(&mut self, removed: usize, still_tracked: usize) {
        debug_assert_eq!(
            self.next,
            Step::RemoveContexts,
            "removal result out of order"
        );
        self.next = if removed > 0 && still_tracked == 0 {
            Step::Unregister
        } else {
            Step::Wait
        };
    }

    /// Feeds back that a bounded wait ended.
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::Wait`].
    pub fn on_waited(&mut self) {
        debug_assert_eq!(self.next, Step::Wait, "wait result out of order");
        self.next = Step::Unregister;
    }
}

/// Order in which callouts are unregistered.
///
/// The reverse of [`crate::catalog::CALLOUTS`]' registration order, so the
/// flow-established callouts (which create contexts) go before the data
/// callouts (which hold them).
pub fn unregistration_order() -> impl Iterator<Item = CalloutIndex> {
    (0..CALLOUT_COUNT).rev()
}
