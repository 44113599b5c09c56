"""One tie rule everywhere: a 0.5/0.5 row gets the same label from the report's metrics, the
ensemble, ``allwen predict`` and ``serve`` (the higher class, as ``predict_labels`` rules)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from allwen.ensemble import WeightedEnsemble
from allwen.evaluation.metrics import compute_metrics, confusion, predict_labels
from allwen.bundle import BundleFolder


@pytest.fixture(scope="module")
def tie_bundle(unit_bundle, tmp_path_factory) -> Path:
    """The unit bundle with its head's last layer zeroed: every image is exactly 0.5/0.5."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("tie") / "bundle"
    shutil.copytree(unit_bundle, out)
    manifest = json.loads(BundleFolder(out).manifest_path.read_text())
    for member in manifest["members"]:
        path = out / member["folder"] / "weights.safetensors"
        with safe_open(path, "pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            metadata = handle.metadata()
        last = sorted(k for k in tensors if k.startswith("head.") and k.endswith(".weight"))[-1]
        tensors[last].zero_()
        tensors[last.replace(".weight", ".bias")].zero_()
        save_file(tensors, path, metadata=metadata)
        rel = path.relative_to(out).as_posix()
        manifest["files"][rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        (out / member["folder"] / "model.onnx").unlink(missing_ok=True)
        manifest["files"].pop(f"{member['folder']}/model.onnx", None)
    BundleFolder(out).manifest_path.write_text(json.dumps(manifest))
    from allwen.bundle import seal

    seal(BundleFolder(out))
    return out


def test_a_tie_gets_the_same_label_everywhere(tie_bundle, test_images, tmp_path):
    tie = np.array([[0.5, 0.5]])
    expected = int(predict_labels(tie)[0])
    assert expected == 1  # the positive class: thresholding proba[:, 1] >= 0.5
    # the report's metrics count the tie as the positive class
    assert compute_metrics(np.array([1]), tie)["accuracy"] == 1.0
    assert confusion(np.array([0]), predict_labels(tie), 2).tolist() == [[0, 1], [0, 0]]
    # the ensemble, weighted and by vote (two members split their votes)
    weighted = WeightedEnsemble("uniform").fit([tie, tie], [np.array([1]), np.array([1])])
    assert weighted.predict([tie, tie]).tolist() == [expected]
    vote = WeightedEnsemble("vote").fit([tie, tie], [np.array([1]), np.array([1])])
    assert vote.predict([np.array([[0.6, 0.4]]), np.array([[0.4, 0.6]])]).tolist() == [expected]

    from typer.testing import CliRunner

    from allwen.cli import app

    classes = json.loads(BundleFolder(tie_bundle).manifest_path.read_text())["classes"]
    result = CliRunner().invoke(app, ["predict", str(tie_bundle), test_images[0], "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(tmp_path / "p.csv").iloc[0]
    assert row[f"prob_{classes[0]}"] == pytest.approx(0.5) and row["predicted"] == classes[expected]

    pytest.importorskip("fastapi", reason="serve needs the serve extra")
    from fastapi.testclient import TestClient

    from allwen.serve.app import create_app

    buffer = io.BytesIO()
    Image.open(test_images[0]).convert("RGB").save(buffer, format="PNG")
    with TestClient(create_app(tie_bundle)) as client:
        answer = client.post("/api/predict", files=[("files", ("cell.png", buffer.getvalue(), "image/png"))])
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    assert result["probabilities"][classes[0]] == pytest.approx(0.5)
    assert result["predicted"] == classes[expected]
    assert result["members"][0]["predicted"] == classes[expected]
