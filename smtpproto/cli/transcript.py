"""A swaks-style transcript of a client session, for ``send --verbose`` and ``demo``.

:class:`Transcript` wraps the client's flows (:mod:`smtpproto.flows`), so
it sees the bytes each action sends and receives whatever adapter runs
them, and prints them line by line::

    === Trying 127.0.0.1:2525...
    === Connected to 127.0.0.1.
    <-  220 mx.example ESMTP
     -> EHLO client.example
    ...
    === TLS started.
     ~> EHLO client.example
    <~  250-mx.example

``<-`` is the server, ``->`` the client; ``~`` replaces ``-`` once the
connection is encrypted.  SASL exchanges are masked (``****``): a
transcript never shows a password, not even in base64.
"""

from __future__ import annotations

from typing import Any, TextIO, TypeVar

from .._events import Reply
from ..flows import ClientOptions, ClientSession, Close, Flow, Receive, Send, StartTLS
from ..flows.message import Outgoing
from ..flows.client import SendResult

__all__ = ["Transcript", "TracedSession"]

T = TypeVar("T")


class Transcript:
    """Prints what a client session sends and receives to *out*."""

    def __init__(self, out: TextIO, *, tls: bool = False) -> None:
        self.out = out
        #: True once the connection is encrypted (implicit TLS: from the start).
        self.tls = tls
        self.connected_to: str | None = None
        self._server = b""
        self._client = b""
        self._sasl = False
        self._started = False

    def note(self, text: str) -> None:
        """A line of commentary (``=== text``)."""
        self._line("===", text)

    def _line(self, prefix: str, text: str) -> None:
        print(f"{prefix} {text}", file=self.out, flush=True)

    def _lines(self, pending: bytes, data: bytes) -> tuple[list[str], bytes]:
        pending += data
        *complete, rest = pending.split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in complete], rest

    def client_data(self, data: bytes) -> None:
        """Bytes the client wrote."""
        lines, self._client = self._lines(self._client, data)
        prefix = " ~>" if self.tls else " ->"
        for line in lines:
            words = line.split(" ")
            if words[0].upper() == "AUTH" and len(words) >= 2:
                self._sasl = True
                line = " ".join(words[:2]) + (" ****" if len(words) > 2 else "")
            elif self._sasl:
                line = "****"
            self._line(prefix, line)

    def server_data(self, data: bytes) -> None:
        """Bytes the server wrote."""
        lines, self._server = self._lines(self._server, data)
        prefix = "<~ " if self.tls else "<- "
        for line in lines:
            if self._sasl and not line.startswith("334"):
                self._sasl = False
            self._line(prefix, line)

    def traced(self, flow: Flow[T]) -> Flow[T]:
        """*flow*, printing the bytes of each of its actions."""
        if not self._started and self.connected_to is not None:
            self.note(f"Connected to {self.connected_to}.")
        self._started = True
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(action, Send):
                self.client_data(action.data)
            try:
                value = yield action
            except Exception as exc:  # noqa: BLE001 - the adapter's failure goes to the flow
                error = exc
                self.note(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                continue
            if isinstance(action, Receive):
                if value:
                    self.server_data(value)
                else:
                    self.note("The server closed the connection.")
            elif isinstance(action, StartTLS):
                self.tls = True
                self.note("TLS started.")
            elif isinstance(action, Close):
                self.note("Connection closed.")


class TracedSession(ClientSession):
    """A :class:`ClientSession` whose flows print to a :class:`Transcript`."""

    def __init__(self, options: ClientOptions, transcript: Transcript) -> None:
        super().__init__(options)
        self.transcript = transcript

    def open(self) -> Flow[Reply]:
        return self.transcript.traced(super().open())

    def send(self, outgoing: Outgoing) -> Flow[SendResult]:
        return self.transcript.traced(super().send(outgoing))

    def quit(self) -> Flow[None]:
        return self.transcript.traced(super().quit())
