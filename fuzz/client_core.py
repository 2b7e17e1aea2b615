#!/usr/bin/env python3
"""Fuzz target: the client core (``ClientConnection``) fed a server's bytes.

Theory of operation
-------------------
The input (``harness.decode``) is what a server sends, cut into
``receive_data()`` calls.  The mode picks one of :data:`CONFIGS` (SMTP,
lenient, LMTP, implicit TLS, a client with small reply bounds).  A
scripted client (:class:`Script`) plays one mail session against it,
choosing each command from the state the core reports and what the server
offered, the way ``smtpproto.flows`` does: EHLO (LHLO), then STARTTLS and
AUTH when the policy asks and the server offers them, one transaction
(MAIL with the parameters the server supports, recipients, DATA or BDAT),
QUIT.  Policy bits: 0 pipeline when offered (RFC 2920), 1 BDAT when
offered (RFC 3030), 2 STARTTLS when offered, 3 AUTH when offered, 4 an
8-bit body (with BODY=8BITMIME), 5 two recipients instead of one; bit 6
fails the TLS handshake.

Everything is checked by ``oracle.CheckedClient``: replies matched in
order, DATA bytes stuffed and terminated correctly, only documented
errors.  The script's own refused commands (``LocalProtocolError`` from
``send()`` when the fuzzed server made them impossible) are documented
behaviour; after three the script gives up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from smtpproto import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    ClientConfig,
    ClientConnection,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Lhlo,
    LocalProtocolError,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Rset,
    StartTLS,
    State,
)

from harness import FuzzInput, decode, fuzz_main
from oracle import CheckedClient, InvariantViolation

__all__ = ["CONFIGS", "BODY", "Outcome", "Script", "run", "test_one_input"]

_BASE = ClientConfig(allow_plaintext_auth=True)


@dataclass(frozen=True)
class ClientSetup:
    """One client configuration of the target."""

    config: ClientConfig
    tls: bool = False


#: The configurations, picked by the mode octet (modulo their number).
CONFIGS: tuple[ClientSetup, ...] = (
    ClientSetup(_BASE),
    ClientSetup(replace(_BASE, lenient=True)),
    ClientSetup(replace(_BASE, lmtp=True)),
    ClientSetup(_BASE, tls=True),
    ClientSetup(replace(_BASE, max_reply_line=512, max_reply_lines=8, max_pending=3)),
)

#: The message content the script sends: stuffing traps, a bare LF.
BODY = (
    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: fuzz\r\n\r\n"
    b".leading dot\r\n.\r\n..\r\nbare\nLF and bare\rCR\r\nlast line without CRLF"
)
_EIGHT_BIT = b"\r\ncaf\xc3\xa9 \xff\r\n"


@dataclass
class Outcome:
    """How a run ended (the seed tests read it)."""

    #: The RemoteProtocolError that ended the session, if any.
    error: RemoteProtocolError | None
    #: The state the session ended in.
    state: State
    #: Reply codes received, in order.
    codes: list[int]
    #: Commands the core refused to send (the script's, judged by the core).
    refused: int
    #: True once the script sent the end of a message.
    message_sent: bool


class Script:
    """A mail session, one step at a time, chosen from the client's state."""

    def __init__(self, checked: CheckedClient, policy: int) -> None:
        self.checked = checked
        self.policy = policy
        self.hellos = 0
        self.starttls_sent = False
        self.auth_sent = False
        self.sasl_lines = 0
        self.mail_sent = False
        self.recipients = ["b@example.net", "c@example.net"][: 2 if policy & 0x20 else 1]
        self.chunks_sent = 0
        self.data_sent = False
        self.quit_sent = False
        self.refused = 0

    def _body(self) -> bytes:
        return BODY + (_EIGHT_BIT if self.policy & 0x10 else b"")

    def _mail(self) -> Mail:
        caps = self.checked.client.capabilities
        params: dict[str, str | None] = {}
        if caps.size is not None:
            params["SIZE"] = str(len(self._body()))
        if self.policy & 0x10 and caps.eightbitmime:
            params["BODY"] = "8BITMIME"
        if caps.dsn:
            params["RET"] = "HDRS"
            params["ENVID"] = "QQ+2B123"
        if caps.smtputf8 and self.policy & 0x10:
            params["SMTPUTF8"] = None
        return Mail(reverse_path="a@example.org", parameters=params)

    def _rcpt(self) -> Rcpt:
        caps = self.checked.client.capabilities
        params = {"NOTIFY": "SUCCESS,FAILURE"} if caps.dsn else {}
        return Rcpt(forward_path=self.recipients.pop(0), parameters=params)

    def _sasl(self) -> AuthResponse | AuthCancel:
        self.sasl_lines += 1
        challenge = self.checked.client.challenge or b""
        if self.sasl_lines > 3:
            return AuthCancel()
        if challenge.lower().startswith(b"pass"):
            return AuthResponse(data=b"secret")
        if challenge.lower().startswith(b"user"):
            return AuthResponse(data=b"user")
        return AuthResponse(data=b"\x00user\x00secret")

    def _chunk(self, last: bool) -> list[Event]:
        body = self._body()
        half = len(body) // 2
        piece = body[half:] if last else body[:half]
        self.chunks_sent += 1
        end: Event = EndOfMessage() if last else EndOfChunk()
        return [Bdat(size=len(piece), last=last), MessageData(data=piece), end]

    def next_events(self) -> list[Event]:
        """What to send next (empty: wait for replies)."""
        client = self.checked.client
        caps = client.capabilities
        state = client.projected_state()
        policy = self.policy
        if self.quit_sent or client.state is State.CONNECTED:
            return []  # done, or no greeting yet (RFC 5321 §3.1)
        if state is State.GREETED:
            if self.hellos >= 3:
                return [Quit()]
            self.hellos += 1
            name = "client.example"
            return [Lhlo(domain=name) if client.config.lmtp else Ehlo(domain=name)]
        if state is State.READY:
            if policy & 0x04 and caps.starttls and not client.tls and not self.starttls_sent:
                self.starttls_sent = True
                return [StartTLS()]
            mechanisms = caps.auth_mechanisms
            if policy & 0x08 and mechanisms and not client.authenticated and not self.auth_sent:
                self.auth_sent = True
                if "PLAIN" in mechanisms:
                    return [Auth(mechanism="PLAIN", initial_response=b"\x00user\x00secret")]
                return [Auth(mechanism="LOGIN" if "LOGIN" in mechanisms else mechanisms[0])]
            if not self.mail_sent:
                self.mail_sent = True
                return [self._mail()]
            return [Quit()]
        if state is State.MAIL:
            return [self._rcpt()] if self.recipients else [Rset()]
        if state is State.RCPT:
            if self.recipients:
                return [self._rcpt()]
            if policy & 0x02 and caps.chunking and not self.chunks_sent:
                return self._chunk(last=False)
            return [Data()]
        if state is State.BDAT:
            return self._chunk(last=True) if self.chunks_sent < 2 else [Rset()]
        if state is State.BDAT_FAILED:
            return [Rset()]
        if state is State.DATA and not client.pending:
            body = self._body()
            self.data_sent = True
            return [MessageData(data=body[:7]), MessageData(data=body[7:]), EndOfMessage()]
        if state is State.AUTH and not client.pending:
            return [self._sasl()]
        if state is State.REFUSED:
            return [Quit()]
        return []

    def act(self) -> None:
        """Send what the session allows now."""
        checked = self.checked
        client = checked.client
        for _ in range(12):
            if checked.done or self.refused >= 3:
                return
            if client.pending and not (self.policy & 0x01 and client.capabilities.pipelining):
                return
            try:
                # Building an event may fail too: a mechanism name the
                # server offered may be no valid SASL name.
                events = self.next_events()
                if not events:
                    return
                for event in events:
                    checked.send(event)
                    if isinstance(event, Quit):
                        self.quit_sent = True
            except LocalProtocolError:
                self.refused += 1
                if client.state is not State.CLOSED and not self.quit_sent:
                    self._quit()
                return

    def _quit(self) -> None:
        try:
            self.checked.send(Quit())
            self.quit_sent = True
        except LocalProtocolError:
            self.refused += 1


def _pump(checked: CheckedClient, script: Script, budget: list[int]) -> None:
    client = checked.client
    while not checked.done:
        budget[0] -= 1
        if budget[0] < 0:
            raise InvariantViolation("the client makes no progress (more steps than input)")
        script.act()
        event = checked.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return
        if event is PAUSED:
            if script.policy & 0x40:
                return  # the handshake never completes
            checked.tls_established()


def run(data: bytes) -> Outcome:
    """Drive a client with *data*; raise only on a broken invariant."""
    fuzz: FuzzInput = decode(data)
    setup = CONFIGS[fuzz.mode % len(CONFIGS)]
    checked = CheckedClient(ClientConnection(setup.config, tls=setup.tls))
    script = Script(checked, fuzz.policy)
    budget = [4 * len(data) + 100]
    pieces = [*fuzz.pieces, b""] if fuzz.eof else list(fuzz.pieces)
    try:
        for piece in pieces:
            checked.receive(piece)
            _pump(checked, script, budget)
            checked.check()
    except RemoteProtocolError:
        checked.check_after_error()
    else:
        if fuzz.eof and not checked.done:
            raise InvariantViolation("after EOF the session must be over")
    checked.check()
    return Outcome(
        error=checked.error,
        state=checked.client.state,
        codes=[reply.code for _, reply in checked.replies],
        refused=script.refused,
        message_sent=any(isinstance(item, (EndOfMessage, Bdat)) for item, _ in checked.replies)
        and (script.data_sent or script.chunks_sent > 1),
    )


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point."""
    run(data)


if __name__ == "__main__":
    fuzz_main(test_one_input)
