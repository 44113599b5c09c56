"""Only the run-folder layer spells the run folder's names: a scan of the source for them.

The import-linter contract ``run-folder-paths`` keeps ``allwen.runfolder._paths`` private;
this test keeps other modules from spelling the same names as literals. A name is flagged
when a string in code (not a docstring) is one of the run folder's file names, or a path
joined with ``/`` starts with one of its folders (``run_dir / "units"``, ``f"units/{s}"``).
Prose that mentions a file (help texts, error messages) is fine.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import allwen
from allwen.bundle import layout as bundle_layout
from allwen.runfolder import _paths

SRC = Path(allwen.__file__).parent
FILES = {Path(v).name for k, v in vars(_paths).items() if k.isupper() and isinstance(v, str) and "." in Path(v).name}
FILES -= {"weights.safetensors", "data_config.json"}  # a bundle's member folders use the same names (allwen.bundle.layout)
FILES -= {"index.html"}  # also the comparison page's and the web app's page name
FOLDERS = {"units", "ensembles", "splits", "report", "sweep", "cache", "figures"}
PATH_START = re.compile(rf"^({'|'.join(sorted(FOLDERS))})(/|$)")

#: "module:literal": why it may stay
ALLOWED: dict[str, str] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _joined(node: ast.AST) -> list[ast.AST]:
    """Operands of ``a / b`` path joins."""
    return [n for b in ast.walk(node) if isinstance(b, ast.BinOp) and isinstance(b.op, ast.Div) for n in (b.left, b.right)]


def spelled(source: str) -> list[str]:
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if node.value in FILES or any(node.value.endswith("/" + f) for f in FILES):
                found.append(node.value)
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            if PATH_START.match(str(node.values[0].value)):
                found.append(str(node.values[0].value))
    for operand in _joined(tree):
        if isinstance(operand, ast.Constant) and isinstance(operand.value, str) and PATH_START.match(operand.value):
            found.append(operand.value)
    return found


def test_the_scan_finds_what_it_looks_for():
    assert spelled('p = run_dir / "units" / name') == ["units"]
    assert spelled('p = folder / "split.csv"') == ["split.csv"]
    assert spelled('names = ("summary.json", "x")') == ["summary.json"]
    assert spelled('p = f"units/{s}/fold_{k}"') == ["units/"]
    assert spelled('"""Reads ``unit.json``."""\nraise ValueError(f"{path}: no unit.json; run again")\nk = d["units"]') == []


def test_no_module_outside_the_run_folder_layer_spells_its_names():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("runfolder/"):
            continue
        for literal in spelled(path.read_text(encoding="utf-8")):
            if f"{rel}:{literal}" not in ALLOWED:
                offenders.append(f"{rel}: {literal!r}")
    assert offenders == [], "ask allwen.runfolder.RunFolder for these paths instead:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- tests build paths through the layers too

TESTS = Path(__file__).parents[1]
BUNDLE_FILES = {v for k, v in vars(bundle_layout).items() if k.isupper() and isinstance(v, str) and "." in v}
BUNDLE_FILES -= {"weights.safetensors", "data_config.json", "model.onnx"}  # a unit's and an export's members share them
TEST_NAMES = FILES | BUNDLE_FILES
# folders a path starts with; ``sweep`` and ``cache`` alone also name other folders in tests (a sweep run, a cache dir)
TEST_PATH_START = re.compile(r"^((units|ensembles|splits|report)(/|$)|sweep/)")

#: test file -> why it spells run-folder or bundle paths itself: the spelling is what it tests
TESTS_ALLOWED: dict[str, str] = {
    "runfolder/test_layout.py": "tests the layout: the names RunFolder must produce",
    "runfolder/test_no_paths_outside.py": "this scan's own examples",
    "reliability/test_tamper.py": "edits named files behind the layer's back",
    "reliability/test_run_files.py": "truncates and deletes named files behind the layer's back",
    "reliability/test_kill_resume.py": "kills a run and inspects the half-written files by name",
    "reliability/test_bundle_probe.py": "edits a bundle's files behind the layer's back",
    "reliability/test_sweep.py": "kills a sweep between steps and looks at each step's files",
    "data/test_hashes.py": "the hash cache's own file, read and corrupted by name",
    "notebooks/test_kaggle_notebook.py": "checks the archive a person downloads holds these names",
}

#: files still to convert, with the number of names each spells: the count may only go down, and must
#: be lowered when it does (none left: unit folders come from ``RunFolder.units_on_disk``)
TESTS_NOT_YET: dict[str, int] = {}


def spelled_paths(source: str) -> list[str]:
    """Run-folder and bundle names used as paths: ``/`` join operands, f-strings and glob patterns."""
    tree = ast.parse(source)
    operands = _joined(tree) + [node.args[0] for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
                                and isinstance(node.func, ast.Attribute) and node.func.attr in ("glob", "rglob")]
    found = []
    for op in operands:
        if isinstance(op, ast.Constant) and isinstance(op.value, str):
            if op.value in TEST_NAMES or TEST_PATH_START.match(op.value) or any(op.value.endswith("/" + f) for f in TEST_NAMES):
                found.append(op.value)
        elif isinstance(op, ast.JoinedStr) and op.values and isinstance(op.values[0], ast.Constant):
            if TEST_PATH_START.match(str(op.values[0].value)):
                found.append(str(op.values[0].value))
    return found


def test_the_test_scan_finds_paths_not_prose():
    assert sorted(spelled_paths('p = run / "report" / "summary.json"')) == ["report", "summary.json"]
    assert spelled_paths('p = b / "bundle.json"; q = run.glob("units/*/fold_*/unit.json")') == [
        "bundle.json", "units/*/fold_*/unit.json"]
    assert spelled_paths('p = tmp_path / "sweep" / "cache"; assert "reliability.png" in card') == []


def test_tests_build_run_folder_and_bundle_paths_through_their_layers():
    spelled = {}
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS).as_posix()
        found = spelled_paths(path.read_text(encoding="utf-8"))
        if found and rel not in TESTS_ALLOWED:
            spelled[rel] = found
    grown = {rel: names for rel, names in spelled.items() if len(names) > TESTS_NOT_YET.get(rel, 0)}
    assert not grown, ("ask RunFolder / UnitFolder (allwen.runfolder) or BundleFolder (allwen.bundle) for these paths:\n"
                       + "\n".join(f"{rel}: {names}" for rel, names in grown.items()))
    stale = {rel: n for rel, n in TESTS_NOT_YET.items() if len(spelled.get(rel, [])) < n}
    assert not stale, f"fewer names spelled now: lower TESTS_NOT_YET to {({r: len(spelled.get(r, [])) for r in stale})}"
