"""Issue 17's defects, one test each: tampered bundles, data loss, decoding, messages, signals, torch-free ONNX."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from allwen.bundle import BundleFolder, seal
from allwen.cli import app
from allwen.serve import load_bundle
from allwen.runfolder import RunFolder

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(bundle, out)
    return out


def _edit(bundle: Path, change) -> None:
    """Edit bundle.json and re-make its seal (a forger who knows the format), so the later checks must catch it."""
    path = BundleFolder(bundle).manifest_path
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    seal(BundleFolder(bundle))


def _set(*keys, value):
    def change(manifest):
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


def _drop_member(manifest):
    manifest["members"].pop()


TAMPERED = {
    "temperature -1": (_set("calibration", "temperature", value=-1.0), "calibration.temperature", "must be > 0"),
    "temperature NaN": (_set("calibration", "temperature", value=math.nan), "calibration.temperature", "finite"),
    "NaN weight": (_set("members", 0, "weight", value=math.nan), "members.0.weight", "finite"),
    "negative weight": (_set("members", 1, "weight", value=-0.5), "members.1.weight", ">= 0"),
    "weights sum to 10": (lambda m: [mm.update(weight=5.0) for mm in m["members"]], "sum to 10", "not 1"),
    "dropped member": (_drop_member, "sum to 0.5", "not 1"),
    "no classes": (lambda m: m.pop("classes"), "field classes", "Field required"),
    "one class": (_set("classes", value=["all"]), "field classes", "at least 2"),
    "no members": (_set("members", value=[]), "field members", "at least 1"),
    "classes swapped vs weights": (_set("classes", value=["all", "hem"]), "members.0.classes", "differ from classes"),
    "backbone vs weights": (_set("members", 0, "backbone", value="resnet18"), "members.0.backbone", "saved for backbone"),
    "head vs weights": (_set("members", 0, "head", value="softmax"), "members.0.head", "saved for head"),
    "member file not hashed": (lambda m: m["files"].pop(next(k for k in m["files"] if k.endswith("data_config.json"))),
                               "is not listed in files", "members.0"),
    "preprocessing vs weights": (_set("members", 0, "data", "clahe", value=True), "members.0.data.clahe",
                                 "saved for clahe"),
    "normalisation vs weights": (_set("members", 1, "data_config", "mean", value=[0.5, 0.5, 0.5]),
                                 "members.1.data_config.mean", "saved for mean"),
    "an unknown key": (_set("calibration", "scale", value=2.0), "calibration.scale", "Extra inputs are not permitted"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_bundle_is_refused_in_one_line_naming_the_field(ensemble_bundle, tmp_path, case):
    change, field, reason = TAMPERED[case]
    bundle = _copy(ensemble_bundle, tmp_path)
    _edit(bundle, change)
    with pytest.raises(ValueError) as info:
        load_bundle(bundle, build=False)
    message = str(info.value)
    assert "\n" not in message and field in message and reason in message, message
    assert str(bundle) in message


def test_predict_and_serve_refuse_a_tampered_bundle_at_start(ensemble_bundle, tmp_path, test_images):
    bundle = _copy(ensemble_bundle, tmp_path)
    _edit(bundle, _set("calibration", "temperature", value=-1.0))
    result = runner.invoke(app, ["predict", str(bundle), test_images[0], "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "calibration.temperature" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()
    pytest.importorskip("fastapi")
    from allwen.serve.app import create_app

    with pytest.raises(ValueError, match="calibration.temperature"):
        create_app(bundle)


def test_weights_that_do_not_fit_the_network_fail_at_start_not_per_request(unit_bundle, tmp_path):
    """A member file whose tensors do not match its architecture (hashes re-made, so only building finds it)."""
    from allwen.io import file_sha256 as sha256_file

    bundle = _copy(unit_bundle, tmp_path)
    manifest = json.loads(BundleFolder(bundle).manifest_path.read_text())
    folder = bundle / manifest["members"][0]["folder"]
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "weights.safetensors"))
    from allwen.bundle import safetensors_metadata

    meta = {k: json.dumps(v) for k, v in safetensors_metadata(folder / "weights.safetensors").items()}
    last = sorted(k for k in tensors if k.startswith("head"))[-1]
    tensors[last] = np.zeros((7,) + tensors[last].shape[1:], tensors[last].dtype)
    save_file(tensors, str(folder / "weights.safetensors"), metadata=meta)
    manifest["files"][f"{manifest['members'][0]['folder']}/weights.safetensors"] = sha256_file(folder / "weights.safetensors")
    BundleFolder(bundle).manifest_path.write_text(json.dumps(manifest))
    seal(BundleFolder(bundle))
    with pytest.raises(ValueError) as info:
        load_bundle(bundle, runtime="torch")
    assert "weights.safetensors: does not fit member" in str(info.value) and "\n" not in str(info.value)


def test_serve_never_reads_weights_again_after_start(unit_bundle, tmp_path, test_images):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from allwen.serve.app import create_app

    bundle = _copy(unit_bundle, tmp_path)
    data = open(test_images[0], "rb").read()
    for runtime in ("torch", "auto"):  # auto: ONNX Runtime here, with the torch networks for Grad-CAM
        with TestClient(create_app(bundle, runtime=runtime)) as client:
            before = client.post("/api/predict", files=[("files", ("a.bmp", data, "image/bmp"))]).json()
            for path in bundle.rglob("*"):
                if path.is_file() and path.suffix in (".safetensors", ".onnx"):
                    path.write_bytes(b"replaced after start")
            after = client.post("/api/predict", files=[("files", ("a.bmp", data, "image/bmp"))], data={"explain": "true"})
        assert after.status_code == 200, after.text
        assert after.json()["results"][0]["probabilities"] == before["results"][0]["probabilities"]
        assert after.json()["results"][0]["overlay"].startswith("data:image/png")
        shutil.rmtree(bundle)
        bundle = _copy(unit_bundle, tmp_path)


def test_bundle_json_is_sealed_by_its_own_hash(ensemble_bundle, tmp_path):
    """A valid edit of bundle.json (a weight moved between members) is refused by bundle.json.sha256; a bundle
    exported before the seal existed (none) still loads."""
    bundle = _copy(ensemble_bundle, tmp_path)
    path = BundleFolder(bundle).manifest_path
    manifest = json.loads(path.read_text())
    a, b = manifest["members"][0]["weight"], manifest["members"][1]["weight"]
    manifest["members"][0]["weight"], manifest["members"][1]["weight"] = a + 0.25, b - 0.25
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"bundle.json: sha256 differs from bundle.json.sha256"):
        load_bundle(bundle, build=False)
    BundleFolder(bundle).manifest_hash.unlink()
    assert load_bundle(bundle, build=False).members[0].weight == a + 0.25


def test_every_file_the_runtime_opens_is_hashed_and_loaded_at_start(unit_bundle, tmp_path):
    """features.onnx (the OOD member's backbone) and ood.safetensors: unlisted or damaged, the bundle never starts."""
    bundle = _copy(unit_bundle, tmp_path)
    _edit(bundle, lambda m: m["files"].pop(next(k for k in m["files"] if k.endswith("features.onnx"))))
    with pytest.raises(ValueError, match=r"ood\.features_onnx\.file 'features.onnx' is not listed in files"):
        load_bundle(bundle, build=False)
    shutil.rmtree(bundle)
    bundle = _copy(unit_bundle, tmp_path)
    from allwen.io import file_sha256

    BundleFolder(bundle).ood.write_bytes(b"not a detector")
    _edit(bundle, _set("files", "ood.safetensors", value=file_sha256(BundleFolder(bundle).ood)))
    with pytest.raises(ValueError, match=r"ood.safetensors: not the OOD detector"):
        load_bundle(bundle, build=False)


def test_an_onnx_graph_fixed_at_another_size_is_refused(unit_bundle, tmp_path):
    """The member says 40 px (and so do its weights), but model.onnx was exported at 32: refused at start."""
    from safetensors.numpy import load_file, save_file

    from allwen.bundle import safetensors_metadata
    from allwen.io import file_sha256

    bundle = _copy(unit_bundle, tmp_path)
    manifest = json.loads(BundleFolder(bundle).manifest_path.read_text())
    member = manifest["members"][0]
    weights = bundle / member["folder"] / "weights.safetensors"
    meta = safetensors_metadata(weights)
    meta["preprocessing"]["image_size"] = 40
    save_file(load_file(str(weights)), str(weights), metadata={k: json.dumps(v) for k, v in meta.items()})
    member["data"]["image_size"] = 40
    manifest["files"][f"{member['folder']}/weights.safetensors"] = file_sha256(weights)
    BundleFolder(bundle).manifest_path.write_text(json.dumps(manifest))
    seal(BundleFolder(bundle))
    with pytest.raises(ValueError, match=r"model.onnx: its input is fixed at 32 x 32 pixels, but .* says 40"):
        load_bundle(bundle, runtime="onnx")


# --------------------------------------------------------------------------- predict: data loss, decoding


def test_predict_out_never_overwrites_an_input_or_a_non_csv_file(unit_bundle, tmp_path, test_images):
    image = tmp_path / "c.jpg"
    Image.open(test_images[0]).convert("RGB").save(image)
    before = image.read_bytes()
    onto_input = runner.invoke(app, ["predict", str(unit_bundle), str(image), "--out", str(image)])
    assert onto_input.exit_code == 2 and "--out" in onto_input.output and image.read_bytes() == before
    csv_input = tmp_path / "list.csv"
    csv_input.write_text("x")
    same = runner.invoke(app, ["predict", str(unit_bundle), str(tmp_path), "--out", str(tmp_path / "c.jpg")])
    assert same.exit_code == 2 and ".csv" in same.output and image.read_bytes() == before
    folder_input = runner.invoke(app, ["predict", str(unit_bundle), str(tmp_path / "*.jpg"), "--out", str(image)])
    assert folder_input.exit_code == 2 and image.read_bytes() == before


def test_int32_tiff_with_8bit_values_is_predicted_like_its_8bit_twin(unit_bundle, tmp_path, test_images):
    grey = np.asarray(Image.open(test_images[0]).convert("L")).copy()
    grey[0, 0], grey[0, 1] = 0, 255  # the full 0..255 range, so min..max scaling is the identity
    Image.fromarray(grey).save(tmp_path / "twin.png")
    Image.fromarray(grey.astype(np.int32)).save(tmp_path / "int32.tif")
    assert Image.open(tmp_path / "int32.tif").mode == "I"
    table = load_bundle(unit_bundle).predict([str(tmp_path / "twin.png"), str(tmp_path / "int32.tif")])
    assert (table["error"] == "").all()
    np.testing.assert_allclose(table["prob_all"][0], table["prob_all"][1], atol=1e-6)


def test_a_broken_symlink_in_a_folder_gets_a_row(unit_bundle, tmp_path, test_images):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(test_images[0], folder / "a.bmp")
    os.symlink(tmp_path / "gone.bmp", folder / "b.bmp")
    table = load_bundle(unit_bundle).predict([str(folder)]).fillna({"error": ""})
    rows = dict(zip([Path(p).name for p in table["path"]], table["error"]))
    assert rows["a.bmp"] == "" and "broken symbolic link" in rows["b.bmp"]


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize("args,needle", [
    (["--max-mb", "-1"], "--max-mb -1"),
    (["--max-mb", "0"], "--max-mb 0"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--batch-size", "0"], "--batch-size 0"),
])
def test_bad_predict_options_are_one_line(unit_bundle, tmp_path, test_images, args, needle):
    result = runner.invoke(app, ["predict", str(unit_bundle), test_images[0], "--out", str(tmp_path / "p.csv"), *args])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_device_cuda_without_a_gpu_is_one_line(unit_bundle, tmp_path, test_images):
    from allwen.serve.predict import gpu_present

    if gpu_present():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["predict", str(unit_bundle), test_images[0], "--out", str(tmp_path / "p.csv"),
                                 "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU" in result.output and "unexpected" not in result.output


def test_serve_bad_port_port_in_use_and_size_are_one_line(unit_bundle):
    pytest.importorskip("uvicorn")
    bad = runner.invoke(app, ["serve", str(unit_bundle), "--port", "99999"])
    assert bad.exit_code == 2 and "--port 99999" in bad.output and len(bad.output.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = runner.invoke(app, ["serve", str(unit_bundle), "--port", str(port)])
    assert busy.exit_code == 2 and "already in use" in busy.output and len(busy.output.strip().splitlines()) == 1
    size = runner.invoke(app, ["serve", str(unit_bundle), "--max-mb", "-1"])
    assert size.exit_code == 2 and "--max-mb -1" in size.output


def test_sizes_are_said_in_mib_like_the_limit():
    from allwen.serve.images import ImageRejected, read_image_bytes

    with pytest.raises(ImageRejected) as info:
        read_image_bytes(b"\x00" * 26_000_000, max_bytes=20 * 1024 * 1024)
    assert "24.8 MiB" in str(info.value) and "20 MiB limit" in str(info.value)


def test_a_truncated_upload_names_no_server_path(test_images):
    from allwen.serve.images import ImageRejected, read_image_bytes

    data = open(test_images[0], "rb").read()
    with pytest.raises(ImageRejected) as info:
        read_image_bytes(data[: len(data) // 2])
    assert "/tmp" not in str(info.value) and "allwen-upload" not in str(info.value)


def test_sigterm_stops_like_ctrl_c_and_frees_the_run_folder(tmp_path):
    """A locked command (``allwen run`` on a tiny synthetic set) gets SIGTERM: message, exit 143, no holder file
    (a signal that arrives during an import is delivered again once it has finished: raised inside torch's C++
    import callbacks, it aborted the process)."""
    from allwen.data.synth import generate_cnmc

    generate_cnmc(tmp_path / "data", n_all_subjects=6, n_hem_subjects=6, cells_per_subject=3, image_size=32,
                  prelim_subjects=(0, 0), folds=2, seed=3)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "allwen.cli", "run", "demo", "--out", str(run), "--quiet",
         "--set", f"data.path={tmp_path / 'data' / 'C-NMC_Leukemia' / 'training_data'}", "--set", "split.folds=2",
         "--set", "train.stage1.epochs=50", "--set", "train.stage2.epochs=50"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / ".allwen.lock.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert (run / ".allwen.lock.json").exists(), proc.communicate()[1]
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM): run the same command to resume" in err
    assert not (run / ".allwen.lock.json").exists()


def test_resume_removes_stale_temporary_files(tmp_path):
    from allwen.lock import run_lock

    stale = RunFolder(tmp_path).ensembles_dir / "intra_kappa" / ".predictions_test.csv.k2j4_x9q.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("half a file")
    keep = tmp_path / "notes.tmp"
    keep.write_text("not ours")
    with run_lock(tmp_path):
        assert not stale.exists() and keep.exists()


# --------------------------------------------------------------------------- ONNX without torch


TORCH_FREE = """
import json, sys, time
start = time.perf_counter()
import allwen
bundle = allwen.load_bundle(sys.argv[1], runtime="onnx")
table = bundle.predict(json.loads(sys.argv[2]))
assert "torch" not in sys.modules and "timm" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)[:5]
print(json.dumps({"seconds": time.perf_counter() - start, "prob_all": list(table["prob_all"]),
                  "errors": list(table["error"])}))
"""


def test_onnx_runtime_predicts_without_importing_torch(unit_bundle, test_images):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", TORCH_FREE, str(unit_bundle), json.dumps(test_images[:3])],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["errors"] == ["", "", ""]
    torch_p = load_bundle(unit_bundle, runtime="torch").predict(test_images[:3])["prob_all"]
    np.testing.assert_allclose(got["prob_all"], torch_p, atol=1e-4)


def test_onnx_preprocessing_follows_torch_on_resized_images(unit_bundle, tmp_path, test_images):
    """Images of another size are resized by PIL (ONNX) or torchvision (torch): probabilities stay close."""
    paths = []
    for i, src in enumerate(test_images[:4]):
        Image.open(src).convert("RGB").resize((90 + 17 * i, 75 + 11 * i)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    bundle = load_bundle(unit_bundle)
    assert bundle.runtime == "onnx"  # auto on a CPU with an ONNX bundle
    onnx_p = bundle.predict(paths)["prob_all"].to_numpy()
    torch_p = bundle.predict(paths, runtime="torch")["prob_all"].to_numpy()
    assert np.abs(onnx_p - torch_p).max() < 5e-3


# --------------------------------------------------------------------------- the model card and the bundle


def test_card_names_generated_data_input_size_and_calibration_default(unit_bundle, ensemble_bundle):
    for path in (unit_bundle, ensemble_bundle):
        bundle = load_bundle(path, build=False)
        card = BundleFolder(path).model_card.read_text()
        assert "Trained on generated data" in card and "not real C-NMC images" in card
        assert "Expected input size: 32 x 32 pixels" in card
        assert bundle.descriptions == {"hem": pytest.approx(bundle.descriptions["hem"]),
                                       "all": bundle.descriptions["all"]}
        assert "lymphoblast" in bundle.descriptions["all"] and "B-lymphoid precursor" in bundle.descriptions["hem"]
        test = bundle.manifest.calibration.test
        if test and test.ece_after > test.ece_before:
            assert not bundle.calibrate_by_default and "Calibration made the test set's ECE worse" in card
        else:
            assert bundle.calibrate_by_default and "apply it by default" in card


def test_raw_default_is_what_predict_gives(ensemble_bundle, test_images):
    bundle = load_bundle(ensemble_bundle)
    default = bundle.predict(test_images[:3])["prob_all"].to_numpy()
    expected = bundle.predict(test_images[:3], calibrate=bundle.calibrate_by_default)["prob_all"].to_numpy()
    np.testing.assert_allclose(default, expected)


def test_taleqani_classes_get_their_descriptions():
    from allwen.export.card import class_descriptions

    got = class_descriptions(["Benign", "Early", "Pre", "Pro"], {"source": "taleqani"})
    assert set(got) == {"Benign", "Early", "Pre", "Pro"} and "pro-B" in got["Pro"]


def test_manifest_written_by_export_validates(unit_bundle):
    from allwen.bundle import parse_manifest

    spec = parse_manifest(BundleFolder(unit_bundle).manifest_path)
    assert abs(sum(m.weight for m in spec.members) - 1) < 1e-9 and spec.calibration.temperature > 0
    assert "onnx" in spec.formats


def test_predict_csv_columns_start_with_the_cells_status(unit_bundle, tmp_path, test_images):
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(unit_bundle), *test_images[:2], "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out).columns[:5]) == ["path", "status", "reason", "predicted", "prob_hem"]


# --------------------------------------------------------------------------- the request budget


def test_budget_queues_then_answers_429_and_503():
    pytest.importorskip("fastapi")
    import threading

    from fastapi import HTTPException

    from allwen.serve.app import Budget, request_work

    assert request_work(16, tta=True, explain=False) == 128 and request_work(10, tta=False, explain=True) == 40
    budget = Budget(slots=1, max_waiting=1, wait_s=0.3)
    held, release = threading.Event(), threading.Event()

    def hold():
        with budget.slot():
            held.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    held.wait(5)
    statuses = []

    def queued():
        try:
            with budget.slot():
                statuses.append(200)
        except HTTPException as exc:
            statuses.append(exc.status_code)

    waiting = threading.Thread(target=queued)
    waiting.start()
    time.sleep(0.05)
    with pytest.raises(HTTPException) as full:  # one running, one waiting: the next is refused at once
        with budget.slot():
            pass
    assert full.value.status_code == 429 and full.value.headers["Retry-After"]
    waiting.join(5)
    assert statuses == [503]  # it waited wait_s without a slot
    release.set()
    worker.join(5)
    with budget.slot():  # free again
        assert budget.busy == 1
    assert budget.busy == 0 and budget.waiting == 0


def test_a_signal_inside_an_import_is_delivered_again_not_raised_there(monkeypatch):
    """Raised inside an import (torch's C++ import callbacks) the interruption aborted the process."""
    from allwen import cli

    class Code:
        def __init__(self, name):
            self.co_filename = name

    class Frame:
        def __init__(self, name, back=None):
            self.f_code, self.f_back = Code(name), back

    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append(signum))
    importing = Frame("/site-packages/torch/autograd/__init__.py", Frame("<frozen importlib._bootstrap>", Frame("cli.py")))
    cli._raise_interrupted(signal.SIGTERM, importing)  # no exception here
    time.sleep(0.6)
    assert sent == [signal.SIGTERM]  # delivered again once the import is over
    with pytest.raises(cli.Interrupted):
        cli._raise_interrupted(signal.SIGTERM, Frame("cli.py"))
