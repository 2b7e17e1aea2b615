# Theory of operation
# -------------------
# What XOAUTH2 (Google's format) and OAUTHBEARER (RFC 7628) share.
#
# Both carry an OAuth 2.0 bearer token in ``key=value`` pairs separated by
# ^A (RFC 7628 §3.1):
#
#     kvsep          = %x01
#     key            = 1*(ALPHA)
#     value          = *(VCHAR / SP / HTAB / CR / LF )
#     kvpair         = key "=" value kvsep
#
# and ``auth`` holds what an HTTP Authorization header would (RFC 6750
# §2.1), where the scheme is case-insensitive (RFC 7235 §2.1):
#
#     b64token    = 1*( ALPHA / DIGIT /
#                       "-" / "." / "_" / "~" / "+" / "/" ) *"="
#     credentials = "Bearer" 1*SP b64token
#
# Both report a refused token the same way: a challenge carrying a JSON
# object (RFC 7628 §3.2.2), which the client acknowledges (RFC 7628 §3.2.3:
# a single ^A; XOAUTH2: an empty response) before the server sends its
# failure reply.  The client parses that JSON defensively: it comes from
# the peer, so a malformed or absurdly nested document is a ``SASLError``,
# never a crash.
from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from ._base import ClientFirst, Malformed, SASLError

__all__ = [
    "BearerClient",
    "check_token",
    "parse_kvpairs",
    "parse_bearer",
    "error_json",
    "parse_error",
]

TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*", re.ASCII)
_CREDENTIALS_RE = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)", re.ASCII)
_KEY_RE = re.compile(rb"[A-Za-z]+")
_VALUE_RE = re.compile(rb"[\x21-\x7e \t\r\n]*")


def parse_kvpairs(
    what: str, data: bytes, *, utf8_keys: frozenset[str] = frozenset()
) -> dict[str, bytes]:
    """Parse ``*kvpair kvsep``, the message after any header.

    Values of the keys in *utf8_keys* may hold any octets (the caller
    decodes them: XOAUTH2's ``user`` is UTF-8); the others must follow the
    ASCII grammar above.  A repeated key is malformed, and so is anything
    after the final ^A.
    """
    if not data.endswith(b"\x01"):
        raise Malformed(f"{what} message does not end with ^A")
    body = data[:-1]
    pairs: dict[str, bytes] = {}
    if not body:
        return pairs
    if not body.endswith(b"\x01"):
        raise Malformed(f"{what} message does not end with ^A^A")
    for item in body[:-1].split(b"\x01"):
        key, equals, value = item.partition(b"=")
        if not equals or not _KEY_RE.fullmatch(key):
            raise Malformed(f"{what} message holds a malformed key=value pair")
        name = key.decode("ascii")
        if name in pairs:
            raise Malformed(f"{what} message repeats a key")
        if name not in utf8_keys and not _VALUE_RE.fullmatch(value):
            raise Malformed(f"{what} message holds a value with a character outside VCHAR")
        pairs[name] = value
    return pairs


def check_token(what: str, token: str) -> None:
    """A client-side check that *token* is an RFC 6750 b64token, so that
    it cannot break the message it travels in."""
    if not isinstance(token, str):
        raise TypeError(f"{what} token must be a str, not {type(token).__name__}")
    if not TOKEN_RE.fullmatch(token):
        raise ValueError(f"{what} token is not an RFC 6750 b64token")


def parse_bearer(what: str, auth: bytes | None) -> str:
    """The token from an ``auth`` value, ``Bearer`` scheme only."""
    if auth is None:
        raise Malformed(f"{what} message has no auth value")
    match = _CREDENTIALS_RE.fullmatch(auth.decode("ascii"))
    if match is None:
        raise Malformed(f"{what} auth value is not 'Bearer' and a token")
    return match.group(1)


def error_json(fields: dict[str, str]) -> bytes:
    """A compact JSON object, as the error challenge carries it."""
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def parse_error(name: str, challenge: bytes) -> dict[str, Any]:
    """Parse the server's JSON error report (client side)."""
    try:
        document = json.loads(challenge)
    except (ValueError, RecursionError):
        raise SASLError(f"{name}: the error challenge is not valid JSON") from None
    if not isinstance(document, dict):
        raise SASLError(f"{name}: the error challenge is not a JSON object")
    return document


class BearerClient(ClientFirst):
    """What the XOAUTH2 and OAUTHBEARER clients share: one message, then at
    most the server's JSON error report, acknowledged with
    :attr:`error_ack`, after which the exchange cannot succeed."""

    #: The answer to the server's error report.
    error_ack: ClassVar[bytes]
    _message: bytes
    #: The server's JSON error report, once it refused the token.
    error: dict[str, Any] | None

    def _first_message(self) -> bytes:
        return self._message

    def _next(self, challenge: bytes) -> bytes:
        if self.error is not None:
            raise SASLError(f"{self.name}: the server sent a challenge after the error report")
        self.error = parse_error(self.name, challenge)
        return self.error_ack

    @property
    def complete(self) -> bool:
        return self._sent_first and self.error is None
