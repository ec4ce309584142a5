"""The driver's ETW (TraceLogging) provider as the Hyper-V kit, the shipped WPR
profile and the documentation use it: one name and one GUID (derived here from
the name, independently), the keywords and level that src/trace.rs defines,
the session stopped on every way out of the test, the profile well-formed,
and no DebugView left in the kit. Negative tests prove each check fails."""

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pytest  # noqa: E402

import etwkit  # noqa: E402
import psstatic  # noqa: E402

REPO = etwkit.REPO
KIT = REPO / "scripts" / "vm"
PROVIDER = etwkit.load_provider()
MODULE_TEXT, SCRIPTS = psstatic.load_kit(KIT)
INVOKE = SCRIPTS["Invoke-WfpMonVmTest.ps1"]
WPRP_TEXT = etwkit.WPRP.read_text(encoding="utf-8")


def module_scalar(name: str, text: str = MODULE_TEXT) -> str:
    m = re.search(rf"(?m)^\s*{name}\s*=\s*'([^']*)'", text)
    assert m, f"no {name} in the $script:WfpMon table"
    return m.group(1)


def script_var(name: str, text: str = MODULE_TEXT) -> str:
    m = re.search(rf"(?m)^\$script:{name} = '([^']*)'", text)
    assert m, f"no $script:{name} in WfpMonVm.psm1"
    return m.group(1)


def function_body(name: str, text: str = MODULE_TEXT) -> str:
    sc = psstatic.scan(text)
    for f in psstatic.functions_of(sc):
        if f.name == name:
            return text[f.body_start:f.body_end + 1]
    raise AssertionError(f"no function {name}")


# --- the GUID: one source, derived from the name ------------------------------------

def test_tracelogging_guid_algorithm_matches_known_values():
    # The tracelogging crate's own documentation example, and the GUID the
    # emulator sees the real image register (tests/emulator/test_trace.py).
    assert etwkit.tracelogging_guid("MyProvider") == "b3864c38-4273-58c5-545b-8b3608343471"
    assert etwkit.tracelogging_guid("wfpmon") == "ab0992a4-5b4d-595c-5337-c50e1d163b2f"


def test_kit_names_the_provider_of_trace_rs():
    assert module_scalar("EtwProviderName") == PROVIDER.name
    assert module_scalar("EtwProviderGuid") == PROVIDER.guid


def test_the_guid_is_written_once_in_the_kit():
    texts = {"WfpMonVm.psm1": MODULE_TEXT, **SCRIPTS}
    hits = {name: len(re.findall(PROVIDER.guid, t, re.I)) for name, t in texts.items()}
    assert hits == {"WfpMonVm.psm1": 1, "Prepare-TestVM.ps1": 0, "Invoke-WfpMonVmTest.ps1": 0}
    # ... and the session name is a constant too, never a literal at a call.
    for name in ("Start-WfpMonTrace", "Stop-WfpMonTrace"):
        body = function_body(name)
        assert "$script:EtwSessionName" in body
        assert f"'{script_var('EtwSessionName')}'" not in body


def test_keywords_and_level_are_everything_trace_rs_writes():
    assert PROVIDER.keywords == {"LIFECYCLE": 0x1, "ERRORS": 0x2, "FLOWS": 0x4}
    assert int(script_var("EtwKeywords"), 16) == PROVIDER.all_keywords
    assert int(script_var("EtwLevel"), 16) == PROVIDER.max_level == 5


def test_session_is_started_with_logman_for_the_guid_keywords_and_level():
    body = function_body("Start-WfpMonTrace")
    assert "$provider = '{' + $script:WfpMon.EtwProviderGuid + '}'" in body
    call = re.search(r"-FilePath 'logman\.exe' -ArgumentList @\(\s*('create'.*?)\) \| Out-Null", body, re.S)
    assert call, "Start-WfpMonTrace does not run logman.exe"
    args = [a.strip() for a in call.group(1).replace("\n", " ").split(",")]
    assert args[:3] == ["'create'", "'trace'", "$script:EtwSessionName"]
    at = args.index("'-p'")
    assert args[at + 1:at + 4] == ["$provider", "$script:EtwKeywords", "$script:EtwLevel"]
    assert "'-o'" in args and args[args.index("'-o'") + 1] == "$GuestEtlFile"
    assert args[-1] == "'-ets'"


def test_session_is_stopped_with_logman_and_converted_with_tracerpt_xml():
    assert "-ArgumentList @('stop', $script:EtwSessionName, '-ets')" in function_body("Stop-WfpMonTrace")
    convert = function_body("Convert-WfpMonTrace")
    assert "-FilePath 'tracerpt.exe' -ArgumentList @($GuestEtlFile, '-o', $GuestXmlFile, '-of', 'XML', '-y')" in convert


def test_event_names_the_kit_knows_are_those_trace_rs_writes():
    block = re.search(r"\$script:EtwEventNames = @\((.*?)\n\)", MODULE_TEXT, re.S).group(1)
    names = set(re.findall(r"'(\w+)'", block))
    assert names == PROVIDER.event_names
    # The verdict's events exist in trace.rs with the expected keywords.
    check = function_body("Test-WfpMonTraceCount")
    for name in ("TeardownComplete", "DriverEntryComplete", "DriverEntryFailed", "FlowRecordsLeft"):
        assert f"'{name}'" in check and name in PROVIDER.event_names
    errors = {e.name for e in PROVIDER.events if "ERRORS" in e.keywords}
    assert {"DriverEntryFailed", "FlowRecordsLeft"} <= errors


def test_the_test_counts_every_driver_start_and_stop():
    assert etwkit.uncounted_driver_calls(INVOKE) == []
    assert len(re.findall(r"(?m)^\s*\$driverStops\+\+$", INVOKE)) == 3  # loop, stopped-traffic check, final stop
    assert len(re.findall(r"(?m)^\s*\$driverStarts\+\+$", INVOKE)) == 3  # first start, loop, restart
    assert "Test-WfpMonTraceCount -Count $eventCount -DriverStarts $driverStarts -DriverStops $driverStops" in INVOKE


def test_an_uncounted_driver_stop_is_reported():
    old = "    Stop-WfpMonDriver -Session $session\n    $driverStops++\n    $stopped = @("
    broken = mutate(INVOKE, old, "    Stop-WfpMonDriver -Session $session\n    $stopped = @(")
    problems = etwkit.uncounted_driver_calls(broken)
    assert [p.message for p in problems] == ["Stop-WfpMonDriver is not followed by $driverStops++"]


# --- the session is stopped on every way out ------------------------------------------

def test_invoke_stops_the_session_on_every_exit_path():
    problems = etwkit.trace_stop_problems(INVOKE)
    assert problems == [], "\n".join(map(str, problems))


def test_prepare_does_not_trace():
    assert "WfpMonTrace" not in SCRIPTS["Prepare-TestVM.ps1"]


def mutate(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not once in the script"
    return text.replace(old, new)


STOP_MUTATIONS = [
    ("no stop in finally",
     "                Stop-WfpMonTrace -Session $session | Out-Null\n", "",
     "does not call Stop-WfpMonTrace"),
    ("no flag after start",
     "    Start-WfpMonTrace -Session $session -GuestEtlFile $guestEtl\n    $traceStarted = $true\n",
     "    Start-WfpMonTrace -Session $session -GuestEtlFile $guestEtl\n",
     "not followed by $traceStarted = $true"),
    ("no stop on the normal path",
     "    Assert-Step (Stop-WfpMonTrace -Session $session) \"logman stop $($names.EtwProviderName) ETW session failed\"\n",
     "", "never calls Stop-WfpMonTrace"),
    ("exit inside try",
     "    Get-WfpMonVm -VMName $VMName | Out-Null\n",
     "    Get-WfpMonVm -VMName $VMName | Out-Null\n    if ($RevertFirst) { exit 2 }\n",
     "'exit' inside the top-level try/catch"),
    ("no guard in finally", "            if ($traceStarted) {\n", "            if ($true) {\n",
     "no if ($traceStarted)"),
]


@pytest.mark.parametrize(("old", "new", "fragment"), [m[1:] for m in STOP_MUTATIONS],
                         ids=[m[0] for m in STOP_MUTATIONS])
def test_a_missing_stop_is_reported(old, new, fragment):
    problems = etwkit.trace_stop_problems(mutate(INVOKE, old, new))
    assert any(fragment in p.message for p in problems), "\n".join(map(str, problems)) or "(no problems)"


def test_starting_the_session_before_the_try_is_reported():
    start = "    Start-WfpMonTrace -Session $session -GuestEtlFile $guestEtl\n    $traceStarted = $true\n"
    broken = mutate(INVOKE, start, "").replace("\ntry {\n", "\n" + start.replace("    ", "") + "try {\n", 1)
    problems = etwkit.trace_stop_problems(broken)
    assert any("outside the top-level try block" in p.message for p in problems), problems


def test_stopping_the_driver_after_the_session_is_reported():
    session_stop = ("    Assert-Step (Stop-WfpMonTrace -Session $session) "
                    "\"logman stop $($names.EtwProviderName) ETW session failed\"\n    $traceStarted = $false\n")
    driver_stop = "    Stop-WfpMonDriver -Session $session\n    $driverStops++\n\n    # --- the ETW trace"
    broken = mutate(INVOKE, driver_stop, "    # --- the ETW trace")
    broken = mutate(broken, session_stop, session_stop + "    Stop-WfpMonDriver -Session $session\n    $driverStops++\n")
    problems = etwkit.trace_stop_problems(broken)
    assert any("its last teardown is not traced" in p.message for p in problems), problems


# --- the WPR profile --------------------------------------------------------------------

def wprp(text: str = WPRP_TEXT) -> list[str]:
    return etwkit.wprp_problems(text, PROVIDER.guid, PROVIDER.all_keywords, PROVIDER.max_level)


def test_wprp_is_a_valid_profile_for_the_provider():
    assert wprp() == []


def test_wprp_names_the_guid_and_each_keyword():
    import xml.etree.ElementTree as ET
    root = ET.fromstring(WPRP_TEXT)
    (provider,) = root.findall("Profiles/EventProvider")
    assert provider.get("Name") == PROVIDER.guid
    values = sorted(int(k.get("Value"), 16) for k in provider.findall("Keywords/Keyword"))
    assert values == sorted(PROVIDER.keywords.values())
    modes = sorted(p.get("LoggingMode") for p in root.findall("Profiles/Profile"))
    assert modes == ["File", "Memory"]


WPRP_MUTATIONS = [
    ("malformed", "</Profiles>", "</Profile>", "not well-formed XML"),
    ("wrong GUID", f'Name="{PROVIDER.guid}"', 'Name="ab0992a4-5b4d-595c-5337-c50e1d163b2e"', "<EventProvider> named"),
    ("keyword missing", '        <Keyword Value="0x4"/>\n', "", "keywords add up to 0x3"),
    ("level 4", 'Level="5"', 'Level="4"', "Level is 4, expected 5"),
    ("no memory profile", 'LoggingMode="Memory"', 'LoggingMode="File"', "LoggingMode Memory"),
    ("bad Id", 'Id="wfpmon.Verbose.File"', 'Id="wfpmon.Verbose"', "is not <Name>.<DetailLevel>.<LoggingMode>"),
    ("undefined collector", '<EventCollectorId Value="EventCollector_wfpmon">',
     '<EventCollectorId Value="EventCollector_other">', "which is not defined"),
    ("no Author", 'Author="wfpmon" ', "", "no Author"),
]


@pytest.mark.parametrize(("old", "new", "fragment"), [m[1:] for m in WPRP_MUTATIONS],
                         ids=[m[0] for m in WPRP_MUTATIONS])
def test_a_broken_wprp_is_reported(old, new, fragment):
    assert old in WPRP_TEXT
    problems = wprp(WPRP_TEXT.replace(old, new, 1))
    assert any(fragment in p for p in problems), problems


def test_wprp_order_is_checked():
    collector = re.search(r"    <EventCollector .*?</EventCollector>\n", WPRP_TEXT, re.S).group(0)
    moved = WPRP_TEXT.replace(collector, "").replace("    <Profile Id=\"wfpmon.Verbose.File\"",
                                                     collector + "    <Profile Id=\"wfpmon.Verbose.File\"", 1)
    assert any("order: collectors, providers, profiles" in p for p in wprp(moved))


# --- no DebugView left; docs and README name the provider -------------------------------

def test_no_debugview_in_the_kit():
    for name, text in [("WfpMonVm.psm1", MODULE_TEXT), *SCRIPTS.items()]:
        assert not re.search(r"dbgview|debugview", text, re.I), f"{name} still mentions DebugView"
    assert "dbgviewpath" not in psstatic.script_params(psstatic.scan(INVOKE))


def test_debug_print_filter_is_optional():
    prepare = SCRIPTS["Prepare-TestVM.ps1"]
    assert "debugprintfilter" in psstatic.script_params(psstatic.scan(prepare))
    code = psstatic.scan(prepare).code
    at = code.index("Enable-WfpMonDebugPrint -Session")
    assert "if ($DebugPrintFilter) {" in code[code.rindex("\n    if (", 0, at):at]


def test_windows_doc_describes_capture_and_every_event():
    text = (REPO / "docs" / "windows.md").read_text(encoding="utf-8")
    assert PROVIDER.guid in text and f"`{PROVIDER.name}`" in text
    assert "scripts\\windows\\wfpmon.wprp" in text or "scripts/windows/wfpmon.wprp" in text
    # Quoted: in PowerShell a bare {GUID} is a script block.
    assert f'-p "{{{PROVIDER.guid}}}" 0x7 0x5' in text
    assert "tracerpt" in text and "-of XML" in text
    section = text[text.index("## 5."):text.index("## 6.")]
    for name in PROVIDER.event_names:
        assert f"`{name}`" in section, f"docs/windows.md section 5 does not describe {name}"
    assert "-DbgViewPath" not in text


def test_readme_names_the_provider_and_its_guid():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert PROVIDER.guid in text and "TraceLogging" in text
    assert "DebugView" not in text or "debug build" in text
