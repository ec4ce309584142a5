//! The kernel-mode WFP functions a flow-tracking callout driver calls
//! (fwpsk.h), exported by `fwpkclnt.sys`.
//!
//! Sources: the reference pages `FwpsCalloutRegister1`,
//! `FwpsCalloutUnregisterById0`, `FwpsFlowAssociateContext0`,
//! `FwpsFlowRemoveContext0`, `FwpsInjectionHandleCreate0`,
//! `FwpsInjectionHandleDestroy0` and `FwpsQueryPacketInjectionState0`
//! (prototypes, IRQL requirements from their `req.irql` and SAL
//! annotations, return values). All are `NTAPI` (`extern "system"`).
//!
//! Linking: on Windows targets the block is linked with
//! `kind = "raw-dylib"` against `fwpkclnt.sys`, so rustc writes the import
//! entries itself and no `fwpkclnt.lib` import library is needed. The
//! `+verbatim` modifier keeps the name as written; without it rustc would
//! append `.dll` and import from `fwpkclnt.sys.dll`. On other targets the
//! declarations exist but are not linked, so the crate builds (and its tests
//! run) anywhere as long as nothing calls them.
//!
//! `deviceObject` (`DEVICE_OBJECT*`) and `netBufferList`
//! (`NET_BUFFER_LIST*`) are `*mut c_void` / `*const c_void` so that this
//! crate does not depend on `wdk-sys`; cast the `wdk-sys` pointers with
//! `.cast()`.

use core::ffi::c_void;

use crate::callout::FWPS_CALLOUT1;
use crate::injection::FWPS_PACKET_INJECTION_STATE;
use crate::status::NTSTATUS;
use crate::types::{ADDRESS_FAMILY, HANDLE, UINT16, UINT32, UINT64};

#[cfg_attr(
    target_os = "windows",
    link(name = "fwpkclnt.sys", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// `FwpsCalloutRegister1` (fwpsk.h, Windows 7 and later): registers a
    /// callout with the filter engine. Allowed before BFE is running.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// Returns `STATUS_SUCCESS`, `STATUS_FWP_ALREADY_EXISTS` (a callout with
    /// the same `calloutKey` is registered) or another error.
    ///
    /// # Safety
    ///
    /// `deviceObject` must be a `DEVICE_OBJECT*` the driver created and
    /// keeps alive until every callout registered with it is unregistered.
    /// `callout` must point to a valid [`FWPS_CALLOUT1`] whose function
    /// pointers stay callable until the callout is unregistered (the driver
    /// must not unload before). `calloutId` is null or writable.
    pub unsafe fn FwpsCalloutRegister1(
        deviceObject: *mut c_void,
        callout: *const FWPS_CALLOUT1,
        calloutId: *mut UINT32,
    ) -> NTSTATUS;

    /// `FwpsCalloutUnregisterById0` (fwpsk.h): unregisters a callout.
    ///
    /// IRQL: `PASSIVE_LEVEL`. (Not documented, but reported by a driver
    /// author: called at `APC_LEVEL`, e.g. under a fast mutex, it returned
    /// `STATUS_NOT_SUPPORTED`.)
    ///
    /// Returns `STATUS_SUCCESS`; `STATUS_DEVICE_BUSY` (a warning, so not
    /// `NT_SUCCESS`) while flows still carry a context of the callout —
    /// remove them with [`FwpsFlowRemoveContext0`] and call again;
    /// `STATUS_FWP_CALLOUT_NOT_FOUND` (no such callout); `STATUS_FWP_IN_USE`
    /// (being (un)registered by another thread); or another error.
    ///
    /// # Safety
    ///
    /// Must be called at `PASSIVE_LEVEL`. The callout's functions may still
    /// be running or called until this returns `STATUS_SUCCESS`.
    pub unsafe fn FwpsCalloutUnregisterById0(calloutId: UINT32) -> NTSTATUS;

    /// `FwpsFlowAssociateContext0` (fwpsk.h): associates `flowContext` with
    /// the flow `flowId` (the `flowHandle` metadata) for the callout
    /// `calloutId` at the layer `layerId`. One context per (flow, callout).
    ///
    /// IRQL: `<= DISPATCH_LEVEL`.
    ///
    /// Returns `STATUS_SUCCESS`; `STATUS_INVALID_PARAMETER` (zero context,
    /// or the callout has no `flowDeleteFn`); `STATUS_OBJECT_NAME_EXISTS`
    /// (a context is already associated — informational, so `NT_SUCCESS`
    /// is true although nothing was associated: remove the old context
    /// first); or another error.
    ///
    /// # Safety
    ///
    /// `flowContext` must stay valid until the callout's `flowDeleteFn`
    /// receives it; the engine passes it to `classifyFn` and `flowDeleteFn`
    /// from any processor.
    pub unsafe fn FwpsFlowAssociateContext0(
        flowId: UINT64,
        layerId: UINT16,
        calloutId: UINT32,
        flowContext: UINT64,
    ) -> NTSTATUS;

    /// `FwpsFlowRemoveContext0` (fwpsk.h): removes the context of the
    /// callout from the flow.
    ///
    /// IRQL: `<= DISPATCH_LEVEL`.
    ///
    /// Returns `STATUS_SUCCESS` (`flowDeleteFn` was called synchronously,
    /// before the return); `STATUS_PENDING` (a classify is in progress;
    /// `flowDeleteFn` will be called later); `STATUS_UNSUCCESSFUL` (no
    /// context); or another error.
    ///
    /// # Safety
    ///
    /// The context's owner must be ready for `flowDeleteFn` to run during
    /// or after the call, on any processor.
    pub unsafe fn FwpsFlowRemoveContext0(
        flowId: UINT64,
        layerId: UINT16,
        calloutId: UINT32,
    ) -> NTSTATUS;

    /// `FwpsInjectionHandleCreate0` (fwpsk.h): creates an injection handle,
    /// also used by [`FwpsQueryPacketInjectionState0`]. `addressFamily` is
    /// `AF_INET`, `AF_INET6` or `AF_UNSPEC` (transport, stream and forward
    /// injection); `flags` is a combination of `FWPS_INJECTION_TYPE_*`, 0
    /// meaning transport, stream and forward.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// Returns `STATUS_SUCCESS`, `STATUS_FWP_TCPIP_NOT_READY` (retry later)
    /// or another error.
    ///
    /// # Safety
    ///
    /// `injectionHandle` must be writable. The handle must be destroyed
    /// with [`FwpsInjectionHandleDestroy0`] before the driver unloads.
    pub unsafe fn FwpsInjectionHandleCreate0(
        addressFamily: ADDRESS_FAMILY,
        flags: UINT32,
        injectionHandle: *mut HANDLE,
    ) -> NTSTATUS;

    /// `FwpsInjectionHandleDestroy0` (fwpsk.h): destroys an injection
    /// handle; waits for its pending injections to complete.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// Returns `STATUS_SUCCESS` or an error.
    ///
    /// # Safety
    ///
    /// `injectionHandle` must come from [`FwpsInjectionHandleCreate0`] and
    /// not be used afterwards.
    pub unsafe fn FwpsInjectionHandleDestroy0(injectionHandle: HANDLE) -> NTSTATUS;

    /// `FwpsQueryPacketInjectionState0` (fwpsk.h): whether `netBufferList`
    /// was injected, and by whom. `injectionContext` (optional) receives
    /// the context given at injection for the `*_BY_SELF` states.
    ///
    /// IRQL: `<= DISPATCH_LEVEL`.
    ///
    /// # Safety
    ///
    /// `injectionHandle` must be a live handle from
    /// [`FwpsInjectionHandleCreate0`]; `netBufferList` a live
    /// `NET_BUFFER_LIST*`; `injectionContext` null or writable.
    pub unsafe fn FwpsQueryPacketInjectionState0(
        injectionHandle: HANDLE,
        netBufferList: *const c_void,
        injectionContext: *mut HANDLE,
    ) -> FWPS_PACKET_INJECTION_STATE;
}
