//! `wfpmonctl flows` end to end with a million flows: the tool's own
//! listing code (`wfpmonctl::listing::flows`: paging with the cursor,
//! decoding, rows, filters and sort, the printed table) against the real
//! `wfpmon.sys` on the native host, its IOCTLs sent as `IRP_MJ_DEVICE_CONTROL`
//! through the host's I/O path (`World::ioctl`).
//!
//! The flows carry known traffic (a function of their index), so every row
//! is checked exactly: each flow listed once, with its tuple, process and
//! counters. Memory stays bounded: every IOCTL's output buffer is at most
//! what one batch needs (`MAX_FLOWS_PER_CALL` entries). Without the image
//! the test prints `SKIPPED: no image at …` and passes (scripts/test.sh
//! builds the image first and refuses to run without it).
//!
//! `WFPMON_NATIVE_CTL_FLOWS` sets the number of flows (default 1000000).

#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use wfpmon_core::protocol;
use wfpmon_native_host::engine::Callout;
use wfpmon_native_host::image_present;
use wfpmon_native_host::world::{Config, FilterKind, HostFlow, Target, World};
use wfpmonctl::listing::{self, ControlDevice, IoctlError};

/// The control device as `DeviceIoControl` sees it: each call is an IRP to
/// the driver's dispatch routine (`METHOD_BUFFERED`: one system buffer of
/// max(in, out) bytes); a failing or warning status fails the call with the
/// Win32 code `RtlNtStatusToDosError` gives it. Records the buffers asked for.
struct NativeDevice<'w> {
    world: &'w World,
    calls: usize,
    list_calls: usize,
    largest_output: usize,
    largest_input: usize,
}

impl ControlDevice for NativeDevice<'_> {
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        self.calls += 1;
        if code == protocol::IOCTL_WFPMON_LIST_FLOWS {
            self.list_calls += 1;
        }
        self.largest_output = self.largest_output.max(output.len());
        self.largest_input = self.largest_input.max(input.len());
        let (status, out) = self.world.ioctl(code, input, output.len());
        if status < 0 {
            return Err(IoctlError::win32(win32_error(status)));
        }
        output[..out.len()].copy_from_slice(&out);
        Ok(out.len())
    }
}

impl NativeDevice<'_> {
    /// Bounded memory: no IOCTL buffer larger than one batch needs, and at
    /// least as many batches as `count` flows take at 256 per call.
    fn check_bounded(&self, count: u64) {
        let batch = protocol::flow_list_size(protocol::MAX_FLOWS_PER_CALL).expect("batch size");
        assert!(
            self.largest_output <= batch,
            "an IOCTL output buffer of {} bytes; one batch needs {batch}",
            self.largest_output
        );
        assert!(self.largest_input <= protocol::ListFlowsRequest::SIZE);
        let per_call = protocol::MAX_FLOWS_PER_CALL as u64;
        assert!(
            self.list_calls as u64 >= count.div_ceil(per_call),
            "{} batches cannot hold {count} flows",
            self.list_calls
        );
        assert_eq!(self.calls, self.list_calls, "only LIST_FLOWS was sent");
    }
}

/// What `flows --raw` prints: a header, a line per flow, and the summary
/// with the exact totals.
fn check_output(text: &str, count: u64, totals: (u64, u64, u64, u64)) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, count + 2, "header, rows, summary");
    assert!(lines[0].trim_start().starts_with("PID"), "{}", lines[0]);
    assert_eq!(
        lines[lines.len() - 1],
        format!(
            "{count} of {count} matching flows ({count} active); in {}, out {}",
            totals.0, totals.1
        )
    );
}

/// `RtlNtStatusToDosError` for the statuses the driver's control device
/// answers (317, `ERROR_MR_MID_NOT_FOUND`, for any other).
const fn win32_error(status: i32) -> u32 {
    match status.cast_unsigned() {
        0xC000_0010 => 1,    // STATUS_INVALID_DEVICE_REQUEST: ERROR_INVALID_FUNCTION
        0xC000_000D => 87,   // STATUS_INVALID_PARAMETER
        0xC000_0023 => 122,  // STATUS_BUFFER_TOO_SMALL: ERROR_INSUFFICIENT_BUFFER
        0xC000_0059 => 1306, // STATUS_REVISION_MISMATCH
        0xC000_0095 => 534,  // STATUS_INTEGER_OVERFLOW: ERROR_ARITHMETIC_OVERFLOW
        0xC000_0206 => 1784, // STATUS_INVALID_BUFFER_SIZE: ERROR_INVALID_USER_BUFFER
        0x8000_0005 => 234,  // STATUS_BUFFER_OVERFLOW: ERROR_MORE_DATA
        _ => 317,
    }
}

/// What flow `i` is: (IPv6, TCP, inbound).
const fn kind(i: u64) -> (bool, bool, bool) {
    (i.is_multiple_of(3), i % 5 != 4, i.is_multiple_of(7))
}

/// The payloads flow `i` carries: (outbound, inbound), one packet each.
fn payloads(i: u64) -> (Vec<u32>, Vec<u32>) {
    let (_, tcp, _) = kind(i);
    let n = u32::try_from(i % 100_003).unwrap_or(0);
    if tcp {
        let mut inbound = vec![1 + n * 7 % 9000];
        if i.is_multiple_of(4) {
            inbound.push(1 + n % 1460);
        }
        (vec![1 + n % 1460], inbound)
    } else {
        (vec![1 + n % 512], vec![1 + n % 100, 1 + n % 300])
    }
}

/// (bytes in, bytes out, packets in, packets out) of flow `i`.
fn traffic(i: u64) -> (u64, u64, u64, u64) {
    let (out, inbound) = payloads(i);
    let sum = |p: &[u32]| p.iter().map(|b| u64::from(*b)).sum::<u64>();
    (
        sum(&inbound),
        sum(&out),
        inbound.len() as u64,
        out.len() as u64,
    )
}

fn flow_count() -> u64 {
    std::env::var("WFPMON_NATIVE_CTL_FLOWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// Every flow established and its traffic sent through the data callouts.
fn establish_all(w: &World, count: u64) -> Vec<HostFlow> {
    let callouts: Vec<Arc<Callout>> = (0..6)
        .map(|i| w.callout(i).expect("every callout registered"))
        .collect();
    let mut flows: Vec<HostFlow> = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count {
        let (v6, tcp, inbound) = kind(i);
        let f = w.open_flow(v6, tcp, inbound, i);
        let est = &callouts[f.established_callout()];
        let r = w.establish_with(est, &f, FilterKind::Inspection, Target::Driver);
        assert!(r.is_some_and(|r| r.context == 0), "flow {i} established");
        let data = &callouts[f.data_callout()];
        let (out, inbound) = payloads(i);
        let counted = if tcp {
            out.iter()
                .map(|b| (b, true))
                .chain(inbound.iter().map(|b| (b, false)))
                .all(|(b, send)| {
                    let bytes = usize::try_from(*b).unwrap_or(0);
                    w.stream_with(
                        data,
                        &f,
                        bytes,
                        send,
                        FilterKind::Inspection,
                        Target::Driver,
                    )
                    .is_some_and(|r| r.context != 0)
                })
        } else {
            [(&out, false), (&inbound, true)].iter().all(|(p, inb)| {
                w.datagrams_with(data, &f, p, *inb, FilterKind::Inspection, Target::Driver)
                    .is_some_and(|r| r.context != 0)
            })
        };
        assert!(counted, "flow {i}: the data callout got its context");
        flows.push(f);
    }
    flows
}

/// Checks that `doc` lists every flow of `flows` exactly once, each row as
/// the flow was established and with its exact counters; returns the
/// totals of the known traffic (bytes in, bytes out, packets in, packets
/// out).
fn check_rows(doc: &listing::FlowsDoc, flows: &[HostFlow]) -> (u64, u64, u64, u64) {
    let index: HashMap<u64, usize> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| (f.flow.handle, i))
        .collect();
    let mut seen = vec![false; flows.len()];
    let mut totals = (0u64, 0u64, 0u64, 0u64);
    for row in &doc.flows {
        let handle = u64::from_str_radix(row.flow_handle.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("flow handle {}", row.flow_handle));
        let i = *index
            .get(&handle)
            .unwrap_or_else(|| panic!("listed a flow that was never established: {handle:#x}"));
        assert!(!seen[i], "flow {handle:#x} listed twice");
        seen[i] = true;
        let f = &flows[i];
        let (v6, tcp, inbound) = kind(i as u64);
        let counters = traffic(i as u64);
        let remote = if v6 {
            let mut b = [0u8; 16];
            b[0] = 0x20;
            b[1] = 0x01;
            b[15] = u8::try_from(handle & 0xFF).unwrap_or(0);
            Ipv6Addr::from(b).to_string()
        } else {
            Ipv4Addr::from(0xC0A8_0000 | u32::try_from(handle & 0xFFFF).unwrap_or(0)).to_string()
        };
        let process = if f.pid == 4 {
            "System".to_owned()
        } else {
            format!("app{}.exe", f.pid)
        };
        assert_eq!(
            (
                row.pid,
                row.process.as_str(),
                row.family,
                row.protocol.as_str(),
                row.direction,
                row.local_address.as_str(),
                row.remote_address.as_str(),
                row.local_port,
                row.remote_port,
                (row.bytes_in, row.bytes_out, row.packets_in, row.packets_out),
            ),
            (
                f.pid,
                process.as_str(),
                if v6 { "ipv6" } else { "ipv4" },
                if tcp { "tcp" } else { "udp" },
                if inbound { "in" } else { "out" },
                if v6 { "::1" } else { "10.0.0.1" },
                remote.as_str(),
                Some(f.local_port),
                Some(f.remote_port),
                counters,
            ),
            "flow {i} ({handle:#x})"
        );
        totals = (
            totals.0 + counters.0,
            totals.1 + counters.1,
            totals.2 + counters.2,
            totals.3 + counters.3,
        );
    }
    assert!(seen.iter().all(|s| *s), "every flow listed");
    totals
}

#[test]
fn wfpmonctl_lists_a_million_flows_each_once_with_exact_counters() {
    if !image_present() {
        return;
    }
    let count = flow_count();
    let config = Config {
        etw_session: None,
        capacity: usize::try_from(count).unwrap_or(0),
        ..Config::new(0xC7_1000)
    };
    let world = World::create(config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(world.driver_entry(), 0, "DriverEntry failed");
    let started = Instant::now();
    let flows = establish_all(&world, count);
    eprintln!(
        "{count} flows established with traffic in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // wfpmonctl flows --raw: the command's own code, end to end.
    let started = Instant::now();
    let mut device = NativeDevice {
        world: &world,
        calls: 0,
        list_calls: 0,
        largest_output: 0,
        largest_input: 0,
    };
    let mut names_asked = 0usize;
    let (doc, text) = listing::flows(
        &["--raw"],
        &mut device,
        |pid| {
            names_asked += 1;
            Some(format!("app{pid}.exe"))
        },
        SystemTime::UNIX_EPOCH,
    )
    .unwrap_or_else(|(code, message)| panic!("wfpmonctl flows failed ({code}): {message}"));
    eprintln!(
        "wfpmonctl flows: {} rows, {} IOCTLs ({} list batches), {} bytes printed, in {:.1} s",
        doc.flows.len(),
        device.calls,
        device.list_calls,
        text.len(),
        started.elapsed().as_secs_f64()
    );

    device.check_bounded(count);

    // Every flow listed exactly once, every field as established, every
    // counter exact; the totals, the order, and what the command prints.
    assert_eq!(
        u64::from(doc.active),
        count,
        "the driver's maintained count"
    );
    assert_eq!(doc.matched as u64, count);
    assert_eq!(doc.flows.len() as u64, count, "rows");
    assert!(
        names_asked <= 1000,
        "process names asked once per PID ({names_asked})"
    );
    let totals = check_rows(&doc, &flows);
    let t = &doc.totals;
    assert_eq!(
        (t.bytes_in, t.bytes_out, t.packets_in, t.packets_out),
        totals,
        "the document's totals"
    );
    assert!(
        doc.flows
            .windows(2)
            .all(|p| p[0].bytes_in + p[0].bytes_out >= p[1].bytes_in + p[1].bytes_out),
        "sorted by bytes, largest first (the default)"
    );
    check_output(&text, count, totals);

    // The driver's own statistics agree, and its unload is clean.
    world.check_counters();
    let stats = world.query_stats_live().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            stats.flows_active,
            stats.bytes_inbound,
            stats.bytes_outbound
        ),
        (count, totals.0, totals.1)
    );
    let started = Instant::now();
    world.unload();
    eprintln!(
        "DriverUnload with {count} flows: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(flows);
    if let Err(e) = world.finish() {
        panic!("{e}");
    }
}
