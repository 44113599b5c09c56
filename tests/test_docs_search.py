"""The built site's search works as the docs say to open it: over `python -m http.server -d site`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("site") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def served(site):
    """`python -m http.server -d site PORT`, exactly as Getting started says."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", "-d", str(site), "--bind", "127.0.0.1", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_docs_say_how_to_open_the_site():
    page = (ROOT / "docs" / "user-guide" / "getting-started.md").read_text()
    assert "python -m http.server -d site 8001" in page
    assert "python -m http.server -d site 8001" in (ROOT / "README.md").read_text()


def test_search_finds_pages_over_http(served, chromium, launched):
    with launched(chromium) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(served + "index.html")
        page.click("input.md-search__input", timeout=10_000)  # on a wide window the box is in the header
        page.keyboard.type("pseudo-patients")
        page.wait_for_selector(".md-search-result__item", timeout=20_000)
        assert "matching document" in page.inner_text(".md-search-result__meta")
        page.click(".md-search-result__item a")
        page.wait_for_load_state()
        assert page.url.startswith(served) and "pseudo-patient" in page.content()
