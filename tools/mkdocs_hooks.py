"""MkDocs hooks: pages written from the code at build time, so nobody regenerates them by hand.

``<!-- allwen:config-reference -->`` in a page becomes the configuration reference written from
the pydantic schema, ``<!-- allwen:presets -->`` the table of built-in presets and
``<!-- allwen:cli-reference -->`` every command's options, read from the command line itself.
``{{ledger NAME PATH FORMAT}}`` becomes a number of the results ledger (``results/NAME.json``,
``tools/ledger.py``); a missing record or path fails the build, naming the page.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError


def _ledger():
    """``tools/ledger.py``, loaded by path (tools/ is not a package)."""
    if "allwen_ledger" not in sys.modules:
        spec = importlib.util.spec_from_file_location("allwen_ledger", Path(__file__).with_name("ledger.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["allwen_ledger"] = module
        spec.loader.exec_module(module)
    return sys.modules["allwen_ledger"]


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    if "{{ledger" in markdown or "{{!ledger" in markdown:
        ledger = _ledger()
        try:
            markdown = ledger.render(markdown, where=f"docs/{page.file.src_path}")
        except ledger.LedgerError as e:
            raise PluginError(f"results ledger:\n{e}") from None
    if "<!-- allwen:" not in markdown:
        return markdown
    from allwen.config.reference import presets_markdown, reference_markdown

    markdown = (markdown.replace("<!-- allwen:config-reference -->", reference_markdown())
                .replace("<!-- allwen:presets -->", presets_markdown()))
    if "<!-- allwen:cli-reference -->" in markdown:
        from allwen.cli import app
        from allwen.cli_format import cli_reference_markdown

        markdown = markdown.replace("<!-- allwen:cli-reference -->", cli_reference_markdown(app))
    return markdown
