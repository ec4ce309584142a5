//! Host-only experiment: the flow registry's unload walk alone — no driver
//! image, no kernel or engine models — to tell its own cost at a million
//! flows from the native benchmark's surroundings (docs/notes.md, issue 9).
//!
//!     cargo run --release -p wfpmon-core --example removal_walk
//!
//! For 100 000 and 1 000 000 records, with one data callout holding every
//! flow or the four sharing them, and with the records' addresses in flow
//! order (as the native host's engine and heap place them) or shuffled:
//! links every record, stops the registry, then times one removal pass per
//! data callout that removes each record it hands out (as the flow-delete
//! callback does). Records are freed after the timing, so the heap's own
//! work is not in the figure. Prints the best of three per case, and the
//! ratio 1 000 000 / 100 000. A measurement, not a test: nothing here
//! passes or fails.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::flow::{
    Association, DATA_CALLOUTS, DEFAULT_BUCKETS, Direction, FlowRecord, FlowRegistry, FlowTuple,
};

// The std-mutex lock the integration tests use.
#[path = "../tests/common/mod.rs"]
mod common;
use common::StdLock;

type Registry = FlowRegistry<StdLock, DEFAULT_BUCKETS>;

const TUPLE: FlowTuple = FlowTuple {
    family: AddressFamily::V4,
    ip_protocol: 6,
    local_address: FlowTuple::ipv4_address(0x0a00_0001),
    local_port: 40000,
    remote_address: FlowTuple::ipv4_address(0x0a00_0002),
    remote_port: 443,
    direction: Direction::Outbound,
};

/// A small deterministic generator (xorshift64) for the shuffle.
struct XorShift(u64);

impl XorShift {
    const fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        #[allow(clippy::cast_possible_truncation)] // < n, a usize
        let i = (self.0 % n as u64) as usize;
        i
    }
}

/// One timed walk over `n` records.
// `with_locks` builds the bucket array (4 MiB) on the stack before boxing
// it; `main` runs this on a thread with a stack large enough.
#[allow(clippy::large_stack_frames)]
fn walk(n: usize, callouts: usize, shuffled: bool) -> Duration {
    // Allocated in order, like the native host's heap; flow `i` gets the
    // `i`-th block in flow order, or a random one.
    let mut blocks: Vec<NonNull<FlowRecord>> = (0..n)
        .map(|_| {
            let placeholder = Association {
                flow_id: 0,
                callout: 0,
            };
            let record = FlowRecord::new(placeholder, TUPLE, (4, u32::MAX), 0);
            NonNull::from(Box::leak(Box::new(record)))
        })
        .collect();
    if shuffled {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in (1..blocks.len()).rev() {
            blocks.swap(i, rng.below(i + 1));
        }
    }
    let registry: Box<Registry> = Box::new(Registry::with_locks(StdLock::default));
    for (i, block) in blocks.iter_mut().enumerate() {
        let association = Association {
            flow_id: 0x1000 + 4 * i as u64,
            callout: i % callouts,
        };
        let tuple = TUPLE;
        // SAFETY: a leaked box, not linked yet: replacing the value moves
        // nothing the registry knows.
        unsafe {
            block
                .as_ptr()
                .write(FlowRecord::new(association, tuple, (4, u32::MAX), 0));
        };
        // SAFETY: valid, unlinked, freed only after its removal below.
        unsafe { registry.insert(*block) }.expect("not stopped yet");
    }
    registry.stop();
    let start = Instant::now();
    let mut removed = 0usize;
    for callout in 0..DATA_CALLOUTS {
        let mut pass = registry.current_removal_pass();
        while let Some(association) = registry.next_for_removal(&mut pass, callout) {
            #[allow(clippy::cast_possible_truncation)] // below `n`
            let index = ((association.flow_id - 0x1000) / 4) as usize;
            // SAFETY: linked, valid; removed once (the pass hands it out once).
            unsafe { registry.remove(blocks[index], |_, _| ()) };
            removed += 1;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(removed, n, "every record handed out once");
    assert!(registry.is_empty());
    for block in blocks {
        // SAFETY: unlinked now; leaked above, freed once.
        drop(unsafe { Box::from_raw(block.as_ptr()) });
    }
    elapsed
}

fn main() {
    // The registry's bucket array is built on the stack by `with_locks`.
    let worker = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            for shuffled in [false, true] {
                for callouts in [1, DATA_CALLOUTS] {
                    let best = |n| (0..3).map(|_| walk(n, callouts, shuffled)).min().unwrap_or_default();
                    let small = best(100_000);
                    let large = best(1_000_000);
                    println!(
                        "{} callout(s), addresses {}: 100 000 flows {:.1} ms, 1 000 000 flows {:.1} ms, ratio {:.1}x",
                        callouts,
                        if shuffled { "shuffled" } else { "in flow order" },
                        small.as_secs_f64() * 1e3,
                        large.as_secs_f64() * 1e3,
                        large.as_secs_f64() / small.as_secs_f64(),
                    );
                }
            }
        })
        .expect("a thread");
    worker.join().expect("the walk thread");
}
