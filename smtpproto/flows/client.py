# Theory of operation
# -------------------
# ``ClientSession`` is the client's conversation, written once as
# generator flows (see ``_actions``) over a ``ClientConnection``:
#
#   open()          greeting, EHLO (HELO when EHLO gets 500/502; LHLO for
#                   LMTP), STARTTLS by policy (then EHLO again), AUTH with
#                   the strongest mechanism both sides support;
#   send(outgoing)  one mail transaction: MAIL, RCPT..., then DATA or BDAT,
#                   pipelined when the server offers PIPELINING, with the
#                   MAIL parameters chosen from the message (SIZE, BODY,
#                   SMTPUTF8, DSN, REQUIRETLS); returns a SendResult with
#                   each recipient's reply;
#   quit()          QUIT and close.
#
# Policy lives here, protocol rules in the core: the core refuses what the
# RFCs forbid, and this layer decides what to do about the server's
# answers.  It never downgrades: TLS required but refused ends the session
# before AUTH or MAIL (attack class 8), and a message that needs 8BITMIME
# or SMTPUTF8 is not sent to a server without them.  Timeouts are those of
# RFC 5321 §4.5.3.2, per step, handed to the adapter with each Receive.
# Commands are gathered and written in one Send before each read, so a
# pipelined batch is one write.  The protocol trace goes to the logger
# ``smtpproto`` at DEBUG, with SASL data and message content left out.
# A failure that leaves the session unusable closes the connection before
# it is raised: any failure of open(); in send() a lost connection, a
# timeout, a protocol failure, or anything that stops the content half
# way (the only way out that delivers nothing).  Refusals leave the session
# ready for the next message.  A 421 (§3.8) stands for every reply still due.
#
# What was negotiated is recorded as it happened, not as configured: how
# the connection came to be encrypted (``ClientSession.tls_method``), the
# SASL mechanism that got its 235 (``ClientSession.auth_mechanism``), and
# per transaction whether MAIL and RCPT went out as one pipelined batch,
# whether the content went by BDAT, and whether MAIL carried SMTPUTF8
# (``SendResult.pipelined``, ``.chunked``, ``.smtputf8``).
from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from .. import sasl
from .._client import ClientConfig, ClientConnection
from .._connection import NEED_DATA
from .._errors import LocalProtocolError, RemoteProtocolError
from .._state import State
from .._esmtp_events import Auth, AuthCancel, AuthResponse, Bdat, EndOfChunk, Lhlo, StartTLS as StartTLSCommand
from .._events import (
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Helo,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    Reply,
    Rset,
)
from ..extensions import dsn as dsn_params
from . import errors
from ._actions import Close, Flow, Receive, Send, StartTLS
from .message import Outgoing

__all__ = ["TLSMode", "Timeouts", "ClientOptions", "SendResult", "ClientSession"]

log = logging.getLogger("smtpproto")


class TLSMode(enum.Enum):
    """How the client uses TLS."""

    #: STARTTLS when the server offers it, cleartext otherwise.
    OPPORTUNISTIC = "opportunistic"
    #: STARTTLS or nothing: refuse to go on in cleartext (RFC 3207 §4.1).
    REQUIRED = "required"
    #: Never start TLS.
    NEVER = "never"
    #: TLS from the first byte (RFC 8314, port 465).
    IMPLICIT = "implicit"


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Seconds to wait for each step (RFC 5321 §4.5.3.2 defaults)."""

    connect: float = 30.0
    greeting: float = 300.0
    command: float = 300.0  # EHLO, MAIL, RCPT, RSET, AUTH...
    data_start: float = 120.0  # the 354 to DATA
    data_block: float = 180.0  # each write of content
    data_end: float = 600.0  # the reply after the end of data

    @classmethod
    def all(cls, seconds: float) -> Timeouts:
        """Every timeout set to *seconds*."""
        return cls(
            connect=seconds,
            greeting=seconds,
            command=seconds,
            data_start=seconds,
            data_block=seconds,
            data_end=seconds,
        )


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How a :class:`ClientSession` talks to its server."""

    #: The name given in EHLO/HELO/LHLO.
    helo_name: str = "localhost"
    #: TLS policy.
    tls: TLSMode = TLSMode.OPPORTUNISTIC
    #: The name the certificate must match (usually the host connected to).
    server_hostname: str | None = None
    #: Credentials for AUTH; none means no AUTH.
    username: str | None = None
    password: str | None = None
    token: str | None = None
    #: Force one SASL mechanism instead of the strongest common one.
    mechanism: str | None = None
    #: Allow PLAIN/LOGIN/bearer tokens without TLS (never by default).
    allow_plaintext_auth: bool = False
    #: Pipeline commands when the server offers PIPELINING (RFC 2920).
    pipelining: bool = True
    #: Send content with BDAT when the server offers CHUNKING (RFC 3030).
    chunking: bool = False
    #: Speak LMTP (RFC 2033).
    lmtp: bool = False
    #: Timeouts per step.
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Bounds of the protocol core.
    config: ClientConfig | None = None

    def __post_init__(self) -> None:
        if self.password is not None and self.token is not None:
            raise ValueError("give a password or a token, not both")
        if (self.password is not None or self.token is not None) and self.username is None:
            raise ValueError("credentials need a username")


@dataclass(frozen=True)
class SendResult:
    """What happened to one message."""

    #: Recipients the server accepted the message for.
    accepted: tuple[str, ...]
    #: Refused recipients -> the reply that refused them.
    refused: dict[str, Reply]
    #: Every recipient's deciding reply: the RCPT refusal, or the reply after
    #: the end of data (LMTP: that recipient's own).
    replies: dict[str, Reply]
    #: The reply after the end of data (the last one, for LMTP).
    data_reply: Reply | None
    #: True when MAIL and the RCPTs (and DATA, when content went by DATA)
    #: were sent as one batch without waiting for their replies, because
    #: the server offered PIPELINING (RFC 2920 §3.1); False when each
    #: command waited for the reply to the one before.
    pipelined: bool = False
    #: True when the content went in BDAT chunks (RFC 3030 §2), False when
    #: it went after DATA (RFC 5321 §4.1.1.4).
    chunked: bool = False
    #: True when MAIL carried the SMTPUTF8 parameter (RFC 6531 §3.4).
    smtputf8: bool = False


# Chunks of a BDAT transfer sent before the replies are read (RFC 3030
# allows pipelining BDAT; the window keeps the server's replies flowing).
_BDAT_WINDOW = 16


class ClientSession:
    """The client side of one SMTP (or LMTP) connection, as flows.

    Each method returns a generator flow that an adapter runs; see
    :mod:`smtpproto.flows`.  Methods must be run one after the other.
    """

    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options if options is not None else ClientOptions()
        config = self.options.config or ClientConfig(lmtp=self.options.lmtp)
        if config.lmtp != self.options.lmtp:
            raise ValueError("ClientOptions.lmtp and its ClientConfig.lmtp disagree")
        if self.options.allow_plaintext_auth and not config.allow_plaintext_auth:
            # The option is the policy; the core only enforces what it is told.
            config = replace(config, allow_plaintext_auth=True)
        #: The protocol core.
        self.conn = ClientConnection(config, tls=self.options.tls is TLSMode.IMPLICIT)
        self._out = bytearray()
        #: The greeting, once read.
        self.greeting: Reply | None = None
        #: The reply to the last EHLO/HELO/LHLO.
        self.hello_reply: Reply | None = None
        self._closed = False
        # The 421 with which the server ended the session, if it did.
        self._closing: Reply | None = None
        self._tls_method: Literal["implicit", "STARTTLS"] | None = None
        self._auth_mechanism: str | None = None

    # -- what was negotiated -----------------------------------------------

    @property
    def tls_method(self) -> Literal["implicit", "STARTTLS"] | None:
        """How the connection came to be encrypted: ``"implicit"`` (TLS
        from the first byte, RFC 8314 §3; set once the greeting arrived
        over it), ``"STARTTLS"`` (upgraded after a 220 to STARTTLS, RFC
        3207 §4), or None while it is cleartext.  It stays set after the
        session ends."""
        return self._tls_method

    @property
    def auth_mechanism(self) -> str | None:
        """The SASL mechanism (upper case, e.g. ``"CRAM-MD5"``) of the AUTH
        exchange the server ended with 235 (RFC 4954 §4), or None when the
        session did not authenticate.  It stays set after the session
        ends."""
        return self._auth_mechanism

    # -- plumbing ----------------------------------------------------------

    def _queue(self, event: Event) -> None:
        data = self.conn.send(event)
        if isinstance(event, Command):
            log.debug("C: %s", _trace(event, data))
        self._out += data

    def _flush(self, timeout: float) -> Flow[None]:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            try:
                yield Send(data, timeout)
            except TimeoutError:
                raise errors.Timeout("timed out sending", step="send") from None
            except OSError as exc:
                raise errors.Disconnected(f"connection lost while sending: {exc}") from None

    def _reply(self, timeout: float, step: str) -> Flow[Reply]:
        """The next reply, flushing queued commands first."""
        while True:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                raise errors.ProtocolFailure(f"{step}: {exc}", step=step) from None
            if isinstance(event, Reply):
                log.debug("S: %s %s", event.code, " / ".join(event.text))
                if event.code == 421 and self.conn.state is State.CLOSED:
                    self._closing = event
                return event
            if isinstance(event, ConnectionClosed):
                raise errors.Disconnected(f"the server closed the connection during {step}", step=step)
            assert event is NEED_DATA, event
            yield from self._flush(timeout)
            try:
                data = yield Receive(timeout)
            except TimeoutError:
                raise errors.Timeout(f"no reply to {step} within {timeout} s", step=step) from None
            except OSError as exc:
                raise errors.Disconnected(f"connection lost during {step}: {exc}", step=step) from None
            self.conn.receive_data(data)

    def _command(self, command: Command, timeout: float, step: str) -> Flow[Reply]:
        self._queue(command)
        return (yield from self._reply(timeout, step))

    def _answer(self, command: Command | None, timeout: float, step: str) -> Flow[Reply]:
        """The reply to *command* (sent already when None).  Once a 421
        ended the session (§3.8) it stands for every reply still due: the
        server sends no more, and the command is not sent."""
        if self._closing is not None:
            return self._closing
        if command is None:
            return (yield from self._reply(timeout, step))
        return (yield from self._command(command, timeout, step))

    # -- opening -----------------------------------------------------------

    def open(self) -> Flow[Reply]:
        """Greeting, hello, STARTTLS and AUTH; returns the last hello reply.

        When a step fails the session is ended (QUIT after a refusal) and
        the connection closed before the error is raised.
        """
        try:
            return (yield from self._open())
        except Exception as exc:
            if isinstance(exc, (errors.SMTPReplyError, errors.AuthFailed)):
                yield from self._quit_quietly()
            else:
                yield from self._close()
            raise

    def _open(self) -> Flow[Reply]:
        timeouts = self.options.timeouts
        greeting = yield from self._reply(timeouts.greeting, "greeting")
        self.greeting = greeting
        if self.conn.tls:
            # The adapter made the TLS connection before the first byte
            # (RFC 8314 §3), and the greeting came over it.
            self._tls_method = "implicit"
        if greeting.code != 220:
            if greeting.code == 554:
                yield from self._quit_quietly()
            raise errors.GreetingRefused("the server refused the session", greeting, step="greeting")
        reply = yield from self._hello()
        mode = self.options.tls
        if mode in (TLSMode.OPPORTUNISTIC, TLSMode.REQUIRED) and not self.conn.tls:
            reply = yield from self._starttls(reply, required=mode is TLSMode.REQUIRED)
        if self.options.username is not None:
            yield from self._authenticate()
        return reply

    def _hello(self) -> Flow[Reply]:
        timeout = self.options.timeouts.command
        name = self.options.helo_name
        if self.options.lmtp:
            reply = yield from self._command(Lhlo(domain=name), timeout, "LHLO")
        else:
            reply = yield from self._command(Ehlo(domain=name), timeout, "EHLO")
            if reply.code in (500, 502):
                # RFC 5321 §3.2: fall back to HELO when EHLO is not known.
                reply = yield from self._command(Helo(domain=name), timeout, "HELO")
        if not reply.is_success:
            raise errors.HelloRefused("the server refused the hello", reply, step="EHLO")
        self.hello_reply = reply
        return reply

    def _starttls(self, hello: Reply, required: bool) -> Flow[Reply]:
        if not self.conn.capabilities.starttls:
            if required:
                yield from self._quit_quietly()
                raise errors.TLSRequired("TLS is required but the server does not offer STARTTLS")
            return hello
        reply = yield from self._command(StartTLSCommand(), self.options.timeouts.command, "STARTTLS")
        if reply.code != 220:
            if required:
                yield from self._quit_quietly()
                raise errors.TLSRequired("the server refused STARTTLS", reply)
            return hello
        try:
            yield StartTLS(self.options.server_hostname)
        except OSError as exc:  # ssl.SSLError is an OSError: never fall back to cleartext
            raise errors.ProtocolFailure(f"TLS handshake failed: {exc}", step="STARTTLS") from None
        # No byte after the 220 can be waiting here: _reply refused any that
        # came with it (attack class 3), and nothing was read since.
        self.conn.tls_established()
        self._tls_method = "STARTTLS"
        return (yield from self._hello())

    def _authenticate(self) -> Flow[None]:
        options = self.options
        offered = self.conn.capabilities.auth_mechanisms
        if options.mechanism is not None:
            offered = tuple(m for m in offered if m == options.mechanism.upper())
        assert options.username is not None
        allow_plaintext = self.conn.tls or options.allow_plaintext_auth
        mechanism = sasl.choose_client_mechanism(
            offered,
            username=options.username,
            password=options.password,
            token=options.token,
            allow_plaintext=allow_plaintext,
            host=options.server_hostname or "",
        )
        if mechanism is None:
            # Cleartext rules out PLAIN and friends unless allowed (attack
            # class 8); otherwise every offered mechanism refused the
            # credentials (a NUL in a PLAIN user name, RFC 4616 §2).  Name
            # the encryption only when it was the reason.
            why = "" if allow_plaintext else ", and the connection is not encrypted"
            raise errors.AuthFailed(
                "no usable AUTH mechanism for these credentials (offered: "
                f"{' '.join(self.conn.capabilities.auth_mechanisms) or 'none'}{why})"
            )
        timeout = options.timeouts.command
        reply = yield from self._command(
            Auth(mechanism=mechanism.name, initial_response=mechanism.initial_response()),
            timeout,
            "AUTH",
        )
        while reply.code == 334:
            try:
                answer = mechanism.respond(self.conn.challenge or b"")
            except sasl.SASLError as exc:
                self._queue(AuthCancel())
                yield from self._reply(timeout, "AUTH")
                raise errors.AuthFailed(f"the server's SASL challenge was refused: {exc}") from None
            self._queue(AuthResponse(data=answer))
            reply = yield from self._reply(timeout, "AUTH")
        if reply.code != 235:
            raise errors.AuthFailed("authentication failed", reply)
        if not mechanism.complete:
            # SCRAM: a 235 before the server proved it knows the password.
            raise errors.AuthFailed("the server reported success without completing the exchange")
        self._auth_mechanism = mechanism.name

    # -- sending -----------------------------------------------------------

    def _mail_parameters(self, outgoing: Outgoing) -> dict[str, str | None]:
        caps = self.conn.capabilities
        params: dict[str, str | None] = {}
        if caps.size is not None and outgoing.size is not None:
            params["SIZE"] = str(outgoing.size)
        if outgoing.eight_bit:
            if self.options.chunking and caps.chunking and caps.binarymime:
                params["BODY"] = "BINARYMIME"
            elif caps.eightbitmime:
                params["BODY"] = "8BITMIME"
            else:
                raise errors.NotSupported(
                    "the message has 8-bit content and the server does not offer 8BITMIME",
                    step="MAIL",
                )
        if outgoing.smtputf8:
            if not caps.smtputf8:
                raise errors.NotSupported(
                    "the message needs SMTPUTF8, which the server does not offer", step="MAIL"
                )
            params["SMTPUTF8"] = None
        if outgoing.requiretls:
            if not caps.requiretls:
                raise errors.NotSupported("REQUIRETLS is not offered", step="MAIL")
            params["REQUIRETLS"] = None
        if caps.dsn:
            params.update(dsn_params.mail_parameters(ret=outgoing.dsn.ret, envid=outgoing.dsn.envid))
        return params

    def send(self, outgoing: Outgoing) -> Flow[SendResult]:
        """One mail transaction per group of recipients the server's LIMITS
        allow (RFC 9422); returns the combined result.

        A refusal (:class:`~errors.SMTPReplyError`, :class:`~errors.NotSupported`)
        leaves the session ready for the next message.  After a failure that
        leaves it unusable (a lost connection, a timeout, a protocol failure,
        or an exception while the content was being sent, which cannot be
        ended without delivering a truncated message) the connection is
        closed before the error is raised.
        """
        try:
            return (yield from self._send(outgoing))
        except (errors.Disconnected, errors.Timeout, errors.ProtocolFailure):
            yield from self._close()
            raise

    def _send(self, outgoing: Outgoing) -> Flow[SendResult]:
        recipients = outgoing.recipients
        if not recipients:
            raise ValueError("a message needs at least one recipient")
        if self._closed or self.conn.state in (State.CLOSED, State.ERROR):
            raise errors.Disconnected("the session is over", step="MAIL")
        limit = self.conn.capabilities.limits.get("RCPTMAX") or len(recipients)
        if len(recipients) > limit:
            return (yield from self._send_groups(outgoing, limit))
        result = yield from self._transaction(outgoing, recipients)
        if not result.accepted:
            assert result.data_reply is not None
            raise errors.MessageRefused("the message was refused", result.data_reply, step="message")
        return result

    def _send_groups(self, outgoing: Outgoing, limit: int) -> Flow[SendResult]:
        # One transaction per group.  A refusal of one group does not undo
        # the delivery to the groups before it, so it is recorded in the
        # result, and raised only when no recipient got the message.
        outgoing.chunks = list(outgoing.chunks)  # sent more than once: must be replayable
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        replies: dict[str, Reply] = {}
        data_reply: Reply | None = None
        negotiated: SendResult | None = None  # a group's result: what its transaction did
        failures: list[errors.SMTPError] = []
        for start in range(0, len(outgoing.recipients), limit):
            group = outgoing.recipients[start : start + limit]
            if self._closing is not None:
                # A 421 ended the session: it stands for the groups not tried.
                group_refused = dict.fromkeys(group, self._closing)
            else:
                try:
                    result = yield from self._transaction(outgoing, group)
                except (errors.SMTPReplyError, errors.RecipientsRefused) as exc:
                    failures.append(exc)
                    group_refused = _refusals(exc, group)
                else:
                    if not result.accepted:
                        assert result.data_reply is not None
                        failures.append(
                            errors.MessageRefused("the message was refused", result.data_reply, step="message")
                        )
                    accepted += result.accepted
                    data_reply = result.data_reply or data_reply
                    negotiated = result
                    refused.update(result.refused)
                    replies.update(result.replies)
                    continue
            refused.update(group_refused)
            replies.update(group_refused)
        if not accepted:
            if all(isinstance(exc, errors.RecipientsRefused) for exc in failures):
                raise errors.RecipientsRefused(refused)
            raise next(exc for exc in failures if not isinstance(exc, errors.RecipientsRefused))
        assert negotiated is not None  # some group delivered
        return SendResult(
            accepted=tuple(accepted),
            refused=refused,
            replies={r: replies[r] for r in outgoing.recipients if r in replies},
            data_reply=data_reply,
            # Every group ran under the same EHLO reply and options.
            pipelined=negotiated.pipelined,
            chunked=negotiated.chunked,
            smtputf8=negotiated.smtputf8,
        )

    def _transaction(self, outgoing: Outgoing, recipients: list[str]) -> Flow[SendResult]:
        timeouts = self.options.timeouts
        caps = self.conn.capabilities
        mail = Mail(reverse_path=outgoing.sender, parameters=self._mail_parameters(outgoing))
        notify = outgoing.dsn.notify
        rcpt_params = dsn_params.rcpt_parameters(notify=notify) if caps.dsn and notify else {}
        rcpts = [Rcpt(forward_path=r, parameters=rcpt_params) for r in recipients]
        bdat = self.options.chunking and caps.chunking
        pipelining = self.options.pipelining and caps.pipelining
        replies: dict[str, Reply] = {}
        data_reply = None
        if pipelining:
            for command in [mail, *rcpts] + ([] if bdat else [Data()]):
                self._queue(command)
            mail_reply = yield from self._answer(None, timeouts.command, "MAIL")
            for rcpt in rcpts:
                replies[rcpt.forward_path] = yield from self._answer(None, timeouts.command, "RCPT")
            if not bdat:
                data_reply = yield from self._answer(None, timeouts.data_start, "DATA")
        else:
            mail_reply = yield from self._command(mail, timeouts.command, "MAIL")
            if mail_reply.is_success:
                for rcpt in rcpts:
                    replies[rcpt.forward_path] = yield from self._answer(rcpt, timeouts.command, "RCPT")
        refused = {r: reply for r, reply in replies.items() if not reply.is_success}
        accepted = [r for r in recipients if r in replies and r not in refused]
        if not mail_reply.is_success:
            yield from self._reset_if_needed()
            raise errors.SenderRefused("the sender was refused", mail_reply, step="MAIL")
        if not accepted:
            yield from self._reset_if_needed()
            raise errors.RecipientsRefused(refused)
        if not bdat:
            if data_reply is None:
                data_reply = yield from self._answer(Data(), timeouts.data_start, "DATA")
            if data_reply.code != 354:
                yield from self._reset_if_needed()
                raise errors.DataRefused("DATA was refused", data_reply, step="DATA")
        try:
            if bdat:
                finals = yield from self._send_bdat(outgoing, pipelining)
            else:
                finals = yield from self._send_data(outgoing)
        except errors.SMTPReplyError:
            raise  # a refused BDAT chunk: the transaction was reset
        except Exception:
            # Content cannot be taken back: whatever stopped it (the
            # caller's chunks, the core refusing one, the connection), the
            # only way out that delivers nothing is to close.
            yield from self._close()
            raise
        result = self._result(recipients, accepted, refused, finals)
        return replace(result, pipelined=pipelining, chunked=bdat, smtputf8="SMTPUTF8" in mail.parameters)

    def _send_data(self, outgoing: Outgoing) -> Flow[list[Reply]]:
        timeouts = self.options.timeouts
        log.debug("C: <message content>")
        for chunk in outgoing.chunks:
            self._out += self.conn.send(MessageData(data=chunk))
            if len(self._out) >= 65536:
                yield from self._flush(timeouts.data_block)
        self._queue(EndOfMessage())
        log.debug("C: .")
        return (yield from self._final_replies())

    def _send_bdat(self, outgoing: Outgoing, pipelining: bool) -> Flow[list[Reply]]:
        timeouts = self.options.timeouts
        # Without PIPELINING each chunk waits for its reply (RFC 3030 §4.2).
        window = _BDAT_WINDOW if pipelining else 1
        chunks: Iterator[bytes] = iter(outgoing.chunks)
        current = next(chunks, b"")
        outstanding = 0
        while True:
            following = next(chunks, None)
            last = following is None
            self._queue(Bdat(size=len(current), last=last))
            if current:
                self._out += self.conn.send(MessageData(data=current))
            self._out += self.conn.send(EndOfMessage() if last else EndOfChunk())
            if following is None:
                break
            outstanding += 1
            if outstanding >= window:
                for _ in range(outstanding):
                    reply = yield from self._reply(timeouts.data_block, "BDAT")
                    if not reply.is_success:
                        yield from self._reset_if_needed()  # reads the rest of the pipeline
                        raise errors.DataRefused("a BDAT chunk was refused", reply, step="BDAT")
                outstanding = 0
            yield from self._flush(timeouts.data_block)
            current = following
        for _ in range(outstanding):
            reply = yield from self._reply(timeouts.data_block, "BDAT")
            if not reply.is_success:
                yield from self._reset_if_needed()  # reads the rest of the pipeline
                raise errors.DataRefused("a BDAT chunk was refused", reply, step="BDAT")
        return (yield from self._final_replies())

    def _final_replies(self) -> Flow[list[Reply]]:
        count = max(1, len(self.conn.accepted_recipients)) if self.options.lmtp else 1
        finals = []
        for _ in range(count):
            reply = yield from self._reply(self.options.timeouts.data_end, "message")
            finals.append(reply)
            if reply.code == 421:
                break  # §3.8: the server is closing; no more replies come
        return finals + [finals[-1]] * (count - len(finals))

    def _result(
        self, recipients: list[str], accepted: list[str], refused: dict[str, Reply], finals: list[Reply]
    ) -> SendResult:
        replies = dict(refused)
        if self.options.lmtp:
            per_recipient = dict(zip(accepted, finals))
        else:
            per_recipient = {r: finals[-1] for r in accepted}
        replies.update(per_recipient)
        delivered = tuple(r for r in accepted if per_recipient[r].is_success)
        refused.update({r: reply for r, reply in per_recipient.items() if not reply.is_success})
        return SendResult(
            accepted=delivered,
            refused=refused,
            replies={r: replies[r] for r in recipients if r in replies},
            data_reply=finals[-1],
        )

    def _drain_pending(self) -> Flow[None]:
        while self.conn.pending and self._closing is None:
            yield from self._reply(self.options.timeouts.command, "pipeline")

    def _reset_if_needed(self) -> Flow[None]:
        yield from self._drain_pending()
        if self.conn.state in (State.MAIL, State.RCPT, State.BDAT, State.BDAT_FAILED):
            yield from self._command(Rset(), self.options.timeouts.command, "RSET")

    # -- closing -------------------------------------------------------------

    def quit(self) -> Flow[None]:
        """QUIT (waiting briefly for the 221) and close the connection."""
        yield from self._quit_quietly()

    def _quit_quietly(self) -> Flow[None]:
        if not self._closed and self.conn.state not in (State.CLOSED, State.ERROR):
            try:
                yield from self._command(Quit(), min(self.options.timeouts.command, 5.0), "QUIT")
            except errors.SMTPError:
                pass  # the server may hang up without its 221; nothing is lost
            except LocalProtocolError:
                pass  # QUIT cannot be sent now (mid-DATA, say): closing ends the session
        yield from self._close()

    def _close(self) -> Flow[None]:
        if not self._closed:
            self._closed = True
            yield Close()


def _refusals(exc: errors.SMTPError, group: list[str]) -> dict[str, Reply]:
    """Each recipient of *group* -> the reply that refused it in *exc*."""
    if isinstance(exc, errors.RecipientsRefused):
        return exc.replies
    assert isinstance(exc, errors.SMTPReplyError)
    return dict.fromkeys(group, exc.reply)


def _trace(event: Command, data: bytes) -> str:
    """The trace line for *event*, with SASL data redacted (SASL response
    lines are not commands and are never traced)."""
    if isinstance(event, Auth):
        return f"AUTH {event.mechanism}" + ("" if event.initial_response is None else " ****")
    return data.decode("utf-8", "replace").rstrip("\r\n")
