"""Runs the real wfpmon-export.exe as a Windows service under the Speakeasy
emulator, with the service control manager (SCM), the wfpmon driver, the
collector's network and the files faked. No real SCM runs here: the SCM is
this file's model of Microsoft's documentation, and what real Windows does
beyond that model is not verified (README: "Verified on Linux, and what is
not").

The executable is built for x86_64-pc-windows-gnu with mingw, as wfpmonctl's
emulated test builds wfpmonctl.exe; this file reuses that test's machinery
(tools/wfpmonctl/tests/emulator/test_wfpmonctl_emulated.py: `Run` - the
console, the clock, the control device's overlapped requests - and
`FakeDriver`, the driver's side of the control protocol). tracelogging links
its ETW functions from "OneCore_apiset", an import library mingw lacks; they
are advapi32.dll's exports (EventRegister's page: "DLL Advapi32.dll"), so
the build links mingw's libadvapi32.a under that name.

The SCM's rules modelled here, and their sources (learn.microsoft.com):

- StartServiceCtrlDispatcherW: fails with ERROR_FAILED_SERVICE_CONTROLLER_CONNECT
  (1063) when the process was not started by the SCM. Otherwise the calling
  (main) thread becomes the control dispatcher: it runs ServiceMain on a new
  thread and "does not return until all running services in the process
  have entered the SERVICE_STOPPED state"; it calls the service's HandlerEx
  for each control request. For an own-process service the table's name is
  ignored.
  Speakeasy runs one thread at a time (a CreateThread'ed thread runs only
  after the current run ends), so the model runs ServiceMain as a callback
  of the dispatcher's call (Speakeasy's `setup_callback`, as the wfpmonctl
  harness runs its console control handler), and delivers each control
  request as a callback of the wait (Sleep, GetOverlappedResultEx) the
  service is in when the request is due on the emulated clock - the
  moment the dispatcher thread would run the handler while the service
  thread waits. The dispatcher's call returns when ServiceMain does; a
  ServiceMain that returns before reporting SERVICE_STOPPED is recorded as a
  violation (the real dispatcher would not return).
- ServiceMain (LPSERVICE_MAIN_FUNCTIONW): argc >= 1 and argv[0] is the
  service's name. It "should immediately call RegisterServiceCtrlHandlerEx".
- SetServiceStatus remarks and SERVICE_STATUS members:
  * the first report is SERVICE_START_PENDING, right after the handler is
    registered;
  * "do not register to accept controls while the status is
    SERVICE_START_PENDING"; accept STOP once initialisation is done;
  * dwCheckPoint is incremented during a pending start or stop and "should be
    zero" otherwise; each pending report comes before the previous report's
    dwWaitHint has passed (else the SCM "can assume that an error has
    occurred");
  * dwWin32ExitCode is NO_ERROR "when it is running and on normal
    termination"; a service-specific failure is ERROR_SERVICE_SPECIFIC_ERROR
    (1066) with the code in dwServiceSpecificExitCode (ignored otherwise);
  * dwServiceType is the installed type (SERVICE_WIN32_OWN_PROCESS);
  * nothing is reported after SERVICE_STOPPED (the process may be ended).
- ControlService: a control is refused with ERROR_SERVICE_CANNOT_ACCEPT_CTRL
  (1061) while the service is SERVICE_START_PENDING, SERVICE_STOP_PENDING or
  SERVICE_STOPPED, and with ERROR_INVALID_SERVICE_CONTROL (1052) when
  dwControlsAccepted does not have it; INTERROGATE is accepted by every
  service (SERVICE_STATUS, dwControlsAccepted).
- "Service Control Handler Function" and HandlerEx: the handler returns
  NO_ERROR for INTERROGATE ("the SCM is aware of the current state") and
  ERROR_CALL_NOT_IMPLEMENTED for what it does not handle; on STOP it "must
  stop upon receipt, going to either the SERVICE_STOP_PENDING or
  SERVICE_STOPPED state", and "after the SCM sends this control code, it
  will not send other control codes"; the handler must return within 30 s.
  At system shutdown, services that accept PRESHUTDOWN get it first, then
  those that accept SHUTDOWN get SERVICE_CONTROL_SHUTDOWN and have "about 20
  seconds" to clean up.
- The driver's service: the I/O manager calls a driver's Unload only when no
  handle to its device is open and no request is outstanding ("Unload
  Routine Environment"), so `sc stop wfpmon` leaves it SERVICE_STOP_PENDING
  while the exporter holds the control device; once the handle is closed
  the driver unloads (the device is gone: CreateFileW fails with
  ERROR_FILE_NOT_FOUND) until it is started again.
- UDP send: a datagram socket's send fails with WSAECONNRESET after an
  earlier datagram drew an ICMP "port unreachable" (send's page).
- CreateServiceW / ChangeServiceConfig2W / DeleteService / OpenSCManagerW /
  OpenServiceW: ERROR_ACCESS_DENIED without administrator rights,
  ERROR_SERVICE_EXISTS (1073) for a name in use, ERROR_SERVICE_DOES_NOT_EXIST
  (1060), ERROR_SERVICE_MARKED_FOR_DELETE (1072); a binary path that
  contains a space must be quoted (CreateServiceW, lpBinaryPathName).

Everything the exporter writes to ETW is captured from EventWriteTransfer
(the event's name and its "Message" field); files live in a dictionary
(CreateFileW, NtReadFile/NtWriteFile, the rename), the collector is the list
of datagrams `send` hands over.

Run with the project's test venv:
    target/linux-wdk/venv/bin/python -m pytest tools/wfpmon-export/tests/emulator
Set WFPMON_EXPORT_EXE to use an already built executable.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT / "tools" / "wfpmonctl" / "tests" / "emulator"))

speakeasy = pytest.importorskip("speakeasy")

from test_wfpmonctl_emulated import (  # noqa: E402
    BOOT, ERROR_FILE_NOT_FOUND, ERROR_OPERATION_ABORTED, LINKER, TARGET, FakeDriver, Machine, Run, flow, flow_event,
    process, skip_without_the_gnu_toolchain)

SERVICE = "wfpmon-export"
CONFIG_PATH = "C:\\ProgramData\\wfpmon\\wfpmon-export.toml"
METRICS_DIR = "C:\\ProgramData\\wfpmon\\metrics"
EXE_PATH = "C:\\Program Files\\wfpmon\\wfpmon-export.exe"
COLLECTOR = ("192.0.2.10", 4739)

# winsvc.h / winerror.h / winsock2.h
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
SERVICE_CONTROL_PRESHUTDOWN = 0x0F
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN, SERVICE_ACCEPT_PRESHUTDOWN = 1, 4, 0x100
ACCEPT_BIT = {SERVICE_CONTROL_STOP: SERVICE_ACCEPT_STOP, SERVICE_CONTROL_SHUTDOWN: SERVICE_ACCEPT_SHUTDOWN,
              SERVICE_CONTROL_PRESHUTDOWN: SERVICE_ACCEPT_PRESHUTDOWN}
SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL = 0x10, 2, 1
SERVICE_CONFIG_DESCRIPTION = 1
SC_MANAGER_CONNECT, SC_MANAGER_CREATE_SERVICE = 0x1, 0x2
SERVICE_QUERY_STATUS, SERVICE_STOP, DELETE, SERVICE_CHANGE_CONFIG = 0x4, 0x20, 0x10000, 0x2
NO_ERROR, ERROR_ACCESS_DENIED, ERROR_CALL_NOT_IMPLEMENTED = 0, 5, 120
ERROR_INVALID_SERVICE_CONTROL, ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_CANNOT_ACCEPT_CTRL = 1052, 1060, 1061
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT, ERROR_SERVICE_SPECIFIC_ERROR = 1063, 1066
ERROR_SERVICE_MARKED_FOR_DELETE, ERROR_SERVICE_EXISTS = 1072, 1073
WSAECONNRESET, SOCKET_ERROR = 10054, 0xFFFFFFFF
WAIT_TIMEOUT = 258
# The README's exit codes (tools/wfpmon-export/src/config.rs).
EXIT_CONFIG_UNREADABLE, EXIT_CONFIG_INVALID, EXIT_SERVICE = 3, 4, 6
# IPFIX (RFC 7011) and the exporter's flowEndReason values (RFC 5102).
END_OF_FLOW, FORCED_END = 3, 4
IE_OCTETS, IE_PACKETS, IE_FLOW_ID, IE_END_REASON = 1, 2, 148, 136
STATUS_END_OF_FILE = 0xC0000011
FILE_RENAME_INFO_CLASSES = (3, 22)  # FileRenameInfo, FileRenameInfoEx (FILE_INFO_BY_HANDLE_CLASS)
FILE_ALLOCATION_INFO, FILE_END_OF_FILE_INFO = 5, 6


# --- the executable -----------------------------------------------------------


@pytest.fixture(scope="session")
def export_exe() -> str:
    given = os.environ.get("WFPMON_EXPORT_EXE")
    if given:
        return given
    skip_without_the_gnu_toolchain()
    advapi32 = subprocess.run([LINKER, "-print-file-name=libadvapi32.a"], capture_output=True, text=True,
                              check=True).stdout.strip()
    shim = ROOT / "target" / TARGET / "onecore-apiset"
    shim.mkdir(parents=True, exist_ok=True)
    staged = shim / f".libOneCore_apiset.a.{os.getpid()}"
    shutil.copyfile(advapi32, staged)
    os.replace(staged, shim / "libOneCore_apiset.a")
    # The same linker as wfpmonctl's test (so that the two builds share the
    # dependencies' artefacts); the library path only on the final link.
    env = dict(os.environ, CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=LINKER)
    subprocess.run(["cargo", "rustc", "--locked", "--release", "-p", "wfpmon-export", "--bin", "wfpmon-export",
                    "--target", TARGET, "--", "-C", f"link-arg=-L{shim}"], cwd=ROOT, env=env, check=True)
    return str(ROOT / "target" / TARGET / "release" / "wfpmon-export.exe")


# --- the collector's side: a minimal IPFIX decoder (RFC 7011 §3) -------------


def decode_ipfix(datagrams: list[bytes]) -> tuple[list[dict], list[dict]]:
    """(message headers, data records as {IE: value}); asserts the framing."""
    templates: dict[int, list[tuple[int, int, int]]] = {}
    headers, records = [], []
    for d in datagrams:
        version, length, export_time, sequence, domain = struct.unpack_from(">HHIII", d)
        assert version == 10, "IPFIX version 10"
        assert length == len(d), "the message length is the datagram's"
        headers.append(dict(sequence=sequence, domain=domain, export_time=export_time, records=0))
        at = 16
        while at < length:
            set_id, set_len = struct.unpack_from(">HH", d, at)
            assert set_len >= 4 and at + set_len <= length, "a set within its message"
            body, end = at + 4, at + set_len
            if set_id == 2:
                while end - body >= 4:
                    tid, count = struct.unpack_from(">HH", d, body)
                    body += 4
                    fields = []
                    for _ in range(count):
                        ie, flen = struct.unpack_from(">HH", d, body)
                        body += 4
                        pen = 0
                        if ie & 0x8000:
                            pen = struct.unpack_from(">I", d, body)[0]
                            body += 4
                        fields.append((ie & 0x7FFF, pen, flen))
                    templates[tid] = fields
            elif set_id >= 256:
                fields = templates[set_id]
                minimum = sum(1 if f[2] == 0xFFFF else f[2] for f in fields)
                while end - body >= minimum:
                    record = {}
                    for ie, pen, flen in fields:
                        if flen == 0xFFFF:
                            flen = d[body]
                            body += 1
                            if flen == 255:
                                flen = struct.unpack_from(">H", d, body)[0]
                                body += 2
                        raw = d[body:body + flen]
                        body += flen
                        record[(pen, ie)] = int.from_bytes(raw, "big") if flen <= 8 else raw
                    records.append(record)
                    headers[-1]["records"] += 1
            at = end
    return headers, records


def check_sequence_numbers(headers: list[dict], lost: int = 0) -> None:
    """RFC 7011 §3.1: each message's sequence number is the number of data
    records sent before it in the observation domain; `lost` records went in
    messages that did not arrive (the collector sees them as the gap)."""
    received = 0
    for h in headers:
        assert received <= h["sequence"] <= received + lost, (h, received, lost)
        received += h["records"]
    assert not headers or headers[-1]["sequence"] + headers[-1]["records"] == received + lost


# --- the machine --------------------------------------------------------------


class ServiceMachine(Machine):
    """The emulated Windows around the service."""

    def __init__(self, driver=None, config: str | None = None, started_by_scm=True, **kw):
        super().__init__(driver=driver, **kw)
        self.services["wfpmon"] = SERVICE_RUNNING if driver else SERVICE_STOPPED
        self.started_by_scm = started_by_scm
        self.files: dict[str, bytes] = {}
        if config is not None:
            self.files[CONFIG_PATH.lower()] = config.encode()
        # What happens when, on the emulated clock (ms since the start), in
        # order: ("control", code), ("shutdown",) - the system shuts down,
        # ("end", flow) - a flow ends with these counters, ("driver_stop",) - `sc stop wfpmon`,
        # ("driver_start", FakeDriver), ("collector_down",), ("collector_up",).
        self.timeline: list[tuple[int, tuple]] = []
        self.collector_up = True
        # The service database for install-service / uninstall-service:
        # name -> {"state": ..., "marked": bool}.
        self.database: dict[str, dict] = {}
        self.scm_errors: dict[str, int] = {}  # API -> the Win32 error it fails with


class _HookFilter:
    """The emulator as `Run` sees it: `Run` registers its hooks through it,
    except for the APIs `ServiceRun` answers itself."""

    def __init__(self, se, owned: set[str]):
        self._se, self._owned = se, owned

    def add_api_hook(self, cb, module="", api_name="", argc=0, call_conv=None):
        if api_name in self._owned:
            return None
        return self._se.add_api_hook(cb, module, api_name, argc=argc, call_conv=call_conv)

    def __getattr__(self, name):
        return getattr(self._se, name)


class ServiceRun(Run):
    """One emulated `wfpmon-export.exe ARGS` on a `ServiceMachine`."""

    CONFIG = {"max_api_count": 3_000_000}
    STATUS_HANDLE = 0x5E57A7
    SOCKET = 0x50C0
    FILE_BASE = 0xF11E00

    def __init__(self, exe: str, args: list[str], machine: ServiceMachine):
        self.statuses: list[dict] = []  # SetServiceStatus, with the emulated time
        self.violations: list[str] = []  # broken rules of the SCM's documentation
        self.controls: list[dict] = []  # control requests: delivered (with the handler's answer) or refused
        self.etw: list[tuple[str, str]] = []  # (event name, Message)
        self.datagrams: list[bytes] = []  # what reached the collector
        self.send_failures = 0
        self.sockets: list[dict] = []
        self.scm_calls: list[tuple[str, object]] = []
        self.handler = None  # (HandlerEx, context)
        self.service_main = None
        self.dispatcher_returned_after_stop = None
        self.open_files: dict[int, dict] = {}
        self.renames: list[tuple[str, str]] = []
        self._callback_error = None
        self._wrapped = False
        super().__init__(exe, args, machine=machine)

    # The emulator, with this run's hooks registered before Run's.
    @property
    def se(self):
        return self._se

    @se.setter
    def se(self, value):
        hooks = [
            ("advapi32", "StartServiceCtrlDispatcherW", 1, self._dispatcher),
            ("advapi32", "RegisterServiceCtrlHandlerExW", 3, self._register_handler),
            ("advapi32", "SetServiceStatus", 2, self._set_service_status),
            ("advapi32", "OpenSCManagerW", 3, self._open_scm),
            ("advapi32", "OpenServiceW", 3, self._open_service),
            ("advapi32", "QueryServiceStatusEx", 5, self._query_service),
            ("advapi32", "CreateServiceW", 13, self._create_service),
            ("advapi32", "ChangeServiceConfig2W", 3, self._change_config2),
            ("advapi32", "ControlService", 3, self._control_service),
            ("advapi32", "DeleteService", 1, self._delete_service),
            ("advapi32", "CloseServiceHandle", 1, lambda emu, a: 1),
            ("advapi32", "EventRegister", 4, self._event_register),
            ("advapi32", "EventSetInformation", 5, lambda emu, a: 0),
            ("advapi32", "EventUnregister", 1, lambda emu, a: 0),
            ("advapi32", "EventWriteTransfer", 6, self._event_write),
            ("ws2_32", "WSASocketW", 6, self._socket),
            ("ws2_32", "bind", 3, self._bind),
            ("ws2_32", "connect", 3, self._connect),
            ("ws2_32", "send", 4, self._send),
            ("ws2_32", "closesocket", 1, lambda emu, a: 0),
            ("ws2_32", "WSAGetLastError", 0, lambda emu, a: emu.curr_thread.last_error),
            ("kernel32", "GetModuleFileNameW", 3, self._module_file_name),
            ("ntdll", "NtReadFile", 9, self._nt_read_file),
            ("kernel32", "GetFileInformationByHandle", 2, self._file_information),
            ("kernel32", "FlushFileBuffers", 1, self._flush_file),
            ("kernel32", "SetFileInformationByHandle", 4, self._set_file_information),
            ("kernel32", "MoveFileExW", 3, self._move_file),
        ]
        for module, api, argc, fn in hooks:
            value.add_api_hook(self._plain(fn), module, api, argc=argc)
        self._se = _HookFilter(value, {api for _, api, _, _ in hooks})

    # -- the dispatcher, ServiceMain and the control handler --------------------

    def _wrap_callbacks(self, emu):
        """Sees each guest callback return: the handler's answer (and the
        last-error value of the thread it interrupted, restored, as the
        handler runs on a thread of its own on Windows), ServiceMain's end."""
        if self._wrapped:
            return
        self._wrapped = True
        original = emu._continue_api_callback

        def continued():
            frame = emu.get_current_run().api_callbacks[-1]
            if self.handler and frame.function == self.handler[0] and self.controls:
                delivered = [c for c in self.controls if c.get("answer") is None and c["delivered"]]
                if delivered:
                    delivered[0]["answer"] = emu.get_return_val() & 0xFFFFFFFF
                    emu.curr_thread.last_error = delivered[0]["saved_error"]
            elif frame.function == self.service_main:
                last = self.statuses[-1]["state"] if self.statuses else None
                if last != SERVICE_STOPPED:
                    self.violations.append("ServiceMain returned before SERVICE_STOPPED: the dispatcher would not return")
                self.dispatcher_returned_after_stop = last == SERVICE_STOPPED
            original()
        emu._continue_api_callback = continued

    def _dispatcher(self, emu, args):
        table = args[0]
        self.scm_calls.append(("StartServiceCtrlDispatcherW", None))
        if not self.machine.started_by_scm:
            emu.set_last_error(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
            return 0
        name_ptr, main = struct.unpack("<QQ", self.se.mem_read(table, 16))
        assert struct.unpack("<QQ", self.se.mem_read(table + 16, 16)) == (0, 0), "the table ends with NULLs"
        self.table_name = self.wstr(name_ptr)
        self.service_main = main
        self._wrap_callbacks(emu)
        name = self.se.mem_alloc(64)
        self.se.mem_write(name, (SERVICE + "\0").encode("utf-16-le"))
        argv = self.se.mem_alloc(16)
        self.se.mem_write(argv, struct.pack("<QQ", name, 0))
        kernel32, _ = emu.api.get_export_func_handler("kernel32", "Sleep")
        kernel32.setup_callback(main, [1, argv])
        return 1  # what the call returns once ServiceMain has

    def _register_handler(self, emu, args):
        name, handler, context = args[:3]
        self.scm_calls.append(("RegisterServiceCtrlHandlerExW", self.wstr(name)))
        self.handler = (handler, context)
        return self.STATUS_HANDLE

    def _set_service_status(self, emu, args):
        handle, ptr = args[:2]
        fields = struct.unpack("<7I", self.se.mem_read(ptr, 28))
        s = dict(zip(("type", "state", "accepted", "win32", "specific", "checkpoint", "wait_hint"), fields))
        s["at"] = self.clock_ms
        if handle != self.STATUS_HANDLE:
            self.violations.append(f"SetServiceStatus on handle {handle:#x}")
        self._check_status(s)
        self.statuses.append(s)
        return 1

    def _check_status(self, s):
        v = self.violations.append
        previous = self.statuses[-1] if self.statuses else None
        if previous is None and s["state"] != SERVICE_START_PENDING:
            v(f"first report is state {s['state']}, not SERVICE_START_PENDING")
        if previous and previous["state"] == SERVICE_STOPPED:
            v("a report after SERVICE_STOPPED")
        if s["type"] != SERVICE_WIN32_OWN_PROCESS:
            v(f"dwServiceType {s['type']:#x}")
        pending = s["state"] in (SERVICE_START_PENDING, SERVICE_STOP_PENDING)
        if pending:
            if s["checkpoint"] == 0 or s["wait_hint"] == 0:
                v(f"pending report without checkpoint or wait hint: {s}")
            if previous and previous["state"] == s["state"] and s["checkpoint"] <= previous["checkpoint"]:
                v(f"checkpoint not incremented: {previous['checkpoint']} -> {s['checkpoint']}")
        elif s["checkpoint"] != 0:
            v(f"checkpoint {s['checkpoint']} in state {s['state']}")
        if previous and previous["state"] in (SERVICE_START_PENDING, SERVICE_STOP_PENDING):
            if s["at"] - previous["at"] > previous["wait_hint"]:
                v(f"{s['at'] - previous['at']} ms between reports, wait hint {previous['wait_hint']} ms")
        if s["state"] == SERVICE_START_PENDING and s["accepted"]:
            v("controls accepted while SERVICE_START_PENDING")
        if s["state"] != SERVICE_STOPPED and s["win32"] != NO_ERROR:
            v(f"dwWin32ExitCode {s['win32']} while not stopped")
        if s["state"] == SERVICE_STOPPED and s["win32"] not in (NO_ERROR, ERROR_SERVICE_SPECIFIC_ERROR):
            v(f"dwWin32ExitCode {s['win32']} at the stop")

    @property
    def state(self):
        return self.statuses[-1]["state"] if self.statuses else None

    def _send_control(self, emu, control):
        """ControlService's side in the SCM, then the dispatcher's."""
        accepted = self.statuses[-1]["accepted"] if self.statuses else 0
        record = dict(control=control, at=self.clock_ms, delivered=False, answer=None)
        self.controls.append(record)
        if any(c["delivered"] and c["control"] in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN)
               for c in self.controls[:-1]):
            record["refused"] = ERROR_SERVICE_CANNOT_ACCEPT_CTRL  # nothing is sent after STOP / SHUTDOWN
        elif self.state in (None, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_STOPPED):
            record["refused"] = ERROR_SERVICE_CANNOT_ACCEPT_CTRL
        elif control != SERVICE_CONTROL_INTERROGATE and not accepted & ACCEPT_BIT[control]:
            record["refused"] = ERROR_INVALID_SERVICE_CONTROL
        else:
            record["delivered"] = True
            record["saved_error"] = None  # the waiting thread's, once its wait has an outcome
            record["state_before"] = self.state
            kernel32, _ = emu.api.get_export_func_handler("kernel32", "Sleep")
            kernel32.setup_callback(self.handler[0], [control, 0, 0, self.handler[1]])

    def _shutdown(self, emu):
        accepted = self.statuses[-1]["accepted"] if self.statuses else 0
        if accepted & SERVICE_ACCEPT_PRESHUTDOWN:
            self._send_control(emu, SERVICE_CONTROL_PRESHUTDOWN)
        elif accepted & SERVICE_ACCEPT_SHUTDOWN:
            self._send_control(emu, SERVICE_CONTROL_SHUTDOWN)
        else:
            self.controls.append(dict(control="shutdown", at=self.clock_ms, delivered=False, refused="not accepted"))

    # -- the timeline ---------------------------------------------------------

    def _due(self, emu):
        """Everything due on the emulated clock happens, in order."""
        m = self.machine
        while m.timeline and m.timeline[0][0] <= self.clock_ms:
            _, action = m.timeline.pop(0)
            kind = action[0]
            if kind == "control":
                self._send_control(emu, action[1])
            elif kind == "shutdown":
                self._shutdown(emu)
            elif kind == "end":
                # The flow ends: the driver drops it from its table, adds its
                # counters to the ended totals, then publishes the event.
                final = action[1]
                d = m.driver
                d.now = BOOT + self.clock_ms * 10_000
                d.flows = [f for f in d.flows if f["handle"] != final["handle"]]
                d.ended = tuple(a + final[k] for a, k in zip(d.ended, ("bytes_in", "bytes_out", "packets_in",
                                                                        "packets_out")))
                d.events.append(flow_event("ended", final, d.now, key=final["key"]))
            elif kind == "driver_stop":
                m.services["wfpmon"] = SERVICE_STOP_PENDING
                self._unload_if_unused()
            elif kind == "driver_start":
                m.driver = action[1]
                m.services["wfpmon"] = SERVICE_RUNNING
                self.device_open = False
            elif kind == "collector_down":
                m.collector_up = False
            elif kind == "collector_up":
                m.collector_up = True
            elif kind == "database_stopped":
                m.database[action[1]]["state"] = SERVICE_STOPPED
            else:
                raise AssertionError(action)

    def _unload_if_unused(self):
        m = self.machine
        if m.services["wfpmon"] == SERVICE_STOP_PENDING and not getattr(self, "device_open", False):
            m.services["wfpmon"] = SERVICE_STOPPED
            m.driver = None
            self.calls.append(("driver unloaded", self.clock_ms))

    def _settled(self, emu, result):
        """The wait's outcome is decided (its last-error value set): a handler
        that runs during it leaves that value alone."""
        for c in self.controls:
            if c["delivered"] and c["saved_error"] is None:
                c["saved_error"] = emu.curr_thread.last_error
        return result

    def _sleep(self, emu, args):
        result = super()._sleep(emu, args)
        self._due(emu)
        return self._settled(emu, result)

    # -- the control device -----------------------------------------------------

    def _create_file(self, emu, api_name, func, args):
        path = self.wstr(args[0])
        if path and path.lower().startswith("c:\\programdata\\wfpmon"):
            return self._open_file(emu, path, args)
        result = super()._create_file(emu, api_name, func, args)
        if result == self.DEVICE:
            self.device_open = True
        return result

    def _close_handle(self, emu, api_name, func, args):
        if args[0] in self.open_files:
            self.open_files.pop(args[0])
            return 1
        if args[0] == self.DEVICE:
            self.device_open = False
            self.calls.append(("CloseHandle", args[0]))
            self._unload_if_unused()
            return 1
        return super()._close_handle(emu, api_name, func, args)

    def _device_io_control(self, emu, args):
        if self.machine.driver is None:
            # The handle of a driver that unloaded cannot exist: the model
            # unloads only once the handle is closed.
            self.violations.append("DeviceIoControl on a device whose driver unloaded")
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0
        return super()._device_io_control(emu, args)

    def _get_overlapped_result(self, emu, args):
        """GetOverlappedResultEx(device, overlapped, &bytes, timeout, FALSE):
        the wait lasts `timeout` on the emulated clock (what is due in it
        happens); the pending read completes with events written by then."""
        handle, overlapped, transferred, timeout_ms, alertable = args[:5]
        timeout_ms, alertable = timeout_ms & 0xFFFFFFFF, alertable & 0xFFFFFFFF  # DWORD, BOOL
        assert handle == self.DEVICE and not alertable
        if overlapped in self.completed:
            return self._finish(emu, *self.completed.pop(overlapped), transferred)
        assert self.pending and self.pending["overlapped"] == overlapped, "the result of a request never made"
        self.clock_ms += timeout_ms
        self._due(emu)
        driver = self.machine.driver
        p = self.pending
        if driver is not None and p is not None and len(driver.events) > p["cursor"]:
            self.pending = None
            driver.now = BOOT + self.clock_ms * 10_000
            data = driver.read_events(p["cursor"], p["max"], p["len"])
            self.se.mem_write(p["out"], data)
            return self._settled(emu, self._finish(emu, 0, len(data), transferred))
        if overlapped in self.completed:
            return self._settled(emu, self._finish(emu, *self.completed.pop(overlapped), transferred))
        emu.set_last_error(WAIT_TIMEOUT)
        return self._settled(emu, 0)

    def _cancel_io_ex(self, emu, args):
        handle, overlapped = args[:2]
        self.calls.append(("CancelIoEx", (handle, overlapped)))
        p = self.pending
        if handle != self.DEVICE or p is None or overlapped not in (0, p["overlapped"]):
            emu.set_last_error(1168)  # ERROR_NOT_FOUND
            return 0
        self.pending = None
        self.completed[p["overlapped"]] = (ERROR_OPERATION_ABORTED, 0)
        return 1

    # -- the service control manager (install / uninstall / the driver's state) --

    def _fail(self, emu, api):
        error = self.machine.scm_errors.get(api)
        if error:
            emu.set_last_error(error)
        return error

    def _open_scm(self, emu, args):
        machine_name, database, access = args[:3]
        access &= 0xFFFFFFFF  # DWORD: the register's upper half is undefined
        self.scm_calls.append(("OpenSCManagerW", (self.wstr(machine_name), self.wstr(database), access)))
        return 0 if self._fail(emu, "OpenSCManagerW") else self.SCM

    def _open_service(self, emu, args):
        scm, name_ptr, access = args[:3]
        access &= 0xFFFFFFFF
        name = self.wstr(name_ptr)
        self.scm_calls.append(("OpenServiceW", (name, access)))
        assert scm == self.SCM
        if self._fail(emu, "OpenServiceW"):
            return 0
        if name not in self.machine.database and name not in self.machine.services:
            emu.set_last_error(ERROR_SERVICE_DOES_NOT_EXIST)
            return 0
        handle = 0x5C10 + len(self.services_by_handle)
        self.services_by_handle[handle] = name
        return handle

    def _service_state(self, name):
        if name in self.machine.database:
            return self.machine.database[name]["state"]
        return self.machine.services[name]

    def _query_service(self, emu, args):
        handle, level, buf, size, needed = args[:5]
        level, size = level & 0xFFFFFFFF, size & 0xFFFFFFFF
        name = self.services_by_handle[handle]
        self.scm_calls.append(("QueryServiceStatusEx", name))
        self.se.mem_write(buf, struct.pack("<9I", SERVICE_WIN32_OWN_PROCESS, self._service_state(name),
                                           0, 0, 0, 0, 0, 0, 0))
        return 1

    def _create_service(self, emu, args):
        scm, name, display, access, kind, start, error_control, binary, group, tag, deps, account, password = args[:13]
        access, kind, start, error_control = (a & 0xFFFFFFFF for a in (access, kind, start, error_control))
        detail = dict(name=self.wstr(name), display=self.wstr(display), access=access, type=kind, start=start,
                      error_control=error_control, binary=self.wstr(binary), group=self.wstr(group), tag=tag,
                      dependencies=self.wstr(deps) if deps else None, account=self.wstr(account),
                      password=self.wstr(password))
        self.scm_calls.append(("CreateServiceW", detail))
        if self._fail(emu, "CreateServiceW"):
            return 0
        if detail["name"] in self.machine.database:
            emu.set_last_error(ERROR_SERVICE_EXISTS)
            return 0
        self.machine.database[detail["name"]] = dict(state=SERVICE_STOPPED, config=detail)
        handle = 0x5C10 + len(self.services_by_handle)
        self.services_by_handle[handle] = detail["name"]
        return handle

    def _change_config2(self, emu, args):
        handle, level, info = args[:3]
        level &= 0xFFFFFFFF
        name = self.services_by_handle[handle]
        text = self.wstr(self.u64(info)) if level == SERVICE_CONFIG_DESCRIPTION else None
        self.scm_calls.append(("ChangeServiceConfig2W", (name, level, text)))
        if self._fail(emu, "ChangeServiceConfig2W"):
            return 0
        self.machine.database[name]["description"] = text
        return 1

    def _control_service(self, emu, args):
        handle, control, status = args[:3]
        control &= 0xFFFFFFFF
        name = self.services_by_handle[handle]
        self.scm_calls.append(("ControlService", (name, control)))
        service = self.machine.database[name]
        if service["state"] != SERVICE_RUNNING:
            emu.set_last_error(ERROR_SERVICE_CANNOT_ACCEPT_CTRL)
            return 0
        # The service (another process) stops within a second.
        service["state"] = SERVICE_STOP_PENDING
        self.machine.timeline.append((self.clock_ms + 1000, ("database_stopped", name)))
        self.se.mem_write(status, struct.pack("<7I", SERVICE_WIN32_OWN_PROCESS, SERVICE_STOP_PENDING, 0, 0, 0, 1,
                                              3000))
        return 1

    def _delete_service(self, emu, args):
        name = self.services_by_handle[args[0]]
        self.scm_calls.append(("DeleteService", name))
        if self._fail(emu, "DeleteService"):
            return 0
        service = self.machine.database[name]
        if service.get("marked"):
            emu.set_last_error(ERROR_SERVICE_MARKED_FOR_DELETE)
            return 0
        service["marked"] = True
        return 1

    # -- ETW ----------------------------------------------------------------------

    def _event_register(self, emu, args):
        """EventRegister(provider, EnableCallback, context, &handle), with an
        ETW session that has the provider enabled (every level and keyword):
        ETW calls the enable callback at registration then (EnableCallback)."""
        provider, callback, context, handle = args[:4]
        self.se.mem_write(handle, struct.pack("<Q", 0xE7A0))
        if callback:
            source = self.se.mem_alloc(16)
            self.se.mem_write(source, bytes(self.se.mem_read(provider, 16)))
            kernel32, _ = emu.api.get_export_func_handler("kernel32", "Sleep")
            kernel32.setup_callback(callback, [source, 1, 5, (1 << 64) - 1, 0, 0, context])
        return 0

    def _event_write(self, emu, args):
        """EventWriteTransfer(handle, descriptor, activity, related, count,
        data): tracelogging's descriptors are the provider's and the event's
        metadata, then the fields (a str8 field: its length, then its bytes)."""
        count, data = args[4] & 0xFFFFFFFF, args[5]
        blocks = []
        for i in range(count):
            ptr, size, _ = struct.unpack("<QII", self.se.mem_read(data + 16 * i, 16))
            blocks.append(bytes(self.se.mem_read(ptr, size)) if size else b"")
        meta = blocks[1]
        name = meta[3:meta.index(b"\0", 3)].decode()  # u16 size, one tag byte, the name
        self.etw.append((name, blocks[-1].decode("utf-8", "replace")))
        return 0

    # -- the network: the collector ---------------------------------------------

    def _socket(self, emu, args):
        family, kind, protocol = args[0] & 0xFFFFFFFF, args[1] & 0xFFFFFFFF, args[2] & 0xFFFFFFFF
        self.sockets.append(dict(family=family, type=kind, protocol=protocol))
        return self.SOCKET + len(self.sockets) - 1

    def _bind(self, emu, args):
        self.sockets[args[0] - self.SOCKET]["bind"] = self._endpoint(args[1])
        return 0

    def _connect(self, emu, args):
        self.sockets[args[0] - self.SOCKET]["connect"] = self._endpoint(args[1])
        return 0

    def _endpoint(self, addr):
        port = struct.unpack(">H", self.se.mem_read(addr + 2, 2))[0]
        return self._sockaddr(addr), port

    def _send(self, emu, args):
        sock, buf, length = args[0], args[1], args[2] & 0xFFFFFFFF
        assert self.sockets[sock - self.SOCKET].get("connect") == COLLECTOR
        if not self.machine.collector_up:
            self.send_failures += 1
            emu.set_last_error(WSAECONNRESET)
            return SOCKET_ERROR
        self.datagrams.append(bytes(self.se.mem_read(buf, length)))
        return length

    # -- files ------------------------------------------------------------------

    def _module_file_name(self, emu, api_name, func, args):
        module, buf, size = args[:3]
        if module:
            return func(args)
        text = EXE_PATH.encode("utf-16-le")
        self.se.mem_write(buf, text + b"\0\0")
        return len(EXE_PATH)

    def _open_file(self, emu, path, args):
        # DWORD arguments: only the low 32 bits of the register are defined.
        access, disposition = args[1] & 0xFFFFFFFF, args[4] & 0xFFFFFFFF
        key = path.lower()
        exists = key in self.machine.files
        # CREATE_NEW 1, CREATE_ALWAYS 2, OPEN_EXISTING 3, OPEN_ALWAYS 4,
        # TRUNCATE_EXISTING 5; CREATE_ALWAYS and OPEN_ALWAYS on an existing
        # file succeed with ERROR_ALREADY_EXISTS (CreateFileW).
        if disposition in (3, 5) and not exists:
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0xFFFFFFFFFFFFFFFF
        if disposition == 1 and exists:
            emu.set_last_error(80)  # ERROR_FILE_EXISTS
            return 0xFFFFFFFFFFFFFFFF
        emu.set_last_error(183 if exists and disposition in (2, 4) else 0)
        if not exists or disposition in (2, 5):
            self.machine.files[key] = b""
        handle = self.FILE_BASE + len(self.renames) * 64 + len(self.open_files) + 1
        while handle in self.open_files:
            handle += 1
        self.open_files[handle] = dict(path=key, at=0, access=access)
        return handle

    def _nt_read_file(self, emu, api_name, func, args):
        handle, iosb, buf, length = args[0], args[4], args[5], args[6] & 0xFFFFFFFF
        f = self.open_files.get(handle)
        if f is None:
            return func(args)
        data = self.machine.files[f["path"]][f["at"]:f["at"] + length]
        f["at"] += len(data)
        if not data:
            return STATUS_END_OF_FILE
        self.se.mem_write(buf, data)
        self.se.mem_write(iosb, struct.pack("<QQ", 0, len(data)))
        return 0

    def _nt_write_file(self, emu, api_name, func, args):
        handle, iosb, buf, count = args[0], args[4], args[5], args[6] & 0xFFFFFFFF
        f = self.open_files.get(handle)
        if f is None:
            return super()._nt_write_file(emu, api_name, func, args)
        self.machine.files[f["path"]] += bytes(self.se.mem_read(buf, count))
        self.se.mem_write(iosb, struct.pack("<QQ", 0, count))
        return 0

    def _file_information(self, emu, api_name, func, args):
        handle, info = args[:2]
        f = self.open_files.get(handle)
        if f is None:
            return func(args)
        size = len(self.machine.files[f["path"]])
        # BY_HANDLE_FILE_INFORMATION: attributes, 3 FILETIMEs, serial, size high/low, links, index high/low.
        self.se.mem_write(info, struct.pack("<I6IIIIIII", 0x80, 0, 0, 0, 0, 0, 0, 1, size >> 32, size & 0xFFFFFFFF,
                                            1, 0, handle))
        return 1

    def _flush_file(self, emu, api_name, func, args):
        return 1 if args[0] in self.open_files else func(args)

    def _rename(self, old, new):
        self.machine.files[new.lower()] = self.machine.files.pop(old)
        self.renames.append((old, new.lower()))

    def _set_file_information(self, emu, api_name, func, args):
        handle, info_class, info, size = args[:4]
        info_class &= 0xFFFFFFFF  # FILE_INFO_BY_HANDLE_CLASS, a 32-bit enum
        f = self.open_files.get(handle)
        if f is not None and info_class in (FILE_ALLOCATION_INFO, FILE_END_OF_FILE_INFO):
            size = self.u64(info)
            self.machine.files[f["path"]] = self.machine.files[f["path"]][:size].ljust(size, b"\0")
            return 1
        if f is None or info_class not in FILE_RENAME_INFO_CLASSES:
            return func(args)
        length = struct.unpack("<I", self.se.mem_read(info + 16, 4))[0]
        new = bytes(self.se.mem_read(info + 20, length)).decode("utf-16-le")
        self._rename(f["path"], new.removeprefix("\\\\?\\"))
        f["path"] = new.lower()
        return 1

    def _move_file(self, emu, api_name, func, args):
        old, new = self.wstr(args[0]), self.wstr(args[1])
        if old.lower() not in self.machine.files:
            return func(args)
        self._rename(old.lower(), new)
        return 1

    # -- results ------------------------------------------------------------------

    def ipfix(self):
        return decode_ipfix(self.datagrams)

    def states(self):
        return [s["state"] for s in self.statuses]


def config_text() -> str:
    return (f'[collector]\naddress = "{COLLECTOR[0]}:{COLLECTOR[1]}"\n'
            f"[export]\nobservation_domain_id = 7\nscan_interval_seconds = 1\n"
            f"[metrics]\ndirectory = '{METRICS_DIR}'\ninterval_seconds = 1\n")


FIREFOX = "\\Device\\HarddiskVolume3\\Program Files\\Mozilla Firefox\\firefox.exe"
CURL = "\\Device\\HarddiskVolume3\\Windows\\System32\\curl.exe"


def two_flows_driver() -> tuple[FakeDriver, dict, dict]:
    long_lived = flow(0xA1, 4242, bytes_in=9000, bytes_out=1200, packets_in=9, packets_out=4, key=1 << 32 | 1)
    short = flow(0xB2, 777, proto=17, local=("10.0.0.5", 53000), remote=("9.9.9.9", 53), bytes_in=300,
                 bytes_out=60, packets_in=1, packets_out=1, key=1 << 32 | 2)
    procs = [process(1, 4242, FIREFOX), process(2, 777, CURL)]
    return FakeDriver(flows=[long_lived, short], processes=procs), long_lived, short


def service_run(exe, machine, args=None):
    return ServiceRun(exe, args or ["--config", CONFIG_PATH, "service"], machine)


def assert_clean(run: ServiceRun):
    assert run.violations == [], run.violations


# --- tests ------------------------------------------------------------------------


def test_start_run_and_stop_by_the_scms_rules(export_exe):
    driver, long_lived, short = two_flows_driver()
    m = ServiceMachine(driver=driver, config=config_text())
    ended = dict(short, bytes_in=700, bytes_out=90, packets_in=3, packets_out=2)
    m.timeline = [
        (600, ("end", ended)),
        (1200, ("control", SERVICE_CONTROL_INTERROGATE)),
        (1600, ("control", SERVICE_CONTROL_STOP)),
        (1600, ("control", SERVICE_CONTROL_INTERROGATE)),
    ]
    run = service_run(export_exe, m)
    assert_clean(run)
    assert run.exit_code == 0, (run.stderr, run.etw)
    assert run.dispatcher_returned_after_stop is True
    assert ("RegisterServiceCtrlHandlerExW", SERVICE) in run.scm_calls

    states = run.states()
    assert states[:2] == [SERVICE_START_PENDING, SERVICE_RUNNING]
    assert run.statuses[1]["accepted"] == SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
    stop = [s for s in run.statuses if s["state"] == SERVICE_STOP_PENDING]
    assert [s["checkpoint"] for s in stop] == list(range(1, len(stop) + 1)) and len(stop) >= 2, stop
    assert all(s["accepted"] == 0 for s in stop)
    assert states == [SERVICE_START_PENDING, SERVICE_RUNNING] + [SERVICE_STOP_PENDING] * len(stop) + [SERVICE_STOPPED]
    final = run.statuses[-1]
    assert (final["win32"], final["specific"], final["checkpoint"]) == (NO_ERROR, 0, 0)

    interrogate, stop_control, late = run.controls
    assert interrogate["delivered"] and interrogate["answer"] == NO_ERROR
    assert stop_control["delivered"] and stop_control["answer"] == NO_ERROR
    assert stop[0]["at"] == stop_control["at"], "the handler reports STOP_PENDING at once"
    assert late.get("refused") == ERROR_SERVICE_CANNOT_ACCEPT_CTRL, "nothing is sent after STOP"

    headers, records = run.ipfix()
    check_sequence_numbers(headers)
    assert {h["domain"] for h in headers} == {7}
    by_flow = {r[(0, IE_FLOW_ID)]: r for r in records}
    assert len(records) == 2, records
    end = by_flow[short["handle"]]
    assert (end[(0, IE_END_REASON)], end[(0, IE_OCTETS)]) == (END_OF_FLOW, 90), "the ended flow, sent while running"
    forced = by_flow[long_lived["handle"]]
    assert (forced[(0, IE_END_REASON)], forced[(0, IE_OCTETS)], forced[(0, IE_PACKETS)]) == (FORCED_END, 1200, 4)

    prom = m.files[(METRICS_DIR + "\\wfpmon.prom").lower()].decode()
    assert "wfpmon_export_records_total 2\n" in prom, prom
    assert (METRICS_DIR + "\\.wfpmon.prom.tmp").lower() not in m.files, "written, then renamed"
    assert run.etw[0] == ("Info", "connected to the wfpmon driver")
    assert [e for e in run.etw if e[0] == "Error"] == [], run.etw
    assert [m for _, m in run.etw if m.startswith("stopping:")] == [
        "stopping: every open flow ended (forced end): 1 final records",
        "stopping: the collector has every message", "stopping: final metrics written"]


def test_system_shutdown_sends_shutdown_and_the_service_stops_clean(export_exe):
    driver, long_lived, short = two_flows_driver()
    m = ServiceMachine(driver=driver, config=config_text())
    m.timeline = [(800, ("shutdown",))]
    run = service_run(export_exe, m)
    assert_clean(run)
    assert run.exit_code == 0
    (shutdown,) = run.controls
    assert shutdown["control"] == SERVICE_CONTROL_SHUTDOWN, "no PRESHUTDOWN: the service does not accept it"
    assert shutdown["delivered"] and shutdown["answer"] == NO_ERROR
    states = run.states()
    assert states[0:2] == [SERVICE_START_PENDING, SERVICE_RUNNING] and states[-1] == SERVICE_STOPPED
    assert set(states[2:-1]) == {SERVICE_STOP_PENDING}
    assert run.statuses[-1]["win32"] == NO_ERROR
    assert run.statuses[-1]["at"] - shutdown["at"] < 20_000, "within the ~20 s the system gives"
    headers, records = run.ipfix()
    check_sequence_numbers(headers)
    assert sorted((r[(0, IE_FLOW_ID)], r[(0, IE_END_REASON)]) for r in records) == [
        (long_lived["handle"], FORCED_END), (short["handle"], FORCED_END)]


@pytest.mark.parametrize("files, code, text", [
    ({}, EXIT_CONFIG_UNREADABLE, "wfpmon-export.toml"),
    ({CONFIG_PATH: '[collector]\naddress = "192.0.2.10:4739"\ncolour = "blue"\n'}, EXIT_CONFIG_INVALID, "colour"),
])
def test_bad_configuration_stops_the_service_with_its_documented_code(export_exe, files, code, text):
    driver, _, _ = two_flows_driver()
    m = ServiceMachine(driver=driver)
    m.files.update({k.lower(): v.encode() for k, v in files.items()})
    run = service_run(export_exe, m)
    assert_clean(run)
    assert run.states() == [SERVICE_START_PENDING, SERVICE_STOPPED], "never RUNNING"
    stopped = run.statuses[-1]
    assert (stopped["win32"], stopped["specific"]) == (ERROR_SERVICE_SPECIFIC_ERROR, code)
    assert run.dispatcher_returned_after_stop is True
    errors = [msg for level, msg in run.etw if level == "Error"]
    assert len(errors) == 1 and text in errors[0], run.etw
    assert run.datagrams == [] and m.driver.requests == []


def test_the_service_command_outside_the_scm_exits_6(export_exe):
    m = ServiceMachine(driver=None, config=config_text(), started_by_scm=False)
    run = service_run(export_exe, m)
    assert run.exit_code == EXIT_SERVICE
    assert run.statuses == [] and run.handler is None
    assert run.stderr.startswith("wfpmon-export: error: not started by the service control manager: `service` is "
                                 "for the SCM (`sc start wfpmon-export`); in a console use --foreground "
                                 "[StartServiceCtrlDispatcherW: "), run.stderr
    assert "(os error 1063)" in run.stderr, run.stderr


def test_the_driver_stopping_underneath_gives_forced_ends_and_the_service_resumes(export_exe):
    driver, long_lived, short = two_flows_driver()
    m = ServiceMachine(driver=driver, config=config_text())
    newcomer = flow(0xC3, 4242, bytes_in=10, bytes_out=20, packets_in=1, packets_out=1, key=1 << 32 | 1)
    back = FakeDriver(flows=[newcomer], processes=[process(1, 4242, FIREFOX)])
    m.timeline = [
        (500, ("driver_stop",)),
        (2000, ("driver_start", back)),
        (6_500, ("control", SERVICE_CONTROL_STOP)),
    ]
    run = service_run(export_exe, m)
    assert_clean(run)
    unloaded = [at for name, at in run.calls if name == "driver unloaded"]
    assert len(unloaded) == 1 and unloaded[0] < 1000, "the exporter let go of the device: the driver unloaded"
    assert run.states()[:2] == [SERVICE_START_PENDING, SERVICE_RUNNING]
    stop_control = run.controls[0]
    assert stop_control["delivered"] and stop_control["at"] >= 6_500
    assert [s["at"] for s in run.statuses if s["state"] == SERVICE_STOP_PENDING][0] == stop_control["at"], \
        "RUNNING until the STOP: the service kept running without the driver"
    assert run.statuses[-1]["win32"] == NO_ERROR and run.exit_code == 0

    levels = [(level, msg.split(" (")[0].split(":")[0]) for level, msg in run.etw]
    assert levels[:3] == [("Info", "connected to the wfpmon driver"), ("Error", "the wfpmon driver went away"),
                          ("Info", "connected to the wfpmon driver")], run.etw
    assert "The device has been removed" in run.etw[1][1] or "1617" in run.etw[1][1], run.etw[1]

    headers, records = run.ipfix()
    check_sequence_numbers(headers)
    got = sorted((r[(0, IE_FLOW_ID)], r[(0, IE_END_REASON)], r[(0, IE_OCTETS)]) for r in records)
    assert got == [(long_lived["handle"], FORCED_END, 1200), (short["handle"], FORCED_END, 60),
                   (newcomer["handle"], FORCED_END, 20)], got
    assert "list" in back.requests, "the new driver instance was read"


def test_the_collector_going_away_is_counted_and_the_service_keeps_running(export_exe):
    driver, long_lived, short = two_flows_driver()
    m = ServiceMachine(driver=driver, config=config_text())
    ended = dict(short, bytes_out=75, packets_out=2)
    m.timeline = [
        (200, ("collector_down",)),
        (500, ("end", ended)),
        (1000, ("collector_up",)),
        (1500, ("control", SERVICE_CONTROL_STOP)),
    ]
    run = service_run(export_exe, m)
    assert_clean(run)
    assert run.states()[:2] == [SERVICE_START_PENDING, SERVICE_RUNNING]
    assert run.statuses[-1]["win32"] == NO_ERROR and run.exit_code == 0
    assert run.send_failures >= 1
    headers, records = run.ipfix()
    check_sequence_numbers(headers, lost=1)
    # The end record was lost with its message (and the templates with it:
    # the next message carries them again); the forced end came.
    assert [(r[(0, IE_FLOW_ID)], r[(0, IE_END_REASON)]) for r in records] == [(long_lived["handle"], FORCED_END)]
    prom = m.files[(METRICS_DIR + "\\wfpmon.prom").lower()].decode()
    counters = {line.split()[0]: int(line.split()[1]) for line in prom.splitlines()
                if line.startswith("wfpmon_export_") and " " in line}
    assert counters["wfpmon_export_collector_errors_total"] >= 1, prom
    assert counters["wfpmon_export_dropped_records_total"] == 1, prom
    assert counters["wfpmon_export_records_total"] == 1, prom


# --- install-service / uninstall-service ---------------------------------------

CONFIG_WITH_SPACE = "C:\\ProgramData\\wfpmon\\export config\\wfpmon-export.toml"


def install_run(exe, machine, config=CONFIG_WITH_SPACE):
    machine.files.setdefault(config.lower(), config_text().encode())
    # `Run` joins the arguments with spaces into the command line: the one
    # with a space is quoted there, as a shell would.
    return ServiceRun(exe, ["--config", f'"{config}"', "install-service"], machine)


def test_install_service_creates_an_own_process_auto_start_service_with_a_quoted_path(export_exe):
    m = ServiceMachine(started_by_scm=False)
    run = install_run(export_exe, m)
    assert run.exit_code == 0, run.stderr
    names = [n for n, _ in run.scm_calls]
    assert names == ["OpenSCManagerW", "CreateServiceW", "ChangeServiceConfig2W"], names
    assert run.scm_calls[0][1] == (None, None, SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE)
    created = run.scm_calls[1][1]
    assert created["name"] == SERVICE and created["display"].startswith("wfpmon flow exporter")
    assert (created["type"], created["start"], created["error_control"]) == (
        SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL)
    assert created["binary"] == f'"{EXE_PATH}" service --config "{CONFIG_WITH_SPACE}"', created["binary"]
    assert created["account"] is None and created["password"] is None, "LocalSystem"
    assert run.scm_calls[2][1] == (SERVICE, SERVICE_CONFIG_DESCRIPTION,
                                   "Streams the wfpmon driver's process-attributed flows to IPFIX collectors "
                                   "and Prometheus")
    assert run.stdout == (f"service {SERVICE} installed (automatic start), configuration {CONFIG_WITH_SPACE}\n")


@pytest.mark.parametrize("error, installed, text", [
    ({"OpenSCManagerW": ERROR_ACCESS_DENIED}, False,
     "installing the service needs administrator rights: run it from an elevated prompt [OpenSCManagerW: "),
    ({}, True, f"service {SERVICE} is already installed: `wfpmon-export uninstall-service` removes it "
               "[CreateServiceW: "),
])
def test_install_service_errors_are_explained_and_exit_6(export_exe, error, installed, text):
    m = ServiceMachine(started_by_scm=False)
    m.scm_errors.update(error)
    if installed:
        m.database[SERVICE] = dict(state=SERVICE_STOPPED)
    run = install_run(export_exe, m)
    assert run.exit_code == EXIT_SERVICE
    assert run.stderr.startswith("wfpmon-export: error: " + text), run.stderr
    assert "ChangeServiceConfig2W" not in [n for n, _ in run.scm_calls]


def test_uninstall_service_stops_a_running_service_then_deletes_it(export_exe):
    m = ServiceMachine(started_by_scm=False)
    m.database[SERVICE] = dict(state=SERVICE_RUNNING)
    run = ServiceRun(export_exe, ["uninstall-service"], m)
    assert run.exit_code == 0, run.stderr
    names = [n for n, _ in run.scm_calls]
    assert names[:3] == ["OpenSCManagerW", "OpenServiceW", "QueryServiceStatusEx"]
    assert run.scm_calls[1][1] == (SERVICE, SERVICE_QUERY_STATUS | SERVICE_STOP | DELETE)
    assert ("ControlService", (SERVICE, SERVICE_CONTROL_STOP)) in run.scm_calls
    assert names[-1] == "DeleteService" and m.database[SERVICE]["state"] == SERVICE_STOPPED, \
        "deleted once it had stopped"
    assert m.database[SERVICE]["marked"]
    assert run.stdout == f"service {SERVICE} removed\n"


@pytest.mark.parametrize("setup, code, out", [
    (lambda m: None, 0, f"service {SERVICE} is not installed: nothing to remove\n"),
    (lambda m: m.database.update({SERVICE: dict(state=SERVICE_STOPPED, marked=True)}), 0,
     f"service {SERVICE} was already marked for deletion: it goes when the last handle to it closes\n"),
])
def test_uninstall_service_when_there_is_nothing_to_remove(export_exe, setup, code, out):
    m = ServiceMachine(started_by_scm=False)
    setup(m)
    run = ServiceRun(export_exe, ["uninstall-service"], m)
    assert (run.exit_code, run.stdout) == (code, out), run.stderr


def test_uninstall_service_without_rights_exits_6(export_exe):
    m = ServiceMachine(started_by_scm=False)
    m.database[SERVICE] = dict(state=SERVICE_STOPPED)
    m.scm_errors["OpenServiceW"] = ERROR_ACCESS_DENIED
    run = ServiceRun(export_exe, ["uninstall-service"], m)
    assert run.exit_code == EXIT_SERVICE
    assert run.stderr.startswith("wfpmon-export: error: removing the service needs administrator rights: run it "
                                 "from an elevated prompt [OpenServiceW: "), run.stderr
    assert "DeleteService" not in [n for n, _ in run.scm_calls]
