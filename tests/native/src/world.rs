//! One loaded image with its kernel and engine ("a boot of the driver"),
//! and the host-side actions: `DriverEntry`, flows and their classifies,
//! IRPs to the control device, Unload — each with the checks the I/O
//! manager and the engine would imply.
//!
//! The import models are free functions (the image calls them through its
//! import table), so they find their world through a process-wide pointer:
//! one world exists at a time per process ([`World::create`] serialises).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fwpsk_sys as fwps;
use wfpmon_core::catalog::{AddressFamily, CALLOUTS, data_callout_for, runtime_layer};
use wfpmon_core::protocol::{self, FlowEntry, FlowListHeader, Stats};

use crate::engine::{Callout, ClassifyFn, Engine, Flow, Mode};
use crate::kernel::{self, Kernel, PASSIVE_LEVEL, call_into_image, host_free, lock};
use crate::pe::Image;

/// One thread's "executing driver code" flag, alone on its cache line.
#[repr(align(128))]
pub struct Slot(AtomicU32);

impl std::ops::Deref for Slot {
    type Target = AtomicU32;
    fn deref(&self) -> &AtomicU32 {
        &self.0
    }
}

thread_local! {
    static SLOT: std::cell::RefCell<Option<(usize, Arc<Slot>)>> = const { std::cell::RefCell::new(None) };
}

static CURRENT: AtomicPtr<World> = AtomicPtr::new(std::ptr::null_mut());
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_WORLD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The current world (for the import models).
///
/// # Panics
/// Aborts the process when no world exists: the image runs only inside one.
pub fn world() -> &'static World {
    let p = CURRENT.load(Ordering::Acquire);
    if p.is_null() {
        eprintln!("wfpmon-native-host: an import model ran with no world (host bug)");
        std::process::abort();
    }
    // SAFETY: set by World::create from a live Box and cleared (before the
    // box is freed) by WorldGuard::drop, after every thread that could run
    // image code has been joined.
    unsafe { &*p }
}

/// Configuration of one world.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Seed of the scenario (printed on failure).
    pub seed: u64,
    /// Engine behaviour.
    pub mode: Mode,
    /// Waits advance a simulated clock instead of sleeping.
    pub simulated_clock: bool,
    /// An ETW session enabling the driver's provider (level, keywords);
    /// `None`: nobody listens (events are then not even written).
    pub etw_session: Option<(u8, u64)>,
    /// Flows the host's own tables (the engine's flows and contexts, the
    /// pool ledger) are sized for up front, so that runs with many flows do
    /// not spend time growing them (0: grow as needed).
    pub capacity: usize,
}

impl Config {
    /// Default engine, real clock, an ETW session listening to everything
    /// (verbose, all keywords).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            mode: Mode::default(),
            simulated_clock: false,
            etw_session: Some((5, u64::MAX)),
            capacity: 0,
        }
    }
}

/// What the driver must have counted: traffic the engine delivered to a
/// data classify together with the driver's context.
#[derive(Default)]
pub struct Expected {
    /// Payload bytes inbound.
    pub bytes_in: AtomicU64,
    /// Payload bytes outbound.
    pub bytes_out: AtomicU64,
    /// Packets inbound.
    pub packets_in: AtomicU64,
    /// Packets outbound.
    pub packets_out: AtomicU64,
}

/// One boot of the driver.
pub struct World {
    /// The mapped image.
    pub image: Image,
    /// The scenario's seed.
    pub seed: u64,
    /// Unique per world in this process.
    id: usize,
    /// Kernel models' state.
    pub kernel: Kernel,
    /// The fake filter engine.
    pub engine: Engine,
    /// Per-thread "executing driver code" flags (see [`World::in_image`]).
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Whether data classifies add to [`World::expected`] (benchmarks
    /// switch it off to keep the path free of shared counters).
    pub account: AtomicBool,
    /// Set once the image is unloaded (Unload returned, or DriverEntry
    /// failed): nothing may run it afterwards.
    pub unloaded: AtomicBool,
    /// Traffic the driver must have counted.
    pub expected: Expected,
    /// Set while the unload routine runs.
    pub unloading: AtomicBool,
    /// Classifies that entered the driver while it was unloading.
    pub classified_during_unload: AtomicU64,
    /// Flows that ended while it was unloading.
    pub ended_during_unload: AtomicU64,
    stop: AtomicBool,
    /// The I/O manager's side of requests to the control device.
    pub io: crate::io::Io,
}

/// Counts of what a run exercised (summed over repetitions), so that a
/// test can show — and require — that its interleavings happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Runs summed.
    pub runs: u64,
    /// Flow contexts associated.
    pub contexts: u64,
    /// `FwpsFlowRemoveContext0` answers `STATUS_PENDING`.
    pub pending_removals: u64,
    /// Unregister answers `STATUS_DEVICE_BUSY`.
    pub busy_unregisters: u64,
    /// Classifies the engine refused (callout unregistered or going).
    pub refused_classifies: u64,
    /// Classifies that entered the driver while its unload routine ran.
    pub classifies_during_unload: u64,
    /// Flows that ended on their own while the unload routine ran.
    pub flows_ended_during_unload: u64,
    /// Contexts of flows that ended while a classify of them was running.
    pub ended_while_classifying: u64,
}

impl Summary {
    /// Field-wise sum.
    #[must_use]
    pub const fn plus(self, o: Self) -> Self {
        Self {
            runs: self.runs + o.runs,
            contexts: self.contexts + o.contexts,
            pending_removals: self.pending_removals + o.pending_removals,
            busy_unregisters: self.busy_unregisters + o.busy_unregisters,
            refused_classifies: self.refused_classifies + o.refused_classifies,
            classifies_during_unload: self.classifies_during_unload + o.classifies_during_unload,
            flows_ended_during_unload: self.flows_ended_during_unload + o.flows_ended_during_unload,
            ended_while_classifying: self.ended_while_classifying + o.ended_while_classifying,
        }
    }
}

/// Owns the current world; tears it down (joining its engine thread,
/// unmapping the image) when dropped.
pub struct WorldGuard {
    world: &'static World,
    worker: Option<std::thread::JoinHandle<()>>,
    _serial: MutexGuard<'static, ()>,
}

impl std::ops::Deref for WorldGuard {
    type Target = World;
    fn deref(&self) -> &World {
        self.world
    }
}

impl Drop for WorldGuard {
    fn drop(&mut self) {
        self.world.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.worker.take() {
            let _ = t.join();
        }
        let p = CURRENT.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: `p` came from Box::into_raw in World::create; every
            // thread that could use it (scenario threads are scoped and
            // joined before the guard drops; the engine thread was joined
            // above) is gone, and CURRENT no longer hands it out.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        host_free(self.kernel.driver_object, kernel::DRIVER_OBJECT_SIZE);
    }
}

/// A flow of the host: the engine's flow and what it is.
#[derive(Clone)]
pub struct HostFlow {
    /// The engine's flow.
    pub flow: Arc<Flow>,
    /// IPv6?
    pub v6: bool,
    /// TCP (stream layer) or UDP (datagram-data layer).
    pub tcp: bool,
    /// Inbound (remote peer connected)?
    pub inbound: bool,
    /// Ports.
    pub local_port: u16,
    /// Remote port.
    pub remote_port: u16,
    /// Owning process (0 when the engine does not supply it).
    pub pid: u64,
    /// `processId` as the engine supplies it at flow establishment
    /// (`None`: not supplied).
    pub process_id: Option<u64>,
    /// The owning process's image path as the engine supplies it in
    /// `processPath` (UTF-16, without the terminating NUL the engine's
    /// blob carries); `None`: not supplied.
    pub process_path: Option<Arc<[u16]>>,
}

impl HostFlow {
    /// The address family.
    #[must_use]
    pub const fn family(&self) -> AddressFamily {
        if self.v6 {
            AddressFamily::V6
        } else {
            AddressFamily::V4
        }
    }

    /// Catalog index of the data callout counting it.
    #[must_use]
    pub const fn data_callout(&self) -> usize {
        data_callout_for(self.family(), if self.tcp { 6 } else { 17 })
    }

    /// Catalog index of its flow-established callout.
    #[must_use]
    pub const fn established_callout(&self) -> usize {
        if self.v6 { 5 } else { 4 }
    }
}

/// Which filter the engine passes to classify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// `FWP_ACTION_CALLOUT_INSPECTION`: the driver must answer CONTINUE.
    Inspection,
    /// `FWP_ACTION_CALLOUT_TERMINATING`: the driver must answer PERMIT.
    Terminating,
}

/// Which code a classify runs: the driver's classifyFn or, for baselines,
/// an empty function or the host-model stand-in through the same engine
/// path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The driver.
    Driver,
    /// [`empty_classify`].
    Empty,
    /// The stand-in ([`crate::standin`]: the driver's kernel and engine
    /// calls without the driver; flow-established classifies only — data
    /// classifies run its empty data classifyFn). It must be installed.
    StandIn,
}

/// A classifyFn that does nothing (benchmark baseline).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub const unsafe extern "win64" fn empty_classify(
    _v: *const fwps::FWPS_INCOMING_VALUES0,
    _m: *const fwps::FWPS_INCOMING_METADATA_VALUES0,
    _l: *mut c_void,
    _c: *const c_void,
    _f: *const fwps::FWPS_FILTER1,
    ctx: u64,
    _o: *mut fwps::FWPS_CLASSIFY_OUT0,
) {
    std::hint::black_box(ctx);
}

/// All-zero value of a C structure of fwpsk-sys.
const fn zeroed<T>() -> T {
    // SAFETY: only used for fwpsk-sys `repr(C)` structures made of integers,
    // raw pointers, unions of those and `Option<fn>`: all-zero is a valid
    // value of each (null / None / 0).
    unsafe { std::mem::zeroed() }
}

const UNTOUCHED_ACTION: u32 = 0xAAAA;

const fn value(t: fwps::FWP_DATA_TYPE, v: fwps::FWP_VALUE0_0) -> fwps::FWPS_INCOMING_VALUE0 {
    let mut x: fwps::FWPS_INCOMING_VALUE0 = zeroed();
    x.value.r#type = t;
    x.value.Anonymous = v;
    x
}

const fn u32_value(v: u32) -> fwps::FWPS_INCOMING_VALUE0 {
    value(fwps::FWP_UINT32, fwps::FWP_VALUE0_0 { uint32: v })
}

/// Outcome of one classify the engine made.
#[derive(Clone, Copy, Debug)]
pub struct Classified {
    /// The flow context the engine passed (0: none).
    pub context: u64,
    /// `classifyOut.actionType` afterwards.
    pub action: u32,
}

impl World {
    /// Loads the image and makes a world current (waits for the previous
    /// world of this process to be dropped).
    ///
    /// # Errors
    /// The loader's error.
    pub fn create(config: Config) -> Result<WorldGuard, String> {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let image = Image::load(&crate::image_path())?;
        let boxed = Box::new(Self {
            image,
            seed: config.seed,
            id: NEXT_WORLD.fetch_add(1, Ordering::Relaxed),
            kernel: Kernel::new(config.simulated_clock, config.etw_session, config.capacity),
            engine: Engine::new(config.mode, config.capacity),
            slots: Mutex::new(Vec::new()),
            account: AtomicBool::new(true),
            unloaded: AtomicBool::new(false),
            expected: Expected::default(),
            unloading: AtomicBool::new(false),
            classified_during_unload: AtomicU64::new(0),
            ended_during_unload: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            io: crate::io::Io::new(),
        });
        if std::env::var_os("WFPMON_NATIVE_PRINT_IMAGE").is_some() {
            println!(
                "image mapped at {:#x} size {:#x}",
                boxed.image.base(),
                boxed.image.size()
            );
        }
        crate::crash::set_image(boxed.image.base(), boxed.image.size());
        let p = Box::into_raw(boxed);
        CURRENT.store(p, Ordering::Release);
        let w = world();
        let worker = config.mode.slow_delete_100ns.map(|_| {
            std::thread::Builder::new()
                .name("engine-deferred".into())
                .spawn(move || {
                    while !w.stop.load(Ordering::SeqCst) {
                        w.engine.run_due(w);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                })
                .expect("engine thread")
        });
        Ok(WorldGuard {
            world: w,
            worker,
            _serial: serial,
        })
    }

    /// Threads executing driver code now.
    #[must_use]
    pub fn in_image(&self) -> usize {
        lock(&self.slots)
            .iter()
            .filter(|s| s.0.load(Ordering::SeqCst) != 0)
            .count()
    }

    /// Sets the calling thread's "executing driver code" flag in this
    /// world (its slot is registered on first use).
    pub fn mark_in_image(&self, inside: bool) {
        SLOT.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_none_or(|(owner, _)| *owner != self.id) {
                let slot = Arc::new(Slot(AtomicU32::new(0)));
                lock(&self.slots).push(Arc::clone(&slot));
                *cell = Some((self.id, slot));
            }
            if let Some((_, slot)) = cell.as_ref() {
                slot.store(u32::from(inside), Ordering::SeqCst);
            }
        });
    }

    const fn driver_word(&self, offset: usize) -> usize {
        // SAFETY: the host-allocated DRIVER_OBJECT (0x150 bytes); offset is
        // one of its pointer fields.
        unsafe { ((self.kernel.driver_object + offset) as *const usize).read() }
    }

    /// Runs `DriverEntry` at `PASSIVE_LEVEL`; afterwards checks what the
    /// I/O manager relies on. On failure the image counts as unloaded and
    /// nothing of the driver may remain.
    pub fn driver_entry(&self) -> i32 {
        let registry: Vec<u16> = "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\wfpmon"
            .encode_utf16()
            .collect();
        let mut path = [0u8; 16];
        let len = u16::try_from(registry.len() * 2).unwrap_or(0);
        path[..2].copy_from_slice(&len.to_le_bytes());
        path[2..4].copy_from_slice(&len.to_le_bytes());
        path[8..].copy_from_slice(&(registry.as_ptr() as u64).to_le_bytes());
        // SAFETY: the image's entry point is DriverEntry (win64).
        let entry: unsafe extern "win64" fn(usize, *const u8) -> i32 =
            unsafe { std::mem::transmute(self.image.entry()) };
        let status = call_into_image(self, "DriverEntry", PASSIVE_LEVEL, || {
            // SAFETY: a valid driver object and registry path, at PASSIVE_LEVEL.
            unsafe { entry(self.kernel.driver_object, path.as_ptr()) }
        });
        if status >= 0 {
            for (dev, _) in self.kernel.devices() {
                let flags = (dev + kernel::DEVICE_FLAGS_OFFSET) as *mut u32;
                // SAFETY: a live device object of this world (Flags field).
                let value = unsafe { flags.read() };
                // SAFETY: as above; the I/O manager clears
                // DO_DEVICE_INITIALIZING when DriverEntry returns.
                unsafe { flags.write(value & !kernel::DO_DEVICE_INITIALIZING) };
            }
            let unload = self.driver_word(kernel::DRIVER_UNLOAD_OFFSET);
            if !self.image.is_code(unload) {
                self.kernel.violation(format!(
                    "DriverEntry succeeded but DriverUnload is {unload:#x}"
                ));
            }
            for major in 0..28 {
                let f = self.driver_word(kernel::MAJOR_FUNCTION_OFFSET + 8 * major);
                if f != 0 && !self.image.is_code(f) {
                    self.kernel.violation(format!(
                        "MajorFunction[{major:#x}] = {f:#x} is not code of the image"
                    ));
                }
            }
        } else {
            self.unloaded.store(true, Ordering::SeqCst);
            self.check_nothing_left(&format!(
                "DriverEntry failed ({:#010x})",
                status.cast_unsigned()
            ));
        }
        status
    }

    /// Runs the unload routine at `PASSIVE_LEVEL`; when it returns, every
    /// callout must be unregistered, no flow context may remain (live or
    /// awaiting its flowDeleteFn), no other thread may be executing driver
    /// code, and every object the driver made must be gone.
    pub fn unload(&self) {
        let routine = self.driver_word(kernel::DRIVER_UNLOAD_OFFSET);
        if !self.image.is_code(routine) {
            self.kernel
                .violation(format!("no unload routine ({routine:#x})"));
            return;
        }
        // SAFETY: DriverUnload of the image (checked to be its code).
        let f: unsafe extern "win64" fn(usize) = unsafe { std::mem::transmute(routine) };
        // The I/O manager sends no request from now on (and lets the
        // dispatch routines running now return first).
        self.io.close_gate();
        self.unloading.store(true, Ordering::SeqCst);
        call_into_image(self, "DriverUnload", PASSIVE_LEVEL, || {
            // SAFETY: our driver object, at PASSIVE_LEVEL, once.
            unsafe { f(self.kernel.driver_object) };
        });
        self.unloaded.store(true, Ordering::SeqCst);
        self.unloading.store(false, Ordering::SeqCst);
        self.check_nothing_left("Unload returned");
    }

    /// Rule K27 (and T3, for the ETW registration).
    fn check_nothing_left(&self, when: &str) {
        let running = self.in_image();
        if running != 0 {
            self.kernel.violation(format!(
                "{when} while {running} other thread(s) were executing driver code"
            ));
        }
        let still = self.engine.still_registered();
        if !still.is_empty() {
            self.kernel.violation(format!(
                "{when} while callouts {still:?} were still registered"
            ));
        }
        let live = self.engine.live_contexts();
        if live != 0 {
            self.kernel.violation(format!(
                "{when} while {live} flow context(s) existed (live or awaiting flowDeleteFn)"
            ));
        }
        // Rule K15
        let irps = self.io.outstanding();
        if irps != 0 {
            self.kernel.violation(format!(
                "{when} while {irps} IRP(s) sent to the driver were still pending (nothing could complete them)"
            ));
        }
        let queued = crate::csq::queued_count(self);
        if queued != 0 {
            self.kernel.violation(format!(
                "{when} while its cancel-safe queue still held {queued} IRP(s)"
            ));
        }
        let devices = self.kernel.devices().len();
        if devices != 0 {
            self.kernel
                .violation(format!("{when} leaving {devices} device object(s)"));
        }
        if self.engine.injection_handles() != 0 {
            self.kernel
                .violation(format!("{when} leaving an injection handle"));
        }
        if self.kernel.open_handles() != 0 {
            self.kernel.violation(format!(
                "{when} leaving {} kernel handle(s) open",
                self.kernel.open_handles()
            ));
        }
        // Rule T3
        if self.kernel.etw_registrations() != 0 {
            self.kernel
                .violation(format!("{when} leaving an ETW provider registered"));
        }
        let pool = self.kernel.pool_outstanding();
        if !pool.is_empty() {
            let tags: Vec<String> = pool
                .iter()
                .take(5)
                .map(|(_, b)| format!("{}:{}B", tag_name(b.tag), b.size))
                .collect();
            self.kernel.violation(format!(
                "{when} leaving {} pool block(s) ({})",
                pool.len(),
                tags.join(", ")
            ));
        }
    }

    /// The checks of a finished run, as one error listing every problem
    /// (with the seed and the last log lines), or `Ok`.
    ///
    /// # Errors
    /// The problems.
    pub fn finish(&self) -> Result<Summary, String> {
        let mut problems = self.kernel.violations();
        if !self.unloaded.load(Ordering::SeqCst) {
            problems.push("the driver was never unloaded".into());
        }
        if self.engine.slow_waiting() != 0 {
            problems.push(format!(
                "{} deferred deletions never ran",
                self.engine.slow_waiting()
            ));
        }
        let associated = self.engine.associated.load(Ordering::SeqCst);
        let deleted = self.engine.deleted.load(Ordering::SeqCst);
        if associated != deleted {
            problems.push(format!(
                "{associated} contexts associated but {deleted} deleted"
            ));
        }
        if problems.is_empty() {
            return Ok(self.summary());
        }
        Err(self.report(&problems))
    }

    /// What happened in this run (which interleavings it exercised).
    #[must_use]
    pub fn summary(&self) -> Summary {
        let e = &self.engine;
        Summary {
            runs: 1,
            contexts: e.associated.load(Ordering::SeqCst),
            pending_removals: e.pending_answers.load(Ordering::SeqCst),
            busy_unregisters: e.busy_answers.load(Ordering::SeqCst),
            refused_classifies: e.refused_classifies.load(Ordering::SeqCst),
            classifies_during_unload: self.classified_during_unload.load(Ordering::SeqCst),
            flows_ended_during_unload: self.ended_during_unload.load(Ordering::SeqCst),
            ended_while_classifying: e.ended_while_classifying.load(Ordering::SeqCst),
        }
    }

    /// A failure report: seed, problems, the last `DbgPrint` lines.
    #[must_use]
    pub fn report(&self, problems: &[String]) -> String {
        let mut problems = problems.to_vec();
        let suppressed = self.kernel.suppressed();
        if suppressed > 0 {
            problems.push(format!(
                "(and {suppressed} more violations of the kinds above)"
            ));
        }
        let log = self.kernel.log();
        let tail = &log[log.len().saturating_sub(40)..];
        format!(
            "seed {:#x} (rerun with WFPMON_NATIVE_SEED={:#x} WFPMON_NATIVE_REPEAT=1)\nproblems:\n  {}\nlast DbgPrint lines:\n  {}",
            self.seed,
            self.seed,
            problems.join("\n  "),
            tail.join(
                "
  "
            )
        )
    }

    // --------------------------------------------------------------- flows

    /// A new flow (not yet classified), of process `4 + n % 1000` whose
    /// image path the engine supplies ([`default_process_path`]).
    pub fn open_flow(&self, v6: bool, tcp: bool, inbound: bool, n: u64) -> HostFlow {
        // The thousand paths are made once and shared (a million flows
        // must not carry a million copies).
        static PATHS: std::sync::OnceLock<Vec<Arc<[u16]>>> = std::sync::OnceLock::new();
        let paths = PATHS.get_or_init(|| {
            (0..1000)
                .map(|i| default_process_path(4 + i).encode_utf16().collect())
                .collect()
        });
        let i = usize::try_from(n % 1000).unwrap_or(0);
        self.open_flow_of(
            v6,
            tcp,
            inbound,
            n,
            Some(4 + n % 1000),
            Some(Arc::clone(&paths[i])),
        )
    }

    /// A new flow of the process `pid` (`None`: the engine supplies no
    /// `processId`) with image path `path` (`None`: no `processPath`).
    pub fn open_flow_of(
        &self,
        v6: bool,
        tcp: bool,
        inbound: bool,
        n: u64,
        pid: Option<u64>,
        path: Option<Arc<[u16]>>,
    ) -> HostFlow {
        let flow = self.engine.open_flow();
        HostFlow {
            flow,
            v6,
            tcp,
            inbound,
            local_port: u16::try_from(1024 + n % 60_000).unwrap_or(1024),
            remote_port: if tcp { 443 } else { 53 },
            pid: pid.unwrap_or(0),
            process_id: pid,
            process_path: path,
        }
    }

    /// The flow-established classify of `f` (the driver associates its
    /// context). `None` when the engine did not call the driver.
    pub fn establish(&self, f: &HostFlow, filter: FilterKind) -> Option<Classified> {
        let index = f.established_callout();
        let callout = self.engine.registered(index)?;
        self.establish_with(&callout, f, filter, Target::Driver)
    }

    /// [`World::establish`] at a given callout.
    pub fn establish_with(
        &self,
        callout: &Callout,
        f: &HostFlow,
        filter: FilterKind,
        target: Target,
    ) -> Option<Classified> {
        let layer = CALLOUTS[f.established_callout()].runtime_layer;
        let mut values = [zeroed::<fwps::FWPS_INCOMING_VALUE0>(); 25];
        let mut local = fwps::FWP_BYTE_ARRAY16 {
            byteArray16: [0; 16],
        };
        let mut remote = fwps::FWP_BYTE_ARRAY16 {
            byteArray16: [0; 16],
        };
        local.byteArray16[15] = 1;
        remote.byteArray16[0] = 0x20;
        remote.byteArray16[1] = 0x01;
        remote.byteArray16[15] = u8::try_from(f.flow.handle & 0xFF).unwrap_or(0);
        let (la, ra) = if f.v6 {
            (
                value(
                    fwps::FWP_BYTE_ARRAY16_TYPE,
                    fwps::FWP_VALUE0_0 {
                        byteArray16: &raw mut local,
                    },
                ),
                value(
                    fwps::FWP_BYTE_ARRAY16_TYPE,
                    fwps::FWP_VALUE0_0 {
                        byteArray16: &raw mut remote,
                    },
                ),
            )
        } else {
            (
                u32_value(0x0A00_0001),
                u32_value(0xC0A8_0000 | u32::try_from(f.flow.handle & 0xFFFF).unwrap_or(0)),
            )
        };
        values[fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_ADDRESS as usize] = la;
        values[fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_ADDRESS as usize] = ra;
        values[fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_LOCAL_PORT as usize] = value(
            fwps::FWP_UINT16,
            fwps::FWP_VALUE0_0 {
                uint16: f.local_port,
            },
        );
        values[fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_REMOTE_PORT as usize] = value(
            fwps::FWP_UINT16,
            fwps::FWP_VALUE0_0 {
                uint16: f.remote_port,
            },
        );
        values[fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_IP_PROTOCOL as usize] = value(
            fwps::FWP_UINT8,
            fwps::FWP_VALUE0_0 {
                uint8: if f.tcp { 6 } else { 17 },
            },
        );
        values[fwps::FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_DIRECTION as usize] = u32_value(
            if f.inbound {
                fwps::FWP_DIRECTION_INBOUND
            } else {
                fwps::FWP_DIRECTION_OUTBOUND
            }
            .cast_unsigned(),
        );
        let mut meta: fwps::FWPS_INCOMING_METADATA_VALUES0 = zeroed();
        meta.currentMetadataValues = fwps::FWPS_METADATA_FIELD_FLOW_HANDLE;
        meta.flowHandle = f.flow.handle;
        if let Some(pid) = f.process_id {
            meta.currentMetadataValues |= fwps::FWPS_METADATA_FIELD_PROCESS_ID;
            meta.processId = pid;
        }
        // processPath: an FWP_BYTE_BLOB of the path's UTF-16LE bytes with
        // its terminating NUL, the engine's memory for the classify call
        // (FWPS_INCOMING_METADATA_VALUES0; "Metadata Fields at Each
        // Filtering Layer": ALE flow established supplies the process id
        // and path).
        let mut path_bytes: Vec<u8> = f.process_path.as_ref().map_or_else(Vec::new, |path| {
            path.iter()
                .chain(std::iter::once(&0))
                .flat_map(|u| u.to_le_bytes())
                .collect()
        });
        let mut blob = fwps::FWP_BYTE_BLOB {
            size: 0,
            data: std::ptr::null_mut(),
        };
        if f.process_path.is_some() {
            blob.size = u32::try_from(path_bytes.len()).unwrap_or(0);
            blob.data = path_bytes.as_mut_ptr();
            meta.currentMetadataValues |= fwps::FWPS_METADATA_FIELD_PROCESS_PATH;
            meta.processPath = &raw mut blob;
        }
        self.run_classify(
            callout,
            &f.flow,
            layer,
            &mut values,
            &meta,
            std::ptr::null_mut(),
            filter,
            target,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn run_classify(
        &self,
        callout: &Callout,
        flow: &Flow,
        layer: u16,
        values: &mut [fwps::FWPS_INCOMING_VALUE0],
        meta: &fwps::FWPS_INCOMING_METADATA_VALUES0,
        layer_data: *mut c_void,
        filter: FilterKind,
        target: Target,
    ) -> Option<Classified> {
        let fixed = fwps::FWPS_INCOMING_VALUES0 {
            layerId: layer,
            valueCount: u32::try_from(values.len()).unwrap_or(0),
            incomingValue: values.as_mut_ptr(),
        };
        let mut f: fwps::FWPS_FILTER1 = zeroed();
        f.filterId = 0x4000 + u64::from(callout.id);
        f.action.r#type = match filter {
            FilterKind::Inspection => fwps::FWP_ACTION_CALLOUT_INSPECTION,
            FilterKind::Terminating => fwps::FWP_ACTION_CALLOUT_TERMINATING,
        };
        f.action.calloutId = callout.id;
        let mut out: fwps::FWPS_CLASSIFY_OUT0 = zeroed();
        out.actionType = UNTOUCHED_ACTION;
        out.rights = fwps::FWPS_RIGHT_ACTION_WRITE;
        let function = match target {
            Target::Driver => {
                // SAFETY: the classifyFn the image registered (checked to be
                // its code at registration).
                unsafe { std::mem::transmute::<usize, ClassifyFn>(callout.classify) }
            }
            Target::Empty => empty_classify,
            Target::StandIn
                if matches!(
                    layer,
                    runtime_layer::ALE_FLOW_ESTABLISHED_V4 | runtime_layer::ALE_FLOW_ESTABLISHED_V6
                ) =>
            {
                crate::standin::established
            }
            Target::StandIn => crate::standin::data,
        };
        let (context, ()) = self.engine.classify(self, callout, flow, layer, |ctx| {
            // SAFETY: classify arguments valid for the duration of the call,
            // as the engine passes them (IRQL set by the engine).
            unsafe {
                function(
                    &raw const fixed,
                    std::ptr::from_ref(meta),
                    layer_data,
                    std::ptr::null(),
                    &raw const f,
                    ctx,
                    &raw mut out,
                );
            };
        })?;
        let action = out.actionType;
        if target == Target::Driver {
            let wanted = match filter {
                FilterKind::Inspection => fwps::FWP_ACTION_CONTINUE,
                FilterKind::Terminating => fwps::FWP_ACTION_PERMIT,
            };
            if action != wanted {
                self.kernel.violation(format!("classify at layer {layer} with a {filter:?} filter answered action {action:#x}, expected {wanted:#x}"));
            }
        }
        Some(Classified { context, action })
    }

    /// Stream data of a TCP flow: `bytes` sent (outbound) or received.
    pub fn stream(
        &self,
        f: &HostFlow,
        bytes: usize,
        send: bool,
        filter: FilterKind,
    ) -> Option<Classified> {
        let callout = self.engine.registered(f.data_callout())?;
        self.stream_with(&callout, f, bytes, send, filter, Target::Driver)
    }

    /// [`World::stream`] at a given callout and target.
    pub fn stream_with(
        &self,
        callout: &Callout,
        f: &HostFlow,
        bytes: usize,
        send: bool,
        filter: FilterKind,
        target: Target,
    ) -> Option<Classified> {
        let layer = CALLOUTS[f.data_callout()].runtime_layer;
        let mut values = [zeroed::<fwps::FWPS_INCOMING_VALUE0>(); 8];
        values[fwps::FWPS_FIELD_STREAM_V4_DIRECTION as usize] = u32_value(
            if send {
                fwps::FWP_DIRECTION_OUTBOUND
            } else {
                fwps::FWP_DIRECTION_INBOUND
            }
            .cast_unsigned(),
        );
        let mut data: fwps::FWPS_STREAM_DATA0 = zeroed();
        data.flags = if send {
            fwps::FWPS_STREAM_FLAG_SEND
        } else {
            fwps::FWPS_STREAM_FLAG_RECEIVE
        };
        data.dataLength = bytes;
        let mut packet: fwps::FWPS_STREAM_CALLOUT_IO_PACKET0 = zeroed();
        packet.streamData = &raw mut data;
        packet.countBytesEnforced = 0xDEAD;
        packet.streamAction = 0x77;
        let mut meta: fwps::FWPS_INCOMING_METADATA_VALUES0 = zeroed();
        meta.currentMetadataValues = fwps::FWPS_METADATA_FIELD_FLOW_HANDLE;
        meta.flowHandle = f.flow.handle;
        let r = self.run_classify(
            callout,
            &f.flow,
            layer,
            &mut values,
            &meta,
            (&raw mut packet).cast(),
            filter,
            target,
        )?;
        if target == Target::Driver {
            if r.action == fwps::FWP_ACTION_PERMIT
                && (packet.countBytesEnforced != bytes
                    || packet.streamAction != fwps::FWPS_STREAM_ACTION_NONE)
            {
                self.kernel.violation(format!(
                    "stream classify answered PERMIT with countBytesEnforced {:#x} / streamAction {} (must be the indicated {bytes} / FWPS_STREAM_ACTION_NONE, or WFP indicates the data again)",
                    packet.countBytesEnforced, packet.streamAction
                ));
            }
            if r.context != 0 && bytes > 0 && self.account.load(Ordering::Relaxed) {
                let (b, p) = if send {
                    (&self.expected.bytes_out, &self.expected.packets_out)
                } else {
                    (&self.expected.bytes_in, &self.expected.packets_in)
                };
                b.fetch_add(bytes as u64, Ordering::Relaxed);
                p.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(r)
    }

    /// Benchmark helper: `n` stream classifies of `f` in a tight loop, the
    /// arguments built once, inside one engine classify (so the flow context
    /// stays live and the engine's rules hold). Returns the loop's time.
    pub fn stream_loop(
        &self,
        callout: &Callout,
        f: &HostFlow,
        n: u64,
        send: bool,
        target: Target,
    ) -> Option<std::time::Duration> {
        let layer = CALLOUTS[f.data_callout()].runtime_layer;
        let mut values = [zeroed::<fwps::FWPS_INCOMING_VALUE0>(); 8];
        let direction = if send {
            fwps::FWP_DIRECTION_OUTBOUND
        } else {
            fwps::FWP_DIRECTION_INBOUND
        };
        values[fwps::FWPS_FIELD_STREAM_V4_DIRECTION as usize] =
            u32_value(direction.cast_unsigned());
        let fixed = fwps::FWPS_INCOMING_VALUES0 {
            layerId: layer,
            valueCount: u32::try_from(values.len()).unwrap_or(0),
            incomingValue: values.as_mut_ptr(),
        };
        let mut data: fwps::FWPS_STREAM_DATA0 = zeroed();
        data.flags = if send {
            fwps::FWPS_STREAM_FLAG_SEND
        } else {
            fwps::FWPS_STREAM_FLAG_RECEIVE
        };
        data.dataLength = 1000;
        let mut packet: fwps::FWPS_STREAM_CALLOUT_IO_PACKET0 = zeroed();
        packet.streamData = &raw mut data;
        let mut meta: fwps::FWPS_INCOMING_METADATA_VALUES0 = zeroed();
        meta.currentMetadataValues = fwps::FWPS_METADATA_FIELD_FLOW_HANDLE;
        meta.flowHandle = f.flow.handle;
        let mut filter: fwps::FWPS_FILTER1 = zeroed();
        filter.action.r#type = fwps::FWP_ACTION_CALLOUT_INSPECTION;
        filter.action.calloutId = callout.id;
        let mut out: fwps::FWPS_CLASSIFY_OUT0 = zeroed();
        out.rights = fwps::FWPS_RIGHT_ACTION_WRITE;
        let function = match target {
            // SAFETY: the classifyFn the image registered (checked at registration).
            Target::Driver => unsafe { std::mem::transmute::<usize, ClassifyFn>(callout.classify) },
            Target::Empty => empty_classify,
            Target::StandIn => crate::standin::data,
        };
        let packet_ptr: *mut c_void = (&raw mut packet).cast();
        let (_, elapsed) = self.engine.classify(self, callout, &f.flow, layer, |ctx| {
            let start = std::time::Instant::now();
            for _ in 0..n {
                // SAFETY: classify arguments valid for the whole loop; the
                // engine holds the flow's classify state meanwhile.
                unsafe {
                    function(
                        &raw const fixed,
                        &raw const meta,
                        packet_ptr,
                        std::ptr::null(),
                        &raw const filter,
                        ctx,
                        &raw mut out,
                    );
                };
            }
            start.elapsed()
        })?;
        Some(elapsed)
    }

    /// Datagrams of a UDP flow: one NET_BUFFER per payload size. Outbound
    /// data starts at the UDP header (8 bytes, announced in the metadata's
    /// transportHeaderSize); inbound data at the payload ("Data offset
    /// positions" in the WDK documentation).
    pub fn datagrams(
        &self,
        f: &HostFlow,
        payloads: &[u32],
        inbound: bool,
        filter: FilterKind,
    ) -> Option<Classified> {
        let callout = self.engine.registered(f.data_callout())?;
        self.datagrams_with(&callout, f, payloads, inbound, filter, Target::Driver)
    }

    /// [`World::datagrams`] at a given callout and target.
    pub fn datagrams_with(
        &self,
        callout: &Callout,
        f: &HostFlow,
        payloads: &[u32],
        inbound: bool,
        filter: FilterKind,
        target: Target,
    ) -> Option<Classified> {
        const UDP_HEADER: u32 = 8;
        let layer = CALLOUTS[f.data_callout()].runtime_layer;
        let mut values = [zeroed::<fwps::FWPS_INCOMING_VALUE0>(); 14];
        values[fwps::FWPS_FIELD_DATAGRAM_DATA_V4_DIRECTION as usize] = u32_value(
            if inbound {
                fwps::FWP_DIRECTION_INBOUND
            } else {
                fwps::FWP_DIRECTION_OUTBOUND
            }
            .cast_unsigned(),
        );
        values[fwps::FWPS_FIELD_DATAGRAM_DATA_V4_IP_PROTOCOL as usize] =
            value(fwps::FWP_UINT8, fwps::FWP_VALUE0_0 { uint8: 17 });
        let mut buffers: Vec<fwps::NET_BUFFER_HEADER_VIEW> = payloads
            .iter()
            .map(|p| {
                let mut nb: fwps::NET_BUFFER_HEADER_VIEW = zeroed();
                nb.DataLength.DataLength = p + if inbound { 0 } else { UDP_HEADER };
                nb
            })
            .collect();
        for i in (0..buffers.len().saturating_sub(1)).rev() {
            let next = &raw mut buffers[i + 1];
            buffers[i].Next = next;
        }
        let mut nbl: fwps::NET_BUFFER_LIST_HEADER_VIEW = zeroed();
        nbl.FirstNetBuffer = buffers
            .first_mut()
            .map_or(std::ptr::null_mut(), std::ptr::from_mut);
        let mut meta: fwps::FWPS_INCOMING_METADATA_VALUES0 = zeroed();
        meta.currentMetadataValues = fwps::FWPS_METADATA_FIELD_FLOW_HANDLE;
        meta.flowHandle = f.flow.handle;
        if !inbound {
            meta.currentMetadataValues |= fwps::FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE;
            meta.transportHeaderSize = UDP_HEADER;
        }
        let r = self.run_classify(
            callout,
            &f.flow,
            layer,
            &mut values,
            &meta,
            (&raw mut nbl).cast(),
            filter,
            target,
        )?;
        if target == Target::Driver
            && r.context != 0
            && !payloads.is_empty()
            && self.account.load(Ordering::Relaxed)
        {
            let bytes: u64 = payloads.iter().map(|p| u64::from(*p)).sum();
            let (b, p) = if inbound {
                (&self.expected.bytes_in, &self.expected.packets_in)
            } else {
                (&self.expected.bytes_out, &self.expected.packets_out)
            };
            b.fetch_add(bytes, Ordering::Relaxed);
            p.fetch_add(payloads.len() as u64, Ordering::Relaxed);
        }
        Some(r)
    }

    /// The flow ends (rule E11).
    pub fn end_flow(&self, f: &HostFlow) {
        if self.unloading.load(Ordering::Relaxed) && !f.flow.contexts().is_empty() {
            self.ended_during_unload.fetch_add(1, Ordering::Relaxed);
        }
        self.engine.end_flow(self, &f.flow);
    }

    // ---------------------------------------------------------------- IRPs

    /// Sends an IRP to the control device as the I/O manager does
    /// (`METHOD_BUFFERED`: one system buffer of max(in, out) bytes) on a
    /// fresh file object, waits for its completion (see [`crate::io`] for
    /// the rules checked) and returns (status, information, output copied
    /// back). `file_name` is the `FILE_OBJECT.FileName` (the part after the
    /// device name).
    pub fn send_irp(
        &self,
        major: u8,
        code: u32,
        input: &[u8],
        out_len: usize,
        file_name: &str,
    ) -> (i32, usize, Vec<u8>) {
        crate::io::send_and_wait(self, major, code, input, out_len, file_name)
    }

    /// `IRP_MJ_DEVICE_CONTROL`.
    pub fn ioctl(&self, code: u32, input: &[u8], out_len: usize) -> (i32, Vec<u8>) {
        let (status, _, out) = self.send_irp(0x0E, code, input, out_len, "");
        (status, out)
    }

    /// `IOCTL_WFPMON_QUERY_STATS` (the default, walk-free query: ended
    /// flows' traffic), decoded.
    ///
    /// # Errors
    /// The status or decoding problem.
    pub fn query_stats(&self) -> Result<Stats, String> {
        self.query_stats_with(protocol::QueryStatsRequest::new())
    }

    /// `IOCTL_WFPMON_QUERY_STATS` with `STATS_LIVE_TRAFFIC` (live flows'
    /// traffic summed by a walk of every bucket), decoded.
    ///
    /// # Errors
    /// The status or decoding problem.
    pub fn query_stats_live(&self) -> Result<Stats, String> {
        self.query_stats_with(protocol::QueryStatsRequest::with_live_traffic())
    }

    fn query_stats_with(&self, request: protocol::QueryStatsRequest) -> Result<Stats, String> {
        let req = request.to_bytes();
        let (status, out) = self.ioctl(protocol::IOCTL_WFPMON_QUERY_STATS, &req, Stats::SIZE);
        if status != 0 {
            return Err(format!("QUERY_STATS -> {status:#x}"));
        }
        let reply = Stats::decode(&out).map_err(|e| format!("QUERY_STATS reply: {e:?}"))?;
        let live = request.flags & protocol::STATS_LIVE_TRAFFIC != 0;
        if (reply.flags & protocol::STATS_INCLUDES_LIVE_TRAFFIC != 0) != live {
            return Err(format!(
                "QUERY_STATS flags {:#x} for a request with flags {:#x}",
                reply.flags, request.flags
            ));
        }
        Ok(reply)
    }

    /// One `IOCTL_WFPMON_LIST_FLOWS` batch: at most `capacity` entries (the
    /// driver caps a batch at `MAX_FLOWS_PER_CALL`) after `cursor`.
    ///
    /// # Errors
    /// The status or decoding problem.
    pub fn list_flows_page(
        &self,
        capacity: u32,
        cursor: (u32, u32),
    ) -> Result<(i32, FlowListHeader, Vec<FlowEntry>), String> {
        let req = protocol::ListFlowsRequest::resume(capacity, cursor.0, cursor.1).to_bytes();
        let fits = (capacity as usize).min(protocol::MAX_FLOWS_PER_CALL);
        let out_len = protocol::flow_list_size(fits).ok_or("capacity too large")?;
        let (status, out) = self.ioctl(protocol::IOCTL_WFPMON_LIST_FLOWS, &req, out_len);
        if status.cast_unsigned() >> 30 == 3 {
            return Err(format!("LIST_FLOWS -> {status:#x}"));
        }
        let (header, entries) =
            protocol::decode_flow_list(&out).map_err(|e| format!("LIST_FLOWS reply: {e:?}"))?;
        Ok((status, header, entries.collect()))
    }

    /// A whole listing pass in batches of `batch` (as wfpmonctl pages):
    /// the entries, the last batch's total, and the number of calls. A
    /// batch that makes no progress is an error.
    ///
    /// # Errors
    /// The status or decoding problem.
    pub fn list_all_flows(&self, batch: u32) -> Result<(Vec<FlowEntry>, u32, usize), String> {
        let mut cursor = (0, 0);
        let mut all = Vec::new();
        for calls in 1.. {
            let (status, header, entries) = self.list_flows_page(batch, cursor)?;
            if status != 0 {
                return Err(format!("LIST_FLOWS -> {status:#x}"));
            }
            all.extend(entries);
            if header.flags & protocol::FLOW_LIST_MORE == 0 {
                return Ok((all, header.total_flows, calls));
            }
            let next = (header.next_bucket, header.next_seq);
            if header.returned == 0 && next == cursor {
                return Err("LIST_FLOWS makes no progress".into());
            }
            cursor = next;
        }
        unreachable!("the loop returns")
    }

    /// Checks that the driver's statistics equal what the engine delivered
    /// (call when no traffic runs).
    pub fn check_counters(&self) {
        let (stats, cheap) = match (self.query_stats_live(), self.query_stats()) {
            (Ok(s), Ok(c)) => (s, c),
            (Err(e), _) | (_, Err(e)) => {
                self.kernel.violation(e);
                return;
            }
        };
        // The walk-free query: the same maintained counts, and the ended
        // flows' share of the traffic (no more than all of it).
        let same = [
            ("flows_active", cheap.flows_active, stats.flows_active),
            ("flows_tracked", cheap.flows_tracked, stats.flows_tracked),
            ("flows_deleted", cheap.flows_deleted, stats.flows_deleted),
        ];
        for (name, got, expected) in same {
            if got != expected {
                self.kernel.violation(format!(
                    "statistics: walk-free {name} = {got}, with the walk {expected}"
                ));
            }
        }
        if cheap.bytes_inbound > stats.bytes_inbound
            || cheap.bytes_outbound > stats.bytes_outbound
            || cheap.packets_inbound > stats.packets_inbound
            || cheap.packets_outbound > stats.packets_outbound
        {
            self.kernel.violation(format!(
                "statistics: ended flows' traffic {cheap:?} exceeds all flows' {stats:?}"
            ));
        }
        if stats.flows_active == 0
            && (
                cheap.bytes_inbound,
                cheap.bytes_outbound,
                cheap.packets_inbound,
                cheap.packets_outbound,
            ) != (
                stats.bytes_inbound,
                stats.bytes_outbound,
                stats.packets_inbound,
                stats.packets_outbound,
            )
        {
            self.kernel.violation(format!(
                "statistics: with no live flow the ended flows' traffic {cheap:?} differs from all flows' {stats:?}"
            ));
        }
        let e = &self.expected;
        let want = [
            (
                "bytes_inbound",
                stats.bytes_inbound,
                e.bytes_in.load(Ordering::SeqCst),
            ),
            (
                "bytes_outbound",
                stats.bytes_outbound,
                e.bytes_out.load(Ordering::SeqCst),
            ),
            (
                "packets_inbound",
                stats.packets_inbound,
                e.packets_in.load(Ordering::SeqCst),
            ),
            (
                "packets_outbound",
                stats.packets_outbound,
                e.packets_out.load(Ordering::SeqCst),
            ),
            (
                "flows_tracked",
                stats.flows_tracked,
                self.engine.associated.load(Ordering::SeqCst),
            ),
            (
                "flows_deleted",
                stats.flows_deleted,
                self.engine.deleted.load(Ordering::SeqCst),
            ),
            (
                "flows_active",
                stats.flows_active,
                self.engine.live_contexts() as u64,
            ),
        ];
        for (name, got, expected) in want {
            if got != expected {
                self.kernel.violation(format!(
                    "statistics: {name} = {got}, but the engine delivered {expected}"
                ));
            }
        }
    }

    /// The registered callout serving catalog entry `index`.
    #[must_use]
    pub fn callout(&self, index: usize) -> Option<Arc<Callout>> {
        self.engine.registered(index)
    }
}

/// The image path [`World::open_flow`] gives process `pid`, in the form
/// the engine supplies (a device path, as `processPath` carries it).
#[must_use]
pub fn default_process_path(pid: u64) -> String {
    format!("\\device\\harddiskvolume3\\program files\\app{pid}\\app{pid}.exe")
}

/// A pool tag as text.
#[must_use]
pub fn tag_name(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                char::from(*b)
            } else {
                '?'
            }
        })
        .collect()
}

/// Locks a host mutex (re-export for scenarios).
pub fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    lock(m)
}
