//! The fake filter engine (`fwpkclnt.sys`), and the rules it enforces.
//!
//! # The rules
//!
//! The rules this engine implements, with their sources, are in
//! `docs/engine-rules.md` (ids E1–E9, E11, E12, E14 and E15; E10 and E13
//! apply to the emulator only). `// Rule En` comments mark the code that
//! implements each; the scenarios rely on nothing else.

use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fwpsk_sys as fwps;
use wfpmon_core::catalog::CALLOUTS;

use crate::clock;
use crate::kernel::{
    self, DISPATCH_LEVEL, IntSet, PASSIVE_LEVEL, call_into_image, enter_api, irql, lock, status,
};
use crate::world::World;

/// How a successful unregistration meets classifies in progress (rules E4
/// and E5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// Unregister waits until the callout's classifies have returned.
    Wait,
    /// Unregister answers `STATUS_DEVICE_BUSY` while any is executing.
    Busy,
}

/// Engine behaviour of one world.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// The classify barrier's form (rules E4 and E5).
    pub barrier: Barrier,
    /// Rule E12: every removal is deferred by this much time (100 ns).
    pub slow_delete_100ns: Option<u64>,
    /// Rule E14: unregister answers `STATUS_FWP_CALLOUT_NOT_FOUND` while
    /// deferred deletions are still owed.
    pub early_not_found: bool,
    /// Test-only breakage for the memcheck proof; never enabled elsewhere.
    pub breakage: Breakage,
}

/// A deliberate engine bug (the memcheck proof that a use of a context
/// after its flowDeleteFn is reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// A correct engine.
    None,
    /// After a flowDeleteFn returned, the engine itself reads the context.
    HostReadsDeletedContext,
    /// The engine passes a deleted context to the next classify of the same
    /// callout for a flow without one: the driver's classify code then
    /// uses freed pool memory.
    ClassifyWithDeletedContext,
}

impl Default for Mode {
    fn default() -> Self {
        Self {
            barrier: Barrier::Wait,
            slow_delete_100ns: None,
            early_not_found: false,
            breakage: Breakage::None,
        }
    }
}

/// The classifyFn type (`FWPS_CALLOUT_CLASSIFY_FN1`).
pub type ClassifyFn = unsafe extern "win64" fn(
    *const fwps::FWPS_INCOMING_VALUES0,
    *const fwps::FWPS_INCOMING_METADATA_VALUES0,
    *mut c_void,
    *const c_void,
    *const fwps::FWPS_FILTER1,
    u64,
    *mut fwps::FWPS_CLASSIFY_OUT0,
);
/// The flowDeleteFn type (`FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0`).
pub type FlowDeleteFn = unsafe extern "win64" fn(u16, u32, u64);

/// A registered (or formerly registered) callout (on its own cache lines:
/// the engine's per-callout counters must not make threads share memory).
#[repr(align(128))]
pub struct Callout {
    /// Run-time id.
    pub id: u32,
    /// `calloutKey` as bytes.
    pub key: [u8; 16],
    /// Index in wfpmon's catalog (by key), if any.
    pub catalog: Option<usize>,
    /// `FWP_CALLOUT_FLAG_*`.
    pub flags: u32,
    /// classifyFn.
    pub classify: usize,
    /// notifyFn.
    pub notify: usize,
    /// flowDeleteFn (0: none).
    pub flow_delete: usize,
    /// The device object it was registered against.
    pub device: usize,
    registered: AtomicBool,
    active: AtomicUsize,
    contexts: AtomicUsize,
    /// Of `contexts`, those removed from their flow whose flowDeleteFn is
    /// deferred (rules E9, E11 and E12): owed, no longer live.
    owed: AtomicUsize,
}

impl Callout {
    /// Whether it is registered now.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    /// Rules E4 and E5, classify side: counts a classify in; refused once
    /// unregistration began.
    fn enter(&self) -> bool {
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.registered.load(Ordering::SeqCst) {
            true
        } else {
            self.active.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    fn exit(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// The runtime layer this callout serves (by its catalog entry).
    #[must_use]
    pub fn layer(&self) -> Option<u16> {
        self.catalog.map(|i| CALLOUTS[i].runtime_layer)
    }
}

/// A flow context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    /// Layer id it was associated at.
    pub layer: u16,
    /// Callout id.
    pub callout: u32,
    /// The driver's context value.
    pub value: u64,
}

#[derive(Default)]
struct FlowState {
    classifying: u32,
    contexts: Vec<Ctx>,
    deferred: Vec<Ctx>,
    ended: bool,
}

/// A flow the engine knows (on its own cache lines, like the callouts).
#[repr(align(128))]
pub struct Flow {
    /// The flow handle (`FWPS_INCOMING_METADATA_VALUES0.flowHandle`).
    pub handle: u64,
    state: Mutex<FlowState>,
}

impl Flow {
    /// The contexts it carries now.
    #[must_use]
    pub fn contexts(&self) -> Vec<Ctx> {
        lock(&self.state).contexts.clone()
    }
}

/// The engine of one world.
pub struct Engine {
    callouts: RwLock<Vec<Arc<Callout>>>,
    reg: Mutex<()>,
    /// Every flow opened and not ended, by [`flow_index`] of its handle (an
    /// ended flow leaves its slot empty: 8 bytes per flow ever opened).
    flows: Mutex<Vec<Option<Arc<Flow>>>>,
    injection: Mutex<HashSet<usize>>,
    live_contexts: Mutex<IntSet<u64>>,
    deleting: AtomicUsize,
    slow: Mutex<Vec<(u64, Ctx)>>,
    stale: Mutex<Vec<Ctx>>,
    next_flow: AtomicU64,
    /// Behaviour.
    pub mode: Mode,
    /// Successful associations.
    pub associated: AtomicU64,
    /// flowDeleteFn calls that returned.
    pub deleted: AtomicU64,
    /// `STATUS_PENDING` answers of `FwpsFlowRemoveContext0`.
    pub pending_answers: AtomicU64,
    /// `STATUS_DEVICE_BUSY` answers of unregister.
    pub busy_answers: AtomicU64,
    /// Rule E14's `STATUS_FWP_CALLOUT_NOT_FOUND` answers (deletions owed).
    pub early_not_found_answers: AtomicU64,
    /// Classifies refused because their callout was (being) unregistered.
    pub refused_classifies: AtomicU64,
    /// Contexts of flows that ended while a classify of them ran (deleted
    /// when it returned).
    pub ended_while_classifying: AtomicU64,
}

const FIRST_CALLOUT_ID: u32 = 0x101;

/// The first flow handle; the engine hands them out in steps of
/// [`FLOW_HANDLE_STEP`].
const FIRST_FLOW_HANDLE: u64 = 0x1_0000;
const FLOW_HANDLE_STEP: u64 = 0x10;

/// Where a flow handle of this engine lives in its flow table (`None`: not
/// a handle it hands out).
fn flow_index(handle: u64) -> Option<usize> {
    let offset = handle.checked_sub(FIRST_FLOW_HANDLE)?;
    if offset % FLOW_HANDLE_STEP == 0 {
        usize::try_from(offset / FLOW_HANDLE_STEP).ok()
    } else {
        None
    }
}

impl Engine {
    /// An engine with no callouts, its flow and context tables sized for
    /// `capacity` flows.
    #[must_use]
    pub fn new(mode: Mode, capacity: usize) -> Self {
        Self {
            callouts: RwLock::new(Vec::new()),
            reg: Mutex::new(()),
            flows: Mutex::new(Vec::with_capacity(capacity)),
            injection: Mutex::new(HashSet::new()),
            live_contexts: Mutex::new(IntSet::with_capacity_and_hasher(
                capacity,
                std::hash::BuildHasherDefault::default(),
            )),
            deleting: AtomicUsize::new(0),
            slow: Mutex::new(Vec::new()),
            stale: Mutex::new(Vec::new()),
            next_flow: AtomicU64::new(FIRST_FLOW_HANDLE),
            mode,
            associated: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            pending_answers: AtomicU64::new(0),
            busy_answers: AtomicU64::new(0),
            early_not_found_answers: AtomicU64::new(0),
            refused_classifies: AtomicU64::new(0),
            ended_while_classifying: AtomicU64::new(0),
        }
    }

    fn callout(&self, id: u32) -> Option<Arc<Callout>> {
        let callouts = self
            .callouts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        id.checked_sub(FIRST_CALLOUT_ID)
            .and_then(|i| callouts.get(i as usize).cloned())
    }

    /// Every callout ever registered.
    #[must_use]
    pub fn callouts(&self) -> Vec<Arc<Callout>> {
        self.callouts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The registered callout that serves catalog entry `index` (the
    /// filter at that layer references its key).
    #[must_use]
    pub fn registered(&self, index: usize) -> Option<Arc<Callout>> {
        self.callouts()
            .into_iter()
            .find(|c| c.catalog == Some(index) && c.is_registered())
    }

    /// Registers a callout of the host itself (the benchmarks' stand-in for
    /// the driver, [`crate::standin`]) as rule E1 does, except that its
    /// functions are host code rather than the image's and no device object
    /// backs it. Until [`Engine::unregister_host_callout`] it counts as
    /// registered, so a world's Unload check fails while it is.
    pub fn register_host_callout(
        &self,
        flags: u32,
        classify: ClassifyFn,
        flow_delete: FlowDeleteFn,
    ) -> Arc<Callout> {
        let _reg = lock(&self.reg);
        let mut callouts = self
            .callouts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = FIRST_CALLOUT_ID + u32::try_from(callouts.len()).unwrap_or(0);
        let mut key = [0xB5; 16];
        key[..4].copy_from_slice(&id.to_le_bytes());
        let callout = Arc::new(Callout {
            id,
            key,
            catalog: None,
            flags,
            classify: classify as usize,
            notify: 0,
            flow_delete: flow_delete as usize,
            device: 0,
            registered: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            contexts: AtomicUsize::new(0),
            owed: AtomicUsize::new(0),
        });
        callouts.push(Arc::clone(&callout));
        callout
    }

    /// Unregisters a callout of [`Engine::register_host_callout`] once none
    /// of its contexts is left (rule E2), waiting for its classifies in
    /// progress (rule E4).
    ///
    /// # Errors
    /// The number of its contexts that still exist.
    pub fn unregister_host_callout(&self, callout: &Callout) -> Result<(), usize> {
        {
            let _reg = lock(&self.reg);
            let contexts = callout.contexts.load(Ordering::SeqCst);
            if contexts > 0 {
                return Err(contexts);
            }
            callout.registered.store(false, Ordering::SeqCst);
        }
        while callout.active.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Callouts still registered against device `dev`.
    #[must_use]
    pub fn callouts_registered_on(&self, dev: usize) -> usize {
        self.callouts()
            .iter()
            .filter(|c| c.device == dev && c.is_registered())
            .count()
    }

    /// Callouts still registered.
    #[must_use]
    pub fn still_registered(&self) -> Vec<u32> {
        self.callouts()
            .iter()
            .filter(|c| c.is_registered())
            .map(|c| c.id)
            .collect()
    }

    /// Contexts associated and not yet deleted (flowDeleteFn not returned).
    #[must_use]
    pub fn live_contexts(&self) -> usize {
        lock(&self.live_contexts).len() + self.deleting.load(Ordering::SeqCst)
    }

    /// Open injection handles.
    #[must_use]
    pub fn injection_handles(&self) -> usize {
        lock(&self.injection).len()
    }

    /// flowDeleteFn calls owed to callouts no longer registered (rule E14):
    /// the engine let them go while deletions were deferred.
    #[must_use]
    pub fn owed_to_unregistered(&self) -> usize {
        self.callouts()
            .iter()
            .filter(|c| !c.is_registered())
            .map(|c| c.owed.load(Ordering::SeqCst))
            .sum()
    }

    /// Deferred removals of the slow engine still waiting.
    #[must_use]
    pub fn slow_waiting(&self) -> usize {
        lock(&self.slow).len()
    }

    // ----------------------------------------------------------- flows

    /// A new flow.
    pub fn open_flow(&self) -> Arc<Flow> {
        let handle = self
            .next_flow
            .fetch_add(FLOW_HANDLE_STEP, Ordering::Relaxed);
        let flow = Arc::new(Flow {
            handle,
            state: Mutex::new(FlowState::default()),
        });
        let index = flow_index(handle).expect("a handle of this engine");
        let mut flows = lock(&self.flows);
        if flows.len() <= index {
            flows.resize(index + 1, None);
        }
        flows[index] = Some(Arc::clone(&flow));
        flow
    }

    fn flow(&self, handle: u64) -> Option<Arc<Flow>> {
        let index = flow_index(handle)?;
        lock(&self.flows).get(index)?.clone()
    }

    /// Rule E11: the flow ends; its contexts are deleted now or when the
    /// classify in progress returns.
    pub fn end_flow(&self, w: &World, flow: &Flow) {
        let now = {
            let mut s = lock(&flow.state);
            s.ended = true;
            let contexts = std::mem::take(&mut s.contexts);
            if s.classifying > 0 {
                self.ended_while_classifying
                    .fetch_add(contexts.len() as u64, Ordering::Relaxed);
                for ctx in &contexts {
                    self.owe(ctx);
                }
                s.deferred.extend(contexts);
                Vec::new()
            } else {
                contexts
            }
        };
        if let Some(index) = flow_index(flow.handle)
            && let Some(slot) = lock(&self.flows).get_mut(index)
        {
            *slot = None;
        }
        for ctx in now {
            self.run_flow_delete(w, ctx, DISPATCH_LEVEL.max(irql()), false);
        }
    }

    /// A context's deletion is deferred (rules E9, E11 and E12): it stays
    /// counted against its callout, as owed.
    fn owe(&self, ctx: &Ctx) {
        if let Some(c) = self.callout(ctx.callout) {
            c.owed.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Calls the flowDeleteFn of `ctx`'s callout (the context is already
    /// detached from its flow) and retires it; `deferred`: its deletion was
    /// owed (see [`Engine::owe`]).
    fn run_flow_delete(&self, w: &World, ctx: Ctx, level: u8, deferred: bool) {
        let Some(callout) = self.callout(ctx.callout) else {
            w.kernel.violation(format!(
                "engine bug: context of unknown callout {}",
                ctx.callout
            ));
            return;
        };
        // The context stops being associated when its deletion begins: the
        // driver frees it inside flowDeleteFn, and another processor may be
        // handed the same address for a new context before this one returns.
        // Until flowDeleteFn returns it still counts (`deleting`, and the
        // callout's count behind rule E2).
        self.deleting.fetch_add(1, Ordering::SeqCst);
        if !lock(&self.live_contexts).remove(&ctx.value) {
            w.kernel.violation(format!(
                "engine bug: context {:#x} deleted twice",
                ctx.value
            ));
        }
        if callout.flow_delete == 0 {
            w.kernel.violation(format!(
                "callout {} carries a context but has no flowDeleteFn",
                ctx.callout
            ));
        } else {
            // SAFETY: flowDeleteFn registered by the image (checked to lie in
            // its code when registered); the image is mapped while any of its
            // contexts exists.
            let f: FlowDeleteFn =
                unsafe { std::mem::transmute::<usize, FlowDeleteFn>(callout.flow_delete) };
            call_into_image(w, "flowDeleteFn", level, || {
                // SAFETY: the engine hands back the context the driver
                // associated, once.
                unsafe { f(ctx.layer, ctx.callout, ctx.value) };
            });
        }
        if self.mode.breakage == Breakage::ClassifyWithDeletedContext {
            lock(&self.stale).push(ctx);
        }
        if self.mode.breakage == Breakage::HostReadsDeletedContext {
            // Deliberate use after free (see Breakage::HostReadsDeletedContext).
            // SAFETY: not safe at all: the driver freed this block inside
            // flowDeleteFn. Only the memcheck proof enables this mode, where
            // the read lands in freed heap memory and must be reported.
            let stale = unsafe { std::ptr::read_volatile(ctx.value as *const u64) };
            std::hint::black_box(stale);
        }
        // In this order: once the callout's count (rule E2) says no context
        // is left, none is counted as being deleted either.
        self.deleted.fetch_add(1, Ordering::SeqCst);
        self.deleting.fetch_sub(1, Ordering::SeqCst);
        if deferred {
            callout.owed.fetch_sub(1, Ordering::SeqCst);
        }
        callout.contexts.fetch_sub(1, Ordering::SeqCst);
    }

    /// Runs the slow engine's deferred deletions that are due (rule E12);
    /// returns how many are still waiting.
    pub fn run_due(&self, w: &World) -> usize {
        let now = clock::now_100ns();
        let due: Vec<Ctx> = {
            let mut slow = lock(&self.slow);
            let (due, wait): (Vec<_>, Vec<_>) = slow.drain(..).partition(|(t, _)| *t <= now);
            *slow = wait;
            due.into_iter().map(|(_, c)| c).collect()
        };
        for ctx in due {
            self.run_flow_delete(w, ctx, DISPATCH_LEVEL, true);
        }
        self.slow_waiting()
    }

    // ----------------------------------------------------------- classify

    /// Classifies at `callout` for `flow` (rules E4, E5 and E7): `body` gets
    /// the flow context (0 for none) and calls classifyFn. Returns `None`
    /// when the engine does not call the callout (not registered, or
    /// conditional on a context the flow does not carry), else the context
    /// passed and `body`'s result. Deferred deletions run when it returns
    /// (rule E9).
    pub fn classify<R>(
        &self,
        w: &World,
        callout: &Callout,
        flow: &Flow,
        layer: u16,
        body: impl FnOnce(u64) -> R,
    ) -> Option<(u64, R)> {
        if !callout.enter() {
            self.refused_classifies.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let ctx = {
            let mut s = lock(&flow.state);
            let mut ctx = s
                .contexts
                .iter()
                .find(|c| c.layer == layer && c.callout == callout.id)
                .map_or(0, |c| c.value);
            if ctx == 0 && self.mode.breakage == Breakage::ClassifyWithDeletedContext {
                let mut stale = lock(&self.stale);
                if let Some(i) = stale
                    .iter()
                    .position(|c| c.layer == layer && c.callout == callout.id)
                {
                    ctx = stale.remove(i).value;
                }
            }
            // Rule E7: conditional callouts only for flows carrying their context.
            if s.ended
                || (ctx == 0 && callout.flags & fwps::FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW != 0)
            {
                drop(s);
                callout.exit();
                return None;
            }
            s.classifying += 1;
            ctx
        };
        if w.unloading.load(Ordering::Relaxed) {
            w.classified_during_unload.fetch_add(1, Ordering::Relaxed);
        }
        // Rule K1: classifyFn at DISPATCH_LEVEL, the highest it may see.
        let r = call_into_image(w, "classifyFn", DISPATCH_LEVEL, || body(ctx));
        let deferred = {
            let mut s = lock(&flow.state);
            s.classifying -= 1;
            if s.classifying == 0 {
                std::mem::take(&mut s.deferred)
            } else {
                Vec::new()
            }
        };
        for d in deferred {
            self.run_flow_delete(w, d, DISPATCH_LEVEL, true);
        }
        callout.exit();
        Some((ctx, r))
    }
}

fn world_engine(api: &str, max: u8) -> kernel::Api {
    enter_api(api, max)
}

/// `FwpsCalloutRegister0/1/2/3(deviceObject, callout, calloutId)` (rule E1).
/// Every version's `FWPS_CALLOUTn` has the same layout: key (16), flags
/// (4, padded to 8), classifyFn, notifyFn, flowDeleteFn. Failable.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn fwps_callout_register(
    device: usize,
    callout: *const u8,
    id: *mut u32,
) -> i32 {
    let w = world_engine("FwpsCalloutRegister", PASSIVE_LEVEL);
    if callout.is_null() {
        w.kernel
            .violation("FwpsCalloutRegister(NULL callout)".into());
        return fwps::STATUS_FWP_NULL_POINTER;
    }
    // SAFETY: the driver's FWPS_CALLOUTn (48 bytes on x64).
    let raw = unsafe { std::slice::from_raw_parts(callout, 48) };
    let word = |o: usize| usize::from_le_bytes(raw[o..o + 8].try_into().unwrap_or([0; 8]));
    let mut key = [0u8; 16];
    key.copy_from_slice(&raw[..16]);
    let flags = u32::from_le_bytes(raw[16..20].try_into().unwrap_or([0; 4]));
    let (classify, notify, flow_delete) = (word(24), word(32), word(40));
    if !w.kernel.devices().iter().any(|(d, _)| *d == device) {
        w.kernel.violation(format!(
            "FwpsCalloutRegister: {device:#x} is not a live device object"
        ));
        return status::INVALID_PARAMETER;
    }
    for (name, f, required) in [
        ("classifyFn", classify, true),
        ("notifyFn", notify, true),
        ("flowDeleteFn", flow_delete, false),
    ] {
        if (f != 0 || required) && !w.image.is_code(f) {
            w.kernel.violation(format!(
                "FwpsCalloutRegister: {name} {f:#x} is not code of the image"
            ));
            return status::INVALID_PARAMETER;
        }
    }
    if w.kernel.inject("FwpsCalloutRegister") {
        return status::INSUFFICIENT_RESOURCES;
    }
    let _reg = lock(&w.engine.reg);
    let mut callouts = w
        .engine
        .callouts
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if callouts.iter().any(|c| c.key == key && c.is_registered()) {
        return fwps::STATUS_FWP_ALREADY_EXISTS;
    }
    let catalog = CALLOUTS.iter().position(|s| {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&s.key.data1.to_le_bytes());
        k[4..6].copy_from_slice(&s.key.data2.to_le_bytes());
        k[6..8].copy_from_slice(&s.key.data3.to_le_bytes());
        k[8..].copy_from_slice(&s.key.data4);
        k == key
    });
    let new_id = FIRST_CALLOUT_ID + u32::try_from(callouts.len()).unwrap_or(0);
    callouts.push(Arc::new(Callout {
        id: new_id,
        key,
        catalog,
        flags,
        classify,
        notify,
        flow_delete,
        device,
        registered: AtomicBool::new(true),
        active: AtomicUsize::new(0),
        contexts: AtomicUsize::new(0),
        owed: AtomicUsize::new(0),
    }));
    if !id.is_null() {
        // SAFETY: the driver's output variable.
        unsafe { id.write(new_id) };
    }
    status::SUCCESS
}

/// `FwpsCalloutUnregisterById0(calloutId)` (rules E2, E3, E4, E5 and E14).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn fwps_callout_unregister_by_id0(id: u32) -> i32 {
    let w = world_engine("FwpsCalloutUnregisterById0", PASSIVE_LEVEL);
    let reg = lock(&w.engine.reg);
    // Rule E3
    let Some(c) = w.engine.callout(id).filter(|c| c.is_registered()) else {
        return fwps::STATUS_FWP_CALLOUT_NOT_FOUND;
    };
    let contexts = c.contexts.load(Ordering::SeqCst);
    // Rule E14 (adversarial): no live context left, only owed deletions.
    let early =
        w.engine.mode.early_not_found && contexts > 0 && contexts == c.owed.load(Ordering::SeqCst);
    if contexts > 0 && !early {
        // Rule E2
        w.engine.busy_answers.fetch_add(1, Ordering::Relaxed);
        return status::DEVICE_BUSY;
    }
    let success = if early {
        w.engine
            .early_not_found_answers
            .fetch_add(1, Ordering::Relaxed);
        fwps::STATUS_FWP_CALLOUT_NOT_FOUND
    } else {
        status::SUCCESS
    };
    c.registered.store(false, Ordering::SeqCst);
    drop(reg);
    match w.engine.mode.barrier {
        // Rule E4
        Barrier::Wait => {
            let mut spins = 0u32;
            while c.active.load(Ordering::SeqCst) > 0 {
                spins += 1;
                if spins.is_multiple_of(16) {
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            }
        }
        // Rule E5
        Barrier::Busy => {
            if c.active.load(Ordering::SeqCst) > 0 {
                c.registered.store(true, Ordering::SeqCst);
                if early {
                    w.engine
                        .early_not_found_answers
                        .fetch_sub(1, Ordering::Relaxed);
                }
                w.engine.busy_answers.fetch_add(1, Ordering::Relaxed);
                return status::DEVICE_BUSY;
            }
        }
    }
    success
}

/// `FwpsFlowAssociateContext0(flowId, layerId, calloutId, flowContext)`
/// (rules E3 and E6).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn fwps_flow_associate_context0(
    flow: u64,
    layer: u16,
    callout: u32,
    context: u64,
) -> i32 {
    let w = world_engine("FwpsFlowAssociateContext0", DISPATCH_LEVEL);
    let _reg = lock(&w.engine.reg);
    let Some(c) = w.engine.callout(callout).filter(|c| c.is_registered()) else {
        return fwps::STATUS_FWP_CALLOUT_NOT_FOUND;
    };
    if c.flow_delete == 0 {
        w.kernel.violation(format!(
            "FwpsFlowAssociateContext0 for callout {callout}, which has no flowDeleteFn"
        ));
    }
    if context == 0 {
        w.kernel
            .violation("FwpsFlowAssociateContext0 with a zero context".into());
        return status::INVALID_PARAMETER;
    }
    let Some(f) = w.engine.flow(flow) else {
        return status::INVALID_PARAMETER;
    };
    let mut s = lock(&f.state);
    if s.ended {
        return status::INVALID_PARAMETER;
    }
    // Rule E6
    if s.contexts
        .iter()
        .any(|x| x.layer == layer && x.callout == callout)
    {
        return status::OBJECT_NAME_EXISTS;
    }
    if !lock(&w.engine.live_contexts).insert(context) {
        w.kernel.violation(format!("FwpsFlowAssociateContext0: context {context:#x} is already associated with another flow"));
        return status::INVALID_PARAMETER;
    }
    s.contexts.push(Ctx {
        layer,
        callout,
        value: context,
    });
    c.contexts.fetch_add(1, Ordering::SeqCst);
    w.engine.associated.fetch_add(1, Ordering::SeqCst);
    status::SUCCESS
}

/// `FwpsFlowRemoveContext0(flowId, layerId, calloutId)` (rules E8, E9 and
/// E12).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn fwps_flow_remove_context0(flow: u64, layer: u16, callout: u32) -> i32 {
    let w = world_engine("FwpsFlowRemoveContext0", DISPATCH_LEVEL);
    let Some(f) = w.engine.flow(flow) else {
        return status::UNSUCCESSFUL;
    };
    let mut s = lock(&f.state);
    let Some(i) = s
        .contexts
        .iter()
        .position(|x| x.layer == layer && x.callout == callout)
    else {
        return status::UNSUCCESSFUL;
    };
    let ctx = s.contexts.remove(i);
    // Rule E12
    if let Some(delay) = w.engine.mode.slow_delete_100ns {
        drop(s);
        w.engine.owe(&ctx);
        lock(&w.engine.slow).push((clock::now_100ns() + delay, ctx));
        w.engine.pending_answers.fetch_add(1, Ordering::Relaxed);
        return status::PENDING;
    }
    // Rule E9
    if s.classifying > 0 {
        w.engine.owe(&ctx);
        s.deferred.push(ctx);
        w.engine.pending_answers.fetch_add(1, Ordering::Relaxed);
        return status::PENDING;
    }
    drop(s);
    // Rule E8: flowDeleteFn inside the call.
    w.engine.run_flow_delete(&w, ctx, irql(), false);
    status::SUCCESS
}

/// `FwpsInjectionHandleCreate0(addressFamily, flags, injectionHandle)`
/// (rule E15). Failable.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn fwps_injection_handle_create0(
    _af: u16,
    _flags: u32,
    handle: *mut usize,
) -> i32 {
    let w = world_engine("FwpsInjectionHandleCreate0", PASSIVE_LEVEL);
    if w.kernel.inject("FwpsInjectionHandleCreate0") {
        return status::INSUFFICIENT_RESOURCES;
    }
    let h = kernel::host_alloc(16);
    lock(&w.engine.injection).insert(h);
    // SAFETY: the driver's output variable.
    unsafe { handle.write(h) };
    status::SUCCESS
}

/// `FwpsInjectionHandleDestroy0(injectionHandle)`: a live handle, once
/// (rule E15).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn fwps_injection_handle_destroy0(handle: usize) -> i32 {
    let w = world_engine("FwpsInjectionHandleDestroy0", PASSIVE_LEVEL);
    if !lock(&w.engine.injection).remove(&handle) {
        w.kernel.violation(format!(
            "FwpsInjectionHandleDestroy0({handle:#x}): not a live handle"
        ));
        return status::INVALID_PARAMETER;
    }
    kernel::host_free(handle, 16);
    status::SUCCESS
}

/// `FwpsQueryPacketInjectionState0(injectionHandle, netBufferList,
/// injectionContext)`: a live handle.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn fwps_query_packet_injection_state0(
    handle: usize,
    _nbl: usize,
    _ctx: usize,
) -> i32 {
    let w = world_engine("FwpsQueryPacketInjectionState0", DISPATCH_LEVEL);
    if !lock(&w.engine.injection).contains(&handle) {
        w.kernel.violation(format!(
            "FwpsQueryPacketInjectionState0({handle:#x}): not a live injection handle"
        ));
    }
    fwps::FWPS_PACKET_NOT_INJECTED
}
