//! Flow identity, per-flow traffic counters, and the registry of flows that
//! carry a wfpmon context — built for a kernel at scale.
//!
//! A [`FlowRecord`] is the flow context the driver associates with a flow
//! (`FwpsFlowAssociateContext0`): 128 bytes, laid out so that the counters of
//! the two directions lie 64 bytes apart, in different cache lines (a flow's
//! packets are often sent on one processor and received on another). The
//! per-packet path touches only those atomic counters.
//!
//! The [`FlowRegistry`] hashes flows (by flow handle) into buckets, each
//! guarded by its own lock (the driver: an in-stack queued spin lock), so
//! flow set-up, flow deletion, the unload's removal pass, listing and
//! statistics contend only within one bucket, and no operation holds a lock
//! for more than one bucket; the ended flows' traffic is also kept in a few
//! sharded counters, so that the common statistics need no walk at all. Within a bucket each data callout has a list of
//! its own, so unload's removal pass for one callout reads only that
//! callout's records (not every record once per callout). Totals that would
//! otherwise need a walk are maintained: per-callout flow counts (each on
//! its own cache line) and, per bucket, the traffic of the flows that ended
//! there.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::catalog::{AddressFamily, CalloutIndex};

/// Direction of traffic, numbered like `FWP_DIRECTION` (fwptypes.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// `FWP_DIRECTION_OUTBOUND`.
    Outbound = 0,
    /// `FWP_DIRECTION_INBOUND`.
    Inbound = 1,
}

impl Direction {
    /// Maps an `FWP_DIRECTION` value; anything else is `None`.
    #[must_use]
    pub const fn from_fwp(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Outbound),
            1 => Some(Self::Inbound),
            _ => None,
        }
    }
}

/// The 5-tuple and family of a flow, as seen at flow establishment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct FlowTuple {
    /// Address family.
    pub family: AddressFamily,
    /// IP protocol number.
    pub ip_protocol: u8,
    /// Local address, network byte order (IPv4 in the first 4 bytes).
    pub local_address: [u8; 16],
    /// Local port.
    pub local_port: u16,
    /// Remote address, network byte order.
    pub remote_address: [u8; 16],
    /// Remote port.
    pub remote_port: u16,
    /// Direction the connection was established in.
    pub direction: Direction,
}

impl FlowTuple {
    /// An IPv4 address as the filter engine gives it (`FWP_UINT32`, host
    /// order) in this type's network-order encoding.
    #[must_use]
    pub const fn ipv4_address(host_order: u32) -> [u8; 16] {
        let b = host_order.to_be_bytes();
        [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }
}

/// A copy of traffic counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes received.
    pub bytes_inbound: u64,
    /// Bytes sent.
    pub bytes_outbound: u64,
    /// Packets received.
    pub packets_inbound: u64,
    /// Packets sent.
    pub packets_outbound: u64,
}

impl Traffic {
    /// Field-wise wrapping sum.
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            bytes_inbound: self.bytes_inbound.wrapping_add(other.bytes_inbound),
            bytes_outbound: self.bytes_outbound.wrapping_add(other.bytes_outbound),
            packets_inbound: self.packets_inbound.wrapping_add(other.packets_inbound),
            packets_outbound: self.packets_outbound.wrapping_add(other.packets_outbound),
        }
    }
}

/// Lock-free counters of one direction: safe to update from classify on any
/// number of processors at `DISPATCH_LEVEL` (relaxed atomic adds, no
/// allocation, no call).
#[derive(Debug, Default)]
#[repr(C)]
pub struct DirectionCounters {
    bytes: AtomicU64,
    packets: AtomicU64,
}

impl DirectionCounters {
    /// Zero.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
        }
    }

    /// Adds `bytes` and `packets`.
    pub fn add(&self, bytes: u64, packets: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.packets.fetch_add(packets, Ordering::Relaxed);
    }

    /// (bytes, packets) now.
    #[must_use]
    pub fn get(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.packets.load(Ordering::Relaxed),
        )
    }
}

/// Where a flow's context is associated: what `FwpsFlowRemoveContext0` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Association {
    /// The engine's flow handle (`flowHandle` metadata).
    pub flow_id: u64,
    /// Catalog index of the data callout holding the context.
    pub callout: CalloutIndex,
}

/// List links and bucket bookkeeping; touched only under the bucket's lock.
#[derive(Debug)]
#[repr(C)]
struct Links {
    prev: *mut FlowRecord,
    next: *mut FlowRecord,
    /// Order of insertion within the bucket (1, 2, ...; 0: not linked).
    /// Each of a bucket's lists is in decreasing `seq` order.
    seq: u32,
    /// Last removal pass that handed this record out (0: none).
    removal_pass: u32,
}

/// The flow context wfpmon associates with a flow.
///
/// Layout (`repr(C)`, 128 bytes, asserted below): the inbound counters and
/// the flow's identity fill the first 64 bytes, the outbound counters and
/// the registry's bookkeeping the second 64. The two directions' counters
/// are 64 bytes apart, hence always in different cache lines (pool blocks
/// are 16-byte aligned, so neither 16-byte counter pair straddles a line):
/// a processor sending on the flow and one receiving on it never write the
/// same line.
#[derive(Debug)]
#[repr(C)]
pub struct FlowRecord {
    inbound: DirectionCounters,
    /// The flow's identity.
    pub tuple: FlowTuple,
    /// Process that owns the local endpoint (0: not supplied; Windows
    /// process ids fit 32 bits).
    pub process_id: u32,
    /// Slot of the flow's process in the process table
    /// ([`crate::process::NO_PROCESS`]: none).
    pub process_slot: u32,
    outbound: DirectionCounters,
    /// Where the context is associated.
    pub association: Association,
    /// Interrupt time (100 ns units) at flow establishment.
    pub established_at: u64,
    links: UnsafeCell<Links>,
}

const _: () = {
    assert!(size_of::<FlowTuple>() == 40);
    assert!(size_of::<FlowRecord>() == 128, "bytes per tracked flow");
    assert!(core::mem::offset_of!(FlowRecord, inbound) == 0);
    assert!(
        core::mem::offset_of!(FlowRecord, outbound) == 64,
        "a cache line apart"
    );
};

impl FlowRecord {
    /// A new, unlinked record with zero counters; `process` is the process
    /// id and the process-table slot.
    #[must_use]
    pub const fn new(
        association: Association,
        tuple: FlowTuple,
        process: (u32, u32),
        established_at: u64,
    ) -> Self {
        Self {
            inbound: DirectionCounters::new(),
            tuple,
            process_id: process.0,
            process_slot: process.1,
            outbound: DirectionCounters::new(),
            association,
            established_at,
            links: UnsafeCell::new(Links {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                seq: 0,
                removal_pass: 0,
            }),
        }
    }

    /// Counts `bytes` and `packets` in `direction`: two relaxed atomic adds
    /// on that direction's cache line.
    pub fn count(&self, direction: Direction, bytes: u64, packets: u64) {
        match direction {
            Direction::Inbound => self.inbound.add(bytes, packets),
            Direction::Outbound => self.outbound.add(bytes, packets),
        }
    }

    /// The counters now.
    #[must_use]
    pub fn traffic(&self) -> Traffic {
        let (bytes_inbound, packets_inbound) = self.inbound.get();
        let (bytes_outbound, packets_outbound) = self.outbound.get();
        Traffic {
            bytes_inbound,
            bytes_outbound,
            packets_inbound,
            packets_outbound,
        }
    }
}

/// A mutual-exclusion primitive for the registry's critical sections.
///
/// The driver implements it with a kernel spin lock (so critical sections
/// run at `DISPATCH_LEVEL` and must not block or allocate).
///
/// # Safety
/// `with` must run `f` under mutual exclusion with every other `with` call
/// on the same value, and must publish `f`'s writes to the next holder.
pub unsafe trait Lock {
    /// Runs `f` while holding the lock.
    fn with<R>(&self, f: impl FnOnce() -> R) -> R;
}

/// A [`Lock`] with a released value usable in constant expressions (for a
/// registry in a `static`).
pub trait ConstLock: Lock {
    /// A released lock.
    const RELEASED: Self;
}

/// The links of a record.
///
/// # Safety
/// `rec` must be valid, and the caller must hold its bucket's lock (links
/// are only ever touched under it), for as long as the reference is used.
unsafe fn links_of<'a>(rec: *mut FlowRecord) -> &'a mut Links {
    // SAFETY: `rec` is valid (contract).
    let cell = unsafe { &(*rec).links };
    // SAFETY: exclusive under the bucket lock (contract).
    unsafe { &mut *cell.get() }
}

/// One bucket's state, touched only under its lock.
struct BucketState {
    /// The next record to visit in the removal walk `cursor_key` names.
    cursor: *mut FlowRecord,
    /// Traffic of the flows that ended in this bucket.
    retired: Traffic,
}

/// A bucket: its lock, one list per data callout, and its bookkeeping; two
/// cache lines (with the driver's 8-byte spin lock; asserted below), 128-byte
/// aligned, so that a bucket is one adjacent-line pair: the lock, the `seq`
/// and the list heads — all an insert writes — share the first line.
#[repr(C, align(128))]
struct Bucket<L> {
    lock: L,
    /// The `seq` the next record gets (1 ..= `u32::MAX` - 1; 0 before the
    /// first, so that a registry in a `static` is all zeros and takes no
    /// room in the image). Changed only under the lock, read without it: 0
    /// means "never used", so listing and statistics skip such buckets
    /// without locking them, and `stop` need not pass through them.
    next_seq: AtomicU32,
    /// Which removal walk `state.cursor` belongs to: `pass * 8 + callout`
    /// (0: none). Under the lock.
    cursor_key: UnsafeCell<u32>,
    /// Per data callout, the newest record of its list (decreasing `seq`).
    /// Written only under the lock; read without it only as a cache hint
    /// ([`FlowRegistry::prefetch_insert`], and the removal walk's look at
    /// the next buckets), never dereferenced there.
    heads: [AtomicPtr<FlowRecord>; DATA_CALLOUTS],
    state: UnsafeCell<BucketState>,
}

// With an 8-byte lock (the driver's KSPIN_LOCK) a bucket is two cache lines,
// and everything an insert touches is in the first.
const _: () = {
    assert!(size_of::<Bucket<u64>>() == 128);
    assert!(
        core::mem::offset_of!(Bucket<u64>, heads)
            + size_of::<[AtomicPtr<FlowRecord>; DATA_CALLOUTS]>()
            <= 64
    );
};

impl<L> Bucket<L> {
    const fn new(lock: L) -> Self {
        Self {
            lock,
            next_seq: AtomicU32::new(0),
            cursor_key: UnsafeCell::new(0),
            heads: [const { AtomicPtr::new(ptr::null_mut()) }; DATA_CALLOUTS],
            state: UnsafeCell::new(BucketState {
                cursor: ptr::null_mut(),
                retired: Traffic {
                    bytes_inbound: 0,
                    bytes_outbound: 0,
                    packets_inbound: 0,
                    packets_outbound: 0,
                },
            }),
        }
    }
}

impl<L: Lock> Bucket<L> {
    /// Whether a record was ever linked here (read without the lock).
    fn used(&self) -> bool {
        self.next_seq.load(Ordering::SeqCst) != 0
    }

    fn locked<R>(&self, f: impl FnOnce(&mut BucketState, &mut u32) -> R) -> R {
        self.lock.with(|| {
            // SAFETY: `Lock::with` gives exclusive access for the closure's
            // duration; no other reference to the state or the cursor key
            // exists meanwhile.
            let state = unsafe { &mut *self.state.get() };
            // SAFETY: as above.
            let cursor_key = unsafe { &mut *self.cursor_key.get() };
            f(state, cursor_key)
        })
    }

    /// The head of `callout`'s list. `_locked` is the witness that the
    /// caller holds the lock: a reference to the bucket's state exists only
    /// inside [`Bucket::locked`] (the lock orders the list's writes; relaxed
    /// suffices).
    fn head(&self, _locked: &BucketState, callout: CalloutIndex) -> *mut FlowRecord {
        self.heads[callout].load(Ordering::Relaxed)
    }

    /// Sets the head of `callout`'s list (under the lock: `_locked`, as for
    /// [`Bucket::head`]).
    fn set_head(&self, _locked: &BucketState, callout: CalloutIndex, rec: *mut FlowRecord) {
        self.heads[callout].store(rec, Ordering::Relaxed);
    }

    /// Runs `f` on every record of every list (under the lock: `locked`, as
    /// for [`Bucket::head`]).
    fn each_record(&self, locked: &BucketState, mut f: impl FnMut(&FlowRecord)) {
        for callout in 0..DATA_CALLOUTS {
            let mut rec = self.head(locked, callout);
            while !rec.is_null() {
                // SAFETY: linked records are valid, and the caller holds the
                // lock (it has the state, which only `locked` hands out).
                f(unsafe { &*rec });
                // SAFETY: as above.
                rec = unsafe { links_of(rec) }.next;
            }
        }
    }
}

/// Asks the processor to bring the cache line at `addr` in; no effect on
/// the program's behaviour (a prefetch neither faults nor reads into a
/// value, so any address will do).
#[inline]
fn prefetch(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: PREFETCHT0 (SSE, part of x86_64's baseline) only hints the
        // cache: it never faults, whatever the address, and reads nothing
        // into the program.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// [`prefetch`] of the line holding a record's back link (`links.prev`,
/// 8-byte aligned, so within one line: what linking a record in front of
/// it writes). Nothing for a null `rec`; the address is computed without
/// dereferencing it.
#[inline]
fn prefetch_back_link(rec: *const FlowRecord) {
    if !rec.is_null() {
        let links = core::mem::offset_of!(FlowRecord, links) + core::mem::offset_of!(Links, prev);
        prefetch(rec.wrapping_byte_add(links).cast());
    }
}

/// [`prefetch`] of every line a record spans: pool blocks are only 16-byte
/// aligned, so its 128 bytes may touch three lines (its first byte, +64
/// and its last byte cover them all). Nothing for a null `rec`.
#[inline]
fn prefetch_record(rec: *const FlowRecord) {
    if !rec.is_null() {
        for offset in [0, 64, size_of::<FlowRecord>() - 1] {
            prefetch(rec.wrapping_byte_add(offset).cast());
        }
    }
}

/// A counter alone on its cache line.
#[repr(align(64))]
struct PaddedCount(AtomicUsize);

/// Shards of the ended flows' traffic.
///
/// A flow adds its final counters to the shard of its bucket (bucket index
/// modulo this) as it is removed. A statistics query reads every shard — 64 cache lines, whatever the number
/// of flows — and flow deletions on different processors rarely write the
/// same line (per flow, never per packet).
pub const RETIRED_SHARDS: usize = 64;

/// One shard of the ended flows' traffic, alone on its cache line.
#[repr(C, align(64))]
struct RetiredShard {
    bytes_inbound: AtomicU64,
    bytes_outbound: AtomicU64,
    packets_inbound: AtomicU64,
    packets_outbound: AtomicU64,
}

const _: () = assert!(size_of::<RetiredShard>() == 64);

impl RetiredShard {
    const fn new() -> Self {
        Self {
            bytes_inbound: AtomicU64::new(0),
            bytes_outbound: AtomicU64::new(0),
            packets_inbound: AtomicU64::new(0),
            packets_outbound: AtomicU64::new(0),
        }
    }

    fn add(&self, t: Traffic) {
        self.bytes_inbound
            .fetch_add(t.bytes_inbound, Ordering::Relaxed);
        self.bytes_outbound
            .fetch_add(t.bytes_outbound, Ordering::Relaxed);
        self.packets_inbound
            .fetch_add(t.packets_inbound, Ordering::Relaxed);
        self.packets_outbound
            .fetch_add(t.packets_outbound, Ordering::Relaxed);
    }

    fn get(&self) -> Traffic {
        Traffic {
            bytes_inbound: self.bytes_inbound.load(Ordering::Relaxed),
            bytes_outbound: self.bytes_outbound.load(Ordering::Relaxed),
            packets_inbound: self.packets_inbound.load(Ordering::Relaxed),
            packets_outbound: self.packets_outbound.load(Ordering::Relaxed),
        }
    }
}

/// Number of data callouts that hold flow contexts (catalog indices
/// `0..DATA_CALLOUTS`, see [`crate::catalog::data_callout_for`]).
pub const DATA_CALLOUTS: usize = 4;

/// Buckets of the driver's registry: 32768 × 128 bytes = 4 MiB of non-paged
/// memory.
///
/// A zero-initialised static (`.bss`: no room in the image file). At a
/// million flows, about 31 flows per bucket, which bounds the longest lock
/// hold of a listing or statistics query (one bucket's walk: ~10–13 µs at
/// the 99th percentile, measured natively).
pub const DEFAULT_BUCKETS: usize = 32768;

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopping;

/// What [`FlowRegistry::remove`] observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    /// No flow of the removed record's callout is left.
    pub callout_done: bool,
    /// Teardown has begun ([`FlowRegistry::stop`] was called).
    pub stopping: bool,
}

/// Where a removal pass is (see [`FlowRegistry::next_for_removal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovalPass {
    pass: u32,
    bucket: usize,
}

/// Where a listing resumes: the bucket, and within it the records older
/// than `seq` (records are listed newest first per bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListCursor {
    /// Bucket to continue in.
    pub bucket: u32,
    /// List the bucket's records with a smaller `seq` (0: the whole bucket).
    pub seq: u32,
}

/// The result of one [`FlowRegistry::list`] batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Every bucket was visited: the pass is complete.
    Done,
    /// The caller's sink was full: continue from here.
    More(ListCursor),
}

/// The set of flows currently carrying a wfpmon context.
///
/// `BUCKETS` must be a power of two.
pub struct FlowRegistry<L, const BUCKETS: usize = DEFAULT_BUCKETS> {
    buckets: [Bucket<L>; BUCKETS],
    per_callout: [PaddedCount; DATA_CALLOUTS],
    /// The traffic of every flow removed so far, sharded (no walk to sum).
    retired: [RetiredShard; RETIRED_SHARDS],
    stopping: AtomicBool,
    pass: AtomicU32,
}

// SAFETY: all access to a bucket's state (and to its records' links)
// happens inside that bucket's `lock.with`, which `Lock`'s contract makes
// mutually exclusive; the counters are atomic. The raw record pointers are
// owned by the registry's caller, whose contract (see `insert`) keeps them
// valid while linked.
unsafe impl<L: Lock + Sync, const B: usize> Sync for FlowRegistry<L, B> {}

impl<L: ConstLock, const BUCKETS: usize> FlowRegistry<L, BUCKETS> {
    /// An empty registry accepting flows, usable in a `static`.
    #[must_use]
    pub const fn new() -> Self {
        Self::from_buckets([const { Bucket::new(L::RELEASED) }; BUCKETS])
    }
}

impl<L: ConstLock, const BUCKETS: usize> Default for FlowRegistry<L, BUCKETS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Lock, const BUCKETS: usize> FlowRegistry<L, BUCKETS> {
    /// An empty registry whose bucket locks `lock` makes (for locks without
    /// a constant released value, e.g. in model checking).
    pub fn with_locks(mut lock: impl FnMut() -> L) -> Self {
        Self::from_buckets(core::array::from_fn(|_| Bucket::new(lock())))
    }

    const fn from_buckets(buckets: [Bucket<L>; BUCKETS]) -> Self {
        assert!(BUCKETS.is_power_of_two() && BUCKETS <= 1 << 31);
        Self {
            buckets,
            per_callout: [const { PaddedCount(AtomicUsize::new(0)) }; DATA_CALLOUTS],
            retired: [const { RetiredShard::new() }; RETIRED_SHARDS],
            stopping: AtomicBool::new(false),
            pass: AtomicU32::new(0),
        }
    }

    /// The bucket of a flow handle (Fibonacci hashing of the handle).
    const fn bucket_of(flow_id: u64) -> usize {
        let bits = BUCKETS.trailing_zeros();
        if bits == 0 {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation)] // < BUCKETS <= 2^31
        let index = (flow_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize;
        index
    }

    /// Whether teardown has begun. A cheap early-out for classify; the
    /// authoritative check is the one [`FlowRegistry::insert`] makes.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Refuses every later [`FlowRegistry::insert`]. Idempotent. Returns
    /// once every insert that was not refused is complete: it passes through
    /// the lock of every bucket ever used, one at a time.
    ///
    /// An insert takes a `seq` (making its bucket "used") before it reads
    /// the stopping flag, and `stop` sets the flag before it reads which
    /// buckets are used, all sequentially consistent: so either the insert
    /// sees the flag and refuses, or `stop` sees the bucket used and waits
    /// for its lock.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for bucket in self.buckets.iter().filter(|b| b.used()) {
            bucket.locked(|_, _| ());
        }
    }

    /// Number of records linked (a maintained count; no walk).
    pub fn len(&self) -> usize {
        (0..DATA_CALLOUTS).map(|c| self.count_for(c)).sum()
    }

    /// Whether no record is linked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of linked records whose context belongs to `callout` (a
    /// maintained count; no walk).
    pub fn count_for(&self, callout: CalloutIndex) -> usize {
        self.per_callout
            .get(callout)
            .map_or(0, |c| c.0.load(Ordering::Acquire))
    }

    /// Starts bringing into the cache the bucket of `flow_id` (its lock and
    /// list heads), which [`FlowRegistry::prefetch_insert`] and
    /// [`FlowRegistry::insert`] read. A hint only, like
    /// [`FlowRegistry::prefetch_insert`]; the first of the two, as early as
    /// the flow handle is known.
    pub fn prefetch_bucket(&self, flow_id: u64) {
        prefetch(ptr::from_ref(&self.buckets[Self::bucket_of(flow_id)]).cast());
    }

    /// Starts bringing into the cache the record at the head of
    /// `association`'s list in its bucket, whose back link
    /// [`FlowRegistry::insert`] sets. With many flows that record was linked
    /// long ago and is no longer cached: called a while before the insert
    /// (after [`FlowRegistry::prefetch_bucket`] has had time to bring the
    /// bucket in), the miss overlaps the set-up's other work instead of
    /// stalling the insert under the bucket lock. A hint only: takes no
    /// lock, changes nothing, and is correct to omit; the head is read
    /// without the lock and never dereferenced.
    pub fn prefetch_insert(&self, association: Association) {
        let bucket = &self.buckets[Self::bucket_of(association.flow_id)];
        if let Some(head) = bucket.heads.get(association.callout) {
            prefetch_back_link(head.load(Ordering::Relaxed));
        }
    }

    /// Links `record` into its bucket (its callout's list there), unless
    /// teardown has begun. Holds one bucket lock for O(1) work.
    ///
    /// # Errors
    /// [`Stopping`] after [`FlowRegistry::stop`]; the record is then not linked.
    ///
    /// # Safety
    /// `record` must be valid, unlinked, and stay valid (not moved or freed)
    /// until [`FlowRegistry::remove`] has been called for it. Its
    /// `association.callout` must be below [`DATA_CALLOUTS`].
    pub unsafe fn insert(&self, record: NonNull<FlowRecord>) -> Result<(), Stopping> {
        let rec = record.as_ptr();
        // SAFETY: valid (contract); immutable field.
        let association = unsafe { (*rec).association };
        let bucket = &self.buckets[Self::bucket_of(association.flow_id)];
        bucket.locked(|b, cursor_key| {
            // Take the seq first (see `stop`). 1 ..= u32::MAX - 1: a listing
            // cursor is `seq + 1`; 1 again only after 4 billion flows in one
            // bucket, where the newest-first order within it wraps.
            let seq = bucket.next_seq.load(Ordering::Relaxed).max(1);
            let next = if seq >= u32::MAX - 1 { 1 } else { seq + 1 };
            bucket.next_seq.store(next, Ordering::SeqCst);
            if self.stopping.load(Ordering::SeqCst) {
                return Err(Stopping);
            }
            let head = bucket.head(b, association.callout);
            // SAFETY: lock held; `rec` valid and unlinked (contract).
            let links = unsafe { links_of(rec) };
            links.prev = ptr::null_mut();
            links.next = head;
            links.seq = seq;
            links.removal_pass = 0;
            // A removal walk in progress restarts (from the new head; records
            // it handed out already are marked and skipped).
            *cursor_key = 0;
            if !head.is_null() {
                // SAFETY: linked records are valid; lock held.
                unsafe { links_of(head) }.prev = rec;
            }
            bucket.set_head(b, association.callout, rec);
            self.per_callout[association.callout]
                .0
                .fetch_add(1, Ordering::AcqRel);
            Ok(())
        })
    }

    /// Unlinks `record`, adds its traffic to its bucket's retired totals and
    /// runs `retire` on it and its bucket's index, all inside the bucket's
    /// critical section (so statistics never see a flow twice or not at
    /// all). Removing an
    /// unlinked record is a no-op. Holds one bucket lock for O(1) work.
    ///
    /// # Safety
    /// `record` must be valid, and linked into this registry or never linked.
    pub unsafe fn remove(
        &self,
        record: NonNull<FlowRecord>,
        retire: impl FnOnce(&FlowRecord, usize),
    ) -> Removed {
        let rec = record.as_ptr();
        // SAFETY: valid (contract); immutable field.
        let association = unsafe { (*rec).association };
        let index = Self::bucket_of(association.flow_id);
        let bucket = &self.buckets[index];
        let callout_done = bucket.locked(|b, _| {
            // SAFETY: valid (contract); lock held.
            let links = unsafe { links_of(rec) };
            if links.seq == 0 {
                return false; // never linked, or removed before
            }
            let (prev, next) = (links.prev, links.next);
            if prev.is_null() {
                bucket.set_head(b, association.callout, next);
            } else {
                // SAFETY: neighbours of a linked record are linked and valid.
                unsafe { links_of(prev) }.next = next;
            }
            if !next.is_null() {
                // SAFETY: as above.
                unsafe { links_of(next) }.prev = prev;
            }
            if b.cursor == rec {
                b.cursor = next;
            }
            links.prev = ptr::null_mut();
            links.next = ptr::null_mut();
            links.seq = 0;
            // SAFETY: valid (contract); shared access to atomics and
            // immutable fields.
            let r = unsafe { &*rec };
            let traffic = r.traffic();
            b.retired = b.retired.plus(traffic);
            self.retired[index % RETIRED_SHARDS].add(traffic);
            retire(r, index);
            let before = self.per_callout[association.callout]
                .0
                .fetch_sub(1, Ordering::AcqRel);
            before == 1
        });
        Removed {
            callout_done,
            stopping: self.stopping.load(Ordering::Acquire),
        }
    }

    /// Starts a fresh removal pass: every record is handed out (once) by
    /// [`FlowRegistry::next_for_removal`].
    pub fn begin_removal_pass(&self) -> RemovalPass {
        // 1 ..= 2^28 - 1 (a cursor key is `pass * 8 + callout`).
        let pass = (self.pass.fetch_add(1, Ordering::AcqRel).wrapping_add(1) % (1 << 28)).max(1);
        RemovalPass { pass, bucket: 0 }
    }

    /// The removal pass begun last, to continue it: records it has already
    /// handed out are not handed out again (before any pass, this begins
    /// the first).
    ///
    /// Teardown continues the pass while the engine's answers were final
    /// (`FwpsFlowRemoveContext0`: SUCCESS, PENDING, or UNSUCCESSFUL — no
    /// context), so a flow whose deletion is pending costs no kernel call per
    /// retry however long the wait; it begins a fresh pass (everything asked
    /// again) after any other answer ("an error occurred": the context may
    /// still be there). Records linked after a pass began are not part of it:
    /// teardown stops new links before its first pass.
    pub fn current_removal_pass(&self) -> RemovalPass {
        let current = self.pass.load(Ordering::Acquire) % (1 << 28);
        if current == 0 {
            return self.begin_removal_pass();
        }
        RemovalPass {
            pass: current,
            bucket: 0,
        }
    }

    /// The next record of `callout` not yet handed out in `pass`, marked
    /// handed out. Returns a copy of its association: the record itself may
    /// be freed (by the flow-delete callback) as soon as the lock is
    /// released. `callout` may be any catalog index: one that holds no
    /// contexts (at or above [`DATA_CALLOUTS`]) has nothing to hand out —
    /// teardown runs a pass for every callout the engine answers busy for.
    ///
    /// The walk reads only `callout`'s list in each bucket. Each bucket
    /// keeps the position of the walk for one (pass, callout) (moved on when
    /// the record there is removed; restarted when a record is linked or
    /// another walk comes by), so a pass reads each of the callout's records
    /// about once: linear in that callout's flows, one bucket lock at a
    /// time.
    pub fn next_for_removal(
        &self,
        pass: &mut RemovalPass,
        callout: CalloutIndex,
    ) -> Option<Association> {
        if callout >= DATA_CALLOUTS {
            return None;
        }
        while let Some(bucket) = self.buckets.get(pass.bucket) {
            if !bucket.used() {
                pass.bucket += 1;
                continue;
            }
            #[allow(clippy::cast_possible_truncation)] // callout < DATA_CALLOUTS
            let key = pass.pass * 8 + callout as u32;
            // What the bucket hands out, and whether its list ends there.
            let found = bucket.locked(|b, cursor_key| {
                if *cursor_key != key {
                    *cursor_key = key;
                    b.cursor = bucket.head(b, callout);
                }
                while !b.cursor.is_null() {
                    let rec = b.cursor;
                    // SAFETY: linked records are valid; lock held.
                    let links = unsafe { links_of(rec) };
                    b.cursor = links.next;
                    // SAFETY: valid; immutable field.
                    let association = unsafe { (*rec).association };
                    debug_assert_eq!(
                        association.callout, callout,
                        "a record in another callout's list"
                    );
                    if links.removal_pass != pass.pass {
                        links.removal_pass = pass.pass;
                        // The caller's removal of this record writes the
                        // next one's links, and the next call hands that
                        // one out (its deletion reads all of it): start
                        // loading it now, to overlap the engine's work on
                        // this one. (The one after it is known only once
                        // that has arrived.)
                        prefetch_record(b.cursor);
                        return Some((association, b.cursor.is_null()));
                    }
                }
                None
            });
            if let Some((association, list_ends)) = found {
                // At the end of the list, the next list's first record
                // instead (after the unlock: finding it reads other
                // buckets).
                if list_ends {
                    self.prefetch_next_head(pass.bucket, callout);
                }
                return Some(association);
            }
            pass.bucket += 1;
        }
        None
    }

    /// [`prefetch_record`] of the first record of `callout`'s list in the
    /// first of the few buckets after `bucket` whose list is not empty (a
    /// removal pass's next list: its first record is otherwise a miss that
    /// no earlier record of the walk points to). A hint: the heads are read
    /// without the lock and never dereferenced.
    fn prefetch_next_head(&self, bucket: usize, callout: CalloutIndex) {
        const LOOK_AHEAD: usize = 4;
        let ahead = self.buckets.iter().skip(bucket + 1).take(LOOK_AHEAD);
        if let Some(head) = ahead
            .map(|b| b.heads[callout].load(Ordering::Relaxed))
            .find(|head| !head.is_null())
        {
            prefetch_record(head);
        }
    }

    /// Lists records from `cursor` on: calls `sink` on each, newest first
    /// within a bucket, under that bucket's lock (so `sink` runs at the
    /// lock's IRQL: it must not block, allocate or call into the engine),
    /// until `sink` answers `false` (full: the record it was given is not
    /// consumed) or every bucket was visited. Holds one bucket's lock at a
    /// time.
    ///
    /// Semantics of a listing pass (a sequence of batches from the default
    /// cursor until [`Listed::Done`]), as conntrack dumps have them: a flow
    /// present for the whole pass is listed exactly once; a flow that comes
    /// or goes during the pass is listed at most once; no flow is listed
    /// twice.
    pub fn list(&self, cursor: ListCursor, mut sink: impl FnMut(&FlowRecord) -> bool) -> Listed {
        let mut index = cursor.bucket as usize;
        let mut below = cursor.seq;
        while let Some(bucket) = self.buckets.get(index) {
            if !bucket.used() {
                index += 1;
                below = 0;
                continue;
            }
            let stopped_at = bucket.locked(|b, _| {
                // Merge the callouts' lists (each newest first) by `seq`.
                let mut at: [*mut FlowRecord; DATA_CALLOUTS] =
                    core::array::from_fn(|callout| bucket.head(b, callout));
                loop {
                    let mut newest: Option<(usize, u32)> = None;
                    for (list, rec) in at.iter_mut().enumerate() {
                        // Skip what the cursor says was listed already.
                        while !rec.is_null() {
                            // SAFETY: linked records are valid; lock held.
                            let links = unsafe { links_of(*rec) };
                            if below == 0 || links.seq < below {
                                if newest.is_none_or(|(_, seq)| links.seq > seq) {
                                    newest = Some((list, links.seq));
                                }
                                break;
                            }
                            *rec = links.next;
                        }
                    }
                    let (list, seq) = newest?;
                    let rec = at[list];
                    // SAFETY: linked and valid; lock held; shared access for
                    // the sink.
                    if !sink(unsafe { &*rec }) {
                        return Some(seq);
                    }
                    below = seq;
                    // SAFETY: as above.
                    at[list] = unsafe { links_of(rec) }.next;
                }
            });
            if let Some(seq) = stopped_at {
                #[allow(clippy::cast_possible_truncation)] // BUCKETS <= 2^31
                let bucket = index as u32;
                return Listed::More(ListCursor {
                    bucket,
                    // Resume with this record (seq below `seq + 1`).
                    seq: seq.wrapping_add(1),
                });
            }
            index += 1;
            below = 0;
        }
        Listed::Done
    }

    /// Runs `record` on every linked record and then `bucket_done` with the
    /// bucket's index, both inside that bucket's critical section, one used
    /// bucket at a time in index order (so both run at the lock's IRQL: no
    /// blocking, no allocation). A flow removed after its bucket was visited
    /// is removed under the same lock, hence after `bucket_done` ran for it.
    pub fn scan(&self, mut record: impl FnMut(&FlowRecord), mut bucket_done: impl FnMut(usize)) {
        for (index, bucket) in self.buckets.iter().enumerate().filter(|(_, b)| b.used()) {
            bucket.locked(|b, _| {
                bucket.each_record(b, &mut record);
                bucket_done(index);
            });
        }
    }

    /// The traffic of every flow, active and ended, and the number of active
    /// flows: per bucket, its retired totals and its records' counters, read
    /// in one critical section of that bucket. A flow lives in one bucket
    /// and moves from "active" to "retired" under its lock, so it is counted
    /// exactly once, and no lock is held for more than one bucket.
    pub fn totals(&self) -> (u64, Traffic) {
        let mut active = 0u64;
        let mut traffic = Traffic::default();
        for bucket in self.buckets.iter().filter(|b| b.used()) {
            bucket.locked(|b, _| {
                traffic = traffic.plus(b.retired);
                bucket.each_record(b, |r| {
                    traffic = traffic.plus(r.traffic());
                    active += 1;
                });
            });
        }
        (active, traffic)
    }

    /// The traffic of every flow removed so far (ended, or deleted at
    /// unload): the sum of [`RETIRED_SHARDS`] maintained counters — no lock,
    /// no walk, the same cost at any number of flows. A flow's counters are
    /// added as one unit, but a concurrent reader may see a flow's bytes
    /// before its packets (relaxed, per-field atomics): exact once no flow
    /// ends during the read. For the exact total of every flow, live ones
    /// included, see [`FlowRegistry::totals`].
    pub fn retired_traffic(&self) -> Traffic {
        self.retired
            .iter()
            .fold(Traffic::default(), |sum, shard| sum.plus(shard.get()))
    }

    /// Runs `f` on every linked record, one bucket (under its lock) at a
    /// time.
    pub fn for_each(&self, mut f: impl FnMut(&FlowRecord)) {
        let listed = self.list(ListCursor::default(), |r| {
            f(r);
            true
        });
        debug_assert_eq!(listed, Listed::Done);
    }
}
