//! `wfpmonctl`: see the crate documentation and `wfpmonctl --help`.

fn main() -> std::process::ExitCode {
    wfpmonctl::main()
}
