"""Help pages in words: ``CONFIG``, ``--out PATH``, ``--port NUMBER``, never ``<str>`` or ``{config}``.

Typer prints each parameter's Python type as a tag (``<bool>``, ``<list[str]>``, ``<int range>``)
and required arguments in braces; a person reading ``allwen run --help`` needs a name for the
value and words for what it is. :func:`plain_help` makes every allwen command print:

* arguments in capitals (``CONFIG``, ``BUNDLE_DIR``; ``[NAME]`` when optional, ``NAME...`` for several),
* an option's value as its metavar, or a word for its type (``PATH``, ``NUMBER``, ``TEXT``),
* flags with no value word, and bounds left to the help text, which says them in words.
"""

from __future__ import annotations

from pathlib import Path

from typer.core import TyperArgument, TyperOption

_WORDS = {int: "NUMBER", float: "NUMBER", str: "TEXT", Path: "PATH", bool: ""}


def value_word(param) -> str:
    """The word for a parameter's value: its metavar, else its type in capitals."""
    if param.metavar is not None:
        return param.metavar
    annotation = param.type_descriptor.annotation
    inner = getattr(annotation, "__args__", None)
    if getattr(annotation, "__origin__", None) is list and inner:
        annotation = inner[0]
    return _WORDS.get(annotation, "VALUE")


def _argument_name(self) -> str:
    return self.metavar if self.metavar is not None else self.name.upper()


def _argument_panel_name(self) -> str:
    return _argument_name(self) + ("..." if self.nargs != 1 else "")


def _argument_usage(self) -> str:
    name = _argument_name(self)
    if self.nargs != 1:
        name += "..."
    return name if self.required else f"[{name}]"


def _option_value(self, ctx) -> str | None:  # noqa: ARG001 - typer's signature
    if self.is_flag or self.count:
        return None
    word = value_word(self)
    return f"{word}..." if self.nargs != 1 and word else word


def _no_range(self) -> None:
    return None


def plain_help() -> None:
    """Install the plain help display on typer's parameter classes (idempotent)."""
    TyperArgument.display_name_raw = property(_argument_panel_name)
    TyperArgument._usage_display_name = _argument_usage
    TyperArgument._rich_display_name = _argument_panel_name
    TyperArgument.display_type_rich = lambda self, ctx: None
    TyperOption.display_type_rich = _option_value
    TyperOption._get_number_range_help_str = _no_range
    TyperArgument._get_number_range_help_str = _no_range


def _escape(text: str) -> str:
    return text.replace("\\[", "[").replace("|", "\\|").replace("\n", " ")


def _param_row(param) -> str:
    if isinstance(param, TyperArgument):
        name = f"`{_argument_panel_name(param)}`"
        default = "required" if param.required else "optional"
    else:
        name = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        word = _option_value(param, None)
        if word:
            name += f" `{word}`"
        if param.is_flag and not param.secondary_opts:
            default = "off"
        elif param.required:
            default = "required"
        elif param.default is None or param.default == []:
            default = ""
        elif param.secondary_opts:
            default = f"`{param.opts[0] if param.default else param.secondary_opts[0]}`"
        else:
            default = f"`{param.default}`"
    return f"| {name} | {_escape(param.help or '')} | {default} |"


def cli_reference_markdown(app) -> str:
    """Every command's usage line, summary and a table of its arguments and options, from the app itself."""
    import click
    import typer

    plain_help()
    group = typer.main.get_command(app)
    ctx = click.Context(group, info_name="allwen")
    out = []
    for name, command in group.commands.items():
        sub = click.Context(command, info_name=name, parent=ctx)
        pieces = " ".join(command.collect_usage_pieces(sub))
        doc = (command.help or "").strip()
        out += [f"### allwen {name}", "", f"```\nallwen {name} {pieces}\n```", "", " ".join(doc.split()), ""]
        rows = [_param_row(p) for p in command.params if p.name != "help"]
        if rows:
            out += ["| argument or option | meaning | default |", "|---|---|---|", *rows, ""]
    return "\n".join(out)
