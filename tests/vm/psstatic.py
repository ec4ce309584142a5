"""A static check of PowerShell scripts, for a machine without PowerShell.

PowerShell is not installable here (Debian has no package; PyPI has none that
ships it; the npm `pwsh` package downloads it from outside the registries at
install time), so the kit in scripts/vm is checked at the level of tokens:

* a tokenizer that knows PowerShell's comments (`#`, `<# #>`), strings
  ('...' with '', "..." with `-escapes, "" and $( ) subexpressions), here-strings
  (@" / @' headers, terminator at column 0), braced variables `${...}` and
  backtick escapes, and checks that ( ) { } [ ] balance outside them;
* ASCII only (no smart quotes, which PowerShell would also take as quotes);
* every Verb-Noun command called is defined in the file or its module, or is a
  known cmdlet; every *.exe named is a known program; `sc` is never used as a
  command (in PowerShell it is Set-Content);
* every function uses an approved verb, has [CmdletBinding()] and a param()
  block; named parameters passed to the kit's own functions exist;
* the module exports exactly what it defines;
* scripts say they run only on a Windows host with Hyper-V, declare
  [CmdletBinding()] param(...), Set-StrictMode -Version Latest and
  $ErrorActionPreference = 'Stop';
* every function that waits with a time limit (a `(Get-Date).AddSeconds(...)`
  deadline, `Wait-Job -Timeout`) gives up with
  `throw (New-WfpMonTimeoutMessage -WaitedFor ... -Seconds ... -LastSeen ...
  -Next ...)`: what it waited for, what it saw last, the next thing to check;
  a hand-written "within N s" / "timed out" message is an error.

Problems carry a 1-based line number. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Get-Verb: the approved verbs (all groups).
APPROVED_VERBS = frozenset(v.lower() for v in """
Add Clear Close Copy Enter Exit Find Format Get Hide Join Lock Move New Open Optimize Pop Push
Redo Remove Rename Reset Resize Search Select Set Show Skip Split Step Switch Undo Unlock Watch
Connect Disconnect Read Receive Send Write
Backup Checkpoint Compare Compress Convert ConvertFrom ConvertTo Dismount Edit Expand Export
Group Import Initialize Limit Merge Mount Out Publish Restore Save Sync Unpublish Update
Debug Measure Ping Repair Resolve Test Trace
Approve Assert Build Complete Confirm Deny Deploy Disable Enable Install Invoke Register Request
Restart Resume Start Stop Submit Suspend Uninstall Unregister Wait
Block Grant Protect Revoke Unblock Unprotect
Use
""".split())

# Cmdlets of Windows PowerShell 5.1 / PowerShell 7 modules that ship with
# Windows (Core, Management, Utility, Security, CimCmdlets, Hyper-V, Dism, PKI,
# NetTCPIP, BitLocker). A curated list of real names, not a pattern: a typo is an error.
KNOWN_CMDLETS = frozenset(c.lower() for c in """
Add-Content Add-Member Add-Type Clear-Content Clear-Host Clear-Item Clear-Variable Compare-Object
ConvertFrom-Csv ConvertFrom-Json ConvertFrom-StringData ConvertTo-Csv ConvertTo-Html ConvertTo-Json
ConvertTo-SecureString ConvertFrom-SecureString Copy-Item Copy-ItemProperty Export-Clixml Export-Csv
Export-ModuleMember ForEach-Object Format-List Format-Table Get-Acl Get-ChildItem Get-Command Get-Content
Get-Credential Get-Date Get-Host Get-Item Get-ItemProperty Get-Job Get-Location Get-Member Get-Module
Get-Process Get-PSSession Get-Random Get-Service Get-Variable Get-Verb Get-WinEvent Group-Object
Import-Clixml Import-Csv Import-Module Invoke-Command Invoke-Expression Invoke-RestMethod Invoke-WebRequest
Join-Path Measure-Object Move-Item New-Item New-ItemProperty New-Object New-PSSession New-TimeSpan
New-Variable Out-File Out-Host Out-Null Out-String Read-Host Receive-Job Register-ObjectEvent
Remove-Item Remove-ItemProperty Remove-Job Remove-Module Remove-PSSession Remove-Variable Rename-Item
Resolve-Path Restart-Computer Restart-Service Select-Object Select-String Set-Content Set-Item
Set-ItemProperty Set-Location Set-StrictMode Set-Variable Sort-Object Split-Path Start-Job
Start-Process Start-Service Start-Sleep Stop-Computer Stop-Job Stop-Process Stop-Service Tee-Object
Test-Connection Test-Path Wait-Job Wait-Process Where-Object Write-Debug Write-Error Write-Host
Write-Information Write-Output Write-Progress Write-Verbose Write-Warning
Get-CimInstance Invoke-CimMethod New-CimSession Remove-CimSession
Import-Certificate Export-Certificate Get-PfxCertificate
Get-WindowsDriver Add-WindowsDriver Remove-WindowsDriver
Test-NetConnection Get-NetIPAddress
Get-VM Start-VM Stop-VM Restart-VM Suspend-VM Resume-VM Wait-VM Checkpoint-VM
Get-VMSnapshot Restore-VMSnapshot Remove-VMSnapshot Get-VMCheckpoint Restore-VMCheckpoint
Remove-VMCheckpoint Get-VMFirmware Set-VMFirmware Get-VMIntegrationService Enable-VMIntegrationService
Copy-VMFile Set-VM
Get-BitLockerVolume Suspend-BitLocker Resume-BitLocker
""".split())

KNOWN_EXECUTABLES = frozenset({
    "sc.exe", "pnputil.exe", "bcdedit.exe", "verifier.exe", "netsh.exe", "wfpmonctl.exe",
    "shutdown.exe", "cmd.exe", "powershell.exe", "pwsh.exe", "logman.exe", "tracerpt.exe",
    "vmconnect.exe", "manage-bde.exe",
})

COMMON_PARAMETERS = frozenset(p.lower() for p in """
Verbose Debug ErrorAction WarningAction InformationAction ErrorVariable WarningVariable
InformationVariable OutVariable OutBuffer PipelineVariable ProgressAction
""".split())

OPENERS = {"(": ")", "{": "}", "[": "]"}
CLOSERS = {v: k for k, v in OPENERS.items()}


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Scan:
    """The result of tokenizing: `code` is the text with comments and string
    contents blanked (newlines kept, subexpressions of strings kept), so that
    line numbers and columns still match the source."""

    text: str
    code: str
    strings: list[tuple[int, str]]  # (line, content) of every string literal / here-string
    comments: list[tuple[int, str]]
    problems: list[Problem] = field(default_factory=list)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.code = list(text)
        self.strings: list[tuple[int, str]] = []
        self.comments: list[tuple[int, str]] = []
        self.problems: list[Problem] = []

    def line_of(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def blank(self, start: int, end: int) -> None:
        for i in range(start, min(end, self.n)):
            if self.code[i] != "\n":
                self.code[i] = " "

    def at_token_start(self, pos: int) -> bool:
        if pos == 0:
            return True
        return self.text[pos - 1] in " \t\r\n;(){}|,=&"

    def scan_code(self, pos: int, stop_at_paren: bool) -> int:
        """Scans code from pos. With stop_at_paren, stops after the ')' that
        closes a subexpression opened just before pos. Returns the position
        after what was scanned."""
        stack: list[tuple[str, int]] = []
        t = self.text
        while pos < self.n:
            ch = t[pos]
            if ch == "<" and t.startswith("<#", pos):
                end = t.find("#>", pos + 2)
                if end == -1:
                    self.problems.append(Problem(self.line_of(pos), "block comment '<#' is never closed"))
                    self.blank(pos, self.n)
                    return self.n
                self.comments.append((self.line_of(pos), t[pos + 2:end]))
                self.blank(pos, end + 2)
                pos = end + 2
            elif ch == "#" and self.at_token_start(pos):
                end = t.find("\n", pos)
                end = self.n if end == -1 else end
                self.comments.append((self.line_of(pos), t[pos + 1:end]))
                self.blank(pos, end)
                pos = end
            elif ch == "@" and pos + 1 < self.n and t[pos + 1] in "\"'":
                pos = self.scan_here_string(pos)
            elif ch == "'":
                pos = self.scan_single(pos)
            elif ch == '"':
                pos = self.scan_double(pos)
            elif ch == "`":
                pos += 2  # escaped character (a newline: line continuation)
            elif ch == "$" and t.startswith("${", pos):
                end = t.find("}", pos + 2)
                if end == -1:
                    self.problems.append(Problem(self.line_of(pos), "braced variable '${' is never closed"))
                    return self.n
                pos = end + 1
            elif ch in OPENERS:
                stack.append((ch, pos))
                pos += 1
            elif ch in CLOSERS:
                if not stack:
                    if stop_at_paren and ch == ")":
                        return pos + 1
                    self.problems.append(Problem(self.line_of(pos), f"'{ch}' closes nothing"))
                    pos += 1
                    continue
                opener, at = stack.pop()
                if OPENERS[opener] != ch:
                    self.problems.append(
                        Problem(self.line_of(pos), f"'{ch}' closes '{opener}' opened at line {self.line_of(at)}")
                    )
                pos += 1
            else:
                pos += 1
        for opener, at in stack:
            self.problems.append(Problem(self.line_of(at), f"'{opener}' is never closed"))
        if stop_at_paren:
            return self.n
        return pos

    def scan_single(self, start: int) -> int:
        t = self.text
        pos = start + 1
        while pos < self.n:
            if t[pos] == "'":
                if pos + 1 < self.n and t[pos + 1] == "'":
                    pos += 2
                    continue
                self.strings.append((self.line_of(start), t[start + 1:pos]))
                self.blank(start + 1, pos)
                return pos + 1
            pos += 1
        self.problems.append(Problem(self.line_of(start), "single-quoted string is never closed"))
        self.blank(start + 1, self.n)
        return self.n

    def scan_double(self, start: int) -> int:
        t = self.text
        pos = start + 1
        content: list[str] = []
        while pos < self.n:
            ch = t[pos]
            if ch == "`":
                content.append(t[pos:pos + 2])
                self.blank(pos, pos + 2)
                pos += 2
            elif ch == '"':
                if pos + 1 < self.n and t[pos + 1] == '"':
                    content.append('"')
                    self.blank(pos, pos + 2)
                    pos += 2
                    continue
                self.strings.append((self.line_of(start), "".join(content)))
                return pos + 1
            elif ch == "$" and t.startswith("$(", pos):
                # A subexpression is code (it may hold quotes of its own).
                end = self.scan_code(pos + 2, stop_at_paren=True)
                content.append(t[pos:end])
                pos = end
            elif ch == "$" and t.startswith("${", pos):
                end = t.find("}", pos)
                end = self.n if end == -1 else end + 1
                content.append(t[pos:end])
                self.blank(pos, end)
                pos = end
            else:
                content.append(ch)
                self.blank(pos, pos + 1)
                pos += 1
        self.problems.append(Problem(self.line_of(start), "double-quoted string is never closed"))
        return self.n

    def scan_here_string(self, start: int) -> int:
        t = self.text
        quote = t[start + 1]
        eol = t.find("\n", start)
        eol = self.n if eol == -1 else eol
        header_rest = t[start + 2:eol].strip(" \t\r")
        if header_rest:
            self.problems.append(
                Problem(self.line_of(start), f"here-string header @{quote} must end its line")
            )
            return start + 2
        terminator = re.compile("^" + re.escape(quote + "@"), re.M)
        m = terminator.search(t, eol + 1)
        if m is None:
            self.problems.append(
                Problem(self.line_of(start),
                        f"here-string @{quote} is never closed ({quote}@ must start a line, in column 1)")
            )
            self.blank(start + 2, self.n)
            return self.n
        self.strings.append((self.line_of(start), t[eol + 1:m.start()]))
        self.blank(start + 2, m.start())
        return m.end()


def scan(text: str) -> Scan:
    s = _Scanner(text)
    for i, ch in enumerate(text):
        if ord(ch) > 0x7E and ch not in "\r\n\t":
            s.problems.append(Problem(s.line_of(i), f"non-ASCII character U+{ord(ch):04X} (keep the scripts ASCII)"))
            break
    s.scan_code(0, stop_at_paren=False)
    return Scan(text, "".join(s.code), s.strings, s.comments, s.problems)


# ---------------------------------------------------------------------------
# Structure: functions, their parameters, calls
# ---------------------------------------------------------------------------

_FUNCTION = re.compile(r"(?im)^[ \t]*function[ \t]+([A-Za-z][\w]*-[A-Za-z][\w]*)[ \t]*\{")
_VERB_NOUN = re.compile(r"(?<![\w$.\-\\:])([A-Za-z]+-[A-Za-z][A-Za-z0-9]*)(?![\w\-])")
_EXE = re.compile(r"(?i)(?<![\w.\\-])([A-Za-z0-9_\-]+\.exe)\b")


def _matching(code: str, open_pos: int) -> int:
    """Index of the bracket closing the one at open_pos in blanked code, or -1."""
    depth = 0
    for i in range(open_pos, len(code)):
        ch = code[i]
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth -= 1
            if depth == 0:
                return i
    return -1


@dataclass
class Function:
    name: str
    line: int
    body_start: int  # index of '{'
    body_end: int  # index of matching '}'
    cmdletbinding: bool
    params: set[str] | None  # lower-case names, None if no param block


def _param_names(code: str, open_paren: int, close_paren: int) -> set[str]:
    names: set[str] = set()
    depth = 0
    last = "("
    i = open_paren
    while i <= close_paren:
        ch = code[i]
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth -= 1
        elif ch == "$" and depth == 1 and last in "](,":
            m = re.match(r"\$([A-Za-z_]\w*)", code[i:])
            if m:
                names.add(m.group(1).lower())
                i += len(m.group(0))
                last = "$"
                continue
        if not ch.isspace():
            last = ch
        i += 1
    return names


def _find_param_block(code: str, start: int, end: int) -> tuple[int, int] | None:
    """The param( ... ) that opens a body: only attributes, comments and
    whitespace may precede it."""
    # Pattern.match anchors at `start` (\A would only match at index 0).
    m = re.compile(r"(?is)\s*((?:\[[^\]]*(?:\([^)]*\))?[^\]]*\]\s*)*)param\s*\(").match(code, start, end)
    if m is None:
        return None
    open_paren = m.end() - 1
    return open_paren, _matching(code, open_paren)


def functions_of(sc: Scan) -> list[Function]:
    out = []
    code = sc.code
    for m in _FUNCTION.finditer(code):
        brace = m.end() - 1
        close = _matching(code, brace)
        if close == -1:
            continue  # reported by the scanner
        head = code[brace + 1:close]
        block = _find_param_block(code, brace + 1, close)
        params = _param_names(code, *block) if block else None
        binding = re.match(r"\s*\[CmdletBinding\([^)]*\)\]", head, re.I) is not None
        out.append(Function(m.group(1), sc.text.count("\n", 0, m.start()) + 1, brace, close, binding, params))
    return out


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def in_command_position(code: str, pos: int) -> bool:
    """Whether a word starting at pos is where PowerShell expects a command:
    at the start of a statement (a new line that does not continue the last
    one), or after ; | { ( = & or the keywords return / throw. Elsewhere a
    Verb-Noun word is an argument (say, `Import-Module Hyper-V`)."""
    i = pos - 1
    while i >= 0:
        ch = code[i]
        if ch in " \t\r":
            i -= 1
            continue
        if ch == "\n":
            j = i - 1
            while j >= 0 and code[j] in " \t\r":
                j -= 1
            if j >= 0 and code[j] == "`":  # line continuation: keep looking back
                i = j - 1
                continue
            return True
        if ch in ";|{(=&":
            return True
        word = re.search(r"([A-Za-z]+)$", code[max(0, i - 10):i + 1])
        return word is not None and word.group(1).lower() in ("return", "throw")
    return True


def commands_called(sc: Scan) -> list[tuple[int, str, int]]:
    """(line, Verb-Noun, position) of every Verb-Noun command in code (in
    command position), except function definitions."""
    defined_at = {m.start(1) for m in _FUNCTION.finditer(sc.code)}
    calls = []
    for m in _VERB_NOUN.finditer(sc.code):
        if m.start(1) in defined_at or not in_command_position(sc.code, m.start(1)):
            continue
        calls.append((_line(sc.text, m.start(1)), m.group(1), m.end(1)))
    return calls


def named_arguments(code: str, pos: int) -> list[tuple[int, str]]:
    """-Name arguments of the command whose name ends at pos: up to the end
    of its logical line, a pipe, ';', or a bracket it did not open."""
    out = []
    depth = 0
    i = pos
    n = len(code)
    while i < n:
        ch = code[i]
        if ch == "`" and i + 1 < n and code[i + 1] in "\r\n":
            i += 2
            continue
        if ch in "\r\n" or (depth == 0 and ch in "|;"):
            break
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            if depth == 0:
                break
            depth -= 1
        elif ch == "-" and depth == 0 and (i == 0 or code[i - 1] in " \t"):
            m = re.match(r"-([A-Za-z]\w*)", code[i:])
            if m:
                out.append((i, m.group(1)))
                i += len(m.group(0))
                continue
        i += 1
    return out


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


@dataclass
class Unit:
    """One file to check, with the functions it may call besides cmdlets."""

    path: str
    text: str
    is_module: bool
    imported: dict[str, Function] = field(default_factory=dict)  # from the module (exported only)
    exported: set[str] | None = None


def exported_functions(sc: Scan) -> tuple[set[str], int] | None:
    m = re.search(r"(?i)Export-ModuleMember\s+-Function\s+@\(", sc.code)
    if m is None:
        return None
    close = _matching(sc.code, m.end() - 1)
    names = {content for line, content in sc.strings
             if m.start() <= _offset_of_line(sc.text, line) <= close}
    return {n.lower() for n in names}, _line(sc.text, m.start())


def _offset_of_line(text: str, line: int) -> int:
    pos = 0
    for _ in range(line - 1):
        pos = text.index("\n", pos) + 1
    return pos


TIMEOUT_HELPER = "New-WfpMonTimeoutMessage"
TIMEOUT_PARTS = ("WaitedFor", "Seconds", "LastSeen", "Next")
_TIMED_WAIT = re.compile(r"(?i)\(Get-Date\)\.AddSeconds\(|\bWait-Job\b[^\n]*-Timeout\b")
_HAND_WRITTEN_TIMEOUT = re.compile(r"(?i)\bwithin \$\w+ s\b|\btimed out\b")


def timeout_problems(sc: Scan, funcs: list[Function]) -> list[Problem]:
    """Every function that waits with a time limit reports giving up through
    New-WfpMonTimeoutMessage, thrown, with all of its parts."""
    problems: list[Problem] = []
    helper = TIMEOUT_HELPER.lower()
    calls = [(line, end) for line, name, end in commands_called(sc) if name.lower() == helper]
    line_starts = [0] + [m.end() for m in re.finditer("\n", sc.text)]
    strings = [(line, line_starts[line - 1], content) for line, content in sc.strings
               if _HAND_WRITTEN_TIMEOUT.search(content)]
    for f in funcs:
        if f.name.lower() == helper:
            continue
        inside = [(line, end) for line, end in calls if f.body_start < end < f.body_end]
        if _TIMED_WAIT.search(sc.code, f.body_start, f.body_end) and not inside:
            problems.append(Problem(f.line, f"function {f.name} waits with a time limit but does not report a "
                                            f"time-out with {TIMEOUT_HELPER} (what it waited for, what it saw "
                                            "last, what to check next)"))
        for line, end in inside:
            given = {arg.lower() for _, arg in named_arguments(sc.code, end)}
            for part in TIMEOUT_PARTS:
                if part.lower() not in given:
                    problems.append(Problem(line, f"{TIMEOUT_HELPER} in {f.name} lacks -{part}"))
            start = end - len(TIMEOUT_HELPER)
            if not re.search(r"(?i)\bthrow\s*\(\s*$", sc.code[max(f.body_start, start - 40):start]):
                problems.append(Problem(line, f"{TIMEOUT_HELPER} in {f.name} is not thrown: "
                                              f"use throw ({TIMEOUT_HELPER} ...)"))
        for line, at, _content in strings:
            if f.body_start <= at <= f.body_end:
                problems.append(Problem(line, f"hand-written time-out message in {f.name}: "
                                              f"use {TIMEOUT_HELPER}"))
    return problems


def check_unit(unit: Unit) -> tuple[list[Problem], Scan, list[Function]]:
    sc = scan(unit.text)
    problems = list(sc.problems)
    funcs = functions_of(sc)
    local = {f.name.lower(): f for f in funcs}

    for f in funcs:
        verb = f.name.split("-", 1)[0].lower()
        if verb not in APPROVED_VERBS:
            problems.append(Problem(f.line, f"function {f.name}: '{f.name.split('-')[0]}' is not an approved verb (Get-Verb)"))
        if not f.cmdletbinding:
            problems.append(Problem(f.line, f"function {f.name} has no [CmdletBinding()]"))
        if f.params is None:
            problems.append(Problem(f.line, f"function {f.name} has no param() block"))

    callable_ = dict(unit.imported)
    callable_.update(local)
    for line, name, end in commands_called(sc):
        key = name.lower()
        if key in callable_:
            target = callable_[key]
            if target.params is not None:
                for at, arg in named_arguments(sc.code, end):
                    a = arg.lower()
                    if a not in target.params and not (target.cmdletbinding and a in COMMON_PARAMETERS):
                        problems.append(Problem(_line(sc.text, at), f"{name} has no parameter -{arg}"))
        elif key not in KNOWN_CMDLETS:
            problems.append(Problem(line, f"{name} is neither defined here nor in the module, nor a known cmdlet"))

    # *.exe names in code and in strings (not in comments)
    for m in _EXE.finditer(sc.code):
        if m.group(1).lower() not in KNOWN_EXECUTABLES:
            problems.append(Problem(_line(sc.text, m.start(1)), f"{m.group(1)}: not a known program"))
    for line, content in sc.strings:
        for m in _EXE.finditer(content):
            if m.group(1).lower() not in KNOWN_EXECUTABLES:
                problems.append(Problem(line, f"{m.group(1)}: not a known program"))

    problems.extend(timeout_problems(sc, funcs))

    # `sc` in command position is Set-Content, not the service control program.
    for m in re.finditer(r"(?im)(?:^|[|;{(&])[ \t]*(sc)(?=[ \t]|$)", sc.code):
        problems.append(Problem(_line(sc.text, m.start(1)), "'sc' is PowerShell's alias of Set-Content: call sc.exe"))

    if not re.search(r"(?im)^\s*Set-StrictMode\s+-Version\s+Latest\b", sc.code):
        problems.append(Problem(1, "no 'Set-StrictMode -Version Latest'"))
    if not re.search(r"(?im)^\s*\$ErrorActionPreference\s*=\s*'Stop'", unit.text):
        problems.append(Problem(1, "no \"$ErrorActionPreference = 'Stop'\""))
    head = "\n".join(unit.text.splitlines()[:30])
    if not re.search(r"(?i)runs only on a windows host with hyper-v", head):
        problems.append(Problem(1, "the header does not say that it runs only on a Windows host with Hyper-V"))

    if unit.is_module:
        exported = exported_functions(sc)
        if exported is None:
            problems.append(Problem(1, "no Export-ModuleMember -Function @(...)"))
        else:
            names, line = exported
            for f in funcs:
                if f.name.lower() not in names:
                    problems.append(Problem(f.line, f"function {f.name} is not exported"))
            for n in sorted(names - set(local)):
                problems.append(Problem(line, f"Export-ModuleMember names {n}, which is not defined"))
    else:
        # Script level: [CmdletBinding()] param(...) before any other code.
        top = re.compile(r"(?is)\A\s*\[CmdletBinding\([^)]*\)\]\s*param\s*\(").match(sc.code)
        if top is None:
            problems.append(Problem(1, "the script does not start with [CmdletBinding()] param(...)"))
    return sorted(set(problems), key=lambda p: (p.line, p.message)), sc, funcs


def script_params(sc: Scan) -> set[str]:
    m = re.compile(r"(?is)\A\s*\[CmdletBinding\([^)]*\)\]\s*param\s*\(").match(sc.code)
    if m is None:
        return set()
    open_paren = m.end() - 1
    return _param_names(sc.code, open_paren, _matching(sc.code, open_paren))


def check_kit(module_text: str, scripts: dict[str, str], module_path: str = "WfpMonVm.psm1") -> dict[str, list[Problem]]:
    """Checks the module and the scripts that import it; problems by file."""
    results: dict[str, list[Problem]] = {}
    problems, _sc, funcs = check_unit(Unit(module_path, module_text, is_module=True))
    results[module_path] = problems
    msc = scan(module_text)
    exported = exported_functions(msc)
    names = exported[0] if exported else set()
    imported = {f.name.lower(): f for f in funcs if f.name.lower() in names}
    hidden = {f.name.lower(): f for f in funcs if f.name.lower() not in names}
    for path, text in scripts.items():
        problems, sc, _ = check_unit(Unit(path, text, is_module=False, imported=imported))
        for line, name, _end in commands_called(sc):
            if name.lower() in hidden:
                problems.append(Problem(line, f"{name} is defined in the module but not exported"))
        results[path] = sorted(set(problems), key=lambda p: (p.line, p.message))
    return results


def load_kit(directory: Path) -> tuple[str, dict[str, str]]:
    # Decoded leniently: a non-ASCII byte becomes U+FFFD, which scan() reports.
    module = (directory / "WfpMonVm.psm1").read_bytes().decode("utf-8", "replace")
    scripts = {p.name: p.read_bytes().decode("utf-8", "replace") for p in sorted(directory.glob("*.ps1"))}
    return module, scripts
