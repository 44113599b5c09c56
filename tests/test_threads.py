"""The thread budget reaches every runtime: torch, BLAS, OpenCV, ONNX Runtime, loader workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allwen import threads

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cgroup_quota_v2_and_v1_and_none(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_cpus(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_cpus(v2) is None
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads._cgroup_cpus(tmp_path / "v1") == 1.0
    assert threads.available_cpus(tmp_path / "v1") == 1  # the quota caps the affinity
    assert threads._cgroup_cpus(tmp_path / "nothing") is None
    assert threads.available_cpus(tmp_path / "nothing") == len(os.sched_getaffinity(0))


def test_budget_order_flag_then_env_then_cpus(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.budget(5) == 5 and threads.budget() == 3
    monkeypatch.delenv(threads.ENV)
    assert threads.budget() == threads.available_cpus()
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(ValueError, match="ALLWEN_THREADS='two'"):
        threads.budget()
    with pytest.raises(ValueError, match="--threads 0"):
        threads.budget(0)


def test_workers_count_against_the_budget_and_ranks_share_it():
    assert threads.split_workers(4, "auto") == (1, 3)
    assert threads.split_workers(4, 1) == (3, 1)
    assert threads.split_workers(1, "auto") == (1, 0)
    assert threads.split_workers(2, 0) == (2, 0)
    assert threads.share(8, 3) == 2 and threads.share(1, 4) == 1


def test_configure_reaches_torch_blas_and_opencv(monkeypatch, restore_threads):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.configure(3, workers=1) == 2
    seen = threads.info()
    assert os.environ[threads.ENV] == "3" and seen["budget"] == 3  # child processes inherit it
    assert torch.get_num_threads() == 2 and seen["torch"] == 2
    assert cv2.getNumThreads() == 2 and seen["cv2"] == 2
    assert seen["blas"] and set(seen["blas"]) == {2}
    threads.configure(1)
    assert torch.get_num_threads() == 1 and set(threads.info()["blas"]) == {1}


def test_onnx_runtime_options_hold_the_budget_and_do_not_spin(monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(threads.ENV, "3")
    options = threads.session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert threads.session_options(2).intra_op_num_threads == 2


def test_frozen_runtime_and_bundle_sessions_use_the_budget(monkeypatch, restore_threads):
    from allwen.models import runtime

    monkeypatch.setenv(threads.ENV, "1")
    torch.set_num_threads(2)
    assert runtime.threads() == 1
    assert threads.openvino_config(1) == {"INFERENCE_NUM_THREADS": 1}


def test_loader_workers_come_from_the_budget_and_run_one_thread(monkeypatch):
    from allwen.config.schema import DataConfig
    from allwen.training.inputs import loader_options

    monkeypatch.setenv(threads.ENV, "3")
    options = loader_options(DataConfig(num_workers="auto"), torch.device("cpu"))
    assert options["num_workers"] == 2 and options["worker_init_fn"] is threads.worker_init
    assert loader_options(DataConfig(num_workers=0), torch.device("cpu"))["worker_init_fn"] is None
    # a worker's view: one thread in torch and BLAS; OpenCV as the parent set it (see the next test)
    code = ("import json, torch, cv2; from allwen import threads; cv2.setNumThreads(3); threads.worker_init(0); "
            "from threadpoolctl import threadpool_info; "
            "print(json.dumps({**threads.info(), 'libs': [(p['filepath'], p['num_threads']) for p in threadpool_info()]}))")
    # the worker's own environment: no thread settings leaked from the tests that ran before in this process
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "OPENBLAS_NUM", "MKL_", "ALLWEN_"))}
    env["PYTHONPATH"] = str(REPO / "src")
    env["PL_SEED_WORKERS"] = "1"  # as after seed_everything(workers=True): the seeding imports Lightning's libraries
    seen = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                     check=True, timeout=120).stdout.strip().splitlines()[-1])
    assert seen["torch"] == 1 and set(seen["blas"]) == {1} and seen.get("cv2", 3) == 3, seen


FORKED_WORKERS = """
import cv2, numpy as np, torch
from allwen import threads
cv2.setNumThreads(2)
img = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
for _ in range(3):  # OpenCV's thread pool running in the parent, as after a decode or CLAHE
    cv2.resize(img, (1000, 1000)); cv2.GaussianBlur(img, (5, 5), 0)
class Cells(torch.utils.data.Dataset):
    def __len__(self): return 8
    def __getitem__(self, i): return torch.from_numpy(cv2.resize(img, (64, 64))).float().mean()
loader = torch.utils.data.DataLoader(Cells(), batch_size=2, num_workers=2, worker_init_fn=threads.worker_init)
print("done", len(list(loader)))
"""


def test_forked_loader_workers_do_not_hang_on_the_parents_opencv_pool():
    """cv2.setNumThreads in a forked worker waited forever for the parent's pool threads (the suite hung in
    the decode store); worker_init leaves OpenCV alone."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", FORKED_WORKERS], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "done 4" in done.stdout, done.stderr[-2000:]


def test_the_cli_flag_sets_the_budget_for_the_command(monkeypatch, restore_threads):
    from typer.testing import CliRunner

    from allwen.cli import app

    monkeypatch.delenv(threads.ENV, raising=False)
    done = CliRunner().invoke(app, ["run", "demo", "--dry-run", "--threads", "1"])
    assert done.exit_code == 0, done.output
    assert os.environ[threads.ENV] == "1" and torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV, "lots")
    done = CliRunner().invoke(app, ["run", "demo", "--dry-run"])
    assert done.exit_code == 2 and "ALLWEN_THREADS='lots'" in done.output


def test_every_onnx_runtime_session_is_made_by_one_function(tmp_path, monkeypatch):
    """Frozen training parts and bundle members get their sessions from ``threads.inference_session``:
    the same options (the budget, no spinning); no other module creates one."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper

    import allwen.serve.onnx_runtime as serve_runtime
    from allwen.models import runtime

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    monkeypatch.setenv(threads.ENV, "2")
    made = []
    real = threads.inference_session
    monkeypatch.setattr(threads, "inference_session", lambda *a, **k: made.append(a) or real(*a, **k))
    monkeypatch.setattr(runtime, "inference_session", threads.inference_session)
    monkeypatch.setattr(serve_runtime, "inference_session", threads.inference_session)
    x = np.ones((1, 2), dtype=np.float32)
    assert np.array_equal(runtime._onnxruntime(path, 2)(x), x)
    session = serve_runtime.onnx_session(path)
    assert len(made) == 2
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    sources = Path(threads.__file__).parent.rglob("*.py")
    assert [p.name for p in sources if "InferenceSession(" in p.read_text()] == ["threads.py"]


def test_early_env_makes_openmp_wait_passively_unless_the_user_chose_how(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    threads.early_env()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.early_env()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "30000")  # a short spin, then sleep: the user's choice stands alone
    threads.early_env()
    assert "OMP_WAIT_POLICY" not in os.environ and os.environ["GOMP_SPINCOUNT"] == "30000"
