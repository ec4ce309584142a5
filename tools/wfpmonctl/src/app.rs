//! Running a command against a [`System`]: the Windows one in
//! `crate::windows`, a simulated one in the tests.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use clap::Parser;
use serde::Serialize;
use wfpmon_core::catalog;
use wfpmon_core::events::FROM_NOW;
use wfpmon_core::protocol::{FlowEntry, MAX_EVENTS_PER_CALL};
use windows_sys::Win32::Foundation::ERROR_OPERATION_ABORTED;

use crate::cli::{Cli, Command, EventsArgs, FlowsArgs, ProcsArgs, TopArgs, Watch};
use crate::device::{self, ControlDevice};
use crate::engine::{self, FilterEngine};
use crate::error::{Error, Kind, SystemCode};
use crate::events::{DroppedDoc, EventDoc};
use crate::flows::{self, FlowsDoc, Previous};
use crate::procs::{self, Names, Proc, ProcRow, ProcsDoc};
use crate::render::{self, StatsDoc, timestamp};
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
    /// Drive letters and the devices they name (`("C:", "\Device\HarddiskVolume3")`).
    fn dos_devices(&mut self) -> Vec<(String, String)>;
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
        Command::Events(args) => events(sys, out, args),
        Command::Procs(args) => processes(sys, out, args, terminal),
        Command::Top(args) => top(sys, args, terminal),
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
    let mut names = Names::default();
    repeat(sys, out, args.watch, clear, |sys| {
        let list = device::list_flows(&mut dev)?;
        let keys: Vec<u64> = list.entries.iter().map(|e| e.process_key).collect();
        learn(sys, &mut dev, &mut names, &keys)?;
        let (wall, now) = sys.now();
        let before = previous.as_mut().map(|(at, p)| {
            p.elapsed = now.saturating_sub(*at).as_secs_f64();
            &*p
        });
        // Named from the driver's process table; flows without a process
        // entry by PID in user mode, once.
        let process_name = &mut |p| sys.process_name(p);
        let mut by_pid = flows::by_pid(process_name);
        let mut name_of = |e: &FlowEntry| {
            names
                .get(e.process_key)
                .map_or_else(|| by_pid(e.process_id), |p| p.name.clone())
        };
        let doc = FlowsDoc::from_list(args, timestamp(wall), &list, before, &mut name_of);
        previous = Some((now, Previous::of(&list.entries)));
        Ok(flows_output(&doc, args, terminal.map(|t| t.width)))
    })
}

/// Learns the processes of `keys` from the driver's table (one pass) if
/// any is new.
fn learn<S: System>(
    sys: &mut S,
    dev: &mut S::Device,
    names: &mut Names,
    keys: &[u64],
) -> Result<(), Error> {
    if !names.missing(keys.iter().copied()) {
        return Ok(());
    }
    if names.drives.is_none() {
        names.drives = Some(sys.dos_devices());
    }
    let list = device::list_processes(dev, &mut |d| sys.sleep(d))?;
    names.learn(&list, keys.iter().copied(), &mut |p| sys.process_name(p));
    Ok(())
}

/// `events`: the events the driver holds, or (`--follow`) each as it comes,
/// until `--count`, Ctrl+C or a closed output (exit code 0).
fn events<S: System>(sys: &mut S, out: &mut dyn Write, args: &EventsArgs) -> Result<u8, Error> {
    let mut dev = sys.device(false)?;
    let mut names = Names::default();
    let mut cursor = if args.follow && !args.from_start {
        FROM_NOW
    } else {
        0
    };
    let mut shown = 0;
    loop {
        let (header, batch) = match device::read_events(&mut dev, cursor, args.follow) {
            Err(e) if e.system == Some(SystemCode::Win32(ERROR_OPERATION_ABORTED)) => {
                if sys.interrupted() {
                    return Ok(0);
                }
                let message = "the pending event read was cancelled: the wfpmon driver is stopping";
                return Err(Error::new(Kind::DriverNotLoaded, message));
            }
            read => read?,
        };
        let wall = sys.now().0;
        let mut text = String::new();
        // The first read from the start begins at the oldest event held: a
        // gap before it is history, not a loss.
        if header.dropped > 0 && cursor != 0 {
            let first = header.next - batch.len() as u64;
            let doc = DroppedDoc::new(header.dropped, first, wall);
            text += &show(&doc, args.json, render::dropped_line);
        }
        let keys: Vec<u64> = batch.iter().map(|e| e.process_key).collect();
        learn(sys, &mut dev, &mut names, &keys)?;
        for e in &batch {
            let proc = names.get(e.process_key).cloned().unwrap_or_else(|| Proc {
                name: flows::process_name(e.process_id.into(), &mut |p| sys.process_name(p)),
                ..Proc::default()
            });
            let doc = EventDoc::new(e, proc, header.now, wall);
            if args.kind.as_deref().is_some_and(|k| k != doc.event)
                || !args.filter.matches(&doc.flow)
            {
                continue;
            }
            text += &show(&doc, args.json, |d| render::event_line(d, args.raw));
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                return emit(out, &text).map(|_| 0);
            }
        }
        let caught_up = batch.len() < MAX_EVENTS_PER_CALL;
        if !emit(out, &text)? || sys.interrupted() || (caught_up && !args.follow) {
            return Ok(0);
        }
        cursor = header.next;
    }
}

/// `procs`: the driver's per-process totals, with rates from the previous
/// snapshot.
fn processes<S: System>(
    sys: &mut S,
    out: &mut dyn Write,
    args: &ProcsArgs,
    terminal: Option<Terminal>,
) -> Result<u8, Error> {
    let mut dev = sys.device(false)?;
    let clear = args.watch.watch.is_some() && !args.json && terminal.is_some_and(|t| t.vt);
    let drives = sys.dos_devices();
    let mut previous: Option<procs::Previous> = None;
    repeat(sys, out, args.watch, clear, |sys| {
        let list = device::list_processes(&mut dev, &mut |d| sys.sleep(d))?;
        let (wall, now) = (sys.now().0, list.header.now);
        let rows = list.entries.iter().map(|e| {
            let proc = Proc::of(e, &drives, &mut |p| sys.process_name(p));
            ProcRow::new(e, proc, (now, wall), previous.as_ref())
        });
        let rows = rows.collect();
        let interval = previous.as_ref().map(|p| procs::seconds(p.now, now));
        let doc = ProcsDoc::new(args, timestamp(wall), &list, rows, interval);
        previous = Some(procs::Previous::of(&list));
        let width = terminal.map(|t| t.width);
        Ok(show(&doc, args.json, |d| {
            render::procs_text(d, args.raw, width)
        }))
    })
}

/// `top`: the live view on the console (refused when standard output is
/// not one). Host names and services are not looked up yet (`NoNames`).
fn top<S: System>(sys: &mut S, args: &TopArgs, terminal: Option<Terminal>) -> Result<u8, Error> {
    if terminal.is_none() {
        return Err(crate::tui::run::not_a_terminal());
    }
    let mut dev = sys.device(false)?;
    let drives = sys.dos_devices();
    // Both hooks reach the system; they are never called at once.
    let sys = std::cell::RefCell::new(sys);
    let process_name = |pid| sys.borrow_mut().process_name(pid);
    let mut source =
        crate::tui::source::DeviceSource::new(&mut dev, process_name, drives, std::thread::sleep);
    let mut interrupted = || sys.borrow_mut().interrupted();
    match crate::tui::top(args, &mut source, &crate::tui::NoNames, &mut interrupted) {
        // Ctrl+Break cancels a request in flight (the control handler's
        // CancelIoEx): an end, not a failure.
        Err(_) if sys.borrow_mut().interrupted() => Ok(0),
        result => result.map(|()| 0),
    }
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
    let mut by_pid = flows::by_pid(process_name);
    let doc = FlowsDoc::from_list(&args, timestamp(now), &list, None, &mut |e| {
        by_pid(e.process_id)
    });
    let output = flows_output(&doc, &args, None);
    Ok((doc, output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::{SimDriver, event, flow, process};
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
        /// Ctrl+C is what cancelled the driver's pending reads.
        ctrl_c_cancels: bool,
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
        fn dos_devices(&mut self) -> Vec<(String, String)> {
            vec![("C:".into(), r"\Device\HarddiskVolume3".into())]
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
                || (self.ctrl_c_cancels && self.driver.borrow().cancelled > 0)
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
    fn top_refuses_when_output_is_not_a_console() {
        let mut sys = running();
        let (code, out) = run_with(&mut sys, &["top"]);
        let err = code.unwrap_err();
        assert_eq!((err.exit_code(), out.as_str()), (9, ""));
        assert!(
            err.message.contains("needs a terminal") && err.message.contains("flows --watch"),
            "{err}"
        );
        assert_eq!(
            sys.driver.borrow().list_calls,
            0,
            "nothing asked of the driver"
        );
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

    fn json_lines(out: &str) -> Vec<Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A driver holding events of processes 1 and 2 (2: evicted since, no
    /// entry) and of no process (key 0).
    fn with_events() -> Fake {
        let sys = running();
        {
            let mut d = sys.driver.borrow_mut();
            d.processes = vec![process(1), process(5)];
            d.now = 70_000_000; // 7 s after boot
            let mut established = event(1 << 32 | 1);
            established.kind = wfpmon_core::events::EVENT_ESTABLISHED;
            (established.duration, established.bytes_inbound) = (0, 0);
            let mut orphan = event(0);
            orphan.process_id = 4;
            orphan.flags = wfpmon_core::events::EVENT_FLAG_NO_PROCESS;
            d.events = vec![established, event(1 << 32 | 1), event(1 << 32 | 2), orphan];
            for (i, e) in d.events.iter_mut().enumerate() {
                e.seq = i as u64;
            }
        }
        sys
    }

    #[test]
    fn events_show_what_the_driver_holds_with_names_from_its_process_table() {
        let mut sys = with_events();
        let (code, out) = run_with(&mut sys, &["events"]);
        assert_eq!(code, Ok(0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        // 5 s after boot, read at 7 s after boot when the wall clock said
        // 2027-01-15T08:00:00Z: 2 s earlier.
        assert_eq!(
            lines[0],
            r"2027-01-15T07:59:58.000Z established    101 app1.exe  tcp out 10.0.0.1:50000 -> 192.0.2.7:443  C:\apps\app1.exe"
        );
        assert!(
            lines[1].contains(" ended ")
                && lines[1].contains("after 1.2s, in 3.0 MiB (2.3k pkts), out 4.0 KiB (9 pkts)"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(" 102 ?  tcp"),
            "evicted key, pid not resolvable: {}",
            lines[2]
        );
        assert!(
            lines[3].contains("   4 System  tcp") && lines[3].ends_with("[no process]"),
            "{}",
            lines[3]
        );
        let d = sys.driver.borrow();
        assert_eq!(
            d.reads,
            [(0, false)],
            "one read: fewer than a full batch means caught up"
        );
        assert_eq!(
            d.process_calls,
            [0],
            "one pass over the process table for both keys"
        );
    }

    #[test]
    fn events_json_is_one_object_per_event() {
        let mut sys = with_events();
        let (code, out) = run_with(
            &mut sys,
            &["events", "--json", "--kind", "ended", "--pid", "101"],
        );
        assert_eq!(code, Ok(0));
        let docs = json_lines(&out);
        assert_eq!(docs.len(), 1, "{out}");
        let d = &docs[0];
        assert_eq!(
            (d["schema"].as_str(), d["event"].as_str(), d["seq"].as_u64()),
            (Some("wfpmon.event/1"), Some("ended"), Some(1))
        );
        assert_eq!(
            (d["process"].as_str(), d["path"].as_str()),
            (Some("app1.exe"), Some(r"C:\apps\app1.exe"))
        );
        assert_eq!(
            (
                d["age_ms"].as_u64(),
                d["bytes_in"].as_u64(),
                d["flow_handle"].as_str()
            ),
            (Some(1234), Some(3 << 20), Some("0x0000000100002001"))
        );
        assert_eq!(d["flags"], serde_json::json!([]));
        assert_eq!(d["timestamp"], "2027-01-15T07:59:58.000Z");
    }

    #[test]
    fn follow_waits_for_new_events_and_reports_the_ones_it_lost() {
        let mut sys = with_events();
        {
            let mut d = sys.driver.borrow_mut();
            d.ring = 4;
            // While the first wait is pending 2 events come; then 7 at once
            // into a ring of 4 (3 of them lost to this reader); then the
            // driver stops.
            d.arriving.push_back(vec![event(1 << 32 | 5); 2]);
        }
        let mut sys2 = with_events();
        sys2.driver.borrow_mut().ring = 4;
        let (code, out) = run_with(&mut sys, &["events", "--follow", "--json"]);
        let err = code.unwrap_err();
        assert_eq!(
            err.exit_code(),
            5,
            "the driver's cancellation is no success"
        );
        assert!(
            err.message
                .contains("the pending event read was cancelled: the wfpmon driver is stopping"),
            "{err}"
        );
        let docs = json_lines(&out);
        assert_eq!(docs.len(), 2, "only events after the start: {out}");
        assert!(
            docs.iter()
                .all(|d| d["process"] == "app5.exe" && d["seq"].as_u64() >= Some(4))
        );
        assert_eq!(sys.driver.borrow().reads, [(u64::MAX, true), (6, true)]);

        // From the start, falling behind.
        sys2.ctrl_c_cancels = true;
        sys2.driver
            .borrow_mut()
            .arriving
            .push_back(vec![event(1 << 32 | 1); 7]);
        let (code, out) = run_with(&mut sys2, &["events", "--follow", "--from-start", "--json"]);
        assert_eq!(code, Ok(0), "Ctrl+C ends the wait quietly");
        let docs = json_lines(&out);
        let schemas: Vec<&str> = docs.iter().map(|d| d["schema"].as_str().unwrap()).collect();
        assert_eq!(schemas[..4], ["wfpmon.event/1"; 4]);
        assert_eq!(docs[4]["schema"], "wfpmon.dropped/1");
        assert_eq!(
            (docs[4]["dropped"].as_u64(), docs[4]["next_seq"].as_u64()),
            (Some(3), Some(7))
        );
        assert_eq!(
            docs[5..]
                .iter()
                .map(|d| d["seq"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert_eq!(sys2.driver.borrow().cancelled, 1);
    }

    #[test]
    fn events_count_stops_mid_batch_and_text_reports_drops() {
        let mut sys = with_events();
        let (code, out) = run_with(&mut sys, &["events", "--count", "2"]);
        assert_eq!((code, out.lines().count()), (Ok(0), 2));
        let mut sys = with_events();
        sys.driver.borrow_mut().ring = 2;
        sys.driver
            .borrow_mut()
            .arriving
            .push_back(vec![event(1 << 32 | 1); 3]);
        sys.driver
            .borrow_mut()
            .arriving
            .push_back(vec![event(1 << 32 | 1); 1]);
        let (code, out) = run_with(&mut sys, &["events", "--follow", "--count", "3"]);
        assert_eq!(code, Ok(0));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with(" dropped 1 event(s), overwritten in the driver before they were read; next: event #5"), "{out}");
        assert_eq!(lines.len(), 4, "the drop line and 3 events: {out}");
        assert_eq!(sys.driver.borrow().reads, [(u64::MAX, true), (7, true)]);
    }

    #[test]
    fn procs_pages_retries_a_busy_driver_and_shows_rates() {
        let mut sys = running();
        {
            let mut d = sys.driver.borrow_mut();
            d.processes = (1..=150).map(process).collect();
            d.busy = 2;
            d.evictions = 7;
            d.now = 10_000_000;
        }
        let (code, out) = run_with(
            &mut sys,
            &["procs", "--json", "--sort", "pid", "--top", "3"],
        );
        assert_eq!(code, Ok(0));
        let doc = &json_lines(&out)[0];
        assert_eq!(
            sys.driver.borrow().process_calls,
            [0, 0, 0, 65, 129],
            "two busy answers, then three pages"
        );
        assert_eq!(sys.sleeps, [Duration::from_millis(20); 2]);
        assert_eq!(
            (
                doc["listed"].as_u64(),
                doc["matched"].as_u64(),
                doc["evictions"].as_u64(),
                doc["capacity"].as_u64()
            ),
            (Some(150), Some(150), Some(7), Some(1024))
        );
        let p = &doc["processes"][0];
        assert_eq!(
            (
                p["pid"].as_u64(),
                p["process"].as_str(),
                p["bytes_in"].as_u64(),
                p["flows_total"].as_u64()
            ),
            (Some(101), Some("app1.exe"), Some(1001), Some(2))
        );
        assert_eq!(p["key"], "0x0000000100000001");
        assert_eq!(
            doc["totals"]["bytes_in"].as_u64(),
            Some((1..=150).map(|s| 1000 + s).sum())
        );

        let mut sys = running();
        sys.driver.borrow_mut().processes = vec![process(1), process(2)];
        sys.driver.borrow_mut().busy = 5;
        let err = run_with(&mut sys, &["procs"]).0.unwrap_err();
        assert!(
            err.message
                .contains("stayed busy with other process queries (5 attempts)"),
            "{err}"
        );
        assert_eq!(sys.sleeps.len(), 4);

        // Rates from the driver's clock: 2 s later, app2 received 4000 bytes more.
        let sys = running();
        sys.driver.borrow_mut().processes = vec![process(1), process(2)];
        sys.driver.borrow_mut().now = 100_000_000;
        let cli = Cli::try_parse_from([
            "wfpmonctl",
            "procs",
            "--json",
            "--watch",
            "1",
            "--count",
            "2",
            "--sort",
            "rate",
        ])
        .unwrap();
        let mut out = Vec::new();
        // The sleep of the watch is the moment traffic happens.
        let driver = sys.driver.clone();
        let mut wrapped = Wrapped {
            inner: sys,
            on_sleep: Box::new(move || {
                let mut d = driver.borrow_mut();
                d.now += 2_000_000; // each 0.1 s step of the watch
                d.processes[1].ended[0] += 400;
            }),
        };
        assert_eq!(run(&cli, &mut wrapped, &mut out), Ok(0));
        let docs = json_lines(&String::from_utf8(out).unwrap());
        assert!(docs[0].get("interval_s").is_none());
        assert_eq!(docs[1]["interval_s"], 2.0);
        assert_eq!(
            (
                docs[1]["processes"][0]["process"].as_str(),
                docs[1]["processes"][0]["rate_in"].as_f64()
            ),
            (Some("app2.exe"), Some(2000.0))
        );
        assert_eq!(docs[1]["totals"]["rate_in"], 2000.0);
    }

    /// A [`Fake`] whose sleeps also run `on_sleep`.
    struct Wrapped {
        inner: Fake,
        on_sleep: Box<dyn FnMut()>,
    }

    impl System for Wrapped {
        type Engine = FakeEngine;
        type Device = Shared;
        fn engine(&mut self, d: bool) -> Result<FakeEngine, Error> {
            self.inner.engine(d)
        }
        fn device(&mut self, w: bool) -> Result<Shared, Error> {
            self.inner.device(w)
        }
        fn service_state(&mut self, n: &str) -> Result<&'static str, Error> {
            self.inner.service_state(n)
        }
        fn process_name(&mut self, pid: u64) -> Option<String> {
            self.inner.process_name(pid)
        }
        fn dos_devices(&mut self) -> Vec<(String, String)> {
            self.inner.dos_devices()
        }
        fn terminal(&mut self) -> Option<Terminal> {
            self.inner.terminal()
        }
        fn now(&mut self) -> (SystemTime, Duration) {
            self.inner.now()
        }
        fn sleep(&mut self, d: Duration) {
            (self.on_sleep)();
            self.inner.sleep(d);
        }
        fn interrupted(&mut self) -> bool {
            self.inner.interrupted()
        }
    }

    #[test]
    fn procs_text_and_flows_named_by_the_driver() {
        let mut sys = running();
        sys.driver.borrow_mut().processes = vec![process(1), process(2)];
        let (code, out) = run_with(&mut sys, &["procs", "--proc", "APP2"]);
        assert_eq!(code, Ok(0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["PID", "PROCESS", "FLOWS", "TOTAL", "IN", "OUT", "PATH"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "102",
                "app2.exe",
                "1",
                "2",
                "1002",
                "B",
                "100",
                "B",
                r"C:\apps\app2.exe"
            ]
        );
        assert_eq!(
            lines[2],
            "1 of 1 matching processes (2 in the driver's table of 1024: 0 evicted, 3 flows without a process); in 1002 B, out 100 B"
        );

        // flows: the driver's name by key (pid 101's user-mode name would be
        // app101.exe); a key the table lacks and key 0 fall back to the PID.
        let mut sys = running();
        {
            let mut d = sys.driver.borrow_mut();
            d.processes = vec![process(7)];
            d.flows[0].process_key = 1 << 32 | 7;
            d.flows[1].process_key = 1 << 32 | 8;
        }
        let (_, out) = run_with(&mut sys, &["flows", "--json", "--sort", "pid"]);
        let doc = &json_lines(&out)[0];
        let names: Vec<&str> = doc["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["process"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app7.exe", "?", "app103.exe"]);
        assert_eq!(sys.driver.borrow().process_calls, [0]);
    }
}
