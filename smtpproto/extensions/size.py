# Theory of operation
# -------------------
# SIZE (RFC 1870).  The server advertises its limit (``SIZE n``, 0 meaning
# no fixed limit); the client declares the message size on MAIL
# (``SIZE=n``).  A declared size over the limit is refused at MAIL time
# with 552 5.3.4 (RFC 1870 §6.2); the real size is enforced during the data
# by the server core, which reads to the end of data and then refuses.
from __future__ import annotations

import re

from .._events import Mail, Reply
from .._replies import MESSAGE_TOO_BIG
from .._syntax import GrammarError, quoted
from ._base import Extension

__all__ = ["Size", "declared_size"]

# RFC 1870 §4: size-value ::= 1*20DIGIT
_SIZE_RE = re.compile(r"[0-9]{1,20}")


class Size(Extension):
    """SIZE (RFC 1870) with the server's limit in octets (0: none)."""

    keyword = "SIZE"
    mail_parameters = frozenset({"SIZE"})
    # RFC 1870 §3: "the maximum length of a MAIL FROM command line is
    # increased by 26 characters by the possible addition of the SIZE keyword
    # and value".
    mail_line_extra = 26

    def __init__(self, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError("the SIZE limit cannot be negative")
        self.limit = limit

    def ehlo_line(self) -> str:
        return f"SIZE {self.limit}"

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        if value is None or _SIZE_RE.fullmatch(value) is None:
            raise GrammarError(f"SIZE needs a decimal number of octets, not {quoted(value)}", 501, "5.5.4")

    def check_mail(self, mail: Mail) -> Reply | None:
        size = declared_size(mail)
        if self.limit and size is not None and size > self.limit:
            return MESSAGE_TOO_BIG
        return None

    def __repr__(self) -> str:
        return f"Size({self.limit})"


def declared_size(mail: Mail) -> int | None:
    """The message size declared with ``SIZE=`` on *mail*, if any."""
    value = mail.parameters.get("SIZE")
    return None if value is None else int(value)
