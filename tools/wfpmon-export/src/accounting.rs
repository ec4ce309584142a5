//! Flow accounting: what has been exported of every flow, and the delta
//! records that bring each flow's exported sum to the driver's counters.
//!
//! Sources, all from the driver:
//! - "established" events add a flow; "ended" events carry its final
//!   counters and give its end-of-flow delta;
//! - listing passes (`LIST_FLOWS`) carry live counters: a flow exported
//!   longer than the active timeout ago gets an active-timeout delta;
//! - snapshots of the ended-flow totals (per process from
//!   `LIST_PROCESSES`, and driver-wide from the walk-free `QUERY_STATS`)
//!   settle the flows whose "ended" event the ring overwrote (see
//!   [`Accountant::reconcile`]).
//!
//! Invariant: every delta is `known - exported` of one flow, after which
//! `exported = known`; so the deltas of a flow sum to the last counters the
//! driver gave for it, and nothing is counted twice.

use std::collections::HashMap;

use crate::ipfix::end_reason;

/// Traffic counters of one flow (payload bytes, as the driver counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
}

impl Counters {
    /// From the driver's `[bytes in, bytes out, packets in, packets out]`.
    #[must_use]
    pub const fn from_array(a: [u64; 4]) -> Self {
        Self {
            bytes_in: a[0],
            bytes_out: a[1],
            packets_in: a[2],
            packets_out: a[3],
        }
    }

    const fn array(self) -> [u64; 4] {
        [
            self.bytes_in,
            self.bytes_out,
            self.packets_in,
            self.packets_out,
        ]
    }

    /// Field by field `self - other`, saturating at zero.
    #[must_use]
    pub const fn minus(self, other: Self) -> Self {
        Self {
            bytes_in: self.bytes_in.saturating_sub(other.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(other.bytes_out),
            packets_in: self.packets_in.saturating_sub(other.packets_in),
            packets_out: self.packets_out.saturating_sub(other.packets_out),
        }
    }

    /// Field by field sum (wrapping: counters are modulo 2^64).
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            bytes_in: self.bytes_in.wrapping_add(other.bytes_in),
            bytes_out: self.bytes_out.wrapping_add(other.bytes_out),
            packets_in: self.packets_in.wrapping_add(other.packets_in),
            packets_out: self.packets_out.wrapping_add(other.packets_out),
        }
    }

    /// Every field at least `other`'s.
    #[must_use]
    pub fn covers(self, other: Self) -> bool {
        self.array().iter().zip(other.array()).all(|(a, b)| *a >= b)
    }

    /// All zero.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.bytes_in == 0 && self.bytes_out == 0 && self.packets_in == 0 && self.packets_out == 0
    }
}

/// What a flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IPv6?
    pub v6: bool,
    /// Local address (IPv4 in the first 4 bytes).
    pub local: [u8; 16],
    /// Remote address.
    pub remote: [u8; 16],
    /// Local port.
    pub local_port: u16,
    /// Remote port.
    pub remote_port: u16,
    /// IP protocol.
    pub protocol: u8,
    /// Established inbound (the remote peer connected)?
    pub inbound: bool,
}

/// One delta of one flow, to be exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta {
    /// The engine's flow handle.
    pub flow_id: u64,
    /// The flow.
    pub tuple: Tuple,
    /// Process id (0: unknown).
    pub pid: u32,
    /// The driver's process key (0: none).
    pub process_key: u64,
    /// Traffic since the flow's previous delta.
    pub counters: Counters,
    /// Start of the interval (Unix ms): the flow's establishment for its
    /// first delta, the previous delta's end afterwards.
    pub start_ms: u64,
    /// End of the interval (Unix ms).
    pub end_ms: u64,
    /// `ipfix::end_reason`.
    pub reason: u8,
}

#[derive(Clone, Debug)]
struct Flow {
    tuple: Tuple,
    pid: u32,
    process_key: u64,
    /// Start of the next delta's interval.
    interval_start_ms: u64,
    /// When the flow last had a delta exported (or was first seen).
    last_export_ms: u64,
    exported: Counters,
    known: Counters,
    /// Listing pass in which the flow was last seen.
    seen_pass: u64,
    /// Listing pass that was running (or next) when the flow became known.
    known_since_pass: u64,
}

/// A snapshot of the driver's ended-flow totals.
#[derive(Clone, Debug, Default)]
pub struct EndedTotals {
    /// The first event sequence number whose flow is *not* in these
    /// totals: "ended" events before it are counted in them (the driver
    /// adds a flow to its ended totals before it publishes the event).
    pub boundary: u64,
    /// Per process key: traffic of its ended flows.
    pub per_process: HashMap<u64, Counters>,
    /// Driver-wide traffic of ended flows (`QUERY_STATS` without the walk).
    pub global: Counters,
    /// Per process key: flows ever attributed to it (`LIST_PROCESSES`'
    /// `flows_total`); key 0: flows tracked without a process (the
    /// header's `unattributed_flows`).
    pub flows: HashMap<u64, u64>,
}

/// What the exporter knows of one process's traffic and flows now (see
/// [`Accountant::processes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessView {
    /// Traffic of its ended flows and the last known counters of its live
    /// ones.
    pub traffic: Counters,
    /// Flows ever attributed to it, as far as known.
    pub flows: u64,
    /// Its live flows in the exporter's table.
    pub active_flows: u64,
}

/// Accounting figures, for the health metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountingStats {
    /// Flows settled by reconciliation (their "ended" event was lost).
    pub reconciled_flows: u64,
    /// Ended traffic the driver reported that no flow could carry (flows
    /// that started and ended while events were being lost): bytes.
    pub unattributed_bytes: u64,
    /// Same, packets.
    pub unattributed_packets: u64,
}

/// The exporter's flow table.
#[derive(Debug)]
pub struct Accountant {
    flows: HashMap<u64, Flow>,
    active_timeout_ms: u64,
    pass: u64,
    /// Ended totals at the last snapshot.
    base: EndedTotals,
    /// Final counters of flows whose "ended" event (time after the base
    /// snapshot) was processed since, per process key and driver-wide.
    since: HashMap<u64, Counters>,
    since_global: Counters,
    /// A snapshot taken but not yet reconciled: events after its time
    /// count towards the next period.
    pending_time: Option<u64>,
    next_since: HashMap<u64, Counters>,
    next_since_global: Counters,
    /// Flows established (event after the base snapshot) since, per
    /// process key; and for the next period, as `next_since`.
    flows_since: HashMap<u64, u64>,
    next_flows_since: HashMap<u64, u64>,
    /// Live flows' last known counters and number, per process key and
    /// driver-wide: kept up to date at every change of a flow (so that the
    /// metrics never sum the table).
    live: HashMap<u64, (Counters, u64)>,
    live_global: Counters,
    /// Figures.
    pub stats: AccountingStats,
}

impl Accountant {
    /// An empty table; flows are split every `active_timeout_ms`.
    #[must_use]
    pub fn new(active_timeout_ms: u64) -> Self {
        Self {
            flows: HashMap::new(),
            active_timeout_ms,
            pass: 1,
            base: EndedTotals::default(),
            since: HashMap::new(),
            since_global: Counters::default(),
            pending_time: None,
            next_since: HashMap::new(),
            next_since_global: Counters::default(),
            flows_since: HashMap::new(),
            next_flows_since: HashMap::new(),
            live: HashMap::new(),
            live_global: Counters::default(),
            stats: AccountingStats::default(),
        }
    }

    /// Flows tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// No flow tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// A flow with `known` counters joins the live figures of `key`.
    fn live_enter(&mut self, key: u64, known: Counters) {
        let e = self.live.entry(key).or_default();
        e.0 = e.0.plus(known);
        e.1 += 1;
        self.live_global = self.live_global.plus(known);
    }

    /// A flow with `known` counters leaves the live figures of `key`.
    fn live_leave(&mut self, key: u64, known: Counters) {
        if let Some(e) = self.live.get_mut(&key) {
            e.0 = e.0.minus(known);
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                self.live.remove(&key);
            }
        }
        self.live_global = self.live_global.minus(known);
    }

    /// A live flow's counters grew from `old` to `new`.
    fn live_grow(&mut self, key: u64, old: Counters, new: Counters) {
        let grown = new.minus(old);
        if let Some(e) = self.live.get_mut(&key) {
            e.0 = e.0.plus(grown);
        }
        self.live_global = self.live_global.plus(grown);
    }

    /// Driver-wide traffic of every flow as the exporter knows it: the
    /// driver's ended totals at the last snapshot, the final counters of
    /// the flows it heard end since, and the last known counters of the
    /// live ones. Costs the same at any number of flows (kept up to date
    /// as flows change). Never above the driver's true total at the moment
    /// (every part is a part of it, or less); equal to it once the events
    /// are read and a listing pass has seen the live counters.
    #[must_use]
    pub const fn total_traffic(&self) -> Counters {
        self.base
            .global
            .plus(self.since_global)
            .plus(self.live_global)
    }

    /// Per process key (0: flows without a process included), what
    /// [`Accountant::total_traffic`] is driver-wide, with the flows ever
    /// attributed to it (the snapshot's `flows_total` plus the
    /// "established" events since) and its live flows. Costs one entry per
    /// process, not per flow.
    #[must_use]
    pub fn processes(&self) -> HashMap<u64, ProcessView> {
        let mut out: HashMap<u64, ProcessView> = HashMap::new();
        for (k, c) in self.base.per_process.iter().chain(&self.since) {
            let v = out.entry(*k).or_default();
            v.traffic = v.traffic.plus(*c);
        }
        for (k, n) in self.base.flows.iter().chain(&self.flows_since) {
            out.entry(*k).or_default().flows += n;
        }
        for (k, (c, n)) in &self.live {
            let v = out.entry(*k).or_default();
            v.traffic = v.traffic.plus(*c);
            v.active_flows += n;
        }
        out
    }

    fn insert(&mut self, id: u64, flow: Flow, now_ms: u64, out: &mut Vec<Delta>) {
        self.live_enter(flow.process_key, flow.known);
        if let Some(old) = self.flows.insert(id, flow) {
            self.live_leave(old.process_key, old.known);
            // The engine reused a handle whose end we never heard of: the
            // old flow ends with what is known of it.
            push_delta(id, &old, old.known, now_ms, end_reason::FORCED_END, out);
        }
    }

    /// An "established" event; `start_ms`: its establishment (Unix ms);
    /// `seq`: the event's sequence number.
    #[allow(clippy::too_many_arguments)]
    pub fn established(
        &mut self,
        id: u64,
        tuple: Tuple,
        pid: u32,
        process_key: u64,
        start_ms: u64,
        seq: u64,
        out: &mut Vec<Delta>,
    ) {
        // Towards the flow counts of the period the event falls in (as the
        // "ended" events' traffic: see `ended`).
        let flows = match self.pending_time {
            Some(b) if seq >= b => Some(&mut self.next_flows_since),
            _ if seq < self.base.boundary => None, // in the base snapshot
            _ => Some(&mut self.flows_since),
        };
        if let Some(flows) = flows {
            *flows.entry(process_key).or_default() += 1;
        }
        if self
            .flows
            .get(&id)
            .is_some_and(|f| f.tuple == tuple && f.process_key == process_key)
        {
            return; // already known from a listing
        }
        let flow = Flow {
            tuple,
            pid,
            process_key,
            interval_start_ms: start_ms,
            last_export_ms: start_ms,
            exported: Counters::default(),
            known: Counters::default(),
            seen_pass: 0,
            known_since_pass: self.pass,
        };
        self.insert(id, flow, start_ms, out);
    }

    /// An "ended" event with the flow's final counters at `end_ms`
    /// (`seq`: the event's sequence number; `reason`: end of flow,
    /// or forced end when the driver removed its context at unload).
    #[allow(clippy::too_many_arguments)]
    pub fn ended(
        &mut self,
        id: u64,
        tuple: Tuple,
        pid: u32,
        process_key: u64,
        final_counters: Counters,
        start_ms: u64,
        end_ms: u64,
        seq: u64,
        reason: u8,
        out: &mut Vec<Delta>,
    ) {
        // Towards the reconciliation of the period the event falls in.
        let (since, global) = match self.pending_time {
            Some(b) if seq >= b => (&mut self.next_since, &mut self.next_since_global),
            _ => {
                if seq < self.base.boundary {
                    // Already in the base snapshot's totals.
                    (&mut HashMap::new(), &mut Counters::default())
                } else {
                    (&mut self.since, &mut self.since_global)
                }
            }
        };
        let e = since.entry(process_key).or_default();
        *e = e.plus(final_counters);
        *global = global.plus(final_counters);
        let removed = self.flows.remove(&id);
        if let Some(f) = &removed {
            self.live_leave(f.process_key, f.known);
        }
        let flow = match removed {
            Some(f) if f.tuple == tuple => f,
            other => {
                if let Some(old) = other {
                    push_delta(id, &old, old.known, end_ms, end_reason::FORCED_END, out);
                }
                // Never seen (it started and ended between two reads).
                Flow {
                    tuple,
                    pid,
                    process_key,
                    interval_start_ms: start_ms,
                    last_export_ms: start_ms,
                    exported: Counters::default(),
                    known: Counters::default(),
                    seen_pass: 0,
                    known_since_pass: self.pass,
                }
            }
        };
        push_delta(id, &flow, final_counters, end_ms, reason, out);
    }

    /// Starts a listing pass.
    pub const fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// A flow in the current listing pass with its live counters;
    /// `start_ms`: its establishment.
    pub fn listed(
        &mut self,
        id: u64,
        tuple: Tuple,
        pid: u32,
        process_key: u64,
        counters: Counters,
        start_ms: u64,
        now_ms: u64,
        out: &mut Vec<Delta>,
    ) {
        let pass = self.pass;
        match self.flows.get_mut(&id) {
            Some(f) if f.tuple == tuple && counters.covers(f.known) => {
                let (key, old) = (f.process_key, f.known);
                f.known = counters;
                f.seen_pass = pass;
                self.live_grow(key, old, counters);
            }
            _ => {
                let flow = Flow {
                    tuple,
                    pid,
                    process_key,
                    interval_start_ms: start_ms,
                    last_export_ms: start_ms,
                    exported: Counters::default(),
                    known: counters,
                    seen_pass: pass,
                    known_since_pass: pass,
                };
                self.insert(id, flow, now_ms, out);
            }
        }
    }

    /// Ends the listing pass at `now_ms`: every flow exported at least the
    /// active timeout ago whose counters moved gets an active-timeout delta.
    pub fn end_pass(&mut self, now_ms: u64, out: &mut Vec<Delta>) {
        for (id, f) in &mut self.flows {
            if now_ms.saturating_sub(f.last_export_ms) >= self.active_timeout_ms
                && f.known != f.exported
            {
                push_delta(*id, f, f.known, now_ms, end_reason::ACTIVE_TIMEOUT, out);
                f.exported = f.known;
                f.interval_start_ms = now_ms;
                f.last_export_ms = now_ms;
            }
        }
    }

    /// Every flow ends now with what is known of it (`reason`: forced end
    /// when the driver went away or the exporter stops).
    pub fn end_all(&mut self, now_ms: u64, reason: u8, out: &mut Vec<Delta>) {
        for (id, f) in self.flows.drain() {
            push_delta(id, &f, f.known, now_ms, reason, out);
        }
        self.live.clear();
        self.live_global = Counters::default();
    }

    /// A snapshot of ended totals was taken with `boundary` (see
    /// [`EndedTotals::boundary`]): "ended" events from it on count towards
    /// the next period.
    pub const fn snapshot_taken(&mut self, boundary: u64) {
        self.pending_time = Some(boundary);
    }

    /// Starts accounting from `snapshot` (at start, or after the driver
    /// came back): nothing to settle.
    pub fn set_base(&mut self, snapshot: EndedTotals) {
        self.base = snapshot;
        self.since = std::mem::take(&mut self.next_since);
        self.since_global = std::mem::take(&mut self.next_since_global);
        self.flows_since = std::mem::take(&mut self.next_flows_since);
        self.pending_time = None;
    }

    /// After the event ring overflowed: the flows that the last listing
    /// pass no longer found, that were known before it began and whose
    /// "ended" event never came, ended in the gap. Their final counters are
    /// what the driver's ended totals grew by beyond the "ended" events
    /// received: per process, `snapshot - base - since` — exact per flow
    /// when a process lost one flow, exact per process and driver-wide in
    /// any case; each such flow gets at least its last known counters, and
    /// the remainder goes to the first of them. Ended traffic no known flow
    /// can carry (flows that began and ended in the gap) is counted in
    /// [`AccountingStats::unattributed_bytes`]. Flows of processes no longer
    /// in the process table share the driver-wide remainder likewise.
    pub fn reconcile(&mut self, snapshot: EndedTotals, now_ms: u64, out: &mut Vec<Delta>) {
        let pass = self.pass;
        let mut vanished: Vec<(u64, Flow)> = Vec::new();
        let ids: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.seen_pass != pass && f.known_since_pass < pass)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(f) = self.flows.remove(&id) {
                self.live_leave(f.process_key, f.known);
                vanished.push((id, f));
            }
        }
        vanished.sort_by_key(|(id, _)| *id);
        let mut by_process: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, (_, f)) in vanished.iter().enumerate() {
            by_process.entry(f.process_key).or_default().push(i);
        }
        let mut finals: Vec<Counters> = vanished.iter().map(|(_, f)| f.known).collect();
        let mut assigned_global = Counters::default();
        let mut attributed = Counters::default();
        // Per process.
        for (key, now_total) in &snapshot.per_process {
            let base = self.base.per_process.get(key).copied().unwrap_or_default();
            let since = self.since.get(key).copied().unwrap_or_default();
            let residual = now_total.minus(base).minus(since);
            assigned_global = assigned_global.plus(residual);
            match by_process.remove(key) {
                Some(members) if *key != 0 => {
                    spread(residual, &members, &mut finals);
                    attributed = attributed.plus(residual);
                }
                _ => {}
            }
        }
        // The rest (no process entry): the driver-wide remainder.
        let global = snapshot
            .global
            .minus(self.base.global)
            .minus(self.since_global);
        let remainder = global.minus(assigned_global);
        let rest: Vec<usize> = by_process.into_values().flatten().collect();
        if !rest.is_empty() {
            let mut rest = rest;
            rest.sort_unstable();
            spread(remainder, &rest, &mut finals);
            attributed = attributed.plus(remainder);
        }
        // What the known counters of the vanished flows already explained
        // is attributed; anything beyond the finals is not.
        let total_final = finals.iter().fold(Counters::default(), |a, c| a.plus(*c));
        let unexplained = global.minus(total_final);
        self.stats.unattributed_bytes += unexplained.bytes_in + unexplained.bytes_out;
        self.stats.unattributed_packets += unexplained.packets_in + unexplained.packets_out;
        let _ = attributed;
        for ((id, f), fin) in vanished.iter().zip(finals) {
            push_delta(*id, f, fin, now_ms, end_reason::LACK_OF_RESOURCES, out);
            self.stats.reconciled_flows += 1;
        }
        self.set_base(snapshot);
    }
}

/// Gives `residual` to the flows `members` (indexes into `finals`, which
/// hold their last known counters): each keeps at least its known counters,
/// the first gets what the residual has beyond their sum.
fn spread(residual: Counters, members: &[usize], finals: &mut [Counters]) {
    let known = members
        .iter()
        .fold(Counters::default(), |a, i| a.plus(finals[*i]));
    let extra = residual.minus(known);
    if let Some(first) = members.first() {
        finals[*first] = finals[*first].plus(extra);
    }
}

fn push_delta(id: u64, f: &Flow, known: Counters, end_ms: u64, reason: u8, out: &mut Vec<Delta>) {
    out.push(Delta {
        flow_id: id,
        tuple: f.tuple,
        pid: f.pid,
        process_key: f.process_key,
        counters: known.minus(f.exported),
        start_ms: f.interval_start_ms,
        end_ms: end_ms.max(f.interval_start_ms),
        reason,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tuple(n: u64) -> Tuple {
        Tuple {
            v6: n.is_multiple_of(2),
            local: [1; 16],
            remote: [u8::try_from(n % 200).unwrap(); 16],
            local_port: u16::try_from(1000 + n).unwrap(),
            remote_port: 443,
            protocol: 6,
            inbound: false,
        }
    }

    /// A model driver: flows with counters that only grow, ended totals per
    /// process, and what the exporter was told.
    #[derive(Debug, Clone)]
    enum Step {
        Open(u8),
        Traffic(u8, u16, u16),
        End(u8),
        Scan(u32),
        /// Events lost: the next `n` steps' events are not delivered.
        Lose(u8),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => any::<u8>().prop_map(|n| Step::Open(n % 24)),
            6 => (any::<u8>(), any::<u16>(), any::<u16>()).prop_map(|(n, a, b)| Step::Traffic(n % 24, a, b)),
            2 => any::<u8>().prop_map(|n| Step::End(n % 24)),
            2 => (0u32..200_000).prop_map(Step::Scan),
            1 => (1u8..6).prop_map(Step::Lose),
        ]
    }

    proptest! {
        /// Whatever the order of events, scans and losses: the deltas of
        /// every flow sum exactly to its final counters when it was the
        /// only flow of its process lost in a gap, and the total of all
        /// deltas always equals the driver's total.
        #[test]
        fn deltas_sum_to_the_driver_counters(steps in proptest::collection::vec(arb_step(), 1..200)) {
            let mut acc = Accountant::new(60_000);
            let mut out = Vec::new();
            // Model state: live flows (id -> (slot, counters)), ended totals.
            let mut live: HashMap<u64, (u8, Counters)> = HashMap::new();
            let mut truth: HashMap<u64, Counters> = HashMap::new();
            let mut ended_total: HashMap<u64, Counters> = HashMap::new();
            let mut ended_global = Counters::default();
            let mut next_id = 1u64;
            let mut lose = 0u8;
            let mut lost_any = false;
            let mut lost_flows_per_process: HashMap<u64, u32> = HashMap::new();
            let mut time = 1_000u64; // driver time and ms, one clock
            let mut gap_only = Vec::new();
            let mut seen_by_exporter: std::collections::HashSet<u64> = std::collections::HashSet::new();
            let mut flow_key: HashMap<u64, u64> = HashMap::new();
            let mut multi_loss = false;
            let key_of = |slot: u8| u64::from(slot % 5) + 1; // 5 processes
            let mut opened: HashMap<u64, u64> = HashMap::new(); // flows per key
            for step in steps {
                time += 1;
                let deliver = lose == 0;
                lose = lose.saturating_sub(1);
                match step {
                    Step::Open(slot) => {
                        if live.values().any(|(s, _)| *s == slot) { continue; }
                        let id = next_id; next_id += 1;
                        live.insert(id, (slot, Counters::default()));
                        flow_key.insert(id, key_of(slot));
                        *opened.entry(key_of(slot)).or_default() += 1;
                        if deliver {
                            acc.established(id, tuple(id), 7, key_of(slot), time, time, &mut out);
                            seen_by_exporter.insert(id);
                        } else {
                            lost_any = true;
                        }
                    }
                    Step::Traffic(slot, a, b) => {
                        if let Some((_, c)) = live.values_mut().find(|(s, _)| *s == slot) {
                            *c = c.plus(Counters { bytes_in: u64::from(a), bytes_out: u64::from(b), packets_in: 1, packets_out: u64::from(b % 3) });
                        }
                    }
                    Step::End(slot) => {
                        let Some(id) = live.iter().find(|(_, (s, _))| *s == slot).map(|(id, _)| *id) else { continue };
                        let (slot, c) = live.remove(&id).unwrap();
                        let key = key_of(slot);
                        let e = ended_total.entry(key).or_default();
                        *e = e.plus(c);
                        ended_global = ended_global.plus(c);
                        truth.insert(id, c);
                        if deliver {
                            acc.ended(id, tuple(id), 7, key, c, time, time, time, end_reason::END_OF_FLOW, &mut out);
                        } else {
                            lost_any = true;
                            if seen_by_exporter.contains(&id) {
                                let n = lost_flows_per_process.entry(key).or_default();
                                *n += 1;
                                multi_loss |= *n > 1;
                            } else {
                                gap_only.push(id);
                            }
                        }
                    }
                    Step::Scan(advance) => {
                        time += u64::from(advance);
                        acc.begin_pass();
                        for (id, (slot, c)) in &live {
                            acc.listed(*id, tuple(*id), 7, key_of(*slot), *c, time, time, &mut out);
                            seen_by_exporter.insert(*id);
                        }
                        acc.end_pass(time, &mut out);
                        if lost_any {
                            acc.snapshot_taken(time + 1);
                            acc.reconcile(EndedTotals { boundary: time + 1, per_process: ended_total.clone(), global: ended_global, flows: opened.clone() }, time, &mut out);
                            lost_any = false;
                            lost_flows_per_process.clear();
                        }
                        // The metrics' figures (no walk): after a pass with
                        // nothing lost since the last reconciliation, exactly
                        // the driver's totals, driver-wide and per process.
                        let mut by_key: HashMap<u64, (Counters, u64, u64)> = HashMap::new();
                        for (key, c) in &ended_total {
                            by_key.entry(*key).or_default().0 = *c;
                        }
                        for (key, n) in &opened {
                            by_key.entry(*key).or_default().1 = *n;
                        }
                        for (slot, c) in live.values() {
                            let e = by_key.entry(key_of(*slot)).or_default();
                            e.0 = e.0.plus(*c);
                            e.2 += 1;
                        }
                        let driver = by_key.values().fold(Counters::default(), |a, v| a.plus(v.0));
                        prop_assert_eq!(acc.total_traffic(), driver);
                        let view = acc.processes();
                        for (key, (c, n, active)) in &by_key {
                            let v = view.get(key).copied().unwrap_or_default();
                            prop_assert_eq!((v.traffic, v.flows, v.active_flows), (*c, *n, *active), "process {}", key);
                        }
                    }
                    Step::Lose(n) => lose = n,
                }
            }
            // Final settlement: a pass, then a reconcile, then the rest end.
            time += 1;
            acc.begin_pass();
            for (id, (slot, c)) in &live {
                acc.listed(*id, tuple(*id), 7, key_of(*slot), *c, time, time, &mut out);
            }
            acc.end_pass(time, &mut out);
            acc.snapshot_taken(time + 1);
            acc.reconcile(EndedTotals { boundary: time + 1, per_process: ended_total.clone(), global: ended_global, flows: opened.clone() }, time, &mut out);
            for (id, (_, c)) in &live {
                truth.insert(*id, *c);
            }
            acc.end_all(time, end_reason::FORCED_END, &mut out);
            prop_assert!(acc.is_empty());

            let mut sums: HashMap<u64, Counters> = HashMap::new();
            for d in &out {
                let s = sums.entry(d.flow_id).or_default();
                *s = s.plus(d.counters);
                prop_assert!(d.start_ms <= d.end_ms);
            }
            // Driver-wide: everything exported, plus what only the
            // unattributed counter could carry, is the driver's total.
            let exported = sums.values().fold(Counters::default(), |a, c| a.plus(*c));
            let all = truth.values().fold(Counters::default(), |a, c| a.plus(*c));
            prop_assert_eq!(
                exported.bytes_in + exported.bytes_out + acc.stats.unattributed_bytes,
                all.bytes_in + all.bytes_out
            );
            // Per process: exact unless the process lost a flow the
            // exporter never saw (its traffic is unattributable).
            let mut per_process: HashMap<u64, (Counters, Counters)> = HashMap::new();
            for (id, c) in &truth {
                let key = flow_key[id];
                let e = per_process.entry(key).or_default();
                e.0 = e.0.plus(sums.get(id).copied().unwrap_or_default());
                e.1 = e.1.plus(*c);
            }
            let tainted: std::collections::HashSet<u64> = gap_only.iter().map(|id| flow_key[id]).collect();
            for (key, (exported, driver)) in &per_process {
                if !tainted.contains(key) {
                    prop_assert_eq!(exported, driver, "process {}", key);
                }
            }
            // Per flow: exact whenever no process lost two known flows in
            // one gap and nothing was unattributable.
            if gap_only.is_empty() && !multi_loss {
                for (id, c) in &truth {
                    prop_assert_eq!(sums.get(id).copied().unwrap_or_default(), *c, "flow {}", id);
                }
            }
            if gap_only.is_empty() {
                prop_assert_eq!(acc.stats.unattributed_bytes, 0);
            }
        }
    }

    #[test]
    fn a_flow_lost_in_a_gap_is_settled_exactly() {
        let mut acc = Accountant::new(60_000);
        let mut out = Vec::new();
        acc.set_base(EndedTotals::default());
        acc.established(1, tuple(1), 5, 9, 100, 1, &mut out);
        acc.established(2, tuple(2), 5, 10, 100, 2, &mut out);
        acc.begin_pass();
        let c1 = Counters {
            bytes_in: 10,
            bytes_out: 20,
            packets_in: 1,
            packets_out: 2,
        };
        acc.listed(1, tuple(1), 5, 9, c1, 100, 200, &mut out);
        acc.listed(2, tuple(2), 5, 10, c1, 100, 200, &mut out);
        acc.end_pass(200, &mut out);
        assert!(out.is_empty(), "no timeout yet: {out:?}");
        // Flow 1 ends with more traffic; its event is lost. Flow 2 ends
        // and its event arrives.
        let f1 = Counters {
            bytes_in: 15,
            bytes_out: 40,
            packets_in: 2,
            packets_out: 4,
        };
        let f2 = Counters {
            bytes_in: 11,
            bytes_out: 21,
            packets_in: 2,
            packets_out: 3,
        };
        acc.ended(
            2,
            tuple(2),
            5,
            10,
            f2,
            100,
            300,
            300,
            end_reason::END_OF_FLOW,
            &mut out,
        );
        acc.begin_pass();
        acc.end_pass(400, &mut out);
        acc.snapshot_taken(400);
        let per_process = HashMap::from([(9, f1), (10, f2)]);
        acc.reconcile(
            EndedTotals {
                boundary: 400,
                per_process,
                global: f1.plus(f2),
                flows: HashMap::new(),
            },
            400,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].flow_id, out[0].counters, out[0].reason),
            (2, f2, end_reason::END_OF_FLOW)
        );
        assert_eq!(
            (out[1].flow_id, out[1].counters, out[1].reason),
            (1, f1, end_reason::LACK_OF_RESOURCES)
        );
        assert_eq!(acc.stats.unattributed_bytes, 0);
        assert!(acc.is_empty());
    }

    #[test]
    fn long_flows_are_split_at_the_active_timeout() {
        let mut acc = Accountant::new(60_000);
        let mut out = Vec::new();
        acc.established(1, tuple(1), 5, 9, 0, 1, &mut out);
        let mut c = Counters::default();
        for t in (10_000..=200_000).step_by(10_000) {
            c = c.plus(Counters {
                bytes_in: 7,
                bytes_out: 3,
                packets_in: 1,
                packets_out: 1,
            });
            acc.begin_pass();
            acc.listed(1, tuple(1), 5, 9, c, 0, t, &mut out);
            acc.end_pass(t, &mut out);
        }
        let ends: Vec<(u64, u64)> = out.iter().map(|d| (d.start_ms, d.end_ms)).collect();
        assert_eq!(ends, [(0, 60_000), (60_000, 120_000), (120_000, 180_000)]);
        let fin = c.plus(Counters {
            bytes_in: 1,
            ..Counters::default()
        });
        acc.ended(
            1,
            tuple(1),
            5,
            9,
            fin,
            0,
            201_000,
            201_000,
            end_reason::END_OF_FLOW,
            &mut out,
        );
        let sum = out
            .iter()
            .fold(Counters::default(), |a, d| a.plus(d.counters));
        assert_eq!(sum, fin);
        assert_eq!(
            out.last().map(|d| (d.start_ms, d.reason)),
            Some((180_000, end_reason::END_OF_FLOW))
        );
    }
}
