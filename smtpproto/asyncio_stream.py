"""The asyncio adapter's connection (internal to :mod:`smtpproto.asyncio`, not API).

One asyncio connection as the performer of a flow's actions (see
``flows/_actions.py``): ``_Stream`` is a small ``asyncio.BufferedProtocol``
that the client and the server of ``asyncio.py`` run their flows on.
There is no task per connection: arriving bytes resume a flow parked at a
``Receive`` and run it inline until it parks again, so a command costs
one trip through the event loop and an idle session holds neither a task
nor a coroutine.  Only an action that must wait runs in a short task that
ends with it: an awaitable hook, a write paused above the transport's
high-water mark, the switch to TLS, a TLS or non-empty close.

A Receive's deadline (the command's, kept across the reads of one
command, RFC 5321 §4.5.3.2, and the session's cap) is watched by the
loop's deadline wheel (a loop timer per twentieth of a second that has
streams due, not one per connection), re-armed lazily.  STARTTLS refuses
to start when cleartext bytes already wait behind the command: they would
otherwise be read as if they had come through TLS (RFC 3207 §6).  Reads
go into one scratch buffer per thread and are copied out at once.  No
protocol logic lives here.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from ._events import Reply
from .asyncio_socket import _SocketTransport
from .flows import Call, Flow, Handler, Receive, Send, Shutdown, StartTLS

__all__: list[str] = []
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
# Ticks per second of the deadline wheel (see _Wheel).
_TICKS = 20
# The context the deadline timers run in: one for all, not a copy of the
# current context per timer (64 octets each, for every idle connection).
# A timer only wakes its connection, and the adapter keeps nothing in
# context variables; a hook the woken flow calls (the disconnect hook after
# a timeout) runs in it, as hooks woken by arriving bytes run in the
# transport's: hooks cannot rely on the context the server started in.
_TIMER_CONTEXT = contextvars.Context()


class _Wheel:
    """The deadlines of one loop's streams, by tick (``1 / _TICKS``
    seconds): the streams due at one tick share one loop timer, made when
    the first of them arrives and cancelled when the last leaves.

    A timer per stream would cost every connection a timer handle, a bound
    method and a heap entry (about 180 octets held while idle); here a
    stream costs a set entry.  A deadline is rounded up to the next tick, so a read times out
    at most ``1 / _TICKS`` seconds late.
    """

    __slots__ = ("loop", "_streams", "_timers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._streams: dict[int, set[_Stream]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, stream: _Stream, until: float) -> int:
        """Wake *stream* at the first tick after the loop time *until*;
        returns that tick."""
        tick = int(until * _TICKS) + 1
        streams = self._streams.get(tick)
        if streams is None:
            streams = self._streams[tick] = set()
            self._timers[tick] = self.loop.call_at(tick / _TICKS, self._fire, tick, context=_TIMER_CONTEXT)
        streams.add(stream)
        return tick

    def remove(self, stream: _Stream, tick: int) -> None:
        """*stream* no longer waits for *tick*."""
        streams = self._streams.get(tick)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[tick]
                self._timers.pop(tick).cancel()

    def _fire(self, tick: int) -> None:
        self._timers.pop(tick, None)
        for stream in self._streams.pop(tick, ()):
            stream._on_timer()


def _wheel(loop: asyncio.AbstractEventLoop) -> _Wheel:
    """The deadline wheel of *loop* (kept per thread, like the scratch
    buffer: a thread runs one loop at a time)."""
    wheel: _Wheel | None = getattr(_local, "wheel", None)
    if wheel is None or wheel.loop is not loop:
        wheel = _local.wheel = _Wheel(loop)
    return wheel


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
    one command, and the session's), watched by the loop's deadline wheel
    and re-armed lazily: the stream stays at the tick it was set for, and
    when that tick comes before the current (later) deadline it takes a
    later tick, so pushing the deadline on costs nothing.
    """

    __slots__ = (
        "transport", "ssl_context", "server_side", "handler", "deadline", "action",
        "_on_connect", "_on_done", "_loop", "_buffer", "_scratch", "_eof", "_stopping", "_paused",
        "_lost", "_error", "_read_deadline", "_waiter", "_wait_until", "_wheel", "_tick",
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
        # This thread's scratch buffer (the loop's thread: a protocol is
        # made and used there).
        self._scratch = _scratch()
        self._eof = self._stopping = self._paused = self._lost = self._stepping = False
        self._error: Exception | None = None
        # The loop time at which the command being read times out.
        self._read_deadline: float | None = None
        # A task's wait (a paused write, the close) and the time it ends.
        self._waiter: asyncio.Future[None] | None = None
        self._wait_until: float | None = None
        # The loop's deadline wheel, and the tick at which it wakes this
        # stream (None when it does not).
        self._wheel = _wheel(self._loop)
        self._tick: int | None = None
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
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        parked = self._parked
        if (
            parked is not None and not self._buffer and nbytes <= parked.size
            and not self._stepping and not self._stopping and self.deadline is None
        ):
            # The usual case: a flow waits for what just came, and nothing
            # was waiting before it.  Hand it over without buffering (what
            # _poll() would do, with nothing else to check).
            self._parked = self._wait_until = None
            self._step(bytes(self._scratch[:nbytes]), None)
            return
        if self._buffer:
            self._buffer += self._scratch[:nbytes]
        else:
            self._buffer = bytearray(self._scratch[:nbytes])
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
        if self._tick is not None:
            self._wheel.remove(self, self._tick)
            self._tick = None
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
        """The wheel's tick for this stream came."""
        self._tick = None
        until = self._wait_until
        if until is None:
            return  # nobody waits: stay unarmed until somebody does
        if self._loop.time() >= until:
            self._wake()
        else:
            self._arm(until)

    def _arm(self, until: float) -> None:
        tick = self._tick
        if tick is not None:
            # Its tick is not later than *until*'s, int(until * _TICKS) + 1:
            # it comes first, or with *until*, and re-arms the stream.
            if tick <= until * _TICKS + 1:
                return
            self._wheel.remove(self, tick)
        self._tick = self._wheel.add(self, until)

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
                # Any: the kind is told by type() below, which mypy does not
                # narrow by, and typing.cast() is a call per action.
                action: Any
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
                        receive: Receive = action
                        now = None
                        if not receive.continued:
                            timeout = receive.timeout
                            if timeout is None:
                                self._read_deadline = None
                            else:
                                now = self._loop.time()
                                self._read_deadline = now + timeout
                        value = self._read_now(receive.size, now)
                        if value is None:
                            self._parked = receive
                            return
                    elif kind is Send:
                        send: Send = action
                        self._write_now(send.data)
                        if self._paused:
                            self._spawn(self._drain(send.timeout))
                            return
                    elif kind is Call:
                        call: Call = action
                        assert self.handler is not None
                        value = getattr(self.handler, call.hook)(*call.args)
                        if value is not None and type(value) is not Reply and inspect.isawaitable(value):
                            self._spawn(value)
                            return
                    elif kind is StartTLS:
                        self._spawn(self.start_tls(action.server_hostname))
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

    def _read_now(self, size: int, now: float | None = None) -> bytes | None:
        """The outcome of the read the flow waits for, if there is one yet:
        bytes, ``b""`` at the end, or an exception (Shutdown, a timeout,
        the connection's error); None while it must wait (the timer is
        armed for its deadline).  *now* is the loop's time if the caller
        just read it."""
        if self._stopping:
            raise Shutdown()
        # The clock is read only when a deadline needs it: bytes that are
        # already here are the command's whatever its own deadline says.
        cap = self.deadline
        if cap is not None:
            if now is None:
                now = self._loop.time()
            if now >= cap:
                raise TimeoutError("the session lasted too long")
        if self._buffer:
            return self._consume(size)
        if self._eof:
            if self._error is not None:
                raise self._error
            return b""
        deadline = self._read_deadline
        if cap is not None:
            deadline = cap if deadline is None else min(deadline, cap)
        if deadline is not None:
            if now is None:
                now = self._loop.time()
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
        if isinstance(self.transport, _SocketTransport):
            # The server's own transport gives its socket to one of the
            # loop's, which loop.start_tls() knows how to wrap.
            self.transport = self.transport.hand_off()
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
