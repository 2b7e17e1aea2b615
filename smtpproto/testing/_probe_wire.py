# Theory of operation
# -------------------
# One connection of the hostile-peer probe (``smtpproto.testing.probe``).
# The probe must send bytes that no well-behaved client core would produce
# (bare LF, NUL, a command pipelined behind STARTTLS, a megabyte without a
# line end), so it does not drive a ``ClientConnection``: it writes raw bytes
# on a plain socket and reads the server's answers with the core's own
# ``ReceiveBuffer`` (bounded lines) and ``ReplyParser`` (RFC 5321 §4.2:
# codes, multiline replies, bounded line count).
#
# The probe must never hang and never crash, whatever the server does:
#
# * every wait is bounded by ``timeout`` and the whole connection by a
#   deadline (``attack_timeout``); an expired wait ends the stream as
#   "timed out";
# * the socket is non-blocking and driven by a selector, so a long write
#   (a flood, a megabyte line) reads the server's replies while it goes:
#   neither side can block the other by not reading;
# * what is read is bounded: reply lines (``MAX_REPLY_LINE``), lines per
#   reply (``MAX_REPLY_LINES``) and octets per connection (``MAX_RECEIVED``);
#   anything that cannot be read as replies ends the stream as "garbage".
#
# TLS is done with ``ssl.MemoryBIO`` over the same plain socket, so the
# selector stays exact (no plaintext hidden inside an ``SSLSocket``) and a
# half-close (shutdown of the TCP write side) works under TLS too.
#
# Everything the server does is appended to ``trace`` in order: each reply
# code, "TLS" after a handshake, and how the stream ended ("closed",
# "reset", "timed out", "garbage: ...").  ``mark()`` splits the trace into
# the setup and what the server did with the attack proper.
from __future__ import annotations

import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field

from .._buffer import LINE_TOO_LONG, ReceiveBuffer
from .._errors import LocalProtocolError, RemoteProtocolError
from .._events import Ehlo, Mail, Quit, Rcpt, Reply
from .._commands import format_command
from .._replies import ReplyParser
from ..sync import default_helo_name

__all__ = [
    "ProbeTarget",
    "Wire",
    "SetupFailed",
    "NotApplicable",
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "MAX_RECEIVED",
    "describe",
    "mail_line",
    "rcpt_line",
]

#: Longest reply line read, CRLF included.  RFC 5321 §4.5.3.1.5 sets 512;
#: real servers exceed it a little, so the probe allows eight times that.
MAX_REPLY_LINE = 4096
#: Most lines in one multiline reply (an EHLO reply has a few dozen).
MAX_REPLY_LINES = 1000
#: Most octets read on one connection (a flood's replies fit easily).
MAX_RECEIVED = 4 * 1024 * 1024
_CHUNK = 65536


class SetupFailed(Exception):
    """The server did not let the probe reach the attack proper (a refused
    recipient, a failed login, no greeting...): the verdict is
    inconclusive."""


class NotApplicable(Exception):
    """The attack does not apply to this server (it does not offer the
    extension the attack abuses, or it concerns clients)."""


@dataclass(frozen=True, kw_only=True)
class ProbeTarget:
    """The server to probe and how to talk to it.

    The addresses and the EHLO name are checked when the target is made
    (``LocalProtocolError`` for one the grammar of RFC 5321 §4.1.2
    refuses), since the probe writes them into its command lines.
    """

    #: Host name or address of the server.
    host: str
    #: TCP port.
    port: int
    #: The name given in EHLO (default: this host's name).
    helo: str = field(default_factory=default_helo_name)
    #: Envelope sender of the probe's transactions; ``""`` is the null
    #: reverse-path ``<>``, which every server accepts (RFC 5321 §4.5.5)
    #: and which never causes a bounce.
    mail_from: str = ""
    #: Envelope recipient of the probe's transactions.  ``postmaster`` must
    #: be accepted by every server (RFC 5321 §4.5.1); messages that the
    #: server accepts are really delivered there.
    rcpt: str = "postmaster"
    #: The context for STARTTLS; None: ``ssl.create_default_context()``
    #: (system CAs, host name checked).
    tls_context: ssl.SSLContext | None = None
    #: The name the certificate is checked against (default: *host*).
    server_hostname: str | None = None
    #: Credentials for the attacks that need a logged-in session (and for
    #: transactions on servers that require AUTH).  PLAIN and LOGIN are
    #: used only under TLS; without TLS only SCRAM-SHA-256 or CRAM-MD5,
    #: which do not reveal the password.
    username: str | None = None
    #: The password of *username*.
    password: str | None = None
    #: Seconds to wait for the server at any one step.
    timeout: float = 10.0
    #: Seconds one attack may take in all (default: six times *timeout*).
    attack_timeout: float | None = None
    #: Most octets of message content one attack uploads (the oversized
    #: message attacks need more than the server's SIZE).
    max_upload: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        # The events check the RFC 5321 grammar (LocalProtocolError).
        checks = (
            ("helo", lambda: Ehlo(domain=self.helo)),
            ("mail_from", lambda: Mail(reverse_path=self.mail_from)),
            ("rcpt", lambda: Rcpt(forward_path=self.rcpt)),
        )
        for name, check in checks:
            try:
                check()
            except LocalProtocolError as exc:
                raise LocalProtocolError(f"{name}: {exc}") from None
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, not {self.port!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout!r}")
        if self.attack_timeout is not None and not self.attack_timeout > 0:
            raise ValueError(f"attack_timeout must be positive, not {self.attack_timeout!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.max_upload < 0:
            raise ValueError(f"max_upload must not be negative, not {self.max_upload!r}")

    @property
    def has_credentials(self) -> bool:
        """True when a user name and password were given."""
        return self.username is not None

    def context(self) -> ssl.SSLContext:
        """The TLS context to use (the default one when none was given)."""
        return self.tls_context if self.tls_context is not None else ssl.create_default_context()



def mail_line(target: ProbeTarget, tail: bytes = b"") -> bytes:
    """``MAIL FROM:<mail_from>`` with *tail* (raw bytes) before the CRLF."""
    return format_command(Mail(reverse_path=target.mail_from))[:-2] + tail + b"\r\n"


def rcpt_line(target: ProbeTarget, tail: bytes = b"") -> bytes:
    """``RCPT TO:<rcpt>`` with *tail* (raw bytes) before the CRLF."""
    return format_command(Rcpt(forward_path=target.rcpt))[:-2] + tail + b"\r\n"


def describe(reply: Reply) -> str:
    """A reply as one short line: code, enhanced code, first text line."""
    parts = [str(reply.code)]
    if reply.enhanced:
        parts.append(reply.enhanced)
    text = reply.text[0].strip()
    if text:
        parts.append(text[:80])
    return " ".join(parts)


class Wire:
    """One connection to the server under test, bounded in every way."""

    def __init__(self, target: ProbeTarget) -> None:
        self.target = target
        limit = target.attack_timeout if target.attack_timeout is not None else 6 * target.timeout
        self.deadline = time.monotonic() + limit
        self.sock: socket.socket | None = None
        self.buffer = ReceiveBuffer()
        self.parser = ReplyParser(MAX_REPLY_LINES)
        #: What the server did, in order (reply codes, "TLS", the end).
        self.trace: list[str] = []
        #: Where the attack proper began in ``trace`` (None: not yet).
        self.marked: int | None = None
        #: How the stream ended, once it has ("closed", "timed out"...).
        self.ended: str | None = None
        #: True once QUIT was sent (a close after it is expected).
        self.quit_sent = False
        #: True when a handshake failed on certificate verification.
        self.tls_untrusted = False
        self._eof: str | None = None  # the end, once the last byte is read
        self._received = 0
        self._selector: selectors.BaseSelector | None = None
        self._ssl: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._handshaking = False

    # -- state ----------------------------------------------------------------

    @property
    def tls(self) -> bool:
        """True once the TLS handshake is complete."""
        return self._ssl is not None and not self._handshaking

    @property
    def gone(self) -> bool:
        """True once the server closed or reset the connection."""
        return self._eof in ("closed", "reset")

    def mark(self) -> None:
        """Note that the attack proper begins now."""
        self.marked = len(self.trace)

    def _end(self, how: str) -> None:
        if self.ended is None:
            self.ended = how
            self.trace.append(how)

    def _wait(self) -> float:
        return min(self.target.timeout, self.deadline - time.monotonic())

    # -- connecting and closing -----------------------------------------------

    def connect(self) -> None:
        """Open the TCP connection (raises :class:`SetupFailed`)."""
        wait = self._wait()
        try:
            sock = socket.create_connection((self.target.host, self.target.port), timeout=max(wait, 0.001))
        except OSError as exc:
            raise SetupFailed(f"could not connect: {exc}") from None
        sock.setblocking(False)
        self.sock = sock
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)

    def reconnect(self) -> None:
        """Close this connection and open a new one; the trace goes on
        (``reconnect`` marks the place)."""
        self.close()
        self.buffer = ReceiveBuffer()
        self.parser = ReplyParser(MAX_REPLY_LINES)
        self.ended = self._eof = self._ssl = None
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.quit_sent = False
        self._received = 0
        self.trace.append("reconnect")
        self.connect()

    def half_close(self) -> None:
        """Shut down the write side (the server reads end of file)."""
        if self.sock is not None and self._eof is None:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._eof = "reset"

    def finish(self, *, limit: int = 1000) -> None:
        """Record the replies and end already received (at most *limit*
        replies), without waiting."""
        for _ in range(limit):
            if self.ended is not None or self.reply(wait=False) is None:
                return

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- raw input and output -------------------------------------------------

    def _select(self, events: int, wait: float) -> int:
        assert self._selector is not None and self.sock is not None
        self._selector.modify(self.sock, events)
        ready = self._selector.select(max(wait, 0))
        return ready[0][1] if ready else 0

    def _read_raw(self) -> None:
        assert self.sock is not None
        try:
            chunk = self.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._eof = self._eof or "reset"
            return
        if not chunk:
            self._eof = self._eof or "closed"
            if self._ssl is not None:
                self._in.write_eof()
                if not self._handshaking:
                    self._decrypt()
            return
        self._received += len(chunk)
        if self._received > MAX_RECEIVED:
            self._eof = self._eof or f"flooded: over {MAX_RECEIVED} octets received"
        if self._ssl is not None:
            self._in.write(chunk)
            if not self._handshaking:
                self._decrypt()
        else:
            self.buffer.feed(chunk)

    def _decrypt(self) -> None:
        assert self._ssl is not None
        while True:
            try:
                data = self._ssl.read(_CHUNK)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                self._eof = self._eof or "closed"
                return
            except ssl.SSLError as exc:
                # A fatal alert is the peer aborting the session (an
                # OpenSSL server sends one when it reads end of file).
                reason = str(exc.reason or exc)
                self._eof = self._eof or ("reset" if "ALERT" in reason else f"garbage: TLS error {reason}")
                return
            if not data:
                return
            self.buffer.feed(data)

    def _wait_readable(self) -> bool:
        """Wait for input and read it; False when the wait expired."""
        wait = self._wait()
        if wait <= 0 or not self._select(selectors.EVENT_READ, wait):
            return False
        self._read_raw()
        return True

    def _transmit(self, data: bytes) -> bool:
        """Write raw *data*, reading what arrives meanwhile."""
        assert self.sock is not None
        view = memoryview(data)
        while view:
            if self._eof is not None:
                return False
            wait = self._wait()
            ready = self._select(selectors.EVENT_READ | selectors.EVENT_WRITE, wait) if wait > 0 else 0
            if not ready:
                self._eof = "timed out (the " + (
                    "server stopped reading)" if wait > 0 else "attack's time is up)"
                )
                return False
            if ready & selectors.EVENT_READ:
                self._read_raw()
            if ready & selectors.EVENT_WRITE and self._eof is None:
                try:
                    sent = self.sock.send(view[:_CHUNK])
                except (BlockingIOError, InterruptedError):
                    continue
                except BrokenPipeError:
                    self._eof = "closed"
                    return False
                except OSError:
                    self._eof = "reset"
                    return False
                view = view[sent:]
        return True

    # -- the SMTP stream ------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Write *data* (encrypted under TLS); False when the server closed,
        reset or stopped reading first."""
        if self.sock is None or self.ended is not None or self._eof is not None:
            return False
        if data[-6:].upper() == b"QUIT\r\n":
            self.quit_sent = True
        if self._ssl is not None:
            try:
                self._ssl.write(data)
            except ssl.SSLError:
                self._eof = "reset"
                return False
            data = self._out.read()
        return self._transmit(data)

    def reply(self, *, wait: bool = True) -> Reply | None:
        """The next reply, or None once the stream ended (the end is
        recorded) or, with ``wait=False``, when no whole reply is here."""
        while self.ended is None:
            if time.monotonic() > self.deadline:
                # A server that never stops talking must not keep the probe.
                self._end("timed out (the attack's time is up)")
                return None
            got = self.buffer.extract_line(MAX_REPLY_LINE)
            if got is LINE_TOO_LONG:
                self._end(f"garbage: a reply line over {MAX_REPLY_LINE} octets")
                return None
            if got is not None:
                try:
                    reply = self.parser.feed(got[0])
                except RemoteProtocolError as exc:
                    self._end(f"garbage: {str(exc)[:80]}")
                    return None
                if reply is not None:
                    self.trace.append(str(reply.code))
                    return reply
                continue
            if self._eof is not None:
                self._end(self._eof)
                return None
            if self.sock is None or not wait:
                return None
            if not self._wait_readable():
                self._end("timed out")
                return None
        return None

    def replies(self, count: int) -> list[Reply]:
        """Up to *count* replies (fewer when the stream ends)."""
        out: list[Reply] = []
        while len(out) < count:
            reply = self.reply()
            if reply is None:
                break
            out.append(reply)
        return out

    def drain(self, *, limit: int = 1000) -> list[Reply]:
        """Replies until a 221 (the answer to QUIT), the end of the stream,
        or *limit* replies (a server that answers more than a thousand
        times to a few commands has shown enough)."""
        out: list[Reply] = []
        while len(out) < limit:
            reply = self.reply()
            if reply is None:
                break
            out.append(reply)
            if reply.code == 221:
                break
        return out

    def quit(self) -> list[Reply]:
        """Send QUIT and return every reply until its 221 or the end."""
        self.send(format_command(Quit()))
        return self.drain()

    def start_tls(self) -> str | None:
        """Run the TLS handshake after a 220 to STARTTLS; returns None on
        success, or what went wrong."""
        if self.sock is None or self._eof is not None:
            return f"the connection ended before the handshake ({self._eof})"
        if len(self.buffer) or self.parser.in_progress:
            return "the server sent more bytes after its 220 to STARTTLS"
        target = self.target
        self._ssl = target.context().wrap_bio(
            self._in, self._out, server_hostname=target.server_hostname or target.host
        )
        self._handshaking = True
        try:
            while True:
                try:
                    self._ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if not self._transmit(self._out.read()):
                        return self._failed(f"TLS handshake: {self._eof}")
                    if self._eof is not None:
                        return self._failed(f"the connection {self._eof} during the TLS handshake")
                    if not self._wait_readable():
                        return self._failed("the TLS handshake timed out")
        except ssl.SSLCertVerificationError as exc:
            self.tls_untrusted = True
            return self._failed(f"the server's certificate is not trusted: {exc.verify_message}")
        except ssl.SSLError as exc:
            return self._failed(f"TLS handshake failed: {exc.reason or exc}")
        finally:
            self._handshaking = False
        self.trace.append("TLS")
        if not self._transmit(self._out.read()):
            return f"after the TLS handshake: {self._eof}"
        self._decrypt()
        return None

    def _failed(self, why: str) -> str:
        """A failed handshake ends the stream; returns *why*."""
        self._eof = self._eof or "TLS handshake failed"
        return why
