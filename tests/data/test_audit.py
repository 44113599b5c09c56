import json
import shutil

from PIL import Image
from typer.testing import CliRunner

from allwen.cli import app
from allwen.data import load_source
from allwen.data.audit import audit_table, format_report

runner = CliRunner()


def _tree_with_bad_files(root):
    for cls in ("all", "hem"):
        (root / cls).mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 50, 30, 90)).save(root / "all" / f"UID_{i + 1}_1_1_all.bmp")
        Image.new("RGB", (16, 16), (90, i * 50, 30)).save(root / "hem" / f"UID_H{i + 1}_1_1_hem.bmp")
    good = (root / "all" / "UID_1_1_1_all.bmp").read_bytes()
    (root / "all" / "UID_9_1_1_all.bmp").write_bytes(good[: len(good) // 2])  # truncated
    (root / "all" / "UID_9_2_1_all.bmp").write_bytes(b"")  # empty
    (root / "hem" / "UID_H9_1_1_hem.bmp").write_text("this is not an image\n")  # text named .bmp
    shutil.copy(root / "hem" / "UID_H1_1_1_hem.bmp", root / "hem" / "UID_H2_5_1_hem.bmp")  # duplicate across subjects


def test_bad_files_are_listed_with_reasons_and_the_audit_completes(tmp_path):
    root = tmp_path / "cnmc"
    _tree_with_bad_files(root)
    report = audit_table(load_source(root, "cnmc"))
    bad = {p.split("/")[-1]: why for p, why in report.unreadable.items()}
    assert set(bad) == {"UID_9_1_1_all.bmp", "UID_9_2_1_all.bmp", "UID_H9_1_1_hem.bmp"}
    assert "empty" in bad["UID_9_2_1_all.bmp"]
    assert "UnidentifiedImageError" in bad["UID_H9_1_1_hem.bmp"]
    assert bad["UID_9_1_1_all.bmp"]  # a reason is given for the truncated file
    # class totals count readable images; the unreadable are counted apart (the issue: C-NMC
    # showed all 7,275 instead of 7,272)
    assert report.n_images == 9 and report.sizes == {"16x16": 9}
    assert report.classes == {"hem": 5, "all": 4} and report.unreadable_classes == {"all": 2, "hem": 1}
    assert report.n_subjects == {"hem": 4, "all": 4}
    assert len(report.duplicate_groups) == 1 and report.duplicate_spans[0]["spans_subjects"]
    assert "unreadable files (left out, not in the counts above): 3 (all 2, hem 1)" in format_report(report)


def test_inspect_json_and_grid(tmp_path):
    root = tmp_path / "cnmc"
    _tree_with_bad_files(root)
    result = runner.invoke(app, ["inspect", str(root), "--json", "--grid", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_images"] == 9 and data["n_files"] == 12 and data["classes"] == {"hem": 5, "all": 4}
    assert data["n_subjects"] == {"hem": 4, "all": 4}
    assert len(data["unreadable"]) == 3 and len(data["duplicate_groups"]) == 1
    with Image.open(tmp_path / "grid.png") as im:
        assert im.width > 100


def test_inspect_taleqani_reports_counts_and_duplicates(shared):
    root = shared("data", "taleqani", "Original")
    result = runner.invoke(app, ["inspect", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_images"] == 2612
    assert data["classes"] == {"Benign": 420, "Early": 785, "Pre": 763, "Pro": 644}
    assert data["n_subjects"] is None
    assert data["unreadable"] == []
    assert len(data["duplicate_groups"]) == 29
    assert ["WBC-Malignant-Pro-017.jpg", "WBC-Malignant-Pro-018.jpg"] in [
        [p.split("/")[-1] for p in g] for g in data["duplicate_groups"]
    ]


def test_inspect_bad_path_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file or folder" in result.output
