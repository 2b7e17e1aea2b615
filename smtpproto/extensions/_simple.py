# Theory of operation
# -------------------
# Extensions that add a command (or a keyword) but no MAIL/RCPT parameter
# of their own: STARTTLS (RFC 3207), CHUNKING (RFC 3030), BINARYMIME
# (RFC 3030, whose ``BODY=BINARYMIME`` value belongs to 8BITMIME's BODY
# parameter), XCLIENT (Postfix) and LIMITS (RFC 9422).  Each is only the
# line it adds to the EHLO reply; the commands themselves are handled by
# the connection classes.
from __future__ import annotations

from ._base import Extension

__all__ = ["StartTls", "Chunking", "BinaryMime", "XclientExtension", "Limits"]


class StartTls(Extension):
    """STARTTLS (RFC 3207), offered only before TLS is in place."""

    keyword = "STARTTLS"


class Chunking(Extension):
    """CHUNKING (RFC 3030): the BDAT command."""

    keyword = "CHUNKING"


class BinaryMime(Extension):
    """BINARYMIME (RFC 3030): ``BODY=BINARYMIME``, sent with BDAT only."""

    keyword = "BINARYMIME"


class XclientExtension(Extension):
    """XCLIENT (Postfix), offered only to peers the application trusts."""

    keyword = "XCLIENT"

    def ehlo_line(self) -> str:
        return "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"


class Limits(Extension):
    """LIMITS (RFC 9422 §4): advisory limits the client honours."""

    keyword = "LIMITS"

    def __init__(self, rcptmax: int | None = None, mailmax: int | None = None) -> None:
        self.rcptmax = rcptmax
        self.mailmax = mailmax

    def ehlo_line(self) -> str:
        # RFC 9422 §4: limit-name "=" limit-value, separated by SP.
        parts = ["LIMITS"]
        if self.rcptmax is not None:
            parts.append(f"RCPTMAX={self.rcptmax}")
        if self.mailmax is not None:
            parts.append(f"MAILMAX={self.mailmax}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Limits(rcptmax={self.rcptmax}, mailmax={self.mailmax})"
