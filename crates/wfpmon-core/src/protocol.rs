//! The control protocol of `\Device\WfpMon`: I/O control codes and the
//! versioned, fixed-layout request and response structures.
//!
//! Defined once here and used by both the driver (which validates every
//! request with [`parse_request`]) and `wfpmonctl` (which encodes requests
//! and decodes responses). All IOCTLs are `METHOD_BUFFERED`. Multi-byte
//! fields are little-endian (the only byte order Windows runs on).
//!
//! Every request starts with a [`Header`] whose `version` must equal
//! [`PROTOCOL_VERSION`] and whose `size` must equal the input length; every
//! response starts with a [`Header`] carrying the version and the encoded
//! size of the whole response.

use crate::status;
use crate::wire::{Reader, Writer};

/// Version of the structures and codes below.
///
/// Bumped on any change of layout, codes or meaning (2: the device type moved to the vendor range; 3: the
/// flow list is paged with a resume cursor; 4: flows carry their process
/// key, flow events and per-process totals; 5: statistics cost nothing at
/// any number of flows — the traffic of live flows, which only a walk of
/// every flow can sum, is added only on request, [`STATS_LIVE_TRAFFIC`]).
pub const PROTOCOL_VERSION: u32 = 5;

/// Most flows one [`IOCTL_WFPMON_LIST_FLOWS`] returns: a bounded batch
/// (24 KiB of entries), whatever the buffer; a client pages through the rest
/// with the cursor.
pub const MAX_FLOWS_PER_CALL: usize = 256;

/// Most events one [`IOCTL_WFPMON_READ_EVENTS`] returns (32 KiB of events).
pub const MAX_EVENTS_PER_CALL: usize = 256;

/// Most processes one [`IOCTL_WFPMON_LIST_PROCESSES`] returns (39 KiB).
pub const MAX_PROCESSES_PER_CALL: usize = crate::process::MAX_QUERY;

/// Slots of the driver's process table: a process cursor is below this.
#[allow(clippy::cast_possible_truncation)] // 1024
pub const PROCESS_SLOTS: u32 = crate::process::PROCESS_CAPACITY as u32;

/// Buckets of the driver's flow registry: a cursor's `bucket` is below this.
#[allow(clippy::cast_possible_truncation)] // 32768, checked below
pub const LIST_BUCKETS: u32 = crate::flow::DEFAULT_BUCKETS as u32;
const _: () = assert!(LIST_BUCKETS as usize == crate::flow::DEFAULT_BUCKETS);

/// Device type of `\Device\WfpMon` and of its IOCTLs. "Defining I/O
/// Control Codes": types below 0x8000 are Microsoft's (`FILE_DEVICE_NETWORK`
/// is 0x12), 0x8000–0xFFFF are for vendors.
pub const FILE_DEVICE_WFPMON: u32 = 0x0000_8F4D;
const _: () = assert!(FILE_DEVICE_WFPMON >= 0x8000 && FILE_DEVICE_WFPMON <= 0xFFFF);
/// `METHOD_BUFFERED` transfer type.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_READ_ACCESS` required access.
pub const FILE_READ_ACCESS: u32 = 0x0001;
/// `FILE_WRITE_ACCESS` required access.
pub const FILE_WRITE_ACCESS: u32 = 0x0002;

/// The `CTL_CODE` macro of `devioctl.h`.
#[must_use]
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// Read global statistics. Input [`QueryStatsRequest`], output [`Stats`].
pub const IOCTL_WFPMON_QUERY_STATS: u32 =
    ctl_code(FILE_DEVICE_WFPMON, 0x900, METHOD_BUFFERED, FILE_READ_ACCESS);
/// List active flows, one bounded batch per call.
///
/// Input [`ListFlowsRequest`] (a cursor; zero to begin), output a
/// [`FlowListHeader`] (the cursor to continue with, unless the pass is
/// complete) followed by `returned` [`FlowEntry`] records.
pub const IOCTL_WFPMON_LIST_FLOWS: u32 =
    ctl_code(FILE_DEVICE_WFPMON, 0x901, METHOD_BUFFERED, FILE_READ_ACCESS);
/// Turn traffic counting on or off. Input [`SetCountingRequest`], no output.
/// Changes driver state, so it also requires write access.
pub const IOCTL_WFPMON_SET_COUNTING: u32 = ctl_code(
    FILE_DEVICE_WFPMON,
    0x902,
    METHOD_BUFFERED,
    FILE_READ_ACCESS | FILE_WRITE_ACCESS,
);

/// Read flow events.
///
/// The inverted-call model: with [`READ_EVENTS_WAIT`] and no event after the cursor, the request pends until one is written, the
/// handle is closed, the request is cancelled or the driver unloads).
///
/// Input [`ReadEventsRequest`], output an [`EventsHeader`] followed by
/// `returned` [`crate::events::FlowEvent`] records.
pub const IOCTL_WFPMON_READ_EVENTS: u32 =
    ctl_code(FILE_DEVICE_WFPMON, 0x903, METHOD_BUFFERED, FILE_READ_ACCESS);
/// Per-process totals, one bounded page per call.
///
/// Input
/// [`ListProcessesRequest`], output a [`ProcessListHeader`] followed by
/// `returned` [`ProcessEntry`] records. `STATUS_DEVICE_BUSY` while another
/// such query runs (they run one at a time; try again).
pub const IOCTL_WFPMON_LIST_PROCESSES: u32 =
    ctl_code(FILE_DEVICE_WFPMON, 0x904, METHOD_BUFFERED, FILE_READ_ACCESS);

/// [`ReadEventsRequest::flags`]: pend until an event exists.
pub const READ_EVENTS_WAIT: u32 = 1;

/// Leading fields of every request and response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Size in bytes of the whole structure (request: the input length).
    pub size: u32,
}

impl Header {
    /// Encoded size.
    pub const SIZE: usize = 8;

    const fn current(size: usize) -> Self {
        #[allow(clippy::cast_possible_truncation)] // protocol sizes are small constants
        Self {
            version: PROTOCOL_VERSION,
            size: size as u32,
        }
    }

    fn encode(self, w: &mut Writer<'_>) {
        w.u32(self.version).u32(self.size);
    }

    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            version: r.u32()?,
            size: r.u32()?,
        })
    }
}

/// Request of [`IOCTL_WFPMON_QUERY_STATS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryStatsRequest {
    /// Version and size.
    pub header: Header,
    /// 0, or [`STATS_LIVE_TRAFFIC`].
    pub flags: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// [`QueryStatsRequest::flags`]: add the traffic of the flows still alive
/// to the statistics' byte and packet totals.
///
/// Without it a statistics query costs the same at any number of flows
/// (every field is a maintained counter: the flow count per callout, the
/// lifetime counters, and the traffic of ended flows, summed into a few
/// dozen sharded counters as each flow ends). The traffic of live flows
/// lives only in each flow's own counters — the per-packet path writes
/// nothing shared — so summing it means visiting every flow: one bucket
/// (one short spin-lock hold) at a time, about 0.3 s of CPU at a million
/// flows. Ask for it when the exact total matters, not on every poll.
pub const STATS_LIVE_TRAFFIC: u32 = 1;

/// [`Stats::flags`]: the byte and packet totals include live flows (the
/// request asked for [`STATS_LIVE_TRAFFIC`]); without it they are the
/// traffic of ended flows only.
pub const STATS_INCLUDES_LIVE_TRAFFIC: u32 = 1;

/// Request of [`IOCTL_WFPMON_LIST_FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListFlowsRequest {
    /// Version and size.
    pub header: Header,
    /// Most entries to return; 0 means as many as the output buffer holds
    /// (never more than [`MAX_FLOWS_PER_CALL`]).
    pub max_entries: u32,
    /// Where to continue: the previous response's `next_bucket` (0 to begin
    /// a pass). Below [`LIST_BUCKETS`].
    pub cursor_bucket: u32,
    /// The previous response's `next_seq` (0 to begin a pass).
    pub cursor_seq: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// Request of [`IOCTL_WFPMON_READ_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadEventsRequest {
    /// Version and size.
    pub header: Header,
    /// Most events to return; 0 means as many as the output buffer holds
    /// (never more than [`MAX_EVENTS_PER_CALL`]).
    pub max_events: u32,
    /// [`READ_EVENTS_WAIT`] or 0.
    pub flags: u32,
    /// Sequence number of the next event wanted: 0 for the oldest held,
    /// [`crate::events::FROM_NOW`] for the next one written, otherwise the
    /// previous response's `next`.
    pub cursor: u64,
}

/// Request of [`IOCTL_WFPMON_LIST_PROCESSES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListProcessesRequest {
    /// Version and size.
    pub header: Header,
    /// Most processes to return; 0: as many as fit (at most
    /// [`MAX_PROCESSES_PER_CALL`]).
    pub max_entries: u32,
    /// Slot to continue from: 0 to begin, then the previous `next_slot`.
    /// Below [`PROCESS_SLOTS`].
    pub cursor_slot: u32,
}

/// Fixed part of the [`IOCTL_WFPMON_READ_EVENTS`] response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsHeader {
    /// Version and size (header plus events).
    pub header: Header,
    /// Events that follow.
    pub returned: u32,
    /// [`crate::events::FlowEvent::SIZE`].
    pub event_size: u32,
    /// The cursor for the next read.
    pub next: u64,
    /// Events lost between the request's cursor and the first returned
    /// (overwritten before they were read).
    pub dropped: u64,
    /// Oldest sequence number the ring still holds.
    pub oldest: u64,
    /// The driver's interrupt time when the response was made (100 ns
    /// units): events' times are on this clock.
    pub now: u64,
}

/// Fixed part of the [`IOCTL_WFPMON_LIST_PROCESSES`] response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessListHeader {
    /// Version and size (header plus entries).
    pub header: Header,
    /// Entries that follow.
    pub returned: u32,
    /// [`ProcessEntry::SIZE`].
    pub entry_size: u32,
    /// [`PROCESS_LIST_MORE`] when more slots follow.
    pub flags: u32,
    /// Slot to continue from.
    pub next_slot: u32,
    /// The driver's interrupt time (100 ns units).
    pub now: u64,
    /// Entries of the process table.
    pub capacity: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Entries reused for another process (eviction of ended processes).
    pub evictions: u64,
    /// Flows tracked without a process (table full of active processes).
    pub unattributed_flows: u64,
}

/// [`ProcessListHeader::flags`]: call again with `next_slot`.
pub const PROCESS_LIST_MORE: u32 = 1;

/// One process in the [`IOCTL_WFPMON_LIST_PROCESSES`] response.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Process key (`generation << 32 | slot`), as flows and events carry it.
    pub key: u64,
    /// Process id (0 with `PROCESS_ID_MISSING`).
    pub process_id: u32,
    /// `crate::process::PROCESS_*` flags.
    pub flags: u16,
    /// UTF-16 units of `path` in use.
    pub path_units: u16,
    /// Flows now active.
    pub active_flows: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Flows ever attributed to the process.
    pub flows_total: u64,
    /// Interrupt time of its first flow.
    pub first_seen: u64,
    /// Interrupt time of its latest flow start or end.
    pub last_seen: u64,
    /// Traffic of its active flows: bytes in, bytes out, packets in,
    /// packets out.
    pub active: [u64; 4],
    /// Traffic of its ended flows (same order).
    pub ended: [u64; 4],
    /// Image path, UTF-16, the engine's (device) form; its end when longer.
    pub path: [u16; crate::process::PATH_UNITS],
}

/// Request of [`IOCTL_WFPMON_SET_COUNTING`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetCountingRequest {
    /// Version and size.
    pub header: Header,
    /// 1 to count traffic, 0 to stop counting (flows are still tracked).
    pub enable: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// Response of [`IOCTL_WFPMON_QUERY_STATS`]: driver-wide statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Version and size.
    pub header: Header,
    /// 1 while traffic counting is enabled.
    pub counting_enabled: u32,
    /// [`STATS_INCLUDES_LIVE_TRAFFIC`] or 0.
    pub flags: u32,
    /// Flows currently carrying a wfpmon context.
    pub flows_active: u64,
    /// Flows a context was associated with since the driver started.
    pub flows_tracked: u64,
    /// Contexts deleted (flow ended or driver unloading).
    pub flows_deleted: u64,
    /// Flows left untracked because no memory was available.
    pub allocation_failures: u64,
    /// Flows left untracked because `FwpsFlowAssociateContext0` failed.
    pub association_failures: u64,
    /// Bytes received: by ended flows, and by live ones too when `flags`
    /// has [`STATS_INCLUDES_LIVE_TRAFFIC`].
    pub bytes_inbound: u64,
    /// Bytes sent (same scope as `bytes_inbound`).
    pub bytes_outbound: u64,
    /// Packets (datagrams or stream indications) received (same scope).
    pub packets_inbound: u64,
    /// Packets sent (same scope).
    pub packets_outbound: u64,
}

/// Fixed part of the [`IOCTL_WFPMON_LIST_FLOWS`] response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowListHeader {
    /// Version and size (size = bytes of header plus returned entries).
    pub header: Header,
    /// Active flows when the batch was taken (a maintained count).
    pub total_flows: u32,
    /// Entries that follow this header.
    pub returned: u32,
    /// Size of one [`FlowEntry`] ([`FlowEntry::SIZE`]).
    pub entry_size: u32,
    /// [`FLOW_LIST_MORE`] when the pass is not complete.
    pub flags: u32,
    /// Cursor to pass back for the next batch (bucket).
    pub next_bucket: u32,
    /// Cursor to pass back for the next batch (position in the bucket).
    pub next_seq: u32,
}

/// [`FlowListHeader::flags`]: more flows follow; call again with the cursor.
pub const FLOW_LIST_MORE: u32 = 1;

/// One active flow in the [`IOCTL_WFPMON_LIST_FLOWS`] response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// The filter engine's flow handle (`flowHandle` metadata).
    pub flow_id: u64,
    /// Process that owns the flow's endpoint.
    pub process_id: u64,
    /// Milliseconds since the flow was established.
    pub age_ms: u64,
    /// Bytes received.
    pub bytes_inbound: u64,
    /// Bytes sent.
    pub bytes_outbound: u64,
    /// Packets received.
    pub packets_inbound: u64,
    /// Packets sent.
    pub packets_outbound: u64,
    /// Local address (IPv4 in the first 4 bytes, network byte order).
    pub local_address: [u8; 16],
    /// Remote address (same encoding).
    pub remote_address: [u8; 16],
    /// Local port (host order).
    pub local_port: u16,
    /// Remote port (host order).
    pub remote_port: u16,
    /// `AF_INET` (2) or `AF_INET6` (23).
    pub address_family: u16,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub ip_protocol: u8,
    /// Direction the flow was established in: 0 outbound, 1 inbound.
    pub direction: u8,
    /// The flow's process key ([`ProcessEntry::key`]; 0: no process entry).
    pub process_key: u64,
}

// Layouts (x86-64 and every other target: only fixed-width fields).
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == Header::SIZE);
    assert!(size_of::<QueryStatsRequest>() == QueryStatsRequest::SIZE);
    assert!(offset_of!(QueryStatsRequest, flags) == 8);
    assert!(offset_of!(Stats, flags) == 12);
    assert!(size_of::<ListFlowsRequest>() == ListFlowsRequest::SIZE);
    assert!(offset_of!(ListFlowsRequest, max_entries) == 8);
    assert!(offset_of!(ListFlowsRequest, cursor_seq) == 16);
    assert!(size_of::<SetCountingRequest>() == SetCountingRequest::SIZE);
    assert!(offset_of!(SetCountingRequest, enable) == 8);
    assert!(size_of::<Stats>() == Stats::SIZE);
    assert!(offset_of!(Stats, flows_active) == 16);
    assert!(offset_of!(Stats, packets_outbound) == 80);
    assert!(size_of::<FlowListHeader>() == FlowListHeader::SIZE);
    assert!(offset_of!(FlowListHeader, next_bucket) == 24);
    assert!(offset_of!(FlowListHeader, next_seq) == 28);
    assert!(size_of::<FlowEntry>() == FlowEntry::SIZE);
    assert!(offset_of!(FlowEntry, local_address) == 56);
    assert!(offset_of!(FlowEntry, remote_address) == 72);
    assert!(offset_of!(FlowEntry, local_port) == 88);
    assert!(offset_of!(FlowEntry, address_family) == 92);
    assert!(offset_of!(FlowEntry, ip_protocol) == 94);
    assert!(offset_of!(FlowEntry, direction) == 95);
    assert!(offset_of!(FlowEntry, process_key) == 96);
    assert!(size_of::<ReadEventsRequest>() == ReadEventsRequest::SIZE);
    assert!(offset_of!(ReadEventsRequest, cursor) == 16);
    assert!(size_of::<ListProcessesRequest>() == ListProcessesRequest::SIZE);
    assert!(size_of::<EventsHeader>() == EventsHeader::SIZE);
    assert!(offset_of!(EventsHeader, now) == 40);
    assert!(size_of::<ProcessListHeader>() == ProcessListHeader::SIZE);
    assert!(offset_of!(ProcessListHeader, unattributed_flows) == 48);
    assert!(size_of::<ProcessEntry>() == ProcessEntry::SIZE);
    assert!(offset_of!(ProcessEntry, active) == 48);
    assert!(offset_of!(ProcessEntry, path) == 112);
};

impl QueryStatsRequest {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// A request of the current version: the cheap statistics (ended flows'
    /// traffic; no walk).
    #[must_use]
    pub const fn new() -> Self {
        Self::with_flags(0)
    }

    /// A request that also sums the traffic of live flows (a walk of every
    /// flow: see [`STATS_LIVE_TRAFFIC`]).
    #[must_use]
    pub const fn with_live_traffic() -> Self {
        Self::with_flags(STATS_LIVE_TRAFFIC)
    }

    const fn with_flags(flags: u32) -> Self {
        Self {
            header: Header::current(Self::SIZE),
            flags,
            reserved: 0,
        }
    }

    /// Encodes the request.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut w = Writer::new(&mut out);
        self.header.encode(&mut w);
        w.u32(self.flags).u32(self.reserved);
        out
    }
}

impl Default for QueryStatsRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl ListFlowsRequest {
    /// Encoded size.
    pub const SIZE: usize = 24;

    /// The first batch of a pass.
    #[must_use]
    pub const fn new(max_entries: u32) -> Self {
        Self::resume(max_entries, 0, 0)
    }

    /// The batch after a response whose header carried `next_bucket` and
    /// `next_seq`.
    #[must_use]
    pub const fn resume(max_entries: u32, cursor_bucket: u32, cursor_seq: u32) -> Self {
        Self {
            header: Header::current(Self::SIZE),
            max_entries,
            cursor_bucket,
            cursor_seq,
            reserved: 0,
        }
    }

    /// Encodes the request.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut w = Writer::new(&mut out);
        self.header.encode(&mut w);
        w.u32(self.max_entries)
            .u32(self.cursor_bucket)
            .u32(self.cursor_seq)
            .u32(self.reserved);
        out
    }
}

impl SetCountingRequest {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// A request of the current version.
    #[must_use]
    pub const fn new(enable: bool) -> Self {
        Self {
            header: Header::current(Self::SIZE),
            enable: enable as u32,
            reserved: 0,
        }
    }

    /// Encodes the request.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut w = Writer::new(&mut out);
        self.header.encode(&mut w);
        w.u32(self.enable).u32(self.reserved);
        out
    }
}

impl Stats {
    /// Encoded size.
    pub const SIZE: usize = 88;

    /// Encodes the response into `out`, which must hold [`Stats::SIZE`] bytes.
    /// Returns the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut w = Writer::new(out);
        Header::current(Self::SIZE).encode(&mut w);
        w.u32(self.counting_enabled).u32(self.flags);
        for v in [
            self.flows_active,
            self.flows_tracked,
            self.flows_deleted,
            self.allocation_failures,
            self.association_failures,
            self.bytes_inbound,
            self.bytes_outbound,
            self.packets_inbound,
            self.packets_outbound,
        ] {
            w.u64(v);
        }
        w.position()
    }

    /// Decodes a response, checking its version and size.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not a current-version `Stats`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let header = check_header(&mut r, bytes.len(), Self::SIZE)?;
        let counting_enabled = r.u32().ok_or(DecodeError::Truncated)?;
        let flags = r.u32().ok_or(DecodeError::Truncated)?;
        let mut next = || r.u64().ok_or(DecodeError::Truncated);
        Ok(Self {
            header,
            counting_enabled,
            flags,
            flows_active: next()?,
            flows_tracked: next()?,
            flows_deleted: next()?,
            allocation_failures: next()?,
            association_failures: next()?,
            bytes_inbound: next()?,
            bytes_outbound: next()?,
            packets_inbound: next()?,
            packets_outbound: next()?,
        })
    }
}

impl FlowListHeader {
    /// Encoded size.
    pub const SIZE: usize = 32;

    /// Encodes the header into `out[..SIZE]`.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut w = Writer::new(out);
        self.header.encode(&mut w);
        w.u32(self.total_flows)
            .u32(self.returned)
            .u32(self.entry_size)
            .u32(self.flags)
            .u32(self.next_bucket)
            .u32(self.next_seq);
        w.position()
    }

    /// Decodes a header.
    ///
    /// # Errors
    /// [`DecodeError`] on a short buffer, another version or inconsistent sizes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let header = Header::decode(&mut r).ok_or(DecodeError::Truncated)?;
        if header.version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(header.version));
        }
        let h = Self {
            header,
            total_flows: r.u32().ok_or(DecodeError::Truncated)?,
            returned: r.u32().ok_or(DecodeError::Truncated)?,
            entry_size: r.u32().ok_or(DecodeError::Truncated)?,
            flags: r.u32().ok_or(DecodeError::Truncated)?,
            next_bucket: r.u32().ok_or(DecodeError::Truncated)?,
            next_seq: r.u32().ok_or(DecodeError::Truncated)?,
        };
        if h.entry_size as usize != FlowEntry::SIZE || h.returned as usize > MAX_FLOWS_PER_CALL {
            return Err(DecodeError::Size);
        }
        let expected = flow_list_size(h.returned as usize).ok_or(DecodeError::Size)?;
        if h.header.size as usize != expected || bytes.len() < expected {
            return Err(DecodeError::Size);
        }
        Ok(h)
    }
}

impl FlowEntry {
    /// Encoded size.
    pub const SIZE: usize = 104;

    /// Encodes the entry into `out[..SIZE]`.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut w = Writer::new(out);
        w.u64(self.flow_id)
            .u64(self.process_id)
            .u64(self.age_ms)
            .u64(self.bytes_inbound)
            .u64(self.bytes_outbound)
            .u64(self.packets_inbound)
            .u64(self.packets_outbound)
            .bytes(&self.local_address)
            .bytes(&self.remote_address)
            .u16(self.local_port)
            .u16(self.remote_port)
            .u16(self.address_family)
            .u8(self.ip_protocol)
            .u8(self.direction)
            .u64(self.process_key);
        w.position()
    }

    /// Decodes one entry.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when fewer than [`FlowEntry::SIZE`] bytes remain.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let t = DecodeError::Truncated;
        Ok(Self {
            flow_id: r.u64().ok_or(t)?,
            process_id: r.u64().ok_or(t)?,
            age_ms: r.u64().ok_or(t)?,
            bytes_inbound: r.u64().ok_or(t)?,
            bytes_outbound: r.u64().ok_or(t)?,
            packets_inbound: r.u64().ok_or(t)?,
            packets_outbound: r.u64().ok_or(t)?,
            local_address: r.array().ok_or(t)?,
            remote_address: r.array().ok_or(t)?,
            local_port: r.u16().ok_or(t)?,
            remote_port: r.u16().ok_or(t)?,
            address_family: r.u16().ok_or(t)?,
            ip_protocol: r.u8().ok_or(t)?,
            direction: r.u8().ok_or(t)?,
            process_key: r.u64().ok_or(t)?,
        })
    }
}

/// Decodes a whole [`IOCTL_WFPMON_LIST_FLOWS`] response into its header and
/// an iterator over its entries.
///
/// # Errors
/// [`DecodeError`] when the header is invalid or the buffer is short.
pub fn decode_flow_list(
    bytes: &[u8],
) -> Result<(FlowListHeader, impl Iterator<Item = FlowEntry> + '_), DecodeError> {
    let header = FlowListHeader::decode(bytes)?;
    let body = &bytes[FlowListHeader::SIZE..header.header.size as usize];
    Ok((
        header,
        body.chunks_exact(FlowEntry::SIZE)
            .filter_map(|c| FlowEntry::decode(c).ok()),
    ))
}

/// Bytes of a flow-list response holding `entries` entries, or `None` when
/// that does not fit the protocol's 32-bit size field.
#[must_use]
pub fn flow_list_size(entries: usize) -> Option<usize> {
    let size = entries
        .checked_mul(FlowEntry::SIZE)?
        .checked_add(FlowListHeader::SIZE)?;
    u32::try_from(size).ok().map(|_| size)
}

fn check_header(r: &mut Reader<'_>, len: usize, size: usize) -> Result<Header, DecodeError> {
    let header = Header::decode(r).ok_or(DecodeError::Truncated)?;
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(header.version));
    }
    if header.size as usize != size || len < size {
        return Err(DecodeError::Size);
    }
    Ok(header)
}

/// Why a response could not be decoded (user-mode side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the structure does.
    Truncated,
    /// The response has another protocol version (driver and tool differ).
    Version(u32),
    /// The sizes in the response are inconsistent.
    Size,
}

/// A validated request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// [`IOCTL_WFPMON_QUERY_STATS`].
    QueryStats {
        /// Sum live flows' traffic too ([`STATS_LIVE_TRAFFIC`]).
        live_traffic: bool,
    },
    /// [`IOCTL_WFPMON_LIST_FLOWS`]: at most `capacity` entries fit the output.
    ListFlows {
        /// Entries that fit the output buffer, further limited by the
        /// request's `max_entries` and by [`MAX_FLOWS_PER_CALL`].
        capacity: usize,
        /// Where to continue (bucket below [`LIST_BUCKETS`]).
        cursor_bucket: u32,
        /// Position in that bucket (0: all of it).
        cursor_seq: u32,
    },
    /// [`IOCTL_WFPMON_SET_COUNTING`].
    SetCounting {
        /// Requested state.
        enable: bool,
    },
    /// [`IOCTL_WFPMON_READ_EVENTS`].
    ReadEvents {
        /// Events that fit the output (≥ 1), further limited by
        /// `max_events` and [`MAX_EVENTS_PER_CALL`].
        capacity: usize,
        /// Next event wanted.
        cursor: u64,
        /// Pend while there is none.
        wait: bool,
    },
    /// [`IOCTL_WFPMON_LIST_PROCESSES`].
    ListProcesses {
        /// Entries that fit the output (≥ 1), at most
        /// [`MAX_PROCESSES_PER_CALL`].
        capacity: usize,
        /// Slot to continue from (below [`PROCESS_SLOTS`]).
        cursor_slot: u32,
    },
}

/// Why a request was refused; each maps to one precise `NTSTATUS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not one of wfpmon's I/O control codes.
    UnknownCode(u32),
    /// Input length differs from the request structure's size.
    InputSize {
        /// Size of the request structure.
        expected: usize,
        /// Input length received.
        actual: usize,
    },
    /// `header.version` is not [`PROTOCOL_VERSION`].
    Version(u32),
    /// `header.size` disagrees with the input length.
    HeaderSize(u32),
    /// A field holds a value outside its domain (reserved not zero, enable not 0/1).
    InvalidField,
    /// The output buffer cannot hold the fixed part of the response.
    OutputTooSmall {
        /// Smallest output size accepted.
        required: usize,
    },
    /// A count in the request makes the response size overflow.
    CountOverflow,
}

impl RequestError {
    /// The `NTSTATUS` the driver completes the request with.
    #[must_use]
    pub const fn ntstatus(self) -> i32 {
        match self {
            Self::UnknownCode(_) => status::STATUS_INVALID_DEVICE_REQUEST,
            Self::InputSize { .. } => status::STATUS_INVALID_BUFFER_SIZE,
            Self::Version(_) => status::STATUS_REVISION_MISMATCH,
            Self::HeaderSize(_) | Self::InvalidField => status::STATUS_INVALID_PARAMETER,
            Self::OutputTooSmall { .. } => status::STATUS_BUFFER_TOO_SMALL,
            Self::CountOverflow => status::STATUS_INTEGER_OVERFLOW,
        }
    }
}

/// Validates an IOCTL: its code, its input bytes and its output length.
///
/// # Errors
/// A [`RequestError`] naming the first problem found.
pub fn parse_request(code: u32, input: &[u8], output_len: usize) -> Result<Request, RequestError> {
    let expected = match code {
        IOCTL_WFPMON_QUERY_STATS => QueryStatsRequest::SIZE,
        IOCTL_WFPMON_LIST_FLOWS => ListFlowsRequest::SIZE,
        IOCTL_WFPMON_SET_COUNTING => SetCountingRequest::SIZE,
        IOCTL_WFPMON_READ_EVENTS => ReadEventsRequest::SIZE,
        IOCTL_WFPMON_LIST_PROCESSES => ListProcessesRequest::SIZE,
        other => return Err(RequestError::UnknownCode(other)),
    };
    if input.len() != expected {
        return Err(RequestError::InputSize {
            expected,
            actual: input.len(),
        });
    }
    let mut r = Reader::new(input);
    // The length check above guarantees the header and fields are present.
    let header = Header::decode(&mut r).ok_or(RequestError::InputSize {
        expected,
        actual: 0,
    })?;
    if header.version != PROTOCOL_VERSION {
        return Err(RequestError::Version(header.version));
    }
    if header.size as usize != expected {
        return Err(RequestError::HeaderSize(header.size));
    }
    let mut field = || r.u32().ok_or(RequestError::InvalidField);
    match code {
        IOCTL_WFPMON_QUERY_STATS => {
            let flags = field()?;
            if flags & !STATS_LIVE_TRAFFIC != 0 || field()? != 0 {
                return Err(RequestError::InvalidField);
            }
            if output_len < Stats::SIZE {
                return Err(RequestError::OutputTooSmall {
                    required: Stats::SIZE,
                });
            }
            Ok(Request::QueryStats {
                live_traffic: flags & STATS_LIVE_TRAFFIC != 0,
            })
        }
        IOCTL_WFPMON_LIST_FLOWS => {
            let max_entries = field()?;
            let cursor_bucket = field()?;
            let cursor_seq = field()?;
            if field()? != 0 || cursor_bucket >= LIST_BUCKETS {
                return Err(RequestError::InvalidField);
            }
            if max_entries != 0 && flow_list_size(max_entries as usize).is_none() {
                return Err(RequestError::CountOverflow);
            }
            if output_len < FlowListHeader::SIZE {
                return Err(RequestError::OutputTooSmall {
                    required: FlowListHeader::SIZE,
                });
            }
            let fits =
                ((output_len - FlowListHeader::SIZE) / FlowEntry::SIZE).min(MAX_FLOWS_PER_CALL);
            let capacity = if max_entries == 0 {
                fits
            } else {
                fits.min(max_entries as usize)
            };
            Ok(Request::ListFlows {
                capacity,
                cursor_bucket,
                cursor_seq,
            })
        }
        IOCTL_WFPMON_READ_EVENTS => parse_read_events(&mut r, output_len),
        IOCTL_WFPMON_LIST_PROCESSES => parse_list_processes(&mut r, output_len),
        _ => {
            let enable = match field()? {
                0 => false,
                1 => true,
                _ => return Err(RequestError::InvalidField),
            };
            if field()? != 0 {
                return Err(RequestError::InvalidField);
            }
            Ok(Request::SetCounting { enable })
        }
    }
}

/// Records of `record` bytes that fit `output_len` after a `header`, limited
/// by `max` (0: no limit) and `limit`; at least one must fit.
fn batch_capacity(
    output_len: usize,
    header: usize,
    record: usize,
    max: u32,
    limit: usize,
) -> Result<usize, RequestError> {
    let required = header + record;
    if output_len < required {
        return Err(RequestError::OutputTooSmall { required });
    }
    let fits = ((output_len - header) / record).min(limit);
    Ok(if max == 0 {
        fits
    } else {
        fits.min(max as usize)
    })
}

impl ReadEventsRequest {
    /// Encoded size.
    pub const SIZE: usize = 24;

    /// A request of the current version.
    #[must_use]
    pub const fn new(max_events: u32, cursor: u64, wait: bool) -> Self {
        Self {
            header: Header::current(Self::SIZE),
            max_events,
            flags: if wait { READ_EVENTS_WAIT } else { 0 },
            cursor,
        }
    }

    /// Encodes the request.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut w = Writer::new(&mut out);
        self.header.encode(&mut w);
        w.u32(self.max_events).u32(self.flags).u64(self.cursor);
        out
    }
}

impl ListProcessesRequest {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// A request of the current version.
    #[must_use]
    pub const fn new(max_entries: u32, cursor_slot: u32) -> Self {
        Self {
            header: Header::current(Self::SIZE),
            max_entries,
            cursor_slot,
        }
    }

    /// Encodes the request.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut w = Writer::new(&mut out);
        self.header.encode(&mut w);
        w.u32(self.max_entries).u32(self.cursor_slot);
        out
    }
}

/// The shape of a batch response: a fixed part, then `returned` records.
struct Batch {
    fixed: usize,
    record_size: u32,
    returned: u32,
    limit: usize,
}

impl Batch {
    /// Checks the version, the record size (against `R`'s size, which its
    /// wire size equals: asserted for every record type), the count and the
    /// sizes; then the records.
    fn records<'a, R: 'a>(
        self,
        bytes: &'a [u8],
        header: Header,
        decode: fn(&[u8]) -> Option<R>,
    ) -> Result<impl Iterator<Item = R> + 'a, DecodeError> {
        if header.version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(header.version));
        }
        let record = self.record_size as usize;
        let expected_record = size_of::<R>();
        if record != expected_record || self.returned as usize > self.limit {
            return Err(DecodeError::Size);
        }
        let expected = self.fixed + self.returned as usize * record;
        if header.size as usize != expected || bytes.len() < expected {
            return Err(DecodeError::Size);
        }
        Ok(bytes[self.fixed..expected]
            .chunks_exact(record)
            .filter_map(decode))
    }
}

impl EventsHeader {
    /// Encoded size.
    pub const SIZE: usize = 48;

    /// Encodes the header into `out[..SIZE]`.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut w = Writer::new(out);
        self.header.encode(&mut w);
        w.u32(self.returned)
            .u32(self.event_size)
            .u64(self.next)
            .u64(self.dropped)
            .u64(self.oldest)
            .u64(self.now);
        w.position()
    }

    /// Decodes a whole response: the header and its events.
    ///
    /// # Errors
    /// [`DecodeError`] on a short buffer, another version or bad sizes.
    pub fn decode(
        bytes: &[u8],
    ) -> Result<(Self, impl Iterator<Item = crate::events::FlowEvent> + '_), DecodeError> {
        let mut r = Reader::new(bytes);
        let t = DecodeError::Truncated;
        let header = Header::decode(&mut r).ok_or(t)?;
        let h = Self {
            header,
            returned: r.u32().ok_or(t)?,
            event_size: r.u32().ok_or(t)?,
            next: r.u64().ok_or(t)?,
            dropped: r.u64().ok_or(t)?,
            oldest: r.u64().ok_or(t)?,
            now: r.u64().ok_or(t)?,
        };
        let batch = Batch {
            fixed: Self::SIZE,
            record_size: h.event_size,
            returned: h.returned,
            limit: MAX_EVENTS_PER_CALL,
        };
        Ok((
            h,
            batch.records(bytes, header, crate::events::FlowEvent::decode)?,
        ))
    }
}

impl ProcessListHeader {
    /// Encoded size.
    pub const SIZE: usize = 56;

    /// Encodes the header into `out[..SIZE]`.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut w = Writer::new(out);
        self.header.encode(&mut w);
        w.u32(self.returned)
            .u32(self.entry_size)
            .u32(self.flags)
            .u32(self.next_slot)
            .u64(self.now)
            .u32(self.capacity)
            .u32(self.reserved)
            .u64(self.evictions)
            .u64(self.unattributed_flows);
        w.position()
    }

    /// Decodes a whole response: the header and its entries.
    ///
    /// # Errors
    /// [`DecodeError`] on a short buffer, another version or bad sizes.
    pub fn decode(
        bytes: &[u8],
    ) -> Result<(Self, impl Iterator<Item = ProcessEntry> + '_), DecodeError> {
        let mut r = Reader::new(bytes);
        let t = DecodeError::Truncated;
        let header = Header::decode(&mut r).ok_or(t)?;
        let h = Self {
            header,
            returned: r.u32().ok_or(t)?,
            entry_size: r.u32().ok_or(t)?,
            flags: r.u32().ok_or(t)?,
            next_slot: r.u32().ok_or(t)?,
            now: r.u64().ok_or(t)?,
            capacity: r.u32().ok_or(t)?,
            reserved: r.u32().ok_or(t)?,
            evictions: r.u64().ok_or(t)?,
            unattributed_flows: r.u64().ok_or(t)?,
        };
        let batch = Batch {
            fixed: Self::SIZE,
            record_size: h.entry_size,
            returned: h.returned,
            limit: MAX_PROCESSES_PER_CALL,
        };
        Ok((h, batch.records(bytes, header, ProcessEntry::decode)?))
    }
}

impl ProcessEntry {
    /// Encoded size.
    pub const SIZE: usize = 624;

    /// The entry of a process-table snapshot.
    #[must_use]
    pub fn of(p: &crate::process::ProcessSnapshot) -> Self {
        let four = |t: crate::flow::Traffic| {
            [
                t.bytes_inbound,
                t.bytes_outbound,
                t.packets_inbound,
                t.packets_outbound,
            ]
        };
        Self {
            key: p.key,
            process_id: p.process_id,
            flags: p.flags,
            path_units: p.path_units,
            active_flows: p.active_flows,
            reserved: 0,
            flows_total: p.flows_total,
            first_seen: p.first_seen,
            last_seen: p.last_seen,
            active: four(p.active),
            ended: four(p.ended),
            path: p.path,
        }
    }

    /// Encodes the entry into `out[..SIZE]`.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut w = Writer::new(out);
        w.u64(self.key)
            .u32(self.process_id)
            .u16(self.flags)
            .u16(self.path_units)
            .u32(self.active_flows)
            .u32(self.reserved)
            .u64(self.flows_total)
            .u64(self.first_seen)
            .u64(self.last_seen);
        for v in self.active.iter().chain(&self.ended) {
            w.u64(*v);
        }
        for u in &self.path {
            w.u16(*u);
        }
        w.position()
    }

    /// Decodes one entry.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        let mut e = Self {
            key: r.u64()?,
            process_id: r.u32()?,
            flags: r.u16()?,
            path_units: r.u16()?,
            active_flows: r.u32()?,
            reserved: r.u32()?,
            flows_total: r.u64()?,
            first_seen: r.u64()?,
            last_seen: r.u64()?,
            active: [0; 4],
            ended: [0; 4],
            path: [0; crate::process::PATH_UNITS],
        };
        for v in e.active.iter_mut().chain(e.ended.iter_mut()) {
            *v = r.u64()?;
        }
        for u in &mut e.path {
            *u = r.u16()?;
        }
        Some(e)
    }

    /// The path's UTF-16 units in use.
    #[must_use]
    pub fn path(&self) -> &[u16] {
        &self.path[..usize::from(self.path_units).min(self.path.len())]
    }
}

fn parse_read_events(r: &mut Reader<'_>, output_len: usize) -> Result<Request, RequestError> {
    let max_events = r.u32().ok_or(RequestError::InvalidField)?;
    let flags = r.u32().ok_or(RequestError::InvalidField)?;
    let cursor = r.u64().ok_or(RequestError::InvalidField)?;
    if flags & !READ_EVENTS_WAIT != 0 {
        return Err(RequestError::InvalidField);
    }
    let capacity = batch_capacity(
        output_len,
        EventsHeader::SIZE,
        crate::events::FlowEvent::SIZE,
        max_events,
        MAX_EVENTS_PER_CALL,
    )?;
    Ok(Request::ReadEvents {
        capacity,
        cursor,
        wait: flags & READ_EVENTS_WAIT != 0,
    })
}

fn parse_list_processes(r: &mut Reader<'_>, output_len: usize) -> Result<Request, RequestError> {
    let max_entries = r.u32().ok_or(RequestError::InvalidField)?;
    let cursor_slot = r.u32().ok_or(RequestError::InvalidField)?;
    if cursor_slot >= PROCESS_SLOTS {
        return Err(RequestError::InvalidField);
    }
    let capacity = batch_capacity(
        output_len,
        ProcessListHeader::SIZE,
        ProcessEntry::SIZE,
        max_entries,
        MAX_PROCESSES_PER_CALL,
    )?;
    Ok(Request::ListProcesses {
        capacity,
        cursor_slot,
    })
}
