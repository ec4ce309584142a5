//! The benchmarks' host-model baseline: a stand-in for the driver that
//! makes, per flow, the same calls into the same kernel and engine models
//! as wfpmon does — and does nothing else.
//!
//! Per flow, wfpmon's flow-established classify takes its process's shard
//! lock (attribution), allocates its record (`ExAllocatePool2`, non-paged,
//! one `FlowRecord`, tag `WfpM`), links it under one bucket's lock,
//! publishes an event under the event ring's lock and associates the record
//! with its data callout (`FwpsFlowAssociateContext0`) — each lock an
//! in-stack queued spin lock, taken and released; its flowDeleteFn takes the
//! bucket lock again, inside it the process's shard lock (the ended totals),
//! frees the record (`ExFreePoolWithTag`) and publishes under the ring's
//! lock; its Unload finds each flow under a bucket lock and calls
//! `FwpsFlowRemoveContext0`, which runs the flowDeleteFn. The stand-in
//! makes exactly those calls, in that order, on three locks of its own,
//! through the same models, against a data callout of its own (registered
//! by the host, so its contexts never reach the driver). Run at the same
//! flow count as the driver, it pays what the host's models cost there —
//! the engine's flow and context tables, the pool ledger and the C heap at
//! that size, the lock models' bookkeeping, and the time accounting's own
//! cost at every call into a model and back (two fenced time stamp reads,
//! tens of nanoseconds: a stand-in making fewer calls than the driver
//! charges the difference to the driver) — so that the driver's figure
//! minus the stand-in's is the driver's own share.
//!
//! What it does not reproduce: the driver's own memory (its 4 MiB bucket
//! table and its records' list links). The stand-in's pool blocks are
//! allocated, zeroed and freed like the driver's records but never read or
//! written again, so a figure's difference from the stand-in's is the
//! driver's work *including* the cache misses its own data structures cost.
//! Nor does it reproduce the order of the driver's removal pass by itself:
//! [`remove_all`] takes the order as an argument (the benchmark passes the
//! driver's, read from a listing pass of a world with the same flows),
//! because the engine's per-flow state is allocated in flow order and the
//! order of the walk decides which of those accesses miss the cache.

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fwpsk_sys as fwps;
use wfpmon_core::catalog::{AddressFamily, CALLOUTS, POOL_TAG, data_callout_for};
use wfpmon_core::flow::FlowRecord;

use crate::engine::{self, Callout};
use crate::kernel::{self, PASSIVE_LEVEL, POOL_FLAG_NON_PAGED, call_into_image};
use crate::world::World;

/// The stand-in's data callout: run-time id (high 32 bits) and layer id
/// (low 16 bits); 0 while none is installed. One world exists at a time.
static TARGET: AtomicU64 = AtomicU64::new(0);

/// The spin lock the stand-in takes where the driver takes a bucket's.
static BUCKET: AtomicU64 = AtomicU64::new(0);
/// Where the driver takes its process table shard's.
static SHARD: AtomicU64 = AtomicU64::new(0);
/// Where the driver takes its event ring's.
static RING: AtomicU64 = AtomicU64::new(0);

/// Bytes per flow the driver allocates (and so the stand-in does).
const RECORD_SIZE: usize = size_of::<FlowRecord>();

/// Takes `lock` through the model of `KeAcquireInStackQueuedSpinLock`,
/// runs `inside`, and releases it through the model of
/// `KeReleaseInStackQueuedSpinLock`.
fn locked(lock: &AtomicU64, inside: impl FnOnce()) {
    let mut handle = [0u64; 3];
    let handle: *mut u8 = handle.as_mut_ptr().cast();
    // SAFETY: an aligned KSPIN_LOCK that lives for the whole process, and a
    // KLOCK_QUEUE_HANDLE (24 bytes) on this stack frame; called from inside
    // a call into the image (classify, flowDeleteFn or the removal pass), as
    // the driver calls it.
    unsafe { kernel::ke_acquire_in_stack_queued_spin_lock(lock.as_ptr(), handle) };
    inside();
    // SAFETY: the handle filled in just above, released by its owner.
    unsafe { kernel::ke_release_in_stack_queued_spin_lock(handle) };
}

/// Takes and releases `lock` ([`locked`] with nothing inside).
fn lock_pair(lock: &AtomicU64) {
    locked(lock, || ());
}

fn target() -> (u32, u16) {
    let t = TARGET.load(Ordering::Relaxed);
    #[allow(clippy::cast_possible_truncation)] // packed by `install`
    ((t >> 32) as u32, t as u16)
}

/// The stand-in's flow-established classifyFn: shard lock, allocate,
/// bucket lock, ring lock, associate (as
/// [`crate::world::Target::StandIn`], through the engine's classify).
///
/// # Safety
/// Called by the engine with a flow-established classify's arguments.
pub unsafe extern "win64" fn established(
    _values: *const fwps::FWPS_INCOMING_VALUES0,
    meta: *const fwps::FWPS_INCOMING_METADATA_VALUES0,
    _layer_data: *mut c_void,
    _classify_context: *const c_void,
    _filter: *const fwps::FWPS_FILTER1,
    _flow_context: u64,
    out: *mut fwps::FWPS_CLASSIFY_OUT0,
) {
    // SAFETY: the engine's metadata, valid for the call.
    let flow = unsafe { (*meta).flowHandle };
    let (callout, layer) = target();
    lock_pair(&SHARD);
    // SAFETY: non-paged, at DISPATCH_LEVEL, as the driver allocates.
    let block = unsafe { kernel::ex_allocate_pool2(POOL_FLAG_NON_PAGED, RECORD_SIZE, POOL_TAG) };
    if !block.is_null() {
        lock_pair(&BUCKET);
        lock_pair(&RING);
        // SAFETY: a flow the engine is classifying, our registered callout
        // and a live pool block as its context.
        let status =
            unsafe { engine::fwps_flow_associate_context0(flow, layer, callout, block as u64) };
        if status != 0 {
            lock_pair(&BUCKET);
            // SAFETY: allocated above with this tag and never associated.
            unsafe { kernel::ex_free_pool_with_tag(block, POOL_TAG) };
        }
    }
    // SAFETY: the engine's classifyOut, writable for the call.
    unsafe { (*out).actionType = fwps::FWP_ACTION_CONTINUE };
}

/// The stand-in data callout's classifyFn (no traffic is sent to it).
///
/// # Safety
/// Called by the engine with a classify's arguments.
pub const unsafe extern "win64" fn data(
    _values: *const fwps::FWPS_INCOMING_VALUES0,
    _meta: *const fwps::FWPS_INCOMING_METADATA_VALUES0,
    _layer_data: *mut c_void,
    _classify_context: *const c_void,
    _filter: *const fwps::FWPS_FILTER1,
    _flow_context: u64,
    _out: *mut fwps::FWPS_CLASSIFY_OUT0,
) {
}

/// The stand-in data callout's flowDeleteFn: the bucket lock with the shard
/// lock inside it, free, the ring lock.
///
/// # Safety
/// Called by the engine with a context [`established`] associated, once.
pub unsafe extern "win64" fn flow_delete(_layer: u16, _callout: u32, context: u64) {
    locked(&BUCKET, || lock_pair(&SHARD));
    // SAFETY: the pool block `established` associated; the engine delivers
    // each context's deletion once.
    unsafe { kernel::ex_free_pool_with_tag(context as *mut c_void, POOL_TAG) };
    lock_pair(&RING);
}

/// The stand-in, installed in a world: its data callout (IPv4 stream layer,
/// conditional on flow, like the driver's).
pub struct StandIn {
    callout: Arc<Callout>,
}

/// Registers the stand-in's data callout in `w`'s engine.
#[must_use]
pub fn install(w: &World) -> StandIn {
    let index = data_callout_for(AddressFamily::V4, 6);
    let callout = w.engine.register_host_callout(
        fwps::FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW,
        data,
        flow_delete,
    );
    let layer = CALLOUTS[index].runtime_layer;
    TARGET.store(
        (u64::from(callout.id) << 32) | u64::from(layer),
        Ordering::SeqCst,
    );
    StandIn { callout }
}

impl StandIn {
    /// `FwpsFlowRemoveContext0` for each flow of `handles`, in that order,
    /// each after a lock pair (the driver's Unload finds each flow under a
    /// bucket lock), from one call into the image at `PASSIVE_LEVEL`, as
    /// the driver's removal pass runs. Returns how many answered
    /// `STATUS_SUCCESS`.
    pub fn remove_all(&self, w: &World, handles: &[u64]) -> usize {
        let (callout, layer) = target();
        call_into_image(w, "stand-in removal pass", PASSIVE_LEVEL, || {
            handles
                .iter()
                .filter(|&&flow| {
                    lock_pair(&BUCKET);
                    // SAFETY: any flow handle (unknown ones are answered
                    // STATUS_UNSUCCESSFUL); our callout.
                    let status = unsafe { engine::fwps_flow_remove_context0(flow, layer, callout) };
                    status == 0
                })
                .count()
        })
    }

    /// Unregisters the stand-in's callout.
    ///
    /// # Errors
    /// How many of its contexts still exist.
    pub fn uninstall(self, w: &World) -> Result<(), usize> {
        w.engine.unregister_host_callout(&self.callout)?;
        TARGET.store(0, Ordering::SeqCst);
        Ok(())
    }
}
