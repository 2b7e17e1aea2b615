"""The asyncio server's own socket path (internal to :mod:`smtpproto.asyncio`).

On the standard library's selector loops a cleartext server neither
accepts nor moves bytes through asyncio's server and transport classes:

* ``_Acceptor`` reads the listening socket and takes up to
  ``_ACCEPT_BATCH`` connections per readiness.  asyncio's accept path runs
  a task per connection (create the transport, await its readiness).
* ``_SocketTransport`` is each accepted connection's transport: a reader
  that receives straight into the stream's scratch buffer, a ``send()``
  per write with a buffer only for what the kernel did not take, and the
  transport interface that ``_Stream`` uses.  asyncio's selector transport
  does the same, but it also keeps an attribute dictionary, the local
  address, a weak reference in the loop's table and two scheduled
  callbacks per connection: about a fifth of an idle session's memory
  and a tenth of a short session's instructions.

STARTTLS hands the socket to one of the loop's own transports
(:meth:`_SocketTransport.hand_off`) and upgrades that with
``loop.start_tls()``, so TLS is asyncio's, as on every other path.  Other
loops (uvloop, whose accept path is native, and the proactor) and TLS from
the first byte keep asyncio's server.  No protocol logic lives here.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import sys
from asyncio import selector_events
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .asyncio_stream import _Stream

__all__: list[str] = []
log = logging.getLogger("smtpproto")

# accept() failures that mean "out of a resource for now": stop accepting
# for a while rather than spin (as asyncio's own accept loop does).
_ACCEPT_PAUSE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_ACCEPT_PAUSE = 1.0
# Most connections taken per readiness of the listening socket.
_ACCEPT_BATCH = 128
# Unsent octets above which the stream is told to stop writing, and below
# which it may write again (asyncio's defaults).
_HIGH_WATER = 65536
_LOW_WATER = 16384


def usable(loop: asyncio.AbstractEventLoop) -> bool:
    """Can this loop run the server's own socket path?"""
    return isinstance(loop, selector_events.BaseSelectorEventLoop) and all(
        hasattr(loop, name)
        for name in ("_make_socket_transport", "_add_reader", "_remove_reader", "_add_writer", "_remove_writer")
    )


class _Acceptor:
    """Accepts a listening socket's connections, each onto a
    :class:`_SocketTransport` and a stream from *factory*.

    It reads a duplicate of the listening socket, closed with
    :meth:`close`; the server closes its own.
    """

    __slots__ = ("_loop", "_sock", "_factory", "_timer", "_nodelay", "_new_socket")

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
        # Replies are small and each waits for the next command: Nagle's
        # algorithm would hold them back (asyncio sets TCP_NODELAY too).
        # Linux copies it from the listening socket to those accepted;
        # elsewhere each accepted socket gets it.
        self._nodelay = False
        if self._sock.family in (socket.AF_INET, socket.AF_INET6):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._nodelay = not sys.platform.startswith("linux")
        # socket.accept() without converting the family and type to enums
        # for every connection.
        self._new_socket = functools.partial(
            socket.socket, int(self._sock.family), int(self._sock.type), self._sock.proto
        )
        loop.add_reader(self._sock.fileno(), self._ready)

    def _ready(self) -> None:
        accept = self._sock._accept  # type: ignore[attr-defined]
        for _ in range(_ACCEPT_BATCH):
            try:
                fd, peer = accept()
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
            conn = self._new_socket(fileno=fd)
            conn.setblocking(False)
            if self._nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _SocketTransport(self._loop, conn, peer, self._factory()).start()

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


class _SocketTransport(asyncio.Transport):
    """One accepted connection's transport, for a :class:`_Stream`.

    The same contract as asyncio's selector transport, kept to what the
    stream uses: ``write`` sends at once and buffers only what the kernel
    did not take (the stream is told to pause above ``_HIGH_WATER``);
    ``close`` sends what is buffered first; ``abort`` drops it;
    ``connection_lost`` always comes in a later loop iteration, once.
    End of input goes to ``eof_received`` and reading stops, the transport
    staying open for the replies.
    """

    __slots__ = (
        "_loop", "_sock", "_fd", "_peer", "_stream", "_view", "_pending",
        "_closing", "_lost", "_reading", "_writing_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, peer: Any, stream: _Stream) -> None:
        self._loop: Any = loop  # a selector loop (see usable()): its private reader calls
        self._sock = sock
        self._fd = sock.fileno()
        self._peer = peer
        # None once connection_lost was delivered (or the socket handed off).
        self._stream: _Stream | None = stream
        self._view = stream.get_buffer(-1)
        # What the kernel did not take yet (None when nothing waits).
        self._pending: bytearray | None = None
        self._closing = self._lost = self._reading = self._writing_paused = False

    def start(self) -> None:
        """Tell the stream it is connected, then start reading (unless it
        closed at once, as a server over its connection limit does)."""
        assert self._stream is not None
        try:
            self._stream.connection_made(self)
        except Exception:  # noqa: BLE001 - one connection's failure must not stop accepting
            log.exception("smtpproto: setting up the connection with %s failed", self._peer)
            self.abort()
            return
        if not self._closing:
            self._reading = True
            self._loop._add_reader(self._fd, self._read_ready)

    # -- reading ---------------------------------------------------------------------

    def _read_ready(self) -> None:
        stream = self._stream
        if stream is None:
            return
        try:
            count = self._sock.recv_into(self._view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # a reset, say: the connection is gone
            self._force_close(exc)
            return
        if count:
            stream.buffer_updated(count)
            return
        # End of input: stop reading; the stream says whether to stay open
        # for what it still has to write.
        self.pause_reading()
        if not stream.eof_received():
            self.close()

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop._remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop._add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._reading

    # -- writing ---------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost or not data:
            return
        pending = self._pending
        if pending is not None:
            pending += data
        else:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if sent == len(data):
                return
            self._pending = pending = bytearray(memoryview(data)[sent:])
            self._loop._add_writer(self._fd, self._write_ready)
        if not self._writing_paused and len(pending) > _HIGH_WATER and self._stream is not None:
            self._writing_paused = True
            self._stream.pause_writing()

    def _write_ready(self) -> None:
        pending = self._pending
        if pending is None:
            return
        try:
            sent = self._sock.send(pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        del pending[:sent]
        if self._writing_paused and len(pending) <= _LOW_WATER and self._stream is not None:
            self._writing_paused = False
            self._stream.resume_writing()
        if pending or self._pending is None:
            return  # more to send, or resume_writing() ended the connection
        self._pending = None
        self._loop._remove_writer(self._fd)
        if self._closing:
            self._lose(None)

    def get_write_buffer_size(self) -> int:
        return 0 if self._pending is None else len(self._pending)

    # -- ending ----------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if self._pending is None:
            self._lose(None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        if self._pending is not None:
            self._pending = None
            self._loop._remove_writer(self._fd)
        self._closing = True
        self.pause_reading()
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        self._lost = True
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        stream, self._stream = self._stream, None  # no cycle left to collect
        try:
            if stream is not None:
                stream.connection_lost(exc)
        finally:
            self._sock.close()

    def hand_off(self) -> asyncio.Transport:
        """Give the socket to one of the loop's own transports (for
        ``loop.start_tls()``), with the octets not sent yet; this transport
        is done (no callback of it follows).  The stream is not told: the
        caller sets the new transport's protocol."""
        if self._closing:
            raise ConnectionResetError("the connection is closed")
        self.pause_reading()
        pending, self._pending = self._pending, None
        if pending is not None:
            self._loop._remove_writer(self._fd)
        self._closing = self._lost = True
        self._stream = None
        transport: asyncio.Transport = self._loop._make_socket_transport(
            self._sock, asyncio.Protocol(), extra={"peername": self._peer}
        )
        if pending:
            transport.write(bytes(pending))
        return transport

    # -- the rest of the interface -------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "socket":
            return self._sock
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._stream is not None, "the connection is gone"
        return self._stream

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("the stream stays this transport's protocol; see hand_off()")
