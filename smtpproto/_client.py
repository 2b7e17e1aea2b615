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
# The caller is checked before any byte is produced: CR, LF and NUL in an
# argument (attack class 4), parameters of extensions the server did not
# offer, non-ASCII addresses without SMTPUTF8, 8-bit content without
# BODY=8BITMIME, PLAIN/LOGIN over cleartext (attack class 8), more RCPTs
# or MAILs than the server's LIMITS (RFC 9422), command lines over their
# limit, and content lines over 1000 octets, over DATA and over BDAT alike
# unless the body is BINARYMIME (RFC 5321 §4.5.3.1.6, RFC 3030 §3).
# Replies are checked as they arrive: malformed lines, codes that change
# inside a multiline reply, over-long lines or replies (attack class 7),
# replies nobody asked for, a 3xx other than 334 or a 334 that is not
# strict base64 in an AUTH exchange (attack class 6), and any byte after
# the 220 to STARTTLS (attack class 3) are a ``RemoteProtocolError``.
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ._buffer import LINE_TOO_LONG
from ._commands import decode_sasl, format_command
from ._connection import PAUSED, ConnectionBase, Sentinel
from ._data import DotStuffer, LineLimit
from ._errors import LocalProtocolError, RemoteProtocolError
from ._esmtp_events import (
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    EndOfChunk,
    Lhlo,
    StartTLS,
    Xclient,
)
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
from ._state import Key, State, expected_digit, is_allowed, key_of, next_state
from ._syntax import GrammarError, is_ascii
from .extensions import Capabilities, owner_of
from .extensions.eightbitmime import body_type

__all__ = ["ClientConfig", "ClientConnection"]

# RFC 2920 §3.1: "The EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP commands
# can only appear as the last command in a group ... since their success or
# failure produces a change of state which the client SMTP must accommodate."
# RFC 3207 §4: STARTTLS likewise.  HELP, LHLO, XCLIENT and unmodelled
# commands are treated the same way, to be safe.
_END_OF_BATCH = (
    Ehlo, Helo, Lhlo, Data, Vrfy, Expn, Quit, Noop, Help, StartTLS, Xclient, UnknownCommand,
    AuthResponse, AuthCancel,
)
# RFC 4954 §4: AUTH must end a batch, except "when the AUTH command contains
# an initial response for a SASL mechanism that allows the client to send
# data first, the SASL mechanism is known to complete in one round-trip, and
# a security layer is not negotiated by the client" (PLAIN, EXTERNAL).
_ONE_ROUND_TRIP = ("PLAIN", "EXTERNAL")
# Mechanisms that put a reusable secret on the wire (attack class 8).
_CLEARTEXT_SECRETS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")

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
        self._bdat_lines = self._line_limit(None)
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

    def _queue(self, item: Outstanding) -> None:
        """Put *item* at the end of the queue of commands awaiting replies."""
        self._pending.append(item)
        cached = self._projection
        if cached is not None and cached[0] is self._state:
            self._projection = (cached[0], _project(cached[1], item))

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
        of a chunk or of the message, or a SASL response.

        Raises ``LocalProtocolError`` (and sends nothing) when the event is
        not allowed now.
        """
        self._check_sendable(type(event).__name__)
        if isinstance(event, MessageData):
            return self._send_content(event.data)
        if isinstance(event, (EndOfMessage, EndOfChunk)):
            return self._send_end(event)
        if self._chunk_left is not None:
            raise LocalProtocolError(
                f"cannot send {type(event).__name__}: the BDAT chunk still needs "
                f"{self._chunk_left} octets and its end"
            )
        if isinstance(event, (AuthResponse, AuthCancel)):
            return self._send_sasl(event)
        if not isinstance(event, Command):
            raise LocalProtocolError(f"a client cannot send {type(event).__name__} events")
        return self._send_command(event)

    def _send_content(self, data: bytes | bytearray | memoryview) -> bytes:
        chunk = bytes(data)  # one copy at most, none for bytes
        if self._chunk_left is not None:
            if len(chunk) > self._chunk_left:
                raise LocalProtocolError(
                    f"{len(chunk)} octets sent but the BDAT chunk has only "
                    f"{self._chunk_left} left"
                )
            if not chunk.isascii():
                self._check_8bit()
            if self._bdat_lines is not None:
                self._bdat_lines.check(chunk)
            self._chunk_left -= len(chunk)
            return chunk
        self._check_in_data("MessageData")
        if not chunk.isascii():
            self._check_8bit()
        return self._stuffer.stuff(chunk)

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
        self._check_in_data(name)
        self._queue(event)
        return self._stuffer.end()

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
        verb = command.name if isinstance(command, UnknownCommand) else command.verb
        if self._state is State.CONNECTED:
            raise LocalProtocolError(f"cannot send {verb} before the server's greeting (§3.1)")
        if self._pending:
            self._check_pipelining(verb)
        projected = self.projected_state()
        if isinstance(command, UnknownCommand):
            if projected not in (State.GREETED, State.READY, State.MAIL, State.RCPT):
                raise LocalProtocolError(f"cannot send {verb} in state {projected.name}")
        elif not is_allowed(projected, key_of(command)):
            raise LocalProtocolError(f"{verb} is not allowed in state {projected.name}")
        self._check_command(command, verb)
        limit = self.config.max_command_line
        if isinstance(command, (Mail, Rcpt)):
            limit += self._check_parameters(command)
        elif isinstance(command, Auth):
            limit = 12288 + 40  # RFC 4954 §4: responses of up to 12288 octets
        line = format_command(command)
        if len(line) > limit:
            raise LocalProtocolError(f"{verb} command line of {len(line)} octets exceeds {limit}")
        self._record(command)
        self._queue(command)
        return line

    def _check_command(self, command: Command, verb: str) -> None:
        caps = self.capabilities
        if isinstance(command, (Ehlo, Helo)) and self.config.lmtp:
            raise LocalProtocolError(f"an LMTP client sends LHLO, not {verb} (RFC 2033 §4.1)")
        if isinstance(command, Lhlo) and not self.config.lmtp:
            raise LocalProtocolError("LHLO is for LMTP clients (ClientConfig(lmtp=True))")
        if isinstance(command, StartTLS):
            if self.tls:
                raise LocalProtocolError("STARTTLS sent on a connection that is already TLS")
            if not caps.starttls:
                raise LocalProtocolError("the server did not offer STARTTLS")
        elif isinstance(command, Auth):
            self._check_auth(command)
        elif isinstance(command, Bdat):
            if not caps.chunking:
                raise LocalProtocolError("the server did not offer CHUNKING (RFC 3030)")
        elif isinstance(command, Data):
            body = (self._sent_mail.parameters.get("BODY") or "") if self._sent_mail else ""
            if body.upper() == "BINARYMIME":
                raise LocalProtocolError("BODY=BINARYMIME content must be sent with BDAT")
        elif isinstance(command, Xclient) and "XCLIENT" not in caps:
            raise LocalProtocolError("the server did not offer XCLIENT")
        if isinstance(command, Mail) and self._mails_sent >= self._limit("MAILMAX"):
            raise LocalProtocolError(
                f"the server's LIMITS MAILMAX={self._limit('MAILMAX')} allows no more MAIL commands"
            )
        if isinstance(command, Rcpt) and self._rcpts_sent >= self._limit("RCPTMAX"):
            raise LocalProtocolError(
                f"the server's LIMITS RCPTMAX={self._limit('RCPTMAX')} allows no more recipients"
            )

    def _limit(self, name: str) -> int:
        """The server's LIMITS value *name* (RFC 9422), or a huge number."""
        return self.capabilities.limits.get(name, 1 << 62)

    def _line_limit(self, mail: Mail | None) -> LineLimit | None:
        """The line limit for the BDAT content of *mail*'s transaction.

        RFC 3030 §3: "BINARYMIME ... the restrictions on line length ...
        do not apply"; any other body keeps the 1000-octet limit of RFC
        5321 §4.5.3.1.6, as over DATA.
        """
        limit = self.config.max_line_length
        if limit is None or (mail is not None and body_type(mail) == "BINARYMIME"):
            return None
        return LineLimit(limit)

    def _check_auth(self, command: Auth) -> None:
        if self.authenticated:
            raise LocalProtocolError("already authenticated (RFC 4954 §4: AUTH only once)")
        offered = self.capabilities.auth_mechanisms
        if command.mechanism not in offered:
            raise LocalProtocolError(
                f"the server did not offer AUTH {command.mechanism} (offered: "
                f"{' '.join(offered) or 'no AUTH'})"
            )
        if (
            command.mechanism in _CLEARTEXT_SECRETS
            and not self.tls
            and not self.config.allow_plaintext_auth
        ):
            raise LocalProtocolError(
                f"AUTH {command.mechanism} would send a secret over cleartext; use STARTTLS "
                "first or set ClientConfig(allow_plaintext_auth=True)"
            )

    def _record(self, command: Command) -> None:
        if isinstance(command, Mail):
            self._sent_mail = command
            self._rcpts_sent = 0
            self._mails_sent += 1
            self._bdat_lines = self._line_limit(command)
        elif isinstance(command, Rcpt):
            self._rcpts_sent += 1
        elif isinstance(command, (Rset, Ehlo, Helo, Lhlo)):
            self._sent_mail = None
        elif isinstance(command, Bdat):
            self._chunk_left = command.size
            self._chunk_last = command.last

    def _check_pipelining(self, verb: str) -> None:
        if not self.capabilities.pipelining:
            raise LocalProtocolError(
                f"cannot send {verb} while a reply is outstanding: the server did not "
                "offer PIPELINING (RFC 2920)"
            )
        if len(self._pending) >= self.config.max_pending:
            raise LocalProtocolError(f"more than {self.config.max_pending} commands outstanding")
        last = self._pending[-1]
        ends_batch = isinstance(last, _END_OF_BATCH) or (
            isinstance(last, Auth)
            and (last.initial_response is None or last.mechanism not in _ONE_ROUND_TRIP)
        )
        if ends_batch:
            raise LocalProtocolError(
                f"{_name(last)} must end a pipelined batch (RFC 2920 §3.1): wait for its "
                f"reply before sending {verb}"
            )

    def _check_parameters(self, command: Mail | Rcpt) -> int:
        """Check parameters against the server's offer; return the octets
        the offered extensions add to the line limit."""
        extra = 0
        for name, value in command.parameters.items():
            owner = owner_of(name)
            if owner is None:
                continue  # an extension the core does not model: caller's call
            for keyword in owner.requirements(name, value):
                if keyword not in self.capabilities:
                    raise LocalProtocolError(
                        f"parameter {name} needs the {keyword} extension, "
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
        if self._state is State.TLS:
            if self._buffer.data:
                raise RemoteProtocolError("data received after the 220 to STARTTLS")
            return self._closed() if self._eof else PAUSED
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
        self._projection = None
        if self._lmtp_more(command, reply):
            return reply
        key: Key = Reply if command is None else key_of(command)
        state = self._state
        if isinstance(command, UnknownCommand) or not is_allowed(state, key):
            # Sent on the assumption that earlier commands would succeed;
            # they did not, so this one cannot change the state.
            if reply.is_intermediate:
                raise RemoteProtocolError(f"unexpected {reply.code} reply to {_name(command)}")
            new = State.CLOSED if reply.code == 421 else state
        else:
            try:
                new = next_state(state, key, reply.code)
            except ValueError:
                raise RemoteProtocolError(
                    f"unexpected {reply.code} reply to {_name(command)}"
                ) from None
            if new is State.AUTH and reply.code != 334:
                # RFC 4954 §4: only "334" continues an exchange; any other
                # 3xx would leave the last challenge to be answered again.
                raise RemoteProtocolError(f"unexpected {reply.code} reply to {_name(command)}")
        self._apply(command, reply, new)
        self._state = new
        self.last_command = command
        if new is State.TLS and self._buffer.data:
            raise RemoteProtocolError("data received after the 220 to STARTTLS")
        return reply

    def _lmtp_more(self, command: Outstanding, reply: Reply) -> bool:
        """LMTP: keep the end of data outstanding until every accepted
        recipient got its reply (RFC 2033 §4.2); True while more are due."""
        ends = isinstance(command, EndOfMessage) or (isinstance(command, Bdat) and command.last)
        if not (self.config.lmtp and ends):
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

    def _apply(self, command: Outstanding, reply: Reply, new: State) -> None:
        if reply.code == 334 and isinstance(command, (Auth, AuthResponse)):
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
        if isinstance(command, Mail) and self._state is State.READY:
            # A new transaction, opened or refused: the last one's recipients
            # no longer count (LMTP counts its end-of-data replies by them).
            self._accepted = []
        if reply.is_success:
            if isinstance(command, (Ehlo, Lhlo)):
                self.capabilities = Capabilities.from_reply(reply)
            elif isinstance(command, (Helo, Xclient)):
                self.capabilities = Capabilities.none()
            elif isinstance(command, Rcpt):
                self._accepted.append(command)
            elif isinstance(command, (Auth, AuthResponse)) and reply.code == 235:
                self.authenticated = True
        elif isinstance(command, Mail):
            self._sent_mail = None
        if new is State.GREETED and isinstance(command, Xclient):
            self.authenticated = False


def _project(state: State, item: Outstanding) -> State:
    """The state after *item*, sent in *state*, if it gets the reply hoped
    for; a command out of sequence there leaves the state alone."""
    key: Key = Reply if item is None else key_of(item)
    if is_allowed(state, key):
        return next_state(state, key, expected_digit(key) * 100)
    return state


def _name(command: Outstanding) -> str:
    if command is None:
        return "the greeting"
    if isinstance(command, UnknownCommand):
        return command.name
    if isinstance(command, EndOfMessage):
        return "the end of data"
    if isinstance(command, (AuthResponse, AuthCancel)):
        return "the SASL response"
    return command.verb
