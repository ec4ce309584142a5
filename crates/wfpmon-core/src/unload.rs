//! The callout unregistration protocol of "Unloading a Callout Driver".
//!
//! A callout driver must not return from its unload function until all its
//! callouts are unregistered, and must delete its device object only after
//! that (the seed documents; `FwpsCalloutUnregisterById0` remarks). For each
//! callout: call `FwpsCalloutUnregisterById0`. `STATUS_SUCCESS` or
//! `STATUS_FWP_CALLOUT_NOT_FOUND` means the engine has let the callout go —
//! but the callout is finished only once **none of its flow records is left**
//! as well (see "The engine lets go, records remain" below).
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
//! # The engine lets go, records remain
//!
//! The driver knows exactly what it still owns: a flow record leaves the
//! registry only in the callout's `flowDeleteFn`, and the engine owes one
//! call of it for every context it accepted. The documented engine answers
//! `STATUS_DEVICE_BUSY` while any context exists, deferred deletions
//! included, so `STATUS_SUCCESS` comes only when nothing is owed. An engine
//! that answers `STATUS_SUCCESS` or `STATUS_FWP_CALLOUT_NOT_FOUND` while
//! deletions it deferred (`FwpsFlowRemoveContext0` answered
//! `STATUS_PENDING`) are still to come would have the driver delete its
//! device and return with those callbacks still owed — the engine would
//! call into an unloaded image. So the engine's answer is necessary, not
//! sufficient: after it, the protocol keeps waiting (with the same
//! back-off, no bound) until the driver tracks no record of the callout,
//! and then waits once more ([`MIN_WAIT_100NS`]) for the last callback to
//! leave the image: a count reaching zero is decremented *inside* that
//! callback, which still has its return to run (no counter can prove a
//! processor has left the image; only the engine's documented answer can,
//! and this engine did not give it). No removal pass is made once the
//! engine has let go: it no longer knows the callout's id.
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
    /// Let `timeout_100ns` pass in full — however often the driver's event
    /// is signalled meanwhile — then [`Unregistration::on_waited`]: the
    /// final wait for the last flow-delete callback to return, once the
    /// engine has let go with records of the callout left.
    Grace {
        /// Relative time, 100 ns units.
        timeout_100ns: i64,
    },
    /// The callout is no longer registered, and no record of it is left.
    Finished(Outcome),
}

/// How one callout's unregistration ended. Both mean "no longer
/// registered, and no flow record of it left": the protocol has no other
/// end.
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
    backoff: Backoff,
    /// Flows of the callout still tracked after the previous removal pass.
    tracked_before: Option<usize>,
    last_status: Option<i32>,
    /// The engine has let the callout go (its answer), while records of it
    /// may remain.
    released: Option<Outcome>,
    /// The engine let go while records remained: the final wait for the
    /// last flow-delete callback's return is still to come.
    grace_owed: bool,
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
            backoff: Backoff::new(),
            tracked_before: None,
            last_status: None,
            released: None,
            grace_owed: false,
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

    /// Whether the engine has let the callout go (`STATUS_SUCCESS` or
    /// `STATUS_FWP_CALLOUT_NOT_FOUND`) while the protocol still waits for
    /// flow records of it to be deleted.
    #[must_use]
    pub const fn released(&self) -> bool {
        self.released.is_some() && !matches!(self.next, Step::Finished(_))
    }

    /// Feeds back the status `FwpsCalloutUnregisterById0` returned, and how
    /// many flow records of the callout the driver still tracks, read after
    /// the call returned.
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::Unregister`].
    pub fn on_unregister(&mut self, status: i32, still_tracked: usize) {
        debug_assert_eq!(
            self.next,
            Step::Unregister,
            "unregister result out of order"
        );
        self.attempts = self.attempts.saturating_add(1);
        if self.last_status.is_some_and(|last| last != status) {
            // The engine's answer changed: something moved; look again soon.
            self.backoff.reset();
        }
        self.last_status = Some(status);
        self.next = match status {
            status::STATUS_SUCCESS => self.let_go(
                Outcome::Unregistered {
                    attempts: self.attempts,
                },
                still_tracked,
            ),
            status::STATUS_FWP_CALLOUT_NOT_FOUND | status::FWP_E_CALLOUT_NOT_FOUND => {
                self.let_go(Outcome::AlreadyGone, still_tracked)
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
            self.backoff.reset();
        }
        self.tracked_before = Some(still_tracked);
        self.next = if removed > 0 && still_tracked == 0 {
            Step::Unregister
        } else {
            self.wait()
        };
    }

    /// Feeds back that a wait ([`Step::Wait`] or [`Step::Grace`]) ended, and how many
    /// flow records of the callout the driver still tracks.
    ///
    /// Before the engine let the callout go, the next step is another
    /// unregister call. After, it is [`Step::Finished`] once no record is
    /// left (and the final wait for the last callback's return is done),
    /// otherwise another wait: never an unregister call or a removal pass,
    /// since the engine no longer knows the callout's id.
    ///
    /// # Panics
    /// In debug builds, when the current step is not [`Step::Wait`].
    pub fn on_waited(&mut self, still_tracked: usize) {
        debug_assert!(
            matches!(self.next, Step::Wait { .. } | Step::Grace { .. }),
            "wait result out of order"
        );
        self.next = self.released.map_or(Step::Unregister, |outcome| {
            self.drain(outcome, still_tracked)
        });
    }

    /// The engine let the callout go: finished when no record is left,
    /// else wait for the flow-delete callbacks it still owes.
    const fn let_go(&mut self, outcome: Outcome, still_tracked: usize) -> Step {
        self.released = Some(outcome);
        if still_tracked == 0 {
            Step::Finished(outcome)
        } else {
            self.grace_owed = true;
            self.backoff.reset();
            self.tracked_before = Some(still_tracked);
            self.wait()
        }
    }

    /// After the engine let go with records left: wait until none is left,
    /// then once more (the grace for the last callback's return).
    fn drain(&mut self, outcome: Outcome, still_tracked: usize) -> Step {
        if still_tracked > 0 {
            if self
                .tracked_before
                .is_some_and(|before| still_tracked < before)
            {
                self.backoff.reset();
            }
            self.tracked_before = Some(still_tracked);
            return self.wait();
        }
        if self.grace_owed {
            self.grace_owed = false;
            return Step::Grace {
                timeout_100ns: MIN_WAIT_100NS,
            };
        }
        Step::Finished(outcome)
    }

    /// The next wait, and the one after it twice as long (capped).
    const fn wait(&mut self) -> Step {
        Step::Wait {
            timeout_100ns: self.backoff.next_100ns(),
        }
    }
}

/// The lengths of the waits of a loop that waits for as long as it takes.
///
/// [`MIN_WAIT_100NS`] first, doubling up to [`MAX_WAIT_100NS`] while nothing
/// changes, back to the minimum as soon as something does ([`Backoff::reset`]).
///
/// Both unbounded waits of teardown use it: [`Unregistration`] for one
/// callout, and the driver's final wait for the registry to empty before it
/// deletes its device object. It has no bound by design (see the module's
/// documentation); only the wait's length grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next_100ns: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Waits that begin at the minimum.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            next_100ns: MIN_WAIT_100NS,
        }
    }

    /// The length of the wait to make now; the one after it is twice as
    /// long, up to [`MAX_WAIT_100NS`].
    pub const fn next_100ns(&mut self) -> i64 {
        let now = self.next_100ns;
        self.next_100ns = if now >= MAX_WAIT_100NS / 2 {
            MAX_WAIT_100NS
        } else {
            now * 2
        };
        now
    }

    /// Progress was seen: the next wait is the minimum again.
    pub const fn reset(&mut self) {
        self.next_100ns = MIN_WAIT_100NS;
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
