//! The install plan: every filter-engine object `wfpmonctl install` adds,
//! built from the callout catalog — pure data, no Windows types.
//!
//! The plan fixes for each object its key, layer, flags, weight, action and
//! display data, and the order: provider → sublayer → callouts → filters on
//! install, the exact reverse on uninstall (an object can only be deleted
//! once nothing references it). The `windows` module turns each [`Object`]
//! into its `FWPM_*0` structure; tests check the plan itself on any host.
//!
//! # Decisions recorded here
//!
//! * **Filter keys are fixed** ([`FILTER_KEYS`], one per catalog callout,
//!   same index). Uninstall deletes exactly these keys, nothing is stored on
//!   disk, and nothing is enumerated. The alternative — enumerating filters by
//!   provider key with `FwpmFilterCreateEnumHandle0` — would also delete
//!   filters that someone else attached to wfpmon's provider, and costs an
//!   enumeration API for no gain. Fixed keys make install/uninstall exact and
//!   make `status` able to ask for each filter by key. Their weakness: a
//!   filter added by hand that references a wfpmon callout keeps that callout
//!   alive; uninstall then fails with `FWP_E_IN_USE`, aborts, and says so.
//!   The keys are defined in `wfpmon_core::catalog`, next to the callout keys.
//! * **Fail open.** Every filter uses `FWP_ACTION_CALLOUT_INSPECTION`. The WDK
//!   documents (`FwpsCalloutRegister0`, `FwpsCalloutUnregisterByKey0`) that a
//!   filter of that action type is *ignored* while its callout is not
//!   registered, so a stopped or crashed driver never blocks traffic.
//!   `FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED` is *not* set: the
//!   `FWPM_FILTER0` reference says it "can be set only if the action type is
//!   `FWP_ACTION_CALLOUT_TERMINATING` or `FWP_ACTION_CALLOUT_UNKNOWN`", and
//!   for an inspection filter it would add nothing. [`FilterSpec::fails_open`]
//!   states the property for any action type, and the tests hold every
//!   filter to it.
//! * **Lifetimes** ([`Lifetime`]). Only filters can be boot-time
//!   (`FWPM_FILTER_FLAG_BOOTTIME`; no other object type has such a flag), and a
//!   filter cannot be both persistent and boot-time. A boot-time filter may
//!   only reference persistent callouts ("persistent across reboots. As a
//!   result, it can be referenced by boot-time and other persistent
//!   filters"), and a persistent object cannot reference a static one, so
//!   `--boot-time` makes the provider, sublayer and callouts persistent and the
//!   filters boot-time. `--persistent` together with `--boot-time` is
//!   rejected ([`PlanError::PersistentWithBootTime`]). Boot-time filters are
//!   enforced from TCP/IP start until BFE has initialised, then removed.
//! * **No provider service name.** At start, BFE only adds a provider's
//!   persistent objects if the provider names no service or names an
//!   auto-start service; the wfpmon service is demand-start, so naming it
//!   would leave persistent filters disabled after every reboot.
//! * **Weights.** Each filter gets the explicit 64-bit weight
//!   [`FILTER_WEIGHT`]; the sublayer gets [`SUBLAYER_WEIGHT`]. Each layer holds
//!   one wfpmon filter, so the filter weight only has to be defined, not
//!   ordered; the sublayer weight is low because an inspection callout does
//!   not need to run before other sublayers' decisions.

use std::collections::HashSet;
use std::fmt;

use wfpmon_core::catalog::{self, CALLOUT_COUNT, CALLOUTS, CalloutSpec, Guid};

/// `FWPM_*_FLAG_*` values the plan uses (fwpmtypes.h), as plain numbers.
pub mod flags {
    /// `FWPM_PROVIDER_FLAG_PERSISTENT`.
    pub const PROVIDER_PERSISTENT: u32 = 0x0000_0001;
    /// `FWPM_SUBLAYER_FLAG_PERSISTENT`.
    pub const SUBLAYER_PERSISTENT: u32 = 0x0000_0001;
    /// `FWPM_CALLOUT_FLAG_PERSISTENT`.
    pub const CALLOUT_PERSISTENT: u32 = 0x0001_0000;
    /// `FWPM_CALLOUT_FLAG_USES_PROVIDER_CONTEXT`.
    pub const CALLOUT_USES_PROVIDER_CONTEXT: u32 = 0x0002_0000;
    /// `FWPM_CALLOUT_FLAG_REGISTERED`: reported by BFE while the driver has the
    /// callout registered; never set when adding.
    pub const CALLOUT_REGISTERED: u32 = 0x0004_0000;
    /// `FWPM_FILTER_FLAG_PERSISTENT`.
    pub const FILTER_PERSISTENT: u32 = 0x0000_0001;
    /// `FWPM_FILTER_FLAG_BOOTTIME`.
    pub const FILTER_BOOTTIME: u32 = 0x0000_0002;
    /// `FWPM_FILTER_FLAG_HAS_PROVIDER_CONTEXT`.
    pub const FILTER_HAS_PROVIDER_CONTEXT: u32 = 0x0000_0004;
    /// `FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`.
    pub const FILTER_CLEAR_ACTION_RIGHT: u32 = 0x0000_0008;
    /// `FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED`.
    pub const FILTER_PERMIT_IF_CALLOUT_UNREGISTERED: u32 = 0x0000_0010;
    /// `FWPM_FILTER_FLAG_DISABLED`: reported by BFE only; never set when adding.
    pub const FILTER_DISABLED: u32 = 0x0000_0020;
}

pub use wfpmon_core::catalog::FILTER_KEYS;

/// Weight of wfpmon's sublayer (`FWPM_SUBLAYER0.weight`).
pub const SUBLAYER_WEIGHT: u16 = 0x0100;

/// Weight of every wfpmon filter (`FWP_UINT64`): the base of weight range 8
/// of 16 (`8 << FWPM_AUTO_WEIGHT_BITS`), the middle of the range BFE's
/// automatic weights use.
pub const FILTER_WEIGHT: u64 = 8 << 60;

/// Display name of the provider.
pub const PROVIDER_NAME: &str = "wfpmon";
/// Description of the provider.
pub const PROVIDER_DESCRIPTION: &str =
    "wfpmon callout driver: tracks flows and counts their traffic";
/// Display name of the sublayer.
pub const SUBLAYER_NAME: &str = "wfpmon sublayer";
/// Description of the sublayer.
pub const SUBLAYER_DESCRIPTION: &str = "Holds the filters that call wfpmon's callouts";

/// A filter action type (`FWP_ACTION_TYPE`, fwptypes.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionType {
    /// `FWP_ACTION_CALLOUT_INSPECTION`: the callout only inspects.
    CalloutInspection,
    /// `FWP_ACTION_CALLOUT_TERMINATING`: the callout always permits or blocks.
    CalloutTerminating,
    /// `FWP_ACTION_CALLOUT_UNKNOWN`: the callout may permit, block or continue.
    CalloutUnknown,
}

impl ActionType {
    /// The `FWP_ACTION_TYPE` value.
    #[must_use]
    pub const fn raw(self) -> u32 {
        match self {
            Self::CalloutInspection => 0x0000_6004,
            Self::CalloutTerminating => 0x0000_5003,
            Self::CalloutUnknown => 0x0000_4005,
        }
    }

    /// The constant's name, for display.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::CalloutInspection => "FWP_ACTION_CALLOUT_INSPECTION",
            Self::CalloutTerminating => "FWP_ACTION_CALLOUT_TERMINATING",
            Self::CalloutUnknown => "FWP_ACTION_CALLOUT_UNKNOWN",
        }
    }
}

/// How long the installed objects live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Lifetime {
    /// Until deleted or BFE stops (the default: nothing survives a reboot).
    #[default]
    Static,
    /// Until deleted, across BFE restarts and reboots.
    Persistent,
    /// Filters enforced at boot, before BFE starts; the objects they
    /// reference are persistent.
    BootTime,
}

/// The install options that shape the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// `--persistent`.
    pub persistent: bool,
    /// `--boot-time`.
    pub boot_time: bool,
}

impl InstallOptions {
    /// The lifetime these options ask for.
    ///
    /// # Errors
    /// [`PlanError::PersistentWithBootTime`] when both are set.
    pub const fn lifetime(self) -> Result<Lifetime, PlanError> {
        match (self.persistent, self.boot_time) {
            (false, false) => Ok(Lifetime::Static),
            (true, false) => Ok(Lifetime::Persistent),
            (false, true) => Ok(Lifetime::BootTime),
            (true, true) => Err(PlanError::PersistentWithBootTime),
        }
    }
}

/// Why a plan could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// `--persistent` and `--boot-time` together.
    PersistentWithBootTime,
    /// The plan broke one of its own invariants (a bug; never expected).
    Inconsistent(String),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PersistentWithBootTime => f.write_str(
                "--persistent and --boot-time cannot be combined: a filter is either persistent \
                 (FWPM_FILTER_FLAG_PERSISTENT) or boot-time (FWPM_FILTER_FLAG_BOOTTIME), never both; \
                 --boot-time already makes the provider, sublayer and callouts persistent",
            ),
            Self::Inconsistent(why) => write!(f, "internal error: inconsistent install plan: {why}"),
        }
    }
}

impl std::error::Error for PlanError {}

/// `FWPM_PROVIDER0` to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSpec {
    /// `providerKey`.
    pub key: Guid,
    /// `displayData.name`.
    pub name: String,
    /// `displayData.description`.
    pub description: String,
    /// `flags`.
    pub flags: u32,
}

/// `FWPM_SUBLAYER0` to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SublayerSpec {
    /// `subLayerKey`.
    pub key: Guid,
    /// `providerKey`.
    pub provider_key: Guid,
    /// `displayData.name`.
    pub name: String,
    /// `displayData.description`.
    pub description: String,
    /// `flags`.
    pub flags: u32,
    /// `weight`.
    pub weight: u16,
}

/// `FWPM_CALLOUT0` to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalloutObject {
    /// `calloutKey`: the catalog's key.
    pub key: Guid,
    /// `providerKey`.
    pub provider_key: Guid,
    /// `applicableLayer`: the catalog's management layer.
    pub layer: Guid,
    /// `displayData.name`: the catalog's name.
    pub name: String,
    /// `displayData.description`: the catalog's description.
    pub description: String,
    /// `flags`.
    pub flags: u32,
    /// Index of the callout in [`catalog::CALLOUTS`].
    pub catalog_index: usize,
}

/// `FWPM_FILTER0` to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSpec {
    /// `filterKey`: from [`FILTER_KEYS`].
    pub key: Guid,
    /// `providerKey`.
    pub provider_key: Guid,
    /// `layerKey`: the callout's management layer.
    pub layer: Guid,
    /// `subLayerKey`: wfpmon's sublayer.
    pub sublayer: Guid,
    /// `displayData.name`.
    pub name: String,
    /// `displayData.description`.
    pub description: String,
    /// `flags`.
    pub flags: u32,
    /// `weight` (`FWP_UINT64`).
    pub weight: u64,
    /// `action.type`.
    pub action: ActionType,
    /// `action.calloutKey`.
    pub callout_key: Guid,
    /// Index of the callout in [`catalog::CALLOUTS`].
    pub catalog_index: usize,
}

impl FilterSpec {
    /// Whether traffic flows unhindered while the filter's callout is not
    /// registered (driver stopped): inspection filters are then ignored, and
    /// terminating/unknown ones only permit with
    /// `FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED`.
    #[must_use]
    pub const fn fails_open(&self) -> bool {
        match self.action {
            ActionType::CalloutInspection => true,
            ActionType::CalloutTerminating | ActionType::CalloutUnknown => {
                self.flags & flags::FILTER_PERMIT_IF_CALLOUT_UNREGISTERED != 0
            }
        }
    }

    /// The documented constraints on `FWPM_FILTER0.flags` this filter breaks.
    #[must_use]
    pub fn flag_violations(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.flags & flags::FILTER_PERSISTENT != 0 && self.flags & flags::FILTER_BOOTTIME != 0 {
            out.push(
                "FWPM_FILTER_FLAG_PERSISTENT cannot be set together with FWPM_FILTER_FLAG_BOOTTIME",
            );
        }
        if self.flags & flags::FILTER_PERMIT_IF_CALLOUT_UNREGISTERED != 0
            && matches!(self.action, ActionType::CalloutInspection)
        {
            out.push(
                "FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED requires FWP_ACTION_CALLOUT_TERMINATING \
                 or FWP_ACTION_CALLOUT_UNKNOWN",
            );
        }
        if self.flags & flags::FILTER_DISABLED != 0 {
            out.push("FWPM_FILTER_FLAG_DISABLED cannot be set when adding a filter");
        }
        out
    }
}

/// Kind of a filter-engine object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `FWPM_PROVIDER0`.
    Provider,
    /// `FWPM_SUBLAYER0`.
    Sublayer,
    /// `FWPM_CALLOUT0`.
    Callout,
    /// `FWPM_FILTER0`.
    Filter,
}

impl ObjectKind {
    /// Lower-case noun, for messages.
    #[must_use]
    pub const fn noun(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Sublayer => "sublayer",
            Self::Callout => "callout",
            Self::Filter => "filter",
        }
    }
}

/// One object of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// The provider.
    Provider(ProviderSpec),
    /// The sublayer.
    Sublayer(SublayerSpec),
    /// A callout.
    Callout(CalloutObject),
    /// A filter.
    Filter(FilterSpec),
}

impl Object {
    /// The object's kind.
    #[must_use]
    pub const fn kind(&self) -> ObjectKind {
        match self {
            Self::Provider(_) => ObjectKind::Provider,
            Self::Sublayer(_) => ObjectKind::Sublayer,
            Self::Callout(_) => ObjectKind::Callout,
            Self::Filter(_) => ObjectKind::Filter,
        }
    }

    /// The object's key.
    #[must_use]
    pub const fn key(&self) -> Guid {
        match self {
            Self::Provider(p) => p.key,
            Self::Sublayer(s) => s.key,
            Self::Callout(c) => c.key,
            Self::Filter(f) => f.key,
        }
    }

    /// The object's display name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Provider(p) => &p.name,
            Self::Sublayer(s) => &s.name,
            Self::Callout(c) => &c.name,
            Self::Filter(f) => &f.name,
        }
    }

    /// The object's flags.
    #[must_use]
    pub const fn flags(&self) -> u32 {
        match self {
            Self::Provider(p) => p.flags,
            Self::Sublayer(s) => s.flags,
            Self::Callout(c) => c.flags,
            Self::Filter(f) => f.flags,
        }
    }
}

/// What install adds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    lifetime: Lifetime,
    objects: Vec<Object>,
}

impl Plan {
    /// Builds the install plan for `options`.
    ///
    /// # Errors
    /// [`PlanError::PersistentWithBootTime`] for an invalid combination.
    pub fn install(options: InstallOptions) -> Result<Self, PlanError> {
        let plan = Self::for_lifetime(options.lifetime()?);
        plan.check()?;
        Ok(plan)
    }

    /// The plan whose objects uninstall deletes. Keys do not depend on the
    /// install options, so this is the default plan.
    #[must_use]
    pub fn uninstall() -> Self {
        Self::for_lifetime(Lifetime::Static)
    }

    fn for_lifetime(lifetime: Lifetime) -> Self {
        let (provider_flags, sublayer_flags, callout_flags, filter_flags) = match lifetime {
            Lifetime::Static => (0, 0, 0, 0),
            Lifetime::Persistent => (
                flags::PROVIDER_PERSISTENT,
                flags::SUBLAYER_PERSISTENT,
                flags::CALLOUT_PERSISTENT,
                flags::FILTER_PERSISTENT,
            ),
            Lifetime::BootTime => (
                flags::PROVIDER_PERSISTENT,
                flags::SUBLAYER_PERSISTENT,
                flags::CALLOUT_PERSISTENT,
                flags::FILTER_BOOTTIME,
            ),
        };
        let mut objects = Vec::with_capacity(2 + 2 * CALLOUT_COUNT);
        objects.push(Object::Provider(ProviderSpec {
            key: catalog::PROVIDER_KEY,
            name: PROVIDER_NAME.to_owned(),
            description: PROVIDER_DESCRIPTION.to_owned(),
            flags: provider_flags,
        }));
        objects.push(Object::Sublayer(SublayerSpec {
            key: catalog::SUBLAYER_KEY,
            provider_key: catalog::PROVIDER_KEY,
            name: SUBLAYER_NAME.to_owned(),
            description: SUBLAYER_DESCRIPTION.to_owned(),
            flags: sublayer_flags,
            weight: SUBLAYER_WEIGHT,
        }));
        for (index, spec) in CALLOUTS.iter().enumerate() {
            objects.push(Object::Callout(CalloutObject {
                key: spec.key,
                provider_key: catalog::PROVIDER_KEY,
                layer: spec.management_layer,
                name: spec.name.to_owned(),
                description: spec.description.to_owned(),
                flags: callout_flags,
                catalog_index: index,
            }));
        }
        for (index, (spec, key)) in CALLOUTS.iter().zip(FILTER_KEYS).enumerate() {
            objects.push(Object::Filter(filter_for(index, spec, key, filter_flags)));
        }
        Self { lifetime, objects }
    }

    /// Verifies the invariants every plan must hold.
    fn check(&self) -> Result<(), PlanError> {
        let mut seen = HashSet::new();
        for object in &self.objects {
            if !seen.insert((object.kind(), object.key())) {
                return Err(PlanError::Inconsistent(format!(
                    "two {}s with key {}",
                    object.kind().noun(),
                    object.key()
                )));
            }
            if let Object::Filter(f) = object {
                if let Some(v) = f.flag_violations().first() {
                    return Err(PlanError::Inconsistent(format!("{}: {v}", f.name)));
                }
                if !f.fails_open() {
                    return Err(PlanError::Inconsistent(format!(
                        "{} would block traffic while the driver is stopped",
                        f.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The lifetime of the installed objects.
    #[must_use]
    pub const fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    /// Objects in the order install adds them.
    #[must_use]
    pub fn add_order(&self) -> &[Object] {
        &self.objects
    }

    /// Objects in the order uninstall deletes them (the reverse of
    /// [`Plan::add_order`]).
    pub fn delete_order(&self) -> impl Iterator<Item = &Object> {
        self.objects.iter().rev()
    }

    /// The callouts, in catalog order.
    pub fn callouts(&self) -> impl Iterator<Item = &CalloutObject> {
        self.objects.iter().filter_map(|o| match o {
            Object::Callout(c) => Some(c),
            _ => None,
        })
    }

    /// The filters, in catalog order.
    pub fn filters(&self) -> impl Iterator<Item = &FilterSpec> {
        self.objects.iter().filter_map(|o| match o {
            Object::Filter(f) => Some(f),
            _ => None,
        })
    }
}

fn filter_for(index: usize, spec: &CalloutSpec, key: Guid, flags: u32) -> FilterSpec {
    FilterSpec {
        key,
        provider_key: catalog::PROVIDER_KEY,
        layer: spec.management_layer,
        sublayer: catalog::SUBLAYER_KEY,
        name: format!("{} filter", spec.name),
        description: format!(
            "Calls the {} callout for all traffic at {}",
            spec.name,
            layer_name(&spec.management_layer)
        ),
        flags,
        weight: FILTER_WEIGHT,
        action: ActionType::CalloutInspection,
        callout_key: spec.key,
        catalog_index: index,
    }
}

/// The `FWPM_LAYER_*` name of a management layer key wfpmon uses.
#[must_use]
pub const fn layer_name(layer: &Guid) -> &'static str {
    use catalog::management_layer as l;
    match *layer {
        l::STREAM_V4 => "FWPM_LAYER_STREAM_V4",
        l::STREAM_V6 => "FWPM_LAYER_STREAM_V6",
        l::DATAGRAM_DATA_V4 => "FWPM_LAYER_DATAGRAM_DATA_V4",
        l::DATAGRAM_DATA_V6 => "FWPM_LAYER_DATAGRAM_DATA_V6",
        l::ALE_FLOW_ESTABLISHED_V4 => "FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4",
        l::ALE_FLOW_ESTABLISHED_V6 => "FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6",
        _ => "unknown layer",
    }
}

/// Names of the flags set in `value` for an object of `kind`.
#[must_use]
pub fn flag_names(kind: ObjectKind, value: u32) -> Vec<&'static str> {
    let table: &[(u32, &'static str)] = match kind {
        ObjectKind::Provider => &[
            (flags::PROVIDER_PERSISTENT, "PERSISTENT"),
            (0x10, "DISABLED"),
        ],
        ObjectKind::Sublayer => &[(flags::SUBLAYER_PERSISTENT, "PERSISTENT")],
        ObjectKind::Callout => &[
            (flags::CALLOUT_PERSISTENT, "PERSISTENT"),
            (
                flags::CALLOUT_USES_PROVIDER_CONTEXT,
                "USES_PROVIDER_CONTEXT",
            ),
            (flags::CALLOUT_REGISTERED, "REGISTERED"),
        ],
        ObjectKind::Filter => &[
            (flags::FILTER_PERSISTENT, "PERSISTENT"),
            (flags::FILTER_BOOTTIME, "BOOTTIME"),
            (flags::FILTER_HAS_PROVIDER_CONTEXT, "HAS_PROVIDER_CONTEXT"),
            (flags::FILTER_CLEAR_ACTION_RIGHT, "CLEAR_ACTION_RIGHT"),
            (
                flags::FILTER_PERMIT_IF_CALLOUT_UNREGISTERED,
                "PERMIT_IF_CALLOUT_UNREGISTERED",
            ),
            (flags::FILTER_DISABLED, "DISABLED"),
        ],
    };
    table
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|&(_, name)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_plans() -> Vec<Plan> {
        [
            InstallOptions::default(),
            InstallOptions {
                persistent: true,
                boot_time: false,
            },
            InstallOptions {
                persistent: false,
                boot_time: true,
            },
        ]
        .into_iter()
        .map(|o| Plan::install(o).expect("valid options"))
        .collect()
    }

    #[test]
    fn every_callout_has_exactly_one_filter_at_its_layer() {
        for plan in all_plans() {
            for spec in &CALLOUTS {
                let filters: Vec<_> = plan
                    .filters()
                    .filter(|f| f.callout_key == spec.key)
                    .collect();
                assert_eq!(filters.len(), 1, "{}", spec.name);
                let f = filters[0];
                assert_eq!(f.layer, spec.management_layer, "{}", spec.name);
                assert_eq!(f.sublayer, catalog::SUBLAYER_KEY);
                assert_eq!(f.provider_key, catalog::PROVIDER_KEY);
                assert_eq!(f.action, ActionType::CalloutInspection);
                assert_eq!(f.weight, FILTER_WEIGHT);
                assert_eq!(CALLOUTS[f.catalog_index].key, spec.key);
            }
            assert_eq!(plan.filters().count(), CALLOUT_COUNT);
        }
    }

    #[test]
    fn callouts_come_from_the_catalog() {
        for plan in all_plans() {
            let callouts: Vec<_> = plan.callouts().collect();
            assert_eq!(callouts.len(), CALLOUT_COUNT);
            for (c, spec) in callouts.iter().zip(CALLOUTS.iter()) {
                assert_eq!(c.key, spec.key);
                assert_eq!(c.layer, spec.management_layer);
                assert_eq!(c.name, spec.name);
                assert_eq!(c.description, spec.description);
                assert_eq!(c.provider_key, catalog::PROVIDER_KEY);
                assert_eq!(
                    c.flags & flags::CALLOUT_REGISTERED,
                    0,
                    "REGISTERED is never added"
                );
                assert_eq!(c.flags & flags::CALLOUT_USES_PROVIDER_CONTEXT, 0);
            }
        }
    }

    #[test]
    fn provider_and_sublayer() {
        for plan in all_plans() {
            let Object::Provider(p) = &plan.add_order()[0] else {
                panic!("provider first")
            };
            assert_eq!(p.key, catalog::PROVIDER_KEY);
            assert!(!p.name.is_empty());
            let Object::Sublayer(s) = &plan.add_order()[1] else {
                panic!("sublayer second")
            };
            assert_eq!(s.key, catalog::SUBLAYER_KEY);
            assert_eq!(s.provider_key, catalog::PROVIDER_KEY);
            assert_eq!(s.weight, SUBLAYER_WEIGHT);
        }
    }

    #[test]
    fn add_order_is_provider_sublayer_callouts_filters() {
        let plan = Plan::install(InstallOptions::default()).unwrap();
        let kinds: Vec<_> = plan.add_order().iter().map(Object::kind).collect();
        let mut expected = vec![ObjectKind::Provider, ObjectKind::Sublayer];
        expected.extend([ObjectKind::Callout; CALLOUT_COUNT]);
        expected.extend([ObjectKind::Filter; CALLOUT_COUNT]);
        assert_eq!(kinds, expected);
        // A callout is added before the filter that references it.
        for (i, o) in plan.add_order().iter().enumerate() {
            if let Object::Filter(f) = o {
                let at = plan
                    .add_order()
                    .iter()
                    .position(|c| c.kind() == ObjectKind::Callout && c.key() == f.callout_key);
                assert!(at.expect("callout in plan") < i);
            }
        }
    }

    #[test]
    fn delete_order_is_the_reverse_of_add_order() {
        for plan in all_plans() {
            let mut added: Vec<_> = plan.add_order().to_vec();
            added.reverse();
            let deleted: Vec<_> = plan.delete_order().cloned().collect();
            assert_eq!(deleted, added);
            assert_eq!(deleted.first().map(Object::kind), Some(ObjectKind::Filter));
            assert_eq!(deleted.last().map(Object::kind), Some(ObjectKind::Provider));
        }
        // Uninstall deletes the same keys whatever the install options were.
        let keys = |p: &Plan| {
            p.delete_order()
                .map(|o| (o.kind(), o.key()))
                .collect::<Vec<_>>()
        };
        for plan in all_plans() {
            assert_eq!(keys(&plan), keys(&Plan::uninstall()));
        }
    }

    #[test]
    fn filter_keys_unique_stable_and_distinct_from_every_catalog_guid() {
        let mut all = HashSet::new();
        for k in FILTER_KEYS {
            assert!(all.insert(k), "duplicate filter key {k}");
        }
        let catalog_guids = CALLOUTS
            .iter()
            .flat_map(|c| [c.key, c.management_layer])
            .chain([catalog::PROVIDER_KEY, catalog::SUBLAYER_KEY]);
        for g in catalog_guids {
            assert!(!all.contains(&g), "filter key reuses catalog GUID {g}");
        }
        // Stability: the keys are literal constants, and every plan uses them
        // in catalog order.
        for plan in all_plans() {
            let keys: Vec<_> = plan.filters().map(|f| f.key).collect();
            assert_eq!(keys, FILTER_KEYS);
        }
        assert_eq!(
            FILTER_KEYS[0].to_string(),
            "8ea6a57d-020d-460c-8725-b13a3760a548"
        );
        // Version-4, RFC 4122 variant GUIDs.
        for k in FILTER_KEYS {
            assert_eq!(k.data3 >> 12, 4, "{k}");
            assert_eq!(k.data4[0] & 0xC0, 0x80, "{k}");
        }
    }

    #[test]
    fn every_filter_fails_open_and_has_valid_flags() {
        for plan in all_plans() {
            for f in plan.filters() {
                assert!(f.fails_open(), "{}", f.name);
                assert!(
                    f.flag_violations().is_empty(),
                    "{}: {:?}",
                    f.name,
                    f.flag_violations()
                );
            }
        }
    }

    #[test]
    fn fails_open_rules() {
        let mut f = Plan::uninstall().filters().next().unwrap().clone();
        f.action = ActionType::CalloutTerminating;
        assert!(!f.fails_open(), "terminating without PERMIT blocks");
        f.flags |= flags::FILTER_PERMIT_IF_CALLOUT_UNREGISTERED;
        assert!(f.fails_open());
        assert!(f.flag_violations().is_empty());
        f.action = ActionType::CalloutInspection;
        assert_eq!(
            f.flag_violations().len(),
            1,
            "PERMIT with inspection is documented invalid"
        );
        f.flags = flags::FILTER_PERSISTENT | flags::FILTER_BOOTTIME;
        assert_eq!(f.flag_violations().len(), 1);
    }

    #[test]
    fn lifetime_flags_by_option() {
        let default = Plan::install(InstallOptions::default()).unwrap();
        assert_eq!(default.lifetime(), Lifetime::Static);
        assert!(default.add_order().iter().all(|o| o.flags() == 0));

        let persistent = Plan::install(InstallOptions {
            persistent: true,
            boot_time: false,
        })
        .unwrap();
        assert_eq!(persistent.lifetime(), Lifetime::Persistent);
        for o in persistent.add_order() {
            let expected = match o.kind() {
                ObjectKind::Provider => flags::PROVIDER_PERSISTENT,
                ObjectKind::Sublayer => flags::SUBLAYER_PERSISTENT,
                ObjectKind::Callout => flags::CALLOUT_PERSISTENT,
                ObjectKind::Filter => flags::FILTER_PERSISTENT,
            };
            assert_eq!(o.flags(), expected, "{}", o.name());
        }

        let boot = Plan::install(InstallOptions {
            persistent: false,
            boot_time: true,
        })
        .unwrap();
        assert_eq!(boot.lifetime(), Lifetime::BootTime);
        for o in boot.add_order() {
            let expected = match o.kind() {
                ObjectKind::Provider => flags::PROVIDER_PERSISTENT,
                ObjectKind::Sublayer => flags::SUBLAYER_PERSISTENT,
                // Boot-time filters may only reference persistent callouts.
                ObjectKind::Callout => flags::CALLOUT_PERSISTENT,
                ObjectKind::Filter => flags::FILTER_BOOTTIME,
            };
            assert_eq!(o.flags(), expected, "{}", o.name());
        }
    }

    #[test]
    fn persistent_with_boot_time_is_rejected() {
        let err = Plan::install(InstallOptions {
            persistent: true,
            boot_time: true,
        })
        .unwrap_err();
        assert_eq!(err, PlanError::PersistentWithBootTime);
        let msg = err.to_string();
        assert!(
            msg.contains("--persistent") && msg.contains("--boot-time"),
            "{msg}"
        );
        assert!(msg.contains("FWPM_FILTER_FLAG_BOOTTIME"), "{msg}");
    }

    #[test]
    fn names_and_descriptions() {
        let plan = Plan::uninstall();
        for f in plan.filters() {
            let spec = &CALLOUTS[f.catalog_index];
            assert_eq!(f.name, format!("{} filter", spec.name));
            assert!(f.description.contains(layer_name(&spec.management_layer)));
            assert_ne!(layer_name(&f.layer), "unknown layer");
        }
        assert_eq!(layer_name(&catalog::PROVIDER_KEY), "unknown layer");
    }

    #[test]
    fn flag_name_rendering() {
        assert_eq!(flag_names(ObjectKind::Filter, 0), Vec::<&str>::new());
        assert_eq!(
            flag_names(
                ObjectKind::Filter,
                flags::FILTER_BOOTTIME | flags::FILTER_PERMIT_IF_CALLOUT_UNREGISTERED
            ),
            ["BOOTTIME", "PERMIT_IF_CALLOUT_UNREGISTERED"]
        );
        assert_eq!(
            flag_names(
                ObjectKind::Callout,
                flags::CALLOUT_PERSISTENT | flags::CALLOUT_REGISTERED
            ),
            ["PERSISTENT", "REGISTERED"]
        );
    }

    #[test]
    fn action_type_values() {
        // fwptypes.h: FWP_ACTION_FLAG_CALLOUT 0x4000, _TERMINATING 0x1000,
        // _NON_TERMINATING 0x2000.
        assert_eq!(ActionType::CalloutTerminating.raw(), 0x4000 | 0x1000 | 3);
        assert_eq!(ActionType::CalloutInspection.raw(), 0x4000 | 0x2000 | 4);
        assert_eq!(ActionType::CalloutUnknown.raw(), 0x4000 | 5);
    }
}
