"""The handler behind ``serve``: users from a password file, messages to a sink.

:class:`PasswordFile` reads ``user:password`` lines and answers the SASL
verification requests of the server flow: ``CheckPassword`` (PLAIN,
LOGIN), ``LookupPassword`` (CRAM-MD5) and ``LookupScram`` (SCRAM-SHA-256,
whose credentials are derived once per user and process).

:class:`DeliveryHandler` prepends ``Return-Path:`` and ``Received:`` to
each accepted message and hands it to a :mod:`~smtpproto.cli.sinks` sink
before the 250 goes out.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Sequence

from .. import sasl
from .._events import Reply
from ..flows import Envelope, Handler, Session
from .received import trace_fields
from .sinks import Sink

__all__ = ["PasswordFile", "PasswordFileError", "DeliveryHandler", "AUTH_MECHANISMS"]

log = logging.getLogger("smtpproto.cli")

#: The mechanisms ``serve --auth-file`` offers (under TLS only), strongest first.
AUTH_MECHANISMS = ("SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN")


class PasswordFileError(ValueError):
    """The password file cannot be used (the message names the line)."""


def _prepared(text: str) -> str | None:
    try:
        return sasl.saslprep(text)
    except ValueError:
        return None


class PasswordFile:
    """Users and passwords from a file of ``user:password`` lines.

    The password is everything after the first colon.  Empty lines and
    lines starting with ``#`` are ignored.  The file is read once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, encoding="utf-8") as file:
                lines = file.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PasswordFileError(f"cannot read {self.path}: {exc}") from None
        self.passwords: dict[str, str] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, colon, password = line.partition(":")
            if not colon or not user or not password:
                raise PasswordFileError(f"{self.path}, line {number}: expected user:password")
            self.passwords[user] = password
        if not self.passwords:
            raise PasswordFileError(f"{self.path}: no user:password line")
        self._scram: dict[str, sasl.ScramCredentials] = {}
        self._lock = threading.Lock()

    def check(self, authcid: str, password: str, authzid: str | None = None) -> bool:
        """True when *password* is *authcid*'s (compared after SASLprep, in
        constant time) and *authzid*, if any, is *authcid* itself."""
        stored = self.passwords.get(authcid)
        if stored is None or authzid not in (None, "", authcid):
            return False
        given, wanted = _prepared(password), _prepared(stored)
        if given is None or wanted is None:
            return hmac.compare_digest(password.encode("utf-8"), stored.encode("utf-8"))
        return hmac.compare_digest(given.encode("utf-8"), wanted.encode("utf-8"))

    def scram(self, authcid: str) -> sasl.ScramCredentials | None:
        """SCRAM-SHA-256 credentials for *authcid*, or None."""
        password = self.passwords.get(authcid)
        if password is None:
            return None
        with self._lock:
            credentials = self._scram.get(authcid)
            if credentials is None:
                credentials = self._scram[authcid] = sasl.ScramCredentials.from_password(password)
        return credentials

    def answer(self, request: object) -> object:
        """The answer to a SASL verification request (see :meth:`Handler.auth`)."""
        if isinstance(request, sasl.CheckPassword):
            return self.check(request.authcid, request.password, request.authzid)
        if isinstance(request, sasl.LookupPassword):
            return self.passwords.get(request.authcid)
        if isinstance(request, sasl.LookupScram):
            return self.scram(request.authcid)
        return None  # bearer tokens: nobody


class DeliveryHandler(Handler):
    """Stores each accepted message in *sink* with its trace fields.

    *hostname* is the server's name for the ``Received:`` field; *lmtp*
    selects the LMTP protocol names; *passwords* answers AUTH (without it
    every AUTH attempt fails, and ``serve`` does not offer AUTH).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        hostname: str,
        lmtp: bool = False,
        passwords: PasswordFile | None = None,
    ) -> None:
        self.sink = sink
        self.hostname = hostname
        self.lmtp = lmtp
        self.passwords = passwords
        # A discarding sink never sees the content: stream it into nothing.
        self.streaming = sink.discards

    def auth(self, session: Session, request: object) -> object:
        return None if self.passwords is None else self.passwords.answer(request)

    def message(self, session: Session, envelope: Envelope) -> Reply | Sequence[Reply] | None:
        if envelope.content is None:  # streamed: the sink discards
            self.sink.store(envelope.sender, b"")
            return None
        content = envelope.content
        fields = trace_fields(session, envelope, content, hostname=self.hostname, lmtp=self.lmtp)
        where = self.sink.store(envelope.sender, fields + content)
        log.info(
            "accepted %d octets from <%s> for %s: %s",
            len(content), envelope.sender,
            ", ".join(f"<{r}>" for r in envelope.recipient_addresses), where,
        )
        return None
