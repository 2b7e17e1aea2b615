"""trio: an SMTP client and server on trio streams (the ``trio`` extra).

The same API as :mod:`smtpproto.sync`, with ``await``.  The adapter is a
loop that performs the actions of a flow (:mod:`smtpproto.flows`) on a
trio stream: send and receive each under one cancel scope with a deadline
(an expiry is thrown into the flow as ``TimeoutError``; a read's scope is
also the one a shutdown cancels), wrap the stream in ``trio.SSLStream``,
call (and await) the handler, close.  A broken or closed stream becomes a
``ConnectionError`` (or the ``ssl.SSLError`` behind it).  There is no
protocol logic here.

A peer that closes TLS without a close_notify is an end of file, like the
standard library's ``suppress_ragged_eofs`` (SMTP's own framing shows
whether anything was cut short).  Our own close sends close_notify (RFC
8446 §6.1: "Each party MUST send a close_notify alert before closing its
write side of the connection"), waiting at most ``_CLOSE_WAIT`` seconds for
it to go out before closing the socket anyway.  (trio's ``https_compatible``
mode would do the first but never send close_notify, so the streams are
opened in standard mode and a ragged end of file is translated here.)

A read's deadline is set when the flow's Receive starts a command; a
Receive marked ``continued`` (the rest of the same command line) keeps it,
so ``ServerTimeouts.command`` bounds each command, not each read.

``examples/send_trio.py`` shows it at work (the tests run it).
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import math
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from email.message import Message
from typing import Any, TypeVar

# trio < 0.23 has no py.typed: to mypy its objects are Any.
import trio  # type: ignore[import-untyped, unused-ignore]

from ._server_config import ServerConfig
from .flows.server import adapter_config
from .flows import (
    Call, ClientOptions, ClientSession, Close, Flow, Handler, Receive, Send, SendResult,
    ServerSession, ServerTimeouts, Shutdown, StartTLS, TLSMode, errors, prepare,
)
from .flows.message import DsnOptions, Outgoing
from .sync import default_helo_name

__all__ = ["TrioSMTPClient", "TrioSMTPServer"]

log = logging.getLogger("smtpproto")
T = TypeVar("T")
# Seconds a TLS handshake may take (as in the blocking adapter).
_HANDSHAKE = 30.0
# Seconds the disconnect hook of a cancelled session may take.
_LAST_CALL = 5.0
# Seconds a TLS close may wait for its close_notify to be sent.
_CLOSE_WAIT = 2.0
# accept() failures that mean "out of resources, try again soon".
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_TOO_MANY = b"421 4.3.2 Too many connections, try again later\r\n"


# trio's errors that _standard() translates.
_TRIO_ERRORS = (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError)


def _standard(exc: BaseException, what: str) -> BaseException:
    """trio's stream error *exc* as the standard library's, which flows
    know: ``TimeoutError``, and the ``OSError`` (``ssl.SSLError``...)
    behind a broken stream or else a ``ConnectionError``."""
    if isinstance(exc, trio.TooSlowError):
        return TimeoutError(f"{what} timed out")
    if isinstance(exc.__cause__, OSError):
        return exc.__cause__
    return ConnectionError(str(exc) or "the connection is closed")


@contextlib.contextmanager
def _std_errors(what: str) -> Iterator[None]:
    """Translate trio's stream errors raised in the block (see _standard)."""
    try:
        yield
    except _TRIO_ERRORS as exc:
        raise _standard(exc, what) from None


def _ragged_eof(exc: BaseException) -> bool:
    """Is *exc* (a broken TLS stream) a peer's close without close_notify?"""
    cause = exc.__cause__
    return isinstance(cause, ssl.SSLEOFError) or "UNEXPECTED_EOF_WHILE_READING" in str(cause)


@dataclass(eq=False)
class _Transport:
    """A trio stream and the code that performs flow actions on it."""

    stream: Any
    ssl_context: ssl.SSLContext | None
    server_side: bool = False
    handler: Handler | None = None
    #: Asked before each read: is the server stopping?
    stopping: Callable[[], bool] | None = None
    #: trio time after which every read times out (the session timeout).
    deadline: float = math.inf
    #: trio time at which the command being read times out (set by a
    #: Receive that is not ``continued``).
    read_deadline: float = math.inf
    #: The cancel scope of a read (its deadline is the read's), which a
    #: shutdown may also cancel: then ``interrupted`` is set.
    reading: Any = None
    interrupted: bool = False
    #: The action being performed (a cancelled session looks at it).
    action: object = None

    async def run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    action = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                value, error = None, None
                self.action = action
                try:
                    if type(action) is Call:  # inline: most hooks are plain functions
                        assert self.handler is not None
                        value = getattr(self.handler, action.hook)(*action.args)
                        if inspect.isawaitable(value):
                            value = await value
                    else:
                        value = await self.perform(action)
                except Exception as exc:  # noqa: BLE001 - the flow decides
                    value, error = None, exc
        finally:
            flow.close()  # a cancelled run leaves no suspended flow behind

    async def perform(self, action: object) -> Any:
        if isinstance(action, Call):
            assert self.handler is not None
            result = getattr(self.handler, action.hook)(*action.args)
            return (await result) if inspect.isawaitable(result) else result
        try:
            if isinstance(action, Receive):
                return await self._receive(action)
            if isinstance(action, Send):
                if action.timeout is None:
                    await self.stream.send_all(action.data)
                else:
                    with trio.CancelScope(deadline=trio.current_time() + action.timeout) as scope:
                        await self.stream.send_all(action.data)
                    if scope.cancelled_caught:
                        raise TimeoutError("Send timed out")
            elif isinstance(action, StartTLS):
                await self.start_tls(action.server_hostname)
            elif isinstance(action, Close):
                await self.close()
        except _TRIO_ERRORS as exc:
            raise _standard(exc, type(action).__name__) from None
        return None

    async def _receive(self, action: Receive) -> bytes:
        if not action.continued:
            timeout = math.inf if action.timeout is None else action.timeout
            self.read_deadline = trio.current_time() + timeout
        deadline = min(self.read_deadline, self.deadline)
        if self.stopping is not None and self.stopping():
            raise Shutdown()
        # One scope for the deadline and a shutdown (not two: this runs
        # once per command).
        with trio.CancelScope(deadline=deadline) as self.reading:
            try:
                data: bytes = await self.stream.receive_some(action.size)
                return data
            except trio.BrokenResourceError as exc:
                if _ragged_eof(exc):
                    return b""
                raise
            finally:
                self.reading = None
        if self.interrupted:
            raise Shutdown()
        raise TimeoutError("Receive timed out")

    def interrupt(self) -> None:
        """Throw ``Shutdown`` into the flow if it is waiting for input."""
        if self.reading is not None:
            self.interrupted = True
            self.reading.cancel()

    async def start_tls(self, server_hostname: str | None = None) -> None:
        if self.ssl_context is None:
            raise ssl.SSLError("STARTTLS without an SSL context")
        self.stream = trio.SSLStream(
            self.stream,
            self.ssl_context,
            server_side=self.server_side,
            server_hostname=None if self.server_side else server_hostname,
        )
        with trio.fail_after(_HANDSHAKE):
            await self.stream.do_handshake()

    async def close(self) -> None:
        """Close the stream: TLS with a close_notify when it can go out
        within ``_CLOSE_WAIT`` seconds (shielded, so a cancelled session
        still says goodbye), and then, or else, forcefully; never raises."""
        if isinstance(self.stream, trio.SSLStream):
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_WAIT):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await self.stream.aclose()
        await trio.aclose_forcefully(self.stream)

    def disconnected(self) -> bool:
        """Has the server flow run here called its disconnect hook?  (It is
        the flow's last Call, and Close comes after it.)"""
        action = self.action
        return isinstance(action, Close) or (isinstance(action, Call) and action.hook == "disconnect")


class TrioSMTPClient:
    """An SMTP (or LMTP) client for one connection, on trio.

    ``await connect()`` opens the session (greeting, EHLO, STARTTLS, AUTH),
    ``await send_message()`` sends one message and may be called again,
    and ``await quit()`` ends it; ``async with`` connects and quits.  Give
    *unix_path* to connect to a Unix-domain socket (LMTP often listens on
    one).  Failures are :class:`smtpproto.flows.errors.SMTPError`.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 25,
        *,
        options: ClientOptions | None = None,
        ssl_context: ssl.SSLContext | None = None,
        unix_path: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.unix_path = unix_path
        if options is None:
            options = ClientOptions(helo_name=default_helo_name(), server_hostname=host)
        elif options.server_hostname is None:
            # The certificate is checked against the host connected to.
            options = replace(options, server_hostname=host)
        self.options = options
        needs_tls = options.tls is not TLSMode.NEVER
        self.ssl_context = ssl_context or (ssl.create_default_context() if needs_tls else None)
        self.session = ClientSession(options)
        self._transport: _Transport | None = None

    async def connect(self) -> None:
        """Connect and open the session."""
        where = self.unix_path or f"{self.host}:{self.port}"
        transport = _Transport(None, self.ssl_context)
        try:
            with _std_errors("connect"), trio.fail_after(self.options.timeouts.connect):
                try:
                    if self.unix_path is not None:
                        transport.stream = await trio.open_unix_socket(self.unix_path)
                    else:
                        transport.stream = await trio.open_tcp_stream(self.host, self.port)
                    if self.options.tls is TLSMode.IMPLICIT:
                        await transport.start_tls(self.options.server_hostname)
                except BaseException:
                    if transport.stream is not None:
                        await transport.close()
                    raise
        except TimeoutError:
            raise errors.Timeout(f"could not connect to {where}", step="connect") from None
        except ssl.SSLError as exc:
            raise errors.ProtocolFailure(f"TLS handshake failed: {exc}", step="connect") from None
        except OSError as exc:
            raise errors.Disconnected(f"could not connect to {where}: {exc}", step="connect") from None
        self._transport = transport
        try:
            await self._run(self.session.open())
        except BaseException:
            # The flow ended the session; nothing of it may stay open.
            self._transport = None
            await transport.close()
            raise

    async def _run(self, flow: Flow[T]) -> T:
        if self._transport is None:
            raise RuntimeError("connect() first")
        try:
            return await self._transport.run(flow)
        except errors.SMTPError:
            if self.session.conn.state.name in ("CLOSED", "ERROR"):
                await self._transport.close()
            raise

    async def send_message(
        self,
        message: Message | bytes | Iterable[bytes],
        sender: str | None = None,
        recipients: Iterable[str] | None = None,
        *,
        size: int | None = None,
        eight_bit: bool | None = None,
        smtputf8: bool | None = None,
        requiretls: bool = False,
        dsn: DsnOptions | None = None,
    ) -> SendResult:
        """Send one message; see :func:`smtpproto.flows.prepare` for the
        forms *message* may take.  Raises :class:`smtpproto.flows.errors.SMTPError`."""
        outgoing = prepare(
            message, sender, recipients, size=size, eight_bit=eight_bit,
            smtputf8=smtputf8, requiretls=requiretls, dsn=dsn,
        )
        return await self._run(self.session.send(outgoing))

    async def send_messages(self, messages: Iterable[Outgoing]) -> list[SendResult | errors.SMTPError]:
        """Send *messages* over this connection, pipelined across messages
        when the server offers PIPELINING (one round trip per message); each
        is an :class:`~smtpproto.flows.Outgoing`, as
        :func:`smtpproto.flows.prepare` makes it.

        Returns one outcome per message, in order: its
        :class:`~smtpproto.flows.SendResult`, or the
        :class:`~smtpproto.flows.errors.SMTPError` that refused it or ended
        the session; nothing is raised for a single message.  See
        :meth:`smtpproto.flows.ClientSession.send_many`."""
        return await self._run(self.session.send_many(messages))

    async def quit(self) -> None:
        """Say QUIT and close the connection."""
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                await transport.run(self.session.quit())
            finally:
                await transport.close()

    async def __aenter__(self) -> TrioSMTPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.quit()


class TrioSMTPServer:
    """An SMTP server on trio: one task per connection.

    Run it with ``await nursery.start(server.serve)`` (which returns the
    listening address) and stop it with :meth:`shutdown`.  *ssl_context*
    (a server context with a certificate) enables STARTTLS, or TLS from the
    first byte with ``implicit_tls=True``.  At most *max_connections*
    sessions run at once; others are answered 421.  Handler hooks may be
    plain or ``async`` functions.  It listens on *sock* (a bound, listening
    socket) when given, else on *unix_path* (a Unix-domain socket, removed
    again at the end), else on *host* and *port*.  *session_timeout* bounds
    a whole session in seconds (the client gets 421 4.4.2 at its next read).
    """

    def __init__(
        self,
        handler: Handler | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: ServerConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        max_connections: int = 100,
        timeouts: ServerTimeouts | None = None,
        trusted: Callable[[Any], bool] | None = None,
        sock: socket.socket | None = None,
        unix_path: str | None = None,
        session_timeout: float | None = None,
    ) -> None:
        self.handler = handler if handler is not None else Handler()
        self.config = adapter_config(config, ssl_context is not None, implicit_tls)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        self.max_connections = max_connections
        self.timeouts = timeouts
        self.trusted = trusted
        self.sock = sock
        self.unix_path = unix_path
        self.session_timeout = session_timeout
        self._listener: Any = None
        self._address: Any = None
        self._accepting: Any = None  # the accept loop's cancel scope
        self._ended: Any = None  # a trio.Event set when a session ends
        self._transports: set[_Transport] = set()
        self._stopping = False
        self._grace = 30.0

    @property
    def address(self) -> Any:
        """``(host, port)`` the server listens on (the real port), or the
        Unix socket's path; available once :meth:`serve` has started."""
        if self._address is None:
            raise RuntimeError("serve() has not started")
        return self._address

    def _bind(self) -> socket.socket:
        if self.sock is not None:
            return self.sock
        if self.unix_path is None:
            return socket.create_server((self.host, self.port), backlog=128)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.unix_path)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown`; report the address to
        ``task_status`` once listening (for ``nursery.start``)."""
        own_unix = self.sock is None and self.unix_path is not None
        sock = self._bind()
        try:
            name = sock.getsockname()
            self._address = name if isinstance(name, str) else tuple(name[:2])
            self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        except BaseException:
            sock.close()
            raise
        self._ended = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.address)
                with trio.CancelScope() as self._accepting:
                    while not self._stopping:
                        await self._accept(nursery)
                await trio.aclose_forcefully(self._listener)
                with trio.move_on_after(self._grace):
                    while self._transports:
                        self._ended = trio.Event()
                        await self._ended.wait()
                nursery.cancel_scope.cancel()  # sessions still running after the grace time
        finally:
            await trio.aclose_forcefully(self._listener)
            if own_unix:
                assert self.unix_path is not None
                with contextlib.suppress(OSError):
                    os.unlink(self.unix_path)

    async def _accept(self, nursery: Any) -> None:
        try:
            stream = await self._listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_RETRY:
                raise
            log.error("smtpproto: accept failed: %s", exc)
            await trio.sleep(0.1)
            return
        if len(self._transports) >= self.max_connections:
            nursery.start_soon(self._refuse, stream)
            return
        deadline = math.inf if self.session_timeout is None else trio.current_time() + self.session_timeout
        transport = _Transport(
            stream, self.ssl_context, server_side=True, handler=self.handler,
            stopping=lambda: self._stopping, deadline=deadline,
        )
        self._transports.add(transport)
        nursery.start_soon(self._session, transport)

    async def _refuse(self, stream: Any) -> None:
        if not self.implicit_tls:  # a cleartext line means nothing to a TLS client
            with trio.move_on_after(1.0):
                try:
                    await stream.send_all(_TOO_MANY)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await trio.aclose_forcefully(stream)

    async def _session(self, transport: _Transport) -> None:
        try:
            peer = transport.stream.socket.getpeername()
        except OSError:
            peer = None
        session: ServerSession | None = None
        try:
            if self.implicit_tls:
                await transport.perform(StartTLS())
            session = ServerSession(
                self.handler, self.config, peer=peer, tls=self.implicit_tls,
                trusted=bool(self.trusted and self.trusted(peer)), timeouts=self.timeouts,
            )
            await transport.run(session.run())
        except trio.Cancelled:
            # Cancelled (a shutdown's grace time ran out, or the caller's
            # nursery): the flow is gone, but the handler is promised its
            # disconnect hook, always last.
            if session is not None and not transport.disconnected():
                with trio.CancelScope(shield=True, deadline=trio.current_time() + _LAST_CALL):
                    await self._disconnect(session)
            raise
        except OSError as exc:
            log.debug("smtpproto: session with %s ended: %s", peer, exc)
        except Exception:  # noqa: BLE001 - one broken session must not stop the server
            log.exception("smtpproto: session with %s failed", peer)
        finally:
            await transport.close()
            self._transports.discard(transport)
            self._ended.set()

    async def _disconnect(self, session: ServerSession) -> None:
        """Call the handler's disconnect hook for a cancelled session."""
        try:
            result = self.handler.disconnect(session.session)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - as the flow does with a failing hook
            log.exception("smtpproto: the disconnect hook failed")

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting and give sessions waiting for input 421 (the
        others at their next read); :meth:`serve` returns once they have
        ended, cancelling any still running *timeout* seconds later (their
        handler's disconnect hook is still called).  Call it from the trio
        thread (``trio.from_thread.run_sync`` elsewhere)."""
        self._stopping = True
        self._grace = timeout
        if self._accepting is not None:
            self._accepting.cancel()
        for transport in self._transports:
            transport.interrupt()
