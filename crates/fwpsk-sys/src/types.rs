//! Primitive Windows types and the shared WFP value types of `fwptypes.h`.
//!
//! Sources: "Windows Data Types" (`BaseTsd.h`, `WinDef.h`, `WinNT.h`) for the
//! primitive aliases; the `fwptypes.h` reference pages `FWP_VALUE0`,
//! `FWP_CONDITION_VALUE0`, `FWP_BYTE_BLOB`, `FWP_BYTE_ARRAY16`,
//! `FWP_BYTE_ARRAY6`, `FWP_RANGE0`, `FWP_V4_ADDR_AND_MASK`,
//! `FWP_V6_ADDR_AND_MASK`, `FWP_TOKEN_INFORMATION`, `FWP_DATA_TYPE`,
//! `FWP_DIRECTION`, `FWP_MATCH_TYPE` and `FWPM_ACTION0` (for the action
//! type values).
//!
//! C enumerations are `int` on MSVC; they are declared here as `i32` type
//! aliases with one constant per enumerator, never as Rust `enum`s, because
//! the engine may hand out values a Rust `enum` would not know.

use core::ffi::c_void;

// ---------------------------------------------------------------------------
// Primitive aliases ("Windows Data Types", BaseTsd.h / WinDef.h / WinNT.h).
// ---------------------------------------------------------------------------

/// `UINT8` (BaseTsd.h): unsigned 8-bit integer.
pub type UINT8 = u8;
/// `UINT16` (BaseTsd.h): unsigned 16-bit integer.
pub type UINT16 = u16;
/// `UINT32` (BaseTsd.h): unsigned 32-bit integer.
pub type UINT32 = u32;
/// `UINT64` (BaseTsd.h): unsigned 64-bit integer.
pub type UINT64 = u64;
/// `INT8` (BaseTsd.h): signed 8-bit integer.
pub type INT8 = i8;
/// `INT16` (BaseTsd.h): signed 16-bit integer.
pub type INT16 = i16;
/// `INT32` (BaseTsd.h): signed 32-bit integer.
pub type INT32 = i32;
/// `INT64` (BaseTsd.h): signed 64-bit integer.
pub type INT64 = i64;
/// `UCHAR` (WinNT.h): unsigned 8-bit integer.
pub type UCHAR = u8;
/// `USHORT` (WinNT.h): unsigned 16-bit integer.
pub type USHORT = u16;
/// `ULONG` (WinNT.h): unsigned 32-bit integer. Windows is LLP64, so this is
/// 32 bits on x64 too; `core::ffi::c_ulong` is deliberately not used because
/// it is 64 bits on the Linux host.
pub type ULONG = u32;
/// `DWORD` (WinDef.h): unsigned 32-bit integer.
pub type DWORD = u32;
/// `BOOLEAN` (WinNT.h): 8-bit boolean, `0` is false.
pub type BOOLEAN = u8;
/// `SIZE_T` (BaseTsd.h): pointer-sized unsigned integer.
pub type SIZE_T = usize;
/// `PVOID` (WinNT.h): untyped pointer.
pub type PVOID = *mut c_void;
/// `HANDLE` (WinNT.h): opaque handle, pointer-sized.
pub type HANDLE = *mut c_void;
/// `LPWSTR` (WinNT.h): pointer to a NUL-terminated UTF-16 string.
pub type LPWSTR = *mut u16;
/// `PSID` (WinNT.h): pointer to a security identifier. The `SID` layout is
/// variable-length and not declared here; treat the pointee as opaque.
pub type PSID = *mut c_void;
/// `ADDRESS_FAMILY` (ws2def.h): `USHORT` address family, e.g. [`AF_INET`].
pub type ADDRESS_FAMILY = u16;

/// `AF_UNSPEC` (ws2def.h): unspecified address family.
pub const AF_UNSPEC: ADDRESS_FAMILY = 0;
/// `AF_INET` (ws2def.h): IPv4.
pub const AF_INET: ADDRESS_FAMILY = 2;
/// `AF_INET6` (ws2def.h): IPv6 (23 on Windows, unlike 10 on Linux).
pub const AF_INET6: ADDRESS_FAMILY = 23;

// ---------------------------------------------------------------------------
// GUID (guiddef.h).
// ---------------------------------------------------------------------------

/// `GUID` (guiddef.h): `{ ULONG Data1; USHORT Data2; USHORT Data3; UCHAR
/// Data4[8]; }`, 16 bytes, 4-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GUID {
    /// First 8 hexadecimal digits.
    pub Data1: ULONG,
    /// First group of 4 hexadecimal digits.
    pub Data2: USHORT,
    /// Second group of 4 hexadecimal digits.
    pub Data3: USHORT,
    /// The remaining 8 bytes, in textual order.
    pub Data4: [UCHAR; 8],
}

impl GUID {
    /// Builds a GUID from its textual form read as one 128-bit number, e.g.
    /// `{3b89653c-c170-49e4-b1cd-e0eeeee19a3e}` is
    /// `GUID::from_u128(0x3b89653c_c170_49e4_b1cd_e0eeeee19a3e)`.
    #[must_use]
    #[allow(clippy::cast_possible_truncation)] // Each field takes the bits it is meant to.
    pub const fn from_u128(value: u128) -> Self {
        let tail = (value as u64).to_be_bytes();
        Self {
            Data1: (value >> 96) as u32,
            Data2: (value >> 80) as u16,
            Data3: (value >> 64) as u16,
            Data4: tail,
        }
    }

    /// The inverse of [`GUID::from_u128`].
    #[must_use]
    pub const fn to_u128(&self) -> u128 {
        ((self.Data1 as u128) << 96)
            | ((self.Data2 as u128) << 80)
            | ((self.Data3 as u128) << 64)
            | (u64::from_be_bytes(self.Data4) as u128)
    }
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<GUID>() == 16);
    assert!(align_of::<GUID>() == 4);
    assert!(offset_of!(GUID, Data1) == 0);
    assert!(offset_of!(GUID, Data2) == 4);
    assert!(offset_of!(GUID, Data3) == 6);
    assert!(offset_of!(GUID, Data4) == 8);
};

// ---------------------------------------------------------------------------
// FWP_DATA_TYPE (fwptypes.h, "FWP_DATA_TYPE enumeration").
// ---------------------------------------------------------------------------

/// `FWP_DATA_TYPE` (fwptypes.h): the tag of [`FWP_VALUE0`] and
/// [`FWP_CONDITION_VALUE0`]. A C enumeration, so 4 bytes.
pub type FWP_DATA_TYPE = i32;
/// `FWP_EMPTY`: no value.
pub const FWP_EMPTY: FWP_DATA_TYPE = 0;
/// `FWP_UINT8`: the `uint8` member is valid.
pub const FWP_UINT8: FWP_DATA_TYPE = 1;
/// `FWP_UINT16`: the `uint16` member is valid.
pub const FWP_UINT16: FWP_DATA_TYPE = 2;
/// `FWP_UINT32`: the `uint32` member is valid.
pub const FWP_UINT32: FWP_DATA_TYPE = 3;
/// `FWP_UINT64`: the `uint64` member, a *pointer* to the value, is valid.
pub const FWP_UINT64: FWP_DATA_TYPE = 4;
/// `FWP_INT8`: the `int8` member is valid.
pub const FWP_INT8: FWP_DATA_TYPE = 5;
/// `FWP_INT16`: the `int16` member is valid.
pub const FWP_INT16: FWP_DATA_TYPE = 6;
/// `FWP_INT32`: the `int32` member is valid.
pub const FWP_INT32: FWP_DATA_TYPE = 7;
/// `FWP_INT64`: the `int64` member, a pointer to the value, is valid.
pub const FWP_INT64: FWP_DATA_TYPE = 8;
/// `FWP_FLOAT`: the `float32` member is valid.
pub const FWP_FLOAT: FWP_DATA_TYPE = 9;
/// `FWP_DOUBLE`: the `double64` member, a pointer to the value, is valid.
pub const FWP_DOUBLE: FWP_DATA_TYPE = 10;
/// `FWP_BYTE_ARRAY16_TYPE`: the `byteArray16` member is valid (IPv6 addresses).
pub const FWP_BYTE_ARRAY16_TYPE: FWP_DATA_TYPE = 11;
/// `FWP_BYTE_BLOB_TYPE`: the `byteBlob` member is valid (e.g. the app id).
pub const FWP_BYTE_BLOB_TYPE: FWP_DATA_TYPE = 12;
/// `FWP_SID`: the `sid` member is valid.
pub const FWP_SID: FWP_DATA_TYPE = 13;
/// `FWP_SECURITY_DESCRIPTOR_TYPE`: the `sd` member is valid.
pub const FWP_SECURITY_DESCRIPTOR_TYPE: FWP_DATA_TYPE = 14;
/// `FWP_TOKEN_INFORMATION_TYPE`: the `tokenInformation` member is valid.
pub const FWP_TOKEN_INFORMATION_TYPE: FWP_DATA_TYPE = 15;
/// `FWP_TOKEN_ACCESS_INFORMATION_TYPE`: the `tokenAccessInformation` member is valid.
pub const FWP_TOKEN_ACCESS_INFORMATION_TYPE: FWP_DATA_TYPE = 16;
/// `FWP_UNICODE_STRING_TYPE`: the `unicodeString` member is valid.
pub const FWP_UNICODE_STRING_TYPE: FWP_DATA_TYPE = 17;
/// `FWP_BYTE_ARRAY6_TYPE`: the `byteArray6` member is valid (MAC addresses).
pub const FWP_BYTE_ARRAY6_TYPE: FWP_DATA_TYPE = 18;
/// `FWP_SINGLE_DATA_TYPE_MAX`: upper bound of the single-value types.
pub const FWP_SINGLE_DATA_TYPE_MAX: FWP_DATA_TYPE = 0xff;
/// `FWP_V4_ADDR_MASK`: condition values only, the `v4AddrMask` member.
pub const FWP_V4_ADDR_MASK: FWP_DATA_TYPE = 0x100;
/// `FWP_V6_ADDR_MASK`: condition values only, the `v6AddrMask` member.
pub const FWP_V6_ADDR_MASK: FWP_DATA_TYPE = 0x101;
/// `FWP_RANGE_TYPE`: condition values only, the `rangeValue` member.
pub const FWP_RANGE_TYPE: FWP_DATA_TYPE = 0x102;
/// `FWP_DATA_TYPE_MAX`.
pub const FWP_DATA_TYPE_MAX: FWP_DATA_TYPE = 0x103;

// ---------------------------------------------------------------------------
// FWP_DIRECTION, FWP_MATCH_TYPE (fwptypes.h).
// ---------------------------------------------------------------------------

/// `FWP_DIRECTION` (fwptypes.h): traffic direction, a C enumeration. The
/// `*_DIRECTION` data fields carry it as an `FWP_UINT32` value.
pub type FWP_DIRECTION = i32;
/// `FWP_DIRECTION_OUTBOUND`.
pub const FWP_DIRECTION_OUTBOUND: FWP_DIRECTION = 0;
/// `FWP_DIRECTION_INBOUND`.
pub const FWP_DIRECTION_INBOUND: FWP_DIRECTION = 1;
/// `FWP_DIRECTION_MAX`.
pub const FWP_DIRECTION_MAX: FWP_DIRECTION = 2;

/// `FWP_MATCH_TYPE` (fwptypes.h): comparison of a filter condition.
pub type FWP_MATCH_TYPE = i32;
/// `FWP_MATCH_EQUAL`.
pub const FWP_MATCH_EQUAL: FWP_MATCH_TYPE = 0;
/// `FWP_MATCH_GREATER`.
pub const FWP_MATCH_GREATER: FWP_MATCH_TYPE = 1;
/// `FWP_MATCH_LESS`.
pub const FWP_MATCH_LESS: FWP_MATCH_TYPE = 2;
/// `FWP_MATCH_GREATER_OR_EQUAL`.
pub const FWP_MATCH_GREATER_OR_EQUAL: FWP_MATCH_TYPE = 3;
/// `FWP_MATCH_LESS_OR_EQUAL`.
pub const FWP_MATCH_LESS_OR_EQUAL: FWP_MATCH_TYPE = 4;
/// `FWP_MATCH_RANGE`.
pub const FWP_MATCH_RANGE: FWP_MATCH_TYPE = 5;
/// `FWP_MATCH_FLAGS_ALL_SET`.
pub const FWP_MATCH_FLAGS_ALL_SET: FWP_MATCH_TYPE = 6;
/// `FWP_MATCH_FLAGS_ANY_SET`.
pub const FWP_MATCH_FLAGS_ANY_SET: FWP_MATCH_TYPE = 7;
/// `FWP_MATCH_FLAGS_NONE_SET`.
pub const FWP_MATCH_FLAGS_NONE_SET: FWP_MATCH_TYPE = 8;
/// `FWP_MATCH_EQUAL_CASE_INSENSITIVE`.
pub const FWP_MATCH_EQUAL_CASE_INSENSITIVE: FWP_MATCH_TYPE = 9;
/// `FWP_MATCH_NOT_EQUAL`.
pub const FWP_MATCH_NOT_EQUAL: FWP_MATCH_TYPE = 10;
/// `FWP_MATCH_PREFIX`.
pub const FWP_MATCH_PREFIX: FWP_MATCH_TYPE = 11;
/// `FWP_MATCH_NOT_PREFIX`.
pub const FWP_MATCH_NOT_PREFIX: FWP_MATCH_TYPE = 12;

// ---------------------------------------------------------------------------
// FWP_ACTION_TYPE (fwptypes.h; values from the "FWPM_ACTION0 structure" page).
// ---------------------------------------------------------------------------

/// `FWP_ACTION_TYPE` (fwptypes.h): `typedef UINT32 FWP_ACTION_TYPE`.
pub type FWP_ACTION_TYPE = UINT32;
/// `FWP_ACTION_FLAG_TERMINATING`: the action is block or permit.
pub const FWP_ACTION_FLAG_TERMINATING: UINT32 = 0x0000_1000;
/// `FWP_ACTION_FLAG_NON_TERMINATING`: the action never blocks or permits.
pub const FWP_ACTION_FLAG_NON_TERMINATING: UINT32 = 0x0000_2000;
/// `FWP_ACTION_FLAG_CALLOUT`: the action invokes a callout.
pub const FWP_ACTION_FLAG_CALLOUT: UINT32 = 0x0000_4000;
/// `FWP_ACTION_BLOCK`: `0x1 | FWP_ACTION_FLAG_TERMINATING`.
pub const FWP_ACTION_BLOCK: FWP_ACTION_TYPE = 0x0000_0001 | FWP_ACTION_FLAG_TERMINATING;
/// `FWP_ACTION_PERMIT`: `0x2 | FWP_ACTION_FLAG_TERMINATING`.
pub const FWP_ACTION_PERMIT: FWP_ACTION_TYPE = 0x0000_0002 | FWP_ACTION_FLAG_TERMINATING;
/// `FWP_ACTION_CALLOUT_TERMINATING`: `0x3 | CALLOUT | TERMINATING`.
pub const FWP_ACTION_CALLOUT_TERMINATING: FWP_ACTION_TYPE =
    0x0000_0003 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_TERMINATING;
/// `FWP_ACTION_CALLOUT_INSPECTION`: `0x4 | CALLOUT | NON_TERMINATING`.
pub const FWP_ACTION_CALLOUT_INSPECTION: FWP_ACTION_TYPE =
    0x0000_0004 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_NON_TERMINATING;
/// `FWP_ACTION_CALLOUT_UNKNOWN`: `0x5 | CALLOUT`.
pub const FWP_ACTION_CALLOUT_UNKNOWN: FWP_ACTION_TYPE = 0x0000_0005 | FWP_ACTION_FLAG_CALLOUT;
/// `FWP_ACTION_CONTINUE`: `0x6 | NON_TERMINATING`; pass the decision on.
pub const FWP_ACTION_CONTINUE: FWP_ACTION_TYPE = 0x0000_0006 | FWP_ACTION_FLAG_NON_TERMINATING;
/// `FWP_ACTION_NONE`: no action.
pub const FWP_ACTION_NONE: FWP_ACTION_TYPE = 0x0000_0007;
/// `FWP_ACTION_NONE_NO_MATCH`: no action, the data did not match.
pub const FWP_ACTION_NONE_NO_MATCH: FWP_ACTION_TYPE = 0x0000_0008;

// ---------------------------------------------------------------------------
// Byte containers (fwptypes.h).
// ---------------------------------------------------------------------------

/// `FWP_BYTE_ARRAY16` (fwptypes.h): 16 bytes, e.g. an IPv6 address in
/// network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FWP_BYTE_ARRAY16 {
    /// The bytes.
    pub byteArray16: [UINT8; 16],
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_BYTE_ARRAY16>() == 16);
    assert!(align_of::<FWP_BYTE_ARRAY16>() == 1);
    assert!(offset_of!(FWP_BYTE_ARRAY16, byteArray16) == 0);
};

/// `FWP_BYTE_ARRAY6` (fwptypes.h): 6 bytes, e.g. a MAC address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FWP_BYTE_ARRAY6 {
    /// The bytes.
    pub byteArray6: [UINT8; 6],
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_BYTE_ARRAY6>() == 6);
    assert!(align_of::<FWP_BYTE_ARRAY6>() == 1);
    assert!(offset_of!(FWP_BYTE_ARRAY6, byteArray6) == 0);
};

/// `FWP_BYTE_BLOB` (fwptypes.h): `{ UINT32 size; UINT8 *data; }`.
///
/// The process path of the metadata and `FWP_BYTE_BLOB_TYPE` values use it; for
/// the app id the data is a NUL-terminated UTF-16 string and `size` counts
/// bytes including the terminator.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FWP_BYTE_BLOB {
    /// Number of bytes at `data`.
    pub size: UINT32,
    /// The bytes (may be null when `size` is 0).
    pub data: *mut UINT8,
}

// x64: size @0 (4 bytes) + 4 bytes padding so that the pointer is 8-aligned.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_BYTE_BLOB>() == 16);
    assert!(align_of::<FWP_BYTE_BLOB>() == 8);
    assert!(offset_of!(FWP_BYTE_BLOB, size) == 0);
    assert!(offset_of!(FWP_BYTE_BLOB, data) == 8);
};

/// `FWP_TOKEN_INFORMATION` (fwptypes.h): SIDs of a token.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FWP_TOKEN_INFORMATION {
    /// Number of entries at `sids`.
    pub sidCount: ULONG,
    /// `PSID_AND_ATTRIBUTES` array (opaque here).
    pub sids: *mut c_void,
    /// Number of entries at `restrictedSids`.
    pub restrictedSidCount: ULONG,
    /// `PSID_AND_ATTRIBUTES` array (opaque here).
    pub restrictedSids: *mut c_void,
}

// x64: 4 + pad 4, ptr @8, 4 @16 + pad 4, ptr @24 => 32.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_TOKEN_INFORMATION>() == 32);
    assert!(align_of::<FWP_TOKEN_INFORMATION>() == 8);
    assert!(offset_of!(FWP_TOKEN_INFORMATION, sidCount) == 0);
    assert!(offset_of!(FWP_TOKEN_INFORMATION, sids) == 8);
    assert!(offset_of!(FWP_TOKEN_INFORMATION, restrictedSidCount) == 16);
    assert!(offset_of!(FWP_TOKEN_INFORMATION, restrictedSids) == 24);
};

/// `FWP_V4_ADDR_AND_MASK` (fwptypes.h): IPv4 address and mask, host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FWP_V4_ADDR_AND_MASK {
    /// Address.
    pub addr: UINT32,
    /// Mask.
    pub mask: UINT32,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_V4_ADDR_AND_MASK>() == 8);
    assert!(align_of::<FWP_V4_ADDR_AND_MASK>() == 4);
    assert!(offset_of!(FWP_V4_ADDR_AND_MASK, addr) == 0);
    assert!(offset_of!(FWP_V4_ADDR_AND_MASK, mask) == 4);
};

/// `FWP_V6_ADDR_AND_MASK` (fwptypes.h): IPv6 address and prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FWP_V6_ADDR_AND_MASK {
    /// Address, network order.
    pub addr: [UINT8; 16],
    /// Prefix length in bits.
    pub prefixLength: UINT8,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_V6_ADDR_AND_MASK>() == 17);
    assert!(align_of::<FWP_V6_ADDR_AND_MASK>() == 1);
    assert!(offset_of!(FWP_V6_ADDR_AND_MASK, addr) == 0);
    assert!(offset_of!(FWP_V6_ADDR_AND_MASK, prefixLength) == 16);
};

// ---------------------------------------------------------------------------
// FWP_VALUE0 (fwptypes.h).
// ---------------------------------------------------------------------------

/// The anonymous union of [`FWP_VALUE0`] (fwptypes.h).
///
/// Which member is valid is told by [`FWP_VALUE0::type`]. Named like `windows-sys` names it, so
/// code reads `value.Anonymous.uint32` where C reads `value.uint32`.
///
/// Note that `uint64`, `int64` and `double64` are **pointers** to the value,
/// on every architecture (the union stays pointer-sized).
#[repr(C)]
#[derive(Clone, Copy)]
pub union FWP_VALUE0_0 {
    /// `FWP_UINT8`.
    pub uint8: UINT8,
    /// `FWP_UINT16` (ports, in host order).
    pub uint16: UINT16,
    /// `FWP_UINT32` (IPv4 addresses, in host order; directions; flags).
    pub uint32: UINT32,
    /// `FWP_UINT64`: pointer to the value (e.g. an interface LUID).
    pub uint64: *mut UINT64,
    /// `FWP_INT8`.
    pub int8: INT8,
    /// `FWP_INT16`.
    pub int16: INT16,
    /// `FWP_INT32`.
    pub int32: INT32,
    /// `FWP_INT64`: pointer to the value.
    pub int64: *mut INT64,
    /// `FWP_FLOAT`.
    pub float32: f32,
    /// `FWP_DOUBLE`: pointer to the value.
    pub double64: *mut f64,
    /// `FWP_BYTE_ARRAY16_TYPE` (IPv6 addresses, network order).
    pub byteArray16: *mut FWP_BYTE_ARRAY16,
    /// `FWP_BYTE_BLOB_TYPE`.
    pub byteBlob: *mut FWP_BYTE_BLOB,
    /// `FWP_SID`.
    pub sid: PSID,
    /// `FWP_SECURITY_DESCRIPTOR_TYPE`: a `SECURITY_DESCRIPTOR` in a blob.
    pub sd: *mut FWP_BYTE_BLOB,
    /// `FWP_TOKEN_INFORMATION_TYPE`.
    pub tokenInformation: *mut FWP_TOKEN_INFORMATION,
    /// `FWP_TOKEN_ACCESS_INFORMATION_TYPE`: a `TOKEN_ACCESS_INFORMATION` in a blob.
    pub tokenAccessInformation: *mut FWP_BYTE_BLOB,
    /// `FWP_UNICODE_STRING_TYPE`.
    pub unicodeString: LPWSTR,
    /// `FWP_BYTE_ARRAY6_TYPE`.
    pub byteArray6: *mut FWP_BYTE_ARRAY6,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<FWP_VALUE0_0>() == 8);
    assert!(align_of::<FWP_VALUE0_0>() == 8);
};

/// `FWP_VALUE0` (fwptypes.h): a tagged value; the incoming data values of a
/// classify ([`crate::FWPS_INCOMING_VALUE0`]) are of this type.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWP_VALUE0 {
    /// Which union member is valid (`FWP_EMPTY`, `FWP_UINT8`, ...).
    pub r#type: FWP_DATA_TYPE,
    /// The value.
    pub Anonymous: FWP_VALUE0_0,
}

// x64: type (enum, 4) @0, 4 bytes padding, union (pointer-aligned) @8 => 16.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_VALUE0>() == 16);
    assert!(align_of::<FWP_VALUE0>() == 8);
    assert!(offset_of!(FWP_VALUE0, r#type) == 0);
    assert!(offset_of!(FWP_VALUE0, Anonymous) == 8);
};

impl FWP_VALUE0 {
    /// An `FWP_EMPTY` value.
    pub const EMPTY: Self = Self {
        r#type: FWP_EMPTY,
        Anonymous: FWP_VALUE0_0 {
            uint64: core::ptr::null_mut(),
        },
    };

    /// The `uint8` member if the tag is `FWP_UINT8`.
    #[must_use]
    pub const fn uint8(&self) -> Option<UINT8> {
        if self.r#type == FWP_UINT8 {
            // SAFETY: the tag says the engine (or whoever built the value)
            // stored the `uint8` member, so that byte is initialised, and
            // every bit pattern is a valid `u8`.
            Some(unsafe { self.Anonymous.uint8 })
        } else {
            None
        }
    }

    /// The `uint16` member if the tag is `FWP_UINT16`.
    #[must_use]
    pub const fn uint16(&self) -> Option<UINT16> {
        if self.r#type == FWP_UINT16 {
            // SAFETY: the tag says the `uint16` member was stored; every bit
            // pattern is a valid `u16`.
            Some(unsafe { self.Anonymous.uint16 })
        } else {
            None
        }
    }

    /// The `uint32` member if the tag is `FWP_UINT32`.
    #[must_use]
    pub const fn uint32(&self) -> Option<UINT32> {
        if self.r#type == FWP_UINT32 {
            // SAFETY: the tag says the `uint32` member was stored; every bit
            // pattern is a valid `u32`.
            Some(unsafe { self.Anonymous.uint32 })
        } else {
            None
        }
    }

    /// The `uint64` member (a pointer) if the tag is `FWP_UINT64`.
    #[must_use]
    pub const fn uint64_ptr(&self) -> Option<*mut UINT64> {
        if self.r#type == FWP_UINT64 {
            // SAFETY: the tag says the pointer member was stored; reading a
            // raw pointer value does not dereference it.
            Some(unsafe { self.Anonymous.uint64 })
        } else {
            None
        }
    }

    /// The `byteArray16` member (a pointer) if the tag is
    /// `FWP_BYTE_ARRAY16_TYPE`.
    #[must_use]
    pub const fn byte_array16_ptr(&self) -> Option<*mut FWP_BYTE_ARRAY16> {
        if self.r#type == FWP_BYTE_ARRAY16_TYPE {
            // SAFETY: the tag says the pointer member was stored; reading a
            // raw pointer value does not dereference it.
            Some(unsafe { self.Anonymous.byteArray16 })
        } else {
            None
        }
    }

    /// The `byteBlob` member (a pointer) if the tag is `FWP_BYTE_BLOB_TYPE`.
    #[must_use]
    pub const fn byte_blob_ptr(&self) -> Option<*mut FWP_BYTE_BLOB> {
        if self.r#type == FWP_BYTE_BLOB_TYPE {
            // SAFETY: the tag says the pointer member was stored; reading a
            // raw pointer value does not dereference it.
            Some(unsafe { self.Anonymous.byteBlob })
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// FWP_RANGE0, FWP_CONDITION_VALUE0 (fwptypes.h).
// ---------------------------------------------------------------------------

/// `FWP_RANGE0` (fwptypes.h): an inclusive range of two [`FWP_VALUE0`]s.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWP_RANGE0 {
    /// Low end.
    pub valueLow: FWP_VALUE0,
    /// High end.
    pub valueHigh: FWP_VALUE0,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_RANGE0>() == 32);
    assert!(align_of::<FWP_RANGE0>() == 8);
    assert!(offset_of!(FWP_RANGE0, valueLow) == 0);
    assert!(offset_of!(FWP_RANGE0, valueHigh) == 16);
};

/// The anonymous union of [`FWP_CONDITION_VALUE0`] (fwptypes.h): the members
/// of [`FWP_VALUE0_0`] plus the three condition-only pointer members.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FWP_CONDITION_VALUE0_0 {
    /// `FWP_UINT8`.
    pub uint8: UINT8,
    /// `FWP_UINT16`.
    pub uint16: UINT16,
    /// `FWP_UINT32`.
    pub uint32: UINT32,
    /// `FWP_UINT64`: pointer to the value.
    pub uint64: *mut UINT64,
    /// `FWP_INT8`.
    pub int8: INT8,
    /// `FWP_INT16`.
    pub int16: INT16,
    /// `FWP_INT32`.
    pub int32: INT32,
    /// `FWP_INT64`: pointer to the value.
    pub int64: *mut INT64,
    /// `FWP_FLOAT`.
    pub float32: f32,
    /// `FWP_DOUBLE`: pointer to the value.
    pub double64: *mut f64,
    /// `FWP_BYTE_ARRAY16_TYPE`.
    pub byteArray16: *mut FWP_BYTE_ARRAY16,
    /// `FWP_BYTE_BLOB_TYPE`.
    pub byteBlob: *mut FWP_BYTE_BLOB,
    /// `FWP_SID`.
    pub sid: PSID,
    /// `FWP_SECURITY_DESCRIPTOR_TYPE`.
    pub sd: *mut FWP_BYTE_BLOB,
    /// `FWP_TOKEN_INFORMATION_TYPE`.
    pub tokenInformation: *mut FWP_TOKEN_INFORMATION,
    /// `FWP_TOKEN_ACCESS_INFORMATION_TYPE`.
    pub tokenAccessInformation: *mut FWP_BYTE_BLOB,
    /// `FWP_UNICODE_STRING_TYPE`.
    pub unicodeString: LPWSTR,
    /// `FWP_BYTE_ARRAY6_TYPE`.
    pub byteArray6: *mut FWP_BYTE_ARRAY6,
    /// `FWP_V4_ADDR_MASK`.
    pub v4AddrMask: *mut FWP_V4_ADDR_AND_MASK,
    /// `FWP_V6_ADDR_MASK`.
    pub v6AddrMask: *mut FWP_V6_ADDR_AND_MASK,
    /// `FWP_RANGE_TYPE`.
    pub rangeValue: *mut FWP_RANGE0,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<FWP_CONDITION_VALUE0_0>() == 8);
    assert!(align_of::<FWP_CONDITION_VALUE0_0>() == 8);
};

/// `FWP_CONDITION_VALUE0` (fwptypes.h): the value a filter condition tests
/// against; used by [`crate::FWPS_FILTER_CONDITION0`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWP_CONDITION_VALUE0 {
    /// Which union member is valid.
    pub r#type: FWP_DATA_TYPE,
    /// The value.
    pub Anonymous: FWP_CONDITION_VALUE0_0,
}

// x64: same shape as FWP_VALUE0: tag @0, padding, union @8 => 16.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWP_CONDITION_VALUE0>() == 16);
    assert!(align_of::<FWP_CONDITION_VALUE0>() == 8);
    assert!(offset_of!(FWP_CONDITION_VALUE0, r#type) == 0);
    assert!(offset_of!(FWP_CONDITION_VALUE0, Anonymous) == 8);
};
