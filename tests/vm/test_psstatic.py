"""The PowerShell static checker itself: what it accepts, and proof that it
fails on broken scripts at the right line (synthetic snippets, and one-edit
mutations of the real kit)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

import psstatic  # noqa: E402
from psstatic import Unit, check_kit, check_unit, scan  # noqa: E402

KIT = Path(__file__).resolve().parents[2] / "scripts" / "vm"

HEADER = "<#\n.SYNOPSIS\n    Test.\n.DESCRIPTION\n    Runs only on a Windows host with Hyper-V.\n#>\n"
SCRIPT_HEAD = HEADER + "[CmdletBinding()]\nparam([string]$Name = 'x')\nSet-StrictMode -Version Latest\n$ErrorActionPreference = 'Stop'\n"
MODULE_HEAD = HEADER + "Set-StrictMode -Version Latest\n$ErrorActionPreference = 'Stop'\n"


def script(body: str) -> tuple[str, int]:
    """A valid script header followed by body; returns (text, line of body's first line)."""
    return SCRIPT_HEAD + body, SCRIPT_HEAD.count("\n") + 1


def problems_of(text: str, module: bool = False, imported=None):
    problems, _, _ = check_unit(Unit("t.ps1", text, is_module=module, imported=imported or {}))
    return problems


def assert_reported(problems, line, fragment):
    listing = "\n".join(str(p) for p in problems) or "(no problems)"
    assert any(p.line == line and fragment in p.message for p in problems), (
        f"expected line {line}: ...{fragment}...; checker said:\n{listing}")


# --- what the scanner accepts -------------------------------------------------

def test_minimal_script_is_clean():
    text, _ = script("Write-Output $Name\n")
    assert problems_of(text) == []


@pytest.mark.parametrize("body", [
    "# a comment with { and ( and \"\n",
    "<# a block comment with { ( [ ' \" #>\n",
    "$a = 'a string with } and ) and \"'\n",
    "$a = \"a string with } and ) and '' and `\" \"\n",
    "$a = 'it''s fine'\n",
    "$a = \"say \"\"hi\"\"\"\n",
    "$a = \"nested $(Join-Path 'a' \"b(\") here\"\n",
    "$a = \"${env:ProgramFiles(x86)} and $($Name.Length)\"\n",
    "$a = @\"\nhere { ( \" ' text\n\"@\n",
    "$a = @'\nhere } ) text\n'@\n",
    "Write-Output `\n    $Name\n",
    "$u = 'x'#not a comment, part of the token\n",
])
def test_scanner_accepts_balanced_constructs(body):
    text, _ = script(body)
    assert problems_of(text) == []


def test_code_mask_keeps_subexpressions_and_blanks_strings():
    sc = scan("$a = \"text $(Get-Date) more\" # c\n")
    assert "Get-Date" in sc.code
    assert "text" not in sc.code and "more" not in sc.code and " c" not in sc.code.split("\"")[-1]
    assert sc.strings and sc.comments


# --- proof that it fails: synthetic scripts -----------------------------------

BROKEN = [
    ("if ($Name) {\n    Write-Output 1\n", 0, "'{' is never closed"),
    ("Write-Output 1\n}\n", 1, "'}' closes nothing"),
    ("$a = @(1, 2}\n", 0, "'}' closes '(' opened at line"),
    ("$a = \"never closed\nWrite-Output 1\n", 0, "double-quoted string is never closed"),
    ("$a = 'never closed\nWrite-Output 1\n", 0, "single-quoted string is never closed"),
    ("$a = @\"\ntext\n  \"@\nWrite-Output 1\n", 0, "here-string @\" is never closed"),
    ("$a = @' trailing\ntext\n'@\n", 0, "here-string header @' must end its line"),
    ("<# unclosed block comment\nWrite-Output 1\n", 0, "block comment '<#' is never closed"),
    ("Write-Output 1\nGet-WfpMonNothing -Session $s\n", 1,
     "Get-WfpMonNothing is neither defined here nor in the module, nor a known cmdlet"),
    ("$x = \"value: $(Get-Fooo)\"\n", 0, "Get-Fooo is neither defined here"),
    ("Write-Output 1\nsc stop wfpmon\n", 1, "'sc' is PowerShell's alias of Set-Content"),
    ("$r = & 'fltmcx.exe' load\n", 0, "fltmcx.exe: not a known program"),
    ("function Fetch-Thing {\n    [CmdletBinding()]\n    param()\n}\n", 0, "'Fetch' is not an approved verb"),
    ("function Get-Thing {\n    param()\n}\n", 0, "function Get-Thing has no [CmdletBinding()]"),
    ("function Get-Thing {\n    [CmdletBinding()]\n    Write-Output 1\n}\n", 0, "function Get-Thing has no param() block"),
    ("function Get-Thing {\n    [CmdletBinding()]\n    param([string]$Path)\n}\nGet-Thing -Pth 'x'\n", 4,
     "Get-Thing has no parameter -Pth"),
    ("Write-Output \u201cquoted\u201d\n", 0, "non-ASCII character U+201C"),
]


@pytest.mark.parametrize(("body", "offset", "fragment"), BROKEN, ids=[b[2][:40] for b in BROKEN])
def test_broken_snippet_is_reported_at_its_line(body, offset, fragment):
    text, first = script(body)
    assert_reported(problems_of(text), first + offset, fragment)


def test_continued_call_arguments_are_checked():
    body = ("function Get-Thing {\n    [CmdletBinding()]\n    param([string]$Path)\n}\n"
            "Get-Thing `\n    -Path 'a' `\n    -Paht 'b'\n")
    text, first = script(body)
    assert_reported(problems_of(text), first + 6, "Get-Thing has no parameter -Paht")


def test_common_parameters_are_allowed_on_cmdletbinding_functions():
    body = ("function Get-Thing {\n    [CmdletBinding()]\n    param([string]$Path)\n}\n"
            "Get-Thing -Path 'a' -Verbose -ErrorAction Stop\n")
    text, _ = script(body)
    assert problems_of(text) == []


def test_script_without_the_required_preamble():
    text = HEADER + "param([string]$Name)\nWrite-Output $Name\n"
    problems = problems_of(text)
    assert_reported(problems, 1, "does not start with [CmdletBinding()] param(...)")
    assert_reported(problems, 1, "no 'Set-StrictMode -Version Latest'")
    assert_reported(problems, 1, "no \"$ErrorActionPreference = 'Stop'\"")


def test_script_without_the_windows_notice():
    text = "[CmdletBinding()]\nparam()\nSet-StrictMode -Version Latest\n$ErrorActionPreference = 'Stop'\n"
    assert_reported(problems_of(text), 1, "runs only on a Windows host with Hyper-V")


def test_module_exports_must_match_definitions():
    text = MODULE_HEAD + (
        "function Get-One {\n    [CmdletBinding()]\n    param()\n}\n"
        "function Get-Two {\n    [CmdletBinding()]\n    param()\n}\n"
        "Export-ModuleMember -Function @(\n    'Get-One',\n    'Get-Three'\n)\n")
    first = MODULE_HEAD.count("\n") + 1
    problems = problems_of(text, module=True)
    assert_reported(problems, first + 4, "function Get-Two is not exported")
    assert_reported(problems, first + 8, "Export-ModuleMember names get-three, which is not defined")


def test_script_calling_an_unexported_module_function():
    module = MODULE_HEAD + (
        "function Get-One {\n    [CmdletBinding()]\n    param()\n}\n"
        "function Get-Hidden {\n    [CmdletBinding()]\n    param()\n}\n"
        "Export-ModuleMember -Function @(\n    'Get-One'\n)\n")
    text, first = script("Get-One\nGet-Hidden\n")
    results = check_kit(module, {"s.ps1": text})
    assert_reported(results["s.ps1"], first + 1, "Get-Hidden is defined in the module but not exported")
    assert not any(p.line == first for p in results["s.ps1"])


# --- proof that it fails: one edit to the real kit ------------------------------

def kit():
    return psstatic.load_kit(KIT)


def mutate(text: str, old: str, new: str) -> tuple[str, int]:
    assert text.count(old) >= 1, f"{old!r} not in the kit"
    at = text.index(old)
    return text[:at] + new + text[at + len(old):], text.count("\n", 0, at) + 1


def test_real_kit_with_a_dropped_brace_fails():
    module, scripts = kit()
    text = scripts["Invoke-WfpMonVmTest.ps1"]
    broken, line = mutate(text, "    if ($RevertFirst) {", "    if ($RevertFirst)")
    problems = check_kit(module, {"Invoke-WfpMonVmTest.ps1": broken})["Invoke-WfpMonVmTest.ps1"]
    assert any("closes" in p.message or "never closed" in p.message for p in problems), problems


def test_real_kit_with_a_renamed_function_fails():
    module, scripts = kit()
    broken, line = mutate(scripts["Prepare-TestVM.ps1"], "Enable-WfpMonVerifier -Session", "Enable-WfpMonVerifiers -Session")
    problems = check_kit(module, {"Prepare-TestVM.ps1": broken})["Prepare-TestVM.ps1"]
    assert_reported(problems, line, "Enable-WfpMonVerifiers is neither defined here nor in the module")


def test_real_kit_with_a_misspelt_parameter_fails():
    module, scripts = kit()
    broken, line = mutate(scripts["Invoke-WfpMonVmTest.ps1"], "Start-WfpMonDriver -Session $session",
                          "Start-WfpMonDriver -Sesion $session")
    problems = check_kit(module, {"Invoke-WfpMonVmTest.ps1": broken})["Invoke-WfpMonVmTest.ps1"]
    assert_reported(problems, line, "Start-WfpMonDriver has no parameter -Sesion")


def test_real_module_with_an_unterminated_string_fails():
    # A lost quote re-pairs the quotes after it, so (as in PowerShell's own
    # parser) the error shows where the pairing finally breaks, not
    # necessarily on the edited line: here, the table that holds the line.
    module, _ = kit()
    broken, line = mutate(module, "    ServiceName     = 'wfpmon'", "    ServiceName     = 'wfpmon")
    problems = check_kit(broken, {})["WfpMonVm.psm1"]
    assert problems, "an unterminated string went unnoticed"
    assert_reported(problems, line - 1, "'{' is never closed")


def test_real_module_with_sc_instead_of_sc_exe_fails():
    module, _ = kit()
    broken, line = mutate(module,
                          "    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'sc.exe' -ArgumentList @('start', $script:WfpMon.ServiceName) | Out-Null",
                          "    sc start wfpmon | Out-Null")
    assert_reported(check_kit(broken, {})["WfpMonVm.psm1"], line, "'sc' is PowerShell's alias of Set-Content")


# --- time-outs: what was waited for, what was seen last, what to check next ------

HELPER_DEF = ("function New-WfpMonTimeoutMessage {\n    [CmdletBinding()]\n"
              "    param([string]$WaitedFor, [int]$Seconds, [string]$LastSeen, [string]$Next)\n}\n")
WAIT_HEAD = ("function Wait-Thing {\n    [CmdletBinding()]\n    param([int]$TimeoutSeconds = 5)\n"
             "    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)\n    while ($true) {\n"
             "        if ((Get-Date) -gt $deadline) {\n")
WAIT_TAIL = "        }\n        Start-Sleep -Seconds 1\n    }\n}\n"


def wait_script(throw_line: str) -> tuple[str, int, int]:
    """A script with a waiting function whose give-up line is throw_line;
    returns (text, line of the function, line of throw_line)."""
    text, first = script(HELPER_DEF + WAIT_HEAD + throw_line + "\n" + WAIT_TAIL)
    function_line = first + HELPER_DEF.count("\n")
    return text, function_line, function_line + WAIT_HEAD.count("\n")


def test_a_complete_timeout_report_is_clean():
    text, _, _ = wait_script("            throw (New-WfpMonTimeoutMessage -WaitedFor 'x' -Seconds $TimeoutSeconds "
                             "-LastSeen 'y' -Next 'z')")
    assert problems_of(text) == []


def test_a_hand_written_timeout_is_reported():
    text, function_line, line = wait_script('            throw "thing did not happen within $TimeoutSeconds s"')
    problems = problems_of(text)
    assert_reported(problems, function_line, "function Wait-Thing waits with a time limit but does not report")
    assert_reported(problems, line, "hand-written time-out message in Wait-Thing")


@pytest.mark.parametrize("part", psstatic.TIMEOUT_PARTS)
def test_a_timeout_report_without_one_part_is_reported(part):
    args = {"WaitedFor": "'x'", "Seconds": "$TimeoutSeconds", "LastSeen": "'y'", "Next": "'z'"}
    del args[part]
    call = " ".join(f"-{k} {v}" for k, v in args.items())
    text, _, line = wait_script(f"            throw (New-WfpMonTimeoutMessage {call})")
    assert_reported(problems_of(text), line, f"New-WfpMonTimeoutMessage in Wait-Thing lacks -{part}")


def test_a_timeout_report_that_is_not_thrown_is_reported():
    text, _, line = wait_script("            Write-Warning (New-WfpMonTimeoutMessage -WaitedFor 'x' -Seconds 1 "
                                "-LastSeen 'y' -Next 'z')")
    assert_reported(problems_of(text), line, "New-WfpMonTimeoutMessage in Wait-Thing is not thrown")


def test_wait_job_with_a_timeout_counts_as_a_wait():
    body = ("function Stop-Thing {\n    [CmdletBinding()]\n    param($Job)\n"
            "    if (-not (Wait-Job -Job $Job -Timeout 30)) { throw 'job did not stop' }\n}\n")
    text, first = script(body)
    assert_reported(problems_of(text), first, "function Stop-Thing waits with a time limit")


def test_real_module_with_the_old_driver_state_message_fails():
    module, _ = kit()
    at = module.index("            throw (New-WfpMonTimeoutMessage -WaitedFor \"service $name to be $State\"")
    end = module.index("\n", at)
    broken = module[:at] + ('            throw "service $name did not reach $State within $TimeoutSeconds s"'
                            ) + module[end:]
    line = module.count("\n", 0, at) + 1
    problems = check_kit(broken, {})["WfpMonVm.psm1"]
    assert_reported(problems, line, "hand-written time-out message in Wait-WfpMonDriverState")
    function_line = module.count("\n", 0, module.index("function Wait-WfpMonDriverState")) + 1
    assert_reported(problems, function_line, "Wait-WfpMonDriverState waits with a time limit but does not report")


def test_real_module_with_a_timeout_report_missing_last_seen_fails():
    module, _ = kit()
    broken, line = mutate(module, "-Seconds $TimeoutSeconds -LastSeen $probe.Seen `", "-Seconds $TimeoutSeconds `")
    assert_reported(check_kit(broken, {})["WfpMonVm.psm1"], line,
                    "New-WfpMonTimeoutMessage in Wait-WfpMonTraceFile lacks -LastSeen")
