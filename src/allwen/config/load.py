"""Load, override, validate and save configurations.

Precedence: ``--set`` overrides, then the YAML file (or preset), then schema defaults.
"""

from __future__ import annotations

import copy
import itertools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from allwen.io import YamlError, load_yaml

from allwen.config.schema import Config


PATH_KEYS = ("data.path", "model.weights")


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the config."""


def list_presets() -> list[str]:
    folder = resources.files("allwen.config") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_summary(name: str) -> str:
    """The first sentence of a preset's leading comment: what the preset is for, in one line."""
    text = (resources.files("allwen.config") / "presets" / f"{name}.yaml").read_text()
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    joined = " ".join(c for c in comment if c)
    end = joined.find(". ")
    return joined[: end + 1] if end >= 0 else joined


PRESET_PREFIX = "preset:"


def _looks_like_path(source: str) -> bool:
    """A path names a folder or a YAML suffix; a bare word may be a preset's name."""
    return any(sep in source for sep in ("/", "\\")) or source.startswith(".") or source.endswith((".yaml", ".yml"))


def resolve_source(source: str | Path) -> tuple[str | None, Path | None]:
    """(preset name, None) or (None, file path) for a ``CONFIG`` argument: presets by name, files by path.

    A bare name that is a preset is the preset; if a file or folder of that name also exists
    here, the choice is the user's, so it is an error that names both and how to pick one
    (``preset:NAME`` or ``./NAME``). ``preset:NAME`` is always the preset, a ``Path`` or a
    string with a folder or a YAML suffix always a file.
    """
    text = str(source)
    presets = list_presets()
    if isinstance(source, str) and text.startswith(PRESET_PREFIX):
        name = text[len(PRESET_PREFIX):]
        if name not in presets:
            raise ConfigError(f"config {text}: no preset {name!r} (presets: {', '.join(presets)})")
        return name, None
    path = Path(text).expanduser()
    if isinstance(source, str) and not _looks_like_path(text) and text in presets:
        if path.exists():
            kind, use = ("folder", f"the path of a YAML file in it (./{text}/NAME.yaml)") if path.is_dir() \
                else ("file", f"./{text} for the file")
            raise ConfigError(
                f"config {text}: both the built-in preset {text!r} and the {kind} {path.resolve()} exist; "
                f"write preset:{text} for the preset, or {use}"
            )
        return text, None
    if not path.exists():
        hint = ""
        if path.stem in presets and path.suffix in ("", ".yaml", ".yml"):
            hint = f"; for the built-in preset write {path.stem} (or preset:{path.stem})"
        raise ConfigError(f"config {text}: no such file and not a preset{hint} (presets: {', '.join(presets)})")
    if path.is_dir():
        raise ConfigError(f"config {text}: is a folder; give a YAML file in it, or a preset name "
                          f"(presets: {', '.join(presets)})")
    return None, path


def _read_yaml(source: str | Path, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path | None]:
    preset, path = resolve_source(source)
    if preset is not None:
        text = (resources.files("allwen.config") / "presets" / f"{preset}.yaml").read_text()
        where: Path | None = Path.cwd()  # a preset's relative paths are relative to the shell
    else:
        text, where = path.read_text(), path.parent
    name = f"preset {preset}" if preset is not None else str(path)
    try:
        raw = load_yaml(text, name) or {}
    except YamlError as exc:
        raise ConfigError(f"config {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {source!s}: the top level must be a mapping of sections")
    return _with_parents(raw, source, where if preset is None else None, seen), where


#: keys a config replaces whole instead of merging into what it extends
REPLACED_WHOLE = ("scenarios", "sweep")


def merge_configs(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent``: sections merge key by key; any other value, and ``scenarios`` and
    ``sweep`` (a grid is one choice), is replaced."""
    out = copy.deepcopy(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in REPLACED_WHOLE:
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _with_parents(raw: dict[str, Any], source: str | Path, folder: Path | None,
                  seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Resolve ``extends: PRESET`` (or ``extends: ./base.yaml``, relative to this file) into one
    mapping: the parent's, with this config's keys on top; before any ``--set``."""
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"config {source!s}: extends must name a preset or a YAML file, got {parent!r}")
    if _looks_like_path(parent):
        path = Path(parent).expanduser()
        target: str | Path = path if path.is_absolute() or folder is None else folder / path
        key = str(Path(target).resolve())
    else:
        target = key = parent if parent.startswith(PRESET_PREFIX) else f"{PRESET_PREFIX}{parent}"
    if key in seen:
        raise ConfigError(f"config {source!s}: extends {parent!r}, which extends it again ({' -> '.join((*seen, key))})")
    parent_raw, parent_where = _read_yaml(target, (*seen, key))
    if isinstance(target, Path):  # a parent file's relative paths are relative to that file
        for dotted in PATH_KEYS:
            section, name = dotted.split(".")
            value = (parent_raw.get(section) or {}).get(name)
            if isinstance(value, str) and value not in ("hub", "none") and not Path(value).expanduser().is_absolute():
                parent_raw[section][name] = str((Path(parent_where) / value).resolve())
    return merge_configs(parent_raw, raw)


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with the value read as YAML (so 1e-3, true, [1, 2] work)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        parsed = load_yaml(value, f"--set {key}") if value.strip() else None
    except YamlError as exc:
        if "duplicate key" in exc.problem or "alias" in exc.problem:
            raise ConfigError(str(exc)) from None
        parsed = value
    if isinstance(parsed, str):  # YAML leaves "1e-3" a string; numbers are numbers
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key, parsed


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key; check the spelling (`allwen config` prints every key)")
        else:
            allowed = ""
            ctx = err.get("ctx") or {}
            if "expected" in ctx:
                allowed = f"; allowed: {ctx['expected']}"
            got = repr(err.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."  # one line, even for a huge value
            lines.append(f"{key}: {err['msg']} (got {got}){allowed}")
    return "invalid config: " + "; ".join(lines)


def build_config(raw: dict[str, Any], base_dir: Path | None = None) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    if base_dir is not None:
        cfg = resolve_paths(cfg, base_dir)
    for key in cfg.scenarios:
        _check_scenario_key(cfg, key)
    for step in cfg.sweep:
        for key in step:
            _check_scenario_key(cfg, key, "sweep")
    if cfg.scenarios:
        expand_scenarios(cfg)  # every combination valid now, not after the units before it have trained
    return cfg


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file or preset name, apply ``--set`` overrides and validate."""
    raw, base_dir = _read_yaml(source) if source is not None else ({}, Path.cwd())
    for text in overrides or []:
        key, value = parse_override(text)
        if key in PATH_KEYS and isinstance(value, str) and value not in ("hub", "none"):
            value = str(Path(value).expanduser().resolve())  # --set paths are relative to the shell
        if key == "scenarios" and isinstance(value, dict):
            _resolve_scenario_paths(value, Path.cwd())
        set_dotted(raw, key, value)
    try:
        return build_config(raw, base_dir)
    except ConfigError as exc:
        if source is None:
            raise
        _, path = resolve_source(source)
        raise ConfigError(f"config {path if path is not None else source}: {exc}") from None


def resolve_paths(cfg: Config, base_dir: Path) -> Config:
    """Relative data and weights paths are relative to the config file, not the shell."""
    data = cfg.data
    if data.path and not Path(data.path).expanduser().is_absolute():
        data.path = str((base_dir / data.path).resolve())
    weights = cfg.model.weights
    if weights not in ("hub", "none") and not Path(weights).is_absolute():
        cfg.model.weights = str((base_dir / weights).resolve())
    _resolve_scenario_paths(cfg.scenarios, base_dir)
    return cfg


# a scenario changes how a unit is trained; the data, the split, the ensembles and the
# evaluation are one per run, so varying them inside a grid would mislabel the results
SCENARIO_SECTIONS = ("train", "model", "data")
RUN_LEVEL_KEYS = ("data.path", "data.source", "data.view")


def scenario_assignments(key: str, value: Any) -> list[tuple[str, Any]]:
    """The dotted keys one scenario value sets: ``train.lr: 0.001`` sets one; a mapping under a
    section (``model: {backbone: X, weights: P, data.image_size: 260}``) sets several together,
    its keys relative to the section unless they name a section themselves."""
    if "." in key or not isinstance(value, dict):
        return [(key, value)]
    return [(sub if sub.split(".")[0] in SCENARIO_SECTIONS else f"{key}.{sub}", v) for sub, v in value.items()]


def _check_scenario_key(cfg: Config, key: str, where: str = "scenarios") -> None:
    section, _, field = key.partition(".")
    if not field and section in SCENARIO_SECTIONS:
        if where != "scenarios":
            raise ConfigError(f"{where}.{key}: a sweep step varies dotted keys (e.g. train.lr); a section with "
                              "mappings (several keys together) works in scenarios only")
        values = cfg.scenarios[key]
        if not values or not all(isinstance(v, dict) and v for v in values):
            raise ConfigError(
                f"scenarios.{key}: a section varies several keys together: give a list of mappings, e.g. "
                f"{key}: [{{backbone: mobilenetv2_100, weights: PATH}}, {{backbone: tf_efficientnet_lite0}}]"
            )
        for full in sorted({k for v in values for k, _ in scenario_assignments(key, v)}):
            _check_scenario_key(cfg, full)
        return
    if not field or section not in Config.model_fields or section in ("scenarios", "sweep", "name"):
        raise ConfigError(f"{where}.{key}: must be section.key (e.g. train.lr) or a section with mappings")
    if section not in SCENARIO_SECTIONS or key in RUN_LEVEL_KEYS:
        raise ConfigError(
            f"{where}.{key}: only how units are trained can vary inside a run (train.*, model.*, "
            f"data.* except {', '.join(RUN_LEVEL_KEYS)}); the data, split, ensembles and evaluation "
            "are one per run: make a separate run for each value"
        )
    node = getattr(cfg, section)
    for part in field.split(".")[:-1]:
        node = getattr(node, part, None)
    if node is None or field.split(".")[-1] not in type(node).model_fields:
        raise ConfigError(f"{where}.{key}: unknown key {key!r}")


def config_value(cfg: Config, key: str) -> Any:
    """The value of dotted ``key`` (``train.lr``) in ``cfg``."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _resolve_scenario_paths(scenarios: dict[str, list[Any]], base_dir: Path) -> None:
    """Weights files inside scenarios are relative to the config file (a preset or --set: the shell)."""
    for key, values in scenarios.items():
        for i, value in enumerate(values):
            if key == "model.weights":
                values[i] = _resolve_weights(value, base_dir)
            elif isinstance(value, dict) and "." not in key:
                for sub, v in value.items():
                    if dict(scenario_assignments(key, {sub: v})).get("model.weights") is not None:
                        value[sub] = _resolve_weights(v, base_dir)


def _resolve_weights(value: Any, base_dir: Path) -> Any:
    if not isinstance(value, str) or value in ("hub", "none") or Path(value).expanduser().is_absolute():
        return value
    return str((base_dir / Path(value).expanduser()).resolve())


def expand_scenarios(cfg: Config) -> list[tuple[str, Config]]:
    """The grid of scenarios: one (name, config) per combination of the listed values."""
    if not cfg.scenarios:
        return [("default", cfg)]
    keys = list(cfg.scenarios)
    out = []
    base = cfg.model_dump(mode="json")
    base["scenarios"] = {}
    for values in itertools.product(*(cfg.scenarios[k] for k in keys)):
        raw = copy.deepcopy(base)
        for key, value in zip(keys, values):
            for full, v in scenario_assignments(key, value):
                set_dotted(raw, full, v)
        name = "_".join(_name_part(cfg.scenarios[k], k, v) for k, v in zip(keys, values))
        if any(name == seen for seen, _ in out):
            raise ConfigError(
                f"scenarios: two combinations share the folder name {name!r} ({dict(zip(keys, values))}); "
                "make the values differ visibly"
            )
        out.append((name, build_config(raw)))
    return out


def _name_part(values: list[Any], key: str, value: Any) -> str:
    """``lr=0.001``; for a mapping, the keys whose values differ across the list (files only
    when nothing else differs), so ``model: [{backbone: A, weights: P}, ...]`` is ``backbone=A``."""
    if not isinstance(value, dict) or "." in key:
        return f"{key.split('.')[-1]}={_fmt(value)}"
    differ = [sub for sub in value if len({_fmt(v.get(sub)) for v in values}) > 1]
    shown = [sub for sub in differ if sub.split(".")[-1] not in ("weights", "path")] or differ or list(value)
    return "_".join(f"{sub.split('.')[-1]}={_fmt(value[sub])}" for sub in shown)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)  # never merge two values
    return str(value).replace("/", "-").replace(" ", "")


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
