//! The scenarios: each boots the driver in a fresh [`World`], drives it
//! from real threads, and returns every broken rule (with the seed) as an
//! error. The integration tests repeat them with consecutive seeds; the
//! memcheck run uses [`stress`] and [`use_after_delete`].
//!
//! Each run checks, besides the rules the models enforce on every call:
//! Unload returned only after every callout was unregistered, no flow
//! context was left and no thread executed driver code; DriverEntry
//! failures left nothing behind; the pool ledger is empty; every
//! associated context was deleted exactly once; and, at quiet points, the
//! driver's statistics equal the traffic the engine delivered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use wfpmon_core::protocol;

use crate::clock;
use crate::engine::ClassifyFn;
use crate::engine::{Barrier, Breakage, Mode};
use crate::kernel::{self, DISPATCH_LEVEL, PASSIVE_LEVEL, call_into_image};
use crate::rng::Rng;
use crate::world::{Config, FilterKind, HostFlow, Summary, World, WorldGuard};

/// `STATUS_INVALID_DEVICE_REQUEST`.
const STATUS_INVALID_DEVICE_REQUEST: i32 = wfpmon_core::status::STATUS_INVALID_DEVICE_REQUEST;

/// `STATUS_OBJECT_NAME_NOT_FOUND`.
const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32.cast_signed();

const IRP_MJ_CREATE: u8 = 0x00;
const IRP_MJ_CLOSE: u8 = 0x02;
const IRP_MJ_READ: u8 = 0x03;
const IRP_MJ_CLEANUP: u8 = 0x12;

fn boot(config: Config) -> Result<WorldGuard, String> {
    let w = World::create(config)?;
    let status = w.driver_entry();
    if status != 0 {
        return Err(w.report(&[format!("DriverEntry -> {:#010x}", status.cast_unsigned())]));
    }
    Ok(w)
}

fn fail_if_violations(w: &World) -> Result<(), String> {
    let v = w.kernel.violations();
    if v.is_empty() {
        Ok(())
    } else {
        Err(w.report(&v))
    }
}

const fn filter(rng: &mut Rng) -> FilterKind {
    if rng.one_in(8) {
        FilterKind::Terminating
    } else {
        FilterKind::Inspection
    }
}

/// One step of traffic on a thread's own flows: sometimes a new flow (its
/// flow-established classify), then data on one flow, sometimes a flow
/// ends. `kind`: fixed (IPv6?, TCP?) or random.
pub fn traffic_step(
    w: &World,
    rng: &mut Rng,
    flows: &mut Vec<HostFlow>,
    counter: &mut u64,
    kind: Option<(bool, bool)>,
) {
    if flows.is_empty() || rng.one_in(4) {
        let (v6, tcp) = kind.unwrap_or_else(|| (rng.one_in(2), rng.one_in(2)));
        *counter += 1;
        let f = w.open_flow(v6, tcp, rng.one_in(3), *counter);
        let _ = w.establish(&f, filter(rng));
        flows.push(f);
    }
    let i = usize::try_from(rng.below(flows.len() as u64)).unwrap_or(0);
    let f = &flows[i];
    if f.tcp {
        let _ = w.stream(
            f,
            usize::try_from(1 + rng.below(1500)).unwrap_or(1),
            rng.one_in(2),
            filter(rng),
        );
    } else {
        let n = 1 + rng.below(3);
        let payloads: Vec<u32> = (0..n)
            .map(|_| u32::try_from(1 + rng.below(1400)).unwrap_or(1))
            .collect();
        let _ = w.datagrams(f, &payloads, rng.one_in(2), filter(rng));
    }
    if rng.one_in(16) || flows.len() > 48 {
        let f = flows.swap_remove(i);
        w.end_flow(&f);
    }
}

fn end_all(w: &World, flows: &mut Vec<HostFlow>) {
    for f in flows.drain(..) {
        w.end_flow(&f);
    }
}

/// Load, DriverEntry, the control device, flows of every kind with their
/// traffic, a second association of the same flow, the flow list (full and
/// truncated), counters, Unload.
///
/// # Errors
/// The problems found, with the seed.
pub fn lifecycle(seed: u64) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let (status, _, _) = w.send_irp(IRP_MJ_CREATE, 0, &[], 0, "");
    if status != 0 {
        w.kernel.violation(format!("IRP_MJ_CREATE -> {status:#x}"));
    }
    // "\Device\WfpMon\anything" names nothing: the device has no namespace.
    let (status, _, _) = w.send_irp(IRP_MJ_CREATE, 0, &[], 0, "\\anything");
    if status != STATUS_OBJECT_NAME_NOT_FOUND {
        w.kernel.violation(format!("IRP_MJ_CREATE of a name below the device -> {status:#x}, expected STATUS_OBJECT_NAME_NOT_FOUND"));
    }
    let fresh = w.query_stats()?;
    if fresh.flows_active != 0 || fresh.bytes_inbound != 0 {
        w.kernel
            .violation(format!("fresh driver reports traffic: {fresh:?}"));
    }
    let mut flows = Vec::new();
    let mut n = 0;
    for v6 in [false, true] {
        for tcp in [false, true] {
            for inbound in [false, true] {
                n += 1;
                let f = w.open_flow(v6, tcp, inbound, n);
                if w.establish(&f, filter(&mut rng)).is_none() {
                    w.kernel.violation(
                        "flow-established callout not classified after DriverEntry".into(),
                    );
                }
                if f.flow.contexts().len() != 1 {
                    w.kernel.violation(format!(
                        "flow {:#x} carries {} contexts after flow-established",
                        f.flow.handle,
                        f.flow.contexts().len()
                    ));
                }
                flows.push(f);
            }
        }
    }
    // The engine classifies a flow again: the second association answers
    // STATUS_OBJECT_NAME_EXISTS and the driver must free its new record.
    let _ = w.establish(&flows[0], FilterKind::Inspection);
    for _ in 0..200 {
        let i = usize::try_from(rng.below(flows.len() as u64)).unwrap_or(0);
        let f = flows[i].clone();
        if f.tcp {
            let _ = w.stream(
                &f,
                usize::try_from(rng.below(2000)).unwrap_or(0),
                rng.one_in(2),
                filter(&mut rng),
            );
        } else {
            let _ = w.datagrams(
                &f,
                &[u32::try_from(1 + rng.below(1400)).unwrap_or(1)],
                rng.one_in(2),
                filter(&mut rng),
            );
        }
    }
    let total = flows.len();
    // Interrupt time (the patched KUSER_SHARED_DATA read) must move: the
    // flows' ages grow by at least this sleep. The page is brought up to
    // date here too, not only by its updater thread, which a loaded
    // machine may not schedule for tens of milliseconds (seen with a load
    // average of 11 on 2 cores): what is checked is that the driver reads
    // the host page, not how often that thread runs.
    std::thread::sleep(Duration::from_millis(20));
    clock::publish();
    let (entries, listed_total, _) = w.list_all_flows(64)?;
    if listed_total as usize != total || entries.len() != total {
        w.kernel.violation(format!(
            "LIST_FLOWS in batches of 64: total {listed_total}, {} entries; {total} flows are open",
            entries.len()
        ));
    }
    for e in &entries {
        if !flows.iter().any(|f| f.flow.handle == e.flow_id) {
            w.kernel
                .violation(format!("LIST_FLOWS lists unknown flow {:#x}", e.flow_id));
        }
        if !(15..60_000).contains(&e.age_ms) {
            w.kernel.violation(format!(
                "flow {:#x} is {} ms old after a 20 ms sleep (interrupt time not read from the host page?)",
                e.flow_id, e.age_ms
            ));
        }
    }
    let (status, header, entries) = w.list_flows_page(1, (0, 0))?;
    let more = header.flags & protocol::FLOW_LIST_MORE != 0;
    if status != 0
        || header.total_flows as usize != total
        || entries.len() != 1
        || more != (total > 1)
    {
        w.kernel.violation(format!(
            "LIST_FLOWS(1): status {status:#x}, total {}, {} entries, more {more}",
            header.total_flows,
            entries.len()
        ));
    }
    w.check_counters();
    for f in flows.drain(..total / 2) {
        w.end_flow(&f);
    }
    w.check_counters();
    let (status, _, _) = w.send_irp(IRP_MJ_READ, 0, &[], 0, "");
    if status != STATUS_INVALID_DEVICE_REQUEST {
        w.kernel.violation(format!(
            "IRP_MJ_READ -> {status:#x}, expected STATUS_INVALID_DEVICE_REQUEST"
        ));
    }
    let _ = w.send_irp(IRP_MJ_CLEANUP, 0, &[], 0, "");
    let _ = w.send_irp(IRP_MJ_CLOSE, 0, &[], 0, "");
    w.unload();
    end_all(&w, &mut flows);
    // With the session listening to everything, each tracked flow is
    // announced once and retired once (FLOWS keyword).
    let log = w.kernel.log();
    let established = log
        .iter()
        .filter(|l| l.contains("ETW L4 FlowEstablished "))
        .count() as u64;
    let ended = log
        .iter()
        .filter(|l| l.contains("ETW L4 FlowEnded "))
        .count() as u64;
    let associated = w.engine.associated.load(Ordering::SeqCst);
    if established != associated || ended != associated {
        w.kernel.violation(format!(
            "ETW: {established} FlowEstablished and {ended} FlowEnded events for {associated} tracked flows"
        ));
    }
    w.finish()
}

/// `n` live flows (every kind), one packet each, the whole flow list,
/// counters, then Unload's removal pass over all of them.
///
/// # Errors
/// The problems found, with the seed.
pub fn many_flows(seed: u64, n: usize) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let mut flows = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let f = w.open_flow(rng.one_in(2), rng.one_in(2), rng.one_in(2), i);
        let _ = w.establish(&f, FilterKind::Inspection);
        if f.tcp {
            let _ = w.stream(&f, 100, true, FilterKind::Inspection);
        } else {
            let _ = w.datagrams(&f, &[100], false, FilterKind::Inspection);
        }
        flows.push(f);
    }
    let (entries, total, calls) = w.list_all_flows(256)?;
    let unique: std::collections::HashSet<u64> = entries.iter().map(|e| e.flow_id).collect();
    if total as usize != n
        || entries.len() != n
        || unique.len() != n
        || calls != n.div_ceil(256).max(1)
    {
        w.kernel.violation(format!(
            "LIST_FLOWS of {n} flows: total {total}, {} entries ({} distinct) in {calls} batches",
            entries.len(),
            unique.len()
        ));
    }
    w.check_counters();
    fail_if_violations(&w)?;
    w.unload();
    end_all(&w, &mut flows);
    w.finish()
}

/// Classify threads of every kind (stream, datagram, flow-established;
/// IPv4 and IPv6) run while DriverUnload runs on this thread.
///
/// # Errors
/// The problems found, with the seed.
pub fn unload_during_traffic(
    seed: u64,
    threads: usize,
    barrier: Barrier,
) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let mut config = Config::new(seed);
    config.mode.barrier = barrier;
    let w = boot(config)?;
    let stop = AtomicBool::new(false);
    let w_ref: &World = &w;
    std::thread::scope(|s| {
        for t in 0..threads {
            let mut trng = rng.fork();
            let stop = &stop;
            let kind = (t % 2 == 1, (t / 2) % 2 == 0);
            std::thread::Builder::new()
                .name(format!("classify-{t}"))
                .spawn_scoped(s, move || {
                    let mut flows = Vec::new();
                    let mut counter = (t as u64) << 32;
                    while !stop.load(Ordering::Relaxed) {
                        traffic_step(w_ref, &mut trng, &mut flows, &mut counter, Some(kind));
                        if barrier == Barrier::Busy && trng.one_in(32) {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                    end_all(w_ref, &mut flows);
                })
                .expect("spawn");
        }
        std::thread::sleep(Duration::from_micros(200 + rng.below(3000)));
        w_ref.unload();
        stop.store(true, Ordering::Relaxed);
    });
    w.finish()
}

/// Flows end on their own (another thread) while Unload's removal pass
/// runs, with traffic on the survivors.
///
/// # Errors
/// The problems found, with the seed.
pub fn flows_end_during_removal(seed: u64, n: usize) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let mut flows = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let f = w.open_flow(rng.one_in(2), rng.one_in(2), false, i);
        let _ = w.establish(&f, FilterKind::Inspection);
        flows.push(f);
    }
    // Shuffle, then split: one thread ends its half, one sends on the rest.
    for i in (1..flows.len()).rev() {
        let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
        flows.swap(i, j);
    }
    let mut talk = flows.split_off(n / 2);
    let mut end = flows;
    let stop = AtomicBool::new(false);
    let w_ref: &World = &w;
    std::thread::scope(|s| {
        let stop = &stop;
        let mut r1 = rng.fork();
        std::thread::Builder::new()
            .name("flows-ending".into())
            .spawn_scoped(s, move || {
                while let Some(f) = end.pop() {
                    w_ref.end_flow(&f);
                    if r1.one_in(64) {
                        std::thread::yield_now();
                    }
                }
            })
            .expect("spawn");
        let mut r2 = rng.fork();
        let talk_ref = &mut talk;
        std::thread::Builder::new()
            .name("classify".into())
            .spawn_scoped(s, move || {
                while !stop.load(Ordering::Relaxed) && !talk_ref.is_empty() {
                    let i = usize::try_from(r2.below(talk_ref.len() as u64)).unwrap_or(0);
                    let f = &talk_ref[i];
                    if f.tcp {
                        let _ = w_ref.stream(f, 512, r2.one_in(2), FilterKind::Inspection);
                    } else {
                        let _ = w_ref.datagrams(f, &[512], r2.one_in(2), FilterKind::Inspection);
                    }
                }
            })
            .expect("spawn");
        std::thread::sleep(Duration::from_micros(rng.below(500)));
        w_ref.unload();
        stop.store(true, Ordering::Relaxed);
    });
    end_all(&w, &mut talk);
    w.finish()
}

/// Every removal is answered `STATUS_PENDING` and completed only after ten
/// minutes of (simulated) time, while a classify thread keeps going: the
/// driver must wait all of it out and never return early.
///
/// # Errors
/// The problems found, with the seed.
pub fn slow_deferred_deletions(seed: u64, flows: usize) -> Result<Summary, String> {
    deferred_deletions_outlived(seed, flows, Mode::default())
}

/// Rule E14 (adversarial): every removal is deferred by ten minutes,
/// and once no live context of a callout is left the engine answers
/// `STATUS_FWP_CALLOUT_NOT_FOUND` — with the deferred flowDeleteFn calls
/// still to come. The driver must neither delete its device nor return
/// from Unload before the last of them (the world checks both), with either
/// form of the classify barrier.
///
/// # Errors
/// The problems found, with the seed.
pub fn not_found_while_deletions_are_owed(
    seed: u64,
    flows: usize,
    barrier: Barrier,
) -> Result<Summary, String> {
    deferred_deletions_outlived(
        seed,
        flows,
        Mode {
            barrier,
            early_not_found: true,
            ..Mode::default()
        },
    )
}

/// The body of [`slow_deferred_deletions`] and
/// [`not_found_while_deletions_are_owed`]: `mode` with every removal
/// deferred by ten (simulated) minutes.
fn deferred_deletions_outlived(seed: u64, flows: usize, mode: Mode) -> Result<Summary, String> {
    const TEN_MINUTES_100NS: u64 = 10 * 60 * 10_000_000;
    let mut rng = Rng::new(seed);
    let mut config = Config::new(seed);
    config.simulated_clock = true;
    config.mode = Mode {
        slow_delete_100ns: Some(TEN_MINUTES_100NS),
        ..mode
    };
    let w = boot(config)?;
    let mut open = Vec::new();
    for i in 0..flows as u64 {
        let f = w.open_flow(rng.one_in(2), rng.one_in(2), false, i);
        let _ = w.establish(&f, FilterKind::Inspection);
        open.push(f);
    }
    let stop = AtomicBool::new(false);
    let w_ref: &World = &w;
    let started = clock::now_100ns();
    std::thread::scope(|s| {
        let stop = &stop;
        let mut trng = rng.fork();
        std::thread::Builder::new()
            .name("classify".into())
            .spawn_scoped(s, move || {
                let mut mine = Vec::new();
                let mut counter = 1 << 40;
                while !stop.load(Ordering::Relaxed) {
                    traffic_step(w_ref, &mut trng, &mut mine, &mut counter, None);
                    std::thread::sleep(Duration::from_micros(100));
                }
                end_all(w_ref, &mut mine);
            })
            .expect("spawn");
        w_ref.unload();
        stop.store(true, Ordering::Relaxed);
    });
    let waited = clock::now_100ns() - started;
    if waited < TEN_MINUTES_100NS {
        w.kernel.violation(format!("Unload returned after {:?} of (simulated) time; the engine released the contexts only after 10 minutes", clock::as_duration(waited)));
    }
    if mode.early_not_found {
        let early = w.engine.early_not_found_answers.load(Ordering::SeqCst);
        if early == 0 {
            w.kernel.violation(
                "the engine never answered NOT_FOUND with deletions owed: the scenario exercised nothing"
                    .into(),
            );
        }
        let owed = w.engine.owed_to_unregistered();
        if owed != 0 {
            w.kernel.violation(format!(
                "Unload returned while {owed} flowDeleteFn call(s) were owed to callouts the engine had let go"
            ));
        }
    }
    end_all(&w, &mut open);
    w.finish()
}

/// How many failable calls `DriverEntry` makes (a dry run, counted).
///
/// # Errors
/// The problems of the dry run.
pub fn failable_driver_entry_calls(seed: u64) -> Result<Vec<&'static str>, String> {
    let w = World::create(Config::new(seed))?;
    w.kernel.arm_faults(None, Duration::ZERO);
    let status = w.driver_entry();
    let calls = w.kernel.disarm_faults();
    if status != 0 {
        return Err(w.report(&[format!("DriverEntry -> {status:#x}")]));
    }
    w.unload();
    w.finish()?;
    Ok(calls)
}

/// The `k`-th failable call of `DriverEntry` (1-based) fails while
/// classify threads hammer every callout registered so far; everything
/// DriverEntry built must be undone, with no driver code left running.
///
/// # Errors
/// The problems found, with the seed.
pub fn driver_entry_fault(seed: u64, k: usize, threads: usize) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let w = World::create(Config::new(seed))?;
    let stop = AtomicBool::new(false);
    let w_ref: &World = &w;
    let mut status = 0;
    std::thread::scope(|s| {
        for t in 0..threads {
            let stop = &stop;
            let mut trng = rng.fork();
            std::thread::Builder::new()
                .name(format!("hammer-{t}"))
                .spawn_scoped(s, move || {
                    let mut flows = Vec::new();
                    let mut counter = (t as u64 + 1) << 32;
                    while !stop.load(Ordering::Relaxed) {
                        traffic_step(w_ref, &mut trng, &mut flows, &mut counter, None);
                    }
                    end_all(w_ref, &mut flows);
                })
                .expect("spawn");
        }
        std::thread::sleep(Duration::from_micros(rng.below(300)));
        w_ref.kernel.arm_faults(Some(k), Duration::from_micros(300));
        status = w_ref.driver_entry();
        let calls = w_ref.kernel.disarm_faults();
        if calls.len() < k {
            w_ref.kernel.violation(format!(
                "DriverEntry made only {} failable calls; fault {k} was never injected",
                calls.len()
            ));
        } else if status >= 0 {
            if std::env::var_os("WFPMON_NATIVE_VERBOSE").is_some() {
                eprintln!(
                    "fault at call {k} ({}): DriverEntry still succeeded",
                    calls[k - 1]
                );
            }
            // The driver may tolerate a failure it can do without; it must
            // then work and unload normally.
            std::thread::sleep(Duration::from_micros(rng.below(300)));
            w_ref.unload();
        } else {
            // Classifies keep arriving at an unloaded image only through
            // callouts that are still registered (checked at failure).
            std::thread::sleep(Duration::from_micros(rng.below(300)));
        }
        stop.store(true, Ordering::Relaxed);
    });
    w.finish()
        .map_err(|e| format!("fault at failable call {k}: {e}"))
}

/// IOCTLs from another thread during traffic (statistics, the flow list
/// with random capacities, counting on); then, with traffic stopped, the
/// statistics must equal what the engine delivered.
///
/// # Errors
/// The problems found, with the seed.
pub fn ioctls_during_traffic(seed: u64, threads: usize, steps: usize) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let _ = w.send_irp(IRP_MJ_CREATE, 0, &[], 0, "");
    let running = AtomicU64::new(threads as u64);
    let w_ref: &World = &w;
    let mut leftover = Vec::new();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let running = &running;
            let mut trng = rng.fork();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("classify-{t}"))
                    .spawn_scoped(s, move || {
                        let mut flows = Vec::new();
                        let mut counter = (t as u64 + 1) << 32;
                        for _ in 0..steps {
                            traffic_step(w_ref, &mut trng, &mut flows, &mut counter, None);
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        flows
                    })
                    .expect("spawn"),
            );
        }
        let mut irng = rng.fork();
        let running = &running;
        std::thread::Builder::new()
            .name("ioctl".into())
            .spawn_scoped(s, move || {
                while running.load(Ordering::SeqCst) > 0 {
                    match irng.below(3) {
                        // Statistics are not a snapshot (counters move while
                        // they are read): only the reply is checked here.
                        0 => {
                            let reply = if irng.below(2) == 0 {
                                w_ref.query_stats()
                            } else {
                                w_ref.query_stats_live()
                            };
                            if let Err(e) = reply {
                                w_ref.kernel.violation(e);
                            }
                        }
                        1 => {
                            // A whole paged pass while flows come and go:
                            // never a flow twice, never one the engine
                            // did not issue.
                            let batch = u32::try_from(1 + irng.below(200)).unwrap_or(1);
                            match w_ref.list_all_flows(batch) {
                                Ok((entries, _, _)) => {
                                    let unique: std::collections::HashSet<u64> = entries.iter().map(|e| e.flow_id).collect();
                                    if unique.len() != entries.len() {
                                        w_ref.kernel.violation(format!("LIST_FLOWS in batches of {batch}: a flow listed twice in one pass"));
                                    }
                                    if entries.iter().any(|e| e.flow_id < 0x1_0000 || e.flow_id % 0x10 != 0) {
                                        w_ref.kernel.violation("LIST_FLOWS returned a flow id the engine never issued".into());
                                    }
                                }
                                Err(e) => w_ref.kernel.violation(e),
                            }
                        }
                        _ => {
                            let req = protocol::SetCountingRequest::new(true).to_bytes();
                            let (status, _) = w_ref.ioctl(protocol::IOCTL_WFPMON_SET_COUNTING, &req, 0);
                            if status != 0 {
                                w_ref.kernel.violation(format!("SET_COUNTING -> {status:#x}"));
                            }
                        }
                    }
                }
            })
            .expect("spawn");
        for h in handles {
            leftover.extend(h.join().unwrap_or_default());
        }
    });
    w.check_counters();
    let _ = w.send_irp(IRP_MJ_CLOSE, 0, &[], 0, "");
    w.unload();
    end_all(&w, &mut leftover);
    w.finish()
}

/// The pool runs dry during traffic: one allocation in `one_in` fails
/// (flow-established classifies on two threads). The driver must count each
/// failure, track nothing for those flows, and keep every other count right.
///
/// # Errors
/// The problems found, with the seed.
pub fn allocation_failures(seed: u64, one_in: u64, steps: usize) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    w.kernel.pool_fail_one_in.store(one_in, Ordering::SeqCst);
    let w_ref: &World = &w;
    let mut leftover = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let mut trng = rng.fork();
                std::thread::Builder::new()
                    .name(format!("classify-{t}"))
                    .spawn_scoped(s, move || {
                        let mut flows = Vec::new();
                        let mut counter = (t + 1) << 32;
                        for _ in 0..steps {
                            traffic_step(w_ref, &mut trng, &mut flows, &mut counter, None);
                        }
                        flows
                    })
                    .expect("spawn")
            })
            .collect();
        for h in handles {
            leftover.extend(h.join().unwrap_or_default());
        }
    });
    w.kernel.pool_fail_one_in.store(0, Ordering::SeqCst);
    let failed = w.kernel.pool_failed.load(Ordering::SeqCst);
    match w.query_stats() {
        Ok(stats) if stats.allocation_failures != failed => w.kernel.violation(format!(
            "statistics: allocation_failures = {}, but {failed} allocations failed",
            stats.allocation_failures
        )),
        Ok(_) => {}
        Err(e) => w.kernel.violation(e),
    }
    if failed == 0 {
        w.kernel
            .violation("no allocation failed: the scenario exercised nothing".into());
    }
    w.check_counters();
    w.unload();
    end_all(&w, &mut leftover);
    w.finish()
}

/// Flows shared by all threads: any thread establishes flows, sends on any
/// flow, or ends any flow — so flows end while another thread classifies
/// them or is still establishing them (the engine then defers their
/// deletion to the end of that classify, or refuses the association).
/// Then, quiet, the statistics must equal what the engine delivered.
///
/// # Errors
/// The problems found, with the seed.
pub fn shared_flows(seed: u64, threads: usize, steps: usize) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let w = boot(Config::new(seed))?;
    let pool: std::sync::Mutex<Vec<HostFlow>> = std::sync::Mutex::new(Vec::new());
    let w_ref: &World = &w;
    std::thread::scope(|s| {
        for t in 0..threads {
            let mut trng = rng.fork();
            let pool = &pool;
            std::thread::Builder::new()
                .name(format!("shared-{t}"))
                .spawn_scoped(s, move || {
                    let mut counter = (t as u64 + 1) << 32;
                    for _ in 0..steps {
                        let pick = |r: &mut Rng| {
                            let flows = crate::world::guard(pool);
                            if flows.is_empty() {
                                None
                            } else {
                                let i = usize::try_from(r.below(flows.len() as u64)).unwrap_or(0);
                                Some(flows[i].clone())
                            }
                        };
                        match trng.below(8) {
                            0 | 1 => {
                                counter += 1;
                                let f = w_ref.open_flow(
                                    trng.one_in(2),
                                    trng.one_in(2),
                                    trng.one_in(2),
                                    counter,
                                );
                                // Published before its flow-established
                                // classify: others may end it meanwhile.
                                crate::world::guard(pool).push(f.clone());
                                let _ = w_ref.establish(&f, filter(&mut trng));
                            }
                            2 => {
                                let victim = {
                                    let mut flows = crate::world::guard(pool);
                                    if flows.is_empty() {
                                        None
                                    } else {
                                        let i = usize::try_from(trng.below(flows.len() as u64))
                                            .unwrap_or(0);
                                        Some(flows.swap_remove(i))
                                    }
                                };
                                if let Some(f) = victim {
                                    w_ref.end_flow(&f);
                                }
                            }
                            _ => {
                                if let Some(f) = pick(&mut trng) {
                                    if f.tcp {
                                        let _ = w_ref.stream(
                                            &f,
                                            usize::try_from(1 + trng.below(1500)).unwrap_or(1),
                                            trng.one_in(2),
                                            filter(&mut trng),
                                        );
                                    } else {
                                        let _ = w_ref.datagrams(
                                            &f,
                                            &[u32::try_from(1 + trng.below(1400)).unwrap_or(1)],
                                            trng.one_in(2),
                                            filter(&mut trng),
                                        );
                                    }
                                }
                            }
                        }
                    }
                })
                .expect("spawn");
        }
    });
    w.check_counters();
    w.unload();
    let mut rest = std::mem::take(&mut *crate::world::guard(&pool));
    end_all(&w, &mut rest);
    w.finish()
}

/// The memcheck scenario: traffic threads, an IOCTL pass, flows ending,
/// and Unload during traffic.
///
/// # Errors
/// The problems found, with the seed.
pub fn stress(seed: u64) -> Result<Summary, String> {
    let a = ioctls_during_traffic(seed, 2, 300)?;
    let b = flows_end_during_removal(seed, 300)?;
    let c = unload_during_traffic(seed, 3, Barrier::Wait)?;
    let d = shared_flows(seed, 3, 300)?;
    Ok(a.plus(b).plus(c).plus(d))
}

/// Deliberately broken (memcheck proof): the engine hands a context whose
/// flowDeleteFn already freed it to the driver's stream classify (see
/// [`Breakage::ClassifyWithDeletedContext`]), so the driver's own machine
/// code reads and writes freed pool memory. Natively this usually goes
/// unnoticed; memcheck must report invalid accesses in the image.
///
/// # Errors
/// The problems found, with the seed.
pub fn use_after_delete(seed: u64) -> Result<Summary, String> {
    let mut config = Config::new(seed);
    config.mode.breakage = Breakage::ClassifyWithDeletedContext;
    let w = boot(config)?;
    w.account.store(false, Ordering::Relaxed);
    let first = w.open_flow(false, true, false, 1);
    let _ = w.establish(&first, FilterKind::Inspection);
    let _ = w.stream(&first, 100, true, FilterKind::Inspection);
    w.end_flow(&first);
    // A flow the driver never saw: the broken engine passes the freed
    // context of the first one.
    let second = w.open_flow(false, true, false, 2);
    let _ = w.stream(&second, 100, true, FilterKind::Inspection);
    w.end_flow(&second);
    w.unload();
    w.finish()
}

/// The harness checks itself: deliberate host-side breakage that each
/// check must report — a pool block left behind at Unload (rule K27), a
/// callback returning with a spin lock held and at raised IRQL (rule K9), a
/// `PASSIVE_LEVEL` routine called at `DISPATCH_LEVEL` (rule K1), paged pool
/// at `DISPATCH_LEVEL` (rule K29), a wait with a timeout at
/// `DISPATCH_LEVEL` (rule K34), a device deleted while a callout registered
/// against it is still registered (rule K32), an ETW provider left
/// registered at Unload (rule T3), and driver code called after the image
/// was unloaded (rule K26). Returns the violations recorded.
///
/// # Errors
/// When the world cannot be built.
pub fn self_check(seed: u64) -> Result<Vec<String>, String> {
    let w = boot(Config::new(seed))?;
    // A block the "driver" allocates and never frees.
    let leaked = call_into_image(&w, "self-check: leak", PASSIVE_LEVEL, || {
        // SAFETY: the pool model, called as the image would call it.
        unsafe {
            kernel::ex_allocate_pool2(
                kernel::POOL_FLAG_NON_PAGED,
                64,
                u32::from_le_bytes(*b"Leak"),
            )
        }
    });
    // A callback that returns holding a spin lock.
    let mut word = 0u64;
    call_into_image(&w, "self-check: lock", PASSIVE_LEVEL, || {
        // SAFETY: a KSPIN_LOCK on this stack frame, alive for the call.
        unsafe { kernel::ke_acquire_spin_lock_raise_to_dpc(&raw mut word) }
    });
    call_into_image(&w, "self-check: unlock", DISPATCH_LEVEL, || {
        // SAFETY: the lock acquired above by this thread.
        unsafe { kernel::ke_release_spin_lock(&raw mut word, PASSIVE_LEVEL) };
    });
    // A PASSIVE_LEVEL routine at DISPATCH_LEVEL (and a handle never opened).
    call_into_image(&w, "self-check: ZwClose", DISPATCH_LEVEL, || {
        // SAFETY: the ZwClose model, which only looks the handle up.
        unsafe { kernel::zw_close(0x1234) }
    });
    // Paged pool at DISPATCH_LEVEL (freed again: only the leak above stays).
    let page_tag = u32::from_le_bytes(*b"Page");
    let paged = call_into_image(&w, "self-check: paged pool", DISPATCH_LEVEL, || {
        // SAFETY: the pool model, called as the image would call it.
        unsafe { kernel::ex_allocate_pool2(kernel::POOL_FLAG_PAGED, 32, page_tag) }
    });
    call_into_image(&w, "self-check: free paged", PASSIVE_LEVEL, || {
        // SAFETY: the block allocated just above, freed once.
        unsafe { kernel::ex_free_pool_with_tag(paged, page_tag) };
    });
    // A wait with a timeout at DISPATCH_LEVEL, on an event never initialised
    // (the model refuses it before waiting).
    let mut not_an_event = [0u8; 24];
    let timeout: i64 = -10;
    call_into_image(&w, "self-check: wait", DISPATCH_LEVEL, || {
        // SAFETY: the wait model; both pointers live for the call.
        unsafe {
            kernel::ke_wait_for_single_object(
                not_an_event.as_mut_ptr(),
                0,
                0,
                0,
                &raw const timeout,
            )
        }
    });
    // A second device, deleted while a callout registered against it is
    // still registered; the callout is unregistered afterwards.
    let mut device = 0usize;
    call_into_image(&w, "self-check: second device", PASSIVE_LEVEL, || {
        // SAFETY: the IoCreateDevice model: our driver object, no name, an
        // output variable alive for the call.
        unsafe {
            kernel::io_create_device(
                w.kernel.driver_object,
                0,
                std::ptr::null(),
                0x22,
                0,
                0,
                &raw mut device,
            )
        }
    });
    let template = w.callout(0).ok_or("no callout registered")?;
    let mut callout = [0u8; 48];
    callout[..16].copy_from_slice(&[0x5A; 16]);
    callout[24..32].copy_from_slice(&template.classify.to_le_bytes());
    callout[32..40].copy_from_slice(&template.notify.to_le_bytes());
    callout[40..].copy_from_slice(&template.flow_delete.to_le_bytes());
    let mut id = 0u32;
    call_into_image(&w, "self-check: register on it", PASSIVE_LEVEL, || {
        // SAFETY: the registration model reads the FWPS_CALLOUT1 (48 bytes)
        // above and writes the id; both live for the call.
        unsafe { crate::engine::fwps_callout_register(device, callout.as_ptr(), &raw mut id) }
    });
    call_into_image(&w, "self-check: delete it", PASSIVE_LEVEL, || {
        // SAFETY: the IoDeleteDevice model, for the device created above.
        unsafe { kernel::io_delete_device(device) };
    });
    call_into_image(&w, "self-check: unregister", PASSIVE_LEVEL, || {
        // SAFETY: the unregister model, for the callout registered above.
        unsafe { crate::engine::fwps_callout_unregister_by_id0(id) }
    });
    // An ETW provider registered and left registered at Unload.
    let provider = [0x5Au8; 16];
    let mut etw_handle = 0u64;
    call_into_image(&w, "self-check: EtwRegister", PASSIVE_LEVEL, || {
        // SAFETY: the EtwRegister model: a 16-byte provider id, no enable
        // callback, an output variable alive for the call.
        unsafe { crate::etw::etw_register(provider.as_ptr(), 0, 0, &raw mut etw_handle) }
    });
    let f = w.open_flow(false, true, false, 1);
    let _ = w.establish(&f, FilterKind::Inspection);
    let stream = w.callout(f.data_callout()).ok_or("no stream callout")?;
    w.unload();
    // Driver code run after Unload returned (bypassing the engine, which
    // would refuse: the callout is unregistered).
    // SAFETY: the classifyFn the image registered; the image is still mapped.
    let classify = unsafe { std::mem::transmute::<usize, ClassifyFn>(stream.classify) };
    call_into_image(
        &w,
        "self-check: classify after unload",
        DISPATCH_LEVEL,
        || {
            // SAFETY: null arguments and no flow context: the driver's classify
            // returns at once without touching anything.
            unsafe {
                classify(
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                    std::ptr::null_mut(),
                );
            }
        },
    );
    let reported = w.kernel.violations();
    // Tidy up so that the world drops cleanly.
    call_into_image(&w, "self-check: free", PASSIVE_LEVEL, || {
        // SAFETY: the block allocated above, freed once.
        unsafe { kernel::ex_free_pool_with_tag(leaked, u32::from_le_bytes(*b"Leak")) };
    });
    call_into_image(&w, "self-check: EtwUnregister", PASSIVE_LEVEL, || {
        // SAFETY: the provider registered above, unregistered once.
        unsafe { crate::etw::etw_unregister(etw_handle) }
    });
    w.end_flow(&f);
    Ok(reported)
}

/// Deliberately crashes inside the image (for the crash-report test, in a
/// child process): the driver's stream classify is handed an invalid
/// `classifyOut` pointer, which it writes through.
///
/// # Errors
/// When the world cannot be built (otherwise it does not return).
pub fn fault_in_image(seed: u64) -> Result<Summary, String> {
    let w = boot(Config::new(seed))?;
    let stream = w.callout(0).ok_or("no stream callout")?;
    // SAFETY: the classifyFn the image registered.
    let classify = unsafe { std::mem::transmute::<usize, ClassifyFn>(stream.classify) };
    let invalid_out = 0x10usize as *mut fwpsk_sys::FWPS_CLASSIFY_OUT0;
    call_into_image(&w, "fault-in-image", DISPATCH_LEVEL, || {
        // SAFETY: not safe on purpose: `classifyOut` points at an unmapped
        // page, so the driver faults writing its action; only the
        // crash-report test runs this, in a child process it expects to die.
        unsafe {
            classify(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
                0,
                invalid_out,
            );
        }
    });
    Err("the driver did not fault".into())
}

/// Runs `scenario` for `reps` consecutive seeds from `base`; stops at the
/// first failure.
///
/// # Errors
/// The first failure, naming the scenario.
pub fn repeat(
    name: &str,
    base: u64,
    reps: u32,
    mut scenario: impl FnMut(u64) -> Result<Summary, String>,
) -> Result<Summary, String> {
    let mut total = Summary::default();
    for i in 0..u64::from(reps) {
        let seed = base.wrapping_add(i);
        let one = scenario(seed).map_err(|e| format!("{name}, repetition {i} of {reps}:\n{e}"))?;
        total = total.plus(one);
    }
    Ok(total)
}
