# Theory of operation
# -------------------
# The data of the hostile-peer probe: the ``Verdict`` of one attack, the
# ``AttackResult`` it produces, and ``Attack``, the definition of one attack
# (a name, its attack class of PROTOCOL.md §3, a short description of what
# it sends, a docstring, and a private body that runs it on one ``Wire``).
#
# ``Attack.run`` is where "never crash, never hang" is enforced for every
# attack alike: the body gets a fresh connection with a deadline; the
# exceptions that mean "cannot tell" (``SetupFailed``) or "does not apply"
# (``NotApplicable``) become verdicts, and so does any other exception (a
# probe bug must not hide the other results); the connection is always
# closed.  When an attack that was judged safe ended with the server
# dropping the connection, a fresh connection checks that the server is
# still alive: a server that crashed is not safe.
#
# Results are plain data: ``to_dict`` / ``from_dict`` round-trip through
# JSON, so results can be recorded and compared later.
from __future__ import annotations

import enum
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._probe_wire import NotApplicable, ProbeTarget, SetupFailed, Wire

__all__ = [
    "Verdict",
    "Finding",
    "AttackResult",
    "Attack",
    "attack",
    "offline",
    "safe",
    "unsafe",
    "inconclusive",
    "compact",
]


class Verdict(enum.Enum):
    """What the probe concluded about one attack."""

    #: The server withstood the attack.
    SAFE = "safe"
    #: The server did what the attack class forbids.
    UNSAFE = "unsafe"
    #: The attack does not apply: the server does not offer what it abuses,
    #: or the attack concerns clients.
    NOT_APPLICABLE = "not applicable"
    #: The probe could not tell: the set-up was refused, or the server did
    #: something that proves neither (a timeout where waiting is allowed, a
    #: reply that cannot be read).
    INCONCLUSIVE = "inconclusive"


#: A verdict and its one-line reason.
Finding = tuple[Verdict, str]
Body = Callable[[Wire], Finding]


def safe(reason: str) -> Finding:
    """A safe finding."""
    return Verdict.SAFE, reason


def unsafe(reason: str) -> Finding:
    """An unsafe finding."""
    return Verdict.UNSAFE, reason


def inconclusive(reason: str) -> Finding:
    """An inconclusive finding."""
    return Verdict.INCONCLUSIVE, reason


def compact(trace: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """*trace* with runs of four or more equal entries written ``250x1000``."""
    out: list[str] = []
    index = 0
    while index < len(trace):
        run = 1
        while index + run < len(trace) and trace[index + run] == trace[index]:
            run += 1
        out.extend([f"{trace[index]}x{run}"] if run >= 4 else trace[index : index + run])
        index += run
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class AttackResult:
    """What one attack did and what the probe concluded."""

    #: The attack's name (one of the names in ``ATTACKS``).
    name: str
    #: Its attack class, 1-9, as numbered in the project's protocol notes
    #: (see :doc:`/security`).
    attack_class: int
    #: What the probe sent, in short.
    sent: str
    #: What the server did while the probe set the attack up (reply codes,
    #: ``TLS`` for a handshake).
    setup: tuple[str, ...]
    #: What the server did with the attack: reply codes in order, then how
    #: the connection ended (``closed``, ``reset``, ``timed out``,
    #: ``garbage: ...``); ``250x1000`` is a run of a thousand 250 replies.
    server_did: tuple[str, ...]
    #: The verdict.
    verdict: Verdict
    #: Why, in one line.
    reason: str
    #: How long the attack took, in seconds.
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "name": self.name,
            "attack_class": self.attack_class,
            "sent": self.sent,
            "setup": list(self.setup),
            "server_did": list(self.server_did),
            "verdict": self.verdict.value,
            "reason": self.reason,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackResult:
        """The result that :meth:`to_dict` described."""
        return cls(
            name=str(data["name"]),
            attack_class=int(data["attack_class"]),
            sent=str(data["sent"]),
            setup=tuple(str(item) for item in data["setup"]),
            server_did=tuple(str(item) for item in data["server_did"]),
            verdict=Verdict(data["verdict"]),
            reason=str(data["reason"]),
            seconds=float(data.get("seconds", 0.0)),
        )


def _still_alive(target: ProbeTarget) -> str | None:
    """None when a new connection gets a greeting, else what went wrong."""
    wire = Wire(replace(target, attack_timeout=target.timeout))
    try:
        wire.connect()
        if wire.reply() is None:
            return f"a new connection got no greeting ({wire.ended})"
        wire.quit()
        return None
    except SetupFailed as exc:
        return f"the server stopped accepting connections ({exc})"
    finally:
        wire.close()


def _dropped(wire: Wire) -> bool:
    """True when the server ended the connection before QUIT."""
    ended = wire.ended or ""
    return not wire.quit_sent and (ended in ("closed", "reset") or ended.startswith("timed out"))


@dataclass(frozen=True, kw_only=True)
class Attack:
    """One attack of the probe: what it is, and :meth:`run` to perform it."""

    #: A short unique name, such as ``smuggle-lf-dot-lf``.
    name: str
    #: The attack class, 1-9 (see :doc:`/security`).
    attack_class: int
    #: What the attack sends, in short.
    sent: str
    #: What it checks and how it judges the server (its docstring).
    description: str
    _body: Body = field(repr=False, compare=False)
    _connects: bool = field(default=True, repr=False, compare=False)

    def run(self, target: ProbeTarget) -> AttackResult:
        """Perform the attack against *target* on a connection of its own.

        Never raises for anything the server does; a bounded time (the
        target's ``attack_timeout``, plus one ``timeout`` for the check
        that the server is still alive).
        """
        started = time.monotonic()
        wire = Wire(target)
        try:
            verdict, reason = self._body(wire)
        except NotApplicable as exc:
            verdict, reason = Verdict.NOT_APPLICABLE, str(exc)
        except SetupFailed as exc:
            verdict, reason = Verdict.INCONCLUSIVE, f"set-up failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - one attack's failure must not stop the probe
            verdict, reason = Verdict.INCONCLUSIVE, f"probe error: {type(exc).__name__}: {exc}"
        finally:
            wire.finish()
            wire.close()
        if verdict is Verdict.SAFE and _dropped(wire):
            problem = _still_alive(target)
            if problem is not None:
                verdict, reason = Verdict.UNSAFE, f"{reason}; but then {problem}"
        cut = wire.marked if wire.marked is not None else len(wire.trace)
        return AttackResult(
            name=self.name,
            attack_class=self.attack_class,
            sent=self.sent,
            setup=compact(wire.trace[:cut]),
            server_did=compact(wire.trace[cut:]),
            verdict=verdict,
            reason=reason,
            seconds=time.monotonic() - started,
        )


def attack(name: str, attack_class: int, sent: str) -> Callable[[Body], Attack]:
    """Make an :class:`Attack` of a body function and its docstring."""

    def make(body: Body) -> Attack:
        return Attack(
            name=name, attack_class=attack_class, sent=sent,
            description=inspect.cleandoc(body.__doc__ or ""), _body=body,
        )

    return make


def offline(name: str, attack_class: int, description: str, reason: str) -> Attack:
    """An entry for an attack class that a server probe cannot test."""

    def body(wire: Wire) -> Finding:
        raise NotApplicable(reason)

    return Attack(
        name=name, attack_class=attack_class, sent="nothing", description=description,
        _body=body, _connects=False,
    )
