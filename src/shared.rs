//! State shared by the callouts (which the filter engine calls on any
//! processor at IRQL ≤ `DISPATCH_LEVEL`) and the lifecycle (`PASSIVE_LEVEL`).
//!
//! All of it lives in non-paged static memory and is usable before the first
//! callout is registered: the engine may call a callout the moment it is
//! registered, since persistent filters can already reference its key.

use core::sync::atomic::{AtomicU32, Ordering};

use wfpmon_core::catalog::{CALLOUT_COUNT, CalloutIndex};
use wfpmon_core::events::EventRing;
use wfpmon_core::flow::FlowRegistry;
use wfpmon_core::process::ProcessTable;
use wfpmon_core::stats::DriverStats;

use crate::kernel::sync::{Event, SpinLock};

/// See the module documentation.
pub struct Shared {
    /// Flows carrying a wfpmon context.
    pub flows: FlowRegistry<SpinLock>,
    /// The processes of tracked flows, with their totals.
    pub processes: ProcessTable<SpinLock>,
    /// Flow events for user mode.
    pub events: EventRing<SpinLock>,
    /// Driver-wide counters.
    pub stats: DriverStats,
    /// Signalled by the flow-delete callback during teardown.
    pub flow_deleted: Event,
    /// Run-time ids of registered callouts (0: not registered).
    callout_ids: [AtomicU32; CALLOUT_COUNT],
}

/// The driver's one instance.
pub static SHARED: Shared = Shared {
    flows: FlowRegistry::new(),
    processes: ProcessTable::new(),
    events: EventRing::new(),
    stats: DriverStats::new(),
    flow_deleted: Event::uninit(),
    callout_ids: [const { AtomicU32::new(0) }; CALLOUT_COUNT],
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
}
