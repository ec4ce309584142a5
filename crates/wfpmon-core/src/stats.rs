//! Driver-wide statistics.
//!
//! Per-packet work only ever touches the flow's own counters; these global
//! counters change once per flow (tracked, deleted, failed), never per packet.
//! A snapshot sums the traffic of the active flows and of the flows that
//! have ended ([`DriverStats::retire`] moves an ended flow's totals here).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::flow::{FlowRecord, Traffic, TrafficCounters};
use crate::protocol::Stats;

/// Counters kept for the life of the driver.
#[derive(Debug)]
pub struct DriverStats {
    counting: AtomicBool,
    flows_tracked: AtomicU64,
    flows_deleted: AtomicU64,
    allocation_failures: AtomicU64,
    association_failures: AtomicU64,
    retired: TrafficCounters,
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
            counting: AtomicBool::new(true),
            flows_tracked: AtomicU64::new(0),
            flows_deleted: AtomicU64::new(0),
            allocation_failures: AtomicU64::new(0),
            association_failures: AtomicU64::new(0),
            retired: TrafficCounters::new(),
        }
    }

    /// Whether classify should count traffic.
    pub fn counting(&self) -> bool {
        self.counting.load(Ordering::Relaxed)
    }

    /// Turns counting on or off; returns the previous state.
    pub fn set_counting(&self, enable: bool) -> bool {
        self.counting.swap(enable, Ordering::Relaxed)
    }

    /// A context was associated with a flow.
    pub fn flow_tracked(&self) {
        self.flows_tracked.fetch_add(1, Ordering::Relaxed);
    }

    /// No memory for a flow context.
    pub fn allocation_failed(&self) {
        self.allocation_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The engine refused the association.
    pub fn association_failed(&self) {
        self.association_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A tracked flow's context is being deleted: keep its traffic in the totals.
    pub fn retire(&self, record: &FlowRecord) {
        self.retired.add(record.traffic.snapshot());
        self.flows_deleted.fetch_add(1, Ordering::Relaxed);
    }

    /// Builds the statistics response from these counters and the traffic of
    /// the `flows_active` flows still tracked (`active`).
    #[must_use]
    pub fn snapshot(&self, flows_active: u64, active: Traffic) -> Stats {
        let total = self.retired.snapshot().plus(active);
        Stats {
            counting_enabled: u32::from(self.counting()),
            flows_active,
            flows_tracked: self.flows_tracked.load(Ordering::Relaxed),
            flows_deleted: self.flows_deleted.load(Ordering::Relaxed),
            allocation_failures: self.allocation_failures.load(Ordering::Relaxed),
            association_failures: self.association_failures.load(Ordering::Relaxed),
            bytes_inbound: total.bytes_inbound,
            bytes_outbound: total.bytes_outbound,
            packets_inbound: total.packets_inbound,
            packets_outbound: total.packets_outbound,
            ..Stats::default()
        }
    }
}
