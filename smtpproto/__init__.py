"""smtpproto: a sans-I/O SMTP protocol library (RFC 5321 and ESMTP).

The core turns bytes into events and events into bytes, for the client
(:class:`ClientConnection`) and the server (:class:`ServerConnection`)
role, with no networking inside.  Importing this package imports no
``asyncio``, ``trio``, ``ssl`` or ``socket``.
"""

from __future__ import annotations

from ._client import ClientConfig, ClientConnection
from ._connection import NEED_DATA, PAUSED, Sentinel
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    StuffedContent,
    UnknownCommand,
    Vrfy,
)
from ._esmtp_events import (
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    EndOfChunk,
    Lhlo,
    ProxyHeader,
    StartTLS,
    Xclient,
)
from ._server import ServerConnection
from ._server_config import ServerConfig
from ._state import TRANSITIONS, BdatLast, State
from .extensions import Capabilities

__version__ = "0.1.0.dev0"

__all__ = [
    "Auth",
    "AuthCancel",
    "AuthResponse",
    "Bdat",
    "BdatLast",
    "EndOfChunk",
    "Lhlo",
    "ProxyHeader",
    "StartTLS",
    "Xclient",
    "Capabilities",
    "ClientConfig",
    "ClientConnection",
    "Command",
    "CommandRejected",
    "ConnectionClosed",
    "Data",
    "Ehlo",
    "EndOfMessage",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "LocalProtocolError",
    "Mail",
    "MessageData",
    "MessageRejected",
    "NEED_DATA",
    "Noop",
    "PAUSED",
    "ProtocolError",
    "Quit",
    "Rcpt",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "Sentinel",
    "ServerConfig",
    "ServerConnection",
    "State",
    "StuffedContent",
    "TRANSITIONS",
    "UnknownCommand",
    "Vrfy",
    "__version__",
]
