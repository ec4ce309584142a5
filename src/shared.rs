//! State shared by the callouts (which the filter engine calls on any
//! processor at IRQL ≤ `DISPATCH_LEVEL`) and the lifecycle (`PASSIVE_LEVEL`).
//!
//! All of it lives in non-paged static memory and is usable before the first
//! callout is registered: the engine may call a callout the moment it is
//! registered, since persistent filters can already reference its key.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use wfpmon_core::catalog::{CALLOUT_COUNT, CalloutIndex};
use wfpmon_core::flow::FlowRegistry;
use wfpmon_core::stats::DriverStats;

use crate::kernel::sync::{Event, SpinLock};

/// See the module documentation.
pub struct Shared {
    /// Flows carrying a wfpmon context.
    pub flows: FlowRegistry<SpinLock>,
    /// Driver-wide counters.
    pub stats: DriverStats,
    /// Signalled by the flow-delete callback during teardown.
    pub flow_deleted: Event,
    /// Run-time ids of registered callouts (0: not registered).
    callout_ids: [AtomicU32; CALLOUT_COUNT],
    /// The packet-injection handle, null until created and after teardown.
    injection: AtomicPtr<c_void>,
    /// Flow-established classifies currently executing driver code.
    classifies: AtomicUsize,
}

/// The driver's one instance.
pub static SHARED: Shared = Shared {
    flows: FlowRegistry::new(SpinLock::new()),
    stats: DriverStats::new(),
    flow_deleted: Event::uninit(),
    callout_ids: [const { AtomicU32::new(0) }; CALLOUT_COUNT],
    injection: AtomicPtr::new(ptr::null_mut()),
    classifies: AtomicUsize::new(0),
};

impl Shared {
    /// Run-time id of callout `index`, if registered.
    pub fn callout_id(&self, index: CalloutIndex) -> Option<u32> {
        match self.callout_ids[index].load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// Publishes (or, with `None`, withdraws) callout `index`'s id.
    pub fn set_callout_id(&self, index: CalloutIndex, id: Option<u32>) {
        self.callout_ids[index].store(id.unwrap_or(0), Ordering::Release);
    }

    /// The injection handle, or null before `DriverEntry` created it.
    pub fn injection_handle(&self) -> *mut c_void {
        self.injection.load(Ordering::Acquire)
    }

    /// Publishes (or, with null, withdraws) the injection handle.
    pub fn set_injection_handle(&self, handle: *mut c_void) {
        self.injection.store(handle, Ordering::Release);
    }

    /// Marks a flow-established classify as running driver code until the
    /// guard drops. Teardown does not return while any is running: nothing
    /// documents that unregistering a callout waits for classify calls
    /// already in progress, and such a call may still free a context or log
    /// after the callouts are gone. (A hand-made rundown reference: the
    /// per-flow path pays two atomic operations, the per-packet path none.)
    pub fn enter_classify(&self) -> ClassifyGuard<'_> {
        self.classifies.fetch_add(1, Ordering::AcqRel);
        ClassifyGuard(self)
    }

    /// Flow-established classifies running now.
    pub fn classifies_in_progress(&self) -> usize {
        self.classifies.load(Ordering::Acquire)
    }
}

/// See [`Shared::enter_classify`].
pub struct ClassifyGuard<'a>(&'a Shared);

impl Drop for ClassifyGuard<'_> {
    fn drop(&mut self) {
        let before = self.0.classifies.fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.0.flows.is_stopping() {
            // The last one out wakes a teardown that may be waiting.
            self.0.flow_deleted.set();
        }
    }
}
