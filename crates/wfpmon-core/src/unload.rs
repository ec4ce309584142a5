//! The callout unregistration protocol of "Unloading a Callout Driver".
//!
//! A callout driver must not return from its unload function until all its
//! callouts are unregistered, and must delete its device object only after
//! that (the seed documents; `FwpsCalloutUnregisterById0` remarks). For each
//! callout: call `FwpsCalloutUnregisterById0`. `STATUS_SUCCESS` ends it;
//! `STATUS_FWP_CALLOUT_NOT_FOUND` means nothing is left to undo.
//! `STATUS_DEVICE_BUSY` means flows still carry a context of the callout:
//! remove each one with `FwpsFlowRemoveContext0` (the engine runs the
//! flow-delete callback at once, or later for a flow whose classify is in
//! progress), wait for the stragglers, and try again. Any other status
//! (`STATUS_FWP_IN_USE`: another thread is registering or unregistering the
//! callout) is retried after a wait as well.
//!
//! **There is no bound.** Returning from unload with a callout registered
//! leaves the engine holding `classifyFn`/`flowDeleteFn` pointers into an
//! unloaded image: the next flow deletion bugchecks, in someone else's
//! stack, and Driver Verifier stops the machine at unload for the contexts
//! still allocated. A hung `sc stop` is diagnosable and the machine stays
//! up; a time-out turns a bug into a crash later. Microsoft's stmedit
//! sample waits with an infinite timeout for the same reason. So the
//! protocol retries for as long as it takes, and makes the wait visible
//! instead: [`Unregistration`] grows its waits while nothing changes
//! ([`MIN_WAIT_100NS`] doubling up to [`MAX_WAIT_100NS`], back to the
//! minimum as soon as flows go away), and [`LogBackoff`] tells the driver
//! when to report that it is still waiting (after 1 s, 2 s, 4 s … then every
//! minute), so the loop is never silent and never floods the debugger.
//!
//! [`Unregistration`] is the protocol for one callout as a state machine:
//! the driver asks it for the next [`Step`], performs the kernel call, and
//! feeds the result back. It holds no kernel state, so every path (BUSY,
//! PENDING, `IN_USE`, a context that appears late, an engine that lets go
//! only after minutes) is tested on the host.

use crate::catalog::{CALLOUT_COUNT, CalloutIndex};
use crate::status;

/// 100 ns units per millisecond (kernel timeouts and interrupt time).
pub const MILLISECOND_100NS: i64 = 10_000;

/// First wait after a retry that made no progress: 10 ms. A pending
/// flow-delete callback usually finishes well within it, and it wakes the
/// wait early by signalling the driver's event.
pub const MIN_WAIT_100NS: i64 = 10 * MILLISECOND_100NS;

/// Longest single wait: 1 s. Waits double up to here while the engine shows
/// no progress (the event still ends them early when a flow goes).
pub const MAX_WAIT_100NS: i64 = 1_000 * MILLISECOND_100NS;

/// What the driver must do next for one callout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Call `FwpsCalloutUnregisterById0`, then [`Unregistration::on_unregister`].
    Unregister,
    /// Call `FwpsFlowRemoveContext0` for every tracked flow of the callout,
    /// then [`Unregistration::on_contexts_removed`].
    RemoveContexts,
    /// Wait once, at most `timeout_100ns`, for flow-delete callbacks or for
    /// the engine, then [`Unregistration::on_waited`].
    Wait {
        /// Relative timeout, 100 ns units.
        timeout_100ns: i64,
    },
    /// The callout is no longer registered.
    Finished(Outcome),
}

/// How one callout's unregistration ended. Both mean "no longer
/// registered": the protocol has no other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Unregistered after this many calls.
    Unregistered {
        /// Calls to `FwpsCalloutUnregisterById0`.
        attempts: u32,
    },
    /// The engine no longer knew the callout.
    AlreadyGone,
}

/// The protocol's state for one callout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unregistration {
    attempts: u32,
    next: Step,
    /// Length of the next wait.
    wait_100ns: i64,
    /// Flows of the callout still tracked after the previous removal pass.
    tracked_before: Option<usize>,
    last_status: Option<i32>,
}

impl Default for Unregistration {
    fn default() -> Self {
        Self::new()
    }
}

impl Unregistration {
    /// A protocol run for one callout, starting with an unregister call.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            attempts: 0,
            next: Step::Unregister,
            wait_100ns: MIN_WAIT_100NS,
            tracked_before: None,
            last_status: None,
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

    /// The status the engine answered last (`None` before the first call).
    #[must_use]
    pub const fn last_status(&self) -> Option<i32> {
        self.last_status
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
        self.attempts = self.attempts.saturating_add(1);
        if self.last_status.is_some_and(|last| last != status) {
            // The engine's answer changed: something moved; look again soon.
            self.wait_100ns = MIN_WAIT_100NS;
        }
        self.last_status = Some(status);
        self.next = match status {
            status::STATUS_SUCCESS => Step::Finished(Outcome::Unregistered {
                attempts: self.attempts,
            }),
            status::STATUS_FWP_CALLOUT_NOT_FOUND | status::FWP_E_CALLOUT_NOT_FOUND => {
                Step::Finished(Outcome::AlreadyGone)
            }
            status::STATUS_DEVICE_BUSY => Step::RemoveContexts,
            // STATUS_FWP_IN_USE and anything unexpected: the engine is busy
            // with the callout; give it time, then try again.
            _ => self.wait(),
        };
    }

    /// Feeds back one removal pass: how many flows of the callout were asked
    /// to give up their context (`FwpsFlowRemoveContext0`), and how many are
    /// still tracked afterwards (`STATUS_PENDING`, or mid-association).
    ///
    /// Retries at once when the pass removed contexts and none is left;
    /// otherwise waits first — for the pending flow-delete callbacks, or,
    /// when the engine said BUSY although we track nothing for the callout,
    /// for the engine to catch up. Fewer tracked flows than after the
    /// previous pass is progress: the wait drops back to its minimum.
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::RemoveContexts`].
    pub fn on_contexts_removed(&mut self, removed: usize, still_tracked: usize) {
        debug_assert_eq!(
            self.next,
            Step::RemoveContexts,
            "removal result out of order"
        );
        if removed > 0
            || self
                .tracked_before
                .is_some_and(|before| still_tracked < before)
        {
            self.wait_100ns = MIN_WAIT_100NS;
        }
        self.tracked_before = Some(still_tracked);
        self.next = if removed > 0 && still_tracked == 0 {
            Step::Unregister
        } else {
            self.wait()
        };
    }

    /// Feeds back that a wait ended (signalled or timed out).
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::Wait`].
    pub fn on_waited(&mut self) {
        debug_assert!(
            matches!(self.next, Step::Wait { .. }),
            "wait result out of order"
        );
        self.next = Step::Unregister;
    }

    /// The next wait, and the one after it twice as long (capped).
    const fn wait(&mut self) -> Step {
        let timeout_100ns = self.wait_100ns;
        self.wait_100ns = if timeout_100ns >= MAX_WAIT_100NS / 2 {
            MAX_WAIT_100NS
        } else {
            timeout_100ns * 2
        };
        Step::Wait { timeout_100ns }
    }
}

/// When to report a wait that may last arbitrarily long.
///
/// Once [`LogBackoff::FIRST_100NS`] (1 s) has passed, then at intervals
/// doubling from 2 s up to one report every [`LogBackoff::CAP_100NS`]
/// (60 s): at 1, 3, 7, 15, 31, 63, 123, 183 … seconds.
///
/// Time is whatever monotonic clock the caller reads (the driver: interrupt
/// time), in 100 ns units since the wait began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBackoff {
    next_100ns: u64,
    interval_100ns: u64,
}

impl Default for LogBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBackoff {
    /// First report: 1 s into the wait.
    pub const FIRST_100NS: u64 = 10_000_000;
    /// Longest interval between two reports: 60 s.
    pub const CAP_100NS: u64 = 600_000_000;

    /// A schedule for a wait that begins now.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            next_100ns: Self::FIRST_100NS,
            interval_100ns: Self::FIRST_100NS,
        }
    }

    /// Whether to report now, `elapsed_100ns` into the wait; advances the
    /// schedule when it answers yes (one report per due time, however late
    /// the caller asks).
    pub const fn due(&mut self, elapsed_100ns: u64) -> bool {
        if elapsed_100ns < self.next_100ns {
            return false;
        }
        self.interval_100ns = if self.interval_100ns >= Self::CAP_100NS / 2 {
            Self::CAP_100NS
        } else {
            self.interval_100ns * 2
        };
        // Catch up when the caller came late, without a burst of reports.
        while self.next_100ns <= elapsed_100ns {
            self.next_100ns = self.next_100ns.saturating_add(self.interval_100ns);
        }
        true
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
