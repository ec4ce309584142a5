//! The cancel-safe queue of pending event reads (`IoCsq*`, "Cancel-Safe IRP
//! Queues"): the I/O manager's protocol that lets a request be cancelled at
//! any moment (handle closed, thread exiting, `CancelIoEx`) without races
//! between the driver completing it and the cancel routine.
//!
//! The driver supplies the list, the lock and five callbacks; the system's
//! `IoCsqInsertIrp` marks the IRP pending and installs its own cancel
//! routine, and `IoCsqRemoveNextIrp` hands an IRP out only once (to the
//! driver or to cancellation, never both). One queue exists, in static
//! non-paged memory: [`READS`].
//!
//! IRQL: every function here may be called at ≤ `DISPATCH_LEVEL`.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use wdk_sys::{
    IO_CSQ, IRP, KIRQL, KSPIN_LOCK, LIST_ENTRY, NTSTATUS, PIRP, PKIRQL, PVOID, STATUS_CANCELLED,
    ntddk,
};

use super::irp::Irp;

/// Which pending IRP [`IrpQueue::remove_next`] hands out (the queue's
/// "peek context").
#[derive(Clone, Copy)]
pub enum Which {
    /// The oldest.
    Any,
    /// The oldest sent on this file object (`IRP_MJ_CLEANUP`).
    File(*const wdk_sys::FILE_OBJECT),
    /// This very insertion, if still queued.
    This(Queued),
    /// The oldest for which `ready(irp, value)` holds (called under the
    /// queue lock, for a queued IRP: it may read the IRP's buffers).
    Ready(fn(*const IRP, u64) -> bool, u64),
}

/// One insertion of an IRP into the queue: its address and a token no
/// other insertion gets. The address alone does not name it: once the IRP
/// is completed (by `publish`, a cancellation or a cleanup on another
/// processor), the I/O manager reuses its memory for new IRPs, which may be
/// queued at the same address.
#[derive(Clone, Copy)]
pub struct Queued {
    irp: *const IRP,
    token: usize,
}

/// The next insertion token (0 is never handed out).
static TOKENS: AtomicUsize = AtomicUsize::new(1);

/// `Tail.Overlay.DriverContext[0]` of `irp`: the driver's while it owns
/// the IRP (the cancel-safe queue uses only `DriverContext[3]`); holds the
/// token of the insertion.
fn token_slot(irp: PIRP) -> *mut PVOID {
    // SAFETY: a place expression to the field of a live IRP; no reference.
    let context = unsafe {
        &raw mut (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_1
            .__bindgen_anon_1
            .DriverContext
    };
    context.cast::<PVOID>()
}

/// The queue.
pub struct IrpQueue {
    csq: UnsafeCell<IO_CSQ>,
    /// Pending IRPs, linked through `Tail.Overlay.ListEntry`, oldest first.
    head: UnsafeCell<LIST_ENTRY>,
    lock: UnsafeCell<KSPIN_LOCK>,
    /// IRPs in the list (changed under `lock`).
    pending: AtomicUsize,
}

// SAFETY: the list and the CSQ header are only touched by the I/O manager
// and by the callbacks below, which run under `lock` (the CSQ protocol);
// `pending` is atomic.
unsafe impl Sync for IrpQueue {}

/// The queue of pending `IOCTL_WFPMON_READ_EVENTS` requests.
pub static READS: IrpQueue = IrpQueue {
    // SAFETY: IO_CSQ is plain data (integers, function pointers as
    // `Option`s, a pointer): all zeros is a valid (uninitialised) value,
    // filled by `IoCsqInitialize` before use.
    csq: UnsafeCell::new(unsafe { core::mem::zeroed() }),
    head: UnsafeCell::new(LIST_ENTRY {
        Flink: ptr::null_mut(),
        Blink: ptr::null_mut(),
    }),
    lock: UnsafeCell::new(0),
    pending: AtomicUsize::new(0),
};

impl IrpQueue {
    /// `IoCsqInitialize` and `InitializeListHead`. `PASSIVE_LEVEL`, in
    /// `DriverEntry` before the device exists (no request can race).
    pub fn initialize(&'static self) -> NTSTATUS {
        let head = self.head.get();
        // SAFETY: no request can reach the queue yet; an empty list points
        // to itself (wdm.h's inline InitializeListHead).
        unsafe { link(head, head) };
        self.pending.store(0, Ordering::SeqCst);
        // SAFETY: a static IO_CSQ and callbacks with the documented
        // signatures; they only reach this queue.
        unsafe {
            ntddk::IoCsqInitialize(
                self.csq.get(),
                Some(csq_insert),
                Some(csq_remove),
                Some(csq_peek_next),
                Some(csq_acquire_lock),
                Some(csq_release_lock),
                Some(csq_complete_canceled),
            )
        }
    }

    /// IRPs pending now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Queues `irp`: `IoCsqInsertIrp` marks it pending (the dispatch
    /// routine must return `STATUS_PENDING`) or, if it was already
    /// cancelled, completes it as cancelled.
    pub fn insert(&self, irp: Irp) -> Queued {
        let raw = irp.into_raw().as_ptr();
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: our IRP, not yet queued: its DriverContext[0] is ours.
        unsafe { token_slot(raw).write(ptr::without_provenance_mut(token)) };
        // SAFETY: an IRP of ours, not completed, queued once; the CSQ takes
        // it over (it is completed through this queue from now on).
        unsafe { ntddk::IoCsqInsertIrp(self.csq.get(), raw, ptr::null_mut()) };
        Queued { irp: raw, token }
    }

    /// Takes the oldest pending IRP `which` names out of the queue (its
    /// cancel routine cleared): ours to complete.
    pub fn remove_next(&self, which: Which) -> Option<Irp> {
        let mut peek = which;
        // SAFETY: `peek` outlives the call; the CSQ hands an IRP out once.
        let irp = unsafe { ntddk::IoCsqRemoveNextIrp(self.csq.get(), (&raw mut peek).cast()) };
        // SAFETY: an IRP removed from our queue: ours, not completed.
        unsafe { Irp::from_raw(irp) }
    }

    /// Completes every pending IRP `which` names with `STATUS_CANCELLED`.
    pub fn cancel_all(&self, which: Which) -> usize {
        let mut n = 0;
        while let Some(irp) = self.remove_next(which) {
            irp.complete(STATUS_CANCELLED, 0);
            n += 1;
        }
        n
    }
}

/// Makes `next` follow `prev` (both valid list entries, under the queue
/// lock or before the queue is in use).
///
/// # Safety
/// Both pointers are valid `LIST_ENTRY`s exclusively ours for the call.
unsafe fn link(prev: *mut LIST_ENTRY, next: *mut LIST_ENTRY) {
    // SAFETY: contract.
    unsafe { (*prev).Flink = next };
    // SAFETY: contract.
    unsafe { (*next).Blink = prev };
}

/// The entry after `entry`.
///
/// # Safety
/// `entry` is a valid `LIST_ENTRY` of the queue, under its lock.
unsafe fn next_of(entry: *mut LIST_ENTRY) -> *mut LIST_ENTRY {
    // SAFETY: contract.
    unsafe { (*entry).Flink }
}

/// The entry before `entry`.
///
/// # Safety
/// As [`next_of`].
unsafe fn prev_of(entry: *mut LIST_ENTRY) -> *mut LIST_ENTRY {
    // SAFETY: contract.
    unsafe { (*entry).Blink }
}

/// The queue's `LIST_ENTRY` inside an IRP (`Tail.Overlay.ListEntry`, which
/// a driver owning the IRP may use).
fn list_entry(irp: PIRP) -> *mut LIST_ENTRY {
    // SAFETY: a place expression to the field of a live IRP; no reference.
    unsafe { &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.ListEntry }
}

/// The IRP whose `Tail.Overlay.ListEntry` is `entry` (`CONTAINING_RECORD`).
const fn irp_of(entry: *mut LIST_ENTRY) -> PIRP {
    let offset = core::mem::offset_of!(IRP, Tail.Overlay.__bindgen_anon_2.ListEntry);
    // The entry lies `offset` bytes into an 8-aligned IRP, so the result is
    // 8-aligned.
    #[allow(clippy::cast_ptr_alignment)]
    let irp = entry.cast::<u8>().wrapping_sub(offset).cast::<IRP>();
    irp
}

/// `CsqInsertIrp`: at the tail (under the queue lock).
unsafe extern "C" fn csq_insert(_csq: *mut IO_CSQ, irp: PIRP) {
    let head = READS.head.get();
    let entry = list_entry(irp);
    // SAFETY: under the queue lock (CSQ contract): the list is valid and
    // ours, and so is the IRP's entry (InsertTailList).
    let last = unsafe { prev_of(head) };
    // SAFETY: as above.
    unsafe { link(last, entry) };
    // SAFETY: as above.
    unsafe { link(entry, head) };
    READS.pending.fetch_add(1, Ordering::SeqCst);
}

/// `CsqRemoveIrp`: unlinks (under the queue lock).
unsafe extern "C" fn csq_remove(_csq: *mut IO_CSQ, irp: PIRP) {
    let entry = list_entry(irp);
    // SAFETY: under the queue lock; `irp` is linked (CSQ contract)
    // (RemoveEntryList).
    let prev = unsafe { prev_of(entry) };
    // SAFETY: as above.
    let next = unsafe { next_of(entry) };
    // SAFETY: as above.
    unsafe { link(prev, next) };
    // SAFETY: as above: the unlinked entry points to itself.
    unsafe { link(entry, entry) };
    READS.pending.fetch_sub(1, Ordering::SeqCst);
}

/// `CsqPeekNextIrp`: the first IRP after `irp` (after the head when null)
/// that the peek context names (under the queue lock).
unsafe extern "C" fn csq_peek_next(_csq: *mut IO_CSQ, irp: PIRP, peek: PVOID) -> PIRP {
    let head = READS.head.get();
    // SAFETY: `peek` is null (the system's own peeks) or the `Which` that
    // `remove_next` passed, alive for the call.
    let which = unsafe { peek.cast::<Which>().as_ref() }
        .copied()
        .unwrap_or(Which::Any);
    let from = if irp.is_null() { head } else { list_entry(irp) };
    // SAFETY: under the queue lock; the list and its IRPs are valid.
    let mut entry = unsafe { next_of(from) };
    while entry != head {
        let candidate = irp_of(entry);
        let matches = match which {
            Which::Any => true,
            Which::This(q) => {
                // SAFETY: a queued IRP is live; DriverContext[0] holds the
                // token of its insertion.
                ptr::eq(candidate, q.irp)
                    && unsafe { token_slot(candidate).read() }.addr() == q.token
            }
            // SAFETY: a queued IRP is live, with a current stack location.
            Which::File(f) => ptr::eq(unsafe { Irp::file_object_of(candidate) }, f),
            Which::Ready(ready, value) => ready(candidate, value),
        };
        if matches {
            return candidate;
        }
        // SAFETY: as above.
        entry = unsafe { next_of(entry) };
    }
    ptr::null_mut()
}

/// `CsqAcquireLock`: the queue's spin lock (raises to `DISPATCH_LEVEL`).
unsafe extern "C" fn csq_acquire_lock(_csq: *mut IO_CSQ, irql: PKIRQL) {
    // SAFETY: a static spin lock, IRQL <= DISPATCH_LEVEL (CSQ contract).
    let old = unsafe { ntddk::KeAcquireSpinLockRaiseToDpc(READS.lock.get()) };
    // SAFETY: `irql` is the system's out-parameter.
    unsafe { *irql = old };
}

/// `CsqReleaseLock`: releases it, back to `irql`.
unsafe extern "C" fn csq_release_lock(_csq: *mut IO_CSQ, irql: KIRQL) {
    // SAFETY: releases the acquisition of `csq_acquire_lock`.
    unsafe { ntddk::KeReleaseSpinLock(READS.lock.get(), irql) };
}

/// `CsqCompleteCanceledIrp`: a cancelled request (not under the lock).
unsafe extern "C" fn csq_complete_canceled(_csq: *mut IO_CSQ, irp: PIRP) {
    // SAFETY: the CSQ hands us a cancelled IRP that it removed: ours to
    // complete, once.
    if let Some(irp) = unsafe { Irp::from_raw(irp) } {
        irp.complete(STATUS_CANCELLED, 0);
    }
}
