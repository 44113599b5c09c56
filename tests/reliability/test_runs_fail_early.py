"""Runs fail early and in one line: configs, data layouts, full disks and the run lock (issue 26, item 4)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from allwen.config import ConfigError, load_config
from allwen.data.sources import DataSourceError, load_source
from allwen.io import DiskFullError, RunFileError, YamlError, load_yaml, read_yaml
from allwen.lock import HOLDER_NAME, RunLockedError, run_lock
from allwen.training.array_store import ArrayStore

from .conftest import allwen, run_args

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

pytestmark = pytest.mark.probe("runs and configs")


def _config(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------- YAML
def test_a_duplicate_key_is_refused_with_both_lines(tmp_path):
    path = _config(tmp_path, "extends: demo\ntrain:\n  lr: 0.1\n  batch_size: 8\n  lr: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == f"config {path}:5:3: duplicate key 'lr' (first on line 3); give each key once"


def test_billion_laughs_is_refused_in_a_moment(tmp_path):
    assert len(LAUGHS) < 400
    path = _config(tmp_path, LAUGHS)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases expand to more than 100,000 values"):
        load_config(str(path))
    assert time.perf_counter() - start < 1.0


def test_a_few_aliases_still_work_and_a_self_reference_is_refused():
    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    assert load_yaml("base: &b {x: 1}\nmore:\n  <<: *b\n  y: 2\n")["more"] == {"x": 1, "y": 2}
    with pytest.raises(YamlError, match="refers to the value that contains it"):
        load_yaml("a: &x\n  - *x\n", "self.yaml")


def test_malformed_yaml_is_one_line_with_file_and_line(tmp_path):
    path = _config(tmp_path, "train:\n  lr: [1\n data: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"config {path}:3:")


def test_a_run_files_yaml_duplicate_is_a_run_file_error(tmp_path):
    path = _config(tmp_path, "a: 1\na: 2\n")
    with pytest.raises(RunFileError, match=r"not valid YAML \(line 2: duplicate key 'a'"):
        read_yaml(path, "fix it")


def test_malformed_config_through_the_command_line_is_one_line(tmp_path):
    path = _config(tmp_path, "train: {lr: 1\n")
    result = allwen("config", str(path), timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: config {path}:"), result.stderr


@pytest.mark.probe("runs and configs")
def test_a_refused_config_leaves_no_empty_run_folder(tmp_path):
    """The run lock is taken before the config is read; a refused config must not leave ``--out`` behind."""
    path = _config(tmp_path, "train: {lr: 1\n")
    out = tmp_path / "runs" / "new"
    result = allwen("run", str(path), "--out", str(out), timeout=60)
    assert result.returncode == 2 and not out.exists(), result.stderr


# ----------------------------------------------------------------------------------- values
@pytest.mark.parametrize(("text", "message"), [
    ("train: {lr: .inf}", "train.lr: Input should be a finite number"),
    ("train: {lr: .nan}", "train.lr: Input should be a finite number"),
    ("train: {lr: 1000}", "train.lr: Input should be less than or equal to 10"),
    ("data: {image_size: 100000}", "data.image_size: Input should be less than or equal to 4096"),
    ("train: {stage1: {epochs: 10000000}}", "train.stage1.epochs: Input should be less than or equal to 100000"),
    ("train: {batch_size: 0}", "train.batch_size: Input should be greater than or equal to 1"),
    ("train: {batch_size: 10000000}", "train.batch_size: Input should be less than or equal to 65536"),
    ("scenarios: {train.lr: [0.01, .inf]}", "train.lr: Input should be a finite number"),
])
def test_out_of_range_values_are_refused_at_load_naming_the_file(tmp_path, text, message):
    path = _config(tmp_path, f"extends: demo\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value).startswith(f"config {path}: invalid config: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_set_overrides_are_range_checked_too():
    with pytest.raises(ConfigError, match="train.lr: Input should be a finite number"):
        load_config("demo", ["train.lr=.inf"])


# ----------------------------------------------------------------------------------- data layout
def test_the_filesystem_root_is_refused_before_any_scan():
    start = time.perf_counter()
    with pytest.raises(DataSourceError, match=r"^/: \d+ of \d+ subfolders hold no image \("):
        load_source("/", "auto", hash_files=False)
    with pytest.raises(DataSourceError, match=r"^/: not a C-NMC tree \(found \d+ entries"):
        load_source("/", "cnmc", hash_files=False)
    assert time.perf_counter() - start < 10  # the whole disk took minutes


def test_a_folder_of_unlabelled_images_is_refused_with_their_count(tmp_path):
    for i in range(7):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataSourceError, match=r"7 image file\(s\) directly in the folder, outside any class folder"):
        load_source(tmp_path, "folder")
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(DataSourceError, match=r"7 image file\(s\) directly in the folder"):
        load_source(tmp_path)


def test_a_subfolder_without_images_is_named(tmp_path):
    for cls in ("all", "hem"):
        (tmp_path / cls / "deep").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "deep" / "x.png")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.txt").write_text("x")
    with pytest.raises(DataSourceError, match=r"1 of 3 subfolders hold no image \(logs\)"):
        load_source(tmp_path, "folder")
    (tmp_path / "logs" / "run.txt").unlink()
    (tmp_path / "logs").rmdir()
    assert len(load_source(tmp_path, "folder", hash_files=False)) == 2


# ----------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted for the test (root only), unmounted after it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(mounted.stderr or 'not root').strip()}): the disk-full cases "
                    "need one")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_cache_larger_than_the_disk_is_refused_before_writing(small_disk):
    store = ArrayStore(small_disk / "cache", "feat", (1024,), np.float32)
    with pytest.raises(DiskFullError, match=r"needs 3.9 MiB, the disk has \d.\d MiB free; free some space"):
        store.add([f"k{i}" for i in range(1000)], iter([np.ones((1000, 1024), np.float32)]))
    assert list((small_disk / "cache").iterdir()) == []


def test_a_disk_that_fills_mid_way_is_an_error_not_sigbus(small_disk, monkeypatch):
    """The free-space check passes (another process fills the disk after it): the allocation fails cleanly."""
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    store = ArrayStore(small_disk / "cache", "feat", (1024,), np.float32)
    with pytest.raises(DiskFullError, match=r"no space left for the cache feat-1000.npy \(3.9 MiB\)"):
        store.add([f"k{i}" for i in range(1000)], iter([np.ones((1000, 1024), np.float32)]))
    assert list((small_disk / "cache").iterdir()) == []  # the temporary file removed
    (small_disk / "big").write_bytes(b"x" * (1900 << 10))
    with pytest.raises(DiskFullError, match=r"small.json: no space left on the disk while writing it"):
        from allwen.io import atomic_write_json

        atomic_write_json(small_disk / "small.json", {"x": "y" * (400 << 10)})


def test_a_library_writer_that_hits_a_full_disk_is_one_line(tmp_path):
    from allwen.io import atomic_write

    class SafetensorError(Exception):
        pass

    def write(tmp):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(DiskFullError, match=r"w.safetensors: no space left on the disk while writing it"):
        atomic_write(tmp_path / "w.safetensors", write)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_run_on_a_full_disk_ends_in_one_line_not_sigbus(synth_root, small_disk):
    """The probe's case: the disk fills while the run caches; it ended in SIGBUS (exit 135), no message."""
    (small_disk / "filler").write_bytes(b"\0" * (1700 << 10))  # about 300 KiB left: less than the first cache
    result = allwen(*run_args(synth_root / "training_data", small_disk / "run"), timeout=600)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cache" in errors[0] and "free some space" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------- the run lock
HOLD = "import sys, time; from allwen.lock import run_lock\nwith run_lock(sys.argv[1], 'holder'):\n print('held', flush=True); time.sleep(600)"


def _hold(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_deleting_the_lock_files_does_not_let_a_second_run_in(tmp_path):
    holder = _hold(tmp_path / "run")
    try:
        for name in os.listdir(tmp_path / "run"):
            os.unlink(tmp_path / "run" / name)
        with pytest.raises(RunLockedError, match="is in use"):
            with run_lock(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "run"):
        with run_lock(tmp_path / "run"):  # the same process may take it again
            pass
        assert (tmp_path / "run" / HOLDER_NAME).exists()


def test_a_second_allwen_run_is_refused_before_the_heavy_imports(tmp_path, synth_root):
    holder = _hold(tmp_path / "run")
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = allwen(*run_args(synth_root / "training_data", tmp_path / "run"), timeout=60)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        holder.kill()
        holder.wait()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 2 and f"is in use by pid {holder.pid}" in result.stderr, result.stderr
    assert cpu < 1.0 and wall < 5.0, (cpu, wall)  # it took 16.6 s of imports; the CPU time is load-proof


# ----------------------------------------------------------------------------------- messages
def test_stopping_serve_does_not_ask_to_resume(capsys):
    import typer

    from allwen.cli import Interrupted, _clear_errors

    with pytest.raises(typer.Exit) as stop:
        with _clear_errors(stopped="stopped serving B"):
            raise Interrupted()
    assert stop.value.exit_code == 0
    err = capsys.readouterr().err
    assert "stopped serving B" in err and "resume" not in err
    with pytest.raises(typer.Exit) as stop:  # a run still says how to resume
        with _clear_errors():
            raise Interrupted()
    assert stop.value.exit_code == 130 and "run the same command to resume" in capsys.readouterr().err


def test_a_large_header_gives_no_pil_warning_and_quotes_max_pixels(tmp_path):
    import warnings

    from allwen.serve.images import ImageRejected, check_image_file

    path = tmp_path / "big.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 megapixels: above PIL's warning threshold
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageRejected, match=r"more than the limit of 40,000,000 pixels \(--max-pixels"):
            check_image_file(path, max_bytes=1 << 30, max_pixels=40_000_000)
    assert not [w for w in caught if "DecompressionBomb" in w.category.__name__]
    Image.new("1", (14_000, 14_000)).save(path)  # above PIL's own error threshold: still our option's words
    with pytest.raises(ImageRejected, match=r"more than the limit of 40,000,000 pixels \(--max-pixels"):
        check_image_file(path, max_bytes=1 << 30, max_pixels=40_000_000)


def test_a_report_on_a_folder_in_use_is_refused_before_the_heavy_imports(tmp_path):
    holder = _hold(tmp_path / "run")
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = allwen("report", str(tmp_path / "run"), timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        holder.kill()
        holder.wait()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 2 and f"is in use by pid {holder.pid}" in result.stderr, result.stderr
    assert cpu < 1.0, cpu
    missing = allwen("report", str(tmp_path / "typo"), timeout=60)
    assert missing.returncode == 2 and "not an allwen run folder" in missing.stderr
    assert not (tmp_path / "typo").exists()
