#!/usr/bin/env python3
"""Fuzz target: the server's command-line parser.

Theory of operation
-------------------
Octet 0's low bit picks lenient parsing; the rest is one command line
without its CRLF.  ``parse_command`` must return a command event or raise
``GrammarError`` carrying a usable reply (a 5xx code of §4.2.3 and an
RFC 3463 enhanced code of the same class); nothing else.  The server's
fast path for the common commands, ``parse_common``, must give None or
the very event ``parse_command`` gives (never a command it refuses).  A parsed command
must also survive the trip back: formatted as the client core writes it
(one line, CRLF at the end, no other CR, LF or NUL: attack class 4), it
parses again to an equal event.  Strictly parsed commands pass their
public constructor's validation (symmetric events).  This exercises the
RFC 5321 §4.1 grammar much faster than the whole server does.
"""

from __future__ import annotations

from smtpproto import LocalProtocolError
from smtpproto._commands import format_command, parse_command, parse_common
from smtpproto._replies import check_enhanced
from smtpproto._syntax import GrammarError

from harness import fuzz_main
from oracle import InvariantViolation, revalidate

__all__ = ["run", "test_one_input"]


def run(data: bytes) -> str:
    """Check one line; return ``"parsed"`` or ``"refused"``."""
    lenient = bool(data[:1] and data[0] & 1)
    line = data[1:]
    fast = parse_common(line, lenient)
    try:
        command = parse_command(line, lenient=lenient)
    except GrammarError as exc:
        if fast is not None:
            raise InvariantViolation(f"{line!r}: the fast path gave {fast!r}, the parser refused it") from exc
        if not (500 <= exc.code <= 555):
            raise InvariantViolation(f"{line!r} refused with code {exc.code}") from exc
        try:
            check_enhanced(exc.code, exc.enhanced)
        except LocalProtocolError as bad:
            raise InvariantViolation(f"{line!r} refused with {exc.enhanced}: {bad}") from exc
        return "refused"
    if fast is not None and fast != command:
        raise InvariantViolation(f"{line!r}: the fast path gave {fast!r}, the parser {command!r}")
    if not lenient:
        revalidate(command)
    wire = format_command(command)
    if not wire.endswith(b"\r\n") or wire.count(b"\n") != 1 or wire.count(b"\r") != 1:
        raise InvariantViolation(f"{command!r} formatted as {wire!r}")
    if b"\x00" in wire:
        raise InvariantViolation(f"NUL in {wire!r}")
    try:
        again = parse_command(wire[:-2], lenient=lenient)
    except GrammarError as exc:
        raise InvariantViolation(f"{command!r} written as {wire!r}, refused: {exc}") from exc
    if again != command:
        raise InvariantViolation(f"{line!r} -> {command!r} -> {wire!r} -> {again!r}")
    return "parsed"


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point."""
    run(data)


if __name__ == "__main__":
    fuzz_main(test_one_input)
