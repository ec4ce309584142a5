//! Text output: human units, tables that fit the terminal, the flows and
//! statistics views.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;
use wfpmon_core::protocol::Stats;

use crate::events::{DroppedDoc, EventDoc};
use crate::flows::{FlowRow, FlowsDoc, Totals};
use crate::procs::ProcsDoc;

/// RFC 3339, UTC, milliseconds: every time wfpmonctl shows.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

const IEC: [&str; 6] = [" B", " KiB", " MiB", " GiB", " TiB", " PiB"];
const SI: [&str; 6] = ["", "k", "M", "G", "T", "P"];

/// `n` bytes in IEC units (`512 B`, `1.5 KiB`), or exact with `raw`.
pub fn bytes(n: u64, raw: bool) -> String {
    human(n, raw, 1024, &IEC)
}

/// A count in SI units (`999`, `12.3k`), or exact with `raw`.
pub fn count(n: u64, raw: bool) -> String {
    human(n, raw, 1000, &SI)
}

/// Bytes per second in IEC units, whole bytes with `raw`.
pub fn rate(n: f64, raw: bool) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a rounded rate
    human(n.round() as u64, raw, 1024, &IEC)
}

#[allow(clippy::cast_precision_loss)] // display only
fn human(n: u64, raw: bool, base: u64, units: &[&str]) -> String {
    if raw || n < base {
        return format!("{n}{}", if raw { "" } else { units[0] });
    }
    let (mut value, mut unit) = (n as f64, 0);
    while value >= base as f64 && unit + 1 < units.len() {
        value /= base as f64;
        unit += 1;
    }
    format!("{value:.1}{}", units[unit])
}

/// Milliseconds as `2d03h`, `1h02m`, `2m03s` or `3.4s`; exact with `raw`.
pub fn age(ms: u64, raw: bool) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    match () {
        () if raw => format!("{ms}ms"),
        () if d > 0 => format!("{d}d{h:02}h"),
        () if h > 0 => format!("{h}h{m:02}m"),
        () if m > 0 => format!("{m}m{sec:02}s"),
        () => format!("{sec}.{}s", (ms % 1000) / 100),
    }
}

/// A table column: header, right-aligned (numbers), the rank by which
/// columns are dropped when the table is too wide (lowest first; 0: never),
/// and the width it may then be shrunk to by eliding the middle (0: never).
#[derive(Clone, Copy, Debug)]
pub struct Column(pub &'static str, pub bool, pub u8, pub usize);

/// `cell` in at most `width` characters, eliding the middle.
fn fit(cell: &str, width: usize) -> String {
    let chars: Vec<char> = cell.chars().collect();
    if chars.len() <= width {
        return cell.to_owned();
    }
    let head = (width.saturating_sub(1)) / 2;
    let tail = width.saturating_sub(1 + head);
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// Width of a table whose hidden columns have width 0.
fn total(widths: &[usize]) -> usize {
    let shown = widths.iter().filter(|w| **w > 0);
    shown.map(|w| w + 2).sum::<usize>().saturating_sub(2)
}

/// Lays out `rows` under `columns`; with a `width`, drops and shrinks
/// columns (see [`Column`]) until every line fits, if it can.
pub fn table(columns: &[Column], rows: &[Vec<String>], width: Option<usize>) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.0.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if let Some(limit) = width {
        let mut ranks: Vec<(u8, usize)> =
            columns.iter().enumerate().map(|(i, c)| (c.2, i)).collect();
        ranks.sort_unstable();
        for (_, i) in ranks.into_iter().filter(|(rank, _)| *rank > 0) {
            if total(&widths) > limit {
                widths[i] = 0;
            }
        }
        for (i, c) in columns.iter().enumerate().filter(|(_, c)| c.3 > 0) {
            let excess = total(&widths).saturating_sub(limit);
            widths[i] = widths[i].saturating_sub(excess).max(c.3.min(widths[i]));
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = columns.iter().map(|c| c.0.to_owned()).collect();
    for row in std::iter::once(&headers).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().filter(|(i, _)| widths[*i] > 0) {
            let (cell, w) = (fit(cell, widths[i]), widths[i]);
            let sep = if line.is_empty() { "" } else { "  " };
            let _ = if columns[i].1 {
                write!(line, "{sep}{cell:>w$}")
            } else {
                write!(line, "{sep}{cell:<w$}")
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn endpoint(address: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if address.contains(':') => format!("[{address}]:{p}"),
        Some(p) => format!("{address}:{p}"),
        None => address.to_owned(),
    }
}

fn protocol(f: &FlowRow) -> String {
    match (f.icmp_type, f.icmp_code) {
        (Some(t), Some(c)) => format!("{} {t}/{c}", f.protocol),
        _ => f.protocol.clone(),
    }
}

/// The flows view as text (`raw`: exact numbers; `verbose`: flow handles).
pub fn flows_text(doc: &FlowsDoc, raw: bool, verbose: bool, width: Option<usize>) -> String {
    let rates = doc.interval_s.is_some();
    // Dropped first when too wide: packets, age, direction, then the
    // handle, and in a refresh the byte totals (the rates stay).
    let totals = if rates { 6 } else { 0 };
    let mut columns = vec![
        Column("PID", true, 0, 0),
        Column("PROCESS", false, 0, 6),
        Column("PROTO", false, 0, 0),
        Column("DIR", false, 4, 0),
        Column("LOCAL", false, 0, 13),
        Column("REMOTE", false, 0, 14),
        Column("AGE", true, 3, 0),
        Column("IN", true, totals, 0),
        Column("OUT", true, totals, 0),
    ];
    if rates {
        columns.extend([Column("IN/s", true, 0, 0), Column("OUT/s", true, 0, 0)]);
    }
    columns.extend([
        Column("PKTS IN", true, 1, 0),
        Column("PKTS OUT", true, 2, 0),
    ]);
    if verbose {
        columns.push(Column("HANDLE", false, 5, 0));
    }
    let rows: Vec<Vec<String>> = doc
        .flows
        .iter()
        .map(|f| {
            let mut row = vec![
                f.pid.to_string(),
                f.process.clone(),
                protocol(f),
                f.direction.to_owned(),
                endpoint(&f.local_address, f.local_port),
                endpoint(&f.remote_address, f.remote_port),
                age(f.age_ms, raw),
                bytes(f.bytes_in, raw),
                bytes(f.bytes_out, raw),
            ];
            if rates {
                row.push(rate(f.rate_in.unwrap_or(0.0), raw));
                row.push(rate(f.rate_out.unwrap_or(0.0), raw));
            }
            row.extend([count(f.packets_in, raw), count(f.packets_out, raw)]);
            if verbose {
                row.push(f.flow_handle.clone());
            }
            row
        })
        .collect();
    let mut out = table(&columns, &rows, width);
    let _ = write!(
        out,
        "{} of {} matching flows ({} active)",
        doc.flows.len(),
        doc.matched,
        doc.active
    );
    footer(out, &doc.totals, raw)
}

/// Ends a view's last line with its traffic totals (and rates).
fn footer(mut out: String, t: &Totals, raw: bool) -> String {
    let (bin, bout) = (bytes(t.bytes_in, raw), bytes(t.bytes_out, raw));
    let _ = write!(out, "; in {bin}, out {bout}");
    if let (Some(rin), Some(rout)) = (t.rate_in, t.rate_out) {
        let _ = write!(
            out,
            "; now {}/s in, {}/s out",
            rate(rin, raw),
            rate(rout, raw)
        );
    }
    out.push('\n');
    out
}

/// An event as one line: time, kind, PID and process, protocol, direction
/// and endpoints; for an ended flow its duration and final counters; flags;
/// the image path.
pub fn event_line(d: &EventDoc, raw: bool) -> String {
    let f = &d.flow;
    let arrow = if f.direction == "in" { "<-" } else { "->" };
    let mut line = format!(
        "{} {:<11} {:>6} {}  {} {} {} {arrow} {}",
        d.timestamp,
        d.event,
        f.pid,
        f.process,
        protocol(f),
        f.direction,
        endpoint(&f.local_address, f.local_port),
        endpoint(&f.remote_address, f.remote_port),
    );
    if d.event == "ended" {
        let _ = write!(
            line,
            "  after {}, in {} ({} pkts), out {} ({} pkts)",
            age(f.age_ms, raw),
            bytes(f.bytes_in, raw),
            count(f.packets_in, raw),
            bytes(f.bytes_out, raw),
            count(f.packets_out, raw)
        );
    }
    for flag in &d.flags {
        let _ = write!(line, " [{}]", flag.replace('_', " "));
    }
    if let Some(path) = &d.path {
        let _ = write!(line, "  {path}");
    }
    line.push('\n');
    line
}

/// The line that says events were lost.
pub fn dropped_line(d: &DroppedDoc) -> String {
    format!(
        "{} dropped {} event(s), overwritten in the driver before they were read; next: event #{}\n",
        d.timestamp, d.dropped, d.next_seq
    )
}

/// The processes view as text: one row per process, the driver's table
/// in the footer.
pub fn procs_text(doc: &ProcsDoc, raw: bool, width: Option<usize>) -> String {
    let rates = doc.interval_s.is_some();
    let totals = if rates { 2 } else { 0 };
    let mut columns = vec![
        Column("PID", true, 0, 0),
        Column("PROCESS", false, 0, 8),
        Column("FLOWS", true, 0, 0),
        Column("TOTAL", true, 1, 0),
        Column("IN", true, totals, 0),
        Column("OUT", true, totals, 0),
    ];
    if rates {
        columns.extend([Column("IN/s", true, 0, 0), Column("OUT/s", true, 0, 0)]);
    }
    columns.push(Column("PATH", false, 0, 12));
    let rows: Vec<Vec<String>> = doc
        .processes
        .iter()
        .map(|p| {
            let mut row = vec![
                p.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
                p.process.clone(),
                p.active_flows.to_string(),
                p.flows_total.to_string(),
                bytes(p.bytes_in, raw),
                bytes(p.bytes_out, raw),
            ];
            if rates {
                row.push(rate(p.rate_in.unwrap_or(0.0), raw));
                row.push(rate(p.rate_out.unwrap_or(0.0), raw));
            }
            row.push(p.path.clone().unwrap_or_default());
            row
        })
        .collect();
    let mut out = table(&columns, &rows, width);
    let _ = write!(
        out,
        "{} of {} matching processes ({} in the driver's table of {}: {} evicted, {} flows without a process)",
        doc.processes.len(),
        doc.matched,
        doc.listed,
        doc.capacity,
        doc.evictions,
        doc.unattributed_flows,
    );
    footer(out, &doc.totals, raw)
}

/// The `wfpmon.stats/1` document: schema, time, and every counter of
/// [`Stats`] under the name [`counters`] gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsDoc {
    pub schema: &'static str,
    pub timestamp: String,
    pub protocol_version: u32,
    pub counting: bool,
    #[serde(flatten)]
    pub counters: BTreeMap<&'static str, u64>,
}

/// The counters of [`Stats`] by name: the one list JSON and text share.
pub const fn counters(s: &Stats) -> [(&'static str, u64); 9] {
    [
        ("flows_active", s.flows_active),
        ("flows_tracked", s.flows_tracked),
        ("flows_deleted", s.flows_deleted),
        ("allocation_failures", s.allocation_failures),
        ("association_failures", s.association_failures),
        ("bytes_in", s.bytes_inbound),
        ("bytes_out", s.bytes_outbound),
        ("packets_in", s.packets_inbound),
        ("packets_out", s.packets_outbound),
    ]
}

impl StatsDoc {
    pub fn new(s: &Stats, timestamp: String) -> Self {
        Self {
            schema: "wfpmon.stats/1",
            timestamp,
            protocol_version: s.header.version,
            counting: s.counting_enabled != 0,
            counters: counters(s).into_iter().collect(),
        }
    }

    /// As a two-column table, in [`counters`] order.
    pub fn text(&self, s: &Stats, raw: bool) -> String {
        let mut rows = vec![vec![
            "counting".to_owned(),
            (if self.counting { "on" } else { "off" }).to_owned(),
        ]];
        for (name, n) in counters(s) {
            let value = match name.split('_').next() {
                Some("bytes") => bytes(n, raw),
                Some("packets") => count(n, raw),
                _ => n.to_string(),
            };
            rows.push(vec![name.replace('_', " "), value]);
        }
        table(
            &[
                Column("STATISTIC", false, 0, 0),
                Column("VALUE", true, 0, 0),
            ],
            &rows,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::FlowsArgs;
    use crate::flows::tests::entries;
    use crate::flows::{FlowRow, Previous};

    #[test]
    fn units() {
        assert_eq!(bytes(0, false), "0 B");
        assert_eq!(bytes(1023, false), "1023 B");
        assert_eq!(bytes(1536, false), "1.5 KiB");
        assert_eq!(bytes(5 << 30, false), "5.0 GiB");
        assert_eq!(bytes(u64::MAX, true), u64::MAX.to_string());
        assert_eq!(rate(1536.4, false), "1.5 KiB");
        assert_eq!(rate(1536.4, true), "1536");
        assert_eq!(count(999, false), "999");
        assert_eq!(count(12_345, false), "12.3k");
        assert_eq!(count(u64::MAX, true), u64::MAX.to_string());
        assert_eq!(age(1_500, false), "1.5s");
        assert_eq!(age(123_000, false), "2m03s");
        assert_eq!(age(3_723_000, false), "1h02m");
        assert_eq!(age(2 * 86_400_000 + 3_600_000 * 3, false), "2d03h");
        assert_eq!(age(1_500, true), "1500ms");
    }

    #[test]
    fn table_alignment_and_elision() {
        let cols = [Column("A", false, 0, 3), Column("NUM", true, 0, 0)];
        let rows = vec![
            vec!["xyz".into(), "1".into()],
            vec!["q".into(), "100".into()],
        ];
        assert_eq!(table(&cols, &rows, None), "A    NUM\nxyz    1\nq    100\n");
        assert_eq!(fit("[2001:db8::53]:443", 9), "[200…:443");
    }

    fn doc(width_rates: bool) -> FlowsDoc {
        let mut prev = Previous::of(&[]);
        prev.elapsed = 1.0;
        let p = width_rates.then_some(&prev);
        let flows = entries()
            .iter()
            .map(|e| FlowRow::new(e, "a-rather-long-process-name.exe".into(), p))
            .collect();
        FlowsDoc::new(
            &FlowsArgs::default(),
            "t".into(),
            3,
            flows,
            width_rates.then_some(1.0),
        )
    }

    #[test]
    fn flows_text_shows_every_flow_with_process_and_endpoints() {
        let text = flows_text(&doc(false), false, false, None);
        let lines: Vec<_> = text.lines().collect();
        assert!(
            lines[0].starts_with("PID")
                && lines[0].contains("PKTS OUT")
                && !lines[0].contains("HANDLE")
        );
        assert!(lines.iter().any(
            |l| l.contains("[2001:db8:1234:5678:9abc:def0:1234:5678]:53") && l.contains(" in ")
        ));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("icmp 8/0") && l.trim_start().starts_with("4 "))
        );
        assert!(lines[1].contains("a-rather-long-process-name.exe"));
        assert_eq!(
            lines.last().unwrap(),
            &"3 of 3 matching flows (3 active); in 600 B, out 60 B"
        );
        assert!(flows_text(&doc(false), true, true, None).contains("0x0000000000001001"));
    }

    #[test]
    fn flows_text_fits_narrow_terminals() {
        for width in [80, 100, 120] {
            for rates in [false, true] {
                let text = flows_text(&doc(rates), false, true, Some(width));
                let table: Vec<_> = text.lines().collect();
                for line in &table[..table.len() - 1] {
                    assert!(line.chars().count() <= width, "{width}: {line}");
                }
                assert!(
                    table.iter().any(|l| l.contains(":53")),
                    "ports survive elision:\n{text}"
                );
                assert!(table[0].contains("IN") && table[0].contains("PID"));
                assert_eq!(table[0].contains("IN/s"), rates);
            }
        }
        let wide = flows_text(&doc(true), false, true, Some(400));
        assert!(
            wide.contains("HANDLE") && wide.contains("PKTS IN"),
            "nothing dropped when it fits"
        );
    }

    #[test]
    fn stats_document_and_text() {
        let s = Stats {
            counting_enabled: 1,
            flows_active: 3,
            bytes_inbound: 2048,
            packets_outbound: 7,
            ..Stats::default()
        };
        let d = StatsDoc::new(&s, "t".into());
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            (
                v["schema"].as_str(),
                v["counting"].as_bool(),
                v["bytes_in"].as_u64()
            ),
            (Some("wfpmon.stats/1"), Some(true), Some(2048))
        );
        assert_eq!(v.as_object().unwrap().len(), 4 + 9);
        let t = d.text(&s, false);
        assert!(
            t.lines()
                .any(|l| l.starts_with("bytes in") && l.ends_with("2.0 KiB")),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("counting") && l.ends_with("on")),
            "{t}"
        );
        let raw = d.text(&s, true);
        assert!(
            raw.lines()
                .any(|l| l.starts_with("bytes in") && l.ends_with(" 2048"))
        );
    }

    #[test]
    fn event_lines() {
        use crate::device::sim::event;
        use crate::events::{DroppedDoc, EventDoc};
        use crate::procs::Proc;
        let wall = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let mut e = event(1 << 32 | 2);
        e.kind = wfpmon_core::events::EVENT_ESTABLISHED;
        e.direction = 1;
        e.address_family = 23;
        e.local_address = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        e.remote_address = "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        e.flags = wfpmon_core::events::EVENT_FLAG_NOT_TRACKED;
        let d = EventDoc::new(
            &e,
            Proc {
                name: "a.exe".into(),
                ..Proc::default()
            },
            50_000_000,
            wall,
        );
        assert_eq!(
            event_line(&d, false),
            "1970-01-01T00:01:40.000Z established    102 a.exe  tcp in [2001:db8::1]:50000 <- [2001:db8::2]:443 [not tracked]\n"
        );
        e.kind = wfpmon_core::events::EVENT_ENDED;
        e.flags = 0;
        let d = EventDoc::new(&e, Proc::default(), 50_000_000, wall);
        assert!(
            event_line(&d, true)
                .ends_with(" after 1234ms, in 3145728 (2300 pkts), out 4096 (9 pkts)\n")
        );
        assert_eq!(
            dropped_line(&DroppedDoc::new(3, 7, wall)),
            "1970-01-01T00:01:40.000Z dropped 3 event(s), overwritten in the driver before they were read; next: event #7\n"
        );
    }

    #[test]
    fn procs_text_fits_and_keeps_the_names() {
        use crate::cli::ProcsArgs;
        use crate::device::{ProcessList, sim::process};
        use crate::procs::{Previous, Proc, ProcRow, ProcsDoc};
        let list = ProcessList {
            entries: (1..=3).map(process).collect(),
            ..ProcessList::default()
        };
        let doc = |rates: bool| {
            let before = Previous::default();
            let rows = list
                .entries
                .iter()
                .map(|e| {
                    let mut proc = Proc::of(e, &[], &mut |_| None);
                    proc.name = format!("a-long-process-name-{}.exe", e.process_id);
                    ProcRow::new(
                        e,
                        proc,
                        (10_000_000, SystemTime::UNIX_EPOCH),
                        rates.then_some(&before),
                    )
                })
                .collect();
            ProcsDoc::new(
                &ProcsArgs::default(),
                "t".into(),
                &list,
                rows,
                rates.then_some(1.0),
            )
        };
        for width in [80, 100] {
            for rates in [false, true] {
                let text = procs_text(&doc(rates), false, Some(width));
                let lines: Vec<&str> = text.lines().collect();
                for line in &lines[..lines.len() - 1] {
                    assert!(line.chars().count() <= width, "{width}: {line}");
                }
                assert!(
                    lines[0].starts_with("PID") && lines[0].contains("PATH"),
                    "{text}"
                );
                assert_eq!(lines[0].contains("IN/s"), rates);
                assert!(lines[1].trim_start().starts_with("103 "), "{text}");
            }
        }
        let wide = procs_text(&doc(true), true, None);
        assert!(
            wide.contains(r"\device\harddiskvolume3\apps\app3.exe")
                && wide.contains("a-long-process-name-103.exe")
        );
        assert!(
            wide.lines()
                .last()
                .unwrap()
                .contains("; now 3006/s in, 300/s out"),
            "{wide}"
        );
    }
}
