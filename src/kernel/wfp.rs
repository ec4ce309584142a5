//! The filter engine: callout registration, flow contexts, the injection
//! handle, and the classify / notify / flow-delete entry points the engine
//! calls, which decode the raw structures into safe values for
//! [`crate::callouts`].
//!
//! The `Fwps*` API is declared by the workspace's `fwpsk-sys` crate: no
//! crate on crates.io binds fwpsk.h (wdk-sys does not include it, and
//! windows-sys links `Fwpm*` to the user-mode fwpuclnt.dll).

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use fwpsk_sys as fwps;
use wdk_sys::NTSTATUS;
use wfpmon_core::catalog::{AddressFamily, CalloutRole, CalloutSpec};
use wfpmon_core::flow::{Direction, FlowRecord, FlowTuple};

use super::device::Device;
use super::{Status, log, nt_success};
use crate::callouts;
use crate::trace;

// ---------------------------------------------------------------------------
// Registration (PASSIVE_LEVEL)
// ---------------------------------------------------------------------------

/// `FwpsCalloutRegister1` for one catalog callout; returns its run-time id.
///
/// Version 1 is the oldest registration function whose classify function
/// receives the classify context and `FWPS_FILTER1`; wfpmon needs nothing
/// that versions 2 and 3 add (filter flags and provider context in the
/// filter). The callout version is not what sets the image's minimum
/// Windows version: `ExAllocatePool2` (Windows 10 version 2004) does — see
/// the README.
///
/// # Errors
/// The engine's status.
pub fn register_callout(device: &Device, spec: &CalloutSpec) -> Result<u32, NTSTATUS> {
    let k = spec.key;
    let callout = fwps::FWPS_CALLOUT1 {
        calloutKey: fwps::GUID {
            Data1: k.data1,
            Data2: k.data2,
            Data3: k.data3,
            Data4: k.data4,
        },
        flags: callout_flags(spec),
        classifyFn: Some(match spec.role {
            CalloutRole::FlowEstablished => classify_flow_established,
            CalloutRole::Stream => classify_stream,
            CalloutRole::DatagramData => classify_datagram_data,
        }),
        notifyFn: Some(notify),
        flowDeleteFn: if spec.conditional_on_flow() {
            Some(flow_delete)
        } else {
            None
        },
    };
    let mut id = 0u32;
    // SAFETY: PASSIVE_LEVEL; a valid device object that outlives the
    // registration (lifecycle order); `callout` is read during the call only.
    let status = unsafe {
        fwps::FwpsCalloutRegister1(device.as_raw().cast(), &raw const callout, &raw mut id)
    };
    trace::callout_registered(spec.name, id, status);
    log!(
        "FwpsCalloutRegister1({}) -> {}, id {id}",
        spec.name,
        Status(status)
    );
    if nt_success(status) {
        Ok(id)
    } else {
        Err(status)
    }
}

/// The `FWPS_CALLOUT1.flags` of a catalog callout.
///
/// - `FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW` for the data callouts: the
///   engine calls them only for flows carrying a wfpmon context.
/// - `FWP_CALLOUT_FLAG_ALLOW_OFFLOAD` for all of them. Without it the engine
///   disables NIC offloads (checksum, LSO, RSC …) for all traffic that a
///   filter referencing the callout matches — with wfpmon's match-all
///   filters, the whole machine (`FWPS_CALLOUT1` reference). What wfpmon
///   counts does not depend on offloading: the stream layer indicates the
///   connection's bytes (`FWPS_STREAM_DATA0.dataLength`) whatever the
///   segmentation, and at the datagram-data layer each `NET_BUFFER` is one
///   datagram as the transport sees it. The newer `ALLOW_USO`/`ALLOW_URO`
///   flags are deliberately not set: with them one `NET_BUFFER` may carry
///   several datagrams (UDP segmentation / receive coalescing), and the
///   packet counts would be wrong.
const fn callout_flags(spec: &CalloutSpec) -> u32 {
    if spec.conditional_on_flow() {
        fwps::FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW | fwps::FWP_CALLOUT_FLAG_ALLOW_OFFLOAD
    } else {
        fwps::FWP_CALLOUT_FLAG_ALLOW_OFFLOAD
    }
}

/// `FwpsCalloutUnregisterById0`. `PASSIVE_LEVEL`.
pub fn unregister_callout(id: u32) -> NTSTATUS {
    // SAFETY: any id is accepted (unknown ones yield an error status).
    unsafe { fwps::FwpsCalloutUnregisterById0(id) }
}

/// `FwpsFlowAssociateContext0`. IRQL ≤ `DISPATCH_LEVEL`.
///
/// # Safety
/// On `STATUS_SUCCESS` the engine owns `context` until it hands it back to
/// the callout's flow-delete callback: `context` must stay valid until then
/// and must not be freed by anyone else. On any other status nothing is
/// associated and the caller keeps ownership.
pub unsafe fn associate_flow_context(
    flow_id: u64,
    layer: u16,
    callout_id: u32,
    context: NonNull<FlowRecord>,
) -> NTSTATUS {
    // SAFETY: the caller upholds the ownership contract above.
    unsafe { fwps::FwpsFlowAssociateContext0(flow_id, layer, callout_id, context.as_ptr() as u64) }
}

/// `FwpsFlowRemoveContext0`. IRQL ≤ `DISPATCH_LEVEL` (called at `PASSIVE`
/// during teardown). May run the flow-delete callback before returning.
pub fn remove_flow_context(flow_id: u64, layer: u16, callout_id: u32) -> NTSTATUS {
    // SAFETY: any triple is accepted; unknown ones yield an error status.
    unsafe { fwps::FwpsFlowRemoveContext0(flow_id, layer, callout_id) }
}

/// The packet-injection handle; destroyed (`FwpsInjectionHandleDestroy0`)
/// when dropped.
///
/// "Unloading a Callout Driver" has the driver own one, created in
/// `DriverEntry` and destroyed last; wfpmon holds it for the packets a future
/// feature may inject. It injects nothing today, so no packet can carry this
/// handle's injection state, and classify does not ask
/// (`FwpsQueryPacketInjectionState0` per datagram could only ever answer
/// "not ours", for the price of a kernel call on the per-packet path).
pub struct InjectionHandle {
    raw: fwps::HANDLE,
}

impl InjectionHandle {
    /// `FwpsInjectionHandleCreate0(AF_UNSPEC, FWPS_INJECTION_TYPE_STREAM |
    /// FWPS_INJECTION_TYPE_TRANSPORT)`: the layers wfpmon's data callouts
    /// observe. `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The engine's status.
    pub fn create() -> Result<Self, NTSTATUS> {
        let mut raw: fwps::HANDLE = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; `raw` receives the handle.
        let status = unsafe {
            fwps::FwpsInjectionHandleCreate0(
                fwps::AF_UNSPEC,
                fwps::FWPS_INJECTION_TYPE_STREAM | fwps::FWPS_INJECTION_TYPE_TRANSPORT,
                &raw mut raw,
            )
        };
        trace::step("FwpsInjectionHandleCreate0", status);
        log!("FwpsInjectionHandleCreate0 -> {}", Status(status));
        if nt_success(status) {
            Ok(Self { raw })
        } else {
            Err(status)
        }
    }
}

impl Drop for InjectionHandle {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once, after every callout that
        // could use it is unregistered (lifecycle order). PASSIVE_LEVEL.
        let status = unsafe { fwps::FwpsInjectionHandleDestroy0(self.raw) };
        trace::teardown_step("FwpsInjectionHandleDestroy0", status);
        log!("FwpsInjectionHandleDestroy0 -> {}", Status(status));
    }
}

// ---------------------------------------------------------------------------
// Classify: decoding (IRQL <= DISPATCH_LEVEL)
// ---------------------------------------------------------------------------

/// A new flow, decoded from the flow-established layer's values (valid for
/// the classify call: `process_path` is the engine's memory).
pub struct FlowEstablished<'a> {
    /// The engine's flow handle.
    pub flow_handle: u64,
    /// Identity.
    pub tuple: FlowTuple,
    /// Owning process, when the engine supplied it.
    pub process_id: Option<u32>,
    /// Image path of the owning process (UTF-16LE bytes, the engine's
    /// device form), when supplied.
    pub process_path: Option<&'a [u8]>,
}

/// The incoming values of one classify call.
struct Values<'a> {
    values: &'a [fwps::FWPS_INCOMING_VALUE0],
}

impl<'a> Values<'a> {
    /// # Safety
    /// `raw` is null or the engine's `inFixedValues` for this classify.
    unsafe fn from_raw(raw: *const fwps::FWPS_INCOMING_VALUES0) -> Option<(u16, Self)> {
        // SAFETY: contract: valid for the duration of the classify call.
        let v = unsafe { raw.as_ref() }?;
        if v.incomingValue.is_null() {
            return None;
        }
        // SAFETY: the engine supplies `valueCount` values at `incomingValue`.
        let values = unsafe { core::slice::from_raw_parts(v.incomingValue, v.valueCount as usize) };
        Some((v.layerId, Self { values }))
    }

    fn get(&self, index: u32, expected: fwps::FWP_DATA_TYPE) -> Option<&'a fwps::FWP_VALUE0> {
        let v = &self.values.get(index as usize)?.value;
        (v.r#type == expected).then_some(v)
    }

    fn u8(&self, index: u32) -> Option<u8> {
        // SAFETY: the type tag says `uint8` is the valid member.
        self.get(index, fwps::FWP_UINT8)
            .map(|v| unsafe { v.Anonymous.uint8 })
    }

    fn u16(&self, index: u32) -> Option<u16> {
        // SAFETY: the type tag says `uint16` is the valid member.
        self.get(index, fwps::FWP_UINT16)
            .map(|v| unsafe { v.Anonymous.uint16 })
    }

    fn u32(&self, index: u32) -> Option<u32> {
        // SAFETY: the type tag says `uint32` is the valid member.
        self.get(index, fwps::FWP_UINT32)
            .map(|v| unsafe { v.Anonymous.uint32 })
    }

    /// A byte-blob field (`FWP_BYTE_BLOB_TYPE`), e.g. the app id.
    fn blob(&self, index: u32) -> Option<&'a [u8]> {
        let blob = self.get(index, fwps::FWP_BYTE_BLOB_TYPE)?.byte_blob_ptr()?;
        // SAFETY: null or the engine's blob, valid for the classify call
        // (`'a`).
        unsafe { blob_bytes(blob) }
    }

    /// An address field: `FWP_UINT32` (IPv4, host order) or
    /// `FWP_BYTE_ARRAY16_TYPE` (IPv6, network order).
    fn address(&self, index: u32, family: AddressFamily) -> Option<[u8; 16]> {
        match family {
            AddressFamily::V4 => self.u32(index).map(FlowTuple::ipv4_address),
            AddressFamily::V6 => {
                let v = self.get(index, fwps::FWP_BYTE_ARRAY16_TYPE)?;
                // SAFETY: the type tag says `byteArray16` is the valid member.
                let p = unsafe { v.Anonymous.byteArray16 };
                // SAFETY: the engine's 16-byte array, valid during classify.
                unsafe { p.as_ref() }.map(|a| a.byteArray16)
            }
        }
    }
}

/// The classify metadata.
///
/// Kept as a pointer, and read field by field: the structure grew across
/// Windows versions (fwpsk-sys declares the newest, longest layout), so a
/// reference to the whole of it could reach past what an older engine
/// passes. The fields read here lead the structure on every version.
struct Metadata(NonNull<fwps::FWPS_INCOMING_METADATA_VALUES0>);

impl Metadata {
    /// # Safety
    /// `raw` is null or the engine's `inMetaValues` for this classify, valid
    /// for as long as the returned value is used.
    unsafe fn from_raw(raw: *const fwps::FWPS_INCOMING_METADATA_VALUES0) -> Option<Self> {
        NonNull::new(raw.cast_mut()).map(Self)
    }

    /// `FWPS_IS_METADATA_FIELD_PRESENT`.
    fn has(&self, field: u32) -> bool {
        let p = self.0.as_ptr();
        // SAFETY: `currentMetadataValues` leads every version of the
        // structure (from_raw's contract); no reference to the whole.
        let present = unsafe { &raw const (*p).currentMetadataValues };
        // SAFETY: valid and aligned, in the engine's structure.
        (unsafe { present.read() }) & field == field
    }

    fn flow_handle(&self) -> Option<u64> {
        if !self.has(fwps::FWPS_METADATA_FIELD_FLOW_HANDLE) {
            return None;
        }
        let p = self.0.as_ptr();
        // SAFETY: present in every version of the structure.
        let handle = unsafe { &raw const (*p).flowHandle };
        // SAFETY: valid and aligned; flagged as set.
        Some(unsafe { handle.read() })
    }

    /// `transportHeaderSize`, when the engine supplies it.
    fn transport_header_size(&self) -> Option<u32> {
        if !self.has(fwps::FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE) {
            return None;
        }
        let p = self.0.as_ptr();
        // SAFETY: present in every version of the structure (it precedes
        // processPath, which Vista's already has).
        let size = unsafe { &raw const (*p).transportHeaderSize };
        // SAFETY: valid and aligned; flagged as set.
        Some(unsafe { size.read() })
    }

    /// `processId`, when supplied. Windows process ids are 32-bit values
    /// (`HANDLE`-sized in the API, but allocated below 2^32); a larger one
    /// is treated as not supplied rather than truncated.
    fn process_id(&self) -> Option<u32> {
        if !self.has(fwps::FWPS_METADATA_FIELD_PROCESS_ID) {
            return None;
        }
        let p = self.0.as_ptr();
        // SAFETY: present in every version of the structure.
        let pid = unsafe { &raw const (*p).processId };
        // SAFETY: valid and aligned; flagged as set.
        u32::try_from(unsafe { pid.read() }).ok()
    }

    /// `processPath` (an `FWP_BYTE_BLOB` of UTF-16LE bytes with a NUL),
    /// when supplied.
    fn process_path<'a>(&self) -> Option<&'a [u8]> {
        if !self.has(fwps::FWPS_METADATA_FIELD_PROCESS_PATH) {
            return None;
        }
        let p = self.0.as_ptr();
        // SAFETY: present in every version of the structure (Vista's has
        // it, after transportHeaderSize).
        let blob = unsafe { &raw const (*p).processPath };
        // SAFETY: valid and aligned; flagged as set.
        let blob = unsafe { blob.read() };
        // SAFETY: null or the engine's blob, valid for the classify call.
        unsafe { blob_bytes(blob) }
    }
}

/// The bytes of an `FWP_BYTE_BLOB` (`None` when null or empty).
///
/// # Safety
/// `blob` is null or points to a blob whose `size` bytes at `data` stay
/// valid for `'a` (the classify call).
unsafe fn blob_bytes<'a>(blob: *const fwps::FWP_BYTE_BLOB) -> Option<&'a [u8]> {
    // SAFETY: contract.
    let blob = unsafe { blob.as_ref() }?;
    if blob.data.is_null() || blob.size == 0 {
        return None;
    }
    // SAFETY: contract: `size` bytes at `data`, valid for `'a`.
    Some(unsafe { core::slice::from_raw_parts(blob.data.cast_const(), blob.size as usize) })
}

/// Field indices of the flow-established layer for one family.
struct FlowEstablishedFields {
    family: AddressFamily,
    app_id: u32,
    local_address: u32,
    local_port: u32,
    remote_address: u32,
    remote_port: u32,
    protocol: u32,
    direction: u32,
}

const FLOW_ESTABLISHED_V4: FlowEstablishedFields = FlowEstablishedFields {
    family: AddressFamily::V4,
    app_id: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_APP_ID,
    local_address: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_ADDRESS,
    local_port: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_PORT,
    remote_address: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_ADDRESS,
    remote_port: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_PORT,
    protocol: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_PROTOCOL,
    direction: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_DIRECTION,
};

const FLOW_ESTABLISHED_V6: FlowEstablishedFields = FlowEstablishedFields {
    family: AddressFamily::V6,
    app_id: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_APP_ID,
    local_address: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_LOCAL_ADDRESS,
    local_port: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_LOCAL_PORT,
    remote_address: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_REMOTE_ADDRESS,
    remote_port: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_REMOTE_PORT,
    protocol: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_IP_PROTOCOL,
    direction: fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_DIRECTION,
};

fn decode_flow_established<'a>(
    layer: u16,
    values: &Values<'a>,
    meta: &Metadata,
) -> Option<FlowEstablished<'a>> {
    let f = match layer {
        fwps::FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4 => &FLOW_ESTABLISHED_V4,
        fwps::FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6 => &FLOW_ESTABLISHED_V6,
        _ => return None,
    };
    // The protocol decides which data callout counts the flow, so it is
    // required; an address or port the engine did not supply is recorded as
    // zero rather than leaving the flow untracked.
    let tuple = FlowTuple {
        family: f.family,
        ip_protocol: values.u8(f.protocol)?,
        local_address: values
            .address(f.local_address, f.family)
            .unwrap_or_default(),
        local_port: values.u16(f.local_port).unwrap_or_default(),
        remote_address: values
            .address(f.remote_address, f.family)
            .unwrap_or_default(),
        remote_port: values.u16(f.remote_port).unwrap_or_default(),
        direction: values
            .u32(f.direction)
            .and_then(Direction::from_fwp)
            .unwrap_or(Direction::Outbound),
    };
    Some(FlowEstablished {
        flow_handle: meta.flow_handle()?,
        tuple,
        process_id: meta.process_id(),
        // The metadata's processPath; where the engine does not supply it,
        // the layer's ALE_APP_ID value, which FWPS_FIELDS_ALE_FLOW_ESTABLISHED_V4/6
        // document as "the full path of the application" (the same
        // device-form path).
        process_path: meta.process_path().or_else(|| values.blob(f.app_id)),
    })
}

/// The action protocol of an observer. With `FWPS_RIGHT_ACTION_WRITE` only
/// (otherwise `classifyOut` is left untouched):
/// - a filter whose action is `FWP_ACTION_CALLOUT_TERMINATING` needs BLOCK
///   or PERMIT — the engine treats anything else as BLOCK — so it gets
///   `FWP_ACTION_PERMIT`, and the write right is cleared when the filter
///   asks for it (`FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT`);
/// - every other filter (inspection, unknown, or none passed) gets
///   `FWP_ACTION_CONTINUE`: the next filter decides.
///
/// Either way the traffic's fate is what it would be without wfpmon.
/// Returns the action written, if any.
///
/// # Safety
/// `out` and `filter` are null or the engine's `classifyOut` and `filter`
/// for this classify.
unsafe fn observe_only(
    out: *mut fwps::FWPS_CLASSIFY_OUT0,
    filter: *const fwps::FWPS_FILTER1,
) -> Option<fwps::FWP_ACTION_TYPE> {
    // SAFETY: contract.
    let out = unsafe { out.as_mut() }?;
    if out.rights & fwps::FWPS_RIGHT_ACTION_WRITE == 0 {
        return None;
    }
    // SAFETY: contract.
    match unsafe { filter.as_ref() } {
        Some(f) if f.action.r#type == fwps::FWP_ACTION_CALLOUT_TERMINATING => {
            out.actionType = fwps::FWP_ACTION_PERMIT;
            if u32::from(f.flags) & fwps::FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT != 0 {
                out.rights &= !fwps::FWPS_RIGHT_ACTION_WRITE;
            }
        }
        _ => out.actionType = fwps::FWP_ACTION_CONTINUE,
    }
    Some(out.actionType)
}

/// The flow context the engine passes to a data callout: our
/// [`FlowRecord`], if any.
///
/// # Safety
/// `flow_context` is 0 or a context this driver associated and whose
/// flow-delete callback has not run (the engine defers it until classify
/// returns).
unsafe fn flow_record<'a>(flow_context: u64) -> Option<&'a FlowRecord> {
    // SAFETY: contract: a live FlowRecord we associated.
    NonNull::new(flow_context as *mut FlowRecord).map(|p| unsafe { p.as_ref() })
}

// ---------------------------------------------------------------------------
// Entry points the engine calls
// ---------------------------------------------------------------------------

/// classifyFn of the ALE flow-established callouts.
unsafe extern "system" fn classify_flow_established(
    in_fixed_values: *const fwps::FWPS_INCOMING_VALUES0,
    in_meta_values: *const fwps::FWPS_INCOMING_METADATA_VALUES0,
    _layer_data: *mut c_void,
    _classify_context: *const c_void,
    filter: *const fwps::FWPS_FILTER1,
    _flow_context: u64,
    classify_out: *mut fwps::FWPS_CLASSIFY_OUT0,
) {
    // SAFETY: the engine's arguments for this classify.
    unsafe { observe_only(classify_out, filter) };
    // SAFETY: as above.
    let Some((layer, values)) = (unsafe { Values::from_raw(in_fixed_values) }) else {
        return;
    };
    // SAFETY: as above.
    let Some(meta) = (unsafe { Metadata::from_raw(in_meta_values) }) else {
        return;
    };
    if let Some(flow) = decode_flow_established(layer, &values, &meta) {
        callouts::on_flow_established(&flow);
    }
}

/// classifyFn of the stream callouts: `layerData` is the stream packet.
unsafe extern "system" fn classify_stream(
    _in_fixed_values: *const fwps::FWPS_INCOMING_VALUES0,
    _in_meta_values: *const fwps::FWPS_INCOMING_METADATA_VALUES0,
    layer_data: *mut c_void,
    _classify_context: *const c_void,
    filter: *const fwps::FWPS_FILTER1,
    flow_context: u64,
    classify_out: *mut fwps::FWPS_CLASSIFY_OUT0,
) {
    // SAFETY: the engine's arguments for this classify.
    let action = unsafe { observe_only(classify_out, filter) };
    // SAFETY: at the stream layers layerData is the engine's
    // FWPS_STREAM_CALLOUT_IO_PACKET0, ours to update during classify.
    let Some(packet) = (unsafe {
        layer_data
            .cast::<fwps::FWPS_STREAM_CALLOUT_IO_PACKET0>()
            .as_mut()
    }) else {
        return;
    };
    // SAFETY: the packet's stream data, valid during classify.
    let Some(data) = (unsafe { packet.streamData.as_ref() }) else {
        return;
    };
    let length = data.dataLength;
    // The stream output of an observer ("Using a Callout for Deep
    // Inspection of Stream Data", FWPS_STREAM_CALLOUT_IO_PACKET0): no stream
    // action, no more data required (countBytesRequired must be zero unless
    // the action is NEED_MORE_DATA), and as enforced bytes the whole
    // indication when it permits, nothing when it passes the data on.
    packet.streamAction = fwps::FWPS_STREAM_ACTION_NONE;
    packet.countBytesRequired = 0;
    packet.countBytesEnforced = if action == Some(fwps::FWP_ACTION_PERMIT) {
        length
    } else {
        0
    };
    // SAFETY: as above.
    let Some(record) = (unsafe { flow_record(flow_context) }) else {
        return;
    };
    let direction = stream_direction(data.flags);
    // Bytes of the stream this callout did not see since its last classify
    // (`missedBytes`: a higher-weight filter's callout took them, e.g. one
    // that answered FWPS_STREAM_ACTION_NEED_MORE_DATA or deferred the
    // data) belong to the flow all the same: counted with this indication,
    // in its direction (the reference page does not name a direction; the
    // stream layer indicates one direction at a time, so the gap is taken
    // to be in the direction whose data resumes here — only real Windows
    // can confirm it). They add bytes, not packets: how many indications
    // they came in is not known. Note that once any callout answers
    // FWPS_STREAM_ACTION_ALLOW_CONNECTION, WFP stops classifying the
    // flow's stream for every callout: its later bytes are neither
    // indicated nor reported as missed, and the flow's counters stop there.
    let bytes = (length as u64).wrapping_add(packet.missedBytes as u64);
    if bytes > 0 {
        callouts::on_flow_data(record, direction, bytes, u64::from(length > 0));
    }
}

/// Direction of a stream indication, from its flags: `FWPS_STREAM_DATA0`
/// documents that `FWPS_STREAM_FLAG_RECEIVE` "is always set for inbound
/// data streams" (and `FWPS_STREAM_FLAG_SEND` for outbound ones), so the
/// flag alone decides — no need to decode the layer's incoming values on
/// the per-packet path.
const fn stream_direction(flags: u32) -> Direction {
    if flags & fwps::FWPS_STREAM_FLAG_RECEIVE != 0 {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

/// classifyFn of the datagram-data callouts: `layerData` is a
/// `NET_BUFFER_LIST`; each `NET_BUFFER` in it is one datagram.
///
/// What is counted is the transport payload, in both directions: at this
/// layer an inbound `NET_BUFFER` starts at the payload but an outbound one
/// at the transport header ("Data offset positions"), so outbound datagrams
/// are counted without the `transportHeaderSize` the metadata gives
/// (without that field: the fixed 8-byte header of UDP, nothing for other
/// protocols). Inbound ICMP and `ICMPv6` are the exception: their data starts
/// at the ICMP header (same page), which is then skipped the same way.
unsafe extern "system" fn classify_datagram_data(
    in_fixed_values: *const fwps::FWPS_INCOMING_VALUES0,
    in_meta_values: *const fwps::FWPS_INCOMING_METADATA_VALUES0,
    layer_data: *mut c_void,
    _classify_context: *const c_void,
    filter: *const fwps::FWPS_FILTER1,
    flow_context: u64,
    classify_out: *mut fwps::FWPS_CLASSIFY_OUT0,
) {
    // SAFETY: the engine's arguments for this classify.
    unsafe { observe_only(classify_out, filter) };
    // SAFETY: as above.
    let Some(record) = (unsafe { flow_record(flow_context) }) else {
        return;
    };
    // SAFETY: as above.
    let Some((_, values)) = (unsafe { Values::from_raw(in_fixed_values) }) else {
        return;
    };
    // The datagram callouts are registered at the two datagram-data layers
    // only, where these fields have the same indices (asserted below): the
    // layer itself need not be looked at on the per-packet path.
    let Some(direction) = values
        .u32(fwps::FWPS_FIELD_DATAGRAM_DATA_V4_DIRECTION)
        .and_then(Direction::from_fwp)
    else {
        return;
    };
    let protocol = values.u8(fwps::FWPS_FIELD_DATAGRAM_DATA_V4_IP_PROTOCOL);
    let header = match (direction, protocol) {
        (Direction::Inbound, Some(IPPROTO_ICMP | IPPROTO_ICMPV6)) | (Direction::Outbound, _) => {
            // SAFETY: the engine's metadata for this classify (or null).
            let meta = unsafe { Metadata::from_raw(in_meta_values) };
            let udp_out = direction == Direction::Outbound && protocol == Some(IPPROTO_UDP);
            meta.and_then(|m| m.transport_header_size())
                .unwrap_or(if udp_out { UDP_HEADER_SIZE } else { 0 })
        }
        (Direction::Inbound, _) => 0,
    };
    let nbl = layer_data.cast::<fwps::NET_BUFFER_LIST_HEADER_VIEW>();
    if nbl.is_null() {
        return;
    }
    let (mut bytes, mut packets) = (0u64, 0u64);
    // SAFETY: the engine's NET_BUFFER_LIST, valid during classify.
    let mut nb = unsafe { (*nbl).FirstNetBuffer };
    // SAFETY: each NET_BUFFER of the list is valid during classify; the
    // chain ends with null.
    while let Some(b) = unsafe { nb.as_ref() } {
        // SAFETY: `NET_BUFFER_DATA_LENGTH()` reads the ULONG member; the
        // union's SIZE_T member only widens it.
        let length = unsafe { b.DataLength.DataLength };
        bytes += u64::from(length.saturating_sub(header));
        packets += 1;
        nb = b.Next;
    }
    callouts::on_flow_data(record, direction, bytes, packets);
}

const _: () = assert!(
    fwps::FWPS_FIELD_DATAGRAM_DATA_V4_DIRECTION == fwps::FWPS_FIELD_DATAGRAM_DATA_V6_DIRECTION
        && fwps::FWPS_FIELD_DATAGRAM_DATA_V4_IP_PROTOCOL
            == fwps::FWPS_FIELD_DATAGRAM_DATA_V6_IP_PROTOCOL
);

/// `IPPROTO_ICMP`.
const IPPROTO_ICMP: u8 = 1;
/// `IPPROTO_UDP`.
const IPPROTO_UDP: u8 = 17;
/// `IPPROTO_ICMPV6`.
const IPPROTO_ICMPV6: u8 = 58;
/// Size of a UDP header (RFC 768): fixed.
const UDP_HEADER_SIZE: u32 = 8;

/// notifyFn: filters referencing our callouts come and go; nothing to do.
const unsafe extern "system" fn notify(
    _notify_type: fwps::FWPS_CALLOUT_NOTIFY_TYPE,
    _filter_key: *const fwps::GUID,
    _filter: *mut fwps::FWPS_FILTER1,
) -> NTSTATUS {
    wdk_sys::STATUS_SUCCESS
}

/// flowDeleteFn of the data callouts: the engine is deleting a flow that
/// carries our context (flow ended, or we removed the context).
unsafe extern "system" fn flow_delete(_layer_id: u16, _callout_id: u32, flow_context: u64) {
    if let Some(context) = NonNull::new(flow_context as *mut FlowRecord) {
        // SAFETY: the engine hands back the context we associated, once.
        unsafe { callouts::on_flow_delete(context) };
    }
}
