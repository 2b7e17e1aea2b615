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
#
# One generator frame per connection.  ``run()`` reads events and answers
# them in one loop, with no generator per command or per hook call: the
# work for each kind of event is two plain functions found by the event's
# type (``_HANDLING``: one before the hook call, which returns the ``Call``
# to make, and one after it, which sends the reply), and the hook call is
# the one ``yield`` between them.  So a parked session is one small frame,
# and what it keeps is made when needed or shared: ``Session.data`` on
# first use, the content chunks with the first chunk, the ``Receive``
# actions once per ``ServerTimeouts``, the reply bytes as the bytes the
# core returned (a ``bytearray`` only when several replies wait).
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias

from .. import _replies as R
from .._connection import NEED_DATA, PAUSED
from .._errors import LocalProtocolError, RemoteProtocolError
from .._esmtp_events import Auth, AuthResponse, Bdat, Lhlo, ProxyHeader, Xclient
from .._esmtp_events import StartTLS as StartTLSCommand
from .._events import (
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
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
from .._server import ServerConnection, _default_config
from .._server_config import ServerConfig
from .._state import State
from ._actions import Call, Close, Flow, Receive, Send, Shutdown, StartTLS
from ._handler import Envelope, Handler, Reject, Session, offers_auth, overridden_hooks

__all__ = ["Session", "Envelope", "Handler", "Reject", "ServerTimeouts", "ServerSession"]

log = logging.getLogger("smtpproto")

LOCAL_ERROR = R.rejection(451, "4.3.0", "Local error in processing, try again later")
TIMED_OUT = R.rejection(421, "4.4.2", "Timeout, closing connection")


@dataclass(frozen=True, kw_only=True)
class ServerTimeouts:
    """Seconds a server waits for the client (RFC 5321 §4.5.3.2: at least
    five minutes per command)."""

    command: float = 300.0
    data: float = 300.0

    @cached_property
    def _receives(self) -> tuple[Receive, Receive, Receive]:
        # The flow's Receive actions (frozen, so made once): a command's
        # first read, its continued reads (same deadline, RFC 5321
        # §4.5.3.2.7), and a read of content (a timeout per read, like the
        # RFC's data block, §4.5.3.2.5).  cached_property writes the
        # instance dictionary, which a frozen dataclass still has.
        return (
            Receive(self.command, continued=False),
            Receive(self.command, continued=True),
            Receive(self.data, continued=False),
        )


_DEFAULT_TIMEOUTS = ServerTimeouts()


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


class ServerSession:
    """The server side of one connection, as a flow (:meth:`run`)."""

    __slots__ = (
        "handler",
        "_hooks",
        "conn",
        "session",
        "timeouts",
        "delivered",
        "_out",
        "_chunks",
        "_refusal",
        "_early",
        "_pipelined",
        "_chunked",
        "_mechanism",
    )

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
        # The hooks worth a Call: Handler's own do nothing (see overridden_hooks).
        self._hooks = overridden_hooks(handler)
        if config is None:
            config = _default_config()
        if config.auth_mechanisms and not offers_auth(handler):
            # No verifier, no AUTH advertised (the reduced configuration is
            # made once per configuration, so its offers are shared too).
            config = config._without_auth
        self.conn = ServerConnection(config, tls=tls, trusted=trusted)
        self.session = Session(peer=peer, tls=tls)
        self.timeouts = timeouts or _DEFAULT_TIMEOUTS
        # Replies not yet written: the core's bytes as they are, a bytearray
        # once several wait (a pipelined batch; appends stay linear).
        self._out: bytes | bytearray = b""
        # Content chunks of the message being received (non-streaming).
        self._chunks: list[bytes] | None = None
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
            yield self._take_output()

    def _take_output(self) -> Send:
        """The Send for the replies waiting, which are then no longer waiting."""
        out, self._out = self._out, b""
        action = _new(Send)
        _set_send_data(action, bytes(out))
        _set_send_timeout(action, self.timeouts.command)
        return action

    def _reply(self, reply: Reply) -> None:
        wire = self.conn.send(reply)
        out = self._out
        if not out:
            self._out = wire
        elif isinstance(out, bytearray):
            out += wire
        else:
            self._out = bytearray(out) + wire

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
        if hook not in self._hooks:
            return None
        try:
            return (yield _make_call(hook, (self.session, *args)))
        except Reject as exc:
            return exc.reply
        except Exception:  # noqa: BLE001 - the application's failure is a 451, not a crash
            log.exception("smtpproto: the %s hook failed", hook)
            return LOCAL_ERROR

    def run(self) -> Flow[None]:
        """Serve the connection until it ends; close it."""
        conn = self.conn
        try:
            if (yield from self._open()):
                # The session, in this frame (see the theory of operation).
                continued = False
                while True:
                    event = conn.next_event()
                    if event is NEED_DATA:
                        if self._out:  # _flush(), inline: once per command
                            yield self._take_output()
                        # (The core's state, read directly: this runs for
                        # every read.)
                        if conn._state in _CONTENT_STATES:
                            conn.receive_data((yield self.timeouts._receives[2]))
                        else:
                            # Reading on before an event came out: the same
                            # command is still arriving, and its deadline
                            # stands (RFC 5321 §4.5.3.2.7, a timeout per
                            # command, not per read).
                            conn.receive_data((yield self.timeouts._receives[continued]))
                            continued = True
                        continue
                    assert event is not PAUSED, "every event is answered before the next"
                    continued = False
                    self._early = bool(self._out)
                    kind = type(event)
                    if kind is MessageData and not self.handler.streaming:
                        _keep_chunk(self, event)
                        continue
                    if kind is ConnectionClosed:
                        break
                    handling = _HANDLING.get(kind, _PLAIN)
                    call = handling[0](self, event)
                    answer = None
                    if call is not None:
                        try:
                            answer = yield call
                        except Reject as exc:
                            answer = exc.reply
                        except Exception:  # noqa: BLE001 - a 451, not a crash
                            log.exception("smtpproto: the %s hook failed", call.hook)
                            answer = LOCAL_ERROR
                    handling[1](self, event, call, answer)
                    call = answer = None  # nothing of the event stays while parked
                    if handling is _STARTTLS and conn.state is State.TLS:
                        yield from self._start_tls()
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
            self._out = b""
        try:
            yield from self._flush()
        except OSError:
            pass
        if "disconnect" in self._hooks:
            try:
                yield _make_call("disconnect", (self.session,))
            except Exception:  # noqa: BLE001
                log.exception("smtpproto: the disconnect hook failed")
        yield Close()

    def _open(self) -> Flow[bool]:
        """Read the PROXY header when one is expected, then greet; False
        when the connection closed first."""
        conn = self.conn
        if conn.config.proxy_protocol:
            receives = self.timeouts._receives
            continued = False
            while (header := conn.next_event()) is NEED_DATA:
                conn.receive_data((yield receives[continued]))
                continued = True
            if not isinstance(header, ProxyHeader):
                return False  # the connection closed before its header
            self.session.proxy = header
            if header.source is not None:
                self.session.peer = (header.source, header.source_port)
        greeting = yield from self._call("connect")
        self._answer(greeting if isinstance(greeting, Reply) else conn.greeting(), "connect")
        return True

    def _start_tls(self) -> Flow[None]:
        # RFC 3207 §4.2: the 220 goes out, the handshake follows, and the
        # session forgets what the client said in cleartext.
        yield from self._flush()
        yield StartTLS()
        self.conn.tls_established()
        session = self.session
        session.tls = True
        session.ehlo_name = None
        session.auth_identity = None
        session.auth_mechanism = None


# -- the work for each kind of event -----------------------------------------
#
# ``prepare(server, event)`` does the bookkeeping before the hook and returns
# the Call to make (or None); ``finish(server, event, call, answer)`` sends
# the reply, given the hook's answer (None when no hook was called).

Prepare: TypeAlias = Callable[[ServerSession, Any], "Call | None"]
Finish: TypeAlias = Callable[[ServerSession, Any, "Call | None", Any], None]

_CONTENT_STATES = (State.DATA, State.BDAT)

# Send and Call actions are made for every command: set their (frozen,
# slotted) fields directly rather than through the dataclass constructor.
_new = object.__new__
_set_send_data = Send.__dict__["data"].__set__
_set_send_timeout = Send.__dict__["timeout"].__set__
_set_call_hook = Call.__dict__["hook"].__set__
_set_call_args = Call.__dict__["args"].__set__


def _make_call(hook: str, args: tuple[Any, ...]) -> Call:
    action = _new(Call)
    _set_call_hook(action, hook)
    _set_call_args(action, args)
    return action


def _keep_chunk(server: ServerSession, event: Any) -> None:
    chunks = server._chunks
    if chunks is None:
        server._chunks = [event.data]
    else:
        chunks.append(event.data)


def _new_transaction(server: ServerSession) -> None:
    server._chunks = None
    server._refusal = None


def _reply_to(server: ServerSession, event: Any, call: Call | None, answer: Any) -> Reply:
    """Send the hook's reply, or the core's usual one; return what was meant."""
    if isinstance(answer, Reply):
        server._answer(answer, call.hook if call is not None else "")
        return answer
    reply = server.conn.default_reply()
    server._reply(reply)
    return reply


def _finish_plain(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    # _reply_to(), inline: most commands come here.
    if isinstance(answer, Reply):
        server._answer(answer, call.hook if call is not None else "")
    else:
        server._reply(server.conn.default_reply())


def _finish_ignoring(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    # The hook (rset, quit) only hears about the command; the reply is the core's.
    _reply_to(server, event, call, None)


def _finish_nothing(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    pass  # no reply due: a Bdat is answered after its octets, a PROXY header never


def _no_hook(server: ServerSession, event: Any) -> Call | None:
    return None


def _prepare_chunk(server: ServerSession, event: MessageData) -> Call | None:
    # Streaming handlers only; after a refusal the rest skips the hook.
    if server._refusal is not None:
        return None
    if "message_data" not in server._hooks:
        return None
    return _make_call("message_data", (server.session, event.data))


def _finish_chunk(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    if isinstance(answer, Reply) and not answer.is_success:
        server._refusal = answer


def _prepare_hello(server: ServerSession, event: Ehlo | Helo | Lhlo) -> Call | None:
    if "ehlo" not in server._hooks:
        return None
    return _make_call("ehlo", (server.session, event.domain))


def _finish_hello(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    if _reply_to(server, event, call, answer).is_success:
        server.session.ehlo_name = event.domain


def _prepare_mail(server: ServerSession, event: Mail) -> Call | None:
    _new_transaction(server)
    server._pipelined = server._early
    server._chunked = False
    if "mail" not in server._hooks:
        return None
    return _make_call("mail", (server.session, event))


def _prepare_rcpt(server: ServerSession, event: Rcpt) -> Call | None:
    server._pipelined |= server._early
    if "rcpt" not in server._hooks:
        return None
    return _make_call("rcpt", (server.session, event))


def _prepare_data(server: ServerSession, event: Data) -> Call | None:
    server._pipelined |= server._early
    return None


def _prepare_bdat(server: ServerSession, event: Bdat) -> Call | None:
    server._pipelined |= server._early
    server._chunked = True
    return None


def _prepare_auth(server: ServerSession, event: Auth | AuthResponse) -> Call | None:
    if isinstance(event, Auth):
        server._mechanism = event.mechanism
    request = server.conn.auth_request
    if request is None:
        return None
    return _make_call("auth", (server.session, request))


def _finish_auth(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    if call is not None and not isinstance(answer, Reply):
        answer = server.conn.auth_reply(answer)
    reply = _reply_to(server, event, call, answer)
    if reply.code == 235:
        server.session.auth_identity = server.conn.auth_identity
        server.session.auth_mechanism = server._mechanism


def _prepare_vrfy(server: ServerSession, event: Vrfy) -> Call | None:
    if "vrfy" not in server._hooks:
        return None
    return _make_call("vrfy", (server.session, event.text))


def _prepare_rset(server: ServerSession, event: Rset) -> Call | None:
    _new_transaction(server)
    if "rset" not in server._hooks:
        return None
    return _make_call("rset", (server.session,))


def _prepare_quit(server: ServerSession, event: Quit) -> Call | None:
    if "quit" not in server._hooks:
        return None
    return _make_call("quit", (server.session,))


def _prepare_xclient(server: ServerSession, event: Xclient) -> Call | None:
    decoded = event.decoded()
    if "ADDR" in decoded:
        server.session.peer = (decoded["ADDR"], decoded.get("PORT"))
    return None


def _prepare_rejected_message(server: ServerSession, event: MessageRejected) -> Call | None:
    _new_transaction(server)
    return None


def _finish_rejected_message(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    for _ in range(server.conn.replies_due):
        server._reply(event.reply)


def _prepare_end(server: ServerSession, event: EndOfMessage) -> Call | None:
    conn = server.conn
    mail = conn.mail
    assert mail is not None
    chunks, server._chunks = server._chunks, None
    if server._refusal is not None or "message" not in server._hooks:
        return None  # the streaming hook refused the message, or nobody asks
    envelope = Envelope(
        mail=mail,
        recipients=list(conn.recipients),
        content=None if server.handler.streaming else b"".join(chunks or ()),
        chunked=server._chunked,
        pipelined=server._pipelined,
    )
    return _make_call("message", (server.session, envelope))


def _finish_end(server: ServerSession, event: Any, call: Call | None, answer: Any) -> None:
    conn = server.conn
    if call is None:
        answer = server._refusal
    server._refusal = None
    due = conn.replies_due
    if due == 1 and (answer is None or isinstance(answer, Reply)):
        # One reply (SMTP), the usual case.
        reply = answer or conn.default_reply()
        if reply.is_success:
            server.delivered += 1
        server._answer(reply, "message")
        return
    replies: list[Reply]
    if isinstance(answer, Reply) or answer is None:
        replies = [answer or conn.default_reply()] * due
    else:
        replies = list(answer)
        if len(replies) != due:
            log.error("smtpproto: message hook gave %d replies for %d recipients", len(replies), due)
            replies = [LOCAL_ERROR] * due
    if any(reply.is_success for reply in replies):
        server.delivered += 1
    for reply in replies:
        server._answer(reply, "message")


_PLAIN: tuple[Prepare, Finish] = (_no_hook, _finish_plain)
# STARTTLS: the loop looks for the TLS state after this one only.
_STARTTLS: tuple[Prepare, Finish] = (_no_hook, _finish_plain)
_HANDLING: dict[type[Any], tuple[Prepare, Finish]] = {
    StartTLSCommand: _STARTTLS,
    MessageData: (_prepare_chunk, _finish_chunk),
    Ehlo: (_prepare_hello, _finish_hello),
    Helo: (_prepare_hello, _finish_hello),
    Lhlo: (_prepare_hello, _finish_hello),
    Mail: (_prepare_mail, _finish_plain),
    Rcpt: (_prepare_rcpt, _finish_plain),
    Data: (_prepare_data, _finish_plain),
    Bdat: (_prepare_bdat, _finish_nothing),
    ProxyHeader: (_no_hook, _finish_nothing),
    EndOfMessage: (_prepare_end, _finish_end),
    MessageRejected: (_prepare_rejected_message, _finish_rejected_message),
    Auth: (_prepare_auth, _finish_auth),
    AuthResponse: (_prepare_auth, _finish_auth),
    Vrfy: (_prepare_vrfy, _finish_plain),
    Rset: (_prepare_rset, _finish_ignoring),
    Quit: (_prepare_quit, _finish_ignoring),
    Xclient: (_prepare_xclient, _finish_plain),
}
