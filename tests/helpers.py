"""Test helpers: drive the cores in memory, whole or one byte at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from smtpproto import (
    NEED_DATA,
    Bdat,
    ProxyHeader,
    PAUSED,
    ClientConnection,
    ConnectionClosed,
    Ehlo,
    Event,
    MessageData,
    Reply,
    ServerConfig,
    ServerConnection,
)


def feed(conn: ClientConnection | ServerConnection, data: bytes, byte_at_a_time: bool) -> None:
    """Feed *data* whole or one byte at a time (events are not drained)."""
    if byte_at_a_time:
        for index in range(len(data)):
            conn.receive_data(data[index : index + 1])
    else:
        conn.receive_data(data)


def drain(conn: ClientConnection | ServerConnection) -> list[Event]:
    """Every event available now (stops at NEED_DATA, PAUSED or closed)."""
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events
        assert isinstance(event, Event)
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def merge_data(events: list[Event]) -> list[Event]:
    """Join consecutive MessageData events (chunk boundaries may differ)."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, MessageData) and merged and isinstance(merged[-1], MessageData):
            merged[-1] = MessageData(data=merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


Responder = Callable[[ServerConnection, Event], Reply | None]


def default_responder(server: ServerConnection, event: Event) -> Reply | None:
    """Answer with the server core's usual reply; nothing for content, for
    a BDAT header (its reply comes after its octets) or a PROXY header."""
    if isinstance(event, (MessageData, ConnectionClosed, Bdat, ProxyHeader)):
        return None
    return server.default_reply()


class Pair:
    """A client core and a server core wired together in memory.

    ``server_events`` and ``client_events`` record everything each side's
    ``next_event()`` produced, so tests can compare what was sent with what
    was received.
    """

    def __init__(
        self,
        server_config: ServerConfig | None = None,
        client: ClientConnection | None = None,
        responder: Responder = default_responder,
        byte_at_a_time: bool = False,
    ) -> None:
        self.client = client if client is not None else ClientConnection()
        self.server = ServerConnection(server_config)
        self.responder = responder
        self.byte_at_a_time = byte_at_a_time
        self.server_events: list[Event] = []
        self.client_events: list[Event] = []
        self.wire_to_server = bytearray()
        self.wire_to_client = bytearray()

    def greet(self, reply: Reply | None = None) -> list[Event]:
        """Send the greeting and let the client read it."""
        return self.to_client(self.server.send(reply or self.server.greeting()))

    def to_client(self, data: bytes) -> list[Event]:
        self.wire_to_client += data
        if data:  # b"" would mean end of file
            feed(self.client, data, self.byte_at_a_time)
        events = drain(self.client)
        self.client_events += events
        return events

    def to_server(self, data: bytes) -> list[Event]:
        """Deliver bytes to the server, answer its events, deliver the
        replies to the client; return the client's events."""
        self.wire_to_server += data
        feed(self.server, data, self.byte_at_a_time)
        return self.to_client(self.serve())

    def serve(self) -> bytes:
        out = bytearray()
        while True:
            events = drain(self.server)
            self.server_events += events
            answered = False
            for event in events:
                reply = self.responder(self.server, event)
                while reply is not None:
                    out += self.server.send(reply)
                    answered = True
                    # LMTP: the end of data takes one reply per recipient.
                    more = self.server.awaiting_reply is event and self.server.replies_due
                    reply = self.responder(self.server, event) if more else None
            if not answered:
                return bytes(out)

    def send(self, *events: Event) -> list[Event]:
        """Send client events as one batch; return the client's new events."""
        return self.to_server(b"".join(self.client.send(event) for event in events))

    def hello(self, domain: str = "client.example") -> list[Event]:
        """Greeting and EHLO."""
        self.greet()
        return self.send(Ehlo(domain=domain))


def server_events(
    data: bytes, config: ServerConfig | None = None, byte_at_a_time: bool = False,
    responder: Responder = default_responder, tls: bool = False,
) -> tuple[list[Event], bytes]:
    """Feed raw *data* to a fresh, greeted server answering with *responder*.

    Returns the server's events and the bytes it wrote after the greeting.
    """
    server = ServerConnection(config, tls=tls)
    server.send(server.greeting())
    feed(server, data, byte_at_a_time)
    events: list[Event] = []
    out = bytearray()
    while True:
        batch = drain(server)
        events += batch
        answered = False
        for event in batch:
            reply = responder(server, event)
            while reply is not None:
                out += server.send(reply)
                answered = True
                more = server.awaiting_reply is event and server.replies_due
                reply = responder(server, event) if more else None
        if not answered:
            return events, bytes(out)


def replies_of(data: bytes) -> list[int]:
    """The reply codes in *data* (final lines only)."""
    codes = []
    for line in data.split(b"\r\n"):
        if len(line) >= 3 and line[3:4] != b"-":
            codes.append(int(line[:3]))
    return codes


def first(events: Iterable[Event], kind: type[Event]) -> Event:
    """The first event of *kind*."""
    for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} in {events!r}")
