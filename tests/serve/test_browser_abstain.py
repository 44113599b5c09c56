"""The page in headless Chromium: a referred cell, no set where the bundle withholds them, an OOD badge, one patient."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from allwen.bundle import BundleFolder

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "screenshots" / "serve_abstain.png"


def _foreign_image(tmp_path: Path) -> Path:
    """A smear photograph from ../shared when there, else a striped picture: nothing like a 32-px cell."""

    smear = Path(os.environ.get("ALLWEN_SHARED", REPO.parent / "shared")) / "data" / "taleqani" / "Original" / "Pro"
    found = sorted(smear.glob("*.jpg"))[:1] if smear.is_dir() else []
    if found:
        return found[0]
    path = tmp_path / "stripes.png"
    img = Image.new("RGB", (224, 224), (255, 255, 255))
    for x in range(0, 224, 8):
        for y in range(224):
            img.putpixel((x, y), (0, 0, 0))
    img.save(path)
    return path


def test_page_shows_refer_sets_ood_badge_and_one_patient(server, chromium, launched, ensemble_bundle, test_images, tmp_path):
    manifest = json.loads(BundleFolder(ensemble_bundle).manifest_path.read_text())
    foreign = _foreign_image(tmp_path)
    cells = [test_images[0], test_images[1]]
    with launched(chromium) as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server)
        # a locator, not wait_for_function: the page's CSP forbids the eval its polling needs
        page.locator("#model-info", has_text="Classes").wait_for(timeout=60_000)
        page.check("#one-patient")
        page.set_input_files("#files", [*cells, str(foreign)])
        page.wait_for_selector("#patient h2", timeout=60_000)
        cards = page.locator("#results .card")
        assert cards.count() == 3
        statuses = [cards.nth(i).get_attribute("data-status") for i in range(3)]
        # cards in the table's (upload) order, each with its status; a class in large type only when answered
        assert [cards.nth(i).locator("h2").inner_text() for i in range(3)] == [Path(c).name for c in [*cells, str(foreign)]]
        assert page.locator(".card .verdict").count() == statuses.count("answered")
        assert page.locator("#summary td.cell-status").all_inner_texts() == [s.replace("_", " ") for s in statuses]
        assert "One patient: 3 cells" in page.locator("#patient h2").inner_text()
        assert page.locator("#patient .call b").inner_text() in ("ALL", "not ALL", "none")
        assert "Research software" in page.locator("#patient").inner_text()
        text = page.locator("#results").inner_text()
        # the tiny run's test side has one or two subjects per class: the bundle withholds its sets, the page shows none
        assert manifest["conformal"]["levels"] == [] and "% set:" not in text
        if manifest["selective"]["threshold"] is None or manifest["selective"]["threshold"] > 0.99:
            assert page.locator(".headline.refer").count() + page.locator(".headline.out_of_distribution").count() == 3
        foreign_card = page.locator(".card", has_text=foreign.name)
        assert foreign_card.get_attribute("data-status") == "out_of_distribution", foreign_card.inner_text()
        assert foreign_card.locator(".headline.out_of_distribution").count() == 1
        assert errors == []
        shot = tmp_path / "serve_abstain.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("ALLWEN_SCREENSHOTS"):  # refresh the docs' screenshot
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, SCREENSHOT)
