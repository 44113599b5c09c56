"""Which units (and weights) make the model ``allwen export --model NAME`` asks for.

Every name is looked up in the run's results model (``report/summary.json``), where
evaluation recorded each choice once (:mod:`allwen.evaluation.selection`); nothing is
chosen again here. Names accepted:

* ``default_export`` (the default): ``summary.json``'s ``default_export``, chosen on
  validation data only;
* ``best_single``, ``best_ensemble``: the run's recorded choices;
* ``champion[<scenario>]``: that scenario's recorded champion;
* a unit ``<scenario>/fold_<k>``, or an ensemble by its name (``inter[lr=0.01]/kappa``) or
  its folder name (``inter_lr=0.01_kappa``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allwen.ensemble.combine import weights_matter
from allwen.evaluation.results import Ensemble, Summary, load_summary
from allwen.runfolder import RunFolder, UnitFolder, UnitPredictions, parse_unit_name, safe_name

DEFAULT_MODEL = "default_export"
_CHAMPION = re.compile(r"^champion\[(?P<scenario>.+)\]$")


@dataclass
class ModelChoice:
    """A model of a run resolved to its member units and their weights in the average."""

    name: str
    kind: str  # "unit" or "ensemble"
    members: list[str]
    weights: list[float]
    weighting: str = "single"
    info: dict[str, Any] = field(default_factory=dict)


def recorded_name(summary: Summary, name: str | None) -> str:
    """The model name ``name`` stands for in ``summary`` (an error lists what the run holds)."""
    name = name or DEFAULT_MODEL
    aliases = {DEFAULT_MODEL: summary.default_export, "best_single": summary.best_single,
               "best_ensemble": summary.best_ensemble}
    if name in aliases and aliases[name]:
        return aliases[name]
    champion = _CHAMPION.match(name)
    if champion:
        found = [c.name for c in summary.champions if c.scenario == champion["scenario"]]
        if found:
            return found[0]
    for model in (*summary.single_models, *summary.ensembles):
        if name == model.name or (isinstance(model, Ensemble) and name == safe_name(model.name)):
            return model.name
    known = ([DEFAULT_MODEL, "best_single"] + (["best_ensemble"] if summary.best_ensemble else [])
             + [f"champion[{c.scenario}]" for c in summary.champions]
             + [m.name for m in (*summary.single_models, *summary.ensembles)])
    raise ValueError(f"--model {name!r}: no such unit, champion or ensemble in this run; choose from: {', '.join(known)}")


def resolve_model(folder: RunFolder, summary: Summary, name: str | None = None) -> ModelChoice:
    """Turn ``--model NAME`` into member units and weights, from the recorded results."""
    chosen = recorded_name(summary, name)
    model = summary.model(chosen)
    members = summary.export_members(chosen)
    info = {"chosen_as": name or DEFAULT_MODEL}
    if isinstance(model, Ensemble):
        if weights_matter(model.weighting):  # a member of weight 0 changes no prediction: the bundle leaves it out
            members = [(m, w) for m, w in members if w > 0] or members
        return ModelChoice(chosen, "ensemble", [m for m, _ in members], [w for _, w in members],
                           model.weighting, info)
    return ModelChoice(chosen, "unit", [chosen], [1.0], info=info)


def open_run(run_dir: Path | str | RunFolder) -> tuple[RunFolder, Summary]:
    """The run folder and its results model, opened once for a whole export."""
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    if not folder.units_dir.is_dir():
        raise ValueError(f"{folder.root} is not a run folder (no units/); pass the --out folder of `allwen run`")
    return folder, load_summary(folder)


def member_predictions(folder: RunFolder, members: list[str]) -> list[UnitPredictions]:
    """Saved predictions of each member (validation fold and test set), checked like evaluation's."""
    preds = [folder.unit_predictions_of(m) for m in members]
    for p in preds[1:]:
        if p.test_paths != preds[0].test_paths:
            raise ValueError(f"units {preds[0].name} and {p.name} list different test images")
    return preds


def finished_unit(folder: RunFolder, name: str) -> UnitFolder:
    """The folder of a finished unit ``<scenario>/fold_<k>``."""
    unit = folder.unit(*parsed_unit(name))
    if not unit.done or not unit.weights.is_file():
        raise ValueError(f"unit {name}: {unit.path} is not a finished unit (no unit.json or weights.safetensors)")
    return unit


def parsed_unit(name: str) -> tuple[str, int]:
    parsed = parse_unit_name(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a unit name (<scenario>/fold_<k>)")
    return parsed


__all__ = ["DEFAULT_MODEL", "ModelChoice", "finished_unit", "member_predictions", "open_run", "parsed_unit",
           "recorded_name", "resolve_model"]
