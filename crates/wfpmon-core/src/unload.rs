//! The callout unregistration protocol of "Unloading a Callout Driver".
//!
//! For each callout: call `FwpsCalloutUnregisterById0`. `STATUS_SUCCESS`
//! ends it; `STATUS_FWP_CALLOUT_NOT_FOUND` means nothing is left to undo.
//! `STATUS_DEVICE_BUSY` means flows still carry a context of the callout:
//! remove each one with `FwpsFlowRemoveContext0` (the engine runs the
//! flow-delete callback at once, or later for a flow whose classify is in
//! progress), wait for the stragglers, and try again — a bounded number of
//! times. Any other status is final and reported.
//!
//! [`Unregistration`] is that protocol for one callout as a state machine:
//! the driver asks it for the next [`Step`], performs the kernel call, and
//! feeds the result back. It holds no kernel state, so every path (BUSY,
//! PENDING, a context that appears late, a callout that never frees) is
//! tested on the host.

use crate::catalog::{CALLOUT_COUNT, CalloutIndex};
use crate::status;

/// How many times one callout's unregistration is tried before giving up.
pub const MAX_UNREGISTER_ATTEMPTS: u32 = 8;

/// How many times the driver waits for outstanding flow-delete callbacks
/// (one wait per step, see [`FLOW_DELETE_WAIT_100NS`]) before giving up.
pub const MAX_FLOW_DELETE_WAITS: u32 = 50;

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
    /// Wait (bounded) for flow-delete callbacks still due, then
    /// [`Unregistration::on_waited`].
    WaitForFlowDeletes,
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
    /// The engine answered an unexpected status.
    Failed {
        /// That status.
        status: i32,
    },
    /// Still busy after [`MAX_UNREGISTER_ATTEMPTS`] calls.
    GaveUp,
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
        Self { attempts: 0, max_attempts, next: Step::Unregister }
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
        debug_assert_eq!(self.next, Step::Unregister, "unregister result out of order");
        self.attempts += 1;
        self.next = match status {
            status::STATUS_SUCCESS => Step::Finished(Outcome::Unregistered { attempts: self.attempts }),
            status::STATUS_FWP_CALLOUT_NOT_FOUND | status::FWP_E_CALLOUT_NOT_FOUND => {
                Step::Finished(Outcome::AlreadyGone)
            }
            status::STATUS_DEVICE_BUSY if self.attempts >= self.max_attempts => {
                Step::Finished(Outcome::GaveUp)
            }
            status::STATUS_DEVICE_BUSY => Step::RemoveContexts,
            other => Step::Finished(Outcome::Failed { status: other }),
        };
    }

    /// Feeds back how many flows of the callout are still tracked after
    /// every tracked flow's context was asked to go (`FwpsFlowRemoveContext0`
    /// answered `STATUS_PENDING` for them, or they were mid-association).
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::RemoveContexts`].
    pub fn on_contexts_removed(&mut self, still_tracked: usize) {
        debug_assert_eq!(self.next, Step::RemoveContexts, "removal result out of order");
        self.next = if still_tracked == 0 { Step::Unregister } else { Step::WaitForFlowDeletes };
    }

    /// Feeds back that a bounded wait for flow-delete callbacks ended.
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::WaitForFlowDeletes`].
    pub fn on_waited(&mut self) {
        debug_assert_eq!(self.next, Step::WaitForFlowDeletes, "wait result out of order");
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
