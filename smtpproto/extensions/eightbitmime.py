# Theory of operation
# -------------------
# 8BITMIME (RFC 6152).  ``BODY=7BIT`` or ``BODY=8BITMIME`` on MAIL; any other
# value is a bad parameter value (501).  BINARYMIME (RFC 3030) is accepted
# only when the CHUNKING extension is enabled and allows it.  A client
# "must not" send 8-bit content without having declared it (RFC 6152 §3),
# which the client core enforces from the MAIL it sent.
from __future__ import annotations

from typing import ClassVar

from .._events import Mail
from .._syntax import GrammarError
from ._base import Extension

__all__ = ["EightBitMime", "body_type"]


class EightBitMime(Extension):
    """8BITMIME (RFC 6152): the ``BODY=`` MAIL parameter."""

    keyword = "8BITMIME"
    mail_parameters = frozenset({"BODY"})
    mail_line_extra = 15
    #: Values of BODY= accepted (upper case).
    body_values: ClassVar[frozenset[str]] = frozenset({"7BIT", "8BITMIME"})

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        if value is None or value.upper() not in cls.body_values:
            raise GrammarError(f"BODY must be 7BIT or 8BITMIME, not {value!r}", 501, "5.5.4")


def body_type(mail: Mail) -> str | None:
    """The upper-cased ``BODY=`` value of *mail*, or None."""
    value = mail.parameters.get("BODY")
    return None if value is None else value.upper()
