# Theory of operation
# -------------------
# REQUIRETLS (RFC 8689).  A value-less MAIL parameter asking that the
# message travel over TLS on every hop.  RFC 8689 §4.1: the server offers
# it only on a TLS connection, and a MAIL with REQUIRETLS arriving over
# cleartext is refused; since the keyword is not offered then, the server
# core already answers 555 for the unknown parameter.
from __future__ import annotations

from .._events import Mail
from ._base import Extension

__all__ = ["RequireTls", "requires_tls"]


class RequireTls(Extension):
    """REQUIRETLS (RFC 8689), offered only under TLS."""

    keyword = "REQUIRETLS"
    mail_parameters = frozenset({"REQUIRETLS"})
    mail_line_extra = 11


def requires_tls(mail: Mail) -> bool:
    """True when *mail* carries REQUIRETLS."""
    return "REQUIRETLS" in mail.parameters
