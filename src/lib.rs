//! # wfpmon — a WDM Windows Filtering Platform callout driver
//!
//! `DriverEntry` creates the control device `\Device\WfpMon`, registers
//! wfpmon's callouts with the filter engine and opens a packet-injection
//! handle. The callouts track every flow (a context per flow, associated at
//! the ALE flow-established layer) and count its traffic (stream and
//! datagram-data layers). Unload undoes all of it in the order of
//! "Unloading a Callout Driver".
//!
//! Layout:
//! - [`kernel`]: the only place that calls the kernel or the filter engine —
//!   thin safe wrappers over `wdk-sys` and `fwpsk-sys`, each `unsafe` block
//!   with its reason;
//! - [`lifecycle`]: what `DriverEntry` builds and the single teardown that
//!   both a failed `DriverEntry` and Unload run;
//! - [`callouts`]: the classify and flow-delete logic, safe code over the
//!   decoded arguments;
//! - [`control`]: the IRP dispatch of the control device;
//! - [`shared`]: state the callouts and the lifecycle share;
//! - [`trace`]: the `TraceLogging` (ETW) provider `wfpmon`.
//!
//! Everything that does not need the kernel (callout catalog, flow registry,
//! unregistration protocol, control protocol) is in the `wfpmon-core` crate
//! and tested on the host.

#![cfg_attr(not(test), no_std)]

#[cfg(not(test))]
extern crate wdk_panic;

#[cfg(not(test))]
use wdk_alloc::WdkAllocator;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: WdkAllocator = WdkAllocator;

mod callouts;
mod control;
mod events;
mod kernel;
mod lifecycle;
mod shared;
mod trace;

use wdk_sys::{DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING};

/// The driver's entry point: builds everything or nothing (see
/// [`lifecycle::start`]). Runs at `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager only, with a valid driver object.
// SAFETY: "DriverEntry" is the entry-point name the kernel loader (and the
// /ENTRY linker option wdk-build passes) expects; nothing else in this image
// exports that name.
#[cfg_attr(not(test), unsafe(export_name = "DriverEntry"))]
pub unsafe extern "system" fn driver_entry(
    driver: *mut DRIVER_OBJECT,
    _registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid, exclusively ours driver object
    // for the duration of DriverEntry.
    let driver = unsafe { kernel::driver::DriverObject::from_raw(driver) };
    driver.map_or(wdk_sys::STATUS_INVALID_PARAMETER, |mut driver| {
        lifecycle::start(&mut driver)
    })
}
