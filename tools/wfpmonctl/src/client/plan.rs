//! The filter-engine objects `install` adds, derived from
//! `wfpmon_core::catalog` — pure data, no Windows calls.
//!
//! Decisions (see also the README):
//!
//! * **Fixed keys.** Provider, sublayer, callout and filter keys all come
//!   from the catalog, so uninstall deletes exactly these keys and `status`
//!   asks for each by key; nothing is enumerated or stored on disk.
//! * **Fail open.** Every filter is `FWP_ACTION_CALLOUT_INSPECTION`, which
//!   the engine ignores while the callout is not registered: a stopped driver
//!   never blocks traffic. `FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED`
//!   is documented for terminating/unknown actions only, so it is not set.
//! * **Lifetime.** Static by default (gone when BFE stops); `--persistent`
//!   sets the persistent flag on every object (a persistent object may not
//!   reference a static one). No boot-time filters: they act only before BFE
//!   starts, when the demand-start driver has no callout registered, so an
//!   inspection filter would have no effect at all.
//! * **No provider service name.** BFE would skip a provider's persistent
//!   objects at boot unless the named service starts automatically.

use wfpmon_core::catalog::{self, CALLOUT_COUNT, CALLOUTS, FILTER_KEYS, Guid};
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWPM_CALLOUT_FLAG_PERSISTENT, FWPM_FILTER_FLAG_PERSISTENT, FWPM_PROVIDER_FLAG_PERSISTENT,
    FWPM_SUBLAYER_FLAG_PERSISTENT,
};

/// Weight of wfpmon's sublayer (`FWPM_SUBLAYER0.weight`): low, an
/// inspection callout need not run before other sublayers.
pub const SUBLAYER_WEIGHT: u16 = 0x0100;
/// Weight of every filter (`FWP_UINT64`): base of range 8 of 16, the middle
/// of the automatic weights. One wfpmon filter per layer, so it only has to
/// be defined, not ordered.
pub const FILTER_WEIGHT: u64 = 8 << 60;

/// One filter-engine object of wfpmon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// `FWPM_PROVIDER0`.
    Provider,
    /// `FWPM_SUBLAYER0`.
    Sublayer,
    /// `FWPM_CALLOUT0` for `CALLOUTS[i]`.
    Callout(usize),
    /// `FWPM_FILTER0` calling `CALLOUTS[i]`, key `FILTER_KEYS[i]`.
    Filter(usize),
}

impl Object {
    /// Every object, in the order `install` adds them (a referenced object
    /// before the objects referencing it); `uninstall` uses the reverse.
    pub fn add_order() -> Vec<Self> {
        let mut all = vec![Self::Provider, Self::Sublayer];
        all.extend((0..CALLOUT_COUNT).map(Self::Callout));
        all.extend((0..CALLOUT_COUNT).map(Self::Filter));
        all
    }

    /// Lower-case noun, for messages.
    pub const fn noun(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Sublayer => "sublayer",
            Self::Callout(_) => "callout",
            Self::Filter(_) => "filter",
        }
    }

    /// The object's key.
    pub const fn key(self) -> Guid {
        match self {
            Self::Provider => catalog::PROVIDER_KEY,
            Self::Sublayer => catalog::SUBLAYER_KEY,
            Self::Callout(i) => CALLOUTS[i].key,
            Self::Filter(i) => FILTER_KEYS[i],
        }
    }

    /// `displayData.name`.
    pub fn name(self) -> String {
        match self {
            Self::Provider => "wfpmon".to_owned(),
            Self::Sublayer => "wfpmon sublayer".to_owned(),
            Self::Callout(i) => CALLOUTS[i].name.to_owned(),
            Self::Filter(i) => format!("{} filter", CALLOUTS[i].name),
        }
    }

    /// `displayData.description`.
    pub fn description(self) -> String {
        match self {
            Self::Provider => {
                "wfpmon callout driver: tracks flows and counts their traffic".to_owned()
            }
            Self::Sublayer => "Holds the filters that call wfpmon's callouts".to_owned(),
            Self::Callout(i) => CALLOUTS[i].description.to_owned(),
            Self::Filter(i) => format!("Calls the {} callout for all traffic", CALLOUTS[i].name),
        }
    }

    /// The management layer of a callout or filter (`applicableLayer`, `layerKey`).
    pub const fn layer(self) -> Option<Guid> {
        match self {
            Self::Callout(i) | Self::Filter(i) => Some(CALLOUTS[i].management_layer),
            Self::Provider | Self::Sublayer => None,
        }
    }

    /// The flags to add the object with.
    pub const fn flags(self, persistent: bool) -> u32 {
        if !persistent {
            return 0;
        }
        match self {
            Self::Provider => FWPM_PROVIDER_FLAG_PERSISTENT,
            Self::Sublayer => FWPM_SUBLAYER_FLAG_PERSISTENT,
            Self::Callout(_) => FWPM_CALLOUT_FLAG_PERSISTENT,
            Self::Filter(_) => FWPM_FILTER_FLAG_PERSISTENT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn order_provider_sublayer_callouts_filters() {
        let all = Object::add_order();
        assert_eq!(all.len(), 2 + 2 * CALLOUT_COUNT);
        assert_eq!(&all[..2], &[Object::Provider, Object::Sublayer]);
        for (i, o) in all.iter().enumerate() {
            if let Object::Filter(c) = o {
                let callout = all.iter().position(|x| *x == Object::Callout(*c)).unwrap();
                assert!(callout < i, "a filter's callout is added before it");
                assert_eq!(o.layer(), Object::Callout(*c).layer());
            }
        }
    }

    #[test]
    fn keys_are_unique_and_from_the_catalog() {
        let keys: HashSet<_> = Object::add_order().iter().map(|o| o.key()).collect();
        assert_eq!(keys.len(), 2 + 2 * CALLOUT_COUNT);
        assert_eq!(Object::Callout(3).key(), CALLOUTS[3].key);
        assert_eq!(
            Object::Filter(0).key().to_string(),
            "8ea6a57d-020d-460c-8725-b13a3760a548"
        );
        assert_eq!(
            Object::Filter(5).name(),
            format!("{} filter", CALLOUTS[5].name)
        );
    }

    #[test]
    fn flags_by_lifetime() {
        for o in Object::add_order() {
            assert_eq!(o.flags(false), 0);
        }
        assert_eq!(Object::Provider.flags(true), 1);
        assert_eq!(Object::Sublayer.flags(true), 1);
        assert_eq!(Object::Callout(0).flags(true), 0x0001_0000);
        assert_eq!(Object::Filter(0).flags(true), 1);
    }
}
