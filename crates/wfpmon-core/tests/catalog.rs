//! Catalog invariants, and the management layer keys checked against an
//! independent source (the `windows-sys` crate's `FWPM_LAYER_*` constants).

use std::collections::HashSet;
use std::fmt::Write as _;

use wfpmon_core::catalog::{
    self, AddressFamily, CALLOUTS, CalloutRole, Guid, PROVIDER_KEY, SUBLAYER_KEY, data_callout_for,
};
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform as wfp;

const fn from_sys(g: windows_sys::core::GUID) -> Guid {
    Guid {
        data1: g.data1,
        data2: g.data2,
        data3: g.data3,
        data4: g.data4,
    }
}

#[test]
fn guid_text_form_round_trips() {
    let g = Guid::from_u128(0x46f3c222_407a_4bd2_b877_610694255791);
    assert_eq!(g.to_string(), "46f3c222-407a-4bd2-b877-610694255791");
    assert_eq!(g.data1, 0x46f3_c222);
    assert_eq!(g.data2, 0x407a);
    assert_eq!(g.data3, 0x4bd2);
    assert_eq!(g.data4, [0xb8, 0x77, 0x61, 0x06, 0x94, 0x25, 0x57, 0x91]);
    assert_eq!(Guid::from_u128(g.to_u128()), g);
}

#[test]
fn every_key_is_unique() {
    let mut keys: HashSet<u128> = CALLOUTS.iter().map(|c| c.key.to_u128()).collect();
    assert_eq!(keys.len(), CALLOUTS.len());
    assert!(keys.insert(PROVIDER_KEY.to_u128()));
    for filter in catalog::FILTER_KEYS {
        assert!(keys.insert(filter.to_u128()), "filter key {filter} reused");
    }
    assert!(keys.insert(SUBLAYER_KEY.to_u128()));
    let names: HashSet<&str> = CALLOUTS.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), CALLOUTS.len());
}

#[test]
fn management_layers_match_windows_sys() {
    let expected = [
        (
            catalog::management_layer::STREAM_V4,
            wfp::FWPM_LAYER_STREAM_V4,
        ),
        (
            catalog::management_layer::STREAM_V6,
            wfp::FWPM_LAYER_STREAM_V6,
        ),
        (
            catalog::management_layer::DATAGRAM_DATA_V4,
            wfp::FWPM_LAYER_DATAGRAM_DATA_V4,
        ),
        (
            catalog::management_layer::DATAGRAM_DATA_V6,
            wfp::FWPM_LAYER_DATAGRAM_DATA_V6,
        ),
        (
            catalog::management_layer::ALE_FLOW_ESTABLISHED_V4,
            wfp::FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4,
        ),
        (
            catalog::management_layer::ALE_FLOW_ESTABLISHED_V6,
            wfp::FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6,
        ),
    ];
    for (ours, theirs) in expected {
        assert_eq!(ours, from_sys(theirs));
    }
}

#[test]
fn data_callouts_are_registered_before_flow_established_ones() {
    let first_fe = CALLOUTS
        .iter()
        .position(|c| c.role == CalloutRole::FlowEstablished)
        .unwrap();
    assert!(
        CALLOUTS[..first_fe]
            .iter()
            .all(|c| c.role != CalloutRole::FlowEstablished)
    );
    assert!(
        CALLOUTS[first_fe..]
            .iter()
            .all(|c| c.role == CalloutRole::FlowEstablished)
    );
}

#[test]
fn each_family_has_one_callout_per_role_with_the_matching_layer() {
    use catalog::runtime_layer as rt;
    for family in [AddressFamily::V4, AddressFamily::V6] {
        for role in [
            CalloutRole::FlowEstablished,
            CalloutRole::Stream,
            CalloutRole::DatagramData,
        ] {
            let matches: Vec<_> = CALLOUTS
                .iter()
                .filter(|c| c.family == family && c.role == role)
                .collect();
            assert_eq!(matches.len(), 1, "{family:?} {role:?}");
            let layer = match (role, family) {
                (CalloutRole::FlowEstablished, AddressFamily::V4) => rt::ALE_FLOW_ESTABLISHED_V4,
                (CalloutRole::FlowEstablished, AddressFamily::V6) => rt::ALE_FLOW_ESTABLISHED_V6,
                (CalloutRole::Stream, AddressFamily::V4) => rt::STREAM_V4,
                (CalloutRole::Stream, AddressFamily::V6) => rt::STREAM_V6,
                (CalloutRole::DatagramData, AddressFamily::V4) => rt::DATAGRAM_DATA_V4,
                (CalloutRole::DatagramData, AddressFamily::V6) => rt::DATAGRAM_DATA_V6,
            };
            assert_eq!(matches[0].runtime_layer, layer);
            assert_eq!(
                matches[0].conditional_on_flow(),
                role != CalloutRole::FlowEstablished
            );
        }
    }
}

#[test]
fn data_callout_choice_follows_protocol_and_family() {
    for family in [AddressFamily::V4, AddressFamily::V6] {
        for proto in 0..=255u8 {
            let c = &CALLOUTS[data_callout_for(family, proto)];
            assert_eq!(c.family, family);
            let role = if proto == 6 {
                CalloutRole::Stream
            } else {
                CalloutRole::DatagramData
            };
            assert_eq!(c.role, role, "protocol {proto}");
        }
    }
}

#[test]
fn address_family_values_match_winsock() {
    assert_eq!(
        AddressFamily::V4.to_af(),
        windows_sys::Win32::Networking::WinSock::AF_INET
    );
    assert_eq!(
        AddressFamily::V6.to_af(),
        windows_sys::Win32::Networking::WinSock::AF_INET6
    );
    assert_eq!(AddressFamily::from_af(2), Some(AddressFamily::V4));
    assert_eq!(AddressFamily::from_af(23), Some(AddressFamily::V6));
    assert_eq!(AddressFamily::from_af(0), None);
}

#[test]
fn pool_tag_reads_wfpm_in_a_pool_dump() {
    assert_eq!(catalog::POOL_TAG.to_le_bytes(), *b"WfpM");
}

/// The device descriptor decodes, field by field, to
/// `D:P(A;;FA;;;SY)(A;;FA;;;BA)` (`FA` = `FILE_ALL_ACCESS`, what `GA` maps to).
#[test]
fn device_security_descriptor_is_system_and_admins_only() {
    use wfpmon_core::security::*;
    let sd = device_security_descriptor().0;
    let u16_at = |o: usize| u16::from_le_bytes([sd[o], sd[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(sd[o..o + 4].try_into().unwrap());
    assert_eq!(sd.len(), DEVICE_SD_SIZE);
    assert_eq!(sd[0], 1, "revision");
    assert_eq!(
        u16_at(2),
        SE_DACL_PRESENT | SE_DACL_PROTECTED | SE_SELF_RELATIVE
    );
    assert_eq!(
        (u32_at(4), u32_at(8), u32_at(12)),
        (0, 0, 0),
        "no owner, group, SACL"
    );
    let dacl = u32_at(16) as usize;
    assert_eq!(sd[dacl], 2, "ACL revision");
    assert_eq!(u16_at(dacl + 2) as usize, sd.len() - dacl, "ACL size");
    assert_eq!(u16_at(dacl + 4), 2, "ACE count");
    // Walk the ACEs and render their SIDs in S-R-I-S... form.
    let mut at = dacl + 8;
    let mut sids = Vec::new();
    for _ in 0..2 {
        assert_eq!(sd[at], 0, "ACCESS_ALLOWED_ACE_TYPE");
        let size = u16_at(at + 2) as usize;
        assert_eq!(u32_at(at + 4), FILE_ALL_ACCESS);
        let sid = at + 8;
        let count = sd[sid + 1] as usize;
        assert_eq!(size, 8 + 8 + 4 * count);
        let authority = u64::from_be_bytes([
            0,
            0,
            sd[sid + 2],
            sd[sid + 3],
            sd[sid + 4],
            sd[sid + 5],
            sd[sid + 6],
            sd[sid + 7],
        ]);
        let mut text = format!("S-{}-{}", sd[sid], authority);
        for k in 0..count {
            write!(text, "-{}", u32_at(sid + 8 + 4 * k)).unwrap();
        }
        sids.push(text);
        at += size;
    }
    assert_eq!(at, sd.len());
    assert_eq!(sids, ["S-1-5-18", "S-1-5-32-544"]);
}
