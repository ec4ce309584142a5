//! Model checking (loom) of the registry's concurrency protocol: a classify
//! associating a new flow, the engine deleting another flow, and unload
//! stopping the registry and running a removal pass — in every
//! interleaving loom can produce.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p wfpmon-core --test loom_registry --release`.
//!
//! Loom explores the interleavings at the bucket locks (loom mutexes). The
//! registry's own atomics are `core` atomics, which loom executes as
//! sequentially consistent operations; the one protocol that depends on
//! their ordering (`stop` against `insert`) uses `SeqCst` on both sides.
#![cfg(loom)]

use std::ptr::NonNull;

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::flow::{Association, Direction, FlowRecord, FlowRegistry, FlowTuple, Lock};

struct LoomLock(Mutex<()>);

// SAFETY: loom's mutex gives mutual exclusion and orders the critical sections.
unsafe impl Lock for LoomLock {
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.0.lock().unwrap();
        f()
    }
}

fn record(flow_id: u64) -> NonNull<FlowRecord> {
    let tuple = FlowTuple {
        family: AddressFamily::V4,
        ip_protocol: 6,
        local_address: [0; 16],
        local_port: 1,
        remote_address: [0; 16],
        remote_port: 2,
        direction: Direction::Outbound,
    };
    let r = Box::new(FlowRecord::new(
        Association {
            flow_id,
            callout: 0,
        },
        tuple,
        (0, wfpmon_core::process::NO_PROCESS),
        0,
    ));
    NonNull::from(Box::leak(r))
}

/// # Safety
/// `r` came from `record`, is unlinked and used by no one else.
unsafe fn free(r: NonNull<FlowRecord>) {
    // SAFETY: contract.
    drop(unsafe { Box::from_raw(r.as_ptr()) });
}

#[derive(Clone, Copy)]
struct SendPtr(NonNull<FlowRecord>);
// SAFETY: the test hands each record to exactly one thread at a time.
unsafe impl Send for SendPtr {}

#[test]
fn stop_insert_remove_and_drain_in_every_interleaving() {
    loom::model(|| {
        // Two buckets: the two flows may or may not share one.
        let reg: &'static FlowRegistry<LoomLock, 2> =
            Box::leak(Box::new(FlowRegistry::with_locks(|| {
                LoomLock(Mutex::new(()))
            })));
        let old = SendPtr(record(1));
        // SAFETY: fresh record; freed by the deleting thread below.
        unsafe { reg.insert(old.0) }.unwrap();
        let stopped = Box::leak(Box::new(AtomicBool::new(false)));

        // classify: a new flow arrives and is tracked unless unload began.
        let classify = thread::spawn(move || {
            let new = record(2);
            // SAFETY: fresh record.
            match unsafe { reg.insert(new) } {
                Ok(()) => Some(SendPtr(new)),
                Err(_) => {
                    // SAFETY: never linked.
                    unsafe { free(new) };
                    None
                }
            }
        });
        // engine: the old flow ends (flowDeleteFn).
        let delete = thread::spawn(move || {
            let old = old;
            // SAFETY: linked by the main thread, removed only here.
            unsafe { reg.remove(old.0, |_, _| ()) };
            // SAFETY: unlinked now.
            unsafe { free(old.0) };
        });
        // unload: stop, then one removal pass.
        let unload = thread::spawn(move || {
            reg.stop();
            stopped.store(true, Ordering::SeqCst);
            let mut pass = reg.begin_removal_pass();
            let mut seen = Vec::new();
            while let Some(a) = reg.next_for_removal(&mut pass, 0) {
                seen.push(a.flow_id);
            }
            seen
        });

        let new = classify.join().unwrap();
        delete.join().unwrap();
        let seen = unload.join().unwrap();

        // A flow tracked by classify is always found by unload's pass: it
        // was inserted before `stop`, and nothing else removes it.
        if let Some(new) = new {
            assert!(seen.contains(&2), "unload missed a tracked flow");
            assert_eq!(reg.len(), 1);
            // SAFETY: still linked, valid.
            unsafe { reg.remove(new.0, |_, _| ()) };
            // SAFETY: unlinked.
            unsafe { free(new.0) };
        }
        // Nothing is handed out twice, and the deleted flow never after its removal.
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(dedup, seen);
        assert!(reg.is_empty());
        assert!(reg.is_stopping());
    });
}
