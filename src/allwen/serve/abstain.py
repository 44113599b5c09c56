"""Know when not to answer, at predict and serve time: a bundle's referral, prediction sets, OOD flags and
patient call applied to new probabilities and features, with no training code and no crepes.

The sections were fitted at export (:mod:`allwen.export.sections`) on the probabilities the bundle
gives by default (``probabilities``: ``calibrated`` = temperature-scaled members, combined), and
:func:`allwen.serve.predict.predict_images` computes them on that scale even when a user asks for raw
probabilities, so a threshold is never compared with numbers of another scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from allwen.io import json_safe
from allwen.bundle import Manifest
from allwen.bundle.manifest import OOD, Conformal, Patient, Selective
from allwen.evaluation import conformal, patient, selective
from allwen.evaluation import ood as ood_methods
from allwen.serve.status import CellStatus, cell_statuses

CSV_COLUMNS = ("refer", "ood_score", "ood")  # plus one set_<level> column per conformal level
RESEARCH_NOTE = ("Research software, not a medical device: these calls and flags help decide which cells a "
                 "hematologist should look at; they are not a diagnosis.")


class Abstainer:
    """A bundle's ``selective``, ``conformal``, ``ood`` and ``patient`` sections, ready to apply.

    The OOD detector's arrays are loaded here, at load time (their file was hashed with the rest)."""

    def __init__(self, classes: Sequence[str], root: Path, selective: Selective | None = None,
                 conformal: Conformal | None = None, ood: OOD | None = None, patient: Patient | None = None) -> None:
        self.classes = list(classes)
        self.selective, self.conformal, self.ood, self.patient = selective, conformal, ood, patient
        section = selective or conformal
        self.calibrated = section is None or section.probabilities == "calibrated"
        self._detector = None
        if self.ood is not None:
            from safetensors.numpy import load_file

            path = Path(root) / self.ood.file
            try:
                arrays = load_file(str(path))
                self._detector = ood_methods.load_detector(self.ood.method, arrays)
            except Exception as exc:  # safetensors and the detector raise their own types for a bad file
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ValueError(f"{path}: not the OOD detector bundle.json field ood describes ({first[:200]}); "
                                 "re-export the bundle with `allwen export`") from None

    @classmethod
    def of(cls, manifest: Manifest, root: Path) -> Abstainer | None:
        """The bundle's sections ready to apply; None when it has no referral, sets or OOD detector."""
        if manifest.selective is None and manifest.conformal is None and manifest.ood is None:
            return None
        return cls(manifest.classes, root, manifest.selective, manifest.conformal, manifest.ood, manifest.patient)

    @property
    def set_columns(self) -> list[str]:
        return [lv.column for lv in self.conformal.levels] if self.conformal is not None else []

    @property
    def ood_member(self) -> int | None:
        return None if self.ood is None else self.ood.member_index

    def apply(self, proba: np.ndarray, features: np.ndarray | None) -> dict[str, list]:
        """Per image: ``refer`` (bool), ``set_<level>`` ('a|b'), ``ood_score`` (float or None), ``ood`` (bool or None)."""
        out: dict[str, list] = {}
        if self.selective is not None:
            out["refer"] = selective.refer_mask(proba, self.selective.threshold).tolist()
        for lv in self.conformal.levels if self.conformal is not None else []:
            cal = conformal.ConformalLevel(lv.level, lv.mondrian, [lv.threshold[c] for c in self.classes],
                                           nonempty=lv.nonempty)
            out[lv.column] = [conformal.format_set(r, self.classes) for r in conformal.prediction_sets(proba, cal)]
        if self._detector is not None:
            if features is None:
                out["ood_score"], out["ood"] = [None] * len(proba), [None] * len(proba)
            else:
                if len(features) != len(proba):
                    raise ValueError(f"{len(features)} rows of features for {len(proba)} images")
                score = self._detector.score(features)
                out["ood_score"] = [float(v) for v in score]
                out["ood"] = [bool(v) for v in score > self.ood.threshold]
        return out

    def statuses(self, proba: np.ndarray, decided: dict[str, list]) -> list[CellStatus]:
        """Each image's status from :meth:`apply`'s decisions, the thresholds quoted in its reasons."""
        return cell_statuses(proba, decided, self.selective.threshold if self.selective is not None else None,
                             self.ood.threshold if self.ood is not None else None)


def patient_verdicts(patients: Sequence[str], proba: np.ndarray, manifest: Manifest, *, ok: np.ndarray | None = None,
                     refer: np.ndarray | None = None, flagged: np.ndarray | None = None,
                     confidence: float = 0.95) -> list[dict[str, Any]]:
    """One verdict per patient with the bundle's ``patient`` section (CLI ``--by-folder`` and the API)."""
    section = manifest.patient
    if section is None or section.threshold is None:
        raise ValueError("this bundle has no patient section (its classes have no leukemic class to call): "
                         + str((section.note if section is not None else None) or "re-export it with this allwen"))
    t = patient.PatientThreshold(float(section.threshold), str(section.source or "default"),
                                 int(section.n_subjects or 0), section.balanced_accuracy)
    rows = patient.verdicts(list(patients), proba, list(manifest.classes), t, positive=section.positive_classes,
                            refer=refer, ood=flagged, ok=ok, confidence=confidence)
    return [json_safe(r.as_dict()) for r in rows]


def patient_table(table: Any, patients: Sequence[str], manifest: Manifest, confidence: float = 0.95) -> Any:
    """One row per patient from a predictions table (``allwen predict --by-folder``)."""
    import pandas as pd

    classes = list(manifest.classes)
    ok = (table["error"] == "").to_numpy()
    proba = table[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    refer = table["refer"].fillna(False).to_numpy(dtype=bool) if "refer" in table else None
    flagged = table["ood"].fillna(False).to_numpy(dtype=bool) if "ood" in table else None
    return pd.DataFrame(patient_verdicts(patients, proba, manifest, ok=ok, refer=refer, flagged=flagged,
                                         confidence=confidence))


__all__ = ["Abstainer", "CSV_COLUMNS", "RESEARCH_NOTE", "patient_table", "patient_verdicts"]
