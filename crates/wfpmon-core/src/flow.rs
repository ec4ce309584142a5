//! Flow identity, per-flow traffic counters, and the registry of flows that
//! carry a wfpmon context.
//!
//! A [`FlowRecord`] is the flow context the driver associates with a flow
//! (`FwpsFlowAssociateContext0`). The per-packet path only touches its
//! atomic [`TrafficCounters`]; insertion and removal go through the
//! [`FlowRegistry`], whose list is guarded by a lock the driver supplies (a
//! kernel spin lock; a `std` mutex in host tests).

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::catalog::{AddressFamily, CALLOUT_COUNT, CalloutIndex};

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

/// Lock-free traffic counters: safe to update from classify on any number of
/// processors at `DISPATCH_LEVEL` (relaxed atomic adds, no allocation).
#[derive(Debug, Default)]
pub struct TrafficCounters {
    bytes_inbound: AtomicU64,
    bytes_outbound: AtomicU64,
    packets_inbound: AtomicU64,
    packets_outbound: AtomicU64,
}

impl TrafficCounters {
    /// All zero.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            bytes_inbound: AtomicU64::new(0),
            bytes_outbound: AtomicU64::new(0),
            packets_inbound: AtomicU64::new(0),
            packets_outbound: AtomicU64::new(0),
        }
    }

    /// Adds `bytes` and `packets` in `direction`.
    pub fn record(&self, direction: Direction, bytes: u64, packets: u64) {
        let (b, p) = match direction {
            Direction::Inbound => (&self.bytes_inbound, &self.packets_inbound),
            Direction::Outbound => (&self.bytes_outbound, &self.packets_outbound),
        };
        b.fetch_add(bytes, Ordering::Relaxed);
        p.fetch_add(packets, Ordering::Relaxed);
    }

    /// Adds a whole snapshot (used to retire an ended flow's totals).
    pub fn add(&self, t: Traffic) {
        self.bytes_inbound
            .fetch_add(t.bytes_inbound, Ordering::Relaxed);
        self.bytes_outbound
            .fetch_add(t.bytes_outbound, Ordering::Relaxed);
        self.packets_inbound
            .fetch_add(t.packets_inbound, Ordering::Relaxed);
        self.packets_outbound
            .fetch_add(t.packets_outbound, Ordering::Relaxed);
    }

    /// Current values.
    #[must_use]
    pub fn snapshot(&self) -> Traffic {
        Traffic {
            bytes_inbound: self.bytes_inbound.load(Ordering::Relaxed),
            bytes_outbound: self.bytes_outbound.load(Ordering::Relaxed),
            packets_inbound: self.packets_inbound.load(Ordering::Relaxed),
            packets_outbound: self.packets_outbound.load(Ordering::Relaxed),
        }
    }
}

/// Where a flow's context is associated: what `FwpsFlowRemoveContext0` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Association {
    /// The engine's flow handle (`flowHandle` metadata).
    pub flow_id: u64,
    /// Catalog index of the data callout holding the context.
    pub callout: CalloutIndex,
}

/// List links and removal bookkeeping; touched only under the registry lock.
#[derive(Debug)]
struct Links {
    prev: *mut FlowRecord,
    next: *mut FlowRecord,
    /// Last removal pass that visited this record (0: none).
    removal_pass: u32,
    linked: bool,
}

/// The flow context wfpmon associates with a flow.
#[derive(Debug)]
pub struct FlowRecord {
    /// Where the context is associated.
    pub association: Association,
    /// The flow's identity.
    pub tuple: FlowTuple,
    /// Process that owns the local endpoint.
    pub process_id: u64,
    /// System time (100 ns units) at flow establishment.
    pub established_at: u64,
    /// Traffic counted so far.
    pub traffic: TrafficCounters,
    links: UnsafeCell<Links>,
}

impl FlowRecord {
    /// A new, unlinked record with zero counters.
    #[must_use]
    pub const fn new(
        association: Association,
        tuple: FlowTuple,
        process_id: u64,
        established_at: u64,
    ) -> Self {
        Self {
            association,
            tuple,
            process_id,
            established_at,
            traffic: TrafficCounters::new(),
            links: UnsafeCell::new(Links {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                removal_pass: 0,
                linked: false,
            }),
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

/// The links of a record.
///
/// # Safety
/// `rec` must be valid, and the caller must hold the registry lock (links
/// are only ever touched under it), for as long as the reference is used.
unsafe fn links_of<'a>(rec: *mut FlowRecord) -> &'a mut Links {
    // SAFETY: `rec` is valid (contract).
    let cell = unsafe { &(*rec).links };
    // SAFETY: exclusive under the registry lock (contract).
    unsafe { &mut *cell.get() }
}

/// One doubly linked list of records: the flows whose context belongs to
/// one callout. Only touched under the registry lock.
#[derive(Clone, Copy)]
struct Chain {
    head: *mut FlowRecord,
    tail: *mut FlowRecord,
    len: usize,
}

impl Chain {
    const EMPTY: Self = Self {
        head: ptr::null_mut(),
        tail: ptr::null_mut(),
        len: 0,
    };

    /// Links `rec` first.
    ///
    /// # Safety
    /// Registry lock held; `rec` valid and unlinked; linked records valid.
    unsafe fn push_front(&mut self, rec: *mut FlowRecord) {
        // SAFETY: contract.
        let links = unsafe { links_of(rec) };
        links.prev = ptr::null_mut();
        links.next = self.head;
        links.linked = true;
        if self.head.is_null() {
            self.tail = rec;
        } else {
            // SAFETY: linked records are valid; lock held.
            unsafe { links_of(self.head) }.prev = rec;
        }
        self.head = rec;
        self.len += 1;
    }

    /// Links `rec` last.
    ///
    /// # Safety
    /// As [`Chain::push_front`].
    unsafe fn push_back(&mut self, rec: *mut FlowRecord) {
        // SAFETY: contract.
        let links = unsafe { links_of(rec) };
        links.next = ptr::null_mut();
        links.prev = self.tail;
        links.linked = true;
        if self.tail.is_null() {
            self.head = rec;
        } else {
            // SAFETY: linked records are valid; lock held.
            unsafe { links_of(self.tail) }.next = rec;
        }
        self.tail = rec;
        self.len += 1;
    }

    /// Unlinks `rec`, which must be in this chain.
    ///
    /// # Safety
    /// Registry lock held; `rec` valid and linked into this chain.
    unsafe fn unlink(&mut self, rec: *mut FlowRecord) {
        // SAFETY: contract.
        let links = unsafe { links_of(rec) };
        if links.prev.is_null() {
            self.head = links.next;
        } else {
            // SAFETY: neighbours of a linked record are linked, hence valid.
            unsafe { links_of(links.prev) }.next = links.next;
        }
        if links.next.is_null() {
            self.tail = links.prev;
        } else {
            // SAFETY: as above.
            unsafe { links_of(links.next) }.prev = links.prev;
        }
        links.prev = ptr::null_mut();
        links.next = ptr::null_mut();
        links.linked = false;
        self.len -= 1;
    }
}

struct ListState {
    /// Records by the catalog index of the callout holding their context.
    chains: [Chain; CALLOUT_COUNT],
    len: usize,
    pass: u32,
}

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopping;

/// What [`FlowRegistry::remove`] observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The registry is now empty.
    pub now_empty: bool,
    /// No flow of the removed record's callout is left.
    pub callout_done: bool,
    /// Teardown has begun ([`FlowRegistry::stop`] was called).
    pub stopping: bool,
}

/// Token of one removal pass (see [`FlowRegistry::next_for_removal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovalPass(u32);

/// The set of flows currently carrying a wfpmon context.
pub struct FlowRegistry<L> {
    lock: L,
    stopping: AtomicBool,
    state: UnsafeCell<ListState>,
}

// SAFETY: all access to `state` (and to the records' links) happens inside
// `lock.with`, which `Lock`'s contract makes mutually exclusive; `stopping`
// is atomic. The raw record pointers are owned by the registry's caller,
// whose contract (see `insert`) keeps them valid while linked.
unsafe impl<L: Lock + Sync> Sync for FlowRegistry<L> {}

impl<L: Lock> FlowRegistry<L> {
    /// An empty registry accepting flows.
    pub const fn new(lock: L) -> Self {
        Self {
            lock,
            stopping: AtomicBool::new(false),
            state: UnsafeCell::new(ListState {
                chains: [Chain::EMPTY; CALLOUT_COUNT],
                len: 0,
                pass: 0,
            }),
        }
    }

    fn locked<R>(&self, f: impl FnOnce(&mut ListState) -> R) -> R {
        self.lock.with(|| {
            // SAFETY: `Lock::with` gives exclusive access for the closure's
            // duration; no other reference to `state` exists meanwhile.
            let state = unsafe { &mut *self.state.get() };
            f(state)
        })
    }

    /// Whether teardown has begun. A cheap early-out for classify; the
    /// authoritative check is the one [`FlowRegistry::insert`] makes.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Refuses every later [`FlowRegistry::insert`]. Idempotent.
    pub fn stop(&self) {
        self.locked(|_| self.stopping.store(true, Ordering::Release));
    }

    /// Number of records linked.
    pub fn len(&self) -> usize {
        self.locked(|s| s.len)
    }

    /// Whether no record is linked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Links `record`, unless teardown has begun.
    ///
    /// # Errors
    /// [`Stopping`] after [`FlowRegistry::stop`]; the record is then not linked.
    ///
    /// # Safety
    /// `record` must be valid, unlinked, and stay valid (not moved or freed)
    /// until [`FlowRegistry::remove`] has been called for it. Its
    /// `association.callout` must be a catalog index.
    pub unsafe fn insert(&self, record: NonNull<FlowRecord>) -> Result<(), Stopping> {
        self.locked(|s| {
            if self.stopping.load(Ordering::Relaxed) {
                return Err(Stopping);
            }
            let rec = record.as_ptr();
            // SAFETY: caller guarantees `record` is valid.
            let chain = &mut s.chains[unsafe { (*rec).association.callout }];
            // New records go first: a removal pass in progress hands out the
            // unvisited records at the front of a chain (see next_for_removal).
            // SAFETY: lock held; `rec` valid and unlinked (contract).
            unsafe { chain.push_front(rec) };
            s.len += 1;
            Ok(())
        })
    }

    /// Unlinks `record` and runs `retire` on it inside the critical section
    /// (so that statistics never see a flow twice or not at all). Removing an
    /// unlinked record is a no-op.
    ///
    /// # Safety
    /// `record` must be valid, and linked into this registry or never linked.
    pub unsafe fn remove(
        &self,
        record: NonNull<FlowRecord>,
        retire: impl FnOnce(&FlowRecord),
    ) -> Removed {
        self.locked(|s| {
            let rec = record.as_ptr();
            // SAFETY: valid (contract); shared access to an immutable field.
            let callout = unsafe { (*rec).association.callout };
            // SAFETY: caller guarantees validity; we hold the lock.
            if unsafe { links_of(rec) }.linked {
                // SAFETY: linked, hence in the chain of its callout; lock held.
                unsafe { s.chains[callout].unlink(rec) };
                s.len -= 1;
                // SAFETY: valid (contract); shared access.
                retire(unsafe { &*rec });
            }
            Removed {
                now_empty: s.len == 0,
                callout_done: s.chains[callout].len == 0,
                stopping: self.stopping.load(Ordering::Relaxed),
            }
        })
    }

    /// Starts a removal pass: each record is handed out at most once per pass
    /// by [`FlowRegistry::next_for_removal`].
    pub fn begin_removal_pass(&self) -> RemovalPass {
        self.locked(|s| {
            s.pass = s.pass.wrapping_add(1).max(1);
            RemovalPass(s.pass)
        })
    }

    /// The removal pass begun last, to continue it: only records linked
    /// since (or never handed out in it) are handed out again.
    ///
    /// Teardown continues the pass while the engine's answers were final
    /// (`FwpsFlowRemoveContext0`: SUCCESS, PENDING, or UNSUCCESSFUL — no
    /// context), so a flow whose deletion is pending costs no kernel call per
    /// retry however long the wait; it begins a fresh pass (everything asked
    /// again) after any other answer ("an error occurred": the context may
    /// still be there).
    /// (Before any pass was begun, this begins the first.)
    pub fn current_removal_pass(&self) -> RemovalPass {
        self.locked(|s| {
            s.pass = s.pass.max(1);
            RemovalPass(s.pass)
        })
    }

    /// The next record of `callout` not yet visited in `pass`, marked
    /// visited. Returns a copy of its association: the record itself may be
    /// freed (by the flow-delete callback) as soon as the lock is released.
    ///
    /// O(1): visited records move to the back of their chain and new ones
    /// are linked at the front, so the front record is either unvisited or
    /// the pass is complete.
    pub fn next_for_removal(
        &self,
        pass: RemovalPass,
        callout: CalloutIndex,
    ) -> Option<Association> {
        self.locked(|s| {
            let chain = &mut s.chains[callout];
            let head = chain.head;
            if head.is_null() {
                return None;
            }
            // SAFETY: linked records are valid; lock held.
            let links = unsafe { links_of(head) };
            if links.removal_pass == pass.0 {
                return None;
            }
            links.removal_pass = pass.0;
            // SAFETY: `head` is linked into `chain`; lock held.
            unsafe { chain.unlink(head) };
            // SAFETY: as above; `head` is now unlinked and still valid.
            unsafe { chain.push_back(head) };
            // SAFETY: valid; immutable field.
            Some(unsafe { (*head).association })
        })
    }

    /// Number of linked records whose context belongs to `callout`.
    pub fn count_for(&self, callout: CalloutIndex) -> usize {
        self.locked(|s| s.chains[callout].len)
    }

    /// Runs `f` on every linked record, under the lock (so `f` runs at the
    /// lock's IRQL: it must not block, allocate or call into the engine).
    pub fn for_each(&self, mut f: impl FnMut(&FlowRecord)) {
        self.inspect(|records| records.for_each(&mut f));
    }

    /// Runs `f` under the lock with every linked record: one consistent
    /// view, in which no record is added, removed or retired (a record's
    /// `retire` also runs under the lock), so whatever `f` reads about
    /// retired flows agrees with the records it sees.
    pub fn inspect<R>(&self, f: impl FnOnce(Records<'_>) -> R) -> R {
        self.locked(|s| {
            f(Records {
                chains: &s.chains,
                chain: 0,
                cur: ptr::null_mut(),
            })
        })
    }
}

/// The linked records, during [`FlowRegistry::inspect`].
pub struct Records<'a> {
    chains: &'a [Chain; CALLOUT_COUNT],
    /// Index of the next chain to start when `cur` is null.
    chain: usize,
    cur: *mut FlowRecord,
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a FlowRecord;

    fn next(&mut self) -> Option<&'a FlowRecord> {
        while self.cur.is_null() {
            let chain = self.chains.get(self.chain)?;
            self.chain += 1;
            self.cur = chain.head;
        }
        // SAFETY: linked records are valid while the registry lock is held,
        // which it is for the iterator's whole life (`inspect`).
        let rec = unsafe { &*self.cur };
        // SAFETY: as above; links are only touched under the lock.
        self.cur = unsafe { links_of(self.cur) }.next;
        Some(rec)
    }
}
