//! The cost of `wfpmonctl top` per refresh with 10 000 live flows: the
//! paged listing through the device client, decoding, the model (rates,
//! marks, programs, filter, sort), the names (services per program, the
//! host name per connection) and drawing the screen into a ratatui
//! `TestBackend` (200 × 50), in this thread's CPU time — beside, in the
//! same run and on the same data, one refresh of the existing `flows`
//! listing (`wfpmonctl flows -n`: listing, decoding, rows, sort, the
//! printed table of every flow).
//!
//! The driver is simulated: the listing goes through wfpmonctl's device
//! client against a `ControlDevice` answering `LIST_FLOWS` in batches of
//! 256 (as the driver pages), `READ_EVENTS` with a few events and
//! `LIST_PROCESSES` with 100 processes; between refreshes every flow moves
//! traffic, its age grows by the interval, and 1 % of the flows end and are
//! replaced by new ones (to new remote addresses).
//!
//! The names are the command's own code (`CachedNames`: the service table
//! cache and the host-name cache with its queue and expiry, asked once per
//! program and once per connection at every refresh, as `top` asks them),
//! over a fake service table (120 running services, a quarter of the
//! programs hosting three each) and a fake resolver that answers every
//! lookup at the next poll. The caches are warm, as at a steady 1 s
//! refresh: before the timed refreshes, every remote address has its name
//! (the warm-up polls the cache until none is missing). Real lookups cost
//! the system's resolver, on its thread pool, not this thread.
//!
//! ```text
//! cargo bench -p wfpmonctl --bench top_refresh            # 10 000 flows
//! WFPMON_TOP_BENCH_FLOWS=100000 cargo bench -p wfpmonctl --bench top_refresh
//! ```
//!
//! CPU % of one core at a 1 s refresh = CPU time per refresh / 1 s.

// The simulated driver's sizes and counts are small (10^5 at most): its
// casts between integer widths cannot truncate.
#![allow(clippy::cast_possible_truncation)]

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use cpu_time::ThreadTime;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use wfpmon_core::events::FlowEvent;
use wfpmon_core::protocol::{
    self, EventsHeader, FlowEntry, FlowListHeader, Header, PROTOCOL_VERSION, ProcessEntry,
    ProcessListHeader, Request,
};
use wfpmonctl::listing;
use wfpmonctl::top::{
    CachedNames, ControlDevice, Hosts, IoctlError, Lookup, NAME_STEP, Names, View,
};

const PROCESSES: u64 = 100;

/// A simulated driver holding `flows`.
struct Driver {
    flows: Vec<FlowEntry>,
    next_id: u64,
    events: Vec<FlowEvent>,
    now: u64,
}

fn flow(id: u64, age_ms: u64) -> FlowEntry {
    let slot = id % PROCESSES;
    let mut local = [0; 16];
    local[..4].copy_from_slice(&[10, 0, 0, 5]);
    let mut remote = [0; 16];
    remote[..4].copy_from_slice(&[198, 51, (id >> 8) as u8, id as u8]);
    FlowEntry {
        flow_id: 0x1_0000 + id,
        process_id: 1000 + slot,
        age_ms,
        bytes_inbound: id * 1000,
        bytes_outbound: id * 100,
        packets_inbound: id,
        packets_outbound: id / 2,
        local_address: local,
        remote_address: remote,
        local_port: 40_000 + (id % 20_000) as u16,
        remote_port: 443,
        address_family: 2,
        ip_protocol: if id.is_multiple_of(5) { 17 } else { 6 },
        direction: 0,
        process_key: 1 << 32 | slot,
    }
}

impl Driver {
    fn new(n: u64) -> Self {
        Self {
            flows: (0..n).map(|i| flow(i, 60_000)).collect(),
            next_id: n,
            events: Vec::new(),
            now: 100_000_000,
        }
    }

    /// One interval of traffic: every flow moves, 1 % end and are replaced.
    fn advance(&mut self, ms: u64) {
        self.now += ms * 10_000;
        for (i, f) in self.flows.iter_mut().enumerate() {
            f.age_ms += ms;
            f.bytes_inbound += 1000 + i as u64 % 5000;
            f.bytes_outbound += 100 + i as u64 % 700;
        }
        let churn = self.flows.len() / 100;
        for k in 0..churn {
            let at = (self.next_id as usize * 7919 + k * 104_729) % self.flows.len();
            self.flows[at] = flow(self.next_id, 10);
            self.next_id += 1;
        }
        self.events = (0..8)
            .map(|i| FlowEvent {
                seq: self.events.last().map_or(0, |e| e.seq + 1) + i,
                time: self.now,
                kind: wfpmon_core::events::EVENT_ENDED,
                address_family: 2,
                process_id: 1000,
                process_key: 1 << 32,
                ..FlowEvent::default()
            })
            .collect();
    }

    fn list_flows(&self, out: &mut [u8], capacity: usize, cursor: u32) -> usize {
        let start = (cursor as usize).min(self.flows.len());
        let end = (start + capacity).min(self.flows.len());
        let more = end < self.flows.len();
        let header = FlowListHeader {
            header: Header {
                version: PROTOCOL_VERSION,
                size: protocol::flow_list_size(end - start).unwrap() as u32,
            },
            total_flows: self.flows.len() as u32,
            returned: (end - start) as u32,
            entry_size: FlowEntry::SIZE as u32,
            flags: if more { protocol::FLOW_LIST_MORE } else { 0 },
            next_bucket: if more { end as u32 } else { 0 },
            next_seq: 0,
        };
        let mut at = header.encode(out);
        for f in &self.flows[start..end] {
            at += f.encode(&mut out[at..]);
        }
        at
    }

    fn read_events(&self, out: &mut [u8], cursor: u64) -> usize {
        let batch: Vec<&FlowEvent> = self.events.iter().filter(|e| e.seq >= cursor).collect();
        let header = EventsHeader {
            header: Header {
                version: PROTOCOL_VERSION,
                size: (EventsHeader::SIZE + batch.len() * FlowEvent::SIZE) as u32,
            },
            returned: batch.len() as u32,
            event_size: FlowEvent::SIZE as u32,
            next: batch.last().map_or(cursor, |e| e.seq + 1),
            dropped: 0,
            oldest: 0,
            now: self.now,
        };
        let mut at = header.encode(out);
        for e in batch {
            at += e.encode(&mut out[at..]);
        }
        at
    }

    fn list_processes(&self, out: &mut [u8], capacity: usize, cursor: u32) -> usize {
        let from = u64::from(cursor).min(PROCESSES);
        let to = (from + capacity as u64).min(PROCESSES);
        let more = to < PROCESSES;
        let header = ProcessListHeader {
            header: Header {
                version: PROTOCOL_VERSION,
                size: (ProcessListHeader::SIZE + (to - from) as usize * ProcessEntry::SIZE) as u32,
            },
            returned: (to - from) as u32,
            entry_size: ProcessEntry::SIZE as u32,
            flags: if more { protocol::PROCESS_LIST_MORE } else { 0 },
            next_slot: if more { to as u32 } else { 0 },
            now: self.now,
            capacity: protocol::PROCESS_SLOTS,
            ..ProcessListHeader::default()
        };
        let mut at = header.encode(out);
        for slot in from..to {
            let path: Vec<u16> = format!(r"\device\harddiskvolume3\apps\program{slot}.exe")
                .encode_utf16()
                .collect();
            let mut p = ProcessEntry {
                key: 1 << 32 | slot,
                process_id: 1000 + slot as u32,
                flags: 0,
                path_units: path.len() as u16,
                active_flows: 100,
                reserved: 0,
                flows_total: 100,
                first_seen: 0,
                last_seen: 0,
                active: [0; 4],
                ended: [0; 4],
                path: [0; wfpmon_core::process::PATH_UNITS],
            };
            p.path[..path.len()].copy_from_slice(&path);
            at += p.encode(&mut out[at..]);
        }
        at
    }
}

/// The device handle of a shared simulated driver (the benchmark moves
/// its traffic while a view holds the handle).
struct Handle(Rc<RefCell<Driver>>);

impl ControlDevice for Handle {
    fn ioctl(&mut self, code: u32, input: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
        let d = self.0.borrow();
        let d = &*d;
        match protocol::parse_request(code, input, out.len()) {
            Ok(Request::ListFlows {
                capacity,
                cursor_bucket,
                ..
            }) => Ok(d.list_flows(out, capacity, cursor_bucket)),
            Ok(Request::ReadEvents { cursor, .. }) => Ok(d.read_events(out, cursor)),
            Ok(Request::ListProcesses {
                capacity,
                cursor_slot,
            }) => Ok(d.list_processes(out, capacity, cursor_slot)),
            _ => Err(IoctlError::win32(1)),
        }
    }
}

/// A resolver that answers every lookup at the next poll, with a name.
#[derive(Default)]
struct Resolver {
    running: Vec<IpAddr>,
    started: usize,
}

impl Lookup for Resolver {
    fn start(&mut self, addr: IpAddr) -> bool {
        self.running.push(addr);
        self.started += 1;
        true
    }

    fn finished(&mut self) -> Vec<(IpAddr, Option<String>)> {
        self.running
            .drain(..)
            .map(|a| {
                let name = a.to_string().replace('.', "-") + ".cdn.example.net";
                (a, Some(name))
            })
            .collect()
    }
}

/// The service control manager's running services by process: three each
/// in every fourth program's process, the rest in processes without flows.
#[allow(clippy::unnecessary_wraps)] // the shape of the SCM read
fn services() -> Result<Vec<(u32, String)>, ()> {
    let mut table: Vec<(u32, String)> = (0..PROCESSES as u32)
        .filter(|slot| slot % 4 == 0)
        .flat_map(|slot| (0..3).map(move |k| (1000 + slot, format!("Service{slot}x{k}"))))
        .collect();
    let hosted = table.len() as u32;
    table.extend((hosted..120).map(|i| (5000 + i, format!("Other{i}"))));
    Ok(table)
}

/// The remote address of each flow the driver holds.
fn remotes(driver: &Driver) -> Vec<IpAddr> {
    driver
        .flows
        .iter()
        .map(|f| {
            let a = f.remote_address;
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        })
        .collect()
}

/// Warms the caches of `names`: asks for every address of `addrs`, a name
/// step of `clock` apart, until each has its name (the fake resolver
/// answers at the next poll); returns the time then.
fn warm(names: &impl Names, clock: &Cell<Duration>, addrs: &[IpAddr]) -> Duration {
    let mut steps = 0;
    while addrs.iter().any(|a| names.remote_host(*a).is_none()) {
        steps += 1;
        clock.set(NAME_STEP * steps);
    }
    assert!(names.services(1000).is_some(), "services known");
    clock.get()
}

fn cpu<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = ThreadTime::now();
    let value = f();
    (value, start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let n: u64 = std::env::var("WFPMON_TOP_BENCH_FLOWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let rounds = 15;
    let wall = SystemTime::now();
    let mut terminal = Terminal::new(TestBackend::new(200, 50)).expect("test backend");
    let (mut top, mut tabs, mut flows) = (Vec::new(), Vec::new(), Vec::new());
    // 'p', 'c': the Programs and Connections tabs as they open; 'f': the
    // Connections tab filtered by a word (program1: 11 of the 100
    // programs) and sorted by program name.
    for tab in ['p', 'c', 'f'] {
        let driver = Rc::new(RefCell::new(Driver::new(n)));
        let mut handle = Handle(Rc::clone(&driver));
        let mut baseline = Handle(Rc::new(RefCell::new(Driver::new(n))));
        let mut view = View::new(&[], &mut handle, |_| None).expect("arguments");
        // The names' monotonic clock: the warm-up's steps, then the
        // refreshes' time.
        let clock = Rc::new(Cell::new(Duration::ZERO));
        let names = {
            let clock = Rc::clone(&clock);
            CachedNames::new(
                Some(Hosts::new(Resolver::default())),
                move || clock.get(),
                services,
            )
        };
        // The priming sample, and a first paint.
        view.refresh(wall, Duration::ZERO, &names).expect("refresh");
        let _ = view.draw(&mut terminal);
        let warm = warm(&names, &clock, &remotes(&driver.borrow()));
        let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
        if tab == 'f' {
            let mut keys = vec![KeyCode::Char('c'), KeyCode::Char('/')];
            keys.extend("program1".chars().map(KeyCode::Char));
            keys.push(KeyCode::Enter);
            keys.extend([KeyCode::Char('<'); 7]);
            for k in keys {
                assert!(view.key(key(k)));
            }
        } else {
            assert!(view.key(key(KeyCode::Char(tab))));
        }
        for round in 1..=rounds {
            let mono = Duration::from_secs(round);
            driver.borrow_mut().advance(1000);
            clock.set(warm + mono);
            let ((), refresh) = cpu(|| {
                view.refresh(wall + mono, mono, &names).expect("refresh");
            });
            let ((), drawing) = cpu(|| {
                let _ = view.draw(&mut terminal);
            });
            top.push((tab, refresh, drawing));
            baseline.0.borrow_mut().advance(1000);
            let (doc, listing) = cpu(|| {
                listing::flows(&[], &mut baseline, |_| None, wall)
                    .expect("flows")
                    .0
            });
            assert_eq!(doc.flows.len() as u64, n);
            flows.push(listing);
        }
        let (conns, programs) = view.counts();
        assert!(
            conns as u64 >= n && programs as u64 == PROCESSES,
            "{conns} {programs}"
        );
        tabs.push(tab);
    }
    println!(
        "wfpmonctl top: one refresh with {n} live flows, services and host names from warm caches (median of {rounds} refreshes per tab, this thread's CPU time; the driver simulated)"
    );
    for tab in tabs {
        let rows: Vec<&(char, Duration, Duration)> = top.iter().filter(|r| r.0 == tab).collect();
        let tab = match tab {
            'p' => "Programs tab",
            'c' => "Connections tab",
            _ => "Connections, filtered, sorted by program",
        };
        let refresh = median(rows.iter().map(|r| r.1).collect());
        let drawing = median(rows.iter().map(|r| r.2).collect());
        let total = median(rows.iter().map(|r| r.1 + r.2).collect());
        println!(
            "  top, {tab:<40}: listing + decoding + model + names {:7.2} ms, drawing {:5.2} ms, total {:7.2} ms = {:.2} % of one core at a 1 s refresh",
            ms(refresh),
            ms(drawing),
            ms(total),
            ms(total) / 10.0
        );
    }
    let baseline = median(flows);
    println!(
        "  baseline: `wfpmonctl flows -n` (listing, decoding, rows, sort, the text of every flow): {:7.2} ms = {:.2} % at 1 s",
        ms(baseline),
        ms(baseline) / 10.0
    );
}
