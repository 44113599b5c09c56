"""The model card a person reads: every value in words or a Markdown table, never a Python repr."""

from __future__ import annotations

import re

from allwen.bundle import BundleFolder
from allwen.export.card import render_markdown

# a dict or list repr ({...}, [], ['a'), a quoted dict key ('hem': 30) or Python's None/True/False
REPR = re.compile(r"[{}]|\[\]|\[['\"]|'[^'\n]*': |\bNone\b|\bTrue\b|\bFalse\b")


def _repr_lines(card: str) -> list[str]:
    return [line for line in card.splitlines() if REPR.search(line)]


def test_the_card_holds_no_python_repr(ensemble_bundle):
    folder = BundleFolder(ensemble_bundle)
    card = folder.model_card.read_text(encoding="utf-8")
    assert not _repr_lines(card), card
    assert "| class | images | subjects |" in card and "| hem | 30 | 5 |" in card.replace("  ", " ")


def test_a_dataset_without_subject_ids_says_so_in_words(ensemble_bundle):
    import json

    manifest = json.loads(BundleFolder(ensemble_bundle).manifest_path.read_text(encoding="utf-8"))
    manifest["card"]["data"]["n_subjects"] = {}
    manifest["card"]["data"]["classes"] = {"Benign": 420, "Early": 980}
    manifest["card"]["split"]["notes"] = ["a note"]
    card = render_markdown(manifest)
    assert not _repr_lines(card), card
    assert "| Benign | 420 |" in card and "No subject ids" in card and "subjects |" not in card
    assert REPR.search("- classes: {'Benign': 420}") and REPR.search("n subjects: {}")  # the pattern sees the old card
