"""Command line: ``python -m smtpproto``.

``demo`` drives a client core and a server core against each other in
memory and prints the SMTP transcript, showing the sans-I/O core at work
with no sockets at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from email.message import EmailMessage
from typing import TextIO

from . import (
    NEED_DATA,
    PAUSED,
    ClientConnection,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    Reply,
    ServerConfig,
    ServerConnection,
    __version__,
)

__all__ = ["main", "run_demo"]


def _show(out: TextIO, prefix: str, data: bytes) -> None:
    for line in data.decode("utf-8", "replace").splitlines():
        print(f"{prefix} {line}", file=out)


def _serve(server: ServerConnection, received: list[bytes]) -> bytes:
    """Answer every event the server core has ready; return the reply bytes."""
    out = bytearray()
    while True:
        event: Event | object = server.next_event()
        if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
            return bytes(out)
        if isinstance(event, MessageData):
            received.append(event.data)
            continue
        out += server.send(server.default_reply())


def _replies(client: ClientConnection) -> list[Reply]:
    replies: list[Reply] = []
    while True:
        event = client.next_event()
        if not isinstance(event, Reply):
            return replies
        replies.append(event)


def run_demo(out: TextIO = sys.stdout) -> int:
    """Send one message from a client core to a server core, in memory."""
    client = ClientConnection()
    server = ServerConnection(ServerConfig(hostname="server.example"))
    received: list[bytes] = []

    def to_client(data: bytes) -> list[Reply]:
        _show(out, "S:", data)
        client.receive_data(data)
        return _replies(client)

    def to_server(data: bytes) -> list[Reply]:
        _show(out, "C:", data)
        server.receive_data(data)
        return to_client(_serve(server, received))

    to_client(server.send(server.greeting()))
    to_server(client.send(Ehlo(domain="client.example")))
    message = EmailMessage()
    message["From"] = "alice@client.example"
    message["To"] = "bob@server.example"
    message["Subject"] = "Hello from smtpproto"
    message.set_content("Hi Bob,\n.\nA line with a lone dot above, stuffed on the wire.\n")
    content = message.as_bytes()
    batch = client.send(Mail(reverse_path="alice@client.example", parameters={"SIZE": str(len(content))}))
    batch += client.send(Rcpt(forward_path="bob@server.example"))
    batch += client.send(Data())
    go_ahead = to_server(batch)
    if go_ahead[-1].code != 354:  # pragma: no cover - the in-memory server accepts
        return 1
    to_server(client.send(MessageData(data=content)) + client.send(EndOfMessage()))
    to_server(client.send(Quit()))
    stored = b"".join(received)
    same = stored == content.replace(b"\n", b"\r\n")
    print(f"-- the server received {len(stored)} octets; identical to what was sent: {same}", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m smtpproto``."""
    parser = argparse.ArgumentParser(
        prog="python -m smtpproto",
        description="smtpproto: a sans-I/O SMTP protocol library.",
    )
    parser.add_argument("--version", action="version", version=f"smtpproto {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "demo", help="run a client core against a server core in memory and print the transcript"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo()
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
