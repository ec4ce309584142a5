//! Runs the built `wfpmonctl` executable: help, usage errors and, off
//! Windows, the "Windows only" refusal, with their exit codes.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wfpmonctl"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_exits_zero_and_lists_subcommands_and_exit_codes() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for word in [
        "install",
        "uninstall",
        "status",
        "stats",
        "flows",
        "events",
        "procs",
        "counting",
        "Exit codes:",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    for code in 0..=10 {
        assert!(
            help.contains(&format!("\n  {code:>2}  ")),
            "exit code {code} undocumented"
        );
    }
}

#[test]
fn flows_help_documents_sorting_filtering_and_watching() {
    let out = run(&["flows", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for option in [
        "--sort",
        "--top",
        "--pid",
        "--proc",
        "--proto",
        "--port",
        "--family",
        "--direction",
        "--watch",
        "--count",
        "--json",
        "--raw",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}

#[test]
fn usage_errors_exit_two() {
    for args in [
        &[][..],
        &["bogus"][..],
        &["install", "--boot-time"][..],
        &["flows", "--watch", "0"][..],
        &["flows", "--top", "x"][..],
        &["counting", "sideways"][..],
        &["events", "--from-start"][..],
        &["procs", "--sort", "nope"][..],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[cfg(not(windows))]
#[test]
fn valid_commands_off_windows_exit_one_with_an_explanation() {
    for args in [
        &["status"][..],
        &["install", "--persistent"][..],
        &["counting", "on"][..],
        &["events", "--follow"][..],
        &["procs"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("runs only on Windows"),
            "{}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}
