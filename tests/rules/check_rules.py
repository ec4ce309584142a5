#!/usr/bin/env python3
"""Checks that the fake hosts and their tests cite docs/engine-rules.md.

Every rule of the rulebook (### E1 ..., ### K1 ..., ### T1 ...) carries an
"**Applies to:**" marker: both, emulator only or native only (the last two
with a reason). A rule must be cited ("rule E2", "Rules E8 and E9") in the
models of each host its marker names, and in at least one test; code may
not cite an id the rulebook does not define, nor cite a rule in the models
of a host its marker excludes. What counts as models and as tests is
described in the rulebook ("Citations and the check").

Usage: check_rules.py [--root DIR] [--map]
Exit status: 0 when every rule is cited as it must be, 1 otherwise (each
problem on its own line), 2 on a usage or read error.
"""

from __future__ import annotations

import argparse
import ast
import functools
import pathlib
import re
import sys
from dataclasses import dataclass, field

RULEBOOK = "docs/engine-rules.md"
EMULATOR = "tests/emulator"
NATIVE_SRC = "tests/native/src"
NATIVE_TESTS = "tests/native/tests"
# Files of tests/native/src that hold the bodies of tests, not models.
NATIVE_TEST_BODIES = ("scenarios.rs", "events.rs")

HEADING = re.compile(r"^### ([EKT]\d+)\b")
APPLIES = re.compile(r"^\*\*Applies to:\*\*\s*(both|emulator only|native only)\b(.*)$")
ID = re.compile(r"\b[EKT]\d+\b")
# "rule E2", "Rule K11", "rules E8 and E9", "rules K11, K12 and K13"; a
# citation may run on over comment lines ("(rule\n/// K33)").
_GAP = r"(?:\s+(?://[/!]?|#)?)+"
CITATION = re.compile(rf"\b[Rr]ules?{_GAP}([EKT]\d+(?:(?:{_GAP})?(?:,|and|/)(?:{_GAP})?[EKT]\d+)*)\b")


@dataclass
class Rule:
    id: str
    applies: str | None = None  # "both", "emulator only", "native only"
    reason: str = ""


@dataclass
class Tree:
    """The texts the check reads: the rulebook, the models of each host,
    and the tests (name -> text of that test alone)."""
    rulebook: str
    emulator_models: dict[str, str] = field(default_factory=dict)
    native_models: dict[str, str] = field(default_factory=dict)
    tests: dict[str, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def cited(text: str) -> frozenset[str]:
    """The rule ids `text` cites."""
    out: set[str] = set()
    for m in CITATION.finditer(text):
        out.update(ID.findall(m.group(1)))
    return frozenset(out)


def strip_citation(text: str, rule_id: str) -> str:
    """`text` with every citation of `rule_id` removed (the other ids of a
    citation stay cited)."""
    def rewrite(m: re.Match) -> str:
        ids = [i for i in ID.findall(m.group(1)) if i != rule_id]
        if not ids:
            return "(uncited)"
        word = m.group(0).split()[0].rstrip("s")
        return f"{word}{'s' if len(ids) > 1 else ''} " + ", ".join(ids)
    return CITATION.sub(rewrite, text)


def parse_rulebook(text: str) -> tuple[list[Rule], list[str]]:
    """The rules in order, and the problems of the rulebook itself."""
    rules: list[Rule] = []
    problems: list[str] = []
    current: Rule | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## "):
            current = None
            continue
        m = HEADING.match(line)
        if m:
            current = Rule(m.group(1))
            if any(r.id == current.id for r in rules):
                problems.append(f"{current.id}: defined twice in {RULEBOOK}")
            rules.append(current)
            continue
        m = APPLIES.match(line)
        if m and current is not None and current.applies is None:
            current.applies = m.group(1)
            # The reason may continue on the following lines, up to a blank one.
            reason = [m.group(2)]
            for follow in lines[i + 1:]:
                if not follow.strip():
                    break
                reason.append(follow)
            current.reason = " ".join(part.strip() for part in reason).strip(" —-:")
    for r in rules:
        if r.applies is None:
            problems.append(f"{r.id}: no '**Applies to:** both | emulator only | native only' line")
        elif r.applies != "both" and len(r.reason.split()) < 3:
            problems.append(f"{r.id}: marked '{r.applies}' without its reason")
    if not rules:
        problems.append(f"{RULEBOOK}: no rules found (headings '### E1 ...')")
    return rules, problems


def check(tree: Tree) -> list[str]:
    """Every problem, one line each (empty: the check passes)."""
    rules, problems = parse_rulebook(tree.rulebook)
    known = {r.id for r in rules}
    in_emulator: dict[str, list[str]] = {}
    in_native: dict[str, list[str]] = {}
    in_tests: dict[str, list[str]] = {}
    for where, files in ((in_emulator, tree.emulator_models), (in_native, tree.native_models),
                         (in_tests, tree.tests)):
        for name, text in files.items():
            for rule_id in cited(text):
                where.setdefault(rule_id, []).append(name)
    for where in (in_emulator, in_native, in_tests):
        for rule_id, names in sorted(where.items()):
            if rule_id not in known:
                problems.append(f"{rule_id}: cited in {', '.join(sorted(names))} but not defined in {RULEBOOK}")
    for r in rules:
        if r.applies is None:
            continue
        emulator = r.applies in ("both", "emulator only")
        native = r.applies in ("both", "native only")
        if emulator and r.id not in in_emulator:
            problems.append(f"{r.id}: applies to the emulator but no emulator model cites it "
                            f"({EMULATOR}/*.py)")
        if native and r.id not in in_native:
            problems.append(f"{r.id}: applies to the native host but no native model cites it "
                            f"({NATIVE_SRC}/**/*.rs)")
        if not emulator and r.id in in_emulator:
            problems.append(f"{r.id}: marked '{r.applies}' but cited in emulator models "
                            f"{sorted(in_emulator[r.id])}")
        if not native and r.id in in_native:
            problems.append(f"{r.id}: marked '{r.applies}' but cited in native models "
                            f"{sorted(in_native[r.id])}")
        if r.id not in in_tests:
            problems.append(f"{r.id}: no test cites it (a test that shows the rule at work)")
    return problems


# --------------------------------------------------------------- reading
def python_tests(path: pathlib.Path, text: str) -> dict[str, str]:
    """Each test_* function of a pytest file: name -> its source (decorators,
    docstring, comments and body)."""
    lines = text.splitlines()
    out = {}
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out[f"{path.name}::{node.name}"] = "\n".join(lines[first - 1:node.end_lineno])
    return out


RUST_ITEM_START = re.compile(r"^(?:#\[|///|//!|// |pub |fn |const |static |use |mod |impl |struct |enum |type )")
RUST_FN = re.compile(r"^(?:pub(?:\([a-z]+\))? )?(?:const )?(?:unsafe )?(?:extern \"win64\" )?fn (\w+)")


def rust_items(text: str) -> list[tuple[str, str, bool]]:
    """Top-level functions of a rustfmt'd file: (name, text from its doc
    comment and attributes to its end, whether it is #[test])."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = RUST_FN.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        while start > 0 and (lines[start - 1].startswith("///") or lines[start - 1].startswith("#[")
                             or lines[start - 1].startswith("// ")):
            start -= 1
        end = i + 1
        while end < len(lines) and not (lines[end] and not lines[end][0].isspace()
                                        and lines[end] != "}" and RUST_ITEM_START.match(lines[end])):
            end += 1
        head = lines[start:i]
        out.append((m.group(1), "\n".join(lines[start:end]), any(h.strip() == "#[test]" for h in head)))
        i = end
    return out


def load(root: pathlib.Path) -> Tree:
    def read(path: pathlib.Path) -> str:
        return path.read_text(encoding="utf-8")

    tree = Tree(read(root / RULEBOOK))
    for path in sorted((root / EMULATOR).glob("*.py")):
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue
        tree.emulator_models[f"{EMULATOR}/{path.name}"] = read(path)
    for path in sorted((root / EMULATOR).glob("test_*.py")):
        tree.tests.update(python_tests(path, read(path)))
    for path in sorted((root / NATIVE_SRC).rglob("*.rs")):
        rel = path.relative_to(root).as_posix()
        if path.parent == root / NATIVE_SRC and path.name in NATIVE_TEST_BODIES:
            continue
        tree.native_models[rel] = read(path)
    called: set[tuple[str, str]] = set()
    for path in sorted((root / NATIVE_TESTS).glob("*.rs")):
        for name, body, is_test in rust_items(read(path)):
            if is_test:
                tree.tests[f"{path.name}::{name}"] = body
                called.update(re.findall(r"\b(scenarios|events)::(\w+)", body))
    for module in ("scenarios", "events"):
        path = root / NATIVE_SRC / f"{module}.rs"
        for name, body, _ in rust_items(read(path)):
            if (module, name) in called:
                tree.tests[f"src/{module}.rs::{name}"] = body
    return tree


def citation_map(tree: Tree) -> str:
    rules, _ = parse_rulebook(tree.rulebook)
    out = []
    for r in rules:
        out.append(f"{r.id} ({r.applies})")
        for label, files in (("emulator", tree.emulator_models), ("native", tree.native_models),
                             ("tests", tree.tests)):
            names = sorted(n for n, t in files.items() if r.id in cited(t))
            out.append(f"  {label}: {', '.join(names) if names else '-'}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[2])
    parser.add_argument("--map", action="store_true", help="print where each rule is cited")
    args = parser.parse_args(argv)
    try:
        tree = load(args.root)
    except (OSError, SyntaxError, UnicodeDecodeError) as err:
        print(f"check_rules: cannot read the tree under {args.root}: {err}", file=sys.stderr)
        return 2
    if args.map:
        print(citation_map(tree))
    problems = check(tree)
    for p in problems:
        print(p)
    rules, _ = parse_rulebook(tree.rulebook)
    if problems:
        print(f"check_rules: {len(problems)} problem(s) with the {len(rules)} rules of {RULEBOOK}")
        return 1
    print(f"check_rules: all {len(rules)} rules of {RULEBOOK} are cited by their models and tests")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
