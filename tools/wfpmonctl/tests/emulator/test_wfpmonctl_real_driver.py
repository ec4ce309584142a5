"""The real wfpmonctl.exe against the real wfpmon.sys.

Two Speakeasy instances in one Python process: wfpmonctl.exe in the one
`Run` (test_wfpmonctl_emulated.py) drives, with Windows faked as there, and
wfpmon.sys loaded by tests/emulator's `FakeEngine` (the fake filter engine
and kernel with the documented rules). `DriverRun` replaces the fake
driver of that harness with the I/O manager's side of the control device:

- CreateFileW on `\\\\.\\GLOBALROOT\\Device\\WfpMon` opens a file object on the
  driver's device (IRP_MJ_CREATE, `FakeEngine.open_handle`); CloseHandle
  closes it (IRP_MJ_CLEANUP, then IRP_MJ_CLOSE: `close_handle`).
- DeviceIoControl sends IRP_MJ_DEVICE_CONTROL with the exe's input bytes
  and output length (`send_irp_async`; METHOD_BUFFERED). Only a code whose
  RequiredAccess the handle was granted reaches the driver ("Defining I/O
  Control Codes": the I/O manager sends the IRP only if the caller has
  the access rights). A request the driver completes at once returns TRUE
  or FALSE with the Win32 error of its NTSTATUS (`WIN32_ERROR`); one it
  pends (STATUS_PENDING, marked pending) returns FALSE with
  ERROR_IO_PENDING, the OVERLAPPED's Internal set to STATUS_PENDING
  ("OVERLAPPED structure": "When the request is issued, the system sets
  this member to STATUS_PENDING").
- When the driver completes the IRP, its output (IoStatus.Information
  bytes of the system buffer, copied back for any status that is not an
  error) is written into the exe's buffer and the OVERLAPPED gets the
  status and count (Internal, InternalHigh). GetOverlappedResultEx returns
  TRUE with the count, or FALSE with the status's Win32 error; while the
  IRP is pending it waits on the simulated clock, and what the test has
  scheduled for that time happens meanwhile (`DriverMachine.waits`: flows
  established, traffic, flows ended, by the fake engine calling the
  driver's callouts), so it is the *driver* that completes the read. A wait
  that ends with the IRP still pending returns WAIT_TIMEOUT after its
  timeout ("If dwMilliseconds is nonzero and the specified timeout interval
  elapses, GetLastError returns WAIT_TIMEOUT"), with a zero timeout
  ERROR_IO_INCOMPLETE.
- CancelIoEx calls IoCancelIrp on the pending IRP (`cancel_irp`: the
  cancel routine the driver's cancel-safe queue installed, which calls the
  driver's own Csq callbacks), so the driver completes it with
  STATUS_CANCELLED; nothing pending: FALSE with ERROR_NOT_FOUND
  ("If this function cannot find a request to cancel, the return value is
  0 (zero), and GetLastError returns ERROR_NOT_FOUND").
- One clock: the driver's interrupt time (KUSER_SHARED_DATA, the engine's
  simulated clock) is what the exe's QueryPerformanceCounter and
  GetSystemTimePreciseAsFileTime read (offset so that a run starts at
  2026-01-01T00:00:00Z); Sleep and every wait advance it.

The two emulators coexist: each Speakeasy instance owns its Unicorn engine,
and the driver's emulator runs to completion inside an API hook of the
exe's (a nested run of a *different* engine; nothing is shared but the
Python process). The expected values are computed from the traffic each
test generates (`Net` records what it sent, when), not read back from the
driver.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import struct
import sys
from dataclasses import dataclass, field

import pytest

from test_wfpmonctl_emulated import (  # noqa: F401 - `exe` is a fixture
    ALL_CALLOUT_KEYS, CTRL_C_EVENT, DEVICE_PATH, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, ERROR_NOT_FOUND,
    ERROR_TIMEOUT, EVENT_HEADER, EVENT_RIGHT, FILE_FLAG_OVERLAPPED, SERVICE_STOP_PENDING, WAIT_TIMEOUT, Machine,
    Run, check_schema, columns, exe, installed_everything)

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

import client as DC  # noqa: E402 - the driver's other clients, as tests/emulator drives them
import protocol as P  # noqa: E402
import wfp_layout as L  # noqa: E402
from fake_engine import FakeEngine  # noqa: E402

IMAGE = pathlib.Path(os.environ.get(
    "WFPMON_SYS", ROOT / "target" / "x86_64-pc-windows-msvc" / "release" / "wfpmon.sys"))
M32 = 0xFFFF_FFFF
SECOND, MS = 10_000_000, 10_000  # 100 ns units
IRP_MJ_CREATE, IRP_MJ_CLOSE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_CLEANUP = 0x00, 0x02, 0x0E, 0x12
ERROR_ACCESS_DENIED = 5
GENERIC_READ, GENERIC_WRITE, GENERIC_ALL = 0x8000_0000, 0x4000_0000, 0x1000_0000
FILE_READ_DATA, FILE_WRITE_DATA = 1, 2
FILE_READ_ACCESS, FILE_WRITE_ACCESS = 1, 2

# The Win32 error a caller of DeviceIoControl / GetOverlappedResultEx gets
# for the NTSTATUS the driver completed its request with: what
# RtlNtStatusToDosError returns, as Microsoft's table lists it (KB 113996,
# "INFO: Mapping NT Status Error Codes to Win32 Error Codes"; the table is
# republished at https://www.osr.com/blog/2020/04/23/ntstatus-to-win32-error-code-mappings/).
# Only the statuses wfpmon.sys completes control requests with (src/control.rs,
# src/events.rs, src/kernel/csq.rs, and wfpmon-core's RequestError::status);
# any other status stops the test rather than be guessed.
WIN32_ERROR = {
    L.STATUS_INVALID_DEVICE_REQUEST: 1,  # ERROR_INVALID_FUNCTION
    L.STATUS_INVALID_PARAMETER: 87,  # ERROR_INVALID_PARAMETER
    L.STATUS_BUFFER_TOO_SMALL: 122,  # ERROR_INSUFFICIENT_BUFFER
    L.STATUS_DEVICE_BUSY: 170,  # ERROR_BUSY (a warning status: not NT_SUCCESS, so the call fails)
    L.STATUS_INTEGER_OVERFLOW: 534,  # ERROR_ARITHMETIC_OVERFLOW
    L.STATUS_CANCELLED: 995,  # ERROR_OPERATION_ABORTED
    L.STATUS_REVISION_MISMATCH: 1306,  # ERROR_REVISION_MISMATCH
    L.STATUS_INVALID_BUFFER_SIZE: 1784,  # ERROR_INVALID_USER_BUFFER
}


def nt_success(status: int) -> bool:
    """NT_SUCCESS: severity success or informational (bit 31 clear)."""
    return status & 0x8000_0000 == 0


def nt_error(status: int) -> bool:
    """NT_ERROR: severity error (both top bits set)."""
    return status >> 30 == 3


def win32_error(status: int) -> int:
    if status not in WIN32_ERROR:
        raise AssertionError(f"the driver completed a request with {status:#x}, which WIN32_ERROR does not map")
    return WIN32_ERROR[status]


# --- the driver's side --------------------------------------------------------


@dataclass
class Exchange:
    """One DeviceIoControl of the exe, as the I/O manager handled it."""
    code: int
    pended: bool  # the driver returned STATUS_PENDING
    status: int | None  # the IRP's final NTSTATUS (None: never completed, or refused before the driver)
    win32: int  # what the exe was told (0: success)


@dataclass
class Request:
    """A request of the exe in flight: its IRP and the exe's OVERLAPPED and buffer."""
    rec: object  # fake_engine.IrpRecord
    overlapped: int
    out: int
    out_len: int
    exchange: Exchange
    delivered: bool = False


class DriverMachine(Machine):
    """The emulated Windows around wfpmonctl.exe, with the real wfpmon.sys
    (loaded in `engine`) behind the control device. `waits`: what happens
    while the exe waits for a pending request, in order: `(ms, fn)` - after
    `ms` more milliseconds `fn(engine)` runs (a wait whose timeout comes
    first times out, and the rest of `ms` is waited next time); "ctrl_c" -
    the console runs the exe's control handler; "service_stop" - the wait
    times out and the service is STOP_PENDING. `during_sleep`: {n: fn} -
    `fn(engine)` runs at the end of the exe's n-th Sleep (1-based).
    `busy_queries`: this many LIST_PROCESSES of the exe arrive while another
    client's LIST_PROCESSES walks the driver's registry."""

    def __init__(self, engine: FakeEngine, **kw):
        kw.setdefault("installed", installed_everything())
        kw.setdefault("registered", ALL_CALLOUT_KEYS)
        super().__init__(driver=engine, **kw)
        self.engine = engine
        self.during_sleep: dict = {}
        self.busy_queries = 0
        self.other_queries: list[dict] = []  # the answers those other clients got


class DriverRun(Run):
    """One emulated `wfpmonctl.exe ARGS` whose control device is the real
    wfpmon.sys of `machine.engine` (see the module's docstring)."""

    CONFIG = {"timeout": 300}

    def __init__(self, exe: str, args: list[str], machine: DriverMachine):
        self.engine = machine.engine
        self.t0 = self.engine.clock  # the driver's time at 2026-01-01T00:00:00Z of this run
        self.file_object = 0
        self.file_objects: list[int] = []
        self.granted = 0
        self.outstanding: Request | None = None
        self.exchanges: list[Exchange] = []
        super().__init__(exe, args, machine=machine)

    # -- the clock -------------------------------------------------------------
    def _qpc(self, emu, args):
        self.se.mem_write(args[0], struct.pack("<q", self.engine.clock - self.t0))
        return 1

    def _filetime(self, emu, args):
        self.se.mem_write(args[0], struct.pack("<Q", self.FILETIME_2026 + self.engine.clock - self.t0))
        return 0

    def _sleep(self, emu, args):
        self.engine.advance_clock((args[0] & M32) * MS)
        result = super()._sleep(emu, args)
        action = self.machine.during_sleep.pop(len(self.sleeps), None)
        if action is not None:
            action(self.engine)
        return result

    # -- the control device ------------------------------------------------------
    def _create_file(self, emu, api_name, func, args):
        path = self.wstr(args[0])
        if path != DEVICE_PATH:
            return func(args)
        access = args[1] & M32
        self.calls.append(("CreateFileW", (path, access)))
        self.device_flags = args[5] & M32
        assert not self.file_object, "a second handle to the device while one is open"
        self.file_object = self.engine.open_handle()
        self.file_objects.append(self.file_object)
        # The device's DACL grants SYSTEM and Administrators everything
        # (tests/emulator/test_control.py); the exe runs elevated.
        self.granted = ((FILE_READ_ACCESS if access & (GENERIC_READ | GENERIC_ALL | FILE_READ_DATA) else 0)
                        | (FILE_WRITE_ACCESS if access & (GENERIC_WRITE | GENERIC_ALL | FILE_WRITE_DATA) else 0))
        return self.DEVICE

    def _close_handle(self, emu, api_name, func, args):
        if args[0] != self.DEVICE:
            return super()._close_handle(emu, api_name, func, args)
        self.calls.append(("CloseHandle", args[0]))
        assert self.file_object, "CloseHandle of a device handle that is not open"
        file_object, self.file_object = self.file_object, 0
        self.engine.close_handle(file_object)
        if self.outstanding is not None:
            self._settle(self.outstanding)
        return 1

    def _send(self, code: int, data: bytes, out_len: int):
        """The IRP_MJ_DEVICE_CONTROL of the exe, dispatched to the driver."""
        e = self.engine
        if code == P.IOCTL_LIST_PROCESSES and self.machine.busy_queries:
            # Another client's query is walking the registry when this one
            # arrives: dispatched after that query's tenth lock release (as
            # tests/emulator/test_processes.py::test_queries_run_one_at_a_time).
            self.machine.busy_queries -= 1
            rec = e.make_irp(IRP_MJ_DEVICE_CONTROL, code, data, out_len, file_object=self.file_object)
            e.interpose("KeReleaseInStackQueuedSpinLock", lambda: [e.dispatch_call(rec)], nth=10)
            self.machine.other_queries.append(DC.list_processes(e))
            if e.interpositions.pop("KeReleaseInStackQueuedSpinLock", None) is not None:
                raise AssertionError("the other client's query ended before the exe's request arrived")
            assert len(rec.completions) == 1 and not e.marked_pending(rec), "dispatched during the other query"
            return rec
        return e.send_irp_async(IRP_MJ_DEVICE_CONTROL, code, data, out_len, file_object=self.file_object)

    def _settle(self, req: Request) -> None:
        """The I/O manager's completion of the exe's request, once the
        driver has completed its IRP: output into the exe's buffer
        (METHOD_BUFFERED; not for an error status), status and count into
        the OVERLAPPED."""
        rec = req.rec
        if req.delivered or not rec.completed:
            return
        req.delivered = True
        status, information = rec.status, rec.information
        if not nt_error(status) and rec.output:
            self.se.mem_write(req.out, rec.output[:req.out_len])
        self.se.mem_write(req.overlapped, struct.pack("<QQ", status, information))  # Internal, InternalHigh
        req.exchange.status = status
        req.exchange.win32 = 0 if nt_success(status) else win32_error(status)

    def _device_io_control(self, emu, args):
        handle, code, inbuf, inlen, outbuf, outlen, returned, overlapped = args[:8]
        code, inlen, outlen = code & M32, inlen & M32, outlen & M32
        assert handle == self.DEVICE and self.file_object, "DeviceIoControl on the open control device"
        assert self.device_flags & FILE_FLAG_OVERLAPPED and overlapped, "overlapped I/O on the device"
        assert self.u64(overlapped + 24), "OVERLAPPED.hEvent"
        assert self.outstanding is None, "one request at a time"
        required = (code >> 14) & 3
        if required & ~self.granted:
            self.exchanges.append(Exchange(code, False, None, ERROR_ACCESS_DENIED))
            emu.set_last_error(ERROR_ACCESS_DENIED)
            return 0
        data = self.se.mem_read(inbuf, inlen) if inlen else b""
        self.se.mem_write(overlapped, struct.pack("<QQ", L.STATUS_PENDING, 0))
        rec = self._send(code, data, outlen)
        pended = rec.pending or self.engine.marked_pending(rec)
        req = Request(rec, overlapped, outbuf, outlen, Exchange(code, pended, None, ERROR_IO_PENDING))
        self.exchanges.append(req.exchange)
        self._settle(req)
        if pended:
            self.outstanding = req
            emu.set_last_error(ERROR_IO_PENDING)
            return 0
        if not nt_success(rec.status):
            emu.set_last_error(req.exchange.win32)
            return 0
        if returned:
            self.se.mem_write(returned, struct.pack("<I", rec.information))
        self.outstanding = req  # its result is collected with GetOverlappedResultEx
        return 1

    def _collect(self, emu, req: Request, transferred: int) -> int:
        """GetOverlappedResultEx of a completed request."""
        self.outstanding = None
        status = req.rec.status
        self.se.mem_write(transferred, struct.pack("<I", req.rec.information if nt_success(status) else 0))
        if not nt_success(status):
            emu.set_last_error(req.exchange.win32)
            return 0
        return 1

    def _get_overlapped_result(self, emu, args):
        handle, overlapped, transferred, timeout_ms, alertable = args[:5]
        timeout_ms = timeout_ms & M32
        assert handle == self.DEVICE and not alertable
        req = self.outstanding
        assert req is not None and req.overlapped == overlapped, "the result of a request never made"
        waited, waits = 0, self.machine.waits
        while not req.rec.completed and timeout_ms:
            if not waits:
                # Nothing the test scheduled would ever complete the request.
                self.hung = True
                self.calls.append(("wait", "hung"))
                emu.set_last_error(ERROR_TIMEOUT)
                return 0
            if waits[0] == "ctrl_c":
                # The console runs the control handler (on a thread of its
                # own on Windows; here while this call waits); the call
                # returns what the handler's CancelIoEx made of the request.
                waits.pop(0)
                self.calls.append(("wait", "ctrl_c"))
                self.hung = True
                emu.set_last_error(ERROR_TIMEOUT)
                self.waiting = (emu._active_api_frame, transferred)
                kernel32, _ = emu.api.get_export_func_handler("kernel32", "GetOverlappedResultEx")
                kernel32.setup_callback(self.ctrl_handlers[-1], [CTRL_C_EVENT])
                return 0
            if waits[0] == "service_stop":
                # `sc stop wfpmon`: the service is STOP_PENDING while this
                # handle keeps the driver from unloading; the wait times out.
                waits.pop(0)
                self.calls.append(("wait", "service_stop"))
                self.machine.services["wfpmon"] = SERVICE_STOP_PENDING
                self.engine.advance_clock((timeout_ms - waited) * MS)
                emu.set_last_error(WAIT_TIMEOUT)
                return 0
            ms, action = waits[0]
            if waited + ms >= timeout_ms:
                waits[0] = (waited + ms - timeout_ms, action)
                self.engine.advance_clock((timeout_ms - waited) * MS)
                self.calls.append(("wait", "timeout"))
                emu.set_last_error(WAIT_TIMEOUT)
                return 0
            waits.pop(0)
            self.engine.advance_clock(ms * MS)
            waited += ms
            action(self.engine)
            self._settle(req)
        if not req.rec.completed:
            emu.set_last_error(ERROR_IO_INCOMPLETE)
            return 0
        if waited:
            self.calls.append(("wait", "completed"))
        return self._collect(emu, req, transferred)

    def _cancel_io_ex(self, emu, args):
        handle, overlapped = args[:2]
        self.calls.append(("CancelIoEx", (handle, overlapped)))
        req = self.outstanding
        if handle != self.DEVICE or req is None or req.rec.completed or overlapped not in (0, req.overlapped):
            emu.set_last_error(ERROR_NOT_FOUND)
            return 0
        self.engine.cancel_irp(req.rec.irp)  # IoCancelIrp
        self._settle(req)
        if self.waiting and req.rec.completed:
            (frame, transferred), self.waiting = self.waiting, None
            self.hung = False
            frame.result = self._collect(emu, req, transferred)
        return 1

    # -- what the tests read -------------------------------------------------------
    def ioctls(self) -> list[tuple[str, bool, int]]:
        """(request name, pended, Win32 error) of each DeviceIoControl."""
        names = {P.IOCTL_QUERY_STATS: "stats", P.IOCTL_LIST_FLOWS: "flows", P.IOCTL_SET_COUNTING: "counting",
                 P.IOCTL_READ_EVENTS: "events", P.IOCTL_LIST_PROCESSES: "processes"}
        return [(names.get(x.code, hex(x.code)), x.pended, x.win32) for x in self.exchanges]

    def irps_of_handle(self) -> list[tuple[int, int | None]]:
        """(major function, final status) of every IRP of the exe's file
        objects, in the order sent."""
        mine = set(self.file_objects)
        return [(r.major, r.status if r.completed else None) for r in self.engine.irps.values()
                if r.file_object in mine]

    def stamp(self, t: int) -> str:
        """wfpmonctl's timestamp of driver time `t` in this run."""
        return iso(t - self.t0)


def iso(offset_100ns: int) -> str:
    """RFC 3339 with milliseconds of 2026-01-01T00:00:00Z + offset."""
    assert offset_100ns % MS == 0, "the tests keep the clock on whole milliseconds"
    t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        microseconds=offset_100ns // 10)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def boot(image: str) -> FakeEngine:
    """wfpmon.sys loaded, DriverEntry succeeded, an hour after boot."""
    e = FakeEngine(image)
    assert e.driver_entry() == 0
    e.advance_clock(3600 * SECOND)
    return e


def assert_clean(e: FakeEngine) -> None:
    """No broken rule so far: every IRP completed exactly once, none left
    in the driver's cancel-safe queue, no pool or lock rule broken."""
    assert e.pool_errors == []
    assert e.irp_errors() == []
    assert all(queue == [] for queue in e.csqs.values())


def unload_and_check(e: FakeEngine) -> None:
    """Unload, then nothing left of the driver (as tests/emulator checks)."""
    e.unload()
    assert_clean(e)
    assert e.pool == {}, f"pool leak: {e.pool}"
    assert [c.key for c in e.callouts.values() if c.registered] == []
    assert e.contexts == {} and e.devices == set() and e.handles == {} and e.etw == {}


@pytest.fixture(scope="module")
def image() -> str:
    if not IMAGE.is_file():
        pytest.fail(f"{IMAGE} does not exist: build it first (scripts/linux/build.sh)")
    return str(IMAGE)


# --- traffic, and what the exe should say of it ----------------------------------


@dataclass(frozen=True)
class App:
    pid: int | None
    device_path: str | None  # the engine's form; None: the metadata has no path

    @property
    def name(self) -> str:
        return self.device_path.rsplit("\\", 1)[-1]

    @property
    def path(self) -> str:
        """The drive-letter form, with the machine's QueryDosDeviceW
        (C: is \\Device\\HarddiskVolume3, E: \\Device\\HarddiskVolume30)."""
        for volume, drive in (("\\device\\harddiskvolume30\\", "E:\\"), ("\\device\\harddiskvolume3\\", "C:\\")):
            if self.device_path.lower().startswith(volume):
                return drive + self.device_path[len(volume):]
        return self.device_path


BROWSER = App(4100, "\\device\\harddiskvolume3\\program files\\browser\\browser.exe")
UPDATER = App(2208, "\\device\\harddiskvolume30\\tools\\updater\\updater.exe")
CHAT = App(5120, "\\device\\harddiskvolume3\\program files\\app\\app.exe")


@dataclass
class Conn:
    """A flow the test made: identity, and the traffic it sent."""
    handle: int
    app: App
    family: int  # 4 or 6
    protocol: int
    direction: int
    args: tuple
    established: int
    ended: int | None = None
    counters: list = field(default_factory=lambda: [0, 0, 0, 0])  # bytes in, out, packets in, out

    def endpoint(self, which: str) -> tuple[str, int]:
        (_, _, _, local, lport, remote, rport, *_), _ = self.args
        # IPv4: the address as a number; IPv6: its 16 bytes.
        value = local if which == "local" else remote
        return str(ipaddress.ip_address(value)), (lport if which == "local" else rport)

    @property
    def proto(self) -> str:
        return {6: "tcp", 17: "udp"}[self.protocol]


class Net:
    """Drives the fake engine like TCP/IP would, and records what it did:
    each flow's identity and traffic, and the events the driver should
    write (kind, flow, time, counters at the event)."""

    def __init__(self, engine: FakeEngine):
        self.e = engine
        self.conns: dict[int, Conn] = {}
        self.events: list[tuple[str, Conn, int, tuple]] = []

    def open(self, handle: int, app: App, family: int = 4, protocol: int = 6,
             direction: int = L.FWP_DIRECTION_OUTBOUND, remote_port: int = 443) -> Conn:
        args = DC.flow_args(handle, family=family, protocol=protocol, pid=app.pid, path=app.device_path,
                            remote_port=remote_port, direction=direction)
        self.e.establish(*args[0], **args[1])
        conn = Conn(handle, app, family, protocol, direction, args, self.e.clock)
        self.conns[handle] = conn
        self.events.append(("established", conn, self.e.clock, (0, 0, 0, 0)))
        return conn

    def send(self, handle: int, *sizes: int) -> None:
        c = self.conns[handle]
        for n in sizes:
            if c.protocol == 6:
                self.e.stream(handle, n, send=True)
            else:  # outbound datagrams are indicated from the UDP header
                self.e.datagram(handle, [8 + n], inbound=False, header_size=8)
            c.counters[1] += n
            c.counters[3] += 1

    def recv(self, handle: int, *sizes: int) -> None:
        c = self.conns[handle]
        for n in sizes:
            if c.protocol == 6:
                self.e.stream(handle, n, send=False)
            else:  # inbound datagrams are indicated from the payload
                self.e.datagram(handle, [n], inbound=True)
            c.counters[0] += n
            c.counters[2] += 1

    def close(self, handle: int) -> None:
        c = self.conns[handle]
        self.e.end_flow(handle)
        c.ended = self.e.clock
        self.events.append(("ended", c, self.e.clock, tuple(c.counters)))

    def of(self, app: App) -> list[Conn]:
        return [c for c in self.conns.values() if c.app == app]


IEC = [" B", " KiB", " MiB", " GiB"]


def human(n: int, base: int = 1024, units=IEC) -> str:
    """wfpmonctl's human units (tools/wfpmonctl/README.md: `512 B`, `1.5 KiB`,
    `3 MiB`, `12.3k`): one decimal unless the value is whole."""
    if n < base:
        return f"{n}{units[0]}"
    value, unit = float(n), 0
    while value >= base and unit + 1 < len(units):
        value /= base
        unit += 1
    if units is IEC and value.is_integer():
        return f"{value:.0f}{units[unit]}"
    return f"{value:.1f}{units[unit]}"


def count(n: int) -> str:
    return human(n, 1000, ["", "k", "M", "G"])


def age(ms: int) -> str:
    s = ms // 1000
    assert s < 60, "the tests' flows last less than a minute"
    return f"{s}.{(ms % 1000) // 100}s"


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def event_row(run: DriverRun, kind: str, c: Conn, t: int, counters) -> list[str]:
    """The cells of an event's text line (`wfpmonctl events`, README: local
    time, kind, PID and process, protocol, direction, endpoints, host name
    (none here), for an ended flow its duration and final counters each
    way; the image path)."""
    local, remote = endpoint(*c.endpoint("local")), endpoint(*c.endpoint("remote"))
    direction = "in" if c.direction == L.FWP_DIRECTION_INBOUND else "out"
    after = traffic_in = traffic_out = ""
    if kind == "ended":
        bin_, bout, pin, pout = counters
        after = age((t - c.established) // MS)
        traffic_in, traffic_out = f"{human(bin_)} ({count(pin)} pkts)", f"{human(bout)} ({count(pout)} pkts)"
    return [run.local(run.stamp(t)), kind, str(c.app.pid), c.app.name, c.proto, direction, local, remote, "",
            after, traffic_in, traffic_out, c.app.path]


def event_lines(run: DriverRun, events) -> list[str]:
    """The header and the lines of `events`, in their columns."""
    return columns(EVENT_HEADER, [event_row(run, *ev) for ev in events], EVENT_RIGHT, tail=True)


def check_event_doc(run: DriverRun, doc: dict, seq: int, kind: str, c: Conn, t: int, counters) -> None:
    """A `wfpmon.event/2` document against the event the test caused."""
    check_schema(doc)
    local, lport = c.endpoint("local")
    remote, rport = c.endpoint("remote")
    expected = dict(
        schema="wfpmon.event/2", timestamp=run.stamp(t), seq=seq, event=kind, flags=[], path=c.app.path,
        flow_handle=f"{c.handle:#018x}", pid=c.app.pid, process=c.app.name, services=[], protocol=c.proto,
        ip_protocol=c.protocol, family="ipv4" if c.family == 4 else "ipv6",
        direction="in" if c.direction == L.FWP_DIRECTION_INBOUND else "out",
        local_address=local, remote_address=remote, remote_host=None, local_port=lport, remote_port=rport,
        age_ms=(t - c.established) // MS, bytes_in=counters[0], bytes_out=counters[1],
        packets_in=counters[2], packets_out=counters[3])
    assert doc == expected


def expected_process(run: DriverRun, net: Net, app: App) -> dict:
    """What `procs --json` should say of `app`, from the flows the test made."""
    conns = net.of(app)
    totals = [sum(c.counters[i] for c in conns) for i in range(4)]
    times = [c.established for c in conns] + [c.ended for c in conns if c.ended is not None]
    return dict(pid=app.pid, process=app.name, services=[], path=app.path, path_truncated=False,
                active_flows=sum(c.ended is None for c in conns), flows_total=len(conns),
                bytes_in=totals[0], bytes_out=totals[1], packets_in=totals[2], packets_out=totals[3],
                first_seen=run.stamp(min(times)), last_seen=run.stamp(max(times)))


def expected_process_totals(net: Net, app: App) -> tuple[int, int]:
    conns = net.of(app)
    return sum(c.counters[0] for c in conns), sum(c.counters[1] for c in conns)


def three_programs(e: FakeEngine) -> Net:
    """Traffic of three programs over 12 s: a browser with two TCP flows
    (one ended) and a QUIC-like UDP flow over IPv6, an updater whose only
    flow ended, a chat app with an inbound TCP flow still open."""
    net = Net(e)
    net.open(0xB01, BROWSER)
    net.send(0xB01, 517, 1200)
    net.recv(0xB01, 1460, 1460, 980)
    e.advance_clock(1500 * MS)
    net.open(0xA01, UPDATER, family=6, remote_port=8443)
    net.send(0xA01, 300)
    net.recv(0xA01, 64_000, 64_000, 12_345)
    e.advance_clock(2 * SECOND)
    net.open(0xB02, BROWSER, family=6, protocol=17)
    net.send(0xB02, 1252, 1252)
    net.recv(0xB02, 1350)
    e.advance_clock(750 * MS)
    net.open(0xC01, CHAT, direction=L.FWP_DIRECTION_INBOUND, remote_port=5222)
    net.recv(0xC01, 90)
    net.send(0xC01, 45, 45)
    e.advance_clock(3 * SECOND)
    net.close(0xA01)
    e.advance_clock(4250 * MS)
    net.close(0xB01)
    e.advance_clock(500 * MS)
    return net


# --- procs ----------------------------------------------------------------------


def test_procs_shows_each_programs_traffic_including_ended_flows(exe, image):
    """`procs` and `procs --json` after three programs' flows, two of them
    ended: per program its flows (active and total), bytes and packets
    both ways (active plus ended flows), first and last seen, name and
    drive-letter path - equal to what the test sent; then the footer."""
    e = boot(image)
    net = three_programs(e)
    machine = DriverMachine(e)
    run = DriverRun(exe, ["procs", "--json"], machine=machine)
    assert run.exit_code == 0, run.stderr
    (doc,) = run.json_lines()
    check_schema(doc)
    apps = (BROWSER, UPDATER, CHAT)
    expected = [expected_process(run, net, a) for a in apps]
    expected.sort(key=lambda p: -(p["bytes_in"] + p["bytes_out"]))  # --sort bytes, the default
    keys = {pid: p["key"] for (pid, _), p in DC.processes_by_identity(e).items()}
    assert [{k: v for k, v in p.items() if k != "key"} for p in doc["processes"]] == expected
    assert [p["key"] for p in doc["processes"]] == [f"{keys[p['pid']]:#018x}" for p in expected]
    assert (doc["listed"], doc["matched"], doc["capacity"], doc["evictions"], doc["unattributed_flows"]) == \
        (3, 3, P.PROCESS_SLOTS, 0, 0)
    assert doc["timestamp"] == run.stamp(e.clock) and "interval_s" not in doc
    assert doc["totals"] == {k: sum(p[k] for p in expected) for k in ("bytes_in", "bytes_out", "packets_in",
                                                                       "packets_out")}
    assert run.ioctls() == [("processes", False, 0)], "one page, answered at once"
    assert [m for m, _ in run.irps_of_handle()] == [IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_CLEANUP,
                                                   IRP_MJ_CLOSE]

    text = DriverRun(exe, ["procs"], machine=machine)
    assert text.exit_code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["PID", "PROCESS", "FLOWS", "TOTAL", "IN", "OUT", "PATH"]
    rows = [[str(p["pid"]), p["process"], str(p["active_flows"]), str(p["flows_total"]),
             *human(p["bytes_in"]).split(), *human(p["bytes_out"]).split(), *p["path"].split()] for p in expected]
    assert [line.split() for line in lines[1:4]] == rows
    assert lines[4:] == [
        f"3 of 3 matching processes (3 in the driver's table of {P.PROCESS_SLOTS}: 0 evicted, 0 flows without a "
        f"process); in {human(doc['totals']['bytes_in'])}, out {human(doc['totals']['bytes_out'])}"]
    assert_clean(e)
    unload_and_check(e)


def test_procs_watch_rates_follow_the_traffic_between_samples(exe, image):
    """`procs --watch 1 --count 2 --json`: the exe sleeps ten times 100 ms
    between its two samples (std's sleep falls back to Sleep; the harness's
    Sleep advances the driver's clock). Traffic during the 3rd and 8th
    sleeps, a flow ending during the 5th, a new program's first flow during
    the 6th: the second sample's interval is 1 s on the driver's clock and
    every rate is the bytes moved since the first sample over it (over the
    interval, too, for the new program, younger than a second)."""
    e = boot(image)
    net = three_programs(e)
    newcomer = App(6060, "\\device\\harddiskvolume3\\windows\\system32\\svchost.exe")
    machine = DriverMachine(e)
    machine.during_sleep = {
        3: lambda _: (net.recv(0xB02, 1350, 1350), net.send(0xC01, 700)),
        5: lambda _: (net.send(0xC01, 20), net.close(0xC01)),
        6: lambda _: (net.open(0xD01, newcomer, protocol=17, remote_port=53), net.send(0xD01, 40),
                      net.recv(0xD01, 200)),
        8: lambda _: net.recv(0xB02, 900),
    }
    before = {a: expected_process_totals(net, a) for a in (BROWSER, UPDATER, CHAT)}
    run = DriverRun(exe, ["procs", "--json", "--watch", "1", "--count", "2", "--sort", "pid"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert run.sleeps == [100] * 10 and not machine.during_sleep, "every scheduled action ran"
    first, second = run.json_lines()
    for doc in (first, second):
        check_schema(doc)
    assert "interval_s" not in first and all("rate_in" not in p for p in first["processes"])
    assert second["interval_s"] == 1.0
    assert second["timestamp"] == run.stamp(run.t0 + SECOND)
    apps = (UPDATER, BROWSER, CHAT, newcomer)  # by pid
    after = {a: expected_process_totals(net, a) for a in apps}
    rates = {a: tuple(float(after[a][i] - before.get(a, (0, 0))[i]) for i in (0, 1)) for a in apps}
    assert rates[BROWSER] == (3600.0, 0.0) and rates[CHAT] == (0.0, 720.0) and rates[newcomer] == (200.0, 40.0)
    assert [(p["pid"], p["rate_in"], p["rate_out"]) for p in second["processes"]] == \
        [(a.pid, *rates[a]) for a in apps]
    assert [(p["pid"], p["bytes_in"], p["bytes_out"], p["active_flows"]) for p in second["processes"]] == \
        [(a.pid, *after[a], sum(c.ended is None for c in net.of(a))) for a in apps]
    assert (second["totals"]["rate_in"], second["totals"]["rate_out"]) == \
        (sum(r[0] for r in rates.values()), sum(r[1] for r in rates.values()))
    assert run.ioctls() == [("processes", False, 0)] * 2
    assert_clean(e)
    unload_and_check(e)


def test_procs_retries_when_another_query_keeps_the_driver_busy(exe, image):
    """The exe's LIST_PROCESSES arrives while another client's query walks
    the registry: the driver answers STATUS_DEVICE_BUSY, which the exe
    gets as ERROR_BUSY (170); it sleeps 20 ms and asks again, and shows
    the table."""
    e = boot(image)
    net = three_programs(e)
    machine = DriverMachine(e)
    machine.busy_queries = 2
    run = DriverRun(exe, ["procs", "--json", "--sort", "pid"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert run.ioctls() == [("processes", False, 170)] * 2 + [("processes", False, 0)]
    assert [x.status for x in run.exchanges] == [L.STATUS_DEVICE_BUSY] * 2 + [L.STATUS_SUCCESS]
    assert run.sleeps == [20, 20]
    (doc,) = run.json_lines()
    assert [(p["pid"], p["bytes_in"], p["bytes_out"]) for p in doc["processes"]] == \
        [(a.pid, *expected_process_totals(net, a)) for a in (UPDATER, BROWSER, CHAT)]
    assert [len(q["processes"]) for q in machine.other_queries] == [3, 3], "the other client got its answers"
    assert_clean(e)
    unload_and_check(e)


# --- events -----------------------------------------------------------------------


def test_events_lists_what_the_driver_holds(exe, image):
    """`events` and `events --json` (from the oldest event held): one line
    per event the traffic caused, in order - established with zero
    counters, ended with the exact final counters and duration - each with
    its program, 5-tuple and path, at the time it happened."""
    e = boot(image)
    net = three_programs(e)
    machine = DriverMachine(e)
    run = DriverRun(exe, ["events"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert run.stdout.splitlines() == event_lines(run, net.events), run.stdout
    assert run.ioctls() == [("events", False, 0), ("processes", False, 0)], \
        "one read from the start (nothing pends without --follow), one pass over the process table"
    assert run.stderr == "" and not run.hung

    run = DriverRun(exe, ["events", "--json"], machine=machine)
    docs = run.json_lines()
    assert len(docs) == len(net.events) == 6
    for seq, (doc, ev) in enumerate(zip(docs, net.events)):
        check_event_doc(run, doc, seq, *ev)
    assert_clean(e)
    unload_and_check(e)


def test_follow_waits_in_the_driver_and_prints_each_event_as_traffic_happens(exe, image):
    """`events --follow --json --count 5`: every read pends in the real
    driver (its cancel-safe queue) and is completed by the driver when a
    flow the test establishes or ends writes an event - while the exe waits
    in GetOverlappedResultEx. Waits longer than a second time out first
    (the exe then looks at the service). Each record: the right kind,
    program, 5-tuple, and for the ended flows the exact counters and
    duration. The exe learns the driver's process table at the first new
    process key (the three programs of the earlier traffic), and again for
    a program that appears later."""
    e = boot(image)
    held = three_programs(e)  # before the exe starts: not shown (from now)
    net = Net(e)
    game = App(9001, "\\device\\harddiskvolume3\\games\\game.exe")
    machine = DriverMachine(e)
    machine.waits = [
        (300, lambda _: (net.open(0xE01, CHAT, family=6), net.send(0xE01, 2000))),
        (1700, lambda _: net.open(0xE02, UPDATER, protocol=17, remote_port=123)),
        (400, lambda _: (net.recv(0xE02, 48, 48), net.send(0xE02, 48), net.recv(0xE01, 70_000, 1),
                         net.close(0xE01))),
        (2500, lambda _: (net.open(0xE03, game, direction=L.FWP_DIRECTION_INBOUND, remote_port=51000),
                          net.close(0xE02))),
    ]
    run = DriverRun(exe, ["events", "--follow", "--json", "--count", "5"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert machine.waits == []
    docs = run.json_lines()
    assert len(docs) == 5 and len(net.events) == 5
    first = len(held.events)  # the first sequence number after the exe started
    for seq, (doc, ev) in enumerate(zip(docs, net.events), start=first):
        check_event_doc(run, doc, seq, *ev)
    assert [d["event"] for d in docs] == ["established", "established", "ended", "established", "ended"]
    # Reads 1-4 pended and were completed by the driver; the 4th action's
    # two events came at once, so the read after it found the second one
    # waiting. The first pass over the process table named the chat app and
    # the updater; the game needed a second.
    assert run.ioctls() == [("events", True, 0), ("processes", False, 0), ("events", True, 0),
                            ("events", True, 0), ("events", True, 0), ("processes", False, 0),
                            ("events", False, 0)]
    assert [a for n, a in run.calls if n == "wait"] == \
        ["completed", "timeout", "completed", "completed", "timeout", "timeout", "completed"]
    assert [a for n, a in run.calls if n == "QueryServiceStatusEx"] == ["wfpmon"] * 3
    assert not [a for n, a in run.calls if n == "CancelIoEx"]
    assert_clean(e)
    unload_and_check(e)


def test_ctrl_c_cancels_the_read_pending_in_the_driver(exe, image):
    """`events --follow` with one event, then Ctrl+C while the next read is
    pending in the driver: the handler's CancelIoEx becomes IoCancelIrp,
    the driver's queue completes the IRP with STATUS_CANCELLED, the exe
    gets ERROR_OPERATION_ABORTED and exits 0; closing its handle sends
    IRP_MJ_CLEANUP (and IRP_MJ_CLOSE); every IRP was completed once."""
    e = boot(image)
    net = Net(e)
    machine = DriverMachine(e)
    machine.waits = [(250, lambda _: net.open(0xF01, BROWSER)), "ctrl_c"]
    run = DriverRun(exe, ["events", "--follow"], machine=machine)
    assert (run.exit_code, run.stderr) == (0, ""), run.stderr
    assert not run.hung, "the read pending in the driver was cancelled"
    assert run.stdout.splitlines() == event_lines(run, net.events[:1]), run.stdout
    assert [a[0] for n, a in run.calls if n == "CancelIoEx"] == [Run.DEVICE]
    cancels = [c for c in e.calls if c.api == "IoCancelIrp"]
    assert len(cancels) == 1 and cancels[0].ret == 1, "IoCancelIrp found the queue's cancel routine"
    assert run.ioctls() == [("events", True, 0), ("processes", False, 0), ("events", True, 995)]
    assert run.irps_of_handle() == [(IRP_MJ_CREATE, 0), (IRP_MJ_DEVICE_CONTROL, 0), (IRP_MJ_DEVICE_CONTROL, 0),
                                    (IRP_MJ_DEVICE_CONTROL, L.STATUS_CANCELLED), (IRP_MJ_CLEANUP, 0),
                                    (IRP_MJ_CLOSE, 0)]
    assert ("CloseHandle", Run.DEVICE) in run.calls
    assert_clean(e)
    unload_and_check(e)


def test_a_service_stop_ends_follow_and_then_the_driver_unloads(exe, image):
    """`sc stop wfpmon` while `events --follow` waits: the exe, finding the
    service STOP_PENDING after a wait times out, cancels its read (the
    driver completes it STATUS_CANCELLED), exits 5 and closes its handle;
    then the driver unloads with nothing left."""
    e = boot(image)
    net = Net(e)
    machine = DriverMachine(e)
    machine.waits = [(600, lambda _: (net.open(0xF11, UPDATER), net.recv(0xF11, 10), net.close(0xF11))),
                     "service_stop"]
    run = DriverRun(exe, ["events", "--follow", "--json"], machine=machine)
    assert run.exit_code == 5 and "the wfpmon driver is stopping" in run.stderr, run.stderr
    docs = run.json_lines()
    assert len(docs) == 2
    for seq, (doc, ev) in enumerate(zip(docs, net.events)):
        check_event_doc(run, doc, seq, *ev)
    cancels = [a for n, a in run.calls if n == "CancelIoEx"]
    assert len(cancels) == 1 and cancels[0][0] == Run.DEVICE and cancels[0][1] != 0, \
        "the exe cancels its own request (naming its OVERLAPPED)"
    assert [c.ret for c in e.calls if c.api == "IoCancelIrp"] == [1]
    assert run.ioctls()[-1] == ("events", True, 995)
    assert [m for m, _ in run.irps_of_handle()][-2:] == [IRP_MJ_CLEANUP, IRP_MJ_CLOSE]
    assert_clean(e)
    unload_and_check(e)


# --- flows, counting ---------------------------------------------------------------


def test_flows_are_named_from_the_drivers_process_table(exe, image):
    """`flows --json`: the active flows, each named by the driver's process
    record (its path wins over what user mode says of the PID); a flow
    whose metadata had no path is named from its PID in user mode."""
    e = boot(image)
    net = three_programs(e)
    pathless = App(7070, None)
    net.open(0x707, pathless, remote_port=80)
    net.send(0x707, 77)
    machine = DriverMachine(e, processes={BROWSER.pid: r"C:\elsewhere\impostor.exe",
                                          pathless.pid: r"C:\Program Files\Tool\tool.exe"})
    run = DriverRun(exe, ["flows", "--json", "--sort", "pid"], machine=machine)
    assert run.exit_code == 0, run.stderr
    (doc,) = run.json_lines()
    check_schema(doc)
    active = sorted((c for c in net.conns.values() if c.ended is None), key=lambda c: (c.app.pid, c.handle))
    got = sorted(doc["flows"], key=lambda f: (f["pid"], f["flow_handle"]))
    # The list was read before the exe gave the host-name lookups their
    # time (its sleeps, which move the driver's clock on).
    listed_at = e.clock - sum(run.sleeps) * MS
    assert run.sleeps == [50], "one look after the lookups were queued: they had answered"
    assert [(f["flow_handle"], f["pid"], f["process"]) for f in got] == \
        [(f"{c.handle:#018x}", c.app.pid, "tool.exe" if c.app is pathless else c.app.name) for c in active]
    for f, c in zip(got, active):
        assert (f["local_address"], f["local_port"]) == c.endpoint("local")
        assert (f["remote_address"], f["remote_port"]) == c.endpoint("remote")
        assert [f["bytes_in"], f["bytes_out"], f["packets_in"], f["packets_out"]] == c.counters
        assert f["age_ms"] == (listed_at - c.established) // MS
        assert f["remote_host"] is None and f["services"] == []
    assert run.ioctls() == [("flows", False, 0), ("processes", False, 0)]
    assert_clean(e)
    unload_and_check(e)


def test_counting_off_reaches_the_driver_through_a_writable_handle(exe, image):
    """`counting off` opens the device for writing, and the driver stops
    counting. The same request on a handle without write access is refused
    by the I/O manager (ERROR_ACCESS_DENIED, exit 3) and never reaches the
    driver: the bridge's access check shown to fire."""
    e = boot(image)
    net = Net(e)
    net.open(0x801, CHAT)

    class ReadOnly(DriverRun):
        def _create_file(self, emu, api_name, func, args):
            args = list(args)
            args[1] &= ~GENERIC_WRITE
            return super()._create_file(emu, api_name, func, args)

    refused = ReadOnly(exe, ["counting", "off"], machine=DriverMachine(e))
    assert refused.exit_code == 3, refused.stderr
    assert refused.ioctls() == [("counting", False, ERROR_ACCESS_DENIED)]
    assert [m for m, _ in refused.irps_of_handle()] == [IRP_MJ_CREATE, IRP_MJ_CLEANUP, IRP_MJ_CLOSE]
    assert DC.stats(e)["counting_enabled"] == 1

    run = DriverRun(exe, ["counting", "off"], machine=DriverMachine(e))
    assert (run.exit_code, run.stdout) == (0, "traffic counting is off\n"), run.stderr
    assert run.ioctls() == [("counting", False, 0)]
    assert DC.stats(e)["counting_enabled"] == 0
    assert_clean(e)
    unload_and_check(e)
