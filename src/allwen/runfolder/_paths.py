"""Every file and folder name of a run folder. Private to the run-folder layer: other modules ask
a :class:`~allwen.runfolder.RunFolder` (an import-linter contract keeps it so)."""

import re

CONFIG = "config.yaml"
STATUS = "run.json"
LOG = "run.log"
AUDIT = "data/audit.json"
HASHES = "data/hashes.json"  # path -> (size, mtime_ns, sha256): content hashes a resume reuses
SPLIT_CSV = "splits/split.csv"
SPLIT_JSON = "splits/split.json"
LEAKAGE = "splits/leakage.json"
UNITS = "units"
ENSEMBLES = "ensembles"
SWEEP_JSON = "sweep.json"
SWEEP_DIR = "sweep"
REPORT = "report"
SUMMARY = "report/summary.json"
REPORT_HTML = "report/index.html"
REPORT_MD = "report/report.md"
METRICS_CSV = "report/metrics.csv"
FIGURES = "report/figures"
CACHE = "cache"
#: what a run folder derives from its config (removed when a folder with no finished unit
#: starts again with a new config); the content-keyed cache stays valid
DERIVED = ("data", "splits", UNITS, SWEEP_DIR, SWEEP_JSON, ENSEMBLES, REPORT, STATUS)

UNIT_DONE = "unit.json"
WEIGHTS = "weights.safetensors"
DATA_CONFIG = "data_config.json"
HISTORY = "history.csv"
CURVES = "curves.png"
VAL_FILE = "predictions_val.csv"
TEST_FILE = "predictions_test.csv"
TTA_TEST_FILE = "predictions_test_tta.csv"  # evaluation.tta: the test set, mean of 8 dihedral views
ENSEMBLE_JSON = "ensemble.json"

UNIT_NAME_RE = re.compile(r"^(?P<scenario>[^/]+)/fold_(?P<fold>\d+)$")
FOLD_DIR_RE = re.compile(r"^fold_(\d+)$")
