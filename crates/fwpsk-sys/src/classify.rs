//! The classify output (`FWPS_CLASSIFY_OUT0`, fwpstypes.h) and the filter
//! the engine passes to `classifyFn1` / `notifyFn1` (`FWPS_FILTER1` with its
//! `FWPS_ACTION0` and `FWPS_FILTER_CONDITION0`).
//!
//! Sources: the reference pages `FWPS_CLASSIFY_OUT0`, `FWPS_ACTION0`,
//! `FWPS_FILTER_CONDITION0`, `FWPS_FILTER1` (fwpstypes.h) and "Filtering
//! Condition Flags"; flag values cross-checked against the `windows-sys`
//! 0.61 metadata.

use core::ffi::c_void;

use crate::types::{
    FWP_ACTION_TYPE, FWP_CONDITION_VALUE0, FWP_MATCH_TYPE, FWP_VALUE0, UINT16, UINT32, UINT64,
};

// ---------------------------------------------------------------------------
// FWPS_CLASSIFY_OUT0 (fwpstypes.h).
// ---------------------------------------------------------------------------

/// `FWPS_CLASSIFY_OUT0` (fwpstypes.h): what `classifyFn` returns.
///
/// Rights protocol: write `actionType` only if [`FWPS_RIGHT_ACTION_WRITE`]
/// is set in `rights` (or to veto a permit with `FWP_ACTION_BLOCK`); clear
/// that right when returning `FWP_ACTION_BLOCK` (and `FWP_ACTION_PERMIT`
/// when the filter has `FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT`). An
/// inspection-only callout leaves `actionType` alone or sets
/// `FWP_ACTION_CONTINUE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FWPS_CLASSIFY_OUT0 {
    /// Suggested action (`FWP_ACTION_*`).
    pub actionType: FWP_ACTION_TYPE,
    /// Reserved for the system.
    pub outContext: UINT64,
    /// Reserved for the system.
    pub filterId: UINT64,
    /// Write rights (`FWPS_RIGHT_ACTION_WRITE`).
    pub rights: UINT32,
    /// `FWPS_CLASSIFY_OUT_FLAG_*`.
    pub flags: UINT32,
    /// Reserved for the system.
    pub reserved: UINT32,
}

// x64: actionType @0 + 4 padding, outContext @8, filterId @16, rights @24,
// flags @28, reserved @32 + 4 tail padding => 40.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_CLASSIFY_OUT0>() == 40);
    assert!(align_of::<FWPS_CLASSIFY_OUT0>() == 8);
    assert!(offset_of!(FWPS_CLASSIFY_OUT0, actionType) == 0);
    assert!(offset_of!(FWPS_CLASSIFY_OUT0, outContext) == 8);
    assert!(offset_of!(FWPS_CLASSIFY_OUT0, filterId) == 16);
    assert!(offset_of!(FWPS_CLASSIFY_OUT0, rights) == 24);
    assert!(offset_of!(FWPS_CLASSIFY_OUT0, flags) == 28);
    assert!(offset_of!(FWPS_CLASSIFY_OUT0, reserved) == 32);
};

/// `FWPS_RIGHT_ACTION_WRITE` (fwpsk.h): the callout may write `actionType`.
pub const FWPS_RIGHT_ACTION_WRITE: UINT32 = 0x0000_0001;

/// `FWPS_CLASSIFY_OUT_FLAG_ABSORB`: drop the blocked data silently.
pub const FWPS_CLASSIFY_OUT_FLAG_ABSORB: UINT32 = 0x0000_0001;
/// `FWPS_CLASSIFY_OUT_FLAG_BUFFER_LIMIT_REACHED`: stream layers; the
/// engine's stream buffer is full, the callout must permit or block.
pub const FWPS_CLASSIFY_OUT_FLAG_BUFFER_LIMIT_REACHED: UINT32 = 0x0000_0002;
/// `FWPS_CLASSIFY_OUT_FLAG_NO_MORE_DATA`: stream data was requested after
/// the stream was disconnected.
pub const FWPS_CLASSIFY_OUT_FLAG_NO_MORE_DATA: UINT32 = 0x0000_0004;
/// `FWPS_CLASSIFY_OUT_FLAG_ALE_FAST_CACHE_CHECK`.
pub const FWPS_CLASSIFY_OUT_FLAG_ALE_FAST_CACHE_CHECK: UINT32 = 0x0000_0008;
/// `FWPS_CLASSIFY_OUT_FLAG_ALE_FAST_CACHE_POSSIBLE`.
pub const FWPS_CLASSIFY_OUT_FLAG_ALE_FAST_CACHE_POSSIBLE: UINT32 = 0x0000_0010;

// ---------------------------------------------------------------------------
// FWPS_ACTION0, FWPS_FILTER_CONDITION0, FWPS_FILTER1 (fwpstypes.h).
// ---------------------------------------------------------------------------

/// `FWPS_ACTION0` (fwpstypes.h): the run-time action of a filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FWPS_ACTION0 {
    /// `FWP_ACTION_*`; for a callout filter one of the `FWP_ACTION_CALLOUT_*`.
    pub r#type: FWP_ACTION_TYPE,
    /// Run-time id of the callout the filter invokes.
    pub calloutId: UINT32,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_ACTION0>() == 8);
    assert!(align_of::<FWPS_ACTION0>() == 4);
    assert!(offset_of!(FWPS_ACTION0, r#type) == 0);
    assert!(offset_of!(FWPS_ACTION0, calloutId) == 4);
};

/// `FWPS_FILTER_CONDITION0` (fwpstypes.h): one run-time filter condition.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPS_FILTER_CONDITION0 {
    /// Data field tested (`FWPS_FIELD_*` of the filter's layer).
    pub fieldId: UINT16,
    /// Reserved.
    pub reserved: UINT16,
    /// Comparison (`FWP_MATCH_*`).
    pub matchType: FWP_MATCH_TYPE,
    /// Value compared with.
    pub conditionValue: FWP_CONDITION_VALUE0,
}

// fieldId @0, reserved @2, matchType @4, conditionValue (8-aligned) @8 => 24.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_FILTER_CONDITION0>() == 24);
    assert!(align_of::<FWPS_FILTER_CONDITION0>() == 8);
    assert!(offset_of!(FWPS_FILTER_CONDITION0, fieldId) == 0);
    assert!(offset_of!(FWPS_FILTER_CONDITION0, reserved) == 2);
    assert!(offset_of!(FWPS_FILTER_CONDITION0, matchType) == 4);
    assert!(offset_of!(FWPS_FILTER_CONDITION0, conditionValue) == 8);
};

/// `FWPS_FILTER1` (fwpstypes.h, Windows 7 and later): the filter whose
/// action invoked the callout, passed to `classifyFn1` and `notifyFn1`.
///
/// `notifyFn1` may set `context` when a filter is added; `classifyFn1` reads
/// it back.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPS_FILTER1 {
    /// Run-time filter id.
    pub filterId: UINT64,
    /// `FWP_UINT64` or `FWP_EMPTY` weight.
    pub weight: FWP_VALUE0,
    /// Weight of the filter's sublayer.
    pub subLayerWeight: UINT16,
    /// `FWPS_FILTER_FLAG_*`.
    pub flags: UINT16,
    /// Number of entries at `filterCondition`.
    pub numFilterConditions: UINT32,
    /// Conditions; null when `numFilterConditions` is 0.
    pub filterCondition: *mut FWPS_FILTER_CONDITION0,
    /// The action.
    pub action: FWPS_ACTION0,
    /// Callout-defined context, set in `notifyFn1`.
    pub context: UINT64,
    /// `FWPM_PROVIDER_CONTEXT1*` (opaque here); null unless the callout
    /// was added with `FWPM_CALLOUT_FLAG_USES_PROVIDER_CONTEXT`.
    pub providerContext: *mut c_void,
}

// filterId @0, weight (16) @8, subLayerWeight @24, flags @26,
// numFilterConditions @28, filterCondition @32, action (8) @40,
// context @48, providerContext @56 => 64.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_FILTER1>() == 64);
    assert!(align_of::<FWPS_FILTER1>() == 8);
    assert!(offset_of!(FWPS_FILTER1, filterId) == 0);
    assert!(offset_of!(FWPS_FILTER1, weight) == 8);
    assert!(offset_of!(FWPS_FILTER1, subLayerWeight) == 24);
    assert!(offset_of!(FWPS_FILTER1, flags) == 26);
    assert!(offset_of!(FWPS_FILTER1, numFilterConditions) == 28);
    assert!(offset_of!(FWPS_FILTER1, filterCondition) == 32);
    assert!(offset_of!(FWPS_FILTER1, action) == 40);
    assert!(offset_of!(FWPS_FILTER1, context) == 48);
    assert!(offset_of!(FWPS_FILTER1, providerContext) == 56);
};

/// `FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT`: clear `FWPS_RIGHT_ACTION_WRITE`
/// when returning block *or* permit.
pub const FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT: UINT32 = 0x0000_0001;
/// `FWPS_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED`: the filter acts as a
/// permit filter while its callout is not registered.
pub const FWPS_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED: UINT32 = 0x0000_0002;
/// `FWPS_FILTER_FLAG_OR_CONDITIONS`.
pub const FWPS_FILTER_FLAG_OR_CONDITIONS: UINT32 = 0x0000_0004;
/// `FWPS_FILTER_FLAG_HAS_SECURITY_REALM_PROVIDER_CONTEXT`.
pub const FWPS_FILTER_FLAG_HAS_SECURITY_REALM_PROVIDER_CONTEXT: UINT32 = 0x0000_0008;
/// `FWPS_FILTER_FLAG_SILENT_MODE`.
pub const FWPS_FILTER_FLAG_SILENT_MODE: UINT32 = 0x0000_0010;
/// `FWPS_FILTER_FLAG_IPSEC_NO_ACQUIRE_INITIATE`.
pub const FWPS_FILTER_FLAG_IPSEC_NO_ACQUIRE_INITIATE: UINT32 = 0x0000_0020;

// ---------------------------------------------------------------------------
// Filtering condition flags ("Filtering Condition Flags"); the `*_FLAGS`
// data fields carry them as an FWP_UINT32.
// ---------------------------------------------------------------------------

/// `FWP_CONDITION_FLAG_IS_LOOPBACK`: loopback traffic.
pub const FWP_CONDITION_FLAG_IS_LOOPBACK: UINT32 = 0x0000_0001;
/// `FWP_CONDITION_FLAG_IS_IPSEC_SECURED`.
pub const FWP_CONDITION_FLAG_IS_IPSEC_SECURED: UINT32 = 0x0000_0002;
/// `FWP_CONDITION_FLAG_IS_REAUTHORIZE`: a re-authorization classify.
pub const FWP_CONDITION_FLAG_IS_REAUTHORIZE: UINT32 = 0x0000_0004;
/// `FWP_CONDITION_FLAG_IS_WILDCARD_BIND`.
pub const FWP_CONDITION_FLAG_IS_WILDCARD_BIND: UINT32 = 0x0000_0008;
/// `FWP_CONDITION_FLAG_IS_RAW_ENDPOINT`.
pub const FWP_CONDITION_FLAG_IS_RAW_ENDPOINT: UINT32 = 0x0000_0010;
/// `FWP_CONDITION_FLAG_IS_FRAGMENT`.
pub const FWP_CONDITION_FLAG_IS_FRAGMENT: UINT32 = 0x0000_0020;
/// `FWP_CONDITION_FLAG_IS_FRAGMENT_GROUP`.
pub const FWP_CONDITION_FLAG_IS_FRAGMENT_GROUP: UINT32 = 0x0000_0040;
/// `FWP_CONDITION_FLAG_IS_RECLASSIFY`.
pub const FWP_CONDITION_FLAG_IS_RECLASSIFY: UINT32 = 0x0002_0000;
/// `FWP_CONDITION_FLAG_IS_CONNECTION_REDIRECTED`.
pub const FWP_CONDITION_FLAG_IS_CONNECTION_REDIRECTED: UINT32 = 0x0010_0000;
/// `FWP_CONDITION_FLAG_IS_PROXY_CONNECTION`.
pub const FWP_CONDITION_FLAG_IS_PROXY_CONNECTION: UINT32 = 0x0020_0000;
/// `FWP_CONDITION_FLAG_IS_APPCONTAINER_LOOPBACK`.
pub const FWP_CONDITION_FLAG_IS_APPCONTAINER_LOOPBACK: UINT32 = 0x0040_0000;
/// `FWP_CONDITION_FLAG_IS_NON_APPCONTAINER_LOOPBACK`.
pub const FWP_CONDITION_FLAG_IS_NON_APPCONTAINER_LOOPBACK: UINT32 = 0x0080_0000;
