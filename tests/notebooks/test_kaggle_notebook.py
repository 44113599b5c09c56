"""notebooks/kaggle_cnmc.ipynb executes top to bottom (nbclient) on synthetic cells laid out as
Kaggle mounts its C-NMC copy: it finds the data, runs the study, shows the report, exports a bundle."""

import json
import os
import zipfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "kaggle_cnmc.ipynb"
TINY = [
    "model.backbone=test_efficientnet", "model.pretrained_tag=null", "model.weights=none", "model.head=softmax",
    "data.image_size=32", "data.num_workers=0", "scenarios={train.batch_size: [16], train.stage2.epochs: [1]}",
    "evaluation.bootstrap=50",
]


def test_notebook_runs_a_study_on_a_kaggle_layout(tmp_path):
    from allwen.data.synth import generate_cnmc

    kaggle_input = tmp_path / "input"
    generate_cnmc(kaggle_input / "leukemia-classification", n_all_subjects=6, n_hem_subjects=6, cells_per_subject=8,
                  image_size=32, prelim_subjects=(1, 1), seed=0)
    work = tmp_path / "working"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook has one parameters cell"
    params[0].source = (f"PRESET = 'experiment_c'\nOVERRIDES = {TINY!r}\nKAGGLE_INPUT = {str(kaggle_input)!r}\n"
                        f"WORK = {str(work)!r}\nINSTALL = False\nALLWEN = None\nTIME_LIMIT = None\nPREVIOUS = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # a failing cell raises CellExecutionError with its traceback

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "C-NMC 2019: " + str(kaggle_input / "leukemia-classification" / "C-NMC_Leukemia") in text
    assert "paper: accuracy 0.96" in text  # the preset's paper block, printed
    html = [o["data"]["text/html"] for o in outputs if o.output_type == "display_data" and "text/html" in o.get("data", {})]
    assert any("allwen report: experiment_c" in h for h in html), "the report is shown inline"
    run_dir = work / "runs" / "experiment_c"
    from allwen.evaluation.results import load_summary

    summary = load_summary(run_dir)  # a valid results model of the notebook's run
    assert summary.name == "experiment_c"
    manifest = json.loads((work / "bundles" / "experiment_c" / "bundle.json").read_text())
    assert manifest["name"] == summary.default_export
    with zipfile.ZipFile(work / "experiment_c-bundle.zip") as archive:  # the zip holds the bundle's files
        assert {"bundle.json", *manifest["files"]} <= {n.removeprefix("./") for n in archive.namelist()}
    results = [o for o in outputs if o.output_type == "execute_result"]
    table = results[-1]["data"]["text/plain"]  # the bundle's predictions for four test images
    assert "predicted" in table and "prob_hem" in table and "\n3 " in table


def _execute(kaggle_input: Path, work: Path, time_limit: str | None, cwd: Path) -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0]
    params.source = (f"PRESET = 'experiment_c'\nOVERRIDES = {TINY!r}\nKAGGLE_INPUT = {str(kaggle_input)!r}\n"
                     f"WORK = {str(work)!r}\nINSTALL = False\nALLWEN = None\nTIME_LIMIT = {time_limit!r}\n"
                     "PREVIOUS = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


@pytest.mark.slow  # the notebook twice: ~2 min on 2 busy cores
def test_a_session_stopped_at_the_time_limit_resumes_from_the_previous_versions_output(tmp_path):
    import shutil

    from allwen.data.synth import generate_cnmc

    kaggle_input = tmp_path / "input"
    generate_cnmc(kaggle_input / "leukemia-classification", n_all_subjects=6, n_hem_subjects=6, cells_per_subject=8,
                  image_size=32, prelim_subjects=(1, 1), seed=0)
    first = tmp_path / "working1"
    first.mkdir()
    text = _execute(kaggle_input, first, "0.000001", tmp_path)  # the limit passes before the first unit
    assert "at a unit boundary" in text and "attach its output to a new version" in text
    assert (first / "runs" / "experiment_c" / "config.yaml").exists() and not (first / "bundles").exists()
    # the next version: the previous version's output attached as an input (read-only there)
    shutil.copytree(first, kaggle_input / "allwen-notebook-output")
    second = tmp_path / "working2"
    second.mkdir()
    text = _execute(kaggle_input, second, None, tmp_path)
    assert "resuming from " + str(kaggle_input / "allwen-notebook-output" / "runs" / "experiment_c") in text
    assert (second / "runs" / "experiment_c" / "report" / "summary.json").exists()
    assert (second / "bundles" / "experiment_c" / "bundle.json").exists()
