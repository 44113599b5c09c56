"""A tiny finished run (1 learning rate x 2 folds, 32 px, evaluation.tta) and bundles exported from it."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    from allwen.config import load_config
    from allwen.data.synth import generate_cnmc
    from allwen.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("serve")
    generate_cnmc(root / "data", n_all_subjects=5, n_hem_subjects=5, cells_per_subject=6, image_size=32,
                  prelim_subjects=(1, 1), seed=1)
    cfg = load_config("demo", [
        f"data.path={root / 'data' / 'C-NMC_Leukemia' / 'training_data'}", "split.folds=2", "split.test=0.3",
        "train.stage1.epochs=1", "train.stage2.epochs=1", "train.batch_size=16", "evaluation.bootstrap=50",
        "evaluation.tta=true", "scenarios={train.lr: [0.01]}",
        # one or two test subjects per class: drawn within their class, every resample would be the same
        "evaluation.stratify=false",
    ])
    run_pipeline(cfg, root / "run", quiet=True)
    return root / "run"


@pytest.fixture(scope="session")
def unit_bundle(tiny_run, tmp_path_factory) -> Path:
    """One unit, exported with the default format (ONNX members beside the safetensors weights)."""
    from allwen.serve import export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("b") / "unit", "lr=0.01/fold_0")


@pytest.fixture(scope="session")
def ensemble_bundle(tiny_run, tmp_path_factory) -> Path:
    """The ensemble of the two fold models, uniform weights (both members count); safetensors only (torch)."""
    from allwen.serve import export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("b") / "ens", "inter[lr=0.01]/uniform", fmt="safetensors")


@pytest.fixture(scope="session")
def test_images(tiny_run) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(tiny_run / "units" / "lr=0.01" / "fold_0" / "predictions_test.csv")["path"])


# --------------------------------------------------------------------------- the page in a browser


# chromium and launched (a headless Chromium) are in tests/conftest.py: docs and report tests use them too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(bundle):
    uvicorn = pytest.importorskip("uvicorn")
    from allwen.serve.app import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(bundle), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def serving():
    """``with serving(bundle) as url``: ``allwen serve``'s app on a free local port for one test."""
    return _serving


@pytest.fixture
def server(ensemble_bundle):
    with _serving(ensemble_bundle) as url:
        yield url
