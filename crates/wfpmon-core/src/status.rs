//! The `NTSTATUS` values (ntstatus.h) wfpmon's kernel-independent logic uses.
//!
//! Declared here, not taken from wdk-sys, so this crate stays free of any
//! WDK dependency; the driver checks they agree with wdk-sys.

#![allow(clippy::cast_possible_wrap)] // NTSTATUS is the u32 bit pattern read as i32

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: i32 = 0;
/// `STATUS_PENDING`.
pub const STATUS_PENDING: i32 = 0x0000_0103;
/// `STATUS_UNSUCCESSFUL`.
pub const STATUS_UNSUCCESSFUL: i32 = 0xC000_0001_u32 as i32;
/// `STATUS_INVALID_PARAMETER`.
pub const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
/// `STATUS_INVALID_DEVICE_REQUEST`.
pub const STATUS_INVALID_DEVICE_REQUEST: i32 = 0xC000_0010_u32 as i32;
/// `STATUS_BUFFER_TOO_SMALL`.
pub const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
/// `STATUS_REVISION_MISMATCH`.
pub const STATUS_REVISION_MISMATCH: i32 = 0xC000_0059_u32 as i32;
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub const STATUS_INSUFFICIENT_RESOURCES: i32 = 0xC000_009A_u32 as i32;
/// `STATUS_INTEGER_OVERFLOW`.
pub const STATUS_INTEGER_OVERFLOW: i32 = 0xC000_0095_u32 as i32;
/// `STATUS_DEVICE_BUSY`.
pub const STATUS_DEVICE_BUSY: i32 = 0x8000_0011_u32 as i32;
/// `STATUS_INVALID_BUFFER_SIZE`.
pub const STATUS_INVALID_BUFFER_SIZE: i32 = 0xC000_0206_u32 as i32;
/// `STATUS_FWP_IN_USE`: the callout is being registered or unregistered
/// by another thread.
pub const STATUS_FWP_IN_USE: i32 = 0xC022_000A_u32 as i32;
/// `STATUS_FWP_CALLOUT_NOT_FOUND`.
pub const STATUS_FWP_CALLOUT_NOT_FOUND: i32 = 0xC022_0001_u32 as i32;
/// `FWP_E_CALLOUT_NOT_FOUND`: the user-mode HRESULT of the same condition.
/// Some filter-engine emulations answer it from kernel calls.
pub const FWP_E_CALLOUT_NOT_FOUND: i32 = 0x8032_0001_u32 as i32;

/// `NT_SUCCESS()`: success and informational codes.
#[must_use]
pub const fn nt_success(status: i32) -> bool {
    status >= 0
}
