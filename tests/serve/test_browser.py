"""End to end in headless Chromium: the lab's page uploads cells, shows the table, exports the CSV; /docs offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "screenshots" / "serve.png"
SHOTS = REPO / "docs" / "screenshots"


def _offline(page, blocked: list[str]) -> None:
    """The network is off: every request that leaves 127.0.0.1 is aborted (and recorded)."""
    def route(request_route):
        url = request_route.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:")):
            return request_route.continue_()
        blocked.append(url)
        return request_route.abort()

    page.route("**/*", route)


def _keep(shot: Path, name: str) -> None:
    if os.environ.get("ALLWEN_SCREENSHOTS"):  # refresh the docs' screenshots
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SHOTS / name)


def test_page_uploads_a_real_cell_and_shows_class_bars_votes_and_overlay(server, chromium, launched, shared, tmp_path):
    cell = sorted(shared("data", "cnmc2019", "samples", "all").glob("*.bmp"))[0]
    with launched(chromium) as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server)
        page.locator("#model-info", has_text="Classes").wait_for(timeout=60_000)  # no eval: the page's CSP forbids it
        page.set_input_files("#files", str(cell))
        page.wait_for_selector(".card", timeout=60_000)
        card = page.locator(".card").first
        assert cell.name in card.locator("h2").inner_text()
        status = card.get_attribute("data-status")
        assert status in ("answered", "refer", "out_of_distribution")
        if status == "answered":  # a class in large type only for an answered cell
            assert card.locator(".verdict b").inner_text() in ("hem", "all")
        else:
            assert card.locator(".verdict").count() == 0 and card.locator(".headline").count() == 1
        assert card.locator(".bar").count() == 2
        assert card.locator("table tr").count() == 3  # header + 2 members' votes
        assert card.locator("img[alt='Grad-CAM overlay']").count() == 0  # Grad-CAM on demand, not by default
        card.locator("button.explain-one").click()
        card.locator("img[alt='Grad-CAM overlay']").wait_for(timeout=120_000)
        page.set_input_files("#files", str(_not_an_image(tmp_path)))
        page.wait_for_selector(".card.rejected")
        assert "not an image" in page.locator(".card.rejected").inner_text()
        assert page.locator("#summary tr.unreadable td.cell-status").inner_text() == "unreadable"
        assert errors == []
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("ALLWEN_SCREENSHOTS"):  # refresh the README's screenshot
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, SCREENSHOT)


def _not_an_image(folder: Path) -> Path:
    path = folder / "notes.png"
    path.write_text("a text file with an image name")
    return path


def test_page_table_sorts_downloads_the_predict_csv_and_clears(unit_bundle, test_images, tmp_path, monkeypatch,
                                                              serving, chromium, launched):
    """The page's CSV equals `allwen predict`'s for the same files; the table sorts; Clear empties it."""
    import pandas as pd
    from PIL import Image
    from typer.testing import CliRunner

    from allwen.cli import app

    folder = tmp_path / "cells"
    folder.mkdir()
    names = []
    for i, src in enumerate(test_images[:3]):
        names.append(f"cell_{i}.png")
        Image.open(src).convert("RGB").save(folder / names[-1])
    Image.open(test_images[3]).convert("RGB").resize((200, 200)).save(folder / "big_cell.png")  # 200 px into 32 px
    (folder / "notes.png").write_text("not an image")
    names += ["big_cell.png", "notes.png"]
    monkeypatch.chdir(folder)
    cli = CliRunner().invoke(app, ["predict", str(unit_bundle), *names, "--out", str(tmp_path / "cli.csv")])
    assert cli.exit_code == 0, cli.output
    expected = pd.read_csv(tmp_path / "cli.csv", keep_default_na=False)
    with serving(unit_bundle) as url, launched(chromium) as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        blocked: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        _offline(page, blocked)
        page.goto(url)
        page.locator("#model-info", has_text="Classes").wait_for(timeout=60_000)  # no eval: the page's CSP forbids it
        assert "leukemic lymphoblast" in page.locator("#classes").inner_text()
        assert "B-lymphoid precursor" in page.locator("#classes").inner_text()
        assert page.locator("#legend .scale").count() == 1
        page.uncheck("#explain")
        page.set_input_files("#files", [str(folder / n) for n in names])
        page.locator("#status", has_text="5 cells:").wait_for(timeout=60_000)  # the whole drop answered
        rows = page.locator("#summary tbody tr")
        assert rows.count() == 5
        assert "trained at 32 x 32" in page.locator("#summary tbody tr", has_text="big_cell.png").inner_text()
        statuses = page.locator("#summary tbody td.cell-status").all_inner_texts()
        assert len(statuses) == 5 and statuses.count("unreadable") == 1, statuses
        page.click("#summary th[data-key='prob']")  # probabilities only for answered cells, the others last
        probs = [float(t.rstrip("%")) for t in page.locator("#summary tbody tr.answered td:nth-child(4)").all_inner_texts()]
        assert probs == sorted(probs) and len(probs) == statuses.count("answered")
        page.click("#summary th[data-key='prob']")
        probs = [float(t.rstrip("%")) for t in page.locator("#summary tbody tr.answered td:nth-child(4)").all_inner_texts()]
        assert probs == sorted(probs, reverse=True)
        page.click("#summary th[data-key='status']")  # sorted by status: answered, refer, out of distribution, unreadable
        order = ["answered", "refer", "out of distribution", "unreadable"]
        shown = page.locator("#summary tbody td.cell-status").all_inner_texts()
        assert shown == sorted(shown, key=order.index)
        with page.expect_download() as info:
            page.click("#download")
        info.value.save_as(str(tmp_path / "page.csv"))
        shot = tmp_path / "serve_table.png"
        page.screenshot(path=str(shot), full_page=True)
        _keep(shot, "serve_table.png")
        page.click("#clear")
        assert page.locator("#summary tbody tr").count() == 0 and page.locator("#results .card").count() == 0
        assert errors == [] and blocked == []
    got = pd.read_csv(tmp_path / "page.csv", keep_default_na=False)
    assert list(got.columns) == list(expected.columns)
    for column in expected.columns:
        if column.startswith("prob_") or ":prob_" in column:
            a = pd.to_numeric(got[column], errors="coerce").to_numpy()
            b = pd.to_numeric(expected[column], errors="coerce").to_numpy()
            assert ((a == b) | (pd.isna(a) & pd.isna(b))).all(), column  # equal to the 8 printed digits
        else:
            assert list(got[column]) == list(expected[column]), column


def test_api_docs_render_offline(unit_bundle, tmp_path, serving, chromium, launched):
    """/docs is Swagger UI served from the installed fastapi-offline: it renders with the network off."""
    pytest.importorskip("fastapi_offline")
    with serving(unit_bundle) as url, launched(chromium) as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        blocked: list[str] = []
        _offline(page, blocked)
        page.goto(url + "docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/predict" in paths and "/health" in paths
        shot = tmp_path / "api_docs.png"
        page.screenshot(path=str(shot), full_page=False)
        _keep(shot, "api_docs.png")
        assert blocked == []
