"""The Python API: the functions the ``allwen`` commands call, for notebooks and scripts.

``allwen.run``, ``allwen.report``, ``allwen.export_bundle`` and ``allwen.load_bundle`` are these
(``allwen/__init__.py`` imports them lazily, so ``import allwen`` stays light). Each takes what the
command takes and returns what it prints: the CLI is a thin shell over them, so a script and the
command line cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from allwen.config import Config
    from allwen.pipeline import RunResult
    from allwen.serve.bundle import Bundle

PathLike = str | os.PathLike[str]


def _overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"train.lr": 0.001}`` or ``["train.lr=0.001"]`` as ``--set`` strings (values read as YAML)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise TypeError("overrides: give a list of 'key=value' strings or a dict, not one string")
    if isinstance(overrides, Mapping):
        import json

        # JSON is YAML: numbers, lists and dicts keep their type; strings are quoted
        return [f"{key}={json.dumps(value) if not isinstance(value, os.PathLike) else json.dumps(os.fspath(value))}"
                for key, value in overrides.items()]
    return [str(item) for item in overrides]


def load(config: "str | PathLike | Config", overrides: Mapping[str, Any] | Sequence[str] | None = None) -> "Config":
    """A preset name, a YAML file or a ``Config``, with ``--set``-style overrides applied and validated."""
    from allwen.config import Config, load_config

    if isinstance(config, Config):
        if not overrides:
            return config
        from allwen.config import config_to_yaml

        import yaml

        from allwen.config.load import build_config, parse_override, set_dotted

        raw = yaml.safe_load(config_to_yaml(config))
        for text in _overrides(overrides):
            key, value = parse_override(text)
            set_dotted(raw, key, value)
        return build_config(raw, Path.cwd())
    return load_config(os.fspath(config), _overrides(overrides))


def run(config: "str | PathLike | Config", out: PathLike, overrides: Mapping[str, Any] | Sequence[str] | None = None,
        *, quiet: bool = False, **pipeline: Any) -> "RunResult":
    """``allwen run CONFIG --out OUT --set k=v ...``: split, train, ensembles, statistics, report.

    Resumable like the command: a second call on the same ``out`` finishes what is missing. Returns
    the run folder, the report's path and the typed results (``result.summary``). ``pipeline``
    passes the command's other options (``executor``, ``address``, ``cpus_per_unit``).
    """
    from allwen.pipeline import run_pipeline

    return run_pipeline(load(config, overrides), Path(out), quiet=quiet, **pipeline)


def report(run: "PathLike | RunResult") -> Path:
    """``allwen report RUN``: evaluation and report rebuilt from the run's saved predictions; the
    report's ``index.html``."""
    from allwen.pipeline import rebuild_report

    return rebuild_report(Path(getattr(run, "run_dir", run)))


def export_bundle(run: "PathLike | RunResult", out: PathLike, model: str | None = None, fmt: str | None = None,
                  *, target_accuracy: float | None = None, conformal_levels: Sequence[float] | None = None,
                  ood_method: str = "mahalanobis", ood_quantile: float | None = None,
                  ood_max_images: int | None = None) -> Path:
    """``allwen export RUN --out OUT``: a checked bundle of ``model`` (default: the run's
    ``default_export``, chosen on validation data); the keywords are the command's options."""
    from allwen.export import AbstainSettings
    from allwen.export import export_bundle as write_bundle

    given = {"target_accuracy": target_accuracy, "ood_quantile": ood_quantile, "ood_max_images": ood_max_images,
             "levels": tuple(float(v) for v in conformal_levels) if conformal_levels is not None else None}
    settings = AbstainSettings(ood_method=ood_method, **{k: v for k, v in given.items() if v is not None})
    return write_bundle(Path(getattr(run, "run_dir", run)), Path(out), model, fmt, settings)


def load_bundle(path: PathLike, runtime: str = "auto", device: str = "auto") -> "Bundle":
    """A bundle ready to ``predict`` (files checked by sha256 first); what ``allwen predict`` and
    ``allwen serve`` open."""
    from allwen.serve.bundle import load_bundle as open_bundle

    return open_bundle(path, runtime=runtime, device=device)


__all__ = ["export_bundle", "load", "load_bundle", "report", "run"]
