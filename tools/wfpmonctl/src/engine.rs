//! Install, uninstall and status of wfpmon's filter-engine objects.
//!
//! They are written against the [`FilterEngine`] trait: the `windows` module implements it with the `Fwpm*` API, the tests
//! with an in-memory engine that enforces the same rules BFE does.

use wfpmon_core::catalog::{self, Guid};

use crate::exit::{Error, Kind, Step, SystemCode};
use crate::plan::{self, Object, ObjectKind, Plan};

/// The filter-engine operations the tool needs (one session).
pub trait FilterEngine {
    /// `FwpmTransactionBegin0` (read/write).
    ///
    /// # Errors
    /// The engine's status code.
    fn begin(&mut self) -> Result<(), SystemCode>;
    /// `FwpmTransactionCommit0`.
    ///
    /// # Errors
    /// The engine's status code.
    fn commit(&mut self) -> Result<(), SystemCode>;
    /// `FwpmTransactionAbort0`.
    ///
    /// # Errors
    /// The engine's status code.
    fn abort(&mut self) -> Result<(), SystemCode>;
    /// `Fwpm{Provider,SubLayer,Callout,Filter}Add0` for `object`.
    ///
    /// # Errors
    /// The engine's status code.
    fn add(&mut self, object: &Object) -> Result<(), SystemCode>;
    /// `Fwpm*DeleteByKey0`.
    ///
    /// # Errors
    /// The engine's status code (including the `FWP_E_*_NOT_FOUND` codes).
    fn delete(&mut self, kind: ObjectKind, key: &Guid) -> Result<(), SystemCode>;
    /// `Fwpm*GetByKey0`: the object's flags, or `None` when it does not exist.
    ///
    /// # Errors
    /// The engine's status code for anything but "not found".
    fn get_flags(&mut self, kind: ObjectKind, key: &Guid) -> Result<Option<u32>, SystemCode>;
}

/// What `install` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallReport {
    /// Objects added, in order: `(kind, name, key)`.
    pub added: Vec<ObjectRecord>,
}

/// What `uninstall` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UninstallReport {
    /// Objects deleted, in order.
    pub deleted: Vec<ObjectRecord>,
    /// Objects that were not present (already gone).
    pub absent: Vec<ObjectRecord>,
}

/// One object named in a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRecord {
    /// "provider", "sublayer", "callout" or "filter".
    pub kind: &'static str,
    /// Display name.
    pub name: String,
    /// Key, in registry format without braces.
    pub key: String,
    /// Names of the flags it was added with.
    pub flags: Vec<&'static str>,
}

impl ObjectRecord {
    fn of(object: &Object) -> Self {
        Self {
            kind: object.kind().noun(),
            name: object.name().to_owned(),
            key: object.key().to_string(),
            flags: plan::flag_names(object.kind(), object.flags()),
        }
    }
}

fn api_name(kind: ObjectKind, verb: &str) -> String {
    let noun = match kind {
        ObjectKind::Provider => "Provider",
        ObjectKind::Sublayer => "SubLayer",
        ObjectKind::Callout => "Callout",
        ObjectKind::Filter => "Filter",
    };
    format!("Fwpm{noun}{verb}0")
}

/// Adds every object of `plan` in one transaction; on any failure aborts,
/// so the engine is left exactly as it was.
///
/// # Errors
/// [`Kind::AlreadyInstalled`] when an object exists (`FWP_E_ALREADY_EXISTS`),
/// otherwise the classified failure of the first call that failed.
pub fn install<E: FilterEngine>(engine: &mut E, plan: &Plan) -> Result<InstallReport, Error> {
    engine
        .begin()
        .map_err(|c| Error::system(Step::Transaction, c, "FwpmTransactionBegin0"))?;
    let mut added = Vec::new();
    for object in plan.add_order() {
        if let Err(code) = engine.add(object) {
            // The abort's own failure is secondary: report the cause.
            let _ = engine.abort();
            let what = format!(
                "{} ({} {})",
                api_name(object.kind(), "Add"),
                object.kind().noun(),
                object.name()
            );
            let mut err = Error::system(Step::Add, code, &what);
            if err.kind == Kind::AlreadyInstalled {
                err.message = format!(
                    "wfpmon's {} \"{}\" ({{{}}}) is already in the filter engine; nothing was changed. \
                     Run `wfpmonctl uninstall` first to reinstall",
                    object.kind().noun(),
                    object.name(),
                    object.key()
                );
            }
            return Err(err);
        }
        added.push(ObjectRecord::of(object));
    }
    engine.commit().map_err(|c| {
        let _ = engine.abort();
        Error::system(Step::Transaction, c, "FwpmTransactionCommit0")
    })?;
    Ok(InstallReport { added })
}

/// Deletes every object of `plan` in delete order, in one transaction.
/// Objects already absent count as deleted, so running it twice is fine.
///
/// # Errors
/// The classified failure of the first call that failed for another reason
/// (e.g. `FWP_E_IN_USE` when a foreign filter still references a callout);
/// the transaction is then aborted and nothing is deleted.
pub fn uninstall<E: FilterEngine>(engine: &mut E, plan: &Plan) -> Result<UninstallReport, Error> {
    engine
        .begin()
        .map_err(|c| Error::system(Step::Transaction, c, "FwpmTransactionBegin0"))?;
    let mut report = UninstallReport {
        deleted: Vec::new(),
        absent: Vec::new(),
    };
    for object in plan.delete_order() {
        match engine.delete(object.kind(), &object.key()) {
            Ok(()) => report.deleted.push(ObjectRecord::of(object)),
            Err(code) if code.is_not_found() => report.absent.push(ObjectRecord::of(object)),
            Err(code) => {
                let _ = engine.abort();
                let what = format!(
                    "{} ({} {})",
                    api_name(object.kind(), "DeleteByKey"),
                    object.kind().noun(),
                    object.name()
                );
                let mut err = Error::system(Step::Delete, code, &what);
                if code.is_hresult(crate::exit::code::FWP_E_IN_USE) {
                    err.message.push_str(
                        "; another filter-engine object (not added by wfpmonctl) still references it; \
                         nothing was deleted",
                    );
                }
                return Err(err);
            }
        }
    }
    engine.commit().map_err(|c| {
        let _ = engine.abort();
        Error::system(Step::Transaction, c, "FwpmTransactionCommit0")
    })?;
    Ok(report)
}

/// State of a Windows service, as reported by `QueryServiceStatusEx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// The service is not installed.
    NotInstalled,
    /// `SERVICE_STOPPED`.
    Stopped,
    /// `SERVICE_START_PENDING`.
    StartPending,
    /// `SERVICE_STOP_PENDING`.
    StopPending,
    /// `SERVICE_RUNNING`.
    Running,
    /// `SERVICE_CONTINUE_PENDING`.
    ContinuePending,
    /// `SERVICE_PAUSE_PENDING`.
    PausePending,
    /// `SERVICE_PAUSED`.
    Paused,
    /// Any other value.
    Unknown(u32),
}

impl ServiceState {
    /// From `SERVICE_STATUS_PROCESS.dwCurrentState`.
    #[must_use]
    pub const fn from_raw(state: u32) -> Self {
        match state {
            1 => Self::Stopped,
            2 => Self::StartPending,
            3 => Self::StopPending,
            4 => Self::Running,
            5 => Self::ContinuePending,
            6 => Self::PausePending,
            7 => Self::Paused,
            other => Self::Unknown(other),
        }
    }

    /// Short lower-case description.
    #[must_use]
    pub fn describe(self) -> String {
        match self {
            Self::NotInstalled => "not installed".to_owned(),
            Self::Stopped => "stopped".to_owned(),
            Self::StartPending => "start pending".to_owned(),
            Self::StopPending => "stop pending".to_owned(),
            Self::Running => "running".to_owned(),
            Self::ContinuePending => "continue pending".to_owned(),
            Self::PausePending => "pause pending".to_owned(),
            Self::Paused => "paused".to_owned(),
            Self::Unknown(v) => format!("unknown state {v}"),
        }
    }
}

/// Whether the control device could be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceState {
    /// It opened: the driver is loaded.
    Present,
    /// It does not exist: the driver is not loaded.
    Absent,
    /// Another failure (e.g. access denied), described.
    Error(String),
}

/// Presence of wfpmon's callouts and filters in the filter engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WfpStatus {
    /// The provider exists.
    pub provider: bool,
    /// The sublayer exists.
    pub sublayer: bool,
    /// One entry per catalog callout.
    pub callouts: Vec<CalloutStatus>,
    /// One entry per planned filter.
    pub filters: Vec<FilterStatus>,
}

/// One callout's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalloutStatus {
    /// Catalog name.
    pub name: &'static str,
    /// Callout key.
    pub key: String,
    /// `FWPM_LAYER_*` name of its layer.
    pub layer: &'static str,
    /// The management object exists (added by `install`).
    pub present: bool,
    /// The driver has it registered (`FWPM_CALLOUT_FLAG_REGISTERED`).
    pub registered: bool,
    /// Flag names reported by BFE.
    pub flags: Vec<&'static str>,
}

/// One filter's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterStatus {
    /// Filter display name.
    pub name: String,
    /// Filter key.
    pub key: String,
    /// `FWPM_LAYER_*` name of its layer.
    pub layer: &'static str,
    /// The filter exists.
    pub present: bool,
    /// Flag names reported by BFE.
    pub flags: Vec<&'static str>,
}

/// Everything `status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The wfpmon driver service.
    pub driver_service: ServiceState,
    /// The BFE service.
    pub bfe_service: ServiceState,
    /// The control device.
    pub device: DeviceState,
    /// Filter-engine objects; `None` when BFE could not be queried.
    pub wfp: Option<WfpStatus>,
    /// Why `wfp` is `None`.
    pub wfp_error: Option<String>,
}

impl WfpStatus {
    /// Whether everything `install` adds is present.
    #[must_use]
    pub fn fully_installed(&self) -> bool {
        self.provider
            && self.sublayer
            && self.callouts.iter().all(|c| c.present)
            && self.filters.iter().all(|f| f.present)
    }

    /// Whether nothing `install` adds is present.
    #[must_use]
    pub fn fully_absent(&self) -> bool {
        !self.provider
            && !self.sublayer
            && self.callouts.iter().all(|c| !c.present)
            && self.filters.iter().all(|f| !f.present)
    }
}

/// Queries the state of every object of `plan`.
///
/// # Errors
/// The classified failure of the first query that failed for another reason
/// than "not found".
pub fn wfp_status<E: FilterEngine>(engine: &mut E, plan: &Plan) -> Result<WfpStatus, Error> {
    let mut get = |kind: ObjectKind, key: &Guid| {
        engine.get_flags(kind, key).map_err(|c| {
            Error::system(
                Step::Query,
                c,
                &format!("{} ({{{key}}})", api_name(kind, "GetByKey")),
            )
        })
    };
    let provider = get(ObjectKind::Provider, &catalog::PROVIDER_KEY)?.is_some();
    let sublayer = get(ObjectKind::Sublayer, &catalog::SUBLAYER_KEY)?.is_some();
    let mut callouts = Vec::new();
    for spec in &catalog::CALLOUTS {
        let flags = get(ObjectKind::Callout, &spec.key)?;
        callouts.push(CalloutStatus {
            name: spec.name,
            key: spec.key.to_string(),
            layer: plan::layer_name(&spec.management_layer),
            present: flags.is_some(),
            registered: flags.is_some_and(|f| f & plan::flags::CALLOUT_REGISTERED != 0),
            flags: plan::flag_names(ObjectKind::Callout, flags.unwrap_or(0)),
        });
    }
    let mut filters = Vec::new();
    for f in plan.filters() {
        let flags = get(ObjectKind::Filter, &f.key)?;
        filters.push(FilterStatus {
            name: f.name.clone(),
            key: f.key.to_string(),
            layer: plan::layer_name(&f.layer),
            present: flags.is_some(),
            flags: plan::flag_names(ObjectKind::Filter, flags.unwrap_or(0)),
        });
    }
    Ok(WfpStatus {
        provider,
        sublayer,
        callouts,
        filters,
    })
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory filter engine with BFE's rules for what this tool does:
    //! transactions, duplicate keys, references (a callout needs its
    //! provider, a filter its callout/sublayer/provider, deletion only of
    //! unreferenced objects) and lifetimes (a persistent object cannot
    //! reference a static one; boot-time filters need persistent callouts).

    use std::collections::BTreeMap;

    use super::*;
    use crate::exit::code;

    #[derive(Clone, Debug, Default)]
    pub struct Store {
        pub objects: BTreeMap<(u8, u128), Object>,
    }

    const fn kind_id(kind: ObjectKind) -> u8 {
        match kind {
            ObjectKind::Provider => 0,
            ObjectKind::Sublayer => 1,
            ObjectKind::Callout => 2,
            ObjectKind::Filter => 3,
        }
    }

    impl Store {
        pub fn get(&self, kind: ObjectKind, key: &Guid) -> Option<&Object> {
            self.objects.get(&(kind_id(kind), key.to_u128()))
        }

        fn persistent(&self, kind: ObjectKind, key: &Guid) -> Option<bool> {
            self.get(kind, key).map(|o| match o {
                Object::Provider(p) => p.flags & plan::flags::PROVIDER_PERSISTENT != 0,
                Object::Sublayer(s) => s.flags & plan::flags::SUBLAYER_PERSISTENT != 0,
                Object::Callout(c) => c.flags & plan::flags::CALLOUT_PERSISTENT != 0,
                Object::Filter(f) => f.flags & plan::flags::FILTER_PERSISTENT != 0,
            })
        }

        /// References of `object`: (kind, key).
        fn references(object: &Object) -> Vec<(ObjectKind, Guid)> {
            match object {
                Object::Provider(_) => vec![],
                Object::Sublayer(s) => vec![(ObjectKind::Provider, s.provider_key)],
                Object::Callout(c) => vec![(ObjectKind::Provider, c.provider_key)],
                Object::Filter(f) => vec![
                    (ObjectKind::Provider, f.provider_key),
                    (ObjectKind::Sublayer, f.sublayer),
                    (ObjectKind::Callout, f.callout_key),
                ],
            }
        }

        pub fn add(&mut self, object: &Object) -> Result<(), SystemCode> {
            if self.get(object.kind(), &object.key()).is_some() {
                return Err(SystemCode::HResult(code::FWP_E_ALREADY_EXISTS));
            }
            if let Object::Filter(f) = object
                && !f.flag_violations().is_empty()
            {
                return Err(SystemCode::HResult(code::FWP_E_INVALID_FLAGS));
            }
            let me_persistent_or_boot = match object {
                Object::Filter(f) => {
                    f.flags & (plan::flags::FILTER_PERSISTENT | plan::flags::FILTER_BOOTTIME) != 0
                }
                other => {
                    other.flags()
                        & (plan::flags::PROVIDER_PERSISTENT | plan::flags::CALLOUT_PERSISTENT)
                        != 0
                }
            };
            for (kind, key) in Self::references(object) {
                let Some(target_persistent) = self.persistent(kind, &key) else {
                    return Err(SystemCode::HResult(match kind {
                        ObjectKind::Provider => code::FWP_E_PROVIDER_NOT_FOUND,
                        ObjectKind::Sublayer => code::FWP_E_SUBLAYER_NOT_FOUND,
                        ObjectKind::Callout => code::FWP_E_CALLOUT_NOT_FOUND,
                        ObjectKind::Filter => code::FWP_E_FILTER_NOT_FOUND,
                    }));
                };
                if me_persistent_or_boot && !target_persistent {
                    return Err(SystemCode::HResult(code::FWP_E_LIFETIME_MISMATCH));
                }
            }
            self.objects.insert(
                (kind_id(object.kind()), object.key().to_u128()),
                object.clone(),
            );
            Ok(())
        }

        pub fn delete(&mut self, kind: ObjectKind, key: &Guid) -> Result<(), SystemCode> {
            if self.get(kind, key).is_none() {
                return Err(SystemCode::HResult(match kind {
                    ObjectKind::Provider => code::FWP_E_PROVIDER_NOT_FOUND,
                    ObjectKind::Sublayer => code::FWP_E_SUBLAYER_NOT_FOUND,
                    ObjectKind::Callout => code::FWP_E_CALLOUT_NOT_FOUND,
                    ObjectKind::Filter => code::FWP_E_FILTER_NOT_FOUND,
                }));
            }
            let referenced = self.objects.values().any(|o| {
                Self::references(o)
                    .iter()
                    .any(|(k, g)| *k == kind && g == key)
            });
            if referenced {
                return Err(SystemCode::HResult(code::FWP_E_IN_USE));
            }
            self.objects.remove(&(kind_id(kind), key.to_u128()));
            Ok(())
        }
    }

    /// A session: committed store plus the working copy of a transaction.
    #[derive(Debug, Default)]
    pub struct FakeEngine {
        pub committed: Store,
        pub txn: Option<Store>,
        /// Fail the n-th add/delete (0-based) with this code.
        pub fail_at: Option<(usize, SystemCode)>,
        pub ops: usize,
        pub registered: Vec<Guid>,
        pub log: Vec<String>,
        pub commit_error: Option<SystemCode>,
    }

    impl FakeEngine {
        fn check_fail(&mut self) -> Result<(), SystemCode> {
            let n = self.ops;
            self.ops += 1;
            match self.fail_at {
                Some((at, code)) if at == n => Err(code),
                _ => Ok(()),
            }
        }

        pub fn store(&self) -> &Store {
            &self.committed
        }
    }

    impl FilterEngine for FakeEngine {
        fn begin(&mut self) -> Result<(), SystemCode> {
            assert!(self.txn.is_none(), "one transaction per session");
            self.log.push("begin".into());
            self.txn = Some(self.committed.clone());
            Ok(())
        }

        fn commit(&mut self) -> Result<(), SystemCode> {
            self.log.push("commit".into());
            if let Some(code) = self.commit_error {
                return Err(code);
            }
            self.committed = self.txn.take().expect("transaction in progress");
            Ok(())
        }

        fn abort(&mut self) -> Result<(), SystemCode> {
            self.log.push("abort".into());
            self.txn = None;
            Ok(())
        }

        fn add(&mut self, object: &Object) -> Result<(), SystemCode> {
            self.log
                .push(format!("add {} {}", object.kind().noun(), object.key()));
            self.check_fail()?;
            self.txn
                .as_mut()
                .expect("add inside a transaction")
                .add(object)
        }

        fn delete(&mut self, kind: ObjectKind, key: &Guid) -> Result<(), SystemCode> {
            self.log.push(format!("delete {} {key}", kind.noun()));
            self.check_fail()?;
            self.txn
                .as_mut()
                .expect("delete inside a transaction")
                .delete(kind, key)
        }

        fn get_flags(&mut self, kind: ObjectKind, key: &Guid) -> Result<Option<u32>, SystemCode> {
            let store = self.txn.as_ref().unwrap_or(&self.committed);
            Ok(store.get(kind, key).map(|o| {
                let registered = kind == ObjectKind::Callout && self.registered.contains(key);
                o.flags()
                    | if registered {
                        plan::flags::CALLOUT_REGISTERED
                    } else {
                        0
                    }
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeEngine;
    use super::*;
    use crate::exit::code;
    use crate::plan::InstallOptions;

    fn plan(persistent: bool, boot_time: bool) -> Plan {
        Plan::install(InstallOptions {
            persistent,
            boot_time,
        })
        .unwrap()
    }

    #[test]
    fn install_adds_everything_in_one_transaction() {
        for p in [plan(false, false), plan(true, false), plan(false, true)] {
            let mut e = FakeEngine::default();
            let report = install(&mut e, &p).expect("install");
            assert_eq!(report.added.len(), p.add_order().len());
            assert_eq!(e.store().objects.len(), p.add_order().len());
            assert_eq!(e.log.first().map(String::as_str), Some("begin"));
            assert_eq!(e.log.last().map(String::as_str), Some("commit"));
            assert_eq!(e.log.iter().filter(|l| *l == "begin").count(), 1);
            for o in p.add_order() {
                assert_eq!(e.store().get(o.kind(), &o.key()), Some(o));
            }
        }
    }

    #[test]
    fn install_twice_reports_already_installed_and_changes_nothing() {
        let p = plan(false, false);
        let mut e = FakeEngine::default();
        install(&mut e, &p).unwrap();
        let before = e.store().objects.clone();
        let err = install(&mut e, &p).unwrap_err();
        assert_eq!(err.kind, Kind::AlreadyInstalled);
        assert_eq!(err.exit_code(), 6);
        assert!(err.message.contains("already"), "{}", err.message);
        assert_eq!(e.log.last().map(String::as_str), Some("abort"));
        assert_eq!(e.store().objects, before);
    }

    #[test]
    fn a_failing_add_aborts_the_whole_install() {
        let p = plan(true, false);
        for at in 0..p.add_order().len() {
            let mut e = FakeEngine {
                fail_at: Some((at, SystemCode::HResult(code::FWP_E_INVALID_FLAGS))),
                ..FakeEngine::default()
            };
            let err = install(&mut e, &p).unwrap_err();
            assert_eq!(err.kind, Kind::Other);
            assert_eq!(
                err.system,
                Some(SystemCode::HResult(code::FWP_E_INVALID_FLAGS))
            );
            assert!(
                e.store().objects.is_empty(),
                "nothing committed after failure at {at}"
            );
            assert_eq!(e.log.last().map(String::as_str), Some("abort"));
            assert!(!e.log.iter().any(|l| l == "commit"));
        }
    }

    #[test]
    fn access_denied_and_bfe_down_are_classified() {
        let p = plan(false, false);
        let mut e = FakeEngine {
            fail_at: Some((0, SystemCode::Win32(code::ERROR_ACCESS_DENIED))),
            ..FakeEngine::default()
        };
        assert_eq!(install(&mut e, &p).unwrap_err().exit_code(), 3);
        let mut e = FakeEngine {
            fail_at: Some((3, SystemCode::Win32(code::RPC_S_SERVER_UNAVAILABLE))),
            ..FakeEngine::default()
        };
        assert_eq!(install(&mut e, &p).unwrap_err().exit_code(), 4);
    }

    #[test]
    fn commit_failure_is_reported() {
        let p = plan(false, false);
        let mut e = FakeEngine {
            commit_error: Some(SystemCode::Win32(1460)),
            ..FakeEngine::default()
        };
        let err = install(&mut e, &p).unwrap_err();
        assert!(err.message.contains("FwpmTransactionCommit0"));
        assert!(e.store().objects.is_empty());
    }

    #[test]
    fn uninstall_deletes_exactly_what_install_added_and_is_idempotent() {
        for p in [plan(false, false), plan(true, false), plan(false, true)] {
            let mut e = FakeEngine::default();
            install(&mut e, &p).unwrap();
            let report = uninstall(&mut e, &Plan::uninstall()).expect("uninstall");
            assert_eq!(report.deleted.len(), p.add_order().len());
            assert!(report.absent.is_empty());
            assert!(e.store().objects.is_empty());
            let deletes: Vec<_> = e
                .log
                .iter()
                .filter(|l| l.starts_with("delete"))
                .cloned()
                .collect();
            let expected: Vec<_> = p
                .delete_order()
                .map(|o| format!("delete {} {}", o.kind().noun(), o.key()))
                .collect();
            assert_eq!(deletes, expected);

            // Second run: everything is absent, which is success.
            let again = uninstall(&mut e, &Plan::uninstall()).expect("idempotent");
            assert!(again.deleted.is_empty());
            assert_eq!(again.absent.len(), p.add_order().len());
        }
    }

    #[test]
    fn uninstall_of_a_partial_install_deletes_what_is_there() {
        let p = plan(false, false);
        let mut e = FakeEngine::default();
        install(&mut e, &p).unwrap();
        // Someone deleted two filters by hand.
        for f in p.filters().take(2) {
            e.committed.delete(ObjectKind::Filter, &f.key).unwrap();
        }
        let report = uninstall(&mut e, &Plan::uninstall()).unwrap();
        assert_eq!(report.absent.len(), 2);
        assert!(e.store().objects.is_empty());
    }

    #[test]
    fn a_foreign_reference_aborts_uninstall() {
        let p = plan(false, false);
        let mut e = FakeEngine::default();
        install(&mut e, &p).unwrap();
        // A filter wfpmonctl did not add references a wfpmon callout.
        let mut foreign = p.filters().next().unwrap().clone();
        foreign.key = Guid::from_u128(0x1234);
        e.committed.add(&Object::Filter(foreign)).unwrap();
        let count = e.store().objects.len();
        let err = uninstall(&mut e, &Plan::uninstall()).unwrap_err();
        assert_eq!(err.system, Some(SystemCode::HResult(code::FWP_E_IN_USE)));
        assert!(
            err.message.contains("nothing was deleted"),
            "{}",
            err.message
        );
        assert_eq!(e.store().objects.len(), count);
    }

    #[test]
    fn fake_engine_enforces_lifetime_rules_the_plan_respects() {
        // A boot-time filter referencing a static callout is refused...
        let static_plan = plan(false, false);
        let boot_plan = plan(false, true);
        let mut e = FakeEngine::default();
        e.begin().unwrap();
        for o in static_plan
            .add_order()
            .iter()
            .filter(|o| o.kind() != ObjectKind::Filter)
        {
            e.add(o).unwrap();
        }
        let boot_filter = boot_plan
            .add_order()
            .iter()
            .find(|o| o.kind() == ObjectKind::Filter)
            .unwrap();
        assert_eq!(
            e.add(boot_filter),
            Err(SystemCode::HResult(code::FWP_E_LIFETIME_MISMATCH))
        );
        e.abort().unwrap();
        // ...which is why the boot-time plan makes callouts persistent.
        let mut e = FakeEngine::default();
        install(&mut e, &boot_plan).unwrap();
    }

    #[test]
    fn status_reports_presence_and_registration() {
        let p = plan(false, false);
        let mut e = FakeEngine::default();
        let empty = wfp_status(&mut e, &p).unwrap();
        assert!(empty.fully_absent());
        assert!(!empty.fully_installed());

        install(&mut e, &p).unwrap();
        e.registered.push(wfpmon_core::catalog::CALLOUTS[4].key);
        let s = wfp_status(&mut e, &p).unwrap();
        assert!(s.fully_installed());
        assert_eq!(s.callouts.len(), wfpmon_core::catalog::CALLOUT_COUNT);
        for (i, c) in s.callouts.iter().enumerate() {
            assert!(c.present);
            assert_eq!(c.registered, i == 4, "{}", c.name);
            assert_eq!(c.flags.contains(&"REGISTERED"), i == 4);
        }
        assert_eq!(s.filters.len(), p.filters().count());
    }

    #[test]
    fn service_states() {
        assert_eq!(ServiceState::from_raw(4), ServiceState::Running);
        assert_eq!(ServiceState::from_raw(1), ServiceState::Stopped);
        assert_eq!(ServiceState::from_raw(99), ServiceState::Unknown(99));
        assert_eq!(ServiceState::from_raw(7).describe(), "paused");
    }
}
