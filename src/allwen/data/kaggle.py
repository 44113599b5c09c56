"""Find a dataset attached to a Kaggle notebook (``/kaggle/input/<dataset>/...``).

The studies ran on Kaggle and Colab GPUs. Kaggle mounts each attached dataset read-only under
``/kaggle/input/<slug>/``; the C-NMC 2019 copy ("leukemia-classification" and its forks) keeps
the challenge's ``C-NMC_Leukemia/{training_data,validation_data,testing_data}`` tree one or two
levels down, depending on who uploaded it. :func:`find_cnmc` finds that folder, so a notebook
runs a preset unchanged with the dataset folder's parent as its working directory (a preset's
relative ``data.path`` is relative to the shell).
"""

from __future__ import annotations

from pathlib import Path

KAGGLE_INPUT = Path("/kaggle/input")
CNMC_ROOT = "C-NMC_Leukemia"
MAX_DEPTH = 4


def _candidates(base: Path, depth: int) -> list[Path]:
    """Folders named C-NMC_Leukemia, or holding ``training_data/fold_*``, at most ``depth`` below ``base``."""
    found, level = [], [base]
    for _ in range(depth):
        level = sorted(p for folder in level for p in folder.iterdir() if p.is_dir())
        for folder in level:
            if folder.name == CNMC_ROOT or any((folder / "training_data").glob("fold_*")):
                found.append(folder)
        level = [p for p in level if p not in found]
    return found


def find_cnmc(base: str | Path = KAGGLE_INPUT) -> Path:
    """The C-NMC 2019 root (the folder with ``training_data/``) under ``base``; the first in name
    order when several datasets hold one. A one-line error says what ``base`` holds otherwise."""
    base = Path(base)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such folder; on Kaggle attach the C-NMC 2019 dataset "
                                "(\"leukemia-classification\") with + Add Input, elsewhere pass its folder")
    for folder in _candidates(base, MAX_DEPTH):
        if (folder / "training_data").is_dir():
            return folder
    held = ", ".join(sorted(p.name for p in base.iterdir())[:10]) or "nothing"
    raise FileNotFoundError(f"{base}: no C-NMC_Leukemia/training_data folder in the {MAX_DEPTH} levels below "
                            f"(it holds: {held}); attach the C-NMC 2019 dataset (\"leukemia-classification\")")
