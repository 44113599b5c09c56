"""The bundle sections of issue 21 from arrays: fitted at export, applied at predict, same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.bundle.manifest import OOD, Conformal, Selective
from allwen.evaluation import conformal, ood, selective
from allwen.export.sections import AbstainSettings, fit_conformal, fit_patient, fit_selective
from allwen.serve.abstain import Abstainer
from allwen.bundle import BundleFolder


def _probs(seed, n, k=2, strength=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += strength
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_sections_round_trip_through_the_abstainer(tmp_path):
    from safetensors.numpy import save_file

    classes = ["hem", "all"]
    vy, vp = _probs(0, 600)
    ty, tp = _probs(1, 300)
    s = AbstainSettings(target_accuracy=0.95, n_boot=100)
    sel, sel_card = fit_selective(vy, vp, ty, tp, s)
    clusters = np.arange(len(ty)) // 10  # 30 test subjects of 10 cells: both levels supported
    ty = np.repeat(ty[::10], 10)
    conf, conf_card = fit_conformal(ty, tp, classes, s, clusters)
    assert sel["threshold"] == selective.choose_threshold(vy, vp, 0.95).threshold
    assert sel_card["coverage"] == pytest.approx((selective.confidence(tp) >= sel["threshold"]).mean())
    assert [c["level"] for c in conf_card] == [0.9, 0.95] and set(conf_card[0]["per_class"]) == {"hem", "all"}
    feats = np.random.default_rng(2).normal(size=(300, 4))
    det = ood.MahalanobisOOD().fit(feats[:50], np.zeros(50, int))
    save_file(det.to_arrays(), str(BundleFolder(tmp_path).ood))
    sections = dict(selective=Selective.model_validate(sel), conformal=Conformal.model_validate(conf),
                    ood=OOD(method="mahalanobis", file="ood.safetensors", threshold=2.0, member_index=0, quantile=0.95,
                            feature_dim=4))
    out = Abstainer(classes, tmp_path, **sections).apply(tp, feats)
    assert out["refer"] == list(selective.confidence(tp) < sel["threshold"])
    cal = conformal.calibrate(ty, tp, (0.9,), mondrian=True, nonempty=True)[0]
    assert out["set_90"] == [conformal.format_set(r, classes) for r in conformal.prediction_sets(tp, cal)]
    assert all(out["set_90"]) and conf["levels"][0]["nonempty"]  # the predicted class is always in the set
    assert out["ood"] == [bool(v > 2.0) for v in det.score(feats)]
    assert Abstainer(classes, tmp_path, **sections).apply(tp, None)["ood_score"] == [None] * len(tp)
    with pytest.raises(ValueError, match="features"):
        Abstainer(classes, tmp_path, **sections).apply(tp, feats[:10])


def test_patient_section_without_subjects_says_so():
    vy, vp = _probs(0, 40)
    section = fit_patient(None, vy, vp, ["hem", "all"])
    assert section["threshold"] == 0.5 and section["source"] == "default" and "no subject ids" in section["note"]
    subjects = np.repeat([f"s{i}" for i in range(8)], 5)
    vy = np.repeat([0, 1] * 4, 5)
    vp = np.c_[1 - vy * 0.8 - 0.1, vy * 0.8 + 0.1]
    section = fit_patient(list(subjects), vy, vp, ["hem", "all"])
    assert section["source"] == "validation_subjects" and section["balanced_accuracy"] == 1.0


def test_ood_benchmark_runs_on_a_finished_run(tiny_run, tmp_path):
    """benchmarks/ood_auroc.py on the tiny run against flat-colour images: every number is there and sane."""
    import importlib.util

    from pathlib import Path

    from PIL import Image

    REPO = Path(__file__).resolve().parents[2]
    for i in range(6):
        Image.new("RGB", (48, 48), (40 * i, 200, 90)).save(tmp_path / f"flat{i}.png")
    spec = importlib.util.spec_from_file_location("ood_auroc", REPO / "benchmarks" / "ood_auroc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main([str(tiny_run), "--ood", f"flat={tmp_path}", "--json"])
    assert set(result["detectors"]) == {"mahalanobis", "knn", "mahalanobis+input", "knn+input"}
    for method, entry in result["detectors"].items():
        low, high = entry["ood"]["flat"]["auroc_ci"]
        assert 0.0 <= low <= entry["ood"]["flat"]["auroc"] <= high <= 1.0 and 0.0 <= entry["test_flagged"] <= 1.0
    # flat colour images are far from cells in colour statistics whatever the features say
    assert result["detectors"]["mahalanobis+input"]["ood"]["flat"]["auroc"] >= 0.9
    assert result["n"]["flat"] == 6
