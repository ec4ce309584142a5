"""A fake Windows filter engine and kernel around the real wfpmon.sys.

The driver image runs in the Speakeasy emulator. Every kernel and filter
engine call it makes goes through the hooks below, which implement the
documented rules of the functions involved. The rules, their sources and
which host implements each are in docs/engine-rules.md; the ids in brackets
name them, and `# rule Xn` comments mark the code that implements each:

- FwpsCalloutRegister1 records the FWPS_CALLOUT1 (key, flags, classifyFn,
  flowDeleteFn) and hands out a run-time id [E1];
- FwpsFlowAssociateContext0 attaches a context to (flow, layer, callout)
  [E6, E7];
- FwpsCalloutUnregisterById0 answers STATUS_DEVICE_BUSY while any context
  of the callout exists (including one whose deletion is pending), and
  STATUS_FWP_CALLOUT_NOT_FOUND for an unknown id [E2, E3, E13]. Adversarially
  (`not_found_while_owed=True`, not documented behaviour [E14]), it answers STATUS_FWP_CALLOUT_NOT_FOUND and forgets the
  callout as soon as no *live* context of it is left, while deletions it
  deferred (STATUS_PENDING) are still to come — the driver must outlive
  every one of them;
- FwpsFlowRemoveContext0 calls the callout's flowDeleteFn *synchronously*
  (before returning STATUS_SUCCESS), or — for a flow whose classify is in
  progress — returns STATUS_PENDING and calls flowDeleteFn later (here: when
  the driver next waits on a kernel object, standing for the other
  processor finishing its classify, after a number of waits or once the
  simulated clock reaches a given time) [E8, E9, E10, E12];
- the classify barrier: a successful FwpsCalloutUnregisterById0 does not
  return while a classify of that callout is executing, and no classify of
  it starts afterwards (NETIO's KfdDeleteCalloutEntry; ebpf-for-windows
  issue #1272). A classify "in flight on another processor"
  (`classify_in_flight`) is either completed inside the unregister call
  before it succeeds (`barrier="wait"`) or makes it answer
  STATUS_DEVICE_BUSY until the driver's next wait lets it finish
  (`barrier="busy"`); `classify()` refuses to call an unregistered callout
  [E4, E5];
- ObOpenObjectByPointer / ZwSetSecurityObject / ZwClose keep a handle table:
  a handle must be a kernel handle opened with WRITE_DAC to set a DACL, and
  every handle must be closed once [K33];
- ETW: EtwRegister / EtwSetInformation / EtwWriteTransfer / EtwUnregister
  keep a registration table; a session (`etw_session=(level, keywords)`,
  or `enable_trace()` later) enables the provider through its enable
  callback, as ETW does; every EtwWriteTransfer is decoded from its
  TraceLogging metadata (event name, fields with their in/out types) into
  `events`. Writing through an unknown or unregistered handle is an error
  [T1, T2, T4];
- KeWaitForSingleObject advances a simulated clock (KUSER_SHARED_DATA's
  InterruptTime, which the driver reads) by the time it waited, so an engine
  that lets go after minutes costs a few hundred waits, not minutes [K34, K35];
- ExAllocatePool2 / ExFreePool(WithTag) are accounted, so leaks and double
  frees are visible; any call can be made to fail (fault injection) [K28,
  K30];
- spin locks and IRQL (KeAcquireInStackQueuedSpinLock / KeRelease...,
  KeAcquireSpinLockRaiseToDpc / KeReleaseSpinLock): the IRQL each routine
  requires and sets, ownership, recursion, a consistent nesting order, no
  lock held or IRQL raised when the driver returns (see "Spin locks and
  IRQL" below) [K1-K9];
- the cancel-safe IRP queue (IoCsqInitialize / IoCsqInsertIrp /
  IoCsqRemoveNextIrp) as documented, calling the driver's own CsqXxx
  callbacks, and IoCancelIrp (`cancel_irp`) with the cancel routine the
  queue installed; IRPs (`send_irp`, `send_irp_async`) with file objects
  (`open_handle`, `close_handle` = IRP_MJ_CLEANUP), checked at completion
  (once, not queued, no cancel routine, no spin lock held) and at the
  dispatch routine's return (STATUS_PENDING if and only if marked pending)
  [K10-K24];
- the flow-established metadata: flow handle, process id and process path
  (an FWP_BYTE_BLOB of UTF-16LE with its NUL), each present or absent.

Guest code is called from inside a hook through a small generated stub
(`sub rsp,28h; mov rcx/rdx/r8, ...; call; add rsp,28h; mov eax, status;
ret`): the hook redirects the guest to the stub instead of returning,
which is how the real engine runs flowDeleteFn inside FwpsFlowRemoveContext0.
A model that must act on what a callback returns (IoCsqRemoveNextIrp and
CsqPeekNextIrp) is a generator driven from a trap (see "Model routines that
call guest code").

Nothing here asserts about the driver; rule violations are collected in
`pool_errors`; tests read `calls`, `pool`, `contexts`, `irps`, `log` etc.
"""

from __future__ import annotations

import copy
import ctypes as C
import logging
import struct
import threading
import time
import types
from dataclasses import dataclass, field

import pefile
import speakeasy
import unicorn
from speakeasy.config import DEFAULT_CONFIG_DATA

import wfp_layout as L

logging.getLogger("speakeasy").setLevel(logging.CRITICAL)

DRIVER_UNLOAD_OFFSET = 0x68  # DRIVER_OBJECT.DriverUnload on x64
MAJOR_FUNCTION_OFFSET = 0x70  # DRIVER_OBJECT.MajorFunction[0]

# IRQLs (wdm.h).
PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL = 0, 1, 2
MASK64 = 0xFFFFFFFFFFFFFFFF

# A guest call that does not return within this many (real) seconds is a
# hang: the watchdog stops the emulator and the call raises.
GUEST_TIMEOUT_S = 120.0


class _Watchdog:
    """One thread for all engines: stops the emulator of a guest call that
    runs longer than its deadline. (Speakeasy's own per-run timeout makes
    Unicorn start a timer thread at every resumption — after every API call
    — which costs ~1 ms each; this costs nothing per call.)"""

    def __init__(self):
        self._lock = threading.Lock()
        self._armed = None  # (deadline, stop, fired: list)
        self._thread = None

    def _run(self):
        while True:
            time.sleep(0.5)
            with self._lock:
                armed = self._armed
                if armed is not None and time.monotonic() > armed[0]:
                    armed[2].append(True)
                    armed[1]()
                    self._armed = None

    def arm(self, stop, seconds: float) -> list:
        fired: list = []
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wfpmon-emu-watchdog", daemon=True)
                self._thread.start()
            self._armed = (time.monotonic() + seconds, stop, fired)
        return fired

    def disarm(self):
        with self._lock:
            self._armed = None


WATCHDOG = _Watchdog()


class InjectedFault(Exception):
    pass


@dataclass
class Callout:
    id: int
    key: str
    flags: int
    classify: int
    notify: int
    flow_delete: int
    registered: bool = True


@dataclass
class Call:
    api: str
    args: tuple
    ret: int | None = None


@dataclass
class Flow:
    handle: int
    family: int  # 4 or 6
    protocol: int


@dataclass
class Completion:
    """One IofCompleteRequest of an IRP, as the I/O manager sees it."""
    status: int
    information: int
    output: bytes  # what the I/O manager copies back (METHOD_BUFFERED)
    call_index: int  # position in FakeEngine.calls
    irql: int


@dataclass
class IrpRecord:
    """An IRP the test sent, and everything that happened to it."""
    irp: int
    major: int
    code: int
    out_len: int
    system_buffer: int
    stack: int
    file_object: int
    method: int
    returned: int | None = None  # what the dispatch routine returned
    completions: list[Completion] = field(default_factory=list)
    queued: bool = False  # in the driver's cancel-safe queue (inserted, not removed)
    inserted_at: int | None = None  # call index of its IoCsqInsertIrp

    @property
    def pending(self) -> bool:
        return self.returned == L.STATUS_PENDING

    @property
    def completed(self) -> bool:
        return bool(self.completions)

    @property
    def status(self) -> int:
        return self.completions[-1].status

    @property
    def information(self) -> int:
        return self.completions[-1].information

    @property
    def output(self) -> bytes:
        return self.completions[-1].output


@dataclass
class _CoFrame:
    """A model routine (a Python generator) that calls guest code: it yields
    (function, arguments) and is sent each call's RAX."""
    gen: types.GeneratorType
    api: str
    rsp: int | None  # the guest's RSP at the routine's entry (return address on top)
    record: "Call | None" = None


class FakeEngine:
    """One emulated boot of the driver: load, DriverEntry, traffic, unload."""

    def __init__(self, image: str, faults: dict[str, dict[int, int]] | None = None,
                 remove_mode=None, pending_runs_on: str = "wait", pending_waits: int = 1,
                 pending_delay_100ns: int | None = None, in_use_until_100ns: int = 0,
                 barrier: str = "wait", etw_session: tuple[int, int] | None = (5, 0x3),
                 not_found_while_owed: bool = False):
        # faults: api name -> {n-th call (1-based): status to return}
        self.faults = faults or {}
        self.counts: dict[str, int] = {}
        self.calls: list[Call] = []
        self.log: list[str] = []
        self.pool: dict[int, tuple[int, int]] = {}  # addr -> (size, tag)
        self.pool_errors: list[str] = []
        self.alloc_total = 0
        self.free_total = 0
        self.callouts: dict[int, Callout] = {}
        self.next_callout_id = 0x101
        self.contexts: dict[tuple[int, int, int], int] = {}  # (flow, layer, id) -> ctx
        self.pending: list[tuple[int, int, int, int, int]] = []  # (fn, flow, layer, id, ctx)
        self.pending_keys: set[tuple[int, int, int]] = set()
        self.flow_deletes: list[tuple[int, int, int]] = []  # (layer, id, ctx) seen
        # Where in `calls` each deferred deletion was handed to the driver.
        self.deferred_delete_at: list[int] = []
        # See the module docstring; NOT_FOUND answers given with deletions owed.
        self.not_found_while_owed = not_found_while_owed
        self.early_not_found = 0
        self.devices: set[int] = set()
        self.deleted_devices: list[int] = []
        self.security: list[bytes] = []
        self.injection_handles: set[int] = set()
        self.destroyed_handles: list[int] = []
        self.handles: dict[int, tuple[int, int]] = {}  # handle -> (object, access)
        self.closed_handles: list[int] = []
        self.next_handle = 0x80000004
        # Simulated interrupt time (100 ns units), mirrored into KUSER_SHARED_DATA.
        self.clock = 0
        self.wait_timeouts: list[int] = []
        # A pending deletion completes once the clock reaches its due time
        # (when set), instead of after `pending_waits` waits.
        self.pending_delay = pending_delay_100ns
        self.pending_due: dict[tuple[int, int, int], int] = {}
        # Unregister answers STATUS_FWP_IN_USE until this simulated time.
        self.in_use_until = in_use_until_100ns
        # Classifies running "on another processor": callout id -> [(fn, args)].
        self.barrier = barrier
        self.in_flight: dict[int, list[tuple[int, list[int]]]] = {}
        self.barrier_completed: list[int] = []
        # ETW: reg handle -> {"guid", "callback", "context"}; decoded events.
        self.etw: dict[int, dict] = {}
        self.etw_next = 0x7E7E0001
        self.etw_session = etw_session
        self.etw_traits: list[bytes] = []
        self.events: list[dict] = []
        # Spin locks and IRQL (one processor: the emulated thread). Every
        # lock held, in acquisition order: (lock, kind, IRQL before, handle).
        self.irql = PASSIVE_LEVEL
        self.lock_stack: list[tuple[int, str, int, int]] = []
        self.lock_acquisitions = 0
        self.max_lock_depth = 0
        # Observed nesting order: lock -> locks acquired while it was held
        # ("Preventing Errors and Deadlocks While Using Spin Locks": nested
        # spin locks must always be acquired in the same order).
        self.lock_order: dict[int, set[int]] = {}
        # Cancel-safe queues (IoCsqInitialize): IO_CSQ address -> the IRPs
        # the model knows to be in the driver's queue, oldest first.
        self.csqs: dict[int, list[int]] = {}
        # IRPs the test sent: address -> record.
        self.irps: dict[int, IrpRecord] = {}
        # Model routines running guest code (innermost last).
        self._co_stack: list[_CoFrame] = []
        # Per flow handle: the process identity the engine gave it at
        # establishment (pid or None, path or None).
        self.flow_processes: dict[int, tuple[int | None, str | bytes | None]] = {}
        self.driver_object = 0
        self.remove_mode = remove_mode or (lambda flow, layer, cid: "sync")
        # When deferred (STATUS_PENDING) flow deletions complete: at the
        # driver's next wait ("wait"), or at its next unregister attempt
        # ("unregister", an engine whose other processor finishes between
        # two calls of the driver).
        self.pending_runs_on = pending_runs_on
        # How many waits of the driver a pending deletion takes to complete.
        self.pending_waits = pending_waits
        self.waits = 0
        self.interpositions: dict = {}
        self.pending_left: dict[tuple[int, int, int], int] = {}
        self.completed_irps: list[int] = []
        self.device_name = ""
        self.device_name_terminated = False
        self.device_args: dict[str, int] = {}

        # Speakeasy stops a run after 10 000 API calls by default; an unload
        # with a thousand flows makes more (a lock per bucket visited).
        config = copy.deepcopy(DEFAULT_CONFIG_DATA)
        config["max_api_count"] = 1_000_000
        # Neither changes what the guest does: no string scan of all memory
        # after every run (the report is never read), and no per-run timeout
        # (its timer thread per Unicorn resumption made every API call cost
        # about a millisecond); the watchdog above catches a hang instead.
        config["analysis"]["strings"] = False
        config["timeout"] = 0
        self.se = speakeasy.Speakeasy(config=config)
        self.module = self.se.load_module(image)
        self._scratch = self.se.mem_alloc(0x100000, tag="wfpmon.test.scratch")
        self._scratch_used = 0
        # Memory that lives as long as the engine: IRPs, their buffers and
        # file objects, guest-call stubs of model routines.
        self._arena, self._arena_used, self._arena_size = 0, 0, 0
        # The trap that hands control back to a model routine: one `ret`,
        # watched by a code hook (see _co_resume).
        self._trap = self.se.mem_alloc(0x1000, tag="wfpmon.test.trap")
        self.se.mem_write(self._trap, b"\xc3")
        self.se.add_code_hook(self._co_resume, begin=self._trap, end=self._trap)
        # What IoCsqInsertIrp installs as the IRP's cancel routine (the
        # system's own routine; never executed as code here: the model of
        # IoCancelIrp recognises it).
        self.CSQ_CANCEL_ROUTINE = self._trap + 0x800
        self._install_hooks()
        self._install_fast_calls(image)
        self._transient_hook_only_while_needed()
        self._set_clock(0)

    # ----------------------------------------------------------------- clock
    KUSER_INTERRUPT_TIME = 0xFFFFF78000000008

    def _set_clock(self, value: int) -> None:
        # rule K35: interrupt time, read by the driver from KUSER_SHARED_DATA.
        self.clock = value
        # KSYSTEM_TIME: LowPart, High1Time, High2Time (the driver reads the
        # first 8 bytes as one 64-bit value). Speakeasy maps the page at the
        # kernel address and at its 52-bit mirror (what the guest's access
        # reaches); write every alias.
        data = struct.pack("<QI", value, value >> 32)
        for alias in {self.KUSER_INTERRUPT_TIME, self.KUSER_INTERRUPT_TIME & ((1 << 52) - 1)}:
            try:
                self.se.mem_write(alias, data)
            except Exception:  # noqa: BLE001 - an alias this version does not map
                pass

    # ---------------------------------------------------------------- memory
    def alloc(self, size: int, align: int = 16) -> int:
        self._scratch_used = (self._scratch_used + align - 1) & ~(align - 1)
        addr = self._scratch + self._scratch_used
        self._scratch_used += size
        if self._scratch_used > 0x100000:
            self._scratch_used = 0  # recycle: tests only keep recent structures live
            return self.alloc(size, align)
        self.se.mem_write(addr, b"\0" * size)
        return addr

    def put(self, obj) -> int:
        raw = bytes(obj)
        addr = self.alloc(len(raw))
        self.se.mem_write(addr, raw)
        return addr

    def palloc(self, size: int, align: int = 16) -> int:
        """Zeroed memory that is never reused (IRPs may stay pending for a
        whole test; stubs may be on the guest's stack)."""
        self._arena_used = (self._arena_used + align - 1) & ~(align - 1)
        if self._arena_used + size > self._arena_size:
            self._arena_size = max(0x400000, (size + 0xFFF) & ~0xFFF)
            self._arena = self.se.mem_alloc(self._arena_size, tag="wfpmon.test.arena")
            self._arena_used = 0
        addr = self._arena + self._arena_used
        self._arena_used += size
        self.se.mem_write(addr, b"\0" * size)
        return addr

    def u8(self, addr: int) -> int:
        return self.se.mem_read(addr, 1)[0]

    def u32(self, addr: int) -> int:
        return struct.unpack("<I", self.se.mem_read(addr, 4))[0]

    def w64(self, addr: int, value: int) -> None:
        self.se.mem_write(addr, struct.pack("<Q", value & MASK64))

    def read(self, cls, addr):
        return cls.from_buffer_copy(self.se.mem_read(addr, C.sizeof(cls)))

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.se.mem_read(addr, 8))[0]

    def unicode_string(self, addr: int) -> str:
        length = struct.unpack("<H", self.se.mem_read(addr, 2))[0]
        return self.se.mem_read(self.u64(addr + 8), length).decode("utf-16-le")

    def cstr(self, addr: int, limit: int = 4096) -> str:
        out = bytearray()
        while len(out) < limit:
            chunk = self.se.mem_read(addr + len(out), 16 - (addr + len(out)) % 16)
            if b"\0" in chunk:
                out += chunk.split(b"\0", 1)[0]
                break
            out += chunk
        return out.decode("utf-8", "replace")

    # ------------------------------------------------------------ guest calls
    def _stub(self, calls: list[tuple[int, list[int]]], status: int) -> int:
        """Code that calls each (fn, args) with the x64 calling convention
        (four register arguments, the rest on the stack above the 32-byte
        home area), then returns `status` to the instruction after the
        hooked call. Entered like a function (return address on the stack)."""
        stack_args = max([max(len(a) - 4, 0) for _, a in calls] + [0])
        stack_args += stack_args % 2  # keep rsp 16-byte aligned at each call
        frame = 0x28 + 8 * stack_args
        code = bytearray(b"\x48\x81\xec" + struct.pack("<I", frame))  # sub rsp, frame
        regs = [b"\x48\xb9", b"\x48\xba", b"\x49\xb8", b"\x49\xb9"]  # rcx rdx r8 r9
        for fn, args in calls:
            for i, arg in enumerate(args[4:]):
                code += b"\x48\xb8" + struct.pack("<Q", arg & 0xFFFFFFFFFFFFFFFF)  # mov rax, arg
                code += b"\x48\x89\x44\x24" + bytes([0x20 + 8 * i])  # mov [rsp+20h+8i], rax
            for reg, arg in zip(regs, args):
                code += reg + struct.pack("<Q", arg & 0xFFFFFFFFFFFFFFFF)
            code += b"\x48\xb8" + struct.pack("<Q", fn) + b"\xff\xd0"  # mov rax, fn; call rax
        code += b"\x48\x81\xc4" + struct.pack("<I", frame)  # add rsp, frame
        code += b"\xb8" + struct.pack("<I", status & 0xFFFFFFFF)  # mov eax, status
        code += b"\xc3"
        addr = self.palloc(len(code))
        self.se.mem_write(addr, bytes(code))
        return addr

    def _redirect(self, emu, calls, status) -> int:
        emu.set_pc(self._stub(calls, status))
        return status

    def _guarded(self, what: str, run) -> None:
        fired = WATCHDOG.arm(self.se.emu.emu_eng.emu.emu_stop, GUEST_TIMEOUT_S)
        try:
            run()
        finally:
            WATCHDOG.disarm()
        if fired:
            raise RuntimeError(f"{what} did not return within {GUEST_TIMEOUT_S} s (a hang)")

    def _entered(self, irql: int) -> None:
        """The system calls into the driver at `irql`, holding nothing."""
        if self.lock_stack or self._co_stack:
            raise RuntimeError("a guest call started while the model still holds state of another")
        self.irql = irql

    def _returned(self, what: str, irql: int) -> None:
        """The driver returned to the system: no spin lock may be left held
        and the IRQL must be back where it was."""
        # rule K9
        if self.lock_stack:
            self.pool_errors.append(f"{what} returned holding spin locks {[hex(l[0]) for l in self.lock_stack]}")
            self.lock_stack.clear()
        if self.irql != irql:
            self.pool_errors.append(f"{what} returned at IRQL {self.irql}, entered at {irql}")
        if self._co_stack:
            self.pool_errors.append(f"{what} returned inside the model routine {self._co_stack[-1].api}")
            self._co_stack.clear()
        self.irql = PASSIVE_LEVEL

    def call(self, fn: int, args: list[int], irql: int = PASSIVE_LEVEL) -> int:
        """Calls guest function `fn` as the system would, at `irql`."""
        self._entered(irql)
        self._guarded(f"guest call {fn:#x}", lambda: self.se.emu.call(fn, args))
        run = self.se.emu.runs[-1] if self.se.emu.runs else None
        err = getattr(run, "error", None) if run else None
        if err:
            self._co_stack.clear()
            self.lock_stack.clear()
            raise RuntimeError(f"guest fault calling {fn:#x}: {err}")
        self._returned(f"guest call {fn:#x}", irql)
        return self.se.reg_read("rax") & MASK64

    # Model routines that call guest code ------------------------------------
    #
    # Speakeasy cannot nest runs (Speakeasy.call inside an API hook would
    # reset the stack of the run in progress and only queue the new one), so
    # a model that must call the driver's own callbacks — and act on what
    # they return, as IoCsqRemoveNextIrp does with CsqPeekNextIrp — is
    # written as a generator: it yields (function, arguments) and receives
    # the function's RAX. Each call runs in the same run, on the same stack:
    # the hook points the guest at a stub that calls the function (x64
    # calling convention) and then jumps to one watched `ret` (the trap); the
    # trap's code hook resumes the generator, which either asks for the next
    # call (the hook pushes that stub's address, so the `ret` enters it) or
    # finishes (the hook sets RAX and the `ret` returns to whoever called
    # the API). Nesting works: a callback that calls another such API pushes
    # another frame, and frames finish innermost first.

    def _call_stub(self, fn: int, args: list[int]) -> int:
        stack_args = max(len(args) - 4, 0)
        stack_args += stack_args % 2  # keep rsp 16-byte aligned at the call
        frame = 0x28 + 8 * stack_args
        code = bytearray(b"\x48\x81\xec" + struct.pack("<I", frame))  # sub rsp, frame
        for i, arg in enumerate(args[4:]):
            code += b"\x48\xb8" + struct.pack("<Q", arg & MASK64)  # mov rax, arg
            code += b"\x48\x89\x44\x24" + bytes([0x20 + 8 * i])  # mov [rsp+20h+8i], rax
        for reg, arg in zip([b"\x48\xb9", b"\x48\xba", b"\x49\xb8", b"\x49\xb9"], args):
            code += reg + struct.pack("<Q", arg & MASK64)  # rcx, rdx, r8, r9
        code += b"\x48\xb8" + struct.pack("<Q", fn) + b"\xff\xd0"  # mov rax, fn; call rax
        code += b"\x48\x81\xc4" + struct.pack("<I", frame)  # add rsp, frame
        code += b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", self._trap)  # jmp [rip]: the trap
        addr = self.palloc(len(code))
        self.se.mem_write(addr, bytes(code))
        return addr

    def _co_start(self, emu, gen, api: str, record: "Call | None" = None):
        """Starts a model routine inside an API hook: returns the API's
        value at once if it calls no guest code, else enters the first stub."""
        try:
            first = next(gen)
        except StopIteration as stop:
            if record is not None:
                record.ret = stop.value
            return stop.value
        self._co_stack.append(_CoFrame(gen, api, emu.get_stack_ptr(), record))
        emu.set_pc(self._call_stub(*first))
        return 0

    def _co_resume(self, emu, addr, size):
        """The trap: the innermost model routine's guest call returned."""
        if not self._co_stack:
            self.pool_errors.append("model trap reached with no routine waiting")
            return True
        frame = self._co_stack[-1]
        rsp = self.se.reg_read("rsp")
        if frame.rsp is None:
            frame.rsp = rsp
        elif rsp != frame.rsp:
            raise RuntimeError(f"{frame.api}: guest stack unbalanced ({rsp:#x} != {frame.rsp:#x})")
        result = self.se.reg_read("rax") & MASK64
        try:
            nxt = frame.gen.send(result)
        except StopIteration as stop:
            self._co_stack.pop()
            if frame.record is not None:
                frame.record.ret = stop.value
            self.se.reg_write("rax", (stop.value or 0) & MASK64)
            return True  # the `ret` returns to the API's caller
        rsp -= 8
        self.w64(rsp, self._call_stub(*nxt))
        self.se.reg_write("rsp", rsp)
        return True  # the `ret` enters the next stub

    def run_model(self, gen, irql: int = PASSIVE_LEVEL, what: str = "model routine"):
        """Runs a model routine from outside the guest (the system acting on
        its own, e.g. IoCancelIrp from another thread) at `irql`."""
        self._entered(irql)
        try:
            first = next(gen)
        except StopIteration as stop:
            self._returned(what, irql)
            return stop.value
        self._co_stack.append(_CoFrame(gen, what, None))
        stub = self._call_stub(*first)
        self._guarded(what, lambda: self.se.emu.call(stub, []))
        run = self.se.emu.runs[-1] if self.se.emu.runs else None
        err = getattr(run, "error", None) if run else None
        if err:
            self._co_stack.clear()
            self.lock_stack.clear()
            raise RuntimeError(f"guest fault in {what}: {err}")
        self._returned(what, irql)
        return self.se.reg_read("rax") & MASK64

    # ------------------------------------------------------------------ hooks
    def _fault(self, api: str) -> int | None:
        # rule K30: the n-th call of `api` fails when the test asks it to.
        n = self.counts.get(api, 0) + 1
        self.counts[api] = n
        return self.faults.get(api, {}).get(n)

    def _record(self, api, args, ret):
        self.calls.append(Call(api, tuple(args), ret))
        return ret

    def interpose(self, api: str, make_calls, nth: int = 1, before: bool = False) -> None:
        """The `nth` next time the driver calls `api`, run the guest calls
        that `make_calls()` returns (a list of (function, arguments), or a
        model routine) before the API returns to the driver (another
        processor's classify running while the driver is inside that call).
        `before`: run them before the API does anything (model routines
        only, such as IoCsqInsertIrp)."""
        self.interpositions[api] = (nth, make_calls, before)

    def _interposition(self, api: str, before: bool = False):
        entry = self.interpositions.get(api)
        if entry is None or entry[2] != before:
            return None
        nth, make_calls, _ = entry
        if nth > 1:
            self.interpositions[api] = (nth - 1, make_calls, before)
            return None
        del self.interpositions[api]
        return make_calls

    @staticmethod
    def _calls_of(make_calls):
        calls = make_calls()
        if isinstance(calls, types.GeneratorType):
            yield from calls
        else:
            for fn, args in calls:
                yield (fn, args)

    def _around(self, gen, first, then):
        if first is not None:
            yield from self._calls_of(first)
        value = yield from gen
        if then is not None:
            yield from self._calls_of(then)
        return value

    def _wrap(self, api: str, hook):
        def wrapped(emu, name, orig, argv):
            pc = emu.get_pc()
            rv = hook(emu, name, orig, argv)
            if isinstance(rv, types.GeneratorType):
                # A model routine: interposed calls run before it starts or
                # after it ends, before the API returns to the driver.
                first, then = self._interposition(api, before=True), self._interposition(api)
                gen = self._around(rv, first, then) if first or then else rv
                record = self.calls[-1] if self.calls and self.calls[-1].api == api else None
                return self._co_start(emu, gen, api, record)
            make_calls = self._interposition(api)
            if make_calls is not None and emu.get_pc() == pc:
                return self._redirect(emu, make_calls(), rv if rv is not None else 0)
            return rv
        return wrapped

    def _install_hooks(self):
        def h(cb, module, api, argc=0):
            self.se.add_api_hook(self._wrap(api, cb), module, api, argc=argc)
        # ntoskrnl: pool
        h(self._ex_allocate_pool2, "ntoskrnl", "ExAllocatePool2")
        h(self._ex_free_pool_with_tag, "ntoskrnl", "ExFreePoolWithTag")
        h(self._ex_free_pool, "ntoskrnl", "ExFreePool")
        # ntoskrnl: objects
        h(self._io_create_device, "ntoskrnl", "IoCreateDevice")
        h(self._io_delete_device, "ntoskrnl", "IoDeleteDevice")
        h(self._ob_open_by_pointer, "ntoskrnl", "ObOpenObjectByPointer", argc=7)
        h(self._zw_set_security, "ntoskrnl", "ZwSetSecurityObject", argc=3)
        h(self._zw_close, "ntoskrnl", "ZwClose", argc=1)
        # ntoskrnl: synchronisation and debug output
        h(self._ke_wait, "ntoskrnl", "KeWaitForSingleObject")
        h(self._ke_set_event, "ntoskrnl", "KeSetEvent")
        h(self._ke_init_event, "ntoskrnl", "KeInitializeEvent")
        h(self._queued_acquire, "ntoskrnl", "KeAcquireInStackQueuedSpinLock", argc=2)
        h(self._queued_release, "ntoskrnl", "KeReleaseInStackQueuedSpinLock", argc=1)
        h(self._spin_acquire, "ntoskrnl", "KeAcquireSpinLockRaiseToDpc", argc=1)
        h(self._spin_release, "ntoskrnl", "KeReleaseSpinLock", argc=2)
        # ntoskrnl: the cancel-safe IRP queue
        h(self._csq_initialize, "ntoskrnl", "IoCsqInitialize", argc=7)
        h(self._csq_insert_irp, "ntoskrnl", "IoCsqInsertIrp", argc=3)
        h(self._csq_remove_next_irp, "ntoskrnl", "IoCsqRemoveNextIrp", argc=2)
        h(self._dbg_print, "ntoskrnl", "DbgPrint")
        h(self._complete_request, "ntoskrnl", "IofCompleteRequest")
        # ntoskrnl: ETW (TraceLogging)
        h(self._etw_register, "ntoskrnl", "EtwRegister", argc=4)
        h(self._etw_unregister, "ntoskrnl", "EtwUnregister", argc=1)
        h(self._etw_set_information, "ntoskrnl", "EtwSetInformation", argc=4)
        h(self._etw_write_transfer, "ntoskrnl", "EtwWriteTransfer", argc=6)
        # fwpkclnt
        h(self._callout_register1, "fwpkclnt", "FwpsCalloutRegister1")
        h(self._callout_unregister, "fwpkclnt", "FwpsCalloutUnregisterById0")
        h(self._injection_create, "fwpkclnt", "FwpsInjectionHandleCreate0")
        h(self._injection_destroy, "fwpkclnt", "FwpsInjectionHandleDestroy0")
        h(self._flow_associate, "fwpkclnt", "FwpsFlowAssociateContext0", argc=4)
        h(self._flow_remove, "fwpkclnt", "FwpsFlowRemoveContext0", argc=3)

    # The spin-lock routines are most of the driver's kernel calls (a flow
    # established and ended takes six locks). Speakeasy dispatches an import
    # by stopping the CPU and resuming it (about a quarter of a millisecond
    # each); these four are dispatched instead through the image's import
    # address table to a `ret` of our own whose code hook runs the very same
    # model, without leaving the CPU. What the driver sees is unchanged: the
    # same routines, arguments, return values and interpositions.
    FAST_CALLS = ("KeAcquireInStackQueuedSpinLock", "KeReleaseInStackQueuedSpinLock",
                  "KeAcquireSpinLockRaiseToDpc", "KeReleaseSpinLock")

    def _transient_hook_only_while_needed(self) -> None:
        """Speakeasy keeps one code hook on every instruction for deferred
        work (its "transient" hook: SEH dispatch, the end of a run), enabled
        after each API call and disabled at the next instruction — but a
        disabled hook still costs a call into Python per instruction. Here
        the same hook function is registered with Unicorn only while it is
        enabled: the deferred work runs at the same instruction as before,
        and the driver's own instructions run without a callback."""
        emu = self.se.emu
        engine = emu.emu_eng.emu
        core = emu._hook_code_core

        class Transient:
            enabled = False
            handle = None

            def _native(self, uc, address, size, user_data):
                return core(emu, address, size)

            def enable(self):
                self.enabled = True
                if self.handle is None:
                    self.handle = engine.hook_add(unicorn.UC_HOOK_CODE, self._native)

            def disable(self):
                self.enabled = False
                if self.handle is not None:
                    engine.hook_del(self.handle)
                    self.handle = None

        emu.tmp_code_hook = Transient()

    def _install_fast_calls(self, image: str) -> None:
        models = {"KeAcquireInStackQueuedSpinLock": self._queued_acquire,
                  "KeReleaseInStackQueuedSpinLock": self._queued_release,
                  "KeAcquireSpinLockRaiseToDpc": self._spin_acquire,
                  "KeReleaseSpinLock": self._spin_release}
        pe = pefile.PE(image, fast_load=True)
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
        page = self.se.mem_alloc(0x1000, tag="wfpmon.test.fastcalls")
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
            for imp in entry.imports:
                name = imp.name.decode() if imp.name else ""
                if name not in models:
                    continue
                slot = imp.address - pe.OPTIONAL_HEADER.ImageBase + self.module.base
                entry_point = page + 16 * self.FAST_CALLS.index(name)
                self.se.mem_write(entry_point, b"\xc3")
                self.w64(slot, entry_point)
                self.se.add_code_hook(self._fast_call(name, models[name]), begin=entry_point, end=entry_point)

    def _fast_call(self, name: str, model):
        def hook(emu, addr, size):
            argv = [self.se.reg_read("rcx"), self.se.reg_read("rdx")]
            rv = model(emu, name, None, argv) or 0
            make_calls = self._interposition(name)
            if make_calls is not None:
                # Enter a stub that makes the calls and returns rv to the caller.
                rsp = self.se.reg_read("rsp") - 8
                self.w64(rsp, self._stub(make_calls(), rv))
                self.se.reg_write("rsp", rsp)
            else:
                self.se.reg_write("rax", rv & MASK64)
            return True
        return hook

    def _ex_allocate_pool2(self, emu, api, orig, argv):
        flags, size, tag = argv[0], argv[1], argv[2] & 0xFFFFFFFF
        fault = self._fault("ExAllocatePool2")  # rule K30: NULL on failure
        if fault is not None:
            return self._record("ExAllocatePool2", (flags, size, tag), 0)
        addr = orig(argv)
        if addr:
            self.pool[addr] = (size, tag)
            self.alloc_total += 1
        return self._record("ExAllocatePool2", (flags, size, tag), addr)

    def _free(self, api, addr, tag=None):
        # rule K28: an outstanding block, freed once, with its tag.
        if addr not in self.pool:
            self.pool_errors.append(f"{api}({addr:#x}): not an outstanding allocation")
        else:
            size, atag = self.pool.pop(addr)
            if tag is not None and tag != atag:
                self.pool_errors.append(f"{api}({addr:#x}): tag {tag:#x} != {atag:#x}")
            self.free_total += 1
        self._record(api, (addr,), None)

    def _ex_free_pool_with_tag(self, emu, api, orig, argv):
        self._free("ExFreePoolWithTag", argv[0], argv[1] & 0xFFFFFFFF)
        return 0

    def _ex_free_pool(self, emu, api, orig, argv):
        self._free("ExFreePool", argv[0])
        return 0

    def _io_create_device(self, emu, api, orig, argv):
        # DeviceType and DeviceCharacteristics are ULONGs: the x64 calling
        # convention leaves the upper half of their registers undefined.
        argv = list(argv)
        argv[3] &= 0xFFFFFFFF
        argv[4] &= 0xFFFFFFFF
        argv[5] &= 0xFF  # BOOLEAN Exclusive
        self.driver_object = argv[0]
        fault = self._fault("IoCreateDevice")  # rule K31 (and K30)
        if fault is not None:
            return self._record("IoCreateDevice", (argv[2], argv[3], argv[4]), fault)
        rv = orig(argv)
        if rv == 0:
            self.devices.add(self.u64(argv[6]))
        name = self.unicode_string(argv[2]) if argv[2] else ""
        if argv[2]:
            length, maximum = struct.unpack("<HH", self.se.mem_read(argv[2], 4))
            terminator = self.se.mem_read(self.u64(argv[2] + 8) + length, 2) if maximum >= length + 2 else b"??"
            self.device_name_terminated = terminator == b"\0\0"
        self.device_name = name
        self.device_args = {"type": argv[3], "characteristics": argv[4], "exclusive": argv[5]}
        return self._record("IoCreateDevice", (name, argv[3], argv[4]), rv)

    def _io_delete_device(self, emu, api, orig, argv):
        if argv[0] not in self.devices:  # rule K31: a live device, deleted once
            self.pool_errors.append(f"IoDeleteDevice({argv[0]:#x}): unknown device")
        self.devices.discard(argv[0])
        self.deleted_devices.append(argv[0])
        return self._record("IoDeleteDevice", (argv[0],), orig(argv))

    OBJ_KERNEL_HANDLE, WRITE_DAC, KERNEL_MODE = 0x200, 0x40000, 0

    def _ob_open_by_pointer(self, emu, api, orig, argv):
        obj, attributes, access_state, access, obj_type, mode, out = argv[:7]
        args = (obj, attributes, access, obj_type, mode & 0xFF)
        fault = self._fault("ObOpenObjectByPointer")
        if fault is not None:
            return self._record("ObOpenObjectByPointer", args, fault)
        if obj not in self.devices:  # rule K33
            self.pool_errors.append(f"ObOpenObjectByPointer({obj:#x}): not a device object")
            return self._record("ObOpenObjectByPointer", args, L.STATUS_INVALID_PARAMETER)
        if not attributes & self.OBJ_KERNEL_HANDLE:
            # DriverEntry may run outside the system process: the reference
            # requires OBJ_KERNEL_HANDLE there.
            self.pool_errors.append("ObOpenObjectByPointer without OBJ_KERNEL_HANDLE")
        if (mode & 0xFF) != self.KERNEL_MODE and obj_type == 0:
            self.pool_errors.append("ObOpenObjectByPointer: NULL object type needs KernelMode")
        handle = self.next_handle
        self.next_handle += 4
        self.handles[handle] = (obj, access)
        self.se.mem_write(out, struct.pack("<Q", handle))
        return self._record("ObOpenObjectByPointer", args, L.STATUS_SUCCESS)

    def _zw_set_security(self, emu, api, orig, argv):
        handle, info, descriptor = argv[0], argv[1] & 0xFFFFFFFF, argv[2]
        fault = self._fault("ZwSetSecurityObject")
        if fault is not None:
            return self._record("ZwSetSecurityObject", (handle, info), fault)
        if handle not in self.handles:
            return self._record("ZwSetSecurityObject", (handle, info), L.STATUS_INVALID_HANDLE)
        obj, access = self.handles[handle]
        if not access & self.WRITE_DAC:  # rule K33
            return self._record("ZwSetSecurityObject", (handle, info), L.STATUS_ACCESS_DENIED)
        self.security.append((obj, self.se.mem_read(descriptor, 72)))
        return self._record("ZwSetSecurityObject", (handle, info), L.STATUS_SUCCESS)

    def _zw_close(self, emu, api, orig, argv):
        handle = argv[0]
        fault = self._fault("ZwClose")
        if handle not in self.handles:  # rule K33: an open handle, closed once
            self.pool_errors.append(f"ZwClose({handle:#x}): not an open handle")
            return self._record("ZwClose", (handle,), L.STATUS_INVALID_HANDLE)
        if fault is not None:
            # The handle stays open: a failed close is reported, not undone.
            return self._record("ZwClose", (handle,), fault)
        del self.handles[handle]
        self.closed_handles.append(handle)
        return self._record("ZwClose", (handle,), L.STATUS_SUCCESS)

    def _ke_init_event(self, emu, api, orig, argv):
        return self._record("KeInitializeEvent", (argv[1], argv[2]), orig(argv))

    def _ke_set_event(self, emu, api, orig, argv):
        return self._record("KeSetEvent", (), orig(argv))

    def _ke_wait(self, emu, api, orig, argv):
        """A wait lets the 'other processor' finish: classifies in flight
        (barrier "busy") and pending flow deletions run. The simulated clock
        advances by the wait's relative timeout, or up to the moment a
        time-based pending deletion completes."""
        self.waits += 1
        timeout = None
        # rule K34: a relative, non-zero timeout.
        if argv[4]:
            (raw,) = struct.unpack("<q", self.se.mem_read(argv[4], 8))
            if raw >= 0:
                self.pool_errors.append("absolute or zero wait timeout")
            timeout = -raw
        self.wait_timeouts.append(timeout)
        if timeout is None:
            self.pool_errors.append("wait without a timeout in the emulator (would hang)")
            timeout = 0
        calls = []
        if self.barrier == "busy" and self.in_flight:  # rule E5: the classify finishes
            calls += self._finish_in_flight()
        if self.pending and self.pending_runs_on == "wait":
            if self.pending_delay is not None:  # rule E12: due at a simulated time
                due = min(self.pending_due[p[1:4]] for p in self.pending)
                if due <= self.clock + timeout:
                    self._set_clock(max(due, self.clock))
                    calls += self._run_pending_due()
            else:  # rule E9: the other processor's classify returns
                calls += self._run_pending(all_of_them=False)
        if calls:
            self._record("KeWaitForSingleObject", (len(calls),), L.STATUS_SUCCESS)
            return self._redirect(emu, calls, L.STATUS_SUCCESS)
        self._set_clock(self.clock + timeout)
        return self._record("KeWaitForSingleObject", (0,), L.STATUS_TIMEOUT)

    def _run_pending_due(self) -> list[tuple[int, list[int]]]:
        batch = [p for p in self.pending if self.pending_due[p[1:4]] <= self.clock]
        self.pending = [p for p in self.pending if self.pending_due[p[1:4]] > self.clock]
        for _, flow, layer, cid, ctx in batch:
            self.pending_keys.discard((flow, layer, cid))
            self.flow_deletes.append((layer, cid, ctx))
            self.deferred_delete_at.append(len(self.calls))
        return [(fn, [layer, cid, ctx]) for fn, _, layer, cid, ctx in batch]

    def classify_in_flight(self, cid: int, fn: int, args: list[int]) -> None:
        """A classify of callout `cid` that another processor is executing
        when the driver next calls into the engine (see the barrier rule)."""
        self.in_flight.setdefault(cid, []).append((fn, args))

    def _finish_in_flight(self, cid: int | None = None) -> list[tuple[int, list[int]]]:
        done = []
        for c in ([cid] if cid is not None else list(self.in_flight)):
            for call in self.in_flight.pop(c, []):
                self.barrier_completed.append(c)
                done.append(call)
        return done

    # Spin locks and IRQL ----------------------------------------------------
    #
    # One processor: the emulated thread. Rules, each from Microsoft's pages:
    # - KeAcquireSpinLockRaiseToDpc and KeAcquireInStackQueuedSpinLock are
    #   called at IRQL <= DISPATCH_LEVEL and raise it to DISPATCH_LEVEL;
    #   KeAcquireSpinLockRaiseToDpc returns the IRQL it found
    #   ("KeAcquireSpinLockRaiseToDpc function (wdm.h)").
    # - KeReleaseSpinLock is called at IRQL = DISPATCH_LEVEL with NewIrql
    #   "the OldIrql returned by KeAcquireSpinLock", and restores it
    #   ("KeReleaseSpinLock macro (wdm.h)"); KeReleaseInStackQueuedSpinLock
    #   restores the IRQL saved in the handle.
    # - "Attempting to acquire a spin lock recursively is guaranteed to cause
    #   a deadlock", and nested acquisitions must always happen in the same
    #   order ("Preventing Errors and Deadlocks While Using Spin Locks"): the
    #   model records every nesting (outer -> inner) and reports an
    #   acquisition that closes a cycle.
    # - A lock is released by its holder only; the IRQL may not drop below
    #   DISPATCH_LEVEL while another spin lock is still held; the driver
    #   returns to the system holding none, at the IRQL it was called at.
    # - "A driver must not call outside routines (such as IoCompleteRequest)
    #   while holding a spin lock" ("Points to Consider When Canceling
    #   IRPs"): see _complete_request.

    def _require_irql(self, api: str, maximum: int) -> None:
        # rule K1: the routine's documented maximum IRQL.
        if self.irql > maximum:
            self.pool_errors.append(f"{api} called at IRQL {self.irql} (at most {maximum})")

    def _reaches(self, start: int, goal: int) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(self.lock_order.get(node, ()))
        return False

    def _lock_acquire(self, api: str, lock: int, kind: str, handle: int = 0) -> int:
        self._require_irql(api, DISPATCH_LEVEL)
        if any(held == lock for held, _, _, _ in self.lock_stack):  # rule K4
            self.pool_errors.append(f"{api}({lock:#x}): acquired while already held (deadlock)")
        for held, _, _, _ in self.lock_stack:  # rule K5: one nesting order
            inner = self.lock_order.setdefault(held, set())
            if lock not in inner and held != lock:
                if self._reaches(lock, held):
                    self.pool_errors.append(f"{api}({lock:#x}): lock order inversion with {held:#x} "
                                            "(acquired in the opposite order elsewhere)")
                inner.add(lock)
        old = self.irql  # rule K2: raise to DISPATCH_LEVEL, return the old IRQL
        self.lock_stack.append((lock, kind, old, handle))
        self.irql = DISPATCH_LEVEL
        self.lock_acquisitions += 1
        self.max_lock_depth = max(self.max_lock_depth, len(self.lock_stack))
        return old

    def _lock_release(self, api: str, match, new_irql: int | None = None) -> None:
        index = next((i for i, entry in enumerate(self.lock_stack) if match(entry)), None)
        if index is None:  # rule K3
            self.pool_errors.append(f"{api}: releases a lock that is not held")
            return
        lock, kind, old, _ = self.lock_stack.pop(index)
        if self.irql != DISPATCH_LEVEL:
            self.pool_errors.append(f"{api}({lock:#x}) at IRQL {self.irql} (must be DISPATCH_LEVEL)")
        if new_irql is not None and new_irql != old:  # rule K2
            self.pool_errors.append(f"{api}({lock:#x}): NewIrql {new_irql} is not the IRQL {old} "
                                    "its acquisition returned")
        self.irql = old if new_irql is None else new_irql
        if self.lock_stack and self.irql < DISPATCH_LEVEL:  # rule K6
            self.pool_errors.append(f"{api}({lock:#x}): IRQL lowered to {self.irql} while "
                                    f"{self.lock_stack[-1][0]:#x} is still held")

    @property
    def spin_depth(self) -> int:
        return len(self.lock_stack)

    def _queued_acquire(self, emu, api, orig, argv):
        """KeAcquireInStackQueuedSpinLock(SpinLock, LockHandle): the handle
        (on the caller's stack) names this acquisition for its release."""
        lock, handle = argv[0], argv[1]
        # rule K8: one acquisition per KLOCK_QUEUE_HANDLE, released through it.
        if any(h == handle for _, kind, _, h in self.lock_stack if kind == "queued"):
            self.pool_errors.append(f"{api}: handle {handle:#x} already holds a lock")
        self._lock_acquire(api, lock, "queued", handle)
        return 0

    def _queued_release(self, emu, api, orig, argv):
        handle = argv[0]
        self._lock_release(api, lambda entry: entry[1] == "queued" and entry[3] == handle)
        return 0

    def _spin_acquire(self, emu, api, orig, argv):
        """KeAcquireSpinLockRaiseToDpc(SpinLock) -> old IRQL. The lock must
        have been initialised (KeInitializeSpinLock stores 0) and be free."""
        lock = argv[0]
        if self.u64(lock) != 0:  # rule K7
            self.pool_errors.append(f"{api}({lock:#x}): not an initialised, free spin lock")
        return self._lock_acquire(api, lock, "spin")

    def _spin_release(self, emu, api, orig, argv):
        lock, new_irql = argv[0], argv[1] & 0xFF
        self._lock_release(api, lambda entry: entry[1] == "spin" and entry[0] == lock, new_irql)
        return 0

    def _dbg_print(self, emu, api, orig, argv):
        fmt = self.cstr(argv[0])
        text = self.cstr(argv[1]) if fmt == "%s" else fmt
        self.log.append(text.rstrip("\n"))
        return 0

    def _complete_request(self, emu, api, orig, argv):
        """IofCompleteRequest(Irp, PriorityBoost). Checked: an IRP the test
        sent, completed once (a second completion is the bugcheck
        MULTIPLE_IRP_COMPLETE_REQUESTS), not while still in the driver's
        cancel-safe queue, with no cancel routine left set (a cancelable
        IRP must be made non-cancelable before it is completed: "Cancel
        Routines", IoSetCancelRoutine), not STATUS_PENDING, at IRQL <=
        DISPATCH_LEVEL and with no spin lock held. The I/O manager's copy
        of the output (METHOD_BUFFERED: IoStatus.Information bytes of the
        system buffer) is taken now: the driver no longer owns the IRP."""
        irp = argv[0]
        self.completed_irps.append(irp)
        self._require_irql(api, DISPATCH_LEVEL)
        if self.lock_stack:  # rule K10
            self.pool_errors.append(f"{api}({irp:#x}) called holding spin lock {self.lock_stack[-1][0]:#x}")
        status, _, information = struct.unpack("<IIQ", self.se.mem_read(irp + self.IRP_IO_STATUS, 16))
        rec = self.irps.get(irp)
        self._record("IofCompleteRequest", (irp, status), None)
        if rec is None:
            self.pool_errors.append(f"{api}({irp:#x}): not an IRP sent to the driver")
            return 0
        if rec.completions:  # rule K11
            self.pool_errors.append(f"{api}({irp:#x}): completed twice (MULTIPLE_IRP_COMPLETE_REQUESTS)")
        if rec.queued:  # rule K13
            self.pool_errors.append(f"{api}({irp:#x}): completed while still in the cancel-safe queue")
        if self.u64(irp + self.IRP_CANCEL_ROUTINE):  # rule K12
            self.pool_errors.append(f"{api}({irp:#x}): completed with a cancel routine set")
        if status == L.STATUS_PENDING:
            self.pool_errors.append(f"{api}({irp:#x}): completed with STATUS_PENDING")
        # rule K16: the I/O manager copies Information bytes back.
        copied = min(information, rec.out_len) if rec.method == 0 and rec.system_buffer else 0
        output = self.se.mem_read(rec.system_buffer, copied) if copied else b""
        rec.completions.append(Completion(status, information, output, len(self.calls) - 1, self.irql))
        return 0

    # The cancel-safe IRP queue ------------------------------------------------
    #
    # IoCsqInitialize / IoCsqInsertIrp / IoCsqRemoveNextIrp and the cancel
    # routine they install, as Microsoft documents them ("Cancel-Safe IRP
    # Queues"; the reference pages of each routine and callback). The
    # driver's callbacks are guest code and are called as such, read from
    # the IO_CSQ each time (as the system does). The model keeps its own
    # list of the IRPs that are in the queue, to check what the driver's
    # callbacks hand back.

    IO_TYPE_CSQ = 2  # wdm.h
    IO_CSQ_SIZE = 0x40
    CSQ_INSERT, CSQ_REMOVE, CSQ_PEEK, CSQ_ACQUIRE, CSQ_RELEASE, CSQ_COMPLETE = 8, 16, 24, 32, 40, 48

    def _csq_initialize(self, emu, api, orig, argv):
        """IoCsqInitialize(Csq, Insert, Remove, PeekNext, AcquireLock,
        ReleaseLock, CompleteCanceledIrp): fills the IO_CSQ (any IRQL).
        "STATUS_SUCCESS on success, or the appropriate NTSTATUS error code
        on failure" (so it can be made to fail)."""
        api = "IoCsqInitialize"  # rule K18
        csq, callbacks = argv[0], argv[1:7]
        fault = self._fault(api)
        if fault is not None:
            return self._record(api, (csq,), fault)
        if not all(callbacks):
            self.pool_errors.append(f"{api}: a callback is NULL")
        raw = struct.pack("<Q6QQ", self.IO_TYPE_CSQ, *[c & MASK64 for c in callbacks], 0)
        self.se.mem_write(csq, raw)
        self.csqs[csq] = []
        return self._record(api, (csq,), L.STATUS_SUCCESS)

    def _csq_callback(self, csq: int, offset: int) -> int:
        if csq not in self.csqs:  # rule K18: only a queue IoCsqInitialize filled
            raise RuntimeError(f"IoCsq* on {csq:#x}, which IoCsqInitialize never initialised")
        if self.u32(csq) != self.IO_TYPE_CSQ:
            self.pool_errors.append(f"IO_CSQ {csq:#x} overwritten (Type {self.u32(csq):#x})")
        return self.u64(csq + offset)

    def _csq_lock(self, api: str, csq: int):
        """CsqAcquireLock(Csq, &Irql): the driver's callback must take a lock
        (the queue's), leaving the model one more lock held."""
        depth = len(self.lock_stack)  # rule K23
        out = self.palloc(8)
        self.se.mem_write(out, b"\xee" * 8)
        yield (self._csq_callback(csq, self.CSQ_ACQUIRE), [csq, out])
        if len(self.lock_stack) != depth + 1:
            self.pool_errors.append(f"{api}: CsqAcquireLock did not acquire exactly one lock")
        return self.u8(out)

    def _csq_unlock(self, api: str, csq: int, irql: int):
        depth = len(self.lock_stack)  # rule K23
        yield (self._csq_callback(csq, self.CSQ_RELEASE), [csq, irql])
        if len(self.lock_stack) != depth - 1:
            self.pool_errors.append(f"{api}: CsqReleaseLock did not release the queue's lock")

    def _irp_record(self, api: str, irp: int) -> IrpRecord | None:
        rec = self.irps.get(irp)
        if rec is None:
            self.pool_errors.append(f"{api}({irp:#x}): not an IRP sent to the driver")
        elif rec.completions:
            self.pool_errors.append(f"{api}({irp:#x}): the IRP was already completed")
        return rec

    def _csq_insert_irp(self, emu, api, orig, argv):
        api = "IoCsqInsertIrp"
        csq, irp, context = argv[0], argv[1], argv[2]
        self._record(api, (irp,), None)
        return self._csq_insert(api, csq, irp, context)

    def _csq_insert(self, api: str, csq: int, irp: int, context: int):
        """IoCsqInsertIrp (IRQL <= DISPATCH_LEVEL): "1. Calls the queue's
        CsqAcquireLock routine to lock the queue. 2. Calls the queue's
        CsqInsertIrp routine to insert the IRP. 3. Marks the IRP as pending.
        4. Calls the queue's CsqReleaseLock routine to unlock the queue. If
        the IRP to be inserted has already been canceled, IoCsqInsertIrp does
        not attempt to insert the IRP into the queue." Such an IRP is still
        marked pending (the driver returns STATUS_PENDING after the call,
        whatever happened) and is handed to CsqCompleteCanceledIrp after the
        lock is released ("The system calls this routine to complete a
        canceled IRP"). The IRP becomes cancelable: its cancel routine is
        the system's, which IoCancelIrp calls. The IoCsqXxx routines keep
        their context in Tail.Overlay.DriverContext[3] ("drivers ... must
        leave that member unused")."""
        self._require_irql(api, DISPATCH_LEVEL)  # rule K19
        rec = self._irp_record(api, irp)
        queue = self.csqs.get(csq)
        if queue is None:
            raise RuntimeError(f"{api}: {csq:#x} was never initialised")
        irql = yield from self._csq_lock(api, csq)
        self.w64(irp + self.IRP_DRIVER_CONTEXT_3, context or csq)
        if context:
            # IO_CSQ_IRP_CONTEXT { ULONG Type; PIRP Irp; PIO_CSQ Csq; }
            self.se.mem_write(context, struct.pack("<QQQ", 1, irp, csq))
        cancelled = self.u8(irp + self.IRP_CANCEL) != 0
        if not cancelled:
            yield (self._csq_callback(csq, self.CSQ_INSERT), [csq, irp])
            queue.append(irp)
            if rec is not None:
                rec.queued, rec.inserted_at = True, len(self.calls)
            self.w64(irp + self.IRP_CANCEL_ROUTINE, self.CSQ_CANCEL_ROUTINE)
        stack = self.u64(irp + self.IRP_CURRENT_STACK_LOCATION)
        self.se.mem_write(stack + self.IOSL_CONTROL, bytes([self.u8(stack + self.IOSL_CONTROL) | self.SL_PENDING_RETURNED]))
        yield from self._csq_unlock(api, csq, irql)
        if cancelled:
            self.w64(irp + self.IRP_DRIVER_CONTEXT_3, 0)
            yield (self._csq_callback(csq, self.CSQ_COMPLETE), [csq, irp])
        return 0

    def _csq_remove_next_irp(self, emu, api, orig, argv):
        api = "IoCsqRemoveNextIrp"
        csq, peek_context = argv[0], argv[1]
        self._record(api, (peek_context,), None)
        return self._csq_remove_next(api, csq, peek_context)

    def _csq_remove_next(self, api: str, csq: int, peek_context: int):
        """IoCsqRemoveNextIrp (IRQL <= DISPATCH_LEVEL): "1. Calls the queue's
        CsqAcquireLock routine to lock the queue. 2. Calls the queue's
        CsqPeekNextIrp routine to find the next matching IRP in the queue
        [passing PeekContext]. 3. If the return value of CsqPeekNextIrp is
        non-NULL, IoCsqRemoveNextIrp calls the queue's CsqRemoveIrp routine
        to remove the IRP. 4. Calls the queue's CsqReleaseLock routine." It
        "only returns IRPs that have not yet been canceled": an IRP whose
        cancel routine IoCancelIrp has already taken (its cancellation is
        under way on another processor) is passed over — CsqPeekNextIrp is
        asked for the next one after it — and left to the cancel routine.
        The IRP handed out is no longer cancelable (cancel routine cleared)."""
        self._require_irql(api, DISPATCH_LEVEL)  # rule K20
        queue = self.csqs.get(csq)
        if queue is None:
            raise RuntimeError(f"{api}: {csq:#x} was never initialised")
        irql = yield from self._csq_lock(api, csq)
        found, after = 0, 0
        for _ in range(len(queue) + 1):
            candidate = (yield (self._csq_callback(csq, self.CSQ_PEEK), [csq, after, peek_context])) & MASK64
            if candidate == 0:
                break
            if candidate not in queue:
                self.pool_errors.append(f"{api}: CsqPeekNextIrp returned {candidate:#x}, which is not queued")
                break
            if queue.index(candidate) < (queue.index(after) + 1 if after else 0):
                self.pool_errors.append(f"{api}: CsqPeekNextIrp went backwards")
                break
            routine = self.u64(candidate + self.IRP_CANCEL_ROUTINE)
            if routine == 0:
                after = candidate  # being cancelled: not ours to hand out
                continue
            self.w64(candidate + self.IRP_CANCEL_ROUTINE, 0)
            yield (self._csq_callback(csq, self.CSQ_REMOVE), [csq, candidate])
            self._csq_took(candidate, queue)
            found = candidate
            break
        yield from self._csq_unlock(api, csq, irql)
        return found

    def _csq_took(self, irp: int, queue: list[int]) -> None:
        queue.remove(irp)
        if self.u64(irp + self.IRP_DRIVER_CONTEXT_3) not in self.csqs:  # rule K22
            self.pool_errors.append(f"IRP {irp:#x}: DriverContext[3] changed while queued (the CSQ's)")
        self.w64(irp + self.IRP_DRIVER_CONTEXT_3, 0)
        rec = self.irps.get(irp)
        if rec is not None:
            rec.queued = False

    def _cancel_begin(self, irp: int) -> int:
        """IoCancelIrp up to the cancel routine: with the cancel spin lock
        held (IRQL DISPATCH_LEVEL) set Irp->Cancel and take the cancel
        routine (NULL'ing it, so that nobody else can). Returns the routine
        taken (0: the IRP was not cancelable; "IoCancelIrp sets the IRP's
        cancel bit and returns FALSE")."""
        rec = self._irp_record("IoCancelIrp", irp)  # rule K17
        if rec is None or rec.completions:
            raise RuntimeError(f"IoCancelIrp({irp:#x}): not a live IRP")
        self.se.mem_write(irp + self.IRP_CANCEL, b"\x01")
        routine = self.u64(irp + self.IRP_CANCEL_ROUTINE)
        self.w64(irp + self.IRP_CANCEL_ROUTINE, 0)
        self._record("IoCancelIrp", (irp,), int(routine != 0))
        return routine

    def _cancel_routine(self, irp: int, routine: int):
        """The cancel routine IoCsqInsertIrp installed, as the I/O manager
        calls it ("Implementing a Cancel Routine": Cancel set and
        CancelRoutine NULL'ed before the call, cancel spin lock held; the
        routine releases it with Irp->CancelIrql): the CSQ then locks the
        queue, calls CsqRemoveIrp, unlocks, and calls CsqCompleteCanceledIrp
        ("the system always calls the queue's CsqRemoveIrp routine ... before
        calling CsqCompleteCanceledIrp")."""
        # rule K21
        if routine != self.CSQ_CANCEL_ROUTINE:
            raise RuntimeError(f"IRP {irp:#x} carries a cancel routine {routine:#x} the model did not install")
        csq = self.u64(irp + self.IRP_DRIVER_CONTEXT_3)
        queue = self.csqs.get(csq)
        if queue is None:
            raise RuntimeError(f"IRP {irp:#x}: DriverContext[3] ({csq:#x}) is not a queue")
        irql = yield from self._csq_lock("cancel routine", csq)
        yield (self._csq_callback(csq, self.CSQ_REMOVE), [csq, irp])
        self._csq_took(irp, queue)
        yield from self._csq_unlock("cancel routine", csq, irql)
        yield (self._csq_callback(csq, self.CSQ_COMPLETE), [csq, irp])

    def _cancel(self, irp: int):
        caller = self.irql
        self._require_irql("IoCancelIrp", DISPATCH_LEVEL)
        self.irql = DISPATCH_LEVEL  # IoAcquireCancelSpinLock
        routine = self._cancel_begin(irp)
        self.se.mem_write(irp + self.IRP_CANCEL_IRQL, bytes([caller]))
        self.irql = caller  # the routine's IoReleaseCancelSpinLock(Irp->CancelIrql), or IoCancelIrp's own
        if routine == 0:
            return 0
        yield from self._cancel_routine(irp, routine)
        return 1

    def cancel_irp(self, irp: int, irql: int = PASSIVE_LEVEL) -> bool:
        """IoCancelIrp(Irp), from another thread (CancelIoEx, thread exit):
        "sets the cancel bit in a given IRP and calls the cancel routine for
        the IRP if there is one"; returns whether it called one."""
        return bool(self.run_model(self._cancel(irp), irql, "IoCancelIrp"))

    def begin_cancel(self, irp: int) -> int:
        """The first half of IoCancelIrp on another processor: the cancel bit
        is set and the cancel routine taken, but the routine has not run yet
        (a window in which the driver may look for the IRP). Returns the
        routine for `finish_cancel`."""
        caller = self.irql
        self._require_irql("IoCancelIrp", DISPATCH_LEVEL)
        self.irql = DISPATCH_LEVEL
        try:
            routine = self._cancel_begin(irp)
        finally:
            self.irql = caller
        self.se.mem_write(irp + self.IRP_CANCEL_IRQL, bytes([PASSIVE_LEVEL]))
        return routine

    def finish_cancel(self, irp: int, routine: int) -> None:
        if routine:
            self.run_model(self._cancel_routine(irp, routine), PASSIVE_LEVEL, "cancel routine")

    # ETW ---------------------------------------------------------------------
    EVENT_CONTROL_CODE_ENABLE_PROVIDER = 1

    def guid_at(self, addr: int) -> str:
        d1, d2, d3 = struct.unpack("<IHH", self.se.mem_read(addr, 8))
        d4 = self.se.mem_read(addr + 8, 8)
        return f"{d1:08x}-{d2:04x}-{d3:04x}-{d4[:2].hex()}-{d4[2:].hex()}"

    def _enable_calls(self, handle: int, level: int, keywords: int) -> list[tuple[int, list[int]]]:
        r = self.etw[handle]
        return [(r["callback"], [r["guid_addr"], self.EVENT_CONTROL_CODE_ENABLE_PROVIDER, level,
                                 keywords, 0, 0, r["context"]])]

    def _etw_register(self, emu, api, orig, argv):
        guid_addr, callback, context, out = argv[:4]
        guid = self.guid_at(guid_addr)
        fault = self._fault("EtwRegister")  # rule T1
        if fault is not None:
            return self._record("EtwRegister", (guid,), fault)
        handle = self.etw_next
        self.etw_next += 1
        # ETW keeps the GUID pointer's value, not the pointer: copy it.
        copy = self.alloc(16)
        self.se.mem_write(copy, self.se.mem_read(guid_addr, 16))
        self.etw[handle] = {"guid": guid, "callback": callback, "context": context, "guid_addr": copy}
        self.se.mem_write(out, struct.pack("<Q", handle))
        self._record("EtwRegister", (guid,), L.STATUS_SUCCESS)
        if self.etw_session is not None and callback:
            # rule T1: a session already running enables the provider inside EtwRegister.
            return self._redirect(emu, self._enable_calls(handle, *self.etw_session), L.STATUS_SUCCESS)
        return L.STATUS_SUCCESS

    def enable_trace(self, level: int, keywords: int) -> None:
        """A session starts (or changes) and enables the provider."""
        for handle in list(self.etw):
            for fn, args in self._enable_calls(handle, level, keywords):
                self.call(fn, args)

    def _etw_unregister(self, emu, api, orig, argv):
        handle = argv[0]
        if handle not in self.etw:  # rule T2
            self.pool_errors.append(f"EtwUnregister({handle:#x}): not registered")
            return self._record("EtwUnregister", (handle,), L.STATUS_INVALID_HANDLE)
        del self.etw[handle]
        return self._record("EtwUnregister", (handle,), L.STATUS_SUCCESS)

    def _etw_set_information(self, emu, api, orig, argv):
        handle, cls, info, length = argv[0], argv[1] & 0xFFFFFFFF, argv[2], argv[3] & 0xFFFFFFFF
        if handle not in self.etw:  # rule T2
            self.pool_errors.append(f"EtwSetInformation({handle:#x}): not registered")
        if cls == 2:  # EventProviderSetTraits
            self.etw_traits.append(self.se.mem_read(info, length))
        return self._record("EtwSetInformation", (handle, cls), L.STATUS_SUCCESS)

    # TraceLogging in-types: fixed sizes; counted ones carry a u16 length.
    _TLG_FIXED = {3: ("<b", 1), 4: ("<B", 1), 5: ("<h", 2), 6: ("<H", 2), 7: ("<i", 4), 8: ("<I", 4),
                  9: ("<q", 8), 10: ("<Q", 8), 11: ("<f", 4), 12: ("<d", 8), 13: ("<i", 4),
                  17: ("<Q", 8), 20: ("<I", 4), 21: ("<Q", 8)}
    _TLG_COUNTED = {14, 22, 23, 25}

    @staticmethod
    def _cstr(b: bytes, pos: int) -> tuple[str, int]:
        end = b.index(b"\0", pos)
        return b[pos:end].decode("utf-8"), end + 1

    def _decode_event(self, meta: bytes, data: bytes) -> tuple[str, list[dict]]:
        # rule T4: the payload is exactly what the metadata describes.
        size = struct.unpack_from("<H", meta)[0]
        pos = 2
        while meta[pos] & 0x80:  # event tag bytes
            pos += 1
        pos += 1
        name, pos = self._cstr(meta, pos)
        fields, at = [], 0
        while pos < size:
            fname, pos = self._cstr(meta, pos)
            intype, outtype = meta[pos], 0
            pos += 1
            if intype & 0x80:
                outtype = meta[pos]
                pos += 1
                if outtype & 0x80:  # field tag
                    while meta[pos] & 0x80:
                        pos += 1
                    pos += 1
            base = intype & 0x1F
            if intype & 0x60:
                raise AssertionError(f"{name}.{fname}: arrays are not expected (in-type {intype:#x})")
            if base in self._TLG_FIXED:
                fmt, n = self._TLG_FIXED[base]
                (value,) = struct.unpack_from(fmt, data, at)
                at += n
            elif base == 15:
                value = data[at:at + 16]
                at += 16
            elif base in self._TLG_COUNTED:
                (n,) = struct.unpack_from("<H", data, at)
                value = data[at + 2:at + 2 + n]
                at += 2 + n
                if base == 23:
                    value = value.decode("utf-8")
            elif base == 2:
                value, at = self._cstr(data, at)
            else:
                raise AssertionError(f"{name}.{fname}: unexpected in-type {intype:#x}")
            fields.append({"name": fname, "in": base, "out": outtype & 0x7F, "value": value})
        if at != len(data):
            raise AssertionError(f"{name}: {len(data) - at} bytes of data not described by metadata")
        return name, fields

    def _etw_write_transfer(self, emu, api, orig, argv):
        handle, descriptor, _activity, _related, count, data = argv[:6]
        count &= 0xFFFFFFFF
        if handle not in self.etw:  # rule T2
            self.pool_errors.append(f"EtwWriteTransfer({handle:#x}): not a registered provider")
            return self._record("EtwWriteTransfer", (handle,), L.STATUS_INVALID_HANDLE)
        eid, version, channel, level, opcode, task, keyword = struct.unpack(
            "<HBBBBHQ", self.se.mem_read(descriptor, 16))
        meta, payload, provider = None, b"", None
        for i in range(count):
            ptr, size, kind = struct.unpack("<QII", self.se.mem_read(data + 16 * i, 16))
            chunk = self.se.mem_read(ptr, size) if size else b""
            if kind == 2:
                provider = chunk
            elif kind == 1:
                meta = chunk
            else:
                payload += chunk
        if meta is None or provider is None:
            self.pool_errors.append("EtwWriteTransfer without TraceLogging metadata")
            return self._record("EtwWriteTransfer", (handle,), L.STATUS_INVALID_PARAMETER)
        name, fields = self._decode_event(meta, payload)
        self.events.append({"name": name, "level": level, "keyword": keyword, "channel": channel,
                            "provider": self._cstr(provider, 2)[0], "fields": fields,
                            "values": {f["name"]: f["value"] for f in fields},
                            "call_index": len(self.calls)})
        return self._record("EtwWriteTransfer", (handle, name), L.STATUS_SUCCESS)

    def events_named(self, name: str) -> list[dict]:
        return [ev for ev in self.events if ev["name"] == name]

    # fwpkclnt ---------------------------------------------------------------
    def _callout_register1(self, emu, api, orig, argv):
        callout = self.read(L.FWPS_CALLOUT1, argv[1])
        key = callout.calloutKey.text()  # rule E1
        fault = self._fault("FwpsCalloutRegister1")
        if fault is not None:
            return self._record("FwpsCalloutRegister1", (key,), fault)
        if argv[0] not in self.devices:
            return self._record("FwpsCalloutRegister1", (key,), L.STATUS_INVALID_PARAMETER)
        if any(c.key == key and c.registered for c in self.callouts.values()):
            return self._record("FwpsCalloutRegister1", (key,), L.STATUS_FWP_ALREADY_EXISTS)
        cid = self.next_callout_id
        self.next_callout_id += 1
        self.callouts[cid] = Callout(cid, key, callout.flags, callout.classifyFn,
                                     callout.notifyFn, callout.flowDeleteFn)
        if argv[2]:
            self.se.mem_write(argv[2], struct.pack("<I", cid))
        return self._record("FwpsCalloutRegister1", (key,), L.STATUS_SUCCESS)

    def _contexts_of(self, cid):
        # rule E9: a context whose deletion is pending still counts.
        live = [k for k in self.contexts if k[2] == cid]
        pend = [k for k in self.pending_keys if k[2] == cid]
        return live + pend

    def _run_pending(self, all_of_them: bool = True) -> list[tuple[int, list[int]]]:
        """Completes the deferred deletions that are due (all of them, or
        those whose remaining waits ran out); returns the guest calls."""
        if all_of_them:
            batch, self.pending = self.pending, []
        else:
            self.pending_left = {k: n - 1 for k, n in self.pending_left.items()}
            batch = [p for p in self.pending if self.pending_left[p[1:4]] <= 0]
            self.pending = [p for p in self.pending if self.pending_left[p[1:4]] > 0]
        for _, flow, layer, cid, ctx in batch:
            self.pending_keys.discard((flow, layer, cid))
            self.flow_deletes.append((layer, cid, ctx))
            self.deferred_delete_at.append(len(self.calls))
        return [(fn, [layer, cid, ctx]) for fn, _, layer, cid, ctx in batch]

    def _callout_unregister(self, emu, api, orig, argv):
        cid = argv[0] & 0xFFFFFFFF
        deferred = self._run_pending() if self.pending_runs_on == "unregister" else []
        c = self.callouts.get(cid)
        if c is None or not c.registered:  # rule E3
            rv = L.STATUS_FWP_CALLOUT_NOT_FOUND
        elif self.clock < self.in_use_until:  # rule E13
            rv = L.STATUS_FWP_IN_USE
        elif (self.not_found_while_owed and self._contexts_of(cid)
              and not any(k[2] == cid for k in self.contexts)
              and not (self.in_flight.get(cid) and self.barrier == "busy")):
            # rule E14: only deferred deletions left: let go early (with the barrier).
            deferred = deferred + self._finish_in_flight(cid)
            c.registered = False
            self.early_not_found += 1
            rv = L.STATUS_FWP_CALLOUT_NOT_FOUND
        elif self._contexts_of(cid):  # rule E2
            rv = L.STATUS_DEVICE_BUSY
        elif self.in_flight.get(cid) and self.barrier == "busy":  # rule E5
            rv = L.STATUS_DEVICE_BUSY
        else:
            fault = self._fault("FwpsCalloutUnregisterById0")
            rv = L.STATUS_SUCCESS if fault is None else fault
            if rv == L.STATUS_SUCCESS:
                # rule E4: classifies of the callout still executing
                # finish before the call returns.
                deferred = deferred + self._finish_in_flight(cid)
                c.registered = False
        self._record("FwpsCalloutUnregisterById0", (cid,), rv)
        return self._redirect(emu, deferred, rv) if deferred else rv

    def _injection_create(self, emu, api, orig, argv):
        fault = self._fault("FwpsInjectionHandleCreate0")  # rule E15
        if fault is not None:
            return self._record("FwpsInjectionHandleCreate0", (argv[0], argv[1]), fault)
        handle = self.alloc(16)
        self.injection_handles.add(handle)
        self.se.mem_write(argv[2], struct.pack("<Q", handle))
        return self._record("FwpsInjectionHandleCreate0", (argv[0], argv[1]), L.STATUS_SUCCESS)

    def _injection_destroy(self, emu, api, orig, argv):
        ok = argv[0] in self.injection_handles  # rule E15: a live handle, once
        self.injection_handles.discard(argv[0])
        self.destroyed_handles.append(argv[0])
        rv = L.STATUS_SUCCESS if ok else L.STATUS_INVALID_PARAMETER
        return self._record("FwpsInjectionHandleDestroy0", (argv[0],), rv)

    def _flow_associate(self, emu, api, orig, argv):
        flow, layer, cid, ctx = argv[0], argv[1] & 0xFFFF, argv[2] & 0xFFFFFFFF, argv[3]
        fault = self._fault("FwpsFlowAssociateContext0")
        c = self.callouts.get(cid)
        if fault is not None:
            rv = fault
        elif c is None or not c.registered:  # rule E3
            rv = L.STATUS_FWP_CALLOUT_NOT_FOUND
        elif (flow, layer, cid) in self.contexts:  # rule E6
            rv = 0x40000000  # STATUS_OBJECT_NAME_EXISTS
        else:
            self.contexts[(flow, layer, cid)] = ctx
            rv = L.STATUS_SUCCESS
        return self._record("FwpsFlowAssociateContext0", (flow, layer, cid), rv)

    def _flow_remove(self, emu, api, orig, argv):
        flow, layer, cid = argv[0], argv[1] & 0xFFFF, argv[2] & 0xFFFFFFFF
        key = (flow, layer, cid)
        ctx = self.contexts.get(key)
        if ctx is None:  # rule E8
            return self._record("FwpsFlowRemoveContext0", key, L.STATUS_UNSUCCESSFUL)
        mode = self.remove_mode(flow, layer, cid)
        if isinstance(mode, int):
            # rule E10: "Other status codes: an error occurred": the context stays.
            return self._record("FwpsFlowRemoveContext0", key, mode)
        del self.contexts[key]
        fn = self.callouts[cid].flow_delete
        if mode == "pending":  # rule E9
            self.pending.append((fn, flow, layer, cid, ctx))
            self.pending_keys.add(key)
            self.pending_left[key] = self.pending_waits
            if self.pending_delay is not None:
                self.pending_due[key] = self.clock + self.pending_delay
            return self._record("FwpsFlowRemoveContext0", key, L.STATUS_PENDING)
        self.flow_deletes.append((layer, cid, ctx))  # rule E8: flowDeleteFn inside the call
        self._record("FwpsFlowRemoveContext0", key, L.STATUS_SUCCESS)
        return self._redirect(emu, [(fn, [layer, cid, ctx])], L.STATUS_SUCCESS)

    # ---------------------------------------------------------------- driving
    def driver_entry(self) -> int:
        self._entered(PASSIVE_LEVEL)
        self._guarded("DriverEntry", lambda: self.se.run_module(self.module, all_entrypoints=False))
        run = self.se.emu.runs[0]
        if getattr(run, "error", None):
            self._co_stack.clear()
            self.lock_stack.clear()
            raise RuntimeError(f"DriverEntry faulted: {run.error}")
        self._returned("DriverEntry", PASSIVE_LEVEL)
        return (run.ret_val or 0) & 0xFFFFFFFF

    @property
    def unload_routine(self) -> int:
        return self.u64(self.driver_object + DRIVER_UNLOAD_OFFSET) if self.driver_object else 0

    def major_function(self, index: int) -> int:
        return self.u64(self.driver_object + MAJOR_FUNCTION_OFFSET + 8 * index)

    def unload(self) -> None:
        routine = self.unload_routine
        if not routine:
            raise RuntimeError("the driver set no unload routine")
        self.call(routine, [self.driver_object])

    def callout_by_key(self, key: str) -> Callout:
        for c in self.callouts.values():
            if c.key == key:
                return c
        raise KeyError(key)

    # classify -----------------------------------------------------------------
    def _values(self, layer: int, values: list[tuple[int, int]]) -> int:
        arr = (L.FWP_VALUE0 * len(values))()
        for i, (typ, val) in enumerate(values):
            arr[i].type = typ
            arr[i].value = val
        arr_addr = self.put(arr)
        return self.put(L.FWPS_INCOMING_VALUES0(layerId=layer, valueCount=len(values),
                                               incomingValue=arr_addr))

    def _address(self, family: int, addr: int | bytes) -> tuple[int, int]:
        if family == 4:
            return (L.FWP_UINT32, addr)
        return (L.FWP_BYTE_ARRAY16_TYPE, self.put((C.c_uint8 * 16)(*addr)))

    UNTOUCHED_ACTION = 0xAAAA

    def classify_call(self, fn: int, values: int, meta: int, layer_data: int, flow_context: int,
                      rights: int = L.FWPS_RIGHT_ACTION_WRITE) -> tuple[int, list[int], int]:
        """(function, arguments, classifyOut address) of one classify call.
        The filter passed is `self.filter` (an FWPS_FILTER1, or NULL)."""
        if not any(c.registered and c.classify == fn for c in self.callouts.values()):
            # rules E4 and E5: no classify of a callout starts once it is
            # unregistered (or before it is registered).
            raise RuntimeError(f"the engine would not call classify {fn:#x}: no registered callout")
        out = self.put(L.FWPS_CLASSIFY_OUT0(actionType=self.UNTOUCHED_ACTION, rights=rights))
        filt = self.put(self.filter) if self.filter is not None else 0
        return fn, [values, meta, layer_data, 0, filt, flow_context, out], out

    # The filter the engine passes to classify (None: a NULL pointer).
    filter: "L.FWPS_FILTER1 | None" = None

    # rule K1: classifyFn and flowDeleteFn run at IRQL <= DISPATCH_LEVEL
    # (tcpip indicates at DISPATCH_LEVEL); the harness uses the highest.
    CALLOUT_IRQL = DISPATCH_LEVEL

    def classify(self, fn: int, values: int, meta: int, layer_data: int, flow_context: int,
                 rights: int = L.FWPS_RIGHT_ACTION_WRITE) -> L.FWPS_CLASSIFY_OUT0:
        fn, args, out = self.classify_call(fn, values, meta, layer_data, flow_context, rights)
        self.call(fn, args, self.CALLOUT_IRQL)
        return self.read(L.FWPS_CLASSIFY_OUT0, out)

    def establish(self, *args, **kwargs) -> L.FWPS_CLASSIFY_OUT0:
        fn, call_args, out = self.establish_call(*args, **kwargs)
        self.call(fn, call_args, self.CALLOUT_IRQL)
        return self.read(L.FWPS_CLASSIFY_OUT0, out)

    def advance_clock(self, delta_100ns: int) -> None:
        """Time passes (interrupt time, 100 ns units)."""
        self._set_clock(self.clock + delta_100ns)

    def establish_call(self, key: str, family: int, protocol: int, local, lport: int, remote,
                       rport: int, direction: int, flow_handle: int, pid: int | None,
                       rights: int = L.FWPS_RIGHT_ACTION_WRITE, metadata_fields: int | None = None,
                       path: str | bytes | None = None):
        """Arguments of a flow-established classify for a new flow. The
        metadata carries the flow handle, the process id (`pid`; None: the
        field is absent) and the process path (`path`: a str is passed as
        the engine does, an FWP_BYTE_BLOB of its UTF-16LE bytes with the
        terminating NUL counted; bytes are passed as the blob's data as
        they are; None: the field is absent)."""
        c = self.callout_by_key(key)
        layer = L.FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4 if family == 4 else L.FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6
        vals = [(0, 0)] * L.FE_COUNT
        vals[L.FE_LOCAL_ADDRESS] = self._address(family, local)
        vals[L.FE_REMOTE_ADDRESS] = self._address(family, remote)
        vals[L.FE_LOCAL_PORT] = (L.FWP_UINT16, lport)
        vals[L.FE_REMOTE_PORT] = (L.FWP_UINT16, rport)
        vals[L.FE_PROTOCOL] = (L.FWP_UINT8, protocol)
        vals[L.FE_DIRECTION] = (L.FWP_UINT32, direction)
        fields = L.FWPS_METADATA_FIELD_FLOW_HANDLE
        if pid is not None:
            fields |= L.FWPS_METADATA_FIELD_PROCESS_ID
        blob = 0
        if path is not None:
            fields |= L.FWPS_METADATA_FIELD_PROCESS_PATH
            data = path.encode("utf-16-le") + b"\0\0" if isinstance(path, str) else path
            buffer = self.put((C.c_uint8 * max(len(data), 1))(*data)) if data else 0
            blob = self.put(L.FWP_BYTE_BLOB(size=len(data), data=buffer))
        if metadata_fields is not None:
            fields = metadata_fields
        meta = self.put(L.FWPS_INCOMING_METADATA_VALUES0(currentMetadataValues=fields,
                                                        flowHandle=flow_handle, processId=pid or 0,
                                                        processPath=blob))
        self.flow_processes[flow_handle] = (pid, path)
        return self.classify_call(c.classify, self._values(layer, vals), meta, 0, 0, rights)

    def context_of(self, flow_handle: int) -> tuple[tuple[int, int, int], int] | None:
        for k, ctx in self.contexts.items():
            if k[0] == flow_handle:
                return k, ctx
        return None

    def stream(self, flow_handle: int, nbytes: int, send: bool, rights=L.FWPS_RIGHT_ACTION_WRITE,
               direction_field: bool = True, missed: int = 0):
        """Stream data of a flow: FWPS_STREAM_DATA0 with the direction flag,
        and (as the engine supplies it) the layer's DIRECTION data field.
        `missed`: FWPS_STREAM_CALLOUT_IO_PACKET0.missedBytes, the bytes of the
        stream this callout did not see since its last classify (a
        higher-weight filter took them)."""
        (flow, layer, cid), ctx = self.context_of(flow_handle)  # rule E7
        data = self.put(L.FWPS_STREAM_DATA0(
            flags=L.FWPS_STREAM_FLAG_SEND if send else L.FWPS_STREAM_FLAG_RECEIVE, dataLength=nbytes))
        # Output fields start as garbage: what the driver writes is visible.
        packet = self.put(L.FWPS_STREAM_CALLOUT_IO_PACKET0(
            streamData=data, missedBytes=missed, countBytesRequired=0x77, countBytesEnforced=0x7777,
            streamAction=0x7))
        values = [(0, 0)] * L.ST_COUNT
        if direction_field:
            values[L.ST_DIRECTION] = (L.FWP_UINT32, L.FWP_DIRECTION_OUTBOUND if send else L.FWP_DIRECTION_INBOUND)
        meta = self.put(L.FWPS_INCOMING_METADATA_VALUES0())
        out = self.classify(self.callouts[cid].classify, self._values(layer, values), meta, packet, ctx, rights)
        return out, self.read(L.FWPS_STREAM_CALLOUT_IO_PACKET0, packet)

    def nbl(self, sizes: list[int]) -> int:
        nxt = 0
        for size in reversed(sizes):
            nxt = self.put(L.NET_BUFFER(Next=nxt, DataLength=size))
        return self.put(L.NET_BUFFER_LIST(FirstNetBuffer=nxt))

    def datagram(self, flow_handle: int, sizes: list[int], inbound: bool,
                 rights=L.FWPS_RIGHT_ACTION_WRITE, header_size: int | None = None, protocol: int = 17):
        """Datagrams of a flow: one NET_BUFFER of each size, as the layer
        indicates them ("Data offset positions": inbound from the payload,
        outbound from the transport header — `sizes` are what the engine
        passes, headers included outbound). `header_size` is the metadata's
        transportHeaderSize (None: the field is absent)."""
        (flow, layer, cid), ctx = self.context_of(flow_handle)  # rule E7
        nbl = self.nbl(sizes)
        vals = [(0, 0)] * L.DG_COUNT
        vals[L.DG_DIRECTION] = (L.FWP_UINT32, L.FWP_DIRECTION_INBOUND if inbound else L.FWP_DIRECTION_OUTBOUND)
        vals[L.DG_PROTOCOL] = (L.FWP_UINT8, protocol)
        if header_size is None:
            meta = self.put(L.FWPS_INCOMING_METADATA_VALUES0())
        else:
            meta = self.put(L.FWPS_INCOMING_METADATA_VALUES0(
                currentMetadataValues=L.FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE,
                transportHeaderSize=header_size))
        return self.classify(self.callouts[cid].classify, self._values(layer, vals), meta, nbl, ctx, rights)

    def _churn(self, flows, end: bool):
        for args, kwargs in flows:
            fn, call_args, _ = self.establish_call(*args, **kwargs)
            yield (fn, call_args)
            found = self.context_of(args[8]) if end else None
            if found is not None:  # rule E11
                (flow, layer, cid), ctx = found
                del self.contexts[(flow, layer, cid)]
                self.flow_deletes.append((layer, cid, ctx))
                yield (self.callouts[cid].flow_delete, [layer, cid, ctx])
        return 0

    def churn(self, flows, end: bool = True) -> None:
        """Many flows, one after another, as the engine calls the callouts
        (each flow-established classify, then — with `end` — the flow ends
        and its flowDeleteFn runs), in one emulator run (cheaper than a run
        per call; the calls are the same). `flows`: (args, kwargs) of
        `establish_call`."""
        self.run_model(self._churn(flows, end), self.CALLOUT_IRQL, "traffic")

    def end_flow(self, flow_handle: int) -> None:
        """The flow ends: the engine removes every context of it, calling each
        callout's flowDeleteFn."""
        for key in [k for k in self.contexts if k[0] == flow_handle]:  # rule E11
            ctx = self.contexts.pop(key)
            _, layer, cid = key
            self.flow_deletes.append((layer, cid, ctx))
            self.call(self.callouts[cid].flow_delete, [layer, cid, ctx], self.CALLOUT_IRQL)

    def api_sequence(self, *names: str) -> list[Call]:
        wanted = set(names)
        return [c for c in self.calls if c.api in wanted]

    # control device -------------------------------------------------------------
    IRP_MJ_CREATE, IRP_MJ_CLOSE, IRP_MJ_READ, IRP_MJ_WRITE = 0x00, 0x02, 0x03, 0x04
    IRP_MJ_DEVICE_CONTROL, IRP_MJ_CLEANUP = 0x0E, 0x12
    # x64 offsets (wdm.h; the same in the driver's bindings): IRP.AssociatedIrp.SystemBuffer,
    # IRP.IoStatus, IRP.Tail.Overlay.CurrentStackLocation; IO_STACK_LOCATION.Parameters.DeviceIoControl.
    IRP_SYSTEM_BUFFER, IRP_IO_STATUS, IRP_CURRENT_STACK_LOCATION, IRP_SIZE = 0x18, 0x30, 0xB8, 0xD0
    # IRP.Cancel, .CancelIrql, .CancelRoutine, .Tail.Overlay.DriverContext[3],
    # .Tail.Overlay.OriginalFileObject.
    IRP_CANCEL, IRP_CANCEL_IRQL, IRP_CANCEL_ROUTINE = 0x44, 0x45, 0x68
    IRP_DRIVER_CONTEXT_3, IRP_ORIGINAL_FILE_OBJECT = 0x90, 0xC0
    IOSL_CONTROL, SL_PENDING_RETURNED = 0x03, 0x01  # IoMarkIrpPending sets this bit
    IOSL_OUTPUT_LENGTH, IOSL_INPUT_LENGTH, IOSL_IOCTL_CODE, IOSL_SIZE = 0x08, 0x10, 0x18, 0x48
    # IO_STACK_LOCATION.DeviceObject, .FileObject; FILE_OBJECT.FileName (UNICODE_STRING), size.
    IOSL_DEVICE_OBJECT, IOSL_FILE_OBJECT, FILE_OBJECT_FILE_NAME, FILE_OBJECT_SIZE = 0x28, 0x30, 0x58, 0xD8

    def new_file_object(self, file_name: str = "") -> int:
        file_object = self.palloc(self.FILE_OBJECT_SIZE)
        name = file_name.encode("utf-16-le")
        buffer = self.palloc(len(name) + 2) if name else 0
        if name:
            self.se.mem_write(buffer, name + b"\0\0")
        self.se.mem_write(file_object + self.FILE_OBJECT_FILE_NAME,
                          struct.pack("<HHIQ", len(name), len(name) + 2 if name else 0, 0, buffer))
        return file_object

    def open_handle(self) -> int:
        """CreateFile on \\Device\\WfpMon: a new file object, IRP_MJ_CREATE."""
        file_object = self.new_file_object()
        status, _, _ = self.send_irp(self.IRP_MJ_CREATE, file_object=file_object)
        if status != L.STATUS_SUCCESS:
            raise AssertionError(f"IRP_MJ_CREATE failed: {status:#x}")
        return file_object

    def close_handle(self, file_object: int) -> None:
        """The last handle of `file_object` closes: IRP_MJ_CLEANUP now
        ("the driver should complete ... IRPs queued for the file object"),
        IRP_MJ_CLOSE once no IRP refers to the file object any more."""
        # rule K24
        status, _, _ = self.send_irp(self.IRP_MJ_CLEANUP, file_object=file_object)
        if status != L.STATUS_SUCCESS:
            raise AssertionError(f"IRP_MJ_CLEANUP failed: {status:#x}")
        live = [r for r in self.irps.values() if r.file_object == file_object and not r.completions]
        if not live:
            self.send_irp(self.IRP_MJ_CLOSE, file_object=file_object)

    def make_irp(self, major: int, code: int = 0, data: bytes = b"", out_len: int = 0,
                 file_name: str | None = "", file_object: int | None = None) -> IrpRecord:
        """An IRP as the I/O manager builds it: for METHOD_BUFFERED one system
        buffer of max(in, out) bytes; for METHOD_IN/OUT_DIRECT a system
        buffer holding only the input (the output would be an MDL); for
        METHOD_NEITHER no system buffer. `file_object`: the handle's file
        object; else a new one named `file_name` ("" the device itself,
        None: no file object)."""
        method = code & 3 if major == self.IRP_MJ_DEVICE_CONTROL else 0
        # rule K16: METHOD_BUFFERED: one system buffer of max(in, out) bytes.
        size = {0: max(len(data), out_len), 1: len(data), 2: len(data), 3: 0}[method]
        system_buffer = self.palloc(size) if size else 0
        if method == 3:
            data = b""  # METHOD_NEITHER: the input stays in the caller's space
        if data:
            self.se.mem_write(system_buffer, data)
        stack = self.palloc(self.IOSL_SIZE)
        self.se.mem_write(stack, bytes([major]))
        self.se.mem_write(stack + self.IOSL_OUTPUT_LENGTH, struct.pack("<I", out_len))
        self.se.mem_write(stack + self.IOSL_INPUT_LENGTH, struct.pack("<I", len(data)))
        self.se.mem_write(stack + self.IOSL_IOCTL_CODE, struct.pack("<I", code))
        self.w64(stack + self.IOSL_DEVICE_OBJECT, min(self.devices or {0}))
        if file_object is None and file_name is not None:
            file_object = self.new_file_object(file_name)
        file_object = file_object or 0
        self.w64(stack + self.IOSL_FILE_OBJECT, file_object)
        irp = self.palloc(self.IRP_SIZE)
        self.se.mem_write(irp + self.IRP_IO_STATUS, struct.pack("<IIQ", 0xDEADBEEF, 0, 0xDEAD))
        self.w64(irp + self.IRP_SYSTEM_BUFFER, system_buffer)
        self.w64(irp + self.IRP_CURRENT_STACK_LOCATION, stack)
        self.w64(irp + self.IRP_ORIGINAL_FILE_OBJECT, file_object)
        rec = IrpRecord(irp, major, code, out_len, system_buffer, stack, file_object, method)
        self.irps[irp] = rec
        return rec

    def dispatch_call(self, rec: IrpRecord) -> tuple[int, list[int]]:
        """The dispatch routine call for `rec` (to run it from inside an API
        of the driver's: another thread's request arriving meanwhile)."""
        return self.major_function(rec.major), [min(self.devices or {0}), rec.irp]

    def marked_pending(self, rec: IrpRecord) -> bool:
        return bool(self.u8(rec.stack + self.IOSL_CONTROL) & self.SL_PENDING_RETURNED)

    def dispatch(self, rec: IrpRecord) -> IrpRecord:
        """Runs the dispatch routine (PASSIVE_LEVEL, the requester's thread)
        and checks the I/O manager's rules on what it returns: STATUS_PENDING
        if and only if the IRP was marked pending ("After calling
        IoMarkIrpPending, the dispatch routine must return STATUS_PENDING,
        even if some routine completes the IRP ... before the dispatch
        routine ... returns"; "Unless the driver's dispatch routine completes
        the IRP ... it must call IoMarkIrpPending"); otherwise completed
        exactly once, with the status returned."""
        fn, args = self.dispatch_call(rec)
        rec.returned = self.call(fn, args) & 0xFFFFFFFF
        marked = self.marked_pending(rec)  # rule K14
        if rec.pending:
            if not marked:
                raise AssertionError(f"dispatch returned STATUS_PENDING without marking IRP {rec.irp:#x} pending")
        else:
            if marked:
                raise AssertionError(f"IRP {rec.irp:#x} marked pending but dispatch returned {rec.returned:#x}")
            if len(rec.completions) != 1:
                raise AssertionError(f"IRP completed {len(rec.completions)} times, expected once")
            if rec.returned != rec.status:
                raise AssertionError(f"dispatch returned {rec.returned:#x} but completed with {rec.status:#x}")
        return rec

    def send_irp(self, major: int, code: int = 0, data: bytes = b"", out_len: int = 0,
                 file_name: str | None = "", file_object: int | None = None):
        """Sends an IRP that must be completed before the dispatch routine
        returns. Returns (status, information, output bytes the I/O manager
        copies back)."""
        rec = self.dispatch(self.make_irp(major, code, data, out_len, file_name, file_object))
        if rec.pending:
            raise AssertionError(f"IRP {rec.irp:#x} pended (STATUS_PENDING) where an answer was expected")
        return rec.status, rec.information, rec.output

    def send_irp_async(self, major: int, code: int = 0, data: bytes = b"", out_len: int = 0,
                       file_object: int | None = None) -> IrpRecord:
        """Sends an IRP that may pend: returns its record (`pending`,
        `completed`, `status`, `output`, every completion)."""
        return self.dispatch(self.make_irp(major, code, data, out_len, "", file_object))

    def irp_errors(self) -> list[str]:
        """IRPs the driver pended and never completed, or completed other
        than exactly once (each completion is also checked as it happens)."""
        # rules K11 and K15
        out = []
        for rec in self.irps.values():
            if len(rec.completions) != 1:
                out.append(f"IRP {rec.irp:#x} (major {rec.major:#x}, code {rec.code:#x}) "
                           f"completed {len(rec.completions)} times")
        return out
