"""Makes wfpmonctl.exe run several times faster in Speakeasy, with the
documented behaviour but for the last error (below): guest_runtime.c (its comment says why and what it does) takes
the process heap, the C runtime's memory functions and thread-local
storage inside the guest, and Speakeasy's idle per-instruction hook is
removed. `install` is called by `Run` between loading the image and
running it.

The last error: Speakeasy keeps a thread's last error in Python, out of the
guest's reach, so the guest's TlsGetValue does not clear it on success and
TlsGetValue/TlsSetValue do not set ERROR_INVALID_PARAMETER for an index out
of range, as Microsoft documents they do. wfpmonctl reads GetLastError only
right after the call that failed (overlapped.rs, windows/mod.rs,
model/names.rs), so no test depends on it."""

import functools
import pathlib
import shutil
import subprocess
import tempfile

import pefile
from speakeasy import common

HERE = pathlib.Path(__file__).resolve().parent
TOOLS = [f"x86_64-w64-mingw32-{t}" for t in ("gcc", "objcopy", "nm")]

# The image's imports the guest code takes, and the function taking each.
IMPORTS = {("kernel32.dll", "HeapAlloc"): "rt_heap_alloc", ("kernel32.dll", "HeapFree"): "rt_heap_free",
           ("kernel32.dll", "HeapReAlloc"): "rt_heap_realloc",
           ("kernel32.dll", "GetProcessHeap"): "rt_get_process_heap",
           ("msvcrt.dll", "memcpy"): "rt_memcpy", ("msvcrt.dll", "memmove"): "rt_memmove",
           ("msvcrt.dll", "memset"): "rt_memset", ("msvcrt.dll", "memcmp"): "rt_memcmp",
           ("kernel32.dll", "TlsAlloc"): "rt_tls_alloc", ("kernel32.dll", "TlsGetValue"): "rt_tls_get_value",
           ("kernel32.dll", "TlsSetValue"): "rt_tls_set_value", ("kernel32.dll", "TlsFree"): "rt_tls_free"}
HEAP = 256 << 20  # the bump allocator's region (never reused: a run allocates a few MiB)


@functools.cache
def compiled():
    """guest_runtime.c compiled once per process, in a directory of its own:
    (its .text, {symbol: offset}); None without the mingw-w64 tools."""
    if any(shutil.which(t) is None for t in TOOLS):
        return None
    out = pathlib.Path(tempfile.mkdtemp(prefix="wfpmon-guest-runtime-"))
    obj, text = out / "rt.o", out / "rt.text"
    subprocess.run([TOOLS[0], "-c", "-O2", "-ffreestanding", "-fno-builtin", "-fno-tree-loop-distribute-patterns",
                    "-fno-stack-protector", "-fno-asynchronous-unwind-tables", str(HERE / "guest_runtime.c"),
                    "-o", str(obj)], check=True)
    subprocess.run([TOOLS[1], "-O", "binary", "-j", ".text", str(obj), str(text)], check=True)
    symbols = {}
    for line in subprocess.run([TOOLS[2], str(obj)], capture_output=True, text=True, check=True).stdout.splitlines():
        value, kind, name = line.split()
        if kind in "Tt" and name.startswith(("rt_", "state", "tls")):
            symbols[name] = int(value, 16)
    code = text.read_bytes()
    shutil.rmtree(out)
    return code, symbols


def install(se, module, exe_path: str) -> bool:
    """Into Speakeasy `se`, whose loaded image `module` is `exe_path`: the
    guest code, the image's import slots pointed at it, and the idle code
    hook removed whenever Speakeasy disables it. False (nothing changed)
    without the tools."""
    runtime = compiled()
    if runtime is None:
        return False
    code, symbols = runtime
    base = se.mem_alloc(len(code) + HEAP + 0x1000, tag="guest_runtime")
    heap = (base + len(code) + 0xFFF) & ~0xFFF
    se.mem_write(base, code)
    se.mem_write(base + symbols["state"], heap.to_bytes(8, "little") + (heap + HEAP).to_bytes(8, "little"))
    pe = pefile.PE(exe_path, fast_load=True)
    pe.parse_data_directories([pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
    patched = set()
    for d in pe.DIRECTORY_ENTRY_IMPORT:
        for i in d.imports:
            target = IMPORTS.get((d.dll.decode().lower(), (i.name or b"").decode()))
            if target:
                slot = module.base + i.address - pe.OPTIONAL_HEADER.ImageBase
                se.mem_write(slot, (base + symbols[target]).to_bytes(8, "little"))
                patched.add(target)
    assert patched == set(IMPORTS.values()), f"imports not found: {set(IMPORTS.values()) - patched}"
    # Speakeasy adds a per-instruction code hook for deferred work (SEH
    # dispatch, temporary mappings) when it handles a fault, and once the
    # work is done only disables it in Python: Unicorn still calls it for
    # every instruction, which makes the guest several times slower. It is
    # removed when disabled (Speakeasy adds it again when it next needs it);
    # removed hooks stay referenced, since the one being removed is running.
    emu = se.emu
    disable, removed = emu.disable_code_hook, []

    def disable_and_remove():
        disable()
        hook = emu.tmp_code_hook
        if hook is not None:
            emu.emu_eng.hook_remove(hook.handle)
            emu.hooks[common.HOOK_CODE].remove(hook)
            emu.tmp_code_hook = None
            removed.append(hook)
    emu.disable_code_hook = disable_and_remove
    return True
