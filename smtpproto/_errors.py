# Theory of operation
# -------------------
# Two kinds of failure exist in a sans-I/O protocol core, and the caller must
# be able to tell them apart without parsing messages:
#
# * LocalProtocolError: the *calling program* asked for something the protocol
#   forbids (a CR in an address, DATA before RCPT, a reply nobody asked for).
#   It is raised by ``send()`` before a single byte is produced, so the
#   connection is left exactly as it was and the caller may carry on.
# * RemoteProtocolError: the *peer* did something the session cannot survive
#   (a malformed reply, a flood of unprocessed input).  It is raised by
#   ``next_event()``, the connection moves to the ERROR state, and the error
#   carries the reply (if any) that should be sent before closing.
#
# Mistakes a server session survives (an unknown command, bad syntax, a
# command out of sequence, an over-long line) are *not* exceptions: they come
# out of ``ServerConnection.next_event()`` as events carrying a suggested
# reply (see ``_events.CommandRejected``).
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import Reply

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of every error the protocol core raises.

    Catch this to handle both :class:`LocalProtocolError` and
    :class:`RemoteProtocolError` in one place.
    """


class LocalProtocolError(ProtocolError):
    """The calling program tried to do something the protocol forbids.

    Raised by ``send()`` (and by event constructors) before any byte is
    produced; the connection's state is unchanged, so the program may correct
    itself and go on.
    """


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol in a way the session cannot survive.

    Raised by ``next_event()``.  The connection is then in the ``ERROR``
    state.  :attr:`reply` is the reply a server should send before closing
    the connection (``None`` on the client side, where there is nobody to
    reply to).
    """

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        #: The reply to send to the peer before closing, if any.
        self.reply = reply
