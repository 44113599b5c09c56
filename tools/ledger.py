"""The results ledger: every measured number a page quotes lives in ``results/NAME.json``.

A record is written by the command that measured it (``run``), or imported from a command that
already ran under a wrapper that wrote the same metadata (``import``). Pages quote it through
``{{ledger NAME PATH FORMAT}}`` placeholders (rendered by the MkDocs hook); the README, read on
GitHub as plain text, holds marked blocks that ``readme`` rewrites. A record::

    {"name", "command", "commit", "dirty", "cwd", "returncode", "date" (ISO start), "finished",
     "wall_s", "cpu_s": {"user", "system"} (the command and what it waited for), "load": {"start":
     [1, 5, 15 min], "end": [...], "samples_1min": [every 30 s]}, "machine": {"cpus", "platform"},
     "numbers": {...}}

``PATH`` is dotted into ``numbers`` (list indices as numbers), or ``meta.KEY...`` into the
record itself (``meta.wall_s``, ``meta.date``, ``meta.load.end.0``). ``FORMAT`` is a Python
format spec (``.3f``, ``,.0f``), or one of the named formats in :data:`NAMED_FORMATS`
(``min_s``: 336 -> "5 min 36 s", ``load``: the load averages the record saw, ``day``: the date).
A value with an interval (``{"value": v, "ci": [lo, hi]}``) renders as ``v [lo, hi]``.
``{{!ledger ...}}`` renders as the placeholder's own text (for pages that explain the syntax). A
record with ``"stand_in": "why"`` (one written by hand until the real command runs) renders
every value with " (stand-in)" after it, so a page never passes one off as measured.

    python tools/ledger.py run NAME [--cwd DIR] [--extract KIND --source PATH] -- COMMAND...
    python tools/ledger.py import NAME --meta META.json [--time TIME.txt] [--extract KIND --source PATH]
    python tools/ledger.py readme [--check]
    python tools/ledger.py show NAME
    python tools/ledger.py list        # every record, stand-ins marked
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
README = ROOT / "README.md"
METRICS = ("accuracy", "balanced_accuracy", "kappa", "f1", "auc")  # the values pages quote of a model
SAMPLE_EVERY_S = 30.0


class LedgerError(Exception):
    """A record or a path a page asks for is missing, or a record cannot be written."""


# --------------------------------------------------------------------------- records


def write_record(name: str, record: dict[str, Any], results: Path = RESULTS) -> Path:
    """``results/NAME.json``, written atomically (a reader never sees half a record)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise LedgerError(f"record name {name!r}: letters, digits, '-', '_' and '.' only")
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=results, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(name: str, results: Path | None = None) -> dict[str, Any]:
    path = (results or RESULTS) / f"{name}.json"
    if not path.is_file():
        raise LedgerError(f"no record results/{name}.json (write it with `python tools/ledger.py run {name} ...`"
                          " or `import`)")
    return json.loads(path.read_text())


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _git(cwd: Path) -> tuple[str, bool]:
    """The checked-out commit and whether the tree had uncommitted changes (untracked files aside)."""
    head = subprocess.run(["git", "-C", str(cwd), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(cwd), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    return head.stdout.strip(), bool(dirty.stdout.strip())


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform()}


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def run_command(name: str, command: list[str], extract: str | None = None, source: str | None = None,
                results: Path = RESULTS, cwd: Path = ROOT, keep: list[str] | None = None) -> dict[str, Any]:
    """Run COMMAND from the checkout's root, time it, sample the load, extract its numbers, write the record."""
    commit, dirty = _git(cwd)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_EVERY_S):
            samples.append(_loadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    started, load_start = datetime.now(timezone.utc), _loadavg()
    sampler.start()
    t0, children = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, text=True)
    wall, after = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    sys.stdout.write(done.stdout)
    record = {"name": name, "command": " ".join(command), "cwd": str(cwd), "commit": commit, "dirty": dirty,
              "returncode": done.returncode, "date": _iso(started), "finished": _iso(datetime.now(timezone.utc)),
              "wall_s": round(wall, 1), "cpu_s": {"user": round(after.ru_utime - children.ru_utime, 1),
                                                  "system": round(after.ru_stime - children.ru_stime, 1)},
              "load": {"start": load_start, "end": _loadavg(), "samples_1min": samples}, "machine": _machine()}
    if done.returncode != 0:
        raise LedgerError(f"{record['command']} exited with {done.returncode}; no record written")
    record["numbers"] = extract_numbers(extract, source, stdout=done.stdout, keep=keep, cwd=cwd)
    write_record(name, record, results)
    return record


def gnu_time_cpu(text: str) -> dict[str, float]:
    """User and system seconds from ``/usr/bin/time -v``'s report (``User time (seconds): 489.35``)."""
    found = dict(re.findall(r"(User|System) time \(seconds\): ([\d.]+)", text))
    if set(found) != {"User", "System"}:
        raise LedgerError("no 'User time (seconds)' and 'System time (seconds)' lines (the report of /usr/bin/time -v)")
    return {"user": float(found["User"]), "system": float(found["System"])}


def import_meta(name: str, meta_path: Path, extract: str | None = None, source: str | None = None,
                results: Path = RESULTS, keep: list[str] | None = None, stand_in: str | None = None,
                time_report: Path | None = None) -> dict[str, Any]:
    """The record of a command that already ran under a wrapper that wrote META.json (wrap.py's keys);
    ``time_report``: what ``/usr/bin/time -v -o FILE`` wrote about it, for its CPU seconds."""
    meta = json.loads(Path(meta_path).read_text())
    if meta.get("returncode", 0) != 0:
        raise LedgerError(f"{meta_path}: the command exited with {meta['returncode']}; no record written")
    cwd = Path(meta.get("cwd") or ROOT)
    record = {"name": name, "command": meta["command"], "cwd": str(cwd), "commit": meta["commit"],
              "returncode": meta.get("returncode", 0), "date": meta["started"], "finished": meta["finished"],
              "wall_s": meta["wall_s"],
              "load": {"start": [float(x) for x in meta["load_start"]], "end": [float(x) for x in meta["load_end"]],
                       "samples_1min": [float(x) for x in meta.get("load_1min_samples_every_30s", [])]},
              "machine": meta["machine"], "imported_from": str(meta_path)}
    if time_report is not None:
        record["cpu_s"] = gnu_time_cpu(Path(time_report).read_text())
    if stand_in:
        record["stand_in"] = stand_in
    record["numbers"] = extract_numbers(extract, source, keep=keep, cwd=cwd)
    write_record(name, record, results)
    return record


# --------------------------------------------------------------------------- extractors


def _slug(text: str) -> str:
    """A key a dotted path can name: ``champion of lr=0.001`` -> ``champion_of_lr_0_001``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _interval(metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = metrics.get(name)
    if value is None:
        return None
    ci = (metrics.get("ci") or {}).get(name)
    return {"value": value, "ci": list(ci) if ci else None}


def _model(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": entry["name"]}
    for metric in METRICS:
        value = _interval(entry["metrics"], metric)
        if value is not None:
            out[metric] = value
    return out


def extract_run(folder: Path) -> dict[str, Any]:
    """A run folder's ``report/summary.json``: data, split, statistics, the headline roles, the answers."""
    s = json.loads((folder / "report" / "summary.json").read_text())
    by_name = {m["name"]: m for m in s["single_models"] + s["champions"] + s["ensembles"]}
    roles = {"default_export": s.get("default_export"), "best_single": s.get("best_single"),
             **{f"best_{kind}": name for kind, name in (s.get("best_ensembles") or {}).items()}}
    split, ev = s["split"], s["evaluation"]
    shared = {key: max((row.get(key) or 0) for row in split["leakage"])
              for key in ("shared_subjects", "shared_duplicate_groups", "shared_near_duplicate_groups",
                          "shared_pseudo_patients") if any(key in row for row in split["leakage"])}
    numbers: dict[str, Any] = {
        "data": {"n_images": s["data"]["n_images"], "classes": s["data"]["classes"],
                 "n_duplicate_groups": s["data"].get("n_duplicate_groups")},
        "split": {"method": split["method"], "n_test": split["n_test"],
                  "folds": [{"train": f["train"], "val": f["val"]} for f in split["folds"]],
                  "shared_most": shared,
                  "shared_train_test": next(({k: v for k, v in row.items() if k.startswith("shared_")}
                                             for row in split["leakage"] if (row["a"], row["b"]) == ("train", "test")),
                                            {}),
                  "grouping": {k: v for k, v in (split.get("grouping") or {}).items()
                               if k in ("n_pseudo_patients", "pseudo_patient_block", "phash_links",
                                        "near_duplicate_groups", "images_in_near_duplicate_groups")}},
        "evaluation": {"unit": ev["unit"], "n_subjects": ev.get("n_subjects"), "bootstrap": ev["bootstrap"],
                       "clusters_per_class": ev.get("clusters_per_class") or {},
                       "warnings": sorted({w["kind"] for w in ev.get("warnings", [])})},
        "roles": {role: _model(by_name[name]) for role, name in roles.items() if name in by_name},
        "champions": {_slug(c["scenario"]): _model(c) for c in s["champions"]},
        "singles": {_slug(m["name"]): _model(m)["accuracy"] for m in s["single_models"]},
    }
    q = s.get("questions") or {}
    if q.get("wen_vs_single"):
        w = q["wen_vs_single"]
        numbers["questions"] = {"wen_vs_single": {"n_ensembles": w["n_ensembles"], "n_higher": w["n_higher"],
                                                  "n_better": len(w["better"])}}
    if q.get("intra_best") and q["intra_best"].get("comparison"):
        c = q["intra_best"]["comparison"]
        numbers.setdefault("questions", {})["intra_vs_inter"] = {"a": c["a"], "b": c["b"], "diff": c["diff"],
                                                                 "p": c["p"]}
    if q.get("lr_effect"):
        numbers.setdefault("questions", {})["factor_min_p_holm"] = q["lr_effect"].get("min_p_holm")
    subject = {}
    for row in s.get("subject_level") or []:
        right = sum(r["predicted"] == r["label"] for r in row.get("rows", []))
        subject[_slug(row["role"].split(" (")[0])] = {
            "model": row["model"], "n_subjects": row["n_subjects"], "n_right": right,
            "accuracy": {"value": row["accuracy"], "ci": row.get("accuracy_ci")},
            "cells_per_subject": {k: row["cells_per_subject"][k] for k in ("min", "median", "max")}}
    if subject:
        numbers["subject_level"] = subject
    if s.get("paper_comparison"):
        numbers["paper"] = [{k: c.get(k) for k in ("metric", "paper", "run", "low", "high", "inside", "model",
                                                    "where", "basis")} for c in s["paper_comparison"]]
        numbers["paper_protocol"] = s.get("paper_protocol")
    if s.get("parameters"):
        numbers["parameters"] = [{k: p.get(k) for k in ("stage", "total", "trainable", "keras_total",
                                                          "batchnorm_statistics")} for p in s["parameters"]]
    run_json = folder / "run.json"
    if run_json.is_file():
        numbers["run_seconds"] = json.loads(run_json.read_text()).get("last_command_seconds")
    return numbers


def extract_crossval(folder: Path) -> dict[str, Any]:
    """A crossval folder's ``crossval.json`` (pooled roles) and each part's headline, from its summary."""
    c = json.loads((folder / "crossval.json").read_text())
    st = c["statistics"]
    numbers: dict[str, Any] = {
        "n_test": c["n_test"],
        "statistics": {"unit": st["unit"], "n_subjects": st.get("n_subjects"), "bootstrap": st["bootstrap"],
                       "clusters_per_class": st.get("clusters_per_class") or {},
                       "warnings": sorted({w["kind"] for w in st.get("warnings", [])})},
        "roles": {_slug(m["role"]): {"models": m["models"], "n_test": m["n_test"],
                                     **{k: v for k, v in _model({"name": "", "metrics": m["metrics"]}).items()
                                        if k != "name"}} for m in c["models"]},
        "parts": [],
    }
    for part in c["parts"]:
        run = folder / Path(part["run"]).name  # the parts live in the crossval folder
        one = extract_run(run)
        numbers["parts"].append({"part": part["part"], "n_test": part["n_test"],
                                 "n_subjects": one["evaluation"]["n_subjects"],
                                 "clusters_per_class": one["evaluation"]["clusters_per_class"],
                                 "warnings": one["evaluation"]["warnings"],
                                 "default_export": one["roles"]["default_export"],
                                 "best_single": one["roles"]["best_single"],
                                 "run_seconds": one.get("run_seconds")})
    numbers["run_seconds_sum"] = round(sum(p["run_seconds"] or 0 for p in numbers["parts"]), 1)
    return numbers


def extract_compare(folder: Path) -> dict[str, Any]:
    """``allwen compare``'s ``compare.json``: each headline and champion row, both runs and the gap."""
    path = folder / "compare.json" if folder.is_dir() else folder
    c = json.loads(path.read_text())
    rows = {}
    for row in c["rows"]:
        if row["group"] not in ("headline", "champion"):
            continue
        rows[_slug(row["key"])] = {
            "names": row["names"],
            "runs": [{k: v for k, v in zip(row["metrics"], vals)} for vals in
                     zip(*(row["metrics"][m] for m in row["metrics"]))],
            "gap": {m: row["gaps"][m][0] for m in row["gaps"]}}
    gaps = [row["gap"]["accuracy"]["value"] for row in rows.values() if "accuracy" in row["gap"]]
    excluding_zero = sum(1 for row in rows.values() if "accuracy" in row["gap"] and row["gap"]["accuracy"]["ci"]
                         and (row["gap"]["accuracy"]["ci"][0] > 0 or row["gap"]["accuracy"]["ci"][1] < 0))
    return {"runs": [{"protocol": r["protocol"], "label": r["label"], "n_test": r["n_test"]} for r in c["runs"]],
            "data": c.get("data"), "rows": rows, "n_rows": len(rows),
            "accuracy_gap_range": [min(gaps), max(gaps)] if gaps else None,
            "accuracy_gaps_excluding_zero": excluding_zero}


def _json_object(text: str) -> dict[str, Any]:
    """The last line of TEXT that is a JSON object (a benchmark's ``--json`` line), or the whole text."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LedgerError("no JSON object in the command's output (a benchmark's --json line)") from e


def extract_json(text: str, keep: list[str] | None = None) -> dict[str, Any]:
    """A benchmark's JSON object, with only the keys in KEEP when given (dotted keys keep a nested value)."""
    obj = _json_object(text)
    if not keep:
        return obj
    out: dict[str, Any] = {}
    for key in keep:
        value = lookup(obj, key.split("."))
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def extract_pytest(text: str) -> dict[str, Any]:
    """pytest's last summary line (``963 passed, 1 skipped, 28 deselected in 506.3s``) as counts."""
    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if not lines:
        raise LedgerError("no pytest summary line (N passed ...) in the output")
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|"
                                                     r"xpassed|warnings?)", lines[-1])}
    numbers = {"passed": counts.get("passed", 0), "failed": counts.get("failed", 0), "skipped": counts.get("skipped", 0)}
    if "deselected" in counts:  # pytest-xdist's summary leaves it out: then no number, rather than a wrong 0
        numbers["deselected"] = counts["deselected"]
    return numbers


EXTRACTORS: dict[str, str] = {
    "run": "a run folder: its report/summary.json (data, split, statistics, roles, answers, paper table)",
    "crossval": "a crossval folder: crossval.json's pooled roles and each part's headline",
    "compare": "an `allwen compare` folder: compare.json's headline and champion rows and gaps",
    "json": "a benchmark's --json object: from --source FILE, else the command's stdout (--keep to pick keys)",
    "pytest": "pytest's summary line: from --source FILE (a log), else the command's stdout",
    "none": "no numbers: the record's metadata (wall time, load, commit) is the measurement",
}


def extract_numbers(kind: str | None, source: str | None, stdout: str | None = None,
                    keep: list[str] | None = None, cwd: Path = ROOT) -> dict[str, Any]:
    kind = kind or "none"
    if kind not in EXTRACTORS:
        raise LedgerError(f"unknown --extract {kind!r}; one of {', '.join(EXTRACTORS)}")
    path = None if source is None else (Path(source) if Path(source).is_absolute() else cwd / source)
    if kind == "none":
        return {}
    if kind in ("json", "pytest"):
        if path is None and stdout is None:
            raise LedgerError(f"--extract {kind} needs --source FILE (or a command whose output it reads)")
        text = path.read_text() if path is not None else stdout or ""
        return extract_json(text, keep) if kind == "json" else extract_pytest(text)
    if path is None or not path.exists():
        raise LedgerError(f"--extract {kind} needs --source PATH that exists (got {source})")
    fn: Callable[[Path], dict[str, Any]] = {"run": extract_run, "crossval": extract_crossval,
                                            "compare": extract_compare}[kind]
    return fn(path)


# --------------------------------------------------------------------------- placeholders

PLACEHOLDER = re.compile(r"\{\{\s*ledger\s+([^\s}]+)\s+([^\s}]+)(?:\s+([^}]*?))?\s*\}\}")


def lookup(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(part)
    return node


def _min_s(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m} min"
    return f"{m} min {s} s" if m else f"{s} s"


def _load(record: dict[str, Any]) -> str:
    """The 1-minute load averages the record saw, low-high (start, samples, end)."""
    values = [record["load"]["start"][0], *record["load"].get("samples_1min", []), record["load"]["end"][0]]
    lo, hi = min(values), max(values)
    return f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}"


NAMED_FORMATS: dict[str, Callable[[Any, dict[str, Any]], str]] = {
    "min_s": lambda v, r: _min_s(float(v)),           # 336.2 -> "5 min 36 s"
    "load": lambda v, r: _load(r),                      # the record's load averages, "1.0-1.6"
    "day": lambda v, r: str(v)[:10],                    # an ISO date -> 2026-12-07
    "commit": lambda v, r: str(v)[:7] + (" (with uncommitted changes)" if r.get("dirty") else ""),
    "pct": lambda v, r: f"{100 * float(v):.1f}%",       # 0.0204 -> 2.0%
    "yesno": lambda v, r: "yes" if v else "no",         # a bool (the paper inside the interval)
}


def format_value(value: Any, spec: str | None, record: dict[str, Any]) -> str:
    spec = (spec or "").strip()
    if spec in NAMED_FORMATS:
        return NAMED_FORMATS[spec](value, record)
    if isinstance(value, dict) and "value" in value and "ci" in value:
        text = format(value["value"], spec)
        ci = value["ci"]
        return text if not ci else f"{text} [{format(ci[0], spec)}, {format(ci[1], spec)}]"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value) or "none"  # names, warnings
    if isinstance(value, (dict, list)):
        raise TypeError(f"a {type(value).__name__}, not a number or text (name a leaf of it)")
    if isinstance(value, bool) or value is None:
        return str(value)
    return format(value, spec)


def resolve(name: str, path: str, spec: str | None, results: Path | None = None,
            cache: dict[str, dict[str, Any]] | None = None) -> str:
    """One placeholder's text. ``meta.KEY`` looks into the record, anything else into its numbers."""
    cache = {} if cache is None else cache
    if name not in cache:
        cache[name] = read_record(name, results)
    record = cache[name]
    parts = path.split(".")
    node, inner = (record, parts[1:]) if parts[0] == "meta" else (record.get("numbers", {}), parts)
    try:
        value = record if inner == [] else lookup(node, inner)  # `meta` alone: the record (for `load`)
    except KeyError as e:
        raise LedgerError(f"results/{name}.json has no {path} (missing key {e.args[0]!r})") from None
    try:
        text = format_value(value, spec, record)
    except (TypeError, ValueError) as e:
        raise LedgerError(f"results/{name}.json {path} with format {spec!r}: {e}") from None
    return f"{text} (stand-in)" if record.get("stand_in") else text


def render(text: str, where: str = "", results: Path | None = None) -> str:
    """Every ``{{ledger NAME PATH FORMAT}}`` in TEXT replaced by the record's value; errors name the page."""
    cache: dict[str, dict[str, Any]] = {}
    errors: list[str] = []

    def one(m: re.Match[str]) -> str:
        try:
            return resolve(m.group(1), m.group(2), m.group(3), results, cache)
        except LedgerError as e:
            errors.append(f"{where}: {{{{ledger {m.group(1)} {m.group(2)}}}}}: {e}")
            return m.group(0)

    out = PLACEHOLDER.sub(one, text)
    if errors:
        raise LedgerError("\n".join(errors))
    return out.replace("{{!ledger", "{{ledger")  # a page that shows the syntax itself


# --------------------------------------------------------------------------- the README's blocks

BLOCK = re.compile(r"(<!-- ledger:begin\n)(.*?)(\n-->)(.*?)(<!-- ledger:end -->)", re.S)


def render_blocks(text: str, where: str = "README.md", results: Path | None = None) -> str:
    """Each ``<!-- ledger:begin\\nTEMPLATE\\n-->TEXT<!-- ledger:end -->`` with TEXT = TEMPLATE rendered."""
    return BLOCK.sub(lambda m: m.group(1) + m.group(2) + m.group(3) + "\n" + render(m.group(2), where, results)
                     + "\n" + m.group(5), text)


# --------------------------------------------------------------------------- numbers outside the ledger

# A measured-looking number: a decimal (0.983, 9.7x), a thousands separator (2,612), a percentage,
# an exponent (1.3e-5), a ratio (6x) or a duration (5 min 36 s, 336 s, 2 h). Plain counts (5 folds,
# 3 learning rates, 224 px) are protocol facts and pass.
MEASURED = re.compile(
    r"(?<![\w.])(?:"
    r"\d+(?:\.\d+)?[eE][-+]?\d+"                         # 1.3e-5, 1e-4
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?"                      # 2,612 and 3,302.9
    r"|\d+\.\d+\s?(?:%|x\b)?"                             # 0.983, 9.7x, 2.0%
    r"|\d+\s?%"                                           # 20%
    r"|\d+x\b"                                            # 6x
    r"|\d+\s?(?:min|s|ms|h)\b(?:\s\d+\s?s\b)?"            # 5 min 36 s, 336 s
    r")")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)


def stray_numbers(text: str, allowed: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, number) for each measured-looking number of TEXT not written by the ledger.

    Not checked: ``{{ledger ...}}`` placeholders, the README's ledger blocks (template and text),
    code (fenced blocks and inline spans: commands and config values are inputs), HTML comments,
    link targets and URLs, and the strings in ALLOWED (protocol facts such as a Python version).
    """
    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    for pattern in (BLOCK, COMMENT, CODE, PLACEHOLDER, re.compile(r"\]\([^)]*\)"), re.compile(r"https?://\S+")):
        text = pattern.sub(blank, text)
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in MEASURED.finditer(line):
            token = m.group(0).strip()
            if token not in allowed:
                found.append((n, token))
    return found


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/ledger.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    extract_help = "; ".join(f"{k}: {v}" for k, v in EXTRACTORS.items())
    p_run = sub.add_parser("run", help="run COMMAND (after --) from the checkout's root and record it",
                           usage="python tools/ledger.py run NAME [--cwd DIR] [--extract KIND --source PATH] -- COMMAND ...")
    p_imp = sub.add_parser("import", help="record a command that already ran under a wrapper (--meta)")
    for p in (p_run, p_imp):
        p.add_argument("name", help="the record: results/NAME.json")
        p.add_argument("--extract", choices=sorted(EXTRACTORS), default=None, help=extract_help)
        p.add_argument("--source", default=None, help="what the command wrote (relative to the command's cwd)")
        p.add_argument("--keep", default=None, help="--extract json: comma-separated (dotted) keys to keep")
    p_run.add_argument("--cwd", default=ROOT, type=Path, metavar="DIR",
                       help="run the command in DIR (another checkout: its commit is recorded); default the root")
    p_imp.add_argument("--meta", required=True, type=Path, help="the wrapper's META.json")
    p_imp.add_argument("--time", default=None, type=Path, metavar="TIME.txt",
                       help="what /usr/bin/time -v -o TIME.txt wrote about the command: its CPU seconds")
    p_imp.add_argument("--stand-in", default=None, metavar="WHY",
                       help="mark a hand-written record: pages show ' (stand-in)' after its values")
    p_readme = sub.add_parser("readme", help="rewrite the README's ledger blocks from results/")
    p_readme.add_argument("--check", action="store_true", help="exit 1 if the README is not up to date")
    p_show = sub.add_parser("show", help="print a record")
    p_show.add_argument("name")
    sub.add_parser("list", help="one line per record: date, commit, wall time, load; stand-ins marked")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []  # run NAME [options] -- COMMAND ...
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        if args.cmd in ("run", "import"):
            keep = args.keep.split(",") if args.keep else None
            if args.cmd == "run":
                if not command:
                    parser.error("run: give the command after --")
                record = run_command(args.name, command, args.extract, args.source, results=RESULTS, keep=keep,
                                     cwd=args.cwd.resolve())
            else:
                record = import_meta(args.name, args.meta, args.extract, args.source, results=RESULTS, keep=keep,
                                     stand_in=args.stand_in, time_report=args.time)
            print(f"results/{args.name}.json: {record['wall_s']} s, load {_load(record)}, "
                  f"{len(json.dumps(record['numbers']))} bytes of numbers")
        elif args.cmd == "readme":
            text = README.read_text()
            new = render_blocks(text)
            if args.check:
                if new != text:
                    print("README.md is not up to date with results/: run `python tools/ledger.py readme`")
                    return 1
            elif new != text:
                README.write_text(new)
                print("README.md rewritten from results/")
        elif args.cmd == "show":
            print(json.dumps(read_record(args.name), indent=1))
        elif args.cmd == "list":
            for path in sorted(RESULTS.glob("*.json")):
                r = json.loads(path.read_text())
                mark = f"  STAND-IN: {r['stand_in']}" if r.get("stand_in") else ""
                print(f"{r['name']:<28} {r['date'][:16]} {r['commit'][:7]}{'+' if r.get('dirty') else ' '} "
                      f"{_min_s(r['wall_s']):>14}  load {_load(r)}{mark}")
    except LedgerError as e:
        print(f"ledger: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
