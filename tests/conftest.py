"""Shared fixtures: paths to ../shared (skip when missing) and small synthetic data."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    from allwen.threads import early_env  # imports nothing heavy

    # `make test` runs the suite in pytest-xdist workers, one per CPU: their OpenMP threads sleep
    # when idle instead of spinning on the cores the other workers need, by the command line's
    # rule (docs/speed.md "Threads on a shared machine"). Before anything imports torch.
    early_env()

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALLWEN_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is missing: real data/weights live in ../shared beside the checkout")
    return path


@pytest.fixture(autouse=True)
def _offline_and_small(monkeypatch):
    """No network and one thread per test: CI has 2 cores and no model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def shared():
    """``shared("data", "taleqani")``: a path under ../shared, or skip."""
    return shared_path


def tiny_bmp_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 100, 200)).save(buf, format="BMP")
    return buf.getvalue()


@pytest.fixture
def tiny_bmp() -> bytes:
    return tiny_bmp_bytes()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic C-NMC tree (10 training subjects, prelim test set, 3 duplicates)."""
    from allwen.data.synth import generate_cnmc

    out = tmp_path_factory.mktemp("synth")
    generate_cnmc(out, n_all_subjects=8, n_hem_subjects=7, cells_per_subject=8, image_size=32,
                  prelim_subjects=(2, 2), seed=0, duplicates=3)
    return out / "C-NMC_Leukemia"


# --------------------------------------------------------------------------- a tiny trained run and its bundles
# (tests/serve and tests/export): 1 learning rate x 2 folds, 32 px, evaluation.tta


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
    from allwen.export import export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("b") / "unit", "lr=0.01/fold_0")


@pytest.fixture(scope="session")
def ensemble_bundle(tiny_run, tmp_path_factory) -> Path:
    """The ensemble of the two fold models, uniform weights (both members count); safetensors only (torch)."""
    from allwen.export import export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("b") / "ens", "inter[lr=0.01]/uniform", fmt="safetensors")


@pytest.fixture(scope="session")
def test_images(tiny_run) -> list[str]:
    from allwen.runfolder import RunFolder

    return list(RunFolder(tiny_run).unit_predictions("lr=0.01", 0).test_paths)


# --------------------------------------------------------------------------- pages in a browser


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium for Playwright (its own browser download cannot work here)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")


@contextmanager
def _launched(executable: str):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def launched():
    """``with launched(chromium) as browser``: a headless Chromium for one test, closed afterwards."""
    return _launched
