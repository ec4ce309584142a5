//! `wfpmonctl`: see the crate documentation and `wfpmonctl --help`.

use std::process::ExitCode;
use wfpmonctl::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with code 0, usage errors to
            // stderr with code 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    run(&cli)
}

#[cfg(windows)]
fn run(cli: &Cli) -> ExitCode {
    ExitCode::from(wfpmonctl::windows::run(cli))
}

#[cfg(not(windows))]
fn run(_cli: &Cli) -> ExitCode {
    eprintln!(
        "wfpmonctl: error: wfpmonctl runs only on Windows (it drives the Windows Filtering Platform \
         and the wfpmon driver's control device)"
    );
    ExitCode::from(wfpmonctl::exit::Kind::Other.exit_code())
}
