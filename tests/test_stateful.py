"""Stateful property tests of both cores (hypothesis ``RuleBasedStateMachine``).

Theory of operation
-------------------
Three machines play random interleavings of valid and invalid traffic:

* :class:`ServerCoreMachine` is a hostile client in front of a
  ``ServerConnection``: its rules write valid commands, whole messages
  (stuffed by a reference implementation, or with smuggling ends), BDAT
  chunks with true or false sizes, SASL lines, garbage, over-long lines and
  pipeline floods into a wire, and other rules deliver any prefix of that
  wire (in one call, one byte at a time, or without reading events in
  between), pump the events, answer them with the core's suggestion or
  any other reply, complete a TLS handshake, or hang up at any point.
* :class:`ClientCoreMachine` is a hostile server in front of a
  ``ClientConnection``: commands and message content go out when the
  client allows them, and replies (fitting the command outstanding,
  random, malformed, bombs, unprompted 421s) come back cut anywhere.
* :class:`PairMachine` wires both cores together over two such wires, so
  that every command and reply crosses a real parser with arbitrary cuts.

Every call goes through ``fuzz/oracle.py`` (``CheckedServer`` and
``CheckedClient``), which asserts the invariants after every step: only
the documented ``LocalProtocolError`` / ``RemoteProtocolError``, bounded
buffers, replies in order and one per command (RFC 5321 §4.2; LMTP's
per-recipient replies, RFC 2033 §4.2, aside), no event after an error, and
no message reported complete that was not completely received
(§4.1.1.4, RFC 3030 §2).  The pair adds what only two cores can show:
the server receives exactly the commands the client sent, in order, the
client receives exactly the server's replies, each matched to the command
the server answered, every message the server delivers is one the
client sent, intact, and neither core ever raises a protocol error
against the other.

The settings keep the file under a minute on a loaded two-core machine;
the coverage-guided fuzzers under ``fuzz/`` are for long runs.
"""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from smtpproto import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    ClientConfig,
    ClientConnection,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Helo,
    Lhlo,
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
    StartTLS,
    State,
    Vrfy,
)
from smtpproto._commands import format_command
from smtpproto._replies import format_reply
from smtpproto.extensions import AuthExtension, Chunking, StartTls
from smtpproto.sasl import CheckPassword, CheckToken
from smtpproto.testing import (
    command_lines,
    commands,
    message_bodies,
    mutated_bytes,
    replies,
    session_transcripts,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

from oracle import GREETING, CheckedClient, CheckedServer, normalise  # noqa: E402

#: Sized for under a minute for the whole file on a loaded 2-core machine;
#: ``SMTPPROTO_STATEFUL_EXAMPLES=N`` runs N examples per machine instead
#: (long runs: docs/fuzzing.rst).
STATEFUL = settings(
    max_examples=int(os.environ.get("SMTPPROTO_STATEFUL_EXAMPLES", "30")),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def stuff(body: bytes) -> bytes:
    """*body* as a correct client writes it after the 354 (reference
    implementation of RFC 5321 §4.5.2, independent of the core)."""
    lines = normalise(body).split(b"\r\n")
    return b"\r\n".join(b"." + line if line[:1] == b"." else line for line in lines) + b".\r\n"


_PLAIN = base64.b64encode(b"\x00alice\x00secret")
#: MAIL lines with the parameters of SIZE, 8BITMIME, BINARYMIME, SMTPUTF8, DSN.
MAIL_LINES = [
    b"MAIL FROM:<a@example.org>\r\n",
    b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<> BODY=BINARYMIME\r\n",
    b"MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8 RET=HDRS ENVID=QQ1\r\n",
]
RCPT_LINES = [
    b"RCPT TO:<b@example.net>\r\n",
    b"RCPT TO:<c@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@example.net\r\n",
    b"RCPT TO:<Postmaster>\r\n",
]
#: SASL response lines (RFC 4954 §4): PLAIN, a LOGIN user name, cancel.
SASL_LINES = [_PLAIN + b"\r\n", base64.b64encode(b"alice") + b"\r\n", b"*\r\n"]
#: Command lines real clients send, to reach deep states quickly.
TYPICAL_LINES = [
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"LHLO client.example\r\n",
    *MAIL_LINES,
    *RCPT_LINES,
    b"DATA\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY bob\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN " + _PLAIN + b"\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH CRAM-MD5\r\n",
    *SASL_LINES,
    b"=\r\n",
    b"XCLIENT ADDR=192.0.2.7\r\n",
]
_HOSTILE_ENDS = [b".\r\n", b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b".\x00\r\n", b""]


@dataclass(frozen=True)
class ServerSetup:
    """A server configuration the machines start from."""

    config: ServerConfig
    tls: bool = False
    trusted: bool = False


_BASE = ServerConfig(
    max_errors=6,
    max_receive_buffer=2048,
    max_message_size=65536,
    max_bdat_discard=2048,
    max_recipients=100,
)
SERVER_SETUPS = {
    "plain": ServerSetup(_BASE),
    # The default buffer bound, so that the line bound (which an AUTH line
    # sets, RFC 4954 §4) is what over-long lines meet.
    "lenient": ServerSetup(
        replace(_BASE, lenient=True, max_receive_buffer=ServerConfig().max_receive_buffer),
        trusted=True,
    ),
    "auth": ServerSetup(
        replace(
            _BASE, starttls=True, auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
            auth_plaintext=True, max_auth_failures=2,
        )
    ),
    "lmtp": ServerSetup(replace(_BASE, lmtp=True)),
    "strict": ServerSetup(
        replace(
            _BASE, pipelining=False, chunking=False, max_data_line=1000,
            allow_bare_line_endings=True,
        )
    ),
    "proxy": ServerSetup(replace(_BASE, proxy_protocol=True), trusted=True),
}

#: Replies an application might send to anything; the core must take each
#: or refuse it with LocalProtocolError, changing nothing.
ANY_REPLIES = [
    Reply(code=code, text=(text,), enhanced=enhanced)
    for code, text, enhanced in [
        (250, "OK", "2.0.0"),
        (251, "will forward", None),
        (235, "ok", "2.7.0"),
        (221, "bye", "2.0.0"),
        (334, "", None),
        (334, "VXNlcm5hbWU6", None),
        (354, "go ahead", None),
        (421, "closing", "4.3.2"),
        (450, "busy", "4.2.1"),
        (452, "too many", "4.5.3"),
        (500, "what", "5.5.2"),
        (503, "sequence", "5.5.1"),
        (550, "no", "5.7.1"),
        (552, "too big", "5.3.4"),
        (554, "failed", "5.5.0"),
    ]
] + [Reply(code=250, text=("first", "second", "third"))]


def bdat_chunk(data: bytes, last: bool, size: int) -> bytes:
    """A BDAT command line declaring *size* octets, then *data* (RFC 3030 §2)."""
    return b"BDAT %d%s\r\n" % (size, b" LAST" if last else b"") + data


def _cuts(data: st.DataObject, wire: bytes) -> list[bytes]:
    """*wire* cut at up to four points drawn from *data*."""
    if len(wire) < 2:
        return [wire] if wire else []
    points = data.draw(
        st.lists(st.integers(1, len(wire) - 1), max_size=4, unique=True).map(sorted), label="cuts"
    )
    bounds = [0, *points, len(wire)]
    return [wire[a:b] for a, b in zip(bounds, bounds[1:])]


#: What the hostile client may write, by name (see ``ServerCoreMachine.write``).
CLIENT_WRITES: dict[str, st.SearchStrategy[bytes]] = {
    "typical": st.sampled_from(TYPICAL_LINES),
    "command": commands().map(format_command),
    "line": command_lines(),
    "message": st.builds(
        lambda body, end, stuffed: stuff(body) if stuffed and end == b".\r\n" else body + end,
        message_bodies(),
        st.sampled_from(_HOSTILE_ENDS),
        st.booleans(),
    ),
    "bdat": st.builds(
        lambda data, last, lie: bdat_chunk(data, last, len(data) if lie is None else lie),
        st.binary(max_size=80),
        st.booleans(),
        st.one_of(st.none(), st.integers(0, 100)),
    ),
    "garbage": st.binary(max_size=40),
    "long line": st.builds(
        lambda size, end: b"NOOP " + b"x" * size + end,
        st.integers(400, 14000),
        st.sampled_from([b"\r\n", b"\n", b""]),
    ),
    "flood": st.integers(10, 400).map(lambda count: b"NOOP\r\n" * count),
    "transcript": st.one_of(session_transcripts(), mutated_bytes(session_transcripts())),
}


class ServerCoreMachine(RuleBasedStateMachine):
    """A hostile client in front of a ``ServerConnection``."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: CheckedServer | None = None
        self.wire = bytearray()
        self.greeting_code = 220
        self.credentials_ok = True

    @property
    def server(self) -> CheckedServer:
        assert self.checked is not None
        return self.checked

    @initialize(
        kind=st.sampled_from(sorted(SERVER_SETUPS)),
        greeting=st.sampled_from([220, 220, 220, 554]),
        credentials_ok=st.booleans(),
    )
    def start(self, kind: str, greeting: int, credentials_ok: bool) -> None:
        self._begin(kind, greeting, credentials_ok)

    @precondition(lambda self: self.server.done)
    @rule(
        kind=st.sampled_from(sorted(SERVER_SETUPS)),
        greeting=st.sampled_from([220, 220, 220, 554]),
        credentials_ok=st.booleans(),
    )
    def next_session(self, kind: str, greeting: int, credentials_ok: bool) -> None:
        """The session is over: a new client connects."""
        self._begin(kind, greeting, credentials_ok)

    def _begin(self, kind: str, greeting: int, credentials_ok: bool) -> None:
        self.wire.clear()
        setup = SERVER_SETUPS[kind]
        self.checked = CheckedServer(
            ServerConnection(setup.config, tls=setup.tls, trusted=setup.trusted)
        )
        self.greeting_code = greeting
        self.credentials_ok = credentials_ok
        if setup.config.proxy_protocol:
            self.wire += b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"
        self.pump([])

    @rule(what=st.sampled_from(sorted(CLIENT_WRITES)), data=st.data())
    def write(self, what: str, data: st.DataObject) -> None:
        """The client writes something valid, invalid or hostile: commands,
        raw lines, message content (stuffed by the reference, or ending in
        a smuggling attempt, attack class 1), BDAT chunks with true or false
        sizes, garbage, over-long lines, a pipeline flood (attack class 7),
        a whole session, mutated or not."""
        self.wire += data.draw(CLIENT_WRITES[what], label=what)

    @precondition(lambda self: not self.server.done)
    @rule(data=st.data(), rounds=st.integers(1, 6))
    def progress(self, data: st.DataObject, rounds: int) -> None:
        """For a few rounds, the client writes the next valid command for
        the server's state, and the wire arrives in random cuts, read and
        answered as it comes: this carries sessions deep (AUTH, STARTTLS,
        DATA, BDAT, LMTP...) between the hostile steps."""
        for _ in range(rounds):
            if self.server.done:
                return
            self.wire += data.draw(self._next_valid(), label="next")
            for piece in _cuts(data, bytes(self.wire)):
                self._receive(piece)
                self.pump([], handshake=True)
            self.wire.clear()

    def _next_valid(self) -> st.SearchStrategy[bytes]:
        server = self.server.server
        state = server.state
        offered = {type(ext) for ext in server.extensions}
        if state is State.GREETED:
            return st.just(b"LHLO c.example\r\n" if server.config.lmtp else b"EHLO c.example\r\n")
        if state is State.READY:
            options = list(MAIL_LINES)
            if StartTls in offered:
                options.append(b"STARTTLS\r\n")
            if AuthExtension in offered and not server.authenticated:
                options += [b"AUTH PLAIN " + _PLAIN + b"\r\n", b"AUTH LOGIN\r\n"]
            return st.sampled_from(options)
        if state is State.MAIL:
            return st.sampled_from(RCPT_LINES)
        if state is State.RCPT:
            options = [b"RCPT TO:<d@example.net>\r\n", b"DATA\r\n"]
            if Chunking in offered:
                options.append(b"BDAT 5\r\nHello")
                options.append(b"BDAT 7 LAST\r\n.\r\nBye\n")
            return st.sampled_from(options)
        if state is State.DATA:
            # Mostly a correct message; now and then one ending in a
            # smuggling attempt (attack class 1) that must stay data.
            return st.one_of(message_bodies().map(stuff), CLIENT_WRITES["message"])
        if state is State.BDAT:
            return st.binary(max_size=50).map(lambda data: bdat_chunk(data, True, len(data)))
        if state is State.AUTH:
            return st.sampled_from(SASL_LINES)
        if state is State.TLS:
            return st.just(b"")
        return st.just(b"RSET\r\n" if state is State.BDAT_FAILED else b"QUIT\r\n")

    # -- delivery ---------------------------------------------------------

    @precondition(lambda self: bool(self.wire) and not self.server.eof)
    @rule(data=st.data(), how=st.sampled_from(["read", "unread", "bytewise"]))
    def deliver(self, data: st.DataObject, how: str) -> None:
        """Any prefix of the wire: in one call, then read or not (the
        core's buffer grows across calls), or one byte at a time, read
        after each."""
        count = data.draw(st.integers(1, len(self.wire)), label="octets")
        head = bytes(self.wire[:count])
        del self.wire[:count]
        if how == "bytewise":
            for index in range(len(head)):
                self._receive(head[index : index + 1])
                self.pump([])
            return
        self._receive(head)
        if how == "read":
            self.pump([])

    @rule(answers=st.lists(st.sampled_from(ANY_REPLIES), max_size=6))
    def pump_rule(self, answers: list[Reply]) -> None:
        """Read events; answer the first few with arbitrary replies."""
        self.pump(answers)

    @precondition(lambda self: not self.server.eof and not self.server.done)
    @rule(how=st.sampled_from(["eof", "421"]))
    def end(self, how: str) -> None:
        """EOF anywhere (the rest of the wire is never sent), or the
        application's unprompted 421 (§3.8), once every reply owed went."""
        if how == "eof":
            self.wire.clear()
            self._receive(b"")
            self.pump([])
            assert self.server.done, "after EOF and every reply the session must be over"
        elif not self.server.server.replies_due:
            self.server.send(Reply(code=421, text=("shutting down",), enhanced="4.3.2"))
            assert self.server.done

    @precondition(lambda self: self.server.server.state is State.TLS and not self.server.done)
    @rule()
    def tls_handshake(self) -> None:
        try:
            self.server.tls_established()
        except RemoteProtocolError as exc:
            self._failed(exc)

    # -- driving ------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        if not self.server.done or data == b"":
            self.server.receive(data)

    def _failed(self, exc: RemoteProtocolError) -> None:
        if exc.reply is not None:
            self.server.send(exc.reply)
        self.server.check_after_error()

    def _default(self, event: Event | None) -> Reply:
        server = self.server.server
        if event is None:
            if self.greeting_code == 554:
                return Reply(code=554, text=("not here",), enhanced="5.3.2")
            return server.greeting()
        if isinstance(event, (Auth, AuthResponse)):
            request = server.auth_request
            asks_verdict = isinstance(request, (CheckPassword, CheckToken))
            return server.auth_reply(self.credentials_ok if asks_verdict else None)
        return server.default_reply()

    def _answer(self, answers: list[Reply]) -> None:
        checked = self.server
        server = checked.server
        if server.config.proxy_protocol and server.proxy is None:
            return
        while server.replies_due and not checked.done:
            event = server.awaiting_reply
            if answers:
                try:
                    checked.send(answers.pop(0))
                    continue
                except LocalProtocolError:
                    pass  # refused, and nothing changed (checked)
            checked.send(self._default(event))

    def pump(self, answers: list[Reply], *, handshake: bool = False) -> None:
        """Read events and answer them; with *handshake*, complete the TLS
        handshake once the 220 to STARTTLS went out (if nothing was
        pipelined behind it)."""
        checked = self.server
        try:
            for _ in range(len(checked.stream) + 200):
                if checked.done:
                    return
                # Asked again while a reply is owed, the core must pause
                # (RFC 2920 §3.1: pipelined commands are judged in order).
                event = checked.next_event()
                if event is PAUSED and checked.server.replies_due:
                    self._answer(answers)
                    continue
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    return
                if event is PAUSED:
                    if handshake and checked.server.state is State.TLS:
                        if not checked.server.trailing_data[0]:
                            checked.tls_established()
                            continue
                    return
            raise AssertionError("the server makes no progress")
        except RemoteProtocolError as exc:
            self._failed(exc)

    @invariant()
    def holds(self) -> None:
        if self.checked is not None:
            self.checked.check()


# -- the client -------------------------------------------------------------


_CAPABILITIES = [
    "PIPELINING",
    "SIZE 1000000",
    "SIZE",
    "8BITMIME",
    "CHUNKING",
    "BINARYMIME",
    "SMTPUTF8",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "STARTTLS",
    "AUTH PLAIN LOGIN",
    "LIMITS RCPTMAX=2 MAILMAX=2",
]

CLIENT_SETUPS = {
    "plain": (ClientConfig(allow_plaintext_auth=True), False),
    "lenient": (ClientConfig(lenient=True), False),
    "lmtp": (ClientConfig(lmtp=True, allow_plaintext_auth=True), False),
    "small": (ClientConfig(max_reply_line=512, max_reply_lines=6, max_pending=4), False),
    "tls": (ClientConfig(), True),
}

#: The client steps the machines take, each built for the current state.
STEPS = [
    "hello", "mail", "rcpt", "data", "rset", "quit", "noop", "vrfy", "starttls",
    "auth-plain", "auth-login", "bdat", "bdat-last", "helo", "content", "sasl",
]


def client_step(client: ClientConnection, step: str, body: bytes) -> list[Event]:
    """The events of *step* (a name from :data:`STEPS`) for *client*."""
    if step == "hello":
        name = "client.example"
        return [Lhlo(domain=name) if client.config.lmtp else Ehlo(domain=name)]
    if step == "helo":
        return [Helo(domain="client.example")]
    if step == "mail":
        params: dict[str, str | None] = {}
        if client.capabilities.eightbitmime:
            params["BODY"] = "8BITMIME"
        if client.capabilities.size is not None:
            params["SIZE"] = str(len(body))
        return [Mail(reverse_path="a@example.org", parameters=params)]
    if step == "rcpt":
        return [Rcpt(forward_path=f"r{len(client.pending)}@example.net")]
    if step in ("bdat", "bdat-last"):
        last = step == "bdat-last"
        end: Event = EndOfMessage() if last else EndOfChunk()
        return [Bdat(size=len(body), last=last), MessageData(data=body), end]
    if step == "auth-plain":
        return [Auth(mechanism="PLAIN", initial_response=b"\x00alice\x00secret")]
    if step == "auth-login":
        return [Auth(mechanism="LOGIN")]
    if step == "content":
        half = len(body) // 2
        return [MessageData(data=body[:half]), MessageData(data=body[half:]), EndOfMessage()]
    if step == "sasl":
        challenge = client.challenge or b""
        return [AuthResponse(data=b"alice" if challenge.startswith(b"User") else b"secret")]
    simple: dict[str, Event] = {
        "data": Data(), "rset": Rset(), "quit": Quit(), "noop": Noop(),
        "vrfy": Vrfy(text="bob"), "starttls": StartTLS(),
    }
    return [simple[step]]


def natural_steps(client: ClientConnection) -> list[str]:
    """The steps a real client may take next in *client*'s projected state."""
    caps = client.capabilities
    state = client.projected_state()
    if client.state is State.CONNECTED or client.state is State.TLS:
        return []
    if state is State.GREETED:
        return ["hello"]
    if state is State.READY:
        steps = ["mail", "mail"]
        if caps.starttls and not client.tls:
            steps.append("starttls")
        if caps.auth_mechanisms and not client.authenticated:
            steps += ["auth-plain", "auth-login"]
        return steps
    if state is State.MAIL:
        return ["rcpt"]
    if state is State.RCPT:
        return ["rcpt", "data", "bdat", "bdat-last"] if caps.chunking else ["rcpt", "data"]
    if state is State.DATA and not client.pending:
        return ["content"]
    if state is State.BDAT:
        return ["bdat", "bdat-last"]
    if state is State.AUTH and not client.pending:
        return ["sasl"]
    if state in (State.BDAT_FAILED, State.REFUSED):
        return ["rset" if state is State.BDAT_FAILED else "quit"]
    return []


def send_all(checked: CheckedClient, events: list[Event]) -> bool:
    """Send *events* until the core refuses one (documented); True if all went."""
    for event in events:
        try:
            checked.send(event)
        except LocalProtocolError:
            return False
    return True


def fitting_reply(head: object, ok: bool, capabilities: list[str]) -> bytes:
    """What a real server answers to the command *head* (GREETING for the
    greeting), successfully or not."""
    if head == GREETING:
        return b"220 server.example ESMTP\r\n" if ok else b"554 5.3.2 go away\r\n"
    if isinstance(head, (Ehlo, Lhlo)) and ok:
        lines = ["server.example", *capabilities]
        return format_reply(Reply(code=250, text=tuple(lines)))
    if isinstance(head, Data):
        return b"354 go ahead\r\n" if ok else b"554 5.5.1 no valid recipients\r\n"
    if isinstance(head, StartTLS):
        return b"220 2.0.0 ready\r\n" if ok else b"454 4.7.0 TLS not available\r\n"
    if isinstance(head, Quit):
        return b"221 2.0.0 bye\r\n"
    if isinstance(head, (Auth, AuthResponse)):
        if ok and isinstance(head, Auth) and head.initial_response is None:
            return b"334 VXNlcm5hbWU6\r\n"
        return b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 bad credentials\r\n"
    if isinstance(head, AuthCancel):
        return b"501 5.7.0 cancelled\r\n"
    if isinstance(head, Rcpt) and not ok:
        return b"452 4.5.3 too many recipients\r\n"
    return b"250 2.0.0 ok\r\n" if ok else b"550 5.7.1 refused\r\n"


#: What the hostile server may write, by name (see ``ClientCoreMachine.write``).
SERVER_WRITES: dict[str, st.SearchStrategy[bytes]] = {
    "reply": replies().map(format_reply),
    "garbage": st.binary(max_size=40),
    "mutated": mutated_bytes(replies().map(format_reply)),
    "long line": st.builds(
        lambda size, end: b"250 " + b"y" * size + end,
        st.integers(400, 5000),
        st.sampled_from([b"\r\n", b""]),
    ),
    "bomb": st.integers(2, 300).map(lambda count: b"250-x\r\n" * count + b"250 x\r\n"),
    "hostile": st.sampled_from(
        [
            b"250-a\r\n251 b\r\n",
            b"250 ok\n",
            b"421 4.3.2 shutting down\r\n",
            b"334 not base64!\r\n",
            b"334-VXNl\r\n334 cm5hbWU6\r\n",
            b"199 what\r\n",
            b"250\r\n",
            b"354 go\r\n",
            b"220 ready\r\n250 injected\r\n",
        ]
    ),
}


class ClientCoreMachine(RuleBasedStateMachine):
    """A hostile server in front of a ``ClientConnection``."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: CheckedClient | None = None
        self.wire = bytearray()

    @property
    def client(self) -> CheckedClient:
        assert self.checked is not None
        return self.checked

    @initialize(kind=st.sampled_from(sorted(CLIENT_SETUPS)))
    def start(self, kind: str) -> None:
        self._begin(kind)

    @precondition(lambda self: self.client.done)
    @rule(kind=st.sampled_from(sorted(CLIENT_SETUPS)))
    def next_session(self, kind: str) -> None:
        """The session is over: the client connects again."""
        self._begin(kind)

    def _begin(self, kind: str) -> None:
        self.wire.clear()
        config, tls = CLIENT_SETUPS[kind]
        self.checked = CheckedClient(ClientConnection(config, tls=tls))

    @rule(
        step=st.one_of(st.sampled_from(STEPS), commands()),
        body=message_bodies(max_line_length=200),
    )
    def send(self, step: str | Command, body: bytes) -> None:
        """Any step or command, whether the session allows it or not (the
        core refuses what it must, changing nothing; after the end it
        refuses everything)."""
        if isinstance(step, Command):
            send_all(self.client, [step])
        else:
            send_all(self.client, client_step(self.client.client, step, body))

    @precondition(lambda self: not self.client.done)
    @rule(
        data=st.data(),
        capabilities=st.lists(st.sampled_from(_CAPABILITIES), unique=True),
        body=message_bodies(max_line_length=200),
    )
    def converse(self, data: st.DataObject, capabilities: list[str], body: bytes) -> None:
        """A round of a real session: the natural next step, replies that
        fit every command outstanding (mostly successes), delivered in
        random cuts and read."""
        for _ in range(data.draw(st.integers(1, 8), label="rounds")):
            if self.client.done:
                return
            # A batch of one or more steps (RFC 2920 pipelining, where the
            # server offered it and the steps allow it).
            for _ in range(data.draw(st.integers(1, 4), label="batch")):
                steps = natural_steps(self.client.client)
                if not steps:
                    break
                step = data.draw(st.sampled_from(steps), label="step")
                if not send_all(self.client, client_step(self.client.client, step, body)):
                    break
            for head in list(self.client.outstanding):
                ok = data.draw(st.integers(0, 7), label="fails") != 0
                self.wire += fitting_reply(head, ok, capabilities)
            for piece in _cuts(data, bytes(self.wire)):
                self._receive(piece)
                self.pump()
            self.wire.clear()
            if self.client.client.state is State.TLS and not self.client.done:
                self.tls_handshake()

    @rule(what=st.sampled_from(sorted(SERVER_WRITES)), data=st.data())
    def write(self, what: str, data: st.DataObject) -> None:
        """The server writes any reply, garbage, a mutated reply, or an
        attack (reply bombs, code changes, bare LF, bad 334s, injection
        after the 220 to STARTTLS)."""
        self.wire += data.draw(SERVER_WRITES[what], label=what)

    @precondition(lambda self: bool(self.wire) and not self.client.eof)
    @rule(data=st.data(), how=st.sampled_from(["read", "unread", "bytewise"]))
    def deliver(self, data: st.DataObject, how: str) -> None:
        """Any prefix of the wire, in one call (read or not) or one byte at
        a time."""
        count = data.draw(st.integers(1, len(self.wire)), label="octets")
        head = bytes(self.wire[:count])
        del self.wire[:count]
        if how == "bytewise":
            for index in range(len(head)):
                self._receive(head[index : index + 1])
                self.pump()
            return
        self._receive(head)
        if how == "read":
            self.pump()

    @rule()
    def pump_rule(self) -> None:
        self.pump()

    @precondition(lambda self: not self.client.eof)
    @rule()
    def hang_up(self) -> None:
        self.wire.clear()
        self._receive(b"")
        self.pump()
        assert self.client.done, "after EOF the session must be over"

    @precondition(lambda self: self.client.client.state is State.TLS and not self.client.done)
    @rule()
    def tls_handshake(self) -> None:
        try:
            self.client.tls_established()
        except RemoteProtocolError:
            self.client.check_after_error()

    def _receive(self, data: bytes) -> None:
        if not self.client.done or data == b"":
            self.client.receive(data)

    def pump(self) -> None:
        checked = self.client
        try:
            for _ in range(len(checked.stream) + 100):
                if checked.done:
                    return
                event = checked.next_event()
                if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
                    return
            raise AssertionError("the client makes no progress")
        except RemoteProtocolError:
            checked.check_after_error()

    @invariant()
    def holds(self) -> None:
        if self.checked is not None:
            self.checked.check()


# -- both cores, wired together ---------------------------------------------------


# The default max_receive_buffer: with a small one, a pipelined BDAT chunk
# is mistaken for a command flood (tests/test_fuzz_regressions.py,
# test_pipelined_bdat_chunk_over_the_input_bound_is_not_a_flood).
_PAIR_BASE = replace(_BASE, max_receive_buffer=ServerConfig().max_receive_buffer)
PAIR_SETUPS = {
    "plain": (ServerSetup(replace(_PAIR_BASE, starttls=True)), ClientConfig()),
    "auth": (
        ServerSetup(replace(_PAIR_BASE, auth_mechanisms=("PLAIN", "LOGIN"), auth_plaintext=True)),
        ClientConfig(allow_plaintext_auth=True),
    ),
    "lmtp": (ServerSetup(replace(_PAIR_BASE, lmtp=True)), ClientConfig(lmtp=True)),
    "strict": (
        ServerSetup(
            replace(
                SERVER_SETUPS["strict"].config, max_receive_buffer=_PAIR_BASE.max_receive_buffer
            )
        ),
        ClientConfig(),
    ),
}

#: Refusals the server's application may give instead of the default.
REFUSALS = [
    Reply(code=550, text=("no",), enhanced="5.7.1"),
    Reply(code=451, text=("later",), enhanced="4.3.0"),
    Reply(code=452, text=("too many",), enhanced="4.5.3"),
]


def _counterpart(event: Event | None) -> object:
    """What the client's model should hold for the server *event* a reply
    answers (GREETING for the greeting)."""
    if event is None:
        return GREETING
    if isinstance(event, CommandRejected):
        return event.command
    return event


class PairMachine(RuleBasedStateMachine):
    """A client core and a server core over two wires cut anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.pair: tuple[CheckedClient, CheckedServer] | None = None
        self.to_server = bytearray()
        self.to_client = bytearray()
        #: Commands and SASL lines the client sent, in order.
        self.sent: list[Event] = []
        #: For each message the client completed, the contents the server
        #: may deliver for it (for BDAT: the chunks from any point on, since
        #: chunks refused before the recipients were accepted are no part
        #: of the message, RFC 3030 §2).
        self.messages: list[set[bytes]] = []
        self._body = bytearray()
        self._chunks: list[bytes] = []

    @property
    def client(self) -> CheckedClient:
        assert self.pair is not None
        return self.pair[0]

    @property
    def server(self) -> CheckedServer:
        assert self.pair is not None
        return self.pair[1]

    @initialize(kind=st.sampled_from(sorted(PAIR_SETUPS)))
    def start(self, kind: str) -> None:
        self._begin(kind)

    @precondition(lambda self: self.client.done and self.server.done)
    @rule(kind=st.sampled_from(sorted(PAIR_SETUPS)))
    def next_session(self, kind: str) -> None:
        """Both sides are done: a new connection."""
        self._begin(kind)

    def _begin(self, kind: str) -> None:
        setup, config = PAIR_SETUPS[kind]
        core = ServerConnection(setup.config, tls=setup.tls, trusted=setup.trusted)
        server = CheckedServer(core)
        self.pair = (CheckedClient(ClientConnection(config)), server)
        self.to_server.clear()
        self.to_client[:] = server.send(server.server.greeting())
        self.sent, self.messages = [], []
        self._body, self._chunks = bytearray(), []

    # -- the client's side --------------------------------------------------------

    @rule(step=st.sampled_from(STEPS), body=message_bodies(max_line_length=200))
    def step(self, step: str, body: bytes) -> None:
        """Any step, allowed now or not (after the end, too: the core
        refuses everything then, changing nothing)."""
        for event in client_step(self.client.client, step, body):
            if not self._send(event):
                return

    @precondition(lambda self: not self.client.done)
    @rule(
        data=st.data(),
        body=message_bodies(max_line_length=200),
        refusals=st.lists(st.one_of(st.none(), st.sampled_from(REFUSALS)), max_size=4),
    )
    def converse(self, data: st.DataObject, body: bytes, refusals: list[Reply | None]) -> None:
        """A round trip: the client's natural next step, both wires
        delivered in random cuts, the server answering (mostly with its
        core's suggestion), the client reading."""
        for _ in range(data.draw(st.integers(1, 8), label="rounds")):
            for _ in range(data.draw(st.integers(1, 4), label="batch")):
                steps = natural_steps(self.client.client)
                sent = len(self.sent)
                if steps:
                    self.step(data.draw(st.sampled_from(steps), label="step"), body)
                if len(self.sent) == sent:
                    break  # nothing more may go before replies
            for piece in _cuts(data, bytes(self.to_server)):
                if not self.server.done:
                    self.server.receive(piece)
                self.serve(refusals)
            self.to_server.clear()
            for piece in _cuts(data, bytes(self.to_client)):
                if not self.client.done:
                    self.client.receive(piece)
                self.read_replies()
            self.to_client.clear()
            if self.client.client.state is State.TLS and self.server.server.state is State.TLS:
                self.tls_handshake()
            # Now and then a side hangs up, at any point of the session.
            hang = data.draw(st.integers(0, 15), label="hang up")
            if hang < 2:
                self.hang_up("client" if hang == 0 else "server")
            self._close_finished()

    def _send(self, event: Event) -> bool:
        checked = self.client
        data_state = checked.client.state is State.DATA
        in_chunk = bool(checked.outstanding) and isinstance(checked.outstanding[-1], Bdat)
        try:
            self.to_server += checked.send(event)
        except LocalProtocolError:
            return False
        if isinstance(event, (Command, AuthResponse, AuthCancel)):
            self.sent.append(event)
        if isinstance(event, Bdat):
            self._chunks.append(b"")
        elif isinstance(event, MessageData):
            if data_state:
                self._body += event.data
            else:
                self._chunks[-1] += event.data
        elif isinstance(event, EndOfMessage):
            if data_state and not in_chunk:
                self.messages.append({normalise(bytes(self._body))})
            else:
                chunks = self._chunks
                self.messages.append({b"".join(chunks[start:]) for start in range(len(chunks))})
            self._body, self._chunks = bytearray(), []
        elif isinstance(event, (Mail, Rset, Ehlo, Lhlo, Helo)):
            self._body, self._chunks = bytearray(), []
        return True

    # -- the wires ------------------------------------------------------------

    @precondition(lambda self: bool(self.to_server) and not self.server.eof)
    @rule(
        data=st.data(),
        then=st.sampled_from(["read", "unread", "hang up"]),
        refusals=st.lists(st.one_of(st.none(), st.sampled_from(REFUSALS)), max_size=4),
    )
    def deliver_to_server(
        self, data: st.DataObject, then: str, refusals: list[Reply | None]
    ) -> None:
        """Any prefix of the client's wire; the server reads it or not, or
        the client hangs up right after it."""
        count = data.draw(st.integers(1, len(self.to_server)), label="octets")
        if not self.server.done:
            self.server.receive(bytes(self.to_server[:count]))
        del self.to_server[:count]
        if then == "read":
            self.serve(refusals)
        elif then == "hang up":
            self.hang_up("client")

    @precondition(lambda self: bool(self.to_client) and not self.client.eof)
    @rule(data=st.data(), then=st.sampled_from(["read", "unread", "hang up"]))
    def deliver_to_client(self, data: st.DataObject, then: str) -> None:
        """Any prefix of the server's wire; the client reads it or not, or
        the server hangs up right after it."""
        count = data.draw(st.integers(1, len(self.to_client)), label="octets")
        if not self.client.done:
            self.client.receive(bytes(self.to_client[:count]))
        del self.to_client[:count]
        if then == "read":
            self.read_replies()
        elif then == "hang up":
            self.hang_up("server")

    def serve(self, refusals: list[Reply | None]) -> None:
        """The server reads and answers (the core's reply, or a refusal)."""
        checked = self.server
        try:
            for _ in range(len(checked.stream) + 200):
                if checked.done:
                    return
                event = checked.next_event()
                if event is PAUSED and checked.server.replies_due:
                    self._answer(refusals)
                    continue
                if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
                    return
            raise AssertionError("the server makes no progress")
        except RemoteProtocolError as exc:
            if exc.reply is not None:
                self.to_client += checked.send(exc.reply)
            checked.check_after_error()

    def _answer(self, refusals: list[Reply | None]) -> None:
        checked = self.server
        server = checked.server
        while server.replies_due and not checked.done:
            event = server.awaiting_reply
            refusal = refusals.pop(0) if refusals else None
            if refusal is not None and not isinstance(event, (Auth, AuthResponse)):
                try:
                    self.to_client += checked.send(refusal)
                    continue
                except LocalProtocolError:
                    pass
            if isinstance(event, (Auth, AuthResponse)):
                reply = server.auth_reply(True)
            else:
                reply = server.default_reply()
            self.to_client += checked.send(reply)

    def read_replies(self) -> None:
        """The client reads what it received."""
        checked = self.client
        try:
            for _ in range(len(checked.stream) + 100):
                if checked.done:
                    return
                event = checked.next_event()
                if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
                    return
            raise AssertionError("the client makes no progress")
        except RemoteProtocolError:
            checked.check_after_error()

    @precondition(
        lambda self: self.client.client.state is State.TLS
        and self.server.server.state is State.TLS
    )
    @rule()
    def tls_handshake(self) -> None:
        for side in (self.server, self.client):
            try:
                side.tls_established()
            except RemoteProtocolError:
                side.check_after_error()

    def _close_finished(self) -> None:
        """A side whose session is over closes the connection, as its
        adapter would: the peer reads what was written, then EOF."""
        if self.server.done and not self.client.eof:
            if not self.client.done:
                self.client.receive(bytes(self.to_client))
            self.to_client.clear()
            self.hang_up("server")
        if self.client.done and not self.server.eof:
            if not self.server.done:
                self.server.receive(bytes(self.to_server))
            self.to_server.clear()
            self.hang_up("client")

    def hang_up(self, side: str) -> None:
        """*side* closes the connection: the other gets EOF (what was still
        on the wire is lost) and must end its session."""
        if side == "client" and not self.server.eof:
            self.to_server.clear()
            self.server.receive(b"")
            self.serve([])
            assert self.server.done, "after EOF the server's session must be over"
        elif side == "server" and not self.client.eof:
            self.to_client.clear()
            self.client.receive(b"")
            self.read_replies()
            assert self.client.done, "after EOF the client's session must be over"

    # -- what only the pair shows ---------------------------------------------

    @invariant()
    def holds(self) -> None:
        if self.pair is None:
            return
        client, server = self.pair
        client.check()
        server.check()
        # The server received the client's commands, equal and in order.
        received: list[object] = []
        for event in server.events:
            if isinstance(event, CommandRejected):
                received.append(event.command)
            elif isinstance(event, (Command, AuthResponse, AuthCancel)):
                received.append(event)
        assert received == self.sent[: len(received)], (received, self.sent)
        # The client received the server's replies, each matched to the
        # command the server answered (RFC 2920 §3.1).
        answered = server.replies[: len(client.replies)]
        assert [reply for _, reply in client.replies] == [reply for _, reply in answered]
        for (head, _), (cause, _) in zip(client.replies, answered):
            if cause is None and head != GREETING:
                continue  # the reply to a session error (RemoteProtocolError.reply)
            if isinstance(cause, (EndOfMessage, MessageRejected)):
                assert isinstance(head, (EndOfMessage, Bdat)), (head, cause)
            elif isinstance(cause, EndOfChunk):
                assert isinstance(head, Bdat) and not head.last, (head, cause)
            else:
                assert head == _counterpart(cause), (head, cause)
        # Every message delivered is one the client sent, intact, in order.
        remaining = iter(self.messages)
        for content in server.delivered:
            assert any(content in sent for sent in remaining), (content, self.messages)
        # Two well-behaved cores never break the protocol for each other.
        assert server.error is None, f"the server failed our client: {server.error!r}"
        assert client.error is None, f"the client failed our server: {client.error!r}"
        # At rest (nothing on the wires or unread, nothing owed, nothing
        # outstanding), both walked the same table to the same place.
        unread = server.server.trailing_data[0] or client.client.trailing_data[0]
        in_flight = self.to_server or self.to_client or unread or client.client.pending
        at_rest = not (in_flight or server.server.replies_due or client.done or server.done)
        if at_rest:
            assert client.client.state is server.server.state
            assert client.client.authenticated is server.server.authenticated
            if client.client.state in (State.MAIL, State.RCPT, State.DATA, State.BDAT):
                # (After a transaction the client keeps its list until the
                # next MAIL is answered; the server forgets at once.)
                assert client.client.accepted_recipients == server.server.recipients


TestServerCore = ServerCoreMachine.TestCase
TestServerCore.settings = STATEFUL
TestClientCore = ClientCoreMachine.TestCase
TestClientCore.settings = STATEFUL
TestPair = PairMachine.TestCase
TestPair.settings = STATEFUL
