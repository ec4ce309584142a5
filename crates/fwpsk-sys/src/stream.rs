//! The stream-layer `layerData`: `FWPS_STREAM_CALLOUT_IO_PACKET0`,
//! `FWPS_STREAM_DATA0`, `FWPS_STREAM_DATA_OFFSET0`, the stream actions and
//! the stream flags (fwpsk.h).
//!
//! Sources: the reference pages of the three structures and of
//! `FwpsStreamInjectAsync0` (flag names and meanings). The order of
//! `FWPS_STREAM_ACTION_TYPE` is the header's (`NONE`, `NEED_MORE_DATA`,
//! `DROP_CONNECTION`, `DEFER`, `ALLOW_CONNECTION`), taken from a public
//! preprocessed copy of the WDK `fwpsk.h`; the reference page lists the
//! enumerators in a different order, which is not their numbering.
//!
//! `NET_BUFFER_LIST`, `NET_BUFFER` and `MDL` pointers are `*mut c_void`
//! (opaque), so that this crate needs no `wdk-sys`; cast them to
//! [`crate::NET_BUFFER_LIST_HEADER_VIEW`] / [`crate::NET_BUFFER_HEADER_VIEW`]
//! or to the `wdk-sys` types.

use core::ffi::c_void;

use crate::types::{SIZE_T, UINT32};

/// `FWPS_STREAM_DATA_OFFSET0` (fwpsk.h): a position inside the stream data.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_STREAM_DATA_OFFSET0 {
    /// `NET_BUFFER_LIST*` in which the offset lies.
    pub netBufferList: *mut c_void,
    /// `NET_BUFFER*` in which the offset lies.
    pub netBuffer: *mut c_void,
    /// `MDL*` in which the offset lies.
    pub mdl: *mut c_void,
    /// Byte offset from the beginning of `mdl`.
    pub mdlOffset: UINT32,
    /// Reserved for the system.
    pub netBufferOffset: UINT32,
    /// Reserved for the system.
    pub streamDataOffset: SIZE_T,
}

// Three pointers @0, @8, @16; mdlOffset @24; netBufferOffset @28;
// streamDataOffset @32 => 40.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_STREAM_DATA_OFFSET0>() == 40);
    assert!(align_of::<FWPS_STREAM_DATA_OFFSET0>() == 8);
    assert!(offset_of!(FWPS_STREAM_DATA_OFFSET0, netBufferList) == 0);
    assert!(offset_of!(FWPS_STREAM_DATA_OFFSET0, netBuffer) == 8);
    assert!(offset_of!(FWPS_STREAM_DATA_OFFSET0, mdl) == 16);
    assert!(offset_of!(FWPS_STREAM_DATA_OFFSET0, mdlOffset) == 24);
    assert!(offset_of!(FWPS_STREAM_DATA_OFFSET0, netBufferOffset) == 28);
    assert!(offset_of!(FWPS_STREAM_DATA_OFFSET0, streamDataOffset) == 32);
};

/// `FWPS_STREAM_DATA0` (fwpsk.h): the portion of a stream offered to the
/// callout.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_STREAM_DATA0 {
    /// `FWPS_STREAM_FLAG_*`: direction and stream events.
    pub flags: UINT32,
    /// Where the portion begins.
    pub dataOffset: FWPS_STREAM_DATA_OFFSET0,
    /// Number of bytes in the portion.
    pub dataLength: SIZE_T,
    /// `NET_BUFFER_LIST*` chain that holds the portion.
    pub netBufferListChain: *mut c_void,
}

// flags @0 + 4 padding, dataOffset (40) @8, dataLength @48, chain @56 => 64.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_STREAM_DATA0>() == 64);
    assert!(align_of::<FWPS_STREAM_DATA0>() == 8);
    assert!(offset_of!(FWPS_STREAM_DATA0, flags) == 0);
    assert!(offset_of!(FWPS_STREAM_DATA0, dataOffset) == 8);
    assert!(offset_of!(FWPS_STREAM_DATA0, dataLength) == 48);
    assert!(offset_of!(FWPS_STREAM_DATA0, netBufferListChain) == 56);
};

/// `FWPS_STREAM_ACTION_TYPE` (fwpsk.h): what `classifyFn` asks of the
/// stream, in `streamAction`.
pub type FWPS_STREAM_ACTION_TYPE = i32;
/// `FWPS_STREAM_ACTION_NONE`: no stream-specific action; the classify
/// action applies. What an inspection-only callout leaves.
pub const FWPS_STREAM_ACTION_NONE: FWPS_STREAM_ACTION_TYPE = 0;
/// `FWPS_STREAM_ACTION_NEED_MORE_DATA`: wait for `countBytesRequired` more
/// bytes.
pub const FWPS_STREAM_ACTION_NEED_MORE_DATA: FWPS_STREAM_ACTION_TYPE = 1;
/// `FWPS_STREAM_ACTION_DROP_CONNECTION`: drop the connection (only honoured
/// for `FWP_ACTION_CALLOUT_UNKNOWN` filters).
pub const FWPS_STREAM_ACTION_DROP_CONNECTION: FWPS_STREAM_ACTION_TYPE = 2;
/// `FWPS_STREAM_ACTION_DEFER`: defer inbound processing until
/// `FwpsStreamContinue0`.
pub const FWPS_STREAM_ACTION_DEFER: FWPS_STREAM_ACTION_TYPE = 3;
/// `FWPS_STREAM_ACTION_ALLOW_CONNECTION`: permit all future data of the
/// flow and stop classifying it.
pub const FWPS_STREAM_ACTION_ALLOW_CONNECTION: FWPS_STREAM_ACTION_TYPE = 4;
/// `FWPS_STREAM_ACTION_TYPE_MAX`.
pub const FWPS_STREAM_ACTION_TYPE_MAX: FWPS_STREAM_ACTION_TYPE = 5;

/// `FWPS_STREAM_CALLOUT_IO_PACKET0` (fwpsk.h): `layerData` of `classifyFn`
/// at `FWPS_LAYER_STREAM_V4` / `_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_STREAM_CALLOUT_IO_PACKET0 {
    /// The portion of the stream offered.
    pub streamData: *mut FWPS_STREAM_DATA0,
    /// Bytes missed since the last call (a higher-weight filter took them).
    pub missedBytes: SIZE_T,
    /// Set by the callout with `FWPS_STREAM_ACTION_NEED_MORE_DATA`, else 0.
    pub countBytesRequired: UINT32,
    /// Set by the callout: leading bytes the action applies to.
    pub countBytesEnforced: SIZE_T,
    /// Set by the callout (`FWPS_STREAM_ACTION_*`).
    pub streamAction: FWPS_STREAM_ACTION_TYPE,
}

// streamData @0, missedBytes @8, countBytesRequired @16 + 4 padding,
// countBytesEnforced @24, streamAction @32 + 4 tail padding => 40.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FWPS_STREAM_CALLOUT_IO_PACKET0>() == 40);
    assert!(align_of::<FWPS_STREAM_CALLOUT_IO_PACKET0>() == 8);
    assert!(offset_of!(FWPS_STREAM_CALLOUT_IO_PACKET0, streamData) == 0);
    assert!(offset_of!(FWPS_STREAM_CALLOUT_IO_PACKET0, missedBytes) == 8);
    assert!(offset_of!(FWPS_STREAM_CALLOUT_IO_PACKET0, countBytesRequired) == 16);
    assert!(offset_of!(FWPS_STREAM_CALLOUT_IO_PACKET0, countBytesEnforced) == 24);
    assert!(offset_of!(FWPS_STREAM_CALLOUT_IO_PACKET0, streamAction) == 32);
};

// Stream flags. The reference pages give names and meanings only, not the
// values. These follow the layout of the WDK's fwpsk.h as transcribed from
// memory of the header: receive flags in the low 16 bits (PUSH was added in
// Vista SP1 as the next receive bit), send flags in the high 16 bits. No
// public Microsoft page confirms them, so treat them as unverified: a driver
// that must not depend on them (wfpmon does not) tests RECEIVE only, or
// reads the stream layer's `*_DIRECTION` data field.

/// `FWPS_STREAM_FLAG_RECEIVE`: inbound data (always set for inbound).
pub const FWPS_STREAM_FLAG_RECEIVE: UINT32 = 0x0000_0001;
/// `FWPS_STREAM_FLAG_RECEIVE_EXPEDITED`: inbound out-of-band data.
pub const FWPS_STREAM_FLAG_RECEIVE_EXPEDITED: UINT32 = 0x0000_0002;
/// `FWPS_STREAM_FLAG_RECEIVE_DISCONNECT`: inbound FIN.
pub const FWPS_STREAM_FLAG_RECEIVE_DISCONNECT: UINT32 = 0x0000_0004;
/// `FWPS_STREAM_FLAG_RECEIVE_ABORT`: inbound RST.
pub const FWPS_STREAM_FLAG_RECEIVE_ABORT: UINT32 = 0x0000_0008;
/// `FWPS_STREAM_FLAG_RECEIVE_PUSH`: inbound data arrived with TCP PUSH
/// (Vista SP1 and later).
pub const FWPS_STREAM_FLAG_RECEIVE_PUSH: UINT32 = 0x0000_0010;
/// `FWPS_STREAM_FLAG_SEND`: outbound data (always set for outbound).
pub const FWPS_STREAM_FLAG_SEND: UINT32 = 0x0001_0000;
/// `FWPS_STREAM_FLAG_SEND_EXPEDITED`: outbound out-of-band data.
pub const FWPS_STREAM_FLAG_SEND_EXPEDITED: UINT32 = 0x0002_0000;
/// `FWPS_STREAM_FLAG_SEND_NODELAY`: the sender asked for no buffering.
pub const FWPS_STREAM_FLAG_SEND_NODELAY: UINT32 = 0x0004_0000;
/// `FWPS_STREAM_FLAG_SEND_DISCONNECT`: FIN after this data.
pub const FWPS_STREAM_FLAG_SEND_DISCONNECT: UINT32 = 0x0008_0000;
/// `FWPS_STREAM_FLAG_SEND_ABORT`: RST after this data.
pub const FWPS_STREAM_FLAG_SEND_ABORT: UINT32 = 0x0010_0000;
