"""Benchmark: how each phase of Experiment A's protocol grows with the number of images (issue 29).

For each N (``--sizes``) it writes C-NMC-like cells with ``allwen synth`` (73 training subjects
+ 28 preliminary-test subjects as C-NMC, ``--image-size`` px, 450 as C-NMC), runs Experiment A's
protocol shape on them (``experiment_a``: 3 learning rates x 5 folds, two stages, augmented
stage 1, every ensemble and weighting, statistics, report) with a tiny backbone and
``--epochs`` epochs per stage, then exports the default model. Each phase's wall time
(exclusive of the phases nested in it) and peak RSS (sampled every 50 ms while it runs) are
recorded, with the run folder's disk use, and each phase's growth exponent is fitted over N
(least squares of log time on log N).

Phases: ``hashing`` (reading the files, sha256), ``audit`` (decoding each image once, its
perceptual hash), ``near_duplicates`` (the pairwise Hamming search over distinct perceptual
hashes, blocked: quadratic in N with a bound of ``_BLOCK`` x N words in memory), ``split``,
``decode_store``, ``feature_cache`` (frozen parts' outputs), ``training`` (the units' own
time, without the store and caches), ``ensembles``, ``statistics`` (the rest of the
evaluation), ``report``, ``export``.

    python benchmarks/scale.py --json --sizes 1000,4000,12528       # the issue's sizes (hours at 450 px)
    python benchmarks/scale.py --json --quick                        # 2 small sizes at 48 px: a few minutes

``--train-size`` resizes for training (``data.image_size``; default: native, as Experiment A);
the images on disk are always ``--image-size`` px. With ``--json`` the last line is one JSON
object: ``sizes`` (per N: ``phases`` {name: {seconds, peak_rss_mb}}, ``total_seconds``,
``peak_rss_mb``, ``disk_mb``), ``exponents`` {phase: slope of log seconds on log N} and
``shares`` (statistics and report as a share of the total, at the largest N).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_SUBJECTS, TEST_SUBJECTS = (47, 26), (15, 13)  # C-NMC: 73 training subjects (ALL, hem), 28 prelim-test


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Phases:
    """Exclusive wall time and peak RSS of named phases (nested calls are subtracted)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # this process's CPU seconds (all its threads): less load-bound than wall time
        self.peak: dict[str, float] = {}
        self.stack: list[list] = []  # [name, started, child seconds, cpu started, child cpu seconds]
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            if self.stack:
                name = self.stack[-1][0]
                self.peak[name] = max(self.peak.get(name, 0.0), _rss_mb())

    @contextmanager
    def phase(self, name: str):
        frame = [name, time.perf_counter(), 0.0, time.process_time(), 0.0]
        self.stack.append(frame)
        self.peak[name] = max(self.peak.get(name, 0.0), _rss_mb())
        try:
            yield
        finally:
            self.stack.pop()
            spent, cpu = time.perf_counter() - frame[1], time.process_time() - frame[3]
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - frame[2]
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu - frame[4]
            self.peak[name] = max(self.peak.get(name, 0.0), _rss_mb())
            if self.stack:
                self.stack[-1][2] += spent
                self.stack[-1][4] += cpu

    def wrap(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        if getattr(original, "_scale_phase", None):
            return

        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        timed._scale_phase = name
        setattr(owner, attr, timed)

    def close(self) -> None:
        self._stop.set()


def instrument(phases: Phases) -> None:
    """Wrap the functions each phase runs in (looked up at call time by their callers)."""
    import allwen.data.audit as audit
    import allwen.data.neardup as neardup
    import allwen.data.sources as sources
    import allwen.data.splits as splits
    import allwen.evaluation.run as evaluation
    import allwen.pipeline  # noqa: F401 - loads the modules the wraps below replace names in
    import allwen.report as report
    import allwen.training.runner as runner
    import allwen.training.stages as stages
    from allwen.training.inputs import DecodedImages

    phases.wrap(sources, "load_source", "hashing")
    phases.wrap(audit, "audit_table", "audit")
    for module in (neardup, audit, splits):
        for attr in ("hash_pairs", "feature_pairs"):
            if hasattr(module, attr):
                phases.wrap(module, attr, "near_duplicates")
    phases.wrap(splits, "make_split", "split")
    phases.wrap(DecodedImages, "ensure", "decode_store")
    phases.wrap(stages, "cached_outputs", "feature_cache")
    phases.wrap(runner, "run_grid", "training")
    phases.wrap(evaluation, "build_ensembles", "ensembles")
    phases.wrap(evaluation, "evaluate_run", "statistics")
    phases.wrap(report, "build_report", "report")


def synth(root: Path, n: int, size: int) -> Path:
    """C-NMC-like cells: ``n`` images over 73 + 28 subjects, through ``allwen synth``."""
    subjects = sum(TRAIN_SUBJECTS) + sum(TEST_SUBJECTS)
    cells = max(1, round(n / subjects))
    out = root / f"data_{n}_{size}"
    if not (out / "C-NMC_Leukemia").exists():
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        cmd = [sys.executable, "-m", "allwen", "synth", str(out), "--all-subjects", str(TRAIN_SUBJECTS[0]),
               "--hem-subjects", str(TRAIN_SUBJECTS[1]), "--cells", str(cells), "--size", str(size),
               "--prelim-all", str(TEST_SUBJECTS[0]), "--prelim-hem", str(TEST_SUBJECTS[1]), "--duplicates", str(min(20, cells))]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"scale: allwen synth failed: {done.stderr[-1500:]}")
    return out / "C-NMC_Leukemia"


def _disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def one_size(args: argparse.Namespace, n: int) -> dict:
    """A child process per size: its own peak RSS, phases from a clean start."""
    from allwen.config import load_config
    from allwen.pipeline import run_pipeline
    from allwen.export.build import export_bundle
    from allwen.threads import configure

    configure(args.threads)
    data = synth(args.work, n, args.image_size)
    run = args.work / f"run_{n}"
    shutil.rmtree(run, ignore_errors=True)
    overrides = [f"data.path={data}", f"model.backbone={args.backbone}", "model.weights=none",
                 "model.pretrained_tag=null", f"train.stage1.epochs={args.epochs}",
                 f"train.stage2.epochs={args.epochs}", "train.batch_size=32", "train.stage1.patience=null",
                 "train.stage2.patience=null"]
    if args.train_size:
        overrides.append(f"data.image_size={args.train_size}")
    cfg = load_config("experiment_a", overrides)
    phases = Phases()
    instrument(phases)
    started = time.perf_counter()
    with phases.phase("other"):
        run_pipeline(cfg, run, quiet=True)
        with phases.phase("export"):
            export_bundle(run, args.work / f"bundle_{n}", None, "safetensors")
    total = time.perf_counter() - started
    phases.close()
    import resource

    random_search = random_search_seconds(n, cfg.split.phash_distance or 24)
    return {"n": n, "near_duplicates_random_seconds": round(random_search, 3),
            "images": sum(1 for _ in data.rglob("*.bmp")), "image_size": args.image_size,
            "train_size": args.train_size, "total_seconds": round(total, 2),
            "phases": {k: {"seconds": round(v, 3), "cpu_seconds": round(phases.cpu.get(k, 0.0), 3),
                           "peak_rss_mb": round(phases.peak.get(k, 0.0), 1)}
                       for k, v in sorted(phases.seconds.items())},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "disk_mb": {"data": round(_disk_mb(data), 1), "run": round(_disk_mb(run), 1)},
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def random_search_seconds(n: int, distance: int = 24) -> float:
    """The near-duplicate search's worst case at ``n`` images: every hash distinct (random 256-bit values)."""
    import numpy as np

    from allwen.data.neardup import hash_pairs

    hashes = np.random.default_rng(0).integers(0, 2**63, size=(n, 4), dtype=np.uint64)
    t0 = time.perf_counter()
    hash_pairs(hashes, distance)
    return time.perf_counter() - t0


def search_only(sizes: list[int]) -> dict:
    """``--search-only``: the search alone at each size, its exponent and its time at 100,000 by N^2."""
    from allwen.config import load_config

    distance = load_config("experiment_a").split.phash_distance or 24
    rows = [{"n": n, "phases": {"near_duplicates": {"seconds": round(random_search_seconds(n, distance), 3)}}}
            for n in sizes]
    last = rows[-1]
    return {"benchmark": "scale_search", "phash_distance": distance, "sizes": rows, "exponents": exponents(rows),
            "at_100000_seconds_extrapolated": round(last["phases"]["near_duplicates"]["seconds"]
                                                    * (100_000 / last["n"]) ** 2, 1),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def exponents(rows: list[dict], key: str = "seconds") -> dict[str, float]:
    """Least-squares slope of log ``key`` (seconds or cpu_seconds) on log N, per phase measured at every size."""
    out = {}
    names = set.intersection(*(set(r["phases"]) for r in rows)) if rows else set()
    for name in sorted(names):
        pts = [(math.log(r["n"]), math.log(max(r["phases"][name].get(key, 0.0), 1e-3))) for r in rows]
        if len(pts) < 2:
            continue
        mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
        den = sum((x - mx) ** 2 for x, _ in pts)
        out[name] = round(sum((x - mx) * (y - my) for x, y in pts) / den, 2) if den else None
    return out


def summarize(rows: list[dict], args: argparse.Namespace) -> dict:
    """The JSON summary of the sizes measured (``rows``, one per N)."""
    last = rows[-1] if rows else None
    shares = {} if not last else {
        name: round(last["phases"].get(name, {"seconds": 0})["seconds"] / last["total_seconds"], 4)
        for name in ("statistics", "report")}
    search = {} if not last else {
        "measured_n": last["n"], "measured_seconds": last["near_duplicates_random_seconds"],
        "at_100000_seconds_extrapolated": round(last["near_duplicates_random_seconds"] * (100_000 / last["n"]) ** 2, 1)}
    summary = {"benchmark": "scale", "near_duplicates_search": search, "backbone": args.backbone, "epochs": args.epochs, "image_size": args.image_size,
               "train_size": args.train_size, "sizes": rows, "exponents": exponents(rows),
               "cpu_exponents": exponents(rows, "cpu_seconds"), "shares": shares,
               "near_duplicates_method": "perceptual hashes (256-bit pHash, 4 words), exact Hamming distance between "
                                         "distinct hash values in blocks (allwen.data.neardup.hash_pairs): "
                                         "quadratic in distinct images"}
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quick", action="store_true", help="sizes 202 and 404 at 48 px (a smoke check)")
    parser.add_argument("--sizes", default="1000,4000,12528", help="numbers of images, comma-separated")
    parser.add_argument("--image-size", type=int, default=450, help="side of the generated images (C-NMC: 450)")
    parser.add_argument("--train-size", type=int, default=None, help="data.image_size for training (default: native)")
    parser.add_argument("--backbone", default="test_efficientnet", help="a tiny timm backbone (random weights)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per stage")
    parser.add_argument("--threads", type=int, default=None, help="the thread budget (default: allwen's)")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temporary one)")
    parser.add_argument("--search-only", metavar="SIZES", default=None,
                        help="only time the near-duplicate search's worst case (every hash distinct, random "
                             "256-bit hashes) at these numbers of images, comma-separated: seconds, not hours")
    parser.add_argument("--from-rows", type=Path, default=None, metavar="ROWS_JSONL",
                        help="print the summary of the sizes a run has finished so far (WORK/rows.jsonl, one line "
                             "per size, written as each finishes), with the options it ran with")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.image_size = "202,404", 48
    if args.one is not None:
        print(json.dumps(one_size(args, args.one)))
        return
    if args.from_rows:
        rows = [json.loads(line) for line in args.from_rows.read_text().splitlines() if line.strip()]
        print(json.dumps({**summarize(rows, args), "from_rows": str(args.from_rows)}))
        return
    if args.search_only:
        print(json.dumps(search_only([int(v) for v in args.search_only.split(",") if v.strip()])))
        return
    import tempfile

    keep = args.work is not None
    args.work = args.work or Path(tempfile.mkdtemp(prefix="allwen-scale-"))
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        cmd = [sys.executable, __file__, "--one", str(n), "--image-size", str(args.image_size), "--backbone",
               args.backbone, "--epochs", str(args.epochs), "--work", str(args.work)]
        cmd += ["--train-size", str(args.train_size)] if args.train_size else []
        cmd += ["--threads", str(args.threads)] if args.threads else []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the allwen command line runs
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"scale: N={n} failed: {done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        with open(args.work / "rows.jsonl", "a") as f:  # each size as it finishes (a long run may be stopped)
            f.write(json.dumps(row) + "\n")
        if not args.json:
            print(f"N={n}: {row['total_seconds']:.0f} s, peak RSS {row['peak_rss_mb']:.0f} MB, "
                  f"disk {row['disk_mb']}", flush=True)
            for name, p in row["phases"].items():
                print(f"  {name:16} {p['seconds']:9.2f} s  {p['peak_rss_mb']:8.0f} MB")
    summary = summarize(rows, args)
    if not keep:
        shutil.rmtree(args.work, ignore_errors=True)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"growth exponents over N: {summary['exponents']}; shares at N={rows[-1]['n'] if rows else '-'}: "
              f"{summary['shares']}")


if __name__ == "__main__":
    main()
