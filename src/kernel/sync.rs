//! Synchronisation: the flow registry's per-bucket spin locks (in-stack
//! queued), and the event the flow-delete callback signals during teardown.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use wdk_sys::{KEVENT, KLOCK_QUEUE_HANDLE, KSPIN_LOCK, LARGE_INTEGER, ntddk};
use wfpmon_core::flow::{ConstLock, Lock};

use super::KERNEL_MODE;

/// An executive spin lock (`KSPIN_LOCK`) taken as an in-stack queued spin
/// lock (`KeAcquireInStackQueuedSpinLock`): waiters spin on their own queue
/// entry, in order, instead of all on the lock's line — what Microsoft
/// recommends for locks many processors take. Critical sections run at
/// `DISPATCH_LEVEL`: they must not block, allocate paged memory or call
/// into the filter engine.
pub struct SpinLock {
    lock: UnsafeCell<KSPIN_LOCK>,
}

// SAFETY: the kernel spin lock API is designed for concurrent use from any
// processor; the cell is only ever handed to it.
unsafe impl Sync for SpinLock {}

impl SpinLock {
    /// A released lock. On x64 `KeInitializeSpinLock` only stores zero (it
    /// is an inline function in wdm.h), so a zeroed lock is initialised.
    pub const fn new() -> Self {
        Self {
            lock: UnsafeCell::new(0),
        }
    }
}

// SAFETY: KeAcquireInStackQueuedSpinLock / KeReleaseInStackQueuedSpinLock
// give mutual exclusion across processors with full barriers.
unsafe impl Lock for SpinLock {
    /// IRQL ≤ `DISPATCH_LEVEL`.
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        // The queue entry lives on this stack frame for the whole critical
        // section, as the in-stack protocol requires.
        let mut handle = MaybeUninit::<KLOCK_QUEUE_HANDLE>::zeroed();
        // SAFETY: the lock lives in non-paged static memory and is only used
        // through this pair of calls; `handle` outlives the critical
        // section; IRQL <= DISPATCH_LEVEL by contract.
        unsafe { ntddk::KeAcquireInStackQueuedSpinLock(self.lock.get(), handle.as_mut_ptr()) };
        let result = f();
        // SAFETY: releases the acquisition recorded in `handle` above, on the
        // same processor, at DISPATCH_LEVEL (restoring the saved IRQL).
        unsafe { ntddk::KeReleaseInStackQueuedSpinLock(handle.as_mut_ptr()) };
        result
    }
}

impl ConstLock for SpinLock {
    const RELEASED: Self = Self::new();
}

/// A kernel synchronization event (auto-reset) in static memory.
///
/// Setting or waiting before [`Event::initialize`] does nothing (a wait
/// reports [`Wait::TimedOut`]): the kernel is never handed an uninitialised
/// `KEVENT`.
pub struct Event {
    event: UnsafeCell<MaybeUninit<KEVENT>>,
    ready: AtomicBool,
}

// SAFETY: KEVENT is designed to be set and waited on from any processor.
unsafe impl Sync for Event {}

/// Outcome of [`Event::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The event was signalled.
    Signalled,
    /// The timeout expired first.
    TimedOut,
}

impl Event {
    /// Storage for an event; [`Event::initialize`] must run before use.
    pub const fn uninit() -> Self {
        Self {
            event: UnsafeCell::new(MaybeUninit::zeroed()),
            ready: AtomicBool::new(false),
        }
    }

    /// `KeInitializeEvent(SynchronizationEvent, not signalled)`.
    /// `PASSIVE_LEVEL`, before any other use (`DriverEntry`, before the first
    /// callout is registered).
    pub fn initialize(&self) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: non-paged static storage; not yet published (`ready` is
        // false), so no setter or waiter can use it concurrently.
        unsafe {
            ntddk::KeInitializeEvent(
                self.event.get().cast(),
                wdk_sys::_EVENT_TYPE::SynchronizationEvent,
                0,
            );
        }
        self.ready.store(true, Ordering::Release);
    }

    /// `KeSetEvent` without a following wait. IRQL ≤ `DISPATCH_LEVEL`.
    pub fn set(&self) {
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: initialised (checked above); KeSetEvent without a
        // following wait is callable at IRQL <= DISPATCH_LEVEL.
        unsafe { ntddk::KeSetEvent(self.event.get().cast(), 0, 0) };
    }

    /// Waits up to `timeout_100ns` (100 ns units). `PASSIVE_LEVEL` only.
    pub fn wait(&self, timeout_100ns: i64) -> Wait {
        if !self.ready.load(Ordering::Acquire) {
            return Wait::TimedOut;
        }
        let mut timeout = LARGE_INTEGER {
            QuadPart: -timeout_100ns,
        };
        // SAFETY: initialised event (checked above); relative timeout on our stack; kernel
        // mode wait, not alertable, at PASSIVE_LEVEL (teardown only).
        let status = unsafe {
            ntddk::KeWaitForSingleObject(
                self.event.get().cast(),
                wdk_sys::_KWAIT_REASON::Executive,
                KERNEL_MODE,
                0,
                &raw mut timeout,
            )
        };
        if status == wdk_sys::STATUS_TIMEOUT {
            Wait::TimedOut
        } else {
            Wait::Signalled
        }
    }
}
