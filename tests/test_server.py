"""The server core: command judging, replies, message content, attacks.

Most cases are a table of (input bytes, expected replies, expected events),
each run twice: fed whole, and fed one byte at a time with the events
drained and answered after every byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from helpers import default_responder, drain
from smtpproto import (
    NEED_DATA,
    PAUSED,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    LocalProtocolError,
    Mail,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    State,
    UnknownCommand,
    Vrfy,
)
from smtpproto.extensions import (
    BinaryMime,
    Chunking,
    Dsn,
    EightBitMime,
    EnhancedStatusCodes,
    Extension,
    HelpExtension,
    Limits,
    Pipelining,
    Size,
    SmtpUtf8,
)
from smtpproto._syntax import GrammarError

Responder = Callable[[ServerConnection, Event], Reply | None]

MODES = [pytest.param(False, id="whole"), pytest.param(True, id="byte-at-a-time")]


# -- driver -------------------------------------------------------------------


@dataclass
class Run:
    server: ServerConnection
    events: list[Event]
    wire: bytes

    @property
    def kinds(self) -> list[type[Event]]:
        """Event types, MessageData left out (chunking differs by mode)."""
        return [type(e) for e in self.events if not isinstance(e, MessageData)]

    @property
    def content(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, MessageData))

    @property
    def replies(self) -> list[tuple[int, str | None]]:
        return parse_replies(self.wire)


def parse_replies(wire: bytes) -> list[tuple[int, str | None]]:
    """(code, enhanced code of the last line) of every reply in *wire*."""
    out: list[tuple[int, str | None]] = []
    for line in wire.split(b"\r\n")[:-1]:
        if line[3:4] == b"-":
            continue
        words = line[4:].split(b" ", 1)
        enhanced = words[0].decode() if words[0][:1] in (b"2", b"4", b"5") and words[0].count(b".") == 2 else None
        out.append((int(line[:3]), enhanced))
    return out


def run(
    data: bytes,
    config: ServerConfig | None = None,
    *,
    byte_at_a_time: bool,
    responder: Responder = default_responder,
    greeting: Reply | None = None,
    eof: bool = False,
) -> Run:
    """Greet, feed *data* (whole, or one byte at a time answering after each
    byte), answer every event with *responder*, and record it all."""
    server = ServerConnection(config)
    server.send(greeting if greeting is not None else server.greeting())
    events: list[Event] = []
    wire = bytearray()

    def pump() -> None:
        while not (events and isinstance(events[-1], ConnectionClosed)):
            batch = drain(server)
            events.extend(batch)
            answered = False
            for event in batch:
                reply = responder(server, event)
                if reply is not None:
                    wire.extend(server.send(reply))
                    answered = True
            if not answered:
                return

    chunks = [data[i : i + 1] for i in range(len(data))] if byte_at_a_time else [data]
    for chunk in chunks:
        server.receive_data(chunk)
        pump()
    if eof:
        server.receive_data(b"")
        pump()
    return Run(server, events, bytes(wire))


def greeted(config: ServerConfig | None = None, data: bytes = b"") -> ServerConnection:
    """A greeted server fed *data*, nothing drained yet."""
    server = ServerConnection(config)
    server.send(server.greeting())
    if data:
        server.receive_data(data)
    return server


def answer(server: ServerConnection, data: bytes) -> list[Event]:
    """Feed *data* and answer each event with the default reply."""
    if data:
        server.receive_data(data)
    events: list[Event] = []
    while True:
        event = server.next_event()
        if event is NEED_DATA:
            return events
        assert isinstance(event, Event)
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events
        if not isinstance(event, MessageData):
            server.send(server.default_reply())


def refuse_bad_rcpt(server: ServerConnection, event: Event) -> Reply | None:
    """Refuse recipients whose local part starts with "bad" (and MAIL from
    "bad" senders); answer everything else with the default."""
    if isinstance(event, Rcpt) and event.forward_path.startswith("bad"):
        return Reply(code=550, text=("No such user",), enhanced="5.1.1")
    if isinstance(event, Mail) and event.reverse_path.startswith("bad"):
        return Reply(code=550, text=("Sender refused",), enhanced="5.7.1")
    return default_responder(server, event)


# -- table-driven sessions --------------------------------------------------------

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<sender@example.org>\r\n"
RCPT = b"RCPT TO:<rcpt@example.com>\r\n"
C, U = CommandRejected, UnknownCommand


def long_domain(length: int) -> str:
    """A domain of *length* octets whose labels keep to RFC 1035 §2.3.4's 63."""
    labels = []
    while length > 63:
        labels.append("d" * 62)
        length -= 63
    return ".".join([*labels, "d" * length])


def long_mail_line() -> bytes:
    """A 600-octet MAIL line that only the extensions' allowances admit."""
    params = " SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=" + "+41" * 100
    head = "MAIL FROM:<" + "l" * 64 + "@"
    domain_len = 598 - len(head) - 1 - len(params)
    line = f"{head}{long_domain(domain_len)}>{params}\r\n".encode()
    assert len(line) == 600
    return line


def long_rcpt_line() -> bytes:
    """An 800-octet RCPT line with DSN parameters (RFC 3461 §5 allows 500 more)."""
    mailbox = "l" * 64 + "@" + long_domain(187)
    orcpt = "rfc822;" + "x" * 493  # the longest ORCPT value, 500 characters
    line = f"RCPT TO:<{mailbox}> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}\r\n".encode()
    assert len(line) == 800
    return line


@dataclass
class Case:
    id: str
    data: bytes
    replies: Sequence[int | str | tuple[int, str | None]]
    kinds: Sequence[type[Event]] | None = None
    config: ServerConfig | None = None
    responder: Responder = default_responder
    greeting: Reply | None = None
    eof: bool = False
    state: State | None = None
    extra: dict[str, object] = field(default_factory=dict)


CASES = [
    Case(
        "full-transaction",
        EHLO + MAIL + RCPT + b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n",
        [250, "250 2.1.0", "250 2.1.5", 354, "250 2.0.0", "221 2.0.0"],
        [Ehlo, Mail, Rcpt, Data, EndOfMessage, Quit, ConnectionClosed],
        state=State.CLOSED,
    ),
    Case(
        "verbs-are-case-insensitive",
        b"eHlO client.example\r\nmail from:<Sender@Example.org>\r\nRcPt To:<x@y>\r\ndata\r\n.\r\nquit\r\n",
        [250, 250, 250, 354, 250, 221],
        [Ehlo, Mail, Rcpt, Data, EndOfMessage, Quit, ConnectionClosed],
    ),
    Case("strict-mail-without-brackets", EHLO + b"MAIL FROM:a@b.example\r\n", [250, "501 5.1.7"], [Ehlo, C]),
    Case("strict-rcpt-without-brackets", EHLO + MAIL + b"RCPT TO:a@b.example\r\n", [250, 250, 501], [Ehlo, Mail, C]),
    Case("strict-space-after-colon", EHLO + b"MAIL FROM: <a@b.example>\r\n", [250, 501], [Ehlo, C]),
    Case(
        "lenient-space-after-colon",
        EHLO + b"MAIL FROM: <a@b.example>\r\nRCPT TO: c@d.example\r\n",
        [250, 250, 250],
        [Ehlo, Mail, Rcpt],
        config=ServerConfig(lenient=True),
    ),
    Case("data-with-argument", EHLO + MAIL + RCPT + b"DATA now\r\n", [250, 250, 250, "501 5.5.4"], [Ehlo, Mail, Rcpt, C]),
    Case("rset-with-argument", b"RSET x\r\n", [501], [C]),
    Case("quit-with-argument", b"QUIT x\r\nNOOP\r\n", [501, 250], [C, Noop]),
    Case("vrfy-without-argument", b"VRFY\r\n", [501], [C]),
    Case("expn-without-argument", b"EXPN \r\n", [501], [C]),
    Case(
        "anytime-commands-before-ehlo",
        b"NOOP\r\nHELP\r\nVRFY someone\r\nEXPN list\r\nRSET\r\n",
        ["250 2.0.0", "214 2.0.0", "252 2.5.0", "502 5.5.1", "250 2.0.0"],
        [Noop, Help, Vrfy, Expn, Rset],
        state=State.GREETED,
    ),
    Case(
        "anytime-commands-in-a-transaction",
        EHLO + MAIL + b"NOOP\r\nVRFY x\r\nHELP\r\n" + RCPT,
        [250, 250, 250, 252, 214, 250],
        [Ehlo, Mail, Noop, Vrfy, Help, Rcpt],
        state=State.RCPT,
    ),
    Case("quit-before-ehlo", b"QUIT\r\n", [221], [Quit, ConnectionClosed], state=State.CLOSED),
    Case("mail-before-ehlo", MAIL, ["503 5.5.1"], [C], state=State.GREETED),
    Case("rcpt-before-ehlo", RCPT, [503], [C]),
    Case("data-before-ehlo", b"DATA\r\n", [503], [C]),
    Case("rcpt-before-mail", EHLO + RCPT, [250, "503 5.5.1"], [Ehlo, C], state=State.READY),
    Case("data-before-mail", EHLO + b"DATA\r\n", [250, 503], [Ehlo, C]),
    Case("nested-mail", EHLO + MAIL + MAIL, [250, 250, "503 5.5.1"], [Ehlo, Mail, C], state=State.MAIL),
    Case("nested-mail-after-rcpt", EHLO + MAIL + RCPT + MAIL, [250, 250, 250, 503], [Ehlo, Mail, Rcpt, C]),
    Case("data-without-rcpt", EHLO + MAIL + b"DATA\r\n", [250, 250, "554 5.5.1"], [Ehlo, Mail, C], state=State.MAIL),
    Case(
        "pipelined-data-after-refused-rcpt",
        EHLO + MAIL + b"RCPT TO:<bad@example.com>\r\nDATA\r\nHi there\r\n.\r\nQUIT\r\n",
        # DATA gets 554, so the content is read as commands (RFC 2920 §3.1):
        # "Hi" is an unknown verb, "." not a verb at all.
        [250, 250, "550 5.1.1", "554 5.5.1", "500 5.5.1", "500 5.5.2", 221],
        [Ehlo, Mail, Rcpt, C, U, C, Quit, ConnectionClosed],
        responder=refuse_bad_rcpt,
    ),
    Case(
        "one-good-rcpt-is-enough",
        EHLO + MAIL + b"RCPT TO:<bad@example.com>\r\n" + RCPT + b"DATA\r\n.\r\n",
        [250, 250, 550, 250, 354, 250],
        [Ehlo, Mail, Rcpt, Rcpt, Data, EndOfMessage],
        responder=refuse_bad_rcpt,
    ),
    Case(
        "refused-mail-leaves-state",
        EHLO + b"MAIL FROM:<bad@example.org>\r\n" + RCPT + MAIL,
        [250, "550 5.7.1", "503 5.5.1", 250],
        [Ehlo, Mail, C, Mail],
        responder=refuse_bad_rcpt,
        state=State.MAIL,
    ),
    Case(
        "second-ehlo-resets-transaction",
        EHLO + MAIL + RCPT + EHLO + b"DATA\r\n" + RCPT + MAIL,
        [250, 250, 250, 250, "503 5.5.1", 503, 250],
        [Ehlo, Mail, Rcpt, Ehlo, C, C, Mail],
    ),
    Case(
        "rset-resets-transaction",
        EHLO + MAIL + RCPT + b"RSET\r\nDATA\r\n" + MAIL,
        [250, 250, 250, 250, 503, 250],
        [Ehlo, Mail, Rcpt, Rset, C, Mail],
    ),
    Case(
        "helo-session-refuses-esmtp-parameters",
        b"HELO client.example\r\nMAIL FROM:<a@b.example> SIZE=10\r\n"
        b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n" + MAIL + b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n",
        [250, "555 5.5.4", 555, 250, 555],
        [Helo, C, C, Mail, C],
    ),
    Case(
        "helo-after-ehlo-drops-extensions",
        EHLO + b"HELO client.example\r\nMAIL FROM:<a@b.example> SIZE=10\r\n",
        [250, 250, 555],
        [Ehlo, Helo, C],
    ),
    Case("unknown-mail-parameter", EHLO + b"MAIL FROM:<a@b.example> XFOO=1\r\n", [250, "555 5.5.4"], [Ehlo, C]),
    Case(
        "mail-parameter-on-rcpt",
        EHLO + MAIL + b"RCPT TO:<c@d.example> SIZE=10\r\nRCPT TO:<c@d.example> XBAR\r\n",
        [250, 250, 555, 555],
        [Ehlo, Mail, C, C],
    ),
    Case("rcpt-parameter-on-mail", EHLO + b"MAIL FROM:<> NOTIFY=NEVER\r\n", [250, 555], [Ehlo, C]),
    Case(
        "size-over-limit",
        EHLO + b"MAIL FROM:<a@b.example> SIZE=33554433\r\nMAIL FROM:<a@b.example> SIZE=33554432\r\n",
        [250, "552 5.3.4", 250],
        [Ehlo, C, Mail],
    ),
    Case(
        "size-over-configured-limit",
        EHLO + b"MAIL FROM:<a@b.example> SIZE=70000\r\n",
        [250, "552 5.3.4"],
        config=ServerConfig(max_message_size=65536),
    ),
    Case(
        "invalid-size-values",
        EHLO + b"MAIL FROM:<a@b.example> SIZE=abc\r\nMAIL FROM:<a@b.example> SIZE\r\n"
        b"MAIL FROM:<a@b.example> SIZE=-1\r\nMAIL FROM:<a@b.example> SIZE=1 size=1\r\n",
        [250, "501 5.5.4", 501, 501, 501],
        [Ehlo, C, C, C, C],
    ),
    Case(
        "body-values",
        EHLO + b"MAIL FROM:<a@b.example> BODY=BINARY\r\nMAIL FROM:<a@b.example> BODY=8bitmime\r\n",
        [250, "501 5.5.4", 250],
        [Ehlo, C, Mail],
    ),
    # RFC 3030 §3: BODY=BINARYMIME is valid where BINARYMIME (with CHUNKING)
    # is offered, as it is by default; elsewhere it is a bad value.
    Case("body-binarymime", EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n", [250, 250], [Ehlo, Mail]),
    Case(
        "body-binarymime-not-offered",
        EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nMAIL FROM:<a@b.example> BODY=7BIT\r\n",
        [250, "501 5.5.4", 250],
        [Ehlo, C, Mail],
        config=ServerConfig(binarymime=False),
    ),
    Case(
        "body-binarymime-without-chunking",
        EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n",
        [250, "501 5.5.4"],
        [Ehlo, C],
        config=ServerConfig(chunking=False),
    ),
    Case("body-7bit", EHLO + b"MAIL FROM:<a@b.example> BODY=7BIT\r\n", [250, 250], [Ehlo, Mail]),
    Case("smtputf8-with-value", EHLO + b"MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n", [250, "501 5.5.4"], [Ehlo, C]),
    Case(
        "non-ascii-mail-needs-smtputf8",
        EHLO + "MAIL FROM:<josé@example.org>\r\nMAIL FROM:<josé@example.org> SMTPUTF8\r\n".encode(),
        [250, "553 5.6.7", "250 2.1.0"],
        [Ehlo, C, Mail],
    ),
    Case(
        "non-ascii-domain-needs-smtputf8",
        EHLO + "MAIL FROM:<a@bücher.example>\r\n".encode(),
        [250, "553 5.6.7"],
        [Ehlo, C],
    ),
    Case(
        "non-ascii-rcpt-needs-smtputf8",
        EHLO + MAIL + "RCPT TO:<用户@例子.广告>\r\n".encode() + RCPT,
        [250, 250, "553 5.6.7", 250],
        [Ehlo, Mail, C, Rcpt],
    ),
    Case(
        "non-ascii-rcpt-with-smtputf8",
        EHLO + "MAIL FROM:<a@b.example> SMTPUTF8\r\nRCPT TO:<用户@例子.广告>\r\n".encode(),
        [250, 250, 250],
        [Ehlo, Mail, Rcpt],
    ),
    Case(
        "smtputf8-not-offered",
        EHLO + "MAIL FROM:<josé@example.org> SMTPUTF8\r\nMAIL FROM:<josé@example.org>\r\n".encode(),
        [250, 555, 553],
        [Ehlo, C, C],
        config=ServerConfig(smtputf8=False),
    ),
    Case(
        "invalid-utf8",
        EHLO + b"MAIL FROM:<jos\xe9@example.org> SMTPUTF8\r\nMAIL FROM:<\xf0\x9f\x98@x.example> SMTPUTF8\r\n",
        [250, 501, 501],
        [Ehlo, C, C],
    ),
    Case(
        "dsn-valid",
        EHLO + b"MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ+2B314159\r\n"
        b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example\r\n"
        b"RCPT TO:<e@d.example> NOTIFY=NEVER\r\nRCPT TO:<f@d.example> notify=delay\r\n",
        [250, 250, 250, 250, 250],
        [Ehlo, Mail, Rcpt, Rcpt, Rcpt],
    ),
    Case(
        "dsn-invalid-mail",
        EHLO + b"MAIL FROM:<a@b.example> RET=ALL\r\nMAIL FROM:<a@b.example> RET\r\n"
        b"MAIL FROM:<a@b.example> ENVID=a+0Db\r\nMAIL FROM:<a@b.example> ENVID=" + b"x" * 101 + b"\r\n"
        b"MAIL FROM:<a@b.example> RET=FULL RET=HDRS\r\n",
        [250, 501, 501, 501, 501, 501],
        [Ehlo, C, C, C, C, C],
    ),
    Case(
        "dsn-invalid-rcpt",
        EHLO + MAIL + b"RCPT TO:<c@d.example> NOTIFY=NEVER,SUCCESS\r\n"
        b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,SUCCESS\r\nRCPT TO:<c@d.example> NOTIFY=SOMETIMES\r\n"
        b"RCPT TO:<c@d.example> ORCPT=c@d.example\r\nRCPT TO:<c@d.example> ORCPT=rfc822;a+0Ab\r\n"
        b"RCPT TO:<c@d.example> NOTIFY=NEVER NOTIFY=NEVER\r\n",
        [250, 250, 501, 501, 501, 501, 501, 501],
        [Ehlo, Mail, C, C, C, C, C, C],
    ),
    Case(
        "dsn-not-offered",
        EHLO + b"MAIL FROM:<a@b.example> RET=HDRS\r\n",
        [250, 555],
        config=ServerConfig(dsn=False),
    ),
    Case(
        "too-many-recipients",
        EHLO + MAIL + b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(101)) + b"DATA\r\n",
        [250, 250, *[250] * 100, "452 4.5.3", 354],
        [Ehlo, Mail, *[Rcpt] * 100, C, Data],
        config=ServerConfig(max_recipients=100),
    ),
    Case(
        "over-long-line-resynchronises",
        b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n",
        ["500 5.5.2", 250],
        [C, Noop],
    ),
    Case(
        "over-long-line-without-crlf-then-command",
        EHLO + b"X" * 2000 + b"\r\n" + MAIL,
        [250, 500, 250],
        [Ehlo, C, Mail],
    ),
    Case("600-octet-mail-allowed", EHLO + long_mail_line(), [250, 250], [Ehlo, Mail]),
    Case("600-octet-noop-refused", b"NOOP " + b"x" * 593 + b"\r\n" + b"NOOP\r\n", ["500 5.5.2", 250], [C, Noop]),
    Case("513-octet-noop-refused", b"NOOP " + b"x" * 506 + b"\r\n", [500], [C]),
    Case("512-octet-noop-allowed", b"NOOP " + b"x" * 505 + b"\r\n", [250], [Noop]),
    Case("800-octet-rcpt-allowed", EHLO + MAIL + long_rcpt_line(), [250, 250, 250], [Ehlo, Mail, Rcpt]),
    Case(
        "mail-over-its-allowance",
        EHLO + b"MAIL FROM:<a@b.example> X=" + b"x" * 700 + b"\r\n",
        [250, "500 5.5.2"],
        [Ehlo, C],
    ),
    Case(
        "allowances-need-the-extensions",
        EHLO + long_mail_line(),
        [250, 500],
        [Ehlo, C],
        config=ServerConfig(dsn=False, eightbitmime=False, smtputf8=False),
    ),
    # §2.3.8: the line runs to the CRLF, bare LF and all: one line, one 500.
    Case("bare-lf-command-strict", b"NOOP\n" + b"NOOP\r\n", ["500 5.5.2"], [C]),
    Case("bare-lf-then-command", b"NOOP\nNOOP\r\nNOOP\r\n", ["500 5.5.2", 250], [C, Noop]),
    Case("bare-lf-command-lenient", b"NOOP\nNOOP\r\n", [250, 250], [Noop, Noop], config=ServerConfig(lenient=True)),
    Case("bare-cr-inside-command", b"NOOP a\rRSET\r\n", ["500 5.5.2"], [C]),
    Case("bare-cr-inside-command-lenient", b"NOOP a\rRSET\r\n", [500], [C], config=ServerConfig(lenient=True)),
    Case("nul-inside-command", b"NO\x00OP\r\nNOOP \x00\r\n", [500, 500], [C, C]),
    Case("empty-line", b"\r\n", [500], [C]),
    Case(
        "unknown-verb",
        b"XFOO bar\r\nxbar NAME=x\r\n",
        ["500 5.5.1", "500 5.5.1"],
        [U, U],
    ),
    # XCLIENT is a known command now; only a trusted peer may use it.
    Case("xclient-untrusted", b"xclient NAME=x\r\n", ["550 5.7.0"], [C]),
    Case(
        "too-many-errors",
        b"XFOO\r\nNO\x00OP\r\nDATA x\r\nNOOP\r\n",
        [500, 500, "421 4.7.0"],
        [U, C, C, ConnectionClosed],
        config=ServerConfig(max_errors=3),
        state=State.CLOSED,
    ),
    Case(
        "too-many-errors-unknown-last",
        b"DATA x\r\nXFOO\r\nNOOP\r\n",
        [501, "421 4.7.0"],
        [C, C, ConnectionClosed],
        config=ServerConfig(max_errors=2),
    ),
    Case(
        "refused-greeting-only-quit",
        EHLO + b"NOOP\r\nHELO client.example\r\n" + MAIL + b"QUIT\r\n",
        ["503 5.5.1", 503, 503, 503, "221 2.0.0"],
        [C, C, C, C, Quit, ConnectionClosed],
        greeting=Reply(code=554, text=("No service",), enhanced="5.3.2"),
        state=State.CLOSED,
    ),
    Case(
        "pipelined-batch",
        EHLO + b"RSET\r\n" + MAIL + RCPT + b"RCPT TO:<other@example.com>\r\nDATA\r\n",
        [250, 250, 250, 250, 250, 354],
        [Ehlo, Rset, Mail, Rcpt, Rcpt, Data],
        state=State.DATA,
    ),
    Case(
        "eof-mid-line",
        EHLO + b"NOOP",
        [250],
        [Ehlo, ConnectionClosed],
        eof=True,
        state=State.CLOSED,
    ),
    Case(
        "eof-mid-data",
        EHLO + MAIL + RCPT + b"DATA\r\nSubject: x\r\n\r\npartial",
        [250, 250, 250, 354],
        [Ehlo, Mail, Rcpt, Data, ConnectionClosed],
        eof=True,
        state=State.CLOSED,
    ),
    Case(
        "eof-after-commands",
        EHLO + b"NOOP\r\n",
        [250, 250],
        [Ehlo, Noop, ConnectionClosed],
        eof=True,
    ),
    Case(
        "no-enhanced-codes",
        EHLO + b"MAIL FROM:a@b\r\n" + MAIL,
        [250, (501, None), (250, None)],
        config=ServerConfig(enhanced_status_codes=False),
    ),
]


def check_replies(actual: list[tuple[int, str | None]], expected: Sequence[object]) -> None:
    assert len(actual) == len(expected), actual
    for (code, enhanced), want in zip(actual, expected):
        if isinstance(want, int):
            assert code == want, actual
        elif isinstance(want, tuple):
            assert (code, enhanced) == want, actual
        else:
            assert isinstance(want, str)
            want_code, want_enhanced = want.split(" ")
            assert (code, enhanced) == (int(want_code), want_enhanced), actual


@pytest.mark.parametrize("byte_at_a_time", MODES)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_session_table(case: Case, byte_at_a_time: bool) -> None:
    result = run(
        case.data,
        case.config,
        byte_at_a_time=byte_at_a_time,
        responder=case.responder,
        greeting=case.greeting,
        eof=case.eof,
    )
    check_replies(result.replies, case.replies)
    if case.kinds is not None:
        assert result.kinds == list(case.kinds)
    if case.state is not None:
        assert result.server.state is case.state


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_case_of_the_local_part_is_kept(byte_at_a_time: bool) -> None:
    result = run(EHLO + b"MAIL FROM:<John.Doe@Example.ORG>\r\n", byte_at_a_time=byte_at_a_time)
    assert result.events[1] == Mail(reverse_path="John.Doe@Example.ORG")


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_parsed_events_equal_constructed_ones(byte_at_a_time: bool) -> None:
    data = (
        EHLO
        + b"MAIL FROM:<@relay.example:a@b.example> size=100 BODY=8BITMIME\r\n"
        + b"RCPT TO:<Postmaster> NOTIFY=NEVER\r\n"
        + b'RCPT TO:<"x y"@[192.0.2.1]>\r\n'
        + b"VRFY Smith\r\nXFOO bar\r\n"
    )
    result = run(data, byte_at_a_time=byte_at_a_time)
    assert result.events == [
        Ehlo(domain="client.example"),
        Mail(reverse_path="a@b.example", parameters={"SIZE": "100", "BODY": "8BITMIME"}),
        Rcpt(forward_path="Postmaster", parameters={"NOTIFY": "NEVER"}),
        Rcpt(forward_path='"x y"@[192.0.2.1]'),
        Vrfy(text="Smith"),
        UnknownCommand(name="XFOO", argument="bar"),
    ]


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_command_rejected_carries_command_and_reason(byte_at_a_time: bool) -> None:
    result = run(EHLO + MAIL + MAIL + b"DATA x\r\n", byte_at_a_time=byte_at_a_time)
    nested, syntax = result.events[2], result.events[3]
    assert isinstance(nested, CommandRejected) and isinstance(syntax, CommandRejected)
    assert nested.command == Mail(reverse_path="sender@example.org")
    assert nested.reason == "Nested MAIL command"
    assert nested.reply.text == ("Nested MAIL command",)
    assert (nested.reply.code, nested.reply.enhanced) == (503, "5.5.1")
    assert syntax.command is None
    assert "DATA takes no argument" in syntax.reason
    assert syntax.reply.text[0].startswith("Syntax error:")


def test_unknown_command_suggested_reply_and_default() -> None:
    server = greeted(data=b"xfoo\r\n")
    event = server.next_event()
    assert event == UnknownCommand(name="XFOO")
    assert isinstance(event, UnknownCommand)
    assert server.default_reply() == event.suggested_reply
    assert (event.suggested_reply.code, event.suggested_reply.enhanced) == (500, "5.5.1")
    # An application may implement the command instead.
    assert server.send(Reply(code=250, text=("done",))) == b"250 done\r\n"
    assert server.state is State.GREETED


def test_too_many_errors_suggestion_closes_the_session() -> None:
    server = greeted(ServerConfig(max_errors=2), b"XFOO\r\nXBAR\r\nNOOP\r\n")
    server.next_event()
    server.send(server.default_reply())
    event = server.next_event()
    assert isinstance(event, CommandRejected)
    assert event.command == UnknownCommand(name="XBAR")
    assert (event.reply.code, event.reply.enhanced) == (421, "4.7.0")
    assert server.send(server.default_reply()).startswith(b"421 4.7.0 ")
    assert server.state is State.CLOSED
    assert isinstance(server.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        server.send(Reply(code=250))


def test_too_many_errors_may_be_overridden() -> None:
    # The suggestion is only a suggestion: another reply keeps the session.
    server = greeted(ServerConfig(max_errors=1), b"XFOO\r\nXBAR\r\n")
    first = server.next_event()
    assert isinstance(first, CommandRejected) and first.reply.code == 421
    server.send(Reply(code=500, text=("no",), enhanced="5.5.1"))
    assert server.state is State.GREETED
    second = server.next_event()
    assert isinstance(second, CommandRejected) and second.reply.code == 421


# -- PAUSED and the order of judgement ------------------------------------------------


def test_paused_until_reply() -> None:
    server = ServerConnection()
    assert server.next_event() is PAUSED  # the greeting comes first
    server.receive_data(EHLO + MAIL)
    assert server.next_event() is PAUSED
    server.send(server.greeting())
    assert server.next_event() == Ehlo(domain="client.example")
    assert server.awaiting_reply == Ehlo(domain="client.example")
    assert server.next_event() is PAUSED
    assert server.next_event() is PAUSED
    server.send(server.default_reply())
    assert server.awaiting_reply is None
    assert isinstance(server.next_event(), Mail)
    server.send(server.default_reply())
    assert server.next_event() is NEED_DATA


def test_attack_pipelining_after_data_is_judged_after_earlier_replies() -> None:
    # RFC 2920 §3.1: the content after DATA is content only if DATA got 354,
    # which depends on the RCPT replies before it.
    batch = EHLO + MAIL + RCPT + b"DATA\r\nRSET\r\n.\r\n"
    for rcpt_reply, expected in [
        (Reply(code=250), [Data, MessageData, EndOfMessage]),
        (Reply(code=550, text=("no",), enhanced="5.1.1"), [CommandRejected, Rset, CommandRejected]),
    ]:
        server = greeted(data=batch)
        events: list[Event] = []
        for reply in (server.ehlo_reply(), Reply(code=250), rcpt_reply):
            events.append(server.next_event())  # type: ignore[arg-type]
            assert server.next_event() is PAUSED
            server.send(reply)
        while (event := server.next_event()) is not NEED_DATA:
            assert isinstance(event, Event)
            events.append(event)
            if not isinstance(event, MessageData):
                server.send(server.default_reply())
        assert [type(e) for e in events[3:]] == expected
        if rcpt_reply.code == 250:
            assert events[4] == MessageData(data=b"RSET\r\n")


def test_data_state_and_354() -> None:
    server = greeted(data=EHLO + MAIL + RCPT + b"DATA\r\n")
    answer(server, b"")
    assert server.state is State.DATA
    assert server.mail == Mail(reverse_path="sender@example.org")
    assert server.recipient_count == 1
    events = answer(server, b"..leading dot\r\n.\r\n")
    assert events == [MessageData(data=b".leading dot\r\n"), EndOfMessage()]
    assert server.state is State.READY
    assert server.mail is None
    assert server.recipient_count == 0


# -- send() -----------------------------------------------------------------------


def test_send_refuses_non_replies() -> None:
    server = greeted(data=b"NOOP\r\n")
    server.next_event()
    for event in (Noop(), MessageData(data=b"x"), EndOfMessage(), ConnectionClosed()):
        with pytest.raises(LocalProtocolError, match="only Reply events"):
            server.send(event)
    assert server.send(server.default_reply()) == b"250 2.0.0 OK\r\n"


def test_send_with_nothing_awaiting_names_the_state() -> None:
    server = greeted()
    with pytest.raises(LocalProtocolError, match="state GREETED"):
        server.send(Reply(code=250))
    answer(server, EHLO)
    with pytest.raises(LocalProtocolError, match="state READY"):
        server.send(Reply(code=250))
    with pytest.raises(LocalProtocolError, match="state READY"):
        server.default_reply()
    assert server.state is State.READY


def test_unprompted_421_closes() -> None:
    server = greeted()
    answer(server, EHLO + MAIL)
    wire = server.send(Reply(code=421, text=("shutting down",), enhanced="4.3.2"))
    assert wire == b"421 4.3.2 shutting down\r\n"
    assert server.state is State.CLOSED
    assert isinstance(server.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        server.send(Reply(code=421))


def test_421_answering_a_command_closes() -> None:
    server = greeted(data=MAIL)
    assert isinstance(server.next_event(), CommandRejected)
    server.send(Reply(code=421, text=("bye",)))
    assert server.state is State.CLOSED
    server = greeted(data=EHLO)
    server.next_event()
    server.send(Reply(code=421))
    assert server.state is State.CLOSED


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (EHLO, "Ehlo"),
        (EHLO + MAIL, "Mail"),
        (b"NOOP\r\n", "Noop"),
        (b"XFOO\r\n", "UnknownCommand"),
        (b"DATA x\r\n", "CommandRejected"),
        (EHLO + MAIL + RCPT + b"DATA\r\n.\r\n", "EndOfMessage"),
        (EHLO + MAIL + RCPT + b"DATA\r\na\rb\r\n.\r\n", "MessageRejected"),
    ],
)
def test_3xx_only_answers_data(data: bytes, what: str) -> None:
    server = greeted()
    server.receive_data(data)
    while True:
        event = server.next_event()
        assert isinstance(event, Event)
        if type(event).__name__ == what:
            break
        if not isinstance(event, MessageData):
            server.send(server.default_reply())
    state = server.state
    with pytest.raises(LocalProtocolError):
        server.send(Reply(code=354, text=("go on",)))
    # Nothing changed: the right reply can still be sent.
    assert server.state is state
    assert server.awaiting_reply is event
    server.send(server.default_reply())


def test_3xx_cannot_be_the_greeting() -> None:
    server = ServerConnection()
    with pytest.raises(LocalProtocolError):
        server.send(Reply(code=354))
    assert server.state is State.CONNECTED
    assert server.default_reply() == server.greeting()


@pytest.mark.parametrize(
    ("code", "state"), [(220, State.GREETED), (554, State.REFUSED), (421, State.CLOSED), (450, State.CLOSED)]
)
def test_greeting_outcomes(code: int, state: State) -> None:
    server = ServerConnection()
    server.send(Reply(code=code))
    assert server.state is state


def test_failed_ehlo_keeps_state_and_name() -> None:
    server = greeted(data=EHLO)
    server.next_event()
    server.send(Reply(code=550, text=("go away",)))
    assert server.state is State.GREETED
    assert server.client_name is None
    answer(server, b"HELO other.example\r\n")
    assert server.client_name == "other.example"
    assert server.state is State.READY


def test_reply_to_quit_that_is_not_221() -> None:
    server = greeted(data=b"QUIT\r\n")
    server.next_event()
    server.send(Reply(code=500))
    assert server.state is State.GREETED


@pytest.mark.parametrize("code", [250, 451, 554])
def test_end_of_message_any_final_reply_ends_the_transaction(code: int) -> None:
    server = greeted()
    events = answer(server, EHLO + MAIL + RCPT + b"DATA\r\n")
    server.receive_data(b"x\r\n.\r\n")
    assert server.next_event() == MessageData(data=b"x\r\n")
    assert server.next_event() == EndOfMessage()
    server.send(Reply(code=code))
    assert server.state is State.READY
    assert server.mail is None
    assert len(events) == 4


# -- receive side errors ------------------------------------------------------------


def test_receive_buffer_overflow_allows_one_reply() -> None:
    server = greeted(ServerConfig(max_receive_buffer=1024), b"NOOP\r\n" * 200)
    with pytest.raises(RemoteProtocolError, match="1024") as info:
        server.next_event()
    assert server.state is State.ERROR
    reply = info.value.reply
    assert reply is not None
    assert (reply.code, reply.enhanced) == (421, "4.7.0")
    with pytest.raises(LocalProtocolError, match="failed"):
        server.next_event()
    assert server.send(reply) == b"421 4.7.0 Too much unprocessed input, closing connection\r\n"
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        server.send(reply)
    assert isinstance(server.next_event(), ConnectionClosed)


def test_receive_buffer_overflow_while_paused() -> None:
    server = greeted(ServerConfig(max_receive_buffer=1024), b"NOOP\r\n")
    assert isinstance(server.next_event(), Noop)
    server.receive_data(b"NOOP\r\n" * 200)  # the peer talks on, unanswered
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.reply is not None and info.value.reply.code == 421


def test_receive_buffer_bound_does_not_apply_to_message_content() -> None:
    server = greeted(ServerConfig(max_receive_buffer=1024))
    answer(server, EHLO + MAIL + RCPT + b"DATA\r\n")
    body = b"x" * 98 + b"\r\n"
    events = answer(server, body * 100 + b".\r\n")
    assert events[-1] == EndOfMessage()
    assert b"".join(e.data for e in events if isinstance(e, MessageData)) == body * 100


def test_eof_while_paused() -> None:
    server = greeted(data=b"NOOP\r\nNOOP\r\n")
    server.receive_data(b"")
    assert isinstance(server.next_event(), Noop)
    assert server.next_event() is PAUSED
    assert server.state is State.GREETED
    server.send(server.default_reply())
    assert isinstance(server.next_event(), Noop)
    assert server.next_event() is PAUSED
    server.send(server.default_reply())
    assert isinstance(server.next_event(), ConnectionClosed)
    assert server.state is State.CLOSED
    assert isinstance(server.next_event(), ConnectionClosed)


def test_eof_mid_data_delivers_nothing() -> None:
    server = greeted()
    answer(server, EHLO + MAIL + RCPT + b"DATA\r\n")
    events = answer(server, b"Subject: x\r\n\r\nbody\r\n.")
    server.receive_data(b"")
    events += [server.next_event()]  # type: ignore[list-item]
    assert not any(isinstance(e, EndOfMessage) for e in events)
    assert isinstance(events[-1], ConnectionClosed)
    assert server.state is State.CLOSED


def test_receive_data_after_eof() -> None:
    server = greeted()
    server.receive_data(b"")
    server.receive_data(b"")  # EOF twice is still EOF
    with pytest.raises(LocalProtocolError, match="after EOF"):
        server.receive_data(b"NOOP\r\n")
    assert server.trailing_data == (b"", True)


# -- configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_command_line": 511}, "max_command_line"),
        ({"max_message_size": 65535}, "max_message_size"),
        ({"max_recipients": 99}, "max_recipients"),
        ({"max_errors": 0}, "max_errors"),
        ({"max_receive_buffer": 1023}, "max_receive_buffer"),
        ({"max_data_line": 999}, "max_data_line"),
        ({"max_recipients": "1000"}, "max_recipients"),
        ({"max_errors": 2.5}, "max_errors"),
        ({"hostname": "bad host"}, "hostname"),
        ({"hostname": "mx.example\r\n250 forged"}, "hostname"),
        ({"hostname": ""}, "hostname"),
        ({"hostname": "[300.0.0.1]"}, "hostname"),
    ],
)
def test_server_config_validation(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=f"ServerConfig.{name}"):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_server_config_minimums_are_accepted() -> None:
    config = ServerConfig(
        hostname="[192.0.2.1]",
        max_command_line=512,
        max_message_size=65536,
        max_recipients=100,
        max_errors=1,
        max_receive_buffer=1024,
        max_data_line=1000,
    )
    assert ServerConnection(config).config is config
    assert ServerConnection().config == ServerConfig()


class Deliverby(Extension):
    """A stand-in for an extension the core does not ship (RFC 2852)."""

    keyword = "DELIVERBY"
    mail_parameters = frozenset({"BY"})
    rcpt_parameters = frozenset({"XRCPT"})
    mail_line_extra = 100

    def ehlo_line(self) -> str:
        return "DELIVERBY 120"

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        if value is None or not value.rstrip(";RN").isdigit():
            raise GrammarError(f"bad {name}", 501, "5.5.4")

    def check_mail(self, mail: Mail) -> Reply | None:
        if mail.parameters.get("BY") == "0":
            return Reply(code=550, text=("too soon",), enhanced="5.7.0")
        return None


def test_extensions_offered() -> None:
    server = ServerConnection(ServerConfig(hostname="mx.example", max_message_size=100_000))
    assert [type(ext) for ext in server.extensions] == [
        Pipelining, Size, EightBitMime, Chunking, BinaryMime, SmtpUtf8, Dsn,
        EnhancedStatusCodes, Limits, HelpExtension,
    ]
    reply = server.ehlo_reply()
    assert (reply.code, reply.enhanced) == (250, None)
    assert reply.text == (
        "mx.example", "PIPELINING", "SIZE 100000", "8BITMIME", "CHUNKING", "BINARYMIME",
        "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", "LIMITS RCPTMAX=1000", "HELP",
    )
    assert server.ehlo_reply("at your service").text[0] == "mx.example at your service"


def test_disabled_extensions_are_omitted() -> None:
    config = ServerConfig(
        pipelining=False, eightbitmime=False, smtputf8=False, dsn=False,
        enhanced_status_codes=False, help=False, chunking=False, limits=False,
        extra_extensions=(Deliverby(),),
    )
    server = ServerConnection(config)
    assert server.ehlo_reply().text == ("localhost", "SIZE 33554432", "DELIVERBY 120")
    # BINARYMIME goes with CHUNKING (RFC 3030 §3): off alone, CHUNKING stays.
    server = ServerConnection(ServerConfig(binarymime=False, max_transactions=5))
    text = server.ehlo_reply().text
    assert "CHUNKING" in text and "BINARYMIME" not in text
    assert "LIMITS RCPTMAX=1000 MAILMAX=5" in text


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_extra_extension_parameters(byte_at_a_time: bool) -> None:
    config = ServerConfig(extra_extensions=(Deliverby(),))
    data = EHLO + (
        b"MAIL FROM:<a@b.example> BY=x\r\n"
        b"MAIL FROM:<a@b.example> BY=0\r\n"
        b"MAIL FROM:<a@b.example> BY=120;R " + b"X" * 80 + b"=1\r\n"  # over 512 without the extra
        b"MAIL FROM:<a@b.example> BY=120;R\r\n"
        b"RCPT TO:<c@d.example> BY=5\r\n"
        b"RCPT TO:<c@d.example> XRCPT=5\r\n"
    )
    result = run(data, config, byte_at_a_time=byte_at_a_time)
    check_replies(result.replies, [250, "501 5.5.4", "550 5.7.0", "555 5.5.4", 250, 555, 250])


def test_enhanced_status_codes_off_strips_codes_on_the_wire() -> None:
    server = greeted(ServerConfig(enhanced_status_codes=False), EHLO + b"MAIL FROM:x\r\n")
    assert isinstance(server.next_event(), Ehlo)
    ehlo = server.send(server.default_reply())
    assert ehlo.startswith(b"250-localhost\r\n")
    assert b"ENHANCEDSTATUSCODES" not in ehlo
    event = server.next_event()
    assert isinstance(event, CommandRejected)
    assert event.reply.enhanced == "5.1.7"  # the event keeps it ...
    wire = server.send(server.default_reply())
    assert wire.startswith(b"501 Syntax error")  # ... the wire does not
    multi = Reply(code=250, text=("a", "b"), enhanced="2.0.0")
    server.receive_data(b"NOOP\r\n")
    server.next_event()
    assert server.send(multi) == b"250-a\r\n250 b\r\n"


# -- default replies ------------------------------------------------------------------


def test_default_reply_for_every_command() -> None:
    server = ServerConnection(ServerConfig(hostname="mx.example"))
    greeting = server.default_reply()
    assert greeting == server.greeting()
    assert greeting.code == 220 and greeting.text == ("mx.example ESMTP smtpproto",)
    assert server.greeting("hello").text == ("hello",)
    server.send(greeting)
    expected: list[tuple[bytes, type[Event], int, str | None]] = [
        (b"HELP\r\n", Help, 214, "2.0.0"),
        (b"HELO client.example\r\n", Helo, 250, None),
        (b"EHLO client.example\r\n", Ehlo, 250, None),
        (b"NOOP\r\n", Noop, 250, "2.0.0"),
        (b"VRFY x\r\n", Vrfy, 252, "2.5.0"),
        (b"EXPN x\r\n", Expn, 502, "5.5.1"),
        (b"XFOO\r\n", UnknownCommand, 500, "5.5.1"),
        (b"DATA x\r\n", CommandRejected, 501, "5.5.4"),
        (MAIL, Mail, 250, "2.1.0"),
        (RCPT, Rcpt, 250, "2.1.5"),
        (b"DATA\r\n", Data, 354, None),
        (b".\r\n", EndOfMessage, 250, "2.0.0"),
        (EHLO.replace(b"EHLO", b"HELO"), Helo, 250, None),
        (MAIL, Mail, 250, "2.1.0"),
        (RCPT, Rcpt, 250, "2.1.5"),
        (b"DATA\r\n", Data, 354, None),
        (b"a\nb\r\n.\r\n", MessageRejected, 554, "5.6.0"),
        (b"RSET\r\n", Rset, 250, "2.0.0"),
        (b"QUIT\r\n", Quit, 221, "2.0.0"),
    ]
    server.receive_data(b"".join(data for data, *_ in expected))
    for data, kind, code, enhanced in expected:
        while True:
            event = server.next_event()
            assert isinstance(event, Event), data
            if not isinstance(event, MessageData):
                break
        assert type(event) is kind, data
        reply = server.default_reply()
        assert (reply.code, reply.enhanced) == (code, enhanced), data
        if kind is Helo:
            assert reply.text == ("mx.example",)
        if kind is Ehlo:
            assert reply == server.ehlo_reply()
        if isinstance(event, (CommandRejected, MessageRejected)):
            assert reply is event.reply
        server.send(reply)
    assert server.state is State.CLOSED
    assert server.client_name == "client.example"


# -- message content and the attack classes --------------------------------------------

IN_DATA = EHLO + MAIL + RCPT + b"DATA\r\n"
SMUGGLED = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged\r\n"

# (id, fake end of data, whether it holds a bare CR or LF)
FAKE_ENDS = [
    ("lf_dot_lf", b"\n.\n", True),
    ("cr_dot_cr", b"\r.\r", True),
    ("lf_dot_crlf", b"\n.\r\n", True),
    ("crlf_dot_lf", b"\r\n.\n", True),
    ("crlf_dot_cr", b"\r\n.\r", True),
    ("cr_dot_crlf", b"\r.\r\n", True),
    ("cr_dot_lf", b"\r.\n", True),
    ("lf_dot_cr", b"\n.\r", True),
    ("lf_cr_dot_cr_lf", b"\n\r.\r\n", True),
    ("lf_nul_dot_nul_lf", b"\n\x00.\x00\n", True),
    ("cr_nul_dot_nul_cr", b"\r\x00.\x00\r", True),
    ("crlf_nul_dot_lf", b"\r\n\x00.\n", True),
    ("lf_dot_nul_crlf", b"\n.\x00\r\n", True),
    ("crlf_nul_dot_crlf", b"\r\n\x00.\r\n", False),
    ("crlf_dot_nul_crlf", b"\r\n.\x00\r\n", False),
    ("crlf_nul_dot_nul_crlf", b"\r\n\x00.\x00\r\n", False),
    ("crlf_dot_dot_crlf", b"\r\n..\r\n", False),
    ("crlf_space_dot_crlf", b"\r\n .\r\n", False),
]


def unstuff(content: bytes) -> bytes:
    """§4.5.2: one leading dot comes off every line, the first included."""
    return (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:]


@pytest.mark.parametrize("byte_at_a_time", MODES)
@pytest.mark.parametrize(("name", "fake_end", "bare"), FAKE_ENDS, ids=[f[0] for f in FAKE_ENDS])
def test_attack_inbound_smuggling(name: str, fake_end: bytes, bare: bool, byte_at_a_time: bool) -> None:
    # Attack class 1: only CRLF.CRLF ends the data.  Everything else stays
    # data; with a bare CR or LF in it the whole message is refused.
    content = b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED
    result = run(IN_DATA + content + b".\r\nQUIT\r\n", byte_at_a_time=byte_at_a_time)
    assert not any(
        isinstance(e, Mail) and e.reverse_path.startswith("evil") for e in result.events
    )
    assert not any(isinstance(e, Rcpt) and e.forward_path.startswith("victim") for e in result.events)
    if bare:
        assert result.kinds == [Ehlo, Mail, Rcpt, Data, MessageRejected, Quit, ConnectionClosed]
        check_replies(result.replies, [250, 250, 250, 354, "554 5.6.0", 221])
        # Nothing from the fault on was handed out.
        assert unstuff(content).startswith(result.content)
        assert b"evil" not in result.content
    else:
        assert result.kinds == [Ehlo, Mail, Rcpt, Data, EndOfMessage, Quit, ConnectionClosed]
        check_replies(result.replies, [250, 250, 250, 354, 250, 221])
        assert result.content == unstuff(content)


@pytest.mark.parametrize("byte_at_a_time", MODES)
@pytest.mark.parametrize(("name", "fake_end", "bare"), FAKE_ENDS, ids=[f[0] for f in FAKE_ENDS])
def test_attack_inbound_smuggling_allowed_bare_line_endings_are_literal(
    name: str, fake_end: bytes, bare: bool, byte_at_a_time: bool
) -> None:
    content = b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED
    result = run(
        IN_DATA + content + b".\r\nQUIT\r\n",
        ServerConfig(allow_bare_line_endings=True),
        byte_at_a_time=byte_at_a_time,
    )
    assert result.kinds == [Ehlo, Mail, Rcpt, Data, EndOfMessage, Quit, ConnectionClosed]
    assert result.content == unstuff(content)
    assert fake_end.replace(b"\r\n.", b"\r\n") in result.content


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_message_rejected_then_back_in_command_mode(byte_at_a_time: bool) -> None:
    result = run(IN_DATA + b"a\nb\r\n.\r\n" + MAIL, byte_at_a_time=byte_at_a_time)
    rejected = [e for e in result.events if isinstance(e, MessageRejected)][0]
    assert rejected.reason == "bare CR or LF in message data"
    assert result.kinds[-1] is Mail
    assert result.server.state is State.MAIL


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_attack_oversized_message_read_to_the_end_then_552(byte_at_a_time: bool) -> None:
    # Attack class 7: read to the end, hand out nothing past the limit, and
    # never fall back into command mode mid-body.
    limit = 65536
    line = b"x" * 98 + b"\r\n"
    content = line * 660 + b"QUIT\r\n" + MAIL + line * 20  # ~68 KB
    assert len(content) > limit
    result = run(
        IN_DATA + content + b".\r\nNOOP\r\n",
        ServerConfig(max_message_size=limit),
        byte_at_a_time=byte_at_a_time,
    )
    assert result.kinds == [Ehlo, Mail, Rcpt, Data, MessageRejected, Noop]
    check_replies(result.replies, [250, 250, 250, 354, "552 5.3.4", 250])
    assert len(result.content) <= limit
    assert content.startswith(result.content)
    assert result.server.state is State.READY


@pytest.mark.parametrize("byte_at_a_time", MODES)
@pytest.mark.parametrize(("extra", "accepted"), [(0, True), (1, False)])
def test_message_size_limit_is_exact(extra: int, accepted: bool, byte_at_a_time: bool) -> None:
    limit = 65536
    content = b"x" * (limit - 2 + extra) + b"\r\n"
    result = run(IN_DATA + content + b".\r\n", ServerConfig(max_message_size=limit), byte_at_a_time=byte_at_a_time)
    assert result.kinds[-1] is (EndOfMessage if accepted else MessageRejected)
    if accepted:
        assert result.content == content


@pytest.mark.parametrize("byte_at_a_time", MODES)
@pytest.mark.parametrize(
    ("content", "accepted"),
    [
        (b"x" * 998 + b"\r\n", True),
        (b"x" * 999 + b"\r\n", False),
        (b"short\r\n" + b"y" * 999 + b"\r\nshort\r\n", False),
        (b"." + b"." + b"x" * 997 + b"\r\n", True),  # the stuffing dot does not count
        (b"a\r\n" * 500 + b"z" * 998 + b"\r\n", True),
    ],
    ids=["998+crlf", "999+crlf", "999-in-the-middle", "stuffed-dot-not-counted", "998-after-500-lines"],
)
def test_max_data_line(content: bytes, accepted: bool, byte_at_a_time: bool) -> None:
    result = run(IN_DATA + content + b".\r\n" + b"NOOP\r\n", ServerConfig(max_data_line=1000), byte_at_a_time=byte_at_a_time)
    last_data_event = result.kinds[-2]
    if accepted:
        assert last_data_event is EndOfMessage
        assert result.content == unstuff(content)
    else:
        assert last_data_event is MessageRejected
        check_replies(result.replies[-2:], ["554 5.6.0", 250])
    assert result.kinds[-1] is Noop


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_no_data_line_limit_by_default(byte_at_a_time: bool) -> None:
    content = b"x" * 5000 + b"\r\n"
    result = run(IN_DATA + content + b".\r\n", byte_at_a_time=byte_at_a_time)
    assert result.kinds[-1] is EndOfMessage
    assert result.content == content


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_dot_unstuffing(byte_at_a_time: bool) -> None:
    content = b"..first\r\nmiddle\r\n..\r\n...three\r\n.x\r\n"
    result = run(IN_DATA + content + b".\r\n", byte_at_a_time=byte_at_a_time)
    assert result.content == b".first\r\nmiddle\r\n.\r\n..three\r\nx\r\n"
    assert result.kinds[-1] is EndOfMessage


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_empty_message(byte_at_a_time: bool) -> None:
    result = run(IN_DATA + b".\r\n", byte_at_a_time=byte_at_a_time)
    assert result.content == b""
    assert result.kinds[-1] is EndOfMessage


@pytest.mark.parametrize("byte_at_a_time", MODES)
def test_attack_line_without_crlf_is_bounded(byte_at_a_time: bool) -> None:
    # Attack class 7: a command line that never ends costs bounded memory
    # and one 500; the session resynchronises at the next LF.
    result = run(b"NOOP " + b"x" * 20000 + b"\r\nNOOP\r\n", byte_at_a_time=byte_at_a_time)
    assert result.kinds == [CommandRejected, Noop]
    assert len(result.server.trailing_data[0]) == 0


def test_attack_control_characters_in_commands() -> None:
    # Attack class 5: controls anywhere in a command line are refused.
    for control in [b"\x00", b"\r", b"\x01", b"\x1b", b"\x7f", b"\x0b", b"\x0c", b"\t"]:
        result = run(EHLO + b"MAIL FROM:<a" + control + b"@b.example>\r\n", byte_at_a_time=False)
        check_replies(result.replies, [250, "500 5.5.2"])
        assert result.kinds == [Ehlo, CommandRejected]


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a@[256.1.1.1]>",
        b"MAIL FROM:<" + b"a" * 65 + b"@b.example>",
        b"MAIL FROM:<a@" + b"b" * 256 + b">",
        b'MAIL FROM:<"unbalanced@b.example>',
        b"MAIL FROM:<a@b.example> ENVID=+00",
        b"MAIL FROM:<a@b.example> SIZE=1 SIZE=1",
        b"MAIL FROM:<\xe2\x82@b.example> SMTPUTF8",
        b"MAIL FROM:<a@[IPv6:fe80::1%25eth0]>",
    ],
)
def test_attack_parser_abuse_is_survivable(line: bytes) -> None:
    # Attack class 5: every malformed line is a 5xx and the session goes on.
    result = run(EHLO + line + b"\r\n" + MAIL, byte_at_a_time=False)
    assert result.kinds == [Ehlo, CommandRejected, Mail]
    assert 500 <= result.replies[1][0] < 600


# -- regressions: bugs found by these tests and fixed in the server core --------------


def accept_unknown(server: ServerConnection, event: Event) -> Reply | None:
    """An application that implements every unknown command (XFOO, say)."""
    if isinstance(event, UnknownCommand):
        return Reply(code=220, text=("done",), enhanced="2.0.0")
    return default_responder(server, event)


def test_accepted_unknown_commands_are_not_errors() -> None:
    result = run(
        b"XFOO ADDR=192.0.2.1\r\nXFOO ADDR=192.0.2.2\r\nNOOP\r\n",
        ServerConfig(max_errors=2),
        byte_at_a_time=False,
        responder=accept_unknown,
    )
    assert result.kinds == [UnknownCommand, UnknownCommand, Noop]
    check_replies(result.replies, [220, 220, 250])


def test_server_config_max_data_line_must_be_an_integer() -> None:
    with pytest.raises(ValueError, match="ServerConfig.max_data_line"):
        ServerConfig(max_data_line="2000")  # type: ignore[arg-type]
