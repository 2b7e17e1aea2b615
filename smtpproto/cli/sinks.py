"""Where ``serve`` puts the messages it accepts.

Each sink takes the message as the server will keep it (the trace fields
followed by the content exactly as received: unstuffed, line ends
untouched) and stores it before the server answers 250, so a message the
client saw accepted survives a shutdown.  Sinks may be called from several
threads at once, and from several worker processes sharing one lock.

* :class:`MaildirSink`: one file per message in a Maildir (the standard
  library's :class:`mailbox.Maildir`, which writes to ``tmp/``, syncs and
  links into ``new/``; safe for several processes).
* :class:`MboxSink`: appends to an mbox file in the *mboxrd* dialect, in
  which every line matching ``^>*From `` gets one more ``>``, so reading
  the file back is lossless.  (:class:`mailbox.mbox` writes the lossy
  *mboxo* dialect, which quotes only ``From `` itself.)
* :class:`PrintSink`: writes each message to a stream (standard output) in
  the same mboxrd form, so the output can be saved and read as an mbox.
* :class:`DiscardSink`: accepts and forgets (a sink for load tests).
"""

from __future__ import annotations

import fcntl
import mailbox
import os
import re
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, Protocol, TypeAlias

__all__ = ["Sink", "MaildirSink", "MboxSink", "PrintSink", "DiscardSink", "mboxrd_entry", "Lock"]


#: A lock shared by the threads (and worker processes) of a server.
Lock: TypeAlias = AbstractContextManager[Any]


class Sink(Protocol):
    """Something that keeps accepted messages."""

    #: True when the sink never looks at the content (it need not be kept
    #: in memory while it arrives).
    discards: bool

    def store(self, sender: str, message: bytes) -> str:
        """Keep *message* (trace fields and content) from envelope *sender*;
        return where it went.  An ``OSError`` makes the server answer 451."""
        ...


class MaildirSink:
    """One file per message in the Maildir *path* (created if missing)."""

    discards = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._maildir = mailbox.Maildir(self.path, factory=None, create=True)
        self._lock = threading.Lock()  # Maildir's unique-name counter is not thread-safe

    def store(self, sender: str, message: bytes) -> str:
        with self._lock:
            key = self._maildir.add(message)
        return os.path.join(self.path, "new", key)


_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def mboxrd_entry(sender: str, message: bytes, when: float | None = None) -> bytes:
    """*message* as one mboxrd entry: the ``From `` separator line with the
    envelope sender (``MAILER-DAEMON`` for ``<>``) and the date in UTC, the
    lines with LF line ends and every ``^>*From `` line quoted with one more
    ``>``, and an empty line after it."""
    text = message.replace(b"\r\n", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    text = _FROM_LINE.sub(rb">\1", text)
    stamp = time.asctime(time.gmtime(when))
    separator = f"From {sender or 'MAILER-DAEMON'} {stamp}\n".encode("utf-8")
    return separator + text + b"\n"


class MboxSink:
    """Appends each message to the mbox file *path* in the mboxrd dialect,
    holding an exclusive ``flock`` while writing (other mbox writers that
    lock the same way do not interleave), and syncs it to disk."""

    discards = False

    def __init__(self, path: str | os.PathLike[str], lock: Lock | None = None) -> None:
        self.path = os.fspath(path)
        self._lock: Lock = lock if lock is not None else threading.Lock()
        with open(self.path, "ab"):
            pass  # fail at start-up, not at the first message, when it cannot be written

    def store(self, sender: str, message: bytes) -> str:
        entry = mboxrd_entry(sender, message)
        with self._lock, open(self.path, "ab") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                file.write(entry)
                file.flush()
                os.fsync(file.fileno())
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)
        return self.path


class PrintSink:
    """Writes each message to *stream* as an mboxrd entry."""

    discards = False

    def __init__(self, stream: BinaryIO, lock: Lock | None = None) -> None:
        self.stream = stream
        self._lock: Lock = lock if lock is not None else threading.Lock()

    def store(self, sender: str, message: bytes) -> str:
        entry = mboxrd_entry(sender, message)
        with self._lock:
            self.stream.write(entry)
            self.stream.flush()
        return "<stdout>"


class DiscardSink:
    """Accepts every message and keeps nothing."""

    discards = True

    def store(self, sender: str, message: bytes) -> str:
        return "<discarded>"

