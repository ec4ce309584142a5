//! Running a command against a [`System`]: the Windows one in
//! `crate::windows`, a simulated one in the tests.

use std::io::{self, Write};
use std::net::IpAddr;
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
use crate::flows::{self, FlowRow, FlowsDoc, Previous};
use crate::names::{Hosts, Lookup, NAME_STEP, Services};
use crate::procs::{self, Names, Proc, ProcRow, ProcsDoc};
use crate::render::{self, EventLines, StatsDoc, timestamp};
use crate::status::{Observed, StatusDoc};
use crate::view::csv::Csv;

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
    type Lookup: Lookup;
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
    /// Readies the console's input for the live view: keeps its mode, to
    /// be set back when the process ends (raw mode changes it), and asks
    /// for window-size events, which raw mode does not. Default: nothing
    /// to ready.
    fn console_input(&mut self) {}
    /// Wall-clock time and a monotonic time.
    fn now(&mut self) -> (SystemTime, Duration);
    fn sleep(&mut self, duration: Duration);
    /// Whether Ctrl+C (or Ctrl+Break) was pressed.
    fn interrupted(&mut self) -> bool;
    /// The system's message text for a status code (`FormatMessageW`).
    fn message_text(&mut self, code: SystemCode) -> Option<String>;
    /// The local time zone's offset from UTC at `time`, in seconds east.
    fn utc_offset(&mut self, time: SystemTime) -> i32;
    /// Writes a warning to standard error.
    fn warn(&mut self, text: &str);
    /// The running services by process: `(pid, service name)` pairs.
    fn services(&mut self) -> Result<Vec<(u32, String)>, Error>;
    /// Reverse-DNS lookups that answer later.
    fn lookup(&mut self) -> Self::Lookup;
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

/// How a view is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Text,
    /// One JSON object per line.
    Json,
    /// A header, then rows.
    Csv,
}

impl Form {
    const fn of(json: bool, csv: bool) -> Self {
        match (json, csv) {
            (true, _) => Self::Json,
            (_, true) => Self::Csv,
            _ => Self::Text,
        }
    }
}

/// Renders once, or every `--watch` seconds until `--count` reports,
/// Ctrl+C or a closed output; ends with exit code 0 in all three cases.
/// Text refreshes clear a console that takes escape sequences (else a
/// blank line separates them); JSON and CSV lines just follow each other.
fn repeat<S: System>(
    sys: &mut S,
    out: &mut dyn Write,
    (watch, form, vt): (Watch, Form, bool),
    mut render: impl FnMut(&mut S) -> Result<String, Error>,
) -> Result<u8, Error> {
    let interval = watch.interval();
    let clear = interval.is_some() && form == Form::Text && vt;
    for n in 1.. {
        let mut text = render(sys)?;
        if clear {
            text.insert_str(0, "\x1b[H\x1b[2J");
        } else if n > 1 && form == Form::Text {
            text.insert(0, '\n');
        }
        let (Some(seconds), true) = (interval, emit(out, &text)?) else {
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

/// Opens the control device; a failure is diagnosed with the state of the
/// wfpmon service (not installed, or installed but not running).
fn open_device<S: System>(sys: &mut S, write: bool) -> Result<S::Device, Error> {
    sys.device(write).map_err(|e| {
        let state = sys.service_state(catalog::SERVICE_NAME);
        e.device_failure(state.as_deref())
    })
}

/// Opens a filter-engine session; a failure is diagnosed with the state of
/// the BFE service.
fn open_engine<S: System>(sys: &mut S, dynamic: bool) -> Result<S::Engine, Error> {
    sys.engine(dynamic).map_err(|e| {
        let state = sys.service_state(BFE_SERVICE);
        e.engine_failure(state.as_deref())
    })
}

/// Runs `cli`; returns the exit code. A failure carries the system's text
/// for its Windows code.
pub fn run<S: System>(cli: &Cli, sys: &mut S, out: &mut dyn Write) -> Result<u8, Error> {
    command(cli, sys, out).map_err(|e| e.described(&mut |c| sys.message_text(c)))
}

/// Runs `cli`'s command.
fn command<S: System>(cli: &Cli, sys: &mut S, out: &mut dyn Write) -> Result<u8, Error> {
    let terminal = sys.terminal();
    let vt = terminal.is_some_and(|t| t.vt);
    match &cli.command {
        Command::Install { persistent } => {
            let added = engine::install(&mut open_engine(sys, false)?, *persistent)?.len();
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
            let done = engine::uninstall(&mut open_engine(sys, false)?)?;
            let (deleted, absent) = (done.deleted.len(), done.absent.len());
            let text = format!("uninstalled: {deleted} objects deleted, {absent} already absent\n");
            emit(out, &text).map(|_| 0)
        }
        Command::Status {
            check,
            json,
            verbose,
        } => {
            let observed = observe(sys)?;
            let doc = StatusDoc::new(&observed, timestamp(sys.now().0));
            emit(out, &show(&doc, *json, |d| d.text(*verbose)))?;
            // Without --check the report is the answer, unless it could not
            // be made whole (no access, no filter engine).
            let incomplete = |k: &Kind| matches!(k, Kind::NotElevated | Kind::BfeNotRunning);
            Ok(match (&observed.engine, doc.kinds.first()) {
                _ if *check => doc.exit_code,
                (Err(e), _) => e.exit_code(),
                (Ok(_), Some(k)) if incomplete(k) => *k as u8,
                (Ok(_), _) => 0,
            })
        }
        Command::Stats {
            json,
            live,
            numbers,
            watch,
        } => {
            let mut dev = open_device(sys, false)?;
            let form = Form::of(*json, false);
            repeat(sys, out, (*watch, form, vt), |sys| {
                let stats = device::query_stats(&mut dev, *live)?;
                let doc = StatsDoc::new(&stats, timestamp(sys.now().0));
                Ok(show(&doc, *json, |d| d.text(&stats, numbers.units())))
            })
        }
        Command::Flows(args) => flows(sys, out, args, terminal),
        Command::Events(args) => events(sys, out, args),
        Command::Procs(args) => processes(sys, out, args, terminal),
        Command::Top(args) => top(sys, args, terminal),
        Command::Counting { state } => {
            let on = state == "on";
            device::set_counting(&mut open_device(sys, true)?, on)?;
            let text = format!("traffic counting is {}\n", if on { "on" } else { "off" });
            emit(out, &text).map(|_| 0)
        }
    }
}

/// What `status` looks at: both services, the control device and the
/// driver's protocol version, the filter engine — each failure diagnosed
/// and with its system text.
fn observe<S: System>(sys: &mut S) -> Result<Observed, Error> {
    let (driver, bfe) = (
        sys.service_state(catalog::SERVICE_NAME)?,
        sys.service_state(BFE_SERVICE)?,
    );
    let (device, protocol) = match sys.device(false) {
        Ok(mut dev) => {
            let stats = device::query_stats(&mut dev, false);
            (Ok(()), Some(stats.map(|s| s.header.version)))
        }
        Err(e) => (Err(e.device_failure(Ok(driver))), None),
    };
    let engine = sys.engine(true).map_err(|e| e.engine_failure(Ok(bfe)));
    let engine = engine.and_then(|mut e| engine::query(&mut e));
    let mut text = |e: Error| e.described(&mut |c| sys.message_text(c));
    Ok(Observed {
        driver,
        bfe,
        device: device.map_err(&mut text),
        protocol: protocol.map(|p| p.map_err(&mut text)),
        engine: engine.map_err(&mut text),
    })
}

/// How long a one-shot listing (`flows` without refreshes, `events`
/// without `--follow`) waits, in all, for host names; refreshes and
/// followed events never wait (names appear once known).
pub const NAME_WAIT: Duration = Duration::from_secs(1);

/// The names a view shows: the services of processes, and (without `-n`)
/// the host names of remote addresses.
struct Naming<L> {
    services: Services,
    hosts: Option<Hosts<L>>,
    /// What is left of [`NAME_WAIT`].
    budget: Duration,
}

impl<L: Lookup> Naming<L> {
    fn new<S: System<Lookup = L>>(sys: &mut S, hosts: bool) -> Self {
        Self {
            services: Services::default(),
            hosts: hosts.then(|| Hosts::new(sys.lookup())),
            budget: NAME_WAIT,
        }
    }

    /// Refreshes the services when stale and asks for the names of
    /// `addrs`; with `wait`, gives their lookups what is left of the budget.
    fn update<S: System<Lookup = L>>(
        &mut self,
        sys: &mut S,
        addrs: impl IntoIterator<Item = IpAddr>,
        wait: bool,
    ) {
        let now = sys.now().1;
        self.services.refresh(now, || sys.services());
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        for addr in addrs {
            hosts.want(addr, now);
        }
        if wait && !self.budget.is_zero() {
            hosts.settle(now, self.budget, NAME_STEP, &mut |d| {
                sys.sleep(d);
                sys.now().1
            });
            self.budget = self.budget.saturating_sub(sys.now().1.saturating_sub(now));
        } else {
            hosts.poll(now);
        }
    }

    /// `row` with its process's services and its remote host's name.
    fn apply(&self, row: &mut FlowRow) {
        row.services = self.services.of(row.pid).to_vec();
        row.remote_host = self.hosts.as_ref().and_then(|h| h.name(row.remote_ip));
    }
}

/// `flows`: snapshots with names, and rates from the previous one.
fn flows<S: System>(
    sys: &mut S,
    out: &mut dyn Write,
    args: &FlowsArgs,
    terminal: Option<Terminal>,
) -> Result<u8, Error> {
    let mut dev = open_device(sys, false)?;
    let form = Form::of(args.json, args.csv);
    let vt = terminal.is_some_and(|t| t.vt);
    let mut previous: Option<(Duration, Previous)> = None;
    let mut names = Names::default();
    let mut naming = Naming::new(sys, !args.numeric);
    let one_shot = args.watch.interval().is_none();
    let mut csv = Csv::default();
    repeat(sys, out, (args.watch, form, vt), |sys| {
        let list = device::list_flows(&mut dev)?;
        let (wall, now) = sys.now();
        let keys: Vec<u64> = list.entries.iter().map(|e| e.process_key).collect();
        learn(sys, &mut dev, &mut names, &keys)?;
        let addrs = list.entries.iter().map(flows::remote_ip);
        naming.update(sys, addrs, one_shot);
        let before = previous.as_mut().map(|(at, p)| {
            p.elapsed = now.saturating_sub(*at).as_secs_f64();
            &*p
        });
        // Named from the driver's process table; flows without a process
        // entry by PID in user mode, once.
        let process_name = &mut |p| sys.process_name(p);
        let mut by_pid = flows::by_pid(process_name);
        let mut name = |e: &FlowEntry, row: &mut FlowRow| {
            let proc = names.get(e.process_key).cloned();
            let proc = proc.unwrap_or_else(|| Proc::named(by_pid(e.process_id)));
            (row.process, row.path) = (proc.name, proc.path);
            naming.apply(row);
        };
        let doc = FlowsDoc::from_list(args, timestamp(wall), &list, before, &mut name);
        previous = Some((now, Previous::of(&list.entries)));
        Ok(match form {
            Form::Csv => csv.flows(&doc.timestamp, &doc.flows),
            _ => flows_output(&doc, args, terminal.map(|t| t.width)),
        })
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
    let mut dev = open_device(sys, false)?;
    let mut names = Names::default();
    let since = args.since.map(|s| s.time(sys.now().0));
    let mut cursor = if args.follow && !args.from_start && since.is_none() {
        FROM_NOW
    } else {
        0
    };
    let form = Form::of(args.json, args.csv);
    let mut naming = Naming::new(sys, !args.numeric);
    let mut lines = EventLines::new(args.numbers.units(), !args.numeric);
    let mut csv = Csv::default();
    let mut shown = 0;
    loop {
        let (header, batch) = match device::read_events(&mut dev, cursor, args.follow) {
            Err(e) if e.code() == Some(SystemCode::Win32(ERROR_OPERATION_ABORTED)) => {
                if sys.interrupted() {
                    return Ok(0);
                }
                let message = "the pending event read was cancelled: the wfpmon driver is stopping";
                let remedy = "start it again with `sc.exe start wfpmon` to follow on";
                return Err(e.diagnosed(Kind::DriverStopped, message, remedy));
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
            match form {
                Form::Json => text += &show(&doc, true, |_| String::new()),
                // CSV rows are events only: the loss goes to standard error.
                Form::Csv => sys.warn(&render::dropped_line(&doc, None)),
                Form::Text => text += &render::dropped_line(&doc, Some(sys.utc_offset(wall))),
            }
        }
        let keys: Vec<u64> = batch.iter().map(|e| e.process_key).collect();
        learn(sys, &mut dev, &mut names, &keys)?;
        let all: Vec<EventDoc> = batch
            .iter()
            .map(|e| {
                let proc = names.get(e.process_key).cloned().unwrap_or_else(|| {
                    Proc::named(flows::process_name(e.process_id.into(), &mut |p| {
                        sys.process_name(p)
                    }))
                });
                EventDoc::new(e, proc, header.now, wall)
            })
            .collect();
        naming.update(sys, all.iter().map(|d| d.flow.remote_ip), !args.follow);
        let mut docs = Vec::new();
        for mut doc in all {
            naming.apply(&mut doc.flow);
            if args.kind.as_deref().is_some_and(|k| k != doc.event)
                || !args.filter.matches(&doc.flow)
                || since.is_some_and(|t| doc.time < t)
            {
                continue;
            }
            docs.push(doc);
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                break;
            }
        }
        text += &match form {
            Form::Json => docs
                .iter()
                .map(|d| show(d, true, |_| String::new()))
                .collect(),
            Form::Csv => csv.events(&docs),
            Form::Text if docs.is_empty() => String::new(),
            Form::Text => lines.batch(&docs, &mut |t| sys.utc_offset(t)),
        };
        let done = args.count.is_some_and(|n| shown >= n);
        let caught_up = batch.len() < MAX_EVENTS_PER_CALL;
        if !emit(out, &text)? || done || sys.interrupted() || (caught_up && !args.follow) {
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
    let mut dev = open_device(sys, false)?;
    let form = Form::of(args.json, args.csv);
    let vt = terminal.is_some_and(|t| t.vt);
    let drives = sys.dos_devices();
    let mut previous: Option<procs::Previous> = None;
    let mut csv = Csv::default();
    let mut services = Services::default();
    repeat(sys, out, (args.watch, form, vt), |sys| {
        let list = device::list_processes(&mut dev, &mut |d| sys.sleep(d))?;
        let (wall, now) = (sys.now().0, list.header.now);
        services.refresh(sys.now().1, || sys.services());
        let rows = list.entries.iter().map(|e| {
            let proc = Proc::of(e, &drives, &mut |p| sys.process_name(p));
            let mut row = ProcRow::new(e, proc, (now, wall), previous.as_ref());
            row.services = row
                .pid
                .map(|p| services.of(p.into()).to_vec())
                .unwrap_or_default();
            row
        });
        let rows = rows.collect();
        let interval = previous.as_ref().map(|p| procs::seconds(p.now, now));
        let doc = ProcsDoc::new(args, timestamp(wall), &list, rows, interval);
        previous = Some(procs::Previous::of(&list));
        let width = terminal.map(|t| t.width);
        Ok(match form {
            Form::Csv => csv.processes(&doc.timestamp, &doc.processes),
            _ => show(&doc, args.json, |d| {
                render::procs_text(d, args.numbers.units(), width)
            }),
        })
    })
}

/// `top`: the live view on the console (refused when standard output is
/// not one, or a console that takes no VT sequences).
fn top<S: System>(sys: &mut S, args: &TopArgs, terminal: Option<Terminal>) -> Result<u8, Error> {
    match terminal {
        None => return Err(crate::tui::run::not_a_terminal()),
        Some(Terminal { vt: false, .. }) => return Err(crate::tui::run::no_vt_console()),
        Some(_) => {}
    }
    let mut dev = sys.device(false)?;
    sys.console_input();
    let drives = sys.dos_devices();
    let hosts = (!args.numeric).then(|| Hosts::new(sys.lookup()));
    // The hooks and the names reach the system; they are never called at
    // once (each borrow ends with its call).
    let sys = std::cell::RefCell::new(sys);
    let names = top_names(&sys, hosts);
    let process_name = |pid| sys.borrow_mut().process_name(pid);
    let mut source =
        crate::tui::source::DeviceSource::new(&mut dev, process_name, drives, std::thread::sleep);
    let mut interrupted = || sys.borrow_mut().interrupted();
    match crate::tui::top(args, &mut source, &names, &mut interrupted) {
        // Ctrl+Break cancels a request in flight (the control handler's
        // CancelIoEx): an end, not a failure.
        Err(_) if sys.borrow_mut().interrupted() => Ok(0),
        result => result.map(|()| 0),
    }
}

/// The live view's names over the system: its monotonic clock and its
/// service table (see [`crate::tui::CachedNames`]).
fn top_names<'a, S: System>(
    sys: &'a std::cell::RefCell<&mut S>,
    hosts: Option<Hosts<S::Lookup>>,
) -> impl crate::tui::Names + 'a {
    crate::tui::CachedNames::new(
        hosts,
        || sys.borrow_mut().now().1,
        || sys.borrow_mut().services(),
    )
}

/// What a refresh of `flows` prints for `doc`: JSON, or the table fitted
/// to `width`.
fn flows_output(doc: &FlowsDoc, args: &FlowsArgs, width: Option<usize>) -> String {
    show(doc, args.json, |d| {
        let shown = (args.verbose, !args.numeric);
        render::flows_text(d, args.numbers.units(), shown, width)
    })
}

/// `wfpmonctl flows ARGS` once (as its first refresh, without a console
/// and without host names) against `device` at `now`: the whole list paged
/// from the driver, the document, and what the command prints for it. See
/// [`crate::listing::flows`].
pub fn flows_once<D: ControlDevice>(
    args: &[&str],
    device: &mut D,
    process_name: &mut impl FnMut(u64) -> Option<String>,
    now: SystemTime,
) -> Result<(FlowsDoc, String), Error> {
    let words = ["wfpmonctl", "flows", "-n"]
        .into_iter()
        .chain(args.iter().copied());
    let cli = Cli::try_parse_from(words).map_err(|e| Error::new(Kind::Usage, e.to_string()))?;
    let Command::Flows(args) = cli.command else {
        unreachable!("the words name the flows command");
    };
    let list = device::list_flows(device)?;
    let mut by_pid = flows::by_pid(process_name);
    let doc = FlowsDoc::from_list(&args, timestamp(now), &list, None, &mut |e, row| {
        row.process = by_pid(e.process_id);
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
    use crate::names::tests::Scripted;
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
        /// What `FwpmEngineOpen0` fails with once `engine` is taken.
        engine_error: u32,
        bfe_state: Option<&'static str>,
        warnings: Vec<String>,
        services: Vec<(u32, String)>,
        service_reads: usize,
        dns: Scripted,
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
        type Lookup = Scripted;
        fn engine(&mut self, _: bool) -> Result<FakeEngine, Error> {
            self.engine.take().ok_or_else(|| {
                let code = SystemCode::Win32(self.engine_error);
                Error::system(Step::Engine, code, "opening a session", "FwpmEngineOpen0")
            })
        }
        fn device(&mut self, _: bool) -> Result<Shared, Error> {
            if self.driver_state == "running" {
                Ok(Shared(self.driver.clone()))
            } else {
                let code = SystemCode::Win32(if self.driver_state == "denied" { 5 } else { 2 });
                Err(Error::system(
                    Step::OpenDevice,
                    code,
                    "opening",
                    "CreateFileW",
                ))
            }
        }
        fn service_state(&mut self, name: &str) -> Result<&'static str, Error> {
            Ok(match (name, self.driver_state) {
                ("BFE", _) => self.bfe_state.unwrap_or("running"),
                (_, "denied") => "running",
                (_, state) => state,
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
        fn message_text(&mut self, code: SystemCode) -> Option<String> {
            Some(format!("text of {code}"))
        }
        fn utc_offset(&mut self, _: SystemTime) -> i32 {
            3600
        }
        fn warn(&mut self, text: &str) {
            self.warnings.push(text.to_owned());
        }
        fn services(&mut self) -> Result<Vec<(u32, String)>, Error> {
            self.service_reads += 1;
            Ok(self.services.clone())
        }
        fn lookup(&mut self) -> Scripted {
            self.dns.clone()
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
            engine_error: 1753,
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
        assert_eq!((err.exit_code(), out.as_str()), (11, ""));
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
    fn top_refuses_a_console_without_vt_sequences() {
        let mut sys = running();
        sys.terminal = Some(Terminal {
            width: 80,
            vt: false,
        });
        let (code, out) = run_with(&mut sys, &["top"]);
        let err = code.unwrap_err();
        assert_eq!((err.exit_code(), out.as_str()), (11, ""));
        assert!(
            err.message.contains("virtual-terminal sequences")
                && err.message.contains("legacy console")
                && err.message.contains("flows --watch"),
            "{err}"
        );
        assert_eq!(sys.driver.borrow().list_calls, 0, "the driver is not asked");
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

    #[test]
    fn every_diagnosis_has_its_exit_code_message_and_system_text() {
        let fail = |sys: &mut Fake, args: &[&str]| run_with(sys, args).0.unwrap_err();
        let mut sys = running();
        sys.driver_state = "not_installed";
        let e = fail(&mut sys, &["flows"]);
        assert_eq!(e.exit_code(), 9);
        assert_eq!(
            e.to_string(),
            "the wfpmon driver is not installed: install the driver package from an elevated prompt with \
             `pnputil /add-driver wfpmon.inf /install`, then start it with `sc.exe start wfpmon` \
             [CreateFileW failed: Win32 error 2 (0x00000002): text of Win32 error 2 (0x00000002)]"
        );
        sys.driver_state = "stopped";
        let e = fail(&mut sys, &["events"]);
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().starts_with(
            "the wfpmon driver is installed but not running (service stopped): start it"
        ));
        sys.driver_state = "denied";
        let e = fail(&mut sys, &["procs"]);
        assert_eq!(e.exit_code(), 3);
        assert!(
            e.to_string()
                .starts_with("access denied: run wfpmonctl as administrator"),
            "{e}"
        );

        // BFE: stopped (whatever FwpmEngineOpen0 said), absent, or running
        // with an engine that fails otherwise.
        let mut sys = running();
        (sys.bfe_state, sys.engine_error) = (Some("stopped"), 1764);
        let e = fail(&mut sys, &["install"]);
        assert_eq!(e.exit_code(), 4);
        assert!(
            e.to_string().starts_with(
                "the Base Filtering Engine (service BFE) is not running (service stopped): start it"
            ) && e
                .to_string()
                .contains("[FwpmEngineOpen0 failed: Win32 error 1764 (0x000006E4): text of"),
            "{e}"
        );
        sys.bfe_state = Some("not_installed");
        let e = fail(&mut sys, &["uninstall"]);
        assert_eq!(e.exit_code(), 4);
        assert!(e.message.contains("does not exist"), "{e}");
        sys.bfe_state = Some("running");
        let e = fail(&mut sys, &["install"]);
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.to_string()
                .starts_with("opening a session failed [FwpmEngineOpen0"),
            "{e}"
        );

        // Another protocol version; a driver that stays busy.
        let mut sys = running();
        sys.driver.borrow_mut().version = Some(99);
        let e = fail(&mut sys, &["stats"]);
        assert_eq!(e.exit_code(), 7);
        assert!(e.to_string().contains("control-protocol version 99"), "{e}");
        let mut sys = running();
        sys.driver.borrow_mut().busy = 5;
        let e = fail(&mut sys, &["procs"]);
        assert_eq!(e.exit_code(), 10);
        assert!(
            e.to_string().contains("busy") && e.to_string().contains("try again"),
            "{e}"
        );
    }

    #[test]
    fn status_check_names_each_case() {
        let installed = || {
            let mut e = FakeEngine::default();
            engine::install(&mut e, false).unwrap();
            e.registered = (0..6).collect();
            e
        };
        let check = |sys: &mut Fake| {
            let (code, out) = run_with(sys, &["status", "--check", "--json"]);
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                code,
                Ok(u8::try_from(v["exit_code"].as_u64().unwrap()).unwrap())
            );
            (
                code.unwrap(),
                v["diagnosis"].as_str().unwrap().to_owned(),
                v,
            )
        };
        for (state, code, name) in [
            ("not_installed", 9, "driver_not_installed"),
            ("stopped", 5, "driver_stopped"),
            ("denied", 3, "not_elevated"),
        ] {
            let mut sys = running();
            (sys.driver_state, sys.engine) = (state, Some(installed()));
            let (c, n, v) = check(&mut sys);
            assert_eq!((c, n.as_str()), (code, name), "{v}");
        }
        let mut sys = running();
        sys.engine = Some(installed());
        sys.driver.borrow_mut().version = Some(3);
        let (c, n, v) = check(&mut sys);
        assert_eq!((c, n.as_str()), (7, "protocol_mismatch"));
        assert!(
            v["problems"][0].as_str().unwrap().contains("version 3"),
            "{v}"
        );
        let mut sys = running();
        sys.bfe_state = Some("stopped");
        let (c, n, _) = check(&mut sys);
        assert_eq!((c, n.as_str()), (4, "bfe_not_running"));
        let mut sys = running();
        sys.engine = Some(installed());
        let (c, n, v) = check(&mut sys);
        assert_eq!(
            (c, n.as_str(), v["driver_protocol_version"].as_u64()),
            (
                0,
                "active",
                Some(u64::from(wfpmon_core::protocol::PROTOCOL_VERSION))
            )
        );
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
        // 5 s after boot, read at 7 s after boot when the wall clock said
        // 2027-01-15T08:00:00Z: 2 s earlier, shown at the local time (UTC+1
        // in this fake); a header, then columns that line up.
        assert_eq!(
            out,
            "TIME                     EVENT        PID  PROCESS   PROTO  DIR  LOCAL           REMOTE         HOST  AFTER                 IN             OUT\n\
             2027-01-15 08:59:58.000  established  101  app1.exe  tcp    out  10.0.0.1:50000  192.0.2.7:443                                                  C:\\apps\\app1.exe\n\
             2027-01-15 08:59:58.000  ended        101  app1.exe  tcp    out  10.0.0.1:50000  192.0.2.7:443         1.2s  3 MiB (2.3k pkts)  4 KiB (9 pkts)  C:\\apps\\app1.exe\n\
             2027-01-15 08:59:58.000  ended        102  ?         tcp    out  10.0.0.1:50000  192.0.2.7:443         1.2s  3 MiB (2.3k pkts)  4 KiB (9 pkts)\n\
             2027-01-15 08:59:58.000  ended          4  System    tcp    out  10.0.0.1:50000  192.0.2.7:443         1.2s  3 MiB (2.3k pkts)  4 KiB (9 pkts)  [no process]\n"
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
            (Some("wfpmon.event/2"), Some("ended"), Some(1))
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
        assert_eq!(schemas[..4], ["wfpmon.event/2"; 4]);
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
        assert_eq!(
            (code, out.lines().count()),
            (Ok(0), 3),
            "the header and 2 events"
        );
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
        assert_eq!(
            lines.len(),
            5,
            "the drop line, the header and 3 events: {out}"
        );
        assert!(lines[1].starts_with("TIME "), "{out}");
        assert_eq!(sys.driver.borrow().reads, [(u64::MAX, true), (7, true)]);

        // CSV: events only; the loss is a warning on standard error.
        let mut sys = with_events();
        sys.driver.borrow_mut().ring = 2;
        sys.driver
            .borrow_mut()
            .arriving
            .push_back(vec![event(1 << 32 | 1); 3]);
        let (code, out) = run_with(&mut sys, &["events", "--follow", "--count", "2", "--csv"]);
        assert_eq!(code, Ok(0));
        assert!(
            out.starts_with("timestamp,seq,event,flags,flow_handle,"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 3, "{out}");
        assert_eq!(
            sys.warnings,
            [
                "dropped 1 event(s), overwritten in the driver before they were read; next: event #5\n"
            ]
        );
    }

    #[test]
    fn events_since_skips_older_events_and_reads_from_the_start() {
        let mut sys = with_events();
        {
            let mut d = sys.driver.borrow_mut();
            // 1 s, 3 s and 6 s after boot, read at 7 s: 6 s, 4 s and 1 s ago.
            for (e, t) in d
                .events
                .iter_mut()
                .zip([10_000_000, 30_000_000, 60_000_000, 60_000_000])
            {
                e.time = t;
            }
        }
        let (code, out) = run_with(&mut sys, &["events", "--since", "5s", "--json"]);
        assert_eq!(code, Ok(0));
        let seqs: Vec<u64> = json_lines(&out)
            .iter()
            .map(|d| d["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        let (_, out) = run_with(
            &mut sys,
            &["events", "--since", "2027-01-15T07:59:58.5Z", "--json"],
        );
        assert_eq!(json_lines(&out).len(), 2, "{out}");
        let (_, out) = run_with(
            &mut sys,
            &["events", "--since", "2027-01-15T09:59:58.5+02:00", "--json"],
        );
        assert_eq!(json_lines(&out).len(), 2, "an offset: the same instant");
        // --follow --since: from the start (filtered), then waiting.
        let (_, out) = run_with(&mut sys, &["events", "-f", "--since", "1h", "--json"]);
        assert_eq!(json_lines(&out).len(), 4);
        assert_eq!(sys.driver.borrow().reads.last(), Some(&(4, true)));
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
                .contains("stayed busy with another client's query (5 attempts"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 10);
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
        type Lookup = Scripted;
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
        fn message_text(&mut self, code: SystemCode) -> Option<String> {
            self.inner.message_text(code)
        }
        fn utc_offset(&mut self, t: SystemTime) -> i32 {
            self.inner.utc_offset(t)
        }
        fn warn(&mut self, text: &str) {
            self.inner.warn(text);
        }
        fn services(&mut self) -> Result<Vec<(u32, String)>, Error> {
            self.inner.services()
        }
        fn lookup(&mut self) -> Scripted {
            self.inner.lookup()
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

    /// `top`'s names: services at once, a host name asked for when shown
    /// and taken at a later refresh — never a wait; `-n` asks nothing.
    #[test]
    fn top_names_services_and_hosts_without_waiting() {
        use crate::tui::Names as _;
        let mut sys = running();
        sys.services = vec![(102, "LanmanWorkstation".into()), (102, "Dnscache".into())];
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        sys.dns.0.borrow_mut().answers.insert(
            remote,
            vec![(Some("edge.example.net".into()), Some(1))].into(),
        );
        let hosts = Hosts::new(sys.lookup());
        let cell = std::cell::RefCell::new(&mut sys);
        let names = top_names(&cell, Some(hosts));
        assert_eq!(
            names.services(102).as_deref(),
            Some("Dnscache, LanmanWorkstation")
        );
        assert_eq!(names.services(999), None);
        assert_eq!(names.remote_host(remote), None, "asked, not waited for");
        let mut shown = None;
        for _ in 0..5 {
            cell.borrow_mut().sleep(Duration::from_secs(1));
            shown = names.remote_host(remote);
        }
        assert_eq!(shown.as_deref(), Some("edge.example.net"));
        assert_eq!(cell.borrow().sleeps.len(), 5, "only the test's own sleeps");
        drop(names);
        assert_eq!(sys.dns.0.borrow().started, [remote], "one lookup");

        let mut sys = running();
        let cell = std::cell::RefCell::new(&mut sys);
        let names = top_names(&cell, None);
        assert_eq!(names.remote_host(remote), None);
        drop(names);
        assert!(sys.dns.0.borrow().started.is_empty(), "-n: no lookup");
    }

    #[test]
    fn services_and_host_names_in_flows_events_and_procs() {
        let mut sys = running();
        sys.services = vec![
            (102, "LanmanWorkstation".into()),
            (102, "Dnscache".into()),
            (103, "Spooler".into()),
        ];
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        sys.dns.0.borrow_mut().answers.insert(
            remote,
            vec![(Some("edge.example.net".into()), Some(1)); 3].into(),
        );
        // One shot: the lookup gets its time (answered at the third look,
        // after two sleeps of 50 ms).
        let (code, out) = run_with(&mut sys, &["flows", "--json", "--sort", "pid"]);
        assert_eq!(code, Ok(0));
        let doc = &json_lines(&out)[0];
        let f = &doc["flows"][1];
        assert_eq!(
            f["services"],
            serde_json::json!(["Dnscache", "LanmanWorkstation"])
        );
        assert_eq!(f["remote_host"], "edge.example.net");
        assert_eq!(sys.sleeps, [Duration::from_millis(50); 2]);
        assert_eq!(
            sys.dns.0.borrow().started,
            [remote],
            "one lookup for three flows"
        );
        let (_, out) = run_with(&mut sys, &["flows", "--sort", "pid"]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains(" HOST "), "{out}");
        assert!(
            lines[2].contains("? (Dnscache, LanmanWorkstation)"),
            "{out}"
        );
        assert!(lines[2].contains("edge.example.net"), "{out}");
        let (_, out) = run_with(&mut sys, &["flows", "--host", "EXAMPLE", "--json"]);
        assert_eq!(json_lines(&out)[0]["matched"], 3);

        // -n: no lookups, no host column, remote_host null; services stay.
        let mut sys = running();
        sys.services = vec![(101, "Svc".into())];
        let (_, out) = run_with(&mut sys, &["flows", "-n", "--json"]);
        let doc = &json_lines(&out)[0];
        assert!(
            doc["flows"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["remote_host"].is_null())
        );
        assert!(sys.dns.0.borrow().started.is_empty() && sys.sleeps.is_empty());
        let (_, out) = run_with(&mut sys, &["flows", "-n"]);
        assert!(
            !out.contains("HOST") && out.contains("app101.exe (Svc)"),
            "{out}"
        );

        // procs: services by PID.
        sys.driver.borrow_mut().processes = vec![process(1), process(2)];
        let (_, out) = run_with(&mut sys, &["procs", "--json", "--sort", "pid"]);
        let doc = &json_lines(&out)[0];
        assert_eq!(doc["processes"][0]["services"], serde_json::json!(["Svc"]));
        assert_eq!(doc["processes"][1]["services"], serde_json::json!([]));

        // events: a lookup that never answers costs the one-shot budget once.
        let mut sys = with_events();
        sys.dns
            .0
            .borrow_mut()
            .answers
            .insert(remote, [(None, None)].into());
        let (_, out) = run_with(&mut sys, &["events", "--json"]);
        assert!(json_lines(&out).iter().all(|d| d["remote_host"].is_null()));
        assert_eq!(sys.sleeps.iter().sum::<Duration>(), NAME_WAIT);
    }

    #[test]
    fn refreshes_never_wait_for_names_and_pick_them_up_later() {
        let mut sys = running();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        // The lookup answers at the third look: refreshes look once each.
        sys.dns
            .0
            .borrow_mut()
            .answers
            .insert(remote, [(Some("slow.example".into()), Some(1))].into());
        sys.services = vec![(101, "Before".into())];
        let (code, out) = run_with(
            &mut sys,
            &["flows", "--json", "--watch", "5", "--count", "3"],
        );
        assert_eq!(code, Ok(0));
        let docs = json_lines(&out);
        let host = |d: &Value| d["flows"][0]["remote_host"].clone();
        assert_eq!((host(&docs[0]), host(&docs[1])), (Value::Null, Value::Null));
        assert_eq!(host(&docs[2]), "slow.example");
        assert_eq!(
            sys.sleeps.iter().sum::<Duration>(),
            Duration::from_secs(10),
            "only the watch's own sleeps"
        );
        assert_eq!(sys.service_reads, 2, "read again after 10 s");
    }
}
