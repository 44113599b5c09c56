"""One status per cell on every surface (issue 27): the predict CSV, --by-folder, the JSON API and the page.

Cells from another lab are stood in for by Taleqani smear photographs (../shared) or, without them,
striped pictures: nothing like the 32-pixel synthetic cells the test bundle learned, so its OOD
detector flags them. Every surface must say ``out_of_distribution`` and no surface may call the
patient from them, however confident the classifier's probabilities are.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from allwen.serve.status import ANSWERED, OUT_OF_DISTRIBUTION, REFER, STATUSES, cell_statuses, unreadable
from allwen.bundle import BundleFolder

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ALLWEN_SHARED", REPO.parent / "shared"))


def screenshot(target, name: str) -> None:
    """With ``ALLWEN_SCREENSHOTS=DIR`` (``docs/screenshots`` for the lab guide), save ``DIR/NAME.png`` of a page or
    an element, for the lab guide; otherwise nothing."""
    folder = os.environ.get("ALLWEN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_cell_statuses_by_hand():
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.99, 0.01], [0.55, 0.45]])
    decided = {"refer": [False, True, False, True], "ood": [False, False, True, True], "ood_score": [0.2, 0.3, 9.0, 8.0]}
    s = cell_statuses(proba, decided, selective_threshold=0.8, ood_threshold=1.0)
    assert [x.status for x in s] == [ANSWERED, REFER, OUT_OF_DISTRIBUTION, OUT_OF_DISTRIBUTION]
    assert s[0].reasons == () and s[0].reason == ""
    assert s[1].reasons == ("refer: confidence 0.600 below the validated 0.800; the class is only a suggestion",)
    assert s[2].reason.startswith("out of distribution: score 9.00 above the bundle's threshold 1.00")
    assert len(s[3].reasons) == 2 and (s[3].refer, s[3].ood) == (True, True)  # both flags kept, OOD first
    assert unreadable("not an image").status == "unreadable" and STATUSES[-1] == "unreadable"
    assert [x.status for x in cell_statuses(proba, {})] == [ANSWERED] * 4  # a bundle without sections


def _foreign_cells(folder: Path, n: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    smears = sorted((SHARED / "data" / "taleqani" / "Original" / "Pro").glob("*.jpg"))[:n]
    if len(smears) == n:
        return [Path(shutil.copy(p, folder)) for p in smears]
    out = []
    for i in range(n):  # striped pictures in n colours
        img = np.full((224, 224, 3), 255, np.uint8)
        img[:, :: 8 + i] = (30 * i, 0, 255 - 30 * i)
        out.append(folder / f"stripes_{i}.png")
        Image.fromarray(img).save(out[-1])
    return out


def test_foreign_cells_are_out_of_distribution_on_every_surface_and_get_no_call(
        ensemble_bundle, serving, chromium, launched, tmp_path):
    cells = _foreign_cells(tmp_path / "patient_1")
    _out_of_distribution_everywhere(ensemble_bundle, cells, serving, chromium, launched, tmp_path)


def _out_of_distribution_everywhere(bundle, cells, serving, chromium, launched, tmp_path):
    """``cells`` (one folder, ``patient_1``) through ``bundle`` on every surface: all out of distribution, no call."""
    from typer.testing import CliRunner

    from allwen.cli import app

    ensemble_bundle = bundle
    # the CSV and --by-folder
    out = tmp_path / "cells.csv"
    result = CliRunner().invoke(app, ["predict", str(ensemble_bundle), str(cells[0].parent), "--out", str(out),
                                      "--by-folder"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["status"]) == [OUT_OF_DISTRIBUTION] * len(cells), table[["path", "status", "reason"]]
    assert all(r.startswith("out of distribution: score") for r in table["reason"])
    verdict = pd.read_csv(tmp_path / "cells_patients.csv", keep_default_na=False).iloc[0]
    assert (verdict["call"], verdict["n_answered"]) == ("no call", 0)
    assert f"cannot call: {len(cells)} of {len(cells)} cells out of distribution" in result.output
    assert f"{len(cells)} out of distribution" in result.output.splitlines()[0] or "out of distribution" in result.output

    with serving(ensemble_bundle) as url:
        import httpx

        # the JSON API, one request with the patient's verdict
        kinds = {".jpg": "image/jpeg", ".bmp": "image/bmp"}
        files = [("files", (p.name, p.read_bytes(), kinds.get(p.suffix, "image/png"))) for p in cells]
        body = httpx.post(url + "api/predict", files=files, data={"patient": "true"}, timeout=300).json()
        assert [r["status"] for r in body["results"]] == [OUT_OF_DISTRIBUTION] * len(cells)
        assert body["patient"]["call"] == "no call" and body["patient"]["note"].startswith("cannot call")
        # the page: status cells, no class in large type, no call
        with launched(chromium) as browser:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.locator("#model-info", has_text="Classes").wait_for(timeout=60_000)  # no eval: the page's CSP forbids it
            page.check("#one-patient")
            page.set_input_files("#files", [str(p) for p in cells])
            page.wait_for_selector("#patient h2", timeout=120_000)
            statuses = page.locator("#summary td.cell-status").all_inner_texts()
            assert statuses == ["out of distribution"] * len(cells), statuses
            assert page.locator("#summary tbody td:nth-child(3)").all_inner_texts() == [""] * len(cells)
            assert page.locator(".card .verdict").count() == 0  # no "Suggested: Benign" in large type
            assert page.locator(".card .headline.out_of_distribution").count() == len(cells)
            assert page.locator("#patient .call b").inner_text() == "none"
            assert "cannot call" in page.locator("#patient").inner_text()
            assert errors == []
            screenshot(page.locator("#summary"), "status-column")
            screenshot(page.locator(".card").first, "ood-card")
            screenshot(page.locator("#patient"), "patient-call-refused")


@pytest.mark.slow
def test_a_500_cell_drop_is_classified_in_requests_within_the_budget(unit_bundle, chromium, launched, tmp_path):
    """A patient's folder in one go: 500 real Taleqani cells with the page's defaults, every cell classified,
    the server's peak memory under the documented ceiling (a real ``allwen serve`` process)."""
    from tests.serve.test_memory import CEILING_MB, _free_port, _peak_mb

    import subprocess
    import sys
    import time

    import httpx

    smears = sorted((SHARED / "data" / "taleqani" / "Original").glob("*/*.jpg"))
    if len(smears) < 500:
        pytest.skip("needs 500 Taleqani images in ../shared/data/taleqani/Original")
    cells = smears[:: max(1, len(smears) // 500)][:500]
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "allwen.cli", "serve", str(unit_bundle), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            assert proc.poll() is None, proc.stderr.read()
        with launched(chromium) as browser:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.locator("#model-info", has_text="Classes").wait_for(timeout=60_000)  # no eval: the page's CSP forbids it
            page.set_input_files("#files", [str(p) for p in cells])
            page.locator("#status", has_text="500 cells:").wait_for(timeout=1_200_000)
            statuses = page.locator("#summary td.cell-status").all_inner_texts()
            screenshot(page, "drop-500-finished")
            assert len(statuses) == 500 and "waiting" not in statuses and "unreadable" not in statuses
        peak = _peak_mb(proc.pid)
        assert peak < CEILING_MB, f"server peak {peak:.0f} MB"
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_limits_are_options_with_the_apps_defaults_and_the_page_reads_them(unit_bundle):
    import typer
    from fastapi.testclient import TestClient

    from allwen.cli import app
    from allwen.serve import app as serve_app

    params = {p.name: p.default for p in typer.main.get_command(app).commands["serve"].params}
    assert (params["max_files"], params["max_request_work"], params["max_request_pixels"]) == (
        serve_app.MAX_FILES, serve_app.DEFAULT_MAX_REQUEST_WORK, serve_app.DEFAULT_MAX_REQUEST_PIXELS)
    client = TestClient(serve_app.create_app(unit_bundle, max_files=5, max_request_work=40))
    limits = client.get("/api/limits").json()
    assert (limits["max_files"], limits["max_request_work"]) == (5, 40)
    assert limits["work_per_image"] == {"view": 1, "tta": serve_app.TTA_VIEWS, "explain": serve_app.GRADCAM_COST}
    # the patient route answers from cells gathered over several requests, the bundle's classes in its schema
    schema = client.get("/openapi.json").json()["components"]["schemas"]["CellProbabilities"]
    assert sorted(schema["required"]) == sorted(json.loads(BundleFolder(unit_bundle).manifest_path.read_text())["classes"])
    cells = [{"status": "out_of_distribution", "probabilities": {"hem": 0.01, "all": 0.99}, "ood": True}] * 3
    verdict = client.post("/api/patient", json={"cells": [*cells, {"status": "unreadable"}]}).json()
    assert (verdict["call"], verdict["n_cells"], verdict["n_predicted"], verdict["n_ood"]) == ("no call", 4, 3, 3)
    answered = [{"status": "answered", "probabilities": {"hem": 0.2, "all": 0.8}}] * 3
    verdict = client.post("/api/patient", json={"cells": answered + cells[:1]}).json()
    assert (verdict["call"], verdict["n_answered"], verdict["n_called_all"]) == ("ALL", 3, 3)


@pytest.mark.slow
def test_real_cnmc_cells_through_a_real_taleqani_bundle_are_out_of_distribution_everywhere(
        shared, serving, chromium, launched, tmp_path):
    """A small real Taleqani run (240 smears, real MobileNetV2 weights, stage 1) exported as a bundle: the 8 real
    C-NMC cells (segmented on black, another lab's stain) are out of distribution on every surface, no call."""
    from allwen.config import load_config
    from allwen.data import load_source
    from allwen.export import export_bundle
    from allwen.pipeline import run_pipeline

    data, weights = shared("data", "taleqani"), shared("weights", "mobilenetv2_100", "mobilenetv2_100.safetensors")
    samples = sorted(shared("data", "cnmc2019", "samples").rglob("*.bmp"))
    assert len(samples) == 8
    subset = load_source(data, "taleqani").frame.sort_values("path").groupby("label").head(60)
    manifest = tmp_path / "subset.csv"
    subset[["path", "label"]].to_csv(manifest, index=False)
    cfg = load_config("taleqani_4class", [
        f"data.path={manifest}", "data.source=csv", "split.folds=2", "split.group_by=image", "train.stage2=null",
        "evaluation.tta=false", "evaluation.bootstrap=50",
        f"scenarios={{model: [{{backbone: mobilenetv2_100, weights: {weights}}}]}}",
    ])
    run_pipeline(cfg, tmp_path / "run", quiet=True)
    bundle = export_bundle(tmp_path / "run", tmp_path / "bundle")
    folder = tmp_path / "patient_1"
    folder.mkdir()
    cells = [Path(shutil.copy(p, folder)) for p in samples]
    _out_of_distribution_everywhere(bundle, cells, serving, chromium, launched, tmp_path)
