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
