"""The rulebook check (check_rules.py) passes on the tree, and fails — naming
the rule — when any one citation it requires is removed, when a one-host
rule loses its reason, or when code cites an id the rulebook lacks."""

import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import check_rules as cr  # noqa: E402

TREE = cr.load(ROOT)
RULES, _ = cr.parse_rulebook(TREE.rulebook)


def without(tree: cr.Tree, part: str, rule_id: str) -> cr.Tree:
    """A copy of `tree` with every citation of `rule_id` removed from one
    part: "emulator_models", "native_models" or "tests"."""
    out = cr.Tree(tree.rulebook, dict(tree.emulator_models), dict(tree.native_models), dict(tree.tests))
    files = getattr(out, part)
    for name, text in files.items():
        if rule_id in cr.cited(text):
            files[name] = cr.strip_citation(text, rule_id)
    return out


def test_every_rule_is_cited_as_its_marker_says():
    assert cr.check(TREE) == []
    assert len(RULES) >= 50
    assert {r.id[0] for r in RULES} == {"E", "K", "T"}


REQUIRED = [(r.id, part) for r in RULES
            for part, needed in (("emulator_models", r.applies in ("both", "emulator only")),
                                 ("native_models", r.applies in ("both", "native only")),
                                 ("tests", True)) if needed]


@pytest.mark.parametrize("rule_id,part", REQUIRED, ids=[f"{r}-{p}" for r, p in REQUIRED])
def test_removing_a_required_citation_fails_naming_the_rule(rule_id, part):
    problems = cr.check(without(TREE, part, rule_id))
    expected = {"emulator_models": "no emulator model cites it", "native_models": "no native model cites it",
                "tests": "no test cites it"}[part]
    assert problems == [p for p in problems if p.startswith(f"{rule_id}: ")] != []
    assert any(expected in p for p in problems), problems


def test_a_one_host_rule_without_its_reason_fails():
    book = TREE.rulebook.replace("**Applies to:** native only — the emulator sends only the requests a test\n"
                                 "sends, one at a time, so no request can race with Unload there.",
                                 "**Applies to:** native only")
    assert book != TREE.rulebook
    problems = cr.check(cr.Tree(book, TREE.emulator_models, TREE.native_models, TREE.tests))
    assert problems == ["K25: marked 'native only' without its reason"]


def test_a_rule_without_a_marker_fails():
    book = TREE.rulebook.replace("### E1 Registration\n**Applies to:** both\n", "### E1 Registration\n")
    assert book != TREE.rulebook
    problems = cr.check(cr.Tree(book, TREE.emulator_models, TREE.native_models, TREE.tests))
    assert problems == ["E1: no '**Applies to:** both | emulator only | native only' line"]


def test_citing_an_unknown_rule_or_a_rule_on_the_wrong_host_fails():
    models = dict(TREE.emulator_models)
    models["extra.py"] = "# rule E99\n# rule K25\n"
    problems = cr.check(cr.Tree(TREE.rulebook, models, TREE.native_models, TREE.tests))
    assert problems == ["E99: cited in extra.py but not defined in docs/engine-rules.md",
                        "K25: marked 'native only' but cited in emulator models ['extra.py']"]


def test_only_test_functions_count_as_tests():
    text = ('def helper():\n    """rule E1"""\n\n\n'
            '@pytest.mark.parametrize("x", [1])\ndef test_a(x):\n    # Shows rule E2.\n    assert x\n')
    tests = cr.python_tests(pathlib.Path("test_x.py"), text)
    assert {name: cr.cited(body) for name, body in tests.items()} == {"test_x.py::test_a": {"E2"}}
    rust = ('/// Rule E3.\n#[test]\nfn shows() {\n    let s = "{";\n}\n\n'
            '/// Rule E4.\nfn helper() {}\n')
    items = {name: (cr.cited(body), is_test) for name, body, is_test in cr.rust_items(rust)}
    assert items == {"shows": ({"E3"}, True), "helper": ({"E4"}, False)}


def test_the_script_fails_on_a_tree_with_one_citation_removed(tmp_path):
    """The command itself, on a copy of the tree whose emulator no longer
    cites rule K4 (the check of a recursive spin-lock acquisition)."""
    for rel in ("docs/engine-rules.md", "tests/emulator", "tests/native/src", "tests/native/tests"):
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    script = [sys.executable, str(HERE / "check_rules.py"), "--root", str(tmp_path)]
    ok = subprocess.run(script, capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stdout.splitlines()[-1]) == (
        0, f"check_rules: all {len(RULES)} rules of docs/engine-rules.md are cited by their models and tests")
    engine = tmp_path / "tests/emulator/fake_engine.py"
    text = engine.read_text()
    assert "# rule K4" in text
    engine.write_text(text.replace("# rule K4", "#"))
    bad = subprocess.run(script, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        "K4: applies to the emulator but no emulator model cites it (tests/emulator/*.py)",
        f"check_rules: 1 problem(s) with the {len(RULES)} rules of docs/engine-rules.md"]
