"""Static checks of the built wfpmon kernel image (PE file), with pefile.

Each test checks one property that Windows' loader (or the emulator) relies
on, and says in its message what is wrong and where it usually comes from.

The image is WFPMON_SYS, by default
target/x86_64-pc-windows-msvc/release/wfpmon.sys (scripts/linux/build.sh makes
it). A missing image is a failure, not a skip: a green run must mean that an
image was checked.

Run:  scripts/linux/setup.sh && target/linux-wdk/venv/bin/python -m pytest tests/image
"""

from __future__ import annotations

import os
from pathlib import Path

import pefile
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = REPO_ROOT / "target" / "x86_64-pc-windows-msvc" / "release" / "wfpmon.sys"

# Kernel-mode modules a WFP callout driver may import from. Anything else
# (kernel32.dll, vcruntime140.dll, fwpuclnt.dll, ...) is user mode and makes
# the driver fail to load.
KERNEL_MODULES = frozenset({"ntoskrnl.exe", "hal.dll", "fwpkclnt.sys", "netio.sys", "ndis.sys"})

IMAGE_SUBSYSTEM_NATIVE = pefile.SUBSYSTEM_TYPE["IMAGE_SUBSYSTEM_NATIVE"]
IMAGE_FILE_DLL = pefile.IMAGE_CHARACTERISTICS["IMAGE_FILE_DLL"]
IMAGE_FILE_EXECUTABLE_IMAGE = pefile.IMAGE_CHARACTERISTICS["IMAGE_FILE_EXECUTABLE_IMAGE"]
IMAGE_FILE_MACHINE_AMD64 = pefile.MACHINE_TYPE["IMAGE_FILE_MACHINE_AMD64"]
SCN_MEM_WRITE = pefile.SECTION_CHARACTERISTICS["IMAGE_SCN_MEM_WRITE"]
SCN_MEM_EXECUTE = pefile.SECTION_CHARACTERISTICS["IMAGE_SCN_MEM_EXECUTE"]
SCN_MEM_NOT_PAGED = pefile.SECTION_CHARACTERISTICS["IMAGE_SCN_MEM_NOT_PAGED"]
SCN_MEM_DISCARDABLE = pefile.SECTION_CHARACTERISTICS["IMAGE_SCN_MEM_DISCARDABLE"]
DLLCHARACTERISTICS_DYNAMIC_BASE = pefile.DLL_CHARACTERISTICS["IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE"]
DLLCHARACTERISTICS_NX_COMPAT = pefile.DLL_CHARACTERISTICS["IMAGE_DLLCHARACTERISTICS_NX_COMPAT"]
# The extended DLL characteristics live in a debug directory entry of their
# own (PE format, "Debug Type": IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS = 20,
# 4 bytes of flags); /CETCOMPAT sets IMAGE_DLLCHARACTERISTICS_EX_CET_COMPAT.
DEBUG_TYPE_EX_DLLCHARACTERISTICS = pefile.DEBUG_TYPE["IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS"]
DLLCHARACTERISTICS_EX_CET_COMPAT = 0x0001

# The emulator's stack is SizeOfStackCommit bytes (scripts/linux/setup.sh
# links with /STACK:0x40000,0x6000); the real kernel ignores the value.
MIN_STACK_COMMIT = 0x6000


def image_path() -> Path:
    return Path(os.environ.get("WFPMON_SYS") or DEFAULT_IMAGE)


@pytest.fixture(scope="module")
def pe() -> pefile.PE:
    path = image_path()
    if not path.is_file():
        pytest.fail(
            f"kernel image {path} does not exist: build it with scripts/linux/build.sh "
            "(or point WFPMON_SYS at an image)"
        )
    image = parse(path.read_bytes())
    yield image
    image.close()


def parse(data: bytes) -> pefile.PE:
    """The image with the directories the checks read parsed."""
    image = pefile.PE(data=data, fast_load=True)
    image.parse_data_directories(
        directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DEBUG"],
        ]
    )
    return image


def section_name(section: pefile.SectionStructure) -> str:
    return section.Name.rstrip(b"\0").decode("ascii", "replace")


def exports(pe: pefile.PE) -> dict[str, int]:
    directory = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
    if directory is None:
        return {}
    return {sym.name.decode(): sym.address for sym in directory.symbols if sym.name}


def test_machine_is_amd64(pe: pefile.PE) -> None:
    assert pe.FILE_HEADER.Machine == IMAGE_FILE_MACHINE_AMD64, (
        f"machine is {pe.FILE_HEADER.Machine:#x}, expected AMD64 ({IMAGE_FILE_MACHINE_AMD64:#x})"
    )


def test_subsystem_is_native(pe: pefile.PE) -> None:
    subsystem = pe.OPTIONAL_HEADER.Subsystem
    assert subsystem == IMAGE_SUBSYSTEM_NATIVE, (
        f"subsystem is {subsystem} ({pefile.SUBSYSTEM_TYPE.get(subsystem, '?')}), a kernel driver "
        f"needs IMAGE_SUBSYSTEM_NATIVE ({IMAGE_SUBSYSTEM_NATIVE}); is /SUBSYSTEM:NATIVE "
        "(from wdk-build) reaching the linker?"
    )


def test_image_is_dll(pe: pefile.PE) -> None:
    characteristics = pe.FILE_HEADER.Characteristics
    assert characteristics & IMAGE_FILE_DLL, (
        f"file characteristics {characteristics:#x} lack IMAGE_FILE_DLL: the driver must be a "
        "cdylib linked with /DRIVER"
    )
    assert characteristics & IMAGE_FILE_EXECUTABLE_IMAGE, (
        f"file characteristics {characteristics:#x} lack IMAGE_FILE_EXECUTABLE_IMAGE"
    )


def test_driver_entry_is_exported(pe: pefile.PE) -> None:
    names = exports(pe)
    assert "DriverEntry" in names, (
        f"no DriverEntry export (exports: {sorted(names) or 'none'}); the driver must export "
        '`DriverEntry` (#[unsafe(export_name = "DriverEntry")])'
    )


def test_entry_point_is_driver_entry(pe: pefile.PE) -> None:
    entry = pe.OPTIONAL_HEADER.AddressOfEntryPoint
    driver_entry = exports(pe).get("DriverEntry")
    assert driver_entry is not None, "no DriverEntry export to compare the entry point with"
    assert entry == driver_entry, (
        f"entry point RVA {entry:#x} is not DriverEntry ({driver_entry:#x}); "
        "wdk-build passes /ENTRY:DriverEntry"
    )


def test_imports_only_kernel_modules(pe: pefile.PE) -> None:
    imported = {
        entry.dll.decode().lower(): sorted(
            (imp.name.decode() if imp.name else f"#{imp.ordinal}") for imp in entry.imports
        )
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])
    }
    assert imported, "the image imports nothing: a driver imports at least ntoskrnl.exe"
    foreign = {dll: names for dll, names in imported.items() if dll not in KERNEL_MODULES}
    assert not foreign, (
        f"imports from modules outside the kernel allow-list {sorted(KERNEL_MODULES)}: {foreign}. "
        "A user-mode DLL (e.g. via windows-sys, or a raw-dylib import without "
        '`modifiers = "+verbatim"`) cannot be loaded by a kernel driver'
    )


def _imported_names(pe: pefile.PE) -> set[str]:
    return {
        imp.name.decode()
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])
        for imp in entry.imports
        if imp.name
    }


def test_release_image_reports_through_etw_not_dbgprint(pe: pefile.PE) -> None:
    """Release builds write diagnostics through the TraceLogging provider
    (EtwRegister ... EtwUnregister); DbgPrint, filtered by default and costly
    at DISPATCH_LEVEL, is for debug builds only."""
    names = _imported_names(pe)
    assert not {n for n in names if "DbgPrint" in n}, sorted(names)
    assert {"EtwRegister", "EtwWriteTransfer", "EtwUnregister"} <= names, sorted(names)


def test_per_packet_injection_query_and_undeclared_security_export_are_gone(pe: pefile.PE) -> None:
    """FwpsQueryPacketInjectionState0 is no longer called per datagram, and
    the device's DACL is applied with routines the real WDK headers declare
    (ObSetSecurityObjectByPointer is an export they do not)."""
    names = _imported_names(pe)
    assert "FwpsQueryPacketInjectionState0" not in names
    assert "ObSetSecurityObjectByPointer" not in names
    assert {"ObOpenObjectByPointer", "ZwSetSecurityObject", "ZwClose"} <= names


def test_every_section_has_characteristics(pe: pefile.PE) -> None:
    bare = [section_name(s) for s in pe.sections if s.Characteristics == 0]
    assert not bare, (
        f"sections without characteristics: {bare}; Windows refuses to load such an image "
        "(StartService error 998)"
    )


def test_no_retplne_section(pe: pefile.PE) -> None:
    names = [section_name(s) for s in pe.sections]
    assert ".retplne" not in names, (
        f"sections {names} include lld-link's .retplne, which Windows refuses to load; "
        "link with /MERGE:.retplne=.rdata (scripts/linux/setup.sh does)"
    )


# --- Security features: DEP, ASLR, no W+X, CET shadow stacks --------------------
# Each check is a function returning what is wrong (empty: nothing), run on
# the built image here and, in the tests further down, on copies of it with
# exactly the property removed, so that every check is shown to fail.


def writable_executable_sections(pe: pefile.PE) -> list[str]:
    """Sections both writable and executable: memory integrity (HVCI) refuses
    such an image (Driver Verifier's code integrity check 0x2003)."""
    return [
        f"{section_name(s)} ({s.Characteristics:#010x})"
        for s in pe.sections
        if s.Characteristics & SCN_MEM_WRITE and s.Characteristics & SCN_MEM_EXECUTE
    ]


def dll_characteristics_problems(pe: pefile.PE) -> list[str]:
    """DYNAMIC_BASE (relocatable, ASLR) and NX_COMPAT (DEP) must be set;
    wdk-build links with /DYNAMICBASE and /NXCOMPAT."""
    flags = pe.OPTIONAL_HEADER.DllCharacteristics
    return [
        f"DllCharacteristics {flags:#06x} lack {name}"
        for name, bit in (
            ("IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE", DLLCHARACTERISTICS_DYNAMIC_BASE),
            ("IMAGE_DLLCHARACTERISTICS_NX_COMPAT", DLLCHARACTERISTICS_NX_COMPAT),
        )
        if not flags & bit
    ]


def cet_compat_problems(pe: pefile.PE) -> list[str]:
    """The image must carry an IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS debug
    entry whose flags include IMAGE_DLLCHARACTERISTICS_EX_CET_COMPAT (what
    /CETCOMPAT writes); Windows 11's kernel-mode hardware-enforced stack
    protection counts a driver without it as incompatible."""
    entries = [
        entry
        for entry in getattr(pe, "DIRECTORY_ENTRY_DEBUG", [])
        if entry.struct.Type == DEBUG_TYPE_EX_DLLCHARACTERISTICS
    ]
    if not entries:
        return [
            "no IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS debug directory entry: link with /CETCOMPAT "
            "(build.rs passes it)"
        ]
    problems = []
    for entry in entries:
        if entry.struct.SizeOfData < 4:
            problems.append(f"extended DLL characteristics entry of {entry.struct.SizeOfData} bytes (4 expected)")
            continue
        # The 4 bytes the entry points at, read from the file itself.
        offset = entry.struct.PointerToRawData
        flags = int.from_bytes(pe.__data__[offset : offset + 4], "little")
        if not flags & DLLCHARACTERISTICS_EX_CET_COMPAT:
            problems.append(f"extended DLL characteristics {flags:#x} lack IMAGE_DLLCHARACTERISTICS_EX_CET_COMPAT")
    return problems


def test_no_writable_and_executable_section(pe: pefile.PE) -> None:
    wx = writable_executable_sections(pe)
    assert not wx, f"sections both writable and executable: {wx}"


def test_dynamic_base_and_nx_compat(pe: pefile.PE) -> None:
    problems = dll_characteristics_problems(pe)
    assert not problems, problems


def test_cet_shadow_stack_compatible(pe: pefile.PE) -> None:
    problems = cet_compat_problems(pe)
    assert not problems, problems


def test_security_checks_reject_images_without_the_property(pe: pefile.PE) -> None:
    """Each check above, run on copies of the built image with exactly one
    property removed, reports it (and reports nothing on the unmodified
    copy): the checks can fail."""
    original = pe.__data__[:]

    def modified(change) -> pefile.PE:
        copy = parse(bytes(original))
        change(copy)
        return parse(copy.write())

    assert not cet_compat_problems(modified(lambda _: None))
    assert not dll_characteristics_problems(modified(lambda _: None))
    assert not writable_executable_sections(modified(lambda _: None))

    [cet_entry] = [e for e in pe.DIRECTORY_ENTRY_DEBUG if e.struct.Type == DEBUG_TYPE_EX_DLLCHARACTERISTICS]
    flags_offset = cet_entry.struct.PointerToRawData

    # A byte patch, not a pefile edit: PE.write() writes every parsed
    # structure back, the debug entry's own data included.
    without_cet_flag = bytearray(original)
    flags = int.from_bytes(without_cet_flag[flags_offset : flags_offset + 4], "little")
    cleared = flags & ~DLLCHARACTERISTICS_EX_CET_COMPAT
    without_cet_flag[flags_offset : flags_offset + 4] = cleared.to_bytes(4, "little")

    def retype_cet_entry(copy: pefile.PE) -> None:
        for entry in copy.DIRECTORY_ENTRY_DEBUG:
            if entry.struct.Type == DEBUG_TYPE_EX_DLLCHARACTERISTICS:
                entry.struct.Type = pefile.DEBUG_TYPE["IMAGE_DEBUG_TYPE_UNKNOWN"]

    def drop_debug_directory(copy: pefile.PE) -> None:
        directory = copy.OPTIONAL_HEADER.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DEBUG"]]
        directory.VirtualAddress = 0
        directory.Size = 0

    assert cet_compat_problems(parse(bytes(without_cet_flag))) == [
        f"extended DLL characteristics {cleared:#x} lack IMAGE_DLLCHARACTERISTICS_EX_CET_COMPAT"
    ]
    assert "no IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS" in " ".join(cet_compat_problems(modified(retype_cet_entry)))
    assert "no IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS" in " ".join(cet_compat_problems(modified(drop_debug_directory)))

    def clear_dll_flag(bit: int):
        def change(copy: pefile.PE) -> None:
            copy.OPTIONAL_HEADER.DllCharacteristics &= ~bit

        return change

    assert dll_characteristics_problems(modified(clear_dll_flag(DLLCHARACTERISTICS_DYNAMIC_BASE))) == [
        f"DllCharacteristics {pe.OPTIONAL_HEADER.DllCharacteristics & ~DLLCHARACTERISTICS_DYNAMIC_BASE:#06x} "
        "lack IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE"
    ]
    assert dll_characteristics_problems(modified(clear_dll_flag(DLLCHARACTERISTICS_NX_COMPAT))) == [
        f"DllCharacteristics {pe.OPTIONAL_HEADER.DllCharacteristics & ~DLLCHARACTERISTICS_NX_COMPAT:#06x} "
        "lack IMAGE_DLLCHARACTERISTICS_NX_COMPAT"
    ]

    def make_text_writable(copy: pefile.PE) -> None:
        for section in copy.sections:
            if section_name(section) == ".text":
                section.Characteristics |= SCN_MEM_WRITE

    wx = writable_executable_sections(modified(make_text_writable))
    assert len(wx) == 1 and wx[0].startswith(".text "), wx


def test_code_and_data_are_not_pageable(pe: pefile.PE) -> None:
    # Pageable on purpose: PAGE* sections; discarded after load: INIT and .reloc.
    pageable = [
        f"{section_name(s)} ({s.Characteristics:#010x})"
        for s in pe.sections
        if not section_name(s).upper().startswith(("PAGE", "INIT"))
        and not s.Characteristics & SCN_MEM_DISCARDABLE
        and not s.Characteristics & SCN_MEM_NOT_PAGED
    ]
    assert not pageable, (
        f"sections neither IMAGE_SCN_MEM_NOT_PAGED nor named PAGE*/INIT: {pageable}; code that "
        "runs at DISPATCH_LEVEL must not be pageable"
    )


def test_resident_memory_is_the_documented_six_point_six_mib(pe: pefile.PE) -> None:
    """docs/design.md#memory: each load keeps about 6.6 MiB of non-paged
    memory resident, `.data`'s virtual size (the flow buckets, the event
    ring and the process table as zero-filled statics)."""
    (data,) = [s for s in pe.sections if section_name(s) == ".data"]
    mib = data.Misc_VirtualSize / 2**20
    assert round(mib, 1) == 6.6, f".data is {data.Misc_VirtualSize} bytes ({mib:.2f} MiB); update docs/design.md#memory"
    assert data.Characteristics & SCN_MEM_NOT_PAGED, ".data is non-paged"
    assert data.SizeOfRawData <= 4096, (
        f".data stores {data.SizeOfRawData} bytes in the file: the statics should be zero-filled at load"
    )


def test_checksum_is_valid(pe: pefile.PE) -> None:
    stored = pe.OPTIONAL_HEADER.CheckSum
    computed = pe.generate_checksum()
    assert stored != 0, "PE checksum is 0: kernel images need one (link with /RELEASE)"
    assert stored == computed, f"PE checksum {stored:#x} differs from the computed {computed:#x}"


def test_stack_commit_fits_emulator(pe: pefile.PE) -> None:
    commit = pe.OPTIONAL_HEADER.SizeOfStackCommit
    assert commit >= MIN_STACK_COMMIT, (
        f"SizeOfStackCommit is {commit:#x}; the emulator runs the driver on a stack of that "
        f"size and needs at least {MIN_STACK_COMMIT:#x} (link with /STACK:0x40000,0x6000)"
    )
