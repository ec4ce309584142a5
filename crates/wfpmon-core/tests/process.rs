//! The process table: interning by (process id, path), eviction of ended
//! processes, and per-process totals that stay exact while flows end during
//! a query (model-based property test, and real threads).

mod common;
use common::StdLock;

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::flow::{Association, Direction, FlowRecord, FlowRegistry, FlowTuple, Traffic};
use wfpmon_core::process::{
    NO_PROCESS, PATH_UNITS, PROCESS_ID_MISSING, PROCESS_PATH_MISSING, PROCESS_PATH_TRUNCATED,
    ProcessSnapshot, ProcessTable, QueryBusy,
};

type Table = ProcessTable<StdLock, 2, 8>;
type Flows = FlowRegistry<StdLock, 8>;

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn all(table: &Table, flows: &Flows) -> BTreeMap<u64, ProcessSnapshot> {
    let mut out = BTreeMap::new();
    let mut slot = 0;
    loop {
        let end = table
            .query(flows, slot, 3, |p| {
                out.insert(p.key, *p);
            })
            .expect("no other query runs");
        match end.next_slot {
            Some(next) => slot = next,
            None => return out,
        }
    }
}

fn flow(id: u64, process: (u32, u32), traffic: (u64, u64)) -> NonNull<FlowRecord> {
    let tuple = FlowTuple {
        family: AddressFamily::V4,
        ip_protocol: 6,
        local_address: FlowTuple::ipv4_address(1),
        local_port: 1,
        remote_address: FlowTuple::ipv4_address(2),
        remote_port: 2,
        direction: Direction::Outbound,
    };
    let r = FlowRecord::new(
        Association {
            flow_id: id,
            callout: 0,
        },
        tuple,
        process,
        0,
    );
    r.count(Direction::Inbound, traffic.0, 1);
    r.count(Direction::Outbound, traffic.1, 2);
    NonNull::from(Box::leak(Box::new(r)))
}

/// Ends a tracked flow the way the driver's flow-delete callback does.
fn end(table: &Table, flows: &Flows, r: NonNull<FlowRecord>, now: u64) {
    // SAFETY: `r` came from `flow` and is linked in `flows`.
    unsafe {
        flows.remove(r, |rec, bucket| {
            table.release(rec.process_slot, rec.traffic(), bucket, now);
        });
    }
    // SAFETY: unlinked; leaked by `flow`.
    drop(unsafe { Box::from_raw(r.as_ptr()) });
}

const fn sum(t: Traffic) -> u64 {
    t.bytes_inbound + t.bytes_outbound + t.packets_inbound + t.packets_outbound
}

#[test]
fn a_process_is_interned_by_id_and_path() {
    let table = Table::with_locks(StdLock::default);
    let a = utf16("\\device\\harddiskvolume3\\app\\browser.exe");
    let s1 = table.acquire(Some(100), Some(&a), 1);
    let s2 = table.acquire(Some(100), Some(&a), 2);
    assert_eq!(s1, s2, "one entry for two flows of one process");
    let other_image = table.acquire(Some(100), Some(&utf16("\\device\\x\\other.exe")), 3);
    assert_ne!(
        s1, other_image,
        "a reused id with another image is another process"
    );
    let no_path = table.acquire(Some(100), None, 4);
    let empty_path = table.acquire(Some(100), Some(&[0, 0]), 4);
    assert_eq!(no_path, empty_path, "an empty path is a missing path");
    let no_id = table.acquire(None, Some(&a), 5);
    assert_ne!(no_id, s1);
    assert_eq!(table.in_use(), 4);

    let flows = Flows::with_locks(StdLock::default);
    let snap = all(&table, &flows);
    let by_slot = |slot: u32| {
        *snap
            .values()
            .find(|p| p.key & 0xFFFF_FFFF == u64::from(slot))
            .unwrap()
    };
    let p = by_slot(s1);
    assert_eq!(
        (p.process_id, p.flags, p.active_flows, p.flows_total),
        (100, 0, 2, 2)
    );
    assert_eq!(
        String::from_utf16(&p.path[..usize::from(p.path_units)]).unwrap(),
        "\\device\\harddiskvolume3\\app\\browser.exe"
    );
    assert_eq!(by_slot(no_path).flags, PROCESS_PATH_MISSING);
    assert_eq!(by_slot(no_id).flags, PROCESS_ID_MISSING);
    assert_eq!(by_slot(no_id).process_id, 0);
}

#[test]
fn a_long_path_keeps_its_end() {
    let table = Table::with_locks(StdLock::default);
    let long = format!("\\device\\{}\\name.exe", "d".repeat(400));
    let slot = table.acquire(Some(8), Some(&utf16(&long)), 1);
    assert_eq!(slot, table.acquire(Some(8), Some(&utf16(&long)), 1));
    let flows = Flows::with_locks(StdLock::default);
    let p = *all(&table, &flows).values().next().unwrap();
    assert_eq!(p.flags, PROCESS_PATH_TRUNCATED);
    assert_eq!(usize::from(p.path_units), PATH_UNITS);
    let kept = String::from_utf16(&p.path[..PATH_UNITS]).unwrap();
    assert!(
        long.ends_with(&kept) && kept.ends_with("\\name.exe"),
        "{kept}"
    );
}

#[test]
fn the_longest_idle_process_is_evicted_and_a_full_shard_leaves_flows_unattributed() {
    // One shard of two entries: every process lands in it.
    let table = ProcessTable::<StdLock, 1, 2>::with_locks(StdLock::default);
    let flows = FlowRegistry::<StdLock, 8>::with_locks(StdLock::default);
    let a = table.acquire(Some(1), None, 10);
    let b = table.acquire(Some(2), None, 20);
    let key_a = table.key_of(a);
    table.release(
        a,
        Traffic {
            bytes_inbound: 5,
            ..Traffic::default()
        },
        0,
        30,
    );
    table.release(b, Traffic::default(), 0, 40);
    // Both idle; `a` ended longest ago (30 < 40): a third process takes it.
    let c = table.acquire(Some(3), None, 50);
    assert_eq!(c, a);
    assert_ne!(table.key_of(c), key_a, "a reused entry gets a new key");
    assert_eq!(table.evictions(), 1);
    // `b` idle, `c` active: a fourth process evicts `b`.
    let d = table.acquire(Some(4), None, 60);
    assert_eq!(d, b);
    // Both active now: a fifth process gets no entry.
    assert_eq!(table.acquire(Some(5), None, 70), NO_PROCESS);
    assert_eq!(table.unattributed(), 1);
    table.release(NO_PROCESS, Traffic::default(), 0, 80); // ignored
    let mut ids = Vec::new();
    table
        .query(&flows, 0, 64, |p| ids.push((p.process_id, sum(p.ended))))
        .unwrap();
    assert_eq!(
        ids,
        vec![(3, 0), (4, 0)],
        "an evicted process's totals leave with it"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Start {
        process: u8,
        inbound: u16,
        outbound: u16,
    },
    End {
        pick: usize,
    },
    Query,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, any::<u16>(), any::<u16>()).prop_map(|(process, inbound, outbound)| Op::Start { process, inbound, outbound }),
        2 => any::<usize>().prop_map(|pick| Op::End { pick }),
        1 => Just(Op::Query),
    ]
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Model {
    active_flows: u32,
    flows_total: u64,
    active: u64,
    ended: u64,
}

proptest! {
    /// Per-process totals equal the sum of their flows' traffic, active and
    /// ended, whatever the order of flows starting and ending (16 entries,
    /// 6 processes: even all in one shard of 8, no eviction).
    #[test]
    fn per_process_totals_equal_the_sum_of_their_flows(ops in prop::collection::vec(op(), 1..80)) {
        let table = Table::with_locks(StdLock::default);
        let flows = Flows::with_locks(StdLock::default);
        let mut live: Vec<(NonNull<FlowRecord>, u8)> = Vec::new();
        let mut model: BTreeMap<u8, Model> = BTreeMap::new();
        let mut next_id = 1;
        for (now, op) in ops.into_iter().enumerate() {
            let now = now as u64;
            match op {
                Op::Start { process, inbound, outbound } => {
                    let path = utf16(&format!("\\device\\p{process}.exe"));
                    let slot = table.acquire(Some(u32::from(process) * 4), Some(&path), now);
                    prop_assert_ne!(slot, NO_PROCESS);
                    let r = flow(next_id, (u32::from(process) * 4, slot), (u64::from(inbound), u64::from(outbound)));
                    next_id += 1;
                    // SAFETY: a fresh record, freed only by `end`.
                    prop_assert!(unsafe { flows.insert(r) }.is_ok(), "insert");
                    let m = model.entry(process).or_default();
                    m.active_flows += 1;
                    m.flows_total += 1;
                    m.active += u64::from(inbound) + u64::from(outbound) + 3;
                    live.push((r, process));
                }
                Op::End { pick } if !live.is_empty() => {
                    let (r, process) = live.swap_remove(pick % live.len());
                    // SAFETY: live.
                    let t = sum(unsafe { r.as_ref() }.traffic());
                    end(&table, &flows, r, now);
                    let m = model.get_mut(&process).unwrap();
                    m.active_flows -= 1;
                    m.active -= t;
                    m.ended += t;
                }
                Op::End { .. } => {}
                Op::Query => {
                    let got: BTreeMap<u8, Model> = all(&table, &flows)
                        .values()
                        .map(|p| (u8::try_from(p.process_id / 4).unwrap(), Model {
                            active_flows: p.active_flows,
                            flows_total: p.flows_total,
                            active: sum(p.active),
                            ended: sum(p.ended),
                        }))
                        .collect();
                    prop_assert_eq!(&got, &model);
                }
            }
        }
        for (r, _) in live {
            end(&table, &flows, r, 1000);
        }
        let after = all(&table, &flows);
        prop_assert!(after.values().all(|p| p.active_flows == 0 && sum(p.active) == 0), "all ended");
        prop_assert_eq!(after.values().map(|p| sum(p.ended)).sum::<u64>(), model.values().map(|m| m.active + m.ended).sum::<u64>());
    }
}

/// Real threads: flows with fixed traffic end while other threads query.
/// Every query must report, for every process, exactly the traffic of all
/// its flows (active + ended) — a flow ending during the walk is counted
/// once, never twice or not at all. Queries run one at a time: the loser
/// of a race gets `QueryBusy`.
#[test]
fn a_flow_ending_during_a_query_is_counted_exactly_once() {
    const PROCESSES: u32 = 5;
    const FLOWS: u64 = 3000;
    let table = Table::with_locks(StdLock::default);
    let flows = Flows::with_locks(StdLock::default);
    let mut records = Vec::new();
    let mut expected = BTreeMap::new();
    for id in 0..FLOWS {
        let pid = u32::try_from(id % u64::from(PROCESSES)).unwrap() * 4 + 4;
        let slot = table.acquire(Some(pid), Some(&utf16(&format!("p{pid}"))), 0);
        let r = flow(id + 1, (pid, slot), (id, 2 * id));
        // SAFETY: fresh record, freed by `end` below.
        unsafe { flows.insert(r) }.unwrap();
        *expected.entry(pid).or_insert(0) += 3 * id + 3;
        records.push(r.as_ptr() as usize);
    }
    let done = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    let (queries, busy) = std::thread::scope(|s| {
        let ender = s.spawn(|| {
            while !started.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            // Deterministic shuffle: end flows all over the buckets.
            let mut order: Vec<usize> = (0..records.len()).collect();
            let mut x = 0x1234_5678_u64;
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, usize::try_from(x % (i as u64 + 1)).unwrap());
            }
            for i in order {
                let r = NonNull::new(records[i] as *mut FlowRecord).unwrap();
                end(&table, &flows, r, 1);
                std::thread::yield_now();
            }
            done.store(true, Ordering::Release);
        });
        let query = || {
            let mut n = 0u32;
            let mut busy = 0u32;
            while !done.load(Ordering::Acquire) || n == 0 {
                started.store(true, Ordering::Release);
                let mut got = BTreeMap::new();
                match table.query(&flows, 0, 64, |p| {
                    got.insert(p.process_id, sum(p.active) + sum(p.ended));
                }) {
                    Ok(end) => {
                        assert_eq!(end.next_slot, None);
                        assert_eq!(got, expected, "query {n}");
                        n += 1;
                    }
                    Err(QueryBusy) => busy += 1,
                }
            }
            (n, busy)
        };
        let a = s.spawn(query);
        let b = s.spawn(query);
        ender.join().unwrap();
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        (a.0 + b.0, a.1 + b.1)
    });
    assert!(
        queries >= 20,
        "queries ran while flows ended ({queries}, {busy} busy)"
    );
    let last = all(&table, &flows);
    assert!(last.values().all(|p| p.active_flows == 0));
}

#[test]
fn an_abandoned_flow_leaves_no_trace() {
    let table = Table::with_locks(StdLock::default);
    let flows = Flows::with_locks(StdLock::default);
    let a = table.acquire(Some(4), None, 1);
    table.abandon(a);
    assert_eq!(
        table.in_use(),
        0,
        "an entry made for the abandoned flow alone is freed"
    );
    let b = table.acquire(Some(8), None, 1);
    let b2 = table.acquire(Some(8), None, 2);
    assert_eq!(b, b2);
    table.abandon(b2);
    let snap = all(&table, &flows);
    let p = snap.values().next().unwrap();
    assert_eq!((p.process_id, p.active_flows, p.flows_total), (8, 1, 1));
}
