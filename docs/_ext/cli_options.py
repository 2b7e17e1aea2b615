"""The ``cli-options`` directive: a command's options, read from its parser.

The command line's options are documented from the ``argparse`` parser
that ``python -m smtpproto`` itself uses
(``smtpproto.__main__.build_parser``), so the page cannot drift from the
program: an option added, renamed or removed there shows here at the next
build.

Usage, with the name of a command (``serve``, ``send``, ``demo``)::

    .. cli-options:: send
"""

from __future__ import annotations

import argparse

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import ExtensionMetadata

from smtpproto.__main__ import build_parser


def _command(name: str) -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            if name in action.choices:
                parser: argparse.ArgumentParser = action.choices[name]
                return parser
    raise KeyError(name)


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar
    if metavar is None and action.choices is not None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    metavar = metavar or action.dest.upper()
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


class CliOptions(SphinxDirective):
    """Render one command's usage line and its options, group by group."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(ModuleAnalyzer.for_module("smtpproto.__main__").srcname)
        name = self.arguments[0]
        try:
            parser = _command(name)
        except KeyError:
            raise self.error(f"python -m smtpproto has no command {name!r}") from None
        parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=78)
        usage = parser.format_usage().strip()
        result: list[nodes.Node] = [nodes.literal_block(usage, usage)]
        if parser.description:
            result.append(nodes.paragraph(text=parser.description))
        # The named groups first, then argparse's own ("positional
        # arguments", "options").
        groups = sorted(
            parser._action_groups,
            key=lambda group: group.title in ("positional arguments", "options", "optional arguments"),
        )
        named = any(
            group.title not in ("positional arguments", "options", "optional arguments")
            and group._group_actions
            for group in groups
        )
        for group in groups:
            actions = [
                action
                for action in group._group_actions
                if action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
            ]
            if not actions:
                continue
            title = group.title or ""
            if title in ("options", "optional arguments"):
                title = "other options" if named else "options"
            title = title[:1].upper() + title[1:]
            listing = nodes.definition_list()
            for action in actions:
                term = nodes.term("", "", nodes.literal(text=_invocation(action)))
                text = action.help or ""
                if action.required:
                    text += " (required)"
                definition = nodes.definition("", nodes.paragraph(text=text))
                listing += nodes.definition_list_item("", term, definition)
            result.append(nodes.rubric(text=title))
            result.append(listing)
        return result


def setup(app: Sphinx) -> ExtensionMetadata:
    app.add_directive("cli-options", CliOptions)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
