"""Read what a finished run folder holds, defensively, to choose and describe a model to export.

Other parts of allwen own these files and their formats evolve (``summary.json``, ensemble
folders), so this module reads only the few fields it needs, each through one small function,
and says which file to regenerate when something is missing.

Model names accepted by ``allwen export --model``:

* a unit: ``<scenario>/fold_<k>`` (e.g. ``lr=0.01/fold_0``);
* a scenario's champion: ``champion[<scenario>]`` (chosen by the run's own champion rule);
* ``best_single``: the run's best single model (chosen on validation data by default);
* an ensemble: its name (``inter[lr=0.01]/kappa``, ``intra/accuracy``) or its folder name;
* ``best_ensemble`` (the default): the ensemble whose members' validation scores, weighted by
  the ensemble weights, are highest (see :func:`best_ensemble`). No test data is used.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from allwen.ensemble.build import TEST_FILE, VAL_FILE, UnitPredictions, load_unit_predictions, select_champion

log = logging.getLogger(__name__)

_UNIT = re.compile(r"^(?P<scenario>[^/]+)/fold_(?P<fold>\d+)$")
_CHAMPION = re.compile(r"^champion\[(?P<scenario>.+)\]$")
DEFAULT_MODEL = "best_ensemble"


@dataclass
class ModelChoice:
    """A model of a run resolved to its member units and their ensemble weights."""

    name: str
    kind: str  # "unit" or "ensemble"
    members: list[str]
    weights: list[float]
    weighting: str = "single"
    info: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild it with `allwen report {path.parents[1]}`") from None
    return value if isinstance(value, dict) else None


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``report/summary.json`` as a dict ({} when the run has none yet)."""
    return _read_json(Path(run_dir) / "report" / "summary.json") or {}


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's saved config as plain YAML data ({} if absent)."""
    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _section(cfg: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def unit_dir(run_dir: Path, name: str) -> Path:
    """The folder of unit ``<scenario>/fold_<k>``; a ValueError when it is not a finished unit."""
    match = _UNIT.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a unit name (<scenario>/fold_<k>)")
    folder = Path(run_dir) / "units" / match["scenario"] / f"fold_{match['fold']}"
    if not (folder / "unit.json").is_file() or not (folder / "weights.safetensors").is_file():
        raise ValueError(f"unit {name}: {folder} is not a finished unit (no unit.json or weights.safetensors)")
    return folder


def list_units(run_dir: Path) -> list[str]:
    """Names of the run's finished units, sorted."""
    found = sorted(Path(run_dir).glob("units/*/fold_*/unit.json"))
    return [f"{p.parent.parent.name}/{p.parent.name}" for p in found]


def unit_predictions(run_dir: Path, name: str) -> UnitPredictions:
    """A unit's saved validation and test predictions."""
    match = _UNIT.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a unit name (<scenario>/fold_<k>)")
    return load_unit_predictions(unit_dir(run_dir, name), match["scenario"], int(match["fold"]))


def unit_config(run_dir: Path, name: str) -> dict[str, Any]:
    """The unit's scenario config (``units/<scenario>/config.yaml``), falling back to the run's."""
    scenario_cfg = unit_dir(run_dir, name).parent / "config.yaml"
    if scenario_cfg.is_file():
        return yaml.safe_load(scenario_cfg.read_text()) or {}
    return read_run_config(run_dir)


def list_ensembles(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every ``ensembles/<folder>/ensemble.json`` with members and weights, by ensemble name."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(run_dir).glob("ensembles/*/ensemble.json")):
        info = _read_json(path) or {}
        members, weights = info.get("members"), info.get("weights")
        if not isinstance(members, list) or not isinstance(weights, list) or len(members) != len(weights):
            log.warning("%s: no members/weights lists of equal length; skipped", path)
            continue
        out[str(info.get("name") or path.parent.name)] = {**info, "folder": path.parent.name}
    return out


def _selection(run_dir: Path) -> tuple[str, str]:
    ens = _section(read_run_config(run_dir), "ensemble")
    return str(ens.get("champion_by") or "validation"), str(ens.get("champion_metric") or "accuracy")


def validation_score(run_dir: Path, unit: str, metric: str) -> float:
    """A unit's ``metric`` on its own validation fold, from ``predictions_val.csv``."""
    from allwen.ensemble.weighting import WEIGHTINGS

    preds = unit_predictions(run_dir, unit)
    return float(WEIGHTINGS[metric](preds.val_y, preds.val_proba))


def best_single(run_dir: Path) -> str:
    """The run's best single model: ``summary.json``'s choice, else the best validation score."""
    name = read_summary(run_dir).get("best_single")
    if isinstance(name, str) and name in list_units(run_dir):
        return name
    _, metric = _selection(run_dir)
    units = list_units(run_dir)
    if not units:
        raise ValueError(f"{run_dir}: no finished units; run `allwen run CONFIG --out {run_dir}` first")
    scores = [validation_score(run_dir, u, metric) for u in units]
    return units[int(np.nanargmax(scores))]


def best_ensemble(run_dir: Path) -> str | None:
    """The ensemble with the highest weighted mean of its members' validation scores.

    An ensemble has no validation predictions of its own (each fold model validates on other
    images), so its members' scores on their own folds, weighted as the ensemble weights them,
    stand in; the run's ``ensemble.champion_metric`` is the score. Ties go to the first name.
    """
    ensembles = list_ensembles(run_dir)
    if not ensembles:
        return None
    _, metric = _selection(run_dir)
    cache: dict[str, float] = {}

    def score(info: dict[str, Any]) -> float:
        total = 0.0
        for member, weight in zip(info["members"], info["weights"]):
            if member not in cache:
                cache[member] = validation_score(run_dir, member, metric)
            total += float(weight) * cache[member]
        return total

    scored = {name: score(info) for name, info in ensembles.items()}
    return max(scored, key=lambda n: (scored[n], -list(scored).index(n)))


def resolve_model(run_dir: Path, name: str | None = None) -> ModelChoice:
    """Turn ``--model NAME`` into member units and weights; the error lists what the run holds."""
    run_dir = Path(run_dir)
    if not (run_dir / "units").is_dir():
        raise ValueError(f"{run_dir} is not a run folder (no units/); pass the --out folder of `allwen run`")
    name = name or DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        chosen = best_ensemble(run_dir)
        if chosen is None:
            log.info("%s has no ensembles; exporting its best single model", run_dir)
            return resolve_model(run_dir, "best_single")
        return resolve_model(run_dir, chosen)
    if name == "best_single":
        unit = best_single(run_dir)
        return ModelChoice(unit, "unit", [unit], [1.0], info={"chosen_as": "best_single"})
    champion = _CHAMPION.match(name)
    if champion:
        scenario = champion["scenario"]
        units = [u for u in list_units(run_dir) if u.startswith(f"{scenario}/")]
        if not units:
            raise ValueError(f"champion[{scenario}]: no scenario {scenario!r} in {run_dir}; scenarios: "
                             f"{', '.join(sorted({u.split('/')[0] for u in list_units(run_dir)}))}")
        by, metric = _selection(run_dir)
        best = select_champion([unit_predictions(run_dir, u) for u in units], by=by, metric=metric)
        return ModelChoice(best.name, "unit", [best.name], [1.0],
                           info={"chosen_as": name, "champion_by": by, "champion_metric": metric})
    if name in list_units(run_dir):
        return ModelChoice(name, "unit", [name], [1.0])
    ensembles = list_ensembles(run_dir)
    for ens_name, info in ensembles.items():
        if name in (ens_name, info["folder"]):
            return ModelChoice(ens_name, "ensemble", [str(m) for m in info["members"]],
                               [float(w) for w in info["weights"]], str(info.get("weighting") or "weighted"), info)
    known = list_units(run_dir) + [f"champion[{s}]" for s in sorted({u.split('/')[0] for u in list_units(run_dir)})]
    known += list(ensembles) + ["best_single", DEFAULT_MODEL]
    raise ValueError(f"--model {name!r}: no such unit, champion or ensemble in {run_dir}; choose from: {', '.join(known)}")


def member_predictions(run_dir: Path, members: list[str]) -> list[UnitPredictions]:
    """Saved predictions of each member (validation fold and test set)."""
    preds = [unit_predictions(run_dir, m) for m in members]
    for p in preds[1:]:
        if p.test_paths != preds[0].test_paths:
            raise ValueError(f"units {preds[0].name} and {p.name} list different test images in {TEST_FILE}")
    return preds


__all__ = ["DEFAULT_MODEL", "ModelChoice", "TEST_FILE", "VAL_FILE", "best_ensemble", "best_single",
           "list_ensembles", "list_units", "member_predictions", "read_run_config", "read_summary",
           "resolve_model", "unit_config", "unit_dir", "unit_predictions"]
