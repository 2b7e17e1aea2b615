#!/usr/bin/env python3
"""Fuzz target: the server core (``ServerConnection``) fed a client's bytes.

Theory of operation
-------------------
The input (``harness.decode``) is what a client sends, cut into
``receive_data()`` calls, under one of :data:`CONFIGS` (plain ESMTP,
lenient, AUTH with STARTTLS, LMTP, PROXY and XCLIENT, TLS and AUTH
required, strict limits without PIPELINING or CHUNKING, implicit TLS with
every SASL mechanism).  After every piece the server's events are taken
and answered the way an application would, following the policy octet:

* bits 0-3: the *n*-th event awaiting a reply (the greeting is not
  counted) is refused when bit ``n % 4`` is set; bit 6 makes refusals 4xx
  instead of 5xx;
* bit 4: the TLS handshake succeeds after a 220 to STARTTLS (otherwise the
  session stays switched, and must refuse anything more);
* bit 5: AUTH credentials are right (``CheckPassword`` and friends);
* bit 7: the greeting is 554 (RFC 5321 §3.1: only QUIT may follow).

Everything is checked by ``oracle.CheckedServer``.  A ``RemoteProtocolError``
is the documented end of a hostile session: its reply is sent and the
session is over.  Anything else escaping is a bug.  Run under atheris with
``python3 fuzz/run.py server_core`` (or ``python3 fuzz/server_core.py
DIR...``, libFuzzer's command line).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from smtpproto import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    CommandRejected,
    ConnectionClosed,
    EndOfMessage,
    LocalProtocolError,
    MessageRejected,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
)
from smtpproto.sasl import CheckPassword, CheckToken, LookupPassword

from harness import FuzzInput, decode, fuzz_main
from oracle import CheckedServer, InvariantViolation

__all__ = ["CONFIGS", "Outcome", "run", "test_one_input"]

_ALL_SASL = ("SCRAM-SHA-256", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2", "PLAIN", "LOGIN")
# Small limits, so that inputs of a few kilobytes reach them.
_BASE = ServerConfig(max_errors=8, max_receive_buffer=4096, max_message_size=65536)


@dataclass(frozen=True)
class ServerSetup:
    """One server configuration of the target."""

    config: ServerConfig
    tls: bool = False
    trusted: bool = False


#: The configurations, picked by the mode octet (modulo their number).
CONFIGS: tuple[ServerSetup, ...] = (
    ServerSetup(replace(_BASE, max_bdat_discard=4096)),
    ServerSetup(replace(_BASE, lenient=True)),
    ServerSetup(
        replace(
            _BASE, starttls=True, auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
            auth_plaintext=True, max_auth_failures=2,
        )
    ),
    ServerSetup(replace(_BASE, lmtp=True)),
    ServerSetup(replace(_BASE, proxy_protocol=True), trusted=True),
    ServerSetup(
        replace(
            _BASE, starttls=True, require_tls=True, auth_mechanisms=("PLAIN",), require_auth=True
        )
    ),
    ServerSetup(
        replace(
            _BASE, pipelining=False, chunking=False, max_data_line=1000,
            allow_bare_line_endings=True, max_recipients=100,
        )
    ),
    ServerSetup(replace(_BASE, auth_mechanisms=_ALL_SASL), tls=True),
)


@dataclass
class Outcome:
    """How a run ended (the seed tests read it)."""

    #: The RemoteProtocolError that ended the session, if any.
    error: RemoteProtocolError | None
    #: The state the session ended in.
    state: State
    #: Messages reported complete.
    delivered: int
    #: Commands and lines the server core refused (CommandRejected).
    rejected: int
    #: Every reply code sent, the greeting included.
    codes: list[int]


class _Application:
    """Answers the server's events following the policy octet."""

    def __init__(self, checked: CheckedServer, policy: int) -> None:
        self.checked = checked
        self.policy = policy
        self.count = 0

    def reply_for(self, event: object) -> Reply:
        server = self.checked.server
        if event is None:  # the greeting
            if self.policy & 0x80:
                return Reply(code=554, text=("no service here",), enhanced="5.3.2")
            return server.greeting()
        refuse = bool(self.policy >> (self.count % 4) & 1)
        self.count += 1
        if isinstance(event, (CommandRejected, MessageRejected)):
            return event.reply
        if isinstance(event, (Auth, AuthResponse)):
            return server.auth_reply(self._verdict(server.auth_request))
        if refuse:
            if self.policy & 0x40:
                return Reply(code=451, text=("try later",), enhanced="4.3.0")
            code = 554 if isinstance(event, EndOfMessage) else 550
            return Reply(code=code, text=("refused",), enhanced="5.7.1")
        return server.default_reply()

    def _verdict(self, request: object) -> object:
        good = bool(self.policy & 0x20)
        if isinstance(request, (CheckPassword, CheckToken)):
            return good
        if isinstance(request, LookupPassword):
            return "secret" if good else None
        return None  # LookupScram: no such user

    def answer(self) -> None:
        """Send every reply owed now."""
        checked = self.checked
        server = checked.server
        if server.config.proxy_protocol and server.proxy is None:
            return  # the greeting waits for the PROXY header
        while server.replies_due and server.state not in (State.CLOSED, State.ERROR):
            event = server.awaiting_reply
            reply = self.reply_for(event)
            try:
                checked.send(reply)
            except LocalProtocolError as exc:
                message = f"the core refused {reply!r} to {event!r}: {exc}"
                raise InvariantViolation(message) from exc


def _pump(checked: CheckedServer, app: _Application, budget: list[int]) -> None:
    server = checked.server
    while not checked.done:
        budget[0] -= 1
        if budget[0] < 0:
            raise InvariantViolation("the server makes no progress (more steps than input)")
        # Asked while a reply is owed, the core must pause (the oracle
        # checks); then the application answers.
        event = checked.next_event()
        if event is PAUSED and server.replies_due:
            app.answer()
            continue
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return
        if event is PAUSED:
            if server.state is State.TLS and app.policy & 0x10:
                checked.tls_established()
                continue
            return


def run(data: bytes) -> Outcome:
    """Drive a server with *data*; raise only on a broken invariant."""
    fuzz: FuzzInput = decode(data)
    setup = CONFIGS[fuzz.mode % len(CONFIGS)]
    checked = CheckedServer(ServerConnection(setup.config, tls=setup.tls, trusted=setup.trusted))
    app = _Application(checked, fuzz.policy)
    budget = [4 * len(data) + 100]
    pieces = [*fuzz.pieces, b""] if fuzz.eof else list(fuzz.pieces)
    try:
        _pump(checked, app, budget)
        for piece in pieces:
            checked.receive(piece)
            _pump(checked, app, budget)
            checked.check()
    except RemoteProtocolError as exc:
        # The documented end of a hostile session: send the suggested reply.
        if exc.reply is not None:
            checked.send(exc.reply)
        checked.check_after_error()
    else:
        if fuzz.eof and not checked.done:
            raise InvariantViolation("after EOF and every reply the session must be over")
    checked.check()
    return Outcome(
        error=checked.error,
        state=checked.server.state,
        delivered=len(checked.delivered),
        rejected=sum(isinstance(event, CommandRejected) for event in checked.events),
        codes=[reply.code for _, reply in checked.replies],
    )


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point."""
    run(data)


if __name__ == "__main__":
    fuzz_main(test_one_input)
