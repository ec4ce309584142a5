//! Rendering of statistics, flows, status and install reports as text
//! tables or JSON. Pure: strings in, strings out.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};
use wfpmon_core::catalog::{self, AddressFamily};
use wfpmon_core::protocol::{FlowEntry, Stats};

use crate::device::FlowList;
use crate::engine::{
    DeviceState, InstallReport, ServiceState, StatusReport, UninstallReport, WfpStatus,
};
use crate::plan::Lifetime;

/// Lays out rows under headers; columns listed in `right` are right-aligned.
#[must_use]
pub fn table(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if right.contains(&i) {
                let _ = write!(text, "{cell:>width$}");
            } else {
                let _ = write!(text, "{cell:<width$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Statistics as a JSON value: every field of `Stats`, by name.
#[must_use]
pub fn stats_value(s: &Stats) -> Value {
    json!({
        "protocol_version": s.header.version,
        "counting_enabled": s.counting_enabled != 0,
        "flows_active": s.flows_active,
        "flows_tracked": s.flows_tracked,
        "flows_deleted": s.flows_deleted,
        "allocation_failures": s.allocation_failures,
        "association_failures": s.association_failures,
        "bytes_inbound": s.bytes_inbound,
        "bytes_outbound": s.bytes_outbound,
        "packets_inbound": s.packets_inbound,
        "packets_outbound": s.packets_outbound,
    })
}

/// Statistics as a two-column table.
#[must_use]
pub fn stats_table(s: &Stats) -> String {
    let rows: Vec<Vec<String>> = [
        (
            "counting",
            if s.counting_enabled != 0 {
                "on".to_owned()
            } else {
                "off".to_owned()
            },
        ),
        ("flows active", s.flows_active.to_string()),
        ("flows tracked", s.flows_tracked.to_string()),
        ("flows deleted", s.flows_deleted.to_string()),
        ("allocation failures", s.allocation_failures.to_string()),
        ("association failures", s.association_failures.to_string()),
        ("bytes in", s.bytes_inbound.to_string()),
        ("bytes out", s.bytes_outbound.to_string()),
        ("packets in", s.packets_inbound.to_string()),
        ("packets out", s.packets_outbound.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_owned(), v])
    .collect();
    table(&["STATISTIC", "VALUE"], &rows, &[1])
}

/// Statistics as one JSON object.
#[must_use]
pub fn stats_json(s: &Stats) -> String {
    to_json(&stats_value(s))
}

/// `"ipv4"`, `"ipv6"` or `"af<N>"`.
#[must_use]
pub fn family_name(af: u16) -> String {
    match AddressFamily::from_af(af) {
        Some(AddressFamily::V4) => "ipv4".to_owned(),
        Some(AddressFamily::V6) => "ipv6".to_owned(),
        None => format!("af{af}"),
    }
}

/// One flow as a JSON value.
#[must_use]
pub fn flow_value(f: &FlowEntry) -> Value {
    json!({
        "flow_id": f.flow_id,
        "process_id": f.process_id,
        "family": family_name(f.address_family),
        "protocol": protocol_name(f.ip_protocol),
        "ip_protocol": f.ip_protocol,
        "direction": direction_name(f.direction),
        "local_address": address(f.address_family, &f.local_address),
        "local_port": f.local_port,
        "remote_address": address(f.address_family, &f.remote_address),
        "remote_port": f.remote_port,
        "age_ms": f.age_ms,
        "bytes_inbound": f.bytes_inbound,
        "bytes_outbound": f.bytes_outbound,
        "packets_inbound": f.packets_inbound,
        "packets_outbound": f.packets_outbound,
    })
}

/// The flow list as a JSON value.
#[must_use]
pub fn flow_list_value(l: &FlowList) -> Value {
    json!({
        "total_flows": l.total_flows,
        "returned": l.entries.len(),
        "truncated": l.truncated(),
        "flows": l.entries.iter().map(flow_value).collect::<Vec<_>>(),
    })
}

/// Name of an IP protocol number, or the number.
#[must_use]
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        other => other.to_string(),
    }
}

/// Name of a flow direction (0 outbound, 1 inbound).
#[must_use]
pub const fn direction_name(d: u8) -> &'static str {
    match d {
        0 => "outbound",
        1 => "inbound",
        _ => "unknown",
    }
}

/// Text form of an address of the given `AF_*` family.
#[must_use]
pub fn address(family: u16, bytes: &[u8; 16]) -> String {
    match AddressFamily::from_af(family) {
        Some(AddressFamily::V4) => {
            Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
        }
        Some(AddressFamily::V6) => Ipv6Addr::from(*bytes).to_string(),
        None => bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
    }
}

/// `address:port`, with IPv6 addresses in brackets.
#[must_use]
pub fn endpoint(family: u16, bytes: &[u8; 16], port: u16) -> String {
    let a = address(family, bytes);
    if AddressFamily::from_af(family) == Some(AddressFamily::V6) {
        format!("[{a}]:{port}")
    } else {
        format!("{a}:{port}")
    }
}

/// Milliseconds as `1h02m03s` / `2m03s` / `3.4s`.
#[must_use]
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}.{}s", (ms % 1000) / 100)
    }
}

/// Flow list as a table, with a footer when truncated.
#[must_use]
pub fn flows_table(list: &FlowList) -> String {
    let rows: Vec<Vec<String>> = list
        .entries
        .iter()
        .map(|f| {
            vec![
                format!("{:#x}", f.flow_id),
                f.process_id.to_string(),
                protocol_name(f.ip_protocol),
                if f.direction == 1 { "in" } else { "out" }.to_owned(),
                endpoint(f.address_family, &f.local_address, f.local_port),
                endpoint(f.address_family, &f.remote_address, f.remote_port),
                duration(f.age_ms),
                f.bytes_inbound.to_string(),
                f.bytes_outbound.to_string(),
                f.packets_inbound.to_string(),
                f.packets_outbound.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "FLOW",
            "PID",
            "PROTO",
            "DIR",
            "LOCAL",
            "REMOTE",
            "AGE",
            "BYTES IN",
            "BYTES OUT",
            "PKTS IN",
            "PKTS OUT",
        ],
        &rows,
        &[1, 6, 7, 8, 9, 10],
    );
    if list.truncated() {
        let _ = writeln!(
            out,
            "({} of {} active flows shown)",
            list.entries.len(),
            list.total_flows
        );
    } else {
        let _ = writeln!(out, "({} active flows)", list.total_flows);
    }
    out
}

/// Flow list as one JSON object.
#[must_use]
pub fn flows_json(list: &FlowList) -> String {
    to_json(&flow_list_value(list))
}

const fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

const fn present(b: bool) -> &'static str {
    if b { "present" } else { "absent" }
}

/// Status as text.
#[must_use]
pub fn status_table(r: &StatusReport) -> String {
    let mut out = String::new();
    let device = match &r.device {
        DeviceState::Present => "present (driver loaded)".to_owned(),
        DeviceState::Absent => "absent (driver not loaded)".to_owned(),
        DeviceState::Error(e) => format!("unavailable: {e}"),
    };
    let rows = vec![
        vec![
            format!("driver service ({})", catalog::SERVICE_NAME),
            r.driver_service.describe(),
        ],
        vec!["BFE service".to_owned(), r.bfe_service.describe()],
        vec![
            format!("control device {}", catalog::DEVICE_USER_PATH),
            device,
        ],
    ];
    out.push_str(&table(&["COMPONENT", "STATE"], &rows, &[]));
    out.push('\n');
    match (&r.wfp, &r.wfp_error) {
        (Some(w), _) => {
            let rows = vec![
                vec![
                    "provider".to_owned(),
                    format!("{{{}}}", catalog::PROVIDER_KEY),
                    present(w.provider).to_owned(),
                ],
                vec![
                    "sublayer".to_owned(),
                    format!("{{{}}}", catalog::SUBLAYER_KEY),
                    present(w.sublayer).to_owned(),
                ],
            ];
            out.push_str(&table(&["OBJECT", "KEY", "STATE"], &rows, &[]));
            out.push('\n');
            let rows: Vec<Vec<String>> = w
                .callouts
                .iter()
                .map(|c| {
                    vec![
                        c.name.to_owned(),
                        c.layer.to_owned(),
                        present(c.present).to_owned(),
                        yes_no(c.registered).to_owned(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["CALLOUT", "LAYER", "STATE", "REGISTERED"],
                &rows,
                &[],
            ));
            out.push('\n');
            let rows: Vec<Vec<String>> = w
                .filters
                .iter()
                .map(|f| {
                    vec![
                        f.name.clone(),
                        f.layer.to_owned(),
                        present(f.present).to_owned(),
                        if f.flags.is_empty() {
                            "-".to_owned()
                        } else {
                            f.flags.join("|")
                        },
                    ]
                })
                .collect();
            out.push_str(&table(&["FILTER", "LAYER", "STATE", "FLAGS"], &rows, &[]));
            let summary = if w.fully_installed() {
                "wfpmon's filter-engine objects are installed"
            } else if w.fully_absent() {
                "wfpmon's filter-engine objects are not installed"
            } else {
                "wfpmon's filter-engine objects are PARTIALLY installed (run `wfpmonctl uninstall`, then `install`)"
            };
            let _ = writeln!(out, "\n{summary}");
        }
        (None, error) => {
            let _ = writeln!(
                out,
                "filter-engine objects: unknown ({})",
                error.as_deref().unwrap_or("not queried")
            );
        }
    }
    out
}

/// A service state as a JSON value: its name, or `{"unknown": N}`.
#[must_use]
pub fn service_state_value(s: ServiceState) -> Value {
    match s {
        ServiceState::NotInstalled => json!("not_installed"),
        ServiceState::Stopped => json!("stopped"),
        ServiceState::StartPending => json!("start_pending"),
        ServiceState::StopPending => json!("stop_pending"),
        ServiceState::Running => json!("running"),
        ServiceState::ContinuePending => json!("continue_pending"),
        ServiceState::PausePending => json!("pause_pending"),
        ServiceState::Paused => json!("paused"),
        ServiceState::Unknown(v) => json!({ "unknown": v }),
    }
}

/// The filter-engine part of `status` as a JSON value.
#[must_use]
pub fn wfp_status_value(w: &WfpStatus) -> Value {
    json!({
        "provider": { "key": catalog::PROVIDER_KEY.to_string(), "present": w.provider },
        "sublayer": { "key": catalog::SUBLAYER_KEY.to_string(), "present": w.sublayer },
        "installed": if w.fully_installed() { "yes" } else if w.fully_absent() { "no" } else { "partially" },
        "callouts": w.callouts.iter().map(|c| json!({
            "name": c.name,
            "key": c.key,
            "layer": c.layer,
            "present": c.present,
            "registered": c.registered,
            "flags": c.flags,
        })).collect::<Vec<_>>(),
        "filters": w.filters.iter().map(|f| json!({
            "name": f.name,
            "key": f.key,
            "layer": f.layer,
            "present": f.present,
            "flags": f.flags,
        })).collect::<Vec<_>>(),
    })
}

/// Status as a JSON value.
#[must_use]
pub fn status_value(r: &StatusReport) -> Value {
    let device = match &r.device {
        DeviceState::Present => json!("present"),
        DeviceState::Absent => json!("absent"),
        DeviceState::Error(e) => json!({ "error": e }),
    };
    json!({
        "driver_service": service_state_value(r.driver_service),
        "bfe_service": service_state_value(r.bfe_service),
        "device": device,
        "wfp": r.wfp.as_ref().map(wfp_status_value),
        "wfp_error": r.wfp_error,
    })
}

/// Status as one JSON object.
#[must_use]
pub fn status_json(r: &StatusReport) -> String {
    to_json(&status_value(r))
}

/// What the installed objects' lifetime means, in one sentence.
#[must_use]
pub const fn lifetime_note(lifetime: Lifetime) -> &'static str {
    match lifetime {
        Lifetime::Static => {
            "the objects last until BFE stops or the system restarts (use --persistent to keep them)"
        }
        Lifetime::Persistent => {
            "the objects are persistent: they survive reboots until `wfpmonctl uninstall`"
        }
        Lifetime::BootTime => {
            "the filters are boot-time: enforced from TCP/IP start until BFE has started; \
             the provider, sublayer and callouts are persistent"
        }
    }
}

/// What install added, one line per object, and what its lifetime means.
#[must_use]
pub fn install_text(r: &InstallReport, lifetime: Lifetime) -> String {
    let mut out = String::new();
    for o in &r.added {
        let flags = if o.flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", o.flags.join("|"))
        };
        let _ = writeln!(out, "added {} {} {{{}}}{flags}", o.kind, o.name, o.key);
    }
    let _ = writeln!(
        out,
        "installed {} filter-engine objects in one transaction",
        r.added.len()
    );
    let _ = writeln!(out, "{}", lifetime_note(lifetime));
    out
}

/// What uninstall deleted, one line per object.
#[must_use]
pub fn uninstall_text(r: &UninstallReport) -> String {
    let mut out = String::new();
    for o in &r.deleted {
        let _ = writeln!(out, "deleted {} {} {{{}}}", o.kind, o.name, o.key);
    }
    for o in &r.absent {
        let _ = writeln!(out, "already absent: {} {} {{{}}}", o.kind, o.name, o.key);
    }
    let _ = writeln!(
        out,
        "uninstalled: {} objects deleted, {} already absent",
        r.deleted.len(),
        r.absent.len()
    );
    out
}

/// Pretty-printed JSON text of a value.
fn to_json(value: &Value) -> String {
    // Writing a `Value` to a `String` cannot fail; `Display` is the
    // infallible route (`{:#}` pretty-prints).
    format!("{value:#}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{fake::FakeEngine, wfp_status};
    use crate::plan::{InstallOptions, Plan};

    fn sample_stats() -> Stats {
        Stats {
            header: wfpmon_core::protocol::Header {
                version: 1,
                size: 88,
            },
            counting_enabled: 1,
            reserved: 0,
            flows_active: 3,
            flows_tracked: 17,
            flows_deleted: 14,
            allocation_failures: 1,
            association_failures: 2,
            bytes_inbound: 123_456_789,
            bytes_outbound: u64::MAX,
            packets_inbound: 4242,
            packets_outbound: 77,
        }
    }

    fn v4_flow() -> FlowEntry {
        let mut local = [0u8; 16];
        local[..4].copy_from_slice(&[10, 1, 2, 3]);
        let mut remote = [0u8; 16];
        remote[..4].copy_from_slice(&[93, 184, 216, 34]);
        FlowEntry {
            flow_id: 0xdead_beef,
            process_id: 1234,
            age_ms: 3_723_000,
            bytes_inbound: 1000,
            bytes_outbound: 200,
            packets_inbound: 10,
            packets_outbound: 2,
            local_address: local,
            remote_address: remote,
            local_port: 51515,
            remote_port: 443,
            address_family: 2,
            ip_protocol: 6,
            direction: 0,
        }
    }

    fn v6_flow() -> FlowEntry {
        let local: Ipv6Addr = "fe80::1".parse().unwrap();
        let remote: Ipv6Addr = "2001:db8::53".parse().unwrap();
        FlowEntry {
            flow_id: 7,
            process_id: 4,
            age_ms: 1500,
            bytes_inbound: 64,
            bytes_outbound: 32,
            packets_inbound: 1,
            packets_outbound: 1,
            local_address: local.octets(),
            remote_address: remote.octets(),
            local_port: 5353,
            remote_port: 53,
            address_family: 23,
            ip_protocol: 17,
            direction: 1,
        }
    }

    #[test]
    fn table_alignment() {
        let t = table(
            &["A", "NUM"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "100".into()],
            ],
            &[1],
        );
        assert_eq!(t, "A    NUM\nxyz    1\nq    100\n");
    }

    #[test]
    fn stats_json_mirrors_every_field() {
        let s = sample_stats();
        let v: Value = serde_json::from_str(&stats_json(&s)).unwrap();
        assert_eq!(v["protocol_version"], s.header.version);
        assert_eq!(v["counting_enabled"], s.counting_enabled != 0);
        assert_eq!(v["flows_active"], s.flows_active);
        assert_eq!(v["flows_tracked"], s.flows_tracked);
        assert_eq!(v["flows_deleted"], s.flows_deleted);
        assert_eq!(v["allocation_failures"], s.allocation_failures);
        assert_eq!(v["association_failures"], s.association_failures);
        assert_eq!(v["bytes_inbound"], s.bytes_inbound);
        assert_eq!(
            v["bytes_outbound"].as_u64(),
            Some(s.bytes_outbound),
            "u64 stays exact"
        );
        assert_eq!(v["packets_inbound"], s.packets_inbound);
        assert_eq!(v["packets_outbound"], s.packets_outbound);
        assert_eq!(v.as_object().unwrap().len(), 11);
    }

    #[test]
    fn stats_table_has_every_value() {
        let s = sample_stats();
        let t = stats_table(&s);
        for (label, value) in [
            ("flows active", s.flows_active),
            ("flows tracked", s.flows_tracked),
            ("bytes out", s.bytes_outbound),
            ("packets in", s.packets_inbound),
            ("association failures", s.association_failures),
        ] {
            let line = t
                .lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("{label} in\n{t}"));
            assert!(line.ends_with(&value.to_string()), "{line}");
        }
        assert!(
            t.lines()
                .any(|l| l.starts_with("counting") && l.ends_with("on"))
        );
        let off = Stats {
            counting_enabled: 0,
            ..s
        };
        assert!(
            stats_table(&off)
                .lines()
                .any(|l| l.starts_with("counting") && l.ends_with("off"))
        );
        // Right-aligned: every value line has the same length.
        let lens: Vec<_> = t.lines().skip(1).map(str::len).collect();
        assert!(lens.windows(2).all(|w| w[0] == w[1]), "{t}");
    }

    #[test]
    fn addresses_and_endpoints() {
        let f = v4_flow();
        assert_eq!(
            endpoint(2, &f.local_address, f.local_port),
            "10.1.2.3:51515"
        );
        let g = v6_flow();
        assert_eq!(
            endpoint(23, &g.remote_address, g.remote_port),
            "[2001:db8::53]:53"
        );
        assert_eq!(address(99, &[0xab; 16]), "ab".repeat(16));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(3_723_000), "1h02m03s");
        assert_eq!(duration(123_000), "2m03s");
        assert_eq!(duration(1_500), "1.5s");
        assert_eq!(duration(0), "0.0s");
    }

    #[test]
    fn flows_table_rows_follow_inputs() {
        let list = FlowList {
            total_flows: 2,
            entries: vec![v4_flow(), v6_flow()],
        };
        let t = flows_table(&list);
        let lines: Vec<_> = t.lines().collect();
        assert!(lines[0].starts_with("FLOW"));
        for (line, f) in lines[1..3].iter().zip(&list.entries) {
            let cells: Vec<_> = line.split_whitespace().collect();
            assert_eq!(cells[0], format!("{:#x}", f.flow_id));
            assert_eq!(cells[1], f.process_id.to_string());
            assert_eq!(cells[2], protocol_name(f.ip_protocol));
            assert_eq!(
                cells[4],
                endpoint(f.address_family, &f.local_address, f.local_port)
            );
            assert_eq!(
                cells[5],
                endpoint(f.address_family, &f.remote_address, f.remote_port)
            );
            assert_eq!(cells[6], duration(f.age_ms));
            assert_eq!(
                cells[7..],
                [
                    f.bytes_inbound.to_string(),
                    f.bytes_outbound.to_string(),
                    f.packets_inbound.to_string(),
                    f.packets_outbound.to_string()
                ]
            );
        }
        assert_eq!(lines[1].split_whitespace().nth(3), Some("out"));
        assert_eq!(lines[2].split_whitespace().nth(3), Some("in"));
        assert_eq!(lines[3], "(2 active flows)");

        let partial = FlowList {
            total_flows: 10,
            entries: vec![v4_flow()],
        };
        assert!(flows_table(&partial).ends_with("(1 of 10 active flows shown)\n"));
    }

    #[test]
    fn flows_json_mirrors_inputs() {
        let list = FlowList {
            total_flows: 5,
            entries: vec![v4_flow(), v6_flow()],
        };
        let v: Value = serde_json::from_str(&flows_json(&list)).unwrap();
        assert_eq!(v["total_flows"], 5);
        assert_eq!(v["returned"], 2);
        assert_eq!(v["truncated"], true);
        let flows = v["flows"].as_array().unwrap();
        for (j, f) in flows.iter().zip(&list.entries) {
            assert_eq!(j["flow_id"], f.flow_id);
            assert_eq!(j["process_id"], f.process_id);
            assert_eq!(j["ip_protocol"], f.ip_protocol);
            assert_eq!(j["protocol"], protocol_name(f.ip_protocol));
            assert_eq!(j["direction"], direction_name(f.direction));
            assert_eq!(
                j["local_address"],
                address(f.address_family, &f.local_address)
            );
            assert_eq!(j["remote_port"], f.remote_port);
            assert_eq!(j["age_ms"], f.age_ms);
            assert_eq!(j["bytes_inbound"], f.bytes_inbound);
            assert_eq!(j["packets_outbound"], f.packets_outbound);
        }
        assert_eq!(flows[0]["family"], "ipv4");
        assert_eq!(flows[1]["family"], "ipv6");
    }

    fn status(wfp: Option<WfpStatus>) -> StatusReport {
        StatusReport {
            driver_service: ServiceState::Running,
            bfe_service: ServiceState::Running,
            device: DeviceState::Present,
            wfp_error: wfp.is_none().then(|| "BFE not running".to_owned()),
            wfp,
        }
    }

    #[test]
    fn status_rendering() {
        let plan = Plan::install(InstallOptions {
            persistent: true,
            boot_time: false,
        })
        .unwrap();
        let mut engine = FakeEngine::default();
        crate::engine::install(&mut engine, &plan).unwrap();
        engine.registered.push(catalog::CALLOUTS[0].key);
        let w = wfp_status(&mut engine, &plan).unwrap();
        let r = status(Some(w.clone()));
        let t = status_table(&r);
        assert!(t.contains("driver service (wfpmon)"));
        for c in &w.callouts {
            let line = t.lines().find(|l| l.starts_with(c.name)).unwrap();
            assert!(line.contains(c.layer));
            assert!(
                line.ends_with(if c.registered { "yes" } else { "no" }),
                "{line}"
            );
        }
        for f in &w.filters {
            let line = t.lines().find(|l| l.starts_with(&f.name)).unwrap();
            assert!(line.ends_with("PERSISTENT"), "{line}");
        }
        assert!(t.contains("objects are installed"));

        let v: Value = serde_json::from_str(&status_json(&r)).unwrap();
        assert_eq!(v["driver_service"], "running");
        assert_eq!(v["device"], "present");
        assert_eq!(v["wfp"]["callouts"][0]["registered"], true);
        assert_eq!(v["wfp"]["callouts"][1]["registered"], false);
        assert_eq!(
            v["wfp"]["filters"].as_array().unwrap().len(),
            w.filters.len()
        );

        let down = status(None);
        assert!(status_table(&down).contains("unknown (BFE not running)"));
        let v: Value = serde_json::from_str(&status_json(&down)).unwrap();
        assert!(v["wfp"].is_null());
    }

    #[test]
    fn install_and_uninstall_reports() {
        let plan = Plan::install(InstallOptions {
            persistent: false,
            boot_time: true,
        })
        .unwrap();
        let mut e = FakeEngine::default();
        let r = crate::engine::install(&mut e, &plan).unwrap();
        let t = install_text(&r, plan.lifetime());
        assert_eq!(t.lines().count(), plan.add_order().len() + 2);
        assert!(t.ends_with(&format!("{}\n", lifetime_note(Lifetime::BootTime))));
        assert!(
            t.lines()
                .filter(|l| l.starts_with("added filter"))
                .all(|l| l.ends_with("[BOOTTIME]"))
        );
        let u = crate::engine::uninstall(&mut e, &Plan::uninstall()).unwrap();
        let t = uninstall_text(&u);
        assert!(t.ends_with(&format!(
            "{} objects deleted, 0 already absent\n",
            plan.add_order().len()
        )));
    }
}
