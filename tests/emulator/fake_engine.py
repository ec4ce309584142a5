"""A fake Windows filter engine and kernel around the real wfpmon.sys.

The driver image runs in the Speakeasy emulator. Every kernel and filter
engine call it makes goes through the hooks below, which implement the
documented rules of the functions involved:

- FwpsCalloutRegister1 records the FWPS_CALLOUT1 (key, flags, classifyFn,
  flowDeleteFn) and hands out a run-time id;
- FwpsFlowAssociateContext0 attaches a context to (flow, layer, callout);
- FwpsCalloutUnregisterById0 answers STATUS_DEVICE_BUSY while any context
  of the callout exists (including one whose deletion is pending), and
  STATUS_FWP_CALLOUT_NOT_FOUND for an unknown id;
- FwpsFlowRemoveContext0 calls the callout's flowDeleteFn *synchronously*
  (before returning STATUS_SUCCESS), or — for a flow whose classify is in
  progress — returns STATUS_PENDING and calls flowDeleteFn later (here: when
  the driver next waits on a kernel object, standing for the other
  processor finishing its classify, after a number of waits or once the
  simulated clock reaches a given time);
- the classify barrier: a successful FwpsCalloutUnregisterById0 does not
  return while a classify of that callout is executing, and no classify of
  it starts afterwards (NETIO's KfdDeleteCalloutEntry; ebpf-for-windows
  issue #1272). A classify "in flight on another processor"
  (`classify_in_flight`) is either completed inside the unregister call
  before it succeeds (`barrier="wait"`) or makes it answer
  STATUS_DEVICE_BUSY until the driver's next wait lets it finish
  (`barrier="busy"`); `classify()` refuses to call an unregistered callout;
- ObOpenObjectByPointer / ZwSetSecurityObject / ZwClose keep a handle table:
  a handle must be a kernel handle opened with WRITE_DAC to set a DACL, and
  every handle must be closed once;
- ETW: EtwRegister / EtwSetInformation / EtwWriteTransfer / EtwUnregister
  keep a registration table; a session (`etw_session=(level, keywords)`,
  or `enable_trace()` later) enables the provider through its enable
  callback, as ETW does; every EtwWriteTransfer is decoded from its
  TraceLogging metadata (event name, fields with their in/out types) into
  `events`. Writing through an unknown or unregistered handle is an error;
- KeWaitForSingleObject advances a simulated clock (KUSER_SHARED_DATA's
  InterruptTime, which the driver reads) by the time it waited, so an engine
  that lets go after minutes costs a few hundred waits, not minutes;
- ExAllocatePool2 / ExFreePool(WithTag) are accounted, so leaks and double
  frees are visible; any call can be made to fail (fault injection).

Guest code is called from inside a hook through a small generated stub
(`sub rsp,28h; mov rcx/rdx/r8, ...; call; add rsp,28h; mov eax, status;
ret`): the hook redirects the guest to the stub instead of returning,
which is how the real engine runs flowDeleteFn inside FwpsFlowRemoveContext0.

Nothing here asserts; tests read `calls`, `pool`, `contexts`, `log` etc.
"""

from __future__ import annotations

import ctypes as C
import logging
import struct
from dataclasses import dataclass, field

import copy

import speakeasy
from speakeasy.config import DEFAULT_CONFIG_DATA

import wfp_layout as L

logging.getLogger("speakeasy").setLevel(logging.CRITICAL)

DRIVER_UNLOAD_OFFSET = 0x68  # DRIVER_OBJECT.DriverUnload on x64
MAJOR_FUNCTION_OFFSET = 0x70  # DRIVER_OBJECT.MajorFunction[0]


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


class FakeEngine:
    """One emulated boot of the driver: load, DriverEntry, traffic, unload."""

    def __init__(self, image: str, faults: dict[str, dict[int, int]] | None = None,
                 remove_mode=None, pending_runs_on: str = "wait", pending_waits: int = 1,
                 pending_delay_100ns: int | None = None, in_use_until_100ns: int = 0,
                 barrier: str = "wait", etw_session: tuple[int, int] | None = (5, 0x3)):
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
        self.spin_depth = 0
        self.locks_held: dict[int, int] = {}  # in-stack queue handle -> lock
        self.lock_acquisitions = 0
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
        self.se = speakeasy.Speakeasy(config=config)
        self.module = self.se.load_module(image)
        self._scratch = self.se.mem_alloc(0x100000, tag="wfpmon.test.scratch")
        self._scratch_used = 0
        self._install_hooks()
        self._set_clock(0)

    # ----------------------------------------------------------------- clock
    KUSER_INTERRUPT_TIME = 0xFFFFF78000000008

    def _set_clock(self, value: int) -> None:
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
        addr = self.alloc(len(code))
        self.se.mem_write(addr, bytes(code))
        return addr

    def _redirect(self, emu, calls, status) -> int:
        emu.set_pc(self._stub(calls, status))
        return status

    def call(self, fn: int, args: list[int]) -> int:
        self.se.call(fn, args)
        run = self.se.emu.runs[-1] if self.se.emu.runs else None
        err = getattr(run, "error", None) if run else None
        if err:
            raise RuntimeError(f"guest fault calling {fn:#x}: {err}")
        return self.se.reg_read("rax") & 0xFFFFFFFFFFFFFFFF

    # ------------------------------------------------------------------ hooks
    def _fault(self, api: str) -> int | None:
        n = self.counts.get(api, 0) + 1
        self.counts[api] = n
        return self.faults.get(api, {}).get(n)

    def _record(self, api, args, ret):
        self.calls.append(Call(api, tuple(args), ret))
        return ret

    def interpose(self, api: str, make_calls) -> None:
        """The next time the driver calls `api`, run the guest calls that
        `make_calls()` returns before the API returns to the driver (another
        processor's classify running while the driver is inside that call)."""
        self.interpositions[api] = make_calls

    def _wrap(self, api: str, hook):
        def wrapped(emu, name, orig, argv):
            pc = emu.get_pc()
            rv = hook(emu, name, orig, argv)
            make_calls = self.interpositions.pop(api, None)
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

    def _ex_allocate_pool2(self, emu, api, orig, argv):
        flags, size, tag = argv[0], argv[1], argv[2] & 0xFFFFFFFF
        fault = self._fault("ExAllocatePool2")
        if fault is not None:
            return self._record("ExAllocatePool2", (flags, size, tag), 0)
        addr = orig(argv)
        if addr:
            self.pool[addr] = (size, tag)
            self.alloc_total += 1
        return self._record("ExAllocatePool2", (flags, size, tag), addr)

    def _free(self, api, addr, tag=None):
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
        self.driver_object = argv[0]
        fault = self._fault("IoCreateDevice")
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
        if argv[0] not in self.devices:
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
        if obj not in self.devices:
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
        if not access & self.WRITE_DAC:
            return self._record("ZwSetSecurityObject", (handle, info), L.STATUS_ACCESS_DENIED)
        self.security.append((obj, self.se.mem_read(descriptor, 72)))
        return self._record("ZwSetSecurityObject", (handle, info), L.STATUS_SUCCESS)

    def _zw_close(self, emu, api, orig, argv):
        handle = argv[0]
        fault = self._fault("ZwClose")
        if handle not in self.handles:
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
        if self.barrier == "busy" and self.in_flight:
            calls += self._finish_in_flight()
        if self.pending and self.pending_runs_on == "wait":
            if self.pending_delay is not None:
                due = min(self.pending_due[p[1:4]] for p in self.pending)
                if due <= self.clock + timeout:
                    self._set_clock(max(due, self.clock))
                    calls += self._run_pending_due()
            else:
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

    def _queued_acquire(self, emu, api, orig, argv):
        """In-stack queued spin lock: the handle (on the caller's stack)
        records which lock it holds. One processor here, so acquiring a lock
        that is held, or holding two, is a deadlock in waiting."""
        lock, handle = argv[0], argv[1]
        self.spin_depth += 1
        self.lock_acquisitions += 1
        if self.spin_depth > 1:
            self.pool_errors.append("spin lock acquired while another is held")
        if lock in self.locks_held.values():
            self.pool_errors.append(f"spin lock {lock:#x} acquired while held (deadlock)")
        self.locks_held[handle] = lock
        return 0

    def _queued_release(self, emu, api, orig, argv):
        handle = argv[0]
        if self.locks_held.pop(handle, None) is None:
            self.pool_errors.append(f"KeReleaseInStackQueuedSpinLock({handle:#x}): handle holds no lock")
        self.spin_depth -= 1
        return 0

    def _dbg_print(self, emu, api, orig, argv):
        fmt = self.cstr(argv[0])
        text = self.cstr(argv[1]) if fmt == "%s" else fmt
        self.log.append(text.rstrip("\n"))
        return 0

    def _complete_request(self, emu, api, orig, argv):
        self.completed_irps.append(argv[0])
        return 0

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
        fault = self._fault("EtwRegister")
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
            # A session already running enables the provider inside EtwRegister.
            return self._redirect(emu, self._enable_calls(handle, *self.etw_session), L.STATUS_SUCCESS)
        return L.STATUS_SUCCESS

    def enable_trace(self, level: int, keywords: int) -> None:
        """A session starts (or changes) and enables the provider."""
        for handle in list(self.etw):
            for fn, args in self._enable_calls(handle, level, keywords):
                self.call(fn, args)

    def _etw_unregister(self, emu, api, orig, argv):
        handle = argv[0]
        if handle not in self.etw:
            self.pool_errors.append(f"EtwUnregister({handle:#x}): not registered")
            return self._record("EtwUnregister", (handle,), L.STATUS_INVALID_HANDLE)
        del self.etw[handle]
        return self._record("EtwUnregister", (handle,), L.STATUS_SUCCESS)

    def _etw_set_information(self, emu, api, orig, argv):
        handle, cls, info, length = argv[0], argv[1] & 0xFFFFFFFF, argv[2], argv[3] & 0xFFFFFFFF
        if handle not in self.etw:
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
        if handle not in self.etw:
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
        key = callout.calloutKey.text()
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
        return [(fn, [layer, cid, ctx]) for fn, _, layer, cid, ctx in batch]

    def _callout_unregister(self, emu, api, orig, argv):
        cid = argv[0] & 0xFFFFFFFF
        deferred = self._run_pending() if self.pending_runs_on == "unregister" else []
        c = self.callouts.get(cid)
        if c is None or not c.registered:
            rv = L.STATUS_FWP_CALLOUT_NOT_FOUND
        elif self.clock < self.in_use_until:
            rv = L.STATUS_FWP_IN_USE
        elif self._contexts_of(cid):
            rv = L.STATUS_DEVICE_BUSY
        elif self.in_flight.get(cid) and self.barrier == "busy":
            rv = L.STATUS_DEVICE_BUSY
        else:
            fault = self._fault("FwpsCalloutUnregisterById0")
            rv = L.STATUS_SUCCESS if fault is None else fault
            if rv == L.STATUS_SUCCESS:
                # The barrier: classifies of the callout still executing
                # finish before the call returns.
                deferred = deferred + self._finish_in_flight(cid)
                c.registered = False
        self._record("FwpsCalloutUnregisterById0", (cid,), rv)
        return self._redirect(emu, deferred, rv) if deferred else rv

    def _injection_create(self, emu, api, orig, argv):
        fault = self._fault("FwpsInjectionHandleCreate0")
        if fault is not None:
            return self._record("FwpsInjectionHandleCreate0", (argv[0], argv[1]), fault)
        handle = self.alloc(16)
        self.injection_handles.add(handle)
        self.se.mem_write(argv[2], struct.pack("<Q", handle))
        return self._record("FwpsInjectionHandleCreate0", (argv[0], argv[1]), L.STATUS_SUCCESS)

    def _injection_destroy(self, emu, api, orig, argv):
        ok = argv[0] in self.injection_handles
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
        elif c is None or not c.registered:
            rv = L.STATUS_FWP_CALLOUT_NOT_FOUND
        elif (flow, layer, cid) in self.contexts:
            rv = 0x40000000  # STATUS_OBJECT_NAME_EXISTS
        else:
            self.contexts[(flow, layer, cid)] = ctx
            rv = L.STATUS_SUCCESS
        return self._record("FwpsFlowAssociateContext0", (flow, layer, cid), rv)

    def _flow_remove(self, emu, api, orig, argv):
        flow, layer, cid = argv[0], argv[1] & 0xFFFF, argv[2] & 0xFFFFFFFF
        key = (flow, layer, cid)
        ctx = self.contexts.get(key)
        if ctx is None:
            return self._record("FwpsFlowRemoveContext0", key, L.STATUS_UNSUCCESSFUL)
        mode = self.remove_mode(flow, layer, cid)
        if isinstance(mode, int):
            # "Other status codes: an error occurred": the context stays.
            return self._record("FwpsFlowRemoveContext0", key, mode)
        del self.contexts[key]
        fn = self.callouts[cid].flow_delete
        if mode == "pending":
            self.pending.append((fn, flow, layer, cid, ctx))
            self.pending_keys.add(key)
            self.pending_left[key] = self.pending_waits
            if self.pending_delay is not None:
                self.pending_due[key] = self.clock + self.pending_delay
            return self._record("FwpsFlowRemoveContext0", key, L.STATUS_PENDING)
        self.flow_deletes.append((layer, cid, ctx))
        self._record("FwpsFlowRemoveContext0", key, L.STATUS_SUCCESS)
        return self._redirect(emu, [(fn, [layer, cid, ctx])], L.STATUS_SUCCESS)

    # ---------------------------------------------------------------- driving
    def driver_entry(self) -> int:
        self.se.run_module(self.module, all_entrypoints=False)
        run = self.se.emu.runs[0]
        if getattr(run, "error", None):
            raise RuntimeError(f"DriverEntry faulted: {run.error}")
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
            # The barrier rule: no classify of a callout starts once it is
            # unregistered (or before it is registered).
            raise RuntimeError(f"the engine would not call classify {fn:#x}: no registered callout")
        out = self.put(L.FWPS_CLASSIFY_OUT0(actionType=self.UNTOUCHED_ACTION, rights=rights))
        filt = self.put(self.filter) if self.filter is not None else 0
        return fn, [values, meta, layer_data, 0, filt, flow_context, out], out

    # The filter the engine passes to classify (None: a NULL pointer).
    filter: "L.FWPS_FILTER1 | None" = None

    def classify(self, fn: int, values: int, meta: int, layer_data: int, flow_context: int,
                 rights: int = L.FWPS_RIGHT_ACTION_WRITE) -> L.FWPS_CLASSIFY_OUT0:
        fn, args, out = self.classify_call(fn, values, meta, layer_data, flow_context, rights)
        self.call(fn, args)
        return self.read(L.FWPS_CLASSIFY_OUT0, out)

    def establish(self, *args, **kwargs) -> L.FWPS_CLASSIFY_OUT0:
        fn, call_args, out = self.establish_call(*args, **kwargs)
        self.call(fn, call_args)
        return self.read(L.FWPS_CLASSIFY_OUT0, out)

    def establish_call(self, key: str, family: int, protocol: int, local, lport: int, remote,
                       rport: int, direction: int, flow_handle: int, pid: int,
                       rights: int = L.FWPS_RIGHT_ACTION_WRITE, metadata_fields: int | None = None):
        """Arguments of a flow-established classify for a new flow."""
        c = self.callout_by_key(key)
        layer = L.FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4 if family == 4 else L.FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6
        vals = [(0, 0)] * L.FE_COUNT
        vals[L.FE_LOCAL_ADDRESS] = self._address(family, local)
        vals[L.FE_REMOTE_ADDRESS] = self._address(family, remote)
        vals[L.FE_LOCAL_PORT] = (L.FWP_UINT16, lport)
        vals[L.FE_REMOTE_PORT] = (L.FWP_UINT16, rport)
        vals[L.FE_PROTOCOL] = (L.FWP_UINT8, protocol)
        vals[L.FE_DIRECTION] = (L.FWP_UINT32, direction)
        fields = (L.FWPS_METADATA_FIELD_FLOW_HANDLE | L.FWPS_METADATA_FIELD_PROCESS_ID
                  if metadata_fields is None else metadata_fields)
        meta = self.put(L.FWPS_INCOMING_METADATA_VALUES0(currentMetadataValues=fields,
                                                        flowHandle=flow_handle, processId=pid))
        return self.classify_call(c.classify, self._values(layer, vals), meta, 0, 0, rights)

    def context_of(self, flow_handle: int) -> tuple[tuple[int, int, int], int] | None:
        for k, ctx in self.contexts.items():
            if k[0] == flow_handle:
                return k, ctx
        return None

    def stream(self, flow_handle: int, nbytes: int, send: bool, rights=L.FWPS_RIGHT_ACTION_WRITE,
               direction_field: bool = True):
        """Stream data of a flow: FWPS_STREAM_DATA0 with the direction flag,
        and (as the engine supplies it) the layer's DIRECTION data field."""
        (flow, layer, cid), ctx = self.context_of(flow_handle)
        data = self.put(L.FWPS_STREAM_DATA0(
            flags=L.FWPS_STREAM_FLAG_SEND if send else L.FWPS_STREAM_FLAG_RECEIVE, dataLength=nbytes))
        # Output fields start as garbage: what the driver writes is visible.
        packet = self.put(L.FWPS_STREAM_CALLOUT_IO_PACKET0(
            streamData=data, countBytesRequired=0x77, countBytesEnforced=0x7777, streamAction=0x7))
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
        (flow, layer, cid), ctx = self.context_of(flow_handle)
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

    def end_flow(self, flow_handle: int) -> None:
        """The flow ends: the engine removes every context of it, calling each
        callout's flowDeleteFn."""
        for key in [k for k in self.contexts if k[0] == flow_handle]:
            ctx = self.contexts.pop(key)
            _, layer, cid = key
            self.flow_deletes.append((layer, cid, ctx))
            self.call(self.callouts[cid].flow_delete, [layer, cid, ctx])

    def api_sequence(self, *names: str) -> list[Call]:
        wanted = set(names)
        return [c for c in self.calls if c.api in wanted]

    # control device -------------------------------------------------------------
    IRP_MJ_CREATE, IRP_MJ_CLOSE, IRP_MJ_READ, IRP_MJ_WRITE = 0x00, 0x02, 0x03, 0x04
    IRP_MJ_DEVICE_CONTROL, IRP_MJ_CLEANUP = 0x0E, 0x12
    # x64 offsets (wdm.h): IRP.AssociatedIrp.SystemBuffer, IRP.IoStatus,
    # IRP.Tail.Overlay.CurrentStackLocation; IO_STACK_LOCATION.Parameters.DeviceIoControl.
    IRP_SYSTEM_BUFFER, IRP_IO_STATUS, IRP_CURRENT_STACK_LOCATION, IRP_SIZE = 0x18, 0x30, 0xB8, 0xD0
    IOSL_OUTPUT_LENGTH, IOSL_INPUT_LENGTH, IOSL_IOCTL_CODE, IOSL_SIZE = 0x08, 0x10, 0x18, 0x48
    # IO_STACK_LOCATION.FileObject; FILE_OBJECT.FileName (UNICODE_STRING), size.
    IOSL_FILE_OBJECT, FILE_OBJECT_FILE_NAME, FILE_OBJECT_SIZE = 0x30, 0x58, 0xD8

    def send_irp(self, major: int, code: int = 0, data: bytes = b"", out_len: int = 0,
                 file_name: str | None = ""):
        """`file_name`: the FILE_OBJECT's name for IRP_MJ_CREATE ("" opens the
        device itself; None passes no file object)."""
        """Sends an IRP the way the I/O manager does: for METHOD_BUFFERED one
        system buffer of max(in, out) bytes; for METHOD_IN/OUT_DIRECT a system
        buffer holding only the input (the output would be an MDL); for
        METHOD_NEITHER no system buffer. Returns (status, information, output
        bytes the I/O manager would copy back)."""
        method = code & 3 if major == self.IRP_MJ_DEVICE_CONTROL else 0
        size = {0: max(len(data), out_len), 1: len(data), 2: len(data), 3: 0}[method]
        system_buffer = self.alloc(size) if size else 0
        if method == 3:
            data = b""  # METHOD_NEITHER: the input stays in the caller's space
        if data:
            self.se.mem_write(system_buffer, data)
        stack = self.alloc(self.IOSL_SIZE)
        self.se.mem_write(stack, bytes([major]))
        self.se.mem_write(stack + self.IOSL_OUTPUT_LENGTH, struct.pack("<I", out_len))
        self.se.mem_write(stack + self.IOSL_INPUT_LENGTH, struct.pack("<I", len(data)))
        self.se.mem_write(stack + self.IOSL_IOCTL_CODE, struct.pack("<I", code))
        if file_name is not None:
            file_object = self.alloc(self.FILE_OBJECT_SIZE)
            name = file_name.encode("utf-16-le")
            buffer = self.alloc(len(name) + 2) if name else 0
            if name:
                self.se.mem_write(buffer, name + b"\0\0")
            self.se.mem_write(file_object + self.FILE_OBJECT_FILE_NAME,
                              struct.pack("<HHIQ", len(name), len(name) + 2 if name else 0, 0, buffer))
            self.se.mem_write(stack + self.IOSL_FILE_OBJECT, struct.pack("<Q", file_object))
        irp = self.alloc(self.IRP_SIZE)
        self.se.mem_write(irp + self.IRP_IO_STATUS, struct.pack("<IIQ", 0xDEADBEEF, 0, 0xDEAD))
        self.se.mem_write(irp + self.IRP_SYSTEM_BUFFER, struct.pack("<Q", system_buffer))
        self.se.mem_write(irp + self.IRP_CURRENT_STACK_LOCATION, struct.pack("<Q", stack))
        before = len(self.completed_irps)
        returned = self.call(self.major_function(major), [min(self.devices or {0}), irp]) & 0xFFFFFFFF
        completions = self.completed_irps[before:]
        status, _, information = struct.unpack("<IIQ", self.se.mem_read(irp + self.IRP_IO_STATUS, 16))
        if completions != [irp]:
            raise AssertionError(f"IRP completed {len(completions)} times, expected once")
        if returned != status:
            raise AssertionError(f"dispatch returned {returned:#x} but completed with {status:#x}")
        copied = min(information, out_len) if method == 0 else 0
        output = self.se.mem_read(system_buffer, copied) if copied else b""
        return status, information, output
