"""ESMTP extensions, one small object each (RFC 5321 §2.2).

The server core is configured with a tuple of these objects; the client
core reads the server's offer into :class:`Capabilities` and uses
:func:`owner_of` to know which extension a MAIL or RCPT parameter needs.
"""

from __future__ import annotations

from ._base import EnhancedStatusCodes, Extension, HelpExtension, Pipelining
from ._capabilities import Capabilities
from ._simple import BinaryMime, Chunking, Limits, StartTls, XclientExtension
from .auth import AuthExtension
from .deliverby import DeliverBy
from .dsn import Dsn
from .eightbitmime import EightBitMime
from .futurerelease import FutureRelease
from .mtpriority import MtPriority
from .requiretls import RequireTls
from .size import Size
from .smtputf8 import SmtpUtf8

__all__ = [
    "AuthExtension",
    "BinaryMime",
    "Chunking",
    "DeliverBy",
    "FutureRelease",
    "Limits",
    "MtPriority",
    "RequireTls",
    "StartTls",
    "XclientExtension",
    "Capabilities",
    "Dsn",
    "EightBitMime",
    "EnhancedStatusCodes",
    "Extension",
    "HelpExtension",
    "Pipelining",
    "Size",
    "SmtpUtf8",
    "KNOWN_EXTENSIONS",
    "owner_of",
]

#: Every extension class this package models.
KNOWN_EXTENSIONS: tuple[type[Extension], ...] = (
    Pipelining,
    Size,
    EightBitMime,
    SmtpUtf8,
    Dsn,
    EnhancedStatusCodes,
    HelpExtension,
    StartTls,
    AuthExtension,
    Chunking,
    BinaryMime,
    RequireTls,
    Limits,
    MtPriority,
    DeliverBy,
    FutureRelease,
    XclientExtension,
)

_OWNERS: dict[str, type[Extension]] = {
    name: ext
    for ext in KNOWN_EXTENSIONS
    for name in ext.mail_parameters | ext.rcpt_parameters
}


def owner_of(parameter: str) -> type[Extension] | None:
    """The extension class that defines MAIL/RCPT *parameter*, if known."""
    return _OWNERS.get(parameter.upper())
