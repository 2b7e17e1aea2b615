# Theory of operation
# -------------------
# The client's reading of an EHLO reply (RFC 5321 §4.1.1.1):
#
#     ehlo-ok-rsp = "250" SP Domain [ SP ehlo-greet ] CRLF
#                 / ( "250-" Domain [ SP ehlo-greet ] CRLF
#                     *( "250-" ehlo-line CRLF ) "250" SP ehlo-line CRLF )
#     ehlo-line   = ehlo-keyword *( SP ehlo-param )
#
# Keywords are case-insensitive and stored upper-cased with their
# parameters.  Lines that do not match (old ``AUTH=LOGIN`` forms, garbage)
# are kept in ``raw`` rather than lost, and do not stop the session.
from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._events import Reply

__all__ = ["Capabilities"]

_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The extensions a server offered in its EHLO reply."""

    #: The server's name from the first line of the reply.
    domain: str
    #: Upper-cased keyword -> its parameters.
    keywords: Mapping[str, tuple[str, ...]]
    #: The reply's text lines after the first, exactly as received.
    raw: tuple[str, ...] = ()
    # LIMITS read once, when built: the client consults them for every MAIL
    # and RCPT it sends.
    _limits: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found: dict[str, int] = {}
        for item in self.keywords.get("LIMITS", ()):
            name, _, value = item.partition("=")
            if value.isascii() and value.isdigit() and int(value) > 0:
                found[name.upper()] = int(value)
        object.__setattr__(self, "_limits", types.MappingProxyType(found))

    @classmethod
    def from_reply(cls, reply: Reply) -> Capabilities:
        """Read the capabilities of a 250 reply to EHLO."""
        first, *lines = reply.text
        keywords: dict[str, tuple[str, ...]] = {}
        for line in lines:
            words = line.split()
            if not words:
                continue
            keyword, *params = words
            if _KEYWORD_RE.fullmatch(keyword) is not None:
                keywords.setdefault(keyword.upper(), tuple(params))
        return cls(
            domain=first.split(" ", 1)[0],
            keywords=types.MappingProxyType(keywords),
            raw=tuple(lines),
        )

    @classmethod
    def none(cls) -> Capabilities:
        """No extensions (after HELO, or before EHLO)."""
        return cls(domain="", keywords=types.MappingProxyType({}))

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self.keywords

    def params(self, keyword: str) -> tuple[str, ...]:
        """Parameters of *keyword*, or an empty tuple."""
        return self.keywords.get(keyword.upper(), ())

    @property
    def pipelining(self) -> bool:
        """PIPELINING (RFC 2920) offered."""
        return "PIPELINING" in self.keywords

    @property
    def eightbitmime(self) -> bool:
        """8BITMIME (RFC 6152) offered."""
        return "8BITMIME" in self.keywords

    @property
    def smtputf8(self) -> bool:
        """SMTPUTF8 (RFC 6531) offered."""
        return "SMTPUTF8" in self.keywords

    @property
    def enhanced_status_codes(self) -> bool:
        """ENHANCEDSTATUSCODES (RFC 2034) offered."""
        return "ENHANCEDSTATUSCODES" in self.keywords

    @property
    def dsn(self) -> bool:
        """DSN (RFC 3461) offered."""
        return "DSN" in self.keywords

    @property
    def help(self) -> bool:
        """HELP offered."""
        return "HELP" in self.keywords

    @property
    def size(self) -> int | None:
        """The SIZE limit (RFC 1870): None when SIZE is not offered, 0 when
        offered without a limit."""
        if "SIZE" not in self.keywords:
            return None
        params = self.keywords["SIZE"]
        # RFC 1870 §4: size-param = [1*DIGIT]; str.isdigit() alone would take
        # Unicode digits, some of which int() refuses ("²").
        if params and params[0].isascii() and params[0].isdigit():
            return int(params[0])
        return 0

    @property
    def starttls(self) -> bool:
        """STARTTLS (RFC 3207) offered."""
        return "STARTTLS" in self.keywords

    @property
    def chunking(self) -> bool:
        """CHUNKING (RFC 3030) offered: BDAT may be used."""
        return "CHUNKING" in self.keywords

    @property
    def binarymime(self) -> bool:
        """BINARYMIME (RFC 3030) offered."""
        return "BINARYMIME" in self.keywords

    @property
    def requiretls(self) -> bool:
        """REQUIRETLS (RFC 8689) offered."""
        return "REQUIRETLS" in self.keywords

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms offered with AUTH (RFC 4954), upper-cased."""
        return tuple(m.upper() for m in self.keywords.get("AUTH", ()))

    @property
    def limits(self) -> Mapping[str, int]:
        """The LIMITS (RFC 9422) the server announced, e.g. ``RCPTMAX``.

        Malformed entries are ignored: the limits are advisory.  Read once,
        when the capabilities are built; the mapping is read-only.
        """
        return self._limits
