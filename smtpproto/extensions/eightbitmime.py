# Theory of operation
# -------------------
# 8BITMIME (RFC 6152).  ``BODY=7BIT`` or ``BODY=8BITMIME`` on MAIL; any other
# value is a bad parameter value (501).  ``BODY=BINARYMIME`` (RFC 3030 §3)
# is accepted only when the server offers BINARYMIME (with CHUNKING), and a
# client sends it only to a server that offered both.  A client "must not"
# send 8-bit content without having declared it (RFC 6152 §3), which the
# client core enforces from the MAIL it sent.
from __future__ import annotations

from typing import ClassVar

from .._events import Mail, Reply
from .._replies import rejection
from .._syntax import GrammarError, quoted
from ._base import Extension

__all__ = ["EightBitMime", "body_type"]


class EightBitMime(Extension):
    """8BITMIME (RFC 6152): the ``BODY=`` MAIL parameter."""

    keyword = "8BITMIME"
    mail_parameters = frozenset({"BODY"})
    mail_line_extra = 15
    #: Values of BODY= known (upper case).
    body_values: ClassVar[frozenset[str]] = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})

    def __init__(self, binarymime: bool = False) -> None:
        #: Whether ``BODY=BINARYMIME`` is accepted (BINARYMIME offered).
        self.binarymime = binarymime

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        if value is None or value.upper() not in cls.body_values:
            raise GrammarError(
                f"BODY must be 7BIT, 8BITMIME or BINARYMIME, not {quoted(value)}", 501, "5.5.4"
            )

    @classmethod
    def requirements(cls, name: str, value: str | None) -> tuple[str, ...]:
        if (value or "").upper() == "BINARYMIME":
            return ("8BITMIME", "BINARYMIME", "CHUNKING")
        return ("8BITMIME",)

    def check_mail(self, mail: Mail) -> Reply | None:
        if body_type(mail) == "BINARYMIME" and not self.binarymime:
            return rejection(501, "5.5.4", "BODY=BINARYMIME is not offered here")
        return None

    def __repr__(self) -> str:
        return f"EightBitMime(binarymime={self.binarymime})"


def body_type(mail: Mail) -> str | None:
    """The upper-cased ``BODY=`` value of *mail*, or None."""
    value = mail.parameters.get("BODY")
    return None if value is None else value.upper()
