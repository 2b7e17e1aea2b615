"""The fast paths of the DATA content code (smtpproto._data), held to the
behaviour of the straightforward code they replaced.

``DotStuffer`` and ``DotUnstuffer`` work on whole chunks with memchr-speed
``bytes`` methods: a two-``replace`` test for bare CR/LF, ``rfind`` jumps
for the line limit, and a walk from dot to dot, or (past 16 dots in a
chunk) one ``split`` on ``CRLF.``, that unstuffs and finds the terminator
together.  Each path is checked here three ways: against ``_Reference*``
(the per-chunk ``count``/``split``/``replace`` code of the previous
version, kept as the oracle, so "behaviour unchanged" is tested chunk by
chunk, errors and state included), against RFC 5321 §4.5.2 read literally,
and at every split offset of the sequences where chunk boundaries bite
(CRLF.CRLF and its prefixes, CR|LF, a dot at a line start, a line exactly
at the limit), each with few dots and behind a line of many.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto import LocalProtocolError
from smtpproto._data import _WALK_LIMIT, END_OF_DATA, DotStuffer, DotUnstuffer
from smtpproto.testing import chunkings, message_bodies, split_points

# -- the oracle: the code these fast paths replaced ----------------------------


def _reference_bare(chunk: bytes) -> bool:
    crlf = chunk.count(b"\r\n")
    return chunk.count(b"\n") != crlf or chunk.count(b"\r") != crlf


def _reference_longest(chunk: bytes, carry: int) -> tuple[int, int]:
    lines = chunk.split(b"\r\n")
    if len(lines) == 1:
        carry += len(lines[0])
        return carry, carry
    return max(carry + len(lines[0]), max(map(len, lines))), len(lines[-1])


class _ReferenceStuffer:
    """DotStuffer as it was: three counts, a split per chunk, replace."""

    def __init__(self, max_line: int | None) -> None:
        self.max_line = max_line
        self.at_line_start = True
        self.pending_cr = False
        self.line_length = 0

    def stuff(self, data: bytes) -> bytes:
        chunk = (b"\r" if self.pending_cr else b"") + data
        pending_cr = chunk.endswith(b"\r")
        if pending_cr:
            chunk = chunk[:-1]
        if not chunk:
            self.pending_cr = pending_cr
            return b""
        if _reference_bare(chunk):
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if self.max_line is not None:
            longest, line_length = _reference_longest(chunk, self.line_length)
            if longest + 2 > self.max_line:
                raise LocalProtocolError(f"message line of {longest + 2} octets")
            self.line_length = line_length
        self.pending_cr = pending_cr
        chunk = chunk.replace(b"\n.", b"\n..")
        if self.at_line_start and chunk[:1] == b".":
            chunk = b"." + chunk
        self.at_line_start = chunk.endswith(b"\n") or self.pending_cr
        return chunk

    def end(self) -> bytes:
        tail = b"\r\n" if self.pending_cr or not self.at_line_start else b""
        self.pending_cr = False
        self.at_line_start = True
        self.line_length = 0
        return tail + b".\r\n"


class _ReferenceUnstuffer:
    """DotUnstuffer as it was: find the terminator, then replace."""

    def __init__(self, max_line: int | None) -> None:
        self.max_line = max_line
        self.size = 0
        self.bare_line_ending = False
        self.longest_line = 0
        self.at_line_start = True
        self.line_length = 0

    def extract(self, buf: bytearray) -> bytes | object | None:
        if self.at_line_start:
            if buf[:3] == b".\r\n":
                del buf[:3]
                return END_OF_DATA
            if len(buf) < 3 and b".\r\n".startswith(buf):
                return None
            self.at_line_start = False
            if buf[:1] == b".":
                del buf[:1]
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            cut = end + 2
            self.at_line_start = True
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
        if _reference_bare(chunk):
            self.bare_line_ending = True
        chunk = chunk.replace(b"\r\n.", b"\r\n")
        if self.max_line is not None:
            longest, self.line_length = _reference_longest(chunk, self.line_length)
            self.longest_line = max(self.longest_line, longest + 2)
        self.size += len(chunk)
        return chunk


# -- helpers -------------------------------------------------------------------


def split(data: bytes, points: Sequence[int]) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


def every_split(data: bytes) -> Iterable[list[bytes]]:
    """*data* whole, in two pieces at every offset, and one byte at a time."""
    yield [data]
    for offset in range(1, len(data)):
        yield [data[:offset], data[offset:]]
    yield [data[i : i + 1] for i in range(len(data))]


def compare_stuffing(chunks: Sequence[bytes], max_line: int | None) -> bytes | None:
    """Stuff *chunks* with both stuffers, asserting that they agree after
    every chunk (output, or a refusal that leaves the state as it was);
    return the whole output, or None if a chunk was refused."""
    fast, slow = DotStuffer(max_line), _ReferenceStuffer(max_line)
    out = bytearray()
    refused = False
    for chunk in chunks:
        try:
            expected = slow.stuff(chunk)
        except LocalProtocolError as exc:
            with pytest.raises(LocalProtocolError) as caught:
                fast.stuff(chunk)
            # Same octet count in the message ("message line of N octets").
            assert str(exc) in str(caught.value)
            refused = True
            continue
        assert fast.stuff(chunk) == expected
        out += expected
    end = slow.end()
    assert fast.end() == end
    return None if refused else bytes(out + end)


def feed_unstuffer(
    unstuffer: DotUnstuffer | _ReferenceUnstuffer, pieces: Sequence[bytes]
) -> tuple[list[object], int | None]:
    """Feed *pieces*, pulling after each; return every result of
    ``extract`` (None included) and the offset just past the terminator."""
    buf = bytearray()
    results: list[object] = []
    fed = 0
    for piece in pieces:
        buf += piece
        fed += len(piece)
        while True:
            result = unstuffer.extract(buf)
            results.append(result)
            if result is END_OF_DATA:
                return results, fed - len(buf)
            if result is None:
                break
    return results, None


def unstuff_both(
    pieces: Sequence[bytes], max_line: int | None
) -> tuple[bytes, int | None, DotUnstuffer]:
    """Unstuff *pieces* with both unstuffers, asserting that every call of
    ``extract`` gave the same result and the same counters; return the
    content, the end offset and the fast unstuffer."""
    fast, slow = DotUnstuffer(max_line), _ReferenceUnstuffer(max_line)
    fast_results, fast_end = feed_unstuffer(fast, pieces)
    slow_results, slow_end = feed_unstuffer(slow, pieces)
    assert fast_results == slow_results
    assert fast_end == slow_end
    assert (fast.size, fast.bare_line_ending, fast.longest_line) == (
        slow.size,
        slow.bare_line_ending,
        slow.longest_line,
    )
    content = b"".join(item for item in fast_results if isinstance(item, bytes))
    return content, fast_end, fast


def rfc_unstuff(data: bytes) -> tuple[bytes, int | None]:
    """RFC 5321 §4.5.2 read literally: the data ends at the first line that
    is only "." (lines end at CRLF); one leading dot goes from every other
    line."""
    stream = b"\r\n" + data
    at = stream.find(b"\r\n.\r\n")
    body = stream[2 : at + 2] if at >= 0 else data
    lines = [line[1:] if line.startswith(b".") else line for line in body.split(b"\r\n")]
    return b"\r\n".join(lines), (at + 3 if at >= 0 else None)


def has_bare(data: bytes) -> bool:
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is not None


# Octets where the fast paths branch: CR, LF, the dot, and a filler; and a
# run of dots that pushes a chunk past the dot-to-dot walk into the split.
DOTTY = st.lists(
    st.sampled_from(
        [
            b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"\r\n..", b".\r\n", b"xy",
            b"a..b..c..d..e..f..g..h..i",
        ]
    ),
    max_size=48,
).map(b"".join)

ANY_CONTENT = st.one_of(DOTTY, st.binary(max_size=64), message_bodies(max_line_length=None))

#: A line with more dots (inside it) than the dot-to-dot walk takes.
MANY_DOTS = b"w.." * (2 * _WALK_LIMIT) + b"\r\n"

TRICKY = [
    b"a\r\n.\r\nNEXT",  # the terminator
    b"a\r\n..\r\n.\r\nNEXT",  # a stuffed dot-only line, then the terminator
    b"a\r\n.b\r\n.\r\n",  # a stuffed line, then the terminator
    b"a\r\n.\r\n.b",  # the terminator, then a dot: the piece after it is empty
    b"\r\n.\r\r\n.\r\n",  # CRLF.CR with no LF, then the terminator
    b"x\r\n.\r\n.\r\n",  # two terminators in a row: the first one counts
    b"a.b\r\nc.d\r\n.\r\n",  # dots inside lines only
    b"a\rb\nc\r\n.\r\n",  # bare CR and bare LF, then the terminator
    b"\n.\n\r.\r\n.\n\r\n.\r\n",  # smuggling cousins, then the terminator
    b"...\r\n..\r\n.\r\n",  # dot lines at the very start
]


# -- DotUnstuffer ----------------------------------------------------------------


class TestUnstufferAgreesWithTheOldCode:
    @pytest.mark.parametrize("data", TRICKY + [MANY_DOTS + data for data in TRICKY])
    @pytest.mark.parametrize("max_line", [None, 1000, 4])
    def test_every_split_offset(self, data: bytes, max_line: int | None) -> None:
        whole, whole_end, _ = unstuff_both([data], max_line)
        assert (whole, whole_end) == rfc_unstuff(data)
        for pieces in every_split(data):
            assert unstuff_both(pieces, max_line)[:2] == (whole, whole_end)

    @pytest.mark.parametrize("data", TRICKY + [MANY_DOTS + TRICKY[1]])
    def test_every_three_way_split(self, data: bytes) -> None:
        whole = unstuff_both([data], None)[:2]
        for first in range(1, len(data)):
            for second in range(first + 1, len(data)):
                pieces = split(data, [first, second])
                assert unstuff_both(pieces, None)[:2] == whole

    @settings(deadline=None, max_examples=300)
    @given(ANY_CONTENT, st.data())
    def test_any_input_any_split(self, data: bytes, draw: st.DataObject) -> None:
        points = draw.draw(split_points(len(data)))
        max_line = draw.draw(st.sampled_from([None, 1000, 3, 8]))
        content, end, unstuffer = unstuff_both(split(data, points), max_line)
        expected, expected_end = rfc_unstuff(data)
        assert end == expected_end
        if end is None:
            # Up to four octets (a prefix of the terminator) are held back.
            assert expected.startswith(content) and len(expected) - len(content) <= 4
        else:
            assert content == expected
            assert unstuffer.bare_line_ending == has_bare(data[: end - 3])


class TestUnstufferPaths:
    """The branches of the fast code, each shown on its own."""

    def test_no_dot_hands_out_everything_but_a_final_crlf(self) -> None:
        unstuffer = DotUnstuffer()
        buf = bytearray(b"abc\r\ndef\r\n")
        assert unstuffer.extract(buf) == b"abc\r\ndef"
        assert buf == b"\r\n"

    def test_no_dot_holds_back_a_final_cr(self) -> None:
        unstuffer = DotUnstuffer()
        buf = bytearray(b"abc\r")
        assert unstuffer.extract(buf) == b"abc"
        assert buf == b"\r"
        assert unstuffer.extract(buf) is None

    def test_no_dot_whole_buffer_taken(self) -> None:
        unstuffer = DotUnstuffer()
        buf = bytearray(b"abc\r\ndef")
        assert unstuffer.extract(buf) == b"abc\r\ndef"
        assert buf == b""

    @pytest.mark.parametrize("partial", [b"\r\n.", b"\r\n.\r", b"\r\n", b"\r"])
    @pytest.mark.parametrize("lead", [b"", MANY_DOTS], ids=["walk", "split"])
    def test_dotted_buffer_holds_back_a_partial_terminator(
        self, partial: bytes, lead: bytes
    ) -> None:
        unstuffer = DotUnstuffer()
        buf = bytearray(lead + b"a.b\r\n..c" + partial)
        assert unstuffer.extract(buf) == lead + b"a.b\r\n.c"
        assert buf == partial
        assert unstuffer.extract(buf) is None
        assert unstuffer.size == len(lead + b"a.b\r\n.c")

    @pytest.mark.parametrize("partial", [b"\r\n.", b"\r\n.\r"])
    def test_dotted_buffer_that_is_only_a_partial_terminator(self, partial: bytes) -> None:
        unstuffer = DotUnstuffer()
        unstuffer.extract(bytearray(b"x"))  # no longer at the start of a line
        buf = bytearray(partial)
        assert unstuffer.extract(buf) is None
        assert buf == partial
        buf += b"\r\n.\r\n"[len(partial) :]
        assert unstuffer.extract(buf) == b"\r\n"
        assert unstuffer.extract(buf) is END_OF_DATA

    @pytest.mark.parametrize("lead", [b"", MANY_DOTS], ids=["walk", "split"])
    def test_terminator_right_after_a_stuffed_line_start(self, lead: bytes) -> None:
        # "\r\n.\r\n." : after the terminator's split point comes at once
        # another one (the split path sees an empty piece there).
        _, out, buf = _pull_all(lead + b"a\r\n.\r\n.b")
        assert out == [lead + b"a\r\n", END_OF_DATA]
        assert buf == b".b"

    @pytest.mark.parametrize("lead", [b"", MANY_DOTS], ids=["walk", "split"])
    def test_stuffed_dots_removed_before_the_terminator(self, lead: bytes) -> None:
        unstuffer, out, buf = _pull_all(lead + b"a\r\n..\r\n.b\r\n.\r\nRSET\r\n")
        assert out == [lead + b"a\r\n.\r\nb\r\n", END_OF_DATA]
        assert buf == b"RSET\r\n"
        assert unstuffer.size == len(lead + b"a\r\n.\r\nb\r\n")

    @pytest.mark.parametrize("runs", range(_WALK_LIMIT - 4, _WALK_LIMIT + 4))
    def test_either_side_of_the_walk_limit(self, runs: int) -> None:
        # Dots inside a line (the walk counts each ".." once), then stuffed
        # lines and the terminator: the same content whether the dots are
        # walked or the data is split.
        line = b"w.." * runs + b"\r\n"
        unstuffer, out, buf = _pull_all(line + b"..x\r\n.y\r\n.\r\nQUIT\r\n")
        assert out == [line + b".x\r\ny\r\n", END_OF_DATA]
        assert buf == b"QUIT\r\n"
        assert DotStuffer().stuff(line + b".x\r\n") == line + b"..x\r\n"

    @pytest.mark.parametrize("lead", [b"", MANY_DOTS], ids=["walk", "split"])
    def test_line_start_three_octets_after_another_dot(self, lead: bytes) -> None:
        # "x.CRLF.y": the second dot starts a line, right where the walk
        # looks again after the first.
        _, out, _ = _pull_all(lead + b"x.\r\n.y\r\n.\r\n")
        assert out == [lead + b"x.\r\ny\r\n", END_OF_DATA]
        assert DotStuffer().stuff(lead + b"x.\r\n.y") == lead + b"x.\r\n..y"

    def test_dots_inside_lines_stay(self) -> None:
        _, out, _ = _pull_all(b"a.b.c\r\nwww.example.org\r\n.\r\n")
        assert out == [b"a.b.c\r\nwww.example.org\r\n", END_OF_DATA]

    @pytest.mark.parametrize(
        ("content", "bare"),
        [
            (b"a\r\nb\r\n", False),
            (b"a\rb\r\n", True),
            (b"a\nb\r\n", True),
            (b"a\n\rb\r\n", True),  # LF then CR: the pair in the wrong order
            (b"a\r\r\nb\r\n", True),
            (b"a\r\n\nb\r\n", True),
            (b"a.\r\n.\nb\r\n", True),  # a bare LF after a stuffed line start
        ],
    )
    def test_bare_line_endings_with_and_without_dots(self, content: bytes, bare: bool) -> None:
        assert has_bare(content) is bare
        # With few dots, with many, and with none.
        for body in (content, MANY_DOTS + content, content.replace(b".", b"")):
            unstuffer, out, _ = _pull_all(body + b".\r\n")
            assert out[-1] is END_OF_DATA
            assert unstuffer.bare_line_ending is has_bare(body)


def _pull_all(data: bytes) -> tuple[DotUnstuffer, list[object], bytearray]:
    unstuffer = DotUnstuffer()
    buf = bytearray(data)
    out: list[object] = []
    while True:
        result = unstuffer.extract(buf)
        if result is None:
            return unstuffer, out, buf
        out.append(result)
        if result is END_OF_DATA:
            return unstuffer, out, buf


# -- DotStuffer ----------------------------------------------------------------


STUFF_TRICKY = [
    b".a\r\n.b\r\n..c\r\n",  # dots at line starts, the first line included
    b"a\r.b\n.c\r\n.",  # bare CR and bare LF before dots
    b"a.b.c\r\nwww.example.org",  # dots inside lines only
    b"x" * 8 + b"\r\n" + b"y" * 8,  # lines exactly at a limit of 10
    b"x" * 9 + b"\r\n",  # a line one over a limit of 10
    b"\r\r\n\n\r",  # a run of line ends in every order
]


class TestStufferAgreesWithTheOldCode:
    @pytest.mark.parametrize("data", STUFF_TRICKY + [MANY_DOTS + data for data in STUFF_TRICKY])
    @pytest.mark.parametrize("max_line", [None, 10, 11, 1000])
    def test_every_split_offset(self, data: bytes, max_line: int | None) -> None:
        whole = compare_stuffing([data], max_line)
        for chunks in every_split(data):
            assert compare_stuffing(chunks, max_line) == whole

    @settings(deadline=None, max_examples=300)
    @given(ANY_CONTENT, st.data())
    def test_any_input_any_split(self, data: bytes, draw: st.DataObject) -> None:
        chunks = draw.draw(chunkings(data))
        max_line = draw.draw(st.sampled_from([None, 1000, 3, 5, 9, 40]))
        wire = compare_stuffing(chunks, max_line)
        if wire is not None:
            normal = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
            if normal and not normal.endswith(b"\r\n"):
                normal += b"\r\n"
            stuffed = re.sub(rb"(?m)^\.", b"..", normal)
            assert wire == stuffed + b".\r\n"
            assert not has_bare(wire)

    @settings(deadline=None, max_examples=200)
    @given(st.lists(st.integers(0, 30), min_size=1, max_size=12), st.integers(3, 30), st.data())
    def test_line_limit_at_every_length(
        self, lengths: list[int], limit: int, draw: st.DataObject
    ) -> None:
        # Lines of the given lengths: refused exactly when one of them, CRLF
        # included, is longer than the limit, wherever the chunks are cut.
        data = b"".join(b"x" * length + b"\r\n" for length in lengths)
        chunks = draw.draw(chunkings(data))
        stuffer = DotStuffer(limit)
        too_long = any(length + 2 > limit for length in lengths)
        if too_long:
            with pytest.raises(LocalProtocolError, match=f"limit of {limit}"):
                for chunk in chunks:
                    stuffer.stuff(chunk)
        else:
            assert b"".join(stuffer.stuff(chunk) for chunk in chunks) == data
        assert compare_stuffing(chunks, limit) == (None if too_long else data + b".\r\n")


class TestStufferPaths:
    def test_line_limit_long_first_line_carried_from_the_previous_chunk(self) -> None:
        stuffer = DotStuffer(max_line=10)
        assert stuffer.stuff(b"x" * 7) == b"x" * 7
        # The carried line is already at 7: one more octet and its CRLF fit...
        assert stuffer.stuff(b"x\r\n") == b"x\r\n"
        stuffer.stuff(b"x" * 7)
        # ...two more do not, although the new chunk alone is short.
        with pytest.raises(LocalProtocolError, match="11 octets"):
            stuffer.stuff(b"xx\r\nshort\r\n")

    def test_line_limit_carry_longer_than_the_limit_window(self) -> None:
        # The carried line alone is within the limit; this chunk has no LF
        # near enough to end it.
        stuffer = DotStuffer(max_line=10)
        stuffer.stuff(b"x" * 8)
        with pytest.raises(LocalProtocolError, match="limit of 10"):
            stuffer.stuff(b"x" + b"\r\n")

    def test_line_limit_long_line_deep_in_a_big_chunk(self) -> None:
        lines = [b"y" * 76] * 2000
        lines[1500] = b"z" * 999
        with pytest.raises(LocalProtocolError, match="1001 octets"):
            DotStuffer(1000).stuff(b"\r\n".join(lines))
        lines[1500] = b"z" * 998
        data = b"\r\n".join(lines)
        assert DotStuffer(1000).stuff(data) == data

    def test_line_limit_unfinished_last_line(self) -> None:
        stuffer = DotStuffer(max_line=10)
        with pytest.raises(LocalProtocolError, match="11 octets"):
            stuffer.stuff(b"ok\r\n" + b"x" * 9)
        assert stuffer.stuff(b"ok\r\n" + b"x" * 8) == b"ok\r\n" + b"x" * 8

    def test_chunk_without_a_dot_is_left_as_it_is(self) -> None:
        data = b"abc\r\ndef\r\n" * 100
        assert DotStuffer().stuff(data) is data  # no copy either

    def test_dot_at_a_line_start_in_a_chunk_with_other_dots(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(b"a.b\r\n.c.d\r\n") == b"a.b\r\n..c.d\r\n"
        assert stuffer.stuff(b".e") == b"..e"
        assert stuffer.stuff(b".f") == b".f"  # not at a line start
