"""Runs the real wfpmonctl.exe under the Speakeasy emulator with the
filter-engine API (fwpuclnt.dll) faked, and checks every FWPM_*0 structure
it passes, call by call.

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


class Run:
    """One emulated `wfpmonctl.exe ARGS`, with fwpuclnt.dll answered by
    `answers` ({api: status or callable(call_index) -> status})."""

    HANDLE = 0x5EED

    def __init__(self, exe: str, args: list[str], answers: dict | None = None):
        self.answers = answers or {}
        self.calls: list[tuple[str, object]] = []
        self.stdout = ""
        self.stderr = ""
        config = copy.deepcopy(DEFAULT_CONFIG_DATA)
        config["command_line"] = " ".join(["wfpmonctl.exe", *args])
        config["max_api_count"] = 200_000
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
        # Speakeasy's WriteConsoleW does not report the characters written,
        # which Rust's stdout treats as a failed write: answer it here.
        self.se.add_api_hook(self._write_console, "kernel32", "WriteConsoleW", argc=5)
        self.std_handles: dict[int, str] = {}
        self.se.add_api_hook(self._get_std_handle, "kernel32", "GetStdHandle", argc=1)
        self.se.run_module(module, all_entrypoints=False)
        entry = self.se.get_report().model_dump()["entry_points"][-1]
        assert entry["error"] is None, entry["error"]
        self.exit_code = int(entry["ret_val"], 16)

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

    def _get_std_handle(self, emu, api_name, func, args):
        handle = func(args)
        # STD_OUTPUT_HANDLE is (DWORD)-11, STD_ERROR_HANDLE (DWORD)-12.
        name = {0xFFFFFFF5: "stdout", 0xFFFFFFF4: "stderr"}.get(args[0] & 0xFFFFFFFF)
        if name:
            self.std_handles[handle] = name
        return handle

    def _write_console(self, emu, api_name, func, args):
        handle, buf, count, written = args[:4]
        text = self.se.mem_read(buf, count * 2).decode("utf-16-le")
        if written:
            self.se.mem_write(written, struct.pack("<I", count))
        stream = self.std_handles.get(handle)
        assert stream, f"WriteConsoleW on unknown handle {handle:#x}"
        setattr(self, stream, getattr(self, stream) + text)
        return 1

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def added(self, api: str) -> list:
        return [detail for name, detail in self.calls if name == api]


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
        # Boot-time filters (0x2) may only reference persistent callouts.
        (["--boot-time"], (0x1, 0x1, 0x10000, 0x2)),
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


def test_persistent_with_boot_time_is_a_usage_error(exe):
    run = Run(exe, ["install", "--persistent", "--boot-time"])
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
