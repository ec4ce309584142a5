//! Process attribution: the processes that own tracked flows, interned so
//! that a thousand flows of one browser share one record, with traffic
//! totals that survive the flows.
//!
//! A [`ProcessTable`] is a fixed array of [`PROCESS_CAPACITY`] entries in
//! [`PROCESS_SHARDS`] shards, each shard guarded by its own lock (the
//! driver: an in-stack queued spin lock). An entry is keyed by the process
//! id and the image path the filter engine supplies at flow establishment
//! (`FWPS_METADATA_FIELD_PROCESS_ID`, `FWPS_METADATA_FIELD_PROCESS_PATH`):
//! process ids are reused, so the path tells two processes that had the
//! same id apart (two runs of the same image under a reused id share an
//! entry; the engine supplies nothing that separates them at this layer).
//! The path is kept up to [`PATH_UNITS`] UTF-16 units — its *end* when it is
//! longer (the file name is what identifies a program), flagged
//! [`PROCESS_PATH_TRUNCATED`]. A field the engine did not supply is flagged
//! ([`PROCESS_ID_MISSING`], [`PROCESS_PATH_MISSING`]), never invented.
//!
//! # Memory and eviction
//! Entries are never allocated: the table is static (the driver's: 1024 ×
//! 624 bytes ≈ 624 KiB of non-paged `.bss`). An entry is in use while any
//! of its flows is active, and stays afterwards with its ended flows'
//! totals. When a new process finds its shard full, the entry of the
//! process whose last flow ended longest ago (no active flow) is reused;
//! if every entry of the shard has active flows, the flow is tracked
//! without a process (counted in [`ProcessTable::unattributed`]). Each
//! reuse is counted in [`ProcessTable::evictions`]; an entry's
//! `generation` changes with every reuse, so `(slot, generation)` — the
//! [`process key`](ProcessSnapshot::key) — names one process for the
//! driver's lifetime.
//!
//! # Consistent per-process totals
//! A process's traffic is its active flows' counters (read from the flow
//! registry) plus its ended flows' totals (kept here). A query
//! ([`ProcessTable::query`]) walks the registry one bucket at a time, and a
//! flow may end in the meantime; so that such a flow is counted exactly
//! once, the walk publishes how far it got ([`ScanPosition`]), and a flow
//! that ends in a bucket the walk has already counted records its traffic
//! as *late* in its process entry; the query reports `ended - late`.
//! A flow that starts and ends during the query is left to the next one.
//! Queries run one at a time ([`QueryBusy`] otherwise).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::flow::{ConstLock, FlowRecord, FlowRegistry, Lock, Traffic};

/// UTF-16 units of a process path kept per entry (its end, when longer).
pub const PATH_UNITS: usize = 256;
/// Shards of the driver's table (a power of two).
pub const PROCESS_SHARDS: usize = 32;
/// Entries per shard.
pub const PROCESS_SHARD_ENTRIES: usize = 32;
/// Entries of the driver's table.
pub const PROCESS_CAPACITY: usize = PROCESS_SHARDS * PROCESS_SHARD_ENTRIES;

/// [`ProcessSnapshot::flags`]: the engine supplied no process id.
pub const PROCESS_ID_MISSING: u16 = 1;
/// The engine supplied no process path.
pub const PROCESS_PATH_MISSING: u16 = 2;
/// The path was longer than [`PATH_UNITS`]: its end is kept.
pub const PROCESS_PATH_TRUNCATED: u16 = 4;

/// "No process": a flow whose process could not be given an entry.
pub const NO_PROCESS: u32 = u32::MAX;

/// One process's record (under its shard's lock, except `generation`).
#[repr(C)]
struct Entry {
    /// 0: free. Changes only under the shard lock, while no flow refers to
    /// the entry; read without the lock by those that hold a reference.
    generation: AtomicU32,
    process_id: u32,
    path_hash: u32,
    flags: u16,
    path_units: u16,
    active_flows: u32,
    /// The query whose walk `late` belongs to (0: none).
    scan_tag: u32,
    flows_total: u64,
    first_seen: u64,
    last_seen: u64,
    ended: Traffic,
    late: Traffic,
    path: [u16; PATH_UNITS],
}

const _: () = assert!(size_of::<Entry>() == 624);

impl Entry {
    const fn empty() -> Self {
        Self {
            generation: AtomicU32::new(0),
            process_id: 0,
            path_hash: 0,
            flags: 0,
            path_units: 0,
            active_flows: 0,
            scan_tag: 0,
            flows_total: 0,
            first_seen: 0,
            last_seen: 0,
            ended: ZERO,
            late: ZERO,
            path: [0; PATH_UNITS],
        }
    }

    fn is_free(&self) -> bool {
        self.generation.load(Ordering::Relaxed) == 0
    }

    fn matches(&self, key: &Key<'_>) -> bool {
        !self.is_free()
            && self.process_id == key.process_id
            && self.path_hash == key.path_hash
            && self.flags & (PROCESS_ID_MISSING | PROCESS_PATH_MISSING) == key.missing
            && self.path_units == key.kept_units()
            && key
                .kept()
                .eq(self.path[..usize::from(self.path_units)].iter().copied())
    }
}

const ZERO: Traffic = Traffic {
    bytes_inbound: 0,
    bytes_outbound: 0,
    packets_inbound: 0,
    packets_outbound: 0,
};

const fn minus(a: Traffic, b: Traffic) -> Traffic {
    Traffic {
        bytes_inbound: a.bytes_inbound.wrapping_sub(b.bytes_inbound),
        bytes_outbound: a.bytes_outbound.wrapping_sub(b.bytes_outbound),
        packets_inbound: a.packets_inbound.wrapping_sub(b.packets_inbound),
        packets_outbound: a.packets_outbound.wrapping_sub(b.packets_outbound),
    }
}

/// The identity of a process as one flow establishment gives it.
struct Key<'a> {
    process_id: u32,
    /// UTF-16LE bytes of the path, without the terminating NUL(s).
    path: &'a [u8],
    path_hash: u32,
    missing: u16,
}

impl<'a> Key<'a> {
    fn new(process_id: Option<u32>, path: Option<&'a [u8]>) -> Self {
        let mut missing = 0;
        if process_id.is_none() {
            missing |= PROCESS_ID_MISSING;
        }
        let path = path.map_or(&[][..], trim_nuls);
        if path.is_empty() {
            missing |= PROCESS_PATH_MISSING;
        }
        Self {
            process_id: process_id.unwrap_or(0),
            path,
            path_hash: fnv1a(path),
            missing,
        }
    }

    /// Units of the whole path.
    const fn units(&self) -> usize {
        self.path.len() / 2
    }

    #[allow(clippy::cast_possible_truncation)] // <= PATH_UNITS
    fn kept_units(&self) -> u16 {
        self.units().min(PATH_UNITS) as u16
    }

    /// The kept units: the last [`PATH_UNITS`] of the path.
    fn kept(&self) -> impl Iterator<Item = u16> + '_ {
        let skip = self.units() - usize::from(self.kept_units());
        self.path
            .chunks_exact(2)
            .skip(skip)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }
}

/// The path without trailing UTF-16 NULs (the engine's blob counts its
/// terminator), and without an odd last byte.
fn trim_nuls(path: &[u8]) -> &[u8] {
    let mut end = path.len() & !1;
    while end >= 2 && path[end - 2] == 0 && path[end - 1] == 0 {
        end -= 2;
    }
    &path[..end]
}

/// FNV-1a, 32 bits.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A shard: its lock and entries.
#[repr(C)]
struct Shard<L, const N: usize> {
    lock: L,
    entries: UnsafeCell<[Entry; N]>,
}

impl<L: Lock, const N: usize> Shard<L, N> {
    fn locked<R>(&self, f: impl FnOnce(&mut [Entry; N]) -> R) -> R {
        self.lock.with(|| {
            // SAFETY: `Lock::with` gives exclusive access for the closure's
            // duration; entries are only touched under it (except the
            // atomic `generation`).
            f(unsafe { &mut *self.entries.get() })
        })
    }
}

/// How far the current query's walk of the flow registry got.
///
/// Its tag and the number of buckets it has counted. Published (under each bucket's
/// lock) by the walk; read (under a bucket's lock) by a flow ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanPosition {
    /// The query (0: none yet).
    pub tag: u32,
    /// Buckets below this one have been counted.
    pub buckets_done: u32,
}

impl ScanPosition {
    const fn pack(self) -> u64 {
        ((self.tag as u64) << 32) | self.buckets_done as u64
    }

    #[allow(clippy::cast_possible_truncation)] // halves of a u64
    const fn unpack(v: u64) -> Self {
        Self {
            tag: (v >> 32) as u32,
            buckets_done: v as u32,
        }
    }
}

/// Another query is running; try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryBusy;

/// One process as a query reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSnapshot {
    /// `generation << 32 | slot`: names this process for the driver's
    /// lifetime (flows and events carry it).
    pub key: u64,
    /// Process id (0 with [`PROCESS_ID_MISSING`]).
    pub process_id: u32,
    /// `PROCESS_*` flags.
    pub flags: u16,
    /// Flows now active.
    pub active_flows: u32,
    /// Flows ever attributed to this process.
    pub flows_total: u64,
    /// Time (the caller's clock) of its first flow.
    pub first_seen: u64,
    /// Time of its latest flow start or end.
    pub last_seen: u64,
    /// Traffic of its active flows.
    pub active: Traffic,
    /// Traffic of its ended flows.
    pub ended: Traffic,
    /// Kept path units (`path[..path_units]`).
    pub path_units: u16,
    /// Image path, UTF-16 (the engine's form, e.g. `\device\harddiskvolume3\…`).
    pub path: [u16; PATH_UNITS],
}

/// Where a query stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryEnd {
    /// The slot to continue from, if processes remain.
    pub next_slot: Option<u32>,
}

/// The processes of tracked flows. `SHARDS` must be a power of two.
pub struct ProcessTable<
    L,
    const SHARDS: usize = PROCESS_SHARDS,
    const PER_SHARD: usize = PROCESS_SHARD_ENTRIES,
> {
    shards: [Shard<L, PER_SHARD>; SHARDS],
    generation: AtomicU32,
    scan: AtomicU64,
    tags: AtomicU32,
    querying: AtomicBool,
    evictions: AtomicU64,
    unattributed: AtomicU64,
}

// SAFETY: entries are touched only inside their shard's `lock.with`
// (mutually exclusive by `Lock`'s contract), except the atomic
// `generation`; everything else is atomic.
unsafe impl<L: Lock + Sync, const S: usize, const P: usize> Sync for ProcessTable<L, S, P> {}

impl<L: ConstLock, const S: usize, const P: usize> ProcessTable<L, S, P> {
    /// An empty table, usable in a `static` (all zeros: `.bss`).
    #[must_use]
    pub const fn new() -> Self {
        Self::from_shards(
            [const {
                Shard {
                    lock: L::RELEASED,
                    entries: UnsafeCell::new([const { Entry::empty() }; P]),
                }
            }; S],
        )
    }
}

impl<L: ConstLock, const S: usize, const P: usize> Default for ProcessTable<L, S, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Lock, const S: usize, const P: usize> ProcessTable<L, S, P> {
    /// A table whose shard locks `lock` makes (model checking).
    pub fn with_locks(mut lock: impl FnMut() -> L) -> Self {
        Self::from_shards(core::array::from_fn(|_| Shard {
            lock: lock(),
            entries: UnsafeCell::new([const { Entry::empty() }; P]),
        }))
    }

    const fn from_shards(shards: [Shard<L, P>; S]) -> Self {
        assert!(S.is_power_of_two() && S * P < u16::MAX as usize);
        Self {
            shards,
            generation: AtomicU32::new(0),
            scan: AtomicU64::new(0),
            tags: AtomicU32::new(0),
            querying: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            unattributed: AtomicU64::new(0),
        }
    }

    /// Entries.
    pub const fn capacity(&self) -> usize {
        S * P
    }

    /// Entries reused for another process.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Flows tracked without a process (their shard was full of processes
    /// with active flows).
    pub fn unattributed(&self) -> u64 {
        self.unattributed.load(Ordering::Relaxed)
    }

    fn shard_of(key: &Key<'_>) -> usize {
        let mixed = (u64::from(key.process_id) << 32 | u64::from(key.path_hash))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        #[allow(clippy::cast_possible_truncation)] // < S
        let shard = (mixed >> 40) as usize & (S - 1);
        shard
    }

    /// Attributes one new flow to its process: finds or creates the entry
    /// and counts the flow as active in it. Returns the entry's slot, or
    /// [`NO_PROCESS`] (counted in [`ProcessTable::unattributed`]). Holds one
    /// shard lock for `O(PER_SHARD + PATH_UNITS)` work; no allocation.
    ///
    /// Every slot returned must be released exactly once
    /// ([`ProcessTable::release`]).
    pub fn acquire(&self, process_id: Option<u32>, path: Option<&[u8]>, now: u64) -> u32 {
        let key = Key::new(process_id, path);
        let shard_index = Self::shard_of(&key);
        let found = self.shards[shard_index].locked(|entries| {
            let index = if let Some(i) = entries.iter().position(|e| e.matches(&key)) {
                i
            } else {
                let i = entries.iter().position(Entry::is_free).or_else(|| {
                    entries
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.active_flows == 0)
                        .min_by_key(|(_, e)| e.last_seen)
                        .map(|(i, _)| i)
                })?;
                if !entries[i].is_free() {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                self.claim(&mut entries[i], &key, now);
                i
            };
            let e = &mut entries[index];
            e.active_flows += 1;
            e.flows_total += 1;
            e.last_seen = now;
            Some(index)
        });
        found.map_or_else(
            || {
                self.unattributed.fetch_add(1, Ordering::Relaxed);
                NO_PROCESS
            },
            |index| {
                #[allow(clippy::cast_possible_truncation)] // < S * P < u16::MAX
                let slot = (shard_index * P + index) as u32;
                slot
            },
        )
    }

    fn claim(&self, e: &mut Entry, key: &Key<'_>, now: u64) {
        let generation = self
            .generation
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
        e.generation.store(generation, Ordering::Relaxed);
        e.process_id = key.process_id;
        e.path_hash = key.path_hash;
        e.flags = key.missing;
        if key.units() > PATH_UNITS {
            e.flags |= PROCESS_PATH_TRUNCATED;
        }
        e.path_units = key.kept_units();
        for (dst, src) in e.path.iter_mut().zip(key.kept()) {
            *dst = src;
        }
        e.active_flows = 0;
        e.scan_tag = 0;
        e.flows_total = 0;
        e.first_seen = now;
        e.last_seen = now;
        e.ended = ZERO;
        e.late = ZERO;
    }

    /// A flow of `slot` ended (or was refused) with `traffic`, in registry
    /// bucket `bucket`: adds its traffic to the ended totals. Called inside
    /// the bucket's critical section (`FlowRegistry::remove`'s `retire`), so
    /// the lock order is bucket, then shard. [`NO_PROCESS`] is ignored.
    pub fn release(&self, slot: u32, traffic: Traffic, bucket: usize, now: u64) {
        let Some((shard, index)) = self.locate(slot) else {
            return;
        };
        let scan = ScanPosition::unpack(self.scan.load(Ordering::SeqCst));
        shard.locked(|entries| {
            let e = &mut entries[index];
            debug_assert!(e.active_flows > 0, "release without acquire");
            e.active_flows = e.active_flows.saturating_sub(1);
            e.ended = e.ended.plus(traffic);
            e.last_seen = now;
            if e.scan_tag != 0 && e.scan_tag == scan.tag && bucket < scan.buckets_done as usize {
                e.late = e.late.plus(traffic);
            }
        });
    }

    /// Takes back an [`acquire`](ProcessTable::acquire) whose flow was not
    /// tracked after all (refused by the registry, or never associated):
    /// the flow is forgotten, and an entry made for it alone is freed.
    pub fn abandon(&self, slot: u32) {
        let Some((shard, index)) = self.locate(slot) else {
            return;
        };
        shard.locked(|entries| {
            let e = &mut entries[index];
            e.active_flows = e.active_flows.saturating_sub(1);
            e.flows_total = e.flows_total.saturating_sub(1);
            if e.flows_total == 0 {
                e.generation.store(0, Ordering::Relaxed);
            }
        });
    }

    /// The key (`generation << 32 | slot`) of an entry a live flow refers
    /// to, or 0 for [`NO_PROCESS`]. Lock-free: a flow's entry is not reused
    /// while the flow holds it.
    pub fn key_of(&self, slot: u32) -> u64 {
        self.locate(slot).map_or(0, |(shard, index)| {
            let entries = shard.entries.get();
            // SAFETY: a place expression through the raw pointer down to
            // the atomic `generation`, the only field shared outside the
            // lock; no reference to the entry (which the lock holder may be
            // writing) is made.
            let generation = unsafe { &(*entries)[index].generation };
            u64::from(generation.load(Ordering::Relaxed)) << 32 | u64::from(slot)
        })
    }

    fn locate(&self, slot: u32) -> Option<(&Shard<L, P>, usize)> {
        let slot = slot as usize;
        self.shards.get(slot / P).map(|s| (s, slot % P))
    }

    /// Reports up to `max` processes in use from slot `first` on, each with
    /// consistent totals (see the module documentation): one walk of
    /// `flows` (one bucket lock at a time) for the traffic of their active
    /// flows. `out` runs under a shard's lock: it must not block or
    /// allocate. `max` is at most [`MAX_QUERY`].
    ///
    /// # Errors
    /// [`QueryBusy`] while another query runs.
    pub fn query<FL: Lock, const B: usize>(
        &self,
        flows: &FlowRegistry<FL, B>,
        first: u32,
        max: usize,
        mut out: impl FnMut(&ProcessSnapshot),
    ) -> Result<QueryEnd, QueryBusy> {
        if self
            .querying
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(QueryBusy);
        }
        let tag = self
            .tags
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
        let mut page = [0u32; MAX_QUERY];
        let (taken, next_slot) = self.tag_page(tag, first as usize, max.min(MAX_QUERY), &mut page);
        let page = &page[..taken];
        // The walk: active flows of the page's processes.
        let mut active = [ZERO; MAX_QUERY];
        self.scan.store(
            ScanPosition {
                tag,
                buckets_done: 0,
            }
            .pack(),
            Ordering::SeqCst,
        );
        if !page.is_empty() {
            flows.scan(
                |record: &FlowRecord| {
                    if let Ok(i) = page.binary_search(&record.process_slot) {
                        active[i] = active[i].plus(record.traffic());
                    }
                },
                |bucket| {
                    #[allow(clippy::cast_possible_truncation)] // B <= 2^31
                    let done = bucket as u32 + 1;
                    self.scan.store(
                        ScanPosition {
                            tag,
                            buckets_done: done,
                        }
                        .pack(),
                        Ordering::SeqCst,
                    );
                },
            );
        }
        self.scan.store(
            ScanPosition {
                tag,
                buckets_done: u32::MAX,
            }
            .pack(),
            Ordering::SeqCst,
        );
        for (i, &slot) in page.iter().enumerate() {
            let (shard, index) = (&self.shards[slot as usize / P], slot as usize % P);
            shard.locked(|entries| {
                let e = &entries[index];
                if e.is_free() {
                    return;
                }
                let ended = if e.scan_tag == tag {
                    minus(e.ended, e.late)
                } else {
                    e.ended // reused during the query: nothing was counted late
                };
                out(&ProcessSnapshot {
                    key: u64::from(e.generation.load(Ordering::Relaxed)) << 32 | u64::from(slot),
                    process_id: e.process_id,
                    flags: e.flags,
                    active_flows: e.active_flows,
                    flows_total: e.flows_total,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    active: if e.scan_tag == tag { active[i] } else { ZERO },
                    ended,
                    path_units: e.path_units,
                    path: e.path,
                });
            });
        }
        self.querying.store(false, Ordering::Release);
        Ok(QueryEnd { next_slot })
    }

    /// The page of a query: the next `max` slots in use from `first` on,
    /// tagged `tag` with nothing late, written to `page`. Returns their
    /// number and the slot after the page, if any.
    fn tag_page(
        &self,
        tag: u32,
        first: usize,
        max: usize,
        page: &mut [u32; MAX_QUERY],
    ) -> (usize, Option<u32>) {
        let mut taken = 0;
        let mut slot = first;
        // One lock hold per shard (at most PER_SHARD entries looked at).
        while slot < self.capacity() && taken < max {
            let shard = &self.shards[slot / P];
            shard.locked(|entries| {
                // From `slot` to the end of its shard, or until the page is full.
                loop {
                    let e = &mut entries[slot % P];
                    if !e.is_free() {
                        e.scan_tag = tag;
                        e.late = ZERO;
                        #[allow(clippy::cast_possible_truncation)] // < S * P
                        let s = slot as u32;
                        page[taken] = s;
                        taken += 1;
                    }
                    slot += 1;
                    if slot.is_multiple_of(P) || taken == max {
                        break;
                    }
                }
            });
        }
        #[allow(clippy::cast_possible_truncation)] // < S * P
        let next = (slot < self.capacity()).then_some(slot as u32);
        (taken, next)
    }

    /// Processes in use (a walk of the table, one shard lock at a time).
    pub fn in_use(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.locked(|entries| entries.iter().filter(|e| !e.is_free()).count()))
            .sum()
    }
}

/// Most processes one [`ProcessTable::query`] reports.
pub const MAX_QUERY: usize = 64;
