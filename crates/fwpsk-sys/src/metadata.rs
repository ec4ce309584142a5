//! The classify inputs: the incoming data values (`FWPS_INCOMING_VALUES0`,
//! fwpstypes.h) and the incoming metadata (`FWPS_INCOMING_METADATA_VALUES0`,
//! fwpsk.h) with the structures nested in it.
//!
//! Sources: the reference pages `FWPS_INCOMING_VALUE0`,
//! `FWPS_INCOMING_VALUES0`, `FWPS_DISCARD_METADATA0`, `FWPS_DISCARD_MODULE0`,
//! `FWPS_INBOUND_FRAGMENT_METADATA0` (fwpstypes.h),
//! `FWPS_INCOMING_METADATA_VALUES0` (fwpsk.h), "Metadata Field Identifiers"
//! and `FWPS_IS_METADATA_FIELD_PRESENT`. Flag values cross-checked against
//! the `windows-sys` 0.61 metadata (generated from `fwpsu.h`).

use core::ffi::c_void;

use crate::inet::{IP_ADDRESS_PREFIX, SCOPE_ID};
use crate::types::{
    DWORD, FWP_BYTE_BLOB, FWP_DIRECTION, FWP_VALUE0, HANDLE, PVOID, UINT16, UINT32, UINT64, ULONG,
    USHORT,
};

// ---------------------------------------------------------------------------
// FWPS_INCOMING_VALUE0 / FWPS_INCOMING_VALUES0 (fwpstypes.h).
// ---------------------------------------------------------------------------

/// `FWPS_INCOMING_VALUE0` (fwpstypes.h): one data field of the layer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPS_INCOMING_VALUE0 {
    /// The value.
    pub value: FWP_VALUE0,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_INCOMING_VALUE0>() == 16);
    assert!(align_of::<FWPS_INCOMING_VALUE0>() == 8);
    assert!(offset_of!(FWPS_INCOMING_VALUE0, value) == 0);
};

/// `FWPS_INCOMING_VALUES0` (fwpstypes.h): the data fields passed to
/// `classifyFn`, indexed by the `FWPS_FIELD_*` constants of the layer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_INCOMING_VALUES0 {
    /// Run-time layer id (`FWPS_LAYER_*`).
    pub layerId: UINT16,
    /// Number of entries at `incomingValue`.
    pub valueCount: UINT32,
    /// Array of `valueCount` values.
    pub incomingValue: *mut FWPS_INCOMING_VALUE0,
}

// x64: layerId @0 (2) + 2 padding, valueCount @4, pointer @8 => 16.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_INCOMING_VALUES0>() == 16);
    assert!(align_of::<FWPS_INCOMING_VALUES0>() == 8);
    assert!(offset_of!(FWPS_INCOMING_VALUES0, layerId) == 0);
    assert!(offset_of!(FWPS_INCOMING_VALUES0, valueCount) == 4);
    assert!(offset_of!(FWPS_INCOMING_VALUES0, incomingValue) == 8);
};

impl FWPS_INCOMING_VALUES0 {
    /// The value at `index` (an `FWPS_FIELD_*` constant of `layerId`), or
    /// `None` if the engine passed fewer fields (older Windows) or no array.
    ///
    /// # Safety
    ///
    /// `incomingValue` must be null or point to `valueCount` initialised
    /// entries that stay valid and unmodified for the returned lifetime —
    /// true for the structure the filter engine passes to `classifyFn`,
    /// during that call.
    #[must_use]
    pub const unsafe fn value(&self, index: UINT32) -> Option<&FWP_VALUE0> {
        if self.incomingValue.is_null() || index >= self.valueCount {
            return None;
        }
        let entry = self.incomingValue.wrapping_add(index as usize);
        // SAFETY: `index < valueCount` and the caller guarantees that
        // `incomingValue` points to `valueCount` live entries.
        Some(unsafe { &(*entry).value })
    }
}

// ---------------------------------------------------------------------------
// Discard and fragment metadata (fwpstypes.h).
// ---------------------------------------------------------------------------

/// `FWPS_DISCARD_MODULE0` (fwpstypes.h): which module discarded the data.
pub type FWPS_DISCARD_MODULE0 = i32;
/// `FWPS_DISCARD_MODULE_NETWORK`: the network layer.
pub const FWPS_DISCARD_MODULE_NETWORK: FWPS_DISCARD_MODULE0 = 0;
/// `FWPS_DISCARD_MODULE_TRANSPORT`: the transport layer.
pub const FWPS_DISCARD_MODULE_TRANSPORT: FWPS_DISCARD_MODULE0 = 1;
/// `FWPS_DISCARD_MODULE_GENERAL`: the filter engine.
pub const FWPS_DISCARD_MODULE_GENERAL: FWPS_DISCARD_MODULE0 = 2;
/// `FWPS_DISCARD_MODULE_MAX`.
pub const FWPS_DISCARD_MODULE_MAX: FWPS_DISCARD_MODULE0 = 3;

/// `FWPS_GENERAL_DISCARD_REASON` (fwpstypes.h): reasons of
/// `FWPS_DISCARD_MODULE_GENERAL`.
pub type FWPS_GENERAL_DISCARD_REASON = i32;
/// `FWPS_DISCARD_FIREWALL_POLICY`: a filter returned `FWP_ACTION_BLOCK`.
pub const FWPS_DISCARD_FIREWALL_POLICY: FWPS_GENERAL_DISCARD_REASON = 0;
/// `FWPS_DISCARD_IPSEC`: reserved.
pub const FWPS_DISCARD_IPSEC: FWPS_GENERAL_DISCARD_REASON = 1;

/// `FWPS_DISCARD_METADATA0` (fwpstypes.h): why data was discarded (valid
/// only with `FWPS_METADATA_FIELD_DISCARD_REASON`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FWPS_DISCARD_METADATA0 {
    /// The module (`FWPS_DISCARD_MODULE_*`).
    pub discardModule: FWPS_DISCARD_MODULE0,
    /// Module-specific reason.
    pub discardReason: UINT32,
    /// Run-time id of the filter that discarded the data.
    pub filterId: UINT64,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_DISCARD_METADATA0>() == 16);
    assert!(align_of::<FWPS_DISCARD_METADATA0>() == 8);
    assert!(offset_of!(FWPS_DISCARD_METADATA0, discardModule) == 0);
    assert!(offset_of!(FWPS_DISCARD_METADATA0, discardReason) == 4);
    assert!(offset_of!(FWPS_DISCARD_METADATA0, filterId) == 8);
};

/// `FWPS_INBOUND_FRAGMENT_METADATA0` (fwpstypes.h): fragment data of a
/// received fragment (valid only with `FWPS_METADATA_FIELD_FRAGMENT_DATA`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FWPS_INBOUND_FRAGMENT_METADATA0 {
    /// Identifies the packet the fragment belongs to.
    pub fragmentIdentification: UINT32,
    /// Offset of the fragment in the packet, in bytes.
    pub fragmentOffset: UINT16,
    /// Length of the fragment, in bytes.
    pub fragmentLength: ULONG,
}

// 4 @0, 2 @4 + 2 padding, 4 @8 => 12, 4-aligned.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_INBOUND_FRAGMENT_METADATA0>() == 12);
    assert!(align_of::<FWPS_INBOUND_FRAGMENT_METADATA0>() == 4);
    assert!(offset_of!(FWPS_INBOUND_FRAGMENT_METADATA0, fragmentIdentification) == 0);
    assert!(offset_of!(FWPS_INBOUND_FRAGMENT_METADATA0, fragmentOffset) == 4);
    assert!(offset_of!(FWPS_INBOUND_FRAGMENT_METADATA0, fragmentLength) == 8);
};

// ---------------------------------------------------------------------------
// FWPS_INCOMING_METADATA_VALUES0 (fwpsk.h).
// ---------------------------------------------------------------------------

/// `NDIS_SWITCH_PORT_ID` (ndis/switch.h): `UINT32`.
pub type NDIS_SWITCH_PORT_ID = UINT32;
/// `NDIS_SWITCH_NIC_INDEX` (ndis/switch.h): `USHORT`.
pub type NDIS_SWITCH_NIC_INDEX = USHORT;

/// `FWPS_INCOMING_METADATA_VALUES0` (fwpsk.h): the metadata passed to
/// `classifyFn`.
///
/// A member is valid only if its `FWPS_METADATA_FIELD_*` bit
/// is set in `currentMetadataValues` (see [`FWPS_IS_METADATA_FIELD_PRESENT`]),
/// or, for the layer-2 members, its `FWPS_L2_METADATA_FIELD_*` bit in
/// `currentL2MetadataValues`.
///
/// This is the **complete** layout the header produces for
/// `NTDDI_VERSION >= NTDDI_WINBLUE` (any Windows 10/11 target) with
/// `NDIS_SUPPORT_NDIS630`:
/// every member, in order, including those the header adds under
/// `NTDDI_WIN6SP1` (`headerIncludeHeader` ..), `NTDDI_WIN7`
/// (`destinationPrefix` .. `originalDestination`), `NTDDI_WIN8`
/// (`redirectRecords` .. `vSwitchPacketContext`) and `NTDDI_WINBLUE`
/// (`subProcessTag`, `reserved1`). Without NDIS 6.30 the header names the
/// three vSwitch members `padding0`, `padding1`, `padding2`, with the same
/// types and offsets.
///
/// The filter engine owns and allocates this structure; a driver only reads
/// it through the pointer it receives. On a Windows version older than the
/// guard of a member, the structure ends before that member: do not read it
/// there (the presence bits are never set for it).
///
/// Pointers to types this crate does not declare are `*mut c_void`:
/// `controlData` (`WSACMSGHDR*`) and `originalDestination` (`SOCKADDR*`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPS_INCOMING_METADATA_VALUES0 {
    /// Bitwise OR of the `FWPS_METADATA_FIELD_*` identifiers of the members
    /// that are set.
    pub currentMetadataValues: UINT32,
    /// Used internally by the filter engine; ignore.
    pub flags: UINT32,
    /// Reserved.
    pub reserved: UINT64,
    /// `FWPS_METADATA_FIELD_DISCARD_REASON`.
    pub discardMetadata: FWPS_DISCARD_METADATA0,
    /// `FWPS_METADATA_FIELD_FLOW_HANDLE`: the flow id to pass to
    /// `FwpsFlowAssociateContext0` / `FwpsFlowRemoveContext0`.
    pub flowHandle: UINT64,
    /// `FWPS_METADATA_FIELD_IP_HEADER_SIZE`.
    pub ipHeaderSize: UINT32,
    /// `FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE`.
    pub transportHeaderSize: UINT32,
    /// `FWPS_METADATA_FIELD_PROCESS_PATH`: full path of the owning process.
    pub processPath: *mut FWP_BYTE_BLOB,
    /// `FWPS_METADATA_FIELD_TOKEN`.
    pub token: UINT64,
    /// `FWPS_METADATA_FIELD_PROCESS_ID`.
    pub processId: UINT64,
    /// `FWPS_METADATA_FIELD_SOURCE_INTERFACE_INDEX`.
    pub sourceInterfaceIndex: UINT32,
    /// `FWPS_METADATA_FIELD_DESTINATION_INTERFACE_INDEX`.
    pub destinationInterfaceIndex: UINT32,
    /// `FWPS_METADATA_FIELD_COMPARTMENT_ID`.
    pub compartmentId: ULONG,
    /// `FWPS_METADATA_FIELD_FRAGMENT_DATA`.
    pub fragmentMetadata: FWPS_INBOUND_FRAGMENT_METADATA0,
    /// `FWPS_METADATA_FIELD_PATH_MTU`.
    pub pathMtu: ULONG,
    /// `FWPS_METADATA_FIELD_COMPLETION_HANDLE`.
    pub completionHandle: HANDLE,
    /// `FWPS_METADATA_FIELD_TRANSPORT_ENDPOINT_HANDLE`.
    pub transportEndpointHandle: UINT64,
    /// `FWPS_METADATA_FIELD_REMOTE_SCOPE_ID`.
    pub remoteScopeId: SCOPE_ID,
    /// `FWPS_METADATA_FIELD_TRANSPORT_CONTROL_DATA` (`WSACMSGHDR*`, opaque).
    pub controlData: *mut c_void,
    /// Length of `controlData` in bytes.
    pub controlDataLength: ULONG,
    /// `FWPS_METADATA_FIELD_PACKET_DIRECTION` (ALE re-authorization only).
    pub packetDirection: FWP_DIRECTION,
    /// Raw-socket IP header (Windows Vista SP1 and later).
    pub headerIncludeHeader: PVOID,
    /// Length of `headerIncludeHeader` (Windows Vista SP1 and later).
    pub headerIncludeHeaderLength: ULONG,
    /// `FWPS_METADATA_FIELD_DESTINATION_PREFIX` (Windows 7 and later).
    pub destinationPrefix: IP_ADDRESS_PREFIX,
    /// `FWPS_METADATA_FIELD_ETHER_FRAME_LENGTH` (Windows 7 and later).
    pub frameLength: UINT16,
    /// `FWPS_METADATA_FIELD_PARENT_ENDPOINT_HANDLE` (Windows 7 and later).
    pub parentEndpointHandle: UINT64,
    /// `FWPS_METADATA_FIELD_ICMP_ID_AND_SEQUENCE` (Windows 7 and later).
    pub icmpIdAndSequence: UINT32,
    /// `FWPS_METADATA_FIELD_LOCAL_REDIRECT_TARGET_PID` (Windows 7 and later).
    pub localRedirectTargetPID: DWORD,
    /// `FWPS_METADATA_FIELD_ORIGINAL_DESTINATION` (`SOCKADDR*`, opaque;
    /// Windows 7 and later).
    pub originalDestination: *mut c_void,
    /// `FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE` (Windows 8 and later).
    pub redirectRecords: HANDLE,
    /// Bitwise OR of `FWPS_L2_METADATA_FIELD_*` (Windows 8 and later).
    pub currentL2MetadataValues: UINT32,
    /// Layer-2 flags (`FWPS_L2_INCOMING_FLAG_*`; Windows 8 and later).
    pub l2Flags: UINT32,
    /// `FWPS_L2_METADATA_FIELD_ETHERNET_MAC_HEADER_SIZE` (Windows 8 and later).
    pub ethernetMacHeaderSize: UINT32,
    /// `FWPS_L2_METADATA_FIELD_WIFI_OPERATION_MODE` (Windows 8 and later).
    pub wiFiOperationMode: UINT32,
    /// `FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID` (`padding0` without
    /// NDIS 6.30; Windows 8 and later).
    pub vSwitchSourcePortId: NDIS_SWITCH_PORT_ID,
    /// `FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_NIC_INDEX` (`padding1`).
    pub vSwitchSourceNicIndex: NDIS_SWITCH_NIC_INDEX,
    /// `FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID` (`padding2`).
    pub vSwitchDestinationPortId: NDIS_SWITCH_PORT_ID,
    /// `FWPS_L2_METADATA_FIELD_VSWITCH_PACKET_CONTEXT` (Windows 8 and later).
    pub vSwitchPacketContext: HANDLE,
    /// `FWPS_METADATA_FIELD_SUB_PROCESS_TAG` (Windows 8.1 and later).
    pub subProcessTag: PVOID,
    /// Reserved (Windows 8.1 and later).
    pub reserved1: UINT64,
}

// x64 layout, following the C rules (each member at the next multiple of
// its alignment; the structure padded to 8):
//   0 currentMetadataValues   4 flags            8 reserved
//  16 discardMetadata (16)   32 flowHandle       40 ipHeaderSize
//  44 transportHeaderSize    48 processPath      56 token
//  64 processId              72 sourceIfIndex    76 destinationIfIndex
//  80 compartmentId          84 fragmentMetadata (12, 4-aligned) -> 96
//  96 pathMtu               104 completionHandle (100 padded to 8)
// 112 transportEndpointHandle 120 remoteScopeId (4)
// 128 controlData (124 padded) 136 controlDataLength 140 packetDirection
// 144 headerIncludeHeader   152 headerIncludeHeaderLength
// 156 destinationPrefix (32, 4-aligned) -> 188 frameLength (2) -> 190
// 192 parentEndpointHandle  200 icmpIdAndSequence 204 localRedirectTargetPID
// 208 originalDestination   216 redirectRecords
// 224 currentL2MetadataValues 228 l2Flags 232 ethernetMacHeaderSize
// 236 wiFiOperationMode     240 vSwitchSourcePortId 244 vSwitchSourceNicIndex
// 248 vSwitchDestinationPortId (246 padded to 4)
// 256 vSwitchPacketContext (252 padded to 8) 264 subProcessTag 272 reserved1
// 280 = size.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    type M = FWPS_INCOMING_METADATA_VALUES0;
    assert!(size_of::<M>() == 280);
    assert!(align_of::<M>() == 8);
    assert!(offset_of!(M, currentMetadataValues) == 0);
    assert!(offset_of!(M, flags) == 4);
    assert!(offset_of!(M, reserved) == 8);
    assert!(offset_of!(M, discardMetadata) == 16);
    assert!(offset_of!(M, flowHandle) == 32);
    assert!(offset_of!(M, ipHeaderSize) == 40);
    assert!(offset_of!(M, transportHeaderSize) == 44);
    assert!(offset_of!(M, processPath) == 48);
    assert!(offset_of!(M, token) == 56);
    assert!(offset_of!(M, processId) == 64);
    assert!(offset_of!(M, sourceInterfaceIndex) == 72);
    assert!(offset_of!(M, destinationInterfaceIndex) == 76);
    assert!(offset_of!(M, compartmentId) == 80);
    assert!(offset_of!(M, fragmentMetadata) == 84);
    assert!(offset_of!(M, pathMtu) == 96);
    assert!(offset_of!(M, completionHandle) == 104);
    assert!(offset_of!(M, transportEndpointHandle) == 112);
    assert!(offset_of!(M, remoteScopeId) == 120);
    assert!(offset_of!(M, controlData) == 128);
    assert!(offset_of!(M, controlDataLength) == 136);
    assert!(offset_of!(M, packetDirection) == 140);
    assert!(offset_of!(M, headerIncludeHeader) == 144);
    assert!(offset_of!(M, headerIncludeHeaderLength) == 152);
    assert!(offset_of!(M, destinationPrefix) == 156);
    assert!(offset_of!(M, frameLength) == 188);
    assert!(offset_of!(M, parentEndpointHandle) == 192);
    assert!(offset_of!(M, icmpIdAndSequence) == 200);
    assert!(offset_of!(M, localRedirectTargetPID) == 204);
    assert!(offset_of!(M, originalDestination) == 208);
    assert!(offset_of!(M, redirectRecords) == 216);
    assert!(offset_of!(M, currentL2MetadataValues) == 224);
    assert!(offset_of!(M, l2Flags) == 228);
    assert!(offset_of!(M, ethernetMacHeaderSize) == 232);
    assert!(offset_of!(M, wiFiOperationMode) == 236);
    assert!(offset_of!(M, vSwitchSourcePortId) == 240);
    assert!(offset_of!(M, vSwitchSourceNicIndex) == 244);
    assert!(offset_of!(M, vSwitchDestinationPortId) == 248);
    assert!(offset_of!(M, vSwitchPacketContext) == 256);
    assert!(offset_of!(M, subProcessTag) == 264);
    assert!(offset_of!(M, reserved1) == 272);
};

/// `FWPS_IS_METADATA_FIELD_PRESENT(metadataValues, metadataField)`
/// (fwpsk.h macro): whether all bits of `metadataField` are set in
/// `currentMetadataValues`.
#[must_use]
pub const fn FWPS_IS_METADATA_FIELD_PRESENT(
    metadataValues: &FWPS_INCOMING_METADATA_VALUES0,
    metadataField: UINT32,
) -> bool {
    (metadataValues.currentMetadataValues & metadataField) == metadataField
}

/// `FWPS_IS_L2_METADATA_FIELD_PRESENT(metadataValues, l2MetadataField)`
/// (fwpsk.h macro): whether all bits of `l2MetadataField` are set in
/// `currentL2MetadataValues` (Windows 8 and later).
#[must_use]
pub const fn FWPS_IS_L2_METADATA_FIELD_PRESENT(
    metadataValues: &FWPS_INCOMING_METADATA_VALUES0,
    l2MetadataField: UINT32,
) -> bool {
    (metadataValues.currentL2MetadataValues & l2MetadataField) == l2MetadataField
}

// ---------------------------------------------------------------------------
// Metadata field identifiers ("Metadata Field Identifiers", fwpsk.h).
// ---------------------------------------------------------------------------

/// `FWPS_METADATA_FIELD_DISCARD_REASON`: `discardMetadata` is set.
pub const FWPS_METADATA_FIELD_DISCARD_REASON: UINT32 = 0x0000_0001;
/// `FWPS_METADATA_FIELD_FLOW_HANDLE`: `flowHandle` is set.
pub const FWPS_METADATA_FIELD_FLOW_HANDLE: UINT32 = 0x0000_0002;
/// `FWPS_METADATA_FIELD_IP_HEADER_SIZE`: `ipHeaderSize` is set.
pub const FWPS_METADATA_FIELD_IP_HEADER_SIZE: UINT32 = 0x0000_0004;
/// `FWPS_METADATA_FIELD_PROCESS_PATH`: `processPath` is set.
pub const FWPS_METADATA_FIELD_PROCESS_PATH: UINT32 = 0x0000_0008;
/// `FWPS_METADATA_FIELD_TOKEN`: `token` is set.
pub const FWPS_METADATA_FIELD_TOKEN: UINT32 = 0x0000_0010;
/// `FWPS_METADATA_FIELD_PROCESS_ID`: `processId` is set.
pub const FWPS_METADATA_FIELD_PROCESS_ID: UINT32 = 0x0000_0020;
/// `FWPS_METADATA_FIELD_SYSTEM_FLAGS`: `flags` is set.
pub const FWPS_METADATA_FIELD_SYSTEM_FLAGS: UINT32 = 0x0000_0040;
/// `FWPS_METADATA_FIELD_RESERVED`.
pub const FWPS_METADATA_FIELD_RESERVED: UINT32 = 0x0000_0080;
/// `FWPS_METADATA_FIELD_SOURCE_INTERFACE_INDEX`.
pub const FWPS_METADATA_FIELD_SOURCE_INTERFACE_INDEX: UINT32 = 0x0000_0100;
/// `FWPS_METADATA_FIELD_DESTINATION_INTERFACE_INDEX`.
pub const FWPS_METADATA_FIELD_DESTINATION_INTERFACE_INDEX: UINT32 = 0x0000_0200;
/// `FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE`.
pub const FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE: UINT32 = 0x0000_0400;
/// `FWPS_METADATA_FIELD_COMPARTMENT_ID`.
pub const FWPS_METADATA_FIELD_COMPARTMENT_ID: UINT32 = 0x0000_0800;
/// `FWPS_METADATA_FIELD_FRAGMENT_DATA`.
pub const FWPS_METADATA_FIELD_FRAGMENT_DATA: UINT32 = 0x0000_1000;
/// `FWPS_METADATA_FIELD_PATH_MTU`.
pub const FWPS_METADATA_FIELD_PATH_MTU: UINT32 = 0x0000_2000;
/// `FWPS_METADATA_FIELD_COMPLETION_HANDLE`.
pub const FWPS_METADATA_FIELD_COMPLETION_HANDLE: UINT32 = 0x0000_4000;
/// `FWPS_METADATA_FIELD_TRANSPORT_ENDPOINT_HANDLE`.
pub const FWPS_METADATA_FIELD_TRANSPORT_ENDPOINT_HANDLE: UINT32 = 0x0000_8000;
/// `FWPS_METADATA_FIELD_TRANSPORT_CONTROL_DATA`.
pub const FWPS_METADATA_FIELD_TRANSPORT_CONTROL_DATA: UINT32 = 0x0001_0000;
/// `FWPS_METADATA_FIELD_REMOTE_SCOPE_ID`.
pub const FWPS_METADATA_FIELD_REMOTE_SCOPE_ID: UINT32 = 0x0002_0000;
/// `FWPS_METADATA_FIELD_PACKET_DIRECTION`.
pub const FWPS_METADATA_FIELD_PACKET_DIRECTION: UINT32 = 0x0004_0000;
/// `FWPS_METADATA_FIELD_PACKET_SYSTEM_CRITICAL`.
pub const FWPS_METADATA_FIELD_PACKET_SYSTEM_CRITICAL: UINT32 = 0x0008_0000;
/// `FWPS_METADATA_FIELD_FORWARD_LAYER_OUTBOUND_PASS_THRU`.
pub const FWPS_METADATA_FIELD_FORWARD_LAYER_OUTBOUND_PASS_THRU: UINT32 = 0x0010_0000;
/// `FWPS_METADATA_FIELD_FORWARD_LAYER_INBOUND_PASS_THRU`.
pub const FWPS_METADATA_FIELD_FORWARD_LAYER_INBOUND_PASS_THRU: UINT32 = 0x0020_0000;
/// `FWPS_METADATA_FIELD_ALE_CLASSIFY_REQUIRED`.
pub const FWPS_METADATA_FIELD_ALE_CLASSIFY_REQUIRED: UINT32 = 0x0040_0000;
/// `FWPS_METADATA_FIELD_TRANSPORT_HEADER_INCLUDE_HEADER`.
pub const FWPS_METADATA_FIELD_TRANSPORT_HEADER_INCLUDE_HEADER: UINT32 = 0x0080_0000;
/// `FWPS_METADATA_FIELD_DESTINATION_PREFIX`.
pub const FWPS_METADATA_FIELD_DESTINATION_PREFIX: UINT32 = 0x0100_0000;
/// `FWPS_METADATA_FIELD_ETHER_FRAME_LENGTH`.
pub const FWPS_METADATA_FIELD_ETHER_FRAME_LENGTH: UINT32 = 0x0200_0000;
/// `FWPS_METADATA_FIELD_PARENT_ENDPOINT_HANDLE`.
pub const FWPS_METADATA_FIELD_PARENT_ENDPOINT_HANDLE: UINT32 = 0x0400_0000;
/// `FWPS_METADATA_FIELD_ICMP_ID_AND_SEQUENCE`.
pub const FWPS_METADATA_FIELD_ICMP_ID_AND_SEQUENCE: UINT32 = 0x0800_0000;
/// `FWPS_METADATA_FIELD_LOCAL_REDIRECT_TARGET_PID`.
pub const FWPS_METADATA_FIELD_LOCAL_REDIRECT_TARGET_PID: UINT32 = 0x1000_0000;
/// `FWPS_METADATA_FIELD_ORIGINAL_DESTINATION`.
pub const FWPS_METADATA_FIELD_ORIGINAL_DESTINATION: UINT32 = 0x2000_0000;
/// `FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE`.
pub const FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE: UINT32 = 0x4000_0000;
/// `FWPS_METADATA_FIELD_SUB_PROCESS_TAG`.
pub const FWPS_METADATA_FIELD_SUB_PROCESS_TAG: UINT32 = 0x8000_0000;

/// `FWPS_L2_METADATA_FIELD_ETHERNET_MAC_HEADER_SIZE`.
pub const FWPS_L2_METADATA_FIELD_ETHERNET_MAC_HEADER_SIZE: UINT32 = 0x0000_0001;
/// `FWPS_L2_METADATA_FIELD_WIFI_OPERATION_MODE`.
pub const FWPS_L2_METADATA_FIELD_WIFI_OPERATION_MODE: UINT32 = 0x0000_0002;
/// `FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID: UINT32 = 0x0000_0004;
/// `FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_NIC_INDEX`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_NIC_INDEX: UINT32 = 0x0000_0008;
/// `FWPS_L2_METADATA_FIELD_VSWITCH_PACKET_CONTEXT`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_PACKET_CONTEXT: UINT32 = 0x0000_0010;
/// `FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID: UINT32 = 0x0000_0020;
