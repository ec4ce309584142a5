"""The INF reader on its own: syntax rules, line numbers, encodings."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

from wfpinf import parse_inf_bytes, parse_inf_text, unquote  # noqa: E402


def lines(*rows: str, nl: str = "\r\n") -> str:
    return nl.join(rows) + nl


def messages(inf) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in inf.problems]


def test_sections_keys_fields_and_line_numbers():
    inf = parse_inf_text(lines(
        "; header comment",
        "",
        "[Version]",
        'Signature = "$WINDOWS NT$"   ; trailing comment',
        "[Files]",
        "a.sys,,,0x40",
        "[Svc]",
        "ServiceBinary = %13%\\a.sys",
    ))
    assert inf.problems == []
    version = inf.section("version")  # names are case-insensitive
    assert version is not None and version.line == 3
    sig = version.get("SIGNATURE")
    assert sig.line == 4 and sig.fields == ["$WINDOWS NT$"]
    entry = inf.section("Files").entries[0]
    assert entry.key is None and entry.fields == ["a.sys", "", "", "0x40"] and entry.line == 6
    assert inf.section("Svc").get("ServiceBinary").value == "%13%\\a.sys"
    assert inf.headers == [("Version", 3), ("Files", 5), ("Svc", 7)]


def test_semicolon_inside_quotes_and_tokens_is_not_a_comment():
    inf = parse_inf_text(lines(
        "[S]",
        'A = "x;y" ; real comment',
        "B = %odd;token% ; real comment",
    ))
    s = inf.section("S")
    assert s.get("A").fields == ["x;y"]
    assert s.get("B").value == "%odd;token%"


def test_continuation_joins_lines_and_keeps_the_first_line_number():
    inf = parse_inf_text(lines(
        "[S]",
        "CopyFiles = One,\\",
        "    Two, \\   ; a comment after the continuation",
        "    Three",
        "Next = 1",
    ))
    assert inf.problems == []
    copy = inf.section("S").get("CopyFiles")
    assert copy.line == 2
    assert copy.fields == ["One", "Two", "Three"]
    assert inf.section("S").get("Next").line == 5


def test_backslash_inside_a_path_is_not_a_continuation():
    inf = parse_inf_text(lines("[S]", "ServiceBinary = %13%\\x.sys", "Other = 1"))
    s = inf.section("S")
    assert s.get("ServiceBinary").value == "%13%\\x.sys"
    assert s.get("Other").line == 3


def test_continuation_at_end_of_file_is_reported():
    inf = parse_inf_text(lines("[S]", "A = b,\\"))
    assert (2, "line continuation ('\\') at the end of the file") in messages(inf)


def test_quote_escapes_and_percent_escapes():
    assert unquote('"Display an ""example"" string"') == 'Display an "example" string'
    inf = parse_inf_text(lines("[S]", 'V = "%%SystemRoot%%\\x"', "[Strings]", 'K = "a ""b"""'))
    assert inf.strings["k"][0] == 'a "b"'
    e = inf.section("S").get("V")
    assert inf.expand(unquote(e.value), e.line) == "%SystemRoot%\\x"


def test_string_substitution_and_dirids():
    inf = parse_inf_text(lines("[S]", "A = %Name%, %13%\\f.sys, %Missing%", "[Strings]", 'Name = "wfp"'))
    e = inf.section("S").get("A")
    problems = []
    assert inf.expand(e.value, e.line, problems) == "wfp, %13%\\f.sys, %Missing%"
    assert [(p.line, p.message) for p in problems] == [(2, "%Missing% is not defined in [Strings]")]


def test_duplicate_sections_merge_and_are_reported():
    inf = parse_inf_text(lines("[S]", "A = 1", "[T]", "[s]", "B = 2"))
    s = inf.section("S")
    assert [e.key for e in s.entries] == ["A", "B"]
    assert any(line == 4 and "appears again (first at line 1)" in m for line, m in messages(inf))


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (lines("A = 1", "[S]"), 1, "entry outside any section"),
        (lines("[S]", "[Broken", "A = 1"), 2, "without a closing ']'"),
        (lines("[S]", 'A = "open', "B = 1"), 2, "unterminated quoted string"),
        (lines("[S]", "A = 50% done"), 2, "single '%'"),
        (lines("[Strings]", "K = 1", "K = 2"), 3, "defined twice"),
    ],
)
def test_syntax_problems_name_their_line(text, line, fragment):
    inf = parse_inf_text(text)
    assert any(p.line == line and fragment in p.message for p in inf.problems), messages(inf)


# --- encodings ---------------------------------------------------------------

GOOD = lines("[Version]", 'Signature = "$WINDOWS NT$"', "[Strings]", 'K = "v"')


def test_ascii_without_bom_is_accepted():
    inf = parse_inf_bytes(GOOD.encode("ascii"))
    assert inf.encoding == "ascii" and inf.problems == [] and inf.newline == "\r\n"


def test_utf16le_with_bom_is_accepted_and_keeps_line_numbers():
    data = b"\xff\xfe" + lines("[S]", "A = 1", "[Strings]", 'K = "caf\u00e9"').encode("utf-16-le")
    inf = parse_inf_bytes(data)
    assert inf.encoding == "utf-16-le" and inf.problems == []
    assert inf.section("S").get("A").line == 2
    assert inf.strings["k"][0] == "caf\u00e9"


def test_utf8_bom_is_rejected():
    inf = parse_inf_bytes(b"\xef\xbb\xbf" + GOOD.encode("ascii"))
    assert (1, "UTF-8 byte-order mark: INF files must be ANSI (here: ASCII) or UTF-16 LE") in messages(inf)


def test_utf16be_is_rejected():
    inf = parse_inf_bytes(b"\xfe\xff" + GOOD.encode("utf-16-be"))
    assert any(p.line == 1 and "UTF-16 BE" in p.message for p in inf.problems)


def test_utf16_without_bom_is_rejected():
    inf = parse_inf_bytes(GOOD.encode("utf-16-le"))
    assert any(p.line == 1 and "NUL byte" in p.message for p in inf.problems)


def test_non_ascii_byte_names_its_line():
    text = lines("[S]", "A = 1", "; caf\u00e9", "B = 2")
    inf = parse_inf_bytes(text.encode("utf-8"))
    assert (3, "non-ASCII byte 0xC3: an INF with non-ASCII characters must be saved as UTF-16 LE") in messages(inf)
    # Windows-1252 ("ANSI") is no better: the rule is ASCII or UTF-16 LE.
    inf = parse_inf_bytes(text.encode("cp1252"))
    assert any(p.line == 3 and "0xE9" in p.message for p in inf.problems)


def test_mixed_line_ends_name_the_first_odd_line():
    inf = parse_inf_text("[S]\r\nA = 1\r\nB = 2\nC = 3\r\n")
    assert (3, "mixed line ends: this line ends in LF, line 1 in CRLF") in messages(inf)
    assert inf.newline == "mixed"


def test_lone_carriage_return_is_reported_and_does_not_shift_lines():
    inf = parse_inf_text("[S]\r\nA = 1\rB = 2\r\nC = 3\r\n")
    assert (2, "carriage return without a line feed") in messages(inf)
    assert inf.section("S").get("C").line == 3
