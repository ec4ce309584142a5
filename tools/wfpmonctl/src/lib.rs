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
mod view;
#[cfg(windows)]
mod windows;

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
