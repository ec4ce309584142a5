//! What `DriverEntry` builds, and the one teardown that undoes it.
//!
//! [`Driver`] owns the three resources of "Unloading a Callout Driver". Its
//! field order is the teardown order: Rust drops fields in declaration
//! order, after [`Driver`]'s own `Drop` has stopped new flow associations
//! and unregistered every callout — which it does not stop trying to do,
//! however long the engine takes. A
//! `DriverEntry` that fails part-way drops the partly built `Driver`, so
//! the rollback is the unload path, undoing exactly the completed steps.

use core::cell::UnsafeCell;

use wdk_sys::{DRIVER_OBJECT, NTSTATUS, STATUS_PENDING, STATUS_SUCCESS, STATUS_UNSUCCESSFUL};
use wfpmon_core::catalog::{CALLOUT_COUNT, CALLOUTS, CalloutIndex};
use wfpmon_core::flow::Traffic;
use wfpmon_core::unload::{
    Backoff, LogBackoff, Outcome, Step, Unregistration, unregistration_order,
};

use crate::control;
use crate::events;
use crate::kernel::device::Device;
use crate::kernel::driver::DriverObject;
use crate::kernel::wfp::{self, InjectionHandle};
use crate::kernel::{Status, log, time};
use crate::shared::SHARED;
use crate::trace;

/// Everything `DriverEntry` created. **Field order = teardown order.**
struct Driver {
    /// 1. Unregistered first (`FwpsCalloutUnregisterById0`, with the
    ///    `STATUS_DEVICE_BUSY` protocol), explicitly in `Drop`.
    callouts: Callouts,
    /// 2. Then the device object (`IoDeleteDevice`).
    device: Device,
    /// 3. Then the injection handle (`FwpsInjectionHandleDestroy0`).
    injection: Option<InjectionHandle>,
    /// 4. Last, the ETW provider (`EtwUnregister`): it reports everything
    ///    above, and must not outlive the image.
    _trace: trace::Registration,
}

impl Drop for Driver {
    fn drop(&mut self) {
        log!("teardown: stopping new flow associations");
        SHARED.flows.stop();
        // The per-flow failures classify counted instead of logging them.
        let totals = SHARED.stats.snapshot(0, Traffic::default());
        trace::teardown_begins(&totals);
        log!(
            "teardown: {} flows tracked, {} deleted, {} allocation failures, {} association failures",
            totals.flows_tracked,
            totals.flows_deleted,
            totals.allocation_failures,
            totals.association_failures
        );
        // Returns only once every callout is unregistered and none of its
        // flow records is left: however long the engine takes, the device
        // and the injection handle (the fields, dropped below) outlive every
        // callout id and every flow-delete callback owed.
        self.callouts.unregister_all();
        // The engine's classify barrier: a successful
        // FwpsCalloutUnregisterById0 does not return while a classify of the
        // callout is executing, and none starts after it (NETIO's
        // KfdDeleteCalloutEntry; ebpf-for-windows issue #1272). And it does
        // not succeed while a context of the callout exists, deferred
        // flow-delete callbacks included. So from here on no wfpmon code runs
        // on behalf of the engine, and every flow context has been handed
        // back through flowDeleteFn: the engine's documented answer is what
        // proves a processor has left the image (no counter of ours can:
        // code runs after any decrement). Should an engine let a callout go
        // with deletions still owed, the protocol above waited for every
        // record of it, plus a grace for the last callback's return
        // (`wfpmon_core::unload`). And the driver's own invariant, whatever
        // the engine answered: the device goes, and Unload returns, only
        // once the registry is empty (a record leaves it only in
        // flowDeleteFn).
        wait_until_no_record_is_tracked();
        // No event can be published any more: end the event reads still
        // pending (a handle open across unload), before the device goes.
        let cancelled = events::shutdown();
        if cancelled != 0 {
            log!("teardown: {cancelled} pending event reads cancelled");
        }
        log!("teardown: deleting device, destroying injection handle");
        // Fields drop now: device, then injection handle.
    }
}

/// The callouts registered so far, by catalog index.
struct Callouts {
    ids: [Option<u32>; CALLOUT_COUNT],
}

impl Callouts {
    const fn none() -> Self {
        Self {
            ids: [None; CALLOUT_COUNT],
        }
    }

    /// Registers the catalog's callouts in order, publishing each id for the
    /// classify functions as soon as it exists. Stops at the first failure;
    /// what was registered stays recorded for teardown.
    fn register_all(&mut self, device: &Device) -> Result<(), NTSTATUS> {
        for (index, spec) in CALLOUTS.iter().enumerate() {
            let id = wfp::register_callout(device, spec)?;
            self.ids[index] = Some(id);
            SHARED.set_callout_id(index, Some(id));
        }
        Ok(())
    }

    /// Unregisters every registered callout, flow-established ones first.
    /// Does not return before each of them is unregistered.
    fn unregister_all(&mut self) {
        for index in unregistration_order() {
            if let Some(id) = self.ids[index] {
                unregister(index, id);
                self.ids[index] = None;
                SHARED.set_callout_id(index, None);
            }
        }
    }
}

/// Runs the unregistration protocol for one callout until the engine lets
/// it go (`PASSIVE_LEVEL`). Never gives up: see [`wfpmon_core::unload`].
///
/// Logging stays readable however long that takes: the first answer, each
/// removal pass that removed something, a "still registered" report on the
/// [`LogBackoff`] schedule (1 s, then intervals doubling to one a minute),
/// and the end.
fn unregister(index: CalloutIndex, id: u32) {
    let name = CALLOUTS[index].name;
    let mut protocol = Unregistration::new();
    let started = time::interrupt_time();
    let mut report = LogBackoff::new();
    // Whether the next removal pass asks every tracked flow (a fresh pass)
    // or only the flows not asked yet (continuing the last one). See
    // `FlowRegistry::current_removal_pass`.
    let mut fresh_pass = true;
    loop {
        match protocol.step() {
            Step::Unregister => {
                let status = wfp::unregister_callout(id);
                // Read after the call: records the engine may still owe a
                // flowDeleteFn for, whatever it answered.
                let left = SHARED.flows.count_for(index);
                trace::unregister_attempt(name, id, protocol.attempts() + 1, status);
                if protocol.attempts() == 0 {
                    log!(
                        "FwpsCalloutUnregisterById0({name}, id {id}) -> {}",
                        Status(status)
                    );
                }
                protocol.on_unregister(status, left);
                if protocol.released() {
                    trace::released_with_records(
                        name,
                        id,
                        status,
                        u32::try_from(left).unwrap_or(u32::MAX),
                    );
                    log!(
                        "{name} (id {id}): the engine answered {} with {left} flows still tracked; waiting for their flow-delete callbacks before going on",
                        Status(status)
                    );
                }
            }
            Step::RemoveContexts => {
                let pass = remove_flow_contexts(index, id, fresh_pass);
                // "An error occurred" leaves the context where it was: ask
                // every flow again next time.
                fresh_pass = pass.other > 0;
                let left = SHARED.flows.count_for(index);
                if pass.removed() > 0 || pass.other > 0 {
                    trace::removal_pass(name, &pass.counts(left));
                    log!("{name}: removal pass: {pass}; {left} flows still tracked");
                }
                protocol.on_contexts_removed(pass.removed(), left);
            }
            Step::Wait { timeout_100ns } => {
                let elapsed = time::interrupt_time().saturating_sub(started);
                if report.due(elapsed) {
                    // A safety net on the report schedule (rare): ask every
                    // flow still tracked again, whatever it answered before.
                    fresh_pass = true;
                    trace::still_registered(
                        name,
                        elapsed / MILLISECONDS,
                        protocol.attempts(),
                        protocol.last_status().unwrap_or_default(),
                        u32::try_from(SHARED.flows.count_for(index)).unwrap_or(u32::MAX),
                    );
                    let state = if protocol.released() {
                        "released by the engine, flow-delete callbacks still owed"
                    } else {
                        "still registered"
                    };
                    log!(
                        "{name} (id {id}) {state} after {} ms: {} attempts, last status {}, {} flows still tracked; waiting",
                        elapsed / MILLISECONDS,
                        protocol.attempts(),
                        Status(protocol.last_status().unwrap_or_default()),
                        SHARED.flows.count_for(index)
                    );
                }
                SHARED.flow_deleted.wait(timeout_100ns);
                protocol.on_waited(SHARED.flows.count_for(index));
            }
            Step::Grace { timeout_100ns } => {
                wait_full(timeout_100ns);
                protocol.on_waited(SHARED.flows.count_for(index));
            }
            Step::Finished(outcome) => {
                let elapsed = time::interrupt_time().saturating_sub(started);
                trace::callout_unregistered(
                    name,
                    protocol.attempts(),
                    outcome == Outcome::AlreadyGone,
                    elapsed / MILLISECONDS,
                );
                log!("{name}: {outcome:?} after {} ms", elapsed / MILLISECONDS);
                return;
            }
        }
    }
}

/// 100 ns units per millisecond, for log lines.
const MILLISECONDS: u64 = 10_000;

/// Lets `timeout_100ns` pass in full (`PASSIVE_LEVEL`): the teardown's
/// event may be signalled meanwhile (a flow-delete callback's last act), and
/// each early wake-up only shortens the next wait.
fn wait_full(timeout_100ns: i64) {
    let deadline = time::interrupt_time().saturating_add(timeout_100ns.unsigned_abs());
    loop {
        let now = time::interrupt_time();
        if now >= deadline {
            return;
        }
        SHARED
            .flow_deleted
            .wait(i64::try_from(deadline - now).unwrap_or(i64::MAX));
    }
}

/// Waits (`PASSIVE_LEVEL`) until the registry tracks no flow record at all,
/// with the unregistration protocol's back-off and report schedule — no
/// bound. Every callout's protocol already ended only when none of its
/// records was left, so this returns at once on every path the engine's
/// rules allow; it is the driver's own invariant, checked where it matters:
/// the device is deleted, and Unload returns, only with nothing owed.
fn wait_until_no_record_is_tracked() {
    let started = time::interrupt_time();
    let mut report = LogBackoff::new();
    let mut backoff = Backoff::new();
    let mut before = SHARED.flows.len();
    while before != 0 {
        let elapsed = time::interrupt_time().saturating_sub(started);
        if report.due(elapsed) {
            trace::records_left(u32::try_from(before).unwrap_or(u32::MAX));
            log!(
                "teardown: {before} flow records still tracked {} ms after every callout was let go; waiting for their flow-delete callbacks",
                elapsed / MILLISECONDS
            );
        }
        SHARED.flow_deleted.wait(backoff.next_100ns());
        let left = SHARED.flows.len();
        if left < before {
            backoff.reset();
        }
        before = left;
    }
}

/// What one removal pass's `FwpsFlowRemoveContext0` calls answered.
#[derive(Default)]
struct RemovalPass {
    /// `STATUS_SUCCESS`: the flow-delete callback already ran.
    removed_now: usize,
    /// `STATUS_PENDING`: a classify of the flow is in progress; the
    /// callback runs when it returns.
    pending: usize,
    /// `STATUS_UNSUCCESSFUL`: no context (asked before, deletion pending).
    no_context: usize,
    /// Anything else, and the first such status.
    other: usize,
    first_other: NTSTATUS,
}

impl RemovalPass {
    /// Contexts this pass took away from the engine.
    const fn removed(&self) -> usize {
        self.removed_now + self.pending
    }

    /// The pass as the `RemovalPass` event reports it.
    fn counts(&self, still_tracked: usize) -> trace::RemovalCounts {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        trace::RemovalCounts {
            removed: n(self.removed_now),
            pending: n(self.pending),
            no_context: n(self.no_context),
            other: n(self.other),
            first_other: self.first_other,
            still_tracked: n(still_tracked),
        }
    }
}

impl core::fmt::Display for RemovalPass {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} removed, {} pending, {} without context",
            self.removed_now, self.pending, self.no_context
        )?;
        if self.other > 0 {
            write!(
                f,
                ", {} other (first: {})",
                self.other,
                Status(self.first_other)
            )?;
        }
        Ok(())
    }
}

/// `FwpsFlowRemoveContext0` for every flow tracked for callout `index`
/// (`fresh`), or for those not asked in the last pass, once each, summed up
/// (never a log line per flow: thousands of flows may be open).
fn remove_flow_contexts(index: CalloutIndex, id: u32, fresh: bool) -> RemovalPass {
    let layer = CALLOUTS[index].runtime_layer;
    let mut token = if fresh {
        SHARED.flows.begin_removal_pass()
    } else {
        SHARED.flows.current_removal_pass()
    };
    let mut pass = RemovalPass::default();
    // The registry hands out a copy of each association: the record itself
    // may be freed by the flow-delete callback inside the removal call.
    while let Some(flow) = SHARED.flows.next_for_removal(&mut token, index) {
        match wfp::remove_flow_context(flow.flow_id, layer, id) {
            STATUS_SUCCESS => pass.removed_now += 1,
            STATUS_PENDING => pass.pending += 1,
            STATUS_UNSUCCESSFUL => pass.no_context += 1,
            other => {
                if pass.other == 0 {
                    pass.first_other = other;
                }
                pass.other += 1;
            }
        }
    }
    pass
}

/// The running driver, between `DriverEntry` and Unload. Touched only by
/// those two, which the I/O manager never runs concurrently.
struct Slot(UnsafeCell<Option<Driver>>);

// SAFETY: accessed only from DriverEntry and the unload routine, which are
// serialised by the I/O manager (PASSIVE_LEVEL, one at a time).
unsafe impl Sync for Slot {}

static RUNNING: Slot = Slot(UnsafeCell::new(None));

/// `DriverEntry`: device, callouts, injection handle, unload routine — in
/// that order. On failure everything already built is torn down (by the
/// same code as Unload) and the failing status is returned.
pub fn start(driver_object: &mut DriverObject) -> NTSTATUS {
    // First, so that every step below is reported; unregistered last, by
    // whichever teardown runs (see `Driver`).
    let trace = trace::Registration::register();
    trace::driver_entry();
    log!("DriverEntry");
    SHARED.flow_deleted.initialize();
    // The queue of pending event reads, before the device can receive one.
    let status = events::open();
    if status != STATUS_SUCCESS {
        return failed("IoCsqInitialize", status);
    }

    let device = match Device::create(driver_object) {
        Ok(device) => device,
        // `trace` is dropped after this report, unregistering the provider.
        Err((call, status)) => return failed(call, status),
    };
    let mut driver = Driver {
        callouts: Callouts::none(),
        device,
        injection: None,
        _trace: trace,
    };

    if let Err(status) = driver.callouts.register_all(&driver.device) {
        let status = failed("FwpsCalloutRegister1", status);
        drop(driver);
        return status;
    }

    match InjectionHandle::create() {
        Ok(handle) => driver.injection = Some(handle),
        Err(status) => {
            let status = failed("FwpsInjectionHandleCreate0", status);
            drop(driver);
            return status;
        }
    }

    control::install(driver_object);
    driver_object.set_unload(Some(unload));
    // SAFETY: DriverEntry is not concurrent with itself or with unload
    // (which cannot run before DriverUnload was set just above).
    unsafe { *RUNNING.0.get() = Some(driver) };
    trace::driver_entry_done(None, STATUS_SUCCESS);
    log!("DriverEntry -> STATUS_SUCCESS");
    STATUS_SUCCESS
}

/// Reports a failed `DriverEntry` step; the caller then undoes every earlier
/// step (the teardown reports each) and returns the status.
fn failed(call: &'static str, status: NTSTATUS) -> NTSTATUS {
    trace::driver_entry_done(Some(call), status);
    log!(
        "DriverEntry failed at {call}: {}; undoing every earlier step",
        Status(status)
    );
    status
}

/// The unload routine: the teardown of [`Driver`]. `PASSIVE_LEVEL`.
unsafe extern "C" fn unload(_driver: *mut DRIVER_OBJECT) {
    trace::unload();
    log!("Unload");
    // SAFETY: serialised with DriverEntry by the I/O manager (see `Slot`).
    let driver = unsafe { (*RUNNING.0.get()).take() };
    drop(driver);
    log!("Unload complete");
}
