//! Callout registration: the callback types, `FWPS_CALLOUT1` and its flags
//! (fwpsk.h), and `FWPS_CALLOUT_NOTIFY_TYPE` (fwpstypes.h).
//!
//! Sources: the reference pages `FWPS_CALLOUT_CLASSIFY_FN1`,
//! `FWPS_CALLOUT_NOTIFY_FN1`, `FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0`,
//! `FWPS_CALLOUT1` (fwpsk.h) and the `notifyFn` pages for the notify types;
//! the `FWP_CALLOUT_FLAG_*` values beyond the five the `FWPS_CALLOUT1` page
//! lists are from the `windows-sys` 0.61 metadata (fwpsu.h).
//!
//! All three callbacks are `NTAPI`, i.e. `extern "system"`. The filter
//! engine calls them at `IRQL <= DISPATCH_LEVEL`, possibly on several
//! processors at once: they must not block, wait, or touch paged memory.

use core::ffi::c_void;

use crate::classify::{FWPS_CLASSIFY_OUT0, FWPS_FILTER1};
use crate::metadata::{FWPS_INCOMING_METADATA_VALUES0, FWPS_INCOMING_VALUES0};
use crate::status::NTSTATUS;
use crate::types::{GUID, UINT16, UINT32, UINT64};

/// `FWPS_CALLOUT_NOTIFY_TYPE` (fwpstypes.h): the event of a `notifyFn`.
pub type FWPS_CALLOUT_NOTIFY_TYPE = i32;
/// `FWPS_CALLOUT_NOTIFY_ADD_FILTER`: a filter that invokes the callout is
/// being added.
pub const FWPS_CALLOUT_NOTIFY_ADD_FILTER: FWPS_CALLOUT_NOTIFY_TYPE = 0;
/// `FWPS_CALLOUT_NOTIFY_DELETE_FILTER`: such a filter is being deleted.
pub const FWPS_CALLOUT_NOTIFY_DELETE_FILTER: FWPS_CALLOUT_NOTIFY_TYPE = 1;
/// `FWPS_CALLOUT_NOTIFY_ADD_FILTER_POST_COMMIT`: a filter added inside a
/// transaction, after the commit.
///
/// Needs `FWP_CALLOUT_FLAG_ENABLE_COMMIT_ADD_NOTIFY`. Not on the `notifyFn`
/// pages; from the `fwpstypes.h` enumeration.
pub const FWPS_CALLOUT_NOTIFY_ADD_FILTER_POST_COMMIT: FWPS_CALLOUT_NOTIFY_TYPE = 2;

/// `FWPS_CALLOUT_CLASSIFY_FN1` (fwpsk.h): `classifyFn1`, called whenever
/// there is data for the callout.
///
/// Parameters, in order: `inFixedValues`, `inMetaValues`, `layerData` (an
/// [`crate::FWPS_STREAM_CALLOUT_IO_PACKET0`] at the stream layers, a
/// `NET_BUFFER_LIST` at the others, possibly null), `classifyContext`,
/// `filter`, `flowContext` (0 when the flow has no context), `classifyOut`.
/// Called at `IRQL <= DISPATCH_LEVEL`.
pub type FWPS_CALLOUT_CLASSIFY_FN1 = Option<
    unsafe extern "system" fn(
        inFixedValues: *const FWPS_INCOMING_VALUES0,
        inMetaValues: *const FWPS_INCOMING_METADATA_VALUES0,
        layerData: *mut c_void,
        classifyContext: *const c_void,
        filter: *const FWPS_FILTER1,
        flowContext: UINT64,
        classifyOut: *mut FWPS_CLASSIFY_OUT0,
    ),
>;

/// `FWPS_CALLOUT_NOTIFY_FN1` (fwpsk.h): `notifyFn1`, told when a filter that
/// invokes the callout is added or deleted.
///
/// Return `STATUS_SUCCESS` to
/// accept (and for unknown notify types); an error on
/// `FWPS_CALLOUT_NOTIFY_ADD_FILTER` rejects the filter. `filterKey` is null
/// for `FWPS_CALLOUT_NOTIFY_DELETE_FILTER`. Called at
/// `IRQL <= DISPATCH_LEVEL`.
pub type FWPS_CALLOUT_NOTIFY_FN1 = Option<
    unsafe extern "system" fn(
        notifyType: FWPS_CALLOUT_NOTIFY_TYPE,
        filterKey: *const GUID,
        filter: *mut FWPS_FILTER1,
    ) -> NTSTATUS,
>;

/// `FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0` (fwpsk.h): `flowDeleteFn`, called
/// when a flow that carries a context of this callout ends, or when
/// `FwpsFlowRemoveContext0` removes the context.
///
/// The engine removes the
/// context itself; the callout frees its own state. Called at
/// `IRQL <= DISPATCH_LEVEL`.
pub type FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0 =
    Option<unsafe extern "system" fn(layerId: UINT16, calloutId: UINT32, flowContext: UINT64)>;

/// `FWPS_CALLOUT1` (fwpsk.h, Windows 7 and later): what
/// [`crate::FwpsCalloutRegister1`] registers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_CALLOUT1 {
    /// The callout's key (the `calloutKey` of its `FWPM_CALLOUT0`).
    pub calloutKey: GUID,
    /// `FWP_CALLOUT_FLAG_*`.
    pub flags: UINT32,
    /// Required.
    pub classifyFn: FWPS_CALLOUT_CLASSIFY_FN1,
    /// Required.
    pub notifyFn: FWPS_CALLOUT_NOTIFY_FN1,
    /// Required if the driver associates flow contexts with this callout,
    /// otherwise `None`.
    pub flowDeleteFn: FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0,
}

// calloutKey (16, 4-aligned) @0, flags @16 + 4 padding, three function
// pointers (an `Option<fn>` is a nullable pointer) @24, @32, @40 => 48.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_CALLOUT_CLASSIFY_FN1>() == 8);
    assert!(size_of::<FWPS_CALLOUT_NOTIFY_FN1>() == 8);
    assert!(size_of::<FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0>() == 8);
    assert!(size_of::<FWPS_CALLOUT1>() == 48);
    assert!(align_of::<FWPS_CALLOUT1>() == 8);
    assert!(offset_of!(FWPS_CALLOUT1, calloutKey) == 0);
    assert!(offset_of!(FWPS_CALLOUT1, flags) == 16);
    assert!(offset_of!(FWPS_CALLOUT1, classifyFn) == 24);
    assert!(offset_of!(FWPS_CALLOUT1, notifyFn) == 32);
    assert!(offset_of!(FWPS_CALLOUT1, flowDeleteFn) == 40);
};

/// `FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW` (0x1): call `classifyFn` only for
/// flows that carry a context of this callout (`FwpsFlowAssociateContext0`).
pub const FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW: UINT32 = 0x0000_0001;
/// `FWP_CALLOUT_FLAG_ALLOW_OFFLOAD` (0x2): `classifyFn` is unaffected by
/// NIC offload; without it offload is disabled for the traffic.
pub const FWP_CALLOUT_FLAG_ALLOW_OFFLOAD: UINT32 = 0x0000_0002;
/// `FWP_CALLOUT_FLAG_ENABLE_COMMIT_ADD_NOTIFY` (0x4): also notify filter
/// additions inside a transaction, after the commit.
pub const FWP_CALLOUT_FLAG_ENABLE_COMMIT_ADD_NOTIFY: UINT32 = 0x0000_0004;
/// `FWP_CALLOUT_FLAG_ALLOW_MID_STREAM_INSPECTION` (0x8): the callout can
/// start inspecting a stream mid-way.
pub const FWP_CALLOUT_FLAG_ALLOW_MID_STREAM_INSPECTION: UINT32 = 0x0000_0008;
/// `FWP_CALLOUT_FLAG_ALLOW_RECLASSIFY` (0x10): call the callout when an
/// existing socket operation is reclassified.
pub const FWP_CALLOUT_FLAG_ALLOW_RECLASSIFY: UINT32 = 0x0000_0010;
/// `FWP_CALLOUT_FLAG_RESERVED1` (0x20).
pub const FWP_CALLOUT_FLAG_RESERVED1: UINT32 = 0x0000_0020;
/// `FWP_CALLOUT_FLAG_ALLOW_RSC` (0x40): receive segment coalescing allowed.
pub const FWP_CALLOUT_FLAG_ALLOW_RSC: UINT32 = 0x0000_0040;
/// `FWP_CALLOUT_FLAG_ALLOW_L2_BATCH_CLASSIFY` (0x80).
pub const FWP_CALLOUT_FLAG_ALLOW_L2_BATCH_CLASSIFY: UINT32 = 0x0000_0080;
/// `FWP_CALLOUT_FLAG_ALLOW_USO` (0x100): UDP segmentation offload allowed.
pub const FWP_CALLOUT_FLAG_ALLOW_USO: UINT32 = 0x0000_0100;
/// `FWP_CALLOUT_FLAG_ALLOW_URO` (0x200): UDP receive offload allowed.
pub const FWP_CALLOUT_FLAG_ALLOW_URO: UINT32 = 0x0000_0200;
