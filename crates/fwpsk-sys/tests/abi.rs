//! Host tests of the fwpsk-sys declarations: values built in memory the way
//! the filter engine lays them out, read back through the declared types,
//! and the numeric facts the driver relies on.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr;

use fwpsk_sys::*;

/// A zeroed value of a plain C structure.
const fn zeroed<T: Copy>() -> T {
    // SAFETY: only called for the `repr(C)` structures of this crate, made
    // of integers, raw pointers, `Option<fn>` and unions of those, for all
    // of which the all-zero bit pattern is valid.
    unsafe { core::mem::zeroed() }
}

/// Reads a `T` at `offset` bytes from `base`, the way C code would.
///
/// # Safety
///
/// `base + offset .. + size_of::<T>()` must lie inside one live, initialised
/// object.
const unsafe fn read_at<T: Copy>(base: *const u8, offset: usize) -> T {
    // SAFETY: in bounds and initialised per the caller; unaligned read.
    unsafe { base.wrapping_add(offset).cast::<T>().read_unaligned() }
}

const fn u8_value(v: u8) -> FWPS_INCOMING_VALUE0 {
    FWPS_INCOMING_VALUE0 {
        value: FWP_VALUE0 {
            r#type: FWP_UINT8,
            Anonymous: FWP_VALUE0_0 { uint8: v },
        },
    }
}

const fn u16_value(v: u16) -> FWPS_INCOMING_VALUE0 {
    FWPS_INCOMING_VALUE0 {
        value: FWP_VALUE0 {
            r#type: FWP_UINT16,
            Anonymous: FWP_VALUE0_0 { uint16: v },
        },
    }
}

const fn u32_value(v: u32) -> FWPS_INCOMING_VALUE0 {
    FWPS_INCOMING_VALUE0 {
        value: FWP_VALUE0 {
            r#type: FWP_UINT32,
            Anonymous: FWP_VALUE0_0 { uint32: v },
        },
    }
}

#[test]
fn flow_established_v4_fields_read_through_the_declared_layout() {
    let mut values = [FWPS_INCOMING_VALUE0 {
        value: FWP_VALUE0::EMPTY,
    }; FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_MAX as usize];
    values[FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_ADDRESS as usize] = u32_value(0xC0A8_0001);
    values[FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_PORT as usize] = u16_value(50_000);
    values[FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_ADDRESS as usize] = u32_value(0x0808_0808);
    values[FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_PORT as usize] = u16_value(443);
    values[FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_PROTOCOL as usize] = u8_value(6);
    values[FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_DIRECTION as usize] =
        u32_value(FWP_DIRECTION_OUTBOUND.cast_unsigned());

    let incoming = FWPS_INCOMING_VALUES0 {
        layerId: FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4,
        valueCount: FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_MAX,
        incomingValue: values.as_mut_ptr(),
    };

    // SAFETY: `incomingValue` points to `valueCount` initialised entries
    // that outlive `incoming`.
    let read = |index| unsafe { incoming.value(index) }.copied();
    assert_eq!(incoming.layerId, 52);
    assert_eq!(
        read(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_ADDRESS).and_then(|v| v.uint32()),
        Some(0xC0A8_0001)
    );
    assert_eq!(
        read(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_PORT).and_then(|v| v.uint16()),
        Some(50_000)
    );
    assert_eq!(
        read(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_PORT).and_then(|v| v.uint16()),
        Some(443)
    );
    assert_eq!(
        read(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_PROTOCOL).and_then(|v| v.uint8()),
        Some(6)
    );
    assert_eq!(
        read(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_DIRECTION).and_then(|v| v.uint32()),
        Some(0)
    );
    // A tag mismatch is refused rather than reinterpreted.
    assert_eq!(
        read(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_PORT).and_then(|v| v.uint32()),
        None
    );
    // Out of range (an older Windows passes fewer fields) and null arrays.
    assert!(read(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_MAX).is_none());
    let short = FWPS_INCOMING_VALUES0 {
        valueCount: 5,
        ..incoming
    };
    // SAFETY: as above, with a smaller count.
    assert!(unsafe { short.value(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_ADDRESS) }.is_none());
    let null = FWPS_INCOMING_VALUES0 {
        incomingValue: ptr::null_mut(),
        ..incoming
    };
    // SAFETY: a null array is allowed by the contract.
    assert!(unsafe { null.value(0) }.is_none());

    // The same bytes, read the way C code would: element `i` at byte
    // `16 * i`, the tag at +0 and the union at +8.
    // SAFETY: `values` is a live array of `MAX` 16-byte entries.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            values.as_ptr().cast::<u8>(),
            size_of::<FWPS_INCOMING_VALUE0>() * values.len(),
        )
    };
    let port_at = 16 * FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_PORT as usize;
    assert_eq!(
        i32::from_ne_bytes(bytes[port_at..port_at + 4].try_into().unwrap()),
        FWP_UINT16
    );
    assert_eq!(
        u16::from_ne_bytes(bytes[port_at + 8..port_at + 10].try_into().unwrap()),
        443
    );
}

#[test]
fn ipv6_address_is_a_pointer_to_a_byte_array16() {
    let mut addr = FWP_BYTE_ARRAY16 {
        byteArray16: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    };
    let value = FWP_VALUE0 {
        r#type: FWP_BYTE_ARRAY16_TYPE,
        Anonymous: FWP_VALUE0_0 {
            byteArray16: &raw mut addr,
        },
    };
    let p = value.byte_array16_ptr().unwrap();
    // SAFETY: `p` points to `addr`, alive for the whole test.
    assert_eq!(unsafe { (*p).byteArray16 }[15], 1);
    assert!(value.uint32().is_none());

    let mut luid: u64 = 0x0006_0000_0000_0001;
    let value = FWP_VALUE0 {
        r#type: FWP_UINT64,
        Anonymous: FWP_VALUE0_0 {
            uint64: &raw mut luid,
        },
    };
    // SAFETY: the pointer refers to `luid`.
    assert_eq!(unsafe { *value.uint64_ptr().unwrap() }, luid);
}

/// Asserts that `fields` are exactly `0..max`: no gap, no duplicate, and
/// `max` is their count.
fn check_dense(name: &str, fields: &[u32], max: u32) {
    let mut sorted = fields.to_vec();
    sorted.sort_unstable();
    let expected: Vec<u32> = (0..max).collect();
    assert_eq!(
        sorted, expected,
        "{name}: indices must be 0..MAX without gaps"
    );
    assert_eq!(
        u32::try_from(fields.len()).unwrap(),
        max,
        "{name}: MAX is the count"
    );
}

#[test]
fn flow_established_fields_are_dense_and_max_is_the_count() {
    check_dense(
        "ALE_FLOW_ESTABLISHED_V4",
        &[
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_APP_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_USER_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_ADDRESS,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_ADDRESS_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_PORT,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_PROTOCOL,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_ADDRESS,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_PORT,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_REMOTE_USER_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_REMOTE_MACHINE_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_DESTINATION_ADDRESS_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_INTERFACE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_DIRECTION,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_INTERFACE_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_TUNNEL_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_FLAGS,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_ORIGINAL_APP_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_PACKAGE_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_SECURITY_ATTRIBUTE_FQBN_VALUE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_COMPARTMENT_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_RESERVED_0,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_RESERVED_1,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_RESERVED_2,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_RESERVED_3,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_PACKAGE_FAMILY_NAME,
        ],
        FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_MAX,
    );
    check_dense(
        "ALE_FLOW_ESTABLISHED_V6",
        &[
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_APP_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_USER_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_LOCAL_ADDRESS,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_LOCAL_ADDRESS_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_LOCAL_PORT,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_PROTOCOL,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_REMOTE_ADDRESS,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_REMOTE_PORT,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_REMOTE_USER_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_REMOTE_MACHINE_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_DESTINATION_ADDRESS_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_LOCAL_INTERFACE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_DIRECTION,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_INTERFACE_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_TUNNEL_TYPE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_FLAGS,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_ORIGINAL_APP_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_PACKAGE_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_SECURITY_ATTRIBUTE_FQBN_VALUE,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_COMPARTMENT_ID,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_RESERVED_0,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_RESERVED_1,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_RESERVED_2,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_RESERVED_3,
            FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_PACKAGE_FAMILY_NAME,
        ],
        FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_MAX,
    );
}

#[test]
fn stream_fields_are_dense_and_max_is_the_count() {
    check_dense(
        "STREAM_V4",
        &[
            FWPS_FIELD_STREAM_V4_IP_LOCAL_ADDRESS,
            FWPS_FIELD_STREAM_V4_IP_LOCAL_ADDRESS_TYPE,
            FWPS_FIELD_STREAM_V4_IP_REMOTE_ADDRESS,
            FWPS_FIELD_STREAM_V4_IP_LOCAL_PORT,
            FWPS_FIELD_STREAM_V4_IP_REMOTE_PORT,
            FWPS_FIELD_STREAM_V4_DIRECTION,
            FWPS_FIELD_STREAM_V4_FLAGS,
            FWPS_FIELD_STREAM_V4_COMPARTMENT_ID,
        ],
        FWPS_FIELD_STREAM_V4_MAX,
    );
    check_dense(
        "STREAM_V6",
        &[
            FWPS_FIELD_STREAM_V6_IP_LOCAL_ADDRESS,
            FWPS_FIELD_STREAM_V6_IP_LOCAL_ADDRESS_TYPE,
            FWPS_FIELD_STREAM_V6_IP_REMOTE_ADDRESS,
            FWPS_FIELD_STREAM_V6_IP_LOCAL_PORT,
            FWPS_FIELD_STREAM_V6_IP_REMOTE_PORT,
            FWPS_FIELD_STREAM_V6_DIRECTION,
            FWPS_FIELD_STREAM_V6_FLAGS,
            FWPS_FIELD_STREAM_V6_COMPARTMENT_ID,
        ],
        FWPS_FIELD_STREAM_V6_MAX,
    );
}

#[test]
fn datagram_data_fields_are_dense_and_max_is_the_count() {
    check_dense(
        "DATAGRAM_DATA_V4",
        &[
            FWPS_FIELD_DATAGRAM_DATA_V4_IP_PROTOCOL,
            FWPS_FIELD_DATAGRAM_DATA_V4_IP_LOCAL_ADDRESS,
            FWPS_FIELD_DATAGRAM_DATA_V4_IP_REMOTE_ADDRESS,
            FWPS_FIELD_DATAGRAM_DATA_V4_IP_LOCAL_ADDRESS_TYPE,
            FWPS_FIELD_DATAGRAM_DATA_V4_IP_LOCAL_PORT,
            FWPS_FIELD_DATAGRAM_DATA_V4_IP_REMOTE_PORT,
            FWPS_FIELD_DATAGRAM_DATA_V4_IP_LOCAL_INTERFACE,
            FWPS_FIELD_DATAGRAM_DATA_V4_INTERFACE_INDEX,
            FWPS_FIELD_DATAGRAM_DATA_V4_SUB_INTERFACE_INDEX,
            FWPS_FIELD_DATAGRAM_DATA_V4_DIRECTION,
            FWPS_FIELD_DATAGRAM_DATA_V4_FLAGS,
            FWPS_FIELD_DATAGRAM_DATA_V4_INTERFACE_TYPE,
            FWPS_FIELD_DATAGRAM_DATA_V4_TUNNEL_TYPE,
            FWPS_FIELD_DATAGRAM_DATA_V4_COMPARTMENT_ID,
        ],
        FWPS_FIELD_DATAGRAM_DATA_V4_MAX,
    );
    check_dense(
        "DATAGRAM_DATA_V6",
        &[
            FWPS_FIELD_DATAGRAM_DATA_V6_IP_PROTOCOL,
            FWPS_FIELD_DATAGRAM_DATA_V6_IP_LOCAL_ADDRESS,
            FWPS_FIELD_DATAGRAM_DATA_V6_IP_REMOTE_ADDRESS,
            FWPS_FIELD_DATAGRAM_DATA_V6_IP_LOCAL_ADDRESS_TYPE,
            FWPS_FIELD_DATAGRAM_DATA_V6_IP_LOCAL_PORT,
            FWPS_FIELD_DATAGRAM_DATA_V6_IP_REMOTE_PORT,
            FWPS_FIELD_DATAGRAM_DATA_V6_IP_LOCAL_INTERFACE,
            FWPS_FIELD_DATAGRAM_DATA_V6_INTERFACE_INDEX,
            FWPS_FIELD_DATAGRAM_DATA_V6_SUB_INTERFACE_INDEX,
            FWPS_FIELD_DATAGRAM_DATA_V6_DIRECTION,
            FWPS_FIELD_DATAGRAM_DATA_V6_FLAGS,
            FWPS_FIELD_DATAGRAM_DATA_V6_INTERFACE_TYPE,
            FWPS_FIELD_DATAGRAM_DATA_V6_TUNNEL_TYPE,
            FWPS_FIELD_DATAGRAM_DATA_V6_COMPARTMENT_ID,
        ],
        FWPS_FIELD_DATAGRAM_DATA_V6_MAX,
    );
    // The documented counts of the Windows 7-era headers: the leading
    // fields a callout reads have not moved since.
    assert_eq!(FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_TUNNEL_TYPE, 14);
    assert_eq!(FWPS_FIELD_DATAGRAM_DATA_V4_TUNNEL_TYPE, 12);
    assert_eq!(FWPS_FIELD_STREAM_V4_FLAGS, 6);
    assert_eq!(
        FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ICMP_TYPE,
        FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_PORT
    );
    assert_eq!(
        FWPS_FIELD_DATAGRAM_DATA_V6_ICMP_CODE,
        FWPS_FIELD_DATAGRAM_DATA_V6_IP_REMOTE_PORT
    );
}

#[test]
fn layer_ids_follow_the_builtin_layers_pattern() {
    // Each family is (V4, V4_DISCARD, V6, V6_DISCARD).
    for (v4, v4d, v6, v6d) in [
        (
            FWPS_LAYER_STREAM_V4,
            FWPS_LAYER_STREAM_V4_DISCARD,
            FWPS_LAYER_STREAM_V6,
            FWPS_LAYER_STREAM_V6_DISCARD,
        ),
        (
            FWPS_LAYER_DATAGRAM_DATA_V4,
            FWPS_LAYER_DATAGRAM_DATA_V4_DISCARD,
            FWPS_LAYER_DATAGRAM_DATA_V6,
            FWPS_LAYER_DATAGRAM_DATA_V6_DISCARD,
        ),
        (
            FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4,
            FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4_DISCARD,
            FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6,
            FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6_DISCARD,
        ),
    ] {
        assert_eq!((v4d, v6, v6d), (v4 + 1, v4 + 2, v4 + 3));
        assert_eq!(v4 % 4, 0);
    }
    assert_eq!(
        [
            FWPS_LAYER_STREAM_V4,
            FWPS_LAYER_DATAGRAM_DATA_V4,
            FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4
        ],
        [20, 24, 52]
    );
    assert_eq!(
        FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6_DISCARD + 1,
        FWPS_VISTA_LAYER_COUNT
    );
}

#[test]
fn ntstatus_constants_keep_their_bit_patterns() {
    let patterns: [(NTSTATUS, u32); 12] = [
        (STATUS_SUCCESS, 0x0000_0000),
        (STATUS_PENDING, 0x0000_0103),
        (STATUS_OBJECT_NAME_EXISTS, 0x4000_0000),
        (STATUS_DEVICE_BUSY, 0x8000_0011),
        (STATUS_UNSUCCESSFUL, 0xC000_0001),
        (STATUS_INVALID_PARAMETER, 0xC000_000D),
        (STATUS_NOT_SUPPORTED, 0xC000_00BB),
        (STATUS_FWP_CALLOUT_NOT_FOUND, 0xC022_0001),
        (STATUS_FWP_ALREADY_EXISTS, 0xC022_0009),
        (STATUS_FWP_IN_USE, 0xC022_000A),
        (STATUS_FWP_INCOMPATIBLE_LAYER, 0xC022_0014),
        (STATUS_FWP_TOO_MANY_CALLOUTS, 0xC022_0018),
    ];
    for (status, bits) in patterns {
        assert_eq!(status.cast_unsigned(), bits);
        assert_eq!(status.to_le_bytes(), bits.to_le_bytes());
    }
    assert_eq!(STATUS_FWP_CALLOUT_NOT_FOUND, -1_071_513_599);
    assert_eq!(FWP_E_CALLOUT_NOT_FOUND.cast_unsigned(), 0x8032_0001);

    // Severity classes, the traps a driver must not fall into.
    assert!(NT_SUCCESS(STATUS_SUCCESS) && NT_SUCCESS(STATUS_PENDING));
    assert!(NT_SUCCESS(STATUS_OBJECT_NAME_EXISTS) && NT_INFORMATION(STATUS_OBJECT_NAME_EXISTS));
    assert!(!NT_SUCCESS(STATUS_DEVICE_BUSY) && NT_WARNING(STATUS_DEVICE_BUSY));
    assert!(NT_ERROR(STATUS_FWP_CALLOUT_NOT_FOUND) && !NT_SUCCESS(STATUS_FWP_CALLOUT_NOT_FOUND));

    // Every STATUS_FWP_* is an error of FACILITY_FWP; the user-mode HRESULT
    // twin carries the same code in facility 0x32.
    for status in [
        STATUS_FWP_CALLOUT_NOT_FOUND,
        STATUS_FWP_ALREADY_EXISTS,
        STATUS_FWP_IN_USE,
        STATUS_FWP_INCOMPATIBLE_LAYER,
        STATUS_FWP_TOO_MANY_CALLOUTS,
        STATUS_FWP_TCPIP_NOT_READY,
        STATUS_FWP_INJECT_HANDLE_CLOSING,
    ] {
        assert!(NT_ERROR(status));
        assert_eq!(ntstatus_facility(status), NTSTATUS_FACILITY_FWP);
    }
    assert_eq!(
        FWP_E_CALLOUT_NOT_FOUND & 0xffff,
        STATUS_FWP_CALLOUT_NOT_FOUND & 0xffff
    );
    assert_eq!(
        (FWP_E_CALLOUT_NOT_FOUND.cast_unsigned() >> 16) & 0x0fff,
        0x32
    );
}

#[test]
fn action_types_are_composed_as_documented() {
    assert_eq!(FWP_ACTION_BLOCK, 0x1001);
    assert_eq!(FWP_ACTION_PERMIT, 0x1002);
    assert_eq!(FWP_ACTION_CALLOUT_TERMINATING, 0x5003);
    assert_eq!(FWP_ACTION_CALLOUT_INSPECTION, 0x6004);
    assert_eq!(FWP_ACTION_CALLOUT_UNKNOWN, 0x4005);
    assert_eq!(FWP_ACTION_CONTINUE, 0x2006);
    for terminating in [
        FWP_ACTION_BLOCK,
        FWP_ACTION_PERMIT,
        FWP_ACTION_CALLOUT_TERMINATING,
    ] {
        assert_ne!(terminating & FWP_ACTION_FLAG_TERMINATING, 0);
    }
    for callout in [
        FWP_ACTION_CALLOUT_TERMINATING,
        FWP_ACTION_CALLOUT_INSPECTION,
        FWP_ACTION_CALLOUT_UNKNOWN,
    ] {
        assert_ne!(callout & FWP_ACTION_FLAG_CALLOUT, 0);
    }
    assert_eq!(FWP_ACTION_CONTINUE & FWP_ACTION_FLAG_TERMINATING, 0);
}

#[test]
fn classify_out_rights_protocol_on_the_declared_layout() {
    let mut out = FWPS_CLASSIFY_OUT0 {
        rights: FWPS_RIGHT_ACTION_WRITE,
        ..FWPS_CLASSIFY_OUT0::default()
    };
    // What an inspection callout does through the pointer it receives.
    let p: *mut FWPS_CLASSIFY_OUT0 = &raw mut out;
    // SAFETY: `p` points to `out`, which nothing else borrows.
    let seen = unsafe { &mut *p };
    if seen.rights & FWPS_RIGHT_ACTION_WRITE != 0 {
        seen.actionType = FWP_ACTION_CONTINUE;
    }
    // SAFETY: the first 4 bytes of the live 40-byte `out`.
    let action: u32 = unsafe { read_at(p.cast_const().cast(), 0) };
    assert_eq!(action, FWP_ACTION_CONTINUE);
    assert_eq!(offset_of!(FWPS_CLASSIFY_OUT0, rights), 24);
}

#[test]
fn metadata_members_at_their_x64_offsets() {
    let mut meta: FWPS_INCOMING_METADATA_VALUES0 = zeroed();
    let mut path: Vec<u16> = "C:\\x.exe\0".encode_utf16().collect();
    let mut blob = FWP_BYTE_BLOB {
        size: u32::try_from(path.len() * 2).unwrap(),
        data: path.as_mut_ptr().cast(),
    };
    meta.currentMetadataValues = FWPS_METADATA_FIELD_FLOW_HANDLE
        | FWPS_METADATA_FIELD_PROCESS_ID
        | FWPS_METADATA_FIELD_PROCESS_PATH;
    meta.flowHandle = 0x1122_3344_5566_7788;
    meta.processId = 4242;
    meta.processPath = &raw mut blob;
    meta.reserved1 = 0xDEAD_BEEF;

    assert!(FWPS_IS_METADATA_FIELD_PRESENT(
        &meta,
        FWPS_METADATA_FIELD_FLOW_HANDLE
    ));
    assert!(FWPS_IS_METADATA_FIELD_PRESENT(
        &meta,
        FWPS_METADATA_FIELD_FLOW_HANDLE | FWPS_METADATA_FIELD_PROCESS_ID
    ));
    assert!(!FWPS_IS_METADATA_FIELD_PRESENT(
        &meta,
        FWPS_METADATA_FIELD_TOKEN
    ));
    assert!(!FWPS_IS_METADATA_FIELD_PRESENT(
        &meta,
        FWPS_METADATA_FIELD_FLOW_HANDLE | FWPS_METADATA_FIELD_TOKEN
    ));
    assert!(!FWPS_IS_L2_METADATA_FIELD_PRESENT(
        &meta,
        FWPS_L2_METADATA_FIELD_ETHERNET_MAC_HEADER_SIZE
    ));

    // Read the members back at the byte offsets of the C layout.
    let base = (&raw const meta).cast::<u8>();
    // SAFETY: (four reads) offsets 32, 64, 48 and 272 lie inside the
    // 280-byte zero-initialised structure and hold the members written above.
    let flow: u64 = unsafe { read_at(base, 32) };
    // SAFETY: as above.
    let pid: u64 = unsafe { read_at(base, 64) };
    // SAFETY: as above.
    let path_ptr: *mut FWP_BYTE_BLOB = unsafe { read_at(base, 48) };
    // SAFETY: as above.
    let tail: u64 = unsafe { read_at(base, 272) };
    assert_eq!(
        (flow, pid, tail),
        (0x1122_3344_5566_7788, 4242, 0xDEAD_BEEF)
    );
    // SAFETY: `path_ptr` is `&blob`, whose data is `path`.
    let size = unsafe { (*path_ptr).size };
    assert_eq!(size, 18); // "C:\\x.exe" and the NUL: 9 UTF-16 units.
    assert_eq!(size_of::<FWPS_INCOMING_METADATA_VALUES0>(), 280);
}

#[test]
fn scope_id_bit_fields_and_ip_prefix() {
    let scope = SCOPE_ID { Value: 0x2000_0005 };
    assert_eq!((scope.Zone(), scope.Level()), (5, 2));

    let mut prefix: IP_ADDRESS_PREFIX = zeroed();
    prefix.Prefix.Ipv4 = SOCKADDR_IN {
        sin_family: AF_INET,
        sin_port: 443_u16.to_be(),
        sin_addr: IN_ADDR {
            S_un: IN_ADDR_0 {
                S_un_b: [10, 0, 0, 1],
            },
        },
        sin_zero: [0; 8],
    };
    prefix.PrefixLength = 24;
    // SAFETY: `si_family` overlays `sin_family`, which was written.
    let family = unsafe { prefix.Prefix.si_family };
    assert_eq!(family, AF_INET);
    // SAFETY: the Ipv4 member was written as a whole.
    let v4 = unsafe { prefix.Prefix.Ipv4 };
    // SAFETY: `S_un_b` was written, `S_addr` covers the same 4 bytes.
    let addr = unsafe { v4.sin_addr.S_un.S_addr };
    assert_eq!(addr, u32::from_ne_bytes([10, 0, 0, 1]));
    assert_eq!((AF_UNSPEC, AF_INET, AF_INET6), (0, 2, 23));
}

/// Builds a net buffer view with `len` bytes.
const fn nb(len: usize, next: *mut NET_BUFFER_HEADER_VIEW) -> NET_BUFFER_HEADER_VIEW {
    NET_BUFFER_HEADER_VIEW {
        Next: next,
        CurrentMdl: ptr::null_mut(),
        CurrentMdlOffset: 0,
        DataLength: NET_BUFFER_DATA_LENGTH { stDataLength: len },
        MdlChain: ptr::null_mut(),
        DataOffset: 0,
    }
}

#[test]
fn net_buffer_views_count_bytes_of_lists_and_chains() {
    // List A: 1500 + 40 bytes; list B: 9000 bytes.
    let mut a2 = nb(40, ptr::null_mut());
    let mut a1 = nb(1500, &raw mut a2);
    let mut b1 = nb(9000, ptr::null_mut());
    let mut list_b = NET_BUFFER_LIST_HEADER_VIEW {
        Next: ptr::null_mut(),
        FirstNetBuffer: &raw mut b1,
    };
    let list_a = NET_BUFFER_LIST_HEADER_VIEW {
        Next: &raw mut list_b,
        FirstNetBuffer: &raw mut a1,
    };

    // SAFETY: (four calls) both lists and their buffers live on this stack
    // frame and are null-terminated; null is allowed.
    let one = unsafe { net_buffer_list_data_length(&raw const list_a) };
    // SAFETY: as above.
    let chain = unsafe { net_buffer_list_chain_data_length(&raw const list_a) };
    // SAFETY: as above.
    let none = unsafe { net_buffer_list_data_length(ptr::null()) };
    // SAFETY: as above.
    let no_chain = unsafe { net_buffer_list_chain_data_length(ptr::null()) };
    assert_eq!((one, chain, none, no_chain), (1540, 10_540, 0, 0));
    // DataLength is the low half of the SIZE_T at 0x18 (little-endian).
    let base = (&raw const a1).cast::<u8>();
    // SAFETY: offset 0x18 lies inside the 48-byte view.
    assert_eq!(unsafe { read_at::<u32>(base, 0x18) }, 1500);
    assert_eq!(a1.data_length(), 1500);
    let list_ptr = (&raw const list_a).cast::<u8>();
    // SAFETY: offset 8 (FirstNetBuffer) lies inside the 16-byte view.
    let first: *mut NET_BUFFER_HEADER_VIEW = unsafe { read_at(list_ptr, 8) };
    assert_eq!(first, &raw mut a1);
}

#[test]
fn stream_packet_reaches_data_length_and_direction() {
    let mut b = nb(512, ptr::null_mut());
    let mut list = NET_BUFFER_LIST_HEADER_VIEW {
        Next: ptr::null_mut(),
        FirstNetBuffer: &raw mut b,
    };
    let mut data = FWPS_STREAM_DATA0 {
        flags: FWPS_STREAM_FLAG_SEND | FWPS_STREAM_FLAG_SEND_NODELAY,
        dataOffset: FWPS_STREAM_DATA_OFFSET0 {
            netBufferList: (&raw mut list).cast::<c_void>(),
            netBuffer: (&raw mut b).cast::<c_void>(),
            mdl: ptr::null_mut(),
            mdlOffset: 0,
            netBufferOffset: 0,
            streamDataOffset: 0,
        },
        dataLength: 512,
        netBufferListChain: (&raw mut list).cast::<c_void>(),
    };
    let packet = FWPS_STREAM_CALLOUT_IO_PACKET0 {
        streamData: &raw mut data,
        missedBytes: 0,
        countBytesRequired: 0,
        countBytesEnforced: 0,
        streamAction: FWPS_STREAM_ACTION_NONE,
    };
    // What a classifyFn gets as `layerData`: an untyped pointer.
    let layer_data: *mut c_void = (&raw const packet).cast_mut().cast();
    let io = layer_data.cast::<FWPS_STREAM_CALLOUT_IO_PACKET0>();
    // SAFETY: `io` is `&packet`.
    let sd = unsafe { &*io }.streamData;
    // SAFETY: `streamData` is `&data`.
    let sd = unsafe { &*sd };
    let (flags, len, chain) = (sd.flags, sd.dataLength, sd.netBufferListChain);
    assert_ne!(flags & FWPS_STREAM_FLAG_SEND, 0);
    assert_eq!(flags & FWPS_STREAM_FLAG_RECEIVE, 0);
    // SAFETY: `chain` is `&list`, a null-terminated list on this frame.
    let counted = unsafe { net_buffer_list_chain_data_length(chain.cast_const().cast()) };
    assert_eq!(counted, u64::try_from(len).unwrap());
    assert_eq!(FWPS_STREAM_ACTION_NONE, 0);
}

#[test]
fn guid_round_trips_and_is_laid_out_like_windows() {
    let key = GUID::from_u128(0x3b89_653c_c170_49e4_b1cd_e0ee_eee1_9a3e);
    assert_eq!(key.Data1, 0x3b89_653c);
    assert_eq!(key.Data2, 0xc170);
    assert_eq!(key.Data3, 0x49e4);
    assert_eq!(key.Data4, [0xb1, 0xcd, 0xe0, 0xee, 0xee, 0xe1, 0x9a, 0x3e]);
    assert_eq!(key.to_u128(), 0x3b89_653c_c170_49e4_b1cd_e0ee_eee1_9a3e);
    // In memory (little-endian): Data1..Data3 byte-swapped, Data4 as is.
    let callout = FWPS_CALLOUT1 {
        calloutKey: key,
        flags: FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW,
        classifyFn: None,
        notifyFn: None,
        flowDeleteFn: None,
    };
    // SAFETY: the first 20 bytes of the 48-byte structure are the GUID and
    // the flags, all initialised.
    let bytes = unsafe { core::slice::from_raw_parts((&raw const callout).cast::<u8>(), 20) };
    assert_eq!(&bytes[..4], &[0x3c, 0x65, 0x89, 0x3b]);
    assert_eq!(&bytes[8..16], &key.Data4);
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 1);
}

unsafe extern "system" fn classify(
    _in_fixed_values: *const FWPS_INCOMING_VALUES0,
    _in_meta_values: *const FWPS_INCOMING_METADATA_VALUES0,
    _layer_data: *mut c_void,
    _classify_context: *const c_void,
    _filter: *const FWPS_FILTER1,
    flow_context: u64,
    classify_out: *mut FWPS_CLASSIFY_OUT0,
) {
    // SAFETY: the test passes a live `FWPS_CLASSIFY_OUT0`.
    let out = unsafe { &mut *classify_out };
    if out.rights & FWPS_RIGHT_ACTION_WRITE != 0 {
        out.actionType = FWP_ACTION_CONTINUE;
        out.outContext = flow_context;
    }
}

unsafe extern "system" fn notify(
    _notify_type: i32,
    _filter_key: *const GUID,
    filter: *mut FWPS_FILTER1,
) -> NTSTATUS {
    // SAFETY: the test passes a live filter that nothing else borrows.
    let filter = unsafe { &mut *filter };
    filter.context = 7;
    STATUS_SUCCESS
}

#[test]
fn callbacks_fit_the_declared_callout_and_filter() {
    let callout = FWPS_CALLOUT1 {
        calloutKey: GUID::default(),
        flags: FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW,
        classifyFn: Some(classify),
        notifyFn: Some(notify),
        flowDeleteFn: None,
    };
    let mut filter: FWPS_FILTER1 = zeroed();
    filter.action = FWPS_ACTION0 {
        r#type: FWP_ACTION_CALLOUT_INSPECTION,
        calloutId: 3,
    };
    let status = callout.notifyFn.map(|f| {
        // SAFETY: `notify` only writes `filter.context`.
        unsafe { f(FWPS_CALLOUT_NOTIFY_ADD_FILTER, ptr::null(), &raw mut filter) }
    });
    assert_eq!(status, Some(STATUS_SUCCESS));
    assert_eq!(filter.context, 7);

    let values = FWPS_INCOMING_VALUES0 {
        layerId: FWPS_LAYER_STREAM_V4,
        valueCount: 0,
        incomingValue: ptr::null_mut(),
    };
    let meta: FWPS_INCOMING_METADATA_VALUES0 = zeroed();
    let mut out = FWPS_CLASSIFY_OUT0 {
        rights: FWPS_RIGHT_ACTION_WRITE,
        ..FWPS_CLASSIFY_OUT0::default()
    };
    if let Some(f) = callout.classifyFn {
        // SAFETY: all pointers refer to live locals; `classify` only writes
        // `out`.
        unsafe {
            f(
                &raw const values,
                &raw const meta,
                ptr::null_mut(),
                ptr::null(),
                &raw const filter,
                99,
                &raw mut out,
            );
        }
    }
    assert_eq!((out.actionType, out.outContext), (FWP_ACTION_CONTINUE, 99));
    assert_eq!(offset_of!(FWPS_FILTER1, action), 40);
    assert_eq!(offset_of!(FWPS_FILTER1, context), 48);
}

#[test]
fn injection_states_and_types() {
    assert_eq!(
        [
            FWPS_PACKET_NOT_INJECTED,
            FWPS_PACKET_INJECTED_BY_SELF,
            FWPS_PACKET_INJECTED_BY_OTHER,
            FWPS_PACKET_PREVIOUSLY_INJECTED_BY_SELF,
            FWPS_PACKET_INJECTION_STATE_MAX
        ],
        [0, 1, 2, 3, 4]
    );
    let types = [
        FWPS_INJECTION_TYPE_STREAM,
        FWPS_INJECTION_TYPE_TRANSPORT,
        FWPS_INJECTION_TYPE_NETWORK,
        FWPS_INJECTION_TYPE_FORWARD,
        FWPS_INJECTION_TYPE_L2,
    ];
    // Distinct single bits, combinable with `|`.
    assert!(types.iter().all(|t| t.is_power_of_two()));
    assert_eq!(types.iter().fold(0, |acc, t| acc | t).count_ones(), 5);
}
