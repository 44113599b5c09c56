"""How the report writes numbers: one formatter each, shared by tables and answers."""

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
