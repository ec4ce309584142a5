"""A small INF reader and the checks wfpmon's install manifest must pass.

The reader follows Microsoft's "General Syntax Rules for INF Files":
sections in brackets, case-insensitive names, `;` comments (except inside a
"quoted string" or a %strkey% token), a trailing backslash continues a line,
commas separate fields, `""` is a literal quote inside a quoted string, `%%`
a literal percent, and sections with the same name merge. Every logical line
keeps the number of the physical line it starts on, so a problem can always
name a line.

Encodings: INF files must be saved as ANSI or as UTF-16 LE, and one with
non-ASCII characters must be UTF-16 LE. So the reader accepts UTF-16 LE with
its byte-order mark, or 7-bit ASCII without one; a UTF-8 BOM, UTF-16 BE, or a
non-ASCII byte in an 8-bit file is a problem.

The checker knows what a primitive WFP callout driver INF needs (see
`Expectations`); `python3 tests/inf/wfpinf.py [--stamped] FILE` runs it on a
file and prints `FILE:LINE: problem` lines (exit 1 if there are any).
Python 3.11 standard library only.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an INF, at a line (1-based)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Entry:
    """One logical line of a section: `key = value` or just `value`."""

    line: int
    key: str | None
    value: str  # right of '=' (or the whole line), comment removed, not unquoted
    fields: list[str]  # value split on unquoted commas, each unquoted and stripped

    def field(self, index: int) -> str:
        return self.fields[index] if index < len(self.fields) else ""


@dataclass
class Section:
    name: str
    line: int  # line of the (first) header
    entries: list[Entry] = field(default_factory=list)

    def get_all(self, key: str) -> list[Entry]:
        k = key.lower()
        return [e for e in self.entries if e.key is not None and e.key.lower() == k]

    def get(self, key: str) -> Entry | None:
        found = self.get_all(key)
        return found[0] if found else None


@dataclass
class InfFile:
    path: str
    encoding: str  # "ascii" or "utf-16-le" (what the bytes were read as)
    newline: str  # "\r\n", "\n" or "mixed"
    sections: dict[str, Section]  # merged, by lower-case name
    headers: list[tuple[str, int]]  # every section header in file order (name, line)
    problems: list[Problem]  # encoding and syntax problems found while reading
    strings: dict[str, tuple[str, int]]  # [Strings]: lower-case key -> (value, line)

    def section(self, name: str) -> Section | None:
        return self.sections.get(name.lower())

    def expand(self, text: str, line: int, problems: list[Problem] | None = None) -> str:
        """Substitutes %strkey% tokens from [Strings] and %% -> %. Numeric
        tokens (%13%, DIRIDs) are left as they are. An undefined token is
        reported into `problems` (if given) and left as it is."""

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == "":
                return "%"
            if name.isdigit():
                return m.group(0)
            if name.lower() in self.strings:
                return self.strings[name.lower()][0]
            if problems is not None:
                problems.append(Problem(line, f"%{name}% is not defined in [Strings]"))
            return m.group(0)

        return _TOKEN.sub(repl, text)


_TOKEN = re.compile(r"%([^%\r\n]*)%")


def decode_inf(data: bytes) -> tuple[str, str, list[Problem]]:
    """Bytes -> (text, encoding, problems). Text is always returned so that
    parsing can go on and report more."""
    problems: list[Problem] = []
    if data.startswith(b"\xff\xfe"):
        try:
            return data[2:].decode("utf-16-le"), "utf-16-le", problems
        except UnicodeDecodeError as e:
            line = data[2 : 2 + e.start].decode("utf-16-le", "replace").count("\n") + 1
            problems.append(Problem(line, f"invalid UTF-16 LE data ({e.reason})"))
            return data[2:].decode("utf-16-le", "replace"), "utf-16-le", problems
    if data.startswith(b"\xfe\xff"):
        problems.append(
            Problem(1, "UTF-16 BE byte-order mark: INF files must be ANSI or UTF-16 LE")
        )
        return data[2:].decode("utf-16-be", "replace"), "utf-16-be", problems
    if data.startswith(b"\xef\xbb\xbf"):
        problems.append(
            Problem(1, "UTF-8 byte-order mark: INF files must be ANSI (here: ASCII) or UTF-16 LE")
        )
        data = data[3:]
    if b"\x00" in data:
        at = data.index(b"\x00")
        problems.append(
            Problem(
                data.count(b"\n", 0, at) + 1,
                "NUL byte: UTF-16 without a byte-order mark? Save as UTF-16 LE with BOM or ASCII",
            )
        )
    for at, byte in enumerate(data):
        if byte >= 0x80:
            problems.append(
                Problem(
                    data.count(b"\n", 0, at) + 1,
                    f"non-ASCII byte 0x{byte:02X}: an INF with non-ASCII characters "
                    "must be saved as UTF-16 LE",
                )
            )
            break
    return data.decode("latin-1"), "ascii", problems


def _newline_style(text: str, problems: list[Problem]) -> str:
    """"\r\n" or "\n" if every line ends the same way, else "mixed" (reported)."""
    chunks = text.split("\n")
    styles: list[tuple[int, str]] = []
    for number, chunk in enumerate(chunks, start=1):
        ended = number < len(chunks)  # the last chunk has no line feed after it
        crlf = ended and chunk.endswith("\r")
        body = chunk[:-1] if crlf else chunk
        if "\r" in body:
            problems.append(Problem(number, "carriage return without a line feed"))
        if ended:
            styles.append((number, "\r\n" if crlf else "\n"))
    if not styles:
        return "\n"
    first = styles[0][1]
    for number, style in styles:
        if style != first:
            names = {"\r\n": "CRLF", "\n": "LF"}
            problems.append(Problem(number, f"mixed line ends: this line ends in {names[style]}, "
                                            f"line 1 in {names[first]}"))
            return "mixed"
    return first


def _strip_comment(physical: str, line: int, problems: list[Problem]) -> str:
    """Cuts a line at its comment: the first ';' outside a quoted string and
    outside a %strkey% token. Reports an unterminated quote."""
    in_quote = False
    i = 0
    n = len(physical)
    while i < n:
        ch = physical[i]
        if ch == '"':
            in_quote = not in_quote  # "" inside a quote toggles twice: a literal quote
        elif not in_quote and ch == "%":
            close = physical.find("%", i + 1)
            if close == -1:
                problems.append(
                    Problem(line, "single '%' with no closing '%' (write %% for a literal percent)")
                )
            else:
                i = close  # skip the token, ';' inside it is not a comment
        elif not in_quote and ch == ";":
            return physical[:i]
        i += 1
    if in_quote:
        problems.append(Problem(line, "unterminated quoted string"))
    return physical


def _split_unquoted(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
        if ch == sep and not in_quote and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def unquote(text: str) -> str:
    """Removes INF quoting: characters between double quotes are literal, and
    "" inside a quoted string is one double quote."""
    text = text.strip()
    out: list[str] = []
    i = 0
    in_quote = False
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if in_quote and i + 1 < len(text) and text[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            in_quote = not in_quote
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def parse_inf_text(text: str, path: str = "<text>", encoding: str = "ascii",
                   problems: list[Problem] | None = None) -> InfFile:
    problems = list(problems or [])
    newline = _newline_style(text, problems)
    physical_lines = [line.removesuffix("\r") for line in text.split("\n")]
    if physical_lines and physical_lines[-1] == "":
        physical_lines.pop()

    # Join continuations into logical lines (number = first physical line).
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    pending_line = 0
    for number, physical in enumerate(physical_lines, start=1):
        content = _strip_comment(physical, number, problems).rstrip()
        if content.endswith("\\"):  # continuation (outside quotes: the comment is gone)
            if not pending:
                pending_line = number
            pending.append(content[:-1])
            continue
        if pending:
            pending.append(content)
            logical.append((pending_line, "".join(pending).strip()))
            pending = []
        else:
            logical.append((number, content.strip()))
    if pending:
        problems.append(Problem(pending_line, "line continuation ('\\') at the end of the file"))
        logical.append((pending_line, "".join(pending).strip()))

    sections: dict[str, Section] = {}
    headers: list[tuple[str, int]] = []
    current: Section | None = None
    for number, content in logical:
        if not content:
            continue
        if content.startswith("["):
            if not content.endswith("]"):
                problems.append(Problem(number, f"section header without a closing ']': {content}"))
                current = None
                continue
            name = unquote(content[1:-1].strip())
            if not name:
                problems.append(Problem(number, "empty section name"))
                current = None
                continue
            headers.append((name, number))
            key = name.lower()
            if key in sections:
                problems.append(
                    Problem(
                        number,
                        f"section [{name}] appears again (first at line {sections[key].line});"
                        " Windows merges them, keep one",
                    )
                )
                current = sections[key]
            else:
                current = sections[key] = Section(name, number)
            continue
        if current is None:
            problems.append(Problem(number, f"entry outside any section: {content}"))
            continue
        parts = _split_unquoted(content, "=", maxsplit=1)
        if len(parts) == 2:
            key, value = unquote(parts[0]), parts[1].strip()
            if not key:
                problems.append(Problem(number, "entry with an empty key before '='"))
        else:
            key, value = None, content
        fields = [unquote(f) for f in _split_unquoted(value, ",")] if value else []
        current.entries.append(Entry(number, key, value, fields))

    strings: dict[str, tuple[str, int]] = {}
    strings_section = sections.get("strings")
    if strings_section is not None:
        for e in strings_section.entries:
            if e.key is None:
                problems.append(Problem(e.line, "[Strings] entry without 'key = value'"))
                continue
            if e.key.lower() in strings:
                problems.append(
                    Problem(e.line, f"string {e.key} defined twice (first at line "
                                    f"{strings[e.key.lower()][1]})")
                )
                continue
            strings[e.key.lower()] = (unquote(e.value), e.line)

    return InfFile(path, encoding, newline, sections, headers, problems, strings)


def parse_inf_bytes(data: bytes, path: str = "<bytes>") -> InfFile:
    text, encoding, problems = decode_inf(data)
    return parse_inf_text(text, path, encoding, problems)


def read_inf(path: str | Path) -> InfFile:
    return parse_inf_bytes(Path(path).read_bytes(), str(path))


# ---------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------

WFPCALLOUTS_CLASS = "WFPCALLOUTS"
# The WFPCALLOUTS setup class GUID used by Microsoft's WFP callout samples.
WFPCALLOUTS_CLASS_GUID = "{57465043-616C-6C6F-7574-5F636C617373}"
SIGNATURE = "$WINDOWS NT$"
DRIVER_STORE_DIRID = 13
SERVICE_KERNEL_DRIVER = 1
SERVICE_DEMAND_START = 3
SERVICE_ERROR_NORMAL = 1

# stampinf's substitution variables (left in an .inx, gone from a stamped .inf)
_STAMP_VARIABLE = re.compile(r"\$(ARCH|KMDFVERSION|KMDFCOINSTALLERVERSION|UMDFVERSION)\$", re.I)
_DRIVERVER = re.compile(r"^(\d{2})/(\d{2})/(\d{4}),(\d{1,5})\.(\d{1,5})\.(\d{1,5})\.(\d{1,5})$")


@dataclass(frozen=True)
class Expectations:
    """What wfpmon's INF must say. `stamped` selects the .inx form
    (decoration NT$ARCH$, DriverVer placeholder) or the stampinf output
    (decoration NT<arch>, a real DriverVer)."""

    service_name: str
    image_name: str
    catalog_name: str
    package_files: frozenset[str]
    stamped: bool = False
    arch: str = "amd64"

    @property
    def decoration(self) -> str:
        return f"NT{self.arch}" if self.stamped else "NT$ARCH$"


def _parse_int(text: str) -> int | None:
    text = text.strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        return None


def _decorated(inf: InfFile, base: str, suffix: str = "") -> list[tuple[str, Section]]:
    """Sections named `base.<decoration><suffix>`, in file order: [(decoration, section)]."""
    pattern = re.compile(re.escape(base) + r"\.([^.]+)" + re.escape(suffix) + r"$", re.I)
    return [(m.group(1), s) for s in inf.sections.values() if (m := pattern.match(s.name))]


def check(inf: InfFile, exp: Expectations) -> list[Problem]:
    """All problems of `inf` against `exp`, sorted by line."""
    problems = list(inf.problems)
    _check_tokens(inf, exp, problems)
    _check_version(inf, exp, problems)
    decoration = _check_install_sections(inf, exp, problems)
    copied = _check_files(inf, exp, decoration, problems)
    _check_services(inf, exp, decoration, copied, problems)
    _check_uninstall(inf, problems)
    unique = {(p.line, p.message): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.line, p.message))


def _check_tokens(inf: InfFile, exp: Expectations, problems: list[Problem]) -> None:
    for name, line in inf.headers:
        if exp.stamped and _STAMP_VARIABLE.search(name):
            problems.append(Problem(line, f"[{name}]: stampinf variable left in a stamped INF"))
        for m in _TOKEN.finditer(name):
            if m.group(1) and not m.group(1).isdigit() and m.group(1).lower() not in inf.strings:
                problems.append(Problem(line, f"%{m.group(1)}% is not defined in [Strings]"))
    for key, section in inf.sections.items():
        if key == "strings" or key.startswith("strings."):
            continue
        for e in section.entries:
            whole = (e.key or "") + "=" + e.value
            inf.expand(whole, e.line, problems)
            if exp.stamped:
                m = _STAMP_VARIABLE.search(whole)
                if m:
                    problems.append(
                        Problem(e.line, f"{m.group(0)}: stampinf variable left in a stamped INF")
                    )


def _value(inf: InfFile, e: Entry) -> str:
    return inf.expand(unquote(e.value), e.line).strip()


def _check_version(inf: InfFile, exp: Expectations, problems: list[Problem]) -> None:
    version = inf.section("Version")
    if version is None:
        problems.append(Problem(1, "no [Version] section"))
        return
    seen: dict[str, int] = {}
    for e in version.entries:
        if e.key is None:
            problems.append(Problem(e.line, f"[Version] line without 'key = value': {e.value}"))
            continue
        k = e.key.lower()
        if k in seen:
            problems.append(Problem(e.line, f"{e.key} given twice in [Version] "
                                            f"(first at line {seen[k]})"))
        else:
            seen[k] = e.line

    def required(key: str, why: str) -> Entry | None:
        e = version.get(key)
        if e is None:
            problems.append(Problem(version.line, f"[Version] has no {key} ({why})"))
        return e

    e = required("Signature", f'must be "{SIGNATURE}"')
    if e is not None and _value(inf, e).upper() != SIGNATURE:
        problems.append(Problem(e.line, f'Signature is {e.value}, must be "{SIGNATURE}"'))

    cls = required("Class", f"must be {WFPCALLOUTS_CLASS}")
    guid = required("ClassGuid", f"must be {WFPCALLOUTS_CLASS_GUID}")
    if cls is not None and _value(inf, cls).upper() != WFPCALLOUTS_CLASS:
        problems.append(Problem(cls.line, f"Class is {_value(inf, cls)}, must be {WFPCALLOUTS_CLASS}"))
    if guid is not None and _value(inf, guid).upper() != WFPCALLOUTS_CLASS_GUID.upper():
        problems.append(
            Problem(guid.line, f"ClassGuid {_value(inf, guid)} is not the {WFPCALLOUTS_CLASS} "
                               f"class GUID {WFPCALLOUTS_CLASS_GUID}")
        )

    e = required("Provider", "a primitive driver's [Version] must name its provider")
    if e is not None and not _value(inf, e):
        problems.append(Problem(e.line, "Provider is empty"))

    e = required("CatalogFile", f"must be {exp.catalog_name}")
    if e is not None and _value(inf, e).lower() != exp.catalog_name.lower():
        problems.append(Problem(e.line, f"CatalogFile is {_value(inf, e)}, must be {exp.catalog_name}"))

    e = required("PnpLockdown", "must be 1")
    if e is not None and _parse_int(_value(inf, e)) != 1:
        problems.append(Problem(e.line, f"PnpLockdown is {_value(inf, e) or '(empty)'}, must be 1"))

    e = required("DriverVer", "stampinf fills it in; the .inx keeps 'DriverVer ='")
    if e is not None and exp.stamped:
        m = _DRIVERVER.match(_value(inf, e).replace(" ", ""))
        if not m or not (1 <= int(m.group(1)) <= 12 and 1 <= int(m.group(2)) <= 31):
            problems.append(
                Problem(e.line, f"DriverVer {_value(inf, e) or '(empty)'} is not mm/dd/yyyy,w.x.y.z")
            )


def _check_install_sections(inf: InfFile, exp: Expectations, problems: list[Problem]) -> str | None:
    """Checks the [DefaultInstall.<d>] / [.Services] pair; returns <d>."""
    manufacturer = inf.section("Manufacturer")
    if manufacturer is not None:
        problems.append(Problem(manufacturer.line,
                                "a primitive driver INF must not have a [Manufacturer] section"))
    for base in ("DefaultInstall", "DefaultInstall.Services"):
        undecorated = inf.section(base)
        if undecorated is not None:
            problems.append(Problem(undecorated.line,
                                    f"[{undecorated.name}] must be architecture-decorated "
                                    f"([{base.split('.')[0]}.{exp.decoration}...])"))

    installs = [(d, s) for d, s in _decorated(inf, "DefaultInstall") if d.lower() != "services"]
    if not installs:
        problems.append(Problem(1, f"no [DefaultInstall.{exp.decoration}] section"))
        return None
    decoration, install = installs[0]
    for d, s in installs:
        if d.lower() != exp.decoration.lower():
            problems.append(Problem(s.line, f"[{s.name}]: decoration {d}, expected {exp.decoration}"))
    for d, s in installs[1:]:
        problems.append(Problem(s.line, f"[{s.name}]: a second DefaultInstall section "
                                        f"(first: [{install.name}] at line {install.line})"))

    services = _decorated(inf, "DefaultInstall", ".Services")
    if not any(d.lower() == decoration.lower() for d, _ in services):
        problems.append(Problem(install.line, f"[{install.name}] has no matching "
                                              f"[DefaultInstall.{decoration}.Services] section"))
    for d, s in services:
        if d.lower() != decoration.lower():
            problems.append(Problem(s.line, f"[{s.name}]: decoration {d} does not match "
                                            f"[{install.name}] (line {install.line})"))
    return decoration


def _file_list_sections(inf: InfFile, e: Entry, problems: list[Problem]) -> list[tuple[str, Section | None]]:
    out: list[tuple[str, Section | None]] = []
    for raw in e.fields:
        name = inf.expand(raw, e.line).strip()
        if not name:
            continue
        if name.startswith("@"):
            out.append((name, None))
            continue
        section = inf.section(name)
        if section is None:
            problems.append(Problem(e.line, f"{e.key} names [{name}], which does not exist"))
        else:
            out.append((name, section))
    return out


def _check_files(inf: InfFile, exp: Expectations, decoration: str | None,
                 problems: list[Problem]) -> set[str]:
    """CopyFiles -> file lists -> SourceDisksFiles -> SourceDisksNames, and
    DestinationDirs. Returns the lower-case names of the files copied."""
    names = inf.section("SourceDisksNames")
    files = inf.section("SourceDisksFiles")
    dest = inf.section("DestinationDirs")
    for needed, section in (("SourceDisksNames", names), ("SourceDisksFiles", files),
                            ("DestinationDirs", dest)):
        if section is None:
            problems.append(Problem(1, f"no [{needed}] section"))

    disk_ids = {e.key.strip() for e in names.entries if e.key} if names else set()
    source_files: dict[str, Entry] = {}
    if files is not None:
        for e in files.entries:
            if e.key is None:
                problems.append(Problem(e.line, f"[SourceDisksFiles] line without 'file = disk': {e.value}"))
                continue
            fname = inf.expand(e.key, e.line).strip()
            source_files[fname.lower()] = e
            if e.field(0) not in disk_ids:
                problems.append(Problem(e.line, f"{fname}: disk id {e.field(0) or '(none)'} "
                                                "is not in [SourceDisksNames]"))
            if fname.lower() not in {p.lower() for p in exp.package_files}:
                problems.append(Problem(e.line, f"{fname} is not a file of the driver package "
                                                f"({', '.join(sorted(exp.package_files))})"))

    dirs: dict[str, Entry] = {}
    if dest is not None:
        for e in dest.entries:
            if e.key is None:
                problems.append(Problem(e.line, f"[DestinationDirs] line without 'section = dirid': {e.value}"))
                continue
            dirs[e.key.lower()] = e

    copied: set[str] = set()
    install = inf.section(f"DefaultInstall.{decoration}") if decoration else None
    if install is None:
        return copied
    copy_entries = install.get_all("CopyFiles")
    if not copy_entries:
        problems.append(Problem(install.line, f"[{install.name}] has no CopyFiles: "
                                              f"{exp.image_name} would not be installed"))
    for e in copy_entries:
        for name, section in _file_list_sections(inf, e, problems):
            if section is None:  # @file form
                listed = [(name[1:], e)]
                dir_entry = dirs.get("defaultdestdir")
                where = "DefaultDestDir"
            else:
                listed = []
                for fe in section.entries:
                    if fe.key is not None:
                        problems.append(Problem(fe.line, f"[{section.name}]: expected a file name, "
                                                         f"not '{fe.key} = ...'"))
                        continue
                    listed.append((inf.expand(fe.field(0), fe.line).strip(), fe))
                if not listed:
                    problems.append(Problem(section.line, f"[{section.name}] lists no file"))
                dir_entry = dirs.get(section.name.lower()) or dirs.get("defaultdestdir")
                where = section.name
            if dir_entry is None:
                problems.append(Problem(e.line, f"[DestinationDirs] has no entry for {where} "
                                                "(nor a DefaultDestDir)"))
            for fname, fe in listed:
                copied.add(fname.lower())
                if fname.lower() not in source_files:
                    problems.append(Problem(fe.line, f"{fname} is copied but not listed in [SourceDisksFiles]"))
                if fname.lower() not in {p.lower() for p in exp.package_files}:
                    problems.append(Problem(fe.line, f"{fname} is not a file of the driver package "
                                                     f"({', '.join(sorted(exp.package_files))})"))
    # Every destination is the driver store (DefaultDestDir included).
    for e in dirs.values():
        if _parse_int(e.field(0)) != DRIVER_STORE_DIRID:
            problems.append(Problem(e.line, f"{e.key} = {e.field(0)}: must be {DRIVER_STORE_DIRID} "
                                            "(run from the driver store)"))
    if exp.image_name.lower() not in copied:
        problems.append(Problem(install.line, f"{exp.image_name} is not copied by [{install.name}]"))
    return copied


def _expect_int(inf: InfFile, section: Section, key: str, want: int, meaning: str,
                problems: list[Problem]) -> None:
    e = section.get(key)
    if e is None:
        problems.append(Problem(section.line, f"[{section.name}] has no {key} (must be {want}, {meaning})"))
        return
    got = _parse_int(_value(inf, e))
    if got != want:
        problems.append(Problem(e.line, f"{key} = {_value(inf, e) or '(empty)'}: must be {want} ({meaning})"))


def _check_services(inf: InfFile, exp: Expectations, decoration: str | None, copied: set[str],
                    problems: list[Problem]) -> None:
    if decoration is None:
        return
    services = inf.section(f"DefaultInstall.{decoration}.Services")
    if services is None:
        return  # reported by _check_install_sections
    adds = services.get_all("AddService")
    if not adds:
        problems.append(Problem(services.line, f"[{services.name}] has no AddService"))
        return
    for extra in adds[1:]:
        problems.append(Problem(extra.line, "more than one AddService; wfpmon installs one service"))
    add = adds[0]
    name = inf.expand(add.field(0), add.line).strip()
    if name != exp.service_name:
        problems.append(Problem(add.line, f"AddService name is {name or '(empty)'}, "
                                          f"must be {exp.service_name} (SERVICE_NAME in catalog.rs)"))
    install_name = inf.expand(add.field(2), add.line).strip()
    if not install_name:
        problems.append(Problem(add.line, "AddService has no service-install section (third field)"))
        return
    svc = inf.section(install_name)
    if svc is None:
        problems.append(Problem(add.line, f"AddService names [{install_name}], which does not exist"))
        return
    _expect_int(inf, svc, "ServiceType", SERVICE_KERNEL_DRIVER, "SERVICE_KERNEL_DRIVER", problems)
    _expect_int(inf, svc, "StartType", SERVICE_DEMAND_START, "SERVICE_DEMAND_START", problems)
    _expect_int(inf, svc, "ErrorControl", SERVICE_ERROR_NORMAL, "SERVICE_ERROR_NORMAL", problems)
    for key in ("DisplayName", "Description"):
        e = svc.get(key)
        if e is None:
            problems.append(Problem(svc.line, f"[{svc.name}] has no {key}"))
        elif not _value(inf, e):
            problems.append(Problem(e.line, f"{key} is empty"))
    binary = svc.get("ServiceBinary")
    if binary is None:
        problems.append(Problem(svc.line, f"[{svc.name}] has no ServiceBinary"))
        return
    path = _value(inf, binary)
    m = re.fullmatch(r"%(\d+)%\\([^\\]+)", path)
    if m is None or int(m.group(1)) != DRIVER_STORE_DIRID:
        problems.append(Problem(binary.line, f"ServiceBinary {path}: must be "
                                             f"%{DRIVER_STORE_DIRID}%\\{exp.image_name} (the driver store)"))
        return
    if m.group(2) != exp.image_name:
        problems.append(Problem(binary.line, f"ServiceBinary file {m.group(2)} is not "
                                             f"{exp.image_name} (IMAGE_NAME in catalog.rs)"))
    elif m.group(2).lower() not in copied:
        problems.append(Problem(binary.line, f"ServiceBinary {m.group(2)} is not copied by CopyFiles"))


def _check_uninstall(inf: InfFile, problems: list[Problem]) -> None:
    """No uninstall script at all. A primitive driver needs no
    [DefaultUninstall] section: on Windows 10 1903 and later, uninstalling
    the package (pnputil /delete-driver /uninstall, DiUninstallDriver)
    reverses its install. Microsoft's primitive-driver page allows the
    section only with LegacyUninstall=1, for systems older than 1903, which
    wfpmon (Windows 10 2004 or later: ExAllocatePool2) never runs on; and
    DelService, what such a section would hold, is not valid in a Universal
    or Windows driver package (the INF DelService directive page)."""
    for name, line in inf.headers:
        if re.match(r"defaultuninstall(\.|$)", name, re.I):
            problems.append(Problem(line, f"[{name}]: a primitive driver for Windows 10 2004+ needs no "
                                          "DefaultUninstall section (uninstalling the package reverses "
                                          "its install; LegacyUninstall=1 only serves systems before 1903)"))
    for section in inf.sections.values():
        for e in section.get_all("DelService"):
            problems.append(Problem(e.line, f"[{section.name}]: DelService is not valid in a Universal "
                                            "or Windows driver package (remove the service with "
                                            "pnputil /delete-driver, then sc.exe delete)"))


# ---------------------------------------------------------------------------
# stampinf stand-in and command line
# ---------------------------------------------------------------------------


def stamp_like_stampinf(text: str, arch: str = "amd64", catalog: str | None = None,
                        driver_ver: str = "01/02/2025,1.2.3.4") -> str:
    """What the build's `stampinf -a <arch> -d * -v * -c <catalog>` does to
    the parts of the .inx this project uses: replaces $ARCH$, writes
    DriverVer (and CatalogFile) in [Version]. A stand-in so that the stamped
    form can be checked on Linux; the real tool runs in `cargo make`."""
    out_lines = []
    in_version = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            in_version = stripped[1:].split("]")[0].strip().lower() == "version"
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        if in_version:
            key = body.split("=", 1)[0].strip().lower() if "=" in body else ""
            if key == "driverver":
                body = f"DriverVer   = {driver_ver}"
            elif key == "catalogfile" and catalog is not None:
                body = f"CatalogFile = {catalog}"
        out_lines.append(body.replace("$ARCH$", arch) + ending)
    return "".join(out_lines)


def project_expectations(stamped: bool = False, arch: str = "amd64") -> Expectations:
    """Expectations derived from catalog.rs and Cargo.toml."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import wfpfacts  # noqa: PLC0415 (sibling module)

    catalog = wfpfacts.load_catalog()
    package = wfpfacts.load_driver_package()
    return Expectations(
        service_name=catalog.service_name,
        image_name=catalog.image_name,
        catalog_name=package.cat_name,
        package_files=frozenset({package.sys_name}),
        stamped=stamped,
        arch=arch,
    )


def main(argv: list[str]) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="Check wfpmon's INF (.inx or stamped .inf).")
    parser.add_argument("inf", type=Path)
    parser.add_argument("--stamped", action="store_true",
                        help="the file is stampinf output (NT<arch> decorations, real DriverVer)")
    parser.add_argument("--arch", default="amd64")
    args = parser.parse_args(argv)
    problems = check(read_inf(args.inf), project_expectations(args.stamped, args.arch))
    for p in problems:
        print(f"{args.inf}:{p.line}: {p.message}")
    if not problems:
        print(f"{args.inf}: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
