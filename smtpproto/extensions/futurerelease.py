# Theory of operation
# -------------------
# FUTURERELEASE (RFC 4865).  MAIL takes ``HOLDFOR=seconds`` or
# ``HOLDUNTIL=date-time`` (RFC 3339), never both (§3.2).  The EHLO line
# carries the longest interval and the latest date-time the server will
# hold a message for.
from __future__ import annotations

import re

from .._events import Mail, Reply
from .._replies import rejection
from .._syntax import GrammarError, quoted
from ._base import Extension

__all__ = ["FutureRelease", "hold"]

_HOLDFOR_RE = re.compile(r"[0-9]{1,9}")
# RFC 3339 §5.6 date-time, e.g. 2026-11-29T10:00:00Z or with an offset.
_HOLDUNTIL_RE = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]"
    r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)


class FutureRelease(Extension):
    """FUTURERELEASE (RFC 4865) with the server's longest hold."""

    keyword = "FUTURERELEASE"
    mail_parameters = frozenset({"HOLDFOR", "HOLDUNTIL"})
    mail_line_extra = 40

    def __init__(self, max_interval: int = 604800, max_datetime: str = "2099-12-31T23:59:59Z") -> None:
        self.max_interval = max_interval
        self.max_datetime = max_datetime

    def ehlo_line(self) -> str:
        return f"FUTURERELEASE {self.max_interval} {self.max_datetime}"

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        pattern = _HOLDFOR_RE if name == "HOLDFOR" else _HOLDUNTIL_RE
        if value is None or pattern.fullmatch(value) is None:
            raise GrammarError(f"invalid {name} value {quoted(value)}", 501, "5.5.4")

    def check_mail(self, mail: Mail) -> Reply | None:
        if "HOLDFOR" in mail.parameters and "HOLDUNTIL" in mail.parameters:
            return rejection(501, "5.5.4", "HOLDFOR and HOLDUNTIL cannot be used together")
        holdfor = mail.parameters.get("HOLDFOR")
        if holdfor is not None and int(holdfor) > self.max_interval:
            return rejection(501, "5.5.4", f"HOLDFOR longer than {self.max_interval} seconds")
        return None

    def __repr__(self) -> str:
        return f"FutureRelease({self.max_interval}, {self.max_datetime!r})"


def hold(mail: Mail) -> tuple[str, str] | None:
    """``("HOLDFOR", seconds)`` or ``("HOLDUNTIL", date-time)``, or None."""
    for name in ("HOLDFOR", "HOLDUNTIL"):
        value = mail.parameters.get(name)
        if value is not None:
            return name, value
    return None

