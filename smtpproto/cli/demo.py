"""``python -m smtpproto demo``: a real SMTP session on this machine.

A server (the blocking adapter, in a background thread) listens on a free
loopback port and keeps messages in a new temporary Maildir; the client
sends it one message; the transcript is printed, then where the message
was stored and the stored file itself, with the ``Return-Path:`` and
``Received:`` fields the server added.  Only the standard library is
needed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TextIO

from .._server_config import ServerConfig
from ..flows import ClientOptions, Timeouts, TLSMode, errors
from ..sync import ServerThread, SMTPClient
from .errors import EXIT_FAILED, EXIT_OK
from .handler import DeliveryHandler
from .received import local_hostname
from .sinks import MaildirSink
from .transcript import TracedSession, Transcript

__all__ = ["run_demo", "demo_message"]


class _RecordingMaildir(MaildirSink):
    """A Maildir sink that remembers where it put each message."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.stored: list[str] = []

    def store(self, sender: str, message: bytes) -> str:
        where = super().store(sender, message)
        self.stored.append(where)
        return where


def demo_message(hostname: str) -> EmailMessage:
    """The message the demo sends (with a lone dot line, stuffed on the wire)."""
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "Bob <bob@example.org>"
    message["Subject"] = "Hello from smtpproto"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=hostname)  # no DNS lookup for the domain
    message.set_content(
        "Hi Bob,\n"
        "\n"
        "This message went through a real SMTP session on this machine.\n"
        "The next line is a lone dot, sent as '..' and stored as '.':\n"
        ".\n"
        "Alice\n"
    )
    return message


def run_demo(out: TextIO | None = None, directory: str | None = None) -> int:
    """Run the demo, printing to *out*; the Maildir goes under *directory*
    (a new temporary directory by default, left in place for you to read)."""
    out = out if out is not None else sys.stdout
    base = directory if directory is not None else tempfile.mkdtemp(prefix="smtpproto-demo-")
    sink = _RecordingMaildir(os.path.join(base, "Maildir"))
    hostname = local_hostname()
    handler = DeliveryHandler(sink, hostname=hostname)
    config = ServerConfig(hostname=hostname)
    with ServerThread(handler, host="127.0.0.1", port=0, config=config) as server:
        host, port = server.address
        options = ClientOptions(
            helo_name=hostname, tls=TLSMode.NEVER, server_hostname=host, timeouts=Timeouts.all(10.0)
        )
        transcript = Transcript(out)
        transcript.connected_to = f"{host}:{port}"
        print(f"=== A server (smtpproto.sync) is listening on {host}:{port}; the client:", file=out)
        transcript.note(f"Trying {host}:{port}...")
        client = SMTPClient(host, port, options=options)
        client.session = TracedSession(options, transcript)
        try:
            client.connect()
            client.send_message(demo_message(hostname))
            client.quit()
        except errors.SMTPError as exc:
            print(f"{exc.step or 'demo'}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if not sink.stored:
        print("demo: the server stored nothing", file=sys.stderr)
        return EXIT_FAILED
    where = sink.stored[0]
    print(f"\n=== The server stored the message in {where}", file=out)
    print("=== with the trace fields it added first:\n", file=out)
    with open(where, "rb") as file:
        out.write(file.read().decode("utf-8", "replace").replace("\r\n", "\n"))
    out.flush()
    return EXIT_OK
