"""MkDocs hooks: pages written from the code at build time, so nobody regenerates them by hand.

``<!-- allwen:config-reference -->`` in a page becomes the configuration reference written from
the pydantic schema, ``<!-- allwen:presets -->`` the table of built-in presets.
"""

from __future__ import annotations


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    if "<!-- allwen:" not in markdown:
        return markdown
    from allwen.config.reference import presets_markdown, reference_markdown

    return (markdown.replace("<!-- allwen:config-reference -->", reference_markdown())
            .replace("<!-- allwen:presets -->", presets_markdown()))
