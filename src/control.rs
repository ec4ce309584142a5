//! The control device's dispatch routines: open and close, and the
//! `METHOD_BUFFERED` IOCTLs of [`wfpmon_core::protocol`]. Everything else
//! fails with `STATUS_INVALID_DEVICE_REQUEST`.
//!
//! Requests arrive at `PASSIVE_LEVEL` in the caller's context; the device's
//! security descriptor already limited who can open it to SYSTEM and
//! Administrators, and the I/O manager checked the access bits each IOCTL
//! code demands.

use wdk_sys::{
    DEVICE_OBJECT, IRP, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL,
    NTSTATUS, STATUS_DEVICE_BUSY, STATUS_INVALID_DEVICE_REQUEST, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS,
};
use wfpmon_core::flow::{ListCursor, Listed};
use wfpmon_core::protocol::{
    self, FlowEntry, FlowListHeader, Header, PROTOCOL_VERSION, ProcessEntry, ProcessListHeader,
    Request, STATS_INCLUDES_LIVE_TRAFFIC, Stats, parse_request,
};

use crate::events;

use crate::kernel::driver::DriverObject;
use crate::kernel::irp::Irp;
use crate::kernel::time;
use crate::shared::SHARED;

/// Installs the dispatch routines.
pub fn install(driver: &mut DriverObject) {
    driver.set_dispatch(
        &[
            IRP_MJ_CREATE,
            IRP_MJ_CLOSE,
            IRP_MJ_CLEANUP,
            IRP_MJ_DEVICE_CONTROL,
        ],
        Some(dispatch),
        Some(dispatch_unsupported),
    );
}

/// `IRP_MJ_CREATE`, `IRP_MJ_CLEANUP`, `IRP_MJ_CLOSE`, `IRP_MJ_DEVICE_CONTROL`.
unsafe extern "C" fn dispatch(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager hands us a live IRP with a stack location.
    let Some(irp) = (unsafe { Irp::from_raw(irp) }) else {
        return STATUS_INVALID_DEVICE_REQUEST;
    };
    match irp.major_function() {
        IRP_MJ_DEVICE_CONTROL => device_control(irp),
        // The device has no namespace: `\Device\WfpMon\anything` names
        // nothing ("Controlling Device Namespace Access" — FILE_DEVICE_SECURE_OPEN
        // already applies the device's ACL to such opens; refusing them
        // leaves only the device itself to open).
        IRP_MJ_CREATE if irp.opens_a_name_below_the_device() => {
            irp.complete(STATUS_OBJECT_NAME_NOT_FOUND, 0)
        }
        // The handle's last user closed it: its pending event reads end
        // (as cancelled) now rather than at some later event.
        IRP_MJ_CLEANUP => {
            events::cleanup(irp.file_object());
            irp.complete(STATUS_SUCCESS, 0)
        }
        _ => irp.complete(STATUS_SUCCESS, 0),
    }
}

/// Every other major function.
unsafe extern "C" fn dispatch_unsupported(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: as above.
    let irp = unsafe { Irp::from_raw(irp) };
    irp.map_or(STATUS_INVALID_DEVICE_REQUEST, |irp| {
        irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0)
    })
}

fn device_control(mut irp: Irp) -> NTSTATUS {
    let Some((params, buffer)) = irp.buffered_device_control() else {
        // Every wfpmon IOCTL is METHOD_BUFFERED; anything else is unknown.
        return irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0);
    };
    // Lengths larger than the buffer cannot happen for METHOD_BUFFERED; the
    // slices are bounded by it all the same.
    let input_len = params.input_len.min(buffer.len());
    let output_len = params.output_len.min(buffer.len());
    let (status, written) = match parse_request(params.code, &buffer[..input_len], output_len) {
        // May pend: the events module completes the request.
        Ok(Request::ReadEvents {
            capacity,
            cursor,
            wait,
        }) => return events::read(irp, output_len, capacity, cursor, wait),
        Ok(request) => execute(request, &mut buffer[..output_len]),
        Err(error) => (error.ntstatus(), 0),
    };
    irp.complete(status, written)
}

/// Carries out a validated request; returns the status and the bytes of
/// `output` written.
fn execute(request: Request, output: &mut [u8]) -> (NTSTATUS, usize) {
    match request {
        Request::QueryStats { live_traffic } => {
            (STATUS_SUCCESS, stats(live_traffic).encode(output))
        }
        Request::ListFlows {
            capacity,
            cursor_bucket,
            cursor_seq,
        } => list_flows(
            output,
            capacity,
            ListCursor {
                bucket: cursor_bucket,
                seq: cursor_seq,
            },
        ),
        Request::SetCounting { enable } => {
            SHARED.stats.set_counting(enable);
            (STATUS_SUCCESS, 0)
        }
        Request::ListProcesses {
            capacity,
            cursor_slot,
        } => list_processes(output, capacity, cursor_slot),
        // Handled (and possibly pended) by `device_control`.
        Request::ReadEvents { .. } => (STATUS_INVALID_DEVICE_REQUEST, 0),
    }
}

/// One page of per-process totals: up to `capacity` processes from
/// `cursor_slot` on (`ProcessTable::query`: one walk of the registry, one
/// bucket lock at a time, and exact totals while flows end). Queries run
/// one at a time: `STATUS_DEVICE_BUSY` to the loser of a race, which asks
/// again.
fn list_processes(output: &mut [u8], capacity: usize, cursor_slot: u32) -> (NTSTATUS, usize) {
    let mut returned = 0usize;
    let queried = SHARED
        .processes
        .query(&SHARED.flows, cursor_slot, capacity, |p| {
            let at = ProcessListHeader::SIZE + returned * ProcessEntry::SIZE;
            if let Some(slot) = output.get_mut(at..at + ProcessEntry::SIZE) {
                ProcessEntry::of(p).encode(slot);
                returned += 1;
            }
        });
    let Ok(end) = queried else {
        return (STATUS_DEVICE_BUSY, 0);
    };
    let size = ProcessListHeader::SIZE + returned * ProcessEntry::SIZE;
    #[allow(clippy::cast_possible_truncation)] // at most 56 + 64 * 624; 1024 slots
    let header = ProcessListHeader {
        header: Header {
            version: PROTOCOL_VERSION,
            size: size as u32,
        },
        returned: returned as u32,
        entry_size: ProcessEntry::SIZE as u32,
        flags: if end.next_slot.is_some() {
            protocol::PROCESS_LIST_MORE
        } else {
            0
        },
        next_slot: end.next_slot.unwrap_or(0),
        now: time::interrupt_time(),
        capacity: SHARED.processes.capacity() as u32,
        reserved: 0,
        evictions: SHARED.processes.evictions(),
        unattributed_flows: SHARED.processes.unattributed(),
    };
    header.encode(output);
    (STATUS_SUCCESS, size)
}

/// Statistics. By default only maintained counters are read — the active
/// flows (per-callout counts), the lifetime counters and the ended flows'
/// traffic (`FlowRegistry::retired_traffic`, 64 sharded counters) — so the
/// query costs the same at any number of flows and takes no lock.
///
/// With `live_traffic` ([`wfpmon_core::protocol::STATS_LIVE_TRAFFIC`]) the
/// traffic of every flow, active or ended, is summed bucket by bucket
/// (`FlowRegistry::totals`): each bucket's ended flows and live flows are
/// read in one critical section of that bucket, so a flow ending during the
/// query is counted exactly once, and no lock is held for more than one
/// bucket — but the cost grows with the number of flows.
fn stats(live_traffic: bool) -> Stats {
    if live_traffic {
        let (active, traffic) = SHARED.flows.totals();
        Stats {
            flags: STATS_INCLUDES_LIVE_TRAFFIC,
            ..SHARED.stats.snapshot(active, traffic)
        }
    } else {
        let active = SHARED.flows.len() as u64;
        SHARED
            .stats
            .snapshot(active, SHARED.flows.retired_traffic())
    }
}

/// One batch of the flow list: at most `capacity` flows (≤
/// `MAX_FLOWS_PER_CALL`) from the caller's cursor on, header first, and the
/// cursor to continue with. The entries are written under one bucket's spin
/// lock at a time (no allocation, no blocking; the output is non-paged
/// system buffer memory). The total is the registry's maintained count.
fn list_flows(output: &mut [u8], capacity: usize, cursor: ListCursor) -> (NTSTATUS, usize) {
    let now = time::interrupt_time();
    let mut returned = 0usize;
    let listed = if capacity == 0 {
        // Only the count was asked for: the cursor stays where it was.
        Listed::More(cursor)
    } else {
        SHARED.flows.list(cursor, |r| {
            if returned == capacity {
                return false;
            }
            let offset = FlowListHeader::SIZE + returned * FlowEntry::SIZE;
            entry(r, now).encode(&mut output[offset..offset + FlowEntry::SIZE]);
            returned += 1;
            true
        })
    };
    let size = protocol::flow_list_size(returned).unwrap_or(FlowListHeader::SIZE);
    let (flags, next) = match listed {
        Listed::Done => (0, ListCursor::default()),
        Listed::More(next) => (protocol::FLOW_LIST_MORE, next),
    };
    let header = FlowListHeader {
        header: Header {
            version: PROTOCOL_VERSION,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        },
        total_flows: u32::try_from(SHARED.flows.len()).unwrap_or(u32::MAX),
        returned: u32::try_from(returned).unwrap_or(u32::MAX),
        entry_size: ENTRY_SIZE,
        flags,
        next_bucket: next.bucket,
        next_seq: next.seq,
    };
    header.encode(output);
    (STATUS_SUCCESS, size)
}

/// [`FlowEntry::SIZE`] as the header's 32-bit field.
#[allow(clippy::cast_possible_truncation)] // 104, checked below
const ENTRY_SIZE: u32 = FlowEntry::SIZE as u32;
const _: () = assert!(ENTRY_SIZE as usize == FlowEntry::SIZE);

fn entry(r: &wfpmon_core::flow::FlowRecord, now: u64) -> FlowEntry {
    let t = r.traffic();
    FlowEntry {
        flow_id: r.association.flow_id,
        process_id: u64::from(r.process_id),
        age_ms: now.saturating_sub(r.established_at) / 10_000,
        bytes_inbound: t.bytes_inbound,
        bytes_outbound: t.bytes_outbound,
        packets_inbound: t.packets_inbound,
        packets_outbound: t.packets_outbound,
        local_address: r.tuple.local_address,
        remote_address: r.tuple.remote_address,
        local_port: r.tuple.local_port,
        remote_port: r.tuple.remote_port,
        address_family: r.tuple.family.to_af(),
        ip_protocol: r.tuple.ip_protocol,
        direction: r.tuple.direction as u8,
        process_key: SHARED.processes.key_of(r.process_slot),
    }
}
