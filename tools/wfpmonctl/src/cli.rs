//! The command line, built with clap's builder API.
//!
//! (Not clap's derive: the code `clap_derive` generates carries
//! `#[allow(clippy::restriction)]`, a hard error under this workspace's
//! `forbid` of restriction lints; see the crate's `Cargo.toml`.) The parsed
//! form is the plain [`Cli`] / [`Command`] data below, so the rest of the
//! tool never sees clap.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, builder::PossibleValue, value_parser};

use crate::exit::EXIT_CODES_HELP;
use crate::plan::InstallOptions;

const ABOUT: &str = "Control tool of the wfpmon WFP callout driver";
const LONG_ABOUT: &str = "Control tool of the wfpmon WFP callout driver.

Installs and removes the filter-engine objects that make the filter engine \
call wfpmon's callouts, reports their state, and reads the driver's \
statistics and flow table through its control device.";

const INSTALL_ABOUT: &str =
    "Add wfpmon's provider, sublayer, callouts and filters to the filter engine";
const INSTALL_LONG_ABOUT: &str =
    "Add wfpmon's provider, sublayer, callouts and filters to the filter \
engine, in one transaction: either everything is added or nothing is.

Every filter calls its callout with FWP_ACTION_CALLOUT_INSPECTION, which the \
filter engine ignores while the driver is not running: stopping the driver \
never blocks traffic. Without options the objects last until BFE stops \
(the next reboot at the latest).";
const PERSISTENT_HELP: &str = "Make every object persistent (FWPM_*_FLAG_PERSISTENT): it survives \
BFE restarts and reboots until `wfpmonctl uninstall`";
const BOOT_TIME_HELP: &str = "Make the filters boot-time (FWPM_FILTER_FLAG_BOOTTIME): enforced from \
TCP/IP start until BFE has started, then removed by BFE. Boot-time filters may \
only reference persistent callouts, so the provider, sublayer and callouts are \
made persistent. Cannot be combined with --persistent: a filter is either \
persistent or boot-time";
const UNINSTALL_ABOUT: &str = "Delete exactly the objects `install` adds, in one transaction";
const UNINSTALL_LONG_ABOUT: &str = "Delete exactly the objects `install` adds (filters, callouts, \
sublayer, provider, by their fixed keys), in one transaction. Objects already \
absent are skipped, so it can be run any time.";
const STATUS_ABOUT: &str =
    "Show the driver service, BFE, the control device, and the state of every callout and filter";
const STATS_ABOUT: &str = "Show the driver's statistics";
const FLOWS_ABOUT: &str = "Show the flows the driver tracks";
const COUNTING_ABOUT: &str = "Turn traffic counting on or off (flows are tracked either way)";

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// What to do.
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `install`.
    Install(InstallArgs),
    /// `uninstall`.
    Uninstall,
    /// `status`.
    Status(FormatArgs),
    /// `stats`.
    Stats(WatchArgs),
    /// `flows`.
    Flows(FlowsArgs),
    /// `counting on|off`.
    Counting(CountingArgs),
}

/// Options of `install`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallArgs {
    /// `--persistent`.
    pub persistent: bool,
    /// `--boot-time`.
    pub boot_time: bool,
}

impl InstallArgs {
    /// The plan options.
    #[must_use]
    pub const fn options(self) -> InstallOptions {
        InstallOptions {
            persistent: self.persistent,
            boot_time: self.boot_time,
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatArgs {
    /// `--json`.
    pub json: bool,
}

/// Output format and refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchArgs {
    /// `--json`.
    pub json: bool,
    /// `--watch SECONDS`.
    pub watch: Option<u64>,
}

/// Options of `flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowsArgs {
    /// Format and refresh.
    pub view: WatchArgs,
    /// `--max N` (0: all).
    pub max: u32,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Count traffic.
    On,
    /// Stop counting traffic.
    Off,
}

/// Options of `counting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountingArgs {
    /// The new state.
    pub state: Switch,
}

fn json_arg(help: &'static str) -> Arg {
    Arg::new("json")
        .long("json")
        .action(ArgAction::SetTrue)
        .help(help)
}

fn watch_arg() -> Arg {
    Arg::new("watch")
        .long("watch")
        .value_name("SECONDS")
        .value_parser(value_parser!(u64).range(1..=3600))
        .help("Refresh every SECONDS seconds (1-3600) until interrupted")
}

fn subcommand(name: &'static str, about: &'static str) -> clap::Command {
    clap::Command::new(name)
        .about(about)
        .after_help(EXIT_CODES_HELP)
}

impl Cli {
    /// The clap definition of the command line.
    #[must_use]
    pub fn command() -> clap::Command {
        clap::Command::new("wfpmonctl")
            .version(env!("CARGO_PKG_VERSION"))
            .about(ABOUT)
            .long_about(LONG_ABOUT)
            .after_help(EXIT_CODES_HELP)
            .propagate_version(true)
            .subcommand_required(true)
            .arg_required_else_help(true)
            .subcommand(
                subcommand("install", INSTALL_ABOUT)
                    .long_about(INSTALL_LONG_ABOUT)
                    .arg(
                        Arg::new("persistent")
                            .long("persistent")
                            .action(ArgAction::SetTrue)
                            .help(PERSISTENT_HELP),
                    )
                    .arg(
                        Arg::new("boot-time")
                            .long("boot-time")
                            .action(ArgAction::SetTrue)
                            .conflicts_with("persistent")
                            .help(BOOT_TIME_HELP),
                    ),
            )
            .subcommand(subcommand("uninstall", UNINSTALL_ABOUT).long_about(UNINSTALL_LONG_ABOUT))
            .subcommand(
                subcommand("status", STATUS_ABOUT).arg(json_arg("Print JSON instead of tables")),
            )
            .subcommand(
                subcommand("stats", STATS_ABOUT)
                    .arg(json_arg(
                        "Print JSON instead of a table (one object per refresh)",
                    ))
                    .arg(watch_arg()),
            )
            .subcommand(
                subcommand("flows", FLOWS_ABOUT)
                    .arg(json_arg(
                        "Print JSON instead of a table (one object per refresh)",
                    ))
                    .arg(watch_arg())
                    .arg(
                        Arg::new("max")
                            .long("max")
                            .value_name("N")
                            .value_parser(value_parser!(u32))
                            .default_value("0")
                            .help("Show at most N flows (0: all)"),
                    ),
            )
            .subcommand(
                subcommand("counting", COUNTING_ABOUT).arg(
                    Arg::new("state")
                        .required(true)
                        .value_parser([
                            PossibleValue::new("on").help("Count traffic"),
                            PossibleValue::new("off").help("Stop counting traffic"),
                        ])
                        .help("The new state"),
                ),
            )
    }

    /// Parses the process's arguments.
    ///
    /// # Errors
    /// clap's error: usage errors (exit code 2), or the help/version
    /// "errors" (exit code 0).
    pub fn try_parse() -> Result<Self, clap::Error> {
        Self::try_parse_from(std::env::args_os())
    }

    /// Parses `args` (the first one is the program name).
    ///
    /// # Errors
    /// As [`Cli::try_parse`].
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Self::command();
        let matches = command.try_get_matches_from_mut(args)?;
        Self::from_matches(&matches)
            .map_err(|message| command.error(ErrorKind::InvalidValue, message))
    }

    fn from_matches(m: &ArgMatches) -> Result<Self, String> {
        let command = match m.subcommand() {
            Some(("install", s)) => Command::Install(InstallArgs {
                persistent: s.get_flag("persistent"),
                boot_time: s.get_flag("boot-time"),
            }),
            Some(("uninstall", _)) => Command::Uninstall,
            Some(("status", s)) => Command::Status(FormatArgs {
                json: s.get_flag("json"),
            }),
            Some(("stats", s)) => Command::Stats(watch_args(s)),
            Some(("flows", s)) => Command::Flows(FlowsArgs {
                view: watch_args(s),
                max: s.get_one::<u32>("max").copied().unwrap_or(0),
            }),
            Some(("counting", s)) => Command::Counting(CountingArgs {
                state: match s.get_one::<String>("state").map(String::as_str) {
                    Some("on") => Switch::On,
                    Some("off") => Switch::Off,
                    other => return Err(format!("invalid counting state {other:?}")),
                },
            }),
            other => {
                return Err(format!(
                    "unexpected subcommand {:?}",
                    other.map(|(name, _)| name)
                ));
            }
        };
        Ok(Self { command })
    }
}

fn watch_args(m: &ArgMatches) -> WatchArgs {
    WatchArgs {
        json: m.get_flag("json"),
        watch: m.get_one::<u64>("watch").copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("wfpmonctl").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        let err = parse(args).expect_err("should be rejected");
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        err
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn install() {
        assert_eq!(
            parse(&["install"]).unwrap(),
            Command::Install(InstallArgs {
                persistent: false,
                boot_time: false
            })
        );
        assert_eq!(
            parse(&["install", "--persistent"]).unwrap(),
            Command::Install(InstallArgs {
                persistent: true,
                boot_time: false
            })
        );
        let Command::Install(a) = parse(&["install", "--boot-time"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            a.options(),
            InstallOptions {
                persistent: false,
                boot_time: true
            }
        );
        let err = usage_error(&["install", "--persistent", "--boot-time"]);
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        usage_error(&["install", "--json"]);
    }

    #[test]
    fn uninstall() {
        assert_eq!(parse(&["uninstall"]).unwrap(), Command::Uninstall);
        usage_error(&["uninstall", "--persistent"]);
    }

    #[test]
    fn status() {
        assert_eq!(
            parse(&["status"]).unwrap(),
            Command::Status(FormatArgs { json: false })
        );
        assert_eq!(
            parse(&["status", "--json"]).unwrap(),
            Command::Status(FormatArgs { json: true })
        );
        usage_error(&["status", "--watch", "1"]);
    }

    #[test]
    fn stats() {
        assert_eq!(
            parse(&["stats"]).unwrap(),
            Command::Stats(WatchArgs {
                json: false,
                watch: None
            })
        );
        assert_eq!(
            parse(&["stats", "--json", "--watch", "5"]).unwrap(),
            Command::Stats(WatchArgs {
                json: true,
                watch: Some(5)
            })
        );
        assert_eq!(
            parse(&["stats", "--watch=3600"]).unwrap(),
            Command::Stats(WatchArgs {
                json: false,
                watch: Some(3600)
            })
        );
        usage_error(&["stats", "--watch"]);
        usage_error(&["stats", "--watch", "0"]);
        usage_error(&["stats", "--watch", "3601"]);
        usage_error(&["stats", "--watch", "-1"]);
        usage_error(&["stats", "--watch", "soon"]);
    }

    #[test]
    fn flows() {
        assert_eq!(
            parse(&["flows"]).unwrap(),
            Command::Flows(FlowsArgs {
                view: WatchArgs {
                    json: false,
                    watch: None
                },
                max: 0
            })
        );
        assert_eq!(
            parse(&["flows", "--max", "20", "--json", "--watch", "2"]).unwrap(),
            Command::Flows(FlowsArgs {
                view: WatchArgs {
                    json: true,
                    watch: Some(2)
                },
                max: 20
            })
        );
        usage_error(&["flows", "--max", "-3"]);
        usage_error(&["flows", "--max", "many"]);
        usage_error(&["flows", "extra"]);
    }

    #[test]
    fn counting() {
        assert_eq!(
            parse(&["counting", "on"]).unwrap(),
            Command::Counting(CountingArgs { state: Switch::On })
        );
        assert_eq!(
            parse(&["counting", "off"]).unwrap(),
            Command::Counting(CountingArgs { state: Switch::Off })
        );
        usage_error(&["counting"]);
        usage_error(&["counting", "maybe"]);
        usage_error(&["counting", "on", "off"]);
    }

    #[test]
    fn bad_invocations() {
        let err = usage_error(&[]);
        assert_eq!(
            err.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(
            usage_error(&["frobnicate"]).kind(),
            ErrorKind::InvalidSubcommand
        );
        assert_eq!(
            usage_error(&["stats", "--bogus"]).kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn help_and_version_exit_zero_and_document_exit_codes() {
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
        let text = help.render().to_string();
        assert!(text.contains("Exit codes:"), "{text}");
        for sub in [
            "install",
            "uninstall",
            "status",
            "stats",
            "flows",
            "counting",
        ] {
            assert!(text.contains(sub), "{sub} in help");
            let sub_help = parse(&[sub, "--help"]).unwrap_err();
            assert_eq!(sub_help.exit_code(), 0);
            assert!(
                sub_help
                    .render()
                    .to_string()
                    .contains("7  the driver speaks"),
                "{sub}"
            );
        }
        assert_eq!(parse(&["--version"]).unwrap_err().exit_code(), 0);
    }
}
