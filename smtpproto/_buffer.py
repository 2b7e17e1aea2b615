# Theory of operation
# -------------------
# The receive buffer is a ``bytearray`` that remembers how far it has
# already searched for a line end, so feeding a long line a byte at a time
# costs linear, not quadratic, time (the lesson of h11's receive buffer).
#
# Lines end at LF.  The caller learns whether the LF was preceded by CR:
# RFC 5321 §2.3.8 makes CRLF the only line ending, so a bare LF line is
# reported to the caller (who refuses it, or accepts it in lenient mode)
# instead of being silently glued to the next line.
#
# Every line is bounded.  When a line grows past ``max_line`` octets the
# buffer drops what it holds, reports ``LINE_TOO_LONG`` once, and then
# discards input up to and including the next LF, so the session
# resynchronises at the next line (§4.5.3.1.4; attack class 7).  Memory
# therefore never exceeds ``max_line`` plus one ``receive_data`` call.
# ``head()`` lets the caller see how a line starts before it is dropped.
from __future__ import annotations

import enum

__all__ = ["ReceiveBuffer", "LineTooLong", "LINE_TOO_LONG"]


class LineTooLong(enum.Enum):
    """Marker returned once for a line that exceeded its bound."""

    LINE_TOO_LONG = "LINE_TOO_LONG"


LINE_TOO_LONG = LineTooLong.LINE_TOO_LONG


class ReceiveBuffer:
    """Bytes received and not yet consumed, with bounded line extraction."""

    __slots__ = ("data", "_searched", "_discarding")

    def __init__(self) -> None:
        self.data = bytearray()
        self._searched = 0
        self._discarding = False

    def __len__(self) -> int:
        return len(self.data)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self.data += data

    def head(self, count: int) -> bytes:
        """The first *count* octets of the line being collected; ``b""``
        while the rest of an over-long line is being dropped."""
        return b"" if self._discarding else bytes(self.data[:count])

    def consume(self, count: int) -> bytes:
        """Remove and return the first *count* bytes."""
        out = bytes(self.data[:count])
        del self.data[:count]
        self._searched = 0
        return out

    def extract_line(self, max_line: int) -> tuple[bytes, bool] | LineTooLong | None:
        """Return the next line as ``(content, ended_with_crlf)``.

        *content* excludes the line ending.  Returns ``None`` when no whole
        line is buffered yet and ``LINE_TOO_LONG`` (once per line) when the
        line, line end included, exceeds *max_line* octets.
        """
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
                data.clear()
                self._searched = 0
                self._discarding = True
                return LINE_TOO_LONG
            self._searched = len(data)
            return None
        self._searched = 0
        if end + 1 > max_line:
            del data[: end + 1]
            return LINE_TOO_LONG
        crlf = end > 0 and data[end - 1] == 0x0D
        line = bytes(data[: end - 1 if crlf else end])
        del data[: end + 1]
        return line, crlf
