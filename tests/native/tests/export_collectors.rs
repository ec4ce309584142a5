//! The exporter (`tools/wfpmon-export`) end to end: its own code against
//! the real `wfpmon.sys` on the native host (IOCTLs as
//! `IRP_MJ_DEVICE_CONTROL` through the host's I/O path), sending to real
//! collectors on loopback.
//!
//! - UDP to Debian's `nfcapd` (started here on 127.0.0.1 on a free port,
//!   stopped after): TCP and UDP flows, IPv4 and IPv6, inbound and
//!   outbound, flows open before the exporter started, flows longer than
//!   the active timeout (the host's simulated clock jumps past it), flows
//!   ending while a listing pass runs, and an event-ring overflow with
//!   flows whose "ended" event was overwritten. `nfdump -r` must show every
//!   flow with its exact bytes and packets per direction once its deltas
//!   are summed, its protocol, ports and addresses, and times within the
//!   driver's clock; nfcapd must report no sequence error. The metrics file
//!   must pass `promtool check metrics` with the driver's totals.
//! - TCP (nfcapd has no TCP input) to a collector in this test that decodes
//!   with the exporter's decoder, killed and restarted mid-run: every
//!   record delivered or counted as dropped; then the driver stops under
//!   the exporter (forced-end records) and a new driver instance is picked
//!   up.
//!
//! Without the image the tests print `SKIPPED: …`. Without nfcapd, nfdump
//! or promtool they print `SKIPPED: …` too — unless
//! `WFPMON_REQUIRE_COLLECTORS=1` (scripts/test.sh sets it: set-up installs
//! them), when a missing tool fails the test.

#![cfg(target_os = "linux")]
// As in the host's library: the scenarios read best as one list each, and
// the collector thread holds its lock across each decoded message.
#![allow(clippy::too_many_lines, clippy::significant_drop_tightening)]

use std::collections::HashMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wfpmon_export::accounting::Counters;
use wfpmon_export::config::{self, Config};
use wfpmon_export::exporter::{Exporter, local_view};
use wfpmon_export::ipfix::{self, Decoder};
use wfpmon_export::metrics::write_atomically;
use wfpmon_export::run;
use wfpmon_native_host::clock;
use wfpmon_native_host::image_present;
use wfpmon_native_host::world::{Config as WorldConfig, FilterKind, HostFlow, World};
use wfpmonctl::listing::{ControlDevice, IoctlError};

/// The control device over the host's IRP path; after the image unloaded,
/// every call fails as `CreateFile`/`DeviceIoControl` would on a device
/// that is gone (`ERROR_FILE_NOT_FOUND`).
struct NativeDevice<'w> {
    world: &'w World,
}

impl ControlDevice for NativeDevice<'_> {
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        if self.world.unloaded.load(Ordering::SeqCst) {
            return Err(IoctlError::win32(2));
        }
        let (status, out) = self.world.ioctl(code, input, output.len());
        if status < 0 {
            return Err(IoctlError::win32(match status.cast_unsigned() {
                0xC000_0010 => 1,
                0xC000_000D => 87,
                0xC000_0023 => 122,
                0x8000_0005 => 234,
                _ => 317,
            }));
        }
        output[..out.len()].copy_from_slice(&out);
        Ok(out.len())
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The tools, or a loud skip (a failure when they are required).
fn tools(names: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| tool(n)).collect();
    if found.iter().all(Option::is_some) {
        return Some(found.into_iter().flatten().collect());
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    let message = format!(
        "SKIPPED: {} not installed (scripts/linux/setup.sh installs nfdump and prometheus)",
        missing.join(", ")
    );
    assert!(
        std::env::var("WFPMON_REQUIRE_COLLECTORS").as_deref() != Ok("1"),
        "{message}"
    );
    println!("{message}");
    eprintln!("{message}");
    None
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wfpmon-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

/// Wall time (Unix ms) on the driver's clock — the interrupt time the
/// image reads (`clock::published_100ns`): the host's simulated time jumps
/// move both together, as they would on a machine.
#[derive(Clone, Copy)]
struct Clock {
    unix_ms: u64,
    driver: u64,
}

impl Clock {
    fn new() -> Self {
        Self {
            unix_ms: wfpmon_export::exporter::unix_ms(),
            driver: clock::published_100ns(),
        }
    }
    fn now(self) -> u64 {
        self.unix_ms + clock::published_100ns().saturating_sub(self.driver) / 10_000
    }
}

/// Processes the flows belong to (`4 + n % PROCESSES`).
const PROCESSES: u64 = 200;

/// What the test sent through a flow, and when it began and ended.
#[derive(Clone)]
struct Truth {
    flow: HostFlow,
    counters: Counters,
    start_ms: u64,
    end_ms: Option<u64>,
}

struct Traffic<'w> {
    world: &'w World,
    flows: HashMap<u64, Truth>,
    next: u64,
    clock: Clock,
}

impl<'w> Traffic<'w> {
    fn new(world: &'w World, clock: Clock, first: u64) -> Self {
        Self {
            world,
            flows: HashMap::new(),
            next: first,
            clock,
        }
    }

    /// A new flow `n`: IPv6 every third, UDP every fifth, inbound every
    /// seventh; process `4 + n % PROCESSES`.
    fn open(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        // 200 processes: the driver's process table (32 shards of 32)
        // holds them all, so every flow is attributed to its process.
        let pid = 4 + n % PROCESSES;
        let path: Arc<[u16]> = wfpmon_native_host::world::default_process_path(pid)
            .encode_utf16()
            .collect();
        let f = self.world.open_flow_of(
            n.is_multiple_of(3),
            n % 5 != 4,
            n.is_multiple_of(7),
            n,
            Some(pid),
            Some(path),
        );
        let start_ms = self.clock.now();
        let r = self.world.establish(&f, FilterKind::Inspection);
        assert!(r.is_some_and(|r| r.context == 0), "flow {n} established");
        self.flows.insert(
            n,
            Truth {
                flow: f,
                counters: Counters::default(),
                start_ms,
                end_ms: None,
            },
        );
        n
    }

    /// Traffic through flow `n`, a function of `round`.
    fn send(&mut self, n: u64, round: u64) {
        let t = self.flows.get_mut(&n).expect("known flow");
        let size = u32::try_from(1 + (n * 131 + round * 17) % 1400).unwrap_or(1);
        let f = &t.flow;
        if f.tcp {
            let ok = self
                .world
                .stream(f, size as usize, true, FilterKind::Inspection)
                .is_some_and(|r| r.context != 0)
                && self
                    .world
                    .stream(f, size as usize / 2 + 1, false, FilterKind::Inspection)
                    .is_some_and(|r| r.context != 0);
            assert!(ok, "flow {n}: counted");
            t.counters = t.counters.plus(Counters {
                bytes_out: u64::from(size),
                bytes_in: u64::from(size / 2 + 1),
                packets_out: 1,
                packets_in: 1,
            });
        } else {
            let out = [size % 512 + 1];
            let inb = [size % 100 + 1, size % 300 + 1];
            let ok = self
                .world
                .datagrams(f, &out, false, FilterKind::Inspection)
                .is_some_and(|r| r.context != 0)
                && self
                    .world
                    .datagrams(f, &inb, true, FilterKind::Inspection)
                    .is_some_and(|r| r.context != 0);
            assert!(ok, "flow {n}: counted");
            t.counters = t.counters.plus(Counters {
                bytes_out: u64::from(out[0]),
                bytes_in: u64::from(inb[0] + inb[1]),
                packets_out: 1,
                packets_in: 2,
            });
        }
    }

    fn end(&mut self, n: u64) {
        let t = self.flows.get_mut(&n).expect("known flow");
        if t.end_ms.is_none() {
            self.world.end_flow(&t.flow);
            t.end_ms = Some(self.clock.now());
        }
    }

    fn open_ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, t)| t.end_ms.is_none())
            .map(|(n, _)| *n)
            .collect();
        v.sort_unstable();
        v
    }

    fn totals(&self) -> Counters {
        self.flows
            .values()
            .fold(Counters::default(), |a, t| a.plus(t.counters))
    }
}

/// The key nfdump and the exporter's decoder both yield: the local port,
/// the protocol, IPv6 — unique per flow of these tests (local ports are
/// `1024 + n % 60000` and `n` stays below 60000).
type Key = (u16, u8, bool);

const fn key_of(t: &Truth) -> Key {
    (
        t.flow.local_port,
        if t.flow.tcp { 6 } else { 17 },
        t.flow.v6,
    )
}

/// The addresses and ports the records must carry, initiator first.
fn expected_endpoints(t: &Truth) -> (String, String, u16, u16) {
    let f = &t.flow;
    let (local, remote) = if f.v6 {
        (
            "::1".to_owned(),
            std::net::Ipv6Addr::from({
                let mut b = [0u8; 16];
                b[0] = 0x20;
                b[1] = 0x01;
                b[15] = u8::try_from(f.flow.handle & 0xFF).unwrap_or(0);
                b
            })
            .to_string(),
        )
    } else {
        (
            "10.0.0.1".to_owned(),
            std::net::Ipv4Addr::from(
                0xC0A8_0000 | u32::try_from(f.flow.handle & 0xFFFF).unwrap_or(0),
            )
            .to_string(),
        )
    };
    if f.inbound {
        (remote, local, f.remote_port, f.local_port)
    } else {
        (local, remote, f.local_port, f.remote_port)
    }
}

/// Sums of what a collector showed, per flow.
#[derive(Default, Debug)]
struct Seen {
    counters: Counters,
    records: u64,
    first_ms: u64,
    last_ms: u64,
    endpoints: Option<(String, String, u16, u16)>,
}

/// Every flow of `truth` shows in `seen` once its deltas are summed, with
/// its exact counters, endpoints and times within the driver's clock.
fn check_flows(truth: &HashMap<u64, Truth>, seen: &HashMap<Key, Seen>, end_ms: u64) {
    assert_eq!(seen.len(), truth.len(), "one flow per flow of the driver");
    for (n, t) in truth {
        let s = seen
            .get(&key_of(t))
            .unwrap_or_else(|| panic!("flow {n} missing from the collector"));
        assert_eq!(
            s.counters, t.counters,
            "flow {n}: bytes and packets per direction ({} records)",
            s.records
        );
        assert_eq!(
            s.endpoints.as_ref(),
            Some(&expected_endpoints(t)),
            "flow {n}: addresses and ports"
        );
        // Times: start no earlier than the establishment, end no later than
        // the end (slack: ms truncation of the driver's 100 ns clock, and
        // the host's interrupt-time page, refreshed every 200 µs).
        let end = t.end_ms.unwrap_or(end_ms);
        let slack = 5;
        assert!(
            s.first_ms + slack >= t.start_ms && s.first_ms <= end + slack,
            "flow {n}: first {} not in [{}, {end}]",
            s.first_ms,
            t.start_ms
        );
        assert!(
            s.last_ms <= end + slack && s.last_ms >= s.first_ms,
            "flow {n}: last {} after {end}",
            s.last_ms
        );
    }
}

/// `2026-12-07T04:04:21.302` (UTC) as Unix ms.
fn parse_time(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('T')?;
    let mut parts = date.split('-').map(|x| x.parse::<i64>().ok());
    let (year, month, day) = (parts.next()??, parts.next()??, parts.next()??);
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (clock.next()??, clock.next()??, clock.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1000 + ms.parse::<i64>().ok()?).ok()
}

/// nfdump's JSON records, summed per flow.
fn read_nfdump(nfdump: &Path, dir: &Path) -> HashMap<Key, Seen> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("capture directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nfcapd.2"))
        })
        .collect();
    assert!(
        !files.is_empty(),
        "nfcapd wrote no file in {}",
        dir.display()
    );
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    for file in files {
        let out = Command::new(nfdump)
            .env("TZ", "UTC")
            .arg("-r")
            .arg(&file)
            .args(["-o", "json"])
            .output()
            .expect("nfdump runs");
        assert!(
            out.status.success(),
            "nfdump -r {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let records: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("nfdump -o json is JSON");
        for r in records {
            let num = |k: &str| r.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            let text = |k: &str| {
                r.get(k)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            let v6 = r.get("src6_addr").is_some();
            let (sa, da) = if v6 {
                (text("src6_addr"), text("dst6_addr"))
            } else {
                (text("src4_addr"), text("dst4_addr"))
            };
            let (sp, dp) = (
                u16::try_from(num("src_port")).unwrap_or(0),
                u16::try_from(num("dst_port")).unwrap_or(0),
            );
            let egress = num("direction") == 1;
            let local_port = if egress { sp } else { dp };
            let proto = u8::try_from(num("proto")).unwrap_or(0);
            // in_* are the initiator's (forward) counts, out_* the reverse.
            let (fwd_b, fwd_p, rev_b, rev_p) = (
                num("in_bytes"),
                num("in_packets"),
                num("out_bytes"),
                num("out_packets"),
            );
            let c = if egress {
                Counters {
                    bytes_out: fwd_b,
                    packets_out: fwd_p,
                    bytes_in: rev_b,
                    packets_in: rev_p,
                }
            } else {
                Counters {
                    bytes_in: fwd_b,
                    packets_in: fwd_p,
                    bytes_out: rev_b,
                    packets_out: rev_p,
                }
            };
            let first = text("first").and_then(|s| parse_time(&s)).expect("first");
            let last = text("last").and_then(|s| parse_time(&s)).expect("last");
            let s = seen.entry((local_port, proto, v6)).or_default();
            s.counters = s.counters.plus(c);
            s.first_ms = if s.records == 0 {
                first
            } else {
                s.first_ms.min(first)
            };
            s.last_ms = s.last_ms.max(last);
            s.records += 1;
            let ends = (sa.unwrap_or_default(), da.unwrap_or_default(), sp, dp);
            assert!(
                s.endpoints.as_ref().is_none_or(|e| *e == ends),
                "one flow, one set of endpoints: {ends:?}"
            );
            s.endpoints = Some(ends);
        }
    }
    seen
}

fn world_config(seed: u64) -> WorldConfig {
    WorldConfig {
        etw_session: None,
        simulated_clock: true,
        capacity: 40_000,
        ..WorldConfig::new(seed)
    }
}

fn export_config(collector: &str, transport: &str, metrics: &Path, extra: &str) -> Config {
    let text = format!(
        "[collector]\naddress = \"{collector}\"\ntransport = \"{transport}\"\n{extra}\n[export]\nobservation_domain_id = 7\nactive_timeout_seconds = 60\n[metrics]\ndirectory = '{}'\ntop_programs = 1000\n",
        metrics.display()
    );
    config::parse(&text, &config::system_resolve).expect("valid configuration")
}

/// Flushes in steps, pausing so that a burst never outruns the collector's
/// socket buffer (the exporter sends as fast as it reads the driver).
fn flush(exporter: &mut Exporter, dev: &mut NativeDevice<'_>) {
    exporter.flush(Some(dev));
    std::thread::sleep(Duration::from_millis(30));
}

struct Nfcapd {
    child: Child,
    log: PathBuf,
}

impl Nfcapd {
    fn start(bin: &Path, port: u16, dir: &Path) -> Self {
        let log = dir.join("nfcapd.log");
        let capture = dir.join("capture");
        std::fs::create_dir_all(&capture).expect("capture directory");
        // nfcapd writes its start-up and summary lines to stderr.
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(bin)
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "3600",
                // A 4 MiB socket buffer (nfcapd(1): "for high volume
                // traffic it is recommended to raise this value"): a
                // listing pass sends the active-timeout records of
                // thousands of flows at once.
                "-B",
                "4194304",
                "-w",
            ])
            .arg(&capture)
            .stdout(Stdio::from(file.try_clone().expect("log")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("nfcapd starts");
        // Ready when it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, log }
    }

    /// SIGTERM (nfcapd then writes its file) and the log.
    fn stop(mut self) -> String {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: a child process of this test, still running or a zombie
        // until waited for below.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn promtool_check(promtool: &Path, file: &Path) {
    let out = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).expect("metrics file"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[test]
fn ipfix_to_nfcapd_every_flow_exact_and_metrics_pass_promtool() {
    if !image_present() {
        return;
    }
    let Some(bins) = tools(&["nfcapd", "nfdump", "promtool"]) else {
        return;
    };
    let (nfcapd_bin, nfdump, promtool) = (&bins[0], &bins[1], &bins[2]);
    let dir = scratch("udp");
    let port = free_udp_port();
    let collector = Nfcapd::start(nfcapd_bin, port, &dir);
    let metrics_dir = dir.join("metrics");
    std::fs::create_dir_all(&metrics_dir).expect("metrics directory");
    let config = export_config(&format!("127.0.0.1:{port}"), "udp", &metrics_dir, "");

    let world = World::create(world_config(0xE7_0001)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(world.driver_entry(), 0, "DriverEntry failed");
    let clock = Clock::new();
    let mut traffic = Traffic::new(&world, clock, 1);
    let mut dev = NativeDevice { world: &world };

    // Flows open before the exporter starts: exported from their start.
    for _ in 0..300 {
        let n = traffic.open();
        traffic.send(n, 0);
    }
    let mut exporter = Exporter::new(&config, run::sink(&config).expect("UDP socket"))
        .with_clock(Box::new(move || clock.now()));
    exporter.start(&mut dev).expect("exporter starts");

    // New flows of every kind; some end at once.
    for i in 0..1500 {
        let n = traffic.open();
        traffic.send(n, 1);
        if i % 4 == 0 {
            traffic.end(n);
        }
        if i % 256 == 0 {
            exporter.poll(&mut dev, false).expect("events");
            flush(&mut exporter, &mut dev);
        }
    }
    exporter.drain(&mut dev).expect("events");
    flush(&mut exporter, &mut dev);

    // Long flows: twice past the active timeout, with traffic between.
    for round in 2..4 {
        clock::advance(61 * 10_000_000);
        for n in traffic.open_ids().into_iter().step_by(2) {
            traffic.send(n, round);
        }
        exporter.scan(&mut dev).expect("listing pass");
        flush(&mut exporter, &mut dev);
    }

    // Flows ending while a listing pass runs (another thread ends them).
    let ending: Vec<u64> = traffic.open_ids().into_iter().step_by(3).collect();
    let flows: Vec<HostFlow> = ending
        .iter()
        .map(|n| traffic.flows[n].flow.clone())
        .collect();
    let started = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !started.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            for f in &flows {
                world.end_flow(f);
            }
        });
        clock::advance(61 * 10_000_000);
        started.store(true, Ordering::SeqCst);
        exporter.scan(&mut dev).expect("listing pass");
    });
    for n in &ending {
        traffic.flows.get_mut(n).expect("flow").end_ms = Some(clock.now());
    }
    exporter.drain(&mut dev).expect("events");
    flush(&mut exporter, &mut dev);

    // The event ring overflows: more than its 16384 events while the
    // exporter does not read, among them the "ended" events of flows (of
    // distinct processes) with traffic since the last listing.
    let mut seen_processes = std::collections::HashSet::new();
    let lost: Vec<u64> = traffic
        .open_ids()
        .into_iter()
        .filter(|n| seen_processes.insert(n % PROCESSES))
        .take(100)
        .collect();
    for n in &lost {
        traffic.send(*n, 9);
        traffic.end(*n);
    }
    for _ in 0..17_000 {
        let n = traffic.open();
        traffic.send(n, 10);
    }
    exporter.poll(&mut dev, false).expect("events");
    assert!(
        exporter.health().event_ring_dropped > 0,
        "the ring overflowed"
    );
    exporter
        .scan(&mut dev)
        .expect("listing pass and reconciliation");
    flush(&mut exporter, &mut dev);
    assert!(
        exporter.health().reconciled_flows >= lost.len() as u64,
        "{:?}",
        exporter.health()
    );
    // The exporter learnt of these ends at the reconciliation: that is the
    // end time it reports for them (README: "Accounting").
    for n in &lost {
        traffic.flows.get_mut(n).expect("flow").end_ms = Some(clock.now());
    }
    assert_eq!(exporter.health().unattributed_bytes, 0);

    // Metrics: the driver's totals, through promtool.
    let text = exporter.refresh_metrics(Some(&mut dev)).to_owned();
    let prom = metrics_dir.join("wfpmon.prom");
    write_atomically(&metrics_dir, "wfpmon.prom", &text).expect("metrics written");
    promtool_check(promtool, &prom);
    let stats = world.query_stats_live().unwrap_or_else(|e| panic!("{e}"));
    let totals = traffic.totals();
    assert_eq!(
        (stats.bytes_inbound, stats.bytes_outbound),
        (totals.bytes_in, totals.bytes_out)
    );
    assert_eq!(
        metric(&text, "wfpmon_bytes_total{direction=\"in\"}"),
        stats.bytes_inbound
    );
    assert_eq!(
        metric(&text, "wfpmon_bytes_total{direction=\"out\"}"),
        stats.bytes_outbound
    );
    assert_eq!(
        metric(&text, "wfpmon_packets_total{direction=\"in\"}"),
        stats.packets_inbound
    );
    assert_eq!(
        metric(&text, "wfpmon_packets_total{direction=\"out\"}"),
        stats.packets_outbound
    );
    assert_eq!(metric(&text, "wfpmon_active_flows"), stats.flows_active);
    assert_eq!(metric(&text, "wfpmon_unattributed_flows_total"), 0);
    let per_process_in: u64 = text
        .lines()
        .filter(|l| l.starts_with("wfpmon_process_bytes_total{direction=\"in\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        per_process_in, stats.bytes_inbound,
        "per-program counters add up to the driver's total"
    );
    let app7 = traffic
        .flows
        .values()
        .filter(|t| t.flow.pid == 7)
        .fold(0, |a, t| a + t.counters.bytes_out);
    assert_eq!(
        metric(
            &text,
            "wfpmon_process_bytes_total{direction=\"out\",process=\"app7.exe\"}"
        ),
        app7
    );

    // Every flow ends; the exporter reads the ends in batches.
    for (i, n) in traffic.open_ids().into_iter().enumerate() {
        traffic.end(n);
        if i % 200 == 199 {
            exporter.poll(&mut dev, false).expect("events");
            flush(&mut exporter, &mut dev);
        }
    }
    exporter.drain(&mut dev).expect("events");
    flush(&mut exporter, &mut dev);
    assert_eq!(exporter.flows(), 0, "every flow ended in the exporter too");
    let end_ms = clock.now();
    let health = exporter.health();
    assert_eq!(
        (health.messages_dropped, health.collector_errors),
        (0, 0),
        "{health:?}"
    );
    eprintln!(
        "exporter: {} flows, {} events read ({} dropped by the ring), {} listing passes, {} records in {} messages",
        traffic.flows.len(),
        exporter.events_read,
        health.event_ring_dropped,
        exporter.passes,
        health.records_sent,
        health.messages_sent
    );

    std::thread::sleep(Duration::from_millis(500));
    let log = collector.stop();
    eprintln!(
        "nfcapd: {}",
        log.lines()
            .filter(|l| l.contains("Flows:"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(
        log.contains("Sequence Errors: 0"),
        "nfcapd saw sequence errors: {log}"
    );
    let seen = read_nfdump(nfdump, &collector_dir(&dir));
    let records: u64 = seen.values().map(|s| s.records).sum();
    assert_eq!(
        records, health.records_sent,
        "nfdump shows every record sent"
    );
    check_flows(&traffic.flows, &seen, end_ms);

    world.unload();
    if let Err(e) = world.finish() {
        panic!("{e}");
    }
    // WFPMON_EXPORT_KEEP=1 keeps the capture and the metrics file (the
    // examples in docs/windows.md were made so).
    if std::env::var_os("WFPMON_EXPORT_KEEP").is_some() {
        eprintln!("kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn collector_dir(dir: &Path) -> PathBuf {
    dir.join("capture")
}

/// A TCP collector: accepts connections one after another and decodes
/// every message with the exporter's decoder (fresh templates per
/// connection, as RFC 7011 §8.1 has them).
struct TcpCollector {
    stop: Arc<AtomicBool>,
    records: Arc<std::sync::Mutex<Vec<ipfix::Record>>>,
    received: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpCollector {
    fn start(port: u16, pen: u32) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("collector binds");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(std::sync::Mutex::new(Vec::new()));
        let received = Arc::new(AtomicU64::new(0));
        let (s, r, n) = (
            Arc::clone(&stop),
            Arc::clone(&records),
            Arc::clone(&received),
        );
        let thread = std::thread::spawn(move || {
            use std::io::Read as _;
            while !s.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).expect("blocking");
                conn.set_read_timeout(Some(Duration::from_millis(20)))
                    .expect("timeout");
                let mut decoder = Decoder::default();
                let mut buf: Vec<u8> = Vec::new();
                let mut chunk = vec![0u8; 65_536];
                while !s.load(Ordering::SeqCst) {
                    match conn.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                    // Whole messages: the header's length field.
                    while buf.len() >= 4 {
                        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                        if len < ipfix::HEADER_LEN || buf.len() < len {
                            break;
                        }
                        let m = decoder.decode(&buf[..len]).expect("a valid IPFIX message");
                        let mut got = r.lock().expect("records");
                        for (t, f) in &m.records {
                            got.push(ipfix::record_of(*t, f, pen).expect("every field"));
                        }
                        n.fetch_add(m.records.len() as u64, Ordering::SeqCst);
                        buf.drain(..len);
                    }
                }
            }
        });
        Self {
            stop,
            records,
            received,
            thread: Some(thread),
        }
    }

    /// Killed: the listener and the connection close at once.
    fn kill(mut self) -> Vec<ipfix::Record> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("collector thread");
        }
        std::mem::take(&mut *self.records.lock().expect("records"))
    }
}

fn sum_records(records: &[ipfix::Record]) -> HashMap<Key, Counters> {
    let mut m: HashMap<Key, Counters> = HashMap::new();
    for r in records {
        let local_port = if r.direction == 1 {
            r.source_port
        } else {
            r.destination_port
        };
        let (bi, bo, pi, po) = local_view(r);
        let e = m.entry((local_port, r.protocol, r.v6)).or_default();
        *e = e.plus(Counters {
            bytes_in: bi,
            bytes_out: bo,
            packets_in: pi,
            packets_out: po,
        });
    }
    m
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ipfix_over_tcp_survives_a_collector_restart_and_a_driver_restart() {
    if !image_present() {
        return;
    }
    let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = probe.local_addr().expect("address").port();
    drop(probe);
    let dir = scratch("tcp");
    // A small queue and small messages, so that the outage overflows it.
    let config = export_config(
        &format!("127.0.0.1:{port}"),
        "tcp",
        &dir,
        "mtu = 512\nqueue_messages = 64\nreconnect_max_seconds = 1\n",
    );
    let pen = config.enterprise_number;
    let mut collector = TcpCollector::start(port, pen);

    let world = World::create(world_config(0xE7_0002)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(world.driver_entry(), 0, "DriverEntry failed");
    let clock = Clock::new();
    let mut traffic = Traffic::new(&world, clock, 1);
    let mut dev = NativeDevice { world: &world };
    let mut exporter = Exporter::new(&config, run::sink(&config).expect("TCP sender"));
    exporter = exporter.with_clock(Box::new(move || clock.now()));
    exporter.start(&mut dev).expect("exporter starts");

    // Phase 1, collector up: 40 flows open, send and end.
    let phase1: Vec<u64> = (0..40).map(|_| traffic.open()).collect();
    for n in &phase1 {
        traffic.send(*n, 1);
        traffic.end(*n);
    }
    exporter.drain(&mut dev).expect("events");
    exporter.flush(Some(&mut dev));
    assert!(
        exporter.drain_sink(Duration::from_secs(10)),
        "phase 1 delivered"
    );
    let sent1 = exporter.health().records_sent;
    wait_for("phase 1 at the collector", || {
        collector.received.load(Ordering::SeqCst) == sent1
    });
    let mut delivered = collector.kill();
    assert_eq!(delivered.len() as u64, sent1);

    // Phase 2, collector killed: more messages than the queue holds.
    let phase2: Vec<u64> = (0..600).map(|_| traffic.open()).collect();
    for n in &phase2 {
        traffic.send(*n, 2);
        traffic.end(*n);
    }
    exporter.drain(&mut dev).expect("events");
    exporter.flush(Some(&mut dev));
    std::thread::sleep(Duration::from_millis(300));
    let h = exporter.health();
    assert!(
        h.records_dropped > 0 && h.messages_dropped > 0,
        "the full queue dropped messages, counted: {h:?}"
    );
    assert!(
        h.collector_errors > 0,
        "failed connection attempts counted: {h:?}"
    );
    assert!(!h.collector_up);

    // The collector comes back: the queue drains into it.
    collector = TcpCollector::start(port, pen);
    assert!(
        exporter.drain_sink(Duration::from_secs(20)),
        "queue drained after the restart"
    );

    // Phase 3, the driver stops under the exporter with flows open, then a
    // new instance starts and is picked up.
    let phase3: Vec<u64> = (0..30).map(|_| traffic.open()).collect();
    for n in &phase3 {
        traffic.send(*n, 3);
    }
    clock::advance(61 * 10_000_000);
    exporter.scan(&mut dev).expect("listing pass");
    world.unload();
    if let Err(e) = world.finish() {
        panic!("{e}");
    }
    let err = exporter
        .poll(&mut dev, false)
        .expect_err("the driver is gone");
    eprintln!("driver gone: {err}");
    exporter.driver_lost();
    exporter.flush(Some(&mut dev));
    assert_eq!(exporter.flows(), 0);
    for n in &phase3 {
        traffic.flows.get_mut(n).expect("flow").end_ms = Some(clock.now());
    }
    let truth_first: HashMap<u64, Truth> = std::mem::take(&mut traffic.flows);
    // The first world goes before the next is made (one at a time).
    drop(world);

    let world = World::create(world_config(0xE7_0003)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(world.driver_entry(), 0, "DriverEntry failed");
    let clock2 = Clock::new();
    let mut traffic = Traffic::new(&world, clock2, 50_000);
    let mut dev = NativeDevice { world: &world };
    exporter = exporter.with_clock(Box::new(move || clock2.now()));
    exporter.start(&mut dev).expect("exporter starts again");
    let phase4: Vec<u64> = (0..25).map(|_| traffic.open()).collect();
    for n in &phase4 {
        traffic.send(*n, 4);
        traffic.end(*n);
    }
    exporter.drain(&mut dev).expect("events");
    exporter.flush(Some(&mut dev));
    assert!(exporter.drain_sink(Duration::from_secs(20)), "delivered");
    let h = exporter.health();
    wait_for("everything at the collector", || {
        collector.received.load(Ordering::SeqCst) + sent1 == h.records_sent
    });
    delivered.extend(collector.kill());
    eprintln!("TCP: {h:?}");

    // Every record was delivered or counted as dropped.
    let produced = h.records_sent + h.records_dropped;
    assert_eq!(delivered.len() as u64, h.records_sent);
    assert_eq!(h.driver_losses, 1);
    let sums = sum_records(&delivered);
    // Flows of phases 1, 3 and 4 were never in a dropped message: exact.
    for (n, t) in truth_first
        .iter()
        .filter(|(n, _)| phase1.contains(n) || phase3.contains(n))
        .chain(traffic.flows.iter())
    {
        assert_eq!(
            sums.get(&key_of(t)).copied().unwrap_or_default(),
            t.counters,
            "flow {n}"
        );
    }
    // Phase 2 (one record per flow): delivered exactly, or dropped and
    // counted.
    assert_eq!(produced, delivered.len() as u64 + h.records_dropped);
    let arrived2 = phase2
        .iter()
        .filter(|n| sums.contains_key(&key_of(&truth_first[n])))
        .count() as u64;
    assert_eq!(
        arrived2 + h.records_dropped,
        phase2.len() as u64,
        "each phase-2 flow delivered or counted as dropped"
    );
    for n in &phase2 {
        let t = &truth_first[n];
        if let Some(c) = sums.get(&key_of(t)) {
            assert_eq!(*c, t.counters, "flow {n}");
        }
    }
    world.unload();
    if let Err(e) = world.finish() {
        panic!("{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /metrics` from the exporter's local endpoint.
fn http_get(port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

fn value_in(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Sets the loop's stop flag when dropped: a failed check must not leave
/// the loop running (the scope would wait for it forever).
struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn the_service_loop_waits_for_the_driver_exports_serves_metrics_and_stops_with_forced_ends() {
    if !image_present() {
        return;
    }
    // The collector: a UDP socket this test reads with the exporter's
    // decoder.
    let collector = UdpSocket::bind("127.0.0.1:0").expect("collector socket");
    collector
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let port = collector.local_addr().expect("address").port();
    let metrics_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = scratch("loop");
    let text = format!(
        "[collector]\naddress = \"127.0.0.1:{port}\"\n[export]\nscan_interval_seconds = 1\n[metrics]\ndirectory = '{}'\nlisten = \"127.0.0.1:{metrics_port}\"\ninterval_seconds = 1\n",
        dir.display()
    );
    let config = config::parse(&text, &config::system_resolve).expect("configuration");
    let world = World::create(world_config(0xE7_0004)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(world.driver_entry(), 0, "DriverEntry failed");
    let stop = AtomicBool::new(false);
    let driver_present = AtomicBool::new(false);
    let opens = AtomicU64::new(0);
    let log = std::sync::Mutex::new(Vec::<String>::new());
    let clock = Clock::new();
    let mut records: Vec<ipfix::Record> = Vec::new();
    let mut traffic = Traffic::new(&world, clock, 1);
    std::thread::scope(|s| {
        let _stop_on_drop = StopOnDrop(&stop);
        let runner = s.spawn(|| {
            let mut log_line = |_: run::Level, m: &str| {
                log.lock().expect("log").push(m.to_owned());
            };
            run::run(
                &config,
                || {
                    opens.fetch_add(1, Ordering::SeqCst);
                    if driver_present.load(Ordering::SeqCst) {
                        Ok(NativeDevice { world: &world })
                    } else {
                        Err("the wfpmon control device does not exist".to_owned())
                    }
                },
                &stop,
                false,
                Duration::from_millis(200),
                &mut log_line,
            )
        });
        // No driver yet: the loop keeps trying and serves its health.
        wait_for("metrics without a driver", || {
            http_get(metrics_port)
                .is_some_and(|t| value_in(&t, "wfpmon_export_driver_up") == Some(0))
        });
        wait_for("a second attempt to open", || {
            opens.load(Ordering::SeqCst) >= 2
        });
        driver_present.store(true, Ordering::SeqCst);
        wait_for("the driver picked up", || {
            http_get(metrics_port)
                .is_some_and(|t| value_in(&t, "wfpmon_export_driver_up") == Some(1))
        });
        // Flows: 30 end, 20 stay open until the stop.
        let ids: Vec<u64> = (0..50).map(|_| traffic.open()).collect();
        for n in &ids {
            traffic.send(*n, 1);
        }
        for n in &ids[..30] {
            traffic.end(*n);
        }
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 65_536];
        let mut receive = |records: &mut Vec<ipfix::Record>| {
            while let Ok(k) = collector.recv(&mut buf) {
                let m = decoder.decode(&buf[..k]).expect("valid IPFIX");
                for (t, f) in &m.records {
                    records
                        .push(ipfix::record_of(*t, f, config.enterprise_number).expect("fields"));
                }
            }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while records.len() < 30 && Instant::now() < deadline {
            receive(&mut records);
        }
        assert_eq!(
            records.len(),
            30,
            "the 30 ended flows' records; log {:?}; metrics {:?}",
            log.lock().map(|l| l.clone()).unwrap_or_default(),
            http_get(metrics_port).map(|t| t
                .lines()
                .filter(|l| l.starts_with("wfpmon_export"))
                .collect::<Vec<_>>()
                .join("; "))
        );
        let totals = traffic.totals();
        wait_for("metrics with the traffic", || {
            http_get(metrics_port).is_some_and(|t| {
                value_in(&t, "wfpmon_bytes_total{direction=\"in\"}") == Some(totals.bytes_in)
                    && value_in(&t, "wfpmon_active_flows") == Some(20)
            })
        });
        stop.store(true, Ordering::SeqCst);
        runner
            .join()
            .expect("loop thread")
            .expect("the loop ends cleanly");
        receive(&mut records);
    });
    // The stop gave the 20 open flows their forced-end records: every flow
    // sums to what it carried.
    assert_eq!(records.len(), 50, "30 ends and 20 forced ends");
    let forced = records
        .iter()
        .filter(|r| r.end_reason == ipfix::end_reason::FORCED_END)
        .count();
    assert_eq!(forced, 20);
    let sums = sum_records(&records);
    for (n, t) in &traffic.flows {
        assert_eq!(
            sums.get(&key_of(t)).copied().unwrap_or_default(),
            t.counters,
            "flow {n}"
        );
    }
    let log = log.lock().expect("log").clone();
    assert!(
        log.iter()
            .any(|l| l.contains("connected to the wfpmon driver")),
        "{log:?}"
    );
    let file = std::fs::read_to_string(dir.join("wfpmon.prom")).expect("the metrics file");
    assert!(file.contains("wfpmon_export_records_total 50"), "{file}");
    if let Some(bins) = tools(&["promtool"]) {
        promtool_check(&bins[0], &dir.join("wfpmon.prom"));
    }
    for n in traffic.open_ids() {
        traffic.end(n);
    }
    world.unload();
    if let Err(e) = world.finish() {
        panic!("{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
