"""A hostile peer: run every attack class against any SMTP server.

:func:`run_probe` connects to a server over TCP and runs each attack in
:data:`ATTACKS` on a connection of its own: inbound smuggling with every
fake end of data (class 1), STARTTLS injection (3), parser abuse (5), AUTH
abuse (6), resource exhaustion (7), the server's side of downgrade (8) and
abrupt disconnects (9); classes 2 and 4 concern clients and are reported
as not applicable.  Each :class:`AttackResult` says what was sent, what the
server did (its reply codes in order, and how the connection ended) and
whether that is safe, with a one-line reason.

The probe never hangs and never raises for anything the server does:
every wait has a timeout, every attack a deadline, and what it reads is
bounded.  It sends real messages to *rcpt* (``postmaster`` by default)
when the server accepts them: point it at a test server.  See
:doc:`/probe` for how to read its verdicts; ``python -m smtpproto probe``
is the command line.
"""

# Theory of operation
# -------------------
# The attacks live in the private modules, one per family (``_probe_data``:
# classes 1 and 9; ``_probe_commands``: 2, 3, 4, 5 and 8; ``_probe_auth``: 6;
# ``_probe_limits``: 7), on top of ``_probe_wire`` (one bounded raw
# connection, replies read by the core's parser) and ``_probe_session``
# (the well-behaved steps that lead up to an attack).  This module gathers
# them into ATTACKS, runs them one after the other, and collects a report.
# A first connection (greeting and EHLO) checks that there is a server to
# probe at all; when there is not, the attacks are not run one by one into
# the same wall.
from __future__ import annotations

import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._probe_auth import AUTH_ATTACKS
from ._probe_commands import CLIENT_ONLY, DOWNGRADE_ATTACKS, PARSER_ATTACKS, STARTTLS_ATTACKS
from ._probe_data import DISCONNECTS, SMUGGLING
from ._probe_limits import LIMIT_ATTACKS
from ._probe_model import Attack, AttackResult, Verdict
from ._probe_session import ehlo, greet
from ._probe_wire import ProbeTarget, SetupFailed, Wire, describe

__all__ = ["ATTACKS", "Attack", "AttackResult", "ProbeReport", "ProbeTarget", "Verdict", "run_probe"]

#: Every attack the probe knows, in the order of their attack classes.
ATTACKS: tuple[Attack, ...] = tuple(
    sorted(
        (
            *SMUGGLING, *CLIENT_ONLY, *STARTTLS_ATTACKS, *PARSER_ATTACKS, *AUTH_ATTACKS,
            *LIMIT_ATTACKS, *DOWNGRADE_ATTACKS, *DISCONNECTS,
        ),
        key=lambda a: a.attack_class,
    )
)
_BY_NAME = {a.name: a for a in ATTACKS}


@dataclass(frozen=True, kw_only=True)
class ProbeReport:
    """The results of one probe run, in the order the attacks ran."""

    #: The server probed.
    host: str
    #: Its port.
    port: int
    #: Its greeting (code and first line), or None if none was read.
    greeting: str | None
    #: The EHLO keywords it offered in cleartext, with their parameters.
    extensions: tuple[str, ...]
    #: Why the server could not be probed at all (no connection, no
    #: greeting, EHLO refused), or None.  When set, every attack that needs
    #: a connection is inconclusive.
    error: str | None
    #: One result per attack.
    results: tuple[AttackResult, ...]

    @property
    def unsafe(self) -> tuple[AttackResult, ...]:
        """The results whose verdict is :attr:`Verdict.UNSAFE`."""
        return tuple(r for r in self.results if r.verdict is Verdict.UNSAFE)

    def count(self, verdict: Verdict) -> int:
        """How many results have *verdict*."""
        return sum(1 for r in self.results if r.verdict is verdict)

    def summary(self) -> str:
        """One line: how many attacks got each verdict."""
        parts = [f"{self.count(v)} {v.value}" for v in Verdict]
        return f"{len(self.results)} attacks: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "host": self.host,
            "port": self.port,
            "greeting": self.greeting,
            "extensions": list(self.extensions),
            "error": self.error,
            "summary": {v.value: self.count(v) for v in Verdict},
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeReport:
        """The report that :meth:`to_dict` described (``summary`` is derived
        and ignored)."""
        return cls(
            host=str(data["host"]),
            port=int(data["port"]),
            greeting=None if data["greeting"] is None else str(data["greeting"]),
            extensions=tuple(str(e) for e in data["extensions"]),
            error=None if data["error"] is None else str(data["error"]),
            results=tuple(AttackResult.from_dict(r) for r in data["results"]),
        )

    def format_table(self) -> str:
        """A table for people: attack, class, what the server did, verdict,
        reason; headed by the server's greeting and followed by the summary."""
        lines = [f"smtpproto probe of {self.host}:{self.port}"]
        lines.append(f"greeting: {self.greeting or '(none)'}")
        if self.extensions:
            lines.append(f"EHLO: {', '.join(self.extensions)}")
        if self.error:
            lines += [f"could not probe: {self.error}", "", self.summary()]
            return "\n".join(lines) + "\n"
        rows = [("ATTACK", "CLASS", "SERVER DID", "VERDICT", "REASON")]
        for r in self.results:
            did = " ".join(r.server_did) or "-"
            rows.append((r.name, str(r.attack_class), _clip(did, 40), r.verdict.value, r.reason))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines.append("")
        for row in rows:
            cells = [row[i].ljust(widths[i]) for i in range(4)]
            lines.append("  ".join([*cells, row[4]]).rstrip())
        lines.append("")
        lines.append(self.summary())
        return "\n".join(lines) + "\n"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _select(attacks: Iterable[str | Attack] | None) -> tuple[Attack, ...]:
    if attacks is None:
        return ATTACKS
    chosen: list[Attack] = []
    for item in attacks:
        if isinstance(item, Attack):
            chosen.append(item)
        elif item in _BY_NAME:
            chosen.append(_BY_NAME[item])
        else:
            raise ValueError(f"unknown attack {item!r}")
    return tuple(chosen)


def _preflight(target: ProbeTarget) -> tuple[str | None, tuple[str, ...], str | None]:
    """(greeting, extensions, error) from one polite connection."""
    wire = Wire(replace(target, attack_timeout=3 * target.timeout))
    greeting: str | None = None
    try:
        greeting = describe(greet(wire))
        caps = ehlo(wire)
        extensions = tuple(" ".join((k, *v)) for k, v in caps.keywords.items())
        wire.quit()
        return greeting, extensions, None
    except SetupFailed as exc:
        return greeting, (), str(exc)
    finally:
        wire.close()


def run_probe(
    host: str,
    port: int,
    *,
    mail_from: str = "",
    rcpt: str = "postmaster",
    helo: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
    attack_timeout: float | None = None,
    max_upload: int = 64 * 1024 * 1024,
    attacks: Iterable[str | Attack] | None = None,
) -> ProbeReport:
    """Run the attacks (all of :data:`ATTACKS`, or those named in
    *attacks*) against the SMTP server at *host*:*port*.

    *mail_from* and *rcpt* are the envelope of the probe's transactions
    (the null sender and ``postmaster`` by default: every server must take
    both).  *tls_context* is used for STARTTLS (default: the system's CAs,
    the certificate checked against *server_hostname* or *host*).
    *username* and *password* let the probe log in (only over TLS) where
    an attack needs it.  *timeout* bounds every wait for the server,
    *attack_timeout* each attack as a whole (default six times *timeout*),
    *max_upload* the octets of an oversized message.  See
    :class:`ProbeTarget`.

    Raises :exc:`~smtpproto.LocalProtocolError` for an address or EHLO
    name the RFC 5321 grammar refuses, ``ValueError`` for other bad
    arguments or an unknown attack name; never for anything the server
    does.
    """
    if tls_context is None:
        tls_context = ssl.create_default_context()
    options: dict[str, Any] = {} if helo is None else {"helo": helo}
    target = ProbeTarget(
        host=host, port=port, mail_from=mail_from, rcpt=rcpt, tls_context=tls_context,
        server_hostname=server_hostname, username=username, password=password,
        timeout=timeout, attack_timeout=attack_timeout, max_upload=max_upload, **options,
    )
    chosen = _select(attacks)
    greeting, extensions, error = _preflight(target)
    results = []
    for item in chosen:
        if error is not None and item._connects:
            results.append(AttackResult(
                name=item.name, attack_class=item.attack_class, sent=item.sent, setup=(),
                server_did=(), verdict=Verdict.INCONCLUSIVE, reason=f"not run: {error}",
            ))
        else:
            results.append(item.run(target))
    return ProbeReport(
        host=host, port=port, greeting=greeting, extensions=extensions, error=error,
        results=tuple(results),
    )
