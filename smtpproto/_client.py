# Theory of operation
# -------------------
# ``ClientConnection`` turns the application's command events into bytes
# and the server's bytes into ``Reply`` events.
#
# Commands outstanding.  Every command sent is queued until its reply
# arrives; replies are matched to the queue in order (RFC 2920 §3.1), and
# ``last_command`` tells the application which command a reply answered.
# The queue starts with the greeting, which answers no command.  Without
# PIPELINING only one command may be outstanding; with it, a command that
# must end a batch (EHLO, DATA, VRFY, EXPN, QUIT, NOOP, HELP, and any
# command the core does not model) must get its reply before the next is
# sent.
#
# Two states.  ``state`` is the session as confirmed by replies; whether a
# command may be *sent* is judged against the state the session reaches if
# every outstanding command succeeds, so MAIL, RCPT, RCPT, DATA can go out
# in one batch.  Message content needs the real thing: it may be sent only
# after DATA got its 354 and nothing else is outstanding.
#
# The caller is checked before any byte is produced: CR, LF and NUL in an
# argument (attack class 4), parameters of extensions the server did not
# offer, non-ASCII addresses without SMTPUTF8, 8-bit content without
# BODY=8BITMIME, lines over the limits.  Replies are checked as they
# arrive: malformed lines, codes that change inside a multiline reply,
# over-long lines or replies (attack class 7) and replies nobody asked for
# are a ``RemoteProtocolError``.
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ._buffer import LINE_TOO_LONG
from ._commands import format_command
from ._connection import ConnectionBase, Sentinel
from ._data import DotStuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    Command,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    UnknownCommand,
    Vrfy,
)
from ._replies import ReplyParser
from ._state import State, expected_digit, is_allowed, next_state
from ._syntax import GrammarError, is_ascii
from .extensions import Capabilities, owner_of

__all__ = ["ClientConfig", "ClientConnection"]

# RFC 2920 §3.1: "The EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP commands
# can only appear as the last command in a group ... since their success or
# failure produces a change of state which the client SMTP must accommodate."
# HELP and unmodelled commands are treated the same way, to be safe.
_END_OF_BATCH = (Ehlo, Helo, Data, Vrfy, Expn, Quit, Noop, Help, UnknownCommand)

Outstanding = Command | EndOfMessage | None  # None: the greeting


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Settings of a :class:`ClientConnection`, checked when created."""

    #: Accept reply lines ended by a bare LF (servers should use CRLF).
    lenient: bool = False
    #: Longest reply line accepted, CRLF included (§4.5.3.1.5 says 512;
    #: real servers exceed it, so the default allows more).
    max_reply_line: int = 2048
    #: Most lines accepted in one multiline reply.
    max_reply_lines: int = 256
    #: Most commands outstanding at once.
    max_pending: int = 1000
    #: Longest command line sent, CRLF included (§4.5.3.1.4); offered
    #: extensions add to it for MAIL and RCPT.
    max_command_line: int = 512
    #: Longest line of message content, CRLF included (§4.5.3.1.6), or None.
    max_line_length: int | None = 1000

    def __post_init__(self) -> None:
        minimums = {
            "max_reply_line": 512,
            "max_reply_lines": 1,
            "max_pending": 1,
            "max_command_line": 512,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"ClientConfig.{name} must be an integer of at least {minimum}, not {value!r}"
                )
        if self.max_line_length is not None and self.max_line_length < 3:
            raise ValueError("ClientConfig.max_line_length must be at least 3 or None")


class ClientConnection(ConnectionBase):
    """The client role of an SMTP session, without I/O.

    Feed received bytes with :meth:`receive_data` and take replies from
    :meth:`next_event`; the first is the greeting.  Turn commands and
    message content into bytes with :meth:`send`.
    """

    def __init__(self, config: ClientConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ClientConfig()
        self._pending: deque[Outstanding] = deque([None])
        self._parser = ReplyParser(self.config.max_reply_lines)
        self._stuffer = DotStuffer(self.config.max_line_length)
        self._sent_mail: Mail | None = None
        #: What the server offered in its last successful EHLO reply.
        self.capabilities = Capabilities.none()
        #: The command the latest reply answered (None: greeting or 421).
        self.last_command: Command | EndOfMessage | None = None

    @property
    def pending(self) -> tuple[Command | EndOfMessage, ...]:
        """Commands sent whose replies have not arrived, oldest first."""
        return tuple(item for item in self._pending if item is not None)

    def projected_state(self) -> State:
        """The state reached if every outstanding command succeeds."""
        state = self._state
        for item in self._pending:
            kind: type[Event] = Reply if item is None else type(item)
            if is_allowed(state, kind):
                state = next_state(state, kind, expected_digit(kind) * 100)
        return state

    # -- sending ---------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes for *event*: a command, message content or its end.

        Raises ``LocalProtocolError`` (and sends nothing) when the event is
        not allowed now.
        """
        self._check_sendable(type(event).__name__)
        if isinstance(event, MessageData):
            self._check_in_data("MessageData")
            if not is_ascii_bytes(event.data):
                self._check_8bit()
            return self._stuffer.stuff(event.data)
        if isinstance(event, EndOfMessage):
            self._check_in_data("EndOfMessage")
            self._pending.append(event)
            return self._stuffer.end()
        if not isinstance(event, Command):
            raise LocalProtocolError(f"a client cannot send {type(event).__name__} events")
        return self._send_command(event)

    def _check_in_data(self, what: str) -> None:
        if self._state is not State.DATA or self._pending:
            raise LocalProtocolError(
                f"{what} may only be sent after DATA got its 354 reply "
                f"(state {self._state.name}, {len(self._pending)} replies outstanding)"
            )

    def _check_8bit(self) -> None:
        mail = self._sent_mail
        body = (mail.parameters.get("BODY") or "").upper() if mail else ""
        if body not in ("8BITMIME", "BINARYMIME") and not (mail and "SMTPUTF8" in mail.parameters):
            raise LocalProtocolError(
                "message content has 8-bit octets but MAIL did not declare BODY=8BITMIME "
                "(RFC 6152 §3)"
            )

    def _send_command(self, command: Command) -> bytes:
        verb = command.name if isinstance(command, UnknownCommand) else command.verb
        if self._state is State.CONNECTED:
            raise LocalProtocolError(f"cannot send {verb} before the server's greeting (§3.1)")
        if self._pending:
            self._check_pipelining(verb)
        projected = self.projected_state()
        if isinstance(command, UnknownCommand):
            if projected not in (State.GREETED, State.READY, State.MAIL, State.RCPT):
                raise LocalProtocolError(f"cannot send {verb} in state {projected.name}")
        elif not is_allowed(projected, type(command)):
            raise LocalProtocolError(f"{verb} is not allowed in state {projected.name}")
        limit = self.config.max_command_line
        if isinstance(command, (Mail, Rcpt)):
            limit += self._check_parameters(command)
        line = format_command(command)
        if len(line) > limit:
            raise LocalProtocolError(f"{verb} command line of {len(line)} octets exceeds {limit}")
        if isinstance(command, Mail):
            self._sent_mail = command
        elif isinstance(command, (Rset, Ehlo, Helo)):
            self._sent_mail = None
        self._pending.append(command)
        return line

    def _check_pipelining(self, verb: str) -> None:
        if not self.capabilities.pipelining:
            raise LocalProtocolError(
                f"cannot send {verb} while a reply is outstanding: the server did not "
                "offer PIPELINING (RFC 2920)"
            )
        if len(self._pending) >= self.config.max_pending:
            raise LocalProtocolError(f"more than {self.config.max_pending} commands outstanding")
        last = self._pending[-1]
        if isinstance(last, _END_OF_BATCH):
            name = last.name if isinstance(last, UnknownCommand) else last.verb
            raise LocalProtocolError(
                f"{name} must end a pipelined batch (RFC 2920 §3.1): wait for its reply "
                f"before sending {verb}"
            )

    def _check_parameters(self, command: Mail | Rcpt) -> int:
        """Check parameters against the server's offer; return the octets
        the offered extensions add to the line limit."""
        extra = 0
        for name, value in command.parameters.items():
            owner = owner_of(name)
            if owner is None:
                continue  # an extension the core does not model: caller's call
            if owner.keyword not in self.capabilities:
                raise LocalProtocolError(
                    f"parameter {name} needs the {owner.keyword} extension, "
                    "which the server did not offer"
                )
            try:
                owner.check_parameter(name, value)
            except GrammarError as exc:
                raise LocalProtocolError(str(exc)) from None
            extra += owner.mail_line_extra if isinstance(command, Mail) else owner.rcpt_line_extra
        path = command.reverse_path if isinstance(command, Mail) else command.forward_path
        mail = command if isinstance(command, Mail) else self._sent_mail
        if not is_ascii(path) and not (mail and "SMTPUTF8" in mail.parameters):
            raise LocalProtocolError(
                f"non-ASCII address {path!r} needs the SMTPUTF8 parameter on MAIL (RFC 6531)"
            )
        return extra

    # -- receiving -------------------------------------------------------

    def _next_event(self) -> Event | Sentinel:
        while True:
            line = self._buffer.extract_line(self.config.max_reply_line)
            if line is None:
                return self._closed() if self._eof else Sentinel.NEED_DATA
            if line is LINE_TOO_LONG:
                raise RemoteProtocolError(
                    f"reply line longer than {self.config.max_reply_line} octets"
                )
            content, crlf = line
            if not crlf and not self.config.lenient:
                raise RemoteProtocolError(f"reply line ended with a bare LF: {content[:80]!r}")
            reply = self._parser.feed(content)
            if reply is not None:
                return self._on_reply(reply)

    def _on_reply(self, reply: Reply) -> Reply:
        if not self._pending:
            if reply.code == 421:
                # §3.8: a server may announce its shutdown at any time.
                self._state = State.CLOSED
                self.last_command = None
                return reply
            raise RemoteProtocolError(f"reply {reply.code} arrived with no command outstanding")
        command = self._pending.popleft()
        kind: type[Event] = Reply if command is None else type(command)
        state = self._state
        if isinstance(command, UnknownCommand) or not is_allowed(state, kind):
            # Sent on the assumption that earlier commands would succeed;
            # they did not, so this one cannot change the state.
            if reply.is_intermediate:
                raise RemoteProtocolError(f"unexpected {reply.code} reply to {_name(command)}")
            new = State.CLOSED if reply.code == 421 else state
        else:
            try:
                new = next_state(state, kind, reply.code)
            except ValueError:
                raise RemoteProtocolError(
                    f"unexpected {reply.code} reply to {_name(command)}"
                ) from None
        if reply.is_success:
            if isinstance(command, Ehlo):
                self.capabilities = Capabilities.from_reply(reply)
            elif isinstance(command, Helo):
                self.capabilities = Capabilities.none()
        elif isinstance(command, Mail):
            self._sent_mail = None
        self._state = new
        self.last_command = command
        return reply


def _name(command: Outstanding) -> str:
    if command is None:
        return "the greeting"
    if isinstance(command, UnknownCommand):
        return command.name
    if isinstance(command, EndOfMessage):
        return "the end of data"
    return command.verb


def is_ascii_bytes(data: bytes | bytearray | memoryview) -> bool:
    """True when every octet of *data* is below 128."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    return data.isascii()
