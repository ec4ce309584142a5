"""The documentation's own consistency: every relative link in README.md,
docs/*.md and the tools' READMEs names a file that exists, every `#anchor`
names a heading (or an explicit `<a id>`) of the file it points into, and
README.md stays a front door of at most 150 lines (issue 20).

Anchors are computed as GitHub renders them: the heading's text without
its markup, lower-cased, with everything but letters, marks, digits,
connector punctuation, spaces and hyphens removed, spaces turned into
hyphens, and `-1`, `-2` … appended to repeats. Links inside code spans and
fenced code blocks are not links and are not checked."""

import pathlib
import re
import unicodedata

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README_MAX_LINES = 150

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r"""<a\s+(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def documents() -> list[pathlib.Path]:
    """README.md, docs/*.md and the tools' READMEs."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "tools").glob("*/README.md"))]


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's source text."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"(\*\*|\*|__)(.+?)\1", r"\2", text)  # emphasis
    kept = "".join(c for c in text.lower()
                   if c in " -" or c.isalnum() or unicodedata.category(c)[0] == "M"
                   or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a document defines."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text):
        found.update(EXPLICIT_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(text: str):
    """(line number, target) of every link in the prose."""
    for number, line in prose_lines(text):
        m = REFERENCE_DEF.match(line)
        if m:
            yield number, m.group(1)
            continue
        for m in INLINE_LINK.finditer(CODE_SPAN.sub("", line)):
            yield number, m.group(1)


def problems(doc: pathlib.Path, read=lambda p: p.read_text(encoding="utf-8")) -> list[str]:
    """What is wrong with `doc`'s relative links, one line each."""
    out = []
    text = read(doc)
    for number, target in links(text):
        if EXTERNAL.match(target):
            continue
        path, _, fragment = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        where = f"{doc.relative_to(ROOT)}:{number}: {target}"
        if path and not dest.exists():
            out.append(f"{where}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(read(dest)):
            out.append(f"{where}: no heading or anchor '#{fragment}' in {dest.relative_to(ROOT)}")
    return out


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(doc):
    assert problems(doc) == []


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_the_docs_are_found_and_link_somewhere():
    docs = documents()
    assert {"README.md", "design.md", "testing.md", "performance.md"} <= {d.name for d in docs}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sum(1 for _ in links(readme)) >= 10, "the README links to where its claims are shown"


# --- the checker itself catches what it must ----------------------------------------------

def test_slugs_follow_githubs_rules():
    assert slug("8. What only real Windows can verify") == "8-what-only-real-windows-can-verify"
    assert slug("The real image natively on Linux (`tests/native`)") == "the-real-image-natively-on-linux-testsnative"
    assert slug("Unload: BUSY → remove → retry, **no bound**") == "unload-busy--remove--retry-no-bound"
    assert slug("E14 NOT_FOUND while deletions are owed") == "e14-not_found-while-deletions-are-owed"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n<a id=\"x\"></a>\n") == {"a", "a-1", "x"}


def test_a_missing_file_or_anchor_is_reported_and_code_is_not_a_link():
    docs = ROOT / "docs"
    texts = {
        docs / "x.md": ("# Top\n\n[ok](../README.md) [self](#top) [web](https://example.com/none)\n"
                        "[gone](nothing.md) [bad anchor](#nope)\n"
                        "`[in code](nothing.md)`\n```\n[fenced](nothing.md)\n```\n"
                        "[ref]: missing/file.md\n"),
    }

    def read(p):
        return texts[p] if p in texts else p.read_text(encoding="utf-8")

    assert problems(docs / "x.md", read) == [
        "docs/x.md:4: nothing.md: no such file",
        "docs/x.md:4: #nope: no heading or anchor '#nope' in docs/x.md",
        "docs/x.md:9: missing/file.md: no such file",
    ]
