"""`wfpmonctl top`, the real wfpmonctl.exe, driven end to end in Speakeasy
through an emulated console: keys and resizes reach it as console input
records, what it draws is rendered by a real terminal emulator (pyte), and
the tests assert on the rendered screen.

The console is faked from Microsoft's console documentation (learn.microsoft.com,
"Console Reference": CreateFile's "Consoles" section, GetConsoleMode,
SetConsoleMode, "High-Level Console Modes", WaitForMultipleObjects,
GetNumberOfConsoleInputEvents, ReadConsoleInput, INPUT_RECORD,
KEY_EVENT_RECORD, WINDOW_BUFFER_SIZE_RECORD, GetConsoleScreenBufferInfo,
"Console Virtual Terminal Sequences"), as crossterm 0.29 (the version in
Cargo.lock) uses it on Windows:
- `CreateFileW("CONIN$")` / `("CONOUT$")` for the console's input buffer
  and active screen buffer (crossterm opens and closes them per call);
- `GetConsoleMode` / `SetConsoleMode`: raw mode clears
  ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT | ENABLE_PROCESSED_INPUT on the input;
  ENABLE_VIRTUAL_TERMINAL_PROCESSING on the output, which a legacy console
  refuses (`SetConsoleMode` fails; the error code is not documented: 87,
  ERROR_INVALID_PARAMETER, is what third parties report, and wfpmonctl
  does not read it);
- `WaitForMultipleObjects` on the input handle (the input buffer is
  signalled while it holds records; crossterm is built without
  `event-stream`, so no waker semaphore is waited on), then
  `GetNumberOfConsoleInputEvents` and `ReadConsoleInputW` (INPUT_RECORD);
- WINDOW_BUFFER_SIZE_EVENT records only in window-aware mode
  (ENABLE_WINDOW_INPUT), as WINDOW_BUFFER_SIZE_RECORD's documentation says;
- Ctrl+C: with processed input off it is a key (virtual key 'C', character
  0x03, LEFT_CTRL_PRESSED), which crossterm names with `ToUnicodeEx`;
- `GetConsoleScreenBufferInfo` for the window's size.
Time passes only while wfpmonctl waits for input (and in `Sleep`), so every
run is deterministic. This shows what the console API and the VT stream
make of the view; real Windows Terminal and conhost were not run.

Each test is one emulation with its own machine and console: no shared
state, no files, any order (pytest-xdist safe). A session of keys takes a
few seconds because `Run` puts the heap, memory and TLS imports in the
guest (guest_runtime.py); through Speakeasy's handlers it took minutes.
"""

import ctypes as C
import re

import pytest

pyte = pytest.importorskip("pyte")

from test_wfpmonctl_emulated import (  # noqa: E402,F401 - `exe` is a fixture
    BOOT, FIREFOX_DEVICE, IOCTL_LIST_FLOWS, SVCHOST_DEVICE, FakeDriver, Run, exe, flow, flow_event, pkey, process,
    running_machine)

# --- console structures (wincontypes.h / wincon.h), x64 layout -------------


class COORD(C.Structure):
    _fields_ = [("X", C.c_int16), ("Y", C.c_int16)]


class SMALL_RECT(C.Structure):
    _fields_ = [("Left", C.c_int16), ("Top", C.c_int16), ("Right", C.c_int16), ("Bottom", C.c_int16)]


class KEY_EVENT_RECORD(C.Structure):
    _fields_ = [("bKeyDown", C.c_int32), ("wRepeatCount", C.c_uint16), ("wVirtualKeyCode", C.c_uint16),
                ("wVirtualScanCode", C.c_uint16), ("UnicodeChar", C.c_uint16), ("dwControlKeyState", C.c_uint32)]


class MOUSE_EVENT_RECORD(C.Structure):
    _fields_ = [("dwMousePosition", COORD), ("dwButtonState", C.c_uint32), ("dwControlKeyState", C.c_uint32),
                ("dwEventFlags", C.c_uint32)]


class WINDOW_BUFFER_SIZE_RECORD(C.Structure):
    _fields_ = [("dwSize", COORD)]


class _EVENT(C.Union):
    _fields_ = [("KeyEvent", KEY_EVENT_RECORD), ("MouseEvent", MOUSE_EVENT_RECORD),
                ("WindowBufferSizeEvent", WINDOW_BUFFER_SIZE_RECORD)]


class INPUT_RECORD(C.Structure):
    _fields_ = [("EventType", C.c_uint16), ("Event", _EVENT)]


class CONSOLE_SCREEN_BUFFER_INFO(C.Structure):
    _fields_ = [("dwSize", COORD), ("dwCursorPosition", COORD), ("wAttributes", C.c_uint16),
                ("srWindow", SMALL_RECT), ("dwMaximumWindowSize", COORD)]


assert C.sizeof(KEY_EVENT_RECORD) == 16 and C.sizeof(INPUT_RECORD) == 20 and INPUT_RECORD.Event.offset == 4
assert C.sizeof(CONSOLE_SCREEN_BUFFER_INFO) == 22 and CONSOLE_SCREEN_BUFFER_INFO.srWindow.offset == 10

KEY_EVENT, WINDOW_BUFFER_SIZE_EVENT = 0x1, 0x4
LEFT_CTRL_PRESSED, SHIFT_PRESSED = 0x8, 0x10
# Console modes (SetConsoleMode).
ENABLE_PROCESSED_INPUT, ENABLE_LINE_INPUT, ENABLE_ECHO_INPUT, ENABLE_WINDOW_INPUT = 0x1, 0x2, 0x4, 0x8
ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x4
RAW_OFF = ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT | ENABLE_PROCESSED_INPUT
# A console's modes as a new window has them. Input: "all input modes except
# ENABLE_WINDOW_INPUT and ENABLE_VIRTUAL_TERMINAL_INPUT are enabled by
# default" (SetConsoleMode) — processed, line, echo, mouse, insert,
# quick-edit, extended flags — plus 0x100 (ENABLE_AUTO_POSITION in
# wincon.h; not on Microsoft's pages, as third parties report a new window's
# mode 0x1F7); output: processed output and wrap at EOL
# ("High-Level Console Modes").
CONHOST_INPUT_MODE, CONHOST_OUTPUT_MODE = 0x1F7, 0x3
STD_INPUT_HANDLE = 0xFFFFFFF6  # (DWORD)-10
GENERIC_READ_WRITE = 0xC0000000
WAIT_OBJECT_0, WAIT_TIMEOUT = 0, 258
ERROR_INVALID_PARAMETER, ERROR_NO_SYSTEM_RESOURCES = 87, 1450
ENTER_ALT, LEAVE_ALT = "\x1b[?1049h", "\x1b[?1049l"

# Virtual keys (winuser.h) of the keys the tests press; printable characters
# carry their character, with these keys (US layout).
VK = {"Backspace": 0x08, "Tab": 0x09, "Enter": 0x0D, "Esc": 0x1B, "Left": 0x25, "Up": 0x26, "Right": 0x27,
      "Down": 0x28, "F1": 0x70}
CHAR_OF_VK = {"Backspace": "\b", "Tab": "\t", "Enter": "\r", "Esc": "\x1b"}
VK_CONTROL = 0x11
OEM = {" ": (0x20, 0), "/": (0xBF, 0), "?": (0xBF, SHIFT_PRESSED), ".": (0xBE, 0), ">": (0xBE, SHIFT_PRESSED),
       ",": (0xBC, 0), "<": (0xBC, SHIFT_PRESSED), ":": (0xBA, SHIFT_PRESSED), "-": (0xBD, 0),
       "+": (0xBB, SHIFT_PRESSED), "%": (0x35, SHIFT_PRESSED)}


def _vk_of(ch: str):
    if ch.isalpha():
        return ord(ch.upper()), SHIFT_PRESSED if ch.isupper() else 0
    if ch.isdigit():
        return ord(ch), 0
    return OEM[ch]


def _key_record(down, vk, char, state):
    r = INPUT_RECORD(EventType=KEY_EVENT)
    r.Event.KeyEvent = KEY_EVENT_RECORD(bKeyDown=int(down), wRepeatCount=1, wVirtualKeyCode=vk,
                                        UnicodeChar=ord(char) if char else 0, dwControlKeyState=state)
    return r


def press(name: str, after: int = 60):
    """A step: the key `name` (a character, or a name in VK) pressed and
    released `after` ms after the previous step: its key-down and key-up
    records, as the console writes them."""
    if name in VK:
        vk, char, state = VK[name], CHAR_OF_VK.get(name, ""), 0
    else:
        (vk, state), char = _vk_of(name), name
    return (after, name, [_key_record(True, vk, char, state), _key_record(False, vk, char, state)])


def typed(text: str):
    return [press(ch) for ch in text]


def ctrl(letter: str, after: int = 60):
    """Ctrl+letter with processed input off: Ctrl's own records around the
    letter's, whose character is the control code (Ctrl+C: 0x03)."""
    vk, code, state = ord(letter.upper()), chr(ord(letter.upper()) - 0x40), LEFT_CTRL_PRESSED
    return (after, f"Ctrl+{letter}", [_key_record(True, VK_CONTROL, "", state), _key_record(True, vk, code, state),
                                       _key_record(False, vk, code, state), _key_record(False, VK_CONTROL, "", 0)])


def resize(width: int, height: int, after: int = 60):
    """The user resizes the window: the buffer takes the new size, and the
    console reports it in window-aware mode."""
    return (after, f"resize {width}x{height}", (width, height))


class Console:
    """One console window: its size, input and output modes, the records
    waiting in its input buffer, and a pyte screen of what was written."""

    def __init__(self, width=100, height=30, vt=True, steps=(), limit_ms=60_000):
        self.width, self.height = width, height
        self.vt = vt  # False: a legacy console, which refuses VT processing
        self.modes = {"in": CONHOST_INPUT_MODE, "out": CONHOST_OUTPUT_MODE}
        self.mode_calls: list[tuple[str, int, bool]] = []  # SetConsoleMode: (buffer, mode, accepted)
        # SetConsoleMode calls and writes to the screen in the order they
        # came: ("mode", buffer, mode, accepted) and ("write", text, VT on).
        self.log: list[tuple] = []
        self.steps = list(steps)
        self.queue: list[INPUT_RECORD] = []
        self.due = None  # when the next step comes (ms on the run's clock)
        self.limit_ms = limit_ms  # a run still waiting then has missed its quit key
        self.screen = pyte.Screen(width, height)
        self.stream = pyte.Stream(self.screen)
        self.raw = ""  # every character written to the screen buffer
        # (step, what the window showed when it came, LIST_FLOWS requests by then)
        self.screens: list[tuple[str, list[str], int]] = []

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())


class TopRun(Run):
    """`wfpmonctl.exe ARGS` on `console`."""

    CONSOLE_HANDLE = 0xC0_0000  # CONIN$ / CONOUT$ handles count up from here

    def __init__(self, exe, args, machine, console: Console):
        self.console = console
        self.console_handles: dict[int, str] = {}  # open CONIN$ ("in") and CONOUT$ ("out") handles
        self.opened = 0
        machine.console = console.width
        super().__init__(exe, args, machine=machine)
        console.screens.append(("exit", console.lines(), self.listings()))

    def more_hooks(self):
        return [
            ("kernel32", "WaitForMultipleObjects", 4, self._wait),
            ("kernel32", "GetNumberOfConsoleInputEvents", 2, self._number_of_events),
            ("kernel32", "ReadConsoleInputW", 4, self._read_input),
            ("user32", "GetForegroundWindow", 0, lambda emu, a: 0x10010),
            ("user32", "GetWindowThreadProcessId", 2, lambda emu, a: 0x1234),
            ("user32", "GetKeyboardLayout", 1, lambda emu, a: 0x04090409),  # en-US
            ("user32", "ToUnicodeEx", 7, self._to_unicode),
        ]

    # -- handles and modes ----------------------------------------------------

    def _get_std_handle(self, emu, api_name, func, args):
        handle = super()._get_std_handle(emu, api_name, func, args)
        if args[0] & 0xFFFFFFFF == STD_INPUT_HANDLE:
            self.std_handles[handle] = "stdin"
        return handle

    def _buffer(self, handle):
        """Which console buffer `handle` is: "in", "out", or None."""
        if handle in self.console_handles:
            return self.console_handles[handle]
        return {"stdout": "out", "stderr": "out", "stdin": "in"}.get(self.std_handles.get(handle))

    def _create_file(self, emu, api_name, func, args):
        name = self.wstr(args[0])
        if name not in ("CONIN$", "CONOUT$"):
            return super()._create_file(emu, api_name, func, args)
        assert args[1] == GENERIC_READ_WRITE, "crossterm opens the console for reading and writing"
        self.opened += 1
        handle = self.CONSOLE_HANDLE + 4 * self.opened
        self.console_handles[handle] = "in" if name == "CONIN$" else "out"
        return handle

    def _close_handle(self, emu, api_name, func, args):
        if args[0] in self.console_handles:
            del self.console_handles[args[0]]
            return 1
        return super()._close_handle(emu, api_name, func, args)

    def _get_console_mode(self, emu, api_name, func, args):
        buffer = self._buffer(args[0])
        assert buffer, f"GetConsoleMode on {args[0]:#x}"
        if args[1]:
            self.se.mem_write(args[1], self.console.modes[buffer].to_bytes(4, "little"))
        return 1

    def _set_console_mode(self, emu, args):
        buffer, mode = self._buffer(args[0]), args[1] & 0xFFFFFFFF
        assert buffer, f"SetConsoleMode on {args[0]:#x}"
        # A legacy console knows no VT processing: SetConsoleMode fails (the
        # code is undocumented; 87 as third parties report; never read).
        accepted = not (buffer == "out" and mode & ENABLE_VIRTUAL_TERMINAL_PROCESSING and not self.console.vt)
        self.console.mode_calls.append((buffer, mode, accepted))
        self.console.log.append(("mode", buffer, mode, accepted))
        if not accepted:
            emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        self.console.modes[buffer] = mode
        return 1

    def _screen_buffer_info(self, emu, args):
        assert self._buffer(args[0]) == "out"
        w, h = self.console.width, self.console.height
        # The alternate screen's buffer is the window's size ("Console
        # Virtual Terminal Sequences", Alternate Screen Buffer). Before it
        # is entered the real buffer is larger; crossterm and terminal_size
        # read only srWindow, which is the window either way.
        info = CONSOLE_SCREEN_BUFFER_INFO(dwSize=COORD(w, h), wAttributes=7, srWindow=SMALL_RECT(0, 0, w - 1, h - 1),
                                          dwMaximumWindowSize=COORD(w, h))
        self.se.mem_write(args[1], bytes(info))
        return 1

    def _capture(self, emu, handle, text, count, written):
        ok = super()._capture(emu, handle, text, count, written)
        if ok and self.std_handles.get(handle) == "stdout":
            if self.console.modes["out"] & ENABLE_VIRTUAL_TERMINAL_PROCESSING:
                self.console.stream.feed(text)
            else:
                # Without VT processing the console shows escapes as text.
                self.console.stream.feed(text.replace("\x1b", "\u241b"))
            self.console.raw += text
            self.console.log.append(("write", text, bool(self.console.modes["out"] & ENABLE_VIRTUAL_TERMINAL_PROCESSING)))
        return ok

    # -- input ----------------------------------------------------------------

    def _next_step(self):
        """The next step comes: the window as the user saw it is kept, and
        its records go into the input buffer (a resize: the window changes,
        and the record only in window-aware mode)."""
        c = self.console
        after, label, what = c.steps.pop(0)
        c.screens.append((label, c.lines(), self.listings()))
        c.due = None
        if isinstance(what, tuple):
            c.width, c.height = what
            c.screen.resize(c.height, c.width)
            if c.modes["in"] & ENABLE_WINDOW_INPUT:
                r = INPUT_RECORD(EventType=WINDOW_BUFFER_SIZE_EVENT)
                r.Event.WindowBufferSizeEvent = WINDOW_BUFFER_SIZE_RECORD(COORD(c.width, c.height))
                c.queue.append(r)
            return
        if label == "Ctrl+c":
            assert not c.modes["in"] & ENABLE_PROCESSED_INPUT, \
                "with processed input on, the console would signal CTRL_C_EVENT instead of queueing the key"
        c.queue.extend(what)

    def _wait(self, emu, args):
        """WaitForMultipleObjects(count, handles, wait_all, ms) on the
        console input: signalled while the buffer holds records."""
        count, handles, _, ms = args[0] & 0xFFFFFFFF, args[1], args[2], args[3] & 0xFFFFFFFF
        waited = [self.u64(handles + 8 * i) for i in range(count)]
        assert count == 1 and self._buffer(waited[0]) == "in", f"waits on {waited}"
        c = self.console
        end = self.clock_ms + ms
        while not c.queue and c.steps:
            if c.due is None:
                c.due = self.clock_ms + c.steps[0][0]
            if c.due > end:
                break
            self.clock_ms = max(self.clock_ms, c.due)
            self._next_step()
        if c.queue:
            self._run_due_work(emu)
            return WAIT_OBJECT_0
        self.clock_ms = end
        assert self.clock_ms < c.limit_ms, f"still running at {self.clock_ms} ms: {c.text()}"
        self._run_due_work(emu)
        return WAIT_TIMEOUT

    def _number_of_events(self, emu, args):
        assert self._buffer(args[0]) == "in"
        self.se.mem_write(args[1], len(self.console.queue).to_bytes(4, "little"))
        return 1

    def _read_input(self, emu, args):
        handle, buf, length, read = args[0], args[1], args[2] & 0xFFFFFFFF, args[3]
        assert self._buffer(handle) == "in"
        # ReadConsoleInput waits until a record is there; crossterm only
        # reads after counting them, so an empty buffer here would hang.
        assert self.console.queue, "ReadConsoleInputW on an empty input buffer blocks"
        records, self.console.queue = self.console.queue[:length], self.console.queue[length:]
        self.se.mem_write(buf, b"".join(bytes(r) for r in records))
        self.se.mem_write(read, len(records).to_bytes(4, "little"))
        return 1

    def _to_unicode(self, emu, args):
        """ToUnicodeEx(vk, scan, state, buf, len, flags, hkl): the character
        of a letter or digit key with the given keyboard state (crossterm
        passes an empty one: no Shift, no Ctrl) on the US layout."""
        vk, state, buf, length = args[0] & 0xFFFFFFFF, args[2], args[3], args[4]
        assert bytes(self.se.mem_read(state, 256)) == bytes(256)
        if not (0x30 <= vk <= 0x39 or 0x41 <= vk <= 0x5A) or length < 1:
            return 0
        self.se.mem_write(buf, chr(vk).lower().encode("utf-16-le"))
        return 1

    # -- what the tests ask ---------------------------------------------------

    def listings(self) -> int:
        return self.machine.driver.requests.count("list")

    def screen(self, step: str, nth: int = 0) -> str:
        """The window when step `step` (its `nth` occurrence) came, or at exit."""
        return "\n".join(self.seen(step, nth)[0])

    def seen(self, step: str, nth: int = 0):
        """(lines, LIST_FLOWS requests) when step `step` came."""
        lines, listings = [(lines, n) for label, lines, n in self.console.screens if label == step][nth]
        return lines, listings

    def input_modes(self):
        return [(mode, ok) for buffer, mode, ok in self.console.mode_calls if buffer == "in"]

    def output_modes(self):
        return [(mode, ok) for buffer, mode, ok in self.console.mode_calls if buffer == "out"]


# --- the machine: programs, connections, events, names -----------------------

FIREFOX = flow(0xFFFF_A000_0000_0010, 1234, remote=("93.184.216.34", 443), key=pkey(3))
FIREFOX_2 = flow(0xFFFF_A000_0000_0020, 1234, local=("10.0.0.5", 50001), remote=("151.101.1.69", 443), key=pkey(3))
SVCHOST = flow(0x40, 888, proto=17, local=("10.0.0.5", 53000), remote=("192.168.1.1", 53), key=pkey(9, 2))
V6 = flow(0x50, 888, proto=17, family=23, local=("2001:db8::5", 5353), remote=("2001:db8::53", 53), key=pkey(9, 2))


def traffic(flows):
    """Before every listing: Firefox's first flow receives 125,000 bytes,
    its second 25,000; the DNS flows 1,000 out."""
    for f, (rx, tx) in zip(flows, [(125_000, 0), (25_000, 0), (0, 1000), (0, 1000)]):
        f["bytes_in"] += rx
        f["bytes_out"] += tx


def top_machine(**kw):
    driver = FakeDriver([FIREFOX, FIREFOX_2, SVCHOST, V6], growth=traffic, processes=[
        process(3, 1234, FIREFOX_DEVICE, active_flows=2), process(9, 888, SVCHOST_DEVICE, generation=2,
                                                                  active_flows=2)],
        events=[flow_event("established", SVCHOST, BOOT - 10_000_000, key=pkey(9, 2))], **kw)
    machine = running_machine(driver=driver)
    machine.service_table = [(888, "Dnscache"), (888, "mDNS")]
    machine.dns = {"93.184.216.34": [("example.com", 100)], "151.101.1.69": [("cdn.example", 100)],
                   "192.168.1.1": [("router.lan", 100)], "2001:db8::53": [("ns.example", 100)]}
    return machine


def rows_with(screen: str, *words) -> list[str]:
    return [line for line in screen.splitlines() if all(w in line for w in words)]


def assert_restored(run: TopRun):
    """The alternate screen left after it was entered, while VT processing
    was still on (else the console shows the escape as text); then raw mode
    left; then the modes wfpmonctl found set back exactly, last."""
    raw, log = run.console.raw, run.console.log
    assert raw.count(ENTER_ALT) == 1 and raw.count(LEAVE_ALT) == 1, raw[-200:]
    assert raw.index(ENTER_ALT) < raw.index(LEAVE_ALT), "left after it was entered"
    assert run.console.modes == {"in": CONHOST_INPUT_MODE, "out": CONHOST_OUTPUT_MODE}, run.console.modes
    ins, outs = run.input_modes(), run.output_modes()
    assert ins[-1] == (CONHOST_INPUT_MODE, True) and outs[-1] == (CONHOST_OUTPUT_MODE, True), (ins, outs)

    def last(entry) -> int:
        return max(i for i, e in enumerate(log) if e == entry)

    (leave,) = [i for i, e in enumerate(log) if e[0] == "write" and LEAVE_ALT in e[1]]
    assert log[leave][2], "the alternate screen was left with VT processing on"
    raw_on = log.index(("mode", "in", (CONHOST_INPUT_MODE | ENABLE_WINDOW_INPUT) & ~RAW_OFF, True))
    # crossterm leaves raw mode by turning its three bits back on; the
    # window-input bit wfpmonctl added is still set then.
    raw_left = last(("mode", "in", CONHOST_INPUT_MODE | ENABLE_WINDOW_INPUT, True))
    restored_in, restored_out = last(("mode", "in", CONHOST_INPUT_MODE, True)), last(("mode", "out", CONHOST_OUTPUT_MODE, True))
    assert raw_on < raw_left < restored_in, log
    assert leave < restored_out, "VT processing turned off only after the alternate screen was left"


# --- the tests ----------------------------------------------------------------

SESSION = [
    press("Tab", after=700),  # the first paint came at 250 ms (two samples); names by now
    press("Tab"), press("Tab"),  # connections, events, programs again
    press(">"),  # programs sorted by the next column (OUT/s)
    press("c"), press("r"),  # connections, then their order reversed
    press("p"), press("/"), *typed("fire"), press("Enter"),  # a filter typed char by char
    press("/"), ctrl("u"), *typed("::/200"), press("Enter"),  # a bad CIDR block: a message
    ctrl("u"), *typed("::/0"), press("Enter"),  # corrected: IPv6 only
    press("c"), press("p"), press(" "), press("b", after=2500), press(" "),  # paused 2.5 s, bits
    press("?"), press("x"), press("Enter"),  # help, closed, the selected program expanded
    resize(130, 30), press("%"), press("q"),  # repainted at once; an unknown key; quit
]


def test_top_keys_tabs_sort_filter_pause_units_help_expand_resize_quit(exe):
    """One session at the keyboard, every screen read back from pyte."""
    console = Console(width=100, height=24, steps=SESSION)
    machine = top_machine()
    run = TopRun(exe, ["top", "--interval", "1"], machine, console)
    assert (run.exit_code, run.stderr) == (0, ""), run.stderr
    assert run.added("CreateFileW"), "the device is opened"

    # Programs first, with their services, and rates from the first paint:
    # Firefox gets 150,000 bytes per listing, two listings 250 ms apart.
    first = run.screen("Tab")
    (fx,), (svc,) = rows_with(first, "firefox.exe"), rows_with(first, "svchost.exe (Dnscache, mDNS)")
    assert "585.9 KiB/s" in fx and "7.8 KiB/s" in svc, first
    assert first.index("firefox.exe") < first.index("svchost.exe"), "by rate in, highest first"
    assert "Programs (2)" in first and "4 conns" in first

    conns = run.screen("Tab", 1)
    assert rows_with(conns, "[2001:db8::53]:53") and rows_with(conns, "192.168.1.1:53"), conns
    # Host names as they come: each lookup takes 100 ms, and a refresh
    # shows the answers it finds (the first one asked by the second
    # sample; the others, asked then, by the next refresh, 1 s later).
    hosts = {"93.184.216.34:443": "example.com", "151.101.1.69:443": "cdn.example",
             "192.168.1.1:53": "router.lan", "[2001:db8::53]:53": "ns.example"}
    assert any(rows_with(conns, a, h) for a, h in hosts.items()), "a host name by the first paint\n" + conns
    events = run.screen("Tab", 2)
    # The event came 1 s before the start (2025-12-31T23:59:59Z), shown at
    # the machine's local time (UTC+1) as the other text views show it.
    local = run.local("2025-12-31T23:59:59.000Z")
    assert local == "2026-01-01 00:59:59.000", "UTC+1 in winter"
    assert rows_with(events, local[11:], "established", "svchost.exe", "192.168.1.1:53"), "the events tab\n" + events
    assert "TIME▼" in events and "UTC" not in events, events
    assert "CONNS" in run.screen(">") and "IN/s▼" in run.screen(">"), "Tab three times: programs again"
    by_out = run.screen("c")
    assert "OUT/s▼" in by_out and by_out.index("svchost.exe") < by_out.index("firefox.exe"), by_out

    def order(screen):
        return [line.split()[2 if "▸" in line or "▾" in line else 1] for line in screen.splitlines()
                if re.match(r"\s+\d+ ", line)]

    assert order(run.screen("r")) == ["firefox.exe", "firefox.exe", "svchost.exe", "svchost.exe"]
    reversed_ = run.screen("p")
    assert order(reversed_) == ["svchost.exe", "svchost.exe", "firefox.exe", "firefox.exe"], reversed_
    assert reversed_.index("151.101.1.69") < reversed_.index("93.184.216.34"), "the lower rate first"

    assert "/fire█" in run.screen("Enter"), "the filter as typed, char by char"
    fire = run.screen("/", 1)
    assert rows_with(fire, "firefox.exe") and not rows_with(fire, "svchost.exe"), fire
    assert "filter: fire" in fire

    bad = run.screen("Ctrl+u", 1)
    assert "bad CIDR '::/200': the prefix length must be 0 to 128" in bad, bad
    assert rows_with(bad, "firefox.exe"), "the previous filter stays until a good one is entered"
    v6 = run.screen("c", 1)
    assert rows_with(v6, "svchost.exe") and not rows_with(v6, "firefox.exe"), v6
    v6_conns = run.screen("p", 1)
    assert rows_with(v6_conns, "[2001:db8::53]:53", "ns.example") and not rows_with(v6_conns, "192.168.1.1"), \
        v6_conns

    _, lists_at_pause = run.seen(" ")
    paused, lists_paused = run.seen("b")
    _, lists_resumed = run.seen(" ", 1)
    assert "PAUSED" in " ".join(paused), paused
    assert lists_paused == lists_at_pause, "no listing for the 2.5 s of the pause"
    assert lists_resumed == lists_paused, "nor while bits were switched on"
    bits, _ = run.seen(" ", 1)
    bits = "\n".join(bits)
    assert "bits/s" in bits and "KiB/s" not in bits, bits
    assert run.seen("?")[1] == lists_resumed + 1, "resuming refreshes at once"

    help_ = run.screen("x")
    assert "keys (any key closes)" in help_ and "q, Esc, Ctrl+C" in help_, help_
    assert "keys (any key closes)" not in run.screen("Enter", 3), "any key closes the help"
    expanded = run.screen("resize 130x30")
    assert rows_with(expanded, "svchost.exe") and rows_with(expanded, "└ [2001:db8::53]:53"), expanded

    # The resize reaches wfpmonctl as a WINDOW_BUFFER_SIZE_EVENT (it turned
    # window input on) and repaints at once, before any new listing.
    (narrow, lists_before), (wide, lists_after) = run.seen("resize 130x30"), run.seen("%")
    assert max(map(len, narrow)) <= 100 < max(map(len, wide)) <= 130 and len(wide) == 30, wide
    assert lists_after == lists_before, "repainted by the resize event, not by a refresh"
    assert "unknown key '%': press ? for the list of keys" in run.screen("q")
    assert_restored(run)


def test_too_small_a_window_then_resized_and_ctrl_c_quits(exe):
    """A 50x8 window gets the message (no panic); enlarged, the view; Ctrl+C
    as a key event (processed input is off in raw mode) quits with 0."""
    console = Console(width=50, height=8, steps=[resize(100, 12, after=700), ctrl("c")])
    run = TopRun(exe, ["top", "-n"], top_machine(), console)
    assert (run.exit_code, run.stderr) == (0, ""), run.stderr
    small = run.screen("resize 100x12")
    assert "The terminal is too small (50×8): wfpmonctl top needs at least 60×10" in re.sub(r"\s+", " ", small), small
    view = run.screen("Ctrl+c")
    assert rows_with(view, "firefox.exe") and len(view.splitlines()) == 12, view
    assert "(Dnscache, mDNS)" in view, "-n leaves host names out, not services"
    assert "QueueUserWorkItem" not in run.names(), "-n: no lookups"
    assert_restored(run)


class FailingDriver(FakeDriver):
    """A driver whose flow listing fails from the `after`-th on."""

    def __init__(self, after, status, **kw):
        super().__init__(**kw)
        self.after, self.status = after, status

    def ioctl(self, code, request, out_len):
        if code == IOCTL_LIST_FLOWS and self.requests.count("list") >= self.after:
            self.requests.append("list failed")
            return self.status, b""
        return super().ioctl(code, request, out_len)


def test_a_driver_failing_mid_run_restores_the_console(exe):
    driver = FailingDriver(3, ERROR_NO_SYSTEM_RESOURCES, flows=[FIREFOX], growth=traffic,
                           processes=[process(3, 1234, FIREFOX_DEVICE)])
    machine = running_machine(driver=driver)
    console = Console(steps=[press("Tab", after=400), press("q", after=5000)])
    run = TopRun(exe, ["top"], machine, console)
    assert run.exit_code == 1, (run.exit_code, run.stderr)
    assert driver.requests.count("list") == 3 and driver.requests[-1] == "list failed"
    assert run.stderr.startswith("wfpmonctl: error: ") and "1450" in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1, "one line, on the restored screen"
    assert rows_with(run.screen("Tab"), "firefox.exe"), "the view ran until the failure"
    assert console.steps, "the failure came before the quit key"
    assert_restored(run)


def test_a_legacy_console_without_vt_is_refused(exe):
    """crossterm's fallback for a console without VT processing (console API
    calls, its alternate screen a second screen buffer) would draw where
    nobody looks, since ratatui writes through standard output: refused."""
    machine = top_machine()
    console = Console(vt=False, steps=[press("q")])
    run = TopRun(exe, ["top"], machine, console)
    assert run.exit_code == 11, run.stderr
    assert "top needs a console that takes virtual-terminal sequences" in run.stderr, run.stderr
    assert "`wfpmonctl flows --watch SECONDS`" in run.stderr
    assert run.output_modes() == [(CONHOST_OUTPUT_MODE | ENABLE_VIRTUAL_TERMINAL_PROCESSING, False)]
    assert run.input_modes() == [], "raw mode never entered"
    assert run.console.raw == "" and not run.added("CreateFileW"), "nothing drawn, the device not opened"
    assert console.steps, "no key read"
