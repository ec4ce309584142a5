//! The command line (clap derive).

use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::error::exit_codes_help;
use crate::flows::protocol_number;
use crate::view::units::{Unit, Units};

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
    ///
    /// The byte and packet totals are those of the flows that ended; the
    /// query costs the same at any number of flows, so it can be polled.
    /// --live adds the traffic of the flows still open, which the driver
    /// sums by visiting every flow (about 0.3 s of CPU at a million flows).
    Stats {
        /// Print JSON (schema wfpmon.stats/2; one object per line).
        #[arg(long)]
        json: bool,
        /// Include the traffic of flows still open (the driver walks every flow).
        #[arg(long)]
        live: bool,
        /// How numbers are written.
        #[command(flatten)]
        numbers: Numbers,
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
    /// Stop after N reports; a report is a refresh (with more than one, the
    /// view refreshes every --watch seconds, 1 unless given).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

impl Watch {
    /// Seconds between refreshes: `--watch`, or 1 when `--count` asks for
    /// more than one report; `None`: one report.
    pub fn interval(self) -> Option<f64> {
        self.watch
            .or_else(|| self.count.filter(|&n| n > 1).map(|_| 1.0))
    }
}

/// `--units` and `--raw`: how text and CSV write numbers (JSON: exact
/// bytes always).
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct Numbers {
    /// Traffic in bytes (IEC: KiB, MiB) or bits (SI: kbit/s, Mbit/s).
    #[arg(long, value_enum, default_value_t)]
    pub units: Unit,
    /// Exact numbers instead of human units.
    #[arg(long)]
    pub raw: bool,
}

impl Numbers {
    pub const fn units(self) -> Units {
        Units::new(self.units, self.raw)
    }
}

/// Options of `flows`.
#[allow(clippy::struct_excessive_bools)] // independent switches
#[derive(Clone, Debug, Default, Args)]
pub struct FlowsArgs {
    /// Print JSON (schema wfpmon.flows/2; with --watch one object per line).
    #[arg(long)]
    pub json: bool,
    /// Print CSV: a header, then one row per flow (with --watch, per flow and refresh).
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// How numbers are written.
    #[command(flatten)]
    pub numbers: Numbers,
    /// Numeric: no reverse-DNS names for remote addresses.
    #[arg(short = 'n', long = "numeric", conflicts_with = "host")]
    pub numeric: bool,
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
#[allow(clippy::struct_excessive_bools)] // independent switches
#[derive(Clone, Debug, Default, Args)]
pub struct EventsArgs {
    /// Wait for new events until Ctrl+C (from now on, unless --from-start or --since).
    #[arg(short, long)]
    pub follow: bool,
    /// With --follow: begin with the events the driver still holds.
    #[arg(long, requires = "follow")]
    pub from_start: bool,
    /// Only events since WHEN: a duration ago (10m, 1h30m) or a time
    /// (2026-01-15T08:00:00Z, 2026-01-15T09:00:00+01:00).
    #[arg(long, value_name = "WHEN", value_parser = since)]
    pub since: Option<Since>,
    /// Stop after N reports; a report is an event (one passing the filters).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Only this kind of event.
    #[arg(long, value_parser = ["established", "ended"])]
    pub kind: Option<String>,
    /// Print one JSON object per line (schemas wfpmon.event/2 and wfpmon.dropped/1).
    #[arg(long)]
    pub json: bool,
    /// Print CSV: a header, then one row per event.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// How numbers are written.
    #[command(flatten)]
    pub numbers: Numbers,
    /// Numeric: no reverse-DNS names for remote addresses.
    #[arg(short = 'n', long = "numeric", conflicts_with = "host")]
    pub numeric: bool,
    /// Which flows' events to show.
    #[command(flatten)]
    pub filter: Filter,
}

/// Options of `procs`.
#[derive(Clone, Debug, Default, Args)]
pub struct ProcsArgs {
    /// Print JSON (schema wfpmon.procs/2; with --watch one object per line).
    #[arg(long)]
    pub json: bool,
    /// Print CSV: a header, then one row per process (with --watch, per process and refresh).
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// How numbers are written.
    #[command(flatten)]
    pub numbers: Numbers,
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
    /// Only flows with this remote address or one in this CIDR block
    /// (10.0.0.0/8, or an IPv6 block); repeat for several.
    #[arg(long, value_name = "ADDR|CIDR", value_parser = remote)]
    pub remote: Vec<IpNet>,
    /// Only flows whose remote host name (reverse DNS) contains NAME
    /// (case-insensitive).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
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

/// `--since`: a duration before the command started, or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(SystemTime),
}

impl Since {
    /// The time meant, the command having started at `now`.
    pub fn time(self, now: SystemTime) -> SystemTime {
        match self {
            Self::Ago(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
            Self::At(t) => t,
        }
    }
}

fn since(text: &str) -> Result<Since, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(Since::Ago(d));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| Since::At(t.into()))
        .ok()
        .ok_or_else(|| {
            "expected a duration (30s, 10m, 1h30m) or a time with its offset \
             (2026-01-15T08:00:00Z, 2026-01-15T09:00:00+01:00)"
                .to_owned()
        })
}

/// `--remote`: an address (a block of one) or a CIDR block.
fn remote(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| {
            "expected an IP address or a CIDR block (192.0.2.7, 10.0.0.0/8, 2001:db8::/32)"
                .to_owned()
        })
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
            (a.sort, a.top, a.json, a.numbers.raw, a.verbose),
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
            &["flows", "--watch", "1", "--count", "0"],
            &["flows", "--family", "5"],
            &["flows", "--proto", "ftp"],
            &["flows", "--sort", "size"],
            &["install", "--boot-time"],
            &["flows", "--units", "nibbles"],
            &["flows", "--remote", "10.0.0.0/33"],
            &["flows", "--remote", "example.com"],
            &["flows", "--remote", "300.1.1.1"],
            &["flows", "--json", "--csv"],
            &["flows", "-n", "--host", "example"],
            &["events", "--since", "yesterday"],
            &["events", "--since", "2026-01-15 08:00"],
            &["events", "--csv", "--json"],
            &["procs", "--units", "bytes/s"],
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
    fn units_csv_remote_host_since_and_count() {
        let Command::Flows(a) = parse(&[
            "flows",
            "--units",
            "bits",
            "--csv",
            "--remote",
            "10.1.2.3/8",
            "--remote",
            "2001:db8::1",
            "--host",
            "Example",
            "--count",
            "3",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.numbers.units, a.csv, a.numeric),
            (Unit::Bits, true, false)
        );
        let nets: Vec<String> = a.filter.remote.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "2001:db8::1/128"]);
        assert_eq!(a.filter.host.as_deref(), Some("Example"));
        assert_eq!(
            (a.watch.count, a.watch.interval()),
            (Some(3), Some(1.0)),
            "--count N reports: refreshes 1 s apart unless --watch says"
        );
        let Command::Flows(one) = parse(&["flows", "--count", "1", "-n"]).unwrap() else {
            panic!()
        };
        assert_eq!((one.watch.interval(), one.numeric), (None, true));
        let Command::Events(e) = parse(&["events", "--since", "1h30m"]).unwrap() else {
            panic!()
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            e.since.map(|s| s.time(now)),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10_000 - 5400))
        );
        let Command::Events(e) =
            parse(&["events", "--since", "1970-01-01T01:00:00+01:00"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.since.map(|s| s.time(now)), Some(SystemTime::UNIX_EPOCH));
        let message = parse(&["flows", "--remote", "10.0.0.0/40"])
            .unwrap_err()
            .render()
            .to_string();
        assert!(
            message.contains("expected an IP address or a CIDR block"),
            "{message}"
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
                e.numbers.raw
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
        ] {
            usage_error(args);
        }
    }
}
