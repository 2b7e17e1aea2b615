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
from asyncio import selector_events
import contextvars
import errno
import inspect
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from email.message import Message
from typing import Any, TypeVar, cast

from ._events import Reply
from ._server_config import ServerConfig
from .flows.server import adapter_config
from .flows import (
    Call, ClientOptions, ClientSession, Close, Flow, Handler, Receive, Send, SendResult,
    ServerSession, ServerTimeouts, Shutdown, StartTLS, TLSMode, errors, prepare,
)
from .flows.message import DsnOptions, Outgoing
from .sync import default_helo_name

__all__ = ["AsyncSMTPClient", "AsyncSMTPServer"]

log = logging.getLogger("smtpproto")
T = TypeVar("T")
# Received bytes held before the transport stops reading.
_READ_LIMIT = 262_144
# Seconds for a TLS handshake, and for a closing TLS connection's goodbye.
_TLS_TIMEOUT = 30.0
_CLOSE_WAIT = 5.0
# Octets one read takes (the size of the per-thread scratch buffer).
_READ_SIZE = 65536
_local = threading.local()
# The receive buffer of a connection with nothing unread; never written to
# (buffer_updated replaces it with a buffer of the connection's own).
_EMPTY = bytearray()
# The context the deadline timers run in: one for all, not a copy of the
# current context per timer (64 octets each, for every idle connection).
# A timer only wakes its connection, and the adapter keeps nothing in
# context variables; a hook the woken flow calls (the disconnect hook after
# a timeout) runs in it, as hooks woken by arriving bytes run in the
# transport's: hooks cannot rely on the context the server started in.
_TIMER_CONTEXT = contextvars.Context()


def _scratch() -> memoryview:
    """This thread's receive buffer, shared by its connections: a
    transport reads into it (at most ``_READ_SIZE`` octets a read) and the
    protocol copies the bytes out at once, so no read allocates (a plain
    Protocol gets a fresh ``bytes`` of the transport's maximum read size,
    256 KiB, per read: an mmap, mremap and munmap each time)."""
    try:
        return cast(memoryview, _local.scratch)
    except AttributeError:
        _local.scratch = memoryview(bytearray(_READ_SIZE))
        return cast(memoryview, _local.scratch)


class _Stream(asyncio.BufferedProtocol):
    """One connection as a byte stream that performs a flow's actions.

    The flow is driven from the protocol's callbacks, not from a task: bytes
    arriving (``data_received``) resume a flow parked at a Receive and run
    it inline until it parks again, so a command costs one trip through
    the event loop and an idle session holds no task and no coroutine.  A
    Send the transport takes without pausing, a Receive that finds bytes
    waiting and a hook that is not a coroutine are done inline too.  Only
    what must wait runs in a short task that ends with it: a hook's
    awaitable, a write paused above the high-water mark, the switch to TLS,
    and the close.

    A parked read has a deadline (the command's, kept across the reads of
    one command, and the session's), watched by one timer per connection
    that is re-armed lazily: it stays scheduled at the deadline it was set
    for, and when it fires before the current (later) deadline it
    schedules itself again, so pushing the deadline on costs nothing.
    """

    __slots__ = (
        "transport", "ssl_context", "server_side", "handler", "deadline", "action",
        "_on_connect", "_on_done", "_loop", "_buffer", "_eof", "_stopping", "_paused",
        "_lost", "_error", "_read_deadline", "_waiter", "_wait_until", "_timer",
        "_flow", "_parked", "_task", "_stepping", "_closed",
    )

    def __init__(
        self,
        on_connect: Callable[[_Stream], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
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
        # Called with this stream and the flow's outcome (result,
        # exception) when the flow ends.
        self._on_done: Callable[[_Stream, Any, BaseException | None], None] | None = None
        self._loop = asyncio.get_running_loop() if loop is None else loop
        self._buffer = _EMPTY
        self._eof = self._stopping = self._paused = self._lost = self._stepping = False
        self._error: Exception | None = None
        # The loop time at which the command being read times out.
        self._read_deadline: float | None = None
        # A task's wait (a paused write, the close) and the time it ends.
        self._waiter: asyncio.Future[None] | None = None
        self._wait_until: float | None = None
        # The timer watching the parked read or the wait.
        self._timer: asyncio.TimerHandle | None = None
        # The flow being run, the Receive it is parked at, and the task
        # doing an action that must wait.
        self._flow: Flow[Any] | None = None
        self._parked: Receive | None = None
        self._task: asyncio.Task[None] | None = None
        # Done once the transport is gone (made when somebody waits).
        self._closed: asyncio.Future[None] | None = None

    # -- the transport's callbacks -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any loop's stream transport (uvloop's is not an asyncio.Transport
        # subclass, but has the same methods).
        self.transport = cast(asyncio.Transport, transport)
        if self._on_connect is not None:
            self._on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _scratch()

    def buffer_updated(self, nbytes: int) -> None:
        if self._buffer:
            self._buffer += _scratch()[:nbytes]
        else:
            self._buffer = bytearray(_scratch()[:nbytes])
        if len(self._buffer) >= _READ_LIMIT and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep a TCP connection open to answer; TLS closes on its own.
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._error, self._paused = exc, False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    @property
    def lost(self) -> bool:
        """True once the transport is gone."""
        return self._lost

    def _abandon(self) -> None:
        """Abort the transport and count the connection as lost without
        waiting for ``connection_lost``, which is not coming: after a
        failed ``loop.start_tls()`` the transport's protocol is the TLS
        layer, which passes the loss on only once its handshake succeeded."""
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(None)

    # -- waking and the timer ------------------------------------------------------

    def _wake(self) -> None:
        """Something happened: resume a parked flow, or a task's wait."""
        if self._parked is not None and not self._stepping:
            self._poll()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        until = self._wait_until
        if until is None:
            return  # nobody waits: stay unarmed until somebody does
        if self._loop.time() >= until:
            self._wake()
        else:
            self._arm(until)

    def _arm(self, until: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= until:
                return  # it fires first and re-arms itself for *until*
            timer.cancel()
        self._timer = self._loop.call_at(until, self._on_timer, context=_TIMER_CONTEXT)

    # -- running a flow ------------------------------------------------------------

    def start(
        self, flow: Flow[Any], on_done: Callable[[_Stream, Any, BaseException | None], None]
    ) -> None:
        """Run *flow* from here on; *on_done* gets this stream and the
        flow's result or exception."""
        self._flow, self._on_done = flow, on_done
        self._step(None, None)

    async def run(self, flow: Flow[T]) -> T:
        """Run *flow* to its end and return its result (or raise)."""
        done: asyncio.Future[T] = self._loop.create_future()

        def finished(_: _Stream, result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        self.start(flow, finished)
        try:
            return await done
        finally:
            if self._flow is flow:
                self.abort_flow()  # cancelled: leave no suspended flow behind

    def abort_flow(self) -> None:
        """Stop the flow where it is (closing the generator), and any task."""
        flow, self._flow, self._parked, self._wait_until = self._flow, None, None, None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        if flow is not None:
            flow.close()

    def stop(self) -> None:
        """Throw :class:`Shutdown` at the waiting read, or at the next one."""
        self._stopping = True
        self._wake()

    def _step(self, value: Any, error: BaseException | None) -> None:
        """Resume the flow with *value* (or throw *error*) and perform its
        actions inline until it parks at a Receive, hands an action to a
        task, or ends."""
        flow = self._flow
        if flow is None:
            return
        self._stepping = True
        try:
            while True:
                try:
                    action = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    self._end(stop.value, None)
                    return
                except BaseException as exc:  # noqa: BLE001 - the flow's own failure
                    self._end(None, exc)
                    return
                value, error = None, None
                self.action = action
                kind = type(action)
                try:
                    if kind is Receive:
                        receive = cast(Receive, action)
                        if not receive.continued:
                            timeout = receive.timeout
                            self._read_deadline = None if timeout is None else self._loop.time() + timeout
                        value = self._read_now(receive.size)
                        if value is None:
                            self._parked = receive
                            return
                    elif kind is Send:
                        send = cast(Send, action)
                        self._write_now(send.data)
                        if self._paused:
                            self._spawn(self._drain(send.timeout))
                            return
                    elif kind is Call:
                        call = cast(Call, action)
                        assert self.handler is not None
                        value = getattr(self.handler, call.hook)(*call.args)
                        if value is not None and type(value) is not Reply and inspect.isawaitable(value):
                            self._spawn(value)
                            return
                    elif kind is StartTLS:
                        self._spawn(self.start_tls(cast(StartTLS, action).server_hostname))
                        return
                    elif self._closes_now():
                        assert self.transport is not None
                        self.transport.close()
                    else:
                        self._spawn(self.close())
                        return
                except Exception as exc:  # noqa: BLE001 - the flow decides
                    value, error = None, exc
        finally:
            self._stepping = False

    def _closes_now(self) -> bool:
        """Can a server's Close be done inline?  A cleartext transport with
        nothing left to write closes at once (``connection_lost`` follows
        in the next loop iteration); TLS has its goodbye to say, and a
        full write buffer may never drain: those wait in :meth:`close`."""
        transport = self.transport
        return (
            self.server_side and transport is not None and not self._lost
            and transport.get_write_buffer_size() == 0
            and transport.get_extra_info("sslcontext") is None
        )

    def _end(self, result: Any, error: BaseException | None) -> None:
        self._flow = self._parked = None
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self, result, error)

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        """Perform an action that must wait in a task, then step on."""
        self._task = self._loop.create_task(self._finish(awaitable))

    async def _finish(self, awaitable: Awaitable[Any]) -> None:
        try:
            value, error = await awaitable, None
        except asyncio.CancelledError:
            raise  # abort_flow() cancelled the task and closes the flow
        except Exception as exc:  # noqa: BLE001 - thrown into the flow
            value, error = None, exc
        self._task = None
        self._step(value, error)

    # -- the actions ---------------------------------------------------------------

    def _read_now(self, size: int) -> bytes | None:
        """The outcome of the read the flow waits for, if there is one yet:
        bytes, ``b""`` at the end, or an exception (Shutdown, a timeout,
        the connection's error); None while it must wait (the timer is
        armed for its deadline)."""
        if self._stopping:
            raise Shutdown()
        now = self._loop.time()
        if self.deadline is not None and now >= self.deadline:
            raise TimeoutError("the session lasted too long")
        if self._buffer:
            return self._consume(size)
        if self._eof:
            if self._error is not None:
                raise self._error
            return b""
        deadline = self._read_deadline
        if self.deadline is not None:
            deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        if deadline is not None:
            if now >= deadline:
                raise TimeoutError("no input within the timeout")
            self._arm(deadline)
        self._wait_until = deadline
        return None

    def _poll(self) -> None:
        """A parked flow's read may be done: step on if it is."""
        assert self._parked is not None
        try:
            value = self._read_now(self._parked.size)
        except Exception as exc:  # noqa: BLE001 - thrown into the flow
            self._parked = self._wait_until = None
            self._step(None, exc)
            return
        if value is not None:
            self._parked = self._wait_until = None
            self._step(value, None)

    def _consume(self, size: int) -> bytes:
        buffer = self._buffer
        if size >= len(buffer):
            # All of it (the usual case): an idle connection keeps no
            # buffer of its own, only the shared empty one.
            data, self._buffer = bytes(buffer), _EMPTY
        else:
            data = bytes(buffer[:size])
            del buffer[:size]
        if len(self._buffer) < _READ_LIMIT and self.transport is not None and not self._lost:
            self.transport.resume_reading()
        return data

    def _write_now(self, data: bytes) -> None:
        if self.transport is None or self._lost:
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)
        if self._lost:
            raise ConnectionResetError("the connection was lost while writing")

    async def _wait(self, until: float | None) -> None:
        """Park a task until woken or until the loop time *until*."""
        self._waiter = waiter = self._loop.create_future()
        self._wait_until = until
        if until is not None:
            self._arm(until)
        try:
            await waiter
        finally:
            self._waiter = self._wait_until = None

    async def _drain(self, timeout: float | None) -> None:
        """Wait while the transport is paused (above its high-water mark),
        at most *timeout* seconds."""
        until = None if timeout is None else self._loop.time() + timeout
        while self._paused:
            if until is not None and self._loop.time() >= until:
                raise TimeoutError("the peer did not read within the timeout")
            await self._wait(until)
        if self._lost:
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
        if self.transport is None or self._lost:
            return
        if self._closed is None:
            self._closed = self._loop.create_future()
        closed = self._closed
        self.transport.close()
        await asyncio.wait([closed], timeout=_CLOSE_WAIT)
        if not closed.done():
            self.transport.abort()
            await asyncio.wait([closed], timeout=_CLOSE_WAIT)
        if not closed.done():
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


# accept() failures that mean "out of a resource for now": stop accepting
# for a while rather than spin (as asyncio's own accept loop does).
_ACCEPT_PAUSE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_ACCEPT_PAUSE = 1.0
# Most connections taken per readiness of the listening socket.
_ACCEPT_BATCH = 128


class _Acceptor:
    """Accepts a listening socket's connections and hands each to a
    transport at once.

    asyncio's own accept path runs a task per connection (create the
    transport, await its readiness), about a tenth of the server's CPU when
    every message comes on a new connection.  On the standard library's
    selector loops this reader makes the same transport directly, through
    the loop's transport factory; other loops (uvloop, whose accept path is
    native, and the proactor) keep asyncio's.  It reads a duplicate of the
    listening socket, closed with :meth:`close`; the server closes its own.
    """

    __slots__ = ("_loop", "_sock", "_factory", "_timer")

    @staticmethod
    def usable(loop: asyncio.AbstractEventLoop) -> bool:
        return isinstance(loop, selector_events.BaseSelectorEventLoop) and hasattr(
            loop, "_make_socket_transport"
        )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: Any,
        factory: Callable[[], _Stream],
        backlog: int,
    ) -> None:
        self._loop = loop
        self._sock: socket.socket = listener.dup()
        self._sock.setblocking(False)
        self._sock.listen(backlog)  # as asyncio does when it starts serving
        self._factory = factory
        self._timer: asyncio.TimerHandle | None = None
        loop.add_reader(self._sock.fileno(), self._ready)

    def _ready(self) -> None:
        make = self._loop._make_socket_transport  # type: ignore[attr-defined]
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up before we took it
            except OSError as exc:
                if exc.errno not in _ACCEPT_PAUSE_ERRNOS:
                    raise
                log.error("smtpproto: accept() failed (%s); pausing for %s s", exc, _ACCEPT_PAUSE)
                self._loop.remove_reader(self._sock.fileno())
                self._timer = self._loop.call_later(_ACCEPT_PAUSE, self._resume)
                return
            conn.setblocking(False)
            make(conn, self._factory(), extra={"peername": peer})

    def _resume(self) -> None:
        self._timer = None
        self._loop.add_reader(self._sock.fileno(), self._ready)

    def close(self) -> None:
        """Stop accepting (the connections taken live on)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        elif self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


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
        # accepts by itself (see _Acceptor); asyncio then only binds.
        direct = not self.implicit_tls and _Acceptor.usable(loop)
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
