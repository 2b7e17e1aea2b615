# Theory of operation
# -------------------
# The receive buffer is a ``bytearray`` that remembers how far it has
# already searched for a line end, so feeding a long line a byte at a time
# costs linear, not quadratic, time (the lesson of h11's receive buffer).
#
# Where a line ends is the caller's choice.  RFC 5321 §2.3.8: "Lines
# consist of zero or more data characters terminated by the sequence ASCII
# character "CR" (hex value 0D) followed immediately by ASCII character
# "LF" (hex value 0A)"; "SMTP client implementations MUST NOT transmit
# these characters except when they are intended as line terminators".
# With ``crlf_only=True`` (the server's command and SASL lines) a line ends
# at CRLF and nowhere else: a bare LF is a character inside the line, which
# the caller refuses as one bad line.  Splitting there instead would run
# what follows the LF as a command that a front end splitting at CRLF only
# never saw (command smuggling, attack class 5).  Without it (a client's
# reply lines, the server's documented lenient mode) lines end at LF, and
# the caller learns whether a CR came before it.
#
# Every line is bounded.  When a line grows past ``max_line`` octets the
# buffer drops what it holds, reports ``LINE_TOO_LONG`` once, and then
# discards input up to and including the next line end, so the session
# resynchronises at the next line (§4.5.3.1.4; attack class 7).  Memory
# therefore never exceeds ``max_line`` plus one ``receive_data`` call.
# ``dropped`` keeps the first octets of the line just dropped, taken when it
# is dropped (after the rest of any earlier over-long line was discarded),
# so the caller can tell which command it was (a BDAT line's octets follow
# it whatever the reply: RFC 3030 §2).
from __future__ import annotations

import enum

__all__ = ["ReceiveBuffer", "LineTooLong", "LINE_TOO_LONG"]

#: Octets of a dropped over-long line kept in ``ReceiveBuffer.dropped``.
_DROPPED_HEAD = 16


class LineTooLong(enum.Enum):
    """Marker returned once for a line that exceeded its bound."""

    LINE_TOO_LONG = "LINE_TOO_LONG"


LINE_TOO_LONG = LineTooLong.LINE_TOO_LONG


class ReceiveBuffer:
    """Bytes received and not yet consumed, with bounded line extraction."""

    __slots__ = ("data", "dropped", "_searched", "_discarding")

    def __init__(self) -> None:
        self.data = bytearray()
        #: The first octets of the line ``extract_line`` last reported as
        #: ``LINE_TOO_LONG`` (``b""`` before any).
        self.dropped = b""
        self._searched = 0
        self._discarding = False

    def __len__(self) -> int:
        return len(self.data)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self.data += data

    def consume(self, count: int) -> bytes:
        """Remove and return the first *count* bytes."""
        out = bytes(self.data[:count])
        del self.data[:count]
        self._searched = 0
        return out

    def extract_line(
        self, max_line: int, *, crlf_only: bool = False
    ) -> tuple[bytes, bool] | LineTooLong | None:
        """Return the next line as ``(content, ended_with_crlf)``.

        *content* excludes the line ending.  Returns ``None`` when no whole
        line is buffered yet and ``LINE_TOO_LONG`` (once per line) when the
        line, line end included, exceeds *max_line* octets; ``dropped`` then
        holds its first octets.  With *crlf_only* only CRLF ends a line
        (RFC 5321 §2.3.8), so the content may hold bare LFs and
        ``ended_with_crlf`` is always true.
        """
        if crlf_only:
            line = self.crlf_line(max_line)
            return (line, True) if isinstance(line, bytes) else line
        data = self.data
        while self._discarding:
            end = data.find(b"\n")
            if end < 0:
                data.clear()
                return None
            del data[: end + 1]
            self._discarding = False
        end = data.find(b"\n", self._searched)
        if end < 0:
            if len(data) > max_line:
                return self._drop(len(data))
            self._searched = len(data)
            return None
        self._searched = 0
        if end + 1 > max_line:
            self.dropped = bytes(data[: min(end, _DROPPED_HEAD)])
            del data[: end + 1]
            return LINE_TOO_LONG
        crlf = end > 0 and data[end - 1] == 0x0D
        line = bytes(data[: end - 1 if crlf else end])
        del data[: end + 1]
        return line, crlf

    def crlf_line(self, max_line: int) -> bytes | LineTooLong | None:
        """``extract_line(max_line, crlf_only=True)`` giving the content
        alone (the server's hot path: no tuple per command line)."""
        data = self.data
        if self._discarding:
            end = data.find(b"\r\n")
            if end < 0:
                # Keep a final CR: its LF may come with the next data.
                del data[: len(data) - 1 if data.endswith(b"\r") else len(data)]
                return None
            del data[: end + 2]
            self._discarding = False
        end = data.find(b"\r\n", self._searched)
        if end < 0:
            if len(data) > max_line:
                # Keep a final CR, as above, for the discarding to find.
                return self._drop(len(data) - 1 if data.endswith(b"\r") else len(data))
            # The last octet may be the CR of a CRLF split across two calls.
            self._searched = max(len(data) - 1, 0)
            return None
        self._searched = 0
        if end + 2 > max_line:
            self.dropped = bytes(data[: min(end, _DROPPED_HEAD)])
            del data[: end + 2]
            return LINE_TOO_LONG
        line = bytes(data[:end])
        del data[: end + 2]
        return line

    def _drop(self, size: int) -> LineTooLong:
        """Drop an unfinished line of *size* octets and discard the rest of
        it as it arrives."""
        self.dropped = bytes(self.data[:_DROPPED_HEAD])
        del self.data[:size]
        self._searched = 0
        self._discarding = True
        return LINE_TOO_LONG
