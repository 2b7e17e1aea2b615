"""The conformance page's tables, read from ``tests/transcripts/`` at build time.

The transcripts are parsed by the test suite's own parser
(``tests/transcript.py``, loaded from its file: it needs only the standard
library), so the page shows exactly what the tests run and cannot drift
from them.  Every transcript file is a dependency of the page: editing one
rebuilds it.

Directives::

    .. transcript-table:: 1        the transcripts whose first PROTOCOL.md
                                   item is in section 1 (2, 3)
    .. transcript-differences::    each transcript where Postfix answers
                                   otherwise, with the reason
    .. transcript-policy::         the transcripts that run against our
                                   servers only, with the reason
    .. transcript-xfail::          the known failures, with the reason

A transcript the parser refuses is a build error.  Without a ``tests/``
folder beside ``docs/`` (a source distribution, say) each directive says
that the transcripts are not available.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from docutils import nodes  # type: ignore[import-untyped, unused-ignore]
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import ExtensionMetadata

_MODULE = "smtpproto_docs_transcript"


def _runner(srcdir: Path) -> ModuleType | None:
    """``tests/transcript.py`` as a module, or None without a tests/ folder."""
    path = srcdir.parent / "tests" / "transcript.py"
    if not path.is_file():
        return None
    loaded = sys.modules.get(_MODULE)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _paragraph(*parts: nodes.Node | str) -> nodes.paragraph:
    para = nodes.paragraph()
    for part in parts:
        para += nodes.Text(part) if isinstance(part, str) else part
    return para


def _table(headers: list[str], widths: list[int], rows: list[list[nodes.Node]]) -> nodes.table:
    table = nodes.table(classes=["longtable"])
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for header in headers:
        row += nodes.entry("", _paragraph(header))
    head += row
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            row += nodes.entry("", cell)
        body += row
    return table


class _TranscriptDirective(SphinxDirective):
    """Common part: load the transcripts and note them as dependencies."""

    def transcripts(self) -> list[Any] | None:
        runner = _runner(Path(self.env.srcdir))
        if runner is None:
            return None
        directory: Path = runner.DIRECTORY
        self.env.note_dependency(str(runner.__file__))
        for path in sorted(directory.glob("*.txt")):
            self.env.note_dependency(str(path))
        try:
            found: list[Any] = runner.load_all(directory)
        except runner.TranscriptError as exc:
            raise self.error(f"a transcript does not parse: {exc}") from None
        return found

    def unavailable(self) -> list[nodes.Node]:
        return [_paragraph("The transcripts (tests/transcripts/) are not part of this source tree.")]


def _postfix_cell(transcript: Any) -> nodes.paragraph:
    if transcript.xfail.get("postfix"):
        return _paragraph("known failure")
    if not transcript.shared:
        return _paragraph("not run (our policy)")
    if "postfix" in transcript.differs:
        return _paragraph("differs")
    return _paragraph("agrees")


class TranscriptTable(_TranscriptDirective):
    """One table row per transcript of a PROTOCOL.md section."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        section = self.arguments[0]
        if section not in ("1", "2", "3"):
            raise self.error(f"transcript-table takes 1, 2 or 3, not {section!r}")
        transcripts = self.transcripts()
        if transcripts is None:
            return self.unavailable()
        chosen = [t for t in transcripts if t.section == section]
        rows: list[list[nodes.Node]] = []
        for transcript in chosen:
            rows.append(
                [
                    _paragraph(nodes.literal(text=transcript.name)),
                    _paragraph(transcript.title),
                    _paragraph("; ".join(transcript.protocol)),
                    _paragraph("; ".join(transcript.rfc)),
                    _postfix_cell(transcript),
                ]
            )
        headers = ["Transcript", "What it shows", "PROTOCOL.md", "RFC", "Postfix"]
        return [_table(headers, [22, 40, 14, 14, 10], rows)]


class _ReasonList(_TranscriptDirective):
    """A bullet list: transcript name, then the reason it is listed."""

    has_content = False

    def reason(self, transcript: Any) -> str | None:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        transcripts = self.transcripts()
        if transcripts is None:
            return self.unavailable()
        listing = nodes.bullet_list()
        for transcript in transcripts:
            reason = self.reason(transcript)
            if reason is not None:
                item = nodes.list_item()
                item += _paragraph(nodes.literal(text=transcript.name), ": ", reason)
                listing += item
        if not listing.children:
            return [_paragraph("None.")]
        return [listing]


class TranscriptDifferences(_ReasonList):
    """Each transcript where Postfix answers otherwise, and why."""

    def reason(self, transcript: Any) -> str | None:
        reason: str | None = transcript.differs.get("postfix")
        return reason


class TranscriptPolicy(_ReasonList):
    """Each transcript that depends on our configuration, and why."""

    def reason(self, transcript: Any) -> str | None:
        reason: str | None = transcript.policy
        return reason


class TranscriptXfail(_ReasonList):
    """Each known failure, by target, and why."""

    def reason(self, transcript: Any) -> str | None:
        if not transcript.xfail:
            return None
        return "; ".join(f"{target}: {why}" for target, why in sorted(transcript.xfail.items()))


def setup(app: Sphinx) -> ExtensionMetadata:
    app.add_directive("transcript-table", TranscriptTable)
    app.add_directive("transcript-differences", TranscriptDifferences)
    app.add_directive("transcript-policy", TranscriptPolicy)
    app.add_directive("transcript-xfail", TranscriptXfail)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
