//! The flow registry: a model-based property test against a plain set, and
//! a multi-threaded stress test of the stop/insert/remove protocol.

mod common;
use common::StdLock;

use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::flow::{
    Association, Direction, FlowRecord, FlowRegistry, FlowTuple, ListCursor, Listed, RemovalPass,
    Traffic,
};

/// A registry with few buckets, so that flows share them (collisions,
/// cursors inside a bucket).
type Small = FlowRegistry<StdLock, 4>;

fn small() -> Small {
    Small::with_locks(StdLock::default)
}

/// Lists everything in batches of `batch`, as wfpmonctl pages through the
/// driver; returns the flow ids in listing order and the number of batches.
fn list_all<const B: usize>(reg: &FlowRegistry<StdLock, B>, batch: usize) -> (Vec<u64>, usize) {
    let mut cursor = ListCursor::default();
    let mut out = Vec::new();
    let mut batches = 0;
    loop {
        batches += 1;
        let mut n = 0;
        let listed = reg.list(cursor, |r| {
            if n == batch {
                return false;
            }
            n += 1;
            out.push(r.association.flow_id);
            true
        });
        match listed {
            Listed::Done => return (out, batches),
            Listed::More(next) => cursor = next,
        }
    }
}

/// Lists one record per batch and checks the listing order: bucket by
/// bucket, and within a bucket newest first across every callout's list
/// (flow ids here grow with insertion). A batch of one refuses the second
/// record it is offered, so the cursor it returns names that record's
/// bucket. Returns the flow ids in order.
fn list_checking_order<const B: usize>(reg: &FlowRegistry<StdLock, B>) -> Vec<u64> {
    let mut cursor = ListCursor::default();
    let mut out: Vec<(u32, u64)> = Vec::new();
    loop {
        let mut first = true;
        let bucket = cursor.bucket;
        let listed = reg.list(cursor, |r| {
            if !first {
                return false;
            }
            first = false;
            out.push((bucket, r.association.flow_id));
            true
        });
        match listed {
            Listed::Done => break,
            Listed::More(next) => cursor = next,
        }
    }
    for pair in out.windows(2).skip(1) {
        let [(b0, id0), (b1, id1)] = [pair[0], pair[1]];
        assert!(b0 <= b1, "buckets out of order: {out:?}");
        if b0 == b1 {
            assert!(id0 > id1, "bucket {b0} not newest first: {out:?}");
        }
    }
    out.into_iter().map(|(_, id)| id).collect()
}

/// Host stand-in for the driver's spin lock.
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
        (1, wfpmon_core::process::NO_PROCESS),
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
    /// One record from a removal walk kept across operations (its bucket
    /// cursor meets the inserts and removals between steps).
    Step(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4).prop_map(Op::Insert),
        3 => (0usize..64).prop_map(Op::Remove),
        1 => Just(Op::Stop),
        // Any catalog index: those above the data callouts hold nothing.
        1 => (0usize..8).prop_map(Op::Drain),
        1 => (0usize..8).prop_map(Op::Continue),
        3 => (0usize..8).prop_map(Op::Step),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any sequence of inserts, removals, stops and removal passes keeps the
    /// registry equal to a model set; a removal pass hands out each flow of
    /// the callout exactly once; nothing is inserted after stop.
    #[test]
    fn registry_matches_a_model(ops in prop::collection::vec(op(), 1..80)) {
        let reg = small();
        let mut model: BTreeSet<(u64, usize)> = BTreeSet::new();
        let mut live: Vec<(u64, NonNull<FlowRecord>)> = Vec::new();
        let mut next_id = 1u64;
        let mut stopped = false;
        // Flows handed out by the current removal pass (any callout).
        let mut asked: BTreeSet<u64> = BTreeSet::new();
        // Per callout index, a walk of the current pass kept across ops.
        let mut walks: [Option<RemovalPass>; 8] = [None; 8];
        for op in ops {
            match op {
                Op::Insert(callout) => {
                    // The set-up's cache hints, as the driver gives them
                    // (any callout index, any state): they change nothing
                    // the model checks below.
                    reg.prefetch_bucket(next_id);
                    reg.prefetch_insert(Association { flow_id: next_id, callout });
                    reg.prefetch_insert(Association { flow_id: next_id, callout: callout + 4 });
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
                    let out = unsafe { reg.remove(r, |rec, _| { retired += 1; assert_eq!(rec.association.flow_id, id); }) };
                    prop_assert_eq!(retired, 1);
                    let callout = model.iter().find(|m| m.0 == id).unwrap().1;
                    model.retain(|&(m, _)| m != id);
                    prop_assert_eq!(out.callout_done, !model.iter().any(|m| m.1 == callout));
                    prop_assert_eq!(out.stopping, stopped);
                    // SAFETY: unlinked now.
                    unsafe { free(r) };
                }
                Op::Remove(_) => {}
                Op::Stop => { reg.stop(); stopped = true; }
                Op::Drain(callout) => {
                    let mut pass = reg.begin_removal_pass();
                    let mut seen = BTreeSet::new();
                    while let Some(a) = reg.next_for_removal(&mut pass, callout) {
                        prop_assert_eq!(a.callout, callout);
                        prop_assert!(seen.insert(a.flow_id), "flow handed out twice in one pass");
                    }
                    let want: BTreeSet<u64> = model.iter().filter(|m| m.1 == callout).map(|m| m.0).collect();
                    prop_assert_eq!(&seen, &want);
                    // A new pass: what it has handed out so far.
                    asked = seen;
                    walks = [None; 8];
                }
                Op::Continue(callout) => {
                    // Continuing the last pass hands out only the flows of
                    // the callout it has not handed out yet (linked since).
                    let mut pass = reg.current_removal_pass();
                    let mut seen = BTreeSet::new();
                    while let Some(a) = reg.next_for_removal(&mut pass, callout) {
                        prop_assert!(seen.insert(a.flow_id), "flow handed out twice in one pass");
                    }
                    let want: BTreeSet<u64> = model.iter()
                        .filter(|m| m.1 == callout && !asked.contains(&m.0)).map(|m| m.0).collect();
                    prop_assert_eq!(&seen, &want);
                    asked.extend(seen);
                }
                Op::Step(callout) => {
                    // The walk hands out a live flow of the callout that
                    // the pass has not handed out yet — never a removed one
                    // (the bucket's walk position moves on when the record
                    // there is removed).
                    let walk = walks[callout].get_or_insert_with(|| reg.current_removal_pass());
                    if let Some(a) = reg.next_for_removal(walk, callout) {
                        prop_assert_eq!(a.callout, callout);
                        prop_assert!(model.contains(&(a.flow_id, callout)), "a removed or unknown flow handed out");
                        prop_assert!(asked.insert(a.flow_id), "flow handed out twice in one pass");
                    }
                }
            }
            prop_assert_eq!(reg.len(), model.len());
            prop_assert_eq!(reg.is_stopping(), stopped);
            for c in 0..4 {
                prop_assert_eq!(reg.count_for(c), model.iter().filter(|m| m.1 == c).count());
            }
            // A listing in small batches sees every flow exactly once.
            let (listed, _) = list_all(&reg, 3);
            let unique: BTreeSet<u64> = listed.iter().copied().collect();
            prop_assert_eq!(unique.len(), listed.len(), "a flow listed twice");
            prop_assert_eq!(&unique, &model.iter().map(|m| m.0).collect::<BTreeSet<u64>>());
            // One record at a time: in order, and the same set.
            let one_by_one: BTreeSet<u64> = list_checking_order(&reg).into_iter().collect();
            prop_assert_eq!(one_by_one, unique);
        }
        for (_, r) in live {
            // SAFETY: still linked and valid.
            unsafe { reg.remove(r, |_, _| ()) };
            // SAFETY: unlinked now.
            unsafe { free(r) };
        }
        prop_assert!(reg.is_empty());
    }
}

#[test]
fn removing_twice_retires_once() {
    let reg = small();
    let r = record(1, 0);
    // SAFETY: fresh record.
    unsafe { reg.insert(r) }.unwrap();
    let retired = AtomicUsize::new(0);
    for _ in 0..2 {
        // SAFETY: valid; linked the first time, unlinked the second.
        unsafe {
            reg.remove(r, |_, _| {
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
        let reg = small();
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
                                unsafe { reg.remove(r, |_, _| ()) };
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
            let mut pass = reg.begin_removal_pass();
            let mut handles = Vec::new();
            while let Some(a) = reg.next_for_removal(&mut pass, callout) {
                handles.push(a.flow_id);
            }
            assert_eq!(handles.len(), reg.count_for(callout), "round {round}");
        }
        let mut rest = Vec::new();
        reg.for_each(|r| rest.push(NonNull::from(r)));
        for r in rest {
            // SAFETY: linked records from `record`.
            unsafe { reg.remove(r, |_, _| ()) };
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

/// Listing while flows come and go between batches: a flow present for the
/// whole pass is listed exactly once, no flow twice, and only flows that
/// existed at some point during the pass.
#[test]
fn listing_pages_with_churn_between_batches() {
    let reg = small();
    let mut live: Vec<(u64, NonNull<FlowRecord>)> = Vec::new();
    for id in 0..200u64 {
        let r = record(id, (id % 4) as usize);
        // SAFETY: fresh record.
        unsafe { reg.insert(r) }.unwrap();
        live.push((id, r));
    }
    let stable: BTreeSet<u64> = (0..200).filter(|id| id % 3 != 0).collect();
    let mut next_id = 1000u64;
    let mut cursor = ListCursor::default();
    let mut listed = Vec::new();
    let mut ever = BTreeSet::new();
    ever.extend(0..200u64);
    loop {
        let mut n = 0;
        let page = reg.list(cursor, |r| {
            if n == 7 {
                return false;
            }
            n += 1;
            listed.push(r.association.flow_id);
            true
        });
        // Between batches: flows with id % 3 == 0 end, new ones arrive.
        if let Some(pos) = live.iter().position(|(id, _)| id % 3 == 0) {
            let (_, r) = live.swap_remove(pos);
            // SAFETY: linked; removed once.
            unsafe { reg.remove(r, |_, _| ()) };
            // SAFETY: unlinked.
            unsafe { free(r) };
        }
        let r = record(next_id, (next_id % 4) as usize);
        // SAFETY: fresh record.
        unsafe { reg.insert(r) }.unwrap();
        live.push((next_id, r));
        ever.insert(next_id);
        next_id += 1;
        match page {
            Listed::Done => break,
            Listed::More(next) => cursor = next,
        }
    }
    let unique: BTreeSet<u64> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a flow listed twice");
    assert!(
        stable.is_subset(&unique),
        "a flow present throughout was skipped"
    );
    assert!(unique.is_subset(&ever));
    for (_, r) in live {
        // SAFETY: linked.
        unsafe { reg.remove(r, |_, _| ()) };
        // SAFETY: unlinked.
        unsafe { free(r) };
    }
}

/// Totals: every flow's traffic counted once, whether it is still active or
/// ended (retired into its bucket), and the listing's batch bound holds.
#[test]
fn totals_count_active_and_ended_flows_once() {
    // (1024 buckets: the default 4096 is a 256 KiB value, too large for a
    // test thread's stack in a debug build.)
    let reg: FlowRegistry<StdLock, 1024> = FlowRegistry::with_locks(StdLock::default);
    let mut live = Vec::new();
    for id in 0..1000u64 {
        let r = record(id * 7919, (id % 4) as usize);
        // SAFETY: fresh record.
        unsafe { reg.insert(r) }.unwrap();
        // SAFETY: just linked, valid.
        let rec = unsafe { r.as_ref() };
        rec.count(Direction::Inbound, id, 1);
        rec.count(Direction::Outbound, 2 * id, 2);
        live.push(r);
    }
    let sum: u64 = (0..1000).sum();
    let expected = Traffic {
        bytes_inbound: sum,
        bytes_outbound: 2 * sum,
        packets_inbound: 1000,
        packets_outbound: 2000,
    };
    assert_eq!(reg.totals(), (1000, expected));
    assert_eq!(
        reg.retired_traffic(),
        Traffic::default(),
        "no flow ended yet"
    );
    let mut ended = Traffic::default();
    for r in live.drain(..500) {
        // SAFETY: linked, valid.
        ended = ended.plus(unsafe { r.as_ref() }.traffic());
        // SAFETY: linked, removed once.
        unsafe { reg.remove(r, |_, _| ()) };
        // SAFETY: unlinked.
        unsafe { free(r) };
    }
    assert_eq!(
        reg.totals(),
        (500, expected),
        "ended flows stay in the totals"
    );
    assert_eq!(
        reg.retired_traffic(),
        ended,
        "the sharded counters hold exactly the ended flows' traffic"
    );
    assert_eq!(reg.len(), 500);
    let (ids, batches) = list_all(&reg, 256);
    assert_eq!((ids.len(), batches), (500, 2));
    for r in live {
        // SAFETY: linked.
        unsafe { reg.remove(r, |_, _| ()) };
        // SAFETY: unlinked.
        unsafe { free(r) };
    }
    assert_eq!(reg.totals(), (0, expected));
    assert_eq!(reg.retired_traffic(), expected);
}

/// The two directions' counters are a cache line apart.
#[test]
fn direction_counters_do_not_share_a_cache_line() {
    let r = record(1, 0);
    // SAFETY: fresh, valid.
    let rec = unsafe { r.as_ref() };
    rec.count(Direction::Inbound, 5, 1);
    rec.count(Direction::Outbound, 7, 1);
    assert_eq!(size_of::<FlowRecord>(), 128);
    let t = rec.traffic();
    assert_eq!((t.bytes_inbound, t.bytes_outbound), (5, 7));
    // SAFETY: never linked.
    unsafe { free(r) };
}

/// The ended flows' traffic, kept in sharded counters while threads end
/// flows concurrently: never decreasing as seen by a concurrent reader, and
/// exactly the sum of every ended flow's counters once the threads are done.
#[test]
fn retired_traffic_sums_flows_ended_on_many_threads() {
    let reg: FlowRegistry<StdLock, 256> = FlowRegistry::with_locks(StdLock::default);
    let done = std::sync::atomic::AtomicBool::new(false);
    let reading = std::sync::atomic::AtomicBool::new(false);
    let per_thread = 2_000u64;
    std::thread::scope(|s| {
        let reg = &reg;
        let (done, reading) = (&done, &reading);
        s.spawn(move || {
            let mut last = 0u64;
            loop {
                let now = reg.retired_traffic().bytes_inbound;
                assert!(now >= last, "retired bytes went back: {last} -> {now}");
                last = now;
                reading.store(true, Ordering::Release);
                if done.load(Ordering::Acquire) {
                    break;
                }
            }
        });
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                s.spawn(move || {
                    // Start once the reader reads, so that the two overlap
                    // whatever the scheduler does.
                    while !reading.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                    for i in 0..per_thread {
                        let id = t * 1_000_000 + i;
                        let r = record(id, (id % 4) as usize);
                        // SAFETY: fresh record, removed and freed below.
                        unsafe { reg.insert(r) }.unwrap();
                        // SAFETY: linked, valid.
                        let rec = unsafe { r.as_ref() };
                        rec.count(Direction::Inbound, i, 1);
                        rec.count(Direction::Outbound, 3, 1);
                        // SAFETY: linked, removed once.
                        unsafe { reg.remove(r, |_, _| ()) };
                        // SAFETY: unlinked.
                        unsafe { free(r) };
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    let sum: u64 = (0..per_thread).sum();
    assert_eq!(
        reg.retired_traffic(),
        Traffic {
            bytes_inbound: 4 * sum,
            bytes_outbound: 4 * 3 * per_thread,
            packets_inbound: 4 * per_thread,
            packets_outbound: 4 * per_thread,
        }
    );
    assert!(reg.is_empty());
}
