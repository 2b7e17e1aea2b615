# Theory of operation
# -------------------
# ``ServerSession.run()`` is one server connection, written once as a
# generator flow (see ``_actions``) over a ``ServerConnection``.  It turns
# the core's events into calls on the application's ``Handler`` (yielded
# as ``Call`` actions, so an async adapter can await coroutine hooks) and
# the handler's answers into replies:
#
#   connect -> greeting          EHLO/HELO/LHLO -> ehlo      MAIL -> mail
#   RCPT -> rcpt                 DATA/BDAT content -> message_data (streaming)
#   end of data -> message       AUTH verification -> auth   VRFY -> vrfy
#   RSET -> rset                 QUIT -> quit                end -> disconnect
#
# A hook returns a ``Reply`` or None (the core's usual reply), or raises
# ``Reject(reply)``; any other exception is logged and answered 451 4.3.0.
# A message counts as delivered only when ``message`` returned (a 2xx)
# after the end of data: content that stops short (EOF, timeout, shutdown)
# reaches no hook but ``disconnect``, and a streaming handler must commit
# its staged data in ``message`` only.
#
# Replies are gathered and written in one Send when the input is drained
# (RFC 2920 §3.2: "the server ... flushes when its input is drained").
# Timeouts are the adapter's (each Receive carries one, and marks the
# reads that continue a command already begun, which keep its deadline:
# a timeout per command, RFC 5321 §4.5.3.2.7, with no clock here); a timeout,
# ``Shutdown`` or a protocol error ends the session with 421 (or the
# error's own reply), and the transport is closed.
#
# What was negotiated is recorded as observed, without a clock: the AUTH
# mechanism that got its 235 (``Session.auth_mechanism``), whether the
# content came by BDAT (``Envelope.chunked``), and whether a command of
# the transaction was pipelined (``Envelope.pipelined``).  A command is
# pipelined when the core hands it out while the reply to the command
# ahead of it is still unsent: replies wait in ``_out`` until the input
# is drained, so the command was already received before that reply
# went out (RFC 2920 §3.1).
from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias, TypeVar

from .. import _replies as R
from .._connection import NEED_DATA, PAUSED
from .._errors import LocalProtocolError, RemoteProtocolError
from .._esmtp_events import Auth, AuthResponse, Bdat, Lhlo, ProxyHeader, Xclient
from .._events import (
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Helo,
    Mail,
    MessageData,
    MessageRejected,
    Quit,
    Rcpt,
    Reply,
    Rset,
    Vrfy,
)
from .._server import ServerConnection
from .._server_config import ServerConfig
from .._state import State
from ._actions import Call, Close, Flow, Receive, Send, Shutdown, StartTLS

__all__ = ["Session", "Envelope", "Handler", "Reject", "ServerTimeouts", "ServerSession"]

T = TypeVar("T")
#: What a hook returns: its value, or (in the async adapters) an awaitable of it.
Maybe: TypeAlias = T | Awaitable[T]

log = logging.getLogger("smtpproto")

LOCAL_ERROR = R.rejection(451, "4.3.0", "Local error in processing, try again later")
TIMED_OUT = R.rejection(421, "4.4.2", "Timeout, closing connection")


@dataclass
class Session:
    """What a handler knows about the connection it serves."""

    #: The peer's address as the adapter gave it (or the PROXY/XCLIENT one).
    peer: Any = None
    #: True once the connection is encrypted.
    tls: bool = False
    #: The authenticated identity, once AUTH succeeded.
    auth_identity: str | None = None
    #: The SASL mechanism (upper case, e.g. ``"PLAIN"``) of the AUTH
    #: exchange that succeeded with 235 (RFC 4954 §4), or None.  Like the
    #: identity, forgotten after STARTTLS (RFC 3207 §4.2).
    auth_mechanism: str | None = None
    #: The name given in EHLO/HELO/LHLO.
    ehlo_name: str | None = None
    #: The PROXY protocol header, when one was read.
    proxy: ProxyHeader | None = None
    #: Free room for the application's own per-connection state.
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Envelope:
    """One mail transaction as the server received it."""

    #: The MAIL command (reverse-path and parameters).
    mail: Mail
    #: The accepted RCPT commands, in order.
    recipients: list[Rcpt]
    #: The content as received (unstuffed; line ends as sent), or None for
    #: a streaming handler, which got it through ``message_data``.
    content: bytes | None = None
    #: True when the content came in BDAT chunks (RFC 3030 §2), False
    #: when it came after DATA (RFC 5321 §4.1.1.4).
    chunked: bool = False
    #: True when at least one command of the transaction (MAIL, RCPT,
    #: DATA or BDAT) had been received before the reply to the command
    #: ahead of it was sent: the client did not wait for that reply (RFC
    #: 2920 §3.1).  This is what the server observed: commands a client
    #: sends without waiting but that arrive in separate reads, each
    #: after the previous reply went out, look unpipelined.
    pipelined: bool = False

    @property
    def smtputf8(self) -> bool:
        """True when MAIL carried the SMTPUTF8 parameter (RFC 6531 §3.4)."""
        return "SMTPUTF8" in self.mail.parameters

    @property
    def sender(self) -> str:
        """The reverse-path (``""`` for ``<>``)."""
        return self.mail.reverse_path

    @property
    def recipient_addresses(self) -> list[str]:
        """The forward-paths of the accepted recipients."""
        return [rcpt.forward_path for rcpt in self.recipients]


class Reject(Exception):
    """Raise from a hook to answer with *reply*."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code} {reply.message}")
        #: The reply to send.
        self.reply = reply


class Handler:
    """The application side of a server.  Override the hooks you need;
    each gets the :class:`Session` and may return a :class:`Reply`, None
    for the usual reply, or raise :class:`Reject`.  In the async adapters a
    hook may be a coroutine function.

    The defaults accept every sender and recipient, accept and drop
    messages, answer VRFY with 252, and refuse every AUTH (AUTH is not
    offered unless :meth:`auth` is overridden).
    """

    #: Hand the content to :meth:`message_data` in chunks as it arrives,
    #: instead of whole to :meth:`message`.
    streaming: bool = False

    def connect(self, session: Session) -> Maybe[Reply | None]:
        """A client connected; return a greeting (554 refuses the session)."""
        return None

    def ehlo(self, session: Session, name: str) -> Maybe[Reply | None]:
        """EHLO, HELO or LHLO with the client's *name*."""
        return None

    def mail(self, session: Session, mail: Mail) -> Maybe[Reply | None]:
        """MAIL FROM, already checked against the grammar and extensions."""
        return None

    def rcpt(self, session: Session, rcpt: Rcpt) -> Maybe[Reply | None]:
        """RCPT TO, already checked against the grammar and extensions."""
        return None

    def message_data(self, session: Session, chunk: bytes) -> Maybe[Reply | None]:
        """A chunk of content (streaming handlers only).  Raising (``Reject``
        or any exception) or returning a 4xx/5xx reply refuses the message:
        the rest of its content skips this hook, :meth:`message` is not
        called, and the end of data is answered with the refusal (451 4.3.0
        for an exception)."""

    def message(
        self, session: Session, envelope: Envelope
    ) -> Maybe[Reply | Sequence[Reply] | None]:
        """The message is complete.  Return its reply; an LMTP server may
        return one reply per recipient, in order."""
        return None

    def auth(self, session: Session, request: object) -> object:
        """Answer a SASL verification request (``smtpproto.sasl``
        ``CheckPassword`` -> bool, ``LookupPassword`` -> str or None,
        ``LookupScram`` -> ``ScramCredentials`` or None, ``CheckToken`` ->
        bool).  The default refuses everybody."""
        return None

    def vrfy(self, session: Session, text: str) -> Maybe[Reply | None]:
        """VRFY *text*; the default is 252 (RFC 5321 §3.5.3)."""
        return None

    def rset(self, session: Session) -> Maybe[None]:
        """The transaction was reset (RSET)."""

    def quit(self, session: Session) -> Maybe[None]:
        """The client said QUIT."""

    def disconnect(self, session: Session) -> Maybe[None]:
        """The connection is over (always called last)."""


@dataclass(frozen=True, kw_only=True)
class ServerTimeouts:
    """Seconds a server waits for the client (RFC 5321 §4.5.3.2: at least
    five minutes per command)."""

    command: float = 300.0
    data: float = 300.0


def adapter_config(
    config: ServerConfig | None, has_certificate: bool, implicit_tls: bool
) -> ServerConfig:
    """The configuration an adapter's server runs with: *config*, or by
    default one that offers STARTTLS when a certificate is given and TLS is
    not implicit; raises ``ValueError`` when the TLS setup cannot work."""
    config = config or ServerConfig(starttls=has_certificate and not implicit_tls)
    if not has_certificate and (implicit_tls or config.starttls):
        raise ValueError("implicit TLS and STARTTLS need an ssl_context with a certificate")
    return config


def offers_auth(handler: Handler) -> bool:
    """True when *handler* overrides :meth:`Handler.auth`."""
    return type(handler).auth is not Handler.auth


class ServerSession:
    """The server side of one connection, as a flow (:meth:`run`)."""

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig | None = None,
        *,
        peer: Any = None,
        tls: bool = False,
        trusted: bool = False,
        timeouts: ServerTimeouts | None = None,
    ) -> None:
        self.handler = handler
        config = config if config is not None else ServerConfig()
        if config.auth_mechanisms and not offers_auth(handler):
            # No verifier, no AUTH advertised.
            config = replace(config, auth_mechanisms=(), require_auth=False)
        self.conn = ServerConnection(config, tls=tls, trusted=trusted)
        self.session = Session(peer=peer, tls=tls)
        self.timeouts = timeouts or ServerTimeouts()
        self._out = bytearray()
        self._receives: dict[tuple[float, bool], Receive] = {}
        self._chunks: list[bytes] = []
        # A streaming handler's refusal of the message being received.
        self._refusal: Reply | None = None
        # The negotiation record (see the theory of operation): the event
        # just read came while a reply was unsent; the transaction so far.
        self._early = False
        self._pipelined = False
        self._chunked = False
        self._mechanism: str | None = None
        #: Messages this session delivered (a 2xx after their end of data).
        self.delivered = 0

    def _flush(self) -> Flow[None]:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            yield Send(data, self.timeouts.command)

    def _reply(self, reply: Reply) -> None:
        self._out += self.conn.send(reply)

    def _answer(self, reply: Reply, hook: str) -> None:
        """Send a hook's reply.  One the protocol does not allow here (a 354
        to RCPT, say) is the application's bug: it is logged, and 451 4.3.0
        is sent instead."""
        try:
            self._reply(reply)
        except LocalProtocolError as exc:
            log.error("smtpproto: the %s hook's reply %d is not allowed here: %s", hook, reply.code, exc)
            self._reply(LOCAL_ERROR)

    def _call(self, hook: str, *args: Any) -> Flow[Any]:
        try:
            return (yield Call(hook, (self.session, *args)))
        except Reject as exc:
            return exc.reply
        except Exception:  # noqa: BLE001 - the application's failure is a 451, not a crash
            log.exception("smtpproto: the %s hook failed", hook)
            return LOCAL_ERROR

    def run(self) -> Flow[None]:
        """Serve the connection until it ends; close it."""
        conn = self.conn
        try:
            yield from self._serve()
        except RemoteProtocolError as exc:
            log.debug("smtpproto: protocol error from %s: %s", self.session.peer, exc)
            if exc.reply is not None and conn.state is State.ERROR:
                self._reply(exc.reply)
        except TimeoutError:
            self._reply(TIMED_OUT)  # §3.8 (both come while the session is open)
        except Shutdown:
            self._reply(R.SHUTTING_DOWN)
        except OSError as exc:
            log.debug("smtpproto: connection from %s lost: %s", self.session.peer, exc)
            self._out.clear()
        try:
            yield from self._flush()
        except OSError:
            pass
        try:
            yield Call("disconnect", (self.session,))
        except Exception:  # noqa: BLE001
            log.exception("smtpproto: the disconnect hook failed")
        yield Close()

    def _serve(self) -> Flow[None]:
        conn = self.conn
        timeout = self.timeouts.command
        if conn.config.proxy_protocol:
            header = yield from self._next_event(timeout)
            if not isinstance(header, ProxyHeader):
                return
            self.session.proxy = header
            if header.source is not None:
                self.session.peer = (header.source, header.source_port)
        greeting = yield from self._call("connect")
        self._answer(greeting if isinstance(greeting, Reply) else conn.greeting(), "connect")
        while True:
            wait = self.timeouts.data if conn.state in (State.DATA, State.BDAT) else timeout
            event = yield from self._next_event(wait)
            if isinstance(event, ConnectionClosed):
                return
            yield from self._handle(event)
            if conn.state is State.TLS:
                yield from self._flush()
                yield StartTLS()
                conn.tls_established()
                self.session.tls = True
                self.session.ehlo_name = None
                self.session.auth_identity = None
                self.session.auth_mechanism = None

    def _next_event(self, timeout: float) -> Flow[Event]:
        conn = self.conn
        continued = False
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                if self._out:  # _flush(), inline: this runs once per command
                    out, self._out = bytes(self._out), bytearray()
                    yield Send(out, self.timeouts.command)
                receive = self._receives.get((timeout, continued))
                if receive is None:  # the actions are frozen: make each kind once
                    receive = self._receives[timeout, continued] = Receive(timeout, continued=continued)
                data = yield receive
                conn.receive_data(data)
                # Reading on before an event came out: the same command is
                # still arriving, and its deadline stands (RFC 5321
                # §4.5.3.2.7, a timeout per command, not per read).  Content
                # keeps a timeout per read, like the RFC's data block
                # (§4.5.3.2.5).
                continued = conn.state not in (State.DATA, State.BDAT)
                continue
            assert event is not PAUSED, "every event is answered before the next"
            assert isinstance(event, Event)
            self._early = bool(self._out)
            return event

    def _handle(self, event: Event) -> Flow[None]:
        conn = self.conn
        session = self.session
        if isinstance(event, MessageData):
            if not self.handler.streaming:
                self._chunks.append(event.data)
            elif self._refusal is None:
                failure = yield from self._call("message_data", event.data)
                if isinstance(failure, Reply) and not failure.is_success:
                    self._refusal = failure
            return
        if isinstance(event, (Rcpt, Data, Bdat)):
            self._pipelined |= self._early
        if isinstance(event, Bdat):
            self._chunked = True
        if isinstance(event, (Bdat, ProxyHeader)):
            return  # answered after the chunk's octets / not a command
        if isinstance(event, EndOfMessage):
            yield from self._end_of_message()
            return
        if isinstance(event, MessageRejected):
            self._chunks = []
            self._refusal = None
            for _ in range(conn.replies_due):
                self._reply(event.reply)
            return
        answer: Any = None
        hook = ""
        if isinstance(event, (Ehlo, Helo, Lhlo)):
            hook = "ehlo"
            answer = yield from self._call(hook, event.domain)
        elif isinstance(event, Mail):
            self._chunks = []
            self._refusal = None
            self._pipelined = self._early
            self._chunked = False
            hook = "mail"
            answer = yield from self._call(hook, event)
        elif isinstance(event, Rcpt):
            hook = "rcpt"
            answer = yield from self._call(hook, event)
        elif isinstance(event, (Auth, AuthResponse)):
            if isinstance(event, Auth):
                self._mechanism = event.mechanism
            request = conn.auth_request
            if request is not None:
                hook = "auth"
                verdict = yield from self._call(hook, request)
                answer = verdict if isinstance(verdict, Reply) else conn.auth_reply(verdict)
        elif isinstance(event, Vrfy):
            hook = "vrfy"
            answer = yield from self._call(hook, event.text)
        elif isinstance(event, Rset):
            self._chunks = []
            self._refusal = None
            yield from self._call("rset")
        elif isinstance(event, Quit):
            yield from self._call("quit")
        elif isinstance(event, Xclient):
            decoded = event.decoded()
            if "ADDR" in decoded:
                session.peer = (decoded["ADDR"], decoded.get("PORT"))
        if isinstance(answer, Reply):
            self._answer(answer, hook)
            reply = answer
        else:
            reply = conn.default_reply()
            self._reply(reply)
        if reply.is_success:
            if isinstance(event, (Ehlo, Helo, Lhlo)):
                session.ehlo_name = event.domain
            elif isinstance(event, (Auth, AuthResponse)) and reply.code == 235:
                session.auth_identity = conn.auth_identity
                session.auth_mechanism = self._mechanism

    def _end_of_message(self) -> Flow[None]:
        conn = self.conn
        mail = conn.mail
        assert mail is not None
        content = None if self.handler.streaming else b"".join(self._chunks)
        self._chunks = []
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            answer: Any = refusal  # the streaming hook refused the message
        else:
            envelope = Envelope(
                mail=mail,
                recipients=list(conn.recipients),
                content=content,
                chunked=self._chunked,
                pipelined=self._pipelined,
            )
            answer = yield from self._call("message", envelope)
        due = conn.replies_due
        if isinstance(answer, Reply) or answer is None:
            replies = [answer or conn.default_reply()] * due
        else:
            replies = list(answer)
            if len(replies) != due:
                log.error("smtpproto: message hook gave %d replies for %d recipients", len(replies), due)
                replies = [LOCAL_ERROR] * due
        if any(reply.is_success for reply in replies):
            self.delivered += 1
        for reply in replies:
            self._answer(reply, "message")
