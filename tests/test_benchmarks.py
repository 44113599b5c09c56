"""Benchmarks that cannot run here still run to a clean skip."""

import subprocess
import sys
from pathlib import Path

import pytest

from allwen.runfolder import RunFolder, UnitFolder

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


def _fake_run(root: Path, shift: float) -> Path:
    import json

    import pandas as pd

    unit = RunFolder(root).unit_dir("backbone=x", 0)
    unit.mkdir(parents=True)
    UnitFolder(unit).info_path.write_text(json.dumps({"train_metrics": {"stage": "stage1", "epoch": 1}}))
    pd.DataFrame({"stage": ["stage1"] * 2, "epoch": [0, 1], "l2": [0.1, 0.01]}).to_csv(UnitFolder(unit).history, index=False)
    for name, order in (("predictions_val.csv", [0, 1]), ("predictions_test.csv", [1, 0])):
        rows = pd.DataFrame({"path": ["a.png", "b.png"], "y_true": [0, 1], "prob_a": [0.9, 0.2], "prob_b": [0.1, 0.8]})
        rows.loc[1, ["prob_a", "prob_b"]] += [shift, -shift]
        rows.iloc[order].to_csv(unit / name, index=False)  # row order differs: matched by path
    return root


def test_compare_probabilities_finds_the_largest_difference_and_holds_the_tolerance(tmp_path):
    import json

    a, b = _fake_run(tmp_path / "a", 0.0), _fake_run(tmp_path / "b", 3e-4)
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    tool = [sys.executable, str(REPO / "tools" / "compare_probabilities.py"), str(a), str(b), "--json"]
    done = subprocess.run([*tool, "--tol", "1e-4"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["units"] == 1 and result["rows"] == 4 and abs(result["max_diff"] - 3e-4) < 1e-9
    assert "L2 0.01 / 0.01" in done.stdout
    assert subprocess.run([*tool, "--tol", "1e-3"], capture_output=True, timeout=60, env=env).returncode == 0


def test_contention_benchmark_help_names_its_json_contract():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "contention.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--json" in done.stdout and "--quick" in done.stdout and "--threads" in done.stdout


@pytest.mark.slow  # four child processes that each load torch: ~1.5 min on 2 busy cores
def test_contention_benchmark_measures_alone_and_beside_a_hog_in_one_run():
    import json
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "contention.py"), "--json", "--quick",
                           "--threads", "1", "--images", "8", "--batch", "8", "--policies", "PASSIVE"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {(r["phase"], r["load"]) for r in result["rows"]} == {("frozen", "alone"), ("frozen", "hog"),
                                                                  ("epoch", "alone"), ("epoch", "hog")}
    assert all(r["cpu_s_per_image"] > 0 for r in result["rows"]) and result["hog_processes"] == 1
    assert set(result["ratios"]) == {"frozen/PASSIVE", "epoch/PASSIVE"}


def test_scale_benchmark_help_names_its_phases_and_json_contract():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--json" in done.stdout and "--sizes" in done.stdout
    assert "near_duplicates" in done.stdout and "export" in done.stdout


@pytest.mark.slow  # two tiny protocol runs of 15 units: ~2-3 min on 2 busy cores
def test_scale_benchmark_quick_measures_every_phase_at_two_sizes(tmp_path):
    import json
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--json", "--quick",
                           "--work", str(tmp_path)], capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["n"] for r in result["sizes"]] == [202, 404]
    phases = result["sizes"][-1]["phases"]
    for name in ("hashing", "audit", "near_duplicates", "split", "training", "ensembles", "statistics", "report",
                 "export"):
        assert phases[name]["seconds"] >= 0 and phases[name]["peak_rss_mb"] > 0, name
    assert "training" in result["exponents"] and set(result["shares"]) == {"statistics", "report"}
    assert result["sizes"][-1]["images"] > result["sizes"][0]["images"]


def test_scale_summarizes_finished_sizes_and_times_the_search_alone(tmp_path):
    import json
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rows = [{"n": n, "near_duplicates_random_seconds": 0.01 * (n / 100) ** 2, "total_seconds": 10.0 * n / 100,
             "phases": {"training": {"seconds": 9.0 * n / 100, "cpu_seconds": 8.0 * n / 100},
                        "statistics": {"seconds": 0.5, "cpu_seconds": 0.5}}} for n in (100, 400)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--json", "--from-rows",
                           str(tmp_path / "rows.jsonl")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["exponents"] == {"statistics": 0.0, "training": 1.0}
    assert summary["shares"]["statistics"] == round(0.5 / 40.0, 4)
    assert summary["near_duplicates_search"]["at_100000_seconds_extrapolated"] == round(0.16 * (100_000 / 400) ** 2, 1)

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--json", "--search-only", "64,256"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    search = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["n"] for r in search["sizes"]] == [64, 256] and search["phash_distance"] == 24
    assert search["sizes"][-1]["phases"]["near_duplicates"]["seconds"] > 0 and "near_duplicates" in search["exponents"]


def test_demo_contention_help_names_its_bound_and_json_contract():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "demo_contention.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert all(word in done.stdout for word in ("alone", "hog", "ratio", "cpu_ratio", "load_before", "2.5"))


def test_contention_baseline_refuses_a_folder_without_allwen(tmp_path):
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "contention.py"), "--json", "--baseline-src",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0 and f"--baseline-src {tmp_path}: no allwen package there" in done.stderr


def test_contention_baseline_interleaves_two_live_processes_pass_by_pass():
    import json
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "contention.py"), "--json", "--quick",
                           "--threads", "1", "--images", "8", "--batch", "8", "--rounds", "3",
                           "--baseline-src", str(REPO / "src")],  # this checkout on both sides: the mechanics
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["interleaved"] and result["budget_policy"] == "PASSIVE"
    for phase in ("frozen", "epoch"):
        rounds = result["phases"][phase]["rounds"]
        assert len(rounds) == 3 and all(r["budget"]["wall_s_per_image"] > 0 < r["before"]["wall_s_per_image"]
                                        for r in rounds)
        ratios = sorted(r["ratio"] for r in rounds)
        assert result["phases"][phase]["ratio_median"] == ratios[1] and result["phases"][phase]["ratio_pooled"] > 0
