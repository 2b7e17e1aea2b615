# Theory of operation
# -------------------
# Message content between DATA's 354 and the final ``CRLF.CRLF`` (§4.1.1.4,
# §4.5.2), streamed in chunks in both directions.  Neither half ever holds
# more than one chunk plus four octets, and both work on whole chunks with
# ``bytes`` methods rather than a Python loop per line.  Which methods
# matters: a one-octet ``find``/``in``/``rfind`` and a ``replace`` whose
# *old* is one octet run on ``memchr`` (many GB/s), while a search for a
# longer pattern (``count(b"\r\n")``, ``find(b"\r\n.")``) looks at every
# few octets in turn (about 1 GB/s), and ``split`` pays for an object per
# piece.  The hot paths are built from the fast kind:
#
# * bare CR or LF: two memchr ``replace`` calls and a compare
#   (``_has_bare_line_ending``), not three counts;
# * the line limit: ``rfind`` calls that jump almost a whole line limit at
#   a time (``_lines_fit``), not a split of the chunk into lines;
# * dots at line starts (stuffing and unstuffing, and the terminator): a
#   memchr walk from dot to dot (``_line_start_dots``), which a chunk
#   without a dot (base64, say) passes at once; a chunk with many dots
#   (text, where they mostly sit inside lines) is split on ``CRLF.``
#   instead, one search pass.
#
# ``DotStuffer`` (client) normalises line endings to CRLF, doubles a leading
# dot on every line, the first included, and ends the data with CRLF ``.``
# CRLF, adding a CRLF when the content does not end with one (attack class
# 2, outbound smuggling).  Its state across chunks is whether the output is
# at the start of a line, whether a CR was held back because its LF may
# arrive in the next chunk, and how long the current line is.
#
# ``LineLimit`` (client) checks the same line limit on BDAT content, which
# goes out as it is (RFC 3030 §3: only BODY=BINARYMIME content may have
# lines over the limit of RFC 5321 §4.5.3.1.6).  There is no normalising
# there, so a CR that ends a chunk may be the first half of a CRLF split
# across two chunks: it is carried, not counted as a line that goes on.
#
# ``DotUnstuffer`` (server) finds the end of data *only* at CRLF ``.`` CRLF
# (attack class 1, inbound smuggling: ``LF.LF``, ``CR.CR``, ``LF.CRLF`` and
# friends are data).  A chunk it hands out never ends in a prefix of that
# terminator (CR, CRLF, CRLF ``.`` or CRLF ``.`` CR are held back), so every
# line start of a chunk but its first follows a CRLF inside it, and
# ``at_line_start`` covers the first.  The dots after a CRLF are stuffing
# dots to remove, but for the first one followed by CRLF: the terminator.
# Bare CR and bare LF are judged per chunk: a chunk never starts with the LF
# of a CR that ended the previous one, so the judgement is exact.
from __future__ import annotations

import enum

from ._errors import LocalProtocolError

__all__ = ["DotStuffer", "DotUnstuffer", "LineLimit", "END_OF_DATA"]


class _End(enum.Enum):
    END_OF_DATA = "END_OF_DATA"


#: Returned by ``DotUnstuffer.extract`` when the terminator was consumed.
END_OF_DATA = _End.END_OF_DATA


def _has_bare_line_ending(chunk: bytes) -> bool:
    """True when *chunk* holds a CR not followed by LF or an LF not after CR.

    Removing every CR and then writing CRLF for every LF gives a string in
    which CR and LF only come as CRLF pairs; it equals *chunk* exactly when
    *chunk* was made that way already (§2.3.8: CRLF is the only line end).
    Both ``replace`` calls have a one-octet *old*, so they run on memchr.
    """
    return chunk.replace(b"\r", b"").replace(b"\n", b"\r\n") != chunk


def _longest_line(chunk: bytes, carry: int) -> tuple[int, int]:
    """Return (longest line length, length of the unfinished last line).

    Lines are split at CRLF; *carry* is the length of the line the previous
    chunk left unfinished.  Exact, and one object per line: used where the
    exact figure is wanted (the server's ``longest_line``, an error message).
    """
    lines = chunk.split(b"\r\n")
    if len(lines) == 1:
        carry += len(lines[0])
        return carry, carry
    first = carry + len(lines[0])
    return max(first, max(map(len, lines))), len(lines[-1])


def _lines_fit(chunk: bytes, carry: int, limit: int, size: int | None = None) -> bool:
    """True when no line of *chunk*, CRLF included, is longer than *limit*.

    Every LF of *chunk* must end a CRLF (the stuffer has normalised it);
    *carry* is the length of the line the previous chunk left unfinished.
    The line lengths are the gaps between consecutive LFs, counting a
    virtual LF before the carried line and one after the unfinished last
    line (as if its CRLF came now, as the final one will).  Jumping each
    time to the *last* LF within *limit* of the previous one finds a gap
    over the limit exactly when there is one, in about ``len(chunk) /
    (limit - typical line)`` ``rfind`` calls.  *size* says where the
    chunk ends for this purpose when it is not ``len(chunk)`` (a final CR
    held back: its LF may come next).
    """
    end = (len(chunk) if size is None else size) + 1
    last = -1 - carry
    if end - last <= limit:
        return True
    rfind = chunk.rfind
    last = rfind(b"\n", 0, last + limit + 1)
    stop = end - limit  # an LF from here on is within the limit of the end
    while 0 <= last < stop:
        last = rfind(b"\n", last + 1, last + limit + 1)
    return last >= 0


#: Most dots ``_line_start_dots`` visits one by one before giving up: past
#: that, one ``split`` on CRLF. is cheaper than a Python step per dot.
_WALK_LIMIT = 16


def _line_start_dots(data: bytes) -> list[int] | None:
    """The offsets of the dots of *data* that follow a CRLF, or None when
    there are more than ``_WALK_LIMIT`` dots to visit.

    Each step is a memchr ``find`` for the next dot, so data with few dots
    (none, in base64) costs next to nothing, whatever its size.  The two
    octets after a dot cannot start a line (the dot would have to be the
    CR or the LF before it), so a run of dots, like a stuffed ``..``,
    counts once.
    """
    starts: list[int] = []
    find = data.find
    dot = find(b".")
    for _ in range(_WALK_LIMIT):
        if dot < 0:
            return starts
        if dot >= 2 and data[dot - 2 : dot] == b"\r\n":
            starts.append(dot)
        dot = find(b".", dot + 3)
    return None if dot >= 0 else starts


def _pieces(data: bytes, cuts: list[int], skip: int, stop: int) -> list[bytes]:
    """*data* up to *stop* cut at each offset of *cuts*; each piece after
    the first starts *skip* octets after its cut."""
    return [data[a:b] for a, b in zip([0, *(cut + skip for cut in cuts)], [*cuts, stop])]


class DotStuffer:
    """Client side: turn raw message content into DATA wire bytes."""

    __slots__ = ("max_line", "started", "_at_line_start", "_pending_cr", "_line_length")

    def __init__(self, max_line: int | None = 1000) -> None:
        #: Longest text line allowed, CRLF included (§4.5.3.1.6), or None.
        self.max_line = max_line
        #: True from the first chunk of a message to its end.
        self.started = False
        self._at_line_start = True
        self._pending_cr = False
        self._line_length = 0

    def stuff(self, data: bytes | bytearray | memoryview) -> bytes:
        """Normalise and stuff one chunk of content."""
        # The state changes only once the chunk is accepted: a refused chunk
        # (LocalProtocolError) leaves the stuffer as it was.
        chunk = bytes(data)  # no copy when it is bytes already
        if self._pending_cr:
            chunk = b"\r" + chunk
        pending_cr = chunk.endswith(b"\r")
        if pending_cr:
            chunk = chunk[:-1]
        if not chunk:
            self._pending_cr = pending_cr
            self.started = self.started or pending_cr
            return b""
        if _has_bare_line_ending(chunk):
            # §2.3.8: a client never sends a bare CR or LF; each becomes CRLF.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if self.max_line is not None:
            self._check_lines(chunk)
        self._pending_cr = pending_cr
        self.started = True
        # §4.5.2: "Before sending a line of mail text, the SMTP client checks
        # the first character of the line.  If it is a period, one additional
        # period is inserted at the beginning of the line."  Every LF is now
        # part of a CRLF, so the line starts are the chunk's first octet (if
        # a line starts there) and the octets after a CRLF.
        starts = _line_start_dots(chunk)
        if starts is None:
            chunk = b"\r\n..".join(chunk.split(b"\r\n."))
        elif starts:
            chunk = b".".join(_pieces(chunk, starts, 0, len(chunk)))
        if self._at_line_start and chunk[:1] == b".":
            chunk = b"." + chunk
        self._at_line_start = chunk.endswith(b"\n") or self._pending_cr
        return chunk

    def _check_lines(self, chunk: bytes) -> None:
        """Refuse *chunk* if it makes a line longer than ``max_line``, else
        carry the length of its unfinished last line to the next chunk."""
        assert self.max_line is not None
        if not _lines_fit(chunk, self._line_length, self.max_line):
            raise _line_too_long(chunk, self._line_length, self.max_line)
        last_lf = chunk.rfind(b"\n")
        if last_lf < 0:
            self._line_length += len(chunk)
        else:
            self._line_length = len(chunk) - last_lf - 1

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
        self.started = False
        return tail + b".\r\n"


def _line_too_long(chunk: bytes, carry: int, limit: int) -> LocalProtocolError:
    longest, _ = _longest_line(chunk, carry)
    return LocalProtocolError(
        f"message line of {longest + 2} octets exceeds the limit of "
        f"{limit} (RFC 5321 §4.5.3.1.6); encode the content "
        "(quoted-printable or base64) or raise max_line_length"
    )


class LineLimit:
    """Client side, BDAT: the line length limit on content sent as it is.

    RFC 3030 §3: without ``BODY=BINARYMIME``, BDAT content keeps the line
    limit of RFC 5321 §4.5.3.1.6 (1000 octets, CRLF included), as DATA
    content does.  Lines are counted between LFs; a CR that ends a chunk
    is held back as the possible start of a CRLF.
    """

    __slots__ = ("max_line", "_line_length", "_pending_cr")

    def __init__(self, max_line: int) -> None:
        #: Longest text line allowed, CRLF included.
        self.max_line = max_line
        self._line_length = 0
        self._pending_cr = False

    def check(self, chunk: bytes) -> None:
        """Raise ``LocalProtocolError`` if *chunk* makes a line longer than
        ``max_line``; otherwise note where its last line stands."""
        carry = self._line_length + self._pending_cr
        pending_cr = chunk.endswith(b"\r")
        size = len(chunk) - pending_cr
        if not _lines_fit(chunk, carry, self.max_line, size):
            raise _line_too_long(chunk, carry, self.max_line)
        last_lf = chunk.rfind(b"\n")
        self._line_length = carry + size if last_lf < 0 else size - last_lf - 1
        self._pending_cr = pending_cr


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
        data = bytes(buf)
        starts = _line_start_dots(data)
        if starts is None:
            return self._extract_split(buf, data)
        cut = len(data)
        for index, dot in enumerate(starts):
            after = data[dot + 1 : dot + 3]
            if after == b"\r\n":
                # The terminator.  Hand out the content up to and including
                # its CRLF; the ". CRLF" left in front of the buffer ends the
                # data on the next call.
                cut = dot
                self._at_line_start = True
                del starts[index:]
                break
            if after in (b"", b"\r"):
                # CRLF . or CRLF . CR at the very end: perhaps the terminator.
                cut = dot - 2
                del starts[index:]
                break
        else:
            # Only a CR or a CRLF at the end may start a terminator.
            if data.endswith(b"\r\n"):
                cut -= 2
            elif data.endswith(b"\r"):
                cut -= 1
        if cut == 0:
            return None
        del buf[:cut]
        return self._account(b"".join(_pieces(data, starts, 1, cut)))

    def _extract_split(self, buf: bytearray, data: bytes) -> bytes:
        # Many dots: one split on CRLF. instead of a walk from dot to dot.
        # Every CRLF. in *data* is a split point (the pattern cannot overlap
        # itself).  The terminator is the first split point followed by CRLF:
        # the piece after it starts with CRLF, or is empty with another split
        # point right behind it (CRLF . CRLF . ...).
        pieces = data.split(b"\r\n.")
        last = len(pieces) - 1
        for index in range(1, last + 1):
            piece = pieces[index]
            if piece[:2] == b"\r\n" or (not piece and index < last):
                # Content up to and including the terminator's CRLF, as above.
                chunk = b"\r\n".join(pieces[:index]) + b"\r\n"
                # One dot was dropped per split point before the terminator's.
                del buf[: len(chunk) + index - 1]
                self._at_line_start = True
                return self._account(chunk)
        # No terminator: hold back a prefix of one at the end (CRLF . and
        # CRLF . CR end the data as a split point with nothing or a CR after
        # it; CR and CRLF end the last piece).  The last piece is the piece
        # after a split point when it is empty or a CR, since the data holds
        # dots.
        held = 0
        tail = pieces[last]
        if tail in (b"", b"\r"):
            held = 3 + len(tail)
            del pieces[last]
        elif tail.endswith(b"\r\n"):
            held = 2
            pieces[last] = tail[:-2]
        elif tail.endswith(b"\r"):
            held = 1
            pieces[last] = tail[:-1]
        # The data holds more dots than a held-back tail, so there is content.
        del buf[: len(data) - held]
        return self._account(b"\r\n".join(pieces))

    def _account(self, chunk: bytes) -> bytes:
        """Note a bare line ending, the line lengths and the size of a chunk
        about to be handed out (already unstuffed: removing a dot after a
        CRLF neither makes nor breaks a CRLF pair)."""
        if not self.bare_line_ending and _has_bare_line_ending(chunk):
            self.bare_line_ending = True
        if self.max_line is not None:
            longest, self._line_length = _longest_line(chunk, self._line_length)
            self.longest_line = max(self.longest_line, longest + 2)
        self.size += len(chunk)
        return chunk
