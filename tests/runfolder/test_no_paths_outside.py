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
