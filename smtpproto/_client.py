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
# must end a batch (EHLO, DATA, VRFY, EXPN, QUIT, NOOP, HELP, STARTTLS,
# AUTH but PLAIN with an initial response, and any command the core does
# not model) must get its reply before the next is sent.  In LMTP (RFC
# 2033 §4.2) the end of data takes one reply per accepted recipient.
#
# Two states.  ``state`` is the session as confirmed by replies; whether a
# command may be *sent* is judged against the state the session reaches if
# every outstanding command succeeds, so MAIL, RCPT, RCPT, DATA can go out
# in one batch, and so can MAIL, RCPT, BDAT chunks (RFC 3030).  DATA
# content needs the real thing: it may be sent only after the 354 and with
# nothing else outstanding.  BDAT content is counted: exactly the declared
# octets, then ``EndOfChunk`` (or ``EndOfMessage`` after ``LAST``).
#
# The caller is checked before any byte is produced, against the rules of
# pipelining, the server's offer and LIMITS, and the line limits
# (``_client_checks`` says which checks there are, and holds most).
# A new transaction may be pipelined behind the end of data of the last
# one, before its reply (RFC 2920 §3.1: "the actual transfer of message
# content is explicitly allowed to be the first command in a group"): the
# end of data projects to READY, where MAIL is allowed, and the replies
# are matched to the queue in order as ever.  Content still waits for its
# own 354 with nothing else outstanding; it may be stuffed before that
# (``stuff_content``, which touches no state) and then sent whole, as one
# ``StuffedContent`` standing for its chunks and the end of data.
#
# The hot path.  ``send`` dispatches on the exact event type (a subclass
# takes the general road); the checks, line and records of MAIL, RCPT and
# DATA are made inline; the checked line of a MAIL or RCPT event is kept
# per event (events are immutable) until the capabilities change, and what
# the checks read of the capabilities (PIPELINING, LIMITS) is read once per
# EHLO reply.  ``next_event`` reads replies without the base class's extra
# call, and a one-line reply seen before is taken from the parser's memory.
#
# Replies are checked as they arrive: malformed lines, codes that change
# inside a multiline reply, over-long lines or replies (attack class 7),
# replies nobody asked for, a 3xx other than 334 or a 334 that is not
# strict base64 in an AUTH exchange (attack class 6), and any byte after
# the 220 to STARTTLS (attack class 3) are a ``RemoteProtocolError``.
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import _client_checks
from ._buffer import LINE_TOO_LONG
from ._client_checks import (
    BATCH_GOES_ON,
    address_line,
    bdat_line_limit,
    check_8bit,
    check_data,
    check_path,
    check_pipelining,
    command_name,
    over_mailmax,
    over_rcptmax,
)
from ._commands import decode_sasl, format_command
from ._connection import PAUSED, ConnectionBase, Sentinel
from ._data import DotStuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._esmtp_events import Auth, AuthCancel, AuthResponse, Bdat, EndOfChunk, Lhlo, StartTLS, Xclient
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
    StuffedContent,
    UnknownCommand,
    Vrfy,
)
from ._events import _MAKER as _STUFFED_MAKER
from ._events import check_message_data
from ._replies import ReplyParser
from ._state import TRANSITIONS, BdatLast, Key, State, expected_digit
from ._syntax import GrammarError
from .extensions import Capabilities

__all__ = ["ClientConfig", "ClientConnection"]

Outstanding = Command | EndOfMessage | AuthResponse | AuthCancel | None  # None: greeting


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
    #: Longest line of DATA content, CRLF included (§4.5.3.1.6), or None.
    max_line_length: int | None = 1000
    #: Speak LMTP (RFC 2033): LHLO, and a reply per recipient after data.
    lmtp: bool = False
    #: Allow mechanisms that send a reusable secret (PLAIN, LOGIN, bearer
    #: tokens) without TLS.
    allow_plaintext_auth: bool = False

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
    message content into bytes with :meth:`send`.  ``tls=True`` says the
    transport is TLS from the start (implicit TLS, RFC 8314).
    """

    def __init__(self, config: ClientConfig | None = None, *, tls: bool = False) -> None:
        super().__init__()
        self.config = config if config is not None else ClientConfig()
        #: True once the transport is TLS (implicit, or after STARTTLS).
        self.tls = tls
        self._pending: deque[Outstanding] = deque([None])
        # (state, projected): projected_state() for the queue as it is now,
        # worked out from that state.  A command sent extends it (so a
        # pipelined batch costs one step per command, not a walk of the whole
        # queue each time); a reply, which shortens the queue, drops it.
        self._projection: tuple[State, State] | None = None
        self._parser = ReplyParser(self.config.max_reply_lines)
        self._lmtp = self.config.lmtp
        self._max_reply_line = self.config.max_reply_line
        # Checked RCPT lines by event id (with the event, so the id stays
        # its own), and the line-limit octets of checked parameters, both
        # for the capabilities in _lines_caps (see _client_checks.address_line).
        self._lines: dict[int, tuple[Command, bytes]] = {}
        self._param_extra: dict[tuple[bool, str, str | None], int] = {}
        self._lines_caps: Capabilities | None = None
        # What the checks of every MAIL and RCPT read of _lines_caps.
        self._pipelining = False
        self._mailmax = self._rcptmax = _NO_LIMIT
        self._stuffer = DotStuffer(self.config.max_line_length)
        self._sent_mail: Mail | None = None
        self._rcpts_sent = 0
        self._mails_sent = 0
        self._accepted: list[Rcpt] = []
        self._lmtp_due: int | None = None
        self._chunk_left: int | None = None
        self._chunk_last = False
        # The line limit on the BDAT content of the current transaction, or
        # None when it has none (BODY=BINARYMIME, or max_line_length None).
        self._bdat_lines = bdat_line_limit(self, None)
        # True until the first BDAT of a transaction works out _bdat_lines.
        self._bdat_lines_due = False
        #: What the server offered in its last successful EHLO/LHLO reply.
        self.capabilities = Capabilities.none()
        #: The command the latest reply answered (None: greeting or 421).
        self.last_command: Outstanding = None
        #: The decoded data of the latest 334 challenge (RFC 4954 §4).
        self.challenge: bytes | None = None
        #: True once a 235 ended an AUTH exchange.
        self.authenticated = False
        #: LMTP: the recipient the latest end-of-data reply is about.
        self.lmtp_recipient: Rcpt | None = None

    @property
    def pending(self) -> tuple[Command | EndOfMessage | AuthResponse | AuthCancel, ...]:
        """Commands sent whose replies have not arrived, oldest first."""
        return tuple(item for item in self._pending if item is not None)

    @property
    def accepted_recipients(self) -> tuple[Rcpt, ...]:
        """RCPT commands the server accepted in the current transaction."""
        return tuple(self._accepted)

    def projected_state(self) -> State:
        """The state reached if every outstanding command succeeds."""
        cached = self._projection
        if cached is not None and cached[0] is self._state:
            return cached[1]
        state = self._state
        for item in self._pending:
            state = _project(state, item)
        self._projection = (self._state, state)
        return state

    def _queue(self, item: Outstanding, key: Key | None = None) -> None:
        """Put *item* (whose table key is *key*, when the caller knows it) at
        the end of the queue of commands awaiting replies."""
        self._pending.append(item)
        cached = self._projection
        if cached is not None and cached[0] is self._state:
            if key is None:
                self._projection = (cached[0], _project(cached[1], item))
            else:  # _project(), inline: one step per command of a batch
                outcomes = TRANSITIONS[cached[1]].get(key)
                if outcomes is not None:
                    new = outcomes.get(3 if key is Data else 2, cached[1])
                    if new is not cached[1]:
                        self._projection = (cached[0], new)

    def tls_established(self) -> None:
        """Tell the core the TLS handshake after STARTTLS completed.

        The server's capabilities are forgotten; send EHLO again (RFC 3207
        §4.2).  Raises ``RemoteProtocolError`` if the server sent anything
        after its 220 and before the handshake (attack class 3).
        """
        if self._state is not State.TLS:
            raise LocalProtocolError(
                f"tls_established() called in state {self._state.name}; it belongs after "
                "the 220 reply to STARTTLS"
            )
        if self._buffer.data or self._eof:
            self._error = RemoteProtocolError(
                "cleartext data received after the 220 to STARTTLS"
                if self._buffer.data
                else "the connection closed before the TLS handshake"
            )
            self._state = State.ERROR
            raise self._error
        self.tls = True
        self._state = State.GREETED
        self.capabilities = Capabilities.none()
        self.authenticated = False

    # -- sending ---------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes for *event*: a command, message content, the end
        of a chunk or of the message, a whole message's content stuffed
        ahead (:meth:`stuff_content`), or a SASL response.

        Raises ``LocalProtocolError`` (and sends nothing) when the event is
        not allowed now.
        """
        state = self._state
        if state is State.CLOSED or state is State.ERROR:
            self._check_sendable(type(event).__name__)
        # One dictionary lookup instead of a chain of isinstance() calls: the
        # event classes are final in practice, and a subclass takes the
        # general road below.
        kind = _SEND_KINDS.get(type(event))
        if kind is _COMMAND:
            return self._send_command(event)  # type: ignore[arg-type]
        if kind is _CONTENT:
            return self._send_content(event.data)  # type: ignore[attr-defined]
        if kind is _STUFFED:
            return self._send_stuffed(event)  # type: ignore[arg-type]
        if isinstance(event, MessageData):
            return self._send_content(event.data)
        if isinstance(event, (EndOfMessage, EndOfChunk)):
            return self._send_end(event)
        if isinstance(event, (AuthResponse, AuthCancel)):
            if self._chunk_left is not None:
                raise self._chunk_unfinished(type(event).__name__)
            return self._send_sasl(event)
        if not isinstance(event, Command):
            raise LocalProtocolError(f"a client cannot send {type(event).__name__} events")
        return self._send_command(event)

    def _chunk_unfinished(self, name: str) -> LocalProtocolError:
        return LocalProtocolError(
            f"cannot send {name}: the BDAT chunk still needs "
            f"{self._chunk_left} octets and its end"
        )

    def _send_content(self, data: bytes | bytearray | memoryview) -> bytes:
        chunk = bytes(data)  # one copy at most, none for bytes
        if self._chunk_left is not None:
            if len(chunk) > self._chunk_left:
                raise LocalProtocolError(
                    f"{len(chunk)} octets sent but the BDAT chunk has only "
                    f"{self._chunk_left} left"
                )
            if not chunk.isascii():
                check_8bit(self)
            if self._bdat_lines is not None:
                self._bdat_lines.check(chunk)
            self._chunk_left -= len(chunk)
            return chunk
        if self._state is not State.DATA or self._pending:
            raise self._not_in_data("MessageData")
        if not chunk.isascii():
            check_8bit(self)
        return self._stuffer.stuff(chunk)

    def stuff_content(self, content: bytes | bytearray | memoryview | Iterable[bytes]) -> StuffedContent:
        """Normalise, dot-stuff and terminate a whole message's content now,
        for :meth:`send` to send once DATA got its 354.

        *content* is the raw message (bytes, or an iterable of byte chunks),
        as ``MessageData`` would carry it.  This touches no state: it may be
        called at any time, typically while the replies to a pipelined
        MAIL, RCPT, DATA group are on their way, so that the content is
        ready when the 354 comes.  Raises ``LocalProtocolError`` for a line
        over ``max_line_length`` (RFC 5321 §4.5.3.1.6), as sending the
        chunks would.
        """
        stuffer = DotStuffer(self.config.max_line_length)
        if isinstance(content, (bytes, bytearray, memoryview)):
            wire = stuffer.stuff(content) + stuffer.end()
        else:
            pieces = []
            for chunk in content:
                check_message_data(chunk)
                pieces.append(stuffer.stuff(chunk))
            pieces.append(stuffer.end())
            wire = b"".join(pieces)
        return StuffedContent(wire, not wire.isascii(), stuffer.max_line, _maker=_STUFFED_MAKER)

    def _send_stuffed(self, content: StuffedContent) -> bytes:
        if self._chunk_left is not None:
            raise LocalProtocolError("StuffedContent is DATA content; a BDAT chunk takes MessageData")
        if self._state is not State.DATA or self._pending:
            raise self._not_in_data("StuffedContent")
        if self._stuffer.started:
            raise LocalProtocolError(
                "StuffedContent is a whole message's content, but MessageData of "
                "this message was sent already"
            )
        if content.max_line != self._stuffer.max_line:
            raise LocalProtocolError(
                f"this StuffedContent was checked against a line limit of {content.max_line}, "
                f"not this connection's {self._stuffer.max_line}"
            )
        if content.eight_bit:
            check_8bit(self)
        self._queue(_END_OF_MESSAGE, EndOfMessage)
        return content.wire

    def _send_end(self, event: EndOfMessage | EndOfChunk) -> bytes:
        name = type(event).__name__
        if self._chunk_left is not None:
            if self._chunk_left:
                raise LocalProtocolError(
                    f"{name} sent with {self._chunk_left} octets of the BDAT chunk missing"
                )
            if isinstance(event, EndOfMessage) is not self._chunk_last:
                expected = "EndOfMessage" if self._chunk_last else "EndOfChunk"
                raise LocalProtocolError(f"this BDAT chunk ends with {expected}, not {name}")
            self._chunk_left = None
            return b""
        if isinstance(event, EndOfChunk):
            raise LocalProtocolError("EndOfChunk without a BDAT chunk")
        if self._state is not State.DATA or self._pending:
            raise self._not_in_data(name)
        self._queue(event, EndOfMessage)
        return self._stuffer.end()

    def _not_in_data(self, what: str) -> LocalProtocolError:
        """The error for content sent outside DATA (state not DATA, or
        replies still outstanding)."""
        return LocalProtocolError(
            f"{what} may only be sent after DATA got its 354 reply "
            f"(state {self._state.name}, {len(self._pending)} replies outstanding)"
        )

    def _send_sasl(self, event: AuthResponse | AuthCancel) -> bytes:
        if self._state is not State.AUTH or self._pending:
            raise LocalProtocolError(
                f"{type(event).__name__} may only answer a 334 challenge "
                f"(state {self._state.name})"
            )
        self._queue(event)
        if isinstance(event, AuthCancel):
            return b"*\r\n"
        return event._line()

    def _send_command(self, command: Command) -> bytes:
        kind = type(command)
        unknown = isinstance(command, UnknownCommand)
        verb = command.name if unknown else command.verb  # type: ignore[attr-defined]
        if self._chunk_left is not None:
            raise self._chunk_unfinished(kind.__name__)
        if self._state is State.CONNECTED:
            raise LocalProtocolError(f"cannot send {verb} before the server's greeting (§3.1)")
        if self._lines_caps is not self.capabilities:
            self._offer_changed()
        pending = self._pending
        if pending and (
            not self._pipelining
            or len(pending) >= self.config.max_pending
            or type(pending[-1]) not in BATCH_GOES_ON
        ):
            check_pipelining(self, verb)  # the whole check, and its errors
        cached = self._projection  # projected_state(), inline
        if cached is not None and cached[0] is self._state:
            projected = cached[1]
        else:
            projected = self.projected_state()
        key: Key = BdatLast if kind is Bdat and command.last else kind  # type: ignore[attr-defined]
        if unknown:
            if projected not in _UNKNOWN_ALLOWED:
                raise LocalProtocolError(f"cannot send {verb} in state {projected.name}")
        elif key not in TRANSITIONS[projected]:
            raise LocalProtocolError(f"{verb} is not allowed in state {projected.name}")
        # The checks, the line and the records of the commands of every
        # message first, inline; the others through the tables.
        if kind is Rcpt:
            if self._rcpts_sent >= self._rcptmax:  # RFC 9422 §4.1
                raise over_rcptmax(self)
            hit = self._lines.get(id(command))
            if hit is not None and hit[0] is command:
                line = hit[1]
                if not command.forward_path.isascii():  # type: ignore[attr-defined]
                    check_path(self, command)  # type: ignore[arg-type]
            else:
                line = address_line(self, command, verb)  # type: ignore[arg-type]
            self._rcpts_sent += 1
        elif kind is Mail:
            if self._mails_sent >= self._mailmax:  # RFC 9422 §4.1
                raise over_mailmax(self)
            hit = self._lines.get(id(command))
            # (The path of a MAIL is checked with its own parameters.)
            line = hit[1] if hit is not None and hit[0] is command else address_line(self, command, verb)  # type: ignore[arg-type]
            self._record_mail(command)  # type: ignore[arg-type]
        elif kind is Data:
            check_data(self, command, verb)  # type: ignore[arg-type]
            line = b"DATA\r\n"
        else:
            check = _CHECKS.get(kind)
            if check is not None:
                check(self, command, verb)
            limit = 12288 + 40 if kind is Auth else self.config.max_command_line
            # RFC 4954 §4: AUTH responses of up to 12288 octets.
            line = format_command(command)
            if len(line) > limit:
                raise LocalProtocolError(f"{verb} command line of {len(line)} octets exceeds {limit}")
            record = _RECORD.get(kind)
            if record is not None:
                record(self, command)
        self._queue(command, key)
        return line

    def _offer_changed(self) -> None:
        """Read what the checks need of new ``capabilities``, and forget
        what was checked against the old ones."""
        caps = self._lines_caps = self.capabilities
        self._lines.clear()
        self._param_extra.clear()
        self._pipelining = caps.pipelining
        self._mailmax = caps.limits.get("MAILMAX", _NO_LIMIT)
        self._rcptmax = caps.limits.get("RCPTMAX", _NO_LIMIT)

    def _record_mail(self, command: Mail) -> None:
        self._sent_mail = command
        self._rcpts_sent = 0
        self._mails_sent += 1
        self._bdat_lines_due = True  # most transactions send no BDAT

    def _record_reset(self, command: Command) -> None:
        self._sent_mail = None

    def _record_bdat(self, command: Bdat) -> None:
        if self._bdat_lines_due:
            self._bdat_lines = bdat_line_limit(self, self._sent_mail)
            self._bdat_lines_due = False
        self._chunk_left = command.size
        self._chunk_last = command.last

    # -- receiving -------------------------------------------------------

    def next_event(self) -> Event | Sentinel:
        """Return the next reply, or ``NEED_DATA`` / ``PAUSED``.

        Raises ``RemoteProtocolError`` when the server broke the protocol;
        the session is then in the ERROR state.
        """
        # ConnectionBase.next_event with the reading of replies inlined (it
        # runs for every reply); the base keeps the other cases: an earlier
        # failure, CLOSED, and the TLS state (see _next_event).
        state = self._state
        if self._error is not None or state is State.CLOSED or state is State.TLS:
            return super().next_event()
        try:
            while True:
                line = self._buffer.extract_line(self._max_reply_line)
                if line is None:
                    return self._closed() if self._eof else Sentinel.NEED_DATA
                if line is LINE_TOO_LONG:
                    raise RemoteProtocolError(
                        f"reply line longer than {self._max_reply_line} octets"
                    )
                content, crlf = line
                if not crlf and not self.config.lenient:
                    raise RemoteProtocolError(f"reply line ended with a bare LF: {content[:80]!r}")
                parser = self._parser
                # ReplyParser.feed's first step, inline: most replies of a
                # session are one line it has seen before (250 to each RCPT).
                reply = None if parser._lines else parser._seen.get(content)
                if reply is None:
                    reply = parser.feed(content)
                if reply is not None:
                    return self._on_reply(reply)
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = State.ERROR
            raise

    def _next_event(self) -> Event | Sentinel:
        # ConnectionBase.next_event comes here in the TLS state only: no
        # byte may arrive between the 220 to STARTTLS and the handshake
        # (attack class 3).
        if self._buffer.data:
            raise RemoteProtocolError("data received after the 220 to STARTTLS")
        return self._closed() if self._eof else PAUSED

    def _on_reply(self, reply: Reply) -> Reply:
        pending = self._pending
        if not pending:
            if reply.code == 421:
                # §3.8: a server may announce its shutdown at any time.
                self._state = State.CLOSED
                self.last_command = None
                return reply
            raise RemoteProtocolError(f"reply {reply.code} arrived with no command outstanding")
        command = pending.popleft()
        self._projection = None
        if self._lmtp and self._lmtp_more(command, reply):
            return reply
        state = self._state
        code = reply.code
        key = _outstanding_key(command)
        # The row of TRANSITIONS, looked up here rather than through
        # is_allowed() and next_state(), which would look it up twice.
        outcomes = TRANSITIONS[state].get(key)
        if outcomes is None:
            # Sent on the assumption that earlier commands would succeed;
            # they did not (or, for an unknown verb, the table has no row),
            # so this one cannot change the state.
            if 300 <= code < 400:
                raise RemoteProtocolError(f"unexpected {code} reply to {command_name(command)}")
            new = State.CLOSED if code == 421 else state
        elif code == 421:
            new = State.CLOSED  # §3.8, as next_state() has it
        else:
            digit = code // 100
            if digit == 3 and 3 not in outcomes:
                raise RemoteProtocolError(f"unexpected {code} reply to {command_name(command)}")
            new = outcomes.get(digit, state)
            if new is State.AUTH and code != 334:
                # RFC 4954 §4: only "334" continues an exchange; any other
                # 3xx would leave the last challenge to be answered again.
                raise RemoteProtocolError(f"unexpected {code} reply to {command_name(command)}")
        if key is Rcpt:  # _apply_rcpt, inline
            if 200 <= code < 300:
                self._accepted.append(command)  # type: ignore[arg-type]
        elif key is not Data and key is not EndOfMessage:
            apply = _APPLY.get(type(command))
            if apply is not None:
                apply(self, command, reply, new)
        self._state = new
        self.last_command = command
        if new is State.TLS and self._buffer.data:
            raise RemoteProtocolError("data received after the 220 to STARTTLS")
        return reply

    def _lmtp_more(self, command: Outstanding, reply: Reply) -> bool:
        """LMTP: keep the end of data outstanding until every accepted
        recipient got its reply (RFC 2033 §4.2); True while more are due."""
        ends = isinstance(command, EndOfMessage) or (isinstance(command, Bdat) and command.last)
        if not ends:
            return False
        if reply.code == 421:
            # §3.8: the session is over; the recipients still due get no
            # reply, and the 421 is about none of them.
            self._lmtp_due = None
            self.lmtp_recipient = None
            return False
        if self._lmtp_due is None:
            self._lmtp_due = max(1, len(self._accepted))
        index = max(1, len(self._accepted)) - self._lmtp_due
        self.lmtp_recipient = self._accepted[index] if self._accepted else None
        self._lmtp_due -= 1
        if self._lmtp_due:
            self._pending.appendleft(command)
            self.last_command = command
            return True
        self._lmtp_due = None
        return False

    # What a reply does besides moving the state, per command type (none
    # for DATA, the end of data, RSET, NOOP...).

    def _apply_auth(self, command: Auth | AuthResponse, reply: Reply, new: State) -> None:
        if reply.code == 334:
            # RFC 4954 §4: a 334 to AUTH carries a base64 challenge.  (A 334
            # to DATA is just a 3xx: §4.2.1, clients act on the first digit.)
            if len(reply.text) != 1:
                # continue-req = "334" SP [base64] CRLF: one line, always.
                raise RemoteProtocolError("a 334 challenge spans several lines")
            text = reply.text[0]
            try:
                self.challenge = decode_sasl(text) if text else b""
            except GrammarError:
                raise RemoteProtocolError("334 challenge is not valid base64") from None
        elif reply.code == 235:
            self.authenticated = True

    def _apply_mail(self, command: Mail, reply: Reply, new: State) -> None:
        if self._state is State.READY:
            # A new transaction, opened or refused: the last one's recipients
            # no longer count (LMTP counts its end-of-data replies by them).
            self._accepted = []
        if not 200 <= reply.code < 300:
            self._sent_mail = None

    def _apply_ehlo(self, command: Ehlo | Lhlo, reply: Reply, new: State) -> None:
        if 200 <= reply.code < 300:
            self.capabilities = Capabilities.from_reply(reply)

    def _apply_helo(self, command: Helo | Xclient, reply: Reply, new: State) -> None:
        if 200 <= reply.code < 300:
            self.capabilities = Capabilities.none()
        if new is State.GREETED and type(command) is Xclient:
            self.authenticated = False


def _outstanding_key(item: Outstanding) -> Key:
    """The state table's key for *item*, awaiting its reply: ``Reply`` for
    the greeting, ``BdatLast`` for ``BDAT n LAST``, else the event's type."""
    if item is None:
        return Reply
    kind = type(item)
    return BdatLast if kind is Bdat and item.last else kind  # type: ignore[union-attr]


def _project(state: State, item: Outstanding) -> State:
    """The state after *item*, sent in *state*, if it gets the reply hoped
    for; a command out of sequence there leaves the state alone."""
    key = _outstanding_key(item)
    outcomes = TRANSITIONS[state].get(key)
    if outcomes is None:
        return state
    return outcomes.get(expected_digit(key), state)


# Dispatch tables, by exact event type (see ``send``).
_COMMAND = 0
_CONTENT = 1
_STUFFED = 2
_SEND_KINDS: dict[type[Event], int] = {
    MessageData: _CONTENT,
    StuffedContent: _STUFFED,
    **dict.fromkeys(
        (Ehlo, Helo, Lhlo, Mail, Rcpt, Data, Rset, Noop, Quit, Vrfy, Expn, Help,
         StartTLS, Auth, Bdat, Xclient, UnknownCommand),
        _COMMAND,
    ),
}
# Checks of a command beyond its place in the state table (``_client_checks``),
# bound by assignment: CPython 3.11 compiles a method call on an imported
# name (``CHECKS.get(kind)``) as an attribute load, a bound method per call.
_CHECKS = _client_checks.CHECKS
# The states in which a command the core does not model may be sent.
_UNKNOWN_ALLOWED = frozenset((State.GREETED, State.READY, State.MAIL, State.RCPT))
# What sending a command changes in the client's own records.
_RECORD: dict[type[Command], Callable[[ClientConnection, Any], None]] = {
    Rset: ClientConnection._record_reset,
    Ehlo: ClientConnection._record_reset,
    Helo: ClientConnection._record_reset,
    Lhlo: ClientConnection._record_reset,
    Bdat: ClientConnection._record_bdat,
}
# What a reply changes besides the state, by the type of command it answers.
_APPLY: dict[type[Any], Callable[[ClientConnection, Any, Reply, State], None]] = {
    Auth: ClientConnection._apply_auth,
    AuthResponse: ClientConnection._apply_auth,
    Mail: ClientConnection._apply_mail,
    Ehlo: ClientConnection._apply_ehlo,
    Lhlo: ClientConnection._apply_ehlo,
    Helo: ClientConnection._apply_helo,
    Xclient: ClientConnection._apply_helo,
}
# The end of data that StuffedContent stands for, in the queue.
_END_OF_MESSAGE = EndOfMessage()
# No LIMITS announced: a number no count reaches.
_NO_LIMIT = 1 << 62
