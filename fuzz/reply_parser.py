#!/usr/bin/env python3
"""Fuzz target: the client's reply parser and the EHLO capability reader.

Theory of operation
-------------------
Octet 0 bounds the lines of one reply (1-16); the rest is reply lines,
cut at LF (a CR before it is dropped, as the receive buffer does).  The
``ReplyParser`` must return a ``Reply``, ``None`` (more lines to come) or
raise ``RemoteProtocolError``, and stop accepting after its first error
(the session is over).  Every reply it builds must pass the public
constructor, and survive the trip back: written by the server's
``format_reply`` (RFC 5321 §4.2, RFC 2034 §4 enhanced codes on every
line), it parses again to an equal reply.  A 250 reply is also read as an
EHLO reply by ``Capabilities``, whose accessors must not raise whatever
the server listed (RFC 1870 SIZE, RFC 9422 LIMITS, RFC 4954 AUTH).
"""

from __future__ import annotations

from smtpproto import Capabilities, RemoteProtocolError, Reply
from smtpproto._replies import ReplyParser, format_reply

from harness import fuzz_main
from oracle import InvariantViolation, revalidate

__all__ = ["run", "test_one_input"]


def _reparse(reply: Reply) -> None:
    wire = format_reply(reply)
    parser = ReplyParser(len(reply.text))
    lines = wire.split(b"\r\n")
    if lines[-1] != b"":
        raise InvariantViolation(f"{reply!r} written as {wire!r}")
    again: Reply | None = None
    for index, line in enumerate(lines[:-1]):
        try:
            again = parser.feed(line)
        except RemoteProtocolError as exc:
            raise InvariantViolation(f"{reply!r} written as {wire!r}, refused: {exc}") from exc
        if (again is None) != (index < len(lines) - 2):
            raise InvariantViolation(f"{reply!r} written as {wire!r} ends on line {index}")
    if again != reply:
        raise InvariantViolation(f"{reply!r} -> {wire!r} -> {again!r}")


def _capabilities(reply: Reply) -> None:
    caps = Capabilities.from_reply(reply)
    _ = (caps.size, caps.limits, caps.auth_mechanisms)
    for keyword in caps.keywords:
        if keyword not in caps:
            raise InvariantViolation(f"{keyword!r} listed but not offered")


def run(data: bytes) -> list[Reply]:
    """Parse the lines of *data*; return the replies built."""
    max_lines = (data[0] % 16) + 1 if data else 4
    parser = ReplyParser(max_lines)
    replies: list[Reply] = []
    for line in data[1:].split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            reply = parser.feed(line)
        except RemoteProtocolError:
            break  # the session is over
        if reply is None:
            continue
        revalidate(reply)
        if len(reply.text) > max_lines:
            raise InvariantViolation(f"{len(reply.text)} lines accepted, {max_lines} allowed")
        _reparse(reply)
        if reply.code == 250:
            _capabilities(reply)
        replies.append(reply)
    return replies


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point."""
    run(data)


if __name__ == "__main__":
    fuzz_main(test_one_input)
