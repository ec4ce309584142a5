//! Driver-wide statistics.
//!
//! Per-packet work only ever touches the flow's own counters; these global
//! counters change once per flow (tracked, deleted, failed), never per
//! packet, and each lives on its own cache line, so the processors that
//! establish flows and those that delete them do not write the same line.
//! Traffic totals come from the flow registry ([`crate::flow::FlowRegistry::totals`]:
//! per bucket, the ended flows' totals and the live flows' counters).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::flow::Traffic;
use crate::protocol::Stats;

/// A counter alone on its cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters kept for the life of the driver.
#[derive(Debug)]
pub struct DriverStats {
    /// Counting is on unless this is set: stored inverted so that the
    /// driver's statics are all zeros (`.bss`, no room in the image).
    counting_off: AtomicBool,
    flows_tracked: Counter,
    flows_deleted: Counter,
    allocation_failures: Counter,
    association_failures: Counter,
}

impl Default for DriverStats {
    fn default() -> Self {
        Self::new()
    }
}

impl DriverStats {
    /// Zeroed, with counting enabled.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            counting_off: AtomicBool::new(false),
            flows_tracked: Counter::new(),
            flows_deleted: Counter::new(),
            allocation_failures: Counter::new(),
            association_failures: Counter::new(),
        }
    }

    /// Whether classify should count traffic.
    pub fn counting(&self) -> bool {
        !self.counting_off.load(Ordering::Relaxed)
    }

    /// Turns counting on or off; returns the previous state.
    pub fn set_counting(&self, enable: bool) -> bool {
        !self.counting_off.swap(!enable, Ordering::Relaxed)
    }

    /// A context was associated with a flow.
    pub fn flow_tracked(&self) {
        self.flows_tracked.bump();
    }

    /// No memory for a flow context.
    pub fn allocation_failed(&self) {
        self.allocation_failures.bump();
    }

    /// The engine refused the association.
    pub fn association_failed(&self) {
        self.association_failures.bump();
    }

    /// A tracked flow's context was deleted (its traffic stays in the
    /// registry's totals).
    pub fn flow_deleted(&self) {
        self.flows_deleted.bump();
    }

    /// Builds the statistics response from these counters, the number of
    /// active flows and the traffic of all flows, active and ended.
    #[must_use]
    pub fn snapshot(&self, flows_active: u64, total: Traffic) -> Stats {
        Stats {
            counting_enabled: u32::from(self.counting()),
            flows_active,
            flows_tracked: self.flows_tracked.get(),
            flows_deleted: self.flows_deleted.get(),
            allocation_failures: self.allocation_failures.get(),
            association_failures: self.association_failures.get(),
            bytes_inbound: total.bytes_inbound,
            bytes_outbound: total.bytes_outbound,
            packets_inbound: total.packets_inbound,
            packets_outbound: total.packets_outbound,
            ..Stats::default()
        }
    }
}
