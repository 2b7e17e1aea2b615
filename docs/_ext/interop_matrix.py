"""Render the interoperability matrix and the probe's findings the tests wrote.

``tests/interop.py`` merges one row per passing test against a real peer
into ``docs/interop-matrix.json``; the ``interop-matrix`` directive turns
that file into two tables (our client against real servers, real clients
and MTAs against our server), one row per peer and scenario with the
adapters it passed on and what was negotiated.  The page therefore shows
only what a test has shown, and changes when the tests do.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import ExtensionMetadata

logger = logging.getLogger(__name__)

_COLUMNS = ("Peer", "Scenario", "Our adapters", "TLS", "AUTH", "PIPELINING", "CHUNKING", "SMTPUTF8")
_ORDER = {"sync": 0, "asyncio": 1, "trio": 2}


def _table(rows: list[list[str]], columns: tuple[str, ...] = _COLUMNS) -> nodes.table:
    table = nodes.table(classes=["interop-matrix"])
    group = nodes.tgroup(cols=len(columns))
    table += group
    for _ in columns:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    body = nodes.tbody()
    group += body
    for target, cells in ((head, [list(columns)]), (body, rows)):
        for cells_of_row in cells:
            row = nodes.row()
            for text in cells_of_row:
                entry = nodes.entry()
                entry += nodes.paragraph(text=text)
                row += entry
            target += row
    return table


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


class InteropMatrix(SphinxDirective):
    """``.. interop-matrix:: our client -> peer`` (the direction to show)."""

    required_arguments = 1
    final_argument_whitespace = True
    option_spec = {"file": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        path = Path(self.env.srcdir) / self.options.get("file", "interop-matrix.json")
        self.env.note_dependency(str(path))
        if not path.exists():
            logger.warning("%s is missing: run the tests to write it", path, location=self.get_location())
            return []
        items: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        direction = self.arguments[0]
        grouped: dict[tuple[Any, ...], list[str]] = defaultdict(list)
        for item in items:
            if item["direction"] != direction:
                continue
            key = (
                item["peer"], item["scenario"], item["tls"] or "-", item["auth"] or "-",
                _yes(item["pipelining"]), _yes(item["chunking"]), _yes(item["smtputf8"]),
            )
            grouped[key].append(item["ours"])
        if not grouped:
            logger.warning("no rows for %r in %s", direction, path, location=self.get_location())
            return []
        rows = []
        for key in sorted(grouped):
            peer, scenario, *features = key
            ours = ", ".join(sorted(set(grouped[key]), key=lambda name: _ORDER.get(name, 9)))
            rows.append([peer, scenario, ours, *features])
        return [_table(rows)]


class ProbeResults(SphinxDirective):
    """``.. probe-results::``: the probe's verdicts on the real MTAs, one
    row per attack, from ``docs/probe-peers.json`` (written by
    ``tests/test_probe_peers.py``)."""

    option_spec = {"file": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        path = Path(self.env.srcdir) / self.options.get("file", "probe-peers.json")
        self.env.note_dependency(str(path))
        if not path.exists():
            logger.warning("%s is missing: run the tests to write it", path, location=self.get_location())
            return []
        data: dict[str, dict[str, dict[str, Any]]] = json.loads(path.read_text(encoding="utf-8"))
        peers = sorted(data)
        attacks = sorted(
            {(item["class"], name) for results in data.values() for name, item in results.items()}
        )
        rows = [
            [str(number), name, *(data[peer].get(name, {}).get("verdict", "-") for peer in peers)]
            for number, name in attacks
        ]
        return [_table(rows, ("Class", "Attack", *(peer.capitalize() for peer in peers)))]


def setup(app: Sphinx) -> ExtensionMetadata:
    app.add_directive("interop-matrix", InteropMatrix)
    app.add_directive("probe-results", ProbeResults)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
