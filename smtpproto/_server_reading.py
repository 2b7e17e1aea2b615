# Theory of operation
# -------------------
# How ``ServerConnection`` reads what is not a command line.
# ``next_event()`` picks the reading mode (the modes exclude one another)
# and reads command lines itself; the other modes are here, all but the
# loop over DATA content, which stays inline in ``next_event()`` because
# it runs for every chunk.
#
# The PROXY header is read first, while the greeting awaits it; one that
# cannot be read ends the session (``next_proxy_event``).
#
# AUTH exchange lines (RFC 4954 §4), one per 334 challenge, end at CRLF
# only, as command lines do: a bare LF makes one bad line up to the CRLF.
# Each is base64, or ``*`` to cancel; refusals of these lines count as
# AUTH failures (``ServerAuth``), not as command errors
# (``next_sasl_event``).
#
# Message content.  DATA content is read by ``DotUnstuffer``; it ends only
# at CRLF.CRLF, and a message with bare CR/LF (unless allowed) or over the
# size limit is read to its end and answered with ``MessageRejected``
# (``end_of_data``).  BDAT (RFC 3030) content is counted, not scanned:
# ``Bdat`` is handed out first, then its octets as ``MessageData``, then
# ``EndOfChunk`` or ``EndOfMessage`` (LAST), which awaits the reply
# (``start_chunk``, ``next_chunk_event``).  A refused chunk's octets are
# read and dropped (up to ``max_bdat_discard``) before its
# ``CommandRejected`` comes out, so the stream stays in step
# (``discard``).  An EOF before the end gives ``ConnectionClosed``:
# nothing may be delivered.  In LMTP (RFC 2033) the end of data awaits one
# reply per accepted recipient.
#
# Chunks follow their BDAT lines at once, so ``command_octets`` tells them
# apart from command lines when unread input is measured against
# ``max_receive_buffer`` (attack class 7).
#
# Every function takes the connection as its first argument and reads and
# sets its private fields: this is part of ``ServerConnection``, in a
# module of its own so that each module stays small.  Only the type
# checker imports ``_server`` from here, so there is no import cycle.
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import _replies as R
from ._buffer import LINE_TOO_LONG
from ._commands import decode_sasl
from ._connection import NEED_DATA, Sentinel
from ._data import DotUnstuffer
from ._errors import RemoteProtocolError
from ._esmtp_events import AuthCancel, AuthResponse, Bdat, EndOfChunk
from ._events import _message_data, CommandRejected, EndOfMessage, Event, MessageRejected, Reply
from ._proxy import ProxyError, parse_proxy_header
from ._state import BdatLast
from ._syntax import GrammarError

if TYPE_CHECKING:
    from ._server import ServerConnection

__all__ = [
    "AUTH_LINE_TOO_LONG",
    "next_proxy_event",
    "next_sasl_event",
    "start_chunk",
    "discard",
    "next_chunk_event",
    "end_of_data",
    "command_octets",
]

AUTH_LINE_TOO_LONG = R.preformat(
    R.rejection(500, "5.5.6", "Authentication Exchange line is too long")
)
_END_OF_MESSAGE = EndOfMessage._trusted()
_END_OF_CHUNK = EndOfChunk._trusted()

# -- the PROXY header -------------------------------------------------


def next_proxy_event(server: ServerConnection) -> Event | Sentinel:
    """The PROXY header once it has all arrived, read from the input."""
    try:
        header = parse_proxy_header(server._buffer.data)
    except ProxyError as exc:
        raise RemoteProtocolError(str(exc)) from None
    if header is None:
        return server._closed() if server._eof else NEED_DATA
    server.proxy = header
    return header


# -- AUTH exchange lines -----------------------------------------------


def next_sasl_event(server: ServerConnection) -> Event | Sentinel:
    """The event for the next line of an AUTH exchange: ``AuthResponse``,
    ``AuthCancel``, or ``CommandRejected`` for a line that is refused."""
    # RFC 4954 §4: one line per 334 challenge.  Refusals of these lines
    # count as AUTH failures (ServerAuth), not as command errors.
    lenient = server.config.lenient
    line = server._buffer.extract_line(server.config.max_auth_line + 2, crlf_only=not lenient)
    if line is None:
        return server._closed() if server._eof else NEED_DATA
    if line is LINE_TOO_LONG:
        return _sasl_refusal(server, AUTH_LINE_TOO_LONG, "SASL response too long")
    content, _ = line
    if not lenient and b"\n" in content:
        # §2.3.8, as for command lines: one bad line up to the CRLF.
        return _sasl_refusal(server, R.BAD_LINE, "bare LF in a SASL response line")
    return _sasl_line(server, content)


def _sasl_line(server: ServerConnection, content: bytes) -> Event:
    # RFC 4954 §4: "If the client wishes to cancel an authentication
    # exchange, it issues a line with a single '*'."
    if content == b"*":
        return server._await(AuthCancel._trusted(), AuthCancel)
    try:
        data = decode_sasl(content.decode("ascii"))
    except (GrammarError, UnicodeDecodeError):
        return _sasl_refusal(
            server,
            R.rejection(501, "5.5.2", "Invalid base64 in the SASL exchange"),
            "invalid base64 in the SASL exchange",
        )
    server._sasl().respond(data)
    return server._await(AuthResponse._trusted(data=data), AuthResponse)


def _sasl_refusal(server: ServerConnection, reply: Reply, reason: str) -> Event:
    reply = server._sasl().limited(reply)
    refusal = CommandRejected._trusted(reply=reply, reason=reason, command=None)
    return server._await(refusal, CommandRejected)


# -- BDAT ------------------------------------------------------------


def start_chunk(server: ServerConnection, command: Bdat, refusal: Reply | None) -> Event | Sentinel:
    """Begin reading the chunk of *command*, accepted if *refusal* is None,
    else discarded before the refusal comes out."""
    if refusal is None:
        server._chunk = command
        server._chunk_left = command.size
        return command
    # RFC 3030 §2: the octets follow whatever the reply; read and drop
    # them, within a hard cap, then hand out the refusal.
    if command.size > server.config.max_bdat_discard:
        raise RemoteProtocolError(
            f"refused BDAT chunk of {command.size} octets is over the discard cap",
            R.rejection(552, "5.3.4", "Chunk too large, closing connection"),
        )
    server._deferred = server._rejection(refusal, refusal.message, command)
    server._discard_left = command.size
    if command.last:
        # RFC 2033 §4.3: in LMTP, BDAT LAST takes one reply per accepted
        # recipient, a refusal too (the client core counts the same).
        server._replies_due = _lmtp_replies(server)
    return discard(server)


def discard(server: ServerConnection) -> Event | Sentinel:
    """Drop what has arrived of a refused chunk; its refusal once all has."""
    take = min(server._discard_left, len(server._buffer))
    if take:
        del server._buffer.data[:take]
        server._discard_left -= take
    if server._discard_left:
        return server._closed() if server._eof else NEED_DATA
    deferred, server._deferred = server._deferred, None
    assert deferred is not None
    return server._await(deferred, CommandRejected)


def next_chunk_event(server: ServerConnection) -> Event | Sentinel:
    """The next event of an accepted chunk: its octets as they arrive,
    then ``EndOfChunk``, or ``EndOfMessage`` after ``BDAT n LAST``."""
    chunk = server._chunk
    assert chunk is not None
    if server._chunk_left:
        take = min(server._chunk_left, len(server._buffer))
        if not take:
            return server._closed() if server._eof else NEED_DATA
        server._chunk_left -= take
        server._message_size += take
        return _message_data(server._buffer.consume(take))
    server._chunk = None
    if chunk.last:
        server._replies_due = _lmtp_replies(server)
        return server._await(_END_OF_MESSAGE, BdatLast)
    return server._await(_END_OF_CHUNK, Bdat)


# -- DATA ------------------------------------------------------------


def end_of_data(server: ServerConnection, unstuffer: DotUnstuffer) -> Event:
    """The event for the end of DATA content: ``EndOfMessage``, or
    ``MessageRejected`` for content over a limit."""
    event: Event
    max_line = server.config.max_data_line
    if unstuffer.size > server.config.max_message_size:
        event = MessageRejected._trusted(reply=R.MESSAGE_TOO_BIG, reason="message too big")
    elif unstuffer.bare_line_ending and not server.config.allow_bare_line_endings:
        event = MessageRejected._trusted(
            reply=R.BARE_LINE_ENDING, reason="bare CR or LF in message data"
        )
    elif max_line is not None and unstuffer.longest_line > max_line:
        event = MessageRejected._trusted(
            reply=R.rejection(554, "5.6.0", f"Message has a line longer than {max_line} octets"),
            reason="message line too long",
        )
    else:
        event = _END_OF_MESSAGE
    server._replies_due = _lmtp_replies(server)
    return server._await(event, EndOfMessage)


def _lmtp_replies(server: ServerConnection) -> int:
    # RFC 2033 §4.2: after the end of data, one reply per recipient that
    # was accepted, in the order of the RCPT commands.
    return len(server._recipients) if server.config.lmtp else 0


# -- unread input -------------------------------------------------------

_BDAT_LINE = re.compile(rb"BDAT +([0-9]{1,20})(?: +LAST)? *", re.IGNORECASE)


def command_octets(data: bytearray, limit: int) -> int:
    """The octets of *data* that are command lines, not declared BDAT
    chunks, counted until they pass *limit*.

    RFC 3030 §2: a chunk's octets follow its ``BDAT n`` line at once, and
    BDAT may be pipelined (§4.2), so a chunk that arrived in the same read
    as its command is message content on its way, not a flood of unread
    commands (attack class 7 bounds only the latter).  Each step skips a
    whole line or a whole chunk, so the walk is short.
    """
    count = position = 0
    end = len(data)
    while position < end and count <= limit:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return count + end - position
        count += line_end + 2 - position
        match = _BDAT_LINE.fullmatch(data, position, line_end)
        position = line_end + 2
        if match is not None:
            position += int(match.group(1))
    return count
