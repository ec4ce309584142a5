//! The flow registry: a model-based property test against a plain set, and
//! a multi-threaded stress test of the stop/insert/remove protocol.

use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::flow::{Association, Direction, FlowRecord, FlowRegistry, FlowTuple, Lock};

/// Host stand-in for the driver's spin lock.
#[derive(Default)]
struct StdLock(Mutex<()>);

// SAFETY: a std mutex gives mutual exclusion and release/acquire ordering.
unsafe impl Lock for StdLock {
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }
}

const fn tuple() -> FlowTuple {
    FlowTuple {
        family: AddressFamily::V4,
        ip_protocol: 17,
        local_address: FlowTuple::ipv4_address(0x7f00_0001),
        local_port: 5353,
        remote_address: FlowTuple::ipv4_address(0x0a00_0001),
        remote_port: 53,
        direction: Direction::Outbound,
    }
}

fn record(flow_id: u64, callout: usize) -> NonNull<FlowRecord> {
    let r = Box::new(FlowRecord::new(
        Association { flow_id, callout },
        tuple(),
        1,
        0,
    ));
    NonNull::from(Box::leak(r))
}

/// # Safety
/// `r` came from `record` and is no longer linked.
unsafe fn free(r: NonNull<FlowRecord>) {
    // SAFETY: per the contract, `r` is a leaked box no one else uses.
    drop(unsafe { Box::from_raw(r.as_ptr()) });
}

#[test]
fn ipv4_addresses_are_stored_in_network_order() {
    assert_eq!(
        &FlowTuple::ipv4_address(0xc0a8_0001)[..4],
        &[192, 168, 0, 1]
    );
}

#[derive(Clone, Debug)]
enum Op {
    Insert(usize),
    Remove(usize),
    Stop,
    Drain(usize),
    Continue(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4).prop_map(Op::Insert),
        3 => (0usize..64).prop_map(Op::Remove),
        1 => Just(Op::Stop),
        1 => (0usize..4).prop_map(Op::Drain),
        1 => (0usize..4).prop_map(Op::Continue),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any sequence of inserts, removals, stops and removal passes keeps the
    /// registry equal to a model set; a removal pass hands out each flow of
    /// the callout exactly once; nothing is inserted after stop.
    #[test]
    fn registry_matches_a_model(ops in prop::collection::vec(op(), 1..80)) {
        let reg = FlowRegistry::new(StdLock::default());
        let mut model: BTreeSet<(u64, usize)> = BTreeSet::new();
        let mut live: Vec<(u64, NonNull<FlowRecord>)> = Vec::new();
        let mut next_id = 1u64;
        let mut stopped = false;
        // Flows handed out by the current removal pass (any callout).
        let mut asked: BTreeSet<u64> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Insert(callout) => {
                    let r = record(next_id, callout);
                    // SAFETY: fresh record, kept alive in `live` until removed.
                    let res = unsafe { reg.insert(r) };
                    prop_assert_eq!(res.is_ok(), !stopped);
                    if res.is_ok() {
                        model.insert((next_id, callout));
                        live.push((next_id, r));
                    } else {
                        // SAFETY: never linked.
                        unsafe { free(r) };
                    }
                    next_id += 1;
                }
                Op::Remove(i) if !live.is_empty() => {
                    let (id, r) = live.swap_remove(i % live.len());
                    let mut retired = 0;
                    // SAFETY: `r` is linked and valid.
                    let out = unsafe { reg.remove(r, |rec| { retired += 1; assert_eq!(rec.association.flow_id, id); }) };
                    prop_assert_eq!(retired, 1);
                    let callout = model.iter().find(|m| m.0 == id).unwrap().1;
                    model.retain(|&(m, _)| m != id);
                    prop_assert_eq!(out.now_empty, model.is_empty());
                    prop_assert_eq!(out.callout_done, !model.iter().any(|m| m.1 == callout));
                    prop_assert_eq!(out.stopping, stopped);
                    // SAFETY: unlinked now.
                    unsafe { free(r) };
                }
                Op::Remove(_) => {}
                Op::Stop => { reg.stop(); stopped = true; }
                Op::Drain(callout) => {
                    let pass = reg.begin_removal_pass();
                    let mut seen = BTreeSet::new();
                    while let Some(a) = reg.next_for_removal(pass, callout) {
                        prop_assert_eq!(a.callout, callout);
                        prop_assert!(seen.insert(a.flow_id), "flow handed out twice in one pass");
                    }
                    let want: BTreeSet<u64> = model.iter().filter(|m| m.1 == callout).map(|m| m.0).collect();
                    prop_assert_eq!(&seen, &want);
                    // A new pass: what it has handed out so far.
                    asked = seen;
                }
                Op::Continue(callout) => {
                    // Continuing the last pass hands out only the flows of
                    // the callout it has not handed out yet (linked since).
                    let pass = reg.current_removal_pass();
                    let mut seen = BTreeSet::new();
                    while let Some(a) = reg.next_for_removal(pass, callout) {
                        prop_assert!(seen.insert(a.flow_id), "flow handed out twice in one pass");
                    }
                    let want: BTreeSet<u64> = model.iter()
                        .filter(|m| m.1 == callout && !asked.contains(&m.0)).map(|m| m.0).collect();
                    prop_assert_eq!(&seen, &want);
                    asked.extend(seen);
                }
            }
            prop_assert_eq!(reg.len(), model.len());
            prop_assert_eq!(reg.is_stopping(), stopped);
        }
        for (_, r) in live {
            // SAFETY: still linked and valid.
            unsafe { reg.remove(r, |_| ()) };
            // SAFETY: unlinked now.
            unsafe { free(r) };
        }
        prop_assert!(reg.is_empty());
    }
}

#[test]
fn removing_twice_retires_once() {
    let reg = FlowRegistry::new(StdLock::default());
    let r = record(1, 0);
    // SAFETY: fresh record.
    unsafe { reg.insert(r) }.unwrap();
    let retired = AtomicUsize::new(0);
    for _ in 0..2 {
        // SAFETY: valid; linked the first time, unlinked the second.
        unsafe {
            reg.remove(r, |_| {
                retired.fetch_add(1, Ordering::Relaxed);
            })
        };
    }
    assert_eq!(retired.load(Ordering::Relaxed), 1);
    // SAFETY: unlinked.
    unsafe { free(r) };
}

/// Threads associate and delete flows while another stops the registry and
/// drains it the way unload does. Afterwards nothing is linked, nothing
/// was inserted after `stop` returned, and every record was freed once.
#[test]
fn concurrent_associate_delete_and_stop() {
    for round in 0..50 {
        let reg = FlowRegistry::new(StdLock::default());
        let inserted_after_stop = AtomicUsize::new(0);
        let freed = AtomicUsize::new(0);
        let created = AtomicUsize::new(0);
        let stop_done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let (reg, created, freed, stop_done, after) =
                    (&reg, &created, &freed, &stop_done, &inserted_after_stop);
                s.spawn(move || {
                    for i in 0..200u64 {
                        let r = record(t * 1000 + i, (i % 4) as usize);
                        let was_stopped = stop_done.load(Ordering::Acquire);
                        // SAFETY: fresh record.
                        if unsafe { reg.insert(r) }.is_ok() {
                            created.fetch_add(1, Ordering::Relaxed);
                            if was_stopped {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                            if i % 2 == 0 {
                                // The flow ends by itself: flowDeleteFn.
                                // SAFETY: linked by us, removed once here.
                                unsafe { reg.remove(r, |_| ()) };
                                // SAFETY: unlinked.
                                unsafe { free(r) };
                                freed.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            // SAFETY: never linked.
                            unsafe { free(r) };
                        }
                    }
                });
            }
            let (reg, stop_done) = (&reg, &stop_done);
            s.spawn(move || {
                std::thread::yield_now();
                reg.stop();
                stop_done.store(true, Ordering::Release);
            });
        });
        // Unload's drain, single-threaded now: every flow still linked is
        // handed out once; we play the engine's flowDeleteFn for it.
        for callout in 0..4 {
            let pass = reg.begin_removal_pass();
            let mut handles = Vec::new();
            while let Some(a) = reg.next_for_removal(pass, callout) {
                handles.push(a.flow_id);
            }
            assert_eq!(handles.len(), reg.count_for(callout), "round {round}");
        }
        let mut rest = Vec::new();
        reg.for_each(|r| rest.push(NonNull::from(r)));
        for r in rest {
            // SAFETY: linked records from `record`.
            unsafe { reg.remove(r, |_| ()) };
            // SAFETY: unlinked.
            unsafe { free(r) };
            freed.fetch_add(1, Ordering::Relaxed);
        }
        assert!(reg.is_empty());
        assert_eq!(
            inserted_after_stop.load(Ordering::Relaxed),
            0,
            "round {round}"
        );
        assert_eq!(
            freed.load(Ordering::Relaxed),
            created.load(Ordering::Relaxed)
        );
    }
}
