//! Models of the ntoskrnl functions the image imports, with their rules.
//!
//! Each model checks the documented contract of its function and records a
//! *violation* (see [`Kernel::violation`]) when the driver breaks it; a run
//! with any violation fails. The rules are in `docs/engine-rules.md` (K
//! ids); `// Rule Kn` comments mark the code that implements each. Sources are the functions' reference pages on
//! learn.microsoft.com (WDK, wdm.h / ntddk.h): the maximum IRQL of each is
//! in [`crate::imports`]'s table and checked on entry by [`enter_api`].
//!
//! Per thread the host keeps the current IRQL, the spin locks held, and
//! how deep the thread is inside the image ([`call_into_image`] wraps every
//! call the host makes into driver code): a callback that returns with a
//! lock held or at another IRQL than it was called at is a violation, and
//! [`crate::world::World::in_image`] counts the threads executing driver
//! code at any moment (one flag per thread, on its own cache line, so that
//! the bookkeeping does not make threads share memory the driver does not).
//!
//! Memory the driver gets (pool blocks, device objects, IRPs, system
//! buffers) is allocated with the exact size from the C heap, with all
//! bookkeeping kept outside the block, so that valgrind's memcheck sees the
//! exact bounds of each one.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock;
use crate::world::{World, world};

/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: u8 = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: u8 = 1;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;
/// `HIGH_LEVEL` (no practical limit).
pub const HIGH_LEVEL: u8 = 15;

/// NTSTATUS values the models answer.
pub mod status {
    #![allow(clippy::cast_possible_wrap)]
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: i32 = 0;
    /// `STATUS_TIMEOUT`.
    pub const TIMEOUT: i32 = 0x102;
    /// `STATUS_PENDING`.
    pub const PENDING: i32 = 0x103;
    /// `STATUS_OBJECT_NAME_EXISTS` (informational).
    pub const OBJECT_NAME_EXISTS: i32 = 0x4000_0000;
    /// `STATUS_DEVICE_BUSY`.
    pub const DEVICE_BUSY: i32 = 0x8000_0011_u32 as i32;
    /// `STATUS_UNSUCCESSFUL`.
    pub const UNSUCCESSFUL: i32 = 0xC000_0001_u32 as i32;
    /// `STATUS_INVALID_HANDLE`.
    pub const INVALID_HANDLE: i32 = 0xC000_0008_u32 as i32;
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: i32 = 0xC000_009A_u32 as i32;
    /// `STATUS_OBJECT_NAME_COLLISION`.
    pub const OBJECT_NAME_COLLISION: i32 = 0xC000_0035_u32 as i32;
    /// `STATUS_ACCESS_DENIED`.
    pub const ACCESS_DENIED: i32 = 0xC000_0022_u32 as i32;
}

// ---------------------------------------------------------------------------
// Per-thread state
// ---------------------------------------------------------------------------

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

struct Held {
    lock: usize,
    since: Instant,
    /// The IRQL before the acquisition (what `KeReleaseSpinLock` must be
    /// given back).
    old_irql: u8,
}

thread_local! {
    static IRQL: Cell<u8> = const { Cell::new(PASSIVE_LEVEL) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
    static TOKEN: u64 = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static POOL_RNG: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's IRQL.
#[must_use]
pub fn irql() -> u8 {
    IRQL.with(Cell::get)
}

/// Sets the calling thread's IRQL (the host acting as the system: the I/O
/// manager's cancel path runs at its caller's IRQL).
pub(crate) fn set_irql(level: u8) {
    IRQL.with(|c| c.set(level));
}

/// A non-zero id of the calling thread (the owner value of spin locks).
#[must_use]
pub fn token() -> u64 {
    TOKEN.with(|t| *t)
}

/// The `DbgPrint` lines the calling thread produced (and forgets them).
#[must_use]
pub fn take_thread_lines() -> Vec<String> {
    LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

fn thread_label() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// Runs `f`, which calls into the image, at `irql` on this thread, with the
/// bookkeeping every entry into driver code gets: the thread's in-image
/// flag (see [`World::in_image`]), the check that the code returns at the IRQL it was called at
/// with the same spin locks held, and the check that nothing runs the
/// image after it was unloaded.
pub fn call_into_image<R>(w: &World, what: &str, level: u8, f: impl FnOnce() -> R) -> R {
    call_into_image_leaving(w, what, level, Leaves::Nothing, f)
}

/// What a driver callback may leave behind when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaves {
    /// Nothing: the IRQL and the spin locks it was called with (every
    /// callback but the lock pair of a cancel-safe queue).
    Nothing,
    /// One spin lock more, at `DISPATCH_LEVEL` (`CsqAcquireLock`: the
    /// queue's lock, taken for the system, which calls `CsqReleaseLock`
    /// later).
    OneLockAtDispatch,
    /// One spin lock fewer, at the given IRQL (`CsqReleaseLock(Irql)`).
    OneLockFewerAt(u8),
}

/// [`call_into_image`] for a callback that returns holding (or having
/// released) a lock, as `leaves` says; the thread's IRQL afterwards is the
/// one the callback returned at.
pub fn call_into_image_leaving<R>(
    w: &World,
    what: &str,
    level: u8,
    leaves: Leaves,
    f: impl FnOnce() -> R,
) -> R {
    // Rule K9: the callback returns with the locks and at the IRQL it got.
    let outer_irql = irql();
    if level < outer_irql {
        w.kernel.violation(format!(
            "host bug: {what} called at IRQL {level} below the current {outer_irql}"
        ));
    }
    let depth = DEPTH.with(Cell::get);
    if depth == 0 {
        w.mark_in_image(true);
    }
    DEPTH.with(|d| d.set(depth + 1));
    // Rule K26
    if w.unloaded.load(Ordering::SeqCst) {
        w.kernel.violation(format!(
            "{what}: driver code called after the image was unloaded"
        ));
    }
    set_irql(level);
    let held_before = HELD.with(|h| h.borrow().len());
    let outer = move_to(Side::Driver);
    let result = f();
    move_to(outer);
    let held_after = HELD.with(|h| h.borrow().len());
    let (locks_wanted, irql_wanted) = match leaves {
        Leaves::Nothing => (held_before.cast_signed(), level),
        Leaves::OneLockAtDispatch => (held_before.cast_signed() + 1, DISPATCH_LEVEL),
        Leaves::OneLockFewerAt(to) => (held_before.cast_signed() - 1, to),
    };
    let extra = held_after.cast_signed() - locks_wanted;
    if extra != 0 {
        w.kernel.violation(format!(
            "{what} returned holding {extra} spin lock(s) more than {}",
            if leaves == Leaves::Nothing {
                "at entry"
            } else {
                "it must"
            }
        ));
    }
    if irql() != irql_wanted {
        w.kernel.violation(format!(
            "{what} returned at IRQL {} (called at {level}{})",
            irql(),
            if leaves == Leaves::Nothing {
                String::new()
            } else {
                format!(", must return at {irql_wanted}")
            }
        ));
    }
    set_irql(if leaves == Leaves::Nothing {
        outer_irql
    } else {
        irql_wanted
    });
    DEPTH.with(|d| d.set(depth));
    if depth == 0 {
        w.mark_in_image(false);
    }
    result
}

/// What every model does first: checks the caller's IRQL against the
/// function's documented maximum and returns the world. The thread's time
/// is charged to the models ([`time_split`]) until the returned guard
/// drops, i.e. until the model returns.
pub fn enter_api(api: &str, max_irql: u8) -> Api {
    let api_guard = Api {
        world: world(),
        outer: move_to(Side::Model),
    };
    let w = api_guard.world;
    let level = irql();
    // Rule K1
    if level > max_irql {
        w.kernel.violation(format!(
            "{api} called at IRQL {level}; its maximum is {max_irql}"
        ));
    }
    if DEPTH.with(Cell::get) == 0 {
        w.kernel
            .violation(format!("{api} called from outside the image (host bug)"));
    }
    api_guard
}

/// A model running ([`enter_api`]): dereferences to the world; when it
/// drops, the thread's time is charged again to the side that called the
/// model.
pub struct Api {
    world: &'static World,
    outer: Side,
}

impl std::ops::Deref for Api {
    type Target = World;
    fn deref(&self) -> &World {
        self.world
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        move_to(self.outer);
    }
}

// ---------------------------------------------------------------------------
// Where a thread's time goes
// ---------------------------------------------------------------------------

/// Which code a thread is executing (see [`time_split`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The host: harness, engine bookkeeping around classifies.
    Host = 0,
    /// Code called as the driver, from [`call_into_image`] to its return.
    Driver = 1,
    /// A kernel or engine model, from [`enter_api`] to its return.
    Model = 2,
}

thread_local! {
    /// The side the thread is on, and the time stamp counter when it got there.
    static SIDE: Cell<(Side, u64)> = const { Cell::new((Side::Host, 0)) };
    /// Time stamp counter ticks spent on each side, and interrupted.
    static TICKS: Cell<[u64; 4]> = const { Cell::new([0; 4]) };
}

/// The time stamp counter, read after every earlier instruction has
/// completed and before any later one starts (LFENCE on both sides), so that
/// the stall of a load that misses the cache is charged to the side that
/// made it rather than to the next side the out-of-order core reached.
fn tsc() -> u64 {
    use core::arch::x86_64::{_mm_lfence, _rdtsc};
    // SAFETY: LFENCE (SSE2, part of x86_64) has no preconditions.
    unsafe { _mm_lfence() };
    // SAFETY: RDTSC has no preconditions on x86_64, and Linux lets user mode
    // execute it.
    let t = unsafe { _rdtsc() };
    // SAFETY: as the first LFENCE.
    unsafe { _mm_lfence() };
    t
}

/// A stretch on one side longer than this many ticks (about 40 µs at the
/// 2–3 GHz of the machines this runs on) is counted as an interruption —
/// the thread preempted, or a wait — not as that side's work: no step the
/// benchmarks time (one model call, the driver's code between two of them)
/// takes that long.
pub const INTERRUPTION_TICKS: u64 = 100_000;

/// Whether [`time_split`] accounting runs (off: a transition only records
/// the side, without reading the time stamp counter).
static ACCOUNTING: AtomicBool = AtomicBool::new(false);

/// Turns the accounting behind [`time_split`] on or off, for every thread
/// (the benchmarks turn it on only around what they measure, so that the
/// fenced time stamp reads cost nothing elsewhere).
pub fn set_time_accounting(on: bool) {
    ACCOUNTING.store(on, Ordering::SeqCst);
}

/// Puts the thread on `side`, charging the time since its last move to the
/// side it leaves (or to interruptions), which it returns.
fn move_to(side: Side) -> Side {
    if !ACCOUNTING.load(Ordering::Relaxed) {
        let (from, _) = SIDE.get();
        SIDE.set((side, 0));
        return from;
    }
    let now = tsc();
    let (from, since) = SIDE.get();
    let spent = now.wrapping_sub(since);
    let mut ticks = TICKS.get();
    let slot = if spent > INTERRUPTION_TICKS {
        3
    } else {
        from as usize
    };
    ticks[slot] = ticks[slot].wrapping_add(spent);
    TICKS.set(ticks);
    SIDE.set((side, now));
    from
}

/// Time stamp counter ticks the calling thread has spent so far (summed
/// over its life; subtract two readings): in host code, in code called as
/// the driver — the image from a [`call_into_image`] to its return, or the
/// benchmarks' stand-in in its place — less the models it called, and in
/// the kernel and engine models — from [`enter_api`] to their return, less
/// driver code they call back (flowDeleteFn); stretches longer than
/// [`INTERRUPTION_TICKS`] apart. Two fenced time stamp reads per
/// transition; their cost lands on both sides of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeSplit {
    /// Host code.
    pub host: u64,
    /// Code called as the driver.
    pub driver: u64,
    /// Kernel and engine models.
    pub models: u64,
    /// Stretches on any side longer than [`INTERRUPTION_TICKS`].
    pub interrupted: u64,
}

impl TimeSplit {
    /// What was spent between `earlier` and `self`.
    #[must_use]
    pub const fn since(self, earlier: Self) -> Self {
        Self {
            host: self.host.wrapping_sub(earlier.host),
            driver: self.driver.wrapping_sub(earlier.driver),
            models: self.models.wrapping_sub(earlier.models),
            interrupted: self.interrupted.wrapping_sub(earlier.interrupted),
        }
    }
}

/// The calling thread's [`TimeSplit`] now (nothing is added while the
/// accounting is off: [`set_time_accounting`]).
#[must_use]
pub fn time_split() -> TimeSplit {
    move_to(SIDE.get().0);
    let [host, driver, models, interrupted] = TICKS.get();
    TimeSplit {
        host,
        driver,
        models,
        interrupted,
    }
}

// ---------------------------------------------------------------------------
// Kernel state
// ---------------------------------------------------------------------------

/// One pool allocation.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// Bytes requested.
    pub size: usize,
    /// Pool tag.
    pub tag: u32,
    /// `POOL_FLAG_*`.
    pub flags: u64,
}

/// A kernel event (`KEVENT`), kept outside the driver's memory, keyed by
/// the address of its `KEVENT`.
pub struct EventState {
    signalled: Mutex<bool>,
    cond: Condvar,
    synchronization: bool,
}

/// A device object the driver created.
#[derive(Clone, Debug)]
pub struct DeviceRec {
    /// Its name.
    pub name: String,
    /// `DeviceType`.
    pub device_type: u32,
    /// `DeviceCharacteristics`.
    pub characteristics: u32,
    /// Security descriptors applied to it (bytes).
    pub security: Vec<Vec<u8>>,
    size: usize,
}

/// Fault injection: fail the n-th failable call made while armed.
#[derive(Default)]
pub struct Faults {
    armed: bool,
    fail_at: Option<usize>,
    /// Failable calls seen while armed, in order.
    pub seen: Vec<&'static str>,
    /// Real time each failable call takes while armed (a slow kernel, so
    /// that other threads classify in the middle of DriverEntry).
    delay: Duration,
    /// Only calls of this thread (the one running DriverEntry) count.
    thread: u64,
}

/// The state of the kernel models of one world.
pub struct Kernel {
    violations: Mutex<Vec<String>>,
    suppressed: AtomicU64,
    log: Mutex<Vec<String>>,
    pool: Mutex<IntMap<usize, Block>>,
    /// Allocations made.
    pub allocations: AtomicU64,
    /// Frees made.
    pub frees: AtomicU64,
    events: Mutex<HashMap<usize, Arc<EventState>>>,
    devices: Mutex<HashMap<usize, DeviceRec>>,
    deleted_devices: Mutex<Vec<DeviceRec>>,
    handles: Mutex<HashMap<u64, usize>>,
    next_handle: AtomicU64,
    /// ETW providers registered (see [`crate::etw`]).
    pub(crate) etw: Mutex<HashMap<u64, crate::etw::Registration>>,
    pub(crate) next_etw: AtomicU64,
    /// The ETW session that enables every provider (level, keywords), or
    /// none listening.
    pub etw_session: Option<(u8, u64)>,
    /// Events written (decoded; also appended to the log).
    pub etw_events: AtomicU64,
    faults: Mutex<Faults>,
    /// Longest time any spin lock was held, in nanoseconds.
    pub lock_max_ns: AtomicU64,
    /// Spin lock acquisitions.
    pub lock_acquisitions: AtomicU64,
    /// When set, every spin lock hold's duration (ns) is recorded here
    /// (benchmarks: percentiles, which a single OS interruption inside one
    /// of thousands of holds cannot dominate the way it dominates the max).
    pub lock_holds: Mutex<Option<Vec<u64>>>,
    /// Waits that timed out / were satisfied.
    pub waits: AtomicU64,
    /// Driver object (0x150 bytes, host-allocated).
    pub driver_object: usize,
    /// Simulated clock: waits advance time instead of sleeping.
    pub simulated_clock: bool,
    /// Nanoseconds of real time per simulated wait quantum.
    quantum_nap: Duration,
    echo: bool,
    /// Pool exhaustion: every n-th allocation (on average) fails; 0: never.
    pub pool_fail_one_in: AtomicU64,
    /// Allocations failed by [`Kernel::pool_fail_one_in`].
    pub pool_failed: AtomicU64,
}

/// Size of `DRIVER_OBJECT` on x64.
pub const DRIVER_OBJECT_SIZE: usize = 0x150;
/// `DRIVER_OBJECT.DriverUnload`.
pub const DRIVER_UNLOAD_OFFSET: usize = 0x68;
/// `DRIVER_OBJECT.MajorFunction[0]`.
pub const MAJOR_FUNCTION_OFFSET: usize = 0x70;
/// `DRIVER_OBJECT.DeviceObject`.
const DRIVER_DEVICE_OBJECT_OFFSET: usize = 0x08;
/// `DEVICE_OBJECT` size (real WDK; mingw's is 0x148).
pub const DEVICE_OBJECT_SIZE: usize = 0x150;
/// `DEVICE_OBJECT.Flags`.
pub const DEVICE_FLAGS_OFFSET: usize = 0x30;
/// `DO_DEVICE_INITIALIZING`.
pub const DO_DEVICE_INITIALIZING: u32 = 0x80;

impl Kernel {
    /// Fresh state; allocates the driver object. The pool ledger has room
    /// for `capacity` blocks up front.
    #[must_use]
    pub fn new(simulated_clock: bool, etw_session: Option<(u8, u64)>, capacity: usize) -> Self {
        let driver_object = host_alloc(DRIVER_OBJECT_SIZE);
        // SAFETY: a fresh zeroed block of DRIVER_OBJECT_SIZE bytes: Type
        // (CSHORT) at 0 and Size at 2 are inside it.
        unsafe { (driver_object as *mut i16).write(4) }; // IO_TYPE_DRIVER
        // SAFETY: as above.
        unsafe { ((driver_object + 2) as *mut i16).write(0x150) };
        Self {
            violations: Mutex::new(Vec::new()),
            suppressed: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            pool: Mutex::new(IntMap::with_capacity_and_hasher(
                capacity,
                std::hash::BuildHasherDefault::default(),
            )),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            events: Mutex::new(HashMap::new()),
            devices: Mutex::new(HashMap::new()),
            deleted_devices: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(0xFFFF_FFFF_8000_0004),
            etw: Mutex::new(HashMap::new()),
            next_etw: AtomicU64::new(0x1000),
            etw_session,
            etw_events: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
            lock_max_ns: AtomicU64::new(0),
            lock_acquisitions: AtomicU64::new(0),
            lock_holds: Mutex::new(None),
            waits: AtomicU64::new(0),
            driver_object,
            simulated_clock,
            quantum_nap: Duration::from_micros(20),
            echo: std::env::var_os("WFPMON_NATIVE_VERBOSE").is_some(),
            pool_fail_one_in: AtomicU64::new(0),
            pool_failed: AtomicU64::new(0),
        }
    }

    /// Records a broken rule.
    #[allow(clippy::needless_pass_by_value)] // callers build the text for it
    pub fn violation(&self, what: String) {
        let line = format!("[{}] {what}", thread_label());
        if self.echo {
            eprintln!("VIOLATION {line}");
        }
        let mut v = lock(&self.violations);
        // Keep the first few of each kind (the text without its numbers):
        // one broken rule on a hot path must not bury the others.
        let kind: String = what.chars().filter(|c| !c.is_ascii_digit()).collect();
        let same = v
            .iter()
            .filter(|l| {
                l.chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect::<String>()
                    .ends_with(&kind)
            })
            .count();
        if same < 3 {
            v.push(line);
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Violations not listed because three of their kind already were.
    #[must_use]
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    /// The broken rules so far.
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }

    /// Every `DbgPrint` line and ETW event, prefixed with its thread.
    #[must_use]
    pub fn log(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// Appends a line to the log (tagged with the calling thread).
    pub fn log_line(&self, line: &str) {
        if self.echo {
            eprintln!("[{}] {line}", thread_label());
        }
        lock(&self.log).push(format!("[{}] {line}", thread_label()));
    }

    /// Outstanding pool blocks.
    #[must_use]
    pub fn pool_outstanding(&self) -> Vec<(usize, Block)> {
        lock(&self.pool).iter().map(|(a, b)| (*a, *b)).collect()
    }

    /// Live device objects.
    #[must_use]
    pub fn devices(&self) -> Vec<(usize, DeviceRec)> {
        lock(&self.devices)
            .iter()
            .map(|(a, d)| (*a, d.clone()))
            .collect()
    }

    /// Device objects deleted so far.
    #[must_use]
    pub fn deleted_devices(&self) -> Vec<DeviceRec> {
        lock(&self.deleted_devices).clone()
    }

    /// Open kernel handles.
    #[must_use]
    pub fn open_handles(&self) -> usize {
        lock(&self.handles).len()
    }

    /// Registered ETW providers.
    #[must_use]
    pub fn etw_registrations(&self) -> usize {
        lock(&self.etw).len()
    }

    /// Arms fault injection for the calling thread: its `fail_at`-th
    /// failable call (1-based) fails; `None` only counts.
    pub fn arm_faults(&self, fail_at: Option<usize>, delay: Duration) {
        *lock(&self.faults) = Faults {
            armed: true,
            fail_at,
            seen: Vec::new(),
            delay,
            thread: token(),
        };
    }

    /// Disarms fault injection; returns the failable calls seen.
    pub fn disarm_faults(&self) -> Vec<&'static str> {
        let mut f = lock(&self.faults);
        f.armed = false;
        std::mem::take(&mut f.seen)
    }

    /// Whether this failable call must fail (counts it when armed; rule K30).
    pub fn inject(&self, api: &'static str) -> bool {
        let mut f = lock(&self.faults);
        if !f.armed || f.thread != token() {
            return false;
        }
        f.seen.push(api);
        let fail = f.fail_at == Some(f.seen.len());
        let delay = f.delay;
        drop(f);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        fail
    }

    /// Whether this allocation fails because the pool is "exhausted"
    /// ([`Kernel::pool_fail_one_in`], drawn per thread; rule K30).
    fn pool_exhausted(&self) -> bool {
        let n = self.pool_fail_one_in.load(Ordering::Relaxed);
        if n == 0 {
            return false;
        }
        let fail = POOL_RNG.with(|r| {
            let mut x = r.get();
            if x == 0 {
                x = token().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r.set(x);
            x % n == 0
        });
        if fail {
            self.pool_failed.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }

    fn event(&self, addr: usize) -> Option<Arc<EventState>> {
        lock(&self.events).get(&addr).cloned()
    }
}

/// Hasher of the host's integer-keyed tables (pool addresses, context
/// values): one multiplication and a fold instead of SipHash — the keys come
/// from the host and the image, not from an adversary, and these tables are
/// on every flow's path.
#[derive(Clone, Copy, Debug, Default)]
pub struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let x = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

/// A map keyed by integers, hashed with [`IntHasher`].
pub type IntMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;

/// A set of integers, hashed with [`IntHasher`].
pub type IntSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<IntHasher>>;

/// Locks, tolerating poison (a panicking scenario thread must not hide the
/// violations the others recorded).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A zeroed host block of exactly `size` bytes (16-aligned).
#[must_use]
pub fn host_alloc(size: usize) -> usize {
    let layout = Layout::from_size_align(size.max(1), 16).expect("layout");
    // SAFETY: non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!p.is_null(), "out of memory");
    p as usize
}

/// Frees a block from [`host_alloc`] of the same `size`.
pub fn host_free(addr: usize, size: usize) {
    let layout = Layout::from_size_align(size.max(1), 16).expect("layout");
    // SAFETY: allocated by host_alloc with this layout, freed once.
    unsafe { std::alloc::dealloc(addr as *mut u8, layout) };
}

// ---------------------------------------------------------------------------
// Debug output
// ---------------------------------------------------------------------------

unsafe fn c_string(p: *const u8) -> String {
    if p.is_null() {
        return "(null)".into();
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let s = unsafe { std::ffi::CStr::from_ptr(p.cast()) };
    s.to_string_lossy().into_owned()
}

unsafe fn wide_string(p: *const u16) -> String {
    if p.is_null() {
        return "(null)".into();
    }
    let mut out = Vec::new();
    for i in 0..4096 {
        // SAFETY: the caller passes a NUL-terminated UTF-16 string.
        let c = unsafe { p.wrapping_add(i).read() };
        if c == 0 {
            break;
        }
        out.push(c);
    }
    String::from_utf16_lossy(&out)
}

/// Reads a `UNICODE_STRING` (Length, MaximumLength, Buffer).
///
/// # Safety
/// `p` is null or a valid `UNICODE_STRING` whose buffer holds `Length` bytes.
pub unsafe fn unicode_string(p: *const u8) -> Option<(String, u16, u16)> {
    if p.is_null() {
        return None;
    }
    // SAFETY: contract.
    let length = unsafe { p.cast::<u16>().read() };
    // SAFETY: contract.
    let maximum = unsafe { p.wrapping_add(2).cast::<u16>().read() };
    // SAFETY: contract (Buffer at offset 8 on x64).
    let buffer = unsafe { p.wrapping_add(8).cast::<*const u16>().read() };
    if buffer.is_null() || length == 0 {
        return Some((String::new(), length, maximum));
    }
    // SAFETY: contract: Length bytes at Buffer.
    let chars = unsafe { std::slice::from_raw_parts(buffer, usize::from(length / 2)) };
    Some((String::from_utf16_lossy(chars), length, maximum))
}

/// A small `printf` for `DbgPrint`: `%s %S %ws %c %d %i %u %x %X %p %%`
/// with `l`/`ll`/`I64`/`z` size prefixes, flags and widths (ignored).
fn format(fmt: &str, args: &[u64]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut next = args.iter().copied();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        while it
            .peek()
            .is_some_and(|c| "-+ #0123456789.lhzI64".contains(*c))
        {
            it.next();
        }
        let arg = || next.clone().next().unwrap_or(0);
        let value = arg();
        match it.next() {
            Some('%') => {
                out.push('%');
                continue;
            }
            // SAFETY: the driver passed a string for %s.
            Some('s') => out.push_str(&unsafe { c_string(value as *const u8) }),
            // SAFETY: the driver passed a wide string for %S / %ws.
            Some('S' | 'w') => out.push_str(&unsafe { wide_string(value as *const u16) }),
            Some('c') => out.push(char::from(u8::try_from(value & 0xFF).unwrap_or(b'?'))),
            Some('d' | 'i') => out.push_str(&value.cast_signed().to_string()),
            Some('u') => out.push_str(&value.to_string()),
            Some('x' | 'p') => {
                let _ = write!(out, "{value:x}");
            }
            Some('X') => {
                let _ = write!(out, "{value:X}");
            }
            Some(other) => {
                let _ = write!(out, "%{other}");
            }
            None => break,
        }
        next.next();
    }
    out
}

/// `DbgPrint` (variadic: win64 passes the extra arguments like integer
/// ones, so seven `u64` parameters read them). Any IRQL.
#[allow(clippy::too_many_arguments, clippy::similar_names)]
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn dbg_print(
    fmt: *const u8,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    a6: u64,
    a7: u64,
) -> u32 {
    let w = enter_api("DbgPrint", HIGH_LEVEL);
    // SAFETY: DbgPrint's format is a NUL-terminated string.
    let f = unsafe { c_string(fmt) };
    let text = format(&f, &[a1, a2, a3, a4, a5, a6, a7]);
    for line in text.lines() {
        if w.kernel.echo {
            eprintln!("[{}] {line}", thread_label());
        }
        LINES.with(|l| l.borrow_mut().push(line.to_string()));
        lock(&w.kernel.log).push(format!("[{}] {line}", thread_label()));
    }
    0
}

/// `KeBugCheckEx`: never returns. The host prints what it knows and aborts
/// the process (a bugcheck is the end of the machine).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_bug_check_ex(code: u32, p1: u64, p2: u64, p3: u64, p4: u64) -> ! {
    let w = world();
    eprintln!(
        "KeBugCheckEx({code:#x}, {p1:#x}, {p2:#x}, {p3:#x}, {p4:#x}) on thread {}",
        thread_label()
    );
    eprintln!("seed {:#x}; last DbgPrint lines:", w.seed);
    for line in w.kernel.log().iter().rev().take(30).rev() {
        eprintln!("  {line}");
    }
    for v in w.kernel.violations() {
        eprintln!("  violation: {v}");
    }
    std::process::abort();
}

// ---------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------

/// `POOL_FLAG_UNINITIALIZED`.
pub const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
/// `POOL_FLAG_NON_PAGED`.
pub const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_NON_PAGED_EXECUTE`.
pub const POOL_FLAG_NON_PAGED_EXECUTE: u64 = 0x80;
/// `POOL_FLAG_PAGED`.
pub const POOL_FLAG_PAGED: u64 = 0x100;

/// `ExAllocatePool2(Flags, NumberOfBytes, Tag)`: exactly one pool type
/// flag; paged pool only below `DISPATCH_LEVEL`; a non-zero tag. Zeroed
/// unless `POOL_FLAG_UNINITIALIZED`. Failable (returns NULL).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ex_allocate_pool2(flags: u64, size: usize, tag: u32) -> *mut c_void {
    let w = enter_api("ExAllocatePool2", DISPATCH_LEVEL);
    // Rule K29
    let types = [
        POOL_FLAG_NON_PAGED,
        POOL_FLAG_NON_PAGED_EXECUTE,
        POOL_FLAG_PAGED,
    ]
    .iter()
    .filter(|f| flags & **f != 0)
    .count();
    if types != 1 {
        w.kernel.violation(format!(
            "ExAllocatePool2 flags {flags:#x}: exactly one pool type flag is required"
        ));
    }
    if flags & POOL_FLAG_PAGED != 0 && irql() > APC_LEVEL {
        w.kernel
            .violation("ExAllocatePool2(POOL_FLAG_PAGED) above APC_LEVEL".into());
    }
    if flags & POOL_FLAG_NON_PAGED_EXECUTE != 0 {
        w.kernel
            .violation("ExAllocatePool2(POOL_FLAG_NON_PAGED_EXECUTE): executable pool".into());
    }
    if tag == 0 {
        w.kernel.violation("ExAllocatePool2 with pool tag 0".into());
    }
    if w.kernel.inject("ExAllocatePool2") || w.kernel.pool_exhausted() {
        return std::ptr::null_mut();
    }
    let layout = Layout::from_size_align(size.max(1), 16).expect("layout");
    let p = if flags & POOL_FLAG_UNINITIALIZED != 0 {
        // SAFETY: non-zero size.
        unsafe { std::alloc::alloc(layout) }
    } else {
        // SAFETY: non-zero size.
        unsafe { std::alloc::alloc_zeroed(layout) }
    };
    if p.is_null() {
        return p.cast();
    }
    lock(&w.kernel.pool).insert(p as usize, Block { size, tag, flags });
    w.kernel.allocations.fetch_add(1, Ordering::Relaxed);
    p.cast()
}

fn free_pool(api: &str, p: *mut c_void, tag: Option<u32>) {
    let w = enter_api(api, DISPATCH_LEVEL);
    // Rule K28: an outstanding block, freed once, with its tag.
    let Some(block) = lock(&w.kernel.pool).remove(&(p as usize)) else {
        w.kernel.violation(format!(
            "{api}({p:p}): not an outstanding pool block (double free or foreign pointer)"
        ));
        return;
    };
    if let Some(tag) = tag
        && tag != block.tag
    {
        w.kernel.violation(format!(
            "{api}({p:p}): tag {tag:#x} but allocated with {:#x}",
            block.tag
        ));
    }
    w.kernel.frees.fetch_add(1, Ordering::Relaxed);
    let layout = Layout::from_size_align(block.size.max(1), 16).expect("layout");
    // SAFETY: allocated by ex_allocate_pool2 with this layout; removed from
    // the ledger above, so freed once.
    unsafe { std::alloc::dealloc(p.cast(), layout) };
}

/// `ExFreePoolWithTag(P, Tag)`: an outstanding block, with its tag.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ex_free_pool_with_tag(p: *mut c_void, tag: u32) {
    free_pool("ExFreePoolWithTag", p, Some(tag));
}

/// `ExFreePool(P)`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ex_free_pool(p: *mut c_void) {
    free_pool("ExFreePool", p, None);
}

// ---------------------------------------------------------------------------
// Spin locks
// ---------------------------------------------------------------------------

fn lock_word(
    w: &World,
    api: &str,
    lock: *mut u64,
) -> Option<&'static std::sync::atomic::AtomicU64> {
    // Rule K7
    if lock.is_null() || !(lock as usize).is_multiple_of(8) {
        w.kernel
            .violation(format!("{api}({lock:p}): not an aligned KSPIN_LOCK"));
        return None;
    }
    // SAFETY: an aligned KSPIN_LOCK in the driver's memory (static data or
    // pool), which lives as long as the driver uses it; all accesses to it
    // go through these models, atomically.
    Some(unsafe { &*lock.cast::<std::sync::atomic::AtomicU64>() })
}

fn acquire(w: &World, api: &str, lock: *mut u64, old_irql: u8) {
    let Some(word) = lock_word(w, api, lock) else {
        return;
    };
    let me = token();
    // Rule K4
    if word.load(Ordering::Relaxed) == me {
        w.kernel.violation(format!(
            "{api}({lock:p}): recursive acquisition (deadlock on a real machine)"
        ));
        return;
    }
    let mut spins = 0u32;
    while word
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    w.kernel.lock_acquisitions.fetch_add(1, Ordering::Relaxed);
    HELD.with(|h| {
        h.borrow_mut().push(Held {
            lock: lock as usize,
            since: Instant::now(),
            old_irql,
        });
    });
}

/// Releases `lock` for its owner; returns the IRQL saved when it was
/// acquired (`None` when the release itself broke a rule).
fn release(w: &World, api: &str, lock: *mut u64) -> Option<u8> {
    let word = lock_word(w, api, lock)?;
    let me = token();
    let owner = word.load(Ordering::Relaxed);
    // Rule K3
    if owner != me {
        w.kernel.violation(format!(
            "{api}({lock:p}): released by a thread that does not hold it (owner {owner})"
        ));
        return None;
    }
    let held = HELD.with(|h| {
        let mut h = h.borrow_mut();
        h.iter()
            .rposition(|x| x.lock == lock as usize)
            .map(|i| h.remove(i))
    });
    let saved = held.as_ref().map(|h| h.old_irql);
    if let Some(held) = held {
        let ns = u64::try_from(held.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        w.kernel.lock_max_ns.fetch_max(ns, Ordering::Relaxed);
        if let Some(holds) = w
            .kernel
            .lock_holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            holds.push(ns);
        }
    }
    word.store(0, Ordering::Release);
    saved
}

/// `KeAcquireSpinLockRaiseToDpc(SpinLock)`: IRQL ≤ `DISPATCH_LEVEL`;
/// raises to `DISPATCH_LEVEL` and returns the previous IRQL (rule K2).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_acquire_spin_lock_raise_to_dpc(lock: *mut u64) -> u8 {
    let w = enter_api("KeAcquireSpinLockRaiseToDpc", DISPATCH_LEVEL);
    let old = irql();
    acquire(&w, "KeAcquireSpinLockRaiseToDpc", lock, old);
    set_irql(DISPATCH_LEVEL);
    old
}

/// `KeReleaseSpinLock(SpinLock, NewIrql)`: at `DISPATCH_LEVEL`, by the
/// owner; lowers to `NewIrql`, which must be the IRQL the acquisition
/// returned ("NewIrql: the IRQL value saved from the preceding call to
/// KeAcquireSpinLock[RaiseToDpc]", KeReleaseSpinLock reference; rule K2).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_release_spin_lock(lock: *mut u64, new_irql: u8) {
    let w = enter_api("KeReleaseSpinLock", DISPATCH_LEVEL);
    if irql() != DISPATCH_LEVEL {
        w.kernel.violation(format!(
            "KeReleaseSpinLock at IRQL {} (must be DISPATCH_LEVEL)",
            irql()
        ));
    }
    if new_irql > DISPATCH_LEVEL {
        w.kernel
            .violation(format!("KeReleaseSpinLock to IRQL {new_irql}"));
    }
    if let Some(saved) = release(&w, "KeReleaseSpinLock", lock)
        && saved != new_irql
    {
        w.kernel.violation(format!(
            "KeReleaseSpinLock({lock:p}, {new_irql}): the acquisition saved IRQL {saved}"
        ));
    }
    set_irql(new_irql);
}

/// `KeAcquireSpinLockAtDpcLevel(SpinLock)`: at `DISPATCH_LEVEL`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_acquire_spin_lock_at_dpc_level(lock: *mut u64) {
    let w = enter_api("KeAcquireSpinLockAtDpcLevel", DISPATCH_LEVEL);
    if irql() != DISPATCH_LEVEL {
        w.kernel
            .violation(format!("KeAcquireSpinLockAtDpcLevel at IRQL {}", irql()));
    }
    acquire(&w, "KeAcquireSpinLockAtDpcLevel", lock, DISPATCH_LEVEL);
}

/// `KeReleaseSpinLockFromDpcLevel(SpinLock)`: at `DISPATCH_LEVEL`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_release_spin_lock_from_dpc_level(lock: *mut u64) {
    let w = enter_api("KeReleaseSpinLockFromDpcLevel", DISPATCH_LEVEL);
    if irql() != DISPATCH_LEVEL {
        w.kernel
            .violation(format!("KeReleaseSpinLockFromDpcLevel at IRQL {}", irql()));
    }
    release(&w, "KeReleaseSpinLockFromDpcLevel", lock);
}

/// `KeAcquireInStackQueuedSpinLock(SpinLock, LockHandle)`: IRQL ≤
/// `DISPATCH_LEVEL`. `KLOCK_QUEUE_HANDLE`: `LockQueue.Lock` at 8,
/// `OldIrql` at 16 (rule K8).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_acquire_in_stack_queued_spin_lock(lock: *mut u64, handle: *mut u8) {
    let w = enter_api("KeAcquireInStackQueuedSpinLock", DISPATCH_LEVEL);
    let old = irql();
    acquire(&w, "KeAcquireInStackQueuedSpinLock", lock, old);
    set_irql(DISPATCH_LEVEL);
    // SAFETY: the driver's KLOCK_QUEUE_HANDLE (24 bytes, on its stack).
    unsafe { handle.wrapping_add(8).cast::<*mut u64>().write(lock) };
    // SAFETY: as above.
    unsafe { handle.wrapping_add(16).write(old) };
}

/// `KeReleaseInStackQueuedSpinLock(LockHandle)`: the handle's lock, back
/// to the handle's IRQL (rule K8).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_release_in_stack_queued_spin_lock(handle: *mut u8) {
    let w = enter_api("KeReleaseInStackQueuedSpinLock", DISPATCH_LEVEL);
    // SAFETY: the handle the acquire filled in.
    let lock = unsafe { handle.wrapping_add(8).cast::<*mut u64>().read() };
    // SAFETY: as above.
    let old = unsafe { handle.wrapping_add(16).read() };
    release(&w, "KeReleaseInStackQueuedSpinLock", lock);
    set_irql(old);
}

// ---------------------------------------------------------------------------
// Events and waits
// ---------------------------------------------------------------------------

/// `KeInitializeEvent(Event, Type, State)`: any IRQL; the event's storage
/// must be resident.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_initialize_event(event: *mut u8, kind: i32, state: u8) {
    let w = enter_api("KeInitializeEvent", HIGH_LEVEL);
    if event.is_null() {
        w.kernel.violation("KeInitializeEvent(NULL)".into());
        return;
    }
    // DISPATCHER_HEADER: Type (0 notification, 1 synchronization) and
    // SignalState at 4: written as the kernel would.
    // SAFETY: the driver's KEVENT (24 bytes).
    unsafe { event.write(u8::try_from(kind & 1).unwrap_or(0)) };
    // SAFETY: as above.
    unsafe {
        event
            .wrapping_add(4)
            .cast::<i32>()
            .write(i32::from(state != 0));
    };
    let state = Arc::new(EventState {
        signalled: Mutex::new(state != 0),
        cond: Condvar::new(),
        synchronization: kind == 1,
    });
    lock(&w.kernel.events).insert(event as usize, state);
}

/// `KeSetEvent(Event, Increment, Wait)`: IRQL ≤ `DISPATCH_LEVEL` (with
/// `Wait` FALSE); an initialised event. Returns the previous state (rule
/// K34).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_set_event(event: *mut u8, _increment: i32, wait: u8) -> i32 {
    let w = enter_api("KeSetEvent", DISPATCH_LEVEL);
    if wait != 0 {
        w.kernel
            .violation("KeSetEvent(Wait = TRUE): wfpmon never follows it with a wait".into());
    }
    let Some(e) = w.kernel.event(event as usize) else {
        w.kernel
            .violation(format!("KeSetEvent({event:p}): not an initialised event"));
        return 0;
    };
    let mut s = lock(&e.signalled);
    let previous = i32::from(*s);
    *s = true;
    drop(s);
    e.cond.notify_all();
    previous
}

/// `KeResetEvent`/`KeClearEvent`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_clear_event(event: *mut u8) {
    let w = enter_api("KeClearEvent", DISPATCH_LEVEL);
    if let Some(e) = w.kernel.event(event as usize) {
        *lock(&e.signalled) = false;
    } else {
        w.kernel
            .violation(format!("KeClearEvent({event:p}): not an initialised event"));
    }
}

/// `KeWaitForSingleObject(Object, WaitReason, WaitMode, Alertable,
/// Timeout)`: an initialised event; a wait with a non-zero (or no) timeout
/// only at IRQL ≤ `APC_LEVEL`, a zero timeout at ≤ `DISPATCH_LEVEL`.
/// Relative timeouts (negative, 100 ns) are honoured: really, or by moving
/// the simulated clock (rule K35). Returns `STATUS_SUCCESS` or
/// `STATUS_TIMEOUT`. Rule K34.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_wait_for_single_object(
    object: *mut u8,
    _reason: i32,
    _mode: i8,
    alertable: u8,
    timeout: *const i64,
) -> i32 {
    let w = enter_api("KeWaitForSingleObject", DISPATCH_LEVEL);
    let relative = if timeout.is_null() {
        None
    } else {
        // SAFETY: the driver's LARGE_INTEGER.
        Some(unsafe { timeout.read() })
    };
    if relative != Some(0) && irql() > APC_LEVEL {
        w.kernel.violation(format!(
            "KeWaitForSingleObject with a non-zero timeout at IRQL {}",
            irql()
        ));
    }
    if alertable != 0 {
        w.kernel.violation(
            "KeWaitForSingleObject(Alertable = TRUE) in a driver that handles no APCs".into(),
        );
    }
    if relative.is_some_and(|t| t > 0) {
        w.kernel
            .violation("KeWaitForSingleObject with an absolute timeout (not modelled)".into());
    }
    let Some(e) = w.kernel.event(object as usize) else {
        w.kernel.violation(format!(
            "KeWaitForSingleObject({object:p}): not an initialised event"
        ));
        return status::TIMEOUT;
    };
    w.kernel.waits.fetch_add(1, Ordering::Relaxed);
    let total = relative.map(i64::unsigned_abs);
    let satisfied = if w.kernel.simulated_clock {
        wait_simulated(&w, &e, total)
    } else {
        wait_real(&e, total)
    };
    if satisfied {
        status::SUCCESS
    } else {
        status::TIMEOUT
    }
}

const fn consume(e: &EventState, s: &mut bool) -> bool {
    if *s {
        if e.synchronization {
            *s = false;
        }
        true
    } else {
        false
    }
}

fn wait_real(e: &EventState, total_100ns: Option<u64>) -> bool {
    let deadline = total_100ns.map(|t| Instant::now() + clock::as_duration(t));
    let mut s = lock(&e.signalled);
    loop {
        if consume(e, &mut s) {
            return true;
        }
        match deadline {
            None => {
                s = e
                    .cond
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return false;
                }
                s = e
                    .cond
                    .wait_timeout(s, d - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
        }
    }
}

/// One simulated quantum: 100 ms of simulated time per short real nap.
const SIM_QUANTUM_100NS: u64 = 1_000_000;

fn wait_simulated(w: &World, e: &EventState, total_100ns: Option<u64>) -> bool {
    let mut left = total_100ns;
    loop {
        let mut s = lock(&e.signalled);
        if consume(e, &mut s) {
            return true;
        }
        if left == Some(0) {
            return false;
        }
        // Give the other threads (classify, the engine's deferred work) a
        // moment of real time, then move the clock on.
        let (mut s, _) = e
            .cond
            .wait_timeout(s, w.kernel.quantum_nap)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if consume(e, &mut s) {
            return true;
        }
        drop(s);
        let step = left.map_or(SIM_QUANTUM_100NS, |l| l.min(SIM_QUANTUM_100NS));
        clock::advance(step);
        left = left.map(|l| l - step);
    }
}

/// `KeQueryInterruptTimePrecise(QpcTimeStamp)`: any IRQL (rule K35).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ke_query_interrupt_time_precise(qpc: *mut u64) -> u64 {
    let _api = enter_api("KeQueryInterruptTimePrecise", HIGH_LEVEL);
    let now = clock::now_100ns();
    if !qpc.is_null() {
        // SAFETY: the driver's output variable.
        unsafe { qpc.write(now) };
    }
    now
}

// ---------------------------------------------------------------------------
// Device objects, IRPs, security, handles
// ---------------------------------------------------------------------------

/// `IoCreateDevice(DriverObject, DeviceExtensionSize, DeviceName,
/// DeviceType, DeviceCharacteristics, Exclusive, DeviceObject)`:
/// `PASSIVE_LEVEL`; our driver object; a well-formed name not in use.
/// Failable. Rule K31.
#[allow(clippy::too_many_arguments)]
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn io_create_device(
    driver: usize,
    extension: u32,
    name: *const u8,
    device_type: u32,
    characteristics: u32,
    _exclusive: u8,
    out: *mut usize,
) -> i32 {
    let w = enter_api("IoCreateDevice", PASSIVE_LEVEL);
    if driver != w.kernel.driver_object {
        w.kernel.violation(format!(
            "IoCreateDevice: {driver:#x} is not the driver object"
        ));
        return status::INVALID_PARAMETER;
    }
    // SAFETY: IoCreateDevice's DeviceName is NULL or a UNICODE_STRING.
    let parsed = unsafe { unicode_string(name) };
    let name = match parsed {
        Some((text, length, maximum)) => {
            if length % 2 != 0 || length > maximum {
                w.kernel.violation(format!("IoCreateDevice: malformed UNICODE_STRING (Length {length}, MaximumLength {maximum})"));
            }
            text
        }
        None => String::new(),
    };
    if w.kernel.inject("IoCreateDevice") {
        return status::INSUFFICIENT_RESOURCES;
    }
    let mut devices = lock(&w.kernel.devices);
    if !name.is_empty() && devices.values().any(|d| d.name == name) {
        return status::OBJECT_NAME_COLLISION;
    }
    let size = DEVICE_OBJECT_SIZE + extension as usize;
    let dev = host_alloc(size);
    // SAFETY: a fresh zeroed block of `size` bytes; every offset written is
    // inside DEVICE_OBJECT (x64 layout from wdm.h).
    unsafe {
        (dev as *mut i16).write(3); // IO_TYPE_DEVICE
    }
    // SAFETY: as above (Size).
    unsafe { ((dev + 2) as *mut u16).write(u16::try_from(DEVICE_OBJECT_SIZE).unwrap_or(0)) };
    // SAFETY: as above (DriverObject).
    unsafe { ((dev + 8) as *mut usize).write(driver) };
    // SAFETY: as above (Flags).
    unsafe { ((dev + DEVICE_FLAGS_OFFSET) as *mut u32).write(DO_DEVICE_INITIALIZING) };
    // SAFETY: as above (Characteristics).
    unsafe { ((dev + 0x34) as *mut u32).write(characteristics) };
    // SAFETY: as above (DeviceExtension).
    unsafe {
        ((dev + 0x40) as *mut usize).write(if extension > 0 {
            dev + DEVICE_OBJECT_SIZE
        } else {
            0
        });
    };
    // SAFETY: as above (DeviceType).
    unsafe { ((dev + 0x48) as *mut u32).write(device_type) };
    // Link into DriverObject->DeviceObject (NextDevice at 0x10).
    // SAFETY: our driver object block.
    let first = unsafe { ((driver + DRIVER_DEVICE_OBJECT_OFFSET) as *const usize).read() };
    // SAFETY: the new device's NextDevice.
    unsafe { ((dev + 0x10) as *mut usize).write(first) };
    // SAFETY: our driver object block.
    unsafe { ((driver + DRIVER_DEVICE_OBJECT_OFFSET) as *mut usize).write(dev) };
    devices.insert(
        dev,
        DeviceRec {
            name,
            device_type,
            characteristics,
            security: Vec::new(),
            size,
        },
    );
    drop(devices);
    // SAFETY: the driver's output variable.
    unsafe { out.write(dev) };
    status::SUCCESS
}

/// `IoDeleteDevice(DeviceObject)`: `PASSIVE_LEVEL`; a live device of ours
/// (rule K31), and no callout registered against it may still be
/// registered (rule K32).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn io_delete_device(dev: usize) {
    let w = enter_api("IoDeleteDevice", PASSIVE_LEVEL);
    let Some(rec) = lock(&w.kernel.devices).remove(&dev) else {
        w.kernel.violation(format!(
            "IoDeleteDevice({dev:#x}): not a live device object"
        ));
        return;
    };
    w.io.device_deleted(dev);
    let still = w.engine.callouts_registered_on(dev);
    if still > 0 {
        w.kernel.violation(format!("IoDeleteDevice while {still} callout(s) registered against the device are still registered"));
    }
    // Rule K32, with E14: a callout the engine let go early still has
    // deletions to deliver; the device must outlive every one of them.
    let owed = w.engine.live_contexts();
    if owed > 0 {
        w.kernel.violation(format!(
            "IoDeleteDevice while {owed} flow context(s) still awaited their flowDeleteFn"
        ));
    }
    // Unlink from the driver object's list.
    let mut link = w.kernel.driver_object + DRIVER_DEVICE_OBJECT_OFFSET;
    loop {
        // SAFETY: `link` is the driver object's DeviceObject field or a live
        // device's NextDevice field.
        let next = unsafe { (link as *const usize).read() };
        if next == 0 {
            break;
        }
        if next == dev {
            // SAFETY: the device being deleted is still allocated.
            let after = unsafe { ((dev + 0x10) as *const usize).read() };
            // SAFETY: as above.
            unsafe { (link as *mut usize).write(after) };
            break;
        }
        link = next + 0x10;
    }
    let size = rec.size;
    lock(&w.kernel.deleted_devices).push(rec);
    host_free(dev, size);
}

/// Validates a self-relative security descriptor (`SECURITY_DESCRIPTOR_
/// RELATIVE`: Revision 1, `SE_SELF_RELATIVE` set) and returns its bytes
/// (header and the DACL it points at).
fn read_descriptor(w: &World, api: &str, sd: *const u8) -> Option<Vec<u8>> {
    if sd.is_null() {
        w.kernel
            .violation(format!("{api}: NULL security descriptor"));
        return None;
    }
    // SAFETY: the driver's descriptor: at least the 20-byte header.
    let header = unsafe { std::slice::from_raw_parts(sd, 20) };
    let control = u16::from_le_bytes([header[2], header[3]]);
    if header[0] != 1 || control & 0x8000 == 0 {
        w.kernel.violation(format!(
            "{api}: not a self-relative SECURITY_DESCRIPTOR (revision {}, control {control:#x})",
            header[0]
        ));
        return None;
    }
    let dacl = u32::from_le_bytes([header[16], header[17], header[18], header[19]]) as usize;
    if dacl == 0 {
        return Some(header.to_vec());
    }
    // SAFETY: the ACL header (8 bytes) at the DACL offset of the descriptor.
    let acl = unsafe { std::slice::from_raw_parts(sd.wrapping_add(dacl), 8) };
    let acl_size = usize::from(u16::from_le_bytes([acl[2], acl[3]]));
    // SAFETY: the descriptor holds the whole ACL.
    Some(unsafe { std::slice::from_raw_parts(sd, dacl + acl_size) }.to_vec())
}

/// `ObSetSecurityObjectByPointer(Object, SecurityInformation,
/// SecurityDescriptor)`: `PASSIVE_LEVEL`; a live object; a valid
/// self-relative descriptor. Failable.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ob_set_security_object_by_pointer(
    object: usize,
    _info: u32,
    sd: *const u8,
) -> i32 {
    let w = enter_api("ObSetSecurityObjectByPointer", PASSIVE_LEVEL);
    let Some(bytes) = read_descriptor(&w, "ObSetSecurityObjectByPointer", sd) else {
        return status::INVALID_PARAMETER;
    };
    if w.kernel.inject("ObSetSecurityObjectByPointer") {
        return status::INSUFFICIENT_RESOURCES;
    }
    let mut devices = lock(&w.kernel.devices);
    let Some(dev) = devices.get_mut(&object) else {
        w.kernel.violation(format!(
            "ObSetSecurityObjectByPointer({object:#x}): not a live object"
        ));
        return status::INVALID_PARAMETER;
    };
    dev.security.push(bytes);
    status::SUCCESS
}

/// `ObOpenObjectByPointer(Object, HandleAttributes, PassedAccessState,
/// DesiredAccess, ObjectType, AccessMode, Handle)`: `PASSIVE_LEVEL`; a live
/// object. Failable. The handle must be closed (`ZwClose`). Rule K33.
#[allow(clippy::too_many_arguments)]
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn ob_open_object_by_pointer(
    object: usize,
    _attributes: u32,
    _access_state: usize,
    _access: u32,
    _object_type: usize,
    _mode: i8,
    handle: *mut u64,
) -> i32 {
    let w = enter_api("ObOpenObjectByPointer", PASSIVE_LEVEL);
    if !lock(&w.kernel.devices).contains_key(&object) {
        w.kernel.violation(format!(
            "ObOpenObjectByPointer({object:#x}): not a live object"
        ));
        return status::INVALID_PARAMETER;
    }
    if w.kernel.inject("ObOpenObjectByPointer") {
        return status::INSUFFICIENT_RESOURCES;
    }
    let h = w.kernel.next_handle.fetch_add(4, Ordering::Relaxed);
    lock(&w.kernel.handles).insert(h, object);
    // SAFETY: the driver's output variable.
    unsafe { handle.write(h) };
    status::SUCCESS
}

/// `ZwSetSecurityObject(Handle, SecurityInformation, SecurityDescriptor)`:
/// `PASSIVE_LEVEL`; an open handle; a valid descriptor. Failable. Rule K33.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn zw_set_security_object(handle: u64, _info: u32, sd: *const u8) -> i32 {
    let w = enter_api("ZwSetSecurityObject", PASSIVE_LEVEL);
    let Some(object) = lock(&w.kernel.handles).get(&handle).copied() else {
        w.kernel.violation(format!(
            "ZwSetSecurityObject({handle:#x}): not an open handle"
        ));
        return status::INVALID_HANDLE;
    };
    let Some(bytes) = read_descriptor(&w, "ZwSetSecurityObject", sd) else {
        return status::INVALID_PARAMETER;
    };
    if w.kernel.inject("ZwSetSecurityObject") {
        return status::ACCESS_DENIED;
    }
    if let Some(dev) = lock(&w.kernel.devices).get_mut(&object) {
        dev.security.push(bytes);
    }
    status::SUCCESS
}

/// `ZwClose(Handle)`: `PASSIVE_LEVEL`; an open handle, closed once (rule
/// K33).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn zw_close(handle: u64) -> i32 {
    let w = enter_api("ZwClose", PASSIVE_LEVEL);
    if lock(&w.kernel.handles).remove(&handle).is_none() {
        w.kernel
            .violation(format!("ZwClose({handle:#x}): not an open handle"));
        return status::INVALID_HANDLE;
    }
    status::SUCCESS
}

/// `IofCompleteRequest(Irp, PriorityBoost)`: IRQL ≤ `DISPATCH_LEVEL`; an
/// IRP sent to the driver and not yet completed (the rules and the
/// I/O manager's side are in [`crate::io`]).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn iof_complete_request(irp: usize, _boost: i8) {
    let api = enter_api("IofCompleteRequest", DISPATCH_LEVEL);
    let w: &World = &api;
    crate::io::complete_request(w, irp);
}

// ---------------------------------------------------------------------------
// C runtime
// ---------------------------------------------------------------------------

/// `memcpy`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub const unsafe extern "win64" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: memcpy's contract (non-overlapping, valid for n bytes).
    unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
    dst
}

/// `memmove`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub const unsafe extern "win64" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: memmove's contract (valid for n bytes, may overlap).
    unsafe { std::ptr::copy(src, dst, n) };
    dst
}

/// `memset`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub const unsafe extern "win64" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let byte = c as u8;
    // SAFETY: memset's contract (valid for n bytes).
    unsafe { std::ptr::write_bytes(dst, byte, n) };
    dst
}

/// `memcmp`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
#[allow(clippy::many_single_char_names)]
pub unsafe extern "win64" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: memcmp's contract (both valid for n bytes).
        let x = unsafe { a.wrapping_add(i).read() };
        // SAFETY: as above.
        let y = unsafe { b.wrapping_add(i).read() };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}
