//! wfpmonctl, the control tool of the wfpmon WFP callout driver. Everything
//! but the `windows` module is platform-independent and tested on any host;
//! `tools/wfpmonctl/README.md` describes the modules.

// Off Windows the commands are reached only from the tests; the clippy run
// for x86_64-pc-windows-msvc checks for dead code with everything in use.
#![cfg_attr(not(windows), allow(dead_code))]

mod app;
mod cli;
mod device;
mod engine;
mod error;
mod events;
mod flows;
mod plan;
mod procs;
mod render;
mod status;
#[cfg(windows)]
mod windows;

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
                win32: match e.system {
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
