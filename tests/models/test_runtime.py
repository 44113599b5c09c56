"""The frozen runtime: ONNX export once, the check against PyTorch, refusal and fallback."""

import logging

import numpy as np
import pytest
import torch

from allwen.config.schema import ModelConfig
from allwen.models import build_classifier, freeze_backbone
from allwen.models import runtime as rt

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def backbone():
    model = build_classifier(ModelConfig(backbone="test_efficientnet", weights="none", head="softmax"), 2)
    freeze_backbone(model)
    return model.backbone


def test_auto_is_onnxruntime_on_cpu_and_torch_on_gpu():
    assert rt.resolve_runtime("auto", "cpu") == "onnxruntime"
    assert rt.resolve_runtime("auto", "cuda") == "torch"
    assert rt.resolve_runtime("onnxruntime", "cuda") == "torch"  # a CPU runtime gives way on a GPU
    assert rt.resolve_runtime("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="choose from"):
        rt.resolve_runtime("tensorrt", "cpu")


def test_a_missing_runtime_says_what_to_install(monkeypatch):
    monkeypatch.setattr(rt, "available", lambda name: name == "torch")
    with pytest.raises(ValueError, match=r"pip install 'allwen\[openvino\]'"):
        rt.resolve_runtime("openvino", "cpu")
    assert rt.resolve_runtime("auto", "cpu") == "torch"  # auto falls back without onnxruntime


def test_onnxruntime_matches_torch_and_exports_once(backbone, tmp_path):
    rt._LOADED.clear()
    x = torch.randn(6, 3, 32, 32)
    path = tmp_path / "part.onnx"
    runner = rt.frozen_forward(backbone, "onnxruntime", path, x[:4])
    assert runner.name == "onnxruntime" and path.exists()
    assert runner.max_diff < rt.TOLERANCE
    reference = rt.torch_forward(backbone)(x)
    assert float((runner(x) - reference).abs().max()) < rt.TOLERANCE
    stamp = path.stat().st_mtime_ns
    rt._LOADED.clear()
    again = rt.frozen_forward(backbone, "onnxruntime", path, x[:4])  # loads the cached export
    assert again.name == "onnxruntime" and path.stat().st_mtime_ns == stamp


def test_a_runtime_that_differs_is_refused_with_a_warning(backbone, tmp_path, monkeypatch, caplog):
    rt._LOADED.clear()
    real = rt._onnxruntime
    monkeypatch.setattr(rt, "_onnxruntime", lambda path, n: (lambda a: real(path, n)(a) + 1e-3))
    with caplog.at_level(logging.WARNING, logger="allwen.models.runtime"):
        runner = rt.frozen_forward(backbone, "onnxruntime", tmp_path / "p.onnx", torch.randn(4, 3, 32, 32))
    assert runner.name == "torch"
    assert "refused, using PyTorch" in caplog.text


def test_a_runtime_that_fails_falls_back_to_torch(backbone, tmp_path, monkeypatch, caplog):
    rt._LOADED.clear()

    def broken(path, n):
        raise RuntimeError("no such op")

    monkeypatch.setattr(rt, "_onnxruntime", broken)
    with caplog.at_level(logging.WARNING, logger="allwen.models.runtime"):
        runner = rt.frozen_forward(backbone, "onnxruntime", tmp_path / "p.onnx", torch.randn(4, 3, 32, 32))
    assert runner.name == "torch" and "could not run there" in caplog.text
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(runner(x), rt.torch_forward(backbone)(x))


def test_openvino_f32_matches_torch(backbone, tmp_path):
    pytest.importorskip("openvino")
    rt._LOADED.clear()
    x = torch.randn(4, 3, 32, 32)
    runner = rt.frozen_forward(backbone, "openvino", tmp_path / "p.onnx", x)
    assert runner.name == "openvino" and runner.max_diff < rt.TOLERANCE
    assert np.allclose(runner(x).numpy(), rt.torch_forward(backbone)(x).numpy(), atol=rt.TOLERANCE)


@pytest.mark.parametrize("relative, accepted", [(0.5, True), (2.0, False)])
def test_lower_precision_is_checked_against_one_relative_tolerance(backbone, tmp_path, monkeypatch, relative, accepted):
    """frozen_precision low: accepted up to LOW_TOLERANCE of the outputs' largest magnitude (the
    one constant the docs quote), refused beyond it."""
    rt._LOADED.clear()
    real = rt._onnxruntime

    def lowered(path, n, low_precision):
        assert low_precision
        run = real(path, n)
        return lambda a: (out := run(a)) + relative * rt.LOW_TOLERANCE * np.abs(out).max()

    monkeypatch.setattr(rt, "_openvino", lowered)
    runner = rt.frozen_forward(backbone, "openvino", tmp_path / f"p{relative}.onnx", torch.randn(4, 3, 32, 32),
                               low_precision=True)
    assert (runner.name == "openvino") is accepted
    if accepted:
        assert runner.max_diff == pytest.approx(relative * rt.LOW_TOLERANCE, rel=1e-3)
