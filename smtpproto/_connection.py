# Theory of operation
# -------------------
# What the two connection classes share: the sentinels ``next_event()``
# returns when it has no event, the receive side (a bounded buffer plus an
# end-of-file flag, where ``receive_data(b"")`` means EOF), and the ERROR
# discipline:
#
# * ``next_event()`` runs the role's ``_next_event()``; a
#   ``RemoteProtocolError`` escaping from it moves the session to ERROR and
#   is remembered, so later calls say what went wrong instead of reading on
#   from an unknown position.
# * ``send()`` never moves the session to ERROR: it validates first and
#   raises ``LocalProtocolError`` before producing any byte.
#
# ``ServerConnection`` repeats ``next_event()`` with its own hot path
# inlined; the rules above hold for both.
#
# No I/O, no clock, no threads: bytes in, events out, events in, bytes out.
from __future__ import annotations

import enum

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import ConnectionClosed, Event
from ._state import State

__all__ = ["Sentinel", "NEED_DATA", "PAUSED", "ConnectionBase"]


class Sentinel(enum.Enum):
    """What ``next_event()`` returns when it has no event to give."""

    #: More bytes must be received (``receive_data``) before the next event.
    NEED_DATA = "NEED_DATA"
    #: The last event awaits its reply (server) before the next is judged.
    PAUSED = "PAUSED"


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


class ConnectionBase:
    """Receive-side machinery shared by the client and server cores."""

    # Slots: a server holds one connection per client, idle ones included.
    __slots__ = ("_state", "_buffer", "_eof", "_error")

    def __init__(self) -> None:
        self._state = State.CONNECTED
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def state(self) -> State:
        """The session's current :class:`State`."""
        return self._state

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """Bytes received but not yet processed, and whether EOF was seen.

        Useful when handing the connection to other code (and, with
        STARTTLS, to check that nothing was pipelined past the switch).
        """
        return bytes(self._buffer.data), self._eof

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer; ``b""`` means the peer closed.

        Raises ``LocalProtocolError`` if data is fed after EOF.
        """
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("receive_data() called with data after EOF (b'')")
        self._buffer.data += data  # ReceiveBuffer.feed, without the call

    def next_event(self) -> Event | Sentinel:
        """Return the next event, or ``NEED_DATA`` / ``PAUSED``.

        Raises ``RemoteProtocolError`` when the peer broke the protocol;
        the session is then in the ERROR state.
        """
        if self._error is not None:
            raise LocalProtocolError(
                f"next_event() called after the connection failed: {self._error}"
            )
        if self._state is State.CLOSED:
            return ConnectionClosed()
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = State.ERROR
            raise

    def _next_event(self) -> Event | Sentinel:  # pragma: no cover - abstract
        raise NotImplementedError

    def _closed(self) -> ConnectionClosed:
        self._state = State.CLOSED
        return ConnectionClosed()

    def _check_sendable(self, what: str) -> None:
        """Raise the ``LocalProtocolError`` for sending *what* in the CLOSED
        or ERROR state.  Callers test the state first (send() is a hot
        path) and call this only in one of those two."""
        if self._state is State.CLOSED:
            raise LocalProtocolError(f"cannot send {what}: the session is CLOSED")
        assert self._state is State.ERROR, self._state
        raise LocalProtocolError(
            f"cannot send {what}: the session is in ERROR after: {self._error}"
        )
