//! Requests to the driver's control device.
//!
//! They go through a [`ControlDevice`] (`DeviceIoControl` on Windows, a
//! simulated driver in the tests). The only module that knows the IOCTLs:
//! a paged flow list changes only here.

use std::time::Duration;

use wfpmon_core::events::FlowEvent;
use wfpmon_core::protocol::{
    self, DecodeError, EventsHeader, FlowEntry, IOCTL_WFPMON_LIST_FLOWS as LIST_FLOWS,
    IOCTL_WFPMON_LIST_PROCESSES as LIST_PROCESSES, IOCTL_WFPMON_QUERY_STATS as QUERY_STATS,
    IOCTL_WFPMON_READ_EVENTS as READ_EVENTS, IOCTL_WFPMON_SET_COUNTING as SET_COUNTING,
    ListFlowsRequest, ListProcessesRequest, MAX_EVENTS_PER_CALL, MAX_PROCESSES_PER_CALL,
    PROTOCOL_VERSION, ProcessEntry, ProcessListHeader, QueryStatsRequest, ReadEventsRequest,
    SetCountingRequest, Stats,
};
use windows_sys::Win32::Foundation::ERROR_BUSY;

use crate::error::{Error, Kind, SAME_BUILD, Step, SystemCode};

/// How a `DeviceIoControl` call failed. (Protocol 3 has no partial
/// answers: the flow list is paged, so `ERROR_MORE_DATA` is a failure too.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlError(pub(crate) SystemCode);

impl IoctlError {
    /// The call failed with this Win32 error code (`GetLastError`).
    #[must_use]
    pub const fn win32(code: u32) -> Self {
        Self(SystemCode::Win32(code))
    }
}

/// A synchronous `DeviceIoControl` on the control device.
pub trait ControlDevice {
    /// Sends `code` with `input`; returns the bytes written to `output`.
    ///
    /// # Errors
    /// The Win32 error code the call failed with.
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError>;
}

/// Sends a request; the bytes received.
fn call<D: ControlDevice>(
    device: &mut D,
    code: u32,
    input: &[u8],
    output: &mut [u8],
) -> Result<usize, Error> {
    let (name, action) = match code {
        QUERY_STATS => (
            "IOCTL_WFPMON_QUERY_STATS",
            "reading the driver's statistics",
        ),
        LIST_FLOWS => ("IOCTL_WFPMON_LIST_FLOWS", "reading the driver's flow list"),
        READ_EVENTS => (
            "IOCTL_WFPMON_READ_EVENTS",
            "reading the driver's flow events",
        ),
        LIST_PROCESSES => (
            "IOCTL_WFPMON_LIST_PROCESSES",
            "reading the driver's process table",
        ),
        _ => (
            "IOCTL_WFPMON_SET_COUNTING",
            "turning traffic counting on or off",
        ),
    };
    match device.ioctl(code, input, output) {
        Ok(n) => Ok(n.min(output.len())),
        Err(IoctlError(c)) => {
            let call = format!("DeviceIoControl({name})");
            Err(Error::system(Step::DeviceControl, c, action, call))
        }
    }
}

fn protocol_error(e: DecodeError) -> Error {
    let message = match e {
        DecodeError::Version(v) => format!(
            "the wfpmon driver speaks control-protocol version {v}, this wfpmonctl version {PROTOCOL_VERSION}"
        ),
        DecodeError::Truncated | DecodeError::Size => {
            "the wfpmon driver sent a malformed response: it and wfpmonctl come from different builds"
                .to_owned()
        }
    };
    Error::with_remedy(Kind::ProtocolMismatch, message, SAME_BUILD)
}

/// Reads the driver-wide statistics: the walk-free query (ended flows'
/// traffic), or with `live` the traffic of open flows too (the driver then
/// visits every flow).
pub fn query_stats<D: ControlDevice>(device: &mut D, live: bool) -> Result<Stats, Error> {
    let mut out = [0u8; Stats::SIZE];
    let request = if live {
        QueryStatsRequest::with_live_traffic()
    } else {
        QueryStatsRequest::new()
    }
    .to_bytes();
    let n = call(device, QUERY_STATS, &request, &mut out)?;
    let stats = Stats::decode(&out[..n]).map_err(protocol_error)?;
    if (stats.flags & protocol::STATS_INCLUDES_LIVE_TRAFFIC != 0) != live {
        return Err(Error::new(
            Kind::ProtocolMismatch,
            "the driver's statistics do not cover the flows that were asked for: driver and wfpmonctl come from different builds",
        ));
    }
    Ok(stats)
}

/// Turns traffic counting on or off.
pub fn set_counting<D: ControlDevice>(device: &mut D, enable: bool) -> Result<(), Error> {
    let request = SetCountingRequest::new(enable).to_bytes();
    call(device, SET_COUNTING, &request, &mut []).map(drop)
}

/// A snapshot of the flow table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowList {
    /// Active flows when the snapshot was taken.
    pub total: u32,
    /// The entries returned (fewer than `total` only if flows kept
    /// appearing faster than the buffer grew).
    pub entries: Vec<FlowEntry>,
}

/// Lists every active flow, page by page.
///
/// Each call returns at most [`protocol::MAX_FLOWS_PER_CALL`] flows after
/// the cursor of the previous answer, so a million flows need no huge
/// buffer (about 4 000 calls of 24 KiB). Within one listing pass the driver
/// lists a flow present throughout exactly once, and one that comes or goes
/// meanwhile at most once.
pub fn list_flows<D: ControlDevice>(device: &mut D) -> Result<FlowList, Error> {
    let size = protocol::flow_list_size(protocol::MAX_FLOWS_PER_CALL)
        .ok_or_else(|| Error::new(Kind::Other, "the flow list's batch size overflows"))?;
    let mut out = vec![0u8; size];
    let mut list = FlowList::default();
    let mut cursor = (0, 0);
    loop {
        let request = ListFlowsRequest::resume(0, cursor.0, cursor.1).to_bytes();
        let n = call(device, LIST_FLOWS, &request, &mut out)?;
        let (header, entries) = protocol::decode_flow_list(&out[..n]).map_err(protocol_error)?;
        list.total = header.total_flows;
        list.entries.extend(entries);
        if header.flags & protocol::FLOW_LIST_MORE == 0 {
            return Ok(list);
        }
        let next = (header.next_bucket, header.next_seq);
        if header.returned == 0 && next == cursor {
            // No progress: the driver would be asked the same forever.
            return Err(protocol_error(DecodeError::Size));
        }
        cursor = next;
    }
}

/// Reads one batch of flow events from `cursor` on (a sequence number, or
/// [`wfpmon_core::events::FROM_NOW`]). With `wait`, the request pends in the
/// driver until an event exists (the inverted call); it ends early with
/// `ERROR_OPERATION_ABORTED` when cancelled (`CancelIoEx`) or when the driver
/// stops.
pub fn read_events<D: ControlDevice>(
    device: &mut D,
    cursor: u64,
    wait: bool,
) -> Result<(EventsHeader, Vec<FlowEvent>), Error> {
    let mut out = vec![0u8; EventsHeader::SIZE + MAX_EVENTS_PER_CALL * FlowEvent::SIZE];
    let request = ReadEventsRequest::new(0, cursor, wait).to_bytes();
    let n = call(device, READ_EVENTS, &request, &mut out)?;
    let (header, events) = EventsHeader::decode(&out[..n]).map_err(protocol_error)?;
    Ok((header, events.collect()))
}

/// Attempts of a process query the driver answers `STATUS_DEVICE_BUSY`
/// (`ERROR_BUSY`: another query is running; they run one at a time), and
/// the pause between them.
pub const BUSY_ATTEMPTS: u32 = 5;
pub const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// The driver's process table: every entry, and the last page's header
/// (its `now`, capacity, evictions and unattributed flows).
#[derive(Clone, Debug, Default)]
pub struct ProcessList {
    pub header: ProcessListHeader,
    pub entries: Vec<ProcessEntry>,
}

/// Lists the driver's process table, page by page (at most
/// [`MAX_PROCESSES_PER_CALL`] entries per call, from the previous page's
/// `next_slot`). A busy answer is tried again after `pause`.
pub fn list_processes<D: ControlDevice>(
    device: &mut D,
    pause: &mut dyn FnMut(Duration),
) -> Result<ProcessList, Error> {
    let mut out = vec![0u8; ProcessListHeader::SIZE + MAX_PROCESSES_PER_CALL * ProcessEntry::SIZE];
    let mut list = ProcessList::default();
    let mut cursor = 0;
    loop {
        let request = ListProcessesRequest::new(0, cursor).to_bytes();
        let mut attempt = 1;
        let n = loop {
            match call(device, LIST_PROCESSES, &request, &mut out) {
                Err(e) if e.code() == Some(SystemCode::Win32(ERROR_BUSY)) => {
                    if attempt == BUSY_ATTEMPTS {
                        let message = format!(
                            "{} ({BUSY_ATTEMPTS} attempts, {} ms apart)",
                            e.message,
                            BUSY_PAUSE.as_millis()
                        );
                        return Err(Error { message, ..e });
                    }
                    attempt += 1;
                    pause(BUSY_PAUSE);
                }
                other => break other?,
            }
        };
        let (header, entries) = ProcessListHeader::decode(&out[..n]).map_err(protocol_error)?;
        list.entries.extend(entries);
        list.header = header;
        if header.flags & protocol::PROCESS_LIST_MORE == 0 {
            return Ok(list);
        }
        if header.next_slot <= cursor {
            // No progress: the driver would be asked the same forever.
            return Err(protocol_error(DecodeError::Size));
        }
        cursor = header.next_slot;
    }
}

#[cfg(test)]
pub mod sim {
    //! A simulated driver: validates every request with the driver's own
    //! `parse_request` and answers as the protocol specifies.

    use super::*;
    use std::collections::VecDeque;
    use wfpmon_core::protocol::{FlowListHeader, Header, Request, parse_request};

    #[derive(Debug, Default)]
    pub struct SimDriver {
        pub flows: Vec<FlowEntry>,
        pub stats: Stats,
        pub counting: Option<bool>,
        /// Flows appearing before each `LIST_FLOWS` call.
        pub growth_per_call: usize,
        pub version: Option<u32>,
        pub list_calls: usize,
        /// Every event written (`events[i].seq == i`); the ring holds the
        /// last `ring` of them (0: all).
        pub events: Vec<FlowEvent>,
        pub ring: usize,
        /// What a read that has to wait gets: events written meanwhile (one
        /// batch per waiting read). None left: the wait ends cancelled
        /// (`ERROR_OPERATION_ABORTED`), and `cancelled` counts it.
        pub arriving: VecDeque<Vec<FlowEvent>>,
        pub cancelled: usize,
        /// Cursors and wait flags of the event reads.
        pub reads: Vec<(u64, bool)>,
        /// The driver's interrupt time in its answers.
        pub now: u64,
        pub processes: Vec<ProcessEntry>,
        pub evictions: u64,
        /// `LIST_PROCESSES` calls answered `ERROR_BUSY` before the others.
        pub busy: usize,
        /// Cursor slots of the `LIST_PROCESSES` calls (busy ones included).
        pub process_calls: Vec<u32>,
    }

    /// An ended TCP flow event of process `key` (pid 100 + its slot).
    pub fn event(key: u64) -> FlowEvent {
        let mut e = FlowEvent {
            time: 50_000_000,
            kind: wfpmon_core::events::EVENT_ENDED,
            address_family: 2,
            process_id: 100 + u32::try_from(key & 0xFFFF).unwrap(),
            process_key: key,
            flow_id: 0x2000 + key,
            duration: 12_345_678,
            local_port: 50_000,
            remote_port: 443,
            ip_protocol: 6,
            bytes_inbound: 3 << 20,
            bytes_outbound: 4096,
            packets_inbound: 2300,
            packets_outbound: 9,
            ..FlowEvent::default()
        };
        e.local_address[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.remote_address[..4].copy_from_slice(&[192, 0, 2, 7]);
        e
    }

    /// Process entry of slot `slot` (key generation 1), pid 100 + slot, at
    /// `\device\harddiskvolume3\apps\app<slot>.exe`.
    pub fn process(slot: u32) -> ProcessEntry {
        let path: Vec<u16> = format!(r"\device\harddiskvolume3\apps\app{slot}.exe")
            .encode_utf16()
            .collect();
        let mut p = ProcessEntry {
            key: 1 << 32 | u64::from(slot),
            process_id: 100 + slot,
            flags: 0,
            path_units: u16::try_from(path.len()).unwrap(),
            active_flows: 1,
            reserved: 0,
            flows_total: 2,
            first_seen: 10_000_000,
            last_seen: 40_000_000,
            active: [1000, 100, 10, 5],
            ended: [u64::from(slot), 0, 1, 1],
            path: [0; wfpmon_core::process::PATH_UNITS],
        };
        p.path[..path.len()].copy_from_slice(&path);
        p
    }

    impl SimDriver {
        fn read_events(
            &mut self,
            out: &mut [u8],
            capacity: usize,
            cursor: u64,
            wait: bool,
        ) -> Result<usize, IoctlError> {
            self.reads.push((cursor, wait));
            let head = self.events.len() as u64;
            let from = cursor.min(head);
            if wait && from == head {
                let Some(batch) = self.arriving.pop_front() else {
                    self.cancelled += 1;
                    return Err(IoctlError(SystemCode::Win32(995)));
                };
                for mut e in batch {
                    e.seq = self.events.len() as u64;
                    self.events.push(e);
                }
            }
            let head = self.events.len() as u64;
            let oldest = if self.ring == 0 {
                0
            } else {
                head.saturating_sub(self.ring as u64)
            };
            let start = from.max(oldest);
            let n = capacity.min(usize::try_from(head - start).unwrap());
            let size = EventsHeader::SIZE + n * FlowEvent::SIZE;
            let header = EventsHeader {
                header: Header {
                    version: PROTOCOL_VERSION,
                    size: u32::try_from(size).unwrap(),
                },
                returned: u32::try_from(n).unwrap(),
                event_size: u32::try_from(FlowEvent::SIZE).unwrap(),
                next: start + n as u64,
                dropped: start - from,
                oldest,
                now: self.now,
            };
            let mut at = header.encode(out);
            for e in &self.events[usize::try_from(start).unwrap()..][..n] {
                at += e.encode(&mut out[at..]);
            }
            Ok(at)
        }

        fn list_processes(
            &mut self,
            out: &mut [u8],
            capacity: usize,
            cursor: u32,
        ) -> Result<usize, IoctlError> {
            self.process_calls.push(cursor);
            if self.busy > 0 {
                self.busy -= 1;
                return Err(IoctlError(SystemCode::Win32(ERROR_BUSY)));
            }
            let slot = |p: &ProcessEntry| u32::try_from(p.key & 0xFFFF_FFFF).unwrap();
            let mut from: Vec<&ProcessEntry> = self
                .processes
                .iter()
                .filter(|p| slot(p) >= cursor)
                .collect();
            from.sort_by_key(|p| slot(p));
            let more = from.len() > capacity;
            from.truncate(capacity);
            let size = ProcessListHeader::SIZE + from.len() * ProcessEntry::SIZE;
            let header = ProcessListHeader {
                header: Header {
                    version: PROTOCOL_VERSION,
                    size: u32::try_from(size).unwrap(),
                },
                returned: u32::try_from(from.len()).unwrap(),
                entry_size: u32::try_from(ProcessEntry::SIZE).unwrap(),
                flags: if more { protocol::PROCESS_LIST_MORE } else { 0 },
                next_slot: if more {
                    slot(from[capacity - 1]) + 1
                } else {
                    0
                },
                now: self.now,
                capacity: protocol::PROCESS_SLOTS,
                reserved: 0,
                evictions: self.evictions,
                unattributed_flows: 3,
            };
            let mut at = header.encode(out);
            for p in from {
                at += p.encode(&mut out[at..]);
            }
            Ok(at)
        }
    }

    pub fn flow(i: u64) -> FlowEntry {
        let mut local = [0; 16];
        local[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut remote = [0; 16];
        remote[..4].copy_from_slice(&[192, 0, 2, 7]);
        FlowEntry {
            flow_id: 0x1000 + i,
            process_id: 100 + i,
            age_ms: 1000 * i,
            bytes_inbound: 100 * i,
            bytes_outbound: 10 * i,
            packets_inbound: i,
            packets_outbound: i / 2,
            local_address: local,
            remote_address: remote,
            local_port: 50000,
            remote_port: 443,
            address_family: 2,
            ip_protocol: 6,
            direction: 0,
            process_key: 0,
        }
    }

    impl ControlDevice for SimDriver {
        fn ioctl(&mut self, code: u32, input: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
            let request = parse_request(code, input, out.len())
                .map_err(|_| IoctlError(SystemCode::Win32(87)))?;
            match request {
                Request::QueryStats { live_traffic } => {
                    let flags = if live_traffic {
                        protocol::STATS_INCLUDES_LIVE_TRAFFIC
                    } else {
                        0
                    };
                    let n = Stats {
                        flags,
                        ..self.stats
                    }
                    .encode(out);
                    if let Some(v) = self.version {
                        out[..4].copy_from_slice(&v.to_le_bytes());
                    }
                    Ok(n)
                }
                Request::SetCounting { enable } => {
                    self.counting = Some(enable);
                    Ok(0)
                }
                Request::ListFlows {
                    capacity,
                    cursor_bucket,
                    ..
                } => {
                    // Pages by index (the cursor's bucket field); flows
                    // appear at the end between calls.
                    self.list_calls += 1;
                    for _ in 0..self.growth_per_call {
                        self.flows.push(flow(self.flows.len() as u64));
                    }
                    let start = (cursor_bucket as usize).min(self.flows.len());
                    let returned = capacity.min(self.flows.len() - start);
                    let end = start + returned;
                    let more = end < self.flows.len();
                    let header = FlowListHeader {
                        header: Header {
                            version: protocol::PROTOCOL_VERSION,
                            size: u32::try_from(protocol::flow_list_size(returned).unwrap())
                                .unwrap(),
                        },
                        total_flows: u32::try_from(self.flows.len()).unwrap(),
                        returned: u32::try_from(returned).unwrap(),
                        entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
                        flags: if more { protocol::FLOW_LIST_MORE } else { 0 },
                        next_bucket: if more { u32::try_from(end).unwrap() } else { 0 },
                        next_seq: 0,
                    };
                    let mut at = header.encode(out);
                    for f in &self.flows[start..end] {
                        at += f.encode(&mut out[at..]);
                    }
                    Ok(at)
                }
                Request::ReadEvents {
                    capacity,
                    cursor,
                    wait,
                } => self.read_events(out, capacity, cursor, wait),
                Request::ListProcesses {
                    capacity,
                    cursor_slot,
                } => self.list_processes(out, capacity, cursor_slot),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::{SimDriver, flow};
    use super::*;
    use wfpmon_core::protocol::FlowListHeader;

    fn driver(n: u64) -> SimDriver {
        SimDriver {
            flows: (0..n).map(flow).collect(),
            ..SimDriver::default()
        }
    }

    #[test]
    fn small_and_empty_lists_take_one_call() {
        for n in [0, 5, 256] {
            let mut d = driver(n);
            let list = list_flows(&mut d).unwrap();
            assert_eq!(list.entries, d.flows);
            assert_eq!(u64::from(list.total), n);
            assert_eq!(d.list_calls, 1);
        }
    }

    #[test]
    fn long_lists_are_paged_in_bounded_batches() {
        let mut d = driver(256 * 3 + 7);
        let list = list_flows(&mut d).unwrap();
        assert_eq!(list.entries, d.flows);
        assert_eq!(d.list_calls, 4);
    }

    #[test]
    fn flows_appearing_between_batches_are_picked_up() {
        let mut d = driver(600);
        d.growth_per_call = 5;
        let list = list_flows(&mut d).unwrap();
        assert_eq!(list.entries, d.flows);
        assert_eq!(list.total as usize, d.flows.len());
    }

    #[test]
    fn a_driver_that_makes_no_progress_is_a_protocol_error() {
        struct Stuck;
        impl ControlDevice for Stuck {
            fn ioctl(&mut self, _: u32, _: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
                let header = FlowListHeader {
                    header: wfpmon_core::protocol::Header {
                        version: PROTOCOL_VERSION,
                        size: u32::try_from(FlowListHeader::SIZE).unwrap(),
                    },
                    total_flows: 3,
                    returned: 0,
                    entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
                    flags: protocol::FLOW_LIST_MORE,
                    next_bucket: 0,
                    next_seq: 0,
                };
                Ok(header.encode(out))
            }
        }
        assert_eq!(list_flows(&mut Stuck).unwrap_err().exit_code(), 7);
    }

    #[test]
    fn stats_counting_and_version_mismatch() {
        let mut d = SimDriver::default();
        d.stats.flows_active = 42;
        assert_eq!(query_stats(&mut d, false).unwrap().flows_active, 42);
        // The walk is asked for only with `live`, and the answer says so.
        assert_eq!(query_stats(&mut d, false).unwrap().flags, 0);
        assert_eq!(
            query_stats(&mut d, true).unwrap().flags,
            protocol::STATS_INCLUDES_LIVE_TRAFFIC
        );
        set_counting(&mut d, false).unwrap();
        assert_eq!(d.counting, Some(false));
        // A driver of the previous protocol version, and of a later one.
        for version in [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            d.version = Some(version);
            let err = query_stats(&mut d, false).unwrap_err();
            assert_eq!(err.exit_code(), 7);
            let expected = format!(
                "control-protocol version {version}, this wfpmonctl version {PROTOCOL_VERSION}"
            );
            assert!(err.message.contains(&expected), "{}", err.message);
        }
    }

    #[test]
    fn refused_requests_are_a_protocol_mismatch() {
        struct Refusing(u32);
        impl ControlDevice for Refusing {
            fn ioctl(&mut self, _: u32, _: &[u8], _: &mut [u8]) -> Result<usize, IoctlError> {
                Err(IoctlError(SystemCode::Win32(self.0)))
            }
        }
        assert_eq!(list_flows(&mut Refusing(1306)).unwrap_err().exit_code(), 7);
        assert_eq!(list_flows(&mut Refusing(170)).unwrap_err().exit_code(), 10);
        assert_eq!(
            set_counting(&mut Refusing(5), true)
                .unwrap_err()
                .exit_code(),
            3
        );
    }

    #[test]
    fn a_process_table_that_makes_no_progress_is_a_protocol_error() {
        struct Stuck(u32);
        impl ControlDevice for Stuck {
            fn ioctl(&mut self, _: u32, _: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
                let header = ProcessListHeader {
                    header: wfpmon_core::protocol::Header {
                        version: PROTOCOL_VERSION,
                        size: u32::try_from(ProcessListHeader::SIZE).unwrap(),
                    },
                    entry_size: u32::try_from(ProcessEntry::SIZE).unwrap(),
                    flags: protocol::PROCESS_LIST_MORE,
                    next_slot: self.0,
                    ..ProcessListHeader::default()
                };
                self.0 = self.0.saturating_sub(1);
                Ok(header.encode(out))
            }
        }
        let err = list_processes(&mut Stuck(2), &mut |_| ()).unwrap_err();
        assert_eq!(err.exit_code(), 7, "{err}");
    }

    #[test]
    fn event_reads_decode_batches_and_refuse_other_versions() {
        struct Old;
        impl ControlDevice for Old {
            fn ioctl(&mut self, _: u32, _: &[u8], out: &mut [u8]) -> Result<usize, IoctlError> {
                let mut h = EventsHeader {
                    event_size: 128,
                    ..EventsHeader::default()
                };
                h.header.version = PROTOCOL_VERSION - 1;
                h.header.size = 48;
                Ok(h.encode(out))
            }
        }
        let mut d = SimDriver {
            events: (0..300)
                .map(|i| {
                    let mut e = sim::event(1);
                    e.seq = i;
                    e
                })
                .collect(),
            ..SimDriver::default()
        };
        let (header, events) = read_events(&mut d, 10, false).unwrap();
        assert_eq!(
            (header.next, header.dropped, events.len(), events[0].seq),
            (266, 0, 256, 10)
        );
        let (header, events) = read_events(&mut d, 266, true).unwrap();
        assert_eq!((header.next, events.len()), (300, 34));
        let err = read_events(&mut Old, 0, false).unwrap_err();
        assert_eq!(err.exit_code(), 7);
        let expected = format!(
            "control-protocol version {}, this wfpmonctl version {PROTOCOL_VERSION}",
            PROTOCOL_VERSION - 1
        );
        assert!(err.message.contains(&expected), "{err}");
    }
}
