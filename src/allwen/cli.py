"""The ``allwen`` command line: thin commands over library functions.

Heavy packages (torch, timm, lightning, matplotlib) are imported inside the commands so that
``allwen --help`` starts fast.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Optional

from allwen.threads import early_env

early_env()  # before torch loads: OpenMP threads sleep when idle, measured faster under load (docs/speed.md)

import typer

from allwen import __version__
from allwen.cli_format import plain_help

plain_help()  # help in words: CONFIG, --out PATH; no <str>/<bool> tags or {config} braces

ABOUT = (
    "allwen classifies Acute Lymphoblastic Leukemia (ALL) in microscope images of single white blood cells. "
    "It trains and evaluates networks and Weighted Ensembles of Networks on a dataset (`allwen run`), "
    "exports the result as a model bundle (`allwen export`) and applies it to new cell images "
    "(`allwen predict`, or a web page with `allwen serve`). Research software: not for diagnostic use."
)
app = typer.Typer(add_completion=False, no_args_is_help=True, help=ABOUT, pretty_exceptions_enable=False)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"allwen {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="show full tracebacks instead of one-line errors"),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="print the version and exit"),
) -> None:
    if debug:
        os.environ["ALLWEN_DEBUG"] = "1"

CONFIG_HELP = "a built-in preset's name (allwen presets lists them) or the path of a YAML config file"
#: measured with `time allwen demo --quick --quiet` (docs/user-guide/getting-started.md)
QUICK_HELP = ("a smoke check of the same protocol without stage 2: 2 folds, 1 epoch, 100 bootstrap resamples "
              "(about 2 minutes on 2 busy CPU cores; the full demo trains both stages)")

QUIET_HELP = ("print only warnings and the result; without it a terminal shows a live progress display, and a "
              "pipe or log file gets log lines with progress (units done, current unit and stage, elapsed, time left) "
              "at least every 30 s (ALLWEN_PROGRESS_EVERY sets the seconds)")

SetOption = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                         help="change one config key, e.g. --set train.lr=0.0001; the value is read as YAML; repeat for more keys")


ThreadsOption = typer.Option(
    None, "--threads", min=1, metavar="N",
    help="CPU threads for all the work (torch, ONNX Runtime, BLAS, OpenCV and loader workers together); "
         "left out: ALLWEN_THREADS, else the CPUs this process may use (affinity and cgroup quota)")


def _use_threads(threads: Optional[int]) -> None:
    """The thread budget (``allwen.threads``) for this command and the processes it starts."""
    from allwen.threads import configure

    try:
        configure(threads)
    except ValueError as exc:  # ALLWEN_THREADS that is not a number
        _fail(str(exc))


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM, raised by our signal handler instead of KeyboardInterrupt.

    Lightning turns a KeyboardInterrupt during training into ``exit(1)`` with no message; any
    other BaseException it re-raises after its teardown, so the interruption reaches us, and
    every ``finally`` (the run lock's holder file, temporary files) runs on the way out.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum


def _in_import(frame: Any) -> bool:
    """True while a module is being imported: an exception raised there can cross torch's C++
    import callbacks, where it aborts the process instead of unwinding."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise_interrupted(signum: int, frame: Any) -> None:
    if _in_import(frame):  # deliver it again once the import has finished
        import threading

        threading.Timer(0.2, os.kill, (os.getpid(), signum)).start()
        return
    raise Interrupted(signum)


def _debug() -> bool:
    return bool(os.environ.get("ALLWEN_DEBUG"))


@contextmanager
def _clear_errors(stopped: str | None = None):
    """Every failure becomes one line on stderr, never a traceback (``--debug`` shows it).

    Errors a user can fix (bad input, run files, locked folder, offline weights) print their
    message; anything else prints its type and message and asks for ``--debug``. Ctrl-C
    prints how to resume and exits 130, as shells expect; with ``stopped`` (a server, which has
    nothing to resume) it prints that line instead and exits 0.
    """
    from allwen.errors import WeightsUnavailableError
    from allwen.lock import RunLockedError

    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        how = " (SIGTERM)" if signum == signal.SIGTERM else ""
        if stopped is not None:
            typer.echo(f"{stopped}{how}", err=True)
            raise typer.Exit(0) from None
        typer.secho(f"interrupted{how}: run the same command to resume", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(128 + int(signum)) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except (ValueError, OSError, WeightsUnavailableError, RunLockedError) as exc:
        if _debug():
            raise
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if _debug():
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (run again with `allwen --debug ...` for the traceback, "
              "and report it)")
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


#: what a command holds until it returns (``allwen run``'s run-folder lock, taken before heavy imports)
_held = ExitStack()


def _hold_run_folder(run_dir: Path) -> None:
    """Take the run folder's lock until the command returns, before its heavy imports: a second
    command on a folder in use is refused in a fraction of a second (it took 16.6 s of imports)."""
    from allwen.lock import run_lock

    _held.enter_context(run_lock(run_dir))


def command(*args, **kwargs):
    """``app.command`` whose whole body runs under :func:`_clear_errors`."""

    def register(func):
        @functools.wraps(func)
        def guarded(*a, **k):
            with _clear_errors(), _held:
                return func(*a, **k)

        return app.command(*args, **kwargs)(guarded)

    return register


def _setup_logging(live: bool = False, quiet: bool = False) -> None:
    """INFO log lines (with progress) in a pipe or a log file; only warnings under the live display
    on a terminal, and with --quiet (then only warnings and the result reach the screen)."""
    from allwen.progress import set_live, terminal

    set_live(live and not quiet)
    level = logging.WARNING if quiet or (live and terminal()) else logging.INFO
    screen = logging.StreamHandler()
    screen.setLevel(level)  # the run log lifts allwen's logger to INFO for its file; the screen keeps its level
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[screen])


def _conformal_levels(text: str) -> tuple[float, ...]:
    """``--conformal-levels 0.9,0.95`` as numbers strictly between 0 and 1."""
    try:
        levels = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--conformal-levels {text!r}: give numbers like 0.9,0.95") from None
    if not levels or not all(0.0 < v < 1.0 for v in levels):
        raise ValueError(f"--conformal-levels {text!r}: give levels strictly between 0 and 1, like 0.9,0.95")
    return levels


def _load(config: Optional[str], overrides: Optional[list[str]]):
    from allwen.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        _fail(str(exc))


@command()
def inspect(
    path: Path = typer.Argument(..., metavar="PATH", help="dataset folder (C-NMC, Taleqani, one folder per class) or a CSV list of images"),
    source: str = typer.Option("auto", metavar="SOURCE", help="dataset layout: auto (guess from the folder), cnmc, taleqani, folder or csv"),
    view: str = typer.Option("native", metavar="VIEW", help="native classes, or binary (Taleqani read as Benign vs ALL)"),
    as_json: bool = typer.Option(False, "--json", help="print the audit as one JSON object instead of text"),
    grid: Optional[Path] = typer.Option(None, metavar="PNG", help="also write a picture of sample cells per class to this PNG file"),
    max_pixels: int = typer.Option(25_000_000, metavar="PIXELS", help="leave out images larger than this many pixels, read from the file header before decoding"),
    phash_distance: int = typer.Option(
        24, min=-1, max=256, metavar="BITS",
        help="near-duplicates: images whose perceptual hashes differ in at most this many of 256 bits; -1 = off"),
) -> None:
    """Audit a dataset: counts, subjects, sizes, unreadable files, exact and near duplicates."""
    from allwen.data import load_source

    _setup_logging(live=True)  # hashing and reading every image: bars on a terminal
    from allwen.data.audit import audit_table, format_report, sample_grid

    table = load_source(path, source, view)
    report = audit_table(table, max_pixels, None if phash_distance < 0 else phash_distance)
    if grid is not None:
        report.grid_png = str(sample_grid(table, grid, skip=set(report.unreadable)))
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1))
    else:
        typer.echo(format_report(report))


@command()
def synth(
    out: Path = typer.Argument(..., metavar="OUT", help="folder to create the synthetic C-NMC-like dataset in (must not hold one yet)"),
    all_subjects: int = typer.Option(6, metavar="N", help="number of leukemic (ALL) patients in the training folds"),
    hem_subjects: int = typer.Option(4, metavar="N", help="number of healthy subjects in the training folds"),
    cells: int = typer.Option(20, metavar="N", help="cell images per subject"),
    size: int = typer.Option(64, metavar="PIXELS", help="side of each square image in pixels (real C-NMC cells: 450)"),
    folds: int = typer.Option(3, metavar="N", help="number of training folds (folders fold_0, fold_1, ...)"),
    prelim_all: int = typer.Option(2, metavar="N", help="leukemic (ALL) patients in the preliminary test set"),
    prelim_hem: int = typer.Option(2, metavar="N", help="healthy subjects in the preliminary test set"),
    duplicates: int = typer.Option(0, metavar="N", help="number of images also saved, byte for byte, under another subject's name (as in the real data)"),
    difficulty: float = typer.Option(1.0, metavar="X", help="how much the two classes look alike; higher is harder"),
    seed: int = typer.Option(0, metavar="N", help="random seed; the same seed gives the same images"),
) -> None:
    """Generate synthetic cells in the C-NMC 2019 layout and naming."""
    from allwen.data.synth import generate_cnmc

    summary = generate_cnmc(
        out, n_all_subjects=all_subjects, n_hem_subjects=hem_subjects, cells_per_subject=cells,
        image_size=size, folds=folds, prelim_subjects=(prelim_all, prelim_hem), seed=seed,
        difficulty=difficulty, duplicates=duplicates,
    )
    typer.echo(f"wrote {summary['n_images']} images to {summary['root']}")


@command()
def split(
    config: str = typer.Argument(..., metavar="CONFIG", help=CONFIG_HELP),
    out: Path = typer.Option(..., "--out", "-o", metavar="RUN", help="run folder to write config.yaml and the split (splits/) into"),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Make (or reuse) the run's split and print its leakage check."""
    _hold_run_folder(out)
    from allwen.pipeline import split_run

    cfg = _load(config, overrides)
    _setup_logging()
    prepared = split_run(cfg, out)
    typer.echo(prepared.describe())


@command("config")
def show_config(
    config: Optional[str] = typer.Argument(None, metavar="CONFIG", help=CONFIG_HELP + "; leave out for the defaults"),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Print the resolved config (file, then --set overrides, over the schema defaults)."""
    from allwen.config import config_to_yaml, list_presets

    cfg = _load(config, overrides)
    typer.echo(config_to_yaml(cfg))
    typer.echo(f"# presets: {', '.join(list_presets())}", err=True)


@command()
def run(
    config: str = typer.Argument(..., metavar="CONFIG", help=CONFIG_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="RUN", help="run folder to write; running again on the same folder resumes it"),
    overrides: Optional[list[str]] = SetOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would be trained (units, trainings, sweep steps); train nothing"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: print the plan as one JSON object with the keys units, trainings and steps"),
    estimate: bool = typer.Option(False, "--estimate", help="with --dry-run: time a few real batches of each stage on this machine's device and print seconds per epoch, total hours (an upper bound: early stopping only shortens it), peak memory and whether the batch fits"),
    executor: str = typer.Option("sequential", metavar="NAME", help="sequential (one unit after another), or ray (units in parallel as Ray tasks)"),
    address: Optional[str] = typer.Option(None, metavar="HOST:PORT", help="with --executor ray: the Ray cluster to use; left out, a private local one is started"),
    cpus_per_unit: int = typer.Option(1, min=1, metavar="N", help="with --executor ray: CPU cores per unit when the cluster has no GPU (at least 1)"),
    threads: Optional[int] = ThreadsOption,
    stop_after: Optional[str] = typer.Option(
        None, "--stop-after", metavar="DURATION",
        help="start no unit after this long (e.g. 11h30m, 45m, 90s; else train.time_limit): the run stops at that "
             "unit boundary with exit code 75 and the same command resumes it (GPU sessions that end)"),
) -> None:
    """Split, train every scenario x fold, ensemble, evaluate and report (resumable)."""
    if out is not None and not dry_run:  # first: a folder in use is refused before torch is imported
        _hold_run_folder(out)
    _use_threads(threads)
    cfg = _load(config, overrides)
    if estimate and not dry_run:
        _fail("--estimate goes with --dry-run: allwen run CONFIG --dry-run --estimate")
    if dry_run:
        import json

        from allwen.training.plan import dry_run as plan

        found = plan(cfg)
        if estimate:
            from allwen.training.estimate import estimate as time_stages, format_estimate

            found["estimate"] = time_stages(cfg)
            if not as_json:
                typer.echo(format_estimate(found["estimate"]))
        if as_json:
            typer.echo(json.dumps(found))
        else:
            typer.echo("\n".join(found["units"]))
            typer.echo(f"{len(found['units'])} units, {found['trainings']} trainings, {found['steps']} step(s)")
        return
    if out is None:
        _fail("allwen run: --out RUN_FOLDER is required (or --dry-run to see the plan)")
    from allwen.api import run as run_study

    _setup_logging(live=True, quiet=quiet)
    from allwen.config.schema import parse_duration
    from allwen.errors import STOPPED_EXIT_CODE, StoppedAtBoundary

    limit = parse_duration(stop_after, "--stop-after") if stop_after is not None else None
    try:
        result = run_study(cfg, out, quiet=quiet, executor=executor, address=address, cpus_per_unit=cpus_per_unit,
                           stop_after=limit)
    except StoppedAtBoundary as stopped:
        typer.secho(f"{stopped}: allwen run {config} --out {out} ...", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(STOPPED_EXIT_CODE) from None
    typer.echo(f"report: {result.report_html}")


@command()
def crossval(
    config: str = typer.Argument(..., metavar="CONFIG", help=CONFIG_HELP),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="folder for one run per test part (test_part_0, test_part_1, ...), their shared cache and the pooled crossval.json and crossval.md; running again resumes"),
    overrides: Optional[list[str]] = SetOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    threads: Optional[int] = ThreadsOption,
    conformal_levels: str = typer.Option("0.9,0.95", metavar="LEVELS", help="levels of the prediction sets measured "
                                         "on the held-out patients (as allwen export's), comma-separated"),
) -> None:
    """Test every part once: one run per test part (split.test_part), then the parts' test predictions pooled."""
    _use_threads(threads)
    levels = _conformal_levels(conformal_levels)
    cfg = _load(config, overrides)
    from allwen.crossval import run_crossval
    from allwen.report.format import fmt_ci, fmt_num

    _setup_logging(live=True, quiet=quiet)
    done = run_crossval(cfg, out, quiet=quiet, conformal_levels=levels)
    for model in done.result.models:
        ci = fmt_ci(model.metrics.ci.get("accuracy"))
        typer.echo(f"{model.role}: accuracy {fmt_num(model.metrics.accuracy)}" + (f" {ci}" if ci else ""))
    typer.echo(f"crossval: {done.markdown_path}")


@command()
def report(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="a finished run folder (made by allwen run)"),
    headline: bool = typer.Option(False, "--headline", help="only print the answers and the summary table as Markdown; rebuild nothing"),
) -> None:
    """Rebuild evaluation and report from a run's saved predictions (no network is run)."""
    if headline:
        from allwen.pipeline import check_summary
        from allwen.report.headline import headline_markdown

        check_summary(run_dir)
        typer.echo(headline_markdown(run_dir))
        return
    if run_dir.is_dir():  # a mistyped RUN is named by rebuild_report, not created by the lock
        _hold_run_folder(run_dir)
    from allwen.api import report as rebuild_report

    _setup_logging()
    html = rebuild_report(run_dir)
    typer.echo(f"report: {html}")


@command()
def compare(
    runs: list[Path] = typer.Argument(..., metavar="RUN", help="finished run folders made on the same images; the first is the one the others are compared with"),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="folder to write the comparison page (index.html) and compare.json into"),
) -> None:
    """Put runs with different splits side by side: matched models, intervals and the gap."""
    from allwen.evaluation.compare import compare_runs
    from allwen.report.compare import write_comparison

    _setup_logging()
    page = write_comparison(compare_runs(runs), out)
    typer.echo(f"comparison: {page}")


@command()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR", help="folder for the data, both runs and the comparison; left out: runs/demo-DATE-TIME"),
    quick: bool = typer.Option(False, "--quick", help=QUICK_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Generate synthetic cells and run Experiment A's protocol on them, subject-grouped and image-level."""
    _use_threads(threads)
    from allwen.demo import run_demo

    _setup_logging(live=True, quiet=quiet)
    result = run_demo(out, quick=quick, quiet=quiet)
    typer.echo(f"report: {result.report_html}")
    typer.echo(f"comparison of the two protocols: {result.run_dir.parent / 'compare' / 'index.html'}")


@app.command()
def presets() -> None:
    """List the built-in config presets, one line each."""
    from allwen.config import list_presets, preset_summary

    for name in list_presets():
        typer.echo(f"{name:<16} {preset_summary(name)}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="a finished run folder (made by allwen run)"),
    out: Path = typer.Option(..., "--out", "-o", metavar="BUNDLE", help="bundle folder to create; an existing folder is never overwritten"),
    model: Optional[str] = typer.Option(
        None, metavar="NAME", help="which model: a unit (lr=0.001/fold_0), a scenario's champion (champion\\[lr=0.001]), "
                   "best_single, best_ensemble or an ensemble (intra/kappa); left out: the run's default_export "
                   "(in summary.json), chosen on validation data only"),
    fmt: Optional[str] = typer.Option(None, "--format", metavar="FORMAT", help="onnx (the default when onnxruntime is installed: the weights plus each network as an ONNX file, so predict and serve run without torch on a CPU), or safetensors (weights only)"),
    target_accuracy: float = typer.Option(
        0.99, metavar="ACCURACY", help="accuracy wanted on the images the model answers: images less confident "
                                       "than the threshold that reaches it on validation data are marked refer"),
    conformal_levels: str = typer.Option("0.9,0.95", metavar="LEVELS", help="levels of the prediction sets "
                                         "(set_90, set_95 columns), comma-separated"),
    ood_method: str = typer.Option("mahalanobis", metavar="NAME", help="how unlike the training cells an image "
                                   "is: mahalanobis or knn (distance in the network's features)"),
    ood_quantile: float = typer.Option(0.95, metavar="Q", help="flag images as out of distribution above this "
                                       "quantile of the validation images' scores (0.95: 5% of ordinary cells)"),
    ood_max_images: int = typer.Option(2000, metavar="N", help="at most this many training, validation and test "
                                       "images each go through the network to fit the OOD score (a seeded subset)"),
    threads: Optional[int] = ThreadsOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print where the export spent its time, phase by phase"),
) -> None:
    """Export a model of a run as a self-contained bundle (weights, preprocessing, calibration, model card)."""
    _use_threads(threads)
    from allwen.api import export_bundle, load_bundle
    from allwen.export.timing import phase, recording

    _setup_logging()
    with _clear_errors(), recording() as phases:
        levels = _conformal_levels(conformal_levels)
        path = export_bundle(run_dir, out, model, fmt, target_accuracy=target_accuracy, conformal_levels=levels,
                             ood_method=ood_method, ood_quantile=ood_quantile, ood_max_images=ood_max_images)
        with phase("load the written bundle"):
            bundle = load_bundle(path)
    members = ", ".join(f"{m.name} ({m.weight:.3f})" for m in bundle.members)
    from allwen.bundle import BundleFolder

    typer.echo(f"bundle: {path}\nmodel: {bundle.name} ({bundle.manifest.kind}); members: {members}\n"
               f"temperature: {bundle.temperature:.4f}; model card: {BundleFolder(path).model_card}")
    sel, det = bundle.manifest.selective, bundle.manifest.ood
    if sel is not None:
        threshold = sel.threshold
        typer.echo(f"refer below confidence {threshold:.4f} (target accuracy {sel.target_accuracy:g} on validation)"
                   if threshold is not None else
                   f"refer every image: no confidence reached accuracy {sel.target_accuracy:g} on validation")
    if det is not None:
        typer.echo(f"out of distribution above {det.method} score {det.threshold:.4g}")
    if verbose:
        typer.echo("time by phase (wall seconds):\n  " + "\n  ".join(phases.lines()))


@app.command()
def predict(
    bundle_dir: Path = typer.Argument(..., metavar="BUNDLE", help="a bundle folder made by allwen export"),
    paths: list[str] = typer.Argument(..., metavar="IMAGE", help="image files, folders (searched with their subfolders) or patterns such as 'cells/*.bmp'"),
    out: Path = typer.Option(..., "--out", "-o", metavar="CSV", help="table to write: one row per image with the predicted class and the probability of each class"),
    tta: bool = typer.Option(False, "--tta", help="average the prediction over the 8 rotations and mirror images of each image (8 times slower)"),
    explain: Optional[Path] = typer.Option(None, "--explain", metavar="DIR", help="also write a Grad-CAM picture per image into this folder (where the network looked)"),
    runtime: str = typer.Option("auto", metavar="NAME", help="auto (onnxruntime on a CPU when the bundle has ONNX networks, else torch), torch, or onnx"),
    calibrate: Optional[bool] = typer.Option(None, "--calibration/--no-calibration", help="use the bundle's calibrated probabilities, or the raw ones (default: what the model card says; raw when calibration made the test set worse)"),
    batch_size: int = typer.Option(16, metavar="N", help="images predicted together; larger is faster and needs more memory"),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto (the GPU when there is one), cpu or cuda"),
    max_pixels: int = typer.Option(40_000_000, metavar="PIXELS", help="skip images larger than this many pixels, read from the file header before decoding"),
    max_mb: float = typer.Option(50.0, metavar="MB", help="skip files larger than this many MiB (1 MiB = 1,048,576 bytes)"),
    by_folder: bool = typer.Option(
        False, "--by-folder", help="also one verdict per folder (one patient's cells), or per subject of a CSV "
                                   "with columns path and subject, written beside OUT as NAME_patients.csv"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing OUT, NAME_patients.csv or overlays; "
                                   "an input is never replaced"),
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Predict new cell images with a bundle; unreadable files get a row with the reason.

    The exit code is non-zero only when no image could be predicted.
    """
    _use_threads(threads)
    from rich.progress import Progress

    from allwen.api import load_bundle
    from allwen.io import write_people_csv
    from allwen.serve.images import expand_inputs
    from allwen.serve.options import check_out_csv, positive_int, positive_mb
    from allwen.serve.outputs import check_outputs
    from allwen.serve.predict import check_device

    from allwen.serve.abstain import RESEARCH_NOTE
    from allwen.serve.batch import folder_verdicts, request_inputs, status_line

    _setup_logging(live=True)
    with _clear_errors():
        max_bytes = positive_mb(max_mb)
        positive_int(max_pixels, "--max-pixels")
        positive_int(batch_size, "--batch-size")
        check_device(device)
        check_out_csv(out, paths)
        patients_csv = out.with_name(f"{out.stem}_patients.csv") if by_folder else None
        check_outputs(paths, out=out, patients=patients_csv, explain=explain, overwrite=overwrite)
        bundle = load_bundle(bundle_dir, runtime=runtime, device=device)
        paths, subjects = request_inputs(paths)
        n = len(expand_inputs(paths))
        with Progress(transient=True) as bar:
            task = bar.add_task("predicting", total=n)
            table = bundle.predict(paths, tta=tta, calibrate=calibrate, batch_size=batch_size, explain_dir=explain,
                                   max_pixels=max_pixels, max_bytes=max_bytes, progress=lambda k: bar.advance(task, k),
                                   overwrite=overwrite)
        write_people_csv(out, table, float_format="%.8g")
        patients_out = None
        if by_folder:
            verdicts = folder_verdicts(bundle, table, subjects)
            patients_out = patients_csv
            write_people_csv(patients_out, verdicts, float_format="%.6g")
    failed = table[table["error"] != ""]
    for _, row in failed.iterrows():
        typer.secho(f"skipped {row['path']}: {row['error']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(status_line(table) + f"; wrote {out}")
    if patients_out is not None:
        for _, v in verdicts.iterrows():
            typer.echo(f"{v['patient']}: {v['call']} ({v['note']})" if v["note"] else
                       f"{v['patient']}: {v['call']} ({v['n_called_all']} of {v['n_answered']} answered cells called ALL, "
                       f"{v['share_all']:.2f} [{v['share_all_low']:.2f}, {v['share_all_high']:.2f}]; "
                       f"{v['n_refer']} referred, {v['n_ood']} out of distribution, of {v['n_cells']} files)")
        typer.echo(f"wrote {patients_out}. {RESEARCH_NOTE}")
    if len(failed) == len(table):
        raise typer.Exit(1)


@app.command()
def serve(
    bundle_dir: Path = typer.Argument(..., metavar="BUNDLE", help="a bundle folder made by allwen export"),
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="network address to listen on: 127.0.0.1 is this computer only, 0.0.0.0 every network"),
    port: int = typer.Option(8000, metavar="PORT", help="port of the web page and API (1-65535): http://ADDRESS:PORT/"),
    max_mb: float = typer.Option(20.0, metavar="MB", help="largest upload per image, in MiB (1 MiB = 1,048,576 bytes)"),
    max_pixels: int = typer.Option(40_000_000, metavar="PIXELS", help="refuse images larger than this many pixels, read from the file header before decoding"),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto (the GPU when there is one), cpu or cuda"),
    max_files: int = typer.Option(64, metavar="N", help="files in one request (the page splits a larger drop into requests)"),
    max_request_work: int = typer.Option(128, metavar="UNITS", help="work units in one request: 1 per image, 8 with TTA, 3 more with Grad-CAM"),
    max_request_pixels: int = typer.Option(48_000_000, metavar="PIXELS", help="pixels one request may decode, all its images together"),
    threads: Optional[int] = ThreadsOption,
) -> None:
    """A web page and JSON API where the lab drops cell images and sees the prediction."""
    _use_threads(threads)
    try:
        from allwen.serve.app import create_app
        from allwen.serve.server import run_server
    except ModuleNotFoundError as exc:
        _fail(f"`allwen serve` needs {exc.name}: pip install 'allwen[serve]'")
    from allwen.serve.options import check_port, positive_int, positive_mb
    from allwen.serve.predict import check_device

    _setup_logging()
    with _clear_errors():
        max_bytes = positive_mb(max_mb)
        positive_int(max_pixels, "--max-pixels")
        for value, name in ((max_files, "--max-files"), (max_request_work, "--max-request-work"),
                            (max_request_pixels, "--max-request-pixels")):
            positive_int(value, name)
        check_device(device)
        check_port(host, port)
        web = create_app(bundle_dir, max_bytes=max_bytes, max_pixels=max_pixels, device=device, max_files=max_files,
                         max_request_work=max_request_work, max_request_pixels=max_request_pixels)
    typer.echo(f"serving {bundle_dir} on http://{host}:{port}/ (API docs: /docs)")
    with _clear_errors(stopped=f"stopped serving {bundle_dir}"):
        run_server(web, host, port)


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
