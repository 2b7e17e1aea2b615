"""Dot-stuffing (DotStuffer), unstuffing (DotUnstuffer) and the bounded
ReceiveBuffer, case by case (RFC 5321 §4.5.2, §2.3.8, §4.5.3.1)."""

from __future__ import annotations

import pytest

from smtpproto import LocalProtocolError
from smtpproto._buffer import LINE_TOO_LONG, ReceiveBuffer
from smtpproto._data import END_OF_DATA, DotStuffer, DotUnstuffer


def stuff_all(*chunks: bytes, max_line: int | None = 1000) -> bytes:
    stuffer = DotStuffer(max_line)
    return b"".join(stuffer.stuff(chunk) for chunk in chunks) + stuffer.end()


def pull(unstuffer: DotUnstuffer, buf: bytearray) -> list[object]:
    """Everything ``extract`` gives until it needs data or the data ended."""
    out: list[object] = []
    while True:
        result = unstuffer.extract(buf)
        if result is None:
            return out
        out.append(result)
        if result is END_OF_DATA:
            return out


def unstuff_pieces(
    *pieces: bytes, max_line: int | None = None
) -> tuple[DotUnstuffer, list[object], bytearray]:
    unstuffer = DotUnstuffer(max_line)
    buf = bytearray()
    out: list[object] = []
    for piece in pieces:
        buf += piece
        out += pull(unstuffer, buf)
    return unstuffer, out, buf


# -- DotStuffer ---------------------------------------------------------------


class TestDotStuffer:
    def test_first_line_is_stuffed(self) -> None:
        assert stuff_all(b".hello\r\n") == b"..hello\r\n.\r\n"

    def test_every_line_is_stuffed(self) -> None:
        assert stuff_all(b"a\r\n.b\r\n..c\r\nd.\r\n") == b"a\r\n..b\r\n...c\r\nd.\r\n.\r\n"

    def test_line_that_is_only_a_dot(self) -> None:
        assert stuff_all(b".") == b"..\r\n.\r\n"
        assert stuff_all(b"a\r\n.\r\nb\r\n") == b"a\r\n..\r\nb\r\n.\r\n"

    def test_terminator_inside_the_body_is_defused(self) -> None:
        wire = stuff_all(b"a\r\n.\r\nMAIL FROM:<x@y>\r\n")
        assert wire == b"a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n"
        assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3

    def test_dot_at_the_start_of_the_next_chunk(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(b"a\r\n") == b"a\r\n"
        assert stuffer.stuff(b".b") == b"..b"

    def test_dot_in_the_middle_of_a_line_across_chunks(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(b"a") == b"a"
        assert stuffer.stuff(b".b") == b".b"

    def test_cr_at_chunk_end_then_lf(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(b"a\r") == b"a"
        assert stuffer.stuff(b"\nb") == b"\r\nb"
        assert stuffer.end() == b"\r\n.\r\n"

    def test_cr_at_chunk_end_then_dot(self) -> None:
        # The held CR was bare: it becomes CRLF and the dot now starts a line.
        stuffer = DotStuffer()
        assert stuffer.stuff(b"a\r") == b"a"
        assert stuffer.stuff(b".b\r\n") == b"\r\n..b\r\n"

    def test_cr_at_chunk_end_then_lf_then_dot(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(b"a\r") == b"a"
        assert stuffer.stuff(b"\n.") == b"\r\n.."

    def test_cr_alone_in_chunks(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(b"\r") == b""
        assert stuffer.stuff(b"\r") == b"\r\n"  # the first CR was bare
        assert stuffer.end() == b"\r\n.\r\n"  # so was the second

    def test_cr_at_the_very_end(self) -> None:
        assert stuff_all(b"abc\r") == b"abc\r\n.\r\n"
        assert stuff_all(b"\r") == b"\r\n.\r\n"

    def test_bare_cr_and_bare_lf_become_crlf(self) -> None:
        assert stuff_all(b"a\rb\nc\r\n") == b"a\r\nb\r\nc\r\n.\r\n"
        assert stuff_all(b"\r\r\n") == b"\r\n\r\n.\r\n"
        assert stuff_all(b"\n\r") == b"\r\n\r\n.\r\n"
        assert stuff_all(b"x\n.\ny") == b"x\r\n..\r\ny\r\n.\r\n"

    def test_crlf_content_is_left_alone(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(b"a\r\nb\r\n") == b"a\r\nb\r\n"

    def test_final_crlf_added_when_missing(self) -> None:
        assert stuff_all(b"abc") == b"abc\r\n.\r\n"
        assert stuff_all(b"abc\r\n") == b"abc\r\n.\r\n"
        assert stuff_all(b"abc\n") == b"abc\r\n.\r\n"

    def test_empty_message(self) -> None:
        assert stuff_all() == b".\r\n"
        assert stuff_all(b"", b"") == b".\r\n"

    def test_end_resets_for_the_next_message(self) -> None:
        stuffer = DotStuffer()
        stuffer.stuff(b"abc")
        assert stuffer.end() == b"\r\n.\r\n"
        assert stuffer.stuff(b".x") == b"..x"
        assert stuffer.end() == b"\r\n.\r\n"

    def test_memoryview_and_bytearray_accepted(self) -> None:
        stuffer = DotStuffer()
        assert stuffer.stuff(bytearray(b".a")) == b"..a"
        assert stuffer.stuff(memoryview(b"\nb")) == b"\r\nb"

    def test_line_limit_names_the_limit(self) -> None:
        stuffer = DotStuffer(max_line=10)
        assert stuffer.stuff(b"x" * 8 + b"\r\n") == b"x" * 8 + b"\r\n"
        with pytest.raises(LocalProtocolError, match=r"11 octets exceeds the limit of 10"):
            stuffer.stuff(b"x" * 9)

    def test_line_limit_across_chunks(self) -> None:
        stuffer = DotStuffer(max_line=10)
        stuffer.stuff(b"xxxxx")
        with pytest.raises(LocalProtocolError, match="limit of 10"):
            stuffer.stuff(b"xxxx\r\nab")

    def test_line_limit_middle_line(self) -> None:
        stuffer = DotStuffer(max_line=10)
        with pytest.raises(LocalProtocolError, match="12 octets"):
            stuffer.stuff(b"a\r\n" + b"m" * 10 + b"\r\nb")

    def test_line_limit_does_not_count_the_stuffing_dot(self) -> None:
        # §4.5.3.1.6 counts the text line; the transparency dot is not text.
        stuffer = DotStuffer(max_line=10)
        assert stuffer.stuff(b"." + b"x" * 7 + b"\r\n") == b".." + b"x" * 7 + b"\r\n"

    def test_line_limit_with_held_cr(self) -> None:
        stuffer = DotStuffer(max_line=10)
        assert stuffer.stuff(b"x" * 8 + b"\r") == b"x" * 8
        assert stuffer.stuff(b"\n" + b"y" * 8) == b"\r\n" + b"y" * 8
        with pytest.raises(LocalProtocolError):
            stuffer.stuff(b"y")

    def test_line_limit_counts_bare_line_ends_as_ends(self) -> None:
        stuffer = DotStuffer(max_line=10)
        assert stuffer.stuff(b"x" * 8 + b"\n" + b"y" * 8) == b"x" * 8 + b"\r\n" + b"y" * 8

    def test_no_line_limit(self) -> None:
        assert stuff_all(b"x" * 5000, max_line=None) == b"x" * 5000 + b"\r\n.\r\n"

    def test_refused_chunk_leaves_the_state_unchanged(self) -> None:
        # LocalProtocolError promises "the connection's state is unchanged":
        # after a refused chunk the stuffer goes on as if it never came.
        stuffer = DotStuffer(max_line=10)
        assert stuffer.stuff(b"abc\r") == b"abc"
        with pytest.raises(LocalProtocolError):
            stuffer.stuff(b"x" * 20)
        assert stuffer.stuff(b"\n.d") == b"\r\n..d"
        assert stuffer.end() == b"\r\n.\r\n"

    def test_refused_chunk_does_not_poison_the_line_length(self) -> None:
        stuffer = DotStuffer(max_line=10)
        with pytest.raises(LocalProtocolError):
            stuffer.stuff(b"x" * 20)
        assert stuffer.stuff(b"\r\n") == b"\r\n"
        assert stuffer.stuff(b"12345678") == b"12345678"


# -- DotUnstuffer -------------------------------------------------------------


class TestDotUnstuffer:
    def test_terminator_at_the_very_start(self) -> None:
        unstuffer, out, buf = unstuff_pieces(b".\r\nQUIT\r\n")
        assert out == [END_OF_DATA]
        assert buf == b"QUIT\r\n"
        assert unstuffer.size == 0

    def test_partial_terminator_at_the_start_is_held(self) -> None:
        unstuffer = DotUnstuffer()
        buf = bytearray()
        for piece in (b".", b"\r"):
            buf += piece
            assert unstuffer.extract(buf) is None
        assert unstuffer.extract(bytearray()) is None
        buf += b"\n"
        assert unstuffer.extract(buf) is END_OF_DATA
        assert buf == b""

    def test_first_line_unstuffed(self) -> None:
        _, out, buf = unstuff_pieces(b"..x\r\n.\r\n")
        assert out == [b".x\r\n", END_OF_DATA]
        _, out, _ = unstuff_pieces(b".x\r\n.\r\n")
        assert out == [b"x\r\n", END_OF_DATA]

    def test_first_line_dot_split_from_the_rest(self) -> None:
        _, out, _ = unstuff_pieces(b".", b".", b"\r\n.\r\n")
        assert b"".join(item for item in out if isinstance(item, bytes)) == b".\r\n"
        assert out[-1] is END_OF_DATA

    def test_every_line_unstuffed(self) -> None:
        unstuffer, out, _ = unstuff_pieces(b"a\r\n..b\r\n...\r\nc.\r\n.\r\n")
        assert out == [b"a\r\n.b\r\n..\r\nc.\r\n", END_OF_DATA]
        assert unstuffer.size == len(b"a\r\n.b\r\n..\r\nc.\r\n")
        assert not unstuffer.bare_line_ending

    def test_terminator_in_the_middle_leaves_the_rest(self) -> None:
        _, out, buf = unstuff_pieces(b"a\r\n.\r\nRSET\r\n")
        assert out == [b"a\r\n", END_OF_DATA]
        assert buf == b"RSET\r\n"

    @pytest.mark.parametrize("partial", [b"\r", b"\r\n", b"\r\n.", b"\r\n.\r"])
    def test_partial_terminators_are_held_back(self, partial: bytes) -> None:
        unstuffer = DotUnstuffer()
        buf = bytearray(b"abc" + partial)
        assert unstuffer.extract(buf) == b"abc"
        assert buf == partial
        assert unstuffer.extract(buf) is None
        buf += b".\r\n"[len(partial) - 2 :] if len(partial) >= 2 else b"\n.\r\n"
        rest = pull(unstuffer, buf)
        assert rest[-1] is END_OF_DATA
        assert b"".join(item for item in rest if isinstance(item, bytes)) == b"\r\n"

    def test_held_back_dot_line_that_goes_on(self) -> None:
        # "\r\n.\r" held back, then not an LF: the line ".\rb" had a dot
        # stripped (it has other characters) and holds a bare CR.
        unstuffer, out, _ = unstuff_pieces(b"a\r\n.\r", b"b\r\n.\r\n")
        assert out == [b"a", b"\r\n\rb\r\n", END_OF_DATA]
        assert unstuffer.bare_line_ending

    def test_held_back_crlf_then_stuffed_dot(self) -> None:
        _, out, _ = unstuff_pieces(b"a\r\n", b"..b\r\n", b".\r\n")
        assert b"".join(item for item in out if isinstance(item, bytes)) == b"a\r\n.b\r\n"
        assert out[-1] is END_OF_DATA

    @pytest.mark.parametrize(
        "smuggled",
        [
            b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\n..\n",
            b"\r\n\x00.\r\n",
        ],
    )
    def test_only_crlf_dot_crlf_ends_the_data(self, smuggled: bytes) -> None:
        data = b"a" + smuggled + b"MAIL FROM:<evil@example.org>\r\n"
        unstuffer, out, buf = unstuff_pieces(data + b".\r\nNEXT")
        assert out[-1] is END_OF_DATA
        assert buf == b"NEXT"
        content = b"".join(item for item in out if isinstance(item, bytes))
        assert b"MAIL FROM:<evil@example.org>\r\n" in content

    def test_bare_lf_detected(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"a\nb\r\n.\r\n")
        assert unstuffer.bare_line_ending

    def test_bare_cr_detected(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"a\rb\r\n.\r\n")
        assert unstuffer.bare_line_ending

    def test_crlf_split_across_chunks_is_not_bare(self) -> None:
        unstuffer, out, _ = unstuff_pieces(b"a\r", b"\nb\r", b"\n.\r", b"\n")
        assert not unstuffer.bare_line_ending
        assert out[-1] is END_OF_DATA

    def test_bare_cr_at_a_chunk_boundary(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"a\r", b"b")
        assert unstuffer.bare_line_ending

    def test_bare_lf_at_a_chunk_boundary(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"a", b"\nb")
        assert unstuffer.bare_line_ending

    def test_bare_line_ending_stays_set(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"a\n", b"b\r\n", b"c\r\n.\r\n")
        assert unstuffer.bare_line_ending

    def test_size_counts_unstuffed_octets(self) -> None:
        unstuffer, out, _ = unstuff_pieces(b"..a\r", b"\n..b", b"\r\n.\r\n")
        content = b"".join(item for item in out if isinstance(item, bytes))
        assert content == b".a\r\n.b\r\n"
        assert unstuffer.size == len(content) == 8

    def test_longest_line_across_chunks(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"abc", b"de\r\nf", b"\r\n.\r\n", max_line=1000)
        assert unstuffer.longest_line == 7

    def test_longest_line_excludes_the_stuffing_dot(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"..abc\r\n.\r\n", max_line=1000)
        assert unstuffer.longest_line == 6

    def test_longest_line_later_line(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"a\r\n" + b"b" * 20 + b"\r\nc\r\n.\r\n", max_line=1000)
        assert unstuffer.longest_line == 22

    def test_longest_line_not_tracked_without_limit(self) -> None:
        unstuffer, _, _ = unstuff_pieces(b"x" * 50 + b"\r\n.\r\n")
        assert unstuffer.longest_line == 0

    def test_nothing_but_a_cr_needs_more_data(self) -> None:
        unstuffer, out, buf = unstuff_pieces(b"a", b"\r")
        assert out == [b"a"]
        assert buf == b"\r"
        assert unstuffer.extract(buf) is None


# -- ReceiveBuffer -------------------------------------------------------------


class TestReceiveBuffer:
    def test_lines_and_their_endings(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"EHLO x\r\nNOOP\n\r\n\nrest")
        assert buf.extract_line(512) == (b"EHLO x", True)
        assert buf.extract_line(512) == (b"NOOP", False)
        assert buf.extract_line(512) == (b"", True)
        assert buf.extract_line(512) == (b"", False)
        assert buf.extract_line(512) is None
        assert len(buf) == 4

    def test_bare_cr_inside_a_line_is_content(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"a\rb\r\n")
        assert buf.extract_line(512) == (b"a\rb", True)

    def test_line_completed_by_later_feeds(self) -> None:
        buf = ReceiveBuffer()
        for byte in b"NOOP\r":
            buf.feed(bytes([byte]))
            assert buf.extract_line(512) is None
        buf.feed(memoryview(b"\n"))
        assert buf.extract_line(512) == (b"NOOP", True)
        assert len(buf) == 0

    def test_line_at_the_limit_is_accepted(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"x" * 8 + b"\r\n")
        assert buf.extract_line(10) == (b"x" * 8, True)

    def test_complete_overlong_line(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"x" * 9 + b"\r\nok\r\n")
        assert buf.extract_line(10) is LINE_TOO_LONG
        assert buf.extract_line(10) == (b"ok", True)
        assert buf.extract_line(10) is None

    def test_growing_overlong_line_reported_once_then_resync(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"x" * 10)
        assert buf.extract_line(10) is None  # could still be 10 with no end
        buf.feed(b"x")
        assert buf.extract_line(10) is LINE_TOO_LONG
        assert len(buf) == 0  # memory released
        for _ in range(3):
            buf.feed(b"y" * 100)
            assert buf.extract_line(10) is None
            assert len(buf) == 0
        buf.feed(b"tail\r\nok\r\n")
        assert buf.extract_line(10) == (b"ok", True)
        assert buf.extract_line(10) is None

    def test_resync_when_the_end_arrives_with_the_next_line(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"z" * 50)
        assert buf.extract_line(10) is LINE_TOO_LONG
        buf.feed(b"zz\nnext\r\n")
        assert buf.extract_line(10) == (b"next", True)

    def test_resync_and_then_another_overlong_line(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"z" * 50)
        assert buf.extract_line(10) is LINE_TOO_LONG
        buf.feed(b"\n" + b"w" * 11)
        assert buf.extract_line(10) is LINE_TOO_LONG
        buf.feed(b"\r\nok\r\n")
        assert buf.extract_line(10) == (b"ok", True)

    def test_search_position_is_remembered(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"abc")
        assert buf.extract_line(512) is None
        assert buf._searched == 3  # the next search starts after "abc"
        buf.feed(b"de")
        assert buf.extract_line(512) is None
        assert buf._searched == 5
        buf.feed(b"\n")
        assert buf.extract_line(512) == (b"abcde", False)
        assert buf._searched == 0

    def test_consume_resets_the_search_position(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"abc")
        assert buf.extract_line(512) is None
        assert buf.consume(1) == b"a"
        buf.feed(b"\n")
        # Had the position (3) survived, the LF now at index 2 would be missed.
        assert buf.extract_line(512) == (b"bc", False)

    def test_consume(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(bytearray(b"0123456789"))
        assert buf.consume(4) == b"0123"
        assert len(buf) == 6
        assert buf.consume(100) == b"456789"
        assert len(buf) == 0
