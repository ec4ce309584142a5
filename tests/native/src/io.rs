//! The I/O manager's side of the control device: file objects (handles),
//! IRPs that may stay pending, their completion, cancellation
//! (`IoCancelIrp`) and the rules around them.
//!
//! # The rules
//!
//! The rules are in `docs/engine-rules.md`: completion once (K11), never
//! pending or cancelable (K12), not while queued (K13), the pending protocol
//! (K14), every IRP completed (K15), buffered I/O (K16), `IoCancelIrp` (K17),
//! cleanup (K24), no request once Unload begins (K25), nothing after Unload
//! (K26). `// Rule Kn` comments mark the code that implements each.
//!
//! IRP memory is freed when the IRP is completed (so memcheck reports a
//! driver touching an IRP it no longer owns), or — with
//! [`Io::set_recycling`] — kept on a LIFO free list and handed out again,
//! as the I/O manager's IRP lookaside lists do: then a new IRP often has
//! the address of one just completed, which is what a driver that
//! remembers IRP addresses must cope with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::kernel::{
    self, DISPATCH_LEVEL, PASSIVE_LEVEL, call_into_image, host_alloc, host_free, irql, lock, status,
};
use crate::world::World;

/// `IRP` size on x64 (wdm.h; 0xD0 with the `Tail` union's `KAPC`).
pub const IRP_SIZE: usize = 0xD0;
/// `IO_STACK_LOCATION` size on x64.
pub const STACK_SIZE: usize = 0x48;
/// `FILE_OBJECT` size on x64.
pub const FILE_OBJECT_SIZE: usize = 0xD8;

// IRP fields (x64 offsets, as the WDK bindings assert them).
const IRP_SYSTEM_BUFFER: usize = 0x18;
const IRP_STATUS: usize = 0x30;
const IRP_INFORMATION: usize = 0x38;
const IRP_CANCEL: usize = 0x44;
const IRP_CANCEL_IRQL: usize = 0x45;
const IRP_CANCEL_ROUTINE: usize = 0x68;
/// `Tail.Overlay.DriverContext[3]`: the cancel-safe queue's (see
/// [`crate::csq`]).
pub(crate) const IRP_DRIVER_CONTEXT_3: usize = 0x78 + 3 * 8;
const IRP_CURRENT_STACK_LOCATION: usize = 0xB8;
// IO_STACK_LOCATION fields.
const STACK_CONTROL: usize = 3;
/// `SL_PENDING_RETURNED` in `IO_STACK_LOCATION.Control`.
pub const SL_PENDING_RETURNED: u8 = 1;

/// `STATUS_CANCELLED`.
pub const STATUS_CANCELLED: i32 = 0xC000_0120_u32.cast_signed();
/// `STATUS_NO_SUCH_DEVICE`: what the host answers for a request the I/O
/// manager would not send (the driver is being unloaded).
pub const STATUS_NO_SUCH_DEVICE: i32 = 0xC000_000E_u32.cast_signed();

/// `IRP_MJ_CREATE`.
pub const IRP_MJ_CREATE: u8 = 0x00;
/// `IRP_MJ_CLOSE`.
pub const IRP_MJ_CLOSE: u8 = 0x02;
/// `IRP_MJ_DEVICE_CONTROL`.
pub const IRP_MJ_DEVICE_CONTROL: u8 = 0x0E;
/// `IRP_MJ_CLEANUP`.
pub const IRP_MJ_CLEANUP: u8 = 0x12;

/// How long a synchronous request may stay pending before the host calls
/// it lost (a driver that never completes a request hangs its caller).
pub const SYNC_TIMEOUT: Duration = Duration::from_mins(1);

/// How one IRP ended.
#[derive(Clone, Debug)]
// Independent facts recorded at completion, each checked on its own.
#[allow(clippy::struct_excessive_bools)]
pub struct Completion {
    /// `IoStatus.Status`.
    pub status: i32,
    /// `IoStatus.Information`.
    pub information: usize,
    /// The output copied back (METHOD_BUFFERED, not an error status).
    pub output: Vec<u8>,
    /// `SL_PENDING_RETURNED` was set.
    pub pending_returned: bool,
    /// The `Cancel` bit was set.
    pub cancel: bool,
    /// The thread that completed it.
    pub thread: String,
    /// The IRQL it was completed at.
    pub irql: u8,
    /// Completed before its dispatch routine returned.
    pub during_dispatch: bool,
    /// Completed while the unload routine was running.
    pub during_unload: bool,
}

#[derive(Default)]
struct TicketState {
    completion: Option<Completion>,
    returned: Option<i32>,
}

/// One IRP the host sent (or is about to send), as its sender sees it.
pub struct Ticket {
    /// Unique in this world (IRP addresses are reused).
    pub id: u64,
    /// The IRP's address (to name it; valid only while it is outstanding).
    pub irp: usize,
    /// `IRP_MJ_*`.
    pub major: u8,
    /// I/O control code (device control).
    pub code: u32,
    /// The `FILE_OBJECT` it is sent on.
    pub file: usize,
    out_len: usize,
    buffered: bool,
    system_buffer: usize,
    system_buffer_len: usize,
    /// Dispatched (the driver has seen it).
    sent: AtomicBool,
    /// `IoCancelIrp` took its cancel routine: the cancel-safe queue's
    /// cancel routine owns it until it completes it.
    cancelling: AtomicBool,
    state: Mutex<TicketState>,
    cond: Condvar,
}

impl Ticket {
    /// How it ended, if it has.
    #[must_use]
    pub fn completion(&self) -> Option<Completion> {
        lock(&self.state).completion.clone()
    }

    /// What the dispatch routine returned, once it has.
    #[must_use]
    pub fn returned(&self) -> Option<i32> {
        lock(&self.state).returned
    }

    /// Marks a prepared IRP as sent without dispatching it (the harness's
    /// self-check: a request the "driver" keeps pending).
    pub(crate) fn mark_sent(&self) {
        self.sent.store(true, Ordering::SeqCst);
    }

    /// Waits up to `timeout` for the completion.
    #[must_use]
    pub fn wait(&self, timeout: Duration) -> Option<Completion> {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = lock(&self.state);
        loop {
            if let Some(c) = &s.completion {
                return Some(c.clone());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            s = self
                .cond
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

#[derive(Default)]
struct HandleState {
    /// `IRP_MJ_CLEANUP` was (or is being) sent: no new request.
    closed: bool,
    /// Requests being dispatched on it now.
    users: u32,
}

/// A handle to the control device: its `FILE_OBJECT` (host memory, freed
/// when the handle is dropped).
pub struct FileHandle {
    /// The `FILE_OBJECT`.
    pub file: usize,
    _name: Vec<u16>,
    state: Mutex<HandleState>,
    cond: Condvar,
}

impl FileHandle {
    /// A `FILE_OBJECT` for `device` whose `FileName` is `name` (the part
    /// after the device name; empty: the device itself).
    #[must_use]
    pub fn new(device: usize, name: &str) -> Self {
        let name: Vec<u16> = name.encode_utf16().collect();
        let file = host_alloc(FILE_OBJECT_SIZE);
        let put = |offset: usize, bytes: &[u8]| {
            // SAFETY: offsets inside the FILE_OBJECT block just allocated
            // (x64 layout, wdm.h): Type, Size, DeviceObject, FileName.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    (file + offset) as *mut u8,
                    bytes.len(),
                );
            };
        };
        put(0, &5i16.to_le_bytes()); // IO_TYPE_FILE
        put(
            2,
            &u16::try_from(FILE_OBJECT_SIZE).unwrap_or(0).to_le_bytes(),
        );
        put(8, &(device as u64).to_le_bytes());
        let bytes = u16::try_from(name.len() * 2).unwrap_or(0);
        put(0x58, &bytes.to_le_bytes());
        put(0x5A, &bytes.to_le_bytes());
        put(
            0x60,
            &(if name.is_empty() {
                0
            } else {
                name.as_ptr() as u64
            })
            .to_le_bytes(),
        );
        Self {
            file,
            _name: name,
            state: Mutex::new(HandleState::default()),
            cond: Condvar::new(),
        }
    }

    /// A request begins on the handle (`false`: it is closed).
    fn begin_use(&self) -> bool {
        let mut s = lock(&self.state);
        if s.closed {
            return false;
        }
        s.users += 1;
        true
    }

    fn end_use(&self) {
        let mut s = lock(&self.state);
        s.users -= 1;
        drop(s);
        self.cond.notify_all();
    }

    /// Marks the handle closed and waits until no request is being
    /// dispatched on it. `false` when it was closed already.
    fn close(&self) -> bool {
        let mut s = lock(&self.state);
        if s.closed {
            return false;
        }
        s.closed = true;
        while s.users > 0 {
            s = self
                .cond
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        true
    }

    /// Whether `IRP_MJ_CLEANUP` was sent.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }
}

impl Drop for FileHandle {
    fn drop(&mut self) {
        // The driver only ever compares FILE_OBJECT pointers of queued IRPs
        // (it never dereferences them after IRP_MJ_CREATE), so the block
        // can go with the handle.
        host_free(self.file, FILE_OBJECT_SIZE);
    }
}

#[derive(Default)]
struct Gate {
    closed: bool,
    in_flight: usize,
}

/// Counters of what the I/O paths exercised.
#[derive(Default)]
pub struct IoCounts {
    /// IRPs dispatched.
    pub dispatched: AtomicU64,
    /// Dispatch routines that returned `STATUS_PENDING`.
    pub pended: AtomicU64,
    /// Completions.
    pub completed: AtomicU64,
    /// Completions on another thread than the dispatching one, after the
    /// dispatch routine returned `STATUS_PENDING`.
    pub completed_later: AtomicU64,
    /// Completions at `DISPATCH_LEVEL`.
    pub completed_at_dispatch: AtomicU64,
    /// `IoCancelIrp` calls.
    pub cancel_calls: AtomicU64,
    /// `IoCancelIrp` calls that found a cancel routine (and ran it).
    pub cancel_routines_run: AtomicU64,
    /// `IoCsqInsertIrp` with an IRP already cancelled (not queued).
    pub cancelled_before_queued: AtomicU64,
    /// `IoCsqRemoveNextIrp` skipping an IRP whose cancellation had begun.
    pub skipped_while_cancelling: AtomicU64,
    /// Requests the I/O manager did not send (unload begun, handle closed).
    pub refused: AtomicU64,
}

/// A snapshot of [`IoCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoSummary {
    /// See [`IoCounts::dispatched`].
    pub dispatched: u64,
    /// See [`IoCounts::pended`].
    pub pended: u64,
    /// See [`IoCounts::completed`].
    pub completed: u64,
    /// See [`IoCounts::completed_later`].
    pub completed_later: u64,
    /// See [`IoCounts::completed_at_dispatch`].
    pub completed_at_dispatch: u64,
    /// See [`IoCounts::cancel_calls`].
    pub cancel_calls: u64,
    /// See [`IoCounts::cancel_routines_run`].
    pub cancel_routines_run: u64,
    /// See [`IoCounts::cancelled_before_queued`].
    pub cancelled_before_queued: u64,
    /// See [`IoCounts::skipped_while_cancelling`].
    pub skipped_while_cancelling: u64,
    /// See [`IoCounts::refused`].
    pub refused: u64,
}

impl IoSummary {
    /// Field-wise sum.
    #[must_use]
    pub const fn plus(self, o: Self) -> Self {
        Self {
            dispatched: self.dispatched + o.dispatched,
            pended: self.pended + o.pended,
            completed: self.completed + o.completed,
            completed_later: self.completed_later + o.completed_later,
            completed_at_dispatch: self.completed_at_dispatch + o.completed_at_dispatch,
            cancel_calls: self.cancel_calls + o.cancel_calls,
            cancel_routines_run: self.cancel_routines_run + o.cancel_routines_run,
            cancelled_before_queued: self.cancelled_before_queued + o.cancelled_before_queued,
            skipped_while_cancelling: self.skipped_while_cancelling + o.skipped_while_cancelling,
            refused: self.refused + o.refused,
        }
    }
}

/// The I/O manager's state of one world.
pub struct Io {
    /// IRPs sent to the driver (or prepared) and not yet completed, by
    /// address.
    live: Mutex<HashMap<usize, Arc<Ticket>>>,
    /// The system cancel spin lock: orders `IoCancelIrp` against the
    /// cancel-safe queue's check of the `Cancel` bit.
    pub(crate) cancel_lock: Mutex<()>,
    gate: Mutex<Gate>,
    gate_cond: Condvar,
    /// Cancel-safe queues (see [`crate::csq`]).
    pub(crate) queues: Mutex<HashMap<usize, crate::csq::Queue>>,
    next_id: AtomicU64,
    recycle: AtomicBool,
    free_irps: Mutex<Vec<usize>>,
    /// IRPs outstanding when `IoDeleteDevice` ran (`usize::MAX`: not yet).
    outstanding_at_delete: AtomicUsize,
    /// What the I/O paths exercised.
    pub counts: IoCounts,
}

impl Default for Io {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        for irp in lock(&self.free_irps).drain(..) {
            host_free(irp, IRP_SIZE + STACK_SIZE);
        }
    }
}

const fn read<T: Copy>(addr: usize) -> T {
    // SAFETY: callers pass an address inside a live host block (an IRP,
    // its stack location) at a naturally aligned field offset.
    unsafe { (addr as *const T).read() }
}

const fn write<T>(addr: usize, v: T) {
    // SAFETY: as `read`.
    unsafe { (addr as *mut T).write(v) };
}

/// `Irp->CancelRoutine`, accessed atomically (the kernel exchanges it
/// with interlocked operations).
pub(crate) const fn cancel_routine(irp: usize) -> &'static AtomicUsize {
    // SAFETY: a live IRP (callers hold it outstanding); the field is
    // pointer-sized and aligned, and only accessed atomically by the host
    // (the driver never touches it).
    unsafe { &*((irp + IRP_CANCEL_ROUTINE) as *const AtomicUsize) }
}

/// `Irp->Cancel`, accessed atomically.
pub(crate) const fn cancel_bit(irp: usize) -> &'static AtomicU8 {
    // SAFETY: as `cancel_routine` (a BOOLEAN).
    unsafe { &*((irp + IRP_CANCEL) as *const AtomicU8) }
}

/// Sets `SL_PENDING_RETURNED` in the IRP's current stack location
/// (`IoMarkIrpPending`).
pub(crate) const fn mark_pending(irp: usize) {
    let stack: usize = read(irp + IRP_CURRENT_STACK_LOCATION);
    let control: u8 = read(stack + STACK_CONTROL);
    write(stack + STACK_CONTROL, control | SL_PENDING_RETURNED);
}

const fn pending_marked(irp: usize) -> bool {
    let stack: usize = read(irp + IRP_CURRENT_STACK_LOCATION);
    read::<u8>(stack + STACK_CONTROL) & SL_PENDING_RETURNED != 0
}

impl Io {
    /// No IRP yet.
    #[must_use]
    pub fn new() -> Self {
        crate::csq::trace_reset();
        Self {
            live: Mutex::new(HashMap::new()),
            cancel_lock: Mutex::new(()),
            gate: Mutex::new(Gate::default()),
            gate_cond: Condvar::new(),
            queues: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            recycle: AtomicBool::new(false),
            free_irps: Mutex::new(Vec::new()),
            outstanding_at_delete: AtomicUsize::new(usize::MAX),
            counts: IoCounts::default(),
        }
    }

    /// Hands out IRP blocks again after completion (LIFO, like the I/O
    /// manager's lookaside lists) instead of freeing them.
    pub fn set_recycling(&self, on: bool) {
        self.recycle.store(on, Ordering::SeqCst);
    }

    /// IRPs sent to the driver and not completed.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        lock(&self.live)
            .values()
            .filter(|t| t.sent.load(Ordering::SeqCst))
            .count()
    }

    /// IRPs sent on `file` that a cancel-safe queue still holds, except
    /// those whose cancellation has begun (`IoCancelIrp` took their cancel
    /// routine, which removes and completes them). An IRP the driver took
    /// out of its queue and is completing on another thread is not
    /// counted: it is no longer queued.
    #[must_use]
    pub fn queued_on(&self, w: &World, file: usize) -> Vec<String> {
        // Under the lock completion takes: no IRP looked at here can be
        // completed, freed and its address reused (and queued again) while
        // the queue is asked about it.
        let live = lock(&self.live);
        live.values()
            .filter(|t| {
                t.file == file
                    && !t.cancelling.load(Ordering::SeqCst)
                    && crate::csq::queued_anywhere(w, t.irp)
            })
            .map(|t| {
                format!(
                    "IRP {:#x} (request {}, code {:#x}, dispatch returned {:?}, Cancel {})",
                    t.irp,
                    t.id,
                    t.code,
                    t.returned(),
                    cancel_bit(t.irp).load(Ordering::SeqCst)
                )
            })
            .collect()
    }

    /// Whether `irp` is outstanding.
    #[must_use]
    pub fn is_live(&self, irp: usize) -> bool {
        lock(&self.live).contains_key(&irp)
    }

    /// The ticket id of `irp` if it is outstanding.
    #[must_use]
    pub fn live_id(&self, irp: usize) -> Option<u64> {
        lock(&self.live).get(&irp).map(|t| t.id)
    }

    /// IRPs outstanding when `IoDeleteDevice` ran, if it has.
    #[must_use]
    pub fn outstanding_at_device_delete(&self) -> Option<usize> {
        match self.outstanding_at_delete.load(Ordering::SeqCst) {
            usize::MAX => None,
            n => Some(n),
        }
    }

    /// Called by the `IoDeleteDevice` model.
    pub(crate) fn device_deleted(&self, _device: usize) {
        let n = self.outstanding();
        self.outstanding_at_delete.store(n, Ordering::SeqCst);
    }

    /// The I/O manager stops sending requests (the unload routine is
    /// about to run) and waits for the dispatch routines running now (rule
    /// K25).
    pub fn close_gate(&self) {
        let mut g = lock(&self.gate);
        g.closed = true;
        while g.in_flight > 0 {
            g = self
                .gate_cond
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn enter_gate(&self) -> bool {
        let mut g = lock(&self.gate);
        if g.closed {
            return false;
        }
        g.in_flight += 1;
        true
    }

    fn leave_gate(&self) {
        let mut g = lock(&self.gate);
        g.in_flight -= 1;
        drop(g);
        self.gate_cond.notify_all();
    }

    /// What the I/O paths exercised so far.
    #[must_use]
    pub fn summary(&self) -> IoSummary {
        let c = &self.counts;
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        IoSummary {
            dispatched: l(&c.dispatched),
            pended: l(&c.pended),
            completed: l(&c.completed),
            completed_later: l(&c.completed_later),
            completed_at_dispatch: l(&c.completed_at_dispatch),
            cancel_calls: l(&c.cancel_calls),
            cancel_routines_run: l(&c.cancel_routines_run),
            cancelled_before_queued: l(&c.cancelled_before_queued),
            skipped_while_cancelling: l(&c.skipped_while_cancelling),
            refused: l(&c.refused),
        }
    }

    fn alloc_irp(&self) -> usize {
        let recycled = lock(&self.free_irps).pop();
        recycled.map_or_else(
            || host_alloc(IRP_SIZE + STACK_SIZE),
            |irp| {
                // SAFETY: a block of IRP_SIZE + STACK_SIZE bytes on the
                // free list, ours; IoAllocateIrp hands out initialised IRPs.
                unsafe { std::ptr::write_bytes(irp as *mut u8, 0, IRP_SIZE + STACK_SIZE) };
                irp
            },
        )
    }

    fn release_irp(&self, irp: usize) {
        if self.recycle.load(Ordering::SeqCst) {
            lock(&self.free_irps).push(irp);
        } else {
            host_free(irp, IRP_SIZE + STACK_SIZE);
        }
    }

    /// Drops an IRP the host prepared and no one completed (the
    /// harness's self-check tidying up).
    pub(crate) fn forget(&self, ticket: &Ticket) {
        self.discard(ticket);
    }

    /// Drops a prepared IRP that was never dispatched.
    fn discard(&self, ticket: &Ticket) {
        let removed = {
            let mut live = lock(&self.live);
            match live.get(&ticket.irp) {
                Some(t) if t.id == ticket.id => live.remove(&ticket.irp),
                _ => None,
            }
        };
        if removed.is_some() {
            if ticket.system_buffer != 0 {
                host_free(ticket.system_buffer, ticket.system_buffer_len);
            }
            self.release_irp(ticket.irp);
        }
    }
}

/// `IofCompleteRequest` (rules K11, K12, K13, K16 and K26): called by the
/// kernel model with the world already checked in.
pub(crate) fn complete_request(w: &World, irp: usize) {
    // Rule K26
    if w.unloaded.load(Ordering::SeqCst) {
        w.kernel.violation(format!(
            "IofCompleteRequest({irp:#x}) after the driver was unloaded"
        ));
    }
    let level = irql();
    let mut live = lock(&w.io.live);
    // Rule K11: an outstanding IRP, completed once.
    let Some(ticket) = live.remove(&irp) else {
        drop(live);
        w.kernel.violation(format!(
            "IofCompleteRequest({irp:#x}): not an outstanding IRP (completed twice, or never sent)"
        ));
        return;
    };
    let status: i32 = read(irp + IRP_STATUS);
    let information = usize::try_from(read::<u64>(irp + IRP_INFORMATION)).unwrap_or(usize::MAX);
    // Rule K12
    if cancel_routine(irp).load(Ordering::SeqCst) != 0 {
        w.kernel.violation(format!(
            "IofCompleteRequest({irp:#x}) with a cancel routine still set (bug check 0x48 CANCEL_STATE_IN_COMPLETED_IRP)"
        ));
    }
    if status == status::PENDING {
        w.kernel.violation(format!(
            "IofCompleteRequest({irp:#x}) with IoStatus.Status = STATUS_PENDING"
        ));
    }
    // Rule K13
    if crate::csq::queued_anywhere(w, irp) {
        w.kernel.violation(format!(
            "IofCompleteRequest({irp:#x}) while it is still in a cancel-safe queue"
        ));
    }
    let mut output = Vec::new();
    // Rule K16: NT_ERROR (severity 3) returns nothing; success, information
    // and warning statuses copy the output back.
    if ticket.buffered && status.cast_unsigned() >> 30 != 3 {
        if information > ticket.out_len {
            w.kernel.violation(format!(
                "IRP Information {information} exceeds OutputBufferLength {}",
                ticket.out_len
            ));
        }
        let n = information.min(ticket.out_len);
        if n > 0 {
            // SAFETY: the system buffer holds max(in, out) >= n bytes; the
            // IRP is outstanding (its buffer is still allocated).
            output.extend_from_slice(unsafe {
                std::slice::from_raw_parts(ticket.system_buffer as *const u8, n)
            });
        }
    }
    let completion = Completion {
        status,
        information,
        output,
        pending_returned: pending_marked(irp),
        cancel: cancel_bit(irp).load(Ordering::SeqCst) != 0,
        thread: std::thread::current().name().unwrap_or("?").to_string(),
        irql: level,
        during_dispatch: false,
        during_unload: w.unloading.load(Ordering::SeqCst),
    };
    let later = {
        let mut s = lock(&ticket.state);
        let during = s.returned.is_none();
        s.completion = Some(Completion {
            during_dispatch: during,
            ..completion
        });
        !during
    };
    ticket.cond.notify_all();
    drop(live);
    let c = &w.io.counts;
    c.completed.fetch_add(1, Ordering::Relaxed);
    if later {
        c.completed_later.fetch_add(1, Ordering::Relaxed);
    }
    if level == DISPATCH_LEVEL {
        c.completed_at_dispatch.fetch_add(1, Ordering::Relaxed);
    }
    // The I/O manager owns the IRP again: the buffer and the IRP go.
    if ticket.system_buffer != 0 {
        host_free(ticket.system_buffer, ticket.system_buffer_len);
    }
    w.io.release_irp(irp);
}

impl World {
    /// The control device (the driver's only device), if it exists.
    #[must_use]
    pub fn control_device(&self) -> Option<usize> {
        self.kernel.devices().into_iter().next().map(|(d, _)| d)
    }

    /// Builds an IRP for `handle` as the I/O manager does
    /// (`METHOD_BUFFERED`: one system buffer of max(in, out) bytes holding
    /// the input; rule K16) and registers it as outstanding; [`World::dispatch`]
    /// sends it. `None` when the driver has no device.
    pub fn prepare_irp(
        &self,
        handle: &FileHandle,
        major: u8,
        code: u32,
        input: &[u8],
        out_len: usize,
    ) -> Option<Arc<Ticket>> {
        let device = self.control_device()?;
        let buffered = major == IRP_MJ_DEVICE_CONTROL && code.trailing_zeros() >= 2;
        let system_buffer_len = if buffered {
            input.len().max(out_len)
        } else {
            0
        };
        let system_buffer = if system_buffer_len > 0 {
            host_alloc(system_buffer_len)
        } else {
            0
        };
        if system_buffer != 0 {
            // SAFETY: a fresh block of at least input.len() bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    input.as_ptr(),
                    system_buffer as *mut u8,
                    input.len(),
                );
            };
        }
        let irp = self.io.alloc_irp();
        let stack = irp + IRP_SIZE;
        write(irp, 6i16); // IO_TYPE_IRP
        write(irp + 2, u16::try_from(IRP_SIZE + STACK_SIZE).unwrap_or(0));
        write(irp + IRP_SYSTEM_BUFFER, system_buffer as u64);
        write(irp + IRP_STATUS, 0xDEAD_BEEF_u32);
        write(irp + IRP_INFORMATION, 0xDEAD_u64);
        write(irp + 0x42, [1u8, 1u8]); // StackCount, CurrentLocation
        write(irp + IRP_CURRENT_STACK_LOCATION, stack as u64);
        write(stack, major);
        if major == IRP_MJ_DEVICE_CONTROL {
            write(stack + 0x08, u32::try_from(out_len).unwrap_or(0));
            write(stack + 0x10, u32::try_from(input.len()).unwrap_or(0));
            write(stack + 0x18, code);
        }
        write(stack + 0x28, device as u64);
        write(stack + 0x30, handle.file as u64);
        let ticket = Arc::new(Ticket {
            id: self.io.next_id.fetch_add(1, Ordering::Relaxed),
            irp,
            major,
            code,
            file: handle.file,
            out_len,
            buffered,
            system_buffer,
            system_buffer_len,
            sent: AtomicBool::new(false),
            cancelling: AtomicBool::new(false),
            state: Mutex::new(TicketState::default()),
            cond: Condvar::new(),
        });
        lock(&self.io.live).insert(irp, Arc::clone(&ticket));
        Some(ticket)
    }

    /// Sends a prepared IRP to the driver's dispatch routine at
    /// `PASSIVE_LEVEL` (rule K14 checked when it returns). `None` when the
    /// I/O manager would not send it (unload begun, handle closed): the IRP
    /// is discarded.
    pub fn dispatch(&self, handle: &FileHandle, ticket: &Arc<Ticket>) -> Option<i32> {
        self.dispatch_as(Some(handle), ticket)
    }

    /// [`World::dispatch`] for a program's request on `user` (refused once
    /// the handle is closed), or (`None`) for the I/O manager's own
    /// cleanup and close of a closed handle.
    fn dispatch_as(&self, user: Option<&FileHandle>, ticket: &Arc<Ticket>) -> Option<i32> {
        // Rule K25: nothing on a closed handle, nothing once Unload begins.
        if let Some(handle) = user
            && !handle.begin_use()
        {
            self.io.discard(ticket);
            self.io.counts.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let returned = if self.io.enter_gate() {
            let r = self.run_dispatch(ticket);
            self.io.leave_gate();
            r
        } else {
            self.io.discard(ticket);
            self.io.counts.refused.fetch_add(1, Ordering::Relaxed);
            None
        };
        if let Some(handle) = user {
            handle.end_use();
        }
        returned
    }

    fn run_dispatch(&self, ticket: &Arc<Ticket>) -> Option<i32> {
        let Some(device) = self.control_device() else {
            self.kernel
                .violation("IRP sent but the driver has no device object".into());
            self.io.discard(ticket);
            return None;
        };
        let dispatch = {
            let at = self.kernel.driver_object
                + kernel::MAJOR_FUNCTION_OFFSET
                + 8 * usize::from(ticket.major);
            read::<usize>(at)
        };
        if !self.image.is_code(dispatch) {
            self.kernel.violation(format!(
                "MajorFunction[{:#x}] is {dispatch:#x}",
                ticket.major
            ));
            self.io.discard(ticket);
            return None;
        }
        self.io.counts.dispatched.fetch_add(1, Ordering::Relaxed);
        ticket.sent.store(true, Ordering::SeqCst);
        // SAFETY: a dispatch routine of the image (checked above).
        let f: unsafe extern "win64" fn(usize, usize) -> i32 =
            unsafe { std::mem::transmute(dispatch) };
        let irp = ticket.irp;
        let returned = call_into_image(self, "dispatch routine", PASSIVE_LEVEL, || {
            // SAFETY: a well-formed IRP for the driver's device, at
            // PASSIVE_LEVEL; the driver owns it until it completes it.
            unsafe { f(device, irp) }
        });
        // Rule K14, with the IRP still outstanding (its stack location is
        // read under the lock that completion takes) or already completed.
        let live = lock(&self.io.live);
        let still_live = live.get(&irp).is_some_and(|t| t.id == ticket.id);
        let marked_now = still_live && pending_marked(irp);
        let completion = {
            let mut s = lock(&ticket.state);
            s.returned = Some(returned);
            s.completion.clone()
        };
        drop(live);
        let what = format!("IRP major {:#x} code {:#x}", ticket.major, ticket.code);
        match (returned == status::PENDING, completion) {
            (true, Some(c)) => {
                self.io.counts.pended.fetch_add(1, Ordering::Relaxed);
                if !c.pending_returned {
                    self.kernel.violation(format!(
                        "{what}: dispatch returned STATUS_PENDING but the IRP was not marked pending (SL_PENDING_RETURNED)"
                    ));
                }
            }
            (true, None) => {
                self.io.counts.pended.fetch_add(1, Ordering::Relaxed);
                if !marked_now {
                    self.kernel.violation(format!(
                        "{what}: dispatch returned STATUS_PENDING but the IRP was not marked pending (SL_PENDING_RETURNED)"
                    ));
                }
            }
            (false, Some(c)) => {
                if c.status != returned {
                    self.kernel.violation(format!(
                        "{what}: dispatch returned {returned:#x} but completed the IRP with {:#x}",
                        c.status
                    ));
                }
                if c.pending_returned {
                    self.kernel.violation(format!(
                        "{what}: the IRP was marked pending but dispatch returned {returned:#x}, not STATUS_PENDING"
                    ));
                }
            }
            (false, None) => self.kernel.violation(format!(
                "{what}: dispatch returned {returned:#x} without completing the IRP (only STATUS_PENDING leaves it outstanding)"
            )),
        }
        Some(returned)
    }

    /// [`World::prepare_irp`] and [`World::dispatch`].
    pub fn submit(
        &self,
        handle: &FileHandle,
        major: u8,
        code: u32,
        input: &[u8],
        out_len: usize,
    ) -> Option<Arc<Ticket>> {
        let ticket = self.prepare_irp(handle, major, code, input, out_len)?;
        self.dispatch(handle, &ticket)?;
        Some(ticket)
    }

    /// A request on `handle` whose completion the caller waits for (up to
    /// [`SYNC_TIMEOUT`]); `None` when it was not sent.
    pub fn request(
        &self,
        handle: &FileHandle,
        major: u8,
        code: u32,
        input: &[u8],
        out_len: usize,
    ) -> Option<Completion> {
        self.request_as(Some(handle), handle, major, code, input, out_len)
    }

    fn request_as(
        &self,
        user: Option<&FileHandle>,
        handle: &FileHandle,
        major: u8,
        code: u32,
        input: &[u8],
        out_len: usize,
    ) -> Option<Completion> {
        let ticket = self.prepare_irp(handle, major, code, input, out_len)?;
        self.dispatch_as(user, &ticket)?;
        let done = ticket.wait(SYNC_TIMEOUT);
        if done.is_none() {
            // Rule K15
            self.kernel.violation(format!(
                "IRP major {major:#x} code {code:#x} still pending after {SYNC_TIMEOUT:?}"
            ));
        }
        done
    }

    /// Opens a handle to the control device: a `FILE_OBJECT` named
    /// `name` (after the device name) and `IRP_MJ_CREATE`.
    ///
    /// # Errors
    /// The status of the open (or `STATUS_NO_SUCH_DEVICE`).
    pub fn open_handle(&self, name: &str) -> Result<Arc<FileHandle>, i32> {
        let device = self.control_device().ok_or(STATUS_NO_SUCH_DEVICE)?;
        let handle = Arc::new(FileHandle::new(device, name));
        let done = self
            .request(&handle, IRP_MJ_CREATE, 0, &[], 0)
            .ok_or(STATUS_NO_SUCH_DEVICE)?;
        if done.status == status::SUCCESS {
            Ok(handle)
        } else {
            Err(done.status)
        }
    }

    /// Closes `handle` as the last `CloseHandle` does: no new request on it,
    /// `IRP_MJ_CLEANUP` (rule K24 checked when it completes), then
    /// `IRP_MJ_CLOSE`. Returns the cleanup's status (`None`: not sent).
    pub fn close_handle(&self, handle: &FileHandle) -> Option<i32> {
        if !handle.close() {
            return None;
        }
        // The handle is closed for its users; the cleanup and the close are
        // the I/O manager's own requests.
        crate::csq::trace_note(&format!("cleanup of file {:#x} begins", handle.file));
        let cleanup = self.request_as(None, handle, IRP_MJ_CLEANUP, 0, &[], 0)?;
        crate::csq::trace_note(&format!("cleanup of file {:#x} done", handle.file));
        let left = self.io.queued_on(self, handle.file);
        if !left.is_empty() {
            if crate::csq::tracing() {
                eprintln!(
                    "cancel-safe queue trace (last 400): {:#?}",
                    crate::csq::trace_tail(400)
                );
            }
            self.kernel.violation(format!(
                "IRP_MJ_CLEANUP of file object {:#x} completed but request(s) sent on it are still in the driver's queue: {}",
                handle.file,
                left.join(", ")
            ));
        }
        let _ = self.request_as(None, handle, IRP_MJ_CLOSE, 0, &[], 0);
        Some(cleanup.status)
    }

    /// `IoCancelIrp(Irp)` (rule K17) at `level` (≤ `DISPATCH_LEVEL`), from
    /// any thread, for an IRP the host sent. Returns whether a cancel
    /// routine was called (`false` also when the IRP is already complete).
    pub fn cancel_irp(&self, ticket: &Ticket, level: u8) -> bool {
        assert!(
            level <= DISPATCH_LEVEL,
            "host bug: IoCancelIrp above DISPATCH_LEVEL"
        );
        let irp = ticket.irp;
        let routine = {
            let _cancel = lock(&self.io.cancel_lock);
            let live = lock(&self.io.live);
            if live.get(&irp).is_none_or(|t| t.id != ticket.id) {
                return false;
            }
            self.io.counts.cancel_calls.fetch_add(1, Ordering::Relaxed);
            cancel_bit(irp).store(1, Ordering::SeqCst);
            write(irp + IRP_CANCEL_IRQL, level);
            let routine = cancel_routine(irp).swap(0, Ordering::SeqCst);
            if routine != 0 {
                ticket.cancelling.store(true, Ordering::SeqCst);
            }
            routine
        };
        if routine == 0 {
            return false;
        }
        self.io
            .counts
            .cancel_routines_run
            .fetch_add(1, Ordering::Relaxed);
        if routine != crate::csq::system_cancel_routine as *const () as usize {
            self.kernel.violation(format!(
                "IRP {irp:#x} carries cancel routine {routine:#x}, which only the cancel-safe queue installs"
            ));
            return false;
        }
        let device = self.control_device().unwrap_or(0);
        let outer = irql();
        kernel::set_irql(level);
        // SAFETY: the cancel-safe queue's cancel routine (host code), for an
        // IRP whose routine this call took: the IRP stays outstanding until
        // that routine completes it.
        unsafe { crate::csq::system_cancel_routine(device, irp) };
        kernel::set_irql(outer);
        true
    }
}

/// The old synchronous path ([`World::send_irp`]): a fresh file object
/// named `file_name`, the request, its completion.
pub(crate) fn send_and_wait(
    w: &World,
    major: u8,
    code: u32,
    input: &[u8],
    out_len: usize,
    file_name: &str,
) -> (i32, usize, Vec<u8>) {
    let Some(device) = w.control_device() else {
        w.kernel
            .violation("IRP sent but the driver has no device object".into());
        return (status::UNSUCCESSFUL, 0, Vec::new());
    };
    let handle = FileHandle::new(device, file_name);
    match w.request_as(None, &handle, major, code, input, out_len) {
        Some(c) => (c.status, c.information, c.output),
        None => (STATUS_NO_SUCH_DEVICE, 0, Vec::new()),
    }
}
