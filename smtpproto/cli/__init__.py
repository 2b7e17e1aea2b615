"""The command line ``python -m smtpproto``, as a library.

``serve`` (:mod:`.serve`), ``send`` (:mod:`.send`), ``demo``
(:mod:`.demo`) and ``probe`` (:mod:`.probe`), with what they are built from: the storage sinks
(:mod:`.sinks`), the trace header fields (:mod:`.received`), the
password-file AUTH handler (:mod:`.handler`), the adapters' run loops
(:mod:`.backends`) and the swaks-style transcript (:mod:`.transcript`).
:mod:`smtpproto.__main__` only parses the command line.
"""

from __future__ import annotations

from .errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, EXIT_USAGE, UsageError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TEMPFAIL", "EXIT_USAGE", "UsageError"]
