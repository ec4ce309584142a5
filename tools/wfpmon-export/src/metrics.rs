//! Prometheus metrics: the text exposition format (version 0.0.4), written
//! atomically for `windows_exporter`'s textfile collector and optionally
//! served on a local port.
//!
//! Per-program counters add up per-process totals (traffic of active and
//! ended flows, from the exporter's own account: see
//! `Exporter::refresh_metrics`) by image file name. They
//! never go down: a process's contribution is kept after its entry leaves
//! the driver's table, and a program keeps the label it was given. Label
//! cardinality is bounded: the first `top` programs by traffic (when labels
//! are handed out) get their own label, everything else is `other`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::accounting::Counters;

/// The exporter's own health counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// IPFIX data records handed to the transport and sent.
    pub records_sent: u64,
    /// IPFIX messages sent.
    pub messages_sent: u64,
    /// Messages dropped (TCP queue full, or a UDP send failed).
    pub messages_dropped: u64,
    /// Data records in dropped messages.
    pub records_dropped: u64,
    /// Failed sends and connection attempts.
    pub collector_errors: u64,
    /// Events the driver's ring overwrote before they were read.
    pub event_ring_dropped: u64,
    /// Flows settled from the listing after events were lost.
    pub reconciled_flows: u64,
    /// Ended-flow bytes no record could carry (see `accounting`).
    pub unattributed_bytes: u64,
    /// 1 while the driver's control device answers.
    pub driver_up: bool,
    /// Times the driver went away (then came back or not).
    pub driver_losses: u64,
    /// Messages waiting in the TCP queue.
    pub queue_length: u64,
    /// 1 while the TCP connection is up (always 1 for UDP).
    pub collector_up: bool,
}

/// One process of the driver's table, as the metrics need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessTotals {
    /// Process key (unique per process instance).
    pub key: u64,
    /// Image file name ("" unknown).
    pub program: String,
    /// Active + ended traffic.
    pub traffic: Counters,
    /// Flows ever.
    pub flows: u64,
    /// Flows active.
    pub active_flows: u64,
}

/// Driver-wide figures (traffic: the exporter's account, no walk; flow
/// counts: the walk-free `QUERY_STATS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Global {
    /// Traffic of every flow, active or ended, since the driver started.
    pub traffic: Counters,
    /// Flows tracked since the driver started.
    pub flows: u64,
    /// Flows active.
    pub active_flows: u64,
    /// Flows the driver tracks without a process (a shard of its process
    /// table was full of active processes): their traffic is in the
    /// driver-wide counters, not in any program's.
    pub unattributed_flows: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Program {
    traffic: Counters,
    flows: u64,
    active_flows: u64,
}

/// Aggregation state across refreshes.
#[derive(Debug, Default)]
pub struct Metrics {
    top: usize,
    /// Last totals seen per process key.
    last: HashMap<u64, (Counters, u64)>,
    /// Label → accumulated figures.
    programs: HashMap<String, Program>,
    /// Program name → label (itself, or `other`).
    labels: HashMap<String, String>,
}

/// The label of everything beyond the top programs.
pub const OTHER: &str = "other";

impl Metrics {
    /// At most `top` programs get a label of their own.
    #[must_use]
    pub fn new(top: usize) -> Self {
        Self {
            top,
            ..Self::default()
        }
    }

    fn label(
        &self,
        program: &str,
        weight: u64,
        pending: &mut Vec<(u64, String)>,
    ) -> Option<String> {
        if let Some(l) = self.labels.get(program) {
            return Some(l.clone());
        }
        pending.push((weight, program.to_owned()));
        None
    }

    /// The driver went away: its process keys mean nothing any more (the
    /// accumulated figures stay).
    pub fn forget_processes(&mut self) {
        self.last.clear();
    }

    /// Takes in the driver's process table now.
    pub fn update(&mut self, processes: &[ProcessTotals]) {
        // New programs get labels in order of traffic, largest first.
        let mut pending = Vec::new();
        for p in processes {
            let name = if p.program.is_empty() {
                "unknown"
            } else {
                &p.program
            };
            let _ = self.label(name, p.traffic.bytes_in + p.traffic.bytes_out, &mut pending);
        }
        pending.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, name) in pending {
            if self.labels.contains_key(&name) {
                continue;
            }
            let own = self.labels.values().filter(|l| l.as_str() != OTHER).count() < self.top;
            let label = if own { name.clone() } else { OTHER.to_owned() };
            self.labels.insert(name, label);
        }
        for prog in self.programs.values_mut() {
            prog.active_flows = 0;
        }
        for p in processes {
            let name = if p.program.is_empty() {
                "unknown"
            } else {
                &p.program
            };
            let label = self
                .labels
                .get(name)
                .cloned()
                .unwrap_or_else(|| OTHER.to_owned());
            let (last, last_flows) = self.last.get(&p.key).copied().unwrap_or_default();
            let prog = self.programs.entry(label).or_default();
            // Only growth beyond the highest figure yet is added, and that
            // figure is kept: a process's figures that fall back for a
            // while (see `Exporter::refresh_metrics`) add nothing twice.
            let grown = p.traffic.minus(last);
            prog.traffic = prog.traffic.plus(grown);
            prog.flows += p.flows.saturating_sub(last_flows);
            prog.active_flows += p.active_flows;
            self.last
                .insert(p.key, (last.plus(grown), last_flows.max(p.flows)));
        }
    }

    /// The exposition text.
    #[must_use]
    pub fn render(&self, global: &Global, health: &Health) -> String {
        let mut t = String::with_capacity(4096);
        let g = &global.traffic;
        family(
            &mut t,
            "wfpmon_bytes_total",
            "counter",
            "Payload bytes of every flow the driver tracked, by direction.",
        );
        by_direction(&mut t, "wfpmon_bytes_total", "", (g.bytes_in, g.bytes_out));
        family(
            &mut t,
            "wfpmon_packets_total",
            "counter",
            "Packets (datagrams or stream indications) of every tracked flow, by direction.",
        );
        by_direction(
            &mut t,
            "wfpmon_packets_total",
            "",
            (g.packets_in, g.packets_out),
        );
        family(
            &mut t,
            "wfpmon_flows_total",
            "counter",
            "Flows tracked since the driver started.",
        );
        let _ = writeln!(t, "wfpmon_flows_total {}", global.flows);
        family(&mut t, "wfpmon_active_flows", "gauge", "Flows tracked now.");
        let _ = writeln!(t, "wfpmon_active_flows {}", global.active_flows);
        family(
            &mut t,
            "wfpmon_unattributed_flows_total",
            "counter",
            "Flows tracked without a process (the driver's process table was full); their traffic is in no program's counters.",
        );
        let _ = writeln!(
            t,
            "wfpmon_unattributed_flows_total {}",
            global.unattributed_flows
        );

        let mut names: Vec<&String> = self.programs.keys().collect();
        names.sort();
        family(
            &mut t,
            "wfpmon_process_bytes_total",
            "counter",
            "Payload bytes by program (image file name; the top programs, then other) and direction.",
        );
        for n in &names {
            let p = &self.programs[*n].traffic;
            let process = format!(",process=\"{}\"", escape(n));
            by_direction(
                &mut t,
                "wfpmon_process_bytes_total",
                &process,
                (p.bytes_in, p.bytes_out),
            );
        }
        family(
            &mut t,
            "wfpmon_process_packets_total",
            "counter",
            "Packets by program and direction.",
        );
        for n in &names {
            let p = &self.programs[*n].traffic;
            let process = format!(",process=\"{}\"", escape(n));
            by_direction(
                &mut t,
                "wfpmon_process_packets_total",
                &process,
                (p.packets_in, p.packets_out),
            );
        }
        family(
            &mut t,
            "wfpmon_process_flows_total",
            "counter",
            "Flows by program.",
        );
        for n in &names {
            let _ = writeln!(
                t,
                "wfpmon_process_flows_total{{process=\"{}\"}} {}",
                escape(n),
                self.programs[*n].flows
            );
        }
        family(
            &mut t,
            "wfpmon_process_active_flows",
            "gauge",
            "Active flows by program.",
        );
        for n in &names {
            let _ = writeln!(
                t,
                "wfpmon_process_active_flows{{process=\"{}\"}} {}",
                escape(n),
                self.programs[*n].active_flows
            );
        }

        let h = health;
        let counters: [(&str, &str, u64); 8] = [
            (
                "wfpmon_export_records_total",
                "IPFIX data records sent.",
                h.records_sent,
            ),
            (
                "wfpmon_export_messages_total",
                "IPFIX messages sent.",
                h.messages_sent,
            ),
            (
                "wfpmon_export_dropped_messages_total",
                "IPFIX messages dropped (TCP queue full, or a failed UDP send).",
                h.messages_dropped,
            ),
            (
                "wfpmon_export_dropped_records_total",
                "IPFIX data records in dropped messages.",
                h.records_dropped,
            ),
            (
                "wfpmon_export_collector_errors_total",
                "Failed sends and connection attempts to the collector.",
                h.collector_errors,
            ),
            (
                "wfpmon_export_event_ring_dropped_total",
                "Flow events the driver's ring overwrote before they were read.",
                h.event_ring_dropped,
            ),
            (
                "wfpmon_export_reconciled_flows_total",
                "Flows whose end was learnt from the listing after events were lost.",
                h.reconciled_flows,
            ),
            (
                "wfpmon_export_unattributed_bytes_total",
                "Ended-flow bytes no IPFIX record could carry (flows that began and ended while events were lost).",
                h.unattributed_bytes,
            ),
        ];
        for (name, help, v) in counters {
            family(&mut t, name, "counter", help);
            let _ = writeln!(t, "{name} {v}");
        }
        let gauges: [(&str, &str, u64); 4] = [
            (
                "wfpmon_export_driver_up",
                "1 while the driver's control device answers.",
                u64::from(h.driver_up),
            ),
            (
                "wfpmon_export_collector_up",
                "1 while the collector is reachable (TCP connected; always 1 for UDP).",
                u64::from(h.collector_up),
            ),
            (
                "wfpmon_export_queue_messages",
                "IPFIX messages waiting in the TCP queue.",
                h.queue_length,
            ),
            (
                "wfpmon_export_driver_losses_total",
                "Times the driver went away.",
                h.driver_losses,
            ),
        ];
        for (name, help, v) in gauges {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            family(&mut t, name, kind, help);
            let _ = writeln!(t, "{name} {v}");
        }
        t
    }
}

fn family(t: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(t, "# HELP {name} {help}");
    let _ = writeln!(t, "# TYPE {name} {kind}");
}

/// One sample per direction: `name{direction="in"<more>} in`, then "out";
/// `more` is further labels, each with its leading comma (or empty).
fn by_direction(t: &mut String, name: &str, more: &str, (inbound, outbound): (u64, u64)) {
    let _ = writeln!(t, "{name}{{direction=\"in\"{more}}} {inbound}");
    let _ = writeln!(t, "{name}{{direction=\"out\"{more}}} {outbound}");
}

/// A label value escaped as the exposition format requires.
#[must_use]
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The file name of an image path (`\Device\HarddiskVolume3\x\chrome.exe` →
/// `chrome.exe`).
#[must_use]
pub fn program_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

/// Writes `text` to `dir/name` atomically: a temporary file in the same
/// directory (not ending in `.prom`, so the textfile collector never reads
/// it half-written), flushed, then renamed over the target.
///
/// # Errors
/// The I/O error.
pub fn write_atomically(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

/// Serves the latest text on `listener` until `stop` is set.
///
/// Every request gets it (HTTP/1.0,
/// `text/plain; version=0.0.4`), then the connection closes. Hand-written
/// (a dozen lines) rather than an HTTP server crate: one fixed document, no
/// routing, no keep-alive. Returns when `stop` is set (checked between
/// connections; the listener is non-blocking).
pub fn serve(
    listener: &std::net::TcpListener,
    text: &std::sync::Mutex<String>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::Read as _;
    use std::sync::atomic::Ordering;
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let body = text.lock().map(|t| t.clone()).unwrap_or_default();
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s
                    .write_all(head.as_bytes())
                    .and_then(|()| s.write_all(body.as_bytes()));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: u64, program: &str, bytes: u64, flows: u64, active: u64) -> ProcessTotals {
        ProcessTotals {
            key,
            program: program.into(),
            traffic: Counters {
                bytes_in: bytes,
                bytes_out: bytes / 2,
                packets_in: 1,
                packets_out: 1,
            },
            flows,
            active_flows: active,
        }
    }

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn top_programs_then_other_and_counters_never_go_down() {
        let mut m = Metrics::new(2);
        m.update(&[
            p(1, "big.exe", 1000, 3, 1),
            p(2, "mid.exe", 500, 1, 1),
            p(3, "small.exe", 10, 1, 0),
            p(4, "big.exe", 1, 1, 1),
        ]);
        let t = m.render(&Global::default(), &Health::default());
        assert_eq!(
            value(
                &t,
                "wfpmon_process_bytes_total{direction=\"in\",process=\"big.exe\"}"
            ),
            Some(1001)
        );
        assert_eq!(
            value(
                &t,
                "wfpmon_process_bytes_total{direction=\"in\",process=\"mid.exe\"}"
            ),
            Some(500)
        );
        assert_eq!(
            value(
                &t,
                "wfpmon_process_bytes_total{direction=\"in\",process=\"other\"}"
            ),
            Some(10)
        );
        assert_eq!(
            value(
                &t,
                "wfpmon_process_bytes_total{direction=\"in\",process=\"small.exe\"}"
            ),
            None
        );
        assert_eq!(
            value(&t, "wfpmon_process_active_flows{process=\"big.exe\"}"),
            Some(2)
        );
        // Process 1 leaves the table; small.exe grows past everything: the
        // counters keep what they had, small.exe stays in `other`.
        m.update(&[
            p(2, "mid.exe", 600, 2, 0),
            p(3, "small.exe", 5000, 1, 0),
            p(4, "big.exe", 1, 1, 0),
        ]);
        let t = m.render(&Global::default(), &Health::default());
        assert_eq!(
            value(
                &t,
                "wfpmon_process_bytes_total{direction=\"in\",process=\"big.exe\"}"
            ),
            Some(1001)
        );
        assert_eq!(
            value(
                &t,
                "wfpmon_process_bytes_total{direction=\"in\",process=\"mid.exe\"}"
            ),
            Some(600)
        );
        assert_eq!(
            value(
                &t,
                "wfpmon_process_bytes_total{direction=\"in\",process=\"other\"}"
            ),
            Some(5000)
        );
        assert_eq!(
            value(&t, "wfpmon_process_flows_total{process=\"mid.exe\"}"),
            Some(2)
        );
        assert_eq!(
            value(&t, "wfpmon_process_active_flows{process=\"big.exe\"}"),
            Some(0)
        );
    }

    #[test]
    fn names_and_escaping() {
        assert_eq!(
            program_name("\\Device\\HarddiskVolume3\\Program Files\\x\\chrome.exe"),
            "chrome.exe"
        );
        assert_eq!(program_name("System"), "System");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir =
            std::env::temp_dir().join(format!("wfpmon-export-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, "wfpmon.prom", "a 1\n").unwrap();
        write_atomically(&dir, "wfpmon.prom", "a 2\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("wfpmon.prom")).unwrap(),
            "a 2\n"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["wfpmon.prom"], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
