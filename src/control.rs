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
    NTSTATUS, STATUS_INVALID_DEVICE_REQUEST, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use wfpmon_core::flow::Traffic;
use wfpmon_core::protocol::{
    self, FlowEntry, FlowListHeader, Header, PROTOCOL_VERSION, Request, Stats, parse_request,
};
use wfpmon_core::status::STATUS_BUFFER_OVERFLOW;

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
    let (status, written) = irp.buffered_device_control().map_or(
        // Every wfpmon IOCTL is METHOD_BUFFERED; anything else is unknown.
        (STATUS_INVALID_DEVICE_REQUEST, 0),
        |(params, buffer)| {
            // Lengths larger than the buffer cannot happen for
            // METHOD_BUFFERED; the slices are bounded by it all the same.
            let input_len = params.input_len.min(buffer.len());
            let output_len = params.output_len.min(buffer.len());
            match parse_request(params.code, &buffer[..input_len], output_len) {
                Ok(request) => execute(request, &mut buffer[..output_len]),
                Err(error) => (error.ntstatus(), 0),
            }
        },
    );
    irp.complete(status, written)
}

/// Carries out a validated request; returns the status and the bytes of
/// `output` written.
fn execute(request: Request, output: &mut [u8]) -> (NTSTATUS, usize) {
    match request {
        Request::QueryStats => (STATUS_SUCCESS, stats().encode(output)),
        Request::ListFlows { capacity } => list_flows(output, capacity),
        Request::SetCounting { enable } => {
            SHARED.stats.set_counting(enable);
            (STATUS_SUCCESS, 0)
        }
    }
}

/// Statistics: lifetime counters plus the traffic of active flows, taken
/// in one critical section of the registry. A flow's traffic moves from
/// "active" to "retired" under that same lock, so a flow ending during the
/// query is counted exactly once.
fn stats() -> Stats {
    SHARED.flows.inspect(|records| {
        let (active, traffic) = records.fold((0u64, Traffic::default()), |(n, t), r| {
            (n + 1, t.plus(r.traffic.snapshot()))
        });
        SHARED.stats.snapshot(active, traffic)
    })
}

/// Copies up to `capacity` flows into `output` (header first). When more
/// flows exist, completes with `STATUS_BUFFER_OVERFLOW` and the size that
/// would have held them all, as NT does for partial results.
fn list_flows(output: &mut [u8], capacity: usize) -> (NTSTATUS, usize) {
    let now = time::interrupt_time();
    let mut total = 0usize;
    let mut returned = 0usize;
    // Runs under the registry's spin lock: no allocation, no blocking; the
    // output is non-paged system buffer memory.
    SHARED.flows.for_each(|r| {
        if returned < capacity {
            let offset = FlowListHeader::SIZE + returned * FlowEntry::SIZE;
            entry(r, now).encode(&mut output[offset..offset + FlowEntry::SIZE]);
            returned += 1;
        }
        total += 1;
    });
    let size = protocol::flow_list_size(returned).unwrap_or(FlowListHeader::SIZE);
    let required = protocol::flow_list_size(total).unwrap_or(usize::MAX);
    let header = FlowListHeader {
        header: Header {
            version: PROTOCOL_VERSION,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        },
        total_flows: u32::try_from(total).unwrap_or(u32::MAX),
        returned: u32::try_from(returned).unwrap_or(u32::MAX),
        entry_size: ENTRY_SIZE,
        reserved: 0,
        required_size: required as u64,
    };
    header.encode(output);
    let status = if returned < total {
        STATUS_BUFFER_OVERFLOW
    } else {
        STATUS_SUCCESS
    };
    (status, size)
}

/// [`FlowEntry::SIZE`] as the header's 32-bit field.
#[allow(clippy::cast_possible_truncation)] // 96, checked below
const ENTRY_SIZE: u32 = FlowEntry::SIZE as u32;
const _: () = assert!(ENTRY_SIZE as usize == FlowEntry::SIZE);

fn entry(r: &wfpmon_core::flow::FlowRecord, now: u64) -> FlowEntry {
    let t = r.traffic.snapshot();
    FlowEntry {
        flow_id: r.association.flow_id,
        process_id: r.process_id,
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
    }
}
