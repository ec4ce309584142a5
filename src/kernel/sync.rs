//! Synchronisation: a kernel spin lock for the flow registry, and the event
//! the flow-delete callback signals during teardown.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use wdk_sys::{KEVENT, KSPIN_LOCK, LARGE_INTEGER, ntddk};
use wfpmon_core::flow::Lock;

use super::KERNEL_MODE;

/// An executive spin lock (`KSPIN_LOCK`). Critical sections run at
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

// SAFETY: KeAcquireSpinLockRaiseToDpc/KeReleaseSpinLock give mutual
// exclusion across processors with full barriers.
unsafe impl Lock for SpinLock {
    /// IRQL ≤ `DISPATCH_LEVEL`.
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: the lock lives in non-paged static memory and is only used
        // through this pair of calls; IRQL <= DISPATCH_LEVEL by contract.
        let old_irql = unsafe { ntddk::KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        let result = f();
        // SAFETY: we hold the lock, acquired above with `old_irql`.
        unsafe { ntddk::KeReleaseSpinLock(self.lock.get(), old_irql) };
        result
    }
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
