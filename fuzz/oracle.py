"""Checked cores: the invariants every hostile-input test of smtpproto asserts.

Theory of operation
-------------------
:class:`CheckedServer` and :class:`CheckedClient` wrap a
``ServerConnection`` / ``ClientConnection`` and check, on every call, what
the cores promise whatever the peer sends (``docs/fuzzing.rst``):

* **Only documented errors.**  ``next_event()`` raises only
  ``RemoteProtocolError`` (and ``LocalProtocolError`` once the session
  failed); ``send()`` and ``tls_established()`` raise only
  ``LocalProtocolError`` (and ``tls_established()`` the remote error for
  bytes pipelined past STARTTLS, RFC 3207 §5), and a refused ``send()``
  changes nothing.  Any other exception, or a documented one in the wrong
  place, is an :class:`InvariantViolation`.
* **Bounded buffers.**  When ``next_event()`` asks for more data, what the
  core holds is an unfinished unit (a line shorter than its limit, at most
  four octets of DATA content that could start the terminator, nothing of
  a BDAT chunk); when it pauses, the server holds at most
  ``max_receive_buffer`` octets of commands (PROTOCOL.md attack class 7;
  the declared octets of a pipelined BDAT chunk are content, not
  commands).  A request for more data while a whole unit is buffered is a
  stall, and a violation too.
* **Replies in order.**  The server hands out nothing new while a reply is
  owed, and takes exactly one reply per command (RFC 5321 §4.2; RFC 2033
  §4.2: one per accepted recipient after an LMTP end of data), a 421
  ending everything (§3.8).  The client matches every reply to the oldest
  command outstanding in an independent model of the queue (RFC 2920
  §3.1), so ``last_command`` must name it.
* **Nothing after an error.**  After ``RemoteProtocolError`` every
  ``next_event()`` raises ``LocalProtocolError``; a closed session gives
  only ``ConnectionClosed``.
* **No message that was not completely received.**  The server's
  ``EndOfMessage`` for DATA comes only when the octets it consumed since
  the 354 end with the first ``CRLF.CRLF`` (§4.1.1.4, attack class 1), and
  its content equals a reference unstuffing of them (§4.5.2); a BDAT chunk
  ends after exactly its declared octets, handed out unchanged (RFC 3030
  §2).  The client's DATA bytes, unstuffed, give back the content with its
  line ends normalised, and hold the terminator only at their end (attack
  class 2).

The wrappers keep their own models (the octets received, the commands
outstanding, the recipients accepted) rather than reading the cores'
private state, so a core that loses track is caught.  They are shared by
the stateful tests (``tests/test_stateful.py``) and the coverage-guided
fuzz targets beside this file.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import fields

from smtpproto import (
    NEED_DATA,
    PAUSED,
    AuthCancel,
    AuthResponse,
    Bdat,
    ClientConnection,
    Command,
    CommandRejected,
    ConnectionClosed,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Helo,
    Lhlo,
    LocalProtocolError,
    Mail,
    MessageData,
    MessageRejected,
    ProxyHeader,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Sentinel,
    ServerConnection,
    State,
)

__all__ = [
    "GREETING",
    "command_octets",
    "TERMINATOR",
    "CheckedClient",
    "CheckedServer",
    "InvariantViolation",
    "has_bare_line_ending",
    "longest_line",
    "normalise",
    "revalidate",
    "unstuff",
]

#: The end of DATA content on the wire (RFC 5321 §4.1.1.4).
TERMINATOR = b"\r\n.\r\n"

#: Stands for the greeting in the client's model of outstanding commands.
GREETING = "greeting"

Outstanding = Command | EndOfMessage | AuthResponse | AuthCancel | str

_SERVER_EVENTS = (
    Command,
    CommandRejected,
    MessageRejected,
    MessageData,
    EndOfMessage,
    EndOfChunk,
    AuthResponse,
    AuthCancel,
    ConnectionClosed,
    ProxyHeader,
)


class InvariantViolation(AssertionError):
    """A core broke one of its promises (see the module docstring)."""


def _require(condition: bool, message: str | Callable[[], str]) -> None:
    # A message that quotes events is built only when it is needed: the
    # checks run on every call, and the quotes would cost more than them.
    if not condition:
        raise InvariantViolation(message if isinstance(message, str) else message())


# -- reference implementations (independent of smtpproto._data) ---------------


def unstuff(wire: bytes) -> bytes:
    """DATA content from its wire form without the final ``.`` CRLF: one
    leading dot removed from every line that has one (§4.5.2)."""
    return b"\r\n".join(
        line[1:] if line[:1] == b"." else line for line in wire.split(b"\r\n")
    )


def normalise(content: bytes) -> bytes:
    """What a client must put on the wire for *content*, before stuffing:
    CRLF stays, bare CR and bare LF become CRLF (§2.3.8), and a CRLF ends
    a non-empty body that lacks one (§4.1.1.4)."""
    out = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def has_bare_line_ending(content: bytes) -> bool:
    """True when *content* holds a CR or LF that is not part of a CRLF."""
    pairs = content.count(b"\r\n")
    return content.count(b"\r") != pairs or content.count(b"\n") != pairs


def longest_line(content: bytes) -> int:
    """The longest line of *content*, CRLF included (§4.5.3.1.6)."""
    return max(len(line) for line in content.split(b"\r\n")) + 2


def command_octets(held: bytes, limit: int) -> int:
    """The octets of *held* that are not declared BDAT chunk content (RFC
    3030 §2: "BDAT n" is followed by exactly n octets), counted up to just
    past *limit*: what a pipeline flood piles up (attack class 7)."""
    count = position = 0
    while position < len(held) and count <= limit:
        end = held.find(b"\n", position)
        if end < 0:
            return count + len(held) - position
        words = held[position:end].rstrip(b"\r").split(b" ")
        count += end + 1 - position
        position = end + 1
        if words[0].upper() == b"BDAT" and len(words) > 1 and words[1].isdigit():
            position += int(words[1][:18])
    return count


def revalidate(event: Event) -> None:
    """An event a parser built unchecked passes its public constructor's
    validation and comes out equal (symmetric events, DESIGN practice 3)."""
    if isinstance(event, (CommandRejected, MessageRejected)):
        revalidate(event.reply)
        if isinstance(event, CommandRejected) and event.command is not None:
            revalidate(event.command)
        return
    values = {f.name: getattr(event, f.name) for f in fields(event)}  # type: ignore[arg-type]
    try:
        rebuilt = type(event)(**values)
    except LocalProtocolError as exc:
        raise InvariantViolation(f"{event!r} does not pass its own validation: {exc}") from exc
    _require(rebuilt == event, lambda: f"{event!r} rebuilt as {rebuilt!r}")


def _undocumented(where: str, exc: BaseException) -> InvariantViolation:
    return InvariantViolation(f"{where} raised {type(exc).__name__}: {exc}")


# -- the server ------------------------------------------------------------


def _checked_tls_established(conn: ServerConnection | ClientConnection, eof: bool, after: str) -> None:
    """``conn.tls_established()``, with what either role must do checked:
    a remote error only in state TLS and only with bytes (or EOF) after
    *after* (it is re-raised), a refusal only outside TLS and without a
    state change, and a fresh GREETED session under TLS on success."""
    state = conn.state
    try:
        conn.tls_established()
    except RemoteProtocolError as exc:
        _require(state is State.TLS, lambda: f"remote error from tls_established() in {state}")
        _require(
            bool(conn.trailing_data[0]) or eof,
            lambda: f"{exc!r} with no data after {after}",
        )
        raise
    except LocalProtocolError:
        _require(state is not State.TLS, "tls_established() refused in state TLS")
        _require(conn.state is state, "a refused tls_established() changed the state")
        raise
    except Exception as exc:
        raise _undocumented(f"{type(conn).__name__}.tls_established()", exc) from exc
    _require(conn.state is State.GREETED and conn.tls, "TLS did not restart the session")


class _Checked:
    """What both checked wrappers share: the bytes received, EOF, the error
    that ended the session, feeding input and the switch to TLS."""

    def __init__(self, conn: ServerConnection | ClientConnection) -> None:
        self._conn = conn
        #: Every octet received, in order.
        self.stream = bytearray()
        #: True once EOF (``b""``) was received.
        self.eof = False
        #: The RemoteProtocolError that ended the session, if any.
        self.error: RemoteProtocolError | None = None

    def receive(self, data: bytes) -> None:
        """Feed *data* (``b""``: EOF) to the connection."""
        if self.eof:
            if data:
                try:
                    self._conn.receive_data(data)
                except LocalProtocolError:
                    return  # documented: no data after EOF
                raise InvariantViolation("receive_data() took data after EOF")
            return
        if not data:
            self.eof = True
        self.stream += data
        self._conn.receive_data(data)

    def _tls_established(self, after: str) -> None:
        """Tell the core the TLS handshake after *after* completed, checked;
        a remote error ends the session."""
        try:
            _checked_tls_established(self._conn, self.eof, after)
        except RemoteProtocolError as exc:
            self.error = exc
            raise


class CheckedServer(_Checked):
    """A ``ServerConnection`` whose every call is checked.

    Use :meth:`receive`, :meth:`next_event`, :meth:`send` and
    :meth:`tls_established` instead of the core's methods; they return and
    raise what the core does, after checking it.  ``delivered`` lists the
    content of every message the server reported complete.
    """

    def __init__(self, server: ServerConnection) -> None:
        super().__init__(server)
        self.server = server
        self.config = server.config
        #: True once the one reply allowed after the error was sent.
        self.error_answered = False
        #: Every event handed out, in order.
        self.events: list[Event] = []
        #: Every reply sent, with the event it answered (None: greeting or
        #: an unprompted 421).
        self.replies: list[tuple[Event | None, Reply]] = []
        #: Contents of the messages reported complete (EndOfMessage).
        self.delivered: list[bytes] = []
        self._answering: Event | None = None
        self._due = 1  # the greeting
        self._sent = 0
        self._recipients: list[Rcpt] = []
        self._data_start: int | None = None
        self._content = bytearray()
        self._chunk: Bdat | None = None
        self._chunk_start = 0
        self._chunks = bytearray()

    @property
    def done(self) -> bool:
        """True once the session is over (closed, or failed)."""
        return self.error is not None or self.server.state is State.CLOSED

    def _buffered(self) -> int:
        return len(self.server.trailing_data[0])

    def _consumed(self) -> int:
        return len(self.stream) - self._buffered()

    def _line_bound(self) -> int:
        # The longest command line the server may hold while waiting for its
        # end: MAIL and RCPT lines grow by what the offered extensions add,
        # an AUTH line may carry an initial response (RFC 4954 §4).
        extra = sum(ext.mail_line_extra + ext.rcpt_line_extra for ext in self.server.extensions)
        return max(self.config.max_command_line + extra, self.config.max_auth_line + 40)

    # -- receiving ---------------------------------------------------------

    def next_event(self) -> Event | Sentinel:
        """The server's next event, checked; raises what the core raises."""
        server = self.server
        if self.error is not None:
            self.check_after_error()
            raise InvariantViolation("next_event() called on the wrapper after the error")
        closed = server.state is State.CLOSED
        owed = server.replies_due
        proxy_pending = self.config.proxy_protocol and server.proxy is None
        try:
            result = server.next_event()
        except RemoteProtocolError as exc:
            _require(server.state is State.ERROR, lambda: f"state {server.state} after {exc!r}")
            _require(
                exc.reply is None or isinstance(exc.reply, Reply),
                lambda: f"bad reply {exc.reply!r}",
            )
            _require(not closed, lambda: f"{exc!r} raised by a closed session")
            self.error = exc
            raise
        except Exception as exc:
            raise _undocumented("ServerConnection.next_event()", exc) from exc
        if closed:
            _require(
                isinstance(result, ConnectionClosed),
                lambda: f"{result!r} after the session closed",
            )
            return result
        if result is NEED_DATA:
            self._check_need_data(owed, proxy_pending)
            return result
        if result is PAUSED:
            _require(
                bool(owed) or (server.state is State.TLS and not self.eof),
                lambda: f"PAUSED with no reply owed in state {server.state}",
            )
            held = server.trailing_data[0]
            limit = self.config.max_receive_buffer
            _require(
                len(held) <= limit or command_octets(held, limit) <= limit,
                lambda: f"{len(held)} octets of commands held while paused (bound {limit})",
            )
            return result
        assert isinstance(result, Event)
        self.events.append(result)
        _require(isinstance(result, _SERVER_EVENTS), lambda: f"unexpected event {result!r}")
        if not proxy_pending:
            # The greeting waits for the PROXY header, so it is not owed yet.
            _require(
                not owed,
                lambda: f"{result!r} handed out while a reply to {self._answering!r} is owed",
            )
        if isinstance(result, ConnectionClosed):
            _require(
                server.state is State.CLOSED,
                lambda: f"ConnectionClosed in state {server.state}",
            )
            _require(self.eof, "ConnectionClosed before EOF")
            return result
        hello = result.command if isinstance(result, CommandRejected) else result
        if not (self.config.lenient and isinstance(hello, (Ehlo, Helo, Lhlo))):
            # (A lenient server takes "any word as the EHLO/HELO name", which
            # the strict constructor refuses: see ServerConfig.lenient.)
            revalidate(result)
        self._on_event(result, proxy_pending)
        return result

    def _check_need_data(self, owed: int, proxy_pending: bool) -> None:
        server = self.server
        _require(not self.eof, "NEED_DATA after EOF (the session must close instead)")
        _require(not owed or proxy_pending, "NEED_DATA while a reply is owed")
        held = server.trailing_data[0]
        if self._chunk is not None:
            _require(
                not held,
                lambda: f"NEED_DATA with {len(held)} octets of a BDAT chunk buffered",
            )
        elif server.state is State.DATA:
            # At most a prefix of the terminator, held back (attack class 1).
            _require(
                len(held) <= 4 and TERMINATOR not in b"\r\n" + held,
                lambda: f"NEED_DATA holding DATA content {held[:20]!r}",
            )
        elif not proxy_pending:
            # CRLF always ends a command line; a bare LF ends one in lenient
            # mode only (RFC 5321 §2.3.8: elsewhere it is part of the line).
            end = b"\n" if self.config.lenient else b"\r\n"
            _require(
                end not in held,
                lambda: f"NEED_DATA with a whole line buffered: {held[:40]!r}",
            )
            # Unprocessed input over max_receive_buffer ends the session
            # before any line is looked at, so that is a bound too.
            bound = min(self._line_bound(), self.config.max_receive_buffer)
            _require(
                len(held) <= bound,
                lambda: f"{len(held)} octets of one line held (bound {bound})",
            )

    def _on_event(self, event: Event, proxy_pending: bool) -> None:
        server = self.server
        streaming = isinstance(event, MessageData) or (
            isinstance(event, Bdat) and server.replies_due == 0
        )
        if isinstance(event, ProxyHeader):
            _require(proxy_pending, "a PROXY header outside the start of the session")
        elif streaming:
            _require(server.replies_due == 0, lambda: f"{event!r} awaits a reply")
        else:
            _require(server.replies_due > 0, lambda: f"{event!r} awaits no reply")
            self._answering, self._due, self._sent = event, server.replies_due, 0
        if isinstance(event, MessageData):
            if self._chunk is not None:
                self._content += event.data
            else:
                start = self._data_start
                _require(
                    server.state is State.DATA and start is not None,
                    lambda: f"MessageData outside a message, in state {server.state}",
                )
                assert start is not None
                # Content handed out never includes the end of the data.
                raw = bytes(self.stream[start : self._consumed()])
                _require(TERMINATOR not in b"\r\n" + raw, "content handed out past CRLF.CRLF")
                self._content += event.data
        elif isinstance(event, Bdat) and streaming:
            self._chunk, self._chunk_start = event, self._consumed()
            self._content = bytearray()
        elif isinstance(event, (EndOfChunk, EndOfMessage, MessageRejected)):
            if self._chunk is not None:
                self._end_chunk(event)
            else:
                self._end_data(event)
        if isinstance(event, EndOfMessage) and self.config.lmtp:
            # RFC 2033 §4.2: one reply per recipient accepted.
            _require(
                list(server.recipients) == self._recipients,
                lambda: f"recipients {server.recipients!r}, accepted {self._recipients!r}",
            )
            _require(
                server.replies_due == max(1, len(self._recipients)),
                lambda: f"{server.replies_due} replies due for {len(self._recipients)} recipients",
            )

    def _end_data(self, event: Event) -> None:
        start = self._data_start
        _require(start is not None, lambda: f"{event!r} outside DATA")
        assert start is not None
        self._data_start = None
        raw = bytes(self.stream[start : self._consumed()])
        # §4.1.1.4: the data ends at the first CRLF.CRLF (the CRLF may be the
        # one that ended the DATA command line).
        _require(
            (b"\r\n" + raw).find(TERMINATOR) == len(raw) - 3 and len(raw) >= 3,
            lambda: f"end of data reported after {raw[-40:]!r}",
        )
        expected = unstuff(raw[:-3])
        content = bytes(self._content)
        too_big = len(expected) > self.config.max_message_size
        bare = has_bare_line_ending(expected) and not self.config.allow_bare_line_endings
        max_line = self.config.max_data_line
        too_long = max_line is not None and longest_line(expected) > max_line
        if isinstance(event, EndOfMessage):
            _require(content == expected, lambda: f"content {content[:60]!r} != {expected[:60]!r}")
            _require(
                not (too_big or bare or too_long), "a message over a limit reported complete"
            )
            self.delivered.append(content)
        else:
            _require(isinstance(event, MessageRejected), lambda: f"{event!r} ends DATA")
            _require(expected.startswith(content), "rejected content is not a prefix")
            _require(too_big or bare or too_long, lambda: f"{event!r} for an acceptable message")

    def _end_chunk(self, event: Event) -> None:
        chunk = self._chunk
        assert chunk is not None
        self._chunk = None
        raw = bytes(self.stream[self._chunk_start : self._consumed()])
        _require(
            len(raw) == chunk.size,
            lambda: f"BDAT {chunk.size} ended after {len(raw)} octets",
        )
        _require(bytes(self._content) == raw, "BDAT octets changed on the way")
        _require(
            isinstance(event, EndOfMessage) is chunk.last,
            lambda: f"{event!r} ends {chunk!r}",
        )
        self._chunks += raw
        if isinstance(event, EndOfMessage):
            self.delivered.append(bytes(self._chunks))
            self._chunks = bytearray()

    # -- sending -----------------------------------------------------------

    def send(self, reply: Reply) -> bytes:
        """Send *reply*, checked; raises ``LocalProtocolError`` when the
        core refuses it (and then nothing changed)."""
        server = self.server
        state, owed = server.state, server.replies_due
        awaiting = server.awaiting_reply
        try:
            out = server.send(reply)
        except LocalProtocolError:
            _require(
                server.state is state,
                lambda: f"a refused reply moved {state} to {server.state}",
            )
            _require(server.replies_due == owed, "a refused reply changed the replies due")
            _require(server.awaiting_reply is awaiting, "a refused reply changed the awaited")
            raise
        except Exception as exc:
            raise _undocumented("ServerConnection.send()", exc) from exc
        lines = out.split(b"\r\n")
        _require(
            out.endswith(b"\r\n") and all(line[:3] == b"%d" % reply.code for line in lines[:-1]),
            lambda: f"reply {reply!r} written as {out!r}",
        )
        if self.error is not None:
            _require(not self.error_answered, "two replies sent after the error")
            _require(server.state is State.CLOSED, "the reply after the error did not close")
            self.error_answered = True
            self.replies.append((None, reply))
            return out
        event = self._answering if owed else None
        self.replies.append((event, reply))
        if not owed:
            _require(reply.code == 421, lambda: f"unprompted {reply.code} accepted")
        if reply.code == 421:
            _require(server.state is State.CLOSED, "421 did not close the session")
            return out
        self._sent += 1
        if self._sent < self._due:
            _require(
                server.replies_due == self._due - self._sent and server.awaiting_reply is awaiting,
                lambda: f"{self._sent} of {self._due} replies sent, {server.replies_due} due",
            )
        else:
            _require(
                server.replies_due == 0,
                lambda: f"{server.replies_due} replies due after the last",
            )
        self._after_reply(event, reply, state)
        return out

    def _after_reply(self, event: Event | None, reply: Reply, before: State) -> None:
        server = self.server
        if reply.is_success and isinstance(event, Mail):
            self._recipients = []
        elif reply.is_success and isinstance(event, Rcpt):
            self._recipients.append(event)
        if server.state is State.DATA and before is not State.DATA:
            _require(reply.code // 100 == 3, lambda: f"DATA opened by {reply.code}")
            self._data_start, self._content = self._consumed(), bytearray()
        if server.state in (State.READY, State.GREETED, State.CLOSED):
            self._chunks = bytearray()

    def tls_established(self) -> None:
        """Tell the core the TLS handshake completed, checked."""
        self._tls_established("STARTTLS")

    def check_after_error(self) -> None:
        """After a RemoteProtocolError: no event ever again, only the error
        reply may be sent (once), and nothing is sendable after it."""
        server = self.server
        assert self.error is not None
        if not self.error_answered:
            _require(server.state is State.ERROR, lambda: f"state {server.state} after the error")
            try:
                event = server.next_event()
            except LocalProtocolError:
                return
            raise InvariantViolation(f"next_event() gave {event!r} after an error")
        _require(
            server.state is State.CLOSED,
            lambda: f"state {server.state} after the error reply",
        )
        event = server.next_event()
        _require(isinstance(event, ConnectionClosed), lambda: f"{event!r} after the error reply")

    def check(self) -> None:
        """The invariants that hold between any two calls."""
        server = self.server
        if self.error is not None:
            self.check_after_error()
            return
        if server.state is State.CLOSED:
            _require(
                isinstance(server.next_event(), ConnectionClosed),
                "closed, but not saying so",
            )
            try:
                server.send(Reply(code=250, text=("late",)))
            except LocalProtocolError:
                pass
            else:
                raise InvariantViolation("a reply was accepted after the session closed")
        _require(server.state is not State.ERROR, "ERROR without a RemoteProtocolError")


# -- the client --------------------------------------------------------------


class CheckedClient(_Checked):
    """A ``ClientConnection`` whose every call is checked, with its own model
    of the commands outstanding."""

    def __init__(self, client: ClientConnection) -> None:
        super().__init__(client)
        self.client = client
        self.config = client.config
        #: Every reply received, with the command it answered.
        self.replies: list[tuple[Outstanding, Reply]] = []
        #: Every octet sent, in order.
        self.sent = bytearray()
        #: The model of the commands awaiting replies, oldest first.
        self.outstanding: deque[Outstanding] = deque([GREETING])
        self._accepted: list[Rcpt] = []
        self._lmtp_left: int | None = None
        self._content: bytearray | None = None
        self._wire = bytearray()
        self._chunk_left: int | None = None

    @property
    def done(self) -> bool:
        """True once the session is over (closed, or failed)."""
        return self.error is not None or self.client.state is State.CLOSED

    def _check_queue(self) -> None:
        model = tuple(item for item in self.outstanding if item is not GREETING)
        actual = self.client.pending
        _require(
            len(model) == len(actual) and all(a is b for a, b in zip(model, actual)),
            lambda: f"pending {actual!r}, model {model!r}",
        )

    # -- sending -----------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Send *event*, checked; raises ``LocalProtocolError`` when the
        core refuses it (and then nothing changed)."""
        client = self.client
        state, pending = client.state, client.pending
        try:
            out = client.send(event)
        except LocalProtocolError:
            _require(
                client.state is state,
                lambda: f"a refused send moved {state} to {client.state}",
            )
            _require(client.pending == pending, "a refused send changed the queue")
            raise
        except Exception as exc:
            raise _undocumented("ClientConnection.send()", exc) from exc
        self.sent += out
        if isinstance(event, MessageData):
            self._on_content(event.data, out)
        elif isinstance(event, (EndOfMessage, EndOfChunk)):
            self._on_end(event, out)
        else:
            # Attack class 4: one line, no CR, LF or NUL but the final CRLF.
            _require(
                out.endswith(b"\r\n") and out.count(b"\n") == 1 and out.count(b"\r") == 1,
                lambda: f"{event!r} written as {out[:80]!r}",
            )
            _require(b"\x00" not in out, lambda: f"NUL in {out[:80]!r}")
            assert isinstance(event, (Command, AuthResponse, AuthCancel))
            self.outstanding.append(event)
            if isinstance(event, Bdat):
                self._chunk_left = event.size
        self._check_queue()
        return out

    def _on_content(self, data: bytes, out: bytes) -> None:
        if self._chunk_left is not None:
            _require(out == bytes(data), "BDAT octets changed on the way out (RFC 3030 §2)")
            _require(len(data) <= self._chunk_left, "more octets than the BDAT chunk holds")
            self._chunk_left -= len(data)
            return
        if self._content is None:
            _require(self.client.state is State.DATA, "content accepted outside DATA")
            self._content, self._wire = bytearray(), bytearray()
        self._content += data
        self._wire += out

    def _on_end(self, event: EndOfMessage | EndOfChunk, out: bytes) -> None:
        if self._chunk_left is not None:
            _require(self._chunk_left == 0 and out == b"", lambda: f"{event!r} ends a chunk early")
            self._chunk_left = None
            return
        _require(isinstance(event, EndOfMessage), "EndOfChunk outside a BDAT chunk")
        assert isinstance(event, EndOfMessage)
        content = bytes(self._content or b"")
        wire = bytes(self._wire) + out
        self._content, self._wire = None, bytearray()
        # Attack class 2: the terminator only at the end, no bare CR or LF,
        # every line stuffed (§4.5.2), the content intact.
        _require(
            (b"\r\n" + wire).find(TERMINATOR) == len(wire) - 3 and wire.endswith(b".\r\n"),
            lambda: f"DATA written with a terminator inside: {wire[-40:]!r}",
        )
        _require(not has_bare_line_ending(wire), "a bare CR or LF written in DATA")
        _require(unstuff(wire[:-3]) == normalise(content), "DATA content changed on the way out")
        self.outstanding.append(event)

    def tls_established(self) -> None:
        """Tell the core the TLS handshake completed, checked."""
        self._tls_established("the 220")
        _require(not self.client.capabilities.keywords, "capabilities survived STARTTLS")

    # -- receiving -----------------------------------------------------------

    def next_event(self) -> Event | Sentinel:
        """The client's next event, checked; raises what the core raises."""
        client = self.client
        if self.error is not None:
            self.check_after_error()
            raise InvariantViolation("next_event() called on the wrapper after the error")
        closed = client.state is State.CLOSED
        try:
            result = client.next_event()
        except RemoteProtocolError as exc:
            _require(client.state is State.ERROR, lambda: f"state {client.state} after {exc!r}")
            _require(not closed, lambda: f"{exc!r} raised by a closed session")
            self.error = exc
            raise
        except Exception as exc:
            raise _undocumented("ClientConnection.next_event()", exc) from exc
        if closed:
            _require(
                isinstance(result, ConnectionClosed),
                lambda: f"{result!r} after the session closed",
            )
            return result
        if result is NEED_DATA:
            _require(not self.eof, "NEED_DATA after EOF (the session must close instead)")
            held = client.trailing_data[0]
            _require(
                b"\n" not in held,
                lambda: f"NEED_DATA with a whole line buffered: {held[:40]!r}",
            )
            _require(
                len(held) <= self.config.max_reply_line,
                lambda: f"{len(held)} octets of one line",
            )
            return result
        if result is PAUSED:
            _require(
                client.state is State.TLS and not self.eof,
                lambda: f"PAUSED in {client.state}",
            )
            _require(not client.trailing_data[0], "PAUSED with data after the 220 to STARTTLS")
            return result
        if isinstance(result, ConnectionClosed):
            _require(client.state is State.CLOSED and self.eof, "ConnectionClosed before EOF")
            return result
        _require(isinstance(result, Reply), lambda: f"a client event that is no reply: {result!r}")
        assert isinstance(result, Reply)
        revalidate(result)
        # Attack class 7 (reply bombs): bounded lines, and lines per reply.
        _require(
            len(result.text) <= self.config.max_reply_lines,
            lambda: f"{len(result.text)} lines",
        )
        longest = max(len(text.encode("utf-8", "surrogateescape")) for text in result.text)
        _require(
            longest + 6 <= self.config.max_reply_line,
            lambda: f"a reply line of {longest} octets",
        )
        self._on_reply(result)
        if client.state is not State.CLOSED:
            # (A 421 or 221 ends the session: what was outstanding stays
            # unanswered, and the model forgets it.)
            self._check_queue()
        return result

    def _on_reply(self, reply: Reply) -> None:
        client = self.client
        if not self.outstanding:
            _require(
                reply.code == 421,
                lambda: f"reply {reply.code} accepted with nothing outstanding",
            )
            _require(
                client.state is State.CLOSED and client.last_command is None,
                "unprompted 421",
            )
            self.replies.append((GREETING, reply))
            return
        head = self.outstanding[0]
        expected = None if head is GREETING else head
        _require(
            client.last_command is expected,
            lambda: f"reply {reply.code} matched to {client.last_command!r}, not {expected!r}",
        )
        self.replies.append((head, reply))
        if reply.code == 421:
            _require(client.state is State.CLOSED, "421 did not close the session")
            self.outstanding.clear()
            return
        ends = isinstance(head, EndOfMessage) or (isinstance(head, Bdat) and head.last)
        if self.config.lmtp and ends:
            # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            if self._lmtp_left is None:
                self._lmtp_left = max(1, len(self._accepted))
            index = max(1, len(self._accepted)) - self._lmtp_left
            recipient = self._accepted[index] if self._accepted else None
            _require(
                client.lmtp_recipient is recipient,
                lambda: f"LMTP reply about {client.lmtp_recipient!r}",
            )
            self._lmtp_left -= 1
            if self._lmtp_left:
                return
            self._lmtp_left = None
        self.outstanding.popleft()
        if isinstance(head, Mail):
            self._accepted = []
        elif isinstance(head, Rcpt) and reply.is_success:
            self._accepted.append(head)
        if isinstance(head, Command) and reply.code == 221 and client.state is State.CLOSED:
            self.outstanding.clear()

    def check_after_error(self) -> None:
        """After a RemoteProtocolError: no event ever again, nothing sendable."""
        client = self.client
        _require(client.state is State.ERROR, lambda: f"state {client.state} after the error")
        try:
            event = client.next_event()
        except LocalProtocolError:
            pass
        else:
            raise InvariantViolation(f"next_event() gave {event!r} after an error")
        try:
            client.send(EndOfMessage())
        except LocalProtocolError:
            return
        raise InvariantViolation("the client sent something after an error")

    def check(self) -> None:
        """The invariants that hold between any two calls."""
        client = self.client
        if self.error is not None:
            self.check_after_error()
            return
        _require(client.state is not State.ERROR, "ERROR without a RemoteProtocolError")
        if client.state is State.CLOSED:
            _require(
                isinstance(client.next_event(), ConnectionClosed),
                "closed, but not saying so",
            )
        else:
            self._check_queue()
