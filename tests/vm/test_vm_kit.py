"""The Hyper-V kit (scripts/vm) and the package layout, checked on Linux:
static soundness of the PowerShell, and agreement of every name, file and
GUID with their single sources (catalog.rs, Cargo.toml, the INF, Makefile.toml
and wdk-build's own makefile)."""

import os
import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "inf"))

import pytest  # noqa: E402

import etwkit  # noqa: E402
import psstatic  # noqa: E402
import wfpfacts  # noqa: E402
from wfpinf import read_inf  # noqa: E402

REPO = wfpfacts.REPO_ROOT
KIT = REPO / "scripts" / "vm"
CATALOG = wfpfacts.load_catalog()
PACKAGE = wfpfacts.load_driver_package()
MODULE_TEXT, SCRIPTS = psstatic.load_kit(KIT)
GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")


def module_constants() -> tuple[dict[str, str], dict[str, str]]:
    """$script:WfpMon's scalar entries and its CalloutKeys table."""
    table = re.search(r"\$script:WfpMon = \[ordered\]@\{(.*?)\n\}", MODULE_TEXT, re.S)
    assert table, "no $script:WfpMon table in WfpMonVm.psm1"
    body = table.group(1)
    scalars = dict(re.findall(r"(?m)^\s{4}(\w+)\s*=\s*'([^']*)'", body))
    callouts_block = re.search(r"CalloutKeys\s*=\s*\[ordered\]@\{(.*?)\}", body, re.S)
    assert callouts_block, "no CalloutKeys table"
    callouts = dict(re.findall(r"'([^']+)'\s*=\s*'([^']+)'", callouts_block.group(1)))
    return scalars, callouts


SCALARS, CALLOUTS = module_constants()


# --- PowerShell soundness -----------------------------------------------------

def test_kit_has_the_expected_files():
    assert set(SCRIPTS) == {"Prepare-TestVM.ps1", "Invoke-WfpMonVmTest.ps1"}
    assert (KIT / "WfpMonVm.psm1").is_file()


@pytest.mark.parametrize("name", ["WfpMonVm.psm1", "Prepare-TestVM.ps1", "Invoke-WfpMonVmTest.ps1"])
def test_static_check_passes(name):
    problems = psstatic.check_kit(MODULE_TEXT, SCRIPTS)[name]
    assert problems == [], "\n".join(str(p) for p in problems)


@pytest.mark.parametrize(("script", "params"), [
    ("Invoke-WfpMonVmTest.ps1", {"vmname", "packagepath", "ctlpath", "credential", "iterations", "checkpoint", "norevert"}),
    ("Prepare-TestVM.ps1", {"vmname", "credential", "checkpoint", "disablesecureboot"}),
])
def test_script_parameters(script, params):
    assert params <= psstatic.script_params(psstatic.scan(SCRIPTS[script]))


def test_default_checkpoints_agree():
    prepare = re.search(r"\[string\]\$Checkpoint = '([^']+)'", SCRIPTS["Prepare-TestVM.ps1"]).group(1)
    invoke = re.search(r"\[string\]\$Checkpoint = '([^']+)'", SCRIPTS["Invoke-WfpMonVmTest.ps1"]).group(1)
    assert prepare == invoke


@pytest.mark.parametrize(("script", "tag"), [("Invoke-WfpMonVmTest.ps1", "WFPMON-VM-TEST"),
                                             ("Prepare-TestVM.ps1", "WFPMON-VM-PREPARE")])
def test_scripts_end_with_a_verdict_and_exit_code(script, tag):
    text = SCRIPTS[script]
    tail = text[text.rindex("if ($null -eq $failure) {"):]
    assert f"'{tag}: PASS'" in tail and "exit 0" in tail
    assert f'"{tag}: FAIL: $failure"' in tail and "exit 1" in tail
    assert tail.rstrip().endswith("exit 1")


def test_every_exported_function_is_used():
    used = set()
    for text in list(SCRIPTS.values()) + [MODULE_TEXT]:
        used |= {name.lower() for _, name, _ in psstatic.commands_called(psstatic.scan(text))}
    exported, _ = psstatic.exported_functions(psstatic.scan(MODULE_TEXT))
    assert exported - used == set()


# --- names and GUIDs against catalog.rs -----------------------------------------

def test_service_image_and_device_names_match_the_catalog():
    assert SCALARS["ServiceName"] == CATALOG.service_name
    assert SCALARS["ImageName"] == CATALOG.image_name
    assert SCALARS["DeviceName"] == CATALOG.device_name


def test_package_file_names_match_cargo_and_wdk_build_naming():
    assert SCALARS["ImageName"] == PACKAGE.sys_name
    assert SCALARS["InfName"] == PACKAGE.inf_name
    assert SCALARS["CatalogFileName"] == PACKAGE.cat_name
    assert SCALARS["PackageDirName"] == PACKAGE.package_dir_name


def test_provider_sublayer_and_callout_keys_match_the_catalog():
    assert SCALARS["ProviderKey"] == CATALOG.guids["PROVIDER_KEY"]
    assert SCALARS["SublayerKey"] == CATALOG.guids["SUBLAYER_KEY"]
    assert CALLOUTS == dict(CATALOG.callouts)


def test_no_stray_guid_in_the_kit():
    # The catalog's GUIDs, and the ETW provider's, which TraceLogging derives
    # from the provider name in src/trace.rs (test_vm_trace.py checks it).
    owned = set(CATALOG.all_guids().values()) | {etwkit.load_provider().guid}
    for name, text in [("WfpMonVm.psm1", MODULE_TEXT), *SCRIPTS.items()]:
        for m in GUID.finditer(text):
            assert m.group(0).lower() in owned, f"{name}: GUID {m.group(0)} is not one of catalog.rs's"


def test_driver_file_names_in_code_are_the_package_files():
    allowed = {PACKAGE.sys_name, PACKAGE.inf_name, PACKAGE.cat_name}
    for name, text in [("WfpMonVm.psm1", MODULE_TEXT), *SCRIPTS.items()]:
        sc = psstatic.scan(text)
        literals = [content for _, content in sc.strings] + [sc.code]
        for chunk in literals:
            for m in re.finditer(r"\b[\w-]+\.(?:sys|inf|cat)\b", chunk):
                assert m.group(0) in allowed, f"{name}: {m.group(0)} is not a file of the package"


def test_guest_names_are_only_defined_once():
    # The kit names the service, image, INF and GUIDs only in its constants table.
    for name, text in SCRIPTS.items():
        sc = psstatic.scan(text)
        for _, content in sc.strings:
            for literal in (CATALOG.service_name, CATALOG.image_name, PACKAGE.inf_name):
                assert content != literal, f"{name}: literal '{literal}' (use Get-WfpMonConstant)"


# --- the INF and the package the kit installs -------------------------------------

def test_inf_installs_what_the_kit_expects():
    inf = read_inf(REPO / "inf" / PACKAGE.inx_name)
    source_files = {e.key for e in inf.section("SourceDisksFiles").entries}
    assert source_files == {SCALARS["ImageName"]}
    assert inf.section("Version").get("CatalogFile").field(0) == SCALARS["CatalogFileName"]
    add = inf.section("DefaultInstall.NT$ARCH$.Services").get("AddService")
    assert add.field(0) == SCALARS["ServiceName"]


def test_kit_checks_exactly_the_package_files():
    files = re.search(r"\$script:PackageFiles = @\(([^)]*)\)", MODULE_TEXT).group(1)
    assert [f.strip() for f in files.split(",")] == [
        "$script:WfpMon.ImageName", "$script:WfpMon.InfName", "$script:WfpMon.CatalogFileName"]


# --- Makefile.toml: the package layout and the platform split --------------------

MAKEFILE = tomllib.loads((REPO / "Makefile.toml").read_text(encoding="utf-8"))
CARGO = tomllib.loads((REPO / "Cargo.toml").read_text(encoding="utf-8"))


def test_makefile_extends_wdk_builds_flow_optionally():
    assert MAKEFILE["extend"] == {"path": "target/rust-driver-makefile.toml", "optional": True}
    config = MAKEFILE["config"]
    assert "load_script" not in config, "a plain load_script would also run on Linux"
    script = config["windows_load_script"]
    assert "wdk_build::cargo_make::load_rust_driver_makefile()" in script
    pinned = re.search(r'wdk-build = "([^"]+)"', script).group(1)
    assert pinned == CARGO["build-dependencies"]["wdk-build"]
    assert config["default_to_workspace"] is False


def test_makefile_builds_the_driver_package_by_name_from_the_committed_lock():
    flags = MAKEFILE["env"]["CARGO_MAKE_CARGO_BUILD_TEST_FLAGS"]
    assert flags["value"] == f"--package {PACKAGE.name} --locked"
    assert flags["condition"]["platforms"] == ["windows"]
    wfpmonctl = MAKEFILE["tasks"]["wfpmonctl"]["args"]
    assert "--locked" in wfpmonctl
    # --locked needs the lock file in the repository (not ignored).
    assert (REPO / "Cargo.lock").is_file()
    assert "Cargo.lock" not in (REPO / ".gitignore").read_text()


def test_makefile_takes_the_inx_from_inf():
    task = MAKEFILE["tasks"]["copy-inx-to-output"]
    assert task["clear"] is True and task["condition"]["platforms"] == ["windows"]
    script = task["script"]
    assert task["script_runner"] == "@rust"
    # <working dir>/inf/<fs name>.inx -> <WDK_BUILD_OUTPUT_DIRECTORY>/<fs name>.inf
    assert 'var("CARGO_MAKE_WORKING_DIRECTORY")' in script and '.join("inf")' in script
    assert 'format!("{name}.inx")' in script and 'var("CARGO_MAKE_CRATE_FS_NAME")' in script
    assert 'var("WDK_BUILD_OUTPUT_DIRECTORY")' in script and 'output.join(format!("{name}.inf"))' in script
    assert (REPO / "inf" / PACKAGE.inx_name).is_file()


@pytest.mark.parametrize(("task", "script"), [
    ("linux-setup", "scripts/linux/setup.sh"),
    ("linux-build", "scripts/linux/build.sh"),
    ("linux-demo", "scripts/linux/demo.sh"),
    ("linux-test", "scripts/test.sh"),
])
def test_linux_tasks_run_only_on_linux(task, script):
    t = MAKEFILE["tasks"][task]
    assert t["condition"]["platforms"] == ["linux"]
    assert t["workspace"] is False
    assert t["command"] == "bash" and t["args"][0] == script


def test_windows_only_tasks_are_guarded():
    tasks = MAKEFILE["tasks"]
    assert tasks["wfpmonctl"]["condition"]["platforms"] == ["windows"]
    for platform in ("linux", "mac"):
        assert tasks["wdk-build-init"][platform] == {"clear": True}
    assert tasks["default"] == {"linux_alias": "linux-build"}


def _wdk_build_makefile() -> Path | None:
    version = CARGO["build-dependencies"]["wdk-build"]
    # The Linux build's own cargo home (scripts/linux/env.sh) holds the
    # pristine crate the set-up fetched; a developer's default one may too.
    homes = [Path(os.environ["CARGO_HOME"])] if os.environ.get("CARGO_HOME") else []
    homes += [REPO / "target" / "linux-wdk" / "cargo-home", Path.home() / ".cargo"]
    for root in (r for home in homes for r in (home / "registry" / "src").glob("*")):
        candidate = root / f"wdk-build-{version}" / "rust-driver-makefile.toml"
        if candidate.is_file():
            return candidate
    return None


def test_wdk_build_flow_matches_the_layout_the_kit_expects():
    path = _wdk_build_makefile()
    if path is None:
        pytest.skip("wdk-build's sources are not in the cargo registry here")
    flow = tomllib.loads(path.read_text(encoding="utf-8"))["tasks"]
    # stampinf edits the copy our copy-inx-to-output writes ...
    assert "${WDK_BUILD_OUTPUT_DIRECTORY}/${CARGO_MAKE_CRATE_FS_NAME}.inf" in flow["stampinf"]["args"]
    assert "copy-inx-to-output" in flow["stampinf"]["dependencies"]
    # ... and inf2cat signs the <name>_package folder the kit copies.
    assert "/driver:${WDK_BUILD_OUTPUT_DIRECTORY}/${CARGO_MAKE_CRATE_FS_NAME}_package" in flow["inf2cat"]["args"]
    assert f"{PACKAGE.fs_name}_package" == SCALARS["PackageDirName"]
    # The test certificate the kit trusts in the guest.
    assert SCALARS["TestCertificate"] in flow["copy-certificate-to-package"]["script"]


# --- docs/windows.md uses the same names ----------------------------------------------

def test_windows_doc_names_only_package_files():
    doc = REPO / "docs" / "windows.md"
    if not doc.is_file():
        pytest.skip("docs/windows.md not written yet")
    text = doc.read_text(encoding="utf-8")
    allowed = {PACKAGE.sys_name, PACKAGE.inf_name, PACKAGE.cat_name, PACKAGE.inx_name}
    for m in re.finditer(r"\b[\w-]+\.(?:sys|inf|inx|cat)\b", text):
        name = m.group(0)
        if re.fullmatch(r"oem(\d+|NN)\.inf", name) or name in {"fwpkclnt.sys", "ntoskrnl.sys"}:
            continue
        assert name in allowed, f"docs/windows.md mentions {name}"
    assert PACKAGE.package_dir_name in text
    assert f"pnputil /add-driver {PACKAGE.inf_name} /install" in text


# --- first run on Windows: BitLocker, time-outs, the trace folder, the WPR profile --------

PREPARE = SCRIPTS["Prepare-TestVM.ps1"]
INVOKE = SCRIPTS["Invoke-WfpMonVmTest.ps1"]


def function_body(name: str, text: str = MODULE_TEXT) -> str:
    sc = psstatic.scan(text)
    for f in psstatic.functions_of(sc):
        if f.name == name:
            return text[f.body_start:f.body_end + 1]
    raise AssertionError(f"no function {name}")


def code_position(text: str, needle: str) -> int:
    """Position of the one occurrence of needle in text, which must start
    in code (a mention in a comment does not count)."""
    assert text.count(needle) == 1, f"{needle!r} occurs {text.count(needle)} times"
    at = text.index(needle)
    code = psstatic.scan(text).code
    assert code[at] == text[at] and not code[at].isspace(), f"{needle!r} is in a comment"
    return at


def test_every_timed_wait_of_the_kit_reports_through_the_helper():
    sc = psstatic.scan(MODULE_TEXT)
    waits = {f.name for f in psstatic.functions_of(sc)
             if psstatic._TIMED_WAIT.search(sc.code, f.body_start, f.body_end)}
    # guest reachable, service state, the traffic job, the trace file
    assert waits == {"Wait-WfpMonGuest", "Wait-WfpMonDriverState", "Stop-WfpMonTrafficJob", "Wait-WfpMonTraceFile"}
    assert psstatic.timeout_problems(sc, psstatic.functions_of(sc)) == []


def test_timeout_message_says_what_was_awaited_seen_and_next():
    body = function_body("New-WfpMonTimeoutMessage")
    message = re.search(r'return "([^"]*)"', body).group(1)
    assert message == ("timed out after $Seconds s waiting for $WaitedFor; last seen: $LastSeen; "
                       "next: $Next")
    params = psstatic.functions_of(psstatic.scan(MODULE_TEXT))
    helper = next(f for f in params if f.name == "New-WfpMonTimeoutMessage")
    assert helper.params == {"waitedfor", "seconds", "lastseen", "next"}


def test_guest_wait_reports_the_vm_heartbeat_and_the_console():
    body = function_body("Wait-WfpMonGuest")
    assert "heartbeat $heartbeat" in body and "PowerShell Direct: $($_.Exception.Message)" in body
    assert "vmconnect.exe localhost $VMName" in body and "BitLocker recovery screen" in body
    assert "$NextCheck; otherwise $general" in body


def test_driver_state_wait_names_the_next_check_for_each_state():
    body = function_body("Wait-WfpMonDriverState")
    assert "Service Control Manager events 7000/7026" in body and "CodeIntegrity" in body
    assert "CalloutStillRegistered" in body and "$($script:WfpMon.DeviceName)" in body
    state = function_body("Get-WfpMonDriverState")
    assert "Status = [string]$driver.Status; ExitCode = $driver.ExitCode" in state


def test_prepare_suspends_bitlocker_before_changing_firmware_or_boot_options():
    suspend = code_position(PREPARE, "Suspend-WfpMonBitLocker -Session $session -RebootCount $boots")
    firmware = code_position(PREPARE, "Set-VMFirmware -VMName $VMName -EnableSecureBoot Off")
    signing = code_position(PREPARE, "Enable-WfpMonTestSigning -Session $session")
    baseline = code_position(PREPARE, "New-WfpMonCheckpoint -VMName $VMName -Name $BaselineCheckpoint")
    assert baseline < suspend < firmware < signing
    # One boot for the test-signing restart, one more for the firmware change.
    assert re.search(r"\$boots = 1\n\s*if \(\$secureBootOff\) \{ \$boots = 2 \}", PREPARE)
    # Both boots after the suspension carry the BitLocker hint when they time out.
    assert "-TimeoutSeconds $BootTimeoutSeconds -NextCheck $bootHint | Out-Null" in PREPARE
    assert "Restart-WfpMonGuest -VMName $VMName -Credential $Credential -Session $session " \
           "-TimeoutSeconds $BootTimeoutSeconds -NextCheck $bootHint" in PREPARE


def test_bitlocker_is_suspended_only_when_on_and_otherwise_explained():
    body = function_body("Suspend-WfpMonBitLocker")
    on = body.index("$r.Protected = ([string]$volume.ProtectionStatus -eq 'On')")
    call = body.index("Suspend-BitLocker -MountPoint $drive -RebootCount $RebootCount")
    assert on < call and "if ($r.Protected) {" in body[on:call]
    # Protected but not suspendable here: fail before the firmware change, saying how.
    assert "if ($state.Protected -and -not $state.Suspended) {" in body
    assert "manage-bde.exe -protectors -disable $($state.Drive) -RebootCount $RebootCount" in body


def test_trace_folder_exists_before_logman_writes_there():
    body = function_body("Start-WfpMonTrace")
    made = body.index("New-Item -ItemType Directory -Path $Dir -Force")
    assert made < body.index("'create', 'trace'")
    assert "(Split-Path -Path $GuestEtlFile -Parent)" in body


def test_trace_is_copied_only_once_its_file_is_closed():
    stop = code_position(INVOKE, "Assert-Step (Stop-WfpMonTrace -Session $session)")
    wait = code_position(INVOKE, "Wait-WfpMonTraceFile -Session $session -GuestEtlFile $guestEtl")
    copy = code_position(INVOKE, "Copy-Item -FromSession $session -Path $guestEtl -Destination (Join-Path $runDir 'wfpmon.etl')\n")
    assert stop < wait < copy
    assert "[System.IO.File]::Open($Path, 'Open', 'Read', 'None')" in function_body("Wait-WfpMonTraceFile")


def test_wpr_profile_is_copied_to_the_guest():
    assert SCALARS["WprProfileName"] == etwkit.WPRP.name
    # scripts\vm\..\windows\<profile>: the shipped profile's place in the repository
    assert "(Split-Path -Path $PSScriptRoot -Parent) (Join-Path 'windows' $names.WprProfileName)" in INVOKE
    assert (KIT.parent / "windows" / SCALARS["WprProfileName"]) == etwkit.WPRP
    assert "Copy-Item -Path $hostWprProfile -Destination (Join-Path $GuestDirectory $names.WprProfileName) " \
           "-ToSession $session" in INVOKE


def test_removal_deletes_a_service_the_package_removal_left():
    delete_driver = code_position(INVOKE, "ArgumentList @('/delete-driver', $inf, '/uninstall') ")
    sc_delete = code_position(INVOKE, "ArgumentList @('delete', $names.ServiceName) -ValidExitCode @(0, 1072)")
    assert delete_driver < sc_delete
    # ... and the failure path only deletes what this run installed.
    cleanup = INVOKE[INVOKE.index("if ($NoRevert -and $null -ne $failure) {"):]
    assert re.search(r"if \(\$packageAdded\) \{\n(\s*#[^\n]*\n)?\s*Invoke-WfpMonGuestProcess -Session \$session "
                     r"-FilePath 'sc\.exe' -ArgumentList @\('delete'", cleanup)
