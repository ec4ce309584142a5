"""docs/windows.md against what a Windows developer meets on a first try:
the execution-policy step before the kit's scripts, the trace folder before
the tools that write into it, the files copied to the test machine, `py -3`,
the network the signing step needs, the `--locked` that Makefile.toml
already passes, package removal without an INF uninstall section, and the
list of what is still unverified. Where a statement depends on another file
(Makefile.toml, wdk-build's makefile, the INF), it is checked against it."""

import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "inf"))

import pytest  # noqa: E402

import test_vm_kit  # noqa: E402
import wfpfacts  # noqa: E402
from wfpinf import read_inf  # noqa: E402

REPO = wfpfacts.REPO_ROOT
DOC = (REPO / "docs" / "windows.md").read_text(encoding="utf-8")
PACKAGE = wfpfacts.load_driver_package()


def section(number: int) -> str:
    start = DOC.index(f"\n## {number}.")
    nxt = DOC.find("\n## ", start + 1)
    return DOC[start:nxt if nxt != -1 else len(DOC)]


def code_lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) of every line inside ``` fences."""
    out, inside, pos = [], False, 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            out.append((pos, line.strip()))
        pos += len(line)
    return out


# --- section 7: the scripts can run ------------------------------------------------

def test_execution_policy_step_comes_before_the_first_script():
    text = section(7)
    first_run = text.index(".\\Prepare-TestVM.ps1 -VMName")
    for step in ("Set-ExecutionPolicy -Scope Process -ExecutionPolicy Bypass",
                 "Get-ChildItem -Path scripts\\vm, scripts\\windows -File | Unblock-File"):
        lines = [at for at, line in code_lines(text) if line.startswith(step)]
        assert lines, f"section 7 has no command line starting with {step!r}"
        assert lines[0] < first_run, f"{step!r} comes after the first script run"
    assert "powershell -ExecutionPolicy Bypass -File" in text
    assert "MachinePolicy" in text and "Restricted" in text


def test_unblocked_folders_hold_the_kit_and_the_profile():
    # Unblock-File covers scripts\vm (both scripts and the module) and
    # scripts\windows (the WPR profile the kit copies).
    kit = {p.name for p in (REPO / "scripts" / "vm").iterdir()}
    assert {"Prepare-TestVM.ps1", "Invoke-WfpMonVmTest.ps1", "WfpMonVm.psm1"} <= kit
    assert (REPO / "scripts" / "windows" / "wfpmon.wprp").is_file()


def test_bitlocker_and_the_timeout_form_are_described():
    text = section(7)
    assert "Suspend-BitLocker -MountPoint C: -RebootCount 2" in text
    assert "timed out after <N> s waiting for <what>; last seen: <...>; next: <...>" in text
    helper = test_vm_kit.function_body("New-WfpMonTimeoutMessage")
    assert "timed out after $Seconds s waiting for $WaitedFor; last seen: $LastSeen; next: $Next" in helper


# --- sections 4 and 5: files on the test machine, the trace folder ------------------------

def test_traces_folder_is_created_before_anything_writes_there():
    text = section(5)
    made = [at for at, line in code_lines(text)
            if line == "New-Item -ItemType Directory -Force -Path C:\\traces | Out-Null"]
    assert made, "section 5 does not create C:\\traces"
    writers = [at for at, line in code_lines(text) if "C:\\traces\\" in line]
    assert writers and min(writers) > made[0]
    # every capture tool of the section writes there
    for tool in ("wpr -stop C:\\traces\\", "logman create trace", "tracelog -start", "netsh trace start"):
        assert any(line.startswith(tool) and "C:\\traces\\" in line for _, line in code_lines(text)), tool


def test_wpr_profile_is_in_the_list_of_files_copied_to_the_test_machine():
    text = section(4)
    copy_list = text[text.index("Copy to the test machine"):text.index("Then, elevated")]
    assert "`scripts\\windows\\wfpmon.wprp`" in copy_list
    assert f"wfpmon_package\\*" in copy_list and "`wfpmonctl.exe`" in copy_list
    assert "wpr -start .\\wfpmon.wprp" in section(5)


def test_removal_deletes_a_leftover_service_and_the_inf_has_no_uninstall_section():
    text = section(4)
    block = text[text.index("**Stop and remove, in this order:**"):]
    assert block.index("pnputil /delete-driver oemNN.inf /uninstall") < block.index("sc.exe delete wfpmon")
    inf = read_inf(REPO / "inf" / PACKAGE.inx_name)
    assert not [n for n, _ in inf.headers if n.lower().startswith("defaultuninstall")]
    assert "no uninstall section" in text
    assert "including the\n  legacy `[DefaultUninstall]`" not in DOC


# --- sections 1 and 2: py -3, the network, --locked ----------------------------------------------

def test_python_on_windows_is_py_dash_3():
    commands = [line for _, line in code_lines(DOC)] + re.findall(r"`([^`]+)`", DOC)
    assert not [c for c in commands if re.match(r"python3?\s", c)], "use py -3 in Windows commands"
    assert "`py -3 tests\\inf\\wfpinf.py --stamped target\\debug\\wfpmon_package\\wfpmon.inf`" in section(2)


def test_signing_needs_the_network_for_the_time_stamp():
    text = section(1)
    assert "**Network access**" in text and "time-stamp server" in text
    assert "signtool sign ... /t http://timestamp.digicert.com" in text


def test_the_time_stamp_server_is_the_one_wdk_build_uses():
    path = test_vm_kit._wdk_build_makefile()
    if path is None:
        pytest.skip("wdk-build's sources are not in the cargo registry here")
    args = tomllib.loads(path.read_text(encoding="utf-8"))["tasks"]["signtool-sign"]["args"]
    server = args[args.index("/t") + 1]
    assert f"/t {server}" in section(1)


def test_double_locked_warning_matches_the_makefile():
    flags = test_vm_kit.MAKEFILE["env"]["CARGO_MAKE_CARGO_BUILD_TEST_FLAGS"]["value"]
    assert "--locked" in flags.split()
    text = section(1)
    assert "`cargo make default --locked`" in text
    assert "error: the argument '--locked' cannot be used multiple times" in text


# --- section 8: what is still unverified --------------------------------------------------

def test_unverified_list_names_every_item():
    text = section(8)
    part = text[text.index("### Still unverified from the first-try review"):]
    items = re.findall(r"(?m)^- \*\*(.+?)\*\*", part)
    assert len(items) == 8, items
    for word in ("rpcrt4.lib", "Execution policy", "BitLocker", "C:\\traces", "py -3", "--locked",
                 "[DefaultUninstall]", "Time-out messages"):
        assert any(word in item for item in items), f"no unverified item about {word}"
