# Theory of operation
# -------------------
# DELIVERBY (RFC 2852).  ``BY=time;mode[T]`` on MAIL (§4):
#     by-value = by-time ";" by-mode [ by-trace ]
#     by-time  = [ "-" / "+" ] 1*9digit    (seconds)
#     by-mode  = "N" / "R"                 (notify / return)
#     by-trace = "T"
# In R mode the time must be positive (§4: "a by-time of zero or less
# ... with R is an error").  The EHLO keyword may carry the server's
# minimum by-time.
from __future__ import annotations

import re

from .._events import Mail
from .._syntax import GrammarError, quoted
from ._base import Extension

__all__ = ["DeliverBy", "deliver_by"]

_BY_RE = re.compile(r"([+-]?[0-9]{1,9});([NnRr])([Tt]?)")


class DeliverBy(Extension):
    """DELIVERBY (RFC 2852) with an optional minimum by-time in seconds."""

    keyword = "DELIVERBY"
    mail_parameters = frozenset({"BY"})
    mail_line_extra = 17

    def __init__(self, minimum: int | None = None) -> None:
        self.minimum = minimum

    def ehlo_line(self) -> str:
        return f"DELIVERBY {self.minimum}" if self.minimum else "DELIVERBY"

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        match = _BY_RE.fullmatch(value or "")
        if match is None:
            raise GrammarError(f"BY must be time;N|R[T], not {quoted(value)}", 501, "5.5.4")
        if match.group(2).upper() == "R" and int(match.group(1)) <= 0:
            raise GrammarError("BY with mode R needs a positive time", 501, "5.5.4")


def deliver_by(mail: Mail) -> tuple[int, str, bool] | None:
    """``(seconds, mode, trace)`` of *mail*'s BY parameter, or None."""
    value = mail.parameters.get("BY")
    if value is None:
        return None
    match = _BY_RE.fullmatch(value)
    assert match is not None  # checked when the MAIL was accepted or sent
    return int(match.group(1)), match.group(2).upper(), bool(match.group(3))
