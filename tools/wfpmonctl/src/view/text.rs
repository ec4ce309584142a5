//! Text output: tables that fit the terminal, the flows, processes and
//! statistics views, and event lines in aligned columns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;
use wfpmon_core::protocol::Stats;

use crate::events::{DroppedDoc, EventDoc};
use crate::flows::{FlowRow, FlowsDoc, Totals};
use crate::procs::ProcsDoc;
use crate::view::units::{Units, local_time};
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

/// RFC 3339, UTC, milliseconds: the times of JSON and CSV.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// A table column: header, right-aligned (numbers), the rank by which
/// columns are dropped when the table is too wide (lowest first; 0: never),
/// and the width it may then be shrunk to by eliding the middle (0: never).
#[derive(Clone, Copy, Debug)]
pub struct Column(pub &'static str, pub bool, pub u8, pub usize);

/// `cell` in at most `width` columns of the terminal, eliding the middle.
fn fit(cell: &str, width: usize) -> String {
    if cell.width() <= width {
        return cell.to_owned();
    }
    // Characters from the start, then from the end, that fit half each.
    let take = |chars: &mut dyn Iterator<Item = char>, room: usize| {
        let mut used = 0;
        chars
            .take_while(|c| {
                used += c.width().unwrap_or(0);
                used <= room
            })
            .collect::<Vec<char>>()
    };
    let head_room = width.saturating_sub(1) / 2;
    let head = take(&mut cell.chars(), head_room);
    let mut tail = take(&mut cell.chars().rev(), width.saturating_sub(1 + head_room));
    tail.reverse();
    head.into_iter()
        .chain(std::iter::once('…'))
        .chain(tail)
        .collect()
}

/// Width of a table whose hidden columns have width 0.
fn total(widths: &[usize]) -> usize {
    let shown = widths.iter().filter(|w| **w > 0);
    shown.map(|w| w + 2).sum::<usize>().saturating_sub(2)
}

/// Widens `widths` to every cell of `rows`.
fn widen(widths: &mut [usize], rows: &[Vec<String>]) {
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
}

/// `rows` laid out in columns of `widths` (0: hidden; `usize::MAX`: as it
/// comes, for a last column), two spaces apart.
fn lines(columns: &[Column], rows: &[Vec<String>], widths: &[usize]) -> String {
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().filter(|(i, _)| widths[*i] > 0) {
            let (cell, w) = (fit(cell, widths[i]), widths[i]);
            let sep = if line.is_empty() { "" } else { "  " };
            // Padded to display columns (format! pads to characters).
            let pad = if w == usize::MAX {
                String::new()
            } else {
                " ".repeat(w.saturating_sub(cell.width()))
            };
            let _ = if columns[i].1 {
                write!(line, "{sep}{pad}{cell}")
            } else {
                write!(line, "{sep}{cell}{pad}")
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn headers(columns: &[Column]) -> Vec<String> {
    columns.iter().map(|c| c.0.to_owned()).collect()
}

/// Lays out `rows` under `columns`; with a `width`, drops and shrinks
/// columns (see [`Column`]) until every line fits, if it can.
// Hand-written: the table crates (comfy-table, tabled) draw borders and
// wrap cells; this drops columns by rank and elides the middle of long
// cells, which none of them does, in fewer lines than configuring one.
pub fn table(columns: &[Column], rows: &[Vec<String>], width: Option<usize>) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.0.width()).collect();
    widen(&mut widths, rows);
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
    let mut all = vec![headers(columns)];
    all.extend_from_slice(rows);
    lines(columns, &all, &widths)
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

/// A process as shown: its name, and the services it hosts
/// (`svchost.exe (Dnscache, LanmanWorkstation)`).
pub fn process_label(name: &str, services: &[String]) -> String {
    if services.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({})", services.join(", "))
    }
}

/// The flows view as text: `verbose` adds flow handles, `hosts` the
/// remote host names (without `-n`).
pub fn flows_text(
    doc: &FlowsDoc,
    units: Units,
    (verbose, hosts): (bool, bool),
    width: Option<usize>,
) -> String {
    let rates = doc.interval_s.is_some();
    // Dropped first when too wide: packets, age, direction, the host, the
    // handle, and in a refresh the byte totals (the rates stay).
    let totals = if rates { 7 } else { 0 };
    let mut columns = vec![
        Column("PID", true, 0, 0),
        Column("PROCESS", false, 0, 6),
        Column("PROTO", false, 0, 0),
        Column("DIR", false, 4, 0),
        Column("LOCAL", false, 0, 13),
        Column("REMOTE", false, 0, 14),
    ];
    if hosts {
        columns.push(Column("HOST", false, 5, 8));
    }
    columns.extend([
        Column("AGE", true, 3, 0),
        Column("IN", true, totals, 0),
        Column("OUT", true, totals, 0),
    ]);
    if rates {
        columns.extend([Column("IN/s", true, 0, 0), Column("OUT/s", true, 0, 0)]);
    }
    columns.extend([
        Column("PKTS IN", true, 1, 0),
        Column("PKTS OUT", true, 2, 0),
    ]);
    if verbose {
        columns.push(Column("HANDLE", false, 6, 0));
    }
    let rows: Vec<Vec<String>> = doc
        .flows
        .iter()
        .map(|f| {
            let mut row = vec![
                f.pid.to_string(),
                process_label(&f.process, &f.services),
                protocol(f),
                f.direction.to_owned(),
                endpoint(&f.local_address, f.local_port),
                endpoint(&f.remote_address, f.remote_port),
            ];
            if hosts {
                row.push(f.remote_host.clone().unwrap_or_default());
            }
            row.extend([
                units.age(f.age_ms),
                units.volume(f.bytes_in),
                units.volume(f.bytes_out),
            ]);
            if rates {
                row.push(units.rate(f.rate_in.unwrap_or(0.0)));
                row.push(units.rate(f.rate_out.unwrap_or(0.0)));
            }
            row.extend([units.count(f.packets_in), units.count(f.packets_out)]);
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
    footer(out, &doc.totals, units)
}

/// Ends a view's last line with its traffic totals (and rates).
fn footer(mut out: String, t: &Totals, units: Units) -> String {
    let (bin, bout) = (units.volume(t.bytes_in), units.volume(t.bytes_out));
    let _ = write!(out, "; in {bin}, out {bout}");
    if let (Some(rin), Some(rout)) = (t.rate_in, t.rate_out) {
        let (rin, rout) = (units.per_second(rin), units.per_second(rout));
        let _ = write!(out, "; now {rin} in, {rout} out");
    }
    out.push('\n');
    out
}

/// The columns of an event line; the flags and the image path follow the
/// last.
const EVENT_COLUMNS: [Column; 12] = [
    Column("TIME", false, 0, 0),
    Column("EVENT", false, 0, 0),
    Column("PID", true, 0, 0),
    Column("PROCESS", false, 0, 0),
    Column("PROTO", false, 0, 0),
    Column("DIR", false, 0, 0),
    Column("LOCAL", false, 0, 0),
    Column("REMOTE", false, 0, 0),
    Column("HOST", false, 0, 0),
    Column("AFTER", true, 0, 0),
    Column("IN", true, 0, 0),
    Column("OUT", true, 0, 0),
];

/// Event lines in columns that stay aligned as events come: a column is
/// as wide as its widest cell so far (and its header), so it only widens.
#[derive(Clone, Debug)]
pub struct EventLines {
    units: Units,
    /// Whether the HOST column is shown (names are looked up).
    hosts: bool,
    widths: Vec<usize>,
    header_done: bool,
}

impl EventLines {
    pub fn new(units: Units, hosts: bool) -> Self {
        let mut widths: Vec<usize> = EVENT_COLUMNS.iter().map(|c| c.0.len()).collect();
        widths[0] = "2026-01-01 00:00:00.000".len();
        if !hosts {
            widths[8] = 0;
        }
        Self {
            units,
            hosts,
            widths,
            header_done: false,
        }
    }

    /// The cells of `d`, the event's time shown at `offset` seconds east
    /// of UTC (the local zone's offset then); flags and path last.
    fn cells(&self, d: &EventDoc, offset: i32) -> Vec<String> {
        let (f, u) = (&d.flow, self.units);
        let ended = d.event == "ended";
        let traffic = |bytes, packets| format!("{} ({} pkts)", u.volume(bytes), u.count(packets));
        let mut tail: Vec<String> = d
            .flags
            .iter()
            .map(|flag| format!("[{}]", flag.replace('_', " ")))
            .collect();
        tail.extend(f.path.clone());
        vec![
            local_time(d.time, offset),
            d.event.to_owned(),
            f.pid.to_string(),
            process_label(&f.process, &f.services),
            protocol(f),
            f.direction.to_owned(),
            endpoint(&f.local_address, f.local_port),
            endpoint(&f.remote_address, f.remote_port),
            f.remote_host.clone().unwrap_or_default(),
            if ended {
                u.age(f.age_ms)
            } else {
                String::new()
            },
            if ended {
                traffic(f.bytes_in, f.packets_in)
            } else {
                String::new()
            },
            if ended {
                traffic(f.bytes_out, f.packets_out)
            } else {
                String::new()
            },
            tail.join("  "),
        ]
    }

    /// The lines of a batch of events (`offset` gives each one's local
    /// offset), after the header the first time.
    pub fn batch(
        &mut self,
        docs: &[EventDoc],
        offset: &mut impl FnMut(SystemTime) -> i32,
    ) -> String {
        let rows: Vec<Vec<String>> = docs.iter().map(|d| self.cells(d, offset(d.time))).collect();
        let hosts = self.hosts;
        widen(&mut self.widths, &rows);
        if !hosts {
            self.widths[8] = 0;
        }
        let mut columns = EVENT_COLUMNS.to_vec();
        columns.push(Column("", false, 0, 0));
        let mut widths = self.widths.clone();
        widths.push(usize::MAX);
        // The free last column is never padded or cut.
        let mut all = Vec::new();
        if !self.header_done {
            self.header_done = true;
            all.push(headers(&columns));
        }
        all.extend(rows);
        lines(&columns, &all, &widths)
    }
}

/// The line that says events were lost: at local time (`offset` seconds
/// east of UTC), or without a time (`None`: a warning on its own).
pub fn dropped_line(d: &DroppedDoc, offset: Option<i32>) -> String {
    let time = offset.map_or_else(String::new, |o| local_time(d.time, o) + " ");
    format!(
        "{time}dropped {} event(s), overwritten in the driver before they were read; next: event #{}\n",
        d.dropped, d.next_seq
    )
}

/// The processes view as text: one row per process, the driver's table
/// in the footer.
pub fn procs_text(doc: &ProcsDoc, units: Units, width: Option<usize>) -> String {
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
                process_label(&p.process, &p.services),
                p.active_flows.to_string(),
                p.flows_total.to_string(),
                units.volume(p.bytes_in),
                units.volume(p.bytes_out),
            ];
            if rates {
                row.push(units.rate(p.rate_in.unwrap_or(0.0)));
                row.push(units.rate(p.rate_out.unwrap_or(0.0)));
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
    footer(out, &doc.totals, units)
}

/// The `wfpmon.stats/2` document: schema, time, and every counter of
/// [`Stats`] under the name [`counters`] gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsDoc {
    pub schema: &'static str,
    pub timestamp: String,
    pub protocol_version: u32,
    pub counting: bool,
    /// Whose traffic the byte and packet totals are: `ended_flows` (the
    /// walk-free default) or `all_flows` (`--live`).
    pub traffic_of: &'static str,
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
            schema: "wfpmon.stats/2",
            timestamp,
            protocol_version: s.header.version,
            counting: s.counting_enabled != 0,
            traffic_of: if s.flags & wfpmon_core::protocol::STATS_INCLUDES_LIVE_TRAFFIC != 0 {
                "all_flows"
            } else {
                "ended_flows"
            },
            counters: counters(s).into_iter().collect(),
        }
    }

    /// As a two-column table, in [`counters`] order.
    pub fn text(&self, s: &Stats, units: Units) -> String {
        let mut rows = vec![
            vec![
                "counting".to_owned(),
                (if self.counting { "on" } else { "off" }).to_owned(),
            ],
            vec![
                "traffic of".to_owned(),
                (if self.traffic_of == "all_flows" {
                    "all flows"
                } else {
                    "ended flows (--live: open ones too)"
                })
                .to_owned(),
            ],
        ];
        for (name, n) in counters(s) {
            let value = match name.split('_').next() {
                Some("bytes") => units.volume(n),
                Some("packets") => units.count(n),
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
    use crate::view::units::Unit;

    const U: Units = Units::new(Unit::Bytes, false);
    const RAW: Units = Units::new(Unit::Bytes, true);

    #[test]
    fn table_alignment_and_elision() {
        let cols = [Column("A", false, 0, 3), Column("NUM", true, 0, 0)];
        let rows = vec![
            vec!["xyz".into(), "1".into()],
            vec!["q".into(), "100".into()],
        ];
        assert_eq!(table(&cols, &rows, None), "A    NUM\nxyz    1\nq    100\n");
        assert_eq!(fit("[2001:db8::53]:443", 9), "[200…:443");
        // Wide characters take two columns, in widths, padding and elision.
        assert_eq!(fit("写真アプリ.exe", 9), "写真….exe");
        let rows = vec![
            vec!["写真.exe".into(), "1".into()],
            vec!["a.exe".into(), "22".into()],
        ];
        assert_eq!(
            table(&cols, &rows, None),
            "A         NUM\n写真.exe    1\na.exe      22\n"
        );
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
        let text = flows_text(&doc(false), U, (false, false), None);
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
        assert!(flows_text(&doc(false), RAW, (true, false), None).contains("0x0000000000001001"));
    }

    #[test]
    fn flows_text_fits_narrow_terminals() {
        for width in [80, 100, 120] {
            for rates in [false, true] {
                let text = flows_text(&doc(rates), U, (true, true), Some(width));
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
        let wide = flows_text(&doc(true), U, (true, true), Some(400));
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
            (Some("wfpmon.stats/2"), Some(true), Some(2048))
        );
        assert_eq!(v["traffic_of"].as_str(), Some("ended_flows"));
        assert_eq!(v.as_object().unwrap().len(), 5 + 9);
        let live = StatsDoc::new(
            &Stats {
                flags: wfpmon_core::protocol::STATS_INCLUDES_LIVE_TRAFFIC,
                ..s
            },
            "t".into(),
        );
        assert_eq!(live.traffic_of, "all_flows");
        assert!(
            live.text(&s, U)
                .lines()
                .any(|l| l.starts_with("traffic of") && l.ends_with("all flows"))
        );
        let t = d.text(&s, U);
        assert!(
            t.lines()
                .any(|l| l.starts_with("bytes in") && l.ends_with("2 KiB")),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("counting") && l.ends_with("on")),
            "{t}"
        );
        let raw = d.text(&s, RAW);
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
        let mut lines = EventLines::new(U, true);
        let mut offset = |_| 3600;
        let first = lines.batch(std::slice::from_ref(&d), &mut offset);
        assert_eq!(
            first,
            "TIME                     EVENT        PID  PROCESS  PROTO  DIR  LOCAL                REMOTE             HOST  AFTER  IN  OUT\n\
             1970-01-01 01:01:40.000  established  102  a.exe    tcp    in   [2001:db8::1]:50000  [2001:db8::2]:443                        [not tracked]\n"
        );
        // An ended flow with a host name and a longer process name: the
        // columns widen, and stay aligned with later lines.
        e.kind = wfpmon_core::events::EVENT_ENDED;
        e.flags = 0;
        let mut d = EventDoc::new(&e, Proc::default(), 50_000_000, wall);
        d.flow.process = "svchost.exe".into();
        d.flow.services = vec!["Dnscache".into()];
        d.flow.remote_host = Some("dns.example".into());
        d.flow.path = Some(r"C:\Windows\svchost.exe".into());
        let second = lines.batch(&[d.clone(), d.clone()], &mut offset);
        let rows: Vec<&str> = second.lines().collect();
        assert_eq!(rows.len(), 2, "no second header: {second}");
        assert_eq!(rows[0], rows[1]);
        assert!(rows[0].starts_with("1970-01-01 01:01:40.000  ended        102  svchost.exe (Dnscache)  tcp    in   [2001:db8::1]:50000  [2001:db8::2]:443  dns.example   1.2s  3 MiB (2.3k pkts)  4 KiB (9 pkts)  C:\\Windows\\svchost.exe"), "{second}");
        let later = lines.batch(std::slice::from_ref(&d), &mut offset);
        assert_eq!(
            later,
            format!("{}\n", rows[0]),
            "same widths for later batches"
        );
        let mut raw = EventLines::new(RAW, false);
        let text = raw.batch(std::slice::from_ref(&d), &mut offset);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains(" 1234ms  3145728 (2300 pkts)  4096 (9 pkts)  C:"),
            "{text}"
        );
        assert!(
            !text.contains("HOST") && !text.contains("dns.example"),
            "-n: no host column"
        );
        assert_eq!(
            dropped_line(&DroppedDoc::new(3, 7, wall), Some(0)),
            "1970-01-01 00:01:40.000 dropped 3 event(s), overwritten in the driver before they were read; next: event #7\n"
        );
        assert!(dropped_line(&DroppedDoc::new(3, 7, wall), None).starts_with("dropped 3 event(s)"));
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
                let text = procs_text(&doc(rates), U, Some(width));
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
        let wide = procs_text(&doc(true), RAW, None);
        assert!(
            wide.contains(r"\device\harddiskvolume3\apps\app3.exe")
                && wide.contains("a-long-process-name-103.exe")
        );
        assert!(
            wide.lines()
                .last()
                .unwrap()
                .contains("; now 3006 B/s in, 300 B/s out"),
            "{wide}"
        );
    }
}
