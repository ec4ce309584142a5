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
        let (stats, entries, boundary) = loop {
            attempt += 1;
            let before = head(dev)?;
            let stats = client::query_stats(dev, false).map_err(|e| failed(&e))?;
            let (_, entries) =
                client::list_processes(dev, &mut std::thread::sleep).map_err(|e| failed(&e))?;
            let after = head(dev)?;
            if before == after || attempt == 5 {
                break (stats, entries, after);
            }
        };
        let mut per_process = HashMap::new();
        for p in &entries {
            per_process.insert(p.key, Counters::from_array(p.ended));
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
    }

    /// The exporter stops: every flow ends now (forced end).
    pub fn stop(&mut self) {
        let now_ms = self.now();
        self.accountant
            .end_all(now_ms, end_reason::FORCED_END, &mut self.pending);
        self.started = false;
    }

    /// Encodes the pending deltas and sends them. Process names unknown so
    /// far are asked of the driver first (one `LIST_PROCESSES` walk).
    pub fn flush<D: ControlDevice>(&mut self, dev: Option<&mut D>) -> usize {
        let now_ms = self.now();
        if self.pending.is_empty() {
            return 0;
        }
        if let Some(dev) = dev
            && self
                .pending
                .iter()
                .any(|d| d.process_key != 0 && !self.processes.contains_key(&d.process_key))
            && let Ok((_, entries)) = client::list_processes(dev, &mut std::thread::sleep)
        {
            for p in &entries {
                self.remember(p);
            }
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

    /// Refreshes the metrics from the driver (statistics with live traffic,
    /// the process table) and returns the text (also kept in
    /// [`Exporter::metrics_text`]). Without the driver, the last figures
    /// with the current health.
    pub fn refresh_metrics<D: ControlDevice>(&mut self, dev: Option<&mut D>) -> &str {
        let mut global = Global::default();
        if let Some(dev) = dev
            && let (Ok(stats), Ok((header, entries))) = (
                client::query_stats(dev, true),
                client::list_processes(dev, &mut std::thread::sleep),
            )
        {
            global = Global {
                traffic: Counters {
                    bytes_in: stats.bytes_inbound,
                    bytes_out: stats.bytes_outbound,
                    packets_in: stats.packets_inbound,
                    packets_out: stats.packets_outbound,
                },
                flows: stats.flows_tracked,
                active_flows: stats.flows_active,
                unattributed_flows: header.unattributed_flows,
            };
            let mut totals = Vec::with_capacity(entries.len());
            for p in &entries {
                self.remember(p);
                let name = self
                    .processes
                    .get(&p.key)
                    .map(|x| x.name.to_string())
                    .unwrap_or_default();
                totals.push(ProcessTotals {
                    key: p.key,
                    program: name,
                    traffic: Counters::from_array(p.active).plus(Counters::from_array(p.ended)),
                    flows: p.flows_total,
                    active_flows: u64::from(p.active_flows),
                });
            }
            self.metrics.update(&totals);
        }
        self.metrics_text = self.metrics.render(&global, &self.health());
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
}
