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
#   send_many(...)  a batch of messages, pipelined across messages: each
#                   write carries one message's content and final dot and
#                   the next one's MAIL, RCPT... DATA (RFC 2920 §3.1), and
#                   the result is one outcome per message (a SendResult or
#                   the error send() would have raised for it);
#   quit()          QUIT and close.
#
# Policy lives here, protocol rules in the core: the core refuses what the
# RFCs forbid, and this layer decides what to do about the server's
# answers.  It never downgrades: TLS required but refused ends the session
# before AUTH or MAIL (attack class 8), and a message that needs 8BITMIME
# or SMTPUTF8 is not sent to a server without them.  Timeouts are those of
# RFC 5321 §4.5.3.2, per step, handed to the adapter with each Receive.
# Commands are gathered and written in one Send before each read, so a
# pipelined batch is one write, and the content goes out with its final dot
# in one more: two round trips per message with send() (the content must
# wait for the 354, RFC 2920 §3.1), one with send_many(), whose writes put
# the next message's commands behind the dot.  send_many() is written as
# one generator per group with the reading of replies inline, since it runs
# once per message and each call saved is CPU saved.  What does not change from one message to the next
# is worked out once per session: what the server offered (once per EHLO
# reply), the RCPT events and the checked reverse-paths (events are
# immutable), so a message costs the core's work and little else.  The
# protocol trace goes to the logger ``smtpproto`` at DEBUG, with SASL data
# and message content left out.
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
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from .. import sasl
from .._client import ClientConfig, ClientConnection
from .._connection import NEED_DATA, Sentinel
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
from ..extensions import Capabilities
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
# Most validated RCPT events (and MAIL reverse-paths) a session keeps for
# reuse; a session that sends to more forgets them and starts again.
_EVENT_CACHE = 256
# Events without fields, made once (they are immutable).
_DATA = Data()
_END_OF_MESSAGE = EndOfMessage()
_RSET = Rset()
_NO_PARAMS: dict[str, str] = {}
# The states of a session that can carry no more messages, and those of a
# transaction that must be reset before the next MAIL (RFC 5321 §4.1.1.5).
_OVER = frozenset((State.CLOSED, State.ERROR))
_HALF_OPEN = frozenset((State.MAIL, State.RCPT))


def _content_failed() -> errors.SMTPError:
    """What the messages after one whose content failed get: the session
    was closed, since its DATA could not be ended without delivering it."""
    return errors.Disconnected("the session was closed when a message's content failed", step="message")


def _ended() -> errors.SMTPError:
    """What the messages after a 421 get when the message it struck was
    delivered all the same (its reply came before it)."""
    return errors.Disconnected("the server ended the session", step="MAIL")


@dataclass(slots=True)
class _Open:
    """A message of a batch whose DATA got its 354: its content is next."""

    #: Its place in the batch's outcomes.
    index: int
    outgoing: Outgoing
    recipients: list[str]
    accepted: list[str]
    refused: dict[str, Reply]
    smtputf8: bool


_new_result = object.__new__


def _failed(exc: Exception, step: str) -> errors.SMTPError:
    """The outcome of a batch's message for which :meth:`ClientSession.send`
    would have raised *exc*, which is not an :class:`~errors.SMTPError`."""
    error = errors.SMTPError(f"the message was not sent: {exc!r}", step=step)
    error.__cause__ = exc
    return error


@dataclass(frozen=True, slots=True, kw_only=True)
class _Offer:
    """What a transaction needs of the server's EHLO reply, read once per
    reply rather than once per message."""

    caps: Capabilities
    #: LIMITS RCPTMAX (RFC 9422 §4.1), None when not announced.
    rcptmax: int | None
    #: SIZE offered (RFC 1870): MAIL declares the size.
    size: bool
    pipelining: bool
    chunking: bool
    binarymime: bool
    eightbitmime: bool
    smtputf8: bool
    requiretls: bool
    dsn: bool

    @classmethod
    def of(cls, caps: Capabilities) -> _Offer:
        """Read *caps*."""
        return cls(
            caps=caps,
            rcptmax=caps.limits.get("RCPTMAX"),
            size=caps.size is not None,
            pipelining=caps.pipelining,
            chunking=caps.chunking,
            binarymime=caps.binarymime,
            eightbitmime=caps.eightbitmime,
            smtputf8=caps.smtputf8,
            requiretls=caps.requiretls,
            dsn=caps.dsn,
        )


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
        # What is queued for the next write, and its length.
        self._out: list[bytes] = []
        self._out_size = 0
        self._offer_cache: _Offer | None = None
        # Events already validated, reused for the next messages: RCPT
        # events by (forward-path, parameters), and reverse-paths that a
        # MAIL event accepted (see _mail).
        self._rcpts: dict[tuple[str, tuple[tuple[str, str], ...]], Rcpt] = {}
        self._senders: set[str] = set()
        self._last_mail: Mail | None = None
        # Receive actions by timeout (immutable, so made once each).
        self._receives: dict[float, Receive] = {}
        # A batch's reply steps for a transaction, by its number of RCPTs.
        self._steps: dict[int, list[tuple[float, str]]] = {}
        #: The greeting, once read.
        self.greeting: Reply | None = None
        #: The reply to the last EHLO/HELO/LHLO.
        self.hello_reply: Reply | None = None
        self._closed = False
        # The 421 with which the server ended the session, if it did.
        self._closing: Reply | None = None
        self._tls_method: Literal["implicit", "STARTTLS"] | None = None
        # Whether the protocol trace is on, read once per batch of messages
        # rather than once per command and reply.
        self._debug = log.isEnabledFor(logging.DEBUG)
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
        if isinstance(event, Command) and log.isEnabledFor(logging.DEBUG):
            log.debug("C: %s", _trace(event, data))
        self._out.append(data)
        self._out_size += len(data)

    def _put(self, data: bytes) -> None:
        """Queue content bytes for the next write."""
        self._out.append(data)
        self._out_size += len(data)

    def _take_out(self) -> bytes:
        """Everything queued, as one write: a pipelined batch, or the
        content with its final dot (RFC 2920 §3.1); one copy to join."""
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out, self._out_size = [], 0
        return data

    def _flush(self, timeout: float) -> Flow[None]:
        if self._out:
            try:
                yield Send(self._take_out(), timeout)
            except OSError as exc:
                raise _send_failure(exc) from None

    def _next_reply(self, step: str) -> Reply | None:
        """The next reply among the bytes received already, or None when
        more are needed (no generator: most replies of a pipelined batch
        arrive in one read)."""
        try:
            event = self.conn.next_event()
        except RemoteProtocolError as exc:
            raise errors.ProtocolFailure(f"{step}: {exc}", step=step) from None
        return self._judge(event, step)

    def _judge(self, event: Event | Sentinel, step: str) -> Reply | None:
        """The reply *event* is (noting a 421 that closed the session), None
        for ``NEED_DATA``; ``Disconnected`` when the server closed."""
        if type(event) is Reply:
            if self._debug:
                log.debug("S: %s %s", event.code, " / ".join(event.text))
            if event.code == 421 and self.conn.state is State.CLOSED:
                self._closing = event
            return event
        if isinstance(event, ConnectionClosed):
            raise errors.Disconnected(f"the server closed the connection during {step}", step=step)
        assert event is NEED_DATA, event
        return None

    def _receive(self, timeout: float, step: str) -> Flow[None]:
        """Send what is queued, then read once and feed the core."""
        if self._out:  # _flush, without a generator of its own
            try:
                yield Send(self._take_out(), timeout)
            except OSError as exc:
                raise _send_failure(exc) from None
        action = self._receives.get(timeout)
        if action is None:
            action = self._receives[timeout] = Receive(timeout)
        try:
            data = yield action
        except TimeoutError:
            raise errors.Timeout(f"no reply to {step} within {timeout} s", step=step) from None
        except OSError as exc:
            raise errors.Disconnected(f"connection lost during {step}: {exc}", step=step) from None
        self.conn.receive_data(data)

    def _reply(self, timeout: float, step: str) -> Flow[Reply]:
        """The next reply, flushing queued commands first."""
        while True:
            reply = self._next_reply(step)
            if reply is not None:
                return reply
            yield from self._receive(timeout, step)

    def _command(self, command: Command, timeout: float, step: str) -> Flow[Reply]:
        self._queue(command)
        return (yield from self._reply(timeout, step))

    def _answer(self, command: Command, timeout: float, step: str) -> Flow[Reply]:
        """Send *command* and return its reply.  Once a 421 ended the
        session (§3.8) it stands for every reply still due: the server sends
        no more, and the command is not sent."""
        if self._closing is not None:
            return self._closing
        return (yield from self._command(command, timeout, step))

    def _answers(self, steps: list[tuple[float, str]]) -> Flow[list[Reply]]:
        """The replies to commands queued already, one per (timeout, step),
        in order (RFC 2920 §3.1), as :meth:`_answer` gives each."""
        replies: list[Reply] = []
        for timeout, step in steps:
            while True:
                if self._closing is not None:
                    replies.append(self._closing)
                    break
                reply = self._next_reply(step)
                if reply is not None:
                    replies.append(reply)
                    break
                yield from self._receive(timeout, step)
        return replies

    def _offer(self) -> _Offer:
        """What the flows use of the server's capabilities, read once per
        EHLO reply (the core replaces ``capabilities`` with each one)."""
        caps = self.conn.capabilities
        offer = self._offer_cache
        if offer is None or offer.caps is not caps:
            offer = self._offer_cache = _Offer.of(caps)
        return offer

    # -- opening -----------------------------------------------------------

    def open(self) -> Flow[Reply]:
        """Greeting, hello, STARTTLS and AUTH; returns the last hello reply.

        When a step fails the session is ended (QUIT after a refusal) and
        the connection closed before the error is raised.
        """
        self._debug = log.isEnabledFor(logging.DEBUG)
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

    def _mail_parameters(self, outgoing: Outgoing, caps: _Offer) -> dict[str, str | None]:
        params: dict[str, str | None] = {}
        if caps.size and outgoing.size is not None:
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
        dsn = outgoing.dsn
        if caps.dsn and (dsn.ret is not None or dsn.envid is not None):
            params.update(dsn_params.mail_parameters(ret=dsn.ret, envid=dsn.envid))
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
        self._debug = log.isEnabledFor(logging.DEBUG)
        try:
            recipients = outgoing.recipients
            if not recipients:
                raise ValueError("a message needs at least one recipient")
            if self._closed or self.conn.state in (State.CLOSED, State.ERROR):
                raise errors.Disconnected("the session is over", step="MAIL")
            limit = self._offer().rcptmax or len(recipients)
            if len(recipients) > limit:
                return (yield from self._send_groups(outgoing, limit))
            result = yield from self._transaction(outgoing, recipients)
            if not result.accepted:
                assert result.data_reply is not None
                raise errors.MessageRefused("the message was refused", result.data_reply, step="message")
            return result
        except (errors.Disconnected, errors.Timeout, errors.ProtocolFailure):
            yield from self._close()
            raise

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

    def _mail(self, sender: str, parameters: dict[str, str | None]) -> Mail:
        """MAIL for *sender*, its path validated once per session."""
        if sender not in self._senders:
            mail = Mail(reverse_path=sender, parameters=parameters)  # validates both
            if len(self._senders) >= _EVENT_CACHE:
                self._senders.clear()
            self._senders.add(sender)
            return mail
        last = self._last_mail
        if last is not None and last.reverse_path == sender and last.parameters == parameters:
            return last  # the same envelope as the last message: the same event
        # The path passed the check above for an earlier message; the
        # parameters are _mail_parameters' own: keywords it spells, values it
        # formats, or values their extension checked (DSN).  The core checks
        # them against the server's offer again when MAIL is sent.
        mail = Mail._trusted(reverse_path=sender, parameters=types.MappingProxyType(parameters))
        self._last_mail = mail
        return mail

    def _rcpt(self, path: str, parameters: dict[str, str]) -> Rcpt:
        """RCPT for *path*: events are immutable, so one validated event
        serves every message of the session to that recipient."""
        key = (path, tuple(parameters.items()))
        rcpt = self._rcpts.get(key)
        if rcpt is None:
            rcpt = Rcpt(forward_path=path, parameters=parameters)
            if len(self._rcpts) >= _EVENT_CACHE:
                self._rcpts.clear()
            self._rcpts[key] = rcpt
        return rcpt

    def _transaction(self, outgoing: Outgoing, recipients: list[str]) -> Flow[SendResult]:
        timeouts = self.options.timeouts
        caps = self._offer()
        mail = self._mail(outgoing.sender, self._mail_parameters(outgoing, caps))
        notify = outgoing.dsn.notify
        rcpt_params = dsn_params.rcpt_parameters(notify=notify) if caps.dsn and notify else {}
        rcpts = [self._rcpt(r, rcpt_params) for r in recipients]
        bdat = self.options.chunking and caps.chunking
        pipelining = self.options.pipelining and caps.pipelining
        replies: dict[str, Reply] = {}
        data_reply = None
        if pipelining:
            # RFC 2920 §3.1: MAIL and RCPT anywhere in a batch, DATA last;
            # the batch goes out in one write when the first reply is read.
            self._queue(mail)
            for rcpt in rcpts:
                self._queue(rcpt)
            steps = [(timeouts.command, "MAIL")] + [(timeouts.command, "RCPT")] * len(rcpts)
            if not bdat:
                self._queue(_DATA)
                steps.append((timeouts.data_start, "DATA"))
            answers = yield from self._answers(steps)
            mail_reply = answers[0]
            for rcpt, reply in zip(rcpts, answers[1:]):
                replies[rcpt.forward_path] = reply
            if not bdat:
                data_reply = answers[-1]
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
                data_reply = yield from self._answer(_DATA, timeouts.data_start, "DATA")
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
        return self._result(
            recipients, accepted, refused, finals,
            pipelined=pipelining, chunked=bdat, smtputf8="SMTPUTF8" in mail.parameters,
        )

    def _send_data(self, outgoing: Outgoing) -> Flow[list[Reply]]:
        timeouts = self.options.timeouts
        log.debug("C: <message content>")
        send = self.conn.send
        for chunk in outgoing.chunks:
            self._put(send(MessageData(data=chunk)))
            if self._out_size >= 65536:
                yield from self._flush(timeouts.data_block)
        # The content and its final dot go out in one write with nothing
        # after them: the reply to the dot is awaited (RFC 2920 §3.1 allows
        # the content to start a batch; no next command is known yet).
        self._queue(_END_OF_MESSAGE)
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
                self._put(self.conn.send(MessageData(data=current)))
            self._put(self.conn.send(_END_OF_MESSAGE if last else EndOfChunk()))
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
        self,
        recipients: list[str],
        accepted: list[str],
        refused: dict[str, Reply],
        finals: list[Reply],
        *,
        pipelined: bool,
        chunked: bool,
        smtputf8: bool,
    ) -> SendResult:
        final = finals[-1]
        if not self.options.lmtp and final.is_success and len(accepted) == len(recipients):
            # Every recipient accepted, then the message: one reply for all.
            return SendResult(
                accepted=tuple(accepted),
                refused=refused,
                replies=dict.fromkeys(recipients, final),
                data_reply=final,
                pipelined=pipelined,
                chunked=chunked,
                smtputf8=smtputf8,
            )
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
            pipelined=pipelined,
            chunked=chunked,
            smtputf8=smtputf8,
        )

    # -- a batch of messages ---------------------------------------------------

    def send_many(self, messages: Iterable[Outgoing]) -> Flow[list[SendResult | errors.SMTPError]]:
        """Send *messages* over this session, pipelining across them; return
        one outcome per message, in order: its :class:`SendResult`, or the
        :class:`~errors.SMTPError` that :meth:`send` would have raised for it
        alone (:class:`~errors.SenderRefused`,
        :class:`~errors.RecipientsRefused`, :class:`~errors.DataRefused`,
        :class:`~errors.MessageRefused`, :class:`~errors.NotSupported`...).

        With PIPELINING and DATA, each write after the first carries the
        content and final dot of one message, then (after a RSET when the
        message before was refused half way) the MAIL, RCPTs and DATA of the
        next, before the reply to the dot is read.  RFC 2920 §3.1 allows
        it: the content may start a group, DATA must end one.  So a message
        costs one round trip, not two.  A message that cannot be pipelined
        so (no PIPELINING, ``ClientOptions(pipelining=False)``, BDAT, LMTP,
        or more recipients than the server's LIMITS RCPTMAX) goes by
        :meth:`send`, on its own, after the replies the batch still awaits.

        A failure that ends the session (:class:`~errors.Disconnected`,
        :class:`~errors.Timeout`, :class:`~errors.ProtocolFailure`, or a
        421 reply, RFC 5321 §3.8) is the outcome of the message it struck
        and, the same object, of every later message; a message whose reply
        to the final dot never came is never reported delivered.  The
        connection is then closed.  Refusals leave the session ready for
        the next message, as in :meth:`send`.

        Where :meth:`send` would raise an exception that is not an
        :class:`~errors.SMTPError` (a message without recipients, chunks
        that raise, content the core refuses with
        :exc:`~smtpproto.LocalProtocolError`, a MAIL over the server's
        LIMITS MAILMAX), the message's outcome is an
        :class:`~errors.SMTPError` with that exception as its
        ``__cause__``, so the outcomes of the other messages are not lost.
        Content that fails half way cannot be taken back (its 354 was
        given): the connection is closed, as :meth:`send` does, and the
        later messages fail with :class:`~errors.Disconnected`.  An
        exception raised by *messages* itself propagates (the connection
        is closed first when a message's DATA was accepted and its content
        not yet sent).
        """
        self._debug = log.isEnabledFor(logging.DEBUG)
        outcomes: list[SendResult | errors.SMTPError | None] = []
        ended: errors.SMTPError | None = None
        current: _Open | None = None  # got its 354; its content is next
        iterator = iter(messages)
        while True:
            try:
                outgoing = next(iterator)
            except StopIteration:
                break
            except BaseException:
                if current is not None:
                    # Its DATA was accepted: closing is the only way out
                    # that delivers nothing half-told.
                    yield from self._close()
                raise
            index = len(outcomes)
            outcomes.append(None)
            if ended is None and self._over():
                ended = errors.Disconnected("the session is over", step="MAIL")
            if ended is not None:
                outcomes[index] = ended
                continue
            try:
                events = self._batch_events(outgoing)
            except errors.SMTPError as exc:
                outcomes[index] = exc  # NotSupported: nothing was sent
                continue
            except Exception as exc:  # noqa: BLE001 - the message's outcome
                outcomes[index] = _failed(exc, "MAIL")
                continue
            if events is None:
                ended = yield from self._batch_alone(current, outgoing, outcomes, index)
                current = None
            else:
                current, ended = yield from self._batch_group(current, outgoing, events, outcomes, index)
        if current is not None:
            _, ended = yield from self._batch_group(current, None, None, outcomes, -1)
        if ended is None and not self._over():
            yield from self._batch_reset()
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    def _over(self) -> bool:
        """True once the session can carry no more messages."""
        return self._closed or self.conn.state in _OVER

    def _batch_events(self, outgoing: Outgoing) -> tuple[Mail, list[Rcpt]] | None:
        """The MAIL and RCPT events of *outgoing* for a pipelined batch, or
        None when it must be sent on its own (see :meth:`send_many`)."""
        caps = self._offer()
        options = self.options
        recipients = outgoing.recipients
        if not recipients:
            raise ValueError("a message needs at least one recipient")
        if (
            not (options.pipelining and caps.pipelining)
            or (options.chunking and caps.chunking)
            or options.lmtp
            or (caps.rcptmax is not None and len(recipients) > caps.rcptmax)
        ):
            return None
        mail = self._mail(outgoing.sender, self._mail_parameters(outgoing, caps))
        notify = outgoing.dsn.notify
        rcpt_params = dsn_params.rcpt_parameters(notify=notify) if caps.dsn and notify else _NO_PARAMS
        return mail, [self._rcpt(r, rcpt_params) for r in recipients]

    def _batch_alone(
        self,
        current: _Open | None,
        outgoing: Outgoing,
        outcomes: list[SendResult | errors.SMTPError | None],
        index: int,
    ) -> Flow[errors.SMTPError | None]:
        """Send *outgoing* with :meth:`send`, after the message whose content
        is next (*current*) is finished and a half-refused transaction
        reset; return the error that ended the session, if one did."""
        ended: errors.SMTPError | None = None
        if current is not None:
            _, ended = yield from self._batch_group(current, None, None, outcomes, -1)
            if ended is not None:
                outcomes[index] = ended
                return ended
        try:
            yield from self._batch_reset()
            outcomes[index] = yield from self.send(outgoing)
        except errors.SMTPError as exc:
            outcomes[index] = ended = exc
        except Exception as exc:  # noqa: BLE001 - the message's outcome
            outcomes[index] = _failed(exc, "message")
            ended = _content_failed()
        if not self._over():
            return None
        yield from self._close()
        return ended or _ended()

    def _batch_group(
        self,
        current: _Open | None,
        outgoing: Outgoing | None,
        events: tuple[Mail, list[Rcpt]] | None,
        outcomes: list[SendResult | errors.SMTPError | None],
        index: int,
    ) -> Flow[tuple[_Open | None, errors.SMTPError | None]]:
        """One write: the content of *current* (when there is one), RSET
        when the last transaction was refused half way, then MAIL, RCPT...
        and DATA of *outgoing* (when there is one); then their replies, in
        order (RFC 2920 §3.1).  Returns the message whose content is next
        and the error that ended the session, if one did.

        Written as one generator, without the helpers :meth:`send` uses:
        it runs once per message, and each call saved is CPU time saved."""
        conn = self.conn
        send = conn.send
        timeouts = self.options.timeouts
        out = self._out
        # What each reply of the group answers: (timeout, step), in order.
        steps: list[tuple[float, str]] = []
        reset = current is None and events is not None and conn.state in _HALF_OPEN
        if current is not None:
            ended: errors.SMTPError | None = None
            try:
                if self._debug:
                    log.debug("C: <message content>")
                for chunk in current.outgoing.chunks:
                    data = send(MessageData(data=chunk))
                    out.append(data)
                    self._out_size += len(data)
                    if self._out_size >= 65536:
                        yield from self._flush(timeouts.data_block)
                        out = self._out
                out.append(send(_END_OF_MESSAGE))
            except errors.SMTPError as exc:  # a write failed
                outcomes[current.index] = ended = exc
            except Exception as exc:  # noqa: BLE001 - the message's outcome
                # As in send(): content cannot be taken back once its 354
                # came, and the only way out that delivers nothing is to close.
                outcomes[current.index] = _failed(exc, "message")
                ended = _content_failed()
            else:
                steps.append((timeouts.data_end, "message"))
            if ended is not None:
                if outgoing is not None:
                    outcomes[index] = ended
                yield from self._close()
                return None, ended
        queued = 0  # commands of *outgoing* queued
        if events is not None:
            first = len(out)
            try:
                if reset:
                    out.append(send(_RSET))
                    steps.append((timeouts.command, "RSET"))
                mail, rcpts = events
                out.append(send(mail))
            except LocalProtocolError as exc:
                # The core refused the MAIL (LIMITS MAILMAX, say) before a
                # byte of it was queued; what was queued before is read.
                outcomes[index] = _failed(exc, "MAIL")
            else:
                for rcpt in rcpts:
                    out.append(send(rcpt))
                out.append(send(_DATA))
                queued = len(rcpts) + 2
                steps += self._transaction_steps(len(rcpts))
            if self._debug:
                for line in out[first:]:  # commands only: no AUTH, no content
                    log.debug("C: %s", line.decode("utf-8", "replace").rstrip("\r\n"))
        replies: list[Reply] = []
        next_event = conn.next_event
        try:
            for timeout, step in steps:
                while True:
                    if self._closing is not None:
                        replies.append(self._closing)  # §3.8: it stands for the rest
                        break
                    # _next_reply(), inline for the usual case.
                    try:
                        event = next_event()
                    except RemoteProtocolError as exc:
                        raise errors.ProtocolFailure(f"{step}: {exc}", step=step) from None
                    if type(event) is Reply and event.code != 421:
                        if self._debug:
                            log.debug("S: %s %s", event.code, " / ".join(event.text))
                        replies.append(event)
                        break
                    if event is NEED_DATA:
                        yield from self._receive(timeout, step)
                    else:
                        reply = self._judge(event, step)  # a 421, or the end
                        assert reply is not None
                        replies.append(reply)
                        break
        except errors.SMTPError as exc:
            # Lost, timed out or garbled: this message and every later one
            # fail, and so does the one before unless its reply came.
            if current is not None:
                outcomes[current.index] = self._batch_result(current, replies[0]) if replies else exc
            if queued:
                outcomes[index] = exc
            yield from self._close()
            return None, exc
        if current is not None:
            outcome = outcomes[current.index] = self._batch_result(current, replies[0])
            if replies[0] is self._closing:
                # A 421 to the final dot ended the session (§3.8): what it
                # did to this message, it does to the later ones.
                ended = outcome if isinstance(outcome, errors.SMTPError) else _ended()
                if queued:
                    outcomes[index] = ended
                yield from self._close()
                return None, ended
        if not queued:
            if self._closed or conn.state in _OVER:  # a 421 to the RSET
                yield from self._close()
                return None, _ended()
            return None, None
        assert outgoing is not None
        recipients = outgoing.recipients
        mail_reply = replies[-queued]
        data_reply = replies[-1]
        rcpt_replies = replies[-queued + 1 : -1]
        error: errors.SMTPError
        for reply in rcpt_replies:
            if not 200 <= reply.code < 300:
                break
        else:
            # Every recipient accepted (the usual case): nothing to sort out.
            if 200 <= mail_reply.code < 300 and data_reply.code == 354:
                return _Open(index, outgoing, recipients, recipients, {}, "SMTPUTF8" in mail.parameters), None
        # As _transaction sorts them (a recipient named twice counts once,
        # by its last reply).
        answers = dict(zip([rcpt.forward_path for rcpt in rcpts], rcpt_replies))
        refused = {r: reply for r, reply in answers.items() if not 200 <= reply.code < 300}
        if not 200 <= mail_reply.code < 300:
            error = errors.SenderRefused("the sender was refused", mail_reply, step="MAIL")
        elif len(refused) == len(answers):
            error = errors.RecipientsRefused(refused)
        elif data_reply.code != 354:
            error = errors.DataRefused("DATA was refused", data_reply, step="DATA")
        else:
            accepted = [r for r in recipients if r in answers and r not in refused]
            return _Open(index, outgoing, recipients, accepted, refused, "SMTPUTF8" in mail.parameters), None
        outcomes[index] = error
        if self._closed or conn.state in _OVER:
            yield from self._close()
            return None, error
        return None, None

    def _transaction_steps(self, rcpts: int) -> list[tuple[float, str]]:
        """(timeout, step) of the replies to MAIL, *rcpts* RCPTs and DATA."""
        steps = self._steps.get(rcpts)
        if steps is None:
            timeouts = self.options.timeouts
            steps = [(timeouts.command, "MAIL")]
            steps += [(timeouts.command, "RCPT")] * rcpts
            steps.append((timeouts.data_start, "DATA"))
            if len(self._steps) < 16:
                self._steps[rcpts] = steps
        return steps

    def _batch_result(self, current: _Open, final: Reply) -> SendResult | errors.SMTPError:
        """The outcome of *current* after the reply to its final dot."""
        if 200 <= final.code < 300 and not current.refused:
            # Every recipient accepted, then the message: _result's fast case,
            # built without the frozen dataclass's field-by-field __init__.
            result = _new_result(SendResult)
            result.__dict__.update(
                accepted=tuple(current.accepted),
                refused={},
                replies=dict.fromkeys(current.recipients, final),
                data_reply=final,
                pipelined=True,
                chunked=False,
                smtputf8=current.smtputf8,
            )
            return result
        result = self._result(
            current.recipients, current.accepted, dict(current.refused), [final],
            pipelined=True, chunked=False, smtputf8=current.smtputf8,
        )
        if not result.accepted:
            return errors.MessageRefused("the message was refused", final, step="message")
        return result

    def _batch_reset(self) -> Flow[None]:
        """RSET after a transaction refused half way, so that the session
        is ready for the next message (as :meth:`send` leaves it)."""
        if self.conn.state in _HALF_OPEN and not self.conn.pending:
            yield from self._command(_RSET, self.options.timeouts.command, "RSET")

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
        self._debug = log.isEnabledFor(logging.DEBUG)
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


def _send_failure(exc: OSError) -> errors.SMTPError:
    """The error for a write that failed with *exc*."""
    if isinstance(exc, TimeoutError):
        return errors.Timeout("timed out sending", step="send")
    return errors.Disconnected(f"connection lost while sending: {exc}")


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
