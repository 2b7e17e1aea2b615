# Theory of operation
# -------------------
# Message content between DATA's 354 and the final ``CRLF.CRLF`` (§4.1.1.4,
# §4.5.2), streamed in chunks in both directions.  Neither half ever holds
# more than one chunk plus four octets, and both work on whole chunks with
# ``bytes`` methods (find, replace, count) rather than a Python loop per
# line.
#
# ``DotStuffer`` (client) normalises line endings to CRLF, doubles a leading
# dot on every line, the first included, and ends the data with CRLF ``.``
# CRLF, adding a CRLF when the content does not end with one (attack class
# 2, outbound smuggling).  Its state across chunks is whether the output is
# at the start of a line, whether a CR was held back because its LF may
# arrive in the next chunk, and how long the current line is.
#
# ``DotUnstuffer`` (server) finds the end of data *only* at CRLF ``.`` CRLF
# (attack class 1, inbound smuggling: ``LF.LF``, ``CR.CR``, ``LF.CRLF`` and
# friends are data).  A chunk it hands out never ends in a prefix of that
# terminator (CR, CRLF, CRLF ``.`` or CRLF ``.`` CR are held back), so
# ``replace(b"\r\n.", b"\r\n")`` unstuffs every line inside a chunk and
# ``at_line_start`` covers the first line of the next.  Bare CR and bare LF
# are counted per chunk with ``count``: a chunk never starts with the LF of
# a CR that ended the previous one, so the counts are exact.
from __future__ import annotations

import enum

from ._errors import LocalProtocolError

__all__ = ["DotStuffer", "DotUnstuffer", "END_OF_DATA"]


class _End(enum.Enum):
    END_OF_DATA = "END_OF_DATA"


#: Returned by ``DotUnstuffer.extract`` when the terminator was consumed.
END_OF_DATA = _End.END_OF_DATA

_TERMINATOR = b"\r\n.\r\n"


def _has_bare_line_ending(chunk: bytes) -> bool:
    crlf = chunk.count(b"\r\n")
    return chunk.count(b"\n") != crlf or chunk.count(b"\r") != crlf


def _longest_line(chunk: bytes, carry: int) -> tuple[int, int]:
    """Return (longest line length, length of the unfinished last line)."""
    lines = chunk.split(b"\r\n")
    if len(lines) == 1:
        carry += len(lines[0])
        return carry, carry
    first = carry + len(lines[0])
    return max(first, max(map(len, lines))), len(lines[-1])


class DotStuffer:
    """Client side: turn raw message content into DATA wire bytes."""

    __slots__ = ("max_line", "_at_line_start", "_pending_cr", "_line_length")

    def __init__(self, max_line: int | None = 1000) -> None:
        #: Longest text line allowed, CRLF included (§4.5.3.1.6), or None.
        self.max_line = max_line
        self._at_line_start = True
        self._pending_cr = False
        self._line_length = 0

    def stuff(self, data: bytes | bytearray | memoryview) -> bytes:
        """Normalise and stuff one chunk of content."""
        # The state changes only once the chunk is accepted: a refused chunk
        # (LocalProtocolError) leaves the stuffer as it was.
        chunk = bytes(data)
        if self._pending_cr:
            chunk = b"\r" + chunk
        pending_cr = chunk.endswith(b"\r")
        if pending_cr:
            chunk = chunk[:-1]
        if not chunk:
            self._pending_cr = pending_cr
            return b""
        if _has_bare_line_ending(chunk):
            # §2.3.8: a client never sends a bare CR or LF; each becomes CRLF.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if self.max_line is not None:
            longest, line_length = _longest_line(chunk, self._line_length)
            if longest + 2 > self.max_line:
                raise LocalProtocolError(
                    f"message line of {longest + 2} octets exceeds the limit of "
                    f"{self.max_line} (RFC 5321 §4.5.3.1.6); encode the content "
                    "(quoted-printable or base64) or raise max_line_length"
                )
            self._line_length = line_length
        self._pending_cr = pending_cr
        # §4.5.2: "Before sending a line of mail text, the SMTP client checks
        # the first character of the line.  If it is a period, one additional
        # period is inserted at the beginning of the line."
        chunk = chunk.replace(b"\n.", b"\n..")
        if self._at_line_start and chunk[:1] == b".":
            chunk = b"." + chunk
        self._at_line_start = chunk.endswith(b"\n") or self._pending_cr
        return chunk

    def end(self) -> bytes:
        """The bytes that end the data: a missing final CRLF, then ``.`` CRLF."""
        tail = b""
        if self._pending_cr:
            self._pending_cr = False
            tail = b"\r\n"
        elif not self._at_line_start:
            tail = b"\r\n"
        self._at_line_start = True
        self._line_length = 0
        return tail + b".\r\n"


class DotUnstuffer:
    """Server side: find the end of the data and remove stuffing dots."""

    __slots__ = ("max_line", "size", "bare_line_ending", "longest_line", "_at_line_start", "_line_length")

    def __init__(self, max_line: int | None = None) -> None:
        self.max_line = max_line
        #: Octets of content handed out so far (after unstuffing).
        self.size = 0
        #: True once a bare CR or bare LF was seen in the content.
        self.bare_line_ending = False
        #: Longest line seen, CRLF included (tracked only with ``max_line``).
        self.longest_line = 0
        self._at_line_start = True
        self._line_length = 0

    def extract(self, buf: bytearray) -> bytes | _End | None:
        """Take content from *buf*.

        Returns a chunk of unstuffed content, ``END_OF_DATA`` once the
        terminator was consumed, or ``None`` when more input is needed.
        """
        if self._at_line_start:
            if buf[:3] == b".\r\n":
                del buf[:3]
                return END_OF_DATA
            if len(buf) < 3 and b".\r\n".startswith(buf):
                return None
            self._at_line_start = False
            if buf[:1] == b".":
                del buf[:1]
        end = buf.find(_TERMINATOR)
        if end >= 0:
            # Hand out the content up to and including the CRLF; the ". CRLF"
            # left in front of the buffer is the terminator, found next call.
            cut = end + 2
            self._at_line_start = True
        else:
            cut = len(buf)
            for partial in (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r"):
                if buf.endswith(partial):
                    cut -= len(partial)
                    break
            if cut == 0:
                return None
        chunk = bytes(buf[:cut])
        del buf[:cut]
        if not self.bare_line_ending and _has_bare_line_ending(chunk):
            self.bare_line_ending = True
        chunk = chunk.replace(b"\r\n.", b"\r\n")
        if self.max_line is not None:
            longest, self._line_length = _longest_line(chunk, self._line_length)
            self.longest_line = max(self.longest_line, longest + 2)
        self.size += len(chunk)
        return chunk
