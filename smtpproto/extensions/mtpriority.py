# Theory of operation
# -------------------
# MT-PRIORITY (RFC 6710).  ``MT-PRIORITY=n`` on MAIL with n from -9 to 9
# (§3: priority-value = [ "-" / "+" ] 1DIGIT, "between -9 and 9
# inclusive").  The EHLO keyword may name the server's priority policy.
from __future__ import annotations

import re

from .._events import Mail
from .._syntax import GrammarError, quoted
from ._base import Extension

__all__ = ["MtPriority", "priority"]

_PRIORITY_RE = re.compile(r"[+-]?[0-9]")


class MtPriority(Extension):
    """MT-PRIORITY (RFC 6710) with an optional policy name."""

    keyword = "MT-PRIORITY"
    mail_parameters = frozenset({"MT-PRIORITY"})
    mail_line_extra = 16

    def __init__(self, policy: str | None = None) -> None:
        self.policy = policy

    def ehlo_line(self) -> str:
        return f"MT-PRIORITY {self.policy}" if self.policy else "MT-PRIORITY"

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        if value is None or _PRIORITY_RE.fullmatch(value) is None:
            raise GrammarError(f"MT-PRIORITY must be -9 to 9, not {quoted(value)}", 501, "5.5.4")


def priority(mail: Mail) -> int | None:
    """The MT-PRIORITY of *mail*, or None."""
    value = mail.parameters.get("MT-PRIORITY")
    return None if value is None else int(value)
