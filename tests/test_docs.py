"""The README is a short front page whose links resolve, and the documentation site builds strictly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_a_short_front_page_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # the README's test command is CI's


def test_readme_links_point_at_files_that_exist():
    text = (ROOT / "README.md").read_text()
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in t]
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_docs_page_is_in_the_nav():
    """A page outside the nav is unreachable from the site's menu."""
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    listed = set(pages(nav))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk - listed == set(), "add these pages to mkdocs.yml's nav"
    assert listed - on_disk == set(), "nav entries without a page"


def test_mkdocs_build_strict_offline(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra: pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "site" / "reference" / "configuration.html").read_text()
    assert "train.stage1.epochs" in page and "<!-- allwen:" not in page  # the hook wrote the reference
    commands = (tmp_path / "site" / "user-guide" / "commands.html").read_text()
    assert "allwen run" in commands and "--cpus-per-unit" in commands and "<!-- allwen:" not in commands
    html = "".join(p.read_text() for p in (tmp_path / "site").rglob("*.html"))
    assert "fonts.googleapis" not in html and "fonts.gstatic" not in html  # nothing fetched from the network


# pages a newcomer follows say what to do, not what happened when (docs/speed.md states dates and loads
# of its measurements; its numbers come from the results ledger, tests/test_ledger.py)
FOR_PEOPLE = ["README.md", "docs/index.md", "docs/lab-guide.md", "docs/evaluation.md", "docs/splits.md",
              "docs/results.md",
              "docs/development.md", "docs/design/choices-and-deviations.md", *sorted(
                  str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "user-guide").glob("*.md"))]
CHANGELOG = re.compile(r"\bissues? \d+|\bengineers?'?s?\b.*\bjobs?\b|\blast session\b|\bround of issues\b|"
                       r"\bsix other\b|\bthis helper\b", re.I)


@pytest.mark.parametrize("page", FOR_PEOPLE)
def test_pages_for_people_are_not_a_changelog(page):
    hits = [f"{page}:{n}: {line.strip()}" for n, line in enumerate((ROOT / page).read_text().splitlines(), 1)
            if CHANGELOG.search(line)]
    assert not hits, "say what to do, not which issue or session changed it:\n" + "\n".join(hits)


def test_readme_says_how_to_call_allwen_and_what_the_install_needs():
    text = (ROOT / "README.md").read_text()
    assert text.count("source .venv/bin/activate") >= 1 and ".venv/bin/allwen" in text
    assert "apt-get install chromium" in text and "du -sh .venv" in text
    quickstart_end = text.index("## Main commands")
    first_example = text.index("allwen report runs/demo/run")
    assert text.index("source .venv/bin/activate") < quickstart_end < first_example  # said before the examples
    assert "runs/demo" in (ROOT / "Makefile").read_text()  # the examples' folder is the one make demo writes


def test_getting_started_first_run_names_existing_shared_paths():
    text = (ROOT / "docs" / "user-guide" / "getting-started.md").read_text()
    paths = re.findall(r"--set (?:data\.path|model\.weights)=\.\./shared/(\S+)", text)
    assert len(paths) == 2, "the first real run sets data.path and model.weights"
    shared = Path(os.environ.get("ALLWEN_SHARED", ROOT.parent / "shared"))
    if not (shared / "data").is_dir():
        pytest.skip(f"{shared} is missing: real data/weights live in ../shared beside the checkout")
    missing = [rel for rel in paths if not (shared / rel).exists()]
    assert not missing, f"Getting started names paths that are not in {shared}: {missing}"
