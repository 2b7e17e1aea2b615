"""ReceiveBuffer's CRLF-only lines and the head of a dropped line
(RFC 5321 §2.3.8, §4.5.3.1.4; RFC 3030 §2)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtpproto._buffer import LINE_TOO_LONG, ReceiveBuffer
from smtpproto.testing.strategies import chunkings


def lines(buf: ReceiveBuffer, max_line: int, crlf_only: bool) -> list[object]:
    """Every line extract_line gives now, with the dropped head after each
    LINE_TOO_LONG."""
    out: list[object] = []
    while True:
        got = buf.extract_line(max_line, crlf_only=crlf_only)
        if got is None:
            return out
        out.append(("TOO LONG", buf.dropped) if got is LINE_TOO_LONG else got)


def test_crlf_only_a_bare_lf_is_part_of_the_line() -> None:
    # §2.3.8: "CR and LF MUST only occur together as CRLF".
    buf = ReceiveBuffer()
    buf.feed(b"NOOP\nRCPT TO:<v@example.net>\r\nQUIT\r\n")
    assert lines(buf, 512, True) == [(b"NOOP\nRCPT TO:<v@example.net>", True), (b"QUIT", True)]


def test_lf_mode_still_ends_lines_at_lf() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"NOOP\nQUIT\r\n")
    assert lines(buf, 512, False) == [(b"NOOP", False), (b"QUIT", True)]


def test_crlf_split_across_feeds_is_found() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"NOOP\r")
    assert buf.extract_line(512, crlf_only=True) is None
    buf.feed(b"\nQUIT\n")
    assert buf.extract_line(512, crlf_only=True) == (b"NOOP", True)
    assert buf.extract_line(512, crlf_only=True) is None  # a bare LF ends nothing
    buf.feed(b"\r\n")
    assert buf.extract_line(512, crlf_only=True) == (b"QUIT\n", True)


def test_crlf_only_line_too_long_when_complete() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"x" * 9 + b"\r\nok\r\n")
    assert lines(buf, 10, True) == [("TOO LONG", b"x" * 9), (b"ok", True)]
    buf.feed(b"x" * 8 + b"\r\n")
    assert lines(buf, 10, True) == [(b"x" * 8, True)]


def test_crlf_only_unfinished_line_is_dropped_then_discarded_to_crlf() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"BDAT 13 LAST" + b" " * 20)
    assert lines(buf, 30, True) == [("TOO LONG", b"BDAT 13 LAST    ")]
    assert buf.data == b""
    # Bare LFs do not end the dropped line; only its CRLF does.
    buf.feed(b"more\nQUIT\n")
    assert lines(buf, 30, True) == []
    buf.feed(b"\r\nNOOP\r\n")
    assert lines(buf, 30, True) == [(b"NOOP", True)]


def test_a_cr_at_the_end_of_a_dropped_line_waits_for_its_lf() -> None:
    # The CR that ends what was dropped, or what is discarded, is kept: its
    # LF may be the first octet of the next call.
    buf = ReceiveBuffer()
    buf.feed(b"x" * 40 + b"\r")
    assert lines(buf, 30, True) == [("TOO LONG", b"x" * 16)]
    buf.feed(b"\nNOOP\r\n")
    assert lines(buf, 30, True) == [(b"NOOP", True)]
    buf.feed(b"y" * 40)
    assert lines(buf, 30, True) == [("TOO LONG", b"y" * 16)]
    buf.feed(b"yyy\r")
    assert lines(buf, 30, True) == []
    buf.feed(b"\nQUIT\r\n")
    assert lines(buf, 30, True) == [(b"QUIT", True)]


def test_dropped_head_is_read_after_the_leftover_is_discarded() -> None:
    """The over-long BDAT line that follows the end of an earlier over-long
    line is recognised by its own first octets (the head used to be read
    before the leftover was gone, and came out empty)."""
    for crlf_only, end in ((True, b"\r\n"), (False, b"\n")):
        buf = ReceiveBuffer()
        buf.feed(b"X" * 100)
        assert lines(buf, 50, crlf_only) == [("TOO LONG", b"X" * 16)]
        buf.feed(b"tail" + end + b"BDAT 13 LAST" + b" " * 100 + b"\r\nQUIT\r\n")
        assert lines(buf, 50, crlf_only) == [("TOO LONG", b"BDAT 13 LAST    "), (b"QUIT", True)]


def test_lf_mode_dropped_head_of_complete_and_unfinished_lines() -> None:
    buf = ReceiveBuffer()
    assert buf.dropped == b""
    buf.feed(b"AUTH PLAIN " + b"Q" * 20 + b"\n")
    assert lines(buf, 20, False) == [("TOO LONG", b"AUTH PLAIN QQQQQ")]
    buf.feed(b"EHLO " + b"e" * 30)
    assert lines(buf, 20, False) == [("TOO LONG", b"EHLO eeeeeeeeeee")]


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=6), st.data())
def test_crlf_only_lines_are_the_crlf_split_whatever_the_chunking(
    parts: list[bytes], data: st.DataObject
) -> None:
    """What a peer that splits at CRLF only sees is what the buffer gives,
    however the input is cut (no line is long enough to be dropped)."""
    stream = b"\r\n".join(parts) + b"\r\n"
    buf = ReceiveBuffer()
    got: list[object] = []
    for chunk in data.draw(chunkings(stream)):
        buf.feed(chunk)
        got += lines(buf, 512, True)
    assert got == [(part, True) for part in stream.split(b"\r\n")[:-1]]
    assert buf.data == b""
