"""Disconnects at every phase, for every server adapter and for the client.

A message counts as delivered only when the server answered its end of
data; a connection cut anywhere before that delivers nothing, and a client
whose server hangs up at any point gets a temporary error, never a hang.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from smtpproto.flows import ClientOptions, Envelope, Handler, Session, Timeouts, TLSMode, errors
from smtpproto.sync import SMTPClient

from test_adapter_matrix import KINDS, running

SESSION = [
    b"EHLO client.example\r\n",
    b"MAIL FROM:<a@example.org>\r\n",
    b"RCPT TO:<b@example.org>\r\n",
    b"DATA\r\n",
    b"Subject: cut\r\n",
    b"\r\nbody line\r\n",
    b".\r\n",
    b"QUIT\r\n",
]
# Cut points: after each line, and in the middle of the content lines.
CUTS = list(range(len(SESSION) + 1))


class Counter(Handler):
    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.disconnects = 0
        self.lock = threading.Lock()

    def message(self, session: Session, envelope: Envelope) -> None:
        assert envelope.content is not None
        with self.lock:
            self.delivered.append(envelope.content)

    def disconnect(self, session: Session) -> None:
        with self.lock:
            self.disconnects += 1


def talk(address: tuple[str, int], lines: list[bytes]) -> bytes:
    """Send *lines* one by one (reading replies), then hang up."""
    received = b""
    with socket.create_connection(address, timeout=10) as sock:
        received += sock.recv(4096)  # the greeting
        for line in lines:
            sock.sendall(line)
            if line in (b"Subject: cut\r\n", b"\r\nbody line\r\n"):
                continue  # content gets no reply
            received += sock.recv(4096)
    return received


@pytest.mark.parametrize("server_kind", KINDS)
def test_client_hangs_up_at_every_phase(server_kind: str) -> None:
    handler = Counter()
    with running(server_kind, handler) as address:
        for cut in CUTS:
            talk(address, SESSION[:cut])
        # The disconnect hook ran for every session before shutdown returned.
    assert handler.disconnects == len(CUTS)
    # Only the sessions that got past the final dot delivered: cuts 7 and 8.
    assert handler.delivered == [b"Subject: cut\r\n\r\nbody line\r\n"] * 2


@pytest.mark.parametrize("server_kind", KINDS)
def test_cut_in_the_middle_of_a_line_of_content(server_kind: str) -> None:
    handler = Counter()
    with running(server_kind, handler) as address:
        with socket.create_connection(address, timeout=10) as sock:
            sock.recv(4096)
            sock.sendall(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
            data = b""
            while b"354" not in data:
                data += sock.recv(4096)
            sock.sendall(b"Subject: half\r\n\r\nhalf a li")
    assert handler.delivered == []


@contextmanager
def scripted_server(replies: list[bytes]) -> Iterator[tuple[str, int]]:
    """A server that reads one line per reply, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            buffer = b""
            for index, reply in enumerate(replies):
                if index:  # every reply after the greeting answers a line
                    while b"\n" not in buffer:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        buffer += chunk
                    buffer = buffer.split(b"\n", 1)[1]
                conn.sendall(reply)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        thread.join(10)
        listener.close()


SERVER_SCRIPT = [
    b"220 fake ESMTP\r\n",
    b"250-fake\r\n250 SIZE 1000000\r\n",
    b"250 sender ok\r\n",
    b"250 recipient ok\r\n",
    b"354 go ahead\r\n",
]


@pytest.mark.parametrize("cut", range(len(SERVER_SCRIPT) + 1))
def test_server_hangs_up_at_every_phase(cut: int) -> None:
    """The client gets a temporary error (RFC 5321 §3.8: like a 451)."""
    options = ClientOptions(helo_name="client.example", tls=TLSMode.NEVER, timeouts=Timeouts.all(10))
    with scripted_server(SERVER_SCRIPT[:cut]) as address:
        client = SMTPClient(*address, options=options)
        with pytest.raises(errors.SMTPError) as info:
            client.connect()
            client.send_message(b"Subject: x\r\n\r\nbody\r\n", "a@example.org", ["b@example.org"])
        client.quit()
    assert info.value.temporary, info.value
    assert isinstance(info.value, errors.Disconnected)
