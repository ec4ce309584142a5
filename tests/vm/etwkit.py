"""Facts and checks for the driver's ETW (TraceLogging) provider as the
Hyper-V kit and the shipped WPR profile use it, for a machine without
Windows:

* the provider's name, keywords, levels and event names, read from
  src/trace.rs (the single source), and its GUID derived from the name with
  TraceLogging's algorithm (independently of the driver and of the kit);
* `wprp_problems`: a WPR profile (.wprp) checked against the rules of the WPR
  profile schema reference (learn.microsoft.com/windows-hardware/test/wpt/:
  WindowsPerformanceRecorder, Profiles, EventCollector, EventProvider,
  EventProviderId, Profile, "2. System and Event Provider Definitions",
  "3. Profile Definitions") and against the provider;
* `trace_stop_problems`: the test script starts the ETW session inside its
  main try block and stops it on every way out of that block.

Standard library only.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import psstatic

REPO = Path(__file__).resolve().parents[2]
TRACE_RS = REPO / "src" / "trace.rs"
WPRP = REPO / "scripts" / "windows" / "wfpmon.wprp"

# TraceLogging (and EventSource) hash a provider name into its GUID: SHA-1 over
# this namespace followed by the upper-cased name in UTF-16BE; the first 16
# bytes, with the version nibble of byte 7 set to 5, read as a little-endian
# GUID (the Windows GUID layout).
_NAMESPACE = bytes.fromhex("482C2DB2C39047C887F81A15BFC130FB")

# TraceLogging level names (`level(...)` in write_event!) and their values.
LEVELS = {"Critical": 1, "Error": 2, "Warning": 3, "Informational": 4, "Verbose": 5}


def tracelogging_guid(name: str) -> str:
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.upper().encode("utf-16-be")).digest()[:16])
    digest[7] = (digest[7] & 0x0F) | 0x50
    return str(uuid.UUID(bytes_le=bytes(digest)))


@dataclass(frozen=True)
class Event:
    name: str
    level: int
    keywords: frozenset[str]  # keyword constant names, e.g. {"LIFECYCLE", "ERRORS"}


@dataclass(frozen=True)
class Provider:
    name: str
    keywords: dict[str, int]  # constant name -> mask
    events: tuple[Event, ...]  # one per write_event! call (a name may repeat)

    @property
    def guid(self) -> str:
        return tracelogging_guid(self.name)

    @property
    def all_keywords(self) -> int:
        mask = 0
        for value in self.keywords.values():
            mask |= value
        return mask

    @property
    def max_level(self) -> int:
        return max(e.level for e in self.events)

    @property
    def event_names(self) -> set[str]:
        return {e.name for e in self.events}


_DEFINE = re.compile(r'define_provider!\(\s*PROVIDER\s*,\s*"([^"]+)"')
_KEYWORD = re.compile(r"pub const ([A-Z_]+): u64 = (0x[0-9a-fA-F]+);")
_WRITE = re.compile(r'write_event!\(\s*PROVIDER\s*,\s*"(\w+)"\s*,\s*level\((\w+)\)\s*,\s*keyword\(([^)]*)\)')


def load_provider(path: Path = TRACE_RS) -> Provider:
    text = path.read_text(encoding="utf-8")
    m = _DEFINE.search(text)
    if m is None:
        raise ValueError(f"{path}: no define_provider!(PROVIDER, \"...\")")
    keywords = {k: int(v, 16) for k, v in _KEYWORD.findall(text)}
    events = []
    for name, level, kw in _WRITE.findall(text):
        names = frozenset(re.findall(r"keyword::([A-Z_]+)", kw))
        events.append(Event(name, LEVELS[level], names))
    if not keywords or not events:
        raise ValueError(f"{path}: no keywords or no events found")
    return Provider(m.group(1), keywords, tuple(events))


# ---------------------------------------------------------------------------
# The WPR profile
# ---------------------------------------------------------------------------

_COLLECTORS = ("SystemCollector", "EventCollector", "HeapEventCollector")
_PROVIDERS = ("SystemProvider", "EventProvider", "HeapEventProvider")


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def wprp_problems(text: str, guid: str, keywords: int, level: int) -> list[str]:
    """What is wrong with a .wprp for collecting the provider `guid` with all
    of `keywords` at `level` (empty: nothing)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        return [f"not well-formed XML: {e}"]
    problems: list[str] = []
    if root.tag != "WindowsPerformanceRecorder":
        return [f"root element is <{root.tag}>, not <WindowsPerformanceRecorder>"]
    try:
        float(root.get("Version", ""))
    except ValueError:
        problems.append("WindowsPerformanceRecorder has no numeric Version (required)")
    if not root.get("Author"):
        problems.append("WindowsPerformanceRecorder has no Author (required)")
    profiles_elements = root.findall("Profiles")
    if len(profiles_elements) != 1:
        return problems + [f"{len(profiles_elements)} <Profiles> elements (exactly 1 required)"]
    profiles = profiles_elements[0]

    # Order: all collectors, then providers, then the profiles.
    rank = {**{t: 0 for t in _COLLECTORS}, **{t: 1 for t in _PROVIDERS}, "Profile": 2}
    last = 0
    for child in profiles:
        r = rank.get(child.tag)
        if r is None:
            problems.append(f"unexpected <{child.tag}> in <Profiles>")
            continue
        if r < last:
            problems.append(f"<{child.tag} Id=\"{child.get('Id')}\"> comes after a later kind "
                            "(order: collectors, providers, profiles)")
        last = max(last, r)

    # Ids: at least one character, no colon, no space.
    for element in root.iter():
        for attr in ("Id",) if not element.tag.endswith("Id") else ("Value",):
            value = element.get(attr)
            if value is not None and (not value or ":" in value or " " in value):
                problems.append(f"<{element.tag}> {attr}=\"{value}\" is not a valid Id (no colon or space)")

    collectors = {c.get("Id") for c in profiles.findall("EventCollector")}
    providers = {p.get("Id"): p for p in profiles.findall("EventProvider")}
    wanted = [p for p in providers.values() if (p.get("Name") or "").strip("{}").lower() == guid.lower()]
    if len(wanted) != 1:
        problems.append(f"{len(wanted)} <EventProvider> named {guid} (expected 1)")
    else:
        provider = wanted[0]
        if _int(provider.get("Level")) != level:
            problems.append(f"EventProvider Level is {provider.get('Level')}, expected {level}")
        mask = 0
        values = [k.get("Value") for k in provider.findall("Keywords/Keyword")]
        for value in values:
            v = _int(value)
            if v is None:
                problems.append(f"Keyword Value=\"{value}\" is not a number")
            else:
                mask |= v
        if mask != keywords:
            problems.append(f"EventProvider keywords add up to {mask:#x}, expected {keywords:#x}")

    profile_elements = profiles.findall("Profile")
    if not 1 <= len(profile_elements) <= 4:
        problems.append(f"{len(profile_elements)} profiles (1 to 4 allowed)")
    names = {p.get("Name") for p in profile_elements}
    if len(names) > 1:
        problems.append(f"profiles of one file must share a Name, found {sorted(map(str, names))}")
    combos = set()
    for p in profile_elements:
        pid, name, detail, mode = p.get("Id"), p.get("Name"), p.get("DetailLevel"), p.get("LoggingMode")
        if not p.get("Description"):
            problems.append(f"profile {pid} has no Description (required)")
        if detail not in ("Verbose", "Light"):
            problems.append(f"profile {pid}: DetailLevel {detail!r} is not Verbose or Light")
        if mode not in ("File", "Memory"):
            problems.append(f"profile {pid}: LoggingMode {mode!r} is not File or Memory")
        if pid != f"{name}.{detail}.{mode}":
            problems.append(f"profile Id {pid} is not <Name>.<DetailLevel>.<LoggingMode> ({name}.{detail}.{mode})")
        combos.add((detail, mode))
        refs = p.findall("Collectors/EventCollectorId")
        if not refs:
            problems.append(f"profile {pid} uses no event collector")
        used = set()
        for ref in refs:
            if ref.get("Value") not in collectors:
                problems.append(f"profile {pid} uses collector {ref.get('Value')}, which is not defined")
            for pref in ref.findall("EventProviders/EventProviderId"):
                if pref.get("Value") not in providers:
                    problems.append(f"profile {pid} uses provider {pref.get('Value')}, which is not defined")
                used.add(pref.get("Value"))
            for inline in ref.findall("EventProviders/EventProvider"):
                used.add(inline.get("Id"))
        if wanted and wanted[0].get("Id") not in used:
            problems.append(f"profile {pid} does not collect the provider {guid}")
    for detail in {d for d, _ in combos}:
        for mode in ("File", "Memory"):
            if (detail, mode) not in combos:
                problems.append(f"no {detail} profile for LoggingMode {mode} (a file and a memory version are required)")
    return problems


# ---------------------------------------------------------------------------
# The test script: the ETW session is stopped on every way out
# ---------------------------------------------------------------------------


def _block_after(code: str, pattern: str, start: int) -> tuple[int, int] | None:
    """(open, close) of the brace block of the first `pattern {` at column 0
    at or after start."""
    m = re.compile(rf"(?m)^{pattern}\s*\{{").search(code, start)
    if m is None:
        return None
    open_brace = m.end() - 1
    return open_brace, psstatic._matching(code, open_brace)


def trace_stop_problems(text: str) -> list[psstatic.Problem]:
    """Problems with how a script brackets its ETW session: Start-WfpMonTrace
    only inside the top-level try, `$traceStarted = $true` right after it,
    the normal path stopping it (Stop-WfpMonTrace, then `$traceStarted =
    $false`), the finally block stopping it when `$traceStarted`, and no
    exit/return inside try or catch (the finally block is the one way out)."""
    sc = psstatic.scan(text)
    code = sc.code
    line = lambda pos: code.count("\n", 0, pos) + 1  # noqa: E731
    problems: list[psstatic.Problem] = []
    try_block = _block_after(code, "try", 0)
    if try_block is None:
        return [psstatic.Problem(1, "no top-level try { } block")]
    catch_block = _block_after(code, r"catch", try_block[1])
    finally_block = _block_after(code, r"finally", try_block[1])
    if finally_block is None:
        return [psstatic.Problem(line(try_block[1]), "the top-level try has no finally block")]
    t0, t1 = try_block
    f0, f1 = finally_block

    starts = [m for m in re.finditer(r"\bStart-WfpMonTrace\b", code)]
    if len(starts) != 1:
        problems.append(psstatic.Problem(1, f"Start-WfpMonTrace is called {len(starts)} times (expected once)"))
    for m in starts:
        if not t0 < m.start() < t1:
            problems.append(psstatic.Problem(line(m.start()), "Start-WfpMonTrace outside the top-level try block"))
        else:
            rest = code[m.end():t1]
            nxt = re.search(r"\n[ \t]*(\S[^\n]*)", rest)
            if nxt is None or not re.fullmatch(r"\$traceStarted\s*=\s*\$true", nxt.group(1).strip()):
                problems.append(psstatic.Problem(line(m.start()),
                                                 "Start-WfpMonTrace is not followed by $traceStarted = $true"))

    in_try = [m for m in re.finditer(r"\bStop-WfpMonTrace\b", code) if t0 < m.start() < t1]
    if not in_try:
        problems.append(psstatic.Problem(line(t1), "the normal path never calls Stop-WfpMonTrace"))
    else:
        m = in_try[-1]
        rest = code[m.end():t1]
        nxt = re.search(r"\n[ \t]*(\S[^\n]*)", rest)
        if nxt is None or not re.fullmatch(r"\$traceStarted\s*=\s*\$false", nxt.group(1).strip()):
            problems.append(psstatic.Problem(line(m.start()),
                                             "Stop-WfpMonTrace on the normal path is not followed by $traceStarted = $false"))
        last_stop = [d for d in re.finditer(r"\bStop-WfpMonDriver\b", code[:t1]) if d.start() > t0]
        if last_stop and last_stop[-1].start() > m.start():
            problems.append(psstatic.Problem(line(last_stop[-1].start()),
                                             "the driver is stopped after the ETW session: its last teardown is not traced"))

    guard = re.compile(r"if\s*\(\s*\$traceStarted\s*\)\s*\{").search(code, f0, f1)
    if guard is None:
        problems.append(psstatic.Problem(line(f0), "the finally block has no if ($traceStarted) { ... }"))
    else:
        g1 = psstatic._matching(code, guard.end() - 1)
        if not re.search(r"\bStop-WfpMonTrace\b", code[guard.end():g1]):
            problems.append(psstatic.Problem(line(guard.start()),
                                             "the finally block's if ($traceStarted) does not call Stop-WfpMonTrace"))

    for lo, hi in [try_block] + ([catch_block] if catch_block else []):
        for m in re.finditer(r"(?im)(?:^|[;{}])\s*(exit|return)\b", code[lo:hi]):
            problems.append(psstatic.Problem(line(lo + m.start(1)),
                                             f"'{m.group(1)}' inside the top-level try/catch (the verdict and exit code come after finally)"))
    return problems


def uncounted_driver_calls(text: str) -> list[psstatic.Problem]:
    """Every `Start-WfpMonDriver -Session $session` / `Stop-WfpMonDriver
    -Session $session` statement must be followed by `$driverStarts++` /
    `$driverStops++`: the trace check compares event counts with them."""
    code = psstatic.scan(text).code
    lines = code.splitlines()
    problems = []
    for i, line in enumerate(lines):
        for verb, counter in (("Start", "$driverStarts++"), ("Stop", "$driverStops++")):
            if re.match(rf"\s*{verb}-WfpMonDriver -Session \$session\s*$", line):
                if i + 1 >= len(lines) or lines[i + 1].strip() != counter:
                    problems.append(psstatic.Problem(i + 1, f"{verb}-WfpMonDriver is not followed by {counter}"))
    return problems
