"""The interoperability matrix: what each test against a real peer negotiated.

Theory of operation: an interop test calls :func:`record` once its
assertions have passed, naming the peer, which side we played, which of our
adapters ran, and what the session actually negotiated (as observed by our
side, not as configured).  At the end of the test session ``conftest.py``
merges the rows into ``docs/interop-matrix.json`` (keyed by peer, role,
adapter and scenario, so a partial run updates only its own rows) and the
docs render that file as the matrix.  The file is sorted and carries no
timestamps, so it changes only when what was shown to work changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

MATRIX = Path(__file__).resolve().parent.parent / "docs" / "interop-matrix.json"


@dataclass(frozen=True)
class Row:
    """One peer x direction x scenario that passed."""

    #: The peer and its version, e.g. ``"Postfix 3.7.11"``.
    peer: str
    #: ``"our client -> peer"`` or ``"peer -> our server"``.
    direction: str
    #: Our side: ``"sync"``, ``"asyncio"`` or ``"trio"``.
    ours: str
    #: A short name for what the test did, e.g. ``"STARTTLS + AUTH PLAIN"``.
    scenario: str
    #: ``"STARTTLS"``, ``"implicit"`` or ``""``.
    tls: str
    #: The SASL mechanism used, or ``""``.
    auth: str
    pipelining: bool
    chunking: bool
    smtputf8: bool
    #: The pytest node id that showed it.
    test: str

    def key(self) -> tuple[str, str, str, str]:
        """Rows with the same key replace each other."""
        return (self.peer, self.direction, self.ours, self.scenario)


CLIENT = "our client -> peer"
SERVER = "peer -> our server"

_recorded: list[Row] = []


def record(
    *,
    peer: str,
    direction: str,
    ours: str,
    scenario: str,
    test: str,
    tls: str = "",
    auth: str = "",
    pipelining: bool = False,
    chunking: bool = False,
    smtputf8: bool = False,
) -> None:
    """Note that a test against *peer* passed with what it negotiated."""
    if direction not in (CLIENT, SERVER):
        raise ValueError(f"direction must be {CLIENT!r} or {SERVER!r}, not {direction!r}")
    _recorded.append(
        Row(peer, direction, ours, scenario, tls, auth, pipelining, chunking, smtputf8, test)
    )


def write_matrix(path: Path = MATRIX) -> int:
    """Merge this session's rows into *path*; returns the number of rows written."""
    if not _recorded:
        return 0
    rows: dict[tuple[str, str, str, str], Row] = {}
    if path.exists():
        for item in json.loads(path.read_text(encoding="utf-8")):
            row = Row(**item)
            rows[row.key()] = row
    for row in _recorded:
        rows[row.key()] = row
    ordered = [asdict(rows[key]) for key in sorted(rows)]
    text = json.dumps(ordered, indent=1, sort_keys=True) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return len(ordered)
