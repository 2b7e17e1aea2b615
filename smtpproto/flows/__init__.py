"""The high-level conversations, still without I/O.

A flow is a generator that yields actions (:class:`Send`, :class:`Receive`,
:class:`StartTLS`, :class:`Call`, :class:`Close`) and is resumed with their
outcome, so the protocol logic is written once and each adapter
(:mod:`smtpproto.sync`, :mod:`smtpproto.asyncio`, :mod:`smtpproto.trio`) is
only a loop that performs the actions.
"""

from __future__ import annotations

from . import errors
from ._actions import Action, Call, Close, Flow, Receive, Send, Shutdown, StartTLS, run_sync
from .client import ClientOptions, ClientSession, SendResult, Timeouts, TLSMode
from .message import DsnOptions, Outgoing, prepare
from .server import Envelope, Handler, Reject, ServerSession, ServerTimeouts, Session

__all__ = [
    "Action",
    "Call",
    "ClientOptions",
    "ClientSession",
    "Close",
    "DsnOptions",
    "Envelope",
    "Flow",
    "Handler",
    "Outgoing",
    "Receive",
    "Reject",
    "Send",
    "SendResult",
    "ServerSession",
    "ServerTimeouts",
    "Session",
    "Shutdown",
    "StartTLS",
    "TLSMode",
    "Timeouts",
    "errors",
    "prepare",
    "run_sync",
]
