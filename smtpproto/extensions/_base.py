# Theory of operation
# -------------------
# One small object per ESMTP extension (RFC 5321 §2.2), in the manner of
# wsproto's extensions.  An extension says:
#
# * the line it adds to the EHLO reply (``ehlo_line``);
# * which MAIL and RCPT parameters it owns, and how long they may make the
#   command line (§4.5.3.1.4: "SMTP extensions may be used to increase this
#   limit");
# * how to check the syntax of those parameters (``check_parameter``, used by
#   both roles: a server answers the ``GrammarError`` it raises, a client
#   refuses to send), and any server policy on a whole MAIL (``check_mail``:
#   SIZE over the limit).
#
# The server core holds the extension objects its configuration enables,
# shared by all its connections (so an extension object holds no session
# state); the client core asks ``owner_of`` which extension a parameter
# needs and refuses to send it unless the server offered that extension.
from __future__ import annotations

from typing import ClassVar

from .._events import Mail, Reply
from .._syntax import GrammarError

__all__ = ["Extension", "Pipelining", "EnhancedStatusCodes", "HelpExtension"]


class Extension:
    """Base class of an ESMTP extension object."""

    #: The EHLO keyword (upper case).
    keyword: ClassVar[str] = ""
    #: MAIL parameters this extension owns (upper case).
    mail_parameters: ClassVar[frozenset[str]] = frozenset()
    #: RCPT parameters this extension owns (upper case).
    rcpt_parameters: ClassVar[frozenset[str]] = frozenset()
    #: Octets this extension may add to a MAIL command line.
    mail_line_extra: ClassVar[int] = 0
    #: Octets this extension may add to a RCPT command line.
    rcpt_line_extra: ClassVar[int] = 0

    def ehlo_line(self) -> str:
        """The line this extension contributes to the EHLO reply.

        A server reads it once per configuration and kind of connection
        (the EHLO reply is built once and shared), so it must not change.
        """
        return self.keyword

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        """Check the syntax of a parameter this extension owns.

        Raises ``GrammarError`` carrying the reply code to answer.
        """
        if value is not None:
            raise GrammarError(f"parameter {name} takes no value", 501, "5.5.4")

    @classmethod
    def requirements(cls, name: str, value: str | None) -> tuple[str, ...]:
        """The EHLO keywords a server must offer before a client may send
        parameter *name* with *value* (the extension's own keyword)."""
        return (cls.keyword,)

    def check_mail(self, mail: Mail) -> Reply | None:
        """Server policy on an accepted-by-syntax MAIL; a refusal or None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Pipelining(Extension):
    """PIPELINING (RFC 2920): commands may be sent in batches."""

    keyword = "PIPELINING"


class EnhancedStatusCodes(Extension):
    """ENHANCEDSTATUSCODES (RFC 2034): replies carry RFC 3463 codes."""

    keyword = "ENHANCEDSTATUSCODES"


class HelpExtension(Extension):
    """HELP advertised in the EHLO reply (RFC 5321 §4.1.1.8)."""

    keyword = "HELP"
