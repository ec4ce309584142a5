//! `NTSTATUS` values a WFP callout driver meets, and the `NT_SUCCESS`
//! family of tests.
//!
//! Sources: "NTSTATUS Values" ([MS-ERREF] 2.3.1, `ntstatus.h`) for the
//! numbers; the return-value sections of the `FwpsCalloutRegister1`,
//! `FwpsCalloutUnregisterById0`, `FwpsFlowAssociateContext0`,
//! `FwpsFlowRemoveContext0` and `FwpsInjectionHandleCreate0` pages for when
//! they are returned; "Using NTSTATUS Values" for the severity tests. The
//! numbers were cross-checked against the `windows-sys` 0.61 metadata.
//!
//! `NTSTATUS` is a signed 32-bit integer whose top two bits are the
//! severity; the values are written in the documentation as unsigned hex
//! (e.g. `0xC0220001`). They are converted here with
//! [`u32::cast_signed`], which keeps the bit pattern (a plain `as i32` does
//! too, but hides the intent and trips `clippy::cast_possible_wrap`).

use crate::types::UINT32;

/// `NTSTATUS` (ntdef.h): signed 32-bit status code.
pub type NTSTATUS = i32;
/// `HRESULT` (winerror.h): signed 32-bit COM/Win32 result code.
pub type HRESULT = i32;

/// `NT_SUCCESS(Status)`: success or informational severity (`Status >= 0`).
///
/// Beware: informational values such as [`STATUS_OBJECT_NAME_EXISTS`] pass
/// this test, and warning values such as [`STATUS_DEVICE_BUSY`] fail it.
#[must_use]
pub const fn NT_SUCCESS(status: NTSTATUS) -> bool {
    status >= 0
}

/// `NT_INFORMATION(Status)`: severity bits `01`.
#[must_use]
pub const fn NT_INFORMATION(status: NTSTATUS) -> bool {
    (status.cast_unsigned() >> 30) == 1
}

/// `NT_WARNING(Status)`: severity bits `10`.
#[must_use]
pub const fn NT_WARNING(status: NTSTATUS) -> bool {
    (status.cast_unsigned() >> 30) == 2
}

/// `NT_ERROR(Status)`: severity bits `11`.
#[must_use]
pub const fn NT_ERROR(status: NTSTATUS) -> bool {
    (status.cast_unsigned() >> 30) == 3
}

/// The facility field (bits 16..28) of an `NTSTATUS`; [`NTSTATUS_FACILITY_FWP`]
/// for the `STATUS_FWP_*` values. (A helper of this crate, not a C macro.)
#[must_use]
pub const fn ntstatus_facility(status: NTSTATUS) -> UINT32 {
    (status.cast_unsigned() >> 16) & 0x0fff
}

/// The facility of the kernel `STATUS_FWP_*` codes, 0x22 (the user-mode
/// `FWP_E_*` `HRESULT`s use 0x32). A name of this crate, not of a header.
pub const NTSTATUS_FACILITY_FWP: UINT32 = 0x22;

/// `STATUS_SUCCESS` (0x00000000).
pub const STATUS_SUCCESS: NTSTATUS = 0x0000_0000_u32.cast_signed();
/// `STATUS_PENDING` (0x00000103), a success value: `FwpsFlowRemoveContext0`
/// returns it when a classify is in progress and `flowDeleteFn` will run
/// later.
pub const STATUS_PENDING: NTSTATUS = 0x0000_0103_u32.cast_signed();
/// `STATUS_OBJECT_NAME_EXISTS` (0x40000000), **informational**.
///
/// `NT_SUCCESS` is true for it: `FwpsFlowAssociateContext0` returns it when the flow
/// already carries a context of that callout, and nothing was associated.
pub const STATUS_OBJECT_NAME_EXISTS: NTSTATUS = 0x4000_0000_u32.cast_signed();
/// `STATUS_DEVICE_BUSY` (0x80000011), a **warning**, so `NT_SUCCESS` is
/// false: `FwpsCalloutUnregisterById0` returns it while flows still carry a
/// context of the callout.
pub const STATUS_DEVICE_BUSY: NTSTATUS = 0x8000_0011_u32.cast_signed();
/// `STATUS_UNSUCCESSFUL` (0xC0000001): `FwpsFlowRemoveContext0` returns it
/// when the flow carries no context of the callout.
pub const STATUS_UNSUCCESSFUL: NTSTATUS = 0xC000_0001_u32.cast_signed();
/// `STATUS_INVALID_HANDLE` (0xC0000008).
pub const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008_u32.cast_signed();
/// `STATUS_INVALID_PARAMETER` (0xC000000D): `FwpsFlowAssociateContext0`
/// returns it for a zero context or a callout without `flowDeleteFn`.
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32.cast_signed();
/// `STATUS_INVALID_DEVICE_REQUEST` (0xC0000010).
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010_u32.cast_signed();
/// `STATUS_NO_MEMORY` (0xC0000017).
pub const STATUS_NO_MEMORY: NTSTATUS = 0xC000_0017_u32.cast_signed();
/// `STATUS_BUFFER_TOO_SMALL` (0xC0000023).
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023_u32.cast_signed();
/// `STATUS_INSUFFICIENT_RESOURCES` (0xC000009A).
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32.cast_signed();
/// `STATUS_NOT_SUPPORTED` (0xC00000BB).
pub const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32.cast_signed();
/// `STATUS_CANCELLED` (0xC0000120).
pub const STATUS_CANCELLED: NTSTATUS = 0xC000_0120_u32.cast_signed();
/// `STATUS_NOT_FOUND` (0xC0000225).
pub const STATUS_NOT_FOUND: NTSTATUS = 0xC000_0225_u32.cast_signed();

/// `STATUS_FWP_CALLOUT_NOT_FOUND` (0xC0220001): no callout with that
/// run-time id (or key) is registered; an unregister can treat it as done.
pub const STATUS_FWP_CALLOUT_NOT_FOUND: NTSTATUS = 0xC022_0001_u32.cast_signed();
/// `STATUS_FWP_CONDITION_NOT_FOUND` (0xC0220002).
pub const STATUS_FWP_CONDITION_NOT_FOUND: NTSTATUS = 0xC022_0002_u32.cast_signed();
/// `STATUS_FWP_FILTER_NOT_FOUND` (0xC0220003).
pub const STATUS_FWP_FILTER_NOT_FOUND: NTSTATUS = 0xC022_0003_u32.cast_signed();
/// `STATUS_FWP_LAYER_NOT_FOUND` (0xC0220004).
pub const STATUS_FWP_LAYER_NOT_FOUND: NTSTATUS = 0xC022_0004_u32.cast_signed();
/// `STATUS_FWP_PROVIDER_NOT_FOUND` (0xC0220005).
pub const STATUS_FWP_PROVIDER_NOT_FOUND: NTSTATUS = 0xC022_0005_u32.cast_signed();
/// `STATUS_FWP_SUBLAYER_NOT_FOUND` (0xC0220007).
pub const STATUS_FWP_SUBLAYER_NOT_FOUND: NTSTATUS = 0xC022_0007_u32.cast_signed();
/// `STATUS_FWP_NOT_FOUND` (0xC0220008).
pub const STATUS_FWP_NOT_FOUND: NTSTATUS = 0xC022_0008_u32.cast_signed();
/// `STATUS_FWP_ALREADY_EXISTS` (0xC0220009): `FwpsCalloutRegister1` returns
/// it when a callout with the same key is already registered.
pub const STATUS_FWP_ALREADY_EXISTS: NTSTATUS = 0xC022_0009_u32.cast_signed();
/// `STATUS_FWP_IN_USE` (0xC022000A): the callout is being registered or
/// unregistered by another thread.
pub const STATUS_FWP_IN_USE: NTSTATUS = 0xC022_000A_u32.cast_signed();
/// `STATUS_FWP_TIMEOUT` (0xC0220012).
pub const STATUS_FWP_TIMEOUT: NTSTATUS = 0xC022_0012_u32.cast_signed();
/// `STATUS_FWP_INCOMPATIBLE_LAYER` (0xC0220014): the object cannot be used
/// at that layer.
pub const STATUS_FWP_INCOMPATIBLE_LAYER: NTSTATUS = 0xC022_0014_u32.cast_signed();
/// `STATUS_FWP_KM_CLIENTS_ONLY` (0xC0220015).
pub const STATUS_FWP_KM_CLIENTS_ONLY: NTSTATUS = 0xC022_0015_u32.cast_signed();
/// `STATUS_FWP_BUILTIN_OBJECT` (0xC0220017).
pub const STATUS_FWP_BUILTIN_OBJECT: NTSTATUS = 0xC022_0017_u32.cast_signed();
/// `STATUS_FWP_TOO_MANY_CALLOUTS` (0xC0220018).
pub const STATUS_FWP_TOO_MANY_CALLOUTS: NTSTATUS = 0xC022_0018_u32.cast_signed();
/// `STATUS_FWP_NULL_POINTER` (0xC022001C).
pub const STATUS_FWP_NULL_POINTER: NTSTATUS = 0xC022_001C_u32.cast_signed();
/// `STATUS_FWP_INVALID_FLAGS` (0xC022001E).
pub const STATUS_FWP_INVALID_FLAGS: NTSTATUS = 0xC022_001E_u32.cast_signed();
/// `STATUS_FWP_INVALID_ACTION_TYPE` (0xC0220024).
pub const STATUS_FWP_INVALID_ACTION_TYPE: NTSTATUS = 0xC022_0024_u32.cast_signed();
/// `STATUS_FWP_INVALID_WEIGHT` (0xC0220025).
pub const STATUS_FWP_INVALID_WEIGHT: NTSTATUS = 0xC022_0025_u32.cast_signed();
/// `STATUS_FWP_TYPE_MISMATCH` (0xC0220027).
pub const STATUS_FWP_TYPE_MISMATCH: NTSTATUS = 0xC022_0027_u32.cast_signed();
/// `STATUS_FWP_OUT_OF_BOUNDS` (0xC0220028).
pub const STATUS_FWP_OUT_OF_BOUNDS: NTSTATUS = 0xC022_0028_u32.cast_signed();
/// `STATUS_FWP_ACTION_INCOMPATIBLE_WITH_LAYER` (0xC022002C).
pub const STATUS_FWP_ACTION_INCOMPATIBLE_WITH_LAYER: NTSTATUS = 0xC022_002C_u32.cast_signed();
/// `STATUS_FWP_CONTEXT_INCOMPATIBLE_WITH_LAYER` (0xC022002E).
pub const STATUS_FWP_CONTEXT_INCOMPATIBLE_WITH_LAYER: NTSTATUS = 0xC022_002E_u32.cast_signed();
/// `STATUS_FWP_CONTEXT_INCOMPATIBLE_WITH_CALLOUT` (0xC022002F).
pub const STATUS_FWP_CONTEXT_INCOMPATIBLE_WITH_CALLOUT: NTSTATUS = 0xC022_002F_u32.cast_signed();
/// `STATUS_FWP_INVALID_PARAMETER` (0xC0220035).
pub const STATUS_FWP_INVALID_PARAMETER: NTSTATUS = 0xC022_0035_u32.cast_signed();
/// `STATUS_FWP_CALLOUT_NOTIFICATION_FAILED` (0xC0220037): a `notifyFn`
/// failed, so the filter was not added.
pub const STATUS_FWP_CALLOUT_NOTIFICATION_FAILED: NTSTATUS = 0xC022_0037_u32.cast_signed();
/// `STATUS_FWP_TCPIP_NOT_READY` (0xC0220100): `FwpsInjectionHandleCreate0`
/// returns it while the TCP/IP stack is not ready; retry later.
pub const STATUS_FWP_TCPIP_NOT_READY: NTSTATUS = 0xC022_0100_u32.cast_signed();
/// `STATUS_FWP_INJECT_HANDLE_CLOSING` (0xC0220101).
pub const STATUS_FWP_INJECT_HANDLE_CLOSING: NTSTATUS = 0xC022_0101_u32.cast_signed();
/// `STATUS_FWP_INJECT_HANDLE_STALE` (0xC0220102).
pub const STATUS_FWP_INJECT_HANDLE_STALE: NTSTATUS = 0xC022_0102_u32.cast_signed();
/// `STATUS_FWP_CANNOT_PEND` (0xC0220103).
pub const STATUS_FWP_CANNOT_PEND: NTSTATUS = 0xC022_0103_u32.cast_signed();
/// `STATUS_FWP_DROP_NOICMP` (0xC0220104).
pub const STATUS_FWP_DROP_NOICMP: NTSTATUS = 0xC022_0104_u32.cast_signed();

/// `FWP_E_CALLOUT_NOT_FOUND` (0x80320001, winerror.h, "WFP Error Codes"):
/// the **user-mode** `HRESULT` twin of [`STATUS_FWP_CALLOUT_NOT_FOUND`]
/// (facility 0x32 instead of 0x22, same code 1).
///
/// The kernel functions never return it, but some WFP emulators and test
/// doubles do, so code that treats "callout not found" as "already
/// unregistered" may want to accept both.
pub const FWP_E_CALLOUT_NOT_FOUND: HRESULT = 0x8032_0001_u32.cast_signed();
