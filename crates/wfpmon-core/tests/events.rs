//! The event ring against a model: sequence numbers, overwriting, exact
//! dropped counts, bounded reads, any number of independent readers.

mod common;
use common::StdLock;

use proptest::prelude::*;
use wfpmon_core::events::{EventRing, FROM_NOW, FlowEvent};

const CAP: usize = 8;

#[derive(Clone, Debug)]
enum Op {
    Push(u64),
    Read { reader: usize, max: usize },
    Rewind { reader: usize, cursor: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u64>().prop_map(Op::Push),
        3 => (0usize..3, 0usize..12).prop_map(|(reader, max)| Op::Read { reader, max }),
        1 => (0usize..3, prop_oneof![Just(0), Just(FROM_NOW), 0u64..100]).prop_map(|(reader, cursor)| Op::Rewind { reader, cursor }),
    ]
}

proptest! {
    #[test]
    fn readers_see_every_event_or_are_told_how_many_they_lost(ops in prop::collection::vec(op(), 1..200)) {
        let ring = EventRing::<StdLock, CAP>::with_lock(StdLock::default());
        let mut written: Vec<u64> = Vec::new(); // flow ids by seq
        let mut cursors = [0u64; 3];
        for op in ops {
            match op {
                Op::Push(id) => {
                    let seq = ring.push(FlowEvent { flow_id: id, seq: 999, ..FlowEvent::default() });
                    prop_assert_eq!(seq, written.len() as u64);
                    written.push(id);
                }
                Op::Rewind { reader, cursor } => cursors[reader] = cursor,
                Op::Read { reader, max } => {
                    let mut got = Vec::new();
                    let out = ring.read(cursors[reader], max, |e| got.push((e.seq, e.flow_id)));
                    let head = written.len() as u64;
                    let from = cursors[reader].min(head);
                    let oldest = head.saturating_sub(CAP as u64);
                    let start = from.max(oldest);
                    prop_assert_eq!(out.dropped, start - from);
                    prop_assert_eq!(out.oldest, oldest);
                    let n = usize::try_from((head - start).min(max as u64)).unwrap();
                    prop_assert_eq!(out.returned, n);
                    prop_assert_eq!(got.len(), n);
                    for (i, (seq, id)) in got.iter().enumerate() {
                        prop_assert_eq!(*seq, start + i as u64);
                        prop_assert_eq!(*id, written[usize::try_from(*seq).unwrap()]);
                    }
                    prop_assert_eq!(out.next, start + n as u64);
                    cursors[reader] = out.next;
                }
            }
        }
    }
}

#[test]
fn concurrent_writers_never_lose_or_duplicate_a_sequence_number() {
    let ring = EventRing::<StdLock, 1024>::with_lock(StdLock::default());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let ring = &ring;
            s.spawn(move || {
                for i in 0..200 {
                    ring.push(FlowEvent {
                        flow_id: t << 32 | i,
                        ..FlowEvent::default()
                    });
                }
            });
        }
    });
    let mut seen = Vec::new();
    let out = ring.read(0, 1024, |e| seen.push((e.seq, e.flow_id)));
    assert_eq!((out.returned, out.dropped, out.next), (800, 0, 800));
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == i as u64)
    );
    let mut ids: Vec<u64> = seen.iter().map(|s| s.1).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 800);
}
