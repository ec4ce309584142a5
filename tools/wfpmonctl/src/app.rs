//! Running a command against a [`System`]: the Windows one in
//! `crate::windows`, a simulated one in the tests.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use clap::Parser;
use serde::Serialize;
use wfpmon_core::catalog;

use crate::cli::{Cli, Command, FlowsArgs, Watch};
use crate::device::{self, ControlDevice};
use crate::engine::{self, FilterEngine};
use crate::error::{Error, Kind};
use crate::flows::{FlowsDoc, Previous};
use crate::render::{self, StatsDoc};
use crate::status::{Observed, StatusDoc};

/// Service name of the Base Filtering Engine.
pub const BFE_SERVICE: &str = "BFE";

/// Standard output when it is a console: its width, and whether it takes
/// escape sequences (virtual terminal processing), so a refresh can clear it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub width: usize,
    pub vt: bool,
}

/// What the commands need from the operating system.
pub trait System {
    type Engine: FilterEngine;
    type Device: ControlDevice;
    /// Opens a filter-engine session; a `dynamic` one deletes what it added
    /// when it closes.
    fn engine(&mut self, dynamic: bool) -> Result<Self::Engine, Error>;
    /// Opens the control device, for writing too when `write`.
    fn device(&mut self, write: bool) -> Result<Self::Device, Error>;
    /// `not_installed` or a [`crate::status::service_state_name`].
    fn service_state(&mut self, name: &str) -> Result<&'static str, Error>;
    /// Image file name of a process, if it can be read.
    fn process_name(&mut self, pid: u64) -> Option<String>;
    /// Standard output as a console, or `None` (file, pipe).
    fn terminal(&mut self) -> Option<Terminal>;
    /// Wall-clock time and a monotonic time.
    fn now(&mut self) -> (SystemTime, Duration);
    fn sleep(&mut self, duration: Duration);
    /// Whether Ctrl+C (or Ctrl+Break) was pressed.
    fn interrupted(&mut self) -> bool;
}

/// Writes `text`; `false` when the reader went away (a closed pipe).
fn emit(out: &mut dyn Write, text: &str) -> Result<bool, Error> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::new(
            Kind::Other,
            format!("writing the output failed: {e}"),
        )),
    }
}

/// One compact JSON line, or the text.
fn show<T: Serialize>(doc: &T, json: bool, text: impl FnOnce(&T) -> String) -> String {
    // Serializing these plain structures cannot fail.
    let line = || serde_json::to_string(doc).unwrap_or_default() + "\n";
    if json { line() } else { text(doc) }
}

fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Renders once, or every `--watch` seconds until `--count`, Ctrl+C or a
/// closed output; ends with exit code 0 in all three cases. `clear` clears
/// the screen before each refresh.
fn repeat<S: System>(
    sys: &mut S,
    out: &mut dyn Write,
    watch: Watch,
    clear: bool,
    mut render: impl FnMut(&mut S) -> Result<String, Error>,
) -> Result<u8, Error> {
    for n in 1.. {
        let mut text = render(sys)?;
        if clear {
            text.insert_str(0, "\x1b[H\x1b[2J");
        } else if n > 1 && !text.starts_with('{') {
            text.insert(0, '\n');
        }
        let (Some(seconds), true) = (watch.watch, emit(out, &text)?) else {
            return Ok(0);
        };
        if watch.count.is_some_and(|k| n >= k) {
            return Ok(0);
        }
        let mut left = Duration::from_secs_f64(seconds);
        while !left.is_zero() && !sys.interrupted() {
            let step = left.min(Duration::from_millis(100));
            sys.sleep(step);
            left -= step;
        }
        if sys.interrupted() {
            return Ok(0);
        }
    }
    Ok(0)
}

/// Runs `cli`; returns the exit code.
pub fn run<S: System>(cli: &Cli, sys: &mut S, out: &mut dyn Write) -> Result<u8, Error> {
    let terminal = sys.terminal();
    let vt = terminal.is_some_and(|t| t.vt);
    match &cli.command {
        Command::Install { persistent } => {
            let added = engine::install(&mut sys.engine(false)?, *persistent)?.len();
            let lifetime = if *persistent {
                "persistent: they survive reboots until `wfpmonctl uninstall`"
            } else {
                "static: they last until BFE stops (--persistent keeps them across reboots)"
            };
            let text =
                format!("installed {added} filter-engine objects in one transaction; {lifetime}\n");
            emit(out, &text).map(|_| 0)
        }
        Command::Uninstall => {
            let done = engine::uninstall(&mut sys.engine(false)?)?;
            let (deleted, absent) = (done.deleted.len(), done.absent.len());
            let text = format!("uninstalled: {deleted} objects deleted, {absent} already absent\n");
            emit(out, &text).map(|_| 0)
        }
        Command::Status {
            check,
            json,
            verbose,
        } => {
            let observed = Observed {
                driver: sys.service_state(catalog::SERVICE_NAME)?,
                bfe: sys.service_state(BFE_SERVICE)?,
                device: sys.device(false).map(drop),
                engine: sys.engine(true).and_then(|mut e| engine::query(&mut e)),
            };
            let doc = StatusDoc::new(&observed, timestamp(sys.now().0));
            emit(out, &show(&doc, *json, |d| d.text(*verbose)))?;
            Ok(match &observed.engine {
                Err(e) => e.exit_code(),
                Ok(_) if *check && !doc.active => Kind::Inactive as u8,
                Ok(_) => 0,
            })
        }
        Command::Stats { json, raw, watch } => {
            let mut dev = sys.device(false)?;
            let clear = watch.watch.is_some() && !json && vt;
            repeat(sys, out, *watch, clear, |sys| {
                let stats = device::query_stats(&mut dev)?;
                let doc = StatsDoc::new(&stats, timestamp(sys.now().0));
                Ok(show(&doc, *json, |d| d.text(&stats, *raw)))
            })
        }
        Command::Flows(args) => flows(sys, out, args, terminal),
        Command::Counting { state } => {
            let on = state == "on";
            device::set_counting(&mut sys.device(true)?, on)?;
            let text = format!("traffic counting is {}\n", if on { "on" } else { "off" });
            emit(out, &text).map(|_| 0)
        }
    }
}

/// `flows`: snapshots with process names, and rates from the previous one.
fn flows<S: System>(
    sys: &mut S,
    out: &mut dyn Write,
    args: &FlowsArgs,
    terminal: Option<Terminal>,
) -> Result<u8, Error> {
    let mut dev = sys.device(false)?;
    let clear = args.watch.watch.is_some() && !args.json && terminal.is_some_and(|t| t.vt);
    let mut previous: Option<(Duration, Previous)> = None;
    repeat(sys, out, args.watch, clear, |sys| {
        let list = device::list_flows(&mut dev)?;
        let (wall, now) = sys.now();
        let before = previous.as_mut().map(|(at, p)| {
            p.elapsed = now.saturating_sub(*at).as_secs_f64();
            &*p
        });
        let names = &mut |p| sys.process_name(p);
        let doc = FlowsDoc::from_list(args, timestamp(wall), &list, before, names);
        previous = Some((now, Previous::of(&list.entries)));
        Ok(flows_output(&doc, args, terminal.map(|t| t.width)))
    })
}

/// What a refresh of `flows` prints for `doc`: JSON, or the table fitted
/// to `width`.
fn flows_output(doc: &FlowsDoc, args: &FlowsArgs, width: Option<usize>) -> String {
    show(doc, args.json, |d| {
        render::flows_text(d, args.raw, args.verbose, width)
    })
}

/// `wfpmonctl flows ARGS` once (as its first refresh, without a console)
/// against `device` at `now`: the whole list paged from the driver, the
/// document, and what the command prints for it. See
/// [`crate::listing::flows`].
pub fn flows_once<D: ControlDevice>(
    args: &[&str],
    device: &mut D,
    process_name: &mut impl FnMut(u64) -> Option<String>,
    now: SystemTime,
) -> Result<(FlowsDoc, String), Error> {
    let words = ["wfpmonctl", "flows"]
        .into_iter()
        .chain(args.iter().copied());
    let cli = Cli::try_parse_from(words).map_err(|e| Error::new(Kind::Usage, e.to_string()))?;
    let Command::Flows(args) = cli.command else {
        unreachable!("the words name the flows command");
    };
    let list = device::list_flows(device)?;
    let doc = FlowsDoc::from_list(&args, timestamp(now), &list, None, process_name);
    let output = flows_output(&doc, &args, None);
    Ok((doc, output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::{SimDriver, flow};
    use crate::engine::fake::FakeEngine;
    use crate::error::{Step, SystemCode};
    use serde_json::Value;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Default)]
    struct Fake {
        driver: Rc<RefCell<SimDriver>>,
        engine: Option<FakeEngine>,
        driver_state: &'static str,
        terminal: Option<Terminal>,
        clock: Duration,
        sleeps: Vec<Duration>,
        interrupt_after: Option<usize>,
    }

    struct Shared(Rc<RefCell<SimDriver>>);
    impl ControlDevice for Shared {
        fn ioctl(&mut self, c: u32, i: &[u8], o: &mut [u8]) -> Result<usize, device::IoctlError> {
            self.0.borrow_mut().ioctl(c, i, o)
        }
    }

    impl System for Fake {
        type Engine = FakeEngine;
        type Device = Shared;
        fn engine(&mut self, _: bool) -> Result<FakeEngine, Error> {
            self.engine.take().ok_or_else(|| {
                Error::system(Step::Engine, SystemCode::Win32(1753), "FwpmEngineOpen0")
            })
        }
        fn device(&mut self, _: bool) -> Result<Shared, Error> {
            if self.driver_state == "running" {
                Ok(Shared(self.driver.clone()))
            } else {
                Err(Error::system(
                    Step::OpenDevice,
                    SystemCode::Win32(2),
                    "CreateFileW",
                ))
            }
        }
        fn service_state(&mut self, name: &str) -> Result<&'static str, Error> {
            Ok(if name == "BFE" {
                "running"
            } else {
                self.driver_state
            })
        }
        fn process_name(&mut self, pid: u64) -> Option<String> {
            (pid != 102).then(|| format!("app{pid}.exe"))
        }
        fn terminal(&mut self) -> Option<Terminal> {
            self.terminal
        }
        fn now(&mut self) -> (SystemTime, Duration) {
            (
                SystemTime::UNIX_EPOCH + Duration::from_hours(500_000),
                self.clock,
            )
        }
        fn sleep(&mut self, d: Duration) {
            self.clock += d;
            self.sleeps.push(d);
            // Traffic while sleeping: flow 1 receives 1000 bytes per second.
            let mut drv = self.driver.borrow_mut();
            if let Some(f) = drv.flows.iter_mut().find(|f| f.flow_id == 0x1001) {
                f.bytes_inbound += u64::try_from(d.as_millis()).unwrap();
            }
        }
        fn interrupted(&mut self) -> bool {
            self.interrupt_after.is_some_and(|n| self.sleeps.len() >= n)
        }
    }

    fn running() -> Fake {
        let driver = SimDriver {
            flows: (1..=3).map(flow).collect(),
            ..SimDriver::default()
        };
        Fake {
            driver: Rc::new(RefCell::new(driver)),
            driver_state: "running",
            ..Fake::default()
        }
    }

    fn run_with(sys: &mut Fake, args: &[&str]) -> (Result<u8, Error>, String) {
        let cli =
            Cli::try_parse_from(std::iter::once("wfpmonctl").chain(args.iter().copied())).unwrap();
        let mut out = Vec::new();
        let code = run(&cli, sys, &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn flows_watch_json_is_ndjson_with_rates_from_the_second_line() {
        let mut sys = running();
        let (code, out) = run_with(
            &mut sys,
            &["flows", "--json", "--watch", "0.25", "--count", "3"],
        );
        assert_eq!(code, Ok(0));
        let docs: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(
            sys.sleeps.iter().sum::<Duration>(),
            Duration::from_millis(500)
        );
        assert!(
            docs[0].get("interval_s").is_none() && docs[0]["flows"][0].get("rate_in").is_none()
        );
        assert_eq!(docs[1]["interval_s"], 0.25);
        let f1 = docs[1]["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["pid"] == 101)
            .unwrap();
        assert_eq!(
            (f1["rate_in"].as_f64(), f1["process"].as_str()),
            (Some(1000.0), Some("app101.exe"))
        );
        assert_eq!(docs[2]["totals"]["rate_in"], 1000.0);
        assert_eq!(docs[0]["timestamp"], "2027-01-15T08:00:00.000Z");
        let unresolved = docs[0]["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["pid"] == 102)
            .unwrap();
        assert_eq!(unresolved["process"], "?");
    }

    #[test]
    fn ctrl_c_and_a_closed_pipe_end_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sys = running();
        sys.interrupt_after = Some(2);
        let (code, out) = run_with(&mut sys, &["flows", "--watch", "1"]);
        assert_eq!(
            (code, out.matches("PID").count(), sys.sleeps.len()),
            (Ok(0), 1, 2)
        );

        let cli = Cli::try_parse_from(["wfpmonctl", "flows", "--watch", "1"]).unwrap();
        let mut sys = running();
        assert_eq!(run(&cli, &mut sys, &mut Closed), Ok(0));
        assert!(sys.sleeps.is_empty(), "no refresh after the reader left");
    }

    #[test]
    fn watch_on_a_console_clears_and_fits_the_width() {
        let mut sys = running();
        sys.terminal = Some(Terminal {
            width: 80,
            vt: true,
        });
        let (_, out) = run_with(
            &mut sys,
            &[
                "flows", "--watch", "1", "--count", "2", "--sort", "pid", "--top", "2",
            ],
        );
        assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 2);
        assert!(
            out.lines().filter(|l| !l.contains(" of ")).all(|l| l
                .replace("\x1b[H\x1b[2J", "")
                .chars()
                .count()
                <= 80),
            "{out}"
        );
        assert!(out.contains("2 of 3 matching flows"));
        sys.terminal = Some(Terminal {
            width: 70,
            vt: false,
        });
        let (_, out) = run_with(&mut sys, &["stats", "--watch", "1", "--count", "2"]);
        assert!(
            !out.contains('\x1b') && out.contains("\n\nSTATISTIC"),
            "{out}"
        );
    }

    #[test]
    fn status_check_exit_codes() {
        let mut sys = running();
        let mut e = FakeEngine::default();
        engine::install(&mut e, false).unwrap();
        e.registered = (0..6).collect();
        sys.engine = Some(e);
        let (code, out) = run_with(&mut sys, &["status", "--check"]);
        assert_eq!(
            (code, out.as_str()),
            (
                Ok(0),
                "monitoring active: driver running, 6/6 callouts registered, 6/6 filters\n"
            )
        );

        let mut sys = running();
        sys.engine = Some(FakeEngine::default());
        let (code, out) = run_with(&mut sys, &["status", "--check", "--json"]);
        assert_eq!(code, Ok(8));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["active"].as_bool(), v["filters_present"].as_u64()),
            (Some(false), Some(0))
        );
        sys.engine = Some(FakeEngine::default());
        assert_eq!(
            run_with(&mut sys, &["status"]).0,
            Ok(0),
            "without --check the verdict is not a failure"
        );
        assert_eq!(
            run_with(&mut sys, &["status", "--check"]).0,
            Ok(4),
            "BFE down"
        );
    }

    #[test]
    fn install_uninstall_counting() {
        let mut sys = running();
        sys.engine = Some(FakeEngine::default());
        let (code, out) = run_with(&mut sys, &["install"]);
        assert_eq!(code, Ok(0));
        assert!(out.starts_with("installed 14 filter-engine objects in one transaction; static"));
        sys.engine = Some(FakeEngine::default());
        let (_, out) = run_with(&mut sys, &["install", "--persistent"]);
        assert!(out.contains("; persistent: they survive reboots"), "{out}");
        sys.engine = Some(FakeEngine::default());
        let (_, out) = run_with(&mut sys, &["uninstall"]);
        assert!(
            out.ends_with("uninstalled: 0 objects deleted, 14 already absent\n"),
            "{out}"
        );
        let (code, out) = run_with(&mut sys, &["counting", "off"]);
        assert_eq!(
            (code, out.as_str(), sys.driver.borrow().counting),
            (Ok(0), "traffic counting is off\n", Some(false))
        );
        sys.driver_state = "stopped";
        assert_eq!(run_with(&mut sys, &["stats"]).0.unwrap_err().exit_code(), 5);
    }
}
