"""``python -m smtpproto send``: deliver one message to one server.

The message comes from a file or standard input, with LF or CRLF line
ends (sent as CRLF).  TLS is opportunistic by default (STARTTLS when
offered, the certificate verified; a failed verification aborts and there
is no retry in cleartext); ``--starttls`` requires it, ``--tls`` is
implicit TLS, ``--no-tls`` never uses it.  Credentials are only ever sent
over TLS: ``--user`` makes STARTTLS required.

Exit status: 0 when every recipient accepted the message, 1 on any
permanent failure, 75 when every failure was temporary, 2 for usage
errors.  Standard error gets one line per refused recipient
(``ADDRESS: CODE ENHANCED-CODE text``), or one line naming the step that
failed (``STEP: what happened``), never a traceback for a network or
protocol failure.
"""

from __future__ import annotations

import os
import re
import ssl
import sys
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from .._errors import ProtocolError
from .._events import Mail, Rcpt, Reply
from ..flows import ClientOptions, SendResult, Timeouts, TLSMode, errors
from ..sync import SMTPClient
from .errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, UsageError
from .received import local_hostname
from .transcript import TracedSession, Transcript

__all__ = ["SendSettings", "run_send", "reply_line", "step_line", "read_message", "PASSWORD_VARIABLE"]

#: The environment variable ``send`` reads the password from when
#: ``--password`` is not given (a command line is visible to other users).
PASSWORD_VARIABLE = "SMTPPROTO_PASSWORD"


@dataclass(frozen=True, kw_only=True)
class SendSettings:
    """What ``send`` was asked to do, checked by :meth:`check`."""

    host: str = "localhost"
    port: int | None = None
    unix: str | None = None
    sender: str
    recipients: tuple[str, ...]
    helo: str | None = None
    tls: TLSMode = TLSMode.OPPORTUNISTIC
    cafile: str | None = None
    insecure: bool = False
    user: str | None = None
    password: str | None = None
    lmtp: bool = False
    timeout: float | None = None
    verbose: bool = False
    file: str | None = None

    def check(self) -> None:
        """Raise :class:`UsageError` for options that cannot work."""
        if not self.recipients:
            raise UsageError("at least one --to is needed")
        try:
            Mail(reverse_path=self.sender)
        except ProtocolError as exc:
            raise UsageError(f"--from {self.sender!r}: {exc}") from None
        for recipient in self.recipients:
            try:
                Rcpt(forward_path=recipient)
            except ProtocolError as exc:
                raise UsageError(f"--to {recipient!r}: {exc}") from None
        if self.user is not None and self.tls is TLSMode.NEVER:
            raise UsageError("--user with --no-tls: credentials are never sent without TLS")
        if self.password is not None and self.user is None:
            raise UsageError("--password needs --user")
        if self.tls is TLSMode.NEVER and (self.cafile is not None or self.insecure):
            raise UsageError("--cafile and --insecure need TLS, not --no-tls")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError("--timeout must be positive")
        if self.port is not None and not 0 < self.port < 65536:
            raise UsageError(f"--port {self.port}: not a TCP port")

    def tls_mode(self) -> TLSMode:
        """The TLS policy: with credentials, opportunistic becomes required."""
        if self.user is not None and self.tls is TLSMode.OPPORTUNISTIC:
            return TLSMode.REQUIRED
        return self.tls

    def real_port(self) -> int:
        """The port to connect to: the one given, else 465 for implicit
        TLS, 24 for LMTP and 25 for SMTP."""
        if self.port is not None:
            return self.port
        return 465 if self.tls is TLSMode.IMPLICIT else 24 if self.lmtp else 25

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client context (None without TLS); --cafile replaces the
        system's trust store, --insecure turns verification off."""
        if self.tls_mode() is TLSMode.NEVER:
            return None
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--cafile {self.cafile}: {exc}") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def read_message(path: str | None, stdin: BinaryIO) -> bytes:
    """The message from *path* (``-`` or None: *stdin*), every line end made CRLF."""
    if path is None or path == "-":
        data = stdin.read()
    else:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return re.sub(rb"\r?\n", b"\r\n", data)


def reply_line(address: str, reply: Reply) -> str:
    """``ADDRESS: CODE ENHANCED-CODE text`` (the enhanced code only when the
    server sent one; the lines of a multiline reply joined by spaces)."""
    code = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
    return f"{address}: {code} {' '.join(reply.text)}".rstrip()


def step_line(exc: errors.SMTPError) -> str:
    """``STEP: what happened`` (with the server's reply, when there is one)."""
    text = f"{exc.step or 'send'}: {exc}"
    reply = getattr(exc, "reply", None)
    if isinstance(reply, Reply) and not isinstance(exc, errors.SMTPReplyError):
        code = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
        text += f": {code} {' '.join(reply.text)}".rstrip()
    return text


def _refusals(refused: dict[str, Reply], err: TextIO) -> int:
    for address, reply in refused.items():
        print(reply_line(address, reply), file=err)
    return EXIT_FAILED if any(not reply.is_transient for reply in refused.values()) else EXIT_TEMPFAIL


def _outcome(result: SendResult, err: TextIO) -> int:
    return _refusals(result.refused, err) if result.refused else EXIT_OK


def run_send(
    settings: SendSettings,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: BinaryIO | None = None,
) -> int:
    """Send the message as *settings* say; return the exit status.

    Raises :class:`UsageError` for options that cannot work."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    settings.check()
    password = settings.password
    if settings.user is not None and password is None:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None:
            raise UsageError(f"--user needs --password (or the {PASSWORD_VARIABLE} variable)")
    context = settings.ssl_context()
    content = read_message(settings.file, stdin if stdin is not None else sys.stdin.buffer)
    mode = settings.tls_mode()
    options = ClientOptions(
        helo_name=settings.helo or local_hostname(),
        tls=mode,
        server_hostname=settings.host,
        username=settings.user,
        password=password,
        lmtp=settings.lmtp,
        timeouts=Timeouts() if settings.timeout is None else Timeouts.all(settings.timeout),
    )
    port = settings.real_port()
    client = SMTPClient(settings.host, port, options=options, ssl_context=context, unix_path=settings.unix)
    where = settings.unix or f"{settings.host}:{port}"
    if settings.verbose:
        transcript = Transcript(out, tls=mode is TLSMode.IMPLICIT)
        transcript.connected_to = where
        transcript.note(f"Trying {where}...")
        client.session = TracedSession(options, transcript)
    try:
        client.connect()
        result = client.send_message(content, settings.sender, list(settings.recipients))
        status = _outcome(result, err)
    except errors.RecipientsRefused as exc:
        status = _refusals(exc.replies, err)
    except errors.SMTPError as exc:
        print(step_line(exc), file=err)
        status = EXIT_TEMPFAIL if exc.temporary else EXIT_FAILED
    except (OSError, ProtocolError) as exc:  # not expected: the flows wrap these
        print(f"send: {exc}", file=err)
        status = EXIT_FAILED
    _quit(client)
    return status


def _quit(client: SMTPClient) -> None:
    try:
        client.quit()
    except (errors.SMTPError, OSError, ProtocolError):
        pass  # the message's fate is decided; a failing QUIT changes nothing
