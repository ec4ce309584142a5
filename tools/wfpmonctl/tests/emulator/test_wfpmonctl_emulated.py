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

The heap, memory and TLS imports run as guest code (guest_runtime.py), which
makes each run several times faster with the same behaviour.

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

import guest_runtime  # noqa: E402 - beside this file

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


def skip_without_the_gnu_toolchain() -> None:
    """Skips (saying what to install) unless the Rust standard library for
    TARGET and its linker are there: what building an .exe here needs."""
    libdir = subprocess.run(["rustc", "--print", "target-libdir", "--target", TARGET],
                            capture_output=True, text=True)
    if libdir.returncode != 0 or not pathlib.Path(libdir.stdout.strip()).is_dir():
        pytest.skip(f"the Rust standard library for {TARGET} is not installed (rustup target add {TARGET})")
    if shutil.which(LINKER) is None:
        pytest.skip(f"{LINKER} is not installed (apt-get install gcc-mingw-w64-x86-64)")


@pytest.fixture(scope="session")
def exe() -> str:
    given = os.environ.get("WFPMONCTL_EXE")
    if given:
        return given
    skip_without_the_gnu_toolchain()
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
ERROR_ACCESS_DENIED, ERROR_REVISION_MISMATCH, ERROR_MR_MID_NOT_FOUND = 5, 1306, 317
RPC_S_SERVER_UNAVAILABLE, RPC_S_CANNOT_SUPPORT = 1722, 1764
FORMAT_MESSAGE_IGNORE_INSERTS, FORMAT_MESSAGE_FROM_HMODULE, FORMAT_MESSAGE_FROM_SYSTEM = 0x200, 0x800, 0x1000
# FormatMessageW's message tables: the system's (Win32 codes; the texts of
# Microsoft's "System Error Codes" pages, with the CR LF the tables end
# each message with) and fwpuclnt.dll's (the WFP codes, "WFP Error Codes").
SYSTEM_MESSAGES = {
    2: "The system cannot find the file specified.",
    5: "Access is denied.",
    170: "The requested resource is in use.",
    995: "The I/O operation has been aborted because of either a thread exit or an application request.",
    1306: "Indicates two revision levels are incompatible.",
    1722: "The RPC server is unavailable.",
    1753: "There are no more endpoints available from the endpoint mapper.",
    1764: "The requested operation is not supported.",
}
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
MODULE_MESSAGES = {"fwpuclnt.dll": {FWP_E_ALREADY_EXISTS: "An object with that GUID or LUID already exists."},
                   "ntdll.dll": {STATUS_INSUFFICIENT_RESOURCES:
                                 "Insufficient system resources exist to complete the API."}}
# Names: EnumServicesStatusExW (winsvc.h), GetNameInfoW (ws2tcpip.h), the
# thread pool's QueueUserWorkItem, and the time zone.
SC_ENUM_PROCESS_INFO, SERVICE_WIN32, SERVICE_ACTIVE, SERVICE_RUNNING = 0, 0x30, 1, 4
ENUM_SERVICE_STATUS_PROCESS_SIZE = 56  # two pointers, SERVICE_STATUS_PROCESS (9 DWORDs), padding
NI_NAMEREQD, NI_MAXHOST, WSAHOST_NOT_FOUND, WT_EXECUTELONGFUNCTION = 4, 1025, 11001, 0x10
AF_INET6_WIN = 23
# TIME_ZONE_INFORMATION of "W. Europe Standard Time": UTC+1, summer time
# (UTC+2) from the last Sunday of March 02:00 to the last Sunday of October
# 03:00 (SYSTEMTIME: year 0, month, day of week, occurrence 5 = last, hour).
W_EUROPE = dict(bias=-60, standard=(0, 10, 0, 5, 3, 0, 0, 0), standard_bias=0,
                daylight=(0, 3, 0, 5, 2, 0, 0, 0), daylight_bias=-60)
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
        # Traffic of flows that ended (bytes in/out, packets in/out): the
        # walk-free statistics' totals; with STATS_LIVE_TRAFFIC the open
        # flows' traffic is added.
        self.ended = (0, 0, 0, 0)
        self.version = VERSION  # another build's driver has another

    def stats(self, live):
        sums = [sum(f[k] for f in self.flows) if live else 0
                for k in ("bytes_in", "bytes_out", "packets_in", "packets_out")]
        sums = [a + b for a, b in zip(sums, self.ended)]
        return (struct.pack("<IIII", VERSION, 88, int(self.counting), int(live))
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
        if version != self.version:
            # STATUS_REVISION_MISMATCH, as RtlNtStatusToDosError maps it.
            return ERROR_REVISION_MISMATCH, b""
        if size != len(request):
            return ERROR_INVALID_PARAMETER, b""
        if code == IOCTL_QUERY_STATS and len(request) == 16 and out_len >= 88:
            flags, reserved = struct.unpack_from("<II", request, 8)
            if flags & ~1 or reserved:
                return ERROR_INVALID_PARAMETER, b""
            self.requests.append("stats --live" if flags else "stats")
            return 0, self.stats(bool(flags))
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
        self.device_error = None  # what CreateFileW fails with on a present device (ERROR_ACCESS_DENIED: not elevated)
        self.service_table: list[tuple[int, str]] = []  # running services: (pid, name)
        self.services_per_call = None  # EnumServicesStatusExW returns at most this many (then ERROR_MORE_DATA)
        # Reverse DNS: address -> the answers of successive lookups, each
        # (name or None, milliseconds it takes or None: never answers);
        # other addresses have no name and answer at once.
        self.dns: dict[str, list[tuple]] = {}
        self.time_zone = W_EUROPE
        self.wall_start = None  # the wall clock at the start (FILETIME; None: 2026-01-01T00:00:00Z)
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
        self.exe = exe
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
            ("kernel32", "SetConsoleMode", 2, self._set_console_mode),
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
            ("kernel32", "FormatMessageW", 7, self._format_message),
            ("kernel32", "GetTimeZoneInformationForYear", 3, self._time_zone),
            ("kernel32", "QueueUserWorkItem", 3, self._queue_work),
            ("ws2_32", "WSAStartup", 2, self._wsa_startup),
            ("ws2_32", "GetNameInfoW", 7, self._get_name_info),
            ("advapi32", "EnumServicesStatusExW", 10, self._enum_services),
            ("kernel32", "GetModuleHandleW", 1, self._get_module_handle),
            ("advapi32", "OpenSCManagerW", 3, lambda emu, a: self.SCM),
            ("advapi32", "OpenServiceW", 3, self._open_service),
            ("advapi32", "QueryServiceStatusEx", 5, self._query_service),
            ("advapi32", "CloseServiceHandle", 1, lambda emu, a: 1),
        ]
        self.std_handles: dict[int, str] = {}
        self.services_by_handle: dict[int, str] = {}
        self.modules: dict[int, str] = {}  # GetModuleHandleW's answers
        self.work: list[dict] = []  # queued thread-pool work items not run yet
        self.answering: dict[str, list] = {}  # per address: the answers of work items running
        self.lookups: list[str] = []  # the addresses GetNameInfoW was asked for, in order
        for module_name, api, argc, fn in hooks + self.more_hooks():
            self.se.add_api_hook(self._plain(fn), module_name, api, argc=argc)
        self.prepare(module)
        self.se.run_module(module, all_entrypoints=False)
        entry = self.se.get_report().model_dump()["entry_points"][-1]
        assert entry["error"] is None, entry["error"]
        self.exit_code = int(entry["ret_val"], 16)

    def prepare(self, module):
        """Before the loaded image runs: the guest runtime, which makes it
        run several times faster with the same behaviour (guest_runtime.py)."""
        self.guest_runtime = guest_runtime.install(self.se, module, self.exe)

    def more_hooks(self) -> list:
        """Hooks a subclass adds: (module, api, argc, fn) as above."""
        return []

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

    def _set_console_mode(self, emu, args):
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
        count &= 0xFFFFFFFF  # DWORD: the register's upper half is undefined
        return self._capture(emu, handle, self.se.mem_read(buf, count * 2).decode("utf-16-le"), count, written)

    def _nt_write_file(self, emu, api_name, func, args):
        # Length is a ULONG: the register's upper half is not part of it.
        handle, iosb, buf, count = args[0], args[4], args[5], args[6] & 0xFFFFFFFF
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
        error = ERROR_FILE_NOT_FOUND if self.machine.driver is None else self.machine.device_error
        if error:
            emu.set_last_error(error)
            return 0xFFFFFFFFFFFFFFFF
        return self.DEVICE

    def _device_io_control(self, emu, args):
        handle, code, inbuf, inlen, outbuf, outlen, returned, overlapped = args[:8]
        code, inlen, outlen = code & 0xFFFFFFFF, inlen & 0xFFFFFFFF, outlen & 0xFFFFFFFF  # DWORDs
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
        timeout_ms, alertable = timeout_ms & 0xFFFFFFFF, alertable & 0xFFFFFFFF  # DWORD, BOOL
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
        size &= 0xFFFFFFFF
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

    def _get_module_handle(self, emu, api_name, func, args):
        handle = func(args)
        if handle and args[0]:
            self.modules[handle] = self.wstr(args[0]).lower()
        return handle

    def _format_message(self, emu, args):
        """FormatMessageW(flags, source, id, language, buffer, size, args)
        from the fake message tables; a message no table holds fails with
        ERROR_MR_MID_NOT_FOUND, as documented."""
        flags, source, code, _, buffer, size, arguments = args[:7]
        flags, code, size = flags & 0xFFFFFFFF, code & 0xFFFFFFFF, size & 0xFFFFFFFF  # DWORDs
        module = self.modules.get(source) if flags & FORMAT_MESSAGE_FROM_HMODULE else None
        self.calls.append(("FormatMessageW", (code, module)))
        assert flags & FORMAT_MESSAGE_IGNORE_INSERTS and not arguments, "no inserts are expanded"
        text = MODULE_MESSAGES.get(module, {}).get(code) if flags & FORMAT_MESSAGE_FROM_HMODULE else None
        if text is None and flags & FORMAT_MESSAGE_FROM_SYSTEM:
            text = SYSTEM_MESSAGES.get(code)
        if text is None:
            emu.set_last_error(ERROR_MR_MID_NOT_FOUND)
            return 0
        data = (text + "\r\n").encode("utf-16-le")
        assert len(data) // 2 < size
        self.se.mem_write(buffer, data + b"\0\0")
        return len(data) // 2

    # -- names ---------------------------------------------------------------

    def _time_zone(self, emu, args):
        """GetTimeZoneInformationForYear(year, NULL, &tzi): the machine's zone."""
        year, dynamic, tzi = args[:3]
        assert dynamic == 0, "the current time zone"
        self.calls.append(("GetTimeZoneInformationForYear", year & 0xFFFF))
        z = self.machine.time_zone
        self.se.mem_write(tzi, struct.pack("<l64s8Hl64s8Hl", z["bias"], "Standard".encode("utf-16-le"), *z["standard"],
                                           z["standard_bias"], "Daylight".encode("utf-16-le"), *z["daylight"],
                                           z["daylight_bias"]))
        return 1

    def _wsa_startup(self, emu, args):
        assert args[0] & 0xFFFF == 0x0202
        self.calls.append(("WSAStartup", None))
        return 0

    def _sockaddr(self, addr: int) -> str:
        import ipaddress
        family = struct.unpack("<H", self.se.mem_read(addr, 2))[0]
        if family == 2:
            return str(ipaddress.IPv4Address(bytes(self.se.mem_read(addr + 4, 4))))
        assert family == AF_INET6_WIN, family
        return str(ipaddress.IPv6Address(bytes(self.se.mem_read(addr + 8, 16))))

    def _queue_work(self, emu, args):
        """QueueUserWorkItem: the pool runs the callback later, on a thread
        of its own; here during the Sleep by which its lookup has answered
        (a lookup that never answers is never run). The job's socket address
        says which lookup it is."""
        fn, ctx, flags = args[:3]
        flags &= 0xFFFFFFFF
        assert flags & WT_EXECUTELONGFUNCTION, "a lookup may block: a long function"
        addr = self._sockaddr(ctx)
        answers = self.machine.dns.get(addr)
        name, ms = answers.pop(0) if answers else (None, 0)
        self.calls.append(("QueueUserWorkItem", addr))
        self.work.append(dict(fn=fn, ctx=ctx, addr=addr, name=name,
                              due=None if ms is None else self.clock_ms + ms))
        return 1

    def _run_due_work(self, emu):
        due = [w for w in self.work if w["due"] is not None and w["due"] <= self.clock_ms]
        if not due:
            return
        kernel32, _ = emu.api.get_export_func_handler("kernel32", "Sleep")
        for w in due:
            self.work.remove(w)
            self.answering.setdefault(w["addr"], []).append(w["name"])
            kernel32.setup_callback(w["fn"], [w["ctx"]])

    def _get_name_info(self, emu, args):
        """GetNameInfoW(sockaddr, len, host, hostlen, serv, servlen, flags)
        with NI_NAMEREQD: the name, or WSAHOST_NOT_FOUND when there is none."""
        sa, salen, host, hostlen, serv, servlen, flags = args[:7]
        flags &= 0xFFFFFFFF
        assert flags & NI_NAMEREQD and not serv and hostlen & 0xFFFFFFFF == NI_MAXHOST
        addr = self._sockaddr(sa)
        assert salen & 0xFFFFFFFF == (16 if "." in addr else 28)
        self.lookups.append(addr)
        name = self.answering[addr].pop(0)
        if name is None:
            emu.set_last_error(WSAHOST_NOT_FOUND)
            return WSAHOST_NOT_FOUND
        self.se.mem_write(host, name.encode("utf-16-le") + b"\0\0")
        return 0

    def _enum_services(self, emu, args):
        """EnumServicesStatusExW(scm, SC_ENUM_PROCESS_INFO, SERVICE_WIN32,
        SERVICE_ACTIVE, buffer, size, &needed, &returned, &resume, NULL): as
        many ENUM_SERVICE_STATUS_PROCESSW records as fit, their strings at
        the buffer's end; ERROR_MORE_DATA, the bytes the rest needs and the
        resume index when some did not fit."""
        scm, level, kind, state, buf, size, needed, returned, resume, group = args[:10]
        level, kind, state, size = (a & 0xFFFFFFFF for a in (level, kind, state, size))  # DWORDs
        assert (level, kind, state, group) == (SC_ENUM_PROCESS_INFO, SERVICE_WIN32, SERVICE_ACTIVE, 0)
        assert buf % 8 == 0, "records hold pointers"
        start = struct.unpack("<I", self.se.mem_read(resume, 4))[0]
        self.calls.append(("EnumServicesStatusExW", start))
        table = self.machine.service_table[start:]
        limit = self.machine.services_per_call or len(table)
        size &= 0xFFFFFFFF
        fit, end = 0, size
        for pid, name in table[:limit]:
            text = (name + "\0").encode("utf-16-le")
            if (fit + 1) * ENUM_SERVICE_STATUS_PROCESS_SIZE > end - 2 * len(text):
                break
            end -= 2 * len(text)  # the name, and the same as display name
            self.se.mem_write(buf + end, text + text)
            record = struct.pack("<QQ9I", buf + end, buf + end + len(text), 0x20, SERVICE_RUNNING, 1, 0, 0, 0, 0,
                                 pid, 0)
            self.se.mem_write(buf + fit * ENUM_SERVICE_STATUS_PROCESS_SIZE, record.ljust(56, b"\0"))
            fit += 1
        rest = table[fit:]
        self.se.mem_write(returned, struct.pack("<I", fit))
        self.se.mem_write(needed, struct.pack("<I", sum(56 + 4 * (len(n) + 1) for _, n in rest)))
        self.se.mem_write(resume, struct.pack("<I", start + fit if rest else 0))
        if rest:
            emu.set_last_error(ERROR_MORE_DATA)
            return 0
        return 1

    def local(self, utc_iso: str) -> str:
        """wfpmonctl's local time of an RFC 3339 UTC time, on this machine's
        zone: computed with Python's tz database (Europe/Berlin keeps the
        rules W_EUROPE states), independently of Windows' structure."""
        import datetime
        import zoneinfo
        assert self.machine.time_zone is W_EUROPE
        t = datetime.datetime.fromisoformat(utc_iso.replace("Z", "+00:00"))
        return t.astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

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
        self._run_due_work(emu)
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
        start = self.machine.wall_start or self.FILETIME_2026
        self.se.mem_write(args[0], struct.pack("<Q", start + self.clock_ms * 10_000))
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
                           "FwpmTransactionAbort0", "FwpmEngineClose0", "FormatMessageW", "FormatMessageW"]
    assert run.added("FormatMessageW") == [(FWP_E_ALREADY_EXISTS, None), (FWP_E_ALREADY_EXISTS, "fwpuclnt.dll")], \
        "the system's message table, then fwpuclnt.dll's"
    assert run.stderr == (
        "wfpmonctl: error: wfpmon's filter-engine objects are already installed: `wfpmonctl uninstall` removes them "
        "[FwpmProviderAdd0 (provider wfpmon) failed: HRESULT 0x80320009: An object with that GUID or LUID already "
        "exists.]\n"), run.stderr


def test_an_ntstatus_carries_ntdlls_message_text(exe):
    """An Fwpm* call answering HRESULT_FROM_NT(STATUS_INSUFFICIENT_RESOURCES):
    the NTSTATUS and its text from ntdll.dll's message table."""
    run = Run(exe, ["install"], {"FwpmProviderAdd0": STATUS_INSUFFICIENT_RESOURCES | 0x10000000})
    assert run.exit_code == 1
    assert run.added("FormatMessageW") == [(STATUS_INSUFFICIENT_RESOURCES, "ntdll.dll")]
    assert run.stderr == (
        "wfpmonctl: error: adding wfpmon's filter-engine objects failed [FwpmProviderAdd0 (provider wfpmon) failed: "
        "NTSTATUS 0xC000009A: Insufficient system resources exist to complete the API.]\n"), run.stderr


def test_a_late_failure_aborts_everything(exe):
    run = Run(exe, ["install"], {"FwpmFilterAdd0": lambda i: FWP_E_ALREADY_EXISTS if i == 3 else 0})
    assert run.exit_code == 6
    assert "FwpmTransactionCommit0" not in run.names()
    assert [n for n in run.names() if n != "FormatMessageW"][-2:] == ["FwpmTransactionAbort0", "FwpmEngineClose0"]


def test_bfe_not_running_exits_4(exe):
    machine = Machine(services={"BFE": 1, "wfpmon": 4})
    run = Run(exe, ["install"], {"FwpmEngineOpen0": EPT_S_NOT_REGISTERED}, machine=machine)
    assert run.exit_code == 4
    assert run.names() == ["FwpmEngineOpen0", "QueryServiceStatusEx", "FormatMessageW"], \
        "the engine refused, BFE's state says why, the code's text is read"
    assert run.stderr == (
        "wfpmonctl: error: the Base Filtering Engine (service BFE) is not running (service stopped): start it from an "
        "elevated prompt with `sc.exe start bfe` (if it is disabled: `sc.exe config bfe start= auto` first) "
        "[FwpmEngineOpen0 failed: Win32 error 1753 (0x000006D9): There are no more endpoints available from the "
        "endpoint mapper.]\n"), run.stderr


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
    assert run.exit_code == 5, "installed, stopped"
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


# --- diagnoses: each case with its message, remedy, system text and exit code --

PNPUTIL = "`pnputil /add-driver wfpmon.inf /install`"


def diagnosis_machine(case):
    """A machine showing one case; `status` and the commands must tell it apart."""
    if case == "driver_not_installed":
        return Machine(driver=None, services={"BFE": 4}, installed=installed_everything())
    if case == "driver_stopped":
        return Machine(driver=None, services={"BFE": 4, "wfpmon": 1}, installed=installed_everything())
    machine = running_machine(driver=FakeDriver(sample_flows(), processes=process_table()))
    if case == "not_elevated":
        # The control device's DACL admits SYSTEM and Administrators only.
        machine.device_error = ERROR_ACCESS_DENIED
    elif case == "protocol_mismatch":
        machine.driver.version = VERSION + 1
    elif case in ("bfe_stopped", "bfe_absent"):
        machine.services = {"wfpmon": 4} if case == "bfe_absent" else {"BFE": 1, "wfpmon": 4}
    elif case == "device_busy":
        machine.driver.busy = 100  # another client's process query holds the table
    elif case == "device_busy_on_open":
        # A driver completing IRP_MJ_CREATE with STATUS_DEVICE_BUSY
        # (0x80000011): the I/O manager's status reaches CreateFileW through
        # RtlNtStatusToDosError, which maps it to ERROR_BUSY (170, "The
        # requested resource is in use") — Microsoft's table "Mapping NT
        # status error codes to Win32 error codes" (KB 113996). wfpmonctl
        # classifies ERROR_BUSY from the open as the busy case (src/error.rs,
        # `classify`). wfpmon's own create dispatch (src/control.rs) never
        # answers so; `status` reads no process table, so an open refused
        # this way is how its check meets the case.
        machine.device_error = ERROR_BUSY
    return machine


ENGINE_DOWN = {"bfe_stopped": {"FwpmEngineOpen0": EPT_S_NOT_REGISTERED},
               "bfe_absent": {"FwpmEngineOpen0": RPC_S_SERVER_UNAVAILABLE}}


@pytest.mark.parametrize("case, args, code, message, text", [
    ("driver_not_installed", ["flows"], 9,
     f"the wfpmon driver is not installed: install the driver package from an elevated prompt with {PNPUTIL}, then "
     "start it with `sc.exe start wfpmon`", "Win32 error 2 (0x00000002): The system cannot find the file specified."),
    ("driver_stopped", ["events"], 5,
     "the wfpmon driver is installed but not running (service stopped): start it from an elevated prompt with "
     "`sc.exe start wfpmon`", "Win32 error 2 (0x00000002): The system cannot find the file specified."),
    ("not_elevated", ["procs"], 3,
     "access denied: run wfpmonctl as administrator (from an elevated prompt)",
     "Win32 error 5 (0x00000005): Access is denied."),
    ("bfe_stopped", ["install"], 4,
     "the Base Filtering Engine (service BFE) is not running (service stopped): start it from an elevated prompt with "
     "`sc.exe start bfe`", "Win32 error 1753 (0x000006D9): There are no more endpoints available from the endpoint mapper."),
    ("bfe_absent", ["uninstall"], 4,
     "the Base Filtering Engine service (BFE) does not exist on this system: wfpmon needs the Windows Filtering "
     "Platform", "Win32 error 1722 (0x000006BA): The RPC server is unavailable."),
    ("protocol_mismatch", ["flows"], 7,
     "the wfpmon driver refused this wfpmonctl's request (they come from different builds): install the driver and "
     "wfpmonctl from the same build", "Win32 error 1306 (0x0000051A): Indicates two revision levels are incompatible."),
    ("device_busy", ["procs"], 10,
     "the wfpmon driver stayed busy with another client's query (5 attempts, 20 ms apart): try again in a moment",
     "Win32 error 170 (0x000000AA): The requested resource is in use."),
])
def test_each_diagnosis_has_its_message_remedy_text_and_exit_code(exe, case, args, code, message, text):
    run = Run(exe, args, ENGINE_DOWN.get(case), machine=diagnosis_machine(case))
    assert run.exit_code == code, run.stderr
    assert run.stdout == ""
    assert run.stderr.startswith(f"wfpmonctl: error: {message}"), run.stderr
    assert run.stderr.endswith(f" failed: {text}]\n"), run.stderr
    assert "::" not in run.stderr and run.stderr.count("\n") == 1, "one line, no internal names"


@pytest.mark.parametrize("case, code, diagnosis, problem", [
    ("driver_not_installed", 9, "driver_not_installed", PNPUTIL),
    ("driver_stopped", 5, "driver_stopped", "sc.exe start wfpmon"),
    ("not_elevated", 3, "not_elevated", "as administrator"),
    ("bfe_stopped", 4, "bfe_not_running", "sc.exe start bfe"),
    ("bfe_absent", 4, "bfe_not_running", "does not exist"),
    ("protocol_mismatch", 7, "protocol_mismatch", "same build"),
    ("device_busy_on_open", 10, "device_busy", "try again in a moment"),
])
def test_status_check_exits_with_each_diagnosis(exe, case, code, diagnosis, problem):
    run = Run(exe, ["status", "--check", "--json"], ENGINE_DOWN.get(case), machine=diagnosis_machine(case))
    assert run.exit_code == code, run.stdout + run.stderr
    (doc,) = run.json_lines()
    check_schema(doc)
    assert (doc["diagnosis"], doc["exit_code"], doc["active"]) == (diagnosis, code, False)
    assert doc["verdict"].startswith("monitoring INACTIVE: ")
    first = doc["problems"][0]
    assert problem in first and first.endswith(".]") and "failed: Win32 error" in first, "the code and its text"


def test_status_text_lists_the_problems_with_their_remedies(exe):
    run = Run(exe, ["status", "--check"], machine=diagnosis_machine("driver_not_installed"))
    assert run.exit_code == 9
    assert run.stdout.splitlines() == [
        "monitoring INACTIVE: driver not installed, 0/6 callouts registered, 6/6 filters",
        f"  - the wfpmon driver is not installed: install the driver package from an elevated prompt with {PNPUTIL}, "
        "then start it with `sc.exe start wfpmon` [CreateFileW(\\\\.\\GLOBALROOT\\Device\\WfpMon) failed: Win32 error 2 "
        "(0x00000002): The system cannot find the file specified.]",
    ]


def test_status_reads_the_drivers_protocol_version(exe):
    (doc,) = Run(exe, ["status", "--json"], machine=running_machine()).json_lines()
    assert (doc["diagnosis"], doc["exit_code"], doc["driver_protocol_version"]) == ("active", 0, VERSION)


README = (HERE.parents[1] / "README.md").read_text()
JSON_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict,
              "string or null": (str, type(None))}


def readme_schema(name: str) -> dict:
    """{key path: (JSON type, optional)} from the README's table of `name`."""
    section = README[README.index(f"### `{name}`"):]
    section = section[:section.index("\n\n", section.index("| key |"))]
    rows = re.findall(r"^\| `([^`]+)` \| (\w+(?: or null)?) \| (.*) \|$", section, re.M)
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
        assert isinstance(kind, tuple) or value is not None, f"{path}: null only where documented"
        seen.add(path)
    for path, (_, optional) in schema.items():
        parent = path.rsplit("[].", 1)[0] if "[]." in path else None
        if not optional and (parent is None or any(p.startswith(parent + "[].") for p in seen)):
            assert path in seen, f"{doc['schema']}: {path} missing"


def test_status_json_schema(exe):
    (doc,) = Run(exe, ["status", "--json"], machine=running_machine()).json_lines()
    check_schema(doc)
    assert doc["schema"] == "wfpmon.status/2" and doc["timestamp"] == "2026-01-01T00:00:00.000Z"
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
    driver = FakeDriver(sample_flows())
    driver.ended = (1 << 20, 2048, 700, 5)
    machine = running_machine(driver=driver)

    def table(args):
        run = Run(exe, args, machine=machine)
        assert run.exit_code == 0, run.stderr
        lines = run.stdout.splitlines()[1:]
        # Two columns, separated by two spaces or more.
        return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines if line.strip())

    # The walk-free default: the ended flows' traffic, and it says so.
    rows = table(["stats"])
    assert rows["flows active"] == "3" and rows["counting"] == "on"
    assert rows["traffic of"] == "ended flows (--live: open ones too)", rows
    assert rows["bytes in"] == "1 MiB", rows
    # --live: the open flows' traffic added (the driver walks every flow).
    rows = table(["stats", "--live"])
    assert rows["traffic of"] == "all flows" and rows["bytes in"] == "4.0 MiB", rows
    (doc,) = Run(exe, ["stats", "--json", "--live"], machine=machine).json_lines()
    assert doc["schema"] == "wfpmon.stats/2" and doc["protocol_version"] == VERSION
    assert doc["traffic_of"] == "all_flows"
    assert doc["bytes_in"] == (3 << 20) + 512 + (1 << 20) and doc["packets_out"] == 906
    assert doc["counting"] is True
    check_schema(doc)
    (doc,) = Run(exe, ["stats", "--json"], machine=machine).json_lines()
    assert (doc["traffic_of"], doc["bytes_in"], doc["packets_out"]) == ("ended_flows", 1 << 20, 5)
    check_schema(doc)
    assert machine.driver.requests == ["stats", "stats --live", "stats --live", "stats"]


def flows_machine(**kw):
    return running_machine(driver=FakeDriver(sample_flows(), **kw), processes={1234: FIREFOX})


def test_flows_table_names_sort_and_filters(exe):
    run = Run(exe, ["flows"], machine=flows_machine())
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:6] == ["PID", "PROCESS", "PROTO", "DIR", "LOCAL", "REMOTE"]
    first = lines[1].split()
    assert first[:6] == ["1234", "firefox.exe", "tcp", "out", "10.0.0.5:50000", "93.184.216.34:443"]
    assert "3 MiB" in lines[1] and "2.3k" in lines[1]
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
        assert doc["schema"] == "wfpmon.flows/2"
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


class LongRun(Run):
    """A run emulating much (300 flows take 35-55 s of Speakeasy on a busy
    2-core machine): more than Speakeasy's default 60 s."""
    CONFIG = {"timeout": 240}


def test_a_list_larger_than_one_batch_is_paged_through(exe):
    many = [flow(0x1000 + i, 1234, bytes_in=i) for i in range(300)]
    machine = running_machine(driver=FakeDriver(many), processes={1234: FIREFOX})
    (doc,) = LongRun(exe, ["flows", "--json"], machine=machine).json_lines()
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
        assert "the wfpmon driver is installed but not running" in run.stderr and run.stdout == ""


def test_top_refuses_when_stdout_is_not_a_console(exe):
    machine = running_machine()
    run = Run(exe, ["top"], machine=machine)
    assert (run.exit_code, run.stdout) == (11, ""), run.stderr
    assert "top is interactive and needs a terminal" in run.stderr, run.stderr
    assert "`wfpmonctl flows --watch SECONDS`" in run.stderr, run.stderr
    assert not run.added("CreateFileW"), "the device is not even opened"
    run = Run(exe, ["--help"], machine=machine)
    assert "  11  top: standard output is not a terminal" in run.stdout, run.stdout


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
    run = Run(exe, ["events", "-n"], machine=machine)
    assert run.exit_code == 0, run.stderr
    ff, svc = r"C:\program files\mozilla firefox\firefox.exe", r"E:\windows\system32\svchost.exe"
    # -n: no HOST column (its header and cells are left out).
    header = EVENT_HEADER.replace(" HOST", "")
    assert run.stdout.splitlines() == columns(header, [
        ["2026-01-01 00:59:50.000", "established", "1234", "firefox.exe", "tcp", "out", "10.0.0.5:50000",
         "93.184.216.34:443", "", "", "", ff],
        ["2026-01-01 00:59:58.000", "ended", "1234", "firefox.exe", "tcp", "out", "10.0.0.5:50000",
         "93.184.216.34:443", "8.0s", "3 MiB (2.3k pkts)", "39.1 KiB (900 pkts)", ff],
        ["2026-01-01 00:59:59.000", "established", "888", "svchost.exe", "udp", "in", "[2001:db8::5]:5353",
         "[ff02::fb]:5353", "", "", "", svc],
        ["2026-01-01 00:59:59.500", "established", "4", "System", "icmp 8/0", "out", "10.0.0.5", "8.8.8.8", "", "",
         "", "[no process]"],
    ], EVENT_RIGHT, tail=True), run.stdout
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
    assert len(first.stdout.splitlines()) == 3 and first.exit_code == 0, "the header and 2 events"


def test_follow_waits_in_the_driver_and_prints_events_as_they_come(exe):
    later = flow_event("ended", dict(DNS, bytes_in=700, packets_in=5), BOOT + 30_000_000, key=pkey(9, 2),
                       duration=40_000_000)
    machine = events_machine()
    machine.waits = [("events", [later], 3000), ("events", [later], 1000)]
    run = Run(exe, ["events", "--follow", "--count", "2"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert machine.driver.requests == [f"events {len(held_events())} wait", "processes 0", "events 5 wait"], \
        "from now (FROM_NOW resolved to the head), pending, then on from the cursor the answer gave"
    header, *lines = run.stdout.splitlines()
    assert header.startswith("TIME ") and len(lines) == 2, run.stdout
    assert all(l.startswith("2026-01-01 01:00:03.000  ended ") for l in lines), run.stdout
    assert "svchost.exe  udp    in " in lines[0] and "  4.0s  700 B (5 pkts)  0 B (0 pkts)" in lines[0], lines[0]
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
    assert schemas == ["wfpmon.event/2"] * 4 + ["wfpmon.dropped/1"] + ["wfpmon.event/2"] * 6
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
    assert len(run.stdout.splitlines()) == 2 and "svchost.exe" in run.stdout, "the header, the event after 2.5 s"
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
    assert lines[1].split() == ["1234", "firefox.exe", "2", "40", "4", "MiB", "48.8", "KiB",
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
    assert run.exit_code == 10 and machine.driver.requests == ["processes 0"] * 5
    assert "stayed busy" in run.stderr and "[DeviceIoControl(IOCTL_WFPMON_LIST_PROCESSES) failed: Win32 error 170" \
        in run.stderr


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


# --- units, local time, CSV, filters, --count ------------------------------------


def columns(header: str, rows: list[list[str]], right: set[str], tail: bool = False) -> list[str]:
    """The lines wfpmonctl's text tables are made of (README: columns as
    wide as their widest cell or header, two spaces apart, numbers to the
    right, trailing blanks trimmed; `tail`: the last column unpadded),
    written independently of the Rust layout code."""
    names = header.split()
    cells = [names, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(names))]
    lines = []
    for r in cells:
        parts = [(c.rjust(w) if n in right else c.ljust(w)) for c, w, n in zip(r, widths, names)]
        if tail:
            parts.append(r[len(names)] if len(r) > len(names) else "")
        lines.append("  ".join(parts).rstrip())
    return lines


EVENT_HEADER = "TIME EVENT PID PROCESS PROTO DIR LOCAL REMOTE HOST AFTER IN OUT"
EVENT_RIGHT = {"PID", "AFTER", "IN", "OUT"}


def test_events_text_is_in_columns_at_local_time_with_names(exe):
    machine = events_machine()
    machine.service_table = [(888, "Dnscache"), (888, "mDNS"), (1234, "Unrelated")]
    machine.dns = {"93.184.216.34": [("example.com", 30)]}
    run = Run(exe, ["events"], machine=machine)
    assert run.exit_code == 0, run.stderr
    path_ff, path_svc = r"C:\program files\mozilla firefox\firefox.exe", r"E:\windows\system32\svchost.exe"
    rows = [
        [run.local("2025-12-31T23:59:50.000Z"), "established", "1234", "firefox.exe (Unrelated)", "tcp", "out",
         "10.0.0.5:50000", "93.184.216.34:443", "example.com", "", "", "", path_ff],
        [run.local("2025-12-31T23:59:58.000Z"), "ended", "1234", "firefox.exe (Unrelated)", "tcp", "out",
         "10.0.0.5:50000", "93.184.216.34:443", "example.com", "8.0s", "3 MiB (2.3k pkts)", "39.1 KiB (900 pkts)",
         path_ff],
        [run.local("2025-12-31T23:59:59.000Z"), "established", "888", "svchost.exe (Dnscache, mDNS)", "udp", "in",
         "[2001:db8::5]:5353", "[ff02::fb]:5353", "", "", "", "", path_svc],
        [run.local("2025-12-31T23:59:59.500Z"), "established", "4", "System", "icmp 8/0", "out", "10.0.0.5",
         "8.8.8.8", "", "", "", "", "[no process]"],
    ]
    assert rows[0][0] == "2026-01-01 00:59:50.000", "UTC+1 in winter"
    assert run.stdout.splitlines() == columns(EVENT_HEADER, rows, EVENT_RIGHT, tail=True), run.stdout
    # The lookup of 93.184.216.34 took 30 ms: one 50 ms wait; 8.8.8.8 has
    # no name; ff02::fb (multicast) is not looked up.
    assert run.sleeps == [50]
    assert [a for n, a in run.calls if n == "QueueUserWorkItem"] == ["93.184.216.34", "8.8.8.8"]
    assert run.lookups == ["93.184.216.34", "8.8.8.8"]
    (doc, *_) = Run(exe, ["events", "--json", "-n"], machine=events_machine()).json_lines()
    check_schema(doc)
    assert doc["timestamp"] == "2025-12-31T23:59:50.000Z" and doc["remote_host"] is None, "JSON stays UTC"


def test_local_time_follows_summer_time(exe):
    machine = events_machine()
    machine.wall_start = (1_782_864_000 + 11_644_473_600) * 10_000_000  # 2026-07-01T00:00:00Z
    run = Run(exe, ["events", "--count", "1", "-n"], machine=machine)
    assert run.stdout.splitlines()[1].startswith("2026-07-01 01:59:50.000  established"), run.stdout
    assert run.local("2026-06-30T23:59:50.000Z") == "2026-07-01 01:59:50.000", "UTC+2 in summer"


def test_units_bits_and_bytes_in_flows_procs_stats(exe):
    run = Run(exe, ["flows", "--units", "bits", "-n", "--sort", "pid"], machine=flows_machine())
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    firefox = lines[3].split()
    # 3 MiB = 25 165 824 bits; 40 000 bytes = 320 kbit.
    assert "25.2 Mbit" in lines[3] and "320 kbit" in lines[3], lines[3]
    assert firefox[:2] == ["1234", "firefox.exe"]
    assert lines[-1].endswith("in 25.2 Mbit, out 320.7 kbit"), lines[-1]
    raw = Run(exe, ["flows", "--units", "bits", "--raw", "-n", "--pid", "1234"], machine=flows_machine()).stdout
    assert str((3 << 20) * 8) in raw and " 320000 " in raw + " "

    def traffic(flows):
        flows[0]["bytes_in"] += 125_000  # 1 Mbit per 0.1 s refresh... per 1 s: 10 Mbit/s
    machine = flows_machine(growth=traffic)
    run = Run(exe, ["flows", "--units", "bits", "-n", "--watch", "0.1", "--count", "2"], machine=machine)
    assert "now 10 Mbit/s in, 0 bits/s out" in run.stdout.splitlines()[-1], run.stdout
    stats = Run(exe, ["stats", "--units", "bits", "--live"], machine=flows_machine()).stdout
    assert any(l.startswith("bytes in") and l.endswith("25.2 Mbit") for l in stats.splitlines()), stats
    procs = Run(exe, ["procs", "--units", "bits"], machine=events_machine()).stdout
    assert procs.splitlines()[1].split()[4:8] == ["33.6", "Mbit", "400", "kbit"], procs


def test_bad_input_is_a_usage_error_with_a_clear_message(exe):
    # (Every message is also checked on the host: src/cli.rs.)
    for args, message in [
        (["flows", "--remote", "10.0.0.0/33"], "expected an IP address or a CIDR block"),
        (["events", "--remote", "2001:db8::/129"], "expected an IP address or a CIDR block"),
        (["flows", "--units", "nibbles"], "invalid value 'nibbles' for '--units"),
        (["events", "--since", "yesterday"], "expected a duration (30s, 10m, 1h30m) or a time"),
        (["flows", "-n", "--host", "example"], "cannot be used with"),
    ]:
        run = Run(exe, args, machine=flows_machine())
        assert run.exit_code == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)
        assert run.stdout == "" and not [c for c in run.calls if c[0] == "CreateFileW"], "nothing touched"


def test_remote_cidr_and_host_filters(exe):
    def pids(*args, dns=None):
        machine = flows_machine()
        machine.dns = copy.deepcopy(dns or {})
        run = Run(exe, ["flows", "--json", "--sort", "pid", *args], machine=machine)
        assert run.exit_code == 0, run.stderr
        return [f["pid"] for f in run.json_lines()[0]["flows"]]

    assert pids("-n", "--remote", "93.184.216.0/24") == [1234]
    assert pids("-n", "--remote", "ff00::/8", "--remote", "8.8.8.8") == [4, 888], "any of several; an address"
    assert pids("-n", "--remote", "10.0.0.0/8") == [], "the local address does not count"
    named = {"93.184.216.34": [("edge.EXAMPLE.com", 0)], "8.8.8.8": [("dns.google", 0)]}
    assert pids("--host", "example", dns=named) == [1234], "case-insensitive"
    assert pids("--host", "o") == [], "no name: no match"


def test_csv_of_flows_procs_and_events(exe):
    import csv
    import io
    machine = flows_machine()
    machine.dns = {"93.184.216.34": [("example.com", 0)]}
    machine.service_table = [(888, "Dnscache"), (888, "mDNS")]
    run = Run(exe, ["flows", "--csv", "--sort", "pid"], machine=machine)
    assert run.exit_code == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert [r["pid"] for r in rows] == ["4", "888", "1234"]
    assert rows[1]["services"] == "Dnscache;mDNS" and rows[2]["remote_host"] == "example.com"
    assert rows[2]["bytes_in"] == str(3 << 20) and rows[2]["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert (rows[0]["icmp_type"], rows[0]["local_port"], rows[0]["rate_in"]) == ("8", "", "")

    def traffic(flows):
        flows[0]["bytes_in"] += 1000
    run = Run(exe, ["flows", "--csv", "-n", "--watch", "0.1", "--count", "2"], machine=flows_machine(growth=traffic))
    assert run.stdout.count("timestamp,") == 1 and "\x1b" not in run.stdout, "one header, no screen clearing"
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert len(rows) == 6 and {r["timestamp"] for r in rows[3:]} == {"2026-01-01T00:00:00.100Z"}
    assert rows[3]["rate_in"] == "10000"

    procs = list(csv.DictReader(io.StringIO(Run(exe, ["procs", "--csv"], machine=events_machine()).stdout)))
    assert [(p["pid"], p["process"], p["bytes_in"]) for p in procs] == [
        ("1234", "firefox.exe", str(4 << 20)), ("888", "svchost.exe", "512")]
    assert procs[0]["path"] == r"C:\program files\mozilla firefox\firefox.exe"
    events = list(csv.DictReader(io.StringIO(Run(exe, ["events", "--csv", "-n"], machine=events_machine()).stdout)))
    assert [(e["seq"], e["event"], e["flags"]) for e in events] == [
        ("0", "established", ""), ("1", "ended", ""), ("2", "established", ""), ("3", "established", "no_process")]
    assert events[1]["age_ms"] == "8000" and events[1]["timestamp"] == "2025-12-31T23:59:58.000Z"


def test_count_means_reports_everywhere_and_since_filters_events(exe):
    run = Run(exe, ["flows", "--json", "-n", "--count", "3"], machine=flows_machine())
    assert (len(run.json_lines()), run.sleeps) == (3, [100] * 20), "3 refreshes, 1 s apart without --watch"
    run = Run(exe, ["events", "--json", "-n", "--count", "3"], machine=events_machine())
    assert [d["seq"] for d in run.json_lines()] == [0, 1, 2], "3 events"
    run = Run(exe, ["events", "--json", "-n", "--since", "1500ms"], machine=events_machine())
    assert [d["seq"] for d in run.json_lines()] == [2, 3], "held 10 s, 2 s, 1 s and 0.5 s before the start"
    run = Run(exe, ["events", "--json", "-n", "--since", "2025-12-31T23:59:58Z"], machine=events_machine())
    assert [d["seq"] for d in run.json_lines()] == [1, 2, 3]


# --- names: services through the SCM, host names through GetNameInfoW ---------


def test_a_pid_hosting_several_services_and_the_scm_paged(exe):
    machine = flows_machine()
    machine.service_table = [(888, f"Svc{i:03}") for i in range(300)] + [(1234, "Other"), (0, "Stopped")]
    machine.services_per_call = 120
    run = Run(exe, ["flows", "--json", "-n", "--sort", "pid"], machine=machine)
    assert run.exit_code == 0, run.stderr
    flows = run.json_lines()[0]["flows"]
    assert flows[1]["services"] == [f"Svc{i:03}" for i in range(300)], "sorted, every page"
    assert flows[2]["services"] == ["Other"] and flows[0]["services"] == []
    assert [a for n, a in run.calls if n == "EnumServicesStatusExW"] == [0, 120, 240], "on from the resume handle"
    text = Run(exe, ["flows", "-n", "--pid", "888"], machine=machine).stdout
    assert "? (Svc000, Svc001, Svc002" in text


def test_host_lookups_never_hold_up_a_refresh_and_names_change(exe):
    """A lookup that takes 2.5 s and a name that changes: refreshes every
    100 s, names kept 5 minutes from when they are taken; the refreshes
    never wait."""
    machine = flows_machine()
    machine.dns = {"93.184.216.34": [("old.example", 2500), ("new.example", 0)],
                   "8.8.8.8": [(None, None)]}  # never answers: counts as failed after 10 s
    run = Run(exe, ["flows", "--json", "--watch", "100", "--count", "6"], machine=machine)
    assert run.exit_code == 0, run.stderr
    hosts = [[f["remote_host"] for f in d["flows"] if f["pid"] == 1234][0] for d in run.json_lines()]
    assert hosts == [None, "old.example", "old.example", "old.example", "old.example", "new.example"], \
        "not yet; taken at 100 s; expired at 400 s (the old name until the new answer); changed"
    assert sum(run.sleeps) == 5 * 100_000 and set(run.sleeps) == {100}, "only the watch's sleeps"
    assert [a for n, a in run.calls if n == "QueueUserWorkItem"].count("93.184.216.34") == 2
    assert [a for n, a in run.calls if n == "QueueUserWorkItem"].count("8.8.8.8") == 3, \
        "timed out at the first look after 10 s, no name kept a minute: asked again at 200 s and 400 s"


def test_a_one_shot_listing_waits_at_most_a_second_for_names(exe):
    machine = flows_machine()
    machine.dns = {"93.184.216.34": [("slow.example", 5000)]}
    run = Run(exe, ["flows", "--json"], machine=machine)
    assert run.exit_code == 0, run.stderr
    assert all(f["remote_host"] is None for f in run.json_lines()[0]["flows"])
    assert sum(run.sleeps) == 1000 and run.lookups == ["8.8.8.8"], "the slow one never answered in time"
    machine = flows_machine()
    run = Run(exe, ["flows", "-n"], machine=machine)
    assert run.sleeps == [] and "WSAStartup" not in run.names() and "QueueUserWorkItem" not in run.names()
