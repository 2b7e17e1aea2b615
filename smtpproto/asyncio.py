"""asyncio: a client and a server on the standard library's event loop.

The adapter is a loop that performs the actions of a flow
(:mod:`smtpproto.flows`) on a connection: send, receive with a timeout,
switch to TLS, call (and await) the handler, close.  There is no protocol
logic here.  The connection is a small :class:`asyncio.BufferedProtocol`
(``asyncio_stream.py``) rather than the streams API so that STARTTLS can
refuse to start when cleartext bytes are already waiting behind the command
(they would otherwise be read as if they had come through TLS, RFC 3207 §6).
On the selector loops a cleartext server accepts and reads its sockets
itself (``asyncio_socket.py``).

``examples/send_asyncio.py`` and ``examples/async_server.py`` show it at
work (the tests run them).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import replace
from email.message import Message
from typing import Any, TypeVar

from .asyncio_socket import _Acceptor, usable
from .asyncio_stream import _CLOSE_WAIT, _TLS_TIMEOUT, _Stream
from ._server_config import ServerConfig
from .flows.server import adapter_config
from .flows import (
    Call, ClientOptions, ClientSession, Close, Flow, Handler, SendResult, ServerSession,
    ServerTimeouts, TLSMode, errors, prepare,
)
from .flows.message import DsnOptions, Outgoing
from .sync import default_helo_name

__all__ = ["AsyncSMTPClient", "AsyncSMTPServer"]

log = logging.getLogger("smtpproto")
T = TypeVar("T")


def _disconnected(action: object) -> bool:
    """Has a server flow that was at *action* called its disconnect hook?
    (It is the flow's last Call, and Close comes after it.)"""
    return isinstance(action, Close) or (isinstance(action, Call) and action.hook == "disconnect")


async def _disconnect(handler: Handler, session: ServerSession) -> None:
    """Call *handler*'s disconnect hook for a session whose flow was
    cancelled, for at most ``_CLOSE_WAIT`` seconds."""
    try:
        async with asyncio.timeout(_CLOSE_WAIT):
            result = handler.disconnect(session.session)
            if inspect.isawaitable(result):
                await result
    except Exception:  # noqa: BLE001 - as the flow does with a failing hook
        log.exception("smtpproto: the disconnect hook failed")


class AsyncSMTPClient:
    """An asyncio SMTP (or LMTP) client for one connection.

    ``await connect()`` opens the session (greeting, EHLO, STARTTLS, AUTH),
    ``await send_message()`` sends one message and may be awaited again, and
    ``await quit()`` ends it; ``async with`` connects and quits.  Give
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
        self._stream: _Stream | None = None

    async def connect(self) -> None:
        """Connect and open the session."""
        loop = asyncio.get_running_loop()
        tls = self.ssl_context if self.options.tls is TLSMode.IMPLICIT else None
        name = self.options.server_hostname if tls else None
        where = self.unix_path or f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.options.timeouts.connect):
                if self.unix_path is not None:
                    _, stream = await loop.create_unix_connection(
                        _Stream, self.unix_path, ssl=tls, server_hostname=name
                    )
                else:
                    _, stream = await loop.create_connection(
                        _Stream, self.host, self.port, ssl=tls, server_hostname=name
                    )
        except TimeoutError:
            raise errors.Timeout(f"could not connect to {where}", step="connect") from None
        except ssl.SSLError as exc:
            raise errors.ProtocolFailure(f"TLS handshake failed: {exc}", step="connect") from None
        except OSError as exc:
            raise errors.Disconnected(f"could not connect to {where}: {exc}", step="connect") from None
        stream.ssl_context = self.ssl_context
        self._stream = stream
        try:
            await self._run(self.session.open())
        except BaseException:
            # The flow ended the session; nothing of it may stay open.
            await stream.close()
            self._stream = None
            raise

    async def _run(self, flow: Flow[T]) -> T:
        if self._stream is None:
            raise RuntimeError("connect() first")
        try:
            return await self._stream.run(flow)
        except errors.SMTPError:
            if self.session.conn.state.name in ("CLOSED", "ERROR"):
                await self._stream.close()
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

    async def send_messages(
        self, messages: Iterable[Outgoing]
    ) -> list[SendResult | errors.SMTPError]:
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
        if self._stream is not None:
            try:
                await self._stream.run(self.session.quit())
            finally:
                await self._stream.close()
                self._stream = None

    async def __aenter__(self) -> AsyncSMTPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.quit()


class AsyncSMTPServer:
    """An asyncio SMTP server: each connection a protocol that runs its
    session from the transport's callbacks (no task per connection).

    *ssl_context* (a server context with a certificate) enables STARTTLS,
    or TLS from the first byte with ``implicit_tls=True``.  At most
    *max_connections* sessions run at once; others are answered 421.
    Handler hooks may be coroutine functions.  *session_timeout* caps a
    whole session (421 when it expires).  *sock* is a listening socket
    made elsewhere (for SO_REUSEPORT workers), *unix_path* a Unix-domain
    socket to create.  :meth:`shutdown` gives open sessions 421 and waits
    for them, so a message whose end of data was answered is never lost.
    ``async with`` starts the server and shuts it down.
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
        self._server: asyncio.Server | None = None
        self._acceptors: list[_Acceptor] = []
        self._sessions: dict[_Stream, ServerSession] = {}
        # Done when the last session has ended after shutdown() began.
        self._drained: asyncio.Future[None] | None = None
        self._on_end = self._ended  # one bound method for every session
        self._stopping = False
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"backlog": 128}
        if self.implicit_tls:
            kwargs.update(ssl=self.ssl_context, ssl_handshake_timeout=_TLS_TIMEOUT)

        accepted = self._accepted  # one bound method for every connection

        def factory() -> _Stream:
            return _Stream(accepted, loop)

        # On the standard library's selector loops a cleartext server
        # accepts and reads its sockets by itself (asyncio_socket.py);
        # asyncio then only binds.
        direct = not self.implicit_tls and usable(loop)
        if direct:
            kwargs["start_serving"] = False
        if self.sock is not None:
            self._server = await loop.create_server(factory, sock=self.sock, **kwargs)
        elif self.unix_path is not None:
            self._server = await loop.create_unix_server(factory, self.unix_path, **kwargs)
        else:
            self._server = await loop.create_server(factory, self.host, self.port, **kwargs)
        if direct:
            self._acceptors = [
                _Acceptor(loop, listener, factory, kwargs["backlog"]) for listener in self._server.sockets
            ]

    @property
    def address(self) -> Any:
        """``(host, port)`` the server listens on (the real port), or the
        Unix socket's path."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("start() first")
        name = self._server.sockets[0].getsockname()
        return tuple(name[:2]) if isinstance(name, tuple) else name

    def _accepted(self, stream: _Stream) -> None:
        assert stream.transport is not None
        if self._stopping or len(self._sessions) >= self.max_connections:
            text = b"Service shutting down" if self._stopping else b"Too many connections, try again later"
            stream.transport.write(b"421 4.3.2 " + text + b"\r\n")
            stream.transport.close()
            return
        peer = stream.transport.get_extra_info("peername")
        try:
            session = ServerSession(
                self.handler, self.config, peer=peer, tls=self.implicit_tls,
                trusted=bool(self.trusted and self.trusted(peer)), timeouts=self.timeouts,
            )
        except Exception:  # noqa: BLE001 - one session's failure must not stop the server
            log.exception("smtpproto: session with %s failed", peer)
            stream.transport.abort()
            return
        stream.ssl_context, stream.server_side, stream.handler = self.ssl_context, True, self.handler
        if self.session_timeout is not None:
            stream.deadline = asyncio.get_running_loop().time() + self.session_timeout
        self._sessions[stream] = session
        stream.start(session.run(), self._on_end)

    def _ended(self, stream: _Stream, result: object, error: BaseException | None) -> None:
        """A session's flow ended (or was ended): log a failure, make sure
        the transport is gone, and count the session out."""
        session = self._sessions.pop(stream, None)
        peer = session.session.peer if session is not None else None
        if stream.transport is not None and not stream.lost and not stream.transport.is_closing():
            stream.transport.abort()
        if self._stopping and not self._sessions and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if isinstance(error, OSError):
            log.debug("smtpproto: session with %s ended: %s", peer, error)
        elif isinstance(error, Exception):
            log.error("smtpproto: session with %s failed", peer, exc_info=error)
        elif error is not None:
            raise error  # KeyboardInterrupt, SystemExit: not ours to swallow

    def _kill(self, stream: _Stream) -> None:
        """End a session that outlived a shutdown's grace time: its flow is
        closed where it stands, but the handler is promised its disconnect
        hook, always last."""
        session = self._sessions.get(stream)
        action = stream.action
        stream.abort_flow()
        if stream.transport is not None and not stream.lost:
            stream.transport.abort()
        if session is None or _disconnected(action):
            self._ended(stream, None, None)
            return

        async def last_rites(session: ServerSession) -> None:
            try:
                await _disconnect(self.handler, session)
            finally:
                self._ended(stream, None, None)

        asyncio.get_running_loop().create_task(last_rites(session))

    async def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` (starting first if needed)."""
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, give open sessions 421, and wait for them (at
        most *timeout* seconds, then they are ended where they stand; the
        handler's disconnect hook is still called for each)."""
        self._stopping = True
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors = []
        if self._server is not None:
            self._server.close()
        if self._sessions:
            self._drained = drained = asyncio.get_running_loop().create_future()
            for stream in list(self._sessions):
                stream.stop()
            if self._sessions:
                await asyncio.wait([drained], timeout=timeout)
            for stream in list(self._sessions):
                self._kill(stream)
            if self._sessions:
                await drained
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    async def __aenter__(self) -> AsyncSMTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
