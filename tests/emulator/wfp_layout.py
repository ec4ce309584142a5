"""x64 layouts of the kernel structures the fake filter engine builds or reads.

Written from Microsoft's documented C definitions (fwpsk.h, fwpstypes.h,
fwptypes.h, ndis/nbl.h, wdm.h), independently of the driver's Rust
declarations in crates/fwpsk-sys: if either side is wrong, the emulator
tests disagree with the driver and fail. ctypes on x86-64 Linux lays out
these structures exactly as MSVC does for x64 (fixed-width fields and
pointers only; no `long`, no bit fields).
"""

import ctypes as C

u8, u16, u32, u64, ptr = C.c_uint8, C.c_uint16, C.c_uint32, C.c_uint64, C.c_uint64


class GUID(C.Structure):
    _fields_ = [("Data1", u32), ("Data2", u16), ("Data3", u16), ("Data4", u8 * 8)]

    def text(self) -> str:
        d = bytes(self.Data4)
        return f"{self.Data1:08x}-{self.Data2:04x}-{self.Data3:04x}-{d[:2].hex()}-{d[2:].hex()}"


class FWPS_CALLOUT1(C.Structure):
    _fields_ = [
        ("calloutKey", GUID),
        ("flags", u32),
        ("classifyFn", ptr),
        ("notifyFn", ptr),
        ("flowDeleteFn", ptr),
    ]


class FWP_VALUE0(C.Structure):
    # FWP_DATA_TYPE type; then a pointer-sized union.
    _fields_ = [("type", u32), ("value", u64)]


class FWPS_INCOMING_VALUES0(C.Structure):
    _fields_ = [("layerId", u16), ("valueCount", u32), ("incomingValue", ptr)]


class FWPS_INCOMING_METADATA_VALUES0(C.Structure):
    # Only the leading fields the driver reads are named; the rest of the
    # (much longer) structure is reserved space so the size is generous.
    _fields_ = [
        ("currentMetadataValues", u32),
        ("flags", u32),
        ("reserved", u64),
        ("discardModule", u32),
        ("discardReason", u32),
        ("discardFilterId", u64),
        ("flowHandle", u64),
        ("ipHeaderSize", u32),
        ("transportHeaderSize", u32),
        ("processPath", ptr),
        ("token", u64),
        ("processId", u64),
        ("rest", u8 * 512),
    ]


class FWP_BYTE_BLOB(C.Structure):
    # fwptypes.h: UINT32 size; UINT8* data.
    _fields_ = [("size", u32), ("data", ptr)]


class FWPS_CLASSIFY_OUT0(C.Structure):
    _fields_ = [
        ("actionType", u32),
        ("outContext", u64),
        ("filterId", u64),
        ("rights", u32),
        ("flags", u32),
        ("reserved", u32),
    ]


class FWPS_STREAM_DATA_OFFSET0(C.Structure):
    _fields_ = [
        ("netBufferList", ptr),
        ("netBuffer", ptr),
        ("mdl", ptr),
        ("mdlOffset", u32),
        ("netBufferOffset", u32),
        ("streamDataOffset", u64),
    ]


class FWPS_STREAM_DATA0(C.Structure):
    _fields_ = [
        ("flags", u32),
        ("dataOffset", FWPS_STREAM_DATA_OFFSET0),
        ("dataLength", u64),
        ("netBufferListChain", ptr),
    ]


class FWPS_STREAM_CALLOUT_IO_PACKET0(C.Structure):
    _fields_ = [
        ("streamData", ptr),
        ("missedBytes", u64),
        ("countBytesRequired", u32),
        ("countBytesEnforced", u64),
        ("streamAction", u32),
    ]


class FWPS_FILTER1(C.Structure):
    # filterId, weight (FWP_VALUE0), subLayerWeight, flags, numFilterConditions,
    # filterCondition, action (FWPS_ACTION0: type, calloutId), context,
    # providerContext.
    _fields_ = [
        ("filterId", u64),
        ("weight", FWP_VALUE0),
        ("subLayerWeight", u16),
        ("flags", u16),
        ("numFilterConditions", u32),
        ("filterCondition", ptr),
        ("actionType", u32),
        ("calloutId", u32),
        ("context", u64),
        ("providerContext", ptr),
    ]


class NET_BUFFER(C.Structure):
    # Leading fields of NET_BUFFER (ndis/nbl.h): Next, CurrentMdl,
    # CurrentMdlOffset, DataLength (a ULONG in a union with SIZE_T).
    _fields_ = [
        ("Next", ptr),
        ("CurrentMdl", ptr),
        ("CurrentMdlOffset", u32),
        ("DataLength", u64),
        ("rest", u8 * 64),
    ]


class NET_BUFFER_LIST(C.Structure):
    # Leading fields of NET_BUFFER_LIST: Next, FirstNetBuffer.
    _fields_ = [("Next", ptr), ("FirstNetBuffer", ptr), ("rest", u8 * 128)]


# Documented offsets on x64, asserted so a typo above cannot slip through.
_EXPECTED = {
    (FWPS_CALLOUT1, "flags"): 16,
    (FWPS_CALLOUT1, "classifyFn"): 24,
    (FWPS_CALLOUT1, "flowDeleteFn"): 40,
    (FWPS_INCOMING_VALUES0, "valueCount"): 4,
    (FWPS_INCOMING_VALUES0, "incomingValue"): 8,
    (FWPS_INCOMING_METADATA_VALUES0, "flowHandle"): 32,
    (FWPS_INCOMING_METADATA_VALUES0, "processPath"): 48,
    (FWPS_INCOMING_METADATA_VALUES0, "processId"): 64,
    (FWPS_CLASSIFY_OUT0, "outContext"): 8,
    (FWPS_CLASSIFY_OUT0, "rights"): 24,
    (FWPS_STREAM_DATA0, "dataOffset"): 8,
    (FWPS_STREAM_DATA0, "dataLength"): 48,
    (FWPS_STREAM_CALLOUT_IO_PACKET0, "streamAction"): 32,
    (NET_BUFFER, "DataLength"): 24,
    (NET_BUFFER_LIST, "FirstNetBuffer"): 8,
}
for (cls, field), off in _EXPECTED.items():
    assert getattr(cls, field).offset == off, (cls.__name__, field)
assert C.sizeof(FWPS_CALLOUT1) == 48
assert C.sizeof(FWPS_FILTER1) == 64 and FWPS_FILTER1.actionType.offset == 40
assert C.sizeof(FWP_VALUE0) == 16
assert C.sizeof(FWP_BYTE_BLOB) == 16 and FWP_BYTE_BLOB.data.offset == 8
assert C.sizeof(FWPS_CLASSIFY_OUT0) == 40
assert C.sizeof(FWPS_STREAM_DATA0) == 64
assert C.sizeof(FWPS_STREAM_CALLOUT_IO_PACKET0) == 40

# ---- constants (fwpsk.h / fwptypes.h / ntstatus.h) ------------------------

FWP_UINT8, FWP_UINT16, FWP_UINT32, FWP_UINT64 = 1, 2, 3, 4
FWP_BYTE_ARRAY16_TYPE = 11
FWP_ACTION_FLAG_TERMINATING = 0x1000
FWP_ACTION_FLAG_NON_TERMINATING = 0x2000
FWP_ACTION_BLOCK = 0x1 | FWP_ACTION_FLAG_TERMINATING
FWP_ACTION_PERMIT = 0x2 | FWP_ACTION_FLAG_TERMINATING
FWP_ACTION_CONTINUE = 0x6 | FWP_ACTION_FLAG_NON_TERMINATING
FWP_ACTION_FLAG_CALLOUT = 0x4000
FWP_ACTION_CALLOUT_TERMINATING = 0x3 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_TERMINATING
FWP_ACTION_CALLOUT_INSPECTION = 0x4 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_NON_TERMINATING
FWP_ACTION_CALLOUT_UNKNOWN = 0x5 | FWP_ACTION_FLAG_CALLOUT
FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT = 0x1
FWPS_RIGHT_ACTION_WRITE = 0x1
FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW = 0x1
FWP_CALLOUT_FLAG_ALLOW_OFFLOAD = 0x2  # FWPS_CALLOUT1 reference
FWP_CALLOUT_FLAG_ALLOW_USO = 0x100
FWP_CALLOUT_FLAG_ALLOW_URO = 0x200
FWPS_METADATA_FIELD_PROCESS_ID = 0x20  # windows-sys (SDK metadata) agrees
# "Metadata field identifiers" / FWPS_INCOMING_METADATA_VALUES0: processPath
# is an FWP_BYTE_BLOB* (the image path, UTF-16); windows-sys agrees on 0x8.
FWPS_METADATA_FIELD_PROCESS_PATH = 0x8
FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE = 0x400
FWPS_STREAM_ACTION_NONE = 0
FWPS_METADATA_FIELD_FLOW_HANDLE = 0x2
FWPS_STREAM_FLAG_RECEIVE = 0x1
FWPS_STREAM_FLAG_SEND = 0x10000  # not on Microsoft's pages; the driver only relies on RECEIVE
FWP_DIRECTION_OUTBOUND, FWP_DIRECTION_INBOUND = 0, 1

FWPS_LAYER_STREAM_V4, FWPS_LAYER_STREAM_V6 = 20, 22
FWPS_LAYER_DATAGRAM_DATA_V4, FWPS_LAYER_DATAGRAM_DATA_V6 = 24, 26
FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4, FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6 = 52, 54

# FWPS_FIELDS_ALE_FLOW_ESTABLISHED_V4 / _V6 (same order for both families).
FE_APP_ID, FE_USER_ID, FE_LOCAL_ADDRESS, FE_LOCAL_ADDRESS_TYPE = 0, 1, 2, 3
FE_LOCAL_PORT, FE_PROTOCOL, FE_REMOTE_ADDRESS, FE_REMOTE_PORT = 4, 5, 6, 7
FE_REMOTE_USER_ID, FE_REMOTE_MACHINE_ID, FE_DESTINATION_ADDRESS_TYPE = 8, 9, 10
FE_LOCAL_INTERFACE, FE_DIRECTION = 11, 12
FE_COUNT = 13

# FWPS_FIELDS_STREAM_V4 / _V6.
ST_LOCAL_ADDRESS, ST_LOCAL_ADDRESS_TYPE, ST_REMOTE_ADDRESS, ST_LOCAL_PORT, ST_REMOTE_PORT = 0, 1, 2, 3, 4
ST_DIRECTION, ST_COUNT = 5, 8

# FWPS_FIELDS_DATAGRAM_DATA_V4 / _V6 (the protocol comes first here).
DG_PROTOCOL, DG_LOCAL_ADDRESS, DG_REMOTE_ADDRESS, DG_LOCAL_ADDRESS_TYPE = 0, 1, 2, 3
DG_LOCAL_PORT, DG_REMOTE_PORT, DG_LOCAL_INTERFACE = 4, 5, 6
DG_INTERFACE_INDEX, DG_SUB_INTERFACE_INDEX, DG_DIRECTION = 7, 8, 9
DG_COUNT = 14

FWPS_PACKET_NOT_INJECTED, FWPS_PACKET_INJECTED_BY_SELF = 0, 1
FWPS_PACKET_INJECTED_BY_OTHER, FWPS_PACKET_PREVIOUSLY_INJECTED_BY_SELF = 2, 3


def ntstatus(v: int) -> int:
    return v & 0xFFFFFFFF


STATUS_SUCCESS = 0
STATUS_PENDING = 0x103
STATUS_TIMEOUT = 0x102
STATUS_DEVICE_BUSY = 0x80000011
STATUS_UNSUCCESSFUL = 0xC0000001
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_CANCELLED = 0xC0000120
STATUS_INVALID_DEVICE_REQUEST = 0xC0000010
STATUS_NO_MEMORY = 0xC0000017
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_BUFFER_TOO_SMALL = 0xC0000023
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_REVISION_MISMATCH = 0xC0000059
STATUS_INTEGER_OVERFLOW = 0xC0000095
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
STATUS_INVALID_BUFFER_SIZE = 0xC0000206
STATUS_FWP_CALLOUT_NOT_FOUND = 0xC0220001
STATUS_FWP_ALREADY_EXISTS = 0xC0220009
STATUS_FWP_IN_USE = 0xC022000A
