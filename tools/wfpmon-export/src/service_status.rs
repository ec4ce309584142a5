//! What the service reports to the service control manager (the fields of
//! `SERVICE_STATUS`), state by state, kept apart from the Windows calls so
//! that the rules are tested on any host.
//!
//! The rules, from Microsoft's documentation of `SERVICE_STATUS`,
//! `SetServiceStatus` and "Service Control Handler Function":
//!
//! - `dwCheckPoint` is incremented during a lengthy start or stop and is
//!   zero when no operation is pending; each pending report comes before
//!   the previous one's `dwWaitHint` has passed.
//! - No controls are accepted while the start is pending; `STOP` (and
//!   `SHUTDOWN`) once initialisation is done. A stop in progress accepts
//!   none (the SCM sends no control after `STOP` anyway).
//! - `dwWin32ExitCode` is `NO_ERROR` while running and on a normal stop; a
//!   failure is `ERROR_SERVICE_SPECIFIC_ERROR` with the code in
//!   `dwServiceSpecificExitCode` (the exit codes of the README).
//! - Nothing is reported after `SERVICE_STOPPED` (the process may be ended
//!   at any moment after it).

/// `SERVICE_STOPPED` .. `SERVICE_STOP_PENDING` (winsvc.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// `SERVICE_STOPPED` (1).
    Stopped = 1,
    /// `SERVICE_START_PENDING` (2).
    StartPending = 2,
    /// `SERVICE_STOP_PENDING` (3).
    StopPending = 3,
    /// `SERVICE_RUNNING` (4).
    Running = 4,
}

/// How the service ended (`dwWin32ExitCode` / `dwServiceSpecificExitCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `NO_ERROR`.
    NoError,
    /// `ERROR_SERVICE_SPECIFIC_ERROR` with this code.
    ServiceSpecific(u32),
}

/// Longest expected gap between two reports of a start (reading the
/// configuration, which may resolve the collector's name).
pub const START_WAIT_HINT_MS: u32 = 10_000;
/// Longest expected gap between two reports of a stop: the longest step is
/// the TCP queue's drain (5 s), after a pending read is cancelled (within
/// `PENDING_READ_BOUND`).
pub const STOP_WAIT_HINT_MS: u32 = 10_000;

/// One report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// `dwCurrentState`.
    pub state: State,
    /// `dwControlsAccepted` has `SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN`
    /// (else it is empty).
    pub accepts_stop: bool,
    /// The exit code fields.
    pub exit: Exit,
    /// `dwCheckPoint`.
    pub checkpoint: u32,
    /// `dwWaitHint` in milliseconds.
    pub wait_hint_ms: u32,
}

/// The service's status as last reported.
#[derive(Debug, Default)]
pub struct Status {
    state: Option<State>,
    checkpoint: u32,
}

impl Status {
    fn pending(&mut self, state: State, wait_hint_ms: u32) -> Report {
        self.checkpoint = if self.state == Some(state) {
            self.checkpoint + 1
        } else {
            1
        };
        self.state = Some(state);
        Report {
            state,
            accepts_stop: false,
            exit: Exit::NoError,
            checkpoint: self.checkpoint,
            wait_hint_ms,
        }
    }

    /// The start is under way (again: one more checkpoint).
    pub fn start_pending(&mut self) -> Option<Report> {
        matches!(self.state, None | Some(State::StartPending))
            .then(|| self.pending(State::StartPending, START_WAIT_HINT_MS))
    }

    /// Initialisation is done. Nothing when a stop is already under way.
    pub fn running(&mut self) -> Option<Report> {
        if self.state != Some(State::StartPending) {
            return None;
        }
        self.state = Some(State::Running);
        self.checkpoint = 0;
        Some(Report {
            state: State::Running,
            accepts_stop: true,
            exit: Exit::NoError,
            checkpoint: 0,
            wait_hint_ms: 0,
        })
    }

    /// The stop is under way (again: one more checkpoint). Nothing once
    /// stopped.
    pub fn stop_pending(&mut self) -> Option<Report> {
        (self.state.is_some() && self.state != Some(State::Stopped))
            .then(|| self.pending(State::StopPending, STOP_WAIT_HINT_MS))
    }

    /// The stop is under way only if one was asked for: one more checkpoint.
    pub fn progress(&mut self) -> Option<Report> {
        (self.state == Some(State::StopPending)).then(|| self.stop_pending())?
    }

    /// The service has stopped: `code` is `None` after a normal stop, else
    /// its exit code (README). Nothing when already reported.
    pub fn stopped(&mut self, code: Option<u8>) -> Option<Report> {
        if self.state == Some(State::Stopped) {
            return None;
        }
        self.state = Some(State::Stopped);
        self.checkpoint = 0;
        Some(Report {
            state: State::Stopped,
            accepts_stop: false,
            exit: code.map_or(Exit::NoError, |c| Exit::ServiceSpecific(u32::from(c))),
            checkpoint: 0,
            wait_hint_ms: 0,
        })
    }

    /// The state last reported.
    #[must_use]
    pub const fn state(&self) -> Option<State> {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_and_a_stop_count_their_checkpoints_and_end_clean() {
        let mut s = Status::default();
        let start = s.start_pending().unwrap();
        assert_eq!(
            (start.state, start.checkpoint, start.accepts_stop),
            (State::StartPending, 1, false)
        );
        assert_eq!(start.wait_hint_ms, START_WAIT_HINT_MS);
        assert_eq!(s.start_pending().unwrap().checkpoint, 2);
        let running = s.running().unwrap();
        assert_eq!(
            (
                running.checkpoint,
                running.wait_hint_ms,
                running.accepts_stop
            ),
            (0, 0, true)
        );
        assert_eq!(running.exit, Exit::NoError, "NO_ERROR while running");
        assert_eq!(s.progress(), None, "no checkpoint while running");
        let stop: Vec<u32> = (0..3)
            .map(|_| s.stop_pending().unwrap())
            .inspect(|r| assert!(!r.accepts_stop && r.state == State::StopPending))
            .map(|r| r.checkpoint)
            .collect();
        assert_eq!(stop, [1, 2, 3]);
        assert_eq!(s.progress().unwrap().checkpoint, 4);
        let stopped = s.stopped(None).unwrap();
        assert_eq!(
            (stopped.exit, stopped.checkpoint, stopped.accepts_stop),
            (Exit::NoError, 0, false)
        );
        assert_eq!(s.stop_pending(), None, "nothing after SERVICE_STOPPED");
        assert_eq!(s.stopped(Some(1)), None);
        assert_eq!(s.running(), None);
    }

    #[test]
    fn a_failed_start_stops_with_the_service_specific_code() {
        let mut s = Status::default();
        s.start_pending().unwrap();
        let r = s.stopped(Some(4)).unwrap();
        assert_eq!(r.exit, Exit::ServiceSpecific(4));
        assert_eq!(r.state, State::Stopped);
    }

    #[test]
    fn a_stop_during_the_start_is_not_undone_by_running() {
        let mut s = Status::default();
        s.start_pending().unwrap();
        assert_eq!(s.stop_pending().unwrap().checkpoint, 1);
        assert_eq!(s.running(), None);
        assert_eq!(s.state(), Some(State::StopPending));
    }
}
