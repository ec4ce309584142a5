//! The exporter: the driver in, IPFIX and metrics out.
//!
//! It reads the driver (events with a cursor, listing passes,
//! the process table, statistics) through any [`ControlDevice`], keeps the
//! accounting, encodes IPFIX and hands it to a [`Sink`], and renders the
//! metrics. Platform-independent: the Windows service runs it over
//! `DeviceIoControl`, the native test host over the real image's dispatch
//! routine.
//!
//! Driver time (interrupt time, 100 ns since boot) becomes Unix time with
//! the offset measured at each event read (`EventsHeader::now` against the
//! exporter's clock at the same moment).

use std::collections::HashMap;
use std::sync::Arc;

use wfpmon_core::events::{
    EVENT_ENDED, EVENT_ESTABLISHED, EVENT_FLAG_NOT_TRACKED, EVENT_FLAG_UNLOADING, FROM_NOW,
    FlowEvent,
};
use wfpmon_core::protocol::{self, FlowEntry, ListFlowsRequest};
use wfpmonctl::listing::ControlDevice;
use wfpmonctl::listing::client;

use crate::accounting::{Accountant, Counters, Delta, EndedTotals, Tuple};
use crate::config::Config;
use crate::ipfix::{Encoder, Record, Refresh, Templates, end_reason};
use crate::metrics::{Global, Health, Metrics, ProcessTotals, program_name};
use crate::transport::Sink;

/// `ERROR_OPERATION_ABORTED`: a pending read the device cancelled itself
/// (its wait bound, or a stop) — no event, not a failure.
const ERROR_OPERATION_ABORTED: u32 = 995;

/// Why a step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// A pending read was cancelled (wait bound or stop): nothing happened.
    Aborted,
    /// The driver failed a request or answered out of protocol: it is
    /// treated as gone (forced-end records, then reopened).
    Failed(String),
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Aborted => f.write_str("request cancelled"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

fn failed(e: &client::Failure) -> DeviceError {
    if e.win32 == Some(ERROR_OPERATION_ABORTED) {
        DeviceError::Aborted
    } else {
        DeviceError::Failed(e.to_string())
    }
}

/// What is known of a process of the driver's table.
#[derive(Clone, Debug, Default)]
struct Process {
    name: Arc<str>,
    path: Arc<str>,
}

/// The exporter's state.
pub struct Exporter {
    /// Unix time now, in ms (the system clock; the tests' follows the
    /// driver's simulated time).
    clock: Box<dyn Fn() -> u64 + Send>,
    accountant: Accountant,
    encoder: Encoder,
    sink: Option<Box<dyn Sink>>,
    metrics: Metrics,
    /// Driver-wide figures of the last refresh (traffic: the highest yet).
    global: Global,
    processes: HashMap<u64, Process>,
    cursor: u64,
    /// Unix ms minus driver ms.
    offset_ms: i128,
    started: bool,
    need_reconcile: bool,
    pending: Vec<Delta>,
    records: Vec<Record>,
    listing: Vec<u8>,
    /// Own health figures (the transport keeps the rest).
    event_ring_dropped: u64,
    driver_losses: u64,
    /// Events read, listing passes made (for tests and the benchmark).
    pub events_read: u64,
    /// Listing passes.
    pub passes: u64,
    /// Metrics text of the last refresh.
    pub metrics_text: String,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("flows", &self.accountant.len())
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter for `config`, sending to `sink` (`None`: metrics only).
    #[must_use]
    pub fn new(config: &Config, sink: Option<Box<dyn Sink>>) -> Self {
        let (mtu, refresh) = config.collector.as_ref().map_or(
            (
                1400,
                Refresh {
                    interval_ms: 0,
                    messages: 0,
                },
            ),
            |c| {
                (
                    c.mtu,
                    Refresh {
                        interval_ms: u64::try_from(c.template_refresh.as_millis())
                            .unwrap_or(u64::MAX),
                        messages: c.template_refresh_messages,
                    },
                )
            },
        );
        let templates = Templates::new(config.enterprise_number);
        Self {
            clock: Box::new(unix_ms),
            accountant: Accountant::new(
                u64::try_from(config.active_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            encoder: Encoder::new(templates, config.observation_domain_id, mtu, refresh),
            sink,
            metrics: Metrics::new(config.top_programs),
            global: Global::default(),
            processes: HashMap::new(),
            cursor: FROM_NOW,
            offset_ms: 0,
            started: false,
            need_reconcile: false,
            pending: Vec::new(),
            records: Vec::new(),
            listing: vec![0; protocol::flow_list_size(protocol::MAX_FLOWS_PER_CALL).unwrap_or(0)],
            event_ring_dropped: 0,
            driver_losses: 0,
            events_read: 0,
            passes: 0,
            metrics_text: String::new(),
        }
    }

    /// The same exporter on another clock (Unix ms).
    #[must_use]
    pub fn with_clock(mut self, clock: Box<dyn Fn() -> u64 + Send>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The templates-only message for a new TCP connection (its sequence
    /// number is the next data message's).
    #[must_use]
    pub fn template_message_maker(config: &Config) -> crate::transport::TemplateMessage {
        let encoder = Encoder::new(
            Templates::new(config.enterprise_number),
            config.observation_domain_id,
            65_535,
            Refresh {
                interval_ms: 0,
                messages: 0,
            },
        );
        Box::new(move |seq| {
            let mut m = encoder.template_message(unix_ms());
            m[8..12].copy_from_slice(&seq.to_be_bytes());
            m
        })
    }

    /// Flows the exporter tracks.
    #[must_use]
    pub fn flows(&self) -> usize {
        self.accountant.len()
    }

    /// Connected to the driver (started and not lost since)?
    #[must_use]
    pub const fn started(&self) -> bool {
        self.started
    }

    fn wall(&self, driver_time: u64) -> u64 {
        u64::try_from((i128::from(driver_time / 10_000) + self.offset_ms).max(0)).unwrap_or(0)
    }

    /// Connects to the driver: the event cursor (from now), the base of the
    /// ended totals, then a first listing pass (flows already open are
    /// exported from their start).
    ///
    /// # Errors
    /// A failed request.
    pub fn start<D: ControlDevice>(&mut self, dev: &mut D) -> Result<(), DeviceError> {
        let (h, _) = client::read_events(dev, FROM_NOW, false).map_err(|e| failed(&e))?;
        self.cursor = h.next;
        self.offset_ms = i128::from(self.now()) - i128::from(h.now / 10_000);
        let snapshot = self.snapshot(dev)?;
        self.accountant.snapshot_taken(snapshot.boundary);
        self.drain(dev)?;
        self.accountant.set_base(snapshot);
        self.started = true;
        self.need_reconcile = false;
        self.scan(dev)
    }

    /// The driver's ended totals now (and the process names on the way),
    /// with the event boundary they correspond to.
    ///
    /// The driver adds an ending flow to its totals and then publishes its
    /// "ended" event, so every event before the head read *before* the
    /// query is in the totals, and every event from the head read *after*
    /// it is not — except a flow caught between the two steps. The query is
    /// repeated (a few times) until no event was published during it, so
    /// that the two heads agree; under constant churn the last try is kept
    /// and a flow ending during the query may be settled wrongly (README,
    /// "Accounting").
    fn snapshot<D: ControlDevice>(&mut self, dev: &mut D) -> Result<EndedTotals, DeviceError> {
        let head = |dev: &mut D| {
            client::read_events(dev, FROM_NOW, false)
                .map(|(h, _)| h.next)
                .map_err(|e| failed(&e))
        };
        let mut attempt = 0;
        let (stats, header, entries, boundary) = loop {
            attempt += 1;
            let before = head(dev)?;
            let stats = client::query_stats(dev, false).map_err(|e| failed(&e))?;
            let (header, entries) =
                client::list_processes(dev, &mut std::thread::sleep).map_err(|e| failed(&e))?;
            let after = head(dev)?;
            if before == after || attempt == 5 {
                break (stats, header, entries, after);
            }
        };
        let mut per_process = HashMap::new();
        let mut flows = HashMap::from([(0, header.unattributed_flows)]);
        for p in &entries {
            per_process.insert(p.key, Counters::from_array(p.ended));
            flows.insert(p.key, p.flows_total);
            self.remember(p);
        }
        Ok(EndedTotals {
            boundary,
            per_process,
            global: Counters {
                bytes_in: stats.bytes_inbound,
                bytes_out: stats.bytes_outbound,
                packets_in: stats.packets_inbound,
                packets_out: stats.packets_outbound,
            },
            flows,
        })
    }

    fn remember(&mut self, p: &protocol::ProcessEntry) {
        let units = usize::from(p.path_units).min(p.path.len());
        let path = String::from_utf16_lossy(&p.path[..units]);
        let name = program_name(&path).to_owned();
        self.processes.insert(
            p.key,
            Process {
                name: name.into(),
                path: path.into(),
            },
        );
    }

    /// Reads one batch of events (with `wait`, a pending read) and accounts
    /// for them; returns how many.
    ///
    /// # Errors
    /// A failed request ([`DeviceError::Aborted`] when the pending read
    /// was cancelled).
    pub fn poll<D: ControlDevice>(
        &mut self,
        dev: &mut D,
        wait: bool,
    ) -> Result<usize, DeviceError> {
        let (h, events) = client::read_events(dev, self.cursor, wait).map_err(|e| failed(&e))?;
        self.offset_ms = i128::from(self.now()) - i128::from(h.now / 10_000);
        if h.dropped > 0 {
            self.event_ring_dropped += h.dropped;
            self.need_reconcile = true;
        }
        for ev in &events {
            self.event(ev);
        }
        self.events_read += events.len() as u64;
        self.cursor = h.next;
        Ok(events.len())
    }

    /// Reads events until none is left (bounded).
    ///
    /// # Errors
    /// A failed request.
    pub fn drain<D: ControlDevice>(&mut self, dev: &mut D) -> Result<(), DeviceError> {
        for _ in 0..4096 {
            if self.poll(dev, false)? == 0 {
                break;
            }
        }
        Ok(())
    }

    fn event(&mut self, ev: &FlowEvent) {
        let tuple = Tuple {
            v6: ev.address_family == 23,
            local: ev.local_address,
            remote: ev.remote_address,
            local_port: ev.local_port,
            remote_port: ev.remote_port,
            protocol: ev.ip_protocol,
            inbound: ev.direction == 1,
        };
        let pid = ev.process_id;
        let start = self.wall(ev.established);
        match ev.kind {
            EVENT_ESTABLISHED if ev.flags & EVENT_FLAG_NOT_TRACKED == 0 => {
                self.accountant.established(
                    ev.flow_id,
                    tuple,
                    pid,
                    ev.process_key,
                    start,
                    ev.seq,
                    &mut self.pending,
                );
            }
            EVENT_ENDED => {
                let fin = Counters {
                    bytes_in: ev.bytes_inbound,
                    bytes_out: ev.bytes_outbound,
                    packets_in: ev.packets_inbound,
                    packets_out: ev.packets_outbound,
                };
                let reason = if ev.flags & EVENT_FLAG_UNLOADING == 0 {
                    end_reason::END_OF_FLOW
                } else {
                    end_reason::FORCED_END
                };
                let end = self.wall(ev.time);
                self.accountant.ended(
                    ev.flow_id,
                    tuple,
                    pid,
                    ev.process_key,
                    fin,
                    start,
                    end,
                    ev.seq,
                    reason,
                    &mut self.pending,
                );
            }
            _ => {}
        }
    }

    /// A listing pass (active-timeout deltas), and after lost events the
    /// reconciliation.
    ///
    /// # Errors
    /// A failed request.
    pub fn scan<D: ControlDevice>(&mut self, dev: &mut D) -> Result<(), DeviceError> {
        let reconcile = self.need_reconcile;
        if reconcile {
            self.drain(dev)?;
        }
        self.accountant.begin_pass();
        let mut cursor = (0, 0);
        loop {
            // A pass over many flows takes a while: each batch's ages are
            // taken against the time of that batch.
            let batch_ms = self.now();
            let request = ListFlowsRequest::resume(0, cursor.0, cursor.1).to_bytes();
            let n = dev
                .ioctl(
                    protocol::IOCTL_WFPMON_LIST_FLOWS,
                    &request,
                    &mut self.listing,
                )
                .map_err(|e| DeviceError::Failed(format!("IOCTL_WFPMON_LIST_FLOWS: {e:?}")))?;
            let listing = std::mem::take(&mut self.listing);
            let result = protocol::decode_flow_list(&listing[..n.min(listing.len())]).map(
                |(header, entries)| {
                    for e in entries {
                        self.listed(&e, batch_ms);
                    }
                    header
                },
            );
            self.listing = listing;
            let header =
                result.map_err(|e| DeviceError::Failed(format!("LIST_FLOWS answer: {e:?}")))?;
            if header.flags & protocol::FLOW_LIST_MORE == 0 {
                break;
            }
            let next = (header.next_bucket, header.next_seq);
            if header.returned == 0 && next == cursor {
                return Err(DeviceError::Failed("LIST_FLOWS makes no progress".into()));
            }
            cursor = next;
        }
        self.passes += 1;
        self.accountant.end_pass(self.now(), &mut self.pending);
        if reconcile {
            self.drain(dev)?;
            let snapshot = self.snapshot(dev)?;
            self.accountant.snapshot_taken(snapshot.boundary);
            self.drain(dev)?;
            let now = self.now();
            self.accountant.reconcile(snapshot, now, &mut self.pending);
            self.need_reconcile = false;
        }
        Ok(())
    }

    fn listed(&mut self, e: &FlowEntry, now_ms: u64) {
        let tuple = Tuple {
            v6: e.address_family == 23,
            local: e.local_address,
            remote: e.remote_address,
            local_port: e.local_port,
            remote_port: e.remote_port,
            protocol: e.ip_protocol,
            inbound: e.direction == 1,
        };
        let counters = Counters {
            bytes_in: e.bytes_inbound,
            bytes_out: e.bytes_outbound,
            packets_in: e.packets_inbound,
            packets_out: e.packets_outbound,
        };
        let pid = u32::try_from(e.process_id).unwrap_or(u32::MAX);
        self.accountant.listed(
            e.flow_id,
            tuple,
            pid,
            e.process_key,
            counters,
            now_ms.saturating_sub(e.age_ms),
            now_ms,
            &mut self.pending,
        );
    }

    /// The driver went away: every flow ends now (forced end); the exporter
    /// starts again with [`Exporter::start`] once the driver is back.
    pub fn driver_lost(&mut self) {
        let now_ms = self.now();
        if self.started {
            self.accountant
                .end_all(now_ms, end_reason::FORCED_END, &mut self.pending);
            self.driver_losses += 1;
        }
        self.started = false;
        self.need_reconcile = false;
        self.cursor = FROM_NOW;
        self.metrics.forget_processes();
        // The next driver instance counts from zero (a counter reset).
        self.global = Global::default();
    }

    /// The exporter stops: every flow ends now (forced end).
    pub fn stop(&mut self) {
        let now_ms = self.now();
        self.accountant
            .end_all(now_ms, end_reason::FORCED_END, &mut self.pending);
        self.started = false;
    }

    /// `key` names a process (0: none) whose name the exporter has not
    /// learnt yet.
    fn unnamed(&self, key: u64) -> bool {
        key != 0 && !self.processes.contains_key(&key)
    }

    /// Learns the names of the driver's processes (one `LIST_PROCESSES`,
    /// which walks every flow once per page of 64 processes: asked only
    /// for a process [`Exporter::unnamed`]). A failure leaves the names
    /// unknown; the next call asks again.
    fn learn_names<D: ControlDevice>(&mut self, dev: &mut D) {
        if let Ok((_, entries)) = client::list_processes(dev, &mut std::thread::sleep) {
            for p in &entries {
                self.remember(p);
            }
        }
    }

    /// Encodes the pending deltas and sends them. Process names unknown so
    /// far are asked of the driver first (one `LIST_PROCESSES` walk).
    pub fn flush<D: ControlDevice>(&mut self, dev: Option<&mut D>) -> usize {
        let now_ms = self.now();
        if self.pending.is_empty() {
            return 0;
        }
        if let Some(dev) = dev
            && self.pending.iter().any(|d| self.unnamed(d.process_key))
        {
            self.learn_names(dev);
        }
        let pending = std::mem::take(&mut self.pending);
        self.records.clear();
        for d in &pending {
            let p = self
                .processes
                .get(&d.process_key)
                .cloned()
                .unwrap_or_default();
            self.records.push(record_of(d, &p.name, &p.path));
        }
        let n = self.records.len();
        if let Some(sink) = self.sink.as_mut() {
            if sink.templates_lost() {
                self.encoder.templates_lost();
            }
            let mut out = Vec::new();
            self.encoder
                .encode(&self.records, now_ms, sink.templates_inline(), &mut out);
            sink.send(out);
        }
        self.pending = pending;
        self.pending.clear();
        n
    }

    /// Waits up to `timeout` for the transport's queue to empty.
    pub fn drain_sink(&mut self, timeout: std::time::Duration) -> bool {
        self.sink.as_mut().is_none_or(|s| s.drain(timeout))
    }

    /// The health figures now.
    #[must_use]
    pub fn health(&self) -> Health {
        let mut h = Health {
            event_ring_dropped: self.event_ring_dropped,
            reconciled_flows: self.accountant.stats.reconciled_flows,
            unattributed_bytes: self.accountant.stats.unattributed_bytes,
            driver_up: self.started,
            driver_losses: self.driver_losses,
            collector_up: true,
            ..Health::default()
        };
        if let Some(s) = &self.sink {
            use std::sync::atomic::Ordering::Relaxed;
            let c = s.counters();
            h.records_sent = c.records_sent.load(Relaxed);
            h.messages_sent = c.messages_sent.load(Relaxed);
            h.messages_dropped = c.messages_dropped.load(Relaxed);
            h.records_dropped = c.records_dropped.load(Relaxed);
            h.collector_errors = c.errors.load(Relaxed);
            h.queue_length = c.queued.load(Relaxed);
            h.collector_up = c.up.load(Relaxed);
        }
        h
    }

    /// Refreshes the metrics and returns the text (also kept in
    /// [`Exporter::metrics_text`]). Without the driver, the last figures
    /// with the current health.
    ///
    /// No request here walks the driver's flows, so a refresh costs the
    /// same at any number of flows (README, "Prometheus metrics"): the
    /// driver is asked only for its walk-free statistics (`QUERY_STATS`
    /// without `STATS_LIVE_TRAFFIC`: flow counts), and the traffic is the
    /// exporter's own account ([`Accountant::total_traffic`],
    /// [`Accountant::processes`]): the driver's ended totals at the last
    /// snapshot, the final counters of every "ended" event read since, and
    /// each live flow's counters from the last listing pass — kept up to
    /// date flow by flow, never summed here. `LIST_PROCESSES` (which walks
    /// every flow once per page of 64 processes) is asked only when a
    /// process the exporter has no name for yet has flows, as
    /// [`Exporter::flush`] does.
    pub fn refresh_metrics<D: ControlDevice>(&mut self, dev: Option<&mut D>) -> &str {
        if let Some(dev) = dev
            && let Ok(stats) = client::query_stats(dev, false)
        {
            let view = self.accountant.processes();
            if view.keys().any(|k| self.unnamed(*k)) {
                self.learn_names(dev);
            }
            // Monotonic counters. Every part of the account is a part of the
            // driver's true total at this moment or less (ended totals of a
            // driver snapshot, final counters of flows ended since, live
            // counters as of the last pass), so it never exceeds the truth,
            // and equals it once the events are read and a pass has listed
            // the live flows. It can still fall back for a while: a flow
            // whose end was lost with overwritten events leaves the live
            // figures when the engine reuses its handle, before the
            // reconciliation adds it to the ended totals. A Prometheus
            // counter that goes down reads as a reset (`rate()` would count
            // the whole value again), so the highest value is kept — still
            // never above the truth, which only grows. A new driver instance
            // starts from zero: a real counter reset.
            let traffic = self.accountant.total_traffic();
            let g = &mut self.global;
            g.traffic = Counters {
                bytes_in: g.traffic.bytes_in.max(traffic.bytes_in),
                bytes_out: g.traffic.bytes_out.max(traffic.bytes_out),
                packets_in: g.traffic.packets_in.max(traffic.packets_in),
                packets_out: g.traffic.packets_out.max(traffic.packets_out),
            };
            g.flows = stats.flows_tracked;
            g.active_flows = stats.flows_active;
            g.unattributed_flows = g
                .unattributed_flows
                .max(view.get(&0).map_or(0, |v| v.flows));
            let mut totals = Vec::with_capacity(view.len());
            for (key, v) in &view {
                if *key == 0 {
                    continue; // no process: in no program's figures
                }
                let name = self
                    .processes
                    .get(key)
                    .map(|x| x.name.to_string())
                    .unwrap_or_default();
                totals.push(ProcessTotals {
                    key: *key,
                    program: name,
                    traffic: v.traffic,
                    flows: v.flows,
                    active_flows: v.active_flows,
                });
            }
            totals.sort_by_key(|t| t.key);
            self.metrics.update(&totals);
        }
        self.metrics_text = self.metrics.render(&self.global, &self.health());
        &self.metrics_text
    }
}

/// A delta as an IPFIX biflow record: the initiator is the source.
#[must_use]
pub fn record_of(d: &Delta, name: &str, path: &str) -> Record {
    let t = &d.tuple;
    let c = &d.counters;
    let (source, destination, sp, dp, fwd, rev) = if t.inbound {
        (
            t.remote,
            t.local,
            t.remote_port,
            t.local_port,
            (c.bytes_in, c.packets_in),
            (c.bytes_out, c.packets_out),
        )
    } else {
        (
            t.local,
            t.remote,
            t.local_port,
            t.remote_port,
            (c.bytes_out, c.packets_out),
            (c.bytes_in, c.packets_in),
        )
    };
    Record {
        flow_id: d.flow_id,
        v6: t.v6,
        source,
        destination,
        source_port: sp,
        destination_port: dp,
        protocol: t.protocol,
        direction: u8::from(!t.inbound),
        octets: fwd.0,
        packets: fwd.1,
        reverse_octets: rev.0,
        reverse_packets: rev.1,
        start_ms: d.start_ms,
        end_ms: d.end_ms,
        end_reason: d.reason,
        pid: d.pid,
        app_name: name.to_owned(),
        app_path: path.to_owned(),
    }
}

/// Unix time now, in ms.
#[must_use]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The direction-neutral view used by [`ipfix`]'s decoder users: bytes and
/// packets (local → remote, remote → local) of a decoded record.
#[must_use]
pub const fn local_view(r: &Record) -> (u64, u64, u64, u64) {
    // direction 1 (egress): the source is local; its forward counts are
    // bytes out.
    if r.direction == 1 {
        (r.reverse_octets, r.octets, r.reverse_packets, r.packets)
    } else {
        (r.octets, r.reverse_octets, r.packets, r.reverse_packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biflow_orientation_follows_the_initiator() {
        let d = Delta {
            flow_id: 1,
            tuple: Tuple {
                v6: false,
                local: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                remote: [192, 168, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                local_port: 5000,
                remote_port: 443,
                protocol: 6,
                inbound: true,
            },
            pid: 4,
            process_key: 1,
            counters: Counters {
                bytes_in: 100,
                bytes_out: 7,
                packets_in: 2,
                packets_out: 1,
            },
            start_ms: 1,
            end_ms: 2,
            reason: end_reason::END_OF_FLOW,
        };
        let r = record_of(&d, "a.exe", "\\a.exe");
        // Inbound: the remote peer initiated, so it is the source and its
        // traffic (our bytes in) is the forward count; flowDirection ingress.
        assert_eq!(
            (
                r.source[0],
                r.source_port,
                r.octets,
                r.reverse_octets,
                r.direction
            ),
            (192, 443, 100, 7, 0)
        );
        assert_eq!(local_view(&r), (100, 7, 2, 1));
        let out = record_of(
            &Delta {
                tuple: Tuple {
                    inbound: false,
                    ..d.tuple
                },
                ..d
            },
            "",
            "",
        );
        assert_eq!(
            (
                out.source[0],
                out.source_port,
                out.octets,
                out.reverse_octets,
                out.direction
            ),
            (10, 5000, 7, 100, 1)
        );
        assert_eq!(local_view(&out), (100, 7, 2, 1));
    }

    /// A fake driver on the control protocol: live flows of one process,
    /// ended totals, no events; it records what it was asked.
    struct FakeDriver {
        live: Vec<FlowEntry>,
        ended: Counters,
        /// `QUERY_STATS` flags asked, in order.
        stats_flags: Vec<u32>,
        process_lists: usize,
    }

    const KEY: u64 = 1 << 32 | 3;

    impl FakeDriver {
        fn new(flows: u64) -> Self {
            let live = (0..flows)
                .map(|i| FlowEntry {
                    flow_id: 100 + i,
                    process_id: 42,
                    age_ms: 5,
                    bytes_inbound: 1000 + i,
                    bytes_outbound: 10 + i,
                    packets_inbound: 3,
                    packets_outbound: 1,
                    local_address: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    remote_address: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    local_port: u16::try_from(5000 + i).unwrap(),
                    remote_port: 443,
                    address_family: 2,
                    ip_protocol: 6,
                    direction: 0,
                    process_key: KEY,
                })
                .collect();
            Self {
                live,
                ended: Counters {
                    bytes_in: 70_000,
                    bytes_out: 8_000,
                    packets_in: 90,
                    packets_out: 40,
                },
                stats_flags: Vec::new(),
                process_lists: 0,
            }
        }

        fn live_traffic(&self) -> Counters {
            self.live.iter().fold(Counters::default(), |a, e| {
                a.plus(Counters {
                    bytes_in: e.bytes_inbound,
                    bytes_out: e.bytes_outbound,
                    packets_in: e.packets_inbound,
                    packets_out: e.packets_outbound,
                })
            })
        }
    }

    fn header(size: usize) -> protocol::Header {
        protocol::Header {
            version: protocol::PROTOCOL_VERSION,
            size: u32::try_from(size).unwrap(),
        }
    }

    impl ControlDevice for FakeDriver {
        fn ioctl(
            &mut self,
            code: u32,
            input: &[u8],
            output: &mut [u8],
        ) -> Result<usize, wfpmonctl::listing::IoctlError> {
            match code {
                protocol::IOCTL_WFPMON_READ_EVENTS => Ok(protocol::EventsHeader {
                    header: header(protocol::EventsHeader::SIZE),
                    returned: 0,
                    event_size: u32::try_from(FlowEvent::SIZE).unwrap(),
                    next: 7,
                    dropped: 0,
                    oldest: 0,
                    now: 10_000_000,
                }
                .encode(output)),
                protocol::IOCTL_WFPMON_QUERY_STATS => {
                    let flags = u32::from_le_bytes(input[8..12].try_into().unwrap());
                    self.stats_flags.push(flags);
                    let t = if flags & protocol::STATS_LIVE_TRAFFIC == 0 {
                        self.ended
                    } else {
                        self.ended.plus(self.live_traffic())
                    };
                    Ok(protocol::Stats {
                        header: header(protocol::Stats::SIZE),
                        counting_enabled: 1,
                        flags: flags & protocol::STATS_LIVE_TRAFFIC,
                        flows_active: self.live.len() as u64,
                        flows_tracked: self.live.len() as u64 + 9,
                        flows_deleted: 9,
                        bytes_inbound: t.bytes_in,
                        bytes_outbound: t.bytes_out,
                        packets_inbound: t.packets_in,
                        packets_outbound: t.packets_out,
                        ..protocol::Stats::default()
                    }
                    .encode(output))
                }
                protocol::IOCTL_WFPMON_LIST_PROCESSES => {
                    self.process_lists += 1;
                    let path: Vec<u16> = "\\device\\harddiskvolume3\\app.exe"
                        .encode_utf16()
                        .collect();
                    let mut p = protocol::ProcessEntry {
                        key: KEY,
                        process_id: 42,
                        flags: 0,
                        path_units: u16::try_from(path.len()).unwrap(),
                        active_flows: u32::try_from(self.live.len()).unwrap(),
                        reserved: 0,
                        flows_total: self.live.len() as u64 + 9,
                        first_seen: 0,
                        last_seen: 0,
                        active: [0; 4],
                        ended: [
                            self.ended.bytes_in,
                            self.ended.bytes_out,
                            self.ended.packets_in,
                            self.ended.packets_out,
                        ],
                        path: [0; wfpmon_core::process::PATH_UNITS],
                    };
                    p.path[..path.len()].copy_from_slice(&path);
                    let size = protocol::ProcessListHeader::SIZE + protocol::ProcessEntry::SIZE;
                    protocol::ProcessListHeader {
                        header: header(size),
                        returned: 1,
                        entry_size: u32::try_from(protocol::ProcessEntry::SIZE).unwrap(),
                        capacity: 1024,
                        ..protocol::ProcessListHeader::default()
                    }
                    .encode(output);
                    p.encode(&mut output[protocol::ProcessListHeader::SIZE..]);
                    Ok(size)
                }
                protocol::IOCTL_WFPMON_LIST_FLOWS => {
                    let size = protocol::FlowListHeader::SIZE + self.live.len() * FlowEntry::SIZE;
                    protocol::FlowListHeader {
                        header: header(size),
                        total_flows: u32::try_from(self.live.len()).unwrap(),
                        returned: u32::try_from(self.live.len()).unwrap(),
                        entry_size: u32::try_from(FlowEntry::SIZE).unwrap(),
                        ..protocol::FlowListHeader::default()
                    }
                    .encode(output);
                    for (i, e) in self.live.iter().enumerate() {
                        e.encode(
                            &mut output[protocol::FlowListHeader::SIZE + i * FlowEntry::SIZE..],
                        );
                    }
                    Ok(size)
                }
                _ => Err(wfpmonctl::listing::IoctlError::win32(1)),
            }
        }
    }

    fn value(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} in {text}"))
    }

    /// The metrics refresh never asks the driver to walk its flows
    /// (`STATS_LIVE_TRAFFIC`), nor for the process table once every
    /// process is named; its traffic is still the driver's exact total
    /// (ended + live) after a listing pass, driver-wide and per program.
    #[test]
    fn metrics_refresh_asks_for_no_walk_and_gives_the_driver_totals() {
        let config = crate::config::parse("[metrics]\nlisten = \"9653\"\n", &|_| Ok(Vec::new()))
            .expect("configuration");
        let mut dev = FakeDriver::new(5);
        let mut exporter = Exporter::new(&config, None);
        exporter.start(&mut dev).expect("start");
        let lists_after_start = dev.process_lists;
        for round in 0..3u64 {
            for e in &mut dev.live {
                e.bytes_inbound += 100 * round;
                e.packets_outbound += round;
            }
            exporter.scan(&mut dev).expect("listing pass");
            dev.stats_flags.clear();
            let text = exporter.refresh_metrics(Some(&mut dev)).to_owned();
            assert!(!dev.stats_flags.is_empty(), "statistics asked");
            assert!(
                dev.stats_flags
                    .iter()
                    .all(|f| f & protocol::STATS_LIVE_TRAFFIC == 0),
                "the refresh asked for the walk: {:?}",
                dev.stats_flags
            );
            let truth = dev.ended.plus(dev.live_traffic());
            assert_eq!(
                value(&text, "wfpmon_bytes_total{direction=\"in\"}"),
                truth.bytes_in
            );
            assert_eq!(
                value(&text, "wfpmon_packets_total{direction=\"out\"}"),
                truth.packets_out
            );
            assert_eq!(
                value(
                    &text,
                    "wfpmon_process_bytes_total{direction=\"in\",process=\"app.exe\"}"
                ),
                truth.bytes_in
            );
            assert_eq!(
                value(&text, "wfpmon_process_flows_total{process=\"app.exe\"}"),
                14
            );
            assert_eq!(
                value(&text, "wfpmon_process_active_flows{process=\"app.exe\"}"),
                5
            );
            assert_eq!(value(&text, "wfpmon_active_flows"), 5);
        }
        assert_eq!(
            dev.process_lists, lists_after_start,
            "the process table (a walk) was asked again though every process was named"
        );
    }
}
