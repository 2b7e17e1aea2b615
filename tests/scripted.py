"""Scripted peers on real loopback sockets, for the attack tests.

Theory of operation
-------------------
The socket-level attack tests (``test_attacks_server_sockets.py`` and
``test_attacks_client_sockets.py``) need a peer that does exactly what a
hostile or broken one would do, byte for byte, which none of our own
adapters will.  This module holds the two halves:

* :class:`RawClient` speaks raw bytes to one of our servers: it sends
  exactly what it is given (bare CR, NUL, pipelined batches, half a
  command) and reads replies line by line, so a test can compare every
  reply the server sent with what it should have sent.  Every read has a
  socket timeout, so a server that stops answering fails the test instead
  of hanging it.

* :class:`ScriptedServer` plays a server to one of our clients from a
  script run in a thread: bytes to send (a forged reply, a reply bomb, two
  replies in one packet), points at which to wait for the client's next
  lines, a TLS handshake, a hang-up or a reset.  It records every byte the
  client sent (decrypted, after a handshake), so a test can show that
  nothing reached the wire that should not have.  When the script runs out
  it answers QUIT with 221 and anything else with 421, and closes, so a
  client can never wait on it for long.

:func:`run_client` drives one of our three client adapters (blocking,
asyncio, trio) through one session and reports what it returned or raised,
so a test is written once for all three.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import trio  # type: ignore[import-untyped, unused-ignore]

from smtpproto.flows import ClientOptions, SendResult
from smtpproto.sync import SMTPClient

__all__ = [
    "ClientHung",
    "HANGUP",
    "RESET",
    "TLS",
    "Flood",
    "Lines",
    "Mail",
    "Octets",
    "Outcome",
    "RawClient",
    "ScriptedServer",
    "Until",
    "codes",
    "reset_socket",
    "run_client",
]

#: Seconds any single read or write of a scripted peer may block.
IO_TIMEOUT = 10.0


def reset_socket(sock: socket.socket) -> None:
    """Close *sock* with a TCP reset (RST) instead of an orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def codes(replies: Iterable[bytes]) -> list[int]:
    """The reply codes of raw replies (as :meth:`RawClient.reply` returns them)."""
    return [int(reply[:3]) for reply in replies]


# -- a raw client, for the server tests --------------------------------------------


class RawClient:
    """A connection to a server that sends raw bytes and reads raw replies.

    TLS (implicit with *tls*, or :meth:`start_tls` after a 220 to STARTTLS)
    runs over memory BIOs on the plain socket, so a failed handshake leaves
    nothing half-made to close: the socket is the only resource.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = IO_TIMEOUT,
    ) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self._buffer = b""
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        #: True once the server closed the connection (EOF or reset).
        self.closed = False
        if tls is not None:
            # Implicit TLS (RFC 8314): the handshake comes first.
            try:
                self._handshake(tls, "localhost")
            except BaseException:
                self.sock.close()
                raise

    def _handshake(self, context: ssl.SSLContext, hostname: str) -> None:
        tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=hostname)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self._outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionResetError("end of file during the TLS handshake") from None
                self._incoming.write(data)
        self.sock.sendall(self._outgoing.read())
        self._tls = tls

    def send(self, data: bytes) -> None:
        """Write all of *data* in one ``sendall`` (one TLS write under TLS)."""
        if self._tls is None:
            self.sock.sendall(data)
            return
        self._tls.write(data)
        self.sock.sendall(self._outgoing.read())

    def _recv(self) -> bytes:
        if self._tls is None:
            return self.sock.recv(65536)
        while True:
            try:
                return self._tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self._incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def _fill(self) -> bool:
        """Read more; False at end of file (or a reset)."""
        try:
            chunk = self._recv()
        except (ConnectionResetError, ConnectionAbortedError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        return True

    def reply(self) -> bytes:
        """The next whole reply, every line of it; raises ``EOFError`` when
        the server hangs up first (with what it sent of the reply)."""
        lines: list[bytes] = []
        while True:
            while b"\n" not in self._buffer:
                if not self._fill():
                    raise EOFError(b"".join(lines) + self._buffer)
            line, self._buffer = self._buffer.split(b"\n", 1)
            lines.append(line + b"\n")
            # RFC 5321 §4.2.1: the last line of a reply has no "-" after its code.
            if line[3:4] != b"-":
                return b"".join(lines)

    def replies(self, count: int) -> list[bytes]:
        """The next *count* replies."""
        return [self.reply() for _ in range(count)]

    def replies_until_closed(self) -> list[bytes]:
        """Every reply until the server closes the connection; a partial
        reply left at the end is included as it is."""
        out: list[bytes] = []
        while True:
            try:
                out.append(self.reply())
            except EOFError as end:
                if end.args[0]:
                    out.append(end.args[0])
                return out

    def greeting_and_ehlo(self, name: bytes = b"client.example") -> bytes:
        """Read the greeting, say EHLO, and return the EHLO reply (which must be 250)."""
        greeting = self.reply()
        assert greeting.startswith(b"220 "), greeting
        self.send(b"EHLO " + name + b"\r\n")
        reply = self.reply()
        assert reply.startswith(b"250"), reply
        return reply

    def start_tls(self, context: ssl.SSLContext, hostname: str = "localhost") -> None:
        """Do a TLS handshake on the connection (after a 220 to STARTTLS)."""
        assert not self._buffer, "bytes arrived after the 220 to STARTTLS"
        self._handshake(context, hostname)

    def shut_write(self) -> None:
        """Send a FIN: the server reads an end of file, replies may still come."""
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Cut the connection with a TCP reset."""
        reset_socket(self.sock)
        self.closed = True

    def close(self) -> None:
        """Close the socket (FIN)."""
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.sock.close()


# -- a scripted server, for the client tests ---------------------------------------


@dataclass(frozen=True)
class Lines:
    """Script step: wait until *count* more lines (ending in LF) arrived."""

    count: int = 1


@dataclass(frozen=True)
class Until:
    """Script step: wait until *marker* arrived (after the previous wait)."""

    marker: bytes


@dataclass(frozen=True)
class Octets:
    """Script step: wait until *count* more octets arrived."""

    count: int


@dataclass(frozen=True)
class Flood:
    """Script step: send *unit* again and again, *total* octets in all, or
    until the client hangs up (a reply bomb)."""

    unit: bytes
    total: int


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Script step: do a server-side TLS handshake.
TLS = _Marker("TLS")
#: Script step: close the connection (FIN) and end the script.
HANGUP = _Marker("HANGUP")
#: Script step: cut the connection with a TCP reset and end the script.
RESET = _Marker("RESET")

Step = bytes | Lines | Until | Octets | Flood | _Marker


class _ClientGone(Exception):
    """The client closed the connection while the script waited or sent."""


class ScriptedServer:
    """Play a server to one client connection, from *script*.

    Use it as a context manager; ``address`` is where to connect.  On exit
    the thread is joined and any failure of the script (other than the
    client going away) is raised.
    """

    def __init__(self, script: Sequence[Step], *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = list(script)
        self.ssl_context = ssl_context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(IO_TIMEOUT)
        #: Every byte the client sent, in order (decrypted after TLS).
        self.received = bytearray()
        #: Offset in :attr:`received` at which TLS began, if it did.
        self.tls_at: int | None = None
        #: How far the script's waits have read in :attr:`received`.
        self._cursor = 0
        #: True when the client went away (EOF, reset, or a failed write).
        self.client_gone = False
        #: True when the script reached its end and the drain phase began.
        self.script_done = False
        #: Octets the script sent.
        self.sent = 0
        self.error: BaseException | None = None
        self._conn: socket.socket
        self._accepted = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        host, port = self.listener.getsockname()[:2]
        return host, port

    @property
    def cleartext(self) -> bytes:
        """What the client sent before TLS (everything, without TLS)."""
        return bytes(self.received[: self.tls_at] if self.tls_at is not None else self.received)

    @property
    def encrypted(self) -> bytes:
        """What the client sent through TLS."""
        return b"" if self.tls_at is None else bytes(self.received[self.tls_at :])

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._accepted.is_set():
            # The client never connected (it failed before): wake accept().
            self._closing = True
            self.listener.close()
        self._thread.join(IO_TIMEOUT * 3)
        self.listener.close()
        assert not self._thread.is_alive(), "the scripted server did not finish"
        if self.error is not None and kind is None:
            raise self.error

    # -- the thread --------------------------------------------------------

    def _main(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            if not self._closing:
                self.error = exc
            return
        self._accepted.set()
        conn.settimeout(IO_TIMEOUT)
        self._conn = conn
        try:
            if self._play():
                self.script_done = True
                self._drain(self._conn)
        except _ClientGone:
            self.client_gone = True
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self.error = exc
        finally:
            try:
                self._conn.close()
            except OSError:
                pass

    def _play(self) -> bool:
        """Run the script; False when it ended the connection itself."""
        conn = self._conn
        for step in self.script:
            if isinstance(step, bytes):
                self._send(conn, step)
            elif isinstance(step, Flood):
                left = step.total
                while left > 0:
                    unit = step.unit[:left]
                    self._send(conn, unit)
                    left -= len(unit)
            elif isinstance(step, Lines):
                self._wait(conn, lambda: self._lines_after_cursor(step.count))
            elif isinstance(step, Octets):
                wanted = step.count
                self._wait(conn, lambda: self._octets_after_cursor(wanted))
            elif isinstance(step, Until):
                marker = step.marker
                self._wait(conn, lambda: self._find_after_cursor(marker))
            elif step is TLS:
                assert self.ssl_context is not None, "a TLS step needs an ssl_context"
                self.tls_at = len(self.received)
                conn = self._conn = self.ssl_context.wrap_socket(conn, server_side=True)
                conn.settimeout(IO_TIMEOUT)
            elif step is HANGUP:
                conn.close()
                return False
            else:
                assert step is RESET, step
                reset_socket(conn)
                return False
        return True

    def _send(self, conn: socket.socket, data: bytes) -> None:
        try:
            conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise _ClientGone() from None
        self.sent += len(data)

    def _recv(self, conn: socket.socket) -> bytes:
        try:
            return conn.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError):
            return b""
        except ssl.SSLEOFError:
            return b""  # a client that hung up under TLS without close_notify

    def _lines_after_cursor(self, count: int) -> int | None:
        position = self._cursor
        for _ in range(count):
            end = self.received.find(b"\n", position)
            if end < 0:
                return None
            position = end + 1
        return position

    def _octets_after_cursor(self, count: int) -> int | None:
        position = self._cursor + count
        return position if len(self.received) >= position else None

    def _find_after_cursor(self, marker: bytes) -> int | None:
        end = self.received.find(marker, self._cursor)
        return None if end < 0 else end + len(marker)

    def _wait(self, conn: socket.socket, ready: Any) -> None:
        while True:
            position = ready()
            if position is not None:
                self._cursor = position
                return
            data = self._recv(conn)
            if not data:
                raise _ClientGone()
            self.received += data

    def _drain(self, conn: socket.socket) -> None:
        """Record until the client goes; QUIT gets 221, any other line 421."""
        while True:
            end = self.received.find(b"\n", self._cursor)
            if end >= 0:
                line = bytes(self.received[self._cursor : end + 1])
                self._cursor = end + 1
                if line.upper() == b"QUIT\r\n":
                    self._send(conn, b"221 2.0.0 Bye\r\n")
                else:
                    self._send(conn, b"421 4.3.0 End of script\r\n")
                return
            data = self._recv(conn)
            if not data:
                self.client_gone = True
                return
            self.received += data


# -- running our clients ----------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One message for :func:`run_client` to send."""

    content: bytes | list[bytes]
    sender: str = "alice@example.org"
    recipients: tuple[str, ...] = ("bob@example.org",)


@dataclass
class Outcome:
    """What a client session returned and raised."""

    #: One result per message sent successfully.
    results: list[SendResult] = field(default_factory=list)
    #: The exception that ended the session early, if one did.
    error: BaseException | None = None
    #: True when connect() (greeting, EHLO, STARTTLS, AUTH) succeeded.
    connected: bool = False


class ClientHung(Exception):
    """The client adapter did not finish within the guard time of
    :func:`run_client` (it was cancelled)."""


async def _drive(client: Any, mails: Sequence[Mail], outcome: Outcome) -> None:
    """Connect an async client and send *mails*; the first exception is kept
    in *outcome*.  (Not a ``finally``: a cancelled client must not be
    awaited again.)"""
    try:
        await client.connect()
        outcome.connected = True
        for mail in mails:
            result = await client.send_message(mail.content, mail.sender, list(mail.recipients))
            outcome.results.append(result)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        outcome.error = exc
    await client.quit()


def run_client(
    kind: str,
    address: tuple[str, int],
    options: ClientOptions,
    mails: Sequence[Mail] = (),
    *,
    ssl_context: ssl.SSLContext | None = None,
    guard: float = 30.0,
) -> Outcome:
    """Connect with the *kind* client adapter, send *mails*, and quit;
    the first exception stops the session and is returned, not raised.

    An async client still running after *guard* seconds is cancelled and
    reported as :class:`ClientHung` (the blocking client has only its own
    timeouts)."""
    host, port = address
    outcome = Outcome()
    if kind == "sync":
        client = SMTPClient(host, port, options=options, ssl_context=ssl_context)
        try:
            client.connect()
            outcome.connected = True
            for mail in mails:
                outcome.results.append(client.send_message(mail.content, mail.sender, list(mail.recipients)))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome.error = exc
        finally:
            client.quit()
        return outcome
    hung = ClientHung(f"the {kind} client did not finish within {guard} s")
    if kind == "asyncio":
        from smtpproto.asyncio import AsyncSMTPClient

        async def main_asyncio() -> None:
            client = AsyncSMTPClient(host, port, options=options, ssl_context=ssl_context)
            try:
                async with asyncio.timeout(guard):
                    await _drive(client, mails, outcome)
            except TimeoutError:
                outcome.error = hung

        asyncio.run(main_asyncio())
        return outcome
    assert kind == "trio", kind
    from smtpproto.trio import TrioSMTPClient

    async def main_trio() -> None:
        client = TrioSMTPClient(host, port, options=options, ssl_context=ssl_context)
        with trio.move_on_after(guard) as scope:
            await _drive(client, mails, outcome)
        if scope.cancelled_caught:
            outcome.error = hung

    trio.run(main_trio)
    return outcome
