//! Flow events, pending event reads and per-process totals, on the real
//! image: the client side (`IOCTL_WFPMON_READ_EVENTS`,
//! `IOCTL_WFPMON_LIST_PROCESSES` through real IRPs, see [`crate::io`]),
//! a ledger of the traffic each flow carried, and the threaded scenarios.
//!
//! Every scenario returns, besides the world's [`Summary`], an
//! [`EventsSummary`] of what it exercised, so that the tests can require
//! the interleavings they exist for. Each run ends with the world's own
//! checks ([`World::finish`]: Unload returned only with everything gone,
//! no rule broken) plus its own:
//!
//! - every reader's events are contiguous apart from the drops the driver
//!   reported, and equal, event for event, to what the ring holds;
//! - a read that pends completes with at least one event, or as cancelled;
//! - an "ended" event carries exactly the traffic the flow was given;
//! - per-process totals (active + ended) equal the traffic of the
//!   process's flows at every query, while flows end;
//! - every IRP is completed exactly once, none after Unload returned, none
//!   left pending by `IRP_MJ_CLEANUP` or by the teardown.

// w, e, t, f, p: the world, an event, a flow's truth, a flow, a process —
// the same names throughout.
#![allow(clippy::many_single_char_names)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wfpmon_core::events::{
    EVENT_CAPACITY, EVENT_ENDED, EVENT_ESTABLISHED, EVENT_FLAG_NO_PROCESS, EVENT_FLAG_NOT_TRACKED,
    EVENT_FLAG_UNLOADING, FROM_NOW, FlowEvent,
};
use wfpmon_core::process::{
    PATH_UNITS, PROCESS_ID_MISSING, PROCESS_PATH_MISSING, PROCESS_PATH_TRUNCATED,
};
use wfpmon_core::protocol::{
    self, EventsHeader, IOCTL_WFPMON_LIST_PROCESSES, IOCTL_WFPMON_READ_EVENTS,
    ListProcessesRequest, MAX_EVENTS_PER_CALL, MAX_PROCESSES_PER_CALL, PROCESS_LIST_MORE,
    ProcessEntry, ProcessListHeader, ReadEventsRequest,
};
use wfpmon_core::status::{
    STATUS_BUFFER_TOO_SMALL, STATUS_DEVICE_BUSY, STATUS_INVALID_BUFFER_SIZE,
    STATUS_INVALID_PARAMETER, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
};

use crate::io::{
    Completion, FileHandle, IRP_MJ_DEVICE_CONTROL, IoSummary, STATUS_CANCELLED, Ticket,
};
use crate::kernel::{DISPATCH_LEVEL, PASSIVE_LEVEL, lock};
use crate::rng::Rng;
use crate::world::{Config, FilterKind, HostFlow, Summary, World, WorldGuard};

/// How long a host thread waits for something the driver must do before
/// calling it lost (a hang is reported, not waited out forever).
const PATIENCE: Duration = Duration::from_mins(1);

// ---------------------------------------------------------------------------
// What a run exercised
// ---------------------------------------------------------------------------

/// Counts of what the event scenarios exercised (summed over runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsSummary {
    /// The world's counts.
    pub world: Summary,
    /// The I/O paths' counts.
    pub io: IoSummary,
    /// Events the readers received.
    pub events_read: u64,
    /// Events the driver reported dropped to readers.
    pub dropped: u64,
    /// Reads that pended and were completed, with events, by a classify
    /// thread (at `DISPATCH_LEVEL`, from flow establishment or deletion).
    pub completed_by_classify: u64,
    /// Reads completed as cancelled (`IoCancelIrp`, cleanup, teardown).
    pub cancelled_reads: u64,
    /// Reads completed as cancelled by `IRP_MJ_CLEANUP` of their handle.
    pub cancelled_by_cleanup: u64,
    /// Reads completed during Unload (with events, or cancelled).
    pub completed_during_unload: u64,
    /// Process-list pages answered `STATUS_DEVICE_BUSY` (and asked again).
    pub busy_retries: u64,
    /// Process-list pages checked against the ledger.
    pub process_pages: u64,
}

impl EventsSummary {
    /// Field-wise sum.
    #[must_use]
    pub const fn plus(self, o: Self) -> Self {
        Self {
            world: self.world.plus(o.world),
            io: self.io.plus(o.io),
            events_read: self.events_read + o.events_read,
            dropped: self.dropped + o.dropped,
            completed_by_classify: self.completed_by_classify + o.completed_by_classify,
            cancelled_reads: self.cancelled_reads + o.cancelled_reads,
            cancelled_by_cleanup: self.cancelled_by_cleanup + o.cancelled_by_cleanup,
            completed_during_unload: self.completed_during_unload + o.completed_during_unload,
            busy_retries: self.busy_retries + o.busy_retries,
            process_pages: self.process_pages + o.process_pages,
        }
    }
}

/// Counters the threads of one run add to.
#[derive(Default)]
struct Tally {
    events_read: AtomicU64,
    dropped: AtomicU64,
    completed_by_classify: AtomicU64,
    cancelled_reads: AtomicU64,
    cancelled_by_cleanup: AtomicU64,
    completed_during_unload: AtomicU64,
    busy_retries: AtomicU64,
    process_pages: AtomicU64,
}

impl Tally {
    fn summary(&self, w: &World, world: Summary) -> EventsSummary {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        EventsSummary {
            world,
            io: w.io.summary(),
            events_read: l(&self.events_read),
            dropped: l(&self.dropped),
            completed_by_classify: l(&self.completed_by_classify),
            cancelled_reads: l(&self.cancelled_reads),
            cancelled_by_cleanup: l(&self.cancelled_by_cleanup),
            completed_during_unload: l(&self.completed_during_unload),
            busy_retries: l(&self.busy_retries),
            process_pages: l(&self.process_pages),
        }
    }
}

/// Runs `scenario` for `reps` consecutive seeds from `base`; stops at the
/// first failure.
///
/// # Errors
/// The first failure, naming the scenario.
pub fn repeat(
    name: &str,
    base: u64,
    reps: u32,
    mut scenario: impl FnMut(u64) -> Result<EventsSummary, String>,
) -> Result<EventsSummary, String> {
    let mut total = EventsSummary::default();
    for i in 0..u64::from(reps) {
        let seed = base.wrapping_add(i);
        let one = scenario(seed).map_err(|e| format!("{name}, repetition {i} of {reps}:\n{e}"))?;
        total = total.plus(one);
    }
    Ok(total)
}

fn boot(config: Config) -> Result<WorldGuard, String> {
    let w = World::create(config)?;
    let status = w.driver_entry();
    if status != 0 {
        return Err(w.report(&[format!("DriverEntry -> {:#010x}", status.cast_unsigned())]));
    }
    Ok(w)
}

fn finish(w: &World, tally: &Tally) -> Result<EventsSummary, String> {
    let world = w.finish()?;
    Ok(tally.summary(w, world))
}

// ---------------------------------------------------------------------------
// The client side of the two IOCTLs
// ---------------------------------------------------------------------------

/// One `IOCTL_WFPMON_READ_EVENTS` answer.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The fixed part.
    pub header: EventsHeader,
    /// The events.
    pub events: Vec<FlowEvent>,
}

/// Decodes a read's output.
///
/// # Errors
/// What is wrong with it.
pub fn decode_batch(output: &[u8]) -> Result<Batch, String> {
    let (header, events) =
        EventsHeader::decode(output).map_err(|e| format!("READ_EVENTS reply: {e:?}"))?;
    let events: Vec<FlowEvent> = events.collect();
    if events.len() != header.returned as usize {
        return Err(format!(
            "READ_EVENTS reply: {} events decoded, header says {}",
            events.len(),
            header.returned
        ));
    }
    Ok(Batch { header, events })
}

/// The output length of a read of up to `n` events.
#[must_use]
pub const fn events_out_len(n: usize) -> usize {
    EventsHeader::SIZE + n * FlowEvent::SIZE
}

/// Starts a read of up to `max` events from `cursor` on `handle` (sent;
/// the caller waits). `None`: not sent (handle closed, unload begun).
pub fn start_read(
    w: &World,
    handle: &FileHandle,
    max: u32,
    cursor: u64,
    wait: bool,
) -> Option<Arc<Ticket>> {
    let req = ReadEventsRequest::new(max, cursor, wait).to_bytes();
    let out = events_out_len((max as usize).clamp(1, MAX_EVENTS_PER_CALL));
    w.submit(
        handle,
        IRP_MJ_DEVICE_CONTROL,
        IOCTL_WFPMON_READ_EVENTS,
        &req,
        out,
    )
}

/// A read that does not wait, answered at once.
///
/// # Errors
/// The status or decoding problem.
pub fn read_now(w: &World, handle: &FileHandle, max: u32, cursor: u64) -> Result<Batch, String> {
    let ticket = start_read(w, handle, max, cursor, false).ok_or("READ_EVENTS not sent")?;
    let done = ticket
        .completion()
        .ok_or("READ_EVENTS without READ_EVENTS_WAIT did not complete at once")?;
    if done.status != STATUS_SUCCESS {
        return Err(format!("READ_EVENTS -> {:#x}", done.status));
    }
    decode_batch(&done.output)
}

/// Every event the ring holds from `cursor` on, in batches of 256 (no
/// wait): the events and the total dropped.
///
/// # Errors
/// The status or decoding problem.
pub fn read_all(
    w: &World,
    handle: &FileHandle,
    mut cursor: u64,
) -> Result<(Vec<FlowEvent>, u64), String> {
    let mut all = Vec::new();
    let mut dropped = 0;
    loop {
        let b = read_now(w, handle, 256, cursor)?;
        dropped += b.header.dropped;
        if b.events.is_empty() {
            return Ok((all, dropped));
        }
        cursor = b.header.next;
        all.extend(b.events);
    }
}

/// The ring's head (events written so far): a read from "now".
///
/// # Errors
/// The status or decoding problem.
pub fn head(w: &World, handle: &FileHandle) -> Result<u64, String> {
    Ok(read_now(w, handle, 1, FROM_NOW)?.header.next)
}

/// A `LIST_PROCESSES` answer: the header and the entries (success only).
pub type ProcessPage = Option<(ProcessListHeader, Vec<ProcessEntry>)>;

/// One `IOCTL_WFPMON_LIST_PROCESSES` page: (status, header, entries).
///
/// # Errors
/// The decoding problem.
pub fn list_processes_page(
    w: &World,
    handle: &FileHandle,
    max: u32,
    cursor_slot: u32,
) -> Result<(i32, ProcessPage), String> {
    let req = ListProcessesRequest::new(max, cursor_slot).to_bytes();
    let fits = (max as usize).clamp(1, MAX_PROCESSES_PER_CALL);
    let out = ProcessListHeader::SIZE + fits * ProcessEntry::SIZE;
    let done = w
        .request(
            handle,
            IRP_MJ_DEVICE_CONTROL,
            IOCTL_WFPMON_LIST_PROCESSES,
            &req,
            out,
        )
        .ok_or("LIST_PROCESSES not sent")?;
    if done.status != STATUS_SUCCESS {
        return Ok((done.status, None));
    }
    let (header, entries) = ProcessListHeader::decode(&done.output)
        .map_err(|e| format!("LIST_PROCESSES reply: {e:?}"))?;
    Ok((done.status, Some((header, entries.collect()))))
}

// ---------------------------------------------------------------------------
// The ledger: what each flow is and carried
// ---------------------------------------------------------------------------

/// The traffic of a flow as the four counters of the protocol: bytes in,
/// bytes out, packets in, packets out.
pub type Four = [u64; 4];

fn add(a: &mut Four, b: &Four) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// One flow the host made.
#[derive(Clone)]
pub struct Truth {
    /// The process it belongs to (index into the run's processes).
    pub process: usize,
    /// Whether the driver associated its context (tracked it).
    pub tracked: bool,
    /// The traffic the driver was given (classifies with its context).
    pub traffic: Four,
    /// Ended (its "ended" event's counters are final).
    pub ended: bool,
    /// The flow itself.
    pub flow: HostFlow,
}

/// What the engine supplies about a process at flow establishment.
#[derive(Clone, Debug)]
pub struct Process {
    /// `processId`, if supplied.
    pub pid: Option<u64>,
    /// `processPath` (UTF-16, no NUL), if supplied.
    pub path: Option<Arc<[u16]>>,
}

impl Process {
    /// A process with both fields.
    #[must_use]
    pub fn new(pid: Option<u64>, path: Option<&str>) -> Self {
        Self {
            pid,
            path: path.map(|p| p.encode_utf16().collect()),
        }
    }

    /// The flags the driver must report for it.
    #[must_use]
    pub fn flags(&self) -> u16 {
        let mut f = 0;
        if self.pid.is_none() {
            f |= PROCESS_ID_MISSING;
        }
        match &self.path {
            None => f |= PROCESS_PATH_MISSING,
            Some(p) if p.is_empty() => f |= PROCESS_PATH_MISSING,
            Some(p) if p.len() > PATH_UNITS => f |= PROCESS_PATH_TRUNCATED,
            Some(_) => {}
        }
        f
    }

    /// The path units the driver keeps (the end of a long path).
    #[must_use]
    pub fn kept_path(&self) -> Vec<u16> {
        self.path.as_ref().map_or_else(Vec::new, |p| {
            p[p.len().saturating_sub(PATH_UNITS)..].to_vec()
        })
    }

    /// Whether `e` is this process's entry.
    #[must_use]
    pub fn is(&self, e: &ProcessEntry) -> bool {
        e.process_id == u32::try_from(self.pid.unwrap_or(0)).unwrap_or(u32::MAX)
            && e.flags == self.flags()
            && e.path() == self.kept_path().as_slice()
    }
}

/// Flows by flow id.
#[derive(Default)]
pub struct Ledger {
    flows: Mutex<HashMap<u64, Truth>>,
}

impl Ledger {
    fn insert(&self, f: &HostFlow, process: usize) {
        lock(&self.flows).insert(
            f.flow.handle,
            Truth {
                process,
                tracked: false,
                traffic: [0; 4],
                ended: false,
                flow: f.clone(),
            },
        );
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Truth)) {
        if let Some(t) = lock(&self.flows).get_mut(&id) {
            f(t);
        }
    }

    /// A copy of one flow's truth.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<Truth> {
        lock(&self.flows).get(&id).cloned()
    }

    /// Every flow.
    #[must_use]
    pub fn all(&self) -> Vec<Truth> {
        lock(&self.flows).values().cloned().collect()
    }
}

/// A new flow of `process`, established (recorded in `ledger` before its
/// classify: its "established" event may be read at once).
fn establish(
    w: &World,
    ledger: &Ledger,
    rng: &mut Rng,
    process: (usize, &Process),
    n: u64,
) -> HostFlow {
    let f = w.open_flow_of(
        rng.one_in(2),
        rng.one_in(2),
        rng.one_in(3),
        n,
        process.1.pid,
        process.1.path.clone(),
    );
    ledger.insert(&f, process.0);
    let _ = w.establish(&f, FilterKind::Inspection);
    let tracked = f.flow.contexts().len() == 1;
    ledger.update(f.flow.handle, |t| t.tracked = tracked);
    f
}

/// Some traffic on `f` (its owner's thread: the ledger stays exact).
fn talk(w: &World, ledger: &Ledger, rng: &mut Rng, f: &HostFlow) {
    let inbound = rng.one_in(2);
    let (counted, bytes, packets) = if f.tcp {
        let bytes = 1 + rng.below(1500);
        let r = w.stream(
            f,
            usize::try_from(bytes).unwrap_or(1),
            !inbound,
            FilterKind::Inspection,
        );
        (r.is_some_and(|r| r.context != 0), bytes, 1)
    } else {
        let n = 1 + rng.below(3);
        let payloads: Vec<u32> = (0..n)
            .map(|_| u32::try_from(1 + rng.below(1400)).unwrap_or(1))
            .collect();
        let r = w.datagrams(f, &payloads, inbound, FilterKind::Inspection);
        (
            r.is_some_and(|r| r.context != 0),
            payloads.iter().map(|p| u64::from(*p)).sum(),
            n,
        )
    };
    if counted {
        ledger.update(f.flow.handle, |t| {
            if inbound {
                t.traffic[0] += bytes;
                t.traffic[2] += packets;
            } else {
                t.traffic[1] += bytes;
                t.traffic[3] += packets;
            }
        });
    }
}

/// Ends `f` (its traffic is final first).
fn end(w: &World, ledger: &Ledger, f: &HostFlow) {
    ledger.update(f.flow.handle, |t| t.ended = true);
    w.end_flow(f);
}

/// The processes of a run: `n` ordinary ones, plus one without a path, one
/// without an id, one with neither, one with a path longer than the driver
/// keeps, and two with the same id but different images (a reused id).
fn processes(rng: &mut Rng, n: usize) -> Vec<Process> {
    let base = 100 + rng.below(1000) * 4;
    let mut all: Vec<Process> = (0..n as u64)
        .map(|i| {
            let pid = base + 4 * i;
            Process::new(Some(pid), Some(&crate::world::default_process_path(pid)))
        })
        .collect();
    let long: String = std::iter::once("\\device\\harddiskvolume3".to_string())
        .chain((0..40).map(|i| format!("\\folder{i:02}")))
        .chain(std::iter::once("\\deep.exe".to_string()))
        .collect();
    all.push(Process::new(Some(base + 4 * n as u64), None));
    all.push(Process::new(
        None,
        Some("\\device\\harddiskvolume3\\windows\\system32\\svchost.exe"),
    ));
    all.push(Process::new(None, None));
    all.push(Process::new(Some(base + 4 * n as u64 + 4), Some(&long)));
    all.push(Process::new(
        Some(base + 4 * n as u64 + 8),
        Some("\\device\\harddiskvolume3\\a.exe"),
    ));
    all.push(Process::new(
        Some(base + 4 * n as u64 + 8),
        Some("\\device\\harddiskvolume3\\b.exe"),
    ));
    all
}

// ---------------------------------------------------------------------------
// Checks of events against the ledger
// ---------------------------------------------------------------------------

/// Checks one event against the ledger: a flow the host made, its
/// process, its 5-tuple, and for an "ended" event of a flow whose traffic
/// is final, exactly that traffic.
fn check_event(w: &World, ledger: &Ledger, procs: &[Process], e: &FlowEvent) {
    let Some(t) = ledger.get(e.flow_id) else {
        w.kernel.violation(format!(
            "event {} names flow {:#x}, which the engine never had",
            e.seq, e.flow_id
        ));
        return;
    };
    let f = &t.flow;
    let p = &procs[t.process];
    let problems = [
        (e.kind != EVENT_ESTABLISHED && e.kind != EVENT_ENDED, "kind"),
        (
            e.process_id != u32::try_from(p.pid.unwrap_or(0)).unwrap_or(u32::MAX),
            "process id",
        ),
        (
            e.address_family != if f.v6 { 23 } else { 2 },
            "address family",
        ),
        (e.ip_protocol != if f.tcp { 6 } else { 17 }, "protocol"),
        (
            e.local_port != f.local_port || e.remote_port != f.remote_port,
            "ports",
        ),
        (e.direction != u8::from(f.inbound), "direction"),
        (
            !f.v6 && e.local_address[..4] != [10, 0, 0, 1],
            "IPv4 local address (10.0.0.1)",
        ),
        (
            f.v6 && (e.local_address[15] != 1 || e.local_address[..15].iter().any(|b| *b != 0)),
            "IPv6 local address (::1)",
        ),
        (e.reserved != 0, "reserved field"),
        (
            (e.process_key == 0) != (e.flags & EVENT_FLAG_NO_PROCESS != 0),
            "NO_PROCESS flag vs process key",
        ),
    ];
    for (bad, what) in problems {
        if bad {
            w.kernel.violation(format!(
                "event {} (flow {:#x}, kind {}): wrong {what}: {e:?}",
                e.seq, e.flow_id, e.kind
            ));
        }
    }
    let counters = [
        e.bytes_inbound,
        e.bytes_outbound,
        e.packets_inbound,
        e.packets_outbound,
    ];
    if e.kind == EVENT_ESTABLISHED {
        if counters != [0; 4] || e.duration != 0 || e.established != e.time {
            w.kernel.violation(format!(
                "\"established\" event {} carries counters {counters:?}, duration {}, established {} (time {})",
                e.seq, e.duration, e.established, e.time
            ));
        }
    } else if e.kind == EVENT_ENDED {
        if e.flags & EVENT_FLAG_NOT_TRACKED == 0 && t.ended && counters != t.traffic {
            w.kernel.violation(format!(
                "\"ended\" event {} of flow {:#x}: counters {counters:?}, but the flow carried {:?}",
                e.seq, e.flow_id, t.traffic
            ));
        }
        if e.duration != e.time.saturating_sub(e.established) {
            w.kernel.violation(format!(
                "\"ended\" event {}: duration {} but established {} and ended {}",
                e.seq, e.duration, e.established, e.time
            ));
        }
    }
}

/// Checks the whole event history of a run (every event the ring ever
/// held, from 0, nothing dropped) against the ledger: one "established"
/// and then one "ended" per tracked flow, nothing else.
fn check_history(
    w: &World,
    ledger: &Ledger,
    procs: &[Process],
    events: &[FlowEvent],
    unloading_allowed: bool,
) {
    for (i, e) in events.iter().enumerate() {
        if e.seq != i as u64 {
            w.kernel.violation(format!(
                "event at position {i} has sequence number {}",
                e.seq
            ));
            return;
        }
        check_event(w, ledger, procs, e);
        if !unloading_allowed && e.flags & EVENT_FLAG_UNLOADING != 0 {
            w.kernel.violation(format!(
                "event {} flagged UNLOADING before the driver unloaded",
                e.seq
            ));
        }
    }
    let mut by_flow: HashMap<u64, Vec<&FlowEvent>> = HashMap::new();
    for e in events {
        by_flow.entry(e.flow_id).or_default().push(e);
    }
    for t in ledger.all() {
        let id = t.flow.flow.handle;
        let mine = by_flow.remove(&id).unwrap_or_default();
        let kinds: Vec<u8> = mine.iter().map(|e| e.kind).collect();
        let want: &[u8] = match (t.tracked, t.ended) {
            (true, true) => &[EVENT_ESTABLISHED, EVENT_ENDED],
            (true, false) => &[EVENT_ESTABLISHED],
            (false, _) => &[],
        };
        // A flow the driver could not associate publishes "established",
        // then "ended" with NOT_TRACKED, at once.
        let untracked_pair = !t.tracked
            && kinds == [EVENT_ESTABLISHED, EVENT_ENDED]
            && mine[1].flags & EVENT_FLAG_NOT_TRACKED != 0;
        if kinds != want && !untracked_pair {
            w.kernel.violation(format!(
                "flow {id:#x} (tracked {}, ended {}): events {kinds:?}",
                t.tracked, t.ended
            ));
            continue;
        }
        if let [est, ended] = mine.as_slice() {
            let same_start = ended.established == est.time;
            let same_process = ended.process_key == est.process_key;
            if !(same_start && same_process) {
                w.kernel.violation(format!(
                    "flow {id:#x}: \"ended\" event (established {}, key {:#x}) does not match its \"established\" event (time {}, key {:#x})",
                    ended.established, ended.process_key, est.time, est.process_key
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------

/// A reader's handle and the read it has outstanding, if any.
type Current = Option<(Arc<FileHandle>, Option<Arc<Ticket>>)>;

/// What a reader thread shares with the cancellers: its handle and the
/// read it has outstanding.
#[derive(Default)]
pub struct ReaderSlot {
    current: Mutex<Current>,
    /// The reader's cursor (the next sequence number it wants).
    pub cursor: AtomicU64,
    /// Set when the reader has left.
    pub gone: AtomicBool,
}

/// What a reader saw.
#[derive(Default, Debug)]
pub struct ReaderLog {
    /// Every event, in order.
    pub events: Vec<FlowEvent>,
    /// Drops reported.
    pub dropped: u64,
    /// Where it started (its first batch's first sequence number minus the
    /// drops reported with it).
    pub start: Option<u64>,
    /// The last read's completion.
    pub last: Option<Completion>,
}

/// How a reader reads.
#[derive(Clone, Copy, Debug)]
pub struct ReaderPlan {
    /// The first cursor (0 or `FROM_NOW`).
    pub from: u64,
    /// Longest real pause between reads (µs): a slow reader falls behind.
    pub pause_us: u64,
}

/// A reader thread's loop: `READ_EVENTS` with `READ_EVENTS_WAIT` from its
/// cursor, verifying each batch, until `stop` and a read ends cancelled or
/// is refused. A closed handle (cleanup by a canceller) is reopened.
fn reader(
    w: &World,
    slot: &ReaderSlot,
    stop: &AtomicBool,
    tally: &Tally,
    mut rng: Rng,
    plan: ReaderPlan,
) -> ReaderLog {
    let mut log = ReaderLog::default();
    let mut cursor = plan.from;
    slot.cursor.store(cursor, Ordering::SeqCst);
    let mut handle = match w.open_handle("") {
        Ok(h) => h,
        Err(s) => {
            w.kernel.violation(format!("IRP_MJ_CREATE -> {s:#x}"));
            slot.gone.store(true, Ordering::SeqCst);
            return log;
        }
    };
    loop {
        if plan.pause_us > 0 && rng.one_in(2) {
            std::thread::sleep(Duration::from_micros(rng.below(plan.pause_us)));
        }
        let max = u32::try_from(1 + rng.below(MAX_EVENTS_PER_CALL as u64)).unwrap_or(1);
        let req = ReadEventsRequest::new(max, cursor, true).to_bytes();
        let Some(ticket) = w.prepare_irp(
            &handle,
            IRP_MJ_DEVICE_CONTROL,
            IOCTL_WFPMON_READ_EVENTS,
            &req,
            events_out_len(max as usize),
        ) else {
            break; // no device any more
        };
        *lock(&slot.current) = Some((Arc::clone(&handle), Some(Arc::clone(&ticket))));
        let sent = w.dispatch(&handle, &ticket);
        if sent.is_none() {
            *lock(&slot.current) = None;
            if w.unloading.load(Ordering::SeqCst)
                || w.unloaded.load(Ordering::SeqCst)
                || stop.load(Ordering::SeqCst)
            {
                break;
            }
            // Closed under us: open another handle.
            match w.open_handle("") {
                Ok(h) => handle = h,
                Err(_) => break,
            }
            continue;
        }
        let Some(done) = ticket.wait(PATIENCE) else {
            w.kernel.violation(format!(
                "a READ_EVENTS(WAIT) from cursor {cursor} is still pending after {PATIENCE:?}"
            ));
            break;
        };
        *lock(&slot.current) = Some((Arc::clone(&handle), None));
        if done.during_unload {
            tally
                .completed_during_unload
                .fetch_add(1, Ordering::Relaxed);
        }
        log.last = Some(done.clone());
        match done.status {
            STATUS_SUCCESS => {
                let batch = match decode_batch(&done.output) {
                    Ok(b) => b,
                    Err(e) => {
                        w.kernel.violation(e);
                        break;
                    }
                };
                if done.pending_returned
                    && done.thread.starts_with("classify")
                    && done.irql == DISPATCH_LEVEL
                {
                    tally.completed_by_classify.fetch_add(1, Ordering::Relaxed);
                }
                check_batch(w, cursor, max, &batch, &done, &mut log);
                tally
                    .events_read
                    .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                tally
                    .dropped
                    .fetch_add(batch.header.dropped, Ordering::Relaxed);
                cursor = batch.header.next;
                slot.cursor.store(cursor, Ordering::SeqCst);
                log.events.extend(batch.events);
            }
            STATUS_CANCELLED => {
                tally.cancelled_reads.fetch_add(1, Ordering::Relaxed);
                if !done.output.is_empty() {
                    w.kernel
                        .violation("a cancelled read returned output".into());
                }
                if handle.is_closed() {
                    tally.cancelled_by_cleanup.fetch_add(1, Ordering::Relaxed);
                }
                if stop.load(Ordering::SeqCst) || w.unloading.load(Ordering::SeqCst) {
                    break;
                }
                if handle.is_closed() {
                    match w.open_handle("") {
                        Ok(h) => handle = h,
                        Err(_) => break,
                    }
                }
            }
            other => {
                w.kernel
                    .violation(format!("READ_EVENTS(WAIT) completed with {other:#x}"));
                break;
            }
        }
        if stop.load(Ordering::SeqCst) && w.unloaded.load(Ordering::SeqCst) {
            break;
        }
    }
    *lock(&slot.current) = None;
    if !handle.is_closed()
        && !w.unloading.load(Ordering::SeqCst)
        && !w.unloaded.load(Ordering::SeqCst)
    {
        let _ = w.close_handle(&handle);
    }
    slot.gone.store(true, Ordering::SeqCst);
    log
}

/// The checks of one successful read: at least one event (it waited), no
/// more than asked, contiguous from the cursor apart from the drops the
/// driver reported, `next` after the last one.
fn check_batch(
    w: &World,
    cursor: u64,
    max: u32,
    b: &Batch,
    done: &Completion,
    log: &mut ReaderLog,
) {
    let h = &b.header;
    if b.events.is_empty() {
        w.kernel.violation(format!(
            "READ_EVENTS(WAIT) from cursor {cursor} completed with no event (pended {}, completed on {} at IRQL {}, during dispatch {}): {:?}",
            done.pending_returned, done.thread, done.irql, done.during_dispatch, b.header
        ));
        return;
    }
    if b.events.len() > max as usize {
        w.kernel.violation(format!(
            "READ_EVENTS returned {} events; {max} were asked for",
            b.events.len()
        ));
    }
    let first = b.events[0].seq;
    if cursor == FROM_NOW {
        if h.dropped != 0 {
            w.kernel.violation(format!(
                "a read from \"now\" reported {} dropped",
                h.dropped
            ));
        }
    } else if first != cursor + h.dropped {
        w.kernel.violation(format!(
            "read from cursor {cursor}: first event {first}, {} reported dropped",
            h.dropped
        ));
    } else if h.dropped > 0 && first != h.oldest {
        w.kernel.violation(format!(
            "read from cursor {cursor}: {} dropped but the first event {first} is not the oldest held ({})",
            h.dropped, h.oldest
        ));
    }
    if log.start.is_none() {
        log.start = Some(first - h.dropped.min(first));
    }
    for pair in b.events.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            w.kernel.violation(format!(
                "a batch jumps from event {} to {}",
                pair[0].seq, pair[1].seq
            ));
        }
    }
    let last = b.events[b.events.len() - 1].seq;
    if h.next != last + 1 {
        w.kernel.violation(format!(
            "batch ends with event {last} but next is {}",
            h.next
        ));
    }
    log.dropped += h.dropped;
}

/// Checks every reader against the ring's history (`history[seq]`, all
/// events from 0): same events, and events + drops account for every
/// sequence number from its start to its cursor.
fn check_readers(w: &World, history: &[FlowEvent], logs: &[ReaderLog], first_held: u64) {
    for (i, log) in logs.iter().enumerate() {
        let Some(start) = log.start else {
            continue;
        };
        let end = log.events.last().map_or(start, |e| e.seq + 1);
        if end - start != log.events.len() as u64 + log.dropped {
            w.kernel.violation(format!(
                "reader {i}: from {start} to {end}: {} events and {} dropped",
                log.events.len(),
                log.dropped
            ));
        }
        for e in &log.events {
            if e.seq < first_held {
                continue;
            }
            let held = usize::try_from(e.seq - first_held)
                .ok()
                .and_then(|k| history.get(k));
            if held != Some(e) {
                w.kernel.violation(format!(
                    "reader {i}: event {} differs from the ring's: {e:?} vs {held:?}",
                    e.seq
                ));
                return;
            }
        }
    }
}

/// Cancels reads at random moments: `IoCancelIrp` of a reader's
/// outstanding read (at `PASSIVE_LEVEL` or `DISPATCH_LEVEL`; pending, or
/// still in its dispatch routine), or the close of a reader's handle
/// (`IRP_MJ_CLEANUP`).
fn canceller(w: &World, slots: &[ReaderSlot], running: &AtomicBool, mut rng: Rng) {
    while running.load(Ordering::SeqCst) {
        if rng.one_in(8) {
            std::thread::sleep(Duration::from_micros(rng.below(300)));
        } else {
            std::thread::yield_now();
        }
        let slot = &slots[usize::try_from(rng.below(slots.len() as u64)).unwrap_or(0)];
        let current = lock(&slot.current).clone();
        let Some((handle, ticket)) = current else {
            continue;
        };
        let pending = ticket
            .as_ref()
            .is_some_and(|t| t.returned().is_some() && t.completion().is_none());
        if rng.one_in(if pending { 6 } else { 64 }) {
            let _ = w.close_handle(&handle);
        } else if let Some(t) = ticket
            && (pending || rng.one_in(4))
        {
            let level = if rng.one_in(2) {
                PASSIVE_LEVEL
            } else {
                DISPATCH_LEVEL
            };
            let _ = w.cancel_irp(&t, level);
        }
    }
}

/// Waits until every live reader's cursor reached `head`.
fn wait_for_readers(w: &World, slots: &[ReaderSlot], head: u64) {
    let deadline = Instant::now() + PATIENCE;
    while slots.iter().any(|s| {
        !s.gone.load(Ordering::SeqCst)
            && s.cursor.load(Ordering::SeqCst) != head
            && s.cursor.load(Ordering::SeqCst) != FROM_NOW
    }) {
        if Instant::now() > deadline {
            let cursors: Vec<u64> = slots
                .iter()
                .map(|s| s.cursor.load(Ordering::SeqCst))
                .collect();
            w.kernel.violation(format!(
                "readers did not reach the ring's head {head} within {PATIENCE:?}: cursors {cursors:?}"
            ));
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Ends the readers: `stop`, then every reader's handle closed (their
/// pending reads complete as cancelled).
fn stop_readers(w: &World, slots: &[ReaderSlot], stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + PATIENCE;
    while slots.iter().any(|s| !s.gone.load(Ordering::SeqCst)) {
        for s in slots {
            let current = lock(&s.current).clone();
            if let Some((handle, _)) = current {
                let _ = w.close_handle(&handle);
            }
        }
        if Instant::now() > deadline {
            w.kernel
                .violation("readers did not end after their handles were closed".into());
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// Flow events under concurrency: classify threads establish, talk on and
/// end flows of several processes with known traffic, while reader threads
/// loop `READ_EVENTS` with `READ_EVENTS_WAIT` (their pending reads
/// completed from the classify threads' flow establishment and deletion)
/// and canceller threads cancel reads (`IoCancelIrp`) and close handles
/// (`IRP_MJ_CLEANUP`) at random moments. Then: every reader's events are
/// contiguous and equal to the ring's, every flow's "ended" event carries
/// exactly its traffic, the statistics match, every IRP completed once.
///
/// # Errors
/// The problems found, with the seed.
pub fn events_under_concurrency(
    seed: u64,
    classify_threads: usize,
    readers: usize,
    flows_per_thread: usize,
    recycle_irps: bool,
) -> Result<EventsSummary, String> {
    assert!(
        2 * classify_threads * flows_per_thread < EVENT_CAPACITY,
        "host bug: the scenario must fit the ring"
    );
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    w.io.set_recycling(recycle_irps);
    let tally = Tally::default();
    let ledger = Ledger::default();
    let procs = processes(&mut rng, 6);
    let slots: Vec<ReaderSlot> = (0..readers).map(|_| ReaderSlot::default()).collect();
    let stop = AtomicBool::new(false);
    let producing = AtomicBool::new(true);
    let w_ref: &World = &w;
    let mut logs = Vec::new();
    std::thread::scope(|s| {
        let mut reader_threads = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let (stop, tally) = (&stop, &tally);
            let reader_rng = rng.fork();
            let plan = ReaderPlan {
                from: if i == 0 { FROM_NOW } else { 0 },
                pause_us: if i == 1 { 300 } else { 0 },
            };
            reader_threads.push(
                std::thread::Builder::new()
                    .name(format!("reader-{i}"))
                    .spawn_scoped(s, move || {
                        reader(w_ref, slot, stop, tally, reader_rng, plan)
                    })
                    .expect("spawn"),
            );
        }
        let (slots_ref, producing_ref) = (&slots, &producing);
        let canceller_rng = rng.fork();
        let canceller_thread = std::thread::Builder::new()
            .name("canceller".into())
            .spawn_scoped(s, move || {
                canceller(w_ref, slots_ref, producing_ref, canceller_rng);
            })
            .expect("spawn");
        // Let the readers pend first.
        std::thread::sleep(Duration::from_millis(2));
        let producers: Vec<_> = (0..classify_threads)
            .map(|t| {
                let mut producer_rng = rng.fork();
                let (ledger, procs) = (&ledger, &procs);
                std::thread::Builder::new()
                    .name(format!("classify-{t}"))
                    .spawn_scoped(s, move || {
                        let mut open: Vec<HostFlow> = Vec::new();
                        let mut made = 0;
                        while made < flows_per_thread || !open.is_empty() {
                            let start_one = open.is_empty() || producer_rng.one_in(3);
                            if made < flows_per_thread && start_one {
                                let p = usize::try_from(producer_rng.below(procs.len() as u64))
                                    .unwrap_or(0);
                                let n = ((t as u64 + 1) << 32) + made as u64;
                                open.push(establish(
                                    w_ref,
                                    ledger,
                                    &mut producer_rng,
                                    (p, &procs[p]),
                                    n,
                                ));
                                made += 1;
                            }
                            let i =
                                usize::try_from(producer_rng.below(open.len() as u64)).unwrap_or(0);
                            talk(w_ref, ledger, &mut producer_rng, &open[i]);
                            if producer_rng.one_in(4) {
                                let f = open.swap_remove(i);
                                end(w_ref, ledger, &f);
                            }
                            if producer_rng.one_in(16) {
                                std::thread::sleep(Duration::from_micros(producer_rng.below(200)));
                            }
                        }
                    })
                    .expect("spawn")
            })
            .collect();
        for p in producers {
            let _ = p.join();
        }
        producing.store(false, Ordering::SeqCst);
        let _ = canceller_thread.join();
        match w_ref.open_handle("") {
            Ok(h) => match head(w_ref, &h) {
                Ok(head) => wait_for_readers(w_ref, &slots, head),
                Err(e) => w_ref.kernel.violation(e),
            },
            Err(s) => w_ref.kernel.violation(format!("IRP_MJ_CREATE -> {s:#x}")),
        }
        stop_readers(w_ref, &slots, &stop);
        for r in reader_threads {
            logs.push(r.join().unwrap_or_default());
        }
    });
    let handle = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    let (history, dropped) = read_all(&w, &handle, 0)?;
    if dropped != 0 {
        w.kernel.violation(format!(
            "the ring dropped {dropped} events of a run that fits it"
        ));
    }
    check_history(&w, &ledger, &procs, &history, false);
    check_readers(&w, &history, &logs, 0);
    for (i, log) in logs.iter().enumerate() {
        if log.start.is_some_and(|s| s != 0) && i != 0 {
            w.kernel.violation(format!(
                "reader {i} started at 0 but its first batch began at {:?}",
                log.start
            ));
        }
        if log.dropped != 0 {
            w.kernel
                .violation(format!("reader {i} was told of {} drops", log.dropped));
        }
    }
    w.check_counters();
    let _ = w.close_handle(&handle);
    if w.io.outstanding() != 0 {
        w.kernel.violation(format!(
            "{} IRP(s) still pending after every reader's handle was closed",
            w.io.outstanding()
        ));
    }
    w.unload();
    finish(&w, &tally)
}

/// The ring overflows: more than 16384 events, then reads from old cursors
/// are told exactly how many they lost (known counts, quiet), and a slow
/// reader falling behind while three classify threads keep writing is told
/// exactly too (every batch contiguous from its cursor plus the drops;
/// events + drops = every sequence number), with every event it got
/// matching the flow it names.
///
/// # Errors
/// The problems found, with the seed.
pub fn ring_overflow(seed: u64, extra_flows: usize) -> Result<EventsSummary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let tally = Tally::default();
    let ledger = Ledger::default();
    let procs = processes(&mut rng, 4);
    let w_ref: &World = &w;
    // Quiet part: a known number of events, more than the ring holds.
    let first_flows = EVENT_CAPACITY / 2 + 1 + usize::try_from(rng.below(500)).unwrap_or(0);
    std::thread::scope(|s| {
        for t in 0..2 {
            let mut producer_rng = rng.fork();
            let (ledger, procs) = (&ledger, &procs);
            let share = first_flows / 2 + t * (first_flows % 2);
            std::thread::Builder::new()
                .name(format!("classify-{t}"))
                .spawn_scoped(s, move || {
                    for i in 0..share {
                        let p =
                            usize::try_from(producer_rng.below(procs.len() as u64)).unwrap_or(0);
                        let f = establish(
                            w_ref,
                            ledger,
                            &mut producer_rng,
                            (p, &procs[p]),
                            ((t as u64 + 1) << 32) + i as u64,
                        );
                        talk(w_ref, ledger, &mut producer_rng, &f);
                        end(w_ref, ledger, &f);
                    }
                })
                .expect("spawn");
        }
    });
    let handle = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    let written = 2 * first_flows as u64;
    let cap = EVENT_CAPACITY as u64;
    let h = head(&w, &handle)?;
    if h != written {
        w.kernel
            .violation(format!("{written} events written but the head is {h}"));
    }
    for cursor in [
        0,
        1,
        written - cap - 1,
        written - cap,
        written - cap + 1,
        written - 1,
        written,
    ] {
        let b = read_now(&w, &handle, 256, cursor)?;
        let want_dropped = (written - cap).saturating_sub(cursor);
        let want_first = cursor.max(written - cap);
        let want_n = (written - want_first).min(256);
        let first = b.events.first().map(|e| e.seq);
        if b.header.dropped != want_dropped
            || b.header.oldest != written - cap
            || b.events.len() as u64 != want_n
            || (want_n > 0 && first != Some(want_first))
        {
            w.kernel.violation(format!(
                "read from cursor {cursor} after {written} events: dropped {} (want {want_dropped}), oldest {} (want {}), {} events from {first:?} (want {want_n} from {want_first})",
                b.header.dropped, b.header.oldest, written - cap, b.events.len()
            ));
        }
    }
    let (held, dropped) = read_all(&w, &handle, 0)?;
    if dropped != written - cap || held.len() as u64 != cap {
        w.kernel.violation(format!(
            "a full read from 0: {} events, {dropped} dropped; the ring holds {cap} of {written}",
            held.len()
        ));
    }
    for (k, e) in held.iter().enumerate() {
        if e.seq != written - cap + k as u64 {
            w.kernel
                .violation(format!("held event {k} has sequence number {}", e.seq));
            break;
        }
        check_event(&w, &ledger, &procs, e);
    }
    tally.dropped.fetch_add(dropped, Ordering::Relaxed);
    // Threaded part: a slow reader from 0 while three threads keep writing.
    let slots = [ReaderSlot::default()];
    let stop = AtomicBool::new(false);
    let mut log = ReaderLog::default();
    std::thread::scope(|s| {
        let (slots_ref, stop_ref, tally_ref) = (&slots, &stop, &tally);
        let reader_rng = rng.fork();
        let reader_thread = std::thread::Builder::new()
            .name("reader-slow".into())
            .spawn_scoped(s, move || {
                reader(
                    w_ref,
                    &slots_ref[0],
                    stop_ref,
                    tally_ref,
                    reader_rng,
                    ReaderPlan {
                        from: 0,
                        pause_us: 3000,
                    },
                )
            })
            .expect("spawn");
        let producers: Vec<_> = (0..3)
            .map(|t: u64| {
                let mut producer_rng = rng.fork();
                let (ledger, procs) = (&ledger, &procs);
                std::thread::Builder::new()
                    .name(format!("classify-{t}"))
                    .spawn_scoped(s, move || {
                        for i in 0..extra_flows / 3 {
                            let p = usize::try_from(producer_rng.below(procs.len() as u64))
                                .unwrap_or(0);
                            let n = ((t + 10) << 32) + i as u64;
                            let f = establish(w_ref, ledger, &mut producer_rng, (p, &procs[p]), n);
                            talk(w_ref, ledger, &mut producer_rng, &f);
                            end(w_ref, ledger, &f);
                        }
                    })
                    .expect("spawn")
            })
            .collect();
        for p in producers {
            let _ = p.join();
        }
        let total = written + 2 * 3 * (extra_flows / 3) as u64;
        match head(w_ref, &handle) {
            Ok(h) if h == total => wait_for_readers(w_ref, &slots, h),
            Ok(h) => w_ref
                .kernel
                .violation(format!("{total} events written but the head is {h}")),
            Err(e) => w_ref.kernel.violation(e),
        }
        stop_readers(w_ref, &slots, &stop);
        log = reader_thread.join().unwrap_or_default();
    });
    for e in &log.events {
        check_event(&w, &ledger, &procs, e);
    }
    let end_cursor = log.events.last().map_or(0, |e| e.seq + 1);
    if log.start != Some(0) || end_cursor != log.events.len() as u64 + log.dropped {
        w.kernel.violation(format!(
            "slow reader from 0 to {end_cursor}: {} events + {} dropped (started at {:?})",
            log.events.len(),
            log.dropped,
            log.start
        ));
    }
    if log.dropped < written - cap {
        w.kernel.violation(format!(
            "slow reader from 0 was told of only {} drops; {} had been overwritten before it began",
            log.dropped,
            written - cap
        ));
    }
    let h = head(&w, &handle)?;
    let (held, _) = read_all(&w, &handle, 0)?;
    check_readers(&w, &held, &[log], h - cap);
    let _ = w.close_handle(&handle);
    w.check_counters();
    w.unload();
    finish(&w, &tally)
}

/// One page call's bounds for a process: flows whose end had completed
/// before the call, and flows whose end had begun before it returned.
#[derive(Clone, Copy, Default)]
struct Ends {
    done: u64,
    begun: u64,
    done_traffic: Four,
    begun_traffic: Four,
}

/// Per-process totals while flows end: every process's flows and their
/// traffic are fixed first; then two threads end them (in random order)
/// while two threads page through `LIST_PROCESSES` (racing, so one is
/// answered `STATUS_DEVICE_BUSY` and asks again). At every page, each
/// process's active + ended traffic equals its flows' traffic exactly, its
/// active flow count and ended traffic lie between what had ended before
/// the call and what had begun to end before it returned; its flags and
/// path are what the engine supplied; the flows carry its key.
///
/// # Errors
/// The problems found, with the seed.
#[allow(clippy::too_many_lines)]
pub fn process_totals(seed: u64, flows: usize) -> Result<EventsSummary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let tally = Tally::default();
    let ledger = Ledger::default();
    let procs = processes(&mut rng, 20);
    let w_ref: &World = &w;
    let mut all: Vec<HostFlow> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3u64)
            .map(|t| {
                let mut producer_rng = rng.fork();
                let (ledger, procs) = (&ledger, &procs);
                std::thread::Builder::new()
                    .name(format!("classify-{t}"))
                    .spawn_scoped(s, move || {
                        let mut mine = Vec::new();
                        for i in 0..flows / 3 {
                            let p = usize::try_from(producer_rng.below(procs.len() as u64))
                                .unwrap_or(0);
                            let f = establish(
                                w_ref,
                                ledger,
                                &mut producer_rng,
                                (p, &procs[p]),
                                ((t + 1) << 32) + i as u64,
                            );
                            for _ in 0..producer_rng.below(4) {
                                talk(w_ref, ledger, &mut producer_rng, &f);
                            }
                            mine.push(f);
                        }
                        mine
                    })
                    .expect("spawn")
            })
            .collect();
        for h in handles {
            all.extend(h.join().unwrap_or_default());
        }
    });
    let truths = ledger.all();
    let mut totals = vec![[0u64; 4]; procs.len()];
    let mut counts = vec![0u64; procs.len()];
    for t in truths.iter().filter(|t| t.tracked) {
        add(&mut totals[t.process], &t.traffic);
        counts[t.process] += 1;
    }
    let untracked = truths.iter().filter(|t| !t.tracked).count();
    if untracked != 0 {
        w.kernel.violation(format!(
            "{untracked} flows were not tracked on a quiet driver"
        ));
    }
    let handle = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    // Quiet: one entry per process with flows, as the engine described it,
    // and every flow carries its process's key.
    let keys = match full_pass(&w, &handle, &tally, 64) {
        Ok((header, entries)) => {
            if header.capacity != protocol::PROCESS_SLOTS
                || header.evictions != 0
                || header.unattributed_flows != 0
            {
                w.kernel
                    .violation(format!("LIST_PROCESSES header: {header:?}"));
            }
            let mut keys = vec![0u64; procs.len()];
            let used = counts.iter().filter(|c| **c > 0).count();
            if entries.len() != used {
                w.kernel.violation(format!(
                    "LIST_PROCESSES lists {} processes; {used} have flows",
                    entries.len()
                ));
            }
            for e in &entries {
                let Some(p) = procs.iter().position(|p| p.is(e)) else {
                    w.kernel.violation(format!(
                        "LIST_PROCESSES lists a process the engine never supplied: id {}, flags {:#x}, path {:?}",
                        e.process_id,
                        e.flags,
                        String::from_utf16_lossy(e.path())
                    ));
                    continue;
                };
                keys[p] = e.key;
                let want = Ends::default();
                check_entry(&w, e, p, counts[p], &totals[p], &want, &want);
            }
            keys
        }
        Err(e) => {
            w.kernel.violation(e);
            vec![0; procs.len()]
        }
    };
    match w.list_all_flows(256) {
        Ok((entries, _, _)) => {
            for e in entries {
                if let Some(t) = ledger.get(e.flow_id)
                    && (e.process_key != keys[t.process] || e.process_id != t.flow.pid)
                {
                    w.kernel.violation(format!(
                        "LIST_FLOWS: flow {:#x} has process key {:#x} / id {}; its process's entry has key {:#x} / id {}",
                        e.flow_id, e.process_key, e.process_id, keys[t.process], t.flow.pid
                    ));
                }
            }
        }
        Err(e) => w.kernel.violation(e),
    }
    // Flows end on two threads while two threads query.
    let ends: Vec<Mutex<Ends>> = (0..procs.len())
        .map(|_| Mutex::new(Ends::default()))
        .collect();
    for i in (1..all.len()).rev() {
        let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
        all.swap(i, j);
    }
    let half = all.len() / 2;
    let parts = [&all[..half], &all[half..]];
    let ending = std::sync::atomic::AtomicUsize::new(2);
    std::thread::scope(|s| {
        for (t, part) in parts.into_iter().enumerate() {
            let (ledger, ends, ending) = (&ledger, &ends, &ending);
            let mut ender_rng = rng.fork();
            std::thread::Builder::new()
                .name(format!("ender-{t}"))
                .spawn_scoped(s, move || {
                    for f in part {
                        let t = ledger.get(f.flow.handle);
                        if let Some(t) = &t {
                            let mut e = lock(&ends[t.process]);
                            e.begun += 1;
                            add(&mut e.begun_traffic, &t.traffic);
                        }
                        end(w_ref, ledger, f);
                        if let Some(t) = &t {
                            let mut e = lock(&ends[t.process]);
                            e.done += 1;
                            add(&mut e.done_traffic, &t.traffic);
                        }
                        if ender_rng.one_in(8) {
                            std::thread::sleep(Duration::from_micros(ender_rng.below(300)));
                        }
                    }
                    ending.fetch_sub(1, Ordering::SeqCst);
                })
                .expect("spawn");
        }
        for q in 0..2 {
            let (tally, ends, ending, procs, totals, counts) =
                (&tally, &ends, &ending, &procs, &totals, &counts);
            let mut query_rng = rng.fork();
            std::thread::Builder::new()
                .name(format!("query-{q}"))
                .spawn_scoped(s, move || {
                    let handle = match w_ref.open_handle("") {
                        Ok(h) => h,
                        Err(s) => {
                            w_ref.kernel.violation(format!("IRP_MJ_CREATE -> {s:#x}"));
                            return;
                        }
                    };
                    loop {
                        let finishing = ending.load(Ordering::SeqCst) == 0;
                        let batch = u32::try_from(1 + query_rng.below(MAX_PROCESSES_PER_CALL as u64)).unwrap_or(1);
                        let mut cursor = 0;
                        loop {
                            let before: Vec<Ends> = ends.iter().map(|e| *lock(e)).collect();
                            let page = list_processes_page(w_ref, &handle, batch, cursor);
                            let after: Vec<Ends> = ends.iter().map(|e| *lock(e)).collect();
                            match page {
                                Ok((STATUS_DEVICE_BUSY, _)) => {
                                    tally.busy_retries.fetch_add(1, Ordering::Relaxed);
                                    std::thread::yield_now();
                                }
                                Ok((STATUS_SUCCESS, Some((header, entries)))) => {
                                    tally.process_pages.fetch_add(1, Ordering::Relaxed);
                                    for e in &entries {
                                        match procs.iter().position(|p| p.is(e)) {
                                            Some(p) => check_entry(w_ref, e, p, counts[p], &totals[p], &before[p], &after[p]),
                                            None => w_ref.kernel.violation(format!(
                                                "LIST_PROCESSES lists an unknown process (id {}, flags {:#x})",
                                                e.process_id, e.flags
                                            )),
                                        }
                                    }
                                    if header.flags & PROCESS_LIST_MORE == 0 {
                                        break;
                                    }
                                    if header.next_slot <= cursor {
                                        w_ref.kernel.violation(format!(
                                            "LIST_PROCESSES from slot {cursor} continues at {}",
                                            header.next_slot
                                        ));
                                        break;
                                    }
                                    cursor = header.next_slot;
                                }
                                Ok((status, _)) => {
                                    w_ref.kernel.violation(format!("LIST_PROCESSES -> {status:#x}"));
                                    break;
                                }
                                Err(e) => {
                                    w_ref.kernel.violation(e);
                                    break;
                                }
                            }
                        }
                        if finishing {
                            break;
                        }
                    }
                    let _ = w_ref.close_handle(&handle);
                })
                .expect("spawn");
        }
    });
    // Quiet again: nothing active, everything ended, per process.
    match full_pass(&w, &handle, &tally, 7) {
        Ok((_, entries)) => {
            for e in &entries {
                if let Some(p) = procs.iter().position(|p| p.is(e)) {
                    let all_ended = Ends {
                        done: counts[p],
                        begun: counts[p],
                        done_traffic: totals[p],
                        begun_traffic: totals[p],
                    };
                    check_entry(&w, e, p, counts[p], &totals[p], &all_ended, &all_ended);
                    if e.key != keys[p] {
                        w.kernel.violation(format!(
                            "process {p}'s key changed from {:#x} to {:#x} (no eviction happened)",
                            keys[p], e.key
                        ));
                    }
                }
            }
        }
        Err(e) => w.kernel.violation(e),
    }
    let _ = w.close_handle(&handle);
    w.check_counters();
    w.unload();
    finish(&w, &tally)
}

/// A whole `LIST_PROCESSES` pass in pages of `batch`, asking again on
/// `STATUS_DEVICE_BUSY`.
fn full_pass(
    w: &World,
    handle: &FileHandle,
    tally: &Tally,
    batch: u32,
) -> Result<(ProcessListHeader, Vec<ProcessEntry>), String> {
    let mut cursor = 0;
    let mut all = Vec::new();
    loop {
        match list_processes_page(w, handle, batch, cursor)? {
            (STATUS_DEVICE_BUSY, _) => {
                tally.busy_retries.fetch_add(1, Ordering::Relaxed);
            }
            (STATUS_SUCCESS, Some((header, entries))) => {
                tally.process_pages.fetch_add(1, Ordering::Relaxed);
                all.extend(entries);
                if header.flags & PROCESS_LIST_MORE == 0 {
                    return Ok((header, all));
                }
                if header.next_slot <= cursor {
                    return Err(format!(
                        "LIST_PROCESSES from slot {cursor} continues at {}",
                        header.next_slot
                    ));
                }
                cursor = header.next_slot;
            }
            (status, _) => return Err(format!("LIST_PROCESSES -> {status:#x}")),
        }
    }
}

/// One process entry against the ledger: flows, flags, exact totals, and
/// active/ended within what had ended before the call (`before.done`) and
/// what had begun to end before it returned (`after.begun`).
fn check_entry(
    w: &World,
    e: &ProcessEntry,
    p: usize,
    flows: u64,
    total: &Four,
    before: &Ends,
    after: &Ends,
) {
    let mut sum = e.active;
    add(&mut sum, &e.ended);
    if sum != *total {
        w.kernel.violation(format!(
            "process {p} (key {:#x}): active {:?} + ended {:?} = {sum:?}; its flows carried {total:?}",
            e.key, e.active, e.ended
        ));
    }
    if e.flows_total != flows {
        w.kernel.violation(format!(
            "process {p}: flows_total {}, but it had {flows} flows",
            e.flows_total
        ));
    }
    let active = u64::from(e.active_flows);
    if active > flows - before.done || active < flows - after.begun {
        w.kernel.violation(format!(
            "process {p}: {active} active flows; between {} and {} were still open during the call",
            flows - after.begun,
            flows - before.done
        ));
    }
    for k in 0..4 {
        if e.ended[k] < before.done_traffic[k] || e.ended[k] > after.begun_traffic[k] {
            w.kernel.violation(format!(
                "process {p}: ended traffic {:?} outside [{:?}, {:?}] (what had ended before the call, what had begun to end before it returned)",
                e.ended, before.done_traffic, after.begun_traffic
            ));
            break;
        }
    }
    if e.reserved != 0 || e.first_seen > e.last_seen {
        w.kernel.violation(format!(
            "process {p}: reserved {} / first_seen {} after last_seen {}",
            e.reserved, e.first_seen, e.last_seen
        ));
    }
}

/// Unload while reads are pending on several threads (with traffic
/// running, or quiet so that every reader is pending): every read is
/// completed — with events, or `STATUS_CANCELLED` by the teardown —
/// before the device is deleted, nothing is completed after Unload
/// returned, and Unload leaves nothing.
///
/// # Errors
/// The problems found, with the seed.
pub fn unload_with_pending_reads(
    seed: u64,
    readers: usize,
    quiet: bool,
) -> Result<EventsSummary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let tally = Tally::default();
    let ledger = Ledger::default();
    let procs = processes(&mut rng, 3);
    let slots: Vec<ReaderSlot> = (0..readers).map(|_| ReaderSlot::default()).collect();
    let stop = AtomicBool::new(false);
    let traffic = AtomicBool::new(true);
    let w_ref: &World = &w;
    let mut logs = Vec::new();
    std::thread::scope(|s| {
        let reader_threads: Vec<_> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let (stop, tally) = (&stop, &tally);
                let reader_rng = rng.fork();
                std::thread::Builder::new()
                    .name(format!("reader-{i}"))
                    .spawn_scoped(s, move || {
                        reader(
                            w_ref,
                            slot,
                            stop,
                            tally,
                            reader_rng,
                            ReaderPlan {
                                from: if i % 2 == 0 { 0 } else { FROM_NOW },
                                pause_us: 0,
                            },
                        )
                    })
                    .expect("spawn")
            })
            .collect();
        let producers: Vec<_> = (0..2u64)
            .map(|t| {
                let mut producer_rng = rng.fork();
                let (ledger, procs, traffic) = (&ledger, &procs, &traffic);
                std::thread::Builder::new()
                    .name(format!("classify-{t}"))
                    .spawn_scoped(s, move || {
                        let mut open: Vec<HostFlow> = Vec::new();
                        let mut n = (t + 1) << 32;
                        while traffic.load(Ordering::SeqCst) {
                            if open.len() < 20 && producer_rng.one_in(2) {
                                let p = usize::try_from(producer_rng.below(procs.len() as u64))
                                    .unwrap_or(0);
                                n += 1;
                                open.push(establish(
                                    w_ref,
                                    ledger,
                                    &mut producer_rng,
                                    (p, &procs[p]),
                                    n,
                                ));
                            } else if !open.is_empty() {
                                let i = usize::try_from(producer_rng.below(open.len() as u64))
                                    .unwrap_or(0);
                                talk(w_ref, ledger, &mut producer_rng, &open[i]);
                                if producer_rng.one_in(5) {
                                    let f = open.swap_remove(i);
                                    end(w_ref, ledger, &f);
                                }
                            }
                            std::thread::sleep(Duration::from_micros(producer_rng.below(100)));
                        }
                        open
                    })
                    .expect("spawn")
            })
            .collect();
        // Every reader has its handle and a read sent before anything else.
        let deadline = Instant::now() + PATIENCE;
        while slots.iter().any(|s| lock(&s.current).is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        std::thread::sleep(Duration::from_micros(2000 + rng.below(4000)));
        let mut leftover = Vec::new();
        if quiet {
            traffic.store(false, Ordering::SeqCst);
            for p in producers {
                for f in p.join().unwrap_or_default() {
                    end(w_ref, &ledger, &f);
                }
            }
            // No flow left, every reader caught up and pending: the
            // teardown has no event to give them and must cancel each.
            if let Ok(h) = w_ref.open_handle("") {
                if let Ok(head) = head(w_ref, &h) {
                    wait_for_readers(w_ref, &slots, head);
                }
                let _ = w_ref.close_handle(&h);
            }
            let pending = |s: &ReaderSlot| {
                lock(&s.current).as_ref().is_some_and(|(_, t)| {
                    t.as_ref().is_some_and(|t| {
                        t.returned() == Some(crate::kernel::status::PENDING)
                            && t.completion().is_none()
                    })
                })
            };
            let deadline = Instant::now() + PATIENCE;
            while !slots.iter().all(pending) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
            }
            if !slots.iter().all(pending) {
                w_ref
                    .kernel
                    .violation("the readers' reads did not all pend".into());
            }
            stop.store(true, Ordering::SeqCst);
            w_ref.unload();
        } else {
            stop.store(true, Ordering::SeqCst);
            w_ref.unload();
            traffic.store(false, Ordering::SeqCst);
            for p in producers {
                leftover.extend(p.join().unwrap_or_default());
            }
        }
        for r in reader_threads {
            logs.push(r.join().unwrap_or_default());
        }
        for f in leftover {
            end(w_ref, &ledger, &f);
        }
    });
    match w.io.outstanding_at_device_delete() {
        Some(0) => {}
        Some(n) => w.kernel.violation(format!(
            "IoDeleteDevice ran while {n} IRP(s) were still pending (the teardown completes every pending read first)"
        )),
        None => w.kernel.violation("IoDeleteDevice never ran".into()),
    }
    for (i, log) in logs.iter().enumerate() {
        for e in &log.events {
            check_event(&w, &ledger, &procs, e);
        }
        match &log.last {
            Some(c) if c.status == STATUS_CANCELLED || c.status == STATUS_SUCCESS => {
                if quiet && (!c.during_unload || c.status != STATUS_CANCELLED) {
                    w.kernel.violation(format!(
                        "reader {i}'s read pending at Unload (no flow left) ended with {:#x} on {} (during Unload: {}); the teardown must cancel it",
                        c.status, c.thread, c.during_unload
                    ));
                }
            }
            other => w.kernel.violation(format!(
                "reader {i}: last read {other:?}, not completed by the teardown"
            )),
        }
    }
    finish(&w, &tally)
}

/// The protocol on one thread, step by step: an empty ring, a read that
/// pends until a flow is established (completed inside the classify, at
/// `DISPATCH_LEVEL`), reads from "now", `IoCancelIrp` of a pending read,
/// an IRP already cancelled when it reaches the driver, cleanup completing
/// only its own handle's reads, malformed requests, per-process entries
/// for missing and long paths, and Unload completing a pending read.
///
/// # Errors
/// The problems found, with the seed.
#[allow(clippy::too_many_lines)]
pub fn basics(seed: u64) -> Result<EventsSummary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let tally = Tally::default();
    let ledger = Ledger::default();
    let procs = processes(&mut rng, 2);
    let fail = |what: String| w.kernel.violation(what);
    let a = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    let b = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    // An empty ring.
    let empty = read_now(&w, &a, 16, 0)?;
    if empty.header.returned != 0 || empty.header.next != 0 || empty.header.dropped != 0 {
        fail(format!("an empty ring answered {:?}", empty.header));
    }
    // A read that pends, completed by the next flow establishment.
    let pending = start_read(&w, &a, 16, 0, true).ok_or("READ_EVENTS not sent")?;
    if pending.returned() != Some(crate::kernel::status::PENDING) || pending.completion().is_some()
    {
        fail(format!(
            "READ_EVENTS(WAIT) on an empty ring: returned {:?}, completion {:?}",
            pending.returned(),
            pending.completion()
        ));
    }
    let f0 = establish(&w, &ledger, &mut rng, (0, &procs[0]), 1);
    match pending.completion() {
        Some(c) if c.status == STATUS_SUCCESS => {
            let batch = decode_batch(&c.output)?;
            if batch.events.len() != 1
                || batch.events[0].kind != EVENT_ESTABLISHED
                || batch.events[0].flow_id != f0.flow.handle
                || c.irql != DISPATCH_LEVEL
                || c.during_dispatch
            {
                fail(format!(
                    "the pending read completed with {:?} at IRQL {} (during dispatch {})",
                    batch.events, c.irql, c.during_dispatch
                ));
            }
        }
        other => fail(format!(
            "the pending read was not completed by the flow's establishment: {other:?}"
        )),
    }
    // "From now": pends although events exist; the driver wrote the
    // resolved cursor back, so the next event is the first returned.
    let from_now = start_read(&w, &b, 16, FROM_NOW, true).ok_or("READ_EVENTS not sent")?;
    if from_now.completion().is_some() {
        fail("a read from \"now\" completed at once".into());
    }
    talk(&w, &ledger, &mut rng, &f0);
    end(&w, &ledger, &f0);
    match from_now.completion() {
        Some(c) if c.status == STATUS_SUCCESS => {
            let batch = decode_batch(&c.output)?;
            let counters = batch.events.first().map(|e| {
                [
                    e.bytes_inbound,
                    e.bytes_outbound,
                    e.packets_inbound,
                    e.packets_outbound,
                ]
            });
            if batch.events.len() != 1
                || batch.events[0].seq != 1
                || batch.events[0].kind != EVENT_ENDED
                || counters != ledger.get(f0.flow.handle).map(|t| t.traffic)
            {
                fail(format!("a read from \"now\" got {:?}", batch.events));
            }
        }
        other => fail(format!(
            "the read from \"now\" was not completed by the flow's end: {other:?}"
        )),
    }
    // IoCancelIrp of a pending read.
    let r1 = start_read(&w, &a, 16, 2, true).ok_or("READ_EVENTS not sent")?;
    let ran = w.cancel_irp(&r1, PASSIVE_LEVEL);
    match r1.completion() {
        Some(c) if ran && c.status == STATUS_CANCELLED && c.cancel => {}
        other => fail(format!(
            "IoCancelIrp of a pending read: routine ran {ran}, completion {other:?}"
        )),
    }
    if w.cancel_irp(&r1, PASSIVE_LEVEL) {
        fail("IoCancelIrp of a completed read ran a cancel routine".into());
    }
    // An IRP already cancelled when the driver queues it.
    let pre = w
        .prepare_irp(
            &a,
            IRP_MJ_DEVICE_CONTROL,
            IOCTL_WFPMON_READ_EVENTS,
            &ReadEventsRequest::new(4, 2, true).to_bytes(),
            events_out_len(4),
        )
        .ok_or("no device")?;
    if w.cancel_irp(&pre, DISPATCH_LEVEL) {
        fail("IoCancelIrp of an IRP not yet sent ran a cancel routine".into());
    }
    let returned = w.dispatch(&a, &pre);
    match pre.completion() {
        Some(c)
            if returned == Some(crate::kernel::status::PENDING)
                && c.status == STATUS_CANCELLED
                && c.during_dispatch => {}
        other => fail(format!(
            "a cancelled IRP reaching the driver: returned {returned:?}, completion {other:?}"
        )),
    }
    // Cleanup completes the reads of its own handle only.
    let a1 = start_read(&w, &a, 8, 2, true).ok_or("READ_EVENTS not sent")?;
    let a2 = start_read(&w, &a, 8, FROM_NOW, true).ok_or("READ_EVENTS not sent")?;
    let b1 = start_read(&w, &b, 8, 2, true).ok_or("READ_EVENTS not sent")?;
    let cleanup = w.close_handle(&a);
    let cancelled = |t: &Ticket| t.completion().is_some_and(|c| c.status == STATUS_CANCELLED);
    if cleanup != Some(STATUS_SUCCESS)
        || !cancelled(&a1)
        || !cancelled(&a2)
        || b1.completion().is_some()
    {
        fail(format!(
            "IRP_MJ_CLEANUP -> {cleanup:?}: its reads {:?} / {:?}, the other handle's {:?}",
            a1.completion().map(|c| c.status),
            a2.completion().map(|c| c.status),
            b1.completion().map(|c| c.status)
        ));
    }
    if start_read(&w, &a, 8, 0, true).is_some() {
        fail("a request was sent on a closed handle (host bug)".into());
    }
    // Malformed requests.
    let c = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    let mut wrong_version = ReadEventsRequest::new(1, 0, false);
    wrong_version.header.version = protocol::PROTOCOL_VERSION - 1;
    let mut bad_flags = ReadEventsRequest::new(1, 0, false).to_bytes();
    bad_flags[12] = 2;
    let cases: [(&str, u32, Vec<u8>, usize, i32); 6] = [
        (
            "READ_EVENTS, output for the header only",
            IOCTL_WFPMON_READ_EVENTS,
            ReadEventsRequest::new(1, 0, true).to_bytes().to_vec(),
            EventsHeader::SIZE,
            STATUS_BUFFER_TOO_SMALL,
        ),
        (
            "READ_EVENTS, unknown flag",
            IOCTL_WFPMON_READ_EVENTS,
            bad_flags.to_vec(),
            events_out_len(1),
            STATUS_INVALID_PARAMETER,
        ),
        (
            "READ_EVENTS, short input",
            IOCTL_WFPMON_READ_EVENTS,
            ReadEventsRequest::new(1, 0, true).to_bytes()[..20].to_vec(),
            events_out_len(1),
            STATUS_INVALID_BUFFER_SIZE,
        ),
        (
            "READ_EVENTS, protocol 3",
            IOCTL_WFPMON_READ_EVENTS,
            wrong_version.to_bytes().to_vec(),
            events_out_len(1),
            STATUS_REVISION_MISMATCH,
        ),
        (
            "LIST_PROCESSES, cursor 1024",
            IOCTL_WFPMON_LIST_PROCESSES,
            ListProcessesRequest::new(1, protocol::PROCESS_SLOTS)
                .to_bytes()
                .to_vec(),
            ProcessListHeader::SIZE + ProcessEntry::SIZE,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "LIST_PROCESSES, output for the header only",
            IOCTL_WFPMON_LIST_PROCESSES,
            ListProcessesRequest::new(1, 0).to_bytes().to_vec(),
            ProcessListHeader::SIZE,
            STATUS_BUFFER_TOO_SMALL,
        ),
    ];
    for (what, code, input, out, want) in cases {
        match w.request(&c, IRP_MJ_DEVICE_CONTROL, code, &input, out) {
            Some(done) if done.status == want && !done.pending_returned => {}
            other => fail(format!(
                "{what}: {:?}, expected {want:#x}",
                other.map(|d| (d.status, d.pending_returned))
            )),
        }
    }
    // Per-process entries: every kind of process, one flow each.
    let mut flows = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        flows.push(establish(&w, &ledger, &mut rng, (i, p), 100 + i as u64));
    }
    match full_pass(&w, &c, &tally, 3) {
        Ok((_, entries)) => {
            for (i, p) in procs.iter().enumerate() {
                let n = 1 + u64::from(i == 0);
                let mine: Vec<&ProcessEntry> = entries.iter().filter(|e| p.is(e)).collect();
                match mine.as_slice() {
                    [e] if e.flows_total == n => {}
                    _ => fail(format!(
                        "process {i} (id {:?}, flags {:#x}): entries {mine:?} (it has {n} flow(s))",
                        p.pid,
                        p.flags()
                    )),
                }
            }
            if entries.len() != procs.len() {
                fail(format!(
                    "{} entries for {} processes",
                    entries.len(),
                    procs.len()
                ));
            }
        }
        Err(e) => fail(e),
    }
    // Unload with a read pending on handle b (the one from before was
    // completed by these flows' events): completed before the device goes
    // — by the "ended" events the teardown's removals publish.
    match b1.completion() {
        Some(done) if done.status == STATUS_SUCCESS => {}
        other => fail(format!(
            "the read on the other handle, after new flows: {other:?}"
        )),
    }
    let b2 = start_read(&w, &b, 8, FROM_NOW, true).ok_or("READ_EVENTS not sent")?;
    drop(c);
    w.unload();
    match b2.completion() {
        Some(done)
            if done.during_unload
                && (done.status == STATUS_SUCCESS || done.status == STATUS_CANCELLED) =>
        {
            if done.status == STATUS_SUCCESS {
                let batch = decode_batch(&done.output)?;
                if batch
                    .events
                    .iter()
                    .any(|e| e.flags & EVENT_FLAG_UNLOADING == 0)
                {
                    fail(format!(
                        "events completed at unload without the UNLOADING flag: {:?}",
                        batch.events
                    ));
                }
            }
        }
        other => fail(format!("the read pending at Unload: {other:?}")),
    }
    if w.io.outstanding_at_device_delete() != Some(0) {
        fail(format!(
            "IoDeleteDevice with {:?} IRPs pending",
            w.io.outstanding_at_device_delete()
        ));
    }
    for f in &flows {
        w.end_flow(f);
    }
    finish(&w, &tally)
}

/// `DriverEntry` with its `k`-th failable call failing (no other thread):
/// its status, after the world's checks that nothing was left.
///
/// # Errors
/// The problems found, with the seed.
pub fn driver_entry_failing_at(seed: u64, k: usize) -> Result<i32, String> {
    let w = World::create(Config::new(seed))?;
    w.kernel.arm_faults(Some(k), Duration::ZERO);
    let status = w.driver_entry();
    let _ = w.kernel.disarm_faults();
    if status >= 0 {
        w.unload();
    }
    w.finish()?;
    Ok(status)
}

/// The memcheck scenario of this module: the protocol step by step, events
/// under concurrency (with cancellation, IRP memory freed at completion so
/// that memcheck sees any use of a completed IRP), per-process totals while
/// flows end, Unload with reads pending (quiet and under traffic), and the
/// ring overflowing.
///
/// # Errors
/// The problems found, with the seed.
pub fn stress(seed: u64) -> Result<EventsSummary, String> {
    let a = basics(seed)?;
    let b = events_under_concurrency(seed, 2, 3, 150, false)?;
    let c = process_totals(seed, 150)?;
    let d = unload_with_pending_reads(seed, 3, true)?;
    let e = unload_with_pending_reads(seed, 3, false)?;
    let f = ring_overflow(seed, 300)?;
    Ok(a.plus(b).plus(c).plus(d).plus(e).plus(f))
}

/// The I/O harness checks itself: deliberate host-side breakage, acting as
/// the driver would, that each rule of [`crate::io`] and [`crate::csq`] must
/// report — an IRP completed twice, completed with `STATUS_PENDING`,
/// completed with a cancel routine still set, queued in a queue never
/// initialised, and one left pending at Unload. Returns the violations
/// recorded.
///
/// # Errors
/// When the world cannot be built.
pub fn io_self_check(seed: u64) -> Result<Vec<String>, String> {
    let w = boot(Config::new(seed))?;
    let handle = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    let complete = |irp: usize, status: i32| {
        // SAFETY: an outstanding IRP the host prepared (IoStatus.Status).
        unsafe { ((irp + 0x30) as *mut i32).write(status) };
        // SAFETY: as above (IoStatus.Information).
        unsafe { ((irp + 0x38) as *mut u64).write(0) };
        crate::kernel::call_into_image(&w, "self-check: complete", PASSIVE_LEVEL, || {
            // SAFETY: the IofCompleteRequest model, called as the image
            // would call it.
            unsafe { crate::kernel::iof_complete_request(irp, 0) };
        });
    };
    let prepare = || {
        w.prepare_irp(
            &handle,
            IRP_MJ_DEVICE_CONTROL,
            IOCTL_WFPMON_READ_EVENTS,
            &[0; 24],
            events_out_len(1),
        )
        .ok_or_else(|| "no device".to_string())
    };
    // Completed twice (the second call finds no outstanding IRP there).
    let once = prepare()?;
    let irp = once.irp;
    complete(irp, STATUS_SUCCESS);
    crate::kernel::call_into_image(&w, "self-check: complete again", PASSIVE_LEVEL, || {
        // SAFETY: the model looks the address up before touching anything.
        unsafe { crate::kernel::iof_complete_request(irp, 0) };
    });
    // Completed with STATUS_PENDING.
    let pending = prepare()?;
    complete(pending.irp, crate::kernel::status::PENDING);
    // Completed with a cancel routine set.
    let cancellable = prepare()?;
    crate::io::cancel_routine(cancellable.irp).store(
        crate::csq::system_cancel_routine as *const () as usize,
        Ordering::SeqCst,
    );
    complete(cancellable.irp, STATUS_CANCELLED);
    // Queued in a queue nobody initialised.
    let mut not_a_queue = [0u64; 8];
    let queued = prepare()?;
    crate::kernel::call_into_image(&w, "self-check: insert", PASSIVE_LEVEL, || {
        // SAFETY: the IoCsqInsertIrp model, which refuses the queue before
        // touching the IRP.
        unsafe { crate::csq::io_csq_insert_irp(not_a_queue.as_mut_ptr() as usize, queued.irp, 0) };
    });
    // Left pending at Unload: a request the driver "pended" and forgot.
    let forgotten = prepare()?;
    forgotten.mark_sent();
    drop(handle);
    w.unload();
    let reported = w.kernel.violations();
    // Tidy up so that the world drops cleanly (the image is unloaded: the
    // host completes what it left itself).
    w.io.forget(&queued);
    w.io.forget(&forgotten);
    Ok(reported)
}

/// More processes than the table holds: 1400 processes with one active
/// flow each (the table has 1024 entries in 32 shards of 32, so some
/// shards fill with processes that all have active flows), then, all those
/// flows ended, 300 new processes (entries of ended processes are reused).
/// The flows without an entry are exactly those whose "established" event
/// says NO_PROCESS and whose LIST_FLOWS entry has no process key, and the
/// header's `unattributed_flows` counts exactly them; every entry listed is
/// a process the engine supplied, with its flow's exact traffic; reused
/// entries are counted in `evictions` and get a new key.
///
/// # Errors
/// The problems found, with the seed.
#[allow(clippy::too_many_lines)]
pub fn process_table_full(seed: u64) -> Result<EventsSummary, String> {
    const FIRST: usize = 1400;
    const SECOND: usize = 300;
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let tally = Tally::default();
    let ledger = Ledger::default();
    let base = 10_000 + rng.below(1000) * 4;
    let procs: Vec<Process> = (0..(FIRST + SECOND) as u64)
        .map(|i| {
            let pid = base + 4 * i;
            Process::new(Some(pid), Some(&crate::world::default_process_path(pid)))
        })
        .collect();
    let handle = w
        .open_handle("")
        .map_err(|s| format!("IRP_MJ_CREATE -> {s:#x}"))?;
    let mut first = Vec::new();
    for (i, p) in procs.iter().enumerate().take(FIRST) {
        let f = establish(&w, &ledger, &mut rng, (i, p), i as u64);
        talk(&w, &ledger, &mut rng, &f);
        first.push(f);
    }
    let (events, _) = read_all(&w, &handle, 0)?;
    let no_process: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == EVENT_ESTABLISHED && e.flags & EVENT_FLAG_NO_PROCESS != 0)
        .map(|e| e.flow_id)
        .collect();
    let (header, entries) = full_pass(&w, &handle, &tally, 64)?;
    let flows = w.list_all_flows(256)?.0;
    let keyless: Vec<u64> = flows
        .iter()
        .filter(|f| f.process_key == 0)
        .map(|f| f.flow_id)
        .collect();
    let mut sorted_events = no_process.clone();
    sorted_events.sort_unstable();
    let mut sorted_flows = keyless.clone();
    sorted_flows.sort_unstable();
    if no_process.is_empty()
        || header.unattributed_flows != no_process.len() as u64
        || sorted_events != sorted_flows
        || entries.len() + no_process.len() != FIRST
        || header.evictions != 0
    {
        w.kernel.violation(format!(
            "{FIRST} processes with an active flow each: {} entries, {} NO_PROCESS events, {} flows without a key, unattributed {}, evictions {}",
            entries.len(),
            no_process.len(),
            keyless.len(),
            header.unattributed_flows,
            header.evictions
        ));
    }
    let mut keys: HashMap<usize, u64> = HashMap::new();
    for e in &entries {
        match procs.iter().position(|p| p.is(e)) {
            Some(p) => {
                keys.insert(p, e.key);
                let t = ledger.all().into_iter().find(|t| t.process == p);
                let traffic = t.map_or([0; 4], |t| t.traffic);
                let none = Ends::default();
                check_entry(&w, e, p, 1, &traffic, &none, &none);
            }
            None => w.kernel.violation(format!(
                "an entry for a process the engine never supplied: id {}",
                e.process_id
            )),
        }
    }
    for f in &first {
        end(&w, &ledger, f);
    }
    for (i, p) in procs.iter().enumerate().skip(FIRST) {
        let f = establish(&w, &ledger, &mut rng, (i, p), i as u64);
        talk(&w, &ledger, &mut rng, &f);
        first.push(f);
    }
    let (header, entries) = full_pass(&w, &handle, &tally, 64)?;
    let new_ones = entries
        .iter()
        .filter(|e| procs[FIRST..].iter().any(|p| p.is(e)))
        .count();
    if header.evictions == 0 || new_ones != SECOND || header.evictions > SECOND as u64 {
        w.kernel.violation(format!(
            "{SECOND} new processes after every flow ended: {new_ones} listed, evictions {}",
            header.evictions
        ));
    }
    let truths = ledger.all();
    for e in &entries {
        let Some(p) = procs.iter().position(|p| p.is(e)) else {
            w.kernel
                .violation(format!("an unknown process is listed: id {}", e.process_id));
            continue;
        };
        let traffic = truths
            .iter()
            .find(|t| t.process == p)
            .map_or([0; 4], |t| t.traffic);
        let ended = p < FIRST;
        let state = Ends {
            done: u64::from(ended),
            begun: u64::from(ended),
            done_traffic: if ended { traffic } else { [0; 4] },
            begun_traffic: if ended { traffic } else { [0; 4] },
        };
        check_entry(&w, e, p, 1, &traffic, &state, &state);
        if ended && keys.get(&p).is_some_and(|k| *k != e.key) {
            w.kernel.violation(format!(
                "process {p} kept its entry but its key changed from {:#x?} to {:#x}",
                keys.get(&p),
                e.key
            ));
        }
    }
    let _ = w.close_handle(&handle);
    w.check_counters();
    w.unload();
    for f in first.iter().skip(FIRST) {
        w.end_flow(f);
    }
    finish(&w, &tally)
}
