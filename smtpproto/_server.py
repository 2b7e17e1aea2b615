# Theory of operation
# -------------------
# ``ServerConnection`` turns the client's bytes into command events and the
# application's ``Reply`` events into bytes.
#
# One command at a time.  After handing out a command, ``next_event()``
# returns ``PAUSED`` until the application has sent its reply, so a
# pipelined batch (RFC 2920) is judged in order, each command against the
# state its predecessors' replies produced: a DATA that follows a refused
# RCPT meets state MAIL and is answered 554, and the bytes after it are
# still read as commands because no 354 was given.
#
# Survivable mistakes are events.  An over-long line, a bare LF, a control
# character, bad arguments, a command out of sequence, an unknown parameter
# or too many recipients come out as ``CommandRejected`` with the suggested
# reply (the checks live in ``_server_checks``); an unknown verb comes out
# as ``UnknownCommand``.  After ``max_errors`` of them the suggestion
# becomes 421, which closes the session when sent (attack class 7).
# Command and SASL lines end at CRLF only (RFC 5321 §2.3.8): a bare LF is
# part of the line, which is refused once as a whole, so nothing after the
# LF runs as a command that a peer splitting at CRLF never saw (attack
# class 5).  ``ServerConfig.lenient`` ends lines at a bare LF instead.
#
# Message content.  DATA content ends only at CRLF.CRLF; BDAT (RFC 3030)
# content is counted, not scanned, and a refused chunk's octets are read
# and dropped before its ``CommandRejected`` comes out.  A BDAT line that
# cannot be read at all (bad size, control character, bare LF, too long)
# ends the session, since its octets cannot be found.  An EOF before the
# end gives ``ConnectionClosed``: nothing may be delivered.  What is read
# besides command lines (message content but the loop over DATA content,
# AUTH exchange lines, the PROXY header) is read by ``_server_reading``.
#
# TLS.  After the 220 to STARTTLS the state is TLS and nothing more is
# read: any byte already received, or received before ``tls_established()``,
# is a ``RemoteProtocolError`` (attack class 3, STARTTLS injection).
# ``tls_established()`` forgets the EHLO name, the extensions offered and
# any AUTH state (RFC 3207 §4.2).  AUTH runs a fresh SASL mechanism per
# attempt (``_server_auth``); LMTP (RFC 2033) awaits one reply per accepted
# recipient at the end of data, and for a BDAT LAST even when it is refused;
# a PROXY header is read before the greeting.
#
# Speed and size.  A server runs one of these per client, so the usual
# road is short and an idle connection small.  ``next_event()`` tests the
# usual reading modes first (PAUSED, no input, DATA content, a command
# line); the common commands in their plain forms are parsed by
# ``parse_common`` (one pattern, same events as ``parse_command``) and the
# checks and bookkeeping of each command are found by its type in tables
# (``_server_steps``) instead of chains of isinstance tests; the
# catalogue's replies and the EHLO reply are formatted once.
# What is offered (extensions, parameter owners, line limits, the EHLO
# reply) is shared by the connections of one configuration
# (``_server_config.offer_for``); the object is slotted, and the AUTH state,
# the DATA reader and the recipient list are made only when needed.
from __future__ import annotations

from . import _replies as R
from . import _server_checks as checks
from . import _server_steps as steps
from ._buffer import LINE_TOO_LONG, LineTooLong
from ._commands import parse_command, parse_common, split_verb
from ._connection import NEED_DATA, PAUSED, ConnectionBase, Sentinel
from ._data import END_OF_DATA, DotUnstuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._esmtp_events import Auth, AuthResponse, Bdat, ProxyHeader, StartTLS
from ._events import (
    _new,
    _set_data,
    Command,
    CommandRejected,
    ConnectionClosed,
    Event,
    Mail,
    MessageData,
    MessageRejected,
    Rcpt,
    Reply,
    UnknownCommand,
)
from ._replies import _WIRE as _PREFORMATTED
from ._replies import format_reply
from ._server_auth import ServerAuth
from ._server_config import Offer, ServerConfig, offer_for
from ._server_reading import (
    AUTH_LINE_TOO_LONG,
    command_octets,
    discard,
    end_of_data,
    next_chunk_event,
    next_proxy_event,
    next_sasl_event,
    start_chunk,
)
from ._state import TRANSITIONS, Key, State, is_allowed, key_of, next_state
from ._syntax import GrammarError
from .extensions import Extension

__all__ = ["ServerConfig", "ServerConnection"]

# Placeholder key the greeting answers (the table's CONNECTED row).
_GREETING = Reply
# The tables of the per-command work (``_server_steps``), bound here by
# assignment rather than imported by name: CPython 3.11 compiles a method
# call on an imported name (``_ACCEPTED.get(key)``) as an attribute load,
# which makes a bound method at every call.
_HELLOS = steps.HELLOS
_COMMAND_CHECKS = steps.COMMAND_CHECKS
_ACCEPTED = steps.ACCEPTED
_FIXED_DEFAULTS = steps.FIXED_DEFAULTS
_DEFAULTS = steps.DEFAULTS
_PIPELINED_AFTER_STARTTLS = R.preformat(
    R.rejection(554, "5.5.1", "Command pipelined after STARTTLS")
)


class ServerConnection(ConnectionBase):
    """The server role of an SMTP session, without I/O.

    Feed received bytes with :meth:`receive_data`, take events from
    :meth:`next_event`, and answer each command with a :class:`Reply`
    through :meth:`send`, which returns the bytes to write.  The first
    thing to send is the greeting (:meth:`greeting`).

    ``tls=True`` says the transport is TLS from the start (implicit TLS,
    RFC 8314); ``trusted=True`` says the peer is a proxy the application
    trusts, which may use XCLIENT.
    """

    # Slots, and the AUTH state and the DATA reader made only when needed:
    # a server holds one of these per client, idle ones included.
    __slots__ = (
        "config",
        "tls",
        "trusted",
        "proxy",
        "client_name",
        "_offer",
        "_awaiting",
        "_awaiting_event",
        "_replies_due",
        "_esmtp",
        "_mail",
        "_recipients",
        "_transactions",
        "_errors",
        "_unstuffer",
        "_chunk",
        "_chunk_left",
        "_message_size",
        "_discard_left",
        "_deferred",
        "_auth",
        "_authenticated",
    )

    def __init__(
        self, config: ServerConfig | None = None, *, tls: bool = False, trusted: bool = False
    ) -> None:
        super().__init__()
        if config is None:
            config = _default_config()
        self.config: ServerConfig = config
        #: True once the transport is TLS (implicit, or after STARTTLS).
        self.tls = tls
        #: True when the peer may use XCLIENT.
        self.trusted = trusted
        self._offer: Offer = offer_for(config, tls=tls, trusted=trusted)
        self._awaiting: Key | None = _GREETING
        self._awaiting_event: Event | None = None
        self._replies_due = 0
        #: The PROXY protocol header, once read (while it is None and the
        #: configuration expects one, nothing else is read).
        self.proxy: ProxyHeader | None = None
        self._esmtp = False
        self._mail: Mail | None = None
        self._recipients: list[Rcpt] | tuple[()] = ()
        self._transactions = 0
        self._errors = 0
        self._unstuffer: DotUnstuffer | None = None
        self._chunk: Bdat | None = None
        self._chunk_left = 0
        self._message_size = 0
        self._discard_left = 0
        self._deferred: CommandRejected | None = None
        self._auth: ServerAuth | None = None
        self._authenticated = False
        #: The name the client gave in EHLO/HELO/LHLO, once accepted.
        self.client_name: str | None = None

    def _proxy_pending(self) -> bool:
        """True while the PROXY header the configuration expects is unread."""
        return self.proxy is None and self.config.proxy_protocol

    def _sasl(self) -> ServerAuth:
        """The session's AUTH state, made at the first AUTH."""
        auth = self._auth
        if auth is None:
            auth = self._auth = ServerAuth(self.config.hostname, self.config.max_auth_failures)
        return auth

    # -- public helpers -------------------------------------------------

    @property
    def extensions(self) -> tuple[Extension, ...]:
        """The extensions this server offers now.  The objects are shared
        by every connection of the same configuration: treat them as
        read-only."""
        return self._offer.extensions

    @property
    def awaiting_reply(self) -> Event | None:
        """The event whose reply is awaited (None for the greeting or when
        nothing is awaited)."""
        return self._awaiting_event if self._awaiting is not None else None

    @property
    def replies_due(self) -> int:
        """Replies still owed to the event awaiting them (LMTP: one per
        accepted recipient at the end of data; otherwise 1 or 0)."""
        if self._awaiting is None:
            return 0
        return self._replies_due or 1

    @property
    def mail(self) -> Mail | None:
        """The MAIL command of the open transaction, once accepted."""
        return self._mail

    @property
    def recipients(self) -> tuple[Rcpt, ...]:
        """The RCPT commands accepted in the open transaction, in order."""
        return tuple(self._recipients)

    @property
    def recipient_count(self) -> int:
        """Recipients accepted in the open transaction."""
        return len(self._recipients)

    @property
    def authenticated(self) -> bool:
        """True once a 235 ended an AUTH exchange (RFC 4954 §4)."""
        return self._authenticated

    @property
    def auth_identity(self) -> str | None:
        """The authenticated identity (authzid if given, else authcid)."""
        success = self._auth.success if self._auth is not None else None
        if success is None:
            return None
        return success.authzid or success.authcid

    @property
    def auth_request(self) -> object | None:
        """The SASL verification request (``smtpproto.sasl.CheckPassword``,
        ``LookupScram``...) the application must answer with
        :meth:`auth_reply`, or None."""
        if self._awaiting in (Auth, AuthResponse):
            return self._sasl().request
        return None

    def auth_reply(self, answer: object = None) -> Reply:
        """The reply to the AUTH step awaiting one, after giving the pending
        verification request (if any) *answer*.  Send it with :meth:`send`."""
        if self._awaiting not in (Auth, AuthResponse):
            raise LocalProtocolError(f"no AUTH step awaits a reply in state {self._state.name}")
        return self._sasl().reply(answer)

    def greeting(self, text: str | None = None) -> Reply:
        """A 220 greeting naming this server (§4.2, §3.1); for LMTP, RFC
        2033 §4.1 asks the same."""
        if not text:
            return self._offer.greeting  # built once per configuration
        return Reply(code=220, text=(text,))

    def ehlo_reply(self, greet: str | None = None) -> Reply:
        """The 250 reply to EHLO (or LHLO) listing the offered extensions
        (§4.1.1.1).  No enhanced status code: RFC 2034 §3 leaves EHLO
        replies without."""
        offer = self._offer
        if not greet:
            return offer.ehlo  # built once per configuration
        return Reply._trusted(
            code=250, text=(f"{self.config.hostname} {greet}", *offer.ehlo.text[1:]), enhanced=None
        )

    def default_reply(self) -> Reply:
        """The usual reply to the event awaiting one (raises if none is)."""
        key = self._awaiting
        if key is None:
            raise LocalProtocolError(f"no command awaits a reply in state {self._state.name}")
        if key is _GREETING:
            return self.greeting()
        event = self._awaiting_event
        assert event is not None
        kind = type(event)
        reply = _FIXED_DEFAULTS.get(kind)
        if reply is not None:
            return reply
        if isinstance(event, (CommandRejected, MessageRejected)):
            return event.reply
        return _DEFAULTS[kind](self)

    def tls_established(self) -> None:
        """Tell the core the TLS handshake after STARTTLS completed.

        Raises ``RemoteProtocolError`` if cleartext bytes were received
        after the STARTTLS command: they must never be read as if they came
        over TLS (RFC 3207 §5, attack class 3).
        """
        if self._state is not State.TLS:
            raise LocalProtocolError(
                f"tls_established() called in state {self._state.name}; it belongs after "
                "the 220 reply to STARTTLS"
            )
        if self._buffer.data:
            self._fail(RemoteProtocolError("cleartext data received after STARTTLS"))
        if self._eof:
            self._fail(RemoteProtocolError("the connection closed before the TLS handshake"))
        self.tls = True
        self._state = State.GREETED
        self._esmtp = False
        self.client_name = None
        if self._auth is not None:
            self._auth.reset()
        self._authenticated = False
        self._offer = offer_for(self.config, tls=True, trusted=self.trusted)

    # -- receiving -------------------------------------------------------

    def _fail(self, error: RemoteProtocolError) -> None:
        self._error = error
        self._state = State.ERROR
        raise error

    def next_event(self) -> Event | Sentinel:
        """Return the next event, or ``NEED_DATA`` / ``PAUSED``.

        Raises ``RemoteProtocolError`` when the peer broke the protocol;
        the session is then in the ERROR state.
        """
        # ConnectionBase.next_event with the role's dispatch inlined: this
        # runs for every command and every chunk of content.  The reading
        # modes exclude one another: the PROXY header comes while the
        # greeting awaits its reply, a refused BDAT chunk is discarded and a
        # BDAT chunk read only while no reply is awaited, and neither in the
        # DATA, AUTH or TLS states.
        if self._error is not None:
            raise LocalProtocolError(
                f"next_event() called after the connection failed: {self._error}"
            )
        state = self._state
        if state is State.CLOSED:
            return ConnectionClosed()
        try:
            data = self._buffer.data
            if len(data) > self.config.max_receive_buffer:
                self._check_overflow()
            if self._awaiting is not None:
                # The PROXY header is read while the greeting waits for it.
                return next_proxy_event(self) if self._proxy_pending() else PAUSED
            if not data and self._chunk is None and state is not State.TLS:
                # No input, no event (a BDAT chunk may end, and STARTTLS
                # pauses, without one): the usual answer after a reply.
                return self._closed() if self._eof else NEED_DATA
            if state is State.DATA:
                unstuffer = self._unstuffer
                assert unstuffer is not None
                config = self.config
                while True:
                    chunk = unstuffer.extract(data)
                    if chunk is None:
                        return self._closed() if self._eof else NEED_DATA
                    if chunk is END_OF_DATA:
                        return end_of_data(self, unstuffer)
                    if unstuffer.size > config.max_message_size or (
                        unstuffer.bare_line_ending and not config.allow_bare_line_endings
                    ):
                        continue  # read on to the end, hand out nothing more
                    event = _new(MessageData)  # _message_data(), inline
                    _set_data(event, chunk)
                    return event
            if self._discard_left:
                return discard(self)
            if self._chunk is not None:
                return next_chunk_event(self)
            if state is State.AUTH:
                return next_sasl_event(self)
            return self._next_command()
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = State.ERROR
            raise

    def _check_overflow(self) -> None:
        # Input piling up unread: a pipeline flood, or a peer that talks on
        # while its commands await replies (attack class 7).  Message content
        # (DATA, BDAT, refused BDAT) is drained as it comes.
        limit = self.config.max_receive_buffer
        if (
            self._awaiting is not None
            or not (self._state is State.DATA or self._chunk is not None or self._discard_left)
        ) and command_octets(self._buffer.data, limit) > limit:
            raise RemoteProtocolError(
                f"more than {limit} octets of unprocessed input", R.INPUT_OVERFLOW
            )

    def _next_command(self) -> Event | Sentinel:
        if self._state is State.TLS:
            # Nothing is read between the 220 to STARTTLS and the handshake.
            if self._buffer.data:
                raise RemoteProtocolError("cleartext data received after STARTTLS")
            return self._closed() if self._eof else PAUSED
        lenient = self.config.lenient
        offer = self._offer
        line: bytes | LineTooLong | None
        if lenient:
            got = self._buffer.extract_line(offer.line_limit)
            line = got[0] if isinstance(got, tuple) else got
        else:
            line = self._buffer.crlf_line(offer.line_limit)
        if line is None:
            return self._closed() if self._eof else NEED_DATA
        if line is LINE_TOO_LONG:
            # The verb of the line dropped (RFC 4954 §4 and RFC 3030 §2 need
            # it: see _refuse_line), read after the rest of any earlier
            # over-long line was discarded.
            verb = split_verb(self._buffer.dropped)[0]
            return self._refuse_line(verb, R.LINE_TOO_LONG, "command line too long")
        assert isinstance(line, bytes)
        command = parse_common(line, lenient)
        if command is not None and len(line) + 2 <= offer.limits.get(
            command.verb, self.config.max_command_line
        ):
            # The fast path (MAIL, RCPT, DATA, RSET, QUIT, NOOP, HELP in their
            # plain forms): parse_common accepts only printable ASCII lines
            # the full parser takes as they stand (no control character, no
            # bare LF: §2.3.8), and the line is within its verb's limit
            # (§4.5.3.1.4), so the checks below would all pass.
            return self._judge(command)
        verb, _ = split_verb(line)
        if not lenient and b"\n" in line:
            # §2.3.8: "CR and LF MUST only occur together as CRLF"; the line
            # runs to the next CRLF, and all of it is one bad line.  Ending it
            # at the LF would run the rest as a command that a peer splitting
            # at CRLF only never sees (smuggling, attack class 5).
            return self._refuse_line(verb, R.BAD_LINE, "bare LF in a command line")
        limit = offer.limits.get(verb, self.config.max_command_line)
        if len(line) + 2 > limit:
            reason = f"{verb} line longer than {limit} octets"
            return self._refuse_line(verb, R.LINE_TOO_LONG, reason)
        try:
            command = parse_command(line, lenient=lenient)
        except GrammarError as exc:
            reply = R.rejection(exc.code, exc.enhanced, R.reply_text(f"Syntax error: {exc}"))
            if exc.fatal:
                raise RemoteProtocolError(str(exc), reply) from None
            return self._refuse_line(verb, reply, str(exc))
        return self._judge(command)

    def _refuse_line(self, verb: str, reply: Reply, reason: str) -> Event:
        if verb == "BDAT":
            # RFC 3030 §2: the chunk's octets follow whatever the reply, but
            # an unreadable BDAT line does not say how many there are.
            # Reading them as commands would run message content as
            # commands (attack classes 1 and 7): end the session instead.
            raise RemoteProtocolError(f"unreadable BDAT line: {reason}", reply)
        if verb == "AUTH" and reply is R.LINE_TOO_LONG:
            reply = AUTH_LINE_TOO_LONG  # RFC 4954 §6: 500 5.5.6
        return self._reject(reply, reason)

    def _judge(self, command: Command) -> Event | Sentinel:
        # Sequence, then the hello rule, then security policy, then the
        # command's own rules (_server_checks); the first refusal wins.
        kind = type(command)
        state = self._state
        if kind is UnknownCommand:
            if state is State.REFUSED:
                # §3.1: after a 554 greeting, 503 to anything but QUIT.
                return self._reject(R.NEED_QUIT, "bad sequence", command)
            if self._errors + 1 >= self.config.max_errors:
                return self._reject(R.TOO_MANY_ERRORS, "too many errors", command)
            return self._await(command, UnknownCommand)
        key = key_of(command) if kind is Bdat else kind
        refusal = None
        if key not in TRANSITIONS[state]:
            refusal = checks.sequence_reply(state, command)
        elif kind in _HELLOS:
            refusal = checks.hello_reply(command, self.config.lmtp)
        if refusal is None and self._offer.guarded:
            refusal = checks.security_reply(
                command,
                require_tls=self.config.require_tls,
                tls=self.tls,
                require_auth=self.config.require_auth,
                authenticated=self._authenticated,
            )
        if refusal is None:
            check = _COMMAND_CHECKS.get(kind)
            if check is not None:
                refusal = check(self, command)
        if isinstance(command, Bdat):
            return start_chunk(self, command, refusal)
        if refusal is not None:
            return self._reject(refusal, refusal.message, command)
        if kind is StartTLS and self._buffer.data:
            # Anything pipelined after STARTTLS would be read as if it came
            # over TLS: refuse the session instead (attack class 3).
            raise RemoteProtocolError("data pipelined after STARTTLS", _PIPELINED_AFTER_STARTTLS)
        if isinstance(command, Auth):
            self._sasl().start(command.mechanism, command.initial_response)
        self._awaiting = key
        self._awaiting_event = command
        return command

    def _await(self, event: Event, key: Key) -> Event:
        self._awaiting = key
        self._awaiting_event = event
        return event

    def _reject(self, reply: Reply, reason: str, command: Command | None = None) -> Event:
        return self._await(self._rejection(reply, reason, command), CommandRejected)

    def _rejection(self, reply: Reply, reason: str, command: Command | None) -> CommandRejected:
        # Errors are counted when answered (see _after_refusal); the one that
        # would reach max_errors is suggested a 421 instead (attack class 7).
        # SASL exchange lines do not come here: AUTH failures have their
        # own bound (_server_reading's _sasl_refusal).
        if self._errors + 1 >= self.config.max_errors:
            reply, reason = R.TOO_MANY_ERRORS, "too many errors"
        return CommandRejected._trusted(reply=reply, reason=reason, command=command)

    # -- sending ---------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes for *event*, which must be a :class:`Reply`.

        A reply answers the event last handed out; an unprompted 421
        (§3.8) may be sent at any time and closes the session.  After a
        ``RemoteProtocolError`` one reply (its ``reply``) may still be sent.
        A reply with a line over 512 octets (RFC 5321 §4.5.3.1.5) raises
        ``LocalProtocolError`` and changes nothing.
        """
        if not isinstance(event, Reply):
            raise LocalProtocolError(
                f"a server sends only Reply events, not {type(event).__name__}"
            )
        # Formatted first: a reply that cannot go out must change nothing.
        # The catalogue's replies, the greeting and the EHLO reply were
        # formatted once.
        wire: bytes | None
        preformatted = _PREFORMATTED.get(id(event))
        if preformatted is not None:
            wire = preformatted[self.config.enhanced_status_codes]
        else:
            wire = self._offer.wires.get(id(event))
            if wire is None:
                wire = self._format(event)
        state = self._state
        if state is State.ERROR and self._error is not None:
            self._error = None  # the one reply allowed after the error
            self._state = State.CLOSED
            return wire
        if state is State.CLOSED or state is State.ERROR:
            self._check_sendable(f"reply {event.code}")
        key = self._awaiting
        if key is None:
            if event.code != 421:
                raise LocalProtocolError(
                    f"no command awaits a reply in state {state.name}; "
                    "only an unprompted 421 may be sent"
                )
            self._state = State.CLOSED
            return wire
        if key is _GREETING and event.code != 421 and self._proxy_pending():
            raise LocalProtocolError("the greeting must wait for the PROXY protocol header")
        if key is CommandRejected or key is UnknownCommand:
            new = self._after_refusal(key, event)
        else:
            # next_state(), inlined: a 421 closes the session (§3.8), and a
            # 3xx answers only what the table names (DATA's 354, AUTH's 334).
            code = event.code
            if code == 421:
                new = State.CLOSED
            else:
                outcomes = TRANSITIONS[state][key]
                digit = code // 100
                if digit == 3 and 3 not in outcomes:
                    raise LocalProtocolError(f"a {code} reply cannot answer {key.__name__}")
                new = outcomes.get(digit, state)
            accepted = _ACCEPTED.get(key)
            if accepted is not None:
                accepted(self, self._awaiting_event, event)
        if self._replies_due > 1 and new is not State.CLOSED:
            self._replies_due -= 1  # LMTP: more replies for this end of data
            return wire
        self._replies_due = 0
        self._awaiting = None
        self._awaiting_event = None
        if new is not state:
            self._state = new
            if new is State.DATA:
                self._unstuffer = DotUnstuffer(self.config.max_data_line)
            elif new is State.READY or new is State.GREETED:
                # The transaction, if any, is over (§4.1.1.4, §4.1.1.5).
                self._mail = None
                self._recipients = ()
                self._message_size = 0
                self._unstuffer = None
        return wire

    def _format(self, reply: Reply) -> bytes:
        return format_reply(reply, enhanced_codes=self.config.enhanced_status_codes)

    def _after_refusal(self, key: Key, reply: Reply) -> State:
        # The reply to a CommandRejected or an UnknownCommand.
        state = self._state
        event = self._awaiting_event
        if reply.is_intermediate:
            raise LocalProtocolError(f"a {reply.code} reply cannot answer a rejected command")
        if state is State.AUTH:
            self._sasl().finish(reply)
            return State.CLOSED if reply.code == 421 else State.READY  # RFC 4954 §4
        if reply.code >= 400 and self._replies_due <= 1:
            # Once per command (an LMTP BDAT LAST may take several
            # replies); an unknown command the application implements
            # is no error.
            self._errors += 1
        if reply.code == 421:
            return State.CLOSED
        command = event.command if isinstance(event, CommandRejected) else None
        if isinstance(command, Bdat) and is_allowed(state, key_of(command)):
            # RFC 3030 §2: a refused chunk fails the transaction.
            return next_state(state, key_of(command), reply.code)
        return state


def _default_config() -> ServerConfig:
    """One shared default configuration (so its offers are cached too)."""
    global _DEFAULT_CONFIG
    if _DEFAULT_CONFIG is None:
        _DEFAULT_CONFIG = ServerConfig()
    return _DEFAULT_CONFIG


_DEFAULT_CONFIG: ServerConfig | None = None
