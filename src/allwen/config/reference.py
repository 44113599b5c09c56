"""The configuration reference, written from the schema itself.

The documentation site's "Configuration reference" page is this module's output (an MkDocs hook
calls :func:`reference_markdown` at build time), so a key added to the schema is documented the
moment it exists: its type in words, its default and its ``Field(description=...)``.
"""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from allwen.config.schema import Config

_WORDS = {int: "integer", float: "number", str: "text", bool: "true or false", type(None): "null"}


def type_words(annotation: Any) -> str:
    """A type annotation in plain words: ``int | Literal["auto"]`` -> ``integer, or auto``."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [type_words(a) for a in get_args(annotation)]
        return ", or ".join(dict.fromkeys(parts))
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        return f"list of {_plural(type_words(item))}"
    if origin is dict:
        key, value = get_args(annotation) or (Any, Any)
        return f"mapping of {type_words(key)} to {type_words(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if annotation is Any:
        return "any value"
    return _WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(words: str) -> str:
    if words.startswith("one of "):
        return "values, each " + words
    if words.startswith(("list of", "mapping of")):
        return words.replace("list of", "lists of", 1).replace("mapping of", "mappings of", 1)
    return {"integer": "integers", "number": "numbers", "text": "texts"}.get(words, words)


def _bounds(info: FieldInfo) -> str:
    words = []
    for meta in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                words.append(f"{sign} {value}")
        if getattr(meta, "min_length", None):
            words.append(f"at least {meta.min_length} item(s)")
    return ", ".join(words)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _sections(model: type[BaseModel]) -> list[tuple[str, type[BaseModel], FieldInfo | None]]:
    """Every section of the schema (dotted prefix, model), depth first, the top level first."""
    found = [("", model, None)]
    for name, info in model.model_fields.items():
        for candidate in (info.annotation, *get_args(info.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                for prefix, sub, sub_info in _sections(candidate):
                    found.append((f"{name}.{prefix}".rstrip("."), sub, sub_info if prefix else info))
    return found


#: Words for keys whose schema field has no ``description`` yet; the schema's own description wins.
#: A test checks that every key here exists, so a renamed key cannot leave a stale line.
FALLBACK = {
    "name": "the run's name, shown in the report",
    "data": "where the images are and how they are read",
    "split": "how images are divided into test, training and validation sides",
    "model": "the backbone, its weights and the head",
    "train": "optimisation and the two training stages",
    "ensemble": "which ensembles are built and how champions are chosen",
    "evaluation": "bootstrap intervals and test-time augmentation",
    "data.source": "how the dataset is laid out; auto guesses it from the folder",
    "data.clahe": "apply CLAHE (contrast-limited adaptive histogram equalisation) to every image (Experiment C)",
    "data.clahe_clip": "CLAHE clip limit",
    "data.clahe_grid": "CLAHE tiles per side",
    "split.group_by": "subject: every subject's images on one side; image: images split one by one",
    "split.duplicate_aware": "keep every group of byte-identical images on one side",
    "split.seed": "seed of the split's random draws",
    "model.backbone": "timm model name, e.g. tf_efficientnetv2_m, efficientnet_b0, mobilenetv2_100",
    "model.head": "sigmoid (one unit), softmax, mlp256 (C), mlp128 (E) or fc_relu (D)",
    "model.activation": "selu6: min(6, selu(x)) after the MBConv expansions (Experiment D)",
    "train.batch_size": "images per training step (over all devices)",
    "train.optimizer": "the optimiser of the epochs-based stages",
    "train.lr": "learning rate",
    "train.weight_decay": "weight decay of the optimiser",
    "train.schedule": "learning-rate schedule; exponential is TF-style (decay_steps, decay_rate)",
    "train.decay_steps": "exponential schedule: steps per decay",
    "train.decay_rate": "exponential schedule: factor per decay_steps",
    "train.class_weights": "balanced: n_samples / (n_classes x n_class_samples) of the training fold; none; or one weight per class",
    "train.monitor": "validation metric that picks the kept epoch and drives early stopping",
    "train.stage1": "stage 1: the head trained on the frozen backbone",
    "train.stage2": "stage 2: the upper blocks unfrozen and trained with the head; null = one stage",
    "train.precision": "auto: bf16 mixed precision on GPU, 32-bit on CPU",
    "train.accelerator": "auto: the GPU when there is one",
    "train.logger": "where training logs go (units/<scenario>/fold_<k>/logs/)",
    "train.seed": "seed of initial weights, shuffling, dropout and augmentation (plus the fold number)",
    "train.stage1.epochs": "epochs of the stage; 0 skips it",
    "train.stage2.epochs": "epochs of the stage; 0 skips it",
    "ensemble.weightings": "the weightings built for every ensemble; greedy adds scenarios/greedy",
    "ensemble.champion_metric": "metric that picks champions and weighs the greedy selection",
    "evaluation.bootstrap": "bootstrap resamples for every interval; 0 = no intervals",
    "evaluation.confidence": "confidence level of the intervals",
    "evaluation.seed": "seed of the bootstrap and permutation draws",
}


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown(model: type[BaseModel] = Config) -> str:
    """One table per config section: key, type in words (with bounds), default, description."""
    out = []
    for prefix, section, info in _sections(model):
        title = f"`{prefix}`" if prefix else "Top level"
        out += [f"## {title}", ""]
        doc = (section.__doc__ or "").strip().split("\n\n")[0]
        if prefix and info is not None and type(None) in get_args(info.annotation):
            doc = (doc + " " if doc else "") + f"`{prefix}: null` turns the whole section off."
        if doc and section is not BaseModel:
            out += [" ".join(doc.split()), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in section.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            kind = type_words(field.annotation)
            bounds = _bounds(field)
            if bounds:
                kind += f" ({bounds})"
            out.append(f"| `{key}` | {_escape(kind)} | {_escape(_default(field))} | {_escape(field.description or FALLBACK.get(key, ''))} |")
        out.append("")
    return "\n".join(out)


def presets_markdown() -> str:
    """The built-in presets with the first sentence of each one's leading comment."""
    from allwen.config.load import list_presets, preset_summary

    rows = ["| preset | what it is |", "|---|---|"]
    rows += [f"| `{name}` | {_escape(preset_summary(name))} |" for name in list_presets()]
    return "\n".join(rows) + "\n"
