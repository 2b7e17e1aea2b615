# Theory of operation
# -------------------
# SMTPUTF8 (RFC 6531).  A value-less MAIL parameter that allows UTF-8 in
# the envelope and headers.  Without it a non-ASCII address is refused
# with 553 5.6.7 (RFC 6531 §3.5, RFC 6533); the check itself lives in the
# server core, which sees both MAIL and RCPT.  Invalid UTF-8 never reaches
# this module: the command line decoder refuses it first (501).
from __future__ import annotations

from .._events import Mail
from ._base import Extension

__all__ = ["SmtpUtf8", "requests_smtputf8"]


class SmtpUtf8(Extension):
    """SMTPUTF8 (RFC 6531): UTF-8 addresses and headers."""

    keyword = "SMTPUTF8"
    mail_parameters = frozenset({"SMTPUTF8"})
    mail_line_extra = 10


def requests_smtputf8(mail: Mail) -> bool:
    """True when *mail* carries the SMTPUTF8 parameter."""
    return "SMTPUTF8" in mail.parameters
