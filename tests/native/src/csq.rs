//! The cancel-safe IRP queue routines (`IoCsqInitialize`,
//! `IoCsqInsertIrp`, `IoCsqRemoveNextIrp`) and the cancel routine they
//! install — the system's half of the protocol; the driver supplies the
//! queue, its lock and six callbacks, which these models call through the
//! function pointers the driver gave `IoCsqInitialize`.
//!
//! # The rules
//!
//! The rules are in `docs/engine-rules.md`: `IoCsqInitialize` (K18),
//! `IoCsqInsertIrp` (K19), `IoCsqRemoveNextIrp` (K20), the queue's cancel
//! routine (K21), `DriverContext[3]` (K22), the driver's lock callbacks
//! (K23). `// Rule Kn` comments mark the code that implements each.
//!
//! The model keeps its own view of which IRPs each queue holds (inserted
//! by `CsqInsertIrp`, not yet removed by `CsqRemoveIrp`) to check the
//! driver's list against.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::io::{IRP_DRIVER_CONTEXT_3, cancel_bit, cancel_routine, mark_pending};
use crate::kernel::{
    DISPATCH_LEVEL, HIGH_LEVEL, Leaves, call_into_image, call_into_image_leaving, enter_api, irql,
    lock, status,
};
use crate::world::{World, world};

/// `IO_TYPE_CSQ_IRP_CONTEXT`.
const IO_TYPE_CSQ_IRP_CONTEXT: u32 = 1;
/// `IO_TYPE_CSQ`.
const IO_TYPE_CSQ: u32 = 2;
/// `IO_CSQ` size on x64.
const IO_CSQ_SIZE: usize = 64;

type InsertFn = unsafe extern "win64" fn(usize, usize);
type RemoveFn = unsafe extern "win64" fn(usize, usize);
type PeekFn = unsafe extern "win64" fn(usize, usize, usize) -> usize;
type AcquireFn = unsafe extern "win64" fn(usize, *mut u8);
type ReleaseFn = unsafe extern "win64" fn(usize, u8);
type CompleteFn = unsafe extern "win64" fn(usize, usize);

/// The driver's routines for one queue.
#[derive(Clone, Copy, Debug)]
struct Routines {
    insert: usize,
    remove: usize,
    peek: usize,
    acquire: usize,
    release: usize,
    complete_canceled: usize,
}

/// One cancel-safe queue (keyed by its `IO_CSQ` address).
pub struct Queue {
    routines: Routines,
    /// IRPs `CsqInsertIrp` inserted and `CsqRemoveIrp` did not remove.
    queued: HashSet<usize>,
    /// IRPs in the queue's hands (from `IoCsqInsertIrp` until handed to
    /// the driver or to cancellation), with the `DriverContext[3]` value
    /// the queue stored in each (rule K22).
    tagged: HashMap<usize, usize>,
}

/// A debugging trace of the queue operations of the current world, kept
/// when `WFPMON_NATIVE_TRACE_CSQ` is set (and printed with a violation of
/// the cleanup rule).
static TRACE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether [`TRACE`] is kept.
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("WFPMON_NATIVE_TRACE_CSQ").is_some())
}

fn trace(what: impl FnOnce() -> String) {
    if tracing() {
        let line = format!(
            "[{}] {}",
            std::thread::current().name().unwrap_or("?"),
            what()
        );
        lock(&TRACE).push(line);
    }
}

/// The last `n` trace lines (debugging).
#[must_use]
pub fn trace_tail(n: usize) -> Vec<String> {
    let t = lock(&TRACE);
    t[t.len().saturating_sub(n)..].to_vec()
}

/// Forgets the trace (a new world).
pub fn trace_reset() {
    lock(&TRACE).clear();
}

/// Adds a line to the trace (debugging).
pub fn trace_note(line: &str) {
    trace(|| line.to_string());
}

/// Whether any queue holds `irp` (host view).
pub(crate) fn queued_anywhere(w: &World, irp: usize) -> bool {
    lock(&w.io.queues).values().any(|q| q.queued.contains(&irp))
}

/// IRPs held by the queues now.
#[must_use]
pub fn queued_count(w: &World) -> usize {
    lock(&w.io.queues).values().map(|q| q.queued.len()).sum()
}

/// The driver's routines of queue `csq`, which only `IoCsqInitialize` makes
/// (rule K18).
fn routines(w: &World, api: &str, csq: usize) -> Option<Routines> {
    let r = lock(&w.io.queues).get(&csq).map(|q| q.routines);
    if r.is_none() {
        w.kernel.violation(format!(
            "{api}({csq:#x}): not an IO_CSQ initialised by IoCsqInitialize"
        ));
    }
    r
}

const fn word(addr: usize) -> usize {
    // SAFETY: callers pass an aligned pointer-sized field of a live
    // structure (an IRP outstanding, the driver's IO_CSQ or context).
    unsafe { (addr as *const usize).read() }
}

const fn set_word(addr: usize, v: usize) {
    // SAFETY: as `word`.
    unsafe { (addr as *mut usize).write(v) };
}

/// `CsqAcquireLock(Csq, &Irql)` at the current IRQL; returns the IRQL it
/// reported (rule K23).
fn acquire_lock(w: &World, r: &Routines, csq: usize) -> u8 {
    let level = irql();
    let mut reported: u8 = 0xFF;
    // SAFETY: the driver's CsqAcquireLock (checked to be image code at
    // IoCsqInitialize), with its documented signature.
    let f = unsafe { std::mem::transmute::<usize, AcquireFn>(r.acquire) };
    call_into_image_leaving(
        w,
        "CsqAcquireLock",
        level,
        Leaves::OneLockAtDispatch,
        || {
            // SAFETY: the queue and an out-parameter alive for the call.
            unsafe { f(csq, &raw mut reported) };
        },
    );
    if reported != level {
        w.kernel.violation(format!(
            "CsqAcquireLock reported IRQL {reported}; it was called at {level}"
        ));
    }
    level
}

/// `CsqReleaseLock(Csq, Irql)` (rule K23).
fn release_lock(w: &World, r: &Routines, csq: usize, old: u8) {
    // SAFETY: the driver's CsqReleaseLock.
    let f = unsafe { std::mem::transmute::<usize, ReleaseFn>(r.release) };
    call_into_image_leaving(
        w,
        "CsqReleaseLock",
        DISPATCH_LEVEL,
        Leaves::OneLockFewerAt(old),
        || {
            // SAFETY: releases the acquisition above, with its IRQL.
            unsafe { f(csq, old) };
        },
    );
}

fn insert_irp(w: &World, r: &Routines, csq: usize, irp: usize) {
    // SAFETY: the driver's CsqInsertIrp.
    let f = unsafe { std::mem::transmute::<usize, InsertFn>(r.insert) };
    call_into_image(w, "CsqInsertIrp", DISPATCH_LEVEL, || {
        // SAFETY: the queue, under its lock, and an IRP the driver owns.
        unsafe { f(csq, irp) };
    });
    let mut queues = lock(&w.io.queues);
    if let Some(q) = queues.get_mut(&csq) {
        q.queued.insert(irp);
    }
}

fn remove_irp(w: &World, r: &Routines, csq: usize, irp: usize) {
    // SAFETY: the driver's CsqRemoveIrp.
    let f = unsafe { std::mem::transmute::<usize, RemoveFn>(r.remove) };
    call_into_image(w, "CsqRemoveIrp", DISPATCH_LEVEL, || {
        // SAFETY: the queue, under its lock, and an IRP it holds.
        unsafe { f(csq, irp) };
    });
    let removed = lock(&w.io.queues)
        .get_mut(&csq)
        .is_some_and(|q| q.queued.remove(&irp));
    if !removed {
        w.kernel.violation(format!(
            "CsqRemoveIrp({irp:#x}) for an IRP the queue does not hold"
        ));
    }
}

fn complete_canceled(w: &World, r: &Routines, csq: usize, irp: usize) {
    // SAFETY: the driver's CsqCompleteCanceledIrp.
    let f = unsafe { std::mem::transmute::<usize, CompleteFn>(r.complete_canceled) };
    let ticket = w.io.live_id(irp);
    let level = irql();
    call_into_image(w, "CsqCompleteCanceledIrp", level, || {
        // SAFETY: a cancelled IRP no queue holds: the driver's to complete.
        unsafe { f(csq, irp) };
    });
    // Rule K21: CsqCompleteCanceledIrp completes the IRP.
    if ticket.is_some() && w.io.live_id(irp) == ticket {
        w.kernel.violation(format!(
            "CsqCompleteCanceledIrp({irp:#x}) returned without completing the cancelled IRP"
        ));
    }
}

/// Records that the queue stored `value` in the IRP's `DriverContext[3]`.
fn tag(w: &World, csq: usize, irp: usize, value: usize) {
    set_word(irp + IRP_DRIVER_CONTEXT_3, value);
    if let Some(q) = lock(&w.io.queues).get_mut(&csq) {
        q.tagged.insert(irp, value);
    }
}

/// Takes an IRP out of the queue's hands: checks that `DriverContext[3]`
/// still holds what the queue stored (rule K22), clears it, and clears the
/// caller's context's `Irp`.
fn release_context(w: &World, csq: usize, irp: usize) {
    let expected = lock(&w.io.queues)
        .get_mut(&csq)
        .and_then(|q| q.tagged.remove(&irp));
    let held = word(irp + IRP_DRIVER_CONTEXT_3);
    if Some(held) != expected {
        w.kernel.violation(format!(
            "IRP {irp:#x}: DriverContext[3] is {held:#x} while queued, not the queue's {expected:#x?} (drivers must leave that member unused)"
        ));
    }
    if let Some(context) = expected
        && context != csq
    {
        // IO_CSQ_IRP_CONTEXT { Type, Irp, Csq }: the IRP left the queue.
        set_word(context + 8, 0);
    }
    set_word(irp + IRP_DRIVER_CONTEXT_3, 0);
}

/// `IoCsqInitialize` (rule K18). Any IRQL. Failable.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "win64" fn io_csq_initialize(
    csq: usize,
    insert: usize,
    remove: usize,
    peek: usize,
    acquire: usize,
    release: usize,
    complete_canceled: usize,
) -> i32 {
    let w = enter_api("IoCsqInitialize", HIGH_LEVEL);
    if csq == 0 || !csq.is_multiple_of(8) {
        w.kernel
            .violation(format!("IoCsqInitialize({csq:#x}): not an aligned IO_CSQ"));
        return status::INVALID_PARAMETER;
    }
    for (name, f) in [
        ("CsqInsertIrp", insert),
        ("CsqRemoveIrp", remove),
        ("CsqPeekNextIrp", peek),
        ("CsqAcquireLock", acquire),
        ("CsqReleaseLock", release),
        ("CsqCompleteCanceledIrp", complete_canceled),
    ] {
        if !w.image.is_code(f) {
            w.kernel.violation(format!(
                "IoCsqInitialize: {name} {f:#x} is not code of the image"
            ));
            return status::INVALID_PARAMETER;
        }
    }
    if w.kernel.inject("IoCsqInitialize") {
        return status::INSUFFICIENT_RESOURCES;
    }
    let mut queues = lock(&w.io.queues);
    if queues.get(&csq).is_some_and(|q| !q.queued.is_empty()) {
        w.kernel.violation(format!(
            "IoCsqInitialize({csq:#x}) of a queue that still holds IRPs"
        ));
    }
    // SAFETY: the driver's IO_CSQ (64 bytes on x64): Type, the six
    // routines, ReservePointer — filled as the system does.
    unsafe { std::ptr::write_bytes(csq as *mut u8, 0, IO_CSQ_SIZE) };
    // SAFETY: as above (Type).
    unsafe { (csq as *mut u32).write(IO_TYPE_CSQ) };
    for (i, f) in [insert, remove, peek, acquire, release, complete_canceled]
        .into_iter()
        .enumerate()
    {
        set_word(csq + 8 + 8 * i, f);
    }
    queues.insert(
        csq,
        Queue {
            routines: Routines {
                insert,
                remove,
                peek,
                acquire,
                release,
                complete_canceled,
            },
            queued: HashSet::new(),
            tagged: HashMap::new(),
        },
    );
    status::SUCCESS
}

/// `IoCsqInsertIrp` (rule K19).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn io_csq_insert_irp(csq: usize, irp: usize, context: usize) {
    let api = enter_api("IoCsqInsertIrp", DISPATCH_LEVEL);
    let w: &World = &api;
    let Some(r) = routines(w, "IoCsqInsertIrp", csq) else {
        return;
    };
    if !w.io.is_live(irp) {
        w.kernel.violation(format!(
            "IoCsqInsertIrp({irp:#x}): not an outstanding IRP sent to the driver"
        ));
        return;
    }
    if lock(&w.io.queues)
        .values()
        .any(|q| q.tagged.contains_key(&irp))
    {
        w.kernel
            .violation(format!("IoCsqInsertIrp({irp:#x}): already queued"));
        return;
    }
    let old = acquire_lock(w, &r, csq);
    if context == 0 {
        tag(w, csq, irp, csq);
    } else {
        // SAFETY: the caller's IO_CSQ_IRP_CONTEXT { Type, Irp, Csq }.
        unsafe { (context as *mut u32).write(IO_TYPE_CSQ_IRP_CONTEXT) };
        set_word(context + 8, irp);
        set_word(context + 16, csq);
        tag(w, csq, irp, context);
    }
    // The system cancel spin lock orders this check against IoCancelIrp:
    // either the IRP was cancelled before (no routine to take: it is not
    // queued), or the routine is installed first and a cancellation finds
    // it — and waits for the queue lock, by then inserted.
    let cancelled = {
        let _cancel = lock(&w.io.cancel_lock);
        let cancelled = cancel_bit(irp).load(Ordering::SeqCst) != 0;
        if !cancelled {
            cancel_routine(irp).store(
                system_cancel_routine as *const () as usize,
                Ordering::SeqCst,
            );
        }
        cancelled
    };
    trace(|| {
        format!(
            "insert {irp:#x} (request {:?}, file {:#x}) cancelled {cancelled}",
            w.io.live_id(irp),
            word(word(irp + 0xB8) + 0x30)
        )
    });
    if !cancelled {
        insert_irp(w, &r, csq, irp);
    }
    mark_pending(irp);
    release_lock(w, &r, csq, old);
    if cancelled {
        release_context(w, csq, irp);
        w.io.counts
            .cancelled_before_queued
            .fetch_add(1, Ordering::Relaxed);
        complete_canceled(w, &r, csq, irp);
    }
}

/// `IoCsqRemoveNextIrp` (rule K20).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn io_csq_remove_next_irp(csq: usize, peek_context: usize) -> usize {
    let api = enter_api("IoCsqRemoveNextIrp", DISPATCH_LEVEL);
    let w: &World = &api;
    let Some(r) = routines(w, "IoCsqRemoveNextIrp", csq) else {
        return 0;
    };
    // SAFETY: the driver's CsqPeekNextIrp.
    let peek = unsafe { std::mem::transmute::<usize, PeekFn>(r.peek) };
    let old = acquire_lock(w, &r, csq);
    let bound = lock(&w.io.queues).get(&csq).map_or(0, |q| q.queued.len()) + 1;
    let mut previous = 0;
    let mut found = 0;
    for _ in 0..bound {
        let next = call_into_image(w, "CsqPeekNextIrp", DISPATCH_LEVEL, || {
            // SAFETY: the queue, under its lock; `previous` is NULL or an
            // IRP it holds; the caller's peek context.
            unsafe { peek(csq, previous, peek_context) }
        });
        trace(|| format!("peek({previous:#x}, ctx {peek_context:#x}) -> {next:#x}"));
        if next == 0 {
            break;
        }
        let held = lock(&w.io.queues)
            .get(&csq)
            .is_some_and(|q| q.queued.contains(&next));
        if !held {
            w.kernel.violation(format!(
                "CsqPeekNextIrp returned {next:#x}, which the queue does not hold"
            ));
            break;
        }
        if cancel_routine(next).swap(0, Ordering::SeqCst) == 0 {
            // Its cancellation has begun: the cancel routine removes it.
            w.io.counts
                .skipped_while_cancelling
                .fetch_add(1, Ordering::Relaxed);
            previous = next;
            continue;
        }
        remove_irp(w, &r, csq, next);
        trace(|| format!("removed {next:#x}"));
        release_context(w, csq, next);
        found = next;
        break;
    }
    release_lock(w, &r, csq, old);
    found
}

/// The cancel routine `IoCsqInsertIrp` installs (`DRIVER_CANCEL`; rule K21), called
/// by the `IoCancelIrp` model at the canceller's IRQL (the system cancel
/// spin lock already released, as the queue's routine does first).
///
/// # Safety
/// `irp` is an outstanding IRP whose cancel routine the caller took.
pub unsafe extern "win64" fn system_cancel_routine(_device: usize, irp: usize) {
    let w = world();
    let csq = lock(&w.io.queues)
        .iter()
        .find(|(_, q)| q.tagged.contains_key(&irp))
        .map(|(csq, _)| *csq);
    let Some(csq) = csq else {
        w.kernel.violation(format!(
            "cancelling IRP {irp:#x}: no cancel-safe queue holds it (host bug)"
        ));
        return;
    };
    let Some(r) = routines(w, "cancel routine", csq) else {
        return;
    };
    let old = acquire_lock(w, &r, csq);
    remove_irp(w, &r, csq, irp);
    trace(|| format!("cancel routine removed {irp:#x}"));
    release_context(w, csq, irp);
    release_lock(w, &r, csq, old);
    complete_canceled(w, &r, csq, irp);
}
