"""Benchmark: `allwen report` on a 15-unit run (3 scenarios x 5 folds, 644 test images, 1,000 resamples).

Writes a synthetic finished run (``allwen.evaluation.synthetic``: subjects with their own
offsets, so the statistics run over 16 test subjects), then times the real command in a fresh
process, several times, and prints the best and median wall times against the 2-second budget,
plus where the time goes inside one process (imports, evaluation, report). ``--images`` writes
the split without subjects (image-level statistics: McNemar and DeLong).

    .venv/bin/python benchmarks/report_speed.py [--repeat 5] [--images]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 2.0
SRC = Path(__file__).resolve().parents[1] / "src"


def time_command(run_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "allwen.cli", "report", str(run_dir)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def in_process(run_dir: Path) -> str:
    code = (
        "import time; t0 = time.perf_counter()\nfrom pathlib import Path\n"
        "from allwen.pipeline import load_run_config, check_units_finished\n"
        "from allwen.evaluation.run import evaluate_run\nfrom allwen.report import build_report\n"
        "t1 = time.perf_counter(); cfg = load_run_config(RUN); check_units_finished(cfg, RUN); evaluate_run(RUN, cfg)\n"
        "t2 = time.perf_counter(); build_report(RUN); t3 = time.perf_counter()\n"
        "print(f'imports {t1 - t0:.2f} s, evaluation {t2 - t1:.2f} s, report {t3 - t2:.2f} s')\n"
    ).replace("RUN", f"Path({str(run_dir)!r})")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--images", action="store_true", help="no subject ids: image-level statistics")
    args = parser.parse_args()
    sys.path.insert(0, str(SRC))
    from allwen.evaluation.synthetic import write_synthetic_run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        write_synthetic_run(run_dir, subjects=not args.images)
        times = [time_command(run_dir) for _ in range(args.repeat)]
        breakdown = in_process(run_dir)
        load = os.getloadavg()[0]
    best, median = min(times), statistics.median(times)
    print(f"allwen report, 15 units, 644 test images, 1000 resamples, "
          f"{'image' if args.images else '16-subject'} statistics; {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"wall time over {args.repeat} runs: best {best:.2f} s, median {median:.2f} s "
          f"(budget {BUDGET_S:.1f} s: best/budget = {best / BUDGET_S:.2f})")
    print(f"inside one process: {breakdown}")
    return 0 if best < BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
