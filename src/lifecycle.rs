//! What `DriverEntry` builds, and the one teardown that undoes it.
//!
//! [`Driver`] owns the three resources of "Unloading a Callout Driver". Its
//! field order is the teardown order: Rust drops fields in declaration
//! order, after [`Driver`]'s own `Drop` has stopped new flow associations,
//! unregistered every callout and waited for the last flow context. A
//! `DriverEntry` that fails part-way drops the partly built `Driver`, so
//! the rollback is the unload path, undoing exactly the completed steps.

use core::cell::UnsafeCell;

use wdk_sys::{DRIVER_OBJECT, NTSTATUS, STATUS_PENDING, STATUS_SUCCESS};
use wfpmon_core::catalog::{CALLOUT_COUNT, CALLOUTS, CalloutIndex};
use wfpmon_core::unload::{
    FLOW_DELETE_WAIT_100NS, MAX_FLOW_DELETE_WAITS, Outcome, Step, Unregistration,
    unregistration_order,
};

use crate::control;
use crate::kernel::device::Device;
use crate::kernel::driver::DriverObject;
use crate::kernel::wfp::{self, InjectionHandle};
use crate::kernel::{Status, log};
use crate::shared::SHARED;

/// Everything `DriverEntry` created. **Field order = teardown order.**
struct Driver {
    /// 1. Unregistered first (`FwpsCalloutUnregisterById0`, with the
    ///    `STATUS_DEVICE_BUSY` protocol), explicitly in `Drop`.
    callouts: Callouts,
    /// 2. Then the device object (`IoDeleteDevice`).
    device: Device,
    /// 3. Then the injection handle (`FwpsInjectionHandleDestroy0`).
    injection: Option<InjectionHandle>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        log!("teardown: stopping new flow associations");
        SHARED.flows.stop();
        self.callouts.unregister_all();
        wait_for_flow_contexts();
        // Classify can no longer run; withdraw the handle before it is
        // destroyed (field drop below) all the same.
        SHARED.set_injection_handle(core::ptr::null_mut());
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
    fn unregister_all(&mut self) {
        for index in unregistration_order() {
            if let Some(id) = self.ids[index] {
                let outcome = unregister(index, id);
                if outcome.is_unregistered() {
                    self.ids[index] = None;
                    SHARED.set_callout_id(index, None);
                } else {
                    log!(
                        "ERROR: {} (id {id}) is still registered: {outcome:?}",
                        CALLOUTS[index].name
                    );
                }
            }
        }
    }
}

/// Runs the unregistration protocol for one callout (`PASSIVE_LEVEL`).
fn unregister(index: CalloutIndex, id: u32) -> Outcome {
    let name = CALLOUTS[index].name;
    let mut protocol = Unregistration::default();
    // Every status the engine answers is logged, but a run of identical
    // answers only every LOG_EVERY-th time: a callout that stays busy for
    // seconds would otherwise flood the debugger.
    let mut last_status = None;
    loop {
        let verbose = protocol.attempts() < 3 || protocol.attempts() % LOG_EVERY == 0;
        match protocol.step() {
            Step::Unregister => {
                let status = wfp::unregister_callout(id);
                if verbose || last_status != Some(status) {
                    let attempt = protocol.attempts() + 1;
                    log!(
                        "FwpsCalloutUnregisterById0({name}, id {id}) -> {} (attempt {attempt})",
                        Status(status)
                    );
                }
                last_status = Some(status);
                protocol.on_unregister(status);
            }
            Step::RemoveContexts => {
                let removed = remove_flow_contexts(index, id);
                let left = SHARED.flows.count_for(index);
                if verbose || removed > 0 {
                    log!("{name}: asked {removed} flow contexts to go, {left} still tracked");
                }
                protocol.on_contexts_removed(removed, left);
            }
            Step::Wait => {
                let wait = SHARED.flow_deleted.wait(FLOW_DELETE_WAIT_100NS);
                if verbose {
                    log!("{name}: waited before retrying: {wait:?}");
                }
                protocol.on_waited();
            }
            Step::Finished(outcome) => {
                log!("{name}: {outcome:?}");
                return outcome;
            }
        }
    }
}

/// How often a repeated state of the unregistration loop is logged.
const LOG_EVERY: u32 = 10;

/// `FwpsFlowRemoveContext0` for every flow tracked for callout `index`,
/// once each. Returns how many were asked.
fn remove_flow_contexts(index: CalloutIndex, id: u32) -> usize {
    let layer = CALLOUTS[index].runtime_layer;
    let pass = SHARED.flows.begin_removal_pass();
    let mut asked = 0;
    // The registry hands out a copy of each association: the record itself
    // may be freed by the flow-delete callback inside the removal call.
    let mut pending = 0;
    while let Some(flow) = SHARED.flows.next_for_removal(pass, index) {
        let status = wfp::remove_flow_context(flow.flow_id, layer, id);
        asked += 1;
        // SUCCESS (the common case) is summed up by the caller; anything
        // else is worth a line of its own. Per-flow lines would flood the
        // debugger when thousands of flows are open.
        match status {
            STATUS_SUCCESS => {}
            STATUS_PENDING => pending += 1,
            other => log!(
                "FwpsFlowRemoveContext0(flow {:#x}, layer {layer}, id {id}) -> {}",
                flow.flow_id,
                Status(other)
            ),
        }
    }
    if pending > 0 {
        log!(
            "{}: {pending} flow deletions pending (classify in progress)",
            CALLOUTS[index].name
        );
    }
    asked
}

/// Waits, bounded, until no flow context of ours is left (flow-delete
/// callbacks that `STATUS_PENDING` promised) and no classify is still
/// running driver code (one that was already past its entry when the
/// callouts went away).
fn wait_for_flow_contexts() {
    let mut waits = 0;
    loop {
        let left = SHARED.flows.len();
        let running = SHARED.classifies_in_progress();
        if left == 0 && running == 0 {
            log!("teardown: no flow context left, no classify in progress");
            return;
        }
        if waits == MAX_FLOW_DELETE_WAITS {
            log!(
                "ERROR: teardown: {left} flow contexts, {running} classifies outstanding after {waits} waits"
            );
            return;
        }
        let wait = SHARED.flow_deleted.wait(FLOW_DELETE_WAIT_100NS);
        waits += 1;
        if waits % LOG_EVERY == 1 {
            log!(
                "teardown: {left} flow contexts, {running} classifies outstanding, waited: {wait:?}"
            );
        }
    }
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
    log!("DriverEntry");
    SHARED.flow_deleted.initialize();

    let device = match Device::create(driver_object) {
        Ok(device) => device,
        Err(status) => return failed("IoCreateDevice", status),
    };
    let mut driver = Driver {
        callouts: Callouts::none(),
        device,
        injection: None,
    };

    if let Err(status) = driver.callouts.register_all(&driver.device) {
        drop(driver);
        return failed("FwpsCalloutRegister1", status);
    }

    match InjectionHandle::create() {
        Ok(handle) => {
            SHARED.set_injection_handle(handle.as_raw());
            driver.injection = Some(handle);
        }
        Err(status) => {
            drop(driver);
            return failed("FwpsInjectionHandleCreate0", status);
        }
    }

    control::install(driver_object);
    driver_object.set_unload(Some(unload));
    // SAFETY: DriverEntry is not concurrent with itself or with unload
    // (which cannot run before DriverUnload was set just above).
    unsafe { *RUNNING.0.get() = Some(driver) };
    log!("DriverEntry -> STATUS_SUCCESS");
    STATUS_SUCCESS
}

fn failed(step: &str, status: NTSTATUS) -> NTSTATUS {
    log!(
        "DriverEntry failed at {step}: {}; every earlier step was undone",
        Status(status)
    );
    status
}

/// The unload routine: the teardown of [`Driver`]. `PASSIVE_LEVEL`.
unsafe extern "C" fn unload(_driver: *mut DRIVER_OBJECT) {
    log!("Unload");
    // SAFETY: serialised with DriverEntry by the I/O manager (see `Slot`).
    let driver = unsafe { (*RUNNING.0.get()).take() };
    drop(driver);
    log!("Unload complete");
}
