//! Install, uninstall and query wfpmon's filter-engine objects through a
//! [`FilterEngine`] (the `Fwpm*` API on Windows, an in-memory engine with
//! BFE's rules in the tests).

use windows_sys::Win32::Foundation::FWP_E_IN_USE;

use crate::error::{Error, Step, SystemCode};
use crate::plan::Object;

/// The filter-engine operations the tool needs, on one session.
pub trait FilterEngine {
    /// `FwpmTransactionBegin0` / `Commit0` / `Abort0`.
    fn transaction(&mut self, op: Transaction) -> Result<(), SystemCode>;
    /// `Fwpm{Provider,SubLayer,Callout,Filter}Add0`.
    fn add(&mut self, object: Object, persistent: bool) -> Result<(), SystemCode>;
    /// `Fwpm*DeleteByKey0`.
    fn delete(&mut self, object: Object) -> Result<(), SystemCode>;
    /// `Fwpm*GetByKey0`: the object's flags, `None` when it does not exist.
    fn flags(&mut self, object: Object) -> Result<Option<u32>, SystemCode>;
}

/// A transaction step (`FwpmTransaction{Begin,Commit,Abort}0`; read/write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transaction {
    Begin,
    Commit,
    Abort,
}

fn api(object: Object, verb: &str) -> String {
    let noun = match object {
        Object::Provider => "Provider",
        Object::Sublayer => "SubLayer",
        Object::Callout(_) => "Callout",
        Object::Filter(_) => "Filter",
    };
    format!("Fwpm{noun}{verb}0 ({} {})", object.noun(), object.name())
}

/// Runs `body` in one transaction: committed when it succeeds, aborted
/// (the abort's own failure being secondary) when anything fails.
fn in_transaction<E: FilterEngine, T>(
    engine: &mut E,
    body: impl FnOnce(&mut E) -> Result<T, Error>,
) -> Result<T, Error> {
    let fail = |c, call| Error::system(Step::Engine, c, "a filter-engine transaction", call);
    let begun = engine.transaction(Transaction::Begin);
    begun.map_err(|c| fail(c, "FwpmTransactionBegin0"))?;
    let mut result = body(engine);
    if result.is_ok()
        && let Err(c) = engine.transaction(Transaction::Commit)
    {
        result = Err(fail(c, "FwpmTransactionCommit0"));
    }
    if result.is_err() {
        let _ = engine.transaction(Transaction::Abort);
    }
    result
}

/// Adds every object in one transaction; returns them in the order added.
pub fn install<E: FilterEngine>(engine: &mut E, persistent: bool) -> Result<Vec<Object>, Error> {
    in_transaction(engine, |engine| {
        let order = Object::add_order();
        for &object in &order {
            let added = engine.add(object, persistent);
            let action = "adding wfpmon's filter-engine objects";
            added.map_err(|c| Error::system(Step::Add, c, action, api(object, "Add")))?;
        }
        Ok(order)
    })
}

/// What `uninstall` found: objects deleted (in order) and already absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uninstalled {
    pub deleted: Vec<Object>,
    pub absent: Vec<Object>,
}

/// Deletes every object in reverse add order, in one transaction; absent
/// objects are skipped, so it can run any time.
pub fn uninstall<E: FilterEngine>(engine: &mut E) -> Result<Uninstalled, Error> {
    in_transaction(engine, |engine| {
        let mut report = Uninstalled::default();
        for object in Object::add_order().into_iter().rev() {
            match engine.delete(object) {
                Ok(()) => report.deleted.push(object),
                Err(c) if c.is_not_found() => report.absent.push(object),
                Err(c) => {
                    let action = "deleting wfpmon's filter-engine objects";
                    let call = api(object, "DeleteByKey");
                    let mut err = Error::system(Step::Engine, c, action, call);
                    if c == SystemCode::HResult(FWP_E_IN_USE) {
                        err.message = format!(
                            "{} (nothing was deleted): a filter-engine object wfpmonctl did not add still \
                             references {} {}",
                            err.message,
                            object.noun(),
                            object.name()
                        );
                        err.remedy = Some(
                            "remove that object first (`netsh wfp show filters` lists the filters)"
                                .to_owned(),
                        );
                    }
                    return Err(err);
                }
            }
        }
        Ok(report)
    })
}

/// The flags of every object (`None`: absent), in add order.
pub fn query<E: FilterEngine>(engine: &mut E) -> Result<Vec<(Object, Option<u32>)>, Error> {
    let mut all = Vec::new();
    for o in Object::add_order() {
        let flags = engine.flags(o);
        all.push((
            o,
            flags.map_err(|c| {
                let action = "reading wfpmon's filter-engine objects";
                Error::system(Step::Engine, c, action, api(o, "GetByKey"))
            })?,
        ));
    }
    Ok(all)
}

#[cfg(test)]
pub mod fake {
    //! An in-memory engine with BFE's rules for what this tool does:
    //! transactions, duplicate keys, references, lifetimes.

    use std::collections::BTreeMap;

    use windows_sys::Win32::Foundation::{
        FWP_E_ALREADY_EXISTS, FWP_E_CALLOUT_NOT_FOUND, FWP_E_FILTER_NOT_FOUND,
        FWP_E_LIFETIME_MISMATCH, FWP_E_PROVIDER_NOT_FOUND, FWP_E_SUBLAYER_NOT_FOUND,
    };
    use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::FWPM_CALLOUT_FLAG_REGISTERED;

    use super::*;

    type Store = BTreeMap<u128, (Object, u32)>;

    #[derive(Debug, Default)]
    pub struct FakeEngine {
        pub committed: Store,
        pub txn: Option<Store>,
        /// Fail the n-th add/delete (0-based) with this code.
        pub fail_at: Option<(usize, SystemCode)>,
        pub ops: usize,
        pub registered: Vec<usize>,
        pub log: Vec<String>,
    }

    const fn not_found(o: Object) -> SystemCode {
        SystemCode::HResult(match o {
            Object::Provider => FWP_E_PROVIDER_NOT_FOUND,
            Object::Sublayer => FWP_E_SUBLAYER_NOT_FOUND,
            Object::Callout(_) => FWP_E_CALLOUT_NOT_FOUND,
            Object::Filter(_) => FWP_E_FILTER_NOT_FOUND,
        })
    }

    fn references(o: Object) -> Vec<Object> {
        match o {
            Object::Provider => vec![],
            Object::Sublayer | Object::Callout(_) => vec![Object::Provider],
            Object::Filter(i) => vec![Object::Provider, Object::Sublayer, Object::Callout(i)],
        }
    }

    impl FakeEngine {
        fn step(&mut self, what: String) -> Result<&mut Store, SystemCode> {
            self.log.push(what);
            let n = self.ops;
            self.ops += 1;
            if let Some((at, code)) = self.fail_at
                && at == n
            {
                return Err(code);
            }
            Ok(self.txn.as_mut().expect("inside a transaction"))
        }
    }

    impl FilterEngine for FakeEngine {
        fn transaction(&mut self, op: Transaction) -> Result<(), SystemCode> {
            self.log.push(format!("{op:?}"));
            match op {
                Transaction::Begin => self.txn = Some(self.committed.clone()),
                Transaction::Commit => self.committed = self.txn.take().expect("open"),
                Transaction::Abort => self.txn = None,
            }
            Ok(())
        }

        fn add(&mut self, object: Object, persistent: bool) -> Result<(), SystemCode> {
            let store = self.step(format!("add {}", object.key()))?;
            if store.contains_key(&object.key().to_u128()) {
                return Err(SystemCode::HResult(FWP_E_ALREADY_EXISTS));
            }
            for r in references(object) {
                let (_, flags) = store.get(&r.key().to_u128()).ok_or_else(|| not_found(r))?;
                if persistent && *flags == 0 {
                    return Err(SystemCode::HResult(FWP_E_LIFETIME_MISMATCH));
                }
            }
            store.insert(object.key().to_u128(), (object, object.flags(persistent)));
            Ok(())
        }

        fn delete(&mut self, object: Object) -> Result<(), SystemCode> {
            let store = self.step(format!("delete {}", object.key()))?;
            if store
                .values()
                .any(|(o, _)| references(*o).contains(&object))
            {
                return Err(SystemCode::HResult(FWP_E_IN_USE));
            }
            store
                .remove(&object.key().to_u128())
                .map(drop)
                .ok_or_else(|| not_found(object))
        }

        fn flags(&mut self, object: Object) -> Result<Option<u32>, SystemCode> {
            let registered = matches!(object, Object::Callout(i) if self.registered.contains(&i));
            Ok(self.committed.get(&object.key().to_u128()).map(|(_, f)| {
                f | if registered {
                    FWPM_CALLOUT_FLAG_REGISTERED
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
    use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, FWP_E_INVALID_FLAGS};

    #[test]
    fn install_adds_everything_in_one_transaction() {
        for persistent in [false, true] {
            let mut e = FakeEngine::default();
            let added = install(&mut e, persistent).unwrap();
            assert_eq!(added, Object::add_order());
            assert_eq!(e.committed.len(), added.len());
            assert_eq!(e.log.first().unwrap(), "Begin");
            assert_eq!(e.log.last().unwrap(), "Commit");
            assert!(e.committed.values().all(|(o, f)| *f == o.flags(persistent)));
        }
    }

    #[test]
    fn install_twice_is_already_installed_and_changes_nothing() {
        let mut e = FakeEngine::default();
        install(&mut e, false).unwrap();
        let before = e.committed.clone();
        let err = install(&mut e, false).unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert!(err.to_string().contains("wfpmonctl uninstall"), "{err}");
        assert_eq!(e.log.last().unwrap(), "Abort");
        assert_eq!(e.committed, before);
    }

    #[test]
    fn any_failing_add_aborts_the_whole_install() {
        for at in 0..Object::add_order().len() {
            let mut e = FakeEngine {
                fail_at: Some((at, SystemCode::HResult(FWP_E_INVALID_FLAGS))),
                ..FakeEngine::default()
            };
            let err = install(&mut e, true).unwrap_err();
            assert_eq!(err.kind, crate::error::Kind::Other);
            assert!(e.committed.is_empty(), "failure at {at}");
            assert_eq!(e.log.last().unwrap(), "Abort");
        }
        let mut e = FakeEngine {
            fail_at: Some((0, SystemCode::Win32(ERROR_ACCESS_DENIED))),
            ..FakeEngine::default()
        };
        assert_eq!(install(&mut e, false).unwrap_err().exit_code(), 3);
    }

    #[test]
    fn uninstall_is_exact_ordered_and_idempotent() {
        let mut e = FakeEngine::default();
        install(&mut e, true).unwrap();
        e.log.clear();
        let done = uninstall(&mut e).unwrap();
        let mut expected = Object::add_order();
        expected.reverse();
        assert_eq!(done.deleted, expected);
        assert!(e.committed.is_empty());
        let deletes: Vec<_> = e
            .log
            .iter()
            .filter(|l| l.starts_with("delete"))
            .cloned()
            .collect();
        let keys: Vec<_> = expected
            .iter()
            .map(|o| format!("delete {}", o.key()))
            .collect();
        assert_eq!(deletes, keys);
        let again = uninstall(&mut e).unwrap();
        assert!(again.deleted.is_empty());
        assert_eq!(again.absent.len(), expected.len());
    }

    #[test]
    fn a_foreign_reference_aborts_uninstall() {
        let mut e = FakeEngine::default();
        install(&mut e, false).unwrap();
        // Simulate a filter someone else added that references callout 0:
        // its key differs, its reference list is a wfpmon filter's.
        let foreign = e
            .committed
            .remove(&Object::Filter(0).key().to_u128())
            .unwrap();
        e.committed.insert(1, foreign);
        let count = e.committed.len();
        let err = uninstall(&mut e).unwrap_err();
        assert_eq!(err.code(), Some(SystemCode::HResult(FWP_E_IN_USE)));
        assert!(
            err.message.contains("nothing was deleted"),
            "{}",
            err.message
        );
        assert_eq!(e.committed.len(), count);
    }

    #[test]
    fn query_reports_presence_and_registration() {
        let mut e = FakeEngine::default();
        assert!(query(&mut e).unwrap().iter().all(|(_, f)| f.is_none()));
        install(&mut e, false).unwrap();
        e.registered.push(4);
        let q = query(&mut e).unwrap();
        assert!(q.iter().all(|(_, f)| f.is_some()));
        let registered: Vec<_> = q
            .iter()
            .filter(|(_, f)| f.unwrap() & 0x4_0000 != 0)
            .collect();
        assert_eq!(registered, [&(Object::Callout(4), Some(0x4_0000))]);
    }
}
