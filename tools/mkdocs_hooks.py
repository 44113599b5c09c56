"""MkDocs hooks: pages written from the code at build time, so nobody regenerates them by hand.

``<!-- allwen:config-reference -->`` in a page becomes the configuration reference written from
the pydantic schema, ``<!-- allwen:presets -->`` the table of built-in presets and
``<!-- allwen:cli-reference -->`` every command's options, read from the command line itself.
"""

from __future__ import annotations


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
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
