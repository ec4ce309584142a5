"""Runs the real wfpmonctl.exe under the Speakeasy emulator with the
Windows it talks to faked: the filter-engine API (fwpuclnt.dll), the service
control manager, the control device (CreateFileW / DeviceIoControl answered
by `FakeDriver`, which encodes the control protocol independently of the
Rust encoders), process names, the console and the clock. `install` and
`uninstall` are checked structure by structure; `status`, `stats`, `flows`
and `counting` by their output, JSON documents and exit codes.

The executable is a PE built for x86_64-pc-windows-gnu (the one Windows
target whose C runtime and linker Debian provides: gcc-mingw-w64-x86-64).
The expected values are read from the sources that define them
(crates/wfpmon-core/src/catalog.rs, tools/wfpmonctl/src/plan.rs), and the
structure layouts are declared here with ctypes from the SDK headers'
definitions, independently of the windows crate.

Run with the project's test venv (speakeasy-emulator==2.0.0b9):
    target/linux-wdk/venv/bin/python -m pytest tools/wfpmonctl/tests/emulator
Set WFPMONCTL_EXE to use an already built executable.
"""

import copy
import ctypes as C
import inspect
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess

import pytest

speakeasy = pytest.importorskip("speakeasy")
from speakeasy.config import DEFAULT_CONFIG_DATA  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
TARGET = "x86_64-pc-windows-gnu"
LINKER = "x86_64-w64-mingw32-gcc"

# --- expected values, from the defining sources -----------------------------


def _guid_text(hex_with_underscores: str) -> str:
    h = hex_with_underscores.replace("_", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _catalog():
    text = (ROOT / "crates/wfpmon-core/src/catalog.rs").read_text()
    layers = {
        name: _guid_text(value)
        for name, value in re.findall(r"pub const (\w+): Guid =\s*Guid::from_u128\(0x([0-9a-f_]+)\)", text)
    }
    body = text[text.index("pub const CALLOUTS"):]
    callouts = [
        {"key": _guid_text(k), "name": n, "description": d, "layer": layers[l]}
        for k, n, d, l in re.findall(
            r"key: Guid::from_u128\(0x([0-9a-f_]+)\),\s*name: \"([^\"]+)\",\s*description: \"([^\"]+)\","
            r".*?management_layer: management_layer::(\w+),",
            body,
            re.S,
        )
    ]
    assert len(callouts) == 6, callouts
    return layers["PROVIDER_KEY"], layers["SUBLAYER_KEY"], callouts


PROVIDER_KEY, SUBLAYER_KEY, CALLOUTS = _catalog()


def _filter_keys():
    text = (ROOT / "crates/wfpmon-core/src/catalog.rs").read_text()
    table = text[text.index("pub const FILTER_KEYS"):]
    table = table[: table.index("];")]
    keys = [_guid_text(k) for k in re.findall(r"Guid::from_u128\(0x([0-9a-f_]+)\)", table)]
    assert len(keys) == 6
    return keys


FILTER_KEYS = _filter_keys()

FWP_UINT64 = 4
FWP_ACTION_CALLOUT_INSPECTION = 0x6004
FILTER_WEIGHT = 8 << 60
SUBLAYER_WEIGHT = 0x0100
FWP_E_ALREADY_EXISTS = 0x80320009
FWP_E_FILTER_NOT_FOUND = 0x80320003
FWP_E_CALLOUT_NOT_FOUND = 0x80320001
FWP_E_SUBLAYER_NOT_FOUND = 0x80320007
FWP_E_PROVIDER_NOT_FOUND = 0x80320005
EPT_S_NOT_REGISTERED = 1753

# --- FWPM structures (fwpmtypes.h / fwptypes.h), x64 layout -----------------


class GUID(C.Structure):
    _fields_ = [("d1", C.c_uint32), ("d2", C.c_uint16), ("d3", C.c_uint16), ("d4", C.c_uint8 * 8)]

    def text(self) -> str:
        d4 = bytes(self.d4).hex()
        return f"{self.d1:08x}-{self.d2:04x}-{self.d3:04x}-{d4[:4]}-{d4[4:]}"


class DISPLAY(C.Structure):
    _fields_ = [("name", C.c_uint64), ("description", C.c_uint64)]


class BLOB(C.Structure):
    _fields_ = [("size", C.c_uint32), ("data", C.c_uint64)]


class VALUE(C.Structure):
    _fields_ = [("type", C.c_uint32), ("value", C.c_uint64)]


class ACTION(C.Structure):
    _fields_ = [("type", C.c_uint32), ("key", GUID)]


class PROVIDER(C.Structure):
    _fields_ = [("key", GUID), ("display", DISPLAY), ("flags", C.c_uint32), ("data", BLOB),
                ("service_name", C.c_uint64)]


class SUBLAYER(C.Structure):
    _fields_ = [("key", GUID), ("display", DISPLAY), ("flags", C.c_uint32), ("provider_key", C.c_uint64),
                ("data", BLOB), ("weight", C.c_uint16)]


class CALLOUT(C.Structure):
    _fields_ = [("key", GUID), ("display", DISPLAY), ("flags", C.c_uint32), ("provider_key", C.c_uint64),
                ("data", BLOB), ("layer", GUID), ("callout_id", C.c_uint32)]


class FILTER(C.Structure):
    _fields_ = [("key", GUID), ("display", DISPLAY), ("flags", C.c_uint32), ("provider_key", C.c_uint64),
                ("data", BLOB), ("layer", GUID), ("sublayer", GUID), ("weight", VALUE),
                ("num_conditions", C.c_uint32), ("conditions", C.c_uint64), ("action", ACTION),
                ("raw_context", C.c_uint64 * 2), ("reserved", C.c_uint64), ("filter_id", C.c_uint64),
                ("effective_weight", VALUE)]


class SESSION(C.Structure):
    _fields_ = [("key", GUID), ("display", DISPLAY), ("flags", C.c_uint32), ("txn_wait_ms", C.c_uint32),
                ("process_id", C.c_uint32), ("sid", C.c_uint64), ("username", C.c_uint64),
                ("kernel_mode", C.c_int32)]


assert C.sizeof(PROVIDER) == 64 and C.sizeof(SUBLAYER) == 72 and C.sizeof(CALLOUT) == 88
assert C.sizeof(FILTER) == 200 and FILTER.action.offset == 128 and FILTER.raw_context.offset == 152

# --- the emulated run --------------------------------------------------------


@pytest.fixture(scope="session")
def exe() -> str:
    given = os.environ.get("WFPMONCTL_EXE")
    if given:
        return given
    libdir = subprocess.run(["rustc", "--print", "target-libdir", "--target", TARGET],
                            capture_output=True, text=True)
    if libdir.returncode != 0 or not pathlib.Path(libdir.stdout.strip()).is_dir():
        pytest.skip(f"the Rust standard library for {TARGET} is not installed (rustup target add {TARGET})")
    if shutil.which(LINKER) is None:
        pytest.skip(f"{LINKER} is not installed (apt-get install gcc-mingw-w64-x86-64)")
    env = dict(os.environ, CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=LINKER)
    subprocess.run(["cargo", "build", "--release", "-p", "wfpmonctl", "--target", TARGET],
                   cwd=ROOT, env=env, check=True)
    return str(ROOT / "target" / TARGET / "release" / "wfpmonctl.exe")


# --- the control protocol, written from protocol.rs's documented layouts --

PROTOCOL_RS = (ROOT / "crates/wfpmon-core/src/protocol.rs").read_text()


def _protocol_const(name: str) -> int:
    value = re.search(rf"pub const {name}: u\d+ = (0x[0-9A-Fa-f_]+|\d+);", PROTOCOL_RS).group(1)
    return int(value.replace("_", ""), 0)


def _ioctl(name: str) -> int:
    """CTL_CODE(type, function, METHOD_BUFFERED, access) of an IOCTL, with the
    device type and access named in protocol.rs resolved there too."""
    m = re.search(rf"pub const {name}: u32 =\s*ctl_code\(\s*(\w+),\s*(0x[0-9a-fA-F]+),\s*METHOD_BUFFERED,\s*([\w |]+?),?\s*\);",
                  PROTOCOL_RS)
    access = sum(_protocol_const(a.strip()) for a in m.group(3).split("|"))
    return (_protocol_const(m.group(1)) << 16) | (access << 14) | (int(m.group(2), 16) << 2)


VERSION = _protocol_const("PROTOCOL_VERSION")
IOCTL_QUERY_STATS, IOCTL_LIST_FLOWS, IOCTL_SET_COUNTING, IOCTL_READ_EVENTS, IOCTL_LIST_PROCESSES = (
    _ioctl(f"IOCTL_WFPMON_{n}") for n in ("QUERY_STATS", "LIST_FLOWS", "SET_COUNTING", "READ_EVENTS", "LIST_PROCESSES"))
DEVICE_PATH = "\\\\.\\GLOBALROOT\\Device\\WfpMon"
ERROR_FILE_NOT_FOUND, ERROR_INVALID_PARAMETER, ERROR_NO_DATA, ERROR_MORE_DATA = 2, 87, 232, 234
ERROR_SERVICE_DOES_NOT_EXIST, ERROR_BROKEN_PIPE, STATUS_PIPE_BROKEN = 1060, 109, 0xC000014B
# DeviceIoControl's Win32 codes for the driver's NTSTATUS answers (RtlNtStatusToDosError):
# STATUS_DEVICE_BUSY, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED; and overlapped I/O's own.
ERROR_BUSY, ERROR_INSUFFICIENT_BUFFER, ERROR_OPERATION_ABORTED = 170, 122, 995
ERROR_IO_PENDING, ERROR_IO_INCOMPLETE, ERROR_NOT_FOUND, ERROR_TIMEOUT, WAIT_TIMEOUT = 997, 996, 1168, 1460, 258
SERVICE_STOP_PENDING = 3
FILE_FLAG_OVERLAPPED, CTRL_C_EVENT = 0x40000000, 0
FLOW_ENTRY, EVENT_SIZE, PROCESS_ENTRY = 104, 128, 624
FROM_NOW = (1 << 64) - 1
BOOT = 3600 * 10_000_000  # the driver's interrupt time when the emulated clock starts: 1 h after boot
FWPM_CALLOUT_FLAG_REGISTERED = 0x40000
NOT_FOUND = {"Provider": 0x80320005, "SubLayer": 0x80320007, "Callout": 0x80320001, "Filter": 0x80320003}


def _addr(a):
    import ipaddress
    return ipaddress.ip_address(a).packed.ljust(16, b"\0")


def flow(handle, pid, proto=6, family=2, local=("10.0.0.5", 50000), remote=("93.184.216.34", 443),
         direction=0, age_ms=5000, bytes_in=0, bytes_out=0, packets_in=0, packets_out=0, key=0):
    return dict(handle=handle, pid=pid, proto=proto, family=family, local=_addr(local[0]), lport=local[1],
                remote=_addr(remote[0]), rport=remote[1], direction=direction, age_ms=age_ms,
                bytes_in=bytes_in, bytes_out=bytes_out, packets_in=packets_in, packets_out=packets_out, key=key)


def pkey(slot, generation=1):
    """A process key: generation << 32 | slot."""
    return generation << 32 | slot


def process(slot, pid, path, generation=1, flags=0, active_flows=1, flows_total=1, first_seen=BOOT - 50_000_000,
            last_seen=BOOT - 10_000_000, active=(0, 0, 0, 0), ended=(0, 0, 0, 0)):
    """A process-table entry; `path` in the engine's device form (None: not supplied)."""
    return dict(slot=slot, key=pkey(slot, generation), pid=pid, path=path or "", flags=flags | (0 if path else 2),
                active_flows=active_flows, flows_total=flows_total, first_seen=first_seen, last_seen=last_seen,
                active=tuple(active), ended=tuple(ended))


EVENT_KINDS = {"established": 1, "ended": 2}


def flow_event(kind, f, time, key=0, duration=0, flags=0, established=None):
    """An event of flow `f` (a `flow()` dict) at interrupt time `time`."""
    return dict(kind=EVENT_KINDS[kind], flags=flags | (0 if key else 2), flow=f, key=key, time=time,
                duration=duration, established=time - duration if established is None else established)


class FakeDriver:
    """The driver's side of the control protocol: validates the header of
    each request and answers with the documented little-endian layouts.

    Events: every event written is in `events` (its index is its sequence
    number); the ring holds the last `ring` of them. A READ_EVENTS with
    READ_EVENTS_WAIT and nothing after its cursor pends: `ioctl` answers
    `PENDING` and the machine completes it later with `complete_read`.
    """

    PENDING = object()

    def __init__(self, flows=(), counting=True, growth=None, processes=(), events=(), ring=16384, busy=0,
                 evictions=0, unattributed=0, process_growth=None):
        self.flows = [dict(f) for f in flows]
        self.counting = counting
        self.growth = growth  # callable(flows) run before every LIST_FLOWS
        self.requests: list[str] = []
        self.processes = [dict(p) for p in processes]
        self.events = [dict(e) for e in events]
        self.ring = ring
        self.busy = busy  # LIST_PROCESSES answered ERROR_BUSY this many times first
        self.evictions, self.unattributed = evictions, unattributed
        self.process_growth = process_growth  # callable(processes) run before every LIST_PROCESSES
        self.now = BOOT  # the interrupt time; the machine keeps it on its clock

    def stats(self):
        sums = [sum(f[k] for f in self.flows) for k in ("bytes_in", "bytes_out", "packets_in", "packets_out")]
        return (struct.pack("<IIII", VERSION, 88, int(self.counting), 0)
                + struct.pack("<9Q", len(self.flows), len(self.flows) + 7, 7, 1, 0, *sums))

    @staticmethod
    def entry(f):
        return (struct.pack("<7Q", f["handle"], f["pid"], f["age_ms"], f["bytes_in"], f["bytes_out"],
                            f["packets_in"], f["packets_out"])
                + f["local"] + f["remote"]
                + struct.pack("<HHHBB", f["lport"], f["rport"], 23 if f["family"] == 23 else 2, f["proto"],
                              f["direction"])
                + struct.pack("<Q", f.get("key", 0)))

    @staticmethod
    def event_record(seq, e):
        f = e["flow"]
        record = (struct.pack("<QQBBHIQQQ", seq, e["time"], e["kind"], e["flags"], 23 if f["family"] == 23 else 2,
                              f["pid"], e["key"], f["handle"], e["duration"])
                  + f["local"] + f["remote"]
                  + struct.pack("<HHBBH4QQ", f["lport"], f["rport"], f["proto"], f["direction"], 0,
                                f["bytes_in"], f["bytes_out"], f["packets_in"], f["packets_out"], e["established"]))
        assert len(record) == EVENT_SIZE
        return record

    @staticmethod
    def process_record(p):
        path = p["path"].encode("utf-16-le")
        record = (struct.pack("<QIHHIIQQQ4Q4Q", p["key"], p["pid"], p["flags"], len(path) // 2, p["active_flows"], 0,
                              p["flows_total"], p["first_seen"], p["last_seen"], *p["active"], *p["ended"])
                  + path.ljust(512, b"\0"))
        assert len(record) == PROCESS_ENTRY
        return record

    def read_events(self, cursor, max_events, out_len):
        """The READ_EVENTS answer from `cursor` (already resolved) on."""
        head = len(self.events)
        oldest = max(0, head - self.ring)
        start = max(min(cursor, head), oldest)
        fit = min(256, (out_len - 48) // EVENT_SIZE, *([max_events] if max_events else []))
        batch = range(start, min(head, start + fit))
        header = struct.pack("<IIIIQQQQ", VERSION, 48 + EVENT_SIZE * len(batch), len(batch), EVENT_SIZE,
                             start + len(batch), start - min(cursor, head), oldest, self.now)
        return header + b"".join(self.event_record(seq, self.events[seq]) for seq in batch)

    def ioctl(self, code, request, out_len):
        """(Win32 status, output bytes), or (PENDING, resolved cursor)."""
        version, size = struct.unpack_from("<II", request)
        if version != VERSION or size != len(request):
            return ERROR_INVALID_PARAMETER, b""
        if code == IOCTL_QUERY_STATS and len(request) == 8 and out_len >= 88:
            self.requests.append("stats")
            return 0, self.stats()
        if code == IOCTL_SET_COUNTING and len(request) == 16:
            self.counting = bool(struct.unpack_from("<I", request, 8)[0])
            self.requests.append(f"counting {int(self.counting)}")
            return 0, b""
        if code == IOCTL_LIST_FLOWS and len(request) == 24 and out_len >= 32:
            # A paged list: at most 256 flows (or what fits) after the
            # request's cursor; this fake pages by index (the cursor's
            # bucket field) and sets FLOW_LIST_MORE while flows remain.
            self.requests.append("list")
            if self.growth:
                self.growth(self.flows)
            max_entries, start, _seq, reserved = struct.unpack_from("<IIII", request, 8)
            if reserved:
                return ERROR_INVALID_PARAMETER, b""
            fit = min(256, (out_len - 32) // FLOW_ENTRY, *( [max_entries] if max_entries else []))
            batch = self.flows[start:start + fit]
            end = start + len(batch)
            more = end < len(self.flows)
            header = struct.pack("<8I", VERSION, 32 + FLOW_ENTRY * len(batch), len(self.flows), len(batch),
                                 FLOW_ENTRY, 1 if more else 0, end if more else 0, 0)
            return 0, header + b"".join(self.entry(f) for f in batch)
        if code == IOCTL_READ_EVENTS and len(request) == 24:
            max_events, flags, cursor = struct.unpack_from("<IIQ", request, 8)
            if flags & ~1:
                return ERROR_INVALID_PARAMETER, b""
            if out_len < 48 + EVENT_SIZE:
                return ERROR_INSUFFICIENT_BUFFER, b""
            cursor = min(cursor, len(self.events))  # FROM_NOW (or beyond): the next event written
            self.requests.append(f"events {cursor}{' wait' if flags else ''}")
            if flags and cursor == len(self.events):
                return self.PENDING, (cursor, max_events)
            return 0, self.read_events(cursor, max_events, out_len)
        if code == IOCTL_LIST_PROCESSES and len(request) == 16:
            max_entries, cursor = struct.unpack_from("<II", request, 8)
            if cursor >= 1024:
                return ERROR_INVALID_PARAMETER, b""
            if out_len < 56 + PROCESS_ENTRY:
                return ERROR_INSUFFICIENT_BUFFER, b""
            self.requests.append(f"processes {cursor}")
            if self.busy:
                self.busy -= 1
                return ERROR_BUSY, b""
            if self.process_growth and cursor == 0:
                self.process_growth(self.processes)
            fit = min(64, (out_len - 56) // PROCESS_ENTRY, *([max_entries] if max_entries else []))
            after = sorted((p for p in self.processes if p["slot"] >= cursor), key=lambda p: p["slot"])
            batch, more = after[:fit], len(after) > fit
            header = struct.pack("<IIIIIIQIIQQ", VERSION, 56 + PROCESS_ENTRY * len(batch), len(batch), PROCESS_ENTRY,
                                 1 if more else 0, batch[-1]["slot"] + 1 if more else 0, self.now, 1024, 0,
                                 self.evictions, self.unattributed)
            return 0, header + b"".join(self.process_record(p) for p in batch)
        return ERROR_INVALID_PARAMETER, b""


class Machine:
    """The emulated Windows around wfpmonctl.exe."""

    def __init__(self, driver=None, services=None, installed=(), registered=(), processes=None,
                 console=None, closed_stdout_after=None):
        self.driver = driver  # FakeDriver, or None: the control device is absent
        self.services = {"BFE": 4, "wfpmon": 4 if driver else 1} if services is None else services
        self.installed = set(installed)  # keys of the filter-engine objects present
        self.registered = set(registered)  # callout keys the driver has registered
        self.processes = processes or {}  # pid -> image path
        self.console = console  # stdout console width, or None: stdout is a pipe
        self.closed_stdout_after = closed_stdout_after  # writes accepted before the pipe closes
        self.ctrl_c_at_sleep = None  # Ctrl+C is pressed during the n-th Sleep (1-based)
        self.drives = {"C:": r"\Device\HarddiskVolume3", "E:": r"\Device\HarddiskVolume30"}  # QueryDosDeviceW
        # What happens while wfpmonctl waits for a pending READ_EVENTS, in
        # order: ("events", [flow_event...], ms) - the events are written
        # after ms milliseconds (a wait shorter than that times out) and the
        # read completes with them; "ctrl_c" - the console runs the control
        # handler; "service_stop" - `sc stop wfpmon`: the service is
        # STOP_PENDING while this handle keeps the driver from unloading;
        # "unload" - the driver completes the read with STATUS_CANCELLED.
        self.waits: list = []
        # Ctrl+C comes while a READ_EVENTS is on its way to the driver: the
        # handler runs before the request is pending (nothing to cancel yet).
        self.ctrl_c_before_pending = False


def installed_everything():
    return {PROVIDER_KEY, SUBLAYER_KEY, *[c["key"] for c in CALLOUTS], *FILTER_KEYS}


class Run:
    """One emulated `wfpmonctl.exe ARGS`, with fwpuclnt.dll answered by
    `answers` ({api: status or callable(call_index) -> status}) and the rest
    of Windows by `machine`."""

    HANDLE = 0x5EED
    DEVICE = 0xD0D0
    SCM = 0x5C00
    FILETIME_2026 = (1_767_225_600 + 11_644_473_600) * 10_000_000  # 2026-01-01T00:00:00Z
    # Speakeasy settings a subclass changes (test_wfpmonctl_real_driver.py:
    # a longer run timeout, since the driver's own emulation runs inside
    # this run's API hooks and counts toward it).
    CONFIG: dict = {}

    def __init__(self, exe: str, args: list[str], answers: dict | None = None, machine: Machine | None = None):
        self.answers = answers or {}
        self.machine = machine or Machine()
        self.calls: list[tuple[str, object]] = []
        self.stdout = ""
        self.stderr = ""
        self.clock_ms = 0
        self.sleeps: list[int] = []
        self.ctrl_handlers: list[int] = []
        self.device_flags = None  # CreateFileW's flags for the control device
        self.pending = None  # the READ_EVENTS the driver holds (one at a time)
        self.completed: dict[int, tuple[int, int]] = {}  # OVERLAPPED -> (Win32 status, bytes)
        self.waiting = None  # (API frame, bytes pointer) of a GetOverlappedResult in a Ctrl+C callback
        self.hung = False  # a wait no event, cancellation or unload would ever end
        self.on_its_way = None  # a request that pends once the Ctrl+C handler has run
        self.stdout_writes = 0
        config = copy.deepcopy(DEFAULT_CONFIG_DATA)
        config["command_line"] = " ".join(["wfpmonctl.exe", *args])
        config["max_api_count"] = 400_000
        config.update(self.CONFIG)
        self.se = speakeasy.Speakeasy(config=config)
        module = self.se.load_module(exe)
        for api, argc, parse in [
            ("FwpmEngineOpen0", 5, self._open),
            ("FwpmEngineClose0", 1, None),
            ("FwpmTransactionBegin0", 2, lambda a: a[1]),
            ("FwpmTransactionCommit0", 1, None),
            ("FwpmTransactionAbort0", 1, None),
            ("FwpmProviderAdd0", 3, lambda a: self._read(PROVIDER, a[1])),
            ("FwpmSubLayerAdd0", 3, lambda a: self._read(SUBLAYER, a[1])),
            ("FwpmCalloutAdd0", 4, lambda a: self._read(CALLOUT, a[1])),
            ("FwpmFilterAdd0", 4, lambda a: self._read(FILTER, a[1])),
            ("FwpmFilterDeleteByKey0", 2, lambda a: self._read(GUID, a[1]).text()),
            ("FwpmCalloutDeleteByKey0", 2, lambda a: self._read(GUID, a[1]).text()),
            ("FwpmSubLayerDeleteByKey0", 2, lambda a: self._read(GUID, a[1]).text()),
            ("FwpmProviderDeleteByKey0", 2, lambda a: self._read(GUID, a[1]).text()),
        ]:
            self.se.add_api_hook(self._hook(api, parse), "fwpuclnt", api, argc=argc)
        for kind in NOT_FOUND:
            self.se.add_api_hook(self._get_by_key(kind), "fwpuclnt", f"Fwpm{kind}GetByKey0", argc=3)
        hooks = [
            ("fwpuclnt", "FwpmFreeMemory0", 1, lambda emu, a: 0),
            # Speakeasy's WriteConsoleW does not report the characters
            # written, which Rust's stdout treats as a failed write.
            ("kernel32", "WriteConsoleW", 5, self._write_console),
            # Rust writes to a stdout that is no console with NtWriteFile.
            ("ntdll", "NtWriteFile", 9, self._nt_write_file),
            ("ntdll", "RtlNtStatusToDosError", 1, lambda emu, a: {STATUS_PIPE_BROKEN: ERROR_BROKEN_PIPE}.get(a[0], 317)),
            ("kernel32", "GetStdHandle", 1, self._get_std_handle),
            ("kernel32", "GetConsoleMode", 2, self._get_console_mode),
            ("kernel32", "SetConsoleMode", 2, lambda emu, a: 1),
            ("kernel32", "GetConsoleScreenBufferInfo", 2, self._screen_buffer_info),
            ("kernel32", "CreateFileW", 7, self._create_file),
            ("kernel32", "DeviceIoControl", 8, self._device_io_control),
            ("kernel32", "GetOverlappedResultEx", 5, self._get_overlapped_result),
            ("kernel32", "CancelIoEx", 2, self._cancel_io_ex),
            ("kernel32", "QueryDosDeviceW", 3, self._query_dos_device),
            ("kernel32", "CloseHandle", 1, self._close_handle),
            ("kernel32", "OpenProcess", 3, self._open_process),
            ("kernel32", "QueryFullProcessImageNameW", 4, self._image_name),
            # The clock: std's sleep falls back to Sleep without a
            # high-resolution timer, and Sleep advances Instant and nothing else.
            ("kernel32", "CreateWaitableTimerExW", 4, lambda emu, a: 0),
            ("kernel32", "Sleep", 1, self._sleep),
            ("kernel32", "SetConsoleCtrlHandler", 2, self._set_ctrl_handler),
            ("kernel32", "QueryPerformanceFrequency", 1, self._qpf),
            ("kernel32", "QueryPerformanceCounter", 1, self._qpc),
            ("kernel32", "GetSystemTimePreciseAsFileTime", 1, self._filetime),
            ("advapi32", "OpenSCManagerW", 3, lambda emu, a: self.SCM),
            ("advapi32", "OpenServiceW", 3, self._open_service),
            ("advapi32", "QueryServiceStatusEx", 5, self._query_service),
            ("advapi32", "CloseServiceHandle", 1, lambda emu, a: 1),
        ]
        self.std_handles: dict[int, str] = {}
        self.services_by_handle: dict[int, str] = {}
        for module_name, api, argc, fn in hooks:
            self.se.add_api_hook(self._plain(fn), module_name, api, argc=argc)
        self.se.run_module(module, all_entrypoints=False)
        entry = self.se.get_report().model_dump()["entry_points"][-1]
        assert entry["error"] is None, entry["error"]
        self.exit_code = int(entry["ret_val"], 16)

    @staticmethod
    def _plain(fn):
        """Hooks taking (emu, args) or Speakeasy's (emu, api_name, func, args)."""
        short = len(inspect.signature(fn).parameters) == 2

        def hook(emu, api_name, func, args):
            return fn(emu, args) if short else fn(emu, api_name, func, args)
        return hook

    def _read(self, cls, addr):
        return cls.from_buffer_copy(self.se.mem_read(addr, C.sizeof(cls)))

    def wstr(self, addr: int) -> str | None:
        if not addr:
            return None
        raw = b""
        while not raw.endswith(b"\0\0") or len(raw) % 2:
            raw += self.se.mem_read(addr + len(raw), 2)
        return raw[:-2].decode("utf-16-le")

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.se.mem_read(addr, 8))[0]

    def _open(self, args):
        session = self._read(SESSION, args[3])
        self.se.mem_write(args[4], struct.pack("<Q", self.HANDLE))
        return session

    def _hook(self, api, parse):
        def hook(emu, api_name, func, args):
            detail = parse(args) if parse else None
            index = sum(1 for name, _ in self.calls if name == api)
            self.calls.append((api, detail))
            if api != "FwpmEngineOpen0":
                assert args[0] == self.HANDLE, f"{api} on handle {args[0]:#x}"
            answer = self.answers.get(api, 0)
            status = answer(index) if callable(answer) else answer
            if api.startswith(("FwpmProvider", "FwpmSubLayer", "FwpmCallout", "FwpmFilter")) and api.endswith("Add0"):
                # Strings are read while the call is in progress, as BFE does.
                self.calls[-1] = (api, (detail, self.wstr(detail.display.name), self.wstr(detail.display.description)))
            return status
        return hook

    def _get_by_key(self, kind):
        def hook(emu, api_name, func, args):
            key = self._read(GUID, args[1]).text()
            self.calls.append((api_name, key))
            assert args[0] == self.HANDLE
            if key not in self.machine.installed:
                return NOT_FOUND[kind]
            flags = FWPM_CALLOUT_FLAG_REGISTERED if key in self.machine.registered else 0
            obj = self.se.mem_alloc(256)
            # Every FWPM_*0 object has its flags at offset 32 (key, display data).
            self.se.mem_write(obj, bytes(32) + struct.pack("<I", flags) + bytes(220))
            self.se.mem_write(args[2], struct.pack("<Q", obj))
            return 0
        return hook

    def _get_std_handle(self, emu, api_name, func, args):
        handle = func(args)
        # STD_OUTPUT_HANDLE is (DWORD)-11, STD_ERROR_HANDLE (DWORD)-12.
        name = {0xFFFFFFF5: "stdout", 0xFFFFFFF4: "stderr"}.get(args[0] & 0xFFFFFFFF)
        if name:
            self.std_handles[handle] = name
        return handle

    def _get_console_mode(self, emu, api_name, func, args):
        if self.std_handles.get(args[0]) == "stdout" and self.machine.console is None:
            emu.set_last_error(6)  # ERROR_INVALID_HANDLE: a pipe, not a console
            return 0
        if args[1]:
            self.se.mem_write(args[1], struct.pack("<I", 3))
        return 1

    def _screen_buffer_info(self, emu, args):
        width = self.machine.console or 80
        # COORD size, COORD cursor, WORD attributes, SMALL_RECT window, COORD max.
        self.se.mem_write(args[1], struct.pack("<hhhhHhhhhhh", width, 300, 0, 0, 7, 0, 0, width - 1, 24, width, 300))
        return 1

    def _capture(self, emu, handle, text, count, written):
        stream = self.std_handles.get(handle)
        assert stream, f"write on unknown handle {handle:#x}"
        if stream == "stdout":
            self.stdout_writes += 1
            closed = self.machine.closed_stdout_after
            if closed is not None and self.stdout_writes > closed:
                emu.set_last_error(ERROR_NO_DATA)  # what WriteConsoleW would say
                return 0
        if written:
            self.se.mem_write(written, struct.pack("<I", count))
        setattr(self, stream, getattr(self, stream) + text)
        return 1

    def _write_console(self, emu, api_name, func, args):
        handle, buf, count, written = args[:4]
        return self._capture(emu, handle, self.se.mem_read(buf, count * 2).decode("utf-16-le"), count, written)

    def _nt_write_file(self, emu, api_name, func, args):
        handle, iosb, buf, count = args[0], args[4], args[5], args[6]
        if handle not in self.std_handles:
            return func(args)
        if not self._capture(emu, handle, self.se.mem_read(buf, count).decode("utf-8"), count, 0):
            return STATUS_PIPE_BROKEN
        self.se.mem_write(iosb, struct.pack("<QQ", 0, count))  # IO_STATUS_BLOCK: Status, Information
        return 0

    def _create_file(self, emu, api_name, func, args):
        path = self.wstr(args[0])
        if path != DEVICE_PATH:
            return func(args)
        self.calls.append(("CreateFileW", (path, args[1])))
        self.device_flags = args[5]
        if self.machine.driver is None:
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0xFFFFFFFFFFFFFFFF
        return self.DEVICE

    def _device_io_control(self, emu, args):
        handle, code, inbuf, inlen, outbuf, outlen, returned, overlapped = args[:8]
        assert handle == self.DEVICE
        # "If hDevice was opened with FILE_FLAG_OVERLAPPED, lpOverlapped must
        # point to a valid OVERLAPPED structure" (DeviceIoControl); wfpmonctl
        # opens the device so, and gives each request an event to signal.
        assert self.device_flags & FILE_FLAG_OVERLAPPED and overlapped, "overlapped I/O on the device"
        assert self.u64(overlapped + 24), "OVERLAPPED.hEvent"
        assert self.pending is None, "one request at a time"
        driver = self.machine.driver
        driver.now = BOOT + self.clock_ms * 10_000
        status, data = driver.ioctl(code, self.se.mem_read(inbuf, inlen) if inlen else b"", outlen)
        if status is FakeDriver.PENDING:
            cursor, max_events = data
            request = dict(overlapped=overlapped, cursor=cursor, max=max_events, out=outbuf, len=outlen)
            emu.set_last_error(ERROR_IO_PENDING)
            if self.machine.ctrl_c_before_pending:
                self.machine.ctrl_c_before_pending = False
                self.on_its_way = request
                kernel32, _ = emu.api.get_export_func_handler("kernel32", "DeviceIoControl")
                kernel32.setup_callback(self.ctrl_handlers[-1], [CTRL_C_EVENT])
            else:
                self.pending = request
            return 0
        if status:
            emu.set_last_error(status)
            return 0
        data = data[:outlen]
        if data:
            self.se.mem_write(outbuf, data)
        if returned:
            self.se.mem_write(returned, struct.pack("<I", len(data)))
        self.completed[overlapped] = (0, len(data))
        return 1

    def _finish(self, emu, status, count, transferred):
        self.se.mem_write(transferred, struct.pack("<I", count))
        if status:
            emu.set_last_error(status)
        return int(status == 0)

    def _arrived(self):
        """The request on its way is pending now (the handler has run)."""
        if self.on_its_way and not self.ctrl_handler_running:
            self.pending, self.on_its_way = self.on_its_way, None

    @property
    def ctrl_handler_running(self):
        return self.on_its_way is not None and self.on_its_way.get("handler_done") is None

    def _get_overlapped_result(self, emu, args):
        handle, overlapped, transferred, timeout_ms, alertable = args[:5]
        assert handle == self.DEVICE and not alertable
        self._arrived()
        if overlapped in self.completed:
            return self._finish(emu, *self.completed.pop(overlapped), transferred)
        assert self.pending and self.pending["overlapped"] == overlapped, "the result of a request never made"
        if timeout_ms == 0:
            emu.set_last_error(ERROR_IO_INCOMPLETE)
            return 0
        action = self.machine.waits.pop(0) if self.machine.waits else None
        self.calls.append(("wait", action if isinstance(action, str) else "events"))
        driver = self.machine.driver
        if action == "service_stop" or (isinstance(action, tuple) and action[2] >= timeout_ms):
            # The wait times out (and, for a late event, is waited again).
            self.clock_ms += timeout_ms
            if action == "service_stop":
                self.machine.services["wfpmon"] = SERVICE_STOP_PENDING
            else:
                self.machine.waits.insert(0, (action[0], action[1], action[2] - timeout_ms))
            emu.set_last_error(WAIT_TIMEOUT)
            return 0
        if isinstance(action, tuple):
            # Time passes, the flows come and go, and the driver completes
            # the pending read with what was written after its cursor.
            _, events, ms = action
            self.clock_ms += ms
            driver.now = BOOT + self.clock_ms * 10_000
            driver.events.extend(events)
            p, self.pending = self.pending, None
            data = driver.read_events(p["cursor"], p["max"], p["len"])
            self.se.mem_write(p["out"], data)
            return self._finish(emu, 0, len(data), transferred)
        if action == "unload":
            self.pending = None
            driver.requests.append("cancelled")
            return self._finish(emu, ERROR_OPERATION_ABORTED, 0, transferred)
        # Nothing completes the read unless the control handler cancels it.
        self.hung = True
        emu.set_last_error(ERROR_TIMEOUT)
        if action == "ctrl_c":
            # The console runs the handler (on a thread of its own on
            # Windows; here while this call waits) and the call returns what
            # the handler's CancelIoEx made of the request.
            self.waiting = (emu._active_api_frame, transferred)
            kernel32, _ = emu.api.get_export_func_handler("kernel32", "GetOverlappedResultEx")
            kernel32.setup_callback(self.ctrl_handlers[-1], [CTRL_C_EVENT])
        return 0

    def _cancel_io_ex(self, emu, args):
        handle, overlapped = args[:2]
        self.calls.append(("CancelIoEx", (handle, overlapped)))
        if self.ctrl_handler_running:
            # The handler's CancelIoEx, before the request pends: nothing to
            # cancel. (It runs on its own thread on Windows: the failure's
            # last-error value is that thread's, not the caller's.)
            self.on_its_way["handler_done"] = True
            return 0
        self._arrived()
        p = self.pending
        if handle != self.DEVICE or p is None or overlapped not in (0, p["overlapped"]):
            emu.set_last_error(ERROR_NOT_FOUND)
            return 0
        # The I/O manager cancels the IRP; the driver's queue completes it
        # with STATUS_CANCELLED.
        self.pending = None
        self.machine.driver.requests.append("cancelled")
        if self.waiting:
            (frame, transferred), self.waiting = self.waiting, None
            self.hung = False
            frame.result = self._finish(emu, ERROR_OPERATION_ABORTED, 0, transferred)
        else:
            self.completed[p["overlapped"]] = (ERROR_OPERATION_ABORTED, 0)
        return 1

    def _query_dos_device(self, emu, args):
        name, target, size = args[:3]
        drive = self.wstr(name)
        self.calls.append(("QueryDosDeviceW", drive))
        device = self.machine.drives.get(drive)
        if device is None:
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0
        data = (device + "\0\0").encode("utf-16-le")
        assert len(data) // 2 <= size
        self.se.mem_write(target, data)
        return len(data) // 2

    def _close_handle(self, emu, api_name, func, args):
        if args[0] == self.DEVICE or (args[0] >> 16) == 0x9:
            self.calls.append(("CloseHandle", args[0]))
            return 1
        return func(args)

    def _open_process(self, emu, args):
        pid = args[2]
        if pid not in self.machine.processes:
            emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        return 0x90000 + pid

    def _image_name(self, emu, args):
        path = self.machine.processes[args[0] - 0x90000]
        self.se.mem_write(args[2], path.encode("utf-16-le") + b"\0\0")
        self.se.mem_write(args[3], struct.pack("<I", len(path)))
        return 1

    def _sleep(self, emu, args):
        self.sleeps.append(args[0])
        self.clock_ms += args[0]
        if self.machine.ctrl_c_at_sleep == len(self.sleeps):
            # The console delivers CTRL_C_EVENT: the registered handler runs
            # as if Sleep had called it, and returns to Sleep's caller.
            self.se.reg_write("rcx", 0)
            self.se.set_pc(self.ctrl_handlers[-1])
        return 0

    def _set_ctrl_handler(self, emu, args):
        if args[1]:
            self.ctrl_handlers.append(args[0])
        return 1

    def _qpf(self, emu, args):
        self.se.mem_write(args[0], struct.pack("<q", 10_000_000))
        return 1

    def _qpc(self, emu, args):
        self.se.mem_write(args[0], struct.pack("<q", self.clock_ms * 10_000))
        return 1

    def _filetime(self, emu, args):
        self.se.mem_write(args[0], struct.pack("<Q", self.FILETIME_2026 + self.clock_ms * 10_000))
        return 0

    def _open_service(self, emu, args):
        name = self.wstr(args[1])
        if name not in self.machine.services:
            emu.set_last_error(ERROR_SERVICE_DOES_NOT_EXIST)
            return 0
        handle = 0x5C10 + len(self.services_by_handle)
        self.services_by_handle[handle] = name
        return handle

    def _query_service(self, emu, args):
        name = self.services_by_handle[args[0]]
        self.calls.append(("QueryServiceStatusEx", name))
        state = self.machine.services[name]
        self.se.mem_write(args[2], struct.pack("<9I", 1, state, 0, 0, 0, 0, 0, 0, 0))
        return 1

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def added(self, api: str) -> list:
        return [detail for name, detail in self.calls if name == api]

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines()]


def install_calls():
    return (["FwpmEngineOpen0", "FwpmTransactionBegin0", "FwpmProviderAdd0", "FwpmSubLayerAdd0"]
            + ["FwpmCalloutAdd0"] * 6 + ["FwpmFilterAdd0"] * 6
            + ["FwpmTransactionCommit0", "FwpmEngineClose0"])


def check_objects(run: Run, provider_flags, sublayer_flags, callout_flags, filter_flags):
    assert run.exit_code == 0, run.stderr
    assert run.names() == install_calls()

    session = run.calls[0][1]
    assert session.flags == 0, "a non-dynamic session: the objects outlive wfpmonctl"
    assert session.txn_wait_ms == 15000

    ((provider, name, description),) = run.added("FwpmProviderAdd0")
    assert provider.key.text() == PROVIDER_KEY
    assert provider.flags == provider_flags
    assert name == "wfpmon" and description
    assert provider.service_name == 0, "no service name: BFE would skip the objects of a demand-start service"

    ((sublayer, name, _),) = run.added("FwpmSubLayerAdd0")
    assert sublayer.key.text() == SUBLAYER_KEY
    assert sublayer.flags == sublayer_flags
    assert sublayer.weight == SUBLAYER_WEIGHT
    assert name

    callouts = run.added("FwpmCalloutAdd0")
    for (callout, name, description), spec in zip(callouts, CALLOUTS):
        assert callout.key.text() == spec["key"]
        assert callout.layer.text() == spec["layer"]
        assert (name, description) == (spec["name"], spec["description"])
        assert callout.flags == callout_flags

    filters = run.added("FwpmFilterAdd0")
    for (f, name, _), spec, key in zip(filters, CALLOUTS, FILTER_KEYS):
        assert f.key.text() == key
        assert f.layer.text() == spec["layer"], "the filter sits at its callout's layer"
        assert f.sublayer.text() == SUBLAYER_KEY
        assert f.action.type == FWP_ACTION_CALLOUT_INSPECTION
        assert f.action.key.text() == spec["key"]
        assert f.flags == filter_flags
        assert f.weight.type == FWP_UINT64
        assert f.num_conditions == 0 and f.conditions == 0
        assert name == f"{spec['name']} filter"
    assert len({f.key.text() for f, _, _ in filters}) == 6


@pytest.mark.parametrize(
    "args, flags",
    [
        ([], (0, 0, 0, 0)),
        (["--persistent"], (0x1, 0x1, 0x10000, 0x1)),
    ],
)
def test_install_adds_every_object_in_one_transaction(exe, args, flags):
    run = Run(exe, ["install", *args])
    check_objects(run, *flags)
    assert "installed 14 filter-engine objects in one transaction" in run.stdout


def test_install_reads_the_weight_through_its_pointer(exe):
    weights = []

    class Capture(Run):
        def _hook(self, api, parse):
            inner = super()._hook(api, parse)

            def hook(emu, api_name, func, args):
                if api == "FwpmFilterAdd0":
                    f = self._read(FILTER, args[1])
                    weights.append(self.u64(f.weight.value))
                    keys = (self.u64(f.provider_key), self.u64(f.provider_key + 8))
                    provider = GUID.from_buffer_copy(struct.pack("<QQ", *keys)).text()
                    assert provider == PROVIDER_KEY
                return inner(emu, api_name, func, args)
            return hook

    assert Capture(exe, ["install"]).exit_code == 0
    assert weights == [FILTER_WEIGHT] * 6


def test_already_installed_aborts_and_exits_6(exe):
    run = Run(exe, ["install"], {"FwpmProviderAdd0": FWP_E_ALREADY_EXISTS})
    assert run.exit_code == 6
    assert run.names() == ["FwpmEngineOpen0", "FwpmTransactionBegin0", "FwpmProviderAdd0",
                           "FwpmTransactionAbort0", "FwpmEngineClose0"]
    assert "already" in run.stderr and "uninstall" in run.stderr


def test_a_late_failure_aborts_everything(exe):
    run = Run(exe, ["install"], {"FwpmFilterAdd0": lambda i: FWP_E_ALREADY_EXISTS if i == 3 else 0})
    assert run.exit_code == 6
    assert "FwpmTransactionCommit0" not in run.names()
    assert run.names()[-2:] == ["FwpmTransactionAbort0", "FwpmEngineClose0"]


def test_bfe_not_running_exits_4(exe):
    run = Run(exe, ["install"], {"FwpmEngineOpen0": EPT_S_NOT_REGISTERED})
    assert run.exit_code == 4
    assert run.names() == ["FwpmEngineOpen0"]
    assert "Base Filtering Engine" in run.stderr


def test_usage_errors_exit_2_and_touch_nothing(exe):
    run = Run(exe, ["install", "--boot-time"])
    assert run.exit_code == 2
    assert run.calls == []
    run = Run(exe, ["flows", "--watch", "0"])
    assert run.exit_code == 2
    assert run.calls == []


def test_uninstall_deletes_in_reverse_order_and_is_idempotent(exe):
    run = Run(exe, ["uninstall"])
    assert run.exit_code == 0, run.stderr
    deletes = [(name, key) for name, key in run.calls if name.endswith("DeleteByKey0")]
    expected = ([("FwpmFilterDeleteByKey0", k) for k in reversed(FILTER_KEYS)]
                + [("FwpmCalloutDeleteByKey0", c["key"]) for c in reversed(CALLOUTS)]
                + [("FwpmSubLayerDeleteByKey0", SUBLAYER_KEY), ("FwpmProviderDeleteByKey0", PROVIDER_KEY)])
    assert deletes == expected
    assert run.names()[1] == "FwpmTransactionBegin0" and run.names()[-2] == "FwpmTransactionCommit0"

    gone = Run(exe, ["uninstall"], {
        "FwpmFilterDeleteByKey0": FWP_E_FILTER_NOT_FOUND,
        "FwpmCalloutDeleteByKey0": FWP_E_CALLOUT_NOT_FOUND,
        "FwpmSubLayerDeleteByKey0": FWP_E_SUBLAYER_NOT_FOUND,
        "FwpmProviderDeleteByKey0": FWP_E_PROVIDER_NOT_FOUND,
    })
    assert gone.exit_code == 0, gone.stderr
    assert "14 already absent" in gone.stdout


# --- status, stats, flows, counting against an emulated driver --------------

ALL_CALLOUT_KEYS = {c["key"] for c in CALLOUTS}
FIREFOX = r"C:\Program Files\Mozilla Firefox\firefox.exe"


def running_machine(**kw):
    kw.setdefault("driver", FakeDriver())
    kw.setdefault("installed", installed_everything())
    kw.setdefault("registered", ALL_CALLOUT_KEYS)
    return Machine(**kw)


def test_status_active_and_check(exe):
    run = Run(exe, ["status", "--check"], machine=running_machine())
    assert run.exit_code == 0, run.stderr
    assert run.stdout == "monitoring active: driver running, 6/6 callouts registered, 6/6 filters\n"
    session = run.calls[run.names().index("FwpmEngineOpen0")][1]
    assert session.flags == 1, "status reads through a dynamic session"
    queried = [key for name, key in run.calls if name.endswith("GetByKey0")]
    assert sorted(queried) == sorted(installed_everything())
    assert run.names()[-1] == "FwpmEngineClose0"


def test_status_check_fails_unless_everything_is_active(exe):
    stopped = Machine(driver=None, installed=installed_everything())
    run = Run(exe, ["status", "--check"], machine=stopped)
    assert run.exit_code == 8
    assert run.stdout.splitlines()[0] == "monitoring INACTIVE: driver stopped, 0/6 callouts registered, 6/6 filters"
    assert "sc.exe start wfpmon" in run.stdout
    assert Run(exe, ["status"], machine=stopped).exit_code == 0, "without --check the verdict is no failure"

    half = running_machine(registered=set(list(ALL_CALLOUT_KEYS)[:3]), installed=installed_everything() - {FILTER_KEYS[2]})
    run = Run(exe, ["status", "--check", "-v"], machine=half)
    assert run.exit_code == 8
    assert "3/6 callouts registered, 5/6 filters" in run.stdout and "wfpmonctl install" in run.stdout
    assert sum(" absent" in line for line in run.stdout.splitlines()) == 1

    run = Run(exe, ["status", "--check"], {"FwpmEngineOpen0": EPT_S_NOT_REGISTERED}, machine=Machine(driver=None, services={"BFE": 1}))
    assert run.exit_code == 4
    assert "not_installed" not in run.stdout and "driver not installed" in run.stdout


README = (HERE.parents[1] / "README.md").read_text()
JSON_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}


def readme_schema(name: str) -> dict:
    """{key path: (JSON type, optional)} from the README's table of `name`."""
    section = README[README.index(f"### `{name}`"):]
    section = section[:section.index("\n\n", section.index("| key |"))]
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| (.*) \|$", section, re.M)
    assert rows, name
    return {key: (JSON_TYPES[kind], "*optional*" in meaning) for key, kind, meaning in rows}


def flatten(doc: dict, prefix=""):
    for key, value in doc.items():
        yield prefix + key, value
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from flatten(item, f"{prefix}{key}[].")


def check_schema(doc: dict):
    """Every key of `doc` is in the README's table of its schema, with that
    JSON type; every key the table does not mark optional is there."""
    schema = readme_schema(doc["schema"])
    seen = set()
    for path, value in flatten(doc):
        assert path in schema, f"{doc['schema']}: undocumented key {path}"
        kind, _ = schema[path]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (path, value)
        seen.add(path)
    for path, (_, optional) in schema.items():
        parent = path.rsplit("[].", 1)[0] if "[]." in path else None
        if not optional and (parent is None or any(p.startswith(parent + "[].") for p in seen)):
            assert path in seen, f"{doc['schema']}: {path} missing"


def test_status_json_schema(exe):
    (doc,) = Run(exe, ["status", "--json"], machine=running_machine()).json_lines()
    check_schema(doc)
    assert doc["schema"] == "wfpmon.status/1" and doc["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert (doc["active"], doc["driver_service"], doc["device"]) == (True, "running", "present")
    assert len(doc["objects"]) == 14
    (doc,) = Run(exe, ["status", "--json"], machine=Machine(driver=None)).json_lines()
    check_schema(doc)
    assert (doc["active"], doc["device"], doc["filters_present"]) == (False, "absent", 0)


def sample_flows():
    return [
        flow(0xFFFF_A000_0000_0010, 1234, bytes_in=3 << 20, bytes_out=40_000, packets_in=2300, packets_out=900),
        flow(0x20, 888, proto=17, family=23, local=("2001:db8:1234:5678:9abc:def0:1234:5678", 5353),
             remote=("ff02::fb", 5353), direction=1, bytes_in=512, packets_in=4),
        flow(0x30, 4, proto=1, local=("10.0.0.5", 8), remote=("8.8.8.8", 0), bytes_out=84, packets_out=1),
    ]


def test_stats_text_and_json(exe):
    machine = running_machine(driver=FakeDriver(sample_flows()))
    run = Run(exe, ["stats"], machine=machine)
    assert run.exit_code == 0, run.stderr
    rows = dict(line.rsplit(None, 1) if line.split()[-1] not in ("KiB", "MiB", "B") else
                (line[:22].strip(), line[22:].strip()) for line in run.stdout.splitlines()[1:])
    assert rows["flows active"] == "3" and rows["counting"] == "on"
    assert rows["bytes in"] == "3.0 MiB", rows
    (doc,) = Run(exe, ["stats", "--json"], machine=machine).json_lines()
    assert doc["schema"] == "wfpmon.stats/1" and doc["protocol_version"] == VERSION
    assert doc["bytes_in"] == (3 << 20) + 512 and doc["packets_out"] == 901 and doc["counting"] is True
    check_schema(doc)
    assert machine.driver.requests == ["stats", "stats"]


def flows_machine(**kw):
    return running_machine(driver=FakeDriver(sample_flows(), **kw), processes={1234: FIREFOX})


def test_flows_table_names_sort_and_filters(exe):
    run = Run(exe, ["flows"], machine=flows_machine())
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:6] == ["PID", "PROCESS", "PROTO", "DIR", "LOCAL", "REMOTE"]
    first = lines[1].split()
    assert first[:6] == ["1234", "firefox.exe", "tcp", "out", "10.0.0.5:50000", "93.184.216.34:443"]
    assert "3.0 MiB" in lines[1] and "2.3k" in lines[1]
    assert any(l.split()[:3] == ["4", "System", "icmp"] and "8/0" in l and "8.8.8.8 " in l + " " for l in lines)
    assert any(l.split()[:2] == ["888", "?"] and "[2001:db8:1234:5678:9abc:def0:1234:5678]:5353" in l for l in lines)
    assert lines[-1].startswith("3 of 3 matching flows (3 active)")
    assert "0xffffa00000000010" not in run.stdout and "HANDLE" not in run.stdout

    def pids(*args):
        out = Run(exe, ["flows", *args], machine=flows_machine()).stdout.splitlines()[1:-1]
        return [int(line.split()[0]) for line in out]

    assert pids("--sort", "pid") == [4, 888, 1234]
    assert pids("--proto", "icmp") == [4]
    assert pids("--proc", "FIRE") == [1234]
    assert pids("--family", "6") == [888]
    assert pids("--port", "443") == [1234]
    assert pids("--direction", "in") == [888]
    assert pids("--sort", "bytes", "--top", "2") == [1234, 888]
    raw = Run(exe, ["flows", "--raw", "-v", "--pid", "1234"], machine=flows_machine()).stdout
    assert str(3 << 20) in raw and "0xffffa00000000010" in raw


def test_flows_watch_json_is_ndjson_with_rates(exe):
    def traffic(flows):
        flows[0]["bytes_in"] += 1000
    machine = flows_machine(growth=traffic)
    run = Run(exe, ["flows", "--json", "--watch", "0.1", "--count", "2", "--sort", "rate"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert run.sleeps == [100] and machine.driver.requests == ["list", "list"]
    first, second = run.json_lines()
    assert "\x1b" not in run.stdout and len(run.stdout.splitlines()) == 2
    for doc in (first, second):
        check_schema(doc)
        assert doc["schema"] == "wfpmon.flows/1"
    assert "interval_s" not in first and "rate_in" not in first["flows"][0]
    assert second["interval_s"] == 0.1 and second["timestamp"] == "2026-01-01T00:00:00.100Z"
    top = second["flows"][0]
    assert (top["pid"], top["process"], top["flow_handle"]) == (1234, "firefox.exe", "0xffffa00000000010")
    assert top["rate_in"] == 10000.0 and top["rate_out"] == 0.0
    assert second["totals"]["rate_in"] == 10000.0
    icmp = next(f for f in second["flows"] if f["protocol"] == "icmp")
    assert (icmp["icmp_type"], icmp["icmp_code"], "local_port" in icmp) == (8, 0, False)


def test_flows_watch_on_a_console_clears_and_fits(exe):
    machine = flows_machine()
    machine.console = 80
    run = Run(exe, ["flows", "--watch", "0.1", "--count", "2", "-v"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert run.stdout.count("\x1b[H\x1b[2J") == 2
    table = [l.replace("\x1b[H\x1b[2J", "") for l in run.stdout.splitlines() if " matching flows " not in l]
    assert all(len(line) <= 80 for line in table), [l for l in table if len(l) > 80]
    assert any(":5353" in line for line in table), "IPv6 endpoints keep their port"


def test_a_closed_pipe_ends_the_watch_quietly(exe):
    machine = flows_machine()
    machine.closed_stdout_after = 1
    run = Run(exe, ["flows", "--watch", "0.1"], machine=machine)
    assert run.exit_code == 0
    assert machine.driver.requests == ["list", "list"], "stops at the first failed write"
    assert run.stderr == ""


def test_ctrl_c_ends_the_watch_quietly(exe):
    machine = flows_machine()
    machine.ctrl_c_at_sleep = 1
    run = Run(exe, ["flows", "--watch", "0.1"], machine=machine)
    assert run.ctrl_handlers and run.ctrl_handlers[0] != 0, "a console control handler is installed"
    assert run.exit_code == 0, run.stderr
    assert run.sleeps == [100] and machine.driver.requests == ["list"], "no refresh after Ctrl+C"
    assert run.stdout.count(" matching flows ") == 1 and run.stderr == ""


def test_a_list_larger_than_one_batch_is_paged_through(exe):
    many = [flow(0x1000 + i, 1234, bytes_in=i) for i in range(300)]
    machine = running_machine(driver=FakeDriver(many), processes={1234: FIREFOX})
    (doc,) = Run(exe, ["flows", "--json"], machine=machine).json_lines()
    assert machine.driver.requests == ["list", "list"], "256 flows, then the rest from the cursor"
    assert (doc["active"], doc["matched"], len(doc["flows"])) == (300, 300, 300)
    assert doc["totals"]["bytes_in"] == sum(range(300))


def test_counting_and_an_absent_driver(exe):
    machine = running_machine()
    run = Run(exe, ["counting", "off"], machine=machine)
    assert (run.exit_code, run.stdout) == (0, "traffic counting is off\n"), run.stderr
    assert machine.driver.counting is False and machine.driver.requests == ["counting 0"]
    (_, access) = run.added("CreateFileW")[0]
    assert access == 0xC0000000, "GENERIC_READ | GENERIC_WRITE: the request changes driver state"
    assert ("CloseHandle", Run.DEVICE) in run.calls
    for args in (["counting", "on"], ["stats"], ["flows"]):
        run = Run(exe, args, machine=Machine(driver=None))
        assert run.exit_code == 5, args
        assert "wfpmon driver is not loaded" in run.stderr and run.stdout == ""


def test_top_refuses_when_stdout_is_not_a_console(exe):
    machine = running_machine()
    run = Run(exe, ["top"], machine=machine)
    assert (run.exit_code, run.stdout) == (9, ""), run.stderr
    assert "top is interactive and needs a terminal" in run.stderr, run.stderr
    assert "`wfpmonctl flows --watch SECONDS`" in run.stderr, run.stderr
    assert not run.added("CreateFileW"), "the device is not even opened"
    run = Run(exe, ["--help"], machine=machine)
    assert "  9  top: standard output is not a terminal" in run.stdout, run.stdout


# --- events, procs and process names from the driver ---------------------------

FIREFOX_DEVICE = r"\device\harddiskvolume3\program files\mozilla firefox\firefox.exe"
SVCHOST_DEVICE = r"\device\harddiskvolume30\windows\system32\svchost.exe"
TCP = flow(0xFFFF_A000_0000_0010, 1234, local=("10.0.0.5", 50000), remote=("93.184.216.34", 443), key=pkey(3))
DNS = flow(0x20, 888, proto=17, family=23, local=("2001:db8::5", 5353), remote=("ff02::fb", 5353), direction=1,
           key=pkey(9, 2))


def process_table():
    return [
        process(3, 1234, FIREFOX_DEVICE, active_flows=2, flows_total=40, active=(3 << 20, 40_000, 2300, 900),
                ended=(1 << 20, 10_000, 700, 100)),
        process(9, 888, SVCHOST_DEVICE, generation=2, flows_total=3, ended=(512, 0, 4, 0)),
    ]


def held_events():
    """What the driver holds: TCP established 10 s before the emulated
    start and ended 2 s before it (8 s), DNS established, and an ICMP flow
    of no process entry."""
    ended = dict(TCP, bytes_in=3 << 20, bytes_out=40_000, packets_in=2300, packets_out=900)
    icmp = flow(0x30, 4, proto=1, local=("10.0.0.5", 8), remote=("8.8.8.8", 0))
    return [
        flow_event("established", dict(TCP, bytes_in=0, bytes_out=0), BOOT - 100_000_000, key=pkey(3)),
        flow_event("ended", ended, BOOT - 20_000_000, key=pkey(3), duration=80_000_000),
        flow_event("established", DNS, BOOT - 10_000_000, key=pkey(9, 2)),
        flow_event("established", icmp, BOOT - 5_000_000),
    ]


def events_machine(**kw):
    kw.setdefault("processes", process_table())
    kw.setdefault("events", held_events())
    # User mode would name PID 1234 otherwise: the driver's name must win.
    return running_machine(driver=FakeDriver(**kw), processes={1234: r"C:\elsewhere\impostor.exe"})


def test_events_lists_what_the_driver_holds(exe):
    machine = events_machine()
    run = Run(exe, ["events"], machine=machine)
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines == [
        "2025-12-31T23:59:50.000Z established   1234 firefox.exe  tcp out 10.0.0.5:50000 -> 93.184.216.34:443"
        r"  C:\program files\mozilla firefox\firefox.exe",
        "2025-12-31T23:59:58.000Z ended         1234 firefox.exe  tcp out 10.0.0.5:50000 -> 93.184.216.34:443"
        r"  after 8.0s, in 3.0 MiB (2.3k pkts), out 39.1 KiB (900 pkts)  C:\program files\mozilla firefox\firefox.exe",
        "2025-12-31T23:59:59.000Z established    888 svchost.exe  udp in [2001:db8::5]:5353 <- [ff02::fb]:5353"
        r"  E:\windows\system32\svchost.exe",
        "2025-12-31T23:59:59.500Z established      4 System  icmp 8/0 out 10.0.0.5 -> 8.8.8.8 [no process]",
    ], run.stdout
    assert machine.driver.requests == ["events 0", "processes 0"], "one read, one pass over the process table"
    assert [a for n, a in run.calls if n == "QueryDosDeviceW"] == [f"{chr(c)}:" for c in range(65, 91)], \
        "every drive letter, once"
    assert not run.hung and run.stderr == ""


def test_events_json_lines_follow_the_schema_and_filters_apply(exe):
    run = Run(exe, ["events", "--json"], machine=events_machine())
    docs = run.json_lines()
    assert [d["seq"] for d in docs] == [0, 1, 2, 3]
    for d in docs:
        check_schema(d)
    ended = docs[1]
    assert (ended["event"], ended["process"], ended["pid"], ended["flow_handle"]) == \
        ("ended", "firefox.exe", 1234, "0xffffa00000000010")
    assert (ended["age_ms"], ended["bytes_in"], ended["packets_out"]) == (8000, 3 << 20, 900)
    assert ended["path"] == r"C:\program files\mozilla firefox\firefox.exe" and ended["flags"] == []
    assert docs[0]["flow_handle"] == ended["flow_handle"] and docs[0]["age_ms"] == 0
    assert (docs[3]["flags"], docs[3]["icmp_type"], "path" in docs[3]) == (["no_process"], 8, False)
    only = Run(exe, ["events", "--json", "--kind", "established", "--proto", "udp"], machine=events_machine())
    assert [d["seq"] for d in only.json_lines()] == [2]
    first = Run(exe, ["events", "--count", "2"], machine=events_machine())
    assert len(first.stdout.splitlines()) == 2 and first.exit_code == 0


def test_follow_waits_in_the_driver_and_prints_events_as_they_come(exe):
    later = flow_event("ended", dict(DNS, bytes_in=700, packets_in=5), BOOT + 30_000_000, key=pkey(9, 2),
                       duration=40_000_000)
    machine = events_machine()
    machine.waits = [("events", [later], 3000), ("events", [later], 1000)]
    run = Run(exe, ["events", "--follow", "--count", "2"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert machine.driver.requests == [f"events {len(held_events())} wait", "processes 0", "events 5 wait"], \
        "from now (FROM_NOW resolved to the head), pending, then on from the cursor the answer gave"
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and all(l.startswith("2026-01-01T00:00:03.000Z ended ") for l in lines), run.stdout
    assert "svchost.exe  udp in" in lines[0] and "after 4.0s, in 700 B (5 pkts)" in lines[0]
    # 3 s: three waits of a second time out (the service, running, is looked
    # at after each), the fourth gets the answer; then 1 s: one, and one.
    assert [a for n, a in run.calls if n == "wait"] == ["events"] * 6
    assert [a for n, a in run.calls if n == "QueryServiceStatusEx"] == ["wfpmon"] * 4
    assert not [a for n, a in run.calls if n == "CancelIoEx"]


def test_follow_from_start_reports_events_the_ring_overwrote(exe):
    burst = [flow_event("ended", TCP, BOOT + i, key=pkey(3)) for i in range(10)]
    machine = events_machine(ring=6)
    machine.waits = [("events", burst, 100), "ctrl_c"]
    run = Run(exe, ["events", "--follow", "--from-start", "--json"], machine=machine)
    assert run.exit_code == 0, run.stderr
    docs = run.json_lines()
    for d in docs:
        check_schema(d)
    schemas = [d["schema"] for d in docs]
    assert schemas == ["wfpmon.event/1"] * 4 + ["wfpmon.dropped/1"] + ["wfpmon.event/1"] * 6
    # Held 0..3; 10 more into a ring of 6: 4..7 were overwritten before the
    # reader (at cursor 4) got them.
    assert (docs[4]["dropped"], docs[4]["next_seq"]) == (4, 8)
    assert [d["seq"] for d in docs[5:]] == list(range(8, 14))
    assert machine.driver.requests[-1] == "cancelled"


def test_ctrl_c_cancels_the_pending_read_and_exits_0(exe):
    machine = events_machine()
    machine.waits = ["ctrl_c"]
    run = Run(exe, ["events", "--follow"], machine=machine)
    assert run.ctrl_handlers, "a console control handler is installed"
    cancels = [a for n, a in run.calls if n == "CancelIoEx"]
    assert cancels and cancels[0][0] == Run.DEVICE, "the handler cancels the device's pending request"
    assert not run.hung, "the read pending in the driver was cancelled"
    assert (run.exit_code, run.stdout, run.stderr) == (0, "", "")
    assert machine.driver.requests == [f"events {len(held_events())} wait", "cancelled"]
    assert ("CloseHandle", Run.DEVICE) in run.calls


def test_a_stopping_driver_ends_follow_with_exit_5(exe):
    machine = events_machine()
    machine.waits = ["unload"]
    run = Run(exe, ["events", "--follow"], machine=machine)
    assert run.exit_code == 5
    assert "the pending event read was cancelled: the wfpmon driver is stopping" in run.stderr
    assert not [a for n, a in run.calls if n == "CancelIoEx"], "nobody pressed Ctrl+C"


def test_follow_gives_way_to_a_service_stop(exe):
    """Windows calls a driver's Unload only once no handle to its device is
    open and no request is pending, so `sc stop wfpmon` waits for a follower:
    while its read is pending, wfpmonctl looks at the service every second
    and cancels the read when the service is stopping."""
    later = flow_event("established", DNS, BOOT + 25_000_000, key=pkey(9, 2))
    machine = events_machine()
    machine.waits = [("events", [later], 2500), "service_stop"]
    run = Run(exe, ["events", "--follow"], machine=machine)
    assert run.exit_code == 5 and "the wfpmon driver is stopping" in run.stderr, run.stderr
    assert len(run.stdout.splitlines()) == 1 and "svchost.exe" in run.stdout, "the event that came after 2.5 s"
    assert [a for n, a in run.calls if n == "wait"] == ["events"] * 3 + ["service_stop"], \
        "two 1-s timeouts, the event, then a timeout that finds the service stopping"
    queries = [n for n, _ in run.calls if n == "QueryServiceStatusEx"]
    assert len(queries) == 3, "the service is looked at after each timeout"
    assert [a[0] for n, a in run.calls if n == "CancelIoEx"] == [Run.DEVICE]
    assert machine.driver.requests[-1] == "cancelled" and not run.hung


def test_procs_table_with_driver_names_paths_and_footer(exe):
    machine = events_machine(evictions=7, unattributed=2)
    machine.driver.processes.append(process(12, 0, None, flags=1, active_flows=0, ended=(10, 10, 1, 1)))
    run = Run(exe, ["procs"], machine=machine)
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["PID", "PROCESS", "FLOWS", "TOTAL", "IN", "OUT", "PATH"]
    assert lines[1].split() == ["1234", "firefox.exe", "2", "40", "4.0", "MiB", "48.8", "KiB",
                                "C:\\program", "files\\mozilla", "firefox\\firefox.exe"]
    assert lines[2].split() == ["888", "svchost.exe", "1", "3", "512", "B", "0", "B", r"E:\windows\system32\svchost.exe"]
    assert lines[3].split() == ["-", "?", "0", "1", "10", "B", "10", "B"], "no id, no path: nothing invented"
    assert lines[4] == ("3 of 3 matching processes (3 in the driver's table of 1024: 7 evicted, 2 flows without a "
                        "process); in 4.0 MiB, out 48.8 KiB")
    assert machine.driver.requests == ["processes 0"]


def test_procs_json_pages_through_more_than_64_processes(exe):
    many = [process(slot, 1000 + slot, rf"\device\harddiskvolume3\apps\app{slot}.exe", ended=(slot, 0, 1, 0))
            for slot in range(2, 302, 2)]
    machine = running_machine(driver=FakeDriver(processes=many))
    (doc,) = Run(exe, ["procs", "--json", "--sort", "pid"], machine=machine).json_lines()
    assert machine.driver.requests == ["processes 0", "processes 129", "processes 257"], \
        "pages of 64 from each answer's next_slot"
    check_schema(doc)
    assert (doc["listed"], doc["matched"], doc["capacity"]) == (150, 150, 1024)
    assert [p["pid"] for p in doc["processes"]] == [1000 + s for s in range(2, 302, 2)]
    assert doc["processes"][0]["path"] == r"C:\apps\app2.exe" and doc["processes"][0]["key"] == "0x0000000100000002"
    assert doc["processes"][0]["first_seen"] == "2025-12-31T23:59:55.000Z"
    assert doc["totals"]["bytes_in"] == sum(range(2, 302, 2))
    top = Run(exe, ["procs", "--json", "--sort", "bytes", "--top", "2", "--proc", "APP2"], machine=running_machine(
        driver=FakeDriver(processes=many))).json_lines()[0]
    assert [p["process"] for p in top["processes"]] == ["app298.exe", "app296.exe"] and top["matched"] == 56


def test_procs_retries_a_busy_driver(exe):
    machine = events_machine(busy=2)
    run = Run(exe, ["procs", "--json"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert machine.driver.requests == ["processes 0"] * 3 and run.sleeps == [20, 20]
    machine = events_machine(busy=100)
    run = Run(exe, ["procs"], machine=machine)
    assert run.exit_code == 1 and machine.driver.requests == ["processes 0"] * 5
    assert "IOCTL_WFPMON_LIST_PROCESSES" in run.stderr and "stayed busy" in run.stderr and "[Win32 error 170" in run.stderr


def test_procs_watch_shows_rates_from_the_drivers_clock(exe):
    def traffic(processes):
        processes[1]["ended"] = (processes[1]["ended"][0] + 2000, 0, 0, 0)
    machine = events_machine(process_growth=traffic)
    run = Run(exe, ["procs", "--json", "--watch", "0.5", "--count", "2", "--sort", "rate"], machine=machine)
    assert run.exit_code == 0, run.stderr
    first, second = run.json_lines()
    for doc in (first, second):
        check_schema(doc)
    assert "interval_s" not in first and "rate_in" not in first["processes"][0]
    assert second["interval_s"] == 0.5
    top = second["processes"][0]
    assert (top["process"], top["rate_in"], top["rate_out"]) == ("svchost.exe", 4000.0, 0.0)
    assert second["totals"]["rate_in"] == 4000.0


def test_flows_show_the_drivers_process_names(exe):
    orphan = flow(0x40, 1234, key=0)
    machine = running_machine(driver=FakeDriver([TCP, DNS, orphan], processes=process_table()),
                              processes={1234: r"C:\elsewhere\impostor.exe"})
    (doc,) = Run(exe, ["flows", "--json", "--sort", "pid"], machine=machine).json_lines()
    names = [(f["pid"], f["process"]) for f in doc["flows"]]
    assert sorted(names) == [(888, "svchost.exe"), (1234, "firefox.exe"), (1234, "impostor.exe")], \
        "by key from the driver; a flow without a process entry: by PID in user mode"
    assert machine.driver.requests == ["list", "processes 0"]


def test_ctrl_c_just_before_the_read_pends_is_not_lost(exe):
    """The handler runs while the READ_EVENTS is on its way: its CancelIoEx
    finds nothing, so wfpmonctl, seeing the request pending after Ctrl+C,
    cancels it itself instead of waiting forever."""
    machine = events_machine()
    machine.ctrl_c_before_pending = True
    run = Run(exe, ["events", "--follow"], machine=machine)
    cancels = [a for n, a in run.calls if n == "CancelIoEx"]
    assert len(cancels) == 2 and cancels[0] == (Run.DEVICE, 0), "the handler's, finding nothing"
    assert cancels[1][0] == Run.DEVICE and cancels[1][1] != 0, "the request's own, naming its OVERLAPPED"
    assert not run.hung and (run.exit_code, run.stdout, run.stderr) == (0, "", "")
    assert machine.driver.requests == [f"events {len(held_events())} wait", "cancelled"]
