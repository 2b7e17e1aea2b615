"""Exceptions of the high-level client, each carrying what went wrong.

Every failure the client flow reports is an :class:`SMTPError`.  Those
caused by a server reply carry it (:attr:`SMTPReplyError.reply`); each
says whether it is temporary (:attr:`SMTPError.temporary`: a 4xx reply, a
lost connection, a timeout), so a caller can retry later or give up, and
names the step that failed (:attr:`SMTPError.step`).
"""

from __future__ import annotations

from collections.abc import Mapping

from .._events import Reply

__all__ = [
    "SMTPError",
    "SMTPReplyError",
    "GreetingRefused",
    "HelloRefused",
    "TLSRequired",
    "AuthFailed",
    "SenderRefused",
    "RecipientsRefused",
    "DataRefused",
    "MessageRefused",
    "NotSupported",
    "Disconnected",
    "Timeout",
    "ProtocolFailure",
]


class SMTPError(Exception):
    """Base class of the client flow's failures."""

    #: True when trying again later may succeed (4xx, lost connection).
    temporary: bool = False

    def __init__(self, message: str, *, step: str = "") -> None:
        super().__init__(message)
        #: The step that failed: "connect", "greeting", "EHLO", "STARTTLS",
        #: "AUTH", "MAIL", "RCPT", "DATA", "message"...
        self.step = step


class SMTPReplyError(SMTPError):
    """The server answered with a refusal; :attr:`reply` is its reply."""

    def __init__(self, message: str, reply: Reply, *, step: str = "") -> None:
        detail = " ".join(part for part in (str(reply.code), reply.enhanced, reply.message) if part)
        super().__init__(f"{message}: {detail}", step=step)
        #: The server's reply.
        self.reply = reply
        self.temporary = reply.is_transient


class GreetingRefused(SMTPReplyError):
    """The server's greeting was not 220 (554: service refused)."""


class HelloRefused(SMTPReplyError):
    """EHLO (and the HELO fallback) or LHLO was refused."""


class TLSRequired(SMTPError):
    """TLS was required but STARTTLS was not offered, or was refused
    (RFC 3207 §4.1; the session is closed before AUTH or MAIL)."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message, step="STARTTLS")
        #: The refusal, when the server refused STARTTLS.
        self.reply = reply


class AuthFailed(SMTPError):
    """Authentication failed or was impossible (RFC 4954)."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message, step="AUTH")
        #: The server's refusal, if it sent one.
        self.reply = reply
        self.temporary = reply is not None and reply.is_transient


class SenderRefused(SMTPReplyError):
    """MAIL FROM was refused."""


class RecipientsRefused(SMTPError):
    """Every recipient was refused; :attr:`replies` maps each to its reply."""

    def __init__(self, replies: Mapping[str, Reply]) -> None:
        detail = "; ".join(f"{r}: {reply.code}" for r, reply in replies.items())
        super().__init__(f"every recipient was refused ({detail})", step="RCPT")
        #: Recipient -> its RCPT reply.
        self.replies = dict(replies)
        self.temporary = all(reply.is_transient for reply in replies.values())


class DataRefused(SMTPReplyError):
    """DATA (or a BDAT chunk) was refused before the end of the message."""


class MessageRefused(SMTPReplyError):
    """The message was refused after its end of data (every recipient)."""


class NotSupported(SMTPError):
    """The message needs an extension the server does not offer (8BITMIME,
    SMTPUTF8, REQUIRETLS, AUTH...): nothing is downgraded silently."""


class Disconnected(SMTPError):
    """The connection was lost (a client treats it as 451, RFC 5321 §3.8)."""

    temporary = True


class Timeout(SMTPError):
    """The server did not answer in time (RFC 5321 §4.5.3.2)."""

    temporary = True


class ProtocolFailure(SMTPError):
    """The server broke the protocol (a malformed reply, bytes injected
    after STARTTLS...); the connection is closed."""
