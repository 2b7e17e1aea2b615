# Theory of operation
# -------------------
# The events of the ESMTP extensions that add commands rather than
# parameters: STARTTLS (RFC 3207), AUTH (RFC 4954), BDAT (RFC 3030), LHLO
# (RFC 2033), XCLIENT (Postfix), and the PROXY protocol header (HAProxy)
# that may precede a session.  They follow the rules of ``_events``:
# frozen, slotted, keyword-only, validated by the public constructor and
# built unchecked by the parsers through ``_trusted()``, and symmetric
# between the roles.
#
# SASL data travels as raw bytes in the events; the base64 of the wire
# (RFC 4954 §4) is the connection's business, so applications and the
# mechanisms in ``smtpproto.sasl`` never see it.
#
# BDAT carries its size, not its octets: the octets follow as
# ``MessageData`` events and the chunk ends with ``EndOfChunk`` (or, for
# ``BDAT n LAST``, with ``EndOfMessage``), on both sides, so a large chunk
# streams like DATA content instead of being held in memory.
from __future__ import annotations

import base64
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from ._errors import LocalProtocolError
from ._events import Command, Event, _check, _check_domain, _local_error
from ._syntax import GrammarError, xtext_decode

__all__ = [
    "StartTLS",
    "Auth",
    "AuthResponse",
    "AuthCancel",
    "Bdat",
    "EndOfChunk",
    "Lhlo",
    "Xclient",
    "ProxyHeader",
]

_EMPTY: Mapping[str, str] = types.MappingProxyType({})
# RFC 4422 §3.1: sasl-mech = 1*20mech-char ; mech-char = UPPER-ALPHA / DIGIT / "-" / "_"
SASL_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,20}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLS(Command):
    """``STARTTLS`` (RFC 3207 §4): switch the connection to TLS."""

    verb: ClassVar[str] = "STARTTLS"


def _sasl_wire(data: bytes) -> str:
    # RFC 4954 §4: an empty initial response is sent as a single "=".
    return base64.b64encode(data).decode("ascii") if data else "="


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth(Command):
    """``AUTH mechanism [initial-response]`` (RFC 4954 §4).

    ``initial_response`` is the raw SASL data (``b""`` for an empty one,
    sent as ``=``), or None when the client waits for the first challenge.
    """

    verb: ClassVar[str] = "AUTH"
    mechanism: str
    initial_response: bytes | None = None

    def __post_init__(self) -> None:
        _check("SASL mechanism", self.mechanism)
        if SASL_NAME_RE.fullmatch(self.mechanism) is None:
            raise LocalProtocolError(f"invalid SASL mechanism name {self.mechanism!r}")
        # RFC 4422 §3.1: mechanism names are upper case on the wire.
        object.__setattr__(self, "mechanism", self.mechanism.upper())
        if self.initial_response is not None and not isinstance(self.initial_response, bytes):
            raise LocalProtocolError("the initial response must be bytes")

    def _argument(self) -> str:
        if self.initial_response is None:
            return self.mechanism
        return f"{self.mechanism} {_sasl_wire(self.initial_response)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResponse(Event):
    """One client line of a SASL exchange, answering a 334 challenge.

    ``data`` is the raw SASL response; on the wire it is base64.
    """

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise LocalProtocolError("AuthResponse data must be bytes")

    def _line(self) -> bytes:
        return base64.b64encode(self.data) + b"\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCancel(Event):
    """The client cancels a SASL exchange (``*``, RFC 4954 §4); the server
    answers 501."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bdat(Command):
    """``BDAT size [LAST]`` (RFC 3030 §2): a chunk of exactly *size* octets.

    The octets follow as ``MessageData`` events, raw (no dot stuffing), and
    the chunk ends with ``EndOfChunk`` or, with ``last``, ``EndOfMessage``.
    """

    verb: ClassVar[str] = "BDAT"
    size: int
    last: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise LocalProtocolError(f"BDAT size must be a non-negative integer, not {self.size!r}")

    def _argument(self) -> str:
        return f"{self.size} LAST" if self.last else str(self.size)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfChunk(Event):
    """The octets of a non-LAST BDAT chunk are complete; its reply is due."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lhlo(Command):
    """``LHLO domain`` (RFC 2033 §4.1): LMTP's EHLO."""

    verb: ClassVar[str] = "LHLO"
    domain: str

    def __post_init__(self) -> None:
        _check_domain("LHLO domain", self.domain)

    def _argument(self) -> str:
        return self.domain


#: XCLIENT attribute names (Postfix XCLIENT_README).
XCLIENT_ATTRIBUTES = frozenset(
    {"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Xclient(Command):
    """``XCLIENT attr=value ...`` (Postfix): a trusted proxy tells the real
    client's address.  Values stay xtext-encoded as on the wire; use
    :meth:`decoded`."""

    verb: ClassVar[str] = "XCLIENT"
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        frozen: dict[str, str] = {}
        for name, value in self.attributes.items():
            _check("XCLIENT attribute", name)
            _check("XCLIENT value", value)
            key = name.upper()
            if key not in XCLIENT_ATTRIBUTES:
                raise LocalProtocolError(f"unknown XCLIENT attribute {name!r}")
            try:
                xtext_decode(value)
            except GrammarError as exc:
                raise _local_error(exc) from None
            frozen[key] = value
        if not frozen:
            raise LocalProtocolError("XCLIENT needs at least one attribute")
        object.__setattr__(self, "attributes", types.MappingProxyType(frozen))

    def _argument(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.attributes.items())

    def decoded(self) -> dict[str, str]:
        """The attributes with their values xtext-decoded."""
        return {k: xtext_decode(v) for k, v in self.attributes.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHeader(Event):
    """A PROXY protocol header (v1 text or v2 binary) read before the
    greeting: the address of the client behind a trusted proxy.

    ``command`` is ``"PROXY"`` (addresses given) or ``"LOCAL"`` (a health
    check by the proxy itself: no addresses).  ``family`` is ``"TCP4"``,
    ``"TCP6"``, ``"UNIX"`` or ``"UNKNOWN"``.
    """

    version: int
    command: str
    family: str
    source: str | None = None
    source_port: int | None = None
    destination: str | None = None
    destination_port: int | None = None
