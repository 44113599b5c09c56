"""A bundle member from a finished unit: its architecture and its :class:`~allwen.bundle.Preprocessing`,
as the unit recorded them when it was trained (the weights' own metadata)."""

from __future__ import annotations

from typing import Any

from allwen.bundle import PREPROCESSING_KEY, MemberSpec, Preprocessing, member_folder, safetensors_metadata
from allwen.export.choice import finished_unit, parsed_unit
from allwen.runfolder import RunFolder, UnitFolder

ARCHITECTURE = ("backbone", "head", "activation")


def member_spec(folder: RunFolder, index: int, name: str, weight: float) -> tuple[MemberSpec, UnitFolder]:
    """Member ``index`` of a bundle (folder ``members/NN_<name>``) and the unit folder its files come from."""
    unit = finished_unit(folder, name)
    meta = safetensors_metadata(unit.weights)
    missing = [k for k in (*ARCHITECTURE, "classes") if k not in meta]
    if missing:
        raise ValueError(f"{unit.weights}: its metadata lacks {missing}; it was not written by `allwen run`, "
                         "so it cannot be exported")
    if PREPROCESSING_KEY in meta:
        preprocessing, dropout = Preprocessing.model_validate(meta[PREPROCESSING_KEY]), float(meta["dropout"])
    else:
        preprocessing, dropout = legacy_preprocessing(folder, parsed_unit(name)[0], meta)
    spec = MemberSpec(
        name=name, weight=float(weight), folder=member_folder(index, name),
        backbone=meta["backbone"], head=meta["head"], pretrained_tag=meta.get("pretrained_tag"),
        activation=meta["activation"], dropout=dropout, best_stage=meta.get("best_stage"),
        layer_defaults=meta.get("layer_defaults") or "torch", drop_path=meta.get("drop_path"),
        data=preprocessing.data_steps(), data_config=preprocessing.normalisation(), classes=meta["classes"],
    )
    return spec, unit


def legacy_preprocessing(folder: RunFolder, scenario: str, meta: dict[str, Any]) -> tuple[Preprocessing, float]:
    """Units trained before the record existed saved the size, CLAHE on/off and the backbone's config in
    their metadata; the CLAHE settings and dropout are their scenario's config's."""
    from allwen.config.load import ConfigError, build_config

    try:
        cfg = build_config(folder.scenario_config_yaml(scenario))
    except ConfigError as exc:
        raise ValueError(f"{folder.scenario_config_path(scenario)}: {exc}") from None
    data = cfg.data.model_copy(update={k: meta[k] for k in ("image_size", "clahe") if k in meta})
    return Preprocessing.of(data, meta["data_config"]), float(cfg.model.dropout)


__all__ = ["legacy_preprocessing", "member_spec"]
