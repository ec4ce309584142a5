//! wfpmonctl, the control tool of the wfpmon WFP callout driver. Everything
//! but the `windows` module is platform-independent and tested on any host;
//! `tools/wfpmonctl/README.md` describes the modules.

// Off Windows the commands are reached only from the tests; the clippy run
// for x86_64-pc-windows-msvc checks for dead code with everything in use.
#![cfg_attr(not(windows), allow(dead_code))]

mod app;
mod cli;
mod client;
mod error;
mod model;
mod tui;
mod view;
#[cfg(windows)]
mod windows;

/// The control device over overlapped `DeviceIoControl` (Windows only):
/// wfpmonctl's transport, used by wfpmon-export too.
#[cfg(windows)]
pub use windows::overlapped;

// The crate's short paths: the device client, the model and the views by
// their own names (see the README's "Layout").
use client::{device, engine, plan};
use model::{events, flows, names, procs, status};
use view::text as render;

/// What `wfpmonctl flows` runs against the driver, public so that other
/// hosts can run it against a real driver image.
///
/// The native test host (`tests/native/tests/wfpmonctl_flows.rs`) runs it
/// against the real `wfpmon.sys` with a million flows.
/// [`ControlDevice`](listing::ControlDevice) is the IOCTL transport —
/// `DeviceIoControl` on Windows; [`flows`](listing::flows) is one refresh
/// of the command: the paged listing with the cursor, decoding, the rows and
/// the document, and the text (or JSON) it prints.
pub mod listing {
    pub use crate::device::{ControlDevice, IoctlError};
    pub use crate::flows::{FlowRow, FlowsDoc, Totals};

    /// The device client's requests, for other tools built on it.
    ///
    /// The exporter (`tools/wfpmon-export`) reads events, the paged process
    /// table and the statistics with wfpmonctl's own code; failures are
    /// flattened into [`client::Failure`].
    pub mod client {
        use std::time::Duration;

        use wfpmon_core::events::FlowEvent;
        use wfpmon_core::protocol::{EventsHeader, ProcessEntry, ProcessListHeader, Stats};

        use super::ControlDevice;
        use crate::error::{Error, SystemCode};

        /// A failed request.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Failure {
            /// What wfpmonctl would print.
            pub message: String,
            /// The Win32 code the call failed with (none: the answer broke
            /// the protocol).
            pub win32: Option<u32>,
        }

        impl std::fmt::Display for Failure {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.message)
            }
        }

        fn failure(e: &Error) -> Failure {
            Failure {
                message: e.to_string(),
                win32: match e.cause.as_ref().map(|c| c.code) {
                    Some(SystemCode::Win32(c)) => Some(c),
                    _ => None,
                },
            }
        }

        /// One batch of flow events from `cursor` (`wait`: a pending read).
        ///
        /// # Errors
        /// The failed request.
        pub fn read_events<D: ControlDevice>(
            device: &mut D,
            cursor: u64,
            wait: bool,
        ) -> Result<(EventsHeader, Vec<FlowEvent>), Failure> {
            crate::device::read_events(device, cursor, wait).map_err(|e| failure(&e))
        }

        /// The driver's whole process table, page by page (a busy driver
        /// is asked again after `pause`).
        ///
        /// # Errors
        /// The failed request.
        pub fn list_processes<D: ControlDevice>(
            device: &mut D,
            pause: &mut dyn FnMut(Duration),
        ) -> Result<(ProcessListHeader, Vec<ProcessEntry>), Failure> {
            crate::device::list_processes(device, pause)
                .map(|l| (l.header, l.entries))
                .map_err(|e| failure(&e))
        }

        /// The driver-wide statistics (`live`: with the traffic of open
        /// flows, which makes the driver walk them).
        ///
        /// # Errors
        /// The failed request.
        pub fn query_stats<D: ControlDevice>(device: &mut D, live: bool) -> Result<Stats, Failure> {
            crate::device::query_stats(device, live).map_err(|e| failure(&e))
        }
    }

    /// `wfpmonctl flows ARGS` once against `device`, time-stamped `now`.
    ///
    /// It runs as the command's first refresh without a console (`--watch`
    /// and `--count` are accepted and do not repeat it): the command's own
    /// paging through the driver's flow list (one batch buffer, reused),
    /// decoding, process names (asked of `process_name` once per PID),
    /// filters, sort and `--top`, the document, and the text or JSON it
    /// prints.
    ///
    /// # Errors
    /// The exit code and message `wfpmonctl` would end with: a usage error
    /// in `args`, a failed request, or an answer that breaks the protocol.
    pub fn flows(
        args: &[&str],
        device: &mut impl ControlDevice,
        mut process_name: impl FnMut(u64) -> Option<String>,
        now: std::time::SystemTime,
    ) -> Result<(FlowsDoc, String), (u8, String)> {
        crate::app::flows_once(args, device, &mut process_name, now)
            .map_err(|e| (e.exit_code(), e.to_string()))
    }
}

/// `wfpmonctl top`, public so that other hosts can run it against a real
/// driver image.
///
/// The native test host runs [`run`](top::run) against the real
/// `wfpmon.sys` in a terminal (inside tmux, `tests/native/tests/top_tmux.rs`);
/// the benchmark (`benches/top_refresh.rs`) times [`View`](top::View)'s
/// refresh and drawing, with the names the command uses
/// ([`CachedNames`](top::CachedNames)) over a fake resolver and service
/// table.
pub mod top {
    use std::time::{Duration, SystemTime};

    use clap::Parser;
    use ratatui::Terminal;
    use ratatui::backend::Backend;

    pub use crate::device::{ControlDevice, IoctlError};
    pub use crate::names::{Hosts, Lookup, NAME_STEP};
    pub use crate::tui::units::Units;
    pub use crate::tui::{CachedNames, Names, NoNames};

    use crate::cli::{Cli, Command, TopArgs};
    use crate::error::{Error, Kind};
    use crate::tui::model::Model;
    use crate::tui::source::DeviceSource;

    fn parse(args: &[&str]) -> Result<TopArgs, Error> {
        let words = ["wfpmonctl", "top"].into_iter().chain(args.iter().copied());
        let cli = Cli::try_parse_from(words).map_err(|e| Error::new(Kind::Usage, e.to_string()))?;
        let Command::Top(args) = cli.command else {
            unreachable!("the words name the top command");
        };
        Ok(args)
    }

    /// `wfpmonctl top ARGS` on this process's terminal against `device`
    /// until a quit key: process names from the driver's table (else
    /// `process_name` by PID), services and host names from `names`.
    ///
    /// # Errors
    /// The exit code and message `wfpmonctl` would end with: a usage
    /// error, standard output not a terminal (9), a failed request, a
    /// terminal failure.
    pub fn run(
        args: &[&str],
        device: &mut impl ControlDevice,
        process_name: impl FnMut(u64) -> Option<String>,
        names: &dyn Names,
    ) -> Result<(), (u8, String)> {
        let code = |e: Error| (e.exit_code(), e.to_string());
        let args = parse(args).map_err(code)?;
        let mut source = DeviceSource::new(device, process_name, Vec::new(), std::thread::sleep);
        crate::tui::top(&args, &mut source, names, &mut || false).map_err(code)
    }

    /// The live view without a terminal of its own: its refresh and its
    /// drawing into any ratatui backend (for benchmarks).
    pub struct View<'d, D, P> {
        model: Model,
        source: DeviceSource<'d, D, P>,
    }

    impl<'d, D: ControlDevice, P: FnMut(u64) -> Option<String>> View<'d, D, P> {
        /// The view `wfpmonctl top ARGS` shows, reading `device`.
        ///
        /// # Errors
        /// A usage error in `args` (exit code and message).
        pub fn new(
            args: &[&str],
            device: &'d mut D,
            process_name: P,
        ) -> Result<Self, (u8, String)> {
            let args = parse(args).map_err(|e| (e.exit_code(), e.to_string()))?;
            Ok(Self {
                model: crate::tui::model(&args),
                source: DeviceSource::new(device, process_name, Vec::new(), std::thread::sleep),
            })
        }

        /// One sample of the driver taken into the view, at wall time
        /// `wall` and monotonic time `mono`, with services and host names
        /// from `names` (as the command asks them: per program and per
        /// connection).
        ///
        /// # Errors
        /// A failed request (exit code and message).
        pub fn refresh(
            &mut self,
            wall: SystemTime,
            mono: Duration,
            names: &dyn Names,
        ) -> Result<(), (u8, String)> {
            use crate::tui::source::Source;
            let sample = self
                .source
                .sample(wall, mono)
                .map_err(|e| (e.exit_code(), e.to_string()))?;
            let source = &mut self.source;
            self.model.update(
                sample,
                &mut |key, pid| source.name(key, pid),
                names,
                &mut crate::view::units::local_offset,
            );
            Ok(())
        }

        /// Draws the view.
        ///
        /// # Errors
        /// The backend's.
        pub fn draw<B: Backend>(&mut self, terminal: &mut Terminal<B>) -> Result<(), B::Error> {
            terminal
                .draw(|frame| crate::tui::view::draw(frame, &mut self.model))
                .map(drop)
        }

        /// Applies a key as the terminal view does; `false` when it quits.
        pub fn key(&mut self, key: ratatui::crossterm::event::KeyEvent) -> bool {
            crate::tui::keys::handle(&mut self.model, key) != crate::tui::keys::Action::Quit
        }

        /// Connections and programs the view holds.
        #[must_use]
        pub fn counts(&self) -> (usize, usize) {
            (self.model.conns.len(), self.model.programs.len())
        }
    }
}

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command, prints a failure to standard
/// error, and returns the exit code (see `wfpmonctl --help`).
#[must_use]
pub fn main() -> ExitCode {
    // Not `Cli::parse()`, which would end the process itself: help goes to
    // stdout with 0, usage errors to stderr with 2, all through `main`'s return.
    let result = cli::Cli::try_parse().map_err(|e| {
        let _ = e.print();
        u8::try_from(e.exit_code()).unwrap_or(2)
    });
    match result.map(|cli| run(&cli)) {
        Ok(Ok(code)) | Err(code) => code.into(),
        Ok(Err(e)) => {
            eprintln!("wfpmonctl: error: {e}");
            e.exit_code().into()
        }
    }
}

#[cfg(windows)]
fn run(cli: &cli::Cli) -> Result<u8, error::Error> {
    app::run(
        cli,
        &mut windows::Windows::new(),
        &mut std::io::stdout().lock(),
    )
}

#[cfg(not(windows))]
fn run(_: &cli::Cli) -> Result<u8, error::Error> {
    Err(error::Error::new(
        error::Kind::Other,
        "wfpmonctl runs only on Windows (it drives the Windows Filtering Platform and the wfpmon driver)",
    ))
}
