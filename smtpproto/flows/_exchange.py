# Theory of operation
# -------------------
# ``_Exchange`` is what ``ClientSession``'s flows stand on (``client``, and
# ``_batch`` through the session): commands go to the core and out in
# writes, replies come back from the core one at a time.
#
# Commands are gathered in ``_out`` and written in one Send before each
# read, so a pipelined batch is one write, and the content goes out with
# its final dot in one more (RFC 2920 §3.1).  Each read is a Receive with
# the timeout of the step waiting for it (RFC 5321 §4.5.3.2), made once per
# timeout value; a failed read or write becomes the flows' own error
# (``Timeout``, ``Disconnected``), garbled input a ``ProtocolFailure``.
# Replies are taken from the bytes already received before another read
# is asked for, since most replies of a pipelined batch arrive in one.  A
# 421 that closed the session (RFC 5321 §3.8) is kept in ``_closing`` and
# stands for every reply still due: the server sends no more.  The trace
# goes to the logger ``smtpproto`` at DEBUG, with SASL data left out.
#
# What does not change from one message to the next is worked out once per
# session: what the server offered (once per EHLO reply, ``_Offer``), the
# RCPT events and the checked reverse-paths (events are immutable), so a
# message costs the core's work and little else.  Work that waits for no
# reply is done while one is on its way: a message's DATA content is
# stuffed (``_stuff_ahead``) between the write that ends with DATA and the
# 354, in ``send()`` and in a batch alike.
#
# The state used here (``conn``, ``_out``...) is declared on the class and
# set up by ``ClientSession.__init__``; the methods are the session's own
# through inheritance, so the flows call them with no layer in between.
from __future__ import annotations

import logging
import types
from dataclasses import dataclass

from .._client import ClientConnection
from .._connection import NEED_DATA, Sentinel
from .._errors import RemoteProtocolError
from .._esmtp_events import Auth
from .._events import (
    Command,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    Rcpt,
    Reply,
    StuffedContent,
)
from .._state import State
from ..extensions import Capabilities
from . import errors
from ._actions import Flow, Receive, Send
from .message import Outgoing

log = logging.getLogger("smtpproto")

# Events without fields, made once (they are immutable).
_DATA = Data()
_END_OF_MESSAGE = EndOfMessage()
# Most validated RCPT events (and MAIL reverse-paths) a session keeps for
# reuse; a session that sends to more forgets them and starts again.
_EVENT_CACHE = 256
# The largest content stuffed ahead of its 354 (``_stuff_ahead``): what is
# stuffed ahead is held in memory whole, as ``prepare`` holds bytes up to
# 64 KiB in one chunk.
_STUFF_AHEAD = 65536


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


class _Exchange:
    """Commands out and replies in, and the events and offer kept per
    session, for the flows of a ``ClientSession`` (whose ``__init__`` sets
    up the state declared here)."""

    conn: ClientConnection
    _out: list[bytes]
    _out_size: int
    _offer_cache: _Offer | None
    _rcpts: dict[tuple[str, tuple[tuple[str, str], ...]], Rcpt]
    _senders: set[str]
    _last_mail: Mail | None
    _receives: dict[float, Receive]
    _closing: Reply | None
    _debug: bool

    # -- commands out, replies in ------------------------------------------

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

    def _stuff_ahead(self, outgoing: Outgoing) -> StuffedContent | Exception | None:
        """*outgoing*'s content stuffed now, while the replies up to its
        354 are on their way, when it is one bytes object of at most
        ``_STUFF_AHEAD`` octets (else None: it is streamed, and a stream
        is not read before its 354).  An exception is returned, to be
        raised where sending the content would have raised it."""
        chunks = outgoing.chunks
        if not isinstance(chunks, (tuple, list)) or len(chunks) != 1:
            return None
        content = chunks[0]
        if type(content) is not bytes or len(content) > _STUFF_AHEAD:
            return None
        try:
            return self.conn.stuff_content(content)
        except Exception as exc:  # noqa: BLE001 - raised again in its place
            return exc

    def _put_content(
        self, outgoing: Outgoing, stuffed: StuffedContent | Exception | None, timeout: float
    ) -> Flow[None]:
        """Queue *outgoing*'s content and its final dot for the next write:
        *stuffed* when it was stuffed ahead (an exception then is raised
        here, where sending the content would have raised it), else its
        chunks one by one, writing every 64 KiB with *timeout* (the data
        block's, RFC 5321 §4.5.3.2.5)."""
        if isinstance(stuffed, Exception):
            raise stuffed
        send = self.conn.send
        if stuffed is not None:
            self._put(send(stuffed))  # the final dot included
            return
        for chunk in outgoing.chunks:
            self._put(send(MessageData(data=chunk)))
            if self._out_size >= 65536:
                yield from self._flush(timeout)
        self._put(send(_END_OF_MESSAGE))

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

    # -- made once per session ---------------------------------------------

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
        # parameters are ClientSession._mail_parameters' own: keywords it
        # spells, values it formats, or values their extension checked (DSN).  The core checks
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

    def _offer(self) -> _Offer:
        """What the flows use of the server's capabilities, read once per
        EHLO reply (the core replaces ``capabilities`` with each one)."""
        caps = self.conn.capabilities
        offer = self._offer_cache
        if offer is None or offer.caps is not caps:
            offer = self._offer_cache = _Offer.of(caps)
        return offer


def _send_failure(exc: OSError) -> errors.SMTPError:
    """The error for a write that failed with *exc*."""
    if isinstance(exc, TimeoutError):
        return errors.Timeout("timed out sending", step="send")
    return errors.Disconnected(f"connection lost while sending: {exc}")


def _trace(event: Command, data: bytes) -> str:
    """The trace line for *event*, with SASL data redacted (SASL response
    lines are not commands and are never traced)."""
    if isinstance(event, Auth):
        return f"AUTH {event.mechanism}" + ("" if event.initial_response is None else " ****")
    return data.decode("utf-8", "replace").rstrip("\r\n")
