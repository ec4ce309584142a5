//! Flow events — "established" and "ended" — in a bounded ring that user
//! mode reads with a cursor.
//!
//! The [`EventRing`] is a fixed array of [`EVENT_CAPACITY`] records of 128
//! bytes (the driver's: 16384 × 128 bytes = 2 MiB of non-paged `.bss`),
//! written at flow establishment and at flow deletion (IRQL ≤
//! `DISPATCH_LEVEL`) under one lock held for one 128-byte copy: no
//! allocation on the event path. Every event gets the next sequence number;
//! when the ring is full the oldest event is overwritten.
//!
//! Readers keep their own cursor (the sequence number of the next event
//! they want), so any number of readers each see every event — and the
//! driver keeps no per-reader state. A reader that falls more than
//! [`EVENT_CAPACITY`] events behind is told exactly how many it lost
//! ([`ReadOutcome::dropped`]) and continues with the oldest event still
//! held. A read copies at most a bounded batch under the lock.
//!
//! Why 16384: at 128 bytes an event, 2 MiB of non-paged memory; a reader
//! whose request is pending is completed at the next event, so only a
//! reader that stops reading for a while loses events — at 1000 new flows
//! a second (2000 events) it has 8 seconds.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::flow::{FlowRecord, Lock, Traffic};

/// Events the driver's ring holds.
pub const EVENT_CAPACITY: usize = 16384;

/// [`FlowEvent::kind`]: a flow was established (and is now tracked).
pub const EVENT_ESTABLISHED: u8 = 1;
/// A tracked flow ended; the counters are final.
pub const EVENT_ENDED: u8 = 2;

/// [`FlowEvent::flags`]: the context was removed because the driver is
/// unloading; the flow itself may go on.
pub const EVENT_FLAG_UNLOADING: u8 = 1;
/// The flow has no process entry (see `process::ProcessTable::unattributed`).
pub const EVENT_FLAG_NO_PROCESS: u8 = 2;
/// The engine refused the flow context (`FwpsFlowAssociateContext0`
/// failed) right after the "established" event: the flow is not tracked.
pub const EVENT_FLAG_NOT_TRACKED: u8 = 4;

/// A cursor meaning "from the next event written" (`--follow` from now).
pub const FROM_NOW: u64 = u64::MAX;

/// One flow event: the ring's record and, encoded field by field, the wire
/// record of `IOCTL_WFPMON_READ_EVENTS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowEvent {
    /// Sequence number (0, 1, ...): gaps between a reader's events are
    /// reported as dropped.
    pub seq: u64,
    /// Interrupt time (100 ns units since boot) of the event.
    pub time: u64,
    /// [`EVENT_ESTABLISHED`] or [`EVENT_ENDED`].
    pub kind: u8,
    /// `EVENT_FLAG_*`.
    pub flags: u8,
    /// `AF_INET` (2) or `AF_INET6` (23).
    pub address_family: u16,
    /// Process id (0: not supplied).
    pub process_id: u32,
    /// The process's key (`generation << 32 | slot`; 0: none).
    pub process_key: u64,
    /// The engine's flow handle.
    pub flow_id: u64,
    /// Ended: time from establishment to end (100 ns units); 0 otherwise.
    pub duration: u64,
    /// Local address (IPv4 in the first 4 bytes, network byte order).
    pub local_address: [u8; 16],
    /// Remote address.
    pub remote_address: [u8; 16],
    /// Local port.
    pub local_port: u16,
    /// Remote port.
    pub remote_port: u16,
    /// IP protocol number.
    pub ip_protocol: u8,
    /// 0 outbound, 1 inbound (the direction of establishment).
    pub direction: u8,
    /// Zero.
    pub reserved: u16,
    /// Bytes received (ended: final).
    pub bytes_inbound: u64,
    /// Bytes sent.
    pub bytes_outbound: u64,
    /// Packets received.
    pub packets_inbound: u64,
    /// Packets sent.
    pub packets_outbound: u64,
    /// Interrupt time of the flow's establishment.
    pub established: u64,
}

const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<FlowEvent>() == FlowEvent::SIZE);
    assert!(offset_of!(FlowEvent, process_key) == 24);
    assert!(offset_of!(FlowEvent, local_address) == 48);
    assert!(offset_of!(FlowEvent, local_port) == 80);
    assert!(offset_of!(FlowEvent, bytes_inbound) == 88);
    assert!(offset_of!(FlowEvent, established) == 120);
};

impl FlowEvent {
    /// Size of a record, in the ring and on the wire.
    pub const SIZE: usize = 128;

    const EMPTY: Self = Self {
        seq: 0,
        time: 0,
        kind: 0,
        flags: 0,
        address_family: 0,
        process_id: 0,
        process_key: 0,
        flow_id: 0,
        duration: 0,
        local_address: [0; 16],
        remote_address: [0; 16],
        local_port: 0,
        remote_port: 0,
        ip_protocol: 0,
        direction: 0,
        reserved: 0,
        bytes_inbound: 0,
        bytes_outbound: 0,
        packets_inbound: 0,
        packets_outbound: 0,
        established: 0,
    };

    /// The event of `record` (`kind`, at `now`), with its counters now
    /// (final, for an ended flow) and its process key.
    #[must_use]
    pub fn of(record: &FlowRecord, kind: u8, flags: u8, process_key: u64, now: u64) -> Self {
        let t: Traffic = record.traffic();
        let t_ = &record.tuple;
        Self {
            seq: 0,
            time: now,
            kind,
            flags: flags
                | if process_key == 0 {
                    EVENT_FLAG_NO_PROCESS
                } else {
                    0
                },
            address_family: t_.family.to_af(),
            process_id: record.process_id,
            process_key,
            flow_id: record.association.flow_id,
            duration: if kind == EVENT_ENDED {
                now.saturating_sub(record.established_at)
            } else {
                0
            },
            local_address: t_.local_address,
            remote_address: t_.remote_address,
            local_port: t_.local_port,
            remote_port: t_.remote_port,
            ip_protocol: t_.ip_protocol,
            direction: t_.direction as u8,
            reserved: 0,
            bytes_inbound: t.bytes_inbound,
            bytes_outbound: t.bytes_outbound,
            packets_inbound: t.packets_inbound,
            packets_outbound: t.packets_outbound,
            established: record.established_at,
        }
    }

    /// Encodes the record into `out[..SIZE]` (little-endian, field by field).
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut w = crate::wire::Writer::new(out);
        w.u64(self.seq)
            .u64(self.time)
            .u8(self.kind)
            .u8(self.flags)
            .u16(self.address_family)
            .u32(self.process_id)
            .u64(self.process_key)
            .u64(self.flow_id)
            .u64(self.duration)
            .bytes(&self.local_address)
            .bytes(&self.remote_address)
            .u16(self.local_port)
            .u16(self.remote_port)
            .u8(self.ip_protocol)
            .u8(self.direction)
            .u16(self.reserved)
            .u64(self.bytes_inbound)
            .u64(self.bytes_outbound)
            .u64(self.packets_inbound)
            .u64(self.packets_outbound)
            .u64(self.established);
        w.position()
    }

    /// Decodes one record.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = crate::wire::Reader::new(bytes);
        Some(Self {
            seq: r.u64()?,
            time: r.u64()?,
            kind: r.u8()?,
            flags: r.u8()?,
            address_family: r.u16()?,
            process_id: r.u32()?,
            process_key: r.u64()?,
            flow_id: r.u64()?,
            duration: r.u64()?,
            local_address: r.array()?,
            remote_address: r.array()?,
            local_port: r.u16()?,
            remote_port: r.u16()?,
            ip_protocol: r.u8()?,
            direction: r.u8()?,
            reserved: r.u16()?,
            bytes_inbound: r.u64()?,
            bytes_outbound: r.u64()?,
            packets_inbound: r.u64()?,
            packets_outbound: r.u64()?,
            established: r.u64()?,
        })
    }
}

/// What one [`EventRing::read`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Events handed to the sink.
    pub returned: usize,
    /// The cursor to read on from.
    pub next: u64,
    /// Events between the caller's cursor and the first one returned that
    /// the ring no longer held (overwritten).
    pub dropped: u64,
    /// Sequence number of the oldest event still held.
    pub oldest: u64,
}

/// The ring. `CAP` is a power of two.
pub struct EventRing<L, const CAP: usize = EVENT_CAPACITY> {
    lock: L,
    events: UnsafeCell<[FlowEvent; CAP]>,
    /// Events written so far: the sequence number of the next one.
    head: AtomicU64,
}

// SAFETY: `events` is touched only inside `lock.with` (mutually exclusive
// by `Lock`'s contract); `head` is atomic.
unsafe impl<L: Lock + Sync, const CAP: usize> Sync for EventRing<L, CAP> {}

impl<L: crate::flow::ConstLock, const CAP: usize> EventRing<L, CAP> {
    /// An empty ring, usable in a `static` (all zeros: `.bss`).
    #[must_use]
    pub const fn new() -> Self {
        Self::with_lock(L::RELEASED)
    }
}

impl<L: crate::flow::ConstLock, const CAP: usize> Default for EventRing<L, CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Lock, const CAP: usize> EventRing<L, CAP> {
    /// An empty ring guarded by `lock`.
    pub const fn with_lock(lock: L) -> Self {
        const { assert!(CAP.is_power_of_two()) };
        Self {
            lock,
            events: UnsafeCell::new([FlowEvent::EMPTY; CAP]),
            head: AtomicU64::new(0),
        }
    }

    /// The sequence number the next event will get (= events written).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::SeqCst)
    }

    /// Appends `event` (its `seq` is assigned here) and returns its
    /// sequence number. One lock hold for one 128-byte copy.
    pub fn push(&self, mut event: FlowEvent) -> u64 {
        self.lock.with(|| {
            let seq = self.head.load(Ordering::Relaxed);
            event.seq = seq;
            // SAFETY: exclusive under the lock.
            let events = unsafe { &mut *self.events.get() };
            #[allow(clippy::cast_possible_truncation)] // masked below CAP
            let index = seq as usize & (CAP - 1);
            events[index] = event;
            self.head.store(seq + 1, Ordering::SeqCst);
            seq
        })
    }

    /// Hands up to `max` events from cursor `from` on to `sink`, oldest
    /// first, under the lock (so `sink` must not block or allocate; `max`
    /// bounds the hold). [`FROM_NOW`], or a cursor beyond the last event,
    /// reads from the next event written.
    pub fn read(&self, from: u64, max: usize, mut sink: impl FnMut(&FlowEvent)) -> ReadOutcome {
        self.lock.with(|| {
            let head = self.head.load(Ordering::Relaxed);
            let from = from.min(head);
            let oldest = head.saturating_sub(CAP as u64);
            let start = from.max(oldest);
            let available = head - start;
            #[allow(clippy::cast_possible_truncation)] // min with a usize
            let n = available.min(max as u64) as usize;
            // SAFETY: exclusive under the lock.
            let events = unsafe { &*self.events.get() };
            for seq in start..start + n as u64 {
                #[allow(clippy::cast_possible_truncation)] // masked below CAP
                sink(&events[seq as usize & (CAP - 1)]);
            }
            ReadOutcome {
                returned: n,
                next: start + n as u64,
                dropped: start - from,
                oldest,
            }
        })
    }
}
