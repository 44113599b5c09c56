"""Predict never writes over what it reads (issue 26, item 1): one check of every output against the inputs."""

from __future__ import annotations

import os
import stat
import tempfile

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from allwen.cli import app
from allwen.io import atomic_write_text, user_modes, user_umask
from allwen.serve.images import ImageRejected, check_image_file, expand_inputs
from allwen.serve.outputs import check_outputs, mark_overlay_folder, overlay_pnginfo

runner = CliRunner()

pytestmark = pytest.mark.probe("data loss")


def _cells(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(folder / f"c{i}.bmp")
    return folder


# ----------------------------------------------------------------------------------- the one check
def test_an_output_that_is_an_input_is_refused_by_name_link_and_hard_link(tmp_path):
    ex = _cells(tmp_path / "ex")
    (tmp_path / "list.csv").write_text("path\nex/c0.bmp\n")
    with pytest.raises(ValueError, match="is one of the inputs"):
        check_outputs([str(tmp_path / "list.csv")], out=tmp_path / "list.csv", overwrite=True)
    os.symlink(tmp_path / "list.csv", tmp_path / "alias.csv")
    with pytest.raises(ValueError, match="is one of the inputs"):
        check_outputs([str(tmp_path / "list.csv")], out=tmp_path / "alias.csv", overwrite=True)
    os.link(tmp_path / "list.csv", tmp_path / "hard.csv")
    with pytest.raises(ValueError, match="is one of the inputs"):
        check_outputs([str(tmp_path / "list.csv")], out=tmp_path / "hard.csv", overwrite=True)
    with pytest.raises(ValueError, match="is one of the inputs"):  # a file the CSV lists
        check_outputs([str(tmp_path / "list.csv")], out=ex / "c0.bmp", overwrite=True)


def test_the_by_folder_table_is_checked_like_out(tmp_path):
    """The probe: ``predict B run1_patients.csv --out run1.csv --by-folder`` replaced its input list."""
    _cells(tmp_path / "ex")
    listed = tmp_path / "run1_patients.csv"
    listed.write_text("path,subject\nex/c0.bmp,p1\n")
    with pytest.raises(ValueError, match=r"--by-folder: the table .*run1_patients.csv is one of the inputs"):
        check_outputs([str(listed)], out=tmp_path / "run1.csv", patients=listed, overwrite=True)


def test_an_existing_output_needs_overwrite(tmp_path):
    ex = _cells(tmp_path / "ex")
    (tmp_path / "old.csv").write_text("22 rows of results\n")
    with pytest.raises(ValueError, match=r"--out: .*old.csv exists; give --overwrite to replace it"):
        check_outputs([str(ex)], out=tmp_path / "old.csv")
    check_outputs([str(ex)], out=tmp_path / "old.csv", overwrite=True)
    (tmp_path / "old_patients.csv").write_text("x\n")
    with pytest.raises(ValueError, match=r"--by-folder: the per-folder table .* exists"):
        check_outputs([str(ex)], out=tmp_path / "new.csv", patients=tmp_path / "old_patients.csv")


def test_overlays_never_go_into_a_folder_of_inputs(tmp_path):
    ex = _cells(tmp_path / "ex")
    with pytest.raises(ValueError, match=r"--explain .*ex: holds input .*; overlays go to a folder that holds no input"):
        check_outputs([str(ex)], explain=ex, overwrite=True)
    with pytest.raises(ValueError, match="holds input"):  # a single file inside it counts too
        check_outputs([str(ex / "c1.bmp")], explain=ex, overwrite=True)
    cams = tmp_path / "cams"
    check_outputs([str(ex)], explain=cams)
    cams.mkdir()
    (cams / "c1.gradcam.png").write_bytes(b"an overlay of an earlier run")
    with pytest.raises(ValueError, match=r"1 overlay\(s\) exist already \(e.g. c1.gradcam.png\); give --overwrite"):
        check_outputs([str(ex)], explain=cams)
    check_outputs([str(ex)], explain=cams, overwrite=True)


def test_overlays_are_marked_and_never_collected_as_inputs(tmp_path):
    ex = _cells(tmp_path / "ex")
    cams = ex / "cams"
    mark_overlay_folder(cams)
    Image.new("RGB", (8, 8)).save(cams / "c0.gradcam.png", pnginfo=overlay_pnginfo())
    assert all("cams" not in p for p in expand_inputs([str(ex)])) and len(expand_inputs([str(ex)])) == 3
    stray = ex / "c0.gradcam.png"  # an overlay moved among the cells, or named on the command line
    Image.new("RGB", (8, 8)).save(stray, pnginfo=overlay_pnginfo())
    with pytest.raises(ImageRejected, match="a Grad-CAM overlay written by allwen predict --explain, not a cell"):
        check_image_file(stray)


# ----------------------------------------------------------------------------------- modes
def test_atomic_writes_and_bundles_get_the_users_umask(tmp_path):
    mask = user_umask()
    assert mask == os.umask(mask)  # read without changing it
    path = atomic_write_text(tmp_path / "out.csv", "a\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    private = tempfile.mkdtemp(dir=tmp_path)  # 0700, as export's temporary bundle folder
    os.mkdir(os.path.join(private, "m"))
    fd, name = tempfile.mkstemp(dir=os.path.join(private, "m"))  # 0600, as ood.safetensors was
    os.close(fd)
    user_modes(private)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o666 & ~mask


def test_an_exported_bundle_is_readable_by_others(bundle):
    mask = user_umask()
    for path in [bundle, *bundle.rglob("*")]:
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, path


# ----------------------------------------------------------------------------------- the command
def _predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


def test_predict_refuses_before_loading_and_writes_nothing(bundle, patient_folder, tmp_path):
    before = sorted(p.name for p in patient_folder.iterdir())
    result = _predict(bundle, patient_folder, "--out", tmp_path / "ex1.csv", "--explain", patient_folder)
    assert result.exit_code == 2 and "holds input" in result.output
    (tmp_path / "ex1.csv").write_text("a 22-row result\n")
    result = _predict(bundle, patient_folder, "--out", tmp_path / "ex1.csv")
    assert result.exit_code == 2 and "exists; give --overwrite" in result.output
    assert (tmp_path / "ex1.csv").read_text() == "a 22-row result\n"
    assert sorted(p.name for p in patient_folder.iterdir()) == before


def test_a_patient_verdict_does_not_change_when_predicted_again(bundle, patient_folder, tmp_path):
    """The probe: 4 cells, overlays written beside them, and the next run read 8 'cells' (a flipped call)."""
    cams = patient_folder / "cams"  # inside the patient's folder, so the next run walks past it
    first = _predict(bundle, patient_folder, "--out", tmp_path / "one.csv", "--explain", cams, "--by-folder")
    assert first.exit_code == 0, first.output
    assert len(list(cams.glob("*.gradcam.png"))) == 4
    second = _predict(bundle, patient_folder, "--out", tmp_path / "two.csv", "--by-folder")
    assert second.exit_code == 0, second.output
    one, two = pd.read_csv(tmp_path / "one_patients.csv"), pd.read_csv(tmp_path / "two_patients.csv")
    assert len(pd.read_csv(tmp_path / "two.csv")) == 4
    assert one[["call", "n_predicted", "n_called_all"]].equals(two[["call", "n_predicted", "n_called_all"]])
    again = _predict(bundle, patient_folder, "--out", tmp_path / "one.csv", "--explain", cams, "--overwrite")
    assert again.exit_code == 0, again.output
