"""The ``smtp-transitions`` directive: ``smtpproto.TRANSITIONS`` as a table.

The table is read from the code at build time, so the page cannot drift
from it.  ``TRANSITIONS[state][command type][first digit of the reply]``
is the new state; a digit absent from an entry leaves the state unchanged
and a command absent from a state's row is out of sequence there.  Each
state's description comes from its ``#:`` comment in ``smtpproto._state``.

Usage, with no arguments or options::

    .. smtp-transitions::
"""

from __future__ import annotations

from collections.abc import Mapping

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import ExtensionMetadata

import smtpproto
from smtpproto import TRANSITIONS, Event, State

_HEADERS = ("State", "Command event", "First digit of the reply \u2192 new state")
_WIDTHS = (40, 20, 40)


def _cell(*children: nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    entry += nodes.paragraph("", "", *children)
    return entry


def _command(kind: type) -> nodes.Node:
    """The event class, linked to its API entry, and what it stands for."""
    link: nodes.Node = nodes.literal(text=kind.__name__)
    if getattr(smtpproto, kind.__name__, None) is kind:
        link = addnodes.pending_xref(
            "",
            link,
            refdomain="py",
            reftype="class",
            reftarget=f"smtpproto.{kind.__name__}",
            refexplicit=True,
            refwarn=True,
        )
    note = {"Reply": " (the greeting)", "EndOfMessage": " (the end of data)"}
    return nodes.inline("", "", link, nodes.Text(note.get(kind.__name__, "")))


def _outcomes(outcomes: Mapping[int, State]) -> str:
    if not outcomes:
        return "any reply: unchanged"
    shown = ", ".join(f"{digit}xx \u2192 {new.name}" for digit, new in sorted(outcomes.items()))
    return f"{shown}; otherwise unchanged"


class SmtpTransitions(SphinxDirective):
    """Render ``smtpproto.TRANSITIONS`` as a docutils table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        analyzer = ModuleAnalyzer.for_module(State.__module__)
        # Re-read this page whenever the module holding the table changes.
        self.env.note_dependency(analyzer.srcname)
        docs = analyzer.find_attr_docs()
        group = nodes.tgroup(cols=len(_HEADERS))
        for width in _WIDTHS:
            group += nodes.colspec(colwidth=width)
        head = nodes.row()
        for title in _HEADERS:
            head += _cell(nodes.Text(title))
        group += nodes.thead("", head)
        body = nodes.tbody()
        for state in State:
            row_of_state = TRANSITIONS.get(state)
            if row_of_state is None:
                raise self.error(f"smtpproto.TRANSITIONS has no row for {state}")
            items: list[tuple[type[Event], Mapping[int, State]] | None]
            items = [*row_of_state.items()] or [None]
            for index, item in enumerate(items):
                row = nodes.row()
                if index == 0:
                    cell = _cell(nodes.strong(text=state.name))
                    about = " ".join(docs.get(("State", state.name), [])).strip()
                    if about:
                        cell += nodes.paragraph(text=about)
                    cell["morerows"] = len(items) - 1
                    row += cell
                if item is None:
                    row += _cell(nodes.emphasis(text="none"))
                    row += _cell(nodes.Text("every command is out of sequence"))
                else:
                    row += _cell(_command(item[0]))
                    row += _cell(nodes.Text(_outcomes(item[1])))
                body += row
        group += body
        table = nodes.table("", group, classes=["smtp-transitions"])
        return [table]


def setup(app: Sphinx) -> ExtensionMetadata:
    app.add_directive("smtp-transitions", SmtpTransitions)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
