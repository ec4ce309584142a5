//! The `flows` view: flow entries with process names and rates, filtered,
//! sorted and cut after the whole list is fetched, as serde structures
//! (schema `wfpmon.flows/2`, documented in the README).
//!
//! ICMP: at the ALE layers WFP carries the ICMP type in the local-port field
//! and the ICMP code in the remote-port field (fwpmu.h:
//! `#define FWPM_CONDITION_ICMP_TYPE FWPM_CONDITION_IP_LOCAL_PORT`,
//! `#define FWPM_CONDITION_ICMP_CODE FWPM_CONDITION_IP_REMOTE_PORT`); the
//! driver stores those fields as they come, so ICMP flows show type/code.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::protocol::FlowEntry;

use crate::cli::{Filter, FlowsArgs, SortKey};
use crate::device::FlowList;

/// IP protocol numbers and names.
pub const PROTOCOLS: [(u8, &str); 4] = [(1, "icmp"), (6, "tcp"), (17, "udp"), (58, "icmpv6")];

/// Name of an IP protocol number, or the number.
pub fn protocol_name(p: u8) -> String {
    let known = PROTOCOLS.iter().find(|(n, _)| *n == p);
    known.map_or_else(|| p.to_string(), |(_, name)| (*name).to_owned())
}

/// Parses `--proto`: a name of [`PROTOCOLS`] or a number.
pub fn protocol_number(text: &str) -> Result<u8, String> {
    let known = PROTOCOLS
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(text));
    let number = known.map(|(n, _)| *n).or_else(|| text.parse().ok());
    number.ok_or_else(|| "expected tcp, udp, icmp, icmpv6 or a protocol number".to_owned())
}

const fn is_icmp(p: u8) -> bool {
    p == 1 || p == 58
}

/// Byte counters (in, out) by flow handle of the previous snapshot, and the
/// seconds elapsed since, for rates.
#[derive(Clone, Debug, Default)]
pub struct Previous {
    pub elapsed: f64,
    pub bytes: HashMap<u64, (u64, u64)>,
}

impl Previous {
    pub fn of(entries: &[FlowEntry]) -> Self {
        let bytes = entries
            .iter()
            .map(|e| (e.flow_id, (e.bytes_inbound, e.bytes_outbound)));
        let bytes = bytes.collect();
        Self {
            elapsed: 0.0,
            bytes,
        }
    }
}

/// Bytes per second (in, out) of `bytes` counted since `before`, `interval`
/// seconds ago; without `before` (new since), over its `age`, or the
/// interval if that is longer.
pub fn rates(
    bytes: (u64, u64),
    before: Option<(u64, u64)>,
    interval: f64,
    age: f64,
) -> (Option<f64>, Option<f64>) {
    let span = if before.is_some() {
        interval
    } else {
        interval.max(age)
    }
    .max(1e-3);
    let (bin, bout) = before.unwrap_or_default();
    #[allow(clippy::cast_precision_loss)] // a rate: 52 bits are plenty
    let rate = |n: u64, b: u64| Some(n.saturating_sub(b) as f64 / span);
    (rate(bytes.0, bin), rate(bytes.1, bout))
}

/// One flow as shown (a row of the table, an element of the JSON
/// document's `flows`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowRow {
    /// The filter engine's flow handle, `0x` and 16 hex digits.
    pub flow_handle: String,
    /// Process id.
    pub pid: u64,
    /// Process name (`System`, `Idle`, or `?` when it cannot be read).
    pub process: String,
    /// The services the process hosts (service control manager), sorted.
    pub services: Vec<String>,
    /// Image path, drive-letter form where possible (from the driver's
    /// process table; `…` starts a truncated one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Protocol name (`tcp`, `udp`, `icmp`, `icmpv6`) or number.
    pub protocol: String,
    /// IP protocol number.
    pub ip_protocol: u8,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// Direction the flow was established in: `in` or `out`.
    pub direction: &'static str,
    /// Local address.
    pub local_address: String,
    /// Remote address.
    pub remote_address: String,
    /// The remote address's reverse-DNS name (`None`, JSON `null`: not
    /// known, not looked up, or `-n`).
    pub remote_host: Option<String>,
    /// The remote address, for filters.
    #[serde(skip)]
    pub remote_ip: IpAddr,
    /// Local port (not for ICMP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// Remote port (not for ICMP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// ICMP type (ICMP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u16>,
    /// ICMP code (ICMP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u16>,
    /// Milliseconds since the flow was established.
    pub age_ms: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes per second received since the previous refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_in: Option<f64>,
    /// Bytes per second sent since the previous refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_out: Option<f64>,
}

fn address(v4: bool, bytes: &[u8; 16]) -> IpAddr {
    if v4 {
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
    } else {
        Ipv6Addr::from(*bytes).into()
    }
}

/// The remote address of a flow entry.
pub fn remote_ip(e: &FlowEntry) -> IpAddr {
    let v4 = AddressFamily::from_af(e.address_family) == Some(AddressFamily::V4);
    address(v4, &e.remote_address)
}

/// Process name of a PID: the two pseudo-processes by name, others
/// through `resolve` (`?` when it fails).
pub fn process_name(pid: u64, resolve: &mut impl FnMut(u64) -> Option<String>) -> String {
    match pid {
        0 => "Idle".to_owned(),
        4 => "System".to_owned(),
        _ => resolve(pid).unwrap_or_else(|| "?".to_owned()),
    }
}

impl FlowRow {
    /// The view of `e`, with its rates when `previous` is known. A flow
    /// absent from it is new (its counters arrived within its age, or the
    /// interval if that is longer).
    pub(crate) fn new(e: &FlowEntry, process: String, previous: Option<&Previous>) -> Self {
        let v4 = AddressFamily::from_af(e.address_family) == Some(AddressFamily::V4);
        let icmp = is_icmp(e.ip_protocol);
        let (rate_in, rate_out) = previous.map_or((None, None), |p| {
            #[allow(clippy::cast_precision_loss)] // milliseconds: 52 bits are plenty
            let age = e.age_ms as f64 / 1000.0;
            let before = p.bytes.get(&e.flow_id).copied();
            rates((e.bytes_inbound, e.bytes_outbound), before, p.elapsed, age)
        });
        let remote_ip = address(v4, &e.remote_address);
        Self {
            flow_handle: format!("{:#018x}", e.flow_id),
            pid: e.process_id,
            process,
            services: Vec::new(),
            path: None,
            protocol: protocol_name(e.ip_protocol),
            ip_protocol: e.ip_protocol,
            family: if v4 { "ipv4" } else { "ipv6" },
            direction: if e.direction == 1 { "in" } else { "out" },
            local_address: address(v4, &e.local_address).to_string(),
            remote_address: remote_ip.to_string(),
            remote_host: None,
            remote_ip,
            local_port: (!icmp).then_some(e.local_port),
            remote_port: (!icmp).then_some(e.remote_port),
            icmp_type: icmp.then_some(e.local_port),
            icmp_code: icmp.then_some(e.remote_port),
            age_ms: e.age_ms,
            bytes_in: e.bytes_inbound,
            bytes_out: e.bytes_outbound,
            packets_in: e.packets_inbound,
            packets_out: e.packets_outbound,
            rate_in,
            rate_out,
        }
    }

    fn rate(&self) -> f64 {
        self.rate_in.unwrap_or(0.0) + self.rate_out.unwrap_or(0.0)
    }
}

impl Filter {
    /// Whether `f` passes every filter given.
    pub fn matches(&self, f: &FlowRow) -> bool {
        let name = self.process.as_deref().map(str::to_lowercase);
        let host = self.host.as_deref().map(str::to_lowercase);
        let remote = || self.remote.iter().any(|net| net.contains(&f.remote_ip));
        (self.remote.is_empty() || remote())
            && host.is_none_or(|h| {
                f.remote_host
                    .as_deref()
                    .is_some_and(|n| n.to_lowercase().contains(&h))
            })
            && self.pid.is_none_or(|p| p == f.pid)
            && name.is_none_or(|n| f.process.to_lowercase().contains(&n))
            && self.protocol.is_none_or(|p| p == f.ip_protocol)
            && self
                .port
                .is_none_or(|p| [f.local_port, f.remote_port].contains(&Some(p)))
            && self.family.as_deref().is_none_or(|v| f.family.ends_with(v))
            && self.direction.as_deref().is_none_or(|d| d == f.direction)
    }
}

/// Totals of the listed flows.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes per second received (from the second refresh on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_in: Option<f64>,
    /// Bytes per second sent (from the second refresh on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_out: Option<f64>,
}

/// The `wfpmon.flows/2` document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowsDoc {
    /// `wfpmon.flows/2`.
    pub schema: &'static str,
    /// When the list was read (RFC 3339).
    pub timestamp: String,
    /// Seconds since the previous refresh (from the second refresh on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<f64>,
    /// Flows the driver tracked (its maintained count).
    pub active: u32,
    /// Flows passing the filters, before `--top`.
    pub matched: usize,
    /// Totals of the matching flows.
    pub totals: Totals,
    /// The matching flows, sorted, cut to `--top`.
    pub flows: Vec<FlowRow>,
}

impl FlowsDoc {
    /// What one refresh of `flows` shows of the driver's flow `list`: a row
    /// per entry, with the rates since `previous` (`None` on the first
    /// refresh) and the names `name` gives it (process, path, services,
    /// host), filtered, totalled, sorted and cut as `args` say.
    pub(crate) fn from_list(
        args: &FlowsArgs,
        timestamp: String,
        list: &FlowList,
        previous: Option<&Previous>,
        name: &mut impl FnMut(&FlowEntry, &mut FlowRow),
    ) -> Self {
        let mut row = |e: &FlowEntry| {
            let mut row = FlowRow::new(e, String::new(), previous);
            name(e, &mut row);
            row
        };
        let all = list.entries.iter().map(&mut row).collect();
        Self::new(
            args,
            timestamp,
            list.total,
            all,
            previous.map(|p| p.elapsed),
        )
    }

    /// Filters, totals, sorts and cuts `all` as `args` say.
    pub(crate) fn new(
        args: &FlowsArgs,
        timestamp: String,
        active: u32,
        all: Vec<FlowRow>,
        interval: Option<f64>,
    ) -> Self {
        let mut flows: Vec<FlowRow> = all.into_iter().filter(|f| args.filter.matches(f)).collect();
        let sum = |field: fn(&FlowRow) -> u64| flows.iter().map(field).sum();
        let rate = |field: fn(&FlowRow) -> Option<f64>| {
            interval.map(|_| flows.iter().filter_map(field).sum())
        };
        let totals = Totals {
            bytes_in: sum(|f| f.bytes_in),
            bytes_out: sum(|f| f.bytes_out),
            packets_in: sum(|f| f.packets_in),
            packets_out: sum(|f| f.packets_out),
            rate_in: rate(|f| f.rate_in),
            rate_out: rate(|f| f.rate_out),
        };
        let bytes = |f: &FlowRow| f.bytes_in + f.bytes_out;
        match args.sort {
            SortKey::Bytes => flows.sort_by_key(|f| std::cmp::Reverse(bytes(f))),
            SortKey::Rate => {
                flows.sort_by(|a, b| b.rate().total_cmp(&a.rate()).then(bytes(b).cmp(&bytes(a))));
            }
            SortKey::Age => flows.sort_by_key(|f| std::cmp::Reverse(f.age_ms)),
            SortKey::Pid => flows.sort_by_key(|f| f.pid),
            SortKey::Proc => flows.sort_by_cached_key(|f| (f.process.to_lowercase(), f.pid)),
        }
        let matched = flows.len();
        flows.truncate(args.top.unwrap_or(usize::MAX));
        Self {
            schema: "wfpmon.flows/2",
            timestamp,
            interval_s: interval,
            active,
            matched,
            totals,
            flows,
        }
    }
}

/// Names flows by process id, asking `process_name` once per id (for
/// flows the driver's process table does not name).
pub fn by_pid(
    process_name: &mut impl FnMut(u64) -> Option<String>,
) -> impl FnMut(u64) -> String + '_ {
    let mut names: HashMap<u64, String> = HashMap::new();
    move |pid| {
        names
            .entry(pid)
            .or_insert_with(|| self::process_name(pid, process_name))
            .clone()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::device::sim::flow;

    /// A mixed set: TCP v4, UDP v6 inbound, ICMP echo.
    pub fn entries() -> Vec<FlowEntry> {
        let mut udp6 = flow(2);
        udp6.address_family = 23;
        udp6.ip_protocol = 17;
        udp6.direction = 1;
        udp6.local_address = "2001:db8:1234:5678:9abc:def0:1234:5678"
            .parse::<Ipv6Addr>()
            .unwrap()
            .octets();
        udp6.remote_address = "fe80::1".parse::<Ipv6Addr>().unwrap().octets();
        udp6.local_port = 53;
        let mut icmp = flow(3);
        icmp.ip_protocol = 1;
        icmp.local_port = 8;
        icmp.remote_port = 0;
        icmp.process_id = 4;
        vec![flow(1), udp6, icmp]
    }

    fn flows(previous: Option<&Previous>) -> Vec<FlowRow> {
        entries()
            .iter()
            .map(|e| FlowRow::new(e, format!("p{}.exe", e.process_id), previous))
            .collect()
    }

    fn doc(args: &FlowsArgs) -> FlowsDoc {
        FlowsDoc::new(args, "t".into(), 3, flows(None), None)
    }

    #[test]
    fn fields_follow_the_entry() {
        let f = flows(None);
        assert_eq!(f[0].flow_handle, "0x0000000000001001");
        assert_eq!(
            (f[0].local_address.as_str(), f[0].local_port),
            ("10.0.0.1", Some(50000))
        );
        assert_eq!(
            (f[0].protocol.as_str(), f[0].direction, f[0].family),
            ("tcp", "out", "ipv4")
        );
        assert_eq!(
            (f[1].family, f[1].direction, f[1].remote_address.as_str()),
            ("ipv6", "in", "fe80::1")
        );
        assert_eq!(
            (f[2].icmp_type, f[2].icmp_code, f[2].local_port),
            (Some(8), Some(0), None)
        );
        assert_eq!(f[0].rate_in, None);
    }

    #[test]
    fn json_keys_and_types() {
        let v = serde_json::to_value(doc(&FlowsArgs::default())).unwrap();
        assert_eq!(v["schema"], "wfpmon.flows/2");
        assert_eq!(v["flows"][0]["remote_host"], serde_json::Value::Null);
        assert_eq!(v["flows"][0]["services"], serde_json::json!([]));
        assert!(v["flows"][0].get("path").is_none() && v["flows"][0].get("remote_ip").is_none());
        assert!(v.get("interval_s").is_none());
        let icmp = v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["protocol"] == "icmp")
            .unwrap();
        assert_eq!(
            (icmp["icmp_type"].as_u64(), icmp.get("local_port")),
            (Some(8), None)
        );
        assert!(
            v["flows"][0]["flow_handle"]
                .as_str()
                .unwrap()
                .starts_with("0x")
        );
    }

    #[test]
    fn process_names() {
        let mut none = |_| None;
        assert_eq!(process_name(0, &mut none), "Idle");
        assert_eq!(process_name(4, &mut none), "System");
        assert_eq!(process_name(77, &mut none), "?");
        assert_eq!(process_name(77, &mut |p| Some(format!("x{p}"))), "x77");
    }

    #[test]
    fn rates_from_the_previous_snapshot() {
        let mut prev = Previous::of(&entries()[..1]);
        prev.elapsed = 0.5;
        prev.bytes.insert(0x1001, (40, 0));
        let f = flows(Some(&prev));
        assert_eq!(
            (f[0].rate_in, f[0].rate_out),
            (Some(120.0), Some(20.0)),
            "(100-40)/0.5, 10/0.5"
        );
        assert_eq!(
            f[1].rate_in,
            Some(100.0),
            "absent before: 200 bytes over its 2 s age"
        );
        let mut young = entries()[1];
        young.age_ms = 200;
        let young = FlowRow::new(&young, "x".into(), Some(&prev));
        assert_eq!(
            young.rate_in,
            Some(400.0),
            "younger than the interval: 200 B in 0.5 s"
        );
        let d = FlowsDoc::new(&FlowsArgs::default(), "t".into(), 3, f, Some(0.5));
        assert_eq!(d.totals.rate_in, Some(120.0 + 100.0 + 100.0));
        assert_eq!(d.interval_s, Some(0.5));
    }

    #[test]
    fn filters() {
        let count = |filter: Filter| {
            doc(&FlowsArgs {
                filter,
                ..FlowsArgs::default()
            })
            .matched
        };
        assert_eq!(count(Filter::default()), 3);
        assert_eq!(
            count(Filter {
                pid: Some(4),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                process: Some("P10".into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            count(Filter {
                protocol: Some(17),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                port: Some(443),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            count(Filter {
                port: Some(8),
                ..Filter::default()
            }),
            0,
            "ICMP type is no port"
        );
        assert_eq!(
            count(Filter {
                family: Some("6".into()),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                direction: Some("out".into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(protocol_number("ICMPv6"), Ok(58));
        assert_eq!(protocol_name(47), "47");
    }

    #[test]
    fn remote_address_cidr_and_host_filters() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let count = |filter: Filter| {
            let mut rows = flows(None);
            rows[0].remote_host = Some("Edge.Example.NET".into());
            rows[1].remote_host = Some("printer.local".into());
            let args = FlowsArgs {
                filter,
                ..FlowsArgs::default()
            };
            FlowsDoc::new(&args, "t".into(), 3, rows, None).matched
        };
        let remote = |nets: &[&str]| {
            count(Filter {
                remote: nets.iter().map(|n| net(n)).collect(),
                ..Filter::default()
            })
        };
        assert_eq!(remote(&["192.0.2.0/24"]), 2, "TCP and ICMP to 192.0.2.7");
        assert_eq!(remote(&["192.0.2.7/32"]), 2);
        assert_eq!(remote(&["192.0.2.8/32"]), 0);
        assert_eq!(
            remote(&["10.0.0.0/8"]),
            0,
            "the local address does not count"
        );
        assert_eq!(remote(&["fe80::/10"]), 1);
        assert_eq!(remote(&["fe80::/10", "192.0.2.0/25"]), 3, "any of several");
        assert_eq!(remote(&["::/0"]), 1, "an IPv6 block holds no IPv4 address");
        let host = |h: &str| {
            count(Filter {
                host: Some(h.into()),
                ..Filter::default()
            })
        };
        assert_eq!(host("example.net"), 1, "case-insensitive");
        assert_eq!(host("."), 2, "a flow without a name never matches");
        assert_eq!(host("nowhere"), 0);
    }

    #[test]
    fn sort_and_top() {
        let pids = |sort, top| {
            doc(&FlowsArgs {
                sort,
                top,
                ..FlowsArgs::default()
            })
            .flows
            .iter()
            .map(|f| f.pid)
            .collect::<Vec<_>>()
        };
        assert_eq!(pids(SortKey::Bytes, None), [4, 102, 101]);
        assert_eq!(pids(SortKey::Age, Some(2)), [4, 102]);
        assert_eq!(pids(SortKey::Pid, None), [4, 101, 102]);
        assert_eq!(pids(SortKey::Proc, None), [101, 102, 4]);
        let mut prev = Previous::of(&entries());
        prev.elapsed = 1.0;
        prev.bytes.insert(0x1001, (0, 0));
        let d = FlowsDoc::new(
            &FlowsArgs {
                sort: SortKey::Rate,
                top: Some(1),
                ..FlowsArgs::default()
            },
            "t".into(),
            3,
            flows(Some(&prev)),
            Some(1.0),
        );
        assert_eq!((d.flows[0].pid, d.matched, d.flows.len()), (101, 3, 1));
    }
}
