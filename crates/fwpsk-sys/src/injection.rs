//! Packet injection state and injection handle types (fwpsk.h).
//!
//! Sources: the reference pages `FWPS_PACKET_INJECTION_STATE`,
//! `FwpsInjectionHandleCreate0` (flag names) and
//! `FwpsQueryPacketInjectionState0`; the enumeration order cross-checked
//! against a public preprocessed copy of the WDK `fwpsk.h`. The
//! `FWPS_INJECTION_TYPE_*` values are the header's `#define`s (the pages
//! give names only), as used by other public callout drivers.

use crate::types::UINT32;

/// `FWPS_PACKET_INJECTION_STATE` (fwpsk.h): what
/// [`crate::FwpsQueryPacketInjectionState0`] returns.
pub type FWPS_PACKET_INJECTION_STATE = i32;
/// `FWPS_PACKET_NOT_INJECTED`: the packet came from the TCP/IP stack.
pub const FWPS_PACKET_NOT_INJECTED: FWPS_PACKET_INJECTION_STATE = 0;
/// `FWPS_PACKET_INJECTED_BY_SELF`: injected with the queried handle; let it
/// pass (`FWP_ACTION_CONTINUE` or `FWP_ACTION_PERMIT`) and do not inspect it
/// again.
pub const FWPS_PACKET_INJECTED_BY_SELF: FWPS_PACKET_INJECTION_STATE = 1;
/// `FWPS_PACKET_INJECTED_BY_OTHER`: injected with another handle.
pub const FWPS_PACKET_INJECTED_BY_OTHER: FWPS_PACKET_INJECTION_STATE = 2;
/// `FWPS_PACKET_PREVIOUSLY_INJECTED_BY_SELF`: injected with the queried
/// handle, then cloned and re-injected.
pub const FWPS_PACKET_PREVIOUSLY_INJECTED_BY_SELF: FWPS_PACKET_INJECTION_STATE = 3;
/// `FWPS_PACKET_INJECTION_STATE_MAX`.
pub const FWPS_PACKET_INJECTION_STATE_MAX: FWPS_PACKET_INJECTION_STATE = 4;

/// `FWPS_INJECTION_TYPE_STREAM`: for `FwpsStreamInjectAsync0`.
pub const FWPS_INJECTION_TYPE_STREAM: UINT32 = 0x0000_0001;
/// `FWPS_INJECTION_TYPE_TRANSPORT`: for `FwpsInjectTransport*Async0`.
pub const FWPS_INJECTION_TYPE_TRANSPORT: UINT32 = 0x0000_0002;
/// `FWPS_INJECTION_TYPE_NETWORK`: for `FwpsInjectNetwork*Async0`.
pub const FWPS_INJECTION_TYPE_NETWORK: UINT32 = 0x0000_0004;
/// `FWPS_INJECTION_TYPE_FORWARD`: for `FwpsInjectForwardAsync0`.
pub const FWPS_INJECTION_TYPE_FORWARD: UINT32 = 0x0000_0008;
/// `FWPS_INJECTION_TYPE_L2`: for the MAC-frame and vSwitch injection
/// functions (Windows 8 and later).
pub const FWPS_INJECTION_TYPE_L2: UINT32 = 0x0000_0010;
