"""asyncio: a client and a server on the standard library's event loop.

The adapter is a loop that performs the actions of a flow
(:mod:`smtpproto.flows`) on a connection: send, receive with a timeout,
switch to TLS, call (and await) the handler, close.  There is no protocol
logic here.  The connection is a small :class:`asyncio.Protocol` rather than
the streams API so that STARTTLS can refuse to start when cleartext bytes are
already waiting behind the command (they would otherwise be read as if they
had come through TLS, RFC 3207 §6).

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
from typing import Any, TypeVar, cast

from ._server_config import ServerConfig
from .flows.server import adapter_config
from .flows import (
    Call, ClientOptions, ClientSession, Close, Flow, Handler, Receive, Send, SendResult,
    ServerSession, ServerTimeouts, Shutdown, StartTLS, TLSMode, errors, prepare,
)
from .flows.message import DsnOptions
from .sync import default_helo_name

__all__ = ["AsyncSMTPClient", "AsyncSMTPServer"]

log = logging.getLogger("smtpproto")
T = TypeVar("T")
# Received bytes held before the transport stops reading.
_READ_LIMIT = 262_144
# Seconds for a TLS handshake, and for a closing TLS connection's goodbye.
_TLS_TIMEOUT = 30.0
_CLOSE_WAIT = 5.0


class _Stream(asyncio.Protocol):
    """One connection as a byte stream: reads with a timeout (and a session
    deadline), writes with flow control, the switch to TLS, a close that
    waits for the end, and :meth:`run`, which performs a flow's actions.

    Cheap per round trip, since a server does one per command: a read that
    finds bytes waiting, a write the transport takes without pausing and a
    hook that is not a coroutine are done inline, with no coroutine, timer
    or event.  A read that must wait parks on one future; its deadline is
    watched by a single timer per connection that is re-armed lazily: it
    stays scheduled at the deadline it was set for, and when it fires
    before the current (later) deadline it schedules itself again, so
    pushing the deadline on by a command's timeout costs nothing.  A write
    waits (with its timeout) only while the transport is paused above its
    high-water mark."""

    def __init__(self, on_connect: Callable[[_Stream], None] | None = None) -> None:
        self._on_connect = on_connect
        self.transport: asyncio.Transport | None = None
        #: Set by the owner: the context for STARTTLS, which side of the
        #: handshake to play, the target of Call actions, and the loop time
        #: after which every read times out.
        self.ssl_context: ssl.SSLContext | None = None
        self.server_side = False
        self.handler: Handler | None = None
        self.deadline: float | None = None
        #: The action being performed (a cancelled session looks at it).
        self.action: object = None
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._eof = self._stopping = self._paused = False
        self._error: Exception | None = None
        # The loop time at which the command being read times out.
        self._read_deadline: float | None = None
        # The parked read (or paused write) and the deadline it waits for.
        self._waiter: asyncio.Future[None] | None = None
        self._wait_until: float | None = None
        # The timer watching _wait_until, and the time it is set for.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        #: Done once the transport is gone.
        self.lost: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any loop's stream transport (uvloop's is not an asyncio.Transport
        # subclass, but has the same methods).
        self.transport = cast(asyncio.Transport, transport)
        if self._on_connect is not None:
            self._on_connect(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _READ_LIMIT and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep a TCP connection open to answer; TLS closes on its own.
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof, self._error, self._paused = True, exc, False
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.lost.done():
            self.lost.set_result(None)

    def _abandon(self) -> None:
        """Abort the transport and count the connection as lost without
        waiting for ``connection_lost``, which is not coming: after a
        failed ``loop.start_tls()`` the transport's protocol is the TLS
        layer, which passes the loss on only once its handshake succeeded."""
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    # -- waiting with a deadline -------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        until = self._wait_until
        if until is None or self._waiter is None:
            return  # nobody waits: stay unarmed until somebody does
        if self._loop.time() >= until:
            self._wake()
        else:
            self._arm(until)

    def _arm(self, until: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._timer_at <= until:
                return  # it fires first and re-arms itself for *until*
            timer.cancel()
        self._timer_at = until
        self._timer = self._loop.call_at(until, self._on_timer)

    async def _wait(self, until: float | None) -> None:
        """Park until woken (bytes, the end, a resumed write, a stop) or
        until the loop time *until*."""
        self._waiter = waiter = self._loop.create_future()
        self._wait_until = until
        if until is not None:
            self._arm(until)
        try:
            await waiter
        finally:
            self._waiter = self._wait_until = None

    # -- the flows' actions ------------------------------------------------------

    async def run(self, flow: Flow[T]) -> T:
        """Perform *flow*'s actions until it returns; failures are thrown in.

        Send, Call and a Receive that finds bytes waiting are done inline
        (see the class docstring); the rest go through :meth:`_do`."""
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
                    kind = type(action)
                    if kind is Receive and self._buffer and not self._stopping:
                        value = self._take(cast(Receive, action))
                    elif kind is Send:
                        send = cast(Send, action)
                        self._write_now(send.data)
                        if self._paused:
                            await self._drain(send.timeout)
                    elif kind is Call:
                        call = cast(Call, action)
                        assert self.handler is not None
                        value = getattr(self.handler, call.hook)(*call.args)
                        if inspect.isawaitable(value):
                            value = await value
                    else:
                        value = await self._do(action)
                except Exception as exc:  # noqa: BLE001 - the flow decides
                    value, error = None, exc
        finally:
            flow.close()  # a cancelled run leaves no suspended flow behind

    async def _do(self, action: object) -> Any:
        if isinstance(action, Receive):
            return await self.read(action.size, action.timeout, action.continued)
        elif isinstance(action, StartTLS):
            await self.start_tls(action.server_hostname)
        elif isinstance(action, Close):
            await self.close()
        return None

    def stop(self) -> None:
        """Throw :class:`Shutdown` at the waiting read, or at the next one."""
        self._stopping = True
        self._wake()

    def _take(self, action: Receive) -> bytes:
        """A read that finds bytes waiting: no wait, but the same checks
        and the same deadline bookkeeping as :meth:`read`."""
        now = self._loop.time()
        if not action.continued:
            self._read_deadline = None if action.timeout is None else now + action.timeout
        if self.deadline is not None and now >= self.deadline:
            raise TimeoutError("the session lasted too long")
        return self._consume(action.size)

    def _consume(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if len(self._buffer) < _READ_LIMIT and self.transport is not None and not self.lost.done():
            self.transport.resume_reading()
        return data

    async def read(self, size: int, timeout: float | None, continued: bool = False) -> bytes:
        """Read at most *size* bytes (``b""`` at the end) within *timeout*
        seconds, or by the deadline of the read this one *continued* (the
        rest of one command shares its deadline), and the session's."""
        now = self._loop.time()
        if not continued:
            self._read_deadline = None if timeout is None else now + timeout
        deadline = self._read_deadline
        if self.deadline is not None:
            deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        while True:
            if self._stopping:
                raise Shutdown()
            if self.deadline is not None and now >= self.deadline:
                raise TimeoutError("the session lasted too long")
            if self._buffer or self._eof:
                break
            if deadline is not None and now >= deadline:
                raise TimeoutError("no input within the timeout")
            await self._wait(deadline)
            now = self._loop.time()
        if not self._buffer and self._error is not None:
            raise self._error
        return self._consume(size)

    def _write_now(self, data: bytes) -> None:
        if self.transport is None or self.lost.done():
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)
        if self.lost.done():
            raise ConnectionResetError("the connection was lost while writing")

    async def _drain(self, timeout: float | None) -> None:
        """Wait while the transport is paused (above its high-water mark),
        at most *timeout* seconds."""
        until = None if timeout is None else self._loop.time() + timeout
        while self._paused:
            if until is not None and self._loop.time() >= until:
                raise TimeoutError("the peer did not read within the timeout")
            await self._wait(until)
        if self.lost.done():
            raise ConnectionResetError("the connection was lost while writing")

    async def start_tls(self, hostname: str | None) -> None:
        assert self.ssl_context is not None, "the server offers STARTTLS only with a context"
        if self._buffer:
            # Bytes sent before the handshake must not pass for encrypted ones.
            raise ConnectionAbortedError("cleartext data arrived before the TLS handshake")
        assert self.transport is not None
        try:
            transport = await self._loop.start_tls(
                self.transport, self, self.ssl_context, server_side=self.server_side, server_hostname=hostname,
                ssl_handshake_timeout=_TLS_TIMEOUT, ssl_shutdown_timeout=_CLOSE_WAIT,
            )
        except BaseException:
            self._abandon()  # a failed handshake (a reset, say) ends the connection
            raise
        if transport is None:
            self._abandon()
            raise ConnectionAbortedError("the connection closed during the TLS handshake")
        self.transport = transport

    async def close(self) -> None:
        """Close and wait until the transport is gone (aborted if slow);
        never longer than twice ``_CLOSE_WAIT``."""
        if self.transport is None or self.lost.done():
            return
        self.transport.close()
        await asyncio.wait([self.lost], timeout=_CLOSE_WAIT)
        if not self.lost.done():
            self.transport.abort()
            await asyncio.wait([self.lost], timeout=_CLOSE_WAIT)
        if not self.lost.done():
            self.connection_lost(None)  # the transport never reported its end


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
    """An asyncio SMTP server: one task per connection.

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
        self._sessions: dict[_Stream, asyncio.Task[None]] = {}
        self._stopping = False
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"backlog": 128}
        if self.implicit_tls:
            kwargs.update(ssl=self.ssl_context, ssl_handshake_timeout=_TLS_TIMEOUT)

        def factory() -> _Stream:
            return _Stream(self._accepted)

        if self.sock is not None:
            self._server = await loop.create_server(factory, sock=self.sock, **kwargs)
        elif self.unix_path is not None:
            self._server = await loop.create_unix_server(factory, self.unix_path, **kwargs)
        else:
            self._server = await loop.create_server(factory, self.host, self.port, **kwargs)

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
        self._sessions[stream] = asyncio.get_running_loop().create_task(self._serve(stream))

    async def _serve(self, stream: _Stream) -> None:
        assert stream.transport is not None
        peer = stream.transport.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        session: ServerSession | None = None
        try:
            session = ServerSession(
                self.handler, self.config, peer=peer, tls=self.implicit_tls,
                trusted=bool(self.trusted and self.trusted(peer)), timeouts=self.timeouts,
            )
            stream.ssl_context, stream.server_side, stream.handler = self.ssl_context, True, self.handler
            if self.session_timeout is not None:
                stream.deadline = loop.time() + self.session_timeout
            await stream.run(session.run())
        except asyncio.CancelledError:
            # Cancelled (a shutdown's grace time ran out): the flow is gone,
            # but the handler is promised its disconnect hook, always last.
            if session is not None and not _disconnected(stream.action):
                await _disconnect(self.handler, session)
            raise
        except OSError as exc:
            log.debug("smtpproto: session with %s ended: %s", peer, exc)
        except Exception:  # noqa: BLE001 - one session's failure must not stop the server
            log.exception("smtpproto: session with %s failed", peer)
        finally:
            if not stream.lost.done():
                assert stream.transport is not None
                stream.transport.abort()
            del self._sessions[stream]

    async def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` (starting first if needed)."""
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, give open sessions 421, and wait for them (at
        most *timeout* seconds, then they are cancelled; the handler's
        disconnect hook is still called for each)."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for stream in list(self._sessions):
            stream.stop()
        tasks = list(self._sessions.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    async def __aenter__(self) -> AsyncSMTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
