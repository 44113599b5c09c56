"""The configuration reference is written from the schema: every key, in plain words."""

from __future__ import annotations

import re

from allwen.config.reference import FALLBACK, presets_markdown, reference_markdown, type_words
from allwen.config.schema import Config, TrainConfig
from allwen.config.load import list_presets

from typing import Literal


def _all_keys(model, prefix=""):
    from pydantic import BaseModel
    from typing import get_args

    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key
        for candidate in (info.annotation, *get_args(info.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from _all_keys(candidate, key + ".")


def test_every_schema_key_has_a_row_with_its_default():
    text = reference_markdown()
    keys = list(_all_keys(Config))
    assert "train.stage1.epochs" in keys and "ensemble.champion_by" in keys
    for key in keys:
        assert f"| `{key}` |" in text, key
    row = next(line for line in text.splitlines() if line.startswith("| `ensemble.champion_by` |"))
    assert "`validation`" in row and "`test_all`" in row


def test_rows_speak_plain_words_not_python_types():
    text = reference_markdown()
    for tag in ("Literal", "Optional", "NoneType", "list[", "dict[", "<bool>", "int |"):
        assert tag not in text, tag
    assert type_words(int | Literal["auto"]) == "integer, or one of `auto`"
    assert type_words(list[float]) == "list of numbers"
    assert type_words(TrainConfig.model_fields["stage2"].annotation) == "section, or null"


def test_every_key_is_explained():
    """Each row has words: the schema's description, or the fallback until the schema has one."""
    for line in reference_markdown().splitlines():
        if line.startswith("| `"):
            assert not line.rstrip().endswith("|  |"), line


def test_fallback_names_only_existing_keys():
    keys = set(_all_keys(Config))
    stale = sorted(set(FALLBACK) - keys)
    assert not stale, f"FALLBACK describes keys the schema no longer has: {stale}"


def test_presets_table_lists_every_preset():
    table = presets_markdown()
    for name in list_presets():
        assert re.search(rf"^\| `{name}` \| \S", table, re.M), name
