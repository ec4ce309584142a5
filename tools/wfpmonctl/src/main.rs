//! `wfpmonctl`: see the crate documentation and `wfpmonctl --help`.

use std::process::ExitCode;

use clap::Parser;
use wfpmonctl::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("wfpmonctl: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(windows)]
fn run(cli: &Cli) -> Result<u8, wfpmonctl::error::Error> {
    let mut system = wfpmonctl::windows::Windows::new();
    wfpmonctl::app::run(cli, &mut system, &mut std::io::stdout().lock())
}

#[cfg(not(windows))]
fn run(_: &Cli) -> Result<u8, wfpmonctl::error::Error> {
    Err(wfpmonctl::error::Error::new(
        wfpmonctl::error::Kind::Other,
        "wfpmonctl runs only on Windows (it drives the Windows Filtering Platform and the wfpmon driver)",
    ))
}
