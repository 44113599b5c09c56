"""End to end in headless Chromium: the lab's page uploads a real C-NMC cell and shows the result."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "screenshots" / "serve.png"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(ensemble_bundle):
    uvicorn = pytest.importorskip("uvicorn")
    from allwen.serve.app import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(ensemble_bundle), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


def test_page_uploads_a_real_cell_and_shows_class_bars_votes_and_overlay(server, shared, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    executable = _chromium()
    cell = sorted(shared("data", "cnmc2019", "samples", "all").glob("*.bmp"))[0]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server)
            page.wait_for_function("document.getElementById('model-info').textContent.includes('Classes')")
            page.set_input_files("#files", str(cell))
            page.wait_for_selector(".card .verdict", timeout=60_000)
            card = page.locator(".card").first
            assert cell.name in card.locator("h2").inner_text()
            assert card.locator(".verdict b").inner_text() in ("hem", "all")
            assert card.locator(".bar").count() == 2
            assert card.locator("table tr").count() == 3  # header + 2 members' votes
            assert card.locator("img[alt='Grad-CAM overlay']").count() == 1
            page.set_input_files("#files", str(_not_an_image(tmp_path)))
            page.wait_for_selector("#status.error")
            assert "not an image" in page.locator("#status").inner_text()
            assert errors == []
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("ALLWEN_SCREENSHOTS"):  # refresh the README's screenshot
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, SCREENSHOT)
        finally:
            browser.close()


def _not_an_image(folder: Path) -> Path:
    path = folder / "notes.png"
    path.write_text("a text file with an image name")
    return path
