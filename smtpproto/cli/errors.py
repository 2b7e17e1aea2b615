"""The exit statuses of the command line and the usage error."""

from __future__ import annotations

__all__ = ["UsageError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_TEMPFAIL"]

#: Every recipient accepted the message; the server ran and stopped cleanly.
EXIT_OK = 0
#: A permanent failure (a 5xx, a protocol or TLS error).
EXIT_FAILED = 1
#: Options that are wrong or cannot work together.
EXIT_USAGE = 2
#: Only temporary failures (4xx, connection lost): try again later
#: (``EX_TEMPFAIL`` of sysexits.h, as sendmail uses it).
EXIT_TEMPFAIL = 75


class UsageError(Exception):
    """The options are wrong or contradict each other (exit status 2)."""
