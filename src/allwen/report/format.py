"""How the report writes numbers and names: one formatter each, shared by tables and answers."""

from __future__ import annotations

NA = "n/a"


def fmt_num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return NA
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def fmt_ci(ci: tuple[float | None, float | None] | None) -> str | None:
    if ci is None or None in ci:
        return None
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def fmt_p(p: float | None) -> str:
    """p-values keep their magnitude when tiny instead of collapsing to 0.000."""
    if p is None:
        return NA
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_count(value: int | None) -> str:
    return NA if value is None else f"{value:,}"


# A metric's label, format and columns are the metric registry's (allwen.evaluation.metric_registry:
# headline_names, summary_names, label, fmt), read when a report is built.
TEST_NAMES = {"mcnemar": "McNemar exact", "delong": "DeLong", "permutation": "subject permutation",
              "swap": "cluster swap permutation"}


def fmt_settings(settings: dict, keys: bool = True) -> str:
    """A grid or sweep cell's settings in words: ``batch_size: 16, epochs: 2`` (``keys=False``: ``16, 2``).

    A section's value (``model: {backbone: ..., weights: /abs/file.safetensors}``) is named by its
    settings that are not files (``backbone: mobilenetv2_100``); a file by its name, never its path.
    """
    parts = []
    for key, value in settings.items():
        if isinstance(value, dict):
            named = {k: v for k, v in value.items() if not _is_file(v)} or {k: _file_name(v) for k, v in value.items()}
            parts.append(fmt_settings(named, keys))
        else:
            shown = _file_name(value) if _is_file(value) else value
            parts.append(f"{key.split('.')[-1]}: {shown}" if keys else str(shown))
    return ", ".join(parts)


def settings_words(cells: list[dict], keys: bool = True) -> list[str]:
    """Grid or sweep cells named by what tells them apart: a section's value (``model: {...}``,
    resolved with every default) keeps only its settings that differ between the cells, so
    ``backbone: mobilenetv2_100`` and not the whole model section."""
    named = []
    for settings in cells:
        kept = {}
        for key, value in settings.items():
            if isinstance(value, dict):
                others = [c.get(key) if isinstance(c.get(key), dict) else {} for c in cells]
                differ = {k: v for k, v in value.items() if len({repr(o.get(k)) for o in others}) > 1}
                kept[key] = differ or value
            else:
                kept[key] = value
        named.append(fmt_settings(kept, keys))
    return named


def _is_file(value: object) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value) and value not in ("hub", "none")


def _file_name(value: object) -> str:
    return str(value).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] if _is_file(value) else str(value)
