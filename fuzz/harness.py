"""The fuzz input format and the atheris launcher shared by the targets.

Theory of operation
-------------------
A fuzz input for a core target is a real byte stream with two octets in
front and split marks inside, so that a seed is a readable transcript and
the fuzzer can still move every cut:

* octet 0, the *mode*: its low four bits pick the target's configuration
  (a server configuration, or a client script), and bit 6 (``0x40``) ends
  the stream with EOF.  In the seeds, ``"0"``-``"9"`` are modes 0-9 without
  EOF and ``"p"``-``"y"`` the same with EOF.
* octet 1, the *policy*: target-specific switches (which commands the
  server refuses, which extensions the client uses); ``"0"`` is each
  target's plain, everything-accepted behaviour.
* the rest is the stream, cut into ``receive_data()`` calls at every
  :data:`SPLIT` (``FF FE``, which never occurs in UTF-8 text); the marks
  themselves are dropped, and so are empty pieces, since ``b""`` would
  mean EOF.

:func:`fuzz_main` runs a target under atheris: it instruments the code
of smtpproto (already loaded) for coverage, hands
libFuzzer the command line, and calls the target's ``test_one_input``.
atheris is imported only there, so the targets import and run without it
(``tests/test_fuzz_targets.py`` runs every seed that way).
"""

from __future__ import annotations

import gc
import importlib
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

__all__ = ["SPLIT", "FuzzInput", "decode", "encode", "fuzz_main"]

#: Where the stream is cut into separate ``receive_data()`` calls.
SPLIT = b"\xff\xfe"

_EOF_BIT = 0x40


@dataclass(frozen=True)
class FuzzInput:
    """A decoded fuzz input."""

    #: The configuration or script index (0-15; targets take it modulo
    #: their number of configurations).
    mode: int
    #: The target-specific policy octet.
    policy: int
    #: True when the stream ends with EOF.
    eof: bool
    #: The ``receive_data()`` calls, none empty.
    pieces: tuple[bytes, ...]


def decode(data: bytes) -> FuzzInput:
    """Read a fuzz input (any octets are a valid input)."""
    mode = data[0] if data else 0x30
    policy = data[1] if len(data) > 1 else 0x30
    pieces = tuple(piece for piece in data[2:].split(SPLIT) if piece)
    return FuzzInput(mode=mode & 0x0F, policy=policy, eof=bool(mode & _EOF_BIT), pieces=pieces)


def encode(mode: int, policy: int | str, pieces: Sequence[bytes], *, eof: bool = False) -> bytes:
    """Write a fuzz input with a printable mode octet (the seeds' form)."""
    if not 0 <= mode <= 9:
        raise ValueError("seed modes are 0-9")
    for piece in pieces:
        if not piece or SPLIT in piece:
            raise ValueError(f"a piece must be non-empty and hold no split mark: {piece[:20]!r}")
    policy_octet = ord(policy) if isinstance(policy, str) else policy
    header = bytes([(0x70 if eof else 0x30) + mode, policy_octet])
    return header + SPLIT.join(pieces)


def _ours(module: str | None) -> bool:
    # The core only: the oracle's and the driver's own branches would feed
    # libFuzzer coverage that says nothing about smtpproto.
    return (module or "").partition(".")[0] == "smtpproto"


class _Atheris(Protocol):
    """The part of atheris' interface the targets use (it has no stubs)."""

    def instrument_func(self, func: Callable[..., object]) -> object: ...

    def Setup(self, args: list[str], test_one_input: Callable[[bytes], None]) -> list[str]: ...

    def Fuzz(self) -> None: ...


def fuzz_main(test_one_input: Callable[[bytes], None]) -> None:
    """Run *test_one_input* under atheris with this process's arguments
    (libFuzzer's: corpus directories, ``-max_total_time=N``...)."""
    atheris = cast(_Atheris, importlib.import_module("atheris"))
    # Coverage of smtpproto only: instrumenting the standard library too
    # (atheris.instrument_all) takes minutes on a loaded machine and feeds
    # libFuzzer coverage that is not ours.
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and _ours(obj.__module__):
            atheris.instrument_func(obj)
            count += 1
    print(f"INFO: instrumented {count} functions of smtpproto", file=sys.stderr)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
