"""The results model is typed throughout: no ``Any`` and no untyped dict anywhere under ``Summary``."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from allwen.config.schema import Config
from allwen.evaluation.results import Roc, RocCurve, Summary

#: (model, field): why it may hold any type
ALLOWED = {
    ("ScenarioSummary", "settings"): "a grid cell's config keys and values: any config type (a section scenario's: a section)",
    ("SweepValue", "settings"): "one sweep value's config keys and values: any config type",
    ("SweepStep", "winner"): "the winning value's config keys and values: any config type",
}


def _holes(model: type[BaseModel], seen: set) -> list[str]:
    if model in seen or model is Config:  # the resolved config is its own typed schema (tests/config)
        return []
    seen.add(model)
    out = []
    for name, info in model.model_fields.items():
        if (model.__name__, name) in ALLOWED:
            continue
        stack = [info.annotation]
        while stack:
            tp = stack.pop()
            if tp is typing.Any or tp is dict or tp is list:
                out.append(f"{model.__name__}.{name}: {info.annotation}")
                break
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                out += _holes(tp, seen)
            stack += list(typing.get_args(tp))
    return out


def test_summary_has_no_untyped_field():
    assert _holes(Summary, set()) == []


def test_roc_is_typed_and_keeps_the_json_it_was_given():
    binary = Roc(fpr=[0.0, 1.0], tpr=[0.0, 1.0], auc=0.5)
    assert binary.model_dump() == {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "auc": 0.5}
    assert binary.curves()["positive"].auc == 0.5
    multi = Roc(per_class={"Pre": RocCurve(fpr=[0.0, 1.0], tpr=[0.0, 1.0], auc=0.75)}, auc=0.75)
    assert set(multi.model_dump()) == {"per_class", "auc"} and multi.curves()["Pre"].auc == 0.75
    assert Roc().model_dump() == {} and Roc().curves() == {}
