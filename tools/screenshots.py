"""Screenshots of real reports for the docs, at 1280 px, each page checked for overflow first.

    python tools/screenshots.py --demo runs/demo --grid runs/tal4-seq --paper runs/experiment_e \\
        --compare runs/tal4-seq runs/tal4-image --out docs/screenshots

Each run folder is copied (without its feature cache and weights) into a temporary folder and
its report rebuilt there from its ``summary.json`` with this checkout's code, so the pictures show
today's report and the runs are never written to; ``--compare`` makes a fresh ``allwen compare``
page of the copies. Every page is opened in headless Chromium (``/usr/bin/chromium`` or
``--chromium``) with every section unfolded; a page wider than the window, an element reaching
past it or a clipped badge stops the script before anything is written. Writes:

- ``report_first_screen.png``: the first screen of the demo's report (``allwen demo``'s ``run``);
- ``report_grid.png``: the Grid section of a grid run's report (taleqani_4class);
- ``report_paper.png``: the summary section of a study preset's report (experiment_e): the paper's
  numbers beside this run's, the protocol differences and the summary table;
- ``compare.png``: the first screen of the demo's comparison page (its ``run`` and ``run-image``);
- ``compare_protocols.png``: the first screen of the comparison of the ``--compare`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

WIDTH, HEIGHT = 1280, 900

# every element that reaches past the window, outside the boxes that scroll in place
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth, bad = [];
  for (const el of document.querySelectorAll('body *')) {
    const parent = el.parentElement;
    if (parent && parent.closest('.scroll, pre, figure.chart, details:not([open])')) continue;  // scrolls in place
    const r = el.getBoundingClientRect();
    if (r.width && (r.right > width + 1 || r.left < -1)) bad.push(`${el.tagName}.${el.className} right ${Math.round(r.right)}`);
  }
  return {width, scrollWidth: document.documentElement.scrollWidth, bad: bad.slice(0, 8)};
}"""

# every badge, its colour, and whether its rounded ends cut its letters (no room left beside the text)
BADGES = """() => [...document.querySelectorAll('.badge')].map(b => {
  const range = document.createRange(), box = b.getBoundingClientRect();
  range.selectNodeContents(b);
  const text = range.getBoundingClientRect();
  return {text: b.textContent, background: getComputedStyle(b).backgroundColor,
          clipped: text.left < box.left + 4 || text.right > box.right - 4};
})"""

SKIP = shutil.ignore_patterns("cache", "*.safetensors", "*.onnx", "*.ckpt", "*.pt")


def copy_run(run: Path, into: Path) -> Path:
    """A copy of ``run`` under ``into/runs/`` (named as the run; pages show it so) without its feature
    cache and weights (the report reads neither)."""
    target = into / "runs" / run.name
    while target.exists():
        target = target.with_name(target.name + "_")
    shutil.copytree(run, target, ignore=SKIP, symlinks=False)
    return target


def rebuild(run: Path) -> Path:
    """The run's report from its ``summary.json`` with this checkout's code (no evaluation)."""
    from allwen.report.build import build_report

    return build_report(run)


def problems(page) -> list[str]:
    """What does not fit a 1280-px window on the open page (empty: it fits)."""
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    found = page.evaluate(OVERFLOW)
    out = [f"page {found['scrollWidth']} px wide"] if found["scrollWidth"] > found["width"] else []
    out += [f"element past the window: {b}" for b in found["bad"]]
    out += [f"clipped badge: {b['text']}" for b in page.evaluate(BADGES) if b["clipped"]]
    return out


def shoot(pages: dict[str, tuple[Path, str | None]], out: Path, chromium: str) -> None:
    """``pages``: name -> (HTML file, CSS selector of the part to picture or None for the first screen)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            found = {}
            for name, (path, _) in pages.items():
                page.goto(path.resolve().as_uri())
                found[name] = problems(page)
            bad = {name: p for name, p in found.items() if p}
            if bad:
                raise SystemExit(f"pages do not fit {WIDTH} px: {bad}")
            out.mkdir(parents=True, exist_ok=True)
            for name, (path, selector) in pages.items():
                page.goto(path.resolve().as_uri())
                if selector is None:  # the first screen, as a reader sees it
                    page.screenshot(path=str(out / f"{name}.png"))
                else:
                    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
                    page.locator(selector).first.screenshot(path=str(out / f"{name}.png"))
                print(f"{out / name}.png")
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, help="allwen demo's output folder (its run/ and run-image/)")
    parser.add_argument("--grid", type=Path, help="a grid run (taleqani_4class): its Grid section")
    parser.add_argument("--paper", type=Path, help="a study preset's run with a paper: block (experiment_e)")
    parser.add_argument("--compare", type=Path, nargs="+", help="two or more runs for a comparison page")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)

    from allwen.evaluation.compare import compare_runs
    from allwen.report.compare import write_comparison

    with tempfile.TemporaryDirectory(prefix="allwen-shots-") as tmp:
        work, pages = Path(tmp), {}
        copies: dict[Path, Path] = {}

        def copied(run: Path) -> Path:
            if run.resolve() not in copies:
                copies[run.resolve()] = copy_run(run, work)
            return copies[run.resolve()]

        def compared(runs: list[Path], name: str) -> Path:
            here = Path.cwd()
            os.chdir(work)  # the page names each run by the folder it was given: runs/NAME, as `allwen compare` would
            try:
                return work / write_comparison(compare_runs([run.relative_to(work) for run in runs]), Path(name))
            finally:
                os.chdir(here)

        if args.demo:
            pages["report_first_screen"] = (rebuild(copied(args.demo / "run")), None)
            pages["compare"] = (compared([copied(args.demo / "run"), copied(args.demo / "run-image")], "compare"), None)
        if args.grid:
            pages["report_grid"] = (rebuild(copied(args.grid)), "#grid")
        if args.paper:
            pages["report_paper"] = (rebuild(copied(args.paper)), "section#summary")
        if args.compare:
            pages["compare_protocols"] = (compared([copied(run) for run in args.compare], "compare_protocols"), None)
        if not pages:
            parser.error("nothing to picture: give --demo, --grid, --paper or --compare")
        shoot(pages, args.out, args.chromium)
    return 0


if __name__ == "__main__":
    sys.exit(main())
