"""Benchmarks that cannot run here still run to a clean skip."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_throughput_skips_cleanly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the benchmark would really run (minutes)")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "skipped: no CUDA device" in done.stderr and done.stdout == ""


def test_frozen_runtime_benchmark_prints_its_ratio_and_difference_last():
    import json
    import os

    pytest.importorskip("onnxruntime")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "frozen_runtime.py"), "--json", "--synthetic",
                           "--images", "16", "--batch", "8", "--rounds", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ratio"] > 0 and result["max_diff"] < 1e-4 and result["best_runtime"] in ("onnxruntime", "openvino")
    runtimes = {row["runtime"] for row in result["backbones"][0]["rows"]}
    assert {"torch eager", "onnxruntime"} <= runtimes
