"""One thread budget for every runtime allwen drives.

A process that trains or predicts beside other work must not start more busy threads than the
CPUs it holds: torch, ONNX Runtime, OpenVINO, BLAS, OpenCV and DataLoader workers each default to
"every core", and their threads wait by spinning, which burns the CPU the other work needs
(issue 29: 3x the CPU-seconds per image at load 5). The budget is one number:
``--threads N``, else ``ALLWEN_THREADS``, else the CPUs this process may use (its affinity and
its cgroup CPU quota). :func:`configure` sets every runtime from it; DataLoader workers run one
thread each and count against it; Ray tasks and DDP ranks get a share (:func:`share`).

This module imports no heavy package at import time: the CLI calls :func:`early_env` before
torch is imported (OpenMP reads its wait policy once, at load).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

ENV = "ALLWEN_THREADS"
CGROUP = Path("/sys/fs/cgroup")


def _cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 ``cpu.max`` or v1 cfs files), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def available_cpus(root: Path = CGROUP) -> int:
    """The CPUs this process may use: its affinity, capped by its cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def budget(requested: int | None = None) -> int:
    """The thread budget: ``requested`` (``--threads``), else ``ALLWEN_THREADS``, else the CPUs."""
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"--threads {requested}: give 1 or more")
        return int(requested)
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{ENV}={value!r}: set it to a whole number of threads, 1 or more (or unset it)")
        return n
    return available_cpus()


def share(total: int, parts: int) -> int:
    """Threads for each of ``parts`` processes (Ray tasks, DDP ranks) sharing ``total``."""
    return max(1, int(total) // max(1, int(parts)))


def split_workers(total: int, wanted: int | str) -> tuple[int, int]:
    """(main-process threads, DataLoader workers) within ``total``: ``auto`` workers are
    ``total - 1``; each worker runs one thread, the main process gets what is left (at least 1)."""
    workers = max(0, total - 1) if wanted == "auto" else int(wanted)
    return max(1, total - workers), workers


def early_env(policy: str = "PASSIVE") -> None:
    """Before torch is imported: OpenMP threads sleep when idle instead of spinning, unless the
    user chose how they wait (``OMP_WAIT_POLICY``, or libgomp's ``GOMP_SPINCOUNT``: spin that many
    iterations, then sleep; on a machine of one's own it gives a small model its speed back).
    Measured in docs/speed.md, "Threads on a shared machine"."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = policy


def configure(requested: int | None = None, workers: int = 0) -> int:
    """Set every loaded runtime to the budget (minus ``workers`` DataLoader workers) and export
    it as ``ALLWEN_THREADS`` so child processes (Ray workers, DDP ranks) inherit it; returns
    the main process's thread count."""
    total = budget(requested)
    os.environ[ENV] = str(total)
    threads = max(1, total - max(0, workers))
    limit_process(threads)
    return threads


def limit_process(threads: int, opencv: bool = True) -> None:
    """torch intra- and inter-op threads, BLAS (threadpoolctl) and (``opencv``) OpenCV of this process."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only settable before the first parallel work; later calls keep the first
        pass
    try:
        import cv2  # before threadpoolctl: the BLAS and OpenMP libraries it loads get the limit too

        if opencv:
            cv2.setNumThreads(threads)
    except ImportError:
        pass
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # not as a context manager: the limit stays


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's per-worker seeding when ``seed_everything(workers=True)``
    asked, then one thread per worker (the workers count against the budget). The seeding first: it
    imports Lightning, whose libraries (another BLAS or OpenMP) would otherwise load after the limit.

    OpenCV is left as the parent set it: a worker is a fork, and ``cv2.setNumThreads`` there waits
    forever for the parent's pool threads, which a fork does not copy (``tests/test_threads.py``)."""
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
    limit_process(1, opencv=False)


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options within the budget: intra-op ``threads``, one inter-op
    thread, and threads that sleep when idle (``allow_spinning = 0``: spinning threads tripled
    the CPU time per image beside other work). Every ORT session allwen creates uses these."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or budget()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def inference_session(path: Path, threads: int | None = None, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> Any:
    """The one place an ONNX Runtime session is created (frozen training parts, bundle members,
    the export check): :func:`session_options` within the budget, ORT's warnings kept quiet."""
    import onnxruntime as ort

    options = session_options(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # ORT's default, stated
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def openvino_config(threads: int | None = None) -> dict[str, Any]:
    """OpenVINO compile settings within the budget."""
    return {"INFERENCE_NUM_THREADS": threads or budget()}


def info() -> dict[str, Any]:
    """What each loaded runtime uses now (for tests, ``unit.json`` and bug reports)."""
    import torch
    from threadpoolctl import threadpool_info

    found: dict[str, Any] = {"budget": budget(), "torch": torch.get_num_threads(),
                             "torch_interop": torch.get_num_interop_threads(),
                             "blas": sorted({p["num_threads"] for p in threadpool_info()}),
                             "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                             "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}
    try:
        import cv2

        found["cv2"] = cv2.getNumThreads()
    except ImportError:
        pass
    return found
