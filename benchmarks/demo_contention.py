"""Benchmark: ``allwen demo`` alone, then beside a CPU hog of the same core count, in one run (issue 29).

The issue's bound: the demo beside one hog (as many busy-looping processes as the thread
budget has threads, the hog of ``benchmarks/contention.py``) takes at most 2.5x its time alone.
Each demo is a fresh ``python -m allwen demo --quiet`` child (this checkout's ``src`` first on
``PYTHONPATH``) writing to its own folder; its wall time, its CPU time (user + system of the
child and the processes it waited for, from ``wait4``) and the load average just before it
are recorded. On a shared machine the load moves between the two runs: it is printed beside them.

    python benchmarks/demo_contention.py --json            # two whole demos: minutes each
    python benchmarks/demo_contention.py --json --quick    # allwen demo --quick (a smoke check)

With ``--json`` the last line is one JSON object: ``runs`` (``alone`` and ``hog``: wall_s, cpu_s,
load_before [1, 5, 15 min]), ``hog_processes``, ``threads``, ``ratio`` (wall beside the hog over
alone), ``cpu_ratio`` and ``bound`` (2.5).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contention import HOG  # noqa: E402 - the same hog as the contention benchmark

REPO = Path(__file__).resolve().parents[1]
BOUND = 2.5


def demo(out: Path, quick: bool, threads: int | None) -> dict:
    """One ``allwen demo`` in a child process: its wall and CPU seconds, the load before it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    cmd = [sys.executable, "-m", "allwen", "demo", "--out", str(out), "--quiet"]
    cmd += ["--quick"] if quick else []
    cmd += ["--threads", str(threads)] if threads else []
    load = [round(v, 2) for v in os.getloadavg()]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"demo_contention: allwen demo failed ({child.returncode}): {stderr.decode()[-1500:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "load_before": load}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quick", action="store_true", help="allwen demo --quick (a smoke check)")
    parser.add_argument("--threads", type=int, default=None, help="the thread budget (default: allwen's)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the two demos (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from allwen.threads import budget

    threads = budget(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="allwen-demo-contention-"))
    runs = {}
    try:
        for load in ("alone", "hog"):
            shutil.rmtree(work / load, ignore_errors=True)
            hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(threads if load == "hog" else 0)]
            try:
                runs[load] = demo(work / load, args.quick, args.threads)
            finally:
                for p in hogs:
                    p.kill()
                    p.wait()
            if not args.json:
                r = runs[load]
                print(f"{load:5}: {r['wall_s']:8.1f} s wall, {r['cpu_s']:8.1f} s CPU, load before {r['load_before']}",
                      flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = runs["hog"]["wall_s"] / runs["alone"]["wall_s"]
    summary = {"benchmark": "demo_contention", "quick": args.quick, "threads": threads, "hog_processes": threads,
               "runs": runs, "ratio": round(ratio, 3),
               "cpu_ratio": round(runs["hog"]["cpu_s"] / runs["alone"]["cpu_s"], 3), "bound": BOUND,
               "within_bound": ratio <= BOUND, "load_average_after": [round(v, 2) for v in os.getloadavg()]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"beside the hog / alone: {ratio:.2f}x wall (bound {BOUND}x)")


if __name__ == "__main__":
    main()
