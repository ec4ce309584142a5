//! The command line (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::exit_codes_help;
use crate::flows::protocol_number;

/// Control tool of the wfpmon WFP callout driver.
///
/// Installs the filter-engine objects that make the engine call wfpmon's
/// callouts, says whether monitoring is active, and shows which programs
/// use the network and how fast.
#[derive(Debug, Parser)]
#[command(name = "wfpmonctl", version, after_help = exit_codes_help())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add wfpmon's provider, sublayer, 6 callouts and 6 filters (one transaction).
    ///
    /// The filters are inspection filters, ignored by the engine while the
    /// driver is stopped: stopping it never blocks traffic. Without
    /// --persistent the objects last until BFE stops (the next reboot).
    Install {
        /// Make every object persistent: it survives reboots until `uninstall`.
        #[arg(long)]
        persistent: bool,
    },
    /// Delete exactly the objects `install` adds (one transaction; absent ones are skipped).
    Uninstall,
    /// Say whether monitoring is active, in one line (details with -v).
    Status {
        /// Exit with code 8 unless the driver runs and every callout and filter is in place.
        #[arg(long)]
        check: bool,
        /// Print one JSON object (schema wfpmon.status/1).
        #[arg(long)]
        json: bool,
        /// Also list every filter-engine object.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Show the driver's statistics.
    Stats {
        /// Print JSON (schema wfpmon.stats/1; one object per line).
        #[arg(long)]
        json: bool,
        /// Exact numbers instead of human units.
        #[arg(long)]
        raw: bool,
        /// Refreshing.
        #[command(flatten)]
        watch: Watch,
    },
    /// Show the tracked flows: which program talks to whom, and how fast.
    Flows(FlowsArgs),
    /// Show flow events: connections opened and closed, with final counts.
    ///
    /// Without --follow: the events the driver still holds, oldest first.
    Events(EventsArgs),
    /// Show per-process totals (active and ended flows), like Resource Monitor.
    Procs(ProcsArgs),
    /// Live view: programs, connections and events, with keys to sort, filter and pause.
    ///
    /// Full screen; needs a terminal (for logs and scripts use `flows --watch`).
    /// Press ? in the view for the keys.
    Top(TopArgs),
    /// Turn traffic counting on or off (flows are tracked either way).
    Counting {
        /// on or off.
        #[arg(value_name = "on|off", value_parser = ["on", "off"])]
        state: String,
    },
}

/// `--watch` and `--count`.
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct Watch {
    /// Refresh every SECONDS (fractions allowed, e.g. 0.5) until Ctrl+C.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub watch: Option<f64>,
    /// Stop after K refreshes.
    #[arg(long, value_name = "K", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// Options of `flows`.
#[derive(Clone, Debug, Default, Args)]
pub struct FlowsArgs {
    /// Print JSON (schema wfpmon.flows/1; with --watch one object per line).
    #[arg(long)]
    pub json: bool,
    /// Exact numbers instead of human units.
    #[arg(long)]
    pub raw: bool,
    /// Also show the filter engine's flow handle.
    #[arg(short, long)]
    pub verbose: bool,
    /// Order of the list (largest first; pid and proc ascending).
    #[arg(long, value_enum, default_value_t)]
    pub sort: SortKey,
    /// Show only the first N flows after sorting.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Which flows to show.
    #[command(flatten)]
    pub filter: Filter,
    /// Refreshing (rates appear from the second refresh on).
    #[command(flatten)]
    pub watch: Watch,
}

/// Options of `top`.
#[derive(Clone, Debug, Args)]
pub struct TopArgs {
    /// Refresh every SECONDS (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value_t = 1.0)]
    pub interval: f64,
    /// Rates and amounts in bytes (KiB/s) or bits (kbit/s); b switches in the view.
    #[arg(long, value_enum, default_value_t)]
    pub units: crate::tui::units::Units,
    /// Numeric: no host names for remote addresses.
    #[arg(short = 'n', long)]
    pub numeric: bool,
}

/// Options of `events`.
#[allow(clippy::struct_excessive_bools)] // four independent switches
#[derive(Clone, Debug, Default, Args)]
pub struct EventsArgs {
    /// Wait for new events until Ctrl+C (from now on, unless --from-start).
    #[arg(short, long)]
    pub follow: bool,
    /// With --follow: begin with the events the driver still holds.
    #[arg(long, requires = "follow")]
    pub from_start: bool,
    /// Stop after N events (those passing the filters).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Only this kind of event.
    #[arg(long, value_parser = ["established", "ended"])]
    pub kind: Option<String>,
    /// Print one JSON object per line (schemas wfpmon.event/1 and wfpmon.dropped/1).
    #[arg(long)]
    pub json: bool,
    /// Exact numbers instead of human units.
    #[arg(long)]
    pub raw: bool,
    /// Which flows' events to show.
    #[command(flatten)]
    pub filter: Filter,
}

/// Options of `procs`.
#[derive(Clone, Debug, Default, Args)]
pub struct ProcsArgs {
    /// Print JSON (schema wfpmon.procs/1; with --watch one object per line).
    #[arg(long)]
    pub json: bool,
    /// Exact numbers instead of human units.
    #[arg(long)]
    pub raw: bool,
    /// Order of the list (largest first; pid and proc ascending).
    #[arg(long, value_enum, default_value_t)]
    pub sort: ProcSort,
    /// Show only the first N processes after sorting.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Only this process id.
    #[arg(long)]
    pub pid: Option<u64>,
    /// Only processes whose name contains NAME (case-insensitive).
    #[arg(long = "proc", value_name = "NAME")]
    pub process: Option<String>,
    /// Refreshing (rates appear from the second refresh on).
    #[command(flatten)]
    pub watch: Watch,
}

/// Sort orders of `procs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ProcSort {
    /// Bytes in + out, active and ended flows.
    #[default]
    Bytes,
    /// Current rate in + out (bytes until a second refresh).
    Rate,
    /// Active flows.
    Flows,
    /// Process id.
    Pid,
    /// Process name.
    Proc,
}

/// Filters applied after the whole flow list is fetched.
#[derive(Clone, Debug, Default, Args)]
pub struct Filter {
    /// Only flows of this process id.
    #[arg(long)]
    pub pid: Option<u64>,
    /// Only flows of processes whose name contains NAME (case-insensitive).
    #[arg(long = "proc", value_name = "NAME")]
    pub process: Option<String>,
    /// Only this protocol: tcp, udp, icmp, icmpv6 or a number.
    #[arg(long = "proto", value_name = "PROTO", value_parser = protocol_number)]
    pub protocol: Option<u8>,
    /// Only flows with this local or remote port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only IPv4 (4) or IPv6 (6) flows.
    #[arg(long, value_parser = ["4", "6"])]
    pub family: Option<String>,
    /// Only flows established in this direction.
    #[arg(long, value_parser = ["in", "out"])]
    pub direction: Option<String>,
}

/// Sort orders of `flows`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// Bytes in + out.
    #[default]
    Bytes,
    /// Current rate in + out (bytes until a second refresh).
    Rate,
    /// Oldest first.
    Age,
    /// Process id.
    Pid,
    /// Process name.
    Proc,
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.05..=3600.0).contains(&s) => Ok(s),
        _ => Err("expected a number of seconds from 0.05 to 3600".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("wfpmonctl").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    fn usage_error(args: &[&str]) -> ErrorKind {
        let err = parse(args).expect_err("rejected");
        assert_eq!(err.exit_code(), 2, "{args:?}");
        err.kind()
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flows_options() {
        let Command::Flows(a) = parse(&[
            "flows",
            "--sort",
            "rate",
            "--top",
            "5",
            "--pid",
            "4",
            "--proc",
            "chrome",
            "--proto",
            "udp",
            "--port",
            "53",
            "--family",
            "6",
            "--direction",
            "in",
            "--watch",
            "0.5",
            "--count",
            "3",
            "--json",
            "--raw",
            "-v",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.sort, a.top, a.json, a.raw, a.verbose),
            (SortKey::Rate, Some(5), true, true, true)
        );
        let f = &a.filter;
        assert_eq!(
            (f.pid, f.process.as_deref(), f.protocol, f.port),
            (Some(4), Some("chrome"), Some(17), Some(53))
        );
        assert_eq!(
            (f.family.as_deref(), f.direction.as_deref()),
            (Some("6"), Some("in"))
        );
        assert_eq!((a.watch.watch, a.watch.count), (Some(0.5), Some(3)));
        let Command::Flows(d) = parse(&["flows"]).unwrap() else {
            panic!()
        };
        assert_eq!((d.sort, d.top, d.watch.watch), (SortKey::Bytes, None, None));
        assert!(
            matches!(parse(&["flows", "--proto", "47"]), Ok(Command::Flows(a)) if a.filter.protocol == Some(47))
        );
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["flows", "--watch", "0"][..],
            &["flows", "--watch", "soon"],
            &["flows", "--count", "2"],
            &["flows", "--watch", "1", "--count", "0"],
            &["flows", "--family", "5"],
            &["flows", "--proto", "ftp"],
            &["flows", "--sort", "size"],
            &["install", "--boot-time"],
            &["counting", "maybe"],
            &["status", "--watch", "1"],
        ] {
            usage_error(args);
        }
        assert_eq!(
            usage_error(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }

    #[test]
    fn other_commands() {
        assert!(matches!(
            parse(&["install", "--persistent"]),
            Ok(Command::Install { persistent: true })
        ));
        assert!(matches!(
            parse(&["status", "--check"]),
            Ok(Command::Status {
                check: true,
                json: false,
                verbose: false
            })
        ));
        assert!(matches!(
            parse(&["counting", "off"]),
            Ok(Command::Counting { state }) if state == "off"
        ));
        assert!(matches!(
            parse(&["stats", "--watch", "2", "--count", "1"]),
            Ok(Command::Stats {
                watch: Watch {
                    watch: Some(2.0),
                    count: Some(1)
                },
                ..
            })
        ));
    }

    #[test]
    fn top_options() {
        let Command::Top(t) = parse(&["top"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            (t.interval, t.units, t.numeric),
            (1.0, crate::tui::units::Units::Bytes, false)
        );
        let Command::Top(t) =
            parse(&["top", "--interval", "0.5", "--units", "bits", "-n"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (t.interval, t.units, t.numeric),
            (0.5, crate::tui::units::Units::Bits, true)
        );
        for args in [
            &["top", "--interval", "0"][..],
            &["top", "--units", "nibbles"],
            &["top", "--watch", "1"],
        ] {
            usage_error(args);
        }
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.exit_code(), 0);
        assert!(help.render().to_string().contains(&exit_codes_help()));
    }

    #[test]
    fn events_and_procs_options() {
        let Command::Events(e) = parse(&[
            "events",
            "-f",
            "--from-start",
            "--count",
            "5",
            "--kind",
            "ended",
            "--json",
            "--raw",
            "--proc",
            "fire",
            "--port",
            "443",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                e.follow,
                e.from_start,
                e.count,
                e.kind.as_deref(),
                e.json,
                e.raw
            ),
            (true, true, Some(5), Some("ended"), true, true)
        );
        assert_eq!(
            (e.filter.process.as_deref(), e.filter.port),
            (Some("fire"), Some(443))
        );
        let Command::Procs(p) = parse(&[
            "procs", "--sort", "flows", "--top", "3", "--pid", "4", "--proc", "svc", "--watch",
            "1", "--count", "2", "--json",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                p.sort,
                p.top,
                p.pid,
                p.process.as_deref(),
                p.watch.watch,
                p.watch.count,
                p.json
            ),
            (
                ProcSort::Flows,
                Some(3),
                Some(4),
                Some("svc"),
                Some(1.0),
                Some(2),
                true
            )
        );
        for args in [
            &["events", "--from-start"][..],
            &["events", "--count", "0"],
            &["events", "--kind", "opened"],
            &["events", "--watch", "1"],
            &["procs", "--sort", "size"],
            &["procs", "--count", "2"],
        ] {
            usage_error(args);
        }
    }
}
