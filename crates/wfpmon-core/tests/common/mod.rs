//! What the integration tests share: a std mutex as the registry's,
//! process table's and event ring's lock.

use std::sync::Mutex;

use wfpmon_core::flow::Lock;

/// A `Lock` over a std mutex (a poisoned mutex is still a lock).
#[derive(Default)]
pub struct StdLock(Mutex<()>);

// SAFETY: a std mutex: mutual exclusion, and its release/acquire publish
// the writes made under it.
unsafe impl Lock for StdLock {
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }
}
