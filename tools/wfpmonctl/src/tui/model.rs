//! The state of the live view, apart from any drawing: connections with
//! their rates and their new/ended marks, programs, events, and what the
//! user chose (tab, sort, filter, units, pause, selection, expansion).
//!
//! Rates: a connection listed in two samples moved `bytes now − bytes
//! then` in the driver's time between its two readings, which is the
//! difference of its two `age_ms` (the driver reads a flow's age and
//! counters together, so the span is exact per flow even when listing
//! 10 000 flows takes a while); a connection new since the previous
//! sample moved all its bytes within that sample's interval (or its age,
//! if longer — the rule `flows --watch` follows). The driver keeps no time
//! of last activity per flow, so one sample could only give the lifetime
//! average `bytes / age` — a connection that downloaded 1 GB an hour ago
//! and is idle now would show 280 KiB/s. That is why the view takes two
//! samples before its first paint (see `super::run::PRIME`).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::events::{EVENT_ENDED, EVENT_ESTABLISHED, FlowEvent};
use wfpmon_core::protocol::FlowEntry;

use super::Names;
use super::filter::{Filter, Subject};
use super::units::Units;
use crate::flows::rates;
use crate::procs::Proc;

/// How long a new connection stays highlighted and an ended one stays
/// listed: this long, or one refresh interval if that is longer.
pub const MARK_FOR: Duration = Duration::from_secs(3);

/// Events kept for the events tab (newest).
pub const EVENTS_KEPT: usize = 2000;

/// One reading of the driver, as the source hands it over.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Wall clock and monotonic time when it was read.
    pub wall: Option<SystemTime>,
    pub mono: Duration,
    /// The driver's count of active flows.
    pub active: u32,
    pub flows: Vec<FlowEntry>,
    /// Events read since the previous sample, with their wall-clock time.
    pub events: Vec<(FlowEvent, SystemTime)>,
    /// Events the driver's ring overwrote before they were read.
    pub dropped: u64,
}

/// The three tabs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tab {
    #[default]
    Programs,
    Connections,
    Events,
}

impl Tab {
    pub const ALL: [Self; 3] = [Self::Programs, Self::Connections, Self::Events];

    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn title(self) -> &'static str {
        match self {
            Self::Programs => "Programs",
            Self::Connections => "Connections",
            Self::Events => "Events",
        }
    }
}

/// A column of a tab: its title and whether it sorts largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub title: &'static str,
    pub descending: bool,
}

const fn col(title: &'static str, descending: bool) -> Column {
    Column { title, descending }
}

/// Columns of each tab, in display order (the view may drop some when the
/// terminal is narrow; the sort still applies).
pub const PROGRAM_COLUMNS: [Column; 7] = [
    col("PID", false),
    col("PROGRAM", false),
    col("CONNS", true),
    col("IN/s", true),
    col("OUT/s", true),
    col("IN", true),
    col("OUT", true),
];
pub const CONNECTION_COLUMNS: [Column; 12] = [
    col("PID", false),
    col("PROGRAM", false),
    col("PROTO", false),
    col("LOCAL", false),
    col("REMOTE", false),
    col("HOST", false),
    col("DIR", false),
    col("AGE", true),
    col("IN/s", true),
    col("OUT/s", true),
    col("IN", true),
    col("OUT", true),
];
pub const EVENT_COLUMNS: [Column; 11] = [
    col("TIME", true),
    col("EVENT", false),
    col("PID", false),
    col("PROGRAM", false),
    col("PROTO", false),
    col("LOCAL", false),
    col("REMOTE", false),
    col("HOST", false),
    col("DURATION", true),
    col("IN", true),
    col("OUT", true),
];

/// The columns of `tab`.
pub const fn columns(tab: Tab) -> &'static [Column] {
    match tab {
        Tab::Programs => &PROGRAM_COLUMNS,
        Tab::Connections => &CONNECTION_COLUMNS,
        Tab::Events => &EVENT_COLUMNS,
    }
}

/// Sort of a tab: column index and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub column: usize,
    pub descending: bool,
}

/// A program: the driver's process key (0: none) and process id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId {
    pub key: u64,
    pub pid: u64,
}

/// When something was first seen and when it went away (monotonic time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Life {
    /// First seen after the view started (`None`: there at the start).
    pub born: Option<Duration>,
    /// Gone since (`None`: live).
    pub ended: Option<Duration>,
}

/// New or ended, for highlighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    New,
    Ended,
    None,
}

/// A program with its current connections' totals.
#[derive(Clone, Debug)]
pub struct Program {
    pub id: ProgramId,
    pub name: String,
    pub path: Option<String>,
    /// Services hosted in the process (`Names::services`).
    pub services: Option<String>,
    /// Lower case name, path and services, for the filter.
    lower: String,
    /// Lower case name, for sorting.
    name_lower: String,
    pub life: Life,
    /// Live connections.
    pub conns: u32,
    /// Rates of its live connections (bytes per second in, out).
    pub rate: (f64, f64),
    /// Bytes of its listed connections (live and recently ended).
    pub bytes: (u64, u64),
}

impl Program {
    /// `svchost.exe (Dnscache, NlaSvc)` or the name alone.
    pub fn label(&self) -> String {
        self.services
            .as_ref()
            .map_or_else(|| self.name.clone(), |s| format!("{} ({s})", self.name))
    }
}

/// One connection (a flow the driver tracks or tracked until recently).
#[derive(Clone, Debug)]
pub struct Conn {
    pub id: u64,
    pub program: ProgramId,
    pub protocol: u8,
    pub inbound: bool,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// Ports; for ICMP the type and code.
    pub local_port: u16,
    pub remote_port: u16,
    /// Remote host name (`Names::remote_host`).
    pub host: Option<String>,
    host_lower: Option<String>,
    pub age_ms: u64,
    pub bytes: (u64, u64),
    pub packets: (u64, u64),
    pub rate: (f64, f64),
    pub life: Life,
    /// Sample in which it was last listed.
    seen: u64,
}

impl Conn {
    pub const fn is_icmp(&self) -> bool {
        self.protocol == 1 || self.protocol == 58
    }
}

/// One flow event.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub seq: u64,
    pub wall: SystemTime,
    /// The local time zone's offset from UTC at `wall`, in seconds east
    /// (the text views show local times).
    pub offset: i32,
    pub established: bool,
    pub known_kind: bool,
    pub pid: u64,
    pub program: String,
    lower: String,
    pub protocol: u8,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub local_port: u16,
    pub remote_port: u16,
    pub host: Option<String>,
    /// Establishment to the event (100 ns units); 0 when established.
    pub duration: u64,
    pub bytes: (u64, u64),
}

impl EventRow {
    pub const fn is_icmp(&self) -> bool {
        self.protocol == 1 || self.protocol == 58
    }
}

/// A row of the programs tab: a program, or one of its connections below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    Program(ProgramId),
    Conn(u64),
    Event(u64),
}

/// A message in the status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

/// The whole state of the view.
#[derive(Debug)]
pub struct Model {
    pub tab: Tab,
    pub units: Units,
    pub paused: bool,
    /// No host names (`-n`).
    pub numeric: bool,
    pub interval: Duration,
    pub conns: HashMap<u64, Conn>,
    pub programs: HashMap<ProgramId, Program>,
    pub events: VecDeque<EventRow>,
    /// Events lost to the driver's ring since the view started.
    pub events_dropped: u64,
    /// The driver's count of active flows at the last sample.
    pub active: u32,
    /// Samples taken.
    pub samples: u64,
    last: Option<Duration>,
    pub wall: Option<SystemTime>,
    pub sort: [Sort; 3],
    pub filter: Filter,
    /// The filter being typed after `/`.
    pub input: Option<String>,
    pub help: bool,
    pub status: Option<Status>,
    pub expanded: HashSet<ProgramId>,
    /// Rows of each tab after filter and sort.
    pub rows: [Vec<Row>; 3],
    /// Selected row (index into `rows`) and first row shown, per tab.
    pub selected: [usize; 3],
    pub offset: [usize; 3],
    /// Rates of the connections that pass the filter (in, out).
    shown: (f64, f64),
}

fn address(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if AddressFamily::from_af(family) == Some(AddressFamily::V4) {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

fn seconds(ms: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // milliseconds: 52 bits are plenty
    let s = ms as f64 / 1000.0;
    s
}

/// Compares two floats, ascending.
fn by_f64(a: f64, b: f64) -> Ordering {
    a.total_cmp(&b)
}

impl Model {
    /// An empty view refreshing every `interval`.
    #[must_use]
    pub fn new(interval: Duration, units: Units, numeric: bool) -> Self {
        let sort = |tab: Tab, column: usize| Sort {
            column,
            descending: columns(tab)[column].descending,
        };
        Self {
            tab: Tab::Programs,
            units,
            paused: false,
            numeric,
            interval,
            conns: HashMap::new(),
            programs: HashMap::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            active: 0,
            samples: 0,
            last: None,
            wall: None,
            sort: [
                sort(Tab::Programs, 3),
                sort(Tab::Connections, 8),
                sort(Tab::Events, 0),
            ],
            filter: Filter::default(),
            input: None,
            help: false,
            status: None,
            expanded: HashSet::new(),
            rows: [Vec::new(), Vec::new(), Vec::new()],
            selected: [0; 3],
            offset: [0; 3],
            shown: (0.0, 0.0),
        }
    }

    /// How long marks last: [`MARK_FOR`] or one interval.
    fn mark_for(&self) -> Duration {
        MARK_FOR.max(self.interval)
    }

    /// Whether `life` is new or ended now.
    pub fn mark(&self, life: Life) -> Mark {
        let now = self.last.unwrap_or_default();
        if life.ended.is_some() {
            Mark::Ended
        } else if life
            .born
            .is_some_and(|b| now.saturating_sub(b) < self.mark_for())
        {
            Mark::New
        } else {
            Mark::None
        }
    }

    /// Takes in a sample: connections and their rates, programs named by
    /// `naming(key, pid)` (asked once per program), services and host names
    /// from `names`, and new events, each with the local time zone's offset
    /// from UTC at its time from `zone` (seconds east; the caller's clock
    /// knows the zone, so that the tests choose it).
    pub fn update(
        &mut self,
        sample: Sample,
        naming: &mut dyn FnMut(u64, u64) -> Proc,
        names: &dyn Names,
        zone: &mut dyn FnMut(SystemTime) -> i32,
    ) {
        self.samples += 1;
        let generation = self.samples;
        let now = sample.mono;
        let first = self.last.is_none();
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_sub(l).as_secs_f64());
        self.last = Some(now);
        self.wall = sample.wall.or(self.wall);
        self.active = sample.active;
        let born = (!first).then_some(now);
        for e in &sample.flows {
            self.take_flow(e, generation, elapsed, born);
        }
        // Connections not listed this time have ended; those ended long
        // enough ago go.
        let hold = self.mark_for();
        self.conns.retain(|_, c| {
            if c.seen != generation && c.life.ended.is_none() {
                c.life.ended = Some(now);
                c.rate = (0.0, 0.0);
            }
            c.life.ended.is_none_or(|at| now.saturating_sub(at) < hold)
        });
        self.tally(naming, names, born);
        if !self.numeric {
            for c in self.conns.values_mut() {
                let host = names.remote_host(c.remote);
                if host != c.host {
                    c.host_lower = host.as_deref().map(str::to_lowercase);
                    c.host = host;
                }
            }
        }
        self.take_events(sample.events, naming, names, zone);
        self.events_dropped += sample.dropped;
        self.rebuild();
    }

    fn take_flow(&mut self, e: &FlowEntry, generation: u64, elapsed: f64, born: Option<Duration>) {
        let program = ProgramId {
            key: e.process_key,
            pid: e.process_id,
        };
        let bytes = (e.bytes_inbound, e.bytes_outbound);
        let age = seconds(e.age_ms);
        if let Some(c) = self.conns.get_mut(&e.flow_id)
            && c.life.ended.is_none()
            && c.program == program
            && c.age_ms <= e.age_ms
        {
            // The same flow: its counters moved over the driver's time
            // between its two readings.
            let span = seconds(e.age_ms - c.age_ms);
            let span = if span > 0.0 { span } else { elapsed };
            let (i, o) = rates(bytes, Some(c.bytes), span, age);
            c.rate = (i.unwrap_or(0.0), o.unwrap_or(0.0));
            c.bytes = bytes;
            c.packets = (e.packets_inbound, e.packets_outbound);
            c.age_ms = e.age_ms;
            c.seen = generation;
            return;
        }
        // New since the previous sample (or a handle reused by another flow).
        let rate = if born.is_some() {
            let (i, o) = rates(bytes, None, elapsed, age);
            (i.unwrap_or(0.0), o.unwrap_or(0.0))
        } else {
            (0.0, 0.0)
        };
        self.conns.insert(
            e.flow_id,
            Conn {
                id: e.flow_id,
                program,
                protocol: e.ip_protocol,
                inbound: e.direction == 1,
                local: address(e.address_family, &e.local_address),
                remote: address(e.address_family, &e.remote_address),
                local_port: e.local_port,
                remote_port: e.remote_port,
                host: None,
                host_lower: None,
                age_ms: e.age_ms,
                bytes,
                packets: (e.packets_inbound, e.packets_outbound),
                rate,
                life: Life { born, ended: None },
                seen: generation,
            },
        );
    }

    /// Programs of the listed connections, with their totals.
    fn tally(
        &mut self,
        naming: &mut dyn FnMut(u64, u64) -> Proc,
        names: &dyn Names,
        born: Option<Duration>,
    ) {
        for p in self.programs.values_mut() {
            (p.conns, p.rate, p.bytes) = (0, (0.0, 0.0), (0, 0));
            p.life.ended = Some(p.life.ended.unwrap_or_default());
        }
        for c in self.conns.values() {
            let p = self.programs.entry(c.program).or_insert_with(|| {
                let proc = naming(c.program.key, c.program.pid);
                Program {
                    id: c.program,
                    name_lower: proc.name.to_lowercase(),
                    name: proc.name,
                    path: proc.path,
                    services: None,
                    lower: String::new(),
                    life: Life {
                        born,
                        ended: Some(Duration::ZERO),
                    },
                    conns: 0,
                    rate: (0.0, 0.0),
                    bytes: (0, 0),
                }
            });
            p.bytes = (p.bytes.0 + c.bytes.0, p.bytes.1 + c.bytes.1);
            if c.life.ended.is_none() {
                p.conns += 1;
                p.rate = (p.rate.0 + c.rate.0, p.rate.1 + c.rate.1);
                p.life.ended = None;
            }
        }
        let now = self.last.unwrap_or_default();
        // Programs of only ended connections are ended since now; programs
        // with no connection left go.
        let ids: HashSet<ProgramId> = self.conns.values().map(|c| c.program).collect();
        self.programs.retain(|id, _| ids.contains(id));
        for p in self.programs.values_mut() {
            if p.life.ended == Some(Duration::ZERO) {
                p.life.ended = Some(now);
            }
            let services = names.services(p.id.pid);
            if services != p.services || p.lower.is_empty() {
                p.services = services;
                p.lower = format!(
                    "{} {} {}",
                    p.name,
                    p.path.as_deref().unwrap_or_default(),
                    p.services.as_deref().unwrap_or_default()
                )
                .to_lowercase();
            }
        }
    }

    fn take_events(
        &mut self,
        events: Vec<(FlowEvent, SystemTime)>,
        naming: &mut dyn FnMut(u64, u64) -> Proc,
        names: &dyn Names,
        zone: &mut dyn FnMut(SystemTime) -> i32,
    ) {
        for (e, wall) in events {
            let id = ProgramId {
                key: e.process_key,
                pid: u64::from(e.process_id),
            };
            let (program, lower) = self.programs.get(&id).map_or_else(
                || {
                    let name = naming(id.key, id.pid).name;
                    let lower = name.to_lowercase();
                    (name, lower)
                },
                |p| (p.label(), p.lower.clone()),
            );
            let remote = address(e.address_family, &e.remote_address);
            let host = if self.numeric {
                None
            } else {
                names.remote_host(remote)
            };
            self.events.push_back(EventRow {
                seq: e.seq,
                wall,
                offset: zone(wall),
                established: e.kind == EVENT_ESTABLISHED,
                known_kind: e.kind == EVENT_ESTABLISHED || e.kind == EVENT_ENDED,
                pid: id.pid,
                program,
                lower,
                protocol: e.ip_protocol,
                local: address(e.address_family, &e.local_address),
                remote,
                local_port: e.local_port,
                remote_port: e.remote_port,
                host,
                duration: e.duration,
                bytes: (e.bytes_inbound, e.bytes_outbound),
            });
            if self.events.len() > EVENTS_KEPT {
                self.events.pop_front();
            }
        }
    }

    fn conn_subject<'a>(&'a self, c: &'a Conn) -> Subject<'a> {
        Subject {
            pid: c.program.pid,
            protocol: c.protocol,
            local: c.local,
            remote: c.remote,
            ports: (!c.is_icmp()).then_some((c.local_port, c.remote_port)),
            program: self
                .programs
                .get(&c.program)
                .map_or("", |p| p.lower.as_str()),
            host: c.host_lower.as_deref(),
        }
    }

    /// Whether connection `c` passes the filter.
    pub fn conn_matches(&self, c: &Conn) -> bool {
        self.filter.matches(&self.conn_subject(c))
    }

    fn compare_conns(&self, sort: Sort, a: &Conn, b: &Conn) -> Ordering {
        let name = |c: &Conn| self.programs.get(&c.program).map(|p| p.name_lower.as_str());
        let order = match sort.column {
            0 => a.program.pid.cmp(&b.program.pid),
            1 => name(a).cmp(&name(b)),
            2 => a.protocol.cmp(&b.protocol),
            3 => (a.local, a.local_port).cmp(&(b.local, b.local_port)),
            4 => (a.remote, a.remote_port).cmp(&(b.remote, b.remote_port)),
            5 => a.host_lower.cmp(&b.host_lower),
            6 => a.inbound.cmp(&b.inbound),
            7 => a.age_ms.cmp(&b.age_ms),
            8 => by_f64(a.rate.0, b.rate.0).then(by_f64(a.rate.1, b.rate.1)),
            9 => by_f64(a.rate.1, b.rate.1).then(by_f64(a.rate.0, b.rate.0)),
            10 => a.bytes.0.cmp(&b.bytes.0),
            _ => a.bytes.1.cmp(&b.bytes.1),
        };
        let order = if sort.descending {
            order.reverse()
        } else {
            order
        };
        order.then(a.id.cmp(&b.id))
    }

    fn compare_programs(sort: Sort, a: &Program, b: &Program) -> Ordering {
        let order = match sort.column {
            0 => a.id.pid.cmp(&b.id.pid),
            1 => a.name_lower.cmp(&b.name_lower),
            2 => a.conns.cmp(&b.conns),
            3 => by_f64(a.rate.0, b.rate.0).then(by_f64(a.rate.1, b.rate.1)),
            4 => by_f64(a.rate.1, b.rate.1).then(by_f64(a.rate.0, b.rate.0)),
            5 => a.bytes.0.cmp(&b.bytes.0),
            _ => a.bytes.1.cmp(&b.bytes.1),
        };
        let order = if sort.descending {
            order.reverse()
        } else {
            order
        };
        order.then(a.id.cmp(&b.id))
    }

    fn compare_events(sort: Sort, a: &EventRow, b: &EventRow) -> Ordering {
        let order = match sort.column {
            0 => a.seq.cmp(&b.seq),
            1 => a.established.cmp(&b.established),
            2 => a.pid.cmp(&b.pid),
            3 => a.lower.cmp(&b.lower),
            4 => a.protocol.cmp(&b.protocol),
            5 => (a.local, a.local_port).cmp(&(b.local, b.local_port)),
            6 => (a.remote, a.remote_port).cmp(&(b.remote, b.remote_port)),
            7 => a.host.cmp(&b.host),
            8 => a.duration.cmp(&b.duration),
            9 => a.bytes.0.cmp(&b.bytes.0),
            _ => a.bytes.1.cmp(&b.bytes.1),
        };
        let order = if sort.descending {
            order.reverse()
        } else {
            order
        };
        order.then(a.seq.cmp(&b.seq))
    }

    /// Recomputes the rows of every tab (after new data, a new sort, filter
    /// or expansion), keeping each tab's selected row selected.
    pub fn rebuild(&mut self) {
        let selected: [Option<Row>; 3] =
            std::array::from_fn(|t| self.rows[t].get(self.selected[t]).copied());
        // Connections, each matched once and sorted once: the matching
        // ones are the Connections tab.
        let sort = self.sort[Tab::Connections.index()];
        let mut all: Vec<(&Conn, bool)> = self
            .conns
            .values()
            .map(|c| (c, self.conn_matches(c)))
            .collect();
        all.sort_unstable_by(|a, b| self.compare_conns(sort, a.0, b.0));
        let conn_rows: Vec<Row> = all
            .iter()
            .filter(|(_, m)| *m)
            .map(|(c, _)| Row::Conn(c.id))
            .collect();
        let shown = all
            .iter()
            .filter(|(_, m)| *m)
            .fold((0.0, 0.0), |(i, o), (c, _)| (i + c.rate.0, o + c.rate.1));
        // Programs: those matching by name or pid show every connection;
        // others show when a connection matches, with the matching ones.
        let filtered = !self.filter.is_empty();
        let whole: HashSet<ProgramId> = self
            .programs
            .values()
            .filter(|p| !filtered || self.filter.matches_program(p.id.pid, &p.lower))
            .map(|p| p.id)
            .collect();
        let mut children: HashMap<ProgramId, Vec<u64>> = HashMap::new();
        for (c, matched) in &all {
            if *matched || whole.contains(&c.program) {
                children.entry(c.program).or_default().push(c.id);
            }
        }
        let mut programs: Vec<&Program> = self
            .programs
            .values()
            .filter(|p| children.contains_key(&p.id))
            .collect();
        let psort = self.sort[Tab::Programs.index()];
        programs.sort_unstable_by(|a, b| Self::compare_programs(psort, a, b));
        let mut program_rows = Vec::with_capacity(programs.len());
        for p in programs {
            program_rows.push(Row::Program(p.id));
            if self.expanded.contains(&p.id) {
                program_rows.extend(children[&p.id].iter().map(|id| Row::Conn(*id)));
            }
        }
        // Events.
        let mut events: Vec<&EventRow> = self
            .events
            .iter()
            .filter(|e| {
                self.filter.matches(&Subject {
                    pid: e.pid,
                    protocol: e.protocol,
                    local: e.local,
                    remote: e.remote,
                    ports: (!e.is_icmp()).then_some((e.local_port, e.remote_port)),
                    program: &e.lower,
                    host: e.host.as_deref(),
                })
            })
            .collect();
        let esort = self.sort[Tab::Events.index()];
        events.sort_unstable_by(|a, b| Self::compare_events(esort, a, b));
        let event_rows = events.iter().map(|e| Row::Event(e.seq)).collect();
        self.rows = [program_rows, conn_rows, event_rows];
        self.shown = shown;
        for (t, row) in selected.into_iter().enumerate() {
            let found = row.and_then(|r| self.rows[t].iter().position(|x| *x == r));
            self.selected[t] = found
                .unwrap_or(self.selected[t])
                .min(self.rows[t].len().saturating_sub(1));
        }
    }

    /// The event of sequence number `seq`.
    pub fn event(&self, seq: u64) -> Option<&EventRow> {
        let first = self.events.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.events
            .get(i)
            .filter(|e| e.seq == seq)
            .or_else(|| self.events.iter().find(|e| e.seq == seq))
    }

    /// Rates of the connections that pass the filter (in, out).
    pub const fn shown_rates(&self) -> (f64, f64) {
        self.shown
    }
}
