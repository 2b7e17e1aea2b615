"""Embed the sans-I/O server core in a hand-written ``selectors`` loop.

Run it, then send it mail with any SMTP client::

    python3 examples/selectors_server.py --port 8025
    swaks --server 127.0.0.1:8025 --to bob@example.org   # or smtplib, curl...

Every session is a ``ServerConnection``; the loop only moves bytes between
sockets and cores and answers each event with the core's usual reply.  A
message counts as received only when its ``EndOfMessage`` arrived: an
``EndOfMessage`` is the only event that stores what was collected.
"""

from __future__ import annotations

import argparse
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpproto import (
    NEED_DATA,
    PAUSED,
    Bdat,
    ConnectionClosed,
    EndOfMessage,
    Mail,
    MessageData,
    Rcpt,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
)


@dataclass
class Received:
    """One message as the server received it."""

    sender: str
    recipients: list[str]
    content: bytes


@dataclass
class Session:
    conn: ServerConnection
    outbox: bytearray = field(default_factory=bytearray)
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)


def _process(session: Session, store: Callable[[Received], None]) -> bool:
    """Answer every event the core has ready; False once the session ended."""
    conn = session.conn
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:  # the client cannot be read any further
            if exc.reply is not None:
                session.outbox += conn.send(exc.reply)
            return False
        if event is NEED_DATA or event is PAUSED:
            return True
        if isinstance(event, ConnectionClosed):
            return False
        if isinstance(event, MessageData):
            session.chunks.append(event.data)
            continue
        if isinstance(event, Bdat):
            continue  # a BDAT chunk is answered after its octets (EndOfChunk)
        reply = conn.default_reply()
        if isinstance(event, Mail):
            session.sender, session.recipients, session.chunks = event.reverse_path, [], []
        elif isinstance(event, Rcpt):
            session.recipients.append(event.forward_path)
        elif isinstance(event, EndOfMessage):
            store(Received(session.sender, list(session.recipients), b"".join(session.chunks)))
        session.outbox += conn.send(reply)


def serve(
    listener: socket.socket,
    store: Callable[[Received], None],
    config: ServerConfig | None = None,
    max_sessions: int | None = None,
) -> None:
    """Serve SMTP on *listener* until *max_sessions* sessions have ended."""
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    finished = 0
    while max_sessions is None or finished < max_sessions:
        for key, mask in selector.select():
            if key.fileobj is listener:
                sock, _ = listener.accept()
                sock.setblocking(False)
                session = Session(ServerConnection(config))
                session.outbox += session.conn.send(session.conn.greeting())
                selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, session)
                continue
            sock = key.fileobj  # type: ignore[assignment]
            session = key.data
            alive = True
            if mask & selectors.EVENT_READ:
                data = sock.recv(65536)
                session.conn.receive_data(data)
                alive = _process(session, store)
            if session.outbox:
                try:
                    sent = sock.send(session.outbox)
                except BlockingIOError:
                    sent = 0
                del session.outbox[:sent]
            if not alive and not session.outbox:
                selector.unregister(sock)
                sock.close()
                finished += 1
            else:
                # Wait for writability only while there is something to write.
                wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.outbox else 0)
                if not alive:
                    wanted = selectors.EVENT_WRITE
                selector.modify(sock, wanted, session)
    selector.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    listener = socket.create_server((args.host, args.port))
    print(f"listening on {args.host}:{listener.getsockname()[1]}", flush=True)

    def store(message: Received) -> None:
        print(f"from <{message.sender}> to {message.recipients}: {len(message.content)} octets")

    serve(listener, store)


if __name__ == "__main__":
    main()
