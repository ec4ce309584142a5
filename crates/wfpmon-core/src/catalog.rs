//! The callout catalog: every WFP object wfpmon defines, with its fixed key.
//!
//! This is the single definition of wfpmon's GUIDs. The driver registers the
//! callouts listed here; `wfpmonctl` adds the matching management objects
//! (provider, sublayer, callouts, filters) from the same table.

use core::fmt;

/// A GUID in its Windows memory layout (`GUID` from `guiddef.h`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid {
    /// First 32 bits.
    pub data1: u32,
    /// Next 16 bits.
    pub data2: u16,
    /// Next 16 bits.
    pub data3: u16,
    /// Last 64 bits, in byte order.
    pub data4: [u8; 8],
}

const _: () = assert!(core::mem::size_of::<Guid>() == 16);

impl Guid {
    /// Builds a GUID from its canonical text form read as one big-endian
    /// 128-bit number (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` → `0xxxxxxxxx_...`).
    #[must_use]
    #[allow(clippy::cast_possible_truncation)] // each field takes its own bits
    pub const fn from_u128(value: u128) -> Self {
        let tail = (value as u64).to_be_bytes();
        Self {
            data1: (value >> 96) as u32,
            data2: (value >> 80) as u16,
            data3: (value >> 64) as u16,
            data4: tail,
        }
    }

    /// The GUID as one 128-bit number (inverse of [`Guid::from_u128`]).
    #[must_use]
    pub const fn to_u128(self) -> u128 {
        ((self.data1 as u128) << 96)
            | ((self.data2 as u128) << 80)
            | ((self.data3 as u128) << 64)
            | (u64::from_be_bytes(self.data4) as u128)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

/// IP address family of a callout's layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl AddressFamily {
    /// The Windows `ADDRESS_FAMILY` value (`AF_INET` = 2, `AF_INET6` = 23).
    #[must_use]
    pub const fn to_af(self) -> u16 {
        match self {
            Self::V4 => 2,
            Self::V6 => 23,
        }
    }

    /// Inverse of [`AddressFamily::to_af`].
    #[must_use]
    pub const fn from_af(af: u16) -> Option<Self> {
        match af {
            2 => Some(Self::V4),
            23 => Some(Self::V6),
            _ => None,
        }
    }

    /// Number of significant bytes of an address of this family.
    #[must_use]
    pub const fn address_len(self) -> usize {
        match self {
            Self::V4 => 4,
            Self::V6 => 16,
        }
    }
}

/// What a callout does, which also fixes its filtering layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CalloutRole {
    /// `ALE_FLOW_ESTABLISHED`: sees each new flow once and associates a flow
    /// context with the data callout of the same family.
    FlowEstablished,
    /// `STREAM`: counts TCP stream data of flows that carry a context.
    Stream,
    /// `DATAGRAM_DATA`: counts datagrams (UDP and other non-TCP protocols) of
    /// flows that carry a context.
    DatagramData,
}

/// Run-time filtering layer identifiers (`FWPS_BUILTIN_LAYERS`, fwpsk.h).
///
/// Source: the `FWPS_BUILTIN_LAYERS` enumeration documented under
/// "Run-time Filtering Layer Identifiers" in the WDK reference; the values
/// are the enumerators' positions.
pub mod runtime_layer {
    /// `FWPS_LAYER_STREAM_V4`.
    pub const STREAM_V4: u16 = 20;
    /// `FWPS_LAYER_STREAM_V6`.
    pub const STREAM_V6: u16 = 22;
    /// `FWPS_LAYER_DATAGRAM_DATA_V4`.
    pub const DATAGRAM_DATA_V4: u16 = 24;
    /// `FWPS_LAYER_DATAGRAM_DATA_V6`.
    pub const DATAGRAM_DATA_V6: u16 = 26;
    /// `FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4`.
    pub const ALE_FLOW_ESTABLISHED_V4: u16 = 52;
    /// `FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6`.
    pub const ALE_FLOW_ESTABLISHED_V6: u16 = 54;
}

/// Management filtering layer keys (`FWPM_LAYER_*`, fwpmu.h / fwpmk.h).
///
/// Source: "Filtering Layer Identifiers" in the Windows SDK reference. The
/// host tests compare them with the `windows-sys` crate's definitions.
pub mod management_layer {
    use super::Guid;

    /// `FWPM_LAYER_STREAM_V4`.
    pub const STREAM_V4: Guid = Guid::from_u128(0x3b89653c_c170_49e4_b1cd_e0eeeee19a3e);
    /// `FWPM_LAYER_STREAM_V6`.
    pub const STREAM_V6: Guid = Guid::from_u128(0x47c9137a_7ec4_46b3_b6e4_48e926b1eda4);
    /// `FWPM_LAYER_DATAGRAM_DATA_V4`.
    pub const DATAGRAM_DATA_V4: Guid = Guid::from_u128(0x3d08bf4e_45f6_4930_a922_417098e20027);
    /// `FWPM_LAYER_DATAGRAM_DATA_V6`.
    pub const DATAGRAM_DATA_V6: Guid = Guid::from_u128(0xfa45fe2f_3cba_4427_87fc_57b9a4b10d00);
    /// `FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4`.
    pub const ALE_FLOW_ESTABLISHED_V4: Guid =
        Guid::from_u128(0xaf80470a_5596_4c13_9992_539e6fe57967);
    /// `FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6`.
    pub const ALE_FLOW_ESTABLISHED_V6: Guid =
        Guid::from_u128(0x7021d2b3_dfa4_406e_afeb_6afaf7e70efd);
}

/// One callout of wfpmon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalloutSpec {
    /// The callout key (`calloutKey` of `FWPS_CALLOUT`, `calloutKey` of `FWPM_CALLOUT0`).
    pub key: Guid,
    /// Short name, shown by tools and in the debug log.
    pub name: &'static str,
    /// One-line description for the management object.
    pub description: &'static str,
    /// What the callout does.
    pub role: CalloutRole,
    /// Address family of its layer.
    pub family: AddressFamily,
    /// Run-time layer identifier (`FWPS_LAYER_*`).
    pub runtime_layer: u16,
    /// Management layer key (`FWPM_LAYER_*`).
    pub management_layer: Guid,
}

impl CalloutSpec {
    /// Whether the callout only sees flows that carry one of its contexts
    /// (registered with `FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW`).
    #[must_use]
    pub const fn conditional_on_flow(&self) -> bool {
        !matches!(self.role, CalloutRole::FlowEstablished)
    }
}

/// Number of callouts wfpmon registers.
pub const CALLOUT_COUNT: usize = 6;

/// Index of a callout in [`CALLOUTS`].
pub type CalloutIndex = usize;

/// `FWPM_PROVIDER0` key of wfpmon's management objects.
pub const PROVIDER_KEY: Guid = Guid::from_u128(0x22f6984a_dd5f_4e7b_8dc7_ccbf8d377c66);
/// `FWPM_SUBLAYER0` key holding wfpmon's filters.
pub const SUBLAYER_KEY: Guid = Guid::from_u128(0xacbbaa62_dc39_4d57_8e87_d4ee7642d8de);

/// Every callout, in **registration order**.
///
/// The data callouts come first: a flow-established callout associates flow
/// contexts with them, so they must already be registered the first time the
/// engine calls it. Teardown unregisters in the reverse order, which stops
/// new associations before the contexts' owners go away.
pub const CALLOUTS: [CalloutSpec; CALLOUT_COUNT] = [
    CalloutSpec {
        key: Guid::from_u128(0xef20f00c_05ad_4188_99ac_e1cb6313d807),
        name: "wfpmon-stream-v4",
        description: "Counts TCP stream data of IPv4 flows",
        role: CalloutRole::Stream,
        family: AddressFamily::V4,
        runtime_layer: runtime_layer::STREAM_V4,
        management_layer: management_layer::STREAM_V4,
    },
    CalloutSpec {
        key: Guid::from_u128(0x48c6f8d2_57b7_4f23_8f14_0d8a1fb7884d),
        name: "wfpmon-stream-v6",
        description: "Counts TCP stream data of IPv6 flows",
        role: CalloutRole::Stream,
        family: AddressFamily::V6,
        runtime_layer: runtime_layer::STREAM_V6,
        management_layer: management_layer::STREAM_V6,
    },
    CalloutSpec {
        key: Guid::from_u128(0xcade8d40_541f_4de8_8f85_7d9fd29c531e),
        name: "wfpmon-datagram-v4",
        description: "Counts datagrams of IPv4 flows",
        role: CalloutRole::DatagramData,
        family: AddressFamily::V4,
        runtime_layer: runtime_layer::DATAGRAM_DATA_V4,
        management_layer: management_layer::DATAGRAM_DATA_V4,
    },
    CalloutSpec {
        key: Guid::from_u128(0x869854f4_4872_4282_9f13_c8e973d5244c),
        name: "wfpmon-datagram-v6",
        description: "Counts datagrams of IPv6 flows",
        role: CalloutRole::DatagramData,
        family: AddressFamily::V6,
        runtime_layer: runtime_layer::DATAGRAM_DATA_V6,
        management_layer: management_layer::DATAGRAM_DATA_V6,
    },
    CalloutSpec {
        key: Guid::from_u128(0x46f3c222_407a_4bd2_b877_610694255791),
        name: "wfpmon-flow-established-v4",
        description: "Tracks new IPv4 flows and attaches a traffic counter to them",
        role: CalloutRole::FlowEstablished,
        family: AddressFamily::V4,
        runtime_layer: runtime_layer::ALE_FLOW_ESTABLISHED_V4,
        management_layer: management_layer::ALE_FLOW_ESTABLISHED_V4,
    },
    CalloutSpec {
        key: Guid::from_u128(0x1298a378_d458_41e3_8b3b_6de9dc80fcb9),
        name: "wfpmon-flow-established-v6",
        description: "Tracks new IPv6 flows and attaches a traffic counter to them",
        role: CalloutRole::FlowEstablished,
        family: AddressFamily::V6,
        runtime_layer: runtime_layer::ALE_FLOW_ESTABLISHED_V6,
        management_layer: management_layer::ALE_FLOW_ESTABLISHED_V6,
    },
];

/// `FWPM_FILTER0` keys of the filters `wfpmonctl install` adds.
///
/// One per callout, index-aligned with [`CALLOUTS`] (filter `i` references
/// callout `i` at its layer). Fixed keys let `wfpmonctl uninstall` delete exactly
/// what install added without storing anything. Fixed forever: changing
/// one would orphan filters an older `wfpmonctl` installed.
pub const FILTER_KEYS: [Guid; CALLOUT_COUNT] = [
    Guid::from_u128(0x8ea6_a57d_020d_460c_8725_b13a_3760_a548),
    Guid::from_u128(0xf604_9f07_f2cd_4c95_bb7f_7cf8_fe18_9290),
    Guid::from_u128(0x5e66_02ca_a877_4d7b_871e_981c_c9a6_560f),
    Guid::from_u128(0xeffa_38c5_765d_492b_b05b_031b_d035_26ce),
    Guid::from_u128(0x4790_ebf6_3d02_448f_beb0_c363_e551_8b57),
    Guid::from_u128(0xff6a_85a6_3f06_45a5_9e44_de04_f5fe_f46a),
];

/// Index in [`CALLOUTS`] of the callout that counts a flow's data, given the
/// flow's family and IP protocol: TCP flows are counted at the stream layer,
/// every other protocol at the datagram-data layer.
#[must_use]
pub const fn data_callout_for(family: AddressFamily, ip_protocol: u8) -> CalloutIndex {
    const IPPROTO_TCP: u8 = 6;
    match (family, ip_protocol == IPPROTO_TCP) {
        (AddressFamily::V4, true) => 0,
        (AddressFamily::V6, true) => 1,
        (AddressFamily::V4, false) => 2,
        (AddressFamily::V6, false) => 3,
    }
}

/// Finds a callout by its key.
#[must_use]
pub fn find_by_key(key: &Guid) -> Option<CalloutIndex> {
    CALLOUTS.iter().position(|c| c.key == *key)
}

/// Kernel name of the control device (`\Device\WfpMon`).
pub const DEVICE_NAME: &str = "\\Device\\WfpMon";
/// Path user mode opens the control device by, without a DOS symbolic link.
pub const DEVICE_USER_PATH: &str = "\\\\.\\GLOBALROOT\\Device\\WfpMon";
/// Service name (the INF's `AddService` name and `sc` name).
pub const SERVICE_NAME: &str = "wfpmon";
/// File name of the driver image.
pub const IMAGE_NAME: &str = "wfpmon.sys";
/// Pool tag of every allocation the driver makes itself (`WfpM` in a pool dump).
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"WfpM");
