//! What wfpmon's callouts do, in safe code over arguments the kernel layer
//! has decoded ([`crate::kernel::wfp`] owns the `extern "system"` entry
//! points and the raw structures).
//!
//! Every function here runs at IRQL ≤ `DISPATCH_LEVEL`, possibly on all
//! processors at once. The driver only observes: it never changes the fate
//! of traffic, and writes `FWP_ACTION_CONTINUE` only where the engine grants
//! `FWPS_RIGHT_ACTION_WRITE` (that is done by the kernel layer for every
//! classify, before these handlers run).

use core::ptr::NonNull;

use wdk_sys::STATUS_SUCCESS;

use wfpmon_core::catalog::{CALLOUTS, data_callout_for};
use wfpmon_core::events::{
    EVENT_ENDED, EVENT_ESTABLISHED, EVENT_FLAG_NOT_TRACKED, EVENT_FLAG_UNLOADING, FlowEvent,
};
use wfpmon_core::flow::{Association, Direction, FlowRecord};

use crate::events;

use crate::kernel::pool::PoolBox;
use crate::kernel::time;
use crate::kernel::wfp::{self, FlowEstablished};
use crate::shared::SHARED;
use crate::trace;

/// ALE flow established: attach a [`FlowRecord`] to the new flow, owned by
/// the data callout (stream for TCP, datagram-data otherwise) of the same
/// family, which will count the flow's traffic; attribute it to its
/// process; publish an "established" event.
///
/// Allocates once per flow (non-paged), never per packet.
pub fn on_flow_established(flow: &FlowEstablished<'_>) {
    // Cheap early-out; `insert` below re-checks under the lock.
    if SHARED.flows.is_stopping() {
        return;
    }
    let target = data_callout_for(flow.tuple.family, flow.tuple.ip_protocol);
    let Some(target_id) = SHARED.callout_id(target) else {
        return; // data callout not registered (teardown in progress)
    };
    let association = Association {
        flow_id: flow.flow_handle,
        callout: target,
    };
    // With many flows, the insert below would stall on two cache misses in
    // a row: its bucket, then the record it links behind (linked long ago).
    // Start both loads early — the bucket now, the record once the bucket
    // is in — so that they overlap the process lookup and the allocation.
    SHARED.flows.prefetch_bucket(flow.flow_handle);
    let now = time::interrupt_time();
    let slot = SHARED
        .processes
        .acquire(flow.process_id, flow.process_path, now);
    SHARED.flows.prefetch_insert(association);
    let record = FlowRecord::new(
        association,
        flow.tuple,
        (flow.process_id.unwrap_or(0), slot),
        now,
    );
    let Some(record) = PoolBox::new(record) else {
        SHARED.processes.abandon(slot);
        SHARED.stats.allocation_failed();
        return;
    };
    let context = record.as_non_null();
    // Track before associating: from the moment the association exists the
    // engine may call our flow-delete callback, which expects the record in
    // the registry; and unload must be able to find it.
    // SAFETY: `context` is a live pool allocation that stays valid until the
    // flow-delete callback (or the failure path below) removes and frees it.
    if unsafe { SHARED.flows.insert(context) }.is_err() {
        // Unload has begun: associate nothing new (record freed on drop).
        SHARED.processes.abandon(slot);
        return;
    }
    // Published before the association, so that the flow's "ended" event
    // (the flow-delete callback may run as soon as the association exists)
    // always follows it in the ring.
    let key = SHARED.processes.key_of(slot);
    events::publish(FlowEvent::of(&record, EVENT_ESTABLISHED, 0, key, now));
    let layer = CALLOUTS[target].runtime_layer;
    // SAFETY: `record` stays alive: on success it is leaked below and freed
    // only by the flow-delete callback; on failure we still own it.
    let status =
        unsafe { wfp::associate_flow_context(flow.flow_handle, layer, target_id, context) };
    // Only STATUS_SUCCESS associates: STATUS_OBJECT_NAME_EXISTS (a context is
    // already there, e.g. the flow was classified again) passes NT_SUCCESS()
    // but leaves our context unowned.
    if status == STATUS_SUCCESS {
        SHARED.stats.flow_tracked();
        if trace::flows_enabled() {
            trace::flow_established(
                flow.flow_handle,
                u64::from(flow.process_id.unwrap_or(0)),
                &flow.tuple,
            );
        }
        // Ownership passes to the association; the flow-delete callback frees it.
        let _ = record.into_raw();
    } else {
        SHARED.stats.association_failed();
        // SAFETY: `context` was inserted above and never associated, so no
        // flow-delete callback can race with this removal.
        let removed = unsafe { SHARED.flows.remove(context, |_, _| ()) };
        // The "established" event is answered at once: not tracked after all.
        events::publish(FlowEvent::of(
            &record,
            EVENT_ENDED,
            EVENT_FLAG_NOT_TRACKED,
            key,
            now,
        ));
        SHARED.processes.abandon(slot);
        if removed.stopping && removed.callout_done {
            SHARED.flow_deleted.set();
        }
        // Counted, not logged: this runs at DISPATCH_LEVEL once per flow, and
        // DbgPrint there costs time and floods the debugger (the count is in
        // the statistics and in teardown's summary).
        drop(record);
    }
}

/// Stream or datagram data of a flow carrying our context: count it.
/// No allocation, no lock, no kernel call.
pub fn on_flow_data(record: &FlowRecord, direction: Direction, bytes: u64, packets: u64) {
    if SHARED.stats.counting() && (bytes | packets) != 0 {
        record.count(direction, bytes, packets);
    }
}

/// The engine deletes a flow that carries our context (the flow ended, or
/// unload removed the context): retire its counters (into the statistics
/// and its process's totals), publish an "ended" event with the final
/// counters, free it, and wake a teardown that may be waiting for the last
/// one.
///
/// # Safety
/// `context` must be a context this driver associated (a [`FlowRecord`]
/// from [`on_flow_established`]), delivered once by the engine.
pub unsafe fn on_flow_delete(context: NonNull<FlowRecord>) {
    let now = time::interrupt_time();
    // SAFETY: contract — a live record; only its immutable fields and
    // atomic counters are read (no classify runs for a flow being deleted,
    // so the counters are final).
    let record = unsafe { context.as_ref() };
    if trace::flows_enabled() {
        let age = now.saturating_sub(record.established_at);
        trace::flow_ended(record, &record.traffic(), age / 10_000);
    }
    let flags = if SHARED.flows.is_stopping() {
        EVENT_FLAG_UNLOADING
    } else {
        0
    };
    let key = SHARED.processes.key_of(record.process_slot);
    let ended = FlowEvent::of(record, EVENT_ENDED, flags, key, now);
    // SAFETY: contract — a live record we associated and still track.
    let removed = unsafe {
        SHARED.flows.remove(context, |r, bucket| {
            SHARED.stats.flow_deleted();
            SHARED
                .processes
                .release(r.process_slot, r.traffic(), bucket, now);
        })
    };
    // SAFETY: the engine delivers each context's deletion once; the record
    // is unlinked now, so no one else can reach it.
    drop(unsafe { PoolBox::from_raw(context) });
    events::publish(ended);
    // Teardown waits for a callout's flows to be gone, then for all flows:
    // wake it when this was the last flow of its callout (once per callout,
    // not per flow).
    if removed.stopping && removed.callout_done {
        SHARED.flow_deleted.set();
    }
}
