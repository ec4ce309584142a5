//! Flow events for user mode: publishing into the ring, and the
//! inverted-call reads (`IOCTL_WFPMON_READ_EVENTS`) that pend until an
//! event exists.
//!
//! A read names the next event it wants (a cursor); with
//! `READ_EVENTS_WAIT` and nothing after its cursor it is queued in the
//! cancel-safe queue [`READS`], and completed by the next [`publish`] (at
//! flow establishment or deletion, IRQL ≤ `DISPATCH_LEVEL`), by
//! cancellation (the system's cancel routine), by `IRP_MJ_CLEANUP` of its
//! handle, or by teardown ([`shutdown`]). A pended read's resolved cursor is
//! written back into its request (the system buffer is the driver's until
//! completion), so completing it later needs nothing but the IRP.

use core::sync::atomic::{AtomicBool, Ordering};

use wdk_sys::{NTSTATUS, STATUS_CANCELLED, STATUS_PENDING, STATUS_SUCCESS};
use wfpmon_core::events::FlowEvent;
use wfpmon_core::protocol::{EventsHeader, Header, PROTOCOL_VERSION, Request, parse_request};

use crate::kernel::csq::{READS, Which};
use crate::kernel::irp::Irp;
use crate::kernel::time;
use crate::shared::SHARED;

/// Set by teardown: reads no longer pend.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Offset of `ReadEventsRequest::cursor` in the request bytes.
const CURSOR_OFFSET: usize = 16;

/// Appends `event` to the ring and completes the reads waiting for it.
/// IRQL ≤ `DISPATCH_LEVEL`; one ring lock hold for one copy, then (only if
/// reads are pending) one completion per pending read that has an event
/// now. A read queued with a cursor past this event (it pended after the
/// push) stays queued: completing it would answer it with no event.
pub fn publish(event: FlowEvent) {
    let head = SHARED.events.push(event) + 1;
    // The push's sequentially consistent store of the ring's head, then
    // this load of the pending count; a read stores the count, then loads
    // the head (`read`): one of the two sees the other.
    if READS.pending() > 0 {
        while let Some(irp) = READS.remove_next(Which::Ready(wants_before, head)) {
            complete_read(irp);
        }
    }
}

/// Whether a queued read wants an event before `head` (its resolved
/// cursor, written back into its request when it pended, is below it).
fn wants_before(irp: *const wdk_sys::IRP, head: u64) -> bool {
    // SAFETY: called by the queue's peek, under its lock, for a queued
    // (live, ours) read request.
    let cursor = unsafe { Irp::buffered_input_u64_of(irp, CURSOR_OFFSET) };
    cursor.is_some_and(|c| c < head)
}

/// An `IOCTL_WFPMON_READ_EVENTS` request: answered now, or pended.
/// `PASSIVE_LEVEL` (the dispatch routine).
pub fn read(mut irp: Irp, output_len: usize, capacity: usize, cursor: u64, wait: bool) -> NTSTATUS {
    let head = SHARED.events.head();
    let cursor = cursor.min(head);
    if !wait || cursor < head || CLOSED.load(Ordering::SeqCst) {
        let written = fill(&mut irp, output_len, capacity, cursor);
        return irp.complete(STATUS_SUCCESS, written);
    }
    // Nothing yet: remember the resolved cursor ("from now" is now) in the
    // request, and pend.
    if let Some((_, buffer)) = irp.buffered_device_control()
        && let Some(field) = buffer.get_mut(CURSOR_OFFSET..CURSOR_OFFSET + 8)
    {
        field.copy_from_slice(&cursor.to_le_bytes());
    }
    let queued = READS.insert(irp);
    // An event published between the head read above and the insert found
    // no pending read: take the request back if events are there now (it
    // may already be gone — completed by `publish` or cancelled — and its
    // memory handed to another request: the insertion's token tells them
    // apart).
    if (SHARED.events.head() > cursor || CLOSED.load(Ordering::SeqCst))
        && let Some(irp) = READS.remove_next(Which::This(queued))
    {
        complete_read(irp);
    }
    STATUS_PENDING
}

/// Completes a read taken out of the queue, with the events after its
/// cursor (or `STATUS_CANCELLED` when the driver is closing and there are
/// none).
fn complete_read(mut irp: Irp) {
    let Some((params, buffer)) = irp.buffered_device_control() else {
        irp.complete(STATUS_CANCELLED, 0);
        return;
    };
    let input_len = params.input_len.min(buffer.len());
    let output_len = params.output_len.min(buffer.len());
    let Ok(Request::ReadEvents {
        capacity, cursor, ..
    }) = parse_request(params.code, &buffer[..input_len], output_len)
    else {
        // Validated before it was queued; the I/O manager does not change it.
        irp.complete(STATUS_CANCELLED, 0);
        return;
    };
    if CLOSED.load(Ordering::SeqCst) && SHARED.events.head() <= cursor {
        irp.complete(STATUS_CANCELLED, 0);
        return;
    }
    let written = fill(&mut irp, output_len, capacity, cursor);
    irp.complete(STATUS_SUCCESS, written);
}

/// Writes the response: the header and up to `capacity` events from
/// `cursor` on (copied under the ring's lock, one bounded batch). Returns
/// the bytes written.
fn fill(irp: &mut Irp, output_len: usize, capacity: usize, cursor: u64) -> usize {
    let Some((_, buffer)) = irp.buffered_device_control() else {
        return 0;
    };
    let len = output_len.min(buffer.len());
    let output = &mut buffer[..len];
    let mut n = 0usize;
    let out = SHARED.events.read(cursor, capacity, |e| {
        let at = EventsHeader::SIZE + n * FlowEvent::SIZE;
        if let Some(slot) = output.get_mut(at..at + FlowEvent::SIZE) {
            e.encode(slot);
            n += 1;
        }
    });
    let size = EventsHeader::SIZE + n * FlowEvent::SIZE;
    #[allow(clippy::cast_possible_truncation)] // at most 48 + 256 * 128
    let header = EventsHeader {
        header: Header {
            version: PROTOCOL_VERSION,
            size: size as u32,
        },
        returned: n as u32,
        event_size: FlowEvent::SIZE as u32,
        // Resume after the last event written out (equal to `out.next`
        // unless the buffer was shorter than parse_request computed).
        next: out.next - (out.returned - n) as u64,
        dropped: out.dropped,
        oldest: out.oldest,
        now: time::interrupt_time(),
    };
    header.encode(output);
    size
}

/// `IRP_MJ_CLEANUP` of a handle: its pending reads complete as cancelled
/// (the handle is going away). `PASSIVE_LEVEL`.
pub fn cleanup(file: *const wdk_sys::FILE_OBJECT) {
    READS.cancel_all(Which::File(file));
}

/// Teardown: no read pends any more, and every pending read is completed
/// (as cancelled), before the device is deleted. `PASSIVE_LEVEL`.
pub fn shutdown() -> usize {
    CLOSED.store(true, Ordering::SeqCst);
    READS.cancel_all(Which::Any)
}

/// `DriverEntry`: reads may pend again (a static survives nothing across
/// loads, but say so explicitly).
pub fn open() -> NTSTATUS {
    CLOSED.store(false, Ordering::SeqCst);
    READS.initialize()
}
