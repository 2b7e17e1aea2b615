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
# reply; an unknown verb comes out as ``UnknownCommand`` for the application
# to implement or refuse.  After ``max_errors`` of them the suggestion
# becomes 421, which closes the session when sent (attack class 7).
#
# Message content is read by ``DotUnstuffer`` and handed out as
# ``MessageData`` chunks.  The data ends only at CRLF.CRLF.  A message with
# bare CR/LF (unless allowed) or over the size limit is read to its end and
# then answered with ``MessageRejected`` instead of ``EndOfMessage``; the
# chunks after the fault are not handed out.  An EOF before the end gives
# ``ConnectionClosed``: the application must not deliver what it has.
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import _replies as R
from ._commands import parse_command, split_verb
from ._connection import PAUSED, ConnectionBase, Sentinel
from ._buffer import LINE_TOO_LONG
from ._data import END_OF_DATA, DotUnstuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    Command,
    CommandRejected,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    UnknownCommand,
    Vrfy,
)
from ._replies import format_reply
from ._state import State, is_allowed, next_state
from ._syntax import GrammarError, check_text, is_ascii, parse_domain_or_literal
from .extensions import (
    Dsn,
    EightBitMime,
    EnhancedStatusCodes,
    Extension,
    HelpExtension,
    Pipelining,
    Size,
    SmtpUtf8,
)

__all__ = ["ServerConfig", "ServerConnection"]


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings of a :class:`ServerConnection`, checked when created.

    Every bound the server keeps is here; each protects memory or time
    against a hostile client (``PROTOCOL.md`` attack class 7).
    """

    #: The name the server gives in its greeting and EHLO reply.
    hostname: str = "localhost"
    #: Accept the deviations real clients make: a space after the colon of
    #: ``MAIL FROM:``, a path without angle brackets, runs of spaces,
    #: trailing white space, any word as the EHLO/HELO name, and command
    #: lines ended by a bare LF.
    lenient: bool = False
    #: Longest command line, CRLF included (§4.5.3.1.4); extensions add to
    #: it for MAIL and RCPT.
    max_command_line: int = 512
    #: Largest message in octets, advertised with SIZE (RFC 1870).
    max_message_size: int = 33_554_432
    #: Recipients accepted per transaction; more get 452 (§4.5.3.1.8).
    max_recipients: int = 1000
    #: Mistakes per session: the suggested reply to the max_errors-th
    #: (commands answered 4xx/5xx count) is 421, which closes the session.
    max_errors: int = 20
    #: Unprocessed command input the core holds before giving up.
    max_receive_buffer: int = 262_144
    #: Longest line of message data, CRLF included, or None for no limit.
    max_data_line: int | None = None
    #: Accept bare CR and bare LF in message data as literal data.
    allow_bare_line_endings: bool = False
    #: Offer PIPELINING (RFC 2920).
    pipelining: bool = True
    #: Offer 8BITMIME (RFC 6152).
    eightbitmime: bool = True
    #: Offer SMTPUTF8 (RFC 6531).
    smtputf8: bool = True
    #: Offer DSN (RFC 3461).
    dsn: bool = True
    #: Offer ENHANCEDSTATUSCODES (RFC 2034).
    enhanced_status_codes: bool = True
    #: Offer HELP in the EHLO reply.
    help: bool = True
    #: Further extension objects to offer.
    extra_extensions: tuple[Extension, ...] = field(default=())

    def __post_init__(self) -> None:
        try:
            check_text("hostname", self.hostname)
            parse_domain_or_literal(self.hostname)
        except GrammarError as exc:
            raise ValueError(f"ServerConfig.hostname: {exc}") from None
        minimums = {
            "max_command_line": 512,
            "max_message_size": 65_536,
            "max_recipients": 100,
            "max_errors": 1,
            "max_receive_buffer": 1024,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"ServerConfig.{name} must be an integer of at least {minimum}, not {value!r}"
                )
        if self.max_data_line is not None and (
            not isinstance(self.max_data_line, int) or self.max_data_line < 1000
        ):
            raise ValueError("ServerConfig.max_data_line must be at least 1000 (§4.5.3.1.6)")

    def extensions(self) -> tuple[Extension, ...]:
        """The extension objects this configuration offers, in EHLO order."""
        offered: list[Extension] = []
        if self.pipelining:
            offered.append(Pipelining())
        offered.append(Size(self.max_message_size))
        if self.eightbitmime:
            offered.append(EightBitMime())
        if self.smtputf8:
            offered.append(SmtpUtf8())
        if self.dsn:
            offered.append(Dsn())
        if self.enhanced_status_codes:
            offered.append(EnhancedStatusCodes())
        if self.help:
            offered.append(HelpExtension())
        offered.extend(self.extra_extensions)
        return tuple(offered)


# Placeholder "command" the greeting answers (the table's CONNECTED row).
_GREETING = Reply


class ServerConnection(ConnectionBase):
    """The server role of an SMTP session, without I/O.

    Feed received bytes with :meth:`receive_data`, take events from
    :meth:`next_event`, and answer each command with a :class:`Reply`
    through :meth:`send`, which returns the bytes to write.  The first
    thing to send is the greeting (:meth:`greeting`).
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ServerConfig()
        self._extensions = self.config.extensions()
        self._by_parameter = {
            name: ext
            for ext in self._extensions
            for name in ext.mail_parameters | ext.rcpt_parameters
        }
        self._mail_limit = self.config.max_command_line + sum(
            ext.mail_line_extra for ext in self._extensions
        )
        self._rcpt_limit = self.config.max_command_line + sum(
            ext.rcpt_line_extra for ext in self._extensions
        )
        self._line_limit = max(self._mail_limit, self._rcpt_limit)
        self._awaiting: type[Event] | None = _GREETING
        self._awaiting_event: Event | None = None
        self._esmtp = False
        self._mail: Mail | None = None
        self._recipients = 0
        self._errors = 0
        self._unstuffer = DotUnstuffer(self.config.max_data_line)
        #: The name the client gave in EHLO/HELO, once accepted.
        self.client_name: str | None = None

    # -- public helpers -------------------------------------------------

    @property
    def extensions(self) -> tuple[Extension, ...]:
        """The extensions this server offers."""
        return self._extensions

    @property
    def awaiting_reply(self) -> Event | None:
        """The event whose reply is awaited (None for the greeting or when
        nothing is awaited)."""
        return self._awaiting_event if self._awaiting is not None else None

    @property
    def mail(self) -> Mail | None:
        """The MAIL command of the open transaction, once accepted."""
        return self._mail

    @property
    def recipient_count(self) -> int:
        """Recipients accepted in the open transaction."""
        return self._recipients

    def greeting(self, text: str | None = None) -> Reply:
        """A 220 greeting naming this server (§4.2, §3.1)."""
        return Reply(code=220, text=(text or f"{self.config.hostname} ESMTP smtpproto",))

    def ehlo_reply(self, greet: str | None = None) -> Reply:
        """The 250 reply to EHLO listing the offered extensions (§4.1.1.1).

        No enhanced status code: RFC 2034 §3 leaves EHLO replies without.
        """
        first = f"{self.config.hostname} {greet}" if greet else self.config.hostname
        return Reply._trusted(
            code=250, text=(first, *(ext.ehlo_line() for ext in self._extensions)), enhanced=None
        )

    def default_reply(self) -> Reply:
        """The usual reply to the event awaiting one (raises if none is)."""
        kind = self._awaiting
        event = self._awaiting_event
        if kind is None:
            raise LocalProtocolError(f"no command awaits a reply in state {self._state.name}")
        if kind is _GREETING:
            return self.greeting()
        if isinstance(event, (CommandRejected, MessageRejected)):
            return event.reply
        return _DEFAULTS[kind](self)

    # -- receiving -------------------------------------------------------

    def _next_event(self) -> Event | Sentinel:
        if len(self._buffer) > self.config.max_receive_buffer and (
            self._awaiting is not None or self._state is not State.DATA
        ):
            # Input piling up unread: a pipeline flood, or a peer that talks
            # on while its commands await replies (attack class 7).  Message
            # content is drained as it comes, so it never counts here.
            raise RemoteProtocolError(
                f"more than {self.config.max_receive_buffer} octets of unprocessed input",
                R.INPUT_OVERFLOW,
            )
        if self._awaiting is not None:
            return PAUSED
        if self._state is State.DATA:
            return self._next_data_event()
        line = self._buffer.extract_line(self._line_limit)
        if line is None:
            return self._closed() if self._eof else Sentinel.NEED_DATA
        if line is LINE_TOO_LONG:
            return self._reject(R.LINE_TOO_LONG, "command line too long")
        content, crlf = line
        if not crlf and not self.config.lenient:
            # §2.3.8: lines end with CRLF only; a bare LF is not a line end.
            return self._reject(R.BAD_LINE, "command line ended with a bare LF")
        verb, _ = split_verb(content)
        limit = self._mail_limit if verb == "MAIL" else self._rcpt_limit if verb == "RCPT" else (
            self.config.max_command_line
        )
        if len(content) + 2 > limit:
            return self._reject(R.LINE_TOO_LONG, f"{verb} line longer than {limit} octets")
        try:
            command = parse_command(content, lenient=self.config.lenient)
        except GrammarError as exc:
            return self._reject(R.rejection(exc.code, exc.enhanced, f"Syntax error: {exc}"), str(exc))
        return self._judge(command)

    def _judge(self, command: Command) -> Event:
        if isinstance(command, UnknownCommand):
            if self._state is State.REFUSED:
                # §3.1: after a 554 greeting, 503 to anything but QUIT.
                return self._reject(R.NEED_QUIT, "bad sequence", command)
            if self._errors + 1 >= self.config.max_errors:
                return self._reject(R.TOO_MANY_ERRORS, "too many errors", command)
            return self._await(command)
        kind = type(command)
        if not is_allowed(self._state, kind):
            return self._reject(_sequence_reply(self._state, command), "bad sequence", command)
        if isinstance(command, Mail):
            refusal = self._check_mail(command)
        elif isinstance(command, Rcpt):
            refusal = self._check_rcpt(command)
        else:
            refusal = None
        if refusal is not None:
            return self._reject(refusal, refusal.message, command)
        return self._await(command)

    def _check_parameters(self, command: Mail | Rcpt, owned: str) -> Reply | None:
        for name, value in command.parameters.items():
            ext = self._by_parameter.get(name) if self._esmtp else None
            if ext is None or name not in getattr(ext, owned):
                # §4.1.1.11: unrecognised MAIL/RCPT parameters get 555.
                return R.rejection(555, "5.5.4", f"Unsupported parameter {name}")
            try:
                ext.check_parameter(name, value)
            except GrammarError as exc:
                return R.rejection(exc.code, exc.enhanced, str(exc))
        return None

    def _check_mail(self, mail: Mail) -> Reply | None:
        refusal = self._check_parameters(mail, "mail_parameters")
        if refusal is not None:
            return refusal
        if not is_ascii(mail.reverse_path) and "SMTPUTF8" not in mail.parameters:
            return R.NEEDS_SMTPUTF8
        for ext in self._extensions:
            refusal = ext.check_mail(mail)
            if refusal is not None:
                return refusal
        return None

    def _check_rcpt(self, rcpt: Rcpt) -> Reply | None:
        refusal = self._check_parameters(rcpt, "rcpt_parameters")
        if refusal is not None:
            return refusal
        assert self._mail is not None
        if not is_ascii(rcpt.forward_path) and "SMTPUTF8" not in self._mail.parameters:
            return R.NEEDS_SMTPUTF8
        if self._recipients >= self.config.max_recipients:
            return R.TOO_MANY_RECIPIENTS
        return None

    def _await(self, event: Event) -> Event:
        self._awaiting = type(event)
        self._awaiting_event = event
        return event

    def _reject(self, reply: Reply, reason: str, command: Command | None = None) -> Event:
        # Errors are counted when answered (see _after_reply); the one that
        # would reach max_errors is suggested a 421 instead (attack class 7).
        if self._errors + 1 >= self.config.max_errors:
            reply, reason = R.TOO_MANY_ERRORS, "too many errors"
        return self._await(CommandRejected._trusted(reply=reply, reason=reason, command=command))

    def _next_data_event(self) -> Event | Sentinel:
        unstuffer = self._unstuffer
        while True:
            chunk = unstuffer.extract(self._buffer.data)
            if chunk is None:
                return self._closed() if self._eof else Sentinel.NEED_DATA
            if chunk is END_OF_DATA:
                return self._end_of_data()
            if unstuffer.size > self.config.max_message_size or (
                unstuffer.bare_line_ending and not self.config.allow_bare_line_endings
            ):
                continue  # read on to the end, hand out nothing more
            return MessageData._trusted(data=chunk)

    def _end_of_data(self) -> Event:
        unstuffer = self._unstuffer
        event: Event
        max_line = self.config.max_data_line
        if unstuffer.size > self.config.max_message_size:
            event = MessageRejected._trusted(reply=R.MESSAGE_TOO_BIG, reason="message too big")
        elif unstuffer.bare_line_ending and not self.config.allow_bare_line_endings:
            event = MessageRejected._trusted(
                reply=R.BARE_LINE_ENDING, reason="bare CR or LF in message data"
            )
        elif max_line is not None and unstuffer.longest_line > max_line:
            event = MessageRejected._trusted(
                reply=R.rejection(554, "5.6.0", f"Message has a line longer than {max_line} octets"),
                reason="message line too long",
            )
        else:
            event = EndOfMessage()
        self._awaiting = EndOfMessage
        self._awaiting_event = event
        return event

    # -- sending ---------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes for *event*, which must be a :class:`Reply`.

        A reply answers the event last handed out; an unprompted 421
        (§3.8) may be sent at any time and closes the session.  After a
        ``RemoteProtocolError`` one reply (its ``reply``) may still be sent.
        """
        if not isinstance(event, Reply):
            raise LocalProtocolError(
                f"a server sends only Reply events, not {type(event).__name__}"
            )
        if self._state is State.ERROR and self._error is not None:
            self._error = None  # the one reply allowed after the error
            self._state = State.CLOSED
            return self._format(event)
        self._check_sendable(f"reply {event.code}")
        kind = self._awaiting
        if kind is None:
            if event.code != 421:
                raise LocalProtocolError(
                    f"no command awaits a reply in state {self._state.name}; "
                    "only an unprompted 421 may be sent"
                )
            self._state = State.CLOSED
            return self._format(event)
        self._state = self._after_reply(kind, event)
        self._awaiting = None
        self._awaiting_event = None
        return self._format(event)

    def _format(self, reply: Reply) -> bytes:
        return format_reply(reply, enhanced_codes=self.config.enhanced_status_codes)

    def _after_reply(self, kind: type[Event], reply: Reply) -> State:
        state = self._state
        if kind in (CommandRejected, UnknownCommand):
            if reply.is_intermediate:
                raise LocalProtocolError(f"a {reply.code} reply cannot answer a rejected command")
            if reply.code >= 400:
                self._errors += 1  # an unknown command the application implements is no error
            return State.CLOSED if reply.code == 421 else state
        try:
            new = next_state(state, kind, reply.code)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        event = self._awaiting_event
        if reply.is_success:
            if isinstance(event, (Ehlo, Helo)):
                self._esmtp = isinstance(event, Ehlo)
                self.client_name = event.domain
            elif isinstance(event, Mail):
                self._mail = event
            elif isinstance(event, Rcpt):
                self._recipients += 1
        if new is State.DATA:
            self._unstuffer = DotUnstuffer(self.config.max_data_line)
        elif new is not state and new in (State.READY, State.GREETED):
            self._mail = None
            self._recipients = 0
        return new


def _sequence_reply(state: State, command: Command) -> Reply:
    """The 503 (or 554) for *command* out of sequence in *state* (§4.1.4)."""
    if state is State.REFUSED:
        return R.NEED_QUIT
    if state is State.GREETED:
        return R.NEED_EHLO
    if isinstance(command, Mail):
        return R.NESTED_MAIL
    if isinstance(command, Data) and state is State.MAIL:
        # RFC 2920 §3.1 / RFC 5321 §3.3: "no valid recipients".
        return R.NO_VALID_RECIPIENTS
    # READY is what is left for the table of this module; the generic 503
    # stands for any state a later extension adds.
    return R.NEED_MAIL if state is State.READY else R.BAD_SEQUENCE


_DEFAULTS: dict[type[Event], Callable[[ServerConnection], Reply]] = {
    Ehlo: lambda s: s.ehlo_reply(),
    Helo: lambda s: Reply._trusted(code=250, text=(s.config.hostname,), enhanced=None),
    Mail: lambda s: R.SENDER_OK,
    Rcpt: lambda s: R.RECIPIENT_OK,
    Data: lambda s: R.START_DATA,
    EndOfMessage: lambda s: R.MESSAGE_ACCEPTED,
    Rset: lambda s: R.RESET_OK,
    Noop: lambda s: R.OK,
    Vrfy: lambda s: R.VRFY_CANNOT,
    Expn: lambda s: R.EXPN_DISABLED,
    Help: lambda s: R.HELP_TEXT,
    Quit: lambda s: R.CLOSING,
    UnknownCommand: lambda s: R.UNRECOGNIZED,
}
