//! Compiled for Windows only: the catalog's management-layer keys and the
//! plan's object keys against the `windows` crate the tool calls with.
//! (The same comparisons run at compile time in `wfpmonctl::windows`.)
#![cfg(windows)]

use wfpmon_core::catalog::{self, CalloutRole, management_layer};
use wfpmonctl::windows::{same_guid, to_guid};
use windows::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4, FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6,
    FWPM_LAYER_DATAGRAM_DATA_V4, FWPM_LAYER_DATAGRAM_DATA_V6, FWPM_LAYER_STREAM_V4,
    FWPM_LAYER_STREAM_V6,
};

#[test]
fn catalog_layers_match_the_windows_crate() {
    let pairs = [
        (management_layer::STREAM_V4, FWPM_LAYER_STREAM_V4),
        (management_layer::STREAM_V6, FWPM_LAYER_STREAM_V6),
        (
            management_layer::DATAGRAM_DATA_V4,
            FWPM_LAYER_DATAGRAM_DATA_V4,
        ),
        (
            management_layer::DATAGRAM_DATA_V6,
            FWPM_LAYER_DATAGRAM_DATA_V6,
        ),
        (
            management_layer::ALE_FLOW_ESTABLISHED_V4,
            FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4,
        ),
        (
            management_layer::ALE_FLOW_ESTABLISHED_V6,
            FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6,
        ),
    ];
    for (ours, theirs) in pairs {
        assert!(same_guid(ours, theirs), "{ours} != {theirs:?}");
        assert_eq!(to_guid(ours), theirs);
    }
    // Every callout sits at the layer of its role and family.
    for c in &catalog::CALLOUTS {
        let expected = match (c.role, c.family) {
            (CalloutRole::Stream, catalog::AddressFamily::V4) => FWPM_LAYER_STREAM_V4,
            (CalloutRole::Stream, catalog::AddressFamily::V6) => FWPM_LAYER_STREAM_V6,
            (CalloutRole::DatagramData, catalog::AddressFamily::V4) => FWPM_LAYER_DATAGRAM_DATA_V4,
            (CalloutRole::DatagramData, catalog::AddressFamily::V6) => FWPM_LAYER_DATAGRAM_DATA_V6,
            (CalloutRole::FlowEstablished, catalog::AddressFamily::V4) => {
                FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4
            }
            (CalloutRole::FlowEstablished, catalog::AddressFamily::V6) => {
                FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6
            }
        };
        assert_eq!(to_guid(c.management_layer), expected, "{}", c.name);
    }
}

#[test]
fn guid_conversion_keeps_the_text_form() {
    let key = catalog::PROVIDER_KEY;
    let converted = to_guid(key);
    assert_eq!(format!("{converted:?}").to_lowercase(), key.to_string());
}
