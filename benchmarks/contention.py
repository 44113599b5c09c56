"""Benchmark: CPU-seconds per image of the frozen pass and of a training epoch, alone and beside
a CPU hog of the same core count, in one run (issue 29).

Every measurement runs in a fresh child process (OpenMP reads ``OMP_WAIT_POLICY`` once, at
load) holding the thread budget (:mod:`allwen.threads`, ``--threads``); "beside a hog" starts
as many busy-looping processes as the budget has threads first. Each OpenMP wait policy asked
for (``--policies``: ``default`` is what torch does unless told, threads that spin before they
sleep; ``PASSIVE`` is what the CLI sets) is measured alone and under the hog, in alternating
rounds so a load change on a shared machine hits all of them alike. The child measures its own
user + system CPU time (``getrusage``) and wall time over the images.

    python benchmarks/contention.py --json                 # MobileNetV2 (random weights), 224 px
    python benchmarks/contention.py --json --quick         # a tiny model, 64 px: seconds

With ``--json`` the last line is one JSON object: ``rows`` (phase, policy, load, cpu_s_per_image,
wall_s_per_image), ``ratios`` (CPU-seconds per image beside the hog over alone, per phase and
policy) and ``alone_vs_default`` (wall time per image alone of each policy over ``default``'s).

``--baseline-src DIR`` measures instead whether the budget costs throughput alone: this checkout
(budget, PASSIVE waits, or ``--budget-policy``) and the allwen source at DIR (torch's defaults),
two processes set up once and alive together, measured pass by pass in alternation (the other
waits on its stdin), so that the machine's speed, which moves between processes, moves both:

    git worktree add /tmp/pre-threads 29270c7       # the commit before the thread budget
    python benchmarks/contention.py --json --baseline-src /tmp/pre-threads/src --rounds 10 --images 64

Policies (``--policies``, ``--budget-policy``): ``default`` (none set: libgomp spins a few
milliseconds, then sleeps), ``PASSIVE``, ``ACTIVE``, ``SPIN=N`` (``GOMP_SPINCOUNT=N``).

Its JSON: ``budget_policy``, ``interleaved``, ``phases`` {frozen, epoch: ``rounds`` (each: budget and before rows, ``ratio`` = wall
per image before / with the budget, ``cpu_ratio``, load), ``ratio_median``, ``ratio_min``, ``ratio_max``,
``ratio_pooled`` (all rounds' wall before / all rounds' wall with the budget)}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HOG = "import time\nwhile True:\n    sum(range(10000))\n"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _setup(args: argparse.Namespace) -> Callable[[], dict]:
    """This process's thread budget, the model and one pass's step over ``--images`` (warmed up)."""
    try:
        from allwen.threads import configure
    except ModuleNotFoundError:  # --baseline-src: allwen before the thread budget left torch's defaults
        configure = None
    threads = configure(args.threads) if configure else None
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(args.backbone, pretrained=False, num_classes=2)
    images = torch.randn(args.images, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 2, (args.images,))
    batches = [(images[i:i + args.batch], labels[i:i + args.batch]) for i in range(0, args.images, args.batch)]
    if args.phase == "frozen":
        model.eval()

        def step(x, y):
            with torch.no_grad():
                model.forward_features(x)
    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step(x, y):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    step(*batches[0])  # warm-up: allocations, oneDNN kernels

    def one_pass() -> dict:
        cpu, wall = _cpu(), time.perf_counter()
        for x, y in batches:
            step(x, y)
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
        return {"threads": threads, "torch_threads": torch.get_num_threads(),
                "cpu_s_per_image": cpu / args.images, "wall_s_per_image": wall / args.images}

    return one_pass


def child(args: argparse.Namespace) -> dict:
    """One measurement in this process: the frozen pass or a training epoch over ``--images``."""
    return _setup(args)()


def serve(args: argparse.Namespace) -> None:
    """``--serve``: set up once, print "ready", then one pass per "go" line on stdin (its JSON on
    stdout) until stdin closes: the baseline interleaves two such processes pass by pass."""
    one_pass = _setup(args)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            print(json.dumps(one_pass()), flush=True)


def _child_env(policy: str, src: Path) -> dict[str, str]:
    """The environment of a measuring child: its OpenMP wait policy (``default``: none set;
    ``SPIN=N``: libgomp's ``GOMP_SPINCOUNT``, spin N iterations and then sleep) and its allwen."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy.startswith("SPIN="):
        env["GOMP_SPINCOUNT"] = policy.removeprefix("SPIN=")
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)
    return env


def _child_argv(args: argparse.Namespace, phase: str, mode: str) -> list[str]:
    """This script as a measuring child: ``--child`` (one pass) or ``--serve`` (a pass per "go")."""
    return [sys.executable, __file__, mode, "--phase", phase, "--threads", str(args.threads), "--backbone",
            args.backbone, "--image-size", str(args.image_size), "--images", str(args.images), "--batch", str(args.batch)]


def measure(args: argparse.Namespace, phase: str, policy: str, hog: bool, src: Path | None = None) -> dict:
    """One child process; ``src``: the allwen source it imports (default: this checkout's)."""
    env = _child_env(policy, src or Path(__file__).resolve().parents[1] / "src")
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.threads if hog else 0)]
    try:
        done = subprocess.run(_child_argv(args, phase, "--child"), capture_output=True, text=True, env=env, timeout=1800)
    finally:
        for p in hogs:
            p.kill()
            p.wait()
    if done.returncode:
        raise SystemExit(f"contention: the {phase}/{policy} child failed: {done.stderr[-1500:]}")
    return {"phase": phase, "policy": policy, "load": "hog" if hog else "alone",
            **json.loads(done.stdout.strip().splitlines()[-1])}


def _server(args: argparse.Namespace, phase: str, policy: str, src: Path) -> subprocess.Popen:
    proc = subprocess.Popen(_child_argv(args, phase, "--serve"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=_child_env(policy, src))
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit(f"contention: the {phase} child ({src}) did not start")
    return proc


def _go(proc: subprocess.Popen) -> dict:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("contention: a measuring child ended early")
    return json.loads(line)


def baseline(args: argparse.Namespace) -> None:
    """Alone: this checkout with the CLI's PASSIVE waits against the source at ``--baseline-src``
    with torch's default waits and threads. Both sides are set up once, in two processes alive at
    the same time, and measured pass by pass in alternation (budget, before, before, budget, ...),
    so a change of the machine's speed between rounds hits both sides of a round alike; the other
    side waits on its stdin meanwhile. ``ratio`` per round = wall per image before / with the
    budget (throughput kept: 1.0; the goal: at least 0.95)."""
    src = args.baseline_src.resolve()
    if not (src / "allwen").is_dir():
        raise SystemExit(f"contention: --baseline-src {src}: no allwen package there (give the src folder of a checkout)")
    here = Path(__file__).resolve().parents[1] / "src"
    load_before = os.getloadavg()
    phases: dict[str, dict] = {}
    for phase in ("frozen", "epoch"):
        procs = {"budget": _server(args, phase, args.budget_policy, here), "before": _server(args, phase, "default", src)}
        rounds = []
        try:
            for r in range(args.rounds):
                order = ("budget", "before") if r % 2 == 0 else ("before", "budget")
                rows = {side: _go(procs[side]) for side in order}
                new, old = rows["budget"], rows["before"]
                rounds.append({"budget": new, "before": old, "load": round(os.getloadavg()[0], 2),
                               "ratio": round(old["wall_s_per_image"] / new["wall_s_per_image"], 3),
                               "cpu_ratio": round(old["cpu_s_per_image"] / new["cpu_s_per_image"], 3)})
                if not args.json:
                    print(f"{phase:6} budget {new['wall_s_per_image'] * 1000:8.1f} wall-ms/image, before "
                          f"{old['wall_s_per_image'] * 1000:8.1f}: throughput ratio {rounds[-1]['ratio']}", flush=True)
        finally:
            for proc in procs.values():
                proc.stdin.close()
                proc.wait(timeout=60)
        ratios = [r["ratio"] for r in rounds]
        pooled = sum(r["before"]["wall_s_per_image"] for r in rounds) / sum(r["budget"]["wall_s_per_image"] for r in rounds)
        phases[phase] = {"rounds": rounds, "ratio_median": round(statistics.median(ratios), 3),
                         "ratio_min": min(ratios), "ratio_max": max(ratios), "ratio_pooled": round(pooled, 3)}
    summary = {"benchmark": "contention_baseline", "baseline_src": str(src), "budget_policy": args.budget_policy,
               "backbone": args.backbone,
               "image_size": args.image_size, "images": args.images, "batch": args.batch, "threads": args.threads,
               "rounds": args.rounds, "interleaved": True, "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()], "phases": phases}
    print(json.dumps(summary) if args.json else
          {k: (v["ratio_median"], v["ratio_min"], v["ratio_max"]) for k, v in phases.items()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quick", action="store_true", help="a tiny model at 64 px on 32 images (a smoke check)")
    parser.add_argument("--threads", type=int, default=None, help="the thread budget (default: allwen's)")
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=None, help="images per measurement (64; --quick 32)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (32; --quick 16)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; each row is their median")
    parser.add_argument("--policies", default="default,PASSIVE", help="OpenMP wait policies, comma-separated: default, PASSIVE, ACTIVE, "
                             "or SPIN=N (libgomp's GOMP_SPINCOUNT: spin N iterations, then sleep)")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="instead of the hog: alone throughput of this checkout (thread budget, --budget-policy "
                             "waits) against allwen's source at DIR (e.g. a worktree of the commit before the budget, "
                             "torch's defaults), two live processes measured pass by pass in turn for --rounds rounds")
    parser.add_argument("--phase", choices=("frozen", "epoch"), help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--budget-policy", default="PASSIVE",
                        help="--baseline-src: this checkout's OpenMP wait policy (default PASSIVE, as the CLI sets)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.serve:
        return serve(args)
    if args.quick:
        args.backbone, args.image_size = "test_efficientnet", 64
    args.images = args.images or (32 if args.quick else 64)
    args.batch = args.batch or (16 if args.quick else 32)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from allwen.threads import budget

    args.threads = budget(args.threads)
    if args.baseline_src:
        return baseline(args)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    load_before = os.getloadavg()
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for phase in ("frozen", "epoch"):
            for hog in (False, True):
                for policy in policies:
                    row = measure(args, phase, policy, hog)
                    runs.setdefault((phase, policy, row["load"]), []).append(row)
                    if not args.json:
                        print(f"{phase:6} {policy:8} {row['load']:5}: {row['cpu_s_per_image'] * 1000:8.1f} CPU-ms/image, "
                              f"{row['wall_s_per_image'] * 1000:8.1f} wall-ms/image", flush=True)

    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    rows = [{"phase": k[0], "policy": k[1], "load": k[2], "cpu_s_per_image": round(median(v, "cpu_s_per_image"), 5),
             "wall_s_per_image": round(median(v, "wall_s_per_image"), 5)} for k, v in runs.items()]
    at = {(r["phase"], r["policy"], r["load"]): r for r in rows}
    ratios = {f"{phase}/{policy}": round(at[(phase, policy, "hog")]["cpu_s_per_image"]
                                         / at[(phase, policy, "alone")]["cpu_s_per_image"], 3)
              for phase in ("frozen", "epoch") for policy in policies}
    alone = {f"{phase}/{policy}": round(at[(phase, policy, "alone")]["wall_s_per_image"]
                                        / at[(phase, policies[0], "alone")]["wall_s_per_image"], 3)
             for phase in ("frozen", "epoch") for policy in policies}
    summary = {"benchmark": "contention", "backbone": args.backbone, "image_size": args.image_size,
               "images": args.images, "batch": args.batch, "threads": args.threads, "hog_processes": args.threads,
               "rounds": args.rounds, "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()], "rows": rows,
               "ratios": ratios, "alone_vs_default": alone}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"CPU-s per image beside the hog / alone: {ratios}")
        print(f"wall per image alone / {policies[0]}'s: {alone}")


if __name__ == "__main__":
    main()
